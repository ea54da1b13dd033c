// bld/backends/cuda/token_head.cuh — bld::device_token_head (bld/projection/device_token_head.hpp)
// on the GPU: the O(V) parts of the token-head loss on student rows in device memory.
//
//  * sums: the teacher side's kernels, unchanged — row_pass (row_pass.cuh) over the rows the paths
//    cover, node_sums over every path's requests — then one download of the summaries, statuses
//    and node sums, and one synchronisation. The host runs the canonical path, the loss and the
//    coefficients over them (bld/projection/device_student_path.hpp).
//  * backward: one block per listed row; the block walks the row's pieces in order, its threads
//    striding over each piece's trie positions, and writes
//        grad[row][column] = sign(w) · e^(z − (shift − log|w|))         (detail::piece_gradient)
//    in fp64 (column = the position in trie order, permutation()[position] in id order). With
//    `clear` the whole gradient is zeroed first (cudaMemsetAsync), so columns outside the pieces
//    and rows no path reads hold 0, as on the CPU.
//
// Rows: float32 or bfloat16 (what the row pass reads); others are refused with a shape_error.
// Tables (the trie and row-pass plan of device_trie, and the trie-order permutation) are built
// once per (device, column order) and kept.
#pragma once

#include "bld/backends/cuda/block_ops.cuh"
#include "bld/backends/cuda/error.cuh"
#include "bld/backends/cuda/row_pass.cuh"
#include "bld/backends/cuda/stream.cuh"
#include "bld/backends/reference/row_pass.hpp"
#include "bld/projection/device_token_head.hpp"
#include "bld/vocab/trie.hpp"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace bld::cuda {

namespace detail {

inline constexpr int head_threads = 256;

/// One block per listed row (grid-stride): grad[row][col(t)] = piece_gradient over the row's
/// pieces. `perm` maps trie positions to id columns (null: trie-ordered rows, col = t).
template <class T>
__global__ void __launch_bounds__(head_threads)
token_head_backward_kernel(const T* __restrict__ rows, std::int64_t stride, float* __restrict__ grad,
                           const std::uint32_t* __restrict__ perm, const device_head_row* __restrict__ heads,
                           std::uint32_t count, const std::uint32_t* __restrict__ lo,
                           const std::uint32_t* __restrict__ hi, const double* __restrict__ value) {
    for (std::uint32_t r = blockIdx.x; r < count; r += gridDim.x) {
        const device_head_row h = heads[r];
        const T* z = rows + h.row * stride;
        float* g = grad + h.row * stride;
        for (std::uint32_t k = h.first_piece; k < h.first_piece + h.pieces; ++k) {
            const double w = value[k];
            if (w == 0.0) continue;
            const double e = bld::detail::piece_exponent(h.shift, w);
            for (std::uint32_t t = lo[k] + threadIdx.x; t < hi[k]; t += blockDim.x) {
                const std::uint32_t col = perm != nullptr ? perm[t] : t;
                g[col] = bld::detail::piece_gradient(static_cast<double>(load_logit(z + col)), e, w);
            }
        }
    }
}

}  // namespace detail

/// The GPU's token head for one student trie (the trie outlives it). Usable from one thread at
/// a time.
class token_head final : public device_token_head {
public:
    explicit token_head(const byte_trie& trie) : trie_(&trie) {}
    /// Keeps a pointer to the trie: a temporary one would dangle.
    explicit token_head(const byte_trie&& trie) = delete;
    token_head(const token_head&) = delete;
    token_head& operator=(const token_head&) = delete;
    /// Frees each device's tables with that device current.
    ~token_head() override {
        for (auto& t : tables_) {
            int previous = 0;
            if (cudaGetDevice(&previous) != cudaSuccess) break;
            (void)cudaSetDevice(t.device);
            t.ids.reset();
            t.trie.reset();
            t.perm.reset();
            (void)cudaSetDevice(previous);
        }
    }

    /// See device_token_head::sums.
    [[nodiscard]] std::vector<device_head_sums> sums(dtype type, const void* rows, std::int64_t row_count,
                                                     std::int64_t columns, int device, bool trie_ordered,
                                                     std::span<const device_head_path> paths, void* stream) override {
        switch (type) {
            case dtype::f32:
                return sums_of(static_cast<const float*>(rows), row_count, columns, device, trie_ordered, paths,
                               static_cast<cudaStream_t>(stream));
            case dtype::bf16:
                return sums_of(static_cast<const bf16*>(rows), row_count, columns, device, trie_ordered, paths,
                               static_cast<cudaStream_t>(stream));
            default: refuse(type);
        }
    }

    /// See device_token_head::backward.
    void backward(dtype type, const void* rows, float* grad, std::int64_t row_count, std::int64_t columns, int device,
                  bool trie_ordered, const device_head_pieces& pieces, bool clear, void* stream) override {
        switch (type) {
            case dtype::f32:
                return backward_of(static_cast<const float*>(rows), grad, row_count, columns, device, trie_ordered,
                                   pieces, clear, static_cast<cudaStream_t>(stream));
            case dtype::bf16:
                return backward_of(static_cast<const bf16*>(rows), grad, row_count, columns, device, trie_ordered,
                                   pieces, clear, static_cast<cudaStream_t>(stream));
            default: refuse(type);
        }
    }

private:
    static constexpr const char* op = "token-head projection";

    struct device_tables {
        int device = 0;
        std::unique_ptr<device_trie> ids, trie;
        device_buffer<std::uint32_t> perm;  ///< trie position → id (row_plan::permutation())
    };

    [[noreturn]] static void refuse(dtype type) {
        throw shape_error(op, "student_logits",
                          "the CUDA token head reads float32 or bfloat16 rows, got " + std::string(bld::to_string(type)) +
                              " (convert the logits first)");
    }

    /// The tables on `device`, built on first use on the legacy default stream and synchronised,
    /// so that any stream may read them.
    device_tables& tables(int device, bool trie_ordered) {
        device_tables* t = nullptr;
        for (auto& d : tables_)
            if (d.device == device) t = &d;
        if (t == nullptr) {
            tables_.push_back({device, nullptr, nullptr, {}});
            t = &tables_.back();
        }
        auto& slot = trie_ordered ? t->trie : t->ids;
        if (!slot) {
            slot = std::make_unique<device_trie>(*trie_, nullptr, trie_ordered ? column_order::trie : column_order::ids);
            if (!trie_ordered && t->perm.size() == 0) {
                // The trie order: the text tokens sorted, then the specials by id.
                const auto order = trie_->order();
                std::vector<std::uint32_t> perm(order.begin(), order.end());
                const auto bins = root_bins(*trie_);
                for (std::size_t i = 0; i < bins.size(); ++i)
                    if (bins[i] == stop_symbol) perm.push_back(static_cast<std::uint32_t>(i));
                t->perm = device_buffer<std::uint32_t>(perm.size(), nullptr, op);
                t->perm.upload(perm.data(), perm.size(), op);
            }
            check(cudaStreamSynchronize(nullptr), op, "cudaStreamSynchronize of the trie upload");
        }
        return *t;
    }

    /// Checks the rows' pointer and extents, makes `device` current (while the scope lives) and
    /// returns the tables.
    template <class T>
    device_tables& prepare(const T* rows, std::int64_t row_count, std::int64_t columns, int device, bool trie_ordered) {
        if (row_count < 0 || columns < 0)
            throw shape_error(op, "student_logits",
                              "negative extents [" + std::to_string(row_count) + ", " + std::to_string(columns) + "]");
        (void)tensor_view<const T, 2>(rows, {row_count, columns}, device_kind::cuda, device);  // null with rows: refused
        detail::require_device_pointer(rows, op, "student_logits", device);
        device_tables& t = tables(device, trie_ordered);
        detail::check_row_width(trie_ordered ? *t.trie : *t.ids, columns, op);
        return t;
    }

    template <class T>
    std::vector<device_head_sums> sums_of(const T* rows, std::int64_t row_count, std::int64_t columns, int device,
                                          bool trie_ordered, std::span<const device_head_path> paths,
                                          cudaStream_t stream) {
        std::vector<device_head_sums> out(paths.size());
        if (paths.empty()) return out;
        const device_scope on(device, op);
        const device_tables& t = prepare(rows, row_count, columns, device, trie_ordered);
        const device_trie& dt = trie_ordered ? *t.trie : *t.ids;
        // The rows the paths cover, [r0, r1): one row pass over them.
        std::int64_t r0 = row_count, r1 = 0;
        std::size_t Q = 0;
        for (std::size_t p = 0; p < paths.size(); ++p) {
            const auto& s = paths[p];
            if (s.first_row < 0 || s.rows < 0 || s.first_row + s.rows > row_count)
                throw shape_error(op, "path " + std::to_string(p),
                                  "its rows [" + std::to_string(s.first_row) + ", " + std::to_string(s.first_row + s.rows) +
                                      ") run outside the " + std::to_string(row_count) + " rows");
            if (s.rows == 0) continue;
            r0 = std::min(r0, s.first_row);
            r1 = std::max(r1, s.first_row + s.rows);
            Q += s.requests.size();
        }
        if (r1 <= r0) {
            for (auto& o : out) o = device_head_sums{};
            return out;
        }
        const auto R = static_cast<std::size_t>(r1 - r0);
        const tensor_view<const T, 2> covered(rows + r0 * columns, {r1 - r0, columns}, device_kind::cuda, device);
        device_row_summaries summaries(R, stream);
        row_pass(dt, covered, summaries.view(), stream);
        std::vector<node_request> requests;
        requests.reserve(Q);
        for (const auto& s : paths)
            for (const auto& rq : s.requests) {
                if (static_cast<std::int64_t>(rq.row) >= s.rows)
                    throw shape_error(op, "requests", "a request reads row " + std::to_string(rq.row) + " of a path of " +
                                                          std::to_string(s.rows) + " rows");
                requests.push_back({static_cast<std::uint32_t>(s.first_row - r0 + rq.row), rq.node});
            }
        device_buffer<node_request> drequests(Q, stream, op);
        drequests.upload(requests.data(), Q, op);
        device_buffer<double> shift(Q, stream, op), end(Q, stream, op), child(Q * 256, stream, op);
        node_sums(dt, covered, drequests.data(), Q, node_sums_out{shift.data(), end.data(), child.data()}, stream);

        std::vector<double> hmax(R), hlog(R), hroot(R * root_bin_count), hshift(Q), hend(Q), hchild(Q * 256);
        std::vector<std::int32_t> hstatus(R);
        const auto down = [&](void* dst, const void* src, std::size_t bytes) {
            if (bytes != 0)
                check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream), op, "cudaMemcpyAsync device to host");
        };
        down(hmax.data(), summaries.max_logit.data(), R * sizeof(double));
        down(hlog.data(), summaries.log_normalizer.data(), R * sizeof(double));
        down(hroot.data(), summaries.root.data(), hroot.size() * sizeof(double));
        down(hstatus.data(), summaries.status.data(), R * sizeof(std::int32_t));
        down(hshift.data(), shift.data(), Q * sizeof(double));
        down(hend.data(), end.data(), Q * sizeof(double));
        down(hchild.data(), child.data(), hchild.size() * sizeof(double));
        check(cudaStreamSynchronize(stream), op, "cudaStreamSynchronize");

        std::size_t q = 0;
        for (std::size_t p = 0; p < paths.size(); ++p) {
            const auto& s = paths[p];
            auto& o = out[p];
            const auto m = static_cast<std::size_t>(s.rows);
            o.rows.resize(m);
            o.row_status.resize(m);
            o.bad_logit.assign(m, 0.0);
            for (std::size_t j = 0; j < m; ++j) {
                const std::size_t r = static_cast<std::size_t>(s.first_row - r0) + j;
                const std::int32_t st = hstatus[r];
                o.row_status[j] = st == row_ok ? device_head_row_ok
                                               : (st == row_no_finite_logit ? device_head_row_no_finite_logit : st);
                if (st >= 0) {
                    // A bad logit: fetch it for the message (rare; synchronous).
                    T raw{};
                    check(cudaMemcpy(&raw, rows + (s.first_row + static_cast<std::int64_t>(j)) * columns + st, sizeof(T),
                                     cudaMemcpyDeviceToHost),
                          op, "cudaMemcpy of the bad logit");
                    o.bad_logit[j] = static_cast<double>(static_cast<float>(raw));
                    continue;
                }
                o.rows[j].max_logit = hmax[r];
                o.rows[j].log_normalizer = hlog[r];
                std::copy(hroot.begin() + static_cast<std::ptrdiff_t>(r * root_bin_count),
                          hroot.begin() + static_cast<std::ptrdiff_t>((r + 1) * root_bin_count), o.rows[j].root.begin());
            }
            const std::size_t n = s.rows == 0 ? 0 : s.requests.size();
            o.node_shift.assign(hshift.begin() + static_cast<std::ptrdiff_t>(q), hshift.begin() + static_cast<std::ptrdiff_t>(q + n));
            o.nodes.resize(n);
            for (std::size_t k = 0; k < n; ++k, ++q) {
                o.nodes[k].end = hend[q];
                std::copy(hchild.begin() + static_cast<std::ptrdiff_t>(q * 256),
                          hchild.begin() + static_cast<std::ptrdiff_t>((q + 1) * 256), o.nodes[k].child.begin());
            }
        }
        return out;
    }  // the device buffers are freed stream-ordered

    template <class T>
    void backward_of(const T* rows, float* grad, std::int64_t row_count, std::int64_t columns, int device,
                     bool trie_ordered, const device_head_pieces& pieces, bool clear, cudaStream_t stream) {
        const device_scope on(device, op);
        const device_tables& t = prepare(rows, row_count, columns, device, trie_ordered);
        detail::require_device_pointer(grad, op, "grad", device);
        const auto n = static_cast<std::size_t>(row_count) * static_cast<std::size_t>(columns);
        if (clear && n != 0) check(cudaMemsetAsync(grad, 0, n * sizeof(float), stream), op, "cudaMemsetAsync of grad");
        const std::size_t R = pieces.rows.size(), P = pieces.value.size();
        if (pieces.lo.size() != P || pieces.hi.size() != P)
            throw shape_error(op, "pieces", "lo, hi and value must have one entry per piece");
        const std::uint32_t limit = trie_ordered ? t.trie->vocab_size() : static_cast<std::uint32_t>(t.perm.size());
        for (const auto& r : pieces.rows) {
            if (r.row < 0 || r.row >= row_count || std::size_t{r.first_piece} + r.pieces > P)
                throw shape_error(op, "pieces", "row " + std::to_string(r.row) + " or its pieces lie outside the gradient");
            for (std::uint32_t k = r.first_piece; k < r.first_piece + r.pieces; ++k)
                if (pieces.lo[k] > pieces.hi[k] || pieces.hi[k] > limit)
                    throw shape_error(op, "pieces", "piece " + std::to_string(k) + " runs outside the trie order");
        }
        if (R != 0) {
            device_buffer<device_head_row> heads(R, stream, op);
            device_buffer<std::uint32_t> lo(P, stream, op), hi(P, stream, op);
            device_buffer<double> value(P, stream, op);
            heads.upload(pieces.rows.data(), R, op);
            lo.upload(pieces.lo.data(), P, op);
            hi.upload(pieces.hi.data(), P, op);
            value.upload(pieces.value.data(), P, op);
            detail::token_head_backward_kernel<T><<<detail::grid_for(R), detail::head_threads, 0, stream>>>(
                rows, columns, grad, trie_ordered ? nullptr : t.perm.data(), heads.data(), static_cast<std::uint32_t>(R),
                lo.data(), hi.data(), value.data());
            check_launch(op, "token_head_backward_kernel");
        }
        check(cudaStreamSynchronize(stream), op, "cudaStreamSynchronize");
    }

    const byte_trie* trie_;
    std::vector<device_tables> tables_;
};

namespace detail {

/// The factory bld/backends/cuda/registration.cuh registers in device_token_head_registry.
inline std::unique_ptr<device_token_head> make_token_head(const byte_trie& trie) {
    return std::make_unique<token_head>(trie);
}

}  // namespace detail
}  // namespace bld::cuda
