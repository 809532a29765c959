//===- SafeTensorsTest.cpp - strict safetensors reading and writing -------===//
//
// Round trips, one test per rejection rule, and a corruption sweep (every
// truncation and many byte flips of a valid file). This file is also built
// with AddressSanitizer (SafeTensorsAsanTests), so the sweep proves the
// reader never reads out of bounds on hostile input.
//
//===----------------------------------------------------------------------===//

#include "support/SafeTensors.h"

#include <gtest/gtest.h>

#include <csignal>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <random>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

using namespace stlm;

namespace {

/// A file image from a raw header string and `dataBytes` bytes of data.
std::vector<uint8_t> image(const std::string &header, size_t dataBytes,
                           uint64_t headerLength = UINT64_MAX) {
  uint64_t n = headerLength == UINT64_MAX ? header.size() : headerLength;
  std::vector<uint8_t> out(8 + header.size() + dataBytes, 0xab);
  for (int i = 0; i < 8; ++i)
    out[i] = static_cast<uint8_t>(n >> (8 * i));
  std::memcpy(out.data() + 8, header.data(), header.size());
  return out;
}

/// Parses `bytes` and returns the error ("" when accepted).
std::string errorOf(std::vector<uint8_t> bytes) {
  std::string error;
  auto file = SafeTensorsFile::fromBuffer(std::move(bytes), "mem", error);
  if (file)
    return "";
  EXPECT_FALSE(error.empty());
  return error;
}

std::vector<uint8_t> validImage() {
  std::vector<float> a = {1, 2, 3, 4, 5, 6};
  std::vector<int32_t> b = {7, -8};
  std::string error;
  auto img = serializeSafeTensors(
      {{"a", DType::F32, {2, 3}, a.data(), a.size() * 4},
       {"b", DType::I32, {2}, b.data(), b.size() * 4}},
      {{"stlm_format", "1"}}, error);
  EXPECT_TRUE(img.has_value()) << error;
  return *img;
}

TEST(SafeTensors, RoundTripsTensorsAndMetadata) {
  std::string error;
  auto file = SafeTensorsFile::fromBuffer(validImage(), "mem", error);
  ASSERT_TRUE(file) << error;
  ASSERT_EQ(file->tensors().size(), 2u);
  const TensorView *a = file->find("a");
  ASSERT_TRUE(a);
  EXPECT_EQ(a->dtype, DType::F32);
  EXPECT_EQ(a->shape, (std::vector<int64_t>{2, 3}));
  ASSERT_EQ(a->size, 24u);
  float values[6];
  std::memcpy(values, a->data, 24);
  EXPECT_EQ(values[5], 6.0f);
  const TensorView *b = file->find("b");
  ASSERT_TRUE(b);
  int32_t ints[2];
  std::memcpy(ints, b->data, 8);
  EXPECT_EQ(ints[1], -8);
  EXPECT_EQ(file->metadata().at("stlm_format"), "1");
  EXPECT_EQ(file->find("c"), nullptr);
}

TEST(SafeTensors, HeaderIsPaddedToEightBytes) {
  std::vector<uint8_t> img = validImage();
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i)
    n = (n << 8) | img[i];
  EXPECT_EQ(n % 8, 0u);
}

TEST(SafeTensors, AcceptsEmptyTensorsAndEmptyFiles) {
  EXPECT_EQ(errorOf(image("{}", 0)), "");
  EXPECT_EQ(errorOf(image(R"({"z":{"dtype":"F32","shape":[0,3],"data_offsets":[0,0]}})", 0)), "");
}

struct BadCase {
  const char *what;
  std::vector<uint8_t> bytes;
  const char *expected;
};

/// A spec given where a checkpoint goes: its first 8 bytes read as a
/// length of about 7.5e18.
const char yamlText[] = "name: char-tiny\nembedder: {kind: token}\n";

TEST(SafeTensors, RejectsEveryMalformation) {
  const std::string t1 = R"("t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
  std::vector<BadCase> cases = {
      {"empty file", {}, "truncated: 0 bytes"},
      {"7 bytes", std::vector<uint8_t>(7, 0), "truncated: 7 bytes"},
      {"zero header length", image("", 0, 0), "header length is 0"},
      {"huge header length", image("{}", 0, uint64_t(1) << 40),
       "exceeds the 100000000-byte limit"},
      {"header past the end", image("{}", 0, 64), "runs past the end"},
      {"bad json", image("{\"t\": [", 0), "not well-formed JSON"},
      {"json array", image("[1, 2]", 0), "not a safetensors file"},
      {"text", std::vector<uint8_t>(yamlText, yamlText + sizeof yamlText - 1),
       "not a safetensors file"},
      {"entry not object", image(R"({"t": 3})", 0), "entry is not an object"},
      {"unknown field", image(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"x":1}})", 8),
       "unknown field 'x'"},
      {"missing field", image(R"({"t":{"dtype":"F32","shape":[2]}})", 8),
       "needs dtype, shape and data_offsets"},
      {"dtype not string", image(R"({"t":{"dtype":4,"shape":[2],"data_offsets":[0,8]}})", 8),
       "dtype is not a string"},
      {"unknown dtype", image(R"({"t":{"dtype":"F31","shape":[2],"data_offsets":[0,8]}})", 8),
       "unknown dtype 'F31'"},
      {"shape not list", image(R"({"t":{"dtype":"F32","shape":2,"data_offsets":[0,8]}})", 8),
       "shape is not a list"},
      {"negative dim", image(R"({"t":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8),
       "not a non-negative integer"},
      {"fractional dim", image(R"({"t":{"dtype":"F32","shape":[2.5],"data_offsets":[0,8]}})", 8),
       "not a non-negative integer"},
      {"overflowing shape", image(R"({"t":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,8]}})", 8),
       "shape is too large"},
      {"offsets not pair", image(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0]}})", 8),
       "data_offsets must be two non-negative integers"},
      {"negative offset", image(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[-8,0]}})", 8),
       "data_offsets must be two non-negative integers"},
      {"reversed offsets", image(R"({"t":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}})", 8),
       "are reversed"},
      {"offsets out of range", image("{" + t1 + "}", 4), "past the data section"},
      {"size mismatch", image(R"({"t":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8),
       "holds 8 bytes but shape and dtype need 12"},
      {"overlap", image("{" + t1 + R"(,"u":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 12),
       "overlaps the tensor before it"},
      {"gap", image(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 12),
       "gap of 4 unused bytes before tensor 't'"},
      {"trailing garbage", image("{" + t1 + "}", 10), "2 bytes of trailing garbage"},
      {"metadata not map", image(R"({"__metadata__": [1]})", 0),
       "__metadata__ must be a map"},
      {"metadata value not string", image(R"({"__metadata__": {"a": 1}})", 0),
       "value for 'a' is not a string"},
  };
  for (BadCase &c : cases) {
    std::string error = errorOf(c.bytes);
    EXPECT_NE(error.find(c.expected), std::string::npos)
        << c.what << ": got '" << error << "'";
    EXPECT_EQ(error.rfind("mem: ", 0), 0u) << c.what << ": " << error;
  }
}

TEST(SafeTensors, SurvivesEveryTruncationAndRandomCorruption) {
  std::vector<uint8_t> good = validImage();
  // Every truncation is rejected (the data must tile exactly).
  for (size_t n = 0; n < good.size(); ++n) {
    std::vector<uint8_t> cut(good.begin(), good.begin() + n);
    EXPECT_NE(errorOf(cut), "") << "truncated to " << n;
  }
  // Random byte flips: accepted or rejected, never a crash or overread.
  std::mt19937 rng(42);
  for (int i = 0; i < 3000; ++i) {
    std::vector<uint8_t> bad = good;
    int flips = 1 + static_cast<int>(rng() % 4);
    for (int f = 0; f < flips; ++f)
      bad[rng() % bad.size()] = static_cast<uint8_t>(rng());
    std::string error;
    auto file = SafeTensorsFile::fromBuffer(bad, "mem", error);
    if (file)
      for (const TensorView &t : file->tensors()) {
        // Reading every accepted byte must stay in bounds.
        volatile uint8_t sink = 0;
        for (size_t k = 0; k < t.size; ++k)
          sink ^= t.data[k];
        (void)sink;
      }
  }
}

TEST(SafeTensors, WriterRejectsInconsistentTensors) {
  float x[2] = {1, 2};
  std::string error;
  EXPECT_FALSE(serializeSafeTensors({{"a", DType::F32, {3}, x, 8}}, {}, error));
  EXPECT_NE(error.find("8 bytes given, shape and dtype need 12"),
            std::string::npos)
      << error;
  EXPECT_FALSE(serializeSafeTensors(
      {{"a", DType::F32, {2}, x, 8}, {"a", DType::F32, {2}, x, 8}}, {}, error));
  EXPECT_NE(error.find("used twice"), std::string::npos) << error;
  EXPECT_FALSE(
      serializeSafeTensors({{"__metadata__", DType::F32, {2}, x, 8}}, {}, error));
  EXPECT_NE(error.find("reserved"), std::string::npos) << error;
}

/// The bytes of the file at `path` ("" if it cannot be read).
std::string readAll(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

TEST(SafeTensors, FilesAreWrittenAtomicallyAndMapped) {
  char dir[] = "/tmp/stlm-safetensors-XXXXXX";
  ASSERT_TRUE(mkdtemp(dir));
  std::string path = std::string(dir) + "/w.safetensors";
  float x[2] = {3, 4};
  std::string error;
  ASSERT_TRUE(writeSafeTensors(path, {{"x", DType::F32, {2}, x, 8}},
                               {{"k", "v"}}, error))
      << error;
  auto file = SafeTensorsFile::open(path, error);
  ASSERT_TRUE(file) << error;
  EXPECT_EQ(file->metadata().at("k"), "v");
  ASSERT_TRUE(file->find("x"));

  // A failed write of the good file's own path leaves it untouched: a
  // directory where the writer's temp file goes makes the write fail before
  // anything is renamed over the good file.
  std::string before = readAll(path);
  ASSERT_FALSE(before.empty());
  std::string tmpSlot = path + ".tmp." + std::to_string(getpid());
  ASSERT_EQ(mkdir(tmpSlot.c_str(), 0755), 0);
  float y[3] = {5, 6, 7};
  EXPECT_FALSE(writeSafeTensors(path, {{"y", DType::F32, {3}, y, 12}},
                                {{"k", "other"}}, error));
  EXPECT_NE(error.find("cannot create " + tmpSlot), std::string::npos)
      << error;
  EXPECT_EQ(readAll(path), before) << "the failed write changed the file";
  auto again = SafeTensorsFile::open(path, error);
  ASSERT_TRUE(again) << error;
  EXPECT_EQ(again->metadata().at("k"), "v");
  const auto *t = again->find("x");
  ASSERT_TRUE(t);
  ASSERT_EQ(t->size, 8u);
  float values[2];
  std::memcpy(values, t->data, 8);
  EXPECT_EQ(values[1], 4.0f);
  rmdir(tmpSlot.c_str());

  // What is not a regular file is refused, never replaced: a directory, a
  // FIFO (as a device would be), a dangling link.
  std::string blocked = std::string(dir) + "/blocked";
  ASSERT_EQ(mkdir(blocked.c_str(), 0755), 0);
  EXPECT_FALSE(writeSafeTensors(blocked, {{"x", DType::F32, {2}, x, 8}}, {},
                                error));
  EXPECT_NE(error.find("is a directory"), std::string::npos) << error;
  EXPECT_FALSE(canWriteSafeTensors(blocked, error));
  std::string fifo = std::string(dir) + "/fifo";
  ASSERT_EQ(mkfifo(fifo.c_str(), 0644), 0);
  for (bool probe : {false, true}) {
    EXPECT_FALSE(probe ? canWriteSafeTensors(fifo, error)
                       : writeSafeTensors(fifo, {{"x", DType::F32, {2}, x, 8}},
                                          {}, error));
    EXPECT_NE(error.find("not a regular file"), std::string::npos) << error;
    struct stat st;
    ASSERT_EQ(lstat(fifo.c_str(), &st), 0);
    EXPECT_TRUE(S_ISFIFO(st.st_mode)) << "the FIFO was replaced";
  }
  std::string dangling = std::string(dir) + "/dangling";
  ASSERT_EQ(symlink("missing", dangling.c_str()), 0);
  EXPECT_FALSE(
      writeSafeTensors(dangling, {{"x", DType::F32, {2}, x, 8}}, {}, error));
  EXPECT_NE(error.find("symbolic link that does not lead to a file"),
            std::string::npos)
      << error;

  // A link to a file is written through: the link stays a link.
  std::string link = std::string(dir) + "/link";
  ASSERT_EQ(symlink("w.safetensors", link.c_str()), 0);
  ASSERT_TRUE(canWriteSafeTensors(link, error)) << error;
  ASSERT_TRUE(
      writeSafeTensors(link, {{"y", DType::F32, {3}, y, 12}}, {}, error))
      << error;
  struct stat linkStat;
  ASSERT_EQ(lstat(link.c_str(), &linkStat), 0);
  EXPECT_TRUE(S_ISLNK(linkStat.st_mode)) << "the link was replaced";
  auto through = SafeTensorsFile::open(path, error);
  ASSERT_TRUE(through) << error;
  EXPECT_TRUE(through->find("y")) << "the linked file was not written";
  for (const std::string &f : {fifo, dangling, link})
    std::remove(f.c_str());

  // Temp files of writers that died are removed by the next write; those
  // of live processes, and other names, are left alone.
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0)
    _exit(0);
  ASSERT_EQ(waitpid(child, nullptr, 0), child);
  std::string dead = path + ".tmp." + std::to_string(child);
  std::string live = path + ".tmp." + std::to_string(getppid());
  std::string other = path + ".tmp.notapid";
  for (const std::string &f : {dead, live, other})
    std::ofstream(f) << "partial";
  ASSERT_TRUE(writeSafeTensors(path, {{"x", DType::F32, {2}, x, 8}}, {},
                               error))
      << error;
  EXPECT_NE(access(dead.c_str(), F_OK), 0) << "the dead writer's temp file";
  EXPECT_EQ(access(live.c_str(), F_OK), 0) << "a live process's temp file";
  EXPECT_EQ(access(other.c_str(), F_OK), 0);
  std::remove(live.c_str());
  std::remove(other.c_str());

  // Missing files and directories are reported by path.
  EXPECT_FALSE(SafeTensorsFile::open(std::string(dir) + "/nope", error));
  EXPECT_NE(error.find("/nope: cannot open"), std::string::npos) << error;
  EXPECT_FALSE(SafeTensorsFile::open(dir, error));
  EXPECT_NE(error.find("not a regular file"), std::string::npos) << error;

  // No temp files are left behind.
  std::remove(path.c_str());
  rmdir(blocked.c_str());
  EXPECT_EQ(rmdir(dir), 0) << "directory not empty after the writes";
}

TEST(SafeTensors, TerminationRemovesTheTempFileBeingWritten) {
  char dir[] = "/tmp/stlm-safetensors-signal-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  std::string path = std::string(dir) + "/ck.safetensors";
  int go[2];
  ASSERT_EQ(pipe(go), 0);
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // As under nohup: SIGHUP ignored, and it must stay so.
    std::signal(SIGHUP, SIG_IGN);
    char c;
    if (read(go[0], &c, 1) != 1)
      _exit(2);
    removeTempFileOnTermination();
    struct sigaction hup, term;
    sigaction(SIGHUP, nullptr, &hup);
    sigaction(SIGTERM, nullptr, &term);
    if (hup.sa_handler != SIG_IGN || term.sa_handler == SIG_DFL)
      _exit(4);
    // 4 MiB: more than a pipe holds, so the write blocks half done.
    std::vector<float> x(1 << 20, 1.0f);
    std::string error;
    writeSafeTensors(path, {{"x", DType::F32, {1 << 20}, x.data(),
                             x.size() * sizeof(float)}},
                     {}, error);
    _exit(3); // not reached: the write blocks until the signal
  }
  // The child's temp file is a FIFO we read a little of, so that it is
  // stuck inside writeSafeTensors when SIGTERM comes.
  std::string temp = path + ".tmp." + std::to_string(child);
  ASSERT_EQ(mkfifo(temp.c_str(), 0600), 0);
  ASSERT_EQ(write(go[1], "g", 1), 1);
  // A child that ended early never opens the FIFO: the alarm ends the
  // test (with SIGALRM) instead of a wait forever.
  alarm(60);
  int fd = open(temp.c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  char buf[4096];
  ASSERT_GT(read(fd, buf, sizeof buf), 0);
  alarm(0);
  kill(child, SIGTERM);
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  close(fd);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM)
      << "the child ended otherwise: status " << status;
  EXPECT_NE(access(temp.c_str(), F_OK), 0) << "the temp file is left";
  EXPECT_NE(access(path.c_str(), F_OK), 0) << "a checkpoint appeared";
  std::remove(temp.c_str());
  EXPECT_EQ(rmdir(dir), 0);
}

} // namespace
