// Shared test helper: locating and reading the real data scripts/fetch-data.sh fetches.
#pragma once

#include <bld/io/json.hpp>
#include <bld/io/tiktoken.hpp>
#include <doctest/doctest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace bld_test {

/// The data folder: $BLD_DATA_DIR, else the build's default. A missing folder FAILS the test
/// (the data is part of the suite): run `bash scripts/fetch-data.sh`.
inline std::string data_dir() {
    const char* env = std::getenv("BLD_DATA_DIR");
    std::string d = env && *env ? env : BLD_DATA_DIR;
    if (!std::filesystem::exists(std::filesystem::path(d) / "ref" / "MANIFEST.txt"))
        FAIL("real test data missing in " << d << ": run `bash scripts/fetch-data.sh` first");
    return d;
}

inline std::string unhex(std::string_view h) {
    std::string out;
    auto v = [](char c) { return c <= '9' ? c - '0' : c - 'a' + 10; };
    for (std::size_t i = 0; i + 1 < h.size(); i += 2) out += static_cast<char>(v(h[i]) * 16 + v(h[i + 1]));
    return out;
}

/// Splits a line at tabs.
inline std::vector<std::string_view> split_tabs(std::string_view line) {
    std::vector<std::string_view> parts;
    std::size_t start = 0;
    for (;;) {
        const auto t = line.find('\t', start);
        parts.push_back(line.substr(start, t == std::string_view::npos ? std::string_view::npos : t - start));
        if (t == std::string_view::npos) break;
        start = t + 1;
    }
    return parts;
}

inline std::vector<std::string> read_lines(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    REQUIRE_MESSAGE(f.good(), "cannot read " << path);
    std::vector<std::string> lines;
    std::string line;
    while (std::getline(f, line)) lines.push_back(line);
    return lines;
}

/// One record of <name>.encode.tsv: corpus, text bytes, the reference encoder's ids.
struct encoded_text {
    std::string corpus, text;
    std::vector<std::int64_t> ids;
};

inline std::vector<encoded_text> read_encodings(const std::string& dir, const std::string& name) {
    std::vector<encoded_text> out;
    for (const auto& line : read_lines(dir + "/ref/" + name + ".encode.tsv")) {
        const auto p = split_tabs(line);
        REQUIRE(p.size() == 3);
        encoded_text e{std::string(p[0]), unhex(p[1]), {}};
        std::size_t i = 0;
        const std::string_view ids = p[2];
        while (i < ids.size()) {
            std::size_t j = ids.find(' ', i);
            if (j == std::string_view::npos) j = ids.size();
            e.ids.push_back(std::stoll(std::string(ids.substr(i, j - i))));
            i = j + 1;
        }
        out.push_back(std::move(e));
    }
    return out;
}

/// The tokenizers the data script fetches, and how to load each.
struct real_tokenizer {
    std::string name, path;
    std::vector<bld::io::special_token> specials;
};

inline std::vector<real_tokenizer> real_tokenizers(const std::string& dir) {
    std::vector<real_tokenizer> t;
    for (const char* n : {"llama2", "llama3", "gemma3", "qwen3"})
        t.push_back({n, dir + "/tokenizers/" + n + "/tokenizer.json", {}});
    t.push_back({"gpt2", dir + "/tokenizers/gpt2", {}});
    real_tokenizer cl{"cl100k", dir + "/tokenizers/cl100k/cl100k_base.tiktoken", {}};
    for (const auto& line : read_lines(dir + "/tokenizers/cl100k/specials.txt"))
        if (!line.empty()) cl.specials.push_back(bld::io::parse_special_token(line));
    t.push_back(cl);
    return t;
}

inline bld::vocabulary load(const real_tokenizer& t) { return bld::io::load_vocabulary(t.path, {t.specials}); }

} // namespace bld_test
