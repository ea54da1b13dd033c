// Library hygiene checked by the compiler: exception types copy without throwing, and types
// that keep a pointer to a trie refuse a temporary one.
#include <bld/backends/simd/row_pass.hpp>
#include <bld/core/error.hpp>
#include <bld/core/tensor.hpp>
#include <bld/projection/canonical_path.hpp>
#include <bld/projection/fast_rows.hpp>
#include <bld/vocab/trie.hpp>

#include <doctest/doctest.h>

#include <cstdint>
#include <exception>
#include <span>
#include <string>
#include <type_traits>

namespace {

// An exception is copied into std::exception_ptr, into a catch-by-value parameter, and by
// std::throw_with_nested: a copy that throws there is std::terminate.
template <class E>
constexpr bool copies_without_throwing =
    std::is_nothrow_copy_constructible_v<E> && std::is_nothrow_copy_assignable_v<E>;

static_assert(copies_without_throwing<bld::error>);
static_assert(copies_without_throwing<bld::load_error>);
static_assert(copies_without_throwing<bld::shape_error>);
static_assert(copies_without_throwing<bld::value_error>);
static_assert(copies_without_throwing<bld::alignment_error>);

// Plans and row sources keep a pointer to the trie they were built from: `row_plan
// p{byte_trie{v}};` would dangle at the end of the statement, so a temporary (or a const
// rvalue) trie must not compile; a named trie must.
using bld::byte_trie;
template <class X, class... Rest>
constexpr bool takes_named_trie_only = std::is_constructible_v<X, byte_trie&, Rest...> &&
                                       std::is_constructible_v<X, const byte_trie&, Rest...> &&
                                       !std::is_constructible_v<X, byte_trie&&, Rest...> &&
                                       !std::is_constructible_v<X, const byte_trie&&, Rest...> &&
                                       !std::is_constructible_v<X, byte_trie, Rest...>;

static_assert(takes_named_trie_only<bld::row_plan>);
static_assert(takes_named_trie_only<bld::reference::dense_rows<float>, bld::tensor_view<const float, 2>>);
static_assert(takes_named_trie_only<bld::reference::dense_rows<double>, bld::tensor_view<const double, 2>>);
static_assert(takes_named_trie_only<bld::topk_rows, bld::tensor_view<const std::int64_t, 2>,
                                    bld::tensor_view<const float, 2>, std::span<const double>>);

// The fast row source keeps a pointer to its plan likewise.
using bld::row_plan;
template <class X, class... Rest>
constexpr bool takes_named_plan_only = std::is_constructible_v<X, row_plan&, Rest...> &&
                                       std::is_constructible_v<X, const row_plan&, Rest...> &&
                                       !std::is_constructible_v<X, row_plan&&, Rest...> &&
                                       !std::is_constructible_v<X, const row_plan&&, Rest...>;
static_assert(takes_named_plan_only<bld::dense_rows<float>, bld::tensor_view<const float, 2>>);
static_assert(takes_named_plan_only<bld::dense_rows<bld::bf16>, bld::tensor_view<const bld::bf16, 2>>);

}  // namespace

TEST_CASE("hygiene: a copied bld::error keeps its parts, and outlives the original") {
    const std::string long_part(1000, 'x');  // beyond any small-string buffer
    bld::value_error copy("op", "where", "why");
    {
        const bld::value_error original("load " + long_part, "line 3", "bad " + long_part);
        copy = original;
        const bld::value_error constructed(original);  // NOLINT(performance-unnecessary-copy-initialization)
        CHECK(constructed.operation() == original.operation());
        CHECK(std::string(constructed.what()) == original.what());
    }
    CHECK(copy.operation() == "load " + long_part);
    CHECK(copy.location() == "line 3");
    CHECK(copy.reason() == "bad " + long_part);
    CHECK(std::string(copy.what()) == "load " + long_part + ": line 3: bad " + long_part);

    // A "moved-from" error still has its parts: there is no move that could empty it.
    bld::load_error source("op", "", "why");
    const bld::load_error target(std::move(source));
    CHECK(target.operation() == "op");
    CHECK(source.operation() == "op");  // NOLINT(bugprone-use-after-move)
    CHECK(std::string(source.what()) == "op: why");

    // Through std::exception_ptr (which copies or refers to the exception object).
    std::exception_ptr p;
    try {
        throw bld::shape_error("shape", "argument `x`", "rank 2 expected");
    } catch (...) {
        p = std::current_exception();
    }
    try {
        std::rethrow_exception(p);
    } catch (const bld::error& e) {
        CHECK(e.location() == "argument `x`");
        CHECK(std::string(e.what()) == "shape: argument `x`: rank 2 expected");
    }
}
