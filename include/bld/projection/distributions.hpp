// bld/projection/ — teacher next-token rows → next-byte distributions (docs/01_method.md).
//
//  * canonical_path   — online, one teacher pass over the teacher's own tokenization (§3.1);
//  * covering_beam    — Vieira-style beam over covering token paths, teacher called for new
//                       contexts in batches (§3.2);
//  * exact_covering   — enumeration of every covering path; the oracle for the other two (§3.3);
//  * canonical_path_topk — canonical path from top-k rows with an explicit residual bucket (§3.4).
//
// Every result is a [positions, 260] array of probabilities (bytes 0..255, STOP = 256, 257..259
// reserved and zero) with, per position, the mass the method dropped or pruned.
//
// The byte-level prefix probability of x[0..i) sums over every token string that covers it: all
// tokens but the last decode to a strict prefix of x[0..i), the last runs to or past byte i.
// The next-byte distribution is P(x[0..i]·a) / P(x[0..i)); STOP carries P(x[0..i) then a special
// token) / P(x[0..i)). All encodings count, not only canonical ones.
#pragma once

#include "bld/core/alphabet.hpp"
#include "bld/core/error.hpp"
#include "bld/math/canonical_position.hpp"
#include "bld/backends/reference/row_pass.hpp"
#include "bld/core/tensor.hpp"
#include "bld/vocab/trie.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <map>
#include <numeric>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace bld {

/// Next-byte distributions for consecutive byte positions.
struct byte_distributions {
    std::size_t positions = 0;
    std::vector<double> probs;   ///< [positions, 260]
    std::vector<double> dropped; ///< [positions]: share of the conditioning mass dropped / pruned
    std::vector<double> bound;   ///< [positions]: total-variation error bound (top-k rows; else 0)
    /// covering_beam: bytes at which every kept hypothesis gave the observed byte no mass, so
    /// pruned hypotheses were brought back (the distribution at that byte gave it probability 0).
    std::size_t recoveries = 0;
    /// The covering methods and the repaired path: teacher rows (contexts) they asked for.
    std::size_t teacher_rows = 0;
    /// repaired_path: byte positions at which the local covering beam ran.
    std::size_t repaired = 0;

    [[nodiscard]] std::span<const double> at(std::size_t i) const noexcept {
        return {probs.data() + i * alphabet_size, alphabet_size};
    }
    [[nodiscard]] std::span<double> at(std::size_t i) noexcept { return {probs.data() + i * alphabet_size, alphabet_size}; }
    void resize(std::size_t n) {
        positions = n;
        probs.assign(n * alphabet_size, 0.0);
        dropped.assign(n, 0.0);
        bound.assign(n, 0.0);
    }
};

namespace detail {

/// The error of a byte position whose numerator has no mass.
[[noreturn]] inline void throw_no_mass(const char* op, std::size_t i) {
    throw value_error(op, "byte offset " + std::to_string(i),
                      "the teacher gives the text up to here no probability mass (all covering paths have "
                      "probability 0 or underflow)");
}

/// Normalises a 257-slot numerator into row i of `out` (the canonical path's root-position
/// formula, P = num / Σ num); throws if it has no mass. Leaves out.dropped alone.
inline void normalise_into(byte_distributions& out, std::size_t i, const double* num, const char* op) {
    double unused = 0.0;
    if (math::canonical_position_body(math::host_lanes{}, math::position_kind::root, math::node_sums_ref{}, num, 0.0,
                                      out.at(i).data(), &unused) != math::position_status::ok)
        throw_no_mass(op, i);
}

/// Checks that the ids are text tokens whose bytes concatenate to `text` (if given); returns the
/// concatenated bytes. Errors name the position, id and first differing byte offset.
inline std::string check_ids(const byte_trie& trie, std::span<const std::int64_t> ids,
                             std::optional<std::string_view> text, const char* op) {
    const auto& v = trie.vocab();
    if (ids.empty()) throw value_error(op, "ids", "empty text: no token ids");
    std::string bytes;
    for (std::size_t j = 0; j < ids.size(); ++j) {
        const auto id = ids[j];
        if (id < 0 || static_cast<std::uint64_t>(id) >= v.size())
            throw value_error(op, "token position " + std::to_string(j),
                              "id " + std::to_string(id) + " is outside the vocabulary of " + std::to_string(v.size()) +
                                  " ids (" + v.source() + ")");
        const auto k = v.kinds()[static_cast<std::size_t>(id)];
        if (k != token_kind::text)
            throw value_error(op, "token position " + std::to_string(j),
                              "id " + std::to_string(id) + " is a " + (k == token_kind::special ? "special" : "absent") +
                                  " token; a text's ids are its text tokens only (pass BOS and other context "
                                  "separately)");
        bytes += v.unchecked_bytes(static_cast<std::size_t>(id));
    }
    if (text && bytes != *text) {
        std::size_t d = 0;
        while (d < bytes.size() && d < text->size() && bytes[d] == (*text)[d]) ++d;
        std::size_t j = 0, o = 0;
        while (j < ids.size() && o + v.unchecked_bytes(static_cast<std::size_t>(ids[j])).size() <= d) {
            o += v.unchecked_bytes(static_cast<std::size_t>(ids[j])).size();
            ++j;
        }
        throw alignment_error(op, "byte offset " + std::to_string(d) + " (token position " + std::to_string(j) + ")",
                              "the ids' bytes (" + std::to_string(bytes.size()) + ") differ from the text (" +
                                  std::to_string(text->size()) + " bytes) first at this offset");
    }
    return bytes;
}

} // namespace detail


} // namespace bld
