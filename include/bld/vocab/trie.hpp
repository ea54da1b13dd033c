// bld/vocab/trie.hpp — the byte trie of a vocabulary, laid out in sorted token order.
//
// docs/01_method.md, "The sorted trie": sort the text tokens by their byte strings. Every trie
// node (a byte prefix s) is then a contiguous range [lo, hi) of that order: the tokens equal to
// s come first, [lo, end_hi), and the children split [end_hi, hi) into contiguous sub-ranges in
// byte order.
// Every mass a projection needs is a sum over a range of one permuted teacher row.
//
// Layout: nodes are numbered breadth-first, so the children of a node are consecutive node
// indices [first_child, first_child + child_count). A node costs sizeof(trie_node) = 20 bytes;
// the sorted order and its inverse cost 4 bytes per id each.
#pragma once

#include "bld/core/error.hpp"
#include "bld/vocab/vocabulary.hpp"

#include <algorithm>
#include <cstdint>
#include <memory>
#include <numeric>
#include <utility>
#include <span>
#include <string_view>
#include <vector>

namespace bld {

/// One node of the byte trie: the byte prefix of length `depth` shared by sorted positions
/// [lo, hi). Positions [lo, end_hi) hold the tokens whose bytes equal the prefix exactly.
struct trie_node {
    std::uint32_t lo = 0;           ///< first sorted position under this prefix
    std::uint32_t hi = 0;           ///< one past the last
    std::uint32_t end_hi = 0;       ///< [lo, end_hi): tokens that end exactly here
    std::uint32_t first_child = 0;  ///< index of the first child node (children are consecutive)
    std::uint16_t depth = 0;        ///< prefix length in bytes
    std::uint8_t byte = 0;          ///< the last byte of the prefix (0 for the root)
    std::uint8_t child_count_m1 = 0; ///< child count − 1 when has children (see child_count())

    [[nodiscard]] constexpr bool has_children() const noexcept { return end_hi < hi; }
    [[nodiscard]] constexpr unsigned child_count() const noexcept {
        return has_children() ? unsigned{child_count_m1} + 1u : 0u;
    }
};
static_assert(sizeof(trie_node) == 20, "trie_node is meant to stay compact");

/// The sorted byte trie of a vocabulary's text tokens.
class byte_trie {
public:
    using node_index = std::uint32_t;
    static constexpr node_index root = 0;
    static constexpr node_index npos = UINT32_MAX;
    static constexpr std::uint32_t no_position = UINT32_MAX;

    /// The trie of the empty vocabulary: a root with no tokens and no children, so vocab() is
    /// empty, find() of any non-empty prefix is npos, and every consumer sees a valid trie.
    byte_trie() : byte_trie(vocabulary{}) {}

    /// Sorts the text tokens of `vocab` by bytes (ties by id) and builds the nodes. The trie
    /// keeps (shares) the vocabulary, so it can never outlive it.
    explicit byte_trie(vocabulary vocab)
        : vocab_(std::make_shared<const vocabulary>(std::move(vocab))) { build(*vocab_); }
    explicit byte_trie(std::shared_ptr<const vocabulary> vocab) : vocab_(std::move(vocab)) {
        if (!vocab_) throw value_error("build byte trie", "", "null vocabulary");
        build(*vocab_);
    }

    /// Number of nodes, the root included.
    [[nodiscard]] std::size_t node_count() const noexcept { return nodes_.size(); }
    [[nodiscard]] std::span<const trie_node> nodes() const noexcept { return nodes_; }
    /// @pre n < node_count()
    [[nodiscard]] const trie_node& node(node_index n) const noexcept { return nodes_[n]; }

    /// Sorted position → token id, for the text tokens only. [text_tokens]
    [[nodiscard]] std::span<const std::uint32_t> order() const noexcept { return order_; }
    /// Token id → sorted position, or no_position for special and absent ids. [vocab size]
    [[nodiscard]] std::span<const std::uint32_t> position() const noexcept { return position_; }

    /// The children of n, in byte order. @pre n < node_count()
    [[nodiscard]] std::span<const trie_node> children(node_index n) const noexcept {
        const auto& nd = nodes_[n];
        return {nodes_.data() + nd.first_child, nd.child_count()};
    }

    /// The child of n along `byte`, or npos (also for n = npos, and for a moved-from trie,
    /// which has no nodes).
    [[nodiscard]] node_index child(node_index n, std::uint8_t byte) const noexcept {
        if (n >= nodes_.size()) return npos;
        const auto& nd = nodes_[n];
        const unsigned c = nd.child_count();
        if (c == 0) return npos;
        const trie_node* first = nodes_.data() + nd.first_child;
        if (c == 256) return nd.first_child + byte; // dense: every byte present
        const trie_node* it = std::lower_bound(first, first + c, byte,
                                               [](const trie_node& a, std::uint8_t b) { return a.byte < b; });
        if (it == first + c || it->byte != byte) return npos;
        return nd.first_child + static_cast<node_index>(it - first);
    }

    /// The node of a byte prefix (root for the empty prefix), or npos if no token starts with it
    /// (or `from` is not a node).
    [[nodiscard]] node_index find(std::string_view prefix, node_index from = root) const noexcept {
        if (from >= nodes_.size()) return npos;
        node_index n = from;
        for (unsigned char b : prefix) {
            n = child(n, b);
            if (n == npos) return npos;
        }
        return n;
    }

    /// Bytes of the token at a sorted position.
    [[nodiscard]] std::string_view bytes_at(std::uint32_t pos) const noexcept {
        return vocab_->unchecked_bytes(order_[pos]);
    }
    /// The vocabulary (empty for a moved-from trie).
    [[nodiscard]] const vocabulary& vocab() const noexcept { return vocab_ ? *vocab_ : empty_vocabulary(); }

    /// Memory held by the trie's arrays, in bytes.
    [[nodiscard]] std::size_t memory_bytes() const noexcept {
        return nodes_.size() * sizeof(trie_node) + order_.size() * 4 + position_.size() * 4;
    }

private:
    static const vocabulary& empty_vocabulary() noexcept {
        static const vocabulary empty;  // empty containers only: nothing allocates
        return empty;
    }

    void build(const vocabulary& vocab) {
        // Sort by (first 8 bytes as a big-endian integer, then the full bytes, then id): most
        // comparisons are one integer compare, without touching the byte blob.
        struct key_id {
            std::uint64_t key;
            std::uint32_t id;
        };
        std::vector<key_id> keys;
        keys.reserve(vocab.text_tokens());
        for (std::uint32_t id = 0; id < vocab.size(); ++id) {
            if (vocab.kinds()[id] != token_kind::text) continue;
            const auto b = vocab.unchecked_bytes(id);
            std::uint64_t k = 0;
            for (std::size_t i = 0; i < 8; ++i)
                k = (k << 8) | (i < b.size() ? static_cast<std::uint8_t>(b[i]) : 0u);
            keys.push_back({k, id});
        }
        std::sort(keys.begin(), keys.end(), [&](const key_id& a, const key_id& b) {
            if (a.key != b.key) return a.key < b.key;
            const int c = vocab.unchecked_bytes(a.id).compare(vocab.unchecked_bytes(b.id)); // memcmp order
            return c < 0 || (c == 0 && a.id < b.id);
        });
        order_.resize(keys.size());
        for (std::size_t k = 0; k < keys.size(); ++k) order_[k] = keys[k].id;
        position_.assign(vocab.size(), no_position);
        for (std::uint32_t k = 0; k < order_.size(); ++k) position_[order_[k]] = k;

        nodes_.clear();
        nodes_.reserve(order_.size() * 2 + 1);
        const auto n = static_cast<std::uint32_t>(order_.size());
        nodes_.push_back(trie_node{0, n, 0, 0, 0, 0, 0});
        // Breadth-first: node i's children are appended as one consecutive block.
        for (std::size_t i = 0; i < nodes_.size(); ++i) {
            const trie_node nd = nodes_[i];
            const std::size_t d = nd.depth;
            std::uint32_t k = nd.lo;
            while (k < nd.hi && vocab.unchecked_bytes(order_[k]).size() == d) ++k;
            nodes_[i].end_hi = k;
            nodes_[i].first_child = static_cast<std::uint32_t>(nodes_.size());
            unsigned count = 0;
            while (k < nd.hi) {
                const auto b = static_cast<std::uint8_t>(vocab.unchecked_bytes(order_[k])[d]);
                std::uint32_t e = k + 1;
                while (e < nd.hi && static_cast<std::uint8_t>(vocab.unchecked_bytes(order_[e])[d]) == b) ++e;
                nodes_.push_back(trie_node{k, e, 0, 0, static_cast<std::uint16_t>(d + 1), b, 0});
                ++count;
                k = e;
            }
            if (count > 0) nodes_[i].child_count_m1 = static_cast<std::uint8_t>(count - 1);
        }
        nodes_.shrink_to_fit();
    }

    std::shared_ptr<const vocabulary> vocab_;
    std::vector<trie_node> nodes_;
    std::vector<std::uint32_t> order_;
    std::vector<std::uint32_t> position_;
};

} // namespace bld
