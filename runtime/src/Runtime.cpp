//===- Runtime.cpp - the C API of compiled stlm models --------------------===//
//
// A model is its artifact (entry points and manifest), a 64-byte aligned
// weights blob laid out by the manifest, an arena, and aligned staging
// buffers for the token batches. Halide reports kernel errors through a
// process-wide handler; it is pointed at a thread-local message that the
// failing call copies into its model.
//
//===----------------------------------------------------------------------===//

#include "stlm/stlm.h"
#include "stlm/artifact_format.h"

#include "support/QuantTiles.h"
#include "support/SafeTensors.h"
#include "support/Sampling.h"
#include "support/Version.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <dlfcn.h>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <set>
#include <string>
#include <sys/mman.h>
#include <thread>
#include <unistd.h>
#include <vector>

namespace {

namespace format = stlm::format;
namespace key = stlm::format::key;

/// The last Halide error message of this thread.
thread_local std::string halideMessage;

extern "C" void stlmHalideError(void *, const char *msg) {
  halideMessage = msg ? msg : "unknown Halide error";
  while (!halideMessage.empty() && halideMessage.back() == '\n')
    halideMessage.pop_back();
}

/// Kernel scratch: Halide frees a kernel's temporaries at the end of each
/// call and the next call asks for the same sizes again, so freed blocks
/// are kept and handed out again, and a generation step calls the C heap
/// for none. Blocks over kSmallMax wait in one list (up to kMaxCached bytes
/// in all), best fit; smaller ones (kernels allocate them from every worker
/// thread, in any thread the pool picks) in one list per power-of-two size
/// (up to kSmallCached bytes in all), each under its own lock, so a block
/// freed on one thread serves the next call on any; a list found empty is
/// filled with a few blocks for each hardware thread. Each block starts with
/// a header holding its size. Shared by every open model (Halide's
/// allocator hook is process-wide), emptied when the last one closes.
class ScratchCache {
public:
  static ScratchCache &get() {
    static ScratchCache cache;
    return cache;
  }
  void *allocate(size_t size) {
    size = (size + kAlign - 1) / kAlign * kAlign;
    if (size <= kSmallMax) {
      Small &small = smalls[sizeClass(size)];
      size = small.size;
      std::lock_guard<std::mutex> lock(small.mutex);
      if (small.blocks.empty()) {
        // A size asked for first, or by more threads at once than ever:
        // blocks for every thread of a parallel loop (a few each), so
        // that later calls find them whatever the threads' timing.
        size_t more = std::min<size_t>(
            {kSmallBlocks, 4 * refillThreads, std::max(kRefill / size, 1ul)});
        while (small.blocks.size() < more &&
               smallCached + size <= kSmallCached) {
          auto *extra =
              static_cast<char *>(std::aligned_alloc(kAlign, size + kAlign));
          if (!extra)
            break;
          *reinterpret_cast<size_t *>(extra) = size;
          small.blocks.push_back(extra);
          smallCached += size;
        }
      }
      if (!small.blocks.empty()) {
        char *base = small.blocks.back();
        small.blocks.pop_back();
        smallCached -= size;
        return base + kAlign;
      }
    } else {
      std::lock_guard<std::mutex> lock(mutex);
      // The smallest free block that fits without wasting half of it.
      auto best = free.end();
      for (auto it = free.begin(); it != free.end(); ++it)
        if (it->second >= size && it->second <= 2 * size &&
            (best == free.end() || it->second < best->second))
          best = it;
      if (best != free.end()) {
        char *base = best->first;
        cached -= best->second;
        free.erase(best);
        return base + kAlign;
      }
    }
    char *base = static_cast<char *>(std::aligned_alloc(kAlign, size + kAlign));
    if (!base)
      return nullptr;
    *reinterpret_cast<size_t *>(base) = size;
    return base + kAlign;
  }
  void release(void *p) {
    if (!p)
      return;
    char *base = static_cast<char *>(p) - kAlign;
    size_t size = *reinterpret_cast<size_t *>(base);
    if (size <= kSmallMax) {
      Small &small = smalls[sizeClass(size)];
      std::lock_guard<std::mutex> lock(small.mutex);
      // Room reserved at start: the push allocates nothing.
      if (small.blocks.size() < small.blocks.capacity() &&
          smallCached + size <= kSmallCached) {
        small.blocks.push_back(base);
        smallCached += size;
        return;
      }
    } else {
      std::lock_guard<std::mutex> lock(mutex);
      if (cached + size <= kMaxCached) {
        free.push_back({base, size});
        cached += size;
        return;
      }
    }
    std::free(base);
  }
  void opened() {
    std::lock_guard<std::mutex> lock(mutex);
    ++models;
  }
  void closed() {
    std::lock_guard<std::mutex> lock(mutex);
    if (--models > 0)
      return;
    for (auto &[base, size] : free)
      std::free(base);
    free.clear();
    cached = 0;
    for (Small &small : smalls) {
      std::lock_guard<std::mutex> smallLock(small.mutex);
      for (char *base : small.blocks)
        std::free(base);
      smallCached -= small.size * small.blocks.size();
      small.blocks.clear();
    }
  }

private:
  static constexpr size_t kAlign = 128; // >= halide_malloc_alignment()
  static constexpr int kClasses = 11;   // kAlign << 0 ... kAlign << 10
  static constexpr size_t kSmallMax = kAlign << (kClasses - 1); // 128 KiB
  static constexpr size_t kSmallBlocks = 1024; // a size's list at most
  static constexpr size_t kSmallCached = size_t(64) << 20;
  static constexpr size_t kRefill = size_t(4) << 20; // bytes a refill at most
  static constexpr size_t kMaxCached = size_t(1) << 30;

  /// Freed blocks of one power-of-two size.
  struct Small {
    std::mutex mutex;
    size_t size = 0;
    std::vector<char *> blocks;
  };
  ScratchCache() {
    refillThreads = std::max(1u, std::thread::hardware_concurrency());
    for (int cls = 0; cls < kClasses; ++cls) {
      smalls[cls].size = kAlign << cls;
      smalls[cls].blocks.reserve(kSmallBlocks);
    }
  }
  /// The smallest class of at least `size` bytes (a multiple of kAlign,
  /// at most kSmallMax).
  static int sizeClass(size_t size) {
    int cls = 0;
    while ((kAlign << cls) < size)
      ++cls;
    return cls;
  }

  std::mutex mutex;
  std::vector<std::pair<char *, size_t>> free; // (block, payload size)
  size_t cached = 0;
  int64_t models = 0;
  Small smalls[kClasses];
  std::atomic<size_t> smallCached{0};
  size_t refillThreads = 1; // the machine's hardware threads
};

extern "C" void *stlmHalideMalloc(void *, size_t size) {
  return ScratchCache::get().allocate(size);
}
extern "C" void stlmHalideFree(void *, void *p) {
  ScratchCache::get().release(p);
}

struct Slot {
  std::vector<int64_t> shape;
  int64_t offset = 0;
  int64_t gradOffset = -1;
  stlm::DType dtype = stlm::DType::F32; // F32, I32, or I8 / U8 (quantized)
  bool isInt = false;                   // not F32
  // A quantized weight or its scales in the kernels' tiles
  // (support/QuantTiles.h), arranged so when loaded.
  bool tiles = false;
  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : shape)
      n *= d;
    return n;
  }
};

struct AlignedFree {
  void operator()(void *p) const { std::free(p); }
};
using Aligned = std::unique_ptr<void, AlignedFree>;

/// Buffers of kHugeMin bytes or more (the arena, the weights) sit on
/// 2 MiB pages where the kernel offers them (transparent huge pages, asked
/// for with madvise): a training step streams its whole arena, and on
/// 4 KiB pages its kernels walk the page tables for every 4 KiB.
constexpr size_t kHugePage = size_t(2) << 20, kHugeMin = 2 * kHugePage;

Aligned allocate(size_t bytes) {
  size_t align = bytes >= kHugeMin ? kHugePage : stlm::format::kAlignment;
  size_t rounded = (bytes + align - 1) / align * align;
  void *p = std::aligned_alloc(align, rounded == 0 ? align : rounded);
#ifdef MADV_HUGEPAGE
  if (p && align == kHugePage)
    madvise(p, rounded, MADV_HUGEPAGE); // advice only: 4 KiB pages if refused
#endif
  return Aligned(p);
}

/// "int8, group 32" of a quantization, {"scheme": "int8" | "int4",
/// "group": N > 0} (a manifest's, or a checkpoint's stlm_quantization);
/// "" when it is not one. An object without those keys throws.
std::string describeQuantization(const nlohmann::json &q) {
  if (!q.is_object() || !q.at(key::kScheme).is_string() ||
      !q.at(key::kGroup).is_number_integer())
    return "";
  std::string scheme = q.at(key::kScheme).get<std::string>();
  int64_t group = q.at(key::kGroup).get<int64_t>();
  if ((scheme != "int8" && scheme != "int4") || group < 1)
    return "";
  return scheme + ", group " + std::to_string(group);
}

} // namespace

/// `sampling` (null: greedy) as the sampler's options and seed; why they
/// are not valid, or "".
static std::string samplingFrom(const stlm_sampling *sampling,
                                stlm::sampling::SamplingOptions &options,
                                uint64_t &seed) {
  options = {};
  options.temperature = 0;
  seed = 0;
  if (sampling) {
    options.temperature = sampling->temperature;
    options.topK = sampling->top_k;
    options.topP = sampling->top_p;
    seed = sampling->seed;
  }
  return stlm::sampling::validate(options);
}

/// The weights blob's step counter (I32 []), a state slot.
static const char *const kStepName = "step";
/// The states holding a distilling model's teacher (frontend/Spec.h's
/// kTeacherPrefix, which stlm-compile names them with).
static const char *const kTeacherPrefix = "teacher.";

struct stlm_model {
  std::string error;
  const stlm_artifact *artifact = nullptr;
  void *library = nullptr;
  std::string name, specJson;
  int64_t batch = 0, context = 0, vocab = 0, accumulate = 1, weightsSize = 0,
          arenaSize = 0;
  bool usesSeed = false; // a masked objective: the batch functions read it
  bool split = false;    // the step is accumulate + apply (no train_step)
  bool chunked = false;  // a byte-pool model: the batch is [batch, context]
                         // bytes, no targets; logits per chunk slot
  bool chunkStarts = false; // 'given' chunking: a byte + 512 opens a chunk
  int64_t chunks = 0, chunkSlots = 0; // a byte-pool model's [C, L]
  bool chunkRuleKnown = false;        // the manifest says how it chunks
  stlm::sampling::ChunkRule chunkRule = stlm::sampling::ChunkRule::Words;
  int64_t chunkStride = 0;
  int64_t logitsCount = 0; // floats stlm_logits writes
  int64_t decodeBatch = 0; // sequences of prefill_batch and decode_batch
  int64_t objectives = 0;  // objectives' own losses @eval writes after it
  // A quantized artifact's format ({"scheme", "group"} as JSON; "" for a
  // float one): it infers only, from checkpoints quantized alike.
  std::string quantization;
  bool quantInt4 = false;
  int64_t quantGroup = 0;
  // Data-parallel training (stlm_set_allreduce): the hook that sums the
  // gradient sums and loss_acc over the ranks, and the blob's range that
  // holds them (bytes [reduceBegin, reduceEnd); loss_acc at lossOffset).
  stlm_allreduce_fn allreduce = nullptr;
  void *allreduceUser = nullptr;
  int32_t ranks = 1;
  int64_t reduceBegin = 0, reduceEnd = 0, lossOffset = -1;
  // Byte ranges of the KV caches, which the reduced range must not touch.
  std::vector<std::pair<int64_t, int64_t>> cacheRanges;
  std::map<std::string, Slot> slots; // params and state
  std::vector<std::string> params;   // declaration order
  // A distilling model's teacher: the states holding its weights
  // (kTeacherPrefix + the teacher's name), and those written since the
  // model opened (training needs them all).
  std::vector<std::string> teacher;
  std::set<std::string> teacherWritten;
  Aligned weights, arena, tokens, targets;
  Aligned step; // generation's token and position (int32 each)
  // Batched generation's windows [decodeBatch, context] and its tokens
  // [decodeBatch] with the position on the next 64-byte line.
  Aligned batchTokens, batchStep;
  Aligned batchLogits; // [decodeBatch, context, vocab] floats
  std::map<std::string, std::string> metadata;
  bool cacheUser = false; // counted in ScratchCache's open models
  // A device artifact (stlm_device): its context owns the weights blob
  // and arena on the device; `weights` here is the host's copy of the
  // blob, kept in step lazily: a host write marks the device behind (the
  // next compute call uploads the blob), a compute call that changes the
  // weights marks the host behind (the next host read downloads it).
  void *device = nullptr;
  bool deviceBehind = true, hostBehind = false;

  ~stlm_model() {
    if (device)
      artifact->device->close(device);
  }
  /// The host blob brought up to date before a host read or write.
  stlm_status pull() {
    if (!device || !hostBehind)
      return STLM_OK;
    if (artifact->device->copy(device, 0, 0, weights.get(), weightsSize, 0))
      return fail(STLM_ERROR_DEVICE,
                  std::string("cannot read the weights from the device: ") +
                      artifact->device->message(device));
    hostBehind = false;
    return STLM_OK;
  }
  /// The device blob brought up to date before a compute call.
  stlm_status push() {
    if (!device || !deviceBehind)
      return STLM_OK;
    if (stlm_status s = pull(); s != STLM_OK)
      return s;
    if (artifact->device->copy(device, 0, 0, weights.get(), weightsSize, 1))
      return fail(STLM_ERROR_DEVICE,
                  std::string("cannot copy the weights to the device: ") +
                      artifact->device->message(device));
    deviceBehind = false;
    return STLM_OK;
  }
  /// After a host write into the blob.
  void wrote() { deviceBehind = device != nullptr; }
  /// STLM_ERROR_ARGUMENT for `what` (a training call) on a quantized
  /// model, which infers only.
  stlm_status refuseQuantized(const std::string &what) {
    return fail(STLM_ERROR_ARGUMENT,
                what + ": '" + name + "' is quantized (" + quantization +
                    ") and infers only; train the float model and quantize "
                    "its checkpoint (stlm-run quantize)");
  }
  /// The entry points' `weights` and `arena` arguments.
  void *weightsArg() const { return device ? device : weights.get(); }
  void *arenaArg() const { return device ? nullptr : arena.get(); }

  stlm_status fail(stlm_status s, std::string msg) {
    error = std::move(msg);
    return s;
  }
  stlm_status ok() {
    error.clear();
    return STLM_OK;
  }
  uint8_t *at(int64_t offset) const {
    return static_cast<uint8_t *>(weights.get()) + offset;
  }
  const Slot *find(const std::string &n) const {
    auto it = slots.find(n);
    return it == slots.end() ? nullptr : &it->second;
  }
  /// A float tensor by API name: a slot, or `grad.<param>` (sets `grad`).
  const Slot *floatTensor(const std::string &n, bool &grad) const {
    grad = n.rfind("grad.", 0) == 0;
    const Slot *s = find(grad ? n.substr(5) : n);
    if (!s || s->isInt || (grad && s->gradOffset < 0))
      return nullptr;
    return s;
  }
  stlm_status init(const stlm_artifact *a);
  /// OK for 0, else the error of a driver's status `rc`.
  stlm_status kernelStatus(int32_t rc, const char *what);
  /// Logits after the token history `h` (its window `w`): a prefill of
  /// the window when `refill`, else one decode step. Points `row` at the
  /// last position's logits.
  /// A byte-pool model's `h` is chunks of `slots` ids, `start` counts
  /// chunks, and `row` points at the last chunk's [slots, vocab] logits.
  stlm_status nextLogits(const std::vector<int32_t> &h, size_t start,
                         bool refill, std::vector<float> &buffer,
                         const float *&row);
  /// A token model's window of at most this many tokens is filled by
  /// decode steps, not a prefill of the whole context (on the CPU, where
  /// a prefill row cost a quarter to a tenth of a decode step: stlm-10m,
  /// stlm-100m; up to context / 16 ids the steps are cheaper).
  size_t shortWindow() const {
    return static_cast<size_t>(std::max<int64_t>(1, context / 16));
  }
  /// Whether a window of `len` tokens is filled by decode steps
  /// (shortWindow(); token models on the CPU), by stlm_generate and by
  /// stlm_generate_batch alike.
  bool fillsByDecodeSteps(size_t len) const {
    return !chunked && !device && len <= shortWindow();
  }
  /// stlm_generate for a byte-pool model (a chunk at a time).
  /// "token X at I is outside the vocabulary of V" for the first token of
  /// `prompt` (n ids) that is not a token id, or "".
  std::string promptProblem(const int32_t *prompt, size_t n) const {
    for (size_t i = 0; i < n; ++i)
      if (prompt[i] < 0 || prompt[i] >= vocab)
        return "token " + std::to_string(prompt[i]) + " at " +
               std::to_string(i) + " is outside the vocabulary of " +
               std::to_string(vocab);
    return "";
  }
  /// One group of stlm_generate_batch: sequences `first` ... `first + n
  /// - 1` of `prompts` (n <= decodeBatch) in lockstep.
  stlm_status generateGroup(const int32_t *const *prompts, const size_t *lens,
                            size_t first, size_t n, size_t maxTokens,
                            const stlm::sampling::SamplingOptions &options,
                            uint64_t seed, stlm_batch_token_fn onToken,
                            void *user, size_t *generated);
  stlm_status generateChunks(const int32_t *prompt, size_t promptLen,
                             size_t maxBytes,
                             const stlm::sampling::SamplingOptions &options,
                             uint64_t state, stlm_token_fn onToken, void *user,
                             size_t *generated);
  stlm_status run(int32_t (*fn)(void *, void *, const int32_t *,
                                const int32_t *, const int32_t *, float *),
                  const int32_t *tok, const int32_t *tgt, int32_t seed,
                  float *out, const char *what);
  stlm_status trainStep(const int32_t *tokens, const int32_t *targets,
                        const int32_t *seeds, stlm_step_result *out);
  /// The gradient sums and loss_acc summed over the ranks by the hook,
  /// then scaled by 1 / ranks; `loss` is the local loss sum in, the mean
  /// over every rank's micro-batches out.
  stlm_status reduceAcrossRanks(float &loss);
  /// Where the gradient sums and loss_acc lie; false (with the error set)
  /// when they are not one range the hook can take.
  bool findReducedRange();
  /// STLM_ERROR_ARGUMENT when an id of tokens or targets (one batch;
  /// targets may be null) is outside [0, vocab).
  stlm_status checkBatch(const int32_t *tok, const int32_t *tgt,
                         const char *what);
};

/// The most objectives a manifest may give (@eval's results after the loss).
constexpr int64_t kMaxObjectives = 64;

stlm_status stlm_model::init(const stlm_artifact *a) {
  if (!a)
    return fail(STLM_ERROR_ARGUMENT, "stlm_open: the artifact is null");
  if (a->abi_version != format::kAbiVersion)
    return fail(STLM_ERROR_FORMAT,
                "the artifact has ABI version " +
                    std::to_string(a->abi_version) + "; this runtime reads " +
                    std::to_string(STLM_ABI_VERSION) +
                    " (recompile it with this stlm-compile)");
  if (!a->manifest || !a->eval || !a->logits || !a->set_error_handler ||
      !a->set_num_threads || !a->set_custom_malloc || !a->set_custom_free)
    return fail(STLM_ERROR_FORMAT, "the artifact lacks entry points");
  artifact = a;
  try {
    nlohmann::json m = nlohmann::json::parse(a->manifest);
    if (m.at(key::kFormat) != format::kFormatName ||
        m.at(key::kVersion) != format::kManifestVersion)
      return fail(STLM_ERROR_FORMAT,
                  std::string("the artifact's manifest is not an ") +
                      format::kFormatName + " version " +
                      std::to_string(format::kManifestVersion) + " manifest");
    // A quantized artifact has no training entry points; any other has
    // @grad and a step.
    if (m.contains(key::kQuantization)) {
      quantization = describeQuantization(m.at(key::kQuantization));
      if (quantization.empty())
        return fail(STLM_ERROR_FORMAT,
                    "the artifact's manifest has a bad quantization");
      quantInt4 = m.at(key::kQuantization).at(key::kScheme) == "int4";
      quantGroup = m.at(key::kQuantization).at(key::kGroup).get<int64_t>();
    }
    bool trains = a->grad && (a->train_step || (a->accumulate && a->apply));
    bool none = !a->grad && !a->train_step && !a->accumulate && !a->apply;
    if (quantization.empty() ? !trains : !none)
      return fail(STLM_ERROR_FORMAT,
                  quantization.empty()
                      ? "the artifact lacks entry points"
                      : "the artifact is quantized but has training entry "
                        "points");
    vocab = m.at(key::kVocab).get<int64_t>();
    accumulate = m.at(key::kAccumulate).get<int64_t>();
    // Older manifests have no split_step: the step was split exactly when
    // it accumulated.
    split = m.contains(key::kSplitStep) ? m.at(key::kSplitStep).get<bool>()
                                        : accumulate > 1;
    if (accumulate < 1 || (accumulate > 1 && !split) ||
        (quantization.empty() && (split != (a->train_step == nullptr) ||
                                  (split && !(a->accumulate && a->apply)))))
      return fail(STLM_ERROR_FORMAT, "the artifact's manifest does not match "
                                     "its training entry points");
    name = m.at(key::kModel).get<std::string>();
    specJson = m.at(key::kSpec).get<std::string>();
    weightsSize = m.at(key::kWeightsSize).get<int64_t>();
    arenaSize = m.at(key::kArenaSize).get<int64_t>();
    // Tokens and targets [batch, context], then the mask seed [] of a
    // masked objective; or the bytes [batch, context] of a byte-pool model.
    const auto &inputs = m.at(key::kInputs);
    chunked = m.contains(key::kChunks);
    if (m.contains(key::kChunkStarts)) {
      const auto &v = m.at(key::kChunkStarts);
      if (!v.is_boolean() || (v.get<bool>() && !chunked))
        return fail(STLM_ERROR_FORMAT,
                    "the artifact's manifest has a bad chunk_starts");
      chunkStarts = v.get<bool>();
    }
    if (chunked ? inputs.size() != 1 || inputs[0].size() != 2
                : inputs.size() < 2 || inputs.size() > 3 ||
                      inputs[0].size() != 2 || inputs[1] != inputs[0] ||
                      (inputs.size() == 3 && !inputs[2].empty()))
      return fail(STLM_ERROR_FORMAT,
                  chunked ? "the artifact's inputs are not the [batch, "
                            "context] bytes of a byte-pool model"
                          : "the artifact's inputs are not [batch, context] "
                            "tokens and targets (and a mask seed)");
    usesSeed = inputs.size() == 3;
    if (m.contains(key::kObjectives)) {
      objectives = m.at(key::kObjectives).get<int64_t>();
      if (objectives < 1 || objectives > kMaxObjectives)
        return fail(STLM_ERROR_FORMAT, "the artifact's manifest gives " +
                                           std::to_string(objectives) +
                                           " objectives");
    }
    batch = inputs[0][0].get<int64_t>();
    context = inputs[0][1].get<int64_t>();
    // A spec's batch and context are at most 2^20 each (frontend limits).
    if (batch < 1 || context < 1 || batch > (int64_t(1) << 20) ||
        context > (int64_t(1) << 20) || batch * context > (int64_t(1) << 31))
      return fail(STLM_ERROR_FORMAT,
                  "the artifact's manifest gives a batch of " +
                      std::to_string(batch) + " windows of " +
                      std::to_string(context) +
                      " positions, outside what a spec allows");
    if (weightsSize < 0 || arenaSize < 0)
      return fail(STLM_ERROR_FORMAT,
                  "the artifact's manifest gives a negative buffer size");
    // Generation is compiled for token models; a byte-pool model's is
    // compiled by stlm-compile since it can (older ones have none).
    if (!chunked && (!a->prefill || !a->decode_step))
      return fail(STLM_ERROR_FORMAT, "the artifact lacks entry points");
    // Batched generation: both entry points and their batch, or none.
    if (m.contains(key::kDecodeBatch)) {
      const auto &v = m.at(key::kDecodeBatch);
      decodeBatch = v.is_number_integer() ? v.get<int64_t>() : -1;
      if (decodeBatch < 2 || decodeBatch > format::kMaxDecodeBatch || chunked)
        return fail(STLM_ERROR_FORMAT,
                    "the artifact's manifest has a bad decode_batch");
    }
    bool batched = a->prefill_batch || a->decode_batch;
    if ((decodeBatch > 0) != batched ||
        (batched && !(a->prefill_batch && a->decode_batch)))
      return fail(STLM_ERROR_FORMAT,
                  "the artifact's batched generation entry points do not "
                  "match its manifest's decode_batch");
    if (vocab < 1 || vocab > (int64_t(1) << 24))
      return fail(STLM_ERROR_FORMAT, "the artifact's manifest gives a "
                                     "vocabulary of " +
                                         std::to_string(vocab));
    logitsCount = batch * context * vocab;
    if (chunked) {
      // Logits [batch, chunks, chunk_bytes, vocab].
      const auto &shape = m.at(key::kChunks);
      chunks = shape.size() == 2 ? shape[0].get<int64_t>() : 0;
      chunkSlots = shape.size() == 2 ? shape[1].get<int64_t>() : 0;
      if (chunks < 1 || chunkSlots < 1 || chunks > context || chunkSlots > 4096)
        return fail(STLM_ERROR_FORMAT,
                    "the artifact's manifest gives " + std::to_string(chunks) +
                        " chunks of " + std::to_string(chunkSlots) + " bytes");
      logitsCount = batch * chunks * chunkSlots * vocab;
      if (m.contains(key::kChunking)) {
        const auto &c = m.at(key::kChunking);
        std::string mode =
            c.contains(key::kMode) && c.at(key::kMode).is_string()
                ? c.at(key::kMode).get<std::string>()
                : "";
        using stlm::sampling::ChunkRule;
        chunkRule = mode == "fixed"   ? ChunkRule::Fixed
                    : mode == "given" ? ChunkRule::Given
                                      : ChunkRule::Words;
        chunkStride =
            c.contains(key::kStride) && c.at(key::kStride).is_number_integer()
                ? c.at(key::kStride).get<int64_t>()
                : 0;
        if ((mode != "fixed" && mode != "words" && mode != "given") ||
            (mode == "given") != chunkStarts ||
            (mode == "fixed") !=
                (chunkStride >= 1 && chunkStride <= chunkSlots))
          return fail(STLM_ERROR_FORMAT,
                      "the artifact's manifest has a bad chunking");
        chunkRuleKnown = true;
      }
    }
    for (const char *section : {key::kParams, key::kState})
      for (const auto &p : m.at(section)) {
        Slot s;
        s.shape = p.at(key::kShape).get<std::vector<int64_t>>();
        s.offset = p.at(key::kOffset).get<int64_t>();
        std::string dtype = p.at(key::kDType).get<std::string>();
        bool quantizedWeight = !quantization.empty() &&
                               std::string(section) == key::kParams &&
                               (dtype == "I8" || dtype == "U8");
        if (dtype != "F32" && dtype != "I32" && !quantizedWeight)
          return fail(STLM_ERROR_FORMAT,
                      "the artifact's manifest gives '" +
                          p.at(key::kName).get<std::string>() + "' the dtype " +
                          dtype);
        s.dtype = *stlm::parseDType(dtype);
        s.isInt = s.dtype != stlm::DType::F32;
        int64_t elem = static_cast<int64_t>(stlm::dtypeSize(s.dtype));
        if (p.contains(key::kGradOffset))
          s.gradOffset = p.at(key::kGradOffset).get<int64_t>();
        // Each bound is checked without overflow: dimensions, element
        // count (at most 2^40) and offsets come from the file.
        int64_t count = 1;
        bool shapeOk = true;
        for (int64_t d : s.shape)
          shapeOk = shapeOk && d >= 0 &&
                    !__builtin_mul_overflow(count, d, &count) &&
                    count <= (int64_t(1) << 40);
        if (!shapeOk || s.offset < 0 || s.offset > weightsSize ||
            elem * count > weightsSize - s.offset || s.gradOffset < -1 ||
            (s.gradOffset >= 0 && (s.gradOffset > arenaSize ||
                                   4 * count > arenaSize - s.gradOffset)))
          return fail(STLM_ERROR_FORMAT, "the artifact's manifest places '" +
                                             p.at(key::kName).get<std::string>() +
                                             "' outside its buffers");
        std::string n = p.at(key::kName).get<std::string>();
        if (p.contains(key::kLayout)) {
          // Tiles: a quantized weight whose shape tiles, or the scales
          // [out, groups] of one (whole blocks of outputs).
          const auto &l = p.at(key::kLayout);
          bool weight = quantizedWeight && (dtype == "U8") == quantInt4 &&
                        s.shape.size() == 2;
          bool ok = l.is_string() &&
                    l.get<std::string>() == stlm::quant::kTilesLayout &&
                    (weight ? stlm::quant::tilesFor(quantInt4, s.shape[0],
                                                    stlm::quant::weightInputs(
                                                        quantInt4, s.shape[1]),
                                                    quantGroup)
                            : !quantization.empty() && dtype == "F32" &&
                                  std::string(section) == key::kParams &&
                                  s.shape.size() == 2 && s.shape[1] > 0 &&
                                  s.shape[0] > 0 &&
                                  s.shape[0] % stlm::quant::kTileOutputs == 0);
          if (!ok)
            return fail(STLM_ERROR_FORMAT,
                        "the artifact's manifest gives '" + n +
                            "' a layout it cannot have: " + l.dump());
          s.tiles = true;
        }
        if (std::string(section) == key::kParams)
          params.push_back(n);
        else if (n.rfind(kTeacherPrefix, 0) == 0)
          teacher.push_back(n);
        slots[n] = s;
      }
    if (m.contains(key::kCache))
      for (const auto &c : m.at(key::kCache)) {
        int64_t count = 1;
        for (int64_t d : c.at(key::kShape).get<std::vector<int64_t>>())
          if (d < 0 || __builtin_mul_overflow(count, d, &count) ||
              count > (int64_t(1) << 40))
            return fail(STLM_ERROR_FORMAT,
                        "the artifact's manifest gives a cache of a bad "
                        "shape");
        int64_t at = c.at(key::kOffset).get<int64_t>();
        cacheRanges.push_back({at, at + 4 * count});
      }
    // Tiles come in pairs: a tiled weight W and its scales W.scale,
    // [out, in / group], and no other float tensor.
    const std::string kScale = ".scale";
    for (const auto &[n, s] : slots) {
      if (!s.tiles)
        continue;
      bool paired;
      if (s.isInt) {
        auto sc = slots.find(n + kScale);
        int64_t in = stlm::quant::weightInputs(quantInt4, s.shape[1]);
        paired = sc != slots.end() && sc->second.tiles && !sc->second.isInt &&
                 sc->second.shape ==
                     std::vector<int64_t>{s.shape[0], in / quantGroup};
      } else {
        bool named =
            n.size() > kScale.size() &&
            n.compare(n.size() - kScale.size(), kScale.size(), kScale) == 0;
        auto w = named ? slots.find(n.substr(0, n.size() - kScale.size()))
                       : slots.end();
        paired = w != slots.end() && w->second.tiles && w->second.isInt;
      }
      if (!paired)
        return fail(STLM_ERROR_FORMAT,
                    "the artifact's manifest tiles '" + n +
                        "' without its pair (a quantized weight W and its "
                        "scales W.scale [out, in / group], both tiled)");
    }
  } catch (const std::exception &e) {
    return fail(STLM_ERROR_FORMAT,
                std::string("the artifact's manifest is corrupt: ") + e.what());
  }
  // What loading, saving and training rely on: AdamW's two moments of
  // every parameter, and the step counter (a quantized model has neither).
  for (const std::string &p :
       quantization.empty() ? params : std::vector<std::string>{})
    for (const char *prefix : {"opt.m.", "opt.v."}) {
      const Slot *m = find(prefix + p);
      if (!m || m->isInt || m->shape != slots.at(p).shape)
        return fail(STLM_ERROR_FORMAT,
                    "the artifact's manifest lacks the optimizer state '" +
                        std::string(prefix) + p + "'");
    }
  // (A quantized model may keep the counter; where there is one, it is an
  // I32 scalar, which stlm_step and stlm_set_step read and write.)
  if (const Slot *s = find(kStepName);
      s ? s->dtype != stlm::DType::I32 || !s->shape.empty()
        : quantization.empty())
    return fail(STLM_ERROR_FORMAT,
                "the artifact's manifest lacks the step counter (an I32 "
                "scalar)");
  if (a->device) {
    if (!a->device->open || !a->device->close || !a->device->copy ||
        !a->device->message || !a->device->name)
      return fail(STLM_ERROR_FORMAT, "the artifact's device table is "
                                     "incomplete");
    char why[512] = "";
    device = a->device->open(why, sizeof why);
    if (!device)
      return fail(STLM_ERROR_DEVICE,
                  "cannot open '" + name + "' on " + a->device->name + ": " +
                      why);
  }
  weights = allocate(weightsSize);
  // A device artifact's arena is on the device only.
  arena = allocate(device ? 0 : arenaSize);
  // Generation stages a window of chunks in `tokens`, and a chunk and its
  // position (each on its own 64-byte lines) in `step`.
  tokens = allocate(std::max(batch * context, chunks * chunkSlots) * 4);
  targets = allocate(batch * context * 4);
  step = allocate(std::max<int64_t>(128, ((chunkSlots + 15) / 16 + 1) * 64));
  if (decodeBatch > 0) {
    batchTokens = allocate(decodeBatch * context * 4);
    batchStep = allocate(((decodeBatch + 15) / 16 + 1) * 64);
    batchLogits = allocate(decodeBatch * context * vocab * 4);
  }
  if (!weights || !arena || !tokens || !targets || !step ||
      (decodeBatch > 0 && (!batchTokens || !batchStep || !batchLogits)))
    return fail(STLM_ERROR_MEMORY, "cannot allocate " +
                                       std::to_string(weightsSize + arenaSize) +
                                       " bytes for '" + name + "'");
  std::memset(weights.get(), 0, weightsSize);
  a->set_error_handler(reinterpret_cast<void *>(&stlmHalideError));
  a->set_custom_malloc(reinterpret_cast<void *>(&stlmHalideMalloc));
  a->set_custom_free(reinterpret_cast<void *>(&stlmHalideFree));
  ScratchCache::get().opened();
  cacheUser = true;
  return ok();
}

stlm_status stlm_model::kernelStatus(int32_t rc, const char *what) {
  if (rc == 0)
    return ok();
  if (device && rc == -1)
    return fail(STLM_ERROR_DEVICE,
                std::string(what) + ": " + artifact->device->name +
                    " failed: " + artifact->device->message(device));
  if (rc == format::kPositionOutOfRange)
    return fail(STLM_ERROR_ARGUMENT,
                std::string(what) + ": the position is outside the KV cache");
  return fail(STLM_ERROR_KERNEL,
              std::string(what) + ": a kernel failed (Halide error " +
                  std::to_string(rc) + ")" +
                  (halideMessage.empty() ? "" : ": " + halideMessage));
}

stlm_status stlm_model::run(int32_t (*fn)(void *, void *, const int32_t *,
                                          const int32_t *, const int32_t *,
                                          float *),
                            const int32_t *tok, const int32_t *tgt,
                            int32_t seed, float *out, const char *what) {
  if (!tok || (!tgt && !chunked) || !out)
    return fail(STLM_ERROR_ARGUMENT,
                std::string(what) + ": tokens, targets and the result must "
                                    "not be null");
  if (chunked)
    tgt = nullptr; // a byte-pool model has no targets: they are ignored
  if (stlm_status s = checkBatch(tok, tgt, what); s != STLM_OK)
    return s;
  if (!std::all_of(teacher.begin(), teacher.end(), [&](const std::string &n) {
        return teacherWritten.count(n) != 0;
      }))
    return fail(STLM_ERROR_ARGUMENT,
                std::string(what) + ": '" + name +
                    "' learns from a teacher whose weights are not loaded "
                    "(stlm_load_teacher)");
  size_t bytes = static_cast<size_t>(batch * context) * 4;
  std::memcpy(tokens.get(), tok, bytes);
  if (tgt)
    std::memcpy(targets.get(), tgt, bytes);
  if (stlm_status s = push(); s != STLM_OK)
    return s;
  halideMessage.clear();
  stlm_status s = kernelStatus(
      fn(weightsArg(), arenaArg(), static_cast<const int32_t *>(tokens.get()),
         static_cast<const int32_t *>(targets.get()), &seed, out),
      what);
  // Training changes the weights (the step, and accumulation's sums).
  if (device && (fn == artifact->train_step || fn == artifact->accumulate))
    hostBehind = true;
  return s;
}

stlm_status stlm_model::checkBatch(const int32_t *tok, const int32_t *tgt,
                                   const char *what) {
  // The kernels clamp ids into the table for memory safety; an id outside
  // it is the caller's error, reported here.
  int64_t n = batch * context;
  if (chunked) {
    for (int64_t i = 0; i < n; ++i) {
      int32_t v = tok[i];
      bool start =
          chunkStarts && v >= STLM_CHUNK_START && v < STLM_CHUNK_START + 256;
      if (!start && (v < 0 || v > 256))
        return fail(STLM_ERROR_ARGUMENT,
                    std::string(what) + ": " + std::to_string(v) +
                        " at position " + std::to_string(i) +
                        " is not a byte (a byte-pool model reads 0-255, " +
                        (chunkStarts ? "512-767 for a byte that opens a "
                                       "chunk, "
                                     : "") +
                        "and 256 where a row's text ends)");
    }
    return STLM_OK;
  }
  for (const auto &[ids, kind] : {std::pair{tok, "token"}, {tgt, "target"}})
    for (int64_t i = 0; ids && i < n; ++i)
      if (ids[i] < 0 || ids[i] >= vocab)
        return fail(STLM_ERROR_ARGUMENT,
                    std::string(what) + ": " + kind + " " +
                        std::to_string(ids[i]) + " at position " +
                        std::to_string(i) + " is outside the vocabulary of " +
                        std::to_string(vocab));
  return STLM_OK;
}

stlm_status stlm_model::trainStep(const int32_t *tok, const int32_t *tgt,
                                  const int32_t *seeds,
                                  stlm_step_result *out) {
  if (!out)
    return fail(STLM_ERROR_ARGUMENT, "stlm_train_step: null result");
  if (!quantization.empty())
    return refuseQuantized("stlm_train_step");
  float r[3];
  if (!split) {
    stlm_status s = run(artifact->train_step, tok, tgt, seeds ? seeds[0] : 0,
                        r, "train step");
    if (s != STLM_OK)
      return s;
  } else {
    // k micro-batches into the gradient sums, then the update.
    size_t rows = static_cast<size_t>(batch * context);
    if (!tok || (!tgt && !chunked))
      return fail(STLM_ERROR_ARGUMENT,
                  "train step: tokens and targets must not be null");
    if (chunked)
      tgt = nullptr;
    // Every micro-batch's ids are checked before any is summed, so a bad
    // one leaves the gradient sums as they were.
    for (int64_t i = 0; i < accumulate; ++i)
      if (stlm_status s = checkBatch(tok + i * rows,
                                     tgt ? tgt + i * rows : nullptr,
                                     "train step");
          s != STLM_OK)
        return s;
    r[0] = 0;
    float lossSum = 0;
    for (int64_t i = 0; i < accumulate; ++i) {
      float loss = 0;
      stlm_status s = run(artifact->accumulate, tok + i * rows,
                          tgt ? tgt + i * rows : nullptr,
                          seeds ? seeds[i] : 0, &loss,
                          "train step (accumulate)");
      if (s != STLM_OK)
        return s;
      r[0] += loss / static_cast<float>(accumulate);
      lossSum += loss;
    }
    if (allreduce) {
      if (stlm_status s = reduceAcrossRanks(lossSum); s != STLM_OK)
        return s;
      r[0] = lossSum;
    }
    halideMessage.clear();
    if (stlm_status s = push(); s != STLM_OK)
      return s;
    hostBehind = device != nullptr;
    stlm_status s = kernelStatus(
        artifact->apply(weightsArg(), arenaArg(), r + 1),
        "train step (apply)");
    if (s != STLM_OK)
      return s;
  }
  out->loss = r[0], out->grad_norm = r[1], out->lr = r[2];
  out->step = stlm_step(this);
  return STLM_OK;
}

bool stlm_model::findReducedRange() {
  int64_t begin = INT64_MAX, end = -1;
  lossOffset = -1;
  for (const auto &[n, slot] : slots)
    if (n.rfind("grad_acc.", 0) == 0 || n == "loss_acc") {
      if (slot.isInt) {
        error = "the artifact's '" + n + "' is not a float tensor";
        return false;
      }
      begin = std::min(begin, slot.offset);
      end = std::max(end, slot.offset + 4 * slot.numel());
      if (n == "loss_acc" && slot.shape.empty())
        lossOffset = slot.offset;
    }
  if (lossOffset < 0) {
    error = "'" + name + "' has no loss_acc slot: compile it again with this "
            "stlm-compile (--data-parallel)";
    return false;
  }
  // Only the sums and loss_acc (and the alignment padding between them,
  // which stays zero) may lie in the range the hook sums.
  auto overlaps = [&](int64_t b, int64_t e) { return b < end && begin < e; };
  for (const auto &[n, slot] : slots)
    if (n.rfind("grad_acc.", 0) != 0 && n != "loss_acc" &&
        overlaps(slot.offset, slot.offset + 4 * slot.numel())) {
      error = "the gradient sums of '" + name + "' are not one range of its "
              "weights blob ('" + n + "' lies between them)";
      return false;
    }
  for (const auto &[b, e] : cacheRanges)
    if (overlaps(b, e)) {
      error = "the gradient sums of '" + name + "' are not one range of its "
              "weights blob (a KV cache lies between them)";
      return false;
    }
  reduceBegin = begin;
  reduceEnd = end;
  return true;
}

stlm_status stlm_model::reduceAcrossRanks(float &loss) {
  float *data = reinterpret_cast<float *>(at(reduceBegin));
  size_t count = static_cast<size_t>((reduceEnd - reduceBegin) / 4);
  std::memcpy(at(lossOffset), &loss, 4);
  if (int rc = allreduce(data, count, allreduceUser); rc != 0) {
    // The sums start again from zero at the next step.
    std::memset(data, 0, count * 4);
    return fail(STLM_ERROR_COLLECTIVE,
                "train step: the all-reduce hook failed (it returned " +
                    std::to_string(rc) + "); no update was applied");
  }
  // Sums over the ranks -> means (exact for a power-of-two rank count).
  if (ranks > 1) {
    const float inv = 1.0f / static_cast<float>(ranks);
    for (size_t i = 0; i < count; ++i)
      data[i] *= inv;
  }
  float mean;
  std::memcpy(&mean, at(lossOffset), 4);
  loss = mean / static_cast<float>(accumulate);
  return STLM_OK;
}

namespace {
stlm_status badModel() { return STLM_ERROR_ARGUMENT; }
} // namespace

extern "C" {

namespace {
stlm_status loadCheckpoint(stlm_model *model,
                           const stlm::SafeTensorsFile *file,
                           const std::string &path);

/// init, then the artifact's embedded checkpoint when it has one.
stlm_status openArtifact(stlm_model *m, const stlm_artifact *a) {
  if (stlm_status s = m->init(a); s != STLM_OK)
    return s;
  if (!a->weights_file && a->weights_file_size == 0)
    return STLM_OK;
  std::string origin = "the checkpoint embedded in '" + m->name + "'";
  if (!a->weights_file || a->weights_file_size < 0)
    return m->fail(STLM_ERROR_FORMAT, origin + " has no bytes");
  std::string error;
  std::unique_ptr<stlm::SafeTensorsFile> file = stlm::SafeTensorsFile::view(
      a->weights_file, static_cast<size_t>(a->weights_file_size), origin,
      error);
  if (!file)
    return m->fail(STLM_ERROR_FORMAT, error);
  return loadCheckpoint(m, file.get(), origin);
}
} // namespace

const char *stlm_version(void) {
  static const std::string line =
      std::string(stlm::version()) + " (commit " + stlm::commit() + ")";
  return line.c_str();
}

stlm_status stlm_open(const stlm_artifact *artifact, stlm_model **model) {
  if (!model)
    return STLM_ERROR_ARGUMENT;
  *model = new (std::nothrow) stlm_model();
  if (!*model)
    return STLM_ERROR_MEMORY;
  return openArtifact(*model, artifact);
}

stlm_status stlm_open_library(const char *path, const char *symbol,
                              stlm_model **model) {
  if (!model)
    return STLM_ERROR_ARGUMENT;
  *model = new (std::nothrow) stlm_model();
  if (!*model)
    return STLM_ERROR_MEMORY;
  stlm_model *m = *model;
  if (!path)
    return m->fail(STLM_ERROR_ARGUMENT, "stlm_open_library: the path is null");
  std::string sym;
  if (symbol) {
    sym = symbol;
  } else {
    // lib<name>.so -> <name> with non-identifier characters as '_'.
    std::string file = path;
    size_t slash = file.find_last_of('/');
    if (slash != std::string::npos)
      file = file.substr(slash + 1);
    if (file.rfind("lib", 0) == 0)
      file = file.substr(3);
    size_t dot = file.find(".so");
    if (dot != std::string::npos)
      file = file.substr(0, dot);
    for (char &c : file)
      if (!std::isalnum(static_cast<unsigned char>(c)))
        c = '_';
    sym = file;
  }
  // The search rule (stlm.h): a path with a '/' as given; a bare file
  // name in $STLM_LIBRARY_PATH's directories, then the current directory,
  // then wherever dlopen looks.
  std::string file = path;
  std::string searched;
  if (file.find('/') == std::string::npos) {
    std::vector<std::string> dirs;
    if (const char *env = std::getenv("STLM_LIBRARY_PATH")) {
      std::string list = env;
      for (size_t at = 0; at <= list.size();) {
        size_t colon = list.find(':', at);
        if (colon == std::string::npos)
          colon = list.size();
        if (colon > at)
          dirs.push_back(list.substr(at, colon - at));
        at = colon + 1;
      }
    }
    dirs.push_back(".");
    for (const std::string &d : dirs) {
      std::string candidate = d + "/" + path;
      searched += (searched.empty() ? "" : ", ") + d;
      if (access(candidate.c_str(), F_OK) == 0) {
        file = candidate;
        break;
      }
    }
  }
  m->library = dlopen(file.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!m->library) {
    const char *why = dlerror();
    std::string msg = std::string("cannot load '") + path + "': " +
                      (why ? why : "dlopen failed");
    if (file == path && !searched.empty())
      msg += " (looked in $STLM_LIBRARY_PATH and the current directory (" +
             searched + "), then where dlopen looks)";
    return m->fail(STLM_ERROR_IO, msg);
  }
  auto *a = static_cast<const stlm_artifact *>(
      dlsym(m->library, format::descriptorSymbol(sym).c_str()));
  if (!a)
    return m->fail(STLM_ERROR_FORMAT, std::string("'") + path +
                                          "' is not an stlm artifact (no "
                                          "symbol '" +
                                          sym + "_artifact')");
  return openArtifact(m, a);
}

void stlm_close(stlm_model *model) {
  if (!model)
    return;
  void *lib = model->library;
  if (model->cacheUser)
    ScratchCache::get().closed();
  delete model;
  if (lib)
    dlclose(lib);
}

const char *stlm_error_message(const stlm_model *model) {
  return model ? model->error.c_str() : "no model (out of memory?)";
}

const char *stlm_model_name(const stlm_model *model) {
  return model ? model->name.c_str() : "";
}
int64_t stlm_batch(const stlm_model *model) { return model ? model->batch : 0; }
int64_t stlm_context(const stlm_model *model) {
  return model ? model->context : 0;
}
int64_t stlm_decode_batch(const stlm_model *model) {
  return model ? model->decodeBatch : 0;
}
int64_t stlm_vocab(const stlm_model *model) {
  return model ? model->vocab : 0;
}
int stlm_is_byte_pool(const stlm_model *model) {
  return model && model->chunked ? 1 : 0;
}
int stlm_takes_chunk_starts(const stlm_model *model) {
  return model && model->chunkStarts ? 1 : 0;
}
const char *stlm_quantization(const stlm_model *model) {
  return model && model->artifact && !model->quantization.empty()
             ? model->quantization.c_str()
             : nullptr;
}
int64_t stlm_logits_size(const stlm_model *model) {
  return model ? model->logitsCount : 0;
}
int64_t stlm_accumulate(const stlm_model *model) {
  return model ? model->accumulate : 1;
}
const char *stlm_spec_json(const stlm_model *model) {
  return model ? model->specJson.c_str() : "";
}

stlm_status stlm_set_threads(stlm_model *model, int threads) {
  if (!model || !model->artifact)
    return badModel();
  if (threads < 0)
    return model->fail(STLM_ERROR_ARGUMENT, "threads must be >= 0");
  if (threads == 0)
    threads = static_cast<int>(std::thread::hardware_concurrency());
  model->artifact->set_num_threads(threads);
  return model->ok();
}

stlm_status stlm_set_allreduce(stlm_model *model, int32_t ranks,
                               stlm_allreduce_fn allreduce, void *user) {
  if (!model || !model->artifact)
    return badModel();
  if (!allreduce) {
    model->allreduce = nullptr;
    model->allreduceUser = nullptr;
    model->ranks = 1;
    return model->ok();
  }
  if (ranks < 1)
    return model->fail(STLM_ERROR_ARGUMENT,
                       "stlm_set_allreduce: ranks must be at least 1, not " +
                           std::to_string(ranks));
  if (!model->quantization.empty())
    return model->refuseQuantized("stlm_set_allreduce");
  if (model->device)
    return model->fail(STLM_ERROR_ARGUMENT,
                       "stlm_set_allreduce: '" + model->name + "' runs on " +
                           model->artifact->device->name +
                           "; data-parallel training runs host artifacts");
  if (!model->split)
    return model->fail(STLM_ERROR_ARGUMENT,
                       "stlm_set_allreduce: '" + model->name +
                           "' was compiled with a fused train_step; "
                           "data-parallel training needs its accumulate and "
                           "apply entry points (stlm-compile --data-parallel)");
  if (!model->findReducedRange())
    return STLM_ERROR_FORMAT;
  model->allreduce = allreduce;
  model->allreduceUser = user;
  model->ranks = ranks;
  return model->ok();
}

stlm_status stlm_set_metadata(stlm_model *model, const char *key,
                              const char *value) {
  if (!model)
    return badModel();
  if (!key || !value)
    return model->fail(STLM_ERROR_ARGUMENT, "metadata key and value must "
                                            "not be null");
  model->metadata[key] = value;
  return model->ok();
}

int64_t stlm_step(const stlm_model *model) {
  if (!model || !model->artifact)
    return 0;
  const Slot *s = model->find(kStepName);
  if (!s)
    return 0;
  int32_t v;
  if (model->device && model->hostBehind) {
    // Four bytes from the device, not the whole blob: a training loop asks
    // after every step.
    if (model->artifact->device->copy(model->device, 0, s->offset, &v, 4, 0))
      return 0;
    return v;
  }
  std::memcpy(&v, model->at(s->offset), 4);
  return v;
}

stlm_status stlm_set_step(stlm_model *model, int64_t step) {
  if (!model || !model->artifact)
    return badModel();
  const Slot *s = model->find(kStepName);
  if (!s)
    return model->fail(STLM_ERROR_ARGUMENT, "the model has no step counter");
  if (step < 0 || step > INT32_MAX - 1)
    return model->fail(STLM_ERROR_ARGUMENT,
                       "step " + std::to_string(step) + " is out of range");
  int32_t v = static_cast<int32_t>(step);
  if (stlm_status st = model->pull(); st != STLM_OK)
    return st;
  std::memcpy(model->at(s->offset), &v, 4);
  model->wrote();
  return model->ok();
}

const char *stlm_param_name(const stlm_model *model, int64_t index) {
  if (!model || !model->artifact || index < 0 ||
      index >= static_cast<int64_t>(model->params.size()))
    return nullptr;
  return model->params[index].c_str();
}

int64_t stlm_tensor_size(const stlm_model *model, const char *name) {
  if (!model || !model->artifact || !name)
    return -1;
  bool grad;
  const Slot *s = model->floatTensor(name, grad);
  return s ? s->numel() : -1;
}

stlm_status stlm_read(const stlm_model *cmodel, const char *name, float *out,
                      size_t count) {
  auto *model = const_cast<stlm_model *>(cmodel);
  if (!model || !model->artifact)
    return badModel();
  if (!name || !out)
    return model->fail(STLM_ERROR_ARGUMENT, "stlm_read: null argument");
  std::string n = name;
  bool grad;
  const Slot *s = model->floatTensor(n, grad);
  if (!s)
    return model->fail(STLM_ERROR_ARGUMENT,
                       "'" + n + "' is not a float tensor of '" + model->name +
                           "'");
  if (count != static_cast<size_t>(s->numel()))
    return model->fail(STLM_ERROR_ARGUMENT,
                       "'" + n + "' has " + std::to_string(s->numel()) +
                           " elements, not " + std::to_string(count));
  if (grad && model->device) {
    if (model->artifact->device->copy(model->device, 1, s->gradOffset, out,
                                      static_cast<int64_t>(count) * 4, 0))
      return model->fail(STLM_ERROR_DEVICE,
                         "cannot read '" + n + "' from the device: " +
                             model->artifact->device->message(model->device));
    return model->ok();
  }
  if (stlm_status st = model->pull(); st != STLM_OK)
    return st;
  const uint8_t *src =
      grad ? static_cast<uint8_t *>(model->arena.get()) + s->gradOffset
           : model->at(s->offset);
  if (!grad && s->tiles) // a quantized weight's scales, in rows again
    stlm::quant::unpackTileScales(src, s->shape[0], s->shape[1], 4,
                                  reinterpret_cast<uint8_t *>(out));
  else
    std::memcpy(out, src, count * 4);
  return model->ok();
}

stlm_status stlm_write(stlm_model *model, const char *name,
                       const float *values, size_t count) {
  if (!model || !model->artifact)
    return badModel();
  if (!name || !values)
    return model->fail(STLM_ERROR_ARGUMENT, "stlm_write: null argument");
  const Slot *s = model->find(name);
  if (!s || s->isInt)
    return model->fail(STLM_ERROR_ARGUMENT,
                       std::string("'") + name +
                           "' is not a float tensor of '" + model->name + "'");
  if (count != static_cast<size_t>(s->numel()))
    return model->fail(STLM_ERROR_ARGUMENT,
                       std::string("'") + name + "' has " +
                           std::to_string(s->numel()) + " elements, not " +
                           std::to_string(count));
  if (stlm_status st = model->pull(); st != STLM_OK)
    return st;
  if (s->tiles)
    stlm::quant::packTileScales(reinterpret_cast<const uint8_t *>(values),
                                s->shape[0], s->shape[1], 4,
                                model->at(s->offset));
  else
    std::memcpy(model->at(s->offset), values, count * 4);
  model->wrote();
  if (std::find(model->teacher.begin(), model->teacher.end(), name) !=
      model->teacher.end())
    model->teacherWritten.insert(name);
  return model->ok();
}

namespace {

/// Opens the safetensors file `path` for stlm_load and stlm_load_teacher:
/// STLM_ERROR_IO when it cannot be read, STLM_ERROR_FORMAT when it is not
/// safetensors.
stlm_status openFile(stlm_model *model, const char *path,
                     std::unique_ptr<stlm::SafeTensorsFile> &file) {
  std::string error;
  file = stlm::SafeTensorsFile::open(path, error);
  if (file)
    return STLM_OK;
  return model->fail(
      access(path, R_OK) != 0 ? STLM_ERROR_IO : STLM_ERROR_FORMAT, error);
}

/// STLM_ERROR_MISMATCH: `path` is not a checkpoint of `what`, for each of
/// `problems`.
stlm_status notACheckpointOf(stlm_model *model, const std::string &path,
                             const std::string &what,
                             const std::vector<std::string> &problems) {
  std::string msg = path + " is not a checkpoint of " + what + " (" +
                    std::to_string(problems.size()) + " problems):";
  for (const std::string &p : problems)
    msg += "\n  " + p;
  return model->fail(STLM_ERROR_MISMATCH, msg);
}

/// "[2, 32]".
std::string shapeText(const std::vector<int64_t> &shape) {
  std::string text = "[";
  for (size_t i = 0; i < shape.size(); ++i)
    text += (i ? ", " : "") + std::to_string(shape[i]);
  return text + "]";
}

/// "int8, group 32" of a checkpoint's stlm_quantization (JSON); "" when it
/// is not one.
std::string describeQuantization(const std::string &json) {
  try {
    return describeQuantization(nlohmann::json::parse(json));
  } catch (const std::exception &) {
  }
  return "";
}

/// loadCheckpoint where the model or the checkpoint (`stored`: its
/// stlm_quantization, null for none) is quantized: they must be quantized
/// alike, and each tensor has the model's dtype and shape.
stlm_status loadQuantized(stlm_model *model, const stlm::SafeTensorsFile *file,
                          const std::string &path, const std::string *stored) {
  if (!stored)
    return model->fail(STLM_ERROR_MISMATCH,
                       path + " holds float weights; '" + model->name +
                           "' is quantized (" + model->quantization +
                           "): quantize the checkpoint first (stlm-run "
                           "quantize CHECKPOINT -o OUT --to SCHEME --group "
                           "N)");
  std::string format = describeQuantization(*stored);
  if (format.empty())
    return model->fail(STLM_ERROR_FORMAT,
                       path +
                           ": __metadata__.stlm_quantization is not a "
                           "quantization (" +
                           *stored + ")");
  if (model->quantization.empty())
    return model->fail(STLM_ERROR_MISMATCH,
                       path + " is quantized (" + format + "); '" +
                           model->name +
                           "' computes with float weights: load the "
                           "checkpoint it was made from, or compile it with "
                           "stlm-compile --quantize");
  if (format != model->quantization)
    return model->fail(STLM_ERROR_MISMATCH,
                       path + " is quantized " + format + "; '" + model->name +
                           "' was compiled for " + model->quantization);
  std::vector<std::string> problems;
  for (const std::string &p : model->params) {
    const Slot &s = model->slots.at(p);
    const stlm::TensorView *t = file->find(p);
    if (!t)
      problems.push_back("missing tensor '" + p + "'");
    else if (t->dtype != s.dtype || t->shape != s.shape)
      problems.push_back("'" + p + "' is " + stlm::dtypeName(t->dtype) + " " +
                         shapeText(t->shape) + ", the model's " +
                         stlm::dtypeName(s.dtype) + " " + shapeText(s.shape));
  }
  for (const stlm::TensorView &t : file->tensors())
    if (std::find(model->params.begin(), model->params.end(), t.name) ==
        model->params.end())
      problems.push_back("unexpected tensor '" + t.name + "'");
  if (!problems.empty())
    return notACheckpointOf(model, path, "model '" + model->name + "'",
                            problems);
  if (stlm_status st = model->pull(); st != STLM_OK)
    return st;
  model->wrote();
  for (const std::string &p : model->params) {
    const Slot &s = model->slots.at(p);
    const auto *data = static_cast<const uint8_t *>(file->find(p)->data);
    uint8_t *to = static_cast<uint8_t *>(model->at(s.offset));
    if (!s.tiles)
      std::memcpy(to, data, file->find(p)->size);
    else if (s.isInt)
      stlm::quant::packTiles(
          model->quantInt4, data, s.shape[0],
          stlm::quant::weightInputs(model->quantInt4, s.shape[1]), to);
    else
      stlm::quant::packTileScales(data, s.shape[0], s.shape[1], 4, to);
  }
  return model->ok();
}

/// stlm_load's work on an opened checkpoint, which `path` names in
/// messages.
stlm_status loadCheckpoint(stlm_model *model,
                           const stlm::SafeTensorsFile *file,
                           const std::string &path) {
  // Same model: the stored spec without its training section (a model
  // compiled from the dialect has no spec to compare).
  auto stored = file->metadata().find("stlm_spec");
  if (stored != file->metadata().end() && !model->specJson.empty()) {
    try {
      nlohmann::json a = nlohmann::json::parse(model->specJson),
                     b = nlohmann::json::parse(stored->second);
      a.erase("train");
      b.erase("train");
      if (a != b)
        return model->fail(
            STLM_ERROR_MISMATCH,
            std::string(path) + " holds weights of model '" +
                b.value("name", std::string("?")) + "', not of '" +
                model->name + "' (their specs differ)");
    } catch (const std::exception &e) {
      return model->fail(STLM_ERROR_FORMAT,
                         std::string(path) +
                             ": __metadata__.stlm_spec is not JSON: " +
                             e.what());
    }
  }
  // A quantized checkpoint (stlm-run quantize) only in a model quantized
  // alike, and the reverse.
  auto quantized = file->metadata().find("stlm_quantization");
  if (quantized != file->metadata().end() || !model->quantization.empty())
    return loadQuantized(
        model, file, path,
        quantized == file->metadata().end() ? nullptr : &quantized->second);
  // Check everything before changing anything.
  std::vector<std::string> problems;
  auto check = [&](const std::string &n, bool required) {
    const stlm::TensorView *t = file->find(n);
    const Slot &s = model->slots.at(n);
    if (!t) {
      if (required)
        problems.push_back("missing tensor '" + n + "'");
      return;
    }
    if (t->dtype != stlm::DType::F32 || t->shape != s.shape)
      problems.push_back("'" + n + "' is " + stlm::dtypeName(t->dtype) +
                         " of another shape than the model's F32 tensor");
  };
  bool anyState = false;
  for (const std::string &p : model->params) {
    check(p, true);
    for (const char *prefix : {"opt.m.", "opt.v."}) {
      bool has = file->find(prefix + p) != nullptr;
      anyState |= has;
    }
  }
  for (const stlm::TensorView &t : file->tensors())
    if (!model->slots.count(t.name) || t.name == kStepName)
      problems.push_back("unexpected tensor '" + t.name + "'");
  if (anyState)
    for (const std::string &p : model->params)
      for (const char *prefix : {"opt.m.", "opt.v."})
        check(prefix + p, true); // all moments or none
  int64_t step = 0;
  auto st = file->metadata().find("step");
  if (st != file->metadata().end()) {
    char *end = nullptr;
    errno = 0;
    long long v = std::strtoll(st->second.c_str(), &end, 10);
    if (st->second.empty() || *end != '\0' || errno != 0 || v < 0 ||
        v > INT32_MAX - 1)
      problems.push_back("__metadata__.step '" + st->second +
                         "' is not a step count");
    step = v;
  }
  if (!problems.empty())
    return notACheckpointOf(model, path, "model '" + model->name + "'",
                            problems);
  // Parameters; moments (zero when the file has none); the step.
  if (stlm_status st = model->pull(); st != STLM_OK)
    return st;
  model->wrote();
  for (const std::string &p : model->params)
    for (const std::string &n :
         {p, std::string("opt.m.") + p, std::string("opt.v.") + p}) {
      const Slot &s = model->slots.at(n);
      const stlm::TensorView *t = file->find(n);
      if (t)
        std::memcpy(model->at(s.offset), t->data, t->size);
      else
        std::memset(model->at(s.offset), 0, s.numel() * 4);
    }
  for (const auto &[key, value] : file->metadata())
    if (key == "seed")
      model->metadata[key] = value;
  return stlm_set_step(model, step);
}

} // namespace

stlm_status stlm_load(stlm_model *model, const char *path) {
  if (!model || !model->artifact)
    return badModel();
  if (!path)
    return model->fail(STLM_ERROR_ARGUMENT, "stlm_load: the path is null");
  std::unique_ptr<stlm::SafeTensorsFile> file;
  if (stlm_status st = openFile(model, path, file); st != STLM_OK)
    return st;
  return loadCheckpoint(model, file.get(), path);
}

int stlm_uses_teacher(const stlm_model *model) {
  return model && !model->teacher.empty();
}

stlm_status stlm_load_teacher(stlm_model *model, const char *path) {
  if (!model || !model->artifact)
    return badModel();
  if (!path)
    return model->fail(STLM_ERROR_ARGUMENT,
                       "stlm_load_teacher: the path is null");
  if (model->teacher.empty())
    return model->fail(STLM_ERROR_ARGUMENT,
                       "'" + model->name + "' learns from no teacher");
  std::unique_ptr<stlm::SafeTensorsFile> file;
  if (stlm_status st = openFile(model, path, file); st != STLM_OK)
    return st;
  // The teacher the model was compiled with: the spec stored in the
  // student's (objective teacher_spec) against the file's, training
  // settings aside.
  if (file->metadata().count("stlm_quantization"))
    return model->fail(STLM_ERROR_MISMATCH,
                       std::string(path) + " is quantized (stlm-run "
                                           "quantize); a teacher is a float "
                                           "checkpoint");
  auto stored = file->metadata().find("stlm_spec");
  if (stored == file->metadata().end() && !model->specJson.empty())
    return model->fail(STLM_ERROR_MISMATCH,
                       std::string(path) +
                           " holds no spec (__metadata__.stlm_spec); a "
                           "teacher is a checkpoint that stlm-run init or "
                           "train wrote");
  if (stored != file->metadata().end() && !model->specJson.empty()) {
    try {
      nlohmann::json student = nlohmann::json::parse(model->specJson),
                     given = nlohmann::json::parse(stored->second);
      nlohmann::json expected;
      for (const nlohmann::json &o :
           student.value("objectives", nlohmann::json::array()))
        if (o.is_object() && o.contains("teacher_spec"))
          expected = o.at("teacher_spec");
      if (expected.is_object() && given.is_object()) {
        expected.erase("train");
        given.erase("train");
        if (expected != given)
          return model->fail(STLM_ERROR_MISMATCH,
                             std::string(path) + " holds weights of model '" +
                                 given.value("name", std::string("?")) +
                                 "', not of '" +
                                 expected.value("name", std::string("?")) +
                                 "', the teacher of '" + model->name +
                                 "' (their specs differ)");
      }
    } catch (const std::exception &e) {
      return model->fail(
          STLM_ERROR_FORMAT,
          std::string(path) +
              ": __metadata__.stlm_spec is not JSON: " + e.what());
    }
  }
  // Every teacher weight, of its shape; no other parameter (the file's
  // optimizer state is ignored).
  std::vector<std::string> problems;
  size_t prefix = std::strlen(kTeacherPrefix);
  for (const std::string &n : model->teacher) {
    const stlm::TensorView *t = file->find(n.substr(prefix));
    if (!t)
      problems.push_back("missing tensor '" + n.substr(prefix) + "'");
    else if (t->dtype != stlm::DType::F32 ||
             t->shape != model->slots.at(n).shape)
      problems.push_back("'" + t->name + "' is " + stlm::dtypeName(t->dtype) +
                         " of another shape than the teacher's F32 tensor");
  }
  for (const stlm::TensorView &t : file->tensors())
    if (t.name.rfind("opt.", 0) != 0 && !model->find(kTeacherPrefix + t.name))
      problems.push_back("unexpected tensor '" + t.name + "'");
  if (!problems.empty())
    return notACheckpointOf(model, path, "the teacher of '" + model->name + "'",
                            problems);
  if (stlm_status st = model->pull(); st != STLM_OK)
    return st;
  for (const std::string &n : model->teacher) {
    const stlm::TensorView *t = file->find(n.substr(prefix));
    std::memcpy(model->at(model->slots.at(n).offset), t->data, t->size);
    model->teacherWritten.insert(n);
  }
  model->wrote();
  return model->ok();
}

stlm_status stlm_save(const stlm_model *cmodel, const char *path) {
  auto *model = const_cast<stlm_model *>(cmodel);
  if (!model || !model->artifact)
    return badModel();
  if (!path)
    return model->fail(STLM_ERROR_ARGUMENT, "stlm_save: the path is null");
  if (!model->quantization.empty())
    return model->fail(STLM_ERROR_ARGUMENT,
                       "stlm_save: '" + model->name + "' is quantized (" +
                           model->quantization +
                           ") and infers only; its weights are the "
                           "checkpoint it loaded");
  if (stlm_status st = model->pull(); st != STLM_OK)
    return st;
  std::vector<stlm::TensorToWrite> tensors;
  for (const std::string &p : model->params)
    for (const std::string &n :
         {p, std::string("opt.m.") + p, std::string("opt.v.") + p}) {
      const Slot &s = model->slots.at(n);
      tensors.push_back({n, stlm::DType::F32, s.shape, model->at(s.offset),
                         static_cast<size_t>(s.numel()) * 4});
    }
  std::map<std::string, std::string> meta = model->metadata;
  if (!model->specJson.empty())
    meta["stlm_spec"] = model->specJson;
  meta["stlm_format"] = "1";
  meta["step"] = std::to_string(stlm_step(model));
  std::string error;
  if (!stlm::writeSafeTensors(path, tensors, meta, error))
    return model->fail(STLM_ERROR_IO, error);
  return model->ok();
}

stlm_status stlm_train_step(stlm_model *model, const int32_t *tokens,
                            const int32_t *targets, stlm_step_result *out) {
  if (!model || !model->artifact)
    return badModel();
  return model->trainStep(tokens, targets, nullptr, out);
}

stlm_status stlm_train_step_seeded(stlm_model *model, const int32_t *tokens,
                                   const int32_t *targets,
                                   const int32_t *seeds,
                                   stlm_step_result *out) {
  if (!model || !model->artifact)
    return badModel();
  if (!seeds)
    return model->fail(STLM_ERROR_ARGUMENT,
                       "stlm_train_step_seeded: the seeds are null");
  return model->trainStep(tokens, targets, seeds, out);
}

stlm_status stlm_grad(stlm_model *model, const int32_t *tokens,
                      const int32_t *targets, float *loss) {
  return stlm_grad_seeded(model, tokens, targets, 0, loss);
}

stlm_status stlm_grad_seeded(stlm_model *model, const int32_t *tokens,
                             const int32_t *targets, int32_t seed,
                             float *loss) {
  if (!model || !model->artifact)
    return badModel();
  if (!model->quantization.empty())
    return model->refuseQuantized("stlm_grad");
  return model->run(model->artifact->grad, tokens, targets, seed, loss,
                    "gradient");
}

stlm_status stlm_eval(stlm_model *model, const int32_t *tokens,
                      const int32_t *targets, float *loss) {
  return stlm_eval_seeded(model, tokens, targets, 0, loss);
}

stlm_status stlm_eval_objectives(stlm_model *model, const int32_t *tokens,
                                 const int32_t *targets, int32_t seed,
                                 float *out) {
  if (!model || !model->artifact)
    return badModel();
  // @eval writes the loss and then each objective's own: 1 + objectives
  // floats (the loss alone from an artifact that predates them).
  return model->run(model->artifact->eval, tokens, targets, seed, out,
                    "evaluation");
}

stlm_status stlm_eval_seeded(stlm_model *model, const int32_t *tokens,
                             const int32_t *targets, int32_t seed,
                             float *loss) {
  if (!model || !model->artifact)
    return badModel();
  if (!loss)
    return model->fail(STLM_ERROR_ARGUMENT,
                       "evaluation: the result must not be null");
  float out[1 + kMaxObjectives];
  stlm_status s = stlm_eval_objectives(model, tokens, targets, seed, out);
  if (s == STLM_OK)
    *loss = out[0];
  return s;
}

int64_t stlm_objectives(const stlm_model *model) {
  return model ? model->objectives : 0;
}

int stlm_uses_seed(const stlm_model *model) {
  return model && model->artifact && model->usesSeed ? 1 : 0;
}

stlm_status stlm_logits(stlm_model *model, const int32_t *tokens,
                        float *logits) {
  if (!model || !model->artifact)
    return badModel();
  if (!tokens || !logits)
    return model->fail(STLM_ERROR_ARGUMENT,
                       "stlm_logits: tokens and logits must not be null");
  if (stlm_status s = model->checkBatch(tokens, nullptr, "logits");
      s != STLM_OK)
    return s;
  std::memcpy(model->tokens.get(), tokens,
              static_cast<size_t>(model->batch * model->context) * 4);
  if (stlm_status s = model->push(); s != STLM_OK)
    return s;
  halideMessage.clear();
  return model->kernelStatus(
      model->artifact->logits(model->weightsArg(), model->arenaArg(),
                              static_cast<const int32_t *>(
                                  model->tokens.get()),
                              logits),
      "logits");
}

stlm_status stlm_generate(stlm_model *model, const int32_t *prompt,
                          size_t prompt_len, size_t max_tokens,
                          const stlm_sampling *sampling,
                          stlm_token_fn on_token, void *user,
                          size_t *generated) {
  if (!model || !model->artifact)
    return badModel();
  if (generated)
    *generated = 0;
  if (!prompt || prompt_len == 0)
    return model->fail(STLM_ERROR_ARGUMENT,
                       "stlm_generate: the prompt is empty; generation needs "
                       "at least one token to continue");
  stlm::sampling::SamplingOptions options;
  uint64_t state = 0;
  if (std::string bad = samplingFrom(sampling, options, state); !bad.empty())
    return model->fail(STLM_ERROR_ARGUMENT, "stlm_generate: " + bad);
  if (model->chunked)
    return model->generateChunks(prompt, prompt_len, max_tokens, options, state,
                                 on_token, user, generated);
  if (std::string bad = model->promptProblem(prompt, prompt_len); !bad.empty())
    return model->fail(STLM_ERROR_ARGUMENT, "stlm_generate: prompt " + bad);
  // The window's tokens and what follows them: the tokens before the
  // window are dropped when it moves (nothing reads them again), so the
  // history never outgrows this room and a step calls the heap for nothing.
  std::vector<int32_t> history;
  history.reserve(
      std::max(prompt_len, static_cast<size_t>(model->context) + 1));
  history.assign(prompt, prompt + prompt_len);
  stlm::sampling::ContextWindow window{model->context, 0};
  bool refill = true;
  std::vector<float> buffer;
  for (size_t n = 0; n < max_tokens; ++n) {
    refill |= window.fit(history.size());
    history.erase(history.begin(), history.begin() + window.start);
    window.start = 0;
    const float *row = nullptr;
    stlm_status s =
        model->nextLogits(history, window.start, refill, buffer, row);
    if (s != STLM_OK)
      return s;
    refill = false;
    int32_t next = stlm::sampling::sample(
        row, static_cast<int32_t>(model->vocab), options, state);
    history.push_back(next);
    if (generated)
      *generated = n + 1;
    if (on_token && on_token(next, user) != 0)
      break;
  }
  return model->ok();
}

stlm_status stlm_generate_batch(stlm_model *model, size_t count,
                                const int32_t *const *prompts,
                                const size_t *prompt_lens, size_t max_tokens,
                                const stlm_sampling *sampling,
                                stlm_batch_token_fn on_token, void *user,
                                size_t *generated) {
  if (!model || !model->artifact)
    return badModel();
  if (generated && count > 0)
    std::fill(generated, generated + count, size_t(0));
  if (model->chunked)
    return model->fail(STLM_ERROR_ARGUMENT,
                       "stlm_generate_batch: '" + model->name +
                           "' is a byte-pool model; batched generation is "
                           "for token models (use stlm_generate)");
  if (model->decodeBatch == 0)
    return model->fail(STLM_ERROR_ARGUMENT,
                       "stlm_generate_batch: '" + model->name +
                           "' was compiled without batched generation; "
                           "compile it with stlm-compile --decode-batch N");
  if (count == 0 || !prompts || !prompt_lens)
    return model->fail(STLM_ERROR_ARGUMENT,
                       "stlm_generate_batch: give at least one prompt (and "
                       "its length)");
  for (size_t i = 0; i < count; ++i) {
    std::string at = "stlm_generate_batch: prompt " + std::to_string(i);
    if (!prompts[i] || prompt_lens[i] == 0)
      return model->fail(STLM_ERROR_ARGUMENT,
                         at + " is empty; generation needs at least one "
                              "token to continue");
    if (std::string bad = model->promptProblem(prompts[i], prompt_lens[i]);
        !bad.empty())
      return model->fail(STLM_ERROR_ARGUMENT, at + ": " + bad);
  }
  stlm::sampling::SamplingOptions options;
  uint64_t seed = 0;
  if (std::string bad = samplingFrom(sampling, options, seed); !bad.empty())
    return model->fail(STLM_ERROR_ARGUMENT, "stlm_generate_batch: " + bad);
  size_t width = static_cast<size_t>(model->decodeBatch);
  for (size_t first = 0; first < count; first += width)
    if (stlm_status s = model->generateGroup(
            prompts, prompt_lens, first, std::min(width, count - first),
            max_tokens, options, seed, on_token, user, generated);
        s != STLM_OK)
      return s;
  return model->ok();
}

} // extern "C"

stlm_status stlm_model::generateGroup(
    const int32_t *const *prompts, const size_t *lens, size_t first, size_t n,
    size_t maxTokens, const stlm::sampling::SamplingOptions &options,
    uint64_t seed, stlm_batch_token_fn onToken, void *user, size_t *generated) {
  const size_t slots = static_cast<size_t>(decodeBatch);
  const size_t ctx = static_cast<size_t>(context);
  const size_t v = static_cast<size_t>(vocab);
  struct Sequence {
    std::vector<int32_t> tokens; // the window's prompt, then what follows
    uint64_t state = 0;
    size_t produced = 0;
    bool done = true; // unused slots stay done
  };
  std::vector<Sequence> seqs(slots);
  // Room for a window and a step: the tokens before the window are
  // dropped when it moves, so a step calls the heap for nothing.
  for (Sequence &s : seqs)
    s.tokens.reserve(ctx + 1);
  // Each prompt cut as stlm_generate cuts it; the lockstep starts after
  // the shortest, and longer prompts feed their tokens a step at a time.
  size_t p = std::numeric_limits<size_t>::max();
  for (size_t i = 0; i < n; ++i) {
    const int32_t *prompt = prompts[first + i];
    stlm::sampling::ContextWindow cut{context, 0};
    cut.fit(lens[first + i]);
    seqs[i].tokens.assign(prompt + cut.start, prompt + lens[first + i]);
    seqs[i].state = seed + first + i;
    seqs[i].done = maxTokens == 0;
    p = std::min(p, seqs[i].tokens.size());
  }
  for (size_t i = n; i < slots; ++i)
    seqs[i].tokens.assign(p, 0);
  stlm::sampling::ContextWindow window{context, 0};
  bool refill = true;
  float *buffer = static_cast<float *>(batchLogits.get());
  int32_t *staged = static_cast<int32_t *>(batchTokens.get());
  int32_t *io = static_cast<int32_t *>(batchStep.get());
  const size_t at = (slots + 15) / 16 * 16; // the position's 64-byte line
  auto running = [&] {
    return std::any_of(seqs.begin(), seqs.end(),
                       [](const Sequence &s) { return !s.done; });
  };
  while (running()) {
    // The logits of position p: tokens 0 ... p - 1 are known for all.
    refill |= window.fit(p);
    for (Sequence &s : seqs) // nothing reads the tokens before the window
      s.tokens.erase(s.tokens.begin(), s.tokens.begin() + window.start);
    p -= window.start;
    window.start = 0;
    if (stlm_status s = push(); s != STLM_OK)
      return s;
    hostBehind = device != nullptr; // the KV caches are in the blob
    halideMessage.clear();
    size_t len = p - window.start;
    const float *rows;
    size_t stride;
    // One batched decode step: each slot's token at window position `pos`.
    auto step = [&](size_t pos) {
      for (size_t i = 0; i < slots; ++i)
        io[i] = seqs[i].tokens[window.start + pos];
      io[at] = static_cast<int32_t>(pos);
      return kernelStatus(
          artifact->decode_batch(weightsArg(), arenaArg(), io, io + at, buffer),
          "batched generation (decode step)");
    };
    if (refill && fillsByDecodeSteps(len)) {
      // A short window by decode steps, as nextLogits fills one (the
      // batched prefill computes every position of the context for every
      // slot): all but its last position here, the last below.
      for (size_t pos = 0; pos + 1 < len; ++pos)
        if (stlm_status s = step(pos); s != STLM_OK)
          return s;
      refill = false;
    }
    if (refill) {
      // Each window from position 0, padded; a longer prompt's tokens
      // past p are fed again by the decode steps.
      std::fill(staged, staged + slots * ctx, 0);
      for (size_t i = 0; i < slots; ++i) {
        const std::vector<int32_t> &t = seqs[i].tokens;
        size_t end = std::min(t.size(), window.start + ctx);
        std::copy(t.begin() + window.start, t.begin() + end, staged + i * ctx);
      }
      if (stlm_status s = kernelStatus(
              artifact->prefill_batch(weightsArg(), arenaArg(), staged, buffer),
              "batched generation (prefill)");
          s != STLM_OK)
        return s;
      rows = buffer + (len - 1) * v;
      stride = ctx * v;
      refill = false;
    } else {
      if (stlm_status s = step(len - 1); s != STLM_OK)
        return s;
      rows = buffer;
      stride = v;
    }
    for (size_t i = 0; i < slots; ++i) {
      Sequence &s = seqs[i];
      if (s.tokens.size() > p)
        continue;       // a prompt token
      int32_t next = 0; // what a finished sequence or an empty slot feeds
      if (!s.done) {
        next = stlm::sampling::sample(
            rows + i * stride, static_cast<int32_t>(vocab), options, s.state);
        ++s.produced;
        if (generated)
          generated[first + i] = s.produced;
        bool stop = onToken && onToken(first + i, next, user) != 0;
        s.done = stop || s.produced == maxTokens;
      }
      s.tokens.push_back(next);
    }
    ++p;
  }
  return ok();
}

stlm_status stlm_model::nextLogits(const std::vector<int32_t> &h,
                                   size_t start, bool refill,
                                   std::vector<float> &buffer,
                                   const float *&row) {
  // A position is a token, or a byte-pool model's chunk of `slots` ids.
  const size_t unit = chunked ? static_cast<size_t>(chunkSlots) : 1;
  const size_t positions = static_cast<size_t>(chunked ? chunks : context);
  const size_t rowSize = unit * static_cast<size_t>(vocab);
  size_t len = h.size() / unit - start;
  int32_t *staged = static_cast<int32_t *>(tokens.get());
  if (stlm_status s = push(); s != STLM_OK)
    return s;
  hostBehind = device != nullptr; // the KV cache is in the blob
  halideMessage.clear();
  // A short window is filled by decode steps (see shortWindow()).
  const bool steps = refill && fillsByDecodeSteps(len);
  buffer.resize(refill && !steps ? positions * rowSize : rowSize);
  int32_t *io = static_cast<int32_t *>(step.get());
  size_t at = (unit + 15) / 16 * 16; // the position on its own 64-byte line
  // One decode step at window position `pos` for token `id`.
  auto decode = [&](int32_t id, size_t pos) {
    io[0] = id;
    io[at] = static_cast<int32_t>(pos);
    return kernelStatus(artifact->decode_step(weightsArg(), arenaArg(), io,
                                              io + at, buffer.data()),
                        "generation (decode step)");
  };
  if (steps) {
    // A short window costs a few decode steps where the prefill computes
    // every position of the context (a one-token prompt: stlm-10m int8 47
    // ms against 0.8 on 2 cores).
    for (size_t p = 0; p < len; ++p)
      if (stlm_status s = decode(h[start + p], p); s != STLM_OK)
        return s;
    row = buffer.data();
    return STLM_OK;
  }
  if (refill) {
    // The window from position 0, padded (all-pad chunks): rows past it
    // are rewritten before any later query reads them.
    std::fill(staged, staged + positions * unit,
              chunked ? stlm::sampling::kChunkPad : 0);
    std::copy(h.begin() + start * unit, h.end(), staged);
    stlm_status s = kernelStatus(
        artifact->prefill(weightsArg(), arenaArg(), staged, buffer.data()),
        "generation (prefill)");
    row = buffer.data() + (len - 1) * rowSize;
    return s;
  }
  std::copy(h.end() - unit, h.end(), io);
  stlm_status s = decode(io[0], len - 1);
  row = buffer.data();
  return s;
}

stlm_status stlm_model::generateChunks(
    const int32_t *prompt, size_t promptLen, size_t maxBytes,
    const stlm::sampling::SamplingOptions &options, uint64_t state,
    stlm_token_fn onToken, void *user, size_t *generated) {
  if (!chunkRuleKnown || !artifact->prefill || !artifact->decode_step)
    return fail(STLM_ERROR_ARGUMENT,
                "stlm_generate: '" + name +
                    "' is a byte-pool model compiled without chunk "
                    "generation; compile it again with this stlm-compile");
  std::vector<int32_t> history;
  size_t bad = 0;
  if (!stlm::sampling::chunkPrompt(chunkRule, chunkStride, chunkSlots, prompt,
                                   promptLen, history, &bad))
    return fail(STLM_ERROR_ARGUMENT,
                "stlm_generate: prompt value " + std::to_string(prompt[bad]) +
                    " at " + std::to_string(bad) + " is not a byte" +
                    (chunkStarts ? " (or a byte + STLM_CHUNK_START)" : ""));
  stlm::sampling::ContextWindow window{chunks, 0};
  bool refill = true;
  std::vector<float> buffer;
  std::vector<int32_t> chunk(static_cast<size_t>(chunkSlots));
  size_t produced = 0;
  while (produced < maxBytes) {
    refill |= window.fit(history.size() / chunkSlots);
    const float *row = nullptr;
    if (stlm_status s = nextLogits(history, window.start, refill, buffer, row);
        s != STLM_OK)
      return s;
    refill = false;
    int64_t bytes = stlm::sampling::sampleChunk(row, chunkSlots, vocab, options,
                                                state, chunk.data());
    for (int64_t i = 0; i < bytes && produced < maxBytes; ++i) {
      ++produced;
      if (generated)
        *generated = produced;
      if (onToken && onToken(chunk[i], user) != 0)
        return ok();
    }
    history.insert(history.end(), chunk.begin(), chunk.end());
  }
  return ok();
}
