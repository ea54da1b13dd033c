// bld/core/error.hpp — the one exception family bld throws.
//
// Every error says *what* failed, *where* (file, token id, line, byte offset, row) and *why*.
// The three parts are kept separately so callers (and tests) can inspect them, and are joined
// into what() as "what: where: why".
//
// Copying an exception must not throw (a throw while copying the exception object into
// std::exception_ptr or a catch-by-value parameter is std::terminate): the parts live in one
// immutable block that copies share, and what() is std::runtime_error's own string, which
// copies without allocating.
#pragma once

#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

namespace bld {

/// Base of every exception bld throws on bad input or misuse.
class error : public std::runtime_error {
public:
    error(std::string what_part, std::string where_part, std::string why_part)
        : std::runtime_error(join(what_part, where_part, why_part)),
          parts_(std::make_shared<const parts>(
              parts{std::move(what_part), std::move(where_part), std::move(why_part)})) {}
    // Copies share the parts; no move operations, so that no error is ever left without them.
    error(const error&) noexcept = default;
    error& operator=(const error&) noexcept = default;

    /// The operation that failed, e.g. "load tokenizer.json".
    [[nodiscard]] const std::string& operation() const noexcept { return parts_->operation; }
    /// The place: file, token id, line, byte offset, row — whatever applies.
    [[nodiscard]] const std::string& location() const noexcept { return parts_->location; }
    /// The reason.
    [[nodiscard]] const std::string& reason() const noexcept { return parts_->reason; }

private:
    struct parts {
        std::string operation, location, reason;
    };
    static std::string join(const std::string& a, const std::string& b, const std::string& c) {
        std::string s = a;
        if (!b.empty()) { s += ": "; s += b; }
        if (!c.empty()) { s += ": "; s += c; }
        return s;
    }
    std::shared_ptr<const parts> parts_;  // never null: set by the only constructor
};

/// A file (tokenizer.json, encoder.json, vocab.bpe, .tiktoken, .npy) is malformed or unsupported.
class load_error : public error { using error::error; };
/// A tensor has the wrong shape, dtype, device or layout.
class shape_error : public error { using error::error; };
/// A value is out of its domain: NaN / Inf logits, an id outside the vocabulary, bad parameters.
class value_error : public error { using error::error; };
/// Two byte streams that must agree (teacher vs student tokenization, ids vs text) differ.
class alignment_error : public error { using error::error; };

static_assert(std::is_nothrow_copy_constructible_v<error> && std::is_nothrow_copy_assignable_v<error>);
static_assert(std::is_nothrow_copy_constructible_v<load_error> && std::is_nothrow_copy_assignable_v<load_error>);
static_assert(std::is_nothrow_copy_constructible_v<shape_error> && std::is_nothrow_copy_assignable_v<shape_error>);
static_assert(std::is_nothrow_copy_constructible_v<value_error> && std::is_nothrow_copy_assignable_v<value_error>);
static_assert(std::is_nothrow_copy_constructible_v<alignment_error> &&
              std::is_nothrow_copy_assignable_v<alignment_error>);

} // namespace bld
