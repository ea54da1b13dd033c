// bld/math/elementary.hpp — the elementary host/device functions the reference formulas use.
//
// Every function in bld/math/ is BLD_HOST_DEVICE: plain inline C++ under a host compiler, and
// `__host__ __device__` under nvcc. `__CUDA_ARCH__` appears only inside function bodies, never
// around a declaration, so host and device see the same declarations (no ODR trap).
//
// Here: the device or host implementation of exp, log, fma (exp64, log64, …), the bf16 → float
// widening, exp_diff (exp(z − m) in fp32 with the subtraction's rounding compensated: the row
// pass's one transcendental per logit) and the (max, sum) pairs of a log-sum-exp.
#pragma once

#include "bld/core/bf16.hpp"

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define BLD_HOST_DEVICE __host__ __device__
#else
#define BLD_HOST_DEVICE
#endif

namespace bld::math {

BLD_HOST_DEVICE inline double infinity() noexcept { return __builtin_huge_val(); }
BLD_HOST_DEVICE inline float infinity_f() noexcept { return __builtin_huge_valf(); }

/// True for finite x (false for NaN and ±inf) without a library call: x − x is 0 only then.
BLD_HOST_DEVICE inline bool is_finite(double x) noexcept { return x - x == 0.0; }
/// A logit the row pass rejects: NaN or +inf (−inf is a token of probability 0).
BLD_HOST_DEVICE inline bool is_bad_logit(float z) noexcept { return !(z == z) || z == infinity_f(); }
BLD_HOST_DEVICE inline bool is_bad_logit(double z) noexcept { return !(z == z) || z == infinity(); }

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

}  // namespace bld::math
