// libFuzzer harness: GPT-2 encoder.json + vocab.bpe. The input is split at the first NUL byte
// into the two files.
#include "fuzz_common.hpp"

#include <bld/io/json.hpp>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view all(reinterpret_cast<const char*>(data), size);
    const auto cut = all.find('\0');
    const std::string enc(all.substr(0, cut));
    const std::string_view merges = cut == std::string_view::npos ? std::string_view() : all.substr(cut + 1);
    bld_fuzz::guarded([&] { (void)bld::io::parse_gpt2(enc, "encoder.json", merges, "vocab.bpe"); });
    return 0;
}
