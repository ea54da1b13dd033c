// bld/backends/slot_kernel.hpp — the hook through which a CPU backend supplies the byte loss's
// per-slot kernel.
//
// bld/loss/byte_loss.hpp evaluates every slot with the reference formula (bld::math::slot_loss)
// unless a backend has registered a faster kernel here; bld/backends/simd/loss_kernel.hpp
// registers the SIMD one. Declared below both so that the loss needs no backend header and the
// backend no loss header.
#pragma once

#include "bld/math/slot_loss.hpp"

#include <atomic>

namespace bld::detail {

/// A vectorised evaluation of math::slot_loss for float logits and float targets (or none) and
/// the forward KL: returns true and the slot's value in *value, or false, writing nothing, for a
/// bad input (the reference then names it).
using float_slot_kernel = bool (*)(const float* z, const float* p, int y, const math::slot_params& prm,
                                   double grad_scale, float* grad, double* value);
/// Returns the kernel of the instruction set to use now, or null for the reference.
using float_slot_kernel_resolver = float_slot_kernel (*)() noexcept;

/// Where a CPU backend registers its slot kernel (one inline variable: every translation unit
/// of a program reads the same one). Null: the reference for every slot.
struct loss_kernel_registry {
    static inline std::atomic<float_slot_kernel_resolver> forward_kl_float{nullptr};
};

} // namespace bld::detail
