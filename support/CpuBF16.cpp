//===- CpuBF16.cpp - what bf16 matmuls are worth on this CPU --------------===//

#include "support/CpuBF16.h"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#include <immintrin.h>
#define STLM_X86 1
#endif

namespace stlm {
#ifdef STLM_X86
namespace {

using Clock = std::chrono::steady_clock;

/// Iterations of each probe loop: kChains × 32768 instructions, about
/// 0.3–1 ms per run. 16 independent chains cover a latency of 8 cycles at
/// two instructions a cycle (12 on 256-bit vectors, which AVX2 has 16
/// registers for).
constexpr int kIters = 32768;
constexpr int kChains = 16;
constexpr int kChains256 = 12;
/// Operands the compiler cannot see through, so the loops run as written.
volatile float opaqueA = 1.0000001f, opaqueB = 0.9999999f;
volatile int opaqueIters = kIters;

/// The sum of two lanes of `v` (enough to keep every chain alive).
__attribute__((target("avx512f"))) float lanes512(__m512 v) {
  float out[16];
  _mm512_storeu_ps(out, v);
  return out[0] + out[15];
}

/// kChains independent FMA chains on 512-bit vectors: kChains · 16 · 2 FLOPs an
/// iteration. Returns a value that depends on every chain, so nothing is
/// optimised away.
__attribute__((target("avx512f"), noinline)) float fmaChains512(int iters) {
  __m512 a = _mm512_set1_ps(opaqueA), b = _mm512_set1_ps(opaqueB);
  iters = opaqueIters;
  __m512 c[kChains];
  for (int i = 0; i < kChains; ++i)
    c[i] = _mm512_set1_ps(static_cast<float>(i));
  for (int n = 0; n < iters; ++n)
    for (int i = 0; i < kChains; ++i)
      c[i] = _mm512_fmadd_ps(a, c[i], b);
  __m512 s = c[0];
  for (int i = 1; i < kChains; ++i)
    s = _mm512_add_ps(s, c[i]);
  return lanes512(s);
}

/// The same with 256-bit vectors (AVX2 machines): kChains256 · 8 · 2
/// FLOPs.
__attribute__((target("avx2,fma"), noinline)) float fmaChains256(int iters) {
  __m256 a = _mm256_set1_ps(opaqueA), b = _mm256_set1_ps(opaqueB);
  iters = opaqueIters;
  __m256 c[kChains256];
  for (int i = 0; i < kChains256; ++i)
    c[i] = _mm256_set1_ps(static_cast<float>(i));
  for (int n = 0; n < iters; ++n)
    for (int i = 0; i < kChains256; ++i)
      c[i] = _mm256_fmadd_ps(a, c[i], b);
  __m256 s = c[0];
  for (int i = 1; i < kChains256; ++i)
    s = _mm256_add_ps(s, c[i]);
  float out[8];
  _mm256_storeu_ps(out, s);
  return out[0] + out[7];
}

/// kChains independent vdpbf16ps chains: each instruction 16 lanes × 2
/// products, kChains · 16 · 4 FLOPs an iteration (a multiply and an add
/// each).
__attribute__((target("avx512f,avx512bf16"), noinline)) float
dotChains512(int iters) {
  // 1.0 and 2^-7 in bf16: the high halves of the floats' bits.
  float one = opaqueA * 0 + 1.0f, small = opaqueB * 0 + 0.0078125f;
  uint32_t oneBits, smallBits;
  std::memcpy(&oneBits, &one, 4);
  std::memcpy(&smallBits, &small, 4);
  __m512bh a = (__m512bh)_mm512_set1_epi16(static_cast<short>(oneBits >> 16));
  __m512bh b =
      (__m512bh)_mm512_set1_epi16(static_cast<short>(smallBits >> 16));
  iters = opaqueIters;
  __m512 c[kChains];
  for (int i = 0; i < kChains; ++i)
    c[i] = _mm512_set1_ps(static_cast<float>(i));
  for (int n = 0; n < iters; ++n)
    for (int i = 0; i < kChains; ++i)
      c[i] = _mm512_dpbf16_ps(c[i], a, b);
  __m512 s = c[0];
  for (int i = 1; i < kChains; ++i)
    s = _mm512_add_ps(s, c[i]);
  return lanes512(s);
}

/// GFLOP/s of one timed call of `fn`, `flops` per iteration.
template <typename Fn> double gflops(Fn fn, double flops) {
  auto t0 = Clock::now();
  volatile float sink = fn(kIters);
  (void)sink;
  double s = std::chrono::duration<double>(Clock::now() - t0).count();
  return s > 0 ? flops * kIters / s / 1e9 : 0;
}

/// The first of `features` (name, present) the CPU lacks, or "".
std::string firstMissing(
    std::initializer_list<std::pair<const char *, bool>> features) {
  for (auto [name, present] : features)
    if (!present)
      return name;
  return "";
}

} // namespace

std::string missingForBF16Dot() {
  __builtin_cpu_init();
  // What Halide's host target needs for avx512_sapphirerapids, the only
  // target its kernels use vdpbf16ps on.
  return firstMissing({{"avx512f", __builtin_cpu_supports("avx512f")},
                       {"avx512cd", __builtin_cpu_supports("avx512cd")},
                       {"avx512bw", __builtin_cpu_supports("avx512bw")},
                       {"avx512dq", __builtin_cpu_supports("avx512dq")},
                       {"avx512vl", __builtin_cpu_supports("avx512vl")},
                       {"avx512ifma", __builtin_cpu_supports("avx512ifma")},
                       {"avx512vbmi", __builtin_cpu_supports("avx512vbmi")},
                       {"avx512vnni", __builtin_cpu_supports("avx512vnni")},
                       {"avx512_bf16", __builtin_cpu_supports("avx512bf16")}});
}

bool hasAvxVnni() {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  // CPUID.(EAX=7, ECX=1):EAX bit 4.
  return __get_cpuid_count(7, 1, &eax, &ebx, &ecx, &edx) && ((eax >> 4) & 1);
}

BF16Probe probeBF16() {
  BF16Probe p;
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  char vendor[13] = {};
  if (__get_cpuid(0, &eax, &ebx, &ecx, &edx)) {
    std::memcpy(vendor, &ebx, 4);
    std::memcpy(vendor + 4, &edx, 4);
    std::memcpy(vendor + 8, &ecx, 4);
  }
  unsigned family = 0, model = 0;
  if (__get_cpuid(1, &eax, &ebx, &ecx, &edx)) {
    family = (eax >> 8) & 0xf;
    model = (eax >> 4) & 0xf;
    if (family == 0xf)
      family += (eax >> 20) & 0xff;
    if (family == 6 || family >= 0xf)
      model |= ((eax >> 16) & 0xf) << 4;
  }
  char cpu[96];
  std::snprintf(cpu, sizeof cpu, "%s family %u model %u", vendor, family,
                model);
  p.cpu = cpu;
  __builtin_cpu_init();
  p.avx512 = __builtin_cpu_supports("avx512f");
  p.missingForDot = missingForBF16Dot();
  p.dotInstruction = p.missingForDot.empty();
  // CPUID.7:EDX bit 22 is AMX-BF16 (reported; the kernels have no AMX).
  if (__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx))
    p.amx = (edx >> 22) & 1;
  bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  // Runs of each kind alternate, so a change of clock or load meets both;
  // the best of each counts. One warm-up run of each first.
  for (int r = 0; r < 8; ++r) {
    double fma = p.avx512 ? gflops(fmaChains512, kChains * 16.0 * 2)
                 : avx2   ? gflops(fmaChains256, kChains256 * 8.0 * 2)
                          : 0;
    double dot = p.dotInstruction ? gflops(dotChains512, kChains * 16.0 * 4)
                                  : 0;
    if (r > 0) {
      p.fmaGflops = std::max(p.fmaGflops, fma);
      p.dotGflops = std::max(p.dotGflops, dot);
    }
  }
  return p;
}

#else // not x86: no probe, no bf16 kernels

std::string missingForBF16Dot() { return "x86"; }

bool hasAvxVnni() { return false; }

BF16Probe probeBF16() {
  BF16Probe p;
  p.cpu = "not an x86 CPU";
  p.missingForDot = "x86";
  return p;
}

#endif // STLM_X86

std::string probeJson(const BF16Probe &p) {
  char buf[400];
  std::snprintf(buf, sizeof buf,
                "{\"cpu\": \"%s\", \"vdpbf16ps\": %s, \"amx_bf16\": %s, "
                "\"fma_gflops_per_core\": %.1f, "
                "\"dot_gflops_per_core\": %.1f}",
                p.cpu.c_str(), p.dotInstruction ? "true" : "false",
                p.amx ? "true" : "false", p.fmaGflops, p.dotGflops);
  return buf;
}

bool bf16Pays(const BF16Probe &probe, std::string &why) {
  char buf[320];
  if (!probe.dotInstruction) {
    std::snprintf(buf, sizeof buf,
                  "this CPU (%s) lacks %s, which the kernels' bf16 "
                  "dot-product path (vdpbf16ps) needs, so bf16 matmuls "
                  "would widen every input and run slower than fp32",
                  probe.cpu.c_str(), probe.missingForDot.c_str());
    why = buf;
    return false;
  }
  bool pays = probe.dotGflops >= kBF16MinSpeedup * probe.fmaGflops;
  std::snprintf(buf, sizeof buf,
                "on this CPU (%s) vdpbf16ps runs at %.0f GFLOP/s a core "
                "against %.0f for fp32 FMAs (%.2fx; bf16 matmuls pay from "
                "%.1fx)",
                probe.cpu.c_str(), probe.dotGflops, probe.fmaGflops,
                probe.fmaGflops > 0 ? probe.dotGflops / probe.fmaGflops : 0.0,
                kBF16MinSpeedup);
  why = buf;
  return pays;
}

} // namespace stlm
