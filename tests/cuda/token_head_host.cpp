// distiller::token_head_loss on CUDA student logits, across compilers: compiled by the host C++
// compiler (<bld/cpu.hpp>, no bld CUDA header), linked with dispatch_register.cu (nvcc:
// <bld/cuda.cuh>, which registers the device token head, bld/backends/cuda/token_head.cuh).
// scripts/cuda-compile-check.sh builds and runs it, scripts/gpu-check.sh too:
//  * without a GPU, the loss on CUDA logits must reach the registered token head, which reports
//    the missing device as a bld error that is not "no CUDA backend"; exit 0;
//  * with a GPU, on a toy vocabulary and a random one of 50,000 tokens (id and trie order,
//    float32 and bfloat16 logits), the device route's value must equal the CPU route's on the
//    same logits within 1e-5 relative, and every gradient entry within 1e-4 of the largest
//    |gradient| (the row pass's tolerances, twice); exit 0, or 1 with the difference.
#include <bld/cpu.hpp>

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <vector>

bool bld_dispatch_register_linked();

namespace {

/// A vocabulary: the 256 bytes, then `extra` random tokens of 2..7 bytes over a small alphabet
/// (deep, crowded nodes and duplicates), an absent id and two specials.
std::shared_ptr<const bld::byte_trie> random_vocabulary(std::size_t extra, std::uint32_t seed) {
    using bld::token_kind;
    std::vector<bld::token_entry> e{{0, {}, token_kind::special, "<s>"}};
    std::int64_t id = 1;
    for (int b = 0; b < 256; ++b) e.push_back({id++, std::string(1, static_cast<char>(b)), token_kind::text, ""});
    std::mt19937 rng(seed);
    const std::string alphabet = " etaoinshrdlu\xC3\xA9";
    for (std::size_t k = 0; k < extra; ++k) {
        std::string t;
        const std::size_t n = 2 + rng() % 6;
        for (std::size_t i = 0; i < n; ++i) t += alphabet[rng() % alphabet.size()];
        e.push_back({id++, t, token_kind::text, ""});
    }
    ++id; // an absent id
    e.push_back({id++, {}, token_kind::special, "</s>"});
    return std::make_shared<const bld::byte_trie>(bld::vocabulary::from_entries(std::move(e), "random"));
}

/// A shifted, padded batch over one vocabulary on both sides (teacher = student), its targets
/// from random teacher logits, and random student logits with three padding columns.
struct problem {
    std::shared_ptr<const bld::byte_trie> trie;
    std::int64_t B = 0, S = 0, V = 0;
    std::vector<std::int64_t> ids, len;
    std::vector<float> logits; // [B, S, V], id order
    bld::target_batch targets;
};

problem make_problem(std::shared_ptr<const bld::byte_trie> trie, const bld::distiller& d, std::int64_t B, std::int64_t S,
                     std::uint32_t seed) {
    problem p;
    p.trie = std::move(trie);
    p.B = B;
    p.S = S;
    const auto& v = p.trie->vocab();
    std::vector<std::int64_t> text_ids;
    for (std::size_t i = 0; i < v.size(); ++i)
        if (v.kinds()[i] == bld::token_kind::text) text_ids.push_back(static_cast<std::int64_t>(i));
    std::mt19937 rng(seed);
    p.ids.assign(static_cast<std::size_t>(B * S), 0);
    for (std::int64_t b = 0; b < B; ++b) {
        const std::int64_t n = S - b * (S / 4) ; // right padding
        for (std::int64_t t = 1; t < n; ++t) p.ids[static_cast<std::size_t>(b * S + t)] = text_ids[rng() % text_ids.size()];
        p.len.push_back(n);
    }
    const auto Vt = static_cast<std::int64_t>(v.size());
    std::normal_distribution<float> g(0.f, 2.5f);
    std::vector<float> tl(static_cast<std::size_t>(B * S * Vt));
    for (auto& x : tl) x = g(rng);
    bld::distill_batch<float> tb;
    tb.teacher_logits = bld::tensor_view<const float, 3>(tl.data(), {B, S, Vt});
    tb.teacher_ids = bld::tensor_view<const std::int64_t, 2>(p.ids.data(), {B, S});
    tb.student_ids = tb.teacher_ids;
    tb.ranges.teacher_lengths = p.len;
    tb.ranges.student_lengths = p.len;
    p.targets = d.targets(tb);
    p.V = Vt + 3;
    p.logits.resize(static_cast<std::size_t>(B * S * p.V));
    for (auto& x : p.logits) x = g(rng);
    return p;
}

bld::distiller make_distiller(const std::shared_ptr<const bld::byte_trie>& trie, bld::row_order order) {
    bld::distiller_options o;
    o.heads = 8;
    o.shifted = true;
    o.student_order = order;
    return bld::distiller(trie, std::make_shared<const bld::vocabulary>(trie->vocab()), o);
}

/// Host rows of type T (id order or the distiller's trie order).
template <class T>
std::vector<T> rows_for(const problem& p, const bld::distiller& d) {
    std::vector<T> out(p.logits.size(), T(0.0f));
    const auto perm = d.student_permutation();
    const bool trie = d.options().student_order == bld::row_order::trie;
    for (std::int64_t r = 0; r < p.B * p.S; ++r)
        for (std::int64_t c = 0; c < p.V; ++c) {
            const auto k = static_cast<std::size_t>(r * p.V + c);
            if (!trie) out[k] = T(p.logits[k]);
            else if (static_cast<std::size_t>(c) < perm.size()) out[k] = T(p.logits[static_cast<std::size_t>(r * p.V) + perm[static_cast<std::size_t>(c)]]);
        }
    return out;
}

bld::token_head_result loss(const problem& p, const bld::distiller& d, const void* z, bld::device_kind dev, float* grad,
                            bool bf) {
    bld::token_head_options o;
    o.kind = bld::divergence::forward_kl;
    o.temperature = 1.25;
    const bld::tensor_view<const std::int64_t, 2> ids(p.ids.data(), {p.B, p.S});
    bld::batch_ranges r;
    r.student_lengths = p.len;
    const bld::tensor_view<float, 3> g(grad, {p.B, p.S, p.V}, dev);
    if (bf) {
        bld::student_batch<bld::bf16> sb{bld::tensor_view<const bld::bf16, 3>(static_cast<const bld::bf16*>(z), {p.B, p.S, p.V}, dev),
                                         ids, r};
        return d.token_head_loss(sb, p.targets.view<float>(), o, g);
    }
    bld::student_batch<float> sb{bld::tensor_view<const float, 3>(static_cast<const float*>(z), {p.B, p.S, p.V}, dev), ids, r};
    return d.token_head_loss(sb, p.targets.view<float>(), o, g);
}

/// CPU vs GPU on one problem, one column order, one dtype; false (with a line) on a mismatch.
template <class T>
bool compare(const char* name, const problem& p, const bld::distiller& d) {
    constexpr bool bf = std::is_same_v<T, bld::bf16>;
    const auto z = rows_for<T>(p, d);
    std::vector<float> gc(z.size()), gd(z.size());
    const auto want = loss(p, d, z.data(), bld::device_kind::cpu, gc.data(), bf);
    T* dz = nullptr;
    float* dg = nullptr;
    if (cudaMalloc(reinterpret_cast<void**>(&dz), z.size() * sizeof(T)) != cudaSuccess ||
        cudaMalloc(reinterpret_cast<void**>(&dg), z.size() * sizeof(float)) != cudaSuccess) {
        std::printf("token_head_host: FAILED: cudaMalloc\n");
        return false;
    }
    cudaMemcpy(dz, z.data(), z.size() * sizeof(T), cudaMemcpyHostToDevice);
    std::vector<float> junk(z.size(), 7.0f); // the device route must overwrite every entry
    cudaMemcpy(dg, junk.data(), z.size() * sizeof(float), cudaMemcpyHostToDevice);
    const auto got = loss(p, d, dz, bld::device_kind::cuda, dg, bf);
    cudaMemcpy(gd.data(), dg, z.size() * sizeof(float), cudaMemcpyDeviceToHost);
    cudaFree(dz);
    cudaFree(dg);
    double gmax = 0.0, worst = 0.0;
    for (float x : gc) gmax = std::max(gmax, std::abs(static_cast<double>(x)));
    for (std::size_t k = 0; k < gc.size(); ++k)
        worst = std::max(worst, std::abs(static_cast<double>(gd[k]) - static_cast<double>(gc[k])));
    const double dv = std::abs(got.value - want.value) / std::max(std::abs(want.value), 1e-30);
    const bool ok = got.positions == want.positions && dv <= 1e-5 && gmax > 0.0 && worst <= 1e-4 * gmax;
    std::printf("token_head_host: %s %s %s: %lld bytes, value %.9g (CPU %.9g, rel %.1e), grad max |diff| %.2e of max |grad| %.2e (%.1e): %s\n",
                name, d.options().student_order == bld::row_order::trie ? "trie order" : "id order", bf ? "bf16" : "float32",
                static_cast<long long>(want.positions), got.value, want.value, dv, worst, gmax, gmax > 0 ? worst / gmax : 0.0,
                ok ? "ok" : "FAILED");
    return ok;
}

} // namespace

int main() {
    if (!bld_dispatch_register_linked() || bld::device_token_head_registry::cuda.load() == nullptr) {
        std::puts("token_head_host: FAILED: the CUDA token head did not register");
        return 1;
    }
    int devices = 0;
    if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
        (void)cudaGetLastError();
        const auto trie = random_vocabulary(40, 1);
        const auto d = make_distiller(trie, bld::row_order::id);
        const auto p = make_problem(trie, d, 2, 12, 2);
        std::vector<float> g(p.logits.size());
        try {
            (void)loss(p, d, p.logits.data(), bld::device_kind::cuda, g.data(), false); // host memory labelled CUDA
        } catch (const bld::error& e) {
            if (std::string(e.what()).find("no CUDA backend") != std::string::npos) {
                std::printf("token_head_host: FAILED: the loss did not reach the CUDA token head: %s\n", e.what());
                return 1;
            }
            std::printf("token_head_host: no GPU; the token-head loss reached the CUDA token head, which says: %s\n", e.what());
            return 0;
        }
        std::puts("token_head_host: FAILED: a CUDA token-head loss without a GPU returned");
        return 1;
    }
    bool ok = true;
    const struct {
        const char* name;
        std::size_t extra;
        std::int64_t B, S;
    } cases[] = {{"toy (300 ids)", 40, 3, 24}, {"random (50,000 ids)", 50000 - 260, 4, 160}};
    for (const auto& c : cases) {
        const auto trie = random_vocabulary(c.extra, 7);
        for (const auto order : {bld::row_order::id, bld::row_order::trie}) {
            const auto d = make_distiller(trie, order);
            const auto p = make_problem(trie, d, c.B, c.S, 9);
            ok = compare<float>(c.name, p, d) && ok;
            ok = compare<bld::bf16>(c.name, p, d) && ok;
        }
    }
    std::printf("token_head_host: GPU token-head loss vs CPU: %s\n", ok ? "all agree" : "FAILED");
    return ok ? 0 : 1;
}
