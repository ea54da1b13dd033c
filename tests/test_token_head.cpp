// Token-head distillation (bld/projection/student_path.hpp): the student's byte distributions are
// the teacher-side projection's, and the gradient of the token-head loss matches central finite
// differences (fp64) on tiny vocabularies with prefix chains, duplicates, a split UTF-8
// character, a special token, an absent id and padding columns; the fast path (float rows, id or
// trie order, every SIMD level) agrees with the fp64 reference; bad input gets clear errors.
#include <bld/cpu.hpp>
#include <doctest/doctest.h>

#include "error_text.hpp"
#include "token_ids.hpp"
#include "real_data.hpp"

#include <cmath>
#include <filesystem>
#include <random>
#include <set>
#include <string>
#include <vector>

namespace {

// Prefix chains (a, ab, abc), a duplicate of "a" (id 8, as SentencePiece's <0x61>), a UTF-8
// character split over tokens (C3 | A9 | C3A9), a special token, and an absent id (11).
bld::vocabulary toy_student() {
    std::vector<bld::token_entry> e{{0, {}, bld::token_kind::special, "<s>"},
                                    {1, "a", bld::token_kind::text, ""},
                                    {2, "b", bld::token_kind::text, ""},
                                    {3, "ab", bld::token_kind::text, ""},
                                    {4, "abc", bld::token_kind::text, ""},
                                    {5, "ba", bld::token_kind::text, ""},
                                    {6, "c", bld::token_kind::text, ""},
                                    {7, "bb", bld::token_kind::text, ""},
                                    {8, "a", bld::token_kind::text, "<0x61>"},
                                    {9, "\xC3", bld::token_kind::text, ""},
                                    {10, "\xA9", bld::token_kind::text, ""},
                                    {12, "\xC3\xA9", bld::token_kind::text, ""},
                                    {13, "ca", bld::token_kind::text, ""},
                                    {14, "</s>", bld::token_kind::special, "</s>"}};
    return bld::vocabulary::from_entries(std::move(e), "toy student");
}

struct problem {
    std::vector<std::int64_t> ids;
    std::string text;
    std::size_t n = 0;            // row width (vocab + padding columns)
    std::vector<double> rows;     // [ids, n]
    std::vector<double> targets;  // [bytes, 260]
    std::vector<std::uint8_t> mask;
};

problem make_problem(const bld::vocabulary& v, std::uint32_t seed, std::size_t tokens) {
    std::mt19937 rng(seed);
    problem p;
    const std::vector<std::int64_t> pool{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 13};
    for (std::size_t t = 0; t < tokens; ++t) {
        p.ids.push_back(pool[rng() % pool.size()]);
        p.text += v.bytes(static_cast<std::size_t>(p.ids.back()));
    }
    p.n = v.size() + 2;
    std::normal_distribution<double> g(0.0, 1.5);
    p.rows.resize(p.ids.size() * p.n);
    for (auto& z : p.rows) z = g(rng);
    // A very unlikely token, so one node's mass is small.
    p.rows[p.n + 4] = -30.0;
    std::uniform_real_distribution<double> u(0.0, 1.0);
    p.targets.assign(p.text.size() * 260, 0.0);
    for (std::size_t i = 0; i < p.text.size(); ++i) {
        double s = 0;
        for (std::size_t a = 0; a < 257; ++a) {
            const double x = (a == static_cast<std::uint8_t>(p.text[i]) || a < 4 || (a >= 97 && a <= 100) || a == 0xA9 ||
                              a == 256) && u(rng) < 0.8
                                 ? u(rng)
                                 : 0.0;
            p.targets[i * 260 + a] = x;
            s += x;
        }
        for (std::size_t a = 0; a < 257; ++a) p.targets[i * 260 + a] /= s > 0 ? s : 1.0;
        p.mask.push_back(u(rng) < 0.85 ? 1 : 0);
    }
    return p;
}

double loss_at(const bld::row_plan& plan, const problem& p, const std::vector<double>& rows,
               const bld::token_head_options& o, std::vector<double>* grad) {
    const auto m = static_cast<std::int64_t>(p.ids.size()), n = static_cast<std::int64_t>(p.n);
    const bld::tensor_view<const double, 2> rv(rows.data(), {m, n});
    const bld::tensor_view<const double, 2> tv(p.targets.data(), {static_cast<std::int64_t>(p.text.size()), 260});
    bld::tensor_view<double, 2> gv;
    if (grad) {
        grad->assign(rows.size(), 7.0);
        gv = bld::tensor_view<double, 2>(grad->data(), {m, n});
    }
    return bld::token_head_loss(plan, rv, p.ids, tv, p.mask, o, gv, {bld::row_order::id, bld::projection_path::reference},
                                p.text)
        .value;
}

std::vector<bld::simd::level> levels() {
    using bld::simd::level;
    std::vector<level> out;
    for (level l : {level::scalar, level::sse2, level::neon, level::avx2, level::avx512})
        if (bld::simd::compiled(l) && static_cast<int>(l) <= static_cast<int>(bld::simd::detected_level()))
            out.push_back(l);
    return out;
}

} // namespace

TEST_CASE("token head: gradient equals central finite differences (fp64, tiny vocabulary)") {
    const bld::byte_trie trie(toy_student());
    const bld::row_plan plan(trie);
    for (const auto kind : {bld::divergence::forward_kl, bld::divergence::reverse_kl, bld::divergence::jsd}) {
        for (const double tau : {1.0, 0.7}) {
            for (const auto red : {bld::token_head_reduction::mean, bld::token_head_reduction::sum}) {
                const auto p = make_problem(trie.vocab(), 11u + static_cast<unsigned>(kind) * 7u, 7);
                bld::token_head_options o;
                o.kind = kind;
                o.temperature = tau;
                o.weight = 0.5;
                o.reduction = red;
                o.target_floor = 1e-4;
                std::vector<double> grad;
                const double v0 = loss_at(plan, p, p.rows, o, &grad);
                CHECK(std::isfinite(v0));
                CHECK(v0 > 0.0);
                auto rows = p.rows;
                double worst = 0.0;
                for (std::size_t k = 0; k < rows.size(); ++k) {
                    const double h = 1e-5;
                    rows[k] = p.rows[k] + h;
                    const double up = loss_at(plan, p, rows, o, nullptr);
                    rows[k] = p.rows[k] - h;
                    const double dn = loss_at(plan, p, rows, o, nullptr);
                    rows[k] = p.rows[k];
                    const double fd = (up - dn) / (2 * h);
                    worst = std::max(worst, std::abs(fd - grad[k]) / (1e-6 + std::abs(fd)));
                    INFO("divergence ", bld::to_string(kind), " tau ", tau, " entry ", k, " (row ", k / p.n, ", column ",
                         k % p.n, ")");
                    CHECK(std::abs(fd - grad[k]) <= 1e-7 + 1e-5 * std::abs(fd));
                }
                MESSAGE(bld::to_string(kind), " tau ", tau, ": worst relative FD error ", worst);
                // Padding columns and the absent id get no gradient.
                for (std::size_t j = 0; j < p.ids.size(); ++j) {
                    CHECK(grad[j * p.n + 11] == 0.0);
                    CHECK(grad[j * p.n + p.n - 1] == 0.0);
                    CHECK(grad[j * p.n + p.n - 2] == 0.0);
                }
            }
        }
    }
}

TEST_CASE("token head: the forward distributions are the teacher-side projection's") {
    const bld::byte_trie trie(toy_student());
    const bld::row_plan plan(trie);
    const auto p = make_problem(trie.vocab(), 3, 9);
    const auto m = static_cast<std::int64_t>(p.ids.size()), n = static_cast<std::int64_t>(p.n);
    std::vector<float> rf(p.rows.begin(), p.rows.end());
    const bld::tensor_view<const float, 2> rv(rf.data(), {m, n});
    std::vector<double> gl(p.text.size() * 260, 0.25);
    std::vector<float> grad(rf.size());
    for (const auto path : {bld::projection_path::fast, bld::projection_path::reference}) {
        const auto q = bld::canonical_path_vjp(plan, rv, p.ids, bld::tensor_view<const double, 2>(gl.data(), {static_cast<std::int64_t>(p.text.size()), 260}),
                                               bld::tensor_view<float, 2>(grad.data(), {m, n}), {bld::row_order::id, path});
        const auto ref = path == bld::projection_path::fast ? bld::canonical_path(plan, rv, p.ids, p.text)
                                                            : bld::reference::canonical_path(trie, rv, p.ids, p.text);
        REQUIRE(q.positions == ref.positions);
        for (std::size_t i = 0; i < q.probs.size(); ++i) REQUIRE(q.probs[i] == ref.probs[i]);
        for (std::size_t i = 0; i < q.positions; ++i) CHECK(q.dropped[i] == ref.dropped[i]);
    }
}

TEST_CASE("token head: the fast path (float rows, id and trie order, every SIMD level) agrees with the fp64 reference") {
    const bld::byte_trie trie(toy_student());
    const bld::row_plan plan(trie);
    const auto p = make_problem(trie.vocab(), 21, 12);
    const auto m = static_cast<std::int64_t>(p.ids.size()), n = static_cast<std::int64_t>(p.n);
    std::vector<float> rf(p.rows.begin(), p.rows.end());
    std::vector<double> rd(rf.begin(), rf.end());
    const bld::tensor_view<const double, 2> tv(p.targets.data(), {static_cast<std::int64_t>(p.text.size()), 260});
    bld::token_head_options o;
    std::vector<double> gref(rd.size());
    const auto ref = bld::token_head_loss(plan, bld::tensor_view<const double, 2>(rd.data(), {m, n}), p.ids, tv, p.mask, o,
                                          bld::tensor_view<double, 2>(gref.data(), {m, n}));
    double gmax = 0;
    for (double g : gref) gmax = std::max(gmax, std::abs(g));
    const auto perm = plan.permutation();
    std::vector<float> rt(static_cast<std::size_t>(m) * perm.size());
    for (std::int64_t j = 0; j < m; ++j)
        for (std::size_t k = 0; k < perm.size(); ++k) rt[static_cast<std::size_t>(j) * perm.size() + k] = rf[static_cast<std::size_t>(j * n) + perm[k]];
    for (const auto lvl : levels()) {
        INFO("level ", bld::simd::to_string(lvl));
        std::vector<float> g(rf.size(), 9.0f);
        const auto fast = bld::token_head_loss(plan, bld::tensor_view<const float, 2>(rf.data(), {m, n}), p.ids, tv, p.mask, o,
                                               bld::tensor_view<float, 2>(g.data(), {m, n}),
                                               {bld::row_order::id, bld::projection_path::fast, lvl});
        CHECK(fast.value == doctest::Approx(ref.value).epsilon(1e-5));
        CHECK(fast.positions == ref.positions);
        for (std::size_t k = 0; k < g.size(); ++k) CHECK(std::abs(g[k] - gref[k]) <= 1e-5 * gmax);
        const auto P = static_cast<std::int64_t>(perm.size());
        std::vector<float> gt(rt.size(), 9.0f);
        const auto tr = bld::token_head_loss(plan, bld::tensor_view<const float, 2>(rt.data(), {m, P}), p.ids, tv, p.mask, o,
                                             bld::tensor_view<float, 2>(gt.data(), {m, P}),
                                             {bld::row_order::trie, bld::projection_path::fast, lvl});
        CHECK(tr.value == doctest::Approx(ref.value).epsilon(1e-5));
        for (std::int64_t j = 0; j < m; ++j)
            for (std::size_t k = 0; k < perm.size(); ++k)
                CHECK(std::abs(gt[static_cast<std::size_t>(j * P) + k] - gref[static_cast<std::size_t>(j * n) + perm[k]]) <= 1e-5 * gmax);
    }
}

TEST_CASE("token head: bad input gets the teacher side's errors") {
    const bld::byte_trie trie(toy_student());
    const bld::row_plan plan(trie);
    auto p = make_problem(trie.vocab(), 5, 5);
    const auto m = static_cast<std::int64_t>(p.ids.size()), n = static_cast<std::int64_t>(p.n);
    std::vector<float> rf(p.rows.begin(), p.rows.end());
    const auto L = static_cast<std::int64_t>(p.text.size());
    const bld::tensor_view<const double, 2> tv(p.targets.data(), {L, 260});
    std::vector<float> g(rf.size());
    const bld::tensor_view<float, 2> gv(g.data(), {m, n});
    const bld::tensor_view<const float, 2> rv(rf.data(), {m, n});
    bld::token_head_options o;
    // ids that do not spell the text
    auto bad_text = p.text;
    bad_text[2] = 'z';
    CHECK_THROWS_AS(bld::token_head_loss(plan, rv, p.ids, tv, p.mask, o, gv, {}, bad_text), bld::alignment_error);
    // a special token among the ids
    auto ids = p.ids;
    ids[1] = 0;
    CHECK_THROWS_WITH_AS(bld::token_head_loss(plan, rv, ids, tv, {}, o, gv), doctest::Contains("special"), bld::value_error);
    // NaN logit: the row pass names row and column
    auto nan_rows = rf;
    nan_rows[static_cast<std::size_t>(n) + 3] = std::nanf("");
    CHECK_THROWS_WITH_AS(bld::token_head_loss(plan, bld::tensor_view<const float, 2>(nan_rows.data(), {m, n}), p.ids, tv, {}, o, gv),
                         doctest::Contains("student row pass: row 1, column 3"), bld::value_error);
    // ... and on the fp64 reference path, and for too few rows: the student's rows are named
    CHECK_THROWS_WITH_AS(bld::token_head_loss(plan, bld::tensor_view<const double, 2>(p.rows.data(), {m - 2, n}), p.ids, tv, {}, o,
                                              bld::tensor_view<double, 2>()),
                         doctest::Contains("one student row per token"), bld::shape_error);
    // shapes
    CHECK_THROWS_AS(bld::token_head_loss(plan, rv, p.ids, bld::tensor_view<const double, 2>(p.targets.data(), {L - 1, 260}), {}, o, gv),
                    bld::shape_error);
    CHECK_THROWS_AS(bld::token_head_loss(plan, rv, p.ids, tv, std::span<const std::uint8_t>(p.mask.data(), 2), o, gv),
                    bld::shape_error);
    CHECK_THROWS_AS(bld::token_head_loss(plan, rv, p.ids, tv, {}, o, bld::tensor_view<float, 2>(g.data(), {m, n - 1})),
                    bld::shape_error);
    CHECK_THROWS_AS(bld::token_head_loss(plan, bld::tensor_view<const float, 2>(rf.data(), {m - 2, n}), p.ids, tv, {}, o,
                                         bld::tensor_view<float, 2>(g.data(), {m - 2, n})),
                    bld::shape_error);
    // a bad teacher probability names the byte
    auto bad_t = p.targets;
    bad_t[2 * 260 + 5] = -0.5;
    CHECK_THROWS_WITH_AS(bld::token_head_loss(plan, rv, p.ids, bld::tensor_view<const double, 2>(bad_t.data(), {L, 260}), {}, o, gv),
                         doctest::Contains("text byte 2, entry 5"), bld::value_error);
    // options
    o.temperature = 0;
    CHECK_THROWS_AS(bld::token_head_loss(plan, rv, p.ids, tv, {}, o, gv), bld::value_error);
}

namespace {

bld::vocabulary toy_teacher() {
    std::vector<bld::token_entry> e{{0, {}, bld::token_kind::special, "<s>"},
                                    {1, "a", bld::token_kind::text, ""},
                                    {2, "b", bld::token_kind::text, ""},
                                    {3, "c", bld::token_kind::text, ""},
                                    {4, "bc", bld::token_kind::text, ""},
                                    {5, "aab", bld::token_kind::text, ""},
                                    {6, "ca", bld::token_kind::text, ""},
                                    {7, "\xC3", bld::token_kind::text, ""},
                                    {8, "\xA9", bld::token_kind::text, ""},
                                    {9, "\xA9" "a", bld::token_kind::text, ""}};
    return bld::vocabulary::from_entries(std::move(e), "toy teacher");
}


} // namespace

TEST_CASE("token head through the distiller: a padded, shifted batch equals the single-text loss, and its gradient central differences") {
    auto student = std::make_shared<const bld::vocabulary>(toy_student());
    auto teacher = std::make_shared<const bld::byte_trie>(toy_teacher());
    for (const auto layout : {bld::target_layout::dense, bld::target_layout::compact}) {
        bld::distiller_options o;
        o.heads = 3;
        o.layout = layout;
        o.shifted = true;
        o.path = bld::projection_path::reference;
        const bld::distiller d(teacher, student, o);
        // Two sequences, BOS on both sides; the second is right-padded.
        std::mt19937 rng(99);
        const std::vector<std::int64_t> pool{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 13};
        std::vector<std::vector<std::int64_t>> sids(2);
        std::vector<std::string> texts(2);
        for (std::size_t b = 0; b < 2; ++b) {
            sids[b].push_back(0);
            for (int t = 0; t < (b == 0 ? 6 : 4); ++t) {
                // keep the text spellable by the teacher: no lone "ba"/"bb" issues, every byte exists there
                const auto id = pool[rng() % pool.size()];
                sids[b].push_back(id);
                texts[b] += student->bytes(static_cast<std::size_t>(id));
            }
        }
        const std::int64_t Ss = 7, B = 2;
        std::vector<std::int64_t> s_ids(B * Ss, 0), s_len{7, 5};
        for (std::size_t b = 0; b < 2; ++b)
            for (std::size_t t = 0; t < sids[b].size(); ++t) s_ids[b * Ss + t] = sids[b][t];
        std::vector<std::vector<std::int64_t>> tids(2);
        std::int64_t St = 0;
        for (std::size_t b = 0; b < 2; ++b) {
            tids[b] = bld_test::greedy_ids(teacher->vocab(), texts[b]);
            tids[b].insert(tids[b].begin(), 0);
            St = std::max<std::int64_t>(St, static_cast<std::int64_t>(tids[b].size()));
        }
        std::vector<std::int64_t> t_ids(B * St, 0), t_len(2);
        for (std::size_t b = 0; b < 2; ++b) {
            for (std::size_t t = 0; t < tids[b].size(); ++t) t_ids[b * St + t] = tids[b][t];
            t_len[b] = static_cast<std::int64_t>(tids[b].size());
        }
        const std::int64_t Vt = 10, Vs = static_cast<std::int64_t>(student->size()) + 1;
        std::normal_distribution<double> g(0.0, 1.5);
        std::vector<float> tl(B * St * Vt);
        for (auto& z : tl) z = static_cast<float>(g(rng));
        std::vector<double> sl(B * Ss * Vs);
        for (auto& z : sl) z = g(rng);
        bld::distill_batch<float> tb;
        tb.teacher_logits = bld::tensor_view<const float, 3>(tl.data(), {B, St, Vt});
        tb.teacher_ids = bld::tensor_view<const std::int64_t, 2>(t_ids.data(), {B, St});
        tb.student_ids = bld::tensor_view<const std::int64_t, 2>(s_ids.data(), {B, Ss});
        tb.ranges.teacher_lengths = t_len;
        tb.ranges.student_lengths = s_len;
        const auto targets = d.targets(tb);
        const auto tv = targets.view<float>();
        bld::token_head_options ho;
        ho.reduction = bld::token_head_reduction::sum;
        const auto run = [&](const std::vector<double>& logits, std::vector<double>* grad) {
            bld::student_batch<double> sb;
            sb.logits = bld::tensor_view<const double, 3>(logits.data(), {B, Ss, Vs});
            sb.ids = tb.student_ids;
            sb.ranges.student_lengths = s_len;
            bld::tensor_view<double, 3> gv;
            if (grad) {
                grad->assign(logits.size(), 5.0);
                gv = bld::tensor_view<double, 3>(grad->data(), {B, Ss, Vs});
            }
            return d.token_head_loss(sb, tv, ho, gv);
        };
        std::vector<double> grad;
        const auto res = run(sl, &grad);
        {
            // A student mask with a gap is the token head's error, named as such.
            std::vector<std::uint8_t> gap(static_cast<std::size_t>(B * Ss), 1);
            gap[2] = 0;
            bld::student_batch<double> sb;
            sb.logits = bld::tensor_view<const double, 3>(sl.data(), {B, Ss, Vs});
            sb.ids = tb.student_ids;
            sb.ranges.student_mask = bld::tensor_view<const std::uint8_t, 2>(gap.data(), {B, Ss});
            CHECK_THROWS_WITH_AS(d.token_head_loss(sb, tv, ho, bld::tensor_view<double, 3>()),
                                 doctest::Contains("bld::distiller::token_head_loss: student_mask, sequence 0"),
                                 bld::value_error);
        }
        // The single-text loss per sequence on the same per-byte targets.
        double expect = 0;
        std::int64_t positions = 0;
        const auto dense = targets.view<float>();
        for (std::int64_t b = 0; b < B; ++b) {
            const std::int64_t n = s_len[static_cast<std::size_t>(b)];
            const std::vector<std::int64_t> ids(s_ids.begin() + b * Ss + 1, s_ids.begin() + b * Ss + n);
            std::vector<double> per_byte;
            std::vector<std::uint8_t> mask;
            for (std::int64_t t = 1; t < n; ++t) {
                const auto nb = static_cast<std::int64_t>(student->bytes(static_cast<std::size_t>(s_ids[b * Ss + t])).size());
                for (std::int64_t k = 0; k < nb; ++k) {
                    const std::int64_t slot = ((b * Ss + t - 1) * 3 + k);
                    const bool on = k < 3 && dense.mask.data()[slot];
                    mask.push_back(on ? 1 : 0);
                    std::int64_t r = -1;
                    if (on) {
                        if (dense.layout == bld::target_layout::dense) r = slot;
                        else
                            for (std::int64_t q = 0; q < dense.rows(); ++q)
                                if (dense.slots(q) == slot) r = q;
                    }
                    for (std::size_t a = 0; a < 260; ++a)
                        per_byte.push_back(r >= 0 ? static_cast<double>(dense.values(r, static_cast<std::int64_t>(a))) : 0.0);
                }
            }
            const bld::row_plan& plan = d.student_plan();
            std::vector<double> g1(static_cast<std::size_t>((n - 1) * Vs));
            const auto one = bld::token_head_loss(
                plan, bld::tensor_view<const double, 2>(sl.data() + b * Ss * Vs, {n - 1, Vs}), ids,
                bld::tensor_view<const double, 2>(per_byte.data(), {static_cast<std::int64_t>(mask.size()), 260}), mask, ho,
                bld::tensor_view<double, 2>(g1.data(), {n - 1, Vs}), {bld::row_order::id, bld::projection_path::reference});
            expect += one.value;
            positions += one.positions;
            for (std::size_t k = 0; k < g1.size(); ++k) CHECK(grad[static_cast<std::size_t>(b * Ss * Vs) + k] == doctest::Approx(g1[k]).epsilon(1e-12));
        }
        CHECK(res.positions == positions);
        CHECK(res.positions > 10);
        CHECK(res.value == doctest::Approx(expect).epsilon(1e-12));
        // Central differences over the whole batch (padding rows included: their gradient is 0).
        auto x = sl;
        for (std::size_t k = 0; k < x.size(); ++k) {
            const double h = 1e-5;
            x[k] = sl[k] + h;
            const double up = run(x, nullptr).value;
            x[k] = sl[k] - h;
            const double dn = run(x, nullptr).value;
            x[k] = sl[k];
            const double fd = (up - dn) / (2 * h);
            INFO("entry ", k);
            CHECK(std::abs(fd - grad[k]) <= 1e-7 + 1e-5 * std::abs(fd));
        }
    }
}

TEST_CASE("canonical_path_vjp: an arbitrary upstream gradient on log q matches central differences") {
    const bld::byte_trie trie(toy_student());
    const bld::row_plan plan(trie);
    const auto p = make_problem(trie.vocab(), 41, 6);
    const auto m = static_cast<std::int64_t>(p.ids.size()), n = static_cast<std::int64_t>(p.n);
    const auto L = static_cast<std::int64_t>(p.text.size());
    std::mt19937 rng(8);
    std::normal_distribution<double> g(0.0, 1.0);
    std::vector<double> W(static_cast<std::size_t>(L) * 260);
    for (auto& w : W) w = g(rng); // does not sum to zero per byte
    const bld::tensor_view<const double, 2> wv(W.data(), {L, 260});
    const auto value = [&](const std::vector<double>& rows) {
        const auto q = bld::reference::canonical_path(trie, bld::tensor_view<const double, 2>(rows.data(), {m, n}), p.ids);
        double v = 0;
        for (std::size_t i = 0; i < q.positions; ++i)
            for (std::size_t a = 0; a < 260; ++a)
                if (q.at(i)[a] > 0) v += W[i * 260 + a] * std::log(q.at(i)[a]);
        return v;
    };
    std::vector<double> grad(p.rows.size());
    (void)bld::canonical_path_vjp(plan, bld::tensor_view<const double, 2>(p.rows.data(), {m, n}), p.ids, wv,
                                  bld::tensor_view<double, 2>(grad.data(), {m, n}),
                                  {bld::row_order::id, bld::projection_path::reference});
    auto x = p.rows;
    double gmax = 0;
    for (std::size_t k = 0; k < x.size(); ++k) {
        const double h = 1e-6;
        x[k] = p.rows[k] + h;
        const double up = value(x);
        x[k] = p.rows[k] - h;
        const double dn = value(x);
        x[k] = p.rows[k];
        const double fd = (up - dn) / (2 * h);
        gmax = std::max(gmax, std::abs(fd));
        INFO("entry ", k);
        CHECK(std::abs(fd - grad[k]) <= 1e-6 + 1e-6 * std::abs(fd));
    }
    CHECK(gmax > 0.1);
}

TEST_CASE("token head, trie order: the backward's reuse of the row pass's terms holds where the row pass moves its shift "
          "mid-row and where a node lies 20 nats below the rest of its row") {
    // ~4,000 tokens: a-z words of 2-4 letters besides the 256 single bytes, so a row spans several
    // of segment_sums' chunks. Row 1's first 2,048 trie columns sit 20 below the rest (the pass
    // starts with a low shift and moves it later: the terms kept before the move are rescaled);
    // the node 'x' of row 2 lies 20 below its row (mass ~1e-11, inside the fast path's contract
    // of 1e-12; its weights exceed the 2^24 up to which the backward multiplies kept terms, so
    // it exponentiates there with the weight in the shift).
    std::mt19937 rng(5);
    std::vector<bld::token_entry> e;
    for (int b = 0; b < 256; ++b) e.push_back({b, std::string(1, static_cast<char>(b)), bld::token_kind::text, ""});
    e.push_back({256, {}, bld::token_kind::special, "<s>"});
    std::set<std::string> words;
    while (words.size() < 4000) {
        std::string w;
        const std::size_t len = 2 + rng() % 3;
        for (std::size_t i = 0; i < len; ++i) w += static_cast<char>('a' + rng() % 26);
        words.insert(w);
    }
    std::vector<std::string> wl(words.begin(), words.end());
    for (std::size_t i = 0; i < wl.size(); ++i) e.push_back({static_cast<std::int64_t>(257 + i), wl[i], bld::token_kind::text, ""});
    const bld::byte_trie trie(bld::vocabulary::from_entries(std::move(e), "words"));
    const bld::row_plan plan(trie);
    const auto& v = trie.vocab();
    // The text: words, the third starting with 'x'.
    std::vector<std::int64_t> ids;
    std::string text;
    const auto pick = [&](char first) {
        for (;;) {
            const auto id = static_cast<std::int64_t>(257 + rng() % wl.size());
            const auto b = v.bytes(static_cast<std::size_t>(id));
            if ((first == 0 && b[0] != 'x') || b[0] == first) return id;
        }
    };
    for (const char f : {'\0', '\0', 'x', '\0', '\0'}) {
        ids.push_back(pick(f));
        text += v.bytes(static_cast<std::size_t>(ids.back()));
    }
    const auto perm = plan.permutation();
    const std::size_t P = perm.size(), n = v.size(), m = ids.size();
    REQUIRE(P > 3 * bld::simd::detail::segment_chunk);
    std::size_t xlo = 0, xhi = 0;
    for (const auto& ch : trie.children(bld::byte_trie::root))
        if (ch.byte == 'x') xlo = ch.lo, xhi = ch.hi;
    REQUIRE(xhi > xlo + 16);
    std::normal_distribution<double> g(0.0, 1.5);
    std::vector<float> rt(m * P); // trie order
    for (std::size_t j = 0; j < m; ++j)
        for (std::size_t k = 0; k < P; ++k) {
            double z = g(rng);
            if (j == 1 && k < 2048) z -= 20.0;
            if (j == 2 && k >= xlo && k < xhi) z -= 20.0;
            rt[j * P + k] = static_cast<float>(z);
        }
    std::vector<double> rd(m * n, -1e300); // id order, fp64 (every id is in the trie order)
    for (std::size_t j = 0; j < m; ++j)
        for (std::size_t k = 0; k < P; ++k) rd[j * n + perm[k]] = rt[j * P + k];
    // Teacher: 0.6 on the text's byte, the rest over a-z.
    std::vector<double> targets(text.size() * 260, 0.0);
    for (std::size_t i = 0; i < text.size(); ++i) {
        for (int a = 'a'; a <= 'z'; ++a) targets[i * 260 + a] = 0.4 / 26;
        targets[i * 260 + static_cast<std::uint8_t>(text[i])] += 0.6;
    }
    const bld::tensor_view<const double, 2> tv(targets.data(), {static_cast<std::int64_t>(text.size()), 260});
    const auto mi = static_cast<std::int64_t>(m);
    for (const auto kind : {bld::divergence::forward_kl, bld::divergence::reverse_kl}) {
        bld::token_head_options o;
        o.kind = kind;
        std::vector<double> gref(rd.size());
        const auto ref = bld::token_head_loss(plan, bld::tensor_view<const double, 2>(rd.data(), {mi, static_cast<std::int64_t>(n)}),
                                              ids, tv, {}, o, bld::tensor_view<double, 2>(gref.data(), {mi, static_cast<std::int64_t>(n)}));
        double gmax = 0, gxmax = 0;
        for (double x : gref) gmax = std::max(gmax, std::abs(x));
        for (std::size_t k = xlo; k < xhi; ++k) gxmax = std::max(gxmax, std::abs(gref[2 * n + perm[k]]));
        REQUIRE(gxmax > 1e-3 * gmax); // the light node's gradient counts
        for (const auto lvl : levels()) {
            INFO("level ", bld::simd::to_string(lvl), ", divergence ", static_cast<int>(kind));
            std::vector<float> gt(rt.size(), 9.0f);
            const auto fast = bld::token_head_loss(plan, bld::tensor_view<const float, 2>(rt.data(), {mi, static_cast<std::int64_t>(P)}),
                                                   ids, tv, {}, o, bld::tensor_view<float, 2>(gt.data(), {mi, static_cast<std::int64_t>(P)}),
                                                   {bld::row_order::trie, bld::projection_path::fast, lvl});
            CHECK(fast.value == doctest::Approx(ref.value).epsilon(1e-5));
            double worst = 0, worst_x = 0;
            for (std::size_t j = 0; j < m; ++j)
                for (std::size_t k = 0; k < P; ++k) {
                    const double d = std::abs(gt[j * P + k] - gref[j * n + perm[k]]);
                    worst = std::max(worst, d);
                    if (j == 2 && k >= xlo && k < xhi) worst_x = std::max(worst_x, d);
                }
            CHECK(worst <= 1e-5 * gmax);
            CHECK(worst_x <= 1e-5 * gxmax);
            // Row 1's first chunks (kept before the shift moved): relative to their own size.
            double g1 = 0, d1 = 0;
            for (std::size_t k = 0; k < 2048; ++k) {
                g1 = std::max(g1, std::abs(gref[n + perm[k]]));
                d1 = std::max(d1, std::abs(gt[P + k] - gref[n + perm[k]]));
            }
            CHECK(g1 > 0);
            CHECK(d1 <= 1e-5 * g1);
        }
    }
}

TEST_CASE("token head: the SIMD position kernel (forward KL) agrees with the specification, math::position_loss") {
    // Supports of every size (a token's few children up to all 260 entries), temperatures 1 and
    // not, teacher mass partly outside the support, zero teacher entries inside it; value and
    // gradient within 1e-12 (relative to the largest) at every level. Then what the kernel hands
    // back to the specification: a subnormal q, a subnormal teacher mass on the support, a bad
    // teacher probability (named as before), and no teacher mass on the support (value 0,
    // gradient 0).
    using bld::simd::level;
    std::mt19937 rng(41);
    std::uniform_real_distribution<double> U(0.0, 1.0);
    constexpr std::size_t n = bld::alphabet_size;
    for (const std::size_t support : {std::size_t{1}, std::size_t{3}, std::size_t{9}, std::size_t{130}, n})
        for (const double tau : {1.0, 0.7, 3.0})
            for (int trial = 0; trial < 4; ++trial) {
                std::vector<double> q(n, 0.0);
                std::vector<float> p(n);
                std::vector<std::size_t> order(n);
                for (std::size_t a = 0; a < n; ++a) order[a] = a;
                std::shuffle(order.begin(), order.end(), rng);
                double s = 0.0;
                for (std::size_t k = 0; k < support; ++k) s += q[order[k]] = std::exp(-12.0 * U(rng));
                for (auto& v : q) v /= s;
                for (auto& v : p) v = U(rng) < 0.2 ? 0.0f : static_cast<float>(U(rng));
                bld::math::slot_params prm;
                prm.w_div = 1.0;
                prm.inv_temperature = 1.0 / tau;
                std::vector<double> gw(n), gk(n);
                const auto want = bld::math::position_loss(q.data(), p.data(), prm, gw.data());
                double gmax = 0.0;
                for (const double v : gw) gmax = std::max(gmax, std::abs(v));
                for (const auto lvl : levels()) {
                    INFO("support " << support << ", tau " << tau << ", " << bld::simd::to_string(lvl));
                    std::fill(gk.begin(), gk.end(), 7.0);
                    const auto got = bld::detail::position_loss_at(q.data(), p.data(), prm, gk.data(), lvl);
                    CHECK(got.status == bld::math::slot_status::ok);
                    CHECK(got.reachable == want.reachable);
                    CHECK(std::abs(got.value - want.value) <= 1e-12 * std::max(1.0, std::abs(want.value)));
                    for (std::size_t a = 0; a < n; ++a) {
                        if (q[a] == 0.0) CHECK(gk[a] == 0.0);
                        CHECK(std::abs(gk[a] - gw[a]) <= 1e-12 * gmax);
                    }
                }
            }
    for (const auto lvl : levels()) {
        INFO(bld::simd::to_string(lvl));
        bld::math::slot_params prm;
        prm.w_div = 1.0;
        std::vector<double> q(n, 0.0), g(n), gw(n);
        std::vector<float> p(n, 0.25f);
        q[10] = 1.0;
        q[11] = 1e-310; // subnormal: the specification's own logs
        const auto want = bld::math::position_loss(q.data(), p.data(), prm, gw.data());
        const auto got = bld::detail::position_loss_at(q.data(), p.data(), prm, g.data(), lvl);
        CHECK(got.value == want.value);
        CHECK(g == gw);
        q[11] = 0.0;
        std::vector<double> pd(n, 0.0); // a teacher mass on the support below DBL_MIN
        pd[10] = 1e-310;
        pd[30] = 0.5;
        const auto wd = bld::math::position_loss(q.data(), pd.data(), prm, gw.data());
        const auto gd = bld::detail::position_loss_at(q.data(), pd.data(), prm, g.data(), lvl);
        CHECK(std::isfinite(gd.value));
        CHECK(gd.value == wd.value);
        CHECK(g == gw);
        p[200] = -0.5f; // outside the support, still a bad probability
        const auto bad = bld::detail::position_loss_at(q.data(), p.data(), prm, g.data(), lvl);
        CHECK(bad.status == bld::math::slot_status::bad_target);
        CHECK(bad.index == 200);
        p[200] = 0.25f;
        p[10] = 0.0f; // no teacher mass where the student can go
        std::fill(g.begin(), g.end(), 3.0);
        const auto none = bld::detail::position_loss_at(q.data(), p.data(), prm, g.data(), lvl);
        CHECK(none.status == bld::math::slot_status::ok);
        CHECK(none.value == 0.0);
        CHECK(none.reachable == 0.0);
        CHECK(std::all_of(g.begin(), g.end(), [](double v) { return v == 0.0; }));
    }
}
