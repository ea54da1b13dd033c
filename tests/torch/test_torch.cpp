// Tests of bld/adapters/torch.hpp and bld/torch/byte_head.hpp (built only with bld::torch).
// The adapter header is included first: it must compile on its own.
#include <bld/adapters/torch.hpp>
#include <bld/loss/byte_loss.hpp>
#include <bld/torch/byte_head.hpp>
#include <bld/torch/loss.hpp>

#include <doctest/doctest.h>
#include <torch/torch.h>

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "../error_text.hpp"

namespace {

using bld_test::contains;
using bld_test::message_of;

/// The oracle of the autograd losses: λ_b · CE + λ_KL · forward KL(p ‖ softmax(z/τ)) written
/// with libtorch operations and differentiated by libtorch's own autograd; per-slot values
/// (zeros at inactive slots) or the eq5 reduction (sum over active slots / tokens with one).
torch::Tensor oracle_loss(const torch::Tensor& z, const torch::Tensor& p, const torch::Tensor& y,
                          const torch::Tensor& mask, double lambda_byte, double lambda_kl, double tau,
                          bool per_slot) {
    auto lq = torch::log_softmax(z / tau, -1);
    auto plogp = torch::where(p > 0, p * torch::log(p), torch::zeros_like(p));
    auto kl = (plogp - p * lq).sum(-1);
    auto ce = -torch::log_softmax(z, -1).gather(-1, y.unsqueeze(-1)).squeeze(-1);
    auto m = mask.to(z.scalar_type());
    auto v = (lambda_byte * ce + lambda_kl * kl) * m;
    if (per_slot) return v;
    return v.sum() / (m.sum(-1) > 0).to(z.scalar_type()).sum();
}

struct loss_inputs {
    torch::Tensor z, p, y, mask;
    loss_inputs(std::int64_t T, std::int64_t K, torch::Dtype dt) {
        z = (torch::randn({T, K, 260}, torch::kFloat64) * 2).to(dt);
        p = torch::softmax(torch::randn({T, K, 260}, torch::kFloat64) * 3, -1).to(dt);
        p.index_put_({0, 0}, 0.0);  // a one-hot target: p log p = 0 terms
        p.index_put_({0, 0, 7}, 1.0);
        y = torch::randint(0, 257, {T, K});
        mask = torch::rand({T, K}) > 0.3;
        mask.index_put_({0, 0}, true);
        mask.index_put_({T - 1}, false);  // a token with no active slot
    }
};

}  // namespace

static_assert(bld::tensor_source<torch::Tensor>);

TEST_SUITE("torch") {

TEST_CASE("torch::Tensor views: dtypes, writes, bf16, bool") {
    auto t = torch::arange(6, torch::kFloat32).reshape({2, 3});
    auto v = bld::as_view<float, 2>(t, "t", {2, 3});
    CHECK(v(1, 2) == 5.0f);
    v(0, 0) = -1.0f;
    CHECK(t[0][0].item<float>() == -1.0f);
    CHECK(bld::as_view<const double, 1>(torch::ones({4}, torch::kFloat64), "d")(3) == 1.0);
    CHECK(bld::as_view<const std::int64_t, 1>(torch::arange(3), "i")(2) == 2);
    CHECK(bld::as_view<const std::int32_t, 1>(torch::arange(3, torch::kInt32), "i")(1) == 1);
    CHECK(bld::as_view<const std::uint8_t, 1>(torch::ones({2}, torch::kUInt8), "u")(1) == 1);
    CHECK(bld::as_view<const bool, 1>(torch::ones({2}, torch::kBool), "b")(0));

    auto h = torch::tensor({1.0f, -2.5f, 3.14159f}).to(torch::kBFloat16);
    auto hv = bld::as_view<const bld::bf16, 1>(h, "h");
    for (int i = 0; i < 3; ++i) CHECK(float(hv(i)) == h[i].item<float>());
    // bld's rounding agrees with libtorch's.
    auto r = torch::randn({1000});
    auto rb = r.to(torch::kBFloat16);
    auto rv = bld::as_view<const float, 1>(r, "r");
    auto rbv = bld::as_view<const bld::bf16, 1>(rb, "rb");
    int mismatches = 0;
    for (int i = 0; i < 1000; ++i) mismatches += bld::bf16(rv(i)).bits == rbv(i).bits ? 0 : 1;
    CHECK(mismatches == 0);
    CHECK((bld::to_torch_dtype(bld::dtype::bf16) == torch::kBFloat16));
}

TEST_CASE("torch::Tensor errors: dtype, shape, layout, undefined") {
    auto t = torch::zeros({3, 4}, torch::kFloat32);
    auto msg = message_of<bld::shape_error>([&] { (void)bld::as_view<const double, 2>(t, "logits"); });
    CHECK(contains(msg, "`logits`"));
    CHECK(contains(msg, "got float32 [3, 4] on cpu"));
    msg = message_of<bld::shape_error>([&] { (void)bld::as_view<const float, 2>(t.t(), "hidden"); });
    CHECK(contains(msg, "non-contiguous"));
    CHECK(contains(msg, "strides [1, 4]"));
    CHECK(contains(msg, ".contiguous()"));
    msg = message_of<bld::shape_error>([&] { (void)bld::as_view<const float, 2>(t.to(torch::kInt8), "x"); });
    CHECK(contains(msg, "`x`"));
    CHECK(contains(msg, "torch.Char is not supported"));
    // float16 is bld::f16: a view of the same storage, values widened exactly.
    const auto h = (t + 0.5f).to(torch::kHalf);
    const auto hv = bld::as_view<const bld::f16, 2>(h, "h");
    CHECK(static_cast<float>(hv(1, 2)) == 0.5f);
    CHECK((bld::to_torch_dtype(bld::dtype::f16) == torch::kHalf));
    msg = message_of<bld::shape_error>([&] { (void)bld::as_view<const float, 2>(torch::Tensor(), "y"); });
    CHECK(contains(msg, "`y`"));
    CHECK(contains(msg, "undefined"));
    msg = message_of<bld::shape_error>([&] { (void)bld::as_view<const float, 2>(t, "m", {3, 5}); });
    CHECK(contains(msg, "dimension 1 is 4, expected 5"));
}

TEST_CASE("byte losses on torch tensors match a libtorch autograd implementation") {
    torch::manual_seed(0);
    const std::int64_t T = 5, K = 3;
    auto z = torch::randn({T, K, 260}, torch::kFloat64) * 2;
    auto p = torch::softmax(torch::randn({T, K, 260}, torch::kFloat64) * 3, -1);
    p.index_put_({0, 0}, 0.0);
    p.index_put_({0, 0, 7}, 1.0);
    auto y = torch::randint(0, 257, {T, K});
    auto mask = torch::rand({T, K}) > 0.3;
    mask.index_put_({0, 0}, true);
    const double tau = 1.7;

    auto grad = torch::empty_like(z);
    const auto r = bld::bld_loss(z, p, y, mask, {.lambda_byte = 1.0, .lambda_kl = 0.1, .temperature = tau}, grad);

    auto zr = z.clone().requires_grad_(true);
    auto lq = torch::log_softmax(zr / tau, -1);
    auto plogp = torch::where(p > 0, p * torch::log(p), torch::zeros_like(p));
    auto kl = (plogp - p * lq).sum(-1);
    auto ce = -torch::log_softmax(zr, -1).gather(-1, y.unsqueeze(-1)).squeeze(-1);
    auto m = mask.to(torch::kFloat64);
    auto tokens = (m.sum(-1) > 0).to(torch::kFloat64).sum();
    auto loss = ((ce + 0.1 * kl) * m).sum() / tokens;
    loss.backward();

    CHECK(r.value == doctest::Approx(loss.item<double>()).epsilon(1e-12));
    CHECK(torch::allclose(grad, zr.grad(), 1e-10, 1e-12));
}

TEST_CASE("bld::autograd losses: backward equals libtorch autograd of the same formula") {
    torch::manual_seed(3);
    const std::int64_t T = 6, K = 4;
    const double tau = 1.7;
    const loss_inputs in(T, K, torch::kFloat64);

    SUBCASE("bld_loss, eq5, an incoming gradient of 2.5 (the chain rule)") {
        auto z = in.z.clone().requires_grad_(true);
        auto loss = bld::autograd::bld_loss(z, in.p, in.y, in.mask, {.lambda_kl = 0.1, .temperature = tau});
        CHECK(loss.dim() == 0);
        CHECK(loss.requires_grad());
        (2.5 * loss).backward();
        auto zr = in.z.clone().requires_grad_(true);
        auto ref = oracle_loss(zr, in.p, in.y, in.mask, 1.0, 0.1, tau, false);
        (2.5 * ref).backward();
        CHECK(loss.item<double>() == doctest::Approx(ref.item<double>()).epsilon(1e-12));
        CHECK(torch::allclose(z.grad(), zr.grad(), 1e-10, 1e-13));
        // the value is bld::bld_loss's, bit for bit
        const auto direct = bld::bld_loss(in.z, in.p, in.y, in.mask, {.lambda_kl = 0.1, .temperature = tau});
        CHECK(loss.item<double>() == direct.value);
    }
    SUBCASE("reduction none: per-slot values, a weighted sum backpropagates slot by slot") {
        auto z = in.z.clone().requires_grad_(true);
        auto v = bld::autograd::bld_loss(z, in.p, in.y, in.mask,
                                         {.lambda_kl = 0.3, .temperature = tau, .reduction = bld::loss_reduction::none});
        CHECK(v.sizes().vec() == std::vector<std::int64_t>{T, K});
        auto w = torch::rand({T, K}, torch::kFloat64);
        (v * w).sum().backward();
        auto zr = in.z.clone().requires_grad_(true);
        auto ref = oracle_loss(zr, in.p, in.y, in.mask, 1.0, 0.3, tau, true);
        (ref * w).sum().backward();
        CHECK(torch::allclose(v, ref.detach(), 1e-12, 1e-14));
        CHECK(torch::allclose(z.grad(), zr.grad(), 1e-10, 1e-13));
    }
    SUBCASE("byte_loss (KL only) and byte_cross_entropy (CE only), no mask") {
        auto all = torch::ones({T, K}, torch::kBool);
        auto z1 = in.z.clone().requires_grad_(true);
        bld::autograd::byte_loss(z1, in.p, {}, {.temperature = tau}).backward();
        auto zr1 = in.z.clone().requires_grad_(true);
        oracle_loss(zr1, in.p, in.y, all, 0.0, 1.0, tau, false).backward();
        CHECK(torch::allclose(z1.grad(), zr1.grad(), 1e-10, 1e-13));
        auto z2 = in.z.clone().requires_grad_(true);
        bld::autograd::byte_cross_entropy(z2, in.y).backward();
        auto zr2 = in.z.clone().requires_grad_(true);
        oracle_loss(zr2, in.p, in.y, all, 1.0, 0.0, 1.0, false).backward();
        CHECK(torch::allclose(z2.grad(), zr2.grad(), 1e-10, 1e-13));
    }
    SUBCASE("no gradient wanted: the same value, no graph") {
        const auto with = bld::autograd::bld_loss(in.z.clone().requires_grad_(true), in.p, in.y, in.mask);
        torch::NoGradGuard no_grad;
        const auto without = bld::autograd::bld_loss(in.z.clone().requires_grad_(true), in.p, in.y, in.mask);
        CHECK_FALSE(without.requires_grad());
        CHECK(without.item<double>() == with.item<double>());
    }
}

TEST_CASE("bld::autograd losses: float32 through a byte_head reach its parameters; bad input is bld's error") {
    torch::manual_seed(4);
    const std::int64_t T = 5, K = 3, H = 12;
    const loss_inputs in(T, K, torch::kFloat32);
    auto hidden = torch::randn({T, H});
    bld::byte_head head(H, K);
    bld::byte_head twin(H, K);
    {
        torch::NoGradGuard no_grad;
        twin->weight.copy_(head->weight);
        twin->bias.copy_(head->bias);
    }
    auto loss = bld::autograd::bld_loss(head(hidden), in.p, in.y, in.mask);
    CHECK((loss.scalar_type() == torch::kFloat32));
    loss.backward();
    auto ref = oracle_loss(twin(hidden), in.p, in.y, in.mask, 1.0, 0.1, 1.0, false);
    ref.backward();
    CHECK(loss.item<double>() == doctest::Approx(ref.item<double>()).epsilon(1e-5));
    REQUIRE(head->weight.grad().defined());
    CHECK(torch::allclose(head->weight.grad(), twin->weight.grad(), 1e-4, 1e-6));
    CHECK(torch::allclose(head->bias.grad(), twin->bias.grad(), 1e-4, 1e-6));

    auto z = in.z.clone().requires_grad_(true);
    auto msg = message_of<bld::value_error>([&] {
        (void)bld::autograd::bld_loss(z, in.p.clone().requires_grad_(true), in.y, in.mask);
    });
    CHECK(contains(msg, "argument `targets`"));
    CHECK(contains(msg, "requires grad"));
    msg = message_of<bld::shape_error>([&] { (void)bld::autograd::bld_loss(z.select(1, 0), in.p, in.y, in.mask); });
    CHECK(contains(msg, "bld::autograd::bld_loss"));
    CHECK(contains(msg, "expected [T, K, 260]"));
    msg = message_of<bld::shape_error>([&] { (void)bld::autograd::byte_loss(z, torch::Tensor()); });
    CHECK(contains(msg, "argument `targets`"));
    auto bad = in.z.clone();
    bad.index_put_({1, 2, 3}, std::numeric_limits<float>::quiet_NaN());
    msg = message_of<bld::value_error>([&] {
        (void)bld::autograd::bld_loss(bad.requires_grad_(true), in.p, in.y, torch::ones({T, K}, torch::kBool));
    });
    CHECK(contains(msg, "NaN"));
}

namespace {

/// The slot targets of loss_inputs as a bld::slot_targets_view (compact: the active slots' rows
/// in slot order; dense: every slot's row), with the tensors that hold its memory.
template <class P>
struct targets_of {
    torch::Tensor values, slots, mask, true_bytes;
    bld::slot_targets_view<P> view;
    targets_of(const loss_inputs& in, bld::target_layout layout) {
        const auto T = in.z.size(0), K = in.z.size(1);
        const auto flat = in.p.reshape({T * K, 260});
        slots = in.mask.reshape({T * K}).nonzero().squeeze(1).contiguous();
        values = (layout == bld::target_layout::compact ? flat.index_select(0, slots) : flat).contiguous();
        mask = in.mask.to(torch::kUInt8).contiguous();
        true_bytes = torch::where(in.mask, in.y, torch::full_like(in.y, -1)).to(torch::kInt32).contiguous();
        view.layout = layout;
        view.tokens = T;
        view.heads = K;
        view.values = bld::as_view<const P, 2>(values, "values");
        if (layout == bld::target_layout::compact) view.slots = bld::as_view<const std::int64_t, 1>(slots, "slots");
        view.mask = bld::as_view<const std::uint8_t, 2>(mask, "mask");
        view.true_bytes = bld::as_view<const std::int32_t, 2>(true_bytes, "true_bytes");
    }
};

}  // namespace

TEST_CASE("bld::autograd::bld_loss on slot targets: the dense-tensor route's value and gradient") {
    torch::manual_seed(5);
    const std::int64_t T = 7, K = 4;
    const double tau = 1.3;
    for (const auto layout : {bld::target_layout::compact, bld::target_layout::dense}) {
        CAPTURE(bld::to_string(layout));
        SUBCASE("float64, eq5, an incoming gradient of 2.5; and the libtorch oracle") {
            const loss_inputs in(T, K, torch::kFloat64);
            const targets_of<double> t(in, layout);
            const bld::bld_loss_options o{.lambda_byte = 0.7, .lambda_kl = 0.4, .temperature = tau};
            auto z = in.z.clone().requires_grad_(true);
            auto loss = bld::autograd::bld_loss(z, t.view, o);
            CHECK(loss.dim() == 0);
            (2.5 * loss).backward();
            auto zd = in.z.clone().requires_grad_(true);
            auto dense = bld::autograd::bld_loss(zd, in.p, in.y, in.mask, o);
            (2.5 * dense).backward();
            CHECK(loss.item<double>() == doctest::Approx(dense.item<double>()).epsilon(1e-13));
            CHECK(torch::allclose(z.grad(), zd.grad(), 1e-12, 1e-15));
            auto zr = in.z.clone().requires_grad_(true);
            auto ref = oracle_loss(zr, in.p, in.y, in.mask, 0.7, 0.4, tau, false);
            (2.5 * ref).backward();
            CHECK(loss.item<double>() == doctest::Approx(ref.item<double>()).epsilon(1e-12));
            CHECK(torch::allclose(z.grad(), zr.grad(), 1e-10, 1e-13));
        }
        SUBCASE("float32 through a byte_head (the example's route): the dense route's value and gradients") {
            const std::int64_t H = 9;
            const loss_inputs in(T, K, torch::kFloat32);
            const targets_of<float> t(in, layout);
            auto hidden = torch::randn({T, H});
            bld::byte_head head(H, K), twin(H, K);
            {
                torch::NoGradGuard no_grad;
                twin->weight.copy_(head->weight);
                twin->bias.copy_(head->bias);
            }
            auto loss = bld::autograd::bld_loss(head(hidden), t.view, {.lambda_kl = 0.1});
            CHECK((loss.scalar_type() == torch::kFloat32));
            loss.backward();
            auto dense = bld::autograd::bld_loss(twin(hidden), in.p, in.y, in.mask, {.lambda_kl = 0.1});
            dense.backward();
            CHECK(loss.item<double>() == doctest::Approx(dense.item<double>()).epsilon(1e-6));
            CHECK(torch::allclose(head->weight.grad(), twin->weight.grad(), 1e-5, 1e-7));
            CHECK(torch::allclose(head->bias.grad(), twin->bias.grad(), 1e-5, 1e-7));
        }
        SUBCASE("reduction none: per-slot values, a weighted sum backpropagates slot by slot") {
            const loss_inputs in(T, K, torch::kFloat64);
            const targets_of<double> t(in, layout);
            const bld::bld_loss_options o{.lambda_kl = 0.3, .reduction = bld::loss_reduction::none};
            auto z = in.z.clone().requires_grad_(true);
            auto v = bld::autograd::bld_loss(z, t.view, o);
            CHECK(v.sizes().vec() == std::vector<std::int64_t>{T, K});
            auto w = torch::rand({T, K}, torch::kFloat64);
            (v * w).sum().backward();
            auto zd = in.z.clone().requires_grad_(true);
            auto vd = bld::autograd::bld_loss(zd, in.p, in.y, in.mask, o);
            (vd * w).sum().backward();
            CHECK(torch::allclose(v, vd.detach(), 1e-13, 1e-15));
            CHECK(torch::allclose(z.grad(), zd.grad(), 1e-12, 1e-15));
        }
    }
    SUBCASE("no gradient wanted: the same value, no graph; bad input is bld's error") {
        const loss_inputs in(T, K, torch::kFloat32);
        const targets_of<float> t(in, bld::target_layout::compact);
        const auto with = bld::autograd::bld_loss(in.z.clone().requires_grad_(true), t.view);
        torch::NoGradGuard no_grad;
        const auto without = bld::autograd::bld_loss(in.z.clone().requires_grad_(true), t.view);
        CHECK_FALSE(without.requires_grad());
        CHECK(without.item<double>() == with.item<double>());
        auto msg = message_of<bld::shape_error>([&] { (void)bld::autograd::bld_loss(in.z.narrow(0, 0, T - 1), t.view); });
        CHECK(contains(msg, "argument `logits`"));
        CHECK(contains(msg, "to match the targets' slots"));
    }
}

TEST_CASE("byte_head: shapes, per-head linear layers, errors") {
    torch::manual_seed(1);
    bld::byte_head head(16, 4);
    CHECK(head->weight.sizes().vec() == std::vector<std::int64_t>{4, 260, 16});
    CHECK(head->bias.sizes().vec() == std::vector<std::int64_t>{4, 260});
    CHECK(head->parameters().size() == 2);
    CHECK(head->weight.abs().max().item<double>() <= 0.25);  // 1/√16
    auto x = torch::randn({2, 3, 16});
    auto out = head(x);
    CHECK(out.sizes().vec() == std::vector<std::int64_t>{2, 3, 4, 260});
    for (int j = 0; j < 4; ++j) {
        auto expect = torch::linear(x, head->weight[j], head->bias[j]);
        CHECK(torch::allclose(out.select(2, j), expect, 1e-5, 1e-6));
    }
    out.sum().backward();
    CHECK(head->weight.grad().defined());

    auto msg = message_of<bld::shape_error>([&] { (void)head(torch::randn({2, 15})); });
    CHECK(contains(msg, "expected [..., 16], got [2, 15]"));
    CHECK_THROWS_AS(bld::byte_head(16, 261), bld::value_error);
    CHECK_THROWS_AS(bld::byte_head(0, 10), bld::value_error);
    CHECK(bld::byte_head(8)->heads() == 10);
}

}  // TEST_SUITE
