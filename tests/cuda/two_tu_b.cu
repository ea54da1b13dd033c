// Second translation unit of the two-TU link check (see two_tu_a.cu).
#include <bld/cuda.cuh>

#include <cstdint>
#include <type_traits>

// device_trie keeps a pointer to the host trie: it takes a named trie, never a temporary.
static_assert(std::is_constructible_v<bld::cuda::device_trie, const bld::byte_trie&, cudaStream_t>);
static_assert(!std::is_constructible_v<bld::cuda::device_trie, bld::byte_trie&&, cudaStream_t>);
static_assert(!std::is_constructible_v<bld::cuda::device_trie, const bld::byte_trie&&, cudaStream_t>);

double bld_two_tu_cuda_b(const bld::cuda::device_trie& dt, bld::tensor_view<const float, 2> rows) {
    bld::cuda::device_row_summaries sums(static_cast<std::size_t>(rows.extent(0)), nullptr);
    bld::cuda::row_pass<float>(dt, rows, sums.view(), nullptr);
    const std::int64_t ids[1] = {0};
    auto dist = bld::cuda::canonical_path<float>(dt, rows, ids, std::nullopt, nullptr);
    const std::int32_t* bytes = nullptr;
    const bld::tensor_view<const float, 3> none({}, {0, 1, 260}, bld::device_kind::cuda);
    auto loss = bld::cuda::byte_cross_entropy(none, bld::tensor_view<const std::int32_t, 2>(bytes, {0, 1}, bld::device_kind::cuda),
                                              bld::no_tensor);
    return loss.get().value + static_cast<double>(dist.positions());
}
