// Quickstart: from a teacher's token rows to byte targets and the BLD loss of a student's byte
// head — the whole method on a vocabulary small enough to read. docs/00_quickstart.md shows
// the regions between the [doc:...] markers; CI compiles and runs this file.
#include <bld/bld.hpp>
#include <bld/cpu.hpp>

#include <cstdio>
#include <random>
#include <vector>

int main() {
    // [doc:vocab]
    // Two tokenizers over the same text. The teacher knows " the" as one token, the student
    // splits it; specials (<eos>, <s>) have no bytes: their mass is the STOP symbol.
    using bld::token_kind;
    bld::vocabulary teacher_vocab = bld::vocabulary::from_entries(
        {{0, "", token_kind::special, "<eos>"}, {1, " the", token_kind::text, ""}, {2, " t", token_kind::text, ""},
         {3, "he", token_kind::text, ""}, {4, " cat", token_kind::text, ""}, {5, "h", token_kind::text, ""},
         {6, "e", token_kind::text, ""}},
        "teacher");
    bld::vocabulary student_vocab = bld::vocabulary::from_entries(
        {{0, "", token_kind::special, "<s>"}, {1, " t", token_kind::text, ""}, {2, "he cat", token_kind::text, ""}},
        "student");
    bld::byte_trie teacher(std::move(teacher_vocab)); // sorted byte trie: nodes are ranges
    // [/doc:vocab]

    // [doc:targets]
    // The teacher's own tokenization of " the cat" and its rows: row k is the teacher's
    // logits for token k given the tokens before it (here random, favouring the truth).
    const std::vector<std::int64_t> teacher_ids{1, 4};     // " the", " cat"
    const std::vector<std::int64_t> student_ids{0, 1, 2};  // <s>, " t", "he cat"
    std::mt19937 rng(1);
    std::normal_distribution<float> noise(0.f, 1.f);
    std::vector<float> rows(teacher_ids.size() * 7);
    for (auto& z : rows) z = noise(rng);
    for (std::size_t k = 0; k < teacher_ids.size(); ++k) rows[k * 7 + static_cast<std::size_t>(teacher_ids[k])] += 4.f;

    const std::size_t K = 4; // byte heads
    bld::slot_targets t = bld::canonical_targets(
        student_vocab, student_ids, teacher, bld::tensor_view<const float, 2>(rows.data(), {2, 7}), teacher_ids, K);
    // t.targets: [3 tokens, 4 heads, 260] teacher next-byte distributions;
    // t.alignment.mask / .true_byte: which slots take part, and their text bytes.
    // [/doc:targets]

    // [doc:loss]
    // The student's byte-head logits [tokens, K, 260] (a model would produce them).
    const auto T = static_cast<std::int64_t>(student_ids.size()), Kh = static_cast<std::int64_t>(K);
    std::vector<float> logits(static_cast<std::size_t>(T * Kh * 260), 0.f), grad(logits.size());
    std::vector<std::int64_t> true_bytes(t.alignment.true_byte.begin(), t.alignment.true_byte.end());
    const bld::byte_loss_result r = bld::bld_loss(
        bld::tensor_view<const float, 3>(logits.data(), {T, Kh, 260}),
        bld::tensor_view<const float, 3>(t.targets.data(), {T, Kh, 260}),
        bld::tensor_view<const std::int64_t, 2>(true_bytes.data(), {T, Kh}),
        bld::tensor_view<const std::uint8_t, 2>(t.alignment.mask.data(), {T, Kh}),
        bld::bld_loss_options{}, // λ_b = 1, λ_KL = 0.1, forward KL, eq. 5 reduction
        bld::tensor_view<float, 3>(grad.data(), {T, Kh, 260}));
    std::printf("BLD byte loss %.4f over %lld active slots of %lld tokens\n", r.value,
                static_cast<long long>(r.active_slots), static_cast<long long>(r.active_tokens));
    // [/doc:loss]
    // " t" has 2 bytes (2 slots), "he cat" 6 bytes of which K = 4 get a head; <s> has none.
    return r.active_slots == 6 && r.active_tokens == 2 ? 0 : 1;
}
