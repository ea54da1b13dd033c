// bld/targets/alignment.hpp — student slots ↔ teacher byte positions, from token ids only.
//
// docs/01_method.md ("Alphabet", "The student side"): the student's byte head has K heads reading the hidden state that predicts
// student token ℓ; head j predicts byte j of token ℓ, i.e. the text byte at offset o_ℓ + j,
// for j < min(n_ℓ, K). Its teacher target is the teacher's next-byte distribution at that same
// text byte. Byte offsets come from the ids and the vocabularies, never from decode-and-search.
//
// Reconciliation, explicit and reported: special tokens (BOS, EOS, chat markers) have no bytes
// and their slots are masked; a dummy prefix (SentencePiece's leading space) on either side is
// text neither side's partner has, so it is skipped; after that the two byte streams must be
// equal, or bld::alignment_error names the first differing byte offset.
#pragma once

#include "bld/core/error.hpp"
#include "bld/projection/canonical_path.hpp"
#include "bld/projection/covering.hpp"
#include "bld/vocab/vocabulary.hpp"

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace bld {

/// Byte offsets of a token id sequence in its own byte stream.
struct token_offsets {
    std::vector<std::int64_t> offset; ///< [tokens] start of each token's bytes
    std::vector<std::int64_t> length; ///< [tokens] number of bytes (0 for special tokens)
    std::string bytes;                ///< the concatenated bytes
};

/// Offsets of every token. Special tokens take part with length 0; absent ids and ids outside
/// the vocabulary are errors (bld::value_error naming the position).
[[nodiscard]] inline token_offsets byte_offsets(const vocabulary& v, std::span<const std::int64_t> ids) {
    token_offsets t;
    t.offset.resize(ids.size());
    t.length.resize(ids.size());
    for (std::size_t k = 0; k < ids.size(); ++k) {
        const auto id = ids[k];
        if (id < 0 || static_cast<std::uint64_t>(id) >= v.size())
            throw value_error("byte offsets", "token position " + std::to_string(k),
                              "id " + std::to_string(id) + " is outside the vocabulary of " + std::to_string(v.size()) +
                                  " ids (" + v.source() + ")");
        if (v.kinds()[static_cast<std::size_t>(id)] == token_kind::absent)
            throw value_error("byte offsets", "token position " + std::to_string(k),
                              "id " + std::to_string(id) + " is not assigned by the tokenizer (" + v.source() + ")");
        t.offset[k] = static_cast<std::int64_t>(t.bytes.size());
        const auto b = v.unchecked_bytes(static_cast<std::size_t>(id));
        t.length[k] = static_cast<std::int64_t>(b.size());
        t.bytes += b;
    }
    return t;
}

/// How the (student token, head) slots map onto the teacher's byte stream.
struct slot_alignment {
    std::size_t tokens = 0, heads = 0;
    /// [tokens, heads]: offset in the teacher's byte stream (= row of its byte distributions)
    /// of the byte this slot predicts, or −1 for a masked slot.
    std::vector<std::int64_t> teacher_offset;
    /// [tokens, heads]: 1 for an active slot.
    std::vector<std::uint8_t> mask;
    /// [tokens, heads]: the true byte (0..255), or −1 for a masked slot.
    std::vector<std::int32_t> true_byte;
    /// Leading bytes of each stream that are a tokenizer's dummy prefix, not text.
    std::size_t student_prefix = 0, teacher_prefix = 0;
    /// Offsets of the student tokens in the student's byte stream.
    token_offsets student;
};

namespace detail {

/// Bytes of a stream that are the tokenizer's dummy prefix, given the other stream.
inline std::size_t dummy_prefix_of(const vocabulary& v, std::string_view stream, std::string_view other_stream,
                                   const vocabulary& other_v, std::optional<std::string_view> text) {
    if (text) return v.transformations().prefix_bytes(*text);
    const auto rule = v.transformations().dummy_prefix;
    if (rule == dummy_prefix_rule::none || stream.empty() || stream.front() != ' ') return 0;
    if (rule == dummy_prefix_rule::always) return 1;
    // if_absent: a leading space is the prefix unless the other side has it too, as text.
    const bool other_always = other_v.transformations().dummy_prefix == dummy_prefix_rule::always;
    const std::string_view o = other_always && !other_stream.empty() ? other_stream.substr(1) : other_stream;
    return (!o.empty() && o.front() == ' ') ? 0 : 1;
}

} // namespace detail

/// Aligns student slots with the teacher's byte stream.
/// @param student_ids the student's tokens (special tokens allowed: their slots are masked)
/// @param teacher_ids the teacher's text tokens (no special tokens: pass BOS separately)
/// @param heads       K, the number of byte heads (1..260)
/// @param text        the text both encode, if known (then each side's dummy prefix follows
///                    from its tokenizer's rule, and each stream is checked against the text)
/// @throws bld::alignment_error with the first differing byte offset if the streams differ.
[[nodiscard]] inline slot_alignment align_slots(const vocabulary& student, std::span<const std::int64_t> student_ids,
                                                const vocabulary& teacher, std::span<const std::int64_t> teacher_ids,
                                                std::size_t heads, std::optional<std::string_view> text = std::nullopt) {
    const char* op = "align student slots with teacher bytes";
    if (heads == 0 || heads > alphabet_size)
        throw value_error(op, "heads", "K must be in 1..260, got " + std::to_string(heads));
    slot_alignment a;
    a.student = byte_offsets(student, student_ids);
    const auto tch = byte_offsets(teacher, teacher_ids);
    for (std::size_t k = 0; k < teacher_ids.size(); ++k)
        if (tch.length[k] == 0)
            throw value_error(op, "teacher token position " + std::to_string(k),
                              "special token id " + std::to_string(teacher_ids[k]) +
                                  " among the teacher's text ids (pass BOS and other context separately)");
    const std::string_view S = a.student.bytes, T = tch.bytes;
    a.student_prefix = detail::dummy_prefix_of(student, S, T, teacher, text);
    a.teacher_prefix = detail::dummy_prefix_of(teacher, T, S, student, text);
    auto check = [&](std::string_view stream, std::size_t pre, const char* side) {
        if (!text) return;
        const std::string want = (pre ? " " : "") + std::string(*text);
        if (stream != want) {
            std::size_t d = 0;
            while (d < stream.size() && d < want.size() && stream[d] == want[d]) ++d;
            throw alignment_error(op, std::string(side) + " byte offset " + std::to_string(d),
                                  std::string("the ") + side + "'s token bytes differ from the text here");
        }
    };
    check(S, a.student_prefix, "student");
    check(T, a.teacher_prefix, "teacher");
    if (S.size() < a.student_prefix || T.size() < a.teacher_prefix ||
        S.substr(a.student_prefix) != T.substr(a.teacher_prefix)) {
        const auto s = S.substr(std::min(S.size(), a.student_prefix)), t = T.substr(std::min(T.size(), a.teacher_prefix));
        std::size_t d = 0;
        while (d < s.size() && d < t.size() && s[d] == t[d]) ++d;
        throw alignment_error(op, "text byte offset " + std::to_string(d),
                              "student and teacher byte streams differ (student " + std::to_string(s.size()) +
                                  " text bytes, teacher " + std::to_string(t.size()) + "; student dummy prefix " +
                                  std::to_string(a.student_prefix) + ", teacher " + std::to_string(a.teacher_prefix) + ")");
    }
    a.tokens = student_ids.size();
    a.heads = heads;
    a.teacher_offset.assign(a.tokens * heads, -1);
    a.mask.assign(a.tokens * heads, 0);
    a.true_byte.assign(a.tokens * heads, -1);
    const auto sp = static_cast<std::int64_t>(a.student_prefix), tp = static_cast<std::int64_t>(a.teacher_prefix);
    for (std::size_t l = 0; l < a.tokens; ++l) {
        const auto n = std::min<std::int64_t>(a.student.length[l], static_cast<std::int64_t>(heads));
        for (std::int64_t j = 0; j < n; ++j) {
            const auto sb = a.student.offset[l] + j; // student stream offset
            if (sb < sp) continue;                  // the student's dummy prefix: not text
            const auto slot = l * heads + static_cast<std::size_t>(j);
            a.teacher_offset[slot] = sb - sp + tp;
            a.mask[slot] = 1;
            a.true_byte[slot] = static_cast<std::uint8_t>(S[static_cast<std::size_t>(sb)]);
        }
    }
    return a;
}

/// Gathers teacher byte distributions into slot targets.
/// @param dists teacher distributions over its byte stream ([≥ teacher bytes, 260]).
/// @param out   [tokens, heads, 260]; masked slots are set to 0.
template <class T>
void gather_targets(const slot_alignment& a, const byte_distributions& dists, std::span<T> out) {
    const char* op = "gather teacher targets";
    if (out.size() != a.tokens * a.heads * alphabet_size)
        throw shape_error(op, "out", "expected " + std::to_string(a.tokens) + " x " + std::to_string(a.heads) + " x 260 = " +
                                         std::to_string(a.tokens * a.heads * alphabet_size) + " values, got " +
                                         std::to_string(out.size()));
    for (std::size_t s = 0; s < a.tokens * a.heads; ++s) {
        T* dst = out.data() + s * alphabet_size;
        const auto off = a.teacher_offset[s];
        if (off < 0) {
            std::fill(dst, dst + alphabet_size, T(0));
            continue;
        }
        if (static_cast<std::size_t>(off) >= dists.positions)
            throw shape_error(op, "slot " + std::to_string(s / a.heads) + ", head " + std::to_string(s % a.heads),
                              "teacher byte offset " + std::to_string(off) + " is past the " + std::to_string(dists.positions) +
                                  " teacher distributions");
        const auto src = dists.at(static_cast<std::size_t>(off));
        for (std::size_t c = 0; c < alphabet_size; ++c) dst[c] = static_cast<T>(src[c]);
    }
}

/// Teacher targets for a student from one teacher pass (canonical path): the [tokens, heads,
/// 260] targets, the slot mask and the true bytes.
struct slot_targets {
    slot_alignment alignment;
    std::vector<float> targets; ///< [tokens, heads, 260]
    /// [tokens, heads]: byte_distributions::dropped at each slot's teacher byte (the share of the
    /// conditioning mass the projection dropped there; 0 for masked slots). A trainer can
    /// down-weight or skip slots whose target rests on little of the teacher's mass.
    std::vector<double> dropped;
};

/// Canonical-path targets: projects the teacher's rows (row k = distribution of teacher token k
/// given the tokens before it) and gathers them for every student slot.
template <class T>
[[nodiscard]] slot_targets canonical_targets(const vocabulary& student, std::span<const std::int64_t> student_ids,
                                             const byte_trie& teacher, tensor_view<const T, 2> teacher_rows,
                                             std::span<const std::int64_t> teacher_ids, std::size_t heads,
                                             std::optional<std::string_view> text = std::nullopt) {
    slot_targets r;
    r.alignment = align_slots(student, student_ids, teacher.vocab(), teacher_ids, heads, text);
    const auto dists = reference::canonical_path(teacher, teacher_rows, teacher_ids);
    r.targets.resize(r.alignment.tokens * heads * alphabet_size);
    gather_targets(r.alignment, dists, std::span<float>(r.targets));
    r.dropped.assign(r.alignment.tokens * heads, 0.0); // (gather_targets checked every offset)
    for (std::size_t s = 0; s < r.dropped.size(); ++s)
        if (const auto off = r.alignment.teacher_offset[s]; off >= 0) r.dropped[s] = dists.dropped[static_cast<std::size_t>(off)];
    return r;
}

} // namespace bld
