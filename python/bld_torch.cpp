// python/bld_torch.cpp — the C++ side of the `bld_torch` Python module.
//
// Built by python/build_bld_torch.py with torch.utils.cpp_extension (Debian's python3-torch).
// The Python package (python/bld_torch/__init__.py) wraps `loss` in a torch.autograd.Function;
// this file only converts tensors through bld's libtorch adapter, calls bld's loss function
// objects and maps bld's exceptions onto Python exception classes:
//
//   bld_torch.Error       (RuntimeError)          every bld error
//   bld_torch.ShapeError  (Error, ValueError)     shape, rank, device, layout, K outside 1..260
//   bld_torch.DtypeError  (ShapeError, TypeError) a tensor of the wrong dtype
//   bld_torch.DomainError (Error, ValueError)     NaN/±inf logits, bad probabilities or bytes,
//                                                 bad options
#include <torch/extension.h>

#include <bld/adapters/torch.hpp>
#include <bld/error.hpp>
#include <bld/loss.hpp>

#include <optional>
#include <string>
#include <tuple>

namespace {

/// A dtype mismatch found here, before bld sees the tensor: raised as bld_torch.DtypeError.
struct dtype_error : bld::shape_error {
    using bld::shape_error::shape_error;
};

PyObject* error_type = nullptr;
PyObject* shape_error_type = nullptr;
PyObject* dtype_error_type = nullptr;
PyObject* domain_error_type = nullptr;

std::string torch_dtype_name(const torch::Tensor& t) {
    return std::string("torch.") + c10::toString(t.scalar_type());
}

void require_dtype(const torch::Tensor& t, const char* name, std::initializer_list<c10::ScalarType> ok,
                   const char* expected) {
    for (auto s : ok) {
        if (t.scalar_type() == s) return;
    }
    throw dtype_error("bld_torch", std::string("argument `") + name + "`",
                      std::string("expected ") + expected + ", got " + torch_dtype_name(t));
}

/// The one entry point: returns (value, grad). value is a 0-dim tensor, or the per-slot
/// values [T, K] for reduction "none"; grad is ∂value/∂logits [T, K, 260] (slot by slot for
/// "none"), or an undefined tensor when need_grad is false. Both have the logits' dtype.
///
/// mode: "divergence" (byte_loss), "ce" (byte_cross_entropy) or "bld" (bld_loss).
std::tuple<torch::Tensor, torch::Tensor>
loss(const torch::Tensor& logits, const std::optional<torch::Tensor>& targets,
     const std::optional<torch::Tensor>& true_bytes, const std::optional<torch::Tensor>& mask,
     const std::string& mode, const std::string& kind, double temperature,
     const std::string& reduction_name, double lambda_byte, double lambda_kl, double target_floor,
     bool need_grad) {
    if (!logits.defined()) throw bld::shape_error("bld_torch", "argument `head_logits`", "undefined tensor");
    require_dtype(logits, "head_logits", {torch::kFloat32, torch::kFloat64}, "float32 or float64");
    if (targets) require_dtype(*targets, "teacher_targets", {torch::kFloat32, torch::kFloat64}, "float32 or float64");
    if (true_bytes) require_dtype(*true_bytes, "true_bytes", {torch::kInt32, torch::kInt64}, "int32 or int64");
    if (mask) require_dtype(*mask, "mask", {torch::kBool, torch::kUInt8}, "bool or uint8");

    const bld::loss_reduction reduction = bld::parse_reduction(reduction_name);
    const bld::divergence div = mode == "ce" ? bld::divergence::forward_kl : bld::parse_divergence(kind);
    // Shapes are checked by bld; outputs are sized from the logits once they are known good.
    const auto tk = bld::byte_head_shape(logits, "bld_torch");  // throws with bld's message
    const auto opts = logits.options();
    torch::Tensor grad = need_grad ? torch::empty({tk[0], tk[1], bld::byte_alphabet_size}, opts) : torch::Tensor();
    torch::Tensor per_slot = reduction == bld::loss_reduction::none ? torch::empty({tk[0], tk[1]}, opts) : torch::Tensor();

    const auto run = [&](const auto& m) {
        const auto go = [&](auto&& g, auto&& ps) -> bld::byte_loss_result {
            py::gil_scoped_release no_gil;
            if (mode == "ce") {
                if (!true_bytes) throw bld::value_error("bld_torch", "kind=\"ce\"", "needs true_bytes");
                return bld::byte_cross_entropy(logits, *true_bytes, m, {.reduction = reduction}, g, ps);
            }
            if (!targets) throw bld::value_error("bld_torch", "teacher_targets", "required for kind \"" + kind + "\"");
            if (mode == "bld") {
                if (!true_bytes) throw bld::value_error("bld_torch", "bld_loss", "needs true_bytes");
                return bld::bld_loss(logits, *targets, *true_bytes, m,
                                     {.lambda_byte = lambda_byte, .lambda_kl = lambda_kl, .kind = div,
                                      .temperature = temperature, .reduction = reduction,
                                      .target_floor = target_floor},
                                     g, ps);
            }
            if (mode != "divergence") throw bld::value_error("bld_torch", "mode", "unknown mode " + mode);
            return bld::byte_loss(logits, *targets, m,
                                  {.kind = div, .temperature = temperature, .reduction = reduction,
                                   .target_floor = target_floor},
                                  g, ps);
        };
        if (grad.defined() && per_slot.defined()) return go(grad, per_slot);
        if (grad.defined()) return go(grad, bld::no_tensor);
        if (per_slot.defined()) return go(bld::no_tensor, per_slot);
        return go(bld::no_tensor, bld::no_tensor);
    };
    const bld::byte_loss_result r = mask ? run(*mask) : run(bld::no_tensor);

    torch::Tensor value = per_slot.defined() ? per_slot : torch::full({}, r.value, opts);
    return {value, grad};
}

void translate(std::exception_ptr p) {
    try {
        if (p) std::rethrow_exception(p);
    } catch (const dtype_error& e) {
        PyErr_SetString(dtype_error_type, e.what());
    } catch (const bld::shape_error& e) {
        PyErr_SetString(shape_error_type, e.what());
    } catch (const bld::value_error& e) {
        PyErr_SetString(domain_error_type, e.what());
    } catch (const bld::error& e) {
        PyErr_SetString(error_type, e.what());
    }
}

PyObject* new_exception(py::module_& m, const char* name, std::initializer_list<PyObject*> bases) {
    py::tuple b(bases.size());
    std::size_t i = 0;
    for (PyObject* base : bases) b[i++] = py::handle(base);
    PyObject* type = PyErr_NewException((std::string("bld_torch.") + name).c_str(), b.ptr(), nullptr);
    if (type == nullptr) throw py::error_already_set();
    m.add_object(name, py::handle(type));
    return type;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.doc() = "bld (Byte-Level Distillation) losses for PyTorch: the C++ core. Use the bld_torch package.";
    error_type = new_exception(m, "Error", {PyExc_RuntimeError});
    shape_error_type = new_exception(m, "ShapeError", {error_type, PyExc_ValueError});
    dtype_error_type = new_exception(m, "DtypeError", {shape_error_type, PyExc_TypeError});
    domain_error_type = new_exception(m, "DomainError", {error_type, PyExc_ValueError});
    py::register_exception_translator(&translate);

    m.def("loss", &loss, py::arg("logits"), py::arg("targets"), py::arg("true_bytes"), py::arg("mask"),
          py::arg("mode"), py::arg("kind"), py::arg("temperature"), py::arg("reduction"),
          py::arg("lambda_byte"), py::arg("lambda_kl"), py::arg("target_floor"), py::arg("need_grad"),
          "(value, grad) of a bld byte loss; see bld/loss.hpp for the conventions.");
    m.attr("byte_alphabet_size") = bld::byte_alphabet_size;
    m.attr("max_byte_heads") = bld::max_byte_heads;
}
