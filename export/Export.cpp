//===- Export.cpp - checkpoints to llama.cpp's GGUF and transformers' format ===//

#include "export/Export.h"

#include "support/Files.h"
#include "support/Version.h"

#include <nlohmann/json.hpp>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string_view>
#include <sys/stat.h>
#include <vector>

namespace stlm {
namespace {

/// One tensor in llama's terms: MODEL_SPEC's name of its role
/// (`layers.3.wq`, `embed.tok`, `norm`, `head`), its shape and values.
struct Dense {
  std::string name;
  std::vector<int64_t> shape;
  std::vector<float> data;
};

const TensorView *tensor(const SafeTensorsFile &file, const std::string &name,
                         std::string &error) {
  const TensorView *t = file.find(name);
  if (!t || t->dtype != DType::F32)
    error = "the checkpoint has no F32 tensor '" + name + "'";
  return t && t->dtype == DType::F32 ? t : nullptr;
}

bool read(const SafeTensorsFile &file, const std::string &name,
          const std::string &as, Dense &out, std::string &error) {
  const TensorView *t = tensor(file, name, error);
  if (!t)
    return false;
  out.name = as;
  out.shape = t->shape;
  out.data.resize(t->numel());
  std::memcpy(out.data.data(), t->data, out.data.size() * 4);
  return true;
}

/// The weights of a llama model, every layer its own: shared matrices
/// copied into each layer that uses them, LoRA deltas (x·aᵀ·bᵀ, so
/// W += b·a) merged when there are any.
bool llamaTensors(const ModelSpec &spec, const SafeTensorsFile &file,
                  std::vector<Dense> &out, std::string &error) {
  Dense d;
  if (!read(file, "embed.tok", "embed.tok", d, error))
    return false;
  out.push_back(std::move(d));
  for (int64_t l = 0; l < spec.core.layers; ++l) {
    std::string p = "layers." + std::to_string(l) + ".";
    for (const char *w : {"attn_norm", "wq", "wk", "wv", "wo", "ffn_norm",
                          "w1", "w3", "w2"}) {
      std::string role = w;
      bool shared = (role == "wo" && spec.sharesAttnOut(l)) ||
                    ((role == "w1" || role == "w3" || role == "w2") &&
                     spec.sharesFfn(l));
      if (!read(file, shared ? "shared." + role : p + role, p + role, d,
                error))
        return false;
      if (shared && spec.tying.loraRank > 0) {
        Dense a, b;
        if (!read(file, p + "lora." + role + ".a", "a", a, error) ||
            !read(file, p + "lora." + role + ".b", "b", b, error))
          return false;
        int64_t rows = d.shape[0], cols = d.shape[1], r = a.shape[0];
        if (a.shape != std::vector<int64_t>{r, cols} ||
            b.shape != std::vector<int64_t>{rows, r}) {
          error = "the LoRA factors of '" + p + role +
                  "' do not match its shape";
          return false;
        }
        for (int64_t i = 0; i < rows; ++i)
          for (int64_t k = 0; k < r; ++k) {
            float bik = b.data[i * r + k];
            if (bik == 0)
              continue;
            for (int64_t j = 0; j < cols; ++j)
              d.data[i * cols + j] += bik * a.data[k * cols + j];
          }
      }
      out.push_back(std::move(d));
    }
  }
  if (!read(file, "norm", "norm", d, error))
    return false;
  out.push_back(std::move(d));
  if (!spec.tying.embedHead) {
    if (!read(file, "head", "head", d, error))
      return false;
    out.push_back(std::move(d));
  }
  return true;
}

//===----------------------------------------------------------------------===//
// GGUF (v3), as llama.cpp's gguf.c reads it: little-endian; strings are a
// u64 length and the bytes; tensor dimensions fastest first (ne[0] is a
// row's length); tensor data aligned to general.alignment (32).
//===----------------------------------------------------------------------===//

enum GgufValue : uint32_t {
  kU32 = 4, kI32 = 5, kF32 = 6, kBool = 7, kString = 8, kArray = 9
};
enum GgmlType : uint32_t {
  kGgmlF32 = 0,
  kGgmlF16 = 1,
  kGgmlQ4_0 = 2,
  kGgmlQ8_0 = 8
};
constexpr uint64_t kAlignment = 32;
/// Q8_0's and Q4_0's block: 32 consecutive values of a row.
constexpr int64_t kQBlock = 32;

struct Gguf {
  std::string data;
  uint64_t kvCount = 0, tensorCount = 0;
  std::string kv, infos;

  template <typename T> static void put(std::string &s, T v) {
    s.append(reinterpret_cast<const char *>(&v), sizeof v);
  }
  static void putString(std::string &s, const std::string &v) {
    put<uint64_t>(s, v.size());
    s += v;
  }
  void key(const std::string &k, GgufValue type) {
    putString(kv, k);
    put<uint32_t>(kv, type);
    ++kvCount;
  }
  void u32(const std::string &k, uint32_t v) {
    key(k, kU32);
    put(kv, v);
  }
  void i32(const std::string &k, int32_t v) {
    key(k, kI32);
    put(kv, v);
  }
  void f32(const std::string &k, float v) {
    key(k, kF32);
    put(kv, v);
  }
  void boolean(const std::string &k, bool v) {
    key(k, kBool);
    put<uint8_t>(kv, v ? 1 : 0);
  }
  void string(const std::string &k, const std::string &v) {
    key(k, kString);
    putString(kv, v);
  }
  void strings(const std::string &k, const std::vector<std::string> &v) {
    key(k, kArray);
    put<uint32_t>(kv, kString);
    put<uint64_t>(kv, v.size());
    for (const std::string &s : v)
      putString(kv, s);
  }
  template <typename T>
  void array(const std::string &k, GgufValue type, const std::vector<T> &v) {
    key(k, kArray);
    put<uint32_t>(kv, type);
    put<uint64_t>(kv, v.size());
    for (T x : v)
      put(kv, x);
  }
  /// A tensor of `shape` (ours: slowest first) in `type`, its bytes.
  void tensor(const std::string &name, const std::vector<int64_t> &shape,
              GgmlType type, const std::string &bytes) {
    while (data.size() % kAlignment)
      data.push_back('\0');
    putString(infos, name);
    put<uint32_t>(infos, shape.size());
    for (auto it = shape.rbegin(); it != shape.rend(); ++it)
      put<uint64_t>(infos, static_cast<uint64_t>(*it));
    put<uint32_t>(infos, type);
    put<uint64_t>(infos, data.size());
    data += bytes;
    ++tensorCount;
  }
  /// Everything before the tensor data (which follows it in the file):
  /// magic, version, counts, metadata, tensor infos, padding.
  std::string head() const {
    std::string f = "GGUF";
    put<uint32_t>(f, 3);
    put<uint64_t>(f, tensorCount);
    put<uint64_t>(f, kvCount);
    f += kv;
    f += infos;
    while (f.size() % kAlignment)
      f.push_back('\0');
    return f;
  }
};

/// Q8_0: each block of 32 values along a row is an fp16 scale
/// d = max|x| / 127 and 32 int8 q = round(x / d); x ≈ d·q.
std::string quantizeQ8(const std::vector<float> &x) {
  std::string out;
  out.reserve(x.size() / kQBlock * 34);
  for (size_t b = 0; b < x.size(); b += kQBlock) {
    float amax = 0;
    for (int64_t i = 0; i < kQBlock; ++i)
      amax = std::max(amax, std::fabs(x[b + i]));
    float d = amax / 127.0f;
    float inv = d != 0 ? 1.0f / d : 0.0f;
    Gguf::put<uint16_t>(out, toHalf(d));
    for (int64_t i = 0; i < kQBlock; ++i)
      out.push_back(static_cast<char>(
          static_cast<int8_t>(std::lround(x[b + i] * inv))));
  }
  return out;
}

/// Q4_0: each block of 32 values along a row is an fp16 scale d = m / −8,
/// where m is the block's value of largest magnitude (its sign kept), and
/// 32 four-bit q = min(15, ⌊x / d + 8.5⌋), values 0–15 in the low nibbles
/// of the 16 bytes and 16–31 in the high ones; x ≈ d·(q − 8). The value of
/// largest magnitude maps to −8 exactly; one of the other sign as large
/// clamps to 7, d away.
std::string quantizeQ4(const std::vector<float> &x) {
  constexpr int64_t kHalf = kQBlock / 2;
  std::string out;
  out.reserve(x.size() / kQBlock * (2 + kHalf));
  for (size_t b = 0; b < x.size(); b += kQBlock) {
    float m = 0;
    for (int64_t i = 0; i < kQBlock; ++i)
      if (std::fabs(x[b + i]) > std::fabs(m))
        m = x[b + i];
    float d = m / -8.0f;
    float inv = d != 0 ? 1.0f / d : 0.0f;
    auto level = [&](int64_t i) {
      // x / d ≥ −8 when |x| ≤ |m|, so the floor is of a positive value.
      return std::min(15, static_cast<int>(x[b + i] * inv + 8.5f));
    };
    Gguf::put<uint16_t>(out, toHalf(d));
    for (int64_t i = 0; i < kHalf; ++i)
      out.push_back(static_cast<char>(level(i) | level(i + kHalf) << 4));
  }
  return out;
}

/// Each layer tensor's name in llama.cpp's GGUF files and in
/// transformers' Llama, by MODEL_SPEC's role.
struct LayerRole {
  const char *ours, *gguf, *hf;
};
constexpr LayerRole kLayerRoles[] = {
    {"attn_norm", "attn_norm", "input_layernorm"},
    {"wq", "attn_q", "self_attn.q_proj"},
    {"wk", "attn_k", "self_attn.k_proj"},
    {"wv", "attn_v", "self_attn.v_proj"},
    {"wo", "attn_output", "self_attn.o_proj"},
    {"ffn_norm", "ffn_norm", "post_attention_layernorm"},
    {"w1", "ffn_gate", "mlp.gate_proj"},
    {"w3", "ffn_up", "mlp.up_proj"},
    {"w2", "ffn_down", "mlp.down_proj"}};

/// The GGUF (or transformers) name of our tensor `name`.
std::string exportedName(const std::string &name, bool gguf) {
  if (name == "embed.tok")
    return gguf ? "token_embd.weight" : "model.embed_tokens.weight";
  if (name == "norm")
    return gguf ? "output_norm.weight" : "model.norm.weight";
  if (name == "head")
    return gguf ? "output.weight" : "lm_head.weight";
  // layers.N.role
  size_t dot = name.find('.', 7);
  std::string layer = name.substr(7, dot - 7), role = name.substr(dot + 1);
  for (const LayerRole &r : kLayerRoles)
    if (role == r.ours)
      return (gguf ? "blk." : "model.layers.") + layer + "." +
             (gguf ? r.gguf : r.hf) + ".weight";
  return name;
}

/// What each --type writes, in GgufType's order: its name, llama.cpp's
/// llama_ftype for the file (general.file_type: ALL_F32, MOSTLY_F16,
/// MOSTLY_Q8_0, MOSTLY_Q4_0), the ggml type of its matrices, and the
/// summary's words.
struct GgufTypeInfo {
  GgufType type;
  const char *name;
  uint32_t fileType;
  GgmlType matrices;
  const char *summary;
};
constexpr GgufTypeInfo kGgufTypes[] = {
    {GgufType::F32, "f32", 0, kGgmlF32, "f32"},
    {GgufType::F16, "f16", 1, kGgmlF16, "f16 matrices, f32 norms"},
    {GgufType::Q8_0, "q8_0", 7, kGgmlQ8_0, "q8_0 matrices, f32 norms"},
    {GgufType::Q4_0, "q4_0", 2, kGgmlQ4_0, "q4_0 matrices, f32 norms"}};
constexpr bool inGgufTypeOrder() {
  for (size_t i = 0; i < std::size(kGgufTypes); ++i)
    if (kGgufTypes[i].type != static_cast<GgufType>(i))
      return false;
  return true;
}
static_assert(inGgufTypeOrder(), "kGgufTypes is indexed by GgufType");

bool writeGguf(const ModelSpec &spec, const std::vector<Dense> &tensors,
               const ExportOptions &options, std::string &summary,
               std::string &error) {
  const GgufTypeInfo &info = kGgufTypes[static_cast<size_t>(options.type)];
  const CoreSpec &c = spec.core;
  Gguf g;
  g.string("general.architecture", "llama");
  g.string("general.name", spec.name);
  g.string("general.source.stlm", std::string("stlm ") + version() +
                                       ", commit " + commit());
  g.u32("general.alignment", kAlignment);
  g.u32("general.file_type", info.fileType);
  g.u32("llama.context_length", c.context);
  g.u32("llama.embedding_length", c.width);
  g.u32("llama.block_count", c.layers);
  g.u32("llama.feed_forward_length", c.ffnWidth);
  g.u32("llama.attention.head_count", c.heads);
  g.u32("llama.attention.head_count_kv", c.kvHeads);
  g.u32("llama.rope.dimension_count", c.headDim());
  g.f32("llama.rope.freq_base", static_cast<float>(c.ropeTheta));
  g.f32("llama.attention.layer_norm_rms_epsilon",
        static_cast<float>(c.normEps));
  g.u32("llama.vocab_size", spec.embedder.vocabSize);
  // The byte vocabulary through llama.cpp's SentencePiece tokenizer: token
  // i is the byte token <0xII>, which its byte fallback produces for any
  // text. The tokenizer first turns each space into U+2581, so token 32
  // is that piece (a normal token it decodes back to a space). No BOS and
  // no space prefix are added; NUL, absent from text, ends generation.
  std::vector<std::string> pieces;
  std::vector<int32_t> types;
  for (int b = 0; b < 256; ++b) {
    char hex[8];
    std::snprintf(hex, sizeof hex, "<0x%02X>", b);
    pieces.push_back(b == ' ' ? "\xe2\x96\x81" : hex);
    types.push_back(b == ' ' ? 1 : 6); // normal, byte
  }
  g.string("tokenizer.ggml.model", "llama");
  g.strings("tokenizer.ggml.tokens", pieces);
  g.array("tokenizer.ggml.scores", kF32, std::vector<float>(256, 0.0f));
  g.array("tokenizer.ggml.token_type", kI32, types);
  g.u32("tokenizer.ggml.bos_token_id", 0);
  g.u32("tokenizer.ggml.eos_token_id", 0);
  g.boolean("tokenizer.ggml.add_bos_token", false);
  g.boolean("tokenizer.ggml.add_eos_token", false);
  g.boolean("tokenizer.ggml.add_space_prefix", false);

  bool quantized =
      options.type == GgufType::Q8_0 || options.type == GgufType::Q4_0;
  int64_t f32Kept = 0;
  for (const Dense &t : tensors) {
    std::string bytes;
    GgmlType type = kGgmlF32;
    bool matrix = t.shape.size() == 2;
    if (matrix && options.type == GgufType::F16) {
      type = kGgmlF16;
      for (float v : t.data)
        Gguf::put<uint16_t>(bytes, toHalf(v));
    } else if (matrix && quantized && t.shape[1] % kQBlock == 0) {
      // A NaN or infinity has no place on a block's grid (and would make
      // its scale meaningless): refused, not written.
      for (size_t i = 0; i < t.data.size(); ++i)
        if (!std::isfinite(t.data[i])) {
          error = "cannot export " + t.name + " as " + info.name +
                  ": it holds " + std::to_string(t.data[i]) + " at index " +
                  std::to_string(i) + " (quantized blocks hold finite " +
                  "values only)";
          return false;
        }
      type = info.matrices;
      bytes = options.type == GgufType::Q8_0 ? quantizeQ8(t.data)
                                             : quantizeQ4(t.data);
    } else {
      f32Kept += matrix;
      bytes.assign(reinterpret_cast<const char *>(t.data.data()),
                   t.data.size() * 4);
    }
    g.tensor(exportedName(t.name, /*gguf=*/true), t.shape, type, bytes);
  }
  std::string head = g.head();
  if (!writeAtomically(options.out, {head, g.data}, error))
    return false;
  summary =
      options.out + ": GGUF v3, llama, " + std::to_string(g.tensorCount) +
      " tensors (" + info.summary +
      (f32Kept && quantized ? ", " + std::to_string(f32Kept) +
                                  " matrices f32: rows not a multiple of 32"
                            : std::string()) +
      "), " + std::to_string(head.size() + g.data.size()) + " bytes";
  return true;
}

//===----------------------------------------------------------------------===//
// transformers' LlamaForCausalLM
//===----------------------------------------------------------------------===//

/// Our q/k rows per head hold pairs (2i, 2i+1); transformers' rotate_half
/// pairs (i, i + hd/2): each head's even rows first, then its odd rows.
void toHalvesLayout(Dense &t, int64_t headDim) {
  int64_t cols = t.shape[1], heads = t.shape[0] / headDim;
  std::vector<float> out(t.data.size());
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t r = 0; r < headDim; ++r) {
      int64_t from = h * headDim + r;
      int64_t to = h * headDim + (r % 2 == 0 ? r / 2 : headDim / 2 + r / 2);
      std::memcpy(&out[to * cols], &t.data[from * cols], cols * 4);
    }
  t.data = std::move(out);
}

bool writeHf(const ModelSpec &spec, std::vector<Dense> &tensors,
             const ExportOptions &options, std::string &summary,
             std::string &error) {
  const CoreSpec &c = spec.core;
  if (mkdir(options.out.c_str(), 0777) != 0 && errno != EEXIST) {
    error = "cannot create '" + options.out + "': " + std::strerror(errno);
    return false;
  }
  struct stat st;
  if (stat(options.out.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    error = "'" + options.out + "' is not a directory";
    return false;
  }
  std::vector<TensorToWrite> out;
  for (Dense &t : tensors) {
    std::string role = t.name.substr(t.name.rfind('.') + 1);
    if (t.name.rfind("layers.", 0) == 0 && (role == "wq" || role == "wk"))
      toHalvesLayout(t, c.headDim());
    out.push_back({exportedName(t.name, /*gguf=*/false), DType::F32, t.shape,
                   t.data.data(),
                   t.data.size() * 4});
  }
  nlohmann::ordered_json config = {
      {"architectures", {"LlamaForCausalLM"}},
      {"model_type", "llama"},
      {"vocab_size", spec.embedder.vocabSize},
      {"hidden_size", c.width},
      {"intermediate_size", c.ffnWidth},
      {"num_hidden_layers", c.layers},
      {"num_attention_heads", c.heads},
      {"num_key_value_heads", c.kvHeads},
      {"head_dim", c.headDim()},
      {"max_position_embeddings", c.context},
      {"rms_norm_eps", c.normEps},
      {"rope_theta", c.ropeTheta},
      {"hidden_act", "silu"},
      {"attention_bias", false},
      {"mlp_bias", false},
      {"tie_word_embeddings", spec.tying.embedHead},
      {"torch_dtype", "float32"},
      {"stlm_source", std::string("stlm ") + version() + ", commit " +
                          commit() + ", model '" + spec.name + "'"}};
  std::string weights = options.out + "/model.safetensors";
  if (!writeSafeTensors(weights, out, {{"format", "pt"}}, error) ||
      !writeAtomically(options.out + "/config.json",
                       {config.dump(2) + "\n"}, error))
    return false;
  summary = options.out + ": config.json and model.safetensors (" +
            std::to_string(out.size()) +
            " tensors, LlamaForCausalLM; q and k rows in rotate-half "
            "order)";
  return true;
}

} // namespace

uint16_t toHalf(float value) {
  uint32_t x;
  std::memcpy(&x, &value, 4);
  uint32_t sign = (x >> 16) & 0x8000, exp = (x >> 23) & 0xff,
           man = x & 0x7fffff;
  if (exp == 0xff)
    return sign | 0x7c00 | (man ? 0x200 : 0);
  int e = static_cast<int>(exp) - 127 + 15;
  if (e >= 31)
    return sign | 0x7c00;
  if (e <= 0) { // a subnormal half, or zero
    if (e < -10)
      return sign;
    man |= 0x800000;
    int shift = 14 - e;
    uint32_t half = man >> shift, rest = man & ((1u << shift) - 1),
             mid = 1u << (shift - 1);
    if (rest > mid || (rest == mid && (half & 1)))
      ++half;
    return sign | half;
  }
  uint32_t half = (static_cast<uint32_t>(e) << 10) | (man >> 13),
           rest = man & 0x1fff;
  if (rest > 0x1000 || (rest == 0x1000 && (half & 1)))
    ++half; // a carry into the exponent rounds up to the next power (or inf)
  return static_cast<uint16_t>(sign | half);
}

std::string exportProblem(const ModelSpec &spec,
                          const ExportOptions &options) {
  const char *format = options.format == ExportFormat::GGUF
                           ? "a GGUF llama model"
                           : "a transformers Llama model";
  if (spec.embedder.kind != EmbedderKind::Token ||
      spec.head.kind != HeadKind::Token)
    return "'" + spec.name + "' is a byte-pool model; " + format +
           " embeds tokens and predicts tokens (export token models)";
  if (spec.core.ffn != Ffn::SwiGLU)
    return "'" + spec.name + "' has GELU FFNs; " + format +
           " has SwiGLU FFNs only";
  if (spec.tying.loraRank > 0 && !options.mergeLora)
    return "'" + spec.name + "' shares layers with LoRA deltas (lora_rank " +
           std::to_string(spec.tying.loraRank) + "), which " + format +
           " cannot hold; --merge-lora writes each layer's merged weights "
           "(shared + b·a)";
  if (options.format == ExportFormat::GGUF && spec.embedder.vocabSize != 256)
    return "the GGUF export writes a byte vocabulary (256 tokens); '" +
           spec.name + "' has a vocabulary of " +
           std::to_string(spec.embedder.vocabSize);
  return "";
}

bool exportCheckpoint(const ModelSpec &spec, const SafeTensorsFile &weights,
                      const ExportOptions &options, std::string &summary,
                      std::string &error) {
  std::string problem = exportProblem(spec, options);
  if (!problem.empty()) {
    error = problem;
    return false;
  }
  std::vector<Dense> tensors;
  if (!llamaTensors(spec, weights, tensors, error))
    return false;
  return options.format == ExportFormat::GGUF
             ? writeGguf(spec, tensors, options, summary, error)
             : writeHf(spec, tensors, options, summary, error);
}

} // namespace stlm
