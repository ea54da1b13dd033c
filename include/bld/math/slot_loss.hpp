// bld/math/slot_loss.hpp — the byte loss of one slot, value and gradient: the specification.
//
// One slot is (token ℓ, head j) of the student's byte head: 260 logits z, the teacher's 260
// probabilities p, the true byte y (bld/loss/byte_loss.hpp states the conventions, the
// divergences and the reductions). slot_loss is the one implementation of the formula: the CPU
// loss driver runs it with `host_lanes` (entries in order), the CUDA loss kernel with one warp
// per slot. The CPU's SIMD slot kernel (bld/backends/simd, forward KL on float logits) is a
// vectorised evaluation of the same formula, held to this one by tests within 1e-12.
#pragma once

#include "bld/core/alphabet.hpp"
#include "bld/math/divergence.hpp"
#include "bld/math/elementary.hpp"
#include "bld/math/lanes.hpp"

#include <cstdint>

namespace bld::math {

/// Everything the per-slot formula needs besides the slot's data.
struct slot_params {
    double w_div = 0.0;        ///< weight of the divergence (0: targets not read)
    double w_ce = 0.0;         ///< weight of the byte CE (0: true byte not read)
    divergence kind = divergence::forward_kl;
    double inv_temperature = 1.0;
    double log_floor = 0.0;    ///< log ε of reverse KL
};

/// What became of a slot (the CUDA kernels also encode it in their error word).
enum class slot_status : std::uint8_t {
    ok = 0,
    nonfinite_logit = 1,  ///< a NaN or ±inf logit (index: the first)
    bad_target = 2,       ///< a negative or non-finite teacher probability (index: the first)
    bad_true_byte = 3,    ///< a true byte outside 0..259 (checked by the drivers, not here)
};

struct slot_result {
    double value = 0.0;
    slot_status status = slot_status::ok;
    int index = 0;  ///< the offending alphabet entry when status ≠ ok
};

/// The divergence D(p ‖ q) of one distribution and ∂D/∂u_a, where q = softmax(u) and lq = log q
/// (this lane's entries: a = lane + e·W). Entries with q_a = 0 (lq_a = −inf: outside the
/// support of q, as in a student's projected distribution) contribute nothing and get
/// gu_a = 0; p should then be zero there too (the token-head loss restricts it). Every sum runs
/// in entry order with host_lanes. slot_loss and the token-head loss
/// (bld/math/position_loss.hpp) both call it: the one copy of the four divergences.
template <class Lanes, int E, class P>
BLD_HOST_DEVICE double divergence_terms(const Lanes& lanes, const double (&lq)[E], const double (&q)[E], const P* p,
                                        const slot_params& prm, double (&gu)[E]) {
    constexpr int n = static_cast<int>(alphabet_size);
    constexpr int W = Lanes::width;
    const int lane = lanes.lane();
    double div = 0.0;
    for (int e = 0; e < E; ++e) gu[e] = 0.0;
    if (prm.kind == divergence::forward_kl) {
        // KL(p‖q) = Σ p (log p − log q);  ∂/∂u_a = (Σp) q_a − p_a.
        double mass = 0.0;
        for (int e = 0; e < E; ++e) {
            const int a = lane + e * W;
            if (a < n) {
                const double pa = static_cast<double>(p[a]);
                mass += pa;
                if (pa > 0.0) div += pa * (log64(pa) - lq[e]);
            }
        }
        mass = lanes.sum(mass);
        div = lanes.sum(div);
        for (int e = 0; e < E; ++e) {
            const int a = lane + e * W;
            if (a < n) gu[e] = mass * q[e] - static_cast<double>(p[a]);
        }
    } else if (prm.kind == divergence::reverse_kl) {
        // KL(q‖p) = Σ q r,  r_a = log q_a − log max(p_a, ε);  ∂/∂u_a = q_a (r_a − KL).
        double r[E];
        for (int e = 0; e < E; ++e) {
            const int a = lane + e * W;
            r[e] = 0.0;
            if (a < n && q[e] > 0.0) {
                const double pa = static_cast<double>(p[a]);
                const double lp = pa > 0.0 ? max64(log64(pa), prm.log_floor) : prm.log_floor;
                r[e] = lq[e] - lp;
                div += q[e] * r[e];
            }
        }
        div = lanes.sum(div);
        for (int e = 0; e < E; ++e) gu[e] = q[e] * (r[e] - div);
    } else {
        // D = f(q) for fixed p; with c_a = ∂D/∂q_a, ∂/∂u_a = q_a (c_a − Σ_b q_b c_b).
        //   JSD: c_a = ½ log(q_a / m_a)   (the p-part's derivative cancels the +1's)
        //   TVD: c_a = ½ sign(q_a − p_a)
        double c[E];
        double qc = 0.0;
        const bool jsd = prm.kind == divergence::jsd;
        for (int e = 0; e < E; ++e) {
            const int a = lane + e * W;
            c[e] = 0.0;
            if (a < n) {
                const double pa = static_cast<double>(p[a]);
                const double qa = q[e];
                if (jsd) {
                    const double ma = 0.5 * (pa + qa);
                    if (ma > 0.0) {
                        const double lm = log64(ma);
                        if (pa > 0.0) div += 0.5 * pa * (log64(pa) - lm);
                        if (qa > 0.0) {
                            div += 0.5 * qa * (lq[e] - lm);
                            c[e] = 0.5 * (lq[e] - lm);
                        }
                    }
                } else {
                    div += 0.5 * abs64(pa - qa);
                    c[e] = qa > pa ? 0.5 : (qa < pa ? -0.5 : 0.0);
                }
                qc += qa * c[e];
            }
        }
        div = lanes.sum(div);
        qc = lanes.sum(qc);
        for (int e = 0; e < E; ++e) gu[e] = q[e] * (c[e] - qc);
    }
    return div;
}

/// One slot: v = w_div · D(p ‖ softmax(z/τ)) + w_ce · (−log softmax(z)_y), and, if grad is not
/// null, grad[a] = grad_scale · ∂v/∂z_a, in one fused pass in fp64 whatever L and P are. With
/// host_lanes every sum runs in entry order.
/// @param p  260 probabilities, or null when prm.w_div = 0;  @param y  0..259, or −1 when
///           prm.w_ce = 0. On a bad input nothing is written and the status names the first bad
///           entry (logits are checked before targets).
template <class Lanes, class L, class P>
BLD_HOST_DEVICE slot_result slot_loss(const Lanes& lanes, const L* z, const P* p, int y, const slot_params& prm,
                                      double grad_scale, L* grad) {
    constexpr int n = static_cast<int>(alphabet_size);
    constexpr int W = Lanes::width;
    constexpr int E = per_lane<W>;
    const int lane = lanes.lane();
    const double inf = infinity();

    double zl[E];
    int bad = n;
    double zmax = -inf;
    for (int e = 0; e < E; ++e) {
        const int a = lane + e * W;
        zl[e] = 0.0;
        if (a < n) {
            zl[e] = static_cast<double>(z[a]);
            if (!is_finite(zl[e])) bad = min_int(bad, a);
            else zmax = max64(zmax, zl[e]);
        }
    }
    bad = lanes.min(bad);
    if (bad < n) return {0.0, slot_status::nonfinite_logit, bad};
    zmax = lanes.max(zmax);
    if (p != nullptr) {
        for (int e = 0; e < E; ++e) {
            const int a = lane + e * W;
            if (a < n) {
                const double v = static_cast<double>(p[a]);
                if (!(v >= 0.0) || !is_finite(v)) bad = min_int(bad, a);
            }
        }
        bad = lanes.min(bad);
        if (bad < n) return {0.0, slot_status::bad_target, bad};
    }

    const bool want_div = prm.w_div != 0.0;
    const bool want_ce = prm.w_ce != 0.0;
    const bool shared = prm.inv_temperature == 1.0;

    // log q at τ (divergence) and at τ = 1 (CE), max-shifted.
    double lq[E], lq1[E], q[E];
    double s = 0.0, s1 = 0.0;
    for (int e = 0; e < E; ++e) {
        const int a = lane + e * W;
        lq[e] = lq1[e] = 0.0;
        if (a < n) {
            const double d = zl[e] - zmax;
            lq[e] = d * prm.inv_temperature;
            s += exp64(lq[e]);
            if (want_ce && !shared) {
                lq1[e] = d;
                s1 += exp64(d);
            }
        }
    }
    const double lse = log64(lanes.sum(s));
    for (int e = 0; e < E; ++e) {
        lq[e] -= lse;
        q[e] = lane + e * W < n ? exp64(lq[e]) : 0.0;
    }
    if (want_ce && !shared) {
        const double lse1 = log64(lanes.sum(s1));
        for (int e = 0; e < E; ++e) lq1[e] -= lse1;
    }

    // The divergence and ∂D/∂u_a with u = z/τ.
    double gu[E];
    const double div = want_div ? divergence_terms(lanes, lq, q, p, prm, gu) : 0.0;
    if (!want_div)
        for (int e = 0; e < E; ++e) gu[e] = 0.0;

    // −log softmax(z)_y lives in lane y % W; a sum of zeros and that one value moves it exactly.
    double ce_part = 0.0;
    if (want_ce) {
        for (int e = 0; e < E; ++e)
            if (lane + e * W == y) ce_part = -(shared ? lq[e] : lq1[e]);
    }
    const double ce = want_ce ? lanes.sum(ce_part) : 0.0;
    const double value = prm.w_div * div + prm.w_ce * ce;

    if (grad != nullptr) {
        // ∂v/∂z_a = (w_div/τ) ∂D/∂u_a + w_ce (softmax(z)_a − [a = y]).
        const double gd = grad_scale * prm.w_div * prm.inv_temperature;
        const double gc = grad_scale * prm.w_ce;
        for (int e = 0; e < E; ++e) {
            const int a = lane + e * W;
            if (a < n) {
                double g = want_div ? gd * gu[e] : 0.0;
                if (want_ce) g += gc * ((shared ? q[e] : exp64(lq1[e])) - (a == y ? 1.0 : 0.0));
                grad[a] = static_cast<L>(g);
            }
        }
    }
    return {value, slot_status::ok, 0};
}

}  // namespace bld::math
