// bld/math/shared_math.hpp — every reference formula of bld::math (the host/device functions).
//
// bld::math is the specification: each formula exists once, as a BLD_HOST_DEVICE function, and
// the CPU reference path, the CUDA kernels (bld/backends/cuda/) and the tests run that very
// function; faster paths that evaluate a formula differently (the SIMD kernels) are tested
// against it. It depends on bld/core only.
//
//   elementary.hpp          exp64 / log64 / …, bf16 widening, exp_diff, (max, sum) pairs
//   lanes.hpp               the lanes policy of the per-slot / per-position bodies (host_lanes)
//   root_bins.hpp           lazily rescaled root bins of the one-pass row kernel
//   divergence.hpp          bld::divergence (the byte loss's divergences)
//   slot_loss.hpp           one slot of the byte loss, value and gradient
//   canonical_position.hpp  one byte position of the canonical path
#pragma once

#include "bld/math/canonical_position.hpp"
#include "bld/math/divergence.hpp"
#include "bld/math/elementary.hpp"
#include "bld/math/lanes.hpp"
#include "bld/math/root_bins.hpp"
#include "bld/math/slot_loss.hpp"
