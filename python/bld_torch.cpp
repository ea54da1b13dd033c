// python/bld_torch.cpp — the C++ side of the `bld_torch` Python module.
//
// Built by python/build_bld_torch.py with torch.utils.cpp_extension (Debian's python3-torch).
// The Python package (python/bld_torch/__init__.py) wraps `loss` in a torch.autograd.Function;
// this file only converts tensors through bld's libtorch adapter, calls bld's loss function
// objects (CUDA tensors: bld::cuda's, through bld_torch_cuda.cu, when built with CUDA) and maps
// bld's exceptions onto Python exception classes:
//
//   bld_torch.Error       (RuntimeError)          every bld error
//   bld_torch.ShapeError  (Error, ValueError)     shape, rank, device, layout, K outside 1..260
//   bld_torch.DtypeError  (ShapeError, TypeError) a tensor of the wrong dtype
//   bld_torch.DomainError (Error, ValueError)     NaN/±inf logits, bad probabilities or bytes,
//                                                 bad options
#include <torch/extension.h>

#include <bld/adapters/torch.hpp>
#include <bld/cpu.hpp>
#include <bld/core/error.hpp>
#include <bld/targets/alignment.hpp>
#include <bld/io/json.hpp>
#include <bld/loss/byte_loss.hpp>
#include <bld/torch/loss.hpp>

#include <optional>
#include <string>
#include <tuple>

#ifdef BLD_TORCH_WITH_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "bld_torch_cuda.hpp"
#endif

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

#ifdef BLD_TORCH_WITH_CUDA
/// The loss on CUDA tensors (all on the logits' device, dense): bld::cuda's kernels on torch's
/// current stream of that device; the value is read back (one synchronisation, as .item()).
std::tuple<torch::Tensor, torch::Tensor>
loss_cuda(const torch::Tensor& logits, const std::optional<torch::Tensor>& targets,
          const std::optional<torch::Tensor>& true_bytes, const std::optional<torch::Tensor>& mask,
          const std::string& mode, const std::string& kind, double temperature, const std::string& reduction_name,
          double lambda_byte, double lambda_kl, double target_floor, bool need_grad) {
    const auto same_device = [&](const std::optional<torch::Tensor>& t, const char* name) {
        if (!t) return;
        if (t->device() != logits.device())
            throw bld::shape_error("bld_torch", std::string("argument `") + name + "`",
                                   "on " + t->device().str() + ", but head_logits is on " + logits.device().str() +
                                       " (one device per call)");
        if (!t->is_contiguous())
            throw bld::shape_error("bld_torch", std::string("argument `") + name + "`", "not contiguous");
    };
    same_device(logits, "head_logits");
    same_device(targets, "teacher_targets");
    same_device(true_bytes, "true_bytes");
    same_device(mask, "mask");
    bld_torch_cuda::loss_call c;
    c.mode = mode == "ce" ? bld_torch_cuda::loss_mode::ce
           : mode == "bld" ? bld_torch_cuda::loss_mode::bld
                           : bld_torch_cuda::loss_mode::divergence;
    if (mode != "ce" && mode != "bld" && mode != "divergence")
        throw bld::value_error("bld_torch", "mode", "unknown mode " + mode);
    c.kind = mode == "ce" ? bld::divergence::forward_kl : bld::parse_divergence(kind);
    c.reduction = bld::parse_reduction(reduction_name);
    c.temperature = temperature;
    c.lambda_byte = lambda_byte;
    c.lambda_kl = lambda_kl;
    c.target_floor = target_floor;
    const auto tk = bld::byte_head_shape(logits, "bld_torch");
    c.T = tk[0];
    c.K = tk[1];
    c.logits_f64 = logits.scalar_type() == torch::kFloat64;
    c.logits = logits.data_ptr();
    if (c.mode != bld_torch_cuda::loss_mode::ce) {
        if (!targets) throw bld::value_error("bld_torch", "teacher_targets", "required for kind \"" + kind + "\"");
        c.targets_f64 = targets->scalar_type() == torch::kFloat64;
        c.targets = targets->data_ptr();
    }
    if (c.mode != bld_torch_cuda::loss_mode::divergence) {
        if (!true_bytes) throw bld::value_error("bld_torch", mode == "ce" ? "kind=\"ce\"" : "bld_loss", "needs true_bytes");
        c.true_bytes_i64 = true_bytes->scalar_type() == torch::kInt64;
        c.true_bytes = true_bytes->data_ptr();
    }
    if (mask) c.mask = static_cast<const std::uint8_t*>(mask->data_ptr()); // bool: one byte, 0 or 1
    const auto opts = logits.options();
    torch::Tensor grad = need_grad ? torch::empty({c.T, c.K, static_cast<std::int64_t>(bld::alphabet_size)}, opts) : torch::Tensor();
    torch::Tensor per_slot = c.reduction == bld::loss_reduction::none ? torch::empty({c.T, c.K}, opts) : torch::Tensor();
    c.grad = grad.defined() ? grad.data_ptr() : nullptr;
    c.per_slot = per_slot.defined() ? per_slot.data_ptr() : nullptr;
    const c10::cuda::CUDAGuard guard(logits.device());
    c.device = logits.device().index();
    c.stream = c10::cuda::getCurrentCUDAStream(logits.device().index()).stream();
    bld::byte_loss_result r;
    {
        py::gil_scoped_release no_gil;
        r = bld_torch_cuda::run_loss(c);
    }
    torch::Tensor value = per_slot.defined() ? per_slot : torch::full({}, r.value, opts);
    return {value, grad};
}
#endif

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
    if (logits.is_cuda()) {
#ifdef BLD_TORCH_WITH_CUDA
        return loss_cuda(logits, targets, true_bytes, mask, mode, kind, temperature, reduction_name, lambda_byte,
                         lambda_kl, target_floor, need_grad);
#else
        throw bld::shape_error("bld_torch", "argument `head_logits`",
                               "a CUDA tensor, but this bld_torch was built without CUDA (build it with "
                               "python/build_bld_torch.py against a CUDA build of torch)");
#endif
    }

    const bld::loss_reduction reduction = bld::parse_reduction(reduction_name);
    const bld::divergence div = mode == "ce" ? bld::divergence::forward_kl : bld::parse_divergence(kind);
    // Shapes are checked by bld; outputs are sized from the logits once they are known good.
    const auto tk = bld::byte_head_shape(logits, "bld_torch");  // throws with bld's message
    const auto opts = logits.options();
    torch::Tensor grad = need_grad ? torch::empty({tk[0], tk[1], static_cast<std::int64_t>(bld::alphabet_size)}, opts) : torch::Tensor();
    torch::Tensor per_slot = reduction == bld::loss_reduction::none ? torch::empty({tk[0], tk[1]}, opts) : torch::Tensor();

    using bld::autograd::loss_terms;
    loss_terms lm = loss_terms::combined;
    if (mode == "ce") {
        if (!true_bytes) throw bld::value_error("bld_torch", "kind=\"ce\"", "needs true_bytes");
        lm = loss_terms::cross_entropy;
    } else {
        if (!targets) throw bld::value_error("bld_torch", "teacher_targets", "required for kind \"" + kind + "\"");
        if (mode == "bld") {
            if (!true_bytes) throw bld::value_error("bld_torch", "bld_loss", "needs true_bytes");
        } else if (mode == "divergence") {
            lm = loss_terms::divergence;
        } else {
            throw bld::value_error("bld_torch", "mode", "unknown mode " + mode);
        }
    }
    const bld::bld_loss_options options{.lambda_byte = lambda_byte, .lambda_kl = lambda_kl, .kind = div,
                                        .temperature = temperature, .reduction = reduction,
                                        .target_floor = target_floor};
    const auto given = [](const std::optional<torch::Tensor>& t) { return t ? *t : torch::Tensor(); };
    bld::byte_loss_result r;
    {
        py::gil_scoped_release no_gil;
        r = bld::autograd::loss_forward(lm, logits, given(targets), given(true_bytes), given(mask), options, grad,
                                            per_slot);
    }

    torch::Tensor value = per_slot.defined() ? per_slot : torch::full({}, r.value, opts);
    return {value, grad};
}

/// A loaded tokenizer: its vocabulary and sorted byte trie (shared, immutable).
struct tokenizer {
    std::shared_ptr<const bld::byte_trie> trie;
};

tokenizer load_tokenizer(const std::string& path, const std::vector<std::string>& specials) {
    bld::io::load_options opt;
    for (const auto& s : specials) opt.specials.push_back(bld::io::parse_special_token(s));
    py::gil_scoped_release no_gil;
    return {std::make_shared<const bld::byte_trie>(bld::io::load_vocabulary(path, opt))};
}

std::vector<std::int64_t> ids_of(const torch::Tensor& t, const char* name) {
    if (!t.defined()) throw bld::shape_error("bld_torch.canonical_targets", std::string("argument `") + name + "`", "undefined tensor");
    require_dtype(t, name, {torch::kInt64, torch::kInt32}, "int64 or int32");
    if (t.dim() != 1) throw bld::shape_error("bld_torch.canonical_targets", std::string("argument `") + name + "`",
                                            "expected a 1-D tensor of token ids, got " + std::to_string(t.dim()) + " dimensions");
    const auto c = t.to(torch::kCPU, torch::kInt64).contiguous();
    return {c.data_ptr<std::int64_t>(), c.data_ptr<std::int64_t>() + c.numel()};
}

/// Canonical-path teacher targets for a student's slots: (targets [T, K, 260] float32,
/// mask [T, K] bool, true_bytes [T, K] int64 with −1 at masked slots, dropped [T, K] float64).
std::tuple<torch::Tensor, torch::Tensor, torch::Tensor, torch::Tensor>
canonical_targets(const torch::Tensor& teacher_logits, const torch::Tensor& teacher_ids, const torch::Tensor& student_ids,
                  const tokenizer& teacher, const tokenizer& student, std::int64_t k, const std::optional<py::bytes>& text) {
    if (!teacher_logits.defined())
        throw bld::shape_error("bld_torch.canonical_targets", "argument `teacher_logits`", "undefined tensor");
    require_dtype(teacher_logits, "teacher_logits", {torch::kFloat32, torch::kBFloat16}, "float32 or bfloat16");
    const auto tids = ids_of(teacher_ids, "teacher_ids");
    const auto sids = ids_of(student_ids, "student_ids");
    if (k < 1 || k > bld::max_byte_heads)
        throw bld::value_error("bld_torch.canonical_targets", "k", "K must be in 1..260, got " + std::to_string(k));
    std::optional<std::string> txt;
    if (text) txt = std::string(*text);
    const auto logits = teacher_logits.contiguous();
    bld::slot_targets r;
    {
        py::gil_scoped_release no_gil;
        const std::optional<std::string_view> tv = txt ? std::optional<std::string_view>(*txt) : std::nullopt;
        if (logits.scalar_type() == torch::kBFloat16)
            r = bld::canonical_targets(student.trie->vocab(), sids, *teacher.trie,
                                       bld::as_view<const bld::bf16, 2>(logits, "teacher_logits"), tids,
                                       static_cast<std::size_t>(k), tv);
        else
            r = bld::canonical_targets(student.trie->vocab(), sids, *teacher.trie,
                                       bld::as_view<const float, 2>(logits, "teacher_logits"), tids,
                                       static_cast<std::size_t>(k), tv);
    }
    const auto T = static_cast<std::int64_t>(r.alignment.tokens);
    auto targets = torch::from_blob(r.targets.data(), {T, k, static_cast<std::int64_t>(bld::alphabet_size)}, torch::kFloat32).clone();
    auto mask = torch::from_blob(r.alignment.mask.data(), {T, k}, torch::kUInt8).to(torch::kBool);
    auto bytes = torch::from_blob(r.alignment.true_byte.data(), {T, k}, torch::kInt32).to(torch::kInt64);
    auto dropped = torch::from_blob(r.dropped.data(), {T, k}, torch::kFloat64).clone();
    return {targets, mask, bytes, dropped};
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
          "(value, grad) of a bld byte loss; see bld/loss/byte_loss.hpp for the conventions.");
    py::class_<tokenizer>(m, "Tokenizer")
        .def_property_readonly("vocab_size", [](const tokenizer& t) { return t.trie->vocab().size(); })
        .def_property_readonly("text_tokens", [](const tokenizer& t) { return t.trie->vocab().text_tokens(); })
        .def("token_bytes", [](const tokenizer& t, std::int64_t id) {
            if (id < 0) throw bld::value_error("bld_torch.Tokenizer.token_bytes", "id " + std::to_string(id), "negative id");
            return py::bytes(std::string(t.trie->vocab().bytes(static_cast<std::size_t>(id))));
        });
    m.def("load_tokenizer", &load_tokenizer, py::arg("path"), py::arg("specials") = std::vector<std::string>{},
          "Load a tokenizer.json, a folder with encoder.json + vocab.bpe, or a .tiktoken file (specials: NAME=ID).");
    m.def("canonical_targets", &canonical_targets, py::arg("teacher_logits"), py::arg("teacher_ids"),
          py::arg("student_ids"), py::arg("teacher"), py::arg("student"), py::arg("k"), py::arg("text"),
          "(targets [T, K, 260], mask [T, K], true_bytes [T, K], dropped [T, K]) from the teacher's rows on the "
          "canonical path.");
    m.attr("byte_alphabet_size") = static_cast<std::int64_t>(bld::alphabet_size);
#ifdef BLD_TORCH_WITH_CUDA
    m.attr("with_cuda") = true;
#else
    m.attr("with_cuda") = false;
#endif
    m.attr("max_byte_heads") = bld::max_byte_heads;
}
