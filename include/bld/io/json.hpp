// bld/io/json.hpp — loaders for JSON tokenizer files (optional part: target bld::json).
//
//  * HuggingFace `tokenizer.json`, model types BPE and Unigram, with ByteLevel (GPT-2 map),
//    Metaspace / SentencePiece-style (`▁` = space, `<0xNN>` byte fallback) and Replace / Strip /
//    Fuse decoder chains, and added tokens;
//  * GPT-2 `encoder.json` + `vocab.bpe`;
//  * `load_vocabulary(path)`, which recognises either, or a tiktoken rank file.
//
// JSON is parsed by simdjson (On-Demand for the model's large arrays, DOM for the small parts).
// When a file is not valid JSON, nlohmann::json's SAX parser re-reads it only to locate the
// first syntax error (line, column, byte offset) for the message.
//
// Token bytes are what the tokenizer's decoder makes of one token, so decoding an id sequence
// is concatenating bytes. Text-level steps of a decoder (Strip of the dummy-prefix space) do not
// act per token; they are reported in vocabulary::transformations().
#pragma once

#include "bld/core/error.hpp"
#include "bld/io/file.hpp"
#include "bld/io/text_codec.hpp"
#include "bld/io/tiktoken.hpp"
#include "bld/vocab/vocabulary.hpp"

#include <nlohmann/json.hpp>
#include <simdjson.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace bld::io {

namespace detail {

/// Finds where a text stops being valid JSON ("line L, column C (byte B)").
inline std::string json_error_location(std::string_view text) {
    struct null_sax : nlohmann::json_sax<nlohmann::json> {
        std::size_t byte = 0;
        std::string msg;
        bool null() override { return true; }
        bool boolean(bool) override { return true; }
        bool number_integer(number_integer_t) override { return true; }
        bool number_unsigned(number_unsigned_t) override { return true; }
        bool number_float(number_float_t, const string_t&) override { return true; }
        bool string(string_t&) override { return true; }
        bool binary(binary_t&) override { return true; }
        bool start_object(std::size_t) override { return true; }
        bool key(string_t&) override { return true; }
        bool end_object() override { return true; }
        bool start_array(std::size_t) override { return true; }
        bool end_array() override { return true; }
        bool parse_error(std::size_t pos, const std::string&, const nlohmann::detail::exception& e) override {
            byte = pos;
            msg = e.what();
            return false;
        }
    } sax;
    const bool ok = nlohmann::json::sax_parse(text.begin(), text.end(), &sax,
                                              nlohmann::detail::input_format_t::json, false);
    if (ok) return "";
    // nlohmann reports the 1-based position of the offending character.
    const std::size_t at = sax.byte > 0 ? std::min(sax.byte - 1, text.size()) : 0;
    std::size_t line = 1, col = 1;
    for (std::size_t i = 0; i < at; ++i) {
        if (text[i] == '\n') { ++line; col = 1; } else { ++col; }
    }
    std::string where = "line " + std::to_string(line) + ", column " + std::to_string(col) +
                        " (byte " + std::to_string(at) + ")";
    if (at >= text.size()) where += ", at the end of the file: truncated?";
    return where;
}

/// Parses JSON text with simdjson; on failure throws a load_error with the syntax location.
inline simdjson::dom::element parse_json(simdjson::dom::parser& parser, const std::string& text,
                                         const std::string& path, const std::string& op) {
    simdjson::dom::element doc;
    const auto err = parser.parse(text).get(doc);
    if (err) {
        std::string where = json_error_location(text);
        throw load_error(op, path + (where.empty() ? "" : ": " + where),
                         std::string("not valid JSON (") + simdjson::error_message(err) + ")");
    }
    return doc;
}

inline std::string type_name(simdjson::dom::element_type t) {
    using T = simdjson::dom::element_type;
    switch (t) {
    case T::ARRAY: return "an array";
    case T::OBJECT: return "an object";
    case T::INT64: case T::UINT64: return "an integer";
    case T::DOUBLE: return "a number";
    case T::STRING: return "a string";
    case T::BOOL: return "a boolean";
    case T::NULL_VALUE: return "null";
    }
    return "?";
}

/// A JSON integer that must be a token id.
inline std::int64_t token_id(simdjson::dom::element e, const std::string& path, const std::string& op,
                             const std::string& token) {
    std::int64_t id = 0;
    if (e.type() == simdjson::dom::element_type::INT64) {
        id = e.get_int64().value_unsafe();
    } else if (e.type() == simdjson::dom::element_type::UINT64) {
        throw load_error(op, path + ": token " + token, "id " + std::to_string(e.get_uint64().value_unsafe()) +
                                                              " is too large");
    } else {
        throw load_error(op, path + ": token " + token, "the id is " + type_name(e.type()) + ", expected an integer");
    }
    if (id < 0) throw load_error(op, path + ": token " + token, "negative id " + std::to_string(id));
    return id;
}

inline std::string shown(std::string_view s) { return "\"" + printable(s) + "\""; }

inline std::string replace_all(std::string s, std::string_view from, std::string_view to) {
    if (from.empty()) return s;
    std::string out;
    std::size_t pos = 0;
    for (;;) {
        const auto hit = s.find(from, pos);
        if (hit == std::string::npos) break;
        out.append(s, pos, hit - pos);
        out += to;
        pos = hit + from.size();
    }
    out.append(s, pos, std::string::npos);
    return out;
}

/// One per-token step of a HuggingFace decoder chain.
struct decode_step {
    enum kind_t { byte_level, replace, byte_fallback, bpe_suffix } kind;
    std::string from, to;
};

/// The per-token decoding a HuggingFace tokenizer.json describes.
struct token_decoder {
    std::vector<decode_step> steps;
    bool byte_fallback = false; ///< `<0xNN>` pieces are bytes (model flag or ByteFallback step)
    std::vector<std::string> notes;
    bool strips_leading_space = false; ///< a Strip / Metaspace step removes the dummy prefix

    /// Bytes of one token piece, written to `out` (replaced). Added (non-model) tokens that
    /// contain characters outside the GPT-2 map keep their UTF-8 bytes, as the HuggingFace
    /// ByteLevel decoder does.
    void decode(std::string_view piece, bool added, const std::string& path, const std::string& op,
                std::int64_t id, std::string& out) const {
        out.assign(piece);
        for (const auto& s : steps) {
            switch (s.kind) {
            case decode_step::byte_level: {
                // In place: a code point's byte is never longer than its UTF-8 form.
                std::size_t w = 0;
                for (std::size_t i = 0; i < out.size();) {
                    const std::size_t at = i;
                    const std::int32_t cp = next_code_point(out, i);
                    const int b = cp < 0 ? -1 : gpt2_bytes.byte_of(cp);
                    if (b < 0) {
                        if (added) { out.assign(piece); w = out.size(); break; }
                        throw load_error(op, path + ": token id " + std::to_string(id) + " " + shown(piece),
                                         "character " + code_point_name(cp) + " at byte " + std::to_string(at) +
                                             " is outside the GPT-2 byte-level alphabet");
                    }
                    out[w++] = static_cast<char>(b);
                }
                out.resize(w);
                break;
            }
            case decode_step::replace:
                if (out.find(s.from) != std::string::npos) out = replace_all(std::move(out), s.from, s.to);
                break;
            case decode_step::bpe_suffix:
                if (out.size() >= s.from.size() && out.compare(out.size() - s.from.size(), s.from.size(), s.from) == 0)
                    out = out.substr(0, out.size() - s.from.size()) + " ";
                break;
            case decode_step::byte_fallback: {
                const auto bp = parse_byte_piece(out);
                if (bp.kind == byte_piece_kind::byte_piece) out.assign(1, static_cast<char>(bp.value));
                else if (bp.kind == byte_piece_kind::malformed)
                    throw load_error(op, path + ": token id " + std::to_string(id) + " " + shown(piece),
                                     "malformed byte-fallback piece (expected <0xNN> with two hex digits)");
                break;
            }
            }
        }
    }
};

/// Reads an optional field into `out`; returns false (leaving `out`) if absent or of another type.
template <class T>
inline bool read_field(simdjson::dom::object o, std::string_view key, T& out) {
    T v{};
    if (o[key].get(v) != simdjson::SUCCESS) return false;
    out = v;
    return true;
}

inline std::string get_string_field(simdjson::dom::object o, std::string_view key) {
    std::string_view v;
    if (o[key].get_string().get(v)) return {};
    return std::string(v);
}

/// Reads one decoder object (recursing into Sequence) into steps.
inline void read_decoder(simdjson::dom::element e, token_decoder& d, const std::string& path, const std::string& op) {
    if (e.is_null()) return;
    simdjson::dom::object o;
    if (e.get_object().get(o)) throw load_error(op, path + ": decoder", "expected an object, got " + type_name(e.type()));
    const std::string type = get_string_field(o, "type");
    if (type == "Sequence") {
        simdjson::dom::array a;
        if (o["decoders"].get_array().get(a))
            throw load_error(op, path + ": decoder Sequence", "missing its \"decoders\" array");
        for (auto sub : a) read_decoder(sub, d, path, op);
    } else if (type == "ByteLevel") {
        d.steps.push_back({decode_step::byte_level, {}, {}});
        d.notes.push_back("decoder ByteLevel: token strings are in the GPT-2 byte-level alphabet");
    } else if (type == "Replace") {
        simdjson::dom::object pat;
        std::string_view lit;
        if (o["pattern"].get_object().get(pat) || pat["String"].get_string().get(lit))
            throw load_error(op, path + ": decoder Replace",
                             "only literal String patterns are supported (a Regex pattern is not)");
        std::string_view content;
        if (o["content"].get_string().get(content))
            throw load_error(op, path + ": decoder Replace", "missing its \"content\" string");
        d.steps.push_back({decode_step::replace, std::string(lit), std::string(content)});
        d.notes.push_back("decoder Replace " + shown(lit) + " -> " + shown(content));
    } else if (type == "ByteFallback") {
        d.steps.push_back({decode_step::byte_fallback, {}, {}});
        d.byte_fallback = true;
        d.notes.push_back("decoder ByteFallback: <0xNN> pieces are single bytes");
    } else if (type == "Fuse") {
        // Joins tokens into one string: no per-token effect.
    } else if (type == "Strip") {
        std::int64_t start = 0;
        std::string_view content;
        read_field(o, "start", start);
        read_field(o, "content", content);
        if (start > 0 && content == " ") d.strips_leading_space = true;
        d.notes.push_back("decoder Strip: removes up to " + std::to_string(start) +
                          " leading " + shown(content) + " of the decoded text (text level, not per token)");
    } else if (type == "Metaspace") {
        std::string_view repl = "\xE2\x96\x81"; // U+2581
        read_field(o, "replacement", repl);
        d.steps.push_back({decode_step::replace, std::string(repl), " "});
        std::string_view scheme;
        bool add_prefix = false;
        if (read_field(o, "prepend_scheme", scheme)) add_prefix = scheme != "never";
        else read_field(o, "add_prefix_space", add_prefix);
        if (add_prefix) d.strips_leading_space = true;
        d.notes.push_back("decoder Metaspace " + shown(repl) + " -> space");
    } else if (type == "BPEDecoder") {
        std::string suffix = get_string_field(o, "suffix");
        if (suffix.empty()) suffix = "</w>";
        d.steps.push_back({decode_step::bpe_suffix, suffix, " "});
        d.notes.push_back("decoder BPEDecoder: suffix " + shown(suffix) + " -> space (the last one is dropped when decoding text)");
    } else {
        throw load_error(op, path + ": decoder",
                         "unsupported decoder type " + shown(type) +
                             " (bld supports ByteLevel, Metaspace, Replace, ByteFallback, Fuse, Strip, BPEDecoder, Sequence)");
    }
}

/// Collects what a normaliser / pre-tokeniser does to the text before encoding.
/// `after_split`: a pre-tokeniser of a Sequence that follows a Split (it then sees every split
/// piece on its own).
inline void read_text_side(simdjson::dom::element e, text_transformations& t, bool normalizer, bool after_split = false) {
    if (e.is_null()) return;
    simdjson::dom::object o;
    if (e.get_object().get(o)) return;
    const std::string type = get_string_field(o, "type");
    if (type == "Sequence") {
        simdjson::dom::array a;
        bool split = after_split;
        if (!o[normalizer ? "normalizers" : "pretokenizers"].get_array().get(a))
            for (auto sub : a) {
                read_text_side(sub, t, normalizer, split);
                simdjson::dom::object so;
                split = split || (!normalizer && !sub.get_object().get(so) && get_string_field(so, "type") == "Split");
            }
    } else if (normalizer && (type == "NFC" || type == "NFD" || type == "NFKC" || type == "NFKD")) {
        t.normalizer = type;
    } else if (normalizer && type == "Prepend") {
        const std::string p = get_string_field(o, "prepend");
        if (p == "\xE2\x96\x81" || p == " ") t.dummy_prefix = dummy_prefix_rule::always;
        else t.notes.push_back("normalizer Prepend " + shown(p));
    } else if (!normalizer && type == "Metaspace") {
        std::string_view scheme;
        bool add_prefix = false;
        if (read_field(o, "prepend_scheme", scheme)) add_prefix = scheme != "never";
        else read_field(o, "add_prefix_space", add_prefix);
        if (add_prefix) t.dummy_prefix = scheme == "first" ? dummy_prefix_rule::first : dummy_prefix_rule::if_absent;
    } else if (!normalizer && type == "ByteLevel") {
        bool add_prefix = false;
        read_field(o, "add_prefix_space", add_prefix);
        if (add_prefix) t.dummy_prefix = dummy_prefix_rule::if_absent;
        if (add_prefix && after_split)
            t.notes.push_back("pre-tokeniser ByteLevel with add_prefix_space after a Split: the encoder puts a space in "
                              "front of every split piece, which alignment does not model (text= alignment reports where)");
    } else if (normalizer && (type == "Lowercase" || type == "Strip" || type == "StripAccents" ||
                              type == "Precompiled" || type == "BertNormalizer")) {
        t.notes.push_back("normalizer " + type + ": token bytes concatenate to the normalised text");
    }
}

} // namespace detail

namespace detail {

// The steps of parse_hf_tokenizer_json: one On-Demand pass over the file collects the model
// type, the vocabulary entries and the raw JSON of the small parts (read_hf_sections); the
// model type is settled (hf_model_type); the decoder chain becomes the per-token byte mapping
// (hf_token_decoder); the normaliser and pre-tokeniser become text transformations
// (hf_text_transformations); the added tokens are read and indexed by id (read_hf_added_tokens,
// index_hf_added_tokens); and every token is decoded into the vocabulary (build_hf_vocabulary).

/// The file being parsed: its text (to locate a syntax error), its path and the operation name.
struct hf_source {
    std::string_view text;
    const std::string& path;
    std::string op = "load tokenizer.json";

    /// Any simdjson failure: first look for a JSON syntax error to point at; otherwise the
    /// document is valid JSON with an unexpected shape, and `what` says which part.
    [[nodiscard]] load_error fail(simdjson::error_code err, const std::string& what) const {
        const std::string where = json_error_location(text);
        if (!where.empty())
            return load_error(op, path + ": " + where, std::string("not valid JSON (") + simdjson::error_message(err) + ")");
        return load_error(op, path + ": " + what, std::string("unexpected JSON structure (") + simdjson::error_message(err) + ")");
    }
};

/// A model.vocab entry as the file spells it, before decoding.
struct hf_raw_token {
    std::string_view piece;  ///< points into the On-Demand parser's buffers: valid while it lives
    std::int64_t id;
};

/// What the single On-Demand pass over a tokenizer.json collects.
struct hf_sections {
    std::vector<hf_raw_token> vocab;  ///< model.vocab entries, in file order
    std::string model_type;           ///< model.type, empty when absent
    bool model_byte_fallback = false;
    bool saw_model = false, saw_vocab = false, vocab_is_array = false;
    /// Raw JSON of the small parts, parsed later into a DOM; empty when absent or null.
    std::string decoder_json, normalizer_json, pre_tokenizer_json, added_tokens_json;
};

/// The raw JSON text of an object or array value into `out`; nothing for null.
inline void read_raw_json_or_null(const hf_source& src, simdjson::ondemand::value& v, std::string& out, const char* what) {
    namespace od = simdjson::ondemand;
    od::json_type t;
    if (auto err = v.type().get(t)) throw src.fail(err, what);
    if (t == od::json_type::null) return;
    std::string_view r;
    if (t == od::json_type::object) {
        od::object o;
        if (auto err = v.get_object().get(o)) throw src.fail(err, what);
        if (auto err = o.raw_json().get(r)) throw src.fail(err, what);
    } else if (t == od::json_type::array) {
        od::array a;
        if (auto err = v.get_array().get(a)) throw src.fail(err, what);
        if (auto err = a.raw_json().get(r)) throw src.fail(err, what);
    } else {
        throw load_error(src.op, src.path + ": " + what, "expected an object, an array or null");
    }
    out.assign(r);
}

/// A BPE vocabulary: an object of piece → id.
inline void read_hf_vocab_object(const hf_source& src, simdjson::ondemand::value& v, std::vector<hf_raw_token>& out) {
    namespace od = simdjson::ondemand;
    od::object vocab;
    if (auto err = v.get_object().get(vocab)) throw src.fail(err, "model.vocab");
    for (auto tf_r : vocab) {
        od::field tf;
        if (auto err = std::move(tf_r).get(tf)) throw src.fail(err, "model.vocab");
        std::string_view piece;
        if (auto err = tf.unescaped_key().get(piece)) throw src.fail(err, "model.vocab key");
        std::int64_t id = 0;
        if (auto err = tf.value().get_int64().get(id)) {
            if (!json_error_location(src.text).empty()) throw src.fail(err, "model.vocab");
            throw load_error(src.op, src.path + ": token " + shown(piece),
                             "the id is not an integer (" + std::string(simdjson::error_message(err)) + ")");
        }
        out.push_back({piece, id});
    }
}

/// A Unigram vocabulary: an array of [piece, score]; the id is the position.
inline void read_hf_vocab_array(const hf_source& src, simdjson::ondemand::value& v, std::vector<hf_raw_token>& out) {
    namespace od = simdjson::ondemand;
    od::array vocab;
    if (auto err = v.get_array().get(vocab)) throw src.fail(err, "model.vocab");
    std::int64_t id = 0;
    for (auto item_r : vocab) {
        od::array pair;
        std::string_view piece;
        bool got = false;
        if (!item_r.get_array().get(pair)) {
            for (auto el : pair) {
                if (!got) got = !el.get_string().get(piece);
                else break;
            }
        }
        if (!got) {
            if (!json_error_location(src.text).empty()) throw src.fail(simdjson::INCORRECT_TYPE, "model.vocab");
            throw load_error(src.op, src.path + ": token id " + std::to_string(id), "a Unigram vocab entry must be [piece, score]");
        }
        out.push_back({piece, id++});
    }
}

/// The "model" object: type, byte_fallback and vocab; other fields (merges, dropout, ...) are
/// skipped unparsed.
inline void read_hf_model(const hf_source& src, simdjson::ondemand::value& v, hf_sections& s) {
    namespace od = simdjson::ondemand;
    s.saw_model = true;
    od::object model;
    if (auto err = v.get_object().get(model)) throw src.fail(err, "model (expected an object)");
    for (auto mf_r : model) {
        od::field mf;
        if (auto err = std::move(mf_r).get(mf)) throw src.fail(err, "model");
        std::string_view mkey;
        if (auto err = mf.unescaped_key().get(mkey)) throw src.fail(err, "model key");
        if (mkey == "type") {
            std::string_view t;
            if (auto err = mf.value().get_string().get(t)) throw src.fail(err, "model.type (expected a string)");
            s.model_type.assign(t);
        } else if (mkey == "byte_fallback") {
            bool b = false;
            if (!mf.value().get_bool().get(b)) s.model_byte_fallback = b;
        } else if (mkey == "vocab") {
            s.saw_vocab = true;
            od::json_type vt;
            if (auto err = mf.value().type().get(vt)) throw src.fail(err, "model.vocab");
            if (vt == od::json_type::object) {
                read_hf_vocab_object(src, mf.value(), s.vocab);
            } else if (vt == od::json_type::array) {
                s.vocab_is_array = true;
                read_hf_vocab_array(src, mf.value(), s.vocab);
            } else {
                throw load_error(src.op, src.path + ": model.vocab", "expected an object (BPE) or an array (Unigram)");
            }
        }
    }
}

/// One pass over the top-level object: the model is walked in place (the large arrays are
/// never materialised), the small parts are kept as raw JSON.
[[nodiscard]] inline hf_sections read_hf_sections(const hf_source& src, simdjson::ondemand::object& root) {
    namespace od = simdjson::ondemand;
    hf_sections s;
    for (auto field_r : root) {
        od::field field;
        if (auto err = std::move(field_r).get(field)) throw src.fail(err, "top level");
        std::string_view key;
        if (auto err = field.unescaped_key().get(key)) throw src.fail(err, "top level key");
        if (key == "decoder") read_raw_json_or_null(src, field.value(), s.decoder_json, "decoder");
        else if (key == "normalizer") read_raw_json_or_null(src, field.value(), s.normalizer_json, "normalizer");
        else if (key == "pre_tokenizer") read_raw_json_or_null(src, field.value(), s.pre_tokenizer_json, "pre_tokenizer");
        else if (key == "added_tokens") read_raw_json_or_null(src, field.value(), s.added_tokens_json, "added_tokens");
        else if (key == "model") read_hf_model(src, field.value(), s);
    }
    return s;
}

/// BPE or Unigram, checked against the vocabulary's JSON shape (old BPE files omit the type).
[[nodiscard]] inline std::string hf_model_type(const hf_source& src, const hf_sections& s) {
    if (!s.saw_model) throw load_error(src.op, src.path, "missing the \"model\" object");
    std::string type = s.model_type;
    if (type.empty()) {
        if (s.saw_vocab && !s.vocab_is_array) type = "BPE";
        else throw load_error(src.op, src.path + ": model", "no \"type\": cannot tell the model type");
    }
    if (type != "BPE" && type != "Unigram")
        throw load_error(src.op, src.path + ": model", "unsupported model type " + shown(type) + " (bld supports BPE and Unigram)");
    if (!s.saw_vocab || s.vocab_is_array != (type == "Unigram"))
        throw load_error(src.op, src.path + ": model",
                         type + " model without a " + (type == "Unigram" ? "\"vocab\" array" : "\"vocab\" object"));
    return type;
}

/// Parses one of the small parts into `parser`'s DOM (valid until its next parse).
[[nodiscard]] inline simdjson::dom::element hf_dom(const hf_source& src, simdjson::dom::parser& parser,
                                                   const std::string& json, const char* what) {
    simdjson::dom::element e;
    if (auto err = parser.parse(json).get(e)) throw src.fail(err, what);
    return e;
}

/// The decoder chain as the per-token byte mapping; a model with byte_fallback gets a
/// ByteFallback step even when its decoder has none.
[[nodiscard]] inline token_decoder hf_token_decoder(const hf_source& src, simdjson::dom::parser& parser, const hf_sections& s) {
    token_decoder dec;
    if (!s.decoder_json.empty()) read_decoder(hf_dom(src, parser, s.decoder_json, "decoder"), dec, src.path, src.op);
    if (s.model_byte_fallback && !dec.byte_fallback) {
        // The model emits <0xNN> pieces; without a ByteFallback step the decoder would print
        // them literally, which no text contains. Treat them as bytes, and say so.
        dec.steps.push_back({decode_step::byte_fallback, {}, {}});
        dec.byte_fallback = true;
        dec.notes.push_back("model byte_fallback: <0xNN> pieces are single bytes");
    }
    return dec;
}

/// What the normaliser and the pre-tokeniser do to a text before it is encoded.
[[nodiscard]] inline text_transformations hf_text_transformations(const hf_source& src, simdjson::dom::parser& parser,
                                                                   const hf_sections& s) {
    text_transformations t;
    if (!s.normalizer_json.empty()) read_text_side(hf_dom(src, parser, s.normalizer_json, "normalizer"), t, true);
    if (!s.pre_tokenizer_json.empty()) read_text_side(hf_dom(src, parser, s.pre_tokenizer_json, "pre_tokenizer"), t, false);
    return t;
}

/// An entry of "added_tokens".
struct hf_added_token {
    std::int64_t id;
    std::string content;
    bool special;
    bool normalized;  ///< matched in the normalised text (HuggingFace's default for non-special tokens)
};

[[nodiscard]] inline std::vector<hf_added_token> read_hf_added_tokens(const hf_source& src, simdjson::dom::parser& parser,
                                                                      const std::string& json) {
    std::vector<hf_added_token> added;
    if (json.empty()) return added;
    simdjson::dom::array arr;
    if (hf_dom(src, parser, json, "added_tokens").get_array().get(arr))
        throw load_error(src.op, src.path + ": added_tokens", "expected an array");
    std::size_t k = 0;
    for (auto a : arr) {
        simdjson::dom::object ao;
        std::string_view content;
        const std::string where = src.path + ": added_tokens[" + std::to_string(k++) + "]";
        if (a.get_object().get(ao)) throw load_error(src.op, where, "expected an object");
        if (ao["content"].get_string().get(content)) throw load_error(src.op, where, "missing its \"content\" string");
        simdjson::dom::element idel;
        if (ao["id"].get(idel)) throw load_error(src.op, where, "missing its \"id\"");
        const auto id = token_id(idel, src.path, src.op, shown(content));
        bool special = false;
        read_field(ao, "special", special);
        bool normalized = !special;
        read_field(ao, "normalized", normalized);
        added.push_back({id, std::string(content), special, normalized});
    }
    return added;
}

/// id → index in `added` (−1: none), for ids below the vocabulary limit (the builder reports
/// the others). @throws load_error if two added tokens claim one id.
[[nodiscard]] inline std::vector<std::int32_t> index_hf_added_tokens(const hf_source& src,
                                                                     const std::vector<hf_added_token>& added) {
    std::vector<std::int32_t> added_at;
    for (std::size_t i = 0; i < added.size(); ++i) {
        const auto id = static_cast<std::uint64_t>(added[i].id);
        if (id >= max_vocabulary_ids) continue;
        if (added_at.size() <= id) added_at.resize(id + 1, -1);
        if (added_at[id] >= 0)
            throw load_error(src.op, src.path + ": token id " + std::to_string(id),
                             "duplicate id: added tokens " + shown(added[static_cast<std::size_t>(added_at[id])].content) +
                                 " and " + shown(added[i].content) + " claim it");
        added_at[id] = static_cast<std::int32_t>(i);
    }
    return added_at;
}

/// Decodes every token into the vocabulary. Added tokens define their ids (as in HuggingFace):
/// a model token with the id of an added one is skipped, unless a non-special added token
/// spells it differently (an error).
[[nodiscard]] inline vocabulary build_hf_vocabulary(const hf_source& src, const std::vector<hf_raw_token>& model_tokens,
                                                    const std::vector<hf_added_token>& added, const token_decoder& dec,
                                                    text_transformations t, const std::string& model_type) {
    const std::vector<std::int32_t> added_at = index_hf_added_tokens(src, added);
    vocabulary_builder b(src.path);
    b.reserve(model_tokens.size() + added.size(), src.text.size() / 8);
    std::string& buf = b.pending_bytes();
    for (const auto& r : model_tokens) {
        const auto uid = static_cast<std::uint64_t>(r.id);
        if (r.id >= 0 && uid < added_at.size() && added_at[uid] >= 0) {
            const auto& a = added[static_cast<std::size_t>(added_at[uid])];
            if (!a.special && a.content != r.piece)
                throw load_error(src.op, src.path + ": token id " + std::to_string(r.id),
                                 "duplicate id: model token " + shown(r.piece) + " and added token " + shown(a.content) +
                                     " claim it");
            continue;  // defined by the added token
        }
        dec.decode(r.piece, false, src.path, src.op, r.id, buf);
        b.add_pending(r.id, token_kind::text, r.piece);
    }
    std::vector<std::pair<std::int64_t, std::string>> splits;  // non-special added tokens: the encoder cuts them out first
    bool normalized_split = false;
    for (const auto& a : added) {
        if (a.special) {
            b.add(a.id, {}, token_kind::special, a.content);
        } else {
            dec.decode(a.content, true, src.path, src.op, a.id, buf);
            splits.emplace_back(a.id, buf);
            normalized_split = normalized_split || a.normalized;
            b.add_pending(a.id, token_kind::text, a.content);
        }
    }
    std::sort(splits.begin(), splits.end());
    for (auto& [id, bytes] : splits) {
        t.split_ids.push_back(id);
        t.split_tokens.push_back(std::move(bytes));
    }
    if (normalized_split && t.dummy_prefix == dummy_prefix_rule::always)
        t.notes.push_back("added tokens matched in the normalised text after a Prepend normaliser (\"normalized\": true) "
                          "take the space before them into the token; text= alignment reports where");

    t.notes.insert(t.notes.begin(), "model " + model_type);
    for (const auto& n : dec.notes) t.notes.push_back(n);
    t.decoder_strips_leading_space = dec.strips_leading_space;
    if (dec.strips_leading_space && t.dummy_prefix == dummy_prefix_rule::none)
        t.notes.push_back("the decoder strips one leading space but the encoder adds none");
    return std::move(b).build(std::move(t));
}

} // namespace detail

/// Parses the text of a HuggingFace tokenizer.json.
///
/// The large arrays (model.vocab, model.merges) are walked with simdjson's On-Demand API, so the
/// merges are never materialised; the small parts (decoder, normaliser, pre-tokeniser, added
/// tokens) are parsed into a DOM. Token bytes are decoded once the whole file has been read,
/// since the decoder may come after the model.
/// @throws bld::load_error naming `path`, the token (id and spelling) and the reason.
/// `text` must have at least simdjson::SIMDJSON_PADDING readable bytes past its end
/// (`capacity` ≥ text.size() + 64); the overload taking a std::string copies it.
[[nodiscard]] inline vocabulary parse_hf_tokenizer_json(std::string_view text, std::size_t capacity,
                                                        const std::string& path) {
    const detail::hf_source src{text, path};
    if (capacity < text.size() + simdjson::SIMDJSON_PADDING)
        throw value_error(src.op, path, "the text buffer needs " + std::to_string(simdjson::SIMDJSON_PADDING) + " bytes of padding");
    simdjson::padded_string_view padded(text, capacity);
    simdjson::ondemand::parser parser;  // owns the unescaped vocabulary pieces until the end
    simdjson::ondemand::document doc;
    if (auto err = parser.iterate(padded).get(doc)) throw src.fail(err, "document");
    simdjson::ondemand::object root;
    if (auto err = doc.get_object().get(root)) throw src.fail(err, "top level (expected an object)");

    const detail::hf_sections sections = detail::read_hf_sections(src, root);
    const std::string model_type = detail::hf_model_type(src, sections);
    simdjson::dom::parser small;  // the small parts, one after another
    const detail::token_decoder dec = detail::hf_token_decoder(src, small, sections);
    text_transformations t = detail::hf_text_transformations(src, small, sections);
    const auto added = detail::read_hf_added_tokens(src, small, sections.added_tokens_json);
    return detail::build_hf_vocabulary(src, sections.vocab, added, dec, std::move(t), model_type);
}

/// Parses the text of a HuggingFace tokenizer.json held in a string (copied once for padding).
[[nodiscard]] inline vocabulary parse_hf_tokenizer_json(const std::string& text, const std::string& path) {
    const simdjson::padded_string padded(text);
    return parse_hf_tokenizer_json(std::string_view(padded.data(), padded.size()),
                                   padded.size() + simdjson::SIMDJSON_PADDING, path);
}

/// Loads a HuggingFace tokenizer.json.
[[nodiscard]] inline vocabulary load_hf_tokenizer_json(const std::string& path) {
    const file_bytes f(path, "load tokenizer.json");
    return parse_hf_tokenizer_json(f.view(), f.capacity(), path);
}

/// Parses GPT-2 `encoder.json` (token string → id, GPT-2 byte-level alphabet) and checks
/// `vocab.bpe` (merge list). Tokens named in `specials` (default `<|endoftext|>`) are special.
[[nodiscard]] inline vocabulary parse_gpt2(const std::string& encoder_text, const std::string& encoder_path,
                                          std::string_view merges_text, const std::string& merges_path,
                                          const std::vector<std::string>& specials = {"<|endoftext|>"}) {
    const std::string op = "load GPT-2 encoder.json";
    simdjson::dom::parser parser;
    const auto doc = detail::parse_json(parser, encoder_text, encoder_path, op);
    simdjson::dom::object enc;
    if (doc.get_object().get(enc))
        throw load_error(op, encoder_path, "the top level is " + detail::type_name(doc.type()) + ", expected an object");
    std::vector<token_entry> entries;
    entries.reserve(enc.size());
    for (auto field : enc) {
        const std::string name(field.key);
        const auto id = detail::token_id(field.value, encoder_path, op, detail::shown(name));
        bool special = false;
        for (const auto& s : specials) special = special || s == name;
        if (special) {
            entries.push_back({id, {}, token_kind::special, name});
            continue;
        }
        auto r = decode_byte_level(name);
        if (!r.ok())
            throw load_error(op, encoder_path + ": token id " + std::to_string(id) + " " + detail::shown(name),
                             "character " + code_point_name(r.bad_code_point) + " at byte " +
                                 std::to_string(r.bad_offset) + " is outside the GPT-2 byte-level alphabet");
        entries.push_back({id, std::move(r.bytes), token_kind::text, name});
    }
    // vocab.bpe: an optional "#version" line, then one merge "a b" per line.
    const std::string mop = "load GPT-2 vocab.bpe";
    std::size_t line_no = 0, merges = 0;
    for (std::size_t pos = 0; pos < merges_text.size();) {
        auto end = merges_text.find('\n', pos);
        if (end == std::string_view::npos) end = merges_text.size();
        std::string_view line = merges_text.substr(pos, end - pos);
        pos = end + 1;
        ++line_no;
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
        if (line.empty() || (line_no == 1 && line.starts_with("#version"))) continue;
        const auto sp = line.find(' ');
        if (sp == 0 || sp == std::string_view::npos || sp + 1 == line.size() ||
            line.find(' ', sp + 1) != std::string_view::npos)
            throw load_error(mop, merges_path + ":" + std::to_string(line_no),
                             "expected a merge \"A B\", got \"" + printable(line) + "\"");
        for (auto part : {line.substr(0, sp), line.substr(sp + 1)}) {
            auto r = decode_byte_level(part);
            if (!r.ok())
                throw load_error(mop, merges_path + ":" + std::to_string(line_no),
                                 "character " + code_point_name(r.bad_code_point) +
                                     " is outside the GPT-2 byte-level alphabet");
        }
        ++merges;
    }
    text_transformations t;
    t.notes.push_back("GPT-2 encoder.json, byte-level alphabet; " + std::to_string(merges) + " merges");
    return vocabulary::from_entries(std::move(entries), encoder_path, std::move(t));
}

/// Loads GPT-2 `encoder.json` and `vocab.bpe`.
[[nodiscard]] inline vocabulary load_gpt2(const std::string& encoder_path, const std::string& merges_path,
                                         const std::vector<std::string>& specials = {"<|endoftext|>"}) {
    return parse_gpt2(read_file(encoder_path, "load GPT-2 encoder.json"), encoder_path,
                      read_file(merges_path, "load GPT-2 vocab.bpe"), merges_path, specials);
}

/// Options for load_vocabulary.
struct load_options {
    /// Special tokens of a tiktoken file ("NAME", id); for GPT-2 only the names count
    /// (default: `<|endoftext|>`).
    std::vector<special_token> specials;
};

/// Loads any supported tokenizer: a `tokenizer.json`, a folder holding `tokenizer.json` or
/// `encoder.json` + `vocab.bpe`, an `encoder.json` (with `vocab.bpe` beside it), or a tiktoken
/// rank file (`.tiktoken`, or any file whose first line is "<base64> <rank>").
[[nodiscard]] inline vocabulary load_vocabulary(const std::string& path, const load_options& opt = {}) {
    namespace fs = std::filesystem;
    const std::string op = "load tokenizer";
    std::error_code ec;
    if (!fs::exists(path, ec)) throw load_error(op, path, "no such file or folder");
    std::vector<std::string> gpt2_specials;
    for (const auto& s : opt.specials) gpt2_specials.push_back(s.name);
    if (gpt2_specials.empty()) gpt2_specials.push_back("<|endoftext|>");
    const fs::path p(path);
    if (fs::is_directory(p, ec)) {
        if (fs::exists(p / "tokenizer.json", ec)) return load_hf_tokenizer_json((p / "tokenizer.json").string());
        if (fs::exists(p / "encoder.json", ec) && fs::exists(p / "vocab.bpe", ec))
            return load_gpt2((p / "encoder.json").string(), (p / "vocab.bpe").string(), gpt2_specials);
        throw load_error(op, path, "a folder without tokenizer.json or encoder.json + vocab.bpe");
    }
    if (p.filename() == "encoder.json") {
        const auto merges = p.parent_path() / "vocab.bpe";
        if (!fs::exists(merges, ec)) throw load_error(op, path, "encoder.json without vocab.bpe beside it");
        return load_gpt2(path, merges.string(), gpt2_specials);
    }
    const file_bytes f(path, op);
    const std::string_view text = f.view();
    std::size_t i = 0;
    while (i < text.size() && (text[i] == ' ' || text[i] == '\n' || text[i] == '\r' || text[i] == '\t')) ++i;
    if (p.extension() == ".tiktoken" || (i < text.size() && text[i] != '{' && text[i] != '['))
        return parse_tiktoken(text, path, opt.specials);
    return parse_hf_tokenizer_json(text, f.capacity(), path);
}

} // namespace bld::io
