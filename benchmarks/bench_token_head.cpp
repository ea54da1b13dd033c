// bench_token_head — token-head distillation (bld::token_head_loss, projection/student_path.hpp):
// the student's canonical path over its own rows, forward + backward, one text, one thread,
// beside a streaming read of rows of the same size.
//
// Students GPT-2 (V = 50,257) and Llama-3 (V = 128,256), float32 rows and gradient. A text is the
// first 64 tokens of a fortunes record (.cache/data/ref/<vocab>.encode.tsv: the reference
// encoders' ids, scripts/fetch-data.sh); its 64 rows are random N(0, 3) logits (windows of a pool
// of draws at random offsets, seed 42); its targets [bytes, 260] are a "teacher": bld::canonical_path
// of the same student vocabulary on another random row set (the student's own support, every byte
// reachable), stored as float32; mask all ones; forward KL, τ = 1, mean reduction. Each
// configuration cycles through a pool of such texts of ≥ 512 MiB of rows per row order (past
// every cache), one text per iteration; the gradient goes to one [64, width] buffer.
//
//   token_head/<vocab>/f32/fwd_bwd/{id,trie}   token_head_loss with the gradient; rows in id order
//       or with their columns permuted by row_plan::permutation() (trie order); beside each
//       iteration (timer paused) a streaming read of another text's rows (as cold as the route's:
//       the text half a pool away): x_stream = median route time ÷ median stream time
//   token_head/<vocab>/f32/fwd/{id,trie}       the same call with an empty gradient (the loss only)
//   token_head/<vocab>/f32/stream/{id,trie}    simd::stream_read of the rows alone, same rotation
//
// Counters: items_per_second = student rows/s, bytes_per_second = logits read (64 rows × width ×
// 4 bytes per text), us_per_row, x_stream, stream_us_per_row. Checked before timing on the first
// text, else the benchmark fails (SkipWithError, exit status 1): the fast path in id and trie
// order, with and without the gradient, against the fp64 reference (projection_path::reference on
// double copies of the rows): value within 1e-5 relative, gradient within 1e-5 · max|g|.
// Times are wall-clock (UseRealTime).
#include <bld/io/json.hpp>
// student_path.hpp names bld::target_type without including its header (slot_targets.hpp): first.
#include <bld/targets/slot_targets.hpp>
#include <bld/projection/student_path.hpp>
#include <bld/backends/simd/kernels.hpp>

#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#ifndef BLD_DATA_DIR
#define BLD_DATA_DIR ".cache/data"
#endif

namespace {

bool any_check_failed = false;
constexpr std::size_t text_tokens = 64;
constexpr std::size_t pool_bytes = std::size_t{512} << 20; // rows per order and vocabulary

std::string data_dir() {
    const char* env = std::getenv("BLD_DATA_DIR");
    return env && *env ? env : BLD_DATA_DIR;
}

/// The id lists of <name>.encode.tsv (lang \t hex text \t ids), one per record.
std::vector<std::vector<std::int64_t>> read_ids(const std::string& name) {
    std::vector<std::vector<std::int64_t>> out;
    std::ifstream f(data_dir() + "/ref/" + name + ".encode.tsv", std::ios::binary);
    std::string line;
    while (std::getline(f, line)) {
        const auto t2 = line.find('\t', line.find('\t') + 1);
        if (t2 == std::string::npos) continue;
        std::vector<std::int64_t> ids;
        const char* p = line.c_str() + t2 + 1;
        while (*p != '\0') {
            char* end = nullptr;
            ids.push_back(std::strtoll(p, &end, 10));
            if (end == p) break;
            p = end;
            while (*p == ' ') ++p;
        }
        out.push_back(std::move(ids));
    }
    return out;
}

/// One text: its ids and teacher targets; its rows live in the pools at index k.
struct text {
    std::vector<std::int64_t> ids;
    std::vector<float> targets; // [bytes, 260]
    std::vector<std::uint8_t> mask;
    std::int64_t bytes = 0;
};

/// A student vocabulary's pool of texts with their rows in both orders (built on first use; the
/// other vocabulary's pool is released then, so one pool lives at a time).
struct student_inputs {
    std::string key;
    std::unique_ptr<bld::byte_trie> trie;
    std::unique_ptr<bld::row_plan> plan;
    std::int64_t V = 0, P = 0, m = static_cast<std::int64_t>(text_tokens);
    std::vector<text> texts;
    std::vector<float> id_rows, trie_rows; // [texts, m, V] and [texts, m, P]
    std::vector<float> grad;               // [m, max(V, P)]
    std::string error;

    [[nodiscard]] std::int64_t width(bool trie_order) const { return trie_order ? P : V; }
    [[nodiscard]] const float* rows(std::size_t k, bool trie_order) const {
        return (trie_order ? trie_rows.data() : id_rows.data()) + static_cast<std::int64_t>(k) * m * width(trie_order);
    }
    [[nodiscard]] std::size_t row_bytes(bool trie_order) const {
        return static_cast<std::size_t>(width(trie_order)) * sizeof(float);
    }
    bld::token_head_result run(std::size_t k, bool trie_order, bool backward) {
        const auto& t = texts[k];
        const auto w = width(trie_order);
        bld::tensor_view<float, 2> g;
        if (backward) g = bld::tensor_view<float, 2>(grad.data(), {m, w});
        return bld::token_head_loss(*plan, bld::tensor_view<const float, 2>(rows(k, trie_order), {m, w}), t.ids,
                                    bld::tensor_view<const float, 2>(t.targets.data(), {t.bytes, 260}), t.mask,
                                    bld::token_head_options{}, g,
                                    {trie_order ? bld::row_order::trie : bld::row_order::id, bld::projection_path::fast});
    }
};

std::unique_ptr<student_inputs> current;

/// "" when the fast path on text 0 matches the fp64 reference, else why not.
std::string check(student_inputs& in) {
    const auto& t = in.texts[0];
    const auto m = in.m, V = in.V;
    std::vector<double> rd(in.rows(0, false), in.rows(0, false) + m * V);
    std::vector<double> gref(rd.size());
    const bld::tensor_view<const float, 2> tv(t.targets.data(), {t.bytes, 260});
    const auto ref = bld::token_head_loss(*in.plan, bld::tensor_view<const double, 2>(rd.data(), {m, V}), t.ids, tv, t.mask,
                                          bld::token_head_options{}, bld::tensor_view<double, 2>(gref.data(), {m, V}),
                                          {bld::row_order::id, bld::projection_path::reference});
    double gmax = 0.0;
    for (const double g : gref) gmax = std::max(gmax, std::abs(g));
    if (!(gmax > 0.0) || !std::isfinite(ref.value)) return "the reference gradient is zero or the value not finite";
    const auto perm = in.plan->permutation();
    for (const bool trie_order : {false, true})
        for (const bool backward : {true, false}) {
            const std::string what = std::string(trie_order ? "trie" : "id") + " order" + (backward ? "" : ", forward only");
            std::fill(in.grad.begin(), in.grad.end(), 9.0f);
            const auto r = in.run(0, trie_order, backward);
            if (!(std::abs(r.value - ref.value) <= 1e-5 * std::abs(ref.value)) || r.positions != ref.positions)
                return what + ": value " + std::to_string(r.value) + " against the reference's " + std::to_string(ref.value);
            if (!backward) continue;
            for (std::int64_t j = 0; j < m; ++j)
                for (std::int64_t c = 0; c < in.width(trie_order); ++c) {
                    const auto col = trie_order ? static_cast<std::int64_t>(perm[static_cast<std::size_t>(c)]) : c;
                    const double got = in.grad[static_cast<std::size_t>(j * in.width(trie_order) + c)];
                    if (!(std::abs(got - gref[static_cast<std::size_t>(j * V + col)]) <= 1e-5 * gmax))
                        return what + ": gradient of row " + std::to_string(j) + ", id " + std::to_string(col) +
                               " differs from the reference's beyond 1e-5 max|g|";
                }
        }
    return "";
}

student_inputs& inputs(const std::string& key) {
    if (current && current->key == key) return *current;
    current.reset(); // one pool at a time
    current = std::make_unique<student_inputs>();
    auto& in = *current;
    in.key = key;
    try {
        const auto dir = data_dir();
        in.trie = std::make_unique<bld::byte_trie>(
            bld::io::load_vocabulary(dir + (key == "gpt2" ? "/tokenizers/gpt2" : "/tokenizers/llama3/tokenizer.json")));
        in.plan = std::make_unique<bld::row_plan>(*in.trie);
        in.V = static_cast<std::int64_t>(in.plan->vocab_size());
        const auto perm = in.plan->permutation();
        in.P = static_cast<std::int64_t>(perm.size());
        const auto records = read_ids(key);
        std::vector<std::size_t> ok;
        for (std::size_t r = 0; r < records.size(); ++r)
            if (records[r].size() >= text_tokens) ok.push_back(r);
        const std::size_t n = std::max<std::size_t>(
            2, (pool_bytes + static_cast<std::size_t>(in.m * in.V) * 4 - 1) / (static_cast<std::size_t>(in.m * in.V) * 4));
        if (ok.size() < n) {
            in.error = "too few fortunes records of ≥ 64 tokens in " + key + ".encode.tsv (run scripts/fetch-data.sh)";
            return in;
        }
        std::vector<float> pool(std::size_t{1} << 22);
        std::mt19937_64 rng(42);
        std::normal_distribution<float> g(0.0f, 3.0f);
        for (auto& x : pool) x = g(rng);
        const auto window = [&](float* row) {
            const std::size_t off = rng() % (pool.size() - static_cast<std::size_t>(in.V));
            std::copy_n(pool.begin() + static_cast<std::ptrdiff_t>(off), in.V, row);
        };
        const auto m = in.m, V = in.V, P = in.P;
        in.id_rows.assign(n * static_cast<std::size_t>(m * V), 0.0f);
        in.trie_rows.assign(n * static_cast<std::size_t>(m * P), 0.0f);
        in.grad.assign(static_cast<std::size_t>(m * std::max(V, P)), 0.0f);
        std::vector<float> teacher(static_cast<std::size_t>(m * V));
        std::normal_distribution<double> noise(0.0, 0.5);
        for (std::size_t k = 0; k < n; ++k) {
            text t;
            const auto& ids = records[ok[k * ok.size() / n]];
            t.ids.assign(ids.begin(), ids.begin() + m);
            float* rows = in.id_rows.data() + static_cast<std::int64_t>(k) * m * V;
            float* sorted = in.trie_rows.data() + static_cast<std::int64_t>(k) * m * P;
            for (std::int64_t j = 0; j < m; ++j) {
                window(rows + j * V);
                for (std::int64_t c = 0; c < P; ++c) sorted[j * P + c] = rows[j * V + perm[static_cast<std::size_t>(c)]];
                window(teacher.data() + j * V);
            }
            const auto q = bld::canonical_path(*in.plan, bld::tensor_view<const float, 2>(teacher.data(), {m, V}), t.ids);
            t.bytes = static_cast<std::int64_t>(q.positions);
            t.targets.assign(q.probs.begin(), q.probs.end());
            t.mask.assign(q.positions, 1);
            in.texts.push_back(std::move(t));
        }
        in.error = check(in);
    } catch (const std::exception& e) {
        in.error = e.what();
    }
    return in;
}

void fail(benchmark::State& state, const std::string& what) {
    any_check_failed = true;
    state.SkipWithError(what.c_str());
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    const std::size_t n = v.size();
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

void row_counters(benchmark::State& state, const student_inputs& in, bool trie_order) {
    const auto rows = state.iterations() * in.m;
    state.SetItemsProcessed(rows);
    state.SetBytesProcessed(rows * static_cast<std::int64_t>(in.row_bytes(trie_order)));
    state.counters["us_per_row"] =
        benchmark::Counter(static_cast<double>(rows) * 1e-6, benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
    state.counters["width"] = static_cast<double>(in.width(trie_order));
}

void route(benchmark::State& state, std::string key, bool trie_order, bool backward) {
    auto& in = inputs(key);
    if (!in.error.empty()) return fail(state, in.error);
    const std::size_t n = in.texts.size(), bytes = static_cast<std::size_t>(in.m) * in.row_bytes(trie_order);
    std::uint32_t sink = 0;
    std::vector<double> t_run, t_stream;
    std::size_t k = 0;
    double value = 0.0;
    using clock = std::chrono::steady_clock;
    for (auto _ : state) {
        // The stream beside each iteration, timer paused: another text's rows, as cold as these.
        state.PauseTiming();
        const auto s0 = clock::now();
        sink += bld::simd::stream_read(in.rows((k + n / 2) % n, trie_order), bytes);
        t_stream.push_back(std::chrono::duration<double>(clock::now() - s0).count());
        state.ResumeTiming();
        const auto r0 = clock::now();
        value += in.run(k, trie_order, backward).value;
        t_run.push_back(std::chrono::duration<double>(clock::now() - r0).count());
        k = (k + 1) % n;
    }
    benchmark::DoNotOptimize(sink);
    benchmark::DoNotOptimize(value);
    row_counters(state, in, trie_order);
    if (!t_run.empty()) {
        state.counters["stream_us_per_row"] = median(t_stream) / static_cast<double>(in.m) * 1e6;
        state.counters["x_stream"] = median(t_run) / median(t_stream);
    }
}

void stream(benchmark::State& state, std::string key, bool trie_order) {
    auto& in = inputs(key);
    if (!in.error.empty()) return fail(state, in.error);
    const std::size_t n = in.texts.size(), bytes = static_cast<std::size_t>(in.m) * in.row_bytes(trie_order);
    std::uint32_t sink = 0;
    std::size_t k = 0;
    for (auto _ : state) {
        sink += bld::simd::stream_read(in.rows(k, trie_order), bytes);
        k = (k + 1) % n;
    }
    benchmark::DoNotOptimize(sink);
    row_counters(state, in, trie_order);
}

} // namespace

int main(int argc, char** argv) {
    for (const std::string key : {"gpt2", "llama3"}) {
        const std::string p = "token_head/" + key + "/f32/";
        for (const bool trie : {false, true}) {
            const std::string order = trie ? "trie" : "id";
            benchmark::RegisterBenchmark((p + "fwd_bwd/" + order).c_str(), route, key, trie, true)
                ->UseRealTime()->Unit(benchmark::kMillisecond);
            benchmark::RegisterBenchmark((p + "fwd/" + order).c_str(), route, key, trie, false)
                ->UseRealTime()->Unit(benchmark::kMillisecond);
            benchmark::RegisterBenchmark((p + "stream/" + order).c_str(), stream, key, trie)
                ->UseRealTime()->Unit(benchmark::kMillisecond);
        }
    }
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    benchmark::AddCustomContext("bld_simd_level", std::string(bld::simd::to_string(bld::simd::default_level())));
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    if (any_check_failed) std::fprintf(stderr, "bench_token_head: a result check failed; the timings above are void\n");
    return any_check_failed ? 1 : 0;
}
