// bld/torch/token_head.hpp — token-head distillation as a differentiable libtorch operation, for
// C++ trainers (and, through python/bld_torch.cpp, for Python: the same autograd node).
//
// bld::autograd::token_head_loss takes the student's own token logits [B, S_s, V_s] (a
// torch::Tensor that requires grad: the LM head's output), its input ids and the slot targets a
// bld::distiller made for the same batch, and returns the token-head loss as a 0-dim tensor with
// a grad_fn (docs/07_token_head.md; design.md §3.5):
//
//   const auto t = distiller.targets(teacher_logits, teacher_ids, student_ids);
//   auto loss = ce + lambda * bld::autograd::token_head_loss(distiller, student_logits, student_ids, t);
//   loss.backward();
//
// The forward pass is bld::distiller::token_head_loss, which writes the value and the analytic
// gradient ∂loss/∂logits in one fused pass (the gradient only when autograd will need it: grad
// mode on and logits that require grad); the node keeps that gradient, and backward multiplies it
// by the incoming one. Layout, shifted rows, runs of text tokens between specials and which bytes
// are supervised are the distiller's (bld/targets/distiller.hpp).
//
// Dtypes: logits float32, bfloat16, float16 or float64, read as they are (no copy); the value
// and the saved gradient are float32 (float64 for float64 logits), and backward hands the
// gradient back in the logits' own dtype. ids int64 [B, S_s]. The optional attention mask
// [B, S_s] (bool, uint8, or int32/int64 as Hugging Face's attention_mask; nonzero = token) marks
// one contiguous run per sequence: left or right padding. Dense, contiguous tensors; ids, mask
// and targets on the CPU, the logits too unless the program has bld's CUDA token head
// (distiller::token_head_loss: float32 / bf16 logits in CUDA memory, run on torch's current
// stream as in bld/torch/loss.hpp; the gradient then stays on the logits' device).
// Bad input throws bld's own errors (shape_error, value_error) from the call, naming the
// argument, sequence and reason. The backward pass is not itself differentiable.
//
// Needs libtorch (the bld::torch CMake target). Without it this header declares nothing, so that
// it still compiles alone.
#pragma once

#if __has_include(<torch/types.h>) // the libtorch C++ API include directory (bld::torch)

#include "bld/adapters/torch.hpp"
#include "bld/core/error.hpp"
#include "bld/targets/slot_targets.hpp"
#include "bld/targets/distiller.hpp"    // bld::distiller, token_head_options (projection/student_path.hpp)
#include "bld/torch/loss.hpp"            // detail::torch_stream_scope

#include <torch/csrc/autograd/custom_function.h>
#include <torch/types.h>

#include <cstdint>
#include <string>
#include <variant>

namespace bld::autograd {

namespace detail {

/// What the node's forward pass reads besides the logits and ids, during the call only: the
/// distiller, the targets (any stored precision), the options and the mask.
struct token_head_call {
    const distiller* d = nullptr;
    std::variant<slot_targets_view<float>, slot_targets_view<bf16>, slot_targets_view<double>> targets;
    token_head_options options{};
    tensor_view<const std::uint8_t, 2> student_mask{}; ///< [B, S_s] or empty
    bool need_grad = false;
};

inline constexpr const char* token_head_op = "bld::autograd::token_head_loss";

/// The autograd node: forward runs distiller::token_head_loss, writing ∂value/∂logits when
/// autograd will need it; backward scales that saved gradient by the incoming one and casts it
/// to the logits' dtype.
struct token_head_function : torch::autograd::Function<token_head_function> {
    static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& logits,
                                 const torch::Tensor& ids, const token_head_call& call) {
        const char* op = token_head_op;
        if (logits.dim() != 3)
            throw shape_error(op, "argument `student_logits`",
                              "expected [B, S_s, V_s] token logits, got " + bld::detail::describe_tensor(logits));
        const dtype dt = tensor_dtype(logits, "student_logits");
        const bool wide = dt == dtype::f64;
        const auto dev = tensor_adapter<at::Tensor>::device(logits);
        const auto gopts = torch::TensorOptions().dtype(wide ? torch::kFloat64 : torch::kFloat32).device(logits.device());
        torch::Tensor grad = call.need_grad ? torch::empty(logits.sizes(), gopts) : torch::Tensor();
        const auto ids_view = as_view<const std::int64_t, 2>(ids, "student_ids");
        const auto run = [&]<class T, class G>() -> token_head_result {
            student_batch<T> b;
            b.logits = as_view<const T, 3>(logits, "student_logits", any_extents<3>(), dev);
            b.ids = ids_view;
            b.ranges.student_mask = call.student_mask;
            tensor_view<G, 3> gv;
            if (grad.defined()) gv = as_view<G, 3>(grad, "grad", any_extents<3>(), dev);
            return std::visit([&](const auto& t) { return call.d->token_head_loss(b, t, call.options, gv); },
                              call.targets);
        };
        const torch_stream_scope on_torch_stream(logits); // CUDA logits: torch's current stream
        token_head_result r;
        switch (dt) {
            case dtype::f32: r = run.template operator()<float, float>(); break;
            case dtype::bf16: r = run.template operator()<bf16, float>(); break;
            case dtype::f16: r = run.template operator()<f16, float>(); break;
            case dtype::f64: r = run.template operator()<double, double>(); break;
            default:
                throw shape_error(op, "argument `student_logits`",
                                  "expected float32, bfloat16, float16 or float64 logits, got " +
                                      bld::detail::describe_tensor(logits));
        }
        ctx->saved_data["dtype"] = static_cast<std::int64_t>(logits.scalar_type());
        if (call.need_grad) ctx->save_for_backward({grad});
        return torch::full({}, r.value, gopts);
    }

    static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                   torch::autograd::variable_list grad_outputs) {
        const auto saved = ctx->get_saved_variables();
        const auto dt = static_cast<c10::ScalarType>(ctx->saved_data["dtype"].toInt());
        torch::Tensor dlogits = (saved.at(0) * grad_outputs.at(0)).to(dt);
        // one entry per forward argument: logits, ids, call
        return {dlogits, torch::Tensor(), torch::Tensor()};
    }
};

/// The attention mask as bld reads it, in host memory (the host finds the runs): bool / uint8 as
/// they are, integer masks as nonzero → 1; a device mask is copied to the host ([B, S_s] bytes).
inline torch::Tensor mask_bytes(const torch::Tensor& mask) {
    if (!mask.defined()) return mask;
    if (mask.requires_grad())
        throw value_error(token_head_op, "argument `student_mask`", "requires grad: pass it .detach()");
    const torch::Tensor m = mask.device().is_cpu() ? mask : mask.to(torch::kCPU);
    switch (m.scalar_type()) {
        case c10::ScalarType::Bool:
        case c10::ScalarType::Byte: return m;
        case c10::ScalarType::Int:
        case c10::ScalarType::Long: return m.ne(0).to(c10::ScalarType::Byte).contiguous();
        default: break;
    }
    throw shape_error(token_head_op, "argument `student_mask`",
                      std::string("expected bool, uint8, int32 or int64 (nonzero = token), got torch.") +
                          c10::toString(m.scalar_type()));
}

template <class View>
torch::Tensor token_head_apply(const distiller& d, const torch::Tensor& student_logits, const torch::Tensor& student_ids,
                               const View& targets, const token_head_options& options,
                               const torch::Tensor& student_mask) {
    const char* op = token_head_op;
    if (!student_logits.defined()) throw shape_error(op, "argument `student_logits`", "undefined tensor");
    if (!student_ids.defined()) throw shape_error(op, "argument `student_ids`", "undefined tensor");
    if (student_ids.requires_grad())
        throw value_error(op, "argument `student_ids`", "requires grad, but ids are not differentiable");
    const torch::Tensor mask = mask_bytes(student_mask);
    token_head_call call{&d, targets, options, {}, torch::GradMode::is_enabled() && student_logits.requires_grad()};
    if (mask.defined()) {
        if (mask.dim() != 2)
            throw shape_error(op, "argument `student_mask`",
                              "expected [B, S_s] like the ids, got " + bld::detail::describe_tensor(mask));
        if (!tensor_adapter<at::Tensor>::is_contiguous(mask))
            throw shape_error(op, "argument `student_mask`", tensor_adapter<at::Tensor>::layout_note(mask));
        // bool storage is one byte holding 0 or 1: read it as uint8.
        call.student_mask = tensor_view<const std::uint8_t, 2>(static_cast<const std::uint8_t*>(mask.data_ptr()),
                                                               {mask.size(0), mask.size(1)});
    }
    return token_head_function::apply(student_logits, student_ids, call);
}

} // namespace detail

/// The token-head loss of a padded batch — bld::distiller::token_head_loss of `d` with the same
/// options — differentiable with respect to `student_logits`.
/// @param student_logits [B, S_s, V_s] float32, bfloat16, float16 or float64: row p is the
///        student's output at input position p; columns in id order, or in
///        d.student_permutation() order with distiller_options::student_order = row_order::trie
/// @param student_ids [B, S_s] int64: the student's input ids (those d.targets() was given)
/// @param targets the slot targets d.targets() returned for this batch (read during the call only)
/// @param student_mask [B, S_s] attention mask (bool, uint8, int32 or int64; nonzero = token; on
///        any device: bld reads a host copy of a device mask), or
///        an undefined tensor (the default) for "every position"
/// @returns a 0-dim float32 tensor (float64 for float64 logits) with a grad_fn when grad mode is
///          on and the logits require grad
/// @throws as bld::distiller::token_head_loss; bld::shape_error for undefined or non-contiguous
///         tensors, a mask of the wrong rank or dtype; bld::value_error for ids or a mask that
///         require grad
template <target_type P>
[[nodiscard]] inline torch::Tensor token_head_loss(const distiller& d, const torch::Tensor& student_logits,
                                                   const torch::Tensor& student_ids,
                                                   const slot_targets_view<P>& targets,
                                                   const token_head_options& options = {},
                                                   const torch::Tensor& student_mask = {}) {
    return detail::token_head_apply(d, student_logits, student_ids, targets, options, student_mask);
}

/// The same on the owning targets d.targets() returns (float32 or bfloat16 values).
[[nodiscard]] inline torch::Tensor token_head_loss(const distiller& d, const torch::Tensor& student_logits,
                                                   const torch::Tensor& student_ids, const target_batch& targets,
                                                   const token_head_options& options = {},
                                                   const torch::Tensor& student_mask = {}) {
    if (targets.precision() == dtype::bf16)
        return detail::token_head_apply(d, student_logits, student_ids, targets.view<bf16>(), options, student_mask);
    return detail::token_head_apply(d, student_logits, student_ids, targets.view<float>(), options, student_mask);
}

} // namespace bld::autograd

#endif
