// Shared test helper: checks every structural property of a byte_trie against brute force
// over its vocabulary. Used on random tiny vocabularies and on the real ones.
#pragma once

#include <bld/vocab/trie.hpp>
#include <doctest/doctest.h>

#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

namespace bld_test {

/// Returns the number of failed checks (and reports the first few through doctest).
inline void check_trie_invariants(const bld::byte_trie& trie) {
    const auto& v = trie.vocab();
    const auto order = trie.order();
    const auto nodes = trie.nodes();
    // The order holds exactly the text tokens, sorted by bytes, ties by id.
    std::size_t n_text = 0;
    for (std::size_t id = 0; id < v.size(); ++id) n_text += v.kinds()[id] == bld::token_kind::text;
    REQUIRE(order.size() == n_text);
    for (std::size_t k = 1; k < order.size(); ++k) {
        const auto a = v.bytes(order[k - 1]), b = v.bytes(order[k]);
        const bool ok = a < b || (a == b && order[k - 1] < order[k]);
        if (!ok) FAIL_CHECK("order not sorted at position " << k);
    }
    for (std::size_t k = 0; k < order.size(); ++k)
        if (trie.position()[order[k]] != k) FAIL_CHECK("position() is not the inverse of order() at " << k);

    // Node count = number of distinct byte prefixes of the text tokens (empty prefix included).
    std::unordered_set<std::string_view> prefixes;
    for (auto id : order) {
        const auto b = v.bytes(id);
        for (std::size_t len = 0; len <= b.size(); ++len) prefixes.insert(b.substr(0, len));
    }
    CHECK(trie.node_count() == prefixes.size());

    // Walk the trie from the root, carrying the prefix; check each node against its range.
    struct item {
        std::uint32_t node;
        std::string prefix;
    };
    std::vector<item> stack{{bld::byte_trie::root, {}}};
    std::size_t visited = 0, failures = 0;
    const auto fail = [&](const std::string& what) {
        if (failures++ < 10) FAIL_CHECK(what);
    };
    while (!stack.empty()) {
        auto [n, prefix] = std::move(stack.back());
        stack.pop_back();
        ++visited;
        const auto& nd = nodes[n];
        if (nd.depth != prefix.size()) fail("depth mismatch at node " + std::to_string(n));
        if (!(nd.lo <= nd.end_hi && nd.end_hi <= nd.hi && nd.hi <= order.size())) fail("bad range at node " + std::to_string(n));
        // Every token in [lo, hi) starts with the prefix; [lo, end_hi) equal it.
        for (auto k = nd.lo; k < nd.hi; ++k) {
            const auto b = v.bytes(order[k]);
            if (b.substr(0, prefix.size()) != prefix) fail("token outside its node's prefix at position " + std::to_string(k));
            if ((k < nd.end_hi) != (b.size() == prefix.size())) fail("end tokens are not first at node " + std::to_string(n));
        }
        // The range is maximal: neighbours do not start with the prefix.
        if (nd.lo > 0 && v.bytes(order[nd.lo - 1]).substr(0, prefix.size()) == prefix) fail("range not maximal (lo)");
        if (nd.hi < order.size() && v.bytes(order[nd.hi]).substr(0, prefix.size()) == prefix) fail("range not maximal (hi)");
        // Children partition [end_hi, hi) contiguously, in increasing byte order.
        auto expect = nd.end_hi;
        int last_byte = -1;
        for (std::size_t c = 0; c < nd.child_count(); ++c) {
            const auto ci = nd.first_child + static_cast<std::uint32_t>(c);
            const auto& ch = nodes[ci];
            if (ch.lo != expect) fail("children not contiguous at node " + std::to_string(n));
            if (static_cast<int>(ch.byte) <= last_byte) fail("children not in byte order at node " + std::to_string(n));
            if (ch.hi <= ch.lo) fail("empty child at node " + std::to_string(n));
            if (trie.child(n, ch.byte) != ci) fail("child() does not find child " + std::to_string(ci));
            last_byte = ch.byte;
            expect = ch.hi;
            stack.push_back({ci, prefix + static_cast<char>(ch.byte)});
        }
        if (expect != nd.hi) fail("children do not cover the range at node " + std::to_string(n));
        if (n == 0 && failures > 0) break;
    }
    CHECK(visited == trie.node_count());
    // The node found for each token's bytes contains that token among its end tokens.
    for (std::uint32_t id = 0; id < v.size(); ++id) {
        if (v.kinds()[id] != bld::token_kind::text) continue;
        const auto n = trie.find(v.bytes(id));
        if (n == bld::byte_trie::npos) { fail("find() misses token " + std::to_string(id)); continue; }
        const auto pos = trie.position()[id];
        if (!(nodes[n].lo <= pos && pos < nodes[n].end_hi)) fail("token " + std::to_string(id) + " not an end token of its node");
    }
    CHECK(failures == 0);
}

} // namespace bld_test
