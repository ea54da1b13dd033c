// bld/backends/simd/ops.hpp — the operations bld's kernels need, once per instruction set.
//
// `ops<Arch>` is specialized for scalar_arch (one lane, portable C++), avx2_arch (8 float lanes)
// and avx512_arch (16 lanes) here, and for sse2_arch / neon_arch (4 lanes, one implementation
// over xsimd::batch) in bld/backends/simd/ops_xsimd.hpp. The two x86 specializations here are
// defined inside their target compile regions (bld/backends/simd/arch.hpp), so their member
// functions are compiled for exactly that instruction set and can only be called from code
// compiled for it too (the kernels in bld/backends/simd/kernels.hpp). The interface, for
// W = ops<A>::width lanes:
//
//   vf                      W floats;   vd: W doubles (an accumulator)
//   load(const float*) / load(const bf16*) / load(const f16*)
//                                               W consecutive values (bf16 and f16 widened exactly)
//   set1, neg_inf, add, sub, mul, max, store
//   exp(x)                  (scalar, AVX2) e^x for x ≤ 88, 0 for x < −86.6, −inf and NaN;
//                           rel. error ≤ 4e-7
//   exp_keep_nan(x)         the row pass's e^x (≤ 5e-7; see below), NaN for NaN and +Inf
//   ordered_finite(ok, v)   ok && every lane of v is neither NaN nor +inf; ok_and, ok(mask)
//   in_range(ok, v, lo, hi) ok && lo ≤ v ≤ hi in every lane (false for NaN)
//   fmadd(a, b, c), log(x)  a·b + c;  log x for normal x > 0 (Cephes logf, ≤ 2 ulp)
//   dv, pd_*                dwidth doubles: load (from float or double), arithmetic, pd_exp
//                           (≤ 2.2e-13 relative), pd_log (normal x > 0, ≤ 1.2e-14 absolute),
//                           pd_sum — the loss kernel
//   hmax(v)                 the largest lane
//   transpose(vf (&v)[W])   v[i][j] ↔ v[j][i]
//   load_tile_part(row, i, e[tile_part]), lane_of(r)
//                           ids i … i + tile_part − 1 of W rows (row(r) their pointers), one
//                           vector per id, row r in lane lane_of(r): the tile kernel's transpose
//   keep(v, a, b)           lanes [a, b) of v, zeros elsewhere
//   vd: dzero, dadd(vd, vf) (widening), dscale(vd, double), dsum(vd) (a fixed order or tree of the lanes)
//   stream(const uint32_t*, n)  reads n words once, W lanes × 4 accumulators (the baseline)
//   accumulate(float* acc, vf) / flush(double* d, float* f) / rescale(float*, double*, factors)
//                           W-wide rows of the tile kernel's per-bin accumulators (aligned)
//
// exp is the classic range reduction e^x = 2^n · e^r, n = round(x·log2 e), r = x − n·ln 2
// (|r| ≤ ln2/2), then 2^n (n rounded by adding 1.5·2^23 and added into the exponent field),
// with a degree-5 polynomial for e^r fitted for relative error (max 1.7e-7 in
// float arithmetic, e^0 = 1 exactly); ln 2 is one float constant (one FMA, no Cody–Waite
// split), which adds |n|·1.9e-9: ≤ 4e-7 in all.
// exp_keep_nan on AVX-512 (which has no other float exp), the row-pass kernels' exponential, uses
// a finer reduction that is cheaper where it counts, the multiply-add pipes (the row pass is
// bound by them): k = round(32·x·log2 e), r = x − (k/32)·ln 2 (|r| ≤ ln2/64), 2^(k mod 32 / 32)
// from a 32-entry table (one two-source permute), e^r ≈ 1 + r(t1 + r/2) (max 5.7e-8), then
// vscalefps by k/32: 7 multiply-add-class operations instead of 9. The one-constant ln 2 adds
// |k/32|·1.9e-9 as above: ≤ 5e-7 relative in all (a Cody–Waite split would remove it for one
// more FMA on the pipes the row pass is bound by). exp_keep_nan also returns
// NaN for a NaN or +Inf argument (exp gives 0), so both row-pass kernels (the tile kernel and
// segment_sums) find bad logits in their sums instead of a separate check. On scalar and AVX2
// it is exp with that NaN rule added.
// Results below e^−86.6 are flushed to 0 rather than left subnormal: they are below 1e-38 of
// the row's largest term, far under every tolerance. The scalar target calls the C library's
// expf instead (it is the portable fallback).
#pragma once

#include "bld/backends/simd/arch.hpp"
#include "bld/core/tensor.hpp"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define BLD_SIMD_X86 1
#else
#define BLD_SIMD_X86 0
#endif

namespace bld::simd::detail {

/// Constants of the exp kernel (shared by every target).
struct exp_constants {
    static constexpr float log2e = 1.44269504088896341f;
    static constexpr float ln2 = 0.693147180559945309f;
    static constexpr float c1 = 0.9999997019767761f;
    static constexpr float c2 = 0.4999915063381195f;
    static constexpr float c3 = 0.1666763573884964f;
    static constexpr float c4 = 0.04189793020486832f;
    static constexpr float c5 = 0.008290314115583897f;
    static constexpr float lowest = -86.6f; ///< below: flushed to 0 (e^−86.6 ≈ 2.6e-38; n ≥ −125)
    static constexpr float round_magic = 12582912.0f; ///< 1.5·2^23: t + magic rounds t to an integer
    // The table-driven variant (AVX-512 exp_keep_nan, see above).
    static constexpr float t_scale = 46.16624130844683f; ///< 32·log2 e
    static constexpr float t1 = 1.00001526f;
    static constexpr float inv32 = 0.03125f;
    alignas(64) static constexpr float exp2_frac[32] = {
        1.000000000e+00f, 1.021897197e+00f, 1.044273734e+00f, 1.067140460e+00f,
        1.090507746e+00f, 1.114386797e+00f, 1.138788581e+00f, 1.163724899e+00f,
        1.189207077e+00f, 1.215247393e+00f, 1.241857767e+00f, 1.269050956e+00f,
        1.296839595e+00f, 1.325236678e+00f, 1.354255557e+00f, 1.383909941e+00f,
        1.414213538e+00f, 1.445180774e+00f, 1.476826191e+00f, 1.509164453e+00f,
        1.542210817e+00f, 1.575980902e+00f, 1.610490322e+00f, 1.645755529e+00f,
        1.681792855e+00f, 1.718619347e+00f, 1.756252170e+00f, 1.794709086e+00f,
        1.834008098e+00f, 1.874167681e+00f, 1.915206552e+00f, 1.957144141e+00f,
    };
};

/// Cephes' single-precision log: log(1 + f) = f − f²/2 + f³·P(f), m = 1 + f ∈ [√½, √2).
struct log_constants {
    static constexpr float p[9] = {7.0376836292E-2f, -1.1514610310E-1f, 1.1676998740E-1f, -1.2420140846E-1f,
                                   1.4249322787E-1f, -1.6668057665E-1f, 2.0000714765E-1f, -2.4999993993E-1f,
                                   3.3333331174E-1f};
    static constexpr float ln2_hi = 0.693359375f, ln2_lo = -2.12194440e-4f;
};

/// Double-precision exp and log for the loss kernel, to ~2e-13 relative / absolute: the loss's
/// contract is float and double inputs agreeing to 1e-12 (bld/loss/byte_loss.hpp), and a value error of
/// ε per term moves the loss by at most ε (Σ p ≤ 1, lse = log Σ e^u).
struct exp_pd_constants {
    static constexpr double log2e = 1.4426950408889634074;
    static constexpr double ln2_hi = 6.93147180369123816490e-01, ln2_lo = 1.90821492927058770002e-10;
    static constexpr double lowest = -708.0;            ///< below: 0
    static constexpr double round_magic = 6755399441055744.0; ///< 1.5·2^52
    /// 1/k!, k = 10 .. 2 (Horner from the top; e^r = 1 + r + r²·(…)), |r| ≤ ln2/2: Taylor
    /// remainder ≤ (ln2/2)^11/11! ≈ 2.2e-13
    static constexpr int exp_terms = 9;
    static constexpr double inv_fact[exp_terms] = {1.0 / 3628800.0, 1.0 / 362880.0, 1.0 / 40320.0,
                                                   1.0 / 5040.0,    1.0 / 720.0,    1.0 / 120.0,
                                                   1.0 / 24.0,      1.0 / 6.0,      0.5};
    /// 1/(2k+1), k = 7 .. 0: log m = 2s·Σ s^2k/(2k+1), s = (m−1)/(m+1), |s| ≤ 0.1716: remainder
    /// ≤ 2s·s^16/17·(1/(1 − s²)) ≈ 1.1e-14
    /// AVX-512 log: m ∈ [1, 2) split into 16 intervals by its top mantissa bits; rc[j] ≈ 1/c_j
    /// (c_j the interval's midpoint), lc[j] = −log rc[j] (of the rounded rc[j]), so that
    /// log m = lc[j] + log1p(m·rc[j] − 1) with |m·rc[j] − 1| ≤ 1/33: 8 series terms, ≤ 4e-15.
    static constexpr double log_rc[16] = {
        0.9696969696969697, 0.9142857142857143, 0.8648648648648649, 0.8205128205128205,
        0.7804878048780488, 0.7441860465116279, 0.7111111111111111, 0.6808510638297872,
        0.6530612244897959, 0.6274509803921569, 0.6037735849056604, 0.5818181818181818,
        0.5614035087719298, 0.5423728813559322, 0.5245901639344263, 0.5079365079365079};
    static constexpr double log_lc[16] = {
        0.03077165866675366, 0.08961215868968717, 0.14518200984449783, 0.19782574332991992,
        0.2478361639045812,  0.2954642128938359,  0.3409265869705932,  0.38441169891033206,
        0.42608439531090014, 0.46608972992459924, 0.5045560107523953,  0.5415972824327444,
        0.5773153650348236,  0.6118015411059929,  0.6451379613735847,  0.6773988235918061};
    /// log1p(u) = u·(1 − u/2 + u²/3 − …): coefficients from u^7/8 down (Horner)
    static constexpr double log1p_c[8] = {-1.0 / 8, 1.0 / 7, -1.0 / 6, 1.0 / 5, -1.0 / 4, 1.0 / 3, -1.0 / 2, 1.0};
    static constexpr int atanh_terms = 8;
    static constexpr double atanh_c[atanh_terms] = {1.0 / 15, 1.0 / 13, 1.0 / 11, 1.0 / 9,
                                                    1.0 / 7,  1.0 / 5,  1.0 / 3,  1.0};
};

template <class Arch>
struct ops;

// ------------------------------------------------------------------------------------------
// scalar: one lane, plain C++ (compiled for the baseline of the translation unit).

template <>
struct ops<scalar_arch> {
    static constexpr std::size_t width = 1;
    using vf = float;
    using vd = double;
    using okmask = bool;

    static vf load(const float* p) noexcept { return *p; }
    static vf load(const bf16* p) noexcept { return static_cast<float>(*p); }
    static vf load(const f16* p) noexcept { return static_cast<float>(*p); }
    static vf set1(float x) noexcept { return x; }
    static vf neg_inf() noexcept { return -std::numeric_limits<float>::infinity(); }
    static vf add(vf a, vf b) noexcept { return a + b; }
    static vf sub(vf a, vf b) noexcept { return a - b; }
    static vf mul(vf a, vf b) noexcept { return a * b; }
    static vf max(vf a, vf b) noexcept { return a > b ? a : b; }
    static void store(float* p, vf v) noexcept { *p = v; }
    /// A store that bypasses the caches where the target has one (p aligned to width floats).
    static void store_stream(float* p, vf v) noexcept { *p = v; }
    static void stream_fence() noexcept {}
    // The C library's expf (correctly rounded or nearly): this target is the portable fallback.
    static vf exp(vf x) noexcept { return x >= exp_constants::lowest ? std::exp(x) : 0.0f; }
    static vf exp_keep_nan(vf x) noexcept { return !(x < exp_constants::lowest) ? std::exp(x) : 0.0f; }
    static vf fmadd(vf a, vf b, vf c) noexcept { return a * b + c; }
    static vf log(vf x) noexcept { return std::log(x); }
    // one double lane (the loss kernel)
    static constexpr std::size_t dwidth = 1;
    using dv = double;
    static dv pd_load(const float* p) noexcept { return static_cast<double>(*p); }
    static dv pd_load(const double* p) noexcept { return *p; }
    static void pd_store(double* p, dv v) noexcept { *p = v; }
    static void pd_store(float* p, dv v) noexcept { *p = static_cast<float>(v); }
    static dv pd_min(dv a, dv b) noexcept { return a < b ? a : b; }
    static dv pd_set1(double x) noexcept { return x; }
    static dv pd_add(dv a, dv b) noexcept { return a + b; }
    static dv pd_sub(dv a, dv b) noexcept { return a - b; }
    static dv pd_mul(dv a, dv b) noexcept { return a * b; }
    static dv pd_fma(dv a, dv b, dv c) noexcept { return a * b + c; }
    static dv pd_max(dv a, dv b) noexcept { return a > b ? a : b; }
    static double pd_hmin(dv v) noexcept { return v; }
    static dv pd_exp(dv x) noexcept { return std::exp(x); }
    static dv pd_log(dv x) noexcept { return std::log(x); }
    static double pd_sum(dv v) noexcept { return v; }
    static okmask all_ok() noexcept { return true; }
    static okmask in_range(okmask ok, vf v, float lo, float hi) noexcept { return ok && v >= lo && v <= hi; }
    static okmask ordered_finite(okmask ok, vf v) noexcept { return ok && v <= std::numeric_limits<float>::max(); }
    static okmask ok_and(okmask a, okmask b) noexcept { return a && b; }
    static bool ok(okmask m) noexcept { return m; }
    static float hmax(vf v) noexcept { return v; }
    static void transpose(vf (&)[1]) noexcept {}
    static constexpr std::size_t lane_of(std::size_t r) noexcept { return r; }
    static constexpr std::size_t tile_part = 1;
    template <class Rows>
    static void load_tile_part(const Rows& row, std::size_t i, vf (&e)[1]) noexcept { e[0] = load(row(0) + i); }
    static vf keep(vf v, std::size_t a, std::size_t b) noexcept { return a == 0 && b >= 1 ? v : 0.0f; }
    static vd dzero() noexcept { return 0.0; }
    static vd dadd(vd d, vf v) noexcept { return d + static_cast<double>(v); }
    static vd dscale(vd d, double f) noexcept { return d * f; }
    static double dsum(vd d) noexcept { return d; }
    static void accumulate(float* acc, vf v) noexcept { *acc += v; }
    static void flush(double* d, float* f) noexcept {
        *d += static_cast<double>(*f);
        *f = 0.0f;
    }
    static void rescale(float* f, double* d, const float* ff, const double* fd) noexcept {
        *f *= *ff;
        *d *= *fd;
    }
    /// Reads [p, p + words) once (the memory-streaming baseline); returns a checksum.
    static std::uint32_t stream(const std::uint32_t* p, std::size_t words) noexcept {
        std::uint32_t a[4] = {0, 0, 0, 0};
        std::size_t i = 0;
        for (; i + 4 <= words; i += 4)
            for (std::size_t j = 0; j < 4; ++j) a[j] += p[i + j];
        for (; i < words; ++i) a[0] += p[i];
        return a[0] ^ a[1] ^ a[2] ^ a[3];
    }
};

} // namespace bld::simd::detail

#if BLD_SIMD_X86

// ------------------------------------------------------------------------------------------
// AVX2 + FMA: 8 lanes.
BLD_SIMD_BEGIN_TARGET(BLD_SIMD_AVX2_TARGETS)
namespace bld::simd::detail {

template <>
struct ops<avx2_arch> {
    static constexpr std::size_t width = 8;
    using vf = __m256;
    struct vd {
        __m256d lo, hi;
    };
    using okmask = __m256;

    static vf load(const float* p) noexcept { return _mm256_loadu_ps(p); }
    static vf load(const bf16* p) noexcept {
        const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
        return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    }
    /// f16 widened exactly by F16C (part of this target).
    static vf load(const f16* p) noexcept { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
    static vf set1(float x) noexcept { return _mm256_set1_ps(x); }
    static vf neg_inf() noexcept { return _mm256_set1_ps(-std::numeric_limits<float>::infinity()); }
    static vf add(vf a, vf b) noexcept { return _mm256_add_ps(a, b); }
    static vf sub(vf a, vf b) noexcept { return _mm256_sub_ps(a, b); }
    static vf mul(vf a, vf b) noexcept { return _mm256_mul_ps(a, b); }
    static vf max(vf a, vf b) noexcept { return _mm256_max_ps(a, b); }
    static void store(float* p, vf v) noexcept { _mm256_storeu_ps(p, v); }
    static void store_stream(float* p, vf v) noexcept { _mm256_stream_ps(p, v); }
    static void stream_fence() noexcept { _mm_sfence(); }
    static vf exp(vf x) noexcept {
        using c = exp_constants;
        // n = round(x·log2 e) by the 1.5·2^23 trick: the low mantissa bits of t then hold n.
        const vf t = _mm256_fmadd_ps(x, set1(c::log2e), set1(c::round_magic));
        const vf n = _mm256_sub_ps(t, set1(c::round_magic));
        const vf r = _mm256_fnmadd_ps(n, set1(c::ln2), x);
        vf q = _mm256_fmadd_ps(set1(c::c5), r, set1(c::c4));
        q = _mm256_fmadd_ps(q, r, set1(c::c3));
        q = _mm256_fmadd_ps(q, r, set1(c::c2));
        q = _mm256_fmadd_ps(q, r, set1(c::c1));
        const vf p = _mm256_fmadd_ps(q, r, set1(1.0f));
        // 2^n: n << 23 added to p's exponent field (n ≥ −125 wherever the result is kept).
        const __m256i e = _mm256_slli_epi32(_mm256_castps_si256(t), 23);
        const vf y = _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(p), e));
        return _mm256_and_ps(y, _mm256_cmp_ps(x, set1(c::lowest), _CMP_GE_OQ));
    }
    /// exp, but NaN (and +Inf) arguments give NaN: the tile kernel finds them in its sums.
    static vf exp_keep_nan(vf x) noexcept { return _mm256_or_ps(exp(x), _mm256_cmp_ps(x, x, _CMP_UNORD_Q)); }
    static vf fmadd(vf a, vf b, vf c) noexcept { return _mm256_fmadd_ps(a, b, c); }
    // four double lanes (the loss kernel)
    static constexpr std::size_t dwidth = 4;
    using dv = __m256d;
    static dv pd_load(const float* p) noexcept { return _mm256_cvtps_pd(_mm_loadu_ps(p)); }
    static dv pd_load(const double* p) noexcept { return _mm256_loadu_pd(p); }
    static void pd_store(double* p, dv v) noexcept { _mm256_storeu_pd(p, v); }
    static void pd_store(float* p, dv v) noexcept { _mm_storeu_ps(p, _mm256_cvtpd_ps(v)); }
    static dv pd_min(dv a, dv b) noexcept { return _mm256_min_pd(a, b); }
    static dv pd_set1(double x) noexcept { return _mm256_set1_pd(x); }
    static dv pd_add(dv a, dv b) noexcept { return _mm256_add_pd(a, b); }
    static dv pd_sub(dv a, dv b) noexcept { return _mm256_sub_pd(a, b); }
    static dv pd_mul(dv a, dv b) noexcept { return _mm256_mul_pd(a, b); }
    static dv pd_fma(dv a, dv b, dv c) noexcept { return _mm256_fmadd_pd(a, b, c); }
    static dv pd_max(dv a, dv b) noexcept { return _mm256_max_pd(a, b); }
    static double pd_hmin(dv v) noexcept {
        alignas(32) double t[4];
        _mm256_store_pd(t, v);
        return std::min(std::min(t[0], t[1]), std::min(t[2], t[3]));
    }
    static dv pd_exp(dv x) noexcept {
        using c = exp_pd_constants;
        const dv t = _mm256_fmadd_pd(x, pd_set1(c::log2e), pd_set1(c::round_magic));
        const dv n = _mm256_sub_pd(t, pd_set1(c::round_magic));
        dv r = _mm256_fnmadd_pd(n, pd_set1(c::ln2_hi), x);
        r = _mm256_fnmadd_pd(n, pd_set1(c::ln2_lo), r);
        dv q = pd_set1(c::inv_fact[0]);
        for (int k = 1; k < c::exp_terms; ++k) q = _mm256_fmadd_pd(q, r, pd_set1(c::inv_fact[k]));
        const dv y = _mm256_fmadd_pd(_mm256_mul_pd(q, r), r, _mm256_add_pd(r, pd_set1(1.0)));
        const __m256i e = _mm256_slli_epi64(_mm256_castpd_si256(t), 52);
        const dv res = _mm256_castsi256_pd(_mm256_add_epi64(_mm256_castpd_si256(y), e));
        return _mm256_and_pd(res, _mm256_cmp_pd(x, pd_set1(c::lowest), _CMP_GE_OQ));
    }
    /// log x for normal x > 0.
    static dv pd_log(dv x) noexcept {
        using c = exp_pd_constants;
        const __m256i bits = _mm256_castpd_si256(x);
        const __m256i eb = _mm256_srli_epi64(bits, 52); // biased exponent (sign 0)
        dv m = _mm256_castsi256_pd(_mm256_or_si256(_mm256_and_si256(bits, _mm256_set1_epi64x(0x000FFFFFFFFFFFFFll)),
                                                   _mm256_set1_epi64x(0x3FF0000000000000ll)));
        // exponent as a double: eb + 1.5·2^52 in the mantissa bits, minus the magic and the bias
        dv e = _mm256_sub_pd(_mm256_castsi256_pd(_mm256_add_epi64(eb, _mm256_castpd_si256(pd_set1(c::round_magic)))),
                             pd_set1(c::round_magic + 1023.0));
        const dv big = _mm256_cmp_pd(m, pd_set1(1.4142135623730951), _CMP_GT_OQ);
        m = _mm256_blendv_pd(m, _mm256_mul_pd(m, pd_set1(0.5)), big);
        e = _mm256_add_pd(e, _mm256_and_pd(big, pd_set1(1.0)));
        const dv sv = _mm256_div_pd(_mm256_sub_pd(m, pd_set1(1.0)), _mm256_add_pd(m, pd_set1(1.0)));
        const dv z = _mm256_mul_pd(sv, sv);
        dv q = pd_set1(c::atanh_c[0]);
        for (int k = 1; k < c::atanh_terms; ++k) q = _mm256_fmadd_pd(q, z, pd_set1(c::atanh_c[k]));
        const dv lm = _mm256_mul_pd(_mm256_add_pd(sv, sv), q);
        return _mm256_fmadd_pd(e, pd_set1(c::ln2_hi), _mm256_fmadd_pd(e, pd_set1(c::ln2_lo), lm));
    }
    static double pd_sum(dv v) noexcept {
        alignas(32) double t[4];
        _mm256_store_pd(t, v);
        return (t[0] + t[1]) + (t[2] + t[3]);
    }
    /// log x for normal x > 0 (callers clamp at FLT_MIN); ≤ 2 ulp.
    static vf log(vf x) noexcept {
        using c = log_constants;
        const __m256i bits = _mm256_castps_si256(x);
        __m256i e = _mm256_sub_epi32(_mm256_srli_epi32(bits, 23), _mm256_set1_epi32(127));
        vf m = _mm256_castsi256_ps(_mm256_or_si256(_mm256_and_si256(bits, _mm256_set1_epi32(0x007FFFFF)),
                                                   _mm256_set1_epi32(0x3F800000)));
        const vf big = _mm256_cmp_ps(m, set1(1.41421356f), _CMP_GT_OQ);
        m = _mm256_blendv_ps(m, _mm256_mul_ps(m, set1(0.5f)), big);
        e = _mm256_sub_epi32(e, _mm256_castps_si256(big)); // all-ones lanes: e + 1
        const vf f = _mm256_sub_ps(m, set1(1.0f));
        const vf ef = _mm256_cvtepi32_ps(e);
        vf q = set1(c::p[0]);
        for (int k = 1; k < 9; ++k) q = _mm256_fmadd_ps(q, f, set1(c::p[k]));
        const vf z = _mm256_mul_ps(f, f);
        vf y = _mm256_mul_ps(_mm256_mul_ps(q, f), z);
        y = _mm256_fmadd_ps(ef, set1(c::ln2_lo), y);
        y = _mm256_fnmadd_ps(z, set1(0.5f), y);
        return _mm256_fmadd_ps(ef, set1(c::ln2_hi), _mm256_add_ps(f, y));
    }
    static okmask all_ok() noexcept { return _mm256_castsi256_ps(_mm256_set1_epi32(-1)); }
    static okmask in_range(okmask ok, vf v, float lo, float hi) noexcept {
        return _mm256_and_ps(ok, _mm256_and_ps(_mm256_cmp_ps(v, set1(lo), _CMP_GE_OQ), _mm256_cmp_ps(v, set1(hi), _CMP_LE_OQ)));
    }
    static okmask ordered_finite(okmask ok, vf v) noexcept {
        return _mm256_and_ps(ok, _mm256_cmp_ps(v, set1(std::numeric_limits<float>::max()), _CMP_LE_OQ));
    }
    static okmask ok_and(okmask a, okmask b) noexcept { return _mm256_and_ps(a, b); }
    static bool ok(okmask m) noexcept { return _mm256_movemask_ps(m) == 0xFF; }
    static float hmax(vf v) noexcept {
        __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
        return _mm_cvtss_f32(m);
    }
    static void transpose(vf (&v)[8]) noexcept {
        vf t[8];
        for (int i = 0; i < 8; i += 2) {
            t[i] = _mm256_unpacklo_ps(v[i], v[i + 1]);
            t[i + 1] = _mm256_unpackhi_ps(v[i], v[i + 1]);
        }
        for (int i = 0; i < 8; i += 4) {
            v[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
            v[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
            v[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
            v[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
        }
        for (int i = 0; i < 4; ++i) {
            t[i] = _mm256_permute2f128_ps(v[i], v[i + 4], 0x20);
            t[i + 4] = _mm256_permute2f128_ps(v[i], v[i + 4], 0x31);
        }
        for (int i = 0; i < 8; ++i) v[i] = t[i];
    }
    static constexpr std::size_t lane_of(std::size_t r) noexcept { return r; }
    /// e[j] = ids i + j of the 8 rows (row r in lane r): 8 loads and a transpose.
    static constexpr std::size_t tile_part = 8;
    template <class Rows>
    static void load_tile_part(const Rows& row, std::size_t i, vf (&e)[8]) noexcept {
        for (std::size_t r = 0; r < 8; ++r) e[r] = load(row(r) + i);
        transpose(e);
    }
    static vf keep(vf v, std::size_t a, std::size_t b) noexcept {
        const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        const __m256i lo = _mm256_set1_epi32(static_cast<int>(a) - 1), hi = _mm256_set1_epi32(static_cast<int>(b));
        const __m256i m = _mm256_and_si256(_mm256_cmpgt_epi32(idx, lo), _mm256_cmpgt_epi32(hi, idx));
        return _mm256_and_ps(v, _mm256_castsi256_ps(m));
    }
    static vd dzero() noexcept { return {_mm256_setzero_pd(), _mm256_setzero_pd()}; }
    static vd dadd(vd d, vf v) noexcept {
        return {_mm256_add_pd(d.lo, _mm256_cvtps_pd(_mm256_castps256_ps128(v))),
                _mm256_add_pd(d.hi, _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)))};
    }
    static vd dscale(vd d, double f) noexcept {
        const __m256d s = _mm256_set1_pd(f);
        return {_mm256_mul_pd(d.lo, s), _mm256_mul_pd(d.hi, s)};
    }
    static double dsum(vd d) noexcept {
        // A fixed tree (8 → 4 → 2 → 1), as on AVX-512.
        const __m256d a = _mm256_add_pd(d.lo, d.hi);
        const __m128d c = _mm_add_pd(_mm256_castpd256_pd128(a), _mm256_extractf128_pd(a, 1));
        return _mm_cvtsd_f64(_mm_add_sd(c, _mm_unpackhi_pd(c, c)));
    }
    static void accumulate(float* acc, vf v) noexcept { _mm256_store_ps(acc, _mm256_add_ps(_mm256_load_ps(acc), v)); }
    static void flush(double* d, float* f) noexcept {
        const vf v = _mm256_load_ps(f);
        _mm256_store_pd(d, _mm256_add_pd(_mm256_load_pd(d), _mm256_cvtps_pd(_mm256_castps256_ps128(v))));
        _mm256_store_pd(d + 4, _mm256_add_pd(_mm256_load_pd(d + 4), _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1))));
        _mm256_store_ps(f, _mm256_setzero_ps());
    }
    static void rescale(float* f, double* d, const float* ff, const double* fd) noexcept {
        _mm256_store_ps(f, _mm256_mul_ps(_mm256_load_ps(f), _mm256_load_ps(ff)));
        _mm256_store_pd(d, _mm256_mul_pd(_mm256_load_pd(d), _mm256_load_pd(fd)));
        _mm256_store_pd(d + 4, _mm256_mul_pd(_mm256_load_pd(d + 4), _mm256_load_pd(fd + 4)));
    }
    static std::uint32_t stream(const std::uint32_t* p, std::size_t words) noexcept {
        __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
        std::size_t i = 0;
        for (; i + 32 <= words; i += 32) {
            a0 = _mm256_add_epi32(a0, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i)));
            a1 = _mm256_add_epi32(a1, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i + 8)));
            a2 = _mm256_add_epi32(a2, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i + 16)));
            a3 = _mm256_add_epi32(a3, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i + 24)));
        }
        alignas(32) std::uint32_t t[8];
        _mm256_store_si256(reinterpret_cast<__m256i*>(t), _mm256_add_epi32(_mm256_add_epi32(a0, a1), _mm256_add_epi32(a2, a3)));
        std::uint32_t s = 0;
        for (auto v : t) s += v;
        for (; i < words; ++i) s += p[i];
        return s;
    }
};

} // namespace bld::simd::detail
BLD_SIMD_END_TARGET()

// ------------------------------------------------------------------------------------------
// AVX-512 F/BW/DQ/VL: 16 lanes.
BLD_SIMD_BEGIN_TARGET(BLD_SIMD_AVX512_TARGETS)
namespace bld::simd::detail {

template <>
struct ops<avx512_arch> {
    static constexpr std::size_t width = 16;
    using vf = __m512;
    struct vd {
        __m512d lo, hi;
    };
    using okmask = __mmask16;

    static vf load(const float* p) noexcept { return _mm512_loadu_ps(p); }
    static vf load(const bf16* p) noexcept {
        const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
        return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    }
    static vf load(const f16* p) noexcept {
        // (masked form: _mm512_cvtph_ps's undefined passthrough trips GCC 12's -Wuninitialized)
        return _mm512_maskz_cvtph_ps(0xFFFF, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    }
    static vf set1(float x) noexcept { return _mm512_set1_ps(x); }
    static vf neg_inf() noexcept { return _mm512_set1_ps(-std::numeric_limits<float>::infinity()); }
    static vf add(vf a, vf b) noexcept { return _mm512_add_ps(a, b); }
    static vf sub(vf a, vf b) noexcept { return _mm512_sub_ps(a, b); }
    static vf mul(vf a, vf b) noexcept { return _mm512_mul_ps(a, b); }
    // (masked form: GCC 12 warns -Wmaybe-uninitialized on _mm512_max_ps's undefined passthrough)
    static vf max(vf a, vf b) noexcept { return _mm512_mask_max_ps(a, 0xFFFF, a, b); }
    static void store(float* p, vf v) noexcept { _mm512_storeu_ps(p, v); }
    static void store_stream(float* p, vf v) noexcept { _mm512_stream_ps(p, v); }
    static void stream_fence() noexcept { _mm_sfence(); }
    /// exp, but NaN (and +Inf) arguments give NaN: the tile kernel finds them in its sums. The
    /// table-driven form (exp_constants::exp2_frac), relative error ≤ 5e-7.
    static vf exp_keep_nan(vf x) noexcept {
        using c = exp_constants;
        const vf t = _mm512_fmadd_ps(x, set1(c::t_scale), set1(c::round_magic)); // low 5 bits: k mod 32
        const vf k32 = _mm512_fmsub_ps(t, set1(c::inv32), set1(c::round_magic * c::inv32)); // k/32, exact
        const vf r = _mm512_fnmadd_ps(k32, set1(c::ln2), x);
        const vf p = _mm512_fmadd_ps(_mm512_fmadd_ps(r, set1(0.5f), set1(c::t1)), r, set1(1.0f));
        const vf f = _mm512_permutex2var_ps(_mm512_load_ps(c::exp2_frac), _mm512_castps_si512(t), _mm512_load_ps(c::exp2_frac + 16));
        const __mmask16 keep = _mm512_cmp_ps_mask(x, set1(c::lowest), _CMP_NLT_UQ);
        return _mm512_maskz_scalef_ps(keep, _mm512_mul_ps(p, f), k32); // · 2^floor(k/32)
    }
    static vf fmadd(vf a, vf b, vf c) noexcept { return _mm512_fmadd_ps(a, b, c); }
    // eight double lanes (the loss kernel)
    static constexpr std::size_t dwidth = 8;
    using dv = __m512d;
    static dv pd_load(const float* p) noexcept { return _mm512_cvtps_pd(_mm256_loadu_ps(p)); }
    static dv pd_load(const double* p) noexcept { return _mm512_loadu_pd(p); }
    static void pd_store(double* p, dv v) noexcept { _mm512_storeu_pd(p, v); }
    static void pd_store(float* p, dv v) noexcept { _mm256_storeu_ps(p, _mm512_cvtpd_ps(v)); }
    static dv pd_min(dv a, dv b) noexcept { return _mm512_mask_min_pd(a, 0xFF, a, b); }
    static dv pd_set1(double x) noexcept { return _mm512_set1_pd(x); }
    static dv pd_add(dv a, dv b) noexcept { return _mm512_add_pd(a, b); }
    static dv pd_sub(dv a, dv b) noexcept { return _mm512_sub_pd(a, b); }
    static dv pd_mul(dv a, dv b) noexcept { return _mm512_mul_pd(a, b); }
    static dv pd_fma(dv a, dv b, dv c) noexcept { return _mm512_fmadd_pd(a, b, c); }
    static dv pd_max(dv a, dv b) noexcept { return _mm512_mask_max_pd(a, 0xFF, a, b); }
    static double pd_hmin(dv v) noexcept {
        alignas(64) double t[8];
        _mm512_store_pd(t, v);
        double m = t[0];
        for (double x : t) m = std::min(m, x);
        return m;
    }
    static dv pd_exp(dv x) noexcept {
        using c = exp_pd_constants;
        const dv n = _mm512_roundscale_pd(_mm512_mul_pd(x, pd_set1(c::log2e)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        dv r = _mm512_fnmadd_pd(n, pd_set1(c::ln2_hi), x);
        r = _mm512_fnmadd_pd(n, pd_set1(c::ln2_lo), r);
        dv q = pd_set1(c::inv_fact[0]);
        for (int k = 1; k < c::exp_terms; ++k) q = _mm512_fmadd_pd(q, r, pd_set1(c::inv_fact[k]));
        const dv y = _mm512_fmadd_pd(_mm512_mul_pd(q, r), r, _mm512_add_pd(r, pd_set1(1.0)));
        const __mmask8 keep = _mm512_cmp_pd_mask(x, pd_set1(c::lowest), _CMP_GE_OQ);
        return _mm512_maskz_scalef_pd(keep, y, n);
    }
    /// log x for normal x > 0: x = m·2^e (getmant / getexp), a 16-entry table, a short series.
    static dv pd_log(dv x) noexcept {
        using c = exp_pd_constants;
        const dv m = _mm512_getmant_pd(x, _MM_MANT_NORM_1_2, _MM_MANT_SIGN_src);
        const dv e = _mm512_getexp_pd(x);
        const __m512i j = _mm512_and_si512(_mm512_srli_epi64(_mm512_castpd_si512(m), 48), _mm512_set1_epi64(15));
        const dv rc = _mm512_permutex2var_pd(_mm512_loadu_pd(c::log_rc), j, _mm512_loadu_pd(c::log_rc + 8));
        const dv lc = _mm512_permutex2var_pd(_mm512_loadu_pd(c::log_lc), j, _mm512_loadu_pd(c::log_lc + 8));
        const dv u = _mm512_fmadd_pd(m, rc, pd_set1(-1.0));
        dv q = pd_set1(c::log1p_c[0]);
        for (int k = 1; k < 8; ++k) q = _mm512_fmadd_pd(q, u, pd_set1(c::log1p_c[k]));
        const dv l = _mm512_fmadd_pd(u, q, lc);
        return _mm512_fmadd_pd(e, pd_set1(c::ln2_hi), _mm512_fmadd_pd(e, pd_set1(c::ln2_lo), l));
    }
    static double pd_sum(dv v) noexcept {
        alignas(64) double t[8];
        _mm512_store_pd(t, v);
        return ((t[0] + t[1]) + (t[2] + t[3])) + ((t[4] + t[5]) + (t[6] + t[7]));
    }
    /// log x for normal x > 0 (callers clamp at FLT_MIN); ≤ 2 ulp.
    static vf log(vf x) noexcept {
        using c = log_constants;
        const __m512i bits = _mm512_castps_si512(x);
        __m512i e = _mm512_sub_epi32(_mm512_srli_epi32(bits, 23), _mm512_set1_epi32(127));
        vf m = _mm512_castsi512_ps(_mm512_or_si512(_mm512_and_si512(bits, _mm512_set1_epi32(0x007FFFFF)),
                                                   _mm512_set1_epi32(0x3F800000)));
        const __mmask16 big = _mm512_cmp_ps_mask(m, set1(1.41421356f), _CMP_GT_OQ);
        m = _mm512_mask_mul_ps(m, big, m, set1(0.5f));
        e = _mm512_mask_add_epi32(e, big, e, _mm512_set1_epi32(1));
        const vf f = _mm512_sub_ps(m, set1(1.0f));
        const vf ef = _mm512_cvtepi32_ps(e);
        vf q = set1(c::p[0]);
        for (int k = 1; k < 9; ++k) q = _mm512_fmadd_ps(q, f, set1(c::p[k]));
        const vf z = _mm512_mul_ps(f, f);
        vf y = _mm512_mul_ps(_mm512_mul_ps(q, f), z);
        y = _mm512_fmadd_ps(ef, set1(c::ln2_lo), y);
        y = _mm512_fnmadd_ps(z, set1(0.5f), y);
        return _mm512_fmadd_ps(ef, set1(c::ln2_hi), _mm512_add_ps(f, y));
    }
    static okmask all_ok() noexcept { return 0xFFFF; }
    static okmask in_range(okmask ok, vf v, float lo, float hi) noexcept {
        return _mm512_mask_cmp_ps_mask(_mm512_mask_cmp_ps_mask(ok, v, set1(lo), _CMP_GE_OQ), v, set1(hi), _CMP_LE_OQ);
    }
    static okmask ordered_finite(okmask ok, vf v) noexcept {
        return _mm512_mask_cmp_ps_mask(ok, v, set1(std::numeric_limits<float>::max()), _CMP_LE_OQ);
    }
    static okmask ok_and(okmask a, okmask b) noexcept { return static_cast<okmask>(a & b); }
    static bool ok(okmask m) noexcept { return m == 0xFFFF; }
    static float hmax(vf v) noexcept {
        __m256 m8 = _mm256_max_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
        __m128 m = _mm_max_ps(_mm256_castps256_ps128(m8), _mm256_extractf128_ps(m8, 1));
        m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
        return _mm_cvtss_f32(m);
    }
    static void transpose(vf (&v)[16]) noexcept {
        vf t[16];
        for (int i = 0; i < 16; i += 2) {
            t[i] = _mm512_unpacklo_ps(v[i], v[i + 1]);
            t[i + 1] = _mm512_unpackhi_ps(v[i], v[i + 1]);
        }
        for (int i = 0; i < 16; i += 4) {
            v[i] = _mm512_shuffle_ps(t[i], t[i + 2], 0x44);
            v[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], 0xEE);
            v[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0x44);
            v[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
        }
        // 128-bit blocks: rows i and i+4 (within each group of 8), then i and i+8.
        for (int g = 0; g < 16; g += 8)
            for (int i = 0; i < 4; ++i) {
                t[g + i] = _mm512_shuffle_f32x4(v[g + i], v[g + i + 4], 0x88);
                t[g + i + 4] = _mm512_shuffle_f32x4(v[g + i], v[g + i + 4], 0xDD);
            }
        for (int i = 0; i < 8; ++i) {
            v[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
            v[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xDD);
        }
    }
    /// Lane of row r in load_tile_part's vectors: 128-bit block 0 holds rows 0–3, block 1
    /// rows 8–11, block 2 rows 4–7, block 3 rows 12–15, in order.
    static constexpr std::size_t lane_of(std::size_t r) noexcept {
        constexpr std::size_t block[4] = {0, 2, 1, 3};
        return 4 * block[r / 4] + r % 4;
    }
    /// 8 consecutive values of rows a (low half) and b (high half) as one vector.
    static vf load_pair(const float* a, const float* b) noexcept {
        return _mm512_mask_broadcast_f32x8(_mm512_castps256_ps512(_mm256_loadu_ps(a)), 0xFF00, _mm256_loadu_ps(b));
    }
    static vf load_pair(const bf16* a, const bf16* b) noexcept {
        const __m256i h = _mm256_inserti128_si256(
            _mm256_castsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a))),
            _mm_loadu_si128(reinterpret_cast<const __m128i*>(b)), 1);
        return _mm512_castsi512_ps(_mm512_maskz_slli_epi32(0xFFFF, _mm512_maskz_cvtepu16_epi32(0xFFFF, h), 16));
    }
    static vf load_pair(const f16* a, const f16* b) noexcept {
        const __m256i h = _mm256_inserti128_si256(
            _mm256_castsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a))),
            _mm_loadu_si128(reinterpret_cast<const __m128i*>(b)), 1);
        return _mm512_maskz_cvtph_ps(0xFFFF, h);
    }
    static constexpr std::size_t tile_part = 8;
    /// e[j] = ids i + j (j < 8) of the 16 rows, row r in lane lane_of(r): rows r and r + 8 as
    /// the halves of one vector (one 256-bit load each), then an 8 × 8 transpose inside each
    /// 256-bit half whose last stage also pairs the halves' 128-bit blocks.
    template <class Rows>
    static void load_tile_part(const Rows& row, std::size_t i, vf (&e)[8]) noexcept {
        vf v[8];
        for (std::size_t k = 0; k < 8; ++k) v[k] = load_pair(row(k) + i, row(k + 8) + i);
        vf t[8];
        for (std::size_t k = 0; k < 8; k += 2) {
            t[k] = _mm512_maskz_unpacklo_ps(0xFFFF, v[k], v[k + 1]);
            t[k + 1] = _mm512_maskz_unpackhi_ps(0xFFFF, v[k], v[k + 1]);
        }
        // u[q]: ids q and q + 4 (blocks 0, 2: q; blocks 1, 3: q + 4); rows 0–3 / 8–11 (u), 4–7 / 12–15 (w)
        vf u[4], w[4];
        u[0] = _mm512_maskz_shuffle_ps(0xFFFF, t[0], t[2], 0x44);
        u[1] = _mm512_maskz_shuffle_ps(0xFFFF, t[0], t[2], 0xEE);
        u[2] = _mm512_maskz_shuffle_ps(0xFFFF, t[1], t[3], 0x44);
        u[3] = _mm512_maskz_shuffle_ps(0xFFFF, t[1], t[3], 0xEE);
        w[0] = _mm512_maskz_shuffle_ps(0xFFFF, t[4], t[6], 0x44);
        w[1] = _mm512_maskz_shuffle_ps(0xFFFF, t[4], t[6], 0xEE);
        w[2] = _mm512_maskz_shuffle_ps(0xFFFF, t[5], t[7], 0x44);
        w[3] = _mm512_maskz_shuffle_ps(0xFFFF, t[5], t[7], 0xEE);
        for (std::size_t q = 0; q < 4; ++q) {
            e[q] = _mm512_maskz_shuffle_f32x4(0xFFFF, u[q], w[q], 0x88);     // blocks u0 u2 w0 w2
            e[q + 4] = _mm512_maskz_shuffle_f32x4(0xFFFF, u[q], w[q], 0xDD); // blocks u1 u3 w1 w3
        }
    }
    static vf keep(vf v, std::size_t a, std::size_t b) noexcept {
        const unsigned m = ((b >= 16 ? 0x10000u : (1u << b)) - 1u) & ~((1u << a) - 1u);
        return _mm512_maskz_mov_ps(static_cast<__mmask16>(m), v);
    }
    static vd dzero() noexcept { return {_mm512_setzero_pd(), _mm512_setzero_pd()}; }
    static vd dadd(vd d, vf v) noexcept {
        return {_mm512_add_pd(d.lo, _mm512_cvtps_pd(_mm512_castps512_ps256(v))),
                _mm512_add_pd(d.hi, _mm512_cvtps_pd(_mm512_extractf32x8_ps(v, 1)))};
    }
    static vd dscale(vd d, double f) noexcept {
        const __m512d s = _mm512_set1_pd(f);
        return {_mm512_mul_pd(d.lo, s), _mm512_mul_pd(d.hi, s)};
    }
    static double dsum(vd d) noexcept {
        // A fixed tree (16 → 8 → 4 → 2 → 1): four dependent adds, not sixteen (a segment pass
        // closes a segment every ~100 values on GPT-2's trie order).
        const __m512d a = _mm512_add_pd(d.lo, d.hi);
        const __m256d b = _mm256_add_pd(_mm512_castpd512_pd256(a), _mm512_extractf64x4_pd(a, 1));
        const __m128d c = _mm_add_pd(_mm256_castpd256_pd128(b), _mm256_extractf128_pd(b, 1));
        return _mm_cvtsd_f64(_mm_add_sd(c, _mm_unpackhi_pd(c, c)));
    }
    static void accumulate(float* acc, vf v) noexcept { _mm512_store_ps(acc, _mm512_add_ps(_mm512_load_ps(acc), v)); }
    static void flush(double* d, float* f) noexcept {
        const vf v = _mm512_load_ps(f);
        _mm512_store_pd(d, _mm512_add_pd(_mm512_load_pd(d), _mm512_cvtps_pd(_mm512_castps512_ps256(v))));
        _mm512_store_pd(d + 8, _mm512_add_pd(_mm512_load_pd(d + 8), _mm512_cvtps_pd(_mm512_extractf32x8_ps(v, 1))));
        _mm512_store_ps(f, _mm512_setzero_ps());
    }
    static void rescale(float* f, double* d, const float* ff, const double* fd) noexcept {
        _mm512_store_ps(f, _mm512_mul_ps(_mm512_load_ps(f), _mm512_load_ps(ff)));
        _mm512_store_pd(d, _mm512_mul_pd(_mm512_load_pd(d), _mm512_load_pd(fd)));
        _mm512_store_pd(d + 8, _mm512_mul_pd(_mm512_load_pd(d + 8), _mm512_load_pd(fd + 8)));
    }
    static std::uint32_t stream(const std::uint32_t* p, std::size_t words) noexcept {
        __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
        std::size_t i = 0;
        for (; i + 64 <= words; i += 64) {
            a0 = _mm512_add_epi32(a0, _mm512_loadu_si512(p + i));
            a1 = _mm512_add_epi32(a1, _mm512_loadu_si512(p + i + 16));
            a2 = _mm512_add_epi32(a2, _mm512_loadu_si512(p + i + 32));
            a3 = _mm512_add_epi32(a3, _mm512_loadu_si512(p + i + 48));
        }
        std::uint32_t s = static_cast<std::uint32_t>(
            _mm512_reduce_add_epi32(_mm512_add_epi32(_mm512_add_epi32(a0, a1), _mm512_add_epi32(a2, a3))));
        for (; i < words; ++i) s += p[i];
        return s;
    }
};

} // namespace bld::simd::detail
BLD_SIMD_END_TARGET()

#endif // BLD_SIMD_X86
