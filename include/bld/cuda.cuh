// bld/cuda.cuh — every CUDA facility of bld (nvcc only; link bld::cuda). Not part of bld.hpp:
// the umbrella stays free of optional dependencies.
//
// Including it in a translation unit compiled by nvcc also registers the CUDA backend with the
// host-compiled library (bld/backends/cuda/registration.cuh): from then on bld::bld_loss,
// bld::byte_loss and bld::byte_cross_entropy run bld's CUDA kernels on tensors in CUDA memory,
// the distiller projects teacher rows that live on the GPU, and its token-head loss reads
// student logits there.
#pragma once

#include "bld/backends/cuda/block_ops.cuh"
#include "bld/backends/cuda/canonical.cuh"
#include "bld/backends/cuda/error.cuh"
#include "bld/backends/cuda/loss.cuh"
#include "bld/backends/cuda/projector.cuh"
#include "bld/backends/cuda/registration.cuh"
#include "bld/backends/cuda/row_pass.cuh"
#include "bld/backends/cuda/stream.cuh"
#include "bld/backends/cuda/token_head.cuh"
#include "bld/math/shared_math.hpp"
