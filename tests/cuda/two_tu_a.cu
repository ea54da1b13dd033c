// Two CUDA translation units that include <bld/cuda.cuh> must link into one program, with and
// without -rdc: a header that defines a non-template, non-inline `__global__` kernel (or host
// function) gives each translation unit a strong definition of the same symbol, and the link
// fails. scripts/cuda-compile-check.sh compiles both files and links them; nothing runs.
#include <bld/cuda.cuh>

#include <cstdint>

double bld_two_tu_cuda_b(const bld::cuda::device_trie& dt, bld::tensor_view<const float, 2> rows);

// The loss launchers (loss.cuh) here; the row pass and canonical path in two_tu_b.cu; each file
// instantiates kernels from every CUDA header through the launchers it calls.
double bld_two_tu_cuda_a(bld::tensor_view<const float, 3> logits, bld::tensor_view<const std::int32_t, 2> bytes) {
    return bld::cuda::byte_cross_entropy(logits, bytes, bld::no_tensor).get().value;
}

int main(int argc, char**) {
    if (argc < 1000) return 0;  // linked, never meant to run
    const bld::byte_trie* trie = nullptr;
    const bld::cuda::device_trie dt(*trie, nullptr);
    return static_cast<int>(bld_two_tu_cuda_a({}, {}) + bld_two_tu_cuda_b(dt, {}));
}
