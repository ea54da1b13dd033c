// bld/backends/reference/row_pass.hpp — from one row of teacher logits to the trie masses a projection needs.
//
// docs/01_method.md ("The sorted trie"): with the text tokens sorted by bytes, every trie node is a range [lo, hi) of the
// sorted order, so node mass M(s), end mass E(s) and the child masses M(s·a) are sums over
// ranges of the permuted row. The root's children are the first bytes; STOP is the mass of the
// special tokens.
//
// Conventions:
//  * A row may be longer than the vocabulary (padded embedding rows): columns ≥ vocab size are
//    ignored. Ids the tokenizer never assigns (gaps) are ignored likewise. The softmax is taken
//    over the text and special ids, max-shifted.
//  * NaN and +Inf logits are errors; −Inf is a token of probability zero.
//  * Sums are accumulated in fp64 in a fixed order, so results are bit-identical whatever the
//    thread count.
//
// This header is the scalar reference path (the specification); faster paths must agree with
// it within the tolerances stated in their tests.
#pragma once

#include "bld/core/alphabet.hpp"
#include "bld/core/error.hpp"
#include "bld/core/tensor.hpp"
#include "bld/math/root_bins.hpp"
#include "bld/vocab/trie.hpp"

#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <vector>

namespace bld {

/// The bin of an id in the root split: its first byte (0..255) for a text token, stop_symbol
/// for a special token, `ignored_bin` for an absent id.
inline constexpr std::uint16_t ignored_bin = 0xFFFF;
[[nodiscard]] inline std::uint16_t root_bin_of(const vocabulary& v, std::size_t id) noexcept {
    const auto k = v.kinds()[id];
    if (k == token_kind::text) return static_cast<std::uint8_t>(v.unchecked_bytes(id)[0]);
    return k == token_kind::special ? static_cast<std::uint16_t>(stop_symbol) : ignored_bin;
}

/// root_bin_of every id of the trie's vocabulary. [vocab size]
[[nodiscard]] inline std::vector<std::uint16_t> root_bins(const byte_trie& trie) {
    const auto& v = trie.vocab();
    std::vector<std::uint16_t> bins(v.size());
    for (std::size_t id = 0; id < v.size(); ++id) bins[id] = root_bin_of(v, id);
    return bins;
}

/// What one pass over a row gives: its max, the log of its normaliser and the root masses.
struct row_summary {
    double max_logit = 0;      ///< m = max over text + special ids
    double log_normalizer = 0; ///< log Σ exp(z − m) over text + special ids
    /// root[a] = M(a) for bytes a, root[256] = STOP mass; probabilities summing to 1.
    std::array<double, root_bin_count> root{};

    /// e^(z − m − log Σ): the softmax probability of a logit z of this row — or, for z = shift,
    /// the factor that turns sums in units of e^shift into probabilities.
    [[nodiscard]] double probability(double z) const noexcept { return std::exp(z - max_logit - log_normalizer); }
};

/// Node sums of one row at one trie node, in units of exp(shift) (unnormalised).
struct node_sums {
    double end = 0;                 ///< E(s): tokens whose bytes equal s
    std::array<double, 256> child{}; ///< M(s·a)
    [[nodiscard]] double children_total() const noexcept {
        double t = 0;
        for (double c : child) t += c;
        return t;
    }
    [[nodiscard]] double total() const noexcept { return end + children_total(); }
};

namespace detail {

template <class T>
[[nodiscard]] inline double logit_at(const T* row, std::size_t i) noexcept {
    return static_cast<double>(static_cast<float>(row[i]));
}
[[nodiscard]] inline double logit_at(const double* row, std::size_t i) noexcept { return row[i]; }

/// Throws the error for a bad logit (math::is_bad_logit) at (row, column); `column_note` is
/// appended to the place (e.g. the id of a trie-ordered column).
[[noreturn]] inline void bad_logit(std::size_t row, std::size_t col, double z, const std::string& op,
                                   const std::string& column_note = {}) {
    throw value_error(op, "row " + std::to_string(row) + ", column " + std::to_string(col) + column_note,
                      std::isnan(z) ? "the logit is NaN" : "the logit is +Inf (−Inf is allowed: probability 0)");
}

} // namespace detail

/// The scalar fp64 reference path: the specification every fast path is held to.
namespace reference {

/// One pass over a row: validates it, and returns max, normaliser and root masses.
/// @pre row.size() ≥ vocab size (extra columns are ignored); `bins` = root_bins(trie).
/// @throws bld::shape_error for a short row, bld::value_error for NaN / +Inf or a row without a
///         finite logit; `row_index` names the row in messages.
template <class T>
[[nodiscard]] row_summary summarize_row(const byte_trie& trie, std::span<const std::uint16_t> bins,
                                        std::span<const T> row, std::size_t row_index = 0) {
    static_assert(logit_type<T>, "rows are float, double or bf16");
    const std::string op = "teacher row pass";
    const std::size_t V = trie.vocab().size();
    if (row.size() < V)
        throw shape_error(op, "row " + std::to_string(row_index),
                          "the row has " + std::to_string(row.size()) + " logits, fewer than the " +
                              std::to_string(V) + " ids of the vocabulary (" + trie.vocab().source() + ")");
    double m = -std::numeric_limits<double>::infinity();
    for (std::size_t i = 0; i < V; ++i) {
        const double z = detail::logit_at(row.data(), i);
        if (math::is_bad_logit(z)) detail::bad_logit(row_index, i, z, op);
        if (bins[i] != ignored_bin && z > m) m = z;
    }
    if (!(m > -std::numeric_limits<double>::infinity()))
        throw value_error(op, "row " + std::to_string(row_index), "no finite logit among the vocabulary's ids");
    row_summary s;
    s.max_logit = m;
    std::array<double, root_bin_count> acc{};
    for (std::size_t i = 0; i < V; ++i) {
        const auto b = bins[i];
        if (b == ignored_bin) continue;
        acc[b] += std::exp(detail::logit_at(row.data(), i) - m);
    }
    s.log_normalizer = std::log(math::normalise_root(acc.data(), s.root.data()));
    return s;
}

/// The largest logit in a node's range (a shift that keeps the node's sums away from underflow).
template <class T>
[[nodiscard]] double node_max_logit(const byte_trie& trie, std::span<const T> row, byte_trie::node_index n) {
    const auto& nd = trie.node(n);
    const auto order = trie.order();
    double m = -std::numeric_limits<double>::infinity();
    for (auto k = nd.lo; k < nd.hi; ++k) m = std::max(m, detail::logit_at(row.data(), order[k]));
    return m;
}

/// Sums exp(z − shift) over a node's end tokens and over each child's range.
/// @pre the row was validated by summarize_row (no NaN / +Inf, long enough).
template <class T>
void sum_node(const byte_trie& trie, std::span<const T> row, byte_trie::node_index n, double shift, node_sums& out) {
    const auto& nd = trie.node(n);
    const auto order = trie.order();
    out = node_sums{};
    double e = 0;
    for (auto k = nd.lo; k < nd.end_hi; ++k) e += std::exp(detail::logit_at(row.data(), order[k]) - shift);
    out.end = e;
    for (const auto& ch : trie.children(n)) {
        double c = 0;
        for (auto k = ch.lo; k < ch.hi; ++k) c += std::exp(detail::logit_at(row.data(), order[k]) - shift);
        out.child[ch.byte] = c;
    }
}

} // namespace reference

/// Masses of one byte prefix in one row, as probabilities (the `bld-cli masses` output).
struct prefix_masses {
    double node = 0;                 ///< M(s)
    double end = 0;                  ///< E(s)
    double stop = 0;                 ///< mass of the special tokens (row level)
    std::array<double, 256> children{}; ///< M(s·a)
};

namespace reference {

/// M(s), E(s), the child masses and the STOP mass of a row for a byte prefix s (root: empty).
/// A prefix that no token starts with has all masses 0.
template <class T>
[[nodiscard]] prefix_masses masses_for_prefix(const byte_trie& trie, std::span<const std::uint16_t> bins,
                                              std::span<const T> row, std::string_view prefix,
                                              std::size_t row_index = 0) {
    const auto sum = summarize_row(trie, bins, row, row_index);
    prefix_masses pm;
    pm.stop = sum.root[stop_symbol];
    const auto n = trie.find(prefix);
    if (n == byte_trie::npos) return pm;
    node_sums ns;
    sum_node(trie, row, n, sum.max_logit, ns);
    const double inv = sum.probability(sum.max_logit);
    pm.end = ns.end * inv;
    for (std::size_t a = 0; a < 256; ++a) pm.children[a] = ns.child[a] * inv;
    pm.node = ns.total() * inv;
    return pm;
}

} // namespace reference

} // namespace bld
