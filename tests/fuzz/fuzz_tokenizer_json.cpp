// libFuzzer harness: HuggingFace tokenizer.json parsing (simdjson On-Demand + DOM parts).
#include "fuzz_common.hpp"

#include <bld/io/json.hpp>
#include <bld/vocab/trie.hpp>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string text(reinterpret_cast<const char*>(data), size);
    bld_fuzz::guarded([&] {
        auto v = bld::io::parse_hf_tokenizer_json(text, "fuzz.json");
        bld::byte_trie trie(std::move(v));
        bld_fuzz::require(trie.node_count() >= 1, "trie has a root");
    });
    return 0;
}
