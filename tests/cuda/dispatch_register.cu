// The CUDA half of the one-entry-point link check (see dispatch_host.cpp): this translation unit
// only includes <bld/cuda.cuh>, which registers bld's CUDA backend with the host-compiled library.
#include <bld/cuda.cuh>

bool bld_dispatch_register_linked() { return bld::cuda::detail::cuda_backend_registered; }
