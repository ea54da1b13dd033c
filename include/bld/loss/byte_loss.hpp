// bld/loss/byte_loss.hpp — byte losses between teacher byte distributions and the student's byte head.
//
// docs/01_method.md ("The student side"): the student's byte head has K parallel heads (head j predicts byte j of the
// student token); each (token ℓ, head j) pair is a *slot*. The BLD byte term of the loss is
//
//     λ_b · Σ_{j ≤ min(n_ℓ, K)} CE(byte_j, head_j)  +  λ_KL · Σ_{j ≤ min(n_ℓ, K)} D(p_ℓj ‖ q_ℓj)
//
// with p_ℓj the teacher's next-byte distribution at the slot's text byte (260 entries: 256
// bytes, STOP at 256, three reserved) and q_ℓj the softmax of head j's 260 logits.
//
// Shapes:   logits [T, K, 260] float/double   — the student's byte-head logits
//           targets [T, K, 260] float/double  — teacher probabilities (rows of masked slots
//                                               are never read)
//           true_bytes [T, K] int32/int64     — the text byte of each slot, 0..259
//           mask [T, K] uint8/bool            — nonzero = active slot; 0 = ignore (padding,
//                                               prompt, specials, bytes past the token's
//                                               length or past K)
//
// Conventions (every function here, and bld_torch, follow them):
//
// * Temperature τ applies to the student logits of the divergence term only:
//   q = softmax(z / τ). The teacher targets are used as given (they are probabilities; sharpen
//   or soften them when you project). There is NO τ² factor: the gradient w.r.t. z carries
//   the 1/τ of the chain rule and nothing else. For Hinton-style τ² scaling multiply λ_KL (or
//   the returned value) by τ². The byte cross-entropy on the true bytes always uses τ = 1.
// * Divergences, per active slot (natural logarithms, 0·log 0 = 0):
//     forward_kl  KL(p‖q) = Σ_a p_a (log p_a − log q_a)          — the default
//     reverse_kl  KL(q‖p) = Σ_a q_a (log q_a − log max(p_a, ε))  — ε = target_floor (1e-12):
//                 the teacher may put zero mass where the student never does, so its log is
//                 floored to keep the value finite
//     jsd         ½ KL(p‖m) + ½ KL(q‖m),  m = (p + q)/2          — in [0, log 2]
//     tvd         ½ Σ_a |p_a − q_a|                              — sub-gradient 0 where p_a = q_a
//   byte CE       −log softmax(z)_y  for the true byte y.
//   The formulas and their gradients hold for any p ≥ 0; the targets should sum to 1.
// * Reductions, with v_tk the (weighted) value of slot (t, k) and A the set of active slots:
//     eq5        (1 / T_A) · Σ_{(t,k) ∈ A} v_tk,  T_A = number of tokens t with at least one
//                active slot: the sum over heads within a token, averaged over the tokens that
//                take part (the paper's eq. 5). 0 when no slot is active.
//     slot_mean  (1 / |A|) · Σ_{(t,k) ∈ A} v_tk. 0 when no slot is active.
//     none       per-slot values v_tk (0 at inactive slots); `byte_loss_result::value` is then
//                Σ_{A} v_tk, and the gradient written is, slot by slot, ∂v_tk/∂z_tk (the
//                Jacobian is block-diagonal: multiply by the upstream gradient of each slot).
// * Value and gradient w.r.t. the logits come from one fused pass per slot: the log-softmax is
//   computed once (twice when τ ≠ 1 and both CE and a divergence are asked for: one per
//   temperature), accumulated in double whatever the input type. Results are deterministic:
//   one thread, a fixed order.
// * Kernels. Each slot's value and gradient is bld::math::slot_loss (bld/math/slot_loss.hpp),
//   the one implementation of the formula, run here with one lane (entries in order).
//   A program that includes only <bld/bld.hpp> gets exactly that for every slot. Including
//   <bld/cpu.hpp> (or <bld/backends/simd/loss_kernel.hpp>) in any translation unit of the
//   program registers the SIMD slot kernel: float logits with float targets (or none) and the
//   forward KL then take a vectorised evaluation of the same formula (fp64 in double vectors,
//   polynomial exp and log to ~2e-13; AVX-512, AVX2, SSE2 or NEON, chosen once per call by
//   bld::simd::default_level()), within 1e-12 relative of the reference. Every other case, and
//   every slot with a bad input (whose error the reference names), takes the reference.
#pragma once

#include "bld/backends/device_loss.hpp"
#include "bld/backends/slot_kernel.hpp"
#include "bld/core/alphabet.hpp"
#include "bld/core/error.hpp"
#include "bld/core/tensor.hpp"
#include "bld/math/divergence.hpp"
#include "bld/math/slot_loss.hpp"
#include "bld/targets/slot_targets.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <type_traits>

namespace bld {

/// The most byte heads a student may have (one per alphabet entry).
inline constexpr std::int64_t max_byte_heads = static_cast<std::int64_t>(alphabet_size);

/// How per-slot values become the loss (see the file comment for the exact definitions).
enum class loss_reduction : std::uint8_t { eq5, slot_mean, none };

[[nodiscard]] constexpr std::string_view to_string(loss_reduction r) noexcept {
    switch (r) {
        case loss_reduction::eq5: return "eq5";
        case loss_reduction::slot_mean: return "slot_mean";
        case loss_reduction::none: return "none";
    }
    return "unknown";
}

/// "eq5", "slot_mean", "none" → loss_reduction.
/// @throws value_error for any other name.
[[nodiscard]] inline loss_reduction parse_reduction(std::string_view name) {
    if (name == "eq5") return loss_reduction::eq5;
    if (name == "slot_mean") return loss_reduction::slot_mean;
    if (name == "none") return loss_reduction::none;
    throw value_error("bld::parse_reduction", "\"" + std::string(name) + "\"",
                      "unknown reduction (expected eq5, slot_mean or none)");
}

/// Options of `byte_loss` (one divergence term).
struct byte_loss_options {
    divergence kind = divergence::forward_kl;
    double temperature = 1.0;      ///< τ > 0: q = softmax(logits / τ), no τ² factor
    loss_reduction reduction = loss_reduction::eq5;
    double target_floor = 1e-12;   ///< ε in reverse KL's log max(p, ε); in (0, 1]
};

/// Options of `byte_cross_entropy` (CE on the true bytes, τ = 1).
struct byte_cross_entropy_options {
    loss_reduction reduction = loss_reduction::eq5;
};

/// Options of `bld_loss`: λ_b · CE_byte + λ_KL · D(p‖q).
struct bld_loss_options {
    double lambda_byte = 1.0;      ///< λ_b ≥ 0, weight of the byte cross-entropy
    double lambda_kl = 0.1;        ///< λ_KL ≥ 0, weight of the divergence (whatever its kind)
    divergence kind = divergence::forward_kl;
    double temperature = 1.0;      ///< τ of the divergence term only
    loss_reduction reduction = loss_reduction::eq5;
    double target_floor = 1e-12;
};

/// What a loss call returns besides what it writes into its output tensors.
struct byte_loss_result {
    double value = 0.0;            ///< the reduced loss (for `none`: the sum over active slots)
    std::int64_t active_slots = 0; ///< |A|
    std::int64_t active_tokens = 0; ///< tokens with at least one active slot (T_A)
};

/// Stands for an absent tensor argument: no mask (every slot active), no gradient output, no
/// per-slot output.
struct no_tensor_t {
    explicit constexpr no_tensor_t() = default;
};
inline constexpr no_tensor_t no_tensor{};

/// A tensor argument that may be left out with `no_tensor`.
template <class T>
concept optional_tensor = std::same_as<std::remove_cvref_t<T>, no_tensor_t> || tensor_source<T>;

// What the losses' arguments may be, as far as their types say (bld/core/tensor.hpp): a
// tensor_view of the wrong rank or element type does not compile; a torch::Tensor is checked
// when the call runs.

/// Byte-head logits or dense targets [T, K, 260]: float or double.
template <class T>
concept loss_values = rank_may_be<T, 3> && element_may_be<T, float, double>;
/// True bytes [T, K]: int32 or int64.
template <class T>
concept loss_bytes = rank_may_be<T, 2> && element_may_be<T, std::int32_t, std::int64_t>;
/// The slot mask [T, K] (uint8 or bool), or `no_tensor`.
template <class T>
concept loss_mask = std::same_as<std::remove_cvref_t<T>, no_tensor_t> ||
                    (rank_may_be<T, 2> && element_may_be<T, std::uint8_t, bool>);
/// An output of rank R (float or double), or `no_tensor`.
template <class T, std::size_t R>
concept loss_output = std::same_as<std::remove_cvref_t<T>, no_tensor_t> ||
                      (rank_may_be<T, R> && element_may_be<T, float, double>);

/// The [T, K] of byte-head logits, checked: rank 3, last dimension 260, 1 ≤ K ≤ 260 (use it
/// to size outputs before a loss call).
/// @throws shape_error otherwise, naming `op` and the argument `logits`.
template <tensor_source Src>
[[nodiscard]] std::array<std::int64_t, 2> byte_head_shape(const Src& logits,
                                                          std::string_view op = "bld::byte_head_shape") {
    (void)bld::tensor_dtype(logits, "logits");  // an adapter that cannot describe it throws here
    const auto ext = tensor_extents(logits);
    const auto bad = [&](const std::string& why) {
        throw shape_error(std::string(op), "argument `logits`", why);
    };
    if (ext.size() != 3) {
        bad("expected [T, K, 260] byte-head logits, got " + detail::describe_tensor(logits));
    }
    if (ext[2] != static_cast<std::int64_t>(alphabet_size)) {
        bad("expected [T, K, 260] byte-head logits, got " + detail::describe_tensor(logits) +
            " (the last dimension must be the 260-entry byte alphabet)");
    }
    if (ext[1] < 1 || ext[1] > max_byte_heads) {
        bad("expected [T, K, 260] byte-head logits with 1 <= K <= 260 heads, got K = " +
            std::to_string(ext[1]) + " in " + detail::describe_tensor(logits));
    }
    return {ext[0], ext[1]};
}

namespace detail {

/// The true bytes, read as int64 whatever their storage (int32 or int64).
struct true_bytes_ref {
    const void* data = nullptr;
    bool is64 = false;
    [[nodiscard]] std::int64_t operator[](std::int64_t i) const noexcept {
        return is64 ? static_cast<const std::int64_t*>(data)[i]
                    : static_cast<std::int64_t>(static_cast<const std::int32_t*>(data)[i]);
    }
};

inline std::string slot_name(std::int64_t t, std::int64_t k) {
    return "token " + std::to_string(t) + ", head " + std::to_string(k);
}

/// The registered slot kernel for a call with these element types and parameters, or null.
template <class L, class P>
[[nodiscard]] float_slot_kernel registered_slot_kernel(const math::slot_params& prm, bool have_targets) noexcept {
    if constexpr (std::is_same_v<L, float>) {
        const bool types = std::is_same_v<P, float> || !have_targets || prm.w_div == 0.0;
        if (types && (prm.kind == divergence::forward_kl || prm.w_div == 0.0)) {
            const float_slot_kernel_resolver resolve = loss_kernel_registry::forward_kl_float.load(std::memory_order_acquire);
            if (resolve != nullptr) return resolve();
        }
    }
    return nullptr;
}

/// One slot: the registered kernel when there is one, else — and for a slot with a bad input,
/// whose error the reference names — math::slot_loss with one lane.
template <class L, class P>
math::slot_result slot_loss(float_slot_kernel fast, const L* z, const P* p, int y, const math::slot_params& prm,
                            double grad_scale, L* grad) noexcept {
    if constexpr (std::is_same_v<L, float>) {
        if (fast != nullptr) {
            const float* pf = nullptr;
            if constexpr (std::is_same_v<P, float>) pf = p;
            math::slot_params fp = prm;
            if (pf == nullptr) fp.w_div = 0.0;
            double value = 0.0;
            if (fast(z, pf, y, fp, grad_scale, grad, &value)) return {value, math::slot_status::ok, 0};
        }
    }
    return math::slot_loss(math::host_lanes{}, z, p, y, prm, grad_scale, grad);
}

/// Where a slot's target row is: dense (row = slot) or compact (row a = the a-th active slot,
/// whose flat index `slots[a]` must be that slot).
struct target_rows {
    bool compact = false;
    const std::int64_t* slots = nullptr; ///< compact: [rows]
    std::int64_t rows = 0;               ///< compact: rows of the values
};

/// The driver: counts the active slots, runs the kernel on each, reduces. Views only.
template <class L, class P>
byte_loss_result run_byte_loss(std::string_view op, tensor_view<const L, 3> logits,
                               const P* targets, const std::uint8_t* mask, true_bytes_ref ybytes,
                               const math::slot_params& prm, loss_reduction reduction,
                               L* grad, L* per_slot, target_rows layout = {}) {
    const std::int64_t T = logits.extent(0), K = logits.extent(1);
    constexpr auto A = static_cast<std::int64_t>(alphabet_size);

    byte_loss_result res;
    for (std::int64_t t = 0; t < T; ++t) {
        std::int64_t n = 0;
        for (std::int64_t k = 0; k < K; ++k) n += (mask == nullptr || mask[t * K + k] != 0) ? 1 : 0;
        res.active_slots += n;
        res.active_tokens += n > 0 ? 1 : 0;
    }
    const bool compact = layout.compact;
    if (compact && res.active_slots != layout.rows)
        throw shape_error(std::string(op), "argument `targets`",
                          "compact targets hold " + std::to_string(layout.rows) + " rows, but the mask has " +
                              std::to_string(res.active_slots) + " active slots (one row per active slot)");
    double scale = 1.0;
    if (reduction == loss_reduction::eq5) {
        scale = res.active_tokens > 0 ? 1.0 / static_cast<double>(res.active_tokens) : 0.0;
    } else if (reduction == loss_reduction::slot_mean) {
        scale = res.active_slots > 0 ? 1.0 / static_cast<double>(res.active_slots) : 0.0;
    }

    // bf16 targets are widened one slot at a time for the float slot kernel.
    constexpr bool widen = std::is_same_v<P, bf16>;
    using PK = std::conditional_t<widen, float, P>;
    const float_slot_kernel fast = registered_slot_kernel<L, PK>(prm, targets != nullptr);
    [[maybe_unused]] float wide[alphabet_size];
    std::int64_t row = 0; // compact: the next row
    double total = 0.0;
    for (std::int64_t t = 0; t < T; ++t) {
        for (std::int64_t k = 0; k < K; ++k) {
            const std::int64_t slot = t * K + k;
            L* g = grad != nullptr ? grad + slot * A : nullptr;
            if (mask != nullptr && mask[slot] == 0) {
                if (g != nullptr) std::fill(g, g + A, L(0));
                if (per_slot != nullptr) per_slot[slot] = L(0);
                continue;
            }
            int y = -1;
            if (prm.w_ce != 0.0) {
                const std::int64_t yb = ybytes[slot];
                if (yb < 0 || yb >= A) {
                    throw value_error(std::string(op), slot_name(t, k),
                                      "true byte " + std::to_string(yb) + " is outside 0..259");
                }
                y = static_cast<int>(yb);
            }
            const P* p = nullptr;
            if (compact) {
                if (layout.slots[row] != slot)
                    throw shape_error(std::string(op), "argument `targets`, row " + std::to_string(row),
                                      "compact row " + std::to_string(row) + " is for slot " +
                                          std::to_string(layout.slots[row]) + ", but the " + std::to_string(row) +
                                          "-th active slot of the mask is " + std::to_string(slot) + " (" +
                                          slot_name(t, k) + "): rows must list the active slots in order");
                if (targets != nullptr) p = targets + row * A;
                ++row;
            } else if (targets != nullptr) {
                p = targets + slot * A;
            }
            const PK* pk = nullptr;
            if constexpr (widen) {
                if (p != nullptr) {
                    for (std::int64_t a = 0; a < A; ++a) wide[a] = static_cast<float>(p[a]);
                    pk = wide;
                }
            } else {
                pk = p;
            }
            const math::slot_result r = detail::slot_loss<L, PK>(fast, logits.data() + slot * A, pk, y, prm, scale, g);
            if (r.status == math::slot_status::nonfinite_logit) {
                const double v = static_cast<double>(logits.data()[slot * A + r.index]);
                throw value_error(std::string(op), slot_name(t, k) + ", byte " + std::to_string(r.index),
                                  std::string("logit is ") + (std::isnan(v) ? "NaN" : v > 0 ? "+inf" : "-inf"));
            }
            if (r.status == math::slot_status::bad_target) {
                const double v = static_cast<double>(pk[r.index]);
                throw value_error(std::string(op), slot_name(t, k) + ", byte " + std::to_string(r.index),
                                  "teacher probability " + std::to_string(v) +
                                      " is not finite and non-negative");
            }
            total += r.value;
            if (per_slot != nullptr) per_slot[slot] = static_cast<L>(r.value);
        }
    }
    res.value = reduction == loss_reduction::none ? total : total * scale;
    return res;
}

inline void check_weight(std::string_view op, std::string_view name, double w) {
    if (!std::isfinite(w) || w < 0.0) {
        throw value_error(std::string(op), std::string(name),
                          "must be finite and >= 0, got " + std::to_string(w));
    }
}

inline void check_temperature(std::string_view op, double tau) {
    if (!std::isfinite(tau) || !(tau > 0.0)) {
        throw value_error(std::string(op), "temperature",
                          "must be finite and > 0, got " + std::to_string(tau));
    }
}

inline void check_floor(std::string_view op, double eps) {
    if (!std::isfinite(eps) || !(eps > 0.0) || eps > 1.0) {
        throw value_error(std::string(op), "target_floor",
                          "must be in (0, 1], got " + std::to_string(eps));
    }
}

/// The checked options of byte_loss as the slot kernel's parameters (λ_KL = 1, no CE).
inline math::slot_params params_of(std::string_view op, const byte_loss_options& o) {
    check_temperature(op, o.temperature);
    check_floor(op, o.target_floor);
    return {1.0, 0.0, o.kind, 1.0 / o.temperature, std::log(o.target_floor)};
}

/// The checked options of bld_loss as the slot kernel's parameters.
inline math::slot_params params_of(std::string_view op, const bld_loss_options& o) {
    check_weight(op, "lambda_byte", o.lambda_byte);
    check_weight(op, "lambda_kl", o.lambda_kl);
    check_temperature(op, o.temperature);
    check_floor(op, o.target_floor);
    return {o.lambda_kl, o.lambda_byte, o.kind, 1.0 / o.temperature, std::log(o.target_floor)};
}

/// Calls f(view) with the float or double view of a [T, K, 260] tensor.
template <class Src, class F>
decltype(auto) visit_real3(std::string_view op, const Src& src, std::string_view name,
                           const std::array<std::int64_t, 3>& ext, F&& f) {
    switch (tensor_dtype(src, name)) {
        case dtype::f32: return f(as_view<const float, 3>(src, name, ext));
        case dtype::f64: return f(as_view<const double, 3>(src, name, ext));
        default:
            throw shape_error(std::string(op), "argument `" + std::string(name) + "`",
                              "expected float32 or float64, got " + detail::describe_tensor(src));
    }
}

template <class Src>
const std::uint8_t* mask_pointer(std::string_view op, const Src& mask,
                                 const std::array<std::int64_t, 2>& tk) {
    if constexpr (std::same_as<std::remove_cvref_t<Src>, no_tensor_t>) {
        return nullptr;
    } else {
        switch (tensor_dtype(mask, "mask")) {
            case dtype::u8: return as_view<const std::uint8_t, 2>(mask, "mask", tk).data();
            // bool storage is one byte holding 0 or 1: read it as uint8.
            case dtype::boolean:
                return reinterpret_cast<const std::uint8_t*>(as_view<const bool, 2>(mask, "mask", tk).data());
            default:
                throw shape_error(std::string(op), "argument `mask`",
                                  "expected a uint8 or bool [T, K] mask, got " + detail::describe_tensor(mask));
        }
    }
}

template <class Src>
true_bytes_ref true_bytes_pointer(std::string_view op, const Src& y,
                                  const std::array<std::int64_t, 2>& tk) {
    switch (tensor_dtype(y, "true_bytes")) {
        case dtype::i32: return {as_view<const std::int32_t, 2>(y, "true_bytes", tk).data(), false};
        case dtype::i64: return {as_view<const std::int64_t, 2>(y, "true_bytes", tk).data(), true};
        default:
            throw shape_error(std::string(op), "argument `true_bytes`",
                              "expected int32 or int64 [T, K] bytes, got " + detail::describe_tensor(y));
    }
}

template <class L, class Src>
L* output_pointer(Src&& out, std::string_view name, const std::array<std::int64_t, 3>& ext) {
    if constexpr (std::same_as<std::remove_cvref_t<Src>, no_tensor_t>) {
        return nullptr;
    } else {
        return as_view<L, 3>(out, name, ext).data();
    }
}

template <class L, class Src>
L* output_pointer(Src&& out, std::string_view name, const std::array<std::int64_t, 2>& ext) {
    if constexpr (std::same_as<std::remove_cvref_t<Src>, no_tensor_t>) {
        return nullptr;
    } else {
        return as_view<L, 2>(out, name, ext).data();
    }
}

/// The common front end: checks every argument, converts to views, runs the driver.
template <class Logits, class Targets, class TrueBytes, class Mask, class Grad, class PerSlot>
byte_loss_result byte_loss_entry(std::string_view op, const Logits& logits, const Targets& targets,
                                 const TrueBytes& true_bytes, const Mask& mask,
                                 const math::slot_params& prm, loss_reduction reduction, Grad&& grad,
                                 PerSlot&& per_slot) {
    const auto tk = bld::byte_head_shape(logits, op);
    if (detail::on_device(logits)) {  // CUDA tensors: the registered backend (bld/backends/device_loss.hpp)
        const auto d = detail::device_loss_entry(op, tk, logits, targets, true_bytes, mask, prm, reduction, grad, per_slot);
        return {d.value, d.active_slots, d.active_tokens};
    }
    const std::array<std::int64_t, 3> tka{tk[0], tk[1], static_cast<std::int64_t>(alphabet_size)};
    const std::uint8_t* m = detail::mask_pointer(op, mask, tk);
    true_bytes_ref y;
    if constexpr (!std::same_as<TrueBytes, no_tensor_t>) y = detail::true_bytes_pointer(op, true_bytes, tk);

    return detail::visit_real3(op, logits, "logits", tka, [&](auto lv) {
        using L = std::remove_const_t<typename decltype(lv)::element_type>;
        L* g = detail::output_pointer<L>(grad, "grad", tka);
        L* ps = detail::output_pointer<L>(per_slot, "per_slot", tk);
        if constexpr (std::same_as<Targets, no_tensor_t>) {
            return detail::run_byte_loss<L, double>(op, lv, nullptr, m, y, prm, reduction, g, ps);
        } else {
            return detail::visit_real3(op, targets, "targets", tka, [&](auto pv) {
                using P = std::remove_const_t<typename decltype(pv)::element_type>;
                const P* p = prm.w_div != 0.0 ? pv.data() : nullptr;
                return detail::run_byte_loss<L, P>(op, lv, p, m, y, prm, reduction, g, ps);
            });
        }
    });
}

/// The front end of the slot-targets overloads: checks the view against the logits, runs the
/// driver with the view's layout.
template <class Logits, class P, class Grad, class PerSlot>
byte_loss_result targets_entry(std::string_view op, const Logits& logits, const slot_targets_view<P>& targets,
                               const math::slot_params& prm, loss_reduction reduction, Grad&& grad, PerSlot&& per_slot) {
    const auto tk = bld::byte_head_shape(logits, op);
    targets.check(op);
    if (tk[0] != targets.tokens || tk[1] != targets.heads)
        throw shape_error(std::string(op), "argument `logits`",
                          "expected [" + std::to_string(targets.tokens) + ", " + std::to_string(targets.heads) +
                              ", 260] to match the targets' slots, got " + detail::describe_tensor(logits) +
                              " (flatten [batch, positions, K, 260] logits to [batch * positions, K, 260])");
    if (detail::on_device(logits) || targets.mask.device() != device_kind::cpu) {  // bld/backends/device_loss.hpp
        const auto d = detail::device_targets_entry(op, tk, logits, targets, prm, reduction, grad, per_slot);
        return {d.value, d.active_slots, d.active_tokens};
    }
    const std::array<std::int64_t, 3> tka{tk[0], tk[1], static_cast<std::int64_t>(alphabet_size)};
    const target_rows rows{targets.layout == target_layout::compact, targets.slots.data(), targets.rows()};
    const true_bytes_ref y{targets.true_bytes.data(), false};
    return detail::visit_real3(op, logits, "logits", tka, [&](auto lv) {
        using L = std::remove_const_t<typename decltype(lv)::element_type>;
        L* g = detail::output_pointer<L>(grad, "grad", tka);
        L* ps = detail::output_pointer<L>(per_slot, "per_slot", tk);
        const P* p = prm.w_div != 0.0 ? targets.values.data() : nullptr;
        return detail::run_byte_loss<L, std::remove_cv_t<P>>(op, lv, p, targets.mask.data(), y, prm, reduction, g, ps,
                                                              rows);
    });
}

}  // namespace detail

/// One divergence term D(targets ‖ softmax(logits/τ)) per active slot, reduced.
///
/// @pre  logits [T, K, 260] float32/float64 with 1 ≤ K ≤ 260; targets [T, K, 260]
///       float32/float64 (probabilities); mask [T, K] uint8/bool or `no_tensor` (all active);
///       grad [T, K, 260] with the logits' dtype, or `no_tensor`; per_slot [T, K] with the
///       logits' dtype, or `no_tensor`. All on the CPU, or all on one CUDA device (bld's
///       CUDA kernels, registered by <bld/cuda.cuh> in a linked nvcc translation unit:
///       bld/backends/device_loss.hpp), dense row-major.
/// @returns the reduced value (see the file comment); writes ∂value/∂logits into `grad`
///          (zeros at inactive slots; `grad` may alias `logits`) and the unreduced per-slot
///          values into `per_slot` (zeros at inactive slots).
/// @throws shape_error for a wrong rank, shape, dtype, device or layout, or K outside 1..260;
///         value_error naming the slot (token, head, byte) for a NaN/±inf logit or a negative
///         or non-finite teacher probability at an active slot, and for bad options. Outputs
///         are unspecified after a throw.
inline constexpr struct byte_loss_fn {
    template <loss_values Logits, loss_values Targets, loss_mask Mask, loss_output<3> Grad = const no_tensor_t&,
              loss_output<2> PerSlot = const no_tensor_t&>
    byte_loss_result operator()(const Logits& logits, const Targets& targets, const Mask& mask,
                                const byte_loss_options& options = {}, Grad&& grad = no_tensor,
                                PerSlot&& per_slot = no_tensor) const {
        constexpr std::string_view op = "bld::byte_loss";
        const math::slot_params prm = detail::params_of(op, options);
        return detail::byte_loss_entry(op, logits, targets, no_tensor, mask, prm, options.reduction,
                                       grad, per_slot);
    }
    /// The same on slot targets (dense or compact; float, bf16 or double values): the mask is
    /// the targets' own.
    template <loss_values Logits, target_type P, loss_output<3> Grad = const no_tensor_t&,
              loss_output<2> PerSlot = const no_tensor_t&>
    byte_loss_result operator()(const Logits& logits, const slot_targets_view<P>& targets,
                                const byte_loss_options& options = {}, Grad&& grad = no_tensor,
                                PerSlot&& per_slot = no_tensor) const {
        constexpr std::string_view op = "bld::byte_loss";
        const math::slot_params prm = detail::params_of(op, options);
        return detail::targets_entry(op, logits, targets, prm, options.reduction, grad, per_slot);
    }
} byte_loss{};

/// The byte cross-entropy −log softmax(logits)_y on the true bytes (τ = 1), reduced.
///
/// @pre  logits as in `byte_loss`; true_bytes [T, K] int32/int64 with values 0..259 at active
///       slots (inactive slots are not read, so padding values like −100 are fine).
/// @returns and writes as `byte_loss`.
/// @throws as `byte_loss`, and value_error naming the slot for a true byte outside 0..259.
inline constexpr struct byte_cross_entropy_fn {
    template <loss_values Logits, loss_bytes TrueBytes, loss_mask Mask, loss_output<3> Grad = const no_tensor_t&,
              loss_output<2> PerSlot = const no_tensor_t&>
    byte_loss_result operator()(const Logits& logits, const TrueBytes& true_bytes, const Mask& mask,
                                const byte_cross_entropy_options& options = {},
                                Grad&& grad = no_tensor, PerSlot&& per_slot = no_tensor) const {
        constexpr std::string_view op = "bld::byte_cross_entropy";
        const math::slot_params prm{0.0, 1.0, divergence::forward_kl, 1.0, 0.0};
        return detail::byte_loss_entry(op, logits, no_tensor, true_bytes, mask, prm,
                                       options.reduction, grad, per_slot);
    }
} byte_cross_entropy{};

/// The combined BLD byte term λ_b · CE(true byte) + λ_KL · D(targets ‖ softmax(logits/τ)),
/// per active slot, reduced (docs/01_method.md; defaults λ_b = 1, λ_KL = 0.1, forward KL, τ = 1).
///
/// @pre  as `byte_loss` and `byte_cross_entropy` together. With λ_KL = 0 the targets are
///       shape-checked but not read; with λ_b = 0 the true bytes likewise.
/// @returns and writes as `byte_loss`.
/// @throws as `byte_loss` and `byte_cross_entropy`; value_error for a negative or non-finite λ.
inline constexpr struct bld_loss_fn {
    template <loss_values Logits, loss_values Targets, loss_bytes TrueBytes, loss_mask Mask,
              loss_output<3> Grad = const no_tensor_t&, loss_output<2> PerSlot = const no_tensor_t&>
    byte_loss_result operator()(const Logits& logits, const Targets& targets,
                                const TrueBytes& true_bytes, const Mask& mask,
                                const bld_loss_options& options = {}, Grad&& grad = no_tensor,
                                PerSlot&& per_slot = no_tensor) const {
        constexpr std::string_view op = "bld::bld_loss";
        const math::slot_params prm = detail::params_of(op, options);
        return detail::byte_loss_entry(op, logits, targets, true_bytes, mask, prm,
                                       options.reduction, grad, per_slot);
    }
    /// The same on slot targets (dense or compact; float, bf16 or double values), whose mask and
    /// true bytes are the targets' own — what bld::distiller returns goes straight in:
    ///   auto t = distiller.targets(batch);
    ///   bld::bld_loss(logits, t.view<float>(), {}, grad);
    /// @throws as above; shape_error when the logits' [T, K] is not the targets', or compact rows
    ///         do not list the active slots in order.
    template <loss_values Logits, target_type P, loss_output<3> Grad = const no_tensor_t&,
              loss_output<2> PerSlot = const no_tensor_t&>
    byte_loss_result operator()(const Logits& logits, const slot_targets_view<P>& targets,
                                const bld_loss_options& options = {}, Grad&& grad = no_tensor,
                                PerSlot&& per_slot = no_tensor) const {
        constexpr std::string_view op = "bld::bld_loss";
        const math::slot_params prm = detail::params_of(op, options);
        return detail::targets_entry(op, logits, targets, prm, options.reduction, grad, per_slot);
    }
} bld_loss{};

}  // namespace bld
