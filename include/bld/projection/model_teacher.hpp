// bld/projection/model_teacher.hpp — a causal language model as the teacher of the covering
// methods (covering_beam, repaired_path, exact_covering).
//
// The covering methods ask for next-token rows in batches of token contexts. A causal model
// gives, in one forward pass over a sequence, the next-token logits after every prefix of it,
// so a context that is a prefix of another one asked in the same batch costs nothing extra:
// model_teacher forwards only the contexts that are no prefix of another, at most `max_batch`
// sequences a call, and reads every context's row from its longest forwarded extension. It
// counts what the texts cost: contexts asked, sequences forwarded, positions computed.
//
// The model is anything with
//     std::size_t row_size() const;                  // logits per row (≥ the vocabulary)
//     void forward(const std::vector<std::vector<std::int32_t>>& sequences, std::vector<float>& out);
// where forward writes, for each sequence s (text token ids; the model adds its own BOS or
// prompt) in order, |s| + 1 rows of row_size() logits: row r = the next-token logits given
// s[0..r). bld/torch/teacher.hpp adapts a libtorch callable to it; the Python module a
// PyTorch one.
#pragma once

#include "bld/core/error.hpp"

#include <algorithm>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <numeric>
#include <string>
#include <vector>

namespace bld {

/// A causal language model (see the header comment).
template <class M>
concept causal_model = requires(M& m, const std::vector<std::vector<std::int32_t>>& seqs, std::vector<float>& out) {
    { m.row_size() } -> std::convertible_to<std::size_t>;
    m.forward(seqs, out);
};

/// What a model_teacher has cost so far.
struct teacher_cost {
    std::size_t calls = 0;      ///< logits() calls (one per byte of a beam, at most)
    std::size_t contexts = 0;   ///< contexts asked for (the rows the covering methods read)
    std::size_t sequences = 0;  ///< sequences forwarded (contexts that are no prefix of another)
    std::size_t positions = 0;  ///< model positions computed: Σ (|sequence| + 1)
    std::size_t batches = 0;    ///< forward() calls
};

/// A causal model as a teacher_model (bld/projection/covering.hpp).
template <causal_model M>
class model_teacher {
public:
    /// @param max_batch at most this many sequences per forward() call (≥ 1)
    explicit model_teacher(M& model, std::size_t max_batch = 64) : model_(&model), max_batch_(max_batch) {
        if (max_batch == 0) throw value_error("model teacher", "max_batch", "must be at least 1");
    }

    [[nodiscard]] std::size_t row_size() const { return static_cast<std::size_t>(model_->row_size()); }

    /// One row of logits per context, in order, into `out` (contexts × row_size()).
    void logits(const std::vector<std::vector<std::int32_t>>& contexts, std::vector<float>& out) {
        const std::size_t n = row_size();
        out.resize(contexts.size() * n);
        ++cost_.calls;
        cost_.contexts += contexts.size();
        if (contexts.empty()) return;
        // Lexicographic order puts a context right before the contexts it is a prefix of; a
        // context is forwarded unless it is a prefix of its successor, and is read from the first
        // forwarded context after it (which it is a prefix of).
        std::vector<std::size_t> order(contexts.size());
        std::iota(order.begin(), order.end(), std::size_t{0});
        std::stable_sort(order.begin(), order.end(),
                         [&](std::size_t a, std::size_t b) { return contexts[a] < contexts[b]; });
        const auto is_prefix = [](const std::vector<std::int32_t>& p, const std::vector<std::int32_t>& q) {
            return p.size() <= q.size() && std::equal(p.begin(), p.end(), q.begin());
        };
        std::vector<std::size_t> forwarded;            // indices into contexts, in sorted order
        std::vector<std::size_t> source(contexts.size());  // context → the forwarded sequence it reads
        for (std::size_t r = order.size(); r-- > 0;) {
            const auto c = order[r];
            if (r + 1 < order.size() && is_prefix(contexts[c], contexts[order[r + 1]])) {
                source[c] = source[order[r + 1]];
            } else {
                source[c] = forwarded.size();
                forwarded.push_back(c);
            }
        }
        // Forward the sequences in batches; keep each one's first row offset.
        std::vector<std::size_t> first(forwarded.size());
        std::vector<float> rows, buf;
        std::size_t total = 0;
        for (std::size_t s = 0; s < forwarded.size(); ++s) total += contexts[forwarded[s]].size() + 1;
        rows.resize(total * n);
        std::size_t at = 0;
        for (std::size_t b = 0; b < forwarded.size(); b += max_batch_) {
            const std::size_t e = std::min(forwarded.size(), b + max_batch_);
            std::vector<std::vector<std::int32_t>> batch;
            std::size_t want = 0;
            for (std::size_t s = b; s < e; ++s) {
                batch.push_back(contexts[forwarded[s]]);
                want += batch.back().size() + 1;
            }
            model_->forward(batch, buf);
            if (buf.size() != want * n)
                throw shape_error("model teacher", "forward output",
                                  "the model wrote " + std::to_string(buf.size()) + " logits for " +
                                      std::to_string(batch.size()) + " sequences needing " + std::to_string(want) +
                                      " rows of " + std::to_string(n) + " (one row per prefix: |sequence| + 1 each)");
            std::copy(buf.begin(), buf.end(), rows.begin() + static_cast<std::ptrdiff_t>(at * n));
            for (std::size_t s = b; s < e; ++s) {
                first[s] = at;
                at += contexts[forwarded[s]].size() + 1;
            }
            ++cost_.batches;
        }
        cost_.sequences += forwarded.size();
        cost_.positions += total;
        for (std::size_t c = 0; c < contexts.size(); ++c) {
            const float* src = rows.data() + (first[source[c]] + contexts[c].size()) * n;
            std::copy(src, src + n, out.data() + c * n);
        }
    }

    [[nodiscard]] const teacher_cost& cost() const noexcept { return cost_; }
    void reset_cost() noexcept { cost_ = {}; }

private:
    M* model_;
    std::size_t max_batch_;
    teacher_cost cost_;
};

} // namespace bld
