// bld/cuda.cuh — every CUDA facility of bld (nvcc only; link bld::cuda). Not part of bld.hpp:
// the umbrella stays free of optional dependencies (style.md habit 1).
#pragma once

#include "bld/cuda/block_ops.cuh"
#include "bld/cuda/canonical.cuh"
#include "bld/cuda/error.cuh"
#include "bld/cuda/loss.cuh"
#include "bld/cuda/row_pass.cuh"
#include "bld/shared_math.hpp"
