// libFuzzer harness: byte losses with fuzzed shapes (K up to 300: > 260 must be refused),
// logits and targets (any float bit pattern), masks, kinds and temperatures. Successful calls
// must return a finite value and a finite gradient.
#include "fuzz_common.hpp"

#include <bld/loss/byte_loss.hpp>

#include <cmath>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    bld_fuzz::reader in{data, size};
    const std::int64_t T = in.take<std::uint8_t>() % 4;
    const std::int64_t K = in.take<std::uint16_t>() % 301;
    const std::int64_t W = in.take<std::uint8_t>() % 2 ? 260 : 259 + in.take<std::uint8_t>() % 3;
    const auto n = static_cast<std::size_t>(T * K * W);
    if (n > (1u << 16)) return 0;
    std::vector<float> z(n), p(n), g(n);
    for (auto& x : z) x = in.take<float>(0.f);
    for (auto& x : p) x = in.take<std::uint8_t>() / 255.0f;
    std::vector<std::uint8_t> mask(static_cast<std::size_t>(T * K));
    std::vector<std::int64_t> truth(static_cast<std::size_t>(T * K));
    for (std::size_t s = 0; s < mask.size(); ++s) {
        mask[s] = in.take<std::uint8_t>() % 2;
        truth[s] = in.take<std::int16_t>() % 300;
    }
    bld::bld_loss_options opt;
    opt.kind = static_cast<bld::divergence>(in.take<std::uint8_t>() % 4);
    opt.reduction = static_cast<bld::loss_reduction>(in.take<std::uint8_t>() % 3);
    opt.temperature = in.take<float>(1.f);
    opt.lambda_kl = in.take<std::uint8_t>() / 64.0;
    bld_fuzz::guarded([&] {
        const auto r = bld::bld_loss(bld::tensor_view<const float, 3>(z.data(), {T, K, W}), bld::tensor_view<const float, 3>(p.data(), {T, K, W}),
                                     bld::tensor_view<const std::int64_t, 2>(truth.data(), {T, K}),
                                     bld::tensor_view<const std::uint8_t, 2>(mask.data(), {T, K}), opt,
                                     bld::tensor_view<float, 3>(g.data(), {T, K, W}));
        bld_fuzz::require(std::isfinite(r.value), "finite loss");
        for (float x : g) bld_fuzz::require(std::isfinite(x), "finite gradient");
    });
    return 0;
}
