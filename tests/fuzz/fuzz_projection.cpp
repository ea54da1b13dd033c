// libFuzzer harness: projections with fuzzed vocabularies, rows (any float bit pattern: NaN,
// ±Inf, denormals, huge), ids and texts. Successful calls must return finite, normalised
// distributions.
#include "fuzz_common.hpp"

#include <bld/projection/canonical_path.hpp>
#include <bld/testing/toy_teachers.hpp>
#include <bld/projection/covering.hpp>

#include <cmath>
#include <vector>

namespace {

void check(const bld::byte_distributions& d) {
    for (std::size_t i = 0; i < d.positions; ++i) {
        double s = 0;
        for (double p : d.at(i)) {
            bld_fuzz::require(std::isfinite(p) && p >= 0.0, "finite non-negative probability");
            s += p;
        }
        bld_fuzz::require(std::abs(s - 1.0) < 1e-9, "distribution sums to 1");
        bld_fuzz::require(std::isfinite(d.dropped[i]), "finite dropped mass");
    }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    bld_fuzz::reader in{data, size};
    const unsigned n_tok = 1 + in.take<std::uint8_t>() % 10;
    std::vector<bld::token_entry> entries;
    for (unsigned t = 0; t < n_tok; ++t) {
        const auto spec = in.take<std::uint8_t>();
        std::string bytes;
        for (unsigned k = 0; k < 1 + spec % 3u; ++k) bytes += static_cast<char>('a' + in.take<std::uint8_t>() % 3);
        entries.push_back({t, bytes, spec % 11 == 0 ? bld::token_kind::special : bld::token_kind::text, "t"});
    }
    bld_fuzz::guarded([&] {
        bld::byte_trie trie(bld::vocabulary::from_entries(entries, "fuzz"));
        const std::size_t V = trie.vocab().size();
        const std::size_t n = V + in.take<std::uint8_t>() % 3;
        // Teacher ids and their text.
        const unsigned m = in.take<std::uint8_t>() % 6;
        std::vector<std::int64_t> ids;
        for (unsigned j = 0; j < m; ++j) ids.push_back(static_cast<std::int64_t>(in.take<std::uint8_t>() % (V + 1)));
        const std::size_t R = ids.size() + in.take<std::uint8_t>() % 2;
        std::vector<float> rows(R * n);
        for (auto& z : rows) z = in.take<float>(0.f);
        const bool with_text = in.take<std::uint8_t>() % 2;
        std::string text;
        for (auto id : ids)
            if (id >= 0 && static_cast<std::size_t>(id) < V) text += trie.vocab().bytes(static_cast<std::size_t>(id));
        if (with_text && !text.empty()) text.back() = static_cast<char>(text.back() ^ (in.take<std::uint8_t>() % 2));
        bld_fuzz::guarded([&] {
            check(bld::reference::canonical_path(trie, bld::tensor_view<const float, 2>(rows.data(), {static_cast<std::int64_t>(R), static_cast<std::int64_t>(n)}),
                                      ids, with_text ? std::optional<std::string_view>(text) : std::nullopt));
        });
        // A bigram teacher over the same vocabulary, for the covering methods.
        std::vector<float> table((V + 1) * n);
        for (std::size_t k = 0; k < table.size(); ++k) table[k] = k < rows.size() ? rows[k] : in.take<float>(0.f);
        bld::testing::bigram_teacher teacher(bld::tensor_view<const float, 2>(table.data(), {static_cast<std::int64_t>(V + 1), static_cast<std::int64_t>(n)}), V);
        std::string ctext(std::min<std::size_t>(text.size(), 8), 'a');
        for (std::size_t k = 0; k < ctext.size(); ++k) ctext[k] = text[k];
        bld_fuzz::guarded([&] { check(bld::exact_covering(trie, teacher, ctext, {4096})); });
        const bld::beam_options bo{static_cast<std::size_t>(in.take<std::uint8_t>() % 4), (in.take<std::uint8_t>() % 4) * 0.1};
        bld_fuzz::guarded([&] { check(bld::covering_beam(trie, teacher, ctext, bo)); });
    });
    return 0;
}
