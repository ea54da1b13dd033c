// The interface between the GPU tests' two translation units: test_cuda.cu (nvcc) runs the
// kernels behind these plain C++ functions (host vectors in, host vectors out, a fresh
// non-default stream per call); test_cuda_main.cpp (the C++ compiler) loads real data, computes
// the CPU reference and compares. Nothing here mentions CUDA types.
#pragma once

#include <bld/projection/canonical_plan.hpp>
#include <bld/loss/byte_loss.hpp>
#include <bld/projection/canonical_path.hpp>
#include <bld/projection/covering.hpp>
#include <bld/core/tensor.hpp>
#include <bld/vocab/trie.hpp>

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace bld_gpu {

/// The GPU the tests run on (count = 0: none, `error` says why).
struct device_info {
    int count = 0;
    std::string error;
    std::string name;
    int cc_major = 0, cc_minor = 0, sms = 0;
    std::size_t memory_bytes = 0;
    double peak_gbs_attributes = 0;  ///< memory clock × bus width × 2 (DDR), from device attributes
    double peak_gbs_table = 0;       ///< the vendor's number for known cards (0: unknown)
    std::string driver, runtime;
};
[[nodiscard]] device_info query_device();

struct row_results {
    std::vector<double> max, log_normalizer, root;  // [R], [R], [R, 257]
    std::vector<std::int32_t> status;                // [R]
};
[[nodiscard]] row_results row_pass(const bld::byte_trie& trie, std::span<const float> rows, std::size_t R, std::size_t N);
[[nodiscard]] row_results row_pass(const bld::byte_trie& trie, std::span<const bld::bf16> rows, std::size_t R,
                                   std::size_t N);
/// The row pass, then throw_if_bad_rows (the exception the CPU would throw, if any).
void row_pass_checked(const bld::byte_trie& trie, std::span<const float> rows, std::size_t R, std::size_t N);

struct node_results {
    std::vector<double> shift, end, child;  // [Q], [Q], [Q, 256]
};
[[nodiscard]] node_results node_sums(const bld::byte_trie& trie, std::span<const float> rows, std::size_t R,
                                     std::size_t N, const std::vector<bld::node_request>& requests);
[[nodiscard]] node_results node_sums(const bld::byte_trie& trie, std::span<const bld::bf16> rows, std::size_t R,
                                     std::size_t N, const std::vector<bld::node_request>& requests);

/// bld::cuda::canonical_path(...).to_host().
[[nodiscard]] bld::byte_distributions canonical_path(const bld::byte_trie& trie, std::span<const float> rows,
                                                     std::size_t R, std::size_t N, std::span<const std::int64_t> ids,
                                                     std::optional<std::string_view> text = std::nullopt);
[[nodiscard]] bld::byte_distributions canonical_path(const bld::byte_trie& trie, std::span<const bld::bf16> rows,
                                                     std::size_t R, std::size_t N, std::span<const std::int64_t> ids,
                                                     std::optional<std::string_view> text = std::nullopt);

struct loss_results {
    bld::byte_loss_result result;
    std::vector<double> grad, per_slot;  // [T, K, 260], [T, K] (widened from the logits' type)
};
/// bld::cuda::bld_loss(...).get(); an empty mask means "all active".
template <class L>
[[nodiscard]] loss_results bld_loss(std::span<const L> logits, std::span<const L> targets,
                                    std::span<const std::int64_t> true_bytes, std::span<const std::uint8_t> mask,
                                    std::int64_t T, std::int64_t K, const bld::bld_loss_options& options);
/// bld::cuda::byte_loss(...).get().
[[nodiscard]] loss_results byte_loss(std::span<const double> logits, std::span<const double> targets,
                                     std::span<const std::uint8_t> mask, std::int64_t T, std::int64_t K,
                                     const bld::byte_loss_options& options);
/// bld::cuda::byte_cross_entropy(...).get() with int32 true bytes.
[[nodiscard]] loss_results byte_cross_entropy(std::span<const double> logits, std::span<const std::int32_t> true_bytes,
                                              std::span<const std::uint8_t> mask, std::int64_t T, std::int64_t K,
                                              const bld::byte_cross_entropy_options& options);

/// Device memory for the host-compiled tests (cudaMalloc; the legacy default stream): a copy of
/// `bytes` host bytes, or zeros when `host` is null. read() synchronises the device and copies
/// back. Host code builds bld::tensor_view<…, device_kind::cuda> over data().
class device_block {
public:
    device_block(const void* host, std::size_t bytes);
    template <class T>
    explicit device_block(const std::vector<T>& v) : device_block(v.data(), v.size() * sizeof(T)) {}
    ~device_block();
    device_block(const device_block&) = delete;
    device_block& operator=(const device_block&) = delete;
    [[nodiscard]] void* data() const noexcept { return data_; }
    template <class T>
    [[nodiscard]] T* as() const noexcept { return static_cast<T*>(data_); }
    void read(void* host) const;
    template <class T>
    [[nodiscard]] std::vector<T> read_as() const {
        std::vector<T> v(bytes_ / sizeof(T));
        read(v.data());
        return v;
    }

private:
    void* data_ = nullptr;
    std::size_t bytes_ = 0;
};

/// A non-blocking CUDA stream as a void* (a cudaStream_t), for bld::device_stream_scope.
class device_stream {
public:
    device_stream();
    ~device_stream();
    device_stream(const device_stream&) = delete;
    device_stream& operator=(const device_stream&) = delete;
    [[nodiscard]] void* get() const noexcept { return s_; }

private:
    void* s_ = nullptr;
};

/// A view whose memory is on the host although it says cuda: the kernels must refuse it.
void row_pass_host_pointer(const bld::byte_trie& trie, std::span<const float> rows, std::size_t R, std::size_t N);

/// The row-pass benchmark: R rows × the trie's V, float32 (and bf16), results checked against
/// `check` (the CPU reference of `check_rows` sampled rows) before timing. Returns markdown.
struct bench_config {
    std::size_t rows = 4096;
    int warmup = 3, iterations = 20;
};
struct bench_report {
    std::string markdown;
    bool checked = false;          ///< results matched the CPU before timing
    double f32_fraction_of_peak = 0;
};
[[nodiscard]] bench_report benchmark(const bld::byte_trie& trie, const bench_config& cfg);

}  // namespace bld_gpu
