//===- CpuBF16Test.cpp - when bf16 matmuls pay ----------------------------===//
//
// The rule stlm-compile applies to `precision: bf16` on the host (bf16
// matmuls only where the CPU's bf16 dot product runs at least
// kBF16MinSpeedup times its fp32 FMAs), on made-up probes of the CPUs we
// have met, and the probe itself on this one.
//
//===----------------------------------------------------------------------===//

#include "support/CpuBF16.h"

#include <gtest/gtest.h>

namespace {

stlm::BF16Probe probe(bool dot, double fma, double dotGflops) {
  stlm::BF16Probe p;
  p.cpu = "TestCPU family 6 model 207";
  p.avx512 = true;
  p.dotInstruction = dot;
  p.missingForDot = dot ? "" : "avx512ifma";
  p.fmaGflops = fma;
  p.dotGflops = dotGflops;
  return p;
}

TEST(CpuBF16, PaysOnlyWhereTheDotProductIsClearlyFaster) {
  std::string why;
  // Zen 4/5: vdpbf16ps at an FMA's rate does twice its work.
  EXPECT_TRUE(stlm::bf16Pays(probe(true, 150, 300), why)) << why;
  EXPECT_NE(why.find("300 GFLOP/s a core against 150 for fp32 FMAs (2.00x"),
            std::string::npos)
      << why;
  // The Xeon (model 207): no faster than two FMA ports.
  EXPECT_FALSE(stlm::bf16Pays(probe(true, 170, 170), why));
  EXPECT_NE(why.find("TestCPU family 6 model 207"), std::string::npos) << why;
  EXPECT_NE(why.find("(1.00x; bf16 matmuls pay from 1.5x)"),
            std::string::npos)
      << why;
  // Just below and at the margin.
  EXPECT_FALSE(stlm::bf16Pays(probe(true, 100, 149), why));
  EXPECT_TRUE(stlm::bf16Pays(probe(true, 100, 150), why));
  // No dot path (here: BF16 without IFMA, as on Cooper Lake): the kernels
  // would widen every input.
  EXPECT_FALSE(stlm::bf16Pays(probe(false, 100, 0), why));
  EXPECT_NE(why.find("lacks avx512ifma, which the kernels' bf16 dot-product "
                     "path (vdpbf16ps) needs"),
            std::string::npos)
      << why;
}

TEST(CpuBF16, MeasuresThisCPU) {
  stlm::BF16Probe p = stlm::probeBF16();
  std::printf("%s: avx512 %d, avx512_bf16 %d, amx-bf16 %d, fp32 FMA %.1f "
              "GFLOP/s, vdpbf16ps %.1f GFLOP/s (one core)\n",
              p.cpu.c_str(), p.avx512, p.dotInstruction, p.amx, p.fmaGflops,
              p.dotGflops);
  EXPECT_NE(p.cpu.find("family"), std::string::npos);
  // Every machine this builds on has AVX2 and FMA at least.
  EXPECT_GT(p.fmaGflops, 1.0);
  EXPECT_EQ(p.dotGflops > 0, p.dotInstruction);
  EXPECT_EQ(p.dotInstruction, stlm::missingForBF16Dot().empty());
  std::string why;
  stlm::bf16Pays(p, why);
  EXPECT_FALSE(why.empty());
}

} // namespace
