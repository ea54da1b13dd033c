// torch_loss.cpp — a libtorch trainer step with the BLD byte head and byte loss.
//
// hidden states [B, S, H] → bld::byte_head → logits [B, S, K, 260]; bld computes the BLD term
// λ_b·CE_byte + λ_KL·KL and its gradient w.r.t. the logits in one pass; `logits.backward(grad)`
// carries it into the head's parameters, and an optimizer steps. (The teacher targets are
// random here; a real trainer gets them from a projection of the teacher's rows.)
#include <bld/adapters/torch.hpp>
#include <bld/loss.hpp>
#include <bld/torch/byte_head.hpp>

#include <torch/torch.h>

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
        if (step % 5 == 0) {
            std::printf("step %2d  loss %.6f  (%lld active slots over %lld tokens)\n", step, r.value,
                        static_cast<long long>(r.active_slots), static_cast<long long>(r.active_tokens));
        }
    }
    return 0;
}
