// bld/core/bf16.hpp — bfloat16 storage, the one 16-bit logit type bld reads.
//
// Its own header so that the host/device formulas (bld/math/) can widen bf16 logits without
// the tensor machinery.
#pragma once

#include <bit>
#include <cstdint>

namespace bld {

/// bfloat16 storage: the upper 16 bits of an IEEE-754 binary32. Arithmetic happens in float;
/// this type only stores. Conversion from float rounds to nearest, ties to even; NaN stays NaN
/// (quiet, sign kept); values beyond the largest finite bf16 round to ±infinity.
struct bf16 {
    std::uint16_t bits = 0;

    constexpr bf16() noexcept = default;
    constexpr explicit bf16(float value) noexcept : bits(round_from(value)) {}

    /// The bf16 whose storage is exactly `b`.
    [[nodiscard]] static constexpr bf16 from_bits(std::uint16_t b) noexcept {
        bf16 r;
        r.bits = b;
        return r;
    }
    /// Widening is exact, so it is implicit.
    [[nodiscard]] constexpr operator float() const noexcept {
        return std::bit_cast<float>(static_cast<std::uint32_t>(bits) << 16);
    }
    friend constexpr bool operator==(bf16, bf16) noexcept = default;  // bitwise

private:
    static constexpr std::uint16_t round_from(float value) noexcept {
        const auto u = std::bit_cast<std::uint32_t>(value);
        if ((u & 0x7fffffffu) > 0x7f800000u) {  // NaN: keep sign and top payload bits, force quiet
            return static_cast<std::uint16_t>((u >> 16) | 0x0040u);
        }
        // Round to nearest even: add 0x7fff plus the lowest kept bit, then truncate. A carry
        // out of the mantissa correctly bumps the exponent (and reaches infinity at the top).
        const std::uint32_t lsb = (u >> 16) & 1u;
        return static_cast<std::uint16_t>((u + 0x7fffu + lsb) >> 16);
    }
};
static_assert(sizeof(bf16) == 2, "bf16 must be two bytes: views reinterpret foreign storage");

} // namespace bld
