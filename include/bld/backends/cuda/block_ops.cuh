// bld/backends/cuda/block_ops.cuh — the device-side pieces the kernels share: warp lanes for the
// per-slot / per-position bodies of bld/math, streaming logit loads, and the block-wide
// keyed accumulation (segmented sums without atomics, deterministic).
#pragma once

#include "bld/backends/cuda/kernel_plan.hpp"
#include "bld/math/shared_math.hpp"

#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>
#include <cuda/functional>
#include <cuda_runtime.h>

#include <cstdint>

namespace bld::cuda {

/// The lanes policy of one warp (bld/math/lanes.hpp): entry a lives in lane a % 32; reductions are
/// xor butterflies, so every lane gets the bitwise same result and the order is fixed. All 32
/// lanes of the warp must call each reduction. Host calls are never made (the host branch is
/// the identity only so the class compiles for both sides).
struct warp_lanes {
    static constexpr int width = 32;
    BLD_HOST_DEVICE int lane() const noexcept {
#if defined(__CUDA_ARCH__)
        return static_cast<int>(threadIdx.x & 31u);
#else
        return 0;
#endif
    }
    BLD_HOST_DEVICE double sum(double x) const noexcept {
#if defined(__CUDA_ARCH__)
        for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xFFFFFFFFu, x, o);
#endif
        return x;
    }
    BLD_HOST_DEVICE double max(double x) const noexcept {
#if defined(__CUDA_ARCH__)
        for (int o = 16; o > 0; o >>= 1) x = math::max64(x, __shfl_xor_sync(0xFFFFFFFFu, x, o));
#endif
        return x;
    }
    BLD_HOST_DEVICE int min(int x) const noexcept {
#if defined(__CUDA_ARCH__)
        for (int o = 16; o > 0; o >>= 1) x = math::min_int(x, __shfl_xor_sync(0xFFFFFFFFu, x, o));
#endif
        return x;
    }
};

namespace detail {

/// A logit read once (streaming: evict-first, so the row does not push the plan out of L2).
__device__ __forceinline__ float load_logit_streaming(const float* p) { return __ldcs(p); }
__device__ __forceinline__ float load_logit_streaming(const bf16* p) {
    return math::bf16_to_float(__ldcs(reinterpret_cast<const unsigned short*>(p)));
}
/// A logit read through the read-only cache (gathers of the node-sum kernel).
__device__ __forceinline__ float load_logit(const float* p) { return __ldg(p); }
__device__ __forceinline__ float load_logit(const bf16* p) {
    return math::bf16_to_float(__ldg(reinterpret_cast<const unsigned short*>(p)));
}

/// Flush of the node-sum kernel: acc[key] += s (one writer per key per tile).
struct plain_flush {
    double* acc;
    BLD_HOST_DEVICE void operator()(std::uint32_t key, double s) const noexcept {
        if (key != detail::ignored_key) acc[key] += s;
    }
};

/// Flush of the row-pass kernel: the lazily rescaled bins (math::add_to_bin).
struct lazy_bin_flush {
    double* acc;
    float* bin_max;
    float row_max;
    BLD_HOST_DEVICE void operator()(std::uint32_t key, double s) const noexcept {
        if (key != detail::ignored_key) math::add_to_bin(acc[key], bin_max[key], s, row_max);
    }
};

/// The block scan of keyed runs (warp scans: two levels, one barrier).
template <int Threads>
using keyed_scan = cub::BlockScan<detail::keyed_sum, Threads, cub::BLOCK_SCAN_WARP_SCANS>;

/// The block's keyed accumulation of one tile (bld/backends/cuda/kernel_plan.hpp, "Keyed runs"): every thread
/// passes its items (non-decreasing keys across the block) and the key of the next thread's
/// first item; each segment's sum reaches flush exactly once, from the thread where it ends.
/// Contains a block scan: all threads must call it, and `scan` may be reused only after a
/// __syncthreads().
template <int Threads, int Items, class Flush>
__device__ __forceinline__ void block_keyed_accumulate(const std::uint32_t (&key)[Items], const double (&x)[Items],
                                                       std::uint32_t next_key,
                                                       typename keyed_scan<Threads>::TempStorage& scan,
                                                       const Flush& flush) {
    const detail::thread_run_state st = detail::thread_runs<Items>(key, x, flush);
    detail::keyed_sum carry;
    keyed_scan<Threads>(scan).ExclusiveScan(st.last, carry, detail::keyed_sum{}, detail::keyed_sum_op{});
    detail::finish_runs(st, carry, next_key, flush);
}

}  // namespace detail
}  // namespace bld::cuda
