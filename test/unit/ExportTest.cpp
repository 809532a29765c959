//===- ExportTest.cpp - the export's float16 rounding ---------------------===//

#include "export/Export.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

namespace {

TEST(ExportHalf, NormalsRoundToNearestEven) {
  EXPECT_EQ(stlm::toHalf(1.0f), 0x3c00);
  EXPECT_EQ(stlm::toHalf(-2.0f), 0xc000);
  EXPECT_EQ(stlm::toHalf(0.1f), 0x2e66);
  // 1 + 2^-11 is halfway between 1 and the next half: ties go to even.
  EXPECT_EQ(stlm::toHalf(1.0f + std::ldexp(1.0f, -11)), 0x3c00);
  EXPECT_EQ(stlm::toHalf(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02);
  EXPECT_EQ(stlm::toHalf(1.0f + std::ldexp(1.0f, -11) +
                         std::ldexp(1.0f, -20)),
            0x3c01);
  // A carry out of the mantissa moves the exponent.
  EXPECT_EQ(stlm::toHalf(2.0f - std::ldexp(1.0f, -12)), 0x4000);
}

TEST(ExportHalf, RangeEnds) {
  EXPECT_EQ(stlm::toHalf(65504.0f), 0x7bff);       // the largest half
  EXPECT_EQ(stlm::toHalf(65519.0f), 0x7bff);       // still rounds down
  EXPECT_EQ(stlm::toHalf(65520.0f), 0x7c00);       // rounds to inf
  EXPECT_EQ(stlm::toHalf(1e9f), 0x7c00);
  EXPECT_EQ(stlm::toHalf(-1e9f), 0xfc00);
  EXPECT_EQ(stlm::toHalf(std::numeric_limits<float>::infinity()), 0x7c00);
  EXPECT_EQ(stlm::toHalf(std::nanf("")) & 0x7e00, 0x7e00);
  EXPECT_EQ(stlm::toHalf(std::ldexp(1.0f, -14)), 0x0400); // smallest normal
}

TEST(ExportHalf, Subnormals) {
  EXPECT_EQ(stlm::toHalf(std::ldexp(1.0f, -24)), 0x0001); // smallest
  EXPECT_EQ(stlm::toHalf(std::ldexp(1.0f, -25)), 0x0000); // tie to even 0
  EXPECT_EQ(stlm::toHalf(1.5f * std::ldexp(1.0f, -25)), 0x0001);
  EXPECT_EQ(stlm::toHalf(3 * std::ldexp(1.0f, -25)), 0x0002); // tie to 2
  EXPECT_EQ(stlm::toHalf(std::ldexp(1.0f, -15)), 0x0200);
  EXPECT_EQ(stlm::toHalf(std::ldexp(1.0f, -30)), 0x0000);
  EXPECT_EQ(stlm::toHalf(-0.0f), 0x8000);
  // The largest subnormal rounds up into the smallest normal.
  EXPECT_EQ(stlm::toHalf(std::ldexp(1.0f, -14) - std::ldexp(1.0f, -26)),
            0x0400);
}

} // namespace
