// bld/projection/kernel_plan.hpp — the tables the CUDA kernels read, built once on the host.
//
// Plain C++ (no CUDA needed): the CUDA headers upload these tables, and the CPU tests build
// them and replay the kernels' arithmetic with bld/math/shared_math.hpp, so the plans are tested on
// every machine.
//
// Row pass (design.md §2, "the scatter is the enemy"): a row's columns are cut into chunks of
// math::chunk_columns ids. Within a chunk the ids are stably sorted by root bin, once, on the
// host; the kernel stages a chunk of logits in shared memory, reads it back in that sorted
// order, and every bin becomes one contiguous segment — a segmented sum instead of a scatter,
// with no atomics, so the result is deterministic. Absent ids and the padding past the
// vocabulary sort last with math::ignored_key.
//
// Canonical path: the (row, node) node-sum requests and the per-position plan of
// canonical_path_from (projection.hpp), in the CPU's order, so the first error the GPU reports
// is the one the CPU would throw.
#pragma once

#include "bld/core/error.hpp"
#include "bld/projection/distributions.hpp"
#include "bld/backends/reference/row_pass.hpp"
#include "bld/math/shared_math.hpp"
#include "bld/vocab/trie.hpp"

#include <algorithm>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace bld {

/// The chunked sort plan of the row pass for one column layout.
struct row_pass_plan {
    std::uint32_t columns = 0;  ///< V: the columns with a bin (the row's first V columns)
    std::uint32_t chunks = 0;   ///< ⌈V / chunk_columns⌉
    /// [chunks × chunk_columns]: sorted position → math::plan_entry(local column, bin).
    std::vector<std::uint32_t> entries;

    /// The plan for rows whose column c has root bin `bins[c]` (root_bins(trie) for rows in
    /// token-id order; ignored_bin for absent ids).
    /// @throws value_error for a bin outside 0..256 that is not ignored_bin, or more than
    ///         2³² − chunk_columns columns.
    [[nodiscard]] static row_pass_plan build(std::span<const std::uint16_t> bins) {
        constexpr std::uint32_t C = math::chunk_columns;
        if (bins.size() > 0xFFFFFFFFull - C)
            throw value_error("bld::row_pass_plan", "bins", "more columns than a 32-bit plan holds");
        row_pass_plan p;
        p.columns = static_cast<std::uint32_t>(bins.size());
        p.chunks = (p.columns + C - 1) / C;
        p.entries.resize(static_cast<std::size_t>(p.chunks) * C);
        for (std::uint32_t c = 0; c < p.chunks; ++c) {
            std::uint32_t* e = p.entries.data() + static_cast<std::size_t>(c) * C;
            for (std::uint32_t k = 0; k < C; ++k) {
                const std::size_t col = static_cast<std::size_t>(c) * C + k;
                std::uint32_t bin = math::ignored_key;
                if (col < bins.size() && bins[col] != ignored_bin) {
                    bin = bins[col];
                    if (bin >= static_cast<std::uint32_t>(math::root_bins))
                        throw value_error("bld::row_pass_plan", "column " + std::to_string(col),
                                          "root bin " + std::to_string(bin) + " is outside 0..256");
                }
                e[k] = math::plan_entry(k, bin);
            }
            // Stable by bin: within a bin, columns stay in id order.
            std::stable_sort(e, e + C, [](std::uint32_t a, std::uint32_t b) {
                return math::entry_bin(a) < math::entry_bin(b);
            });
        }
        return p;
    }
};

/// A node-sum request: the sums of trie node `node` in teacher row `row`.
struct node_request {
    std::uint32_t row = 0;
    std::uint32_t node = 0;
};

/// The canonical path of one text, as requests and positions (see canonical_path_from).
struct canonical_plan {
    std::string bytes;                              ///< the text bytes (L)
    std::uint32_t tokens = 0;                       ///< m: rows 0..m−1 are read
    std::vector<node_request> requests;             ///< one per (token j, depth d)
    std::vector<std::uint32_t> request_token;       ///< j of each request (messages)
    std::vector<math::canonical_position> positions; ///< L positions, then the last token's check

    /// Checks the ids (and the text) as canonical_path does and plans every position.
    /// @throws value_error / alignment_error exactly as canonical_path (detail::check_ids).
    [[nodiscard]] static canonical_plan build(const byte_trie& trie, std::span<const std::int64_t> ids,
                                              std::optional<std::string_view> text = std::nullopt) {
        const char* op = "canonical-path projection";
        canonical_plan p;
        p.bytes = bld::detail::check_ids(trie, ids, text, op);
        p.tokens = static_cast<std::uint32_t>(ids.size());
        const auto& v = trie.vocab();
        const std::size_t m = ids.size();
        p.positions.reserve(p.bytes.size() + 1);
        math::canonical_position root;
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
                math::canonical_position pos;
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
