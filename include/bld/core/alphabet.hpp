// bld/core/alphabet.hpp — the byte alphabet every next-byte distribution and byte head uses.
//
// design.md §1: 256 bytes, the STOP symbol (the mass of special / end-of-text tokens, which
// have no text bytes) and three reserved slots that bld keeps at zero: 260 entries, the width
// of the paper's byte head.
#pragma once

#include <cstddef>
#include <cstdint>

namespace bld {

/// Entries of a byte distribution: bytes 0..255, STOP = 256, reserved 257..259.
inline constexpr std::size_t alphabet_size = 260;
/// Index of the STOP symbol.
inline constexpr std::size_t stop_symbol = 256;
/// alphabet_size as the signed extent type of tensors (byte-head logits are [T, K, 260]).
inline constexpr std::int64_t byte_alphabet_size = static_cast<std::int64_t>(alphabet_size);

} // namespace bld
