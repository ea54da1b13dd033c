// Quickstart: from a teacher's token rows to byte targets and the BLD loss of a student's byte
// head — the trainer's route (bld::distiller → bld::bld_loss) on a vocabulary small enough to read. docs/00_quickstart.md shows
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
    // The distiller owns the teacher's sorted byte trie and the SIMD row plan: build it once.
    const std::size_t K = 4; // byte heads
    const bld::distiller distiller(std::move(teacher_vocab), std::move(student_vocab), {.heads = K});
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

    // One call per batch: here one sequence ([S_t, V] rows, [S] ids); a trainer passes
    // [B, S_t, V] logits with [B, S] ids and the padding's starts/lengths or masks.
    const bld::target_batch t = distiller.targets(bld::tensor_view<const float, 2>(rows.data(), {2, 7}),
                                                  teacher_ids, student_ids);
    // t: [1 sequence, 3 positions, 4 heads] slots; t.values_f32(): the teacher's next-byte
    // distribution of each active slot only (compact), t.mask() / t.true_bytes(): which slots
    // take part, and their text bytes.
    // [/doc:targets]

    // [doc:loss]
    // The student's byte-head logits [tokens, K, 260] (a model would produce them).
    const std::int64_t T = t.tokens(), Kh = t.heads();
    std::vector<float> logits(static_cast<std::size_t>(T * Kh * 260), 0.f), grad(logits.size());
    const bld::byte_loss_result r = bld::bld_loss(
        bld::tensor_view<const float, 3>(logits.data(), {T, Kh, 260}),
        t.view<float>(),         // targets, mask and true bytes, shaped
        bld::bld_loss_options{}, // λ_b = 1, λ_KL = 0.1, forward KL, eq. 5 reduction
        bld::tensor_view<float, 3>(grad.data(), {T, Kh, 260}));
    std::printf("BLD byte loss %.4f over %lld active slots of %lld tokens\n", r.value,
                static_cast<long long>(r.active_slots), static_cast<long long>(r.active_tokens));
    // [/doc:loss]
    // " t" has 2 bytes (2 slots), "he cat" 6 bytes of which K = 4 get a head; <s> has none.
    return r.active_slots == 6 && r.active_tokens == 2 && t.active_slots() == 6 ? 0 : 1;
}
