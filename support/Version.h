//===- Version.h - the stlm version every tool prints ---------------------===//
//
// `--version` on every tool prints versionLine(): the release (the CMake
// project's VERSION) and the commit the build came from (`git describe
// --always --dirty`, "unknown" outside a git checkout).
//
//===----------------------------------------------------------------------===//

#ifndef STLM_SUPPORT_VERSION_H
#define STLM_SUPPORT_VERSION_H

#include <string>

namespace stlm {

const char *version(); // "0.5.0"
const char *commit();  // "06ef74c96cb9", "06ef74c96cb9-dirty" or "unknown"
/// "<tool> (stlm) 0.5.0, commit 06ef74c96cb9".
std::string versionLine(const std::string &tool);

} // namespace stlm

#endif // STLM_SUPPORT_VERSION_H
