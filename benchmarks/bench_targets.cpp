// bench_targets — the trainer's whole route, teacher rows → compact slot targets
// (bld::distiller), on real text, beside a streaming read of the same rows and the old route.
//
// Teacher Llama-3 (128k), student GPT-2, K = 10 byte heads, float32 rows and targets. The texts:
// 12 records of the fetched corpora (.cache/data/ref/llama3.encode.tsv and gpt2.encode.tsv, the
// reference encoders' ids) with 32–64 Llama-3 tokens, evenly spaced over the files, as one
// right-padded batch; every valid teacher row is random N(0, 3) (a window of a pool of draws at a
// random offset), ≈ 290 MiB of rows, past every cache. Trie order: the same rows with their
// columns permuted once by the distiller's permutation().
//
//   targets/llama3_gpt2/f32/route/{id,trie}/threads:{1,2}   distiller::targets(batch): the whole
//       route (alignment, row pass, node sums, compact targets); beside each iteration (timer
//       paused) a streaming read of the rows it reads on the same threads: x_stream = median
//       route time ÷ median stream time, stream_us_per_row
//   targets/llama3_gpt2/f32/stream/{id,trie}/threads:{1,2}  simd::stream_read of those rows
//       alone (rows split evenly over the threads): the memory floor, and how it scales
//   targets/llama3_gpt2/f32/canonical_targets               the old route, bld::canonical_targets
//       (the fp64 scalar reference projection, one text at a time) on the first 2 texts
//   targets/llama3_gpt2/f32/loss/{compact,dense}            bld::bld_loss forward + backward on
//       the batch's targets in each layout (random student logits N(0, 2)), per active slot
//
// Counters: us_per_teacher_row, items_per_second = teacher rows/s, slots_per_s = active slots/s
// (route), us_per_active_slot (loss). Checked before timing, else the benchmark fails
// (SkipWithError, exit status 1): every route configuration against canonical_targets on the first
// 2 texts (mask and true bytes equal, values within 2e-5 relative + 1e-7: the projection's 1e-5
// plus float32 storage), the two-thread targets bit-identical to the one-thread targets, and the
// loss on compact targets equal to the loss on dense targets (value 1e-12 relative, gradient
// exactly). Times are wall-clock (UseRealTime).
#include <bld/cpu.hpp>
#include <bld/io/json.hpp>
#include <bld/loss/byte_loss.hpp>
#include <bld/targets/distiller.hpp>
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
constexpr std::size_t sequences = 12, min_tokens = 32, max_tokens = 64, reference_texts = 2, heads = 10;

std::string data_dir() {
    const char* env = std::getenv("BLD_DATA_DIR");
    return env && *env ? env : BLD_DATA_DIR;
}

struct encoded_text {
    std::string text;
    std::vector<std::int64_t> ids;
};

std::vector<encoded_text> read_encodings(const std::string& name) {
    std::vector<encoded_text> out;
    std::ifstream f(data_dir() + "/ref/" + name + ".encode.tsv", std::ios::binary);
    std::string line;
    const auto hex = [](char c) { return c <= '9' ? c - '0' : c - 'a' + 10; };
    while (std::getline(f, line)) {
        const auto t1 = line.find('\t'), t2 = line.find('\t', t1 + 1);
        encoded_text e;
        for (std::size_t i = t1 + 1; i + 1 < t2; i += 2) e.text += static_cast<char>(hex(line[i]) * 16 + hex(line[i + 1]));
        const char* p = line.c_str() + t2 + 1;
        while (*p != '\0') {
            char* end = nullptr;
            e.ids.push_back(std::strtoll(p, &end, 10));
            p = end;
            while (*p == ' ') ++p;
        }
        out.push_back(std::move(e));
    }
    return out;
}

/// The batch, its two row orders, the four distillers and the reference targets (built once).
struct route_inputs {
    std::shared_ptr<const bld::byte_trie> teacher;
    std::shared_ptr<const bld::vocabulary> student;
    std::vector<encoded_text> te, se;
    std::vector<std::size_t> recs;
    std::int64_t B = 0, St = 0, Ss = 0, V = 0, W = 0, rows = 0;
    std::vector<float> id_rows, trie_rows;
    std::vector<std::int64_t> tids, sids, tlen, slen;
    std::unique_ptr<bld::distiller> d[2][2]; ///< [trie][two threads]
    std::vector<bld::slot_targets> want;     ///< canonical_targets of the first texts
    std::string error;                       ///< a failed setup or check, for every benchmark

    [[nodiscard]] bld::distill_batch<float> batch(bool trie) const {
        bld::distill_batch<float> b;
        b.teacher_logits = bld::tensor_view<const float, 3>(trie ? trie_rows.data() : id_rows.data(), {B, St, trie ? W : V});
        b.teacher_ids = bld::tensor_view<const std::int64_t, 2>(tids.data(), {B, St});
        b.student_ids = bld::tensor_view<const std::int64_t, 2>(sids.data(), {B, Ss});
        b.ranges.teacher_lengths = tlen;
        b.ranges.student_lengths = slen;
        return b;
    }
    /// The rows the route reads (valid rows only), in batch order.
    [[nodiscard]] std::vector<const float*> valid_rows(bool trie) const {
        std::vector<const float*> v;
        const float* base = trie ? trie_rows.data() : id_rows.data();
        const std::int64_t w = trie ? W : V;
        for (std::int64_t b = 0; b < B; ++b)
            for (std::int64_t q = 0; q < tlen[static_cast<std::size_t>(b)]; ++q) v.push_back(base + (b * St + q) * w);
        return v;
    }
    void reference(std::vector<bld::slot_targets>* keep) const {
        for (std::size_t b = 0; b < reference_texts; ++b) {
            const auto& t = te[recs[b]];
            const bld::tensor_view<const float, 2> view(id_rows.data() + static_cast<std::int64_t>(b) * St * V, {tlen[b], V});
            auto r = bld::canonical_targets(*student, se[recs[b]].ids, *teacher, view, t.ids, heads, std::string_view(t.text));
            if (keep) keep->push_back(std::move(r));
        }
    }
    [[nodiscard]] std::int64_t reference_rows() const {
        std::int64_t n = 0;
        for (std::size_t b = 0; b < reference_texts; ++b) n += tlen[b];
        return n;
    }
};

/// "" when the first reference_texts sequences of `got` match canonical_targets, else why not.
std::string compare(const route_inputs& in, const bld::target_batch& got) {
    const auto K = static_cast<std::int64_t>(heads);
    const auto values = got.values_f32();
    const auto slots = got.slots();
    for (std::size_t b = 0; b < reference_texts; ++b) {
        const auto& w = in.want[b];
        for (std::int64_t p = 0; p < in.Ss; ++p)
            for (std::int64_t k = 0; k < K; ++k) {
                const std::int64_t slot = (static_cast<std::int64_t>(b) * in.Ss + p) * K + k;
                const auto ws = static_cast<std::size_t>(p * K + k);
                const bool active = p < in.slen[b] && w.alignment.mask[ws] != 0;
                if ((got.mask().data()[slot] != 0) != active) return "slot mask differs from canonical_targets";
                if (!active) continue;
                if (got.true_bytes().data()[slot] != w.alignment.true_byte[ws]) return "true byte differs from canonical_targets";
                const auto it = std::lower_bound(slots.data(), slots.data() + slots.extent(0), slot);
                const float* row = values.data() + (it - slots.data()) * 260;
                for (std::size_t c = 0; c < 260; ++c) {
                    const double ref = w.targets[ws * 260 + c];
                    if (!(std::abs(row[c] - ref) <= 2e-5 * ref + 1e-7)) return "targets differ from canonical_targets";
                }
            }
    }
    return "";
}

bool same_bits(const bld::target_batch& a, const bld::target_batch& b) {
    const auto av = a.values_f32(), bv = b.values_f32();
    return a.active_slots() == b.active_slots() && std::equal(av.data(), av.data() + av.size(), bv.data()) &&
           std::equal(a.slots().data(), a.slots().data() + a.active_slots(), b.slots().data()) &&
           std::equal(a.dropped().data(), a.dropped().data() + a.dropped().size(), b.dropped().data());
}

const route_inputs& inputs() {
    static route_inputs in;
    static bool built = false;
    if (built) return in;
    built = true;
    try {
        const auto dir = data_dir();
        in.teacher = std::make_shared<const bld::byte_trie>(bld::io::load_vocabulary(dir + "/tokenizers/llama3/tokenizer.json"));
        in.student = std::make_shared<const bld::vocabulary>(bld::io::load_vocabulary(dir + "/tokenizers/gpt2"));
        in.te = read_encodings("llama3");
        in.se = read_encodings("gpt2");
        if (in.te.empty() || in.te.size() != in.se.size()) {
            in.error = "reference encodings missing or of different lengths (run scripts/fetch-data.sh)";
            return in;
        }
        std::vector<std::size_t> ok;
        for (std::size_t i = 0; i < in.te.size(); ++i)
            if (in.te[i].text == in.se[i].text && in.te[i].ids.size() >= min_tokens && in.te[i].ids.size() <= max_tokens &&
                in.se[i].ids.size() >= 4)
                ok.push_back(i);
        if (ok.size() < sequences) {
            in.error = "too few texts of 32..64 Llama-3 tokens";
            return in;
        }
        for (std::size_t k = 0; k < sequences; ++k) in.recs.push_back(ok[k * ok.size() / sequences]);
        for (std::size_t t = 0; t < 2; ++t)
            for (std::size_t n = 0; n < 2; ++n)
                in.d[t][n] = std::make_unique<bld::distiller>(
                    in.teacher, in.student,
                    bld::distiller_options{.heads = heads, .rows = t ? bld::row_order::trie : bld::row_order::id,
                                           .parallel = {n + 1}});
        const auto& d = *in.d[1][0];
        in.V = static_cast<std::int64_t>(d.plan().vocab_size());
        in.W = static_cast<std::int64_t>(d.row_width());
        in.B = static_cast<std::int64_t>(sequences);
        for (const auto r : in.recs) {
            in.tlen.push_back(static_cast<std::int64_t>(in.te[r].ids.size()));
            in.slen.push_back(static_cast<std::int64_t>(in.se[r].ids.size()));
            in.St = std::max(in.St, in.tlen.back());
            in.Ss = std::max(in.Ss, in.slen.back());
            in.rows += in.tlen.back();
        }
        std::vector<float> pool(std::size_t{1} << 22);
        std::mt19937_64 rng(42);
        std::normal_distribution<float> g(0.0f, 3.0f);
        for (auto& x : pool) x = g(rng);
        in.id_rows.assign(static_cast<std::size_t>(in.B * in.St * in.V), 0.0f);
        in.trie_rows.assign(static_cast<std::size_t>(in.B * in.St * in.W), 0.0f);
        in.tids.assign(static_cast<std::size_t>(in.B * in.St), 0);
        in.sids.assign(static_cast<std::size_t>(in.B * in.Ss), 0);
        const auto perm = d.permutation();
        for (std::int64_t b = 0; b < in.B; ++b) {
            const auto& t = in.te[in.recs[static_cast<std::size_t>(b)]].ids;
            const auto& s = in.se[in.recs[static_cast<std::size_t>(b)]].ids;
            std::copy(t.begin(), t.end(), in.tids.begin() + b * in.St);
            std::copy(s.begin(), s.end(), in.sids.begin() + b * in.Ss);
            for (std::int64_t q = 0; q < in.tlen[static_cast<std::size_t>(b)]; ++q) {
                const std::size_t off = rng() % (pool.size() - static_cast<std::size_t>(in.V));
                float* row = in.id_rows.data() + (b * in.St + q) * in.V;
                std::copy(pool.begin() + static_cast<std::ptrdiff_t>(off), pool.begin() + static_cast<std::ptrdiff_t>(off) + in.V, row);
                float* sorted = in.trie_rows.data() + (b * in.St + q) * in.W;
                for (std::int64_t c = 0; c < in.W; ++c) sorted[c] = row[perm[static_cast<std::size_t>(c)]];
            }
        }
        in.reference(&in.want);
        for (std::size_t t = 0; t < 2; ++t) {
            const auto one = in.d[t][0]->targets(in.batch(t != 0));
            const auto two = in.d[t][1]->targets(in.batch(t != 0));
            if (const auto why = compare(in, one); !why.empty()) {
                in.error = std::string(t ? "trie order: " : "id order: ") + why;
                return in;
            }
            if (!same_bits(one, two)) {
                in.error = "two threads give other targets than one thread";
                return in;
            }
        }
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

void stream_rows(const std::vector<const float*>& rows, std::size_t bytes, std::size_t threads, std::vector<std::uint32_t>& sink) {
    bld::parallel_for(rows.size(), {threads}, [&](std::size_t b, std::size_t e, std::size_t w) {
        for (std::size_t r = b; r < e; ++r) sink[w] += bld::simd::stream_read(rows[r], bytes);
    });
}

void row_counters(benchmark::State& state, std::int64_t rows) {
    state.SetItemsProcessed(state.iterations() * rows);
    state.counters["us_per_teacher_row"] = benchmark::Counter(static_cast<double>(state.iterations() * rows) * 1e-6,
                                                              benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}

void route(benchmark::State& state, bool trie, std::size_t threads) {
    const auto& in = inputs();
    if (!in.error.empty()) return fail(state, in.error);
    const auto& d = *in.d[trie][threads - 1];
    const auto batch = in.batch(trie);
    const auto rows = in.valid_rows(trie);
    const std::size_t row_bytes = static_cast<std::size_t>(trie ? in.W : in.V) * sizeof(float);
    std::vector<std::uint32_t> sink(threads, 0);
    std::vector<double> t_run, t_stream;
    std::int64_t active = 0;
    using clock = std::chrono::steady_clock;
    for (auto _ : state) {
        // The stream beside each iteration, timer paused: both see the same machine load.
        state.PauseTiming();
        const auto s0 = clock::now();
        stream_rows(rows, row_bytes, threads, sink);
        t_stream.push_back(std::chrono::duration<double>(clock::now() - s0).count());
        state.ResumeTiming();
        const auto r0 = clock::now();
        active = d.targets(batch).active_slots();
        t_run.push_back(std::chrono::duration<double>(clock::now() - r0).count());
    }
    benchmark::DoNotOptimize(sink.data());
    row_counters(state, in.rows);
    state.counters["slots_per_s"] = benchmark::Counter(static_cast<double>(state.iterations() * active), benchmark::Counter::kIsRate);
    state.counters["slots"] = static_cast<double>(active);
    if (!t_run.empty()) {
        state.counters["stream_us_per_row"] = median(t_stream) / static_cast<double>(in.rows) * 1e6;
        state.counters["x_stream"] = median(t_run) / median(t_stream);
    }
}

void stream(benchmark::State& state, bool trie, std::size_t threads) {
    const auto& in = inputs();
    if (!in.error.empty()) return fail(state, in.error);
    const auto rows = in.valid_rows(trie);
    const std::size_t row_bytes = static_cast<std::size_t>(trie ? in.W : in.V) * sizeof(float);
    std::vector<std::uint32_t> sink(threads, 0);
    for (auto _ : state) stream_rows(rows, row_bytes, threads, sink);
    benchmark::DoNotOptimize(sink.data());
    row_counters(state, in.rows);
    state.SetBytesProcessed(state.iterations() * in.rows * static_cast<std::int64_t>(row_bytes));
}

void canonical_targets(benchmark::State& state) {
    const auto& in = inputs();
    if (!in.error.empty()) return fail(state, in.error);
    for (auto _ : state) in.reference(nullptr);
    row_counters(state, in.reference_rows());
}

/// The loss on the batch's targets: random student logits [T, K, 260], compact and dense targets.
struct loss_inputs {
    bld::target_batch compact, dense;
    std::vector<float> logits, grad;
    std::string error;
    [[nodiscard]] bld::tensor_view<const float, 3> z() const {
        return {logits.data(), {compact.tokens(), static_cast<std::int64_t>(heads), 260}};
    }
    [[nodiscard]] bld::tensor_view<float, 3> g() { return {grad.data(), {compact.tokens(), static_cast<std::int64_t>(heads), 260}}; }
};

loss_inputs& loss_data() {
    static loss_inputs l;
    static bool built = false;
    if (built) return l;
    built = true;
    const auto& in = inputs();
    if (!in.error.empty()) {
        l.error = in.error;
        return l;
    }
    l.compact = in.d[0][0]->targets(in.batch(false));
    const bld::distiller dense(in.teacher, in.student, {.heads = heads, .layout = bld::target_layout::dense});
    l.dense = dense.targets(in.batch(false));
    l.logits.resize(static_cast<std::size_t>(l.compact.tokens()) * heads * 260);
    l.grad.resize(l.logits.size());
    std::mt19937 rng(5);
    std::normal_distribution<float> g(0.0f, 2.0f);
    for (auto& x : l.logits) x = g(rng);
    std::vector<float> gd(l.grad.size());
    const auto rc = bld::bld_loss(l.z(), l.compact.view<float>(), {}, l.g());
    const auto rd = bld::bld_loss(l.z(), l.dense.view<float>(), {},
                                  bld::tensor_view<float, 3>(gd.data(), {l.compact.tokens(), static_cast<std::int64_t>(heads), 260}));
    if (rc.active_slots != l.compact.active_slots() || rd.active_slots != rc.active_slots ||
        !(std::abs(rc.value - rd.value) <= 1e-12 * std::abs(rd.value)) || gd != l.grad)
        l.error = "the loss on compact targets differs from the loss on dense targets";
    return l;
}

void loss(benchmark::State& state, bool compact) {
    auto& l = loss_data();
    if (!l.error.empty()) return fail(state, l.error);
    const auto view = compact ? l.compact.view<float>() : l.dense.view<float>();
    for (auto _ : state) benchmark::DoNotOptimize(bld::bld_loss(l.z(), view, {}, l.g()));
    const auto active = l.compact.active_slots();
    state.SetItemsProcessed(state.iterations() * active);
    state.counters["us_per_active_slot"] = benchmark::Counter(static_cast<double>(state.iterations() * active) * 1e-6,
                                                              benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
    state.counters["active_slots"] = static_cast<double>(active);
    state.counters["slots"] = static_cast<double>(l.compact.slot_count());
}

} // namespace

int main(int argc, char** argv) {
    const std::string p = "targets/llama3_gpt2/f32/";
    for (const bool trie : {false, true})
        for (const std::size_t threads : {1u, 2u}) {
            const std::string order = trie ? "trie" : "id", t = "/threads:" + std::to_string(threads);
            benchmark::RegisterBenchmark((p + "route/" + order + t).c_str(), route, trie, threads)
                ->UseRealTime()->Unit(benchmark::kMillisecond);
            benchmark::RegisterBenchmark((p + "stream/" + order + t).c_str(), stream, trie, threads)
                ->UseRealTime()->Unit(benchmark::kMillisecond);
        }
    benchmark::RegisterBenchmark((p + "canonical_targets").c_str(), canonical_targets)->UseRealTime()->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark((p + "loss/compact").c_str(), loss, true)->UseRealTime()->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark((p + "loss/dense").c_str(), loss, false)->UseRealTime()->Unit(benchmark::kMillisecond);
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    benchmark::AddCustomContext("bld_simd_level", std::string(bld::simd::to_string(bld::simd::default_level())));
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    if (any_check_failed) std::fprintf(stderr, "bench_targets: a result check failed; the timings above are void\n");
    return any_check_failed ? 1 : 0;
}
