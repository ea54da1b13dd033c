// bld-cli — a small command-line front end to bld.
//
//   bld-cli inspect FILE [--special NAME=ID]...
//   bld-cli masses  --tokenizer FILE --logits X.npy [--prefix-hex HEX]
//   bld-cli project --tokenizer FILE --logits X.npy --ids IDS.npy --out OUT.npy [--reference]
//   bld-cli project --tokenizer FILE --bigram B.npy --text-hex HEX --mode exact|beam|repair
//                   [--beam-k K] [--beam-eps E] [--ids IDS.npy --drop-threshold X] --out OUT.npy [--stats]
//   bld-cli project --tokenizer FILE --topk-ids I.npy --topk-logits Z.npy --residual R.npy
//                   --ids IDS.npy --out OUT.npy
//   bld-cli bench-rows --tokenizer FILE --rows N --threads T [--dtype f32|bf16] [--repeats K]
//   bld-cli bench-targets --teacher FILE --student FILE [--threads T] [--texts DIR] [--trie-order]
//                   [--heads K] [--dtype f32|bf16] [--sequences N] [--repeats R]
//                   [--reference-sequences M] [--min-tokens A] [--max-tokens B]
//
// `project --logits` runs the canonical path on the fast row pass (bld::canonical_path(row_plan,
// …): within relative 1e-5 of the reference on every conditional at a node of mass ≥ 1e-12);
// `--reference` runs the fp64 scalar reference (bld::reference::canonical_path) instead.
//
// bench-targets times the trainer's whole route on real text (see cmd_bench_targets below): a
// padded batch of teacher rows -> bld::distiller -> compact slot targets, beside a streaming
// read of the same rows and the old route (bld::canonical_targets, one text at a time).
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

#include <bld/targets/distiller.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <random>
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
    "       bld-cli project --tokenizer FILE --logits X.npy --ids IDS.npy --out OUT.npy [--reference]\n"
    "       bld-cli project --tokenizer FILE --bigram B.npy --text-hex HEX --mode exact|beam|repair\n"
    "                       [--beam-k K] [--beam-eps E] [--ids IDS.npy --drop-threshold X] --out OUT.npy\n"
    "  project: --dropped D.npy writes the dropped mass per position; --stats prints one JSON object\n"
    "  (positions, teacher_rows, mean_dropped, repaired, recoveries)\n"
    "       bld-cli project --tokenizer FILE --topk-ids I.npy --topk-logits Z.npy --residual R.npy\n"
    "                       --ids IDS.npy --out OUT.npy\n"
    "       bld-cli bench-rows --tokenizer FILE --rows N --threads T [--dtype f32|bf16] [--repeats K]\n"
    "       bld-cli bench-targets --teacher FILE --student FILE [--threads T] [--texts DIR] [--trie-order]\n"
    "                       [--heads K] [--dtype f32|bf16] [--sequences N] [--repeats R]\n"
    "                       [--reference-sequences M] [--min-tokens A] [--max-tokens B]\n"
    "  FILE: tokenizer.json | folder with encoder.json + vocab.bpe | .tiktoken rank file\n"
    "  options common to all: --special NAME=ID (tiktoken specials; GPT-2 special names)\n";

/// Parsed "--key value" options; flags are looked up by name.
struct options {
    std::vector<std::pair<std::string, std::string>> kv;
    std::vector<bld::io::special_token> specials;
    /// `allowed` take a value; `flags` stand alone (present or not).
    static options parse(const std::vector<std::string>& args, std::initializer_list<const char*> allowed,
                         std::initializer_list<const char*> flags = {}) {
        options o;
        for (std::size_t i = 0; i < args.size(); ++i) {
            std::string key = args[i], value;
            if (!key.starts_with("--")) throw usage_error("unexpected argument " + key);
            bool flag = false;
            for (const char* f : flags) flag = flag || key == f;
            if (flag) {
                o.kv.emplace_back(key, "");
                continue;
            }
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
    if (o.has("--stats")) {
        // One JSON object: the positions, the rows the teacher was asked for (the covering
        // methods and the repaired path count them; 0 where the rows were given), the mean
        // dropped / pruned mass per position, and the positions the repair's beam ran at.
        double dropped = 0;
        for (double x : d.dropped) dropped += x;
        std::cout << "{\"positions\":" << d.positions << ",\"teacher_rows\":" << d.teacher_rows
                  << ",\"mean_dropped\":" << num(d.positions ? dropped / static_cast<double>(d.positions) : 0.0)
                  << ",\"repaired\":" << d.repaired << ",\"recoveries\":" << d.recoveries << "}\n";
    }
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
                                         "--bound", "--text", "--drop-threshold"},
                                  {"--reference", "--stats"});
    const auto trie = load_trie(o);
    if (o.has("--bigram")) {
        std::int64_t R = 0, n = 0;
        const auto table = read_rows(o.get("--bigram"), R, n);
        bld::testing::bigram_teacher teacher(bld::tensor_view<const float, 2>(table.data(), {R, n}), trie.vocab().size());
        const std::string text = from_hex(o.get("--text-hex"), "--text-hex");
        const std::string mode = o.get("--mode", "exact");
        bld::beam_options bo;
        bo.k = static_cast<std::size_t>(std::stoul(o.get("--beam-k", "10")));
        bo.epsilon = std::stod(o.get("--beam-eps", "0.01"));
        if (mode == "exact") {
            write_result(o, bld::exact_covering(trie, teacher, text));
        } else if (mode == "beam") {
            write_result(o, bld::covering_beam(trie, teacher, text, bo));
        } else if (mode == "repair") {
            // The canonical path along --ids, repaired by the local beam where it dropped at least
            // --drop-threshold of the mass.
            if (!o.has("--ids")) throw usage_error("--mode repair needs --ids (the teacher's tokenization of the text)");
            const auto ids = read_ids(o.get("--ids"));
            const bld::repair_options ro{std::stod(o.get("--drop-threshold", "0.05")), bo};
            write_result(o, bld::repaired_path(trie, teacher, text, ids, ro));
        } else {
            throw usage_error("--mode must be exact, beam or repair");
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
    const bld::tensor_view<const float, 2> rv(rows.data(), {R, n});
    if (o.has("--reference")) {
        write_result(o, bld::reference::canonical_path(trie, rv, ids, tv));
    } else {
        const bld::row_plan plan(trie);
        write_result(o, bld::canonical_path(plan, rv, ids, tv));
    }
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
    const char* prefix = bld::to_string(tr.dummy_prefix);
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


// ---- bench-targets ---------------------------------------------------------------------------

/// Where scripts/fetch-data.sh puts a tokenizer: <data>/tokenizers/<name>/ holding tokenizer.json,
/// encoder.json + vocab.bpe or a .tiktoken file; the reference encodings of its texts are
/// <data>/ref/<name>.encode.tsv. Returns <name> and <data>/ref for FILE (a file or a folder).
std::pair<std::string, std::filesystem::path> encodings_place(const std::string& file) {
    namespace fs = std::filesystem;
    fs::path p = fs::absolute(fs::path(file)).lexically_normal();
    if (p.filename().empty()) p = p.parent_path(); // "folder/"
    if (!fs::is_directory(p)) p = p.parent_path();
    return {p.filename().string(), p.parent_path().parent_path() / "ref"};
}

/// One line of <name>.encode.tsv: corpus, the text's bytes in hex, the reference encoder's ids.
struct encoded_text {
    std::string text;
    std::vector<std::int64_t> ids;
};

std::vector<encoded_text> read_encodings(const std::filesystem::path& path) {
    const char* op = "bench-targets: read reference encodings";
    std::ifstream f(path, std::ios::binary);
    if (!f)
        throw bld::value_error(op, path.string(),
                               "cannot read it (run scripts/fetch-data.sh, or name the folder of <name>.encode.tsv with --texts)");
    std::vector<encoded_text> out;
    std::string line;
    for (std::size_t n = 1; std::getline(f, line); ++n) {
        const auto t1 = line.find('\t'), t2 = t1 == std::string::npos ? t1 : line.find('\t', t1 + 1);
        if (t2 == std::string::npos)
            throw bld::value_error(op, path.string() + ", line " + std::to_string(n), "expected corpus<TAB>hex text<TAB>ids");
        encoded_text e{from_hex(line.substr(t1 + 1, t2 - t1 - 1), "text"), {}};
        const char* p = line.c_str() + t2 + 1;
        while (*p != '\0') {
            char* end = nullptr;
            const long long id = std::strtoll(p, &end, 10);
            if (end == p)
                throw bld::value_error(op, path.string() + ", line " + std::to_string(n), "bad token id list");
            e.ids.push_back(id);
            p = end;
            while (*p == ' ') ++p;
        }
        out.push_back(std::move(e));
    }
    return out;
}

/// The texts of the run: `count` records whose teacher encoding has lo..hi tokens (and the
/// student's at least 4), evenly spaced over the file (the corpora follow one another in it).
std::vector<std::size_t> pick_texts(const std::vector<encoded_text>& te, const std::vector<encoded_text>& se,
                                    std::size_t count, std::size_t lo, std::size_t hi) {
    const char* op = "bench-targets: pick texts";
    if (te.size() != se.size())
        throw bld::value_error(op, "reference encodings",
                               "the teacher's file has " + std::to_string(te.size()) + " texts, the student's " +
                                   std::to_string(se.size()));
    std::vector<std::size_t> ok;
    for (std::size_t i = 0; i < te.size(); ++i) {
        if (te[i].text != se[i].text)
            throw bld::value_error(op, "reference encodings, line " + std::to_string(i + 1),
                                   "the teacher's and the student's files encode different texts here");
        if (te[i].ids.size() >= lo && te[i].ids.size() <= hi && se[i].ids.size() >= 4) ok.push_back(i);
    }
    if (ok.size() < count)
        throw bld::value_error(op, "--sequences",
                               "asked for " + std::to_string(count) + " texts of " + std::to_string(lo) + ".." +
                                   std::to_string(hi) + " teacher tokens, the files have " + std::to_string(ok.size()));
    std::vector<std::size_t> r;
    for (std::size_t k = 0; k < count; ++k) r.push_back(ok[k * ok.size() / count]);
    return r;
}

double median_of(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    const std::size_t n = v.size();
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

template <class F>
double seconds(F&& f) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

struct bench_targets_args {
    std::shared_ptr<const bld::byte_trie> teacher;
    std::shared_ptr<const bld::vocabulary> student;
    std::vector<encoded_text> te, se;
    std::string teacher_file, student_file, dtype;
    std::size_t threads = 1, heads = 10, sequences = 16, repeats = 7, reference_sequences = 2, lo = 32, hi = 64;
    bool trie_order = false;
};

/// The whole route, timed: see cmd_bench_targets.
template <class T>
int bench_targets(const bench_targets_args& a) {
    const char* op = "bench-targets";
    const auto recs = pick_texts(a.te, a.se, a.sequences, a.lo, a.hi);
    const bld::distiller d(a.teacher, a.student,
                           {.heads = a.heads, .rows = a.trie_order ? bld::row_order::trie : bld::row_order::id,
                            .parallel = {a.threads}});
    const auto V = static_cast<std::int64_t>(d.plan().vocab_size());
    const auto B = static_cast<std::int64_t>(recs.size());
    std::int64_t St = 0, Ss = 0, teacher_rows = 0, student_tokens = 0;
    std::vector<std::int64_t> tlen, slen;
    for (const auto r : recs) {
        tlen.push_back(static_cast<std::int64_t>(a.te[r].ids.size()));
        slen.push_back(static_cast<std::int64_t>(a.se[r].ids.size()));
        St = std::max(St, tlen.back());
        Ss = std::max(Ss, slen.back());
        teacher_rows += tlen.back();
        student_tokens += slen.back();
    }
    // Teacher rows [B, S_t, V] in id order, right-padded: each valid row a window of a pool of
    // N(0, 3) draws at a random offset (cheap to make, every entry N(0, 3)); padding rows stay 0
    // and are never read. Ids [B, S_t] and [B, S_s], padded with 0 past each sequence's length.
    std::vector<float> pool(std::size_t{1} << 22);
    std::mt19937_64 rng(42);
    std::normal_distribution<float> g(0.0f, 3.0f);
    for (auto& x : pool) x = g(rng);
    std::vector<T> rows(static_cast<std::size_t>(B * St * V));
    std::vector<std::int64_t> tids(static_cast<std::size_t>(B * St), 0), sids(static_cast<std::size_t>(B * Ss), 0);
    std::vector<const T*> valid; // the rows the route reads, in batch order
    for (std::int64_t b = 0; b < B; ++b) {
        const auto& t = a.te[recs[static_cast<std::size_t>(b)]].ids;
        const auto& s = a.se[recs[static_cast<std::size_t>(b)]].ids;
        std::copy(t.begin(), t.end(), tids.begin() + b * St);
        std::copy(s.begin(), s.end(), sids.begin() + b * Ss);
        for (std::int64_t q = 0; q < tlen[static_cast<std::size_t>(b)]; ++q) {
            const std::size_t off = rng() % (pool.size() - static_cast<std::size_t>(V));
            T* row = rows.data() + (b * St + q) * V;
            for (std::int64_t c = 0; c < V; ++c) row[c] = T(pool[off + static_cast<std::size_t>(c)]);
        }
    }
    // Trie order: the same rows, their columns permuted once by the distiller's permutation().
    std::vector<T> sorted;
    const auto W = static_cast<std::int64_t>(d.row_width());
    if (a.trie_order) {
        const auto perm = d.permutation();
        sorted.resize(static_cast<std::size_t>(B * St * W));
        for (std::int64_t r = 0; r < B * St; ++r)
            for (std::int64_t c = 0; c < W; ++c)
                sorted[static_cast<std::size_t>(r * W + c)] = rows[static_cast<std::size_t>(r * V + perm[static_cast<std::size_t>(c)])];
    }
    const T* base = a.trie_order ? sorted.data() : rows.data();
    for (std::int64_t b = 0; b < B; ++b)
        for (std::int64_t q = 0; q < tlen[static_cast<std::size_t>(b)]; ++q) valid.push_back(base + (b * St + q) * W);
    bld::distill_batch<T> batch;
    batch.teacher_logits = bld::tensor_view<const T, 3>(base, {B, St, W});
    batch.teacher_ids = bld::tensor_view<const std::int64_t, 2>(tids.data(), {B, St});
    batch.student_ids = bld::tensor_view<const std::int64_t, 2>(sids.data(), {B, Ss});
    batch.ranges.teacher_lengths = tlen;
    batch.ranges.student_lengths = slen;

    // Check before timing: the first M sequences against bld::canonical_targets (the fp64
    // reference projection, id-ordered rows, one text at a time): the mask and true bytes equal,
    // every value within the projection's relative 1e-5 plus float32 storage (2e-5 relative, 1e-7
    // absolute). The reference runs are also the baseline's first timing.
    const std::size_t M = std::min(a.reference_sequences, recs.size());
    const auto K = static_cast<std::int64_t>(a.heads);
    const auto reference_run = [&](std::vector<bld::slot_targets>* keep) {
        for (std::size_t b = 0; b < M; ++b) {
            const auto& te = a.te[recs[b]];
            const bld::tensor_view<const T, 2> view(rows.data() + static_cast<std::int64_t>(b) * St * V, {tlen[b], V});
            auto r = bld::canonical_targets(*a.student, a.se[recs[b]].ids, *a.teacher, view, te.ids, a.heads,
                                            std::string_view(te.text));
            if (keep) keep->push_back(std::move(r));
        }
    };
    std::vector<bld::slot_targets> want;
    std::vector<double> t_ref{seconds([&] { reference_run(&want); })};
    const auto got = d.targets(batch);
    const auto values = got.values_f32();
    const auto slots = got.slots();
    double max_err = 0.0;
    std::int64_t checked = 0;
    for (std::size_t b = 0; b < M; ++b) {
        const auto& w = want[b];
        for (std::int64_t p = 0; p < Ss; ++p)
            for (std::int64_t k = 0; k < K; ++k) {
                const std::int64_t slot = (static_cast<std::int64_t>(b) * Ss + p) * K + k;
                const bool active = p < slen[b] && w.alignment.mask[static_cast<std::size_t>(p * K + k)] != 0;
                const std::string where = "sequence " + std::to_string(b) + ", position " + std::to_string(p) + ", head " + std::to_string(k);
                if ((got.mask().data()[slot] != 0) != active)
                    throw bld::value_error(op, where, "the distiller's slot mask differs from canonical_targets'");
                if (!active) continue;
                const auto ws = static_cast<std::size_t>(p * K + k);
                if (got.true_bytes().data()[slot] != w.alignment.true_byte[ws])
                    throw bld::value_error(op, where, "the distiller's true byte differs from canonical_targets'");
                const auto it = std::lower_bound(slots.data(), slots.data() + slots.extent(0), slot);
                const float* row = values.data() + (it - slots.data()) * 260;
                for (std::size_t c = 0; c < 260; ++c) {
                    const double ref = w.targets[ws * 260 + c], err = std::abs(row[c] - ref);
                    if (!(err <= 2e-5 * ref + 1e-7))
                        throw bld::value_error(op, where + ", byte " + std::to_string(c),
                                               "the distiller's target " + num(row[c]) + " differs from canonical_targets' " +
                                                   num(ref) + " by more than the tolerance (2e-5 relative + 1e-7)");
                    if (ref >= 1e-6) max_err = std::max(max_err, err / ref);
                }
                ++checked;
            }
    }
    if (checked == 0) throw bld::value_error(op, "--reference-sequences", "the checked sequences have no active slot");

    // Timing, interleaved so that each ratio sees the same machine load: per repeat, a streaming
    // read of the rows the route reads (the same threads, rows split evenly), then the route.
    std::vector<std::uint32_t> sink(a.threads + 1, 0);
    const std::size_t row_bytes = static_cast<std::size_t>(W) * sizeof(T);
    const auto stream = [&] {
        bld::parallel_for(valid.size(), {a.threads}, [&](std::size_t b, std::size_t e, std::size_t w) {
            for (std::size_t r = b; r < e; ++r) sink[w] += bld::simd::stream_read(valid[r], row_bytes);
        });
    };
    std::vector<double> t_route, t_stream;
    std::int64_t active = 0;
    stream();
    for (std::size_t r = 0; r < a.repeats; ++r) {
        t_stream.push_back(seconds(stream));
        t_route.push_back(seconds([&] { active = d.targets(batch).active_slots(); }));
    }
    // The old route on the first M sequences, one text at a time (it has no threads).
    std::int64_t ref_rows = 0;
    for (std::size_t b = 0; b < M; ++b) ref_rows += tlen[b];
    for (std::size_t r = 1; r < std::min<std::size_t>(a.repeats, 3); ++r) t_ref.push_back(seconds([&] { reference_run(nullptr); }));

    const double us = median_of(t_route) * 1e6 / static_cast<double>(teacher_rows);
    const double stream_us = median_of(t_stream) * 1e6 / static_cast<double>(teacher_rows);
    const double ref_us = median_of(t_ref) * 1e6 / static_cast<double>(ref_rows);
    const double route_s = median_of(t_route);
    std::uint32_t check = 0;
    for (const auto x : sink) check ^= x;
    std::cout << "{\"command\":\"bench-targets\",\"teacher\":" << json_string(a.teacher_file)
              << ",\"student\":" << json_string(a.student_file) << ",\"vocab\":" << V << ",\"row_width\":" << W
              << ",\"order\":\"" << (a.trie_order ? "trie" : "id") << "\",\"dtype\":\"" << a.dtype
              << "\",\"simd\":\"" << bld::simd::to_string(bld::simd::default_level()) << "\",\"threads\":" << a.threads
              << ",\"heads\":" << a.heads << ",\"sequences\":" << B << ",\"teacher_rows\":" << teacher_rows
              << ",\"student_tokens\":" << student_tokens << ",\"slots\":" << active
              << ",\"repeats\":" << a.repeats << ",\"us_per_teacher_row\":" << num(us)
              << ",\"stream_us_per_row\":" << num(stream_us) << ",\"ratio_to_stream\":" << num(us / stream_us)
              << ",\"reference_us_per_teacher_row\":" << num(ref_us) << ",\"speedup_vs_reference\":" << num(ref_us / us)
              << ",\"reference_sequences\":" << M << ",\"reference_teacher_rows\":" << ref_rows
              << ",\"reference_repeats\":" << t_ref.size() << ",\"rows_per_s\":" << num(static_cast<double>(teacher_rows) / route_s)
              << ",\"slots_per_s\":" << num(static_cast<double>(active) / route_s)
              << ",\"us_per_slot\":" << num(route_s * 1e6 / static_cast<double>(active))
              << ",\"reference_check\":\"passed\",\"checked_slots\":" << checked << ",\"max_rel_err_vs_reference\":" << num(max_err)
              << ",\"checksum\":" << (check & 1u) << "}\n";
    return 0;
}

/// bench-targets: the trainer's route on real text. Texts: the records of
/// <texts>/<teacher>.encode.tsv and <texts>/<student>.encode.tsv (scripts/fetch-data.sh writes
/// them: the texts and the reference encoders' ids), <name> being the tokenizer's folder under
/// <data>/tokenizers/ and <texts> defaulting to <data>/ref (--texts DIR names another folder).
/// --sequences N records with --min-tokens..--max-tokens teacher tokens (default 32..64), evenly
/// spaced over the files, make a right-padded batch; teacher rows are random N(0, 3), in id
/// order or, with --trie-order, permuted once into the distiller's permutation(). The distiller
/// (K = --heads, compact float32 targets, T threads) is checked against canonical_targets on the
/// first M = --reference-sequences sequences, then timed (medians over --repeats) beside a
/// streaming read of the same rows on the same threads; canonical_targets on those M sequences
/// is the old route's time per teacher row.
int cmd_bench_targets(const std::vector<std::string>& args) {
    const auto o = options::parse(args,
                                  {"--teacher", "--student", "--threads", "--texts", "--heads", "--dtype", "--sequences",
                                   "--repeats", "--reference-sequences", "--min-tokens", "--max-tokens"},
                                  {"--trie-order"});
    const auto count = [&](const char* key, const char* def) {
        const long v = std::stol(o.get(key, def));
        if (v < 1) throw usage_error(std::string(key) + " must be at least 1");
        return static_cast<std::size_t>(v);
    };
    bench_targets_args a;
    a.teacher_file = o.get("--teacher");
    a.student_file = o.get("--student");
    a.threads = count("--threads", "1");
    a.heads = count("--heads", "10");
    a.sequences = count("--sequences", "16");
    a.repeats = count("--repeats", "7");
    a.reference_sequences = count("--reference-sequences", "2");
    a.lo = count("--min-tokens", "32");
    a.hi = count("--max-tokens", "64");
    a.trie_order = o.has("--trie-order");
    a.dtype = o.get("--dtype", "f32");
    if (a.dtype != "f32" && a.dtype != "bf16") throw usage_error("--dtype must be f32 or bf16");
    const auto [tname, tref] = encodings_place(a.teacher_file);
    const auto [sname, sref] = encodings_place(a.student_file);
    const std::filesystem::path tdir = o.has("--texts") ? std::filesystem::path(o.get("--texts")) : tref;
    const std::filesystem::path sdir = o.has("--texts") ? std::filesystem::path(o.get("--texts")) : sref;
    a.te = read_encodings(tdir / (tname + ".encode.tsv"));
    a.se = read_encodings(sdir / (sname + ".encode.tsv"));
    a.teacher = std::make_shared<const bld::byte_trie>(bld::io::load_vocabulary(a.teacher_file, {o.specials}));
    a.student = std::make_shared<const bld::vocabulary>(bld::io::load_vocabulary(a.student_file, {o.specials}));
    if (a.dtype == "f32") return bench_targets<float>(a);
    return bench_targets<bld::bf16>(a);
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
        if (cmd == "bench-targets") return cmd_bench_targets(args);
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
