// bld::torch from an installed bld: the byte cross-entropy of uniform logits on libtorch
// tensors is log 260 per token (an independent closed form).
#include <bld/adapters/torch.hpp>
#include <bld/loss/byte_loss.hpp>

#include <torch/torch.h>

#include <cmath>
#include <cstdio>

int main() {
    const auto logits = torch::zeros({3, 2, 260}, torch::kFloat64);
    const auto bytes = torch::randint(0, 260, {3, 2}, torch::kInt64);
    const auto r = bld::byte_cross_entropy(logits, bytes, bld::no_tensor, {.reduction = bld::loss_reduction::slot_mean},
                                           bld::no_tensor, bld::no_tensor);
    const double want = std::log(260.0);
    std::printf("bld torch consumer: mean byte CE %.12f, log 260 = %.12f\n", r.value, want);
    return std::abs(r.value - want) < 1e-12 && r.active_slots == 6 ? 0 : 1;
}
