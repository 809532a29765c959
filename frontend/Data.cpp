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
  std::vector<uint8_t> data;
  return readFile(path, data, error) &&
         assign(std::move(data), window, path, error);
}

namespace {
/// Reads the regular file `path` (a `what`, as errors name it) whole into
/// `out`, unless it has more than `limit` bytes (`limitText` says which).
/// A directory, a device or a pipe (/dev/zero never ends) is refused
/// before anything is read.
template <typename Bytes>
bool readRegular(const std::string &path, const char *what, int64_t limit,
                 const std::string &limitText, Bytes &out,
                 std::string &error) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    error = path + ": cannot open the " + what + ": " + std::strerror(errno);
    return false;
  }
  if (!S_ISREG(st.st_mode)) {
    error = path + ": the " + what + " is not a regular file";
    return false;
  }
  if (st.st_size > limit) {
    error = path + ": the " + what + " has " + std::to_string(st.st_size) +
            " bytes, more than " + limitText;
    return false;
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    error = path + ": cannot open the " + what + ": " + std::strerror(errno);
    return false;
  }
  out.assign(std::istreambuf_iterator<char>(in),
             std::istreambuf_iterator<char>());
  if (in.bad()) {
    error = path + ": read error";
    return false;
  }
  return true;
}
} // namespace

bool TextData::readFile(const std::string &path, std::vector<uint8_t> &out,
                        std::string &error) {
  return readRegular(path, "data file", kMaxBytes,
                     "the " + std::to_string(kMaxBytes) + "-byte limit", out,
                     error);
}

bool TextData::readSmallFile(const std::string &path, const char *what,
                             int64_t limit, std::string &out,
                             std::string &error) {
  return readRegular(path, what, limit, std::to_string(limit) + " bytes", out,
                     error);
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

bool TextData::loadChunkStarts(const std::string &path, std::string &error) {
  // An offset per line of at most 20 digits, and comments: a file much
  // larger than the text it describes is not one.
  int64_t limit = 64 * static_cast<int64_t>(bytes.size()) + (1 << 20);
  std::string text;
  return readRegular(path, "chunk starts file", limit,
                     std::to_string(limit) + " for a text of " +
                         std::to_string(bytes.size()) + " bytes",
                     text, error) &&
         assignChunkStarts(text, path, error);
}

bool TextData::assignChunkStarts(const std::string &text,
                                 const std::string &origin,
                                 std::string &error) {
  std::vector<uint8_t> marks(bytes.size(), 0);
  if (!marks.empty())
    marks[0] = 1; // offset 0 always starts a chunk
  int64_t line = 0, previous = -1, previousLine = 0;
  size_t at = 0;
  while (at < text.size()) {
    size_t end = text.find('\n', at);
    if (end == std::string::npos)
      end = text.size();
    std::string entry = text.substr(at, end - at);
    at = end + 1;
    ++line;
    std::string where = origin + ":" + std::to_string(line) + ": ";
    if (size_t hash = entry.find('#'); hash != std::string::npos)
      entry.resize(hash);
    size_t first = entry.find_first_not_of(" \t\r");
    if (first == std::string::npos)
      continue; // blank or a comment
    size_t last = entry.find_last_not_of(" \t\r");
    entry = entry.substr(first, last - first + 1);
    if (entry.find_first_not_of("0123456789") != std::string::npos) {
      error = where + "'" + entry.substr(0, 40) +
              (entry.size() > 40 ? "..." : "") +
              "' is not a byte offset (one decimal offset per line)";
      return false;
    }
    // Past the text's size the exact value does not matter.
    int64_t offset = 0;
    bool huge = false;
    for (char c : entry) {
      offset = offset * 10 + (c - '0');
      if (offset >= static_cast<int64_t>(bytes.size())) {
        huge = true;
        break;
      }
    }
    if (huge) {
      error = where + "offset " + entry.substr(0, 40) +
              " is past the data's last byte (" +
              std::to_string(static_cast<int64_t>(bytes.size()) - 1) + ")";
      return false;
    }
    if (offset <= previous) {
      error = where + "offset " + std::to_string(offset) +
              " is not after the previous one, " + std::to_string(previous) +
              " (line " + std::to_string(previousLine) + "): offsets ascend";
      return false;
    }
    marks[offset] = 1;
    previous = offset;
    previousLine = line;
  }
  starts = std::move(marks);
  return true;
}

int64_t TextData::chunkStartCount() const {
  int64_t n = 0;
  for (uint8_t m : starts)
    n += m;
  return n;
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
      out[b * width + k] = valueAt(off + k);
  }
}

void TextData::validationRow(int64_t offset, int64_t n, int32_t *out) const {
  for (int64_t k = 0; k < n; ++k) {
    int64_t at = split + offset + k;
    out[k] = at < static_cast<int64_t>(bytes.size()) ? valueAt(at) : 256;
  }
}

void TextData::validationWindow(int64_t index, int32_t *out) const {
  int64_t off = split + index * width;
  for (int64_t k = 0; k < width; ++k)
    out[k] = valueAt(off + k);
}

} // namespace stlm
