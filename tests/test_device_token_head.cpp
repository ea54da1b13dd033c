// The token head on device rows (bld/projection/device_token_head.hpp), on a machine without a
// GPU: views that say "cuda" are built over host memory, and a host test double stands in for
// the CUDA backend — its sums come from the fp64 reference row pass (reference::summarize_row,
// node_max_logit, sum_node), its backward writes the pieces with detail::piece_gradient. So the
// distiller's device route is exercised end to end — grouping, the host half
// (detail::precomputed_rows, detail::device_head_path_run), piece assembly, clearing — and held
// against the CPU route on the same logits: within 1e-12 of the fp64 reference path (id order),
// within the row pass's tolerance of the fast path (trie order). Bad rows get the CPU route's
// errors, word for word; missing backends, dtypes and gradients that the device route cannot
// serve are refused. The CUDA kernels themselves are held against the CPU by
// tests/cuda/token_head_host.cpp on a GPU (scripts/gpu-check.sh).
#include <bld/cpu.hpp>
#include <doctest/doctest.h>

#include "error_text.hpp"

#include <algorithm>
#include <cmath>
#include <map>
#include <cstdint>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

namespace {

using bld_test::contains;
using bld_test::message_of;

/// The test double: the seam's contract computed on the host over the "device" pointers.
class host_head final : public bld::device_token_head {
public:
    explicit host_head(const bld::byte_trie& trie) : trie_(&trie), bins_(bld::root_bins(trie)) {
        const auto order = trie.order();
        perm_.assign(order.begin(), order.end());
        for (std::size_t i = 0; i < bins_.size(); ++i)
            if (bins_[i] == bld::stop_symbol) perm_.push_back(static_cast<std::uint32_t>(i));
    }
    static inline int sums_calls = 0, backward_calls = 0;
    static inline void* last_stream = nullptr;

    std::vector<bld::device_head_sums> sums(bld::dtype type, const void* rows, std::int64_t row_count, std::int64_t columns,
                                            int, bool trie_ordered, std::span<const bld::device_head_path> paths,
                                            void* stream) override {
        REQUIRE(type == bld::dtype::f32);
        ++sums_calls;
        last_stream = stream;
        const auto* z = static_cast<const float*>(rows);
        const std::size_t V = bins_.size();
        std::vector<bld::device_head_sums> out(paths.size());
        for (std::size_t p = 0; p < paths.size(); ++p) {
            const auto& path = paths[p];
            REQUIRE(path.first_row + path.rows <= row_count);
            auto& s = out[p];
            for (std::int64_t j = 0; j < path.rows; ++j) {
                const float* row = z + (path.first_row + j) * columns;
                // The row in id order (the reference reads ids); the first bad column in the
                // rows' own column order.
                std::vector<float> ids(V, -std::numeric_limits<float>::infinity());
                std::int32_t status = bld::device_head_row_ok;
                double bad = 0.0;
                const std::size_t used = trie_ordered ? perm_.size() : V;
                for (std::size_t c = 0; c < used; ++c) {
                    const float x = row[c];
                    if (status == bld::device_head_row_ok && bld::math::is_bad_logit(x)) {
                        status = static_cast<std::int32_t>(c);
                        bad = x;
                    }
                    ids[trie_ordered ? perm_[c] : c] = x;
                }
                bld::row_summary rs;
                if (status == bld::device_head_row_ok) {
                    try {
                        rs = bld::reference::summarize_row(*trie_, bins_, std::span<const float>(ids), 0);
                    } catch (const bld::value_error&) {
                        status = bld::device_head_row_no_finite_logit;
                    }
                }
                s.rows.push_back(rs);
                s.row_status.push_back(status);
                s.bad_logit.push_back(bad);
                rows_[path.first_row + j] = std::move(ids);
            }
            for (const auto& rq : path.requests) {
                const auto& ids = rows_.at(path.first_row + rq.row);
                const double shift = bld::reference::node_max_logit(*trie_, std::span<const float>(ids), rq.node);
                bld::node_sums ns;
                if (shift > -std::numeric_limits<double>::infinity())
                    bld::reference::sum_node(*trie_, std::span<const float>(ids), rq.node, shift, ns);
                s.node_shift.push_back(shift);
                s.nodes.push_back(ns);
            }
        }
        return out;
    }

    void backward(bld::dtype type, const void* rows, float* grad, std::int64_t row_count, std::int64_t columns, int,
                  bool trie_ordered, const bld::device_head_pieces& pieces, bool clear, void* stream) override {
        REQUIRE(type == bld::dtype::f32);
        ++backward_calls;
        last_stream = stream;
        const auto* z = static_cast<const float*>(rows);
        if (clear) std::fill(grad, grad + row_count * columns, 0.0f);
        for (const auto& r : pieces.rows) {
            REQUIRE(r.row < row_count);
            for (std::uint32_t k = r.first_piece; k < r.first_piece + r.pieces; ++k) {
                const double w = pieces.value[k];
                const double e = bld::detail::piece_exponent(r.shift, w);
                for (std::uint32_t t = pieces.lo[k]; t < pieces.hi[k]; ++t) {
                    const std::size_t col = trie_ordered ? t : perm_[t];
                    grad[r.row * columns + static_cast<std::int64_t>(col)] =
                        bld::detail::piece_gradient(z[r.row * columns + static_cast<std::int64_t>(col)], e, w);
                }
            }
        }
    }

private:
    const bld::byte_trie* trie_;
    std::vector<std::uint16_t> bins_;
    std::vector<std::uint32_t> perm_;
    std::map<std::int64_t, std::vector<float>> rows_;
};

std::unique_ptr<bld::device_token_head> make_host_head(const bld::byte_trie& trie) {
    return std::make_unique<host_head>(trie);
}

/// Registers a factory for the scope and restores the previous one (normally none) after.
struct registered {
    bld::device_token_head_factory previous;
    explicit registered(bld::device_token_head_factory f) : previous(bld::device_token_head_registry::cuda.exchange(f)) {
        host_head::sums_calls = host_head::backward_calls = 0;
    }
    ~registered() { bld::device_token_head_registry::cuda.store(previous); }
};

// Prefix chains, a duplicate of "a", a special token and an absent id (9).
bld::vocabulary toy() {
    using bld::token_kind;
    std::vector<bld::token_entry> e{{0, {}, token_kind::special, "<s>"},
                                    {1, "a", token_kind::text, ""},
                                    {2, "b", token_kind::text, ""},
                                    {3, "c", token_kind::text, ""},
                                    {4, " ", token_kind::text, ""},
                                    {5, "ab", token_kind::text, ""},
                                    {6, "abc", token_kind::text, ""},
                                    {7, "ca", token_kind::text, ""},
                                    {8, " ab", token_kind::text, ""},
                                    {10, "a", token_kind::text, "<0x61>"},
                                    {11, "bca", token_kind::text, ""},
                                    {12, "</s>", token_kind::special, "</s>"}};
    return bld::vocabulary::from_entries(std::move(e), "toy");
}

/// A shifted, padded batch of three sequences over the toy vocabulary on both sides (the teacher
/// spells the same text without the student's mid-text special), its targets, and random student
/// logits with two padding columns.
struct batch_fixture {
    std::shared_ptr<const bld::byte_trie> trie = std::make_shared<const bld::byte_trie>(toy());
    static constexpr std::int64_t B = 3, S = 12, K = 3;
    std::int64_t V = 0;
    std::vector<std::int64_t> sids, slen;
    std::vector<float> logits;
    bld::target_batch targets;

    explicit batch_fixture(const bld::distiller& d) {
        std::mt19937 rng(11);
        const std::vector<std::int64_t> pool{1, 2, 3, 4, 5, 6, 7, 8, 10, 11};
        const std::int64_t Vt = static_cast<std::int64_t>(trie->vocab().size());
        std::vector<std::int64_t> tids(B * S, 0), tlen;
        sids.assign(B * S, 0);
        for (std::int64_t b = 0; b < B; ++b) {
            std::vector<std::int64_t> s{0}, t{0};
            const int n = b == 1 ? 7 : 10 - static_cast<int>(b);
            for (int k = 0; k < n; ++k) {
                const auto id = pool[rng() % pool.size()];
                s.push_back(id);
                t.push_back(id);
                if (b == 1 && k == 3) s.push_back(12); // a special between text tokens: two runs
            }
            std::copy(s.begin(), s.end(), sids.begin() + b * S);
            std::copy(t.begin(), t.end(), tids.begin() + b * S);
            slen.push_back(static_cast<std::int64_t>(s.size()));
            tlen.push_back(static_cast<std::int64_t>(t.size()));
        }
        std::normal_distribution<float> g(0.f, 2.f);
        std::vector<float> tl(static_cast<std::size_t>(B * S * Vt));
        for (auto& x : tl) x = g(rng);
        bld::distill_batch<float> tb;
        tb.teacher_logits = bld::tensor_view<const float, 3>(tl.data(), {B, S, Vt});
        tb.teacher_ids = bld::tensor_view<const std::int64_t, 2>(tids.data(), {B, S});
        tb.student_ids = bld::tensor_view<const std::int64_t, 2>(sids.data(), {B, S});
        tb.ranges.teacher_lengths = tlen;
        tb.ranges.student_lengths = slen;
        targets = d.targets(tb);
        V = static_cast<std::int64_t>(trie->vocab().size()) + 2;
        logits.resize(static_cast<std::size_t>(B * S * V));
        for (auto& x : logits) x = g(rng);
    }

    /// token_head_loss on these logits, the views labelled `dev`; grad prefilled with 5.
    bld::token_head_result run(const bld::distiller& d, bld::device_kind dev, std::vector<float>& grad,
                               const std::vector<float>* other = nullptr) const {
        const auto& z = other ? *other : logits;
        bld::student_batch<float> sb;
        sb.logits = bld::tensor_view<const float, 3>(z.data(), {B, S, V}, dev);
        sb.ids = bld::tensor_view<const std::int64_t, 2>(sids.data(), {B, S});
        sb.ranges.student_lengths = slen;
        grad.assign(z.size(), 5.0f);
        bld::token_head_options o;
        o.kind = bld::divergence::reverse_kl;
        o.temperature = 1.5;
        return d.token_head_loss(sb, targets.view<float>(), o, bld::tensor_view<float, 3>(grad.data(), {B, S, V}, dev));
    }
};

bld::distiller make_distiller(const std::shared_ptr<const bld::byte_trie>& trie, bld::row_order order, bld::projection_path path) {
    bld::distiller_options o;
    o.heads = 3;
    o.shifted = true;
    o.student_order = order;
    o.path = path;
    return bld::distiller(trie, std::make_shared<const bld::vocabulary>(trie->vocab()), o);
}

/// Trie-ordered copies of id-ordered rows [rows, V] (columns past the permutation: padding).
std::vector<float> to_trie_order(const std::vector<float>& z, std::int64_t V, std::span<const std::uint32_t> perm) {
    std::vector<float> out(z.size(), 0.0f);
    for (std::size_t r = 0; r < z.size() / static_cast<std::size_t>(V); ++r)
        for (std::size_t k = 0; k < perm.size(); ++k) out[r * V + k] = z[r * V + perm[k]];
    return out;
}

} // namespace

TEST_CASE("device token head (host double): the distiller's device route equals its CPU route") {
    const registered on(&make_host_head);
    const auto trie = std::make_shared<const bld::byte_trie>(toy());
    SUBCASE("id order, against the fp64 reference path: within 1e-12") {
        const auto d = make_distiller(trie, bld::row_order::id, bld::projection_path::reference);
        const batch_fixture f(d);
        std::vector<float> gc, gd;
        const auto want = f.run(d, bld::device_kind::cpu, gc);
        int stream_tag = 0;
        bld::device_stream_scope scope(&stream_tag);
        const auto got = f.run(d, bld::device_kind::cuda, gd);
        CHECK(host_head::sums_calls == 1);
        CHECK(host_head::backward_calls == 1);
        CHECK(host_head::last_stream == &stream_tag); // the thread's device stream
        CHECK(want.positions > 20);
        CHECK(got.positions == want.positions);
        CHECK(got.value == doctest::Approx(want.value).epsilon(1e-12));
        CHECK(got.unreachable == doctest::Approx(want.unreachable).epsilon(1e-12));
        double gmax = 0.0;
        for (float x : gc) gmax = std::max(gmax, std::abs(static_cast<double>(x)));
        CHECK(gmax > 1e-3);
        for (std::size_t k = 0; k < gc.size(); ++k) {
            INFO("entry ", k);
            CHECK(std::abs(gd[k] - gc[k]) <= 1e-6 * std::abs(gc[k]) + 1e-12 * gmax);
        }
    }
    SUBCASE("trie order, against the fast path: within the row pass's tolerance") {
        const auto d = make_distiller(trie, bld::row_order::trie, bld::projection_path::fast);
        const batch_fixture f(d);
        const auto z = to_trie_order(f.logits, f.V, d.student_permutation());
        std::vector<float> gc, gd;
        const auto want = f.run(d, bld::device_kind::cpu, gc, &z);
        const auto got = f.run(d, bld::device_kind::cuda, gd, &z);
        CHECK(got.positions == want.positions);
        CHECK(got.value == doctest::Approx(want.value).epsilon(1e-5));
        double gmax = 0.0;
        for (float x : gc) gmax = std::max(gmax, std::abs(static_cast<double>(x)));
        for (std::size_t k = 0; k < gc.size(); ++k) {
            INFO("entry ", k);
            CHECK(std::abs(gd[k] - gc[k]) <= 1e-5 * gmax);
        }
    }
    SUBCASE("value only, and the gradient of a batch without a supervised byte is all zero") {
        const auto d = make_distiller(trie, bld::row_order::id, bld::projection_path::reference);
        const batch_fixture f(d);
        bld::student_batch<float> sb;
        sb.logits = bld::tensor_view<const float, 3>(f.logits.data(), {f.B, f.S, f.V}, bld::device_kind::cuda);
        sb.ids = bld::tensor_view<const std::int64_t, 2>(f.sids.data(), {f.B, f.S});
        sb.ranges.student_lengths = f.slen;
        const auto want = d.token_head_loss(
            bld::student_batch<float>{bld::tensor_view<const float, 3>(f.logits.data(), {f.B, f.S, f.V}), sb.ids, sb.ranges},
            f.targets.view<float>(), {}, bld::tensor_view<float, 3>{});
        const auto got = d.token_head_loss(sb, f.targets.view<float>(), {}, bld::tensor_view<float, 3>{});
        CHECK(host_head::backward_calls == 0);
        CHECK(got.value == doctest::Approx(want.value).epsilon(1e-12));
        // Only specials: no run, no sums; the gradient is cleared.
        std::vector<std::int64_t> specials(static_cast<std::size_t>(f.B * f.S), 0);
        sb.ids = bld::tensor_view<const std::int64_t, 2>(specials.data(), {f.B, f.S});
        std::vector<float> g(f.logits.size(), 5.0f);
        const auto none = d.token_head_loss(sb, f.targets.view<float>(), {},
                                            bld::tensor_view<float, 3>(g.data(), {f.B, f.S, f.V}, bld::device_kind::cuda));
        CHECK(none.positions == 0);
        CHECK(none.value == 0.0);
        CHECK(std::all_of(g.begin(), g.end(), [](float x) { return x == 0.0f; }));
    }
}

TEST_CASE("device token head (host double): bad rows get the CPU route's errors; what it cannot serve is refused") {
    const auto trie = std::make_shared<const bld::byte_trie>(toy());
    for (const auto order : {bld::row_order::id, bld::row_order::trie}) {
        const auto d = make_distiller(trie, order, bld::projection_path::fast);
        const batch_fixture f(d);
        auto z = order == bld::row_order::trie ? to_trie_order(f.logits, f.V, d.student_permutation()) : f.logits;
        std::vector<float> g;
        // A NaN in row 3 of sequence 2 (a row its run reads), an +Inf in row 2 of sequence 1.
        z[static_cast<std::size_t>((2 * f.S + 3) * f.V + 4)] = std::numeric_limits<float>::quiet_NaN();
        z[static_cast<std::size_t>((1 * f.S + 2) * f.V + 1)] = std::numeric_limits<float>::infinity();
        const std::string want = message_of<bld::value_error>([&] { (void)f.run(d, bld::device_kind::cpu, g, &z); });
        CHECK(contains(want, "sequence 1"));
        const registered on(&make_host_head);
        const std::string got = message_of<bld::value_error>([&] { (void)f.run(d, bld::device_kind::cuda, g, &z); });
        CHECK(got == want);
        // Every finite logit −inf in a row: "no finite logit", as on the CPU.
        auto w = order == bld::row_order::trie ? to_trie_order(f.logits, f.V, d.student_permutation()) : f.logits;
        std::fill(w.begin() + (2 * f.S + 1) * f.V, w.begin() + (2 * f.S + 2) * f.V, -std::numeric_limits<float>::infinity());
        const std::string want2 = message_of<bld::value_error>([&] { (void)f.run(d, bld::device_kind::cpu, g, &w); });
        CHECK(contains(want2, "no finite logit"));
        CHECK(message_of<bld::value_error>([&] { (void)f.run(d, bld::device_kind::cuda, g, &w); }) == want2);
    }
    const auto d = make_distiller(trie, bld::row_order::id, bld::projection_path::fast);
    const batch_fixture f(d);
    std::vector<float> g;
    const std::string none = message_of<bld::shape_error>([&] { (void)f.run(d, bld::device_kind::cuda, g); });
    CHECK(contains(none, "no CUDA backend"));
    CHECK(contains(none, "<bld/cuda.cuh>"));
    const registered on(&make_host_head);
    bld::student_batch<float> sb;
    sb.logits = bld::tensor_view<const float, 3>(f.logits.data(), {f.B, f.S, f.V}, bld::device_kind::cuda);
    sb.ids = bld::tensor_view<const std::int64_t, 2>(f.sids.data(), {f.B, f.S});
    sb.ranges.student_lengths = f.slen;
    g.assign(f.logits.size(), 0.0f);
    // A gradient on another device than the logits.
    CHECK(contains(message_of<bld::shape_error>([&] {
                       (void)d.token_head_loss(sb, f.targets.view<float>(), {},
                                               bld::tensor_view<float, 3>(g.data(), {f.B, f.S, f.V}));
                   }),
                   "expected the logits' device"));
    // A double gradient (the kernel writes float32).
    std::vector<double> g64(f.logits.size());
    CHECK(contains(message_of<bld::shape_error>([&] {
                       (void)d.token_head_loss(sb, f.targets.view<float>(), {},
                                               bld::tensor_view<double, 3>(g64.data(), {f.B, f.S, f.V}, bld::device_kind::cuda));
                   }),
                   "writes float32 gradients"));
    // float16 logits in CUDA memory.
    std::vector<bld::f16> h(f.logits.size());
    bld::student_batch<bld::f16> hb{bld::tensor_view<const bld::f16, 3>(h.data(), {f.B, f.S, f.V}, bld::device_kind::cuda),
                                    sb.ids, sb.ranges};
    CHECK(contains(message_of<bld::shape_error>([&] {
                       (void)d.token_head_loss(hb, f.targets.view<float>(), {}, bld::tensor_view<float, 3>{});
                   }),
                   "the CUDA token head reads float32 and bfloat16"));
    CHECK(host_head::sums_calls == 0);
}
