// bld/backends/simd/row_pass.hpp — the fast CPU row pass: SIMD kernels, runtime dispatch, threads.
//
// The same results as the scalar reference (bld/backends/reference/row_pass.hpp: summarize_row, sum_node) within
// the tolerance below, for float, bf16 and f16 rows (double rows take the reference path):
//
//  * summarize_rows — rows in id order, a batch at a time. design.md §2's idea (a): W rows
//    (16 with AVX-512, 8 with AVX2, 4 with SSE2 / NEON) go through the kernel together, so one
//    id's bin update is a single SIMD add across the rows after a W × W transpose; the
//    128k-wide scalar scatter is gone. One pass over memory: a lazy max shift replaces the
//    separate max pass.
//  * summarize_permuted_rows — trie-ordered rows, idea (b): a trainer that permutes its
//    unembedding rows once by row_plan::permutation() gets logits in which every trie
//    node is a contiguous range, and the root masses are 257 contiguous segment sums.
//  * sum_node — a node's end and child sums, as sum_node (the canonical projection's
//    per-byte work), via one gather into sorted order and segment sums.
//
// Tolerance (tests/test_simd.cpp holds every compiled target to it on this machine): every
// root mass, node sum and normaliser agrees with the fp64 reference to relative 1e-5 (|Δ| ≤
// 1e-5·|ref| + 1e-30), so a conditional at a node of mass ≥ 1e-12 keeps ≥ 5 significant
// digits; max_logit is exact. Budget: e^x in float (≤ 5e-7 relative), its argument x = z −
// shift rounded to float (≤ |x|·2^−24 ≤ 5.2e-6 for the |x| ≤ 86.6 that are not flushed), float
// partial sums of ≤ 32 terms (≤ 1.9e-6), the rest in double. Terms below e^−86.6 of the shift
// (≤ 1e-38 of the row's largest) are flushed to zero. Observed errors are ~1e-7.
//
// Determinism: a row's result depends on that row alone — not on the batch it came in, the
// tile it shared, or the thread count — for a given SIMD level. Different levels may differ
// within the tolerance. The level is chosen once per call (simd::level::automatic: the best the
// CPU runs, lowered by BLD_SIMD=scalar|sse2|neon|avx2|avx512).
#pragma once

#include "bld/core/error.hpp"
#include "bld/core/parallel.hpp"
#include "bld/backends/reference/row_pass.hpp"
#include "bld/backends/simd/arch.hpp"
#include "bld/backends/simd/kernels.hpp"
#include "bld/math/root_bins.hpp"
#include "bld/core/tensor.hpp"
#include "bld/vocab/trie.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

namespace bld {

class row_plan;
namespace detail {
/// What the SIMD kernels read from a row_plan (kept out of its public interface).
struct row_plan_access {
    [[nodiscard]] static simd::detail::tile_plan tile(const row_plan& plan) noexcept;
    /// The node plan: the tile kernel's bins one level down (see row_plan::node_tile).
    [[nodiscard]] static simd::detail::tile_plan node_tile(const row_plan& plan) noexcept;
    /// Node-plan bins of first byte b's children: [node_bin_base + start[b], + start[b + 1]). [257]
    [[nodiscard]] static std::span<const std::uint32_t> node_bin_start(const row_plan& plan) noexcept;
    /// Whether the node plan splits first byte b into its children (1) or keeps it whole (0). [256]
    [[nodiscard]] static std::span<const std::uint8_t> node_split(const row_plan& plan) noexcept;
};
/// Node-plan bins: 0..255 first byte b — the tokens that are exactly b where b is split, its
/// whole subtree where not — 256 STOP, 257 ignored ids, then one bin per depth-2 trie node
/// (first byte b, second byte c) of the split bytes, grouped by b in byte order. A first byte
/// is split when its subtree holds at least 1/node_split_share of the text tokens (Llama-3:
/// 7 bytes, ' ' alone 45 % of the ids, ~480 bins): few enough bins that the tile kernel's
/// accumulators stay small, and the other nodes are small to sum on their own.
inline constexpr std::size_t node_bin_base = root_bin_count + 1;
inline constexpr std::size_t node_split_share = 64;
} // namespace detail

/// What the fast row pass precomputes from a trie, once per vocabulary (O(vocab) time and
/// about 12 bytes per id): the root bin of every id (and its accumulator copy), the
/// float-accumulator flush schedule, the trie-order permutation and the root segments of
/// trie-ordered rows.
class row_plan {
public:
    explicit row_plan(const byte_trie& trie) : trie_(&trie), bins_(root_bins(trie)) { build(); }
    /// Keeps a pointer to the trie: a temporary one would dangle.
    explicit row_plan(const byte_trie&& trie) = delete;

    [[nodiscard]] const byte_trie& trie() const noexcept { return *trie_; }
    /// Ids that count in a row (the vocabulary's size; columns past it are ignored).
    [[nodiscard]] std::size_t vocab_size() const noexcept { return bins_.size(); }
    /// root_bins(trie): 0..255 first byte, 256 STOP, ignored_bin for absent ids. [vocab size]
    [[nodiscard]] std::span<const std::uint16_t> bins() const noexcept { return bins_; }

    /// The trie order of a row's columns: column k of a trie-ordered row holds the logit of id
    /// permutation()[k] — the text tokens in sorted byte order (exactly byte_trie::order(), so
    /// column k is sorted position k and node n is columns [node.lo, node.hi)), then the special
    /// tokens by id. Absent ids have no column. Apply it once to the teacher's unembedding
    /// matrix (W_sorted = W[permutation()]) and every row arrives trie-ordered. [text + special]
    [[nodiscard]] std::span<const std::uint32_t> permutation() const noexcept { return perm_; }
    /// Root segments of a trie-ordered row: byte b is columns [root_bounds()[b], [b + 1]), STOP
    /// is [root_bounds()[256], [257]). [258]
    [[nodiscard]] std::span<const std::uint32_t> root_bounds() const noexcept { return root_bounds_; }
    /// The inverse of permutation(): the trie-order column of every id, permutation().size() for
    /// an absent id. [vocab size]
    [[nodiscard]] std::span<const std::uint32_t> columns() const noexcept { return columns_; }

private:
    friend struct detail::row_plan_access;

    /// The tile kernel's view of the plan (through detail::row_plan_access).
    [[nodiscard]] simd::detail::tile_plan tile() const noexcept {
        simd::detail::tile_plan p;
        p.vocab = bins_.size();
        p.nbins = real_bin_.size();
        p.bins = tile_bins_.data();
        p.real_bin = real_bin_.data();
        p.ignore_add = ignore_add_.empty() ? nullptr : ignore_add_.data();
        p.chunk_has_ignored = chunk_ignored_.empty() ? nullptr : chunk_ignored_.data();
        p.flush_start = flush_start_.data();
        p.flush_bins = flush_bins_.data();
        return p;
    }

    /// The node plan (through detail::row_plan_access): ids of the large first bytes binned by
    /// their first two bytes (detail::node_bin_base), so one tile pass gives every row its root
    /// masses and the node sums of those first bytes.
    [[nodiscard]] simd::detail::tile_plan node_tile() const noexcept {
        simd::detail::tile_plan p = tile();
        p.nbins = node_real_bin_.size();
        p.bins = node_tile_bins_.data();
        p.real_bin = node_real_bin_.data();
        p.flush_start = node_flush_start_.data();
        p.flush_bins = node_flush_bins_.data();
        return p;
    }

    /// The node plan's arrays (the root plan's ignore_add / chunk_has_ignored serve it too):
    /// the same rules as build() — copies of frequent bins, a static flush schedule — over the
    /// bins of detail::node_bin_base. The schedule is built block by block over the bins each
    /// block touches (thousands of bins: a dense sweep per block would cost V·bins).
    void build_node_plan() {
        namespace sd = simd::detail;
        using detail::node_bin_base;
        const std::size_t V = bins_.size();
        const std::size_t blocks = (V + sd::flush_block - 1) / sd::flush_block;
        const std::size_t padded = blocks * sd::flush_block;
        std::vector<std::uint32_t> real(padded, sd::discard_bin);
        for (std::size_t i = 0; i < V; ++i)
            if (bins_[i] == stop_symbol) real[i] = stop_symbol;
        const auto order = trie_->order();
        const auto firsts = trie_->children(byte_trie::root);
        node_bin_start_.assign(root_bin_count, 0);
        node_split_.assign(256, 0);
        std::uint32_t g = 0;
        std::size_t f = 0;
        for (std::size_t b = 0; b < 256; ++b) {
            node_bin_start_[b] = g;
            if (f >= firsts.size() || firsts[f].byte != b) continue;
            const trie_node& nd = firsts[f++];
            const bool split = std::size_t{nd.hi - nd.lo} * detail::node_split_share >= order.size();
            node_split_[b] = split ? 1 : 0;
            for (std::uint32_t k = nd.lo; k < (split ? nd.end_hi : nd.hi); ++k) real[order[k]] = static_cast<std::uint32_t>(b);
            if (!split) continue;
            for (const trie_node& c : trie_->children(static_cast<byte_trie::node_index>(&nd - trie_->nodes().data()))) {
                for (std::uint32_t k = c.lo; k < c.hi; ++k) real[order[k]] = static_cast<std::uint32_t>(node_bin_base + g);
                ++g;
            }
        }
        node_bin_start_[256] = g;
        const std::size_t nreal = node_bin_base + g;
        if (nreal > 0xFFFF) throw value_error("SIMD row plan", trie_->vocab().source(), "too many two-byte prefixes");
        std::vector<std::size_t> count(nreal, 0);
        for (std::size_t i = 0; i < V; ++i)
            if (real[i] != sd::discard_bin) ++count[real[i]];
        node_real_bin_.resize(nreal);
        for (std::size_t b = 0; b < nreal; ++b) node_real_bin_[b] = static_cast<std::uint16_t>(b);
        std::vector<std::vector<std::uint16_t>> copies(nreal);
        for (std::size_t b = 0; b < nreal; ++b) {
            copies[b].push_back(static_cast<std::uint16_t>(b));
            if (b == sd::discard_bin) continue;
            const std::size_t extra = std::min<std::size_t>(7, count[b] * 16 / std::max<std::size_t>(V, 1));
            for (std::size_t c = 0; c < extra && node_real_bin_.size() < 0xFFFF; ++c) {
                copies[b].push_back(static_cast<std::uint16_t>(node_real_bin_.size()));
                node_real_bin_.push_back(static_cast<std::uint16_t>(b));
            }
        }
        node_tile_bins_.assign(padded, sd::discard_bin);
        std::vector<std::size_t> dealt(nreal, 0);
        for (std::size_t i = 0; i < V; ++i) {
            const auto b = real[i];
            if (b == sd::discard_bin) continue;
            node_tile_bins_[i] = copies[b][dealt[b]++ % copies[b].size()];
        }
        const std::size_t nb = node_real_bin_.size();
        std::vector<unsigned> since(nb, 0), occ(nb, 0);
        std::vector<std::uint16_t> touched;
        node_flush_start_.assign(blocks + 1, 0);
        node_flush_bins_.clear();
        for (std::size_t k = 0; k < blocks; ++k) {
            touched.clear();
            for (std::size_t i = k * sd::flush_block; i < (k + 1) * sd::flush_block; ++i) {
                const auto b = node_tile_bins_[i];
                if (b == sd::discard_bin) continue;
                if (occ[b]++ == 0) touched.push_back(b);
            }
            std::sort(touched.begin(), touched.end());
            for (const auto b : touched) {
                if (since[b] + occ[b] > sd::flush_every) {
                    node_flush_bins_.push_back(b);
                    since[b] = 0;
                }
                since[b] += occ[b];
                occ[b] = 0;
            }
            node_flush_start_[k + 1] = static_cast<std::uint32_t>(node_flush_bins_.size());
        }
    }

    void build() {
        namespace sd = simd::detail;
        const std::size_t V = bins_.size();
        const std::size_t blocks = (V + sd::flush_block - 1) / sd::flush_block;
        const std::size_t padded = blocks * sd::flush_block;
        tile_bins_.assign(padded, sd::discard_bin);
        bool any_ignored = false;
        for (std::size_t i = 0; i < V; ++i) {
            if (bins_[i] == ignored_bin) any_ignored = true;
            else tile_bins_[i] = bins_[i];
        }
        // Extra accumulator copies for frequent bins: 1 + ⌊16·share⌋ copies (at most 8), ids of
        // the bin dealt round-robin over them.
        std::array<std::size_t, root_bin_count> count{};
        for (std::size_t i = 0; i < V; ++i)
            if (tile_bins_[i] != sd::discard_bin) ++count[tile_bins_[i]];
        real_bin_.resize(sd::discard_bin + 1);
        for (std::size_t b = 0; b < root_bin_count; ++b) real_bin_[b] = static_cast<std::uint16_t>(b);
        real_bin_[sd::discard_bin] = sd::discard_bin;
        std::array<std::vector<std::uint16_t>, root_bin_count> copies;
        for (std::size_t b = 0; b < root_bin_count; ++b) {
            copies[b].push_back(static_cast<std::uint16_t>(b));
            const std::size_t extra = std::min<std::size_t>(7, count[b] * 16 / std::max<std::size_t>(V, 1));
            for (std::size_t c = 0; c < extra && real_bin_.size() < sd::max_tile_bins; ++c) {
                copies[b].push_back(static_cast<std::uint16_t>(real_bin_.size()));
                real_bin_.push_back(static_cast<std::uint16_t>(b));
            }
        }
        std::array<std::size_t, root_bin_count> dealt{};
        for (std::size_t i = 0; i < V; ++i) {
            const auto b = tile_bins_[i];
            if (b == sd::discard_bin) continue;
            tile_bins_[i] = copies[b][dealt[b]++ % copies[b].size()];
        }
        if (any_ignored) {
            ignore_add_.assign(padded, 0.0f);
            chunk_ignored_.assign((V + sd::chunk_ids - 1) / sd::chunk_ids, 0);
            for (std::size_t i = 0; i < V; ++i)
                if (bins_[i] == ignored_bin) {
                    ignore_add_[i] = -std::numeric_limits<float>::infinity();
                    chunk_ignored_[i / sd::chunk_ids] = 1;
                }
        }
        // Static flush schedule: before block k, flush every bin that would otherwise take more
        // than flush_every additions since its last flush. It depends on the bins only, so it
        // is the same for every row, target and thread.
        const std::size_t nb = real_bin_.size();
        std::vector<unsigned> since(nb, 0), occ(nb, 0);
        flush_start_.assign(blocks + 1, 0);
        for (std::size_t k = 0; k < blocks; ++k) {
            std::fill(occ.begin(), occ.end(), 0u);
            for (std::size_t i = k * sd::flush_block; i < (k + 1) * sd::flush_block; ++i)
                if (tile_bins_[i] != sd::discard_bin) ++occ[tile_bins_[i]];
            for (std::size_t b = 0; b < nb; ++b) {
                if (occ[b] == 0 || b == sd::discard_bin) continue;
                if (since[b] + occ[b] > sd::flush_every) {
                    flush_bins_.push_back(static_cast<std::uint16_t>(b));
                    since[b] = 0;
                }
                since[b] += occ[b];
            }
            flush_start_[k + 1] = static_cast<std::uint32_t>(flush_bins_.size());
        }
        // Trie order: text tokens sorted, then specials.
        const auto order = trie_->order();
        perm_.assign(order.begin(), order.end());
        const auto n_text = static_cast<std::uint32_t>(perm_.size());
        for (std::size_t i = 0; i < V; ++i)
            if (bins_[i] == stop_symbol) perm_.push_back(static_cast<std::uint32_t>(i));
        root_bounds_.assign(root_bin_count + 1, n_text);
        const auto kids = trie_->children(byte_trie::root);
        std::size_t c = kids.size();
        std::uint32_t next = n_text;
        for (std::size_t b = 256; b-- > 0;) {
            while (c > 0 && kids[c - 1].byte >= b) next = kids[--c].lo;
            root_bounds_[b] = next;
        }
        if (trie_->node(byte_trie::root).end_hi != 0)
            throw value_error("SIMD row plan", trie_->vocab().source(), "a text token with no bytes");
        root_bounds_[root_bin_count] = static_cast<std::uint32_t>(perm_.size());
        columns_.assign(V, static_cast<std::uint32_t>(perm_.size()));
        for (std::size_t k = 0; k < perm_.size(); ++k) columns_[perm_[k]] = static_cast<std::uint32_t>(k);
        build_node_plan();
    }

    const byte_trie* trie_;
    std::vector<std::uint16_t> bins_;
    std::vector<std::uint16_t> tile_bins_;
    std::vector<std::uint16_t> real_bin_;
    std::vector<float> ignore_add_;
    std::vector<std::uint8_t> chunk_ignored_;
    std::vector<std::uint32_t> flush_start_;
    std::vector<std::uint16_t> flush_bins_;
    std::vector<std::uint32_t> perm_;
    std::vector<std::uint32_t> root_bounds_;
    std::vector<std::uint32_t> columns_;
    std::vector<std::uint16_t> node_tile_bins_;
    std::vector<std::uint16_t> node_real_bin_;
    std::vector<std::uint32_t> node_flush_start_;
    std::vector<std::uint16_t> node_flush_bins_;
    std::vector<std::uint32_t> node_bin_start_;
    std::vector<std::uint8_t> node_split_;
};

inline simd::detail::tile_plan detail::row_plan_access::tile(const row_plan& plan) noexcept { return plan.tile(); }
inline simd::detail::tile_plan detail::row_plan_access::node_tile(const row_plan& plan) noexcept { return plan.node_tile(); }
inline std::span<const std::uint32_t> detail::row_plan_access::node_bin_start(const row_plan& plan) noexcept {
    return plan.node_bin_start_;
}
inline std::span<const std::uint8_t> detail::row_plan_access::node_split(const row_plan& plan) noexcept {
    return plan.node_split_;
}

namespace detail {

inline void check_row_width(const row_plan& plan, std::int64_t cols, std::size_t need, const char* op,
                            const char* what) {
    if (static_cast<std::size_t>(cols) < need)
        throw shape_error(op, "row 0",
                          "the row has " + std::to_string(cols) + " logits, fewer than the " + std::to_string(need) + " " +
                              what + " (" + plan.trie().vocab().source() + ")");
}

/// Root sums (units of e^shift) → row_summary, as summarize_row normalises them.
inline void finish_summary(const double* sums, double max, double shift, row_summary& out) {
    out.max_logit = max;
    out.log_normalizer = std::log(math::normalise_root(sums, out.root.data())) + (shift - max);
}

/// A kernel's row result is a summary: no NaN / +Inf, and some finite logit.
template <class Result>
[[nodiscard]] bool usable(const Result& r) noexcept {
    return r.valid && r.max > -std::numeric_limits<float>::infinity();
}

} // namespace detail

namespace detail {

/// The fast root row pass without the error: rows that hold NaN / +Inf or no finite logit get
/// bad[r] = 1 and an unspecified summary. Double rows take the reference path.
/// @pre rows.extent(1) ≥ vocab size; out.size() == bad.size() == rows
template <class T>
void summarize_rows_flagged(const row_plan& plan, tensor_view<const T, 2> rows, std::span<row_summary> out,
                            std::span<std::uint8_t> bad, const parallel_options& par, simd::level lvl) {
    const auto R = static_cast<std::size_t>(rows.extent(0));
    const auto n = static_cast<std::size_t>(rows.extent(1));
    const auto row_ptr = [&](std::size_t r) { return rows.data() + r * n; };
    if constexpr (!simd_kernel_reads<T>) {
        parallel_for(R, par, [&](std::size_t b, std::size_t e, std::size_t) {
            for (std::size_t r = b; r < e; ++r) {
                try {
                    out[r] = reference::summarize_row(plan.trie(), plan.bins(), std::span<const T>(row_ptr(r), n), r);
                    bad[r] = 0;
                } catch (const value_error&) {
                    bad[r] = 1;
                }
            }
        });
    } else {
        using E = std::remove_cv_t<T>;
        const auto k = simd::detail::kernels_for<E>(lvl);
        const std::size_t W = k.width;
        const std::size_t tiles = (R + W - 1) / W;
        const auto tp = row_plan_access::tile(plan);
        parallel_for(tiles, par, [&](std::size_t tb, std::size_t te, std::size_t) {
            auto ws = std::make_unique<simd::detail::tile_workspace>();
            auto res = std::make_unique<simd::detail::tile_result[]>(W);
            std::vector<const E*> ptrs(W);
            for (std::size_t t = tb; t < te; ++t) {
                const std::size_t r0 = t * W;
                for (std::size_t j = 0; j < W; ++j) ptrs[j] = row_ptr(r0 + j < R ? r0 + j : r0);
                k.tile_row_pass(tp, ptrs.data(), *ws, res.get());
                for (std::size_t j = 0; j < W && r0 + j < R; ++j) {
                    const auto& q = res[j];
                    const bool ok = usable(q);
                    bad[r0 + j] = ok ? 0 : 1;
                    if (ok) finish_summary(q.sums, q.max, q.shift, out[r0 + j]);
                }
            }
        });
    }
}

} // namespace detail

/// The root row pass of a batch of rows in id order, on the fast path.
/// out[r] agrees with reference::summarize_row(plan.trie(), plan.bins(), row r, r) within the tolerance
/// stated at the top of this header (double rows: exactly — they take the reference path).
/// @param rows [rows, n ≥ vocab size]; columns past the vocabulary are ignored
/// @param out  [rows]
/// @throws bld::shape_error (short rows, wrong out size), bld::value_error (NaN / +Inf, a row
///         without a finite logit: the first such row, with the reference's message; an
///         unsupported SIMD level)
template <class T>
void summarize_rows(const row_plan& plan, tensor_view<const T, 2> rows, std::span<row_summary> out,
                    const parallel_options& par = {}, simd::level lvl = simd::level::automatic) {
    static_assert(logit_type<T>, "rows are float, double, bf16 or f16");
    const char* op = "teacher row pass";
    const auto R = static_cast<std::size_t>(rows.extent(0));
    const auto n = static_cast<std::size_t>(rows.extent(1));
    if (out.size() != R)
        throw shape_error(op, "out", "one summary per row: " + std::to_string(R) + " rows, " + std::to_string(out.size()) +
                                         " summaries");
    if (R == 0) return;
    detail::check_row_width(plan, rows.extent(1), plan.vocab_size(), op, "ids of the vocabulary");
    std::vector<std::uint8_t> bad(R, 0);
    detail::summarize_rows_flagged(plan, rows, out, std::span<std::uint8_t>(bad), par, simd::resolve(lvl, op));
    // The first bad row gets the reference's error (row, column, reason).
    for (std::size_t r = 0; r < R; ++r)
        if (bad[r]) out[r] = reference::summarize_row(plan.trie(), plan.bins(), std::span<const T>(rows.data() + r * n, n), r);
}

/// As above, returning the summaries.
template <class T>
[[nodiscard]] std::vector<row_summary> summarize_rows(const row_plan& plan, tensor_view<const T, 2> rows,
                                                      const parallel_options& par = {},
                                                      simd::level lvl = simd::level::automatic) {
    std::vector<row_summary> out(static_cast<std::size_t>(rows.extent(0)));
    summarize_rows(plan, rows, std::span<row_summary>(out), par, lvl);
    return out;
}

/// The root row pass of trie-ordered rows (column k = id plan.permutation()[k]): 257
/// contiguous segment sums per row, no scatter, no gather. Same results and tolerance as
/// summarize_rows on the unpermuted rows.
/// @param rows [rows, n ≥ permutation().size()]; columns past it are ignored
/// @throws as summarize_rows; messages name the column and its id.
template <class T>
void summarize_permuted_rows(const row_plan& plan, tensor_view<const T, 2> rows, std::span<row_summary> out,
                             const parallel_options& par = {}, simd::level lvl = simd::level::automatic) {
    static_assert(simd_kernel_reads<T>, "trie-ordered rows are float, bf16 or f16");
    using E = std::remove_cv_t<T>;
    const char* op = "teacher row pass (trie-ordered rows)";
    const auto R = static_cast<std::size_t>(rows.extent(0));
    const auto n = static_cast<std::size_t>(rows.extent(1));
    if (out.size() != R)
        throw shape_error(op, "out", "one summary per row: " + std::to_string(R) + " rows, " + std::to_string(out.size()) +
                                         " summaries");
    if (R == 0) return;
    const auto perm = plan.permutation();
    detail::check_row_width(plan, rows.extent(1), perm.size(), op, "columns of the trie order (text + special ids)");
    const auto k = simd::detail::kernels_for<E>(simd::resolve(lvl, op));
    const auto bounds = plan.root_bounds();
    std::vector<std::uint8_t> bad(R, 0);
    parallel_for(R, par, [&](std::size_t b, std::size_t e, std::size_t) {
        std::array<double, root_bin_count> sums{};
        for (std::size_t r = b; r < e; ++r) {
            const auto q = k.segment_sums(rows.data() + r * n, bounds.data(), root_bin_count, sums.data());
            if (!detail::usable(q)) {
                bad[r] = 1;
                continue;
            }
            detail::finish_summary(sums.data(), q.max, q.shift, out[r]);
        }
    });
    for (std::size_t r = 0; r < R; ++r) {
        if (!bad[r]) continue;
        const E* row = rows.data() + r * n;
        for (std::size_t c = 0; c < perm.size(); ++c) {
            const double z = static_cast<float>(row[c]);
            if (math::is_bad_logit(z)) detail::bad_logit(r, c, z, op, " (id " + std::to_string(perm[c]) + ")");
        }
        throw value_error(op, "row " + std::to_string(r), "no finite logit among the vocabulary's ids");
    }
}

template <class T>
[[nodiscard]] std::vector<row_summary> summarize_permuted_rows(const row_plan& plan, tensor_view<const T, 2> rows,
                                                               const parallel_options& par = {},
                                                               simd::level lvl = simd::level::automatic) {
    std::vector<row_summary> out(static_cast<std::size_t>(rows.extent(0)));
    summarize_permuted_rows(plan, rows, std::span<row_summary>(out), par, lvl);
    return out;
}

/// Puts rows in trie order: out[r][k] = rows[r][plan.permutation()[k]] — what a trainer gets
/// for free by permuting its unembedding matrix once (here for tests and one-off use).
/// @returns [rows, permutation().size()]
template <class T>
[[nodiscard]] std::vector<std::remove_cv_t<T>> permute_rows(const row_plan& plan, tensor_view<const T, 2> rows) {
    const auto perm = plan.permutation();
    const auto R = static_cast<std::size_t>(rows.extent(0));
    const auto n = static_cast<std::size_t>(rows.extent(1));
    detail::check_row_width(plan, rows.extent(1), plan.vocab_size(), "permute rows", "ids of the vocabulary");
    std::vector<std::remove_cv_t<T>> out(R * perm.size());
    for (std::size_t r = 0; r < R; ++r)
        for (std::size_t k = 0; k < perm.size(); ++k) out[r * perm.size() + k] = rows.data()[r * n + perm[k]];
    return out;
}

/// Node sums of one row at trie node `n` (as sum_node): e^(z − shift) summed over the node's
/// end tokens and each child's range, with the shift the kernel chose (returned; −inf with all
/// sums 0 when every logit in the node is −inf).
/// @param row      the row in id order (`trie_ordered` = false) or trie order (true)
/// @param scratch  reused buffer (id-ordered rows are gathered into sorted order here)
/// @pre the row was validated (summarize_rows / summarize_row); the plan's trie
template <class T>
double sum_node(const row_plan& plan, std::span<const T> row, byte_trie::node_index n, node_sums& out,
                      std::vector<float>& scratch, bool trie_ordered = false, simd::level lvl = simd::level::automatic) {
    static_assert(simd_kernel_reads<T>, "rows are float, bf16 or f16");
    using E = std::remove_cv_t<T>;
    const auto& trie = plan.trie();
    const auto& nd = trie.node(n);
    const auto kids = trie.children(n);
    out = node_sums{};
    constexpr std::size_t segments = 1 + 256; // the node's end tokens, then at most 256 children
    std::array<std::uint32_t, segments + 1> bounds{};
    std::array<double, segments> sums{};
    const std::uint32_t base = trie_ordered ? 0 : nd.lo;
    bounds[0] = nd.lo - base;
    bounds[1] = nd.end_hi - base;
    for (std::size_t c = 0; c < kids.size(); ++c) bounds[c + 2] = kids[c].hi - base;
    const std::size_t nseg = 1 + kids.size();
    simd::detail::segment_result q;
    const auto lv = simd::resolve(lvl, "node sums");
    if (trie_ordered) {
        q = simd::detail::kernels_for<E>(lv).segment_sums(row.data(), bounds.data(), nseg, sums.data());
    } else {
        const auto order = trie.order();
        scratch.resize(nd.hi - nd.lo);
        for (std::uint32_t k = nd.lo; k < nd.hi; ++k) scratch[k - nd.lo] = static_cast<float>(row[order[k]]);
        q = simd::detail::kernels_for<float>(lv).segment_sums(scratch.data(), bounds.data(), nseg, sums.data());
    }
    if (!(q.max > -std::numeric_limits<float>::infinity())) return -std::numeric_limits<double>::infinity();
    out.end = sums[0];
    for (std::size_t c = 0; c < kids.size(); ++c) out.child[kids[c].byte] = sums[c + 1];
    return q.shift;
}

} // namespace bld
