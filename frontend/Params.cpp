//===- Params.cpp - the parameters of a model spec ------------------------===//

#include "frontend/Params.h"

#include <cassert>
#include <cmath>

namespace stlm {

std::string shapeString(const std::vector<int64_t> &shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i)
    s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

int64_t ParamInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape)
    n *= d;
  return n;
}

int64_t ParamTable::uniqueCount() const {
  int64_t n = 0;
  for (const ParamInfo &p : params)
    n += p.numel();
  return n;
}

int64_t ParamTable::untiedCount() const {
  int64_t n = 0;
  for (const ParamInfo &p : params)
    n += p.numel() * p.uses;
  return n;
}

const ParamInfo *ParamTable::find(const std::string &name) const {
  for (const ParamInfo &p : params)
    if (p.name == name)
      return &p;
  return nullptr;
}

const std::string &BlockNames::get(const std::string &key) const {
  if (key == "attn_norm") return attnNorm;
  if (key == "wq") return wq;
  if (key == "wk") return wk;
  if (key == "wv") return wv;
  if (key == "wo") return wo;
  if (key == "ffn_norm") return ffnNorm;
  if (key == "w1") return w1;
  if (key == "w2") return w2;
  assert(key == "w3" && "unknown block key");
  return w3;
}

BlockNames coreLayerNames(const ModelSpec &spec, int64_t layer) {
  std::string p = "layers." + std::to_string(layer) + ".";
  BlockNames n;
  n.attnNorm = p + "attn_norm";
  n.wq = p + "wq";
  n.wk = p + "wk";
  n.wv = p + "wv";
  n.wo = spec.sharesAttnOut(layer) ? "shared.wo" : p + "wo";
  n.ffnNorm = p + "ffn_norm";
  bool shared = spec.sharesFfn(layer);
  n.w1 = shared ? "shared.w1" : p + "w1";
  n.w2 = shared ? "shared.w2" : p + "w2";
  n.w3 = spec.core.ffn == Ffn::SwiGLU ? (shared ? "shared.w3" : p + "w3") : "";
  return n;
}

BlockNames chunkBlockNames(const std::string &prefix, int64_t index) {
  std::string p = prefix + "." + std::to_string(index) + ".";
  return {p + "attn_norm", p + "wq", p + "wk",  p + "wv", p + "wo",
          p + "ffn_norm",  p + "w1", p + "w2", p + "w3"};
}

std::string loraName(int64_t layer, const std::string &weight, char part) {
  return "layers." + std::to_string(layer) + ".lora." + weight + "." + part;
}

namespace {

struct TableBuilder {
  ParamTable table;
  double std;    // matrices
  double outStd; // output projections wo, w2

  void add(const std::string &name, std::vector<int64_t> shape, InitKind init,
           double s = 0.0) {
    ParamInfo p;
    p.name = name;
    p.shape = std::move(shape);
    p.init = init;
    p.std = init == InitKind::Normal ? s : 0.0;
    table.params.push_back(std::move(p));
  }
  void matrix(const std::string &name, int64_t out, int64_t in,
              bool outputProjection = false) {
    add(name, {out, in}, InitKind::Normal, outputProjection ? outStd : std);
  }
  void norm(const std::string &name, int64_t width) {
    add(name, {width}, InitKind::Ones);
  }
  /// A chunk encoder/decoder block: width w, SwiGLU FFN of width 4w.
  void chunkBlock(const BlockNames &n, int64_t w) {
    norm(n.attnNorm, w);
    matrix(n.wq, w, w);
    matrix(n.wk, w, w);
    matrix(n.wv, w, w);
    matrix(n.wo, w, w, true);
    norm(n.ffnNorm, w);
    matrix(n.w1, 4 * w, w);
    matrix(n.w3, 4 * w, w);
    matrix(n.w2, w, 4 * w, true);
  }
  void lora(int64_t layer, const std::string &weight, int64_t out, int64_t in,
            int64_t r) {
    add(loraName(layer, weight, 'a'), {r, in}, InitKind::Normal, std);
    add(loraName(layer, weight, 'b'), {out, r}, InitKind::Zeros);
  }
};

std::string layerRange(const ModelSpec &s, bool (ModelSpec::*shares)(int64_t)
                                               const,
                       int64_t &count) {
  int64_t first = -1, last = -1;
  count = 0;
  for (int64_t l = 0; l < s.core.layers; ++l)
    if ((s.*shares)(l)) {
      if (first < 0)
        first = l;
      last = l;
      ++count;
    }
  return "shared by layers " + std::to_string(first) + "-" +
         std::to_string(last);
}

} // namespace

ParamTable buildParamTable(const ModelSpec &s) {
  const CoreSpec &c = s.core;
  const EmbedderSpec &e = s.embedder;
  TableBuilder b;
  b.std = 0.02;
  b.outStd = 0.02 / std::sqrt(2.0 * static_cast<double>(c.layers));
  int64_t d = c.width, hd = c.headDim(), F = c.ffnWidth;
  int64_t qWidth = c.heads * hd, kvWidth = c.kvHeads * hd;

  // Embedder.
  if (e.kind == EmbedderKind::Token) {
    b.matrix("embed.tok", e.vocabSize, d);
    if (s.tying.embedHead) {
      b.table.params.back().uses = 2;
      b.table.params.back().sharing = "tied: embedding and head";
    }
  } else {
    int64_t db = e.byteWidth, L = e.chunkBytes;
    b.matrix("embed.bytes", 258, db);
    b.matrix("embed.slots", L, db);
    for (int64_t i = 0; i < e.encoderLayers; ++i)
      b.chunkBlock(chunkBlockNames("embed.enc", i), db);
    b.matrix("embed.proj", d, db);
  }

  // Core layers; shared weights are declared once, after the layers.
  int64_t r = s.tying.loraRank;
  for (int64_t l = 0; l < c.layers; ++l) {
    BlockNames n = coreLayerNames(s, l);
    b.norm(n.attnNorm, d);
    b.matrix(n.wq, qWidth, d);
    b.matrix(n.wk, kvWidth, d);
    b.matrix(n.wv, kvWidth, d);
    if (!s.sharesAttnOut(l))
      b.matrix(n.wo, d, qWidth, true);
    else if (r > 0)
      b.lora(l, "wo", d, qWidth, r);
    b.norm(n.ffnNorm, d);
    if (!s.sharesFfn(l)) {
      b.matrix(n.w1, F, d);
      if (c.ffn == Ffn::SwiGLU)
        b.matrix(n.w3, F, d);
      b.matrix(n.w2, d, F, true);
    } else if (r > 0) {
      b.lora(l, "w1", F, d, r);
      if (c.ffn == Ffn::SwiGLU)
        b.lora(l, "w3", F, d, r);
      b.lora(l, "w2", d, F, r);
    }
  }
  int64_t count;
  if (s.tying.attnOut != Share::None) {
    std::string note = layerRange(s, &ModelSpec::sharesAttnOut, count);
    b.matrix("shared.wo", d, qWidth, true);
    b.table.params.back().uses = count;
    b.table.params.back().sharing = note;
  }
  if (s.tying.ffn != Share::None) {
    std::string note = layerRange(s, &ModelSpec::sharesFfn, count);
    std::vector<std::string> names = {"shared.w1"};
    if (c.ffn == Ffn::SwiGLU)
      names.push_back("shared.w3");
    for (const std::string &name : names) {
      b.matrix(name, F, d);
      b.table.params.back().uses = count;
      b.table.params.back().sharing = note;
    }
    b.matrix("shared.w2", d, F, true);
    b.table.params.back().uses = count;
    b.table.params.back().sharing = note;
  }
  b.norm("norm", d);

  // Head.
  if (s.head.kind == HeadKind::Token) {
    if (!s.tying.embedHead)
      b.matrix("head", e.vocabSize, d);
  } else {
    int64_t db = e.byteWidth, L = e.chunkBytes;
    b.matrix("head.proj", L * db, d);
    b.matrix("head.slots", L, db);
    for (int64_t i = 0; i < s.head.decoderLayers; ++i)
      b.chunkBlock(chunkBlockNames("head.dec", i), db);
    b.norm("head.norm", db);
    b.matrix("head.out", 258, db);
  }
  return b.table;
}

} // namespace stlm
