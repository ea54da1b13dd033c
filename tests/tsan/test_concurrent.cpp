// Concurrent projections sharing one trie and one set of teacher rows, for ThreadSanitizer:
// many threads project at once; every result must equal the single-threaded one bit for bit.
#include <bld/bld.hpp>
#include <bld/testing/toy_teachers.hpp>
#include <doctest/doctest.h>

#include <random>
#include <thread>
#include <vector>

TEST_CASE("concurrent projections over a shared trie are race-free and bit-identical") {
    std::vector<bld::token_entry> e{{0, {}, bld::token_kind::special, "<eos>"}};
    const char* toks[] = {"a", "b", "c", "ab", "abc", "bc", "ca", "cab", " a", " "};
    std::int64_t id = 1;
    for (const char* t : toks) e.push_back({id++, t, bld::token_kind::text, ""});
    const bld::byte_trie trie(bld::vocabulary::from_entries(std::move(e), "shared"));
    const std::int64_t V = id, n = V + 1;
    std::mt19937 rng(5);
    std::normal_distribution<float> g(0.f, 2.f);
    std::vector<float> table(static_cast<std::size_t>((V + 1) * n));
    for (auto& x : table) x = g(rng);
    const std::vector<std::int64_t> ids{4, 8, 10, 1, 2, 3}; // "ab" "ca" " " "a" "b" "c"
    std::string text;
    for (auto t : ids) text += trie.vocab().bytes(static_cast<std::size_t>(t));
    std::vector<float> rows;
    for (std::size_t j = 0; j < ids.size(); ++j) {
        const std::size_t r = j == 0 ? 0 : static_cast<std::size_t>(ids[j - 1]) + 1;
        rows.insert(rows.end(), table.begin() + static_cast<std::ptrdiff_t>(r * n), table.begin() + static_cast<std::ptrdiff_t>((r + 1) * n));
    }
    const bld::tensor_view<const float, 2> rv(rows.data(), {static_cast<std::int64_t>(ids.size()), n});
    const bld::tensor_view<const float, 2> tv(table.data(), {V + 1, n});
    const auto canon = bld::reference::canonical_path(trie, rv, ids, std::string_view(text));
    bld::testing::bigram_teacher t0(tv, static_cast<std::size_t>(V));
    const auto beam = bld::covering_beam(trie, t0, text, {4, 0.0});
    const auto exact = bld::exact_covering(trie, t0, text);

    constexpr int threads = 4;
    std::vector<int> ok(threads, 0);
    std::vector<std::thread> pool;
    for (int k = 0; k < threads; ++k)
        pool.emplace_back([&, k] {
            bld::testing::bigram_teacher t(tv, static_cast<std::size_t>(V)); // teachers are per thread
            bool same = true;
            for (int rep = 0; rep < 5; ++rep) {
                same = same && bld::reference::canonical_path(trie, rv, ids, std::string_view(text)).probs == canon.probs;
                same = same && bld::covering_beam(trie, t, text, {4, 0.0}).probs == beam.probs;
                same = same && bld::exact_covering(trie, t, text).probs == exact.probs;
            }
            ok[static_cast<std::size_t>(k)] = same;
        });
    for (auto& th : pool) th.join();
    for (int k = 0; k < threads; ++k) CHECK(ok[static_cast<std::size_t>(k)] == 1);
}

TEST_CASE("one bigram_teacher shared by threads: its const logits() is race-free") {
    std::vector<bld::token_entry> e{{0, {}, bld::token_kind::special, "<eos>"}};
    const char* toks[] = {"a", "b", "ab", "ba", " ", " a"};
    std::int64_t id = 1;
    for (const char* t : toks) e.push_back({id++, t, bld::token_kind::text, ""});
    const bld::byte_trie trie(bld::vocabulary::from_entries(std::move(e), "shared teacher"));
    const std::int64_t V = id, n = V;
    std::mt19937 rng(11);
    std::normal_distribution<float> g(0.f, 2.f);
    std::vector<float> table(static_cast<std::size_t>((V + 1) * n));
    for (auto& x : table) x = g(rng);
    const bld::testing::bigram_teacher shared(bld::tensor_view<const float, 2>(table.data(), {V + 1, n}),
                                              static_cast<std::size_t>(V));
    const std::string text = "ab ba a";
    // The covering methods take the teacher by reference; a const teacher is one they may share.
    auto one = shared;
    const auto beam = bld::covering_beam(trie, one, text, {4, 0.0});
    const auto exact = bld::exact_covering(trie, one, text);
    const std::size_t served_before = shared.rows_served();

    constexpr int threads = 4, reps = 5;
    std::vector<int> ok(threads, 0);
    std::vector<std::thread> pool;
    for (int k = 0; k < threads; ++k)
        pool.emplace_back([&, k] {
            bool same = true;
            for (int rep = 0; rep < reps; ++rep) {
                same = same && bld::covering_beam(trie, shared, text, {4, 0.0}).probs == beam.probs;
                same = same && bld::exact_covering(trie, shared, text).probs == exact.probs;
            }
            ok[static_cast<std::size_t>(k)] = same;
        });
    for (auto& th : pool) th.join();
    for (int k = 0; k < threads; ++k) CHECK(ok[static_cast<std::size_t>(k)] == 1);
    // Every row each thread asked for was counted once: threads × reps × what one pass takes.
    CHECK(shared.rows_served() - served_before == static_cast<std::size_t>(threads * reps) * one.rows_served());
}
