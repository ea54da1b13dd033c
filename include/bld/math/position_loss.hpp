// bld/math/position_loss.hpp — the token-head loss at one text byte, value and gradient: the
// specification (docs/07_token_head.md).
//
// At text byte i the teacher's next-byte distribution is p (260 entries) and the student's,
// projected from its own token rows along its canonical path, is q (bld/projection/
// student_path.hpp). q is zero wherever the student's path cannot continue (inside a student
// token, bytes no student token with that prefix continues with), so D(p ‖ q) is defined on the
// support S = {a : q_a > 0}:
//     p̂ = p · 1_S / p(S),   q_τ ∝ q^{1/τ} on S,   value = D(p̂ ‖ q_τ)
// (D: forward KL, reverse KL with log ε for p̂ = 0, JSD, TVD — bld::math::divergence_terms, the
// byte loss's own copy). 1 − p(S) is the teacher's mass the student's path cannot express there:
// it is reported, not penalised. The gradient is taken w.r.t. log q_a (a ∈ S; 0 elsewhere).
#pragma once

#include "bld/core/alphabet.hpp"
#include "bld/math/elementary.hpp"
#include "bld/math/lanes.hpp"
#include "bld/math/slot_loss.hpp"

namespace bld::math {

/// What one position of the token-head loss gives.
struct position_loss_result {
    double value = 0.0;     ///< D(p̂ ‖ q_τ) (0 when p(S) = 0)
    double reachable = 0.0; ///< p(S), the teacher's mass on bytes the student's path can produce
    slot_status status = slot_status::ok;
    int index = 0;          ///< bad_target: the first bad entry
};

/// One text byte (see the top of this header): q, the student's projected distribution (260,
/// ≥ 0, summing to 1 over its support), p the teacher's (260). Writes g[a] = ∂value/∂log q_a
/// (0 outside S, and everywhere when p(S) = 0). prm.kind, prm.inv_temperature and
/// prm.log_floor are read; the weights are the caller's. Sums run in entry order.
template <class P>
BLD_HOST_DEVICE position_loss_result position_loss(const double* q, const P* p, const slot_params& prm, double* g) {
    constexpr int n = static_cast<int>(alphabet_size);
    position_loss_result r;
    for (int a = 0; a < n; ++a) {
        g[a] = 0.0;
        const double v = static_cast<double>(p[a]);
        if (!(v >= 0.0) || !is_finite(v)) {
            r.status = slot_status::bad_target;
            r.index = a;
            return r;
        }
    }
    double mass = 0.0, umax = -infinity();
    double u[n];
    for (int a = 0; a < n; ++a) {
        if (q[a] > 0.0) {
            mass += static_cast<double>(p[a]);
            u[a] = log64(q[a]) * prm.inv_temperature;
            umax = max64(umax, u[a]);
        } else {
            u[a] = -infinity();
        }
    }
    r.reachable = mass;
    if (!(mass > 0.0)) return r;
    double lq[n], qt[n], ph[n], gu[n];
    if (prm.inv_temperature == 1.0) {
        // τ = 1: q_τ = q / Σ q (Σ q = 1 up to rounding) — no exponentials needed.
        double s = 0.0;
        for (int a = 0; a < n; ++a) s += q[a] > 0.0 ? q[a] : 0.0;
        const double ls = log64(s);
        for (int a = 0; a < n; ++a) {
            const bool in = q[a] > 0.0;
            lq[a] = in ? u[a] - ls : -infinity();
            qt[a] = in ? q[a] / s : 0.0;
            ph[a] = in ? static_cast<double>(p[a]) / mass : 0.0;
        }
    } else {
        double s = 0.0;
        for (int a = 0; a < n; ++a)
            if (q[a] > 0.0) s += exp64(u[a] - umax);
        const double lse = umax + log64(s);
        for (int a = 0; a < n; ++a) {
            const bool in = q[a] > 0.0;
            lq[a] = in ? u[a] - lse : -infinity();
            qt[a] = in ? exp64(lq[a]) : 0.0;
            ph[a] = in ? static_cast<double>(p[a]) / mass : 0.0;
        }
    }
    r.value = divergence_terms(host_lanes{}, lq, qt, ph, prm, gu);
    for (int a = 0; a < n; ++a) g[a] = q[a] > 0.0 ? gu[a] * prm.inv_temperature : 0.0;
    return r;
}

}  // namespace bld::math
