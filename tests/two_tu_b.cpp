#include <bld/bld.hpp>
#include <bld/io/json.hpp>
int bld_two_tu_b() { return 42; }
