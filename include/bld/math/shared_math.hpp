// bld/math/shared_math.hpp — the math the CUDA kernels and the CPU share (style.md habit 7).
//
// Every function here is BLD_HOST_DEVICE: plain inline C++ under a host compiler, and
// `__host__ __device__` under nvcc. The kernels in bld/cuda/*.cuh are thin shells around these
// functions (loads, shuffles, block scans); the CPU tests (tests/test_shared_math.cpp) run the
// very same functions and hold them against the scalar reference (row_pass.hpp, loss.hpp,
// projection.hpp). `__CUDA_ARCH__` appears only inside function bodies, never around a
// declaration, so host and device see the same declarations (no ODR trap).
//
// What lives here:
//  * elementary functions that pick the device or the host implementation (exp64, log64, …),
//    bf16 → float;
//  * exp_diff: exp(z − m) in fp32 with the rounding error of z − m compensated (the row pass's
//    one transcendental per logit);
//  * (max, sum) pairs and their log-sum-exp combine; the lazily rescaled root bins of the
//    one-pass row kernel; the keyed (segmented) runs a thread hands to a block scan;
//  * the per-slot loss body and the canonical-path per-position body, written once against a
//    "lanes" policy: `host_lanes` (one lane does all 260 entries, sequentially — the scalar
//    reference's order) or `bld::cuda::warp_lanes` (32 lanes, shuffle reductions).
#pragma once

#include "bld/loss/byte_loss.hpp"
#include "bld/backends/reference/row_pass.hpp"
#include "bld/core/tensor.hpp"

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define BLD_HOST_DEVICE __host__ __device__
#else
#define BLD_HOST_DEVICE
#endif

namespace bld::math {

// ------------------------------------------------------------------------------------------
// Constants shared by the kernels and their host-side plans.

/// Root bins of a row summary: 256 first bytes and STOP.
inline constexpr int root_bins = 257;
/// Entries of a byte distribution (bytes, STOP, three reserved).
inline constexpr int alphabet = 260;
/// Threads per block of the row-pass and node-sum kernels.
inline constexpr int block_threads = 256;
/// Consecutive sorted positions each thread handles per chunk.
inline constexpr int thread_items = 8;
/// Columns of a row handled per chunk (block_threads × thread_items).
inline constexpr int chunk_columns = block_threads * thread_items;
/// The key of entries that belong to no bin (absent ids, padding past the vocabulary).
inline constexpr std::uint32_t ignored_key = 0xFFFFu;
/// A key no real entry has: the identity of the keyed scan.
inline constexpr std::uint32_t no_key = 0xFFFFFFFFu;

// ------------------------------------------------------------------------------------------
// Elementary functions.

BLD_HOST_DEVICE inline double infinity() noexcept { return __builtin_huge_val(); }
BLD_HOST_DEVICE inline float infinity_f() noexcept { return __builtin_huge_valf(); }

/// True for finite x (false for NaN and ±inf) without a library call: x − x is 0 only then.
BLD_HOST_DEVICE inline bool is_finite(double x) noexcept { return x - x == 0.0; }
/// A logit the row pass rejects: NaN or +inf (−inf is a token of probability 0).
BLD_HOST_DEVICE inline bool is_bad_logit(float z) noexcept { return !(z == z) || z == infinity_f(); }

BLD_HOST_DEVICE inline double exp64(double x) noexcept {
#if defined(__CUDA_ARCH__)
    return ::exp(x);
#else
    return std::exp(x);
#endif
}
BLD_HOST_DEVICE inline double log64(double x) noexcept {
#if defined(__CUDA_ARCH__)
    return ::log(x);
#else
    return std::log(x);
#endif
}
BLD_HOST_DEVICE inline float exp32(float x) noexcept {
#if defined(__CUDA_ARCH__)
    return ::expf(x);
#else
    return std::exp(x);
#endif
}
BLD_HOST_DEVICE inline float fma32(float a, float b, float c) noexcept {
#if defined(__CUDA_ARCH__)
    return ::fmaf(a, b, c);
#else
    return std::fma(a, b, c);
#endif
}
BLD_HOST_DEVICE inline double max64(double a, double b) noexcept { return a < b ? b : a; }
BLD_HOST_DEVICE inline float max32(float a, float b) noexcept { return a < b ? b : a; }
BLD_HOST_DEVICE inline int min_int(int a, int b) noexcept { return b < a ? b : a; }
BLD_HOST_DEVICE inline double abs64(double x) noexcept { return x < 0.0 ? -x : x; }

// ------------------------------------------------------------------------------------------
// Logit loads: float and bf16 rows (bf16 widens exactly).

/// The float whose upper 16 bits are `bits` (bf16 storage → float, exact).
BLD_HOST_DEVICE inline float bf16_to_float(std::uint16_t bits) noexcept {
#if defined(__CUDA_ARCH__)
    return __uint_as_float(static_cast<unsigned int>(bits) << 16);
#else
    const std::uint32_t u = static_cast<std::uint32_t>(bits) << 16;
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
#endif
}
BLD_HOST_DEVICE inline float logit_to_float(float z) noexcept { return z; }
BLD_HOST_DEVICE inline float logit_to_float(bf16 z) noexcept { return bf16_to_float(z.bits); }

/// exp(z − m) in fp32 with the rounding error of z − m compensated.
///
/// fp32 z − m is rounded to 24 bits, which costs exp a relative error of |z − m|·2⁻²⁴ (5e-6 at
/// 87 nats below the max). TwoSum recovers the exact remainder e of the subtraction and
/// exp(s + e) ≈ exp(s)·(1 + e): what is left is expf's own error (≤ 2 ulp on the device).
/// @pre m is finite; z is not NaN. z = −inf gives 0.
BLD_HOST_DEVICE inline float exp_diff(float z, float m) noexcept {
    const float s = z - m;
    if (!(s > -104.0f)) return 0.0f;  // below fp32's smallest subnormal, and z = −inf
    const float bp = s - z;           // TwoSum(z, −m): s + err == z − m exactly
    const float err = (z - (s - bp)) + (-m - bp);
    const float e = exp32(s);
    return fma32(e, err, e);
}

// ------------------------------------------------------------------------------------------
// (max, sum) pairs: Σ exp(z − max), combined by log-sum-exp.

/// exp(from − to), the factor that moves a sum in units of exp(from) to units of exp(to).
/// @pre to ≥ from or from = −inf; 0 for from = −inf, exactly 1 for from = to.
BLD_HOST_DEVICE inline double rescale_factor(double from, double to) noexcept {
    if (from == to) return 1.0;
    if (!(from > -infinity())) return 0.0;
    return exp64(from - to);
}

/// A partial softmax normaliser: Σ exp(z − max) over some logits (max = −inf, sum = 0: none).
struct max_sum {
    double max = -__builtin_huge_val();
    double sum = 0.0;
};

/// The pair of the union of two sets of logits: max of the maxes, sums rescaled to it.
BLD_HOST_DEVICE inline max_sum combine(max_sum a, max_sum b) noexcept {
    const double m = max64(a.max, b.max);
    if (!(m > -infinity())) return {m, 0.0};
    return {m, a.sum * rescale_factor(a.max, m) + b.sum * rescale_factor(b.max, m)};
}

/// One root bin of the one-pass row kernel: `acc` is in units of exp(bin_max); adding a segment
/// sum taken in units of exp(row_max) first moves acc to the current row max (lazy rescale:
/// only bins that receive mass pay the exp, and only when the running max moved).
BLD_HOST_DEVICE inline void add_to_bin(double& acc, float& bin_max, double segment_sum, float row_max) noexcept {
    if (bin_max != row_max) {
        acc *= rescale_factor(bin_max, row_max);
        bin_max = row_max;
    }
    acc += segment_sum;
}

/// Bin `a` of partials [count, 257] (each in units of exp(maxes[p])), combined in the fixed
/// order p = 0, 1, … into units of exp(row_max). row_max = max of maxes.
BLD_HOST_DEVICE inline double combine_bin(const double* maxes, const double* bins, int count, int a,
                                          double row_max) noexcept {
    double s = 0.0;
    for (int p = 0; p < count; ++p) s += bins[p * root_bins + a] * rescale_factor(maxes[p], row_max);
    return s;
}

/// Σ acc[0..257) in the scalar reference's order (bin 0 first); its log is the row's
/// log-normaliser and root[a] = acc[a] / it.
BLD_HOST_DEVICE inline double root_total(const double* acc) noexcept {
    double z = 0.0;
    for (int a = 0; a < root_bins; ++a) z += acc[a];
    return z;
}

// ------------------------------------------------------------------------------------------
// Keyed runs: a thread's consecutive sorted items, cut where the key changes, for a block scan.
//
// A block of threads owns consecutive positions of a sorted sequence (thread t: positions
// t·ITEMS … t·ITEMS + ITEMS − 1), each with a key (bin, child) that never decreases. The sum of
// each key's segment must land in acc[key] exactly once, in a fixed order (deterministic):
//  1. each thread cuts its items into runs (thread_runs); runs that start and end inside the
//     thread are complete and flushed at once;
//  2. an exclusive block scan of the threads' trailing runs with keyed_sum_op gives each thread
//     the sum of its first run's part in earlier threads (the carry);
//  3. finish_runs flushes the first run (with the carry) and the trailing run when the next
//     thread's first key differs — so each segment has one writer: the thread where it ends.

/// A running sum of one key's segment.
struct keyed_sum {
    std::uint32_t key = no_key;
    double sum = 0.0;
};

/// The scan operator: a run continues when the keys match. Associative on non-decreasing keys;
/// {no_key, 0} is its left identity (the scan's initial value).
struct keyed_sum_op {
    BLD_HOST_DEVICE keyed_sum operator()(const keyed_sum& a, const keyed_sum& b) const noexcept {
        return b.key == a.key ? keyed_sum{b.key, a.sum + b.sum} : b;
    }
};

/// A thread's runs after step 1.
struct thread_run_state {
    std::uint32_t first_key = no_key;
    double first_sum = 0.0;  ///< the first run (without carry)
    bool several = false;    ///< true when the items hold more than one run
    keyed_sum last;          ///< the trailing run: the thread's scan input
};

/// Step 1: cuts ITEMS (key, value) items into runs; flush(key, sum) receives the complete runs
/// strictly inside the thread. Items with key ignored_key are flushed like the others: the
/// caller's flush skips them.
template <int Items, class Flush>
BLD_HOST_DEVICE thread_run_state thread_runs(const std::uint32_t (&key)[Items], const double (&x)[Items],
                                             Flush&& flush) {
    thread_run_state st;
    st.first_key = key[0];
    double run = 0.0;
    for (int i = 0; i < Items; ++i) {
        run += x[i];
        if (i + 1 < Items && key[i + 1] != key[i]) {
            if (!st.several) {
                st.first_sum = run;
                st.several = true;
            } else {
                flush(key[i], run);
            }
            run = 0.0;
        }
    }
    st.last = keyed_sum{key[Items - 1], run};
    if (!st.several) st.first_sum = run;
    return st;
}

/// Step 3: with the carry from the exclusive scan and the key of the next thread's first item
/// (no_key for the last thread), flushes the runs this thread ends.
template <class Flush>
BLD_HOST_DEVICE void finish_runs(const thread_run_state& st, const keyed_sum& carry, std::uint32_t next_key,
                                 Flush&& flush) {
    const double first = (carry.key == st.first_key ? carry.sum : 0.0) + st.first_sum;
    if (st.several) {
        flush(st.first_key, first);
        if (next_key != st.last.key) flush(st.last.key, st.last.sum);
    } else if (next_key != st.first_key) {
        flush(st.first_key, first);
    }
}

/// Keys of a node's sorted positions for the node-sum kernel. `bounds` has nc + 2 entries:
/// bounds[0] = lo, bounds[1 + c] = child c's lo, bounds[nc + 1] = hi; position k ∈ [lo, hi) has
/// key 0 in the end segment [lo, end_hi) and 1 + c in child c's range. A thread owns Items
/// consecutive positions from `first` (key ignored_key past hi); the return value is its
/// block_keyed_accumulate next key: its last key if the position after its items (in the same
/// tile: `last_in_tile` false) continues that segment, else no_key.
template <int Items>
BLD_HOST_DEVICE std::uint32_t node_thread_keys(const std::uint32_t* bounds, std::uint32_t nc, std::uint32_t first,
                                               bool last_in_tile, std::uint32_t (&key)[Items]) {
    const std::uint32_t hi = bounds[nc + 1];
    // The segment of `first`: the number of child starts bounds[1..nc] that are ≤ first.
    std::uint32_t lo_i = 0, hi_i = nc;
    while (lo_i < hi_i) {
        const std::uint32_t mid = (lo_i + hi_i) / 2;
        if (bounds[1 + mid] <= first) lo_i = mid + 1;
        else hi_i = mid;
    }
    std::uint32_t s = lo_i;
    for (int i = 0; i < Items; ++i) {
        const std::uint32_t k = first + static_cast<std::uint32_t>(i);
        if (k < hi) {
            while (s < nc && bounds[s + 1] <= k) ++s;
            key[i] = s;
        } else {
            key[i] = ignored_key;
        }
    }
    const std::uint32_t p = first + static_cast<std::uint32_t>(Items);
    const std::uint32_t last = key[Items - 1];
    const bool same = !last_in_tile && last != ignored_key && p < hi && p < bounds[last + 1];
    return same ? last : no_key;
}

/// Row-plan entries: a chunk's column (0..chunk_columns) in the low 16 bits, the root bin
/// (0..256, or ignored_key) in the high 16.
BLD_HOST_DEVICE inline std::uint32_t plan_entry(std::uint32_t local_column, std::uint32_t bin) noexcept {
    return local_column | (bin << 16);
}
BLD_HOST_DEVICE inline std::uint32_t entry_column(std::uint32_t e) noexcept { return e & 0xFFFFu; }
BLD_HOST_DEVICE inline std::uint32_t entry_bin(std::uint32_t e) noexcept { return e >> 16; }

// ------------------------------------------------------------------------------------------
// Lanes: how a per-slot / per-position body spreads 260 entries over threads.
//
// A lanes policy has a compile-time `width`, `lane()` and the reductions sum / max (double)
// and min (int), which return the same value to every lane. Entry a belongs to lane a % width.

/// One lane does everything, in entry order: the reductions are the identity, so the sums are
/// taken in exactly the scalar reference's order.
struct host_lanes {
    static constexpr int width = 1;
    BLD_HOST_DEVICE int lane() const noexcept { return 0; }
    BLD_HOST_DEVICE double sum(double x) const noexcept { return x; }
    BLD_HOST_DEVICE double max(double x) const noexcept { return x; }
    BLD_HOST_DEVICE int min(int x) const noexcept { return x; }
};

/// Entries per lane for a policy of width W.
template <int Width>
inline constexpr int per_lane = (alphabet + Width - 1) / Width;

// ------------------------------------------------------------------------------------------
// Byte losses: one slot's value and gradient (mirrors detail::slot_loss_scalar in loss.hpp).

/// Everything the per-slot body needs besides the slot's data (see loss.hpp's conventions).
struct slot_params {
    double w_div = 0.0;        ///< weight of the divergence (0: targets not read)
    double w_ce = 0.0;         ///< weight of the byte CE (0: true byte not read)
    divergence kind = divergence::forward_kl;
    double inv_temperature = 1.0;
    double log_floor = 0.0;    ///< log ε of reverse KL
};

/// Status codes of a slot (and of the loss kernels' error word).
inline constexpr int slot_ok = 0;
inline constexpr int slot_nonfinite_logit = 1;
inline constexpr int slot_bad_target = 2;
inline constexpr int slot_bad_true_byte = 3;

struct slot_result {
    double value = 0.0;
    int status = slot_ok;
    int index = 0;  ///< the offending alphabet entry when status ≠ ok
};

/// One slot: v = w_div · D(p ‖ softmax(z/τ)) + w_ce · (−log softmax(z)_y), and, if grad is not
/// null, grad[a] = grad_scale · ∂v/∂z_a. The math, term by term, is loss.hpp's; with host_lanes
/// the sums run in the same order as detail::slot_loss_scalar.
/// @param p  260 probabilities, or null when prm.w_div = 0;  @param y  0..259, or −1 when
///           prm.w_ce = 0. On a bad input nothing is written and the status names the first bad
///           entry (logits are checked before targets, as in the scalar kernel).
template <class Lanes, class L, class P>
BLD_HOST_DEVICE slot_result slot_loss(const Lanes& lanes, const L* z, const P* p, int y, const slot_params& prm,
                                      double grad_scale, L* grad) {
    constexpr int n = alphabet;
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
    if (bad < n) return {0.0, slot_nonfinite_logit, bad};
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
        if (bad < n) return {0.0, slot_bad_target, bad};
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

    // The divergence and ∂D/∂u_a with u = z/τ (formulas in loss.hpp).
    double gu[E];
    double div = 0.0;
    for (int e = 0; e < E; ++e) gu[e] = 0.0;
    if (want_div) {
        if (prm.kind == divergence::forward_kl) {
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
            double r[E];
            for (int e = 0; e < E; ++e) {
                const int a = lane + e * W;
                r[e] = 0.0;
                if (a < n) {
                    const double pa = static_cast<double>(p[a]);
                    const double lp = pa > 0.0 ? max64(log64(pa), prm.log_floor) : prm.log_floor;
                    r[e] = lq[e] - lp;
                    div += q[e] * r[e];
                }
            }
            div = lanes.sum(div);
            for (int e = 0; e < E; ++e) gu[e] = q[e] * (r[e] - div);
        } else {  // jsd, tvd: ∂/∂u_a = q_a (c_a − Σ_b q_b c_b)
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
                            if (qa > 0.0) div += 0.5 * qa * (lq[e] - lm);
                            c[e] = 0.5 * (lq[e] - lm);
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
    }

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
    return {value, slot_ok, 0};
}

// ------------------------------------------------------------------------------------------
// Canonical path: one byte position from node sums and row summaries (projection.hpp §3.1).

/// What a byte position of the canonical path reads.
enum class position_kind : std::uint32_t {
    root = 0,      ///< byte 0: root of row 0
    inside = 1,    ///< inside token j: P(a) ∝ M_j(s·a)
    boundary = 2,  ///< end of token j: P(a) ∝ M_j(b(t_j)·a) + E_j(b(t_j)) · root_{j+1}(a)
    check = 3,     ///< the last token's own node: only the M > 0 check, nothing written
};

/// One position of the plan (kernel_plan.hpp builds them on the host).
struct canonical_position {
    position_kind kind = position_kind::root;
    std::uint32_t request = 0;       ///< node request of this position (not for root)
    std::uint32_t next_row = 0;      ///< root: 0; boundary: j + 1
    std::int32_t prev_request = -1;  ///< the node request of a boundary at i − 1, or −1
    std::uint32_t prev_next_row = 0; ///< that boundary's next row
    std::uint32_t prev_byte = 0;     ///< the byte observed at i − 1 (the next token's first byte)
};

/// Position status codes.
inline constexpr int position_ok = 0;
inline constexpr int position_zero_prefix = 1;  ///< M_j(s) = 0: the row gives the prefix no mass
inline constexpr int position_no_mass = 2;      ///< the numerator has no mass (normalise fails)

/// Node sums of a request (in units of exp(shift)): `child` has 256 entries.
struct node_sums_ref {
    double end = 0.0;
    const double* child = nullptr;
};

/// The share of the long-token hypothesis a boundary hands on (projection.hpp's carry_h):
/// other / (keep + other), keep = E · root_next[x], other = M(b(t_j)·x).
BLD_HOST_DEVICE inline double boundary_carry(const node_sums_ref& ns, const double* next_root, std::uint32_t x) noexcept {
    const double keep = ns.end * next_root[x];
    const double other = ns.child[x];
    return (keep + other) > 0.0 ? other / (keep + other) : 0.0;
}

/// One position: writes out[260] and *dropped, returns a position status. `row_root` is the root
/// of row `next_row` (root and boundary kinds), `ns` the node sums of the request, `carry` the
/// previous boundary's carry (0 if none). Sums in entry order with host_lanes (as the CPU).
template <class Lanes>
BLD_HOST_DEVICE int canonical_position_body(const Lanes& lanes, position_kind kind, const node_sums_ref& ns,
                                            const double* row_root, double carry, double* out, double* dropped) {
    constexpr int W = Lanes::width;
    constexpr int E = per_lane<W>;
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
        if (!(M > 0.0)) return position_zero_prefix;
        if (kind == position_kind::check) return position_ok;
    }
    double num[E];
    double z = 0.0;
    for (int e = 0; e < E; ++e) {
        const int a = lane + e * W;
        num[e] = 0.0;
        if (a < root_bins) {
            if (kind == position_kind::root) num[e] = row_root[a];
            else if (kind == position_kind::inside) num[e] = a < 256 ? ns.child[a] : 0.0;
            else num[e] = (a < 256 ? ns.child[a] : 0.0) + ns.end * row_root[a];
            z += num[e];
        }
    }
    z = lanes.sum(z);
    if (!(z > 0.0) || !is_finite(z)) return position_no_mass;
    for (int e = 0; e < E; ++e) {
        const int a = lane + e * W;
        if (a < alphabet) out[a] = a < root_bins ? num[e] / z : 0.0;
    }
    if (lane == 0) {
        if (kind == position_kind::inside) *dropped = 1.0 - (1.0 - carry) * (1.0 - ns.end / M);
        else if (kind == position_kind::boundary) *dropped = carry;
        else *dropped = 0.0;
    }
    return position_ok;
}

}  // namespace bld::math
