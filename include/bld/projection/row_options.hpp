// bld/projection/row_options.hpp — how a caller's rows are laid out and which projection reads them.
#pragma once

#include <cstdint>

namespace bld {

/// Which implementation of the canonical-path projection runs.
enum class projection_path : std::uint8_t {
    fast,      ///< the SIMD row pass (CPU) or the CUDA kernels (device rows)
    reference, ///< the fp64 scalar reference (CPU, id-ordered rows): for tests
};

/// The column order of logit rows.
enum class row_order : std::uint8_t {
    id,   ///< column c = token id c
    trie, ///< column k = id row_plan::permutation()[k]
};

} // namespace bld
