// eigen_loss.cpp — the BLD byte term on Eigen matrices.
//
// The text "byte-level" is tokenized by a student as "by" | "te-" | "level"; the student has
// K = 3 byte heads, so the slots (token ℓ, head j) with j < min(len(ℓ), 3) are active and
// "level"'s last two bytes are not supervised. The teacher's byte distributions here are made
// up (0.9 on the true byte, the rest spread evenly); a real trainer gets them from a
// projection. A few plain gradient steps on the logits show the loss going down.
#include <bld/adapters/eigen.hpp>
#include <bld/loss/byte_loss.hpp>

#include <Eigen/Core>

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

int main() {
    using row_major = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    const std::vector<std::string> tokens{"by", "te-", "level"};
    const std::int64_t T = static_cast<std::int64_t>(tokens.size()), K = 3, A = static_cast<std::int64_t>(bld::alphabet_size);

    row_major logits = row_major::Random(T * K, A);   // [T·K, 260]: one row per slot
    row_major targets = row_major::Zero(T * K, A);    // [T·K, 260]
    Eigen::Matrix<std::int64_t, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> bytes(T, K);  // [T, K]
    Eigen::Matrix<std::uint8_t, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> mask(T, K);   // [T, K]
    for (std::int64_t t = 0; t < T; ++t) {
        for (std::int64_t k = 0; k < K; ++k) {
            const bool active = k < static_cast<std::int64_t>(tokens[t].size());
            mask(t, k) = active ? 1 : 0;
            bytes(t, k) = active ? static_cast<unsigned char>(tokens[t][k]) : -100;
            if (active) {
                targets.row(t * K + k).setConstant(0.1 / (A - 1));
                targets(t * K + k, bytes(t, k)) = 0.9;
            }
        }
    }

    // Eigen gives 2-D views; the loss wants [T, K, 260].
    const std::array<std::int64_t, 3> shape{T, K, A};
    const auto z = bld::reshape(bld::as_view<const double, 2>(logits, "logits"), shape);
    const auto p = bld::reshape(bld::as_view<const double, 2>(targets, "targets"), shape);
    row_major grad(T * K, A);
    const auto g = bld::reshape(bld::as_view<double, 2>(grad, "grad"), shape);

    const bld::bld_loss_options options{.lambda_byte = 1.0, .lambda_kl = 0.1, .temperature = 1.0};
    for (int step = 0; step <= 50; ++step) {
        const auto r = bld::bld_loss(z, p, bytes, mask, options, g);
        if (step % 10 == 0) {
            std::printf("step %2d  loss %.6f  (%lld active slots over %lld tokens, |grad| %.4f)\n", step,
                        r.value, static_cast<long long>(r.active_slots),
                        static_cast<long long>(r.active_tokens), grad.norm());
        }
        logits -= 5.0 * grad;  // plain gradient descent on the logits themselves
    }
    return 0;
}
