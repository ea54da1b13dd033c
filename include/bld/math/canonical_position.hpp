// bld/math/canonical_position.hpp — one byte position of the canonical path (docs/01_method.md, "Canonical path"):
// the specification.
//
// For byte i inside token j at depth d with s the bytes of t_j before i:
//     P(a) ∝ M_j(s·a)                                    (dropped: 1 − (1 − h)(1 − E_j(s)/M_j(s)))
// at a boundary (the end of token j, more tokens follow):
//     P(a) ∝ M_j(b(t_j)·a) + E_j(b(t_j)) · root_{j+1}(a) (dropped: h)
// and at byte 0 P = root_0; h is the share of the long-token hypothesis the previous boundary
// handed on (boundary_carry), 0 elsewhere. The CPU canonical path (bld/projection/
// canonical_path.hpp) runs canonical_position_body with host_lanes over the positions of a
// canonical_plan; the CUDA kernel runs it with one warp per position.
#pragma once

#include "bld/core/alphabet.hpp"
#include "bld/math/elementary.hpp"
#include "bld/math/lanes.hpp"

#include <cstdint>

namespace bld::math {

/// What a byte position of the canonical path reads.
enum class position_kind : std::uint32_t {
    root = 0,      ///< byte 0: root of row 0
    inside = 1,    ///< inside token j: P(a) ∝ M_j(s·a)
    boundary = 2,  ///< end of token j: P(a) ∝ M_j(b(t_j)·a) + E_j(b(t_j)) · root_{j+1}(a)
    check = 3,     ///< the last token's own node: only the M > 0 check, nothing written
};

/// What became of a position.
enum class position_status : std::uint8_t {
    ok = 0,
    zero_prefix = 1,  ///< M_j(s) = 0: the row gives the prefix no mass
    no_mass = 2,      ///< the numerator has no mass or is not finite (nothing to normalise)
};

/// Node sums of a request (in units of exp(shift)): `child` has 256 entries.
struct node_sums_ref {
    double end = 0.0;
    const double* child = nullptr;
};

/// The share of the long-token hypothesis a boundary hands on to the next position:
/// other / (keep + other), keep = E · root_next[x], other = M(b(t_j)·x).
BLD_HOST_DEVICE inline double boundary_carry(const node_sums_ref& ns, const double* next_root, std::uint32_t x) noexcept {
    const double keep = ns.end * next_root[x];
    const double other = ns.child[x];
    return (keep + other) > 0.0 ? other / (keep + other) : 0.0;
}

/// One position: writes out[260] and *dropped, returns its status (nothing is written unless
/// ok; a `check` position writes nothing). `row_root` is the root of the row that follows a
/// boundary (root: row 0; boundary at the end of token j: row j + 1; else unused), `ns` the node
/// sums of the position's node (unused for root), `carry` the previous boundary's carry (0 if
/// none). With host_lanes the sums run in entry order.
template <class Lanes>
BLD_HOST_DEVICE position_status canonical_position_body(const Lanes& lanes, position_kind kind, const node_sums_ref& ns,
                                            const double* row_root, double carry, double* out, double* dropped) {
    constexpr int W = Lanes::width;
    constexpr int E = per_lane<W>;
    constexpr int n = static_cast<int>(alphabet_size);
    constexpr int nb = static_cast<int>(root_bin_count);
    const int lane = lanes.lane();
    double M = 0.0;
    if (kind != position_kind::root) {
        // M = E + Σ children, children summed first (node_sums::total's order).
        double c = 0.0;
        for (int e = 0; e < E; ++e) {
            const int a = lane + e * W;
            if (a < 256) c += ns.child[a];
        }
        M = ns.end + lanes.sum(c);
        if (!(M > 0.0)) return position_status::zero_prefix;
        if (kind == position_kind::check) return position_status::ok;
    }
    double num[E];
    double z = 0.0;
    for (int e = 0; e < E; ++e) {
        const int a = lane + e * W;
        num[e] = 0.0;
        if (a < nb) {
            if (kind == position_kind::root) num[e] = row_root[a];
            else if (kind == position_kind::inside) num[e] = a < 256 ? ns.child[a] : 0.0;
            else num[e] = (a < 256 ? ns.child[a] : 0.0) + ns.end * row_root[a];
            z += num[e];
        }
    }
    z = lanes.sum(z);
    if (!(z > 0.0) || !is_finite(z)) return position_status::no_mass;
    for (int e = 0; e < E; ++e) {
        const int a = lane + e * W;
        if (a < n) out[a] = a < nb ? num[e] / z : 0.0;
    }
    if (lane == 0) {
        if (kind == position_kind::inside) *dropped = 1.0 - (1.0 - carry) * (1.0 - ns.end / M);
        else if (kind == position_kind::boundary) *dropped = carry;
        else *dropped = 0.0;
    }
    return position_status::ok;
}

}  // namespace bld::math
