// Shared by the libFuzzer harnesses: bad input must end in a bld::error, never in a crash, a
// hang, a sanitizer report or another exception type.
#pragma once

#include <bld/core/error.hpp>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>
#include <string_view>

namespace bld_fuzz {

/// Runs f; bld::error is the expected outcome of bad input; anything else is a finding.
template <class F>
void guarded(F&& f) {
    try {
        f();
    } catch (const bld::error& e) {
        // A clear error is fine; it must say what and why.
        if (e.operation().empty() || e.reason().empty()) {
            std::fprintf(stderr, "bld::error without what/why: %s\n", e.what());
            std::abort();
        }
    } catch (const std::exception& e) {
        std::fprintf(stderr, "non-bld exception escaped: %s\n", e.what());
        std::abort();
    }
}

/// Reads little pieces of the fuzz input in order.
struct reader {
    const std::uint8_t* p;
    std::size_t n;
    template <class T>
    T take(T fallback = T{}) {
        if (n < sizeof(T)) return fallback;
        T v;
        std::memcpy(&v, p, sizeof(T));
        p += sizeof(T);
        n -= sizeof(T);
        return v;
    }
    std::string_view rest() const { return {reinterpret_cast<const char*>(p), n}; }
};

/// Fails (aborts) unless cond holds: a postcondition of a successful call.
inline void require(bool cond, const char* what) {
    if (!cond) {
        std::fprintf(stderr, "postcondition failed: %s\n", what);
        std::abort();
    }
}

} // namespace bld_fuzz
