//===- Collective.h - the ranks of a data-parallel run ----------*- C++ -*-===//
//
// What the training loop needs from the processes of a data-parallel run
// (`mpirun -np N stlm-run train ...`): its rank, the number of ranks, an
// in-place sum over all of them, a gather for consistency checks, and a
// way to end the whole job. MPI provides it (train/MpiCollective.h); the
// loop and the engines see only this interface, so they build and test
// without MPI.
//
// Every call but rank(), size(), localRank(), takeReduceSeconds() and
// abort() is collective: every rank makes it, in the same order.
//
//===----------------------------------------------------------------------===//

#ifndef STLM_TRAIN_COLLECTIVE_H
#define STLM_TRAIN_COLLECTIVE_H

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace stlm {

class Collective {
public:
  virtual ~Collective() = default;
  /// This process's rank in [0, size()); rank 0 logs, evaluates and saves.
  virtual int rank() const = 0;
  virtual int size() const = 0;
  /// This process's rank among the ranks of its host.
  virtual int localRank() const = 0;
  /// Sums `count` floats over the ranks, in place, each rank's result the
  /// same. false with `error` set when the library reports a failure.
  virtual bool allreduceSum(float *data, size_t count, std::string &error) = 0;
  /// Every rank's `value`, by rank.
  virtual bool allgather(uint64_t value, std::vector<uint64_t> &values,
                         std::string &error) = 0;
  /// Rank 0's `value` on every rank.
  virtual bool broadcast(int64_t &value, std::string &error) = 0;
  /// Waits until every rank of this host has called it.
  virtual bool localBarrier(std::string &error) = 0;
  /// Seconds spent in allreduceSum since the last call.
  virtual double takeReduceSeconds() = 0;
  /// Ends every rank of the job with exit status `status` (after this
  /// rank's message is out); never returns.
  [[noreturn]] virtual void abort(int status) = 0;
};

} // namespace stlm

#endif // STLM_TRAIN_COLLECTIVE_H
