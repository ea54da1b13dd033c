// python/bld_torch_cuda.hpp — the bridge between bld_torch.cpp (g++, torch headers) and
// bld_torch_cuda.cu (nvcc, bld's CUDA headers, no torch headers): one plain call that runs a
// bld byte loss on CUDA tensors' memory on a given stream.
//
// Only built when python/build_bld_torch.py finds a CUDA build of torch (it then defines
// BLD_TORCH_WITH_CUDA for both files); scripts/cuda-compile-check.sh compiles both sides on
// machines without a GPU.
#pragma once

#include <bld/loss/byte_loss.hpp>

#include <cstdint>

namespace bld_torch_cuda {

enum class loss_mode { divergence, ce, bld };

/// One loss call. Pointers are device memory of `device`, dense row-major; null where absent
/// (targets for "ce", true_bytes for "divergence", mask: all active, grad / per_slot: not
/// written). grad and per_slot have the logits' type.
struct loss_call {
    loss_mode mode = loss_mode::bld;
    bld::divergence kind = bld::divergence::forward_kl;
    double temperature = 1.0;
    bld::loss_reduction reduction = bld::loss_reduction::eq5;
    double lambda_byte = 1.0;
    double lambda_kl = 1.0;
    double target_floor = 0.0;
    std::int64_t T = 0, K = 0;
    bool logits_f64 = false;
    const void* logits = nullptr;
    bool targets_f64 = false;
    const void* targets = nullptr;
    bool true_bytes_i64 = false;
    const void* true_bytes = nullptr;
    const std::uint8_t* mask = nullptr;
    void* grad = nullptr;
    void* per_slot = nullptr;
    int device = 0;
    void* stream = nullptr; ///< cudaStream_t
};

/// Runs the loss on the stream and waits for its value (bld::cuda::pending_loss::get()).
/// @throws what bld::cuda's losses throw (shape_error, value_error with the CPU's messages,
///         cuda_error).
bld::byte_loss_result run_loss(const loss_call& c);

}  // namespace bld_torch_cuda
