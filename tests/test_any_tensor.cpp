// Any tensor type enters the projections, the distiller and the losses through the tensor
// concepts: a type that states its rank and element type (tensor_view, std::span, std::vector,
// Eigen) is checked at compile time; one that does not (torch::Tensor) at run time.
#include <bld/cpu.hpp>
#include <bld/targets/distiller.hpp>
#include <bld/testing/toy_teachers.hpp>
#include <doctest/doctest.h>
#if BLD_TEST_EIGEN
#include <bld/adapters/eigen.hpp>
#endif

#include <random>
#include <vector>

namespace {

using ids_span = std::span<const std::int64_t>;

template <class Rows>
concept fast_projects = requires(const bld::row_plan& p, const Rows& r, ids_span ids) { bld::canonical_path(p, r, ids); };
template <class Rows>
concept reference_projects = requires(const bld::byte_trie& t, const Rows& r, ids_span ids) {
    bld::reference::canonical_path(t, r, ids);
};
template <class L, class I>
concept distills = requires(const bld::distiller& d, const L& l, const I& i) { d.targets(l, i, i); };

// Rank and element type, where the type says them, are checked at compile time.
static_assert(fast_projects<bld::tensor_view<const float, 2>>);
static_assert(fast_projects<bld::tensor_view<float, 2>>); // mutable views too
static_assert(fast_projects<bld::tensor_view<bld::f16, 2>>);
static_assert(!fast_projects<bld::tensor_view<const float, 3>>);
static_assert(!fast_projects<bld::tensor_view<const std::int32_t, 2>>);
static_assert(!fast_projects<std::vector<float>>); // rank 1
static_assert(reference_projects<bld::tensor_view<double, 2>>);
static_assert(!reference_projects<bld::tensor_view<const std::int64_t, 2>>);
static_assert(distills<bld::tensor_view<float, 3>, bld::tensor_view<std::int64_t, 2>>);
static_assert(distills<bld::tensor_view<const bld::bf16, 2>, std::vector<std::int64_t>>);
static_assert(!distills<bld::tensor_view<const float, 4>, bld::tensor_view<std::int64_t, 2>>);
static_assert(!distills<bld::tensor_view<const float, 3>, std::vector<std::int32_t>>);
#if BLD_TEST_EIGEN
using row_major = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
static_assert(fast_projects<row_major>);
static_assert(!fast_projects<Eigen::VectorXf>);
#endif

bld::byte_trie toy_trie() {
    using bld::token_kind;
    return bld::byte_trie(bld::vocabulary::from_entries(
        {{0, "", token_kind::special, "<eos>"}, {1, "a", token_kind::text, ""}, {2, "b", token_kind::text, ""},
         {3, "ab", token_kind::text, ""}, {4, "ba", token_kind::text, ""}, {5, "abb", token_kind::text, ""}},
        "toy"));
}

} // namespace

TEST_CASE("any tensor type: mutable views and Eigen matrices project like const views") {
    const auto trie = toy_trie();
    const bld::row_plan plan(trie);
    const std::vector<std::int64_t> ids{3, 2, 4, 1};
    std::vector<float> rows(ids.size() * 6);
    std::mt19937 g(3);
    std::normal_distribution<float> n(0.0f, 2.0f);
    for (auto& x : rows) x = n(g);
    const bld::tensor_view<const float, 2> cv(rows.data(), {4, 6});
    const bld::tensor_view<float, 2> mv(rows.data(), {4, 6});
    const auto a = bld::canonical_path(plan, cv, ids);
    const auto b = bld::canonical_path(plan, mv, ids);
    CHECK(a.probs == b.probs);
    const auto r = bld::reference::canonical_path(trie, mv, ids);
    for (std::size_t i = 0; i < r.probs.size(); ++i) CHECK(a.probs[i] == doctest::Approx(r.probs[i]).epsilon(1e-5));
#if BLD_TEST_EIGEN
    const row_major m = Eigen::Map<const row_major>(rows.data(), 4, 6);
    CHECK(bld::canonical_path(plan, m, ids).probs == a.probs);
    const Eigen::MatrixXf col = m; // column-major: refused at run time, naming the argument
    CHECK_THROWS_WITH_AS((void)bld::canonical_path(plan, col, ids), doctest::Contains("`rows`"), bld::shape_error);
#endif
}

namespace {
template <class L, class P, class Y, class M>
concept bld_loss_takes = requires(const L& l, const P& p, const Y& y, const M& m) { bld::bld_loss(l, p, y, m); };
using f3 = bld::tensor_view<const float, 3>;
using u2 = bld::tensor_view<const std::uint8_t, 2>;
using i2 = bld::tensor_view<const std::int64_t, 2>;
static_assert(bld_loss_takes<f3, f3, i2, u2>);
static_assert(bld_loss_takes<f3, bld::tensor_view<double, 3>, bld::tensor_view<std::int32_t, 2>, bld::no_tensor_t>);
static_assert(!bld_loss_takes<bld::tensor_view<const float, 2>, f3, i2, u2>);  // logits of rank 2
static_assert(!bld_loss_takes<f3, bld::tensor_view<const bld::bf16, 3>, i2, u2>); // bf16 dense targets
static_assert(!bld_loss_takes<f3, f3, bld::tensor_view<const float, 2>, u2>);  // float true bytes
static_assert(!bld_loss_takes<f3, f3, i2, bld::tensor_view<const float, 2>>);  // float mask
static_assert(!bld_loss_takes<f3, f3, i2, std::vector<std::uint8_t>>);          // rank-1 mask
} // namespace
