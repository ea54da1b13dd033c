// bld/backends/simd/arch.hpp — instruction-set levels, runtime detection, and the per-target compile
// regions of bld's SIMD backend.
//
// style.md habit 6: SIMD kernels are written once and compiled once per instruction set, and
// everything compiled under special ISA flags carries the instruction set in its name. bld is
// header-only and never asks for -mavx2 / -mavx512f (an inline function compiled under such a
// flag in one translation unit and without it in another is an ODR violation that crashes
// older CPUs). Instead, each target's code sits in a compile region
//
//     BLD_SIMD_BEGIN_TARGET("avx2,fma")  ...  BLD_SIMD_END_TARGET()
//
// (`#pragma GCC target` / `#pragma clang attribute`) inside a namespace of its own
// (bld::simd::detail::avx2_ns, ::avx512_ns), so the AVX2 build of a kernel and the AVX-512
// build are different functions, and the choice between them is made at run time, once per
// call, from the CPU (and OS state) — see `detected_level()`.
//
// Why not xsimd::batch: xsimd 8.1 (Debian 12) declares batch<float, avx512bw> only when the
// whole translation unit is compiled with -mavx512f (its register types sit behind
// XSIMD_WITH_AVX512F, which reads __AVX512F__, which target pragmas do not define), so its
// batches cannot be dispatched at run time from a header without the ODR hazard above; its CPU
// detection also skips the XGETBV check for OS support of the AVX-512 state. bld's ops layer
// (bld/simd/ops_*.hpp) is the handful of operations the kernels need, per target.
#pragma once

#include "bld/core/error.hpp"

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

namespace bld::simd {

/// The instruction sets bld's kernels are compiled for, lowest first.
enum class level : std::uint8_t {
    scalar = 0,    ///< portable C++ (one lane), the baseline every x86-64 / ARM CPU runs
    avx2 = 1,      ///< AVX2 + FMA + F16C (Haswell, Zen 1 and later)
    avx512 = 2,    ///< AVX-512 F/BW/DQ/VL (Skylake-SP, Ice Lake, Zen 4 and later)
    automatic = 255 ///< the best level this CPU runs (or the BLD_SIMD environment variable's)
};

[[nodiscard]] constexpr std::string_view to_string(level l) noexcept {
    switch (l) {
        case level::scalar: return "scalar";
        case level::avx2: return "avx2";
        case level::avx512: return "avx512";
        case level::automatic: return "automatic";
    }
    return "unknown";
}

/// Architecture tags: the template argument of every per-target piece.
struct scalar_arch {
    static constexpr level id = level::scalar;
    static constexpr const char* name = "scalar";
};
struct avx2_arch {
    static constexpr level id = level::avx2;
    static constexpr const char* name = "avx2";
};
struct avx512_arch {
    static constexpr level id = level::avx512;
    static constexpr const char* name = "avx512";
};

/// The best level this CPU and OS run (checks CPUID and the OS-enabled register state).
[[nodiscard]] inline level detected_level() noexcept {
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
    static const level detected = [] {
        __builtin_cpu_init();
        const bool has_avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
        const bool has_avx512 = has_avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                                __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
        return has_avx512 ? level::avx512 : has_avx2 ? level::avx2 : level::scalar;
    }();
    return detected;
#else
    return level::scalar;
#endif
}

/// Whether this build of bld contains kernels for `l` (x86-64 with GCC or Clang: all three).
[[nodiscard]] constexpr bool compiled(level l) noexcept {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    return l == level::scalar || l == level::avx2 || l == level::avx512;
#else
    return l == level::scalar;
#endif
}

/// The level `automatic` means: the detected one, lowered by the environment variable
/// BLD_SIMD=scalar|avx2|avx512 if set (read once; useful to compare paths on one machine).
[[nodiscard]] inline level default_level() noexcept {
    static const level chosen = [] {
        level l = detected_level();
        if (const char* env = std::getenv("BLD_SIMD")) {
            const std::string_view v(env);
            level want = l;
            if (v == "scalar") want = level::scalar;
            else if (v == "avx2") want = level::avx2;
            else if (v == "avx512") want = level::avx512;
            if (static_cast<int>(want) < static_cast<int>(l)) l = want;
        }
        return l;
    }();
    return chosen;
}

/// Resolves `automatic`, and checks that an explicit level is compiled and runs on this CPU.
/// @throws bld::value_error when the CPU lacks the requested instruction set.
[[nodiscard]] inline level resolve(level requested, std::string_view op) {
    if (requested == level::automatic) return default_level();
    if (!compiled(requested) || static_cast<int>(requested) > static_cast<int>(detected_level()))
        throw value_error(std::string(op), "SIMD level " + std::string(to_string(requested)),
                          "this CPU (or build) does not support it; the best available is " +
                              std::string(to_string(detected_level())));
    return requested;
}

} // namespace bld::simd

// Compile regions. Everything a target region defines (functions, function templates, member
// functions) is compiled for that target. Include every header a region needs *before* opening
// it: a standard-library inline function first defined inside a region would be compiled for
// that target — the ODR hazard this design exists to avoid.
#define BLD_SIMD_PRAGMA(x) _Pragma(#x)
#if defined(__clang__)
#define BLD_SIMD_BEGIN_TARGET(targets) \
    BLD_SIMD_PRAGMA(clang attribute push(__attribute__((target(targets))), apply_to = function))
#define BLD_SIMD_END_TARGET() BLD_SIMD_PRAGMA(clang attribute pop)
#elif defined(__GNUC__)
#define BLD_SIMD_BEGIN_TARGET(targets) BLD_SIMD_PRAGMA(GCC push_options) BLD_SIMD_PRAGMA(GCC target(targets))
#define BLD_SIMD_END_TARGET() BLD_SIMD_PRAGMA(GCC pop_options)
#else
#define BLD_SIMD_BEGIN_TARGET(targets)
#define BLD_SIMD_END_TARGET()
#endif

/// The target strings of the two x86 levels.
#define BLD_SIMD_AVX2_TARGETS "avx,avx2,fma,f16c,bmi,bmi2,popcnt"
#define BLD_SIMD_AVX512_TARGETS "avx,avx2,fma,f16c,bmi,bmi2,popcnt,avx512f,avx512bw,avx512dq,avx512vl"
