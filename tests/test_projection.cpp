// Projections held against brute-force enumeration of token sequences on tiny vocabularies.
#include <bld/bld.hpp>
#include <bld/testing/toy_teachers.hpp>
#include "token_ids.hpp"
#include <bld/projection/canonical_path.hpp>
#include <bld/projection/covering.hpp>
#include <bld/projection/fast_rows.hpp>
#include <doctest/doctest.h>

#include <cmath>
#include <functional>
#include <map>
#include <random>

namespace {

// A toy teacher whose rows depend on the WHOLE context (not Markov): logits are a hash of the
// context, so covering methods cannot merge paths.
struct hashed_teacher {
    std::size_t n;       // row size (≥ vocab; extra columns get junk that must be ignored)
    std::uint64_t seed;
    double scale = 2.0;
    [[nodiscard]] std::size_t row_size() const { return n; }
    void logits(const std::vector<std::vector<std::int32_t>>& contexts, std::vector<float>& out) const {
        out.resize(contexts.size() * n);
        for (std::size_t c = 0; c < contexts.size(); ++c) {
            std::uint64_t h = seed;
            for (auto t : contexts[c]) h = (h ^ static_cast<std::uint64_t>(t + 1)) * 0x9E3779B97F4A7C15ull;
            std::mt19937_64 rng(h);
            std::normal_distribution<double> g(0.0, scale);
            for (std::size_t i = 0; i < n; ++i) out[c * n + i] = static_cast<float>(g(rng));
        }
    }
};

// Probability of the next token under a teacher, computed plainly (softmax over text+special).
std::vector<double> probs_of(const bld::vocabulary& v, const std::vector<float>& z) {
    std::vector<double> p(v.size(), 0.0);
    double m = -INFINITY;
    for (std::size_t i = 0; i < v.size(); ++i)
        if (v.kinds()[i] != bld::token_kind::absent) m = std::max(m, static_cast<double>(z[i]));
    double s = 0;
    for (std::size_t i = 0; i < v.size(); ++i)
        if (v.kinds()[i] != bld::token_kind::absent) s += (p[i] = std::exp(z[i] - m));
    for (auto& x : p) x /= s;
    return p;
}

// Brute force straight from the definition: P(s) sums p(δ) over token sequences δ whose tokens
// but the last decode to a strict prefix of s and whose last token runs to or past |s|.
template <class Teacher>
struct brute_force {
    const bld::vocabulary& v;
    Teacher& t;
    std::vector<double> row(const std::vector<std::int32_t>& ctx) {
        std::vector<float> z;
        t.logits({ctx}, z);
        return probs_of(v, z);
    }
    // Σ over covering sequences.
    double prefix(const std::string& s, std::vector<std::int32_t> ctx = {}, std::size_t o = 0, double w = 1.0) {
        if (s.empty()) return 1.0;
        const auto p = row(ctx);
        double total = 0;
        for (std::size_t id = 0; id < v.size(); ++id) {
            if (v.kinds()[id] != bld::token_kind::text || p[id] == 0) continue;
            const auto b = v.bytes(id);
            const std::string_view rest = std::string_view(s).substr(o);
            if (b.size() >= rest.size()) {
                if (b.substr(0, rest.size()) == rest) total += w * p[id];
            } else if (rest.substr(0, b.size()) == b) {
                auto c = ctx;
                c.push_back(static_cast<std::int32_t>(id));
                total += prefix(s, c, o + b.size(), w * p[id]);
            }
        }
        return total;
    }
    // Σ over sequences decoding exactly to s, times the probability of a special token next.
    double stop(const std::string& s, std::vector<std::int32_t> ctx = {}, std::size_t o = 0, double w = 1.0) {
        const auto p = row(ctx);
        double total = 0;
        if (o == s.size()) {
            for (std::size_t id = 0; id < v.size(); ++id)
                if (v.kinds()[id] == bld::token_kind::special) total += w * p[id];
            return total;
        }
        for (std::size_t id = 0; id < v.size(); ++id) {
            if (v.kinds()[id] != bld::token_kind::text || p[id] == 0) continue;
            const auto b = v.bytes(id);
            if (std::string_view(s).substr(o, b.size()) == b && o + b.size() <= s.size()) {
                auto c = ctx;
                c.push_back(static_cast<std::int32_t>(id));
                total += stop(s, c, o + b.size(), w * p[id]);
            }
        }
        return total;
    }
    std::vector<double> distribution(const std::string& text, std::size_t i) {
        std::vector<double> d(bld::alphabet_size, 0.0);
        const std::string pre = text.substr(0, i);
        const double den = prefix(pre);
        for (int a = 0; a < 256; ++a) d[static_cast<std::size_t>(a)] = prefix(pre + static_cast<char>(a)) / den;
        d[bld::stop_symbol] = stop(pre) / den;
        return d;
    }
};

bld::vocabulary tiny_vocab(std::mt19937& rng, bool with_duplicates) {
    // Single bytes (so every text is coverable), prefix chains, random strings, duplicates.
    std::vector<bld::token_entry> e;
    std::int64_t id = 0;
    e.push_back({id++, {}, bld::token_kind::special, "<eos>"});
    for (char c : std::string("abc")) e.push_back({id++, std::string(1, c), bld::token_kind::text, ""});
    std::uniform_int_distribution<int> L(2, 4), ch(0, 2);
    for (int k = 0; k < 7; ++k) {
        std::string s;
        const int len = L(rng);
        for (int q = 0; q < len; ++q) s += "abc"[ch(rng)];
        e.push_back({id++, s, bld::token_kind::text, ""});
        if (k == 2) e.push_back({id++, s + "a", bld::token_kind::text, ""}); // a chain
    }
    if (with_duplicates) e.push_back({id++, "ab", bld::token_kind::text, "dup1"}), e.push_back({id++, "ab", bld::token_kind::text, "dup2"});
    return bld::vocabulary::from_entries(std::move(e), "tiny");
}

void check_close(std::span<const double> got, const std::vector<double>& want, double tol, const std::string& what) {
    double worst = 0;
    for (std::size_t a = 0; a < bld::alphabet_size; ++a) worst = std::max(worst, std::abs(got[a] - want[a]));
    INFO(what);
    CHECK(worst <= tol);
}

} // namespace

TEST_CASE("exact covering equals brute-force enumeration (fp64, 1e-12), non-Markov teacher") {
    std::mt19937 rng(7);
    for (int trial = 0; trial < 6; ++trial) {
        bld::byte_trie trie(tiny_vocab(rng, trial % 2 == 0));
        hashed_teacher teacher{trie.vocab().size() + 3, 1000u + static_cast<std::uint64_t>(trial)};
        brute_force<hashed_teacher> bf{trie.vocab(), teacher};
        std::string text;
        std::uniform_int_distribution<int> ch(0, 2);
        for (int q = 0; q < 5; ++q) text += "abc"[ch(rng)];
        const auto exact = bld::exact_covering(trie, teacher, text);
        REQUIRE(exact.positions == text.size() + 1);
        for (std::size_t i = 0; i <= text.size(); ++i) {
            check_close(exact.at(i), bf.distribution(text, i), 1e-12, "trial " + std::to_string(trial) + " byte " + std::to_string(i));
            double s = 0;
            for (double x : exact.at(i)) s += x;
            CHECK(std::abs(s - 1.0) <= 1e-12);
            CHECK(exact.at(i)[257] == 0.0);
        }
        // The beam with K = ∞, ε = 0 is exact.
        const auto beam = bld::covering_beam(trie, teacher, text, {0, 0.0});
        for (std::size_t i = 0; i <= text.size(); ++i) {
            check_close(beam.at(i), std::vector<double>(exact.at(i).begin(), exact.at(i).end()), 1e-12, "beam byte " + std::to_string(i));
            CHECK(beam.dropped[i] == 0.0);
        }
    }
}

TEST_CASE("keyed (bigram) teacher: merged states give the same answer as brute force") {
    std::mt19937 rng(11);
    bld::byte_trie trie(tiny_vocab(rng, true));
    const std::size_t V = trie.vocab().size(), n = V + 2;
    std::vector<float> table((V + 1) * n);
    std::normal_distribution<float> g(0.f, 2.f);
    for (auto& x : table) x = g(rng);
    bld::testing::bigram_teacher teacher(bld::tensor_view<const float, 2>(table.data(), {static_cast<std::int64_t>(V + 1), static_cast<std::int64_t>(n)}), V);
    brute_force<bld::testing::bigram_teacher> bf{trie.vocab(), teacher};
    const std::string text = "abcab";
    const auto exact = bld::exact_covering(trie, teacher, text);
    for (std::size_t i = 0; i <= text.size(); ++i) check_close(exact.at(i), bf.distribution(text, i), 1e-12, "byte " + std::to_string(i));
    const auto beam = bld::covering_beam(trie, teacher, text, {0, 0.0});
    for (std::size_t i = 0; i <= text.size(); ++i)
        check_close(beam.at(i), std::vector<double>(exact.at(i).begin(), exact.at(i).end()), 1e-12, "beam byte " + std::to_string(i));
    // A narrow beam prunes, reports it, and stays normalised.
    const auto narrow = bld::covering_beam(trie, teacher, text, {1, 0.0});
    double pruned = 0;
    for (std::size_t i = 0; i <= text.size(); ++i) {
        double s = 0;
        for (double x : narrow.at(i)) s += x;
        CHECK(std::abs(s - 1.0) <= 1e-12);
        pruned += narrow.dropped[i];
    }
    CHECK(pruned > 0.0);
}

TEST_CASE("canonical path equals exact when segmentation is unique; dropped mass is zero") {
    // Prefix-free vocabularies: no token is a prefix of another, so every text has one
    // segmentation and the canonical path drops nothing.
    std::mt19937 rng(5);
    for (int trial = 0; trial < 4; ++trial) {
        std::vector<bld::token_entry> e{{0, {}, bld::token_kind::special, "<eos>"},
                                        {1, "a", bld::token_kind::text, ""},
                                        {2, "ba", bld::token_kind::text, ""},
                                        {3, "bb", bld::token_kind::text, ""},
                                        {4, "bca", bld::token_kind::text, ""},
                                        {5, "cc", bld::token_kind::text, ""}};
        bld::byte_trie trie(bld::vocabulary::from_entries(std::move(e), "prefix-free"));
        hashed_teacher teacher{8, 77u + static_cast<std::uint64_t>(trial)};
        // A random text as a random token sequence.
        std::vector<std::int64_t> ids;
        std::string text;
        for (int q = 0; q < 6; ++q) {
            ids.push_back(1 + static_cast<std::int64_t>(rng() % 5));
            text += trie.vocab().bytes(static_cast<std::size_t>(ids.back()));
        }
        std::vector<float> rows;
        std::vector<std::vector<std::int32_t>> ctxs;
        for (std::size_t j = 0; j < ids.size(); ++j) ctxs.emplace_back(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(j));
        teacher.logits(ctxs, rows);
        const bld::tensor_view<const float, 2> rv(rows.data(), {static_cast<std::int64_t>(ids.size()), 8});
        const auto canon = bld::reference::canonical_path(trie, rv, ids, text);
        const auto exact = bld::exact_covering(trie, teacher, text);
        REQUIRE(canon.positions == text.size());
        for (std::size_t i = 0; i < text.size(); ++i) {
            check_close(canon.at(i), std::vector<double>(exact.at(i).begin(), exact.at(i).end()), 1e-12, "byte " + std::to_string(i));
            CHECK(canon.dropped[i] == doctest::Approx(0.0));
        }
    }
}

TEST_CASE("canonical path: single-byte vocabulary equals exact; bf16 rows agree with float") {
    std::vector<bld::token_entry> e{{0, {}, bld::token_kind::special, "<eos>"}};
    for (int b = 0; b < 256; ++b) e.push_back({b + 1, std::string(1, static_cast<char>(b)), bld::token_kind::text, ""});
    bld::byte_trie trie(bld::vocabulary::from_entries(std::move(e), "bytes"));
    hashed_teacher teacher{257, 3};
    const std::string text = "hi\xff\x00z";
    std::vector<std::int64_t> ids;
    for (unsigned char c : text) ids.push_back(c + 1);
    std::vector<float> rows;
    std::vector<std::vector<std::int32_t>> ctxs;
    for (std::size_t j = 0; j < ids.size(); ++j) ctxs.emplace_back(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(j));
    teacher.logits(ctxs, rows);
    const auto canon = bld::reference::canonical_path(trie, bld::tensor_view<const float, 2>(rows.data(), {5, 257}), ids, text);
    const auto exact = bld::exact_covering(trie, teacher, text);
    for (std::size_t i = 0; i < text.size(); ++i)
        check_close(canon.at(i), std::vector<double>(exact.at(i).begin(), exact.at(i).end()), 1e-12, "byte " + std::to_string(i));
    // bf16 rows: the same math on rounded logits — compare with float rows rounded the same way.
    std::vector<bld::bf16> hb(rows.size());
    std::vector<float> rounded(rows.size());
    for (std::size_t k = 0; k < rows.size(); ++k) {
        hb[k] = bld::bf16(rows[k]);
        rounded[k] = static_cast<float>(hb[k]);
    }
    const auto cb = bld::reference::canonical_path(trie, bld::tensor_view<const bld::bf16, 2>(hb.data(), {5, 257}), ids, text);
    const auto cf = bld::reference::canonical_path(trie, bld::tensor_view<const float, 2>(rounded.data(), {5, 257}), ids, text);
    CHECK(cb.probs == cf.probs);
}

TEST_CASE("top-k rows: full k equals dense; truncated k stays normalised within its bound") {
    std::mt19937 rng(21);
    bld::byte_trie trie(tiny_vocab(rng, true));
    const auto V = trie.vocab().size();
    hashed_teacher teacher{V, 9};
    std::vector<std::int64_t> ids{1, 2, 3, 1, 2}; // "abcab" in single bytes
    const std::string text = "abcab";
    std::vector<float> rows;
    std::vector<std::vector<std::int32_t>> ctxs;
    for (std::size_t j = 0; j < ids.size(); ++j) ctxs.emplace_back(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(j));
    teacher.logits(ctxs, rows);
    const auto R = static_cast<std::int64_t>(ids.size());
    const auto dense = bld::reference::canonical_path(trie, bld::tensor_view<const float, 2>(rows.data(), {R, static_cast<std::int64_t>(V)}), ids, text);
    for (std::size_t k : {V, std::size_t{6}}) {
        // Top-k by logit per row; residual = the true probability of the ids left out.
        std::vector<std::int64_t> tid;
        std::vector<float> tz;
        std::vector<double> res;
        for (std::size_t r = 0; r < ids.size(); ++r) {
            std::vector<float> z(rows.begin() + static_cast<std::ptrdiff_t>(r * V), rows.begin() + static_cast<std::ptrdiff_t>((r + 1) * V));
            const auto p = probs_of(trie.vocab(), z);
            std::vector<std::size_t> idx(V);
            std::iota(idx.begin(), idx.end(), 0);
            std::sort(idx.begin(), idx.end(), [&](auto a, auto b) { return z[a] > z[b]; });
            double kept = 0;
            for (std::size_t c = 0; c < k; ++c) {
                tid.push_back(static_cast<std::int64_t>(idx[c]));
                tz.push_back(z[idx[c]]);
                kept += p[idx[c]];
            }
            res.push_back(std::max(0.0, 1.0 - kept));
        }
        const auto K = static_cast<std::int64_t>(k);
        bld::topk_rows tr(trie, bld::tensor_view<const std::int64_t, 2>(tid.data(), {R, K}),
                          bld::tensor_view<const float, 2>(tz.data(), {R, K}), res);
        const auto top = bld::canonical_path_topk(trie, tr, ids, text);
        for (std::size_t i = 0; i < text.size(); ++i) {
            double s = 0, tv = 0;
            for (std::size_t a = 0; a < bld::alphabet_size; ++a) {
                s += top.at(i)[a];
                tv += 0.5 * std::abs(top.at(i)[a] - dense.at(i)[a]);
            }
            CHECK(std::abs(s - 1.0) <= 1e-12);
            if (k == V) {
                CHECK(tv <= 1e-12);
                CHECK(top.bound[i] <= 1e-12);
            } else {
                INFO("byte " << i << " tv " << tv << " bound " << top.bound[i]);
                CHECK(tv <= top.bound[i] + 1e-12);
            }
        }
    }
}

TEST_CASE("masses_for_prefix equals a plain softmax sum") {
    std::mt19937 rng(3);
    bld::byte_trie trie(tiny_vocab(rng, true));
    const auto& v = trie.vocab();
    std::vector<float> row(v.size() + 5);
    std::normal_distribution<float> g(0.f, 3.f);
    for (auto& x : row) x = g(rng);
    const auto bins = bld::root_bins(trie);
    const auto p = probs_of(v, row);
    for (const std::string prefix : {"", "a", "ab", "abc", "zz"}) {
        const auto pm = bld::reference::masses_for_prefix(trie, bins, std::span<const float>(row), prefix);
        double node = 0, end = 0, stop = 0;
        std::array<double, 256> ch{};
        for (std::size_t id = 0; id < v.size(); ++id) {
            if (v.kinds()[id] == bld::token_kind::special) stop += p[id];
            if (v.kinds()[id] != bld::token_kind::text) continue;
            const auto b = v.bytes(id);
            if (b.substr(0, prefix.size()) != prefix) continue;
            node += p[id];
            if (b.size() == prefix.size()) end += p[id];
            else ch[static_cast<std::uint8_t>(b[prefix.size()])] += p[id];
        }
        CHECK(pm.node == doctest::Approx(node).epsilon(1e-12));
        CHECK(pm.end == doctest::Approx(end).epsilon(1e-12));
        CHECK(pm.stop == doctest::Approx(stop).epsilon(1e-12));
        for (int a = 0; a < 256; ++a) CHECK(pm.children[static_cast<std::size_t>(a)] == doctest::Approx(ch[static_cast<std::size_t>(a)]).epsilon(1e-12));
    }
}

TEST_CASE("projection bad input: clear errors") {
    std::vector<bld::token_entry> e{{0, {}, bld::token_kind::special, "<eos>"},
                                    {1, "a", bld::token_kind::text, ""},
                                    {2, "b", bld::token_kind::text, ""}};
    bld::byte_trie trie(bld::vocabulary::from_entries(std::move(e), "ab"));
    std::vector<float> rows(2 * 3, 0.f);
    const bld::tensor_view<const float, 2> rv(rows.data(), {2, 3});
    const std::vector<std::int64_t> ids{1, 2};
    auto msg = [](auto&& f) -> std::string {
        try {
            f();
        } catch (const bld::error& err) {
            return err.what();
        }
        return "no error";
    };
    auto has = [](const std::string& s, const char* part) { return s.find(part) != std::string::npos; };
    rows[4] = NAN;
    CHECK(has(msg([&] { (void)bld::reference::canonical_path(trie, rv, ids); }), "row 1, column 1: the logit is NaN"));
    rows[4] = INFINITY;
    CHECK(has(msg([&] { (void)bld::reference::canonical_path(trie, rv, ids); }), "row 1, column 1: the logit is +Inf"));
    rows[4] = -INFINITY; // allowed: probability zero
    CHECK_NOTHROW((void)bld::reference::canonical_path(trie, rv, ids));
    rows[5] = -INFINITY; // but here it is the text's own token
    CHECK(has(msg([&] { (void)bld::reference::canonical_path(trie, rv, ids); }), "token position 1 (id 2, row 1)"));
    rows[4] = rows[5] = 0.f;
    CHECK(has(msg([&] { (void)bld::reference::canonical_path(trie, bld::tensor_view<const float, 2>(rows.data(), {3, 2}), ids); }),
              "fewer than the 3 ids"));
    const std::vector<std::int64_t> bad{1, 7};
    CHECK(has(msg([&] { (void)bld::reference::canonical_path(trie, rv, bad); }), "token position 1: id 7 is outside the vocabulary"));
    const std::vector<std::int64_t> special{0, 1};
    CHECK(has(msg([&] { (void)bld::reference::canonical_path(trie, rv, special); }), "is a special token"));
    CHECK(has(msg([&] { (void)bld::reference::canonical_path(trie, rv, ids, std::string_view("ax")); }), "byte offset 1 (token position 1)"));
    CHECK_THROWS_AS((void)bld::reference::canonical_path(trie, rv, ids, std::string_view("ax")), bld::alignment_error);
    CHECK(has(msg([&] { (void)bld::reference::canonical_path(trie, rv, std::span<const std::int64_t>()); }), "empty text"));
    CHECK(has(msg([&] { (void)bld::reference::canonical_path(trie, bld::tensor_view<const float, 2>(rows.data(), {1, 3}), ids); }),
              "2 tokens, 1 rows"));
    hashed_teacher t{3, 1};
    CHECK(has(msg([&] { (void)bld::exact_covering(trie, t, ""); }), "empty text"));
    CHECK(has(msg([&] { (void)bld::covering_beam(trie, t, "", {}); }), "empty text"));
    CHECK(has(msg([&] { (void)bld::covering_beam(trie, t, "ab", {10, 1.5}); }), "epsilon"));
    CHECK(has(msg([&] { (void)bld::exact_covering(trie, t, "abz"); }), "byte offset 3"));
}

TEST_CASE("covering beam: a narrow beam that kept only a dead path recovers a pruned one") {
    // At byte 1 the kept hypothesis is "inside ab" (the likelier path), but the text goes on
    // with 'c': only the pruned path "a" then "c" covers it.
    std::vector<bld::token_entry> e{{0, {}, bld::token_kind::special, "<eos>"}, {1, "a", bld::token_kind::text, ""},
                                    {2, "b", bld::token_kind::text, ""},        {3, "c", bld::token_kind::text, ""},
                                    {4, "ab", bld::token_kind::text, ""}};
    bld::byte_trie trie(bld::vocabulary::from_entries(std::move(e), "abc"));
    const std::int64_t V = 5;
    std::vector<float> table(static_cast<std::size_t>((V + 1) * V), 0.f);
    table[4] = 3.f; // row 0 (start): "ab" is likely
    bld::testing::bigram_teacher teacher(bld::tensor_view<const float, 2>(table.data(), {V + 1, V}), V);
    const std::string text = "ac";
    const auto exact = bld::exact_covering(trie, teacher, text);
    const auto beam = bld::covering_beam(trie, teacher, text, {1, 0.0});
    CHECK(beam.recoveries == 1);
    CHECK(beam.at(1)[static_cast<unsigned char>('c')] == 0.0); // the narrow beam's honest view at byte 1
    for (std::size_t a = 0; a < bld::alphabet_size; ++a) CHECK(beam.at(2)[a] == doctest::Approx(exact.at(2)[a]).epsilon(1e-12));
    const auto wide = bld::covering_beam(trie, teacher, text, {0, 0.0});
    CHECK(wide.recoveries == 0);
}

TEST_CASE("covering beam: a dead end (every covering path pruned bytes earlier) restarts on the fewest-token path") {
    // "abd" has one tokenization, a·b·d. With K = 1 the beam keeps "inside abx" (the likelier
    // path) at byte 1 and prunes the context "a"; at byte 2 no token ends at "ab", so nothing
    // new is pruned there, and 'd' leaves every kept and just-pruned path behind.
    std::vector<bld::token_entry> e{{0, {}, bld::token_kind::special, "<eos>"}, {1, "a", bld::token_kind::text, ""},
                                    {2, "b", bld::token_kind::text, ""},        {3, "d", bld::token_kind::text, ""},
                                    {4, "abx", bld::token_kind::text, ""}};
    bld::byte_trie trie(bld::vocabulary::from_entries(std::move(e), "abdx"));
    const std::int64_t V = 5;
    std::vector<float> table(static_cast<std::size_t>((V + 1) * V), 0.f);
    table[4] = 4.f;  // row 0 (start): "abx" is likely
    for (std::int64_t r = 1; r <= V; ++r) table[static_cast<std::size_t>(r * V + 3)] = 1.f + 0.5f * static_cast<float>(r);
    bld::testing::bigram_teacher teacher(bld::tensor_view<const float, 2>(table.data(), {V + 1, V}), V);
    const std::string text = "abd";
    const auto exact = bld::exact_covering(trie, teacher, text);
    const auto beam = bld::covering_beam(trie, teacher, text, {1, 0.0});
    CHECK(beam.recoveries == 1);
    CHECK(beam.at(2)[static_cast<unsigned char>('d')] == 0.0);  // the narrow beam's view at byte 2
    // After the text only the path a·b·d exists: the restarted beam's last row is exact.
    for (std::size_t a = 0; a < bld::alphabet_size; ++a) CHECK(beam.at(3)[a] == doctest::Approx(exact.at(3)[a]).epsilon(1e-12));
    const auto wide = bld::covering_beam(trie, teacher, text, {0, 0.0});
    CHECK(wide.recoveries == 0);
    for (std::size_t i = 0; i < 4; ++i)
        for (std::size_t a = 0; a < bld::alphabet_size; ++a) CHECK(wide.at(i)[a] == doctest::Approx(exact.at(i)[a]).epsilon(1e-12));
    // No tokenization reaches byte 2 ('z' is no token): still the error naming the byte.
    CHECK_THROWS_WITH_AS((void)bld::covering_beam(trie, teacher, "abz", {1, 0.0}), doctest::Contains("byte offset 3"),
                         bld::value_error);
}

TEST_CASE("covering beam and repaired path: a long text whose path probability underflows a double") {
    // Every row puts almost all its mass on "z", which the text never uses: the one path that
    // spells 80 × 'a' has probability e^(−60·80), far below the smallest double. The beam and
    // the repaired path keep only ratios, so both still give the canonical path's distributions
    // (exact here: the segmentation is unique).
    std::vector<bld::token_entry> e{{0, {}, bld::token_kind::special, "<eos>"}, {1, "a", bld::token_kind::text, ""},
                                    {2, "z", bld::token_kind::text, ""}};
    bld::byte_trie trie(bld::vocabulary::from_entries(std::move(e), "az"));
    const std::int64_t V = 3;
    std::vector<float> table(static_cast<std::size_t>((V + 1) * V), 0.f);
    for (std::int64_t r = 0; r <= V; ++r) table[static_cast<std::size_t>(r * V + 2)] = 60.f;
    bld::testing::bigram_teacher teacher(bld::tensor_view<const float, 2>(table.data(), {V + 1, V}), V);
    const std::size_t n = 80;
    const std::string text(n, 'a');
    const std::vector<std::int64_t> ids(n, 1);
    std::vector<float> rows(n * static_cast<std::size_t>(V));
    for (std::size_t k = 0; k < n; ++k)  // row k: after BOS (table row 0), then after "a" (row 2)
        std::copy_n(table.begin() + (k == 0 ? 0 : 2 * V), V, rows.begin() + static_cast<std::ptrdiff_t>(k) * V);
    const auto canon = bld::reference::canonical_path(
        trie, bld::tensor_view<const float, 2>(rows.data(), {static_cast<std::int64_t>(n), V}), ids, text);
    const auto beam = bld::covering_beam(trie, teacher, text, {10, 0.01});
    const auto repaired = bld::repaired_path(trie, teacher, text, ids, {0.0, {10, 0.01}});
    for (std::size_t i = 0; i < n; ++i)
        for (std::size_t a = 0; a < bld::alphabet_size; ++a) {
            CHECK(beam.at(i)[a] == doctest::Approx(canon.at(i)[a]).epsilon(1e-12));
            CHECK(repaired.at(i)[a] == doctest::Approx(canon.at(i)[a]).epsilon(1e-12));
        }
}

TEST_CASE("canonical path: f16 rows — the reference reads them as the float rows they widen to; the fast path agrees") {
    // Bytes, words and their space-prefixed forms, so first-byte nodes have children at depth 2
    // and deeper; 21 tokens of text: two summary blocks of the fast path.
    std::vector<bld::token_entry> e{{0, {}, bld::token_kind::special, "<eos>"}};
    std::int64_t id = 1;
    for (int b = 0; b < 256; ++b) e.push_back({id++, std::string(1, static_cast<char>(b)), bld::token_kind::text, ""});
    const std::vector<std::string> words{"th", "the", "then", "he", "in", "ing", "an", "and", "a", "at", "thing", "there"};
    for (const auto& w : words) {
        e.push_back({id++, w, bld::token_kind::text, ""});
        e.push_back({id++, " " + w, bld::token_kind::text, ""});
    }
    bld::byte_trie trie(bld::vocabulary::from_entries(std::move(e), "words"));
    const bld::row_plan plan(trie);
    const std::size_t V = trie.vocab().size();
    std::vector<std::int64_t> ids;
    std::string text;
    for (std::size_t k = 0; k < 21; ++k) {
        const std::size_t w = (k * 5) % words.size();
        ids.push_back(static_cast<std::int64_t>(257 + 2 * w + (k > 0 ? 1 : 0)));
        text += (k > 0 ? " " : "") + words[w];
    }
    hashed_teacher teacher{V + 2, 11, 3.0};
    std::vector<float> rows;
    std::vector<std::vector<std::int32_t>> ctxs;
    for (std::size_t j = 0; j < ids.size(); ++j) ctxs.emplace_back(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(j));
    teacher.logits(ctxs, rows);
    const std::int64_t R = static_cast<std::int64_t>(ids.size()), n = static_cast<std::int64_t>(V + 2);
    std::vector<bld::f16> h(rows.size());
    std::vector<float> widened(rows.size());
    for (std::size_t k = 0; k < rows.size(); ++k) {
        h[k] = bld::f16(rows[k]);
        widened[k] = static_cast<float>(h[k]);
    }
    const bld::tensor_view<const bld::f16, 2> hv(h.data(), {R, n});
    const bld::tensor_view<const float, 2> fv(widened.data(), {R, n});
    const auto ref = bld::reference::canonical_path(trie, fv, ids, text);
    CHECK(bld::reference::canonical_path(trie, hv, ids, text).probs == ref.probs); // widening is exact
    const auto permuted = bld::permute_rows(plan, hv);
    const bld::tensor_view<const bld::f16, 2> pv(permuted.data(), {R, static_cast<std::int64_t>(plan.permutation().size())});
    for (const bool trie_ordered : {false, true}) {
        INFO((trie_ordered ? "trie-ordered f16 rows" : "f16 rows in id order"));
        const auto fast = bld::canonical_path(plan, trie_ordered ? pv : hv, ids, text, trie_ordered);
        REQUIRE(fast.positions == ref.positions);
        for (std::size_t i = 0; i < ref.probs.size(); ++i)
            CHECK(std::abs(fast.probs[i] - ref.probs[i]) <= 1e-5 * ref.probs[i] + 1e-30);
    }
}

TEST_CASE("repaired canonical path: threshold 1 is the canonical path, 0 the unlimited beam (= exact); rows counted") {
    std::mt19937 rng(23);
    for (int trial = 0; trial < 8; ++trial) {
        CAPTURE(trial);
        bld::byte_trie trie(tiny_vocab(rng, trial % 2 == 0));
        const std::size_t V = trie.vocab().size();
        std::string text;
        std::uniform_int_distribution<int> ch(0, 2), len(5, 9);
        for (int q = len(rng); q > 0; --q) text += "abc"[ch(rng)];
        CAPTURE(text);
        const auto ids = bld_test::greedy_ids(trie.vocab(), text);  // a tokenization that spells the text
        // Keyed (bigram, contexts merge) and non-keyed (hashed) teachers.
        std::vector<float> table((V + 1) * (V + 1));
        std::normal_distribution<float> g(0.f, 2.f);
        for (auto& x : table) x = g(rng);
        bld::testing::bigram_teacher bigram(
            bld::tensor_view<const float, 2>(table.data(), {static_cast<std::int64_t>(V + 1), static_cast<std::int64_t>(V + 1)}), V);
        hashed_teacher hashed{V + 1, 500u + static_cast<std::uint64_t>(trial)};
        const auto check = [&](auto& teacher) {
            // The canonical path over the teacher's rows along `ids` (row j = p(· | t_<j)).
            std::vector<std::vector<std::int32_t>> ctx(ids.size());
            for (std::size_t j = 1; j < ids.size(); ++j) ctx[j] = ctx[j - 1], ctx[j].push_back(static_cast<std::int32_t>(ids[j - 1]));
            std::vector<float> rows;
            teacher.logits(ctx, rows);
            const auto canonical = bld::reference::canonical_path(
                trie, bld::tensor_view<const float, 2>(rows.data(), {static_cast<std::int64_t>(ids.size()), static_cast<std::int64_t>(V + 1)}),
                ids, std::string_view(text));
            const auto exact = bld::exact_covering(trie, teacher, text);
            const bld::beam_options unlimited{0, 0.0};
            const auto one = bld::repaired_path(trie, teacher, text, ids, {1.0, unlimited});
            REQUIRE(one.positions == text.size());
            CHECK(one.teacher_rows == ids.size());
            CHECK(one.repaired == 0);
            for (std::size_t i = 0; i < text.size(); ++i) {
                check_close(one.at(i), std::vector<double>(canonical.at(i).begin(), canonical.at(i).end()), 1e-12,
                            "threshold 1, byte " + std::to_string(i));
                CHECK(std::abs(one.dropped[i] - canonical.dropped[i]) <= 1e-12);
            }
            const auto zero = bld::repaired_path(trie, teacher, text, ids, {0.0, unlimited});
            CHECK(zero.repaired == text.size());
            for (std::size_t i = 0; i < text.size(); ++i) {
                check_close(zero.at(i), std::vector<double>(exact.at(i).begin(), exact.at(i).end()), 1e-12,
                            "threshold 0, byte " + std::to_string(i));
                CHECK(zero.dropped[i] == 0.0);
            }
            // In between: the beam runs exactly where the canonical path dropped ≥ threshold, more
            // positions and rows as the threshold falls, every row a distribution.
            std::size_t last_repaired = 0;
            for (double th : {0.9, 0.3, 0.1, 0.03, 0.01}) {
                const auto r = bld::repaired_path(trie, teacher, text, ids, {th, {10, 0.01}});
                std::size_t want = 0;
                for (std::size_t i = 0; i < text.size(); ++i) want += canonical.dropped[i] >= th ? 1 : 0;
                CHECK(r.repaired == want);
                CHECK(r.repaired >= last_repaired);
                CHECK(r.teacher_rows >= ids.size());
                last_repaired = r.repaired;
                for (std::size_t i = 0; i < text.size(); ++i) {
                    double s = 0;
                    for (double x : r.at(i)) s += x;
                    CHECK(std::abs(s - 1.0) <= 1e-12);
                    CHECK(r.dropped[i] >= -1e-15);
                }
            }
        };
        check(bigram);
        check(hashed);
        // The count is the teacher's own: rows served during the call.
        const auto before = bigram.rows_served();
        const auto r = bld::repaired_path(trie, bigram, text, ids, {0.05, {10, 0.01}});
        CHECK(r.teacher_rows == bigram.rows_served() - before);
    }
}

TEST_CASE("repaired canonical path: bad input is a clear error") {
    std::mt19937 rng(5);
    bld::byte_trie trie(tiny_vocab(rng, false));
    hashed_teacher teacher{trie.vocab().size(), 9u};
    const std::string text = "abcab";
    const auto ids = bld_test::greedy_ids(trie.vocab(), text);
    CHECK_THROWS_WITH_AS((void)bld::repaired_path(trie, teacher, text, ids, {1.5, {}}), doctest::Contains("threshold"), bld::value_error);
    CHECK_THROWS_WITH_AS((void)bld::repaired_path(trie, teacher, text, ids, {-0.1, {}}), doctest::Contains("threshold"), bld::value_error);
    CHECK_THROWS_AS((void)bld::repaired_path(trie, teacher, "abcaa", ids), bld::alignment_error);
    CHECK_THROWS_AS((void)bld::repaired_path(trie, teacher, "", ids), bld::value_error);
    const std::vector<std::int64_t> eos{0};
    CHECK_THROWS_WITH_AS((void)bld::repaired_path(trie, teacher, text, eos), doctest::Contains("special"), bld::value_error);
}
