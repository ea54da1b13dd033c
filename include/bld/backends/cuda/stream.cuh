// bld/backends/cuda/stream.cuh — which stream and device bld's CUDA calls run on.
//
// The byte losses (bld::bld_loss & co. on CUDA tensors, and bld::cuda::bld_loss & co.) take no
// stream argument: they run on the calling thread's current device stream, the legacy default
// stream unless a stream_scope names another (bld/backends/device_loss.hpp keeps it, so that
// host-compiled code — bld/torch/loss.hpp — can set it too). The kernels of the row pass and the
// projection take their stream explicitly.
#pragma once

#include "bld/backends/cuda/error.cuh"
#include "bld/backends/device_loss.hpp"

#include <cuda_runtime.h>

namespace bld::cuda {

/// While it lives, the byte losses this thread starts run on `stream` (nullptr: the legacy
/// default stream); scopes nest, the previous stream comes back at the end.
///
///     bld::cuda::stream_scope on(my_stream);
///     auto r = bld::bld_loss(logits, targets, bytes, mask);   // kernels on my_stream
class stream_scope : public device_stream_scope {
public:
    explicit stream_scope(cudaStream_t stream) noexcept : device_stream_scope(static_cast<void*>(stream)) {}
};

/// The calling thread's current stream for the byte losses (nullptr: the legacy default stream).
[[nodiscard]] inline cudaStream_t current_stream() noexcept {
    return static_cast<cudaStream_t>(bld::current_device_stream());
}

/// Makes `device` the current CUDA device while it lives, and restores the previous one.
class device_scope {
public:
    device_scope(int device, std::string_view op) {
        check(cudaGetDevice(&previous_), op, "cudaGetDevice");
        if (previous_ != device) check(cudaSetDevice(device), op, "cudaSetDevice(" + std::to_string(device) + ")");
    }
    ~device_scope() {
        int now = previous_;
        if (cudaGetDevice(&now) == cudaSuccess && now != previous_) (void)cudaSetDevice(previous_);
    }
    device_scope(const device_scope&) = delete;
    device_scope& operator=(const device_scope&) = delete;

private:
    int previous_ = 0;
};

}  // namespace bld::cuda
