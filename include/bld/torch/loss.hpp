// bld/torch/loss.hpp — bld's byte losses as differentiable libtorch operations, for C++ trainers.
//
// bld::autograd::bld_loss / byte_loss / byte_cross_entropy take the byte head's logits (a
// torch::Tensor that requires grad, e.g. bld::byte_head's output) and return the loss as a
// tensor with a grad_fn, so `loss.backward()` (or torch::autograd::grad) reaches the head and
// the student behind it. The forward pass is the library's own (bld/loss/byte_loss.hpp: the SIMD slot
// kernel on float32, the reference on float64), and it writes the analytic gradient
// ∂loss/∂logits in the same pass when, and only when, autograd will need it; backward then
// multiplies it by the incoming gradient. Values and gradients are exactly those of
// bld::bld_loss & co. with the same options; the Python package's bld_torch.bld_loss is the same
// construction.
//
//   auto z = head(hidden);                                   // [T, K, 260], requires grad
//   auto loss = bld::autograd::bld_loss(z, targets, true_bytes, mask);
//   loss.backward();
//
// Shapes and dtypes are bld_loss's: logits [T, K, 260] float32 or float64 (flatten leading
// dimensions first, e.g. z.flatten(0, -3)); targets [T, K, 260] of the same dtype; true_bytes
// [T, K] int32/int64; mask [T, K] bool/uint8, or an undefined tensor for "every slot active".
// Dense and contiguous (bld never copies behind your back), all on the CPU or all on one CUDA
// device. CUDA tensors take bld's CUDA kernels through the loss's one entry point
// (bld/backends/device_loss.hpp): the program must link a translation unit compiled by nvcc that
// includes <bld/cuda.cuh>, and the kernels run on torch's current CUDA stream of the logits'
// device — define BLD_TORCH_WITH_CUDA (a CUDA build of libtorch: c10/cuda) so that any current
// stream is used; without it only torch's default stream is (another current stream is refused
// with a value_error rather than raced). The value is a 0-dim
// tensor of the logits' dtype, or [T, K] per-slot values for loss_reduction::none. Bad input
// throws bld's own errors (bld::shape_error, bld::value_error) from the call, naming the
// argument, slot and reason. Second derivatives are not provided (the backward pass is not
// itself differentiable), as for bld_torch in Python.
//
// Needs libtorch (the bld::torch CMake target). Without it this header declares nothing, so
// that it still compiles alone.
#pragma once

#if __has_include(<torch/types.h>) // the libtorch C++ API include directory (bld::torch)

#include "bld/adapters/torch.hpp"
#include "bld/core/error.hpp"
#include "bld/backends/simd/loss_kernel.hpp"
#include "bld/loss/byte_loss.hpp"

#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/types.h>
#if defined(BLD_TORCH_WITH_CUDA)
#include <c10/cuda/CUDAStream.h>
#endif

#include <cstdint>
#include <string>

namespace bld::autograd {

/// Which of the three losses a call computes (all go through one autograd Function).
enum class loss_terms : std::int64_t { divergence = 0, cross_entropy = 1, combined = 2 };

namespace detail {

/// While it lives, bld's device losses run on torch's current CUDA stream of the logits' device
/// (CPU logits: nothing changes).
class torch_stream_scope {
public:
    explicit torch_stream_scope(const torch::Tensor& logits) : scope_(stream_of(logits)) {}

private:
    static void* stream_of(const torch::Tensor& t) {
        if (!t.defined() || !t.is_cuda()) return current_device_stream();
#if defined(BLD_TORCH_WITH_CUDA)
        return c10::cuda::getCurrentCUDAStream(t.device().index()).stream();
#else
        // Without c10/cuda the stream's handle is out of reach; torch's default stream (id 0)
        // is the legacy default stream bld uses by default.
        const c10::Stream current = c10::impl::getDeviceGuardImpl(c10::DeviceType::CUDA)->getStream(t.device());
        if (current.id() != 0)
            throw value_error("bld::autograd", "argument `logits`",
                              "torch's current CUDA stream on " + t.device().str() +
                                  " is not its default stream; compile with BLD_TORCH_WITH_CUDA (c10/cuda) so that bld "
                                  "runs on it");
        return nullptr;
#endif
    }
    device_stream_scope scope_;
};

} // namespace detail

/// The forward pass of one of the three losses on libtorch tensors, outside autograd: an
/// undefined tensor is an absent argument (mask: every slot active; grad / per_slot: not
/// written). A defined grad / per_slot must be [T, K, 260] / [T, K] of the logits' dtype;
/// targets (true_bytes) are only read by the terms that use them. The autograd operations below
/// and the Python module call it.
inline byte_loss_result loss_forward(loss_terms mode, const torch::Tensor& logits, const torch::Tensor& targets,
                                 const torch::Tensor& true_bytes, const torch::Tensor& mask,
                                 const bld_loss_options& options, torch::Tensor grad, torch::Tensor per_slot) {
    const detail::torch_stream_scope on_torch_stream(logits);
    const auto run = [&](const auto& m, auto&& g, auto&& s) -> byte_loss_result {
        switch (mode) {
            case loss_terms::divergence:
                return bld::byte_loss(logits, targets, m,
                                      {.kind = options.kind, .temperature = options.temperature,
                                       .reduction = options.reduction, .target_floor = options.target_floor},
                                      g, s);
            case loss_terms::cross_entropy:
                return bld::byte_cross_entropy(logits, true_bytes, m, {.reduction = options.reduction}, g, s);
            case loss_terms::combined:
                break;
        }
        return bld::bld_loss(logits, targets, true_bytes, m, options, g, s);
    };
    const auto with_outputs = [&](const auto& m) {
        if (grad.defined() && per_slot.defined()) return run(m, grad, per_slot);
        if (grad.defined()) return run(m, grad, no_tensor);
        if (per_slot.defined()) return run(m, no_tensor, per_slot);
        return run(m, no_tensor, no_tensor);
    };
    return mask.defined() ? with_outputs(mask) : with_outputs(no_tensor);
}

namespace detail {

/// The autograd node: forward runs the bld loss, writing ∂value/∂logits when autograd will
/// need it (need_grad); backward scales that saved gradient by the incoming one (slot by slot for
/// per-slot values, whose Jacobian is block-diagonal).
struct loss_function : torch::autograd::Function<loss_function> {
    // Absent arguments are empty optionals, so autograd does not count them as inputs.
    static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& logits,
                                 const c10::optional<torch::Tensor>& targets,
                                 const c10::optional<torch::Tensor>& true_bytes,
                                 const c10::optional<torch::Tensor>& mask, loss_terms mode,
                                 const bld_loss_options& options, bool need_grad) {
        const auto tk = bld::byte_head_shape(logits, name(mode)); // bld's shape error first
        const bool per_slot = options.reduction == loss_reduction::none;
        const auto opts = logits.options();
        torch::Tensor grad = need_grad ? torch::empty({tk[0], tk[1], static_cast<std::int64_t>(alphabet_size)}, opts) : torch::Tensor();
        torch::Tensor slots = per_slot ? torch::empty({tk[0], tk[1]}, opts) : torch::Tensor();
        const byte_loss_result r = loss_forward(mode, logits, targets ? *targets : torch::Tensor(),
                                            true_bytes ? *true_bytes : torch::Tensor(), mask ? *mask : torch::Tensor(),
                                            options, grad, slots);
        ctx->saved_data["per_slot"] = per_slot;
        if (need_grad) ctx->save_for_backward({grad});
        return per_slot ? slots : torch::full({}, r.value, opts);
    }

    static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                   torch::autograd::variable_list grad_outputs) {
        const auto saved = ctx->get_saved_variables();
        const torch::Tensor& grad = saved.at(0);
        const torch::Tensor& g = grad_outputs.at(0);
        torch::Tensor dlogits = ctx->saved_data["per_slot"].toBool() ? grad * g.unsqueeze(-1) : grad * g;
        // one entry per forward argument: logits, targets, true_bytes, mask, mode, options, need_grad
        return {dlogits, torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor(),
                torch::Tensor()};
    }

    static const char* name(loss_terms mode) noexcept {
        switch (mode) {
            case loss_terms::divergence: return "bld::autograd::byte_loss";
            case loss_terms::cross_entropy: return "bld::autograd::byte_cross_entropy";
            case loss_terms::combined: break;
        }
        return "bld::autograd::bld_loss";
    }
};

/// The autograd node of the slot-targets overload: the same construction as loss_function, the
/// targets (values, mask and true bytes) read from a bld::slot_targets_view during forward only.
template <target_type P>
struct targets_loss_function : torch::autograd::Function<targets_loss_function<P>> {
    static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& logits,
                                 const slot_targets_view<P>& targets, const bld_loss_options& options, bool need_grad) {
        const auto tk = bld::byte_head_shape(logits, "bld::autograd::bld_loss");
        const torch_stream_scope on_torch_stream(logits);  // CUDA logits: torch's current stream
        const bool per_slot = options.reduction == loss_reduction::none;
        const auto opts = logits.options();
        torch::Tensor grad = need_grad ? torch::empty({tk[0], tk[1], static_cast<std::int64_t>(alphabet_size)}, opts) : torch::Tensor();
        torch::Tensor slots = per_slot ? torch::empty({tk[0], tk[1]}, opts) : torch::Tensor();
        const auto run = [&](auto&& g, auto&& s) { return bld::bld_loss(logits, targets, options, g, s); };
        const byte_loss_result r = grad.defined() && slots.defined() ? run(grad, slots)
                                   : grad.defined()                  ? run(grad, no_tensor)
                                   : slots.defined()                 ? run(no_tensor, slots)
                                                                     : run(no_tensor, no_tensor);
        ctx->saved_data["per_slot"] = per_slot;
        if (need_grad) ctx->save_for_backward({grad});
        return per_slot ? slots : torch::full({}, r.value, opts);
    }

    static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                   torch::autograd::variable_list grad_outputs) {
        const auto saved = ctx->get_saved_variables();
        const torch::Tensor& grad = saved.at(0);
        const torch::Tensor& g = grad_outputs.at(0);
        torch::Tensor dlogits = ctx->saved_data["per_slot"].toBool() ? grad * g.unsqueeze(-1) : grad * g;
        // one entry per forward argument: logits, targets, options, need_grad
        return {dlogits, torch::Tensor(), torch::Tensor(), torch::Tensor()};
    }
};

/// A required tensor argument: defined, and data rather than a parameter — a gradient flowing
/// into targets or true bytes would be silently dropped, so that is an error instead.
inline c10::optional<torch::Tensor> given(const torch::Tensor& t, const char* op, const char* name) {
    if (!t.defined()) throw shape_error(op, std::string("argument `") + name + "`", "undefined tensor");
    if (t.requires_grad())
        throw value_error(op, std::string("argument `") + name + "`",
                          "requires grad, but bld differentiates with respect to the logits only (pass "
                          "it .detach())");
    return t;
}

/// The logits: defined (autograd reads every tensor argument before bld sees it).
inline const torch::Tensor& logits_of(const torch::Tensor& t, const char* op) {
    if (!t.defined()) throw shape_error(op, "argument `logits`", "undefined tensor");
    return t;
}

/// Whether autograd will ask for ∂/∂logits (the forward pass runs with grad mode off, so this is
/// decided before it): grad mode on and logits that require grad.
inline bool wants_grad(const torch::Tensor& logits) { return torch::GradMode::is_enabled() && logits.requires_grad(); }

/// An optional tensor argument (the mask): undefined means absent.
inline c10::optional<torch::Tensor> present(const torch::Tensor& t) {
    return t.defined() ? c10::optional<torch::Tensor>(t) : c10::nullopt;
}

} // namespace detail

/// λ_b · CE(true byte) + λ_KL · D(targets ‖ softmax(logits/τ)) per active slot, reduced — the
/// value of bld::bld_loss with the same options, differentiable with respect to `logits`.
/// @param mask an undefined tensor (the default) for "every slot active"
/// @throws as bld::bld_loss; bld::shape_error for an undefined targets / true_bytes;
///         bld::value_error if either requires grad
[[nodiscard]] inline torch::Tensor bld_loss(const torch::Tensor& logits, const torch::Tensor& targets,
                                            const torch::Tensor& true_bytes, const torch::Tensor& mask = {},
                                            const bld_loss_options& options = {}) {
    const char* op = detail::loss_function::name(loss_terms::combined);
    return detail::loss_function::apply(detail::logits_of(logits, op), detail::given(targets, op, "targets"),
                                        detail::given(true_bytes, op, "true_bytes"), detail::present(mask),
                                        loss_terms::combined, options, detail::wants_grad(logits));
}

/// The same on slot targets — what bld::distiller returns, dense or compact, float32, bf16 or
/// float64 values — whose mask and true bytes are the targets' own: bld::bld_loss's slot-targets
/// overload, differentiable with respect to `logits` ([tokens, K, 260], the targets' slots).
///   const auto t = distiller.targets(batch);
///   auto loss = bld::autograd::bld_loss(head(hidden), t.view<float>());
/// The view is read during the call only (the node keeps the gradient, not the targets).
/// @throws as bld::bld_loss on slot targets
template <target_type P>
[[nodiscard]] inline torch::Tensor bld_loss(const torch::Tensor& logits, const slot_targets_view<P>& targets,
                                            const bld_loss_options& options = {}) {
    const char* op = detail::loss_function::name(loss_terms::combined);
    return detail::targets_loss_function<P>::apply(detail::logits_of(logits, op), targets, options,
                                                   detail::wants_grad(logits));
}

/// D(targets ‖ softmax(logits/τ)) per active slot, reduced — bld::byte_loss, differentiable
/// with respect to `logits`.
/// @throws as bld::byte_loss; bld::shape_error if targets is undefined, value_error if it
///         requires grad
[[nodiscard]] inline torch::Tensor byte_loss(const torch::Tensor& logits, const torch::Tensor& targets,
                                             const torch::Tensor& mask = {}, const byte_loss_options& options = {}) {
    const char* op = detail::loss_function::name(loss_terms::divergence);
    const bld_loss_options o{.lambda_byte = 0.0, .lambda_kl = 1.0, .kind = options.kind,
                             .temperature = options.temperature, .reduction = options.reduction,
                             .target_floor = options.target_floor};
    return detail::loss_function::apply(detail::logits_of(logits, op), detail::given(targets, op, "targets"), c10::optional<torch::Tensor>(),
                                        detail::present(mask), loss_terms::divergence, o, detail::wants_grad(logits));
}

/// −log softmax(logits)_y on the true bytes per active slot, reduced — bld::byte_cross_entropy,
/// differentiable with respect to `logits`.
/// @throws as bld::byte_cross_entropy; bld::shape_error if true_bytes is undefined
[[nodiscard]] inline torch::Tensor byte_cross_entropy(const torch::Tensor& logits, const torch::Tensor& true_bytes,
                                                      const torch::Tensor& mask = {},
                                                      const byte_cross_entropy_options& options = {}) {
    const char* op = detail::loss_function::name(loss_terms::cross_entropy);
    const bld_loss_options o{.lambda_byte = 1.0, .lambda_kl = 0.0, .reduction = options.reduction};
    return detail::loss_function::apply(detail::logits_of(logits, op), c10::optional<torch::Tensor>(), detail::given(true_bytes, op, "true_bytes"),
                                        detail::present(mask), loss_terms::cross_entropy, o, detail::wants_grad(logits));
}

} // namespace bld::autograd

#endif
