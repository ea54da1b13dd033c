// The one entry point across compilers: this file is compiled by the host C++ compiler with no
// CUDA header of bld (only <bld/bld.hpp> and the CUDA runtime's C API for device memory), calls
// bld::bld_loss on views of CUDA memory, and is linked with dispatch_register.cu (nvcc), whose
// only job is to include <bld/cuda.cuh>. scripts/cuda-compile-check.sh builds and runs it:
//  * without a GPU the call must reach the registered CUDA runner, which reports the missing
//    device as a bld::cuda error (cudaErrorNoDevice / cudaErrorInsufficientDriver) — proof that
//    the host entry dispatched CUDA views to the backend; exit 0;
//  * with a GPU it computes a small loss (dense and compact) on the device and on the CPU and
//    requires them to agree within 1e-12 relative; exit 0, or 1 with the difference.
#include <bld/bld.hpp>

#include <cuda_runtime_api.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

bool bld_dispatch_register_linked();

namespace {

constexpr std::int64_t T = 5, K = 3, A = 260;

template <class E>
E* upload(const std::vector<E>& v) {
    void* p = nullptr;
    if (cudaMalloc(&p, v.size() * sizeof(E)) != cudaSuccess) return nullptr;
    cudaMemcpy(p, v.data(), v.size() * sizeof(E), cudaMemcpyHostToDevice);
    return static_cast<E*>(p);
}

}  // namespace

int main() {
    if (!bld_dispatch_register_linked() || bld::device_loss_registry::cuda.load() == nullptr) {
        std::puts("dispatch_host: FAILED: the CUDA backend did not register");
        return 1;
    }
    std::vector<double> z(T * K * A), p(T * K * A);
    std::vector<std::int64_t> y(T * K);
    std::vector<std::uint8_t> m(T * K);
    for (std::int64_t s = 0; s < T * K; ++s) {
        m[s] = (s % 4) != 2;
        y[s] = (s * 37) % 257;
        double sum = 0;
        for (std::int64_t a = 0; a < A; ++a) sum += p[s * A + a] = 1.0 + static_cast<double>((s * 7 + a * 13) % 11);
        for (std::int64_t a = 0; a < A; ++a) {
            p[s * A + a] /= sum;
            z[s * A + a] = std::sin(static_cast<double>(s * A + a));
        }
    }
    int devices = 0;
    if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
        (void)cudaGetLastError();
        // No GPU: fake device addresses are enough to show where the call goes.
        const bld::tensor_view<const double, 3> zl(z.data(), {T, K, A}, bld::device_kind::cuda);
        const bld::tensor_view<const double, 3> pl(p.data(), {T, K, A}, bld::device_kind::cuda);
        const bld::tensor_view<const std::int64_t, 2> yl(y.data(), {T, K}, bld::device_kind::cuda);
        try {
            (void)bld::bld_loss(zl, pl, yl, bld::no_tensor);
        } catch (const bld::shape_error& e) {
            std::printf("dispatch_host: FAILED: the host entry did not reach the CUDA backend: %s\n", e.what());
            return 1;
        } catch (const bld::error& e) {
            std::printf("dispatch_host: no GPU; the host entry reached the CUDA backend, which says: %s\n", e.what());
            return 0;
        }
        std::puts("dispatch_host: FAILED: a CUDA call without a GPU returned");
        return 1;
    }
    const std::array<std::int64_t, 3> tka{T, K, A};
    const std::array<std::int64_t, 2> tk{T, K};
    const auto want = bld::bld_loss(bld::shaped(z, tka), bld::shaped(p, tka), bld::shaped(y, tk), bld::shaped(m, tk));
    const double* dz = upload(z);
    const double* dp = upload(p);
    const std::int64_t* dy = upload(y);
    const std::uint8_t* dm = upload(m);
    const auto got = bld::bld_loss(bld::tensor_view<const double, 3>(dz, tka, bld::device_kind::cuda),
                                   bld::tensor_view<const double, 3>(dp, tka, bld::device_kind::cuda),
                                   bld::tensor_view<const std::int64_t, 2>(dy, tk, bld::device_kind::cuda),
                                   bld::tensor_view<const std::uint8_t, 2>(dm, tk, bld::device_kind::cuda));
    // Compact float32 targets of the same slots.
    std::vector<float> values;
    std::vector<std::int64_t> slots;
    std::vector<std::int32_t> y32(T * K, -1);
    for (std::int64_t s = 0; s < T * K; ++s) {
        if (!m[s]) continue;
        slots.push_back(s);
        y32[s] = static_cast<std::int32_t>(y[s]);
        for (std::int64_t a = 0; a < A; ++a) values.push_back(static_cast<float>(p[s * A + a]));
    }
    bld::slot_targets_view<float> host;
    host.layout = bld::target_layout::compact;
    host.tokens = T;
    host.heads = K;
    const auto rows = static_cast<std::int64_t>(slots.size());
    host.values = bld::tensor_view<const float, 2>(values.data(), {rows, A});
    host.slots = bld::tensor_view<const std::int64_t, 1>(slots.data(), {rows});
    host.mask = bld::tensor_view<const std::uint8_t, 2>(m.data(), tk);
    host.true_bytes = bld::tensor_view<const std::int32_t, 2>(y32.data(), tk);
    auto dev = host;
    dev.values = bld::tensor_view<const float, 2>(upload(values), {rows, A}, bld::device_kind::cuda);
    dev.slots = bld::tensor_view<const std::int64_t, 1>(upload(slots), {rows}, bld::device_kind::cuda);
    dev.mask = bld::tensor_view<const std::uint8_t, 2>(dm, tk, bld::device_kind::cuda);
    dev.true_bytes = bld::tensor_view<const std::int32_t, 2>(upload(y32), tk, bld::device_kind::cuda);
    const auto want_c = bld::bld_loss(bld::shaped(z, tka), host);
    const auto got_c = bld::bld_loss(bld::tensor_view<const double, 3>(dz, tka, bld::device_kind::cuda), dev);
    const double e1 = std::abs(got.value - want.value) / std::abs(want.value);
    const double e2 = std::abs(got_c.value - want_c.value) / std::abs(want_c.value);
    std::printf("dispatch_host: GPU dense %.17g vs CPU %.17g (rel %.2e); compact %.17g vs %.17g (rel %.2e)\n", got.value,
                want.value, e1, got_c.value, want_c.value, e2);
    return e1 <= 1e-12 && e2 <= 1e-12 && got.active_slots == want.active_slots ? 0 : 1;
}
