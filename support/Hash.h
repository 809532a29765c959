//===- Hash.h - the hashes and generators every component agrees on -*- C++ -*-===//
//
// splitmix64 and FNV-1a (64 bits), exactly as MODEL_SPEC and the
// `stlm.mask_tokens` description spell them. Initial weights, data windows,
// mask seeds, sampling and the artifact cache all draw from these, so the
// reference and native paths (and outside tools) reproduce each other's
// numbers. Header-only, no dependencies.
//
//===----------------------------------------------------------------------===//

#ifndef STLM_SUPPORT_HASH_H
#define STLM_SUPPORT_HASH_H

#include <cstdint>
#include <string>
#include <string_view>

namespace stlm {

/// One splitmix64 output for input `x` (Steele et al.: add the golden
/// gamma, then mix).
constexpr uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

/// The splitmix64 generator: the next output of `state`, which advances.
constexpr uint64_t splitmix64Next(uint64_t &state) {
  uint64_t out = splitmix64(state);
  state += 0x9e3779b97f4a7c15ull;
  return out;
}

/// FNV-1a over the bytes of `s`, continuing from `h` (the offset basis by
/// default, so hashes of concatenations can be chained).
constexpr uint64_t fnv1a64(std::string_view s,
                           uint64_t h = 0xcbf29ce484222325ull) {
  for (char c : s) {
    h ^= static_cast<unsigned char>(c);
    h *= 0x100000001b3ull;
  }
  return h;
}

/// fnv1a64(s) as 16 lowercase hex digits.
inline std::string fnv1a64Hex(std::string_view s) {
  static const char digits[] = "0123456789abcdef";
  uint64_t h = fnv1a64(s);
  std::string hex(16, '0');
  for (int i = 15; i >= 0; --i, h >>= 4)
    hex[i] = digits[h & 15];
  return hex;
}

static_assert(splitmix64(0) == 0xe220a8397b1dcdafull,
              "the first output of splitmix64 seeded with 0");
static_assert(fnv1a64("") == 0xcbf29ce484222325ull &&
                  fnv1a64("a") == 0xaf63dc4c8601ec8cull,
              "FNV-1a's published test vectors");

} // namespace stlm

#endif // STLM_SUPPORT_HASH_H
