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

/// Writes `pieces`, one after the other, to `path` through `path.tmp.<pid>`
/// and a rename; false with `error` set (and no temporary file left).
bool writeAtomically(const std::string &path,
                     const std::vector<std::string_view> &pieces,
                     std::string &error);

} // namespace stlm

#endif // STLM_SUPPORT_FILES_H
