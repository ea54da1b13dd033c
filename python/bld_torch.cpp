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
#include <bld/torch/teacher.hpp>
#include <bld/torch/token_head.hpp>
#include <bld/projection/covering.hpp>

#include <algorithm>
#include <filesystem>
#include <map>
#include <mutex>
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

    static const char* dummy_prefix_name(bld::dummy_prefix_rule rule) { return bld::to_string(rule); }
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

/// A dense, unshifted distiller for (teacher, student, K), built once per triple (canonical_targets).
std::shared_ptr<const bld::distiller> cached_distiller(const tokenizer& teacher, const tokenizer& student, std::size_t k) {
    static std::mutex mutex;
    static std::map<std::tuple<const void*, const void*, std::size_t>, std::shared_ptr<const bld::distiller>> cache;
    const std::lock_guard<std::mutex> lock(mutex);
    auto& d = cache[{teacher.trie.get(), student.trie.get(), k}];
    if (!d) {
        bld::distiller_options o;
        o.heads = k;
        o.layout = bld::target_layout::dense;
        const std::shared_ptr<const bld::vocabulary> sv(student.trie, &student.trie->vocab());
        d = std::make_shared<const bld::distiller>(teacher.trie, sv, o);
    }
    return d;
}

/// Canonical-path teacher targets for a student's slots, one text: (targets [T, K, 260] float32,
/// mask [T, K] bool, true_bytes [T, K] int64 with −1 at masked slots, dropped [T, K] float64), on
/// the fast path (bld::distiller, dense layout, row j = teacher token j).
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
    if (teacher_logits.dim() != 2)
        throw bld::shape_error("bld_torch.canonical_targets", "argument `teacher_logits`",
                               "expected [m, n >= teacher vocab] rows, got " + std::to_string(teacher_logits.dim()) +
                                   " dimensions");
    if (static_cast<std::size_t>(teacher_logits.size(0)) < tids.size())
        throw bld::shape_error("bld_torch.canonical_targets", "argument `teacher_logits`",
                               "one teacher row per token is needed: " + std::to_string(tids.size()) + " tokens, " +
                                   std::to_string(teacher_logits.size(0)) + " rows");
    std::optional<std::string> txt;
    if (text) txt = std::string(*text);
    const auto d = cached_distiller(teacher, student, static_cast<std::size_t>(k));
    const auto logits = teacher_logits.narrow(0, 0, static_cast<std::int64_t>(tids.size())).contiguous();
    bld::target_batch r;
    {
        py::gil_scoped_release no_gil;
        const std::vector<std::string_view> texts = txt ? std::vector<std::string_view>{*txt} : std::vector<std::string_view>{};
        bld::batch_ranges ranges;
        ranges.texts = texts;
        r = d->targets(logits, tids, sids, ranges);
    }
    const auto T = r.positions();
    auto targets = torch::from_blob(r.values_f32_storage().data(), {T, k, static_cast<std::int64_t>(bld::alphabet_size)},
                                    torch::kFloat32).clone();
    auto mask = torch::from_blob(r.mask_storage().data(), {T, k}, torch::kUInt8).to(torch::kBool);
    auto bytes = torch::from_blob(r.true_bytes_storage().data(), {T, k}, torch::kInt32).to(torch::kInt64);
    auto dropped = torch::from_blob(r.dropped_storage().data(), {T, k}, torch::kFloat32).to(torch::kFloat64);
    return {targets, mask, bytes, dropped};
}

// ---- the distiller ---------------------------------------------------------------------------

/// A bld::distiller shared with Python (immutable once built; calls may run concurrently).
struct distiller_handle {
    std::shared_ptr<const bld::distiller> d;
    std::shared_ptr<const bld::byte_trie> teacher, student; // kept for repr
};

distiller_handle make_distiller(const tokenizer& teacher, const tokenizer& student, std::int64_t heads,
                                const std::string& layout, const std::string& precision, const std::string& rows,
                                const std::string& path, bool shifted, std::int64_t threads,
                                const std::string& student_rows) {
    const char* op = "bld_torch.Distiller";
    bld::distiller_options o;
    if (heads < 1 || heads > bld::max_byte_heads)
        throw bld::value_error(op, "heads", "K must be in 1..260, got " + std::to_string(heads));
    o.heads = static_cast<std::size_t>(heads);
    if (layout == "compact") o.layout = bld::target_layout::compact;
    else if (layout == "dense") o.layout = bld::target_layout::dense;
    else throw bld::value_error(op, "layout", "expected \"compact\" or \"dense\", got \"" + layout + "\"");
    if (precision == "float32") o.precision = bld::dtype::f32;
    else if (precision == "bfloat16") o.precision = bld::dtype::bf16;
    else throw bld::value_error(op, "dtype", "targets are torch.float32 or torch.bfloat16, got " + precision);
    if (rows == "id") o.rows = bld::row_order::id;
    else if (rows == "trie") o.rows = bld::row_order::trie;
    else throw bld::value_error(op, "row_order", "expected \"id\" or \"trie\", got \"" + rows + "\"");
    if (student_rows == "id") o.student_order = bld::row_order::id;
    else if (student_rows == "trie") o.student_order = bld::row_order::trie;
    else throw bld::value_error(op, "student_row_order", "expected \"id\" or \"trie\", got \"" + student_rows + "\"");
    if (path == "fast") o.path = bld::projection_path::fast;
    else if (path == "reference") o.path = bld::projection_path::reference;
    else throw bld::value_error(op, "path", "expected \"fast\" or \"reference\", got \"" + path + "\"");
    if (threads < 0) throw bld::value_error(op, "threads", "must be >= 0 (0: every core), got " + std::to_string(threads));
    o.shifted = shifted;
    o.parallel.threads = static_cast<std::size_t>(threads);
    const std::shared_ptr<const bld::vocabulary> sv(student.trie, &student.trie->vocab());
    py::gil_scoped_release no_gil;
    return {std::make_shared<const bld::distiller>(teacher.trie, sv, o), teacher.trie, student.trie};
}

/// A tensor over memory a target_batch owns (no copy; the batch lives as long as the tensor).
torch::Tensor owned(const std::shared_ptr<bld::target_batch>& keep, void* data, std::vector<std::int64_t> shape,
                    torch::ScalarType type) {
    auto hold = new std::shared_ptr<bld::target_batch>(keep);
    return torch::from_blob(data, shape, [hold](void*) { delete hold; }, torch::TensorOptions().dtype(type));
}

std::tuple<torch::Tensor, torch::Tensor, torch::Tensor, torch::Tensor, torch::Tensor>
batch_tensors(const std::shared_ptr<bld::target_batch>& keep);

/// (values, slots, mask, true_bytes, dropped) of a batch: values [A, 260] (compact) or
/// [B, S, K, 260] (dense), slots [A] int64 (compact; empty for dense), mask [B, S, K] bool,
/// true_bytes [B, S, K] int32 (−1 at inactive slots), dropped [B, S, K] float32. CPU tensors
/// over the batch's own memory.
std::tuple<torch::Tensor, torch::Tensor, torch::Tensor, torch::Tensor, torch::Tensor>
distill(const distiller_handle& h, const torch::Tensor& logits, const torch::Tensor& teacher_ids,
        const torch::Tensor& student_ids, const std::optional<torch::Tensor>& teacher_mask,
        const std::optional<torch::Tensor>& student_mask, const std::optional<std::vector<py::bytes>>& texts) {
    const char* op = "bld_torch.Distiller.targets";
    if (!logits.defined()) throw bld::shape_error(op, "argument `teacher_logits`", "undefined tensor");
    require_dtype(logits, "teacher_logits", {torch::kFloat32, torch::kBFloat16, torch::kFloat16, torch::kFloat64},
                  "float32, bfloat16, float16 or float64");
    require_dtype(teacher_ids, "teacher_ids", {torch::kInt64}, "int64");
    require_dtype(student_ids, "student_ids", {torch::kInt64}, "int64");
    std::vector<std::string> text_store;
    std::vector<std::string_view> text_views;
    if (texts) {
        for (const auto& t : *texts) text_store.emplace_back(t);
        for (const auto& t : text_store) text_views.emplace_back(t);
    }
    bld::batch_ranges ranges;
    const auto mask_view = [&](const std::optional<torch::Tensor>& m, const char* name) {
        if (!m) return bld::tensor_view<const std::uint8_t, 2>();
        require_dtype(*m, name, {torch::kUInt8, torch::kBool}, "uint8 or bool");
        // bool storage is one byte holding 0 or 1: read it as uint8.
        return bld::tensor_view<const std::uint8_t, 2>(static_cast<const std::uint8_t*>(m->data_ptr()),
                                                       {m->size(0), m->size(1)});
    };
    ranges.teacher_mask = mask_view(teacher_mask, "teacher_mask");
    ranges.student_mask = mask_view(student_mask, "student_mask");
    ranges.texts = text_views;
    auto keep = std::make_shared<bld::target_batch>();
    {
        py::gil_scoped_release no_gil;
        *keep = h.d->targets(logits, teacher_ids, student_ids, ranges);
    }
    return batch_tensors(keep);
}

/// (values, slots, mask, true_bytes, dropped) over a target_batch's own memory (see distill).
std::tuple<torch::Tensor, torch::Tensor, torch::Tensor, torch::Tensor, torch::Tensor>
batch_tensors(const std::shared_ptr<bld::target_batch>& keep) {
    const std::int64_t B = keep->batch(), S = keep->positions(), K = keep->heads(), A = keep->active_slots();
    const bool compact = keep->layout() == bld::target_layout::compact;
    const auto vt = keep->precision() == bld::dtype::f32 ? torch::kFloat32 : torch::kBFloat16;
    void* vdata = keep->precision() == bld::dtype::f32 ? static_cast<void*>(keep->values_f32_storage().data())
                                                       : static_cast<void*>(keep->values_bf16_storage().data());
    const std::int64_t a = static_cast<std::int64_t>(bld::alphabet_size);
    auto values = compact ? owned(keep, vdata, {A, a}, vt) : owned(keep, vdata, {B, S, K, a}, vt);
    auto slots = compact ? owned(keep, keep->slots_storage().data(), {A}, torch::kInt64)
                         : torch::empty({0}, torch::kInt64);
    auto mask = owned(keep, keep->mask_storage().data(), {B, S, K}, torch::kBool);
    auto bytes = owned(keep, keep->true_bytes_storage().data(), {B, S, K}, torch::kInt32);
    auto dropped = owned(keep, keep->dropped_storage().data(), {B, S, K}, torch::kFloat32);
    return {values, slots, mask, bytes, dropped};
}

/// Runs f, naming sequence b in the location of a bld error it throws.
template <class F>
void in_sequence(std::size_t b, F&& f) {
    try {
        f();
    } catch (const bld::error& e) {
        bld::detail::rethrow_in_sequence(e, b);
    }
}

/// The covering methods with a PyTorch model as the teacher (bld_torch.Distiller.covering_targets).
/// `model(ids, lengths)`: ids [B, T] int64 on `device` (right-padded with pad_id), lengths [B]
/// int64 on the CPU → logits [B, ≥ T + 1, ≥ row_size], row r of sequence b = the next-token
/// logits after its first r tokens (the model adds its own BOS). It is called from this thread
/// with the GIL held, at most max_batch sequences a call (bld::model_teacher: contexts that are a
/// prefix of another are read from its forward pass). Per text: the distributions [L, 260]
/// float64 (row i = byte i given the bytes before it), the mass dropped or pruned at each byte
/// [L] float64, the teacher rows asked for; with student ids, the slot targets as distill gives
/// them; and what the model was asked in all.
py::tuple covering(const distiller_handle& h, py::function model, std::int64_t row_size, const std::string& device,
                   std::int64_t pad_id, std::int64_t max_batch, const std::vector<torch::Tensor>& teacher_ids,
                   const std::optional<std::vector<torch::Tensor>>& student_ids,
                   const std::optional<std::vector<py::bytes>>& texts, const std::string& method, std::int64_t beam,
                   double epsilon, double threshold) {
    const char* op = "bld_torch.Distiller.covering_targets";
    if (method != "beam" && method != "repair" && method != "exact")
        throw bld::value_error(op, "method", "expected \"beam\", \"repair\" or \"exact\", got \"" + method + "\"");
    if (beam < 0) throw bld::value_error(op, "beam", "K must be >= 0 (0: unlimited), got " + std::to_string(beam));
    if (!(epsilon >= 0.0 && epsilon < 1.0)) throw bld::value_error(op, "epsilon", "must be in [0, 1), got " + std::to_string(epsilon));
    if (max_batch < 1) throw bld::value_error(op, "max_batch", "must be >= 1, got " + std::to_string(max_batch));
    if (row_size < 1) throw bld::value_error(op, "vocab_size", "must be >= 1, got " + std::to_string(row_size));
    const std::size_t n = teacher_ids.size();
    if (student_ids && student_ids->size() != n)
        throw bld::shape_error(op, "student_ids", std::to_string(student_ids->size()) + " sequences for " +
                                                      std::to_string(n) + " teacher sequences");
    if (texts && texts->size() != n)
        throw bld::shape_error(op, "texts", std::to_string(texts->size()) + " texts for " + std::to_string(n) +
                                                " teacher sequences");
    const auto& trie = *h.teacher;
    const auto& tv = trie.vocab();
    // Host copies of the ids, special tokens at either end left out (they are the model's context,
    // as in distill); the text each spells.
    std::vector<std::vector<std::int64_t>> tids(n), sids(n);
    std::vector<std::string> text(n);
    const auto host_ids = [&](const torch::Tensor& t, const std::string& name) {
        require_dtype(t, name.c_str(), {torch::kInt64}, "int64");
        if (t.dim() != 1) throw bld::shape_error(op, name, "expected one sequence [S], got " + bld::detail::describe_tensor(t));
        const auto c = t.to(torch::kCPU).contiguous();
        return std::vector<std::int64_t>(c.data_ptr<std::int64_t>(), c.data_ptr<std::int64_t>() + c.numel());
    };
    for (std::size_t b = 0; b < n; ++b) {
        const std::string name = "teacher_ids[" + std::to_string(b) + "]";
        auto ids = host_ids(teacher_ids[b], name);
        const auto [lead, end] = bld::detail::text_id_range(tv, ids);
        tids[b].assign(ids.begin() + static_cast<std::ptrdiff_t>(lead), ids.begin() + static_cast<std::ptrdiff_t>(end));
        if (tids[b].empty()) throw bld::value_error(op, name, "no text tokens (the covering methods need a text)");
        if (texts) text[b] = std::string((*texts)[b]);
        in_sequence(b, [&] { text[b] = bld::detail::check_ids(trie, tids[b], texts ? std::optional<std::string_view>(text[b]) : std::nullopt, op); });
        if (student_ids) sids[b] = host_ids((*student_ids)[b], "student_ids[" + std::to_string(b) + "]");
    }
    bld::torch_causal_model lm(
        [&model](const at::Tensor& ids, const at::Tensor& lengths) { return model(ids, lengths).cast<torch::Tensor>(); },
        static_cast<std::size_t>(row_size), torch::Device(device), pad_id);
    bld::model_teacher<bld::torch_causal_model> teacher(lm, static_cast<std::size_t>(max_batch));
    std::vector<bld::byte_distributions> dist(n);
    py::list bytes, dropped, rows;
    for (std::size_t b = 0; b < n; ++b) {
        const auto before = teacher.cost().contexts;
        const bld::beam_options bo{static_cast<std::size_t>(beam), epsilon};
        in_sequence(b, [&] {
            if (method == "beam") dist[b] = bld::covering_beam(trie, teacher, text[b], bo);
            else if (method == "repair") dist[b] = bld::repaired_path(trie, teacher, text[b], tids[b], {threshold, bo});
            else dist[b] = bld::exact_covering(trie, teacher, text[b]);
        });
        const auto L = static_cast<std::int64_t>(text[b].size());
        const auto a = static_cast<std::int64_t>(bld::alphabet_size);
        bytes.append(torch::from_blob(dist[b].probs.data(), {L, a}, torch::kFloat64).clone());
        dropped.append(torch::from_blob(dist[b].dropped.data(), {L}, torch::kFloat64).clone());
        rows.append(static_cast<std::int64_t>(teacher.cost().contexts - before));
    }
    py::object targets = py::none();
    if (student_ids) {
        std::vector<bld::byte_sequence> seqs(n);
        for (std::size_t b = 0; b < n; ++b)
            seqs[b] = {&dist[b], tids[b], sids[b], texts ? std::optional<std::string_view>(text[b]) : std::nullopt};
        auto keep = std::make_shared<bld::target_batch>();
        *keep = h.d->targets(std::span<const bld::byte_sequence>(seqs));
        targets = py::cast(batch_tensors(keep));
    }
    const auto& c = teacher.cost();
    py::dict cost;
    cost["calls"] = c.calls;
    cost["contexts"] = c.contexts;
    cost["sequences"] = c.sequences;
    cost["positions"] = c.positions;
    cost["batches"] = c.batches;
    return py::make_tuple(bytes, dropped, rows, targets, cost);
}

/// The loss on distiller targets: (value, grad) as `loss`. logits [T, K, 260] float32/float64;
/// values compact [A, 260] or dense [T·K, 260] (float32 or bfloat16), slots [A] int64 (compact),
/// mask [T, K] bool/uint8, true_bytes [T, K] int32/int64.
std::tuple<torch::Tensor, torch::Tensor>
loss_on_targets(const torch::Tensor& logits, const torch::Tensor& values, const torch::Tensor& slots,
                const torch::Tensor& mask, const torch::Tensor& true_bytes, bool compact, const std::string& mode,
                const std::string& kind, double temperature, const std::string& reduction_name, double lambda_byte,
                double lambda_kl, double target_floor, bool need_grad) {
    const char* op = "bld_torch";
    require_dtype(logits, "head_logits", {torch::kFloat32, torch::kFloat64}, "float32 or float64");
    require_dtype(values, "targets.values", {torch::kFloat32, torch::kBFloat16}, "float32 or bfloat16");
    require_dtype(mask, "targets.mask", {torch::kBool, torch::kUInt8}, "bool or uint8");
    const auto tk = bld::byte_head_shape(logits, op);
    const auto y = true_bytes.scalar_type() == torch::kInt32 ? true_bytes : true_bytes.to(torch::kInt32);
    const auto view = [&]<class P>() {
        bld::slot_targets_view<P> v;
        v.layout = compact ? bld::target_layout::compact : bld::target_layout::dense;
        v.tokens = tk[0];
        v.heads = tk[1];
        v.values = bld::as_view<const P, 2>(values, "targets.values");
        if (compact) v.slots = bld::as_view<const std::int64_t, 1>(slots, "targets.slots");
        v.mask = bld::tensor_view<const std::uint8_t, 2>(static_cast<const std::uint8_t*>(mask.data_ptr()),
                                                         {mask.size(0), mask.size(1)}, bld::tensor_adapter<at::Tensor>::device(mask));
        v.true_bytes = bld::as_view<const std::int32_t, 2>(y, "targets.true_bytes", {tk[0], tk[1]},
                                                           bld::tensor_adapter<at::Tensor>::device(y));
        return v;
    };
    const bld::loss_reduction reduction = bld::parse_reduction(reduction_name);
    const bld::divergence div = bld::parse_divergence(kind);
    const auto opts = logits.options();
    torch::Tensor grad = need_grad ? torch::empty({tk[0], tk[1], static_cast<std::int64_t>(bld::alphabet_size)}, opts) : torch::Tensor();
    torch::Tensor per_slot = reduction == bld::loss_reduction::none ? torch::empty({tk[0], tk[1]}, opts) : torch::Tensor();
    const bld::bld_loss_options o{.lambda_byte = lambda_byte, .lambda_kl = lambda_kl, .kind = div,
                                  .temperature = temperature, .reduction = reduction, .target_floor = target_floor};
    const auto run = [&](const auto& v) {
        const auto go = [&](auto&& g, auto&& s) {
            if (mode == "divergence")
                return bld::byte_loss(logits, v, {.kind = div, .temperature = temperature, .reduction = reduction,
                                                  .target_floor = target_floor}, g, s);
            return bld::bld_loss(logits, v, o, g, s);
        };
        if (grad.defined() && per_slot.defined()) return go(grad, per_slot);
        if (grad.defined()) return go(grad, bld::no_tensor);
        if (per_slot.defined()) return go(bld::no_tensor, per_slot);
        return go(bld::no_tensor, bld::no_tensor);
    };
    bld::byte_loss_result r;
    if (values.scalar_type() == torch::kFloat32) {
        const auto v = view.template operator()<float>();
        py::gil_scoped_release no_gil;
        r = run(v);
    } else {
        const auto v = view.template operator()<bld::bf16>();
        py::gil_scoped_release no_gil;
        r = run(v);
    }
    torch::Tensor value = per_slot.defined() ? per_slot : torch::full({}, r.value, opts);
    return {value, grad};
}

/// The token-head loss on distiller targets (bld::autograd::token_head_loss: one autograd node,
/// the same as C++ trainers get). logits [B, S, V] float32/bfloat16/float16/float64; ids [B, S]
/// int64; the Targets' tensors as distill returned them (values compact [A, 260] or dense
/// [B, S, K, 260], slots [A], mask [B, S, K] bool, true_bytes [B, S, K] int32); student_mask
/// [B, S] or None. Returns the 0-dim loss (float32; float64 for float64 logits).
torch::Tensor token_head_loss(const distiller_handle& h, const torch::Tensor& logits, const torch::Tensor& ids,
                              const torch::Tensor& values, const torch::Tensor& slots, const torch::Tensor& mask,
                              const torch::Tensor& true_bytes, bool compact,
                              const std::optional<torch::Tensor>& student_mask, const std::string& kind,
                              double temperature, double weight, const std::string& reduction, double target_floor) {
    const char* op = "bld_torch.Distiller.token_head_loss";
    require_dtype(values, "targets.values", {torch::kFloat32, torch::kBFloat16}, "float32 or bfloat16");
    require_dtype(mask, "targets.mask", {torch::kBool, torch::kUInt8}, "bool or uint8");
    require_dtype(true_bytes, "targets.true_bytes", {torch::kInt32}, "int32");
    if (mask.dim() != 3)
        throw bld::shape_error(op, "targets.mask", "expected [B, S, K], got " + bld::detail::describe_tensor(mask));
    const std::int64_t T = mask.size(0) * mask.size(1), K = mask.size(2);
    const std::int64_t a = static_cast<std::int64_t>(bld::alphabet_size);
    const auto view = [&]<class P>() {
        bld::slot_targets_view<P> v;
        v.layout = compact ? bld::target_layout::compact : bld::target_layout::dense;
        v.tokens = T;
        v.heads = K;
        if (compact) {
            v.values = bld::as_view<const P, 2>(values, "targets.values");
            v.slots = bld::as_view<const std::int64_t, 1>(slots, "targets.slots");
        } else {
            const auto d = bld::as_view<const P, 4>(values, "targets.values", {mask.size(0), mask.size(1), K, a});
            v.values = bld::tensor_view<const P, 2>(d.data(), {T * K, a});
        }
        if (!mask.is_contiguous()) throw bld::shape_error(op, "targets.mask", "expected a contiguous tensor");
        v.mask = bld::tensor_view<const std::uint8_t, 2>(static_cast<const std::uint8_t*>(mask.data_ptr()), {T, K});
        const auto y = bld::as_view<const std::int32_t, 3>(true_bytes, "targets.true_bytes", {mask.size(0), mask.size(1), K});
        v.true_bytes = bld::tensor_view<const std::int32_t, 2>(y.data(), {T, K});
        return v;
    };
    bld::token_head_options o;
    o.kind = bld::parse_divergence(kind);
    o.temperature = temperature;
    o.weight = weight;
    if (reduction == "mean") o.reduction = bld::token_head_reduction::mean;
    else if (reduction == "sum") o.reduction = bld::token_head_reduction::sum;
    else throw bld::value_error(op, "reduction", "expected \"mean\" or \"sum\", got \"" + reduction + "\"");
    o.target_floor = target_floor;
    const torch::Tensor m = student_mask ? *student_mask : torch::Tensor();
    if (values.scalar_type() == torch::kFloat32) {
        const auto v = view.template operator()<float>();
        py::gil_scoped_release no_gil;
        return bld::autograd::token_head_loss(*h.d, logits, ids, v, o, m);
    }
    const auto v = view.template operator()<bld::bf16>();
    py::gil_scoped_release no_gil;
    return bld::autograd::token_head_loss(*h.d, logits, ids, v, o, m);
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
    py::class_<distiller_handle>(m, "_Distiller", "bld::distiller (use bld_torch.Distiller)")
        .def("permutation", [](const distiller_handle& h) {
            const auto p = h.d->permutation();
            return std::vector<std::int64_t>(p.begin(), p.end());
        })
        .def("row_width", [](const distiller_handle& h) { return h.d->row_width(); })
        .def("student_permutation", [](const distiller_handle& h) {
            const auto p = h.d->student_permutation();
            return std::vector<std::int64_t>(p.begin(), p.end());
        });
    m.def("make_distiller", &make_distiller, py::arg("teacher"), py::arg("student"), py::arg("heads"), py::arg("layout"),
          py::arg("precision"), py::arg("row_order"), py::arg("path"), py::arg("shifted"), py::arg("threads"),
          py::arg("student_row_order") = "id");
    m.def("distill", &distill, py::arg("distiller"), py::arg("teacher_logits"), py::arg("teacher_ids"),
          py::arg("student_ids"), py::arg("teacher_mask"), py::arg("student_mask"), py::arg("texts"),
          "(values, slots, mask, true_bytes, dropped) of a batch: see bld_torch.Distiller.targets.");
    m.def("covering", &covering, py::arg("distiller"), py::arg("model"), py::arg("row_size"), py::arg("device"),
          py::arg("pad_id"), py::arg("max_batch"), py::arg("teacher_ids"), py::arg("student_ids"), py::arg("texts"),
          py::arg("method"), py::arg("beam"), py::arg("epsilon"), py::arg("threshold"),
          "(bytes, dropped, teacher_rows, targets or None, cost): see bld_torch.Distiller.covering_targets.");
    m.def("loss_on_targets", &loss_on_targets, py::arg("logits"), py::arg("values"), py::arg("slots"), py::arg("mask"),
          py::arg("true_bytes"), py::arg("compact"), py::arg("mode"), py::arg("kind"), py::arg("temperature"),
          py::arg("reduction"), py::arg("lambda_byte"), py::arg("lambda_kl"), py::arg("target_floor"),
          py::arg("need_grad"), "(value, grad) of a bld byte loss on distiller targets.");
    m.def("token_head_loss", &token_head_loss, py::arg("distiller"), py::arg("student_logits"), py::arg("student_ids"),
          py::arg("values"), py::arg("slots"), py::arg("mask"), py::arg("true_bytes"), py::arg("compact"),
          py::arg("student_mask"), py::arg("kind"), py::arg("temperature"), py::arg("weight"), py::arg("reduction"),
          py::arg("target_floor"),
          "The token-head loss on distiller targets, differentiable w.r.t. student_logits (one autograd node: "
          "bld::autograd::token_head_loss); see bld_torch.Distiller.token_head_loss.");
    m.attr("byte_alphabet_size") = static_cast<std::int64_t>(bld::alphabet_size);
#ifdef BLD_TORCH_WITH_CUDA
    m.attr("with_cuda") = bld_torch_cuda::backend_registered();
#else
    m.attr("with_cuda") = false;
#endif
    m.attr("max_byte_heads") = bld::max_byte_heads;
}
