// bld/backends/cuda/error.cuh — CUDA errors as bld::error, device buffers, device-pointer checks.
//
// Compiled only by nvcc. Every CUDA runtime call of bld goes through cuda::check, which throws
// bld::cuda::cuda_error (a bld::error) whose reason carries the CUDA error name and string. Device memory is plain cudaMallocAsync / cudaFreeAsync on the caller's
// stream (stream-ordered, no managed memory).
#pragma once

#include "bld/core/error.hpp"
#include "bld/core/tensor.hpp"

#include <cuda_runtime.h>

#include <cstddef>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

namespace bld::cuda {

/// A CUDA runtime call failed: operation() names the bld operation, location() the CUDA call,
/// reason() the CUDA error name and message.
class cuda_error : public error {
public:
    cuda_error(std::string what_part, std::string where_part, cudaError_t code)
        : error(std::move(what_part), std::move(where_part),
                std::string(cudaGetErrorName(code)) + ": " + cudaGetErrorString(code)),
          code_(code) {}
    /// The CUDA error code.
    [[nodiscard]] cudaError_t code() const noexcept { return code_; }

private:
    cudaError_t code_;
};
static_assert(std::is_nothrow_copy_constructible_v<cuda_error> && std::is_nothrow_copy_assignable_v<cuda_error>,
              "exception types copy without throwing (bld/core/error.hpp)");

/// Throws cuda_error for anything but cudaSuccess. `op` is the bld operation, `call` the
/// CUDA call (e.g. "cudaMallocAsync of 1024 bytes").
inline void check(cudaError_t code, std::string_view op, std::string_view call) {
    if (code != cudaSuccess) {
        (void)cudaGetLastError();  // clear a sticky launch error so the next call starts clean
        throw cuda_error(std::string(op), std::string(call), code);
    }
}

/// Checks the launch that just happened (configuration errors surface here; faults inside the
/// kernel surface at the next synchronising call).
inline void check_launch(std::string_view op, std::string_view kernel) {
    check(cudaPeekAtLastError(), op, "launch of " + std::string(kernel));
}

/// An owning, stream-ordered device array of trivially copyable T (cudaMallocAsync on `stream`,
/// cudaFreeAsync on the same stream). Move-only.
/// @pre the stream outlives the buffer (or the buffer is reset() before the stream dies).
template <class T>
class device_buffer {
public:
    device_buffer() noexcept = default;
    device_buffer(std::size_t count, cudaStream_t stream, std::string_view op = "bld::cuda::device_buffer")
        : count_(count), stream_(stream) {
        if (count_ == 0) return;
        void* p = nullptr;
        check(cudaMallocAsync(&p, count_ * sizeof(T), stream_), op,
              "cudaMallocAsync of " + std::to_string(count_ * sizeof(T)) + " bytes");
        data_ = static_cast<T*>(p);
    }
    device_buffer(const device_buffer&) = delete;
    device_buffer& operator=(const device_buffer&) = delete;
    device_buffer(device_buffer&& o) noexcept
        : data_(std::exchange(o.data_, nullptr)), count_(std::exchange(o.count_, 0)), stream_(o.stream_) {}
    device_buffer& operator=(device_buffer&& o) noexcept {
        if (this != &o) {
            reset();
            data_ = std::exchange(o.data_, nullptr);
            count_ = std::exchange(o.count_, 0);
            stream_ = o.stream_;
        }
        return *this;
    }
    ~device_buffer() { reset(); }

    /// Frees the memory (stream-ordered: kernels already queued on the stream still see it).
    void reset() noexcept {
        if (data_ != nullptr) (void)cudaFreeAsync(data_, stream_);
        data_ = nullptr;
        count_ = 0;
    }
    [[nodiscard]] T* data() const noexcept { return data_; }
    [[nodiscard]] std::size_t size() const noexcept { return count_; }
    [[nodiscard]] cudaStream_t stream() const noexcept { return stream_; }

    /// Copies `n` elements from host memory into the buffer, stream-ordered.
    void upload(const T* host, std::size_t n, std::string_view op) {
        if (n == 0) return;
        check(cudaMemcpyAsync(data_, host, n * sizeof(T), cudaMemcpyHostToDevice, stream_), op,
              "cudaMemcpyAsync host to device");
    }

private:
    T* data_ = nullptr;
    std::size_t count_ = 0;
    cudaStream_t stream_ = nullptr;
};

namespace detail {

/// Throws shape_error unless `p` (non-null) is memory the device can address: device or
/// managed memory (of CUDA device `device`, when it is ≥ 0). Host pointers (pageable or pinned)
/// are refused: they would be legal for a few kernels on some systems, but slow and not what a
/// caller means.
inline void require_device_pointer(const void* p, std::string_view op, std::string_view argument, int device = -1) {
    if (p == nullptr) return;
    cudaPointerAttributes attr{};
    const cudaError_t rc = cudaPointerGetAttributes(&attr, p);
    if (rc != cudaSuccess) {
        (void)cudaGetLastError();
        throw cuda_error(std::string(op), "argument `" + std::string(argument) + "`: cudaPointerGetAttributes", rc);
    }
    if (attr.type != cudaMemoryTypeDevice && attr.type != cudaMemoryTypeManaged) {
        throw shape_error(std::string(op), "argument `" + std::string(argument) + "`",
                          "expected device memory (a view with device cuda), got a host pointer");
    }
    if (device >= 0 && attr.type == cudaMemoryTypeDevice && attr.device != device) {
        throw shape_error(std::string(op), "argument `" + std::string(argument) + "`",
                          "the view says cuda:" + std::to_string(device) + ", but its memory is on cuda:" +
                              std::to_string(attr.device));
    }
}

/// Checks a view the kernels will read or write: device kind cuda and device memory.
template <class T, std::size_t Rank>
void require_cuda_view(const tensor_view<T, Rank>& v, std::string_view op, std::string_view argument) {
    if (v.device() != device_kind::cuda) {
        throw shape_error(std::string(op), "argument `" + std::string(argument) + "`",
                          "expected a view with device cuda, got one on " + std::string(bld::to_string(v.device())));
    }
    require_device_pointer(v.data(), op, argument);
}

/// Blocks for a grid-stride launch: enough to fill any current GPU, never more than `work`.
inline unsigned grid_for(std::size_t work, unsigned cap = 65535u) {
    if (work == 0) return 1;
    return static_cast<unsigned>(work < cap ? work : cap);
}

}  // namespace detail
}  // namespace bld::cuda
