//===- Data.cpp - training and validation windows from a text file --------===//

#include "frontend/Data.h"

#include "frontend/Weights.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>
#include <sys/stat.h>

namespace stlm {

bool TextData::load(const std::string &path, int64_t window,
                    std::string &error) {
  // Only a regular file of bounded size: a directory, a device or a pipe
  // (/dev/zero never ends) is refused before anything is read.
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    error = path + ": cannot open the data file: " + std::strerror(errno);
    return false;
  }
  if (!S_ISREG(st.st_mode)) {
    error = path + ": the data file is not a regular file";
    return false;
  }
  if (st.st_size > kMaxBytes) {
    error = path + ": the data file has " + std::to_string(st.st_size) +
            " bytes, more than the " + std::to_string(kMaxBytes) +
            "-byte limit";
    return false;
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    error = path + ": cannot open the data file: " + std::strerror(errno);
    return false;
  }
  std::vector<uint8_t> data(std::istreambuf_iterator<char>(in),
                            (std::istreambuf_iterator<char>()));
  if (in.bad()) {
    error = path + ": read error";
    return false;
  }
  return assign(std::move(data), window, path, error);
}

bool TextData::assign(std::vector<uint8_t> data, int64_t window,
                      const std::string &origin, std::string &error) {
  bytes = std::move(data);
  if (bytes.empty()) {
    error = origin + ": the data file is empty";
    return false;
  }
  if (window < 1) {
    error = origin + ": a window needs at least one byte";
    return false;
  }
  width = window;
  split = static_cast<int64_t>(bytes.size()) * 9 / 10;
  if (split < window || validationBytes() < window) {
    error = origin + ": " + std::to_string(bytes.size()) +
            " bytes is too short: the 90/10 split needs a window of " +
            std::to_string(window) + " bytes in each part (at least " +
            std::to_string(window * 10) + " bytes)";
    return false;
  }
  return true;
}

int64_t TextData::firstByteFrom(int limit) const {
  for (size_t i = 0; i < bytes.size(); ++i)
    if (bytes[i] >= limit)
      return static_cast<int64_t>(i);
  return -1;
}

void TextData::trainBatch(uint64_t seed, int64_t step, int64_t batch,
                          std::vector<int32_t> &out) const {
  out.resize(batch * width);
  uint64_t starts = static_cast<uint64_t>(split - width + 1);
  uint64_t key = splitmix64(seed);
  for (int64_t b = 0; b < batch; ++b) {
    uint64_t r = splitmix64(key + static_cast<uint64_t>(step * batch + b));
    int64_t off = static_cast<int64_t>(r % starts);
    for (int64_t k = 0; k < width; ++k)
      out[b * width + k] = bytes[off + k];
  }
}

void TextData::validationRow(int64_t offset, int64_t n, int32_t *out) const {
  for (int64_t k = 0; k < n; ++k) {
    int64_t at = split + offset + k;
    out[k] = at < static_cast<int64_t>(bytes.size()) ? bytes[at] : 256;
  }
}

void TextData::validationWindow(int64_t index, int32_t *out) const {
  int64_t off = split + index * width;
  for (int64_t k = 0; k < width; ++k)
    out[k] = bytes[off + k];
}

} // namespace stlm
