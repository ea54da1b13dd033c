// bench_loss — the byte loss forward + backward (bld::bld_loss, defaults: λ_b = 1, λ_KL = 0.1,
// forward KL, τ = 1, eq5 reduction) per slot of 260 logits, beside the scalar reference kernel
// and a streaming read of the bytes the loss reads (logits + targets) (style.md habit 12).
//
//   loss/bld_loss/f32       float32 logits and targets: the SIMD slot kernel (AVX2 / AVX-512)
//   loss/bld_loss/f64       float64 logits: the scalar reference kernel, through the same API
//   loss/reference_kernel   math::slot_loss (one lane) on the float32 batch, slot by slot
//   loss/stream             simd::stream_read of the float32 logits and targets
//
// A batch of 256 tokens × 10 heads (2560 slots, 90% active), random logits N(0, 2), targets
// the softmax of other random logits, random true bytes. Checked before timing: the f32 and
// f64 losses agree (1e-12 relative) and the f32 gradient equals the reference kernel's within
// one float rounding. Counters: items_per_second = slots/s, bytes_per_second = logits and
// targets read per second, us_per_slot. Wall-clock times.
//
// BLD_BENCH_EXPORT=DIR: write DIR/loss.{logits,targets,true_bytes,mask,grad}.npy and
// loss.meta.json (bld's loss value, the options) for scripts/bench_numpy.py, and exit.
#include <bld/io/npy.hpp>
#include <bld/loss/byte_loss.hpp>
#include <bld/cpu.hpp>
#include <bld/backends/simd/kernels.hpp>

#include <benchmark/benchmark.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>
#include <string>
#include <vector>

namespace {

bool any_check_failed = false;
constexpr std::int64_t T = 256, K = 10, A = 260;

struct loss_batch {
    std::vector<float> logits, targets, grad;
    std::vector<double> logits64, targets64, grad64;
    std::vector<std::int64_t> true_bytes;
    std::vector<std::uint8_t> mask;
    loss_batch() : logits(T * K * A), targets(T * K * A), grad(T * K * A), true_bytes(T * K), mask(T * K) {
        std::mt19937 rng(11);
        std::normal_distribution<float> g(0.0f, 2.0f);
        std::uniform_int_distribution<int> byte(0, 255), coin(0, 9);
        for (auto& x : logits) x = g(rng);
        for (std::int64_t s = 0; s < T * K; ++s) {
            double sum = 0;
            for (std::int64_t a = 0; a < A; ++a) sum += targets[s * A + a] = std::exp(g(rng));
            for (std::int64_t a = 0; a < A; ++a) targets[s * A + a] = static_cast<float>(targets[s * A + a] / sum);
            true_bytes[s] = byte(rng);
            mask[s] = coin(rng) != 0;
        }
        logits64.assign(logits.begin(), logits.end());
        targets64.assign(targets.begin(), targets.end());
        grad64.resize(grad.size());
    }
    [[nodiscard]] bld::tensor_view<const float, 3> z() const { return {logits.data(), {T, K, A}}; }
    [[nodiscard]] bld::tensor_view<const float, 3> p() const { return {targets.data(), {T, K, A}}; }
    [[nodiscard]] bld::tensor_view<const double, 3> z64() const { return {logits64.data(), {T, K, A}}; }
    [[nodiscard]] bld::tensor_view<const double, 3> p64() const { return {targets64.data(), {T, K, A}}; }
    [[nodiscard]] bld::tensor_view<const std::int64_t, 2> y() const { return {true_bytes.data(), {T, K}}; }
    [[nodiscard]] bld::tensor_view<const std::uint8_t, 2> m() const { return {mask.data(), {T, K}}; }
    [[nodiscard]] bld::tensor_view<float, 3> g() { return {grad.data(), {T, K, A}}; }
    [[nodiscard]] bld::tensor_view<double, 3> g64() { return {grad64.data(), {T, K, A}}; }
};

loss_batch& batch() {
    static loss_batch b;
    return b;
}

void counters(benchmark::State& state, std::int64_t bytes_per_slot) {
    state.SetItemsProcessed(state.iterations() * T * K);
    state.SetBytesProcessed(state.iterations() * T * K * bytes_per_slot);
    state.counters["us_per_slot"] = benchmark::Counter(static_cast<double>(state.iterations() * T * K) * 1e-6,
                                                       benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}

void fail(benchmark::State& state, const char* what) {
    any_check_failed = true;
    state.SkipWithError(what);
}

/// The reference kernel over the batch (what bld_loss does for float64 logits).
double reference(loss_batch& b, std::vector<float>& grad) {
    const bld::math::slot_params prm{0.1, 1.0, bld::divergence::forward_kl, 1.0, std::log(1e-12)};
    std::int64_t tokens = 0;
    for (std::int64_t t = 0; t < T; ++t) {
        bool any = false;
        for (std::int64_t k = 0; k < K; ++k) any = any || b.mask[t * K + k];
        tokens += any;
    }
    const double scale = 1.0 / static_cast<double>(tokens);
    double total = 0;
    for (std::int64_t s = 0; s < T * K; ++s) {
        if (!b.mask[s]) {
            std::fill(grad.begin() + s * A, grad.begin() + (s + 1) * A, 0.0f);
            continue;
        }
        total += bld::math::slot_loss(bld::math::host_lanes{}, b.logits.data() + s * A, b.targets.data() + s * A,
                                      static_cast<int>(b.true_bytes[s]), prm, scale, grad.data() + s * A)
                     .value;
    }
    return total * scale;
}

bool checked() {
    static int state = 0; // 0 unchecked, 1 ok, 2 failed
    if (state == 0) {
        auto& b = batch();
        const auto rf = bld::bld_loss(b.z(), b.p(), b.y(), b.m(), {}, b.g());
        const auto rd = bld::bld_loss(b.z64(), b.p64(), b.y(), b.m(), {}, b.g64());
        std::vector<float> gr(b.grad.size());
        const double ref = reference(b, gr);
        bool ok = std::abs(rf.value - rd.value) <= 1e-12 * std::abs(rd.value) && std::abs(ref - rd.value) <= 1e-12 * std::abs(rd.value);
        for (std::size_t i = 0; i < gr.size() && ok; ++i)
            ok = std::abs(b.grad[i] - gr[i]) <= 1.2e-7 * std::abs(gr[i]) + 1e-30;
        state = ok ? 1 : 2;
    }
    return state == 1;
}

void bld_loss_f32(benchmark::State& state) {
    if (!checked()) return fail(state, "float32 bld_loss disagrees with the float64 reference");
    auto& b = batch();
    for (auto _ : state) benchmark::DoNotOptimize(bld::bld_loss(b.z(), b.p(), b.y(), b.m(), {}, b.g()));
    counters(state, 2 * A * 4);
}

void bld_loss_f64(benchmark::State& state) {
    if (!checked()) return fail(state, "float32 bld_loss disagrees with the float64 reference");
    auto& b = batch();
    for (auto _ : state) benchmark::DoNotOptimize(bld::bld_loss(b.z64(), b.p64(), b.y(), b.m(), {}, b.g64()));
    counters(state, 2 * A * 8);
}

void reference_kernel(benchmark::State& state) {
    if (!checked()) return fail(state, "float32 bld_loss disagrees with the float64 reference");
    auto& b = batch();
    std::vector<float> gr(b.grad.size());
    for (auto _ : state) benchmark::DoNotOptimize(reference(b, gr));
    counters(state, 2 * A * 4);
}

void stream(benchmark::State& state) {
    auto& b = batch();
    std::uint32_t sink = 0;
    for (auto _ : state) {
        sink += bld::simd::stream_read(b.logits.data(), b.logits.size() * 4);
        sink += bld::simd::stream_read(b.targets.data(), b.targets.size() * 4);
        benchmark::DoNotOptimize(sink);
    }
    counters(state, 2 * A * 4);
}

int export_for_numpy(const std::string& dir) {
    auto& b = batch();
    const auto r = bld::bld_loss(b.z(), b.p(), b.y(), b.m(), {}, b.g());
    const std::string stem = dir + "/loss";
    bld::io::write_npy(stem + ".logits.npy", b.logits.data(), {T, K, A});
    bld::io::write_npy(stem + ".targets.npy", b.targets.data(), {T, K, A});
    bld::io::write_npy(stem + ".true_bytes.npy", b.true_bytes.data(), {T, K});
    std::vector<std::int64_t> m(b.mask.begin(), b.mask.end());
    bld::io::write_npy(stem + ".mask.npy", m.data(), {T, K});
    bld::io::write_npy(stem + ".grad.npy", b.grad.data(), {T, K, A});
    std::ofstream meta(stem + ".meta.json");
    char buf[512];
    std::snprintf(buf, sizeof buf,
                  "{\"lambda_b\": 1.0, \"lambda_kl\": 0.1, \"temperature\": 1.0, \"reduction\": \"eq5\", "
                  "\"divergence\": \"forward_kl\", \"loss\": %.17g, \"active_tokens\": %lld}\n",
                  r.value, static_cast<long long>(r.active_tokens));
    meta << buf;
    return 0;
}

} // namespace

int main(int argc, char** argv) {
    if (const char* dir = std::getenv("BLD_BENCH_EXPORT"); dir && *dir) return export_for_numpy(dir);
    benchmark::RegisterBenchmark("loss/bld_loss/f32", bld_loss_f32)->UseRealTime()->Unit(benchmark::kMicrosecond);
    benchmark::RegisterBenchmark("loss/bld_loss/f64_reference", bld_loss_f64)->UseRealTime()->Unit(benchmark::kMicrosecond);
    benchmark::RegisterBenchmark("loss/reference_kernel_f32", reference_kernel)->UseRealTime()->Unit(benchmark::kMicrosecond);
    benchmark::RegisterBenchmark("loss/stream", stream)->UseRealTime()->Unit(benchmark::kMicrosecond);
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    benchmark::AddCustomContext("bld_simd_level", std::string(bld::simd::to_string(bld::simd::default_level())));
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    if (any_check_failed) std::fprintf(stderr, "bench_loss: a result check failed; the timings above are void\n");
    return any_check_failed ? 1 : 0;
}
