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
#include <memory>
#include <new>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

namespace bld {

namespace detail {

/// A 64-byte aligned buffer (the tile kernel's accumulators).
template <class U>
struct aligned_buffer {
    struct del {
        void operator()(U* p) const noexcept { ::operator delete[](p, std::align_val_t{64}); }
    };
    std::unique_ptr<U[], del> p;
    std::size_t n = 0;
    void reserve(std::size_t count) {
        if (count <= n) return;
        p.reset(static_cast<U*>(::operator new[](count * sizeof(U), std::align_val_t{64})));
        n = count;
    }
    [[nodiscard]] U* data() const noexcept { return p.get(); }
};

/// The node plan's accumulators (row_plan::node_tile: thousands of bins × W lanes, float and
/// double, ~1 MiB for Llama-3), one set per thread, kept for the thread's lifetime.
struct node_workspace {
    aligned_buffer<float> accf;
    aligned_buffer<double> accd;
    aligned_buffer<double> root; ///< [root_bin_count × W]
    [[nodiscard]] static node_workspace& of_this_thread(std::size_t values) {
        static thread_local node_workspace ws;
        ws.accf.reserve(values);
        ws.accd.reserve(values);
        ws.root.reserve(root_bin_count * 16);
        return ws;
    }
};

/// The row pass's terms e^(z − shift) of the latest trie-ordered rows (dense_rows::keep_terms),
/// two rows per thread (the canonical path reads row j + 1's root before row j is done), each
/// tagged with the rows object that wrote it (a fresh tag per object: a new object at the
/// address of an old one never finds the old one's terms) and the row.
struct kept_terms {
    struct slot {
        aligned_buffer<float> e;
        std::uint64_t owner = 0;
        std::size_t row = 0;
        float shift = 0.0f;
    };
    std::array<slot, 2> slots;
    std::uint64_t next_owner = 1;
    [[nodiscard]] static kept_terms& of_this_thread() {
        static thread_local kept_terms k;
        return k;
    }
};

} // namespace detail

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
        if (trie_ordered) block = 1;
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
    /// Optional, before the first summary: row j will be asked for the node of ids[j]'s first
    /// byte (the canonical path's depth-1 request, the largest node of a row: 45 % of
    /// Llama-3's ids start with a space). Its sums then come out of the root pass itself —
    /// for rows in id order the tile kernel bins the ids of the large first bytes by their
    /// first two bytes (row_plan::node_tile; a smaller first node is summed on its own), for
    /// trie-ordered rows the node's children are segments of the root pass — instead of a
    /// second read (and, in id order, a gather) of the row. Ids that
    /// are not text tokens are skipped here (canonical_plan::build reports them).
    void expect_first_nodes(std::span<const std::int64_t> ids) {
        const auto& trie = plan_->trie();
        const auto& v = trie.vocab();
        first_.assign(count(), byte_trie::npos);
        for (std::size_t j = 0; j < ids.size() && j < count(); ++j) {
            const auto id = ids[j];
            if (id < 0 || static_cast<std::uint64_t>(id) >= v.size() || plan_->bins()[static_cast<std::size_t>(id)] >= 256)
                continue;
            const auto b = v.unchecked_bytes(static_cast<std::size_t>(id));
            if (!b.empty()) first_[j] = trie.child(byte_trie::root, static_cast<std::uint8_t>(b[0]));
        }
        first_sums_.assign(block * first_stride, 0.0);
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
            first_block_ = b;
            first_ok_.fill(0);
            if (trie_ordered_) summarize_trie_ordered(sub, r0, out, bad);
            else if (!first_.empty()) summarize_with_nodes(sub, r0, out, bad);
            else detail::summarize_rows_flagged(*plan_, sub, out, bad, parallel_options{}, level_);
            done_[b] = 1;
        }
        if (bad_[j]) raise(j);
        return sums_[j];
    }
    /// Node sums with the kernel's shift; the factor converts them to probabilities.
    double node(std::size_t j, const row_summary& s, byte_trie::node_index n, node_sums& out) const {
        if (!first_.empty() && first_[j] == n && j / block == first_block_ && first_ok_[j % block]) {
            // From the root pass (expect_first_nodes), unless the node holds so little of the
            // row's mass (in units of e^shift) that terms the pass flushed below e^−86.6 of the
            // row's shift could matter: then the node's own shift (sum_node) is the safe way.
            // (The canonical path asks for row j's nodes while j's block is the latest summarised.)
            const double* q = first_sums_.data() + (j % block) * first_stride;
            const auto kids = plan_->trie().children(n);
            out.end = q[0];
            out.child.fill(0.0);
            double total = q[0];
            for (std::size_t c = 0; c < kids.size(); ++c) {
                out.child[kids[c].byte] = q[1 + c];
                total += q[1 + c];
            }
            if (total >= min_fused_total) return s.probability(first_shift_[j % block]);
        }
        const double shift = sum_node(*plan_, row(j), n, out, scratch_, trie_ordered_, level_);
        if (!(shift > -std::numeric_limits<double>::infinity())) {
            out = node_sums{};
            return 0.0;
        }
        return s.probability(shift);
    }
    [[nodiscard]] double residual(std::size_t) const noexcept { return 0.0; }

    /// Optional, trie-ordered rows only (ignored in id order): the root pass also stores each
    /// term e^(z − shift) of the row it reads, for the last two rows summarised on this thread
    /// (the token head's backward multiplies them by its weights instead of exponentiating the
    /// row a second time; bld/projection/student_path.hpp). The rows must be summarised and
    /// read back (kept_terms) on the thread that called this.
    void keep_terms() {
        if (!trie_ordered_) return;
        auto& k = detail::kept_terms::of_this_thread();
        keep_owner_ = k.next_owner++;
    }
    /// Row j's terms (columns [0, permutation size) of the trie order, in units of e^shift), or
    /// null when they are not kept (keep_terms not called, id order, or overwritten since).
    [[nodiscard]] const float* kept_terms(std::size_t j, float& shift) const noexcept {
        if (keep_owner_ == 0) return nullptr;
        const auto& sl = detail::kept_terms::of_this_thread().slots[j % 2];
        if (sl.owner != keep_owner_ || sl.row != j) return nullptr;
        shift = sl.shift;
        return sl.e.data();
    }

private:
    /// Rows summarised together: 16 in id order (the tile kernel's batch), one at a time in
    /// trie order (each row is its own segment pass), so a row is still in cache while the
    /// canonical path asks for its nodes (and the token head's backward reads it again).
    static constexpr std::size_t max_block = 16;
    std::size_t block = max_block;
    /// Per row: the first node's end sum, then its children's (≤ 256) in byte order.
    static constexpr std::size_t first_stride = 1 + 256;
    /// A first node whose sums (units of e^shift of the row) total less than this is summed
    /// again with its own shift: terms below e^−86.6 of the row's shift are flushed to 0 by the
    /// root pass, which could only show in conditionals of a node this light.
    static constexpr double min_fused_total = 1.0 / 65536.0;

    void summarize_trie_ordered(tensor_view<const T, 2> sub, std::size_t r0, std::span<row_summary> out,
                                std::span<std::uint8_t> bad) const {
        using E = std::remove_cv_t<T>;
        const auto k = simd::detail::kernels_for<E>(level_);
        const auto rb = plan_->root_bounds();
        const auto& trie = plan_->trie();
        std::array<double, root_bin_count + 256> sums{};
        std::array<std::uint32_t, root_bin_count + 257> bounds{};
        for (std::size_t r = 0; r < out.size(); ++r) {
            const E* x = sub.data() + r * static_cast<std::size_t>(sub.extent(1));
            const std::size_t j = r0 + r;
            // With keep_terms, the pass stores its terms in this thread's slot for row j.
            detail::kept_terms::slot* keep = nullptr;
            if (keep_owner_ != 0) {
                keep = &detail::kept_terms::of_this_thread().slots[j % 2];
                keep->owner = 0;
                keep->e.reserve(plan_->permutation().size() + 64);
            }
            const auto pass = [&](const std::uint32_t* bounds, std::size_t nseg) {
                if (keep == nullptr) return k.segment_sums(x, bounds, nseg, sums.data());
                const auto q = k.segment_sums_keep(x, bounds, nseg, sums.data(), keep->e.data());
                keep->owner = keep_owner_;
                keep->row = j;
                keep->shift = q.shift;
                return q;
            };
            const auto f = first_.empty() ? byte_trie::npos : first_[j];
            if (f == byte_trie::npos) {
                const auto q = pass(rb.data(), root_bin_count);
                bad[r] = detail::usable(q) ? 0 : 1;
                if (!bad[r]) detail::finish_summary(sums.data(), q.max, q.shift, out[r]);
                continue;
            }
            // The root segments with first byte b's split into its end tokens and children.
            const auto& nd = trie.node(f);
            const auto kids = trie.children(f);
            const std::size_t b = nd.byte, nk = kids.size();
            for (std::size_t t = 0; t <= b; ++t) bounds[t] = rb[t];
            bounds[b + 1] = nd.end_hi;
            for (std::size_t c = 0; c < nk; ++c) bounds[b + 2 + c] = kids[c].hi;
            for (std::size_t t = b + 1; t <= root_bin_count; ++t) bounds[t + nk] = rb[t];
            const auto q = pass(bounds.data(), root_bin_count + nk);
            bad[r] = detail::usable(q) ? 0 : 1;
            if (bad[r]) continue;
            double* fs = first_sums_.data() + r * first_stride;
            double node_total = sums[b];
            fs[0] = sums[b];
            for (std::size_t c = 0; c < nk; ++c) {
                fs[1 + c] = sums[b + 1 + c];
                node_total += sums[b + 1 + c];
            }
            for (std::size_t t = b + 1; t < root_bin_count; ++t) sums[t] = sums[t + nk];
            sums[b] = node_total;
            detail::finish_summary(sums.data(), q.max, q.shift, out[r]);
            first_shift_[r] = q.shift;
            first_ok_[r] = 1;
        }
    }

    /// Rows in id order with expect_first_nodes: the tile kernel on the node plan, W rows at
    /// a time, into this thread's accumulators (reused across calls: ~1 MiB that a fresh
    /// allocation would fault in page by page). The two-byte bins are folded for all W lanes at
    /// once: copies into their bins, then each first byte's root mass as its exact token plus
    /// its two-byte prefixes in byte order — a fixed order, so a row's bits depend on that row
    /// alone.
    void summarize_with_nodes(tensor_view<const T, 2> sub, std::size_t r0, std::span<row_summary> out,
                              std::span<std::uint8_t> bad) const {
        using E = std::remove_cv_t<T>;
        namespace sd = simd::detail;
        const auto k = sd::kernels_for<E>(level_);
        const std::size_t W = k.width, R = out.size(), n = static_cast<std::size_t>(sub.extent(1));
        const auto tp = detail::row_plan_access::node_tile(*plan_);
        const auto start = detail::row_plan_access::node_bin_start(*plan_);
        const auto split = detail::row_plan_access::node_split(*plan_);
        const std::size_t nb = tp.nbins, nreal = detail::node_bin_base + start[256];
        const auto& trie = plan_->trie();
        detail::node_workspace& ws = detail::node_workspace::of_this_thread(nb * W);
        float* const accf = ws.accf.data();
        double* const acc = ws.accd.data();
        double* const rootw = ws.root.data(); // [root_bin_count × W]
        std::array<const E*, 16> ptrs{};
        std::array<sd::tile_row_head, 16> head{};
        std::array<double, root_bin_count> root{};
        for (std::size_t t0 = 0; t0 < R; t0 += W) {
            for (std::size_t r = 0; r < W; ++r) ptrs[r] = sub.data() + (t0 + r < R ? t0 + r : t0) * n;
            k.tile_bin_pass(tp, ptrs.data(), accf, acc, head.data());
            for (std::size_t v = nreal; v < nb; ++v) {
                double* d = acc + std::size_t{tp.real_bin[v]} * W;
                const double* c = acc + v * W;
                for (std::size_t l = 0; l < W; ++l) d[l] += c[l];
            }
            for (std::size_t b = 0; b < 256; ++b) {
                double* rb = rootw + b * W;
                const double* e = acc + b * W;
                for (std::size_t l = 0; l < W; ++l) rb[l] = e[l];
                for (std::uint32_t g = start[b]; g < start[b + 1]; ++g) {
                    const double* c = acc + (detail::node_bin_base + g) * W;
                    for (std::size_t l = 0; l < W; ++l) rb[l] += c[l];
                }
            }
            for (std::size_t l = 0; l < W; ++l) rootw[stop_symbol * W + l] = acc[stop_symbol * W + l];
            for (std::size_t r = 0; r < W && t0 + r < R; ++r) {
                const std::size_t l = head[r].lane, jr = t0 + r;
                bool finite = head[r].ok && head[r].max > -std::numeric_limits<float>::infinity();
                for (std::size_t b = 0; b < root_bin_count; ++b) {
                    root[b] = rootw[b * W + l];
                    finite = finite && std::isfinite(root[b]);
                }
                bad[jr] = finite ? 0 : 1;
                if (!finite) continue;
                detail::finish_summary(root.data(), head[r].max, head[r].shift, out[jr]);
                const auto f = first_[r0 + jr];
                if (f == byte_trie::npos) continue;
                const std::size_t b = trie.node(f).byte;
                if (!split[b]) continue; // a small node: sum_node sums it
                double* fs = first_sums_.data() + jr * first_stride;
                fs[0] = acc[b * W + l];
                for (std::uint32_t g = start[b]; g < start[b + 1]; ++g)
                    fs[1 + g - start[b]] = acc[(detail::node_bin_base + g) * W + l];
                first_shift_[jr] = head[r].shift;
                first_ok_[jr] = 1;
            }
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
    std::vector<byte_trie::node_index> first_;     ///< per row: node of ids[j]'s first byte, or npos
    // The first nodes' sums of the latest summarised block (row j at j % block).
    mutable std::size_t first_block_ = static_cast<std::size_t>(-1);
    mutable std::vector<double> first_sums_;       ///< [block × first_stride] (units of e^shift)
    mutable std::array<float, max_block> first_shift_{};
    mutable std::array<std::uint8_t, max_block> first_ok_{};
    std::uint64_t keep_owner_ = 0; ///< keep_terms' tag, 0 when not keeping
};

/// canonical_path on the fast path (see the top of this header); rows in id order
/// [rows ≥ tokens, n ≥ vocab], or trie-ordered rows with `trie_ordered` (n ≥ permutation size;
/// then the error for a bad logit names the id, as "column" of the reference).
template <logit_type T>
[[nodiscard]] byte_distributions canonical_path(const row_plan& plan, tensor_view<const T, 2> rows,
                                                     std::span<const std::int64_t> ids,
                                                     std::optional<std::string_view> text = std::nullopt,
                                                     bool trie_ordered = false,
                                                     simd::level lvl = simd::level::automatic) {
    static_assert(logit_type<T>, "rows are float, bf16, f16 or double");
    if constexpr (!simd_kernel_reads<T>) {
        // No fp32 kernel reads double rows: the reference is the path for them.
        if (trie_ordered)
            throw value_error("canonical-path projection", "rows", "trie-ordered rows are float, bf16 or f16");
        (void)simd::resolve(lvl, "canonical-path projection");
        return reference::canonical_path(plan.trie(), rows, ids, text);
    } else {
        dense_rows<T> source(plan, rows, trie_ordered, lvl);
        source.expect_first_nodes(ids);
        return canonical_path_from(plan.trie(), source, ids, text);
    }
}

/// canonical_path on rows of any tensor type (span views, Eigen, libtorch; float32, bfloat16,
/// float16 or float64, rank 2; a type that says otherwise fails to compile).
/// @throws shape_error naming `rows` for a wrong rank, dtype, layout or device
template <logit_tensor<2> Rows>
    requires(!std::same_as<std::remove_cvref_t<Rows>, tensor_view<const float, 2>> &&
             !std::same_as<std::remove_cvref_t<Rows>, tensor_view<const bf16, 2>> &&
             !std::same_as<std::remove_cvref_t<Rows>, tensor_view<const f16, 2>> &&
             !std::same_as<std::remove_cvref_t<Rows>, tensor_view<const double, 2>>)
[[nodiscard]] byte_distributions canonical_path(const row_plan& plan, const Rows& rows, std::span<const std::int64_t> ids,
                                                std::optional<std::string_view> text = std::nullopt,
                                                bool trie_ordered = false, simd::level lvl = simd::level::automatic) {
    switch (tensor_dtype(rows, "rows")) {
        case dtype::f32: return canonical_path(plan, as_view<const float, 2>(rows, "rows"), ids, text, trie_ordered, lvl);
        case dtype::bf16: return canonical_path(plan, as_view<const bf16, 2>(rows, "rows"), ids, text, trie_ordered, lvl);
        case dtype::f16: return canonical_path(plan, as_view<const f16, 2>(rows, "rows"), ids, text, trie_ordered, lvl);
        case dtype::f64: return canonical_path(plan, as_view<const double, 2>(rows, "rows"), ids, text, trie_ordered, lvl);
        default:
            throw shape_error("canonical-path projection", "argument `rows`",
                              "expected float32, bfloat16, float16 or float64 logits, got " + detail::describe_tensor(rows));
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
