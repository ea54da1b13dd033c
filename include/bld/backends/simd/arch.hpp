// bld/backends/simd/arch.hpp — instruction-set levels, runtime detection, and the per-target compile
// regions of bld's SIMD backend.
//
// The kernels (bld/backends/simd/kernels.inc) are written once against an `ops<Arch>` interface
// and compiled once per level; everything compiled under special ISA flags carries the
// instruction set in its name. bld is header-only and never asks for -mavx2 / -mavx512f (an
// inline function compiled under such a flag in one translation unit and without it in another
// is an ODR violation that crashes older CPUs). The five levels come in two kinds:
//
//  * The translation unit's baseline, needing no flag: `scalar` (portable C++) and the 4-lane
//    xsimd level of the architecture — `sse2` on x86-64 (SSE2 is part of x86-64) and `neon` on
//    AArch64 (NEON is part of AArch64) — whose ops are xsimd::batch<float, xsimd::sse2 /
//    xsimd::neon64> (bld/backends/simd/ops_xsimd.hpp). Compiled when <xsimd/xsimd.hpp> is found.
//  * The x86 levels chosen at run time, `avx2` and `avx512`: each target's code sits in a compile
//    region
//
//        BLD_SIMD_BEGIN_TARGET("avx2,fma")  ...  BLD_SIMD_END_TARGET()
//
//    (`#pragma GCC target` / `#pragma clang attribute`) inside a namespace of its own
//    (bld::simd::detail::avx2_ns, ::avx512_ns), so the AVX2 build of a kernel and the AVX-512
//    build are different functions, and the choice between them is made at run time, once per
//    call, from the CPU (and OS state) — see `detected_level()`.
//
// Why the AVX2 / AVX-512 ops are intrinsics and not xsimd::batch: xsimd 8.1 (Debian 12) declares
// batch<float, avx2> / batch<float, avx512bw> only when the whole translation unit is compiled
// with -mavx2 / -mavx512f (its register types sit behind XSIMD_WITH_AVX2 / XSIMD_WITH_AVX512F,
// which read __AVX2__ / __AVX512F__, which target regions do not define). Defining those macros
// by hand does not help: xsimd's kernels are then defined outside the region and cannot inline
// the region's intrinsics ("target specific option mismatch"), and including xsimd inside a
// region would compile every xsimd function, the SSE ones too, for that target — the ODR hazard
// above. So a header-only library cannot dispatch xsimd batches at run time; xsimd serves the
// baseline level only, and the wider levels keep their own ops (bld/backends/simd/ops.hpp). Its
// CPU detection also skips the XGETBV check for OS support of the AVX-512 state.
#pragma once

#include "bld/core/error.hpp"

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

// The xsimd level of this build: BLD_SIMD_SSE2 on x86-64, BLD_SIMD_NEON on AArch64 (1 or 0).
#if defined(__has_include)
#if __has_include(<xsimd/xsimd.hpp>)
#define BLD_SIMD_HAVE_XSIMD 1
#endif
#endif
#if defined(BLD_SIMD_HAVE_XSIMD) && defined(__x86_64__)
#define BLD_SIMD_SSE2 1
#else
#define BLD_SIMD_SSE2 0
#endif
#if defined(BLD_SIMD_HAVE_XSIMD) && defined(__aarch64__)
#define BLD_SIMD_NEON 1
#else
#define BLD_SIMD_NEON 0
#endif

namespace bld::simd {

/// The instruction sets bld's kernels are compiled for, lowest first among those of one CPU
/// architecture (x86-64: scalar < sse2 < avx2 < avx512; AArch64: scalar < neon). No build
/// holds levels of two architectures.
enum class level : std::uint8_t {
    scalar = 0,    ///< portable C++ (one lane), the baseline every CPU runs
    sse2 = 1,      ///< x86-64's baseline, 4 lanes, through xsimd (every x86-64 CPU)
    neon = 2,      ///< AArch64's baseline, 4 lanes, through xsimd (every AArch64 CPU)
    avx2 = 3,      ///< AVX2 + FMA + F16C (Haswell, Zen 1 and later)
    avx512 = 4,    ///< AVX-512 F/BW/DQ/VL (Skylake-SP, Ice Lake, Zen 4 and later)
    automatic = 255 ///< the best level this CPU runs (or the BLD_SIMD environment variable's)
};

[[nodiscard]] constexpr std::string_view to_string(level l) noexcept {
    switch (l) {
        case level::scalar: return "scalar";
        case level::sse2: return "sse2";
        case level::neon: return "neon";
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
struct sse2_arch {
    static constexpr level id = level::sse2;
    static constexpr const char* name = "sse2";
};
struct neon_arch {
    static constexpr level id = level::neon;
    static constexpr const char* name = "neon";
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
        return has_avx512 ? level::avx512 : has_avx2 ? level::avx2 : BLD_SIMD_SSE2 ? level::sse2 : level::scalar;
    }();
    return detected;
#else
    // The baseline levels need no detection: every x86-64 CPU runs SSE2, every AArch64 CPU NEON.
    return BLD_SIMD_SSE2 ? level::sse2 : BLD_SIMD_NEON ? level::neon : level::scalar;
#endif
}

/// Whether this build of bld contains kernels for `l`: scalar always; sse2 (x86-64) or neon
/// (AArch64) where xsimd is found; avx2 and avx512 on x86-64 with GCC or Clang.
[[nodiscard]] constexpr bool compiled(level l) noexcept {
    switch (l) {
        case level::scalar: return true;
        case level::sse2: return BLD_SIMD_SSE2 != 0;
        case level::neon: return BLD_SIMD_NEON != 0;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
        case level::avx2:
        case level::avx512: return true;
#endif
        default: return false;
    }
}

/// The level `automatic` means: the detected one, lowered by the environment variable
/// BLD_SIMD=scalar|sse2|neon|avx2|avx512 if set to a level this build has (read once; useful
/// to compare paths on one machine).
[[nodiscard]] inline level default_level() noexcept {
    static const level chosen = [] {
        level l = detected_level();
        if (const char* env = std::getenv("BLD_SIMD")) {
            const std::string_view v(env);
            level want = l;
            for (level k : {level::scalar, level::sse2, level::neon, level::avx2, level::avx512})
                if (v == to_string(k)) want = k;
            if (compiled(want) && static_cast<int>(want) < static_cast<int>(l)) l = want;
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
