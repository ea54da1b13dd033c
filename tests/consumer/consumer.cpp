// A project that uses bld the way a stranger would: through <bld/bld.hpp>, the optional
// <bld/io/json.hpp> (which must bring simdjson's headers *and* its library along), and the
// bld::bld / bld::json targets. Returns 0 only when the results are the known ones.
#include <bld/bld.hpp>
#include <bld/io/json.hpp>

#include <cstdio>
#include <exception>
#include <string>
#include <vector>

namespace {

int failures = 0;

void expect(bool ok, const char* what) {
    if (!ok) {
        std::fprintf(stderr, "bld consumer: FAILED: %s\n", what);
        ++failures;
    }
}

} // namespace

int main() {
    try {
        // Text tokens "a", "ab", "abc", "b" (twice: a duplicate) and one special token. Distinct
        // byte prefixes of the text tokens: "", "a", "ab", "abc", "b" -> 5 trie nodes.
        std::vector<bld::token_entry> entries;
        entries.push_back({0, "", bld::token_kind::special, "<s>"});
        entries.push_back({1, "ab", bld::token_kind::text, "ab"});
        entries.push_back({2, "a", bld::token_kind::text, "a"});
        entries.push_back({3, "abc", bld::token_kind::text, "abc"});
        entries.push_back({4, "b", bld::token_kind::text, "b"});
        entries.push_back({5, "b", bld::token_kind::text, "<0x62>"});
        bld::byte_trie trie(bld::vocabulary::from_entries(std::move(entries), "consumer"));
        expect(trie.vocab().size() == 6, "vocabulary size 6");
        expect(trie.vocab().text_tokens() == 5, "5 text tokens");
        expect(trie.node_count() == 5, "trie of 5 nodes");
        expect(trie.order().size() == 5, "order() holds the 5 text tokens");
        expect(trie.memory_bytes() > 0, "memory_bytes() > 0");

        // The JSON loader: simdjson's compiled part must link (find_dependency in bldConfig).
        const auto v = bld::io::parse_hf_tokenizer_json(
            R"({"added_tokens": [{"id": 3, "content": "<|end|>", "special": true}],
                "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false},
                "decoder": {"type": "ByteLevel"},
                "model": {"type": "BPE", "vocab": {"a": 0, "ab": 1, "\u0120b": 2}, "merges": []}})",
            "consumer tokenizer.json");
        expect(v.size() == 4, "tokenizer.json: 4 ids");
        expect(v.bytes(2) == " b", "tokenizer.json: byte-level decoding of id 2");
        expect(v.is_special(3), "tokenizer.json: id 3 is special");
        expect(bld::byte_trie(v).node_count() == 5, "tokenizer.json trie: \"\", a, ab, \" \", \" b\"");
    } catch (const std::exception& e) {
        std::fprintf(stderr, "bld consumer: exception: %s\n", e.what());
        return 1;
    }
    if (failures == 0) std::printf("bld consumer: OK\n");
    return failures == 0 ? 0 : 1;
}
