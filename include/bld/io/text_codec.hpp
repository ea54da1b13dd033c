// bld/io/text_codec.hpp — the byte encodings tokenizer files use for their token strings:
// UTF-8, the GPT-2 byte↔unicode map, SentencePiece `<0xNN>` byte-fallback pieces and base64.
// No dependencies; used by every loader.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace bld::io {

/// Decodes one UTF-8 code point at s[i], advancing i. Returns -1 for a malformed sequence
/// (and advances by one byte).
[[nodiscard]] inline std::int32_t next_code_point(std::string_view s, std::size_t& i) noexcept {
    const auto b0 = static_cast<unsigned char>(s[i]);
    auto cont = [&](std::size_t k) -> int {
        if (i + k >= s.size()) return -1;
        const auto b = static_cast<unsigned char>(s[i + k]);
        return (b & 0xC0) == 0x80 ? (b & 0x3F) : -1;
    };
    if (b0 < 0x80) { ++i; return b0; }
    int n = 0;
    std::int32_t cp = 0;
    if ((b0 & 0xE0) == 0xC0) { n = 1; cp = b0 & 0x1F; }
    else if ((b0 & 0xF0) == 0xE0) { n = 2; cp = b0 & 0x0F; }
    else if ((b0 & 0xF8) == 0xF0) { n = 3; cp = b0 & 0x07; }
    else { ++i; return -1; }
    for (int k = 1; k <= n; ++k) {
        const int c = cont(static_cast<std::size_t>(k));
        if (c < 0) { ++i; return -1; }
        cp = (cp << 6) | c;
    }
    // Reject overlong forms, surrogates and values past U+10FFFF.
    static constexpr std::int32_t min_for_len[4] = {0, 0x80, 0x800, 0x10000};
    if (cp < min_for_len[n] || (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF) { ++i; return -1; }
    i += static_cast<std::size_t>(n) + 1;
    return cp;
}

/// True if s is well-formed UTF-8.
[[nodiscard]] inline bool is_valid_utf8(std::string_view s) noexcept {
    for (std::size_t i = 0; i < s.size();)
        if (next_code_point(s, i) < 0) return false;
    return true;
}

/// Appends the UTF-8 encoding of a code point.
inline void append_utf8(std::string& out, std::int32_t cp) {
    if (cp < 0x80) {
        out += static_cast<char>(cp);
    } else if (cp < 0x800) {
        out += static_cast<char>(0xC0 | (cp >> 6));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        out += static_cast<char>(0xE0 | (cp >> 12));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
        out += static_cast<char>(0xF0 | (cp >> 18));
        out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    }
}

/// The GPT-2 byte-level alphabet: each byte is shown as a printable code point. Bytes that are
/// printable Latin-1 ('!'..'~', '¡'..'¬', '®'..'ÿ') stand for themselves; the other 68 bytes
/// take the code points 256, 257, ... in byte order. (Radford et al. 2019, used by GPT-2,
/// Llama-3, Qwen and every "ByteLevel" HuggingFace tokenizer.)
struct gpt2_byte_map {
    std::array<std::int32_t, 256> byte_to_cp{};
    std::array<std::int16_t, 324> cp_to_byte{}; // -1 where a code point is not in the map

    constexpr gpt2_byte_map() {
        for (auto& v : cp_to_byte) v = -1;
        int next = 256;
        for (int b = 0; b < 256; ++b) {
            const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
            byte_to_cp[static_cast<std::size_t>(b)] = printable ? b : next++;
        }
        for (int b = 0; b < 256; ++b)
            cp_to_byte[static_cast<std::size_t>(byte_to_cp[static_cast<std::size_t>(b)])] =
                static_cast<std::int16_t>(b);
    }
    /// Byte for a code point, or -1 if the code point is outside the map.
    [[nodiscard]] constexpr int byte_of(std::int32_t cp) const noexcept {
        return (cp >= 0 && cp < 324) ? cp_to_byte[static_cast<std::size_t>(cp)] : -1;
    }
};
inline constexpr gpt2_byte_map gpt2_bytes{};

/// Result of decoding a GPT-2 byte-level string: the bytes, or the offending code point.
struct byte_level_result {
    std::string bytes;
    std::int32_t bad_code_point = -1; ///< first code point outside the map (or -2: bad UTF-8)
    std::size_t bad_offset = 0;       ///< its byte offset in the input
    [[nodiscard]] bool ok() const noexcept { return bad_code_point == -1; }
};

/// Maps every code point of a byte-level token string back to its byte.
[[nodiscard]] inline byte_level_result decode_byte_level(std::string_view s) {
    byte_level_result r;
    r.bytes.reserve(s.size());
    for (std::size_t i = 0; i < s.size();) {
        const std::size_t at = i;
        const std::int32_t cp = next_code_point(s, i);
        const int b = cp < 0 ? -1 : gpt2_bytes.byte_of(cp);
        if (b < 0) {
            r.bad_code_point = cp < 0 ? -2 : cp;
            r.bad_offset = at;
            return r;
        }
        r.bytes += static_cast<char>(b);
    }
    return r;
}

/// Encodes bytes into the GPT-2 byte-level alphabet (UTF-8).
[[nodiscard]] inline std::string encode_byte_level(std::string_view bytes) {
    std::string s;
    for (unsigned char b : bytes) append_utf8(s, gpt2_bytes.byte_to_cp[b]);
    return s;
}

/// SentencePiece byte-fallback pieces: `<0xNN>` stands for the byte NN.
enum class byte_piece_kind { not_a_byte_piece, byte_piece, malformed };
struct byte_piece {
    byte_piece_kind kind = byte_piece_kind::not_a_byte_piece;
    std::uint8_t value = 0;
};
/// Classifies a piece: `<0x41>` is the byte 0x41 (either hex case, as SentencePiece and the
/// HuggingFace ByteFallback decoder accept); `<0x4>`, `<0xZZ>`, `<0x123>` are malformed.
[[nodiscard]] inline byte_piece parse_byte_piece(std::string_view s) noexcept {
    if (s.size() < 4 || s.substr(0, 3) != "<0x" || s.back() != '>') return {};
    if (s.size() != 6) return {byte_piece_kind::malformed, 0};
    auto hex = [](char c) -> int {
        if (c >= '0' && c <= '9') return c - '0';
        if (c >= 'A' && c <= 'F') return c - 'A' + 10;
        if (c >= 'a' && c <= 'f') return c - 'a' + 10;
        return -1;
    };
    const int h = hex(s[3]), l = hex(s[4]);
    if (h < 0 || l < 0) return {byte_piece_kind::malformed, 0};
    return {byte_piece_kind::byte_piece, static_cast<std::uint8_t>(h * 16 + l)};
}

/// Standard base64 (RFC 4648, '=' padding optional). Returns nullopt on a bad character or
/// length; `bad_at` receives the offset of the first offending character.
[[nodiscard]] inline std::optional<std::string> decode_base64(std::string_view s, std::size_t* bad_at = nullptr) {
    auto val = [](char c) -> int {
        if (c >= 'A' && c <= 'Z') return c - 'A';
        if (c >= 'a' && c <= 'z') return c - 'a' + 26;
        if (c >= '0' && c <= '9') return c - '0' + 52;
        if (c == '+') return 62;
        if (c == '/') return 63;
        return -1;
    };
    std::size_t n = s.size();
    while (n > 0 && s[n - 1] == '=' && s.size() - n < 2) --n;
    std::string out;
    out.reserve(n * 3 / 4);
    std::uint32_t acc = 0;
    int bits = 0;
    for (std::size_t i = 0; i < n; ++i) {
        const int v = val(s[i]);
        if (v < 0) {
            if (bad_at) *bad_at = i;
            return std::nullopt;
        }
        acc = (acc << 6) | static_cast<std::uint32_t>(v);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out += static_cast<char>((acc >> bits) & 0xFF);
        }
    }
    if (n % 4 == 1 || (s.size() != n && s.size() % 4 != 0)) {
        if (bad_at) *bad_at = n;
        return std::nullopt;
    }
    return out;
}

/// Printable rendering of bytes for messages: ASCII as is, the rest as \xNN; cut after `max`.
[[nodiscard]] inline std::string printable(std::string_view s, std::size_t max = 48) {
    std::string q;
    const char* hex = "0123456789abcdef";
    for (std::size_t i = 0; i < s.size() && i < max; ++i) {
        const auto c = static_cast<unsigned char>(s[i]);
        if (c >= 0x20 && c < 0x7f && c != '\\') {
            q += static_cast<char>(c);
        } else {
            q += "\\x";
            q += hex[c >> 4];
            q += hex[c & 15];
        }
    }
    if (s.size() > max) q += "...";
    return q;
}

/// "U+0020"-style name of a code point.
[[nodiscard]] inline std::string code_point_name(std::int32_t cp) {
    if (cp < 0) return "malformed UTF-8";
    const char* hex = "0123456789ABCDEF";
    std::string s = "U+";
    bool started = false;
    for (int shift = 20; shift >= 0; shift -= 4) {
        const int d = (cp >> shift) & 15;
        if (d || started || shift <= 12) { s += hex[d]; started = true; }
    }
    return s;
}

} // namespace bld::io
