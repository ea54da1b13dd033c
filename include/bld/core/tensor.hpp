// bld/core/tensor.hpp — the one non-owning tensor view every bld algorithm sees.
//
// Tensors of any kind (raw pointer + extents, std::span,
// std::vector, Eigen, torch::Tensor, your own type) are converted at the API edge into a
// `tensor_view<T, Rank>` — a data pointer, extents, dense row-major, a device. Kernels are
// written once against that view, so they are instantiated per element type, never per
// tensor library.
//
// Foreign tensor types enter through `tensor_adapter<T>`, a traits template you specialize
// (see the requirements below); the `tensor_source` concept checks a specialization, and
// `as_view<Elem, Rank>(t, "name")` does the run-time checks (dtype, rank, extents, layout,
// device) and throws `bld::shape_error` naming the argument, what was expected and what came.
#pragma once

#include "bld/core/bf16.hpp"
#include "bld/core/f16.hpp"
#include "bld/core/error.hpp"

#include <array>
#include <bit>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <ranges>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace bld {

// ------------------------------------------------------------------------------------------
// dtype and device

/// Element types a tensor may hold at bld's API edge.
enum class dtype : std::uint8_t { f32, f64, bf16, i32, i64, u8, boolean, f16 };

/// The conventional name ("float32", "bfloat16", "bool", …), as PyTorch and NumPy spell it.
[[nodiscard]] constexpr std::string_view to_string(dtype d) noexcept {
    switch (d) {
        case dtype::f32: return "float32";
        case dtype::f64: return "float64";
        case dtype::bf16: return "bfloat16";
        case dtype::i32: return "int32";
        case dtype::i64: return "int64";
        case dtype::u8: return "uint8";
        case dtype::boolean: return "bool";
        case dtype::f16: return "float16";
    }
    return "unknown";
}

/// Bytes per element.
[[nodiscard]] constexpr std::size_t size_of(dtype d) noexcept {
    switch (d) {
        case dtype::f32: case dtype::i32: return 4;
        case dtype::f64: case dtype::i64: return 8;
        case dtype::bf16: case dtype::f16: return 2;
        case dtype::u8: case dtype::boolean: return 1;
    }
    return 0;
}

/// Maps a C++ element type to its dtype; specialized for exactly the types of `dtype`.
template <class T> struct dtype_traits;  // undefined: not a tensor element type
template <> struct dtype_traits<float> { static constexpr dtype value = dtype::f32; };
template <> struct dtype_traits<double> { static constexpr dtype value = dtype::f64; };
template <> struct dtype_traits<bf16> { static constexpr dtype value = dtype::bf16; };
template <> struct dtype_traits<std::int32_t> { static constexpr dtype value = dtype::i32; };
template <> struct dtype_traits<std::int64_t> { static constexpr dtype value = dtype::i64; };
template <> struct dtype_traits<std::uint8_t> { static constexpr dtype value = dtype::u8; };
template <> struct dtype_traits<bool> { static constexpr dtype value = dtype::boolean; };
template <> struct dtype_traits<f16> { static constexpr dtype value = dtype::f16; };

/// A C++ type that can be the element of a bld tensor (cv-qualifiers ignored).
template <class T>
concept tensor_element = requires { dtype_traits<std::remove_cv_t<T>>::value; };

/// The dtype of element type T, e.g. `dtype_of<const float> == dtype::f32`.
template <tensor_element T>
inline constexpr dtype dtype_of = dtype_traits<std::remove_cv_t<T>>::value;

/// Element types of teacher logit rows (cv-qualifiers ignored): float, bf16, f16 or double.
/// Every row pass accepts them all; a backend without a kernel for one routes it to a path that
/// has one (the fp64 reference for double, a widening copy for f16 where a kernel lacks it) or
/// says so at compile time.
template <class T>
concept logit_type = std::same_as<std::remove_cv_t<T>, float> || std::same_as<std::remove_cv_t<T>, bf16> ||
                     std::same_as<std::remove_cv_t<T>, f16> || std::same_as<std::remove_cv_t<T>, double>;

/// The logit types the fast row-pass kernels (SIMD and CUDA) read: float and bf16. Double rows
/// take the fp64 reference path; f16 rows are widened to float first.
template <class T>
inline constexpr bool row_kernel_reads =
    std::same_as<std::remove_cv_t<T>, float> || std::same_as<std::remove_cv_t<T>, bf16>;

/// Where a tensor's memory lives. bld's CPU algorithms accept `cpu` only.
enum class device_kind : std::uint8_t { cpu, cuda };

[[nodiscard]] constexpr std::string_view to_string(device_kind d) noexcept {
    return d == device_kind::cpu ? "cpu" : "cuda";
}

/// Extent value that matches any size in `as_view`'s expected extents.
inline constexpr std::int64_t any_extent = -1;

namespace detail {

template <class Range>
std::string format_extents(const Range& extents) {
    std::string s = "[";
    bool first = true;
    for (const auto e : extents) {
        if (!first) s += ", ";
        first = false;
        s += e == any_extent ? std::string("*") : std::to_string(e);
    }
    return s + "]";
}

template <std::size_t Rank>
constexpr std::int64_t product(const std::array<std::int64_t, Rank>& extents) noexcept {
    std::int64_t n = 1;
    for (const auto e : extents) n *= e;
    return n;
}

}  // namespace detail

// ------------------------------------------------------------------------------------------
// tensor_view

/// A non-owning, dense, row-major view of `Rank`-dimensional data of element type T.
///
/// T may be const (read-only view). Extents are signed 64-bit like PyTorch's. The last index
/// varies fastest; the stride of dimension d is the product of the extents after d. Element
/// access (`operator()`, `row`) is meant for host memory: on a `cuda` view only `data()`,
/// the extents and `device()` are meaningful on the host.
template <class T, std::size_t Rank>
class tensor_view {
    static_assert(Rank >= 1, "bld::tensor_view: Rank must be at least 1");
    static_assert(tensor_element<T>, "bld::tensor_view: T must be float, double, bf16, "
                                     "int32_t, int64_t, uint8_t or bool (optionally const)");

public:
    using element_type = T;
    using value_type = std::remove_cv_t<T>;
    using index_type = std::int64_t;
    using extents_type = std::array<index_type, Rank>;
    static constexpr std::size_t rank = Rank;

    /// An empty view (null data, all extents zero).
    constexpr tensor_view() noexcept = default;

    /// A view of `data` with the given extents.
    /// @pre every extent ≥ 0; `data` points to at least the product of the extents elements
    ///      (may be null when that product is 0).
    /// @throws shape_error on a negative extent, or a null `data` with non-zero size.
    constexpr tensor_view(T* data, const extents_type& extents,
                          device_kind device = device_kind::cpu, int device_index = 0)
        : data_(data), extents_(extents), device_(device), device_index_(device_index) {
        for (std::size_t d = 0; d < Rank; ++d) {
            if (extents_[d] < 0) {
                throw shape_error("bld::tensor_view", "dimension " + std::to_string(d),
                                  "negative extent in " + detail::format_extents(extents_));
            }
        }
        if (data_ == nullptr && detail::product(extents_) != 0) {
            throw shape_error("bld::tensor_view", "", "null data pointer with extents " +
                                                          detail::format_extents(extents_));
        }
    }

    /// A view of mutable data converts to a view of const data.
    template <class U>
        requires(!std::is_same_v<U, T> && std::is_convertible_v<U (*)[], T (*)[]>)
    constexpr tensor_view(const tensor_view<U, Rank>& other) noexcept  // NOLINT: implicit
        : data_(other.data()), extents_(other.extents()), device_(other.device()),
          device_index_(other.device_index()) {}

    [[nodiscard]] constexpr T* data() const noexcept { return data_; }
    [[nodiscard]] constexpr const extents_type& extents() const noexcept { return extents_; }
    [[nodiscard]] constexpr index_type extent(std::size_t d) const noexcept { return extents_[d]; }
    /// Elements between consecutive indices of dimension d.
    [[nodiscard]] constexpr index_type stride(std::size_t d) const noexcept {
        index_type s = 1;
        for (std::size_t i = d + 1; i < Rank; ++i) s *= extents_[i];
        return s;
    }
    /// Total number of elements.
    [[nodiscard]] constexpr index_type size() const noexcept { return detail::product(extents_); }
    [[nodiscard]] constexpr bool empty() const noexcept { return size() == 0; }
    [[nodiscard]] constexpr device_kind device() const noexcept { return device_; }
    [[nodiscard]] constexpr int device_index() const noexcept { return device_index_; }

    /// The element at the given multi-index (unchecked).
    /// @pre sizeof...(I) == Rank and 0 ≤ i_d < extent(d); host memory.
    template <std::integral... I>
        requires(sizeof...(I) == Rank)
    [[nodiscard]] constexpr T& operator()(I... i) const noexcept {
        const std::array<index_type, Rank> idx{static_cast<index_type>(i)...};
        index_type off = 0;
        for (std::size_t d = 0; d < Rank; ++d) off = off * extents_[d] + idx[d];
        return data_[off];
    }

    /// Sub-view i along the first dimension: a (Rank−1)-dimensional view; for Rank = 1,
    /// `row(i)` is not available — use `operator()(i)` or `span()`.
    /// @pre 0 ≤ i < extent(0).
    [[nodiscard]] constexpr auto row(index_type i) const noexcept
        requires(Rank >= 2)
    {
        std::array<index_type, Rank - 1> sub{};
        for (std::size_t d = 1; d < Rank; ++d) sub[d - 1] = extents_[d];
        tensor_view<T, Rank - 1> r;
        r.data_ = data_ + i * stride(0);
        r.extents_ = sub;
        r.device_ = device_;
        r.device_index_ = device_index_;
        return r;
    }

    /// All elements, flat, in row-major order (host memory).
    [[nodiscard]] constexpr std::span<T> span() const noexcept {
        return {data_, static_cast<std::size_t>(size())};
    }

private:
    template <class, std::size_t> friend class tensor_view;

    T* data_ = nullptr;
    extents_type extents_{};
    device_kind device_ = device_kind::cpu;
    int device_index_ = 0;
};

/// The same elements seen with other extents (the view is dense, so any extents with the
/// same total size are valid).
/// @throws shape_error when the sizes differ or an extent is negative.
template <class T, std::size_t Rank, std::size_t NewRank>
[[nodiscard]] constexpr tensor_view<T, NewRank>
reshape(const tensor_view<T, Rank>& v, const std::array<std::int64_t, NewRank>& extents) {
    for (const auto e : extents) {
        if (e < 0) {
            throw shape_error("bld::reshape", "",
                              "negative extent in " + detail::format_extents(extents));
        }
    }
    if (detail::product(extents) != v.size()) {
        throw shape_error("bld::reshape", "",
                          "cannot view " + std::to_string(v.size()) + " elements " +
                              detail::format_extents(v.extents()) + " as " +
                              detail::format_extents(extents));
    }
    return tensor_view<T, NewRank>(v.data(), extents, v.device(), v.device_index());
}

/// A view of a contiguous buffer (std::span, std::vector, std::array, a C array) with
/// explicit extents: the "raw pointer + extents" entry point, with a size check. Temporaries
/// that own their elements are rejected at compile time (the view would dangle).
/// @throws shape_error when the buffer's size is not the product of the extents.
template <std::ranges::contiguous_range Buffer, std::size_t Rank>
    requires std::ranges::borrowed_range<Buffer> && std::ranges::sized_range<Buffer>
[[nodiscard]] constexpr auto shaped(Buffer&& buffer, const std::array<std::int64_t, Rank>& extents) {
    using elem = std::remove_reference_t<std::ranges::range_reference_t<Buffer>>;
    const auto n = static_cast<std::int64_t>(std::ranges::size(buffer));
    tensor_view<elem, Rank> v(std::ranges::data(buffer), extents);  // validates the extents
    if (n != v.size()) {
        throw shape_error("bld::shaped", "",
                          "a buffer of " + std::to_string(n) + " elements cannot have extents " +
                              detail::format_extents(extents) + " (" +
                              std::to_string(v.size()) + " elements)");
    }
    return v;
}

// ------------------------------------------------------------------------------------------
// tensor_adapter: the customization point

/// Traits that tell bld how to read a tensor type. Specialize it (in namespace bld) for your
/// tensor type `X` with these static members:
///
///   static bld::dtype scalar_type(const X&);        // element type
///   static std::size_t rank(const X&);              // number of dimensions
///   static std::int64_t extent(const X&, std::size_t d);
///   static bool is_contiguous(const X&);            // dense row-major (C order)
///   static bld::device_kind device(const X&);
///   static P data(X&);  static CP data(const X&);   // first element; any pointer type,
///                                                   // const-qualified when read-only
/// Optional:
///   static int device_index(const X&);              // default 0
///   static std::string layout_note(const X&);       // why it is not contiguous (for errors)
///
/// The members may throw `bld::shape_error` for a tensor bld cannot describe (an unsupported
/// dtype, an undefined tensor); `as_view` re-throws it naming the argument.
template <class T> struct tensor_adapter;

/// A type whose `tensor_adapter` specialization provides the required members.
template <class T>
concept tensor_source = requires(const std::remove_cvref_t<T>& t, std::size_t d) {
    { tensor_adapter<std::remove_cvref_t<T>>::scalar_type(t) } -> std::same_as<dtype>;
    { tensor_adapter<std::remove_cvref_t<T>>::rank(t) } -> std::convertible_to<std::size_t>;
    { tensor_adapter<std::remove_cvref_t<T>>::extent(t, d) } -> std::convertible_to<std::int64_t>;
    { tensor_adapter<std::remove_cvref_t<T>>::is_contiguous(t) } -> std::convertible_to<bool>;
    { tensor_adapter<std::remove_cvref_t<T>>::device(t) } -> std::same_as<device_kind>;
    { tensor_adapter<std::remove_cvref_t<T>>::data(t) } -> std::convertible_to<const void*>;
};

/// tensor_view is its own adapter.
template <class E, std::size_t R>
struct tensor_adapter<tensor_view<E, R>> {
    static constexpr std::size_t static_rank = R;
    using static_element = std::remove_cv_t<E>;
    static constexpr dtype scalar_type(const tensor_view<E, R>&) noexcept { return dtype_of<E>; }
    static constexpr std::size_t rank(const tensor_view<E, R>&) noexcept { return R; }
    static constexpr std::int64_t extent(const tensor_view<E, R>& v, std::size_t d) noexcept {
        return v.extent(d);
    }
    static constexpr bool is_contiguous(const tensor_view<E, R>&) noexcept { return true; }
    static constexpr device_kind device(const tensor_view<E, R>& v) noexcept { return v.device(); }
    static constexpr int device_index(const tensor_view<E, R>& v) noexcept { return v.device_index(); }
    static constexpr E* data(const tensor_view<E, R>& v) noexcept { return v.data(); }  // shallow
};

/// std::span is a 1-D tensor (use `shaped(span, extents)` for more dimensions).
template <class E, std::size_t N>
struct tensor_adapter<std::span<E, N>> {
    static constexpr std::size_t static_rank = 1;
    using static_element = std::remove_cv_t<E>;
    static constexpr dtype scalar_type(const std::span<E, N>&) noexcept { return dtype_of<E>; }
    static constexpr std::size_t rank(const std::span<E, N>&) noexcept { return 1; }
    static constexpr std::int64_t extent(const std::span<E, N>& s, std::size_t) noexcept {
        return static_cast<std::int64_t>(s.size());
    }
    static constexpr bool is_contiguous(const std::span<E, N>&) noexcept { return true; }
    static constexpr device_kind device(const std::span<E, N>&) noexcept { return device_kind::cpu; }
    static constexpr E* data(const std::span<E, N>& s) noexcept { return s.data(); }  // shallow
};

/// std::vector is a 1-D tensor (use `shaped(vector, extents)` for more dimensions).
/// std::vector<bool> is not contiguous storage and is rejected at compile time.
template <class E, class A>
struct tensor_adapter<std::vector<E, A>> {
    static_assert(!std::is_same_v<E, bool>, "bld: std::vector<bool> is bit-packed; use "
                                            "std::vector<std::uint8_t> for masks");
    static constexpr std::size_t static_rank = 1;
    using static_element = E;
    static constexpr dtype scalar_type(const std::vector<E, A>&) noexcept { return dtype_of<E>; }
    static constexpr std::size_t rank(const std::vector<E, A>&) noexcept { return 1; }
    static constexpr std::int64_t extent(const std::vector<E, A>& v, std::size_t) noexcept {
        return static_cast<std::int64_t>(v.size());
    }
    static constexpr bool is_contiguous(const std::vector<E, A>&) noexcept { return true; }
    static constexpr device_kind device(const std::vector<E, A>&) noexcept { return device_kind::cpu; }
    static constexpr E* data(std::vector<E, A>& v) noexcept { return v.data(); }
    static constexpr const E* data(const std::vector<E, A>& v) noexcept { return v.data(); }
};

namespace detail {

template <class T>
using adapter_of = tensor_adapter<std::remove_cvref_t<T>>;

template <class T>
constexpr std::size_t static_rank_of() noexcept {
    if constexpr (requires { adapter_of<T>::static_rank; }) return adapter_of<T>::static_rank;
    else return 0;
}

template <class T, class... E>
constexpr bool static_element_in() noexcept {
    if constexpr (requires { typename adapter_of<T>::static_element; })
        return (std::same_as<typename adapter_of<T>::static_element, E> || ...);
    else return true;
}

}  // namespace detail

// ------------------------------------------------------------------------------------------
// What a tensor type says at compile time
//
// An adapter may declare `static constexpr std::size_t static_rank` and `using static_element`
// when every tensor of its type has that rank / element type (tensor_view, std::span,
// std::vector, Eigen's dense types do; torch::Tensor does not). bld's entry points constrain
// their arguments with the concepts below, so a tensor_view<const float, 2> passed where
// [T, K, 260] logits are expected, or int32 rows passed as logits, fail to compile; tensors
// whose type does not say are checked at run time (as_view, a shape_error naming the argument).

/// T's rank is R, or its type does not say.
template <class T, std::size_t R>
concept rank_may_be = tensor_source<T> && (detail::static_rank_of<T>() == 0 || detail::static_rank_of<T>() == R);

/// T's elements are one of E..., or its type does not say.
template <class T, class... E>
concept element_may_be = tensor_source<T> && detail::static_element_in<T, E...>();

/// Teacher logit rows: rank R, float / bf16 / f16 / double elements (as far as the type says).
template <class T, std::size_t R>
concept logit_tensor = rank_may_be<T, R> && element_may_be<T, float, bf16, f16, double>;

/// Token ids: rank R, int64 elements (as far as the type says).
template <class T, std::size_t R>
concept id_tensor = rank_may_be<T, R> && element_may_be<T, std::int64_t>;

namespace detail {

template <class T>
int device_index_of(const T& t) {
    if constexpr (requires { adapter_of<T>::device_index(t); }) {
        return static_cast<int>(adapter_of<T>::device_index(t));
    } else {
        return 0;
    }
}

template <class T>
std::string layout_note_of(const T& t) {
    if constexpr (requires { { adapter_of<T>::layout_note(t) } -> std::convertible_to<std::string>; }) {
        return adapter_of<T>::layout_note(t);
    } else {
        return {};
    }
}

/// "float32 [2, 3, 260] on cpu" — a one-line description for error messages.
template <class T>
std::string describe_tensor(const T& t) {
    using A = adapter_of<T>;
    const std::size_t r = A::rank(t);
    std::vector<std::int64_t> ext(r);
    for (std::size_t d = 0; d < r; ++d) ext[d] = static_cast<std::int64_t>(A::extent(t, d));
    std::string s(bld::to_string(A::scalar_type(t)));
    s += " ";
    s += format_extents(ext);
    s += " on ";
    s += bld::to_string(A::device(t));
    return s;
}

}  // namespace detail

/// The dtype of any tensor source.
/// @throws shape_error, naming `argument_name`, if its adapter cannot describe it.
template <tensor_source T>
[[nodiscard]] dtype tensor_dtype(const T& t, std::string_view argument_name = "tensor") {
    try {
        return detail::adapter_of<T>::scalar_type(t);
    } catch (const shape_error& e) {
        throw shape_error(e.operation(), "argument `" + std::string(argument_name) + "`", e.reason());
    }
}

/// The extents of any tensor source (as many as its rank).
template <tensor_source T>
[[nodiscard]] std::vector<std::int64_t> tensor_extents(const T& t) {
    using A = detail::adapter_of<T>;
    std::vector<std::int64_t> ext(A::rank(t));
    for (std::size_t d = 0; d < ext.size(); ++d) ext[d] = static_cast<std::int64_t>(A::extent(t, d));
    return ext;
}

/// All extents `any_extent`: the default expectation of `as_view`.
template <std::size_t Rank>
[[nodiscard]] constexpr std::array<std::int64_t, Rank> any_extents() noexcept {
    std::array<std::int64_t, Rank> a{};
    a.fill(any_extent);
    return a;
}

/// Checks a tensor and returns the `tensor_view<Elem, Rank>` of it.
///
/// @pre  the adapter of T describes `t` (`tensor_source<T>`); for a mutable `Elem`, `t` is
///       passed as a non-const lvalue whose adapter yields a pointer to non-const.
/// @param argument_name  how errors name the argument (e.g. "logits").
/// @param expected       required extents; `any_extent` (−1) entries match any size.
/// @param device         required device.
/// @returns a view of t's memory; valid while t's storage is.
/// @throws shape_error naming the argument, the expectation and what came, when the dtype is
///         not `dtype_of<Elem>`, the rank is not Rank, an extent differs from `expected`, the
///         layout is not dense row-major, or the device differs.
template <class Elem, std::size_t Rank, class T>
    requires tensor_source<T>
[[nodiscard]] tensor_view<Elem, Rank>
as_view(T&& t, std::string_view argument_name,
        const std::array<std::int64_t, Rank>& expected = any_extents<Rank>(),
        device_kind device = device_kind::cpu) {
    static_assert(tensor_element<Elem>, "bld::as_view: Elem must be a tensor element type");
    using A = detail::adapter_of<T>;
    using pointer = decltype(A::data(t));
    static_assert(std::is_const_v<Elem> || std::is_convertible_v<pointer, void*>,
                  "bld::as_view: a mutable view needs a mutable tensor (the adapter's data() "
                  "returned a pointer to const; pass a non-const lvalue or use a const Elem)");

    const std::string where = "argument `" + std::string(argument_name) + "`";
    const auto fail = [&](const std::string& why) { throw shape_error("bld::as_view", where, why); };
    const auto expectation = [&] {
        std::string s(bld::to_string(dtype_of<Elem>));
        s += " ";
        s += detail::format_extents(expected);
        s += " on ";
        s += bld::to_string(device);
        return s;
    };

    dtype dt{};
    std::string got;
    try {
        dt = A::scalar_type(t);
        got = detail::describe_tensor(t);
    } catch (const shape_error& e) {
        throw shape_error(e.operation(), where, e.reason());
    }
    if (dt != dtype_of<Elem>) {
        fail("expected " + expectation() + ", got " + got + " (wrong dtype)");
    }
    if (A::rank(t) != Rank) {
        fail("expected " + expectation() + ", got " + got + " (wrong rank: " +
             std::to_string(A::rank(t)) + " dimensions instead of " + std::to_string(Rank) + ")");
    }
    std::array<std::int64_t, Rank> ext{};
    for (std::size_t d = 0; d < Rank; ++d) {
        ext[d] = static_cast<std::int64_t>(A::extent(t, d));
        if (expected[d] != any_extent && ext[d] != expected[d]) {
            fail("expected " + expectation() + ", got " + got + " (dimension " +
                 std::to_string(d) + " is " + std::to_string(ext[d]) + ", expected " +
                 std::to_string(expected[d]) + ")");
        }
    }
    if (A::device(t) != device) {
        fail("expected " + expectation() + ", got " + got + " (wrong device)");
    }
    if (!A::is_contiguous(t)) {
        std::string why = "expected a dense row-major tensor, got a non-contiguous " + got;
        if (auto note = detail::layout_note_of(t); !note.empty()) why += " (" + note + ")";
        fail(why);
    }
    const auto* raw = A::data(t);
    auto* typed = static_cast<Elem*>(const_cast<void*>(static_cast<const void*>(raw)));
    return tensor_view<Elem, Rank>(typed, ext, A::device(t), detail::device_index_of(t));
}

}  // namespace bld
