// bld/io/npy.hpp — reading and writing NumPy .npy arrays (format versions 1–3, C order,
// little-endian float32 / float64 / int32 / int64). Used by bld-cli; no dependencies.
#pragma once

#include "bld/core/error.hpp"
#include "bld/io/file.hpp"

#include <cstdint>
#include <cstring>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

namespace bld::io {

/// An array read from a .npy file: dtype descriptor ("<f4", "<f8", "<i4", "<i8"), shape, and
/// the raw little-endian data.
struct npy_array {
    std::string descr;
    std::vector<std::int64_t> shape;
    std::string data;

    [[nodiscard]] std::int64_t count() const noexcept {
        std::int64_t n = 1;
        for (auto s : shape) n *= s;
        return n;
    }
    /// The elements converted to T (from any supported dtype).
    template <class T>
    [[nodiscard]] std::vector<T> as() const {
        std::vector<T> out(static_cast<std::size_t>(count()));
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

/// Reads a .npy file. @throws bld::load_error naming the file and what is wrong.
[[nodiscard]] inline npy_array read_npy(const std::string& path) {
    const std::string op = "read .npy";
    const std::string f = read_file(path, op);
    if (f.size() < 10 || f.compare(0, 6, "\x93NUMPY") != 0) throw load_error(op, path, "not a .npy file (bad magic)");
    const auto major = static_cast<unsigned char>(f[6]);
    std::size_t hlen = 0, hstart = 0;
    if (major == 1) {
        hlen = static_cast<unsigned char>(f[8]) | (static_cast<std::size_t>(static_cast<unsigned char>(f[9])) << 8);
        hstart = 10;
    } else if (major == 2 || major == 3) {
        if (f.size() < 12) throw load_error(op, path, "truncated header");
        for (int k = 0; k < 4; ++k) hlen |= static_cast<std::size_t>(static_cast<unsigned char>(f[8 + static_cast<std::size_t>(k)])) << (8 * k);
        hstart = 12;
    } else {
        throw load_error(op, path, "unsupported .npy format version " + std::to_string(major));
    }
    if (hstart + hlen > f.size()) throw load_error(op, path, "truncated header");
    const std::string_view h(f.data() + hstart, hlen);
    auto field = [&](std::string_view key) -> std::string_view {
        const auto k = h.find(key);
        if (k == std::string_view::npos) throw load_error(op, path, "header without " + std::string(key));
        auto v = h.substr(k + key.size());
        const auto colon = v.find(':');
        if (colon == std::string_view::npos) throw load_error(op, path, "malformed header");
        v = v.substr(colon + 1);
        while (!v.empty() && v.front() == ' ') v.remove_prefix(1);
        return v;
    };
    npy_array a;
    auto d = field("'descr'");
    if (d.empty() || (d.front() != '\'' && d.front() != '"')) throw load_error(op, path, "malformed descr");
    const auto dq = d.find(d.front(), 1);
    a.descr = std::string(d.substr(1, dq - 1));
    if (a.descr == "|u1" || a.descr == "|b1") {
        // bytes: fine for masks, read as int
    }
    std::size_t esize = 0;
    if (a.descr == "<f4" || a.descr == "<i4") esize = 4;
    else if (a.descr == "<f8" || a.descr == "<i8") esize = 8;
    else throw load_error(op, path, "unsupported dtype " + a.descr + " (use float32, float64, int32 or int64, little-endian)");
    if (field("'fortran_order'").starts_with("True")) throw load_error(op, path, "Fortran-ordered array; save it in C order");
    auto s = field("'shape'");
    if (s.empty() || s.front() != '(') throw load_error(op, path, "malformed shape");
    const auto close = s.find(')');
    std::string_view dims = s.substr(1, close - 1);
    while (!dims.empty()) {
        while (!dims.empty() && (dims.front() == ' ' || dims.front() == ',')) dims.remove_prefix(1);
        if (dims.empty()) break;
        std::size_t n = 0;
        std::int64_t val = 0;
        while (n < dims.size() && dims[n] >= '0' && dims[n] <= '9') val = val * 10 + (dims[n++] - '0');
        if (n == 0) throw load_error(op, path, "malformed shape");
        a.shape.push_back(val);
        dims.remove_prefix(n);
    }
    const std::size_t need = static_cast<std::size_t>(a.count()) * esize;
    const std::size_t have = f.size() - hstart - hlen;
    if (have != need)
        throw load_error(op, path, "data has " + std::to_string(have) + " bytes, the header's shape needs " + std::to_string(need));
    a.data = f.substr(hstart + hlen);
    return a;
}

/// Writes a C-order .npy (version 1) of float32 / float64 / int64 data.
template <class T>
void write_npy(const std::string& path, const T* data, const std::vector<std::int64_t>& shape) {
    static_assert(std::is_same_v<T, float> || std::is_same_v<T, double> || std::is_same_v<T, std::int64_t>);
    const char* descr = std::is_same_v<T, float> ? "<f4" : std::is_same_v<T, double> ? "<f8" : "<i8";
    std::string dims;
    std::int64_t n = 1;
    for (auto s : shape) {
        dims += std::to_string(s) + ", ";
        n *= s;
    }
    if (shape.size() > 1) dims.resize(dims.size() - 1);
    std::string header = std::string("{'descr': '") + descr + "', 'fortran_order': False, 'shape': (" + dims + "), }";
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
