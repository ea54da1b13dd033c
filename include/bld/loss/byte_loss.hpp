// bld/loss/byte_loss.hpp — byte losses between teacher byte distributions and the student's byte head.
//
// design.md §1: the student's byte head has K parallel heads (head j predicts byte j of the
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
//   one thread, a fixed order. Float logits with float targets (or none) and the forward KL
//   take the SIMD slot kernel (bld/simd, AVX2 / AVX-512): the same fp64 arithmetic in double
//   vectors (polynomial exp and log to ~2e-13), within 1e-12 relative of the scalar kernel.
#pragma once

#include "bld/core/alphabet.hpp"
#include "bld/core/error.hpp"
#include "bld/backends/simd/kernels.hpp"
#include "bld/core/tensor.hpp"

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
inline constexpr std::int64_t max_byte_heads = 260;

/// The divergence between the teacher's byte distribution p and the student's q.
enum class divergence : std::uint8_t { forward_kl, reverse_kl, jsd, tvd };

/// How per-slot values become the loss (see the file comment for the exact definitions).
enum class loss_reduction : std::uint8_t { eq5, slot_mean, none };

[[nodiscard]] constexpr std::string_view to_string(divergence d) noexcept {
    switch (d) {
        case divergence::forward_kl: return "forward_kl";
        case divergence::reverse_kl: return "reverse_kl";
        case divergence::jsd: return "jsd";
        case divergence::tvd: return "tvd";
    }
    return "unknown";
}

[[nodiscard]] constexpr std::string_view to_string(loss_reduction r) noexcept {
    switch (r) {
        case loss_reduction::eq5: return "eq5";
        case loss_reduction::slot_mean: return "slot_mean";
        case loss_reduction::none: return "none";
    }
    return "unknown";
}

/// "kl" / "forward_kl", "reverse_kl", "jsd", "tvd" → divergence.
/// @throws value_error for any other name.
[[nodiscard]] inline divergence parse_divergence(std::string_view name) {
    if (name == "kl" || name == "forward_kl") return divergence::forward_kl;
    if (name == "reverse_kl") return divergence::reverse_kl;
    if (name == "jsd") return divergence::jsd;
    if (name == "tvd") return divergence::tvd;
    throw value_error("bld::parse_divergence", "\"" + std::string(name) + "\"",
                      "unknown divergence (expected kl, forward_kl, reverse_kl, jsd or tvd)");
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
    if (ext[2] != byte_alphabet_size) {
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

/// Everything the per-slot kernel needs besides the slot's data.
struct slot_params {
    double w_div = 0.0;            ///< weight of the divergence term (0: no targets read)
    double w_ce = 0.0;             ///< weight of the byte CE term (0: no true byte read)
    divergence kind = divergence::forward_kl;
    double inv_temperature = 1.0;
    double log_floor = 0.0;        ///< log ε for reverse KL
};

enum class slot_status : std::uint8_t { ok, nonfinite_logit, bad_target };

struct slot_outcome {
    double value = 0.0;
    slot_status status = slot_status::ok;
    int index = 0;                 ///< the offending alphabet entry when status != ok
};

/// The scalar reference kernel for one slot: value and (optionally) gradient in one pass.
///
/// @param z      260 logits of the slot
/// @param p      260 teacher probabilities, or null when `prm.w_div == 0`
/// @param y      the true byte (0..259), or −1 when `prm.w_ce == 0`
/// @param grad   260 outputs receiving grad_scale · ∂v/∂z, or null
/// @returns v = w_div · D(p ‖ softmax(z/τ)) + w_ce · (−log softmax(z)_y), or a status naming
///          the first bad input (nothing written to grad then).
///
/// This is the specification a SIMD kernel must match; it is a separate function so the
/// driver can swap it.
template <class L, class P>
slot_outcome slot_loss_scalar(const L* z, const P* p, int y, const slot_params& prm,
                              double grad_scale, L* grad) noexcept {
    constexpr int n = static_cast<int>(byte_alphabet_size);
    double zmax = -std::numeric_limits<double>::infinity();
    for (int a = 0; a < n; ++a) {
        const double v = static_cast<double>(z[a]);
        if (!std::isfinite(v)) return {0.0, slot_status::nonfinite_logit, a};
        zmax = std::max(zmax, v);
    }
    if (p != nullptr) {
        for (int a = 0; a < n; ++a) {
            const double v = static_cast<double>(p[a]);
            if (!(v >= 0.0) || !std::isfinite(v)) return {0.0, slot_status::bad_target, a};
        }
    }

    const bool want_div = prm.w_div != 0.0;
    const bool want_ce = prm.w_ce != 0.0;
    const bool shared = prm.inv_temperature == 1.0;  // one log-softmax serves both terms

    // log q at temperature τ (divergence) and at τ = 1 (CE), max-shifted.
    std::array<double, n> lq{};
    std::array<double, n> lq1{};
    double s = 0.0, s1 = 0.0;
    for (int a = 0; a < n; ++a) {
        const double d = static_cast<double>(z[a]) - zmax;
        lq[a] = d * prm.inv_temperature;
        s += std::exp(lq[a]);
        if (want_ce && !shared) {
            lq1[a] = d;
            s1 += std::exp(d);
        }
    }
    // q = exp(log q), kept: every divergence and gradient below reads it.
    std::array<double, n> q{};
    const double lse = std::log(s);
    for (int a = 0; a < n; ++a) {
        lq[a] -= lse;
        q[a] = std::exp(lq[a]);
    }
    const std::array<double, n>& lq_ce = shared ? lq : lq1;
    if (want_ce && !shared) {
        const double lse1 = std::log(s1);
        for (int a = 0; a < n; ++a) lq1[a] -= lse1;
    }

    // The divergence: value and ∂D/∂u with u = z/τ.
    std::array<double, n> gu{};
    double div = 0.0;
    if (want_div) {
        switch (prm.kind) {
            case divergence::forward_kl: {
                // KL(p‖q) = Σ p (log p − log q);  ∂/∂u_a = (Σp) q_a − p_a.
                double mass = 0.0;
                for (int a = 0; a < n; ++a) {
                    const double pa = static_cast<double>(p[a]);
                    mass += pa;
                    if (pa > 0.0) div += pa * (std::log(pa) - lq[a]);
                }
                for (int a = 0; a < n; ++a) gu[a] = mass * q[a] - static_cast<double>(p[a]);
                break;
            }
            case divergence::reverse_kl: {
                // KL(q‖p) = Σ q r,  r_a = log q_a − log max(p_a, ε);  ∂/∂u_a = q_a (r_a − KL).
                std::array<double, n> r{};
                for (int a = 0; a < n; ++a) {
                    const double pa = static_cast<double>(p[a]);
                    const double lp = pa > 0.0 ? std::max(std::log(pa), prm.log_floor) : prm.log_floor;
                    r[a] = lq[a] - lp;
                    div += q[a] * r[a];
                }
                for (int a = 0; a < n; ++a) gu[a] = q[a] * (r[a] - div);
                break;
            }
            case divergence::jsd:
            case divergence::tvd: {
                // D = f(q) for fixed p; with c_a = ∂D/∂q_a, ∂/∂u_a = q_a (c_a − Σ_b q_b c_b).
                //   JSD: c_a = ½ log(q_a / m_a)   (the p-part's derivative cancels the +1's)
                //   TVD: c_a = ½ sign(q_a − p_a)
                std::array<double, n> c{};
                double qc = 0.0;
                for (int a = 0; a < n; ++a) {
                    const double pa = static_cast<double>(p[a]);
                    const double qa = q[a];
                    if (prm.kind == divergence::jsd) {
                        const double ma = 0.5 * (pa + qa);
                        if (ma > 0.0) {
                            const double lm = std::log(ma);
                            if (pa > 0.0) div += 0.5 * pa * (std::log(pa) - lm);
                            if (qa > 0.0) div += 0.5 * qa * (lq[a] - lm);
                            c[a] = 0.5 * (lq[a] - lm);
                        }
                    } else {
                        div += 0.5 * std::abs(pa - qa);
                        c[a] = qa > pa ? 0.5 : (qa < pa ? -0.5 : 0.0);
                    }
                    qc += qa * c[a];
                }
                for (int a = 0; a < n; ++a) gu[a] = q[a] * (c[a] - qc);
                break;
            }
        }
    }

    const double ce = want_ce ? -lq_ce[y] : 0.0;
    const double value = prm.w_div * div + prm.w_ce * ce;

    if (grad != nullptr) {
        // ∂v/∂z_a = (w_div/τ) ∂D/∂u_a + w_ce (softmax(z)_a − [a = y]).
        const double gd = grad_scale * prm.w_div * prm.inv_temperature;
        const double gc = grad_scale * prm.w_ce;
        for (int a = 0; a < n; ++a) {
            double g = want_div ? gd * gu[a] : 0.0;
            if (want_ce) g += gc * ((shared ? q[a] : std::exp(lq1[a])) - (a == y ? 1.0 : 0.0));
            grad[a] = static_cast<L>(g);
        }
    }
    return {value, slot_status::ok, 0};
}

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

/// The SIMD slot kernel (bld/backends/simd/kernels.inc, loss_slot_fkl) for this call, or null: it
/// serves float logits with float targets (or none) and the forward KL, on AVX2 / AVX-512
/// (simd::default_level(): the CPU's best, lowered by BLD_SIMD). Everything else takes
/// slot_loss_scalar, the reference.
template <class L, class P>
[[nodiscard]] simd::detail::loss_slot_fn fast_slot_kernel(const slot_params& prm, bool have_targets) noexcept {
    if constexpr (std::is_same_v<L, float>) {
        const bool types = std::is_same_v<P, float> || !have_targets || prm.w_div == 0.0;
        const auto lvl = simd::default_level();
        if (types && (prm.kind == divergence::forward_kl || prm.w_div == 0.0) && lvl != simd::level::scalar)
            return simd::detail::loss_kernel_for(lvl);
    }
    return nullptr;
}

/// One slot: the SIMD kernel when it applies (fp64, within 1e-12 of the reference), else — and
/// for a slot with a bad input, whose error the reference names — slot_loss_scalar.
template <class L, class P>
slot_outcome slot_loss(simd::detail::loss_slot_fn fast, const L* z, const P* p, int y, const slot_params& prm,
                       double grad_scale, L* grad) noexcept {
    if constexpr (std::is_same_v<L, float>) {
        if (fast != nullptr) {
            const float* pf = nullptr;
            if constexpr (std::is_same_v<P, float>) pf = p;
            const simd::detail::loss_slot_params sp{pf != nullptr ? prm.w_div : 0.0, prm.w_ce, prm.inv_temperature,
                                                    grad_scale};
            const auto r = fast(z, pf, y, sp, grad);
            if (r.ok) return {r.value, slot_status::ok, 0};
        }
    }
    return slot_loss_scalar<L, P>(z, p, y, prm, grad_scale, grad);
}

/// The driver: counts the active slots, runs the kernel on each, reduces. Views only.
template <class L, class P>
byte_loss_result run_byte_loss(std::string_view op, tensor_view<const L, 3> logits,
                               const P* targets, const std::uint8_t* mask, true_bytes_ref ybytes,
                               const slot_params& prm, loss_reduction reduction,
                               L* grad, L* per_slot) {
    const std::int64_t T = logits.extent(0), K = logits.extent(1);
    constexpr std::int64_t A = byte_alphabet_size;

    byte_loss_result res;
    for (std::int64_t t = 0; t < T; ++t) {
        std::int64_t n = 0;
        for (std::int64_t k = 0; k < K; ++k) n += (mask == nullptr || mask[t * K + k] != 0) ? 1 : 0;
        res.active_slots += n;
        res.active_tokens += n > 0 ? 1 : 0;
    }
    double scale = 1.0;
    if (reduction == loss_reduction::eq5) {
        scale = res.active_tokens > 0 ? 1.0 / static_cast<double>(res.active_tokens) : 0.0;
    } else if (reduction == loss_reduction::slot_mean) {
        scale = res.active_slots > 0 ? 1.0 / static_cast<double>(res.active_slots) : 0.0;
    }

    const simd::detail::loss_slot_fn fast = fast_slot_kernel<L, P>(prm, targets != nullptr);
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
            const slot_outcome r = slot_loss<L, P>(
                fast, logits.data() + slot * A, targets != nullptr ? targets + slot * A : nullptr, y,
                prm, scale, g);
            if (r.status == slot_status::nonfinite_logit) {
                const double v = static_cast<double>(logits.data()[slot * A + r.index]);
                throw value_error(std::string(op), slot_name(t, k) + ", byte " + std::to_string(r.index),
                                  std::string("logit is ") + (std::isnan(v) ? "NaN" : v > 0 ? "+inf" : "-inf"));
            }
            if (r.status == slot_status::bad_target) {
                const double v = static_cast<double>(targets[slot * A + r.index]);
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
                                 const slot_params& prm, loss_reduction reduction, Grad&& grad,
                                 PerSlot&& per_slot) {
    const auto tk = bld::byte_head_shape(logits, op);
    const std::array<std::int64_t, 3> tka{tk[0], tk[1], byte_alphabet_size};
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

}  // namespace detail

/// One divergence term D(targets ‖ softmax(logits/τ)) per active slot, reduced.
///
/// @pre  logits [T, K, 260] float32/float64 with 1 ≤ K ≤ 260; targets [T, K, 260]
///       float32/float64 (probabilities); mask [T, K] uint8/bool or `no_tensor` (all active);
///       grad [T, K, 260] with the logits' dtype, or `no_tensor`; per_slot [T, K] with the
///       logits' dtype, or `no_tensor`. All on the CPU, dense row-major.
/// @returns the reduced value (see the file comment); writes ∂value/∂logits into `grad`
///          (zeros at inactive slots; `grad` may alias `logits`) and the unreduced per-slot
///          values into `per_slot` (zeros at inactive slots).
/// @throws shape_error for a wrong rank, shape, dtype, device or layout, or K outside 1..260;
///         value_error naming the slot (token, head, byte) for a NaN/±inf logit or a negative
///         or non-finite teacher probability at an active slot, and for bad options. Outputs
///         are unspecified after a throw.
inline constexpr struct byte_loss_fn {
    template <tensor_source Logits, tensor_source Targets, optional_tensor Mask,
              optional_tensor Grad = const no_tensor_t&, optional_tensor PerSlot = const no_tensor_t&>
    byte_loss_result operator()(const Logits& logits, const Targets& targets, const Mask& mask,
                                const byte_loss_options& options = {}, Grad&& grad = no_tensor,
                                PerSlot&& per_slot = no_tensor) const {
        constexpr std::string_view op = "bld::byte_loss";
        detail::check_temperature(op, options.temperature);
        detail::check_floor(op, options.target_floor);
        const detail::slot_params prm{1.0, 0.0, options.kind, 1.0 / options.temperature,
                                      std::log(options.target_floor)};
        return detail::byte_loss_entry(op, logits, targets, no_tensor, mask, prm, options.reduction,
                                       grad, per_slot);
    }
} byte_loss{};

/// The byte cross-entropy −log softmax(logits)_y on the true bytes (τ = 1), reduced.
///
/// @pre  logits as in `byte_loss`; true_bytes [T, K] int32/int64 with values 0..259 at active
///       slots (inactive slots are not read, so padding values like −100 are fine).
/// @returns and writes as `byte_loss`.
/// @throws as `byte_loss`, and value_error naming the slot for a true byte outside 0..259.
inline constexpr struct byte_cross_entropy_fn {
    template <tensor_source Logits, tensor_source TrueBytes, optional_tensor Mask,
              optional_tensor Grad = const no_tensor_t&, optional_tensor PerSlot = const no_tensor_t&>
    byte_loss_result operator()(const Logits& logits, const TrueBytes& true_bytes, const Mask& mask,
                                const byte_cross_entropy_options& options = {},
                                Grad&& grad = no_tensor, PerSlot&& per_slot = no_tensor) const {
        constexpr std::string_view op = "bld::byte_cross_entropy";
        const detail::slot_params prm{0.0, 1.0, divergence::forward_kl, 1.0, 0.0};
        return detail::byte_loss_entry(op, logits, no_tensor, true_bytes, mask, prm,
                                       options.reduction, grad, per_slot);
    }
} byte_cross_entropy{};

/// The combined BLD byte term λ_b · CE(true byte) + λ_KL · D(targets ‖ softmax(logits/τ)),
/// per active slot, reduced (design.md §1; defaults λ_b = 1, λ_KL = 0.1, forward KL, τ = 1).
///
/// @pre  as `byte_loss` and `byte_cross_entropy` together. With λ_KL = 0 the targets are
///       shape-checked but not read; with λ_b = 0 the true bytes likewise.
/// @returns and writes as `byte_loss`.
/// @throws as `byte_loss` and `byte_cross_entropy`; value_error for a negative or non-finite λ.
inline constexpr struct bld_loss_fn {
    template <tensor_source Logits, tensor_source Targets, tensor_source TrueBytes,
              optional_tensor Mask, optional_tensor Grad = const no_tensor_t&,
              optional_tensor PerSlot = const no_tensor_t&>
    byte_loss_result operator()(const Logits& logits, const Targets& targets,
                                const TrueBytes& true_bytes, const Mask& mask,
                                const bld_loss_options& options = {}, Grad&& grad = no_tensor,
                                PerSlot&& per_slot = no_tensor) const {
        constexpr std::string_view op = "bld::bld_loss";
        detail::check_weight(op, "lambda_byte", options.lambda_byte);
        detail::check_weight(op, "lambda_kl", options.lambda_kl);
        detail::check_temperature(op, options.temperature);
        detail::check_floor(op, options.target_floor);
        const detail::slot_params prm{options.lambda_kl, options.lambda_byte, options.kind,
                                      1.0 / options.temperature, std::log(options.target_floor)};
        return detail::byte_loss_entry(op, logits, targets, true_bytes, mask, prm,
                                       options.reduction, grad, per_slot);
    }
} bld_loss{};

}  // namespace bld
