// bld/backends/cuda/row_pass.cuh — the teacher row pass and node sums on the GPU.
//
//  * device_trie: the trie's nodes, sorted order and row-pass plan in device memory;
//  * row_pass: a batch of rows [R, N ≥ V] (float32 or bf16, token-id order) → per row the max,
//    the log-normaliser and the 257 root masses — the GPU version of summarize_row;
//  * node_sums: a batch of (row, node) requests → node max (the shift), E(s) and the 256 child
//    sums M(s·a) in units of exp(shift) — the GPU version of node_max_logit + sum_node.
//
// Row pass, one pass over each row (docs/01_method.md, "The sorted trie"): a block streams its chunks of 2048 columns
// once from global memory; per chunk it validates the logits (NaN/+inf), stages them in shared
// memory, takes the chunk max, moves the running max (online softmax: bins are rescaled lazily,
// math::add_to_bin), computes exp(z − max) in fp32 with the subtraction's rounding compensated
// (math::exp_diff), and reads the chunk back in the plan's bin-sorted order so each of the 257
// bins is one segment, summed in fp64 by a block scan (no atomics). Small batches split a row
// over several blocks whose (max, bins) partials are combined by log-sum-exp in a fixed order.
// The split depends only on (R, V), never on the GPU: same inputs, same bits, on any card.
//
// Tolerances against the scalar reference (tests/cuda/test_cuda_main.cpp states and checks
// them): max_logit exact; each root mass within 2e-6 relative (expf's 2 ulp, twice); the
// log-normaliser within 1e-6 absolute; node sums (fp64 exp) within 1e-12 relative.
//
// Conventions as bld/backends/reference/row_pass.hpp: columns ≥ V and absent ids are ignored; NaN and +inf are errors,
// reported per row in `status` (the GPU does not throw from a kernel): status = row_ok, or
// row_no_finite_logit, or the first bad column. throw_if_bad_rows turns a status into the
// exception the CPU would have thrown.
#pragma once

#include "bld/backends/cuda/block_ops.cuh"
#include "bld/backends/cuda/error.cuh"
#include "bld/backends/cuda/kernel_plan.hpp"
#include "bld/projection/canonical_plan.hpp"
#include "bld/backends/reference/row_pass.hpp"
#include "bld/math/shared_math.hpp"
#include "bld/core/tensor.hpp"
#include "bld/vocab/trie.hpp"

#include <cuda_runtime.h>

#include <climits>
#include <cstdint>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

namespace bld::cuda {

/// Row status: every logit valid.
inline constexpr std::int32_t row_ok = -1;
/// Row status: no finite logit among the vocabulary's ids.
inline constexpr std::int32_t row_no_finite_logit = -2;


/// How the columns of the rows a device_trie serves are ordered.
enum class column_order : std::uint8_t {
    ids,   ///< column c = token id c (the first V = vocabulary size columns count)
    trie,  ///< column k = id of the trie order: byte_trie::order() (the text tokens in sorted byte
           ///< order), then the special tokens by id — row_plan::permutation() of the CPU path
};

/// A byte trie in device memory: nodes, sorted order and the row-pass plan (row_pass_plan of
/// root_bins(trie), permuted for trie-ordered columns). Keeps a pointer to the host trie, which
/// plans the canonical path.
/// @pre the host trie outlives this object; the stream outlives it too (buffers are freed on it).
class device_trie {
public:
    /// Keeps a pointer to the host trie: a temporary one would dangle.
    device_trie(const byte_trie&& trie, cudaStream_t stream, column_order columns = column_order::ids) = delete;
    device_trie(const byte_trie& trie, cudaStream_t stream, column_order columns = column_order::ids)
        : trie_(&trie), columns_(columns) {
        constexpr const char* op = "bld::cuda::device_trie";
        const auto nodes = trie.nodes();
        const auto order = trie.order();
        const auto bins = root_bins(trie);
        nodes_ = device_buffer<trie_node>(nodes.size(), stream, op);
        nodes_.upload(nodes.data(), nodes.size(), op);
        order_ = device_buffer<std::uint32_t>(order.size(), stream, op);
        detail::row_pass_plan plan;
        if (columns == column_order::ids) {
            order_.upload(order.data(), order.size(), op);
            plan = detail::row_pass_plan::build(bins);
        } else {
            // Column k holds id column_ids_[k]; sorted position k is column k, so the node sums
            // gather through the identity.
            column_ids_.assign(order.begin(), order.end());
            for (std::size_t i = 0; i < bins.size(); ++i)
                if (bins[i] == stop_symbol) column_ids_.push_back(static_cast<std::uint32_t>(i));
            std::vector<std::uint16_t> permuted(column_ids_.size());
            for (std::size_t k = 0; k < permuted.size(); ++k) permuted[k] = bins[column_ids_[k]];
            std::vector<std::uint32_t> identity(order.size());
            for (std::size_t k = 0; k < identity.size(); ++k) identity[k] = static_cast<std::uint32_t>(k);
            order_.upload(identity.data(), identity.size(), op);
            plan = detail::row_pass_plan::build(permuted);
        }
        plan_ = device_buffer<std::uint32_t>(plan.entries.size(), stream, op);
        plan_.upload(plan.entries.data(), plan.entries.size(), op);
        vocab_size_ = plan.columns;
        chunks_ = plan.chunks;
        // Pageable uploads return once staged; the plan's host memory may go.
    }

    [[nodiscard]] const byte_trie& host() const noexcept { return *trie_; }
    [[nodiscard]] const trie_node* nodes() const noexcept { return nodes_.data(); }
    /// Sorted position → column (the trie's order for id-ordered rows, the identity for trie order).
    [[nodiscard]] const std::uint32_t* order() const noexcept { return order_.data(); }
    [[nodiscard]] const std::uint32_t* plan_entries() const noexcept { return plan_.data(); }
    /// The columns a row must have: the vocabulary's ids, or the trie order's text + special ids.
    [[nodiscard]] std::uint32_t vocab_size() const noexcept { return vocab_size_; }
    [[nodiscard]] std::uint32_t chunks() const noexcept { return chunks_; }
    [[nodiscard]] column_order columns() const noexcept { return columns_; }
    /// Trie order: the id of every column (host memory); empty for id order.
    [[nodiscard]] std::span<const std::uint32_t> column_ids() const noexcept { return column_ids_; }

private:
    const byte_trie* trie_;
    column_order columns_ = column_order::ids;
    std::vector<std::uint32_t> column_ids_;
    device_buffer<trie_node> nodes_;
    device_buffer<std::uint32_t> order_;
    device_buffer<std::uint32_t> plan_;
    std::uint32_t vocab_size_ = 0;
    std::uint32_t chunks_ = 0;
};

/// Where row_pass writes, all in device memory.
struct row_summaries {
    double* max_logit = nullptr;       ///< [R]
    double* log_normalizer = nullptr;  ///< [R]
    double* root = nullptr;            ///< [R, 257]: probabilities, STOP at 256
    std::int32_t* status = nullptr;    ///< [R]: row_ok, row_no_finite_logit or the first bad column
};

/// Device buffers for R row summaries.
struct device_row_summaries {
    device_buffer<double> max_logit, log_normalizer, root;
    device_buffer<std::int32_t> status;
    std::size_t rows = 0;

    device_row_summaries() = default;
    device_row_summaries(std::size_t r, cudaStream_t stream)
        : max_logit(r, stream), log_normalizer(r, stream), root(r * static_cast<int>(root_bin_count), stream), status(r, stream),
          rows(r) {}
    [[nodiscard]] row_summaries view() const noexcept {
        return {max_logit.data(), log_normalizer.data(), root.data(), status.data()};
    }
};

/// Where node_sums writes, all in device memory.
struct node_sums_out {
    double* shift = nullptr;  ///< [Q]: the node's max logit (−inf: every token of it has probability 0)
    double* end = nullptr;    ///< [Q]: E(s) in units of exp(shift)
    double* child = nullptr;  ///< [Q, 256]: M(s·a) in units of exp(shift)
};

namespace detail {

inline constexpr int row_threads = detail::block_threads;
inline constexpr int row_items = detail::thread_items;
inline constexpr int row_chunk = detail::chunk_columns;

/// Blocks per row of the row pass: enough blocks in all (≈ 1024) for small batches, at most one
/// per chunk. A function of (R, chunks) only, so results do not depend on the GPU.
inline std::uint32_t row_split(std::size_t rows, std::uint32_t chunks, std::uint32_t& chunks_per_block) {
    std::size_t b = rows >= 1024 ? 1 : (1024 + rows - 1) / rows;
    if (b > chunks) b = chunks;
    if (b < 1) b = 1;
    chunks_per_block = static_cast<std::uint32_t>((chunks + b - 1) / b);
    if (chunks_per_block == 0) chunks_per_block = 1;
    return static_cast<std::uint32_t>((chunks + chunks_per_block - 1) / chunks_per_block);
}

BLD_HOST_DEVICE inline std::int32_t row_status_of(int bad_column, float m) {
    if (bad_column != INT_MAX) return bad_column;
    if (!(m > -math::infinity_f())) return row_no_finite_logit;
    return row_ok;
}

template <class T>
__global__ void __launch_bounds__(row_threads)
row_pass_kernel(const T* __restrict__ rows, std::int64_t stride, std::uint32_t V,
                const std::uint32_t* __restrict__ entries, std::uint32_t chunks, std::uint32_t chunks_per_block,
                std::uint32_t blocks_per_row, row_summaries out, double* __restrict__ part_max,
                double* __restrict__ part_bins, std::int32_t* __restrict__ part_bad) {
    constexpr int NT = row_threads, IT = row_items, C = row_chunk;
    using scan_t = keyed_scan<NT>;
    using fred_t = cub::BlockReduce<float, NT>;
    using ired_t = cub::BlockReduce<int, NT>;
    __shared__ float stage[C];
    __shared__ double acc[static_cast<int>(root_bin_count)];
    __shared__ float bin_max[static_cast<int>(root_bin_count)];
    __shared__ union {
        typename scan_t::TempStorage scan;
        typename fred_t::TempStorage fred;
        typename ired_t::TempStorage ired;
    } tmp;
    __shared__ float s_max;
    __shared__ int s_bad;
    __shared__ double s_total;

    const unsigned tid = threadIdx.x;
    const std::uint64_t r = blockIdx.x / blocks_per_row;
    const std::uint32_t b = blockIdx.x % blocks_per_row;
    const std::uint32_t c0 = b * chunks_per_block;
    const std::uint32_t c1 = c0 + chunks_per_block < chunks ? c0 + chunks_per_block : chunks;
    const T* row = rows + static_cast<std::int64_t>(r) * stride;
    const float ninf = -math::infinity_f();

    for (unsigned a = tid; a < static_cast<unsigned>(static_cast<int>(root_bin_count)); a += NT) {
        acc[a] = 0.0;
        bin_max[a] = ninf;
    }
    float m = ninf;
    int bad = INT_MAX;
    float z[IT];
    const auto load = [&](std::uint32_t c) {
#pragma unroll
        for (int i = 0; i < IT; ++i) {
            const std::uint64_t col = static_cast<std::uint64_t>(c) * C + static_cast<unsigned>(i) * NT + tid;
            z[i] = col < V ? load_logit_streaming(row + col) : ninf;
        }
    };
    if (c0 < c1) load(c0);
    for (std::uint32_t c = c0; c < c1; ++c) {
        // Validate (every column < V, as the CPU does) and stage in id order.
#pragma unroll
        for (int i = 0; i < IT; ++i) {
            const std::uint64_t col = static_cast<std::uint64_t>(c) * C + static_cast<unsigned>(i) * NT + tid;
            if (col < V && math::is_bad_logit(z[i])) bad = math::min_int(bad, static_cast<int>(col));
            stage[i * NT + tid] = z[i];
        }
        __syncthreads();
        if (c + 1 < c1) load(c + 1);  // the next chunk's loads fly while this one is summed

        // Read back in bin-sorted order: thread tid owns sorted positions tid·IT … tid·IT+IT−1.
        const std::uint32_t* ce = entries + static_cast<std::size_t>(c) * C + tid * IT;
        static_assert(IT % 4 == 0, "plan entries are read four at a time");
        std::uint32_t e4[IT];
#pragma unroll
        for (int i = 0; i < IT; i += 4) {  // 16-byte loads: a thread's entries are 32-byte aligned
            const uint4 q = __ldg(reinterpret_cast<const uint4*>(ce + i));
            e4[i] = q.x;
            e4[i + 1] = q.y;
            e4[i + 2] = q.z;
            e4[i + 3] = q.w;
        }
        std::uint32_t key[IT];
        float v[IT];
        float cm = ninf;
#pragma unroll
        for (int i = 0; i < IT; ++i) {
            const std::uint32_t e = e4[i];
            key[i] = detail::entry_bin(e);
            v[i] = stage[detail::entry_column(e)];
            if (key[i] != detail::ignored_key) cm = math::max32(cm, v[i]);
        }
        const float chunk_max = fred_t(tmp.fred).Reduce(cm, ::cuda::maximum<>{});
        if (tid == 0) s_max = math::max32(m, chunk_max);
        __syncthreads();
        m = s_max;

        double x[IT];
#pragma unroll
        for (int i = 0; i < IT; ++i)
            x[i] = key[i] != detail::ignored_key ? static_cast<double>(math::exp_diff(v[i], m)) : 0.0;
        const std::uint32_t next_key =
            tid + 1 < static_cast<unsigned>(NT) ? detail::entry_bin(__ldg(ce + IT)) : detail::no_key;
        block_keyed_accumulate<NT, IT>(key, x, next_key, tmp.scan, lazy_bin_flush{acc, bin_max, m});
        __syncthreads();  // stage, acc and tmp are reused by the next chunk
    }

    bad = ired_t(tmp.ired).Reduce(bad, ::cuda::minimum<>{});
    if (tid == 0) s_bad = bad;
    __syncthreads();
    for (unsigned a = tid; a < static_cast<unsigned>(static_cast<int>(root_bin_count)); a += NT)
        acc[a] *= math::rescale_factor(bin_max[a], m);  // every bin in units of exp(m)
    __syncthreads();
    if (blocks_per_row == 1) {
        if (tid == 0) s_total = math::root_total(acc);
        __syncthreads();
        const double total = s_total;
        for (unsigned a = tid; a < static_cast<unsigned>(static_cast<int>(root_bin_count)); a += NT)
            out.root[r * static_cast<int>(root_bin_count) + a] = acc[a] / total;
        if (tid == 0) {
            out.max_logit[r] = m;
            out.log_normalizer[r] = math::log64(total);
            out.status[r] = row_status_of(s_bad, m);
        }
    } else {
        const std::size_t p = static_cast<std::size_t>(r) * blocks_per_row + b;
        for (unsigned a = tid; a < static_cast<unsigned>(static_cast<int>(root_bin_count)); a += NT)
            part_bins[p * static_cast<int>(root_bin_count) + a] = acc[a];
        if (tid == 0) {
            part_max[p] = m;
            part_bad[p] = s_bad;
        }
    }
}

/// Combines a row's partials (one per block) in block order: the log-sum-exp combine of
/// (max, bins) pairs, then the root normalisation. A template so that every translation unit
/// including this header may define it (see loss.cuh's loss_init_kernel).
template <class = void>
__global__ void __launch_bounds__(row_threads)
row_combine_kernel(std::uint32_t parts, const double* __restrict__ part_max, const double* __restrict__ part_bins,
                   const std::int32_t* __restrict__ part_bad, row_summaries out) {
    constexpr int NT = row_threads;
    __shared__ double acc[static_cast<int>(root_bin_count)];
    __shared__ double s_total;
    const std::uint64_t r = blockIdx.x;
    const double* pm = part_max + r * parts;
    const double* pb = part_bins + r * parts * static_cast<int>(root_bin_count);
    double m = -math::infinity();
    int bad = INT_MAX;
    for (std::uint32_t p = 0; p < parts; ++p) {
        m = math::max64(m, pm[p]);
        bad = math::min_int(bad, part_bad[r * parts + p]);
    }
    for (unsigned a = threadIdx.x; a < static_cast<unsigned>(static_cast<int>(root_bin_count)); a += NT)
        acc[a] = math::combine_bin(pm, pb, static_cast<int>(parts), static_cast<int>(a), m);
    __syncthreads();
    if (threadIdx.x == 0) s_total = math::root_total(acc);
    __syncthreads();
    const double total = s_total;
    for (unsigned a = threadIdx.x; a < static_cast<unsigned>(static_cast<int>(root_bin_count)); a += NT)
        out.root[r * static_cast<int>(root_bin_count) + a] = acc[a] / total;
    if (threadIdx.x == 0) {
        out.max_logit[r] = m;
        out.log_normalizer[r] = math::log64(total);
        out.status[r] = row_status_of(bad, static_cast<float>(m));
    }
}

/// One block per request (grid-stride): pass 1 takes the node max over [lo, hi) (gathered
/// through the sorted order), pass 2 sums exp(z − shift) in fp64 per segment — the end tokens
/// [lo, end_hi) (key 0) and each child's range (key 1 + child index) — with the block's keyed
/// accumulation.
template <class T>
__global__ void __launch_bounds__(row_threads)
node_sums_kernel(const T* __restrict__ rows, std::int64_t stride, const trie_node* __restrict__ nodes,
                 const std::uint32_t* __restrict__ order, const node_request* __restrict__ requests,
                 std::uint32_t count, node_sums_out out) {
    constexpr int NT = row_threads, IT = row_items, C = row_chunk;
    using scan_t = keyed_scan<NT>;
    using fred_t = cub::BlockReduce<float, NT>;
    __shared__ std::uint32_t bounds[static_cast<int>(root_bin_count) + 1];
    __shared__ std::int16_t child_of_byte[256];
    __shared__ double acc[static_cast<int>(root_bin_count)];
    __shared__ union {
        typename scan_t::TempStorage scan;
        typename fred_t::TempStorage fred;
    } tmp;
    __shared__ float s_max;
    const unsigned tid = threadIdx.x;
    const float ninf = -math::infinity_f();

    for (std::uint32_t q = blockIdx.x; q < count; q += gridDim.x) {
        const node_request rq = requests[q];
        const trie_node nd = nodes[rq.node];
        const std::uint32_t nc = nd.end_hi < nd.hi ? std::uint32_t{nd.child_count_m1} + 1u : 0u;
        for (unsigned a = tid; a < 256u; a += NT) child_of_byte[a] = -1;
        for (unsigned a = tid; a < static_cast<unsigned>(static_cast<int>(root_bin_count)); a += NT) acc[a] = 0.0;
        __syncthreads();
        if (tid == 0) {
            bounds[0] = nd.lo;
            bounds[nc + 1] = nd.hi;
        }
        for (std::uint32_t c = tid; c < nc; c += NT) {
            const trie_node ch = nodes[nd.first_child + c];
            bounds[c + 1] = ch.lo;
            child_of_byte[ch.byte] = static_cast<std::int16_t>(c);
        }
        const T* row = rows + static_cast<std::int64_t>(rq.row) * stride;

        float mx = ninf;
        for (std::uint32_t k = nd.lo + tid; k < nd.hi; k += NT) mx = math::max32(mx, load_logit(row + order[k]));
        mx = fred_t(tmp.fred).Reduce(mx, ::cuda::maximum<>{});
        if (tid == 0) s_max = mx;
        __syncthreads();
        const float shift_f = s_max;
        const double shift = shift_f;

        if (shift_f > ninf) {
            for (std::uint32_t tile = nd.lo; tile < nd.hi; tile += C) {
                const std::uint32_t first = tile + tid * IT;
                std::uint32_t key[IT];
                const std::uint32_t next_key =
                    detail::node_thread_keys<IT>(bounds, nc, first, tid + 1 == static_cast<unsigned>(NT), key);
                double x[IT];
#pragma unroll
                for (int i = 0; i < IT; ++i) {
                    const std::uint32_t k = first + static_cast<std::uint32_t>(i);
                    x[i] = k < nd.hi ? math::exp64(static_cast<double>(load_logit(row + order[k])) - shift) : 0.0;
                }
                block_keyed_accumulate<NT, IT>(key, x, next_key, tmp.scan, plain_flush{acc});
                __syncthreads();
            }
        }
        __syncthreads();
        if (tid == 0) {
            out.shift[q] = shift;
            out.end[q] = acc[0];
        }
        for (unsigned a = tid; a < 256u; a += NT) {
            const int c = child_of_byte[a];
            out.child[static_cast<std::size_t>(q) * 256 + a] = c >= 0 ? acc[1 + c] : 0.0;
        }
        __syncthreads();  // smem is reused by the next request
    }
}

/// The CPU's check of a row's width (the fast path's message, for either column order).
inline void check_row_width(const device_trie& dt, std::int64_t columns, const char* op) {
    if (columns < static_cast<std::int64_t>(dt.vocab_size()))
        throw shape_error(op, "row 0",
                          "the row has " + std::to_string(columns) + " logits, fewer than the " +
                              std::to_string(dt.vocab_size()) +
                              (dt.columns() == column_order::ids ? " ids of the vocabulary ("
                                                                 : " columns of the trie order (text + special ids) (") +
                              dt.host().vocab().source() + ")");
}

template <class T>
void check_rows_view(const device_trie& dt, const tensor_view<const T, 2>& rows, const char* op) {
    require_cuda_view(rows, op, "rows");
    if (rows.extent(0) > 0) check_row_width(dt, rows.extent(1), op);
}

}  // namespace detail

/// The row pass of a batch: out.max_logit[r], out.log_normalizer[r], out.root[r, 0..257) and
/// out.status[r] for every row r of `rows`, stream-ordered on `stream` (nothing synchronises).
/// @pre rows: a cuda view [R, N ≥ V] of float or bf16, token-id order (columns ≥ V ignored);
///      out: device arrays of R, R, R × 257 and R elements.
/// @throws shape_error for a view not on the GPU or rows shorter than V; cuda_error for a
///         failed allocation or launch. Bad logits are reported in out.status, not thrown
///         (see throw_if_bad_rows).
template <logit_type T>
    requires row_kernel_reads<T>
void row_pass(const device_trie& dt, tensor_view<const T, 2> rows, row_summaries out, cudaStream_t stream) {
    constexpr const char* op = "bld::cuda::row_pass";
    detail::check_rows_view(dt, rows, op);
    const auto R = static_cast<std::size_t>(rows.extent(0));
    if (R == 0 || dt.chunks() == 0) return;
    detail::require_device_pointer(out.root, op, "out.root");
    std::uint32_t cpb = 1;
    const std::uint32_t B = detail::row_split(R, dt.chunks(), cpb);
    if (R * B > 0x7FFFFFFFull) throw value_error(op, "rows", "too many rows for one launch");
    if (B == 1) {
        detail::row_pass_kernel<T><<<static_cast<unsigned>(R), detail::row_threads, 0, stream>>>(
            rows.data(), rows.extent(1), dt.vocab_size(), dt.plan_entries(), dt.chunks(), cpb, 1u, out, nullptr,
            nullptr, nullptr);
        check_launch(op, "row_pass_kernel");
        return;
    }
    device_buffer<double> pmax(R * B, stream, op), pbins(R * B * static_cast<int>(root_bin_count), stream, op);
    device_buffer<std::int32_t> pbad(R * B, stream, op);
    detail::row_pass_kernel<T><<<static_cast<unsigned>(R * B), detail::row_threads, 0, stream>>>(
        rows.data(), rows.extent(1), dt.vocab_size(), dt.plan_entries(), dt.chunks(), cpb, B, out, pmax.data(),
        pbins.data(), pbad.data());
    check_launch(op, "row_pass_kernel");
    detail::row_combine_kernel<<<static_cast<unsigned>(R), detail::row_threads, 0, stream>>>(B, pmax.data(), pbins.data(),
                                                                                            pbad.data(), out);
    check_launch(op, "row_combine_kernel");
}  // the partial buffers are freed stream-ordered, after the combine kernel

/// Node sums of a batch of requests (device array of `count` node_request), stream-ordered.
/// @pre every request's row < R and node < node count (not checked on the device: the
///      requests come from canonical_plan or the caller); rows validated by row_pass.
/// @throws shape_error / cuda_error as row_pass.
template <logit_type T>
    requires row_kernel_reads<T>
void node_sums(const device_trie& dt, tensor_view<const T, 2> rows, const node_request* requests, std::size_t count,
               node_sums_out out, cudaStream_t stream) {
    constexpr const char* op = "bld::cuda::node_sums";
    detail::check_rows_view(dt, rows, op);
    if (count == 0) return;
    if (count > 0xFFFFFFFFull) throw value_error(op, "requests", "more than 2^32 - 1 requests");
    detail::require_device_pointer(requests, op, "requests");
    detail::require_device_pointer(out.child, op, "out.child");
    detail::node_sums_kernel<T><<<detail::grid_for(count), detail::row_threads, 0, stream>>>(
        rows.data(), rows.extent(1), dt.nodes(), dt.order(), requests, static_cast<std::uint32_t>(count), out);
    check_launch(op, "node_sums_kernel");
}

/// Synchronises `stream`, and throws the error summarize_row would have thrown for the first
/// bad row among the R statuses (device array), naming row `first_row + r` — and, for
/// trie-ordered rows (`column_ids`: device_trie::column_ids()), the id of the bad column, as the
/// CPU's trie-ordered path does.
/// @throws value_error (NaN / +inf logit with its row and column; no finite logit), cuda_error.
template <logit_type T>
    requires row_kernel_reads<T>
void throw_if_bad_rows(const std::int32_t* status, tensor_view<const T, 2> rows, cudaStream_t stream,
                       std::size_t first_row = 0, std::span<const std::uint32_t> column_ids = {}) {
    constexpr const char* op = "bld::cuda::throw_if_bad_rows";
    const auto R = static_cast<std::size_t>(rows.extent(0));
    if (R == 0) return;
    std::vector<std::int32_t> st(R);
    check(cudaMemcpyAsync(st.data(), status, R * sizeof(std::int32_t), cudaMemcpyDeviceToHost, stream), op,
          "cudaMemcpyAsync of the row statuses");
    check(cudaStreamSynchronize(stream), op, "cudaStreamSynchronize");
    for (std::size_t r = 0; r < R; ++r) {
        if (st[r] == row_ok) continue;
        if (st[r] == row_no_finite_logit)
            throw value_error("teacher row pass", "row " + std::to_string(first_row + r),
                              "no finite logit among the vocabulary's ids");
        T raw{};
        check(cudaMemcpy(&raw, rows.data() + static_cast<std::int64_t>(r) * rows.extent(1) + st[r], sizeof(T),
                         cudaMemcpyDeviceToHost),
              op, "cudaMemcpy of the bad logit");
        const auto column = static_cast<std::size_t>(st[r]);
        bld::detail::bad_logit(first_row + r, column_ids.empty() ? column : column_ids[column],
                               static_cast<double>(static_cast<float>(raw)), "teacher row pass");
    }
}

}  // namespace bld::cuda
