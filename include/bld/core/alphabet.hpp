// bld/core/alphabet.hpp — the byte alphabet every next-byte distribution and byte head uses.
//
// docs/01_method.md ("The student side"): 256 bytes, the STOP symbol (the mass of special / end-of-text tokens, which
// have no text bytes) and three reserved slots that bld keeps at zero: 260 entries, the width
// of the paper's byte head. These are the only spellings of these sizes in bld; where a signed
// or int type is needed, cast at the use site.
#pragma once

#include <cstddef>

namespace bld {

/// Entries of a byte distribution: bytes 0..255, STOP = 256, reserved 257..259.
inline constexpr std::size_t alphabet_size = 260;
/// Index of the STOP symbol.
inline constexpr std::size_t stop_symbol = 256;
/// Bins of a row's root split: the 256 first bytes and STOP (stop_symbol + 1).
inline constexpr std::size_t root_bin_count = stop_symbol + 1;

} // namespace bld
