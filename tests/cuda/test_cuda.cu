// The CUDA side of bld_cuda_tests: runs the kernels behind gpu_calls.hpp, and the row-pass
// benchmark. The only CUDA translation unit of the tests (nvcc is slow).
#include "gpu_calls.hpp"

#include <bld/cuda.cuh>

#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace bld_gpu {
namespace {

constexpr const char* op = "bld_cuda_tests";

/// A stream of its own (the kernels must not rely on the legacy default stream).
struct stream_guard {
    cudaStream_t s = nullptr;
    stream_guard() { bld::cuda::check(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), op, "cudaStreamCreate"); }
    ~stream_guard() {
        (void)cudaStreamSynchronize(s);
        (void)cudaStreamDestroy(s);
    }
    stream_guard(const stream_guard&) = delete;
    stream_guard& operator=(const stream_guard&) = delete;
};

template <class T>
bld::cuda::device_buffer<T> to_device(std::span<const T> host, cudaStream_t s) {
    bld::cuda::device_buffer<T> d(host.size(), s, op);
    d.upload(host.data(), host.size(), op);
    return d;
}

template <class T>
std::vector<T> to_host(const T* dev, std::size_t n, cudaStream_t s) {
    std::vector<T> h(n);
    if (n == 0) return h;
    bld::cuda::check(cudaMemcpyAsync(h.data(), dev, n * sizeof(T), cudaMemcpyDeviceToHost, s), op, "cudaMemcpyAsync");
    bld::cuda::check(cudaStreamSynchronize(s), op, "cudaStreamSynchronize");
    return h;
}

template <class T>
bld::tensor_view<const T, 2> device_view(const bld::cuda::device_buffer<T>& b, std::size_t R, std::size_t N) {
    return bld::tensor_view<const T, 2>(b.data(), {static_cast<std::int64_t>(R), static_cast<std::int64_t>(N)},
                                        bld::device_kind::cuda);
}

template <class T>
row_results row_pass_impl(const bld::byte_trie& trie, std::span<const T> rows, std::size_t R, std::size_t N) {
    stream_guard sg;
    const bld::cuda::device_trie dt(trie, sg.s);
    const auto d_rows = to_device(rows, sg.s);
    bld::cuda::device_row_summaries out(R, sg.s);
    bld::cuda::row_pass(dt, device_view(d_rows, R, N), out.view(), sg.s);
    row_results r;
    r.max = to_host(out.max_logit.data(), R, sg.s);
    r.log_normalizer = to_host(out.log_normalizer.data(), R, sg.s);
    r.root = to_host(out.root.data(), R * 257, sg.s);
    r.status = to_host(out.status.data(), R, sg.s);
    return r;
}

template <class T>
node_results node_sums_impl(const bld::byte_trie& trie, std::span<const T> rows, std::size_t R, std::size_t N,
                            const std::vector<bld::node_request>& requests) {
    stream_guard sg;
    const bld::cuda::device_trie dt(trie, sg.s);
    const auto d_rows = to_device(rows, sg.s);
    const auto d_req = to_device(std::span<const bld::node_request>(requests), sg.s);
    const std::size_t Q = requests.size();
    bld::cuda::device_buffer<double> shift(Q, sg.s), end(Q, sg.s), child(Q * 256, sg.s);
    bld::cuda::node_sums(dt, device_view(d_rows, R, N), d_req.data(), Q,
                         bld::cuda::node_sums_out{shift.data(), end.data(), child.data()}, sg.s);
    node_results r;
    r.shift = to_host(shift.data(), Q, sg.s);
    r.end = to_host(end.data(), Q, sg.s);
    r.child = to_host(child.data(), Q * 256, sg.s);
    return r;
}

template <class T>
bld::byte_distributions canonical_impl(const bld::byte_trie& trie, std::span<const T> rows, std::size_t R,
                                       std::size_t N, std::span<const std::int64_t> ids,
                                       std::optional<std::string_view> text) {
    stream_guard sg;
    const bld::cuda::device_trie dt(trie, sg.s);
    const auto d_rows = to_device(rows, sg.s);
    const auto d = bld::cuda::canonical_path(dt, device_view(d_rows, R, N), ids, text, sg.s);
    return d.to_host();
}

template <class L>
std::vector<double> widen(const std::vector<L>& v) {
    return std::vector<double>(v.begin(), v.end());
}

}  // namespace

// ---- device ------------------------------------------------------------------------------------

device_info query_device() {
    device_info d;
    const cudaError_t rc = cudaGetDeviceCount(&d.count);
    if (rc != cudaSuccess) {
        d.count = 0;
        d.error = std::string(cudaGetErrorName(rc)) + ": " + cudaGetErrorString(rc);
        (void)cudaGetLastError();
        return d;
    }
    if (d.count == 0) {
        d.error = "cudaGetDeviceCount found no device";
        return d;
    }
    int dev = 0;
    (void)cudaGetDevice(&dev);
    cudaDeviceProp p{};
    bld::cuda::check(cudaGetDeviceProperties(&p, dev), op, "cudaGetDeviceProperties");
    d.name = p.name;
    d.cc_major = p.major;
    d.cc_minor = p.minor;
    d.sms = p.multiProcessorCount;
    d.memory_bytes = p.totalGlobalMem;
    int clock_khz = 0, bus_bits = 0;
    (void)cudaDeviceGetAttribute(&clock_khz, cudaDevAttrMemoryClockRate, dev);
    (void)cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, dev);
    d.peak_gbs_attributes = 2.0 * clock_khz * 1e3 * (bus_bits / 8.0) / 1e9;
    // Vendor figures (GB/s = 1e9 B/s) for the cards this project is benchmarked on.
    const std::string n = d.name;
    const auto has = [&](const char* s) { return n.find(s) != std::string::npos; };
    if (has("H200")) d.peak_gbs_table = 4800;
    else if (has("H100") && has("NVL")) d.peak_gbs_table = 3900;
    else if (has("H100") && has("PCIe")) d.peak_gbs_table = 2000;
    else if (has("H100")) d.peak_gbs_table = 3350;
    else if (has("A100") && has("80GB") && has("PCIe")) d.peak_gbs_table = 1935;
    else if (has("A100") && has("80GB")) d.peak_gbs_table = 2039;
    else if (has("A100")) d.peak_gbs_table = 1555;
    int v = 0;
    (void)cudaDriverGetVersion(&v);
    d.driver = std::to_string(v / 1000) + "." + std::to_string((v % 1000) / 10);
    (void)cudaRuntimeGetVersion(&v);
    d.runtime = std::to_string(v / 1000) + "." + std::to_string((v % 1000) / 10);
    return d;
}

// ---- row pass, node sums, canonical path ---------------------------------------------------------

row_results row_pass(const bld::byte_trie& trie, std::span<const float> rows, std::size_t R, std::size_t N) {
    return row_pass_impl(trie, rows, R, N);
}
row_results row_pass(const bld::byte_trie& trie, std::span<const bld::bf16> rows, std::size_t R, std::size_t N) {
    return row_pass_impl(trie, rows, R, N);
}

void row_pass_checked(const bld::byte_trie& trie, std::span<const float> rows, std::size_t R, std::size_t N) {
    stream_guard sg;
    const bld::cuda::device_trie dt(trie, sg.s);
    const auto d_rows = to_device(rows, sg.s);
    bld::cuda::device_row_summaries out(R, sg.s);
    bld::cuda::row_pass(dt, device_view(d_rows, R, N), out.view(), sg.s);
    bld::cuda::throw_if_bad_rows(out.status.data(), device_view(d_rows, R, N), sg.s);
}

void row_pass_host_pointer(const bld::byte_trie& trie, std::span<const float> rows, std::size_t R, std::size_t N) {
    stream_guard sg;
    const bld::cuda::device_trie dt(trie, sg.s);
    bld::cuda::device_row_summaries out(R, sg.s);
    const bld::tensor_view<const float, 2> lying(rows.data(), {static_cast<std::int64_t>(R), static_cast<std::int64_t>(N)},
                                                 bld::device_kind::cuda);
    bld::cuda::row_pass(dt, lying, out.view(), sg.s);
}

node_results node_sums(const bld::byte_trie& trie, std::span<const float> rows, std::size_t R, std::size_t N,
                       const std::vector<bld::node_request>& requests) {
    return node_sums_impl(trie, rows, R, N, requests);
}
node_results node_sums(const bld::byte_trie& trie, std::span<const bld::bf16> rows, std::size_t R, std::size_t N,
                       const std::vector<bld::node_request>& requests) {
    return node_sums_impl(trie, rows, R, N, requests);
}

bld::byte_distributions canonical_path(const bld::byte_trie& trie, std::span<const float> rows, std::size_t R,
                                       std::size_t N, std::span<const std::int64_t> ids,
                                       std::optional<std::string_view> text) {
    return canonical_impl(trie, rows, R, N, ids, text);
}
bld::byte_distributions canonical_path(const bld::byte_trie& trie, std::span<const bld::bf16> rows, std::size_t R,
                                       std::size_t N, std::span<const std::int64_t> ids,
                                       std::optional<std::string_view> text) {
    return canonical_impl(trie, rows, R, N, ids, text);
}

// ---- losses ------------------------------------------------------------------------------------------

constexpr auto A = static_cast<std::int64_t>(bld::alphabet_size);  // the last extent of byte-head tensors

/// Calls f(mask) with the mask's device view, or with bld::no_tensor when it is empty (all active).
template <class F>
decltype(auto) with_mask(const bld::cuda::device_buffer<std::uint8_t>& m, std::int64_t T, std::int64_t K, F&& f) {
    if (m.data() == nullptr) return f(bld::no_tensor);
    return f(bld::tensor_view<const std::uint8_t, 2>(m.data(), {T, K}, bld::device_kind::cuda));
}

template <class L>
loss_results bld_loss(std::span<const L> logits, std::span<const L> targets, std::span<const std::int64_t> true_bytes,
                      std::span<const std::uint8_t> mask, std::int64_t T, std::int64_t K,
                      const bld::bld_loss_options& options) {
    stream_guard sg;
    const bld::cuda::stream_scope on(sg.s);
    const auto z = to_device(logits, sg.s);
    const auto p = to_device(targets, sg.s);
    const auto y = to_device(true_bytes, sg.s);
    const auto m = to_device(mask, sg.s);
    bld::cuda::device_buffer<L> grad(static_cast<std::size_t>(T * K) * bld::alphabet_size, sg.s), per(static_cast<std::size_t>(T * K), sg.s);
    const auto pending = with_mask(m, T, K, [&](const auto& mv) {
        return bld::cuda::bld_loss(bld::tensor_view<const L, 3>(z.data(), {T, K, A}, bld::device_kind::cuda),
                                   bld::tensor_view<const L, 3>(p.data(), {T, K, A}, bld::device_kind::cuda),
                                   bld::tensor_view<const std::int64_t, 2>(y.data(), {T, K}, bld::device_kind::cuda), mv,
                                   options, bld::tensor_view<L, 3>(grad.data(), {T, K, A}, bld::device_kind::cuda),
                                   bld::tensor_view<L, 2>(per.data(), {T, K}, bld::device_kind::cuda));
    });
    loss_results r;
    r.result = pending.get();
    r.grad = widen(to_host(grad.data(), grad.size(), sg.s));
    r.per_slot = widen(to_host(per.data(), per.size(), sg.s));
    return r;
}
template loss_results bld_loss<float>(std::span<const float>, std::span<const float>, std::span<const std::int64_t>,
                                      std::span<const std::uint8_t>, std::int64_t, std::int64_t,
                                      const bld::bld_loss_options&);
template loss_results bld_loss<double>(std::span<const double>, std::span<const double>, std::span<const std::int64_t>,
                                       std::span<const std::uint8_t>, std::int64_t, std::int64_t,
                                       const bld::bld_loss_options&);

loss_results byte_loss(std::span<const double> logits, std::span<const double> targets,
                       std::span<const std::uint8_t> mask, std::int64_t T, std::int64_t K,
                       const bld::byte_loss_options& options) {
    stream_guard sg;
    const bld::cuda::stream_scope on(sg.s);
    const auto z = to_device(logits, sg.s);
    const auto p = to_device(targets, sg.s);
    const auto m = to_device(mask, sg.s);
    bld::cuda::device_buffer<double> grad(static_cast<std::size_t>(T * K) * bld::alphabet_size, sg.s);
    const auto pending = with_mask(m, T, K, [&](const auto& mv) {
        return bld::cuda::byte_loss(bld::tensor_view<const double, 3>(z.data(), {T, K, A}, bld::device_kind::cuda),
                                    bld::tensor_view<const double, 3>(p.data(), {T, K, A}, bld::device_kind::cuda), mv,
                                    options, bld::tensor_view<double, 3>(grad.data(), {T, K, A}, bld::device_kind::cuda));
    });
    loss_results r;
    r.result = pending.get();
    r.grad = to_host(grad.data(), grad.size(), sg.s);
    return r;
}

loss_results byte_cross_entropy(std::span<const double> logits, std::span<const std::int32_t> true_bytes,
                                std::span<const std::uint8_t> mask, std::int64_t T, std::int64_t K,
                                const bld::byte_cross_entropy_options& options) {
    stream_guard sg;
    const bld::cuda::stream_scope on(sg.s);
    const auto z = to_device(logits, sg.s);
    const auto y = to_device(true_bytes, sg.s);
    const auto m = to_device(mask, sg.s);
    bld::cuda::device_buffer<double> per(static_cast<std::size_t>(T * K), sg.s);
    const auto pending = with_mask(m, T, K, [&](const auto& mv) {
        return bld::cuda::byte_cross_entropy(bld::tensor_view<const double, 3>(z.data(), {T, K, A}, bld::device_kind::cuda),
                                             bld::tensor_view<const std::int32_t, 2>(y.data(), {T, K}, bld::device_kind::cuda),
                                             mv, options, bld::no_tensor,
                                             bld::tensor_view<double, 2>(per.data(), {T, K}, bld::device_kind::cuda));
    });
    loss_results r;
    r.result = pending.get();
    r.per_slot = to_host(per.data(), per.size(), sg.s);
    return r;
}

// ---- device memory for the host-compiled tests --------------------------------------------------------

device_block::device_block(const void* host, std::size_t bytes) : bytes_(bytes) {
    if (bytes == 0) return;
    bld::cuda::check(cudaMalloc(&data_, bytes), op, "cudaMalloc");
    if (host != nullptr) bld::cuda::check(cudaMemcpy(data_, host, bytes, cudaMemcpyHostToDevice), op, "cudaMemcpy");
    else bld::cuda::check(cudaMemset(data_, 0, bytes), op, "cudaMemset");
}
device_block::~device_block() {
    if (data_ != nullptr) (void)cudaFree(data_);
}
void device_block::read(void* host) const {
    if (bytes_ == 0) return;
    bld::cuda::check(cudaDeviceSynchronize(), op, "cudaDeviceSynchronize");
    bld::cuda::check(cudaMemcpy(host, data_, bytes_, cudaMemcpyDeviceToHost), op, "cudaMemcpy");
}

device_stream::device_stream() {
    cudaStream_t s = nullptr;
    bld::cuda::check(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), op, "cudaStreamCreate");
    s_ = s;
}
device_stream::~device_stream() {
    (void)cudaStreamSynchronize(static_cast<cudaStream_t>(s_));
    (void)cudaStreamDestroy(static_cast<cudaStream_t>(s_));
}

// ---- benchmark -----------------------------------------------------------------------------------------

namespace {

/// Pseudo-random logits on the device (a hash of the index: no host transfer of 2 GB).
template <class T>
__global__ void fill_logits(T* out, std::size_t n, std::uint64_t seed) {
    for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
         i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
        std::uint64_t h = (i + 1) * 0x9E3779B97F4A7C15ull ^ seed;
        h ^= h >> 31;
        h *= 0xBF58476D1CE4E5B9ull;
        h ^= h >> 29;
        // Sum of four uniforms ≈ normal; scale 3 (a realistic spread of LM logits).
        float s = 0;
        for (int k = 0; k < 4; ++k) s += static_cast<float>((h >> (16 * k)) & 0xFFFF) / 65535.0f;
        const float z = (s - 2.0f) * 5.2f;
        if constexpr (std::is_same_v<T, float>) out[i] = z;
        else {
            T v;
            v.bits = static_cast<std::uint16_t>(__float_as_uint(z) >> 16);  // truncation: fine for test data
            out[i] = v;
        }
    }
}

/// The raw-read baseline: every element read once (vectorised), one sum per block.
__global__ void read_baseline(const float4* in, std::size_t n4, float* sink) {
    float s = 0;
    for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n4;
         i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
        const float4 v = __ldcs(in + i);
        s += v.x + v.y + v.z + v.w;
    }
    if (s == 12345.678f) sink[blockIdx.x] = s;  // keeps the loads; practically never stores
}

struct timing {
    double median_ms = 0, best_ms = 0;
};

template <class F>
timing time_it(F&& f, int warmup, int iterations, cudaStream_t s) {
    for (int i = 0; i < warmup; ++i) f();
    bld::cuda::check(cudaStreamSynchronize(s), op, "warmup");
    cudaEvent_t a, b;
    bld::cuda::check(cudaEventCreate(&a), op, "cudaEventCreate");
    bld::cuda::check(cudaEventCreate(&b), op, "cudaEventCreate");
    std::vector<double> ms;
    for (int i = 0; i < iterations; ++i) {
        bld::cuda::check(cudaEventRecord(a, s), op, "cudaEventRecord");
        f();
        bld::cuda::check(cudaEventRecord(b, s), op, "cudaEventRecord");
        bld::cuda::check(cudaEventSynchronize(b), op, "cudaEventSynchronize");
        float t = 0;
        bld::cuda::check(cudaEventElapsedTime(&t, a, b), op, "cudaEventElapsedTime");
        ms.push_back(t);
    }
    (void)cudaEventDestroy(a);
    (void)cudaEventDestroy(b);
    std::sort(ms.begin(), ms.end());
    return {ms[ms.size() / 2], ms.front()};
}

/// Max relative error of the GPU root masses (rows `sample`) against summarize_row.
template <class T>
double check_sample(const bld::byte_trie& trie, const bld::cuda::device_buffer<T>& rows, std::size_t N,
                    const bld::cuda::device_row_summaries& out, const std::vector<std::size_t>& sample, cudaStream_t s,
                    std::string& why) {
    const auto bins = bld::root_bins(trie);
    const auto root = to_host(out.root.data(), out.rows * 257, s);
    const auto mx = to_host(out.max_logit.data(), out.rows, s);
    const auto st = to_host(out.status.data(), out.rows, s);
    double worst = 0;
    for (std::size_t r : sample) {
        std::vector<T> row(N);
        bld::cuda::check(cudaMemcpy(row.data(), rows.data() + r * N, N * sizeof(T), cudaMemcpyDeviceToHost), op, "cudaMemcpy");
        const auto want = bld::reference::summarize_row(trie, bins, std::span<const T>(row), r);
        if (st[r] != bld::cuda::row_ok) why += " row " + std::to_string(r) + " has status " + std::to_string(st[r]) + ";";
        if (mx[r] != want.max_logit) why += " row " + std::to_string(r) + " max differs;";
        for (std::size_t a = 0; a < 257; ++a)
            if (want.root[a] > 1e-30)
                worst = std::max(worst, std::abs(root[r * 257 + a] - want.root[a]) / want.root[a]);
    }
    return worst;
}

std::string fmt(double v, int prec = 1) {
    char b[64];
    std::snprintf(b, sizeof b, "%.*f", prec, v);
    return b;
}

}  // namespace

bench_report benchmark(const bld::byte_trie& trie, const bench_config& cfg) {
    bench_report rep;
    const device_info dev = query_device();
    stream_guard sg;
    const bld::cuda::device_trie dt(trie, sg.s);
    const std::size_t R = cfg.rows, V = dt.vocab_size(), N = V;
    const double peak = dev.peak_gbs_table > 0 ? dev.peak_gbs_table : dev.peak_gbs_attributes;
    std::ostringstream md;
    md << "| case | rows × V | bytes read per call | median time | GB/s | % of peak (" << fmt(peak, 0)
       << " GB/s) | % of raw read |\n|---|---|---|---|---|---|---|\n";

    // Raw read baseline on the float32 batch.
    bld::cuda::device_buffer<float> f32(R * N, sg.s, op);
    fill_logits<float><<<4096, 256, 0, sg.s>>>(f32.data(), R * N, 42);
    bld::cuda::check_launch(op, "fill_logits");
    bld::cuda::device_buffer<float> sink(4096, sg.s, op);
    const double bytes32 = static_cast<double>(R) * N * sizeof(float);
    const auto base = time_it([&] { read_baseline<<<dev.sms * 8, 512, 0, sg.s>>>(reinterpret_cast<const float4*>(f32.data()), R * N / 4, sink.data()); },
                              cfg.warmup, cfg.iterations, sg.s);
    const double base_gbs = bytes32 / (base.median_ms * 1e-3) / 1e9;
    md << "| raw read (float4 stream, baseline) | " << R << " × " << V << " | " << fmt(bytes32 / 1e9, 2) << " GB | "
       << fmt(base.median_ms, 3) << " ms | " << fmt(base_gbs) << " | " << fmt(100 * base_gbs / peak) << "% | 100% |\n";

    // Row pass, float32: check a sample of rows against the CPU first (habit 12).
    bld::cuda::device_row_summaries out(R, sg.s);
    const auto view32 = device_view(f32, R, N);
    bld::cuda::row_pass(dt, view32, out.view(), sg.s);
    std::string why;
    const std::vector<std::size_t> sample{0, 1, R / 2, R - 1};
    const double err32 = check_sample(trie, f32, N, out, sample, sg.s, why);
    const auto t32 = time_it([&] { bld::cuda::row_pass(dt, view32, out.view(), sg.s); }, cfg.warmup, cfg.iterations, sg.s);
    const double gbs32 = bytes32 / (t32.median_ms * 1e-3) / 1e9;
    rep.f32_fraction_of_peak = gbs32 / peak;
    md << "| row pass float32 | " << R << " × " << V << " | " << fmt(bytes32 / 1e9, 2) << " GB | " << fmt(t32.median_ms, 3)
       << " ms | " << fmt(gbs32) << " | **" << fmt(100 * gbs32 / peak) << "%** | " << fmt(100 * gbs32 / base_gbs) << "% |\n";
    f32.reset();

    // Row pass, bf16.
    bld::cuda::device_buffer<bld::bf16> h16(R * N, sg.s, op);
    fill_logits<bld::bf16><<<4096, 256, 0, sg.s>>>(h16.data(), R * N, 43);
    bld::cuda::check_launch(op, "fill_logits");
    const auto view16 = device_view(h16, R, N);
    bld::cuda::row_pass(dt, view16, out.view(), sg.s);
    const double err16 = check_sample(trie, h16, N, out, sample, sg.s, why);
    const auto t16 = time_it([&] { bld::cuda::row_pass(dt, view16, out.view(), sg.s); }, cfg.warmup, cfg.iterations, sg.s);
    const double bytes16 = static_cast<double>(R) * N * 2;
    const double gbs16 = bytes16 / (t16.median_ms * 1e-3) / 1e9;
    md << "| row pass bf16 | " << R << " × " << V << " | " << fmt(bytes16 / 1e9, 2) << " GB | " << fmt(t16.median_ms, 3)
       << " ms | " << fmt(gbs16) << " | " << fmt(100 * gbs16 / peak) << "% | " << fmt(100 * gbs16 / base_gbs) << "% |\n";

    // Small batch (row split over several blocks + combine kernel).
    const std::size_t Rs = 16;
    const auto view_small = bld::tensor_view<const bld::bf16, 2>(h16.data(), {static_cast<std::int64_t>(Rs), static_cast<std::int64_t>(N)},
                                                                 bld::device_kind::cuda);
    const auto ts = time_it([&] { bld::cuda::row_pass(dt, view_small, out.view(), sg.s); }, cfg.warmup, cfg.iterations, sg.s);
    const double bytes_s = static_cast<double>(Rs) * N * 2;
    md << "| row pass bf16, small batch (split rows) | " << Rs << " × " << V << " | " << fmt(bytes_s / 1e6, 1) << " MB | "
       << fmt(ts.median_ms, 3) << " ms | " << fmt(bytes_s / (ts.median_ms * 1e-3) / 1e9) << " | "
       << fmt(100 * bytes_s / (ts.median_ms * 1e-3) / 1e9 / peak) << "% | — |\n";

    rep.checked = why.empty() && err32 <= 2e-6 && err16 <= 2e-6;
    std::ostringstream head;
    head << "Results checked against the CPU reference before timing (rows 0, 1, R/2, R−1): max relative error of the "
            "root masses "
         << err32 << " (float32), " << err16 << " (bf16); tolerance 2e-6 — " << (rep.checked ? "**passed**" : "**FAILED**" + why)
         << ".\n\n";
    head << "Timing: CUDA events around each call on one stream, " << cfg.warmup << " warm-up calls, median of "
         << cfg.iterations << ". Logits are pseudo-random (spread ≈ 3), generated on the device. Peak bandwidth: "
         << (dev.peak_gbs_table > 0 ? "the vendor figure for this card" : "memory clock × bus width × 2 (device attributes)")
         << " (attributes give " << fmt(dev.peak_gbs_attributes, 0) << " GB/s).\n\n";
    rep.markdown = head.str() + md.str();
    return rep;
}

}  // namespace bld_gpu
