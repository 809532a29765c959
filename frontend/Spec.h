//===- Spec.h - YAML model specs --------------------------------*- C++ -*-===//
//
// The model spec of MODEL_SPEC.md as a plain struct, read from YAML with
// strict validation. Every problem is reported as
// `file:line:col: error: <key>: <what>`; parsing collects all of them.
//
// This library depends on yaml-cpp and nlohmann-json only (no MLIR), so the
// runtime-side tools can use it.
//
//===----------------------------------------------------------------------===//

#ifndef STLM_FRONTEND_SPEC_H
#define STLM_FRONTEND_SPEC_H

#include "support/TrainDefaults.h"

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace stlm {

enum class EmbedderKind { Token, BytePool };
enum class Chunking { Fixed, Words, Given };
enum class Pool { Mean, MaskedMean, Max };
enum class Ffn { SwiGLU, GELU };
enum class Share { None, All, Interior };
enum class HeadKind { Token, ByteChunk };
enum class ObjectiveKind {
  NextToken,
  ChunkBytes,
  Reconstruction,
  MaskedNextToken,
  Distill
};
enum class Schedule { Cosine, Constant };
enum class Precision { FP32, BF16 };

struct EmbedderSpec {
  EmbedderKind kind = EmbedderKind::Token;
  int64_t vocabSize = 256; // token only
  // byte_pool only:
  Chunking chunking = Chunking::Words;
  int64_t stride = 0;      // fixed only
  int64_t chunkBytes = 12; // L
  int64_t byteWidth = 128; // d_b
  int64_t encoderLayers = 2;
  int64_t encoderHeads = 4;
  Pool pool = Pool::Mean;
};

struct CoreSpec {
  int64_t layers = 0;
  int64_t width = 0;
  int64_t heads = 0;
  int64_t kvHeads = 0; // defaults to heads
  Ffn ffn = Ffn::SwiGLU;
  int64_t ffnWidth = 0;
  int64_t context = 0; // T: tokens, or chunks for byte_pool
  double ropeTheta = 10000.0;
  double normEps = 1e-6;

  int64_t headDim() const { return heads ? width / heads : 0; }
};

struct TyingSpec {
  bool embedHead = false;
  Share ffn = Share::None;
  Share attnOut = Share::None;
  int64_t interiorKeep = 1; // k: layers [k, D-k) are interior
  int64_t loraRank = 0;
};

struct HeadSpec {
  HeadKind kind = HeadKind::Token;
  int64_t decoderLayers = 2; // byte_chunk only
  int64_t decoderHeads = 4;
};

struct ModelSpec;

/// A distilling student holds its teacher: the teacher's weights are the
/// student's frozen states named kTeacherPrefix + the teacher's parameter
/// name (the runtime's stlm_load_teacher fills them).
inline constexpr const char *kTeacherPrefix = "teacher.";

struct ObjectiveSpec {
  ObjectiveKind kind = ObjectiveKind::NextToken;
  double weight = 1.0;
  bool maskPad = false;      // chunk_bytes, reconstruction
  double maskProb = 0.15;    // masked_next_token
  int64_t maskId = 0;        // masked_next_token: id that replaces inputs
  std::string teacher;       // distill: teacher checkpoint path
  /// distill: the teacher's spec, read from the checkpoint's metadata
  /// (resolveTeachers) and stored with the student's as `teacher_spec`, so
  /// that a stored student compiles without the teacher's file.
  std::shared_ptr<const ModelSpec> teacherSpec;
  double temperature = 2.0;  // distill
  double alpha = 0.5;        // distill
};

/// The `train` section; what a spec leaves out is support/TrainDefaults.h.
struct TrainSpec {
  int64_t batch = train_defaults::kBatch;
  int64_t steps = train_defaults::kSteps;
  double lr = train_defaults::kLr;
  double minLr = train_defaults::kMinLr;
  int64_t warmup = train_defaults::kWarmup;
  Schedule schedule = train_defaults::kCosineSchedule ? Schedule::Cosine
                                                      : Schedule::Constant;
  double beta1 = train_defaults::kBeta1, beta2 = train_defaults::kBeta2;
  double eps = train_defaults::kEps;
  double weightDecay = train_defaults::kWeightDecay;
  double gradClip = train_defaults::kGradClip;
  int64_t accumulate = train_defaults::kAccumulate;
  int64_t seed = train_defaults::kSeed;
  Precision precision =
      train_defaults::kBF16 ? Precision::BF16 : Precision::FP32;
};

/// A whole, validated model spec. Defaults are filled in.
struct ModelSpec {
  std::string name;
  EmbedderSpec embedder;
  CoreSpec core;
  TyingSpec tying;
  HeadSpec head;
  std::vector<ObjectiveSpec> objectives;
  TrainSpec train;

  /// `name` with dashes turned into underscores: the C symbol prefix.
  std::string symbolName() const;
  /// Bytes per training/eval window of the input: T for token models,
  /// T * stride (fixed) or T * L (words, given) for byte_pool models, so
  /// that a window always fills the T chunks.
  int64_t windowBytes() const;
  /// Whether layer `l` reads the shared FFN / attention output weights.
  bool sharesFfn(int64_t layer) const;
  bool sharesAttnOut(int64_t layer) const;
  /// The vocabulary the head predicts (V, or 258 for byte chunks).
  int64_t headVocab() const;
};

/// One diagnostic: where, and what.
struct SpecDiagnostic {
  std::string file;
  int line = 0;   // 1-based; 0 if unknown
  int column = 0; // 1-based; 0 if unknown
  std::string message;

  /// `file:line:col: error: message`.
  std::string str() const;
};

/// The result of reading a spec: the spec when `diagnostics` is empty.
struct SpecResult {
  std::optional<ModelSpec> spec;
  std::vector<SpecDiagnostic> diagnostics;
};

/// Parses and validates YAML `text`; `file` names it in diagnostics.
SpecResult parseSpec(const std::string &text, const std::string &file);
/// The largest spec file read: 1 MiB (specs are a few hundred bytes).
inline constexpr uint64_t kMaxSpecBytes = uint64_t(1) << 20;
/// Reads `path` (a regular file of at most kMaxSpecBytes) and parses it.
SpecResult readSpecFile(const std::string &path);
/// Parses a spec stored as JSON (the form `specToJson` writes, e.g. in a
/// checkpoint's `__metadata__`). `origin` names it in diagnostics.
SpecResult parseSpecJson(const std::string &json, const std::string &origin);

/// Fills in the spec of every `distill` teacher that `result` (a parsed
/// spec from `origin`) does not store yet, from the `__metadata__` of the
/// teacher's checkpoint (its path as written, relative paths from the
/// working directory), and checks that the teacher can teach: a token
/// model of the student's vocabulary and at least its context, without a
/// teacher of its own. Problems become diagnostics and clear the spec.
/// readSpecFile does this; parseSpec and parseSpecJson do not read files.
void resolveTeachers(SpecResult &result, const std::string &origin);

/// The spec, defaults included, as compact JSON with the YAML key names.
std::string specToJson(const ModelSpec &spec);

const char *toString(EmbedderKind);
const char *toString(Chunking);
const char *toString(Pool);
const char *toString(Ffn);
const char *toString(Share);
const char *toString(HeadKind);
const char *toString(ObjectiveKind);
const char *toString(Schedule);
const char *toString(Precision);

} // namespace stlm

#endif // STLM_FRONTEND_SPEC_H
