// Alignment of student slots with teacher bytes on real tokenizer pairs and real text.
#include "real_data.hpp"

#include <bld/targets/alignment.hpp>
#include <bld/bld.hpp>
#include <doctest/doctest.h>

#include <map>
#include <random>

namespace {

/// A teacher of single bytes (ids 1..256, byte b = id b + 1) and an <eos> (id 0), plus `extra`.
bld::byte_trie byte_teacher(std::vector<bld::token_entry> extra = {}) {
    std::vector<bld::token_entry> te{{0, {}, bld::token_kind::special, "<eos>"}};
    for (int b = 0; b < 256; ++b) te.push_back({b + 1, std::string(1, static_cast<char>(b)), bld::token_kind::text, ""});
    for (auto& e : extra) te.push_back(std::move(e));
    return bld::byte_trie(bld::vocabulary::from_entries(te, "teacher"));
}

/// A student that spells "hello world" as <s> "hel" "lo" " world".
bld::vocabulary hello_student() {
    return bld::vocabulary::from_entries(
        {{0, {}, bld::token_kind::special, "<s>"}, {1, "hel", bld::token_kind::text, ""}, {2, "lo", bld::token_kind::text, ""},
         {3, " world", bld::token_kind::text, ""}},
        "student");
}

/// Checks every slot of one alignment against the text: the slot's teacher byte and the
/// student's byte are the same text byte, masked slots are exactly the ones without text.
void check_slots(const bld::slot_alignment& a, std::string_view teacher_stream, std::string_view text,
                 std::span<const std::int64_t> student_ids, const bld::vocabulary& student, std::size_t K,
                 std::size_t& active) {
    for (std::size_t l = 0; l < a.tokens; ++l) {
        const auto b = student.bytes(static_cast<std::size_t>(student_ids[l]));
        for (std::size_t j = 0; j < K; ++j) {
            const auto s = l * K + j;
            const auto so = a.student.offset[l] + static_cast<std::int64_t>(j); // student stream offset
            const bool text_byte = j < b.size() && so >= static_cast<std::int64_t>(a.student_prefix);
            REQUIRE(static_cast<bool>(a.mask[s]) == text_byte);
            if (!text_byte) {
                CHECK(a.teacher_offset[s] == -1);
                continue;
            }
            ++active;
            const auto text_off = static_cast<std::size_t>(so) - a.student_prefix;
            REQUIRE(static_cast<std::size_t>(a.teacher_offset[s]) < teacher_stream.size());
            CHECK(teacher_stream[static_cast<std::size_t>(a.teacher_offset[s])] == text[text_off]);
            CHECK(a.true_byte[s] == static_cast<std::uint8_t>(text[text_off]));
            CHECK(static_cast<std::size_t>(a.teacher_offset[s]) == text_off + a.teacher_prefix);
        }
    }
}

} // namespace

TEST_CASE("alignment on real pairs: every slot's target sits at the right text byte") {
    const auto dir = bld_test::data_dir();
    std::map<std::string, bld_test::real_tokenizer> toks;
    for (auto& t : bld_test::real_tokenizers(dir)) toks[t.name] = t;
    // (teacher, student): byte-level teacher / byte-level student, SentencePiece teacher /
    // byte-level student, and the reverse (SentencePiece student: its dummy prefix is masked).
    const std::pair<std::string, std::string> pairs[] = {{"llama3", "gpt2"}, {"llama2", "llama3"}, {"llama3", "llama2"}, {"gemma3", "qwen3"}};
    for (const auto& [tn, sn] : pairs) {
        CAPTURE(tn);
        CAPTURE(sn);
        const auto teacher = bld_test::load(toks[tn]);
        const auto student = bld_test::load(toks[sn]);
        const auto te = bld_test::read_encodings(dir, tn);
        const auto se = bld_test::read_encodings(dir, sn);
        REQUIRE(te.size() == se.size());
        std::size_t active = 0, records = 0;
        for (std::size_t r = 0; r < te.size(); r += 3) {
            REQUIRE(te[r].text == se[r].text);
            const std::size_t K = 1 + r % 10;
            // With the text: each side's dummy prefix follows from its rule.
            const auto a = bld::align_slots(student, se[r].ids, teacher, te[r].ids, K, std::string_view(te[r].text));
            check_slots(a, teacher.decode(te[r].ids), te[r].text, se[r].ids, student, K, active);
            // Without the text: the prefixes are inferred from the streams, same answer.
            const auto b = bld::align_slots(student, se[r].ids, teacher, te[r].ids, K);
            CHECK(b.teacher_offset == a.teacher_offset);
            ++records;
        }
        MESSAGE(tn << " -> " << sn << ": " << records << " texts, " << active << " active slots");
        CHECK(active > 10000);
    }
}

TEST_CASE("alignment with added tokens: the dummy prefix per piece of text, as the reference encoder puts it") {
    // Tokenizers derived by scripts/js/reference.mjs from llama2 / llama3 with two non-special
    // added tokens, and the ids the reference encoder (@huggingface/tokenizers) gives for texts
    // with added tokens at the start, in the middle and at the end. Each variant is aligned with
    // the plain llama3 tokenization (no dummy prefix) both ways. Oracle, independent of the
    // alignment's rules: with K covering every token, the student's active slots spell the text
    // in order, each at a teacher byte of the same value, at increasing teacher offsets; and the
    // alignment without the text equals the one with it.
    const auto dir = bld_test::data_dir();
    const auto plain = bld::io::load_hf_tokenizer_json(dir + "/ref/added-plain.tokenizer.json");
    const auto plain_ids = bld_test::read_encodings(dir, "added-plain");
    const std::pair<const char*, bld::dummy_prefix_rule> variants[] = {{"first", bld::dummy_prefix_rule::first},
                                                                       {"always", bld::dummy_prefix_rule::if_absent},
                                                                       {"prepend", bld::dummy_prefix_rule::always},
                                                                       {"bytelevel", bld::dummy_prefix_rule::if_absent}};
    const auto spells_text = [](const bld::slot_alignment& a, std::string_view teacher_stream, std::string_view text) {
        std::string spelled;
        std::int64_t last = -1;
        for (std::size_t s = 0; s < a.tokens * a.heads; ++s) {
            if (!a.mask[s]) continue;
            const auto off = a.teacher_offset[s];
            REQUIRE(off > last);
            REQUIRE(static_cast<std::size_t>(off) < teacher_stream.size());
            CHECK(static_cast<std::uint8_t>(teacher_stream[static_cast<std::size_t>(off)]) == a.true_byte[s]);
            spelled += static_cast<char>(a.true_byte[s]);
            last = off;
        }
        CHECK(spelled == text);
    };
    for (const auto& [variant, rule] : variants) {
        const std::string name = variant;
        CAPTURE(name);
        const auto v = bld::io::load_hf_tokenizer_json(dir + "/ref/added-" + name + ".tokenizer.json");
        CHECK(v.transformations().dummy_prefix == rule);
        REQUIRE(v.transformations().split_ids.size() == 2);
        const auto enc = bld_test::read_encodings(dir, "added-" + name);
        REQUIRE(enc.size() == plain_ids.size());
        std::size_t starts_with_added = 0, inserted_inside = 0;
        for (std::size_t r = 0; r < enc.size(); ++r) {
            const auto& text = enc[r].text;
            CAPTURE(text);
            REQUIRE(plain_ids[r].text == text);
            const auto& ids = enc[r].ids;
            const std::size_t K = 64;  // longer than any token here: every text byte is a slot
            // The variant as the student, then as the teacher.
            const auto a = bld::align_slots(v, ids, plain, plain_ids[r].ids, K, std::string_view(text));
            spells_text(a, plain.decode(plain_ids[r].ids), text);
            CHECK(bld::align_slots(v, ids, plain, plain_ids[r].ids, K).teacher_offset == a.teacher_offset);
            const auto b = bld::align_slots(plain, plain_ids[r].ids, v, ids, K, std::string_view(text));
            const auto teacher_stream = bld::byte_offsets(v, ids).bytes;
            spells_text(b, teacher_stream, text);
            CHECK(bld::align_slots(plain, plain_ids[r].ids, v, ids, K).teacher_offset == b.teacher_offset);
            // The dummy spaces are the ones the reference encoder put there.
            CHECK(b.teacher_inserted.size() == teacher_stream.size() - text.size());
            CHECK(a.student_inserted == b.teacher_inserted);
            starts_with_added += text.starts_with("<X>") || text.starts_with("[T]");
            inserted_inside += !b.teacher_inserted.empty() && b.teacher_inserted.back() > 0;
        }
        MESSAGE("added-" << name << ": " << enc.size() << " texts, " << starts_with_added
                         << " beginning with an added token, " << inserted_inside << " with a dummy space past the start");
        CHECK(starts_with_added > 100);
        // Metaspace "first" puts a space at the text's start only; the others at every piece.
        if (rule == bld::dummy_prefix_rule::first) CHECK(inserted_inside == 0);
        else CHECK(inserted_inside > 100);
    }
}

TEST_CASE("alignment: special tokens masked; gathered one-hot teacher targets recover the true bytes") {
    // Teacher: single bytes. Student: a few multi-byte tokens and a BOS.
    const auto teacher = byte_teacher();
    const auto student = hello_student();
    const std::string text = "hello world";
    std::vector<std::int64_t> sids{0, 1, 2, 3}, tids;
    for (unsigned char c : text) tids.push_back(c + 1);
    // A teacher whose row k puts all its mass on the true token k.
    std::vector<float> rows(tids.size() * 257, -30.f);
    for (std::size_t k = 0; k < tids.size(); ++k) rows[k * 257 + static_cast<std::size_t>(tids[k])] = 30.f;
    const std::size_t K = 4;
    const auto t = bld::canonical_targets(student, sids, teacher, bld::tensor_view<const float, 2>(rows.data(), {11, 257}), tids, K,
                                          std::string_view(text));
    const auto& a = t.alignment;
    for (std::size_t j = 0; j < K; ++j) CHECK(a.mask[j] == 0); // BOS: no bytes
    CHECK(a.mask[1 * K + 3] == 0);                             // "hel" has 3 bytes
    CHECK(a.mask[3 * K + 3] == 1);                             // " world": first K = 4 bytes
    for (std::size_t s = 0; s < a.tokens * K; ++s) {
        if (!a.mask[s]) continue;
        const float* p = t.targets.data() + s * 260;
        const auto best = std::max_element(p, p + 260) - p;
        CHECK(best == a.true_byte[s]);
        CHECK(p[best] > 0.99f);
    }
}

TEST_CASE("alignment: canonical_targets carries the projection's dropped share to every slot") {
    // Teacher with multi-byte tokens, so positions inside a token drop the mass of the teacher's
    // tokens that end exactly there (design §3.1): a non-trivial `dropped`.
    const auto teacher = byte_teacher({{257, "he", bld::token_kind::text, ""},
                                       {258, "llo", bld::token_kind::text, ""},
                                       {259, " wor", bld::token_kind::text, ""}});
    const auto student = hello_student();
    const std::string text = "hello world";
    const std::vector<std::int64_t> sids{0, 1, 2, 3}, tids{257, 258, 259, 'l' + 1, 'd' + 1};
    std::mt19937 rng(7);
    std::normal_distribution<float> g(0.0f, 2.0f);
    std::vector<float> rows(tids.size() * 260);
    for (auto& x : rows) x = g(rng);
    const bld::tensor_view<const float, 2> view(rows.data(), {static_cast<std::int64_t>(tids.size()), 260});
    const std::size_t K = 3;
    const auto t = bld::canonical_targets(student, sids, teacher, view, tids, K, std::string_view(text));
    const auto dists = bld::reference::canonical_path(teacher, view, tids);
    const auto& a = t.alignment;
    REQUIRE(t.dropped.size() == a.tokens * K);
    std::size_t nonzero = 0;
    for (std::size_t s = 0; s < a.tokens * K; ++s) {
        CAPTURE(s);
        if (!a.mask[s]) {
            CHECK(t.dropped[s] == 0.0);
            continue;
        }
        const auto off = static_cast<std::size_t>(a.teacher_offset[s]);
        CHECK(t.dropped[s] == dists.dropped[off]);
        CHECK(t.dropped[s] >= 0.0);
        CHECK(t.dropped[s] < 1.0);
        if (t.dropped[s] > 0.0) ++nonzero;
    }
    CHECK(nonzero > 0); // slots inside the teacher tokens "llo" and " wor"
}

TEST_CASE("alignment: mismatching streams and bad arguments are clear errors") {
    auto v = bld::vocabulary::from_entries({{0, "ab", bld::token_kind::text, ""}, {1, "c", bld::token_kind::text, ""},
                                            {2, "x", bld::token_kind::text, ""}, {3, {}, bld::token_kind::special, "<s>"}},
                                           "v");
    const std::vector<std::int64_t> s{0, 1}, t{0, 2};
    try {
        (void)bld::align_slots(v, s, v, t, 4);
        FAIL("no error");
    } catch (const bld::alignment_error& e) {
        CHECK(std::string(e.what()).find("text byte offset 2") != std::string::npos);
    }
    CHECK_THROWS_AS((void)bld::align_slots(v, s, v, s, 0), bld::value_error);
    CHECK_THROWS_AS((void)bld::align_slots(v, s, v, s, 261), bld::value_error);
    const std::vector<std::int64_t> with_special{3, 0, 1};
    CHECK_NOTHROW((void)bld::align_slots(v, with_special, v, s, 2)); // student BOS is fine
    CHECK_THROWS_WITH_AS((void)bld::align_slots(v, s, v, with_special, 2), doctest::Contains("special token id 3"), bld::value_error);
    const std::vector<std::int64_t> out_of_range{0, 9};
    CHECK_THROWS_WITH_AS((void)bld::align_slots(v, out_of_range, v, s, 2), doctest::Contains("token position 1"), bld::value_error);
    try {
        (void)bld::align_slots(v, s, v, s, 2, std::string_view("abd"));
        FAIL("no error");
    } catch (const bld::alignment_error& e) {
        CHECK(std::string(e.what()).find("student byte offset 2") != std::string::npos);
    }
}
