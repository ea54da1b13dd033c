// bld_distill.cpp — a real distillation across tokenizers, end to end, on libtorch and bld.
//
// A teacher LM with the Llama-2 tokenizer (SentencePiece-style, 32k ids) is trained on real
// text; then students, smaller than the teacher, identical in size, initialisation and batches
// per tokenizer and seed, are trained as the arms of docs/efficacy_design.md:
//
//   (a)  token CE, GPT-2 tokenizer (byte-level BPE, 50k ids);
//   (b)  (a) + λ_b · byte-head CE on the true bytes;
//   (c)  (a) + λ_b · byte-head CE + λ_KL · KL(teacher next-byte distribution ‖ byte head)
//        — the paper's BLD (design.md §1);
//   (d)  (a) + λ_TH · the token-head byte KL: the student's own next-token distributions
//        projected onto next-byte ones (docs/07_token_head.md), no byte head;
//   (a′) token CE with the teacher's Llama-2 tokenizer (arm letter p);
//   (e)  (a′) + λ_KD · KL(teacher softmax ‖ student softmax), ordinary token-level KD — the
//        ceiling a shared tokenizer allows.
//
// The teacher's byte targets come from bld: for each batch of (c) and (d), the frozen teacher's
// rows over its own tokenization of the same text are projected on the canonical path and placed
// per student slot by a bld::distiller (built once); (c)'s byte terms and their gradients come
// from bld::bld_loss, wired into autograd by a torch::autograd::Function whose backward returns
// bld's analytic gradient (bld/torch/loss.hpp); (d)'s from bld::autograd::token_head_loss
// (bld/torch/token_head.hpp) on the student's full log-probabilities. Every model is scored by
// held-out bits per byte: token cross-entropy in nats summed over the held-out text, divided by
// (text bytes · ln 2) — comparable across tokenizers.
//
// Data: the fortunes corpus (scripts/prepare-distill.sh: .cache/data/distill/records.tsv) or
// the efficacy corpus (scripts/prepare-efficacy.sh: .cache/data/efficacy/records.tsv) — records
// cut into chunks of whole lines (≤ 256 bytes), each encoded on its own by the JavaScript
// reference encoders (cached at setup time; no C++ encoder is involved). Both tokenizations of a
// chunk cover exactly its text, so each chunk is one training example for every model.
//
// --c-targets beam|repair (issue 17) gives (c) the paper's own targets instead of the canonical
// path's: the covering beam (K = 10, ε = 0.01) or the canonical path with local repair
// (threshold 0.05, the same local beam) over the frozen teacher, computed once for the students'
// chunks before training (prefix_teacher keeps the GRU's state per context, so a context costs
// one GRU step) and placed per student slot by distiller::targets(byte_sequence) each batch.
//
// Presets: quick (the README demo, fortunes), full (docs/efficacy_design.md: efficacy corpus,
// early-stopped 2-layer teacher cached under the corpus folder, students on the fixed 8 %
// subset, every arm and λ on 3 seeds), fortunes-full (the first experiment of
// docs/05_distillation.md), smoke (the test suite: seconds; checks that every arm's training
// loss decreases and that (e)'s targets equal the teacher's softmax, exit status 1 if not).
//
// usage: bld-distill [--preset quick|full|fortunes-full|smoke] [--corpus fortunes|efficacy]
//                    [--seeds N] [--out results.json] [--data DIR] [--threads N]
//                    [--lambda-byte X] [--lambda-kl X,Y] [--lambda-th X,Y] [--lambda-kd X,Y]
//                    [--heads K] [--teacher-epochs X] [--teacher-minutes X]
//                    [--student-epochs X] [--student-pool N] [--students abcdpe]
#include <bld/bld.hpp>
#include <bld/cpu.hpp>
#include <bld/adapters/torch.hpp>
#include <bld/io/json.hpp>
#include <bld/torch/byte_head.hpp>
#include <bld/torch/loss.hpp>
#include <bld/torch/token_head.hpp>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <functional>
#include <fstream>
#include <limits>
#include <map>
#include <memory>
#include <numeric>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace {

using clock_type = std::chrono::steady_clock;

double seconds_since(clock_type::time_point t0) {
    return std::chrono::duration<double>(clock_type::now() - t0).count();
}

std::string format_duration(double s) {
    const auto t = static_cast<long>(s + 0.5);
    char buf[32];
    std::snprintf(buf, sizeof buf, "%ld:%02ld", t / 60, t % 60);
    return buf;
}

// ---- progress bar ----------------------------------------------------------------------------

/// One carriage-return line on stderr: label, bar, count, elapsed time, estimate, a note.
class progress {
public:
    progress(std::string label, std::int64_t total, std::int64_t first = 0)
        : label_(std::move(label)), total_(std::max<std::int64_t>(total, 1)), first_(first) {
        draw(first, "");
    }
    void update(std::int64_t done, const std::string& note = "") {
        const auto now = clock_type::now();
        if (done < total_ && std::chrono::duration<double>(now - last_).count() < 0.25) return;
        last_ = now;
        draw(done, note);
    }
    void finish(const std::string& note = "") {
        draw(total_, note);
        std::fputc('\n', stderr);
        std::fflush(stderr);
    }

private:
    void draw(std::int64_t done, const std::string& note) {
        constexpr int width = 24;
        const double f = static_cast<double>(done) / static_cast<double>(total_);
        const double fr = static_cast<double>(done - first_) / static_cast<double>(std::max<std::int64_t>(total_ - first_, 1));
        const int fill = static_cast<int>(f * width);
        std::string bar(static_cast<std::size_t>(fill), '#');
        bar.resize(width, '.');
        const double el = seconds_since(start_);
        const std::string eta = done > first_ && done < total_ ? " eta " + format_duration(el / fr - el) : "";
        std::fprintf(stderr, "\r  %-22s [%s] %lld/%lld %s%s  %s\x1b[K", label_.c_str(), bar.c_str(),
                     static_cast<long long>(done), static_cast<long long>(total_), format_duration(el).c_str(),
                     eta.c_str(), note.c_str());
        std::fflush(stderr);
    }
    std::string label_;
    std::int64_t total_, first_;
    clock_type::time_point start_ = clock_type::now(), last_ = start_;
};

// ---- options -----------------------------------------------------------------------------------

struct model_size {
    std::int64_t embed, hidden, layers = 1;
};

/// The arms (docs/efficacy_design.md): students with the GPT-2 tokenizer (a) token CE,
/// (b) + byte CE, (c) + byte CE + BLD KL through the byte head, (d) + the token-head byte KL;
/// students with the teacher's Llama-2 tokenizer (p) = (a′) token CE, (e) + token-level KD.
inline constexpr std::string_view arm_letters = "abcdpe";

struct config {
    std::string preset = "quick";
    std::string corpus = "fortunes"; // fortunes (DIR/distill) or efficacy (DIR/efficacy)
    std::string data = ".cache/data";
    std::string out;
    int seeds = 1;
    int threads = 1;
    // models
    model_size teacher{192, 192}, student{96, 96};
    std::vector<std::int64_t> cutoffs{1024, 8192};  // adaptive softmax clusters (ids by frequency)
    std::int64_t heads = 10;                        // K, design.md §1
    double lambda_byte = 1.0;                       // λ_b of (b) and (c)
    std::vector<double> lambda_kl{0.1};             // λ_KL of (c), one run per value
    std::vector<double> lambda_th{1.0};             // λ_TH of (d)
    std::vector<double> lambda_kd{1.0};             // λ_KD of (e)
    // data and budgets
    std::int64_t teacher_pool = 0;   // training chunks the teacher sees (0: all)
    double teacher_epochs = 1.0;     // (the most it trains; early stopping may end it sooner)
    double teacher_minutes = 0;      // training-time budget of the teacher (0: none)
    std::int64_t teacher_steps = 0;  // step budget of the teacher (0: none); its learning-rate schedule spans
                                     // min(schedule, budget), and the result does not depend on the machine's load
    bool teacher_only = false;       // train (or load) the teacher, print its held-out bits per byte, stop
    // testing the resumption (tests: example_distill_resume)
    std::int64_t interrupt_at = 0;   // > 0: save the students' checkpoint before this step and exit with 75
    std::string expect;              // a results JSON whose students' numbers this run must equal exactly
    int teacher_patience = 0;        // stop after this many validation evaluations without a new best (0: never)
    double teacher_evals_per_epoch = 2;
    bool cache_teacher = false;      // keep the trained teacher under DIR/<corpus>/ and reuse it
    std::string runs;                // where finished seeds and checkpoints are kept (default DIR/<corpus>)
    int only_seed = -1;              // >= 0: train this seed alone (if missing), save it and stop
    std::int64_t student_pool = 0;   // training chunks the students see (0: all)
    int student_percent = 0;         // instead: the chunks with FNV-1a-64(text) mod 100 < this
    double student_epochs = 1.0;
    std::int64_t batch = 32;
    double lr = 3e-3;
    std::int64_t curve_points = 8;   // held-out evaluations along training
    std::int64_t curve_heldout = 0;  // held-out chunks for the curves (0: all)
    std::int64_t final_heldout = 0;  // held-out chunks for the table (0: all)
    std::int64_t teacher_seed = 1234;
    std::string students = "abc";    // which arms to train (letters of arm_letters)
    // (c)'s teacher targets (issue 17): canonical (the canonical path, batch by batch), beam (the
    // covering beam) or repair (the canonical path with local repair), the latter two computed
    // once for the students' chunks before training.
    std::string c_targets = "canonical";
    std::size_t covering_k = 10;     // the beam's K (and the local beam's of repair)
    double covering_epsilon = 0.01;  // the beam's ε
    double repair_threshold = 0.05;  // repair: the local beam runs where the canonical path drops at least this
    bool checks = false;             // smoke: every arm's loss decreases, (e)'s targets are the teacher's softmax
    std::int64_t sizing_steps = 0;   // > 0: time this many steps of every arm (no evaluation, no loss shown) and
                                     // project the preset's wall time instead of running it
};

config preset(const std::string& name) {
    config c;
    c.preset = name;
    if (name == "quick") {
        // The whole pipeline in about a minute on an idle two-core machine: smaller models, a
        // teacher that sees 10% of the fortunes, every arm at λ = 1 (students 2 passes over 320
        // chunks). Its numbers say the pipeline works, not whether distillation helps: that is
        // what `full` is for (docs/efficacy_design.md).
        c.students = "abcdpe";
        c.lambda_kl = {1.0};
        c.lambda_th = {1.0};
        c.lambda_kd = {1.0};
        c.teacher = {128, 128};
        c.student = {64, 64};
        c.teacher_epochs = 0.1;
        c.student_pool = 320;
        c.student_epochs = 2.0;
        c.lr = 1e-2;
        c.curve_points = 4;
        c.curve_heldout = 200;
        c.final_heldout = 500;
    } else if (name == "full") {
        // docs/efficacy_design.md: the efficacy corpus, a 2-layer teacher trained to early
        // stopping or its step budget, students on the fixed 5 % subset for 8 epochs, every arm
        // and grid point on 3 seeds (the design's "Decisions" section says why 5 % and 8).
        c.corpus = "efficacy";
        c.teacher = {384, 384, 2};
        c.student = {96, 96, 1};
        c.teacher_epochs = 50.0;
        c.teacher_steps = 3600;  // ~60 min on the idle 2-core machine (docs/efficacy_design.md, "Decisions")
        c.teacher_patience = 2;
        c.teacher_evals_per_epoch = 2;
        c.cache_teacher = true;
        c.student_percent = 5;
        c.student_epochs = 8.0;
        c.lr = 3e-3;
        c.seeds = 3;
        c.lambda_kl = {0.1, 1.0};
        c.lambda_th = {0.1, 1.0};
        c.lambda_kd = {0.1, 1.0};
        c.students = "abcdpe";
        c.curve_points = 8;  // one held-out point per epoch
        c.curve_heldout = 500;
        c.final_heldout = 0;
    } else if (name == "fortunes-full") {
        // The first experiment (docs/05_distillation.md, before issue 16): fortunes only.
        c.teacher = {192, 192};
        c.student = {96, 96};
        c.teacher_epochs = 2.0;
        c.student_epochs = 1.0;
        c.lr = 3e-3;
        c.curve_points = 10;
        c.curve_heldout = 500;
        c.final_heldout = 0;
    } else if (name == "smoke") {
        // Seconds: every arm trains on a handful of chunks (the test suite's check).
        c.teacher = {32, 32};
        c.student = {32, 32};
        c.teacher_pool = 96;
        c.teacher_epochs = 1.0;
        c.student_pool = 64;
        c.student_epochs = 4.0;
        c.batch = 8;
        c.lr = 1e-2;
        c.curve_points = 1;
        c.curve_heldout = 40;
        c.final_heldout = 80;
        c.students = "abcdpe";
        c.checks = true;
    } else {
        throw std::runtime_error("unknown preset \"" + name + "\" (quick, full, fortunes-full or smoke)");
    }
    return c;
}

std::vector<double> parse_list(const std::string& v) {
    std::vector<double> out;
    std::size_t start = 0;
    while (start <= v.size()) {
        const auto comma = v.find(',', start);
        out.push_back(std::stod(v.substr(start, comma == std::string::npos ? std::string::npos : comma - start)));
        if (comma == std::string::npos) break;
        start = comma + 1;
    }
    return out;
}

config parse_args(int argc, char** argv) {
    std::vector<std::string> a(argv + 1, argv + argc);
    std::string name = "quick";
    for (std::size_t i = 0; i + 1 < a.size(); ++i)
        if (a[i] == "--preset") name = a[i + 1];
    config c = preset(name);
    for (std::size_t i = 0; i < a.size(); ++i) {
        const auto value = [&]() -> std::string {
            if (i + 1 >= a.size()) throw std::runtime_error(a[i] + " needs a value");
            return a[++i];
        };
        if (a[i] == "--preset") value();
        else if (a[i] == "--corpus") c.corpus = value();
        else if (a[i] == "--seeds") c.seeds = std::stoi(value());
        else if (a[i] == "--out") c.out = value();
        else if (a[i] == "--data") c.data = value();
        else if (a[i] == "--threads") c.threads = std::stoi(value());
        else if (a[i] == "--lambda-byte") c.lambda_byte = std::stod(value());
        else if (a[i] == "--lambda-kl") c.lambda_kl = parse_list(value());
        else if (a[i] == "--lambda-th") c.lambda_th = parse_list(value());
        else if (a[i] == "--lambda-kd") c.lambda_kd = parse_list(value());
        else if (a[i] == "--heads") c.heads = std::stoll(value());
        else if (a[i] == "--teacher-epochs") c.teacher_epochs = std::stod(value());
        else if (a[i] == "--teacher-minutes") c.teacher_minutes = std::stod(value());
        else if (a[i] == "--teacher-steps") c.teacher_steps = std::stoll(value());
        else if (a[i] == "--teacher-only") c.teacher_only = true;
        else if (a[i] == "--cache") c.cache_teacher = true;
        else if (a[i] == "--runs") c.runs = value();
        else if (a[i] == "--only-seed") c.only_seed = std::stoi(value());
        else if (a[i] == "--interrupt-at") c.interrupt_at = std::stoll(value());
        else if (a[i] == "--expect") c.expect = value();
        else if (a[i] == "--student-epochs") c.student_epochs = std::stod(value());
        else if (a[i] == "--student-pool") c.student_pool = std::stoll(value());
        else if (a[i] == "--students") c.students = value();
        else if (a[i] == "--sizing") c.sizing_steps = std::stoll(value());
        else if (a[i] == "--c-targets") c.c_targets = value();
        else if (a[i] == "-h" || a[i] == "--help") {
            std::puts(
                "usage: bld-distill [--preset quick|full|fortunes-full|smoke] [--corpus fortunes|efficacy]\n"
                "                   [--seeds N] [--out results.json] [--data DIR] [--threads N]\n"
                "                   [--lambda-byte X] [--lambda-kl X,Y] [--lambda-th X,Y] [--lambda-kd X,Y]\n"
                "                   [--heads K] [--teacher-epochs X] [--teacher-minutes X] [--teacher-steps N]\n"
                "                   [--teacher-only] [--cache] [--runs DIR] [--only-seed S]\n"
                "                   [--interrupt-at STEP] [--expect results.json]\n"
                "                   [--student-epochs X] [--student-pool N] [--students abcdpe] [--sizing N]\n"
                "                   [--c-targets canonical|beam|repair]\n"
                "Trains a Llama-2-tokenizer teacher, then students and prints held-out bits per byte:\n"
                "GPT-2-tokenizer students (a) token CE, (b) + byte CE, (c) + byte CE + BLD KL (byte head),\n"
                "(d) + token-head byte KL; Llama-2-tokenizer students (p) token CE, (e) + token-level KD.\n"
                "Needs DIR/distill/records.tsv (scripts/prepare-distill.sh) or, for --corpus efficacy,\n"
                "DIR/efficacy/records.tsv (scripts/prepare-efficacy.sh). --sizing N times N steps of every\n"
                "arm (an untrained teacher, no evaluation, no loss printed) and projects the preset's wall time.\n"
                "--cache (on in --preset full) keeps the teacher and every finished seed under DIR/<corpus>/ and\n"
                "checkpoints a seed every 10 minutes; a rerun resumes. --runs DIR keeps the seeds under DIR\n"
                "instead (runs-<key>/, the key covering the settings and the teacher's bits); --only-seed S\n"
                "trains seed S alone if it is missing and stops (a later run without it prints the table).\n"
                "--interrupt-at STEP stops a seed there\n"
                "(checkpoint saved, exit 75) and --expect FILE fails unless every student's results equal FILE's:\n"
                "the resumption test. --c-targets beam|repair gives (c) the covering beam's (K = 10, eps = 0.01)\n"
                "or the repaired canonical path's (threshold 0.05) targets, computed once before training.");
            std::exit(0);
        } else
            throw std::runtime_error("unknown argument " + a[i] + " (try --help)");
    }
    if (c.seeds < 1) throw std::runtime_error("--seeds must be >= 1");
    if (c.threads < 1) throw std::runtime_error("--threads must be >= 1");
    if (c.only_seed >= c.seeds) throw std::runtime_error("--only-seed must be below --seeds");
    if (c.corpus != "fortunes" && c.corpus != "efficacy") throw std::runtime_error("--corpus takes fortunes or efficacy");
    if (c.c_targets != "canonical" && c.c_targets != "beam" && c.c_targets != "repair")
        throw std::runtime_error("--c-targets takes canonical, beam or repair");
    if (c.students.empty() || c.students.find_first_not_of(arm_letters) != std::string::npos)
        throw std::runtime_error("--students takes letters among a, b, c, d, p, e");
    for (const auto* l : {&c.lambda_kl, &c.lambda_th, &c.lambda_kd})
        if (l->empty() || std::any_of(l->begin(), l->end(), [](double x) { return !(x >= 0.0) || !std::isfinite(x); }))
            throw std::runtime_error("every λ must be a finite number >= 0");
    return c;
}

// ---- data --------------------------------------------------------------------------------------

/// The prepared data is absent (exit status 77: the test suite reports the check as skipped).
struct missing_data : std::runtime_error {
    using std::runtime_error::runtime_error;
};

/// Where a chunk belongs: training text, the teacher's validation text (efficacy corpus only),
/// or the held-out test text every model is scored on.
enum class split_kind : std::uint8_t { train, valid, test };

/// One chunk of a record: its text and both tokenizations (compact ids, see below).
struct example {
    split_kind split = split_kind::train;
    std::int64_t record = 0;
    std::string text;
    std::vector<std::int64_t> teacher_ids, student_ids;  // text tokens only, no BOS
    // student slots [tokens, K] from bld::align_slots: 1 = active, and the true byte
    std::vector<std::uint8_t> mask;
    std::vector<std::int32_t> true_byte;
};

std::vector<std::int64_t> parse_ids(std::string_view s, std::size_t line) {
    std::vector<std::int64_t> ids;
    const char* p = s.data();
    const char* end = s.data() + s.size();
    while (p < end) {
        std::int64_t v = 0;
        const auto r = std::from_chars(p, end, v);
        if (r.ec != std::errc()) throw std::runtime_error("records.tsv line " + std::to_string(line) + ": bad id list");
        ids.push_back(v);
        p = r.ptr;
        if (p < end && *p == ' ') ++p;
    }
    return ids;
}

std::string from_hex(std::string_view h, std::size_t line) {
    if (h.size() % 2) throw std::runtime_error("records.tsv line " + std::to_string(line) + ": odd hex length");
    std::string out(h.size() / 2, '\0');
    const auto nib = [&](char c) -> int {
        if (c >= '0' && c <= '9') return c - '0';
        if (c >= 'a' && c <= 'f') return c - 'a' + 10;
        throw std::runtime_error("records.tsv line " + std::to_string(line) + ": bad hex digit");
    };
    for (std::size_t i = 0; i < out.size(); ++i) out[i] = static_cast<char>(nib(h[2 * i]) * 16 + nib(h[2 * i + 1]));
    return out;
}

/// Reads records.tsv (format: scripts/encode-corpus.mjs); ids are tokenizer ids here.
std::vector<example> load_records(const std::string& path) {
    std::ifstream in(path);
    if (!in)
        throw missing_data(path + " not found: run scripts/prepare-distill.sh (fortunes) or scripts/prepare-efficacy.sh "
                                  "(efficacy) first");
    std::vector<example> ex;
    std::string line;
    std::size_t n = 0;
    while (std::getline(in, line)) {
        ++n;
        std::vector<std::string_view> f;
        std::string_view s(line);
        for (std::size_t start = 0;;) {
            const auto tab = s.find('\t', start);
            f.push_back(s.substr(start, tab == std::string_view::npos ? std::string_view::npos : tab - start));
            if (tab == std::string_view::npos) break;
            start = tab + 1;
        }
        if (f.size() != 5) throw std::runtime_error(path + " line " + std::to_string(n) + ": expected 5 fields");
        example e;
        if (f[0] == "train") e.split = split_kind::train;
        else if (f[0] == "valid") e.split = split_kind::valid;
        else if (f[0] == "heldout" || f[0] == "test") e.split = split_kind::test;
        else throw std::runtime_error(path + " line " + std::to_string(n) + ": unknown split \"" + std::string(f[0]) + "\"");
        e.record = std::stoll(std::string(f[1]));
        e.text = from_hex(f[2], n);
        e.teacher_ids = parse_ids(f[3], n);
        e.student_ids = parse_ids(f[4], n);
        if (e.teacher_ids.empty() || e.student_ids.empty())
            throw std::runtime_error(path + " line " + std::to_string(n) + ": empty tokenization");
        ex.push_back(std::move(e));
    }
    return ex;
}

/// The ids of a tokenizer that occur in the corpus, numbered by training frequency. The
/// models' output layers cover exactly these ids (an adaptive softmax wants frequency order),
/// and bld works on this compact vocabulary directly: same token bytes, same text rules.
struct compact_vocabulary {
    bld::vocabulary vocab;             // compact id → the token's bytes
    std::vector<std::int64_t> tokenizer_id;  // compact id → tokenizer id
    std::int64_t size() const { return static_cast<std::int64_t>(tokenizer_id.size()); }
};

compact_vocabulary compact(const bld::vocabulary& full, std::vector<example>& ex, bool teacher_side) {
    std::vector<std::int64_t> count(full.size(), -1);
    for (const auto& e : ex)
        for (auto id : teacher_side ? e.teacher_ids : e.student_ids) {
            if (id < 0 || static_cast<std::size_t>(id) >= full.size() || !full.is_text(static_cast<std::size_t>(id)))
                throw std::runtime_error("records.tsv holds id " + std::to_string(id) + ", not a text token of " +
                                         full.source());
            auto& c = count[static_cast<std::size_t>(id)];
            c = std::max<std::int64_t>(c, 0) + (e.split == split_kind::train ? 1 : 0);
        }
    compact_vocabulary cv;
    for (std::size_t id = 0; id < full.size(); ++id)
        if (count[id] >= 0) cv.tokenizer_id.push_back(static_cast<std::int64_t>(id));
    std::stable_sort(cv.tokenizer_id.begin(), cv.tokenizer_id.end(),
                     [&](auto a, auto b) { return count[static_cast<std::size_t>(a)] > count[static_cast<std::size_t>(b)]; });
    std::vector<std::int64_t> to_compact(full.size(), -1);
    std::vector<bld::token_entry> entries;
    for (std::size_t c = 0; c < cv.tokenizer_id.size(); ++c) {
        const auto id = static_cast<std::size_t>(cv.tokenizer_id[c]);
        to_compact[id] = static_cast<std::int64_t>(c);
        entries.push_back({static_cast<std::int64_t>(c), std::string(full.bytes(id)), bld::token_kind::text,
                           std::to_string(id)});
    }
    cv.vocab = bld::vocabulary::from_entries(std::move(entries), full.source() + " (ids in the corpus)",
                                             full.transformations());
    for (auto& e : ex)
        for (auto& id : teacher_side ? e.teacher_ids : e.student_ids) id = to_compact[static_cast<std::size_t>(id)];
    return cv;
}

// ---- models ------------------------------------------------------------------------------------

/// A GRU language model (one layer or more) with an adaptive softmax over the compact vocabulary
/// and, for students (b) and (c), bld's byte head on the hidden state that predicts each token.
struct lm_impl : torch::nn::Module {
    lm_impl(std::int64_t vocab, model_size size, std::vector<std::int64_t> cutoffs, std::int64_t heads)
        : bos(vocab), hidden_size(size.hidden) {
        embed = register_module("embed", torch::nn::Embedding(vocab + 1, size.embed));  // + BOS
        rnn = register_module(
            "rnn", torch::nn::GRU(torch::nn::GRUOptions(size.embed, size.hidden).num_layers(size.layers).batch_first(true)));
        std::erase_if(cutoffs, [&](std::int64_t c) { return c >= vocab - 1; });
        out = register_module("out", torch::nn::AdaptiveLogSoftmaxWithLoss(
                                         torch::nn::AdaptiveLogSoftmaxWithLossOptions(size.hidden, vocab, cutoffs).div_value(4.0)));
        if (heads > 0) bytes = register_module("bytes", bld::byte_head(size.hidden, heads));
    }
    /// [B, T] ids → [B, T, hidden]; position t reads tokens ≤ t and predicts token t + 1.
    torch::Tensor hidden(const torch::Tensor& inputs) { return std::get<0>(rnn->forward(embed->forward(inputs))); }

    std::int64_t bos, hidden_size;
    torch::nn::Embedding embed{nullptr};
    torch::nn::GRU rnn{nullptr};
    torch::nn::AdaptiveLogSoftmaxWithLoss out{nullptr};
    bld::byte_head bytes{nullptr};
};
TORCH_MODULE_IMPL(lm, lm_impl);

std::int64_t count_params(const std::vector<torch::Tensor>& ps) {
    std::int64_t n = 0;
    for (const auto& p : ps) n += p.numel();
    return n;
}
/// Parameters that predict tokens (the byte head is a training-only head and is left out).
std::int64_t lm_params(lm& m) {
    std::int64_t n = count_params(m->parameters());
    if (m->bytes) n -= count_params(m->bytes->parameters());
    return n;
}

/// A padded batch: inputs [B, T] = BOS + ids[:-1], and the positions that hold a target.
struct lm_batch {
    torch::Tensor inputs;    // [B, T] int64
    torch::Tensor positions; // [N] int64: flat indices into [B·T] of the target positions
    torch::Tensor targets;   // [N] int64, in the same order (example by example)
    std::int64_t tokens = 0;
};

lm_batch make_batch(const std::vector<example>& ex, std::span<const int> idx, bool teacher_side, std::int64_t bos) {
    std::size_t T = 0;
    for (int i : idx) T = std::max(T, (teacher_side ? ex[i].teacher_ids : ex[i].student_ids).size());
    const auto B = static_cast<std::int64_t>(idx.size());
    auto inputs = torch::zeros({B, static_cast<std::int64_t>(T)}, torch::kInt64);
    auto* in = inputs.data_ptr<std::int64_t>();
    std::vector<std::int64_t> pos, tgt;
    for (std::int64_t b = 0; b < B; ++b) {
        const auto& ids = teacher_side ? ex[idx[b]].teacher_ids : ex[idx[b]].student_ids;
        for (std::size_t t = 0; t < ids.size(); ++t) {
            in[b * static_cast<std::int64_t>(T) + static_cast<std::int64_t>(t)] = t == 0 ? bos : ids[t - 1];
            pos.push_back(b * static_cast<std::int64_t>(T) + static_cast<std::int64_t>(t));
            tgt.push_back(ids[t]);
        }
    }
    lm_batch r;
    r.inputs = inputs;
    r.tokens = static_cast<std::int64_t>(tgt.size());
    r.positions = torch::from_blob(pos.data(), {r.tokens}, torch::kInt64).clone();
    r.targets = torch::from_blob(tgt.data(), {r.tokens}, torch::kInt64).clone();
    return r;
}

/// Hidden states at the target positions, [N, hidden].
torch::Tensor target_hidden(lm& m, const lm_batch& b) {
    return m->hidden(b.inputs).reshape({-1, m->hidden_size}).index_select(0, b.positions);
}

/// Sum of −log p(token) in nats over a set of examples (eval mode, no gradient).
double total_nats(lm& m, const std::vector<example>& ex, const std::vector<int>& idx, bool teacher_side,
                  std::int64_t batch) {
    torch::NoGradGuard ng;
    m->eval();
    double nats = 0;
    for (std::size_t s = 0; s < idx.size(); s += static_cast<std::size_t>(batch)) {
        const auto n = std::min(idx.size() - s, static_cast<std::size_t>(batch));
        const auto b = make_batch(ex, std::span<const int>(idx).subspan(s, n), teacher_side, m->bos);
        const auto o = m->out->forward(target_hidden(m, b), b.targets);
        nats -= o.output.sum().item<double>();
    }
    m->train();
    return nats;
}

double text_bytes(const std::vector<example>& ex, const std::vector<int>& idx) {
    double n = 0;
    for (int i : idx) n += static_cast<double>(ex[i].text.size());
    return n;
}

// ---- teacher targets (canonical path): bld::distiller, batch by batch for (c) and (d) ------------

/// The frozen teacher and what it gives the students batch by batch: its log-distributions over
/// its own tokens ((e)'s targets) and, through a bld::distiller, its next-byte targets ((c) with
/// the byte head's K slots, (d) with a slot for every byte of a student token); with the time
/// it takes and two fidelity statistics. The targets depend on the text only (design.md §1), so
/// this is what a trainer with a live teacher does: no cache, float32 targets exactly as the
/// distiller returns them, computed once a step for all the arms that read them (train()).
struct teacher_targets {
    lm teacher{nullptr};
    const bld::distiller* distiller = nullptr;     // (c): K = the byte head's heads
    const bld::distiller* distiller_th = nullptr;  // (d): K = the student's longest token
    std::int64_t chunks = 0, slots = 0;     // chunks the teacher read; active slots of the byte head's targets
    double t_rows = 0, t_bld = 0;            // teacher forward + full log-softmax; bld::distiller
    double true_byte_bits = 0;               // Σ −log2 p_teacher(true byte) over the active slots
    double token_bits = 0, text_bytes = 0;   // the teacher's own token NLL on these chunks, their bytes
    // --c-targets beam|repair: (c)'s next-byte distributions per chunk (indexed like the examples;
    // empty but for the students' chunks), computed once (covering_targets), and what they cost.
    std::vector<bld::byte_distributions> covering{};
    nlohmann::json covering_cost = nullptr;

    double seconds() const { return t_rows + t_bld; }

    std::string note() const {
        char note[192];
        std::snprintf(note, sizeof note, "%lld slots, %.3f bits/true byte (tokens: %.3f bits/byte); rows %.1f s, bld %.1f s",
                      static_cast<long long>(slots), true_byte_bits / static_cast<double>(std::max<std::int64_t>(slots, 1)),
                      token_bits / std::max(text_bytes, 1.0), t_rows, t_bld);
        return note;
    }
};

/// The teacher's log-distributions for a batch of chunks, [teacher tokens of the batch, vocab]:
/// row k of a chunk = its token k given BOS and the tokens before k (the convention of bld's
/// projections, and (e)'s targets at make_batch's target positions).
torch::Tensor teacher_rows(teacher_targets& tt, const std::vector<example>& ex, std::span<const int> idx) {
    const auto t0 = clock_type::now();
    torch::NoGradGuard ng;
    const auto b = make_batch(ex, idx, true, tt.teacher->bos);
    const auto rows = tt.teacher->out->log_prob(target_hidden(tt.teacher, b)).contiguous();
    // The teacher's own token cross-entropy on the same chunks, for comparison with its byte targets.
    tt.token_bits -= rows.gather(1, b.targets.unsqueeze(1)).sum().item<double>() / std::log(2.0);
    for (int i : idx) tt.text_bytes += static_cast<double>(ex[i].text.size());
    tt.chunks += static_cast<std::int64_t>(idx.size());
    tt.t_rows += seconds_since(t0);
    return rows;
}

/// Checks a batch's targets against the batch (positions; the byte head's slots are align_slots')
/// and counts the teacher's bits on the true bytes.
void note_targets(teacher_targets& tt, const bld::distiller& distiller, const std::vector<example>& ex,
                  std::span<const int> idx, const bld::target_batch& t) {
    const auto S = t.positions(), K = t.heads();
    std::size_t longest = 0;  // make_batch pads the student side to its longest chunk too
    for (int i : idx) longest = std::max(longest, ex[i].student_ids.size());
    if (S != static_cast<std::int64_t>(longest)) throw std::runtime_error("target positions differ from the batch's");
    // The slots of the byte head's distiller are those of bld::align_slots at start-up (the (b)
    // student's), at the same places.
    if (&distiller == tt.distiller) {
        const std::uint8_t* mask = t.mask().data();
        for (std::size_t k = 0; k < idx.size(); ++k) {
            const auto& m = ex[idx[k]].mask;
            const std::uint8_t* row = mask + static_cast<std::int64_t>(k) * S * K;
            if (!std::equal(m.begin(), m.end(), row) || std::any_of(row + m.size(), row + S * K, [](auto v) { return v != 0; }))
                throw std::runtime_error("slot masks differ");
        }
        const auto v = t.view<float>();  // the teacher's probability of the true byte, over the byte head's slots
        for (std::int64_t a = 0; a < v.rows(); ++a) {
            const auto y = v.true_bytes.data()[v.slots(a)];
            tt.true_byte_bits -= std::log2(std::max(v.values(a, y), 1e-30f));
        }
        tt.slots += t.active_slots();
    }
}

/// The teacher's byte targets for a batch of chunks from distiller d, given the teacher's rows of
/// the batch (teacher_rows): [B, T, K] slots at the student batch's padded positions (position t
/// of chunk b holds the slots of its student token t, which the hidden state at t predicts;
/// make_batch's layout), compact, float32.
bld::target_batch batch_targets(teacher_targets& tt, const bld::distiller& distiller, const std::vector<example>& ex,
                                std::span<const int> idx, const torch::Tensor& rows) {
    const auto t0 = clock_type::now();
    std::int64_t first = 0;
    // [doc:targets]
    std::vector<bld::distill_sequence<float>> seqs;  // per chunk: its rows, both id lists, its text
    for (int i : idx) {
        const auto& e = ex[i];
        const auto n = static_cast<std::int64_t>(e.teacher_ids.size());
        seqs.push_back({bld::as_view<const float, 2>(rows.narrow(0, first, n), "teacher rows"), e.teacher_ids,
                        e.student_ids, e.text});
        first += n;
    }
    bld::target_batch t = distiller.targets(std::span<const bld::distill_sequence<float>>(seqs));
    // t: [chunks, longest student chunk, K] slots; the active ones hold the teacher's next-byte
    // distributions (compact: their rows only, in slot order), with the slot mask and true bytes
    // [/doc:targets]
    note_targets(tt, distiller, ex, idx, t);
    tt.t_bld += seconds_since(t0);
    return t;
}

/// (c)'s targets for a batch from the next-byte distributions computed once for its chunks
/// (--c-targets beam|repair: covering_targets), placed per student slot by the distiller
/// exactly as the canonical path's are.
bld::target_batch covering_batch_targets(teacher_targets& tt, const bld::distiller& distiller,
                                         const std::vector<example>& ex, std::span<const int> idx) {
    const auto t0 = clock_type::now();
    std::vector<bld::byte_sequence> seqs;
    for (int i : idx) {
        const auto& e = ex[i];
        const auto& d = tt.covering.at(static_cast<std::size_t>(i));
        if (d.positions == 0) throw std::logic_error("no covering targets for chunk " + std::to_string(i));
        seqs.push_back({&d, e.teacher_ids, e.student_ids, e.text});
    }
    bld::target_batch t = distiller.targets(std::span<const bld::byte_sequence>(seqs));
    note_targets(tt, distiller, ex, idx, t);
    tt.t_bld += seconds_since(t0);
    return t;
}

/// The frozen teacher as the covering methods' teacher (bld::teacher_model), for (c) with
/// --c-targets beam|repair: a context's row is the teacher's next-token log-distribution after
/// BOS and the context. The GRU's state after every context asked is kept, so a context that
/// extends a kept one by a token costs one GRU step (the covering methods grow their contexts a
/// token at a time) instead of a forward over the whole context; clear() drops the states (one
/// text at a time). Its rows are the full forward's up to float rounding (check_prefix_teacher).
struct prefix_teacher {
    lm m;
    std::size_t vocab = 0;
    std::size_t rows = 0, steps = 0;  // rows given, GRU steps taken
    std::unordered_map<std::string, torch::Tensor> state{};  // context → hidden state [layers, hidden]

    [[nodiscard]] std::size_t row_size() const { return vocab; }
    void clear() { state.clear(); }
    static std::string key(const std::vector<std::int32_t>& c) {
        return {reinterpret_cast<const char*>(c.data()), c.size() * sizeof(std::int32_t)};
    }

    void logits(const std::vector<std::vector<std::int32_t>>& contexts, std::vector<float>& out) {
        torch::NoGradGuard ng;
        // Every context without a state, with its missing prefixes; then level by level (a level's
        // parents are one token shorter, so already there), one batched GRU step a level.
        std::vector<std::vector<std::int32_t>> todo;
        std::unordered_set<std::string> queued;
        for (const auto& c : contexts)
            for (std::vector<std::int32_t> p = c;; p.pop_back()) {
                if (state.count(key(p)) || !queued.insert(key(p)).second) break;
                todo.push_back(p);
                if (p.empty()) break;
            }
        std::stable_sort(todo.begin(), todo.end(), [](const auto& a, const auto& b) { return a.size() < b.size(); });
        const auto layers = m->rnn->options.num_layers();
        for (std::size_t a = 0; a < todo.size();) {
            std::size_t b = a;
            while (b < todo.size() && todo[b].size() == todo[a].size()) ++b;
            const auto n = static_cast<std::int64_t>(b - a);
            auto in = torch::empty({n, 1}, torch::kInt64);
            std::vector<torch::Tensor> h0;
            for (std::size_t i = a; i < b; ++i) {
                auto p = todo[i];
                in.data_ptr<std::int64_t>()[i - a] = p.empty() ? m->bos : p.back();
                if (p.empty()) {
                    h0.push_back(torch::zeros({layers, m->hidden_size}));
                } else {
                    p.pop_back();
                    h0.push_back(state.at(key(p)));
                }
            }
            const auto hn = std::get<1>(m->rnn->forward(m->embed->forward(in), torch::stack(h0, 1)));  // [layers, n, H]
            for (std::size_t i = a; i < b; ++i) state.emplace(key(todo[i]), hn.select(1, static_cast<std::int64_t>(i - a)));
            steps += b - a;
            a = b;
        }
        std::vector<torch::Tensor> top;  // the last layer's state is the output that predicts the next token
        for (const auto& c : contexts) top.push_back(state.at(key(c)).select(0, layers - 1));
        const auto lp = m->out->log_prob(torch::stack(top)).contiguous();  // [contexts, vocab]
        out.assign(lp.data_ptr<float>(), lp.data_ptr<float>() + lp.numel());
        rows += contexts.size();
    }
};

/// The largest difference between prefix_teacher's rows and the teacher's full forward along a
/// chunk's own tokenization (the rows its canonical targets read).
double check_prefix_teacher(prefix_teacher& pt, const std::vector<example>& ex, int i) {
    torch::NoGradGuard ng;
    const auto& ids = ex[static_cast<std::size_t>(i)].teacher_ids;
    std::vector<std::vector<std::int32_t>> contexts(ids.size());
    for (std::size_t j = 1; j < ids.size(); ++j) {
        contexts[j] = contexts[j - 1];
        contexts[j].push_back(static_cast<std::int32_t>(ids[j - 1]));
    }
    std::vector<float> rows;
    pt.clear();
    pt.logits(contexts, rows);
    pt.clear();
    const std::array<int, 1> one{i};
    const auto full = pt.m->out->log_prob(target_hidden(pt.m, make_batch(ex, one, true, pt.m->bos))).contiguous();
    const auto mine = torch::from_blob(rows.data(), full.sizes(), torch::kFloat32);
    return (mine - full).abs().max().item<double>();
}

/// --c-targets beam|repair: (c)'s next-byte distributions for every chunk of `pool`, computed
/// once before training from the frozen teacher, and their cost (docs/efficacy_design.md,
/// "Two more (c) arms"). The text is the one the teacher's ids spell (byte_sequence's rule).
void covering_targets(teacher_targets& tt, const config& cfg, const bld::vocabulary& teacher_vocab,
                      const std::vector<example>& ex, const std::vector<int>& pool) {
    const auto t0 = clock_type::now();
    const bld::byte_trie trie(teacher_vocab);
    prefix_teacher pt{.m = tt.teacher, .vocab = teacher_vocab.size()};
    double worst = 0;
    for (std::size_t k = 0; k < std::min<std::size_t>(pool.size(), 8); ++k)
        worst = std::max(worst, check_prefix_teacher(pt, ex, pool[k]));
    if (!(worst < 1e-3)) throw std::runtime_error("prefix teacher rows differ from the full forward by " + std::to_string(worst));
    pt.rows = pt.steps = 0;
    tt.covering.assign(ex.size(), {});
    const bld::beam_options beam{cfg.covering_k, cfg.covering_epsilon};
    double bytes = 0, dropped = 0, canonical_rows = 0;
    std::size_t recoveries = 0, repaired = 0;
    progress bar("targets (" + cfg.c_targets + ")", static_cast<std::int64_t>(pool.size()));
    for (std::size_t k = 0; k < pool.size(); ++k) {
        const auto& e = ex[static_cast<std::size_t>(pool[k])];
        const std::string spelled = bld::detail::check_ids(trie, e.teacher_ids, std::nullopt, "covering targets");
        pt.clear();
        auto& d = tt.covering[static_cast<std::size_t>(pool[k])];
        try {
            d = cfg.c_targets == "beam" ? bld::covering_beam(trie, pt, spelled, beam)
                                        : bld::repaired_path(trie, pt, spelled, e.teacher_ids, {cfg.repair_threshold, beam});
        } catch (const bld::error& err) {
            throw std::runtime_error("chunk " + std::to_string(pool[k]) + " (\"" + e.text + "\"): " + err.what());
        }
        bytes += static_cast<double>(spelled.size());
        canonical_rows += static_cast<double>(e.teacher_ids.size());
        for (std::size_t b = 0; b < spelled.size(); ++b) dropped += d.dropped[b];
        recoveries += d.recoveries;
        repaired += d.repaired;
        bar.update(static_cast<std::int64_t>(k + 1));
    }
    pt.clear();
    const double seconds = seconds_since(t0);
    char note[200];
    std::snprintf(note, sizeof note, "%.0f rows (%.3f a byte, %.2fx the canonical path's), %.0f s", static_cast<double>(pt.rows),
                  static_cast<double>(pt.rows) / bytes, static_cast<double>(pt.rows) / canonical_rows, seconds);
    bar.finish(note);
    tt.covering_cost = {{"method", cfg.c_targets}, {"k", cfg.covering_k}, {"epsilon", cfg.covering_epsilon},
                        {"threshold", cfg.repair_threshold}, {"chunks", pool.size()}, {"bytes", bytes},
                        {"seconds", seconds}, {"threads", cfg.threads}, {"teacher_rows", pt.rows},
                        {"gru_steps", pt.steps}, {"canonical_rows", canonical_rows},
                        {"rows_per_byte", static_cast<double>(pt.rows) / bytes},
                        {"mean_dropped", dropped / bytes}, {"recoveries", recoveries}, {"repaired_bytes", repaired},
                        {"prefix_check_max_abs", worst}};
}

/// The slots of a batch: mask [N, K] uint8 and true bytes [N, K] int32.
std::pair<torch::Tensor, torch::Tensor> batch_slots(const std::vector<example>& ex, std::span<const int> idx,
                                                    std::int64_t tokens, std::int64_t K) {
    auto mask = torch::empty({tokens, K}, torch::kUInt8);
    auto bytes = torch::empty({tokens, K}, torch::kInt32);
    auto* m = mask.data_ptr<std::uint8_t>();
    auto* y = bytes.data_ptr<std::int32_t>();
    for (int i : idx) {
        m = std::copy(ex[i].mask.begin(), ex[i].mask.end(), m);
        y = std::copy(ex[i].true_byte.begin(), ex[i].true_byte.end(), y);
    }
    return {mask, bytes};
}

/// The student side of a padded batch for the token head: ids [B, T] (padding 0) and the
/// attention mask [B, T] (1 = a token), in make_batch's layout.
std::pair<torch::Tensor, torch::Tensor> student_ids_mask(const std::vector<example>& ex, std::span<const int> idx,
                                                         std::int64_t T) {
    const auto B = static_cast<std::int64_t>(idx.size());
    auto ids = torch::zeros({B, T}, torch::kInt64);
    auto mask = torch::zeros({B, T}, torch::kUInt8);
    for (std::int64_t b = 0; b < B; ++b) {
        const auto& s = ex[idx[static_cast<std::size_t>(b)]].student_ids;
        for (std::size_t t = 0; t < s.size(); ++t) {
            ids.data_ptr<std::int64_t>()[b * T + static_cast<std::int64_t>(t)] = s[t];
            mask.data_ptr<std::uint8_t>()[b * T + static_cast<std::int64_t>(t)] = 1;
        }
    }
    return {ids, mask};
}

// ---- training ----------------------------------------------------------------------------------

/// Batches for `epochs` passes over `pool`: shuffled, grouped by length in windows of 50
/// batches (less padding), window order shuffled again. Deterministic in `seed`.
std::vector<std::vector<int>> schedule(const std::vector<example>& ex, const std::vector<int>& pool, bool teacher_side,
                                       double epochs, std::int64_t B, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    const auto per_epoch = (static_cast<std::int64_t>(pool.size()) + B - 1) / B;
    const auto total = std::max<std::int64_t>(1, static_cast<std::int64_t>(std::ceil(epochs * static_cast<double>(per_epoch))));
    const auto len = [&](int i) { return (teacher_side ? ex[i].teacher_ids : ex[i].student_ids).size(); };
    std::vector<std::vector<int>> out;
    while (static_cast<std::int64_t>(out.size()) < total) {
        std::vector<int> perm = pool;
        std::shuffle(perm.begin(), perm.end(), rng);
        std::vector<std::vector<int>> epoch;
        const std::size_t window = static_cast<std::size_t>(50 * B);
        for (std::size_t w = 0; w < perm.size(); w += window) {
            const auto end = perm.begin() + static_cast<std::ptrdiff_t>(std::min(perm.size(), w + window));
            std::stable_sort(perm.begin() + static_cast<std::ptrdiff_t>(w), end, [&](int a, int b) { return len(a) < len(b); });
            for (auto it = perm.begin() + static_cast<std::ptrdiff_t>(w); it < end; it += std::min<std::ptrdiff_t>(B, end - it))
                epoch.emplace_back(it, it + std::min<std::ptrdiff_t>(B, end - it));
        }
        std::shuffle(epoch.begin(), epoch.end(), rng);
        for (auto& b : epoch) out.push_back(std::move(b));
    }
    out.resize(static_cast<std::size_t>(total));
    return out;
}

enum class role { teacher, a, b, c, d, p, e };

const char* role_name(role r) {
    switch (r) {
        case role::teacher: return "teacher";
        case role::a: return "(a) token CE";
        case role::b: return "(b) + byte CE";
        case role::c: return "(c) + byte CE + BLD KL";
        case role::d: return "(d) + token-head KL";
        case role::p: return "(a') token CE, llama2";
        case role::e: return "(e) + token KD, llama2";
    }
    return "";
}
char role_letter(role r) { return "tabcdpe"[static_cast<int>(r)]; }
role role_of(char k) {
    switch (k) {
        case 'a': return role::a;
        case 'b': return role::b;
        case 'c': return role::c;
        case 'd': return role::d;
        case 'p': return role::p;
        default: return role::e;
    }
}
/// Models on the teacher's tokenizer: the teacher, (a′) and (e).
bool teacher_side_of(role r) { return r == role::teacher || r == role::p || r == role::e; }

/// One student run's setting: its role and the λ of its distillation term (λ_KL for (c), λ_TH
/// for (d), λ_KD for (e); unused by the others).
struct arm {
    role r = role::a;
    double lambda = 0.0;
    std::string targets{};  // (c): "" (the canonical path) or the covering method of --c-targets
    [[nodiscard]] std::string key() const {
        std::string k(1, role_letter(r));
        if (r == role::c || r == role::d || r == role::e) {
            char b[32];
            std::snprintf(b, sizeof b, "@%g", lambda);
            k += b;
        }
        return k;
    }
    [[nodiscard]] std::string name() const {
        std::string n = r == role::c && !targets.empty() ? "(c) BLD KL, " + targets + " targets" : role_name(r);
        if (r == role::c || r == role::d || r == role::e) {
            char b[48];
            std::snprintf(b, sizeof b, " %s=%g", r == role::c ? "kl" : r == role::d ? "th" : "kd", lambda);
            n += b;
        }
        return n;
    }
};

struct curve_point {
    std::int64_t step, tokens;
    double bpb;        // held-out bits per byte (the curve's chunks)
    double train_bpb;  // the token CE of the steps since the previous point, in bits per byte of their text
};

struct run_result {
    std::vector<curve_point> curve;
    std::vector<double> losses;  // the training loss of every step (all terms)
    double heldout_bpb = 0, best_valid_bpb = 0;
    double seconds = 0;          // wall time of the run (for students trained together: of the group)
    // The cost of the arm's steps (evaluations left out), as if it were trained alone:
    double step_seconds = 0;     //   its own forward, losses, backward and optimiser step
    double loss_seconds = 0;     //   of which bld's loss, forward and backward (on a detached input)
    double teacher_seconds = 0;  //   the teacher's forward on the steps it reads it (shared in a group)
    double targets_seconds = 0;  //   bld::distiller's targets on the steps it reads them (shared in a group)
    std::int64_t params = 0, byte_head_params = 0, steps = 0, tokens = 0;
    std::string stopped = "schedule";  // why training ended: schedule, step budget, patience or budget
};

/// An arm's cost per step as if it were trained alone: its own part, the teacher's forward and
/// bld's targets where it reads them; bld's share = its targets + its loss (forward and backward)
/// over that. From one run or the sum of several (steps summed alike).
struct arm_cost {
    double step = 0, teacher = 0, targets = 0, loss = 0, bld_share = 0;
};

arm_cost cost_of(const run_result& summed) {
    const double n = static_cast<double>(std::max<std::int64_t>(summed.steps, 1));
    arm_cost c{.step = (summed.step_seconds + summed.teacher_seconds + summed.targets_seconds) / n,
               .teacher = summed.teacher_seconds / n,
               .targets = summed.targets_seconds / n,
               .loss = summed.loss_seconds / n};
    c.bld_share = c.step > 0 ? (c.targets + c.loss) / c.step : 0.0;
    return c;
}

/// The cost table's header and one row (seconds per step; the sizing adds steps per run).
void print_cost_header(const char* extra = "") {
    std::printf("%-30s %8s %9s %9s %9s %7s%s\n", "model", "s/step", "teacher", "targets", "bld loss", "bld %", extra);
}
void print_cost_row(const std::string& name, const arm_cost& c) {
    std::printf("%-30s %8.3f %9.3f %9.3f %9.3f %6.1f%%", name.c_str(), c.step, c.teacher, c.targets, c.loss,
                100.0 * c.bld_share);
}

/// Early stopping of the teacher: the validation chunks, evaluations per epoch, patience and
/// budgets (docs/efficacy_design.md). Empty: train the whole schedule.
struct stopping {
    std::vector<int> valid;
    std::int64_t every = 0;  // steps between evaluations
    int patience = 0;
    double minutes = 0;
    std::int64_t max_steps = 0;  // step budget (0: none): the schedule, warm-up and decay included, ends there
};

/// One model in training: its arm, network, optimiser and record.
struct trainee {
    trainee(arm a, lm model, double lr)
        : which(a), m(std::move(model)), opt(m->parameters(), torch::optim::AdamOptions(lr)) {}
    arm which;
    lm m;
    torch::optim::Adam opt;
    run_result res;
    double avg = 0, avg_extra = 0;  // running means of the token CE and of the other terms
    double train_nats = 0, train_bytes = 0;  // token CE (nats) and text bytes since the last curve point
};
using group = std::vector<std::unique_ptr<trainee>>;

/// --interrupt-at: the students' checkpoint is saved and the program stops (exit 75).
struct interrupted {
    std::int64_t step;
};

/// Where a group's training starts and how it is saved on the way (--preset full: a seed
/// interrupted mid-way resumes from its last checkpoint, exactly, since the batches are fixed in
/// advance and nothing else is random).
struct resume_point {
    std::int64_t start = 0;                          // the first step to train (a loaded checkpoint's)
    std::function<void(std::int64_t step)> save;     // writes the group's state before `step`
    double every_seconds = 600;
};

/// Trains every model of `g` on the same batches, step by step together (docs/efficacy_design.md,
/// "Decisions"): the teacher's forward and bld's targets of a step are computed once and read by
/// every arm that needs them, so the arms of a seed see the same batches and the very same
/// targets. A group of one with `stop` set is the teacher (validation, patience, budgets).
void train(group& g, const std::vector<example>& ex, const std::vector<std::vector<int>>& batches,
           const std::vector<int>& curve_set, const std::vector<int>& heldout, const config& cfg,
           teacher_targets* targets, const std::string& label, const stopping& stop = {},
           const resume_point& resume = {}) {
    const auto t0 = clock_type::now();
    auto last_save = t0;
    const bool timing = cfg.sizing_steps > 0;  // --sizing: steps only, nothing evaluated
    const auto planned = static_cast<std::int64_t>(batches.size());
    const auto steps = timing            ? std::min<std::int64_t>(cfg.sizing_steps, planned)
                       : stop.max_steps > 0 ? std::min<std::int64_t>(stop.max_steps, planned)
                                            : planned;
    const auto warmup = std::max<std::int64_t>(1, std::min<std::int64_t>(100, steps / 20));
    const double curve_bytes = text_bytes(ex, curve_set);
    const auto any = [&](auto pred) { return std::any_of(g.begin(), g.end(), [&](const auto& t) { return pred(t->which.r); }); };
    // (c) reads the teacher's rows unless its targets were computed before training (--c-targets).
    const bool c_covering = targets && !targets->covering.empty();
    const bool need_rows = any([&](role r) { return (r == role::c && !c_covering) || r == role::d || r == role::e; });
    const bool need_c = any([](role r) { return r == role::c; }), need_d = any([](role r) { return r == role::d; });
    for (auto& t : g) {
        t->res.params = lm_params(t->m);
        t->res.byte_head_params = t->m->bytes ? count_params(t->m->bytes->parameters()) : 0;
    }
    std::vector<std::int64_t> eval_at;
    for (std::int64_t k = 0; k <= cfg.curve_points; ++k) eval_at.push_back(k * steps / cfg.curve_points);
    const auto evaluate = [&](trainee& t, std::int64_t step) {
        const double nan = std::numeric_limits<double>::quiet_NaN();
        const double bpb = timing ? nan : total_nats(t.m, ex, curve_set, teacher_side_of(t.which.r), 64) / (curve_bytes * std::log(2.0));
        t.res.curve.push_back({step, t.res.tokens, bpb, t.train_bytes > 0 ? t.train_nats / (t.train_bytes * std::log(2.0)) : nan});
        t.train_nats = t.train_bytes = 0;
    };
    // Early stopping (the teacher): the best weights on the validation chunks are kept.
    const bool stopping_on = !stop.valid.empty() && stop.every > 0;
    if ((stopping_on || stop.minutes > 0) && g.size() != 1) throw std::logic_error("early stopping is for one model");
    const double valid_bytes = stopping_on ? text_bytes(ex, stop.valid) : 0.0;
    double best = std::numeric_limits<double>::infinity();
    int since_best = 0;
    std::vector<torch::Tensor> best_state;
    const auto validate = [&] {
        auto& m = g.front()->m;
        const double bpb = total_nats(m, ex, stop.valid, teacher_side_of(g.front()->which.r), 64) / (valid_bytes * std::log(2.0));
        if (bpb < best) {
            best = bpb;
            since_best = 0;
            torch::NoGradGuard ng;
            best_state.clear();
            for (const auto& p : m->parameters()) best_state.push_back(p.detach().clone());
        } else {
            ++since_best;
        }
    };
    progress bar(label, steps, resume.start);
    const auto note_text = [&] {
        if (timing) return std::string();
        std::string note;
        char b[96];
        if (g.size() == 1) {
            const auto& t = *g.front();
            std::snprintf(b, sizeof b, "token CE %.3f", t.avg);
            note = b;
            if (t.which.r != role::teacher && t.which.r != role::a && t.which.r != role::p) {
                std::snprintf(b, sizeof b, "  other terms %.3f", t.avg_extra);
                note += b;
            }
            if (stopping_on && std::isfinite(best)) {
                std::snprintf(b, sizeof b, "  valid best %.3f", best);
                note += b;
            }
            std::snprintf(b, sizeof b, "  held-out %.3f bits/byte", t.res.curve.back().bpb);
            return note + b;
        }
        note = "held-out";
        for (const auto& t : g) {
            std::snprintf(b, sizeof b, " %s %.3f", t->which.key().c_str(), t->res.curve.back().bpb);
            note += b;
        }
        return note;
    };
    if (resume.start > 0 && (stopping_on || resume.start > steps)) throw std::logic_error("cannot resume here");
    std::int64_t step = resume.start;
    for (; step < steps; ++step) {
        if (resume.save && step > resume.start &&
            (seconds_since(last_save) > resume.every_seconds || step == cfg.interrupt_at)) {
            for (auto& t : g) t->res.seconds += seconds_since(last_save);
            resume.save(step);
            last_save = clock_type::now();
            if (step == cfg.interrupt_at) throw interrupted{step};
        }
        if (std::find(eval_at.begin(), eval_at.end(), step) != eval_at.end())
            for (auto& t : g) evaluate(*t, step);
        if (stopping_on && step > 0 && step % stop.every == 0) {
            validate();
            if (stop.patience > 0 && since_best >= stop.patience) {
                g.front()->res.stopped = "patience";
                break;
            }
        }
        if (stop.minutes > 0 && seconds_since(t0) > stop.minutes * 60.0) {
            g.front()->res.stopped = "budget";
            break;
        }
        // Linear warm-up, then cosine decay to a tenth of the peak.
        const double f = step < warmup ? static_cast<double>(step + 1) / static_cast<double>(warmup)
                                       : 0.1 + 0.45 * (1 + std::cos(M_PI * static_cast<double>(step - warmup) /
                                                                    static_cast<double>(std::max<std::int64_t>(1, steps - warmup))));
        const auto& idx = batches[static_cast<std::size_t>(step)];
        double idx_bytes = 0;
        for (int i : idx) idx_bytes += static_cast<double>(ex[i].text.size());
        // What the step's arms share: the batch on either tokenizer, the teacher's rows, bld's targets.
        // The batches are built here, before the arms' timers start, once per tokenizer.
        std::optional<lm_batch> batch_of[2];
        for (const auto& tp : g) {
            const bool side = teacher_side_of(tp->which.r);
            if (!batch_of[side ? 1 : 0]) batch_of[side ? 1 : 0] = make_batch(ex, idx, side, tp->m->bos);
        }
        const auto batch = [&](bool teacher_side) -> const lm_batch& { return *batch_of[teacher_side ? 1 : 0]; };
        torch::Tensor rows;
        std::optional<bld::target_batch> tc, td;
        double t_rows = 0, t_c = 0, t_d = 0;
        if (need_rows) {
            const double before = targets->t_rows;
            rows = teacher_rows(*targets, ex, idx);  // [teacher tokens, V_t]
            t_rows = targets->t_rows - before;
        }
        if (need_c) {
            const double before = targets->t_bld;
            tc = c_covering ? covering_batch_targets(*targets, *targets->distiller, ex, idx)
                            : batch_targets(*targets, *targets->distiller, ex, idx, rows);
            t_c = targets->t_bld - before;
        }
        if (need_d) {
            const double before = targets->t_bld;
            td = batch_targets(*targets, *targets->distiller_th, ex, idx, rows);
            t_d = targets->t_bld - before;
        }
        for (auto& tp : g) {
            trainee& t = *tp;
            const auto ts = clock_type::now();
            const role r = t.which.r;
            auto& m = t.m;
            for (auto& pg : t.opt.param_groups()) static_cast<torch::optim::AdamOptions&>(pg.options()).lr(cfg.lr * f);
            const auto& b = batch(teacher_side_of(r));
            const auto T = b.inputs.size(1);
            const auto hidden = m->hidden(b.inputs).reshape({-1, m->hidden_size});  // [B·T, hidden]
            const auto h = hidden.index_select(0, b.positions);                     // [N, hidden] (target_hidden)
            const auto o = m->out->forward(h, b.targets);
            // Token CE, mean over the batch's tokens (ASMoutput::loss is a plain double in libtorch's
            // C++ API, so the loss is taken from the differentiable log-probabilities).
            const auto token_ce = -o.output.mean();
            // bld's terms are evaluated on a detached copy of their input x, forward and backward, so
            // that their cost is timed alone; x's gradient then joins the one backward pass below.
            torch::Tensor x, extra, x_grad;
            const auto bld_term = [&](torch::Tensor input, auto&& loss) {
                x = std::move(input);
                const auto tl = clock_type::now();
                auto xd = x.detach().requires_grad_(true);
                extra = loss(xd);
                extra.backward();
                x_grad = xd.grad();
                t.res.loss_seconds += seconds_since(tl);
            };
            if (r == role::b || r == role::c) {
                // The byte term: bld's fused pass gives the value and ∂/∂logits at once
                // (bld/torch/loss.hpp); (b) has no teacher, only the byte cross-entropy.
                // [doc:byte_term]
                if (r == role::c) {
                    // The teacher's targets carry their slots: [B·T, K] at the batch's padded positions,
                    // so the byte head reads every position (padding has no active slot).
                    bld_term(m->bytes->forward(hidden), [&](const torch::Tensor& logits) {
                        return bld::autograd::bld_loss(logits, tc->view<float>(),
                                                       {.lambda_byte = cfg.lambda_byte, .lambda_kl = t.which.lambda});
                    });
                } else {
                    const auto [mask, true_bytes] = batch_slots(ex, idx, b.tokens, cfg.heads);  // [N, K]
                    bld_term(m->bytes->forward(h), [&](const torch::Tensor& logits) {
                        return cfg.lambda_byte * bld::autograd::byte_cross_entropy(logits, true_bytes, mask);
                    });
                }
                // [/doc:byte_term]
            } else if (r == role::d) {
                // The token-head byte KL: the student's own next-token distributions [B, T, V_s]
                // (the adaptive softmax's full log-probabilities, differentiable), projected along its
                // tokenization and held to the teacher's next-byte targets at every text byte.
                const auto [ids, mask] = student_ids_mask(ex, idx, T);
                bld_term(m->out->log_prob(hidden).reshape({b.inputs.size(0), T, -1}), [&](const torch::Tensor& logp) {
                    return t.which.lambda * bld::autograd::token_head_loss(*targets->distiller_th, logp, ids, *td, {}, mask);
                });
            } else if (r == role::e) {
                // Token-level KD on the teacher's own tokens: KL(teacher ‖ student), mean over tokens
                // (the teacher's rows are at the same positions as h).
                extra = t.which.lambda * (rows.exp() * (rows - m->out->log_prob(h))).sum(1).mean();
            }
            double extra_value = 0;
            if (extra.defined()) {
                extra_value = extra.item<double>();
                t.avg_extra = step == 0 ? extra_value : 0.98 * t.avg_extra + 0.02 * extra_value;
            }
            t.opt.zero_grad();
            if (x.defined())
                torch::autograd::backward({token_ce, x}, {torch::ones_like(token_ce), x_grad});
            else if (r == role::e)
                (token_ce + extra).backward();
            else
                token_ce.backward();
            torch::nn::utils::clip_grad_norm_(m->parameters(), 1.0);
            t.opt.step();
            t.res.tokens += b.tokens;
            const double ce = token_ce.item<double>();
            t.res.losses.push_back(ce + extra_value);
            t.avg = step == 0 ? ce : 0.98 * t.avg + 0.02 * ce;
            t.train_nats += ce * static_cast<double>(b.tokens);
            t.train_bytes += idx_bytes;
            t.res.step_seconds += seconds_since(ts);
            if ((r == role::c && !c_covering) || r == role::d || r == role::e) t.res.teacher_seconds += t_rows;
            t.res.targets_seconds += r == role::c ? t_c : r == role::d ? t_d : 0.0;
        }
        bar.update(step + 1, note_text());
    }
    if (stopping_on) {
        validate();
        if (!best_state.empty()) {  // back to the best validation point
            torch::NoGradGuard ng;
            auto ps = g.front()->m->parameters();
            for (std::size_t k = 0; k < ps.size(); ++k) ps[k].copy_(best_state[k]);
        }
        g.front()->res.best_valid_bpb = best;
    }
    for (auto& t : g) {
        t->res.steps = step;
        if (step == steps && steps < planned && !timing) t->res.stopped = "step budget";
        evaluate(*t, step);
    }
    bar.finish(note_text());
    const double bytes = text_bytes(ex, heldout);
    for (auto& t : g) {
        t->res.heldout_bpb = timing || curve_set.size() == heldout.size()
                                 ? t->res.curve.back().bpb
                                 : total_nats(t->m, ex, heldout, teacher_side_of(t->which.r), 64) / (bytes * std::log(2.0));
        t->res.seconds += seconds_since(last_save);
    }
}

nlohmann::json to_json(const run_result& r) {
    nlohmann::json c = nlohmann::json::array();
    for (const auto& p : r.curve)
        c.push_back({{"step", p.step}, {"tokens", p.tokens}, {"bpb", p.bpb}, {"train_bpb", p.train_bpb}});
    nlohmann::json j = {{"heldout_bpb", r.heldout_bpb}, {"seconds", r.seconds}, {"step_seconds", r.step_seconds},
                        {"loss_seconds", r.loss_seconds}, {"teacher_seconds", r.teacher_seconds},
                        {"targets_seconds", r.targets_seconds}, {"params", r.params},
                        {"byte_head_params", r.byte_head_params}, {"steps", r.steps}, {"tokens", r.tokens},
                        {"stopped", r.stopped}, {"curve", c}};
    if (r.best_valid_bpb > 0) j["best_valid_bpb"] = r.best_valid_bpb;
    return j;
}

/// A run saved by to_json (the results of a finished seed, docs/efficacy_design.md "Decisions").
run_result from_json(const nlohmann::json& j) {
    run_result r;
    const auto number = [](const nlohmann::json& v) {
        return v.is_number() ? v.get<double>() : std::numeric_limits<double>::quiet_NaN();  // NaN is saved as null
    };
    for (const auto& p : j.at("curve"))
        r.curve.push_back({p.at("step").get<std::int64_t>(), p.at("tokens").get<std::int64_t>(), number(p.at("bpb")),
                           number(p.value("train_bpb", nlohmann::json()))});
    r.heldout_bpb = j.at("heldout_bpb").get<double>();
    r.seconds = j.at("seconds").get<double>();
    r.step_seconds = j.at("step_seconds").get<double>();
    r.loss_seconds = j.at("loss_seconds").get<double>();
    r.teacher_seconds = j.at("teacher_seconds").get<double>();
    r.targets_seconds = j.at("targets_seconds").get<double>();
    r.params = j.at("params").get<std::int64_t>();
    r.byte_head_params = j.at("byte_head_params").get<std::int64_t>();
    r.steps = j.at("steps").get<std::int64_t>();
    r.tokens = j.at("tokens").get<std::int64_t>();
    r.stopped = j.at("stopped").get<std::string>();
    r.best_valid_bpb = j.value("best_valid_bpb", 0.0);
    return r;
}

std::pair<double, double> mean_sd(const std::vector<double>& v) {
    const double m = std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size());
    double s = 0;
    for (double x : v) s += (x - m) * (x - m);
    return {m, v.size() > 1 ? std::sqrt(s / static_cast<double>(v.size() - 1)) : 0.0};
}

std::string millions(std::int64_t n) {
    char b[32];
    std::snprintf(b, sizeof b, "%.2fM", static_cast<double>(n) / 1e6);
    return b;
}

/// FNV-1a, 64 bits.
std::uint64_t fnv1a64(std::string_view s) {
    std::uint64_t h = 0xcbf29ce484222325ull;
    for (const unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
    return h;
}

/// FNV-1a-64 over a model's parameters and buffers (names, shapes and float bits, in order):
/// which teacher a kept seed was trained behind.
std::uint64_t parameter_digest(torch::nn::Module& m) {
    std::uint64_t h = 0xcbf29ce484222325ull;
    const auto mix = [&](const void* p, std::size_t n) {
        const auto* b = static_cast<const unsigned char*>(p);
        for (std::size_t i = 0; i < n; ++i) h = (h ^ b[i]) * 0x100000001b3ull;
    };
    const auto add = [&](const std::string& name, const torch::Tensor& t) {
        const auto c = t.detach().to(torch::kCPU).contiguous();
        mix(name.data(), name.size());
        for (const auto d : c.sizes()) mix(&d, sizeof d);
        mix(c.data_ptr(), c.numel() * c.element_size());
    };
    for (const auto& p : m.named_parameters()) add(p.key(), p.value());
    for (const auto& b : m.named_buffers()) add(b.key(), b.value());
    return h;
}

/// Where and how a seed was trained (kept beside its results; not part of any number).
nlohmann::json machine_note(const config& cfg) {
    std::string cpu;
    std::ifstream f("/proc/cpuinfo");
    for (std::string line; cpu.empty() && std::getline(f, line);)
        if (line.rfind("model name", 0) == 0) cpu = line.substr(line.find(':') + 2);
    const char* core = std::getenv("OPENBLAS_CORETYPE");
    const char* blas_threads = std::getenv("OPENBLAS_NUM_THREADS");
    const auto now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
    char when[32];
    std::strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
    return {{"cpu", cpu}, {"threads", cfg.threads}, {"openblas_coretype", core ? core : ""},
            {"openblas_num_threads", blas_threads ? blas_threads : ""}, {"finished", when}};
}

std::string read_file(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) return {};
    return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

/// The smoke preset's checks (the test suite): every arm's training loss goes down (the mean of
/// its last quarter of steps below that of its first quarter), and (e)'s targets — the batched,
/// padded teacher rows at the target positions — equal a plain softmax of the teacher's outputs
/// computed for each chunk on its own.
std::vector<std::string> smoke_checks(const std::map<std::string, std::vector<run_result>>& runs, teacher_targets& tt,
                                      const std::vector<example>& ex, const std::vector<int>& pool, std::int64_t B) {
    std::vector<std::string> failures;
    for (const auto& [key, rs] : runs)
        for (const auto& r : rs) {
            const auto n = r.losses.size(), q = std::max<std::size_t>(1, n / 4);
            if (n < 4) {
                failures.push_back(key + ": too few steps to check");
                continue;
            }
            const double first = std::accumulate(r.losses.begin(), r.losses.begin() + static_cast<std::ptrdiff_t>(q), 0.0) / static_cast<double>(q);
            const double last = std::accumulate(r.losses.end() - static_cast<std::ptrdiff_t>(q), r.losses.end(), 0.0) / static_cast<double>(q);
            std::printf("check: %-8s training loss %.4f -> %.4f\n", key.c_str(), first, last);
            if (!(last < first)) failures.push_back(key + ": the training loss did not decrease");
        }
    const std::vector<int> idx(pool.begin(), pool.begin() + std::min<std::ptrdiff_t>(B, static_cast<std::ptrdiff_t>(pool.size())));
    const auto rows = teacher_rows(tt, ex, idx).exp();
    torch::NoGradGuard ng;
    double worst = 0;
    std::int64_t first = 0;
    for (int i : idx) {
        const std::vector<int> one{i};
        const auto b = make_batch(ex, one, true, tt.teacher->bos);
        const auto own = torch::softmax(tt.teacher->out->log_prob(target_hidden(tt.teacher, b)), 1);
        worst = std::max(worst, (rows.narrow(0, first, own.size(0)) - own).abs().max().item<double>());
        first += own.size(0);
    }
    std::printf("check: (e) targets vs the teacher's softmax per chunk: max |difference| %.3g over %zu chunks\n", worst, idx.size());
    if (!(worst < 1e-5)) failures.push_back("(e)'s targets differ from the teacher's softmax");
    return failures;
}

/// A group's checkpoint: every model and optimiser state (torch archives) and the records so far
/// (state.json), written to DIR.part and then renamed to DIR, so an interruption leaves either
/// the previous checkpoint or the new one.
void save_group(const group& g, const std::string& dir, std::int64_t step) {
    const std::string tmp = dir + ".part";
    std::filesystem::remove_all(tmp);
    std::filesystem::create_directories(tmp);
    nlohmann::json j = {{"step", step}};
    for (const auto& t : g) {
        const auto k = t->which.key();
        torch::save(t->m, tmp + "/" + k + ".pt");
        torch::save(t->opt, tmp + "/" + k + ".optim.pt");
        auto r = to_json(t->res);
        r["losses"] = t->res.losses;
        r["avg"] = t->avg;
        r["avg_extra"] = t->avg_extra;
        r["train_nats"] = t->train_nats;
        r["train_bytes"] = t->train_bytes;
        j["arms"][k] = r;
    }
    {
        std::ofstream f(tmp + "/state.json");
        f << j.dump(1) << "\n";
        if (!f) throw std::runtime_error("cannot write " + tmp + "/state.json");
    }
    std::filesystem::remove_all(dir);
    std::filesystem::rename(tmp, dir);
}

/// Loads a checkpoint written by save_group into a group built the same way; returns its step.
std::int64_t load_group(group& g, const std::string& dir, const nlohmann::json& j) {
    for (auto& t : g) {
        const auto k = t->which.key();
        const auto& r = j.at("arms").at(k);
        torch::load(t->m, dir + "/" + k + ".pt");
        torch::load(t->opt, dir + "/" + k + ".optim.pt");
        t->res = from_json(r);
        t->res.losses = r.at("losses").get<std::vector<double>>();
        t->avg = r.at("avg").get<double>();
        t->avg_extra = r.at("avg_extra").get<double>();
        t->train_nats = r.at("train_nats").get<double>();
        t->train_bytes = r.at("train_bytes").get<double>();
    }
    return j.at("step").get<std::int64_t>();
}

/// The λ grid of an arm (one run per value); the arms without a distillation term run once.
const std::vector<double>& grid_of(const config& cfg, role r) {
    static const std::vector<double> once{0.0};
    return r == role::c ? cfg.lambda_kl : r == role::d ? cfg.lambda_th : r == role::e ? cfg.lambda_kd : once;
}

/// Every (arm, λ) the configuration trains, in arm_letters order.
std::vector<arm> arms_of(const config& cfg) {
    std::vector<arm> arms;
    for (const char k : arm_letters)
        if (cfg.students.find(k) != std::string::npos)
            for (const double l : grid_of(cfg, role_of(k)))
                arms.push_back({role_of(k), l, role_of(k) == role::c && cfg.c_targets != "canonical" ? cfg.c_targets : ""});
    return arms;
}

/// The students of one seed: each built right after torch::manual_seed(seed), so that within a
/// tokenizer every arm starts from the same trunk (the byte head of (b) and (c) is built after it).
group make_students(const config& cfg, const std::vector<arm>& arms, int seed, std::int64_t teacher_vocab,
                    std::int64_t student_vocab) {
    group g;
    for (const arm& a : arms) {
        torch::manual_seed(static_cast<std::uint64_t>(seed));
        const bool ts = teacher_side_of(a.r);
        lm s(ts ? teacher_vocab : student_vocab, cfg.student, cfg.cutoffs, a.r == role::b || a.r == role::c ? cfg.heads : 0);
        g.push_back(std::make_unique<trainee>(a, s, cfg.lr));
    }
    return g;
}

/// --sizing N (docs/efficacy_design.md, "Sizing before the runs"): N steps of the teacher and N
/// steps of every arm and grid point trained together (as the preset trains a seed), timed, with
/// an untrained teacher behind the targets (a step costs the same whatever the weights) and
/// nothing evaluated, after one untimed warm-up step; prints each arm's cost per step as if
/// trained alone, the shared step, and the preset's projected wall time (the teacher's budget
/// or schedule, then one group per seed).
int sizing(const config& cfg, lm& teacher, const compact_vocabulary& tv, const compact_vocabulary& sv,
           const bld::distiller& distiller, const bld::distiller& distiller_th, const std::vector<example>& ex,
           const std::vector<int>& teacher_pool, const std::vector<int>& student_pool) {
    const std::vector<int> none;
    const auto per_epoch = [&](const std::vector<int>& pool) {
        return static_cast<double>((static_cast<std::int64_t>(pool.size()) + cfg.batch - 1) / cfg.batch);
    };
    // One untimed step first (the first touches of a run's tensors cost page faults that later
    // steps do not pay), then the N timed steps.
    const auto timed = [&](group& grp, const std::vector<std::vector<int>>& batches, teacher_targets* tt,
                           const std::string& label) {
        config warm = cfg;
        warm.sizing_steps = 1;
        train(grp, ex, batches, none, none, warm, tt, label + " (warm-up)");
        for (auto& t : grp) t->res = run_result{};
        train(grp, ex, batches, none, none, cfg, tt, label + " (timing)");
    };
    group tg;
    tg.push_back(std::make_unique<trainee>(arm{role::teacher}, teacher, cfg.lr));
    timed(tg, schedule(ex, teacher_pool, true, 1.0, cfg.batch, 7), nullptr, "teacher");
    const auto& tr = tg.front()->res;
    const double t_step = tr.step_seconds / static_cast<double>(std::max<std::int64_t>(tr.steps, 1));
    double teacher_steps = per_epoch(teacher_pool) * cfg.teacher_epochs;
    if (cfg.teacher_steps > 0) teacher_steps = std::min(teacher_steps, static_cast<double>(cfg.teacher_steps));
    double t_teacher = t_step * teacher_steps;
    if (cfg.teacher_minutes > 0) t_teacher = std::min(t_teacher, cfg.teacher_minutes * 60.0);
    teacher->eval();
    for (auto& p : teacher->parameters()) p.requires_grad_(false);
    teacher_targets tt{.teacher = teacher, .distiller = &distiller, .distiller_th = &distiller_th};
    const double steps_per_run = per_epoch(student_pool) * cfg.student_epochs;
    auto g = make_students(cfg, arms_of(cfg), 0, tv.size(), sv.size());
    timed(g, schedule(ex, student_pool, false, 1.0, cfg.batch, 1000), &tt, "students");
    std::printf("sizing: %lld steps, %d thread(s); seconds per step, each arm as if trained alone\n",
                static_cast<long long>(cfg.sizing_steps), cfg.threads);
    print_cost_header("  steps/run");
    std::printf("%-30s %8.3f %9s %9s %9s %7s %10.0f\n", "teacher", t_step, "", "", "", "", teacher_steps);
    for (const auto& t : g) {
        print_cost_row(t->which.name(), cost_of(t->res));
        std::printf(" %10.0f\n", steps_per_run);
    }
    const double group_step = g.front()->res.seconds / static_cast<double>(std::max<std::int64_t>(g.front()->res.steps, 1));
    const double total = t_teacher + group_step * steps_per_run * cfg.seeds;
    std::printf("%-30s %8.3f   (every arm and grid point, one teacher forward and one set of targets a step)\n",
                "students together", group_step);
    std::printf("projected wall time of preset %s (without evaluations): teacher %s + %d seed(s) x %s = %s\n",
                cfg.preset.c_str(), format_duration(t_teacher).c_str(), cfg.seeds,
                format_duration(group_step * steps_per_run).c_str(), format_duration(total).c_str());
    return 0;
}

int run(const config& cfg) {
    const auto t_start = clock_type::now();
    torch::set_num_threads(cfg.threads);
    std::printf("bld-distill: preset %s, corpus %s, %d seed(s), %d thread(s)\n", cfg.preset.c_str(), cfg.corpus.c_str(),
                cfg.seeds, cfg.threads);

    // Data: chunks with both tokenizations (cached JS reference encodings), real vocabularies.
    const std::string corpus_dir = cfg.data + "/" + (cfg.corpus == "efficacy" ? "efficacy" : "distill");
    auto ex = load_records(corpus_dir + "/records.tsv");
    const auto teacher_full = bld::io::load_vocabulary(cfg.data + "/tokenizers/llama2/tokenizer.json");
    const auto student_full = bld::io::load_vocabulary(cfg.data + "/tokenizers/gpt2");
    const auto tv = compact(teacher_full, ex, true);
    const auto sv = compact(student_full, ex, false);
    // The distillers: the teacher's trie and row plan and the student's vocabulary, built once;
    // the run's K and threads (over the chunks of a batch; the result does not depend on them).
    // (c) reads the byte head's K slots; (d) a slot for every byte of the longest student token.
    const bld::distiller distiller(tv.vocab, sv.vocab,
                                   {.heads = static_cast<std::size_t>(cfg.heads),
                                    .parallel = {.threads = static_cast<std::size_t>(cfg.threads)}});
    const bld::distiller distiller_th(tv.vocab, sv.vocab,
                                      {.heads = std::min<std::size_t>(260, sv.vocab.max_token_bytes()),
                                       .parallel = {.threads = static_cast<std::size_t>(cfg.threads)}});

    // Student slots from the ids alone (bld::align_slots): which (token, head) pairs predict a
    // text byte, and which byte. The text is passed so both streams are checked against it.
    {
        progress bar("align slots", static_cast<std::int64_t>(ex.size()));
        for (std::size_t i = 0; i < ex.size(); ++i) {
            auto& e = ex[i];
            const auto a = bld::align_slots(sv.vocab, e.student_ids, tv.vocab, e.teacher_ids,
                                            static_cast<std::size_t>(cfg.heads), e.text);
            e.mask = a.mask;
            e.true_byte = a.true_byte;
            if (i % 256 == 0) bar.update(static_cast<std::int64_t>(i));
        }
        bar.finish();
    }
    std::vector<int> train_set, heldout_all;
    std::vector<int> valid_set;
    for (int i = 0; i < static_cast<int>(ex.size()); ++i)
        (ex[i].split == split_kind::train ? train_set : ex[i].split == split_kind::valid ? valid_set : heldout_all).push_back(i);
    const auto subset = [](std::vector<int> v, std::int64_t n, std::uint64_t seed) {
        if (n <= 0 || n >= static_cast<std::int64_t>(v.size())) return v;
        std::mt19937_64 rng(seed);
        std::shuffle(v.begin(), v.end(), rng);
        v.resize(static_cast<std::size_t>(n));
        std::sort(v.begin(), v.end());
        return v;
    };
    const auto teacher_pool = subset(train_set, cfg.teacher_pool, 11);
    // The students' limited data: a fixed share of the training chunks (by a hash of their text),
    // or a random subset of a given size.
    std::vector<int> student_pool;
    if (cfg.student_percent > 0) {
        for (int i : train_set)
            if (fnv1a64(ex[static_cast<std::size_t>(i)].text) % 100 < static_cast<std::uint64_t>(cfg.student_percent))
                student_pool.push_back(i);
    } else {
        student_pool = subset(train_set, cfg.student_pool, 12);
    }
    // Held-out subsets, evenly spread over the corpus (the files are in name order): one for
    // the curves, one for the table (by default all of it).
    const auto spread = [](const std::vector<int>& v, std::int64_t n) {
        if (n <= 0 || n >= static_cast<std::int64_t>(v.size())) return v;
        std::vector<int> r;
        for (std::int64_t k = 0; k < n; ++k) r.push_back(v[static_cast<std::size_t>(k * static_cast<std::int64_t>(v.size()) / n)]);
        return r;
    };
    const auto curve_set = spread(heldout_all, cfg.curve_heldout);
    const auto heldout = spread(heldout_all, cfg.final_heldout);
    std::int64_t n_t = 0, n_s = 0;
    for (int i : heldout) n_t += static_cast<std::int64_t>(ex[i].teacher_ids.size()), n_s += static_cast<std::int64_t>(ex[i].student_ids.size());
    std::printf("data: %zu training chunks (students: %zu, %.0f bytes), %zu validation, %zu held-out chunks, %zu of them "
                "scored (%.0f bytes; %lld llama2 / %lld gpt2 tokens)\n",
                train_set.size(), student_pool.size(), text_bytes(ex, student_pool), valid_set.size(), heldout_all.size(),
                heldout.size(), text_bytes(ex, heldout), static_cast<long long>(n_t), static_cast<long long>(n_s));
    std::printf("vocabularies (ids that occur in the corpus): teacher llama2 %lld of %zu, students gpt2 %lld of %zu\n",
                static_cast<long long>(tv.size()), teacher_full.size(), static_cast<long long>(sv.size()), student_full.size());
    std::printf("data ready in %.1f s\n", seconds_since(t_start));
    std::fflush(stdout);

    nlohmann::json out;
    out["preset"] = cfg.preset;
    out["corpus"] = cfg.corpus;
    out["config"] = {{"teacher", {{"embed", cfg.teacher.embed}, {"hidden", cfg.teacher.hidden}, {"layers", cfg.teacher.layers},
                                  {"epochs", cfg.teacher_epochs}, {"minutes", cfg.teacher_minutes},
                                  {"steps", cfg.teacher_steps},
                                  {"patience", cfg.teacher_patience}, {"pool", teacher_pool.size()}, {"seed", cfg.teacher_seed}}},
                     {"student", {{"embed", cfg.student.embed}, {"hidden", cfg.student.hidden}, {"layers", cfg.student.layers},
                                  {"epochs", cfg.student_epochs}, {"pool", student_pool.size()}}},
                     {"heads", cfg.heads}, {"heads_token_head", distiller_th.options().heads},
                     {"lambda_byte", cfg.lambda_byte}, {"lambda_kl", cfg.lambda_kl}, {"lambda_th", cfg.lambda_th},
                     {"lambda_kd", cfg.lambda_kd}, {"batch", cfg.batch}, {"lr", cfg.lr}, {"cutoffs", cfg.cutoffs},
                     {"threads", cfg.threads}, {"students", cfg.students}};
    if (cfg.c_targets != "canonical")  // (absent for the canonical path: the kept seeds' keys stay as they were)
        out["config"]["c_targets"] = {{"method", cfg.c_targets}, {"k", cfg.covering_k}, {"epsilon", cfg.covering_epsilon},
                                      {"threshold", cfg.c_targets == "repair" ? cfg.repair_threshold : 0.0}};
    out["data"] = {{"train_chunks", train_set.size()}, {"valid_chunks", valid_set.size()},
                   {"student_chunks", student_pool.size()}, {"student_bytes", text_bytes(ex, student_pool)},
                   {"heldout_chunks", heldout.size()}, {"heldout_bytes", text_bytes(ex, heldout)},
                   {"curve_chunks", curve_set.size()}, {"curve_bytes", text_bytes(ex, curve_set)},
                   {"teacher_vocab", tv.size()}, {"student_vocab", sv.size()}};

    // The teacher: Llama-2 tokenizer, larger, trained once (seed fixed) and then frozen; with
    // --preset full kept under the corpus folder, keyed by the data and its settings.
    torch::manual_seed(static_cast<std::uint64_t>(cfg.teacher_seed));
    lm teacher(tv.size(), cfg.teacher, cfg.cutoffs, 0);
    char key[17];
    {
        const std::string what = read_file(corpus_dir + "/MANIFEST.txt") + out["config"]["teacher"].dump() +
                                 std::to_string(cfg.batch) + std::to_string(cfg.lr) + std::to_string(tv.size());
        std::snprintf(key, sizeof key, "%016llx", static_cast<unsigned long long>(fnv1a64(what)));
    }
    const std::string teacher_file = corpus_dir + "/teacher-" + key + ".pt";
    if (cfg.sizing_steps > 0) return sizing(cfg, teacher, tv, sv, distiller, distiller_th, ex, teacher_pool, student_pool);
    run_result teacher_res;
    bool cached = false;
    if (cfg.cache_teacher && !read_file(teacher_file + ".json").empty()) {
        torch::load(teacher, teacher_file);
        teacher_res.heldout_bpb = total_nats(teacher, ex, heldout, true, 64) / (text_bytes(ex, heldout) * std::log(2.0));
        teacher_res.params = lm_params(teacher);
        const auto j = nlohmann::json::parse(read_file(teacher_file + ".json"));
        teacher_res.seconds = j.value("seconds", 0.0);
        teacher_res.steps = j.value("steps", std::int64_t{0});
        cached = true;
        std::printf("teacher: %s (cached; trained in %s, %lld steps)\n", teacher_file.c_str(),
                    format_duration(teacher_res.seconds).c_str(), static_cast<long long>(teacher_res.steps));
    } else {
        const auto tb = schedule(ex, teacher_pool, true, cfg.teacher_epochs, cfg.batch, static_cast<std::uint64_t>(cfg.teacher_seed));
        stopping st;
        if (cfg.teacher_patience > 0 && !valid_set.empty()) {
            st.valid = valid_set;
            const auto per_epoch = (static_cast<std::int64_t>(teacher_pool.size()) + cfg.batch - 1) / cfg.batch;
            st.every = std::max<std::int64_t>(1, static_cast<std::int64_t>(static_cast<double>(per_epoch) / cfg.teacher_evals_per_epoch));
            st.patience = cfg.teacher_patience;
        }
        st.minutes = cfg.teacher_minutes;
        st.max_steps = cfg.teacher_steps;
        group tg;
        tg.push_back(std::make_unique<trainee>(arm{role::teacher}, teacher, cfg.lr));
        train(tg, ex, tb, curve_set, heldout, cfg, nullptr, "teacher", st);
        teacher_res = tg.front()->res;
        if (cfg.cache_teacher) {
            torch::save(teacher, teacher_file);
            nlohmann::json j = to_json(teacher_res);
            j["command"] = "bld-distill --preset " + cfg.preset + " --corpus " + cfg.corpus;
            j["file"] = teacher_file;
            std::ofstream f(teacher_file + ".json");
            f << j.dump(1) << "\n";
            std::printf("teacher saved to %s (%s, stopped by %s)\n", teacher_file.c_str(),
                        format_duration(teacher_res.seconds).c_str(), teacher_res.stopped.c_str());
        }
    }
    for (auto& p : teacher->parameters()) p.requires_grad_(false);
    out["teacher"] = to_json(teacher_res);
    out["teacher"]["cached"] = cached;
    if (cfg.teacher_only) {
        std::printf("teacher: %s held-out bits per byte %.4f (%s params, %lld steps)\n", teacher_file.c_str(),
                    teacher_res.heldout_bpb, millions(teacher_res.params).c_str(), static_cast<long long>(teacher_res.steps));
        if (!cfg.out.empty()) {
            std::ofstream f(cfg.out);
            f << out.dump(1) << "\n";
        }
        return 0;
    }

    teacher->eval();
    teacher_targets cache{.teacher = teacher, .distiller = &distiller, .distiller_th = &distiller_th};

    // The arms, each at every λ of its grid, trained together seed by seed: the same
    // initialisation per tokenizer, the same batches of chunks and the same teacher targets.
    const auto arms = arms_of(cfg);
    // With --preset full a finished seed is kept (DIR/<corpus>/runs-<key>/seed-N.json, the key
    // covering the teacher and every setting) and read back by a later run, which trains only the
    // seeds still missing: the experiment resumes where an interruption left it.
    // The key includes a digest of the teacher's parameters, so that seeds trained behind a
    // teacher rebuilt elsewhere with other bits (another BLAS kernel, another thread count) are
    // never mixed with these.
    std::string runs_dir;
    if (cfg.cache_teacher) {
        char tdig[17];
        std::snprintf(tdig, sizeof tdig, "%016llx", static_cast<unsigned long long>(parameter_digest(*teacher)));
        out["teacher"]["digest"] = tdig;
        const std::string what = std::string(key) + tdig + out["config"].dump() + out["data"].dump() + "lockstep 1";
        char skey[17];
        std::snprintf(skey, sizeof skey, "%016llx", static_cast<unsigned long long>(fnv1a64(what)));
        runs_dir = (cfg.runs.empty() ? corpus_dir : cfg.runs) + "/runs-" + skey;
        std::filesystem::create_directories(runs_dir);
        std::printf("runs: %s (teacher parameters digest %s)\n", runs_dir.c_str(), tdig);
    } else if (cfg.only_seed >= 0 || !cfg.runs.empty())
        throw std::runtime_error("--only-seed and --runs need the kept runs of --cache (on in --preset full)");
    std::map<std::string, std::vector<run_result>> students;
    for (int seed = 0; seed < cfg.seeds; ++seed) {
        if (cfg.only_seed >= 0 && seed != cfg.only_seed) continue;
        const std::string seed_file = runs_dir.empty() ? "" : runs_dir + "/seed-" + std::to_string(seed) + ".json";
        if (const auto saved = seed_file.empty() ? std::string() : read_file(seed_file); !saved.empty()) {
            const auto j = nlohmann::json::parse(saved);
            for (const arm& a : arms) {
                auto r = from_json(j.at(a.key()));
                if (j.at(a.key()).contains("losses")) r.losses = j.at(a.key()).at("losses").get<std::vector<double>>();
                students[a.key()].push_back(std::move(r));
            }
            if (j.contains("covering_targets") && cache.covering_cost.is_null()) cache.covering_cost = j["covering_targets"];
            std::printf("seed %d: read from %s\n", seed, seed_file.c_str());
            continue;
        }
        const auto batches = schedule(ex, student_pool, false, cfg.student_epochs, cfg.batch, 1000 + static_cast<std::uint64_t>(seed));
        if (cfg.c_targets != "canonical" && cache.covering.empty() && cfg.students.find('c') != std::string::npos)
            covering_targets(cache, cfg, tv.vocab, ex, student_pool);
        auto g = make_students(cfg, arms, seed, tv.size(), sv.size());
        resume_point rp;
        const std::string ckpt = seed_file.empty() ? "" : runs_dir + "/seed-" + std::to_string(seed) + ".checkpoint";
        if (!ckpt.empty()) {
            if (const auto state = read_file(ckpt + "/state.json"); !state.empty()) {
                rp.start = load_group(g, ckpt, nlohmann::json::parse(state));
                std::printf("seed %d: resumed at step %lld of %zu from %s\n", seed, static_cast<long long>(rp.start),
                            batches.size(), ckpt.c_str());
            }
            rp.save = [&](std::int64_t step) { save_group(g, ckpt, step); };
        }
        train(g, ex, batches, curve_set, heldout, cfg, &cache, "seed " + std::to_string(seed), {}, rp);
        nlohmann::json j;
        for (const auto& t : g) {
            students[t->which.key()].push_back(t->res);
            j[t->which.key()] = to_json(t->res);
            j[t->which.key()]["losses"] = t->res.losses;  // every step's training loss (the smoke checks read them)
        }
        j["machine"] = machine_note(cfg);
        if (!cache.covering_cost.is_null()) j["covering_targets"] = cache.covering_cost;
        if (!seed_file.empty()) {
            {
                std::ofstream f(seed_file + ".part");
                f << j.dump(1) << "\n";
                if (!f) throw std::runtime_error("cannot write " + seed_file + ".part");
            }
            std::filesystem::rename(seed_file + ".part", seed_file);
            std::filesystem::remove_all(ckpt);
            std::printf("seed %d: saved to %s\n", seed, seed_file.c_str());
        }
        std::fflush(stdout);
    }
    if (cfg.only_seed >= 0) {
        std::printf("seed %d done; run again without --only-seed for the table\n", cfg.only_seed);
        return 0;
    }
    std::fprintf(stderr, "  teacher targets: %lld chunks, %s\n", static_cast<long long>(cache.chunks), cache.note().c_str());
    out["targets"] = {{"seconds", cache.seconds()}, {"chunks", cache.chunks}, {"slots", cache.slots},
                      {"teacher_rows_seconds", cache.t_rows}, {"bld_seconds", cache.t_bld},
                      {"teacher_bits_per_true_byte", cache.true_byte_bits / static_cast<double>(std::max<std::int64_t>(cache.slots, 1))},
                      {"teacher_token_bits_per_byte", cache.token_bits / std::max(cache.text_bytes, 1.0)}};

    // The table.
    std::printf("\nheld-out bits per byte (%zu chunks, %.0f bytes of %s text; lower is better)\n", heldout.size(),
                text_bytes(ex, heldout), cfg.corpus.c_str());
    std::printf("%-30s %-9s %-16s", "model", "tokenizer", "params");
    for (int s = 0; s < cfg.seeds; ++s) std::printf("  seed %-3d", s);
    std::printf("  mean +- sd\n");
    std::printf("%-30s %-9s %-16s  %8.4f\n", "teacher (GRU)", "llama2", millions(teacher_res.params).c_str(),
                teacher_res.heldout_bpb);
    nlohmann::json js = nlohmann::json::object();
    std::map<std::string, std::vector<double>> bpb;
    std::map<std::string, arm_cost> costs;
    for (const arm& a : arms) {
        const auto& runs = students[a.key()];
        std::string params = millions(runs[0].params);
        if (runs[0].byte_head_params) params += "+" + millions(runs[0].byte_head_params);
        std::printf("%-30s %-9s %-16s", a.name().c_str(), teacher_side_of(a.r) ? "llama2" : "gpt2", params.c_str());
        nlohmann::json arr = nlohmann::json::array();
        run_result cost;  // summed over the seeds
        for (int s = 0; s < cfg.seeds; ++s) {
            const auto& rr = runs[static_cast<std::size_t>(s)];
            bpb[a.key()].push_back(rr.heldout_bpb);
            std::printf("  %8.4f", rr.heldout_bpb);
            auto j = to_json(rr);
            j["seed"] = s;
            arr.push_back(j);
            cost.step_seconds += rr.step_seconds;
            cost.loss_seconds += rr.loss_seconds;
            cost.teacher_seconds += rr.teacher_seconds;
            cost.targets_seconds += rr.targets_seconds;
            cost.steps += rr.steps;
        }
        const auto [m, sd] = mean_sd(bpb[a.key()]);
        std::printf("  %.4f +- %.4f\n", m, sd);
        js[a.key()] = arr;
        const auto c = cost_of(cost);
        costs[a.key()] = c;
        out["summary"][a.key()] = {{"mean", m}, {"sd", sd}, {"name", a.name()},
                                   {"step_seconds", c.step},
                                   {"teacher_seconds_per_step", c.teacher},
                                   {"targets_seconds_per_step", c.targets},
                                   {"loss_seconds_per_step", c.loss},
                                   {"bld_share", c.bld_share}};
    }
    // Paired differences (same seed = same initialisation and batches): every GPT-2 arm against
    // (a), (c) against (b), (e) against (a′).
    std::string verdict;
    const auto pair_diff = [&](const std::string& x, const std::string& y) {
        if (!bpb.count(x) || !bpb.count(y)) return;
        std::vector<double> diff;
        int wins = 0;
        for (int s = 0; s < cfg.seeds; ++s) {
            diff.push_back(bpb[x][static_cast<std::size_t>(s)] - bpb[y][static_cast<std::size_t>(s)]);
            wins += diff.back() < 0 ? 1 : 0;
        }
        const std::string name = "(" + x + ") - (" + y + ")";
        std::printf("%-30s %-9s %-16s", name.c_str(), "", "");
        for (double d : diff) std::printf("  %+8.4f", d);
        const auto [dm, dsd] = mean_sd(diff);
        std::printf("  %+.4f +- %.4f\n", dm, dsd);
        out["summary"][x + " - " + y] = {{"per_seed", diff}, {"mean", dm}, {"sd", dsd}, {"wins", wins}};
    };
    for (const arm& a : arms) {
        if (a.r == role::b || a.r == role::c || a.r == role::d) pair_diff(a.key(), "a");
        if (a.r == role::c) pair_diff(a.key(), "b");
        if (a.r == role::e) pair_diff(a.key(), "p");
    }
    // The decision rule (docs/efficacy_design.md): (c) or (d), at some grid point, below (a) on
    // every seed, with the mean paired difference larger in magnitude than twice the spread, the
    // sample standard deviation of (a) over the seeds; every grid point tried is counted.
    if (bpb.count("a")) {
        const double spread = mean_sd(bpb["a"]).second;
        int tried = 0;
        std::vector<std::string> met;
        for (const arm& a : arms) {
            if (a.r != role::c && a.r != role::d) continue;
            ++tried;
            const auto& d = out["summary"][a.key() + " - a"];
            const int wins = d["wins"].get<int>();
            const double dm = d["mean"].get<double>();
            const bool ok = cfg.seeds >= 2 && wins == cfg.seeds && -dm > 2 * spread;
            if (ok) met.push_back(a.key());
            verdict += "(" + a.key() + ") beats (a) on " + std::to_string(wins) + " of " + std::to_string(cfg.seeds) +
                       " seed(s)" + (ok ? ", by more than twice (a)'s spread" : "") + ". ";
        }
        char rule[256];
        if (cfg.seeds < 2)
            std::snprintf(rule, sizeof rule, "Decision rule: needs several seeds (this run has one). ");
        else if (met.empty())
            std::snprintf(rule, sizeof rule, "Decision rule: goal NOT reached at any of the %d grid point(s) of (c) and (d) "
                          "(twice (a)'s spread: %.4f). ", tried, 2 * spread);
        else
            std::snprintf(rule, sizeof rule, "Decision rule: goal reached at %zu of the %d grid point(s) of (c) and (d) "
                          "(twice (a)'s spread: %.4f). ", met.size(), tried, 2 * spread);
        verdict += rule;
        out["summary"]["decision"] = {{"spread_a", spread}, {"grid_points_tried", tried}, {"met_at", met},
                                      {"goal_reached", cfg.seeds >= 2 && !met.empty()}};
    }
    // The share of the shared-tokenizer ceiling that (c) and (d) recover, ((a) − x) / ((a′) − (e)),
    // per seed, for every grid point of x against every grid point of (e) (undefined: nan).
    if (bpb.count("a") && bpb.count("p")) {
        bool header = false;
        for (const arm& x : arms) {
            if (x.r != role::c && x.r != role::d) continue;
            for (const arm& y : arms) {
                if (y.r != role::e) continue;
                if (!header) {
                    std::printf("\nshare of the ceiling recovered, ((a) - x) / ((p) - (e)), per seed\n");
                    header = true;
                }
                std::vector<double> share;
                for (std::size_t s = 0; s < static_cast<std::size_t>(cfg.seeds); ++s) {
                    const double ceiling = bpb["p"][s] - bpb[y.key()][s];
                    share.push_back(ceiling != 0 ? (bpb["a"][s] - bpb[x.key()][s]) / ceiling
                                                 : std::numeric_limits<double>::quiet_NaN());
                }
                const std::string name = x.key() + " of (p) - (" + y.key() + ")";
                std::printf("%-30s %-9s %-16s", name.c_str(), "", "");
                for (double v : share) std::printf("  %+8.3f", v);
                const auto [sm, ssd] = mean_sd(share);
                std::printf("  %+.3f +- %.3f\n", sm, ssd);
                nlohmann::json per_seed = nlohmann::json::array();
                for (double v : share) per_seed.push_back(std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr));
                out["summary"]["share " + name] = {{"per_seed", per_seed},
                                                   {"mean", std::isfinite(sm) ? nlohmann::json(sm) : nlohmann::json(nullptr)},
                                                   {"sd", std::isfinite(ssd) ? nlohmann::json(ssd) : nlohmann::json(nullptr)}};
            }
        }
    }
    std::printf("\ntraining cost, seconds per step as if the arm were trained alone (mean over seeds)\n");
    print_cost_header();
    for (const arm& a : arms) {
        print_cost_row(a.name(), costs[a.key()]);
        std::printf("\n");
    }
    std::printf("%sTeacher targets: %.0f s for %lld chunks. Total %s.\n", verdict.c_str(), cache.seconds(),
                static_cast<long long>(cache.chunks), format_duration(seconds_since(t_start)).c_str());
    if (!cache.covering_cost.is_null()) {
        const auto& c = cache.covering_cost;
        std::printf("(c)'s %s targets, computed once for the %lld student chunks (%.0f bytes): %.0f s on %d thread(s), "
                    "%lld teacher rows (%.3f a byte; the canonical path reads %.0f), mean dropped mass %.4f a byte\n",
                    c["method"].get<std::string>().c_str(), c["chunks"].get<long long>(), c["bytes"].get<double>(),
                    c["seconds"].get<double>(), c["threads"].get<int>(), c["teacher_rows"].get<long long>(),
                    c["rows_per_byte"].get<double>(), c["canonical_rows"].get<double>(), c["mean_dropped"].get<double>());
        out["covering_targets"] = c;
    }
    out["students"] = js;
    out["summary"]["seeds"] = cfg.seeds;
    out["summary"]["seconds"] = seconds_since(t_start);
    int status = 0;
    if (cfg.checks) {
        const auto failures = smoke_checks(students, cache, ex, student_pool, cfg.batch);
        for (const auto& f : failures) std::fprintf(stderr, "check failed: %s\n", f.c_str());
        out["checks"] = {{"failures", failures}};
        status = failures.empty() ? 0 : 1;
    }
    if (!cfg.expect.empty()) {
        // The resumption test: a run interrupted and resumed gives every number of the uninterrupted
        // one, bit for bit (held-out and curve bits per byte, train curve).
        const auto text = read_file(cfg.expect);
        if (text.empty()) throw std::runtime_error("--expect: cannot read " + cfg.expect);
        const auto want = nlohmann::json::parse(text).at("students");
        int differ = 0, compared = 0;
        for (const auto& [k, runs] : js.items())
            for (std::size_t i = 0; i < runs.size(); ++i) {
                const auto& w = want.at(k).at(i);
                const auto& h = runs[i];
                // (compared as written: NaN, the first train point, is saved as null)
                bool same = w.at("heldout_bpb") == h.at("heldout_bpb") && w.at("curve").size() == h.at("curve").size();
                for (std::size_t c = 0; same && c < h.at("curve").size(); ++c)
                    same = w["curve"][c]["bpb"].dump() == h["curve"][c]["bpb"].dump() &&
                           w["curve"][c]["train_bpb"].dump() == h["curve"][c]["train_bpb"].dump();
                ++compared;
                if (!same) {
                    ++differ;
                    std::fprintf(stderr, "check failed: %s seed %zu differs from %s (held-out %.17g vs %.17g)\n", k.c_str(), i,
                                 cfg.expect.c_str(), h.at("heldout_bpb").get<double>(), w.at("heldout_bpb").get<double>());
                }
            }
        std::printf("check: %d of %d runs equal those of %s\n", compared - differ, compared, cfg.expect.c_str());
        if (differ > 0) status = 1;
    }
    if (!cfg.out.empty()) {
        std::ofstream f(cfg.out);
        f << out.dump(1) << "\n";
        if (!f) throw std::runtime_error("cannot write " + cfg.out);
        std::printf("results written to %s\n", cfg.out.c_str());
    }
    return status;
}

}  // namespace

int main(int argc, char** argv) {
#if defined(__GLIBC__)
    // Keep freed tensor memory in the heap: by default glibc maps every large block afresh and
    // the page faults of zeroing it cost a fifth of the run on this CPU-only trainer (a third of
    // (d)'s, whose [B, T, V] log-probabilities and gradient are hundreds of MB a step). glibc
    // caps M_MMAP_THRESHOLD at 32 MiB, so blocks above it are kept off mmap with M_MMAP_MAX = 0,
    // and the heap's top is never given back (−1 disables trimming: a finite threshold, at most
    // INT_MAX through mallopt, is crossed by the full preset's 4–5 GB heap, which then shrank and
    // refaulted every step, half of a seed's time in the kernel).
    mallopt(M_MMAP_MAX, 0);
    mallopt(M_TRIM_THRESHOLD, -1);
#endif
    try {
        return run(parse_args(argc, argv));
    } catch (const interrupted& i) {
        std::fprintf(stderr, "\nbld-distill: interrupted before step %lld (--interrupt-at), checkpoint saved\n",
                     static_cast<long long>(i.step));
        return 75;
    } catch (const missing_data& e) {
        std::fprintf(stderr, "bld-distill: %s\n", e.what());
        return 77;
    } catch (const bld::error& e) {
        std::fprintf(stderr, "\nbld-distill: bld error: %s\n", e.what());
    } catch (const std::exception& e) {
        std::fprintf(stderr, "\nbld-distill: %s\n", e.what());
    }
    return 1;
}
