//===- Version.cpp - the stlm version every tool prints -------------------===//

#include "support/Version.h"

#include "support/VersionInfo.h" // generated (cmake/WriteVersion.cmake)

namespace stlm {

const char *version() { return STLM_VERSION_STRING; }
const char *commit() { return STLM_COMMIT_STRING; }

std::string versionLine(const std::string &tool) {
  return tool + " (stlm) " + version() + ", commit " + commit();
}

} // namespace stlm
