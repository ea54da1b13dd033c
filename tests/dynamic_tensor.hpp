// A tensor type that, like torch::Tensor, does not state its rank or element type in its type:
// the losses and projections check it at run time. Tests wrap a tensor_view in it to reach the
// run-time errors that a tensor_view of the wrong rank or dtype would turn into compile errors.
#pragma once

#include <bld/core/tensor.hpp>

namespace bld_test {

template <class V>
struct dynamic {
    V view;
};

/// The same tensor, its rank and element type known only at run time.
template <class V>
dynamic<V> erase(const V& v) {
    return {v};
}

} // namespace bld_test

template <class V>
struct bld::tensor_adapter<bld_test::dynamic<V>> {
    using inner = bld::tensor_adapter<V>;
    static bld::dtype scalar_type(const bld_test::dynamic<V>& t) { return inner::scalar_type(t.view); }
    static std::size_t rank(const bld_test::dynamic<V>& t) { return inner::rank(t.view); }
    static std::int64_t extent(const bld_test::dynamic<V>& t, std::size_t d) { return inner::extent(t.view, d); }
    static bool is_contiguous(const bld_test::dynamic<V>& t) { return inner::is_contiguous(t.view); }
    static bld::device_kind device(const bld_test::dynamic<V>& t) { return inner::device(t.view); }
    static int device_index(const bld_test::dynamic<V>& t) { return inner::device_index(t.view); }
    static auto data(const bld_test::dynamic<V>& t) { return inner::data(t.view); }
};
