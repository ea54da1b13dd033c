// bld/backends/simd/loss_kernel.hpp — registers the SIMD byte-loss slot kernel with the loss.
//
// bld/loss/byte_loss.hpp evaluates every slot with the reference formula (bld::math::slot_loss)
// unless a CPU backend has registered a faster kernel in detail::loss_kernel_registry
// (bld/backends/slot_kernel.hpp). Including
// this header in any translation unit registers loss_slot_fkl (kernels.inc): from then on
// float logits with float targets (or none) and the forward KL take it, at the instruction set
// bld::simd::default_level() picks for each call (the reference when that is scalar). The
// registration is one inline variable, initialised once per program, so every translation unit
// sees the same kernel whichever headers it included.
#pragma once

#include "bld/backends/simd/kernels.hpp"
#include "bld/backends/slot_kernel.hpp"

namespace bld::simd::detail {

/// The slot kernel of the level this call runs at, in the loss's calling convention.
inline bool loss_slot_at_default_level(const float* z, const float* p, int y, const math::slot_params& prm,
                                       double grad_scale, float* grad, double* value) {
    const loss_slot_result r = loss_kernel_for(default_level())(z, p, y, prm, grad_scale, grad);
    if (r.ok) *value = r.value;
    return r.ok;
}

/// The SIMD kernel, or null at the scalar level (the reference is as fast there, and exact).
inline bld::detail::float_slot_kernel resolve_loss_slot() noexcept {
    return default_level() == level::scalar ? nullptr : &loss_slot_at_default_level;
}

inline bool register_loss_slot() noexcept {
    bld::detail::loss_kernel_registry::forward_kl_float.store(&resolve_loss_slot, std::memory_order_release);
    return true;
}

/// True once the kernel is registered (the initialiser runs before main).
inline const bool loss_slot_registered = register_loss_slot();

} // namespace bld::simd::detail
