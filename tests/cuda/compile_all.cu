// CI compile check: every CUDA header of bld, with every kernel instantiated for every type it
// supports, compiled by nvcc for each architecture of CMAKE_CUDA_ARCHITECTURES (80;90 by
// default). Nothing runs: the object library bld_cuda_compile_all only has to build.
#include <bld/cuda.cuh>
#include <bld/backends/cuda/block_ops.cuh>
#include <bld/backends/cuda/canonical.cuh>
#include <bld/backends/cuda/error.cuh>
#include <bld/backends/cuda/loss.cuh>
#include <bld/backends/cuda/projector.cuh>
#include <bld/backends/cuda/registration.cuh>
#include <bld/backends/cuda/row_pass.cuh>
#include <bld/backends/cuda/stream.cuh>
#include <bld/backends/cuda/token_head.cuh>
#include <bld/loss/byte_loss.hpp>

#include <cstdint>
#include <type_traits>

namespace bld::cuda {

// Row pass and node sums: float32 and bf16 rows.
template void row_pass<float>(const device_trie&, tensor_view<const float, 2>, row_summaries, cudaStream_t);
template void row_pass<bf16>(const device_trie&, tensor_view<const bf16, 2>, row_summaries, cudaStream_t);
template void node_sums<float>(const device_trie&, tensor_view<const float, 2>, const node_request*, std::size_t,
                               node_sums_out, cudaStream_t);
template void node_sums<bf16>(const device_trie&, tensor_view<const bf16, 2>, const node_request*, std::size_t,
                              node_sums_out, cudaStream_t);
template void throw_if_bad_rows<float>(const std::int32_t*, tensor_view<const float, 2>, cudaStream_t, std::size_t,
                                       std::span<const std::uint32_t>);
template void throw_if_bad_rows<bf16>(const std::int32_t*, tensor_view<const bf16, 2>, cudaStream_t, std::size_t,
                                      std::span<const std::uint32_t>);

// Canonical path.
template device_byte_distributions canonical_path<float>(const device_trie&, tensor_view<const float, 2>,
                                                         std::span<const std::int64_t>, std::optional<std::string_view>,
                                                         cudaStream_t);
template device_byte_distributions canonical_path<bf16>(const device_trie&, tensor_view<const bf16, 2>,
                                                        std::span<const std::int64_t>, std::optional<std::string_view>,
                                                        cudaStream_t);

}  // namespace bld::cuda

// The projector (every row dtype goes through its one virtual call) and the registration.
static_assert(std::is_base_of_v<bld::device_projector, bld::cuda::projector>);
static_assert(!std::is_constructible_v<bld::cuda::projector, bld::byte_trie&&>);
std::vector<bld::byte_distributions> bld_compile_all_project(const bld::byte_trie& trie, const void* rows,
                                                             std::span<const bld::device_sequence> seqs) {
    bld::cuda::projector p(trie);
    auto a = p.canonical_paths(bld::dtype::f32, rows, 4, 300, 0, false, seqs, nullptr);
    auto b = p.canonical_paths(bld::dtype::bf16, rows, 4, 300, 0, true, seqs, nullptr);
    a.insert(a.end(), b.begin(), b.end());
    return a;
}
bool bld_compile_all_registered() { return bld::cuda::detail::cuda_backend_registered; }

// The token head (sums and backward for both row dtypes and column orders).
static_assert(std::is_base_of_v<bld::device_token_head, bld::cuda::token_head>);
static_assert(!std::is_constructible_v<bld::cuda::token_head, bld::byte_trie&&>);
std::size_t bld_compile_all_token_head(const bld::byte_trie& trie, const void* rows, float* grad,
                                       std::span<const bld::device_head_path> paths,
                                       const bld::device_head_pieces& pieces) {
    bld::cuda::token_head h(trie);
    auto a = h.sums(bld::dtype::f32, rows, 4, 300, 0, false, paths, nullptr);
    auto b = h.sums(bld::dtype::bf16, rows, 4, 300, 0, true, paths, nullptr);
    h.backward(bld::dtype::f32, rows, grad, 4, 300, 0, true, pieces, true, nullptr);
    h.backward(bld::dtype::bf16, rows, grad, 4, 300, 0, false, pieces, false, nullptr);
    return a.size() + b.size();
}

// Losses: the launcher instantiates the slot kernel for every (logits, targets, true bytes)
// type; these calls instantiate the argument conventions: views, no_tensor, uint8 / bool masks,
// int32 / int64 bytes, the bld::cuda function objects and the host entries' CUDA dispatch.
namespace {
using bld::device_kind;
using bld::tensor_view;
constexpr std::int64_t T = 2, K = 3, A = 260;

template <class L, class P, class Y, class M>
double every_entry(const L* z, const P* p, const Y* y, const M* m, L* g, L* s) {
    const tensor_view<const L, 3> logits(z, {T, K, A}, device_kind::cuda);
    const tensor_view<const P, 3> targets(p, {T, K, A}, device_kind::cuda);
    const tensor_view<const Y, 2> bytes(y, {T, K}, device_kind::cuda);
    const tensor_view<const M, 2> mask(m, {T, K}, device_kind::cuda);
    const tensor_view<L, 3> grad(g, {T, K, A}, device_kind::cuda);
    const tensor_view<L, 2> per_slot(s, {T, K}, device_kind::cuda);
    double v = bld::cuda::bld_loss(logits, targets, bytes, mask, {}, grad, per_slot).get().value;
    v += bld::cuda::byte_loss(logits, targets, bld::no_tensor).get().value;
    v += bld::cuda::byte_cross_entropy(logits, bytes, mask, {}, bld::no_tensor, per_slot).get().value;
    v += bld::bld_loss(logits, targets, bytes, mask, {}, grad).value;
    v += bld::byte_loss(logits, targets, mask).value;
    v += bld::byte_cross_entropy(logits, bytes, bld::no_tensor, {}, grad, per_slot).value;
    return v;
}
}  // namespace

double bld_compile_all_losses(const void* z, const void* p, const void* y, const void* m, void* g, void* s) {
    double v = 0;
    v += every_entry(static_cast<const float*>(z), static_cast<const float*>(p), static_cast<const std::int32_t*>(y),
                     static_cast<const std::uint8_t*>(m), static_cast<float*>(g), static_cast<float*>(s));
    v += every_entry(static_cast<const double*>(z), static_cast<const double*>(p), static_cast<const std::int64_t*>(y),
                     static_cast<const bool*>(m), static_cast<double*>(g), static_cast<double*>(s));
    v += every_entry(static_cast<const float*>(z), static_cast<const double*>(p), static_cast<const std::int64_t*>(y),
                     static_cast<const bool*>(m), static_cast<float*>(g), static_cast<float*>(s));
    return v;
}

// Slot targets views (dense or compact; float32, bf16 and double values) through both entries.
double bld_compile_all_views(tensor_view<const float, 3> z32, tensor_view<const double, 3> z64,
                             const bld::slot_targets_view<float>& f, const bld::slot_targets_view<bld::bf16>& b,
                             const bld::slot_targets_view<double>& d) {
    double v = bld::cuda::bld_loss(z32, f).get().value + bld::cuda::byte_loss(z64, b).get().value;
    v += bld::bld_loss(z32, b, {}).value + bld::byte_loss(z64, d).value + bld::bld_loss(z64, f).value;
    return v;
}
