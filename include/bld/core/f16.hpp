// bld/core/f16.hpp — IEEE-754 binary16 ("half", torch.float16) storage.
//
// Teacher logits arrive in float16 from mixed-precision models (autocast on GPUs). bld reads
// them by widening to float, which is exact; it never computes in half precision.
#pragma once

#include <bit>
#include <cstdint>

namespace bld {

/// binary16 storage: 1 sign bit, 5 exponent bits (bias 15), 10 mantissa bits. Arithmetic
/// happens in float; this type only stores. Conversion from float rounds to nearest, ties to
/// even; values beyond 65504 round to ±infinity; NaN stays NaN (quiet, sign kept).
struct f16 {
    std::uint16_t bits = 0;

    constexpr f16() noexcept = default;
    constexpr explicit f16(float value) noexcept : bits(round_from(value)) {}

    /// The f16 whose storage is exactly `b`.
    [[nodiscard]] static constexpr f16 from_bits(std::uint16_t b) noexcept {
        f16 r;
        r.bits = b;
        return r;
    }
    /// Widening is exact, so it is implicit.
    [[nodiscard]] constexpr operator float() const noexcept { return widen(bits); }
    friend constexpr bool operator==(f16, f16) noexcept = default; // bitwise

    /// The float value of binary16 storage `h` (exact).
    [[nodiscard]] static constexpr float widen(std::uint16_t h) noexcept {
        const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
        const std::uint32_t exp = (h >> 10) & 0x1fu;
        std::uint32_t man = h & 0x3ffu;
        if (exp == 0x1fu) return std::bit_cast<float>(sign | 0x7f800000u | (man << 13)); // inf / NaN
        if (exp != 0) return std::bit_cast<float>(sign | ((exp + 112u) << 23) | (man << 13));
        if (man == 0) return std::bit_cast<float>(sign); // ±0
        // Subnormal: man · 2^-24, normalised.
        std::uint32_t e = 113u; // exponent field of 2^-14
        while ((man & 0x400u) == 0) {
            man <<= 1;
            --e;
        }
        return std::bit_cast<float>(sign | (e << 23) | ((man & 0x3ffu) << 13));
    }

private:
    static constexpr std::uint16_t round_from(float value) noexcept {
        const auto u = std::bit_cast<std::uint32_t>(value);
        const auto sign = static_cast<std::uint16_t>((u >> 16) & 0x8000u);
        const std::uint32_t a = u & 0x7fffffffu;
        if (a > 0x7f800000u) return static_cast<std::uint16_t>(sign | 0x7e00u | ((a >> 13) & 0x3ffu)); // NaN, quiet
        if (a >= 0x477ff000u) return static_cast<std::uint16_t>(sign | 0x7c00u); // ≥ 65520 rounds to inf
        if (a >= 0x38800000u) { // normal in binary16 (≥ 2^-14)
            const std::uint32_t lsb = (a >> 13) & 1u;
            return static_cast<std::uint16_t>(sign | ((a - 0x38000000u + 0xfffu + lsb) >> 13));
        }
        if (a < 0x33000000u) return sign; // < 2^-25: rounds to ±0
        // Subnormal: value / 2^-24 rounded to nearest even.
        const std::uint32_t e = a >> 23, m = (a & 0x7fffffu) | 0x800000u;
        const std::uint32_t shift = 126u - e; // 14..24 (value = m · 2^(e − 150); result = value · 2^24)
        const std::uint32_t q = m >> shift, rem = m & ((1u << shift) - 1u), half = 1u << (shift - 1u);
        const std::uint32_t r = q + ((rem > half || (rem == half && (q & 1u))) ? 1u : 0u);
        return static_cast<std::uint16_t>(sign | r);
    }
};
static_assert(sizeof(f16) == 2, "f16 must be two bytes: views reinterpret foreign storage");

} // namespace bld
