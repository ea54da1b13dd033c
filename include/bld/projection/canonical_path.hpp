// bld/projection/canonical_path.hpp — the canonical-path projection (docs/01_method.md, "Canonical path") over any row
// source, and the reference row sources (dense fp64 rows, top-k rows).
#pragma once

#include "bld/projection/canonical_plan.hpp"
#include "bld/projection/distributions.hpp"

#include "bld/core/alphabet.hpp"
#include "bld/core/error.hpp"
#include "bld/math/canonical_position.hpp"
#include "bld/backends/reference/row_pass.hpp"
#include "bld/core/tensor.hpp"
#include "bld/vocab/trie.hpp"

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

// ---------------------------------------------------------------------------------------------
// Row sources for the canonical path: dense logits rows, or top-k rows with a residual.

namespace reference {

/// Dense rows of logits [rows, n ≥ vocab], read by the reference row pass (fp64).
template <class T>
class dense_rows {
public:
    dense_rows(const byte_trie& trie, tensor_view<const T, 2> rows)
        : trie_(&trie), rows_(rows), bins_(root_bins(trie)) {}
    /// Keeps a pointer to the trie: a temporary one would dangle.
    dense_rows(const byte_trie&& trie, tensor_view<const T, 2> rows) = delete;
    [[nodiscard]] std::size_t count() const noexcept { return static_cast<std::size_t>(rows_.extent(0)); }
    [[nodiscard]] std::span<const T> row(std::size_t j) const noexcept {
        return {rows_.data() + j * static_cast<std::size_t>(rows_.extent(1)), static_cast<std::size_t>(rows_.extent(1))};
    }
    /// Root masses (probabilities), validating the row.
    [[nodiscard]] row_summary summary(std::size_t j) const { return reference::summarize_row(*trie_, bins_, row(j), j); }
    /// Node sums with a node-local shift; `to_probability` converts them to probabilities.
    double node(std::size_t j, const row_summary& s, byte_trie::node_index n, node_sums& out) const {
        const double shift = reference::node_max_logit(*trie_, row(j), n);
        if (!(shift > -std::numeric_limits<double>::infinity())) {
            out = node_sums{};
            return 0.0;
        }
        reference::sum_node(*trie_, row(j), n, shift, out);
        return s.probability(shift);
    }
    [[nodiscard]] double residual(std::size_t) const noexcept { return 0.0; }

private:
    const byte_trie* trie_;
    tensor_view<const T, 2> rows_;
    std::vector<std::uint16_t> bins_;
};

} // namespace reference

/// Top-k rows: per row, k (id, logit) pairs and the residual mass r ∈ [0, 1) of the ids not
/// listed. The listed ids get (1 − r)·softmax(logits over the listed ids); the residual is an
/// explicit bucket of unknown bytes, so every byte distribution is normalised over the listed
/// mass and carries a total-variation bound r / (M + r) (M: listed mass of the conditioning node).
class topk_rows {
public:
    /// @param ids      [rows, k] token ids (−1 = padding, ignored)
    /// @param logits   [rows, k]
    /// @param residual [rows] mass not listed, in [0, 1)
    /// Keeps a pointer to the trie: a temporary one would dangle.
    topk_rows(const byte_trie&& trie, tensor_view<const std::int64_t, 2> ids, tensor_view<const float, 2> logits,
              std::span<const double> residual) = delete;
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
                if (math::is_bad_logit(z)) detail::bad_logit(r, c, z, op);
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
            const auto bin = root_bin_of(v, e.id);
            if (bin == ignored_bin) continue;
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

namespace detail {

/// Position i of the canonical path into `out` (math::canonical_position_body, one lane).
/// @pre the node's mass is > 0 (the caller checked it, with its top-k fallback).
template <class Out>
inline void run_position(math::position_kind kind, const node_sums& ns, const double* row_root, double carry,
                         Out& out, std::size_t i, const char* op) {
    if (math::canonical_position_body(math::host_lanes{}, kind, math::node_sums_ref{ns.end, ns.child.data()}, row_root,
                                      carry, out.probs(i), &out.dropped(i)) != math::position_status::ok)
        throw_no_mass(op, i);
}

/// The sink that fills a byte_distributions.
struct distributions_sink {
    byte_distributions& d;
    [[nodiscard]] double* probs(std::size_t i) noexcept { return d.at(i).data(); }
    [[nodiscard]] double& dropped(std::size_t i) noexcept { return d.dropped[i]; }
    [[nodiscard]] double& bound(std::size_t i) noexcept { return d.bound[i]; }
    void finish(std::size_t) noexcept {}
};

} // namespace detail

/// Where canonical_path_into writes position i (0 ≤ i < text bytes), in this order: probs(i)
/// (260 doubles, zero on entry), dropped(i) and bound(i) (zero on entry), then finish(i) once the
/// position is complete. byte_distributions is filled through one; bld::distiller writes each
/// position straight into the slot that reads it.
template <class S>
concept position_sink = requires(S& s, std::size_t i) {
    { s.probs(i) } -> std::same_as<double*>;
    { s.dropped(i) } -> std::same_as<double&>;
    { s.bound(i) } -> std::same_as<double&>;
    s.finish(i);
};

/// Canonical-path projection over any row source (dense_rows, topk_rows, the fast path's rows).
///
/// Row j (0-based) is the teacher's distribution of token j of the text given the tokens before
/// it. The text is planned once (canonical_plan: one node-sum request per token byte, one
/// position per text byte) and every position is math::canonical_position_body with one lane —
/// the formula the CUDA kernel runs: for byte i inside token j at depth d ≥ 1 with s = the first
/// d bytes of t_j
///     P(a) ∝ M_j(s·a)                         (tokens ending exactly at i are dropped: E_j(s)/M_j(s))
/// at a boundary i = o_{j+1}:
///     P(a) ∝ M_j(b(t_j)·a) + E_j(b(t_j)) · root_{j+1}(a)     (STOP only through root_{j+1})
/// and at byte 0 P = root_0. After a boundary the path follows t_{j+1}: the share h of the
/// long-token hypothesis for the observed byte is dropped at the next position, which reports
/// 1 − (1 − h)(1 − E/M).
///
/// The row source gives row summaries (validating a row when first asked), node sums with the
/// factor that turns them into probabilities, and each row's residual (top-k rows). Only this
/// CPU path knows residuals: it keeps the total-variation `bound` of each position
/// (r / (listed M + r), plus the next row's residual at a boundary), and where a top-k row lists
/// none of a token's prefix (M = 0 with a residual) it falls back — uniform bytes inside the
/// token, the next row's root at a boundary — with bound 1.
/// @returns [text bytes, 260] distributions; `dropped` as above; `bound` (top-k) the TV bound.
/// @throws value_error / alignment_error for bad ids or text, shape_error for too few rows, the
///         row source's error for a bad row (when first read), value_error for a prefix of
///         probability 0 or a position without mass.
template <class Rows, position_sink Out>
void canonical_path_into(const canonical_plan& plan, const Rows& rows, std::span<const std::int64_t> ids, Out& out) {
    const char* op = "canonical-path projection";
    const std::size_t m = ids.size();
    if (rows.count() < m)
        throw shape_error(op, "rows", "one teacher row per token is needed: " + std::to_string(m) + " tokens, " +
                                          std::to_string(rows.count()) + " rows");
    node_sums ns, boundary_ns; // this position's node sums; the previous boundary's (for its carry)
    row_summary cur = rows.summary(0); // the summary of the row the current position reads
    for (std::size_t i = 0; i < plan.positions.size(); ++i) {
        const canonical_position& p = plan.positions[i];
        const bool last = p.kind == math::position_kind::check; // the last token's node: its M > 0 check only
        if (p.kind == math::position_kind::root) {
            detail::run_position(p.kind, ns, cur.root.data(), 0.0, out, i, op);
            out.bound(i) = rows.residual(0);
            out.finish(i);
            continue;
        }
        const double carry =
            p.prev_request >= 0 ? math::boundary_carry({boundary_ns.end, boundary_ns.child.data()}, cur.root.data(), p.prev_byte)
                                : 0.0;
        const std::size_t j = plan.requests[p.request].row;
        const double to_p = rows.node(j, cur, plan.requests[p.request].node, ns);
        const double res = rows.residual(j);
        const double M = ns.total();
        if (!(M > 0) && res > 0) {
            // Top-k row that lists none of this token's prefix: the conditional is unknown.
            // Fall back (next row's root at a boundary, uniform bytes inside) with bound 1.
            if (!last) {
                double* probs = out.probs(i);
                if (p.kind == math::position_kind::inside) {
                    for (std::size_t a = 0; a < 256; ++a) probs[a] = 1.0 / 256.0;
                } else if (p.kind == math::position_kind::boundary) {
                    cur = rows.summary(p.next_row);
                    for (std::size_t a = 0; a < root_bin_count; ++a) probs[a] = cur.root[a];
                }
                out.bound(i) = 1.0;
                out.dropped(i) = carry;
                out.finish(i);
            } else if (p.kind == math::position_kind::boundary) {
                cur = rows.summary(p.next_row);
            }
            boundary_ns = ns; // all zero: the next position's carry is 0
            continue;
        }
        if (!(M > 0))
            throw value_error(op, "token position " + std::to_string(j) + " (id " + std::to_string(ids[j]) + ", row " +
                                      std::to_string(j) + ")",
                              "the teacher row gives this token's prefix probability 0");
        if (last) break;
        const double listed = res / (M * to_p + res);
        if (p.kind == math::position_kind::boundary) {
            const row_summary next = rows.summary(p.next_row);
            detail::run_position(p.kind, ns, next.root.data(), carry, out, i, op);
            out.bound(i) = listed + rows.residual(p.next_row);
            out.finish(i);
            cur = next;
            boundary_ns = ns;
        } else {
            detail::run_position(p.kind, ns, nullptr, carry, out, i, op);
            out.bound(i) = listed;
            out.finish(i);
        }
    }
}

/// canonical_path_into a byte_distributions (see canonical_path_into for the algorithm).
template <class Rows>
[[nodiscard]] byte_distributions canonical_path_from(const byte_trie& trie, const Rows& rows,
                                                     std::span<const std::int64_t> ids,
                                                     std::optional<std::string_view> text = std::nullopt) {
    const canonical_plan plan = canonical_plan::build(trie, ids, text);
    byte_distributions out;
    out.resize(plan.bytes.size());
    detail::distributions_sink sink{out};
    canonical_path_into(plan, rows, ids, sink);
    return out;
}

namespace reference {

/// The reference canonical-path projection (fp64 row pass) from dense logits rows
/// [rows ≥ tokens, n ≥ vocab] (float, bf16 or double). `text`, if given, must equal the ids' bytes (else bld::alignment_error with the first
/// differing offset).
template <logit_type T>
[[nodiscard]] byte_distributions canonical_path(const byte_trie& trie, tensor_view<const T, 2> rows,
                                                std::span<const std::int64_t> ids,
                                                std::optional<std::string_view> text = std::nullopt) {
    return canonical_path_from(trie, dense_rows<T>(trie, rows), ids, text);
}

/// reference::canonical_path on rows of any tensor type (span views, Eigen, libtorch; float32,
/// bfloat16, float16 or float64, rank 2; a type that says otherwise fails to compile).
/// @throws shape_error naming `rows` for a wrong rank, dtype, layout or device
template <logit_tensor<2> Rows>
    requires(!std::same_as<std::remove_cvref_t<Rows>, tensor_view<const float, 2>> &&
             !std::same_as<std::remove_cvref_t<Rows>, tensor_view<const bf16, 2>> &&
             !std::same_as<std::remove_cvref_t<Rows>, tensor_view<const f16, 2>> &&
             !std::same_as<std::remove_cvref_t<Rows>, tensor_view<const double, 2>>)
[[nodiscard]] byte_distributions canonical_path(const byte_trie& trie, const Rows& rows, std::span<const std::int64_t> ids,
                                                std::optional<std::string_view> text = std::nullopt) {
    switch (tensor_dtype(rows, "rows")) {
        case dtype::f32: return canonical_path(trie, as_view<const float, 2>(rows, "rows"), ids, text);
        case dtype::bf16: return canonical_path(trie, as_view<const bf16, 2>(rows, "rows"), ids, text);
        case dtype::f16: return canonical_path(trie, as_view<const f16, 2>(rows, "rows"), ids, text);
        case dtype::f64: return canonical_path(trie, as_view<const double, 2>(rows, "rows"), ids, text);
        default:
            throw shape_error("canonical-path projection", "argument `rows`",
                              "expected float32, bfloat16, float16 or float64 logits, got " + detail::describe_tensor(rows));
    }
}

} // namespace reference

/// Canonical-path projection from top-k rows (see topk_rows).
[[nodiscard]] inline byte_distributions canonical_path_topk(const byte_trie& trie, const topk_rows& rows,
                                                            std::span<const std::int64_t> ids,
                                                            std::optional<std::string_view> text = std::nullopt) {
    return canonical_path_from(trie, rows, ids, text);
}

} // namespace bld
