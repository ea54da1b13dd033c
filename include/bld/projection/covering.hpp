// bld/projection/covering.hpp — the covering methods (docs/01_method.md, "Exact covering", "Covering beam",
// "Canonical path with local repair"): the teacher concept, exact covering enumeration (the
// oracle), the covering beam, and the canonical path repaired by the beam where it drops mass.
#pragma once

#include "bld/projection/canonical_path.hpp"
#include "bld/projection/distributions.hpp"

#include "bld/core/error.hpp"
#include "bld/backends/reference/row_pass.hpp"
#include "bld/core/tensor.hpp"
#include "bld/vocab/trie.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <map>
#include <numeric>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace bld {

// ---------------------------------------------------------------------------------------------
// Teachers for the covering methods.

/// A teacher the covering methods can call: given a batch of token contexts (text token ids;
/// the teacher adds its own BOS or prompt), it writes one row of logits per context.
/// `out` is resized to contexts.size() × row_size(), row-major.
template <class T>
concept teacher_model = requires(T& t, const std::vector<std::vector<std::int32_t>>& contexts, std::vector<float>& out) {
    { t.row_size() } -> std::convertible_to<std::size_t>;
    t.logits(contexts, out);
};

/// A teacher whose rows depend on the context only through a key (a Markov teacher: an n-gram
/// model's last n−1 tokens). Covering methods then merge paths with equal keys, exactly.
template <class T>
concept keyed_teacher = teacher_model<T> && requires(const T& t, const std::vector<std::int32_t>& ctx) {
    { t.context_key(ctx) } -> std::convertible_to<std::uint64_t>;
};

namespace detail {

/// Rows fetched from a teacher, with their summaries; node sums on demand.
struct row_store {
    std::vector<std::vector<float>> rows;
    std::vector<row_summary> sums;
    std::vector<std::uint16_t> bins;
    std::size_t n = 0;
    std::size_t fetched = 0;  ///< rows asked of the teacher so far
};

/// Adds one row to the store (summarised, validated); returns its handle.
inline std::size_t store_row(const byte_trie& trie, row_store& store, std::vector<float> row) {
    store.sums.push_back(reference::summarize_row(trie, store.bins, std::span<const float>(row), store.rows.size()));
    store.rows.push_back(std::move(row));
    return store.rows.size() - 1;
}

/// One teacher call: a row of logits per context into `buf`; returns the row size.
/// @throws shape_error (naming `op`) when the teacher wrote another number of logits
template <class Teacher>
inline std::size_t call_teacher(Teacher& teacher, const std::vector<std::vector<std::int32_t>>& contexts,
                                std::vector<float>& buf, const char* op) {
    teacher.logits(contexts, buf);
    const std::size_t n = teacher.row_size();
    if (buf.size() != contexts.size() * n)
        throw shape_error(op, "teacher output",
                          "the teacher wrote " + std::to_string(buf.size()) + " logits for " + std::to_string(contexts.size()) +
                              " contexts of row size " + std::to_string(n));
    return n;
}

template <class Teacher>
inline void fetch_rows(Teacher& teacher, const byte_trie& trie, row_store& store,
                       const std::vector<std::vector<std::int32_t>>& contexts, std::vector<std::size_t>& handles) {
    handles.clear();
    if (contexts.empty()) return;
    std::vector<float> buf;
    const std::size_t n = call_teacher(teacher, contexts, buf, "covering projection");
    store.fetched += contexts.size();
    for (std::size_t c = 0; c < contexts.size(); ++c)
        handles.push_back(store_row(trie, store,
                                    std::vector<float>(buf.begin() + static_cast<std::ptrdiff_t>(c * n),
                                                       buf.begin() + static_cast<std::ptrdiff_t>((c + 1) * n))));
}

/// Probability-unit node sums of a stored row.
inline void stored_node(const byte_trie& trie, const row_store& store, std::size_t h, byte_trie::node_index n, node_sums& out) {
    const auto& s = store.sums[h];
    reference::sum_node(trie, std::span<const float>(store.rows[h]), n, s.max_logit, out);
    const double inv = s.probability(s.max_logit);
    out.end *= inv;
    for (auto& c : out.child) c *= inv;
}

template <class Teacher>
inline std::uint64_t key_of(const Teacher& t, const std::vector<std::int32_t>& ctx) {
    if constexpr (keyed_teacher<Teacher>) return static_cast<std::uint64_t>(t.context_key(ctx));
    else return 0;
}

} // namespace detail

/// Options of the exact enumeration.
struct exact_options {
    /// Refuse texts whose covering paths need more states than this (keyed teachers merge paths,
    /// so for them this bounds (offset, key) pairs).
    std::size_t max_states = std::size_t{1} << 20;
};

/// Exact covering enumeration: every token path that decodes exactly to a prefix x[0..o) is a
/// state with its probability; each contributes, for every i ≥ o, the masses of its row's tokens
/// starting with x[o..i) (and at i = o its STOP mass). For keyed (Markov) teachers, states with
/// equal (offset, key) merge. Cost grows with the number of segmentations: for small
/// vocabularies and short texts — the oracle the other methods are held against.
/// @returns [text bytes + 1, 260]: row i is the distribution of byte i given x[0..i); the last
///          row is what follows the whole text (STOP included).
template <teacher_model Teacher>
[[nodiscard]] byte_distributions exact_covering(const byte_trie& trie, Teacher& teacher, std::string_view text,
                                                const exact_options& opt = {}) {
    const char* op = "exact covering";
    if (text.empty()) throw value_error(op, "text", "empty text");
    const std::size_t L = text.size();
    struct state {
        std::vector<std::int32_t> ctx;
        double w;
    };
    std::vector<std::vector<state>> at(L + 1);
    std::vector<std::unordered_map<std::uint64_t, std::size_t>> index(L + 1);
    at[0].push_back({{}, 1.0});
    std::vector<double> num((L + 1) * root_bin_count, 0.0);
    detail::row_store store;
    store.bins = root_bins(trie);
    std::size_t total_states = 1;
    node_sums ns;
    std::vector<std::size_t> handles;
    for (std::size_t o = 0; o <= L; ++o) {
        auto& states = at[o];
        if (states.empty()) continue;
        std::vector<std::vector<std::int32_t>> ctxs;
        for (const auto& s : states) ctxs.push_back(s.ctx);
        store.rows.clear();
        store.sums.clear();
        detail::fetch_rows(teacher, trie, store, ctxs, handles);
        for (std::size_t si = 0; si < states.size(); ++si) {
            const auto& st = states[si];
            const auto h = handles[si];
            const auto& sum = store.sums[h];
            for (std::size_t a = 0; a < root_bin_count; ++a) num[o * root_bin_count + a] += st.w * sum.root[a];
            auto n = byte_trie::root;
            for (std::size_t i = o + 1; i <= L; ++i) {
                n = trie.child(n, static_cast<std::uint8_t>(text[i - 1]));
                if (n == byte_trie::npos) break;
                detail::stored_node(trie, store, h, n, ns);
                for (std::size_t a = 0; a < 256; ++a) num[i * root_bin_count + a] += st.w * ns.child[a];
                // Tokens ending exactly at i start new states there.
                const auto& nd = trie.node(n);
                for (auto k = nd.lo; k < nd.end_hi; ++k) {
                    const auto id = trie.order()[k];
                    const double p = sum.probability(static_cast<double>(store.rows[h][id]));
                    if (!(p > 0)) continue;
                    auto ctx = st.ctx;
                    ctx.push_back(static_cast<std::int32_t>(id));
                    const auto key = detail::key_of(teacher, ctx);
                    if constexpr (keyed_teacher<Teacher>) {
                        auto it = index[i].find(key);
                        if (it != index[i].end()) {
                            at[i][it->second].w += st.w * p;
                            continue;
                        }
                        index[i].emplace(key, at[i].size());
                    }
                    if (++total_states > opt.max_states)
                        throw value_error(op, "byte offset " + std::to_string(i),
                                          "more than " + std::to_string(opt.max_states) +
                                              " covering states: the text is too long for exact enumeration "
                                              "(use covering_beam)");
                    at[i].push_back({std::move(ctx), st.w * p});
                }
            }
        }
        states.clear();
        states.shrink_to_fit();
    }
    byte_distributions out;
    out.resize(L + 1);
    out.teacher_rows = store.fetched;
    for (std::size_t i = 0; i <= L; ++i) detail::normalise_into(out, i, num.data() + i * root_bin_count, op);
    return out;
}

/// Options of the covering beam.
struct beam_options {
    std::size_t k = 10;    ///< keep at most k hypotheses (0 = unlimited)
    double epsilon = 0.01; ///< prune hypotheses below epsilon × the total mass (0 = never)
};

namespace detail {

/// The canonical path a repaired projection follows (repaired_path): the teacher's own
/// tokenization t_0 … t_{m−1}, the rows of its contexts (fetched in one batch up front; row j =
/// p(· | t_<j)), and the byte positions at which the local covering beam runs.
struct canonical_guide {
    std::vector<std::int32_t> ids;
    std::vector<std::size_t> end;          ///< [m]: byte offset at which token j ends (o_{j+1})
    std::vector<std::vector<float>> rows;  ///< [m]; a row is released once the beam has it
    std::vector<char> repaired;            ///< [text bytes]: 1 = the local beam runs at this byte
};

/// The covering beam's state and its steps, byte by byte (see covering_beam). With a
/// canonical_guide it is the repaired path (see repaired_path): the hypothesis on the teacher's
/// own tokenization is always kept, and at the bytes the guide does not repair the beam keeps
/// nothing else — exactly the canonical path's bookkeeping there.
template <class Teacher>
class covering_beam_search {
public:
    covering_beam_search(const byte_trie& trie, Teacher& teacher, std::string_view text, const beam_options& opt,
                         canonical_guide* guide = nullptr)
        : trie_(trie), teacher_(teacher), text_(text), opt_(opt), guide_(guide) {
        if (text.empty()) throw value_error(op(), "text", "empty text");
        if (!(opt.epsilon >= 0.0 && opt.epsilon < 1.0))
            throw value_error(op(), "epsilon", "must be in [0, 1), got " + std::to_string(opt.epsilon));
        store_.bins = root_bins(trie);
        if (guide_) {
            beam_.push_back({{}, guide_row(0), byte_trie::root, 1.0, 0.0, true});
        } else {
            detail::fetch_rows(teacher_, trie_, store_, {{}}, handles_);
            beam_.push_back({{}, handles_[0], byte_trie::root, 1.0});
        }
        // The beam adds the row of what follows the whole text; the repaired path, like the
        // canonical path, ends with the text's last byte.
        positions_ = guide_ ? text.size() : text.size() + 1;
        out_.resize(positions_);
    }

    byte_distributions run() {
        for (std::size_t i = 0; i < positions_; ++i) {
            const bool closed = guide_ && !guide_->repaired[i];
            out_.repaired += guide_ && !closed ? 1 : 0;
            expand(i, closed);
            select(i, closed);
            read_distribution(i);
            if (i + 1 == positions_) break;
            follow(i, static_cast<std::uint8_t>(text_[i]));
            drop_unused_rows();
            if (beam_.empty())
                throw value_error(op(), "byte offset " + std::to_string(i + 1),
                                  "no token path covers the text up to here (every path has probability 0)");
        }
        out_.teacher_rows = store_.fetched;
        return std::move(out_);
    }

private:
    const char* op() const noexcept { return guide_ ? "repaired canonical path" : "covering beam"; }

    struct hypothesis {
        std::vector<std::int32_t> ctx;
        std::size_t row;            ///< handle into the row store
        byte_trie::node_index node;
        double w;                   ///< probability of the path's tokens (rescaled each byte: the kept masses sum to 1)
        double mass = 0;            ///< w × (children mass at node, or 1 at the root)
        bool canonical = false;     ///< on the teacher's own tokenization (a guided search), within its token
    };
    struct candidate {
        double mass;
        std::size_t idx;            ///< < beam size: an existing hypothesis; else a new context (idx − beam size)
    };

    /// The guide's row j into the store (counted as fetched: the guide asked the teacher for it).
    std::size_t guide_row(std::size_t j) {
        auto& r = guide_->rows.at(j);
        if (r.empty()) throw value_error(op(), "token position " + std::to_string(j), "the canonical row was used twice");
        const auto h = detail::store_row(trie_, store_, std::move(r));
        r = std::vector<float>();
        ++store_.fetched;
        return h;
    }

    /// Whether canonical hypothesis `hy` ends its token t_j at byte i (a boundary of the teacher's
    /// tokenization): then its next context is t_<j+1.
    bool at_canonical_end(const hypothesis& hy, std::size_t i) const {
        return guide_ && hy.canonical && hy.ctx.size() < guide_->end.size() && guide_->end[hy.ctx.size()] == i;
    }

    /// Step 1: the tokens that end at each hypothesis's node become new contexts (root
    /// hypotheses-to-be); for keyed teachers, contexts with equal keys merge (equal futures).
    /// At a byte the guide does not repair, only the canonical hypothesis continues, at the end of
    /// its token, with the canonical next token carrying the mass of every token ending there (the
    /// canonical path's E_j); every other ending token is lost (counted as dropped).
    void expand(std::size_t i, bool closed) {
        sums_.assign(beam_.size(), node_sums{});
        new_ctx_.clear();
        new_w_.clear();
        new_canonical_.clear();
        lost_ = 0;
        for (std::size_t h = 0; h < beam_.size(); ++h) {
            const auto& hy = beam_[h];
            if (hy.node == byte_trie::root) continue;
            detail::stored_node(trie_, store_, hy.row, hy.node, sums_[h]);
            const bool canonical_end = at_canonical_end(hy, i);
            if (closed) {
                if (canonical_end && sums_[h].end > 0) {
                    auto ctx = hy.ctx;
                    ctx.push_back(guide_->ids[hy.ctx.size()]);
                    new_ctx_.push_back(std::move(ctx));
                    new_w_.push_back(hy.w * sums_[h].end);
                    new_canonical_.push_back(1);
                } else {
                    lost_ += hy.w * sums_[h].end;
                }
                continue;
            }
            const auto& nd = trie_.node(hy.node);
            const auto& s = store_.sums[hy.row];
            for (auto k = nd.lo; k < nd.end_hi; ++k) {
                const auto id = trie_.order()[k];
                const double p = s.probability(static_cast<double>(store_.rows[hy.row][id]));
                if (!(p > 0)) continue;
                auto ctx = hy.ctx;
                ctx.push_back(static_cast<std::int32_t>(id));
                new_ctx_.push_back(std::move(ctx));
                new_w_.push_back(hy.w * p);
                new_canonical_.push_back(canonical_end && static_cast<std::int32_t>(id) == guide_->ids[hy.ctx.size()]);
            }
        }
        if constexpr (keyed_teacher<Teacher>) {
            std::unordered_map<std::uint64_t, std::size_t> seen;
            std::vector<std::vector<std::int32_t>> mc;
            std::vector<double> mw;
            std::vector<char> mcan;
            for (std::size_t c = 0; c < new_ctx_.size(); ++c) {
                const auto key = detail::key_of(teacher_, new_ctx_[c]);
                auto [it, fresh] = seen.emplace(key, mc.size());
                if (fresh) {
                    mc.push_back(std::move(new_ctx_[c]));
                    mw.push_back(new_w_[c]);
                    mcan.push_back(new_canonical_[c]);
                } else {
                    mw[it->second] += new_w_[c];
                    // Equal keys, equal futures: the merged path keeps the canonical context.
                    if (new_canonical_[c]) {
                        mc[it->second] = std::move(new_ctx_[c]);
                        mcan[it->second] = 1;
                    }
                }
            }
            new_ctx_ = std::move(mc);
            new_w_ = std::move(mw);
            new_canonical_ = std::move(mcan);
        }
    }

    /// Step 2: masses, pruning below ε of the total and to the top K (before any teacher row is
    /// fetched for a new context: a pruned path costs no teacher call), the pruned share of byte
    /// i, one batched teacher call for the surviving new contexts, and the next beam. What was
    /// pruned is remembered for this byte's recovery (step 4). A guided search always keeps its
    /// canonical hypotheses, and at a byte it does not repair keeps only them.
    void select(std::size_t i, bool closed) {
        for (std::size_t h = 0; h < beam_.size(); ++h)
            beam_[h].mass = beam_[h].node == byte_trie::root ? beam_[h].w : beam_[h].w * sums_[h].children_total();
        std::vector<candidate> cands;
        double total = lost_;
        const auto is_canonical = [&](std::size_t idx) {
            return idx < beam_.size() ? beam_[idx].canonical : new_canonical_[idx - beam_.size()] != 0;
        };
        for (std::size_t h = 0; h < beam_.size(); ++h) {
            cands.push_back({beam_[h].mass, h});
            total += beam_[h].mass;
        }
        for (std::size_t c = 0; c < new_w_.size(); ++c) {
            cands.push_back({new_w_[c], beam_.size() + c});
            total += new_w_[c];
        }
        if (!(total > 0)) throw value_error(op(), "byte offset " + std::to_string(i), "every hypothesis has probability 0");
        std::vector<candidate> kept;
        if (!closed) {
            for (const auto& c : cands)
                if (c.mass > 0 && c.mass >= opt_.epsilon * total) kept.push_back(c);
            std::stable_sort(kept.begin(), kept.end(), [](const candidate& a, const candidate& b) { return a.mass > b.mass; });
            if (opt_.k > 0 && kept.size() > opt_.k) kept.resize(opt_.k);
        }
        if (guide_)
            for (const auto& c : cands)
                if (is_canonical(c.idx) && std::none_of(kept.begin(), kept.end(), [&](const candidate& k) { return k.idx == c.idx; }))
                    kept.push_back(c);
        std::sort(kept.begin(), kept.end(), [](const candidate& a, const candidate& b) { return a.idx < b.idx; });
        double kept_mass = 0;
        for (const auto& c : kept) kept_mass += c.mass;
        out_.dropped[i] = 1.0 - kept_mass / total;

        // Rows of the kept new contexts: the canonical one from the guide, the others in one call.
        std::vector<std::vector<std::int32_t>> fetch;
        for (const auto& c : kept)
            if (c.idx >= beam_.size() && !is_canonical(c.idx)) fetch.push_back(new_ctx_[c.idx - beam_.size()]);
        detail::fetch_rows(teacher_, trie_, store_, fetch, handles_);

        std::vector<char> is_kept(cands.size(), 0);
        for (const auto& c : kept) is_kept[c.idx] = 1;
        pruned_old_.clear();
        pruned_old_sums_.clear();
        pruned_new_.clear();
        for (std::size_t c = 0; c < cands.size(); ++c) {
            if (is_kept[c] || !(cands[c].mass > 0)) continue;
            if (c < beam_.size()) {
                pruned_old_.push_back(beam_[c]);
                pruned_old_sums_.push_back(sums_[c]);
            } else {
                pruned_new_.push_back(c - beam_.size());
            }
        }
        std::vector<hypothesis> next;
        next_sums_.clear();
        std::size_t f = 0;
        for (const auto& c : kept) {
            if (c.idx < beam_.size()) {
                next.push_back(std::move(beam_[c.idx]));
                next_sums_.push_back(sums_[c.idx]);
            } else {
                const auto ci = c.idx - beam_.size();
                const bool canonical = new_canonical_[ci] != 0;
                const auto row = canonical ? guide_row(new_ctx_[ci].size()) : handles_[f++];
                next.push_back({std::move(new_ctx_[ci]), row, byte_trie::root, new_w_[ci], new_w_[ci], canonical});
                next_sums_.push_back(node_sums{});
            }
        }
        beam_ = std::move(next);
        // The kept masses are rescaled to sum to 1: only ratios matter (each distribution is
        // normalised, `dropped` is a share), and a long text's path probabilities underflow.
        if (kept_mass > 0)
            for (auto& hy : beam_) {
                hy.w /= kept_mass;
                hy.mass /= kept_mass;
            }
    }

    /// Step 3: the distribution of byte i, Σ over hypotheses of w × (root masses of the path's
    /// next row, or the child masses at its node).
    void read_distribution(std::size_t i) {
        std::array<double, root_bin_count> num{};
        for (std::size_t h = 0; h < beam_.size(); ++h) {
            const auto& hy = beam_[h];
            if (hy.node == byte_trie::root) {
                for (std::size_t a = 0; a < root_bin_count; ++a) num[a] += hy.w * store_.sums[hy.row].root[a];
            } else {
                for (std::size_t a = 0; a < 256; ++a) num[a] += hy.w * next_sums_[h].child[a];
            }
        }
        detail::normalise_into(out_, i, num.data(), op());
    }

    /// Step 4: every hypothesis follows the observed byte x (byte i); if none can, recover. A
    /// canonical hypothesis that moves past the end of its token is canonical no more (the
    /// canonical path's "longer token" hypothesis, kept only where the beam runs).
    void follow(std::size_t i, std::uint8_t x) {
        std::vector<hypothesis> moved;
        for (auto& hy : beam_) {
            const auto c = trie_.child(hy.node, x);
            if (c == byte_trie::npos) continue;
            hy.node = c;
            if (hy.canonical && guide_->end[hy.ctx.size()] < i + 1) hy.canonical = false;
            moved.push_back(std::move(hy));
        }
        if (moved.empty()) {
            moved = recover(i, x);
            ++out_.recoveries;
        }
        beam_ = std::move(moved);
    }

    /// The kept hypotheses give the observed byte no mass (a narrow beam kept only paths inside
    /// longer tokens): bring back the pruned hypotheses that can take it — fetching rows for
    /// pruned new contexts in one batch — best first by their mass after the byte, at most K.
    /// If none can either (every path that covers the text so far was pruned at an earlier byte),
    /// the beam restarts on the text's fewest-token tokenization (backstop).
    std::vector<hypothesis> recover(std::size_t i, std::uint8_t x) {
        struct back {
            double mass;
            hypothesis h;
        };
        std::vector<back> backs;
        for (std::size_t h = 0; h < pruned_old_.size(); ++h) {
            auto& hy = pruned_old_[h];
            const auto c = trie_.child(hy.node, x);
            const double m = hy.w * pruned_old_sums_[h].child[x];
            if (c == byte_trie::npos || !(m > 0)) continue;
            hy.node = c;
            hy.canonical = false;
            backs.push_back({m, std::move(hy)});
        }
        std::vector<std::vector<std::int32_t>> ctxs;
        for (auto ci : pruned_new_) ctxs.push_back(new_ctx_[ci]);
        detail::fetch_rows(teacher_, trie_, store_, ctxs, handles_);
        for (std::size_t q = 0; q < pruned_new_.size(); ++q) {
            const auto ci = pruned_new_[q];
            const double m = new_w_[ci] * store_.sums[handles_[q]].root[x];
            const auto c = trie_.child(byte_trie::root, x);
            if (c == byte_trie::npos || !(m > 0)) continue;
            backs.push_back({m, hypothesis{std::move(ctxs[q]), handles_[q], c, new_w_[ci], new_w_[ci]}});
        }
        std::stable_sort(backs.begin(), backs.end(), [](const back& a, const back& b) { return a.mass > b.mass; });
        if (opt_.k > 0 && backs.size() > opt_.k) backs.resize(opt_.k);
        std::vector<hypothesis> moved;
        for (auto& b : backs) moved.push_back(std::move(b.h));
        if (moved.empty() && !guide_) backstop(i, moved);
        return moved;
    }

    /// A dead end at byte i: no kept or just-pruned path covers text[0..i]. The beam goes on
    /// from the hypothesis of the text's tokenization with the fewest tokens (ties: longer tokens
    /// first; found on the trie alone, once): its tokens that end at or before byte i as the
    /// context (one teacher row), inside the token that covers byte i. It is the only hypothesis
    /// left, so its weight restarts at 1 (the distributions are normalised per byte). Nothing is
    /// added when no tokenization covers the text up to byte i + 1 (the caller then reports it).
    void backstop(std::size_t i, std::vector<hypothesis>& moved) {
        const std::size_t L = text_.size();
        if (backstop_.empty()) {
            // fewest[p]: fewest tokens that cover text[p..L) (SIZE_MAX: none); first[p]: their first token.
            std::vector<std::size_t> fewest(L + 1, SIZE_MAX), len(L + 1, 0);
            std::vector<std::int32_t> first(L + 1, -1);
            fewest[L] = 0;
            for (std::size_t p = L; p-- > 0;) {
                byte_trie::node_index n = byte_trie::root;
                for (std::size_t q = p; q < L; ++q) {
                    n = trie_.child(n, static_cast<std::uint8_t>(text_[q]));
                    if (n == byte_trie::npos) break;
                    const auto& nd = trie_.node(n);
                    if (nd.end_hi == nd.lo || fewest[q + 1] == SIZE_MAX) continue;
                    if (fewest[q + 1] + 1 <= fewest[p]) {  // <=: the longer token wins a tie
                        fewest[p] = fewest[q + 1] + 1;
                        first[p] = static_cast<std::int32_t>(trie_.order()[nd.lo]);
                        len[p] = q + 1 - p;
                    }
                }
            }
            if (fewest[0] == SIZE_MAX) return;
            for (std::size_t p = 0; p < L; p += len[p]) backstop_.push_back({first[p], p + len[p]});
        }
        std::vector<std::int32_t> ctx;
        std::size_t start = 0, j = 0;
        while (j < backstop_.size() && backstop_[j].end <= i) {
            ctx.push_back(backstop_[j].id);
            start = backstop_[j].end;
            ++j;
        }
        if (j == backstop_.size()) return;
        byte_trie::node_index n = byte_trie::root;
        for (std::size_t q = start; q <= i && n != byte_trie::npos; ++q) n = trie_.child(n, static_cast<std::uint8_t>(text_[q]));
        if (n == byte_trie::npos) return;
        detail::fetch_rows(teacher_, trie_, store_, {ctx}, handles_);
        moved.push_back(hypothesis{std::move(ctx), handles_[0], n, 1.0, 1.0});
    }

    /// Drops the rows no hypothesis uses any more: memory stays at O(K) rows.
    void drop_unused_rows() {
        std::vector<std::size_t> remap(store_.rows.size(), SIZE_MAX);
        detail::row_store compact;
        compact.bins = std::move(store_.bins);
        compact.fetched = store_.fetched;
        for (auto& hy : beam_) {
            if (remap[hy.row] == SIZE_MAX) {
                remap[hy.row] = compact.rows.size();
                compact.rows.push_back(std::move(store_.rows[hy.row]));
                compact.sums.push_back(store_.sums[hy.row]);
            }
            hy.row = remap[hy.row];
        }
        store_ = std::move(compact);
    }

    const byte_trie& trie_;
    Teacher& teacher_;
    std::string_view text_;
    beam_options opt_;
    canonical_guide* guide_;
    std::size_t positions_ = 0;
    detail::row_store store_;
    std::vector<std::size_t> handles_;
    std::vector<hypothesis> beam_;
    std::vector<node_sums> sums_, next_sums_;          ///< node sums of beam_ (before / after select)
    std::vector<std::vector<std::int32_t>> new_ctx_;   ///< this byte's new contexts …
    std::vector<double> new_w_;                        ///< … their path probabilities …
    std::vector<char> new_canonical_;                  ///< … and whether each is the canonical next context
    double lost_ = 0;                                  ///< mass of ending tokens a closed byte does not continue
    struct backstop_token {
        std::int32_t id;
        std::size_t end;  ///< byte offset after the token
    };
    std::vector<backstop_token> backstop_;             ///< the fewest-token tokenization, once needed
    std::vector<hypothesis> pruned_old_;               ///< what select pruned, for recover
    std::vector<node_sums> pruned_old_sums_;
    std::vector<std::size_t> pruned_new_;
    byte_distributions out_;
};

} // namespace detail

/// Covering beam (Vieira et al. 2024; docs/01_method.md, "Covering beam"): hypotheses are (token path, trie node in
/// the path's next-token row, weight). At each byte, hypotheses whose node ends tokens spawn
/// new paths (one batched teacher call for all new contexts), then those below ε of the total
/// mass are pruned, the top K kept, the distribution read off, and every hypothesis follows
/// the observed byte. With K = ∞ and ε = 0 it equals exact_covering. If no kept hypothesis can
/// take the observed byte (a narrow beam kept only paths inside longer tokens), the best pruned
/// hypotheses that can are brought back, or, when every path that covers the text so far was
/// pruned at an earlier byte, the beam restarts on the text's fewest-token tokenization;
/// `recoveries` counts such bytes.
/// @returns [text bytes + 1, 260] as exact_covering; `dropped` = mass pruned at each byte;
///          `teacher_rows` = contexts asked of the teacher.
template <teacher_model Teacher>
[[nodiscard]] byte_distributions covering_beam(const byte_trie& trie, Teacher& teacher, std::string_view text,
                                               const beam_options& opt = {}) {
    return detail::covering_beam_search<Teacher>(trie, teacher, text, opt).run();
}

/// Options of the repaired canonical path.
struct repair_options {
    /// The local covering beam runs at every byte position whose canonical-path dropped mass is at
    /// least this (in [0, 1]): 0 = every position (the covering beam with `beam`'s K and ε, the
    /// canonical hypothesis always kept); 1 = none where the canonical path keeps any mass (then
    /// it is the canonical path). Smaller thresholds ask the teacher for more rows.
    double threshold = 0.05;
    beam_options beam{};  ///< K and ε of the local beam
};

/// The canonical path with local repair (docs/01_method.md, "Canonical path with local repair"):
/// the teacher's rows along its own tokenization `ids` (one batched call, m rows), the canonical
/// path over them, and then, at the byte positions where the canonical path dropped at least
/// `threshold` of the mass, a covering beam in place of the canonical path's single hypothesis:
/// the paths it dropped there (tokens ending inside a canonical token, the longer-token
/// hypothesis after a boundary) are followed, each new context asking the teacher for one more
/// row, batched per byte, pruned by the beam's ε and K. At the other positions only the
/// canonical path's hypothesis continues, as the canonical path does.
/// @param ids the teacher's text tokens of `text` (no BOS: the teacher adds its context)
/// @returns [text bytes, 260] (as the canonical path: no row after the last byte); `dropped` =
///          mass dropped or pruned at each byte; `teacher_rows` = rows asked of the teacher, the m
///          canonical rows included; `repaired` = positions where the beam ran.
/// @throws value_error for a threshold outside [0, 1], bad ids, and what the canonical path and
///         the beam throw (alignment_error if the ids do not spell `text`).
template <teacher_model Teacher>
[[nodiscard]] byte_distributions repaired_path(const byte_trie& trie, Teacher& teacher, std::string_view text,
                                               std::span<const std::int64_t> ids, const repair_options& opt = {}) {
    const char* op = "repaired canonical path";
    if (!(opt.threshold >= 0.0 && opt.threshold <= 1.0))
        throw value_error(op, "threshold", "must be in [0, 1], got " + std::to_string(opt.threshold));
    if (text.empty()) throw value_error(op, "text", "empty text");
    const canonical_plan plan = canonical_plan::build(trie, ids, text, op);  // checks the ids and the text
    detail::canonical_guide guide;
    std::vector<std::vector<std::int32_t>> contexts(ids.size());
    std::size_t o = 0;
    for (std::size_t j = 0; j < ids.size(); ++j) {
        guide.ids.push_back(static_cast<std::int32_t>(ids[j]));
        o += trie.vocab().bytes(static_cast<std::size_t>(ids[j])).size();
        guide.end.push_back(o);
        if (j > 0) contexts[j] = contexts[j - 1], contexts[j].push_back(guide.ids[j - 1]);
    }
    std::vector<float> buf;
    const std::size_t n = detail::call_teacher(teacher, contexts, buf, op);
    byte_distributions canonical;
    canonical.resize(plan.bytes.size());
    detail::distributions_sink sink{canonical};
    canonical_path_into(plan,
                        reference::dense_rows<float>(trie, tensor_view<const float, 2>(
                                                               buf.data(), {static_cast<std::int64_t>(ids.size()),
                                                                            static_cast<std::int64_t>(n)})),
                        ids, sink);
    guide.repaired.resize(text.size());
    for (std::size_t i = 0; i < text.size(); ++i) guide.repaired[i] = canonical.dropped[i] >= opt.threshold ? 1 : 0;
    for (std::size_t j = 0; j < ids.size(); ++j)
        guide.rows.emplace_back(buf.begin() + static_cast<std::ptrdiff_t>(j * n), buf.begin() + static_cast<std::ptrdiff_t>((j + 1) * n));
    buf = std::vector<float>();
    return detail::covering_beam_search<Teacher>(trie, teacher, text, opt.beam, &guide).run();
}

} // namespace bld
