// bld/io/tiktoken.hpp — tiktoken rank files: one token per line, `<base64 bytes> <rank>`;
// the rank is the token id. Special tokens are not in the file; the caller names them.
#pragma once

#include "bld/core/error.hpp"
#include "bld/io/file.hpp"
#include "bld/io/text_codec.hpp"
#include "bld/vocab/vocabulary.hpp"

#include <charconv>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace bld::io {

/// A special token given by the caller: name and id (e.g. {"<|endoftext|>", 100257}).
struct special_token {
    std::string name;
    std::int64_t id = 0;
};

/// Parses a special-token argument "NAME=ID".
/// @throws bld::value_error for a missing '=' or a bad id.
[[nodiscard]] inline special_token parse_special_token(std::string_view arg) {
    const auto eq = arg.rfind('=');
    if (eq == std::string_view::npos || eq == 0)
        throw value_error("parse special token", std::string(arg), "expected NAME=ID");
    std::int64_t id = 0;
    const auto idstr = arg.substr(eq + 1);
    const auto [p, ec] = std::from_chars(idstr.data(), idstr.data() + idstr.size(), id);
    if (ec != std::errc{} || p != idstr.data() + idstr.size() || id < 0)
        throw value_error("parse special token", std::string(arg),
                          "the id \"" + std::string(idstr) + "\" is not a non-negative integer");
    return {std::string(arg.substr(0, eq)), id};
}

/// Parses tiktoken rank-file text. `source` names the file in error messages.
/// @throws bld::load_error naming the source, the line and the reason.
[[nodiscard]] inline vocabulary parse_tiktoken(std::string_view text, const std::string& source,
                                              const std::vector<special_token>& specials = {}) {
    const std::string op = "load tiktoken rank file";
    std::vector<token_entry> entries;
    entries.reserve(text.size() / 12);
    std::size_t line_no = 0;
    for (std::size_t pos = 0; pos < text.size();) {
        auto end = text.find('\n', pos);
        if (end == std::string_view::npos) end = text.size();
        std::string_view line = text.substr(pos, end - pos);
        pos = end + 1;
        ++line_no;
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
        if (line.empty()) continue;
        const std::string where = source + ":" + std::to_string(line_no);
        const auto sp = line.find(' ');
        if (sp == std::string_view::npos || line.find(' ', sp + 1) != std::string_view::npos)
            throw load_error(op, where, "expected \"<base64> <rank>\", got \"" + printable(line) + "\"");
        std::size_t bad = 0;
        auto bytes = decode_base64(line.substr(0, sp), &bad);
        if (!bytes)
            throw load_error(op, where, "bad base64 at column " + std::to_string(bad + 1) + " in \"" +
                                            printable(line.substr(0, sp)) + "\"");
        std::int64_t rank = 0;
        const auto r = line.substr(sp + 1);
        const auto [p, ec] = std::from_chars(r.data(), r.data() + r.size(), rank);
        if (ec != std::errc{} || p != r.data() + r.size())
            throw load_error(op, where, "the rank \"" + printable(r) + "\" is not an integer");
        if (rank < 0) throw load_error(op, where, "negative rank " + std::to_string(rank));
        if (bytes->empty()) throw load_error(op, where, "a token with no bytes");
        entries.push_back({rank, std::move(*bytes), token_kind::text, "line " + std::to_string(line_no)});
    }
    for (const auto& s : specials) entries.push_back({s.id, {}, token_kind::special, s.name});
    text_transformations t;
    t.notes.push_back("tiktoken: token bytes are given directly (base64); no text transformations");
    return vocabulary::from_entries(std::move(entries), source, std::move(t));
}

/// Loads a tiktoken rank file.
[[nodiscard]] inline vocabulary load_tiktoken(const std::string& path,
                                             const std::vector<special_token>& specials = {}) {
    return parse_tiktoken(read_file(path, "load tiktoken rank file"), path, specials);
}

} // namespace bld::io
