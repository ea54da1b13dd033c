// bld/projection.hpp — teacher next-token rows → next-byte distributions (design.md §3).
//
//  * canonical_path   — online, one teacher pass over the teacher's own tokenization (§3.1);
//  * covering_beam    — Vieira-style beam over covering token paths, teacher called for new
//                       contexts in batches (§3.2);
//  * exact_covering   — enumeration of every covering path; the oracle for the other two (§3.3);
//  * canonical_path_topk — canonical path from top-k rows with an explicit residual bucket (§3.4).
//
// Every result is a [positions, 260] array of probabilities (bytes 0..255, STOP = 256, 257..259
// reserved and zero) with, per position, the mass the method dropped or pruned.
//
// The byte-level prefix probability of x[0..i) sums over every token string that covers it: all
// tokens but the last decode to a strict prefix of x[0..i), the last runs to or past byte i.
// The next-byte distribution is P(x[0..i]·a) / P(x[0..i)); STOP carries P(x[0..i) then a special
// token) / P(x[0..i)). All encodings count, not only canonical ones.
#pragma once

#include "bld/error.hpp"
#include "bld/row_pass.hpp"
#include "bld/tensor.hpp"
#include "bld/trie.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <map>
#include <numeric>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace bld {

/// Next-byte distributions for consecutive byte positions.
struct byte_distributions {
    std::size_t positions = 0;
    std::vector<double> probs;   ///< [positions, 260]
    std::vector<double> dropped; ///< [positions]: share of the conditioning mass dropped / pruned
    std::vector<double> bound;   ///< [positions]: total-variation error bound (top-k rows; else 0)
    /// covering_beam: bytes at which every kept hypothesis gave the observed byte no mass, so
    /// pruned hypotheses were brought back (the distribution at that byte gave it probability 0).
    std::size_t recoveries = 0;

    [[nodiscard]] std::span<const double> at(std::size_t i) const noexcept {
        return {probs.data() + i * alphabet_size, alphabet_size};
    }
    [[nodiscard]] std::span<double> at(std::size_t i) noexcept { return {probs.data() + i * alphabet_size, alphabet_size}; }
    void resize(std::size_t n) {
        positions = n;
        probs.assign(n * alphabet_size, 0.0);
        dropped.assign(n, 0.0);
        bound.assign(n, 0.0);
    }
};

namespace detail {

/// Normalises a 257-slot numerator into row i of `out`; throws if it has no mass.
inline void normalise_into(byte_distributions& out, std::size_t i, const double* num, const char* op) {
    double z = 0;
    for (std::size_t a = 0; a < 257; ++a) z += num[a];
    if (!(z > 0) || !std::isfinite(z))
        throw value_error(op, "byte offset " + std::to_string(i),
                          "the teacher gives the text up to here no probability mass (all covering paths have "
                          "probability 0 or underflow)");
    auto row = out.at(i);
    for (std::size_t a = 0; a < 257; ++a) row[a] = num[a] / z;
}

/// Checks that the ids are text tokens whose bytes concatenate to `text` (if given); returns the
/// concatenated bytes. Errors name the position, id and first differing byte offset.
inline std::string check_ids(const byte_trie& trie, std::span<const std::int64_t> ids,
                             std::optional<std::string_view> text, const char* op) {
    const auto& v = trie.vocab();
    if (ids.empty()) throw value_error(op, "ids", "empty text: no token ids");
    std::string bytes;
    for (std::size_t j = 0; j < ids.size(); ++j) {
        const auto id = ids[j];
        if (id < 0 || static_cast<std::uint64_t>(id) >= v.size())
            throw value_error(op, "token position " + std::to_string(j),
                              "id " + std::to_string(id) + " is outside the vocabulary of " + std::to_string(v.size()) +
                                  " ids (" + v.source() + ")");
        const auto k = v.kinds()[static_cast<std::size_t>(id)];
        if (k != token_kind::text)
            throw value_error(op, "token position " + std::to_string(j),
                              "id " + std::to_string(id) + " is a " + (k == token_kind::special ? "special" : "absent") +
                                  " token; a text's ids are its text tokens only (pass BOS and other context "
                                  "separately)");
        bytes += v.unchecked_bytes(static_cast<std::size_t>(id));
    }
    if (text && bytes != *text) {
        std::size_t d = 0;
        while (d < bytes.size() && d < text->size() && bytes[d] == (*text)[d]) ++d;
        std::size_t j = 0, o = 0;
        while (j < ids.size() && o + v.unchecked_bytes(static_cast<std::size_t>(ids[j])).size() <= d) {
            o += v.unchecked_bytes(static_cast<std::size_t>(ids[j])).size();
            ++j;
        }
        throw alignment_error(op, "byte offset " + std::to_string(d) + " (token position " + std::to_string(j) + ")",
                              "the ids' bytes (" + std::to_string(bytes.size()) + ") differ from the text (" +
                                  std::to_string(text->size()) + " bytes) first at this offset");
    }
    return bytes;
}

} // namespace detail

// ---------------------------------------------------------------------------------------------
// Row sources for the canonical path: dense logits rows, or top-k rows with a residual.

/// Dense rows of logits [rows, n ≥ vocab].
template <class T>
class dense_rows {
public:
    dense_rows(const byte_trie& trie, tensor_view<const T, 2> rows)
        : trie_(&trie), rows_(rows), bins_(root_bins(trie)) {}
    [[nodiscard]] std::size_t count() const noexcept { return static_cast<std::size_t>(rows_.extent(0)); }
    [[nodiscard]] std::span<const T> row(std::size_t j) const noexcept {
        return {rows_.data() + j * static_cast<std::size_t>(rows_.extent(1)), static_cast<std::size_t>(rows_.extent(1))};
    }
    /// Root masses (probabilities), validating the row.
    [[nodiscard]] row_summary summary(std::size_t j) const { return summarize_row(*trie_, bins_, row(j), j); }
    /// Node sums with a node-local shift; `to_probability` converts them to probabilities.
    double node(std::size_t j, const row_summary& s, byte_trie::node_index n, node_sums& out) const {
        const double shift = node_max_logit(*trie_, row(j), n);
        if (!(shift > -std::numeric_limits<double>::infinity())) {
            out = node_sums{};
            return 0.0;
        }
        sum_node(*trie_, row(j), n, shift, out);
        return std::exp(shift - s.max_logit - s.log_normalizer);
    }
    [[nodiscard]] double residual(std::size_t) const noexcept { return 0.0; }

private:
    const byte_trie* trie_;
    tensor_view<const T, 2> rows_;
    std::vector<std::uint16_t> bins_;
};

/// Top-k rows: per row, k (id, logit) pairs and the residual mass r ∈ [0, 1) of the ids not
/// listed. The listed ids get (1 − r)·softmax(logits over the listed ids); the residual is an
/// explicit bucket of unknown bytes, so every byte distribution is normalised over the listed
/// mass and carries a total-variation bound r / (M + r) (M: listed mass of the conditioning node).
class topk_rows {
public:
    /// @param ids      [rows, k] token ids (−1 = padding, ignored)
    /// @param logits   [rows, k]
    /// @param residual [rows] mass not listed, in [0, 1)
    topk_rows(const byte_trie& trie, tensor_view<const std::int64_t, 2> ids, tensor_view<const float, 2> logits,
              std::span<const double> residual)
        : trie_(&trie) {
        const char* op = "top-k teacher rows";
        if (ids.extent(0) != logits.extent(0) || ids.extent(1) != logits.extent(1))
            throw shape_error(op, "ids / logits", "ids and logits must have the same shape [rows, k]");
        if (residual.size() != static_cast<std::size_t>(ids.extent(0)))
            throw shape_error(op, "residual", "one residual per row: expected " + std::to_string(ids.extent(0)) +
                                                  ", got " + std::to_string(residual.size()));
        const auto& v = trie.vocab();
        const auto R = static_cast<std::size_t>(ids.extent(0)), K = static_cast<std::size_t>(ids.extent(1));
        rows_.resize(R);
        for (std::size_t r = 0; r < R; ++r) {
            const double res = residual[r];
            if (!(res >= 0.0 && res < 1.0))
                throw value_error(op, "row " + std::to_string(r), "the residual mass must be in [0, 1), got " + std::to_string(res));
            double m = -std::numeric_limits<double>::infinity();
            for (std::size_t c = 0; c < K; ++c) {
                const auto id = ids(static_cast<std::int64_t>(r), static_cast<std::int64_t>(c));
                const double z = logits(static_cast<std::int64_t>(r), static_cast<std::int64_t>(c));
                if (id == -1) continue;
                if (id < 0 || static_cast<std::uint64_t>(id) >= v.size())
                    throw value_error(op, "row " + std::to_string(r) + ", entry " + std::to_string(c),
                                      "id " + std::to_string(id) + " is outside the vocabulary");
                if (std::isnan(z) || z == std::numeric_limits<double>::infinity()) detail::bad_logit(r, c, z, op);
                m = std::max(m, z);
            }
            if (!(m > -std::numeric_limits<double>::infinity()))
                throw value_error(op, "row " + std::to_string(r), "no finite logit among the listed ids");
            auto& row = rows_[r];
            row.residual = res;
            double z = 0;
            for (std::size_t c = 0; c < K; ++c) {
                const auto id = ids(static_cast<std::int64_t>(r), static_cast<std::int64_t>(c));
                if (id == -1) continue;
                const double e = std::exp(static_cast<double>(logits(static_cast<std::int64_t>(r), static_cast<std::int64_t>(c))) - m);
                row.entries.push_back({static_cast<std::uint32_t>(id), e});
                z += e;
            }
            for (auto& e : row.entries) e.p = e.p / z * (1.0 - res);
        }
    }
    [[nodiscard]] std::size_t count() const noexcept { return rows_.size(); }
    /// Root masses over the listed ids, normalised to sum to 1 (the residual is reported apart).
    [[nodiscard]] row_summary summary(std::size_t j) const {
        row_summary s;
        const auto& v = trie_->vocab();
        double listed = 0;
        for (const auto& e : rows_[j].entries) {
            const auto k = v.kinds()[e.id];
            if (k == token_kind::absent) continue;
            const std::size_t bin = k == token_kind::special ? stop_symbol : static_cast<std::uint8_t>(v.unchecked_bytes(e.id)[0]);
            s.root[bin] += e.p;
            listed += e.p;
        }
        if (listed > 0)
            for (auto& x : s.root) x /= listed;
        s.log_normalizer = std::log(listed); // listed probability mass
        return s;
    }
    /// Node sums in probability units.
    double node(std::size_t j, const row_summary&, byte_trie::node_index n, node_sums& out) const {
        out = node_sums{};
        const auto& nd = trie_->node(n);
        const auto pos = trie_->position();
        for (const auto& e : rows_[j].entries) {
            const auto k = pos[e.id];
            if (k == byte_trie::no_position || k < nd.lo || k >= nd.hi) continue;
            if (k < nd.end_hi) {
                out.end += e.p;
            } else {
                const auto b = static_cast<std::uint8_t>(trie_->vocab().unchecked_bytes(e.id)[nd.depth]);
                out.child[b] += e.p;
            }
        }
        return 1.0;
    }
    [[nodiscard]] double residual(std::size_t j) const noexcept { return rows_[j].residual; }

private:
    struct entry {
        std::uint32_t id;
        double p;
    };
    struct row_t {
        std::vector<entry> entries;
        double residual = 0;
    };
    const byte_trie* trie_;
    std::vector<row_t> rows_;
};

/// Canonical-path projection over any row source (dense_rows or topk_rows).
///
/// Row j (0-based) is the teacher's distribution of token j of the text given the tokens before
/// it. For byte i inside token j at depth d ≥ 1 with s = the first d bytes of t_j:
///     P(a) ∝ M_j(s·a)                         (tokens ending exactly at i are dropped: E_j(s)/M_j(s))
/// at a boundary i = o_{j+1}:
///     P(a) ∝ M_j(b(t_j)·a) + E_j(b(t_j)) · root_{j+1}(a)     (STOP only through root_{j+1})
/// and at byte 0 P = root_0. After a boundary the path follows t_{j+1}: the share h of the
/// long-token hypothesis for the observed byte is dropped at the next position, which reports
/// 1 − (1 − h)(1 − E/M).
/// @returns [text bytes, 260] distributions; `dropped` as above; `bound` (top-k) the TV bound.
template <class Rows>
[[nodiscard]] byte_distributions canonical_path_from(const byte_trie& trie, const Rows& rows,
                                                     std::span<const std::int64_t> ids,
                                                     std::optional<std::string_view> text = std::nullopt) {
    const char* op = "canonical-path projection";
    const std::string bytes = detail::check_ids(trie, ids, text, op);
    const std::size_t m = ids.size(), L = bytes.size();
    if (rows.count() < m)
        throw shape_error(op, "rows", "one teacher row per token is needed: " + std::to_string(m) + " tokens, " +
                                          std::to_string(rows.count()) + " rows");
    const auto& v = trie.vocab();
    byte_distributions out;
    out.resize(L);
    std::array<double, 257> num{};
    node_sums ns;
    row_summary cur = rows.summary(0);
    double carry_h = 0.0; // share of the long-token hypothesis at the previous boundary
    std::size_t o = 0;
    for (std::size_t j = 0; j < m; ++j) {
        const auto tb = v.unchecked_bytes(static_cast<std::size_t>(ids[j]));
        const double res = rows.residual(j);
        if (j == 0) {
            std::copy(cur.root.begin(), cur.root.end(), num.begin());
            detail::normalise_into(out, 0, num.data(), op);
            out.bound[0] = res;
        }
        auto n = byte_trie::root;
        for (std::size_t d = 1; d <= tb.size(); ++d) {
            n = trie.child(n, static_cast<std::uint8_t>(tb[d - 1]));
            const double to_p = rows.node(j, cur, n, ns);
            const std::size_t i = o + d;
            const double M = ns.total();
            if (!(M > 0) && res > 0) {
                // Top-k row that lists none of this token's prefix: the conditional is unknown.
                // Fall back (next row's root at a boundary, uniform bytes inside) with bound 1.
                const std::size_t i2 = o + d;
                if (d < tb.size()) {
                    for (std::size_t a = 0; a < 256; ++a) out.at(i2)[a] = 1.0 / 256.0;
                    out.bound[i2] = 1.0;
                    out.dropped[i2] = carry_h;
                    carry_h = 0.0;
                } else if (j + 1 < m) {
                    cur = rows.summary(j + 1);
                    for (std::size_t a = 0; a < 257; ++a) out.at(i2)[a] = cur.root[a];
                    out.bound[i2] = 1.0;
                    out.dropped[i2] = carry_h;
                    carry_h = 0.0;
                }
                continue;
            }
            if (!(M > 0))
                throw value_error(op, "token position " + std::to_string(j) + " (id " + std::to_string(ids[j]) + ", row " +
                                          std::to_string(j) + ")",
                                  "the teacher row gives this token's prefix probability 0");
            const double listed_M = M * to_p;
            if (d < tb.size()) {
                // Inside the token: continue with the tokens that run on past byte i.
                for (std::size_t a = 0; a < 256; ++a) num[a] = ns.child[a];
                num[stop_symbol] = 0;
                detail::normalise_into(out, i, num.data(), op);
                out.dropped[i] = 1.0 - (1.0 - carry_h) * (1.0 - ns.end / M);
                out.bound[i] = res / (listed_M + res);
                carry_h = 0.0;
            } else if (j + 1 < m) {
                // Boundary: tokens of row j running on, plus t_j (and duplicates) then row j+1.
                const row_summary next = rows.summary(j + 1);
                for (std::size_t a = 0; a < 257; ++a) num[a] = (a < 256 ? ns.child[a] : 0.0) + ns.end * next.root[a];
                detail::normalise_into(out, i, num.data(), op);
                out.dropped[i] = carry_h;
                out.bound[i] = res / (listed_M + res) + rows.residual(j + 1);
                const auto x = static_cast<std::uint8_t>(bytes[i]);
                const double keep = ns.end * next.root[x], other = ns.child[x];
                carry_h = (keep + other) > 0 ? other / (keep + other) : 0.0;
                cur = next;
            }
        }
        o += tb.size();
    }
    return out;
}

/// Canonical-path projection from dense logits rows [rows ≥ tokens, n ≥ vocab] (float, bf16 or
/// double). `text`, if given, must equal the ids' bytes (else bld::alignment_error with the first
/// differing offset).
template <class T>
[[nodiscard]] byte_distributions canonical_path(const byte_trie& trie, tensor_view<const T, 2> rows,
                                                std::span<const std::int64_t> ids,
                                                std::optional<std::string_view> text = std::nullopt) {
    return canonical_path_from(trie, dense_rows<T>(trie, rows), ids, text);
}

/// Canonical-path projection from top-k rows (see topk_rows).
[[nodiscard]] inline byte_distributions canonical_path_topk(const byte_trie& trie, const topk_rows& rows,
                                                            std::span<const std::int64_t> ids,
                                                            std::optional<std::string_view> text = std::nullopt) {
    return canonical_path_from(trie, rows, ids, text);
}

// ---------------------------------------------------------------------------------------------
// Teachers for the covering methods.

/// A teacher the covering methods can call: given a batch of token contexts (text token ids;
/// the teacher adds its own BOS or prompt), it writes one row of logits per context.
/// `out` is resized to contexts.size() × row_size(), row-major.
template <class T>
concept teacher_model = requires(T& t, const std::vector<std::vector<std::int32_t>>& contexts, std::vector<float>& out) {
    { t.row_size() } -> std::convertible_to<std::size_t>;
    t.logits(contexts, out);
};

/// A teacher whose rows depend on the context only through a key (a Markov teacher: an n-gram
/// model's last n−1 tokens). Covering methods then merge paths with equal keys, exactly.
template <class T>
concept keyed_teacher = teacher_model<T> && requires(const T& t, const std::vector<std::int32_t>& ctx) {
    { t.context_key(ctx) } -> std::convertible_to<std::uint64_t>;
};

/// A toy teacher anyone can run: a bigram model given as a [vocab + 1, n] float matrix; row 0
/// holds the logits at the start of the text, row v + 1 the logits after token v.
class bigram_teacher {
public:
    bigram_teacher(tensor_view<const float, 2> table, std::size_t vocab_size) : table_(table) {
        if (static_cast<std::size_t>(table.extent(0)) != vocab_size + 1)
            throw shape_error("bigram teacher", "table",
                              "expected " + std::to_string(vocab_size + 1) + " rows (vocab size + 1), got " +
                                  std::to_string(table.extent(0)));
    }
    [[nodiscard]] std::size_t row_size() const noexcept { return static_cast<std::size_t>(table_.extent(1)); }
    [[nodiscard]] std::uint64_t context_key(const std::vector<std::int32_t>& ctx) const noexcept {
        return ctx.empty() ? 0 : static_cast<std::uint64_t>(ctx.back()) + 1;
    }
    void logits(const std::vector<std::vector<std::int32_t>>& contexts, std::vector<float>& out) const {
        const std::size_t n = row_size();
        out.resize(contexts.size() * n);
        for (std::size_t c = 0; c < contexts.size(); ++c) {
            const auto r = context_key(contexts[c]);
            const float* src = table_.data() + r * n;
            std::copy(src, src + n, out.data() + c * n);
            ++calls_rows_;
        }
    }
    /// Rows served so far (for overhead measurements).
    [[nodiscard]] std::size_t rows_served() const noexcept { return calls_rows_; }

private:
    tensor_view<const float, 2> table_;
    mutable std::size_t calls_rows_ = 0;
};

namespace detail {

/// Rows fetched from a teacher, with their summaries; node sums on demand.
struct row_store {
    std::vector<std::vector<float>> rows;
    std::vector<row_summary> sums;
    std::vector<std::uint16_t> bins;
    std::size_t n = 0;
};

template <class Teacher>
inline void fetch_rows(Teacher& teacher, const byte_trie& trie, row_store& store,
                       const std::vector<std::vector<std::int32_t>>& contexts, std::vector<std::size_t>& handles) {
    handles.clear();
    if (contexts.empty()) return;
    std::vector<float> buf;
    teacher.logits(contexts, buf);
    const std::size_t n = teacher.row_size();
    if (buf.size() != contexts.size() * n)
        throw shape_error("covering projection", "teacher output",
                          "the teacher wrote " + std::to_string(buf.size()) + " logits for " + std::to_string(contexts.size()) +
                              " contexts of row size " + std::to_string(n));
    for (std::size_t c = 0; c < contexts.size(); ++c) {
        std::vector<float> row(buf.begin() + static_cast<std::ptrdiff_t>(c * n), buf.begin() + static_cast<std::ptrdiff_t>((c + 1) * n));
        store.sums.push_back(summarize_row(trie, store.bins, std::span<const float>(row), store.rows.size()));
        store.rows.push_back(std::move(row));
        handles.push_back(store.rows.size() - 1);
    }
}

/// Probability-unit node sums of a stored row.
inline void stored_node(const byte_trie& trie, const row_store& store, std::size_t h, byte_trie::node_index n, node_sums& out) {
    const auto& s = store.sums[h];
    sum_node(trie, std::span<const float>(store.rows[h]), n, s.max_logit, out);
    const double inv = std::exp(-s.log_normalizer);
    out.end *= inv;
    for (auto& c : out.child) c *= inv;
}

template <class Teacher>
inline std::uint64_t key_of(const Teacher& t, const std::vector<std::int32_t>& ctx) {
    if constexpr (keyed_teacher<Teacher>) return static_cast<std::uint64_t>(t.context_key(ctx));
    else return 0;
}

} // namespace detail

/// Options of the exact enumeration.
struct exact_options {
    /// Refuse texts whose covering paths need more states than this (keyed teachers merge paths,
    /// so for them this bounds (offset, key) pairs).
    std::size_t max_states = std::size_t{1} << 20;
};

/// Exact covering enumeration: every token path that decodes exactly to a prefix x[0..o) is a
/// state with its probability; each contributes, for every i ≥ o, the masses of its row's tokens
/// starting with x[o..i) (and at i = o its STOP mass). For keyed (Markov) teachers, states with
/// equal (offset, key) merge. Cost grows with the number of segmentations: for small
/// vocabularies and short texts — the oracle the other methods are held against.
/// @returns [text bytes + 1, 260]: row i is the distribution of byte i given x[0..i); the last
///          row is what follows the whole text (STOP included).
template <teacher_model Teacher>
[[nodiscard]] byte_distributions exact_covering(const byte_trie& trie, Teacher& teacher, std::string_view text,
                                                const exact_options& opt = {}) {
    const char* op = "exact covering";
    if (text.empty()) throw value_error(op, "text", "empty text");
    const std::size_t L = text.size();
    struct state {
        std::vector<std::int32_t> ctx;
        double w;
    };
    std::vector<std::vector<state>> at(L + 1);
    std::vector<std::unordered_map<std::uint64_t, std::size_t>> index(L + 1);
    at[0].push_back({{}, 1.0});
    std::vector<double> num((L + 1) * 257, 0.0);
    detail::row_store store;
    store.bins = root_bins(trie);
    std::size_t total_states = 1;
    node_sums ns;
    std::vector<std::size_t> handles;
    for (std::size_t o = 0; o <= L; ++o) {
        auto& states = at[o];
        if (states.empty()) continue;
        std::vector<std::vector<std::int32_t>> ctxs;
        for (const auto& s : states) ctxs.push_back(s.ctx);
        store.rows.clear();
        store.sums.clear();
        detail::fetch_rows(teacher, trie, store, ctxs, handles);
        for (std::size_t si = 0; si < states.size(); ++si) {
            const auto& st = states[si];
            const auto h = handles[si];
            const auto& sum = store.sums[h];
            for (std::size_t a = 0; a < 257; ++a) num[o * 257 + a] += st.w * sum.root[a];
            auto n = byte_trie::root;
            for (std::size_t i = o + 1; i <= L; ++i) {
                n = trie.child(n, static_cast<std::uint8_t>(text[i - 1]));
                if (n == byte_trie::npos) break;
                detail::stored_node(trie, store, h, n, ns);
                for (std::size_t a = 0; a < 256; ++a) num[i * 257 + a] += st.w * ns.child[a];
                // Tokens ending exactly at i start new states there.
                const auto& nd = trie.node(n);
                for (auto k = nd.lo; k < nd.end_hi; ++k) {
                    const auto id = trie.order()[k];
                    const double p = std::exp(static_cast<double>(store.rows[h][id]) - sum.max_logit - sum.log_normalizer);
                    if (!(p > 0)) continue;
                    auto ctx = st.ctx;
                    ctx.push_back(static_cast<std::int32_t>(id));
                    const auto key = detail::key_of(teacher, ctx);
                    if constexpr (keyed_teacher<Teacher>) {
                        auto it = index[i].find(key);
                        if (it != index[i].end()) {
                            at[i][it->second].w += st.w * p;
                            continue;
                        }
                        index[i].emplace(key, at[i].size());
                    }
                    if (++total_states > opt.max_states)
                        throw value_error(op, "byte offset " + std::to_string(i),
                                          "more than " + std::to_string(opt.max_states) +
                                              " covering states: the text is too long for exact enumeration "
                                              "(use covering_beam)");
                    at[i].push_back({std::move(ctx), st.w * p});
                }
            }
        }
        states.clear();
        states.shrink_to_fit();
    }
    byte_distributions out;
    out.resize(L + 1);
    for (std::size_t i = 0; i <= L; ++i) detail::normalise_into(out, i, num.data() + i * 257, op);
    return out;
}

/// Options of the covering beam.
struct beam_options {
    std::size_t k = 10;    ///< keep at most k hypotheses (0 = unlimited)
    double epsilon = 0.01; ///< prune hypotheses below epsilon × the total mass (0 = never)
};

/// Covering beam (Vieira et al. 2024, design.md §3.2): hypotheses are (token path, trie node in
/// the path's next-token row, weight). At each byte, hypotheses whose node ends tokens spawn
/// new paths (one batched teacher call for all new contexts), then those below ε of the total
/// mass are pruned, the top K kept, the distribution read off, and every hypothesis follows
/// the observed byte. With K = ∞ and ε = 0 it equals exact_covering. If no kept hypothesis can
/// take the observed byte (a narrow beam kept only paths inside longer tokens), the best pruned
/// hypotheses that can are brought back, and `recoveries` counts such bytes.
/// @returns [text bytes + 1, 260] as exact_covering; `dropped` = mass pruned at each byte.
template <teacher_model Teacher>
[[nodiscard]] byte_distributions covering_beam(const byte_trie& trie, Teacher& teacher, std::string_view text,
                                               const beam_options& opt = {}) {
    const char* op = "covering beam";
    if (text.empty()) throw value_error(op, "text", "empty text");
    if (!(opt.epsilon >= 0.0 && opt.epsilon < 1.0))
        throw value_error(op, "epsilon", "must be in [0, 1), got " + std::to_string(opt.epsilon));
    const std::size_t L = text.size();
    struct hyp {
        std::vector<std::int32_t> ctx;
        std::size_t row; // handle into the store
        byte_trie::node_index node;
        double w;        // probability of the path's tokens
        double mass = 0; // w × (children mass at node, or 1 at the root)
    };
    detail::row_store store;
    store.bins = root_bins(trie);
    std::vector<std::size_t> handles;
    detail::fetch_rows(teacher, trie, store, {{}}, handles);
    std::vector<hyp> beam{{{}, handles[0], byte_trie::root, 1.0}};
    byte_distributions out;
    out.resize(L + 1);
    std::vector<node_sums> sums;
    std::array<double, 257> num{};
    std::size_t out_recoveries = 0;
    for (std::size_t i = 0; i <= L; ++i) {
        // 1. Expansion: end tokens at each hypothesis's node become new root hypotheses.
        sums.assign(beam.size(), node_sums{});
        std::vector<std::vector<std::int32_t>> new_ctx;
        std::vector<double> new_w;
        for (std::size_t h = 0; h < beam.size(); ++h) {
            auto& hy = beam[h];
            if (hy.node == byte_trie::root) continue;
            detail::stored_node(trie, store, hy.row, hy.node, sums[h]);
            const auto& nd = trie.node(hy.node);
            const auto& s = store.sums[hy.row];
            for (auto k = nd.lo; k < nd.end_hi; ++k) {
                const auto id = trie.order()[k];
                const double p = std::exp(static_cast<double>(store.rows[hy.row][id]) - s.max_logit - s.log_normalizer);
                if (!(p > 0)) continue;
                auto ctx = hy.ctx;
                ctx.push_back(static_cast<std::int32_t>(id));
                new_ctx.push_back(std::move(ctx));
                new_w.push_back(hy.w * p);
            }
        }
        if constexpr (keyed_teacher<Teacher>) {
            // Paths with equal keys have equal futures: merge them (exact).
            std::unordered_map<std::uint64_t, std::size_t> seen;
            std::vector<std::vector<std::int32_t>> mc;
            std::vector<double> mw;
            for (std::size_t c = 0; c < new_ctx.size(); ++c) {
                const auto key = detail::key_of(teacher, new_ctx[c]);
                auto [it, fresh] = seen.emplace(key, mc.size());
                if (fresh) {
                    mc.push_back(std::move(new_ctx[c]));
                    mw.push_back(new_w[c]);
                } else {
                    mw[it->second] += new_w[c];
                }
            }
            new_ctx = std::move(mc);
            new_w = std::move(mw);
        }
        // 2. Masses and pruning (before fetching rows for the new contexts: a pruned path
        //    costs no teacher call).
        for (std::size_t h = 0; h < beam.size(); ++h)
            beam[h].mass = beam[h].node == byte_trie::root ? beam[h].w : beam[h].w * sums[h].children_total();
        struct cand {
            double mass;
            std::size_t idx; // < beam.size(): existing; else new context idx − beam.size()
        };
        std::vector<cand> cands;
        double total = 0;
        for (std::size_t h = 0; h < beam.size(); ++h) {
            cands.push_back({beam[h].mass, h});
            total += beam[h].mass;
        }
        for (std::size_t c = 0; c < new_w.size(); ++c) {
            cands.push_back({new_w[c], beam.size() + c});
            total += new_w[c];
        }
        if (!(total > 0))
            throw value_error(op, "byte offset " + std::to_string(i), "every hypothesis has probability 0");
        std::vector<cand> kept;
        for (const auto& c : cands)
            if (c.mass > 0 && c.mass >= opt.epsilon * total) kept.push_back(c);
        std::stable_sort(kept.begin(), kept.end(), [](const cand& a, const cand& b) { return a.mass > b.mass; });
        if (opt.k > 0 && kept.size() > opt.k) kept.resize(opt.k);
        std::sort(kept.begin(), kept.end(), [](const cand& a, const cand& b) { return a.idx < b.idx; });
        double kept_mass = 0;
        for (const auto& c : kept) kept_mass += c.mass;
        out.dropped[i] = 1.0 - kept_mass / total;
        // Fetch rows for the surviving new contexts in one batch.
        std::vector<std::vector<std::int32_t>> fetch;
        for (const auto& c : kept)
            if (c.idx >= beam.size()) fetch.push_back(new_ctx[c.idx - beam.size()]);
        detail::fetch_rows(teacher, trie, store, fetch, handles);
        std::vector<hyp> next;
        std::vector<node_sums> next_sums;
        // Keep what was pruned for this byte: if no kept hypothesis can take the observed byte,
        // the best pruned ones that can are brought back (step 4) instead of failing.
        std::vector<char> is_kept(cands.size(), 0);
        for (const auto& c : kept) is_kept[c.idx] = 1;
        std::vector<hyp> pruned_old;
        std::vector<node_sums> pruned_old_sums;
        std::vector<std::size_t> pruned_new;
        for (std::size_t c = 0; c < cands.size(); ++c) {
            if (is_kept[c] || !(cands[c].mass > 0)) continue;
            if (c < beam.size()) {
                pruned_old.push_back(beam[c]);
                pruned_old_sums.push_back(sums[c]);
            } else {
                pruned_new.push_back(c - beam.size());
            }
        }
        std::size_t f = 0;
        for (const auto& c : kept) {
            if (c.idx < beam.size()) {
                next.push_back(std::move(beam[c.idx]));
                next_sums.push_back(sums[c.idx]);
            } else {
                const auto ci = c.idx - beam.size();
                next.push_back({std::move(new_ctx[ci]), handles[f++], byte_trie::root, new_w[ci], new_w[ci]});
                next_sums.push_back(node_sums{});
            }
        }
        beam = std::move(next);
        // 3. The distribution of byte i.
        num.fill(0.0);
        for (std::size_t h = 0; h < beam.size(); ++h) {
            const auto& hy = beam[h];
            if (hy.node == byte_trie::root) {
                for (std::size_t a = 0; a < 257; ++a) num[a] += hy.w * store.sums[hy.row].root[a];
            } else {
                for (std::size_t a = 0; a < 256; ++a) num[a] += hy.w * next_sums[h].child[a];
            }
        }
        detail::normalise_into(out, i, num.data(), op);
        if (i == L) break;
        // 4. Follow the observed byte.
        const auto x = static_cast<std::uint8_t>(text[i]);
        std::vector<hyp> moved;
        for (auto& hy : beam) {
            const auto c = trie.child(hy.node, x);
            if (c == byte_trie::npos) continue;
            hy.node = c;
            moved.push_back(std::move(hy));
        }
        if (moved.empty()) {
            // Recovery: the kept hypotheses give the observed byte no mass. Bring back the
            // pruned hypotheses that can take it (fetching rows for pruned new contexts in one
            // batch), best first by their mass after the byte, at most K.
            struct back {
                double mass;
                hyp h;
            };
            std::vector<back> backs;
            for (std::size_t h = 0; h < pruned_old.size(); ++h) {
                auto& hy = pruned_old[h];
                const auto c = trie.child(hy.node, x);
                const double m = hy.w * pruned_old_sums[h].child[x];
                if (c == byte_trie::npos || !(m > 0)) continue;
                hy.node = c;
                backs.push_back({m, std::move(hy)});
            }
            std::vector<std::vector<std::int32_t>> ctxs;
            for (auto ci : pruned_new) ctxs.push_back(new_ctx[ci]);
            detail::fetch_rows(teacher, trie, store, ctxs, handles);
            for (std::size_t q = 0; q < pruned_new.size(); ++q) {
                const auto ci = pruned_new[q];
                const double m = new_w[ci] * store.sums[handles[q]].root[x];
                const auto c = trie.child(byte_trie::root, x);
                if (c == byte_trie::npos || !(m > 0)) continue;
                backs.push_back({m, hyp{std::move(ctxs[q]), handles[q], c, new_w[ci], new_w[ci]}});
            }
            std::stable_sort(backs.begin(), backs.end(), [](const back& a, const back& b) { return a.mass > b.mass; });
            if (opt.k > 0 && backs.size() > opt.k) backs.resize(opt.k);
            for (auto& b : backs) moved.push_back(std::move(b.h));
            ++out_recoveries;
        }
        beam = std::move(moved);
        // Drop rows no hypothesis uses any more (keeps memory at O(K) rows).
        std::vector<std::size_t> remap(store.rows.size(), SIZE_MAX);
        detail::row_store compact;
        compact.bins = std::move(store.bins);
        for (auto& hy : beam) {
            if (remap[hy.row] == SIZE_MAX) {
                remap[hy.row] = compact.rows.size();
                compact.rows.push_back(std::move(store.rows[hy.row]));
                compact.sums.push_back(store.sums[hy.row]);
            }
            hy.row = remap[hy.row];
        }
        store = std::move(compact);
        if (beam.empty())
            throw value_error(op, "byte offset " + std::to_string(i + 1),
                              "no token path covers the text up to here (every path has probability 0)");
    }
    out.recoveries = out_recoveries;
    return out;
}

} // namespace bld
