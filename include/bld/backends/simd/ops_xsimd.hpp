// bld/backends/simd/ops_xsimd.hpp — ops<sse2_arch> and ops<neon_arch>: the kernels' operations
// over xsimd::batch, once for both 4-lane baseline architectures.
//
// Included by bld/backends/simd/kernels.hpp. The interface is the one documented in
// bld/backends/simd/ops.hpp; this file implements it once, as xsimd_ops<A>, for A = xsimd::sse2
// (x86-64) and xsimd::neon64 (AArch64). Each is its architecture's baseline and needs no
// compiler flag, so there is no compile region: these functions are compiled for the
// translation unit's own target, like the scalar level. Where xsimd 8.1 has no operation (a
// horizontal maximum, float → double widening of half a register) a small helper below gives
// it, per architecture where it must.
//
// Numerics: exp_keep_nan is xsimd::exp (range reduction and polynomial, within a few ulp: far
// inside the row pass's 5e-7 for e^x, tests/test_simd.cpp), with the row pass's contract
// added: 0 below exp_constants::lowest (as every level), NaN for a NaN or +Inf argument.
// pd_exp / pd_log are xsimd::exp / xsimd::log on batch<double> (within about 1 ulp: the loss
// kernel's 1e-12 budget holds with room to spare).
// xsimd::max follows the instruction set on NaN (SSE: the second operand; NEON: NaN); the
// kernels never rely on either (a NaN is reported by the validation masks or by the sums).
#pragma once

#include "bld/backends/simd/arch.hpp"
#include "bld/backends/simd/ops.hpp"
#include "bld/core/tensor.hpp"

#if BLD_SIMD_SSE2 || BLD_SIMD_NEON

#include <xsimd/xsimd.hpp>

#include <cstddef>
#include <cstdint>
#include <limits>

#if BLD_SIMD_SSE2
static_assert(XSIMD_WITH_SSE2, "bld: xsimd does not see SSE2 on this x86-64 target");
#endif
#if BLD_SIMD_NEON
static_assert(XSIMD_WITH_NEON64, "bld: xsimd does not see NEON on this AArch64 target");
#endif

namespace bld::simd::detail {

/// Doubles of the low and high halves of a 4-float batch: xsimd 8.1 converts only between
/// batches of equal lane counts.
template <class A>
struct widen;

#if BLD_SIMD_SSE2
template <>
struct widen<xsimd::sse2> {
    static xsimd::batch<double, xsimd::sse2> lo(xsimd::batch<float, xsimd::sse2> v) noexcept { return _mm_cvtps_pd(v); }
    static xsimd::batch<double, xsimd::sse2> hi(xsimd::batch<float, xsimd::sse2> v) noexcept {
        return _mm_cvtps_pd(_mm_movehl_ps(v, v));
    }
};
#endif
#if BLD_SIMD_NEON
template <>
struct widen<xsimd::neon64> {
    static xsimd::batch<double, xsimd::neon64> lo(xsimd::batch<float, xsimd::neon64> v) noexcept {
        return vcvt_f64_f32(vget_low_f32(v));
    }
    static xsimd::batch<double, xsimd::neon64> hi(xsimd::batch<float, xsimd::neon64> v) noexcept {
        return vcvt_high_f64_f32(v);
    }
};
#endif

/// The ops interface (bld/backends/simd/ops.hpp) over xsimd batches of a 4-float architecture A.
template <class A>
struct xsimd_ops {
    using vf = xsimd::batch<float, A>;
    using dv = xsimd::batch<double, A>;
    using okmask = xsimd::batch_bool<float, A>;
    static constexpr std::size_t width = vf::size;
    static constexpr std::size_t dwidth = dv::size;
    static_assert(width == 4 && dwidth == 2,
                  "xsimd_ops serves the 128-bit architectures (4 floats, 2 doubles): transpose, "
                  "load_tile_part, keep and the accumulators are written for 4 lanes");
    /// W doubles (an accumulator of W float lanes): lanes 0–1 in lo, 2–3 in hi.
    struct vd {
        dv lo, hi;
    };

    static vf load(const float* p) noexcept { return vf::load_unaligned(p); }
    /// bf16 is the top half of a float: widened exactly by a 16-bit shift.
    static vf load(const bf16* p) noexcept {
        using vu = xsimd::batch<std::uint32_t, A>;
        alignas(16) std::uint32_t w[4];
        for (std::size_t i = 0; i < 4; ++i) w[i] = p[i].bits;
        return xsimd::bitwise_cast<vf>(vu::load_aligned(w) << 16);
    }
    /// f16 widened exactly in software (f16::widen): these targets have no conversion
    /// instruction that every CPU of the architecture runs.
    static vf load(const f16* p) noexcept {
        alignas(16) float w[4];
        for (std::size_t i = 0; i < 4; ++i) w[i] = f16::widen(p[i].bits);
        return vf::load_aligned(w);
    }
    static vf set1(float x) noexcept { return vf(x); }
    static vf neg_inf() noexcept { return vf(-std::numeric_limits<float>::infinity()); }
    static vf add(vf a, vf b) noexcept { return a + b; }
    static vf sub(vf a, vf b) noexcept { return a - b; }
    static vf mul(vf a, vf b) noexcept { return a * b; }
    static vf max(vf a, vf b) noexcept { return xsimd::max(a, b); }
    static void store(float* p, vf v) noexcept { v.store_unaligned(p); }
    static void store_stream(float* p, vf v) noexcept { v.store_aligned(p); }
    static void stream_fence() noexcept {}
    /// e^x for x ≤ 88; 0 below exp_constants::lowest and for −inf; NaN for NaN and +Inf (so the
    /// row-pass kernels find bad logits in their sums).
    static vf exp_keep_nan(vf x) noexcept {
        const vf e = xsimd::select(x <= vf(std::numeric_limits<float>::max()), xsimd::exp(x),
                                   vf(std::numeric_limits<float>::quiet_NaN()));
        return xsimd::select(x < vf(exp_constants::lowest), vf(0.0f), e);
    }
    static vf fmadd(vf a, vf b, vf c) noexcept { return xsimd::fma(a, b, c); }
    static vf log(vf x) noexcept { return xsimd::log(x); }

    // two double lanes (the loss kernel)
    static dv pd_load(const float* p) noexcept { return dv::load_unaligned(p); } // converts 2 floats
    static dv pd_load(const double* p) noexcept { return dv::load_unaligned(p); }
    static void pd_store(double* p, dv v) noexcept { v.store_unaligned(p); }
    static void pd_store(float* p, dv v) noexcept { v.store_unaligned(p); } // rounds 2 doubles
    static dv pd_min(dv a, dv b) noexcept { return xsimd::min(a, b); }
    static dv pd_set1(double x) noexcept { return dv(x); }
    static dv pd_add(dv a, dv b) noexcept { return a + b; }
    static dv pd_sub(dv a, dv b) noexcept { return a - b; }
    static dv pd_mul(dv a, dv b) noexcept { return a * b; }
    static dv pd_fma(dv a, dv b, dv c) noexcept { return xsimd::fma(a, b, c); }
    static dv pd_max(dv a, dv b) noexcept { return xsimd::max(a, b); }
    static double pd_hmin(dv v) noexcept {
        alignas(16) double t[2];
        v.store_aligned(t);
        return t[0] < t[1] ? t[0] : t[1];
    }
    static dv pd_exp(dv x) noexcept { return xsimd::exp(x); }
    static dv pd_log(dv x) noexcept { return xsimd::log(x); }
    static double pd_sum(dv v) noexcept {
        alignas(16) double t[2];
        v.store_aligned(t);
        return t[0] + t[1];
    }

    static okmask all_ok() noexcept { return okmask(true); }
    static okmask in_range(okmask ok, vf v, float lo, float hi) noexcept { return ok & (v >= vf(lo)) & (v <= vf(hi)); }
    static okmask ordered_finite(okmask ok, vf v) noexcept { return ok & (v <= vf(std::numeric_limits<float>::max())); }
    static okmask ok_and(okmask a, okmask b) noexcept { return a & b; }
    static bool ok(okmask m) noexcept { return xsimd::all(m); }
    /// The largest lane (xsimd 8.1 has no reduce_max).
    static float hmax(vf v) noexcept {
        alignas(16) float t[4];
        v.store_aligned(t);
        const float a = t[0] > t[1] ? t[0] : t[1], b = t[2] > t[3] ? t[2] : t[3];
        return a > b ? a : b;
    }
    /// v[i][j] ↔ v[j][i]: two rounds of interleaving (rows a b c d → a0 c0 a1 c1 … → a0 b0 c0 d0 …).
    static void transpose(vf (&v)[4]) noexcept {
        const vf t0 = xsimd::zip_lo(v[0], v[2]), t1 = xsimd::zip_hi(v[0], v[2]);
        const vf t2 = xsimd::zip_lo(v[1], v[3]), t3 = xsimd::zip_hi(v[1], v[3]);
        v[0] = xsimd::zip_lo(t0, t2);
        v[1] = xsimd::zip_hi(t0, t2);
        v[2] = xsimd::zip_lo(t1, t3);
        v[3] = xsimd::zip_hi(t1, t3);
    }
    static constexpr std::size_t lane_of(std::size_t r) noexcept { return r; }
    /// e[j] = ids i + j of the 4 rows (row r in lane r): 4 loads and a transpose.
    static constexpr std::size_t tile_part = 4;
    template <class Rows>
    static void load_tile_part(const Rows& row, std::size_t i, vf (&e)[4]) noexcept {
        for (std::size_t r = 0; r < 4; ++r) e[r] = load(row(r) + i);
        transpose(e);
    }
    /// Lanes [a, b) of v, zeros elsewhere.
    static vf keep(vf v, std::size_t a, std::size_t b) noexcept {
        alignas(16) static constexpr float lane[4] = {0.0f, 1.0f, 2.0f, 3.0f};
        const vf idx = vf::load_aligned(lane);
        return xsimd::select((idx >= vf(static_cast<float>(a))) & (idx < vf(static_cast<float>(b))), v, vf(0.0f));
    }

    static vd dzero() noexcept { return {dv(0.0), dv(0.0)}; }
    static vd dadd(vd d, vf v) noexcept { return {d.lo + widen<A>::lo(v), d.hi + widen<A>::hi(v)}; }
    static vd dscale(vd d, double f) noexcept { return {d.lo * dv(f), d.hi * dv(f)}; }
    static double dsum(vd d) noexcept {
        alignas(16) double t[4];
        d.lo.store_aligned(t);
        d.hi.store_aligned(t + 2);
        return ((t[0] + t[1]) + t[2]) + t[3];
    }
    static void accumulate(float* acc, vf v) noexcept { (vf::load_aligned(acc) + v).store_aligned(acc); }
    static void flush(double* d, float* f) noexcept {
        const vf v = vf::load_aligned(f);
        (dv::load_aligned(d) + widen<A>::lo(v)).store_aligned(d);
        (dv::load_aligned(d + 2) + widen<A>::hi(v)).store_aligned(d + 2);
        vf(0.0f).store_aligned(f);
    }
    static void rescale(float* f, double* d, const float* ff, const double* fd) noexcept {
        (vf::load_aligned(f) * vf::load_aligned(ff)).store_aligned(f);
        (dv::load_aligned(d) * dv::load_aligned(fd)).store_aligned(d);
        (dv::load_aligned(d + 2) * dv::load_aligned(fd + 2)).store_aligned(d + 2);
    }
    /// Reads [p, p + words) once (the memory-streaming baseline); returns a checksum.
    static std::uint32_t stream(const std::uint32_t* p, std::size_t words) noexcept {
        using vu = xsimd::batch<std::uint32_t, A>;
        vu a0(0u), a1(0u), a2(0u), a3(0u);
        std::size_t i = 0;
        for (; i + 16 <= words; i += 16) {
            a0 += vu::load_unaligned(p + i);
            a1 += vu::load_unaligned(p + i + 4);
            a2 += vu::load_unaligned(p + i + 8);
            a3 += vu::load_unaligned(p + i + 12);
        }
        alignas(16) std::uint32_t t[4];
        ((a0 + a1) + (a2 + a3)).store_aligned(t);
        std::uint32_t s = t[0] + t[1] + t[2] + t[3];
        for (; i < words; ++i) s += p[i];
        return s;
    }
};

#if BLD_SIMD_SSE2
template <>
struct ops<sse2_arch> : xsimd_ops<xsimd::sse2> {};
#endif
#if BLD_SIMD_NEON
template <>
struct ops<neon_arch> : xsimd_ops<xsimd::neon64> {};
#endif

} // namespace bld::simd::detail

#endif // BLD_SIMD_SSE2 || BLD_SIMD_NEON
