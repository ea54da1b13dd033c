// bld/backends/cuda/projector.cuh — bld::device_projector (bld/projection/device_projection.hpp)
// on the GPU: the canonical-path projection of teacher rows that live in device memory, for the
// host-compiled distiller.
//
// One projector per teacher trie builds the trie's device tables once per (device, column
// order) and keeps them. A call projects a batch of sequences on the caller's stream: for each
// sequence, in order, the host plans its text (canonical_plan) and queues the row pass, the node
// sums and the assembly on its rows (bld::cuda::canonical_path); once a group of sequences is
// queued (≤ group_bytes of fp64 distributions in device memory), their statuses and [bytes, 260]
// distributions come back and the stream is synchronised once. Only the distributions and the
// dropped masses cross to the host, never the [rows, V] logits. Errors are the CPU path's
// (bld::canonical_path on the same rows, id- or trie-ordered), and the first sequence's first
// error wins, as when the CPU projects the sequences in order.
//
// Rows: float32 or bfloat16 (the CUDA row pass reads those); other dtypes are refused with a
// shape_error.
#pragma once

#include "bld/backends/cuda/canonical.cuh"
#include "bld/backends/cuda/error.cuh"
#include "bld/backends/cuda/row_pass.cuh"
#include "bld/backends/cuda/stream.cuh"
#include "bld/projection/device_projection.hpp"
#include "bld/projection/distributions.hpp"
#include "bld/vocab/trie.hpp"

#include <cuda_runtime.h>

#include <cstdint>
#include <exception>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace bld::cuda {

/// The GPU's canonical-path projector for one teacher trie (the trie outlives it). Usable from
/// one thread at a time.
class projector final : public device_projector {
public:
    /// Device memory of queued, not yet downloaded distributions before a group is flushed.
    static constexpr std::size_t group_bytes = std::size_t{256} << 20;

    explicit projector(const byte_trie& trie) : trie_(&trie) {}
    /// Keeps a pointer to the trie: a temporary one would dangle.
    explicit projector(const byte_trie&& trie) = delete;
    projector(const projector&) = delete;
    projector& operator=(const projector&) = delete;
    /// Frees each device's tables with that device current.
    ~projector() override {
        for (auto& t : tables_) {
            int previous = 0;
            if (cudaGetDevice(&previous) != cudaSuccess) break;
            (void)cudaSetDevice(t.device);
            t.ids.reset();
            t.trie.reset();
            (void)cudaSetDevice(previous);
        }
    }

    /// See device_projector::canonical_paths.
    /// @throws shape_error for rows of another dtype than float32 / bfloat16, a null or host
    ///         pointer, rows narrower than the vocabulary (or the trie order), a sequence whose
    ///         rows run past row_count; value_error / alignment_error as bld::canonical_path for
    ///         bad ids, bad logits, a zero-probability prefix or a position without mass;
    ///         cuda_error.
    [[nodiscard]] std::vector<byte_distributions> canonical_paths(dtype type, const void* rows, std::int64_t row_count,
                                                                  std::int64_t columns, int device, bool trie_ordered,
                                                                  std::span<const device_sequence> sequences,
                                                                  void* stream) override {
        constexpr const char* op = "canonical-path projection";
        switch (type) {
            case dtype::f32:
                return project(static_cast<const float*>(rows), row_count, columns, device, trie_ordered, sequences,
                               static_cast<cudaStream_t>(stream));
            case dtype::bf16:
                return project(static_cast<const bf16*>(rows), row_count, columns, device, trie_ordered, sequences,
                               static_cast<cudaStream_t>(stream));
            default:
                throw shape_error(op, "rows",
                                  "the CUDA row pass reads float32 or bfloat16 rows, got " +
                                      std::string(bld::to_string(type)) + " (convert the teacher's logits first)");
        }
    }

private:
    struct device_tables {
        int device = 0;
        std::unique_ptr<device_trie> ids, trie;
    };

    /// The trie's tables on `device` for the column order, built on first use. Built on the
    /// legacy default stream and synchronised, so that any stream may read them (and they are
    /// freed on a stream that outlives every caller's).
    const device_trie& tables(int device, bool trie_ordered) {
        device_tables* t = nullptr;
        for (auto& d : tables_)
            if (d.device == device) t = &d;
        if (t == nullptr) {
            tables_.push_back({device, nullptr, nullptr});
            t = &tables_.back();
        }
        auto& slot = trie_ordered ? t->trie : t->ids;
        if (!slot) {
            slot = std::make_unique<device_trie>(*trie_, nullptr, trie_ordered ? column_order::trie : column_order::ids);
            check(cudaStreamSynchronize(nullptr), "bld::cuda::projector", "cudaStreamSynchronize of the trie upload");
        }
        return *slot;
    }

    template <class T>
    std::vector<byte_distributions> project(const T* rows, std::int64_t row_count, std::int64_t columns, int device,
                                            bool trie_ordered, std::span<const device_sequence> sequences,
                                            cudaStream_t stream) {
        constexpr const char* op = "canonical-path projection";
        std::vector<byte_distributions> out(sequences.size());
        if (sequences.empty()) return out;
        if (row_count < 0 || columns < 0)
            throw shape_error(op, "rows", "negative extents [" + std::to_string(row_count) + ", " + std::to_string(columns) + "]");
        const device_scope on(device, op);
        (void)tensor_view<const T, 2>(rows, {row_count, columns}, device_kind::cuda, device);  // null with rows: refused
        detail::require_device_pointer(rows, op, "rows", device);
        const device_trie& dt = tables(device, trie_ordered);

        std::vector<std::pair<std::size_t, device_byte_distributions>> group;
        std::size_t queued = 0;
        const auto flush = [&] {
            std::vector<device_byte_distributions::host_copy> host(group.size());
            for (std::size_t g = 0; g < group.size(); ++g) group[g].second.download(host[g], true);
            check(cudaStreamSynchronize(stream), op, "cudaStreamSynchronize");
            for (std::size_t g = 0; g < group.size(); ++g) {
                group[g].second.raise_first_error(host[g]);
                out[group[g].first] = std::move(host[g].out);
            }
            group.clear();
            queued = 0;
        };
        for (std::size_t i = 0; i < sequences.size(); ++i) {
            const device_sequence& s = sequences[i];
            try {
                if (s.first_row < 0 || s.first_row > row_count)
                    throw shape_error(op, "sequence " + std::to_string(i),
                                      "its first row " + std::to_string(s.first_row) + " is outside the " +
                                          std::to_string(row_count) + " rows");
                const tensor_view<const T, 2> mine(rows + s.first_row * columns, {row_count - s.first_row, columns},
                                                   device_kind::cuda, device);
                group.emplace_back(i, canonical_path(dt, mine, s.ids, std::nullopt, stream));
            } catch (...) {
                // An earlier sequence's error comes first (the CPU projects in order).
                const std::exception_ptr now = std::current_exception();
                flush();
                std::rethrow_exception(now);
            }
            queued += (group.back().second.positions() + 1) * alphabet_size * sizeof(double);
            if (queued >= group_bytes) flush();
        }
        flush();
        return out;
    }

    const byte_trie* trie_;
    std::vector<device_tables> tables_;
};

namespace detail {

/// The factory bld/backends/cuda/registration.cuh registers in device_projection_registry.
inline std::unique_ptr<device_projector> make_projector(const byte_trie& trie) {
    return std::make_unique<projector>(trie);
}

}  // namespace detail
}  // namespace bld::cuda
