// bld/torch/byte_head.hpp — the student's byte head as a libtorch module, for C++ trainers.
//
// docs/01_method.md ("The student side"): K (default 10) parallel linear layers hidden → 260, all reading the hidden
// state that predicts student token ℓ; head j predicts the j-th byte of that token. Stored as
// one weight [K, 260, hidden] and one bias [K, 260] so the K layers run as one matmul;
// `forward` maps [..., hidden] to [..., K, 260] logits — the `logits` of bld::byte_loss.
// Initialized like K torch::nn::Linear layers: weight and bias uniform in ±1/√hidden.
// bld_torch.ByteHead (Python) has the same parameters, shapes and initialization.
//
// Needs libtorch (the bld::torch CMake target, which adds libtorch's C++ API include
// directory). Without it this header declares nothing, so that it still compiles alone.
#pragma once

#if __has_include(<torch/nn/module.h>)

#include "bld/core/alphabet.hpp"
#include "bld/core/error.hpp"
#include "bld/loss/byte_loss.hpp"

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

namespace bld {

/// The byte head's implementation (use it through the `byte_head` holder).
class byte_head_impl : public torch::nn::Module {
    static constexpr auto A = static_cast<std::int64_t>(alphabet_size);  ///< outputs per head

public:
    /// @pre hidden_size ≥ 1, 1 ≤ k ≤ 260.
    /// @throws bld::value_error otherwise.
    explicit byte_head_impl(std::int64_t hidden_size, std::int64_t k = 10)
        : hidden_size_(hidden_size), k_(k) {
        if (hidden_size < 1) {
            throw value_error("bld::byte_head", "hidden_size",
                              "must be >= 1, got " + std::to_string(hidden_size));
        }
        if (k < 1 || k > max_byte_heads) {
            throw value_error("bld::byte_head", "k", "must be in 1..260, got " + std::to_string(k));
        }
        weight = register_parameter("weight", torch::empty({k, A, hidden_size}));
        bias = register_parameter("bias", torch::empty({k, A}));
        reset_parameters();
    }

    /// Uniform in ±1/√hidden, as torch::nn::Linear does for each of the K layers.
    void reset_parameters() {
        torch::NoGradGuard no_grad;
        const double bound = 1.0 / std::sqrt(static_cast<double>(hidden_size_));
        weight.uniform_(-bound, bound);
        bias.uniform_(-bound, bound);
    }

    /// [..., hidden] → [..., K, 260] logits.
    /// @throws bld::shape_error when the last dimension is not hidden_size.
    torch::Tensor forward(const torch::Tensor& hidden) {
        if (!hidden.defined() || hidden.dim() < 1 || hidden.size(-1) != hidden_size_) {
            throw shape_error("bld::byte_head::forward", "argument `hidden`",
                              "expected [..., " + std::to_string(hidden_size_) + "], got " +
                                  (hidden.defined() ? shape_string(hidden) : std::string("undefined")));
        }
        auto flat = torch::linear(hidden, weight.reshape({k_ * A, hidden_size_}), bias.reshape({k_ * A}));
        std::vector<std::int64_t> shape(hidden.sizes().begin(), hidden.sizes().end() - 1);
        shape.push_back(k_);
        shape.push_back(A);
        return flat.reshape(shape);
    }

    [[nodiscard]] std::int64_t hidden_size() const noexcept { return hidden_size_; }
    [[nodiscard]] std::int64_t heads() const noexcept { return k_; }

    torch::Tensor weight;  // [K, 260, hidden]
    torch::Tensor bias;    // [K, 260]

private:
    static std::string shape_string(const torch::Tensor& t) {
        std::string s = "[";
        for (std::int64_t d = 0; d < t.dim(); ++d) s += (d ? ", " : "") + std::to_string(t.size(d));
        return s + "]";
    }
    std::int64_t hidden_size_;
    std::int64_t k_;
};

/// The byte head module holder (shared ownership, like every torch::nn module):
/// `bld::byte_head head(4096, 10); auto logits = head(hidden);  // [..., 10, 260]`.
class byte_head : public torch::nn::ModuleHolder<byte_head_impl> {
public:
    using torch::nn::ModuleHolder<byte_head_impl>::ModuleHolder;
    using Impl = byte_head_impl;
};

}  // namespace bld

#endif  // __has_include(<torch/nn/module.h>)
