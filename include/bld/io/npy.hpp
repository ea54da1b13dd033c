// bld/io/npy.hpp — reading and writing NumPy .npy arrays (format versions 1–3, C order,
// little-endian float32 / float64 / int32 / int64). Used by bld-cli; no dependencies.
//
// The reader trusts nothing in the file: the header length, every shape dimension, the
// element count and the byte size are range-checked before use (a crafted header must end in
// a load_error, not in an overflowed size or a read past the data), and the dtype must be one
// of the four the reader converts.
#pragma once

#include "bld/core/error.hpp"
#include "bld/io/file.hpp"

#include <cstdint>
#include <cstring>
#include <fstream>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

namespace bld::io {

namespace detail {

/// Bytes per element of a supported dtype descriptor; 0 for any other.
[[nodiscard]] constexpr std::size_t npy_element_size(std::string_view descr) noexcept {
    if (descr == "<f4" || descr == "<i4") return 4;
    if (descr == "<f8" || descr == "<i8") return 8;
    return 0;
}

/// Π shape, or nullopt if a dimension is negative or the product exceeds 2^63 − 1.
[[nodiscard]] constexpr std::optional<std::int64_t> npy_checked_count(std::span<const std::int64_t> shape) noexcept {
    std::int64_t n = 1;
    for (const std::int64_t d : shape) {
        if (d < 0) return std::nullopt;
        if (d != 0 && n > std::numeric_limits<std::int64_t>::max() / d) return std::nullopt;
        n *= d;
    }
    return n;
}

/// n · element size in bytes, or nullopt if it exceeds what a std::size_t (and a file) holds.
[[nodiscard]] constexpr std::optional<std::size_t> npy_checked_bytes(std::int64_t n, std::size_t esize) noexcept {
    const auto un = static_cast<std::uint64_t>(n);
    if (esize != 0 && un > std::numeric_limits<std::size_t>::max() / esize) return std::nullopt;
    return static_cast<std::size_t>(un) * esize;
}

[[nodiscard]] inline std::string npy_shape_string(std::span<const std::int64_t> shape) {
    std::string s = "(";
    for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
    return s + (shape.size() == 1 ? ",)" : ")");
}

/// The header dictionary's text and where the data starts.
struct npy_preamble {
    std::string_view header;
    std::size_t data_offset = 0;
};

/// Magic, version, header length (2 bytes in version 1, 4 in versions 2 and 3).
[[nodiscard]] inline npy_preamble read_npy_preamble(std::string_view f, const std::string& op, const std::string& name) {
    if (f.size() < 10 || f.substr(0, 6) != "\x93NUMPY") throw load_error(op, name, "not a .npy file (bad magic)");
    const auto byte = [&](std::size_t i) { return static_cast<std::size_t>(static_cast<unsigned char>(f[i])); };
    const std::size_t major = byte(6);
    std::size_t hlen = 0, hstart = 0;
    if (major == 1) {
        hlen = byte(8) | (byte(9) << 8);
        hstart = 10;
    } else if (major == 2 || major == 3) {
        if (f.size() < 12) throw load_error(op, name, "truncated header (the 4-byte header length is cut off)");
        for (std::size_t k = 0; k < 4; ++k) hlen |= byte(8 + k) << (8 * k);
        hstart = 12;
    } else {
        throw load_error(op, name, "unsupported .npy format version " + std::to_string(major));
    }
    if (hlen > f.size() - hstart)
        throw load_error(op, name, "truncated header: the header length " + std::to_string(hlen) + " runs past the end of the " +
                                       std::to_string(f.size()) + "-byte file");
    return {f.substr(hstart, hlen), hstart + hlen};
}

/// The text after `'key':` in the header dictionary (leading spaces skipped).
[[nodiscard]] inline std::string_view npy_field(std::string_view header, std::string_view key, const std::string& op,
                                                const std::string& name) {
    const auto k = header.find(key);
    if (k == std::string_view::npos) throw load_error(op, name, "header without " + std::string(key));
    auto v = header.substr(k + key.size());
    const auto colon = v.find(':');
    if (colon == std::string_view::npos)
        throw load_error(op, name + ", header field " + std::string(key), "no ':' after the key");
    v = v.substr(colon + 1);
    while (!v.empty() && v.front() == ' ') v.remove_prefix(1);
    return v;
}

/// 'descr': a quoted dtype descriptor, one of the four the reader converts.
[[nodiscard]] inline std::string npy_descr(std::string_view header, const std::string& op, const std::string& name) {
    const std::string where = name + ", header field 'descr'";
    const auto d = npy_field(header, "'descr'", op, name);
    if (d.empty() || (d.front() != '\'' && d.front() != '"')) throw load_error(op, where, "not a quoted dtype string");
    const auto close = d.find(d.front(), 1);
    if (close == std::string_view::npos) throw load_error(op, where, "unterminated dtype string");
    std::string descr(d.substr(1, close - 1));
    if (npy_element_size(descr) == 0) {
        // uint8 / bool (masks) included: as<T>() converts only these four, so the reader refuses
        // the rest here rather than misreading them later.
        throw load_error(op, where, "unsupported dtype " + descr +
                                        " (use float32, float64, int32 or int64, little-endian)");
    }
    return descr;
}

/// 'shape': a tuple of non-negative decimal integers, each at most 2^63 − 1.
[[nodiscard]] inline std::vector<std::int64_t> npy_shape(std::string_view header, const std::string& op,
                                                         const std::string& name) {
    const std::string where = name + ", header field 'shape'";
    auto s = npy_field(header, "'shape'", op, name);
    if (s.empty() || s.front() != '(') throw load_error(op, where, "not a tuple");
    const auto close = s.find(')');
    if (close == std::string_view::npos) throw load_error(op, where, "unterminated tuple (no ')')");
    std::string_view rest = s.substr(1, close - 1);
    std::vector<std::int64_t> shape;
    constexpr auto max = std::numeric_limits<std::int64_t>::max();
    while (true) {
        while (!rest.empty() && rest.front() == ' ') rest.remove_prefix(1);
        if (rest.empty()) break;
        const auto comma = rest.find(',');
        std::string_view item = rest.substr(0, comma);
        while (!item.empty() && item.back() == ' ') item.remove_suffix(1);
        const std::string dim = "dimension " + std::to_string(shape.size());
        if (item.empty() || item.find_first_not_of("0123456789") != std::string_view::npos)
            throw load_error(op, where, dim + " is not a non-negative integer: '" + std::string(item) + "'");
        std::int64_t val = 0;
        for (const char c : item) {
            const int digit = c - '0';
            if (val > (max - digit) / 10)
                throw load_error(op, where, dim + " (" + std::string(item) + ") exceeds 2^63 - 1");
            val = val * 10 + digit;
        }
        shape.push_back(val);
        if (comma == std::string_view::npos) break;
        rest.remove_prefix(comma + 1);
    }
    return shape;
}

}  // namespace detail

/// An array read from a .npy file: dtype descriptor ("<f4", "<f8", "<i4", "<i8"), shape, and
/// the raw little-endian data.
struct npy_array {
    std::string descr;
    std::vector<std::int64_t> shape;
    std::string data;

    /// Π shape. @pre the product fits in std::int64_t (true for every array read_npy returns).
    [[nodiscard]] std::int64_t count() const noexcept {
        std::int64_t n = 1;
        for (auto s : shape) n *= s;
        return n;
    }
    /// The elements converted to T (from any supported dtype).
    /// @throws bld::value_error if descr is unsupported or data does not hold Π shape elements.
    template <class T>
    [[nodiscard]] std::vector<T> as() const {
        const std::size_t esize = detail::npy_element_size(descr);
        if (esize == 0) throw value_error("convert .npy array", "dtype " + descr, "unsupported dtype");
        const auto n = detail::npy_checked_count(shape);
        const auto bytes = n ? detail::npy_checked_bytes(*n, esize) : std::nullopt;
        if (!bytes || *bytes != data.size())
            throw value_error("convert .npy array", "shape " + detail::npy_shape_string(shape),
                              "the data's " + std::to_string(data.size()) + " bytes do not match the shape");
        std::vector<T> out(static_cast<std::size_t>(*n));
        auto conv = [&](auto tag) {
            using S = decltype(tag);
            for (std::size_t i = 0; i < out.size(); ++i) {
                S s;
                std::memcpy(&s, data.data() + i * sizeof(S), sizeof(S));
                out[i] = static_cast<T>(s);
            }
        };
        if (descr == "<f4") conv(float{});
        else if (descr == "<f8") conv(double{});
        else if (descr == "<i4") conv(std::int32_t{});
        else conv(std::int64_t{});
        return out;
    }
};

/// Parses the bytes of a .npy file; `name` (a path) appears in errors.
/// @throws bld::load_error naming the file, the header field and what is wrong.
[[nodiscard]] inline npy_array parse_npy(std::string_view bytes, const std::string& name) {
    const std::string op = "read .npy";
    const auto pre = detail::read_npy_preamble(bytes, op, name);
    npy_array a;
    a.descr = detail::npy_descr(pre.header, op, name);
    if (detail::npy_field(pre.header, "'fortran_order'", op, name).starts_with("True"))
        throw load_error(op, name, "Fortran-ordered array; save it in C order");
    a.shape = detail::npy_shape(pre.header, op, name);
    const auto n = detail::npy_checked_count(a.shape);
    if (!n)
        throw load_error(op, name + ", header field 'shape'",
                         "the element count of shape " + detail::npy_shape_string(a.shape) + " exceeds 2^63 - 1");
    const std::size_t esize = detail::npy_element_size(a.descr);
    const auto need = detail::npy_checked_bytes(*n, esize);
    if (!need)
        throw load_error(op, name + ", header field 'shape'",
                         "shape " + detail::npy_shape_string(a.shape) + " of " + std::to_string(esize) +
                             "-byte elements needs more bytes than fit in memory");
    const std::size_t have = bytes.size() - pre.data_offset;
    if (have != *need)
        throw load_error(op, name, "data has " + std::to_string(have) + " bytes, the header's shape needs " + std::to_string(*need));
    a.data = std::string(bytes.substr(pre.data_offset));
    return a;
}

/// Reads a .npy file. @throws bld::load_error naming the file, the header field and what is wrong.
[[nodiscard]] inline npy_array read_npy(const std::string& path) {
    return parse_npy(read_file(path, "read .npy"), path);
}

/// Writes a C-order .npy (version 1) of float32 / float64 / int64 data.
template <class T>
void write_npy(const std::string& path, const T* data, const std::vector<std::int64_t>& shape) {
    static_assert(std::is_same_v<T, float> || std::is_same_v<T, double> || std::is_same_v<T, std::int64_t>);
    const char* descr = std::is_same_v<T, float> ? "<f4" : std::is_same_v<T, double> ? "<f8" : "<i8";
    const auto count = detail::npy_checked_count(shape);
    if (!count || !detail::npy_checked_bytes(*count, sizeof(T)))
        throw value_error("write .npy", path, "shape " + detail::npy_shape_string(shape) +
                                                  " has a negative dimension or too many elements");
    const auto n = *count;
    std::string header = std::string("{'descr': '") + descr + "', 'fortran_order': False, 'shape': " +
                         detail::npy_shape_string(shape) + ", }";
    while ((10 + header.size() + 1) % 64 != 0) header += ' ';
    header += '\n';
    std::ofstream out(path, std::ios::binary);
    if (!out) throw load_error("write .npy", path, "cannot open for writing");
    out.write("\x93NUMPY\x01\x00", 8);
    const auto hl = static_cast<std::uint16_t>(header.size());
    const char hb[2] = {static_cast<char>(hl & 0xFF), static_cast<char>(hl >> 8)};
    out.write(hb, 2);
    out << header;
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(static_cast<std::size_t>(n) * sizeof(T)));
    if (!out) throw load_error("write .npy", path, "write failed");
}

} // namespace bld::io
