// Tests of bld/core/tensor.hpp (views, bf16, the adapter customization point) and of the Eigen
// adapter (when Eigen is present).
#include <bld/core/tensor.hpp>
#if BLD_TEST_EIGEN
#include <bld/adapters/eigen.hpp>
#endif

#include <doctest/doctest.h>

#include <array>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <span>
#include <string>
#include <vector>

#include "error_text.hpp"

// ------------------------------------------------------------------------------------------
// A foreign tensor type, in its own namespace, with a run-time dtype, strides and a device —
// the shape of what a real tensor library hands over.
namespace lab {

enum class kind { f32, f64, f16 };

struct grid {
    kind element = kind::f32;
    std::vector<std::int64_t> shape;
    std::vector<std::int64_t> strides;  // in elements
    std::vector<unsigned char> storage;
    bool on_gpu = false;

    static grid dense_f32(std::vector<std::int64_t> shape) {
        grid g;
        g.shape = shape;
        g.strides.assign(shape.size(), 1);
        for (std::size_t d = shape.size(); d-- > 1;) g.strides[d - 1] = g.strides[d] * shape[d];
        std::int64_t n = 1;
        for (auto e : shape) n *= e;
        g.storage.resize(static_cast<std::size_t>(n) * sizeof(float));
        return g;
    }
    float* floats() { return reinterpret_cast<float*>(storage.data()); }
};

}  // namespace lab

// The customization, written from outside bld, exactly as a user would.
template <>
struct bld::tensor_adapter<lab::grid> {
    static bld::dtype scalar_type(const lab::grid& g) {
        switch (g.element) {
            case lab::kind::f32: return bld::dtype::f32;
            case lab::kind::f64: return bld::dtype::f64;
            case lab::kind::f16: break;
        }
        throw bld::shape_error("lab::grid dtype", "", "float16 is not supported by bld");
    }
    static std::size_t rank(const lab::grid& g) { return g.shape.size(); }
    static std::int64_t extent(const lab::grid& g, std::size_t d) { return g.shape[d]; }
    static bool is_contiguous(const lab::grid& g) {
        std::int64_t s = 1;
        for (std::size_t d = g.shape.size(); d-- > 0;) {
            if (g.strides[d] != s) return false;
            s *= g.shape[d];
        }
        return true;
    }
    static bld::device_kind device(const lab::grid& g) {
        return g.on_gpu ? bld::device_kind::cuda : bld::device_kind::cpu;
    }
    static void* data(lab::grid& g) { return g.storage.data(); }
    static const void* data(const lab::grid& g) { return g.storage.data(); }
    static std::string layout_note(const lab::grid&) { return "lab::grid is transposed"; }
};

static_assert(bld::tensor_source<lab::grid>);
static_assert(bld::tensor_source<const lab::grid&>);
static_assert(bld::tensor_source<std::vector<float>>);
static_assert(bld::tensor_source<std::span<const double>>);
static_assert(bld::tensor_source<bld::tensor_view<const float, 3>>);
static_assert(!bld::tensor_source<int>);
static_assert(!bld::tensor_source<std::string>);

namespace {

using bld_test::contains;
using bld_test::message_of;

}  // namespace

TEST_SUITE("tensor") {

TEST_CASE("bf16 rounds to nearest even and keeps NaN, infinities and signs") {
    static_assert(float(bld::bf16(1.0f)) == 1.0f);
    static_assert(bld::bf16(1.0f).bits == 0x3f80);
    static_assert(bld::bf16(-2.5f).bits == 0xc020);
    // Exactly halfway between 0x3f80 and 0x3f81: ties to the even 0x3f80.
    static_assert(bld::bf16(std::bit_cast<float>(0x3f808000u)).bits == 0x3f80);
    // Halfway between 0x3f81 and 0x3f82: ties to the even 0x3f82.
    static_assert(bld::bf16(std::bit_cast<float>(0x3f818000u)).bits == 0x3f82);
    // Just above and below halfway.
    static_assert(bld::bf16(std::bit_cast<float>(0x3f808001u)).bits == 0x3f81);
    static_assert(bld::bf16(std::bit_cast<float>(0x3f807fffu)).bits == 0x3f80);
    // The largest float rounds up to infinity; infinity stays.
    static_assert(bld::bf16(std::numeric_limits<float>::max()).bits == 0x7f80);
    static_assert(bld::bf16(-std::numeric_limits<float>::infinity()).bits == 0xff80);
    // Subnormals round like everything else.
    static_assert(bld::bf16(std::bit_cast<float>(0x00018000u)).bits == 0x0002);

    const float nan = std::numeric_limits<float>::quiet_NaN();
    CHECK(std::isnan(float(bld::bf16(nan))));
    CHECK(std::isnan(float(bld::bf16(-nan))));
    // A NaN whose payload sits only in the low bits must not become infinity.
    CHECK(std::isnan(float(bld::bf16(std::bit_cast<float>(0x7f800001u)))));

    // Every bf16 value round-trips through float exactly.
    int mismatches = 0;
    for (std::uint32_t b = 0; b < 0x10000u; ++b) {
        const auto h = bld::bf16::from_bits(static_cast<std::uint16_t>(b));
        const float f = h;
        if (std::isnan(f)) continue;
        mismatches += bld::bf16(f).bits == b ? 0 : 1;
    }
    CHECK(mismatches == 0);
}

TEST_CASE("dtype_of and names") {
    static_assert(bld::dtype_of<float> == bld::dtype::f32);
    static_assert(bld::dtype_of<const double> == bld::dtype::f64);
    static_assert(bld::dtype_of<bld::bf16> == bld::dtype::bf16);
    static_assert(bld::dtype_of<std::int32_t> == bld::dtype::i32);
    static_assert(bld::dtype_of<std::int64_t> == bld::dtype::i64);
    static_assert(bld::dtype_of<std::uint8_t> == bld::dtype::u8);
    static_assert(bld::dtype_of<bool> == bld::dtype::boolean);
    static_assert(!bld::tensor_element<char16_t>);
    static_assert(bld::size_of(bld::dtype::bf16) == 2);
    CHECK(bld::to_string(bld::dtype::bf16) == "bfloat16");
    CHECK(bld::to_string(bld::dtype::boolean) == "bool");
    CHECK(bld::to_string(bld::device_kind::cuda) == "cuda");
}

TEST_CASE("tensor_view indexing, rows, strides and const conversion") {
    std::vector<float> buf(2 * 3 * 4);
    for (std::size_t i = 0; i < buf.size(); ++i) buf[i] = static_cast<float>(i);
    bld::tensor_view<float, 3> v(buf.data(), {2, 3, 4});
    CHECK(v.size() == 24);
    CHECK(v.stride(0) == 12);
    CHECK(v.stride(1) == 4);
    CHECK(v.stride(2) == 1);
    CHECK(v(1, 2, 3) == 23.0f);
    CHECK(v(0, 1, 0) == 4.0f);
    auto r = v.row(1);
    static_assert(std::is_same_v<decltype(r), bld::tensor_view<float, 2>>);
    CHECK(r.extent(0) == 3);
    CHECK(r(0, 0) == 12.0f);
    CHECK(r.row(2)(3) == 23.0f);
    CHECK(r.row(2).span().size() == 4);
    v(0, 0, 1) = -1.0f;
    CHECK(buf[1] == -1.0f);

    bld::tensor_view<const float, 3> c = v;  // mutable → const
    CHECK(c.data() == v.data());
    static_assert(!std::is_convertible_v<bld::tensor_view<const float, 3>, bld::tensor_view<float, 3>>);
    static_assert(!std::is_convertible_v<bld::tensor_view<float, 3>, bld::tensor_view<double, 3>>);

    bld::tensor_view<const float, 1> empty;
    CHECK(empty.size() == 0);
    CHECK(empty.empty());

    CHECK_THROWS_AS((bld::tensor_view<float, 2>(buf.data(), {2, -1})), bld::shape_error);
    CHECK_THROWS_AS((bld::tensor_view<float, 2>(nullptr, {2, 1})), bld::shape_error);
    CHECK_NOTHROW((bld::tensor_view<float, 2>(nullptr, {0, 5})));
}

TEST_CASE("shaped and reshape check sizes") {
    std::vector<double> buf(6, 1.0);
    auto v = bld::shaped(buf, std::array<std::int64_t, 2>{2, 3});
    static_assert(std::is_same_v<decltype(v), bld::tensor_view<double, 2>>);
    CHECK(v(1, 2) == 1.0);
    const std::vector<double>& cbuf = buf;
    auto cv = bld::shaped(cbuf, std::array<std::int64_t, 3>{1, 2, 3});
    static_assert(std::is_same_v<decltype(cv), bld::tensor_view<const double, 3>>);
    auto sv = bld::shaped(std::span<double>(buf), std::array<std::int64_t, 1>{6});
    CHECK(sv.size() == 6);
    std::array<float, 4> arr{1, 2, 3, 4};
    CHECK(bld::shaped(arr, std::array<std::int64_t, 2>{2, 2})(1, 0) == 3.0f);

    const auto msg = message_of<bld::shape_error>([&] {
        (void)bld::shaped(buf, std::array<std::int64_t, 2>{4, 2});
    });
    CHECK(contains(msg, "6 elements"));
    CHECK(contains(msg, "[4, 2]"));

    auto r = bld::reshape(v, std::array<std::int64_t, 3>{3, 1, 2});
    CHECK(r(2, 0, 1) == 1.0);
    CHECK_THROWS_AS((void)bld::reshape(v, std::array<std::int64_t, 2>{4, 2}), bld::shape_error);
}

TEST_CASE("as_view from std containers and views") {
    std::vector<float> vec{1, 2, 3};
    auto v1 = bld::as_view<float, 1>(vec, "vec");
    v1(0) = 5.0f;
    CHECK(vec[0] == 5.0f);
    const std::vector<float>& cvec = vec;
    auto c1 = bld::as_view<const float, 1>(cvec, "cvec");
    CHECK(c1.size() == 3);
    auto s1 = bld::as_view<const float, 1>(std::span<const float>(vec), "span");
    CHECK(s1(2) == 3.0f);
    auto view = bld::shaped(vec, std::array<std::int64_t, 2>{3, 1});
    auto back = bld::as_view<const float, 2>(view, "view", {3, bld::any_extent});
    CHECK(back.data() == vec.data());
}

TEST_CASE("as_view errors name the argument, the expectation and what came") {
    std::vector<double> d(12);
    auto view = bld::shaped(d, std::array<std::int64_t, 3>{2, 3, 2});

    auto msg = message_of<bld::shape_error>([&] { (void)bld::as_view<const float, 3>(view, "logits"); });
    CHECK(contains(msg, "`logits`"));
    CHECK(contains(msg, "expected float32 [*, *, *] on cpu"));
    CHECK(contains(msg, "got float64 [2, 3, 2] on cpu"));
    CHECK(contains(msg, "wrong dtype"));

    msg = message_of<bld::shape_error>([&] { (void)bld::as_view<const double, 2>(view, "mask"); });
    CHECK(contains(msg, "`mask`"));
    CHECK(contains(msg, "wrong rank"));

    msg = message_of<bld::shape_error>([&] {
        (void)bld::as_view<const double, 3>(view, "targets", {2, 4, bld::any_extent});
    });
    CHECK(contains(msg, "`targets`"));
    CHECK(contains(msg, "expected float64 [2, 4, *]"));
    CHECK(contains(msg, "dimension 1 is 3, expected 4"));

    msg = message_of<bld::shape_error>([&] {
        (void)bld::as_view<const double, 3>(view, "x", bld::any_extents<3>(), bld::device_kind::cuda);
    });
    CHECK(contains(msg, "wrong device"));

    // The error object keeps its parts.
    try {
        (void)bld::as_view<const float, 3>(view, "logits");
        FAIL("no throw");
    } catch (const bld::shape_error& e) {
        CHECK(e.operation() == "bld::as_view");
        CHECK(e.location() == "argument `logits`");
    }
}

TEST_CASE("a foreign tensor type through a user-written adapter") {
    auto g = lab::grid::dense_f32({2, 3});
    for (int i = 0; i < 6; ++i) g.floats()[i] = static_cast<float>(i) * 0.5f;

    auto v = bld::as_view<float, 2>(g, "hidden", {2, 3});
    CHECK(v(1, 2) == 2.5f);
    v(0, 0) = 7.0f;
    CHECK(g.floats()[0] == 7.0f);
    const lab::grid& cg = g;
    CHECK(bld::as_view<const float, 2>(cg, "hidden")(0, 0) == 7.0f);
    CHECK(bld::tensor_dtype(g) == bld::dtype::f32);
    CHECK(bld::tensor_extents(g) == std::vector<std::int64_t>{2, 3});

    SUBCASE("non-contiguous: the adapter's note is in the message") {
        std::swap(g.strides[0], g.strides[1]);
        const auto msg = message_of<bld::shape_error>([&] { (void)bld::as_view<float, 2>(g, "hidden"); });
        CHECK(contains(msg, "`hidden`"));
        CHECK(contains(msg, "non-contiguous float32 [2, 3] on cpu"));
        CHECK(contains(msg, "lab::grid is transposed"));
    }
    SUBCASE("wrong device") {
        g.on_gpu = true;
        const auto msg = message_of<bld::shape_error>([&] { (void)bld::as_view<float, 2>(g, "hidden"); });
        CHECK(contains(msg, "got float32 [2, 3] on cuda"));
        auto dv = bld::as_view<float, 2>(g, "hidden", bld::any_extents<2>(), bld::device_kind::cuda);
        CHECK(dv.device() == bld::device_kind::cuda);
    }
    SUBCASE("a dtype the adapter cannot describe: its error, with the argument named") {
        g.element = lab::kind::f16;
        const auto msg = message_of<bld::shape_error>([&] { (void)bld::as_view<float, 2>(g, "hidden"); });
        CHECK(contains(msg, "`hidden`"));
        CHECK(contains(msg, "float16 is not supported"));
    }
}

#if BLD_TEST_EIGEN
TEST_CASE("Eigen matrices, maps and refs") {
    using row_matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    row_matrix m(2, 3);
    m << 1, 2, 3, 4, 5, 6;
    static_assert(bld::tensor_source<row_matrix>);
    auto v = bld::as_view<float, 2>(m, "m", {2, 3});
    CHECK(v(1, 0) == 4.0f);
    v(0, 0) = 9.0f;
    CHECK(m(0, 0) == 9.0f);

    Eigen::VectorXd vec = Eigen::VectorXd::LinSpaced(5, 0.0, 4.0);
    auto v1 = bld::as_view<const double, 1>(vec, "vec");
    CHECK(v1(4) == 4.0);

    std::vector<double> raw(2 * 5 * 260, 0.5);
    Eigen::Map<const Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>> map(
        raw.data(), 10, 260);
    auto mv = bld::reshape(bld::as_view<const double, 2>(map, "map"), std::array<std::int64_t, 3>{2, 5, 260});
    CHECK(mv(1, 4, 259) == 0.5);
    CHECK(mv.data() == raw.data());

    Eigen::Ref<const row_matrix> ref(m);
    CHECK(bld::as_view<const float, 2>(ref, "ref")(1, 2) == 6.0f);

    Eigen::Matrix<std::uint8_t, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> mask(2, 2);
    mask.setOnes();
    CHECK(bld::as_view<const std::uint8_t, 2>(mask, "mask")(1, 1) == 1);

    SUBCASE("column-major is rejected with a clear error") {
        Eigen::MatrixXf cm(3, 4);
        const auto msg = message_of<bld::shape_error>([&] { (void)bld::as_view<float, 2>(cm, "hidden"); });
        CHECK(contains(msg, "`hidden`"));
        CHECK(contains(msg, "column-major"));
        CHECK(contains(msg, "Eigen::RowMajor"));
        // A single column of a column-major matrix is dense either way.
        Eigen::MatrixXf one(3, 1);
        CHECK_NOTHROW((void)bld::as_view<float, 2>(one, "one"));
    }
    SUBCASE("strided maps are rejected") {
        std::vector<float> data(12);
        Eigen::Map<row_matrix, 0, Eigen::OuterStride<>> strided(data.data(), 2, 3, Eigen::OuterStride<>(6));
        const auto msg = message_of<bld::shape_error>([&] { (void)bld::as_view<float, 2>(strided, "s"); });
        CHECK(contains(msg, "outer 6"));
    }
    SUBCASE("wrong scalar") {
        const auto msg = message_of<bld::shape_error>([&] { (void)bld::as_view<const double, 2>(m, "m"); });
        CHECK(contains(msg, "got float32 [2, 3]"));
    }
}
#endif

}  // TEST_SUITE
