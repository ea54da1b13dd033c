// bld/bld.hpp — everything in bld that needs no optional dependency.
//
// No intrinsics header enters through here: the CPU SIMD backend is <bld/cpu.hpp> (bld.hpp plus
// the SIMD row pass, the fast canonical path and the loss's SIMD slot kernel). Without it every
// algorithm runs the reference path (same results within each fast path's stated tolerance).
//
// Optional parts have their own headers and CMake targets and never enter through here:
//   <bld/io/json.hpp>         tokenizer.json / encoder.json loaders   (bld::json)
//   <bld/adapters/eigen.hpp>  Eigen tensors                          (bld::eigen)
//   <bld/adapters/torch.hpp>  torch::Tensor                          (bld::torch)
//   <bld/cuda.cuh>            CUDA kernels                           (bld::cuda)
#pragma once

#include "bld/core/error.hpp"
#include "bld/io/text_codec.hpp"
#include "bld/io/tiktoken.hpp"
#include "bld/vocab/trie.hpp"
#include "bld/vocab/vocabulary.hpp"
#include "bld/projection/canonical_path.hpp"
#include "bld/projection/covering.hpp"
#include "bld/projection/model_teacher.hpp"
#include "bld/backends/reference/row_pass.hpp"
#include "bld/core/tensor.hpp"
#include "bld/targets/alignment.hpp"
#include "bld/loss/byte_loss.hpp"
