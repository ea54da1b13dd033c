// CI compile check: every CUDA header of bld, with every kernel instantiated for every type it
// supports, compiled by nvcc for each architecture of CMAKE_CUDA_ARCHITECTURES (80;90 by
// default). Nothing runs: the object library bld_cuda_compile_all only has to build.
#include <bld/cuda.cuh>
#include <bld/backends/cuda/block_ops.cuh>
#include <bld/backends/cuda/canonical.cuh>
#include <bld/backends/cuda/error.cuh>
#include <bld/backends/cuda/loss.cuh>
#include <bld/backends/cuda/row_pass.cuh>

namespace bld::cuda {

// Row pass and node sums: float32 and bf16 rows.
template void row_pass<float>(const device_trie&, tensor_view<const float, 2>, row_summaries, cudaStream_t);
template void row_pass<bf16>(const device_trie&, tensor_view<const bf16, 2>, row_summaries, cudaStream_t);
template void node_sums<float>(const device_trie&, tensor_view<const float, 2>, const node_request*, std::size_t,
                               node_sums_out, cudaStream_t);
template void node_sums<bf16>(const device_trie&, tensor_view<const bf16, 2>, const node_request*, std::size_t,
                              node_sums_out, cudaStream_t);
template void throw_if_bad_rows<float>(const std::int32_t*, tensor_view<const float, 2>, cudaStream_t, std::size_t);
template void throw_if_bad_rows<bf16>(const std::int32_t*, tensor_view<const bf16, 2>, cudaStream_t, std::size_t);

// Canonical path.
template device_byte_distributions canonical_path<float>(const device_trie&, tensor_view<const float, 2>,
                                                         std::span<const std::int64_t>, std::optional<std::string_view>,
                                                         cudaStream_t);
template device_byte_distributions canonical_path<bf16>(const device_trie&, tensor_view<const bf16, 2>,
                                                        std::span<const std::int64_t>, std::optional<std::string_view>,
                                                        cudaStream_t);

// Losses: float/double logits × float/double targets × int32/int64 true bytes.
#define BLD_INSTANTIATE_LOSS(L, P, Y)                                                                            \
    template pending_loss bld_loss<L, P, Y>(tensor_view<const L, 3>, tensor_view<const P, 3>,                 \
                                            tensor_view<const Y, 2>, tensor_view<const std::uint8_t, 2>,      \
                                            const bld_loss_options&, tensor_view<L, 3>, tensor_view<L, 2>,    \
                                            cudaStream_t);
BLD_INSTANTIATE_LOSS(float, float, std::int32_t)
BLD_INSTANTIATE_LOSS(float, float, std::int64_t)
BLD_INSTANTIATE_LOSS(float, double, std::int64_t)
BLD_INSTANTIATE_LOSS(double, double, std::int64_t)
BLD_INSTANTIATE_LOSS(double, float, std::int32_t)
#undef BLD_INSTANTIATE_LOSS
template pending_loss byte_loss<float, float>(tensor_view<const float, 3>, tensor_view<const float, 3>,
                                              tensor_view<const std::uint8_t, 2>, const byte_loss_options&,
                                              tensor_view<float, 3>, tensor_view<float, 2>, cudaStream_t);
template pending_loss byte_loss<double, double>(tensor_view<const double, 3>, tensor_view<const double, 3>,
                                                tensor_view<const std::uint8_t, 2>, const byte_loss_options&,
                                                tensor_view<double, 3>, tensor_view<double, 2>, cudaStream_t);
template pending_loss byte_cross_entropy<float, std::int64_t>(tensor_view<const float, 3>,
                                                              tensor_view<const std::int64_t, 2>,
                                                              tensor_view<const std::uint8_t, 2>,
                                                              const byte_cross_entropy_options&, tensor_view<float, 3>,
                                                              tensor_view<float, 2>, cudaStream_t);
template pending_loss byte_cross_entropy<double, std::int32_t>(tensor_view<const double, 3>,
                                                               tensor_view<const std::int32_t, 2>,
                                                               tensor_view<const std::uint8_t, 2>,
                                                               const byte_cross_entropy_options&,
                                                               tensor_view<double, 3>, tensor_view<double, 2>,
                                                               cudaStream_t);

}  // namespace bld::cuda
