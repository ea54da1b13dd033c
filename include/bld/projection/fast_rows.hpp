// bld/projection/fast_rows.hpp — the canonical-path projection on the fast row pass, and threads
// over texts.
//
// reference::canonical_path (bld/projection/canonical_path.hpp) is the reference: fp64 exp per
// logit, the scalar scatter. The functions here run the same algorithm (canonical_path_from) on a row source
// whose root summaries come from summarize_rows (tiles of rows, SIMD) and whose node sums come
// from sum_node (one gather into sorted order, SIMD segment sums; none for trie-ordered
// rows), so results agree with reference::canonical_path within the row pass's tolerance
// (bld/backends/simd/row_pass.hpp): relative 1e-5 on every conditional at a node of mass ≥ 1e-12.
// Errors are the reference's, raised at the same row.
#pragma once

#include "bld/core/parallel.hpp"
#include "bld/projection/canonical_path.hpp"
#include "bld/backends/simd/row_pass.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

namespace bld {

/// Dense rows [rows, n] for canonical_path_from, on the fast path: in id order (n ≥ vocab
/// size) or, with `trie_ordered`, in the plan's trie order (n ≥ permutation().size()).
/// Summaries are computed 16 rows at a time on first use; a row's error (NaN, +Inf, no finite
/// logit) is raised when that row is first used, with the reference's message.
template <class T>
class dense_rows {
public:
    dense_rows(const row_plan& plan, tensor_view<const T, 2> rows, bool trie_ordered = false,
               simd::level lvl = simd::level::automatic)
        : plan_(&plan), rows_(rows), trie_ordered_(trie_ordered),
          level_(simd::resolve(lvl, "canonical-path projection")) {
        const auto need = trie_ordered ? plan.permutation().size() : plan.vocab_size();
        detail::check_row_width(plan, rows.extent(1), need, "canonical-path projection",
                                trie_ordered ? "columns of the trie order (text + special ids)" : "ids of the vocabulary");
        sums_.resize(count());
        bad_.assign(count(), 0);
        done_.assign((count() + block - 1) / block, 0);
    }
    /// The rows keep a pointer to the plan: a temporary plan would dangle.
    dense_rows(const row_plan&& plan, tensor_view<const T, 2> rows, bool trie_ordered = false,
               simd::level lvl = simd::level::automatic) = delete;
    [[nodiscard]] std::size_t count() const noexcept { return static_cast<std::size_t>(rows_.extent(0)); }
    [[nodiscard]] std::span<const T> row(std::size_t j) const noexcept {
        return {rows_.data() + j * static_cast<std::size_t>(rows_.extent(1)), static_cast<std::size_t>(rows_.extent(1))};
    }
    /// Root masses (probabilities), validating the row.
    [[nodiscard]] row_summary summary(std::size_t j) const {
        const std::size_t b = j / block;
        if (!done_[b]) {
            const std::size_t r0 = b * block, r1 = std::min(count(), r0 + block);
            const tensor_view<const T, 2> sub(rows_.data() + r0 * static_cast<std::size_t>(rows_.extent(1)),
                                              {static_cast<std::int64_t>(r1 - r0), rows_.extent(1)});
            const std::span<row_summary> out(sums_.data() + r0, r1 - r0);
            const std::span<std::uint8_t> bad(bad_.data() + r0, r1 - r0);
            if (trie_ordered_) summarize_trie_ordered(sub, out, bad);
            else detail::summarize_rows_flagged(*plan_, sub, out, bad, parallel_options{}, level_);
            done_[b] = 1;
        }
        if (bad_[j]) raise(j);
        return sums_[j];
    }
    /// Node sums with the kernel's shift; the factor converts them to probabilities.
    double node(std::size_t j, const row_summary& s, byte_trie::node_index n, node_sums& out) const {
        const double shift = sum_node(*plan_, row(j), n, out, scratch_, trie_ordered_, level_);
        if (!(shift > -std::numeric_limits<double>::infinity())) {
            out = node_sums{};
            return 0.0;
        }
        return s.probability(shift);
    }
    [[nodiscard]] double residual(std::size_t) const noexcept { return 0.0; }

private:
    static constexpr std::size_t block = 16;

    void summarize_trie_ordered(tensor_view<const T, 2> sub, std::span<row_summary> out, std::span<std::uint8_t> bad) const {
        using E = std::remove_cv_t<T>;
        const auto k = simd::detail::kernels_for<E>(level_);
        const auto bounds = plan_->root_bounds();
        std::array<double, root_bin_count> sums{};
        for (std::size_t r = 0; r < out.size(); ++r) {
            const auto q = k.segment_sums(sub.data() + r * static_cast<std::size_t>(sub.extent(1)), bounds.data(), root_bin_count, sums.data());
            bad[r] = detail::usable(q) ? 0 : 1;
            if (!bad[r]) detail::finish_summary(sums.data(), q.max, q.shift, out[r]);
        }
    }
    [[noreturn]] void raise(std::size_t j) const {
        if (!trie_ordered_) {
            (void)reference::summarize_row(plan_->trie(), plan_->bins(), row(j), j); // throws the reference's error
        } else {
            const auto perm = plan_->permutation();
            const auto r = row(j);
            for (std::size_t c = 0; c < perm.size(); ++c) {
                const double z = static_cast<float>(r[c]);
                if (math::is_bad_logit(z)) detail::bad_logit(j, perm[c], z, "teacher row pass");
            }
        }
        throw value_error("teacher row pass", "row " + std::to_string(j), "no finite logit among the vocabulary's ids");
    }

    const row_plan* plan_;
    tensor_view<const T, 2> rows_;
    bool trie_ordered_;
    simd::level level_;
    mutable std::vector<row_summary> sums_;
    mutable std::vector<std::uint8_t> bad_, done_;
    mutable std::vector<float> scratch_;
};

/// canonical_path on the fast path (see the top of this header); rows in id order
/// [rows ≥ tokens, n ≥ vocab], or trie-ordered rows with `trie_ordered` (n ≥ permutation size;
/// then the error for a bad logit names the id, as "column" of the reference).
template <class T>
[[nodiscard]] byte_distributions canonical_path(const row_plan& plan, tensor_view<const T, 2> rows,
                                                     std::span<const std::int64_t> ids,
                                                     std::optional<std::string_view> text = std::nullopt,
                                                     bool trie_ordered = false,
                                                     simd::level lvl = simd::level::automatic) {
    static_assert(logit_type<T>, "rows are float, bf16, f16 or double");
    if constexpr (!row_kernel_reads<T>) {
        // No fp32 kernel reads double (or, yet, f16) rows: the reference is the path for them.
        if (trie_ordered)
            throw value_error("canonical-path projection", "rows", "trie-ordered rows are float or bf16");
        (void)simd::resolve(lvl, "canonical-path projection");
        return reference::canonical_path(plan.trie(), rows, ids, text);
    } else {
        return canonical_path_from(plan.trie(), dense_rows<T>(plan, rows, trie_ordered, lvl), ids, text);
    }
}

/// One text of a batch: its teacher rows and its ids (and, optionally, its bytes to check).
template <class T>
struct text_rows {
    tensor_view<const T, 2> rows;         ///< [rows ≥ ids, n]
    std::span<const std::int64_t> ids;    ///< the text's token ids
    std::optional<std::string_view> text; ///< the text's bytes, checked against the ids if given
};

/// canonical_path over many texts, `par.threads` texts at a time. Each result depends on
/// its text alone, so every thread count gives the same bits.
/// @throws the error of the first failing text (by index)
template <class T>
[[nodiscard]] std::vector<byte_distributions> canonical_paths(const row_plan& plan, std::span<const text_rows<T>> texts,
                                                              const parallel_options& par = {}, bool trie_ordered = false,
                                                              simd::level lvl = simd::level::automatic) {
    std::vector<byte_distributions> out(texts.size());
    const auto lv = simd::resolve(lvl, "canonical-path projection");
    parallel_for(texts.size(), par, [&](std::size_t b, std::size_t e, std::size_t) {
        for (std::size_t t = b; t < e; ++t)
            out[t] = canonical_path(plan, texts[t].rows, texts[t].ids, texts[t].text, trie_ordered, lv);
    });
    return out;
}

} // namespace bld
