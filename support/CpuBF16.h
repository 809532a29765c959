//===- CpuBF16.h - what bf16 matmuls are worth on this CPU ------*- C++ -*-===//
//
// `train.precision: bf16` asks for matmuls with bfloat16 inputs. Whether
// that is faster than fp32 depends on the CPU: on AMD Zen 4/5 `vdpbf16ps`
// does twice an FMA's work per instruction at the same rate, and bf16
// kernels run about 1.9x the fp32 ones; on Intel Xeons without AMX (family
// 6, model 207 measured) it issues at half an FMA's rate, so the bf16
// kernels, which also round their inputs, run at about 0.5x. stlm-compile
// measures it (about 15 ms: independent dependency chains of each
// instruction on one core, runs of each kind alternating) and compiles
// bf16 matmuls only where they pay.
//
//===----------------------------------------------------------------------===//

#ifndef STLM_SUPPORT_CPUBF16_H
#define STLM_SUPPORT_CPUBF16_H

#include <string>

namespace stlm {

/// One core's throughput of fp32 FMAs and of bf16 dot products, measured.
struct BF16Probe {
  std::string cpu;          // "GenuineIntel family 6 model 207"
  bool avx512 = false;      // AVX-512F (the fp32 kernels' widest vectors)
  bool dotInstruction = false; // vdpbf16ps as the kernels use it: the
                               // features Halide's host target needs for
                               // avx512_sapphirerapids (AVX512_BF16 and
                               // the rest: missingForDot names the gap)
  std::string missingForDot;   // "" or the first feature that is absent
  bool amx = false;         // AMX-BF16 reported (not used by the kernels)
  double fmaGflops = 0;     // fp32 FMAs on the widest vectors
  double dotGflops = 0;     // vdpbf16ps (0 without it)
};

/// The first CPU feature the kernels' vdpbf16ps path (Halide's
/// avx512_sapphirerapids) needs that this CPU lacks; "" when it has all.
std::string missingForBF16Dot();

/// Whether this CPU has AVX-VNNI (the VEX-encoded vpdpbusd on 128- and
/// 256-bit vectors). Halide 14's avx512_sapphirerapids target compiles for
/// Sapphire Rapids, which has it, and LLVM then encodes short vpdpbusd in
/// VEX: an illegal instruction on CPUs with AVX512-VNNI alone (AMD Zen 4).
bool hasAvxVnni();

/// Measures this CPU (about 15 ms).
BF16Probe probeBF16();

/// The probe as one line of JSON (the artifact's manifest keeps it).
std::string probeJson(const BF16Probe &probe);

/// Whether bf16 matmuls pay: the dot instruction exists and its measured
/// throughput is at least kBF16MinSpeedup times the fp32 FMAs' (in
/// FLOP/s). The bf16 kernels also round their inputs to bf16, which costs
/// a few percent of a matmul; below this margin they would be slower than
/// fp32 ones. `why` says what was measured, for a note.
inline constexpr double kBF16MinSpeedup = 1.5;
bool bf16Pays(const BF16Probe &probe, std::string &why);

} // namespace stlm

#endif // STLM_SUPPORT_CPUBF16_H
