// bld/backends/simd/kernels.hpp — bld's SIMD kernels compiled once per target, and their dispatch.
//
// The kernels are written once (bld/backends/simd/kernels.inc) for all five levels and included
// here once per level this build has: in bld::simd::detail::scalar_ns and sse2_ns (x86-64) or
// neon_ns (AArch64) with the translation unit's baseline flags — those levels are the
// architecture's baseline — and in avx2_ns / avx512_ns inside those targets' compile regions
// (bld/backends/simd/arch.hpp). Each copy is a distinct set of functions whose names carry the
// target, so a program that includes bld in many translation units gets one definition of each
// and never an AVX-512 build of a function an older CPU might run.
// `kernels_for(level)` returns the table of the requested target; the caller chooses the level
// once per call (simd::resolve). `stream_read` is the memory-streaming baseline.
#pragma once

#include "bld/backends/simd/arch.hpp"
#include "bld/backends/simd/ops.hpp"
#include "bld/backends/simd/ops_xsimd.hpp"
#include "bld/core/tensor.hpp"
#include "bld/math/slot_loss.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <concepts>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <utility>

namespace bld {

/// The logit types bld's SIMD kernels (this folder) read: row_kernel_reads (float, bf16) and f16,
/// which every target widens exactly as it loads (F16C on AVX2 / AVX-512, f16::widen on the
/// others). Double rows take the fp64 reference path.
template <class T>
inline constexpr bool simd_kernel_reads = row_kernel_reads<T> || std::same_as<std::remove_cv_t<T>, f16>;

} // namespace bld

namespace bld::simd::detail {

/// Ids per chunk (a multiple of every width and of flush_block): 256 ids × 16 rows × 4 bytes
/// = 16 KiB of logits per tile chunk, which stays in L1 between the two passes.
inline constexpr std::size_t chunk_ids = 256;
/// Values per chunk of segment_sums (one contiguous array): 4 KiB of float logits, read once
/// (the maximum taken beside the exponentials) and again from L1 only when the chunk moves the
/// lazy shift; the per-chunk work (a horizontal maximum, the shift rule) is spread over 64 vectors.
inline constexpr std::size_t segment_chunk = 1024;
/// segment_sums prefetches (into L2) this many chunks ahead, spread over its exponentials.
inline constexpr std::size_t segment_prefetch = 4;
/// The tile kernel prefetches (into L2) this many chunks ahead: W rows at a stride of a whole
/// row are W short streams at once, more than the hardware prefetchers follow.
inline constexpr std::size_t prefetch_chunks = 2;
/// The lazy shift moves only when a chunk maximum exceeds it by more than this (e^16 ≈ 8.9e6,
/// so no term exceeds that in float and the argument x = z − shift stays small: |x| ≤ 88).
inline constexpr float lazy_shift_slack = 16.0f;
/// A chunk maximum more than this above the shift moves it before the chunk's exponentials
/// (the tile kernel finds such a chunk after them and starts over): every term stays ≤ e^64,
/// and a float accumulator of flush_every such terms ≤ 2e29, far from overflow.
inline constexpr float lazy_shift_limit = 64.0f;
/// Float accumulators take at most this many additions before they are flushed to double.
inline constexpr unsigned flush_every = 32;
/// Granularity of the tile kernel's static flush schedule (ids).
inline constexpr std::size_t flush_block = 16;
/// Accumulators ("virtual bins") of the tile kernel: 0..255 first bytes, 256 STOP, 257 a
/// discard bin for ids the softmax ignores (gaps in the id space, padding past the
/// vocabulary), then extra copies of the most frequent bins. Consecutive ids of a frequent bin
/// (a quarter of Llama-3's ids start with a space) would otherwise chain their read-modify-
/// write updates through one address; the plan deals them round-robin over several copies,
/// which the kernel adds back in a fixed order.
inline constexpr std::size_t max_tile_bins = 320;
inline constexpr std::uint16_t discard_bin = root_bin_count;

/// What the tile kernel needs from a row_plan (pointers into it).
struct tile_plan {
    std::size_t vocab = 0;                       ///< ids per row that count
    std::size_t nbins = discard_bin + 1;                     ///< virtual bins in use (≤ max_tile_bins)
    const std::uint16_t* bins = nullptr;         ///< [round_up(vocab, 16)]: the virtual bin of each id
    const std::uint16_t* real_bin = nullptr;     ///< [nbins]: virtual → 0..256 (discard_bin: none)
    const float* ignore_add = nullptr;           ///< [round_up(vocab, 16)]: 0 or −inf (null: none)
    const std::uint8_t* chunk_has_ignored = nullptr; ///< [chunks] (null: none)
    const std::uint32_t* flush_start = nullptr;  ///< [blocks + 1]: CSR into flush_bins
    const std::uint16_t* flush_bins = nullptr;   ///< bins to flush before each block of 16 ids
};

/// Per-thread scratch of the tile kernel (sized for the widest target).
struct tile_workspace {
    alignas(64) float accf[max_tile_bins * 16];
    alignas(64) double accd[max_tile_bins * 16];
};

/// One row's raw result: sums[b] = Σ_{ids in bin b} e^(z − shift).
struct tile_result {
    float max = 0;
    float shift = 0;
    bool valid = false; ///< no NaN / +Inf among the row's ids
    double sums[root_bin_count] = {};
};

/// One row's head of tile_bin_pass: its maximum, shift, accumulator lane and validation.
struct tile_row_head {
    float max = 0;
    float shift = 0;
    std::uint32_t lane = 0;
    bool ok = false; ///< no NaN / +Inf seen (the sums may still be non-finite)
};

struct segment_result {
    float max = 0;   ///< largest value (−inf if none)
    float shift = 0; ///< sums are in units of e^shift
    bool valid = false;
};

/// What the byte-loss slot kernel returns (its parameters are math::slot_params, forward KL,
/// and the reduction's gradient factor).
struct loss_slot_result {
    double value = 0.0;
    bool ok = false;             ///< false: a bad logit or target; nothing written
};

template <class T>
constexpr T neg_inf_value() noexcept {
    if constexpr (std::is_same_v<T, bf16>) return bf16::from_bits(0xFF80);
    else if constexpr (std::is_same_v<T, f16>) return f16::from_bits(0xFC00);
    else return -std::numeric_limits<T>::infinity();
}

} // namespace bld::simd::detail

// GCC 12's AVX-512 intrinsics build their results on _mm512_undefined_*() (a self-initialised
// variable), which -Wmaybe-uninitialized reports once inlined into a kernel (GCC bug 105593).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

namespace bld::simd::detail::scalar_ns {
using arch = scalar_arch;
#include "bld/backends/simd/kernels.inc"
} // namespace bld::simd::detail::scalar_ns

#if BLD_SIMD_SSE2
namespace bld::simd::detail::sse2_ns {
using arch = sse2_arch;
#include "bld/backends/simd/kernels.inc"
} // namespace bld::simd::detail::sse2_ns
#endif

#if BLD_SIMD_NEON
namespace bld::simd::detail::neon_ns {
using arch = neon_arch;
#include "bld/backends/simd/kernels.inc"
} // namespace bld::simd::detail::neon_ns
#endif

#if BLD_SIMD_X86
BLD_SIMD_BEGIN_TARGET(BLD_SIMD_AVX2_TARGETS)
namespace bld::simd::detail::avx2_ns {
using arch = avx2_arch;
#include "bld/backends/simd/kernels.inc"
} // namespace bld::simd::detail::avx2_ns
BLD_SIMD_END_TARGET()

BLD_SIMD_BEGIN_TARGET(BLD_SIMD_AVX512_TARGETS)
namespace bld::simd::detail::avx512_ns {
using arch = avx512_arch;
#include "bld/backends/simd/kernels.inc"
} // namespace bld::simd::detail::avx512_ns
BLD_SIMD_END_TARGET()
#endif

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

namespace bld::simd::detail {

/// The kernels of one target for element type T.
template <class T>
struct kernel_table {
    std::size_t width;
    void (*tile_row_pass)(const tile_plan&, const T* const*, tile_workspace&, tile_result*);
    segment_result (*segment_sums)(const T*, const std::uint32_t*, std::size_t, double*);
    void (*tile_bin_pass)(const tile_plan&, const T* const*, float*, double*, tile_row_head*);
    segment_result (*segment_sums_keep)(const T*, const std::uint32_t*, std::size_t, double*, float*);
};

template <class T>
[[nodiscard]] inline kernel_table<T> kernels_for(level l) noexcept {
    switch (l) {
#if BLD_SIMD_X86
        case level::avx512:
            return {avx512_ns::W, &avx512_ns::tile_row_pass<T>, &avx512_ns::segment_sums<T>, &avx512_ns::tile_bin_pass<T>,
                    &avx512_ns::segment_sums_keep<T>};
        case level::avx2:
            return {avx2_ns::W, &avx2_ns::tile_row_pass<T>, &avx2_ns::segment_sums<T>, &avx2_ns::tile_bin_pass<T>,
                    &avx2_ns::segment_sums_keep<T>};
#endif
#if BLD_SIMD_SSE2
        case level::sse2:
            return {sse2_ns::W, &sse2_ns::tile_row_pass<T>, &sse2_ns::segment_sums<T>, &sse2_ns::tile_bin_pass<T>,
                    &sse2_ns::segment_sums_keep<T>};
#endif
#if BLD_SIMD_NEON
        case level::neon:
            return {neon_ns::W, &neon_ns::tile_row_pass<T>, &neon_ns::segment_sums<T>, &neon_ns::tile_bin_pass<T>,
                    &neon_ns::segment_sums_keep<T>};
#endif
        default:
            return {scalar_ns::W, &scalar_ns::tile_row_pass<T>, &scalar_ns::segment_sums<T>, &scalar_ns::tile_bin_pass<T>,
                    &scalar_ns::segment_sums_keep<T>};
    }
}

} // namespace bld::simd::detail

namespace bld::simd::detail {

/// The token-head backward kernels of a target for element type T (kernels.inc).
template <class T>
struct weighted_exp_table {
    void (*segments)(const T*, const float*, const std::uint32_t*, const float*, const float*, const float*, std::size_t,
                     float*);
    void (*gather)(const T*, const std::uint32_t*, const float*, std::size_t, float, float*);
};

template <class T>
[[nodiscard]] inline weighted_exp_table<T> weighted_exp_for(level l) noexcept {
    switch (l) {
#if BLD_SIMD_X86
        case level::avx512: return {&avx512_ns::weighted_exp_segments<T>, &avx512_ns::weighted_exp_gather<T>};
        case level::avx2: return {&avx2_ns::weighted_exp_segments<T>, &avx2_ns::weighted_exp_gather<T>};
#endif
#if BLD_SIMD_SSE2
        case level::sse2: return {&sse2_ns::weighted_exp_segments<T>, &sse2_ns::weighted_exp_gather<T>};
#endif
#if BLD_SIMD_NEON
        case level::neon: return {&neon_ns::weighted_exp_segments<T>, &neon_ns::weighted_exp_gather<T>};
#endif
        default: return {&scalar_ns::weighted_exp_segments<T>, &scalar_ns::weighted_exp_gather<T>};
    }
}

} // namespace bld::simd::detail

namespace bld::simd::detail {

using loss_slot_fn = loss_slot_result (*)(const float*, const float*, int, const math::slot_params&, double, float*);

/// The float byte-loss slot kernel of a target.
[[nodiscard]] inline loss_slot_fn loss_kernel_for(level l) noexcept {
    switch (l) {
#if BLD_SIMD_X86
        case level::avx512: return &avx512_ns::loss_slot_fkl;
        case level::avx2: return &avx2_ns::loss_slot_fkl;
#endif
#if BLD_SIMD_SSE2
        case level::sse2: return &sse2_ns::loss_slot_fkl;
#endif
#if BLD_SIMD_NEON
        case level::neon: return &neon_ns::loss_slot_fkl;
#endif
        default: return &scalar_ns::loss_slot_fkl;
    }
}

} // namespace bld::simd::detail

namespace bld::simd::detail {

using position_fkl_fn = double (*)(const double*, const double*, const double*, std::size_t, double, double, double*);

/// The token-head position kernel (forward KL, gathered support) of a target.
[[nodiscard]] inline position_fkl_fn position_kernel_for(level l) noexcept {
    switch (l) {
#if BLD_SIMD_X86
        case level::avx512: return &avx512_ns::position_fkl;
        case level::avx2: return &avx2_ns::position_fkl;
#endif
#if BLD_SIMD_SSE2
        case level::sse2: return &sse2_ns::position_fkl;
#endif
#if BLD_SIMD_NEON
        case level::neon: return &neon_ns::position_fkl;
#endif
        default: return &scalar_ns::position_fkl;
    }
}

} // namespace bld::simd::detail

namespace bld::simd {

/// Reads [data, data + bytes) once with the widest loads of level `l` and returns a checksum:
/// the memory-streaming yardstick of the benchmarks (docs/01_method.md, "The sorted trie": "the cost floor is reading
/// the row once"). Trailing bytes past a multiple of 4 are not read.
[[nodiscard]] inline std::uint32_t stream_read(const void* data, std::size_t bytes, level l = level::automatic) {
    const auto* p = static_cast<const std::uint32_t*>(data);
    switch (resolve(l, "stream read")) {
#if BLD_SIMD_X86
        case level::avx512: return detail::avx512_ns::stream_read(p, bytes / 4);
        case level::avx2: return detail::avx2_ns::stream_read(p, bytes / 4);
#endif
#if BLD_SIMD_SSE2
        case level::sse2: return detail::sse2_ns::stream_read(p, bytes / 4);
#endif
#if BLD_SIMD_NEON
        case level::neon: return detail::neon_ns::stream_read(p, bytes / 4);
#endif
        default: return detail::scalar_ns::stream_read(p, bytes / 4);
    }
}

} // namespace bld::simd
