// Shared test helper: the text of the error a call throws, for tests that check what bld's
// messages name (argument, position, reason).
#pragma once

#include <string>

namespace bld_test {

/// what() of the E that f() throws; "(no exception)" when it returns. Other exception types
/// propagate (and fail the test that expected E).
template <class E, class F>
std::string message_of(F&& f) {
    try {
        f();
    } catch (const E& e) {
        return e.what();
    }
    return "(no exception)";
}

inline bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

}  // namespace bld_test
