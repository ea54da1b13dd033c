// bld/math/divergence.hpp — the divergences a byte loss may use (bld/loss/byte_loss.hpp).
//
// Declared below the loss so that the per-slot formula (bld/math/slot_loss.hpp), which the CPU
// and the CUDA kernels share, can name it without the loss's tensor front end.
#pragma once

#include "bld/core/error.hpp"

#include <cstdint>
#include <string>
#include <string_view>

namespace bld {

/// The divergence between the teacher's byte distribution p and the student's q.
enum class divergence : std::uint8_t { forward_kl, reverse_kl, jsd, tvd };

[[nodiscard]] constexpr std::string_view to_string(divergence d) noexcept {
    switch (d) {
        case divergence::forward_kl: return "forward_kl";
        case divergence::reverse_kl: return "reverse_kl";
        case divergence::jsd: return "jsd";
        case divergence::tvd: return "tvd";
    }
    return "unknown";
}

/// "kl" / "forward_kl", "reverse_kl", "jsd", "tvd" → divergence.
/// @throws value_error for any other name.
[[nodiscard]] inline divergence parse_divergence(std::string_view name) {
    if (name == "kl" || name == "forward_kl") return divergence::forward_kl;
    if (name == "reverse_kl") return divergence::reverse_kl;
    if (name == "jsd") return divergence::jsd;
    if (name == "tvd") return divergence::tvd;
    throw value_error("bld::parse_divergence", "\"" + std::string(name) + "\"",
                      "unknown divergence (expected kl, forward_kl, reverse_kl, jsd or tvd)");
}

}  // namespace bld
