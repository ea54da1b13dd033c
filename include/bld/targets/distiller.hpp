// bld/targets/distiller.hpp — the trainer's route from a batch of teacher rows to slot targets.
//
// A `bld::distiller` is built once from the teacher's and the student's vocabularies and the
// options (byte heads K, target layout and precision, row order, projection path, threads). It
// owns the teacher's sorted trie and SIMD row plan (and, when the program includes
// <bld/cuda.cuh> in a CUDA translation unit, builds a device projector on first use). One call,
// `targets(batch)`, turns a padded or ragged batch — teacher rows, teacher ids, student ids —
// into a `target_batch` [batch, positions, K] that bld::bld_loss reads directly.
//
// Conventions (docs/06_trainers.md walks through them with a Hugging Face model):
//
// * Teacher ids are the teacher's *input* ids of a sequence: leading special tokens (BOS, chat
//   markers) and trailing ones (EOS) are context, not text; a special token between text tokens
//   is an error. Row j of the teacher's logits is, by default, the distribution of teacher id j
//   given the ids before it. With `shifted` (a causal LM's own outputs, as Hugging Face returns
//   them) row j predicts id j + 1; then the first text token needs a row before it — a BOS — and
//   without one its bytes get no targets (their slots are masked) and the distributions start
//   at its end, given a token boundary there.
// * Student ids are the student's input ids; special tokens are allowed (their slots are
//   masked). Output position p holds the slots of student token p, or with `shifted` those of
//   token p + 1 — the token that the student's hidden state at p predicts, so that the byte
//   head applied to hidden state p lines up with targets[p]; the last position then has none.
// * A padded batch gives each sequence's valid range by starts and lengths (or masks); the
//   padding's slots are masked. Teacher rows may be in id order or, with row_order::trie, in
//   row_plan::permutation() order — free for a trainer that permutes the teacher's unembedding
//   rows once (W_sorted = W[permutation()], logits = h · W_sortedᵀ).
// * The texts, when given, are checked against both token streams (alignment_error naming the
//   first differing byte).
//
// Threads work over sequences, each sequence alone, so the result is bit-identical for every
// thread count. projection_path::reference runs the fp64 scalar reference instead of the SIMD
// row pass (for testing; about 25× slower).
#pragma once

#include "bld/core/error.hpp"
#include "bld/core/parallel.hpp"
#include "bld/core/tensor.hpp"
#include "bld/projection/canonical_path.hpp"
#include "bld/projection/canonical_plan.hpp"
#include "bld/projection/device_projection.hpp"
#include "bld/projection/device_student_path.hpp"
#include "bld/projection/device_token_head.hpp"
#include "bld/projection/fast_rows.hpp"
#include "bld/projection/row_options.hpp"
#include "bld/projection/student_path.hpp"
#include "bld/backends/device_loss.hpp"
#include "bld/backends/simd/row_pass.hpp"
#include "bld/targets/alignment.hpp"
#include "bld/targets/slot_targets.hpp"
#include "bld/vocab/trie.hpp"
#include "bld/vocab/vocabulary.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <exception>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace bld {

/// Options of a distiller (fixed at construction).
struct distiller_options {
    std::size_t heads = 10;                       ///< K, byte heads of the student (1..260)
    target_layout layout = target_layout::compact; ///< compact (active slots only) or dense
    dtype precision = dtype::f32;                 ///< target values: f32 or bf16
    row_order rows = row_order::id;               ///< column order of the teacher rows
    projection_path path = projection_path::fast;
    bool shifted = false;                         ///< model outputs at position i predict token i + 1
    row_order student_order = row_order::id;      ///< column order of the student's rows (token_head_loss)
    parallel_options parallel{};                  ///< threads over sequences (0: all cores)
    simd::level level = simd::level::automatic;
};

/// Valid ranges of a padded batch: per sequence either start + length, or a mask (one
/// contiguous run of ones: left or right padding). Empty spans / views mean "the whole row".
struct batch_ranges {
    std::span<const std::int64_t> teacher_starts, teacher_lengths; ///< [B] each, or empty
    std::span<const std::int64_t> student_starts, student_lengths; ///< [B] each, or empty
    tensor_view<const std::uint8_t, 2> teacher_mask;               ///< [B, S_t] or empty
    tensor_view<const std::uint8_t, 2> student_mask;               ///< [B, S_s] or empty
    std::span<const std::string_view> texts;                       ///< [B] or empty: checked
};

/// A padded batch: teacher logits [B, S_t, V] (float, bf16, f16 or double), the teacher's
/// input ids [B, S_t], the student's input ids [B, S_s], and the valid ranges.
template <class T>
struct distill_batch {
    tensor_view<const T, 3> teacher_logits;
    tensor_view<const std::int64_t, 2> teacher_ids;
    tensor_view<const std::int64_t, 2> student_ids;
    batch_ranges ranges{};
};

/// The student's side of a padded batch for distiller::token_head_loss: its logits
/// [B, S_s, V_s] (float, bf16, f16 or double; row p = the student's output at input position p),
/// its input ids [B, S_s] and their valid ranges (batch_ranges' student fields; the teacher
/// fields are not read).
template <class T>
struct student_batch {
    tensor_view<const T, 3> logits;
    tensor_view<const std::int64_t, 2> ids;
    batch_ranges ranges{};
};

/// One sequence of a ragged batch: its teacher rows [n_t, V] (one per teacher id), teacher ids
/// [n_t], student ids [n_s] and, optionally, its text.
template <class T>
struct distill_sequence {
    tensor_view<const T, 2> teacher_rows;
    std::span<const std::int64_t> teacher_ids;
    std::span<const std::int64_t> student_ids;
    std::optional<std::string_view> text = std::nullopt;
};

/// One sequence whose teacher targets are next-byte distributions computed elsewhere — by the
/// covering beam, the repaired path or exact covering with a model teacher
/// (bld/projection/covering.hpp) — instead of teacher rows: `bytes` holds one distribution per
/// byte of the text its teacher ids spell (leading and trailing special tokens left out), in
/// order; rows past the text (the covering methods' STOP row) are ignored.
struct byte_sequence {
    const byte_distributions* bytes = nullptr;
    std::span<const std::int64_t> teacher_ids;
    std::span<const std::int64_t> student_ids;
    std::optional<std::string_view> text = std::nullopt;
};

namespace detail {

/// One sequence's work, however it arrived.
template <class T>
struct distill_job {
    const T* rows = nullptr;                 ///< row of input position 0 (host or device memory)
    std::int64_t row_index = 0;              ///< its index in the batch's row matrix
    std::span<const std::int64_t> teacher;   ///< the valid teacher input ids
    std::int64_t teacher_first = 0;          ///< input position of teacher[0] (rows are indexed from it)
    std::span<const std::int64_t> student;   ///< the valid student input ids
    std::int64_t out_token = 0;              ///< flat token (b · positions + p) of student[0]
    std::optional<std::string_view> text;
    std::size_t index = 0;                   ///< sequence number, for errors
};

/// What phase 1 (alignment) leaves for phase 2 (projection) of one sequence.
struct aligned_sequence {
    std::span<const std::int64_t> projected;  ///< the teacher ids projected (rows exist for them)
    std::int64_t first_row = 0;               ///< input position whose row predicts projected[0]
    std::vector<std::int64_t> slot_of_byte;   ///< per projected byte: the flat slot reading it, or −1
    std::int64_t active = 0;
};

/// Writes the positions a sequence's slots read into the target batch, one at a time.
template <class P>
struct slot_sink {
    const aligned_sequence* seq;
    P* values;            ///< [rows, 260]
    float* dropped;       ///< [slots]
    std::int64_t* slots;  ///< compact: [rows]; null: dense
    std::int64_t row;     ///< compact: next row to write
    alignas(64) double scratch[alphabet_size];
    double drop = 0.0, bound_unused = 0.0;

    [[nodiscard]] double* probs(std::size_t) noexcept {
        std::fill(std::begin(scratch), std::end(scratch), 0.0);
        drop = 0.0;
        return scratch;
    }
    [[nodiscard]] double& dropped_at(std::size_t) noexcept { return drop; }
    void finish(std::size_t i) noexcept {
        const std::int64_t slot = seq->slot_of_byte[i];
        if (slot < 0) return;
        const std::int64_t r = slots != nullptr ? row++ : slot;
        if (slots != nullptr) slots[r] = slot;
        P* dst = values + r * static_cast<std::int64_t>(alphabet_size);
        for (std::size_t a = 0; a < alphabet_size; ++a) dst[a] = static_cast<P>(static_cast<float>(scratch[a]));
        dropped[slot] = static_cast<float>(drop);
    }
};

/// slot_sink under the names position_sink asks for.
template <class P>
struct slot_sink_adapter {
    slot_sink<P>& s;
    [[nodiscard]] double* probs(std::size_t i) noexcept { return s.probs(i); }
    [[nodiscard]] double& dropped(std::size_t i) noexcept { return s.dropped_at(i); }
    [[nodiscard]] double& bound(std::size_t) noexcept { return s.bound_unused; }
    void finish(std::size_t i) noexcept { s.finish(i); }
};

[[nodiscard]] inline std::string seq_name(std::size_t b) { return "sequence " + std::to_string(b); }

/// Re-throws a bld error with sequence b named first in its location (same kind and reason).
[[noreturn]] inline void rethrow_in_sequence(const error& e, std::size_t b) {
    const std::string where = seq_name(b) + (e.location().empty() ? "" : ", " + e.location());
    if (dynamic_cast<const alignment_error*>(&e)) throw alignment_error(e.operation(), where, e.reason());
    if (dynamic_cast<const shape_error*>(&e)) throw shape_error(e.operation(), where, e.reason());
    if (dynamic_cast<const value_error*>(&e)) throw value_error(e.operation(), where, e.reason());
    throw;
}

/// The text's ids within a teacher sequence: [first, end) past the leading and before the
/// trailing special tokens (BOS, EOS, padding ids the vocabulary marks special).
[[nodiscard]] inline std::pair<std::size_t, std::size_t> text_id_range(const vocabulary& v, std::span<const std::int64_t> ids) {
    const auto special = [&](std::int64_t id) {
        return id >= 0 && static_cast<std::uint64_t>(id) < v.size() && v.is_special(static_cast<std::size_t>(id));
    };
    std::size_t lead = 0, end = ids.size();
    while (lead < end && special(ids[lead])) ++lead;
    while (end > lead && special(ids[end - 1])) --end;
    return {lead, end};
}

} // namespace detail

/// The trainer-facing route from teacher rows to slot targets (see the top of this header).
class distiller {
public:
    /// @param teacher the teacher's trie (shared: the distiller keeps it alive)
    /// @param student the student's vocabulary
    /// @throws value_error for options outside their domain
    distiller(std::shared_ptr<const byte_trie> teacher, std::shared_ptr<const vocabulary> student,
              const distiller_options& options = {})
        : teacher_(require(std::move(teacher), "teacher")), student_(require(std::move(student), "student")),
          options_(checked(options)), plan_(*teacher_), device_(std::make_shared<device_state>()) {}
    /// Builds the teacher's trie from its vocabulary.
    distiller(vocabulary teacher, vocabulary student, const distiller_options& options = {})
        : distiller(std::make_shared<const byte_trie>(std::move(teacher)),
                    std::make_shared<const vocabulary>(std::move(student)), options) {}

    [[nodiscard]] const distiller_options& options() const noexcept { return options_; }
    [[nodiscard]] const byte_trie& teacher() const noexcept { return *teacher_; }
    [[nodiscard]] const vocabulary& student() const noexcept { return *student_; }
    [[nodiscard]] const row_plan& plan() const noexcept { return plan_; }
    /// The trie order of the teacher's columns: with row_order::trie, column k of a row holds
    /// the logit of id permutation()[k]. Permute the teacher's unembedding rows once with it.
    [[nodiscard]] std::span<const std::uint32_t> permutation() const noexcept { return plan_.permutation(); }
    /// Columns a teacher row needs: the vocabulary's ids (id order) or permutation().size()
    /// (trie order). Wider rows are fine (padding columns are ignored).
    [[nodiscard]] std::size_t row_width() const noexcept {
        return options_.rows == row_order::trie ? plan_.permutation().size() : plan_.vocab_size();
    }

    /// Targets of a padded batch, [B, S_s, K] in the student's input positions.
    /// @throws shape_error for inconsistent shapes (naming the argument and sequence),
    ///         value_error for bad ids or ranges, alignment_error when a sequence's two token
    ///         streams (or its text) differ, the projection's errors for bad rows.
    template <class T>
    [[nodiscard]] target_batch targets(const distill_batch<T>& batch) const {
        static_assert(logit_type<T>, "teacher logits are float, bf16, f16 or double");
        const char* op = "bld::distiller::targets";
        const auto& L = batch.teacher_logits;
        const std::int64_t B = L.extent(0), St = L.extent(1), V = L.extent(2);
        if (batch.teacher_ids.extent(0) != B || batch.teacher_ids.extent(1) != St)
            throw shape_error(op, "teacher_ids",
                              "expected [" + std::to_string(B) + ", " + std::to_string(St) +
                                  "] to match teacher_logits [B, S_t, V] = " + detail::format_extents(L.extents()) +
                                  ", got " + detail::format_extents(batch.teacher_ids.extents()));
        if (batch.student_ids.extent(0) != B)
            throw shape_error(op, "student_ids",
                              "expected " + std::to_string(B) + " sequences (the batch size of teacher_logits), got " +
                                  detail::format_extents(batch.student_ids.extents()));
        if (batch.teacher_ids.device() != device_kind::cpu || batch.student_ids.device() != device_kind::cpu)
            throw shape_error(op, batch.teacher_ids.device() != device_kind::cpu ? "teacher_ids" : "student_ids",
                              "token ids are read on the host: pass them in CPU memory");
        const std::int64_t Ss = batch.student_ids.extent(1);
        const auto tr = ranges_of(batch.ranges.teacher_starts, batch.ranges.teacher_lengths, batch.ranges.teacher_mask, B,
                                  St, "teacher");
        const auto sr = ranges_of(batch.ranges.student_starts, batch.ranges.student_lengths, batch.ranges.student_mask, B,
                                  Ss, "student");
        if (!batch.ranges.texts.empty() && static_cast<std::int64_t>(batch.ranges.texts.size()) != B)
            throw shape_error(op, "texts", "expected one text per sequence (" + std::to_string(B) + "), got " +
                                               std::to_string(batch.ranges.texts.size()));
        std::vector<detail::distill_job<T>> jobs(static_cast<std::size_t>(B));
        for (std::int64_t b = 0; b < B; ++b) {
            auto& j = jobs[static_cast<std::size_t>(b)];
            j.index = static_cast<std::size_t>(b);
            j.rows = L.data() + b * St * V;
            j.row_index = b * St;
            const auto [t0, tn] = tr[static_cast<std::size_t>(b)];
            const auto [s0, sn] = sr[static_cast<std::size_t>(b)];
            j.teacher = {batch.teacher_ids.data() + b * St + t0, static_cast<std::size_t>(tn)};
            j.teacher_first = t0;
            j.student = {batch.student_ids.data() + b * Ss + s0, static_cast<std::size_t>(sn)};
            j.out_token = b * Ss + s0;
            if (!batch.ranges.texts.empty()) j.text = batch.ranges.texts[static_cast<std::size_t>(b)];
        }
        return run(jobs, B, Ss, V, L.device(), L.device_index(), B * St);
    }

    /// Targets of a ragged batch: [sequences, longest student sequence, K], right-padded.
    /// @pre every sequence's rows are in the same memory (host, or one CUDA device) with the
    ///      same width, one row per teacher id.
    template <class T>
    [[nodiscard]] target_batch targets(std::span<const distill_sequence<T>> seqs) const {
        static_assert(logit_type<T>, "teacher logits are float, bf16, f16 or double");
        const char* op = "bld::distiller::targets";
        const auto B = static_cast<std::int64_t>(seqs.size());
        std::int64_t Ss = 0, V = seqs.empty() ? static_cast<std::int64_t>(row_width()) : seqs[0].teacher_rows.extent(1);
        const device_kind dev = seqs.empty() ? device_kind::cpu : seqs[0].teacher_rows.device();
        if (dev == device_kind::cuda)
            throw shape_error(op, "teacher_rows", "a ragged batch is read on the host; pass device rows as a padded batch");
        std::vector<detail::distill_job<T>> jobs(seqs.size());
        for (std::size_t b = 0; b < seqs.size(); ++b) {
            const auto& s = seqs[b];
            if (s.teacher_rows.extent(1) != V)
                throw shape_error(op, detail::seq_name(b) + ", teacher_rows",
                                  "every sequence's rows have the same width: " + std::to_string(V) + " columns, got " +
                                      std::to_string(s.teacher_rows.extent(1)));
            if (s.teacher_rows.device() != device_kind::cpu)
                throw shape_error(op, detail::seq_name(b) + ", teacher_rows", "expected host memory");
            if (static_cast<std::size_t>(s.teacher_rows.extent(0)) != s.teacher_ids.size())
                throw shape_error(op, detail::seq_name(b) + ", teacher_rows",
                                  "one row per teacher id: " + std::to_string(s.teacher_ids.size()) + " ids, " +
                                      std::to_string(s.teacher_rows.extent(0)) + " rows");
            Ss = std::max<std::int64_t>(Ss, static_cast<std::int64_t>(s.student_ids.size()));
        }
        for (std::size_t b = 0; b < seqs.size(); ++b) {
            auto& j = jobs[b];
            j.index = b;
            j.rows = seqs[b].teacher_rows.data();
            j.teacher = seqs[b].teacher_ids;
            j.student = seqs[b].student_ids;
            j.out_token = static_cast<std::int64_t>(b) * Ss;
            j.text = seqs[b].text;
        }
        return run(jobs, B, Ss, V, device_kind::cpu, 0, 0);
    }

    /// Targets from next-byte distributions computed elsewhere (see byte_sequence): [sequences,
    /// longest student sequence, K], right-padded, the same slots targets() gives for the same
    /// ids, each reading the distribution of the byte it predicts — every byte of the text has
    /// one (a covering method conditions the first byte on the teacher's own context, so unlike
    /// targets() with shifted rows no leading token goes without). `dropped` is the mass the
    /// method dropped or pruned at that byte.
    /// @throws shape_error naming the sequence when its distributions do not cover its text bytes,
    ///         value_error for a null `bytes`, and the alignment's errors as targets().
    [[nodiscard]] target_batch targets(std::span<const byte_sequence> seqs) const {
        const char* op = "bld::distiller::targets";
        const auto B = static_cast<std::int64_t>(seqs.size());
        std::int64_t Ss = 0;
        for (std::size_t b = 0; b < seqs.size(); ++b) {
            if (seqs[b].bytes == nullptr) throw value_error(op, detail::seq_name(b) + ", bytes", "null distributions");
            Ss = std::max<std::int64_t>(Ss, static_cast<std::int64_t>(seqs[b].student_ids.size()));
        }
        std::vector<detail::distill_job<float>> jobs(seqs.size());
        for (std::size_t b = 0; b < seqs.size(); ++b) {
            auto& j = jobs[b];
            j.index = b;
            j.teacher = seqs[b].teacher_ids;
            j.student = seqs[b].student_ids;
            j.out_token = static_cast<std::int64_t>(b) * Ss;
            j.text = seqs[b].text;
        }
        target_batch out(B, Ss, static_cast<std::int64_t>(options_.heads), options_.layout, options_.precision);
        std::vector<detail::aligned_sequence> al(jobs.size());
        std::vector<std::size_t> order(jobs.size());
        for (std::size_t b = 0; b < order.size(); ++b) order[b] = b;
        for_each_sequence(order, [&](std::size_t b) {
            al[b] = align(jobs[b], out, /*every_byte=*/true);
            const auto* d = seqs[b].bytes;
            if (d->positions < al[b].slot_of_byte.size() || d->probs.size() < d->positions * alphabet_size ||
                d->dropped.size() < d->positions)
                throw shape_error(op, detail::seq_name(b) + ", bytes",
                                  "expected a distribution for each of the text's " +
                                      std::to_string(al[b].slot_of_byte.size()) + " bytes, got " +
                                      std::to_string(d->positions));
        });
        std::vector<std::int64_t> first(jobs.size() + 1, 0);
        for (std::size_t b = 0; b < jobs.size(); ++b) first[b + 1] = first[b] + al[b].active;
        out.allocate_values(first.back());
        for_each_sequence(order, [&](std::size_t b) { write_slots(*seqs[b].bytes, al[b], out, first[b]); });
        return out;
    }

    /// Targets of any tensor types (span views, Eigen, libtorch): teacher logits [B, S_t, V]
    /// (float32, bfloat16, float16 or float64), ids [B, S] int64; or a single sequence with
    /// logits [S_t, V] and ids [S].
    /// @throws shape_error for a wrong rank or dtype, naming the argument
    template <class Logits, class TeacherIds, class StudentIds>
        requires(logit_tensor<Logits, 3> || logit_tensor<Logits, 2>) &&
                (id_tensor<TeacherIds, 2> || id_tensor<TeacherIds, 1>) && (id_tensor<StudentIds, 2> || id_tensor<StudentIds, 1>)
    [[nodiscard]] target_batch targets(const Logits& teacher_logits, const TeacherIds& teacher_ids,
                                       const StudentIds& student_ids, const batch_ranges& ranges = {}) const {
        const char* op = "bld::distiller::targets";
        const auto rank = tensor_extents(teacher_logits).size();
        if (rank != 2 && rank != 3)
            throw shape_error(op, "teacher_logits",
                              "expected [B, S_t, V] (or one sequence [S_t, V]), got " + detail::describe_tensor(teacher_logits));
        const auto dev = detail::adapter_of<Logits>::device(teacher_logits);
        const auto run_as = [&]<class T>() {
            distill_batch<T> b;
            if (rank == 3) {
                b.teacher_logits = as_view<const T, 3>(teacher_logits, "teacher_logits", any_extents<3>(), dev);
                b.teacher_ids = as_view<const std::int64_t, 2>(teacher_ids, "teacher_ids");
                b.student_ids = as_view<const std::int64_t, 2>(student_ids, "student_ids");
            } else {
                const auto l = as_view<const T, 2>(teacher_logits, "teacher_logits", any_extents<2>(), dev);
                b.teacher_logits = tensor_view<const T, 3>(l.data(), {1, l.extent(0), l.extent(1)}, l.device(), l.device_index());
                const auto t = as_view<const std::int64_t, 1>(teacher_ids, "teacher_ids");
                const auto s = as_view<const std::int64_t, 1>(student_ids, "student_ids");
                b.teacher_ids = tensor_view<const std::int64_t, 2>(t.data(), {1, t.extent(0)});
                b.student_ids = tensor_view<const std::int64_t, 2>(s.data(), {1, s.extent(0)});
            }
            b.ranges = ranges;
            return targets(b);
        };
        switch (tensor_dtype(teacher_logits, "teacher_logits")) {
            case dtype::f32: return run_as.template operator()<float>();
            case dtype::bf16: return run_as.template operator()<bf16>();
            case dtype::f16: return run_as.template operator()<f16>();
            case dtype::f64: return run_as.template operator()<double>();
            default:
                throw shape_error(op, "teacher_logits",
                                  "expected float32, bfloat16, float16 or float64 logits, got " +
                                      detail::describe_tensor(teacher_logits));
        }
    }

    /// The student's sorted trie and row plan (built on first use; shared by copies).
    [[nodiscard]] const row_plan& student_plan() const { return student_state().plan; }
    /// The trie order of the student's columns: with options().student_order = row_order::trie,
    /// column k of a student row holds the logit of id student_permutation()[k].
    [[nodiscard]] std::span<const std::uint32_t> student_permutation() const { return student_plan().permutation(); }

    /// Token-head distillation of a padded batch (docs/07_token_head.md): the student's own rows,
    /// projected along its tokenization, against the teacher's byte distributions that
    /// targets(batch) gave for the same batch — Σ over supervised text bytes of
    /// D(p̂ ‖ q_τ) (bld::token_head_loss), reduced over the whole batch, and its gradient w.r.t.
    /// the student's logits.
    ///
    /// Layout: row p of the student's logits and position p of the targets belong to the same
    /// student token — token p + 1 with `shifted` (the causal-LM layout), token p without. Each
    /// run of text tokens between special tokens is one canonical path; with `shifted` the
    /// first token of a sequence has no row before it and its bytes are not supervised. A text
    /// byte is supervised where its slot is active (the mask): byte k of a token has a slot for
    /// k < K only, so give the distiller K ≥ student().max_token_bytes() to supervise every byte.
    ///
    /// Logits in CUDA memory (float32 or bf16; the ids and targets stay on the host) take the
    /// device token head that <bld/cuda.cuh> registers (bld/projection/device_token_head.hpp):
    /// the row and node sums and the gradient rows on the GPU, on the thread's device stream
    /// (current_device_stream()), the canonical paths and the loss on the host; the gradient is
    /// then float32 on the logits' device. Results agree with the CPU route within the row
    /// pass's tolerance.
    /// @param grad [B, S_s, V_s] float (double for double logits), or empty for the value only;
    ///        on the logits' device; rows outside every path get 0
    /// @throws shape_error for mismatched shapes or targets of another batch, CUDA logits without
    ///         a registered backend (or of another dtype than float32 / bf16, or with a double
    ///         gradient), value_error for bad ids, options or teacher probabilities, and the
    ///         projection's errors for bad rows — naming the sequence
    template <logit_type T, target_type P, class G>
        requires(std::same_as<G, float> || std::same_as<G, double>)
    token_head_result token_head_loss(const student_batch<T>& batch, const slot_targets_view<P>& targets,
                                      const token_head_options& options, tensor_view<G, 3> grad) const {
        const char* op = "bld::distiller::token_head_loss";
        const math::slot_params prm = detail::position_params(options, op);
        const auto& L = batch.logits;
        const std::int64_t B = L.extent(0), S = L.extent(1), V = L.extent(2);
        if (batch.ids.extent(0) != B || batch.ids.extent(1) != S)
            throw shape_error(op, "student_ids",
                              "expected [" + std::to_string(B) + ", " + std::to_string(S) +
                                  "] to match the student's logits [B, S_s, V] = " + detail::format_extents(L.extents()) +
                                  ", got " + detail::format_extents(batch.ids.extents()));
        if (batch.ids.device() != device_kind::cpu)
            throw shape_error(op, "student_ids", "expected host memory (the host plans the canonical paths)");
        const bool on_device = L.device() == device_kind::cuda;
        device_token_head_factory head_factory = nullptr;
        if (on_device) {
            head_factory = device_token_head_registry::cuda.load(std::memory_order_acquire);
            if (head_factory == nullptr)
                throw shape_error(op, "student_logits",
                                  "the logits are in CUDA memory, but this program has no CUDA backend: include "
                                  "<bld/cuda.cuh> in a CUDA translation unit (link bld::cuda), or copy the logits "
                                  "to the host");
            if constexpr (!row_kernel_reads<T>)
                throw shape_error(op, "student_logits",
                                  std::string(to_string(dtype_of<T>)) +
                                      " logits in CUDA memory: the CUDA token head reads float32 and bfloat16 rows "
                                      "(convert them on the device, or pass host memory)");
        }
        targets.check(op);
        const std::int64_t K = targets.heads;
        if (targets.tokens != B * S || K != static_cast<std::int64_t>(options_.heads))
            throw shape_error(op, "targets",
                              "expected the targets of this batch: [" + std::to_string(B * S) + ", " +
                                  std::to_string(options_.heads) + "] slots (B·S_s, K), got [" +
                                  std::to_string(targets.tokens) + ", " + std::to_string(K) + "]");
        if (targets.values.device() != device_kind::cpu)
            throw shape_error(op, "targets", "the token-head loss reads host memory: pass targets on the CPU");
        const bool want_grad = !grad.empty();
        if (want_grad && (grad.extent(0) != B || grad.extent(1) != S || grad.extent(2) != V))
            throw shape_error(op, "grad", "expected the logits' shape " + detail::format_extents(L.extents()) + ", got " +
                                              detail::format_extents(grad.extents()));
        if (want_grad && (grad.device() != L.device() || grad.device_index() != L.device_index()))
            throw shape_error(op, "grad",
                              "expected the logits' device (" + std::string(to_string(L.device())) + ":" +
                                  std::to_string(L.device_index()) + "), got " + std::string(to_string(grad.device())) +
                                  ":" + std::to_string(grad.device_index()));
        if (want_grad && on_device && !std::same_as<G, float>)
            throw shape_error(op, "grad", "the CUDA token head writes float32 gradients");
        const auto& st = student_state();
        const std::size_t need = options_.student_order == row_order::trie ? st.plan.permutation().size()
                                                                             : st.plan.vocab_size();
        if (V < static_cast<std::int64_t>(need))
            throw shape_error(op, "student_logits",
                              "rows of " + std::to_string(V) + " columns are narrower than the student's " +
                                  (options_.student_order == row_order::trie ? "trie order (" : "vocabulary (") +
                                  std::to_string(need) + " columns)");
        const auto sr = ranges_of(batch.ranges.student_starts, batch.ranges.student_lengths, batch.ranges.student_mask, B,
                                  S, "student", op);
        // Target row of each active slot (dense: the slot itself).
        std::vector<std::int64_t> row_of_slot;
        if (targets.layout == target_layout::compact) {
            row_of_slot.assign(static_cast<std::size_t>(B * S * K), -1);
            for (std::int64_t r = 0; r < targets.rows(); ++r) {
                const std::int64_t slot = targets.slots(r);
                if (slot < 0 || slot >= B * S * K || !targets.mask.data()[slot])
                    throw value_error(op, "targets.slots, row " + std::to_string(r),
                                      "slot " + std::to_string(slot) + " is not an active slot of the mask");
                row_of_slot[static_cast<std::size_t>(slot)] = r;
            }
        }
        // Phase 1: the runs of text tokens of every sequence and the supervised bytes.
        struct run_t {
            std::int64_t first = 0, count = 0; ///< input positions [first, first + count)
        };
        const auto& sv = student_state().trie.vocab();
        const std::int64_t shift = options_.shifted ? 1 : 0;
        std::vector<std::vector<run_t>> runs(static_cast<std::size_t>(B));
        std::int64_t supervised = 0;
        for (std::int64_t b = 0; b < B; ++b) {
            const auto [s0, n] = sr[static_cast<std::size_t>(b)];
            const std::int64_t* ids = batch.ids.data() + b * S;
            std::int64_t pos = s0;
            while (pos < s0 + n) {
                const auto id = ids[pos];
                if (id < 0 || static_cast<std::uint64_t>(id) >= sv.size())
                    throw value_error(op, detail::seq_name(static_cast<std::size_t>(b)) + ", student position " + std::to_string(pos),
                                      "id " + std::to_string(id) + " is outside the student's vocabulary of " +
                                          std::to_string(sv.size()) + " ids (" + sv.source() + ")");
                if (sv.kinds()[static_cast<std::size_t>(id)] != token_kind::text) {
                    ++pos;
                    continue;
                }
                std::int64_t e = pos;
                while (e < s0 + n && ids[e] >= 0 && static_cast<std::uint64_t>(ids[e]) < sv.size() &&
                       sv.kinds()[static_cast<std::size_t>(ids[e])] == token_kind::text)
                    ++e;
                const std::int64_t first = pos - shift < s0 ? pos + 1 : pos; // a token needs a row in range
                if (first < e) {
                    runs[static_cast<std::size_t>(b)].push_back({first, e - first});
                    for (std::int64_t q = first; q < e; ++q) {
                        const auto nb = static_cast<std::int64_t>(sv.unchecked_bytes(static_cast<std::size_t>(ids[q])).size());
                        const std::int64_t slot0 = (b * S + q - shift) * K;
                        for (std::int64_t k = 0; k < std::min(nb, K); ++k) supervised += targets.mask.data()[slot0 + k] ? 1 : 0;
                    }
                }
                pos = e;
            }
        }
        token_head_result res;
        res.positions = supervised;
        const double scale = options.weight / (options.reduction == token_head_reduction::mean
                                                   ? static_cast<double>(std::max<std::int64_t>(supervised, 1))
                                                   : 1.0);
        std::vector<double> value(static_cast<std::size_t>(B), 0.0), unreachable(static_cast<std::size_t>(B), 0.0);
        // A run: its flat first row, its ids, and the slot that holds each text byte's teacher
        // target (−1: not supervised).
        const auto row_of_run = [&](std::size_t b, const run_t& r) {
            return static_cast<std::int64_t>(b) * S + r.first - shift; // flat row of the run's first token
        };
        const auto ids_of_run = [&](std::size_t b, const run_t& r) {
            return std::span<const std::int64_t>(batch.ids.data() + static_cast<std::int64_t>(b) * S + r.first,
                                                 static_cast<std::size_t>(r.count));
        };
        const auto slots_of_run = [&](std::int64_t row0, std::span<const std::int64_t> ids, std::size_t bytes) {
            std::vector<std::int64_t> slot_of_byte;
            slot_of_byte.reserve(bytes);
            for (std::size_t t = 0; t < ids.size(); ++t) {
                const auto nb = static_cast<std::int64_t>(sv.unchecked_bytes(static_cast<std::size_t>(ids[t])).size());
                for (std::int64_t k = 0; k < nb; ++k) {
                    const std::int64_t slot = (row0 + static_cast<std::int64_t>(t)) * K + k;
                    slot_of_byte.push_back(k < K && targets.mask.data()[slot] ? slot : -1);
                }
            }
            return slot_of_byte;
        };
        // The per-position loss of a run of sequence b (student_path_run's `loss`): the SIMD
        // position kernel on the fast path, the specification on the reference path.
        const simd::level loss_level = detail::position_level(options_.path, options_.level, op);
        const auto loss_of_run = [&](std::size_t b, const std::vector<std::int64_t>& slot_of_byte) {
            return [&, b](std::size_t i, const double* q, double, double* g) {
                const std::int64_t slot = slot_of_byte[i];
                if (slot < 0) return false;
                const std::int64_t tr = targets.layout == target_layout::dense ? slot : row_of_slot[static_cast<std::size_t>(slot)];
                if (tr < 0)
                    throw value_error(op, "targets", "active slot " + std::to_string(slot) + " has no row in the compact values");
                const P* p = targets.values.data() + tr * static_cast<std::int64_t>(alphabet_size);
                const auto pr = detail::position_loss_at(q, p, prm, g, loss_level);
                if (pr.status != math::slot_status::ok)
                    detail::bad_target(op, "targets, slot " + std::to_string(slot), pr.index, static_cast<double>(p[pr.index]));
                value[b] += pr.value;
                unreachable[b] += 1.0 - pr.reachable;
                for (std::size_t a = 0; a < alphabet_size; ++a) g[a] *= scale;
                return true;
            };
        };
        std::vector<std::size_t> order(static_cast<std::size_t>(B));
        for (std::size_t b = 0; b < order.size(); ++b) order[b] = b;
        if (on_device) {
            if constexpr (row_kernel_reads<T> && std::same_as<G, float>) {
                token_head_on_device(head_factory, L, want_grad ? grad.data() : nullptr, runs, row_of_run, ids_of_run,
                                     slots_of_run, loss_of_run);
            } else if constexpr (row_kernel_reads<T>) {
                token_head_on_device(head_factory, L, static_cast<float*>(nullptr), runs, row_of_run, ids_of_run,
                                     slots_of_run, loss_of_run); // value only (a double gradient was refused above)
            }
        } else {
            if (want_grad) { // the runs' rows are written whole by their backward: zero the others
                std::vector<std::uint8_t> covered(static_cast<std::size_t>(B * S), 0);
                for (std::size_t b = 0; b < runs.size(); ++b)
                    for (const auto& r : runs[b])
                        std::fill_n(covered.begin() + row_of_run(b, r), r.count, std::uint8_t{1});
                for (std::int64_t row = 0; row < B * S; ++row)
                    if (!covered[static_cast<std::size_t>(row)]) std::fill_n(grad.data() + row * V, V, G{});
            }
            const student_rows_options how{options_.student_order, options_.path, options_.level};
            std::stable_sort(order.begin(), order.end(), [&](std::size_t x, std::size_t y) {
                return sr[x][1] > sr[y][1];
            });
            for_each_sequence(order, [&](std::size_t b) {
                try {
                    for (const auto& r : runs[b]) {
                        const std::int64_t row0 = row_of_run(b, r);
                        const auto ids = ids_of_run(b, r);
                        const tensor_view<const T, 2> rows(L.data() + row0 * V, {r.count, V});
                        const canonical_plan cp = canonical_plan::build(st.trie, ids, std::nullopt);
                        const auto slot_of_byte = slots_of_run(row0, ids, cp.bytes.size());
                        auto loss = loss_of_run(b, slot_of_byte);
                        detail::student_path_run(st.plan, cp, rows, ids, how, loss,
                                                 want_grad ? grad.data() + row0 * V : static_cast<G*>(nullptr),
                                                 static_cast<std::size_t>(V));
                    }
                } catch (const error& e) {
                    detail::rethrow_in_sequence(e, b);
                }
            });
        }
        double total = 0.0;
        for (std::size_t b = 0; b < value.size(); ++b) {
            total += value[b];
            res.unreachable += unreachable[b];
        }
        res.value = total * scale;
        return res;
    }

private:
    struct device_state {
        std::mutex mutex;
        std::unique_ptr<device_projector> projector;
        std::unique_ptr<device_token_head> token_head;
    };

    /// Sequences whose paths share one download of device sums hold about this many node
    /// requests (≈ 2 KiB of sums each, on the device and the host); a longer sequence goes alone.
    static constexpr std::size_t device_head_requests = std::size_t{1} << 16;

    /// token_head_loss on CUDA logits (bld/projection/device_token_head.hpp): per group of
    /// sequences, the device computes the row summaries and node sums of every run, the host
    /// runs each run's canonical path, loss and coefficients over them (sequences on
    /// options().parallel threads, as on the CPU), and the device writes the gradient rows from
    /// the coefficient pieces. The run helpers are token_head_loss's; `grad` null: value only.
    template <class T, class Runs, class RowOf, class IdsOf, class SlotsOf, class LossOf>
    void token_head_on_device(device_token_head_factory factory, tensor_view<const T, 3> L, float* grad,
                              const Runs& runs, const RowOf& row_of_run, const IdsOf& ids_of_run,
                              const SlotsOf& slots_of_run, const LossOf& loss_of_run) const {
        const auto& st = student_state();
        const std::int64_t V = L.extent(2), rows = L.extent(0) * L.extent(1);
        const bool trie = options_.student_order == row_order::trie;
        const auto column_ids = trie ? st.plan.permutation() : std::span<const std::uint32_t>{};
        void* const stream = current_device_stream();
        const std::size_t B = runs.size();
        // The plans of every run. A sequence whose ids fail to plan sends no path to the device
        // and reports its error with its group, so that the lowest failing sequence's error
        // wins, as on the CPU.
        std::vector<std::vector<canonical_plan>> plans(B);
        std::vector<std::exception_ptr> plan_error(B);
        std::vector<std::size_t> all(B);
        for (std::size_t b = 0; b < B; ++b) all[b] = b;
        for_each_sequence(all, [&](std::size_t b) {
            try {
                for (const auto& r : runs[b]) plans[b].push_back(canonical_plan::build(st.trie, ids_of_run(b, r), std::nullopt));
            } catch (...) {
                plan_error[b] = std::current_exception();
            }
        });
        std::lock_guard<std::mutex> lock(device_->mutex);
        if (!device_->token_head) device_->token_head = factory(st.trie);
        device_token_head& head = *device_->token_head;
        bool cleared = false;
        for (std::size_t b0 = 0; b0 < B;) {
            // The group [b0, b1): whole sequences, about device_head_requests requests.
            std::size_t b1 = b0, requests = 0;
            std::vector<device_head_path> paths;
            std::vector<std::size_t> first_path(1, 0);
            while (b1 < B && (b1 == b0 || requests < device_head_requests)) {
                for (std::size_t k = 0; k < runs[b1].size() && !plan_error[b1]; ++k) {
                    const auto& r = runs[b1][k];
                    paths.push_back({row_of_run(b1, r), r.count, plans[b1][k].requests});
                    requests += plans[b1][k].requests.size();
                }
                first_path.push_back(paths.size());
                ++b1;
            }
            std::vector<device_head_sums> sums;
            if (!paths.empty())
                sums = head.sums(dtype_of<T>, L.data(), rows, V, L.device_index(), trie, paths, stream);
            std::vector<device_head_pieces> pieces(b1 - b0);
            std::vector<std::size_t> group(b1 - b0);
            for (std::size_t g = 0; g < group.size(); ++g) group[g] = b0 + g;
            for_each_sequence(group, [&](std::size_t b) {
                try {
                    if (plan_error[b]) std::rethrow_exception(plan_error[b]);
                    for (std::size_t k = 0; k < runs[b].size(); ++k) {
                        const auto& r = runs[b][k];
                        const std::int64_t row0 = row_of_run(b, r);
                        const auto ids = ids_of_run(b, r);
                        const canonical_plan& cp = plans[b][k];
                        const auto slot_of_byte = slots_of_run(row0, ids, cp.bytes.size());
                        auto loss = loss_of_run(b, slot_of_byte);
                        detail::device_head_path_run(st.plan, cp, sums[first_path[b - b0] + k], column_ids, ids, loss,
                                                     row0, grad != nullptr ? &pieces[b - b0] : nullptr);
                    }
                } catch (const error& e) {
                    detail::rethrow_in_sequence(e, b);
                }
            });
            if (grad != nullptr) {
                device_head_pieces all_pieces;
                for (auto& p : pieces) {
                    const auto offset = static_cast<std::uint32_t>(all_pieces.value.size());
                    for (auto r : p.rows) {
                        r.first_piece += offset;
                        all_pieces.rows.push_back(r);
                    }
                    all_pieces.lo.insert(all_pieces.lo.end(), p.lo.begin(), p.lo.end());
                    all_pieces.hi.insert(all_pieces.hi.end(), p.hi.begin(), p.hi.end());
                    all_pieces.value.insert(all_pieces.value.end(), p.value.begin(), p.value.end());
                }
                head.backward(dtype_of<T>, L.data(), grad, rows, V, L.device_index(), trie, all_pieces, !cleared, stream);
                cleared = true;
            }
            b0 = b1;
        }
        if (grad != nullptr && !cleared)
            head.backward(dtype_of<T>, L.data(), grad, rows, V, L.device_index(), trie, device_head_pieces{}, true, stream);
    }
    /// The student's trie and row plan (the plan points into the trie: built in place once).
    struct student_tables {
        explicit student_tables(std::shared_ptr<const vocabulary> v) : trie(std::move(v)), plan(trie) {}
        byte_trie trie;
        row_plan plan;
    };
    struct student_holder {
        std::once_flag once;
        std::unique_ptr<student_tables> tables;
    };
    [[nodiscard]] const student_tables& student_state() const {
        std::call_once(student_tables_->once, [&] { student_tables_->tables = std::make_unique<student_tables>(student_); });
        return *student_tables_->tables;
    }

    template <class P>
    static std::shared_ptr<const P> require(std::shared_ptr<const P> p, const char* what) {
        if (!p) throw value_error("bld::distiller", what, "null vocabulary");
        return p;
    }

    static distiller_options checked(const distiller_options& o) {
        const char* op = "bld::distiller";
        if (o.heads < 1 || o.heads > alphabet_size)
            throw value_error(op, "heads", "K must be in 1..260, got " + std::to_string(o.heads));
        if (o.precision != dtype::f32 && o.precision != dtype::bf16)
            throw value_error(op, "precision",
                              "targets are float32 or bfloat16, not " + std::string(to_string(o.precision)));
        if (o.path == projection_path::reference && o.rows == row_order::trie)
            throw value_error(op, "path", "the reference projection reads rows in id order (row_order::id)");
        (void)simd::resolve(o.level, op);
        return o;
    }

    /// (start, length) of each sequence's valid range.
    static std::vector<std::array<std::int64_t, 2>> ranges_of(std::span<const std::int64_t> starts,
                                                              std::span<const std::int64_t> lengths,
                                                              tensor_view<const std::uint8_t, 2> mask, std::int64_t B,
                                                              std::int64_t S, const std::string& side,
                                                              const char* op = "bld::distiller::targets") {
        std::vector<std::array<std::int64_t, 2>> r(static_cast<std::size_t>(B), std::array<std::int64_t, 2>{0, S});
        if (mask.data() != nullptr) {
            if (!starts.empty() || !lengths.empty())
                throw value_error(op, side + "_mask", "give either a mask or starts/lengths, not both");
            if (mask.extent(0) != B || mask.extent(1) != S)
                throw shape_error(op, side + "_mask",
                                  "expected [" + std::to_string(B) + ", " + std::to_string(S) + "], got " +
                                      detail::format_extents(mask.extents()));
            for (std::int64_t b = 0; b < B; ++b) {
                const std::uint8_t* m = mask.data() + b * S;
                std::int64_t s0 = 0;
                while (s0 < S && m[s0] == 0) ++s0;
                std::int64_t s1 = s0;
                while (s1 < S && m[s1] != 0) ++s1;
                for (std::int64_t q = s1; q < S; ++q)
                    if (m[q] != 0)
                        throw value_error(op, side + "_mask, " + detail::seq_name(static_cast<std::size_t>(b)),
                                          "the valid positions are not one contiguous run (position " +
                                              std::to_string(q) + " is valid after a gap at " + std::to_string(s1) +
                                              "): only left or right padding is supported");
                r[static_cast<std::size_t>(b)] = {s0, s1 - s0};
            }
            return r;
        }
        const auto check_size = [&](std::span<const std::int64_t> v, const char* what) {
            if (!v.empty() && static_cast<std::int64_t>(v.size()) != B)
                throw shape_error(op, side + "_" + what,
                                  "expected one per sequence (" + std::to_string(B) + "), got " + std::to_string(v.size()));
        };
        check_size(starts, "starts");
        check_size(lengths, "lengths");
        for (std::int64_t b = 0; b < B; ++b) {
            const std::int64_t s0 = starts.empty() ? 0 : starts[static_cast<std::size_t>(b)];
            const std::int64_t n = lengths.empty() ? S - s0 : lengths[static_cast<std::size_t>(b)];
            if (s0 < 0 || n < 0 || s0 + n > S)
                throw value_error(op, side + " range, " + detail::seq_name(static_cast<std::size_t>(b)),
                                  "start " + std::to_string(s0) + " and length " + std::to_string(n) +
                                      " run past the " + std::to_string(S) + " padded positions");
            r[static_cast<std::size_t>(b)] = {s0, n};
        }
        return r;
    }

    /// Phase 1 of one sequence: teacher context, alignment, mask and true bytes; returns which
    /// projected byte each slot reads.
    template <class T>
    detail::aligned_sequence align(const detail::distill_job<T>& j, target_batch& out, bool every_byte = false) const {
        detail::aligned_sequence a;
        const auto& tv = teacher_->vocab();
        const auto [lead, end] = detail::text_id_range(tv, j.teacher);
        const auto text_ids = j.teacher.subspan(lead, end - lead);
        slot_alignment al;
        try {
            al = align_slots(*student_, j.student, tv, text_ids, options_.heads, j.text);
        } catch (const error& e) {
            detail::rethrow_in_sequence(e, j.index);
        }
        // Rows: position q's row predicts input id q (or q + 1 when shifted).
        std::size_t skip = 0; // text tokens without a row (shifted, no context before the text)
        if (options_.shifted && lead == 0 && !text_ids.empty() && !every_byte) skip = 1;
        a.projected = text_ids.subspan(std::min(skip, text_ids.size()));
        a.first_row = static_cast<std::int64_t>(lead + skip) - (options_.shifted ? 1 : 0);
        std::int64_t skip_bytes = 0;
        for (std::size_t q = 0; q < skip; ++q)
            skip_bytes += static_cast<std::int64_t>(tv.unchecked_bytes(static_cast<std::size_t>(text_ids[q])).size());
        std::size_t bytes = 0;
        for (const auto id : a.projected) bytes += tv.unchecked_bytes(static_cast<std::size_t>(id)).size();
        a.slot_of_byte.assign(bytes, -1);

        const auto K = static_cast<std::int64_t>(options_.heads);
        const auto n = static_cast<std::int64_t>(j.student.size());
        auto* mask = out.mask_storage().data();
        auto* ybytes = out.true_bytes_storage().data();
        for (std::int64_t p = 0; p < n; ++p) {
            const std::int64_t src = options_.shifted ? p + 1 : p; // the student token whose bytes position p predicts
            if (src >= n) continue;
            for (std::int64_t k = 0; k < K; ++k) {
                const auto s = static_cast<std::size_t>(src * K + k);
                if (!al.mask[s]) continue;
                const std::int64_t pos = al.teacher_offset[s] - skip_bytes;
                if (pos < 0) continue; // inside the teacher's first token, which has no row
                const std::int64_t slot = (j.out_token + p) * K + k;
                a.slot_of_byte[static_cast<std::size_t>(pos)] = slot;
                mask[slot] = 1;
                ybytes[slot] = al.true_byte[s];
                ++a.active;
            }
        }
        return a;
    }

    template <class T>
    target_batch run(std::vector<detail::distill_job<T>>& jobs, std::int64_t B, std::int64_t Ss, std::int64_t V,
                     device_kind dev, int device_index, std::int64_t total_rows) const {
        const char* op = "bld::distiller::targets";
        if (V < static_cast<std::int64_t>(row_width()))
            throw shape_error(op, "teacher_logits",
                              "rows of " + std::to_string(V) + " columns are narrower than the teacher's " +
                                  (options_.rows == row_order::trie ? "trie order (" : "vocabulary (") +
                                  std::to_string(row_width()) + " columns)");
        target_batch out(B, Ss, static_cast<std::int64_t>(options_.heads), options_.layout, options_.precision);
        std::vector<detail::aligned_sequence> al(jobs.size());
        // Longest sequences first, each to the next free worker: uneven lengths still keep every
        // thread busy. Each sequence is computed alone, so the bits do not depend on the schedule.
        std::vector<std::size_t> order(jobs.size());
        for (std::size_t b = 0; b < order.size(); ++b) order[b] = b;
        std::stable_sort(order.begin(), order.end(),
                         [&](std::size_t x, std::size_t y) { return jobs[x].teacher.size() > jobs[y].teacher.size(); });
        for_each_sequence(order, [&](std::size_t b) { al[b] = align(jobs[b], out); });
        // Compact rows: each sequence's active slots are a contiguous run, in sequence order.
        std::vector<std::int64_t> first(jobs.size() + 1, 0);
        for (std::size_t b = 0; b < jobs.size(); ++b) first[b + 1] = first[b] + al[b].active;
        out.allocate_values(first.back());
        if (dev == device_kind::cuda) {
            if constexpr (std::same_as<std::remove_cv_t<T>, double> || std::same_as<std::remove_cv_t<T>, f16>) {
                throw shape_error(op, "teacher_logits",
                                  std::string(to_string(dtype_of<T>)) +
                                      " logits in CUDA memory: the CUDA kernels read float32 and bfloat16 rows (convert "
                                      "them on the device, or pass host memory)");
            } else {
                project_on_device(jobs, al, out, first, V, device_index, total_rows);
            }
            return out;
        }
        for_each_sequence(order, [&](std::size_t b) {
            try {
                project(jobs[b], al[b], out, first[b], V);
            } catch (const error& e) {
                detail::rethrow_in_sequence(e, b);
            }
        });
        return out;
    }

    /// Runs f(b) for every sequence b of `order`, options_.parallel.threads workers each taking
    /// the next one from a shared counter; rethrows the error of the lowest-numbered failing
    /// sequence once all are done (so the error, too, does not depend on the schedule).
    template <class F>
    void for_each_sequence(std::span<const std::size_t> order, F&& f) const {
        const std::size_t n = order.size();
        if (n == 0) return;
        std::atomic<std::size_t> next{0};
        std::vector<std::exception_ptr> errors(n);
        const std::size_t workers = detail::worker_count(options_.parallel, n);
        parallel_for(workers, parallel_options{workers}, [&](std::size_t w0, std::size_t w1, std::size_t) {
            for (std::size_t w = w0; w < w1; ++w) {
                for (std::size_t i = next.fetch_add(1, std::memory_order_relaxed); i < n;
                     i = next.fetch_add(1, std::memory_order_relaxed)) {
                    const std::size_t b = order[i];
                    try {
                        f(b);
                    } catch (...) {
                        errors[b] = std::current_exception();
                    }
                }
            }
        });
        for (auto& e : errors)
            if (e) std::rethrow_exception(e);
    }

    template <class P>
    detail::slot_sink<P> sink_for(const detail::aligned_sequence& a, target_batch& out, std::int64_t first_row) const {
        detail::slot_sink<P> s;
        s.seq = &a;
        P* values;
        if constexpr (std::same_as<P, float>) values = out.values_f32_storage().data();
        else values = out.values_bf16_storage().data();
        s.values = values;
        s.dropped = out.dropped_storage().data();
        s.slots = options_.layout == target_layout::compact ? out.slots_storage().data() : nullptr;
        s.row = first_row;
        return s;
    }

    template <class T>
    void project(const detail::distill_job<T>& j, const detail::aligned_sequence& a, target_batch& out,
                 std::int64_t first_row, std::int64_t V) const {
        if (a.projected.empty() || a.active == 0) return;
        const tensor_view<const T, 2> rows(j.rows + (j.teacher_first + a.first_row) * V,
                                           {static_cast<std::int64_t>(a.projected.size()), V});
        const canonical_plan plan = canonical_plan::build(*teacher_, a.projected, std::nullopt);
        const auto with_sink = [&](auto&& row_source) {
            if (options_.precision == dtype::f32) {
                auto s = sink_for<float>(a, out, first_row);
                detail::slot_sink_adapter<float> ad{s};
                canonical_path_into(plan, row_source, a.projected, ad);
            } else {
                auto s = sink_for<bf16>(a, out, first_row);
                detail::slot_sink_adapter<bf16> ad{s};
                canonical_path_into(plan, row_source, a.projected, ad);
            }
        };
        if constexpr (simd_kernel_reads<T>) {
            if (options_.path == projection_path::fast) {
                dense_rows<T> source(plan_, rows, options_.rows == row_order::trie, options_.level);
                source.expect_first_nodes(a.projected); // first-byte nodes from the root pass
                with_sink(source);
                return;
            }
        } else {
            if (options_.rows == row_order::trie)
                throw value_error("bld::distiller::targets", "teacher_logits",
                                  std::string(to_string(dtype_of<T>)) + " rows are read in id order only");
        }
        with_sink(reference::dense_rows<T>(*teacher_, rows));
    }

    template <class T>
    void project_on_device(const std::vector<detail::distill_job<T>>& jobs, const std::vector<detail::aligned_sequence>& al,
                           target_batch& out, const std::vector<std::int64_t>& first, std::int64_t V, int device_index,
                           std::int64_t total_rows) const {
        const char* op = "bld::distiller::targets";
        std::vector<device_sequence> seqs;
        std::vector<std::size_t> which;
        for (std::size_t b = 0; b < jobs.size(); ++b) {
            if (al[b].projected.empty() || al[b].active == 0) continue;
            seqs.push_back({jobs[b].row_index + jobs[b].teacher_first + al[b].first_row, al[b].projected});
            which.push_back(b);
        }
        if (seqs.empty()) return;
        std::vector<byte_distributions> d;
        {
            std::lock_guard<std::mutex> lock(device_->mutex);
            if (!device_->projector) {
                const auto factory = device_projection_registry::cuda.load(std::memory_order_acquire);
                if (factory == nullptr)
                    throw shape_error(op, "teacher_logits",
                                      "the logits are in CUDA memory, but this program has no CUDA backend: include "
                                      "<bld/cuda.cuh> in a CUDA translation unit (link bld::cuda), or copy the logits "
                                      "to the host");
                device_->projector = factory(*teacher_);
            }
            d = device_->projector->canonical_paths(dtype_of<T>, jobs.front().rows - jobs.front().row_index * V, total_rows, V,
                                                    device_index, options_.rows == row_order::trie, seqs, nullptr);
        }
        for (std::size_t q = 0; q < which.size(); ++q) write_slots(d[q], al[which[q]], out, first[which[q]]);
    }

    /// Writes the distributions of a sequence's active slots (one per projected byte, in byte
    /// order) and their dropped masses into the batch.
    void write_slots(const byte_distributions& d, const detail::aligned_sequence& a, target_batch& out,
                     std::int64_t first_row) const {
        const auto emit = [&]<class P>(detail::slot_sink<P>&& s) {
            for (std::size_t i = 0; i < a.slot_of_byte.size(); ++i) {
                if (a.slot_of_byte[i] < 0) continue;
                double* p = s.probs(i);
                const auto src = d.at(i);
                std::copy(src.begin(), src.end(), p);
                s.dropped_at(i) = d.dropped[i];
                s.finish(i);
            }
        };
        if (options_.precision == dtype::f32) emit(sink_for<float>(a, out, first_row));
        else emit(sink_for<bf16>(a, out, first_row));
    }

    std::shared_ptr<const byte_trie> teacher_;
    std::shared_ptr<const vocabulary> student_;
    std::shared_ptr<student_holder> student_tables_ = std::make_shared<student_holder>();
    distiller_options options_;
    row_plan plan_;
    std::shared_ptr<device_state> device_;
};

} // namespace bld
