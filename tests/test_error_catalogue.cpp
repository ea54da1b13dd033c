// The catalogue of bad input (docs/errors.md): each entry triggers one class of bad input and
// checks that the error keeps its three parts — what failed, where, and why. The entry ids
// (E01 …) are the ones docs/errors.md lists; scripts/check_docs.py keeps the two in step.
#include <bld/bld.hpp>
#include <bld/testing/toy_teachers.hpp>
#include <bld/io/json.hpp>
#include <bld/io/npy.hpp>
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <cstdio>
#include <cstdlib>
#include <functional>

namespace {

namespace fs = std::filesystem;

struct entry {
    const char* id;
    const char* what;  // substring of operation()
    const char* where; // substring of location()
    const char* why;   // substring of reason()
    std::function<void(const fs::path&)> trigger;
};

fs::path write(const fs::path& dir, const std::string& name, const std::string& text) {
    std::ofstream(dir / name, std::ios::binary) << text;
    return dir / name;
}

bld::byte_trie tiny_trie() {
    return bld::byte_trie(bld::vocabulary::from_entries(
        {{0, {}, bld::token_kind::special, "<eos>"}, {1, "a", bld::token_kind::text, ""}, {2, "b", bld::token_kind::text, ""}}, "tiny"));
}

template <class E>
void expect(const entry& e, const fs::path& dir) {
    const std::string id = e.id;
    CAPTURE(id);
    try {
        e.trigger(dir);
        FAIL_CHECK(e.id << ": no error");
    } catch (const E& err) {
        const std::string msg = err.what();
        INFO(id << " message: " << msg);
        if (std::getenv("BLD_PRINT_ERRORS")) std::printf("%s\t%s\n", id.c_str(), msg.c_str()); // regenerates docs/errors.md
        CHECK(err.operation().find(e.what) != std::string::npos);
        CHECK(err.location().find(e.where) != std::string::npos);
        CHECK(err.reason().find(e.why) != std::string::npos);
        CHECK(!err.operation().empty());
        CHECK(!err.reason().empty());
    } catch (const std::exception& other) {
        FAIL_CHECK(e.id << ": wrong exception type: " << other.what());
    }
}

const std::string hf_ok = R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1}}})";

} // namespace

TEST_CASE("error catalogue: every entry keeps what / where / why") {
    const fs::path dir = fs::temp_directory_path() / ("bld_errcat_" + std::to_string(::getpid()));
    fs::create_directories(dir);
    const auto trie = tiny_trie();
    std::vector<float> rows(2 * 3, 0.f);
    const std::vector<std::int64_t> ids{1, 2};
    using L = bld::load_error;
    using V = bld::value_error;
    using S = bld::shape_error;
    using A = bld::alignment_error;

    const entry load_entries[] = {
        {"E01", "load tokenizer", "missing.json", "no such file",
         [](const fs::path& d) { (void)bld::io::load_vocabulary((d / "missing.json").string()); }},
        {"E02", "load tokenizer.json", "line 1, column 44 (byte 43)", "not valid JSON",
         [](const fs::path& d) { (void)bld::io::load_hf_tokenizer_json(write(d, "e02.json", R"({"model": {"type": "BPE", "vocab": {"a": 0,, "b": 1}}})").string()); }},
        {"E03", "load tokenizer.json", "truncated?", "not valid JSON",
         [](const fs::path& d) { (void)bld::io::load_hf_tokenizer_json(write(d, "e03.json", hf_ok.substr(0, 30)).string()); }},
        {"E04", "load tokenizer.json", "e04.json: model", "unsupported model type \"WordPiece\"",
         [](const fs::path& d) { (void)bld::io::load_hf_tokenizer_json(write(d, "e04.json", R"({"model": {"type": "WordPiece", "vocab": {"a": 0}}})").string()); }},
        {"E05", "load tokenizer.json", "e05.json: decoder", "unsupported decoder type \"CTC\"",
         [](const fs::path& d) { (void)bld::io::load_hf_tokenizer_json(write(d, "e05.json", R"({"decoder": {"type": "CTC"}, "model": {"type": "BPE", "vocab": {"a": 0}}})").string()); }},
        {"E06", "load tokenizer.json", "token id 1 \"a b\"", "U+0020 at byte 1 is outside the GPT-2 byte-level alphabet",
         [](const fs::path& d) { (void)bld::io::load_hf_tokenizer_json(write(d, "e06.json", R"({"decoder": {"type": "ByteLevel"}, "model": {"type": "BPE", "vocab": {"a": 0, "a b": 1}}})").string()); }},
        {"E07", "load GPT-2 encoder.json", "encoder.json: token id 1", "U+20AC",
         [](const fs::path& d) {
             fs::create_directories(d / "e07");
             write(d / "e07", "encoder.json", R"({"a": 0, "€": 1})");
             write(d / "e07", "vocab.bpe", "#version: 0.2\n");
             (void)bld::io::load_vocabulary((d / "e07").string());
         }},
        {"E08", "load tokenizer.json", "token id 1 \"<0xG1>\"", "malformed byte-fallback piece",
         [](const fs::path& d) { (void)bld::io::load_hf_tokenizer_json(write(d, "e08.json", R"({"model": {"type": "BPE", "byte_fallback": true, "vocab": {"<0x41>": 0, "<0xG1>": 1}}})").string()); }},
        {"E09", "load tiktoken rank file", "e09.tiktoken:2", "bad base64 at column 2",
         [](const fs::path& d) { (void)bld::io::load_tiktoken(write(d, "e09.tiktoken", "IQ== 0\nS*k= 1\n").string()); }},
        {"E10", "load tiktoken rank file", "e10.tiktoken:1", "expected \"<base64> <rank>\"",
         [](const fs::path& d) { (void)bld::io::load_tiktoken(write(d, "e10.tiktoken", "SGk=\n").string()); }},
        {"E11", "build vocabulary", "token id 0", "duplicate id: both \"a\" and \"b\" claim it",
         [](const fs::path& d) { (void)bld::io::load_hf_tokenizer_json(write(d, "e11.json", R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 0}}})").string()); }},
        {"E12", "build vocabulary", "token \"neg\"", "negative id -4",
         [](const fs::path& d) { (void)bld::io::load_hf_tokenizer_json(write(d, "e12.json", R"({"model": {"type": "BPE", "vocab": {"a": 0, "neg": -4}}})").string()); }},
        {"E13", "build vocabulary", "e13.json", "the vocabulary is empty",
         [](const fs::path& d) { (void)bld::io::load_hf_tokenizer_json(write(d, "e13.json", R"({"model": {"type": "BPE", "vocab": {}}})").string()); }},
        {"E14", "load GPT-2 vocab.bpe", "vocab.bpe:3", "expected a merge",
         [](const fs::path& d) {
             fs::create_directories(d / "e14");
             write(d / "e14", "encoder.json", R"({"a": 0})");
             write(d / "e14", "vocab.bpe", "#version: 0.2\na b\nabc\n");
             (void)bld::io::load_vocabulary((d / "e14").string());
         }},
        {"E15", "build vocabulary", "token id 0", "more than the limit of 65535",
         [](const fs::path& d) {
             // A 70,000-byte token (base64 of 'a' * 70000).
             std::string raw(70000, 'a'), b64;
             const char* tbl = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
             for (std::size_t i = 0; i + 2 < raw.size(); i += 3) {
                 const unsigned v = (static_cast<unsigned char>(raw[i]) << 16) | (static_cast<unsigned char>(raw[i + 1]) << 8) | static_cast<unsigned char>(raw[i + 2]);
                 b64 += tbl[(v >> 18) & 63], b64 += tbl[(v >> 12) & 63], b64 += tbl[(v >> 6) & 63], b64 += tbl[v & 63];
             }
             b64 += "YQ=="; // the 70,000th byte
             (void)bld::io::load_tiktoken(write(d, "e15.tiktoken", b64 + " 0\n").string());
         }},
        {"E16", "load tokenizer", "e16.json", "exceeds the limit of 1073741824 bytes",
         [](const fs::path& d) {
             // A 2 GB file (sparse: nothing is written) is refused before it is read.
             const auto p = write(d, "e16.json", "{");
             fs::resize_file(p, std::uintmax_t{2} << 30);
             (void)bld::io::load_vocabulary(p.string());
         }},
        {"E17", "build vocabulary", "token \"big\"", "exceeds the limit of 67108864 ids",
         [](const fs::path& d) { (void)bld::io::load_hf_tokenizer_json(write(d, "e17.json", R"({"model": {"type": "BPE", "vocab": {"a": 0, "big": 1099511627776}}})").string()); }},
        {"E35", "build vocabulary", "token \"b\"", "the id range is more than 16 times the number of tokens",
         [](const fs::path& d) { (void)bld::io::load_hf_tokenizer_json(write(d, "e35.json", R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 50000000}}})").string()); }},
        {"E18", "read .npy", "e18.npy", "unsupported dtype",
         [](const fs::path& d) {
             std::string h = "{'descr': '<c8', 'fortran_order': False, 'shape': (1,), }";
             while ((10 + h.size() + 1) % 64) h += ' ';
             h += '\n';
             std::string f = std::string("\x93NUMPY\x01\x00", 8) + static_cast<char>(h.size()) + '\0' + h + std::string(8, '\0');
             (void)bld::io::read_npy(write(d, "e18.npy", f).string());
         }},
    };
    for (const auto& e : load_entries) expect<L>(e, dir);

    const bld::tensor_view<const float, 2> rv(rows.data(), {2, 3});
    const entry value_entries[] = {
        {"E19", "teacher row pass", "row 1, column 2", "the logit is NaN",
         [&](const fs::path&) { rows[5] = NAN; (void)bld::reference::canonical_path(trie, rv, ids); }},
        {"E20", "teacher row pass", "row 0, column 1", "+Inf",
         [&](const fs::path&) { rows[5] = 0.f; rows[1] = INFINITY; (void)bld::reference::canonical_path(trie, rv, ids); }},
        {"E21", "canonical-path projection", "token position 1", "id 9 is outside the vocabulary",
         [&](const fs::path&) { rows[1] = 0.f; const std::vector<std::int64_t> bad{1, 9}; (void)bld::reference::canonical_path(trie, rv, bad); }},
        {"E22", "canonical-path projection", "token position 0", "is a special token",
         [&](const fs::path&) { const std::vector<std::int64_t> sp{0, 1}; (void)bld::reference::canonical_path(trie, rv, sp); }},
        {"E23", "canonical-path projection", "ids", "empty text",
         [&](const fs::path&) { (void)bld::reference::canonical_path(trie, rv, std::span<const std::int64_t>()); }},
        {"E24", "covering beam", "epsilon", "must be in [0, 1)",
         [&](const fs::path&) {
             std::vector<float> table(4 * 3, 0.f);
             bld::testing::bigram_teacher t(bld::tensor_view<const float, 2>(table.data(), {4, 3}), 3);
             (void)bld::covering_beam(trie, t, "ab", {10, 2.0});
         }},
        {"E25", "top-k teacher rows", "row 0", "residual mass must be in [0, 1)",
         [&](const fs::path&) {
             const std::vector<std::int64_t> tid{1};
             const std::vector<float> tz{0.f};
             const std::vector<double> res{1.5};
             bld::topk_rows tr(trie, bld::tensor_view<const std::int64_t, 2>(tid.data(), {1, 1}), bld::tensor_view<const float, 2>(tz.data(), {1, 1}), res);
         }},
        {"E26", "exact covering", "byte offset", "covering states",
         [&](const fs::path&) {
             std::vector<float> table(4 * 3, 0.f);
             bld::testing::bigram_teacher t(bld::tensor_view<const float, 2>(table.data(), {4, 3}), 3);
             (void)bld::exact_covering(trie, t, "abab", {2});
         }},
        {"E27", "align student slots with teacher bytes", "heads", "K must be in 1..260, got 261",
         [&](const fs::path&) { (void)bld::align_slots(trie.vocab(), ids, trie.vocab(), ids, 261); }},
        {"E28", "bld::byte_loss", "token 0, head 1", "NaN",
         [&](const fs::path&) {
             std::vector<float> z(1 * 2 * 260, 0.f), p(1 * 2 * 260, 1.f / 260.f);
             z[260 + 7] = NAN;
             (void)bld::byte_loss(bld::tensor_view<const float, 3>(z.data(), {1, 2, 260}), bld::tensor_view<const float, 3>(p.data(), {1, 2, 260}), bld::no_tensor);
         }},
    };
    for (const auto& e : value_entries) expect<V>(e, dir);

    const entry shape_entries[] = {
        {"E29", "teacher row pass", "row 0", "fewer than the 3 ids",
         [&](const fs::path&) { (void)bld::reference::canonical_path(trie, bld::tensor_view<const float, 2>(rows.data(), {3, 2}), ids); }},
        {"E30", "bld::as_view", "argument `targets`", "[1, 2, 260]",
         [&](const fs::path&) {
             std::vector<float> z(1 * 2 * 260, 0.f), p(1 * 3 * 260, 0.f);
             (void)bld::byte_loss(bld::tensor_view<const float, 3>(z.data(), {1, 2, 260}), bld::tensor_view<const float, 3>(p.data(), {1, 3, 260}), bld::no_tensor);
         }},
        {"E31", "bld::as_view", "argument `mask`", "[1, 2]",
         [&](const fs::path&) {
             std::vector<float> z(1 * 2 * 260, 0.f), p(1 * 2 * 260, 0.f);
             std::vector<std::uint8_t> m(3, 1);
             (void)bld::byte_loss(bld::tensor_view<const float, 3>(z.data(), {1, 2, 260}), bld::tensor_view<const float, 3>(p.data(), {1, 2, 260}),
                                  bld::tensor_view<const std::uint8_t, 2>(m.data(), {1, 3}));
         }},
        {"E32", "bld::byte_loss", "argument `logits`", "260",
         [&](const fs::path&) {
             std::vector<float> z(1 * 2 * 259, 0.f), p(1 * 2 * 259, 0.f);
             (void)bld::byte_loss(bld::tensor_view<const float, 3>(z.data(), {1, 2, 259}), bld::tensor_view<const float, 3>(p.data(), {1, 2, 259}), bld::no_tensor);
         }},
    };
    for (const auto& e : shape_entries) expect<S>(e, dir);

    const entry align_entries[] = {
        {"E33", "canonical-path projection", "byte offset 1 (token position 1)", "differ from the text",
         [&](const fs::path&) { (void)bld::reference::canonical_path(trie, rv, ids, std::string_view("aa")); }},
        {"E34", "align student slots with teacher bytes", "text byte offset 1", "student and teacher byte streams differ",
         [&](const fs::path&) {
             const std::vector<std::int64_t> other{1, 1};
             (void)bld::align_slots(trie.vocab(), ids, trie.vocab(), other, 4);
         }},
    };
    for (const auto& e : align_entries) expect<A>(e, dir);
    std::error_code ec;
    fs::remove_all(dir, ec);
}
