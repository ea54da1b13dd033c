// bld/projection/student_path.hpp — the canonical path on the student's own token rows, with its
// gradient: token-head distillation (docs/07_token_head.md; design.md §3.5).
//
// The student's rows along its own tokenization go through the very projection the teacher's
// do (canonical_path_into over the same row sources: fast SIMD rows or the fp64 reference), which
// gives q_i, the student's next-byte distribution at every text byte i. Every q_i is a ratio of
// node masses of one or two rows, and every node mass is a sum of softmax probabilities over a
// contiguous range of the trie order, so with c_S = ∂L/∂M_S (probability units) the gradient
// w.r.t. row ℓ's logits is
//     ∂L/∂z_v = p_v · (c(v) − Σ_S c_S M_S),      c(v) = Σ_{S ∋ v} c_S.
// The second term is kept, computed from the forward's masses: it vanishes for the masses of
// a row's own positions (their q does not change when the row's masses are scaled together), not
// for the root masses R_{j+1} that a boundary reads beside M_j(s·a). A position contributes, per row:
//   root (byte 0, row 0)        q ∝ R_0(a):                  c_{R_0(a)} += g_a / (q_a Z)
//   inside token j at node s    q ∝ M_j(s·a):                c_{M_j(s·a)} += g_a / (q_a Z)
//   boundary (end of token j)   q ∝ M_j(s·a) + E_j(s) R_{j+1}(a):
//                               c_{M_j(s·a)} += c_a,  c_{E_j(s)} += Σ_a c_a R_{j+1}(a),
//                               c_{R_{j+1}(a)} += c_a E_j(s)            (c_a = g_a / (q_a Z))
// with g_a = ∂L/∂log q_a and Z the position's normaliser in probability units. The ranges of a
// row are nested or disjoint (they are trie nodes), so c(v) is piecewise constant over the trie
// order and is built by one sweep with a stack — no difference array, whose prefix sums would
// cancel a large coefficient against the small ones around it. Each row's gradient is then one
// pass over it: trie-ordered rows read and write contiguous pieces (the weight folded into the
// exponential's shift), rows in id order take the per-id weights from a scattered copy. No
// [positions, V] intermediate is formed; the forward keeps one position's node sums at a time.
//
// The token-head loss (bld::token_head_loss here, bld::distiller::token_head_loss for batches)
// feeds each position's q to bld::math::position_loss (bld/math/position_loss.hpp) against the
// teacher's distribution at that byte.
#pragma once

#include "bld/core/alphabet.hpp"
#include "bld/core/error.hpp"
#include "bld/core/tensor.hpp"
#include "bld/math/position_loss.hpp"
#include "bld/math/slot_loss.hpp"
#include "bld/projection/canonical_path.hpp"
#include "bld/projection/canonical_plan.hpp"
#include "bld/projection/fast_rows.hpp"
#include "bld/projection/row_options.hpp"
#include "bld/backends/simd/kernels.hpp"
#include "bld/backends/simd/row_pass.hpp"
#include "bld/vocab/trie.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <ranges>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace bld {

/// How the token-head loss reduces over text bytes.
enum class token_head_reduction : std::uint8_t {
    mean, ///< average over the supervised text bytes (the mask's ones)
    sum,  ///< sum over them
};

/// Options of the token-head loss (the divergence, temperature and floor mean what they mean in
/// bld_loss: τ softens the student's byte distribution, q_τ ∝ q^{1/τ}).
struct token_head_options {
    divergence kind = divergence::forward_kl;
    double temperature = 1.0;    ///< τ > 0
    double weight = 1.0;         ///< λ ≥ 0, multiplies value and gradient
    token_head_reduction reduction = token_head_reduction::mean;
    double target_floor = 1e-12; ///< ε of reverse KL (log max(p, ε))
};

/// What a token-head loss call returns besides the gradient it writes.
struct token_head_result {
    double value = 0.0;           ///< the reduced loss, times `weight`
    std::int64_t positions = 0;   ///< supervised text bytes (the mean's divisor)
    /// Σ over supervised bytes of 1 − p(S): teacher mass on bytes the student's canonical path
    /// cannot produce there (inside a student token, a byte no token with that prefix has).
    double unreachable = 0.0;
};

/// How the student's rows are laid out and read.
struct student_rows_options {
    row_order order = row_order::id;               ///< id order, or row_plan::permutation() order
    projection_path path = projection_path::fast;  ///< fast (SIMD) or the fp64 reference (id order)
    simd::level level = simd::level::automatic;
};

namespace detail {

/// A trie range [lo, hi) of one row with its coefficient ∂L/∂M (probability units).
struct coef_range {
    std::uint32_t lo = 0, hi = 0;
    double c = 0.0;
};

/// The coefficients a row collects from the positions that read it.
struct row_coefficients {
    std::array<double, root_bin_count> root{}; ///< ∂L/∂R(a): the root bins (STOP: the specials)
    std::vector<coef_range> ranges;            ///< nodes below the root
    double mean = 0.0;                         ///< Σ c_S M_S
    bool touched = false;
};

/// A row source that remembers what canonical_path_into asked of it: every row's summary and
/// the latest node sums (the position being computed).
template <class Rows>
class recording_rows {
public:
    recording_rows(const Rows& inner, std::size_t rows) : inner_(&inner), summaries_(rows) {}
    [[nodiscard]] std::size_t count() const noexcept { return inner_->count(); }
    [[nodiscard]] row_summary summary(std::size_t j) const {
        row_summary s = inner_->summary(j);
        if (j < summaries_.size()) summaries_[j] = s;
        return s;
    }
    double node(std::size_t j, const row_summary& s, byte_trie::node_index n, node_sums& out) const {
        const double f = inner_->node(j, s, n, out);
        last_ = &out;
        last_to_p_ = f;
        return f;
    }
    [[nodiscard]] double residual(std::size_t) const noexcept { return 0.0; }

    [[nodiscard]] const row_summary& summary_of(std::size_t j) const noexcept { return summaries_[j]; }
    [[nodiscard]] const node_sums& last() const noexcept { return *last_; }
    [[nodiscard]] double last_to_p() const noexcept { return last_to_p_; }

private:
    const Rows* inner_;
    mutable std::vector<row_summary> summaries_;
    mutable const node_sums* last_ = nullptr;
    mutable double last_to_p_ = 0.0;
};

/// Called with row j once the positions that read row j's own nodes are done (at the boundary
/// that ends token j): its coefficients are then complete, and the row was read moments ago.
struct no_row_done {
    void operator()(std::size_t) const noexcept {}
};

/// The position sink of the student's path: hands each finished q to `loss`, which returns
/// whether the position is supervised and writes g = ∂L/∂log q; turns g into row coefficients.
template <class Rows, class Loss, class Done = no_row_done>
struct vjp_sink {
    const byte_trie* trie;
    const canonical_plan* plan;
    const recording_rows<Rows>* rec;
    Loss* loss;
    std::vector<row_coefficients>* coef;
    Done done{};
    alignas(64) double q[alphabet_size];
    double drop = 0.0, bnd = 0.0;

    [[nodiscard]] double* probs(std::size_t) noexcept {
        std::fill(std::begin(q), std::end(q), 0.0);
        drop = 0.0;
        return q;
    }
    [[nodiscard]] double& dropped(std::size_t) noexcept { return drop; }
    [[nodiscard]] double& bound(std::size_t) noexcept { return bnd; }

    void finish(std::size_t i) {
        accumulate(i);
        const canonical_position& pos = plan->positions[i];
        if (pos.kind == math::position_kind::boundary) done(plan->requests[pos.request].row);
    }

    void accumulate(std::size_t i) {
        double g[alphabet_size];
        if (!(*loss)(i, static_cast<const double*>(q), drop, g)) return;
        const canonical_position& pos = plan->positions[i];
        // ∂L/∂num_a = (g_a − q_a Σ_b g_b) / num_a, as log q_a = log num_a − log Z. (A loss's own g
        // already sums to ~0 over the support; an arbitrary upstream gradient need not.) Inside
        // a token the support is the node's children: only they are visited.
        const auto correct = [&](const auto& entries, const auto& byte_of) {
            double gs = 0.0;
            for (const auto& e : entries)
                if (q[byte_of(e)] > 0.0) gs += g[byte_of(e)];
            for (const auto& e : entries) {
                const std::size_t a = byte_of(e);
                g[a] = q[a] > 0.0 ? g[a] - q[a] * gs : 0.0;
            }
        };
        if (pos.kind == math::position_kind::inside)
            correct(trie->children(plan->requests[pos.request].node), [](const auto& ch) { return std::size_t{ch.byte}; });
        else
            correct(std::views::iota(std::size_t{0}, alphabet_size), [](std::size_t a) { return a; });
        constexpr std::size_t nb = root_bin_count;
        if (pos.kind == math::position_kind::root) {
            const auto& R = rec->summary_of(0).root;
            double Z = 0.0;
            for (std::size_t a = 0; a < nb; ++a) Z += R[a];
            auto& rc = (*coef)[0];
            rc.touched = true;
            for (std::size_t a = 0; a < nb; ++a) {
                if (!(q[a] > 0.0) || g[a] == 0.0) continue;
                const double c = g[a] / (q[a] * Z);
                rc.root[a] += c;
                rc.mean += c * R[a];
            }
            return;
        }
        const std::size_t j = plan->requests[pos.request].row;
        const auto n = plan->requests[pos.request].node;
        const node_sums& ns = rec->last();
        const double to_p = rec->last_to_p();
        auto& rc = (*coef)[j];
        rc.touched = true;
        const auto kids = trie->children(n);
        if (pos.kind == math::position_kind::inside) {
            double Zu = 0.0; // (the node's children in byte order: the other entries are 0)
            for (const auto& ch : kids) Zu += ns.child[ch.byte];
            const double Z = Zu * to_p;
            for (const auto& ch : kids) {
                const std::size_t a = ch.byte;
                if (!(q[a] > 0.0) || g[a] == 0.0) continue;
                const double c = g[a] / (q[a] * Z);
                rc.ranges.push_back({ch.lo, ch.hi, c});
                rc.mean += c * ns.child[a] * to_p;
            }
            return;
        }
        // Boundary at the end of token j: num(a) = M_j(s·a) + E_j(s) R_{j+1}(a).
        const std::size_t nx = pos.next_row;
        const auto& R = rec->summary_of(nx).root;
        double Zu = 0.0;
        for (std::size_t a = 0; a < nb; ++a) Zu += (a < 256 ? ns.child[a] : 0.0) + ns.end * R[a];
        const double Z = Zu * to_p;
        std::array<double, root_bin_count> c{};
        for (std::size_t a = 0; a < nb; ++a)
            if (q[a] > 0.0 && g[a] != 0.0) c[a] = g[a] / (q[a] * Z);
        for (const auto& ch : kids) {
            const std::size_t a = ch.byte;
            if (c[a] == 0.0) continue;
            rc.ranges.push_back({ch.lo, ch.hi, c[a]});
            rc.mean += c[a] * ns.child[a] * to_p;
        }
        double cE = 0.0;
        for (std::size_t a = 0; a < nb; ++a) cE += c[a] * R[a];
        const auto& nd = trie->node(n);
        const double Ep = ns.end * to_p;
        if (nd.end_hi > nd.lo && cE != 0.0) {
            rc.ranges.push_back({nd.lo, nd.end_hi, cE});
            rc.mean += cE * Ep;
        }
        auto& nc = (*coef)[nx];
        nc.touched = true;
        for (std::size_t a = 0; a < nb; ++a) {
            if (c[a] == 0.0) continue;
            nc.root[a] += c[a] * Ep;
            nc.mean += c[a] * Ep * R[a];
        }
    }
};

/// The piecewise-constant coefficient c(v) of a row over the trie order [0, P): the root bins
/// (segments root_bounds) plus the nested ranges, swept with a stack so that a range's end
/// restores the value outside it exactly. Writes pieces [bounds[k], bounds[k + 1]) with value
/// values[k] (c − mean).
inline void coefficient_pieces(row_coefficients& rc, std::span<const std::uint32_t> root_bounds,
                               std::vector<std::uint32_t>& bounds, std::vector<double>& values) {
    bounds.clear();
    values.clear();
    auto& rs = rc.ranges;
    std::sort(rs.begin(), rs.end(), [](const coef_range& x, const coef_range& y) {
        return x.lo != y.lo ? x.lo < y.lo : x.hi > y.hi;
    });
    struct open {
        std::uint32_t hi;
        double value;
    };
    static thread_local std::vector<open> stack; // (its capacity kept between rows)
    stack.clear();
    std::size_t r = 0;
    std::uint32_t cursor = root_bounds[0];
    bounds.push_back(cursor);
    const auto emit = [&](std::uint32_t to, double v) {
        if (to <= cursor) return;
        bounds.push_back(to);
        values.push_back(v - rc.mean);
        cursor = to;
    };
    for (std::size_t b = 0; b < root_bin_count; ++b) {
        const std::uint32_t end = root_bounds[b + 1];
        const double base = rc.root[b];
        const auto current = [&] { return stack.empty() ? base : stack.back().value; };
        for (; r < rs.size() && rs[r].lo < end; ++r) {
            while (!stack.empty() && stack.back().hi <= rs[r].lo) {
                emit(stack.back().hi, stack.back().value);
                stack.pop_back();
            }
            emit(rs[r].lo, current());
            stack.push_back({rs[r].hi, current() + rs[r].c});
        }
        while (!stack.empty()) {
            emit(stack.back().hi, stack.back().value);
            stack.pop_back();
        }
        emit(end, base);
    }
}

/// Per-thread scratch of the backward pass.
struct vjp_workspace {
    std::vector<std::uint32_t> bounds;
    std::vector<double> values;
    std::vector<float> fshift, fsign, fscale, weights;
    [[nodiscard]] static vjp_workspace& of_this_thread() {
        static thread_local vjp_workspace ws;
        return ws;
    }
};

/// The largest |scale| a backward piece multiplies the row pass's kept terms by: the terms it
/// could have flushed (< e^−86.6 ≈ 2.4e-38) then weigh < 4e-31 in the gradient.
inline constexpr double max_kept_scale = 16777216.0; // 2^24

/// Row j's gradient: grad[c] = p_c (c(c) − mean) over the row's `width` columns (0 where the
/// softmax ignores a column: absent ids, padding past the vocabulary or the trie order).
/// `kept`, if not null, holds the row pass's terms e^(z − kept_shift) over the trie order
/// (dense_rows::kept_terms; trie-ordered rows on the fast path).
template <class T, class G>
void row_backward(const row_plan& plan, row_coefficients& rc, const row_summary& s, const T* z, std::size_t width,
                  const student_rows_options& how, simd::level lvl, G* grad, const float* kept = nullptr,
                  float kept_shift = 0.0f) {
    auto& ws = vjp_workspace::of_this_thread();
    if (!rc.touched) {
        std::fill(grad, grad + width, G{});
        return;
    }
    coefficient_pieces(rc, plan.root_bounds(), ws.bounds, ws.values);
    const auto perm = plan.permutation();
    const auto P = static_cast<std::uint32_t>(perm.size());
    const double shift = s.max_logit + s.log_normalizer;
    const std::size_t np = ws.values.size();
    constexpr bool fast_type = simd_kernel_reads<T> && std::same_as<G, float>;
    const bool fast = fast_type && how.path == projection_path::fast;
    if (!fast) {
        // fp64: p_c (c − mean) with p_c = e^(z − shift).
        std::fill(grad, grad + width, G{});
        for (std::size_t k = 0; k < np; ++k) {
            const double w = ws.values[k];
            if (w == 0.0) continue;
            for (std::uint32_t t = ws.bounds[k]; t < ws.bounds[k + 1]; ++t) {
                const std::size_t col = how.order == row_order::trie ? t : perm[t];
                grad[col] = static_cast<G>(std::exp(bld::detail::logit_at(z, col) - shift) * w);
            }
        }
        return;
    }
    if constexpr (fast_type) {
        const auto k = simd::detail::weighted_exp_for<std::remove_cv_t<T>>(lvl);
        if (how.order == row_order::trie) {
            // The pieces cover columns [0, P) exactly: only the padding past them needs zeros.
            // With the row pass's terms E = e^(z − kept_shift): p = E · e^(kept_shift − shift), so
            // a piece's gradient is E times one scale, unless the scale is large (a light node,
            // where E may have been flushed to 0 below e^−86.6 of the row's shift while p · w
            // still counts): those pieces exponentiate with the weight in the shift.
            ws.fshift.resize(np);
            ws.fsign.resize(np);
            ws.fscale.resize(np);
            const double to_p = kept != nullptr ? std::exp(static_cast<double>(kept_shift) - shift) : 0.0;
            for (std::size_t p = 0; p < np; ++p) {
                const double w = ws.values[p];
                ws.fsign[p] = w > 0.0 ? 1.0f : (w < 0.0 ? -1.0f : 0.0f);
                const double sc = w * to_p;
                const bool multiply = kept != nullptr && std::abs(sc) <= max_kept_scale;
                ws.fscale[p] = multiply ? static_cast<float>(sc) : std::numeric_limits<float>::quiet_NaN();
                // The shift only where the piece exponentiates (a log per piece otherwise).
                ws.fshift[p] = multiply ? 0.0f
                                        : (w != 0.0 ? static_cast<float>(shift - std::log(std::abs(w)))
                                                    : std::numeric_limits<float>::infinity());
            }
            k.segments(z, kept, ws.bounds.data(), ws.fshift.data(), ws.fsign.data(), ws.fscale.data(), np, grad);
            // An exponentiated piece of weight 0 gives e^(z − inf) · 0 = 0 already, unless z = +inf
            // (a multiplied one gives kept · 0 = 0: its terms are finite).
            for (std::size_t p = 0; p < np; ++p)
                if (ws.fsign[p] == 0.0f && std::isnan(ws.fscale[p]))
                    std::fill(grad + ws.bounds[p], grad + ws.bounds[p + 1], 0.0f);
            std::fill(grad + P, grad + width, 0.0f);
            return;
        }
        // Id order: the weights in trie order (one sequential fill), read through each id's
        // column (row_plan::columns); weights[P] = 0 serves the absent ids.
        ws.weights.resize(static_cast<std::size_t>(P) + 1);
        double wmax = 0.0;
        for (std::size_t p = 0; p < np; ++p) {
            const double w = ws.values[p];
            wmax = std::max(wmax, std::abs(w));
            std::fill(ws.weights.begin() + ws.bounds[p], ws.weights.begin() + ws.bounds[p + 1], static_cast<float>(w));
        }
        ws.weights[P] = 0.0f;
        const std::size_t V = plan.vocab_size();
        if (!(wmax < 1e30)) {
            // A weight beyond float's comfort (a node the row gives < ~1e-30): the fp64 loop,
            // the weight folded into the exponent.
            std::fill(grad, grad + width, 0.0f);
            for (std::size_t p = 0; p < np; ++p) {
                const double w = ws.values[p];
                if (w == 0.0) continue;
                for (std::uint32_t t = ws.bounds[p]; t < ws.bounds[p + 1]; ++t)
                    grad[perm[t]] = static_cast<float>(
                        std::copysign(std::exp(bld::detail::logit_at(z, perm[t]) - shift + std::log(std::abs(w))), w));
            }
            return;
        }
        k.gather(z, plan.columns().data(), ws.weights.data(), V, static_cast<float>(shift), grad);
        std::fill(grad + V, grad + width, 0.0f);
        if (P < V) { // absent ids: whatever their logits hold (NaN · 0), no gradient
            const auto cols = plan.columns();
            for (std::size_t id = 0; id < V; ++id)
                if (cols[id] == P) grad[id] = 0.0f;
        }
    }
}

/// The row sources and the projection word their errors for the teacher, whose rows they
/// usually read; on the student's rows the same error names the student's rows instead.
template <class F>
decltype(auto) with_student_wording(F&& f) {
    const auto reword = [](const std::string& s) {
        std::string out = s;
        for (const char* from : {"teacher row pass", "one teacher row per token"}) {
            const std::string what = from;
            if (const auto k = out.find(what); k != std::string::npos) out.replace(k + what.find("teacher"), 7, "student");
        }
        return out;
    };
    try {
        return f();
    } catch (const value_error& e) {
        throw value_error(reword(e.operation()), e.location(), reword(e.reason()));
    } catch (const shape_error& e) {
        throw shape_error(reword(e.operation()), e.location(), reword(e.reason()));
    }
}

/// The student's canonical path with the gradient of a per-position loss: forward through
/// canonical_path_into (the teacher's projection), `loss(i, q, dropped, g)` per finished
/// position, then one backward pass per row into grad [rows, width] (if not null).
template <class T, class G, class Loss>
void student_path_run_body(const row_plan& plan, const canonical_plan& cp, tensor_view<const T, 2> rows,
                           std::span<const std::int64_t> ids, const student_rows_options& how, Loss& loss, G* grad,
                           std::size_t grad_stride) {
    const char* op = "token-head projection";
    const auto lvl = simd::resolve(how.level, op);
    const std::size_t m = ids.size();
    std::vector<row_coefficients> coef(m);
    std::vector<std::uint8_t> done(m, 0);
    const auto width = static_cast<std::size_t>(rows.extent(1));
    const auto run = [&](const auto& source) {
        using S = std::remove_cvref_t<decltype(source)>;
        recording_rows<S> rec(source, m);
        // Each row's backward runs as soon as its coefficients are complete (the boundary that
        // ends its token), while the row is still in cache from the forward.
        const auto backward = [&](std::size_t j) {
            if (grad == nullptr || j >= m || done[j]) return;
            done[j] = 1;
            const float* kept = nullptr;
            float kept_shift = 0.0f;
            if constexpr (requires { source.kept_terms(j, kept_shift); }) kept = source.kept_terms(j, kept_shift);
            row_backward(plan, coef[j], rec.summary_of(j), rows.data() + j * width, width, how, lvl,
                         grad + j * grad_stride, kept, kept_shift);
        };
        vjp_sink<S, Loss, decltype(backward)> sink{&plan.trie(), &cp, &rec, &loss, &coef, backward, {}, 0.0, 0.0};
        canonical_path_into(cp, rec, ids, sink);
        for (std::size_t j = 0; j < m; ++j) backward(j);
    };
    const bool trie = how.order == row_order::trie;
    if constexpr (simd_kernel_reads<T>) {
        if (how.path == projection_path::fast) {
            dense_rows<T> source(plan, rows, trie, lvl);
            source.expect_first_nodes(ids);
            if (grad != nullptr) source.keep_terms(); // trie order: the backward reuses the terms
            run(source);
            return;
        }
    }
    if (trie)
        throw value_error(op, "rows",
                          "trie-ordered rows are read on the fast path from float, bf16 or f16 logits (the reference "
                          "and double rows take id order)");
    detail::check_row_width(plan, rows.extent(1), plan.vocab_size(), op, "ids of the vocabulary");
    run(reference::dense_rows<T>(plan.trie(), rows));
}

/// student_path_run_body with the row errors worded for the student's rows.
template <class T, class G, class Loss>
void student_path_run(const row_plan& plan, const canonical_plan& cp, tensor_view<const T, 2> rows,
                      std::span<const std::int64_t> ids, const student_rows_options& how, Loss& loss, G* grad,
                      std::size_t grad_stride) {
    with_student_wording([&] { student_path_run_body(plan, cp, rows, ids, how, loss, grad, grad_stride); });
}

[[nodiscard]] inline math::slot_params position_params(const token_head_options& o, const char* op) {
    if (!(o.temperature > 0.0) || !std::isfinite(o.temperature))
        throw value_error(op, "temperature", "τ must be a finite number > 0, got " + std::to_string(o.temperature));
    if (!(o.weight >= 0.0) || !std::isfinite(o.weight))
        throw value_error(op, "weight", "λ must be a finite number ≥ 0, got " + std::to_string(o.weight));
    if (!(o.target_floor > 0.0) || !(o.target_floor < 1.0))
        throw value_error(op, "target_floor", "ε must be in (0, 1), got " + std::to_string(o.target_floor));
    math::slot_params prm;
    prm.w_div = 1.0;
    prm.kind = o.kind;
    prm.inv_temperature = 1.0 / o.temperature;
    prm.log_floor = std::log(o.target_floor);
    return prm;
}

/// bld::math::position_loss on the host at level `lvl`: for the forward KL, the support's
/// entries gathered and handed to the SIMD position kernel (simd::detail::position_fkl; the
/// inner positions of a token have a few children, a boundary up to 260); the specification
/// for the other divergences, at the scalar level (the reference path), and for what the kernel
/// does not take — a bad teacher probability (which the specification then names), a subnormal q,
/// a subnormal teacher mass on the support.
template <class P>
math::position_loss_result position_loss_at(const double* q, const P* p, const math::slot_params& prm, double* g,
                                            simd::level lvl) {
    if (prm.kind != divergence::forward_kl || lvl == simd::level::scalar) return math::position_loss(q, p, prm, g);
    constexpr std::size_t n = alphabet_size, pad = 8; // pad: a multiple of every target's double width
    alignas(64) double qs[n + pad], ps[n + pad], in[n + pad], gs[n + pad];
    std::array<std::uint16_t, n> idx;
    std::size_t m = 0;
    bool ok = true;
    double mass = 0.0;
    for (std::size_t a = 0; a < n; ++a) {
        const double v = static_cast<double>(p[a]);
        ok &= v >= 0.0 && v <= std::numeric_limits<double>::max();
        if (q[a] > 0.0) {
            ok &= q[a] >= std::numeric_limits<double>::min();
            idx[m] = static_cast<std::uint16_t>(a);
            qs[m] = q[a];
            ps[m] = v;
            in[m] = 1.0;
            ++m;
            mass += v; // in entry order, as the specification's p(S)
        }
    }
    // (a teacher mass on the support below DBL_MIN would overflow the kernel's 1 / p(S))
    if (!ok || (mass > 0.0 && mass < std::numeric_limits<double>::min())) return math::position_loss(q, p, prm, g);
    math::position_loss_result r;
    r.reachable = mass;
    std::fill(g, g + n, 0.0);
    if (!(mass > 0.0)) return r;
    const std::size_t padded = (m + pad - 1) / pad * pad;
    for (std::size_t k = m; k < padded; ++k) qs[k] = ps[k] = in[k] = 0.0;
    r.value = simd::detail::position_kernel_for(lvl)(qs, ps, in, padded, mass, prm.inv_temperature, gs);
    for (std::size_t k = 0; k < m; ++k) g[idx[k]] = gs[k];
    return r;
}

/// The level position_loss_at runs at for a route: the resolved SIMD level on the fast path,
/// the scalar specification on the reference path.
[[nodiscard]] inline simd::level position_level(projection_path path, simd::level requested, const char* op) {
    return path == projection_path::fast ? simd::resolve(requested, op) : simd::level::scalar;
}

/// The error of a bad teacher probability at text byte i.
[[noreturn]] inline void bad_target(const char* op, const std::string& where, int a, double v) {
    throw value_error(op, where + ", entry " + std::to_string(a),
                      "the teacher's probability is " + std::to_string(v) + " (expected finite and ≥ 0)");
}

} // namespace detail

/// The student's next-byte distributions along its own tokenization and their vector–Jacobian
/// product: given grad_log_probs [L, 260] = ∂L/∂log q (entries where q = 0 are ignored), writes
/// ∂L/∂logits into grad [rows, n] (rows past the ids, and columns the softmax ignores, get 0).
/// @param rows [rows ≥ ids, n] logits in how.order; row j predicts ids[j]
/// @returns the forward distributions, exactly canonical_path's for these rows
/// @throws canonical_path's errors (ids, text, rows), shape_error for mismatched gradients
template <logit_type T, class G>
    requires(std::same_as<G, float> || std::same_as<G, double>)
[[nodiscard]] byte_distributions canonical_path_vjp(const row_plan& plan, tensor_view<const T, 2> rows,
                                                    std::span<const std::int64_t> ids,
                                                    tensor_view<const double, 2> grad_log_probs, tensor_view<G, 2> grad,
                                                    const student_rows_options& how = {},
                                                    std::optional<std::string_view> text = std::nullopt) {
    const char* op = "canonical-path vjp";
    const canonical_plan cp = canonical_plan::build(plan.trie(), ids, text);
    const auto L = static_cast<std::int64_t>(cp.bytes.size());
    if (grad_log_probs.extent(0) != L || grad_log_probs.extent(1) != static_cast<std::int64_t>(alphabet_size))
        throw shape_error(op, "grad_log_probs",
                          "expected [" + std::to_string(L) + ", 260] (one row per text byte), got " +
                              detail::format_extents(grad_log_probs.extents()));
    if (grad.extent(0) != rows.extent(0) || grad.extent(1) != rows.extent(1))
        throw shape_error(op, "grad", "expected the rows' shape " + detail::format_extents(rows.extents()) + ", got " +
                                          detail::format_extents(grad.extents()));
    byte_distributions out;
    out.resize(cp.bytes.size());
    auto loss = [&](std::size_t i, const double* q, double dropped, double* g) {
        std::copy(q, q + alphabet_size, out.at(i).data());
        out.dropped[i] = dropped;
        for (std::size_t a = 0; a < alphabet_size; ++a) g[a] = q[a] > 0.0 ? grad_log_probs(static_cast<std::int64_t>(i), static_cast<std::int64_t>(a)) : 0.0;
        return true;
    };
    const auto width = static_cast<std::size_t>(rows.extent(1));
    detail::student_path_run(plan, cp, rows, ids, how, loss, grad.data(), width);
    for (std::size_t j = ids.size(); j < static_cast<std::size_t>(rows.extent(0)); ++j)
        std::fill(grad.data() + j * width, grad.data() + (j + 1) * width, G{});
    return out;
}

/// The token-head loss of one text: Σ over text bytes i with mask[i] of
/// D(p̂_i ‖ q_i) (bld/math/position_loss.hpp), where p_i = targets[i] is the teacher's
/// next-byte distribution and q_i the student's, projected from its rows along its ids; reduced
/// by options.reduction, times options.weight. Writes ∂value/∂logits into grad (same shape as
/// rows) unless grad is empty.
/// @param rows    [rows ≥ ids, n] student logits (float, bf16, f16, double) in how.order; row
///                j predicts ids[j]
/// @param targets [text bytes, 260] teacher probabilities (float, bf16 or double)
/// @param mask    [text bytes] nonzero = supervised, or empty: every byte
/// @throws value_error for options out of range or a bad teacher probability (naming the byte),
///         shape_error for mismatched shapes, and canonical_path's errors for ids, text and rows
template <logit_type T, class P, class G>
    requires(std::same_as<P, float> || std::same_as<P, bf16> || std::same_as<P, double>) &&
            (std::same_as<G, float> || std::same_as<G, double>)
token_head_result token_head_loss(const row_plan& plan, tensor_view<const T, 2> rows, std::span<const std::int64_t> ids,
                                  tensor_view<const P, 2> targets, std::span<const std::uint8_t> mask,
                                  const token_head_options& options, tensor_view<G, 2> grad,
                                  const student_rows_options& how = {}, std::optional<std::string_view> text = std::nullopt) {
    const char* op = "bld::token_head_loss";
    const math::slot_params prm = detail::position_params(options, op);
    const canonical_plan cp = canonical_plan::build(plan.trie(), ids, text);
    const auto L = static_cast<std::int64_t>(cp.bytes.size());
    if (targets.extent(0) != L || targets.extent(1) != static_cast<std::int64_t>(alphabet_size))
        throw shape_error(op, "targets",
                          "expected [" + std::to_string(L) + ", 260] (one teacher distribution per text byte), got " +
                              detail::format_extents(targets.extents()));
    if (!mask.empty() && static_cast<std::int64_t>(mask.size()) != L)
        throw shape_error(op, "mask", "expected " + std::to_string(L) + " entries (one per text byte), got " +
                                          std::to_string(mask.size()));
    const bool want_grad = !grad.empty();
    if (want_grad && (grad.extent(0) != rows.extent(0) || grad.extent(1) != rows.extent(1)))
        throw shape_error(op, "grad", "expected the rows' shape " + detail::format_extents(rows.extents()) + ", got " +
                                          detail::format_extents(grad.extents()));
    if (targets.device() != device_kind::cpu || rows.device() != device_kind::cpu)
        throw shape_error(op, targets.device() != device_kind::cpu ? "targets" : "rows", "expected host memory");
    token_head_result res;
    for (std::int64_t i = 0; i < L; ++i) res.positions += mask.empty() || mask[static_cast<std::size_t>(i)] ? 1 : 0;
    const double scale =
        options.weight / (options.reduction == token_head_reduction::mean ? std::max<std::int64_t>(res.positions, 1) : 1);
    double total = 0.0;
    const simd::level lvl = detail::position_level(how.path, how.level, op);
    auto loss = [&](std::size_t i, const double* q, double, double* g) {
        if (!mask.empty() && !mask[i]) return false;
        const P* p = targets.data() + i * alphabet_size;
        const auto r = detail::position_loss_at(q, p, prm, g, lvl);
        if (r.status != math::slot_status::ok)
            detail::bad_target(op, "text byte " + std::to_string(i), r.index, static_cast<double>(p[r.index]));
        total += r.value;
        res.unreachable += 1.0 - r.reachable;
        for (std::size_t a = 0; a < alphabet_size; ++a) g[a] *= scale;
        return true;
    };
    const auto width = static_cast<std::size_t>(rows.extent(1));
    detail::student_path_run(plan, cp, rows, ids, how, loss, want_grad ? grad.data() : static_cast<G*>(nullptr), width);
    if (want_grad)
        for (std::size_t j = ids.size(); j < static_cast<std::size_t>(rows.extent(0)); ++j)
            std::fill(grad.data() + j * width, grad.data() + (j + 1) * width, G{});
    res.value = total * scale;
    return res;
}

} // namespace bld
