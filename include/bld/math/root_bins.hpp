// bld/math/root_bins.hpp — the root bins of the one-pass row kernel (docs/01_method.md, "The sorted trie").
//
// A row pass accumulates Σ exp(z − max) per root bin (256 first bytes and STOP). The one-pass
// kernel keeps each bin in units of its own max and rescales lazily; partial bins of several
// blocks are combined in a fixed order, so the result is deterministic.
#pragma once

#include "bld/core/alphabet.hpp"
#include "bld/math/elementary.hpp"

namespace bld::math {

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
    constexpr int nb = static_cast<int>(root_bin_count);
    double s = 0.0;
    for (int p = 0; p < count; ++p) s += bins[p * nb + a] * rescale_factor(maxes[p], row_max);
    return s;
}

/// Σ acc[0..257) in bin order (bin 0 first); its log is the row's log-normaliser and
/// root[a] = acc[a] / it.
BLD_HOST_DEVICE inline double root_total(const double* acc) noexcept {
    constexpr int nb = static_cast<int>(root_bin_count);
    double z = 0.0;
    for (int a = 0; a < nb; ++a) z += acc[a];
    return z;
}

/// The root distribution of a row from its bins: root[a] = acc[a] / Σ acc; returns Σ acc (the
/// row's normaliser in the bins' units). One thread; a block spreads the divisions instead.
BLD_HOST_DEVICE inline double normalise_root(const double* acc, double* root) noexcept {
    constexpr int nb = static_cast<int>(root_bin_count);
    const double z = root_total(acc);
    for (int a = 0; a < nb; ++a) root[a] = acc[a] / z;
    return z;
}

}  // namespace bld::math
