//===- QuantTiles.h - quantized weights in the kernels' tiles -*- C++ -*-===//
//
// A quantized checkpoint stores a linear layer's weight row-major
// (support/Quantize.h): I8 [out, in] or, for int4, U8 [out, in / 2], and
// its scales F32 [out, in / group]. A compiled artifact keeps the weights
// of each layer that tiles in the layout its matvec reads without
// rearranging anything, and the runtime rearranges them once, when it
// loads the checkpoint:
//
//   tiles   for each block of 16 outputs jb, for each column of 4 inputs
//           (int8) or 8 inputs (int4) kk, 64 bytes; byte 4·jj + r holds
//             int8  q[16·jb + jj, 4·kk + r] + 128, an unsigned byte;
//             int4  q[16·jb + jj, 8·kk + r] + 8 in its low nibble and
//                   q[16·jb + jj, 8·kk + 4 + r] + 8 in its high one.
//           So one 64-byte load is 16 outputs × 4 inputs, and one
//           unsigned × signed byte dot product of four (vpdpbusd) adds
//           four inputs' products to each of 16 outputs.
//   scales  [out / 16, in / group, 16]: a group's scales of a block's 16
//           outputs side by side.
//
// A weight tiles when its outputs are a multiple of 16 and its inputs and
// group a multiple of the column's inputs (4 or 8); the compiler (the
// kernel plan and the manifest's "layout") and the runtime decide it with
// tilesFor(). Header-only: the runtime, the compiler and the tests share
// it.
//
//===----------------------------------------------------------------------===//

#ifndef STLM_SUPPORT_QUANTTILES_H
#define STLM_SUPPORT_QUANTTILES_H

#include <cstdint>
#include <cstring>

namespace stlm::quant {

/// The manifest's "layout" of a tiled weight and of its scales.
inline constexpr const char *kTilesLayout = "tiles16";
/// Outputs in a block, and bytes in one column of a block.
inline constexpr int64_t kTileOutputs = 16, kTileBytes = 64;

/// Inputs in a column of a block: a byte holds one int8 or two int4.
inline constexpr int64_t tileInputs(bool int4) { return int4 ? 8 : 4; }

/// The inputs of a quantized weight stored [out, `columns`] bytes.
inline constexpr int64_t weightInputs(bool int4, int64_t columns) {
  return int4 ? 2 * columns : columns;
}

/// Whether a weight of `out` outputs and `in` inputs, quantized in groups
/// of `group` inputs, is kept in tiles. (An int8 tile's sums are of
/// (q + 128)·x, exact in int32 for groups of up to 65536 inputs.)
inline constexpr bool tilesFor(bool int4, int64_t out, int64_t in,
                               int64_t group) {
  return out > 0 && in > 0 && group > 0 && in % group == 0 &&
         out % kTileOutputs == 0 && group % tileInputs(int4) == 0 &&
         (int4 || group <= 65536);
}

/// The tile byte of the weight at output `o`, input column `kk`, byte
/// `b` of the column's 4 (0 ≤ b < 4), as an offset into the tiled bytes
/// of a weight with `in` inputs.
inline constexpr int64_t tileOffset(bool int4, int64_t in, int64_t o,
                                    int64_t kk, int64_t b) {
  int64_t columns = in / tileInputs(int4);
  return (o / kTileOutputs) * columns * kTileBytes + kk * kTileBytes +
         (o % kTileOutputs) * 4 + b;
}

/// Rearranges a row-major quantized weight (`rows`: [out, in] int8 bytes,
/// or [out, in / 2] int4 bytes) into `tiles` (as many bytes). Requires
/// tilesFor(int4, out, in, any group).
inline void packTiles(bool int4, const uint8_t *rows, int64_t out, int64_t in,
                      uint8_t *tiles) {
  const int64_t columns = in / tileInputs(int4);
  for (int64_t o = 0; o < out; ++o)
    for (int64_t kk = 0; kk < columns; ++kk)
      for (int64_t b = 0; b < 4; ++b) {
        uint8_t v;
        if (!int4) {
          v = static_cast<uint8_t>(rows[o * in + 4 * kk + b] ^ 0x80);
        } else {
          // Inputs 8kk + b and 8kk + 4 + b, each a nibble of its byte.
          const uint8_t *row = rows + o * (in / 2);
          auto nibble = [&](int64_t x) -> uint8_t {
            return (row[x / 2] >> (4 * (x % 2))) & 15;
          };
          v = static_cast<uint8_t>(nibble(8 * kk + b) |
                                   (nibble(8 * kk + 4 + b) << 4));
        }
        tiles[tileOffset(int4, in, o, kk, b)] = v;
      }
}

/// The inverse of packTiles.
inline void unpackTiles(bool int4, const uint8_t *tiles, int64_t out,
                        int64_t in, uint8_t *rows) {
  const int64_t columns = in / tileInputs(int4);
  for (int64_t o = 0; o < out; ++o)
    for (int64_t kk = 0; kk < columns; ++kk)
      for (int64_t b = 0; b < 4; ++b) {
        uint8_t v = tiles[tileOffset(int4, in, o, kk, b)];
        if (!int4) {
          rows[o * in + 4 * kk + b] = static_cast<uint8_t>(v ^ 0x80);
          continue;
        }
        uint8_t *row = rows + o * (in / 2);
        for (int64_t half = 0; half < 2; ++half) {
          int64_t x = 8 * kk + 4 * half + b;
          uint8_t nib = (v >> (4 * half)) & 15, shift = 4 * (x % 2);
          row[x / 2] = static_cast<uint8_t>((row[x / 2] & ~(15 << shift)) |
                                            (nib << shift));
        }
      }
}

/// The position in tiled scales of the scale of output `o`, group `g`,
/// with `groups` groups a row.
inline constexpr int64_t tileScaleOffset(int64_t groups, int64_t o, int64_t g) {
  return (o / kTileOutputs) * groups * kTileOutputs + g * kTileOutputs +
         o % kTileOutputs;
}

/// Scales [out, groups] into their tile order ([out / 16, groups, 16]),
/// and back; `size` bytes each (copied byte by byte: a checkpoint's data
/// need not be aligned).
inline void packTileScales(const uint8_t *rows, int64_t out, int64_t groups,
                           int64_t size, uint8_t *tiles) {
  for (int64_t o = 0; o < out; ++o)
    for (int64_t g = 0; g < groups; ++g)
      std::memcpy(tiles + size * tileScaleOffset(groups, o, g),
                  rows + size * (o * groups + g), size);
}
inline void unpackTileScales(const uint8_t *tiles, int64_t out, int64_t groups,
                             int64_t size, uint8_t *rows) {
  for (int64_t o = 0; o < out; ++o)
    for (int64_t g = 0; g < groups; ++g)
      std::memcpy(rows + size * (o * groups + g),
                  tiles + size * tileScaleOffset(groups, o, g), size);
}

} // namespace stlm::quant

#endif // STLM_SUPPORT_QUANTTILES_H
