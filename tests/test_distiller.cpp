// bld::distiller against the reference route (align_slots + reference::canonical_path +
// gather_targets, i.e. bld::canonical_targets) on real tokenizer pairs and real text: padded
// batches (left and right padding, lengths or masks), ragged batches, both row orders, float32 /
// bfloat16 / float16 rows, both target layouts and precisions, the shifted (causal LM) layout,
// thread counts, and the loss on compact vs dense targets; then the errors.
#include "real_data.hpp"

#include <bld/cpu.hpp>
#include <bld/targets/distiller.hpp>
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <random>

namespace {

struct pair_data {
    std::shared_ptr<const bld::byte_trie> teacher;
    std::shared_ptr<const bld::vocabulary> student;
    std::vector<bld_test::encoded_text> te, se;
};

pair_data load_pair(const std::string& tn, const std::string& sn) {
    const auto dir = bld_test::data_dir();
    std::map<std::string, bld_test::real_tokenizer> toks;
    for (auto& t : bld_test::real_tokenizers(dir)) toks[t.name] = t;
    pair_data p;
    p.teacher = std::make_shared<const bld::byte_trie>(bld_test::load(toks[tn]));
    p.student = std::make_shared<const bld::vocabulary>(bld_test::load(toks[sn]));
    p.te = bld_test::read_encodings(dir, tn);
    p.se = bld_test::read_encodings(dir, sn);
    REQUIRE(p.te.size() == p.se.size());
    return p;
}

/// Indices of `count` records with 8..max_tokens teacher tokens, spread over the file.
std::vector<std::size_t> pick(const pair_data& p, std::size_t count, std::size_t max_tokens) {
    std::vector<std::size_t> r;
    for (std::size_t i = 0; i < p.te.size() && r.size() < count; i += 7)
        if (p.te[i].ids.size() >= 8 && p.te[i].ids.size() <= max_tokens && p.se[i].ids.size() >= 4) r.push_back(i);
    REQUIRE(r.size() == count);
    return r;
}

/// The expected targets of one sequence: the reference route, dense [tokens, K, 260].
bld::slot_targets oracle(const pair_data& p, std::size_t r, const std::vector<float>& rows, std::int64_t V, std::size_t K) {
    const bld::tensor_view<const float, 2> view(rows.data(), {static_cast<std::int64_t>(p.te[r].ids.size()), V});
    return bld::canonical_targets(*p.student, p.se[r].ids, *p.teacher, view, p.te[r].ids, K, std::string_view(p.te[r].text));
}

std::vector<float> random_rows(std::size_t n, std::int64_t V, std::uint32_t seed) {
    std::mt19937 g(seed);
    std::normal_distribution<float> d(0.0f, 3.0f);
    std::vector<float> v(n * static_cast<std::size_t>(V));
    for (auto& x : v) x = d(g);
    return v;
}

/// Reads the targets of one flat slot from a batch (compact or dense), as float.
std::vector<float> values_at(const bld::target_batch& t, std::int64_t slot) {
    std::vector<float> out(bld::alphabet_size, 0.0f);
    std::int64_t row = slot;
    if (t.layout() == bld::target_layout::compact) {
        const auto s = t.slots();
        const auto it = std::lower_bound(s.data(), s.data() + s.extent(0), slot);
        REQUIRE(it != s.data() + s.extent(0));
        REQUIRE(*it == slot);
        row = it - s.data();
    }
    for (std::size_t a = 0; a < bld::alphabet_size; ++a) {
        const auto i = row * 260 + static_cast<std::int64_t>(a);
        out[a] = t.precision() == bld::dtype::f32 ? t.values_f32().data()[i] : static_cast<float>(t.values_bf16().data()[i]);
    }
    return out;
}

/// Compares sequence b of a batch (its student tokens at padded positions s0..s0+n) with the
/// oracle; `rel` is the tolerance relative to each probability (plus a tiny absolute floor).
std::size_t compare(const bld::target_batch& t, std::int64_t b, std::int64_t s0, const bld::slot_targets& want, double rel,
                    std::int64_t shift = 0) {
    const auto K = t.heads();
    const auto n = static_cast<std::int64_t>(want.alignment.tokens);
    std::size_t active = 0;
    for (std::int64_t p = 0; p < t.positions(); ++p) {
        for (std::int64_t k = 0; k < K; ++k) {
            const std::int64_t slot = (b * t.positions() + p) * K + k;
            const std::int64_t l = p - s0 + shift; // the oracle's token
            const bool inside = l >= 0 && l < n && p - s0 >= 0 && p - s0 < n;
            const bool want_active = inside && want.alignment.mask[static_cast<std::size_t>(l * K + k)] != 0;
            REQUIRE(static_cast<bool>(t.mask().data()[slot]) == want_active);
            if (!want_active) {
                CHECK(t.true_bytes().data()[slot] == -1);
                continue;
            }
            ++active;
            const auto ws = static_cast<std::size_t>(l * K + k);
            CHECK(t.true_bytes().data()[slot] == want.alignment.true_byte[ws]);
            CHECK(std::abs(t.dropped().data()[slot] - want.dropped[ws]) <= 1e-5 * want.dropped[ws] + 1e-6);
            const auto got = values_at(t, slot);
            for (std::size_t a = 0; a < bld::alphabet_size; ++a) {
                const double w = want.targets[ws * 260 + a];
                if (!(std::abs(got[a] - w) <= rel * w + 1e-7)) {
                    FAIL_CHECK("slot " << slot << " byte " << a << ": got " << got[a] << ", want " << w);
                    return active;
                }
            }
        }
    }
    return active;
}

/// A padded batch of the chosen records (teacher and student right- or left-padded).
struct padded {
    std::int64_t B = 0, St = 0, Ss = 0, V = 0;
    std::vector<float> logits;
    std::vector<std::int64_t> tids, sids, tstart, tlen, sstart, slen;
    std::vector<std::uint8_t> tmask, smask;
    std::vector<std::vector<float>> rows; // per sequence, unpadded
};

padded make_padded(const pair_data& p, const std::vector<std::size_t>& recs, bool left, std::int64_t pad_t, std::int64_t pad_s) {
    padded x;
    x.B = static_cast<std::int64_t>(recs.size());
    x.V = static_cast<std::int64_t>(p.teacher->vocab().size());
    for (const auto r : recs) {
        x.St = std::max<std::int64_t>(x.St, static_cast<std::int64_t>(p.te[r].ids.size()));
        x.Ss = std::max<std::int64_t>(x.Ss, static_cast<std::int64_t>(p.se[r].ids.size()));
    }
    x.St += 2; // every sequence padded
    x.Ss += 3;
    x.logits.assign(static_cast<std::size_t>(x.B * x.St * x.V), std::nanf("")); // padding rows are never read
    x.tids.assign(static_cast<std::size_t>(x.B * x.St), pad_t);
    x.sids.assign(static_cast<std::size_t>(x.B * x.Ss), pad_s);
    x.tmask.assign(x.tids.size(), 0);
    x.smask.assign(x.sids.size(), 0);
    for (std::int64_t b = 0; b < x.B; ++b) {
        const auto r = recs[static_cast<std::size_t>(b)];
        const auto nt = static_cast<std::int64_t>(p.te[r].ids.size()), ns = static_cast<std::int64_t>(p.se[r].ids.size());
        const std::int64_t t0 = left ? x.St - nt : 0, s0 = left ? x.Ss - ns : 0;
        x.tstart.push_back(t0);
        x.tlen.push_back(nt);
        x.sstart.push_back(s0);
        x.slen.push_back(ns);
        x.rows.push_back(random_rows(static_cast<std::size_t>(nt), x.V, 1000u + static_cast<std::uint32_t>(r)));
        std::copy(x.rows.back().begin(), x.rows.back().end(), x.logits.begin() + (b * x.St + t0) * x.V);
        for (std::int64_t q = 0; q < nt; ++q) {
            x.tids[static_cast<std::size_t>(b * x.St + t0 + q)] = p.te[r].ids[static_cast<std::size_t>(q)];
            x.tmask[static_cast<std::size_t>(b * x.St + t0 + q)] = 1;
        }
        for (std::int64_t q = 0; q < ns; ++q) {
            x.sids[static_cast<std::size_t>(b * x.Ss + s0 + q)] = p.se[r].ids[static_cast<std::size_t>(q)];
            x.smask[static_cast<std::size_t>(b * x.Ss + s0 + q)] = 1;
        }
    }
    return x;
}

template <class T>
bld::distill_batch<T> batch_of(const padded& x, const std::vector<T>& logits, bool masks) {
    bld::distill_batch<T> b;
    b.teacher_logits = bld::tensor_view<const T, 3>(logits.data(), {x.B, x.St, x.V});
    b.teacher_ids = bld::tensor_view<const std::int64_t, 2>(x.tids.data(), {x.B, x.St});
    b.student_ids = bld::tensor_view<const std::int64_t, 2>(x.sids.data(), {x.B, x.Ss});
    if (masks) {
        b.ranges.teacher_mask = bld::tensor_view<const std::uint8_t, 2>(x.tmask.data(), {x.B, x.St});
        b.ranges.student_mask = bld::tensor_view<const std::uint8_t, 2>(x.smask.data(), {x.B, x.Ss});
    } else {
        b.ranges.teacher_starts = x.tstart;
        b.ranges.teacher_lengths = x.tlen;
        b.ranges.student_starts = x.sstart;
        b.ranges.student_lengths = x.slen;
    }
    return b;
}

} // namespace

TEST_CASE("distiller: padded batches on real pairs match the reference route (f32, both layouts, both paddings)") {
    const std::pair<std::string, std::string> pairs[] = {
        {"llama3", "gpt2"}, {"llama2", "llama3"}, {"llama3", "llama2"}, {"gemma3", "qwen3"}, {"qwen3", "cl100k"}};
    int variant = 0;
    for (const auto& [tn, sn] : pairs) {
        CAPTURE(tn);
        CAPTURE(sn);
        const auto p = load_pair(tn, sn);
        const auto recs = pick(p, 3, 40);
        const std::size_t K = 1 + static_cast<std::size_t>(variant * 3) % 10;
        const bool left = variant % 2 == 1, masks = variant % 3 == 0;
        ++variant;
        const auto x = make_padded(p, recs, left, 0, 0);
        std::vector<bld::slot_targets> want;
        for (std::size_t b = 0; b < recs.size(); ++b) want.push_back(oracle(p, recs[b], x.rows[b], x.V, K));
        for (const auto layout : {bld::target_layout::compact, bld::target_layout::dense}) {
            CAPTURE(bld::to_string(layout));
            const bld::distiller d(p.teacher, p.student, {.heads = K, .layout = layout});
            const auto t = d.targets(batch_of<float>(x, x.logits, masks));
            REQUIRE(t.batch() == x.B);
            REQUIRE(t.positions() == x.Ss);
            REQUIRE(t.heads() == static_cast<std::int64_t>(K));
            std::size_t active = 0;
            for (std::int64_t b = 0; b < x.B; ++b)
                active += compare(t, b, x.sstart[static_cast<std::size_t>(b)], want[static_cast<std::size_t>(b)], 2e-5);
            CHECK(static_cast<std::int64_t>(active) == t.active_slots());
            CHECK(active > 20);
        }
    }
}

TEST_CASE("distiller: trie-ordered rows, bf16 / f16 rows, bf16 targets, reference path, ragged batches, threads") {
    const auto p = load_pair("llama3", "gpt2");
    const auto recs = pick(p, 3, 30);
    const std::size_t K = 6;
    const auto x = make_padded(p, recs, false, 0, 0);
    std::vector<bld::slot_targets> want;
    for (std::size_t b = 0; b < recs.size(); ++b) want.push_back(oracle(p, recs[b], x.rows[b], x.V, K));

    SUBCASE("trie order: the rows permuted once by permutation()") {
        const bld::distiller d(p.teacher, p.student, {.heads = K, .rows = bld::row_order::trie});
        const auto perm = d.permutation();
        const auto W = static_cast<std::int64_t>(perm.size());
        std::vector<float> sorted(static_cast<std::size_t>(x.B * x.St * W));
        for (std::int64_t r = 0; r < x.B * x.St; ++r)
            for (std::int64_t c = 0; c < W; ++c) sorted[static_cast<std::size_t>(r * W + c)] = x.logits[static_cast<std::size_t>(r * x.V + perm[static_cast<std::size_t>(c)])];
        padded y = x;
        y.V = W;
        const auto t = d.targets(batch_of<float>(y, sorted, false));
        for (std::int64_t b = 0; b < x.B; ++b) compare(t, b, 0, want[static_cast<std::size_t>(b)], 2e-5);
    }
    SUBCASE("bf16 and f16 rows against the reference on the same rounded rows; bf16 targets") {
        std::vector<bld::bf16> lb(x.logits.size());
        std::vector<bld::f16> lh(x.logits.size());
        for (std::size_t i = 0; i < lb.size(); ++i) {
            lb[i] = bld::bf16(x.logits[i]);
            lh[i] = bld::f16(x.logits[i]);
        }
        for (const bool half : {false, true}) {
            CAPTURE(half);
            std::vector<bld::slot_targets> w;
            for (std::size_t b = 0; b < recs.size(); ++b) {
                std::vector<float> rounded(x.rows[b].size());
                for (std::size_t i = 0; i < rounded.size(); ++i)
                    rounded[i] = half ? static_cast<float>(bld::f16(x.rows[b][i])) : static_cast<float>(bld::bf16(x.rows[b][i]));
                w.push_back(oracle(p, recs[b], rounded, x.V, K));
            }
            const bld::distiller d(p.teacher, p.student, {.heads = K});
            const auto t = half ? d.targets(batch_of<bld::f16>(x, lh, true)) : d.targets(batch_of<bld::bf16>(x, lb, true));
            for (std::int64_t b = 0; b < x.B; ++b) compare(t, b, 0, w[static_cast<std::size_t>(b)], 2e-5);
        }
        const bld::distiller d16(p.teacher, p.student, {.heads = K, .precision = bld::dtype::bf16});
        const auto t = d16.targets(batch_of<float>(x, x.logits, false));
        CHECK(t.precision() == bld::dtype::bf16);
        for (std::int64_t b = 0; b < x.B; ++b) compare(t, b, 0, want[static_cast<std::size_t>(b)], 1.0 / 128);
    }
    SUBCASE("the reference path and the fast path agree; threads give the same bits") {
        const bld::distiller ref(p.teacher, p.student, {.heads = K, .path = bld::projection_path::reference});
        const auto r = ref.targets(batch_of<float>(x, x.logits, false));
        for (std::int64_t b = 0; b < x.B; ++b) compare(r, b, 0, want[static_cast<std::size_t>(b)], 1e-6);
        const bld::distiller one(p.teacher, p.student, {.heads = K, .parallel = {1}});
        const bld::distiller two(p.teacher, p.student, {.heads = K, .parallel = {2}});
        const bld::distiller three(p.teacher, p.student, {.heads = K, .parallel = {3}});
        const auto a = one.targets(batch_of<float>(x, x.logits, false));
        const auto c = two.targets(batch_of<float>(x, x.logits, false));
        const auto e = three.targets(batch_of<float>(x, x.logits, false));
        const auto same = [](const bld::target_batch& u, const bld::target_batch& v) {
            const auto uv = u.values_f32(), vv = v.values_f32();
            return u.active_slots() == v.active_slots() && std::equal(uv.data(), uv.data() + uv.size(), vv.data()) &&
                   std::equal(u.slots().data(), u.slots().data() + u.active_slots(), v.slots().data()) &&
                   std::equal(u.dropped().data(), u.dropped().data() + u.dropped().size(), v.dropped().data());
        };
        CHECK(same(a, c));
        CHECK(same(a, e));
    }
    SUBCASE("a ragged batch gives the padded batch's targets (right-padded)") {
        const bld::distiller d(p.teacher, p.student, {.heads = K});
        std::vector<bld::distill_sequence<float>> seqs;
        for (std::size_t b = 0; b < recs.size(); ++b)
            seqs.push_back({bld::tensor_view<const float, 2>(x.rows[b].data(), {static_cast<std::int64_t>(p.te[recs[b]].ids.size()), x.V}),
                            p.te[recs[b]].ids, p.se[recs[b]].ids, std::string_view(p.te[recs[b]].text)});
        const auto t = d.targets(std::span<const bld::distill_sequence<float>>(seqs));
        CHECK(t.positions() == x.Ss - 3);
        for (std::int64_t b = 0; b < x.B; ++b) compare(t, b, 0, want[static_cast<std::size_t>(b)], 2e-5);
    }
}

TEST_CASE("distiller: the shifted (causal LM) layout with BOS on both sides") {
    const auto p = load_pair("llama3", "gpt2");
    const auto recs = pick(p, 2, 30);
    const std::size_t K = 5;
    const auto& tv = p.teacher->vocab();
    const auto& sv = *p.student;
    // Llama-3's <|begin_of_text|> and GPT-2's <|endoftext|> as BOS.
    std::int64_t tbos = -1, sbos = -1;
    for (std::size_t i = 0; i < tv.size(); ++i)
        if (tv.kinds()[i] == bld::token_kind::special) { tbos = static_cast<std::int64_t>(i); break; }
    for (std::size_t i = 0; i < sv.size(); ++i)
        if (sv.kinds()[i] == bld::token_kind::special) { sbos = static_cast<std::int64_t>(i); break; }
    REQUIRE(tbos >= 0);
    REQUIRE(sbos >= 0);
    const bld::distiller d(p.teacher, p.student, {.heads = K, .shifted = true});
    for (const auto r : recs) {
        const auto V = static_cast<std::int64_t>(tv.size());
        const auto& ti = p.te[r].ids;
        const auto rows = random_rows(ti.size(), V, 77u + static_cast<std::uint32_t>(r));
        const auto want = oracle(p, r, rows, V, K);
        // Teacher input [BOS, text…, EOS]: the model's output at position q predicts input q + 1, so
        // output 0 (after BOS) is the oracle's row 0; the EOS position's output is never read.
        std::vector<std::int64_t> tin{tbos};
        tin.insert(tin.end(), ti.begin(), ti.end());
        tin.push_back(tbos);
        std::vector<float> out(tin.size() * static_cast<std::size_t>(V), std::nanf(""));
        std::copy(rows.begin(), rows.end(), out.begin());
        std::vector<std::int64_t> sin{sbos};
        sin.insert(sin.end(), p.se[r].ids.begin(), p.se[r].ids.end());
        const auto t = d.targets(bld::tensor_view<const float, 2>(out.data(), {static_cast<std::int64_t>(tin.size()), V}), tin, sin);
        // Position p's slots are student token p + 1's: the oracle's token p (sin[0] is BOS).
        CHECK(compare(t, 0, 0, want, 2e-5, 0) > 10);
        // Without a teacher BOS the first token has no row: its bytes are masked, the rest active.
        std::vector<float> nobos(rows.begin() + V, rows.end());
        nobos.resize(ti.size() * static_cast<std::size_t>(V), 0.0f);
        const auto u = d.targets(bld::tensor_view<const float, 2>(nobos.data(), {static_cast<std::int64_t>(ti.size()), V}), ti, sin);
        const auto first_bytes = static_cast<std::int64_t>(tv.bytes(static_cast<std::size_t>(ti[0])).size());
        std::int64_t masked_text = 0;
        for (std::size_t s = 0; s < want.alignment.mask.size(); ++s)
            if (want.alignment.mask[s] && want.alignment.teacher_offset[s] < first_bytes) ++masked_text;
        CHECK(u.active_slots() + masked_text == t.active_slots());
    }
}

TEST_CASE("distiller: the loss on compact targets equals the loss on dense targets, value and gradient") {
    const auto p = load_pair("llama2", "llama3");
    const auto recs = pick(p, 3, 30);
    const std::size_t K = 8;
    const auto x = make_padded(p, recs, true, 0, 0);
    const bld::distiller dc(p.teacher, p.student, {.heads = K});
    const bld::distiller dd(p.teacher, p.student, {.heads = K, .layout = bld::target_layout::dense});
    const auto tc = dc.targets(batch_of<float>(x, x.logits, true));
    const auto td = dd.targets(batch_of<float>(x, x.logits, true));
    const auto T = tc.tokens();
    std::vector<float> z(static_cast<std::size_t>(T) * K * 260);
    std::mt19937 g(5);
    std::normal_distribution<float> n(0.0f, 2.0f);
    for (auto& v : z) v = n(g);
    const bld::tensor_view<const float, 3> zv(z.data(), {T, static_cast<std::int64_t>(K), 260});
    std::vector<float> gc(z.size()), gd(z.size());
    for (const auto red : {bld::loss_reduction::eq5, bld::loss_reduction::slot_mean}) {
        const bld::bld_loss_options o{.lambda_kl = 0.7, .reduction = red};
        const auto rc = bld::bld_loss(zv, tc.view<float>(), o, bld::tensor_view<float, 3>(gc.data(), zv.extents()));
        const auto rd = bld::bld_loss(zv, td.view<float>(), o, bld::tensor_view<float, 3>(gd.data(), zv.extents()));
        CHECK(rc.active_slots == tc.active_slots());
        CHECK(rc.value == doctest::Approx(rd.value).epsilon(1e-12));
        CHECK(gc == gd);
        // And the plain tensor overload on the dense values gives the same.
        const auto dense = bld::tensor_view<const float, 3>(td.values_f32().data(), {T, static_cast<std::int64_t>(K), 260});
        const auto rp = bld::bld_loss(zv, dense, bld::reshape(td.true_bytes(), std::array<std::int64_t, 2>{T, static_cast<std::int64_t>(K)}),
                                      bld::reshape(td.mask(), std::array<std::int64_t, 2>{T, static_cast<std::int64_t>(K)}), o);
        CHECK(rp.value == doctest::Approx(rd.value).epsilon(1e-12));
    }
}

TEST_CASE("distiller: bad input is a clear error naming the argument and sequence") {
    const auto p = load_pair("llama3", "gpt2");
    const auto recs = pick(p, 2, 20);
    const auto x = make_padded(p, recs, false, 0, 0);
    const bld::distiller d(p.teacher, p.student, {.heads = 4});
    const auto msg = [&](auto&& f) {
        try {
            f();
        } catch (const bld::error& e) {
            return std::string(e.what());
        }
        return std::string("no error");
    };
    auto b = batch_of<float>(x, x.logits, false);
    {
        auto c = b;
        c.teacher_ids = bld::tensor_view<const std::int64_t, 2>(x.tids.data(), {x.B, x.St - 1});
        CHECK_THROWS_AS((void)d.targets(c), bld::shape_error);
        CHECK(msg([&] { (void)d.targets(c); }).find("teacher_ids") != std::string::npos);
    }
    {
        auto c = b;
        c.student_ids = bld::tensor_view<const std::int64_t, 2>(x.sids.data(), {1, x.Ss});
        CHECK(msg([&] { (void)d.targets(c); }).find("batch size") != std::string::npos);
    }
    {
        auto c = b;
        std::vector<std::int64_t> len = x.tlen;
        len[1] = x.St + 1;
        c.ranges.teacher_lengths = len;
        const auto m = msg([&] { (void)d.targets(c); });
        CHECK(m.find("sequence 1") != std::string::npos);
        CHECK(m.find("past the") != std::string::npos);
    }
    {
        auto c = batch_of<float>(x, x.logits, true);
        std::vector<std::uint8_t> holes = x.smask;
        holes[2] = 0; // a gap inside sequence 0
        c.ranges.student_mask = bld::tensor_view<const std::uint8_t, 2>(holes.data(), {x.B, x.Ss});
        CHECK(msg([&] { (void)d.targets(c); }).find("contiguous") != std::string::npos);
    }
    {
        auto c = b;
        c.teacher_logits = bld::tensor_view<const float, 3>(x.logits.data(), {x.B, x.St, x.V - 10});
        CHECK(msg([&] { (void)d.targets(c); }).find("narrower") != std::string::npos);
    }
    {
        auto c = b;
        std::vector<std::string_view> texts{p.te[recs[0]].text, "not the text"};
        c.ranges.texts = texts;
        CHECK_THROWS_AS((void)d.targets(c), bld::alignment_error);
        CHECK(msg([&] { (void)d.targets(c); }).find("sequence 1") != std::string::npos);
    }
    {
        // A special token between text tokens of the teacher.
        std::vector<std::int64_t> t = x.tids;
        std::int64_t special = -1;
        for (std::size_t i = 0; i < p.teacher->vocab().size(); ++i)
            if (p.teacher->vocab().kinds()[i] == bld::token_kind::special) { special = static_cast<std::int64_t>(i); break; }
        t[static_cast<std::size_t>(x.St + 3)] = special;
        auto c = b;
        c.teacher_ids = bld::tensor_view<const std::int64_t, 2>(t.data(), {x.B, x.St});
        const auto m = msg([&] { (void)d.targets(c); });
        CHECK(m.find("sequence 1") != std::string::npos);
        CHECK(m.find("special") != std::string::npos);
    }
    {
        // A NaN logit in a row that is read: the row pass's error, in the sequence.
        std::vector<float> l = x.logits;
        l[static_cast<std::size_t>((x.St + 2) * x.V + 5)] = std::nanf("");
        auto c = batch_of<float>(x, l, false);
        const auto m = msg([&] { (void)d.targets(c); });
        CHECK(m.find("sequence 1") != std::string::npos);
        CHECK(m.find("NaN") != std::string::npos);
    }
    CHECK_THROWS_AS(bld::distiller(p.teacher, p.student, {.heads = 0}), bld::value_error);
    CHECK_THROWS_AS(bld::distiller(p.teacher, p.student, {.precision = bld::dtype::f64}), bld::value_error);
    // Loss: logits whose [T, K] differ from the targets'.
    const auto t = d.targets(b);
    std::vector<float> z(static_cast<std::size_t>(t.tokens() + 1) * 4 * 260, 0.0f);
    const bld::tensor_view<const float, 3> zv(z.data(), {t.tokens() + 1, 4, 260});
    CHECK(msg([&] { (void)bld::bld_loss(zv, t.view<float>()); }).find("to match the targets") != std::string::npos);
    CHECK_THROWS_AS((void)t.view<bld::bf16>(), bld::value_error);
}

TEST_CASE("distiller: targets from byte distributions (the covering methods' route) equal targets from rows") {
    // Oracle: the canonical path's distributions, computed by reference::canonical_path on the
    // same rows, fed through targets(byte_sequence) give the very slots, values, dropped masses
    // and true bytes that targets() gives from the rows themselves (reference path: the same
    // doubles on both routes), both layouts and precisions; every text byte has a distribution,
    // so a teacher sequence without BOS loses no leading token.
    const auto p = load_pair("llama3", "gpt2");
    const auto recs = pick(p, 3, 40);
    const std::size_t K = 5;
    const auto& tv = p.teacher->vocab();
    std::int64_t tbos = -1;
    for (std::size_t i = 0; i < tv.size(); ++i)
        if (tv.kinds()[i] == bld::token_kind::special) { tbos = static_cast<std::int64_t>(i); break; }
    REQUIRE(tbos >= 0);
    const auto V = static_cast<std::int64_t>(tv.size());
    for (const auto layout : {bld::target_layout::compact, bld::target_layout::dense})
        for (const auto precision : {bld::dtype::f32, bld::dtype::bf16}) {
            CAPTURE(static_cast<int>(layout));
            CAPTURE(static_cast<int>(precision));
            const bld::distiller d(p.teacher, p.student, {.heads = K, .layout = layout, .precision = precision,
                                                          .path = bld::projection_path::reference, .shifted = true});
            for (const auto r : recs) {
                const auto& ti = p.te[r].ids;
                const auto& si = p.se[r].ids;
                const auto rows = random_rows(ti.size(), V, 91u + static_cast<std::uint32_t>(r));
                std::vector<std::int64_t> tin{tbos};
                tin.insert(tin.end(), ti.begin(), ti.end());
                std::vector<float> out(tin.size() * static_cast<std::size_t>(V), 0.0f);
                std::copy(rows.begin(), rows.end(), out.begin());
                auto want = d.targets(bld::tensor_view<const float, 2>(out.data(), {static_cast<std::int64_t>(tin.size()), V}), tin, si);
                const auto dist = bld::reference::canonical_path(
                    *p.teacher, bld::tensor_view<const float, 2>(rows.data(), {static_cast<std::int64_t>(ti.size()), V}), ti,
                    std::string_view(p.te[r].text));
                for (const auto& teacher_ids : {std::span<const std::int64_t>(tin), std::span<const std::int64_t>(ti)}) {
                    const bld::byte_sequence seq{&dist, teacher_ids, si, std::string_view(p.te[r].text)};
                    auto got = d.targets(std::span<const bld::byte_sequence>(&seq, 1));
                    REQUIRE(want.active_slots() > 10);
                    CHECK(got.active_slots() == want.active_slots());
                    CHECK(got.mask_storage() == want.mask_storage());
                    CHECK(got.true_bytes_storage() == want.true_bytes_storage());
                    CHECK(got.dropped_storage() == want.dropped_storage());
                    CHECK(got.slots_storage() == want.slots_storage());
                    if (precision == bld::dtype::f32) CHECK(got.values_f32_storage() == want.values_f32_storage());
                    else CHECK(std::equal(got.values_bf16_storage().begin(), got.values_bf16_storage().end(),
                                          want.values_bf16_storage().begin(), want.values_bf16_storage().end(),
                                          [](bld::bf16 a, bld::bf16 b) { return a.bits == b.bits; }));
                }
            }
        }
    // Two sequences in one batch land in their own rows; too few distributions is an error
    // naming the sequence; a null pointer too.
    const bld::distiller d(p.teacher, p.student, {.heads = K, .shifted = true});
    const auto r0 = recs[0], r1 = recs[1];
    const auto rows0 = random_rows(p.te[r0].ids.size(), V, 5u), rows1 = random_rows(p.te[r1].ids.size(), V, 6u);
    const auto d0 = bld::reference::canonical_path(
        *p.teacher, bld::tensor_view<const float, 2>(rows0.data(), {static_cast<std::int64_t>(p.te[r0].ids.size()), V}), p.te[r0].ids);
    const auto d1 = bld::reference::canonical_path(
        *p.teacher, bld::tensor_view<const float, 2>(rows1.data(), {static_cast<std::int64_t>(p.te[r1].ids.size()), V}), p.te[r1].ids);
    const std::vector<bld::byte_sequence> both{{&d0, p.te[r0].ids, p.se[r0].ids}, {&d1, p.te[r1].ids, p.se[r1].ids}};
    auto two = d.targets(std::span<const bld::byte_sequence>(both));
    auto one0 = d.targets(std::span<const bld::byte_sequence>(both.data(), 1));
    auto one1 = d.targets(std::span<const bld::byte_sequence>(both.data() + 1, 1));
    CHECK(two.active_slots() == one0.active_slots() + one1.active_slots());
    std::vector<float> joined = one0.values_f32_storage();
    joined.insert(joined.end(), one1.values_f32_storage().begin(), one1.values_f32_storage().end());
    CHECK(two.values_f32_storage() == joined);
    bld::byte_distributions shorter = d1;
    shorter.resize(d1.positions - 1);
    const std::vector<bld::byte_sequence> bad{{&d0, p.te[r0].ids, p.se[r0].ids}, {&shorter, p.te[r1].ids, p.se[r1].ids}};
    CHECK_THROWS_WITH_AS((void)d.targets(std::span<const bld::byte_sequence>(bad)), doctest::Contains("sequence 1"), bld::shape_error);
    const std::vector<bld::byte_sequence> null{{nullptr, p.te[r0].ids, p.se[r0].ids}};
    CHECK_THROWS_WITH_AS((void)d.targets(std::span<const bld::byte_sequence>(null)), doctest::Contains("null"), bld::value_error);
}
