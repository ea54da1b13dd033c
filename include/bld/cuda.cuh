// bld/cuda.cuh — every CUDA facility of bld (nvcc only; link bld::cuda). Not part of bld.hpp:
// the umbrella stays free of optional dependencies.
#pragma once

#include "bld/backends/cuda/block_ops.cuh"
#include "bld/backends/cuda/canonical.cuh"
#include "bld/backends/cuda/error.cuh"
#include "bld/backends/cuda/loss.cuh"
#include "bld/backends/cuda/row_pass.cuh"
#include "bld/math/shared_math.hpp"
