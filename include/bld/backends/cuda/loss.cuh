// bld/backends/cuda/loss.cuh — the byte losses (bld/loss/byte_loss.hpp) forward + backward on the GPU.
//
// One warp per slot: the 260 logits of a slot are spread over the 32 lanes (9 per lane) and
// math::slot_loss — the same function the CPU tests run with host_lanes — computes the value
// and the gradient in one fused pass, in fp64 whatever the input type. Three kernels, all on
// the caller's stream: count the active slots and tokens (for the eq5 / slot_mean scales),
// the slots (values, gradients, per-slot outputs), and a one-block reduction of the per-slot
// values in a fixed order (deterministic). Conventions, shapes and reductions are bld/loss/byte_loss.hpp's.
//
// Tolerance against the CPU (tests/cuda/test_cuda_main.cpp): 1e-12 relative on values and
// gradients (fp64 throughout; only the summation order differs).
//
// Errors the CPU throws per slot (NaN/±inf logit, bad teacher probability, true byte outside
// 0..259) are recorded on the device as the first bad slot; pending_loss::get() synchronises and
// throws the same value_error. Outputs are unspecified after such an error (as on the CPU).
#pragma once

#include "bld/backends/cuda/block_ops.cuh"
#include "bld/backends/cuda/error.cuh"
#include "bld/loss/byte_loss.hpp"
#include "bld/math/slot_loss.hpp"
#include "bld/core/tensor.hpp"

#include <cub/block/block_reduce.cuh>
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

/// Loss element types on the GPU (as on the CPU: float32 or float64).
template <class T>
concept device_loss_type = std::same_as<std::remove_cv_t<T>, float> || std::same_as<std::remove_cv_t<T>, double>;
/// True-byte element types.
template <class T>
concept device_byte_type = std::same_as<std::remove_cv_t<T>, std::int32_t> || std::same_as<std::remove_cv_t<T>, std::int64_t>;

namespace detail {

inline constexpr int loss_threads = 256;

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

/// One warp per slot (grid-stride over warps).
template <class L, class P, class Y>
__global__ void __launch_bounds__(loss_threads)
slot_loss_kernel(const L* __restrict__ logits, const P* __restrict__ targets, const Y* __restrict__ ybytes,
                 const std::uint8_t* __restrict__ mask, std::int64_t slots, math::slot_params prm,
                 loss_reduction reduction, loss_state* st, L* grad, L* per_slot, double* __restrict__ values) {
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
        const math::slot_result r =
            math::slot_loss(lanes, logits + s * A, targets != nullptr ? targets + s * A : nullptr, y, prm, scale, g);
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

template <class T, std::size_t Rank>
bool present(const tensor_view<T, Rank>& v) noexcept {
    return v.data() != nullptr;
}

template <class T, std::size_t Rank>
void require_extents(const tensor_view<T, Rank>& v, const std::array<std::int64_t, Rank>& want, std::string_view op,
                     std::string_view argument) {
    require_cuda_view(v, op, argument);
    if (v.extents() != want) {
        throw shape_error(std::string(op), "argument `" + std::string(argument) + "`",
                          "expected extents " + bld::detail::format_extents(want) + ", got " +
                              bld::detail::format_extents(v.extents()));
    }
}

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
    /// thrown for the first bad slot (value_error naming token, head and byte), or cuda_error.
    [[nodiscard]] byte_loss_result get() const {
        loss_state st{};
        if (state_.data() == nullptr) return {};
        check(cudaMemcpyAsync(&st, state_.data(), sizeof st, cudaMemcpyDeviceToHost, stream_), op_,
              "cudaMemcpyAsync of the loss state");
        check(cudaStreamSynchronize(stream_), op_, "cudaStreamSynchronize");
        if (st.error != ~0ull) throw_slot_error(st.error);
        byte_loss_result r;
        r.value = st.value;
        r.active_slots = static_cast<std::int64_t>(st.active_slots);
        r.active_tokens = static_cast<std::int64_t>(st.active_tokens);
        return r;
    }

private:
    template <device_loss_type L, device_loss_type P, device_byte_type Y>
    friend pending_loss launch_slot_loss(std::string_view, tensor_view<const L, 3>, tensor_view<const P, 3>,
                                         tensor_view<const Y, 2>, tensor_view<const std::uint8_t, 2>,
                                         const math::slot_params&, loss_reduction, tensor_view<L, 3>,
                                         tensor_view<L, 2>, cudaStream_t);

    template <class T>
    double read_one(const void* base, std::int64_t index) const {
        T v{};
        check(cudaMemcpy(&v, static_cast<const T*>(base) + index, sizeof(T), cudaMemcpyDeviceToHost), op_,
              "cudaMemcpy of the offending value");
        return static_cast<double>(v);
    }

    [[noreturn]] void throw_slot_error(unsigned long long key) const {
        const auto slot = static_cast<std::int64_t>(key >> 12);
        const auto code = static_cast<math::slot_status>((key >> 9) & 7u);
        const int entry = static_cast<int>(key & 511u);
        const std::string where = bld::detail::slot_name(slot / K_, slot % K_);
        if (code == math::slot_status::bad_true_byte) {
            const double y = y64_ ? read_one<std::int64_t>(y_, slot) : read_one<std::int32_t>(y_, slot);
            throw value_error(op_, where, "true byte " + std::to_string(static_cast<std::int64_t>(y)) + " is outside 0..259");
        }
        const std::int64_t at = slot * static_cast<int>(alphabet_size) + entry;
        if (code == math::slot_status::nonfinite_logit) {
            const double v = l64_ ? read_one<double>(logits_, at) : read_one<float>(logits_, at);
            throw value_error(op_, where + ", byte " + std::to_string(entry),
                              std::string("logit is ") + (std::isnan(v) ? "NaN" : v > 0 ? "+inf" : "-inf"));
        }
        const double v = p64_ ? read_one<double>(targets_, at) : read_one<float>(targets_, at);
        throw value_error(op_, where + ", byte " + std::to_string(entry),
                          "teacher probability " + std::to_string(v) + " is not finite and non-negative");
    }

    std::string op_;
    cudaStream_t stream_ = nullptr;
    device_buffer<loss_state> state_;
    device_buffer<double> values_;
    std::int64_t K_ = 1;
    const void* logits_ = nullptr;
    const void* targets_ = nullptr;
    const void* y_ = nullptr;
    bool l64_ = false, p64_ = false, y64_ = false;
};

/// The common launcher (what byte_loss, byte_cross_entropy and bld_loss call); targets or
/// true_bytes may be empty views when their weight is 0.
template <device_loss_type L, device_loss_type P, device_byte_type Y>
pending_loss launch_slot_loss(std::string_view op, tensor_view<const L, 3> logits, tensor_view<const P, 3> targets,
                              tensor_view<const Y, 2> true_bytes, tensor_view<const std::uint8_t, 2> mask,
                              const math::slot_params& prm, loss_reduction reduction, tensor_view<L, 3> grad,
                              tensor_view<L, 2> per_slot, cudaStream_t stream) {
    detail::require_cuda_view(logits, op, "logits");
    const std::int64_t T = logits.extent(0), K = logits.extent(1);
    if (logits.extent(2) != static_cast<int>(alphabet_size) || K < 1 || K > max_byte_heads)
        throw shape_error(std::string(op), "argument `logits`",
                          "expected [T, K, 260] byte-head logits with 1 <= K <= 260, got [" +
                              std::to_string(T) + ", " + std::to_string(K) + ", " + std::to_string(logits.extent(2)) + "]");
    const std::array<std::int64_t, 3> tka{T, K, static_cast<int>(alphabet_size)};
    const std::array<std::int64_t, 2> tk{T, K};
    if (prm.w_div != 0.0) detail::require_extents(targets, tka, op, "targets");
    if (prm.w_ce != 0.0) detail::require_extents(true_bytes, tk, op, "true_bytes");
    if (detail::present(mask)) detail::require_extents(mask, tk, op, "mask");
    if (detail::present(grad)) detail::require_extents(grad, tka, op, "grad");
    if (detail::present(per_slot)) detail::require_extents(per_slot, tk, op, "per_slot");

    pending_loss out;
    out.op_ = std::string(op);
    out.stream_ = stream;
    out.K_ = K;
    out.logits_ = logits.data();
    out.targets_ = targets.data();
    out.y_ = true_bytes.data();
    out.l64_ = std::is_same_v<L, double>;
    out.p64_ = std::is_same_v<P, double>;
    out.y64_ = std::is_same_v<Y, std::int64_t>;
    out.state_ = device_buffer<loss_state>(1, stream, op);
    detail::loss_init_kernel<<<1, 1, 0, stream>>>(out.state_.data());
    check_launch(op, "loss_init_kernel");
    const std::int64_t slots = T * K;
    if (slots == 0) return out;
    out.values_ = device_buffer<double>(static_cast<std::size_t>(slots), stream, op);
    detail::loss_count_kernel<<<detail::grid_for(static_cast<std::size_t>((T + 255) / 256), 1024u), detail::loss_threads, 0,
                                stream>>>(mask.data(), T, K, out.state_.data());
    check_launch(op, "loss_count_kernel");
    const std::size_t warps_per_block = detail::loss_threads / 32;
    detail::slot_loss_kernel<L, P, Y>
        <<<detail::grid_for((static_cast<std::size_t>(slots) + warps_per_block - 1) / warps_per_block, 65535u),
           detail::loss_threads, 0, stream>>>(logits.data(), prm.w_div != 0.0 ? targets.data() : nullptr,
                                              true_bytes.data(), mask.data(), slots, prm, reduction, out.state_.data(),
                                              grad.data(), per_slot.data(), out.values_.data());
    check_launch(op, "slot_loss_kernel");
    detail::loss_reduce_kernel<<<1, 1024, 0, stream>>>(out.values_.data(), slots, reduction, out.state_.data());
    check_launch(op, "loss_reduce_kernel");
    return out;
}

/// λ_b · CE(true byte) + λ_KL · D(targets ‖ softmax(logits/τ)) per active slot, reduced — the
/// GPU bld_loss. All views on the GPU: logits [T, K, 260] float/double, targets [T, K, 260],
/// true_bytes [T, K] int32/int64, mask [T, K] uint8 (empty view: all active), grad [T, K, 260]
/// and per_slot [T, K] with the logits' type (empty views: not written).
/// @returns a pending_loss (get() synchronises and throws per-slot errors).
/// @throws now: value_error for bad options, shape_error for bad views, cuda_error.
template <device_loss_type L, device_loss_type P, device_byte_type Y>
pending_loss bld_loss(tensor_view<const L, 3> logits, tensor_view<const P, 3> targets, tensor_view<const Y, 2> true_bytes,
                      tensor_view<const std::uint8_t, 2> mask, const bld_loss_options& options,
                      tensor_view<L, 3> grad, tensor_view<L, 2> per_slot, cudaStream_t stream) {
    constexpr std::string_view op = "bld::cuda::bld_loss";
    bld::detail::check_weight(op, "lambda_byte", options.lambda_byte);
    bld::detail::check_weight(op, "lambda_kl", options.lambda_kl);
    bld::detail::check_temperature(op, options.temperature);
    bld::detail::check_floor(op, options.target_floor);
    const math::slot_params prm{options.lambda_kl, options.lambda_byte, options.kind, 1.0 / options.temperature,
                                std::log(options.target_floor)};
    return launch_slot_loss<L, P, Y>(op, logits, targets, true_bytes, mask, prm, options.reduction, grad, per_slot, stream);
}

/// D(targets ‖ softmax(logits/τ)) per active slot, reduced — the GPU byte_loss.
template <device_loss_type L, device_loss_type P>
pending_loss byte_loss(tensor_view<const L, 3> logits, tensor_view<const P, 3> targets,
                       tensor_view<const std::uint8_t, 2> mask, const byte_loss_options& options, tensor_view<L, 3> grad,
                       tensor_view<L, 2> per_slot, cudaStream_t stream) {
    constexpr std::string_view op = "bld::cuda::byte_loss";
    bld::detail::check_temperature(op, options.temperature);
    bld::detail::check_floor(op, options.target_floor);
    const math::slot_params prm{1.0, 0.0, options.kind, 1.0 / options.temperature, std::log(options.target_floor)};
    return launch_slot_loss<L, P, std::int64_t>(op, logits, targets, {}, mask, prm, options.reduction, grad, per_slot,
                                                stream);
}

/// −log softmax(logits)_y on the true bytes (τ = 1), reduced — the GPU byte_cross_entropy.
template <device_loss_type L, device_byte_type Y>
pending_loss byte_cross_entropy(tensor_view<const L, 3> logits, tensor_view<const Y, 2> true_bytes,
                                tensor_view<const std::uint8_t, 2> mask, const byte_cross_entropy_options& options,
                                tensor_view<L, 3> grad, tensor_view<L, 2> per_slot, cudaStream_t stream) {
    constexpr std::string_view op = "bld::cuda::byte_cross_entropy";
    const math::slot_params prm{0.0, 1.0, divergence::forward_kl, 1.0, 0.0};
    return launch_slot_loss<L, double, Y>(op, logits, {}, true_bytes, mask, prm, options.reduction, grad, per_slot,
                                          stream);
}

}  // namespace bld::cuda
