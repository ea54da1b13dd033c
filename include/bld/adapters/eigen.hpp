// bld/adapters/eigen.hpp — Eigen matrices, arrays, maps and refs as bld tensors.
//
// An Eigen object converts to a `tensor_view` at the API edge through
// `tensor_adapter`. Compile-time vectors (VectorXf, RowVectorXd, their maps) are rank-1
// tensors; every other matrix or array is a rank-2 [rows, cols] tensor. bld's views are
// row-major: declare matrices with `Eigen::RowMajor`, or map row-major data. A column-major
// matrix with more than one row and column is rejected with an error saying so; reshape a
// 2-D view into 3-D with `bld::reshape` (e.g. [T·K, 260] → [T, K, 260]).
//
// Supported: Eigen::Matrix, Eigen::Array, Eigen::Map and Eigen::Ref of those, with scalars
// float, double, Eigen::bfloat16, std::int32_t, std::int64_t, std::uint8_t and bool.
// (Blocks and expressions are not storage: wrap them in a Ref or evaluate them.)
#pragma once

#include "bld/core/tensor.hpp"

#include <Eigen/Core>

#include <cstdint>
#include <string>
#include <type_traits>

namespace bld {
namespace detail {

template <class S>
constexpr dtype eigen_scalar_dtype() noexcept {
    if constexpr (std::is_same_v<S, Eigen::bfloat16>) {
        static_assert(sizeof(Eigen::bfloat16) == sizeof(bf16), "Eigen::bfloat16 must be 16 bits");
        return dtype::bf16;
    } else {
        static_assert(tensor_element<S>, "bld: Eigen scalar type must be float, double, "
                                         "Eigen::bfloat16, int32_t, int64_t, uint8_t or bool");
        return dtype_of<S>;
    }
}

/// The adapter shared by every dense Eigen type with direct access to its storage.
template <class X>
struct eigen_dense_adapter {
    using scalar = typename X::Scalar;
    static constexpr bool is_vector = X::IsVectorAtCompileTime != 0;
    static constexpr bool row_major = X::IsRowMajor != 0;

    static constexpr std::size_t static_rank = is_vector ? 1 : 2;
    using static_element = std::conditional_t<std::is_same_v<scalar, Eigen::bfloat16>, bf16, scalar>;
    static constexpr dtype scalar_type(const X&) noexcept { return eigen_scalar_dtype<scalar>(); }
    static constexpr std::size_t rank(const X&) noexcept { return is_vector ? 1 : 2; }
    static std::int64_t extent(const X& m, std::size_t d) noexcept {
        if constexpr (is_vector) {
            return static_cast<std::int64_t>(m.size());
        } else {
            return static_cast<std::int64_t>(d == 0 ? m.rows() : m.cols());
        }
    }
    /// Dense in C order: element (r, c) at r·cols + c.
    static bool is_contiguous(const X& m) noexcept {
        if (m.size() <= 1) return true;
        if constexpr (is_vector) {
            return m.innerStride() == 1;
        } else if constexpr (row_major) {
            return m.innerStride() == 1 && (m.rows() == 1 || m.outerStride() == m.cols());
        } else {
            // Column-major storage reads as row-major only when it is a single row or column.
            if (m.cols() == 1) return m.innerStride() == 1;
            if (m.rows() == 1) return m.outerStride() == 1;
            return false;
        }
    }
    static std::string layout_note(const X& m) {
        if constexpr (!is_vector && !row_major) {
            if (m.rows() > 1 && m.cols() > 1) {
                return "Eigen column-major storage; bld needs row-major: declare the matrix with "
                       "Eigen::RowMajor (e.g. Eigen::Matrix<float, Eigen::Dynamic, "
                       "Eigen::Dynamic, Eigen::RowMajor>) or map row-major data";
            }
        }
        return "Eigen strides: inner " + std::to_string(m.innerStride()) + ", outer " +
               std::to_string(m.outerStride()) + " (a dense row-major layout is needed)";
    }
    static constexpr device_kind device(const X&) noexcept { return device_kind::cpu; }
    static auto data(X& m) noexcept { return m.data(); }
    static auto data(const X& m) noexcept { return m.data(); }
};

}  // namespace detail

template <class S, int R, int C, int O, int MR, int MC>
struct tensor_adapter<Eigen::Matrix<S, R, C, O, MR, MC>>
    : detail::eigen_dense_adapter<Eigen::Matrix<S, R, C, O, MR, MC>> {};

template <class S, int R, int C, int O, int MR, int MC>
struct tensor_adapter<Eigen::Array<S, R, C, O, MR, MC>>
    : detail::eigen_dense_adapter<Eigen::Array<S, R, C, O, MR, MC>> {};

template <class P, int MapOptions, class Stride>
struct tensor_adapter<Eigen::Map<P, MapOptions, Stride>>
    : detail::eigen_dense_adapter<Eigen::Map<P, MapOptions, Stride>> {};

template <class P, int Options, class Stride>
struct tensor_adapter<Eigen::Ref<P, Options, Stride>>
    : detail::eigen_dense_adapter<Eigen::Ref<P, Options, Stride>> {};

}  // namespace bld
