//===- Files.cpp - result files, written whole or not at all -------------===//

#include "support/Files.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <unistd.h>

namespace stlm {

bool writeAtomically(const std::string &path,
                     const std::vector<std::string_view> &pieces,
                     std::string &error) {
  std::string tmp = path + ".tmp." + std::to_string(getpid());
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    for (std::string_view piece : pieces)
      f.write(piece.data(), static_cast<std::streamsize>(piece.size()));
    f.flush();
    if (!f) {
      error = "cannot write '" + tmp + "': " + std::strerror(errno);
      std::remove(tmp.c_str());
      return false;
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    error = "cannot rename '" + tmp + "' to '" + path +
            "': " + std::strerror(errno);
    std::remove(tmp.c_str());
    return false;
  }
  return true;
}

} // namespace stlm
