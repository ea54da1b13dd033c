// Test helper: token ids that spell a text under a vocabulary.
#pragma once

#include <bld/vocab/vocabulary.hpp>
#include <doctest/doctest.h>

#include <cstdint>
#include <string>
#include <vector>

namespace bld_test {

/// Greedy longest-match ids of `text` under `v` (any ids that spell a text will do where the
/// projection only needs a tokenization, not the tokenizer's own).
inline std::vector<std::int64_t> greedy_ids(const bld::vocabulary& v, const std::string& text) {
    std::vector<std::int64_t> ids;
    std::size_t o = 0;
    while (o < text.size()) {
        std::int64_t best = -1;
        std::size_t len = 0;
        for (std::size_t id = 0; id < v.size(); ++id) {
            if (v.kinds()[id] != bld::token_kind::text) continue;
            const auto b = v.bytes(id);
            if (b.size() > len && text.compare(o, b.size(), b) == 0) {
                best = static_cast<std::int64_t>(id);
                len = b.size();
            }
        }
        REQUIRE(best >= 0);
        ids.push_back(best);
        o += len;
    }
    return ids;
}

} // namespace bld_test
