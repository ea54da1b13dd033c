// bld/targets/slot_targets.hpp — teacher targets that carry their shape: the views the byte
// losses read, and the owning batch the distiller returns.
//
// A student with K byte heads has, per student token t, K slots (t, k): head k predicts byte k of
// the token. A slot is active when the token has a byte k (k < its length, k < K) that is text
// both tokenizers spell (not a special token, not a dummy prefix, not padding) and the teacher has
// a distribution there. Slots are numbered flat, s = t·K + k.
//
// Two layouts of the teacher's 260-entry distributions:
//   dense    values [T·K, 260]: one row per slot (rows of inactive slots are zero, never read);
//   compact  values [A, 260]: the A active slots only, in increasing slot order, and
//            slots [A] (int64) the flat slot of each row. Row a belongs to the a-th active slot,
//            so a reader that walks the slots in order needs no search.
// Both carry mask [T, K] (1 = active), true_bytes [T, K] (the text byte, −1 at inactive slots)
// and dropped [T, K] (the share of the conditioning mass the projection dropped at the slot's
// byte; 0 at inactive slots). Values are probabilities in float32 or bfloat16.
#pragma once

#include "bld/core/alphabet.hpp"
#include "bld/core/bf16.hpp"
#include "bld/core/error.hpp"
#include "bld/core/tensor.hpp"

#include <concepts>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

namespace bld {

/// How teacher targets are stored (see the top of this header).
enum class target_layout : std::uint8_t { compact, dense };

[[nodiscard]] constexpr std::string_view to_string(target_layout l) noexcept {
    return l == target_layout::compact ? "compact" : "dense";
}

/// Element types of stored targets: float, bf16 (and double, for dense targets built by hand).
template <class P>
concept target_type = std::same_as<std::remove_cv_t<P>, float> || std::same_as<std::remove_cv_t<P>, bf16> ||
                      std::same_as<std::remove_cv_t<P>, double>;

/// A non-owning view of slot targets for [tokens, heads] slots, in either layout; what
/// bld::bld_loss and bld::byte_loss read besides the logits. `check()` validates the shapes (the
/// losses call it); the consistency of `slots` with `mask` is checked while the loss walks them.
template <target_type P>
struct slot_targets_view {
    target_layout layout = target_layout::dense;
    std::int64_t tokens = 0, heads = 0;
    tensor_view<const P, 2> values;                ///< compact [A, 260]; dense [tokens·heads, 260]
    tensor_view<const std::int64_t, 1> slots;      ///< compact [A]; dense: empty
    tensor_view<const std::uint8_t, 2> mask;       ///< [tokens, heads], nonzero = active
    tensor_view<const std::int32_t, 2> true_bytes; ///< [tokens, heads], −1 at inactive slots
    tensor_view<const float, 2> dropped;           ///< [tokens, heads] or empty

    /// Number of active slots a compact view holds (rows of `values`).
    [[nodiscard]] std::int64_t rows() const noexcept { return values.extent(0); }

    /// @throws shape_error naming the member, what was expected and what came.
    void check(std::string_view op) const {
        const auto bad = [&](const char* member, const std::string& why) {
            throw shape_error(std::string(op), std::string("targets.") + member, why);
        };
        const auto ext2 = [](const auto& v) {
            return "[" + std::to_string(v.extent(0)) + ", " + std::to_string(v.extent(1)) + "]";
        };
        if (tokens < 0 || heads < 1 || heads > static_cast<std::int64_t>(alphabet_size))
            bad("heads", "expected [T, K] slots with 1 <= K <= 260, got T = " + std::to_string(tokens) +
                             ", K = " + std::to_string(heads));
        const std::string tk = "[" + std::to_string(tokens) + ", " + std::to_string(heads) + "]";
        if (mask.extent(0) != tokens || mask.extent(1) != heads) bad("mask", "expected " + tk + ", got " + ext2(mask));
        if (true_bytes.extent(0) != tokens || true_bytes.extent(1) != heads)
            bad("true_bytes", "expected " + tk + ", got " + ext2(true_bytes));
        if (!dropped.empty() && (dropped.extent(0) != tokens || dropped.extent(1) != heads))
            bad("dropped", "expected " + tk + " or empty, got " + ext2(dropped));
        if (values.extent(1) != static_cast<std::int64_t>(alphabet_size))
            bad("values", "expected rows of 260 probabilities, got " + ext2(values));
        if (layout == target_layout::dense) {
            if (values.extent(0) != tokens * heads)
                bad("values", "dense targets need one row per slot: expected [" + std::to_string(tokens * heads) +
                                  ", 260], got " + ext2(values));
        } else if (slots.extent(0) != values.extent(0)) {
            bad("slots", "compact targets need one slot index per row: " + std::to_string(values.extent(0)) + " rows, " +
                             std::to_string(slots.extent(0)) + " slot indices");
        }
        if (values.device() != mask.device() || true_bytes.device() != mask.device() ||
            (layout == target_layout::compact && slots.device() != mask.device()))
            bad("values", "every member must be on one device");
    }
};

/// Owning slot targets for a padded batch [batch, positions, heads] (what bld::distiller
/// returns). Memory: the values (compact: the active slots only) plus a few bytes per slot.
class target_batch {
public:
    target_batch() = default;
    target_batch(std::int64_t batch, std::int64_t positions, std::int64_t heads, target_layout layout, dtype precision)
        : batch_(batch), positions_(positions), heads_(heads), layout_(layout), precision_(precision) {
        if (precision != dtype::f32 && precision != dtype::bf16)
            throw value_error("bld::target_batch", "precision",
                              "targets are float32 or bfloat16, not " + std::string(to_string(precision)));
        const auto n = static_cast<std::size_t>(slot_count());
        mask_.assign(n, 0);
        true_bytes_.assign(n, -1);
        dropped_.assign(n, 0.0f);
    }

    [[nodiscard]] std::int64_t batch() const noexcept { return batch_; }
    [[nodiscard]] std::int64_t positions() const noexcept { return positions_; }
    [[nodiscard]] std::int64_t heads() const noexcept { return heads_; }
    /// batch · positions: the T of the loss's [T, K] slots.
    [[nodiscard]] std::int64_t tokens() const noexcept { return batch_ * positions_; }
    [[nodiscard]] std::int64_t slot_count() const noexcept { return tokens() * heads_; }
    /// Active slots (= rows of compact values).
    [[nodiscard]] std::int64_t active_slots() const noexcept { return active_; }
    [[nodiscard]] target_layout layout() const noexcept { return layout_; }
    /// dtype::f32 or dtype::bf16.
    [[nodiscard]] dtype precision() const noexcept { return precision_; }
    /// Rows of the values array (compact: active slots; dense: every slot).
    [[nodiscard]] std::int64_t value_rows() const noexcept {
        return layout_ == target_layout::compact ? active_ : slot_count();
    }

    /// The view the losses take, for the stored precision P (float or bf16).
    /// @throws value_error when P is not the stored precision.
    template <class P>
        requires(std::same_as<P, float> || std::same_as<P, bf16>)
    [[nodiscard]] slot_targets_view<P> view() const {
        if (dtype_of<P> != precision_)
            throw value_error("bld::target_batch::view", "element type",
                              "the targets are " + std::string(to_string(precision_)) + ", not " +
                                  std::string(to_string(dtype_of<P>)));
        slot_targets_view<P> v;
        v.layout = layout_;
        v.tokens = tokens();
        v.heads = heads_;
        v.values = tensor_view<const P, 2>(values_data<P>(), {value_rows(), static_cast<std::int64_t>(alphabet_size)});
        if (layout_ == target_layout::compact) v.slots = tensor_view<const std::int64_t, 1>(slots_.data(), {active_});
        v.mask = tensor_view<const std::uint8_t, 2>(mask_.data(), {tokens(), heads_});
        v.true_bytes = tensor_view<const std::int32_t, 2>(true_bytes_.data(), {tokens(), heads_});
        v.dropped = tensor_view<const float, 2>(dropped_.data(), {tokens(), heads_});
        return v;
    }
    /// Values as float32 / bf16 [value_rows, 260] (the stored precision only).
    [[nodiscard]] tensor_view<const float, 2> values_f32() const { return view<float>().values; }
    [[nodiscard]] tensor_view<const bf16, 2> values_bf16() const { return view<bf16>().values; }
    /// [batch, positions, heads] views.
    [[nodiscard]] tensor_view<const std::uint8_t, 3> mask() const noexcept {
        return {mask_.data(), {batch_, positions_, heads_}};
    }
    [[nodiscard]] tensor_view<const std::int32_t, 3> true_bytes() const noexcept {
        return {true_bytes_.data(), {batch_, positions_, heads_}};
    }
    [[nodiscard]] tensor_view<const float, 3> dropped() const noexcept {
        return {dropped_.data(), {batch_, positions_, heads_}};
    }
    /// Compact only: the flat slot index of each row [active_slots].
    [[nodiscard]] tensor_view<const std::int64_t, 1> slots() const noexcept { return {slots_.data(), {active_}}; }

    // Mutable storage, for the producer (bld::distiller) and for bindings that hand the memory on.
    [[nodiscard]] std::vector<std::uint8_t>& mask_storage() noexcept { return mask_; }
    [[nodiscard]] std::vector<std::int32_t>& true_bytes_storage() noexcept { return true_bytes_; }
    [[nodiscard]] std::vector<float>& dropped_storage() noexcept { return dropped_; }
    [[nodiscard]] std::vector<std::int64_t>& slots_storage() noexcept { return slots_; }
    [[nodiscard]] std::vector<float>& values_f32_storage() noexcept { return f32_; }
    [[nodiscard]] std::vector<bf16>& values_bf16_storage() noexcept { return bf16_; }
    /// Sizes the values for `active` active slots (the producer calls it once the mask is known).
    void allocate_values(std::int64_t active) {
        active_ = active;
        const auto n = static_cast<std::size_t>(value_rows()) * alphabet_size;
        if (precision_ == dtype::f32) f32_.assign(n, 0.0f);
        else bf16_.assign(n, bf16{});
        if (layout_ == target_layout::compact) slots_.assign(static_cast<std::size_t>(active), 0);
    }

private:
    template <class P>
    [[nodiscard]] const P* values_data() const noexcept {
        if constexpr (std::same_as<P, float>) return f32_.data();
        else return bf16_.data();
    }

    std::int64_t batch_ = 0, positions_ = 0, heads_ = 0, active_ = 0;
    target_layout layout_ = target_layout::compact;
    dtype precision_ = dtype::f32;
    std::vector<float> f32_;
    std::vector<bf16> bf16_;
    std::vector<std::int64_t> slots_;
    std::vector<std::uint8_t> mask_;
    std::vector<std::int32_t> true_bytes_;
    std::vector<float> dropped_;
};

} // namespace bld
