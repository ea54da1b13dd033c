// python/bld_torch_cuda.cu — registers bld's CUDA backend in the bld_torch module (see
// bld_torch_cuda.hpp): the byte losses on CUDA tensors and the device projector. Compiled by
// nvcc; includes no torch header.
#include "bld_torch_cuda.hpp"

#include <bld/backends/cuda/registration.cuh>

namespace bld_torch_cuda {

bool backend_registered() noexcept { return bld::cuda::detail::cuda_backend_registered; }

}  // namespace bld_torch_cuda
