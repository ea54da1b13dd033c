// bld-cli — a small command-line front end to bld.
//
//   bld-cli inspect FILE [--special NAME=ID]...
//
// FILE is a tokenizer.json, a folder with encoder.json + vocab.bpe (or tokenizer.json), or a
// tiktoken rank file. Output: one JSON object on stdout. Errors: a message on stderr, exit 1
// (exit 2 for a usage error).
#include <bld/bld.hpp>
#include <bld/io/json.hpp>

#include <chrono>
#include <cstdio>
#include <iostream>
#include <string>
#include <string_view>
#include <vector>

namespace {

std::string json_string(std::string_view s) {
    std::string o = "\"";
    for (unsigned char c : s) {
        switch (c) {
        case '"': o += "\\\""; break;
        case '\\': o += "\\\\"; break;
        case '\n': o += "\\n"; break;
        case '\t': o += "\\t"; break;
        default:
            if (c < 0x20) {
                char buf[8];
                std::snprintf(buf, sizeof buf, "\\u%04x", c);
                o += buf;
            } else {
                o += static_cast<char>(c);
            }
        }
    }
    return o + "\"";
}

struct usage_error : std::runtime_error {
    using std::runtime_error::runtime_error;
};

constexpr const char* usage_text =
    "usage: bld-cli inspect FILE [--special NAME=ID]...\n"
    "  FILE: tokenizer.json | folder with encoder.json + vocab.bpe | .tiktoken rank file\n";

int cmd_inspect(const std::vector<std::string>& args) {
    std::string file;
    bld::io::load_options opt;
    for (std::size_t i = 0; i < args.size(); ++i) {
        if (args[i] == "--special") {
            if (i + 1 >= args.size()) throw usage_error("--special needs NAME=ID");
            opt.specials.push_back(bld::io::parse_special_token(args[++i]));
        } else if (args[i].starts_with("--special=")) {
            opt.specials.push_back(bld::io::parse_special_token(std::string_view(args[i]).substr(10)));
        } else if (file.empty() && !args[i].starts_with("--")) {
            file = args[i];
        } else {
            throw usage_error("unexpected argument " + args[i]);
        }
    }
    if (file.empty()) throw usage_error("inspect needs a FILE");
    using clock = std::chrono::steady_clock;
    const auto t0 = clock::now();
    bld::vocabulary v = bld::io::load_vocabulary(file, opt);
    const auto t1 = clock::now();
    const auto n_ids = v.size();
    const auto dups = v.duplicate_ids();
    bld::byte_trie trie(std::move(v));
    const auto t2 = clock::now();
    const auto& voc = trie.vocab();
    const auto& tr = voc.transformations();
    const char* prefix = tr.dummy_prefix == bld::dummy_prefix_rule::always      ? "always"
                         : tr.dummy_prefix == bld::dummy_prefix_rule::if_absent ? "if_absent"
                                                                                : "none";
    std::string out = "{";
    out += "\"source\":" + json_string(file);
    out += ",\"vocab_size\":" + std::to_string(n_ids);
    out += ",\"text_tokens\":" + std::to_string(voc.text_tokens());
    out += ",\"special_tokens\":" + std::to_string(voc.special_tokens());
    out += ",\"absent_ids\":" + std::to_string(n_ids - voc.text_tokens() - voc.special_tokens());
    out += ",\"duplicate_byte_strings\":" + std::to_string(dups.size());
    out += ",\"max_token_bytes\":" + std::to_string(voc.max_token_bytes());
    out += ",\"trie_nodes\":" + std::to_string(trie.node_count());
    out += ",\"trie_bytes_per_node\":" + std::to_string(sizeof(bld::trie_node));
    out += ",\"trie_memory_bytes\":" + std::to_string(trie.memory_bytes());
    out += ",\"load_seconds\":" + std::to_string(std::chrono::duration<double>(t2 - t0).count());
    out += ",\"parse_seconds\":" + std::to_string(std::chrono::duration<double>(t1 - t0).count());
    out += ",\"trie_seconds\":" + std::to_string(std::chrono::duration<double>(t2 - t1).count());
    out += ",\"dummy_prefix\":" + json_string(prefix);
    out += ",\"normalizer\":" + json_string(tr.normalizer);
    out += ",\"special_names\":[";
    std::size_t k = 0;
    for (const auto& [name, id] : voc.specials()) {
        if (k == 8) { out += ",\"...\""; break; }
        out += (k++ ? "," : "") + json_string(name);
    }
    out += "],\"notes\":[";
    k = 0;
    for (const auto& n : tr.notes) out += (k++ ? "," : "") + json_string(n);
    out += "]}";
    std::cout << out << "\n";
    return 0;
}

} // namespace

int main(int argc, char** argv) {
    std::vector<std::string> args(argv + 1, argv + argc);
    if (args.empty() || args[0] == "--help" || args[0] == "-h") {
        std::cerr << usage_text;
        return args.empty() ? 2 : 0;
    }
    const std::string cmd = args[0];
    args.erase(args.begin());
    try {
        if (cmd == "inspect") return cmd_inspect(args);
        throw usage_error("unknown command " + cmd);
    } catch (const usage_error& e) {
        std::cerr << "bld-cli: " << e.what() << "\n" << usage_text;
        return 2;
    } catch (const bld::error& e) {
        std::cerr << "bld-cli: error: " << e.what() << "\n";
        return 1;
    } catch (const std::exception& e) {
        std::cerr << "bld-cli: internal error: " << e.what() << "\n";
        return 3;
    }
}
