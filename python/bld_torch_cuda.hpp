// python/bld_torch_cuda.hpp — bld_torch's CUDA half: python/bld_torch_cuda.cu, compiled by nvcc
// into the module when python/build_bld_torch.py finds a CUDA build of torch (it then defines
// BLD_TORCH_WITH_CUDA for both files).
//
// There is no separate CUDA loss path: bld_torch_cuda.cu includes bld's CUDA backend
// registration, so the module's one loss call (bld::autograd::loss_forward → bld::bld_loss & co.)
// runs bld's CUDA kernels on CUDA tensors, on torch's current stream (bld/torch/loss.hpp).
// scripts/cuda-compile-check.sh compiles both sides on machines without a GPU.
#pragma once

namespace bld_torch_cuda {

/// True once the CUDA backend is registered (always, when this object is linked).
bool backend_registered() noexcept;

}  // namespace bld_torch_cuda
