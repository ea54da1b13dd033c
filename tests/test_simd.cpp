// The fast CPU backend (bld/backends/simd/row_pass.hpp, bld/projection/fast_rows.hpp) against the scalar
// reference, on every SIMD target this machine runs (style.md habit 10: the AVX2 build is
// tested on an AVX-512 machine too).
//
// Tolerance, as documented in bld/backends/simd/row_pass.hpp: every root mass, node sum and conditional
// within |Δ| ≤ 1e-5·|ref| + 1e-30 of the fp64 reference; log-normaliser within 1e-5
// (absolute, i.e. the normaliser relative); max_logit exact. Determinism: bit-identical for
// every thread count and batch composition.
#include <bld/loss/byte_loss.hpp>
#include <bld/projection/canonical_path.hpp>
#include <bld/projection/covering.hpp>
#include <bld/projection/fast_rows.hpp>
#include <bld/backends/reference/row_pass.hpp>
#include <bld/backends/simd/row_pass.hpp>

#if !defined(BLD_TEST_NO_REAL_DATA) // (cross builds: no JSON loader, no data)
#include "real_data.hpp"
#endif

#include <doctest/doctest.h>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstring>
#include <initializer_list>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

namespace {

constexpr double rel_tol = 1e-5;
constexpr double abs_floor = 1e-30;
constexpr float ninf = -std::numeric_limits<float>::infinity();

using bld::simd::level;

/// The levels of this build's CPU architecture: x86-64 scalar, sse2, avx2, avx512; AArch64
/// scalar, neon.
std::vector<level> architecture_levels() {
#if defined(__aarch64__)
    return {level::scalar, level::neon};
#else
    return {level::scalar, level::sse2, level::avx2, level::avx512};
#endif
}

/// Every target compiled into this build that this CPU runs. On the project's AVX-512 machine
/// that is scalar, sse2, avx2 and avx512; under AArch64, scalar and neon. Missing ones are
/// reported, not silently skipped.
std::vector<level> targets() {
    std::vector<level> out;
    for (level l : architecture_levels()) {
        if (bld::simd::compiled(l) && static_cast<int>(l) <= static_cast<int>(bld::simd::detected_level()))
            out.push_back(l);
        else
            MESSAGE("SIMD target " << bld::simd::to_string(l) << " is not available on this machine: not tested here");
    }
    return out;
}

/// A synthetic vocabulary of about n ids: random byte strings (skewed first bytes, so some
/// root bins are huge and some tiny), prefix chains, duplicates, specials, and (optionally)
/// gaps in the id space (absent ids, which the softmax ignores).
bld::vocabulary synth_vocab(std::mt19937& rng, std::size_t n, bool gaps) {
    std::vector<bld::token_entry> e;
    std::geometric_distribution<int> first(0.05);
    std::uniform_int_distribution<int> byte(0, 255), len(1, 6), coin(0, 99);
    std::int64_t id = 0;
    e.push_back({id++, {}, bld::token_kind::special, "<s>"});
    std::string last;
    while (e.size() < n) {
        if (gaps && coin(rng) < 3) ++id; // an absent id
        const int c = coin(rng);
        if (c < 2) {
            e.push_back({id++, {}, bld::token_kind::special, "<sp" + std::to_string(id) + ">"});
            continue;
        }
        std::string s;
        if (c < 12 && !last.empty()) {
            s = last + static_cast<char>(byte(rng)); // a chain
        } else if (c < 15 && !last.empty()) {
            s = last; // a duplicate
        } else {
            s += static_cast<char>((first(rng) * 7 + 32) % 256);
            for (int k = 1, L = len(rng); k < L; ++k) s += static_cast<char>(byte(rng));
        }
        e.push_back({id++, s, bld::token_kind::text, ""});
        last = s;
    }
    return bld::vocabulary::from_entries(std::move(e), "synthetic");
}

/// Rows [R, n] of several characters: moderate, wide, peaked, sparse −inf; columns past the
/// vocabulary hold NaN (they must be ignored).
std::vector<float> make_rows(std::mt19937& rng, std::size_t R, std::size_t V, std::size_t n, bool with_neg_inf = true) {
    std::vector<float> x(R * n, std::numeric_limits<float>::quiet_NaN());
    for (std::size_t r = 0; r < R; ++r) {
        const int kind = static_cast<int>(r % 7);
        std::normal_distribution<float> g(kind == 1 ? 2.0f : 0.0f, kind == 2 ? 15.0f : kind == 0 ? 1.0f : 4.0f);
        std::uniform_int_distribution<int> coin(0, 99);
        for (std::size_t i = 0; i < V; ++i) {
            float z = g(rng);
            if (kind == 3 && with_neg_inf && coin(rng) < 30) z = ninf;
            x[r * n + i] = z;
        }
        if (kind == 4) x[r * n + (r * 7919) % V] = 60.0f;           // one dominant token, late
        if (kind == 5) x[r * n + V - 1] = 45.0f;                      // the max in the last chunk
        if (kind == 6) x[r * n + V - 2] = 150.0f; // a late jump past the tile kernel's lazy_shift_limit
    }
    return x;
}

void check_summary(const bld::row_summary& got, const bld::row_summary& ref, const std::string& what) {
    INFO(what);
    CHECK(got.max_logit == ref.max_logit);
    CHECK(std::abs(got.log_normalizer - ref.log_normalizer) <= rel_tol);
    double worst = 0;
    std::size_t worst_a = 0;
    for (std::size_t a = 0; a < 257; ++a) {
        const double err = std::abs(got.root[a] - ref.root[a]) - rel_tol * ref.root[a] - abs_floor;
        if (err > worst) {
            worst = err;
            worst_a = a;
        }
    }
    CHECK_MESSAGE(worst == 0.0, "bin " << worst_a << ": got " << got.root[worst_a] << ", reference " << ref.root[worst_a]);
}

template <class T>
std::vector<T> as(const std::vector<float>& x) {
    std::vector<T> out(x.size());
    for (std::size_t i = 0; i < x.size(); ++i) out[i] = T(x[i]);
    return out;
}

template <class T>
void check_batch(const bld::row_plan& plan, const std::vector<float>& xf, std::size_t R, std::size_t n,
                 const std::string& what) {
    const auto x = as<T>(xf);
    const bld::tensor_view<const T, 2> rv(x.data(), {static_cast<std::int64_t>(R), static_cast<std::int64_t>(n)});
    std::vector<bld::row_summary> ref(R);
    for (std::size_t r = 0; r < R; ++r)
        ref[r] = bld::reference::summarize_row(plan.trie(), plan.bins(), std::span<const T>(x.data() + r * n, n), r);
    const auto perm = bld::permute_rows(plan, rv);
    const bld::tensor_view<const T, 2> pv(perm.data(), {static_cast<std::int64_t>(R), static_cast<std::int64_t>(plan.permutation().size())});
    for (level l : targets()) {
        const auto got = bld::summarize_rows(plan, rv, {}, l);
        const auto gotp = bld::summarize_permuted_rows(plan, pv, {}, l);
        for (std::size_t r = 0; r < R; ++r) {
            check_summary(got[r], ref[r], what + " " + std::string(bld::simd::to_string(l)) + " row " + std::to_string(r));
            check_summary(gotp[r], ref[r], what + " trie-ordered " + std::string(bld::simd::to_string(l)) + " row " + std::to_string(r));
        }
    }
}

bool same_bits(const std::vector<bld::row_summary>& a, const std::vector<bld::row_summary>& b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(bld::row_summary)) == 0;
}

std::string message_of(auto&& f) {
    try {
        f();
    } catch (const std::exception& e) {
        return e.what();
    }
    return "(no error)";
}

/// The fast canonical path (rows of type T, id order and trie order, every target) against the
/// reference on the same rows: every probability within rel_tol (abs_floor), the dropped mass
/// within 1e-5, and canonical_paths over several threads bit-identical to one.
template <class T>
void check_canonical(const bld::row_plan& plan, const std::vector<float>& xf, std::size_t R, std::size_t n,
                     const std::vector<std::vector<std::int64_t>>& idss, const std::string& what) {
    const auto x = as<T>(xf);
    const bld::tensor_view<const T, 2> rv(x.data(), {static_cast<std::int64_t>(R), static_cast<std::int64_t>(n)});
    const auto perm = bld::permute_rows(plan, rv);
    const bld::tensor_view<const T, 2> pv(perm.data(), {static_cast<std::int64_t>(R), static_cast<std::int64_t>(plan.permutation().size())});
    std::vector<bld::text_rows<T>> texts;
    for (const auto& ids : idss) texts.push_back({rv, ids, std::nullopt});
    for (level l : targets()) {
        const auto batch = bld::canonical_paths(plan, std::span<const bld::text_rows<T>>(texts), {3}, false, l);
        for (std::size_t t = 0; t < idss.size(); ++t) {
            const auto ref = bld::reference::canonical_path(plan.trie(), rv, idss[t]);
            for (const bool trie_ordered : {false, true}) {
                INFO(what << " " << bld::simd::to_string(l) << (trie_ordered ? " trie-ordered" : " id order") << " text " << t);
                const auto got = bld::canonical_path(plan, trie_ordered ? pv : rv, idss[t], std::nullopt, trie_ordered, l);
                REQUIRE(got.positions == ref.positions);
                if (!trie_ordered) CHECK(batch[t].probs == got.probs);
                double worst = 0;
                std::size_t worst_i = 0;
                for (std::size_t i = 0; i < ref.probs.size(); ++i) {
                    const double err = std::abs(got.probs[i] - ref.probs[i]) - rel_tol * ref.probs[i] - abs_floor;
                    if (err > worst) {
                        worst = err;
                        worst_i = i;
                    }
                }
                CHECK_MESSAGE(worst == 0.0, "entry " << worst_i << ": got " << got.probs[worst_i] << ", reference " << ref.probs[worst_i]);
                for (std::size_t i = 0; i < ref.positions; ++i) CHECK(std::abs(got.dropped[i] - ref.dropped[i]) <= 1e-5);
            }
        }
    }
}

} // namespace

TEST_CASE("simd: targets — this machine runs and tests every level of its architecture") {
    const auto t = targets();
    CHECK(!t.empty());
    MESSAGE("detected SIMD level: " << bld::simd::to_string(bld::simd::detected_level())
                                    << "; default level: " << bld::simd::to_string(bld::simd::default_level()));
    CHECK(bld::simd::resolve(level::scalar, "test") == level::scalar);
    if (bld::simd::detected_level() != level::avx512)
        CHECK_THROWS_AS((void)bld::simd::resolve(level::avx512, "test"), bld::value_error);
    // The other architecture's baseline level is never compiled, and resolving it is an error.
#if defined(__aarch64__)
    const level foreign = level::sse2;
#else
    const level foreign = level::neon;
#endif
    CHECK(!bld::simd::compiled(foreign));
    CHECK_THROWS_AS((void)bld::simd::resolve(foreign, "test"), bld::value_error);
#if defined(BLD_SIMD_HAVE_XSIMD) && (defined(__x86_64__) || defined(__aarch64__))
    // With xsimd, the architecture's baseline level is compiled and runs on every CPU of it.
    const level baseline = BLD_SIMD_NEON ? level::neon : level::sse2;
    CHECK(bld::simd::compiled(baseline));
    CHECK(std::find(t.begin(), t.end(), baseline) != t.end());
    CHECK(bld::simd::resolve(baseline, "test") == baseline);
#endif
}

TEST_CASE("simd row pass: every target agrees with the reference (float, bf16 and f16, id and trie order)") {
    std::mt19937 rng(5);
    for (const auto& [V, gaps] : {std::pair<std::size_t, bool>{300, false}, {1001, true}, {4099, false}, {20011, true}}) {
        bld::byte_trie trie(synth_vocab(rng, V, gaps));
        const bld::row_plan plan(trie);
        const std::size_t Vs = plan.vocab_size(), n = Vs + 5, R = 37; // 37: a partial tile for every width
        const auto x = make_rows(rng, R, Vs, n);
        check_batch<float>(plan, x, R, n, "V=" + std::to_string(Vs) + " float");
        check_batch<bld::bf16>(plan, x, R, n, "V=" + std::to_string(Vs) + " bf16");
        check_batch<bld::f16>(plan, x, R, n, "V=" + std::to_string(Vs) + " f16");
    }
}

#if !defined(BLD_TEST_NO_REAL_DATA)
TEST_CASE("simd row pass: real vocabularies (Llama-2 32k, Llama-3 128k), float, bf16 and f16") {
    const std::string dir = bld_test::data_dir();
    std::mt19937 rng(11);
    for (const char* name : {"llama2", "llama3"}) {
        bld::byte_trie trie(bld::io::load_vocabulary(dir + "/tokenizers/" + name + "/tokenizer.json"));
        const bld::row_plan plan(trie);
        const std::size_t Vs = plan.vocab_size(), n = Vs + 64, R = 18;
        const auto x = make_rows(rng, R, Vs, n);
        check_batch<float>(plan, x, R, n, std::string(name) + " float");
        check_batch<bld::bf16>(plan, x, R, n, std::string(name) + " bf16");
        check_batch<bld::f16>(plan, x, R, n, std::string(name) + " f16");
    }
}
#endif

TEST_CASE("simd row pass: bit-identical for every thread count and batch composition") {
    std::mt19937 rng(7);
    bld::byte_trie trie(synth_vocab(rng, 3001, true));
    const bld::row_plan plan(trie);
    const std::size_t V = plan.vocab_size(), n = V + 3, R = 53;
    const auto x = make_rows(rng, R, V, n);
    const bld::tensor_view<const float, 2> rv(x.data(), {static_cast<std::int64_t>(R), static_cast<std::int64_t>(n)});
    const auto perm = bld::permute_rows(plan, rv);
    const bld::tensor_view<const float, 2> pv(perm.data(), {static_cast<std::int64_t>(R), static_cast<std::int64_t>(plan.permutation().size())});
    for (level l : targets()) {
        INFO("target " << bld::simd::to_string(l));
        const auto one = bld::summarize_rows(plan, rv, {1}, l);
        const auto onep = bld::summarize_permuted_rows(plan, pv, {1}, l);
        for (std::size_t t : {2u, 3u, 4u, 7u, 0u}) {
            CHECK(same_bits(bld::summarize_rows(plan, rv, {t}, l), one));
            CHECK(same_bits(bld::summarize_permuted_rows(plan, pv, {t}, l), onep));
        }
        // A row alone, or in another batch, gives the same bits as in this batch.
        // (row 6 jumps past lazy_shift_limit late: its tile, rows 0–15, starts over)
        for (std::size_t r : {0u, 6u, 17u, 52u}) {
            const bld::tensor_view<const float, 2> alone(x.data() + r * n, {1, static_cast<std::int64_t>(n)});
            CHECK(same_bits(bld::summarize_rows(plan, alone, {1}, l), {one[r]}));
        }
        const bld::tensor_view<const float, 2> tail(x.data() + 5 * n, {static_cast<std::int64_t>(R - 5), static_cast<std::int64_t>(n)});
        CHECK(same_bits(bld::summarize_rows(plan, tail, {2}, l), std::vector<bld::row_summary>(one.begin() + 5, one.end())));
    }
}

TEST_CASE("simd tile kernel: rows at a negative stride low in the address space agree with the reference") {
#if defined(__linux__) && defined(MAP_FIXED_NOREPLACE)
    // Row r of a tile sits at address (W − r)·D: the tile's rows are at one stride (−D bytes), the
    // kernel's fast addressing. Any pointer the kernel formed past its rows (row W, W + 4, …)
    // would lie at or below address 0, so pointer arithmetic wraps around, which UBSan's
    // pointer-overflow check reports; without a sanitizer the results must still be the
    // reference's wherever the rows are.
    std::mt19937 rng(23);
    bld::byte_trie trie(synth_vocab(rng, 1500, true));
    const bld::row_plan plan(trie);
    const std::size_t V = plan.vocab_size();
    const std::size_t bytes = (V * sizeof(float) + 4095) / 4096 * 4096;
    const auto x = make_rows(rng, 16, V, V);
    constexpr std::uintptr_t D = std::uintptr_t{1} << 26;
    for (level l : targets()) {
        INFO(bld::simd::to_string(l));
        const auto k = bld::simd::detail::kernels_for<float>(l);
        const std::size_t W = k.width;
        std::vector<const float*> rows;
        for (std::size_t r = 0; r < W; ++r) {
            void* want = reinterpret_cast<void*>((W - r) * D);
            void* got = mmap(want, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
            if (got != want) {
                if (got != MAP_FAILED) munmap(got, bytes);
                break;
            }
            std::memcpy(got, x.data() + r * V, V * sizeof(float));
            rows.push_back(static_cast<const float*>(got));
        }
        if (rows.size() == W) {
            auto ws = std::make_unique<bld::simd::detail::tile_workspace>();
            std::vector<bld::simd::detail::tile_result> res(W);
            k.tile_row_pass(bld::detail::row_plan_access::tile(plan), rows.data(), *ws, res.data());
            for (std::size_t r = 0; r < W; ++r) {
                const auto ref = bld::reference::summarize_row(trie, plan.bins(), std::span<const float>(x.data() + r * V, V), r);
                REQUIRE(res[r].valid);
                bld::row_summary got;
                bld::detail::finish_summary(res[r].sums, res[r].max, res[r].shift, got);
                check_summary(got, ref, "row " + std::to_string(r));
            }
        } else {
            MESSAGE("addresses below " << (W * D >> 20) << " MiB are taken: rows at a negative stride not tested for "
                                       << bld::simd::to_string(l));
        }
        for (const float* r : rows) munmap(const_cast<float*>(r), bytes);
    }
#else
    MESSAGE("needs Linux mmap(MAP_FIXED_NOREPLACE): not tested here");
#endif
}

TEST_CASE("simd row pass: errors are the reference's (first bad row, any thread count)") {
    std::mt19937 rng(9);
    bld::byte_trie trie(synth_vocab(rng, 700, true));
    const bld::row_plan plan(trie);
    const std::size_t V = plan.vocab_size(), n = V, R = 40;
    auto x = make_rows(rng, R, V, n);
    x[33 * n + 100] = std::numeric_limits<float>::quiet_NaN();
    x[21 * n + 555] = std::numeric_limits<float>::quiet_NaN();
    x[21 * n + 600] = std::numeric_limits<float>::infinity();
    const bld::tensor_view<const float, 2> rv(x.data(), {static_cast<std::int64_t>(R), static_cast<std::int64_t>(n)});
    const std::string want = message_of([&] { (void)bld::reference::summarize_row(trie, plan.bins(), std::span<const float>(x.data() + 21 * n, n), 21); });
    CHECK(want.find("row 21, column 555: the logit is NaN") != std::string::npos);
    for (level l : targets())
        for (std::size_t t : {1u, 3u}) {
            INFO(bld::simd::to_string(l) << ", " << t << " threads");
            CHECK(message_of([&] { (void)bld::summarize_rows(plan, rv, {t}, l); }) == want);
            CHECK_THROWS_AS((void)bld::summarize_rows(plan, rv, {t}, l), bld::value_error);
        }
    // +Inf alone; a row without a finite logit; short rows.
    x[21 * n + 555] = 0.0f;
    CHECK(message_of([&] { (void)bld::summarize_rows(plan, rv, {2}); }).find("row 21, column 600: the logit is +Inf") != std::string::npos);
    x[21 * n + 600] = 0.0f;
    x[33 * n + 100] = 0.0f;
    for (std::size_t i = 0; i < V; ++i) x[9 * n + i] = ninf;
    CHECK(message_of([&] { (void)bld::summarize_rows(plan, rv, {2}); }).find("row 9: no finite logit") != std::string::npos);
    const bld::tensor_view<const float, 2> short_rows(x.data(), {2, static_cast<std::int64_t>(V - 1)});
    CHECK_THROWS_AS((void)bld::summarize_rows(plan, short_rows), bld::shape_error);
    // Trie-ordered rows name the column and its id.
    for (std::size_t i = 0; i < V; ++i) x[9 * n + i] = 0.0f;
    auto p = bld::permute_rows(plan, rv);
    const auto m = plan.permutation().size();
    p[4 * m + 10] = std::numeric_limits<float>::infinity();
    const bld::tensor_view<const float, 2> pv(p.data(), {static_cast<std::int64_t>(R), static_cast<std::int64_t>(m)});
    CHECK(message_of([&] { (void)bld::summarize_permuted_rows(plan, pv, {2}); })
              .find("row 4, column 10 (id " + std::to_string(plan.permutation()[10]) + "): the logit is +Inf") != std::string::npos);
}

TEST_CASE("simd row pass: the permutation is the trie order and the root segments its children") {
    std::mt19937 rng(3);
    bld::byte_trie trie(synth_vocab(rng, 2000, true));
    const bld::row_plan plan(trie);
    const auto perm = plan.permutation();
    const auto order = trie.order();
    REQUIRE(perm.size() >= order.size());
    for (std::size_t k = 0; k < order.size(); ++k) CHECK(perm[k] == order[k]);
    const auto b = plan.root_bounds();
    for (std::size_t k = 0; k < perm.size(); ++k) {
        const auto bin = plan.bins()[perm[k]];
        REQUIRE(bin != bld::ignored_bin);
        CHECK(b[bin] <= k);
        CHECK(k < b[bin + 1u]);
    }
}

TEST_CASE("simd exp: relative error ≤ 5e-7 on [−86.5, 0], zero below −86.6 and for −inf") {
    // Single-element segments give e^(x − shift) per element; the shift is the first chunk's
    // maximum, 0 here, so x − shift is exact and only exp is measured.
    std::vector<float> x;
    for (int i = 0; i <= 200000; ++i) x.push_back(-86.5f * static_cast<float>(i) / 200000.0f);
    x.push_back(-86.61f);
    x.push_back(-100.0f);
    x.push_back(ninf);
    std::vector<std::uint32_t> bounds(x.size() + 1);
    for (std::size_t i = 0; i < bounds.size(); ++i) bounds[i] = static_cast<std::uint32_t>(i);
    std::vector<double> sums(x.size());
    for (level l : targets()) {
        if (l == level::scalar) continue; // the C library's expf
        INFO(bld::simd::to_string(l));
        const auto q = bld::simd::detail::kernels_for<float>(l).segment_sums(x.data(), bounds.data(), x.size(), sums.data());
        REQUIRE(q.shift == 0.0f);
        double worst = 0;
        for (std::size_t i = 0; i + 3 < x.size(); ++i) {
            const double want = std::exp(static_cast<double>(x[i]));
            worst = std::max(worst, std::abs(sums[i] - want) / want);
        }
        CHECK(worst <= 5e-7); // exp_keep_nan, the row pass's (AVX-512: table-driven, bld/backends/simd/ops.hpp)
        MESSAGE(bld::simd::to_string(l) << ": worst relative error of exp " << worst);
        CHECK(sums[x.size() - 3] == 0.0);
        CHECK(sums[x.size() - 2] == 0.0);
        CHECK(sums[x.size() - 1] == 0.0);
    }
}

TEST_CASE("simd segment sums: one pass with a lazy shift that moves, against fp64 sums (with and without kept terms)") {
    // Values rise in steps so the shift moves several times: in the first chunk, in a chunk that
    // begins inside a segment, in one that closes segments before the move shows. Segments are
    // empty, shorter than a vector, cut by chunk ends, or span several chunks. The kernel's sums
    // times e^shift must equal the fp64 sums; kept terms times e^shift the fp64 terms (or 0
    // below e^−86.6 of the shift); rmax is exact.
    std::mt19937 rng(29);
    std::normal_distribution<float> g(0.0f, 2.0f);
    for (const std::size_t n : {std::size_t{37}, std::size_t{1024}, std::size_t{5000}, std::size_t{9000}}) {
        std::vector<float> x(n);
        for (std::size_t i = 0; i < n; ++i) x[i] = g(rng) + 25.0f * static_cast<float>(i / 700) + (i == 3 ? 30.0f : 0.0f);
        std::vector<std::uint32_t> bounds{0};
        while (bounds.back() < n) {
            const std::uint32_t len = static_cast<std::uint32_t>(std::vector<int>{0, 1, 5, 16, 17, 63, 300, 1500}[rng() % 8]);
            bounds.push_back(std::min<std::uint32_t>(bounds.back() + len, static_cast<std::uint32_t>(n)));
        }
        const std::size_t nseg = bounds.size() - 1;
        std::vector<double> want(nseg, 0.0);
        for (std::size_t s = 0; s < nseg; ++s)
            for (std::uint32_t k = bounds[s]; k < bounds[s + 1]; ++k) want[s] += std::exp(static_cast<double>(x[k]));
        const float xmax = *std::max_element(x.begin(), x.end());
        for (level l : targets()) {
            INFO(bld::simd::to_string(l) << ", n = " << n);
            const auto k = bld::simd::detail::kernels_for<float>(l);
            for (const bool keep : {false, true}) {
                std::vector<double> sums(nseg, -1.0);
                std::vector<float> kept(n + 64, -1.0f);
                const auto q = keep ? k.segment_sums_keep(x.data(), bounds.data(), nseg, sums.data(), kept.data())
                                    : k.segment_sums(x.data(), bounds.data(), nseg, sums.data());
                REQUIRE(q.valid);
                CHECK(q.max == xmax);
                CHECK(q.shift >= xmax - bld::simd::detail::lazy_shift_slack);
                CHECK(q.shift <= xmax);
                const double f = std::exp(static_cast<double>(q.shift));
                for (std::size_t s = 0; s < nseg; ++s) CHECK(std::abs(sums[s] * f - want[s]) <= rel_tol * want[s]);
                if (!keep) continue;
                for (std::size_t i = 0; i < n; ++i) {
                    // exp's 5e-7, rescales by float factors, and the rounding of the float
                    // argument x − shift (half an ulp of |x − shift| is an absolute error of
                    // the exponent, a relative one of the term).
                    const double arg = static_cast<double>(x[i]) - static_cast<double>(q.shift);
                    const double t = std::exp(arg);
                    if (t < 1e-37) CHECK(kept[i] < 1e-37f);
                    else CHECK(std::abs(static_cast<double>(kept[i]) - t) <= (1e-6 + 1.2e-7 * std::abs(arg)) * t);
                }
            }
        }
    }
}

TEST_CASE("simd node sums agree with sum_node; canonical path agrees with the reference") {
    std::mt19937 rng(13);
    bld::byte_trie trie(synth_vocab(rng, 5000, true));
    const bld::row_plan plan(trie);
    const std::size_t V = plan.vocab_size(), n = V + 2, R = 12;
    const auto x = make_rows(rng, R, V, n, false); // no −inf: every token keeps a positive probability
    const bld::tensor_view<const float, 2> rv(x.data(), {static_cast<std::int64_t>(R), static_cast<std::int64_t>(n)});
    const auto perm = bld::permute_rows(plan, rv);
    const auto m = plan.permutation().size();
    std::vector<float> scratch;
    std::uniform_int_distribution<std::size_t> pick(0, trie.node_count() - 1);
    for (level l : targets()) {
        INFO(bld::simd::to_string(l));
        for (int t = 0; t < 300; ++t) {
            const auto nidx = static_cast<bld::byte_trie::node_index>(t < 20 ? 0 : pick(rng));
            const std::size_t r = static_cast<std::size_t>(t) % R;
            const std::span<const float> row(x.data() + r * n, n);
            const double ref_shift = bld::reference::node_max_logit(trie, row, nidx);
            if (!(ref_shift > -INFINITY)) continue;
            bld::node_sums ref, got, gotp;
            bld::reference::sum_node(trie, row, nidx, ref_shift, ref);
            const double s1 = bld::sum_node(plan, row, nidx, got, scratch, false, l);
            const double s2 = bld::sum_node(plan, std::span<const float>(perm.data() + r * m, m), nidx, gotp, scratch, true, l);
            for (const auto* g : {&got, &gotp}) {
                const double f = std::exp((g == &got ? s1 : s2) - ref_shift);
                CHECK(std::abs(g->end * f - ref.end) <= rel_tol * ref.end + abs_floor);
                for (std::size_t a = 0; a < 256; ++a)
                    CHECK(std::abs(g->child[a] * f - ref.child[a]) <= rel_tol * ref.child[a] + abs_floor);
            }
        }
    }
    // Canonical path over texts made of random tokens: fast (id order, trie order, threads)
    // against the reference.
    std::vector<std::vector<std::int64_t>> idss;
    std::uniform_int_distribution<std::size_t> any(0, V - 1);
    for (int t = 0; t < 5; ++t) {
        std::vector<std::int64_t> ids;
        while (ids.size() < R) {
            const auto id = any(rng);
            if (trie.vocab().kinds()[id] == bld::token_kind::text) ids.push_back(static_cast<std::int64_t>(id));
        }
        idss.push_back(ids);
    }
    std::vector<bld::text_rows<float>> texts;
    const bld::tensor_view<const float, 2> pv(perm.data(), {static_cast<std::int64_t>(R), static_cast<std::int64_t>(m)});
    for (const auto& ids : idss) texts.push_back({rv, ids, std::nullopt});
    for (level l : targets()) {
        const auto batch = bld::canonical_paths(plan, std::span<const bld::text_rows<float>>(texts), {3}, false, l);
        for (std::size_t t = 0; t < idss.size(); ++t) {
            const auto ref = bld::reference::canonical_path(trie, rv, idss[t]);
            const auto got = bld::canonical_path(plan, rv, idss[t], std::nullopt, false, l);
            const auto gotp = bld::canonical_path(plan, pv, idss[t], std::nullopt, true, l);
            REQUIRE(got.positions == ref.positions);
            CHECK(batch[t].probs == got.probs);
            for (std::size_t i = 0; i < ref.probs.size(); ++i) {
                CHECK(std::abs(got.probs[i] - ref.probs[i]) <= rel_tol * ref.probs[i] + abs_floor);
                CHECK(std::abs(gotp.probs[i] - ref.probs[i]) <= rel_tol * ref.probs[i] + abs_floor);
            }
            for (std::size_t i = 0; i < ref.positions; ++i) CHECK(std::abs(got.dropped[i] - ref.dropped[i]) <= 1e-5);
        }
    }
}

/// Rows where a token's first-byte node holds almost nothing (every id under that byte 80
/// below the rest): the node is then summed with its own shift, not taken from the root pass.
static void sink_first_nodes(const bld::row_plan& plan, std::vector<float>& x, std::size_t n,
                      const std::vector<std::int64_t>& ids, std::initializer_list<std::size_t> rows) {
    const auto& trie = plan.trie();
    for (const std::size_t j : rows) {
        const auto b = static_cast<std::uint8_t>(trie.vocab().unchecked_bytes(static_cast<std::size_t>(ids[j]))[0]);
        const auto& nd = trie.node(trie.child(bld::byte_trie::root, b));
        for (std::uint32_t k = nd.lo; k < nd.hi; ++k) x[j * n + trie.order()[k]] -= 80.0f;
    }
}

static std::vector<std::int64_t> random_text_ids(std::mt19937& rng, const bld::byte_trie& trie, std::size_t count) {
    std::vector<std::int64_t> ids;
    std::uniform_int_distribution<std::size_t> any(0, trie.vocab().size() - 1);
    while (ids.size() < count) {
        const auto id = any(rng);
        if (trie.vocab().kinds()[id] == bld::token_kind::text) ids.push_back(static_cast<std::int64_t>(id));
    }
    return ids;
}

TEST_CASE("simd canonical path: first-byte nodes from the root pass agree with the reference (float, bf16, f16)") {
    // 40 rows: three summary blocks of 16 and partial tiles for every width; texts of random
    // tokens (a quarter of Llama-3's ids start with a space: its node is a quarter of the row).
    std::mt19937 rng(29);
    auto run = [&](const bld::row_plan& plan, const std::string& name) {
        const std::size_t V = plan.vocab_size(), n = V + 3, R = 40;
        std::vector<std::vector<std::int64_t>> idss{random_text_ids(rng, plan.trie(), R), random_text_ids(rng, plan.trie(), 23)};
        auto x = make_rows(rng, R, V, n, false);
        // −inf logits (probability 0) in every fifth row, never on the row's own token.
        std::uniform_int_distribution<int> coin(0, 99);
        for (std::size_t r = 3; r < R; r += 5)
            for (std::size_t i = 0; i < V; ++i)
                if (coin(rng) < 30 && i != static_cast<std::size_t>(idss[0][r]) && (r >= idss[1].size() || i != static_cast<std::size_t>(idss[1][r])))
                    x[r * n + i] = ninf;
        sink_first_nodes(plan, x, n, idss[0], {2, 17, 33});
        check_canonical<float>(plan, x, R, n, idss, name + " float");
        check_canonical<bld::bf16>(plan, x, R, n, idss, name + " bf16");
        check_canonical<bld::f16>(plan, x, R, n, idss, name + " f16");
    };
    {
        bld::byte_trie trie(synth_vocab(rng, 3000, true));
        const bld::row_plan plan(trie);
        run(plan, "synthetic");
    }
#if !defined(BLD_TEST_NO_REAL_DATA)
    bld::byte_trie trie(bld::io::load_vocabulary(bld_test::data_dir() + "/tokenizers/llama3/tokenizer.json"));
    const bld::row_plan plan(trie);
    run(plan, "llama3");
#endif
}

TEST_CASE("simd loss slot kernel agrees with the reference kernel on every target (value 1e-12, gradient one float rounding)") {
    std::mt19937 rng(17);
    std::normal_distribution<float> g(0.0f, 3.0f);
    std::uniform_int_distribution<int> byte(0, 259), coin(0, 9);
    constexpr int A = 260;
    std::vector<float> z(A), p(A), gs(A), gr(A);
    int cases = 0;
    for (level l : targets()) {
        INFO(bld::simd::to_string(l));
        const auto fast = bld::simd::detail::loss_kernel_for(l);
        for (int t = 0; t < 400; ++t) {
            for (auto& v : z) v = g(rng) * (t % 3 == 0 ? 4.0f : 1.0f);
            double sum = 0;
            for (auto& v : p) {
                v = coin(rng) < 3 ? 0.0f : std::exp(g(rng));
                sum += v;
            }
            for (auto& v : p) v = static_cast<float>(v / sum);
            const int y = byte(rng);
            const bld::math::slot_params prm{t % 4 == 3 ? 0.0 : 0.1, t % 4 == 2 ? 0.0 : 1.0, bld::divergence::forward_kl,
                                             t % 2 ? 1.0 : 1.0 / 1.7, std::log(1e-12)};
            const double scale = 0.25;
            const auto ref = bld::math::slot_loss(bld::math::host_lanes{}, z.data(), prm.w_div != 0 ? p.data() : nullptr,
                                                  prm.w_ce != 0 ? y : -1, prm, scale, gr.data());
            const auto got = fast(z.data(), prm.w_div != 0 ? p.data() : nullptr, prm.w_ce != 0 ? y : -1, prm, scale, gs.data());
            REQUIRE(got.ok);
            CHECK(std::abs(got.value - ref.value) <= 1e-12 * std::abs(ref.value) + 1e-14);
            double worst = 0; // float outputs: at most one float rounding apart
            for (int a = 0; a < A; ++a)
                worst = std::max(worst, static_cast<double>(std::abs(gs[a] - gr[a])) / (std::abs(gr[a]) + 1e-30));
            CHECK(worst <= 1.2e-7);
            ++cases;
        }
        // Bad inputs are refused (the driver then asks the reference for the error).
        z[7] = std::numeric_limits<float>::quiet_NaN();
        CHECK(!fast(z.data(), p.data(), 3, {0.1, 1.0, bld::divergence::forward_kl, 1.0, 0.0}, 1.0, gs.data()).ok);
        z[7] = -std::numeric_limits<float>::infinity();
        CHECK(!fast(z.data(), p.data(), 3, {0.1, 1.0, bld::divergence::forward_kl, 1.0, 0.0}, 1.0, gs.data()).ok);
        z[7] = 0.0f;
        p[9] = -1e-3f;
        CHECK(!fast(z.data(), p.data(), 3, {0.1, 1.0, bld::divergence::forward_kl, 1.0, 0.0}, 1.0, gs.data()).ok);
        p[9] = 0.0f;
    }
    CHECK(cases > 0);
}

TEST_CASE("bld_loss: float logits (SIMD kernel) agree with double logits (reference); errors unchanged") {
    std::mt19937 rng(19);
    std::normal_distribution<float> g(0.0f, 2.0f);
    const std::int64_t T = 13, K = 5, A = 260;
    std::vector<float> zf(T * K * A), pf(T * K * A), gf(T * K * A);
    std::vector<double> zd(zf.size()), pd(pf.size()), gd(gf.size());
    std::vector<std::int64_t> yb(T * K);
    std::vector<std::uint8_t> mask(T * K);
    for (std::size_t i = 0; i < zf.size(); ++i) zd[i] = zf[i] = g(rng);
    for (std::int64_t s = 0; s < T * K; ++s) {
        double sum = 0;
        for (std::int64_t a = 0; a < A; ++a) sum += pd[s * A + a] = std::exp(static_cast<double>(g(rng)));
        for (std::int64_t a = 0; a < A; ++a) pf[s * A + a] = static_cast<float>(pd[s * A + a] /= sum);
        for (std::int64_t a = 0; a < A; ++a) pd[s * A + a] = pf[s * A + a];
        yb[s] = (s * 37) % 260;
        mask[s] = s % 7 != 3;
    }
    const bld::tensor_view<const float, 3> lf(zf.data(), {T, K, A});
    const bld::tensor_view<const double, 3> ld(zd.data(), {T, K, A});
    const bld::tensor_view<const float, 3> tf(pf.data(), {T, K, A});
    const bld::tensor_view<const double, 3> td(pd.data(), {T, K, A});
    const bld::tensor_view<const std::int64_t, 2> yv(yb.data(), {T, K});
    const bld::tensor_view<const std::uint8_t, 2> mv(mask.data(), {T, K});
    for (double tau : {1.0, 2.0}) {
        bld::bld_loss_options o;
        o.temperature = tau;
        const auto rf = bld::bld_loss(lf, tf, yv, mv, o, bld::tensor_view<float, 3>(gf.data(), {T, K, A}));
        const auto rd = bld::bld_loss(ld, td, yv, mv, o, bld::tensor_view<double, 3>(gd.data(), {T, K, A}));
        CHECK(std::abs(rf.value - rd.value) <= 1e-12 * std::abs(rd.value));
        double worst = 0;
        for (std::size_t i = 0; i < gf.size(); ++i) worst = std::max(worst, std::abs(static_cast<double>(gf[i]) - gd[i]));
        CHECK(worst <= 1e-7);
    }
    zf[4 * K * A + 1 * A + 11] = std::numeric_limits<float>::quiet_NaN(); // slot 21: active
    CHECK(message_of([&] { (void)bld::bld_loss(lf, tf, yv, mv); }).find("token 4, head 1, byte 11: logit is NaN") != std::string::npos);
}
