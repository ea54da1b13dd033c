// bld/projection/canonical_plan.hpp — the canonical path of one text as a plan (docs/01_method.md, "Canonical path").
//
// The plan walks the trie along the teacher's tokens once: one node-sum request per (token j,
// depth d) and one position per text byte, each naming what the position formula
// (bld/math/canonical_position.hpp) reads. The CPU canonical path (canonical_path.hpp) and the
// CUDA kernels (bld/backends/cuda/canonical.cuh) both run it.
#pragma once

#include "bld/core/error.hpp"
#include "bld/math/canonical_position.hpp"
#include "bld/projection/distributions.hpp"
#include "bld/vocab/trie.hpp"

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace bld {

/// A node-sum request: the sums of trie node `node` in teacher row `row`.
struct node_request {
    std::uint32_t row = 0;
    std::uint32_t node = 0;
};

/// One position of a canonical_plan.
struct canonical_position {
    math::position_kind kind = math::position_kind::root;
    std::uint32_t request = 0;       ///< node request of this position (not for root)
    std::uint32_t next_row = 0;      ///< root: 0; boundary: j + 1
    std::int32_t prev_request = -1;  ///< the node request of a boundary at i − 1, or −1
    std::uint32_t prev_next_row = 0; ///< that boundary's next row
    std::uint32_t prev_byte = 0;     ///< the byte observed at i − 1 (the next token's first byte)
};

/// The canonical path of one text, as node-sum requests and positions, in the order the CPU
/// path visits them (so the first error the GPU reports is the one the CPU would throw).
struct canonical_plan {
    std::string bytes;                              ///< the text bytes (L)
    std::uint32_t tokens = 0;                       ///< m: rows 0..m−1 are read
    std::vector<node_request> requests;             ///< one per (token j, depth d)
    std::vector<std::uint32_t> request_token;       ///< j of each request (messages)
    std::vector<canonical_position> positions; ///< L positions (index = byte offset), then the last token's check

    /// Checks the ids (and the text) as canonical_path does and plans every position.
    /// @param op the operation errors name (the caller's)
    /// @throws value_error / alignment_error naming the position (detail::check_ids).
    [[nodiscard]] static canonical_plan build(const byte_trie& trie, std::span<const std::int64_t> ids,
                                              std::optional<std::string_view> text = std::nullopt,
                                              const char* op = "canonical-path projection") {
        canonical_plan p;
        p.bytes = bld::detail::check_ids(trie, ids, text, op);
        p.tokens = static_cast<std::uint32_t>(ids.size());
        const auto& v = trie.vocab();
        const std::size_t m = ids.size();
        p.positions.reserve(p.bytes.size() + 1);
        canonical_position root;
        root.kind = math::position_kind::root;
        root.next_row = 0;
        p.positions.push_back(root);
        std::int32_t prev_boundary = -1;
        std::uint32_t prev_next_row = 0, prev_byte = 0;
        std::size_t o = 0;
        for (std::size_t j = 0; j < m; ++j) {
            const auto tb = v.unchecked_bytes(static_cast<std::size_t>(ids[j]));
            auto n = byte_trie::root;
            for (std::size_t d = 1; d <= tb.size(); ++d) {
                n = trie.child(n, static_cast<std::uint8_t>(tb[d - 1]));
                const auto q = static_cast<std::uint32_t>(p.requests.size());
                p.requests.push_back({static_cast<std::uint32_t>(j), n});
                p.request_token.push_back(static_cast<std::uint32_t>(j));
                canonical_position pos;
                pos.request = q;
                pos.prev_request = prev_boundary;
                pos.prev_next_row = prev_next_row;
                pos.prev_byte = prev_byte;
                if (d < tb.size()) {
                    pos.kind = math::position_kind::inside;
                } else if (j + 1 < m) {
                    pos.kind = math::position_kind::boundary;
                    pos.next_row = static_cast<std::uint32_t>(j + 1);
                } else {
                    pos.kind = math::position_kind::check;
                }
                p.positions.push_back(pos);
                // The carry of a boundary reaches the next position only.
                if (pos.kind == math::position_kind::boundary) {
                    prev_boundary = static_cast<std::int32_t>(q);
                    prev_next_row = pos.next_row;
                    prev_byte = static_cast<std::uint8_t>(p.bytes[o + d]);
                } else {
                    prev_boundary = -1;
                }
            }
            o += tb.size();
        }
        return p;
    }
};

}  // namespace bld
