// bld/core/error.hpp — the one exception family bld throws.
//
// Every error says *what* failed, *where* (file, token id, line, byte offset, row) and *why*.
// The three parts are kept separately so callers (and tests) can inspect them, and are joined
// into what() as "what: where: why".
#pragma once

#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

namespace bld {

/// Base of every exception bld throws on bad input or misuse.
class error : public std::runtime_error {
public:
    error(std::string what_part, std::string where_part, std::string why_part)
        : std::runtime_error(join(what_part, where_part, why_part)),
          what_(std::move(what_part)), where_(std::move(where_part)), why_(std::move(why_part)) {}

    /// The operation that failed, e.g. "load tokenizer.json".
    [[nodiscard]] const std::string& operation() const noexcept { return what_; }
    /// The place: file, token id, line, byte offset, row — whatever applies.
    [[nodiscard]] const std::string& location() const noexcept { return where_; }
    /// The reason.
    [[nodiscard]] const std::string& reason() const noexcept { return why_; }

private:
    static std::string join(const std::string& a, const std::string& b, const std::string& c) {
        std::string s = a;
        if (!b.empty()) { s += ": "; s += b; }
        if (!c.empty()) { s += ": "; s += c; }
        return s;
    }
    std::string what_, where_, why_;
};

/// A file (tokenizer.json, encoder.json, vocab.bpe, .tiktoken, .npy) is malformed or unsupported.
class load_error : public error { using error::error; };
/// A tensor has the wrong shape, dtype, device or layout.
class shape_error : public error { using error::error; };
/// A value is out of its domain: NaN / Inf logits, an id outside the vocabulary, bad parameters.
class value_error : public error { using error::error; };
/// Two byte streams that must agree (teacher vs student tokenization, ids vs text) differ.
class alignment_error : public error { using error::error; };

} // namespace bld
