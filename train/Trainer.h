//===- Trainer.h - the training loop of every engine ------------*- C++ -*-===//
//
// `stlm-run train`: trains a spec on a text file with MODEL_SPEC's data
// rules, through a TrainEngine that computes the steps -- the reference
// evaluator (train/ReferenceEngine.h) or a compiled artifact
// (train/NativeEngine.h), peers under this loop. Prints a progress line
// (step, loss, lr, grad norm, bytes/s, ETA) and can write every step and
// evaluation as JSON lines. Checkpoints hold the parameters, the AdamW
// moments (`opt.m.*`, `opt.v.*`) and `__metadata__.step`, written
// atomically.
//
//===----------------------------------------------------------------------===//

#ifndef STLM_TRAIN_TRAINER_H
#define STLM_TRAIN_TRAINER_H

#include "frontend/Spec.h"
#include "train/Collective.h"
#include "reference/Interpreter.h"

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

namespace stlm {

struct TrainOptions {
  std::string dataPath;
  std::string chunkStartsPath; // `given` chunking's side file
  int64_t steps = -1;        // -1: the spec's train.steps
  int64_t evalEvery = 0;     // 0: only at the start and the end
  int64_t evalWindows = 256; // validation windows per evaluation; 0: all
  std::string logPath;       // JSON lines; "" for none
  std::string resumePath;    // checkpoint to continue from; "" to initialise
  std::string savePath;      // checkpoint to write at the end; "" for none
  int64_t saveEvery = 0;     // also save every N steps (needs savePath)
  double maxSeconds = 0;     // > 0: stop after the step that passes this
                             // many seconds of training (then evaluate, save)
  uint64_t seed = 0;         // initialisation and data order
  bool seedGiven = false;    // false: the spec's train.seed
  FILE *progress = stderr;   // progress lines; null for quiet
  // The ranks of a data-parallel run (null: this process alone). Each
  // rank trains on its share of every step's micro-batches; rank 0 alone
  // prints progress, logs, evaluates and saves.
  Collective *collective = nullptr;
};

/// What computes a training run: the reference evaluator, or a compiled
/// artifact. Tensors are named as in checkpoints
/// (parameters, `opt.m.*`, `opt.v.*`).
class TrainEngine {
public:
  virtual ~TrainEngine() = default;
  /// "the reference evaluator", "the native artifact in DIR", ...
  virtual std::string describe() const = 0;
  /// Derives or loads the training step of `spec`.
  virtual bool prepare(const ModelSpec &spec, std::string &error) = 0;
  virtual bool setTensor(const std::string &name,
                         const std::vector<int64_t> &shape,
                         const std::vector<float> &values,
                         std::string &error) = 0;
  virtual bool getTensor(const std::string &name, std::vector<float> &values,
                         std::string &error) = 0;
  virtual bool setStep(int64_t step, std::string &error) = 0;
  /// Loads the teacher of a distilling `spec` from its checkpoint into the
  /// frozen states `teacher.*` (after prepare); true at once without one.
  /// This one goes through setTensor.
  virtual bool loadTeacher(const ModelSpec &spec, std::string &error);
  /// One optimizer step over `micro` (the arguments of each micro-batch);
  /// `loss` is their mean.
  virtual bool
  trainStep(const std::vector<std::vector<ref::Tensor<float>>> &micro,
            float &loss, float &norm, float &lr, std::string &error) = 0;
  /// The losses of one batch, without updating anything: the loss, then
  /// each objective's own (see BatchLoss).
  virtual bool evalLoss(const std::vector<ref::Tensor<float>> &args,
                        std::vector<float> &losses, std::string &error) = 0;
  /// What decides this engine's arithmetic beyond the spec (after
  /// prepare): ranks of one run must agree on it. A compiled artifact's
  /// matmul precision, which stlm-compile chooses per CPU.
  virtual std::string computeSignature() const { return ""; }
  /// Makes trainStep all-reduce its gradients over `ranks` (after
  /// prepare); false with `error` when this engine cannot.
  virtual bool joinRanks(Collective &ranks, std::string &error) {
    (void)ranks;
    error = "data-parallel training runs compiled artifacts; " + describe() +
            " trains in one process (use --backend native)";
    return false;
  }
};

/// Prints `stlm-run: error: <msg>` on `err`; returns 1, the exit status
/// of bad input.
int reportError(FILE *err, const std::string &msg);

/// Trains with `engine`; returns 0 on success, 1 with a message on `err` on
/// bad input (missing or short data, bad checkpoint, a spec the engine
/// cannot run).
int train(const ModelSpec &spec, const TrainOptions &options,
          TrainEngine &engine, FILE *err);

} // namespace stlm

#endif // STLM_TRAIN_TRAINER_H
