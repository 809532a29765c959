//===- FrontendTest.cpp - specs, parameter tables, initial weights --------===//
//
// Parameter totals of every example spec are checked against closed-form
// formulas written out here independently of Params.cpp.
//
//===----------------------------------------------------------------------===//

#include "frontend/Params.h"
#include "support/SafeTensors.h"
#include "frontend/Spec.h"
#include "frontend/Weights.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <set>
#include <sys/stat.h>
#include <unistd.h>

using namespace stlm;

namespace {

std::string example(const std::string &name) {
  return std::string(STLM_SOURCE_DIR) + "/examples/models/" + name + ".yaml";
}

ModelSpec load(const std::string &name) {
  SpecResult r = readSpecFile(example(name));
  std::string errors;
  for (const SpecDiagnostic &d : r.diagnostics)
    errors += d.str() + "\n";
  EXPECT_TRUE(r.spec.has_value()) << errors;
  return r.spec ? *r.spec : ModelSpec();
}

ModelSpec parseOk(const std::string &yaml) {
  SpecResult r = parseSpec(yaml, "inline.yaml");
  std::string errors;
  for (const SpecDiagnostic &d : r.diagnostics)
    errors += d.str() + "\n";
  EXPECT_TRUE(r.spec.has_value()) << errors;
  return r.spec ? *r.spec : ModelSpec();
}

//===----------------------------------------------------------------------===//
// Specs
//===----------------------------------------------------------------------===//

TEST(Spec, CharTinyReadsAsWritten) {
  ModelSpec s = load("char-tiny");
  EXPECT_EQ(s.name, "char-tiny");
  EXPECT_EQ(s.symbolName(), "char_tiny");
  EXPECT_EQ(s.embedder.kind, EmbedderKind::Token);
  EXPECT_EQ(s.embedder.vocabSize, 256);
  EXPECT_EQ(s.core.layers, 4);
  EXPECT_EQ(s.core.width, 128);
  EXPECT_EQ(s.core.heads, 4);
  EXPECT_EQ(s.core.headDim(), 32);
  EXPECT_EQ(s.core.ffn, Ffn::SwiGLU);
  EXPECT_EQ(s.core.ffnWidth, 512);
  EXPECT_EQ(s.core.context, 64);
  EXPECT_TRUE(s.tying.embedHead);
  ASSERT_EQ(s.objectives.size(), 1u);
  EXPECT_EQ(s.objectives[0].kind, ObjectiveKind::NextToken);
  EXPECT_EQ(s.train.batch, 12);
  EXPECT_EQ(s.train.steps, 2000);
  EXPECT_EQ(s.windowBytes(), 64);
}

TEST(Spec, DefaultsFollowModelSpec) {
  ModelSpec s = parseOk(R"(
name: m
embedder: {kind: token}
core: {layers: 2, width: 64, heads: 4, ffn: gelu, ffn_width: 128, context: 16}
)");
  EXPECT_EQ(s.embedder.vocabSize, 256);
  EXPECT_EQ(s.core.kvHeads, 4); // = heads
  EXPECT_DOUBLE_EQ(s.core.ropeTheta, 10000.0);
  EXPECT_DOUBLE_EQ(s.core.normEps, 1e-6);
  EXPECT_FALSE(s.tying.embedHead);
  EXPECT_EQ(s.head.kind, HeadKind::Token);
  ASSERT_EQ(s.objectives.size(), 1u);
  EXPECT_EQ(s.objectives[0].kind, ObjectiveKind::NextToken);
  EXPECT_DOUBLE_EQ(s.train.beta1, 0.9);
  EXPECT_DOUBLE_EQ(s.train.beta2, 0.99);
  EXPECT_DOUBLE_EQ(s.train.weightDecay, 0.1);
  EXPECT_EQ(s.train.seed, 1337);
}

TEST(Spec, BytePoolDefaultsToTheChunkHeadAndObjective) {
  ModelSpec s = parseOk(R"(
name: bp
embedder: {kind: byte_pool, chunking: fixed, stride: 4, chunk_bytes: 4, byte_width: 32}
core: {layers: 1, width: 64, heads: 2, ffn: swiglu, ffn_width: 128, context: 8}
)");
  EXPECT_EQ(s.head.kind, HeadKind::ByteChunk);
  EXPECT_EQ(s.embedder.vocabSize, 258);
  ASSERT_EQ(s.objectives.size(), 1u);
  EXPECT_EQ(s.objectives[0].kind, ObjectiveKind::ChunkBytes);
  EXPECT_EQ(s.windowBytes(), 8 * 4);
}

/// Every field of `a` equals `b`'s; listed here one by one, independently of
/// the serializer, so that a field specToJson drops and parseSpecJson
/// defaults shows up as a difference.
void expectSameSpec(const ModelSpec &a, const ModelSpec &b,
                    const std::string &what) {
  SCOPED_TRACE(what);
  EXPECT_EQ(a.name, b.name);
  const EmbedderSpec &e = a.embedder, &f = b.embedder;
  EXPECT_EQ(e.kind, f.kind);
  EXPECT_EQ(e.vocabSize, f.vocabSize);
  EXPECT_EQ(e.chunking, f.chunking);
  EXPECT_EQ(e.stride, f.stride);
  EXPECT_EQ(e.chunkBytes, f.chunkBytes);
  EXPECT_EQ(e.byteWidth, f.byteWidth);
  EXPECT_EQ(e.encoderLayers, f.encoderLayers);
  EXPECT_EQ(e.encoderHeads, f.encoderHeads);
  EXPECT_EQ(e.pool, f.pool);
  const CoreSpec &c = a.core, &d = b.core;
  EXPECT_EQ(c.layers, d.layers);
  EXPECT_EQ(c.width, d.width);
  EXPECT_EQ(c.heads, d.heads);
  EXPECT_EQ(c.kvHeads, d.kvHeads);
  EXPECT_EQ(c.ffn, d.ffn);
  EXPECT_EQ(c.ffnWidth, d.ffnWidth);
  EXPECT_EQ(c.context, d.context);
  EXPECT_EQ(c.ropeTheta, d.ropeTheta);
  EXPECT_EQ(c.normEps, d.normEps);
  EXPECT_EQ(a.tying.embedHead, b.tying.embedHead);
  EXPECT_EQ(a.tying.ffn, b.tying.ffn);
  EXPECT_EQ(a.tying.attnOut, b.tying.attnOut);
  EXPECT_EQ(a.tying.interiorKeep, b.tying.interiorKeep);
  EXPECT_EQ(a.tying.loraRank, b.tying.loraRank);
  EXPECT_EQ(a.head.kind, b.head.kind);
  EXPECT_EQ(a.head.decoderLayers, b.head.decoderLayers);
  EXPECT_EQ(a.head.decoderHeads, b.head.decoderHeads);
  ASSERT_EQ(a.objectives.size(), b.objectives.size());
  for (size_t i = 0; i < a.objectives.size(); ++i) {
    const ObjectiveSpec &o = a.objectives[i], &p = b.objectives[i];
    SCOPED_TRACE("objective " + std::to_string(i));
    EXPECT_EQ(o.kind, p.kind);
    EXPECT_EQ(o.weight, p.weight);
    EXPECT_EQ(o.maskPad, p.maskPad);
    EXPECT_EQ(o.maskProb, p.maskProb);
    EXPECT_EQ(o.maskId, p.maskId);
    EXPECT_EQ(o.teacher, p.teacher);
    ASSERT_EQ(o.teacherSpec != nullptr, p.teacherSpec != nullptr);
    if (o.teacherSpec)
      expectSameSpec(*o.teacherSpec, *p.teacherSpec, "teacher");
    EXPECT_EQ(o.temperature, p.temperature);
    EXPECT_EQ(o.alpha, p.alpha);
  }
  const TrainSpec &t = a.train, &u = b.train;
  EXPECT_EQ(t.batch, u.batch);
  EXPECT_EQ(t.steps, u.steps);
  EXPECT_EQ(t.lr, u.lr);
  EXPECT_EQ(t.minLr, u.minLr);
  EXPECT_EQ(t.warmup, u.warmup);
  EXPECT_EQ(t.schedule, u.schedule);
  EXPECT_EQ(t.beta1, u.beta1);
  EXPECT_EQ(t.beta2, u.beta2);
  EXPECT_EQ(t.eps, u.eps);
  EXPECT_EQ(t.weightDecay, u.weightDecay);
  EXPECT_EQ(t.gradClip, u.gradClip);
  EXPECT_EQ(t.accumulate, u.accumulate);
  EXPECT_EQ(t.seed, u.seed);
  EXPECT_EQ(t.precision, u.precision);
}

/// The JSON form (what a checkpoint stores) read back equals the YAML-parsed
/// spec field by field. Besides the examples, two specs set every field to a
/// value other than its default, so a field lost on the way cannot hide
/// behind the parser's default.
TEST(Spec, JsonFormRoundTrips) {
  std::vector<std::pair<std::string, ModelSpec>> specs;
  for (const char *name : {"char-tiny", "ref-3m", "stlm-10m", "byte-pool-3m",
                           "byte-pool-50m", "stlm-100m"})
    specs.push_back({name, load(name)});
  specs.push_back({"every token field", parseOk(R"(
name: all-token
embedder: {kind: token, vocab_size: 300}
core: {layers: 6, width: 64, heads: 4, kv_heads: 2, ffn: gelu, ffn_width: 96,
       context: 24, rope_theta: 50000.0, norm_eps: 1.0e-5}
tying: {embed_head: true, ffn: interior, attn_out: all, interior_keep: 2,
        lora_rank: 3}
objectives:
  - {kind: next_token, weight: 0.5}
  - {kind: masked_next_token, weight: 0.25, mask_prob: 0.3, mask_id: 7}
  - {kind: distill, weight: 0.125, teacher: t.safetensors, temperature: 3.0,
     alpha: 0.75, teacher_spec: {name: t, embedder: {kind: token,
     vocab_size: 300}, core: {layers: 2, width: 32, heads: 2, ffn: swiglu,
     ffn_width: 48, context: 32}, train: {batch: 9}}}
train: {batch: 5, steps: 77, lr: 1.5e-3, min_lr: 2.5e-5, warmup: 9,
        schedule: constant, betas: [0.8, 0.95], eps: 1.0e-7,
        weight_decay: 0.05, grad_clip: 0.5, accumulate: 3, seed: 4242,
        precision: bf16}
)")});
  specs.push_back({"every byte_pool field", parseOk(R"(
name: all-pool
embedder: {kind: byte_pool, chunking: fixed, stride: 5, chunk_bytes: 6,
           byte_width: 24, encoder_layers: 3, encoder_heads: 3, pool: max}
core: {layers: 2, width: 48, heads: 3, ffn: swiglu, ffn_width: 64,
       context: 8}
head: {kind: byte_chunk, decoder_layers: 3, decoder_heads: 6}
objectives:
  - {kind: chunk_bytes, weight: 0.75, mask_pad: true}
  - {kind: reconstruction, weight: 0.25, mask_pad: true}
)")});
  // The every-field specs really differ from the defaults where it counts.
  const ModelSpec &tok = specs[specs.size() - 2].second;
  ASSERT_EQ(tok.objectives.size(), 3u);
  EXPECT_NE(tok.train.precision, TrainSpec().precision);
  EXPECT_NE(tok.objectives[2].alpha, ObjectiveSpec().alpha);
  // How the teacher trained is not part of the student.
  ASSERT_TRUE(tok.objectives[2].teacherSpec);
  EXPECT_EQ(tok.objectives[2].teacherSpec->train.batch, TrainSpec().batch);
  EXPECT_NE(specs.back().second.embedder.pool, EmbedderSpec().pool);

  for (const auto &[name, s] : specs) {
    std::string json = specToJson(s);
    SpecResult back = parseSpecJson(json, "json");
    ASSERT_TRUE(back.spec.has_value())
        << name << ": " << (back.diagnostics.empty()
                                ? ""
                                : back.diagnostics[0].str());
    expectSameSpec(s, *back.spec, name);
    EXPECT_EQ(specToJson(*back.spec), json) << name;
  }
}

/// Text past the spec size limit is refused before any parsing, as YAML
/// and as a stored (JSON) spec, and stored JSON nested past 16 levels too.
TEST(Spec, RefusesOversizedAndDeeplyNestedText) {
  std::string big(kMaxSpecBytes + 1, ' ');
  SpecResult yaml = parseSpec(big, "big.yaml");
  ASSERT_EQ(yaml.diagnostics.size(), 1u);
  EXPECT_EQ(yaml.diagnostics[0].str(),
            "big.yaml: error: the spec has 1048577 bytes, more than the "
            "1048576-byte limit of a spec");
  SpecResult json = parseSpecJson(big, "stored");
  ASSERT_EQ(json.diagnostics.size(), 1u);
  EXPECT_EQ(json.diagnostics[0].str(),
            "stored: error: the stored spec has 1048577 bytes, more than the "
            "1048576-byte limit of a spec");
  SpecResult deep = parseSpecJson(std::string(17, '[') + std::string(17, ']'),
                                  "stored");
  ASSERT_EQ(deep.diagnostics.size(), 1u);
  EXPECT_EQ(deep.diagnostics[0].str(),
            "stored: error: invalid JSON: nested deeper than 16 levels");
  // 16 levels are read (and refused as a spec, not as JSON).
  SpecResult sixteen = parseSpecJson(
      std::string(16, '[') + std::string(16, ']'), "stored");
  ASSERT_FALSE(sixteen.diagnostics.empty());
  EXPECT_EQ(sixteen.diagnostics[0].str().find("invalid JSON"),
            std::string::npos);
}

TEST(Spec, ReportsEveryErrorWithItsPosition) {
  SpecResult r = parseSpec("name: m\n"
                           "embedder: {kind: token}\n"
                           "core:\n"
                           "  layers: two\n"
                           "  width: 64\n"
                           "  heads: 4\n"
                           "  ffn: relu\n"
                           "  ffn_width: 128\n"
                           "  context: 16\n"
                           "  colour: blue\n",
                           "bad.yaml");
  EXPECT_FALSE(r.spec.has_value());
  ASSERT_EQ(r.diagnostics.size(), 3u);
  std::set<std::string> messages;
  for (const SpecDiagnostic &d : r.diagnostics)
    messages.insert(d.str());
  EXPECT_TRUE(messages.count(
      "bad.yaml:10:3: error: core.colour: unknown key (known keys here: "
      "context, ffn, ffn_width, heads, kv_heads, layers, norm_eps, "
      "rope_theta, width)"));
  EXPECT_TRUE(messages.count(
      "bad.yaml:4:11: error: core.layers: expected an integer, got 'two'"));
  EXPECT_TRUE(messages.count("bad.yaml:7:8: error: core.ffn: unknown value "
                             "'relu' (expected swiglu | gelu)"));
}

/// A distill objective's teacher must be able to teach the student: a token
/// model (no teacher of its own) of the student's vocabulary whose context
/// covers the student's; the stored teacher spec is validated as a spec.
TEST(Spec, TeacherMustFitTheStudent) {
  auto errorOf = [](const std::string &teacher, int64_t vocab = 256) {
    SpecResult r = parseSpec(
        "name: s\n"
        "embedder: {kind: token, vocab_size: " +
            std::to_string(vocab) +
            "}\n"
            "core: {layers: 1, width: 16, heads: 2, ffn: gelu, ffn_width: 32,"
            " context: 16}\n"
            "objectives:\n"
            "  - kind: distill\n"
            "    teacher: t.safetensors\n"
            "    teacher_spec: " +
            teacher + "\n",
        "s.yaml");
    return r.diagnostics.empty() ? std::string() : r.diagnostics[0].str();
  };
  const std::string core =
      "core: {layers: 1, width: 8, heads: 2, ffn: gelu, ffn_width: 8, ";
  EXPECT_EQ(
      errorOf("{name: t, embedder: {kind: token}, " + core + "context: 16}}"),
      "");
  EXPECT_EQ(
      errorOf("{name: t, embedder: {kind: token}, " + core + "context: 16}}",
              128),
      "s.yaml:7:5: error: objectives.0.teacher_spec: the teacher 't' "
      "predicts 256 tokens, the student 128; their vocabularies must "
      "be the same");
  EXPECT_EQ(
      errorOf("{name: t, embedder: {kind: token}, " + core + "context: 8}}"),
      "s.yaml:7:5: error: objectives.0.teacher_spec: the teacher 't' "
      "was built for a context of 8, shorter than the student's 16");
  EXPECT_EQ(
      errorOf("{name: t, embedder: {kind: byte_pool, chunking: words, "
              "chunk_bytes: 4, byte_width: 8, encoder_heads: 2}, " +
              core + "context: 16}}"),
      "s.yaml:7:5: error: objectives.0.teacher_spec: the teacher 't' is a "
      "byte-pool model; a teacher must be a token model");
  EXPECT_EQ(errorOf("{name: t, embedder: {kind: token}, " + core +
                    "context: 16}, objectives: [{kind: distill, teacher: "
                    "u.safetensors}]}"),
            "s.yaml:7:5: error: objectives.0.teacher_spec: the teacher 't' "
            "distils from a teacher of its own; train the teacher without "
            "one");
  EXPECT_EQ(errorOf("{embedder: {kind: token}, " + core + "context: 16}}"),
            "s.yaml:7:19: error: objectives.0.teacher_spec: the stored "
            "teacher spec is invalid: name: required key is missing");
  // Only a distill objective has a teacher.
  SpecResult r = parseSpec("name: s\n"
                           "embedder: {kind: token}\n"
                           "core: {layers: 1, width: 16, heads: 2, ffn: gelu,"
                           " ffn_width: 32, context: 16}\n"
                           "objectives:\n"
                           "  - {kind: next_token, teacher_spec: {}}\n",
                           "s.yaml");
  ASSERT_FALSE(r.diagnostics.empty());
  EXPECT_NE(r.diagnostics[0].str().find("objectives.0.teacher_spec"),
            std::string::npos);
}

/// readSpecFile reads a teacher's spec from its checkpoint (a path from the
/// working directory), and says why when it cannot.
TEST(Spec, ReadsTheTeacherFromItsCheckpoint) {
  std::string dir = "/tmp/stlm-teacher-test-" + std::to_string(getpid());
  ASSERT_EQ(::mkdir(dir.c_str(), 0700), 0);
  ModelSpec teacher = load("char-tiny");
  std::string error, ckpt = dir + "/t.safetensors";
  ASSERT_TRUE(writeInitialWeights(teacher, 5, ckpt, error)) << error;
  std::string studentPath = dir + "/s.yaml";
  auto writeStudent = [&](const std::string &teacherPath) {
    std::ofstream(studentPath)
        << "name: s\n"
           "embedder: {kind: token}\n"
           "core: {layers: 1, width: 16, heads: 2, ffn: gelu, ffn_width: 32,"
           " context: 16}\n"
           "objectives:\n"
           "  - {kind: next_token}\n"
           "  - {kind: distill, teacher: '"
        << teacherPath << "'}\n";
  };
  writeStudent(ckpt);
  SpecResult r = readSpecFile(studentPath);
  ASSERT_TRUE(r.spec) << r.diagnostics[0].str();
  ASSERT_TRUE(r.spec->objectives[1].teacherSpec);
  EXPECT_EQ(specToJson(*r.spec->objectives[1].teacherSpec),
            specToJson(teacher));
  // Stored with the student's spec, it needs no file to be read back.
  std::string json = specToJson(*r.spec);
  std::remove(ckpt.c_str());
  SpecResult back = parseSpecJson(json, "stored");
  ASSERT_TRUE(back.spec);
  EXPECT_EQ(specToJson(*back.spec), json);
  // Without the file, reading the YAML says so.
  r = readSpecFile(studentPath);
  EXPECT_FALSE(r.spec);
  ASSERT_EQ(r.diagnostics.size(), 1u);
  EXPECT_NE(r.diagnostics[0].str().find(
                "s.yaml: error: objectives.1.teacher: cannot read the teacher "
                "checkpoint: "),
            std::string::npos)
      << r.diagnostics[0].str();
  std::remove(studentPath.c_str());
  ::rmdir(dir.c_str());
}

//===----------------------------------------------------------------------===//
// Parameter totals against closed forms
//===----------------------------------------------------------------------===//

/// One decoder layer without sharing: 2 norms + wq, wk, wv, wo + FFN.
int64_t denseLayer(int64_t d, int64_t heads, int64_t kvHeads, int64_t F,
                   bool swiglu) {
  int64_t hd = d / heads;
  int64_t attn = d * (heads * hd) + 2 * d * (kvHeads * hd) + (heads * hd) * d;
  return 2 * d + attn + (swiglu ? 3 : 2) * F * d;
}

/// A chunk encoder/decoder block of width w (SwiGLU 4w): 2w + 4w² + 12w².
int64_t chunkBlock(int64_t w) { return 2 * w + 16 * w * w; }

TEST(ParamTotals, CharTiny) {
  // V·d (tied head) + 4 dense SwiGLU layers + final norm.
  int64_t V = 256, d = 128;
  int64_t unique = V * d + 4 * denseLayer(d, 4, 4, 512, true) + d;
  EXPECT_EQ(unique, 1082496);
  ParamTable t = buildParamTable(load("char-tiny"));
  EXPECT_EQ(t.uniqueCount(), unique);
  EXPECT_EQ(t.untiedCount(), unique + V * d);
  EXPECT_EQ(t.params.size(), 2u + 4 * 9);
}

TEST(ParamTotals, Ref3M) {
  int64_t V = 256, d = 256;
  int64_t unique = V * d + 4 * denseLayer(d, 4, 4, 1024, false) + d;
  EXPECT_EQ(unique, 3213568);
  ParamTable t = buildParamTable(load("ref-3m"));
  EXPECT_EQ(t.uniqueCount(), unique);
  EXPECT_EQ(t.untiedCount(), unique + V * d);
}

TEST(ParamTotals, Stlm10MSharesInteriorFfnAndAttentionOutput) {
  // 14 layers, k = 1: layers 0 and 13 are dense, 1..12 share wo and the
  // SwiGLU FFN and each adds rank-16 deltas to all four shared weights.
  int64_t V = 256, d = 384, L = 14, k = 1, r = 16, F = 1280, heads = 6,
          kv = 2, hd = d / heads;
  int64_t interior = L - 2 * k;
  int64_t q = heads * hd;
  int64_t perLayer = 2 * d + d * q + 2 * d * kv * hd; // norms, wq, wk, wv
  int64_t ownOutAndFfn = q * d + 3 * F * d;           // wo + w1, w3, w2
  int64_t lora = r * (q + d) + 2 * r * (d + F) + r * (F + d);
  int64_t unique = V * d + L * perLayer + 2 * k * ownOutAndFfn +
                   ownOutAndFfn /* shared once */ + interior * lora + d;
  int64_t untied = unique + V * d + (interior - 1) * ownOutAndFfn;
  ParamTable t = buildParamTable(load("stlm-10m"));
  EXPECT_EQ(t.uniqueCount(), unique);
  EXPECT_EQ(t.untiedCount(), untied);
  EXPECT_GT(unique, 9'000'000);
  EXPECT_LT(unique, 11'000'000);
  const ParamInfo *w1 = t.find("shared.w1");
  ASSERT_TRUE(w1);
  EXPECT_EQ(w1->uses, interior);
  EXPECT_EQ(t.find("layers.5.w1"), nullptr);
  EXPECT_NE(t.find("layers.0.w1"), nullptr);
  EXPECT_NE(t.find("layers.5.lora.w2.a"), nullptr);
  EXPECT_EQ(t.find("layers.0.lora.w2.a"), nullptr);
}

TEST(ParamTotals, BytePool50M) {
  int64_t db = 256, L = 12, d = 512, layers = 14, F = 1536;
  int64_t embedder = 258 * db + L * db + 2 * chunkBlock(db) + d * db;
  int64_t core = layers * denseLayer(d, 8, 4, F, true) + d;
  int64_t head = L * db * d + L * db + 2 * chunkBlock(db) + db + 258 * db;
  int64_t unique = embedder + core + head;
  ParamTable t = buildParamTable(load("byte-pool-50m"));
  EXPECT_EQ(t.uniqueCount(), unique);
  EXPECT_EQ(t.untiedCount(), unique); // nothing tied
  EXPECT_GT(unique, 45'000'000);
  EXPECT_LT(unique, 55'000'000);
}

TEST(ParamTotals, BytePool3M) {
  int64_t db = 96, L = 8, d = 192, layers = 4, F = 512;
  int64_t embedder = 258 * db + L * db + chunkBlock(db) + d * db;
  int64_t core = layers * denseLayer(d, 4, 4, F, true) + d;
  int64_t head = L * db * d + L * db + chunkBlock(db) + db + 258 * db;
  int64_t unique = embedder + core + head;
  ParamTable t = buildParamTable(load("byte-pool-3m"));
  EXPECT_EQ(t.uniqueCount(), unique);
  EXPECT_EQ(t.untiedCount(), unique);
  EXPECT_EQ(unique, 2'283'552); // docs/frontend.md's table
}

TEST(ParamTotals, Stlm100M) {
  int64_t V = 256, d = 768;
  int64_t unique = V * d + 16 * denseLayer(d, 12, 4, 2048, true) + d;
  ParamTable t = buildParamTable(load("stlm-100m"));
  EXPECT_EQ(t.uniqueCount(), unique);
  EXPECT_EQ(t.untiedCount(), unique + V * d);
  EXPECT_GT(unique, 95'000'000);
  EXPECT_LT(unique, 105'000'000);
}

TEST(ParamNames, FollowModelSpecTable) {
  ParamTable t = buildParamTable(load("char-tiny"));
  std::set<std::string> names;
  for (const ParamInfo &p : t.params)
    names.insert(p.name);
  std::set<std::string> expected = {"embed.tok", "norm"};
  for (int l = 0; l < 4; ++l)
    for (const char *w : {"attn_norm", "wq", "wk", "wv", "wo", "ffn_norm",
                          "w1", "w2", "w3"})
      expected.insert("layers." + std::to_string(l) + "." + w);
  EXPECT_EQ(names, expected);
  const ParamInfo *wo = t.find("layers.2.wo");
  ASSERT_TRUE(wo);
  EXPECT_EQ(wo->shape, (std::vector<int64_t>{128, 128}));
  EXPECT_DOUBLE_EQ(wo->std, 0.02 / std::sqrt(8.0));
  EXPECT_EQ(t.find("layers.2.w2")->shape, (std::vector<int64_t>{128, 512}));
  EXPECT_EQ(t.find("norm")->init, InitKind::Ones);
}

//===----------------------------------------------------------------------===//
// Initial weights
//===----------------------------------------------------------------------===//

TEST(Init, IsDeterministicAndPerTensor) {
  ModelSpec s = load("char-tiny");
  ParamTable t = buildParamTable(s);
  std::vector<InitTensor> a = initWeights(t, 7), b = initWeights(t, 7),
                          c = initWeights(t, 8);
  ASSERT_EQ(a.size(), t.params.size());
  for (size_t i = 0; i < a.size(); ++i)
    EXPECT_EQ(a[i].values, b[i].values) << t.params[i].name;
  EXPECT_NE(a[0].values, c[0].values);

  // Adding a tensor (an untied head) leaves every other tensor unchanged.
  ModelSpec untied = s;
  untied.tying.embedHead = false;
  ParamTable t2 = buildParamTable(untied);
  std::vector<InitTensor> d = initWeights(t2, 7);
  ASSERT_EQ(d.size(), a.size() + 1);
  for (const InitTensor &x : a)
    for (const InitTensor &y : d) {
      if (x.param->name == y.param->name) {
        EXPECT_EQ(x.values, y.values) << x.param->name;
      }
    }
}

TEST(Init, FollowsTheDistributions) {
  ModelSpec s = load("ref-3m");
  ParamTable t = buildParamTable(s);
  for (const InitTensor &w : initWeights(t, 1337)) {
    const ParamInfo &p = *w.param;
    double sum = 0, sq = 0;
    for (float v : w.values) {
      sum += v;
      sq += double(v) * v;
    }
    double n = static_cast<double>(w.values.size());
    double mean = sum / n, std = std::sqrt(sq / n - mean * mean);
    if (p.init == InitKind::Ones) {
      EXPECT_EQ(mean, 1.0) << p.name;
      EXPECT_EQ(std, 0.0) << p.name;
    } else {
      ASSERT_EQ(p.init, InitKind::Normal) << p.name;
      // n ≥ 65536 samples: the sample std is within 2 % and the mean within
      // 5 standard errors of 0.
      EXPECT_NEAR(std / p.std, 1.0, 0.02) << p.name;
      EXPECT_LT(std::abs(mean), 5 * p.std / std::sqrt(n)) << p.name;
    }
  }
}

TEST(Init, LoRAStartsAsAZeroDelta) {
  ModelSpec s = load("stlm-10m");
  ParamTable t = buildParamTable(s);
  int checked = 0;
  for (const InitTensor &w : initWeights(t, 3)) {
    const std::string &name = w.param->name;
    if (name.size() > 2 && name.compare(name.size() - 2, 2, ".b") == 0 &&
        name.find(".lora.") != std::string::npos) {
      ++checked;
      ASSERT_FALSE(w.values.empty()) << name;
      for (float v : w.values)
        ASSERT_EQ(v, 0.0f) << name;
    }
  }
  // stlm-10m: 14 layers, interior_keep 1, so 12 interior layers, each with
  // a LoRA pair on the shared attention output and on w1, w2 and w3.
  EXPECT_EQ(checked, 12 * 4);
}

TEST(Init, WrittenCheckpointKnowsItsModel) {
  ModelSpec s = load("char-tiny");
  std::string path = "/tmp/stlm-frontend-test-" + std::to_string(getpid()) +
                     ".safetensors";
  std::string error;
  ASSERT_TRUE(writeInitialWeights(s, 5, path, error)) << error;
  auto file = SafeTensorsFile::open(path, error);
  ASSERT_TRUE(file) << error;
  ParamTable t = buildParamTable(s);
  EXPECT_TRUE(checkWeights(t, *file).empty());
  EXPECT_EQ(file->tensors().size(), t.params.size()); // tied: stored once
  EXPECT_EQ(file->metadata().at(kFormatKey), "1");
  SpecResult back = parseSpecJson(file->metadata().at(kSpecKey), "meta");
  ASSERT_TRUE(back.spec.has_value());
  EXPECT_EQ(specToJson(*back.spec), specToJson(s));
  // The values are exactly initWeights'.
  std::vector<InitTensor> expected = initWeights(t, 5);
  const TensorView *wq = file->find("layers.1.wq");
  ASSERT_TRUE(wq);
  for (const InitTensor &w : expected) {
    if (w.param->name == "layers.1.wq") {
      EXPECT_EQ(std::memcmp(wq->data, w.values.data(), wq->size), 0);
    }
  }
  std::remove(path.c_str());
}

TEST(CheckWeights, ListsEveryMismatch) {
  ModelSpec s = load("char-tiny");
  ParamTable t = buildParamTable(s);
  std::vector<InitTensor> w = initWeights(t, 1);
  std::vector<TensorToWrite> tensors;
  std::vector<int32_t> ints(128 * 128);
  std::vector<float> extra(4);
  for (const InitTensor &x : w) {
    const std::string &name = x.param->name;
    if (name == "layers.0.wq")
      continue; // missing
    if (name == "layers.1.wk") {
      tensors.push_back({name, DType::I32, x.param->shape, ints.data(),
                         ints.size() * 4}); // wrong dtype
      continue;
    }
    if (name == "norm") {
      tensors.push_back({name, DType::F32, {64, 2}, x.values.data(),
                         x.values.size() * 4}); // wrong shape
      continue;
    }
    tensors.push_back({name, DType::F32, x.param->shape, x.values.data(),
                       x.values.size() * 4});
  }
  tensors.push_back({"head", DType::F32, {4}, extra.data(), 16});
  tensors.push_back({"opt.m.norm", DType::F32, {4}, extra.data(), 16});
  std::string error;
  auto img = serializeSafeTensors(tensors, {}, error);
  ASSERT_TRUE(img) << error;
  auto file = SafeTensorsFile::fromBuffer(*img, "w", error);
  ASSERT_TRUE(file) << error;
  std::vector<std::string> problems = checkWeights(t, *file);
  std::set<std::string> got(problems.begin(), problems.end());
  std::set<std::string> want = {
      "missing tensor 'layers.0.wq' [128, 128]",
      "'layers.1.wk' has dtype I32, expected F32",
      "'norm' has shape [64, 2], expected [128]",
      "unexpected tensor 'head' [4] (not a parameter of the spec)",
      "'opt.m.norm' has shape [4], expected [128]",
  };
  EXPECT_EQ(got, want);
}

} // namespace
