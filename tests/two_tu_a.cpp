// Two translation units including every header must link: no non-inline definitions in headers.
#include <bld/bld.hpp>
#include <bld/io/json.hpp>
int bld_two_tu_b();
int main() { return bld_two_tu_b() == 42 ? 0 : 1; }
