//===- Files.cpp - result files, written whole or not at all -------------===//

#include "support/Files.h"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sys/stat.h>
#include <unistd.h>

namespace stlm {

bool replaceableFile(const std::string &path, std::string &resolved,
                     std::string &error) {
  resolved = path;
  struct stat link;
  if (::lstat(path.c_str(), &link) != 0)
    return true; // not there yet: created by the rename
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    error = path + ": is a symbolic link that does not lead to a file (" +
            std::strerror(errno) + "); not writing through it";
    return false;
  }
  if (S_ISDIR(st.st_mode)) {
    error = path + ": is a directory, not a file to write";
    return false;
  }
  if (!S_ISREG(st.st_mode)) {
    error = path +
            ": is not a regular file (a device, FIFO or socket); results "
            "are written only to regular files";
    return false;
  }
  if (S_ISLNK(link.st_mode)) {
    char *real = ::realpath(path.c_str(), nullptr);
    if (!real) {
      error =
          path + ": cannot resolve the symbolic link: " + std::strerror(errno);
      return false;
    }
    resolved = real;
    std::free(real);
  }
  return true;
}

bool writeAtomically(const std::string &path,
                     const std::vector<std::string_view> &pieces,
                     std::string &error) {
  std::string target;
  if (!replaceableFile(path, target, error))
    return false;
  std::string tmp = target + ".tmp." + std::to_string(getpid());
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
  if (std::rename(tmp.c_str(), target.c_str()) != 0) {
    error = "cannot rename '" + tmp + "' to '" + path +
            "': " + std::strerror(errno);
    std::remove(tmp.c_str());
    return false;
  }
  return true;
}

} // namespace stlm
