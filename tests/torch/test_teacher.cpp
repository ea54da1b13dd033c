// The covering methods with a libtorch model as the teacher (bld/torch/teacher.hpp,
// bld/projection/model_teacher.hpp), built only with bld::torch.
#include <bld/torch/teacher.hpp>
#include <bld/bld.hpp>
#include <bld/testing/toy_teachers.hpp>

#include <doctest/doctest.h>
#include <torch/torch.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "../token_ids.hpp"

namespace {

/// Single bytes a, b, c and multi-byte tokens with many segmentations, duplicates included, and
/// an <eos>.
bld::byte_trie toy_trie() {
    std::vector<bld::token_entry> e{{0, {}, bld::token_kind::special, "<eos>"}};
    const char* toks[] = {"a", "b", "c", "ab", "bc", "abc", "ca", "cab", "bca", "a", "abca"};
    for (int i = 0; i < 11; ++i) e.push_back({i + 1, toks[i], bld::token_kind::text, ""});
    return bld::byte_trie(bld::vocabulary::from_entries(std::move(e), "toy"));
}

/// The bigram table as a torch function: row 0 after BOS, row r after token ids[r − 1].
bld::torch_causal_model bigram_model(const torch::Tensor& table) {
    return bld::torch_causal_model(
        [table](const at::Tensor& ids, const at::Tensor&) {
            const auto B = ids.size(0);
            auto prev = torch::cat({torch::full({B, 1}, -1, torch::kLong), ids}, 1) + 1;  // [B, T + 1]: table rows
            return table.index_select(0, prev.reshape(-1)).reshape({B, prev.size(1), table.size(1)});
        },
        static_cast<std::size_t>(table.size(1)));
}

/// A small recurrent LM (not Markov: a row depends on the whole context), random weights.
struct tiny_lm : torch::nn::Module {
    tiny_lm(std::int64_t vocab, std::int64_t hidden)
        : emb(register_module("emb", torch::nn::Embedding(vocab + 1, hidden))),
          gru(register_module("gru", torch::nn::GRU(torch::nn::GRUOptions(hidden, hidden).batch_first(true)))),
          out(register_module("out", torch::nn::Linear(hidden, vocab))), bos(vocab) {}
    torch::Tensor forward(const torch::Tensor& ids) {
        const auto B = ids.size(0);
        auto x = torch::cat({torch::full({B, 1}, bos, torch::kLong), ids}, 1);
        return out(std::get<0>(gru(emb(x)))) * 3.0;  // [B, T + 1, V], sharp enough to matter
    }
    torch::nn::Embedding emb;
    torch::nn::GRU gru;
    torch::nn::Linear out;
    std::int64_t bos;
};

/// The toy bigram without its context key (the covering methods then merge nothing).
struct unkeyed {
    bld::testing::bigram_teacher& t;
    [[nodiscard]] std::size_t row_size() const { return t.row_size(); }
    void logits(const std::vector<std::vector<std::int32_t>>& c, std::vector<float>& out) const { t.logits(c, out); }
};

double max_diff(const bld::byte_distributions& a, const bld::byte_distributions& b, std::size_t rows) {
    double d = 0;
    for (std::size_t i = 0; i < rows; ++i)
        for (std::size_t s = 0; s < bld::alphabet_size; ++s) d = std::max(d, std::abs(a.at(i)[s] - b.at(i)[s]));
    return d;
}

} // namespace

TEST_CASE("model teacher: a torch bigram gives the toy bigram's rows bit for bit; prefixes are forwarded once") {
    const auto trie = toy_trie();
    const auto V = static_cast<std::int64_t>(trie.vocab().size());
    torch::manual_seed(1);
    const auto table = torch::randn({V + 1, V}) * 1.5;
    bld::testing::bigram_teacher toy(bld::tensor_view<const float, 2>(table.data_ptr<float>(), {V + 1, V}),
                                     static_cast<std::size_t>(V));
    auto model = bigram_model(table);
    bld::model_teacher teacher(model, 2);
    // Contexts with shared prefixes, a duplicate and the empty one, in no order.
    const std::vector<std::vector<std::int32_t>> ctx{{3, 4}, {}, {3}, {3, 4, 5}, {7}, {3, 4}, {7, 1, 2}, {2}};
    std::vector<float> a, b;
    toy.logits(ctx, a);
    teacher.logits(ctx, b);
    REQUIRE(a.size() == b.size());
    CHECK(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
    CHECK(teacher.cost().contexts == ctx.size());
    CHECK(teacher.cost().sequences == 3);   // {3, 4, 5}, {7, 1, 2}, {2}: the others are their prefixes
    CHECK(teacher.cost().positions == 4 + 4 + 2);
    CHECK(teacher.cost().batches == 2);     // at most 2 sequences a call
    // The beam and the repaired path read the same rows as with the toy teacher, so they make the
    // same decisions and give the same targets, bit for bit. (The toy teacher is keyed: its beam
    // merges paths with equal last tokens, which a model cannot know, so it is compared without
    // its key; with the key, the unlimited beam agrees up to rounding.)
    const std::string text = "abcabcabca";
    const auto ids = bld_test::greedy_ids(trie.vocab(), text);
    unkeyed toy_rows{toy};
    for (const bld::beam_options bo : {bld::beam_options{10, 0.01}, bld::beam_options{2, 0.0}, bld::beam_options{0, 0.0}}) {
        CAPTURE(bo.k);
        const auto with_toy = bld::covering_beam(trie, toy_rows, text, bo);
        const auto with_model = bld::covering_beam(trie, teacher, text, bo);
        CHECK(max_diff(with_toy, with_model, text.size() + 1) == 0.0);
        CHECK(with_toy.dropped == with_model.dropped);
        CHECK(with_toy.teacher_rows == with_model.teacher_rows);
        const auto r_toy = bld::repaired_path(trie, toy_rows, text, ids, {0.05, bo});
        const auto r_model = bld::repaired_path(trie, teacher, text, ids, {0.05, bo});
        CHECK(max_diff(r_toy, r_model, text.size()) == 0.0);
    }
    CHECK(max_diff(bld::covering_beam(trie, toy, text, {0, 0.0}), bld::covering_beam(trie, teacher, text, {0, 0.0}),
                   text.size() + 1) <= 1e-12);
}

TEST_CASE("model teacher: a small recurrent torch LM through the covering methods") {
    const auto trie = toy_trie();
    const auto V = static_cast<std::int64_t>(trie.vocab().size());
    torch::manual_seed(7);
    auto lm = std::make_shared<tiny_lm>(V, 16);
    lm->eval();
    bld::torch_causal_model model([lm](const at::Tensor& ids, const at::Tensor&) { return lm->forward(ids); },
                                  static_cast<std::size_t>(V));
    bld::model_teacher teacher(model);
    for (const std::string text : {"abcab", "cabcaab", "bcabca"}) {
        CAPTURE(text);
        const auto ids = bld_test::greedy_ids(trie.vocab(), text);
        const auto exact = bld::exact_covering(trie, teacher, text);
        // The unlimited beam is exact; the repaired path is the canonical path at threshold 1 and
        // exact at threshold 0 with an unlimited beam. (A float32 model's row for a context differs
        // in its last bits with the batch it was computed in — other lengths, other kernels — so
        // methods that ask for a context in different batches agree to ~1e-7, not bit for bit.)
        CHECK(max_diff(bld::covering_beam(trie, teacher, text, {0, 0.0}), exact, text.size() + 1) <= 1e-6);
        std::vector<std::vector<std::int32_t>> ctx(ids.size());
        for (std::size_t j = 1; j < ids.size(); ++j) ctx[j] = ctx[j - 1], ctx[j].push_back(static_cast<std::int32_t>(ids[j - 1]));
        std::vector<float> rows;
        teacher.reset_cost();
        teacher.logits(ctx, rows);
        CHECK(teacher.cost().sequences == 1);  // the canonical contexts are prefixes of the longest
        const auto canonical = bld::reference::canonical_path(
            trie, bld::tensor_view<const float, 2>(rows.data(), {static_cast<std::int64_t>(ids.size()), V}), ids,
            std::string_view(text));
        const auto one = bld::repaired_path(trie, teacher, text, ids, {1.0, {10, 0.01}});
        CHECK(max_diff(one, canonical, text.size()) <= 1e-12);
        CHECK(one.teacher_rows == ids.size());
        CHECK(max_diff(bld::repaired_path(trie, teacher, text, ids, {0.0, {0, 0.0}}), exact, text.size()) <= 1e-6);
    }
}

TEST_CASE("model teacher: a model output of the wrong shape is a clear error") {
    const auto trie = toy_trie();
    const auto V = static_cast<std::int64_t>(trie.vocab().size());
    bld::torch_causal_model short_rows([V](const at::Tensor& ids, const at::Tensor&) { return torch::zeros({ids.size(0), ids.size(1), V}); },
                                       static_cast<std::size_t>(V));
    bld::model_teacher teacher(short_rows);
    CHECK_THROWS_WITH_AS((void)bld::covering_beam(trie, teacher, "abc"), doctest::Contains("one row per prefix"), bld::shape_error);
    CHECK_THROWS_AS(bld::model_teacher(short_rows, 0), bld::value_error);
}
