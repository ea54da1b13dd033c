// bld/projection/device_projection.hpp — the seam through which a GPU backend projects teacher
// rows that live in device memory.
//
// The CPU side (bld/targets/distiller.hpp) is compiled by a host compiler and must not include
// CUDA headers; the CUDA backend (bld/backends/cuda/) is compiled by nvcc. A translation unit
// compiled by nvcc that includes <bld/cuda.cuh> registers a factory here (one inline variable,
// shared by every translation unit of the program); a distiller that meets rows on a CUDA device
// asks it for a projector, built once per teacher trie, and hands it the whole batch. Without a
// registered factory such rows are refused with a shape_error that says how to enable CUDA.
#pragma once

#include "bld/core/tensor.hpp"
#include "bld/projection/distributions.hpp"
#include "bld/vocab/trie.hpp"

#include <atomic>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

namespace bld {

/// One sequence of a batch whose rows live in device memory: rows [first_row, first_row +
/// ids.size()) of the row matrix belong to it, row first_row + j being the teacher's
/// distribution of ids[j] given the ids before it. `ids` are in host memory.
struct device_sequence {
    std::int64_t first_row = 0;
    std::span<const std::int64_t> ids;
};

/// Canonical-path projection of device-resident rows (one object per teacher trie; the trie
/// outlives it). Implementations must be usable from one thread at a time.
class device_projector {
public:
    virtual ~device_projector() = default;
    /// Distributions (host memory) of every sequence, as bld::canonical_path would compute them
    /// from the same rows on the CPU (within the row pass's tolerance), errors included.
    /// @param rows   device memory, [row_count, columns] of `type` (float32 or bfloat16; f16
    ///               where the backend reads it), dense row-major, on CUDA device `device`
    /// @param trie_ordered columns in row_plan::permutation() order instead of id order
    /// @param stream the backend's stream handle (cudaStream_t), or null for the default stream
    [[nodiscard]] virtual std::vector<byte_distributions>
    canonical_paths(dtype type, const void* rows, std::int64_t row_count, std::int64_t columns, int device,
                    bool trie_ordered, std::span<const device_sequence> sequences, void* stream) = 0;
};

/// Makes a projector for a teacher trie (the trie outlives it).
using device_projector_factory = std::unique_ptr<device_projector> (*)(const byte_trie& trie);

/// Where the CUDA backend registers its factory (null: no GPU projection in this program).
struct device_projection_registry {
    static inline std::atomic<device_projector_factory> cuda{nullptr};
};

} // namespace bld
