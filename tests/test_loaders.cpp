// Loaders on small hand-written files: what each format means, and every class of bad input.
#include <bld/bld.hpp>
#include <bld/io/json.hpp>
#include <bld/io/npy.hpp>
#include <doctest/doctest.h>

#include <filesystem>
#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

namespace {

namespace fs = std::filesystem;

/// A scratch folder for one test, removed afterwards.
struct scratch {
    fs::path dir;
    scratch() {
        dir = fs::temp_directory_path() / ("bld_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter()++));
        fs::create_directories(dir);
    }
    ~scratch() {
        std::error_code ec;
        fs::remove_all(dir, ec);
    }
    static int& counter() {
        static int c = 0;
        return c;
    }
    std::string write(const std::string& name, const std::string& text) const {
        const auto p = dir / name;
        std::ofstream(p, std::ios::binary) << text;
        return p.string();
    }
};

/// Runs f, expecting a bld::load_error; returns its message ("no error" otherwise).
template <class F>
std::string load_error_of(F&& f) {
    try {
        f();
    } catch (const bld::load_error& e) {
        return e.what();
    } catch (const std::exception& e) {
        return std::string("wrong exception type: ") + e.what();
    }
    return "no error";
}

bool has(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// A small SentencePiece-style BPE tokenizer.json: ▁ for space, byte fallback, a duplicate
// (`A` and `<0x41>`), the Llama-2 normaliser (Prepend ▁) and decoder chain, added tokens.
const char* sp_json = R"({
  "version": "1.0",
  "added_tokens": [
    {"id": 0, "content": "<unk>", "special": true},
    {"id": 1, "content": "<s>", "special": true},
    {"id": 9, "content": "▁▁", "special": false},
    {"id": 10, "content": "<extra>", "special": false}
  ],
  "normalizer": {"type": "Sequence", "normalizers": [
    {"type": "Prepend", "prepend": "▁"}, {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
  "pre_tokenizer": null,
  "decoder": {"type": "Sequence", "decoders": [
    {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
    {"type": "ByteFallback"}, {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
  "model": {"type": "BPE", "byte_fallback": true, "vocab": {
    "<unk>": 0, "<s>": 1, "<0x41>": 2, "<0xE2>": 3, "A": 4, "▁A": 5, "▁": 6, "é": 7, "\u00e9t\u00e9": 8},
    "merges": ["▁ A"]}
})";

} // namespace

TEST_CASE("tokenizer.json: SentencePiece-style BPE with byte fallback, duplicates, added tokens") {
    scratch s;
    const auto path = s.write("tokenizer.json", sp_json);
    const auto v = bld::io::load_hf_tokenizer_json(path);
    CHECK(v.size() == 11);
    CHECK(v.is_special(0));
    CHECK(v.is_special(1));
    CHECK(v.bytes(2) == "A");        // <0x41> is the byte 'A'
    CHECK(v.bytes(3) == "\xE2");     // a lone byte
    CHECK(v.bytes(4) == "A");        // duplicate of id 2, kept
    CHECK(v.bytes(5) == " A");       // ▁ is a space
    CHECK(v.bytes(6) == " ");
    CHECK(v.bytes(7) == "\xC3\xA9"); // é as UTF-8
    CHECK(v.bytes(8) == "\xC3\xA9t\xC3\xA9");
    CHECK(v.bytes(9) == "  ");       // an added ▁▁ is two spaces
    CHECK(v.bytes(10) == "<extra>"); // non-special added token: text
    CHECK(v.duplicate_ids() == std::vector<std::uint32_t>{4});
    CHECK(v.transformations().dummy_prefix == bld::dummy_prefix_rule::always);
    CHECK(v.transformations().encoded_bytes("hi") == " hi");
    CHECK(v.find_special("<s>") == 1);
}

TEST_CASE("tokenizer.json: byte-level BPE (GPT-2 map), special and added tokens, NFC reported") {
    scratch s;
    // Ġ (U+0120) is the space byte, Ċ (U+010A) the newline, Ā (U+0100) the byte 0x00;
    // "Ã©" are the two bytes of é.
    const auto path = s.write("tokenizer.json", R"({
      "added_tokens": [{"id": 5, "content": "<|end|>", "special": true},
                       {"id": 6, "content": "<tool call>", "special": false}],
      "normalizer": {"type": "NFC"},
      "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false},
      "decoder": {"type": "ByteLevel"},
      "model": {"type": "BPE", "vocab": {"ĠHello": 0, "Ċ": 1, "Ā": 2, "Ã©": 3, "!": 4}, "merges": []}
    })");
    const auto v = bld::io::load_hf_tokenizer_json(path);
    CHECK(v.bytes(0) == " Hello");
    CHECK(v.bytes(1) == "\n");
    CHECK(v.bytes(2) == std::string_view("\0", 1));
    CHECK(v.bytes(3) == "\xC3\xA9");
    CHECK(v.bytes(4) == "!");
    CHECK(v.is_special(5));
    CHECK(v.bytes(6) == "<tool call>"); // a space is outside the map: kept as UTF-8, as HF does
    CHECK(v.transformations().normalizer == "NFC");
    CHECK(v.transformations().dummy_prefix == bld::dummy_prefix_rule::none);
}

TEST_CASE("tokenizer.json: Unigram with Metaspace") {
    scratch s;
    const auto path = s.write("tokenizer.json", R"({
      "added_tokens": [{"id": 0, "content": "<pad>", "special": true}],
      "pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always"},
      "decoder": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always"},
      "model": {"type": "Unigram", "unk_id": 1, "vocab": [["<pad>", 0.0], ["<unk>", 0.0], ["▁the", -1.5], ["s", -2.0]]}
    })");
    const auto v = bld::io::load_hf_tokenizer_json(path);
    CHECK(v.size() == 4);
    CHECK(v.is_special(0));
    CHECK(v.bytes(1) == "<unk>"); // not marked special in this file: plain text
    CHECK(v.bytes(2) == " the");
    CHECK(v.bytes(3) == "s");
    CHECK(v.transformations().dummy_prefix == bld::dummy_prefix_rule::if_absent);
    CHECK(v.transformations().encoded_bytes(" x") == " x");
    CHECK(v.transformations().encoded_bytes("x") == " x");
}

TEST_CASE("GPT-2 encoder.json + vocab.bpe and tiktoken rank files") {
    scratch s;
    s.write("encoder.json", R"({"!": 0, "ĠHi": 1, "<|endoftext|>": 2})");
    s.write("vocab.bpe", "#version: 0.2\nĠ H\nĠH i\n");
    const auto v = bld::io::load_vocabulary(s.dir.string());
    CHECK(v.bytes(1) == " Hi");
    CHECK(v.is_special(2));
    const auto tk = s.write("x.tiktoken", "IQ== 0\nSGk= 1\nIEhp 3\n");
    const auto t = bld::io::load_vocabulary(tk, {{{"<|endoftext|>", 4}}});
    CHECK(t.size() == 5);
    CHECK(t.bytes(0) == "!");
    CHECK(t.bytes(1) == "Hi");
    CHECK(t.kind(2) == bld::token_kind::absent);
    CHECK(t.bytes(3) == " Hi");
    CHECK(t.is_special(4));
}

TEST_CASE("bad input: every class is a load_error naming file, token and reason") {
    scratch s;
    SUBCASE("missing file and folder without tokenizer") {
        const auto m = load_error_of([&] { (void)bld::io::load_vocabulary((s.dir / "nope.json").string()); });
        CHECK(has(m, "nope.json"));
        CHECK(has(m, "no such file"));
        CHECK(has(load_error_of([&] { (void)bld::io::load_vocabulary(s.dir.string()); }), "without tokenizer.json"));
    }
    SUBCASE("malformed JSON: the location of the syntax error") {
        const auto p = s.write("t.json", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0,, \"b\": 1}}}");
        const auto m = load_error_of([&] { (void)bld::io::load_hf_tokenizer_json(p); });
        CHECK(has(m, "t.json"));
        CHECK(has(m, "line 1, column 44 (byte 43)"));
        CHECK(has(m, "not valid JSON"));
    }
    SUBCASE("truncated JSON") {
        std::string text = sp_json;
        const auto p = s.write("t.json", text.substr(0, text.size() / 2));
        const auto m = load_error_of([&] { (void)bld::io::load_hf_tokenizer_json(p); });
        CHECK(has(m, "t.json"));
        CHECK(has(m, "truncated"));
    }
    SUBCASE("unknown model type") {
        const auto p = s.write("t.json", R"({"model": {"type": "WordPiece", "vocab": {"a": 0}}})");
        const auto m = load_error_of([&] { (void)bld::io::load_hf_tokenizer_json(p); });
        CHECK(has(m, "t.json: model"));
        CHECK(has(m, "unsupported model type \"WordPiece\""));
    }
    SUBCASE("unknown decoder type") {
        const auto p = s.write("t.json", R"({"decoder": {"type": "CTC"}, "model": {"type": "BPE", "vocab": {"a": 0}}})");
        const auto m = load_error_of([&] { (void)bld::io::load_hf_tokenizer_json(p); });
        CHECK(has(m, "t.json: decoder"));
        CHECK(has(m, "unsupported decoder type \"CTC\""));
    }
    SUBCASE("a character outside the GPT-2 map (tokenizer.json and encoder.json)") {
        const auto p = s.write("t.json", R"({"decoder": {"type": "ByteLevel"}, "model": {"type": "BPE", "vocab": {"ok": 0, "a b": 1}}})");
        const auto m = load_error_of([&] { (void)bld::io::load_hf_tokenizer_json(p); });
        CHECK(has(m, "t.json: token id 1 \"a b\""));
        CHECK(has(m, "U+0020"));
        CHECK(has(m, "outside the GPT-2 byte-level alphabet"));
        s.write("encoder.json", R"({"a": 0, "€": 1})");
        s.write("vocab.bpe", "#version: 0.2\n");
        const auto m2 = load_error_of([&] { (void)bld::io::load_vocabulary(s.dir.string()); });
        CHECK(has(m2, "encoder.json: token id 1"));
        CHECK(has(m2, "U+20AC"));
    }
    SUBCASE("a bad <0xNN> byte-fallback piece") {
        const auto p = s.write("t.json", R"({"decoder": {"type": "ByteFallback"}, "model": {"type": "BPE", "byte_fallback": true, "vocab": {"<0x41>": 0, "<0xG1>": 1}}})");
        const auto m = load_error_of([&] { (void)bld::io::load_hf_tokenizer_json(p); });
        CHECK(has(m, "token id 1 \"<0xG1>\""));
        CHECK(has(m, "malformed byte-fallback piece"));
        const auto p2 = s.write("t2.json", R"({"model": {"type": "BPE", "byte_fallback": true, "vocab": {"<0x4>": 0}}})");
        CHECK(has(load_error_of([&] { (void)bld::io::load_hf_tokenizer_json(p2); }), "malformed byte-fallback piece"));
    }
    SUBCASE("bad base64 and bad lines in a tiktoken file") {
        const auto p = s.write("bad.tiktoken", "IQ== 0\nS*k= 1\n");
        const auto m = load_error_of([&] { (void)bld::io::load_tiktoken(p); });
        CHECK(has(m, "bad.tiktoken:2"));
        CHECK(has(m, "bad base64 at column 2"));
        const auto p2 = s.write("bad2.tiktoken", "IQ== 0\nSGk=\n");
        CHECK(has(load_error_of([&] { (void)bld::io::load_tiktoken(p2); }), "bad2.tiktoken:2: expected"));
        const auto p3 = s.write("bad3.tiktoken", "IQ== zero\n");
        CHECK(has(load_error_of([&] { (void)bld::io::load_tiktoken(p3); }), "is not an integer"));
    }
    SUBCASE("duplicate ids") {
        const auto p = s.write("t.json", R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 0}}})");
        const auto m = load_error_of([&] { (void)bld::io::load_hf_tokenizer_json(p); });
        CHECK(has(m, "t.json: token id 0"));
        CHECK(has(m, "duplicate id"));
        CHECK(has(m, "\"a\""));
        CHECK(has(m, "\"b\""));
        const auto p2 = s.write("d.tiktoken", "IQ== 0\nSGk= 0\n");
        CHECK(has(load_error_of([&] { (void)bld::io::load_tiktoken(p2); }), "duplicate id: both \"line 1\" and \"line 2\""));
        const auto p3 = s.write("t3.json", R"({"added_tokens": [{"id": 1, "content": "<x>", "special": false}], "model": {"type": "BPE", "vocab": {"a": 0, "b": 1}}})");
        CHECK(has(load_error_of([&] { (void)bld::io::load_hf_tokenizer_json(p3); }), "duplicate id: model token \"b\" and added token \"<x>\""));
    }
    SUBCASE("negative and non-integer ids") {
        const auto p = s.write("t.json", R"({"model": {"type": "BPE", "vocab": {"a": 0, "neg": -4}}})");
        const auto m = load_error_of([&] { (void)bld::io::load_hf_tokenizer_json(p); });
        CHECK(has(m, "token \"neg\""));
        CHECK(has(m, "negative id -4"));
        const auto p2 = s.write("t2.json", R"({"model": {"type": "BPE", "vocab": {"a": 0, "f": 1.5}}})");
        CHECK(has(load_error_of([&] { (void)bld::io::load_hf_tokenizer_json(p2); }), "token \"f\": the id is not an integer"));
        const auto p3 = s.write("n.tiktoken", "IQ== -1\n");
        CHECK(has(load_error_of([&] { (void)bld::io::load_tiktoken(p3); }), "negative rank -1"));
    }
    SUBCASE("an empty vocabulary") {
        const auto p = s.write("t.json", R"({"model": {"type": "BPE", "vocab": {}}})");
        CHECK(has(load_error_of([&] { (void)bld::io::load_hf_tokenizer_json(p); }), "t.json: the vocabulary is empty"));
        const auto p2 = s.write("e.tiktoken", "\n\n");
        CHECK(has(load_error_of([&] { (void)bld::io::load_tiktoken(p2); }), "e.tiktoken: the vocabulary is empty"));
    }
    SUBCASE("wrong JSON shapes") {
        const auto p = s.write("t.json", R"([1, 2])");
        CHECK(has(load_error_of([&] { (void)bld::io::load_hf_tokenizer_json(p); }), "t.json"));
        const auto p2 = s.write("t2.json", R"({"version": "1"})");
        CHECK(has(load_error_of([&] { (void)bld::io::load_hf_tokenizer_json(p2); }), "missing the \"model\" object"));
        const auto p3 = s.write("t3.json", R"({"model": {"type": "Unigram", "vocab": [["a", 0], [3, 1]]}})");
        CHECK(has(load_error_of([&] { (void)bld::io::load_hf_tokenizer_json(p3); }), "token id 1: a Unigram vocab entry must be [piece, score]"));
        const auto p4 = s.write("t4.json", R"({"decoder": {"type": "Replace", "pattern": {"Regex": "x"}, "content": "y"}, "model": {"type": "BPE", "vocab": {"a": 0}}})");
        CHECK(has(load_error_of([&] { (void)bld::io::load_hf_tokenizer_json(p4); }), "Regex pattern"));
    }
    SUBCASE("vocab.bpe lines") {
        s.write("encoder.json", R"({"a": 0})");
        s.write("vocab.bpe", "#version: 0.2\na b\nabc\n");
        const auto m = load_error_of([&] { (void)bld::io::load_vocabulary(s.dir.string()); });
        CHECK(has(m, "vocab.bpe:3"));
        CHECK(has(m, "expected a merge"));
    }
}

namespace {

/// A .npy file with the given header dictionary and data, padded as NumPy pads it (version 1:
/// 2-byte header length; version 2: 4-byte). The header length can be overridden to lie.
std::string npy_bytes(const std::string& dict, const std::string& data, int version = 1, long long header_len = -1) {
    const std::size_t prefix = version == 1 ? 10 : 12;
    std::string h = dict;
    while ((prefix + h.size() + 1) % 64 != 0) h += ' ';
    h += '\n';
    const auto len = static_cast<unsigned long long>(header_len >= 0 ? header_len : static_cast<long long>(h.size()));
    std::string f("\x93NUMPY", 6);
    f += static_cast<char>(version);
    f += '\0';
    for (std::size_t k = 0; k < (version == 1 ? 2u : 4u); ++k) f += static_cast<char>((len >> (8 * k)) & 0xFF);
    return f + h + data;
}

std::string npy_dict(const std::string& descr, const std::string& shape) {
    return "{'descr': '" + descr + "', 'fortran_order': False, 'shape': " + shape + ", }";
}

}  // namespace

TEST_CASE("npy: round trip, and every crafted header is a load_error naming file, field and reason") {
    scratch s;
    SUBCASE("round trip through write_npy, versions 1 and 2, int32") {
        const std::vector<double> x{1.5, -2.0, 3.25, 0.0, 1e300, -1e-300};
        const auto p = (s.dir / "x.npy").string();
        bld::io::write_npy(p, x.data(), {2, 3});
        const auto a = bld::io::read_npy(p);
        CHECK(a.descr == "<f8");
        CHECK(a.shape == std::vector<std::int64_t>{2, 3});
        CHECK(a.as<double>() == x);
        const std::int32_t ints[3] = {7, -1, 40000};
        const auto p2 = s.write("v2.npy", npy_bytes(npy_dict("<i4", "(3,)"), std::string(reinterpret_cast<const char*>(ints), 12), 2));
        CHECK(bld::io::read_npy(p2).as<std::int64_t>() == std::vector<std::int64_t>{7, -1, 40000});
        const auto p3 = s.write("empty.npy", npy_bytes(npy_dict("<f4", "(0, 5)"), ""));
        CHECK(bld::io::read_npy(p3).as<float>().empty());
    }
    SUBCASE("a dimension beyond 2^63 - 1 (the shape accumulator)") {
        const auto p = s.write("huge.npy", npy_bytes(npy_dict("<f4", "(99999999999999999999,)"), ""));
        const auto m = load_error_of([&] { (void)bld::io::read_npy(p); });
        CHECK(has(m, "huge.npy, header field 'shape'"));
        CHECK(has(m, "dimension 0 (99999999999999999999) exceeds 2^63 - 1"));
        const auto p2 = s.write("huge2.npy", npy_bytes(npy_dict("<f4", "(2, 9223372036854775808)"), ""));
        CHECK(has(load_error_of([&] { (void)bld::io::read_npy(p2); }), "dimension 1 (9223372036854775808) exceeds"));
    }
    SUBCASE("a product of dimensions that overflows (would wrap to a size the data matches)") {
        // 2^32 · 2^32 = 2^64 wraps to 0 in 64 bits: an empty data section would "match".
        const auto p = s.write("prod.npy", npy_bytes(npy_dict("<f4", "(4294967296, 4294967296)"), ""));
        const auto m = load_error_of([&] { (void)bld::io::read_npy(p); });
        CHECK(has(m, "prod.npy, header field 'shape'"));
        CHECK(has(m, "element count of shape (4294967296, 4294967296) exceeds 2^63 - 1"));
        // 2^61 elements fit in int64, but 2^61 · 8 bytes = 2^64 wraps to 0 as well.
        const auto p2 = s.write("bytes.npy", npy_bytes(npy_dict("<f8", "(2305843009213693952,)"), ""));
        const auto m2 = load_error_of([&] { (void)bld::io::read_npy(p2); });
        CHECK(has(m2, "bytes.npy, header field 'shape'"));
        CHECK(has(m2, "needs more bytes than fit in memory"));
        // A large product that does not overflow still has to match the data.
        const auto p3 = s.write("big.npy", npy_bytes(npy_dict("<i8", "(65536, 65536)"), std::string(8, '\0')));
        CHECK(has(load_error_of([&] { (void)bld::io::read_npy(p3); }), "data has 8 bytes, the header's shape needs 34359738368"));
    }
    SUBCASE("negative and non-numeric dimensions") {
        const auto p = s.write("neg.npy", npy_bytes(npy_dict("<f4", "(3, -2)"), ""));
        const auto m = load_error_of([&] { (void)bld::io::read_npy(p); });
        CHECK(has(m, "neg.npy, header field 'shape'"));
        CHECK(has(m, "dimension 1 is not a non-negative integer: '-2'"));
        const auto p2 = s.write("nan.npy", npy_bytes(npy_dict("<f4", "(x,)"), ""));
        CHECK(has(load_error_of([&] { (void)bld::io::read_npy(p2); }), "dimension 0 is not a non-negative integer: 'x'"));
        const auto p3 = s.write("gap.npy", npy_bytes(npy_dict("<f4", "(2,,3)"), std::string(24, '\0')));
        CHECK(has(load_error_of([&] { (void)bld::io::read_npy(p3); }), "dimension 1 is not a non-negative integer: ''"));
        const auto p4 = s.write("open.npy", npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3", ""));
        CHECK(has(load_error_of([&] { (void)bld::io::read_npy(p4); }), "unterminated tuple"));
    }
    SUBCASE("a header length beyond the end of the file") {
        const auto p = s.write("trunc1.npy", npy_bytes(npy_dict("<f4", "(1,)"), "", 1, 0xFFFF));
        const auto m = load_error_of([&] { (void)bld::io::read_npy(p); });
        CHECK(has(m, "trunc1.npy"));
        CHECK(has(m, "truncated header"));
        const auto p2 = s.write("trunc2.npy", npy_bytes(npy_dict("<f4", "(1,)"), "", 2, 0xFFFFFFFFLL));
        CHECK(has(load_error_of([&] { (void)bld::io::read_npy(p2); }), "truncated header"));
        const auto p3 = s.write("short.npy", std::string("\x93NUMPY\x02\x00\x10\x00", 10));
        CHECK(has(load_error_of([&] { (void)bld::io::read_npy(p3); }), "truncated header"));
    }
    SUBCASE("dtypes: only the four the reader converts; uint8 and bool masks are refused") {
        for (const char* d : {"|u1", "|b1", ">f4", "<f2", "<u4"}) {
            const auto p = s.write("d.npy", npy_bytes(npy_dict(d, "(4,)"), std::string(16, '\0')));
            const auto m = load_error_of([&] { (void)bld::io::read_npy(p); });
            CHECK_MESSAGE(has(m, "d.npy, header field 'descr'"), std::string(d));
            CHECK_MESSAGE(has(m, std::string("unsupported dtype ") + d), std::string(d));
        }
        const auto p = s.write("q.npy", npy_bytes("{'descr': \"<f4, 'fortran_order': False, 'shape': (1,), }", ""));
        CHECK(has(load_error_of([&] { (void)bld::io::read_npy(p); }), "unterminated dtype string"));
    }
    SUBCASE("as<T>() refuses data that does not match a hand-built array's shape") {
        bld::io::npy_array a;
        a.descr = "<f8";
        a.shape = {4};
        a.data = std::string(8, '\0');
        CHECK_THROWS_AS((void)a.as<double>(), bld::value_error);
        a.shape = {1};
        a.descr = "|u1";
        CHECK_THROWS_AS((void)a.as<double>(), bld::value_error);
    }
}
