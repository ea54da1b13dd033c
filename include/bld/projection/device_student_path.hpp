// bld/projection/device_student_path.hpp — the host half of the token head on device rows
// (bld/projection/device_token_head.hpp): the student's canonical path and its coefficients,
// computed on the host from the sums a device_token_head downloaded.
//
// detail::precomputed_rows is a row source for canonical_path_into (bld/projection/canonical_path.hpp)
// that serves those sums: summary(j) the row's downloaded summary (raising, when the row is first
// asked for, the error the CPU's row sources raise for a bad row), node() the q-th request's sums
// on the q-th call — canonical_path_into asks for the plan's requests exactly once each, in order.
// detail::device_head_path_run runs the CPU's own position sink (detail::vjp_sink) and piece sweep
// (detail::coefficient_pieces) over it, so everything but the O(V) row work is the CPU path's code.
#pragma once

#include "bld/core/error.hpp"
#include "bld/projection/canonical_path.hpp"
#include "bld/projection/canonical_plan.hpp"
#include "bld/projection/device_token_head.hpp"
#include "bld/projection/student_path.hpp"
#include "bld/vocab/trie.hpp"

#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <vector>

namespace bld::detail {

/// A row source over a device_head_sums (see the top of this header).
class precomputed_rows {
public:
    /// @param sums        one path's sums
    /// @param plan        the path's plan (its requests are checked against the calls)
    /// @param column_ids  trie-ordered rows: the id of each column (row_plan::permutation()), so
    ///                    that a bad logit's error names the id; empty for id order
    precomputed_rows(const device_head_sums& sums, const canonical_plan& plan, std::span<const std::uint32_t> column_ids)
        : sums_(&sums), plan_(&plan), column_ids_(column_ids) {
        if (sums.rows.size() != sums.row_status.size() || sums.rows.size() != sums.bad_logit.size() ||
            sums.nodes.size() != plan.requests.size() || sums.node_shift.size() != plan.requests.size())
            throw shape_error("token-head projection", "device sums",
                              "the device returned " + std::to_string(sums.rows.size()) + " rows and " +
                                  std::to_string(sums.nodes.size()) + " node sums for a path of " +
                                  std::to_string(plan.requests.size()) + " requests");
    }
    [[nodiscard]] std::size_t count() const noexcept { return sums_->rows.size(); }
    /// The row's summary; throws the CPU row sources' error for a bad row.
    [[nodiscard]] row_summary summary(std::size_t j) const {
        const std::int32_t st = sums_->row_status[j];
        if (st == device_head_row_no_finite_logit)
            throw value_error("student row pass", "row " + std::to_string(j), "no finite logit among the vocabulary's ids");
        if (st != device_head_row_ok) {
            const auto c = static_cast<std::size_t>(st);
            detail::bad_logit(j, column_ids_.empty() ? c : column_ids_[c], sums_->bad_logit[j], "student row pass");
        }
        return sums_->rows[j];
    }
    /// The next request's sums (units of e^shift) and the factor that turns them into probabilities.
    double node(std::size_t j, const row_summary& s, byte_trie::node_index n, node_sums& out) const {
        const std::size_t q = next_++;
        if (q >= plan_->requests.size() || plan_->requests[q].row != j || plan_->requests[q].node != n)
            throw value_error("token-head projection", "request " + std::to_string(q),
                              "the canonical path asked for a node the plan did not list (row " + std::to_string(j) +
                                  ", node " + std::to_string(n) + ")");
        const double shift = sums_->node_shift[q];
        if (!(shift > -std::numeric_limits<double>::infinity())) {
            out = node_sums{};
            return 0.0;
        }
        out = sums_->nodes[q];
        return s.probability(shift);
    }
    [[nodiscard]] double residual(std::size_t) const noexcept { return 0.0; }

private:
    const device_head_sums* sums_;
    const canonical_plan* plan_;
    std::span<const std::uint32_t> column_ids_;
    mutable std::size_t next_ = 0;
};

/// The host half of one path: canonical_path_into over the downloaded sums with the CPU's
/// position sink, `loss(i, q, dropped, g)` per finished position (as detail::student_path_run),
/// then, if `pieces` is not null, each touched row's coefficient pieces appended to it under
/// flat row first_row + j.
template <class Loss>
void device_head_path_run(const row_plan& plan, const canonical_plan& cp, const device_head_sums& sums,
                          std::span<const std::uint32_t> column_ids, std::span<const std::int64_t> ids, Loss& loss,
                          std::int64_t first_row, device_head_pieces* pieces) {
    const std::size_t m = ids.size();
    std::vector<row_coefficients> coef(m);
    const precomputed_rows source(sums, cp, column_ids);
    recording_rows<precomputed_rows> rec(source, m);
    vjp_sink<precomputed_rows, Loss> sink{&plan.trie(), &cp, &rec, &loss, &coef, {}, 0.0, 0.0};
    canonical_path_into(cp, rec, ids, sink);
    if (pieces == nullptr) return;
    auto& ws = vjp_workspace::of_this_thread();
    for (std::size_t j = 0; j < m; ++j) {
        if (!coef[j].touched) continue;
        coefficient_pieces(coef[j], plan.root_bounds(), ws.bounds, ws.values);
        const row_summary& s = rec.summary_of(j);
        device_head_row r;
        r.row = first_row + static_cast<std::int64_t>(j);
        r.shift = s.max_logit + s.log_normalizer;
        r.first_piece = static_cast<std::uint32_t>(pieces->value.size());
        for (std::size_t k = 0; k < ws.values.size(); ++k) {
            if (ws.values[k] == 0.0) continue; // the gradient is 0 there, as the zeroed rows hold
            pieces->lo.push_back(ws.bounds[k]);
            pieces->hi.push_back(ws.bounds[k + 1]);
            pieces->value.push_back(ws.values[k]);
        }
        r.pieces = static_cast<std::uint32_t>(pieces->value.size()) - r.first_piece;
        pieces->rows.push_back(r);
    }
}

} // namespace bld::detail
