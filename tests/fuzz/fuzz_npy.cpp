// libFuzzer harness: .npy files (header length, dtype, shape tuple, element count, data size).
#include "fuzz_common.hpp"

#include <bld/io/npy.hpp>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view bytes(reinterpret_cast<const char*>(data), size);
    bld_fuzz::guarded([&] {
        const auto a = bld::io::parse_npy(bytes, "fuzz.npy");
        // Accepted: the shape's elements are exactly the data, and every one converts.
        const auto n = bld::io::detail::npy_checked_count(a.shape);
        bld_fuzz::require(n.has_value(), "the element count of an accepted shape fits in int64");
        const std::size_t esize = bld::io::detail::npy_element_size(a.descr);
        bld_fuzz::require(esize != 0, "an accepted dtype is one the reader converts");
        bld_fuzz::require(a.data.size() == static_cast<std::size_t>(*n) * esize, "data size = count x element size");
        bld_fuzz::require(a.as<double>().size() == static_cast<std::size_t>(*n), "as<double>() yields count elements");
    });
    return 0;
}
