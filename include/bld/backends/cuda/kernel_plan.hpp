// bld/backends/cuda/kernel_plan.hpp — the CUDA kernels' launch shape and the tables they read,
// in plain C++ (no CUDA needed), so the CPU tests build them and replay the kernels' arithmetic
// on every machine. Internal to the CUDA backend (bld::cuda::detail): these are not formulas,
// they are how the kernels cut the work.
//
// Row pass (docs/01_method.md, "The sorted trie": a scatter is slow): a row's columns are cut into chunks of
// chunk_columns ids. Within a chunk the ids are stably sorted by root bin, once, on the host;
// the kernel stages a chunk of logits in shared memory, reads it back in that sorted order,
// and every bin becomes one contiguous segment — a segmented sum instead of a scatter, with no
// atomics, so the result is deterministic. Absent ids and the padding past the vocabulary sort
// last with ignored_key.
#pragma once

#include "bld/backends/reference/row_pass.hpp"
#include "bld/core/alphabet.hpp"
#include "bld/core/error.hpp"
#include "bld/math/elementary.hpp"

#include <algorithm>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace bld::cuda::detail {

/// Threads per block of the row-pass and node-sum kernels.
inline constexpr int block_threads = 256;
/// Consecutive sorted positions each thread handles per chunk.
inline constexpr int thread_items = 8;
/// Columns of a row handled per chunk (block_threads × thread_items).
inline constexpr int chunk_columns = block_threads * thread_items;
/// The key of entries that belong to no bin (absent ids, padding past the vocabulary).
inline constexpr std::uint32_t ignored_key = 0xFFFFu;
/// A key no real entry has: the identity of the keyed scan.
inline constexpr std::uint32_t no_key = 0xFFFFFFFFu;

// ------------------------------------------------------------------------------------------
// Keyed runs: a thread's consecutive sorted items, cut where the key changes, for a block scan.
//
// A block of threads owns consecutive positions of a sorted sequence (thread t: positions
// t·ITEMS … t·ITEMS + ITEMS − 1), each with a key (bin, child) that never decreases. The sum of
// each key's segment must land in acc[key] exactly once, in a fixed order (deterministic):
//  1. each thread cuts its items into runs (thread_runs); runs that start and end inside the
//     thread are complete and flushed at once;
//  2. an exclusive block scan of the threads' trailing runs with keyed_sum_op gives each thread
//     the sum of its first run's part in earlier threads (the carry);
//  3. finish_runs flushes the first run (with the carry) and the trailing run when the next
//     thread's first key differs — so each segment has one writer: the thread where it ends.

/// A running sum of one key's segment.
struct keyed_sum {
    std::uint32_t key = no_key;
    double sum = 0.0;
};

/// The scan operator: a run continues when the keys match. Associative on non-decreasing keys;
/// {no_key, 0} is its left identity (the scan's initial value).
struct keyed_sum_op {
    BLD_HOST_DEVICE keyed_sum operator()(const keyed_sum& a, const keyed_sum& b) const noexcept {
        return b.key == a.key ? keyed_sum{b.key, a.sum + b.sum} : b;
    }
};

/// A thread's runs after step 1.
struct thread_run_state {
    std::uint32_t first_key = no_key;
    double first_sum = 0.0;  ///< the first run (without carry)
    bool several = false;    ///< true when the items hold more than one run
    keyed_sum last;          ///< the trailing run: the thread's scan input
};

/// Step 1: cuts ITEMS (key, value) items into runs; flush(key, sum) receives the complete runs
/// strictly inside the thread. Items with key ignored_key are flushed like the others: the
/// caller's flush skips them.
template <int Items, class Flush>
BLD_HOST_DEVICE thread_run_state thread_runs(const std::uint32_t (&key)[Items], const double (&x)[Items],
                                             Flush&& flush) {
    thread_run_state st;
    st.first_key = key[0];
    double run = 0.0;
    for (int i = 0; i < Items; ++i) {
        run += x[i];
        if (i + 1 < Items && key[i + 1] != key[i]) {
            if (!st.several) {
                st.first_sum = run;
                st.several = true;
            } else {
                flush(key[i], run);
            }
            run = 0.0;
        }
    }
    st.last = keyed_sum{key[Items - 1], run};
    if (!st.several) st.first_sum = run;
    return st;
}

/// Step 3: with the carry from the exclusive scan and the key of the next thread's first item
/// (no_key for the last thread), flushes the runs this thread ends.
template <class Flush>
BLD_HOST_DEVICE void finish_runs(const thread_run_state& st, const keyed_sum& carry, std::uint32_t next_key,
                                 Flush&& flush) {
    const double first = (carry.key == st.first_key ? carry.sum : 0.0) + st.first_sum;
    if (st.several) {
        flush(st.first_key, first);
        if (next_key != st.last.key) flush(st.last.key, st.last.sum);
    } else if (next_key != st.first_key) {
        flush(st.first_key, first);
    }
}

/// Keys of a node's sorted positions for the node-sum kernel. `bounds` has nc + 2 entries:
/// bounds[0] = lo, bounds[1 + c] = child c's lo, bounds[nc + 1] = hi; position k ∈ [lo, hi) has
/// key 0 in the end segment [lo, end_hi) and 1 + c in child c's range. A thread owns Items
/// consecutive positions from `first` (key ignored_key past hi); the return value is its
/// block_keyed_accumulate next key: its last key if the position after its items (in the same
/// tile: `last_in_tile` false) continues that segment, else no_key.
template <int Items>
BLD_HOST_DEVICE std::uint32_t node_thread_keys(const std::uint32_t* bounds, std::uint32_t nc, std::uint32_t first,
                                               bool last_in_tile, std::uint32_t (&key)[Items]) {
    const std::uint32_t hi = bounds[nc + 1];
    // The segment of `first`: the number of child starts bounds[1..nc] that are ≤ first.
    std::uint32_t lo_i = 0, hi_i = nc;
    while (lo_i < hi_i) {
        const std::uint32_t mid = (lo_i + hi_i) / 2;
        if (bounds[1 + mid] <= first) lo_i = mid + 1;
        else hi_i = mid;
    }
    std::uint32_t s = lo_i;
    for (int i = 0; i < Items; ++i) {
        const std::uint32_t k = first + static_cast<std::uint32_t>(i);
        if (k < hi) {
            while (s < nc && bounds[s + 1] <= k) ++s;
            key[i] = s;
        } else {
            key[i] = ignored_key;
        }
    }
    const std::uint32_t p = first + static_cast<std::uint32_t>(Items);
    const std::uint32_t last = key[Items - 1];
    const bool same = !last_in_tile && last != ignored_key && p < hi && p < bounds[last + 1];
    return same ? last : no_key;
}

/// Row-plan entries: a chunk's column (0..chunk_columns) in the low 16 bits, the root bin
/// (0..256, or ignored_key) in the high 16.
BLD_HOST_DEVICE inline std::uint32_t plan_entry(std::uint32_t local_column, std::uint32_t bin) noexcept {
    return local_column | (bin << 16);
}
BLD_HOST_DEVICE inline std::uint32_t entry_column(std::uint32_t e) noexcept { return e & 0xFFFFu; }
BLD_HOST_DEVICE inline std::uint32_t entry_bin(std::uint32_t e) noexcept { return e >> 16; }

/// The chunked sort plan of the row pass for one column layout.
struct row_pass_plan {
    std::uint32_t columns = 0;  ///< V: the columns with a bin (the row's first V columns)
    std::uint32_t chunks = 0;   ///< ⌈V / chunk_columns⌉
    /// [chunks × chunk_columns]: sorted position → plan_entry(local column, bin).
    std::vector<std::uint32_t> entries;

    /// The plan for rows whose column c has root bin `bins[c]` (root_bins(trie) for rows in
    /// token-id order; ignored_bin for absent ids).
    /// @throws value_error for a bin outside 0..256 that is not ignored_bin, or more than
    ///         2³² − chunk_columns columns.
    [[nodiscard]] static row_pass_plan build(std::span<const std::uint16_t> bins) {
        constexpr std::uint32_t C = chunk_columns;
        if (bins.size() > 0xFFFFFFFFull - C)
            throw value_error("bld::row_pass_plan", "bins", "more columns than a 32-bit plan holds");
        row_pass_plan p;
        p.columns = static_cast<std::uint32_t>(bins.size());
        p.chunks = (p.columns + C - 1) / C;
        p.entries.resize(static_cast<std::size_t>(p.chunks) * C);
        for (std::uint32_t c = 0; c < p.chunks; ++c) {
            std::uint32_t* e = p.entries.data() + static_cast<std::size_t>(c) * C;
            for (std::uint32_t k = 0; k < C; ++k) {
                const std::size_t col = static_cast<std::size_t>(c) * C + k;
                std::uint32_t bin = ignored_key;
                if (col < bins.size() && bins[col] != ignored_bin) {
                    bin = bins[col];
                    if (bin >= static_cast<std::uint32_t>(root_bin_count))
                        throw value_error("bld::row_pass_plan", "column " + std::to_string(col),
                                          "root bin " + std::to_string(bin) + " is outside 0..256");
                }
                e[k] = plan_entry(k, bin);
            }
            // Stable by bin: within a bin, columns stay in id order.
            std::stable_sort(e, e + C, [](std::uint32_t a, std::uint32_t b) {
                return entry_bin(a) < entry_bin(b);
            });
        }
        return p;
    }
};

}  // namespace bld::cuda::detail
