// bench_load — loading a real tokenizer file and building its byte trie, for the 262k-id
// Gemma-3 vocabulary (33 MB tokenizer.json) and the 128k-id Llama-3 one (9 MB).
//
// What is timed, per tokenizer, side by side in one binary:
//   read_file            the file's bytes into a reused buffer (std::ifstream): the I/O floor
//   json_parse           simdjson DOM parse of the same bytes, already in memory: the JSON floor
//   load_vocabulary      bld::io::load_vocabulary(path)
//   build_trie           bld::byte_trie from an already loaded vocabulary
//   load_and_build_trie  both, as a user pays them (the acceptance number: < 0.5 s for gemma3)
//
// Nothing is timed before its result has been checked once, by routes that do not go through
// the code under test: the vocabulary size against the line count of the JS reference decoder's
// output (.cache/data/ref/<name>.decode.tsv) and every text token's bytes against that decoder;
// the trie's node count against the number of distinct byte prefixes (a hash set, not a sort);
// the order against a plain comparison sort check. Each timed iteration then re-checks the
// cheap invariants (sizes, node count). A failed check marks the benchmark with an error and
// makes the program exit with status 1.
//
// Counters: bytes_per_second is tokenizer-file bytes / time (not for build_trie, which reads no
// file); items_per_second is token ids / time; nodes is the trie's node count.
// Data: $BLD_DATA_DIR, else the folder compiled in (scripts/fetch-data.sh fills it).
#include <bld/bld.hpp>
#include <bld/io/json.hpp>

#include <benchmark/benchmark.h>
#include <simdjson.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#ifndef BLD_DATA_DIR
#define BLD_DATA_DIR ".cache/data"
#endif

namespace {

/// One real tokenizer and the facts about it that are known without bld (the published
/// tokenizer's sizes, cross-checked against the JS reference outputs at check time).
struct tokenizer_case {
    const char* name;          ///< also the stem of ref/<name>.decode.tsv
    const char* file;          ///< relative to the data folder
    std::size_t vocab_size;    ///< ids, specials included
    std::size_t model_entries; ///< entries of model.vocab in the JSON (added tokens excluded)
};

const tokenizer_case gemma3{"gemma3", "tokenizers/gemma3/tokenizer.json", 262145, 262144};
const tokenizer_case llama3{"llama3", "tokenizers/llama3/tokenizer.json", 128256, 128000};

bool any_check_failed = false;

std::string data_dir() {
    const char* env = std::getenv("BLD_DATA_DIR");
    return env && *env ? std::string(env) : std::string(BLD_DATA_DIR);
}

/// What a correct load of a tokenizer gives, established once and untimed.
struct reference {
    std::string error; ///< empty when every check passed
    std::string path;
    std::size_t file_bytes = 0, vocab_size = 0, text_tokens = 0, nodes = 0;
};

std::string unhex(std::string_view h) {
    const auto nibble = [](char c) { return c <= '9' ? c - '0' : c - 'a' + 10; };
    std::string out;
    out.reserve(h.size() / 2);
    for (std::size_t i = 0; i + 1 < h.size(); i += 2)
        out += static_cast<char>(nibble(h[i]) * 16 + nibble(h[i + 1]));
    return out;
}

reference check_once(const tokenizer_case& c) {
    reference r;
    const std::string dir = data_dir();
    r.path = dir + "/" + c.file;
    const std::string ref_path = dir + "/ref/" + std::string(c.name) + ".decode.tsv";
    std::error_code ec;
    if (!std::filesystem::exists(r.path, ec) || !std::filesystem::exists(ref_path, ec)) {
        r.error = "data missing (" + r.path + " or " + ref_path + "): run `bash scripts/fetch-data.sh` "
                  "or set BLD_DATA_DIR";
        return r;
    }
    r.file_bytes = static_cast<std::size_t>(std::filesystem::file_size(r.path));

    // The JS reference decoder's bytes, one line "id<TAB>hex" per id, in id order.
    std::vector<std::string> js;
    {
        std::ifstream f(ref_path, std::ios::binary);
        std::string line;
        while (std::getline(f, line)) {
            const auto tab = line.find('\t');
            if (tab == std::string::npos || std::stoull(line.substr(0, tab)) != js.size()) {
                r.error = ref_path + ": line " + std::to_string(js.size() + 1) + " is not \"<id>\\t<hex>\" in id order";
                return r;
            }
            js.push_back(unhex(std::string_view(line).substr(tab + 1)));
        }
    }
    if (js.size() != c.vocab_size) {
        r.error = ref_path + " has " + std::to_string(js.size()) + " ids, expected " + std::to_string(c.vocab_size);
        return r;
    }

    auto vocab = std::make_shared<const bld::vocabulary>(bld::io::load_vocabulary(r.path));
    const auto& v = *vocab;
    if (v.size() != js.size()) {
        r.error = "bld loaded " + std::to_string(v.size()) + " ids, the JS reference decodes " + std::to_string(js.size());
        return r;
    }
    // Text tokens' bytes agree with the JS decoder wherever it can show them (it prints a
    // string, so bytes that are not valid UTF-8 come back as U+FFFD and are skipped).
    std::size_t compared = 0, text = 0;
    for (std::size_t id = 0; id < v.size(); ++id) {
        if (v.kinds()[id] != bld::token_kind::text) continue;
        ++text;
        std::string_view b = v.unchecked_bytes(id);
        if (!bld::io::is_valid_utf8(b)) continue;
        if (v.transformations().decoder_strips_leading_space && !b.empty() && b.front() == ' ') b.remove_prefix(1);
        if (b != js[id]) {
            r.error = "id " + std::to_string(id) + ": bld bytes \"" + bld::io::printable(b) + "\", JS reference \"" +
                      bld::io::printable(js[id]) + "\"";
            return r;
        }
        ++compared;
    }
    if (text != v.text_tokens() || compared < text * 9 / 10) {
        r.error = "text tokens: " + std::to_string(text) + " counted, " + std::to_string(v.text_tokens()) +
                  " reported, " + std::to_string(compared) + " compared with the JS reference";
        return r;
    }

    const bld::byte_trie trie(vocab);
    const auto order = trie.order();
    if (order.size() != text) {
        r.error = "trie order holds " + std::to_string(order.size()) + " ids, expected " + std::to_string(text);
        return r;
    }
    for (std::size_t k = 1; k < order.size(); ++k) {
        const auto a = v.unchecked_bytes(order[k - 1]), b = v.unchecked_bytes(order[k]);
        if (!(a < b || (a == b && order[k - 1] < order[k]))) {
            r.error = "trie order not sorted at position " + std::to_string(k);
            return r;
        }
    }
    // Node count by another route: distinct byte prefixes (the empty one is the root).
    std::unordered_set<std::string_view> prefixes;
    prefixes.reserve(4 * text);
    for (std::size_t id = 0; id < v.size(); ++id) {
        if (v.kinds()[id] != bld::token_kind::text) continue;
        const auto b = v.unchecked_bytes(id);
        for (std::size_t len = 0; len <= b.size(); ++len) prefixes.insert(b.substr(0, len));
    }
    if (trie.node_count() != prefixes.size()) {
        r.error = "trie has " + std::to_string(trie.node_count()) + " nodes, the token bytes have " +
                  std::to_string(prefixes.size()) + " distinct prefixes";
        return r;
    }
    r.vocab_size = v.size();
    r.text_tokens = text;
    r.nodes = trie.node_count();
    return r;
}

/// The checked reference of a tokenizer, computed on first use.
const reference& checked(const tokenizer_case& c) {
    static std::map<std::string, reference> cache;
    auto it = cache.find(c.name);
    if (it == cache.end()) {
        reference r;
        try {
            r = check_once(c);
        } catch (const std::exception& e) {
            r.error = std::string("check threw: ") + e.what();
        }
        if (!r.error.empty()) std::fprintf(stderr, "bench_load: %s: CHECK FAILED: %s\n", c.name, r.error.c_str());
        it = cache.emplace(c.name, std::move(r)).first;
    }
    return it->second;
}

void fail(benchmark::State& state, const std::string& why) {
    any_check_failed = true;
    state.SkipWithError(why.c_str());
}

/// Common counters: token ids per second (items), and bytes of the tokenizer file per second
/// for the cases that read or parse the file.
void set_throughput(benchmark::State& state, const reference& r, bool reads_file = true) {
    const auto n = static_cast<std::int64_t>(state.iterations());
    if (reads_file) state.SetBytesProcessed(n * static_cast<std::int64_t>(r.file_bytes));
    state.SetItemsProcessed(n * static_cast<std::int64_t>(r.vocab_size));
    state.counters["ids"] = static_cast<double>(r.vocab_size);
    state.counters["file_MB"] = static_cast<double>(r.file_bytes) / 1e6;
}

// ---- baselines --------------------------------------------------------------------------

void read_file(benchmark::State& state, const tokenizer_case& c) {
    const auto& r = checked(c);
    if (!r.error.empty()) return fail(state, r.error);
    std::string buffer(r.file_bytes, '\0'); // reused: after the first pass this is page-cache memcpy
    for (auto _ : state) {
        std::ifstream f(r.path, std::ios::binary);
        f.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
        if (static_cast<std::size_t>(f.gcount()) != r.file_bytes || buffer.front() != '{') {
            fail(state, "short read of " + r.path);
            break;
        }
        benchmark::DoNotOptimize(buffer.data());
        benchmark::ClobberMemory();
    }
    set_throughput(state, r);
}

void json_parse(benchmark::State& state, const tokenizer_case& c) {
    const auto& r = checked(c);
    if (!r.error.empty()) return fail(state, r.error);
    simdjson::padded_string text;
    if (simdjson::padded_string::load(r.path).get(text)) return fail(state, "simdjson: cannot read " + r.path);
    simdjson::dom::parser parser; // reused, as a long-running process would
    {
        // Checked once: the parse gives the model's vocabulary with its published size.
        simdjson::dom::element doc;
        simdjson::dom::object vocab;
        if (parser.parse(text).get(doc) || doc["model"]["vocab"].get_object().get(vocab) ||
            vocab.size() != c.model_entries)
            return fail(state, "simdjson: " + r.path + " does not parse to a model.vocab of " +
                                   std::to_string(c.model_entries) + " entries");
    }
    for (auto _ : state) {
        simdjson::dom::element doc;
        if (parser.parse(text).get(doc)) {
            fail(state, "simdjson: parse failed");
            break;
        }
        benchmark::DoNotOptimize(doc);
    }
    set_throughput(state, r);
}

// ---- bld --------------------------------------------------------------------------------

void load_vocabulary(benchmark::State& state, const tokenizer_case& c) {
    const auto& r = checked(c);
    if (!r.error.empty()) return fail(state, r.error);
    for (auto _ : state) {
        const auto v = bld::io::load_vocabulary(r.path);
        if (v.size() != r.vocab_size || v.text_tokens() != r.text_tokens) {
            fail(state, "load_vocabulary: sizes differ from the checked load");
            break;
        }
        benchmark::DoNotOptimize(v.kinds().data());
    }
    set_throughput(state, r);
}

void build_trie(benchmark::State& state, const tokenizer_case& c) {
    const auto& r = checked(c);
    if (!r.error.empty()) return fail(state, r.error);
    const auto vocab = std::make_shared<const bld::vocabulary>(bld::io::load_vocabulary(r.path));
    for (auto _ : state) {
        const bld::byte_trie trie(vocab); // shares the vocabulary: no copy is timed
        if (trie.node_count() != r.nodes || trie.order().size() != r.text_tokens) {
            fail(state, "build_trie: node count differs from the checked build");
            break;
        }
        benchmark::DoNotOptimize(trie.nodes().data());
    }
    set_throughput(state, r, /*reads_file=*/false);
    state.counters["nodes"] = static_cast<double>(r.nodes);
}

void load_and_build_trie(benchmark::State& state, const tokenizer_case& c) {
    const auto& r = checked(c);
    if (!r.error.empty()) return fail(state, r.error);
    for (auto _ : state) {
        const bld::byte_trie trie(bld::io::load_vocabulary(r.path));
        if (trie.vocab().size() != r.vocab_size || trie.node_count() != r.nodes ||
            trie.order().size() != r.text_tokens) {
            fail(state, "load_and_build_trie: sizes differ from the checked build");
            break;
        }
        benchmark::DoNotOptimize(trie.nodes().data());
    }
    set_throughput(state, r);
    state.counters["nodes"] = static_cast<double>(r.nodes);
}

// Wall-clock time (the acceptance criterion is wall time), medians over 5 repetitions.
#define BLD_LOAD_BENCHMARK(fn, tok)                                                                                    \
    BENCHMARK_CAPTURE(fn, tok, tok)->Unit(benchmark::kMillisecond)->UseRealTime()->Repetitions(5)->ReportAggregatesOnly(true)

BLD_LOAD_BENCHMARK(read_file, gemma3);
BLD_LOAD_BENCHMARK(json_parse, gemma3);
BLD_LOAD_BENCHMARK(load_vocabulary, gemma3);
BLD_LOAD_BENCHMARK(build_trie, gemma3);
BLD_LOAD_BENCHMARK(load_and_build_trie, gemma3);
BLD_LOAD_BENCHMARK(read_file, llama3);
BLD_LOAD_BENCHMARK(json_parse, llama3);
BLD_LOAD_BENCHMARK(load_vocabulary, llama3);
BLD_LOAD_BENCHMARK(build_trie, llama3);
BLD_LOAD_BENCHMARK(load_and_build_trie, llama3);

} // namespace

int main(int argc, char** argv) {
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    if (any_check_failed) std::fprintf(stderr, "bench_load: a result check failed; the timings above are void\n");
    return any_check_failed ? 1 : 0;
}
