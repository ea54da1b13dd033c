// bld/torch/teacher.hpp — a libtorch language model (any callable, on any device) as the
// teacher of the covering methods: bld::covering_beam, bld::repaired_path, bld::exact_covering.
//
//   bld::torch_causal_model lm([&](const at::Tensor& ids, const at::Tensor& lengths) {
//       return model->forward(ids, lengths);  // [B, T + 1, V]: row r = logits after r tokens
//   }, V, torch::kCUDA);
//   bld::model_teacher teacher(lm, /*max_batch=*/64);
//   auto d = bld::covering_beam(trie, teacher, text, {10, 0.01});   // teacher.cost(): rows, positions
//
// The callable receives `ids` [B, T] int64 on `device` (text token ids, right-padded with
// `pad_id`; T = the longest sequence) and `lengths` [B] int64 on the CPU, adds its own BOS or
// prompt, and returns logits [B, ≥ T + 1, ≥ V] (any floating dtype, any device) whose row r of
// sequence b is the next-token distribution after its first r tokens. bld reads rows 0..length
// of each sequence, the first V logits of each (converted to float32 on the CPU). Called without
// autograd (no graph is kept). bld::model_teacher (bld/projection/model_teacher.hpp) forwards only
// the contexts that are no prefix of another and counts what the texts cost.
//
// Needs libtorch (the bld::torch CMake target). Without it this header declares nothing.
#pragma once

#if __has_include(<torch/types.h>)

#include "bld/adapters/torch.hpp"
#include "bld/core/error.hpp"
#include "bld/projection/model_teacher.hpp"

#include <torch/types.h>
#include <ATen/core/grad_mode.h>

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace bld {

/// A libtorch callable as a bld::causal_model (see the header comment).
class torch_causal_model {
public:
    using function = std::function<at::Tensor(const at::Tensor& ids, const at::Tensor& lengths)>;

    /// @param row_size V, the logits bld reads per row (the teacher's vocabulary, or more)
    torch_causal_model(function fn, std::size_t row_size, at::Device device = at::kCPU, std::int64_t pad_id = 0)
        : fn_(std::move(fn)), row_size_(row_size), device_(device), pad_id_(pad_id) {
        if (!fn_) throw value_error("torch causal model", "function", "empty");
        if (row_size == 0) throw value_error("torch causal model", "row_size", "must be at least 1");
    }

    [[nodiscard]] std::size_t row_size() const noexcept { return row_size_; }

    void forward(const std::vector<std::vector<std::int32_t>>& seqs, std::vector<float>& out) const {
        const char* op = "torch causal model";
        const auto B = static_cast<std::int64_t>(seqs.size());
        std::int64_t T = 0, rows = 0;
        for (const auto& s : seqs) {
            T = std::max<std::int64_t>(T, static_cast<std::int64_t>(s.size()));
            rows += static_cast<std::int64_t>(s.size()) + 1;
        }
        auto ids = at::full({B, T}, pad_id_, at::TensorOptions().dtype(at::kLong));
        auto lengths = at::empty({B}, at::TensorOptions().dtype(at::kLong));
        auto* id = ids.data_ptr<std::int64_t>();
        auto* len = lengths.data_ptr<std::int64_t>();
        for (std::int64_t b = 0; b < B; ++b) {
            const auto& s = seqs[static_cast<std::size_t>(b)];
            for (std::size_t t = 0; t < s.size(); ++t) id[b * T + static_cast<std::int64_t>(t)] = s[t];
            len[b] = static_cast<std::int64_t>(s.size());
        }
        at::Tensor z;
        {
            at::NoGradGuard no_grad;
            z = fn_(ids.to(device_), lengths);
        }
        if (!z.defined() || z.dim() != 3 || z.size(0) != B || z.size(1) < T + 1 ||
            z.size(2) < static_cast<std::int64_t>(row_size_) || !at::isFloatingType(z.scalar_type()))
            throw shape_error(op, "model output",
                              "expected floating logits [" + std::to_string(B) + ", >= " + std::to_string(T + 1) + ", >= " +
                                  std::to_string(row_size_) + "] (one row per prefix), got " +
                                  (z.defined() ? describe(z) : std::string("an undefined tensor")));
        const auto V = static_cast<std::int64_t>(row_size_);
        const auto host = z.narrow(2, 0, V).to(at::kCPU, at::kFloat).contiguous();
        const float* src = host.data_ptr<float>();
        out.resize(static_cast<std::size_t>(rows * V));
        float* dst = out.data();
        for (std::int64_t b = 0; b < B; ++b) {
            const auto n = len[b] + 1;
            const float* from = src + b * host.size(1) * V;
            dst = std::copy(from, from + n * V, dst);
        }
    }

private:
    static std::string describe(const at::Tensor& z) {
        std::string s = "[";
        for (std::int64_t d = 0; d < z.dim(); ++d) s += (d ? ", " : "") + std::to_string(z.size(d));
        return s + "] " + std::string(c10::toString(z.scalar_type()));
    }

    function fn_;
    std::size_t row_size_;
    at::Device device_;
    std::int64_t pad_id_;
};

} // namespace bld

#endif
