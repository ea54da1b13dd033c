// python/bld_torch.cpp — the C++ side of the `bld_torch` Python module.
//
// Built with torch.utils.cpp_extension (Debian's python3-torch) by python/setup.py (`pip install
// --no-build-isolation ./python`) or, for development, python/build_bld_torch.py.
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

#include <algorithm>
#include <filesystem>
#include <optional>
#include <string>
#include <tuple>

#ifdef BLD_TORCH_WITH_CUDA
#include "bld_torch_cuda.hpp"  // bld_torch_cuda.cu registers bld's CUDA backend: CUDA tensors take the one loss path
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
        // One device per call, named as the Python arguments are (bld's own check names its
        // parameters); then CUDA tensors go the same way as CPU ones: bld::bld_loss & co. run
        // bld's CUDA kernels on torch's current stream (bld/torch/loss.hpp).
        const auto same_device = [&](const std::optional<torch::Tensor>& t, const char* name) {
            if (t && t->device() != logits.device())
                throw bld::shape_error("bld_torch", std::string("argument `") + name + "`",
                                       "on " + t->device().str() + ", but head_logits is on " + logits.device().str() +
                                           " (one device per call)");
        };
        same_device(targets, "teacher_targets");
        same_device(true_bytes, "true_bytes");
        same_device(mask, "mask");
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

    [[nodiscard]] const bld::vocabulary& vocab() const { return trie->vocab(); }

    /// The file format the loader read: "encoder.json + vocab.bpe", "tiktoken" or "tokenizer.json".
    [[nodiscard]] std::string format() const {
        const auto& v = vocab();
        if (std::filesystem::path(v.source()).filename() == "encoder.json") return "encoder.json + vocab.bpe";
        for (const auto& n : v.transformations().notes)
            if (n.starts_with("tiktoken:")) return "tiktoken";
        return "tokenizer.json";
    }

    /// `id` as an index into the vocabulary; IndexError naming the method, the id and the range.
    [[nodiscard]] std::size_t checked_id(std::int64_t id, const char* method) const {
        const auto n = vocab().size();
        if (id < 0 || static_cast<std::uint64_t>(id) >= n)
            throw py::index_error(std::string("bld_torch.Tokenizer.") + method + ": id " + std::to_string(id) +
                                  " is outside the vocabulary's ids 0.." + std::to_string(n - 1) + " (" +
                                  vocab().source() + ")");
        return static_cast<std::size_t>(id);
    }

    /// The id of a special token by name; KeyError listing (some of) the known names.
    [[nodiscard]] std::int64_t special_id(const std::string& name) const {
        const auto id = vocab().find_special(name);
        if (id >= 0) return id;
        // Named tokens first, placeholders ("<|reserved_special_token_7|>", "<unused3>") after them.
        std::vector<std::string_view> names;
        for (const auto& s : vocab().specials()) names.push_back(s.first);
        std::stable_partition(names.begin(), names.end(), [](std::string_view n) {
            return n.find("reserved") == std::string_view::npos && n.find("unused") == std::string_view::npos;
        });
        std::string known;
        constexpr std::size_t shown = 16;
        for (std::size_t i = 0; i < names.size() && i < shown; ++i)
            known += std::string(i ? ", " : "") + std::string(names[i]);
        if (names.empty()) known = "none";
        else if (names.size() > shown)
            known += ", ... (" + std::to_string(names.size()) + " in all; see Tokenizer.special_ids)";
        throw py::key_error("bld_torch.Tokenizer.special_id: no special token named " + bld::quote_token(name) + " in " +
                            vocab().source() + "; its special tokens: " + known);
    }

    /// The lowest id whose text bytes equal `b`; KeyError when no text token spells them.
    [[nodiscard]] std::int64_t id_of(const py::object& b) const {
        if (!PyBytes_Check(b.ptr()) && !PyByteArray_Check(b.ptr()))
            throw py::type_error(std::string("bld_torch.Tokenizer.id_of: expected bytes (a token's text bytes, e.g. "
                                             "\"hello\".encode()), got ") + Py_TYPE(b.ptr())->tp_name);
        const std::string s = PyBytes_Check(b.ptr()) ? std::string(py::bytes(b))
                                                     : std::string(PyByteArray_AsString(b.ptr()),
                                                                   static_cast<std::size_t>(PyByteArray_Size(b.ptr())));
        const auto n = trie->find(s);
        if (n == bld::byte_trie::npos || trie->node(n).end_hi == trie->node(n).lo)
            throw py::key_error("bld_torch.Tokenizer.id_of: no text token of " + vocab().source() + " has the bytes " +
                                bld::quote_token(s));
        return trie->order()[trie->node(n).lo];  // ties are sorted by id: the lowest id of equal bytes
    }

    [[nodiscard]] std::string repr() const {
        const auto& v = vocab();
        const auto& t = v.transformations();
        std::string r = "<bld_torch.Tokenizer " + format() + " '" + v.source() + "': vocab_size=" +
                        std::to_string(v.size()) + ", text_tokens=" + std::to_string(v.text_tokens()) +
                        ", special_tokens=" + std::to_string(v.special_tokens()) + ", dummy_prefix=" +
                        dummy_prefix_name(t.dummy_prefix);
        if (t.decoder_strips_leading_space) r += ", decoder_strips_leading_space=True";
        if (!t.normalizer.empty()) r += ", normalizer=" + t.normalizer;
        return r + ">";
    }

    static const char* dummy_prefix_name(bld::dummy_prefix_rule rule) {
        switch (rule) {
            case bld::dummy_prefix_rule::always: return "always";
            case bld::dummy_prefix_rule::if_absent: return "if_absent";
            case bld::dummy_prefix_rule::none: break;
        }
        return "none";
    }
    static const char* kind_name(bld::token_kind kind) {
        switch (kind) {
            case bld::token_kind::text: return "text";
            case bld::token_kind::special: return "special";
            case bld::token_kind::absent: break;
        }
        return "absent";
    }
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
    require_dtype(teacher_logits, "teacher_logits", {torch::kFloat32, torch::kBFloat16, torch::kHalf},
                  "float32, bfloat16 or float16");
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
        else if (logits.scalar_type() == torch::kHalf)
            r = bld::canonical_targets(student.trie->vocab(), sids, *teacher.trie,
                                       bld::as_view<const bld::f16, 2>(logits, "teacher_logits"), tids,
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
    py::class_<tokenizer>(m, "Tokenizer",
                          "A tokenizer loaded by bld_torch.load_tokenizer: its vocabulary (id -> text bytes, special "
                          "tokens) and sorted byte trie.")
        .def_property_readonly("vocab_size", [](const tokenizer& t) { return t.vocab().size(); },
                               "Number of ids: the largest id + 1 (gaps included).")
        .def_property_readonly("text_tokens", [](const tokenizer& t) { return t.vocab().text_tokens(); },
                               "Number of ids with text bytes.")
        .def_property_readonly("source", [](const tokenizer& t) { return t.vocab().source(); },
                               "The file the vocabulary was read from.")
        .def_property_readonly("format", &tokenizer::format,
                               "\"tokenizer.json\", \"encoder.json + vocab.bpe\" or \"tiktoken\".")
        .def_property_readonly("special_ids", [](const tokenizer& t) {
            py::dict d;  // in id order
            for (const auto& [name, id] : t.vocab().specials()) d[py::str(name)] = py::int_(id);
            return d;
        }, "Special tokens (no text bytes; their mass is STOP) as {name: id}, in id order.")
        .def("special_id", &tokenizer::special_id, py::arg("name"),
             "The id of the special token `name`; KeyError (listing the known names) when there is none.")
        .def("id_of", &tokenizer::id_of, py::arg("token_bytes"),
             "The id of the text token with exactly these bytes (the lowest id when several have them); KeyError "
             "when none has.")
        .def("token_bytes", [](const tokenizer& t, std::int64_t id) {
            return py::bytes(std::string(t.vocab().bytes(t.checked_id(id, "token_bytes"))));
        }, py::arg("id"), "The text bytes of `id` (b\"\" for special and absent ids); IndexError outside the vocabulary.")
        .def("token_kind", [](const tokenizer& t, std::int64_t id) {
            return tokenizer::kind_name(t.vocab().kind(t.checked_id(id, "token_kind")));
        }, py::arg("id"), "\"text\", \"special\" or \"absent\" (an id no token has); IndexError outside the vocabulary.")
        .def_property_readonly("dummy_prefix", [](const tokenizer& t) {
            return tokenizer::dummy_prefix_name(t.vocab().transformations().dummy_prefix);
        }, "When the encoder puts a space in front of the text: \"none\", \"always\" or \"if_absent\".")
        .def_property_readonly("decoder_strips_leading_space", [](const tokenizer& t) {
            return t.vocab().transformations().decoder_strips_leading_space;
        })
        .def_property_readonly("normalizer", [](const tokenizer& t) { return t.vocab().transformations().normalizer; },
                               "Unicode normalisation the encoder applies first (\"NFC\", ...; \"\" for none).")
        .def_property_readonly("notes", [](const tokenizer& t) { return t.vocab().transformations().notes; },
                               "What else the loader saw (decoder steps, byte fallback), as text.")
        .def("__len__", [](const tokenizer& t) { return t.vocab().size(); })
        .def("__repr__", &tokenizer::repr);
    m.def("load_tokenizer", &load_tokenizer, py::arg("path"), py::arg("specials") = std::vector<std::string>{},
          "Load a tokenizer.json, a folder with encoder.json + vocab.bpe, or a .tiktoken file (specials: NAME=ID).");
    m.def("canonical_targets", &canonical_targets, py::arg("teacher_logits"), py::arg("teacher_ids"),
          py::arg("student_ids"), py::arg("teacher"), py::arg("student"), py::arg("k"), py::arg("text"),
          "(targets [T, K, 260], mask [T, K], true_bytes [T, K], dropped [T, K]) from the teacher's rows on the "
          "canonical path.");
    m.attr("byte_alphabet_size") = static_cast<std::int64_t>(bld::alphabet_size);
#ifdef BLD_TORCH_WITH_CUDA
    m.attr("with_cuda") = bld_torch_cuda::backend_registered();
#else
    m.attr("with_cuda") = false;
#endif
    m.attr("max_byte_heads") = bld::max_byte_heads;
}
