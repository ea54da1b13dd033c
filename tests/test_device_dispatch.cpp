// The byte losses' device dispatch (bld/backends/device_loss.hpp), on a machine without a GPU:
// views that say "cuda" are built over host memory that nothing dereferences. Checked here:
// without a registered backend such a call is refused with a message that says how to enable
// CUDA; every argument must be on the logits' device; the CPU path's shape / dtype errors and
// option checks still come first or in the same words; and a registered runner (a recording test
// double standing in for the CUDA backend) receives exactly the call's tensors, types, slot
// parameters, layout and the thread's stream. The CUDA runner itself is tested against the CPU
// by bld_cuda_tests on a GPU (scripts/gpu-check.sh).
#include <bld/bld.hpp>
#include <bld/targets/slot_targets.hpp>

#include "error_text.hpp"

#include <doctest/doctest.h>

#include "dynamic_tensor.hpp"

#include <cmath>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

namespace {

using bld::device_kind;
using bld::tensor_view;
using bld_test::contains;
using bld_test::message_of;

constexpr std::int64_t T = 3, K = 2, A = 260;

/// The last call a recording runner received, and how many it received.
struct recorded {
    bld::device_loss_call call;
    int calls = 0;
};
recorded last;

bld::device_loss_totals recording_runner(const bld::device_loss_call& c) {
    last.call = c;
    ++last.calls;
    return {1.25, 5, 3};
}

/// Registers a runner for the scope and restores the previous one (normally none) after.
struct registered {
    bld::device_loss_runner previous;
    explicit registered(bld::device_loss_runner r)
        : previous(bld::device_loss_registry::cuda.exchange(r)) {
        last = {};
    }
    ~registered() { bld::device_loss_registry::cuda.store(previous); }
};

/// Host buffers behind views that claim to live on a CUDA device (never read through).
struct fake_device_call {
    std::vector<float> z = std::vector<float>(T * K * A), p = std::vector<float>(T * K * A), g = std::vector<float>(T * K * A),
                       s = std::vector<float>(T * K);
    std::vector<std::int64_t> y = std::vector<std::int64_t>(T * K);
    std::vector<std::uint8_t> m = std::vector<std::uint8_t>(T * K, 1);

    template <class E, std::size_t R>
    static tensor_view<E, R> on(E* data, std::array<std::int64_t, R> ext, int device = 0,
                                device_kind kind = device_kind::cuda) {
        return tensor_view<E, R>(data, ext, kind, device);
    }
    tensor_view<const float, 3> logits(int d = 0) { return on<const float, 3>(z.data(), {T, K, A}, d); }
    tensor_view<const float, 3> targets(int d = 0, device_kind k = device_kind::cuda) {
        return on<const float, 3>(p.data(), {T, K, A}, d, k);
    }
    tensor_view<const std::int64_t, 2> bytes(int d = 0) { return on<const std::int64_t, 2>(y.data(), {T, K}, d); }
    tensor_view<const std::uint8_t, 2> mask(int d = 0) { return on<const std::uint8_t, 2>(m.data(), {T, K}, d); }
    tensor_view<float, 3> grad(int d = 0, device_kind k = device_kind::cuda) { return on<float, 3>(g.data(), {T, K, A}, d, k); }
    tensor_view<float, 2> per_slot(int d = 0) { return on<float, 2>(s.data(), {T, K}, d); }
};

}  // namespace

TEST_CASE("device dispatch: without a registered CUDA backend, CUDA tensors are refused with how to enable it") {
    REQUIRE((bld::device_loss_registry::cuda.load() == nullptr));  // bld_tests links no CUDA code
    fake_device_call f;
    const auto msg = message_of<bld::shape_error>([&] { (void)bld::bld_loss(f.logits(1), f.targets(1), f.bytes(1), f.mask(1)); });
    INFO(msg);
    CHECK(contains(msg, "bld::bld_loss: argument `logits`"));
    CHECK(contains(msg, "cuda:1"));
    CHECK(contains(msg, "no CUDA backend is registered"));
    CHECK(contains(msg, "<bld/cuda.cuh>"));
    CHECK(contains(msg, "nvcc"));
    CHECK(contains(message_of<bld::shape_error>([&] { (void)bld::byte_loss(f.logits(), f.targets(), bld::no_tensor); }),
                   "no CUDA backend is registered"));
    CHECK(contains(message_of<bld::shape_error>([&] { (void)bld::byte_cross_entropy(f.logits(), f.bytes(), f.mask()); }),
                   "no CUDA backend is registered"));
}

TEST_CASE("device dispatch: options and the logits' shape are checked before the device (the CPU's messages)") {
    fake_device_call f;
    const registered r(&recording_runner);
    // A bad option: value_error, as on the CPU, before anything else.
    const auto opt = message_of<bld::value_error>(
        [&] { (void)bld::bld_loss(f.logits(), f.targets(), f.bytes(), f.mask(), {.lambda_byte = -1.0}); });
    CHECK(contains(opt, "lambda_byte"));
    // K = 0 heads: bld::byte_head_shape's error, word for word as for the same extents on the CPU.
    std::vector<float> none;
    const tensor_view<const float, 3> dev({}, {4, 0, A}, device_kind::cuda), host({}, {4, 0, A});
    const auto on_dev = message_of<bld::shape_error>([&] { (void)bld::byte_loss(dev, dev, bld::no_tensor); });
    auto on_host = message_of<bld::shape_error>([&] { (void)bld::byte_loss(host, host, bld::no_tensor); });
    CHECK(contains(on_dev, "1 <= K <= 260"));
    on_host.replace(on_host.find(" on cpu"), 7, " on cuda");
    CHECK(on_dev == on_host);
    CHECK(last.calls == 0);
}

TEST_CASE("device dispatch: every tensor on the logits' device, else a shape_error naming the argument and both devices") {
    fake_device_call f;
    const registered r(&recording_runner);
    const auto msg_targets = message_of<bld::shape_error>(
        [&] { (void)bld::bld_loss(f.logits(), f.targets(0, device_kind::cpu), f.bytes(), f.mask()); });
    INFO(msg_targets);
    CHECK(contains(msg_targets, "argument `targets`"));
    CHECK(contains(msg_targets, "on cpu, but `logits` is on cuda:0"));

    const auto msg_mask = message_of<bld::shape_error>([&] { (void)bld::bld_loss(f.logits(0), f.targets(0), f.bytes(0), f.mask(1)); });
    CHECK(contains(msg_mask, "argument `mask`"));
    CHECK(contains(msg_mask, "on cuda:1, but `logits` is on cuda:0"));

    const auto msg_bytes = message_of<bld::shape_error>(
        [&] { (void)bld::byte_cross_entropy(f.logits(2), f.bytes(0), bld::no_tensor); });
    CHECK(contains(msg_bytes, "argument `true_bytes`"));
    CHECK(contains(msg_bytes, "on cuda:0, but `logits` is on cuda:2"));

    auto g = f.grad(0, device_kind::cpu);
    const auto msg_grad = message_of<bld::shape_error>(
        [&] { (void)bld::byte_loss(f.logits(), f.targets(), f.mask(), {}, g); });
    CHECK(contains(msg_grad, "argument `grad`"));
    CHECK(contains(msg_grad, "on cpu, but `logits` is on cuda:0"));
    CHECK(last.calls == 0);
}

TEST_CASE("device dispatch: dtype and extent errors on the device are the CPU path's") {
    fake_device_call f;
    const registered r(&recording_runner);
    std::vector<std::int32_t> wrong(T * K);
    const tensor_view<const std::int32_t, 2> int_mask(wrong.data(), {T, K}, device_kind::cuda);
    CHECK(contains(message_of<bld::shape_error>([&] { (void)bld::bld_loss(f.logits(), f.targets(), f.bytes(), bld_test::erase(int_mask)); }),
                   "argument `mask`: expected a uint8 or bool [T, K] mask, got int32 [3, 2] on cuda"));
    const tensor_view<const float, 2> float_bytes(f.p.data(), {T, K}, device_kind::cuda);
    CHECK(contains(message_of<bld::shape_error>([&] { (void)bld::bld_loss(f.logits(), f.targets(), bld_test::erase(float_bytes), f.mask()); }),
                   "expected int32 or int64 [T, K] bytes"));
    const tensor_view<const float, 3> short_targets(f.p.data(), {T, K - 1, A}, device_kind::cuda);
    CHECK(contains(message_of<bld::shape_error>([&] { (void)bld::byte_loss(f.logits(), short_targets, f.mask()); }),
                   "argument `targets`"));
    std::vector<double> gd(T * K * A);
    const tensor_view<double, 3> grad64(gd.data(), {T, K, A}, device_kind::cuda);
    CHECK(contains(message_of<bld::shape_error>([&] { (void)bld::byte_loss(f.logits(), f.targets(), f.mask(), {}, grad64); }),
                   "argument `grad`"));
    CHECK(last.calls == 0);
}

TEST_CASE("device dispatch: the registered runner receives the call (tensors, types, parameters, stream)") {
    fake_device_call f;
    const registered r(&recording_runner);
    int stream_token = 0;
    bld::byte_loss_result res;
    {
        const bld::device_stream_scope on(&stream_token);
        std::vector<std::uint8_t> bool_storage(T * K, 1);
        const tensor_view<const bool, 2> bool_mask(reinterpret_cast<const bool*>(bool_storage.data()), {T, K},
                                                   device_kind::cuda, 0);
        auto g = f.grad();
        auto s = f.per_slot();
        res = bld::bld_loss(f.logits(), f.targets(), f.bytes(), bool_mask,
                            {.lambda_byte = 0.5, .lambda_kl = 2.0, .kind = bld::divergence::jsd, .temperature = 4.0,
                             .reduction = bld::loss_reduction::slot_mean},
                            g, s);
        CHECK(last.call.mask.data == bool_storage.data());
        CHECK(last.call.mask.type == bld::dtype::u8);  // bool: one byte, read as uint8
    }
    CHECK(bld::current_device_stream() == nullptr);  // the scope ended
    REQUIRE(last.calls == 1);
    CHECK(res.value == 1.25);
    CHECK(res.active_slots == 5);
    CHECK(res.active_tokens == 3);
    const bld::device_loss_call& c = last.call;
    CHECK(c.op == "bld::bld_loss");
    CHECK(c.T == T);
    CHECK(c.K == K);
    CHECK(c.device == 0);
    CHECK(c.stream == &stream_token);
    CHECK(c.logits.data == f.z.data());
    CHECK(c.logits.type == bld::dtype::f32);
    CHECK(c.targets.data == f.p.data());
    CHECK_FALSE(c.compact);
    CHECK(c.true_bytes.data == f.y.data());
    CHECK(c.true_bytes.type == bld::dtype::i64);
    CHECK(c.grad.data == f.g.data());
    CHECK(c.per_slot.data == f.s.data());
    CHECK(c.prm.w_ce == 0.5);
    CHECK(c.prm.w_div == 2.0);
    CHECK(c.prm.kind == bld::divergence::jsd);
    CHECK(c.prm.inv_temperature == 0.25);
    CHECK(c.prm.log_floor == doctest::Approx(std::log(1e-12)));
    CHECK(c.reduction == bld::loss_reduction::slot_mean);

    // Absent arguments: no_tensor, and the terms a call does not use are not handed on.
    (void)bld::byte_cross_entropy(f.logits(3), f.bytes(3), bld::no_tensor);
    CHECK(last.call.device == 3);
    CHECK_FALSE(last.call.mask.given);
    CHECK_FALSE(last.call.grad.given);
    CHECK_FALSE(last.call.per_slot.given);
    CHECK(last.call.targets.data == nullptr);
    CHECK(last.call.prm.w_div == 0.0);
    CHECK(last.call.stream == nullptr);  // the legacy default stream
    (void)bld::bld_loss(f.logits(), f.targets(), f.bytes(), f.mask(), {.lambda_byte = 0.0});
    CHECK(last.call.true_bytes.data == nullptr);  // shape-checked, not read
    CHECK(last.call.targets.data == f.p.data());
}

TEST_CASE("device dispatch: slot targets views (dense and compact) on a CUDA device") {
    fake_device_call f;
    const registered r(&recording_runner);
    std::vector<bld::bf16> values(4 * A);
    std::vector<std::int64_t> slots{0, 1, 3, 4};
    std::vector<std::uint8_t> mask{1, 1, 0, 1, 1, 0};
    std::vector<std::int32_t> bytes(T * K, -1);
    bld::slot_targets_view<bld::bf16> v;
    v.layout = bld::target_layout::compact;
    v.tokens = T;
    v.heads = K;
    v.values = tensor_view<const bld::bf16, 2>(values.data(), {4, A}, device_kind::cuda);
    v.slots = tensor_view<const std::int64_t, 1>(slots.data(), {4}, device_kind::cuda);
    v.mask = tensor_view<const std::uint8_t, 2>(mask.data(), {T, K}, device_kind::cuda);
    v.true_bytes = tensor_view<const std::int32_t, 2>(bytes.data(), {T, K}, device_kind::cuda);

    const auto res = bld::bld_loss(f.logits(), v, {.lambda_byte = 1.0, .lambda_kl = 0.5});
    CHECK(res.value == 1.25);
    REQUIRE(last.calls == 1);
    const bld::device_loss_call& c = last.call;
    CHECK(c.compact);
    CHECK(c.target_rows == 4);
    CHECK(c.target_slots.data == slots.data());
    CHECK(c.targets.data == values.data());
    CHECK(c.targets.type == bld::dtype::bf16);
    CHECK(c.mask.data == mask.data());
    CHECK(c.true_bytes.type == bld::dtype::i32);
    CHECK(c.T == T);
    CHECK(c.K == K);

    // Dense view, byte_loss.
    std::vector<float> dense(T * K * A);
    bld::slot_targets_view<float> d;
    d.layout = bld::target_layout::dense;
    d.tokens = T;
    d.heads = K;
    d.values = tensor_view<const float, 2>(dense.data(), {T * K, A}, device_kind::cuda);
    d.mask = v.mask;
    d.true_bytes = v.true_bytes;
    (void)bld::byte_loss(f.logits(), d);
    CHECK(last.calls == 2);
    CHECK_FALSE(last.call.compact);
    CHECK(last.call.targets.type == bld::dtype::f32);
    CHECK(last.call.true_bytes.data == nullptr);  // byte_loss reads no true bytes

    // Logits on the CPU, targets on a device: the targets are named, with both devices.
    const tensor_view<const float, 3> host_logits(f.z.data(), {T, K, A});
    const auto mixed = message_of<bld::shape_error>([&] { (void)bld::bld_loss(host_logits, v); });
    INFO(mixed);
    CHECK(contains(mixed, "argument `targets`"));
    CHECK(contains(mixed, "on cuda:0, but `logits` is on cpu"));
    // Logits on another device than the targets.
    const auto other = message_of<bld::shape_error>([&] { (void)bld::bld_loss(f.logits(1), v); });
    CHECK(contains(other, "argument `targets.values`"));
    CHECK(contains(other, "on cuda:0, but `logits` is on cuda:1"));
    CHECK(last.calls == 2);
}

TEST_CASE("device dispatch: stream scopes nest and are per thread") {
    int a = 0, b = 0;
    CHECK(bld::current_device_stream() == nullptr);
    {
        const bld::device_stream_scope outer(&a);
        CHECK(bld::current_device_stream() == &a);
        void* elsewhere = &b;
        std::thread([&] { elsewhere = bld::current_device_stream(); }).join();
        CHECK(elsewhere == nullptr);  // another thread keeps its own (the default stream)
        {
            const bld::device_stream_scope inner(&b);
            CHECK(bld::current_device_stream() == &b);
        }
        CHECK(bld::current_device_stream() == &a);
    }
    CHECK(bld::current_device_stream() == nullptr);
}
