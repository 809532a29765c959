//===- Files.h - result files, written whole or not at all ----*- C++ -*-===//
//
//
// What every command that writes a result file shares: the file appears
// whole or not at all (a temporary file beside it, then a rename), so an
// interrupted or failed write never leaves a user's previous file damaged.
//
//===----------------------------------------------------------------------===//

#ifndef STLM_SUPPORT_FILES_H
#define STLM_SUPPORT_FILES_H

#include <string>
#include <string_view>
#include <vector>

namespace stlm {

/// The file a write of `path` replaces: `path` itself (also when it does
/// not exist yet), or the file a symbolic link names (the link is kept).
/// False with `error` when `path` is a directory, a link that leads to no
/// file, or anything but a regular file: a device, FIFO or socket is never
/// replaced by a rename.
bool replaceableFile(const std::string &path, std::string &resolved,
                     std::string &error);

/// Writes `pieces`, one after the other, to `path` (replaceableFile's
/// target) through a temporary file beside it and a rename; false with
/// `error` set (and no temporary file left).
bool writeAtomically(const std::string &path,
                     const std::vector<std::string_view> &pieces,
                     std::string &error);

} // namespace stlm

#endif // STLM_SUPPORT_FILES_H
