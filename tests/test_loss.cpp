// Tests of bld/loss/byte_loss.hpp: values against plain formulas written here, analytic gradients
// against central finite differences (fp64, 1e-6 relative), zero-mass teachers, every error;
// the SIMD slot kernel (registered by <bld/cpu.hpp>) against the reference formula.
#include <bld/cpu.hpp>
#include <bld/loss/byte_loss.hpp>

#include <doctest/doctest.h>

#include "dynamic_tensor.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "error_text.hpp"

namespace {

constexpr auto A = static_cast<std::int64_t>(bld::alphabet_size);

/// A small batch: T tokens, K heads, logits, teacher targets, true bytes and a mask.
struct batch {
    std::int64_t T = 0, K = 0;
    std::vector<double> logits;   // [T, K, 260]
    std::vector<double> targets;  // [T, K, 260]
    std::vector<std::int64_t> bytes;  // [T, K]
    std::vector<std::uint8_t> mask;   // [T, K]

    auto z() { return bld::shaped(logits, std::array<std::int64_t, 3>{T, K, A}); }
    auto p() const { return bld::shaped(targets, std::array<std::int64_t, 3>{T, K, A}); }
    auto y() const { return bld::shaped(bytes, std::array<std::int64_t, 2>{T, K}); }
    auto m() const { return bld::shaped(mask, std::array<std::int64_t, 2>{T, K}); }
};

/// Random logits (spread ~2), teacher distributions with many exact zeros (one slot one-hot),
/// true bytes (−100 at masked slots), and a mask that switches off one whole token and some
/// single heads.
batch make_batch(std::int64_t T, std::int64_t K, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> normal(0.0, 2.0);
    std::uniform_real_distribution<double> unit(0.0, 1.0);
    batch b;
    b.T = T;
    b.K = K;
    b.logits.resize(static_cast<std::size_t>(T * K * A));
    b.targets.resize(b.logits.size());
    b.bytes.resize(static_cast<std::size_t>(T * K));
    b.mask.resize(b.bytes.size());
    for (auto& v : b.logits) v = normal(rng);
    for (std::int64_t s = 0; s < T * K; ++s) {
        double* p = &b.targets[static_cast<std::size_t>(s * A)];
        double sum = 0.0;
        for (std::int64_t a = 0; a < A; ++a) {
            p[a] = unit(rng) < 0.6 ? 0.0 : std::exp(normal(rng));  // 60% zero mass
            sum += p[a];
        }
        if (s == 1 || sum == 0.0) {  // a one-hot teacher
            std::fill(p, p + A, 0.0);
            p[s % A] = 1.0;
            sum = 1.0;
        }
        for (std::int64_t a = 0; a < A; ++a) p[a] /= sum;
        b.bytes[static_cast<std::size_t>(s)] = static_cast<std::int64_t>(rng() % 257);
        b.mask[static_cast<std::size_t>(s)] = unit(rng) < 0.8 ? 1 : 0;
    }
    b.mask[0] = 1;
    if (T > 2) {  // token 2 takes no part
        for (std::int64_t k = 0; k < K; ++k) b.mask[static_cast<std::size_t>(2 * K + k)] = 0;
    }
    for (std::int64_t s = 0; s < T * K; ++s) {
        if (b.mask[static_cast<std::size_t>(s)] == 0) b.bytes[static_cast<std::size_t>(s)] = -100;
    }
    return b;
}

// ---- the plain reference formulas --------------------------------------------------------

enum class term { forward_kl, reverse_kl, jsd, tvd, ce, bld };

struct config {
    term what = term::forward_kl;
    double tau = 1.0;
    bld::loss_reduction reduction = bld::loss_reduction::eq5;
    double lambda_byte = 1.0, lambda_kl = 0.1;
};

std::string name_of(const config& c) {
    static const char* names[] = {"forward_kl", "reverse_kl", "jsd", "tvd", "ce", "bld"};
    return std::string(names[static_cast<int>(c.what)]) + " tau=" + std::to_string(c.tau) + " " +
           std::string(bld::to_string(c.reduction));
}

/// softmax(z / tau), written the textbook way (the logits here are small: no overflow).
std::vector<double> softmax(const double* z, double tau) {
    std::vector<double> q(A);
    double s = 0.0;
    for (std::int64_t a = 0; a < A; ++a) s += std::exp(z[a] / tau);
    for (std::int64_t a = 0; a < A; ++a) q[static_cast<std::size_t>(a)] = std::exp(z[a] / tau) / s;
    return q;
}

double divergence_ref(term kind, const double* p, const std::vector<double>& q) {
    double v = 0.0;
    for (std::int64_t a = 0; a < A; ++a) {
        const double pa = p[a], qa = q[static_cast<std::size_t>(a)];
        switch (kind) {
            case term::forward_kl: if (pa > 0) v += pa * std::log(pa / qa); break;
            case term::reverse_kl: v += qa * std::log(qa / std::max(pa, 1e-12)); break;
            case term::jsd: {
                const double m = 0.5 * (pa + qa);
                if (pa > 0) v += 0.5 * pa * std::log(pa / m);
                v += 0.5 * qa * std::log(qa / m);
                break;
            }
            case term::tvd: v += 0.5 * std::fabs(pa - qa); break;
            default: break;
        }
    }
    return v;
}

double slot_ref(const config& c, const double* z, const double* p, std::int64_t y) {
    const auto ce = [&] { return -std::log(softmax(z, 1.0)[static_cast<std::size_t>(y)]); };
    switch (c.what) {
        case term::ce: return ce();
        case term::bld:
            return c.lambda_byte * ce() + c.lambda_kl * divergence_ref(term::forward_kl, p, softmax(z, c.tau));
        default: return divergence_ref(c.what, p, softmax(z, c.tau));
    }
}

/// The reduced loss from per-slot values, by the definitions in loss.hpp.
double reduce_ref(const batch& b, const std::vector<double>& v, bld::loss_reduction r) {
    double sum = 0.0;
    std::int64_t slots = 0, tokens = 0;
    for (std::int64_t t = 0; t < b.T; ++t) {
        bool any = false;
        for (std::int64_t k = 0; k < b.K; ++k) {
            if (b.mask[static_cast<std::size_t>(t * b.K + k)] == 0) continue;
            sum += v[static_cast<std::size_t>(t * b.K + k)];
            ++slots;
            any = true;
        }
        tokens += any ? 1 : 0;
    }
    switch (r) {
        case bld::loss_reduction::eq5: return tokens ? sum / static_cast<double>(tokens) : 0.0;
        case bld::loss_reduction::slot_mean: return slots ? sum / static_cast<double>(slots) : 0.0;
        case bld::loss_reduction::none: return sum;
    }
    return 0.0;
}

double loss_ref(const config& c, const batch& b) {
    std::vector<double> v(static_cast<std::size_t>(b.T * b.K), 0.0);
    for (std::int64_t s = 0; s < b.T * b.K; ++s) {
        if (b.mask[static_cast<std::size_t>(s)] == 0) continue;
        v[static_cast<std::size_t>(s)] = slot_ref(c, &b.logits[static_cast<std::size_t>(s * A)],
                                                  &b.targets[static_cast<std::size_t>(s * A)],
                                                  b.bytes[static_cast<std::size_t>(s)]);
    }
    return reduce_ref(b, v, c.reduction);
}

bld::divergence divergence_of(term t) {
    switch (t) {
        case term::reverse_kl: return bld::divergence::reverse_kl;
        case term::jsd: return bld::divergence::jsd;
        case term::tvd: return bld::divergence::tvd;
        default: return bld::divergence::forward_kl;
    }
}

/// Calls the library for a config; writes grad / per-slot values when given.
template <class Grad = const bld::no_tensor_t&, class PerSlot = const bld::no_tensor_t&>
bld::byte_loss_result run(const config& c, batch& b, Grad&& grad = bld::no_tensor,
                          PerSlot&& per_slot = bld::no_tensor) {
    switch (c.what) {
        case term::ce:
            return bld::byte_cross_entropy(b.z(), b.y(), b.m(), {.reduction = c.reduction}, grad, per_slot);
        case term::bld:
            return bld::bld_loss(b.z(), b.p(), b.y(), b.m(),
                                 {.lambda_byte = c.lambda_byte, .lambda_kl = c.lambda_kl,
                                  .temperature = c.tau, .reduction = c.reduction},
                                 grad, per_slot);
        default:
            return bld::byte_loss(b.z(), b.p(), b.m(),
                                  {.kind = divergence_of(c.what), .temperature = c.tau,
                                   .reduction = c.reduction},
                                  grad, per_slot);
    }
}

std::vector<config> all_configs() {
    std::vector<config> out;
    for (auto r : {bld::loss_reduction::eq5, bld::loss_reduction::slot_mean, bld::loss_reduction::none}) {
        for (auto w : {term::forward_kl, term::reverse_kl, term::jsd, term::tvd, term::bld}) {
            for (double tau : {1.0, 0.7, 2.5}) out.push_back({w, tau, r});
        }
        out.push_back({term::ce, 1.0, r});
    }
    return out;
}

using bld_test::contains;
using bld_test::message_of;

}  // namespace

TEST_SUITE("loss") {

TEST_CASE("values equal the plain formulas for every kind, reduction and temperature") {
    batch b = make_batch(4, 3, 11);
    for (const auto& c : all_configs()) {
        CAPTURE(name_of(c));
        const auto r = run(c, b);
        CHECK(r.value == doctest::Approx(loss_ref(c, b)).epsilon(1e-12));
        CHECK(std::isfinite(r.value));
        CHECK(r.active_tokens == 3);
    }
}

TEST_CASE("per-slot values and the reduction definitions") {
    batch b = make_batch(4, 3, 5);
    std::vector<double> per(static_cast<std::size_t>(b.T * b.K), -1.0);
    const config c{term::jsd, 1.3, bld::loss_reduction::none};
    const auto r = run(c, b, bld::no_tensor, bld::shaped(per, std::array<std::int64_t, 2>{b.T, b.K}));
    double sum = 0.0;
    std::int64_t slots = 0;
    for (std::int64_t s = 0; s < b.T * b.K; ++s) {
        const auto i = static_cast<std::size_t>(s);
        if (b.mask[i] == 0) {
            CHECK(per[i] == 0.0);
            continue;
        }
        CHECK(per[i] == doctest::Approx(slot_ref(c, &b.logits[i * A], &b.targets[i * A], b.bytes[i])).epsilon(1e-12));
        sum += per[i];
        ++slots;
    }
    CHECK(r.value == doctest::Approx(sum).epsilon(1e-14));
    CHECK(r.active_slots == slots);

    const auto eq5 = run({term::jsd, 1.3, bld::loss_reduction::eq5}, b);
    const auto mean = run({term::jsd, 1.3, bld::loss_reduction::slot_mean}, b);
    CHECK(eq5.value == doctest::Approx(sum / static_cast<double>(eq5.active_tokens)).epsilon(1e-14));
    CHECK(mean.value == doctest::Approx(sum / static_cast<double>(slots)).epsilon(1e-14));
}

TEST_CASE("analytic gradients agree with central finite differences (fp64, 1e-6 relative)") {
    // Checked: every entry of two active slots (one with a one-hot teacher), plus a spread of
    // entries over the others; inactive slots must get exactly zero.
    batch b = make_batch(3, 2, 23);
    const std::int64_t n = b.T * b.K * A;
    std::vector<std::int64_t> probe;
    for (std::int64_t a = 0; a < A; ++a) probe.push_back(0 * A + a);  // slot 0
    for (std::int64_t a = 0; a < A; ++a) probe.push_back(1 * A + a);  // slot 1: one-hot teacher
    for (std::int64_t i = 2 * A + 3; i < n; i += 37) probe.push_back(i);
    std::mt19937_64 rng(3);
    std::uniform_real_distribution<double> unit(0.5, 1.5);
    std::vector<double> w(static_cast<std::size_t>(b.T * b.K));  // upstream weights for `none`
    for (auto& x : w) x = unit(rng);

    for (const auto& c : all_configs()) {
        CAPTURE(name_of(c));
        std::vector<double> grad(static_cast<std::size_t>(n), 99.0);
        run(c, b, bld::shaped(grad, std::array<std::int64_t, 3>{b.T, b.K, A}));
        // The scalar whose gradient is checked: the loss, or Σ w_tk v_tk for `none`.
        const auto f = [&]() {
            if (c.reduction != bld::loss_reduction::none) return run(c, b).value;
            std::vector<double> per(w.size());
            run(c, b, bld::no_tensor, bld::shaped(per, std::array<std::int64_t, 2>{b.T, b.K}));
            double s = 0.0;
            for (std::size_t i = 0; i < w.size(); ++i) s += w[i] * per[i];
            return s;
        };
        const auto effective = [&](std::int64_t i) {
            const double g = grad[static_cast<std::size_t>(i)];
            return c.reduction == bld::loss_reduction::none ? g * w[static_cast<std::size_t>(i / A)] : g;
        };
        double gmax = 0.0;
        for (std::int64_t i = 0; i < n; ++i) gmax = std::max(gmax, std::fabs(effective(i)));
        REQUIRE(gmax > 0.0);

        int bad = 0;
        for (const std::int64_t i : probe) {
            const auto ui = static_cast<std::size_t>(i);
            const double z0 = b.logits[ui];
            const double h = 1e-5;
            b.logits[ui] = z0 + h;
            const double fp = f();
            b.logits[ui] = z0 - h;
            const double fm = f();
            b.logits[ui] = z0;
            const double fd = (fp - fm) / (2 * h);
            const double g = effective(i);
            if (std::fabs(fd - g) > 1e-6 * (gmax + std::fabs(g))) {
                if (++bad <= 3) MESSAGE("entry " << i << ": analytic " << g << ", finite difference " << fd);
            }
        }
        CHECK(bad == 0);
        for (std::int64_t s = 0; s < b.T * b.K; ++s) {
            if (b.mask[static_cast<std::size_t>(s)] != 0) continue;
            for (std::int64_t a = 0; a < A; ++a) REQUIRE(grad[static_cast<std::size_t>(s * A + a)] == 0.0);
        }
    }
}

TEST_CASE("the gradient of each divergence sums to zero over a slot (softmax invariance)") {
    batch b = make_batch(2, 2, 8);
    std::fill(b.mask.begin(), b.mask.end(), std::uint8_t{1});
    for (auto& y : b.bytes) y = y < 0 ? 42 : y;
    for (const auto& c : all_configs()) {
        CAPTURE(name_of(c));
        std::vector<double> grad(b.logits.size());
        run(c, b, bld::shaped(grad, std::array<std::int64_t, 3>{b.T, b.K, A}));
        for (std::int64_t s = 0; s < b.T * b.K; ++s) {
            double sum = 0.0, amax = 0.0;
            for (std::int64_t a = 0; a < A; ++a) {
                sum += grad[static_cast<std::size_t>(s * A + a)];
                amax = std::max(amax, std::fabs(grad[static_cast<std::size_t>(s * A + a)]));
            }
            CHECK(std::fabs(sum) <= 1e-12 * std::max(1.0, amax));
        }
    }
}

TEST_CASE("zero teacher mass and extreme logits: finite values and gradients, no NaN") {
    batch b = make_batch(2, 2, 4);
    std::fill(b.mask.begin(), b.mask.end(), std::uint8_t{1});
    for (auto& y : b.bytes) y = y < 0 ? 42 : y;
    for (std::size_t i = 0; i < b.logits.size(); ++i) b.logits[i] = 0.0;
    b.logits[7] = 800.0;   // slot 0: every other q underflows to exactly 0 in double
    b.logits[A + 9] = -800.0;
    for (std::int64_t a = 0; a < A; ++a) b.targets[static_cast<std::size_t>(a)] = a < 2 ? 0.5 : 0.0;
    for (const auto& c : all_configs()) {
        CAPTURE(name_of(c));
        std::vector<double> grad(b.logits.size());
        const auto r = run(c, b, bld::shaped(grad, std::array<std::int64_t, 3>{b.T, b.K, A}));
        CHECK(std::isfinite(r.value));
        CHECK(std::all_of(grad.begin(), grad.end(), [](double g) { return std::isfinite(g); }));
    }
    // Where the teacher is one-hot and the student agrees, forward KL is 0 and JSD, TVD too.
    batch e = make_batch(1, 1, 2);
    std::fill(e.targets.begin(), e.targets.end(), 0.0);
    std::fill(e.logits.begin(), e.logits.end(), -700.0);
    e.targets[5] = 1.0;
    e.logits[5] = 700.0;
    for (auto w : {term::forward_kl, term::jsd, term::tvd}) {
        CHECK(run({w, 1.0, bld::loss_reduction::eq5}, e).value == doctest::Approx(0.0));
    }
}

TEST_CASE("float32 logits and targets agree with float64") {
    batch b = make_batch(4, 3, 17);
    std::vector<float> zf(b.logits.begin(), b.logits.end());
    std::vector<float> pf(b.targets.begin(), b.targets.end());
    // Round the fp64 batch to the same values so only the arithmetic differs.
    std::copy(zf.begin(), zf.end(), b.logits.begin());
    std::vector<float> gf(zf.size());
    std::vector<double> gd(zf.size());
    const std::array<std::int64_t, 3> ext{b.T, b.K, A};
    for (auto kind : {bld::divergence::forward_kl, bld::divergence::reverse_kl, bld::divergence::jsd,
                      bld::divergence::tvd}) {
        const bld::byte_loss_options o{.kind = kind, .temperature = 1.5};
        const auto rf = bld::byte_loss(bld::shaped(zf, ext), bld::shaped(pf, ext), b.m(), o, bld::shaped(gf, ext));
        const auto rd = bld::byte_loss(b.z(), bld::shaped(pf, ext), b.m(), o, bld::shaped(gd, ext));
        CHECK(rf.value == doctest::Approx(rd.value).epsilon(1e-12));  // accumulation is fp64 either way
        double worst = 0.0;
        for (std::size_t i = 0; i < gd.size(); ++i) worst = std::max(worst, std::fabs(gf[i] - gd[i]));
        CHECK(worst < 1e-6);
    }
    // Mixed: float logits, double targets; bool mask.
    std::vector<bool> tmp(b.mask.begin(), b.mask.end());
    auto bool_mask = std::make_unique<bool[]>(tmp.size());
    for (std::size_t i = 0; i < tmp.size(); ++i) bool_mask[i] = tmp[i];
    const bld::tensor_view<const bool, 2> bm(bool_mask.get(), {b.T, b.K});
    const auto r1 = bld::byte_loss(bld::shaped(zf, ext), b.p(), bm);
    const auto r2 = bld::byte_loss(bld::shaped(zf, ext), b.p(), b.m());
    CHECK(r1.value == r2.value);
}

TEST_CASE("the registered SIMD slot kernel agrees with the reference formula through the loss driver") {
    // <bld/cpu.hpp> registers the kernel; without it every slot would take the reference and
    // this comparison would hold trivially.
    REQUIRE(bld::simd::detail::loss_slot_registered);
    auto& registry = bld::detail::loss_kernel_registry::forward_kl_float;
    const auto resolve = registry.load();
    const bool have_resolver = resolve != nullptr;
    REQUIRE(have_resolver);
    const bool have_kernel = resolve() != nullptr;
    if (bld::simd::default_level() != bld::simd::level::scalar) REQUIRE(have_kernel);
    batch b = make_batch(5, 4, 29);
    std::vector<float> zf(b.logits.begin(), b.logits.end()), pf(b.targets.begin(), b.targets.end());
    const std::array<std::int64_t, 3> ext{b.T, b.K, A};
    for (double tau : {1.0, 0.6}) {
        const bld::bld_loss_options o{.lambda_byte = 0.7, .lambda_kl = 0.4, .temperature = tau};
        std::vector<float> gs(zf.size()), gr(zf.size()), ss(static_cast<std::size_t>(b.T * b.K)), sr(ss.size());
        const auto rs = bld::bld_loss(bld::shaped(zf, ext), bld::shaped(pf, ext), b.y(), b.m(), o, bld::shaped(gs, ext),
                                      bld::shaped(ss, std::array<std::int64_t, 2>{b.T, b.K}));
        registry.store(nullptr);  // the reference for every slot
        const auto rr = bld::bld_loss(bld::shaped(zf, ext), bld::shaped(pf, ext), b.y(), b.m(), o, bld::shaped(gr, ext),
                                      bld::shaped(sr, std::array<std::int64_t, 2>{b.T, b.K}));
        registry.store(resolve);
        CHECK(std::abs(rs.value - rr.value) <= 1e-12 * std::abs(rr.value));
        double worst = 0;  // float outputs: at most one float rounding apart
        for (std::size_t i = 0; i < gs.size(); ++i)
            worst = std::max(worst, static_cast<double>(std::abs(gs[i] - gr[i])) / (std::abs(gr[i]) + 1e-30));
        CHECK(worst <= 1.2e-7);
        for (std::size_t i = 0; i < ss.size(); ++i) CHECK(std::abs(ss[i] - sr[i]) <= 1.2e-7 * std::abs(sr[i]));
    }
}

TEST_CASE("combined BLD term is the weighted sum; defaults are lambda_b = 1, lambda_KL = 0.1") {
    batch b = make_batch(3, 4, 9);
    const auto kl = bld::byte_loss(b.z(), b.p(), b.m());
    const auto ce = bld::byte_cross_entropy(b.z(), b.y(), b.m());
    const auto both = bld::bld_loss(b.z(), b.p(), b.y(), b.m());
    CHECK(both.value == doctest::Approx(ce.value + 0.1 * kl.value).epsilon(1e-13));
    const auto weighted = bld::bld_loss(b.z(), b.p(), b.y(), b.m(),
                                        {.lambda_byte = 0.25, .lambda_kl = 2.0, .kind = bld::divergence::tvd});
    const auto tvd = bld::byte_loss(b.z(), b.p(), b.m(), {.kind = bld::divergence::tvd});
    CHECK(weighted.value == doctest::Approx(0.25 * ce.value + 2.0 * tvd.value).epsilon(1e-13));
    // With lambda_KL = 0 the targets are not read: NaN there is harmless.
    batch nan_targets = b;
    std::fill(nan_targets.targets.begin(), nan_targets.targets.end(), std::numeric_limits<double>::quiet_NaN());
    const auto only_ce = bld::bld_loss(nan_targets.z(), nan_targets.p(), nan_targets.y(), nan_targets.m(),
                                       {.lambda_kl = 0.0});
    CHECK(only_ce.value == doctest::Approx(ce.value).epsilon(1e-14));
}

TEST_CASE("masks: inactive rows are never read; nothing active gives 0; no mask means all") {
    batch b = make_batch(3, 2, 31);
    batch poisoned = b;
    for (std::int64_t s = 0; s < b.T * b.K; ++s) {
        if (b.mask[static_cast<std::size_t>(s)] != 0) continue;
        for (std::int64_t a = 0; a < A; ++a) {
            poisoned.logits[static_cast<std::size_t>(s * A + a)] = std::numeric_limits<double>::quiet_NaN();
            poisoned.targets[static_cast<std::size_t>(s * A + a)] = -1.0;
        }
    }
    for (const auto& c : all_configs()) {
        CHECK(run(c, poisoned).value == run(c, b).value);
    }
    batch off = b;
    std::fill(off.mask.begin(), off.mask.end(), std::uint8_t{0});
    std::vector<double> grad(b.logits.size(), 5.0);
    const auto r = bld::bld_loss(off.z(), off.p(), off.y(), off.m(), {},
                                 bld::shaped(grad, std::array<std::int64_t, 3>{b.T, b.K, A}));
    CHECK(r.value == 0.0);
    CHECK(r.active_slots == 0);
    CHECK(r.active_tokens == 0);
    CHECK(std::all_of(grad.begin(), grad.end(), [](double g) { return g == 0.0; }));

    batch all = b;
    std::fill(all.mask.begin(), all.mask.end(), std::uint8_t{1});
    CHECK(bld::byte_loss(b.z(), b.p(), bld::no_tensor).value == bld::byte_loss(all.z(), all.p(), all.m()).value);

    // No tokens at all.
    std::vector<double> none;
    const std::array<std::int64_t, 3> empty3{0, 10, A};
    const auto e = bld::byte_loss(bld::shaped(none, empty3), bld::shaped(none, empty3), bld::no_tensor);
    CHECK(e.value == 0.0);
}

TEST_CASE("deterministic, and the gradient may be written over the logits") {
    batch b = make_batch(4, 3, 41);
    const std::array<std::int64_t, 3> ext{b.T, b.K, A};
    std::vector<double> g1(b.logits.size()), g2(b.logits.size());
    const bld::bld_loss_options o{.kind = bld::divergence::jsd, .temperature = 0.8};
    const auto r1 = bld::bld_loss(b.z(), b.p(), b.y(), b.m(), o, bld::shaped(g1, ext));
    const auto r2 = bld::bld_loss(b.z(), b.p(), b.y(), b.m(), o, bld::shaped(g2, ext));
    CHECK(std::memcmp(&r1.value, &r2.value, sizeof(double)) == 0);
    CHECK(std::memcmp(g1.data(), g2.data(), g1.size() * sizeof(double)) == 0);
    const auto r3 = bld::bld_loss(b.z(), b.p(), b.y(), b.m(), o, b.z());  // in place
    CHECK(r3.value == r1.value);
    CHECK(std::memcmp(g1.data(), b.logits.data(), g1.size() * sizeof(double)) == 0);
}

TEST_CASE("bad input: shapes, dtypes, K, NaN, bytes and options") {
    batch b = make_batch(3, 2, 1);
    const std::array<std::int64_t, 3> ext{b.T, b.K, A};

    SUBCASE("logits shape") {
        auto msg = message_of<bld::shape_error>([&] {
            (void)bld::byte_loss(bld_test::erase(bld::shaped(b.logits, std::array<std::int64_t, 2>{b.T * b.K, A})), b.p(), b.m());
        });
        CHECK(contains(msg, "`logits`"));
        CHECK(contains(msg, "[T, K, 260]"));
        msg = message_of<bld::shape_error>([&] {
            (void)bld::byte_loss(bld::shaped(b.logits, std::array<std::int64_t, 3>{b.T, 2 * b.K, 130}), b.p(), b.m());
        });
        CHECK(contains(msg, "260-entry byte alphabet"));
    }
    SUBCASE("K outside 1..260") {
        std::vector<double> big(static_cast<std::size_t>(261 * A));
        const std::array<std::int64_t, 3> e{1, 261, A};
        auto msg = message_of<bld::shape_error>([&] {
            (void)bld::byte_loss(bld::shaped(big, e), bld::shaped(big, e), bld::no_tensor);
        });
        CHECK(contains(msg, "1 <= K <= 260"));
        CHECK(contains(msg, "K = 261"));
        std::vector<double> zero;
        const std::array<std::int64_t, 3> e0{3, 0, A};
        msg = message_of<bld::shape_error>([&] {
            (void)bld::byte_loss(bld::shaped(zero, e0), bld::shaped(zero, e0), bld::no_tensor);
        });
        CHECK(contains(msg, "K = 0"));
        std::vector<double> ok(static_cast<std::size_t>(260 * A), 0.0);
        std::vector<double> okp(ok.size(), 1.0 / A);
        const std::array<std::int64_t, 3> e260{1, 260, A};
        CHECK_NOTHROW((void)bld::byte_loss(bld::shaped(ok, e260), bld::shaped(okp, e260), bld::no_tensor));
    }
    SUBCASE("targets of another shape or dtype") {
        auto msg = message_of<bld::shape_error>([&] {
            (void)bld::byte_loss(b.z(), bld::shaped(b.targets, std::array<std::int64_t, 3>{b.K, b.T, A}), b.m());
        });
        CHECK(contains(msg, "`targets`"));
        CHECK(contains(msg, "expected float64 [3, 2, 260]"));
        std::vector<std::int32_t> ints(b.targets.size());
        msg = message_of<bld::shape_error>([&] { (void)bld::byte_loss(b.z(), bld_test::erase(bld::shaped(ints, ext)), b.m()); });
        CHECK(contains(msg, "expected float32 or float64, got int32"));
    }
    SUBCASE("mask of the wrong shape or dtype") {
        std::vector<std::uint8_t> m(static_cast<std::size_t>(b.T * (b.K + 1)), 1);
        auto msg = message_of<bld::shape_error>([&] {
            (void)bld::byte_loss(b.z(), b.p(), bld::shaped(m, std::array<std::int64_t, 2>{b.T, b.K + 1}));
        });
        CHECK(contains(msg, "`mask`"));
        CHECK(contains(msg, "dimension 1 is 3, expected 2"));
        std::vector<float> fm(static_cast<std::size_t>(b.T * b.K));
        msg = message_of<bld::shape_error>([&] {
            (void)bld::byte_loss(b.z(), b.p(), bld_test::erase(bld::shaped(fm, std::array<std::int64_t, 2>{b.T, b.K})));
        });
        CHECK(contains(msg, "uint8 or bool"));
    }
    SUBCASE("bfloat16 logits; gradient of another dtype") {
        std::vector<bld::bf16> h(b.logits.size());
        auto msg = message_of<bld::shape_error>([&] { (void)bld::byte_loss(bld_test::erase(bld::shaped(h, ext)), b.p(), b.m()); });
        CHECK(contains(msg, "got bfloat16"));
        std::vector<float> gf(b.logits.size());
        msg = message_of<bld::shape_error>([&] {
            (void)bld::byte_loss(b.z(), b.p(), b.m(), {}, bld::shaped(gf, ext));
        });
        CHECK(contains(msg, "`grad`"));
        CHECK(contains(msg, "wrong dtype"));
    }
    SUBCASE("NaN or infinite logits name the slot") {
        const std::size_t slot = static_cast<std::size_t>(1 * b.K + 1);
        b.mask[slot] = 1;
        b.logits[slot * A + 5] = std::numeric_limits<double>::quiet_NaN();
        auto msg = message_of<bld::value_error>([&] { (void)bld::byte_loss(b.z(), b.p(), b.m()); });
        CHECK(contains(msg, "token 1, head 1, byte 5"));
        CHECK(contains(msg, "NaN"));
        b.logits[slot * A + 5] = -std::numeric_limits<double>::infinity();
        msg = message_of<bld::value_error>([&] { (void)bld::byte_cross_entropy(b.z(), b.y(), b.m()); });
        CHECK(contains(msg, "-inf"));
        try {
            (void)bld::byte_loss(b.z(), b.p(), b.m());
        } catch (const bld::value_error& e) {
            CHECK(e.location() == "token 1, head 1, byte 5");
        }
    }
    SUBCASE("bad teacher probabilities and true bytes") {
        b.mask[0] = 1;
        b.targets[3] = -0.25;
        auto msg = message_of<bld::value_error>([&] { (void)bld::byte_loss(b.z(), b.p(), b.m()); });
        CHECK(contains(msg, "token 0, head 0, byte 3"));
        b.targets[3] = 0.0;
        b.bytes[0] = 260;
        msg = message_of<bld::value_error>([&] { (void)bld::byte_cross_entropy(b.z(), b.y(), b.m()); });
        CHECK(contains(msg, "true byte 260 is outside 0..259"));
        std::vector<std::uint8_t> yb(b.bytes.size());
        msg = message_of<bld::shape_error>([&] {
            (void)bld::byte_cross_entropy(b.z(), bld_test::erase(bld::shaped(yb, std::array<std::int64_t, 2>{b.T, b.K})), b.m());
        });
        CHECK(contains(msg, "int32 or int64"));
    }
    SUBCASE("options") {
        CHECK_THROWS_AS((void)bld::byte_loss(b.z(), b.p(), b.m(), {.temperature = 0.0}), bld::value_error);
        CHECK_THROWS_AS((void)bld::byte_loss(b.z(), b.p(), b.m(), {.temperature = std::nan("")}), bld::value_error);
        CHECK_THROWS_AS((void)bld::byte_loss(b.z(), b.p(), b.m(), {.target_floor = 0.0}), bld::value_error);
        CHECK_THROWS_AS((void)bld::bld_loss(b.z(), b.p(), b.y(), b.m(), {.lambda_byte = -1.0}), bld::value_error);
        CHECK(bld::parse_divergence("kl") == bld::divergence::forward_kl);
        CHECK(bld::parse_divergence("jsd") == bld::divergence::jsd);
        CHECK(bld::parse_reduction("slot_mean") == bld::loss_reduction::slot_mean);
        CHECK_THROWS_AS((void)bld::parse_divergence("kld"), bld::value_error);
        CHECK_THROWS_AS((void)bld::parse_reduction("mean"), bld::value_error);
    }
}

}  // TEST_SUITE
