// bld-cli — a small command-line front end to bld.
//
//   bld-cli inspect FILE [--special NAME=ID]...
//   bld-cli masses  --tokenizer FILE --logits X.npy [--prefix-hex HEX]
//   bld-cli project --tokenizer FILE --logits X.npy --ids IDS.npy --out OUT.npy
//   bld-cli project --tokenizer FILE --bigram B.npy --text-hex HEX --mode exact|beam
//                   [--beam-k K] [--beam-eps E] --out OUT.npy
//   bld-cli project --tokenizer FILE --topk-ids I.npy --topk-logits Z.npy --residual R.npy
//                   --ids IDS.npy --out OUT.npy
//   bld-cli bench-rows --tokenizer FILE --rows N --threads T [--dtype f32|bf16] [--repeats K]
//
// Row convention everywhere: row k of a teacher's logits is the distribution of token k given
// the tokens before it. OUT is float64 [positions, 260]; `--dropped FILE.npy` also writes the
// dropped / pruned mass per position (and `--bound FILE.npy` the top-k TV bound).
//
// FILE is a tokenizer.json, a folder with encoder.json + vocab.bpe (or tokenizer.json), or a
// tiktoken rank file. Output: one JSON object on stdout. Errors: a message on stderr, exit 1
// (exit 2 for a usage error).
#include <bld/bld.hpp>
#include <bld/cpu.hpp>
#include <bld/testing/toy_teachers.hpp>
#include <bld/io/json.hpp>
#include <bld/io/npy.hpp>
#include <bld/backends/simd/row_pass.hpp>

#include <algorithm>
#include <random>

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
    "       bld-cli masses  --tokenizer FILE --logits X.npy [--prefix-hex HEX]\n"
    "       bld-cli project --tokenizer FILE --logits X.npy --ids IDS.npy --out OUT.npy\n"
    "       bld-cli project --tokenizer FILE --bigram B.npy --text-hex HEX --mode exact|beam\n"
    "                       [--beam-k K] [--beam-eps E] --out OUT.npy\n"
    "       bld-cli project --tokenizer FILE --topk-ids I.npy --topk-logits Z.npy --residual R.npy\n"
    "                       --ids IDS.npy --out OUT.npy\n"
    "       bld-cli bench-rows --tokenizer FILE --rows N --threads T [--dtype f32|bf16] [--repeats K]\n"
    "  FILE: tokenizer.json | folder with encoder.json + vocab.bpe | .tiktoken rank file\n"
    "  options common to all: --special NAME=ID (tiktoken specials; GPT-2 special names)\n";

/// Parsed "--key value" options; flags are looked up by name.
struct options {
    std::vector<std::pair<std::string, std::string>> kv;
    std::vector<bld::io::special_token> specials;
    static options parse(const std::vector<std::string>& args, std::initializer_list<const char*> allowed) {
        options o;
        for (std::size_t i = 0; i < args.size(); ++i) {
            std::string key = args[i], value;
            if (!key.starts_with("--")) throw usage_error("unexpected argument " + key);
            if (const auto eq = key.find('='); eq != std::string::npos) {
                value = key.substr(eq + 1);
                key = key.substr(0, eq);
            } else {
                if (i + 1 >= args.size()) throw usage_error(key + " needs a value");
                value = args[++i];
            }
            if (key == "--special") {
                o.specials.push_back(bld::io::parse_special_token(value));
                continue;
            }
            bool ok = false;
            for (const char* a : allowed) ok = ok || key == a;
            if (!ok) throw usage_error("unknown option " + key);
            o.kv.emplace_back(key, value);
        }
        return o;
    }
    [[nodiscard]] std::string get(const std::string& key, const std::string& def = "\x01") const {
        for (const auto& [k, v] : kv)
            if (k == key) return v;
        if (def == "\x01") throw usage_error("missing " + key);
        return def;
    }
    [[nodiscard]] bool has(const std::string& key) const {
        for (const auto& [k, v] : kv)
            if (k == key) return true;
        return false;
    }
};

std::string from_hex(const std::string& h, const char* what) {
    if (h.size() % 2) throw bld::value_error("parse hex", what, "odd number of hex digits");
    std::string out;
    auto v = [&](char c) -> int {
        if (c >= '0' && c <= '9') return c - '0';
        if (c >= 'a' && c <= 'f') return c - 'a' + 10;
        if (c >= 'A' && c <= 'F') return c - 'A' + 10;
        throw bld::value_error("parse hex", what, std::string("bad hex digit '") + c + "'");
    };
    for (std::size_t i = 0; i < h.size(); i += 2) out += static_cast<char>(v(h[i]) * 16 + v(h[i + 1]));
    return out;
}

std::string num(double x) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.17g", x);
    return buf;
}

bld::byte_trie load_trie(const options& o) {
    return bld::byte_trie(bld::io::load_vocabulary(o.get("--tokenizer"), {o.specials}));
}

/// Reads a 2-D float32 .npy of logits.
std::vector<float> read_rows(const std::string& path, std::int64_t& rows, std::int64_t& cols) {
    const auto a = bld::io::read_npy(path);
    if (a.shape.size() != 2)
        throw bld::shape_error("read logits", path, "expected a 2-D array [rows, n], got " + std::to_string(a.shape.size()) + " dimensions");
    if (a.descr != "<f4" && a.descr != "<f8") throw bld::shape_error("read logits", path, "expected float32 logits, got " + a.descr);
    rows = a.shape[0];
    cols = a.shape[1];
    return a.as<float>();
}

std::vector<std::int64_t> read_ids(const std::string& path) {
    const auto a = bld::io::read_npy(path);
    if (a.shape.size() != 1) throw bld::shape_error("read ids", path, "expected a 1-D array of token ids");
    if (a.descr != "<i4" && a.descr != "<i8") throw bld::shape_error("read ids", path, "expected int32 or int64 ids, got " + a.descr);
    return a.as<std::int64_t>();
}

void write_result(const options& o, const bld::byte_distributions& d) {
    bld::io::write_npy(o.get("--out"), d.probs.data(), {static_cast<std::int64_t>(d.positions), 260});
    if (o.has("--dropped")) bld::io::write_npy(o.get("--dropped"), d.dropped.data(), {static_cast<std::int64_t>(d.positions)});
    if (o.has("--bound")) bld::io::write_npy(o.get("--bound"), d.bound.data(), {static_cast<std::int64_t>(d.positions)});
}

int cmd_masses(const std::vector<std::string>& args) {
    const auto o = options::parse(args, {"--tokenizer", "--logits", "--prefix-hex"});
    const auto trie = load_trie(o);
    std::int64_t R = 0, n = 0;
    const auto rows = read_rows(o.get("--logits"), R, n);
    const std::string prefix = from_hex(o.get("--prefix-hex", ""), "--prefix-hex");
    const auto bins = bld::root_bins(trie);
    std::string out = "{\"rows\":[";
    for (std::int64_t r = 0; r < R; ++r) {
        const std::span<const float> row(rows.data() + r * n, static_cast<std::size_t>(n));
        const auto m = bld::reference::masses_for_prefix(trie, bins, row, prefix, static_cast<std::size_t>(r));
        out += (r ? ",{" : "{");
        out += "\"node\":" + num(m.node) + ",\"end\":" + num(m.end) + ",\"stop\":" + num(m.stop) + ",\"children\":[";
        for (int a = 0; a < 256; ++a) out += (a ? "," : "") + num(m.children[static_cast<std::size_t>(a)]);
        out += "]}";
    }
    out += "]}";
    std::cout << out << "\n";
    return 0;
}

int cmd_project(const std::vector<std::string>& args) {
    const auto o = options::parse(args, {"--tokenizer", "--logits", "--ids", "--out", "--bigram", "--text-hex", "--mode",
                                         "--beam-k", "--beam-eps", "--topk-ids", "--topk-logits", "--residual", "--dropped",
                                         "--bound", "--text"});
    const auto trie = load_trie(o);
    if (o.has("--bigram")) {
        std::int64_t R = 0, n = 0;
        const auto table = read_rows(o.get("--bigram"), R, n);
        bld::testing::bigram_teacher teacher(bld::tensor_view<const float, 2>(table.data(), {R, n}), trie.vocab().size());
        const std::string text = from_hex(o.get("--text-hex"), "--text-hex");
        const std::string mode = o.get("--mode", "exact");
        if (mode == "exact") {
            write_result(o, bld::exact_covering(trie, teacher, text));
        } else if (mode == "beam") {
            bld::beam_options bo;
            bo.k = static_cast<std::size_t>(std::stoul(o.get("--beam-k", "10")));
            bo.epsilon = std::stod(o.get("--beam-eps", "0.01"));
            write_result(o, bld::covering_beam(trie, teacher, text, bo));
        } else {
            throw usage_error("--mode must be exact or beam");
        }
        return 0;
    }
    const auto ids = read_ids(o.get("--ids"));
    std::optional<std::string> text;
    if (o.has("--text-hex")) text = from_hex(o.get("--text-hex"), "--text-hex");
    std::optional<std::string_view> tv;
    if (text) tv = *text;
    if (o.has("--topk-ids")) {
        const auto ia = bld::io::read_npy(o.get("--topk-ids"));
        std::int64_t R = 0, K = 0;
        const auto z = read_rows(o.get("--topk-logits"), R, K);
        const auto tid = ia.as<std::int64_t>();
        if (ia.shape.size() != 2 || ia.shape[0] != R || ia.shape[1] != K)
            throw bld::shape_error("read top-k rows", o.get("--topk-ids"), "ids must have the shape of the logits [rows, k]");
        const auto res = bld::io::read_npy(o.get("--residual")).as<double>();
        bld::topk_rows tr(trie, bld::tensor_view<const std::int64_t, 2>(tid.data(), {R, K}),
                          bld::tensor_view<const float, 2>(z.data(), {R, K}), res);
        write_result(o, bld::canonical_path_topk(trie, tr, ids, tv));
        return 0;
    }
    std::int64_t R = 0, n = 0;
    const auto rows = read_rows(o.get("--logits"), R, n);
    write_result(o, bld::reference::canonical_path(trie, bld::tensor_view<const float, 2>(rows.data(), {R, n}), ids, tv));
    return 0;
}

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

/// bench-rows: N random rows [N, V] in memory, the fast row pass (summarize_rows) on T threads,
/// and a streaming read of the same bytes on T threads, each timed K times; medians per row.
template <class T>
int bench_rows(const bld::byte_trie& trie, std::size_t N, std::size_t threads, std::size_t repeats, const char* dtype) {
    const bld::row_plan plan(trie);
    const std::size_t V = plan.vocab_size();
    std::vector<T> rows(N * V);
    std::mt19937 rng(42);
    std::normal_distribution<float> g(0.0f, 3.0f);
    for (auto& x : rows) x = T(g(rng));
    const bld::tensor_view<const T, 2> rv(rows.data(), {static_cast<std::int64_t>(N), static_cast<std::int64_t>(V)});
    std::vector<bld::row_summary> out(N);
    bld::summarize_rows(plan, rv, std::span<bld::row_summary>(out), {threads}); // warm-up
    const auto ref = bld::reference::summarize_row(trie, plan.bins(), std::span<const T>(rows.data(), V), 0);
    double err = std::abs(out[0].log_normalizer - ref.log_normalizer);
    for (std::size_t a = 0; a < 257; ++a) err = std::max(err, std::abs(out[0].root[a] - ref.root[a]) / std::max(ref.root[a], 1e-300));
    const auto median_us = [&](auto&& f) {
        std::vector<double> t;
        for (std::size_t k = 0; k < repeats; ++k) {
            const auto t0 = std::chrono::steady_clock::now();
            f();
            t.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
        }
        std::sort(t.begin(), t.end());
        return t[t.size() / 2] / static_cast<double>(N);
    };
    const double us = median_us([&] { bld::summarize_rows(plan, rv, std::span<bld::row_summary>(out), {threads}); });
    std::vector<std::uint32_t> sink(threads);
    const std::size_t bytes = N * V * sizeof(T);
    const double stream_us = median_us([&] {
        bld::parallel_for(N, {threads}, [&](std::size_t b, std::size_t e, std::size_t w) {
            sink[w] += bld::simd::stream_read(rows.data() + b * V, (e - b) * V * sizeof(T));
        });
    });
    const double gb = static_cast<double>(bytes) / static_cast<double>(N) / 1e3; // per row, GB per µs·1e-6
    std::cout << "{\"command\":\"bench-rows\",\"tokenizer\":" << json_string(trie.vocab().source()) << ",\"vocab\":" << V
              << ",\"rows\":" << N << ",\"threads\":" << threads << ",\"dtype\":\"" << dtype << "\",\"simd\":\""
              << bld::simd::to_string(bld::simd::default_level()) << "\",\"repeats\":" << repeats << ",\"us_per_row\":" << num(us)
              << ",\"stream_us_per_row\":" << num(stream_us) << ",\"ratio_to_stream\":" << num(us / stream_us)
              << ",\"rows_per_s\":" << num(1e6 / us) << ",\"gb_per_s\":" << num(gb / us) << ",\"stream_gb_per_s\":" << num(gb / stream_us)
              << ",\"max_rel_err_vs_reference\":" << num(err) << ",\"checksum\":" << (sink[0] & 1u) << "}\n";
    return 0;
}

int cmd_bench_rows(const std::vector<std::string>& args) {
    const auto o = options::parse(args, {"--tokenizer", "--rows", "--threads", "--dtype", "--repeats"});
    const auto trie = load_trie(o);
    const auto count = [&](const char* key, const char* def) {
        const long v = std::stol(o.get(key, def));
        if (v < 1) throw usage_error(std::string(key) + " must be at least 1");
        return static_cast<std::size_t>(v);
    };
    const std::size_t N = count("--rows", "\x01"), T = count("--threads", "1"), K = count("--repeats", "7");
    const std::string dtype = o.get("--dtype", "f32");
    if (dtype == "f32") return bench_rows<float>(trie, N, T, K, "f32");
    if (dtype == "bf16") return bench_rows<bld::bf16>(trie, N, T, K, "bf16");
    throw usage_error("--dtype must be f32 or bf16");
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
        if (cmd == "masses") return cmd_masses(args);
        if (cmd == "project") return cmd_project(args);
        if (cmd == "bench-rows") return cmd_bench_rows(args);
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
