// torch_loss.cpp — a libtorch trainer step with the BLD byte head and byte loss.
//
// hidden states [B, S, H] → bld::byte_head → logits [B, S, K, 260]; bld computes the BLD term
// λ_b·CE_byte + λ_KL·KL and its gradient w.r.t. the logits in one pass; `logits.backward(grad)`
// carries it into the head's parameters, and an optimizer steps. Then the same steps through
// autograd (bld::autograd::bld_loss, bld/torch/loss.hpp), which must follow the same trajectory.
// (The teacher targets are random here; a real trainer gets them from a projection of the
// teacher's rows.)
#include <bld/adapters/torch.hpp>
#include <bld/cpu.hpp>
#include <bld/loss/byte_loss.hpp>
#include <bld/torch/byte_head.hpp>
#include <bld/torch/loss.hpp>

#include <torch/torch.h>

#include <cmath>
#include <cstdio>

int main() {
    torch::manual_seed(0);
    const std::int64_t B = 2, S = 6, H = 32, K = 4;
    bld::byte_head head(H, K);
    torch::optim::SGD opt(head->parameters(), torch::optim::SGDOptions(0.5));

    const auto hidden = torch::randn({B, S, H});
    const auto targets = torch::softmax(4 * torch::randn({B * S, K, 260}), -1);  // [tokens, K, 260]
    const auto bytes = targets.argmax(-1);                                        // [tokens, K]
    auto mask = torch::ones({B * S, K}, torch::kBool);                            // [tokens, K]
    mask.index_put_({torch::indexing::Slice(0, 3)}, false);  // e.g. prompt tokens
    mask.index_put_({torch::indexing::Slice(), 3}, false);   // tokens of 3 bytes: head 3 idle

    double manual = 0;
    for (int step = 0; step <= 20; ++step) {
        // [doc:torch_step]
        opt.zero_grad();
        const auto logits = head(hidden).reshape({B * S, K, 260});  // [tokens, K, 260]
        auto grad = torch::empty_like(logits);
        const auto r = bld::bld_loss(logits.detach(), targets, bytes, mask,
                                     {.lambda_byte = 1.0, .lambda_kl = 0.1}, grad);
        logits.backward(grad);  // the gradient of r.value w.r.t. the logits, from bld
        opt.step();
        // [/doc:torch_step]
        manual = r.value;
        if (step % 5 == 0) {
            std::printf("step %2d  loss %.6f  (%lld active slots over %lld tokens)\n", step, r.value,
                        static_cast<long long>(r.active_slots), static_cast<long long>(r.active_tokens));
        }
    }

    // The same steps with the loss as an autograd node: a tensor with a grad_fn that composes
    // with other terms, one backward() for everything. Same seed, so the same initial head.
    torch::manual_seed(0);
    bld::byte_head twin(H, K);
    torch::optim::SGD opt2(twin->parameters(), torch::optim::SGDOptions(0.5));
    double through_autograd = 0;
    for (int step = 0; step <= 20; ++step) {
        // [doc:torch_autograd_step]
        opt2.zero_grad();
        const auto loss = bld::autograd::bld_loss(twin(hidden).reshape({B * S, K, 260}), targets, bytes, mask,
                                                  {.lambda_byte = 1.0, .lambda_kl = 0.1});
        loss.backward();
        opt2.step();
        // [/doc:torch_autograd_step]
        through_autograd = loss.item<double>();
    }
    std::printf("after 20 steps: %.6f by hand, %.6f through autograd\n", manual, through_autograd);
    if (!(std::abs(manual - through_autograd) <= 1e-6 * std::abs(manual))) {
        std::fprintf(stderr, "torch_loss: the two routes disagree\n");
        return 1;
    }
    return 0;
}
