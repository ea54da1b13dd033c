// bld/math/lanes.hpp — how a per-slot / per-position formula spreads 260 entries over threads.
//
// A lanes policy has a compile-time `width`, `lane()` and the reductions sum / max (double)
// and min (int), which return the same value to every lane. Entry a belongs to lane a % width.
// The formulas of bld/math/ are written once against a policy: `host_lanes` (one lane does all
// entries, sequentially: the reference's order, used by the CPU) or the CUDA backend's
// `bld::cuda::warp_lanes` (32 lanes, shuffle reductions).
#pragma once

#include "bld/core/alphabet.hpp"
#include "bld/math/elementary.hpp"

namespace bld::math {

/// One lane does everything, in entry order: the reductions are the identity, so the sums are
/// taken in entry order.
struct host_lanes {
    static constexpr int width = 1;
    BLD_HOST_DEVICE int lane() const noexcept { return 0; }
    BLD_HOST_DEVICE double sum(double x) const noexcept { return x; }
    BLD_HOST_DEVICE double max(double x) const noexcept { return x; }
    BLD_HOST_DEVICE int min(int x) const noexcept { return x; }
};

/// Entries of the byte alphabet per lane for a policy of width W.
template <int Width>
inline constexpr int per_lane = (static_cast<int>(alphabet_size) + Width - 1) / Width;

}  // namespace bld::math
