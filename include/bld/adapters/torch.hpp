// bld/adapters/torch.hpp — libtorch tensors (torch::Tensor, i.e. at::Tensor) as bld tensors.
//
// A torch::Tensor converts to a `tensor_view` at the API edge. Supported
// dtypes: float32, float64, bfloat16 (as bld::bf16), float16 (as bld::f16), int32, int64, uint8 and bool; devices:
// CPU and CUDA (bld's CPU algorithms require CPU). The layout must be strided and dense
// row-major (`t.is_contiguous()`): call `.contiguous()` first otherwise — bld never copies
// behind your back. Undefined tensors, other dtypes (int8, complex, …) and other
// devices are reported as `bld::shape_error`, naming the argument when they reach `as_view`.
//
// Needs libtorch's headers and libraries: link the `bld::torch` CMake target
// (BLD_ENABLE_TORCH=ON, Debian's libtorch-dev), or build with torch.utils.cpp_extension.
#pragma once

#include "bld/core/error.hpp"
#include "bld/core/tensor.hpp"

#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>

#include <cstdint>
#include <string>

namespace bld {

/// The libtorch scalar type of a bld dtype.
[[nodiscard]] inline c10::ScalarType to_torch_dtype(dtype d) noexcept {
    switch (d) {
        case dtype::f32: return c10::ScalarType::Float;
        case dtype::f64: return c10::ScalarType::Double;
        case dtype::bf16: return c10::ScalarType::BFloat16;
        case dtype::i32: return c10::ScalarType::Int;
        case dtype::i64: return c10::ScalarType::Long;
        case dtype::u8: return c10::ScalarType::Byte;
        case dtype::boolean: return c10::ScalarType::Bool;
        case dtype::f16: return c10::ScalarType::Half;
    }
    return c10::ScalarType::Undefined;
}

template <>
struct tensor_adapter<at::Tensor> {
    static dtype scalar_type(const at::Tensor& t) {
        require_defined(t);
        switch (t.scalar_type()) {
            case c10::ScalarType::Float: return dtype::f32;
            case c10::ScalarType::Double: return dtype::f64;
            case c10::ScalarType::BFloat16: return dtype::bf16;
            case c10::ScalarType::Int: return dtype::i32;
            case c10::ScalarType::Long: return dtype::i64;
            case c10::ScalarType::Byte: return dtype::u8;
            case c10::ScalarType::Bool: return dtype::boolean;
            case c10::ScalarType::Half: return dtype::f16;
            default: break;
        }
        throw shape_error("torch tensor", "",
                          std::string("dtype torch.") + c10::toString(t.scalar_type()) +
                              " is not supported by bld (float32, float64, bfloat16, float16, int32, "
                              "int64, uint8, bool)");
    }
    static std::size_t rank(const at::Tensor& t) {
        require_defined(t);
        return static_cast<std::size_t>(t.dim());
    }
    static std::int64_t extent(const at::Tensor& t, std::size_t d) {
        return t.size(static_cast<std::int64_t>(d));
    }
    static bool is_contiguous(const at::Tensor& t) {
        return t.layout() == c10::kStrided && t.is_contiguous();
    }
    static std::string layout_note(const at::Tensor& t) {
        if (t.layout() != c10::kStrided) {
            return "layout is not strided (sparse?): bld needs a dense tensor, call .to_dense()";
        }
        std::string s = "strides [";
        for (std::int64_t d = 0; d < t.dim(); ++d) {
            if (d != 0) s += ", ";
            s += std::to_string(t.stride(d));
        }
        return s + "]: call .contiguous() first";
    }
    static device_kind device(const at::Tensor& t) {
        require_defined(t);
        if (t.device().is_cpu()) return device_kind::cpu;
        if (t.device().is_cuda()) return device_kind::cuda;
        throw shape_error("torch tensor", "",
                          "device " + t.device().str() + " is not supported by bld (cpu, cuda)");
    }
    static int device_index(const at::Tensor& t) {
        return t.device().has_index() ? static_cast<int>(t.device().index()) : 0;
    }
    /// Tensors share their storage, so a const Tensor still yields mutable data (as in
    /// libtorch itself).
    static void* data(const at::Tensor& t) { return t.data_ptr(); }

private:
    static void require_defined(const at::Tensor& t) {
        if (!t.defined()) throw shape_error("torch tensor", "", "the tensor is undefined");
    }
};

}  // namespace bld
