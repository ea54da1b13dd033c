// bld/cpu.hpp — <bld/bld.hpp> plus the CPU SIMD backend (x86-64: AVX-512, AVX2 and SSE2 chosen
// at run time; AArch64: NEON; the intrinsics headers enter here, never through bld.hpp):
//   * the row plan and the SIMD row pass (bld/backends/simd/row_pass.hpp);
//   * the canonical path on the SIMD row pass, and over many texts (bld/projection/fast_rows.hpp);
//   * the byte loss's SIMD slot kernel, registered with the loss on inclusion
//     (bld/backends/simd/loss_kernel.hpp): bld::byte_loss / bld_loss / byte_cross_entropy on
//     float logits take it for the forward KL and the byte CE;
//   * bld::distiller, the trainer's route from a batch of teacher rows to slot targets
//     (bld/targets/distiller.hpp).
#pragma once

#include "bld/bld.hpp"

#include "bld/backends/simd/loss_kernel.hpp"
#include "bld/backends/simd/row_pass.hpp"
#include "bld/projection/fast_rows.hpp"
#include "bld/projection/student_path.hpp"
#include "bld/targets/distiller.hpp"
