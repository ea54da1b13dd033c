// bld/targets/alignment.hpp — student slots ↔ teacher byte positions, from token ids only.
//
// docs/01_method.md ("Alphabet", "The student side"): the student's byte head has K heads reading the hidden state that predicts
// student token ℓ; head j predicts byte j of token ℓ, i.e. the text byte at offset o_ℓ + j,
// for j < min(n_ℓ, K). Its teacher target is the teacher's next-byte distribution at that same
// text byte. Byte offsets come from the ids and the vocabularies, never from decode-and-search.
//
// Reconciliation, explicit and reported: special tokens (BOS, EOS, chat markers) have no bytes
// and their slots are masked; a dummy prefix (SentencePiece's leading space) on either side is
// text neither side's partner has, so it is skipped — at the text's start, and where an encoder
// cuts added tokens out of the text first, at the start of each piece between them (Prepend,
// Metaspace "always", ByteLevel add_prefix_space; Metaspace "first" only at the text's start,
// so none when the text begins with an added token); after that the two byte streams must be
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
    /// Leading bytes of each stream that are a tokenizer's dummy prefix, not text (0 or 1).
    std::size_t student_prefix = 0, teacher_prefix = 0;
    /// Offsets in each stream of every byte that is a dummy-prefix space, not text (ascending;
    /// past the start only where an encoder splits added tokens out of the text first).
    std::vector<std::int64_t> student_inserted, teacher_inserted;
    /// Offsets of the student tokens in the student's byte stream.
    token_offsets student;
};

namespace detail {

/// What a stream byte may be: text, a dummy-prefix space for certain, or a space that is either.
enum class prefix_byte : std::uint8_t { text, inserted, maybe };

/// The dummy-prefix bytes of a stream, from its ids: the first byte of each piece of text
/// between split tokens (text_transformations::split_ids) that the rule gives a space, when it
/// is a space. Prepend's are certain; a Metaspace / ByteLevel space may also be the text's own.
inline std::vector<prefix_byte> prefix_bytes_of(const vocabulary& v, std::span<const std::int64_t> ids,
                                                const token_offsets& t) {
    std::vector<prefix_byte> c(t.bytes.size(), prefix_byte::text);
    const auto& tr = v.transformations();
    if (tr.dummy_prefix == dummy_prefix_rule::none) return c;
    bool piece_start = true, first_piece = true;
    for (std::size_t k = 0; k < ids.size(); ++k) {
        if (t.length[k] == 0) continue;  // special tokens: no bytes, no effect on the pieces
        if (tr.splits_at(ids[k])) {
            piece_start = true;
            first_piece = false;
            continue;
        }
        if (!piece_start) continue;
        piece_start = false;
        const bool applies = tr.dummy_prefix != dummy_prefix_rule::first || first_piece;
        first_piece = false;
        const auto o = static_cast<std::size_t>(t.offset[k]);
        if (applies && t.bytes[o] == ' ')
            c[o] = tr.dummy_prefix == dummy_prefix_rule::always ? prefix_byte::inserted : prefix_byte::maybe;
    }
    return c;
}

/// The dummy-prefix bytes of a stream that must spell `text`: where the tokenizer's rule puts
/// them. @throws alignment_error at the first byte where the stream differs from that encoding.
inline std::vector<prefix_byte> prefix_bytes_of(const vocabulary& v, std::string_view stream, std::string_view text,
                                                const char* op, const char* side) {
    const auto want = v.transformations().layout(text);
    if (stream != want.bytes) {
        std::size_t d = 0;
        while (d < stream.size() && d < want.bytes.size() && stream[d] == want.bytes[d]) ++d;
        throw alignment_error(op, std::string(side) + " byte offset " + std::to_string(d),
                              std::string("the ") + side + "'s token bytes differ from the text here" +
                                  (want.inserted.empty() ? "" : " (with its tokenizer's dummy-prefix spaces)"));
    }
    std::vector<prefix_byte> c(stream.size(), prefix_byte::text);
    for (const auto o : want.inserted) c[o] = prefix_byte::inserted;
    return c;
}

} // namespace detail

/// Aligns student slots with the teacher's byte stream.
/// @param student_ids the student's tokens (special tokens allowed: their slots are masked)
/// @param teacher_ids the teacher's text tokens (no special tokens: pass BOS separately)
/// @param heads       K, the number of byte heads (1..260)
/// @param text        the text both encode, if known (then each side's dummy prefixes follow
///                    from its tokenizer's rule, and each stream is checked against the text)
/// @throws bld::alignment_error with the first differing byte offset if the streams differ.
///
/// A dummy-prefix space is text neither side's partner has: it is skipped. Without the text, a
/// Prepend normaliser's space is a dummy for certain, and a Metaspace / ByteLevel space at the
/// start of a piece of text is one unless the other stream has a space there too.
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
    using detail::prefix_byte;
    const auto cs = text ? detail::prefix_bytes_of(student, S, *text, op, "student")
                         : detail::prefix_bytes_of(student, student_ids, a.student);
    const auto ct = text ? detail::prefix_bytes_of(teacher, T, *text, op, "teacher")
                         : detail::prefix_bytes_of(teacher, teacher_ids, tch);
    // Both streams, byte by byte: a dummy space is skipped; a possible one is text when the other
    // stream has a space at the same place (the text had one), a dummy otherwise.
    std::vector<std::int64_t> text_of_student(S.size(), -1);  // student stream offset → text offset
    std::vector<std::int64_t> teacher_of_text;                // text offset → teacher stream offset
    teacher_of_text.reserve(T.size());
    std::size_t i = 0, j = 0;
    while (i < S.size() || j < T.size()) {
        const auto si = i < S.size() ? cs[i] : prefix_byte::text, tj = j < T.size() ? ct[j] : prefix_byte::text;
        const bool skip_s = si == prefix_byte::inserted ||
                            (si == prefix_byte::maybe && tj != prefix_byte::maybe && (j >= T.size() || T[j] != ' '));
        const bool skip_t = !skip_s && (tj == prefix_byte::inserted ||
                                        (tj == prefix_byte::maybe && si != prefix_byte::maybe && (i >= S.size() || S[i] != ' ')));
        if (skip_s) {
            a.student_inserted.push_back(static_cast<std::int64_t>(i++));
            continue;
        }
        if (skip_t) {
            a.teacher_inserted.push_back(static_cast<std::int64_t>(j++));
            continue;
        }
        if (i >= S.size() || j >= T.size() || S[i] != T[j]) {
            const auto d = teacher_of_text.size();
            throw alignment_error(op, "text byte offset " + std::to_string(d),
                                  "student and teacher byte streams differ (student " + std::to_string(S.size()) +
                                      " bytes, teacher " + std::to_string(T.size()) + "; dummy-prefix spaces skipped before here: student " +
                                      std::to_string(a.student_inserted.size()) + ", teacher " +
                                      std::to_string(a.teacher_inserted.size()) + ")");
        }
        text_of_student[i++] = static_cast<std::int64_t>(teacher_of_text.size());
        teacher_of_text.push_back(static_cast<std::int64_t>(j++));
    }
    a.student_prefix = !a.student_inserted.empty() && a.student_inserted.front() == 0 ? 1 : 0;
    a.teacher_prefix = !a.teacher_inserted.empty() && a.teacher_inserted.front() == 0 ? 1 : 0;
    a.tokens = student_ids.size();
    a.heads = heads;
    a.teacher_offset.assign(a.tokens * heads, -1);
    a.mask.assign(a.tokens * heads, 0);
    a.true_byte.assign(a.tokens * heads, -1);
    for (std::size_t l = 0; l < a.tokens; ++l) {
        const auto n = std::min<std::int64_t>(a.student.length[l], static_cast<std::int64_t>(heads));
        for (std::int64_t j2 = 0; j2 < n; ++j2) {
            const auto sb = static_cast<std::size_t>(a.student.offset[l] + j2);  // student stream offset
            const auto t = text_of_student[sb];
            if (t < 0) continue;  // a dummy-prefix space: not text
            const auto slot = l * heads + static_cast<std::size_t>(j2);
            a.teacher_offset[slot] = teacher_of_text[static_cast<std::size_t>(t)];
            a.mask[slot] = 1;
            a.true_byte[slot] = static_cast<std::uint8_t>(S[sb]);
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
