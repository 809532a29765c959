//===- Data.h - training and validation windows from a text file -*- C++ -*-===//
//
// MODEL_SPEC's data rules: a file's bytes split into train (first 90 %) and
// validation (last 10 %); training windows of W bytes start at seeded
// random offsets, window b of step s at
//   splitmix64(splitmix64(seed) + s · B + b) mod (train bytes − W + 1);
// validation is every consecutive non-overlapping W-byte window of the
// validation split, in order. W is T + 1 for token models (inputs and
// shifted targets) and the window bytes for byte_pool models.
//
// A byte-pool model with `given` chunking also reads chunk starts from a
// side file (MODEL_SPEC: ascending decimal byte offsets into the data file,
// one per line, `#` comments); once loaded, every window marks a byte that
// opens a chunk by adding kChunkStartFlag to it, which is how the model's
// bytes input carries them (stlm.chunk given).
//
//===----------------------------------------------------------------------===//

#ifndef STLM_FRONTEND_DATA_H
#define STLM_FRONTEND_DATA_H

#include <cstdint>
#include <string>
#include <vector>

namespace stlm {

class TextData {
public:
  /// The largest data file read (whole, into memory): 4 GiB.
  static constexpr int64_t kMaxBytes = int64_t(1) << 32;

  /// Reads `path`. Fails (returns false, sets `error`) when the file is
  /// missing, unreadable, not a regular file, larger than kMaxBytes, or too
  /// short to give both splits a window of `window` bytes.
  bool load(const std::string &path, int64_t window, std::string &error);
  /// Reads the whole data file `path` into `out`, with load()'s checks on
  /// the file (not on its length); false with `error` set.
  static bool readFile(const std::string &path, std::vector<uint8_t> &out,
                       std::string &error);
  /// Reads the whole of `path`, a small text file (`what` names it in
  /// errors), into `out`, with the same checks on the file and at most
  /// `limit` bytes; false with `error` set.
  static bool readSmallFile(const std::string &path, const char *what,
                            int64_t limit, std::string &out,
                            std::string &error);
  /// Takes `data` as the text (`origin` names it in errors), with the same
  /// checks as load() after reading.
  bool assign(std::vector<uint8_t> data, int64_t window,
              const std::string &origin, std::string &error);

  /// Reads the chunk starts of this text from the side file `path`
  /// (after load/assign). False with `error` naming the file and line of
  /// the first bad entry: not a decimal offset, past the last byte, or not
  /// after the previous one.
  bool loadChunkStarts(const std::string &path, std::string &error);
  /// The same for a side file's contents `text` (`origin` names it).
  bool assignChunkStarts(const std::string &text, const std::string &origin,
                         std::string &error);
  /// Added to a window's byte where a chunk starts (stlm.chunk's flag).
  static constexpr int32_t kChunkStartFlag = 512;
  bool hasChunkStarts() const { return !starts.empty(); }
  /// Chunks the side file gives (offset 0 included).
  int64_t chunkStartCount() const;

  int64_t trainBytes() const { return split; }
  int64_t validationBytes() const {
    return static_cast<int64_t>(bytes.size()) - split;
  }

  /// Fills `out` ([B, W] row-major) with the B training windows of `step`.
  void trainBatch(uint64_t seed, int64_t step, int64_t batch,
                  std::vector<int32_t> &out) const;
  /// Number of validation windows.
  int64_t validationWindows() const {
    return validationBytes() / width;
  }
  /// Window `index` of the validation split into `out` (W bytes).
  void validationWindow(int64_t index, int32_t *out) const;
  /// `n` values from validation byte `offset` into `out`, 256 (no byte)
  /// past the split's end: a byte-pool model's contiguous windows.
  void validationRow(int64_t offset, int64_t n, int32_t *out) const;
  /// The whole text, both splits.
  const std::vector<uint8_t> &contents() const { return bytes; }

private:
  /// The window value of byte `at`: the byte, + kChunkStartFlag where a
  /// loaded chunk start is.
  int32_t valueAt(int64_t at) const {
    return bytes[at] + (!starts.empty() && starts[at] ? kChunkStartFlag : 0);
  }

  std::vector<uint8_t> bytes;
  std::vector<uint8_t> starts; // 1 where a chunk starts; empty: none read
  int64_t split = 0;
  int64_t width = 0;
};

} // namespace stlm

#endif // STLM_FRONTEND_DATA_H
