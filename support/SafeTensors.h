//===- SafeTensors.h - strict safetensors reader and writer -----*- C++ -*-===//
//
// The safetensors format: an 8-byte little-endian header length N, N bytes
// of JSON header, then the raw little-endian tensor bytes. The header maps
// each tensor name to {"dtype", "shape", "data_offsets": [begin, end]}
// (offsets relative to the data section) and may hold "__metadata__", a map
// of strings to strings.
//
// Reading is strict; a file is rejected, with a message naming the problem,
// when: it is shorter than 8 bytes; N is 0, larger than kMaxHeaderBytes or
// than the rest of the file; the header is not a JSON object; a tensor entry
// has unknown or missing fields, an unknown dtype, a negative or
// non-integer dimension, or offsets that are reversed or out of the data
// section; a tensor's byte length is not shape × dtype size; tensors
// overlap or leave gaps; bytes follow the last tensor (trailing garbage);
// or __metadata__ is not a map of strings.
//
// Ownership: a SafeTensorsFile owns its bytes (an mmap of the file, or a
// buffer); TensorView pointers into it live as long as the object. Not
// thread-safe for concurrent mutation; concurrent reads are fine.
//
//===----------------------------------------------------------------------===//

#ifndef STLM_SUPPORT_SAFETENSORS_H
#define STLM_SUPPORT_SAFETENSORS_H

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace stlm {

enum class DType {
  F64, F32, F16, BF16, F8_E4M3, F8_E5M2,
  I64, I32, I16, I8, U64, U32, U16, U8, BOOL
};

/// Bytes per element.
size_t dtypeSize(DType dtype);
/// The header's name for `dtype` ("F32", ...).
const char *dtypeName(DType dtype);
std::optional<DType> parseDType(const std::string &name);

/// Header limit, as in the reference implementation (100 MB).
constexpr uint64_t kMaxHeaderBytes = 100u * 1000u * 1000u;

struct TensorView {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  const uint8_t *data = nullptr; // into the file's data section
  size_t size = 0;               // bytes

  int64_t numel() const;
};

class SafeTensorsFile {
public:
  /// Maps `path` read-only and validates it. On failure returns null and
  /// sets `error` to "<path>: <problem>".
  static std::unique_ptr<SafeTensorsFile> open(const std::string &path,
                                               std::string &error);
  /// Validates bytes already in memory; `origin` names them in errors.
  static std::unique_ptr<SafeTensorsFile>
  fromBuffer(std::vector<uint8_t> bytes, const std::string &origin,
             std::string &error);
  /// Validates `size` bytes at `data` that outlive the file object (a
  /// checkpoint compiled into a program) without copying them.
  static std::unique_ptr<SafeTensorsFile> view(const uint8_t *data,
                                               size_t size,
                                               const std::string &origin,
                                               std::string &error);

  ~SafeTensorsFile();
  SafeTensorsFile(const SafeTensorsFile &) = delete;
  SafeTensorsFile &operator=(const SafeTensorsFile &) = delete;

  /// Tensors in data order.
  const std::vector<TensorView> &tensors() const { return tensors_; }
  const TensorView *find(const std::string &name) const;
  const std::map<std::string, std::string> &metadata() const {
    return metadata_;
  }

private:
  SafeTensorsFile() = default;
  bool parse(const std::string &origin, std::string &error);

  const uint8_t *bytes_ = nullptr;
  size_t size_ = 0;
  void *mapping_ = nullptr; // mmap base, or null when buffer_ owns (or
                            // nobody: a view)
  std::vector<uint8_t> buffer_;
  std::vector<TensorView> tensors_;
  std::map<std::string, std::string> metadata_;
};

/// A tensor to write: `data` must hold numel × dtype size bytes.
struct TensorToWrite {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  const void *data = nullptr;
  size_t size = 0;
};

/// The complete file image (header padded with spaces to a multiple of 8).
/// Fails (returns nothing, sets `error`) on duplicate or reserved names or
/// a size that does not match the shape.
std::optional<std::vector<uint8_t>>
serializeSafeTensors(const std::vector<TensorToWrite> &tensors,
                     const std::map<std::string, std::string> &metadata,
                     std::string &error);

/// Whether writeSafeTensors could write `path` now: it is missing or a
/// regular file (or a link to one), and its temporary file can be created
/// beside it (probed, then removed).
/// False with `error` naming the problem. Long jobs check their output up
/// front rather than after the work.
bool canWriteSafeTensors(const std::string &path, std::string &error);

/// Writes the file atomically: to `path.tmp.<pid>`, fsync, then rename over
/// `path`, so an existing good file is never left half-written. Temp files
/// of `path` left by writers that died (their process is gone) are removed
/// first. A symbolic link is written through (the link stays, the file it
/// names is replaced); a directory, a dangling link, a device, FIFO or
/// socket is refused, never replaced.
bool writeSafeTensors(const std::string &path,
                      const std::vector<TensorToWrite> &tensors,
                      const std::map<std::string, std::string> &metadata,
                      std::string &error);

/// Makes SIGTERM, SIGINT and SIGHUP remove the temporary file of a
/// writeSafeTensors in progress before the signal ends the process as it
/// would have; signals the process ignores stay ignored (nohup). A
/// program's choice, so a library never calls it: `stlm-run train` does,
/// so that mpirun ending a job, or Ctrl-C, leaves nothing half-written.
/// Until it is called, writeSafeTensors keeps no process-wide state.
void removeTempFileOnTermination();

} // namespace stlm

#endif // STLM_SUPPORT_SAFETENSORS_H
