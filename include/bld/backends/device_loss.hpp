// bld/backends/device_loss.hpp — the hook through which a GPU backend runs the byte losses on
// tensors in device memory, so that bld::bld_loss / byte_loss / byte_cross_entropy are one entry
// point whatever the device.
//
// bld/loss/byte_loss.hpp is compiled by any C++ compiler and includes no CUDA header. When the
// logits of a loss call live on a CUDA device, its entry calls detail::device_loss_entry (below):
// every tensor argument must be on that same device, each is checked on the host (dtype, extents,
// layout — the CPU path's rules and messages) and reduced to a pointer, and the call goes to the
// runner a CUDA backend registered in device_loss_registry. A translation unit compiled by nvcc
// that includes <bld/cuda.cuh> registers bld's CUDA runner (one inline variable with a dynamic
// initializer, bld/backends/cuda/registration.cuh); without one, such a call throws a
// shape_error that says how to enable CUDA.
//
// Streams: the device losses of a thread run on its current device stream — the legacy default
// stream unless a device_stream_scope (bld::cuda::stream_scope in CUDA code) names another — and
// return once the value is known (one synchronisation of that stream, as torch's .item()).
//
// Declared below the loss (bld/loss/) so that the loss needs no backend header and the CUDA
// backend no private loss interface; loss_reduction is the loss's enum (declared opaquely here).
#pragma once

#include "bld/core/alphabet.hpp"
#include "bld/core/error.hpp"
#include "bld/core/tensor.hpp"
#include "bld/math/slot_loss.hpp"

#include <array>
#include <atomic>
#include <concepts>
#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

namespace bld {

enum class loss_reduction : std::uint8_t;  // bld/loss/byte_loss.hpp: eq5, slot_mean, none

/// One tensor argument of a device loss call, checked on the host and reduced to its memory.
struct device_tensor {
    void* data = nullptr;     ///< device memory (inputs are only read); may be null when empty
    dtype type = dtype::f32;
    bool given = false;       ///< false: the argument is absent (`no_tensor`)
};

/// A byte-loss call whose tensors live in the memory of one CUDA device, ready for a backend:
/// shapes, dtypes, layouts and devices checked; options turned into slot parameters.
struct device_loss_call {
    std::string_view op;                 ///< the operation errors name (e.g. "bld::bld_loss")
    math::slot_params prm;
    loss_reduction reduction{};
    std::int64_t T = 0, K = 0;           ///< tokens and heads of the logits [T, K, 260]
    int device = 0;                      ///< the CUDA device ordinal of every tensor
    void* stream = nullptr;              ///< cudaStream_t; null: the legacy default stream
    device_tensor logits;                ///< [T, K, 260] float32 / float64
    /// Dense: [T, K, 260] float32 / float64. Compact: [rows, 260] float32 / bfloat16, row a
    /// holding the a-th active slot in flat order (slot = token · K + head).
    device_tensor targets;
    bool compact = false;                ///< the targets are compact rows
    device_tensor target_slots;          ///< compact only: [rows] int64, the flat slot of each row
    std::int64_t target_rows = 0;        ///< compact only: rows
    device_tensor true_bytes;            ///< [T, K] int32 / int64
    device_tensor mask;                  ///< [T, K] uint8 / bool (one byte, 0 or 1)
    device_tensor grad;                  ///< [T, K, 260], the logits' dtype
    device_tensor per_slot;              ///< [T, K], the logits' dtype
};

/// What a device loss returns (bld::byte_loss_result's fields).
struct device_loss_totals {
    double value = 0.0;
    std::int64_t active_slots = 0;
    std::int64_t active_tokens = 0;
};

/// Runs a checked call and waits for its value; throws what the CPU path would throw for a bad
/// slot (the same class, location and reason), or the backend's error.
using device_loss_runner = device_loss_totals (*)(const device_loss_call&);

/// Where a GPU backend registers its loss runner (one inline variable: every translation unit of
/// a program reads the same one). Null: CUDA tensors are refused.
struct device_loss_registry {
    static inline std::atomic<device_loss_runner> cuda{nullptr};
};

namespace detail {
/// The calling thread's device stream (a cudaStream_t; null: the legacy default stream).
inline thread_local void* thread_device_stream = nullptr;
}  // namespace detail

/// The stream the device losses of this thread run on (null: the legacy default stream).
[[nodiscard]] inline void* current_device_stream() noexcept { return detail::thread_device_stream; }

/// While it lives, the device losses this thread starts run on `stream` (a cudaStream_t, or
/// null for the legacy default stream); the previous stream comes back when it ends. Scopes
/// nest. CUDA code spells it bld::cuda::stream_scope(cudaStream_t).
class device_stream_scope {
public:
    explicit device_stream_scope(void* stream) noexcept
        : previous_(std::exchange(detail::thread_device_stream, stream)) {}
    ~device_stream_scope() { detail::thread_device_stream = previous_; }
    device_stream_scope(const device_stream_scope&) = delete;
    device_stream_scope& operator=(const device_stream_scope&) = delete;

private:
    void* previous_;
};

namespace detail {

/// "cpu" or "cuda:N".
[[nodiscard]] inline std::string device_name(device_kind kind, int index) {
    if (kind == device_kind::cpu) return "cpu";
    return std::string(bld::to_string(kind)) + ":" + std::to_string(index);
}

/// The device of a tensor argument, an adapter's refusal named after the argument.
template <class Src>
[[nodiscard]] std::pair<device_kind, int> device_of(const Src& t, std::string_view name) {
    try {
        return {adapter_of<Src>::device(t), device_index_of(t)};
    } catch (const shape_error& e) {
        throw shape_error(e.operation(), "argument `" + std::string(name) + "`", e.reason());
    }
}

/// Whether a loss call's logits live outside the CPU (the loss entries' dispatch).
template <class Src>
[[nodiscard]] bool on_device(const Src& logits) {
    return device_of(logits, "logits").first != device_kind::cpu;
}

/// Throws unless a present argument is on the logits' CUDA device.
template <class Src>
void require_device(std::string_view op, const Src& t, std::string_view name, int device) {
    if constexpr (tensor_source<Src>) {
        const auto [kind, index] = device_of(t, name);
        if (kind != device_kind::cuda || index != device)
            throw shape_error(std::string(op), "argument `" + std::string(name) + "`",
                              "on " + device_name(kind, index) + ", but `logits` is on " +
                                  device_name(device_kind::cuda, device) +
                                  " (every tensor of a loss call must be on the logits' device)");
    }
}

/// The registered CUDA runner, or a shape_error saying how to get one.
[[nodiscard]] inline device_loss_runner cuda_loss_runner(std::string_view op, int device) {
    const device_loss_runner run = device_loss_registry::cuda.load(std::memory_order_acquire);
    if (run == nullptr)
        throw shape_error(std::string(op), "argument `logits`",
                          "on " + device_name(device_kind::cuda, device) +
                              ", but no CUDA backend is registered in this program: include <bld/cuda.cuh> in a "
                              "translation unit compiled by nvcc and link it (CMake: BLD_ENABLE_CUDA=ON, target "
                              "bld::cuda), or move the tensors to the CPU");
    return run;
}

/// A checked input argument of one of the listed dtypes; `what` completes "expected …, got X".
template <class Elem, std::size_t Rank, class Src>
device_tensor device_input(const Src& t, std::string_view name, const std::array<std::int64_t, Rank>& ext) {
    const auto v = as_view<const Elem, Rank>(t, name, ext, device_kind::cuda);
    return {const_cast<void*>(static_cast<const void*>(v.data())), dtype_of<Elem>, true};
}

template <class Elem, std::size_t Rank, class Src>
device_tensor device_output(Src&& t, std::string_view name, const std::array<std::int64_t, Rank>& ext) {
    if constexpr (!tensor_source<Src>) {
        return {};
    } else {
        const auto v = as_view<Elem, Rank>(t, name, ext, device_kind::cuda);
        return {static_cast<void*>(v.data()), dtype_of<Elem>, true};
    }
}

template <class Src>
device_tensor device_real3(std::string_view op, const Src& t, std::string_view name,
                           const std::array<std::int64_t, 3>& ext) {
    switch (tensor_dtype(t, name)) {
        case dtype::f32: return device_input<float>(t, name, ext);
        case dtype::f64: return device_input<double>(t, name, ext);
        default:
            throw shape_error(std::string(op), "argument `" + std::string(name) + "`",
                              "expected float32 or float64, got " + describe_tensor(t));
    }
}

template <class Src>
device_tensor device_mask(std::string_view op, const Src& mask, const std::array<std::int64_t, 2>& tk) {
    if constexpr (!tensor_source<Src>) {
        return {};
    } else {
        switch (tensor_dtype(mask, "mask")) {
            case dtype::u8: return device_input<std::uint8_t>(mask, "mask", tk);
            case dtype::boolean: {
                device_tensor d = device_input<bool>(mask, "mask", tk);
                d.type = dtype::u8;  // one byte holding 0 or 1: read as uint8
                return d;
            }
            default:
                throw shape_error(std::string(op), "argument `mask`",
                                  "expected a uint8 or bool [T, K] mask, got " + describe_tensor(mask));
        }
    }
}

template <class Src>
device_tensor device_true_bytes(std::string_view op, const Src& y, const std::array<std::int64_t, 2>& tk) {
    if constexpr (!tensor_source<Src>) {
        return {};
    } else {
        switch (tensor_dtype(y, "true_bytes")) {
            case dtype::i32: return device_input<std::int32_t>(y, "true_bytes", tk);
            case dtype::i64: return device_input<std::int64_t>(y, "true_bytes", tk);
            default:
                throw shape_error(std::string(op), "argument `true_bytes`",
                                  "expected int32 or int64 [T, K] bytes, got " + describe_tensor(y));
        }
    }
}

/// Checks every argument of a loss call whose logits are on a CUDA device and describes the call
/// (the stream is left null: the caller sets it). The checks and messages are the CPU path's,
/// plus: every argument on the logits' device. `tk` is bld::byte_head_shape(logits).
/// @throws shape_error naming the argument (wrong device, rank, shape, dtype or layout).
template <class Logits, class Targets, class TrueBytes, class Mask, class Grad, class PerSlot>
[[nodiscard]] device_loss_call make_device_loss_call(std::string_view op, const std::array<std::int64_t, 2>& tk,
                                                     const Logits& logits, const Targets& targets,
                                                     const TrueBytes& true_bytes, const Mask& mask,
                                                     const math::slot_params& prm, loss_reduction reduction,
                                                     Grad&& grad, PerSlot&& per_slot) {
    const auto [kind, device] = device_of(logits, "logits");
    if (kind != device_kind::cuda)
        throw shape_error(std::string(op), "argument `logits`",
                          "expected a tensor on a CUDA device, got " + describe_tensor(logits));
    require_device(op, mask, "mask", device);
    require_device(op, true_bytes, "true_bytes", device);
    require_device(op, targets, "targets", device);
    require_device(op, grad, "grad", device);
    require_device(op, per_slot, "per_slot", device);

    device_loss_call c;
    c.op = op;
    c.prm = prm;
    c.reduction = reduction;
    c.T = tk[0];
    c.K = tk[1];
    c.device = device;
    const std::array<std::int64_t, 3> tka{tk[0], tk[1], static_cast<std::int64_t>(alphabet_size)};
    c.mask = device_mask(op, mask, tk);
    c.true_bytes = device_true_bytes(op, true_bytes, tk);
    c.logits = device_real3(op, logits, "logits", tka);
    if (c.logits.type == dtype::f32) {
        c.grad = device_output<float>(grad, "grad", tka);
        c.per_slot = device_output<float>(per_slot, "per_slot", tk);
    } else {
        c.grad = device_output<double>(grad, "grad", tka);
        c.per_slot = device_output<double>(per_slot, "per_slot", tk);
    }
    if constexpr (tensor_source<Targets>) c.targets = device_real3(op, targets, "targets", tka);
    if (prm.w_div == 0.0) c.targets.data = nullptr;     // checked, not read (as on the CPU)
    if (prm.w_ce == 0.0) c.true_bytes.data = nullptr;
    return c;
}

/// The device half of the slot-targets entries (bld::slot_targets_view, bld/targets/
/// slot_targets.hpp; a template so that this header need not include it): every member of the
/// view, the logits and the outputs on one CUDA device. The view has been check()ed and matched
/// to the logits' [T, K] by the caller.
template <class Logits, class View, class Grad, class PerSlot>
[[nodiscard]] device_loss_call make_device_targets_call(std::string_view op, const std::array<std::int64_t, 2>& tk,
                                                        const Logits& logits, const View& targets,
                                                        const math::slot_params& prm, loss_reduction reduction,
                                                        Grad&& grad, PerSlot&& per_slot) {
    using layout_t = std::remove_cvref_t<decltype(targets.layout)>;
    using P = typename std::remove_cvref_t<decltype(targets.values)>::value_type;
    const bool compact = targets.layout == layout_t::compact;
    const auto [kind, device] = device_of(logits, "logits");
    if (kind != device_kind::cuda)
        throw shape_error(std::string(op), "argument `targets`",
                          "on " + device_name(targets.mask.device(), targets.mask.device_index()) + ", but `logits` is on " +
                              device_name(kind, device) + " (every tensor of a loss call must be on the logits' device)");
    require_device(op, targets.values, "targets.values", device);
    if (compact) require_device(op, targets.slots, "targets.slots", device);
    require_device(op, targets.mask, "targets.mask", device);
    require_device(op, targets.true_bytes, "targets.true_bytes", device);
    require_device(op, grad, "grad", device);
    require_device(op, per_slot, "per_slot", device);

    device_loss_call c;
    c.op = op;
    c.prm = prm;
    c.reduction = reduction;
    c.T = tk[0];
    c.K = tk[1];
    c.device = device;
    const std::array<std::int64_t, 3> tka{tk[0], tk[1], static_cast<std::int64_t>(alphabet_size)};
    c.logits = device_real3(op, logits, "logits", tka);
    if (c.logits.type == dtype::f32) {
        c.grad = device_output<float>(grad, "grad", tka);
        c.per_slot = device_output<float>(per_slot, "per_slot", tk);
    } else {
        c.grad = device_output<double>(grad, "grad", tka);
        c.per_slot = device_output<double>(per_slot, "per_slot", tk);
    }
    const auto in = [](const auto& v) {
        using E = typename std::remove_cvref_t<decltype(v)>::value_type;
        return device_tensor{const_cast<void*>(static_cast<const void*>(v.data())), dtype_of<E>, true};
    };
    c.targets = in(targets.values);
    c.compact = compact;
    if (compact) {
        c.target_slots = in(targets.slots);
        c.target_rows = targets.values.extent(0);
    }
    c.mask = in(targets.mask);
    c.true_bytes = in(targets.true_bytes);
    static_assert(std::is_same_v<P, float> || std::is_same_v<P, double> || std::is_same_v<P, bf16>);
    if (prm.w_div == 0.0) c.targets.data = nullptr;  // not read (the compact rows are still checked)
    if (prm.w_ce == 0.0) c.true_bytes.data = nullptr;
    return c;
}

/// The device half of the slot-targets entries: as device_loss_entry, for a slot_targets_view.
template <class Logits, class View, class Grad, class PerSlot>
device_loss_totals device_targets_entry(std::string_view op, const std::array<std::int64_t, 2>& tk,
                                        const Logits& logits, const View& targets, const math::slot_params& prm,
                                        loss_reduction reduction, Grad&& grad, PerSlot&& per_slot) {
    const auto [kind, device] = device_of(logits, "logits");
    // Logits on the CPU with targets on a device: make_device_targets_call names the targets.
    const device_loss_runner run = kind == device_kind::cuda ? cuda_loss_runner(op, device) : nullptr;
    device_loss_call c = make_device_targets_call(op, tk, logits, targets, prm, reduction, grad, per_slot);
    c.stream = current_device_stream();
    return run(c);
}

/// The device half of the loss entries: checks the call, hands it to the registered CUDA runner
/// on the thread's current device stream and returns its totals.
/// @throws shape_error (no CUDA backend registered; an argument on another device; the CPU's
///         shape, dtype and layout errors), value_error as the CPU path for a bad slot, the
///         backend's error (bld::cuda::cuda_error).
template <class Logits, class Targets, class TrueBytes, class Mask, class Grad, class PerSlot>
device_loss_totals device_loss_entry(std::string_view op, const std::array<std::int64_t, 2>& tk, const Logits& logits, const Targets& targets,
                                     const TrueBytes& true_bytes, const Mask& mask, const math::slot_params& prm,
                                     loss_reduction reduction, Grad&& grad, PerSlot&& per_slot) {
    const auto [kind, device] = device_of(logits, "logits");
    if (kind != device_kind::cuda)
        throw shape_error(std::string(op), "argument `logits`",
                          "expected a tensor on the CPU or a CUDA device, got " + describe_tensor(logits));
    const device_loss_runner run = cuda_loss_runner(op, device);
    device_loss_call c = make_device_loss_call(op, tk, logits, targets, true_bytes, mask, prm, reduction, grad, per_slot);
    c.stream = current_device_stream();
    return run(c);
}

}  // namespace detail
}  // namespace bld
