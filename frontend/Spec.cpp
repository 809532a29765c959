//===- Spec.cpp - YAML model specs ----------------------------------------===//
//
// Reading is in two passes: a structural pass that checks every key's
// presence, type and range where it stands, and a semantic pass over the
// filled struct for rules that relate several keys (heads dividing width,
// head kind matching the embedder, ...). Both report at the YAML position
// of the key concerned.
//
//===----------------------------------------------------------------------===//

#include "frontend/Spec.h"

#include "frontend/Params.h"
#include "support/SafeTensors.h"

#include <yaml-cpp/depthguard.h>
#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <set>
#include <sstream>

namespace stlm {

std::string SpecDiagnostic::str() const {
  std::ostringstream os;
  os << file;
  if (line > 0)
    os << ":" << line << ":" << column;
  os << ": error: " << message;
  return os.str();
}

//===----------------------------------------------------------------------===//
// Enum names
//===----------------------------------------------------------------------===//

const char *toString(EmbedderKind k) {
  return k == EmbedderKind::Token ? "token" : "byte_pool";
}
const char *toString(Chunking c) {
  switch (c) {
  case Chunking::Fixed: return "fixed";
  case Chunking::Words: return "words";
  case Chunking::Given: return "given";
  }
  return "?";
}
const char *toString(Pool p) {
  switch (p) {
  case Pool::Mean: return "mean";
  case Pool::MaskedMean: return "masked_mean";
  case Pool::Max: return "max";
  }
  return "?";
}
const char *toString(Ffn f) { return f == Ffn::SwiGLU ? "swiglu" : "gelu"; }
const char *toString(Share s) {
  switch (s) {
  case Share::None: return "none";
  case Share::All: return "all";
  case Share::Interior: return "interior";
  }
  return "?";
}
const char *toString(HeadKind k) {
  return k == HeadKind::Token ? "token" : "byte_chunk";
}
const char *toString(ObjectiveKind k) {
  switch (k) {
  case ObjectiveKind::NextToken: return "next_token";
  case ObjectiveKind::ChunkBytes: return "chunk_bytes";
  case ObjectiveKind::Reconstruction: return "reconstruction";
  case ObjectiveKind::MaskedNextToken: return "masked_next_token";
  case ObjectiveKind::Distill: return "distill";
  }
  return "?";
}
const char *toString(Schedule s) {
  return s == Schedule::Cosine ? "cosine" : "constant";
}
const char *toString(Precision p) {
  return p == Precision::FP32 ? "fp32" : "bf16";
}

//===----------------------------------------------------------------------===//
// ModelSpec helpers
//===----------------------------------------------------------------------===//

std::string ModelSpec::symbolName() const {
  std::string s = name;
  for (char &c : s)
    if (c == '-')
      c = '_';
  return s;
}

int64_t ModelSpec::windowBytes() const {
  if (embedder.kind == EmbedderKind::Token)
    return core.context;
  if (embedder.chunking == Chunking::Fixed)
    return core.context * embedder.stride;
  return core.context * embedder.chunkBytes;
}

static bool isInterior(const ModelSpec &s, int64_t layer) {
  int64_t k = s.tying.interiorKeep;
  return layer >= k && layer < s.core.layers - k;
}

bool ModelSpec::sharesFfn(int64_t layer) const {
  return tying.ffn == Share::All ||
         (tying.ffn == Share::Interior && isInterior(*this, layer));
}

bool ModelSpec::sharesAttnOut(int64_t layer) const {
  return tying.attnOut == Share::All ||
         (tying.attnOut == Share::Interior && isInterior(*this, layer));
}

int64_t ModelSpec::headVocab() const {
  return head.kind == HeadKind::Token ? embedder.vocabSize : 258;
}

//===----------------------------------------------------------------------===//
// Structural pass
//===----------------------------------------------------------------------===//

namespace {

/// Reads typed values out of YAML maps, reporting at the right position.
class Reader {
public:
  Reader(std::string file, std::vector<SpecDiagnostic> &diags)
      : file(std::move(file)), diags(diags) {}

  void error(const YAML::Mark &mark, const std::string &key,
             const std::string &msg) {
    SpecDiagnostic d;
    d.file = file;
    if (mark.line >= 0) {
      d.line = mark.line + 1;
      d.column = mark.column + 1;
    }
    d.message = key.empty() ? msg : key + ": " + msg;
    diags.push_back(std::move(d));
  }

  /// Where `key` was written; for a key left to its default, where its
  /// nearest enclosing section was written (or the first key of the file).
  YAML::Mark markOf(std::string key) const {
    while (true) {
      auto it = marks.find(key);
      if (it != marks.end())
        return it->second;
      size_t dot = key.rfind('.');
      if (dot == std::string::npos)
        return firstMark;
      key.resize(dot);
    }
  }
  bool has(const std::string &key) const { return marks.count(key) != 0; }
  /// A semantic error about `key`; when the key was not written, says that
  /// its default is what conflicts.
  void error(const std::string &key, const std::string &msg) {
    error(markOf(key), key,
          has(key) ? msg : msg + " (" + key + " is not given; that is its "
                                     "default)");
  }

  /// Checks that `node` (at `path`) is a map whose keys are all in
  /// `allowed`, and records where each key is.
  bool checkMap(const YAML::Node &node, const std::string &path,
                const std::set<std::string> &allowed) {
    if (!node.IsMap()) {
      error(path.empty() ? node.Mark() : valueMark(node, path), path,
            "expected a mapping of keys, got " + describe(node));
      return false;
    }
    for (const auto &kv : node) {
      if (!kv.first.IsScalar()) {
        error(kv.first.Mark(), path, "keys must be plain names, got " +
                                         describe(kv.first));
        continue;
      }
      std::string key = kv.first.Scalar();
      std::string full = path.empty() ? key : path + "." + key;
      if (!allowed.count(key)) {
        std::string known;
        for (const std::string &a : allowed)
          known += (known.empty() ? "" : ", ") + a;
        error(kv.first.Mark(), full,
              "unknown key (known keys here: " + known + ")");
        continue;
      }
      if (marks.count(full)) {
        error(kv.first.Mark(), full, "key appears twice");
        continue;
      }
      marks[full] = kv.first.Mark();
    }
    return true;
  }

  /// The value of `key` in `map`, or a null node when absent. Reports
  /// `required` keys that are missing.
  YAML::Node get(const YAML::Node &map, const std::string &path,
                 const char *key, bool required) {
    YAML::Node v = map[key];
    if (!v && required)
      error(map.Mark(), join(path, key), "required key is missing");
    return v;
  }

  /// Where to report a problem with value `v` of `key`: at the value, or at
  /// the key when the value is empty (yaml-cpp places empty values on the
  /// next line).
  YAML::Mark valueMark(const YAML::Node &v, const std::string &key) const {
    return v.IsNull() ? markOf(key) : v.Mark();
  }

  /// Largest accepted size or index (2^20): far beyond any model this
  /// toolchain targets, small enough that with at most kMaxLayers layers no
  /// parameter count can overflow.
  static constexpr int64_t kMaxInt = int64_t(1) << 20;
  static constexpr int64_t kMaxLayers = 4096;

  bool getInt(const YAML::Node &map, const std::string &path, const char *key,
              int64_t &out, bool required = false, int64_t min = INT64_MIN,
              int64_t max = kMaxInt) {
    YAML::Node v = get(map, path, key, required);
    if (!v)
      return false;
    std::string full = join(path, key);
    int64_t x;
    if (!v.IsScalar() || !YAML::convert<int64_t>::decode(v, x)) {
      bool digits = v.IsScalar() && !v.Scalar().empty() &&
                    v.Scalar().find_first_not_of("-+0123456789") ==
                        std::string::npos;
      error(valueMark(v, full), full,
            digits ? "integer " + v.Scalar() + " is out of range"
                   : "expected an integer, got " + describe(v));
      return false;
    }
    if (x < min || x > max) {
      error(v.Mark(), full,
            (x < min ? "must be >= " + std::to_string(min)
                     : "must be <= " + std::to_string(max)) +
                ", got " + std::to_string(x));
      return false;
    }
    out = x;
    return true;
  }

  bool getDouble(const YAML::Node &map, const std::string &path,
                 const char *key, double &out, bool required = false) {
    YAML::Node v = get(map, path, key, required);
    if (!v)
      return false;
    double x;
    if (!v.IsScalar() || !YAML::convert<double>::decode(v, x) ||
        !std::isfinite(x)) {
      error(valueMark(v, join(path, key)), join(path, key),
            "expected a finite number, got " + describe(v));
      return false;
    }
    out = x;
    return true;
  }

  bool getBool(const YAML::Node &map, const std::string &path, const char *key,
               bool &out) {
    YAML::Node v = get(map, path, key, false);
    if (!v)
      return false;
    bool x;
    if (!v.IsScalar() || !YAML::convert<bool>::decode(v, x)) {
      error(valueMark(v, join(path, key)), join(path, key),
            "expected true or false, got " + describe(v));
      return false;
    }
    out = x;
    return true;
  }

  bool getString(const YAML::Node &map, const std::string &path,
                 const char *key, std::string &out, bool required = false) {
    YAML::Node v = get(map, path, key, required);
    if (!v)
      return false;
    if (!v.IsScalar()) {
      error(valueMark(v, join(path, key)), join(path, key),
            "expected a string, got " + describe(v));
      return false;
    }
    if (!isUtf8(v.Scalar())) {
      error(v.Mark(), join(path, key), "is not valid UTF-8");
      return false;
    }
    out = v.Scalar();
    return true;
  }

  template <typename E>
  bool getEnum(const YAML::Node &map, const std::string &path, const char *key,
               E &out, const std::vector<E> &values, bool required = false) {
    std::string s;
    if (!getString(map, path, key, s, required))
      return false;
    std::string names;
    for (E e : values) {
      if (s == toString(e)) {
        out = e;
        return true;
      }
      names += (names.empty() ? "" : " | ") + std::string(toString(e));
    }
    error(map[key].Mark(), join(path, key),
          "unknown value '" + s + "' (expected " + names + ")");
    return false;
  }

  static bool isUtf8(const std::string &s) {
    size_t i = 0;
    while (i < s.size()) {
      unsigned char c = static_cast<unsigned char>(s[i]);
      int extra = c < 0x80 ? 0 : (c >> 5) == 6 ? 1 : (c >> 4) == 14 ? 2
                : (c >> 3) == 30 ? 3 : -1;
      if (extra < 0 || (extra > 0 && i + extra >= s.size()))
        return false;
      for (int k = 1; k <= extra; ++k)
        if ((static_cast<unsigned char>(s[i + k]) >> 6) != 2)
          return false;
      i += extra + 1;
    }
    return true;
  }

  static std::string join(const std::string &path, const char *key) {
    return path.empty() ? std::string(key) : path + "." + key;
  }

  static std::string describe(const YAML::Node &v) {
    if (v.IsMap())
      return "a mapping";
    if (v.IsSequence())
      return "a list";
    if (v.IsNull())
      return "nothing";
    return "'" + v.Scalar() + "'";
  }

  std::string file;
  std::vector<SpecDiagnostic> &diags;
  std::map<std::string, YAML::Mark> marks;
  YAML::Mark firstMark; // position of the file's first key
};

void readEmbedder(Reader &r, const YAML::Node &n, EmbedderSpec &e) {
  if (!r.checkMap(n, "embedder",
                  {"kind", "vocab_size", "chunking", "stride", "chunk_bytes",
                   "byte_width", "encoder_layers", "encoder_heads", "pool"}))
    return;
  r.getEnum(n, "embedder", "kind", e.kind,
            {EmbedderKind::Token, EmbedderKind::BytePool}, true);
  r.getInt(n, "embedder", "vocab_size", e.vocabSize, false, 2);
  r.getEnum(n, "embedder", "chunking", e.chunking,
            {Chunking::Fixed, Chunking::Words, Chunking::Given});
  r.getInt(n, "embedder", "stride", e.stride, false, 1);
  r.getInt(n, "embedder", "chunk_bytes", e.chunkBytes, false, 1);
  r.getInt(n, "embedder", "byte_width", e.byteWidth, false, 1);
  r.getInt(n, "embedder", "encoder_layers", e.encoderLayers, false, 0,
           Reader::kMaxLayers);
  r.getInt(n, "embedder", "encoder_heads", e.encoderHeads, false, 1);
  r.getEnum(n, "embedder", "pool", e.pool,
            {Pool::Mean, Pool::MaskedMean, Pool::Max});
}

void readCore(Reader &r, const YAML::Node &n, CoreSpec &c) {
  if (!r.checkMap(n, "core",
                  {"layers", "width", "heads", "kv_heads", "ffn", "ffn_width",
                   "context", "rope_theta", "norm_eps"}))
    return;
  r.getInt(n, "core", "layers", c.layers, true, 1, Reader::kMaxLayers);
  r.getInt(n, "core", "width", c.width, true, 1);
  r.getInt(n, "core", "heads", c.heads, true, 1);
  c.kvHeads = c.heads;
  r.getInt(n, "core", "kv_heads", c.kvHeads, false, 1);
  r.getEnum(n, "core", "ffn", c.ffn, {Ffn::SwiGLU, Ffn::GELU}, true);
  r.getInt(n, "core", "ffn_width", c.ffnWidth, true, 1);
  r.getInt(n, "core", "context", c.context, true, 1);
  r.getDouble(n, "core", "rope_theta", c.ropeTheta);
  r.getDouble(n, "core", "norm_eps", c.normEps);
}

void readTying(Reader &r, const YAML::Node &n, TyingSpec &t) {
  if (!r.checkMap(n, "tying",
                  {"embed_head", "ffn", "attn_out", "interior_keep",
                   "lora_rank"}))
    return;
  r.getBool(n, "tying", "embed_head", t.embedHead);
  r.getEnum(n, "tying", "ffn", t.ffn,
            {Share::None, Share::All, Share::Interior});
  r.getEnum(n, "tying", "attn_out", t.attnOut,
            {Share::None, Share::All, Share::Interior});
  r.getInt(n, "tying", "interior_keep", t.interiorKeep, false, 0);
  r.getInt(n, "tying", "lora_rank", t.loraRank, false, 0);
}

void readHead(Reader &r, const YAML::Node &n, HeadSpec &h) {
  if (!r.checkMap(n, "head", {"kind", "decoder_layers", "decoder_heads"}))
    return;
  r.getEnum(n, "head", "kind", h.kind, {HeadKind::Token, HeadKind::ByteChunk},
            true);
  r.getInt(n, "head", "decoder_layers", h.decoderLayers, false, 0,
           Reader::kMaxLayers);
  r.getInt(n, "head", "decoder_heads", h.decoderHeads, false, 1);
}

std::optional<ModelSpec> readSpecDocument(const YAML::Node &root, Reader &r);

/// A stored `teacher_spec` (what specToJson writes for a distill
/// objective): read by the same validating reader, its first problem
/// reported at the key.
void readTeacherSpec(Reader &r, const YAML::Node &o, const std::string &path,
                     ObjectiveSpec &obj) {
  YAML::Node n = o["teacher_spec"];
  if (!n)
    return;
  std::string key = path + ".teacher_spec";
  std::vector<SpecDiagnostic> inner;
  Reader sub(r.file, inner);
  std::optional<ModelSpec> teacher = readSpecDocument(n, sub);
  if (!teacher) {
    r.error(r.valueMark(n, key), key,
            "the stored teacher spec is invalid: " +
                (inner.empty() ? std::string("?") : inner[0].message));
    return;
  }
  teacher->train = TrainSpec(); // how it trained is not the student's
  obj.teacherSpec = std::make_shared<const ModelSpec>(std::move(*teacher));
}

void readObjectives(Reader &r, const YAML::Node &n,
                    std::vector<ObjectiveSpec> &out) {
  if (!n.IsSequence() || n.size() == 0) {
    r.error(r.valueMark(n, "objectives"), "objectives",
            "expected a non-empty list of objectives");
    return;
  }
  for (size_t i = 0; i < n.size(); ++i) {
    std::string path = "objectives." + std::to_string(i);
    const YAML::Node o = n[i];
    ObjectiveSpec obj;
    if (!r.checkMap(o, path,
                    {"kind", "weight", "mask_pad", "mask_prob", "mask_id",
                     "teacher", "teacher_spec", "temperature", "alpha"}))
      continue;
    if (!r.getEnum(o, path, "kind", obj.kind,
                   {ObjectiveKind::NextToken, ObjectiveKind::ChunkBytes,
                    ObjectiveKind::Reconstruction,
                    ObjectiveKind::MaskedNextToken, ObjectiveKind::Distill},
                   true))
      continue;
    r.getDouble(o, path, "weight", obj.weight);
    r.getBool(o, path, "mask_pad", obj.maskPad);
    r.getDouble(o, path, "mask_prob", obj.maskProb);
    r.getInt(o, path, "mask_id", obj.maskId, false, 0);
    r.getString(o, path, "teacher", obj.teacher);
    readTeacherSpec(r, o, path, obj);
    r.getDouble(o, path, "temperature", obj.temperature);
    r.getDouble(o, path, "alpha", obj.alpha);
    out.push_back(obj);
  }
}

void readTrain(Reader &r, const YAML::Node &n, TrainSpec &t) {
  if (!r.checkMap(n, "train",
                  {"batch", "steps", "lr", "min_lr", "warmup", "schedule",
                   "betas", "eps", "weight_decay", "grad_clip", "accumulate",
                   "seed", "precision"}))
    return;
  r.getInt(n, "train", "batch", t.batch, false, 1);
  // The step counter is an i32 (the last step must fit).
  r.getInt(n, "train", "steps", t.steps, false, 1, (int64_t(1) << 31) - 2);
  r.getDouble(n, "train", "lr", t.lr);
  r.getDouble(n, "train", "min_lr", t.minLr);
  r.getInt(n, "train", "warmup", t.warmup, false, 0, (int64_t(1) << 31) - 2);
  r.getEnum(n, "train", "schedule", t.schedule,
            {Schedule::Cosine, Schedule::Constant});
  if (YAML::Node b = n["betas"]) {
    double b1, b2;
    if (!b.IsSequence() || b.size() != 2 ||
        !YAML::convert<double>::decode(b[0], b1) ||
        !YAML::convert<double>::decode(b[1], b2) || !std::isfinite(b1) ||
        !std::isfinite(b2))
      r.error(r.valueMark(b, "train.betas"), "train.betas",
              "expected a list of two finite numbers");
    else {
      t.beta1 = b1;
      t.beta2 = b2;
    }
  }
  r.getDouble(n, "train", "eps", t.eps);
  r.getDouble(n, "train", "weight_decay", t.weightDecay);
  r.getDouble(n, "train", "grad_clip", t.gradClip);
  r.getInt(n, "train", "accumulate", t.accumulate, false, 1);
  r.getInt(n, "train", "seed", t.seed, false, 0, int64_t(1) << 62);
  r.getEnum(n, "train", "precision", t.precision,
            {Precision::FP32, Precision::BF16});
}

//===----------------------------------------------------------------------===//
// Semantic pass
//===----------------------------------------------------------------------===//

/// Why `teacher` cannot teach `student`, or "": its logits must be a token
/// model's over the student's vocabulary at the student's context (the
/// teacher runs on the student's windows, so its own context must be at
/// least as long), and it must have no teacher of its own.
std::string teacherProblem(const ModelSpec &student, const ModelSpec &teacher) {
  auto str = [](auto x) { return std::to_string(x); };
  if (teacher.embedder.kind != EmbedderKind::Token ||
      teacher.head.kind != HeadKind::Token)
    return "the teacher '" + teacher.name +
           "' is a byte-pool model; a teacher must be a token model";
  if (teacher.embedder.vocabSize != student.embedder.vocabSize)
    return "the teacher '" + teacher.name + "' predicts " +
           str(teacher.embedder.vocabSize) + " tokens, the student " +
           str(student.embedder.vocabSize) +
           "; their vocabularies must be the same";
  if (teacher.core.context < student.core.context)
    return "the teacher '" + teacher.name + "' was built for a context of " +
           str(teacher.core.context) + ", shorter than the student's " +
           str(student.core.context);
  for (const ObjectiveSpec &o : teacher.objectives)
    if (o.kind == ObjectiveKind::Distill)
      return "the teacher '" + teacher.name +
             "' distils from a teacher of its own; train the teacher "
             "without one";
  return "";
}

void checkSemantics(Reader &r, ModelSpec &s) {
  auto str = [](auto x) { return std::to_string(x); };

  // name
  if (s.name.empty())
    r.error("name", "must not be empty");
  for (char c : s.name)
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
          c == '-')) {
      r.error("name", "'" + s.name +
                          "' may only contain a-z, 0-9, '_' and '-' (it "
                          "becomes a C symbol prefix)");
      break;
    }

  // embedder
  EmbedderSpec &e = s.embedder;
  static const char *bytePoolKeys[] = {"chunking",      "stride",
                                       "chunk_bytes",   "byte_width",
                                       "encoder_layers", "encoder_heads",
                                       "pool"};
  if (e.kind == EmbedderKind::Token) {
    for (const char *k : bytePoolKeys)
      if (r.has(std::string("embedder.") + k))
        r.error(std::string("embedder.") + k,
                "only applies to the byte_pool embedder");
  } else {
    e.vocabSize = 258;
    if (r.has("embedder.vocab_size"))
      r.error("embedder.vocab_size",
              "only applies to the token embedder (byte_pool uses 258 = 256 "
              "bytes + pad + end)");
    if (e.chunking == Chunking::Fixed && !r.has("embedder.stride"))
      r.error(r.markOf("embedder.chunking"), "embedder.stride",
              "required by 'fixed' chunking");
    if (e.chunking != Chunking::Fixed && r.has("embedder.stride"))
      r.error("embedder.stride", "only applies to 'fixed' chunking");
    if (e.chunking == Chunking::Fixed && e.stride > e.chunkBytes)
      r.error("embedder.stride", "stride " + str(e.stride) +
                                     " must not exceed chunk_bytes " +
                                     str(e.chunkBytes));
    if (e.byteWidth % e.encoderHeads != 0)
      r.error("embedder.encoder_heads",
              "encoder_heads " + str(e.encoderHeads) +
                  " must divide byte_width " + str(e.byteWidth));
  }

  // core
  CoreSpec &c = s.core;
  if (c.heads > 0 && c.width % c.heads != 0)
    r.error("core.heads", "heads " + str(c.heads) + " must divide width " +
                              str(c.width));
  else if (c.heads > 0 && c.headDim() % 2 != 0)
    r.error("core.heads", "head dim width/heads = " + str(c.headDim()) +
                              " must be even for rotary positions");
  if (c.kvHeads > 0 && c.heads % c.kvHeads != 0)
    r.error(r.has("core.kv_heads") ? "core.kv_heads" : "core.heads",
            "kv_heads " + str(c.kvHeads) + " must divide heads " +
                str(c.heads));
  if (!(c.ropeTheta > 1.0))
    r.error("core.rope_theta", "must be > 1");
  if (!(c.normEps > 0.0))
    r.error("core.norm_eps", "must be > 0");

  // tying
  TyingSpec &t = s.tying;
  if (t.embedHead && (e.kind != EmbedderKind::Token ||
                      s.head.kind != HeadKind::Token))
    r.error("tying.embed_head",
            "tying the head to the embedding needs a token embedder and a "
            "token head");
  bool interior = t.ffn == Share::Interior || t.attnOut == Share::Interior;
  if (interior && t.interiorKeep > (c.layers - 1) / 2)
    r.error(r.has("tying.interior_keep") ? "tying.interior_keep"
                                         : (t.ffn == Share::Interior
                                                ? "tying.ffn"
                                                : "tying.attn_out"),
            "interior_keep " + str(t.interiorKeep) + " leaves no interior "
            "layer in " + str(c.layers) + " layers (need layers - 2k >= 1)");
  if (t.loraRank > 0 && t.ffn == Share::None && t.attnOut == Share::None)
    r.error("tying.lora_rank",
            "a low-rank delta corrects a shared weight, but neither ffn nor "
            "attn_out is shared");

  // head
  HeadSpec &h = s.head;
  if (h.kind == HeadKind::ByteChunk && e.kind != EmbedderKind::BytePool)
    r.error("head.kind", "the byte_chunk head needs the byte_pool embedder");
  if (h.kind == HeadKind::Token && e.kind == EmbedderKind::BytePool)
    r.error("head.kind", "the byte_pool embedder needs the byte_chunk head "
                         "(the core runs over chunks)");
  if (h.kind == HeadKind::Token) {
    for (const char *k : {"decoder_layers", "decoder_heads"})
      if (r.has(std::string("head.") + k))
        r.error(std::string("head.") + k,
                "only applies to the byte_chunk head");
  } else if (e.byteWidth % h.decoderHeads != 0) {
    r.error("head.decoder_heads", "decoder_heads " + str(h.decoderHeads) +
                                      " must divide byte_width " +
                                      str(e.byteWidth));
  }

  // objectives
  bool anyWeight = false;
  std::set<ObjectiveKind> seen;
  for (size_t i = 0; i < s.objectives.size(); ++i) {
    ObjectiveSpec &o = s.objectives[i];
    std::string p = "objectives." + std::to_string(i);
    if (!seen.insert(o.kind).second)
      r.error(p + ".kind", std::string("objective '") + toString(o.kind) +
                               "' appears twice");
    bool chunkObjective = o.kind == ObjectiveKind::ChunkBytes ||
                          o.kind == ObjectiveKind::Reconstruction;
    if (chunkObjective != (h.kind == HeadKind::ByteChunk))
      r.error(p + ".kind",
              std::string("objective '") + toString(o.kind) + "' needs " +
                  (chunkObjective ? "the byte_chunk head" : "a token head"));
    if (!(o.weight >= 0.0))
      r.error(p + ".weight", "must be >= 0");
    anyWeight |= o.weight > 0.0;
    auto onlyFor = [&](const char *key, bool applies, const char *kinds) {
      if (!applies && r.has(p + "." + key))
        r.error(p + "." + key, std::string("only applies to ") + kinds);
    };
    onlyFor("mask_pad", chunkObjective, "chunk_bytes and reconstruction");
    bool masked = o.kind == ObjectiveKind::MaskedNextToken;
    bool distill = o.kind == ObjectiveKind::Distill;
    onlyFor("mask_prob", masked, "masked_next_token");
    onlyFor("mask_id", masked, "masked_next_token");
    onlyFor("teacher", distill, "distill");
    onlyFor("teacher_spec", distill, "distill");
    onlyFor("temperature", distill, "distill");
    onlyFor("alpha", distill, "distill");
    if (masked && !(o.maskProb > 0.0 && o.maskProb < 1.0))
      r.error(p + ".mask_prob", "must be in (0, 1)");
    if (masked && o.maskId >= e.vocabSize)
      r.error(p + ".mask_id", "must be below vocab_size " +
                                  str(e.vocabSize));
    if (distill && o.teacher.empty())
      r.error(r.has(p + ".teacher") ? p + ".teacher" : p + ".kind",
              "distill needs a teacher checkpoint (key 'teacher')");
    if (distill && o.teacherSpec)
      if (std::string why = teacherProblem(s, *o.teacherSpec); !why.empty())
        r.error(p + ".teacher_spec", why);
    if (distill && !(o.temperature > 0.0))
      r.error(p + ".temperature", "must be > 0");
    if (distill && !(o.alpha >= 0.0 && o.alpha <= 1.0))
      r.error(p + ".alpha", "must be in [0, 1]");
  }
  if (!s.objectives.empty() && !anyWeight)
    r.error("objectives", "at least one objective needs a weight > 0");
  if (h.kind == HeadKind::ByteChunk && c.context < 2 &&
      seen.count(ObjectiveKind::ChunkBytes))
    r.error("core.context", "next-chunk prediction needs a context of at "
                            "least 2 chunks");

  // train
  TrainSpec &tr = s.train;
  if (!(tr.lr > 0.0))
    r.error("train.lr", "must be > 0");
  if (!(tr.minLr >= 0.0 && tr.minLr <= tr.lr))
    r.error("train.min_lr", "must be in [0, lr]");
  if (tr.warmup > tr.steps)
    r.error("train.warmup", "warmup " + str(tr.warmup) +
                                " must not exceed steps " + str(tr.steps));
  if (!(tr.beta1 >= 0.0 && tr.beta1 < 1.0 && tr.beta2 >= 0.0 &&
        tr.beta2 < 1.0))
    r.error("train.betas", "both betas must be in [0, 1)");
  if (!(tr.eps > 0.0))
    r.error("train.eps", "must be > 0");
  if (!(tr.weightDecay >= 0.0))
    r.error("train.weight_decay", "must be >= 0");
  if (!(tr.gradClip >= 0.0))
    r.error("train.grad_clip", "must be >= 0 (0 disables clipping)");

  // Sizes a machine can hold: parameters, and the largest activation of a
  // training batch (logits, FFN hidden states, byte logits).
  if (r.diags.empty()) {
    const int64_t kMaxElements = int64_t(1) << 32;
    int64_t params = buildParamTable(s).uniqueCount();
    if (params > kMaxElements)
      r.error("core", "the model has " + str(params) +
                          " parameters, more than the limit 2^32");
    // Each factor is at most 2^20, but four of them overflow int64_t:
    // products saturate instead.
    auto mul = [](std::initializer_list<int64_t> factors) {
      int64_t p = 1;
      for (int64_t f : factors)
        if (__builtin_mul_overflow(p, f, &p))
          return std::numeric_limits<int64_t>::max();
      return p;
    };
    int64_t B = tr.batch, T = c.context;
    int64_t widest = std::max({c.ffnWidth, c.width, s.headVocab(),
                               mul({c.heads, c.headDim()})});
    int64_t act = mul({B, T, widest});
    if (e.kind == EmbedderKind::BytePool)
      act = std::max(act, mul({B, T, e.chunkBytes,
                               std::max<int64_t>(258, mul({4, e.byteWidth}))}));
    if (act > kMaxElements)
      r.error("train.batch",
              "a batch's largest activation has " +
                  (act == std::numeric_limits<int64_t>::max()
                       ? std::string("more than 2^63")
                       : str(act)) +
                  " elements, more than the limit 2^32");
  }
}

/// "`what` has N bytes, more than the kMaxSpecBytes-byte limit of a spec":
/// the one message for a spec file, spec text or stored spec too large.
std::string overSizeLimit(const std::string &what, uint64_t size) {
  return what + " has " + std::to_string(size) + " bytes, more than the " +
         std::to_string(kMaxSpecBytes) + "-byte limit of a spec";
}

/// Counts the documents of a YAML stream without building them, stopping at
/// the second. yaml-cpp's LoadAll never ends on some invalid streams (on
/// `[],t:2` it yields an empty document at the same place forever), so a
/// document that does not start with a `---` marker after the first is
/// reported as text the parser could not read.
class DocumentCounter : public YAML::EventHandler {
public:
  std::vector<YAML::Mark> starts;
  void OnDocumentStart(const YAML::Mark &mark) override {
    starts.push_back(mark);
  }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark &, YAML::anchor_t) override {}
  void OnAlias(const YAML::Mark &, YAML::anchor_t) override {}
  void OnScalar(const YAML::Mark &, const std::string &, YAML::anchor_t,
                const std::string &) override {}
  void OnSequenceStart(const YAML::Mark &, const std::string &,
                       YAML::anchor_t, YAML::EmitterStyle::value) override {}
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark &, const std::string &, YAML::anchor_t,
                  YAML::EmitterStyle::value) override {}
  void OnMapEnd() override {}
};

/// The one document of `text`, or null with a diagnostic in `r`.
/// Throws YAML::Exception on invalid YAML.
std::optional<YAML::Node> loadOneDocument(const std::string &text,
                                          Reader &r) {
  std::istringstream in(text);
  YAML::Parser parser(in);
  DocumentCounter counter;
  while (counter.starts.size() < 2 && parser.HandleNextDocument(counter)) {
  }
  if (counter.starts.size() > 1) {
    const YAML::Mark &second = counter.starts[1];
    size_t at = second.pos >= 0 ? size_t(second.pos) : text.size();
    if (text.compare(at, 3, "---") == 0)
      r.error(second, "", "a spec is one YAML document, but the file holds "
                          "more than one");
    else
      r.error(second, "", "invalid YAML: unexpected text after the end of "
                          "the document");
    return std::nullopt;
  }
  if (counter.starts.empty())
    return YAML::Node();
  return YAML::Load(text);
}

/// The spec in `root` (one parsed document), read by the structural and
/// semantic passes; nullopt when `r` reported errors.
std::optional<ModelSpec> readSpecDocument(const YAML::Node &root, Reader &r) {
  if (root && root.IsMap() && root.begin() != root.end())
    r.firstMark = root.begin()->first.Mark();
  if (!root || root.IsNull()) {
    r.error(YAML::Mark(), "", "the spec is empty");
    return std::nullopt;
  }

  ModelSpec spec;
  try {
    if (!r.checkMap(root, "",
                    {"name", "embedder", "core", "tying", "head",
                     "objectives", "train"}))
      return std::nullopt;
    r.getString(root, "", "name", spec.name, true);
    if (YAML::Node n = r.get(root, "", "embedder", true))
      readEmbedder(r, n, spec.embedder);
    if (YAML::Node n = r.get(root, "", "core", true))
      readCore(r, n, spec.core);
    if (YAML::Node n = root["tying"])
      readTying(r, n, spec.tying);
    // The head follows the embedder unless given.
    spec.head.kind = spec.embedder.kind == EmbedderKind::BytePool
                         ? HeadKind::ByteChunk
                         : HeadKind::Token;
    if (YAML::Node n = root["head"])
      readHead(r, n, spec.head);
    if (YAML::Node n = root["objectives"])
      readObjectives(r, n, spec.objectives);
    else {
      ObjectiveSpec o;
      o.kind = spec.head.kind == HeadKind::Token ? ObjectiveKind::NextToken
                                                 : ObjectiveKind::ChunkBytes;
      spec.objectives.push_back(o);
    }
    if (YAML::Node n = root["train"])
      readTrain(r, n, spec.train);
  } catch (const YAML::Exception &ex) {
    r.error(ex.mark, "", "invalid spec: " + ex.msg);
  }
  if (!r.diags.empty())
    return std::nullopt;
  checkSemantics(r, spec);
  if (!r.diags.empty())
    return std::nullopt;
  return spec;
}

} // namespace

SpecResult parseSpec(const std::string &text, const std::string &file) {
  SpecResult result;
  Reader r(file, result.diagnostics);
  if (text.size() > kMaxSpecBytes) {
    r.error(YAML::Mark::null_mark(), "",
            overSizeLimit("the spec", text.size()));
    return result;
  }
  YAML::Node root;
  try {
    std::optional<YAML::Node> doc = loadOneDocument(text, r);
    if (!doc)
      return result;
    root = *doc;
  } catch (const YAML::DeepRecursion &ex) {
    r.error(ex.mark, "", "invalid YAML: nested too deeply");
    return result;
  } catch (const YAML::Exception &ex) {
    r.error(ex.mark, "", "invalid YAML: " + ex.msg);
    return result;
  }
  result.spec = readSpecDocument(root, r);
  return result;
}

SpecResult readSpecFile(const std::string &path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    SpecResult result;
    result.diagnostics.push_back(
        {path, 0, 0, "is a directory, not a spec file"});
    return result;
  }
  // Only a regular file of bounded size (a device such as /dev/zero never
  // ends).
  if (std::filesystem::exists(path, ec) &&
      !std::filesystem::is_regular_file(path, ec)) {
    SpecResult result;
    result.diagnostics.push_back({path, 0, 0, "is not a regular file"});
    return result;
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    SpecResult result;
    result.diagnostics.push_back({path, 0, 0, "cannot open the spec file"});
    return result;
  }
  std::uintmax_t size = std::filesystem::file_size(path, ec);
  if (!ec && size > kMaxSpecBytes) {
    SpecResult result;
    result.diagnostics.push_back(
        {path, 0, 0, overSizeLimit("the spec file", size)});
    return result;
  }
  std::stringstream ss;
  ss << in.rdbuf();
  SpecResult result = parseSpec(ss.str(), path);
  resolveTeachers(result, path);
  return result;
}

void resolveTeachers(SpecResult &result, const std::string &origin) {
  if (!result.spec)
    return;
  ModelSpec &s = *result.spec;
  for (size_t i = 0; i < s.objectives.size(); ++i) {
    ObjectiveSpec &o = s.objectives[i];
    if (o.kind != ObjectiveKind::Distill || o.teacherSpec)
      continue;
    std::string key = "objectives." + std::to_string(i) + ".teacher";
    auto fail = [&](const std::string &msg) {
      result.diagnostics.push_back({origin, 0, 0, key + ": " + msg});
    };
    std::string error;
    std::unique_ptr<SafeTensorsFile> file =
        SafeTensorsFile::open(o.teacher, error);
    if (!file) {
      fail("cannot read the teacher checkpoint: " + error);
      continue;
    }
    if (file->metadata().count("stlm_quantization")) {
      fail(o.teacher + " is quantized (stlm-run quantize); a teacher is a "
                       "float checkpoint");
      continue;
    }
    auto stored = file->metadata().find("stlm_spec");
    if (stored == file->metadata().end()) {
      fail(o.teacher + " holds no spec (__metadata__.stlm_spec); a teacher "
                       "is a checkpoint that stlm-run init or train wrote");
      continue;
    }
    SpecResult teacher =
        parseSpecJson(stored->second, o.teacher + ": __metadata__.stlm_spec");
    if (!teacher.spec) {
      fail("the teacher's stored spec is invalid: " +
           (teacher.diagnostics.empty() ? std::string("?")
                                        : teacher.diagnostics[0].str()));
      continue;
    }
    if (std::string why = teacherProblem(s, *teacher.spec); !why.empty()) {
      fail(why + " (" + o.teacher + ")");
      continue;
    }
    teacher.spec->train = TrainSpec(); // how it trained is not the student's
    o.teacherSpec = std::make_shared<const ModelSpec>(std::move(*teacher.spec));
  }
  if (!result.diagnostics.empty())
    result.spec.reset();
}

namespace {

/// The deepest nesting of arrays and objects in `json` (outside strings),
/// or kMaxJsonDepth + 1 as soon as it goes past that: measured before
/// parsing, so that no deeply nested input reaches a recursive walk.
constexpr int kMaxJsonDepth = 16;
int jsonDepth(const std::string &json) {
  int depth = 0, deepest = 0;
  bool inString = false, escaped = false;
  for (char c : json) {
    if (inString) {
      if (escaped)
        escaped = false;
      else if (c == '\\')
        escaped = true;
      else if (c == '"')
        inString = false;
    } else if (c == '"') {
      inString = true;
    } else if (c == '[' || c == '{') {
      deepest = std::max(deepest, ++depth);
      if (deepest > kMaxJsonDepth)
        return deepest;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return deepest;
}

/// `j` as a YAML node for the spec reader: objects become maps, arrays
/// sequences, and every other value the scalar JSON writes for it.
YAML::Node toYaml(const nlohmann::json &j) {
  switch (j.type()) {
  case nlohmann::json::value_t::object: {
    YAML::Node n(YAML::NodeType::Map);
    for (const auto &[key, value] : j.items())
      n[key] = toYaml(value);
    return n;
  }
  case nlohmann::json::value_t::array: {
    YAML::Node n(YAML::NodeType::Sequence);
    for (const nlohmann::json &value : j)
      n.push_back(toYaml(value));
    return n;
  }
  case nlohmann::json::value_t::null:
    return YAML::Node(YAML::NodeType::Null);
  case nlohmann::json::value_t::string:
    return YAML::Node(j.get<std::string>());
  default:
    return YAML::Node(j.dump());
  }
}

} // namespace

SpecResult parseSpecJson(const std::string &json, const std::string &origin) {
  // The stored form is JSON and is read as JSON (yaml-cpp's stream reader
  // does not end on some invalid input); the tree then goes through the
  // same validating reader as a YAML spec.
  SpecResult result;
  Reader r(origin, result.diagnostics);
  if (json.size() > kMaxSpecBytes) {
    r.error(YAML::Mark::null_mark(), "",
            overSizeLimit("the stored spec", json.size()));
    return result;
  }
  if (jsonDepth(json) > kMaxJsonDepth) {
    r.error(YAML::Mark::null_mark(), "",
            "invalid JSON: nested deeper than " +
                std::to_string(kMaxJsonDepth) + " levels");
    return result;
  }
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(json);
  } catch (const nlohmann::json::parse_error &ex) {
    r.error(YAML::Mark::null_mark(), "",
            "invalid JSON (at byte " + std::to_string(ex.byte) + ")");
    return result;
  } catch (const nlohmann::json::exception &ex) {
    // Not a syntax error: a number out of double's range, for one.
    std::string what = ex.what(); // "[json.exception.<id>] <message>"
    size_t bracket = what.find("] ");
    r.error(YAML::Mark::null_mark(), "",
            "invalid JSON: " + (bracket == std::string::npos
                                    ? what
                                    : what.substr(bracket + 2)));
    return result;
  }
  try {
    result.spec = readSpecDocument(toYaml(j), r);
  } catch (const YAML::Exception &ex) {
    r.error(ex.mark, "", "invalid spec: " + ex.msg);
  }
  return result;
}

std::string specToJson(const ModelSpec &s) {
  using nlohmann::ordered_json;
  ordered_json j;
  j["name"] = s.name;
  ordered_json e;
  e["kind"] = toString(s.embedder.kind);
  if (s.embedder.kind == EmbedderKind::Token) {
    e["vocab_size"] = s.embedder.vocabSize;
  } else {
    e["chunking"] = toString(s.embedder.chunking);
    if (s.embedder.chunking == Chunking::Fixed)
      e["stride"] = s.embedder.stride;
    e["chunk_bytes"] = s.embedder.chunkBytes;
    e["byte_width"] = s.embedder.byteWidth;
    e["encoder_layers"] = s.embedder.encoderLayers;
    e["encoder_heads"] = s.embedder.encoderHeads;
    e["pool"] = toString(s.embedder.pool);
  }
  j["embedder"] = e;
  const CoreSpec &c = s.core;
  j["core"] = {{"layers", c.layers},       {"width", c.width},
               {"heads", c.heads},         {"kv_heads", c.kvHeads},
               {"ffn", toString(c.ffn)},   {"ffn_width", c.ffnWidth},
               {"context", c.context},     {"rope_theta", c.ropeTheta},
               {"norm_eps", c.normEps}};
  const TyingSpec &t = s.tying;
  j["tying"] = {{"embed_head", t.embedHead},
                {"ffn", toString(t.ffn)},
                {"attn_out", toString(t.attnOut)},
                {"interior_keep", t.interiorKeep},
                {"lora_rank", t.loraRank}};
  ordered_json h;
  h["kind"] = toString(s.head.kind);
  if (s.head.kind == HeadKind::ByteChunk) {
    h["decoder_layers"] = s.head.decoderLayers;
    h["decoder_heads"] = s.head.decoderHeads;
  }
  j["head"] = h;
  ordered_json objs = ordered_json::array();
  for (const ObjectiveSpec &o : s.objectives) {
    ordered_json oj;
    oj["kind"] = toString(o.kind);
    oj["weight"] = o.weight;
    switch (o.kind) {
    case ObjectiveKind::ChunkBytes:
    case ObjectiveKind::Reconstruction:
      oj["mask_pad"] = o.maskPad;
      break;
    case ObjectiveKind::MaskedNextToken:
      oj["mask_prob"] = o.maskProb;
      oj["mask_id"] = o.maskId;
      break;
    case ObjectiveKind::Distill:
      oj["teacher"] = o.teacher;
      if (o.teacherSpec)
        oj["teacher_spec"] = ordered_json::parse(specToJson(*o.teacherSpec));
      oj["temperature"] = o.temperature;
      oj["alpha"] = o.alpha;
      break;
    case ObjectiveKind::NextToken:
      break;
    }
    objs.push_back(oj);
  }
  j["objectives"] = objs;
  const TrainSpec &tr = s.train;
  j["train"] = {{"batch", tr.batch},
                {"steps", tr.steps},
                {"lr", tr.lr},
                {"min_lr", tr.minLr},
                {"warmup", tr.warmup},
                {"schedule", toString(tr.schedule)},
                {"betas", {tr.beta1, tr.beta2}},
                {"eps", tr.eps},
                {"weight_decay", tr.weightDecay},
                {"grad_clip", tr.gradClip},
                {"accumulate", tr.accumulate},
                {"seed", tr.seed},
                {"precision", toString(tr.precision)}};
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

} // namespace stlm
