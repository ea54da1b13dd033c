// bld/vocab/vocabulary.hpp — token id → text bytes, as the tokenizer's decoder defines them.
//
// docs/01_method.md ("Alphabet", "The student side"): every text token has a byte string; special tokens (BOS, EOS, chat markers)
// have none — their probability mass becomes the STOP symbol. Ids the tokenizer never assigns
// (gaps) are `absent`: like columns past the vocabulary, they take part in nothing.
// Duplicates (two ids with equal bytes, e.g. `A` and `<0x41>` in SentencePiece vocabularies)
// are kept as two ids.
#pragma once

#include "bld/core/error.hpp"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace bld {

/// What an id is.
enum class token_kind : std::uint8_t {
    absent = 0,  ///< no token has this id (a gap in the id range)
    text = 1,    ///< decodes to one or more text bytes
    special = 2, ///< control token (BOS, EOS, chat markers): no text bytes, mass goes to STOP
};

/// Quotes a token spelling for an error message: control bytes as \xNN, cut after 64 bytes.
inline std::string quote_token(std::string_view s) {
    std::string q = "\"";
    const char* hex = "0123456789abcdef";
    for (unsigned char c : s.substr(0, 64)) {
        if (c < 0x20 || c == 0x7f) {
            q += "\\x";
            q += hex[c >> 4];
            q += hex[c & 15];
        } else {
            q += static_cast<char>(c);
        }
    }
    if (s.size() > 64) q += "...";
    return q + "\"";
}

/// Limits that keep hostile files from exhausting memory. A real tokenizer is far inside them.
inline constexpr std::size_t max_vocabulary_ids = std::size_t{1} << 26; // 67M ids
inline constexpr std::size_t max_token_bytes_limit = 65535;             // bytes of one token
/// Id ranges above sparse_ids_floor may hold at most max_ids_per_token ids per token (gaps
/// included), so a small file cannot claim a huge id range.
inline constexpr std::size_t sparse_ids_floor = std::size_t{1} << 20;
inline constexpr std::size_t max_ids_per_token = 16;

/// When a tokenizer's encoder puts one space in front of the text (SentencePiece's "dummy
/// prefix", `▁` in the vocabulary; ByteLevel's add_prefix_space). An encoder that splits
/// non-special added tokens out of the text first (HuggingFace) applies the rule to each piece
/// of text between them (text_transformations::split_tokens).
enum class dummy_prefix_rule : std::uint8_t {
    none,      ///< the text is encoded as it is
    always,    ///< " " + text (HuggingFace `Prepend("▁")` normaliser, SentencePiece add_dummy_prefix)
    if_absent, ///< " " + text unless the text already starts with a space (Metaspace, ByteLevel)
    first,     ///< as if_absent, for the piece at the text's start only (Metaspace prepend_scheme
               ///< "first"): none when the text begins with an added token
};

/// The rule's name: "none", "always", "if_absent" or "first".
[[nodiscard]] constexpr const char* to_string(dummy_prefix_rule rule) noexcept {
    switch (rule) {
        case dummy_prefix_rule::always: return "always";
        case dummy_prefix_rule::if_absent: return "if_absent";
        case dummy_prefix_rule::first: return "first";
        case dummy_prefix_rule::none: break;
    }
    return "none";
}

/// Where an encoder's dummy-prefix spaces go in the bytes of an encoding (text_transformations::layout).
struct encoded_layout {
    std::string bytes;                  ///< the concatenated token bytes of an encoding of the text
    std::vector<std::size_t> inserted;  ///< offsets in `bytes` of the spaces the encoder added (ascending)
};

/// Text-level transformations a tokenizer applies around its tokens, reported by the loaders
/// (docs/01_method.md, "The student side"). bld never applies them silently: alignment code reconciles them explicitly.
struct text_transformations {
    /// The encoder's dummy prefix: the concatenated token bytes of an encoding are then
    /// " " + text; the decoder strips the space again.
    dummy_prefix_rule dummy_prefix = dummy_prefix_rule::none;
    /// The decoder removes one leading space of the decoded text (HuggingFace Strip / Metaspace
    /// prepend): decoding one id that starts with a space shows it without that space.
    bool decoder_strips_leading_space = false;
    /// Unicode normalisation the encoder applies first ("NFC", "NFKC", ... or empty): token bytes
    /// concatenate to the *normalised* text.
    std::string normalizer;
    /// Human-readable notes on everything else the loader saw (decoder steps, byte fallback).
    std::vector<std::string> notes;
    /// Non-special added tokens (HuggingFace `added_tokens` with `special: false`): their ids and
    /// bytes, ascending by id. The encoder cuts them out of the text before anything else (the
    /// leftmost, then longest match), so the dummy-prefix rule applies to each piece between them.
    std::vector<std::int64_t> split_ids;
    std::vector<std::string> split_tokens;

    /// Whether `id` is one of split_ids.
    [[nodiscard]] bool splits_at(std::int64_t id) const noexcept {
        return std::binary_search(split_ids.begin(), split_ids.end(), id);
    }

    /// The bytes an encoding of `text` concatenates to, and where the encoder's dummy-prefix
    /// spaces are in them (normalisation such as NFC is not applied: bld reports it, the caller's
    /// text must already be normalised). The text is cut at the split tokens; each piece of text
    /// between them gets the rule's space (always: every non-empty piece; if_absent: every piece
    /// not starting with a space; first: the piece at offset 0 only, if it does not start with one).
    [[nodiscard]] encoded_layout layout(std::string_view text) const {
        encoded_layout e;
        e.bytes.reserve(text.size() + 1);
        std::size_t piece = 0;  // start of the current piece of text
        const auto flush = [&](std::size_t end) {
            if (end > piece) {
                const bool space = text[piece] == ' ';
                const bool add = dummy_prefix == dummy_prefix_rule::always ||
                                 (dummy_prefix == dummy_prefix_rule::if_absent && !space) ||
                                 (dummy_prefix == dummy_prefix_rule::first && piece == 0 && !space);
                if (add) {
                    e.inserted.push_back(e.bytes.size());
                    e.bytes += ' ';
                }
                e.bytes.append(text.substr(piece, end - piece));
            }
        };
        if (dummy_prefix != dummy_prefix_rule::none && !split_tokens.empty()) {
            bool starts[256] = {};  // first bytes of the split tokens
            for (const auto& t : split_tokens)
                if (!t.empty()) starts[static_cast<unsigned char>(t.front())] = true;
            for (std::size_t i = 0; i < text.size();) {
                std::size_t len = 0;  // the longest split token at i
                if (starts[static_cast<unsigned char>(text[i])])
                    for (const auto& t : split_tokens)
                        if (t.size() > len && text.compare(i, t.size(), t) == 0) len = t.size();
                if (len == 0) {
                    ++i;
                    continue;
                }
                flush(i);
                e.bytes.append(text.substr(i, len));
                i += len;
                piece = i;
            }
        }
        flush(text.size());
        return e;
    }
    /// The bytes an encoding of `text` concatenates to, dummy prefixes included.
    [[nodiscard]] std::string encoded_bytes(std::string_view text) const { return layout(text).bytes; }
    /// Length of the dummy prefix that an encoding of `text` starts with (0 or 1 byte).
    [[nodiscard]] std::size_t prefix_bytes(std::string_view text) const {
        const auto e = layout(text);
        return !e.inserted.empty() && e.inserted.front() == 0 ? 1 : 0;
    }
};

/// One token as a loader found it: id, decoded bytes, kind and its spelling in the file.
struct token_entry {
    std::int64_t id = 0;
    std::string bytes;    ///< decoded text bytes (empty for special tokens)
    token_kind kind = token_kind::text;
    std::string name;     ///< the token as written in the file (for messages and special lookup)
};

class vocabulary;

/// Collects tokens in any order (ids unordered, bytes appended to one blob) and checks them into
/// a vocabulary. Loaders use it directly; `vocabulary::from_entries` is a convenience over it.
class vocabulary_builder {
public:
    explicit vocabulary_builder(std::string source) : source_(std::move(source)) {}

    void reserve(std::size_t tokens, std::size_t bytes) {
        recs_.reserve(tokens);
        blob_.reserve(bytes);
    }
    /// Appends bytes to the pending token's byte string (build a token's bytes piecewise, then
    /// commit it with add_pending()).
    std::string& pending_bytes() noexcept { return pending_; }
    /// Adds a token whose bytes were built in pending_bytes().
    void add_pending(std::int64_t id, token_kind kind, std::string_view name) {
        add(id, pending_, kind, name);
        pending_.clear();
    }
    /// Adds one token. `name` is its spelling in the file (kept for messages and special lookup).
    void add(std::int64_t id, std::string_view bytes, token_kind kind, std::string_view name) {
        rec r;
        r.id = id;
        r.kind = kind;
        r.bytes_off = blob_.size();
        r.bytes_len = bytes.size();
        blob_ += bytes;
        r.name_off = names_.size();
        r.name_len = std::min<std::size_t>(name.size(), 256);
        names_.append(name.substr(0, 256));
        recs_.push_back(r);
    }
    [[nodiscard]] std::size_t size() const noexcept { return recs_.size(); }

    /// Checks the tokens and builds the vocabulary.
    /// @throws bld::load_error naming the source, the token and the reason: an empty vocabulary,
    ///         negative / duplicate / too large ids, an empty or too long text token.
    [[nodiscard]] vocabulary build(text_transformations transforms = {}) &&;

private:
    friend class vocabulary;
    struct rec {
        std::int64_t id = 0;
        std::size_t bytes_off = 0, bytes_len = 0, name_off = 0, name_len = 0;
        token_kind kind = token_kind::text;
    };
    [[nodiscard]] std::string_view name_of(const rec& r) const noexcept { return {names_.data() + r.name_off, r.name_len}; }
    std::string source_;
    std::vector<rec> recs_;
    std::string blob_, names_, pending_;
};

/// Immutable vocabulary: id → bytes and kind. All bytes live in one blob, addressed by a
/// 32-bit offset and length per id (compact for 262k-token vocabularies).
class vocabulary {
public:
    vocabulary() = default;

    /// Builds a vocabulary from entries in any order (see vocabulary_builder::build).
    static vocabulary from_entries(std::vector<token_entry> entries, std::string source,
                                   text_transformations transforms = {}) {
        vocabulary_builder b(std::move(source));
        std::size_t total = 0;
        for (const auto& e : entries) total += e.bytes.size();
        b.reserve(entries.size(), total);
        for (const auto& e : entries) b.add(e.id, e.bytes, e.kind, e.name);
        return std::move(b).build(std::move(transforms));
    }

    /// Number of ids: max id + 1 (gaps included).
    [[nodiscard]] std::size_t size() const noexcept { return kinds_.size(); }
    [[nodiscard]] bool empty() const noexcept { return kinds_.empty(); }

    /// @pre id < size(); @throws bld::value_error otherwise.
    [[nodiscard]] token_kind kind(std::size_t id) const {
        check_id(id);
        return kinds_[id];
    }
    [[nodiscard]] bool is_text(std::size_t id) const { return kind(id) == token_kind::text; }
    [[nodiscard]] bool is_special(std::size_t id) const { return kind(id) == token_kind::special; }

    /// Text bytes of a token (empty for special and absent ids).
    /// @pre id < size(); @throws bld::value_error otherwise.
    [[nodiscard]] std::string_view bytes(std::size_t id) const {
        check_id(id);
        return unchecked_bytes(id);
    }
    /// Text bytes without the range check (hot loops that validated ids once per call).
    [[nodiscard]] std::string_view unchecked_bytes(std::size_t id) const noexcept {
        return {blob_.data() + spans_[id].off, spans_[id].len};
    }
    [[nodiscard]] std::span<const token_kind> kinds() const noexcept { return kinds_; }

    [[nodiscard]] std::size_t text_tokens() const noexcept { return n_text_; }
    [[nodiscard]] std::size_t special_tokens() const noexcept { return specials_.size(); }
    [[nodiscard]] std::size_t max_token_bytes() const noexcept { return max_bytes_; }

    /// Special tokens as (name, id), in id order.
    [[nodiscard]] std::span<const std::pair<std::string, std::uint32_t>> specials() const noexcept {
        return specials_;
    }
    /// Id of a special token by its name, or -1.
    [[nodiscard]] std::int64_t find_special(std::string_view name) const noexcept {
        for (const auto& [n, id] : specials_)
            if (n == name) return id;
        return -1;
    }

    /// The file or description the vocabulary came from (used in error messages).
    [[nodiscard]] const std::string& source() const noexcept { return source_; }
    [[nodiscard]] const text_transformations& transformations() const noexcept { return transforms_; }

    /// Ids whose bytes equal those of a lower id (duplicates such as `A` and `<0x41>`).
    [[nodiscard]] std::vector<std::uint32_t> duplicate_ids() const {
        std::vector<std::uint32_t> ids;
        for (std::uint32_t i = 0; i < size(); ++i)
            if (kinds_[i] == token_kind::text) ids.push_back(i);
        std::stable_sort(ids.begin(), ids.end(), [&](std::uint32_t a, std::uint32_t b) {
            return unchecked_bytes(a) < unchecked_bytes(b);
        });
        std::vector<std::uint32_t> dup;
        for (std::size_t k = 1; k < ids.size(); ++k)
            if (unchecked_bytes(ids[k]) == unchecked_bytes(ids[k - 1])) dup.push_back(ids[k]);
        std::sort(dup.begin(), dup.end());
        return dup;
    }

    /// Concatenated bytes of a token id sequence.
    /// @throws bld::value_error if an id is out of range.
    [[nodiscard]] std::string decode(std::span<const std::int64_t> ids) const {
        std::string out;
        for (std::size_t k = 0; k < ids.size(); ++k) {
            if (ids[k] < 0 || static_cast<std::uint64_t>(ids[k]) >= size())
                throw value_error("decode token ids", "position " + std::to_string(k),
                                  "id " + std::to_string(ids[k]) + " is outside the vocabulary of " +
                                      std::to_string(size()) + " ids (" + source_ + ")");
            out += unchecked_bytes(static_cast<std::size_t>(ids[k]));
        }
        return out;
    }

    /// Bytes held by the vocabulary's arrays.
    [[nodiscard]] std::size_t memory_bytes() const noexcept {
        return blob_.size() + spans_.size() * sizeof(span_t) + kinds_.size();
    }

private:
    friend class vocabulary_builder;
    struct span_t {
        std::uint32_t off = 0, len = 0;
    };
    void check_id(std::size_t id) const {
        if (id >= size())
            throw value_error("look up token", "token id " + std::to_string(id),
                              "outside the vocabulary of " + std::to_string(size()) + " ids (" +
                                  source_ + ")");
    }

    std::string source_;
    text_transformations transforms_;
    std::vector<token_kind> kinds_; // [size]
    std::vector<span_t> spans_;     // [size] into blob_
    std::string blob_;
    std::vector<std::pair<std::string, std::uint32_t>> specials_;
    std::size_t n_text_ = 0, max_bytes_ = 0;
};

inline vocabulary vocabulary_builder::build(text_transformations transforms) && {
    const std::string op = "build vocabulary";
    auto tok = [&](const rec& r) { return "token " + quote_token(name_of(r)); };
    if (recs_.empty()) throw load_error(op, source_, "the vocabulary is empty (no tokens)");
    if (blob_.size() > UINT32_MAX) throw load_error(op, source_, "token bytes exceed 4 GiB in total");
    std::int64_t max_id = -1;
    for (const auto& r : recs_) {
        if (r.id < 0) throw load_error(op, source_ + ": " + tok(r), "negative id " + std::to_string(r.id));
        if (static_cast<std::uint64_t>(r.id) >= max_vocabulary_ids)
            throw load_error(op, source_ + ": " + tok(r),
                             "id " + std::to_string(r.id) + " exceeds the limit of " +
                                 std::to_string(max_vocabulary_ids) + " ids");
        if (r.kind == token_kind::text && r.bytes_len == 0)
            throw load_error(op, source_ + ": token id " + std::to_string(r.id) + " " + quote_token(name_of(r)),
                             "a text token decodes to no bytes");
        if (r.bytes_len > max_token_bytes_limit)
            throw load_error(op, source_ + ": token id " + std::to_string(r.id),
                             "token has " + std::to_string(r.bytes_len) + " bytes, more than the limit of " +
                                 std::to_string(max_token_bytes_limit));
        max_id = std::max(max_id, r.id);
    }
    // A few tokens with huge ids would make every per-id array (kinds, spans, the trie's
    // positions, a teacher row) that long: refuse id ranges far sparser than any tokenizer's.
    const auto n_ids = static_cast<std::size_t>(max_id + 1);
    if (n_ids > sparse_ids_floor && n_ids / max_ids_per_token > recs_.size()) {
        const auto& r = *std::max_element(recs_.begin(), recs_.end(), [](const rec& a, const rec& b) { return a.id < b.id; });
        throw load_error(op, source_ + ": " + tok(r),
                         "id " + std::to_string(max_id) + " with only " + std::to_string(recs_.size()) +
                             " tokens: the id range is more than " + std::to_string(max_ids_per_token) +
                             " times the number of tokens");
    }
    vocabulary v;
    v.source_ = std::move(source_);
    v.transforms_ = std::move(transforms);
    const auto n = static_cast<std::size_t>(max_id + 1);
    v.kinds_.assign(n, token_kind::absent);
    v.spans_.assign(n, {});
    std::vector<std::uint32_t> slot(n, UINT32_MAX);
    for (std::size_t i = 0; i < recs_.size(); ++i) {
        const auto& r = recs_[i];
        const auto id = static_cast<std::size_t>(r.id);
        if (slot[id] != UINT32_MAX)
            throw load_error(op, v.source_ + ": token id " + std::to_string(id),
                             "duplicate id: both " + quote_token(name_of(recs_[slot[id]])) + " and " +
                                 quote_token(name_of(r)) + " claim it");
        slot[id] = static_cast<std::uint32_t>(i);
        v.kinds_[id] = r.kind;
        if (r.kind == token_kind::text) {
            v.spans_[id] = {static_cast<std::uint32_t>(r.bytes_off), static_cast<std::uint32_t>(r.bytes_len)};
            v.max_bytes_ = std::max(v.max_bytes_, r.bytes_len);
            ++v.n_text_;
        } else if (r.kind == token_kind::special) {
            v.specials_.emplace_back(std::string(name_of(r)), static_cast<std::uint32_t>(id));
        }
    }
    std::sort(v.specials_.begin(), v.specials_.end(),
              [](const auto& a, const auto& b) { return a.second < b.second; });
    v.blob_ = std::move(blob_);
    recs_ = {};
    names_ = {};
    return v;
}

} // namespace bld
