// bld/backends/cuda/canonical.cuh — the canonical-path projection (docs/01_method.md, "Canonical path") on the GPU.
//
// The host plans the text once (canonical_plan: the ids are checked, the trie is walked, one
// node request per (token, depth)); the GPU runs the row pass on the text's rows, the node
// sums of every request, and one warp per byte position assembles the distribution with
// math::canonical_position_body — the same function the CPU tests run. The result stays in
// device memory ([L, 260] probabilities in fp64, the dropped mass per position), ready to be
// the targets of the byte losses; to_host() brings it back as a bld::byte_distributions.
//
// Errors: the kernels record statuses; check() (called by to_host()) synchronises and throws
// the exception canonical_path would have thrown first (the same class, where and why).
#pragma once

#include "bld/backends/cuda/block_ops.cuh"
#include "bld/backends/cuda/error.cuh"
#include "bld/backends/cuda/row_pass.cuh"
#include "bld/projection/canonical_plan.hpp"
#include "bld/projection/distributions.hpp"
#include "bld/math/shared_math.hpp"

#include <cuda_runtime.h>

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace bld::cuda {

namespace detail {

/// One warp per position (grid-stride over warps). A template so that every translation unit
/// including this header may define it (see loss.cuh's loss_init_kernel).
template <class = void>
__global__ void __launch_bounds__(256)
canonical_assemble_kernel(const canonical_position* __restrict__ positions, std::uint32_t count,
                          const double* __restrict__ row_root, const double* __restrict__ end,
                          const double* __restrict__ child, double* __restrict__ probs, double* __restrict__ dropped,
                          std::int32_t* __restrict__ status) {
    const warp_lanes lanes;
    const std::uint32_t warps = gridDim.x * (blockDim.x / 32);
    for (std::uint32_t i = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32; i < count; i += warps) {
        const canonical_position p = positions[i];
        double carry = 0.0;
        if (p.prev_request >= 0) {
            const auto pr = static_cast<std::size_t>(p.prev_request);
            carry = math::boundary_carry({end[pr], child + pr * 256}, row_root + static_cast<std::size_t>(p.prev_next_row) * static_cast<int>(root_bin_count),
                                         p.prev_byte);
        }
        const math::node_sums_ref ns{p.kind == math::position_kind::root ? 0.0 : end[p.request],
                                     child + static_cast<std::size_t>(p.request) * 256};
        const double* rr = row_root + static_cast<std::size_t>(p.next_row) * static_cast<int>(root_bin_count);
        const math::position_status st = math::canonical_position_body(lanes, p.kind, ns, rr, carry,
                                                     probs + static_cast<std::size_t>(i) * static_cast<int>(alphabet_size), dropped + i);
        if (lanes.lane() == 0) status[i] = static_cast<std::int32_t>(st);
    }
}

}  // namespace detail

/// The canonical path of one text, in device memory. Move-only; its buffers are freed on the
/// stream it was computed on.
class device_byte_distributions {
public:
    device_byte_distributions() = default;

    /// L: the text's bytes.
    [[nodiscard]] std::size_t positions() const noexcept { return plan_.bytes.size(); }
    /// [L, 260] probabilities (bytes, STOP at 256, 257..259 zero), device memory.
    [[nodiscard]] const double* probs() const noexcept { return probs_.data(); }
    /// [L] dropped mass per position (as byte_distributions::dropped), device memory.
    [[nodiscard]] const double* dropped() const noexcept { return dropped_.data(); }
    /// The host plan (requests, positions) the kernels ran.
    [[nodiscard]] const canonical_plan& plan() const noexcept { return plan_; }

    /// Host copies of a result's statuses (and distributions): download() queues the copies,
    /// raise_first_error() reads them once the stream has reached them.
    struct host_copy {
        std::vector<std::int32_t> rows, positions;
        byte_distributions out;
    };

    /// Queues the copies of the statuses — and, with `distributions`, of the probabilities and
    /// dropped masses — into `h` on the result's stream. Copies into pageable memory: each
    /// returns once its data has arrived, so the first waits for the kernels before it.
    void download(host_copy& h, bool distributions) const {
        h.rows.resize(rows_.rows);
        h.positions.resize(pos_status_.size());
        check_copy(h.rows.data(), rows_.status.data(), h.rows.size() * sizeof(std::int32_t));
        check_copy(h.positions.data(), pos_status_.data(), h.positions.size() * sizeof(std::int32_t));
        if (!distributions) return;
        h.out.resize(positions());
        check_copy(h.out.probs.data(), probs_.data(), h.out.probs.size() * sizeof(double));
        check_copy(h.out.dropped.data(), dropped_.data(), h.out.dropped.size() * sizeof(double));
    }

    /// After download() and a synchronisation of the stream: throws what canonical_path would
    /// have thrown (first error in the CPU's order): value_error for bad logits, a
    /// zero-probability prefix or a position without mass.
    void raise_first_error(const host_copy& h) const {
        constexpr const char* op = "canonical-path projection";
        const auto bad_row = [&](std::size_t r) {
            if (h.rows[r] != row_ok) throw_row(r);
        };
        bad_row(0);
        for (std::size_t i = 0; i < h.positions.size(); ++i) {
            const auto& p = plan_.positions[i];
            if (h.positions[i] == static_cast<std::int32_t>(math::position_status::zero_prefix)) {
                const std::uint32_t j = plan_.request_token[p.request];
                throw value_error(op, "token position " + std::to_string(j) + " (id " + std::to_string(ids_[j]) + ", row " +
                                          std::to_string(j) + ")",
                                  "the teacher row gives this token's prefix probability 0");
            }
            if (p.kind == math::position_kind::boundary) bad_row(p.next_row);
            if (h.positions[i] == static_cast<std::int32_t>(math::position_status::no_mass)) bld::detail::throw_no_mass(op, i);
        }
    }

    /// Synchronises the stream and throws what canonical_path would have thrown (first error in
    /// the CPU's order): value_error for bad logits, a zero-probability prefix or a position
    /// without mass; cuda_error for a failed kernel.
    void check() const {
        host_copy h;
        download(h, false);
        bld::cuda::check(cudaStreamSynchronize(stream_), "bld::cuda::canonical_path", "cudaStreamSynchronize");
        raise_first_error(h);
    }

    /// check(), then the distributions on the host.
    [[nodiscard]] byte_distributions to_host() const {
        host_copy h;
        download(h, true);
        bld::cuda::check(cudaStreamSynchronize(stream_), "bld::cuda::canonical_path", "cudaStreamSynchronize");
        raise_first_error(h);
        return std::move(h.out);
    }

private:
    template <logit_type T>
        requires row_kernel_reads<T>
    friend device_byte_distributions canonical_path(const device_trie&, tensor_view<const T, 2>,
                                                    std::span<const std::int64_t>, std::optional<std::string_view>,
                                                    cudaStream_t);

    void check_copy(void* dst, const void* src, std::size_t bytes) const {
        if (bytes == 0) return;
        bld::cuda::check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream_), "bld::cuda::canonical_path",
                         "cudaMemcpyAsync device to host");
    }
    void throw_row(std::size_t r) const { throw_row_fn_(*this, r); }

    canonical_plan plan_;
    std::vector<std::int64_t> ids_;
    cudaStream_t stream_ = nullptr;
    device_row_summaries rows_;
    device_buffer<node_request> requests_;
    device_buffer<canonical_position> positions_;
    device_buffer<double> shift_, end_, child_;
    device_buffer<double> probs_, dropped_;
    device_buffer<std::int32_t> pos_status_;
    const void* logits_ = nullptr;
    std::int64_t row_stride_ = 0;
    std::span<const std::uint32_t> column_ids_;  // trie-ordered rows: the id of each column
    void (*throw_row_fn_)(const device_byte_distributions&, std::size_t) = nullptr;

    template <class T>
    static void throw_row_typed(const device_byte_distributions& self, std::size_t r) {
        const tensor_view<const T, 2> one(static_cast<const T*>(self.logits_) + static_cast<std::int64_t>(r) * self.row_stride_,
                                          {1, self.row_stride_}, device_kind::cuda);
        throw_if_bad_rows<T>(self.rows_.status.data() + r, one, self.stream_, r, self.column_ids_);
    }
};

/// The canonical path of a text on the GPU (canonical_path's math, float32 or bf16 rows).
///
/// @pre rows: a cuda view [≥ m, N ≥ V], row j = the teacher's distribution of token j given the
///      tokens before it, columns in `dt`'s column order (token ids, or the trie order with V =
///      its text + special ids); ids: the text's m token ids (host memory);
///      text: if given, must equal the ids' bytes. The trie of `dt` and `stream` outlive the result.
/// @returns the distributions in device memory; nothing is synchronised (call check() or
///          to_host() to see errors).
/// @throws now: value_error / alignment_error for bad ids or text (as canonical_path),
///         shape_error for too few or too short rows or a view not on the GPU, cuda_error.
template <logit_type T>
    requires row_kernel_reads<T>
[[nodiscard]] device_byte_distributions canonical_path(const device_trie& dt, tensor_view<const T, 2> rows,
                                                       std::span<const std::int64_t> ids,
                                                       std::optional<std::string_view> text, cudaStream_t stream) {
    constexpr const char* op = "canonical-path projection";
    detail::require_cuda_view(rows, op, "rows");
    detail::check_row_width(dt, rows.extent(1), op);  // the CPU's fast path checks the width first
    device_byte_distributions out;
    out.plan_ = canonical_plan::build(dt.host(), ids, text);
    const auto m = static_cast<std::size_t>(out.plan_.tokens);
    if (static_cast<std::size_t>(rows.extent(0)) < m)
        throw shape_error(op, "rows", "one teacher row per token is needed: " + std::to_string(m) + " tokens, " +
                                          std::to_string(rows.extent(0)) + " rows");
    out.ids_.assign(ids.begin(), ids.end());
    out.stream_ = stream;
    out.logits_ = rows.data();
    out.row_stride_ = rows.extent(1);
    out.column_ids_ = dt.column_ids();
    out.throw_row_fn_ = &device_byte_distributions::template throw_row_typed<T>;

    const tensor_view<const T, 2> used(rows.data(), {static_cast<std::int64_t>(m), rows.extent(1)}, device_kind::cuda,
                                       rows.device_index());
    out.rows_ = device_row_summaries(m, stream);
    row_pass(dt, used, out.rows_.view(), stream);

    const std::size_t Q = out.plan_.requests.size(), P = out.plan_.positions.size(), L = out.plan_.bytes.size();
    out.requests_ = device_buffer<node_request>(Q, stream, op);
    out.requests_.upload(out.plan_.requests.data(), Q, op);
    out.positions_ = device_buffer<canonical_position>(P, stream, op);
    out.positions_.upload(out.plan_.positions.data(), P, op);
    out.shift_ = device_buffer<double>(Q, stream, op);
    out.end_ = device_buffer<double>(Q, stream, op);
    out.child_ = device_buffer<double>(Q * 256, stream, op);
    node_sums(dt, used, out.requests_.data(), Q, node_sums_out{out.shift_.data(), out.end_.data(), out.child_.data()},
              stream);

    // One extra row of output space: the final `check` position writes nothing but its status.
    out.probs_ = device_buffer<double>((L + 1) * static_cast<int>(alphabet_size), stream, op);
    out.dropped_ = device_buffer<double>(L + 1, stream, op);
    out.pos_status_ = device_buffer<std::int32_t>(P, stream, op);
    const unsigned blocks = detail::grid_for((P + 7) / 8, 4096u);
    detail::canonical_assemble_kernel<<<blocks, 256, 0, stream>>>(out.positions_.data(), static_cast<std::uint32_t>(P),
                                                                  out.rows_.root.data(), out.end_.data(), out.child_.data(),
                                                                  out.probs_.data(), out.dropped_.data(),
                                                                  out.pos_status_.data());
    check_launch(op, "canonical_assemble_kernel");
    return out;
}

}  // namespace bld::cuda
