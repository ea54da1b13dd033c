// bld_cuda_tests: the CUDA kernels against the CPU reference, on random vocabularies and on a
// real one (Llama-3's 128,256 ids), and the row-pass benchmark (`bld_cuda_tests --bench FILE`).
//
// Without a GPU it prints why and exits 77, which ctest reports as SKIPPED (SKIP_RETURN_CODE).
//
// Tolerances (the kernels' headers state them too):
//   row pass      max_logit exact; root masses 2e-6 relative (fp32 exp, compensated, fp64 sums);
//                 log-normaliser 1e-6 absolute
//   node sums     shift exact; E and child sums 1e-12 relative (fp64 exp)
//   canonical     probabilities 5e-6 relative + 1e-12 (they mix in row-pass roots at token
//                 boundaries); dropped mass 5e-6 absolute
//   losses        fp64 logits: values 1e-12 relative, gradients 1e-11 relative + 1e-15;
//                 fp32 logits: 1e-6 relative + 1e-12 (one rounding of the fp64 result); the same
//                 through the host entries (bld::bld_loss on device memory) and for compact
//                 targets (float32 / bf16 rows, compared with the CPU on the same rows)
//   projector     as the canonical path, per sequence of a batch, id- and trie-ordered rows
// Errors: the GPU paths throw the CPU's exception (same class, location and reason).
#define DOCTEST_CONFIG_IMPLEMENT
#include "gpu_calls.hpp"

#include "../real_data.hpp"

#include <bld/io/json.hpp>
#include <bld/loss/byte_loss.hpp>
#include <bld/projection/canonical_path.hpp>
#include <bld/projection/covering.hpp>
#include <bld/backends/reference/row_pass.hpp>
#include <bld/projection/device_projection.hpp>
#include <bld/targets/slot_targets.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

namespace {

constexpr double inf = std::numeric_limits<double>::infinity();
constexpr auto A = static_cast<std::int64_t>(bld::alphabet_size);

std::string data_path() {
    const char* env = std::getenv("BLD_DATA_DIR");
    return env && *env ? env : BLD_DATA_DIR;
}

/// The Llama-3 trie, loaded once.
const bld::byte_trie& llama3() {
    static const std::unique_ptr<bld::byte_trie> trie = [] {
        const std::string path = data_path() + "/tokenizers/llama3/tokenizer.json";
        if (!std::filesystem::exists(path))
            throw std::runtime_error("real vocabulary missing: " + path +
                                     " (run `bash scripts/fetch-data.sh`, or bring .cache/data along)");
        return std::make_unique<bld::byte_trie>(bld::io::load_vocabulary(path));
    }();
    return *trie;
}

bld::vocabulary random_vocab(std::mt19937& rng, int n_tokens, int letters) {
    std::string alphabet;
    for (int i = 0; i < letters; ++i) alphabet += static_cast<char>((i * 37 + 11) & 0xFF);
    std::vector<bld::token_entry> e;
    std::int64_t id = 0;
    for (char c : alphabet) e.push_back({id++, std::string(1, c), bld::token_kind::text, ""});
    std::uniform_int_distribution<int> len(1, 6), ch(0, letters - 1), coin(0, 19);
    std::vector<std::string> made;
    for (int i = 0; i < n_tokens; ++i) {
        std::string s;
        if (coin(rng) == 0 && !made.empty()) s = made[rng() % made.size()];
        else
            for (int k = len(rng); k > 0; --k) s += alphabet[static_cast<std::size_t>(ch(rng) * ch(rng) / letters)];
        made.push_back(s);
        if (coin(rng) == 1) ++id;
        e.push_back({id++, s, bld::token_kind::text, ""});
        if (coin(rng) == 2) e.push_back({id++, {}, bld::token_kind::special, "<s" + std::to_string(id) + ">"});
    }
    e.push_back({id++, {}, bld::token_kind::special, "<eos>"});
    return bld::vocabulary::from_entries(std::move(e), "random");
}

std::vector<float> random_rows(std::mt19937& rng, std::size_t rows, std::size_t n, double spread) {
    std::normal_distribution<double> g(0.0, spread);
    std::uniform_int_distribution<int> coin(0, 199);
    std::vector<float> z(rows * n);
    for (auto& v : z) {
        const int c = coin(rng);
        v = c == 0 ? -std::numeric_limits<float>::infinity() : static_cast<float>(g(rng) + (c == 1 ? 20.0 : 0.0));
    }
    return z;
}

std::vector<bld::bf16> to_bf16(const std::vector<float>& v) {
    std::vector<bld::bf16> h(v.size());
    for (std::size_t i = 0; i < v.size(); ++i) h[i] = bld::bf16(v[i]);
    return h;
}

template <class T>
void check_rows(const bld::byte_trie& trie, const std::vector<T>& rows, std::size_t R, std::size_t N,
                const bld_gpu::row_results& got, const std::vector<std::size_t>& which, const std::string& what) {
    const auto bins = bld::root_bins(trie);
    for (std::size_t r : which) {
        const auto want = bld::reference::summarize_row(trie, bins, std::span<const T>(rows.data() + r * N, N), r);
        INFO(what << ", row " << r << " of " << R);
        CHECK(got.status[r] == -1);
        CHECK(got.max[r] == want.max_logit);
        CHECK(std::abs(got.log_normalizer[r] - want.log_normalizer) <= 1e-6);
        double worst = 0;
        for (std::size_t a = 0; a < 257; ++a)
            if (want.root[a] > 1e-30) worst = std::max(worst, std::abs(got.root[r * 257 + a] - want.root[a]) / want.root[a]);
            else CHECK(got.root[r * 257 + a] <= 1e-30);
        CHECK(worst <= 2e-6);
    }
}

/// The CPU's exception for a function, as (class, location, reason); "none" if it does not throw.
template <class F>
std::string caught(F&& f) {
    try {
        f();
    } catch (const bld::value_error& e) {
        return "value_error|" + e.location() + "|" + e.reason();
    } catch (const bld::shape_error& e) {
        return "shape_error|" + e.location() + "|" + e.reason();
    } catch (const bld::error& e) {
        return "error|" + e.location() + "|" + e.reason();
    }
    return "none";
}

void check_distributions(const bld::byte_distributions& got, const bld::byte_distributions& want, const std::string& what) {
    INFO(what);
    REQUIRE(got.positions == want.positions);
    double worst = 0, worst_dropped = 0;
    for (std::size_t k = 0; k < want.probs.size(); ++k) {
        const double err = std::abs(got.probs[k] - want.probs[k]) - 5e-6 * want.probs[k];
        worst = std::max(worst, err);
    }
    for (std::size_t i = 0; i < want.positions; ++i)
        worst_dropped = std::max(worst_dropped, std::abs(got.dropped[i] - want.dropped[i]));
    CHECK(worst <= 1e-12);
    CHECK(worst_dropped <= 5e-6);
}

}  // namespace

TEST_CASE("cuda row pass equals summarize_row: random vocabularies, float and bf16, every batch split") {
    std::mt19937 rng(1);
    const bld::byte_trie trie(random_vocab(rng, 6000, 64));
    const std::size_t V = trie.vocab().size(), N = V + 7;
    for (std::size_t R : {1u, 5u, 300u, 1100u}) {
        const auto rows = random_rows(rng, R, N, 4.0);
        const auto got = bld_gpu::row_pass(trie, rows, R, N);
        std::vector<std::size_t> which{0, R / 2, R - 1};
        check_rows(trie, rows, R, N, got, which, "float R=" + std::to_string(R));
        const auto h = to_bf16(rows);
        check_rows(trie, h, R, N, bld_gpu::row_pass(trie, h, R, N), which, "bf16 R=" + std::to_string(R));
        // Deterministic: same inputs, same bits.
        const auto again = bld_gpu::row_pass(trie, rows, R, N);
        CHECK(again.root == got.root);
        CHECK(again.log_normalizer == got.log_normalizer);
    }
}

TEST_CASE("cuda row pass equals summarize_row on the Llama-3 vocabulary (128,256 ids, padded rows)") {
    const auto& trie = llama3();
    std::mt19937 rng(2);
    const std::size_t V = trie.vocab().size(), N = V + 256;
    for (std::size_t R : {8u, 1030u}) {
        const auto rows = random_rows(rng, R, N, 3.0);
        check_rows(trie, rows, R, N, bld_gpu::row_pass(trie, rows, R, N), {0, 3, R - 1}, "llama3 float R=" + std::to_string(R));
        const auto h = to_bf16(rows);
        check_rows(trie, h, R, N, bld_gpu::row_pass(trie, h, R, N), {0, R - 1}, "llama3 bf16 R=" + std::to_string(R));
    }
}

TEST_CASE("cuda row pass errors are the CPU's") {
    std::mt19937 rng(3);
    const bld::byte_trie trie(random_vocab(rng, 500, 8));
    const std::size_t V = trie.vocab().size(), N = V;
    const auto bins = bld::root_bins(trie);
    const auto cpu = [&](const std::vector<float>& rows, std::size_t R) {
        return caught([&] {
            for (std::size_t r = 0; r < R; ++r)
                (void)bld::reference::summarize_row(trie, bins, std::span<const float>(rows.data() + r * N, N), r);
        });
    };
    const std::size_t R = 6;
    auto rows = random_rows(rng, R, N, 1.0);
    rows[2 * N + 77] = std::numeric_limits<float>::quiet_NaN();
    rows[2 * N + 30] = std::numeric_limits<float>::infinity();
    rows[4 * N + 5] = std::numeric_limits<float>::quiet_NaN();
    CHECK(cpu(rows, R) != "none");
    CHECK(caught([&] { bld_gpu::row_pass_checked(trie, rows, R, N); }) == cpu(rows, R));
    auto dead = random_rows(rng, R, N, 1.0);
    std::fill(dead.begin() + 3 * static_cast<std::ptrdiff_t>(N), dead.begin() + 4 * static_cast<std::ptrdiff_t>(N),
              -std::numeric_limits<float>::infinity());
    CHECK(caught([&] { bld_gpu::row_pass_checked(trie, dead, R, N); }) == cpu(dead, R));
    // A short row, and host memory passed as a cuda view: shape errors.
    const auto shortr = random_rows(rng, 1, V - 1, 1.0);
    CHECK(caught([&] { (void)bld_gpu::row_pass(trie, shortr, 1, V - 1); }).rfind("shape_error|row 0|", 0) == 0);
    CHECK(caught([&] { bld_gpu::row_pass_host_pointer(trie, rows, R, N); }).rfind("shape_error|argument `rows`", 0) == 0);
}

TEST_CASE("cuda node sums equal node_max_logit + sum_node (every node of a random trie; Llama-3 nodes)") {
    std::mt19937 rng(4);
    const auto run = [&](const bld::byte_trie& trie, std::size_t R, std::size_t max_requests, const std::string& what) {
        const std::size_t N = trie.vocab().size();
        const auto rows = random_rows(rng, R, N, 3.0);
        std::vector<bld::node_request> req;
        for (std::uint32_t n = 0; n < trie.node_count(); ++n) req.push_back({static_cast<std::uint32_t>(rng() % R), n});
        std::shuffle(req.begin(), req.end(), rng);
        if (req.size() > max_requests) req.resize(max_requests);
        req.push_back({0, bld::byte_trie::root});
        for (int bf = 0; bf < 2; ++bf) {
            const auto h = to_bf16(rows);
            const auto got = bf ? bld_gpu::node_sums(trie, h, R, N, req) : bld_gpu::node_sums(trie, rows, R, N, req);
            double worst = 0;
            for (std::size_t q = 0; q < req.size(); ++q) {
                bld::node_sums ns;
                double shift = 0;
                if (bf) {
                    const std::span<const bld::bf16> row(h.data() + req[q].row * N, N);
                    shift = bld::reference::node_max_logit(trie, row, req[q].node);
                    if (shift > -inf) bld::reference::sum_node(trie, row, req[q].node, shift, ns);
                } else {
                    const std::span<const float> row(rows.data() + req[q].row * N, N);
                    shift = bld::reference::node_max_logit(trie, row, req[q].node);
                    if (shift > -inf) bld::reference::sum_node(trie, row, req[q].node, shift, ns);
                }
                INFO(what << " request " << q << " node " << req[q].node);
                REQUIRE(got.shift[q] == shift);
                worst = std::max(worst, std::abs(got.end[q] - ns.end) / std::max(ns.end, 1e-300));
                for (std::size_t a = 0; a < 256; ++a)
                    worst = std::max(worst, std::abs(got.child[q * 256 + a] - ns.child[a]) / std::max(ns.child[a], 1e-300));
            }
            INFO(what << (bf ? " bf16" : " float"));
            CHECK(worst <= 1e-12);
        }
    };
    const bld::byte_trie small(random_vocab(rng, 3000, 16));
    run(small, 7, 1u << 30, "random trie");
    run(llama3(), 5, 3000, "llama3");
}

TEST_CASE("cuda canonical path equals canonical_path (random vocabulary; Llama-3 on real texts)") {
    std::mt19937 rng(5);
    const auto compare = [&](const bld::byte_trie& trie, const std::vector<std::int64_t>& ids, const std::string& what) {
        const std::size_t N = trie.vocab().size() + 3, m = ids.size();
        const auto rows = random_rows(rng, m + 2, N, 3.0);
        const bld::tensor_view<const float, 2> view(rows.data(), {static_cast<std::int64_t>(m + 2), static_cast<std::int64_t>(N)});
        const auto want = bld::reference::canonical_path(trie, view, ids);
        check_distributions(bld_gpu::canonical_path(trie, rows, m + 2, N, ids), want, what + " float");
        const auto h = to_bf16(rows);
        const bld::tensor_view<const bld::bf16, 2> hv(h.data(), {static_cast<std::int64_t>(m + 2), static_cast<std::int64_t>(N)});
        check_distributions(bld_gpu::canonical_path(trie, h, m + 2, N, ids), bld::reference::canonical_path(trie, hv, ids), what + " bf16");
    };
    const bld::byte_trie small(random_vocab(rng, 400, 6));
    std::vector<std::int64_t> text_ids;
    for (std::size_t id = 0; id < small.vocab().size(); ++id)
        if (small.vocab().kinds()[id] == bld::token_kind::text) text_ids.push_back(static_cast<std::int64_t>(id));
    for (int trial = 0; trial < 5; ++trial) {
        std::vector<std::int64_t> ids;
        for (int k = 0; k < 40; ++k) ids.push_back(text_ids[rng() % text_ids.size()]);
        compare(small, ids, "random vocabulary, trial " + std::to_string(trial));
    }
    const auto texts = bld_test::read_encodings(data_path(), "llama3");
    int done_en = 0, done_de = 0, done_zh = 0;
    for (const auto& t : texts) {
        int& done = t.corpus == "en" ? done_en : t.corpus == "de" ? done_de : done_zh;
        if (done >= 2 || t.ids.size() > 300) continue;
        ++done;
        compare(llama3(), t.ids, "llama3 " + t.corpus);
    }
    CHECK(done_en + done_de + done_zh == 6);

    // Errors: bad ids (planned on the host), a NaN in a boundary row, too few rows.
    const auto& trie = llama3();
    const std::size_t N = trie.vocab().size();
    const std::vector<std::int64_t> ids = texts.front().ids;
    auto rows = random_rows(rng, ids.size(), N, 2.0);
    rows[3 * N + 1000] = std::numeric_limits<float>::quiet_NaN();
    const bld::tensor_view<const float, 2> view(rows.data(), {static_cast<std::int64_t>(ids.size()), static_cast<std::int64_t>(N)});
    const auto cpu_nan = caught([&] { (void)bld::reference::canonical_path(trie, view, ids); });
    CHECK(cpu_nan.rfind("value_error|row 3, column 1000|", 0) == 0);
    CHECK(caught([&] { (void)bld_gpu::canonical_path(trie, rows, ids.size(), N, ids); }) == cpu_nan);
    std::vector<std::int64_t> bad = ids;
    bad[2] = static_cast<std::int64_t>(N) + 5;
    CHECK(caught([&] { (void)bld_gpu::canonical_path(trie, rows, ids.size(), N, bad); }) ==
          caught([&] { (void)bld::reference::canonical_path(trie, view, bad); }));
    CHECK(caught([&] { (void)bld_gpu::canonical_path(trie, rows, 2, N, ids); }) ==
          caught([&] {
              (void)bld::reference::canonical_path(trie, bld::tensor_view<const float, 2>(rows.data(), {2, static_cast<std::int64_t>(N)}), ids);
          }));
}

namespace {

struct loss_batch {
    std::int64_t T = 0, K = 0;
    std::vector<double> logits, targets;
    std::vector<std::int64_t> bytes;
    std::vector<std::uint8_t> mask;
};

loss_batch make_loss_batch(std::int64_t T, std::int64_t K, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> g(0.0, 2.0);
    std::uniform_real_distribution<double> u(0.0, 1.0);
    loss_batch b{T, K, {}, {}, {}, {}};
    b.logits.resize(static_cast<std::size_t>(T * K * A));
    b.targets.resize(b.logits.size());
    b.bytes.resize(static_cast<std::size_t>(T * K));
    b.mask.resize(b.bytes.size());
    for (auto& v : b.logits) v = g(rng);
    for (std::int64_t s = 0; s < T * K; ++s) {
        double* p = &b.targets[static_cast<std::size_t>(s * A)];
        double sum = 0;
        for (std::int64_t a = 0; a < A; ++a) sum += (p[a] = u(rng) < 0.6 ? 0.0 : std::exp(g(rng)));
        if (s % 7 == 1 || sum == 0) {
            std::fill(p, p + A, 0.0);
            p[s % A] = 1.0;
            sum = 1;
        }
        for (std::int64_t a = 0; a < A; ++a) p[a] /= sum;
        b.mask[static_cast<std::size_t>(s)] = u(rng) < 0.8 ? 1 : 0;
        b.bytes[static_cast<std::size_t>(s)] = b.mask[static_cast<std::size_t>(s)] ? static_cast<std::int64_t>(rng() % 257) : -100;
    }
    for (std::int64_t k = 0; k < K; ++k) {  // token 2 takes no part
        b.mask[static_cast<std::size_t>(2 * K + k)] = 0;
        b.bytes[static_cast<std::size_t>(2 * K + k)] = -100;
    }
    return b;
}

void check_close(const std::vector<double>& got, const std::vector<double>& want, double rel, double abs_floor,
                 const std::string& what) {
    INFO(what);
    REQUIRE(got.size() == want.size());
    double worst = 0;
    for (std::size_t i = 0; i < want.size(); ++i) worst = std::max(worst, std::abs(got[i] - want[i]) - rel * std::abs(want[i]));
    CHECK(worst <= abs_floor);
}

}  // namespace

TEST_CASE("cuda byte losses equal the CPU's: every divergence, temperature and reduction, fp64 and fp32") {
    const auto b = make_loss_batch(37, 10, 9);
    const auto T = b.T, K = b.K;
    const std::array<std::int64_t, 3> tka{T, K, A};
    const std::array<std::int64_t, 2> tk{T, K};
    for (auto kind : {bld::divergence::forward_kl, bld::divergence::reverse_kl, bld::divergence::jsd, bld::divergence::tvd}) {
        for (double tau : {1.0, 2.0}) {
            for (auto red : {bld::loss_reduction::eq5, bld::loss_reduction::slot_mean, bld::loss_reduction::none}) {
                bld::bld_loss_options o;
                o.kind = kind;
                o.temperature = tau;
                o.reduction = red;
                const std::string what = std::string(bld::to_string(kind)) + " tau " + std::to_string(tau) + " " +
                                         std::string(bld::to_string(red));
                std::vector<double> grad(b.logits.size()), per(b.bytes.size());
                const auto want = bld::bld_loss(bld::shaped(b.logits, tka), bld::shaped(b.targets, tka), bld::shaped(b.bytes, tk),
                                                bld::shaped(b.mask, tk), o, bld::shaped(grad, tka), bld::shaped(per, tk));
                const auto got = bld_gpu::bld_loss<double>(b.logits, b.targets, b.bytes, b.mask, T, K, o);
                INFO(what);
                CHECK(got.result.active_slots == want.active_slots);
                CHECK(got.result.active_tokens == want.active_tokens);
                CHECK(std::abs(got.result.value - want.value) <= 1e-12 * std::abs(want.value));
                check_close(got.grad, grad, 1e-11, 1e-15, what + " grad");
                check_close(got.per_slot, per, 1e-12, 1e-15, what + " per_slot");
            }
        }
    }
    // fp32 logits and targets.
    std::vector<float> zf(b.logits.begin(), b.logits.end()), pf(b.targets.begin(), b.targets.end());
    std::vector<float> gf(zf.size()), pers(b.bytes.size());
    const bld::bld_loss_options o;
    const auto want = bld::bld_loss(bld::shaped(zf, tka), bld::shaped(pf, tka), bld::shaped(b.bytes, tk), bld::shaped(b.mask, tk),
                                    o, bld::shaped(gf, tka), bld::shaped(pers, tk));
    const auto got = bld_gpu::bld_loss<float>(zf, pf, b.bytes, b.mask, T, K, o);
    CHECK(std::abs(got.result.value - want.value) <= 1e-12 * std::abs(want.value));
    check_close(got.grad, std::vector<double>(gf.begin(), gf.end()), 1e-6, 1e-12, "fp32 grad");
    // No mask; byte_loss; byte_cross_entropy with int32 bytes.
    {
        std::vector<double> grad(b.logits.size());
        bld::byte_loss_options bo;
        bo.kind = bld::divergence::jsd;
        const auto w = bld::byte_loss(bld::shaped(b.logits, tka), bld::shaped(b.targets, tka), bld::no_tensor, bo, bld::shaped(grad, tka));
        const auto g = bld_gpu::byte_loss(b.logits, b.targets, {}, T, K, bo);
        CHECK(g.result.active_slots == T * K);
        CHECK(std::abs(g.result.value - w.value) <= 1e-12 * std::abs(w.value));
        check_close(g.grad, grad, 1e-11, 1e-15, "byte_loss grad");
        std::vector<std::int32_t> y32(b.bytes.begin(), b.bytes.end());
        std::vector<double> per(b.bytes.size());
        bld::byte_cross_entropy_options co;
        co.reduction = bld::loss_reduction::none;
        const auto wc = bld::byte_cross_entropy(bld::shaped(b.logits, tka), bld::shaped(y32, tk), bld::shaped(b.mask, tk), co,
                                                bld::no_tensor, bld::shaped(per, tk));
        const auto gc = bld_gpu::byte_cross_entropy(b.logits, y32, b.mask, T, K, co);
        CHECK(std::abs(gc.result.value - wc.value) <= 1e-12 * std::abs(wc.value));
        check_close(gc.per_slot, per, 1e-12, 1e-15, "cross-entropy per slot");
    }
}

TEST_CASE("cuda byte loss errors are the CPU's (same location and reason)") {
    const auto b0 = make_loss_batch(6, 3, 10);
    const std::array<std::int64_t, 3> tka{b0.T, b0.K, A};
    const std::array<std::int64_t, 2> tk{b0.T, b0.K};
    const auto both = [&](const loss_batch& b) {
        const bld::bld_loss_options o;
        const auto cpu = caught([&] {
            (void)bld::bld_loss(bld::shaped(b.logits, tka), bld::shaped(b.targets, tka), bld::shaped(b.bytes, tk),
                                bld::shaped(b.mask, tk), o);
        });
        const auto gpu = caught([&] { (void)bld_gpu::bld_loss<double>(b.logits, b.targets, b.bytes, b.mask, b.T, b.K, o); });
        CHECK(cpu != "none");
        CHECK(gpu == cpu);
    };
    auto b = b0;
    b.mask[3 * 3 + 1] = 1;
    b.bytes[3 * 3 + 1] = 5;
    b.logits[static_cast<std::size_t>((3 * 3 + 1) * A + 7)] = std::numeric_limits<double>::quiet_NaN();
    b.logits[static_cast<std::size_t>((4 * 3 + 0) * A + 2)] = inf;  // later slot: not reported
    b.mask[4 * 3 + 0] = 1;
    b.bytes[4 * 3] = 1;
    both(b);
    b = b0;
    b.mask[1 * 3 + 2] = 1;
    b.bytes[1 * 3 + 2] = 300;
    both(b);
    b = b0;
    b.mask[5 * 3 + 0] = 1;
    b.bytes[5 * 3] = 0;
    b.targets[static_cast<std::size_t>((5 * 3 + 0) * A + 9)] = -0.25;
    both(b);
}

// ---- the host entries on CUDA memory (one entry point), compact targets, the device projector ----

namespace {

template <class T>
bld::tensor_view<const T, 3> dev3(const bld_gpu::device_block& b, std::int64_t T0, std::int64_t K0) {
    return bld::tensor_view<const T, 3>(b.as<const T>(), {T0, K0, A}, bld::device_kind::cuda);
}
template <class T>
bld::tensor_view<const T, 2> dev2(const bld_gpu::device_block& b, std::int64_t T0, std::int64_t K0) {
    return bld::tensor_view<const T, 2>(b.as<const T>(), {T0, K0}, bld::device_kind::cuda);
}

/// A compact slot_targets_view of a loss batch (active slots' rows in slot order), its storage.
template <class P>
struct compact_batch {
    std::vector<P> values;
    std::vector<std::int64_t> slots;
    std::vector<std::uint8_t> mask;
    std::vector<std::int32_t> bytes;
    std::int64_t T = 0, K = 0;

    explicit compact_batch(const loss_batch& b) : mask(b.mask), T(b.T), K(b.K) {
        for (std::int64_t s = 0; s < T * K; ++s) {
            bytes.push_back(mask[static_cast<std::size_t>(s)] ? static_cast<std::int32_t>(b.bytes[static_cast<std::size_t>(s)]) : -1);
            if (!mask[static_cast<std::size_t>(s)]) continue;
            slots.push_back(s);
            for (std::int64_t a = 0; a < A; ++a) values.push_back(P(static_cast<float>(b.targets[static_cast<std::size_t>(s * A + a)])));
        }
    }
    [[nodiscard]] bld::slot_targets_view<P> host() const {
        bld::slot_targets_view<P> v;
        v.layout = bld::target_layout::compact;
        v.tokens = T;
        v.heads = K;
        v.values = bld::tensor_view<const P, 2>(values.data(), {static_cast<std::int64_t>(slots.size()), A});
        v.slots = bld::tensor_view<const std::int64_t, 1>(slots.data(), {static_cast<std::int64_t>(slots.size())});
        v.mask = bld::tensor_view<const std::uint8_t, 2>(mask.data(), {T, K});
        v.true_bytes = bld::tensor_view<const std::int32_t, 2>(bytes.data(), {T, K});
        return v;
    }
};

/// The same view's members copied to the device.
template <class P>
struct device_compact {
    bld_gpu::device_block values, slots, mask, bytes;
    explicit device_compact(const compact_batch<P>& c) : values(c.values), slots(c.slots), mask(c.mask), bytes(c.bytes) {}
    [[nodiscard]] bld::slot_targets_view<P> view(const compact_batch<P>& c) const {
        auto v = c.host();
        v.values = bld::tensor_view<const P, 2>(values.as<const P>(), v.values.extents(), bld::device_kind::cuda);
        v.slots = bld::tensor_view<const std::int64_t, 1>(slots.as<const std::int64_t>(), v.slots.extents(), bld::device_kind::cuda);
        v.mask = bld::tensor_view<const std::uint8_t, 2>(mask.as<const std::uint8_t>(), v.mask.extents(), bld::device_kind::cuda);
        v.true_bytes = bld::tensor_view<const std::int32_t, 2>(bytes.as<const std::int32_t>(), v.true_bytes.extents(),
                                                               bld::device_kind::cuda);
        return v;
    }
};

}  // namespace

TEST_CASE("bld::bld_loss & co. on CUDA memory (the one entry point) equal the same calls on the CPU") {
    REQUIRE((bld::device_loss_registry::cuda.load() != nullptr));  // test_cuda.cu includes <bld/cuda.cuh>
    const auto b = make_loss_batch(41, 7, 21);
    const auto T = b.T, K = b.K;
    const std::array<std::int64_t, 3> tka{T, K, A};
    const std::array<std::int64_t, 2> tk{T, K};
    const bld_gpu::device_block z(b.logits), p(b.targets), y(b.bytes), m(b.mask);
    const bld_gpu::device_stream stream;
    for (auto red : {bld::loss_reduction::eq5, bld::loss_reduction::none}) {
        bld::bld_loss_options o;
        o.kind = bld::divergence::reverse_kl;
        o.temperature = 1.5;
        o.reduction = red;
        std::vector<double> grad(b.logits.size()), per(b.bytes.size());
        const auto want = bld::bld_loss(bld::shaped(b.logits, tka), bld::shaped(b.targets, tka), bld::shaped(b.bytes, tk),
                                        bld::shaped(b.mask, tk), o, bld::shaped(grad, tka), bld::shaped(per, tk));
        const bld_gpu::device_block g(nullptr, grad.size() * sizeof(double)), s(nullptr, per.size() * sizeof(double));
        bld::tensor_view<double, 3> gv(g.as<double>(), tka, bld::device_kind::cuda);
        bld::tensor_view<double, 2> sv(s.as<double>(), tk, bld::device_kind::cuda);
        bld::byte_loss_result got;
        {
            const bld::device_stream_scope on(stream.get());
            got = bld::bld_loss(dev3<double>(z, T, K), dev3<double>(p, T, K), dev2<std::int64_t>(y, T, K),
                                dev2<std::uint8_t>(m, T, K), o, gv, sv);
        }
        INFO(bld::to_string(red));
        CHECK(got.active_slots == want.active_slots);
        CHECK(got.active_tokens == want.active_tokens);
        CHECK(std::abs(got.value - want.value) <= 1e-12 * std::abs(want.value));
        check_close(g.read_as<double>(), grad, 1e-11, 1e-15, "grad through the host entry");
        check_close(s.read_as<double>(), per, 1e-12, 1e-15, "per_slot through the host entry");
    }
    // float32 logits, bool mask, int32 bytes, no outputs; byte_cross_entropy without a mask.
    std::vector<float> zf(b.logits.begin(), b.logits.end()), pf(b.targets.begin(), b.targets.end());
    std::vector<std::int32_t> y32(b.bytes.begin(), b.bytes.end());
    const bld_gpu::device_block zfd(zf), pfd(pf), y32d(y32);
    const bld::tensor_view<const bool, 2> bool_mask(reinterpret_cast<const bool*>(m.as<const std::uint8_t>()), tk,
                                                    bld::device_kind::cuda);
    const auto want32 = bld::bld_loss(bld::shaped(zf, tka), bld::shaped(pf, tka), bld::shaped(y32, tk), bld::shaped(b.mask, tk));
    const auto got32 = bld::bld_loss(dev3<float>(zfd, T, K), dev3<float>(pfd, T, K), dev2<std::int32_t>(y32d, T, K), bool_mask);
    CHECK(std::abs(got32.value - want32.value) <= 1e-12 * std::abs(want32.value));
    // No mask: every slot is active, so the padding bytes (-100) are the CPU's error on both.
    CHECK(caught([&] { (void)bld::byte_cross_entropy(dev3<float>(zfd, T, K), dev2<std::int32_t>(y32d, T, K), bld::no_tensor); }) ==
          caught([&] { (void)bld::byte_cross_entropy(bld::shaped(zf, tka), bld::shaped(y32, tk), bld::no_tensor); }));
    // A bad slot: the CPU's error through the host entry.
    auto bad = b.logits;
    bad[static_cast<std::size_t>((5 * K + 1) * A + 3)] = std::numeric_limits<double>::quiet_NaN();
    std::vector<std::uint8_t> all(b.mask.size(), 1);
    const bld_gpu::device_block zb(bad), ma(all);
    CHECK(caught([&] { (void)bld::byte_loss(dev3<double>(zb, T, K), dev3<double>(p, T, K), dev2<std::uint8_t>(ma, T, K)); }) ==
          caught([&] { (void)bld::byte_loss(bld::shaped(bad, tka), bld::shaped(b.targets, tka), bld::shaped(all, tk)); }));
}

TEST_CASE("compact targets on the GPU equal the CPU's (float32 and bf16 rows; the CPU's errors)") {
    const auto b = make_loss_batch(53, 9, 31);
    const auto T = b.T, K = b.K;
    const std::array<std::int64_t, 3> tka{T, K, A};
    const std::array<std::int64_t, 2> tk{T, K};
    const bld_gpu::device_block z(b.logits);
    const auto run = [&](const auto& cb, const std::string& what) {
        using P = typename std::remove_cvref_t<decltype(cb.values)>::value_type;
        const device_compact<P> dc(cb);
        for (auto red : {bld::loss_reduction::eq5, bld::loss_reduction::slot_mean, bld::loss_reduction::none}) {
            bld::bld_loss_options o;
            o.lambda_kl = 0.7;
            o.reduction = red;
            std::vector<double> grad(b.logits.size()), per(b.bytes.size());
            const auto want = bld::bld_loss(bld::shaped(b.logits, tka), cb.host(), o, bld::shaped(grad, tka), bld::shaped(per, tk));
            const bld_gpu::device_block g(nullptr, grad.size() * sizeof(double)), s(nullptr, per.size() * sizeof(double));
            bld::tensor_view<double, 3> gv(g.as<double>(), tka, bld::device_kind::cuda);
            bld::tensor_view<double, 2> sv(s.as<double>(), tk, bld::device_kind::cuda);
            const auto got = bld::bld_loss(dev3<double>(z, T, K), dc.view(cb), o, gv, sv);
            INFO(what << " " << bld::to_string(red));
            CHECK(got.active_slots == want.active_slots);
            CHECK(std::abs(got.value - want.value) <= 1e-12 * std::abs(want.value));
            check_close(g.read_as<double>(), grad, 1e-11, 1e-15, what + " grad");
            check_close(s.read_as<double>(), per, 1e-12, 1e-15, what + " per_slot");
        }
    };
    const compact_batch<float> cf(b);
    const compact_batch<bld::bf16> cb(b);
    run(cf, "compact float32");
    run(cb, "compact bf16");

    // Errors: a row listing the wrong slot, one row too few, a negative probability in a row.
    const auto both = [&](const compact_batch<float>& c) {
        const device_compact<float> dc(c);
        const auto cpu = caught([&] { (void)bld::bld_loss(bld::shaped(b.logits, tka), c.host()); });
        const auto gpu = caught([&] { (void)bld::bld_loss(dev3<double>(z, T, K), dc.view(c)); });
        CHECK(cpu != "none");
        CHECK(gpu == cpu);
    };
    auto c = cf;
    c.slots[7] = c.slots[8];
    both(c);
    c = cf;
    c.slots.pop_back();
    c.values.resize(c.values.size() - A);
    both(c);
    c = cf;
    c.values[static_cast<std::size_t>(12 * A + 40)] = -0.5f;
    both(c);
}

TEST_CASE("the device projector equals canonical_path: a batch of sequences, id and trie order, float and bf16") {
    const auto factory = bld::device_projection_registry::cuda.load();
    REQUIRE((factory != nullptr));
    std::mt19937 rng(77);
    const auto run = [&](const bld::byte_trie& trie, const std::vector<std::vector<std::int64_t>>& seqs, const std::string& what) {
        const auto proj = factory(trie);
        // The trie order: byte_trie::order(), then the special tokens by id.
        std::vector<std::uint32_t> perm(trie.order().begin(), trie.order().end());
        for (std::size_t id = 0; id < trie.vocab().size(); ++id)
            if (trie.vocab().kinds()[id] == bld::token_kind::special) perm.push_back(static_cast<std::uint32_t>(id));
        const std::size_t N = trie.vocab().size() + 2;
        std::vector<bld::device_sequence> ds;
        std::int64_t R = 0;
        for (const auto& s : seqs) {
            ds.push_back({R, s});
            R += static_cast<std::int64_t>(s.size()) + 1;  // a spare row between sequences
        }
        const auto rows = random_rows(rng, static_cast<std::size_t>(R), N, 3.0);
        std::vector<float> sorted(static_cast<std::size_t>(R) * perm.size());
        for (std::int64_t r = 0; r < R; ++r)
            for (std::size_t k = 0; k < perm.size(); ++k) sorted[static_cast<std::size_t>(r) * perm.size() + k] = rows[static_cast<std::size_t>(r) * N + perm[k]];
        const bld_gpu::device_block d_rows(rows), d_sorted(sorted);
        const auto h = to_bf16(rows);
        const bld_gpu::device_block d_h(h);
        const auto ids_f = proj->canonical_paths(bld::dtype::f32, d_rows.data(), R, static_cast<std::int64_t>(N), 0, false, ds, nullptr);
        const auto tri_f = proj->canonical_paths(bld::dtype::f32, d_sorted.data(), R, static_cast<std::int64_t>(perm.size()), 0, true, ds, nullptr);
        const bld_gpu::device_stream stream;
        const auto ids_h = proj->canonical_paths(bld::dtype::bf16, d_h.data(), R, static_cast<std::int64_t>(N), 0, false, ds, stream.get());
        REQUIRE(ids_f.size() == seqs.size());
        REQUIRE(tri_f.size() == seqs.size());
        for (std::size_t i = 0; i < seqs.size(); ++i) {
            const std::int64_t rest = R - ds[i].first_row;
            const bld::tensor_view<const float, 2> v(rows.data() + ds[i].first_row * static_cast<std::int64_t>(N), {rest, static_cast<std::int64_t>(N)});
            const bld::tensor_view<const bld::bf16, 2> hv(h.data() + ds[i].first_row * static_cast<std::int64_t>(N), {rest, static_cast<std::int64_t>(N)});
            const auto want = bld::reference::canonical_path(trie, v, seqs[i]);
            check_distributions(ids_f[i], want, what + " id order, sequence " + std::to_string(i));
            check_distributions(tri_f[i], want, what + " trie order, sequence " + std::to_string(i));
            check_distributions(ids_h[i], bld::reference::canonical_path(trie, hv, seqs[i]), what + " bf16, sequence " + std::to_string(i));
        }
        // Errors: sequence 1 has a NaN (row 2), sequence 2 a bad id: sequence 1's error, as on the CPU.
        if (seqs.size() >= 3) {
            auto bad_rows = rows;
            const std::uint32_t id = perm[perm.size() / 2];
            bad_rows[static_cast<std::size_t>(ds[1].first_row + 2) * N + id] = std::numeric_limits<float>::quiet_NaN();
            auto bad_sorted = sorted;
            bad_sorted[static_cast<std::size_t>(ds[1].first_row + 2) * perm.size() + perm.size() / 2] = std::numeric_limits<float>::quiet_NaN();
            auto bad_ids = seqs;
            bad_ids[2][0] = static_cast<std::int64_t>(trie.vocab().size()) + 3;
            std::vector<bld::device_sequence> bds;
            for (std::size_t i = 0; i < seqs.size(); ++i) bds.push_back({ds[i].first_row, bad_ids[i]});
            const bld::tensor_view<const float, 2> v1(bad_rows.data() + ds[1].first_row * static_cast<std::int64_t>(N),
                                                      {R - ds[1].first_row, static_cast<std::int64_t>(N)});
            const auto cpu = caught([&] { (void)bld::reference::canonical_path(trie, v1, bad_ids[1]); });
            CHECK(cpu.rfind("value_error|row 2, column " + std::to_string(id) + "|", 0) == 0);
            const bld_gpu::device_block d_bad(bad_rows), d_bad_sorted(bad_sorted);
            CHECK(caught([&] { (void)proj->canonical_paths(bld::dtype::f32, d_bad.data(), R, static_cast<std::int64_t>(N), 0, false, bds, nullptr); }) == cpu);
            CHECK(caught([&] { (void)proj->canonical_paths(bld::dtype::f32, d_bad_sorted.data(), R, static_cast<std::int64_t>(perm.size()), 0, true, bds, nullptr); }) == cpu);
            // Rows narrower than the trie order; an f16 matrix.
            CHECK(caught([&] { (void)proj->canonical_paths(bld::dtype::f32, d_sorted.data(), R, static_cast<std::int64_t>(perm.size()) - 1, 0, true, ds, nullptr); })
                      .rfind("shape_error|row 0|", 0) == 0);
            CHECK(caught([&] { (void)proj->canonical_paths(bld::dtype::f16, d_rows.data(), R, static_cast<std::int64_t>(N), 0, false, ds, nullptr); })
                      .rfind("shape_error|rows|", 0) == 0);
        }
    };
    const bld::byte_trie small(random_vocab(rng, 300, 5));
    std::vector<std::int64_t> text_ids;
    for (std::size_t id = 0; id < small.vocab().size(); ++id)
        if (small.vocab().kinds()[id] == bld::token_kind::text) text_ids.push_back(static_cast<std::int64_t>(id));
    std::vector<std::vector<std::int64_t>> seqs;
    for (int s = 0; s < 5; ++s) {
        std::vector<std::int64_t> ids;
        for (int k = 0; k < 10 + 7 * s; ++k) ids.push_back(text_ids[rng() % text_ids.size()]);
        seqs.push_back(ids);
    }
    run(small, seqs, "random vocabulary");
    std::vector<std::vector<std::int64_t>> real;
    for (const auto& t : bld_test::read_encodings(data_path(), "llama3")) {
        if (t.ids.size() > 200) continue;
        real.push_back(t.ids);
        if (real.size() == 3) break;
    }
    REQUIRE(real.size() == 3);
    run(llama3(), real, "llama3");
}

int main(int argc, char** argv) {
    const auto dev = bld_gpu::query_device();
    if (dev.count == 0) {
        std::printf("bld_cuda_tests: SKIPPED: no CUDA device (%s)\n", dev.error.c_str());
        return 77;
    }
    std::printf("bld_cuda_tests: %s (sm_%d%d, %d SMs, %.1f GiB), driver %s, runtime %s\n", dev.name.c_str(), dev.cc_major,
                dev.cc_minor, dev.sms, static_cast<double>(dev.memory_bytes) / (1u << 30), dev.driver.c_str(),
                dev.runtime.c_str());
    if (argc >= 2 && std::string(argv[1]) == "--bench") {
        try {
            bld_gpu::bench_config cfg;
            const auto rep = bld_gpu::benchmark(llama3(), cfg);
            if (argc >= 3) {
                std::ofstream(argv[2]) << rep.markdown;
            }
            std::printf("%s", rep.markdown.c_str());
            std::printf("float32 row pass: %.1f%% of peak bandwidth (target 70%%)\n", 100 * rep.f32_fraction_of_peak);
            return rep.checked ? 0 : 1;
        } catch (const std::exception& e) {
            std::fprintf(stderr, "bld_cuda_tests --bench: %s\n", e.what());
            return 1;
        }
    }
    doctest::Context ctx(argc, argv);
    return ctx.run();
}
