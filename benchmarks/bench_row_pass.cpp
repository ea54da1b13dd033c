// bench_row_pass — the teacher row pass, the canonical projection and the covering beam, each
// beside the scalar reference and a streaming read of the same bytes (style.md habit 12).
//
// Row pass (the root distribution + STOP of every row), on the real Llama-2 (32k), Llama-3
// (128k), Qwen-3 (152k) and Gemma-3 (262k) vocabularies, float32 and bfloat16 rows: a batch of
// random rows (N(0, 3) logits) of at least 64 MiB in float32 (64 rows at 262k, 544 at 32k), so
// every pass streams from memory, not a cache. Rows are padded to a multiple of 128 columns as
// the models' logits are (Qwen-3's embedding has 151936 rows, for 151669 ids); the padding is
// never read by the row pass (nor counted in its bytes), the streaming read reads the rows whole.
//   row_pass/<vocab>/<dtype>/simd_<target>    summarize_rows, one thread, each compiled target
//   row_pass/<vocab>/<dtype>/trie_ordered     summarize_permuted_rows (rows in trie order)
//   row_pass/<vocab>/<dtype>/reference        summarize_row (fp64 exp, scalar scatter), 4 rows
//   row_pass/<vocab>/<dtype>/stream           simd::stream_read of the same 64 rows: the floor
//   row_pass/llama3/f16/{simd,trie_ordered,stream}   float16 rows (the best target), Llama-3 only
//   row_pass/<vocab>/f32/exp_floor            the softmax arithmetic of one row on L1-resident
//                                             data (no memory traffic): the compute floor
//   row_pass_threads/llama3/f32/{simd,stream}/threads:{1,2}   the batch on 1 and 2 threads
// Canonical projection of a real Llama-3 text (its reference token ids), random rows:
//   canonical/llama3/{reference,simd,trie_ordered}, canonical/llama3/f16/{simd,trie_ordered},
//   canonical_texts/llama3/threads:{1,2}
//   (canonical/: also us_per_teacher_row, and x_stream = median time ÷ the median streaming
//   read of the same rows, read beside each iteration with the timer paused)
// Covering beam (K = 10, ε = 0.01) on a toy vocabulary (the text's bytes and substrings) with a
// cached bigram teacher — the library's own cost per byte:
//   beam/toy
//
// Counters: items_per_second = rows (row pass) or text bytes (projections) per second;
// bytes_per_second = bytes of logits read per second; us_per_row / us_per_byte.
// Every benchmark first checks its result — the fast paths against the reference within the
// documented tolerance (relative 1e-5), the beam unpruned against exact_covering — and is
// marked with an error (exit status 1) if a check fails. Times are wall-clock (UseRealTime).
//
// BLD_BENCH_EXPORT=DIR (environment): instead of timing, write for each vocabulary what the
// numpy baseline (scripts/bench_numpy.py) needs to compute the same thing and check itself:
// DIR/<vocab>.bins.npy (int64 [V]: first byte, 256 = STOP, −1 = ignored id), .rows.npy
// (float32 [8, V], the batch's first rows) and .root.npy (float64 [8, 257], bld's root masses).
#include <bld/bld.hpp>
#include <bld/testing/toy_teachers.hpp>
#include <bld/io/json.hpp>
#include <bld/io/npy.hpp>
#include <bld/projection/fast_rows.hpp>
#include <bld/backends/simd/row_pass.hpp>

#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <type_traits>
#include <vector>

#ifndef BLD_DATA_DIR
#define BLD_DATA_DIR ".cache/data"
#endif

namespace {

bool any_check_failed = false;
constexpr std::size_t batch_bytes = std::size_t{64} << 20;
constexpr std::size_t reference_rows = 4;
constexpr double tolerance = 1e-5;

std::string data_dir() {
    const char* env = std::getenv("BLD_DATA_DIR");
    return env && *env ? env : BLD_DATA_DIR;
}

struct vocab_case {
    const char* name;
    const char* file;
};
const vocab_case vocab_cases[] = {{"llama2", "tokenizers/llama2/tokenizer.json"},
                                  {"llama3", "tokenizers/llama3/tokenizer.json"},
                                  {"qwen3", "tokenizers/qwen3/tokenizer.json"},
                                  {"gemma3", "tokenizers/gemma3/tokenizer.json"}};

struct loaded_vocab {
    std::unique_ptr<bld::byte_trie> trie;
    std::unique_ptr<bld::row_plan> plan;
};

loaded_vocab& vocab(const std::string& name) {
    static std::map<std::string, loaded_vocab> cache;
    auto& v = cache[name];
    if (!v.trie) {
        for (const auto& c : vocab_cases)
            if (name == c.name) v.trie = std::make_unique<bld::byte_trie>(bld::io::load_vocabulary(data_dir() + "/" + c.file));
        v.plan = std::make_unique<bld::row_plan>(*v.trie);
    }
    return v;
}

/// A batch of random rows [R, n] (≥ 64 MiB of float32; n = V padded to 128) and its trie-ordered
/// copy, cached per vocab/dtype.
template <class T>
struct row_batch {
    std::vector<T> rows, permuted;
    std::size_t R = 0, V = 0, n = 0, P = 0; ///< rows, vocabulary, row width (padded), trie order
    [[nodiscard]] bld::tensor_view<const T, 2> view(std::size_t r = 0) const {
        return {rows.data(), {static_cast<std::int64_t>(r ? r : R), static_cast<std::int64_t>(n)}};
    }
    [[nodiscard]] bld::tensor_view<const T, 2> permuted_view() const {
        return {permuted.data(), {static_cast<std::int64_t>(R), static_cast<std::int64_t>(P)}};
    }
};

template <class T>
const row_batch<T>& batch(const std::string& name) {
    static std::map<std::string, row_batch<T>> cache;
    auto& b = cache[name];
    if (b.rows.empty()) {
        const auto& plan = *vocab(name).plan;
        b.V = plan.vocab_size();
        b.n = (b.V + 127) / 128 * 128;
        // A multiple of 32 rows: whole 16-row tiles, split evenly over two threads.
        b.R = (batch_bytes / (b.V * sizeof(float)) + 31) / 32 * 32;
        b.P = plan.permutation().size();
        b.rows.resize(b.R * b.n);
        std::mt19937 rng(2024);
        std::normal_distribution<float> g(0.0f, 3.0f);
        for (auto& x : b.rows) x = T(g(rng));
        b.permuted = bld::permute_rows(plan, b.view());
        if (b.P % 128 != 0) { // pad the trie-ordered rows too
            std::vector<T> padded(b.R * ((b.P + 127) / 128 * 128));
            const std::size_t pn = (b.P + 127) / 128 * 128;
            for (std::size_t r = 0; r < b.R; ++r) std::copy(b.permuted.begin() + r * b.P, b.permuted.begin() + (r + 1) * b.P, padded.begin() + r * pn);
            b.permuted = std::move(padded);
            b.P = pn;
        }
    }
    return b;
}

/// Fast summaries against the reference, within the documented tolerance.
bool close(const bld::row_summary& got, const bld::row_summary& ref) {
    if (got.max_logit != ref.max_logit || std::abs(got.log_normalizer - ref.log_normalizer) > tolerance) return false;
    for (std::size_t a = 0; a < 257; ++a)
        if (std::abs(got.root[a] - ref.root[a]) > tolerance * ref.root[a] + 1e-30) return false;
    return true;
}

void fail(benchmark::State& state, const std::string& what) {
    any_check_failed = true;
    state.SkipWithError(what.c_str());
}

template <class T>
bool check_rows(const std::vector<bld::row_summary>& got, const row_batch<T>& b, const bld::row_plan& plan) {
    for (std::size_t r = 0; r < 3; ++r) {
        const auto ref = bld::reference::summarize_row(plan.trie(), plan.bins(), std::span<const T>(b.rows.data() + r * b.n, b.n), r);
        if (!close(got[r], ref)) return false;
    }
    return true;
}

void row_counters(benchmark::State& state, std::size_t rows, std::size_t bytes_per_row) {
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * rows));
    state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * rows * bytes_per_row));
    state.counters["us_per_row"] = benchmark::Counter(static_cast<double>(state.iterations() * rows) * 1e-6,
                                                      benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}

template <class T>
void row_pass_simd(benchmark::State& state, std::string name, bld::simd::level lvl, std::size_t threads) {
    const auto& plan = *vocab(name).plan;
    const auto& b = batch<T>(name);
    const std::size_t R = lvl == bld::simd::level::scalar ? 8 : b.R;
    std::vector<bld::row_summary> out(R);
    bld::summarize_rows(plan, b.view(R), std::span<bld::row_summary>(out), {threads}, lvl);
    if (!check_rows(out, b, plan)) return fail(state, "fast row pass disagrees with the reference");
    for (auto _ : state) {
        bld::summarize_rows(plan, b.view(R), std::span<bld::row_summary>(out), {threads}, lvl);
        benchmark::DoNotOptimize(out.data());
        benchmark::ClobberMemory();
    }
    row_counters(state, R, b.V * sizeof(T));
}

template <class T>
void row_pass_trie_ordered(benchmark::State& state, std::string name) {
    const auto& plan = *vocab(name).plan;
    const auto& b = batch<T>(name);
    std::vector<bld::row_summary> out(b.R);
    bld::summarize_permuted_rows(plan, b.permuted_view(), std::span<bld::row_summary>(out));
    if (!check_rows(out, b, plan)) return fail(state, "trie-ordered row pass disagrees with the reference");
    for (auto _ : state) {
        bld::summarize_permuted_rows(plan, b.permuted_view(), std::span<bld::row_summary>(out));
        benchmark::DoNotOptimize(out.data());
        benchmark::ClobberMemory();
    }
    row_counters(state, b.R, b.P * sizeof(T));
}

template <class T>
void row_pass_reference(benchmark::State& state, std::string name) {
    const auto& plan = *vocab(name).plan;
    const auto& b = batch<T>(name);
    // The reference checks itself against the fast path's sums of probabilities (== 1).
    const auto s0 = bld::reference::summarize_row(plan.trie(), plan.bins(), std::span<const T>(b.rows.data(), b.n), 0);
    double total = 0;
    for (double p : s0.root) total += p;
    if (std::abs(total - 1.0) > 1e-12) return fail(state, "reference root masses do not sum to 1");
    for (auto _ : state)
        for (std::size_t r = 0; r < reference_rows; ++r)
            benchmark::DoNotOptimize(bld::reference::summarize_row(plan.trie(), plan.bins(), std::span<const T>(b.rows.data() + r * b.n, b.n), r));
    row_counters(state, reference_rows, b.V * sizeof(T));
}

/// The arithmetic floor of a row: the same softmax arithmetic as the trie-ordered kernel (its
/// maximum pass, e^(z − shift), float sums flushed to double) over V logits that never leave L1
/// — the row's first 4096 values, re-read until V have been summed — so no memory traffic and
/// no scatter: what one row costs on this core even if reading it were free. Any row pass of
/// this exp pays at least this; set beside the streaming read, it tells whether the machine
/// is compute- or memory-bound for the row pass.
template <class T>
void exp_floor(benchmark::State& state, std::string name) {
    const auto& b = batch<T>(name);
    constexpr std::size_t block = 4096;
    const std::vector<T> x(b.rows.begin(), b.rows.begin() + block);
    const auto k = bld::simd::detail::kernels_for<T>(bld::simd::resolve(bld::simd::level::automatic, "exp floor"));
    const std::size_t full = b.V / block;
    const std::uint32_t whole[2] = {0, block};
    const std::uint32_t last[2] = {0, static_cast<std::uint32_t>(b.V - full * block)};
    // Check: the block's sum against an fp64 sum of the same terms.
    double sum = 0;
    const auto q = k.segment_sums(x.data(), whole, 1, &sum);
    double ref = 0;
    for (const T v : x) ref += std::exp(static_cast<double>(static_cast<float>(v)) - static_cast<double>(q.shift));
    if (!q.valid || std::abs(sum - ref) > tolerance * ref) return fail(state, "exp floor: block sum disagrees with fp64");
    for (auto _ : state) {
        double total = 0;
        for (std::size_t i = 0; i < full; ++i) {
            k.segment_sums(x.data(), whole, 1, &sum);
            total += sum;
        }
        if (last[1] != 0) {
            k.segment_sums(x.data(), last, 1, &sum);
            total += sum;
        }
        benchmark::DoNotOptimize(total);
    }
    row_counters(state, 1, b.V * sizeof(T));
}

/// Streaming read of the same batch (the same bytes the row pass reads), with `threads`.
template <class T>
void stream(benchmark::State& state, std::string name, std::size_t threads) {
    const auto& b = batch<T>(name);
    const std::size_t bytes = b.rows.size() * sizeof(T);
    // Check: the checksum of a streaming read equals a plain loop's.
    std::uint32_t want = 0;
    for (std::size_t i = 0; i + 4 <= bytes; i += 4) {
        std::uint32_t w;
        std::memcpy(&w, reinterpret_cast<const char*>(b.rows.data()) + i, 4);
        want += w;
    }
    if (bld::simd::stream_read(b.rows.data(), bytes) != want) return fail(state, "stream_read checksum is wrong");
    std::vector<std::uint32_t> sink(threads);
    for (auto _ : state) {
        bld::parallel_for(b.R, {threads}, [&](std::size_t r0, std::size_t r1, std::size_t w) {
            sink[w] += bld::simd::stream_read(b.rows.data() + r0 * b.n, (r1 - r0) * b.n * sizeof(T));
        });
        benchmark::DoNotOptimize(sink.data());
    }
    row_counters(state, b.R, b.V * sizeof(T));
}

// ---- canonical projection ------------------------------------------------------------------

struct text_case {
    std::string text;
    std::vector<std::int64_t> ids;
};

/// Real texts with the reference encoder's Llama-3 ids (scripts/fetch-data.sh).
std::vector<text_case> llama3_texts(std::size_t max_tokens) {
    std::vector<text_case> out;
    std::ifstream f(data_dir() + "/ref/llama3.encode.tsv");
    std::string line;
    std::size_t total = 0;
    auto unhex = [](const std::string& h) {
        std::string s;
        auto v = [](char c) { return c <= '9' ? c - '0' : c - 'a' + 10; };
        for (std::size_t i = 0; i + 1 < h.size(); i += 2) s += static_cast<char>(v(h[i]) * 16 + v(h[i + 1]));
        return s;
    };
    while (std::getline(f, line) && total < max_tokens) {
        const auto t1 = line.find('\t'), t2 = line.find('\t', t1 + 1);
        if (line.substr(0, t1) != "en") continue;
        text_case t{unhex(line.substr(t1 + 1, t2 - t1 - 1)), {}};
        std::size_t i = t2 + 1;
        while (i < line.size()) {
            std::size_t j = line.find(' ', i);
            if (j == std::string::npos) j = line.size();
            t.ids.push_back(std::stoll(line.substr(i, j - i)));
            i = j + 1;
        }
        if (t.ids.size() < 8) continue;
        total += t.ids.size();
        out.push_back(std::move(t));
    }
    return out;
}

struct canonical_data {
    std::vector<text_case> texts;
    std::vector<std::vector<float>> rows, permuted; // per text [tokens, V] / [tokens, P]
    std::size_t bytes = 0, tokens = 0;
};

const canonical_data& canonical_inputs() {
    static canonical_data d;
    if (d.texts.empty()) {
        const auto& plan = *vocab("llama3").plan;
        d.texts = llama3_texts(400);
        std::mt19937 rng(7);
        std::normal_distribution<float> g(0.0f, 3.0f);
        const std::size_t V = plan.vocab_size();
        for (const auto& t : d.texts) {
            std::vector<float> r(t.ids.size() * V);
            for (auto& x : r) x = g(rng);
            d.permuted.push_back(bld::permute_rows(plan, bld::tensor_view<const float, 2>(r.data(), {static_cast<std::int64_t>(t.ids.size()), static_cast<std::int64_t>(V)})));
            d.rows.push_back(std::move(r));
            d.bytes += t.text.size();
            d.tokens += t.ids.size();
        }
    }
    return d;
}

bld::tensor_view<const float, 2> rows_of(const canonical_data& d, std::size_t t, bool permuted) {
    const auto& plan = *vocab("llama3").plan;
    const std::size_t n = permuted ? plan.permutation().size() : plan.vocab_size();
    return {(permuted ? d.permuted[t] : d.rows[t]).data(), {static_cast<std::int64_t>(d.texts[t].ids.size()), static_cast<std::int64_t>(n)}};
}

bool close_distributions(const bld::byte_distributions& a, const bld::byte_distributions& ref) {
    if (a.positions != ref.positions) return false;
    for (std::size_t i = 0; i < ref.probs.size(); ++i)
        if (std::abs(a.probs[i] - ref.probs[i]) > tolerance * ref.probs[i] + 1e-30) return false;
    return true;
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    const std::size_t n = v.size();
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

void text_counters(benchmark::State& state, std::size_t bytes, std::size_t logit_bytes) {
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * bytes));
    state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * logit_bytes));
    state.counters["us_per_byte"] = benchmark::Counter(static_cast<double>(state.iterations() * bytes) * 1e-6,
                                                       benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}

/// Text 0's rows (id order, trie order) as T (float: canonical_inputs' own).
template <class T>
bld::tensor_view<const T, 2> rows_as(const canonical_data& d, bool permuted) {
    if constexpr (std::is_same_v<T, float>) {
        return rows_of(d, 0, permuted);
    } else {
        static std::vector<T> cache[2];
        const auto f = rows_of(d, 0, permuted);
        auto& c = cache[permuted ? 1 : 0];
        if (c.empty()) {
            c.resize(static_cast<std::size_t>(f.extent(0) * f.extent(1)));
            for (std::size_t k = 0; k < c.size(); ++k) c[k] = T(f.data()[k]);
        }
        return {c.data(), {f.extent(0), f.extent(1)}};
    }
}

/// mode 0: reference canonical_path; 1: canonical_path; 2: trie-ordered rows. Text 0 only, its
/// rows as T (f16 / bf16: the float rows rounded; the check's reference reads the same values).
template <class T>
void canonical(benchmark::State& state, int mode) {
    const auto& plan = *vocab("llama3").plan;
    const auto& d = canonical_inputs();
    const auto& t = d.texts[0];
    const auto rows = rows_as<T>(d, false), permuted = rows_as<T>(d, true);
    auto run = [&] {
        if (mode == 0) return bld::reference::canonical_path(plan.trie(), rows, t.ids, t.text);
        return bld::canonical_path(plan, mode == 2 ? permuted : rows, t.ids, t.text, mode == 2);
    };
    const auto ref = bld::reference::canonical_path(plan.trie(), rows, t.ids, t.text);
    if (mode != 0 && !close_distributions(run(), ref)) return fail(state, "fast canonical path disagrees with the reference");
    // Beside each iteration (timer paused), a streaming read of the same rows: the per-teacher-row
    // floor, measured interleaved with the projection so the ratio sees the same machine load.
    const auto view = mode == 2 ? permuted : rows;
    const std::size_t row_bytes = static_cast<std::size_t>(view.extent(0) * view.extent(1)) * sizeof(T);
    std::vector<double> t_run, t_stream;
    std::uint32_t sink = 0;
    using clock = std::chrono::steady_clock;
    for (auto _ : state) {
        state.PauseTiming();
        const auto s0 = clock::now();
        sink += bld::simd::stream_read(view.data(), row_bytes);
        t_stream.push_back(std::chrono::duration<double>(clock::now() - s0).count());
        state.ResumeTiming();
        const auto r0 = clock::now();
        benchmark::DoNotOptimize(run());
        t_run.push_back(std::chrono::duration<double>(clock::now() - r0).count());
    }
    benchmark::DoNotOptimize(sink);
    text_counters(state, t.text.size(), t.ids.size() * plan.vocab_size() * sizeof(T));
    const double nrows = static_cast<double>(t.ids.size());
    state.counters["us_per_teacher_row"] = benchmark::Counter(static_cast<double>(state.iterations()) * nrows * 1e-6,
                                                              benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
    if (!t_run.empty()) {
        const double run_med = median(t_run), stream_med = median(t_stream);
        state.counters["stream_us_per_row"] = stream_med / nrows * 1e6;
        state.counters["x_stream"] = run_med / stream_med;
    }
}

/// All texts, canonical_paths with `threads`.
void canonical_texts(benchmark::State& state, std::size_t threads) {
    const auto& plan = *vocab("llama3").plan;
    const auto& d = canonical_inputs();
    std::vector<bld::text_rows<float>> texts;
    for (std::size_t t = 0; t < d.texts.size(); ++t) texts.push_back({rows_of(d, t, false), d.texts[t].ids, d.texts[t].text});
    const auto one = bld::canonical_paths(plan, std::span<const bld::text_rows<float>>(texts), {1});
    const auto many = bld::canonical_paths(plan, std::span<const bld::text_rows<float>>(texts), {threads});
    for (std::size_t t = 0; t < texts.size(); ++t)
        if (one[t].probs != many[t].probs) return fail(state, "canonical_paths differs between thread counts");
    for (auto _ : state) benchmark::DoNotOptimize(bld::canonical_paths(plan, std::span<const bld::text_rows<float>>(texts), {threads}));
    text_counters(state, d.bytes, d.tokens * plan.vocab_size() * sizeof(float));
}

// ---- covering beam on a toy vocabulary -------------------------------------------------------

struct toy_beam {
    std::unique_ptr<bld::byte_trie> trie;
    std::vector<float> table;
    std::unique_ptr<bld::testing::bigram_teacher> teacher;
    std::string text;
};

const toy_beam& beam_inputs() {
    static toy_beam b;
    if (!b.trie) {
        const auto texts = llama3_texts(200);
        b.text = texts.at(0).text.substr(0, 256);
        // The 256 bytes, an end-of-text special, and the text's substrings of 2–4 bytes.
        std::vector<bld::token_entry> e;
        std::int64_t id = 0;
        e.push_back({id++, {}, bld::token_kind::special, "<eot>"});
        for (int c = 0; c < 256; ++c) e.push_back({id++, std::string(1, static_cast<char>(c)), bld::token_kind::text, ""});
        std::set<std::string> subs;
        for (std::size_t i = 0; i < b.text.size(); ++i)
            for (std::size_t L = 2; L <= 4 && i + L <= b.text.size(); ++L) subs.insert(b.text.substr(i, L));
        for (const auto& s : subs) e.push_back({id++, s, bld::token_kind::text, ""});
        b.trie = std::make_unique<bld::byte_trie>(bld::vocabulary::from_entries(std::move(e), "toy"));
        const std::size_t V = b.trie->vocab().size();
        b.table.resize((V + 1) * V);
        std::mt19937 rng(3);
        std::normal_distribution<float> g(0.0f, 2.0f);
        for (auto& x : b.table) x = g(rng);
        b.teacher = std::make_unique<bld::testing::bigram_teacher>(
            bld::tensor_view<const float, 2>(b.table.data(), {static_cast<std::int64_t>(V + 1), static_cast<std::int64_t>(V)}), V);
    }
    return b;
}

void beam(benchmark::State& state) {
    const auto& b = beam_inputs();
    // Check: unpruned, the beam is exact on a prefix.
    const std::string prefix = b.text.substr(0, 24);
    const auto exact = bld::exact_covering(*b.trie, *b.teacher, prefix);
    const auto full = bld::covering_beam(*b.trie, *b.teacher, prefix, {0, 0.0});
    for (std::size_t i = 0; i < exact.probs.size(); ++i)
        if (std::abs(exact.probs[i] - full.probs[i]) > 1e-9) return fail(state, "unpruned beam differs from exact covering");
    const bld::beam_options opt{10, 0.01};
    for (auto _ : state) benchmark::DoNotOptimize(bld::covering_beam(*b.trie, *b.teacher, b.text, opt));
    const std::size_t V = b.trie->vocab().size();
    text_counters(state, b.text.size(), 0);
    state.counters["vocab"] = static_cast<double>(V);
}

void register_all() {
    using bld::bf16;
    using L = bld::simd::level;
    const std::pair<L, const char*> targets[] = {{L::avx512, "simd_avx512"}, {L::avx2, "simd_avx2"},   {L::sse2, "simd_sse2"},
                                                 {L::neon, "simd_neon"},     {L::scalar, "simd_scalar"}};
    for (const auto& c : vocab_cases) {
        const std::string n = c.name;
        for (const auto& [lvl, tname] : targets) {
            if (!bld::simd::compiled(lvl) || static_cast<int>(lvl) > static_cast<int>(bld::simd::detected_level()))
                continue; // not in this build, or not on this CPU
            if (lvl == L::scalar && n != "llama3") continue; // the portable fallback: one size
            benchmark::RegisterBenchmark(("row_pass/" + n + "/f32/" + tname).c_str(), row_pass_simd<float>, n, lvl, std::size_t{1})->UseRealTime()->Unit(benchmark::kMicrosecond);
            benchmark::RegisterBenchmark(("row_pass/" + n + "/bf16/" + tname).c_str(), row_pass_simd<bf16>, n, lvl, std::size_t{1})->UseRealTime()->Unit(benchmark::kMicrosecond);
        }
        benchmark::RegisterBenchmark(("row_pass/" + n + "/f32/trie_ordered").c_str(), row_pass_trie_ordered<float>, n)->UseRealTime()->Unit(benchmark::kMicrosecond);
        benchmark::RegisterBenchmark(("row_pass/" + n + "/bf16/trie_ordered").c_str(), row_pass_trie_ordered<bf16>, n)->UseRealTime()->Unit(benchmark::kMicrosecond);
        benchmark::RegisterBenchmark(("row_pass/" + n + "/f32/reference").c_str(), row_pass_reference<float>, n)->UseRealTime()->Unit(benchmark::kMicrosecond);
        benchmark::RegisterBenchmark(("row_pass/" + n + "/bf16/reference").c_str(), row_pass_reference<bf16>, n)->UseRealTime()->Unit(benchmark::kMicrosecond);
        benchmark::RegisterBenchmark(("row_pass/" + n + "/f32/stream").c_str(), stream<float>, n, std::size_t{1})->UseRealTime()->Unit(benchmark::kMicrosecond);
        benchmark::RegisterBenchmark(("row_pass/" + n + "/f32/exp_floor").c_str(), exp_floor<float>, n)->UseRealTime()->Unit(benchmark::kMicrosecond);
        benchmark::RegisterBenchmark(("row_pass/" + n + "/bf16/stream").c_str(), stream<bf16>, n, std::size_t{1})->UseRealTime()->Unit(benchmark::kMicrosecond);
        if (n == "llama3") { // f16 (the fast path reads it since the kernels widen it): one size
            benchmark::RegisterBenchmark(("row_pass/" + n + "/f16/simd").c_str(), row_pass_simd<bld::f16>, n, L::automatic, std::size_t{1})->UseRealTime()->Unit(benchmark::kMicrosecond);
            benchmark::RegisterBenchmark(("row_pass/" + n + "/f16/trie_ordered").c_str(), row_pass_trie_ordered<bld::f16>, n)->UseRealTime()->Unit(benchmark::kMicrosecond);
            benchmark::RegisterBenchmark(("row_pass/" + n + "/f16/stream").c_str(), stream<bld::f16>, n, std::size_t{1})->UseRealTime()->Unit(benchmark::kMicrosecond);
        }
    }
    for (std::size_t t : {1u, 2u}) {
        const std::string s = "/threads:" + std::to_string(t);
        benchmark::RegisterBenchmark(("row_pass_threads/llama3/f32/simd" + s).c_str(), row_pass_simd<float>, std::string("llama3"), L::automatic, t)->UseRealTime()->Unit(benchmark::kMicrosecond);
        benchmark::RegisterBenchmark(("row_pass_threads/llama3/f32/stream" + s).c_str(), stream<float>, std::string("llama3"), t)->UseRealTime()->Unit(benchmark::kMicrosecond);
    }
    benchmark::RegisterBenchmark("canonical/llama3/reference", canonical<float>, 0)->UseRealTime()->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark("canonical/llama3/simd", canonical<float>, 1)->UseRealTime()->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark("canonical/llama3/trie_ordered", canonical<float>, 2)->UseRealTime()->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark("canonical/llama3/f16/simd", canonical<bld::f16>, 1)->UseRealTime()->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark("canonical/llama3/f16/trie_ordered", canonical<bld::f16>, 2)->UseRealTime()->Unit(benchmark::kMillisecond);
    for (std::size_t t : {1u, 2u})
        benchmark::RegisterBenchmark(("canonical_texts/llama3/threads:" + std::to_string(t)).c_str(), canonical_texts, t)->UseRealTime()->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark("beam/toy", beam)->UseRealTime()->Unit(benchmark::kMillisecond);
}

} // namespace

/// BLD_BENCH_EXPORT: the inputs and bld's results for the numpy baseline.
int export_for_numpy(const std::string& dir) {
    for (const auto& c : vocab_cases) {
        const auto& plan = *vocab(c.name).plan;
        const auto& b = batch<float>(c.name);
        const std::string stem = dir + "/" + c.name;
        std::vector<std::int64_t> bins(plan.vocab_size());
        for (std::size_t i = 0; i < bins.size(); ++i)
            bins[i] = plan.bins()[i] == bld::ignored_bin ? -1 : static_cast<std::int64_t>(plan.bins()[i]);
        bld::io::write_npy(stem + ".bins.npy", bins.data(), {static_cast<std::int64_t>(bins.size())});
        const std::size_t R = 8;
        std::vector<float> rows(R * b.V);
        for (std::size_t r = 0; r < R; ++r) std::copy(b.rows.begin() + r * b.n, b.rows.begin() + r * b.n + b.V, rows.begin() + r * b.V);
        bld::io::write_npy(stem + ".rows.npy", rows.data(), {static_cast<std::int64_t>(R), static_cast<std::int64_t>(b.V)});
        const auto sums = bld::summarize_rows(plan, b.view(R));
        std::vector<double> root;
        for (const auto& s : sums) root.insert(root.end(), s.root.begin(), s.root.end());
        bld::io::write_npy(stem + ".root.npy", root.data(), {static_cast<std::int64_t>(R), 257});
    }
    return 0;
}

int main(int argc, char** argv) {
    if (const char* dir = std::getenv("BLD_BENCH_EXPORT"); dir && *dir) return export_for_numpy(dir);
    register_all();
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    benchmark::AddCustomContext("bld_simd_level", std::string(bld::simd::to_string(bld::simd::detected_level())));
    {
        std::ifstream la("/proc/loadavg");
        std::string l;
        if (std::getline(la, l)) benchmark::AddCustomContext("loadavg_at_start", l);
    }
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    if (any_check_failed) std::fprintf(stderr, "bench_row_pass: a result check failed; the timings above are void\n");
    return any_check_failed ? 1 : 0;
}
