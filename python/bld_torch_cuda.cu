// python/bld_torch_cuda.cu — bld_torch's CUDA dispatch (see bld_torch_cuda.hpp): builds bld
// tensor views on the device memory it is given and calls bld::cuda::{bld_loss, byte_loss,
// byte_cross_entropy} on the caller's stream. Compiled by nvcc; includes no torch header.
#include "bld_torch_cuda.hpp"

#include <bld/backends/cuda/loss.cuh>

#include <cuda_runtime.h>

namespace bld_torch_cuda {
namespace {

template <class T, std::size_t R>
bld::tensor_view<T, R> view(T* p, const std::array<std::int64_t, R>& ext, int device) {
    if (p == nullptr) return {};
    return bld::tensor_view<T, R>(p, ext, bld::device_kind::cuda, device);
}

template <class L, class P, class Y>
bld::byte_loss_result run(const loss_call& c) {
    const std::array<std::int64_t, 3> tka{c.T, c.K, static_cast<std::int64_t>(bld::alphabet_size)};
    const std::array<std::int64_t, 2> tk{c.T, c.K};
    const auto logits = view(static_cast<const L*>(c.logits), tka, c.device);
    const auto targets = view(static_cast<const P*>(c.targets), tka, c.device);
    const auto bytes = view(static_cast<const Y*>(c.true_bytes), tk, c.device);
    const auto mask = view(c.mask, tk, c.device);
    const auto grad = view(static_cast<L*>(c.grad), tka, c.device);
    const auto per_slot = view(static_cast<L*>(c.per_slot), tk, c.device);
    const auto stream = static_cast<cudaStream_t>(c.stream);
    switch (c.mode) {
        case loss_mode::ce:
            return bld::cuda::byte_cross_entropy<L, Y>(logits, bytes, mask, {.reduction = c.reduction}, grad, per_slot,
                                                       stream)
                .get();
        case loss_mode::divergence:
            return bld::cuda::byte_loss<L, P>(logits, targets, mask,
                                              {.kind = c.kind, .temperature = c.temperature, .reduction = c.reduction,
                                               .target_floor = c.target_floor},
                                              grad, per_slot, stream)
                .get();
        case loss_mode::bld:
        default:
            return bld::cuda::bld_loss<L, P, Y>(logits, targets, bytes, mask,
                                                {.lambda_byte = c.lambda_byte, .lambda_kl = c.lambda_kl, .kind = c.kind,
                                                 .temperature = c.temperature, .reduction = c.reduction,
                                                 .target_floor = c.target_floor},
                                                grad, per_slot, stream)
                .get();
    }
}

template <class L, class P>
bld::byte_loss_result run_bytes(const loss_call& c) {
    return c.true_bytes_i64 ? run<L, P, std::int64_t>(c) : run<L, P, std::int32_t>(c);
}

template <class L>
bld::byte_loss_result run_targets(const loss_call& c) {
    return c.targets_f64 ? run_bytes<L, double>(c) : run_bytes<L, float>(c);
}

}  // namespace

bld::byte_loss_result run_loss(const loss_call& c) {
    bld::cuda::check(cudaSetDevice(c.device), "bld_torch", "cudaSetDevice");
    return c.logits_f64 ? run_targets<double>(c) : run_targets<float>(c);
}

}  // namespace bld_torch_cuda
