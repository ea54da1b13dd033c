// The distiller on CUDA teacher logits, across compilers: compiled by the host C++ compiler
// (<bld/cpu.hpp>, no bld CUDA header), linked with dispatch_register.cu (nvcc: <bld/cuda.cuh>,
// which registers the device projector). scripts/cuda-compile-check.sh builds and runs it:
//  * without a GPU, targets() on CUDA logits must reach the registered projector, which reports
//    the missing device as a bld error that is not "no CUDA backend"; exit 0;
//  * with a GPU, the targets from device rows must equal the host's (slots, mask, true bytes;
//    values within 1e-5 relative, the row pass's tolerance); exit 0, or 1 with the difference.
#include <bld/cpu.hpp>

#include <cuda_runtime_api.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <vector>

bool bld_dispatch_register_linked();

int main() {
    if (!bld_dispatch_register_linked() || bld::device_projection_registry::cuda.load() == nullptr) {
        std::puts("distill_host: FAILED: the CUDA projector did not register");
        return 1;
    }
    using bld::token_kind;
    std::vector<bld::token_entry> te{{0, {}, token_kind::special, "<eos>"}}, se{{0, {}, token_kind::special, "<s>"}};
    std::int64_t id = 1;
    for (const char* t : {"a", "b", "c", "ab", "abc", "bc", "ca", "cab", " a", " "}) te.push_back({id++, t, token_kind::text, ""});
    const std::int64_t V = id;
    id = 1;
    for (const char* t : {"a", "b", "c", " ", "ca", "bca", " ab"}) se.push_back({id++, t, token_kind::text, ""});
    const auto teacher = std::make_shared<const bld::byte_trie>(bld::vocabulary::from_entries(std::move(te), "teacher"));
    const auto student = std::make_shared<const bld::vocabulary>(bld::vocabulary::from_entries(std::move(se), "student"));
    const std::int64_t B = 3, St = 12, Ss = 16;
    std::vector<std::int64_t> tids(B * St, 0), sids(B * Ss, 0), tlen, slen;
    for (std::int64_t b = 0; b < B; ++b) {
        std::vector<std::int64_t> t{0}, s{0}; // BOS on both sides
        for (std::int64_t r = 0; r <= b; ++r) {
            t.insert(t.end(), {4, 10, 7});    // "ab" " " "ca"
            s.insert(s.end(), {1, 2, 4, 5}); // "a" "b" " " "ca"
        }
        std::copy(t.begin(), t.end(), tids.begin() + b * St);
        std::copy(s.begin(), s.end(), sids.begin() + b * Ss);
        tlen.push_back(static_cast<std::int64_t>(t.size()));
        slen.push_back(static_cast<std::int64_t>(s.size()));
    }
    std::mt19937 rng(3);
    std::normal_distribution<float> g(0.f, 2.f);
    std::vector<float> logits(static_cast<std::size_t>(B * St * V));
    for (auto& x : logits) x = g(rng);
    const bld::distiller d(teacher, student, {.heads = 3, .shifted = true});
    bld::distill_batch<float> batch;
    batch.teacher_logits = bld::tensor_view<const float, 3>(logits.data(), {B, St, V});
    batch.teacher_ids = bld::tensor_view<const std::int64_t, 2>(tids.data(), {B, St});
    batch.student_ids = bld::tensor_view<const std::int64_t, 2>(sids.data(), {B, Ss});
    batch.ranges.teacher_lengths = tlen;
    batch.ranges.student_lengths = slen;
    const auto want = d.targets(batch);

    int devices = 0;
    if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
        (void)cudaGetLastError();
        auto fake = batch; // host memory labelled CUDA: enough to show where the call goes
        fake.teacher_logits = bld::tensor_view<const float, 3>(logits.data(), {B, St, V}, bld::device_kind::cuda);
        try {
            (void)d.targets(fake);
        } catch (const bld::error& e) {
            if (std::string(e.what()).find("no CUDA backend") != std::string::npos) {
                std::printf("distill_host: FAILED: the distiller did not reach the CUDA projector: %s\n", e.what());
                return 1;
            }
            std::printf("distill_host: no GPU; the distiller reached the CUDA projector, which says: %s\n", e.what());
            return 0;
        }
        std::puts("distill_host: FAILED: a CUDA projection without a GPU returned");
        return 1;
    }
    float* dev = nullptr;
    if (cudaMalloc(reinterpret_cast<void**>(&dev), logits.size() * sizeof(float)) != cudaSuccess) return 1;
    cudaMemcpy(dev, logits.data(), logits.size() * sizeof(float), cudaMemcpyHostToDevice);
    auto on_gpu = batch;
    on_gpu.teacher_logits = bld::tensor_view<const float, 3>(dev, {B, St, V}, bld::device_kind::cuda);
    const auto got = d.targets(on_gpu);
    cudaFree(dev);
    if (got.active_slots() != want.active_slots()) {
        std::printf("distill_host: FAILED: %lld active slots on the GPU, %lld on the CPU\n",
                    static_cast<long long>(got.active_slots()), static_cast<long long>(want.active_slots()));
        return 1;
    }
    double worst = 0.0;
    const auto a = want.values_f32(), b = got.values_f32();
    for (std::int64_t i = 0; i < a.size(); ++i) {
        const double w = a.data()[i], v = b.data()[i];
        worst = std::max(worst, std::abs(v - w) / (std::abs(w) + 1e-7));
    }
    for (std::int64_t s = 0; s < want.active_slots(); ++s)
        if (want.slots().data()[s] != got.slots().data()[s]) {
            std::puts("distill_host: FAILED: the GPU's slots differ from the CPU's");
            return 1;
        }
    std::printf("distill_host: GPU targets vs CPU: %lld active slots, worst relative difference %.2e\n",
                static_cast<long long>(want.active_slots()), worst);
    return worst <= 1e-5 ? 0 : 1;
}
