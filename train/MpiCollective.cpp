//===- MpiCollective.cpp - the ranks of an mpirun job ---------------------===//

#include "train/MpiCollective.h"

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdlib>
#include <cstring>

#ifdef STLM_HAVE_MPI
#include <mpi.h>
#endif

namespace stlm {

int launchedRanks(std::string &error) {
  for (const char *name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE"}) {
    const char *v = std::getenv(name);
    if (!v)
      continue;
    char *end = nullptr;
    long n = std::strtol(v, &end, 10);
    if (!*v || *end || n < 1 || n > INT_MAX) {
      error = std::string("the launcher's ") + name + " is '" + v +
              "', not a number of ranks";
      return -1;
    }
    return static_cast<int>(n);
  }
  return 1;
}

#ifdef STLM_HAVE_MPI

bool haveMpi() { return true; }

namespace {

class MpiCollective : public Collective {
public:
  MpiCollective() = default;
  ~MpiCollective() override {
    if (!initialised)
      return;
    if (local != MPI_COMM_NULL)
      MPI_Comm_free(&local);
    MPI_Finalize();
  }

  bool start(std::string &error) {
    if (!check(MPI_Init(nullptr, nullptr), "MPI_Init", error))
      return false;
    initialised = true;
    // Failures come back as codes (reported with the rank), not aborts.
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &worldRank);
    MPI_Comm_size(MPI_COMM_WORLD, &worldSize);
    if (!check(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED,
                                   worldRank, MPI_INFO_NULL, &local),
               "MPI_Comm_split_type", error))
      return false;
    MPI_Comm_set_errhandler(local, MPI_ERRORS_RETURN);
    MPI_Comm_rank(local, &hostRank);
    return true;
  }

  int rank() const override { return worldRank; }
  int size() const override { return worldSize; }
  int localRank() const override { return hostRank; }

  bool allreduceSum(float *data, size_t count, std::string &error) override {
    auto t0 = std::chrono::steady_clock::now();
    // One call for any real model (MPI counts are ints: 2^31 - 1 floats).
    for (size_t done = 0; done < count;) {
      int n = static_cast<int>(std::min<size_t>(count - done, INT_MAX));
      if (!check(MPI_Allreduce(MPI_IN_PLACE, data + done, n, MPI_FLOAT,
                               MPI_SUM, MPI_COMM_WORLD),
                 "MPI_Allreduce", error))
        return false;
      done += static_cast<size_t>(n);
    }
    reduceSeconds += std::chrono::duration<double>(
                         std::chrono::steady_clock::now() - t0)
                         .count();
    return true;
  }
  bool allgather(uint64_t value, std::vector<uint64_t> &values,
                 std::string &error) override {
    values.assign(static_cast<size_t>(worldSize), 0);
    return check(MPI_Allgather(&value, 1, MPI_UINT64_T, values.data(), 1,
                               MPI_UINT64_T, MPI_COMM_WORLD),
                 "MPI_Allgather", error);
  }
  bool broadcast(int64_t &value, std::string &error) override {
    return check(MPI_Bcast(&value, 1, MPI_INT64_T, 0, MPI_COMM_WORLD),
                 "MPI_Bcast", error);
  }
  bool localBarrier(std::string &error) override {
    return check(MPI_Barrier(local), "MPI_Barrier", error);
  }
  double takeReduceSeconds() override {
    double s = reduceSeconds;
    reduceSeconds = 0;
    return s;
  }
  [[noreturn]] void abort(int status) override {
    MPI_Abort(MPI_COMM_WORLD, status);
    std::_Exit(status); // MPI_Abort does not return; if it did
  }

private:
  static bool check(int rc, const char *what, std::string &error) {
    if (rc == MPI_SUCCESS)
      return true;
    char text[MPI_MAX_ERROR_STRING];
    int length = 0;
    if (MPI_Error_string(rc, text, &length) != MPI_SUCCESS)
      length = 0;
    error = std::string(what) + " failed: " +
            (length > 0 ? std::string(text, static_cast<size_t>(length))
                        : "MPI error " + std::to_string(rc));
    return false;
  }

  bool initialised = false;
  int worldRank = 0, worldSize = 1, hostRank = 0;
  MPI_Comm local = MPI_COMM_NULL;
  double reduceSeconds = 0;
};

} // namespace

std::unique_ptr<Collective> startMpi(std::string &error) {
  auto c = std::make_unique<MpiCollective>();
  if (!c->start(error))
    return nullptr;
  return c;
}

#else // !STLM_HAVE_MPI

bool haveMpi() { return false; }

std::unique_ptr<Collective> startMpi(std::string &error) {
  error = "this stlm-run was built without MPI, so it cannot train "
          "data-parallel (install Debian's libopenmpi-dev and openmpi-bin "
          "-- scripts/install-deps.sh does -- and build again)";
  return nullptr;
}

#endif // STLM_HAVE_MPI

} // namespace stlm
