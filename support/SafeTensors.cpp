//===- SafeTensors.cpp - strict safetensors reader and writer -------------===//

#include "support/SafeTensors.h"

#include "support/Files.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <set>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace stlm {

namespace {
struct DTypeInfo {
  DType dtype;
  const char *name;
  size_t size;
};
constexpr DTypeInfo kDTypes[] = {
    {DType::F64, "F64", 8},         {DType::F32, "F32", 4},
    {DType::F16, "F16", 2},         {DType::BF16, "BF16", 2},
    {DType::F8_E4M3, "F8_E4M3", 1}, {DType::F8_E5M2, "F8_E5M2", 1},
    {DType::I64, "I64", 8},         {DType::I32, "I32", 4},
    {DType::I16, "I16", 2},         {DType::I8, "I8", 1},
    {DType::U64, "U64", 8},         {DType::U32, "U32", 4},
    {DType::U16, "U16", 2},         {DType::U8, "U8", 1},
    {DType::BOOL, "BOOL", 1},
};
} // namespace

size_t dtypeSize(DType dtype) {
  for (const DTypeInfo &i : kDTypes)
    if (i.dtype == dtype)
      return i.size;
  return 0;
}

const char *dtypeName(DType dtype) {
  for (const DTypeInfo &i : kDTypes)
    if (i.dtype == dtype)
      return i.name;
  return "?";
}

std::optional<DType> parseDType(const std::string &name) {
  for (const DTypeInfo &i : kDTypes)
    if (name == i.name)
      return i.dtype;
  return std::nullopt;
}

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int64_t d : shape)
    n *= d;
  return n;
}

//===----------------------------------------------------------------------===//
// Reading
//===----------------------------------------------------------------------===//

SafeTensorsFile::~SafeTensorsFile() {
  if (mapping_)
    munmap(mapping_, size_);
}

std::unique_ptr<SafeTensorsFile>
SafeTensorsFile::open(const std::string &path, std::string &error) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    error = path + ": cannot open: " + std::strerror(errno);
    return nullptr;
  }
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    error = path + ": not a regular file";
    return nullptr;
  }
  std::unique_ptr<SafeTensorsFile> file(new SafeTensorsFile());
  file->size_ = static_cast<size_t>(st.st_size);
  if (file->size_ > 0) {
    void *m = mmap(nullptr, file->size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (m == MAP_FAILED) {
      ::close(fd);
      error = path + ": cannot map: " + std::strerror(errno);
      return nullptr;
    }
    file->mapping_ = m;
    file->bytes_ = static_cast<const uint8_t *>(m);
  }
  ::close(fd);
  if (!file->parse(path, error))
    return nullptr;
  return file;
}

std::unique_ptr<SafeTensorsFile>
SafeTensorsFile::fromBuffer(std::vector<uint8_t> bytes,
                            const std::string &origin, std::string &error) {
  std::unique_ptr<SafeTensorsFile> file(new SafeTensorsFile());
  file->buffer_ = std::move(bytes);
  file->bytes_ = file->buffer_.data();
  file->size_ = file->buffer_.size();
  if (!file->parse(origin, error))
    return nullptr;
  return file;
}

std::unique_ptr<SafeTensorsFile>
SafeTensorsFile::view(const uint8_t *data, size_t size,
                      const std::string &origin, std::string &error) {
  std::unique_ptr<SafeTensorsFile> file(new SafeTensorsFile());
  file->bytes_ = data;
  file->size_ = data ? size : 0;
  if (!file->parse(origin, error))
    return nullptr;
  return file;
}

const TensorView *SafeTensorsFile::find(const std::string &name) const {
  for (const TensorView &t : tensors_)
    if (t.name == name)
      return &t;
  return nullptr;
}

bool SafeTensorsFile::parse(const std::string &origin, std::string &error) {
  auto fail = [&](const std::string &msg) {
    error = origin + ": " + msg;
    return false;
  };
  if (size_ < 8)
    return fail("truncated: " + std::to_string(size_) +
                " bytes, shorter than the 8-byte header length");
  // The header is a JSON object right after its length (safetensors refuses
  // any other start too): anything else, such as a text file, is not a
  // safetensors file at all, whatever its first 8 bytes say as a length.
  if (size_ > 8 && bytes_[8] != '{')
    return fail("not a safetensors file (it does not start with an 8-byte "
                "header length followed by a JSON object)");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i)
    n = (n << 8) | bytes_[i];
  if (n == 0)
    return fail("header length is 0");
  if (n > kMaxHeaderBytes)
    return fail("header length " + std::to_string(n) + " exceeds the " +
                std::to_string(kMaxHeaderBytes) + "-byte limit");
  if (n > size_ - 8)
    return fail("truncated: header length " + std::to_string(n) +
                " runs past the end of the " + std::to_string(size_) +
                "-byte file");
  const char *hdr = reinterpret_cast<const char *>(bytes_ + 8);
  nlohmann::json j = nlohmann::json::parse(hdr, hdr + n, nullptr,
                                           /*allow_exceptions=*/false);
  if (j.is_discarded())
    return fail("header is not well-formed JSON");
  // (An object: it starts with '{'.)

  const uint8_t *data = bytes_ + 8 + n;
  uint64_t dataSize = size_ - 8 - n;
  struct Span {
    uint64_t begin, end;
    size_t index;
  };
  std::vector<Span> spans;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string &name = it.key();
    const nlohmann::json &v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object())
        return fail("__metadata__ must be a map of strings to strings");
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string())
          return fail("__metadata__ value for '" + m.key() +
                      "' is not a string");
        metadata_[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    std::string where = "tensor '" + name + "': ";
    if (!v.is_object())
      return fail(where + "entry is not an object");
    for (auto f = v.begin(); f != v.end(); ++f)
      if (f.key() != "dtype" && f.key() != "shape" &&
          f.key() != "data_offsets")
        return fail(where + "unknown field '" + f.key() + "'");
    auto dt = v.find("dtype");
    auto sh = v.find("shape");
    auto off = v.find("data_offsets");
    if (dt == v.end() || sh == v.end() || off == v.end())
      return fail(where + "needs dtype, shape and data_offsets");
    if (!dt->is_string())
      return fail(where + "dtype is not a string");
    std::optional<DType> dtype = parseDType(dt->get<std::string>());
    if (!dtype)
      return fail(where + "unknown dtype '" + dt->get<std::string>() + "'");
    if (!sh->is_array())
      return fail(where + "shape is not a list");
    TensorView t;
    t.name = name;
    t.dtype = *dtype;
    // Element count with overflow checks: a shape can claim more bytes than
    // any file holds.
    uint64_t numel = 1;
    for (const nlohmann::json &dim : *sh) {
      if (!dim.is_number_unsigned() && !(dim.is_number_integer() &&
                                          dim.get<int64_t>() >= 0))
        return fail(where + "shape has a dimension that is not a "
                            "non-negative integer");
      uint64_t d = dim.get<uint64_t>();
      if (d > (uint64_t(1) << 62) ||
          (d != 0 && numel > (uint64_t(1) << 62) / d))
        return fail(where + "shape is too large");
      numel *= d;
      t.shape.push_back(static_cast<int64_t>(d));
    }
    if (!off->is_array() || off->size() != 2 ||
        !(*off)[0].is_number_unsigned() || !(*off)[1].is_number_unsigned())
      return fail(where + "data_offsets must be two non-negative integers");
    uint64_t begin = (*off)[0].get<uint64_t>(), end = (*off)[1].get<uint64_t>();
    if (begin > end)
      return fail(where + "data_offsets [" + std::to_string(begin) + ", " +
                  std::to_string(end) + "] are reversed");
    if (end > dataSize)
      return fail(where + "data_offsets end " + std::to_string(end) +
                  " is past the data section (" + std::to_string(dataSize) +
                  " bytes)");
    uint64_t expected = numel * dtypeSize(*dtype);
    if (numel != 0 && expected / numel != dtypeSize(*dtype))
      return fail(where + "shape is too large");
    if (end - begin != expected)
      return fail(where + "holds " + std::to_string(end - begin) +
                  " bytes but shape and dtype need " +
                  std::to_string(expected));
    t.data = data + begin;
    t.size = static_cast<size_t>(end - begin);
    spans.push_back({begin, end, tensors_.size()});
    tensors_.push_back(std::move(t));
  }

  // The tensors must tile the data section exactly.
  std::sort(spans.begin(), spans.end(), [](const Span &a, const Span &b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t pos = 0;
  for (const Span &s : spans) {
    const std::string &name = tensors_[s.index].name;
    if (s.begin < pos)
      return fail("tensor '" + name + "' overlaps the tensor before it (at "
                  "byte " + std::to_string(s.begin) + " of the data section)");
    if (s.begin > pos)
      return fail("gap of " + std::to_string(s.begin - pos) +
                  " unused bytes before tensor '" + name + "'");
    pos = s.end;
  }
  if (pos != dataSize)
    return fail(std::to_string(dataSize - pos) +
                " bytes of trailing garbage after the last tensor");

  // Data order, so iteration matches the file.
  std::vector<TensorView> ordered;
  ordered.reserve(tensors_.size());
  for (const Span &s : spans)
    ordered.push_back(std::move(tensors_[s.index]));
  tensors_ = std::move(ordered);
  return true;
}

//===----------------------------------------------------------------------===//
// Writing
//===----------------------------------------------------------------------===//

std::optional<std::vector<uint8_t>>
serializeSafeTensors(const std::vector<TensorToWrite> &tensors,
                     const std::map<std::string, std::string> &metadata,
                     std::string &error) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty())
    header["__metadata__"] = metadata;
  std::set<std::string> names;
  uint64_t offset = 0;
  for (const TensorToWrite &t : tensors) {
    if (t.name == "__metadata__" || !names.insert(t.name).second) {
      error = "tensor name '" + t.name + "' is reserved or used twice";
      return std::nullopt;
    }
    uint64_t numel = 1;
    for (int64_t d : t.shape) {
      if (d < 0) {
        error = "tensor '" + t.name + "' has a negative dimension";
        return std::nullopt;
      }
      numel *= static_cast<uint64_t>(d);
    }
    if (numel * dtypeSize(t.dtype) != t.size) {
      error = "tensor '" + t.name + "': " + std::to_string(t.size) +
              " bytes given, shape and dtype need " +
              std::to_string(numel * dtypeSize(t.dtype));
      return std::nullopt;
    }
    header[t.name] = {{"dtype", dtypeName(t.dtype)},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + t.size}}};
    offset += t.size;
  }
  std::string h = header.dump();
  h.append((8 - h.size() % 8) % 8, ' ');
  std::vector<uint8_t> out(8 + h.size() + offset);
  uint64_t n = h.size();
  for (int i = 0; i < 8; ++i)
    out[i] = static_cast<uint8_t>(n >> (8 * i));
  std::memcpy(out.data() + 8, h.data(), h.size());
  uint8_t *p = out.data() + 8 + h.size();
  for (const TensorToWrite &t : tensors) {
    if (t.size)
      std::memcpy(p, t.data, t.size);
    p += t.size;
  }
  return out;
}

bool canWriteSafeTensors(const std::string &path, std::string &error) {
  std::string target;
  if (!replaceableFile(path, target, error))
    return false;
  std::string tmp = target + ".tmp." + std::to_string(getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) {
    error = path + ": cannot write there (creating " + tmp + ": " +
            std::strerror(errno) + ")";
    return false;
  }
  ::close(fd);
  ::unlink(tmp.c_str());
  return true;
}

namespace {

/// Removes `path.tmp.PID` files (the temp files of writeSafeTensors) whose
/// writer process no longer exists on this machine: a writer killed between
/// creating its temp file and renaming it leaves one behind. Files of live
/// processes, and anything that is not a regular file named that way, stay.
void removeStaleTemps(const std::string &path) {
  size_t slash = path.rfind('/');
  std::string dir = slash == std::string::npos ? "." : path.substr(0, slash);
  if (dir.empty())
    dir = "/";
  std::string prefix =
      (slash == std::string::npos ? path : path.substr(slash + 1)) + ".tmp.";
  DIR *d = ::opendir(dir.c_str());
  if (!d)
    return;
  while (const struct dirent *e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name.compare(0, prefix.size(), prefix) != 0)
      continue;
    std::string digits = name.substr(prefix.size());
    if (digits.empty() || digits.size() > 9 ||
        !std::all_of(digits.begin(), digits.end(),
                     [](char c) { return c >= '0' && c <= '9'; }))
      continue;
    pid_t pid = static_cast<pid_t>(std::stol(digits));
    if (pid <= 0 || pid == ::getpid() || ::kill(pid, 0) == 0 ||
        errno != ESRCH)
      continue;
    std::string stale = dir + "/" + name;
    struct stat st;
    if (::lstat(stale.c_str(), &st) == 0 && S_ISREG(st.st_mode))
      ::unlink(stale.c_str());
  }
  ::closedir(d);
}

/// The temp file a writeSafeTensors of this process may be writing, for
/// the termination handler: a fixed buffer (a handler may not touch a
/// std::string) that holds a path while `tempInFlight` is 1. Marked only
/// once a program has installed the handler (`tempTracking`): the library
/// never uses this state otherwise, so concurrent saves of an app's
/// models share nothing.
char tempPath[4096];
volatile std::sig_atomic_t tempInFlight = 0;
bool tempTracking = false;

void onTermination(int sig) {
  if (tempInFlight)
    ::unlink(tempPath);
  std::signal(sig, SIG_DFL);
  std::raise(sig);
}

/// Marks `tmp` as being written (when tracking, and the path fits).
void markTemp(const std::string &tmp) {
  if (!tempTracking)
    return;
  tempInFlight = 0;
  if (tmp.size() >= sizeof tempPath)
    return;
  std::atomic_signal_fence(std::memory_order_seq_cst);
  std::memcpy(tempPath, tmp.c_str(), tmp.size() + 1);
  std::atomic_signal_fence(std::memory_order_seq_cst);
  tempInFlight = 1;
}

} // namespace

void removeTempFileOnTermination() {
  struct sigaction sa;
  std::memset(&sa, 0, sizeof sa);
  sa.sa_handler = onTermination;
  sigemptyset(&sa.sa_mask);
  for (int sig : {SIGTERM, SIGINT, SIGHUP}) {
    // A signal the process was started ignoring (nohup's SIGHUP, a
    // background job's SIGINT) stays ignored.
    struct sigaction old;
    if (::sigaction(sig, nullptr, &old) == 0 && old.sa_handler == SIG_IGN)
      continue;
    ::sigaction(sig, &sa, nullptr);
  }
  tempTracking = true;
}

bool writeSafeTensors(const std::string &path,
                      const std::vector<TensorToWrite> &tensors,
                      const std::map<std::string, std::string> &metadata,
                      std::string &error) {
  std::optional<std::vector<uint8_t>> image =
      serializeSafeTensors(tensors, metadata, error);
  if (!image) {
    error = path + ": " + error;
    return false;
  }
  std::string target;
  if (!replaceableFile(path, target, error))
    return false;
  removeStaleTemps(target);
  std::string tmp = target + ".tmp." + std::to_string(getpid());
  // Marked before it exists and until it is renamed or removed: a
  // termination handler unlinking a name that is not there is harmless.
  markTemp(tmp);
  struct Unmark {
    ~Unmark() {
      if (tempTracking)
        tempInFlight = 0;
    }
  } unmark;
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    error = path + ": cannot create " + tmp + ": " + std::strerror(errno);
    return false;
  }
  const uint8_t *p = image->data();
  size_t left = image->size();
  while (left > 0) {
    ssize_t w = ::write(fd, p, left);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0) {
      error = path + ": write failed: " + std::strerror(errno);
      ::close(fd);
      ::unlink(tmp.c_str());
      return false;
    }
    p += w;
    left -= static_cast<size_t>(w);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    error = path + ": cannot flush " + tmp + ": " + std::strerror(errno);
    ::unlink(tmp.c_str());
    return false;
  }
  if (::rename(tmp.c_str(), target.c_str()) != 0) {
    error = path + ": cannot rename " + tmp + ": " + std::strerror(errno);
    ::unlink(tmp.c_str());
    return false;
  }
  return true;
}

} // namespace stlm
