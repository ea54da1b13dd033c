// Concurrent projections sharing one trie and one set of teacher rows, for ThreadSanitizer:
// many threads project at once; every result must equal the single-threaded one bit for bit.
#include <bld/bld.hpp>
#include <bld/cpu.hpp>
#include <bld/testing/toy_teachers.hpp>
#include <doctest/doctest.h>

#include <algorithm>
#include <memory>
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

TEST_CASE("the distiller's worker threads and concurrent callers are race-free and bit-identical") {
    using bld::token_kind;
    std::vector<bld::token_entry> te{{0, {}, token_kind::special, "<eos>"}}, se{{0, {}, token_kind::special, "<s>"}};
    const char* ttoks[] = {"a", "b", "c", "ab", "abc", "bc", "ca", "cab", " a", " "};
    const char* stoks[] = {"a", "b", "c", " ", "ca", "bca", " ab"};
    std::int64_t id = 1;
    for (const char* t : ttoks) te.push_back({id++, t, token_kind::text, ""});
    const std::int64_t V = id;
    id = 1;
    for (const char* t : stoks) se.push_back({id++, t, token_kind::text, ""});
    auto teacher = std::make_shared<const bld::byte_trie>(bld::vocabulary::from_entries(std::move(te), "teacher"));
    auto student = std::make_shared<const bld::vocabulary>(bld::vocabulary::from_entries(std::move(se), "student"));
    // Six sequences of different lengths: "ab ca" repeated; teacher and student spell it their way.
    const std::int64_t B = 6, St = 16, Ss = 20;
    std::vector<std::int64_t> tids(B * St, 0), sids(B * Ss, 0), tlen, slen;
    for (std::int64_t b = 0; b < B; ++b) {
        std::vector<std::int64_t> t, s{0};
        for (std::int64_t r = 0; r <= b % 3 + 1; ++r) {
            t.insert(t.end(), {4, 10, 7});    // "ab" " " "ca"
            s.insert(s.end(), {1, 2, 4, 5}); // "a" "b" " " "ca"
        }
        std::copy(t.begin(), t.end(), tids.begin() + b * St);
        std::copy(s.begin(), s.end(), sids.begin() + b * Ss);
        tlen.push_back(static_cast<std::int64_t>(t.size()));
        slen.push_back(static_cast<std::int64_t>(s.size()));
    }
    std::mt19937 rng(9);
    std::normal_distribution<float> g(0.f, 2.f);
    std::vector<float> logits(static_cast<std::size_t>(B * St * V));
    for (auto& x : logits) x = g(rng);
    bld::distill_batch<float> batch;
    batch.teacher_logits = bld::tensor_view<const float, 3>(logits.data(), {B, St, V});
    batch.teacher_ids = bld::tensor_view<const std::int64_t, 2>(tids.data(), {B, St});
    batch.student_ids = bld::tensor_view<const std::int64_t, 2>(sids.data(), {B, Ss});
    batch.ranges.teacher_lengths = tlen;
    batch.ranges.student_lengths = slen;
    const bld::distiller one(teacher, student, {.heads = 3, .parallel = {1}});
    const bld::distiller many(teacher, student, {.heads = 3, .parallel = {4}});
    const auto want = one.targets(batch);
    REQUIRE(want.active_slots() > 0);
    const auto same = [&](const bld::target_batch& t) {
        const auto a = want.values_f32(), b = t.values_f32();
        return t.active_slots() == want.active_slots() && std::equal(a.data(), a.data() + a.size(), b.data());
    };
    std::vector<int> ok(3, 0);
    std::vector<std::thread> pool;
    for (int k = 0; k < 3; ++k) pool.emplace_back([&, k] { ok[static_cast<std::size_t>(k)] = same(many.targets(batch)) ? 1 : 0; });
    for (auto& t : pool) t.join();
    for (int k = 0; k < 3; ++k) CHECK(ok[static_cast<std::size_t>(k)] == 1);
}
