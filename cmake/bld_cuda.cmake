# bld::cuda — the CUDA kernels (include/bld/cuda/*.cuh), compiled only by nvcc.
#
# Included by the top-level CMakeLists.txt when BLD_ENABLE_CUDA is ON. bld::cuda is an
# INTERFACE target (the kernels are header templates): a consumer links it from its own .cu
# files, which nvcc compiles for the consumer's CMAKE_CUDA_ARCHITECTURES.
#
# Architectures: "80;90" (A100, H100/H200) unless the cache or the command line says otherwise
# (-DCMAKE_CUDA_ARCHITECTURES=...). nvcc: CMake's usual search (CUDACXX, PATH), then
# /usr/local/cuda/bin/nvcc.
#
# With BLD_BUILD_TESTS:
#   bld_cuda_compile_all  object library: every .cuh with every kernel instantiated (CI compile)
#   bld_cuda_tests        GPU tests + the row-pass benchmark (`bld_cuda_tests --bench`); ctest
#                         runs it with the label "gpu" and reports it SKIPPED (exit 77) when no
#                         GPU is present.
if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES OR CMAKE_CUDA_ARCHITECTURES STREQUAL "")
  set(CMAKE_CUDA_ARCHITECTURES "80;90" CACHE STRING "CUDA architectures bld's CUDA targets are built for")
endif()
if(NOT CMAKE_CUDA_COMPILER AND NOT DEFINED ENV{CUDACXX} AND EXISTS /usr/local/cuda/bin/nvcc)
  find_program(_bld_nvcc nvcc)
  if(NOT _bld_nvcc)
    set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
  endif()
endif()
if(NOT CMAKE_CUDA_HOST_COMPILER AND CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
  # nvcc's host compiler is the C++ compiler of the rest of the build (one ABI).
  set(CMAKE_CUDA_HOST_COMPILER ${CMAKE_CXX_COMPILER})
endif()
enable_language(CUDA)
find_package(CUDAToolkit REQUIRED)

add_library(bld_cuda INTERFACE)
add_library(bld::cuda ALIAS bld_cuda)
set_target_properties(bld_cuda PROPERTIES EXPORT_NAME cuda)
target_link_libraries(bld_cuda INTERFACE bld CUDA::cudart)
target_compile_features(bld_cuda INTERFACE cxx_std_20)
if("cuda_std_20" IN_LIST CMAKE_CUDA_COMPILE_FEATURES)
  target_compile_features(bld_cuda INTERFACE cuda_std_20)
else()
  # CMake < 3.26 does not know nvcc's C++20 mode (Debian 12 ships 3.25): ask nvcc directly.
  target_compile_options(bld_cuda INTERFACE $<$<COMPILE_LANGUAGE:CUDA>:-std=c++20>)
endif()
# Not in _bld_export_targets: an installed bld::cuda needs find_dependency(CUDAToolkit) in
# bldConfig.cmake.in first (packaging).

if(BLD_BUILD_TESTS)
  enable_testing()
  set(_bld_cuda_dir ${PROJECT_SOURCE_DIR}/tests/cuda)
  set(_bld_cuda_data "${PROJECT_SOURCE_DIR}/.cache/data")
  if(DEFINED BLD_DATA_DIR)
    set(_bld_cuda_data "${BLD_DATA_DIR}")
  endif()

  add_library(bld_cuda_compile_all OBJECT ${_bld_cuda_dir}/compile_all.cu)
  target_link_libraries(bld_cuda_compile_all PRIVATE bld::cuda)
  target_compile_options(bld_cuda_compile_all PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-Wall,-Wextra>)

  if(TARGET bld::json)
    find_package(doctest REQUIRED)
    # test_cuda.cu (nvcc) runs the kernels; test_cuda_main.cpp (the C++ compiler) loads the real
    # vocabulary, computes the CPU reference and compares. One CUDA translation unit keeps the
    # nvcc time down.
    add_executable(bld_cuda_tests ${_bld_cuda_dir}/test_cuda.cu ${_bld_cuda_dir}/test_cuda_main.cpp)
    target_link_libraries(bld_cuda_tests PRIVATE bld::cuda bld::json doctest::doctest)
    target_compile_definitions(bld_cuda_tests PRIVATE BLD_DATA_DIR="${_bld_cuda_data}")
    target_compile_options(bld_cuda_tests PRIVATE $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra>)
    add_test(NAME bld_cuda_tests COMMAND bld_cuda_tests)
    set_tests_properties(bld_cuda_tests PROPERTIES LABELS gpu SKIP_RETURN_CODE 77)
  endif()
endif()
