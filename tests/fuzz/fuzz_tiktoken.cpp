// libFuzzer harness: tiktoken rank files, and the NAME=ID special-token syntax.
#include "fuzz_common.hpp"

#include <bld/io/tiktoken.hpp>
#include <bld/vocab/trie.hpp>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view text(reinterpret_cast<const char*>(data), size);
    bld_fuzz::guarded([&] {
        auto v = bld::io::parse_tiktoken(text, "fuzz.tiktoken", {{"<|endoftext|>", 1000}});
        bld::byte_trie trie(std::move(v));
    });
    bld_fuzz::guarded([&] { (void)bld::io::parse_special_token(text.substr(0, 64)); });
    return 0;
}
