// The math the CUDA kernels share with the CPU (bld/math/, and the plans of
// bld/backends/cuda/kernel_plan.hpp and bld/projection/canonical_plan.hpp), run on the host and
// held against the scalar reference (bld/backends/reference/row_pass.hpp, brute-force sums). The kernels' own arithmetic is replayed here: the row pass's chunk plan,
// online max and lazily rescaled bins, the keyed runs of a 256-thread block (its scan done
// sequentially), the split of a row over several blocks; the per-slot loss and per-position
// canonical bodies with one lane, and with 32 lanes emulated by 32 threads whose reductions
// are the warp's xor butterfly — so the device's partitioning is exercised without a GPU.
#include <bld/backends/cuda/kernel_plan.hpp>
#include <bld/projection/canonical_plan.hpp>
#include <bld/loss/byte_loss.hpp>
#include <bld/projection/canonical_path.hpp>
#include <bld/projection/covering.hpp>
#include <bld/backends/reference/row_pass.hpp>
#include <bld/math/shared_math.hpp>
#include <bld/vocab/trie.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <barrier>
#include <bit>
#include <climits>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace {

namespace math = bld::math;
namespace kp = bld::cuda::detail;  // the CUDA kernels' launch shape and tables
constexpr double inf = std::numeric_limits<double>::infinity();

// ---- vocabularies ---------------------------------------------------------------------------

/// A random vocabulary: every single byte of a small alphabet, random strings (many sharing
/// first bytes), duplicates, gaps (absent ids) and special tokens.
bld::vocabulary random_vocab(std::mt19937& rng, int n_tokens, int n_specials, const std::string& alphabet) {
    std::vector<bld::token_entry> e;
    std::int64_t id = 0;
    for (char c : alphabet) e.push_back({id++, std::string(1, c), bld::token_kind::text, ""});
    std::uniform_int_distribution<int> len(1, 6), ch(0, static_cast<int>(alphabet.size()) - 1), coin(0, 19);
    std::vector<std::string> made;
    for (int i = 0; i < n_tokens; ++i) {
        std::string s;
        if (coin(rng) == 0 && !made.empty()) {
            s = made[rng() % made.size()];  // duplicate bytes, another id
        } else {
            const int L = len(rng);
            for (int k = 0; k < L; ++k) s += alphabet[static_cast<std::size_t>(ch(rng) * ch(rng) / static_cast<int>(alphabet.size()))];
        }
        made.push_back(s);
        if (coin(rng) == 1) ++id;  // a gap
        e.push_back({id++, s, bld::token_kind::text, ""});
        if (n_specials > 0 && coin(rng) == 2) {
            e.push_back({id++, {}, bld::token_kind::special, "<s" + std::to_string(id) + ">"});
            --n_specials;
        }
    }
    e.push_back({id++, {}, bld::token_kind::special, "<eos>"});
    return bld::vocabulary::from_entries(std::move(e), "random");
}

std::string byte_alphabet(int n) {
    std::string s;
    for (int i = 0; i < n; ++i) s += static_cast<char>((i * 37 + 11) & 0xFF);  // high bytes too
    return s;
}

/// Random logits [rows, n]: N(0, spread), some −inf, a few spikes.
std::vector<float> random_rows(std::mt19937& rng, std::size_t rows, std::size_t n, double spread) {
    std::normal_distribution<double> g(0.0, spread);
    std::uniform_int_distribution<int> coin(0, 99);
    std::vector<float> z(rows * n);
    for (auto& v : z) {
        const int c = coin(rng);
        v = c == 0 ? -std::numeric_limits<float>::infinity() : static_cast<float>(g(rng) + (c == 1 ? 25.0 : 0.0));
    }
    return z;
}

bool close_rel(double got, double want, double rel, double abs_floor) {
    return std::abs(got - want) <= rel * std::abs(want) + abs_floor;
}

// ---- the keyed runs of one block, replayed sequentially ----------------------------------------

/// One tile of the block's keyed accumulation (block_keyed_accumulate): Threads × Items items,
/// non-decreasing keys; the exclusive scan is done in thread order.
/// `next` (optional) gives each thread's next key as the kernel computes it; by default, the key
/// of the next thread's first item.
template <int Threads, int Items, class Flush>
void replay_block_tile(const std::vector<std::uint32_t>& keys, const std::vector<double>& x, Flush&& flush,
                       const std::vector<std::uint32_t>& next = {}) {
    std::vector<kp::thread_run_state> st(Threads);
    for (int t = 0; t < Threads; ++t) {
        std::uint32_t k[Items];
        double v[Items];
        for (int i = 0; i < Items; ++i) {
            k[i] = keys[static_cast<std::size_t>(t * Items + i)];
            v[i] = x[static_cast<std::size_t>(t * Items + i)];
        }
        st[static_cast<std::size_t>(t)] = kp::thread_runs<Items>(k, v, flush);
    }
    kp::keyed_sum carry{};  // the scan's initial value
    for (int t = 0; t < Threads; ++t) {
        const std::uint32_t nk = !next.empty()   ? next[static_cast<std::size_t>(t)]
                                 : t + 1 < Threads ? keys[static_cast<std::size_t>((t + 1) * Items)]
                                                   : kp::no_key;
        kp::finish_runs(st[static_cast<std::size_t>(t)], carry, nk, flush);
        carry = kp::keyed_sum_op{}(carry, st[static_cast<std::size_t>(t)].last);
    }
}

// ---- the row kernel, replayed ------------------------------------------------------------------

struct replayed_row {
    double max = 0, log_normalizer = 0;
    std::array<double, 257> root{};
    int bad = INT_MAX;
};

/// row_pass_kernel (+ row_combine_kernel when blocks > 1) for one row, on the host.
template <class T>
replayed_row replay_row_pass(const kp::row_pass_plan& plan, const T* row, std::uint32_t blocks) {
    constexpr int NT = kp::block_threads, IT = kp::thread_items, C = kp::chunk_columns;
    const std::uint32_t cpb = (plan.chunks + blocks - 1) / blocks;
    const std::uint32_t B = (plan.chunks + cpb - 1) / cpb;
    std::vector<double> pmax(B), pbins(static_cast<std::size_t>(B) * 257);
    int bad = INT_MAX;
    for (std::uint32_t b = 0; b < B; ++b) {
        std::array<double, 257> acc{};
        std::array<float, 257> bin_max{};
        bin_max.fill(-std::numeric_limits<float>::infinity());
        float m = -std::numeric_limits<float>::infinity();
        const std::uint32_t c0 = b * cpb, c1 = std::min(plan.chunks, c0 + cpb);
        for (std::uint32_t c = c0; c < c1; ++c) {
            std::vector<float> stage(C);
            for (int k = 0; k < C; ++k) {
                const std::size_t col = static_cast<std::size_t>(c) * C + static_cast<std::size_t>(k);
                const float z = col < plan.columns ? math::logit_to_float(row[col]) : -std::numeric_limits<float>::infinity();
                if (col < plan.columns && math::is_bad_logit(z)) bad = std::min(bad, static_cast<int>(col));
                stage[static_cast<std::size_t>(k)] = z;
            }
            std::vector<std::uint32_t> keys(C);
            std::vector<float> v(C);
            float cm = -std::numeric_limits<float>::infinity();
            for (int k = 0; k < C; ++k) {
                const std::uint32_t e = plan.entries[static_cast<std::size_t>(c) * C + static_cast<std::size_t>(k)];
                keys[static_cast<std::size_t>(k)] = kp::entry_bin(e);
                v[static_cast<std::size_t>(k)] = stage[kp::entry_column(e)];
                if (keys[static_cast<std::size_t>(k)] != kp::ignored_key) cm = math::max32(cm, v[static_cast<std::size_t>(k)]);
            }
            m = math::max32(m, cm);
            std::vector<double> x(C);
            for (int k = 0; k < C; ++k)
                x[static_cast<std::size_t>(k)] = keys[static_cast<std::size_t>(k)] != kp::ignored_key
                                                     ? static_cast<double>(math::exp_diff(v[static_cast<std::size_t>(k)], m))
                                                     : 0.0;
            std::map<std::uint32_t, int> writers;
            replay_block_tile<NT, IT>(keys, x, [&](std::uint32_t key, double s) {
                if (key == kp::ignored_key) return;
                ++writers[key];
                math::add_to_bin(acc[key], bin_max[key], s, m);
            });
            for (const auto& [key, n] : writers) REQUIRE(n == 1);  // one writer per bin per chunk
        }
        for (int a = 0; a < 257; ++a) acc[static_cast<std::size_t>(a)] *= math::rescale_factor(bin_max[static_cast<std::size_t>(a)], m);
        pmax[b] = m;
        std::copy(acc.begin(), acc.end(), pbins.begin() + static_cast<std::ptrdiff_t>(b) * 257);
    }
    replayed_row out;
    out.bad = bad;
    double m = -inf;
    for (double v : pmax) m = std::max(m, v);
    std::array<double, 257> acc{};
    for (int a = 0; a < 257; ++a)
        acc[static_cast<std::size_t>(a)] = B == 1 ? pbins[static_cast<std::size_t>(a)]
                                                  : math::combine_bin(pmax.data(), pbins.data(), static_cast<int>(B), a, m);
    const double total = math::root_total(acc.data());
    out.max = m;
    out.log_normalizer = std::log(total);
    for (int a = 0; a < 257; ++a) out.root[static_cast<std::size_t>(a)] = acc[static_cast<std::size_t>(a)] / total;
    return out;
}

/// Row-pass tolerance (documented in bld/backends/cuda/row_pass.cuh): root masses 2e-6 relative.
void check_row(const replayed_row& got, const bld::row_summary& want, const std::string& what) {
    INFO(what);
    CHECK(got.bad == INT_MAX);
    CHECK(got.max == want.max_logit);
    CHECK(std::abs(got.log_normalizer - want.log_normalizer) <= 1e-6);
    double worst = 0;
    for (std::size_t a = 0; a < 257; ++a) {
        const double err = std::abs(got.root[a] - want.root[a]) / std::max(want.root[a], 1e-300);
        if (want.root[a] > 1e-30 || got.root[a] > 1e-30) worst = std::max(worst, err);
    }
    CHECK(worst <= 2e-6);
}

// ---- the node-sum kernel, replayed -------------------------------------------------------------

/// node_sums_kernel for one (row, node): node max, then fp64 sums per segment in tiles.
bld::node_sums replay_node_sums(const bld::byte_trie& trie, std::span<const float> row, bld::byte_trie::node_index n,
                                double& shift) {
    constexpr int NT = kp::block_threads, IT = kp::thread_items, C = kp::chunk_columns;
    const auto& nd = trie.node(n);
    const auto kids = trie.children(n);
    const auto nc = static_cast<std::uint32_t>(kids.size());
    std::vector<std::uint32_t> bounds(nc + 2);
    bounds[0] = nd.lo;
    for (std::uint32_t c = 0; c < nc; ++c) bounds[c + 1] = kids[c].lo;
    bounds[nc + 1] = nd.hi;
    const auto order = trie.order();
    float mx = -std::numeric_limits<float>::infinity();
    for (auto k = nd.lo; k < nd.hi; ++k) mx = math::max32(mx, row[order[k]]);
    shift = mx;
    std::array<double, 257> acc{};
    if (mx > -std::numeric_limits<float>::infinity()) {
        for (std::uint32_t tile = nd.lo; tile < nd.hi; tile += C) {
            std::vector<std::uint32_t> keys(C), next(NT);
            std::vector<double> x(C);
            for (int t = 0; t < NT; ++t) {
                const std::uint32_t first = tile + static_cast<std::uint32_t>(t * IT);
                std::uint32_t key[IT];
                next[static_cast<std::size_t>(t)] = kp::node_thread_keys<IT>(bounds.data(), nc, first, t + 1 == NT, key);
                for (int i = 0; i < IT; ++i) {
                    const std::uint32_t k = first + static_cast<std::uint32_t>(i);
                    keys[static_cast<std::size_t>(t * IT + i)] = key[i];
                    x[static_cast<std::size_t>(t * IT + i)] =
                        k < nd.hi ? math::exp64(static_cast<double>(row[order[k]]) - shift) : 0.0;
                }
            }
            std::map<std::uint32_t, int> writers;
            replay_block_tile<NT, IT>(keys, x, [&](std::uint32_t key, double v) {
                if (key == kp::ignored_key) return;
                ++writers[key];
                acc[key] += v;
            }, next);
            for (const auto& [key, w] : writers) REQUIRE(w == 1);
        }
    }
    bld::node_sums out;
    out.end = acc[0];
    for (std::uint32_t c = 0; c < nc; ++c) out.child[kids[c].byte] = acc[1 + c];
    return out;
}

// ---- 32 lanes on 32 threads ----------------------------------------------------------------------

/// The warp's lanes policy, emulated: 32 host threads run the same body; each reduction
/// publishes the lanes' values and computes the xor butterfly of bld::cuda::warp_lanes, so the
/// result (and its rounding) is the device's.
struct warp_emulation {
    std::barrier<>* sync;
    std::array<double, 32>* dvals;
    std::array<int, 32>* ivals;
    int id;

    static constexpr int width = 32;
    int lane() const noexcept { return id; }

    template <class T, class Op>
    static T butterfly(std::array<T, 32> v, int lane, Op op) {
        for (int o = 16; o > 0; o >>= 1) {
            std::array<T, 32> w{};
            for (int l = 0; l < 32; ++l) w[static_cast<std::size_t>(l)] = op(v[static_cast<std::size_t>(l)], v[static_cast<std::size_t>(l ^ o)]);
            v = w;
        }
        return v[static_cast<std::size_t>(lane)];
    }
    double reduce_d(double x, double (*op)(double, double)) const {
        (*dvals)[static_cast<std::size_t>(id)] = x;
        sync->arrive_and_wait();
        const double r = butterfly(*dvals, id, op);
        sync->arrive_and_wait();
        return r;
    }
    double sum(double x) const {
        return reduce_d(x, [](double a, double b) { return a + b; });
    }
    double max(double x) const {
        return reduce_d(x, [](double a, double b) { return math::max64(a, b); });
    }
    int min(int x) const {
        (*ivals)[static_cast<std::size_t>(id)] = x;
        sync->arrive_and_wait();
        const int r = butterfly(*ivals, id, [](int a, int b) { return math::min_int(a, b); });
        sync->arrive_and_wait();
        return r;
    }
};

/// Runs body(lanes) on 32 threads; returns lane 0's result.
template <class Body>
auto run_warp(Body body) {
    std::barrier<> sync(32);
    std::array<double, 32> d{};
    std::array<int, 32> i{};
    using R = decltype(body(std::declval<const warp_emulation&>()));
    std::array<R, 32> results{};
    std::vector<std::thread> threads;
    for (int l = 0; l < 32; ++l)
        threads.emplace_back([&, l] {
            const warp_emulation lanes{&sync, &d, &i, l};
            results[static_cast<std::size_t>(l)] = body(lanes);
        });
    for (auto& t : threads) t.join();
    return results[0];
}

}  // namespace

// =================================================================================================

TEST_CASE("shared math: bf16 widening equals bld::bf16's, for all 65536 patterns") {
    for (std::uint32_t b = 0; b < 65536; ++b) {
        const auto h = bld::bf16::from_bits(static_cast<std::uint16_t>(b));
        const float want = static_cast<float>(h);
        const float got = math::logit_to_float(h);
        REQUIRE(std::bit_cast<std::uint32_t>(got) == std::bit_cast<std::uint32_t>(want));
    }
}

TEST_CASE("shared math: exp_diff is exp(z - m) to fp32 accuracy, the subtraction's rounding compensated") {
    std::mt19937 rng(7);
    std::uniform_real_distribution<double> mu(-60.0, 60.0), d(0.0, 103.0);
    double worst = 0, worst_plain = 0;
    for (int k = 0; k < 200000; ++k) {
        const auto m = static_cast<float>(mu(rng));
        const auto z = static_cast<float>(static_cast<double>(m) - d(rng));
        const double want = std::exp(static_cast<double>(z) - static_cast<double>(m));
        if (want < 1e-37) continue;  // fp32 subnormal range
        worst = std::max(worst, std::abs(math::exp_diff(z, m) - want) / want);
        worst_plain = std::max(worst_plain, std::abs(std::exp(z - m) - want) / want);
    }
    INFO("worst relative error " << worst << " (uncompensated: " << worst_plain << ")");
    CHECK(worst <= 3e-7);
    CHECK(worst_plain > worst);  // the compensation is what buys the accuracy
    CHECK(math::exp_diff(-std::numeric_limits<float>::infinity(), 3.0f) == 0.0f);
    CHECK(math::exp_diff(-200.0f, 0.0f) == 0.0f);
    CHECK(math::exp_diff(1.5f, 1.5f) == 1.0f);
    CHECK(math::is_bad_logit(std::numeric_limits<float>::quiet_NaN()));
    CHECK(math::is_bad_logit(std::numeric_limits<float>::infinity()));
    CHECK_FALSE(math::is_bad_logit(-std::numeric_limits<float>::infinity()));
    CHECK_FALSE(math::is_bad_logit(3.0f));
    CHECK(math::is_finite(1.0));
    CHECK_FALSE(math::is_finite(inf));
    CHECK_FALSE(math::is_finite(-inf));
    CHECK_FALSE(math::is_finite(std::numeric_limits<double>::quiet_NaN()));
}

TEST_CASE("shared math: log-sum-exp combine of (max, sum) pairs equals the direct sum in any grouping") {
    std::mt19937 rng(11);
    std::normal_distribution<double> g(0.0, 8.0);
    for (int trial = 0; trial < 200; ++trial) {
        std::vector<double> z(1 + rng() % 40);
        for (auto& v : z) v = rng() % 10 == 0 ? -inf : g(rng);
        double m = -inf;
        for (double v : z) m = std::max(m, v);
        double direct = 0;
        for (double v : z) direct += std::exp(v - m);
        // Random groups, combined left to right.
        math::max_sum acc;
        std::size_t i = 0;
        while (i < z.size()) {
            const std::size_t n = 1 + rng() % 5;
            math::max_sum part;
            for (std::size_t k = i; k < std::min(z.size(), i + n); ++k) part.max = std::max(part.max, z[k]);
            for (std::size_t k = i; k < std::min(z.size(), i + n); ++k)
                if (part.max > -inf) part.sum += std::exp(z[k] - part.max);
            acc = math::combine(acc, part);
            i += n;
        }
        CHECK(acc.max == m);
        if (m > -inf) CHECK(close_rel(acc.sum, direct, 1e-14, 0));
        else CHECK(acc.sum == 0.0);
    }
    CHECK(math::rescale_factor(-inf, 2.0) == 0.0);
    CHECK(math::rescale_factor(2.0, 2.0) == 1.0);
    CHECK(math::rescale_factor(-inf, -inf) == 1.0);
}

TEST_CASE("shared math: keyed runs of a block give each segment's sum exactly once") {
    std::mt19937 rng(3);
    std::uniform_real_distribution<double> u(0.0, 1.0);
    for (int trial = 0; trial < 300; ++trial) {
        constexpr int NT = 16, IT = 8, N = NT * IT;
        // Sorted keys with segments of every length (1 .. > several threads), ignored at the end.
        std::vector<std::uint32_t> keys;
        std::uint32_t k = static_cast<std::uint32_t>(rng() % 3);
        while (static_cast<int>(keys.size()) < N) {
            const int len = trial % 3 == 0 ? 1 + static_cast<int>(rng() % 3) : 1 + static_cast<int>(rng() % 40);
            for (int i = 0; i < len && static_cast<int>(keys.size()) < N; ++i) keys.push_back(k);
            k += 1 + static_cast<std::uint32_t>(rng() % 2);
        }
        const int ignored = static_cast<int>(rng() % 20);
        for (int i = N - ignored; i < N; ++i) keys[static_cast<std::size_t>(i)] = kp::ignored_key;
        std::vector<double> x(N);
        for (auto& v : x) v = u(rng);
        std::map<std::uint32_t, double> want;
        for (int i = 0; i < N; ++i) want[keys[static_cast<std::size_t>(i)]] += x[static_cast<std::size_t>(i)];
        std::map<std::uint32_t, double> got;
        std::map<std::uint32_t, int> writers;
        replay_block_tile<NT, IT>(keys, x, [&](std::uint32_t key, double s) {
            got[key] += s;
            ++writers[key];
        });
        for (const auto& [key, s] : want) {
            INFO("trial " << trial << " key " << key);
            REQUIRE(writers[key] == 1);
            CHECK(close_rel(got[key], s, 1e-14, 0));
        }
        CHECK(got.size() == want.size());
    }
}

TEST_CASE("row pass plan: the replayed row kernel equals summarize_row (float and bf16, 1 and several blocks)") {
    std::mt19937 rng(19);
    struct setup {
        int tokens, specials, letters;
        std::size_t pad;
    };
    for (const setup s : {setup{40, 2, 5, 0}, setup{5000, 8, 64, 3}, setup{9000, 3, 256, 100}}) {
        const bld::byte_trie trie(random_vocab(rng, s.tokens, s.specials, byte_alphabet(s.letters)));
        const auto bins = bld::root_bins(trie);
        const auto plan = kp::row_pass_plan::build(bins);
        const std::size_t V = trie.vocab().size(), N = V + s.pad;
        REQUIRE(plan.columns == V);
        REQUIRE(plan.chunks == (V + kp::chunk_columns - 1) / kp::chunk_columns);
        // Every column < V appears once per chunk, with its bin; sorted by bin within a chunk.
        for (std::uint32_t c = 0; c < plan.chunks; ++c) {
            std::vector<int> seen(kp::chunk_columns, 0);
            for (int k = 0; k < kp::chunk_columns; ++k) {
                const auto e = plan.entries[static_cast<std::size_t>(c) * kp::chunk_columns + static_cast<std::size_t>(k)];
                ++seen[kp::entry_column(e)];
                const std::size_t col = static_cast<std::size_t>(c) * kp::chunk_columns + kp::entry_column(e);
                const std::uint32_t want = col < V && bins[col] != bld::ignored_bin ? bins[col] : kp::ignored_key;
                REQUIRE(kp::entry_bin(e) == want);
                if (k > 0) REQUIRE(kp::entry_bin(plan.entries[static_cast<std::size_t>(c) * kp::chunk_columns + static_cast<std::size_t>(k) - 1]) <= want);
            }
            for (int n : seen) REQUIRE(n == 1);
        }
        for (double spread : {1.0, 6.0}) {
            const auto rows = random_rows(rng, 3, N, spread);
            for (std::size_t r = 0; r < 3; ++r) {
                const std::span<const float> row(rows.data() + r * N, N);
                const auto want = bld::reference::summarize_row(trie, bins, row, r);
                for (std::uint32_t B : {1u, 2u, 3u, 64u}) {
                    check_row(replay_row_pass(plan, row.data(), B), want,
                              "V=" + std::to_string(V) + " spread " + std::to_string(spread) + " blocks " + std::to_string(B));
                }
                std::vector<bld::bf16> h(N);
                for (std::size_t i = 0; i < N; ++i) h[i] = bld::bf16(row[i]);
                const auto want_h = bld::reference::summarize_row(trie, bins, std::span<const bld::bf16>(h), r);
                check_row(replay_row_pass(plan, h.data(), 2), want_h, "bf16");
            }
        }
        // Bad logits: the first NaN / +inf column, whatever its bin (absent ids too).
        auto rows = random_rows(rng, 1, N, 1.0);
        rows[V / 2] = std::numeric_limits<float>::quiet_NaN();
        rows[V / 3] = std::numeric_limits<float>::infinity();
        CHECK(replay_row_pass(plan, rows.data(), 1).bad == static_cast<int>(V / 3));
        CHECK(replay_row_pass(plan, rows.data(), 5).bad == static_cast<int>(V / 3));
        if (s.pad > 0) {  // padding columns are never read
            auto ok = random_rows(rng, 1, N, 1.0);
            ok[V] = std::numeric_limits<float>::quiet_NaN();
            CHECK(replay_row_pass(plan, ok.data(), 1).bad == INT_MAX);
        }
    }
    CHECK_THROWS_AS(kp::row_pass_plan::build(std::vector<std::uint16_t>{1, 300}), bld::value_error);
}

TEST_CASE("node sums: the replayed node kernel equals node_max_logit + sum_node on every node") {
    std::mt19937 rng(29);
    // Few letters and many tokens: nodes larger than one tile of 2048 positions, empty end
    // segments, single-child nodes, leaves.
    for (const auto& [tokens, letters] : {std::pair{3000, 3}, std::pair{12000, 40}}) {
        const bld::byte_trie trie(random_vocab(rng, tokens, 2, byte_alphabet(letters)));
        const auto rows = random_rows(rng, 1, trie.vocab().size(), 3.0);
        const std::span<const float> row(rows.data(), rows.size());
        std::size_t big = 0, bad_shift = 0, bad_sum = 0;
        for (std::uint32_t n = 0; n < trie.node_count(); ++n) {
            double shift = 0;
            const auto got = replay_node_sums(trie, row, n, shift);
            const double want_shift = bld::reference::node_max_logit(trie, row, n);
            bad_shift += shift != want_shift;
            bld::node_sums want;
            if (want_shift > -inf) bld::reference::sum_node(trie, row, n, want_shift, want);
            bad_sum += !close_rel(got.end, want.end, 1e-13, 0);
            for (std::size_t a = 0; a < 256; ++a) bad_sum += !close_rel(got.child[a], want.child[a], 1e-13, 0);
            if (trie.node(n).hi - trie.node(n).lo > static_cast<std::uint32_t>(kp::chunk_columns)) ++big;
        }
        INFO(trie.node_count() << " nodes");
        CHECK(bad_shift == 0);
        CHECK(bad_sum == 0);
        CHECK(big > 0);  // some nodes span several tiles
    }
}

TEST_CASE("shared math: slot_loss with 32 emulated lanes equals slot_loss with one lane") {
    std::mt19937 rng(5);
    std::normal_distribution<double> g(0.0, 2.5);
    std::uniform_real_distribution<double> u(0.0, 1.0);
    constexpr int A = static_cast<int>(bld::alphabet_size);
    int compared = 0;
    for (int trial = 0; trial < 40; ++trial) {
        std::vector<double> z(A), p(A);
        double sum = 0;
        for (int a = 0; a < A; ++a) {
            z[static_cast<std::size_t>(a)] = g(rng);
            p[static_cast<std::size_t>(a)] = u(rng) < 0.6 ? 0.0 : std::exp(g(rng));
            sum += p[static_cast<std::size_t>(a)];
        }
        if (trial == 1 || sum == 0) {
            std::fill(p.begin(), p.end(), 0.0);
            p[static_cast<std::size_t>(trial % A)] = 1.0;
            sum = 1;
        }
        for (auto& v : p) v /= sum;
        const int y = static_cast<int>(rng() % 257);
        for (auto kind : {bld::divergence::forward_kl, bld::divergence::reverse_kl, bld::divergence::jsd, bld::divergence::tvd}) {
            for (double tau : {1.0, 0.7}) {
                for (auto w : {std::array<double, 2>{1.0, 0.0}, std::array<double, 2>{0.1, 1.0}, std::array<double, 2>{0.0, 1.0}}) {
                    const math::slot_params prm{w[0], w[1], kind, 1.0 / tau, std::log(1e-12)};
                    const double* pp = w[0] != 0 ? p.data() : nullptr;
                    const int yy = w[1] != 0 ? y : -1;
                    std::vector<double> gw(A), g32(A);
                    const auto want = math::slot_loss(math::host_lanes{}, z.data(), pp, yy, prm, 0.5, gw.data());
                    INFO(bld::to_string(kind) << " tau " << tau << " w " << w[0] << "," << w[1]);
                    REQUIRE(want.status == math::slot_status::ok);
                    if (trial < 4) {  // 32 threads per call: a few trials suffice
                        const auto r32 = run_warp([&](const warp_emulation& lanes) {
                            return math::slot_loss(lanes, z.data(), pp, yy, prm, 0.5, g32.data());
                        });
                        REQUIRE(r32.status == math::slot_status::ok);
                        CHECK(close_rel(r32.value, want.value, 1e-13, 1e-300));
                        // The butterfly sums in another order. A gradient entry q_a (c_a − Σ q c)
                        // cancels where c_a ≈ Σ q c (a saturated JSD / TVD, a one-hot teacher), so
                        // its error is bounded by q_a's scale, not by its own size.
                        double zm = -inf, s = 0;
                        for (double v : z) zm = std::max(zm, v);
                        for (double v : z) s += std::exp((v - zm) / tau);
                        for (int a = 0; a < A; ++a) {
                            const double qa = std::exp((z[static_cast<std::size_t>(a)] - zm) / tau) / s;
                            CHECK(close_rel(g32[static_cast<std::size_t>(a)], gw[static_cast<std::size_t>(a)], 1e-12, 1e-13 * qa));
                        }
                    }
                    ++compared;
                }
            }
        }
        // float logits and targets: the same math on the widened inputs, gradients rounded once.
        std::vector<float> zf(z.begin(), z.end()), pf(p.begin(), p.end()), gf(A);
        const std::vector<double> zw(zf.begin(), zf.end()), pw(pf.begin(), pf.end());
        std::vector<double> gfw(A);
        const math::slot_params prm{0.1, 1.0, bld::divergence::forward_kl, 1.0, std::log(1e-12)};
        const auto want = math::slot_loss(math::host_lanes{}, zw.data(), pw.data(), y, prm, 1.0, gfw.data());
        const auto got = math::slot_loss(math::host_lanes{}, zf.data(), pf.data(), y, prm, 1.0, gf.data());
        CHECK(got.value == want.value);
        for (int a = 0; a < A; ++a) CHECK(gf[static_cast<std::size_t>(a)] == static_cast<float>(gfw[static_cast<std::size_t>(a)]));
    }
    CHECK(compared == 40 * 4 * 2 * 3);

    // Bad inputs: the first bad entry, logits before targets, for one lane and for 32.
    std::vector<double> z(A, 0.5), p(A, 1.0 / A), grad(A);
    z[200] = std::numeric_limits<double>::quiet_NaN();
    z[77] = -inf;
    p[3] = -0.1;
    const math::slot_params prm{1.0, 1.0, bld::divergence::forward_kl, 1.0, 0.0};
    const auto r1 = math::slot_loss(math::host_lanes{}, z.data(), p.data(), 4, prm, 1.0, grad.data());
    CHECK(r1.status == math::slot_status::nonfinite_logit);
    CHECK(r1.index == 77);
    const auto r32 = run_warp([&](const warp_emulation& lanes) {
        return math::slot_loss(lanes, z.data(), p.data(), 4, prm, 1.0, grad.data());
    });
    CHECK(r32.status == math::slot_status::nonfinite_logit);
    CHECK(r32.index == 77);
    z[77] = z[200] = 0.0;
    const auto r2 = run_warp([&](const warp_emulation& lanes) {
        return math::slot_loss(lanes, z.data(), p.data(), 4, prm, 1.0, grad.data());
    });
    CHECK(r2.status == math::slot_status::bad_target);
    CHECK(r2.index == 3);
}

namespace {

/// canonical_path replayed from the plan: CPU node sums (node max shift, as dense_rows) and CPU
/// row summaries, assembled by canonical_position_body with the given lanes.
template <class RunPosition>
bld::byte_distributions replay_canonical(const bld::byte_trie& trie, const std::vector<float>& rows, std::size_t N,
                                         const bld::canonical_plan& plan, RunPosition run_position) {
    const auto bins = bld::root_bins(trie);
    std::vector<bld::row_summary> sums;
    for (std::size_t j = 0; j < plan.tokens; ++j)
        sums.push_back(bld::reference::summarize_row(trie, bins, std::span<const float>(rows.data() + j * N, N), j));
    std::vector<double> end(plan.requests.size()), child(plan.requests.size() * 256);
    for (std::size_t q = 0; q < plan.requests.size(); ++q) {
        const std::span<const float> row(rows.data() + plan.requests[q].row * N, N);
        const double shift = bld::reference::node_max_logit(trie, row, plan.requests[q].node);
        bld::node_sums ns;
        if (shift > -inf) bld::reference::sum_node(trie, row, plan.requests[q].node, shift, ns);
        end[q] = ns.end;
        std::copy(ns.child.begin(), ns.child.end(), child.begin() + static_cast<std::ptrdiff_t>(q * 256));
    }
    const std::size_t L = plan.bytes.size();
    bld::byte_distributions out;
    out.resize(L + 1);
    for (std::size_t i = 0; i < plan.positions.size(); ++i) {
        const auto& p = plan.positions[i];
        double carry = 0;
        if (p.prev_request >= 0) {
            const auto pr = static_cast<std::size_t>(p.prev_request);
            carry = math::boundary_carry({end[pr], child.data() + pr * 256}, sums[p.prev_next_row].root.data(), p.prev_byte);
        }
        const math::node_sums_ref ns{p.kind == math::position_kind::root ? 0.0 : end[p.request],
                                     child.data() + static_cast<std::size_t>(p.request) * 256};
        const math::position_status st = run_position(p.kind, ns, sums[p.next_row].root.data(), carry, out.at(i).data(), &out.dropped[i]);
        REQUIRE(st == math::position_status::ok);
    }
    out.positions = L;
    out.probs.resize(L * bld::alphabet_size);
    out.dropped.resize(L);
    return out;
}

}  // namespace

TEST_CASE("canonical plan: positions replayed with the shared body equal canonical_path") {
    std::mt19937 rng(23);
    for (int trial = 0; trial < 6; ++trial) {
        const bld::byte_trie trie(random_vocab(rng, 300, 2, byte_alphabet(6)));
        const auto& v = trie.vocab();
        std::vector<std::int64_t> text_ids;
        for (std::size_t id = 0; id < v.size(); ++id)
            if (v.kinds()[id] == bld::token_kind::text) text_ids.push_back(static_cast<std::int64_t>(id));
        std::vector<std::int64_t> ids;
        for (int k = 0; k < 25; ++k) ids.push_back(text_ids[rng() % text_ids.size()]);
        const std::size_t N = v.size() + 5;
        const auto rows = random_rows(rng, ids.size(), N, 2.0);
        const auto plan = bld::canonical_plan::build(trie, ids);
        const bld::tensor_view<const float, 2> view(rows.data(), {static_cast<std::int64_t>(ids.size()), static_cast<std::int64_t>(N)});
        const auto want = bld::reference::canonical_path(trie, view, ids);
        REQUIRE(plan.bytes.size() == want.positions);
        REQUIRE(plan.positions.size() == want.positions + 1);
        const auto one = replay_canonical(trie, rows, N, plan, [](auto kind, const auto& ns, const double* root, double carry,
                                                                 double* out, double* dropped) {
            return math::canonical_position_body(math::host_lanes{}, kind, ns, root, carry, out, dropped);
        });
        double worst = 0;
        for (std::size_t k = 0; k < want.probs.size(); ++k) worst = std::max(worst, std::abs(one.probs[k] - want.probs[k]));
        for (std::size_t i = 0; i < want.positions; ++i) worst = std::max(worst, std::abs(one.dropped[i] - want.dropped[i]));
        CHECK(worst <= 1e-15);
        if (trial < 2) {
            const auto w32 = replay_canonical(trie, rows, N, plan, [](auto kind, const auto& ns, const double* root,
                                                                     double carry, double* out, double* dropped) {
                return run_warp([&](const warp_emulation& lanes) {
                    return math::canonical_position_body(lanes, kind, ns, root, carry, out, dropped);
                });
            });
            double w = 0;
            for (std::size_t k = 0; k < want.probs.size(); ++k) w = std::max(w, std::abs(w32.probs[k] - want.probs[k]));
            for (std::size_t i = 0; i < want.positions; ++i) w = std::max(w, std::abs(w32.dropped[i] - want.dropped[i]));
            CHECK(w <= 1e-14);
        }
    }
    // Zero-mass prefix: the plan's check position catches the last token, as the CPU does.
    const bld::byte_trie trie(random_vocab(rng, 50, 1, byte_alphabet(4)));
    double end = 0;
    std::array<double, 256> child{};
    const math::node_sums_ref ns{end, child.data()};
    std::array<double, 260> out{};
    double dropped = 0;
    CHECK(math::canonical_position_body(math::host_lanes{}, math::position_kind::check, ns, nullptr, 0.0, out.data(),
                                        &dropped) == math::position_status::zero_prefix);
    CHECK_THROWS_AS((void)bld::canonical_plan::build(trie, std::vector<std::int64_t>{100000}), bld::value_error);
}
