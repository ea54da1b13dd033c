// bld/core/parallel.hpp — threads over rows and texts, with results that do not depend on them.
//
// docs/01_method.md ("The sorted trie"): "same inputs, same bits, whatever the thread count". bld splits work into
// items (a tile of rows, one text) whose results depend on the item alone, and hands each
// worker a contiguous range of items. No reduction crosses items, so every thread count gives
// the same bits. Errors: the exception of the lowest-numbered failing range is rethrown, after
// every worker has finished — the same error whatever the thread count.
#pragma once

#include <algorithm>
#include <cstddef>
#include <exception>
#include <thread>
#include <vector>

namespace bld {

/// How many threads a batch algorithm may use.
struct parallel_options {
    /// Worker threads: 1 runs on the calling thread, 0 means std::thread::hardware_concurrency().
    std::size_t threads = 1;
};

namespace detail {

[[nodiscard]] inline std::size_t worker_count(const parallel_options& p, std::size_t items) noexcept {
    std::size_t t = p.threads == 0 ? std::max<std::size_t>(1, std::thread::hardware_concurrency()) : p.threads;
    return std::max<std::size_t>(1, std::min(t, items));
}

} // namespace detail

/// Runs fn(begin, end, worker) for contiguous ranges covering [0, n), one per worker (worker 0
/// on the calling thread; at most p.threads workers, never more than n). Each item must be
/// processed the same way whichever range holds it — then results do not depend on the thread
/// count. Rethrows the first exception of the lowest-numbered worker that threw, after all join.
template <class F>
void parallel_for(std::size_t n, const parallel_options& p, F&& fn) {
    if (n == 0) return;
    const std::size_t workers = detail::worker_count(p, n);
    if (workers == 1) {
        fn(std::size_t{0}, n, std::size_t{0});
        return;
    }
    std::vector<std::exception_ptr> errors(workers);
    auto range = [&](std::size_t w) {
        const std::size_t b = n * w / workers, e = n * (w + 1) / workers;
        try {
            fn(b, e, w);
        } catch (...) {
            errors[w] = std::current_exception();
        }
    };
    {
        std::vector<std::jthread> pool;
        pool.reserve(workers - 1);
        for (std::size_t w = 1; w < workers; ++w) pool.emplace_back(range, w);
        range(0);
    } // joins
    for (auto& e : errors)
        if (e) std::rethrow_exception(e);
}

} // namespace bld
