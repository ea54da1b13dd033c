// Tests of bld/adapters/torch.hpp and bld/torch/byte_head.hpp (built only with bld::torch).
// The adapter header is included first: it must compile on its own.
#include <bld/adapters/torch.hpp>
#include <bld/loss.hpp>
#include <bld/torch/byte_head.hpp>

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
    msg = message_of<bld::shape_error>([&] { (void)bld::as_view<const float, 2>(t.to(torch::kHalf), "x"); });
    CHECK(contains(msg, "`x`"));
    CHECK(contains(msg, "torch.Half is not supported"));
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
