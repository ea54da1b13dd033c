// bld/backends/cuda/registration.cuh — registers bld's CUDA backend with the host-compiled
// library: the byte-loss runner (bld/backends/device_loss.hpp), so bld::bld_loss & co. accept
// CUDA tensors, the projector factory (bld/projection/device_projection.hpp), so the
// distiller projects device-resident teacher rows, and the token-head factory
// (bld/projection/device_token_head.hpp), so distiller::token_head_loss reads student logits on
// the GPU.
//
// Including this header (or <bld/cuda.cuh>) in one translation unit compiled by nvcc and linking
// that object into the program is enough: an inline variable's dynamic initializer stores the
// pointers before main (or when the shared library holding it is loaded). The object must be
// linked: from a static library, reference a symbol of it (or link it whole), or the linker
// leaves it out and CUDA tensors are refused with a message that says so.
#pragma once

#include "bld/backends/cuda/loss.cuh"
#include "bld/backends/cuda/projector.cuh"
#include "bld/backends/cuda/token_head.cuh"
#include "bld/backends/device_loss.hpp"
#include "bld/projection/device_projection.hpp"
#include "bld/projection/device_token_head.hpp"

#include <atomic>

namespace bld::cuda::detail {

/// Stores the CUDA loss runner, projector and token-head factories in the registries; returns true.
inline bool register_cuda_backend() noexcept {
    device_loss_registry::cuda.store(&run_device_loss, std::memory_order_release);
    device_projection_registry::cuda.store(&make_projector, std::memory_order_release);
    device_token_head_registry::cuda.store(&make_token_head, std::memory_order_release);
    return true;
}

/// Initialised before main in every program that links a translation unit including this header.
inline const bool cuda_backend_registered = register_cuda_backend();

}  // namespace bld::cuda::detail
