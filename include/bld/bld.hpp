// bld/bld.hpp — everything in bld that needs no optional dependency.
//
// Optional parts have their own headers and CMake targets and never enter through here:
//   <bld/io/json.hpp>         tokenizer.json / encoder.json loaders   (bld::json)
//   <bld/adapters/eigen.hpp>  Eigen tensors                          (bld::eigen)
//   <bld/adapters/torch.hpp>  torch::Tensor                          (bld::torch)
//   <bld/cuda/*.cuh>          CUDA kernels                           (bld::cuda)
#pragma once

#include "bld/error.hpp"
#include "bld/io/text_codec.hpp"
#include "bld/io/tiktoken.hpp"
#include "bld/trie.hpp"
#include "bld/vocabulary.hpp"
#include "bld/projection.hpp"
#include "bld/row_pass.hpp"
#include "bld/tensor.hpp"
#include "bld/alignment.hpp"
#include "bld/loss.hpp"
