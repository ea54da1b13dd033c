// bld/projection/device_token_head.hpp — the seam through which a GPU backend computes the
// token-head loss (bld/projection/student_path.hpp) on student rows that live in device memory.
//
// The work splits by size. The O(V) part — each row's softmax summary, each node request's sums,
// and each row's gradient p_v · (c(v) − mean) — runs on the device; the O(text bytes × 257) part
// in between — the canonical path's positions, the per-position loss and the coefficients c_S of
// the nodes each position reads (detail::vjp_sink, detail::coefficient_pieces) — runs on the host,
// unchanged, over a row source that serves the downloaded sums (detail::precomputed_rows in
// bld/projection/device_student_path.hpp). Only the sums (≈ 2 KiB per text byte) and the pieces
// cross the bus, never the [rows, V] logits or gradient.
//
// As with bld/projection/device_projection.hpp, this header is compiled by the host compiler
// (it includes no CUDA header); a translation unit compiled by nvcc that includes <bld/cuda.cuh>
// registers the CUDA implementation (bld/backends/cuda/token_head.cuh) here, and the distiller
// asks it for one object per student trie. Without a registered factory, CUDA logits are refused
// with a shape_error that says how to enable CUDA.
#pragma once

#include "bld/backends/reference/row_pass.hpp"
#include "bld/core/tensor.hpp"
#include "bld/math/elementary.hpp"
#include "bld/projection/canonical_plan.hpp"
#include "bld/vocab/trie.hpp"

#include <atomic>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

namespace bld {

/// One canonical path over device rows: rows [first_row, first_row + rows) of the row matrix,
/// row first_row + j predicting the path's token j; `requests` (host memory) are the path's
/// canonical_plan::requests, their `row` relative to first_row.
struct device_head_path {
    std::int64_t first_row = 0;
    std::int64_t rows = 0;
    std::span<const node_request> requests;
};

/// device_head_sums::row_status of a row whose logits are all valid.
inline constexpr std::int32_t device_head_row_ok = -1;
/// device_head_sums::row_status of a row without a finite logit among the softmax's ids.
inline constexpr std::int32_t device_head_row_no_finite_logit = -2;

/// What the device computes for one path's forward (host memory): exactly what the CPU row
/// sources' summary() and node() return, within the row pass's tolerance.
struct device_head_sums {
    std::vector<row_summary> rows;        ///< [rows]: max logit, log-normaliser, root masses
    /// [rows]: device_head_row_ok, device_head_row_no_finite_logit, or the first column (in the
    /// rows' column order) holding NaN or +Inf.
    std::vector<std::int32_t> row_status;
    std::vector<double> bad_logit;        ///< [rows]: that column's logit (else 0)
    std::vector<double> node_shift;       ///< [requests]: the node's max logit (−inf: mass 0)
    std::vector<node_sums> nodes;         ///< [requests]: E(s) and M(s·a) in units of e^node_shift
};

/// One row's backward: the gradient of flat row `row` is p_c · value over each of its pieces.
struct device_head_row {
    std::int64_t row = 0;          ///< flat index in the row matrix
    double shift = 0.0;            ///< max_logit + log_normalizer of its summary: p = e^(z − shift)
    std::uint32_t first_piece = 0; ///< its pieces: [first_piece, first_piece + pieces)
    std::uint32_t pieces = 0;
};

/// The backward of many rows (host memory): each piece k is the trie-order range [lo[k], hi[k])
/// with the constant c − mean = value[k] (detail::coefficient_pieces).
struct device_head_pieces {
    std::vector<device_head_row> rows;
    std::vector<std::uint32_t> lo, hi;
    std::vector<double> value;
};

namespace detail {

/// The exponent offset of a piece of weight w ≠ 0: p · w = sign(w) · e^(z − (shift − log|w|)),
/// the weight folded into the exponential (as the CPU's trie-order path does), so that a tiny
/// p and a huge w never multiply.
BLD_HOST_DEVICE inline double piece_exponent(double shift, double w) noexcept {
    return shift - math::log64(w < 0.0 ? -w : w);
}
/// One gradient entry of a piece: sign(w) · e^(z − exponent), in float (the gradient's type).
BLD_HOST_DEVICE inline float piece_gradient(double z, double exponent, double w) noexcept {
    const auto g = static_cast<float>(math::exp64(z - exponent));
    return w < 0.0 ? -g : g;
}

} // namespace detail

/// The token head on device-resident student rows (one object per student trie; the trie
/// outlives it). Implementations must be usable from one thread at a time.
class device_token_head {
public:
    virtual ~device_token_head() = default;

    /// The forward sums of every path (one result per path, in order).
    /// @param rows   device memory, [row_count, columns] of `type` (float32 or bfloat16), dense
    ///               row-major, on CUDA device `device`
    /// @param trie_ordered columns in row_plan::permutation() order instead of id order
    /// @param stream the backend's stream handle (cudaStream_t), or null for the default stream
    /// @throws shape_error for another dtype, host memory, rows narrower than the vocabulary (or
    ///         the trie order), a path outside the rows; the backend's error (cuda_error).
    ///         Bad logits are reported in row_status, not thrown.
    [[nodiscard]] virtual std::vector<device_head_sums> sums(dtype type, const void* rows, std::int64_t row_count,
                                                             std::int64_t columns, int device, bool trie_ordered,
                                                             std::span<const device_head_path> paths, void* stream) = 0;

    /// Writes grad[row][column] = p · value of the column's piece for every piece of every row
    /// listed (column = trie position for trie-ordered rows, permutation()[position] in id
    /// order); with `clear`, the whole [row_count, columns] gradient is zeroed first (so
    /// columns outside the pieces and rows not listed hold 0). Returns once grad is written.
    /// @param grad float32 device memory, [row_count, columns], on `device`
    virtual void backward(dtype type, const void* rows, float* grad, std::int64_t row_count, std::int64_t columns,
                          int device, bool trie_ordered, const device_head_pieces& pieces, bool clear,
                          void* stream) = 0;
};

/// Makes a token head for a student trie (the trie outlives it).
using device_token_head_factory = std::unique_ptr<device_token_head> (*)(const byte_trie& trie);

/// Where the CUDA backend registers its factory (null: no GPU token head in this program).
struct device_token_head_registry {
    static inline std::atomic<device_token_head_factory> cuda{nullptr};
};

} // namespace bld
