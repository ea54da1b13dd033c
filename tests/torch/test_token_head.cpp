// Tests of bld/torch/token_head.hpp (built only with bld::torch): the autograd token-head loss
// has the value and gradient of the distiller's own call (bld::distiller::token_head_loss, the
// oracle: its gradient is checked against central differences in tests/test_token_head.cpp),
// backward scales by the incoming gradient, bf16 logits get a bf16 gradient, an integer attention
// mask reads as the lengths it marks, and bad input raises bld's errors.
#include <bld/torch/token_head.hpp>

#include <bld/cpu.hpp>
#include <doctest/doctest.h>
#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "../error_text.hpp"
#include "../token_ids.hpp"

namespace {

using bld_test::contains;
using bld_test::message_of;

bld::vocabulary student_vocab() {
    std::vector<bld::token_entry> e{{0, {}, bld::token_kind::special, "<s>"},
                                    {1, "a", bld::token_kind::text, ""},
                                    {2, "b", bld::token_kind::text, ""},
                                    {3, "ab", bld::token_kind::text, ""},
                                    {4, "abc", bld::token_kind::text, ""},
                                    {5, "c", bld::token_kind::text, ""},
                                    {6, "ba", bld::token_kind::text, ""},
                                    {7, "ca", bld::token_kind::text, ""},
                                    {8, {}, bld::token_kind::special, "</s>"}};
    return bld::vocabulary::from_entries(std::move(e), "toy student");
}

bld::vocabulary teacher_vocab() {
    std::vector<bld::token_entry> e{{0, {}, bld::token_kind::special, "<s>"},
                                    {1, "a", bld::token_kind::text, ""},
                                    {2, "b", bld::token_kind::text, ""},
                                    {3, "c", bld::token_kind::text, ""},
                                    {4, "bc", bld::token_kind::text, ""},
                                    {5, "aab", bld::token_kind::text, ""},
                                    {6, "ca", bld::token_kind::text, ""}};
    return bld::vocabulary::from_entries(std::move(e), "toy teacher");
}


/// A shifted batch of two sequences, BOS first; the second right-padded: student ids [2, 7],
/// lengths {7, 5}; the distiller's targets for it.
struct batch {
    std::shared_ptr<const bld::vocabulary> student = std::make_shared<const bld::vocabulary>(student_vocab());
    std::shared_ptr<const bld::byte_trie> teacher = std::make_shared<const bld::byte_trie>(teacher_vocab());
    bld::distiller d;
    static constexpr std::int64_t B = 2, S = 7;
    std::int64_t V = 0;
    torch::Tensor sids, smask;             // [B, S] int64 each (the mask: Hugging Face's attention_mask)
    std::vector<std::int64_t> s_len{7, 5};
    bld::target_batch targets;

    explicit batch(bld::target_layout layout, bld::dtype precision = bld::dtype::f32)
        : d(teacher, student, [&] {
              bld::distiller_options o;
              o.heads = 3; // ≥ the longest student token: every text byte has a slot
              o.layout = layout;
              o.precision = precision;
              o.shifted = true;
              return o;
          }()) {
        V = static_cast<std::int64_t>(student->size()) + 2; // two padding columns
        std::mt19937 rng(17);
        const std::vector<std::int64_t> pool{1, 2, 3, 4, 5, 6, 7};
        sids = torch::zeros({B, S}, torch::kInt64);
        smask = torch::zeros({B, S}, torch::kInt64);
        std::vector<std::int64_t> t_len;
        std::vector<std::vector<std::int64_t>> tids;
        for (std::int64_t b = 0; b < B; ++b) {
            std::string text;
            for (std::int64_t t = 1; t < s_len[static_cast<std::size_t>(b)]; ++t) {
                const auto id = pool[rng() % pool.size()];
                sids.index_put_({b, t}, id);
                text += student->bytes(static_cast<std::size_t>(id));
            }
            smask.index_put_({b, torch::indexing::Slice(0, s_len[static_cast<std::size_t>(b)])}, 1);
            tids.push_back(bld_test::greedy_ids(teacher->vocab(), text));
            tids.back().insert(tids.back().begin(), 0);
            t_len.push_back(static_cast<std::int64_t>(tids.back().size()));
        }
        const std::int64_t St = std::max(t_len[0], t_len[1]);
        auto t_ids = torch::zeros({B, St}, torch::kInt64);
        for (std::int64_t b = 0; b < B; ++b)
            for (std::size_t t = 0; t < tids[static_cast<std::size_t>(b)].size(); ++t)
                t_ids.index_put_({b, static_cast<std::int64_t>(t)}, tids[static_cast<std::size_t>(b)][t]);
        const auto t_logits = torch::randn({B, St, 9}, torch::kFloat32) * 1.5;
        bld::batch_ranges r;
        r.teacher_lengths = t_len;
        r.student_lengths = s_len;
        targets = d.targets(t_logits, t_ids, sids, r);
    }

    /// The oracle: the distiller's own call on the same batch (lengths instead of the mask).
    template <class T, class G>
    bld::token_head_result direct(const torch::Tensor& logits, torch::Tensor grad,
                                  const bld::token_head_options& o) const {
        bld::student_batch<T> sb;
        sb.logits = bld::as_view<const T, 3>(logits, "logits");
        sb.ids = bld::as_view<const std::int64_t, 2>(sids, "ids");
        sb.ranges.student_lengths = s_len;
        const auto g = bld::as_view<G, 3>(grad, "grad");
        return targets.precision() == bld::dtype::f32 ? d.token_head_loss(sb, targets.view<float>(), o, g)
                                                      : d.token_head_loss(sb, targets.view<bld::bf16>(), o, g);
    }
};

} // namespace

TEST_SUITE("torch") {

TEST_CASE("bld::autograd::token_head_loss: the distiller's value and gradient, one node, scaled by the incoming gradient") {
    torch::manual_seed(3);
    for (const auto layout : {bld::target_layout::compact, bld::target_layout::dense}) {
        CAPTURE(bld::to_string(layout));
        const batch in(layout);
        bld::token_head_options o;
        o.temperature = 1.3;
        o.weight = 0.7;
        SUBCASE("float64 logits, an integer attention mask, 3 * loss") {
            const auto z0 = torch::randn({in.B, in.S, in.V}, torch::kFloat64) * 2;
            auto expect = torch::full({in.B, in.S, in.V}, 9.0, torch::kFloat64);
            const auto r = in.direct<double, double>(z0, expect, o);
            REQUIRE(r.positions > 8);
            auto z = z0.clone().requires_grad_(true);
            auto loss = bld::autograd::token_head_loss(in.d, z, in.sids, in.targets, o, in.smask);
            CHECK(loss.dim() == 0);
            CHECK((loss.scalar_type() == torch::kFloat64));
            CHECK(loss.item<double>() == r.value);
            // one node, whose inputs are the logits alone
            REQUIRE(loss.grad_fn());
            REQUIRE(loss.grad_fn()->next_edges().size() >= 1);
            const auto& next = loss.grad_fn()->next_edges()[0].function;
            REQUIRE(next);
            CHECK(contains(next->name(), "AccumulateGrad"));
            (3.0 * loss).backward();
            CHECK(torch::allclose(z.grad(), 3.0 * expect, 1e-15, 0.0));
            // the padded rows and the last row of each sequence get nothing
            CHECK(z.grad().index({1, torch::indexing::Slice(4)}).abs().max().item<double>() == 0.0);
        }
        SUBCASE("float32 logits, a bool mask, sum reduction: equal to the float gradient of the direct call") {
            o.reduction = bld::token_head_reduction::sum;
            const auto z0 = torch::randn({in.B, in.S, in.V}, torch::kFloat32) * 2;
            auto expect = torch::empty({in.B, in.S, in.V}, torch::kFloat32);
            const auto r = in.direct<float, float>(z0, expect, o);
            auto z = z0.clone().requires_grad_(true);
            auto loss = bld::autograd::token_head_loss(in.d, z, in.sids, in.targets.view<float>(), o, in.smask.to(torch::kBool));
            CHECK((loss.scalar_type() == torch::kFloat32));
            CHECK(loss.item<float>() == static_cast<float>(r.value));
            loss.backward();
            CHECK(torch::equal(z.grad(), expect));
        }
    }
}

TEST_CASE("bld::autograd::token_head_loss: bf16 logits give a bf16 gradient close to the float one") {
    torch::manual_seed(4);
    const batch in(bld::target_layout::compact, bld::dtype::bf16);
    const auto zb = (torch::randn({in.B, in.S, in.V}) * 2).to(torch::kBFloat16);
    auto z = zb.clone().requires_grad_(true);
    auto loss = bld::autograd::token_head_loss(in.d, z, in.sids, in.targets, {}, in.smask);
    CHECK((loss.scalar_type() == torch::kFloat32));
    loss.backward();
    CHECK((z.grad().scalar_type() == torch::kBFloat16));
    // The same bf16 values widened to float32: the same loss up to the row pass's rounding.
    auto zf = zb.to(torch::kFloat32).requires_grad_(true);
    auto lf = bld::autograd::token_head_loss(in.d, zf, in.sids, in.targets, {}, in.smask);
    lf.backward();
    CHECK(loss.item<double>() == doctest::Approx(lf.item<double>()).epsilon(1e-6));
    const auto diff = (z.grad().to(torch::kFloat32) - zf.grad()).abs();
    const double scale = zf.grad().abs().max().item<double>();
    CHECK(scale > 1e-3);
    // bf16 keeps 8 significant bits: each entry within 2^-8 of itself, plus the float path's own noise
    CHECK(torch::all(diff <= zf.grad().abs() * (1.0 / 256) + 1e-6 * scale).item<bool>());
}

TEST_CASE("bld::autograd::token_head_loss: no gradient wanted, no graph; bad input is bld's error") {
    torch::manual_seed(5);
    const batch in(bld::target_layout::compact);
    const auto z = torch::randn({in.B, in.S, in.V}, torch::kFloat32);
    const auto with = bld::autograd::token_head_loss(in.d, z.clone().requires_grad_(true), in.sids, in.targets, {}, in.smask);
    {
        torch::NoGradGuard no_grad;
        const auto without = bld::autograd::token_head_loss(in.d, z.clone().requires_grad_(true), in.sids, in.targets, {}, in.smask);
        CHECK_FALSE(without.requires_grad());
        CHECK(without.item<float>() == with.item<float>());
    }
    const auto call = [&](const torch::Tensor& logits, const torch::Tensor& ids, const torch::Tensor& mask) {
        return bld::autograd::token_head_loss(in.d, logits, ids, in.targets, {}, mask);
    };
    // logits of the wrong rank, dtype, or fewer columns than the vocabulary
    auto msg = message_of<bld::shape_error>([&] { (void)call(z[0], in.sids, in.smask); });
    CHECK(contains(msg, "student_logits"));
    CHECK(contains(msg, "[B, S_s, V_s]"));
    CHECK(contains(message_of<bld::shape_error>([&] { (void)call(z.to(torch::kInt32), in.sids, in.smask); }), "float32, bfloat16"));
    CHECK(contains(message_of<bld::shape_error>([&] { (void)call(z.narrow(2, 0, 5).contiguous(), in.sids, in.smask); }), "narrower"));
    CHECK(contains(message_of<bld::shape_error>([&] { (void)call(z.transpose(0, 1), in.sids, in.smask); }), "student_logits"));
    // ids: int32, another shape, an id outside the vocabulary
    CHECK(contains(message_of<bld::shape_error>([&] { (void)call(z, in.sids.to(torch::kInt32), in.smask); }), "student_ids"));
    CHECK(contains(message_of<bld::shape_error>([&] { (void)call(z, in.sids.narrow(1, 0, 6).contiguous(), in.smask); }), "student_ids"));
    auto bad_ids = in.sids.clone();
    bad_ids.index_put_({1, 2}, 40);
    msg = message_of<bld::value_error>([&] { (void)call(z, bad_ids, in.smask); });
    CHECK(contains(msg, "sequence 1"));
    CHECK(contains(msg, "outside the student's vocabulary"));
    // targets of another batch (a shorter one)
    const auto other = torch::zeros({in.B, in.S - 1, in.V});
    msg = message_of<bld::shape_error>([&] {
        (void)call(other, in.sids.narrow(1, 0, in.S - 1).contiguous(), in.smask.narrow(1, 0, in.S - 1).contiguous());
    });
    CHECK(contains(msg, "targets of this batch"));
    // NaN logits: the row pass names the row and column
    auto nan = z.clone();
    nan.index_put_({0, 2, 3}, std::numeric_limits<float>::quiet_NaN());
    msg = message_of<bld::value_error>([&] { (void)call(nan, in.sids, in.smask); });
    CHECK(contains(msg, "sequence 0"));
    // masks: a gap, a float mask, the wrong rank
    auto gap = in.smask.clone();
    gap.index_put_({0, 3}, 0);
    CHECK(contains(message_of<bld::value_error>([&] { (void)call(z, in.sids, gap); }), "one contiguous run"));
    CHECK(contains(message_of<bld::shape_error>([&] { (void)call(z, in.sids, in.smask.to(torch::kFloat32)); }), "student_mask"));
    CHECK(contains(message_of<bld::shape_error>([&] { (void)call(z, in.sids, in.smask[0]); }), "student_mask"));
    // options
    bld::token_head_options o;
    o.temperature = 0;
    CHECK_THROWS_AS((void)bld::autograd::token_head_loss(in.d, z, in.sids, in.targets, o), bld::value_error);
    // undefined tensors
    CHECK_THROWS_AS((void)call(torch::Tensor(), in.sids, in.smask), bld::shape_error);
    CHECK_THROWS_AS((void)call(z, torch::Tensor(), in.smask), bld::shape_error);
}

} // TEST_SUITE
