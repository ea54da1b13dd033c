// bld/testing/toy_teachers.hpp — teachers for tests, examples and benchmarks (not for training).
#pragma once

#include "bld/core/error.hpp"
#include "bld/core/tensor.hpp"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

namespace bld::testing {

/// A toy teacher anyone can run: a bigram model given as a [vocab + 1, n] float matrix; row 0
/// holds the logits at the start of the text, row v + 1 the logits after token v.
/// logits() is const and may be called from several threads on one teacher.
class bigram_teacher {
public:
    bigram_teacher(tensor_view<const float, 2> table, std::size_t vocab_size) : table_(table) {
        if (static_cast<std::size_t>(table.extent(0)) != vocab_size + 1)
            throw shape_error("bigram teacher", "table",
                              "expected " + std::to_string(vocab_size + 1) + " rows (vocab size + 1), got " +
                                  std::to_string(table.extent(0)));
    }
    bigram_teacher(const bigram_teacher& o) noexcept : table_(o.table_), rows_served_(o.rows_served()) {}
    bigram_teacher& operator=(const bigram_teacher& o) noexcept {
        table_ = o.table_;
        rows_served_.store(o.rows_served(), std::memory_order_relaxed);
        return *this;
    }
    [[nodiscard]] std::size_t row_size() const noexcept { return static_cast<std::size_t>(table_.extent(1)); }
    [[nodiscard]] std::uint64_t context_key(const std::vector<std::int32_t>& ctx) const noexcept {
        return ctx.empty() ? 0 : static_cast<std::uint64_t>(ctx.back()) + 1;
    }
    void logits(const std::vector<std::vector<std::int32_t>>& contexts, std::vector<float>& out) const {
        const std::size_t n = row_size();
        out.resize(contexts.size() * n);
        for (std::size_t c = 0; c < contexts.size(); ++c) {
            const auto r = context_key(contexts[c]);
            const float* src = table_.data() + r * n;
            std::copy(src, src + n, out.data() + c * n);
        }
        // A counter, not an ordering: relaxed is enough for a total read after the threads join.
        rows_served_.fetch_add(contexts.size(), std::memory_order_relaxed);
    }
    /// Rows served so far (for overhead measurements), by all threads.
    [[nodiscard]] std::size_t rows_served() const noexcept { return rows_served_.load(std::memory_order_relaxed); }

private:
    tensor_view<const float, 2> table_;
    mutable std::atomic<std::size_t> rows_served_{0};
};

} // namespace bld::testing
