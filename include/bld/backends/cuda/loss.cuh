// bld/backends/cuda/loss.cuh — the byte losses (bld/loss/byte_loss.hpp) forward + backward on the GPU.
//
// Two ways in, one implementation:
//  * bld::bld_loss / byte_loss / byte_cross_entropy with tensors in CUDA memory: the host entry
//    checks the call and hands it to the runner that bld/backends/cuda/registration.cuh
//    registers (bld/backends/device_loss.hpp); the call returns the value, like on the CPU;
//  * bld::cuda::bld_loss / byte_loss / byte_cross_entropy: the same arguments (no_tensor for an
//    absent mask / grad / per_slot, a uint8 or bool mask, int32 or int64 true bytes, dense
//    targets or the loss's compact targets view), returning a pending_loss at once — the
//    kernels are queued, get() waits for the value.
// Both run on the thread's current stream (bld::cuda::stream_scope; default: the legacy default
// stream) and on the device the tensors live on.
//
// One warp per slot: the 260 logits of a slot are spread over the 32 lanes (9 per lane) and
// math::slot_loss — the same function the CPU tests run with host_lanes — computes the value
// and the gradient in one fused pass, in fp64 whatever the input type. Kernels: count the
// active slots and tokens (for the eq5 / slot_mean scales), for compact targets map each slot to
// its row (checking the row → slot list), the slots (values, gradients, per-slot outputs), and a
// one-block reduction of the per-slot values in a fixed order (deterministic).
//
// Tolerance against the CPU (tests/cuda/test_cuda_main.cpp): 1e-12 relative on fp64 values and
// gradients (only the summation order differs); fp32 outputs within one rounding.
//
// Errors the CPU throws per slot (NaN/±inf logit, bad teacher probability, true byte outside
// 0..259) and for a compact row list that does not match the mask are recorded on the device;
// pending_loss::get() synchronises and throws the CPU's value_error (the first bad slot).
// Outputs are unspecified after such an error (as on the CPU).
#pragma once

#include "bld/backends/cuda/block_ops.cuh"
#include "bld/backends/cuda/error.cuh"
#include "bld/backends/cuda/stream.cuh"
#include "bld/backends/device_loss.hpp"
#include "bld/core/tensor.hpp"
#include "bld/loss/byte_loss.hpp"
#include "bld/math/slot_loss.hpp"

#include <cub/block/block_reduce.cuh>
#include <cub/device/device_scan.cuh>
#include <cuda_runtime.h>

#include <array>
#include <cmath>
#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>

namespace bld::cuda {

/// The loss's scalars in device memory.
struct loss_state {
    double value = 0.0;                     ///< the reduced loss
    unsigned long long active_slots = 0;    ///< |A|
    unsigned long long active_tokens = 0;   ///< T_A
    unsigned long long error = ~0ull;       ///< first bad slot: slot << 12 | code << 9 | entry; ~0: none
};

namespace detail {

inline constexpr int loss_threads = 256;

/// The error code (beside math::slot_status's) of an active slot whose compact row is another
/// slot's: the rows do not list the active slots in order.
inline constexpr unsigned compact_row_mismatch = 4;

BLD_HOST_DEVICE inline unsigned long long slot_error_key(std::int64_t slot, math::slot_status code, int entry) {
    return (static_cast<unsigned long long>(slot) << 12) | (static_cast<unsigned long long>(code) << 9) |
           static_cast<unsigned long long>(entry);
}

BLD_HOST_DEVICE inline double reduction_scale(loss_reduction r, unsigned long long slots, unsigned long long tokens) {
    if (r == loss_reduction::eq5) return tokens > 0 ? 1.0 / static_cast<double>(tokens) : 0.0;
    if (r == loss_reduction::slot_mean) return slots > 0 ? 1.0 / static_cast<double>(slots) : 0.0;
    return 1.0;
}

/// A template (with nothing to deduce) so that every translation unit including this header may
/// define it: template kernels are weak symbols, host stub and device code alike, with and
/// without -rdc, where a plain `__global__` definition in a header is a duplicate symbol at
/// link time (tests/cuda/two_tu_a.cu).
template <class = void>
__global__ void loss_init_kernel(loss_state* st) {
    st->value = 0.0;
    st->active_slots = 0;
    st->active_tokens = 0;
    st->error = ~0ull;
}

/// Active slots and tokens (integer atomics: exact, so deterministic).
/// A template so that it may be defined in every translation unit (see loss_init_kernel).
template <class = void>
__global__ void __launch_bounds__(loss_threads)
loss_count_kernel(const std::uint8_t* __restrict__ mask, std::int64_t T, std::int64_t K, loss_state* st) {
    unsigned long long slots = 0, tokens = 0;
    for (std::int64_t t = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; t < T;
         t += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
        std::int64_t n = 0;
        for (std::int64_t k = 0; k < K; ++k) n += (mask == nullptr || mask[t * K + k] != 0) ? 1 : 0;
        slots += static_cast<unsigned long long>(n);
        tokens += n > 0 ? 1u : 0u;
    }
    for (int o = 16; o > 0; o >>= 1) {
        slots += __shfl_xor_sync(0xFFFFFFFFu, slots, o);
        tokens += __shfl_xor_sync(0xFFFFFFFFu, tokens, o);
    }
    if ((threadIdx.x & 31u) == 0 && (slots | tokens) != 0) {
        atomicAdd(&st->active_slots, slots);
        atomicAdd(&st->active_tokens, tokens);
    }
}

/// Compact targets: the active slots of each token (scanned into each token's first row).
/// A template so that it may be defined in every translation unit (see loss_init_kernel).
template <class = void>
__global__ void __launch_bounds__(loss_threads)
token_counts_kernel(const std::uint8_t* __restrict__ mask, std::int64_t T, std::int64_t K, std::int64_t* __restrict__ counts) {
    for (std::int64_t t = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; t < T;
         t += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
        std::int64_t n = 0;
        for (std::int64_t k = 0; k < K; ++k) n += (mask == nullptr || mask[t * K + k] != 0) ? 1 : 0;
        counts[t] = n;
    }
}

/// Where a slot's compact row is: row r = first_row[t] + the active heads of token t before k,
/// which must be the row listing slot s = t·K + k (rows = the active slots in flat order).
struct compact_rows {
    const std::int64_t* first_row = nullptr;  ///< [T]: exclusive scan of the active slots per token
    const std::int64_t* slot_of_row = nullptr;  ///< [rows]: the caller's slot index of each row
    std::int64_t rows = 0;
};

/// One warp per slot (grid-stride over warps). Dense targets: slot s reads targets[s]; compact
/// (compact.first_row non-null): its row r (compact_rows), after checking that the row lists s.
template <class L, class P, class Y>
__global__ void __launch_bounds__(loss_threads)
slot_loss_kernel(const L* __restrict__ logits, const P* __restrict__ targets, compact_rows compact,
                 const Y* __restrict__ ybytes, const std::uint8_t* __restrict__ mask, std::int64_t slots, std::int64_t K,
                 math::slot_params prm, loss_reduction reduction, loss_state* st, L* grad, L* per_slot,
                 double* __restrict__ values) {
    constexpr int A = static_cast<int>(alphabet_size);
    const warp_lanes lanes;
    const int lane = lanes.lane();
    const double scale = reduction_scale(reduction, st->active_slots, st->active_tokens);
    const std::int64_t warps = static_cast<std::int64_t>(gridDim.x) * (blockDim.x / 32);
    for (std::int64_t s = blockIdx.x * static_cast<std::int64_t>(blockDim.x / 32) + threadIdx.x / 32; s < slots;
         s += warps) {
        L* g = grad != nullptr ? grad + s * A : nullptr;
        if (mask != nullptr && mask[s] == 0) {
            if (g != nullptr)
                for (int a = lane; a < A; a += 32) g[a] = L(0);
            if (lane == 0) {
                values[s] = 0.0;
                if (per_slot != nullptr) per_slot[s] = L(0);
            }
            continue;
        }
        // The CPU's order within a slot: the true byte, the compact row, the logits, the targets.
        int y = -1;
        if (prm.w_ce != 0.0) {
            const auto yb = static_cast<std::int64_t>(ybytes[s]);
            if (yb < 0 || yb >= A) {
                if (lane == 0) {
                    atomicMin(&st->error, slot_error_key(s, math::slot_status::bad_true_byte, 0));
                    values[s] = 0.0;
                }
                continue;
            }
            y = static_cast<int>(yb);
        }
        std::int64_t row = s;
        if (compact.first_row != nullptr) {
            const std::int64_t t = s / K;
            row = compact.first_row[t];
            for (std::int64_t k = t * K; k < s; ++k) row += (mask == nullptr || mask[k] != 0) ? 1 : 0;
            if (row >= compact.rows || compact.slot_of_row[row] != s) {
                if (lane == 0) {
                    atomicMin(&st->error, (static_cast<unsigned long long>(s) << 12) |
                                              (static_cast<unsigned long long>(compact_row_mismatch) << 9));
                    values[s] = 0.0;
                }
                continue;
            }
        }
        const P* p = targets != nullptr ? targets + row * A : nullptr;
        const math::slot_result r = math::slot_loss(lanes, logits + s * A, p, y, prm, scale, g);
        if (lane == 0) {
            if (r.status != math::slot_status::ok) {
                atomicMin(&st->error, slot_error_key(s, r.status, r.index));
                values[s] = 0.0;
            } else {
                values[s] = r.value;
                if (per_slot != nullptr) per_slot[s] = static_cast<L>(r.value);
            }
        }
    }
}

/// Σ values in a fixed order (strided per thread, then the block tree), scaled.
/// A template so that it may be defined in every translation unit (see loss_init_kernel).
template <class = void>
__global__ void __launch_bounds__(1024)
loss_reduce_kernel(const double* __restrict__ values, std::int64_t slots, loss_reduction reduction, loss_state* st) {
    using red_t = cub::BlockReduce<double, 1024>;
    __shared__ typename red_t::TempStorage tmp;
    double s = 0.0;
    for (std::int64_t i = threadIdx.x; i < slots; i += 1024) s += values[i];
    const double total = red_t(tmp).Sum(s);
    if (threadIdx.x == 0)
        st->value = reduction == loss_reduction::none
                        ? total
                        : total * reduction_scale(reduction, st->active_slots, st->active_tokens);
}

/// One device value, read back to the host (for an error message).
template <class T>
double read_one(const void* base, std::int64_t index, std::string_view op) {
    T v{};
    check(cudaMemcpy(&v, static_cast<const T*>(base) + index, sizeof(T), cudaMemcpyDeviceToHost), op,
          "cudaMemcpy of the offending value");
    if constexpr (std::is_same_v<T, bf16>) return static_cast<double>(static_cast<float>(v));
    else return static_cast<double>(v);
}

inline double read_element(dtype type, const void* base, std::int64_t index, std::string_view op) {
    switch (type) {
        case dtype::f64: return read_one<double>(base, index, op);
        case dtype::bf16: return read_one<bf16>(base, index, op);
        case dtype::i32: return read_one<std::int32_t>(base, index, op);
        case dtype::i64: return read_one<std::int64_t>(base, index, op);
        case dtype::u8: case dtype::boolean: return read_one<std::uint8_t>(base, index, op);
        default: return read_one<float>(base, index, op);
    }
}

class loss_launcher;

}  // namespace detail

/// A loss launched on a stream: its scalars live in device memory until get().
/// Move-only; its buffers are freed on the stream it ran on.
class pending_loss {
public:
    pending_loss() = default;

    /// The reduced loss in device memory (valid once the stream reaches this point).
    [[nodiscard]] const double* value_device() const noexcept {
        return state_.data() != nullptr ? &state_.data()->value : nullptr;
    }

    /// Synchronises the stream; returns the result, or throws what the CPU call would have
    /// thrown (value_error naming token, head and byte for the first bad slot, or the compact
    /// row list's first fault), or cuda_error.
    [[nodiscard]] byte_loss_result get() const {
        if (state_.data() == nullptr) return {};
        const device_scope on(device_, call_.op);
        loss_state st{};
        check(cudaMemcpyAsync(&st, state_.data(), sizeof st, cudaMemcpyDeviceToHost, stream_), call_.op,
              "cudaMemcpyAsync of the loss state");
        check(cudaStreamSynchronize(stream_), call_.op, "cudaStreamSynchronize");
        if (call_.compact) throw_row_count(st);
        if (st.error != ~0ull) throw_slot_error(st.error);
        byte_loss_result r;
        r.value = st.value;
        r.active_slots = static_cast<std::int64_t>(st.active_slots);
        r.active_tokens = static_cast<std::int64_t>(st.active_tokens);
        return r;
    }

private:
    friend class detail::loss_launcher;

    /// Compact targets: one row per active slot, or the CPU's shape_error.
    void throw_row_count(const loss_state& st) const {
        if (static_cast<std::int64_t>(st.active_slots) != call_.target_rows)
            throw shape_error(std::string(call_.op), "argument `targets`",
                              "compact targets hold " + std::to_string(call_.target_rows) + " rows, but the mask has " +
                                  std::to_string(st.active_slots) + " active slots (one row per active slot)");
    }

    /// The compact row of active slot s (as the kernel found it).
    [[nodiscard]] std::int64_t compact_row(std::int64_t s) const {
        const std::string_view op = call_.op;
        const std::int64_t t = s / call_.K;
        auto row = static_cast<std::int64_t>(detail::read_element(dtype::i64, first_row_.data(), t, op));
        for (std::int64_t k = t * call_.K; k < s; ++k)
            row += call_.mask.data == nullptr || detail::read_element(dtype::u8, call_.mask.data, k, op) != 0 ? 1 : 0;
        return row;
    }

    [[noreturn]] void throw_slot_error(unsigned long long key) const {
        const std::string op(call_.op);
        const auto slot = static_cast<std::int64_t>(key >> 12);
        const auto raw_code = static_cast<unsigned>((key >> 9) & 7u);
        const auto code = static_cast<math::slot_status>(raw_code);
        const int entry = static_cast<int>(key & 511u);
        const std::string where = bld::detail::slot_name(slot / call_.K, slot % call_.K);
        constexpr auto A = static_cast<std::int64_t>(alphabet_size);
        if (raw_code == detail::compact_row_mismatch) {
            const std::int64_t row = compact_row(slot);
            const auto listed = static_cast<std::int64_t>(detail::read_element(dtype::i64, call_.target_slots.data, row, op));
            throw shape_error(op, "argument `targets`, row " + std::to_string(row),
                              "compact row " + std::to_string(row) + " is for slot " + std::to_string(listed) +
                                  ", but the " + std::to_string(row) + "-th active slot of the mask is " +
                                  std::to_string(slot) + " (" + where + "): rows must list the active slots in order");
        }
        if (code == math::slot_status::bad_true_byte) {
            const double y = detail::read_element(call_.true_bytes.type, call_.true_bytes.data, slot, op);
            throw value_error(op, where, "true byte " + std::to_string(static_cast<std::int64_t>(y)) + " is outside 0..259");
        }
        if (code == math::slot_status::nonfinite_logit) {
            const double v = detail::read_element(call_.logits.type, call_.logits.data, slot * A + entry, op);
            throw value_error(op, where + ", byte " + std::to_string(entry),
                              std::string("logit is ") + (std::isnan(v) ? "NaN" : v > 0 ? "+inf" : "-inf"));
        }
        const std::int64_t row = call_.compact ? compact_row(slot) : slot;
        const double v = detail::read_element(call_.targets.type, call_.targets.data, row * A + entry, op);
        throw value_error(op, where + ", byte " + std::to_string(entry),
                          "teacher probability " + std::to_string(v) + " is not finite and non-negative");
    }

    device_loss_call call_;
    int device_ = 0;
    cudaStream_t stream_ = nullptr;
    device_buffer<loss_state> state_;
    device_buffer<double> values_;
    device_buffer<std::int64_t> first_row_;  // compact: [T] each token's first row
    device_buffer<unsigned char> scan_tmp_;  // compact: the scan's temporary storage
};

namespace detail {

/// Launches a checked device_loss_call (bld/backends/device_loss.hpp) on its stream and device.
class loss_launcher {
public:
    /// @throws shape_error for a pointer that is not device memory of the call's device;
    ///         cuda_error for a failed allocation or launch.
    static pending_loss launch(const device_loss_call& c) {
        const device_scope on(c.device, c.op);
        const std::string_view op = c.op;
        const auto need = [&](const device_tensor& t, std::string_view name) {
            if (t.given && t.data != nullptr) require_device_pointer(t.data, op, name, c.device);
        };
        need(c.logits, "logits");
        need(c.targets, "targets");
        need(c.target_slots, "targets.slots");
        need(c.true_bytes, "true_bytes");
        need(c.mask, "mask");
        need(c.grad, "grad");
        need(c.per_slot, "per_slot");

        pending_loss out;
        out.call_ = c;
        out.device_ = c.device;
        out.stream_ = static_cast<cudaStream_t>(c.stream);
        const cudaStream_t stream = out.stream_;
        out.state_ = device_buffer<loss_state>(1, stream, op);
        loss_init_kernel<<<1, 1, 0, stream>>>(out.state_.data());
        check_launch(op, "loss_init_kernel");
        const std::int64_t slots = c.T * c.K;
        if (slots == 0) return out;  // compact: any row is one too many (get() counts)
        const auto* mask = static_cast<const std::uint8_t*>(c.mask.data);
        out.values_ = device_buffer<double>(static_cast<std::size_t>(slots), stream, op);
        loss_count_kernel<<<grid_for(static_cast<std::size_t>((c.T + 255) / 256), 1024u), loss_threads, 0, stream>>>(
            mask, c.T, c.K, out.state_.data());
        check_launch(op, "loss_count_kernel");
        if (c.compact) {
            // Each token's first row: the exclusive scan of the active slots per token.
            const auto T = static_cast<std::size_t>(c.T);
            device_buffer<std::int64_t> counts(T, stream, op);
            out.first_row_ = device_buffer<std::int64_t>(T, stream, op);
            token_counts_kernel<<<grid_for((T + loss_threads - 1) / loss_threads, 4096u), loss_threads, 0, stream>>>(
                mask, c.T, c.K, counts.data());
            check_launch(op, "token_counts_kernel");
            std::size_t tmp_bytes = 0;
            check(cub::DeviceScan::ExclusiveSum(nullptr, tmp_bytes, counts.data(), out.first_row_.data(), c.T, stream), op,
                  "cub::DeviceScan::ExclusiveSum (size)");
            out.scan_tmp_ = device_buffer<unsigned char>(tmp_bytes > 0 ? tmp_bytes : 1, stream, op);
            check(cub::DeviceScan::ExclusiveSum(out.scan_tmp_.data(), tmp_bytes, counts.data(), out.first_row_.data(), c.T,
                                                stream),
                  op, "cub::DeviceScan::ExclusiveSum");
        }  // counts is freed stream-ordered, after the scan
        if (c.logits.type == dtype::f64) with_targets<double>(c, out);
        else with_targets<float>(c, out);
        loss_reduce_kernel<<<1, 1024, 0, stream>>>(out.values_.data(), slots, c.reduction, out.state_.data());
        check_launch(op, "loss_reduce_kernel");
        return out;
    }

private:
    template <class L>
    static void with_targets(const device_loss_call& c, pending_loss& out) {
        if (c.targets.data == nullptr) return with_bytes<L, float>(c, out);  // not read
        switch (c.targets.type) {
            case dtype::f64: return with_bytes<L, double>(c, out);
            case dtype::bf16: return with_bytes<L, bf16>(c, out);
            default: return with_bytes<L, float>(c, out);
        }
    }

    template <class L, class P>
    static void with_bytes(const device_loss_call& c, pending_loss& out) {
        if (c.true_bytes.data != nullptr && c.true_bytes.type == dtype::i32) return run<L, P, std::int32_t>(c, out);
        return run<L, P, std::int64_t>(c, out);
    }

    template <class L, class P, class Y>
    static void run(const device_loss_call& c, pending_loss& out) {
        const std::int64_t slots = c.T * c.K;
        const std::size_t warps_per_block = loss_threads / 32;
        slot_loss_kernel<L, P, Y>
            <<<grid_for((static_cast<std::size_t>(slots) + warps_per_block - 1) / warps_per_block, 65535u), loss_threads, 0,
               out.stream_>>>(static_cast<const L*>(c.logits.data), static_cast<const P*>(c.targets.data),
                              compact_rows{out.first_row_.data(), static_cast<const std::int64_t*>(c.target_slots.data),
                                           c.target_rows},
                              static_cast<const Y*>(c.true_bytes.data), static_cast<const std::uint8_t*>(c.mask.data), slots,
                              c.K, c.prm, c.reduction,
                              out.state_.data(), static_cast<L*>(c.grad.data), static_cast<L*>(c.per_slot.data),
                              out.values_.data());
        check_launch(c.op, "slot_loss_kernel");
    }
};

/// The runner bld/backends/cuda/registration.cuh registers: launch, then wait for the value.
inline device_loss_totals run_device_loss(const device_loss_call& c) {
    const byte_loss_result r = loss_launcher::launch(c).get();
    return {r.value, r.active_slots, r.active_tokens};
}

/// A call of one of the bld::cuda losses, checked as on the CPU (the logits must be on a CUDA
/// device), on the thread's current stream.
template <class Logits, class Targets, class TrueBytes, class Mask, class Grad, class PerSlot>
pending_loss launch_entry(std::string_view op, const Logits& logits, const Targets& targets, const TrueBytes& true_bytes,
                          const Mask& mask, const math::slot_params& prm, loss_reduction reduction, Grad&& grad,
                          PerSlot&& per_slot) {
    const auto tk = bld::byte_head_shape(logits, op);
    device_loss_call c = bld::detail::make_device_loss_call(op, tk, logits, targets, true_bytes, mask, prm, reduction,
                                                            grad, per_slot);
    c.stream = bld::current_device_stream();
    return loss_launcher::launch(c);
}

/// As launch_entry, for a slot_targets_view (dense or compact), checked as bld::detail::targets_entry.
template <class Logits, class P, class Grad, class PerSlot>
pending_loss launch_targets_entry(std::string_view op, const Logits& logits, const slot_targets_view<P>& targets,
                                  const math::slot_params& prm, loss_reduction reduction, Grad&& grad, PerSlot&& per_slot) {
    const auto tk = bld::byte_head_shape(logits, op);
    targets.check(op);
    if (tk[0] != targets.tokens || tk[1] != targets.heads)
        throw shape_error(std::string(op), "argument `logits`",
                          "expected [" + std::to_string(targets.tokens) + ", " + std::to_string(targets.heads) +
                              ", 260] to match the targets' slots, got " + bld::detail::describe_tensor(logits) +
                              " (flatten [batch, positions, K, 260] logits to [batch * positions, K, 260])");
    device_loss_call c =
        bld::detail::make_device_targets_call(op, tk, logits, targets, prm, reduction, grad, per_slot);
    c.stream = bld::current_device_stream();
    return loss_launcher::launch(c);
}

}  // namespace detail

/// D(targets ‖ softmax(logits/τ)) per active slot, reduced — bld::byte_loss on CUDA tensors,
/// asynchronous: the same arguments and options as bld::byte_loss (every tensor on one CUDA
/// device), kernels queued on the thread's current stream (stream_scope).
/// @returns a pending_loss; get() waits and returns the byte_loss_result, or throws the CPU's
///          value_error for the first bad slot.
/// @throws now: as bld::byte_loss for bad options, shapes, dtypes, layouts; shape_error for a
///         tensor on another device or a view whose memory is not device memory; cuda_error.
inline constexpr struct byte_loss_fn {
    template <tensor_source Logits, tensor_source Targets, optional_tensor Mask, optional_tensor Grad = const no_tensor_t&,
              optional_tensor PerSlot = const no_tensor_t&>
    pending_loss operator()(const Logits& logits, const Targets& targets, const Mask& mask,
                            const byte_loss_options& options = {}, Grad&& grad = no_tensor,
                            PerSlot&& per_slot = no_tensor) const {
        constexpr std::string_view op = "bld::cuda::byte_loss";
        const math::slot_params prm = bld::detail::params_of(op, options);
        return detail::launch_entry(op, logits, targets, no_tensor, mask, prm, options.reduction, grad, per_slot);
    }
    /// The same on slot targets (dense or compact; float, bf16 or double values on the device).
    template <tensor_source Logits, target_type P, optional_tensor Grad = const no_tensor_t&,
              optional_tensor PerSlot = const no_tensor_t&>
    pending_loss operator()(const Logits& logits, const slot_targets_view<P>& targets, const byte_loss_options& options = {},
                            Grad&& grad = no_tensor, PerSlot&& per_slot = no_tensor) const {
        constexpr std::string_view op = "bld::cuda::byte_loss";
        const math::slot_params prm = bld::detail::params_of(op, options);
        return detail::launch_targets_entry(op, logits, targets, prm, options.reduction, grad, per_slot);
    }
} byte_loss{};

/// −log softmax(logits)_y on the true bytes (τ = 1), reduced — bld::byte_cross_entropy on CUDA
/// tensors, asynchronous (see byte_loss).
inline constexpr struct byte_cross_entropy_fn {
    template <tensor_source Logits, tensor_source TrueBytes, optional_tensor Mask,
              optional_tensor Grad = const no_tensor_t&, optional_tensor PerSlot = const no_tensor_t&>
    pending_loss operator()(const Logits& logits, const TrueBytes& true_bytes, const Mask& mask,
                            const byte_cross_entropy_options& options = {}, Grad&& grad = no_tensor,
                            PerSlot&& per_slot = no_tensor) const {
        constexpr std::string_view op = "bld::cuda::byte_cross_entropy";
        const math::slot_params prm{0.0, 1.0, divergence::forward_kl, 1.0, 0.0};
        return detail::launch_entry(op, logits, no_tensor, true_bytes, mask, prm, options.reduction, grad, per_slot);
    }
} byte_cross_entropy{};

/// λ_b · CE(true byte) + λ_KL · D(targets ‖ softmax(logits/τ)) per active slot, reduced —
/// bld::bld_loss on CUDA tensors, asynchronous (see byte_loss).
inline constexpr struct bld_loss_fn {
    template <tensor_source Logits, tensor_source Targets, tensor_source TrueBytes, optional_tensor Mask,
              optional_tensor Grad = const no_tensor_t&, optional_tensor PerSlot = const no_tensor_t&>
    pending_loss operator()(const Logits& logits, const Targets& targets, const TrueBytes& true_bytes, const Mask& mask,
                            const bld_loss_options& options = {}, Grad&& grad = no_tensor,
                            PerSlot&& per_slot = no_tensor) const {
        constexpr std::string_view op = "bld::cuda::bld_loss";
        const math::slot_params prm = bld::detail::params_of(op, options);
        return detail::launch_entry(op, logits, targets, true_bytes, mask, prm, options.reduction, grad, per_slot);
    }
    /// The same on slot targets (dense or compact; float, bf16 or double values on the device),
    /// whose mask and true bytes are the targets' own.
    template <tensor_source Logits, target_type P, optional_tensor Grad = const no_tensor_t&,
              optional_tensor PerSlot = const no_tensor_t&>
    pending_loss operator()(const Logits& logits, const slot_targets_view<P>& targets, const bld_loss_options& options = {},
                            Grad&& grad = no_tensor, PerSlot&& per_slot = no_tensor) const {
        constexpr std::string_view op = "bld::cuda::bld_loss";
        const math::slot_params prm = bld::detail::params_of(op, options);
        return detail::launch_targets_entry(op, logits, targets, prm, options.reduction, grad, per_slot);
    }
} bld_loss{};

}  // namespace bld::cuda
