/*===- stlm.h - the C API of compiled stlm models ------------------------===*
 *
 * A model compiled by `stlm-compile SPEC.yaml -o DIR` exports one
 * `stlm_artifact` (`<name>_artifact`, declared in DIR/<name>.h). This
 * runtime opens it -- linked statically or from lib<name>.so by dlopen --
 * owns its weights blob and arena, loads and saves safetensors checkpoints,
 * and runs training steps, evaluations and generation (KV-cached).
 *
 *   stlm_model *m = NULL;
 *   if (stlm_open(&char_tiny_artifact, &m) != STLM_OK ||
 *       stlm_load(m, "init.safetensors") != STLM_OK)
 *     fprintf(stderr, "%s\n", stlm_error_message(m));
 *   stlm_step_result r;
 *   stlm_train_step(m, tokens, targets, &r);   // int32 [batch, context] each
 *   stlm_save(m, "ckpt.safetensors");          // atomic: temp file + rename
 *   stlm_close(m);
 *
 * Every call returns a status; on failure, stlm_error_message(m) says why.
 * A failed open still returns a handle (in the error state) when memory
 * allows, so the message can be read; close it as usual. The core never
 * prints. One model is used by one thread at a time; kernels run on the
 * Halide thread pool of the artifact. Its one piece of process-wide state
 * is a cache of kernel scratch: blocks of 256 KiB and more that kernels
 * free are kept (mutex-protected, up to 1 GiB) for the next kernel, so a
 * training step does not map and fault in fresh pages for what the
 * previous one freed; the cache is emptied when the last model closes.
 *
 *===----------------------------------------------------------------------===*/

#ifndef STLM_STLM_H
#define STLM_STLM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define STLM_ABI_VERSION 6

typedef enum stlm_status {
  STLM_OK = 0,
  STLM_ERROR_ARGUMENT = 1, /* a null pointer, unknown name, wrong size */
  STLM_ERROR_IO = 2,       /* a file cannot be read or written */
  STLM_ERROR_FORMAT = 3,   /* a corrupt artifact, manifest or checkpoint */
  STLM_ERROR_MISMATCH = 4, /* a checkpoint of another model */
  STLM_ERROR_KERNEL = 5,   /* a kernel failed (Halide error) */
  STLM_ERROR_MEMORY = 6,   /* out of memory */
  STLM_ERROR_DEVICE = 7,   /* no usable device, or a device call failed */
  STLM_ERROR_COLLECTIVE = 8 /* the all-reduce hook failed */
} stlm_status;

/* How the runtime reaches a device artifact's memory (stlm-compile
 * --target=cuda); null in a host artifact. The device context `open`
 * returns owns the weights blob, the arena, the stream and the captured
 * step graphs on the device; the entry points of a device artifact take it
 * as their `weights` argument and ignore `arena`. */
typedef struct stlm_device {
  const char *name; /* "cuda" */
  /* A context, or null with the reason in `error` (no device, no memory). */
  void *(*open)(char *error, size_t error_size);
  void (*close)(void *context);
  /* Copies `bytes` between `host` and the device's weights blob (buffer 0)
   * or arena (buffer 1) at byte `offset`: to the device when `to_device`.
   * 0, or -1 with message() saying why. */
  int32_t (*copy)(void *context, int32_t buffer, int64_t offset, void *host,
                  int64_t bytes, int32_t to_device);
  /* Why the context's last call failed. */
  const char *(*message)(const void *context);
} stlm_device;

/* What a compiled model exports (filled in by stlm-compile). Entry points
 * take 64-byte aligned pointers: the weights blob, the arena, and int32
 * token and target batches; each returns 0 or a Halide error code. `seed`
 * points to the batch's mask seed, which only models with a masked
 * objective read (others accept any pointer, even null). */
typedef struct stlm_artifact {
  uint32_t abi_version; /* STLM_ABI_VERSION */
  const char *manifest; /* JSON: layout, parameters, inputs, the spec */
  int32_t (*train_step)(void *weights, void *arena, const int32_t *tokens,
                        const int32_t *targets, const int32_t *seed,
                        float out[3]); /* or null */
  int32_t (*grad)(void *weights, void *arena, const int32_t *tokens,
                  const int32_t *targets, const int32_t *seed, float *loss);
  int32_t (*eval)(void *weights, void *arena, const int32_t *tokens,
                  const int32_t *targets, const int32_t *seed, float *loss);
  /* Inference (see <name>.h): logits of a batch; of one sequence from
   * position 0, filling the KV cache; of one more token at *pos. */
  int32_t (*logits)(void *weights, void *arena, const int32_t *tokens,
                    float *logits);
  int32_t (*prefill)(void *weights, void *arena, const int32_t *tokens,
                     float *logits);
  int32_t (*decode_step)(void *weights, void *arena, const int32_t *token,
                         const int32_t *pos, float *logits);
  /* With gradient accumulation (train_step is then null): one micro-batch's
   * loss, its gradients added to the blob's sums; then the update,
   * out = {grad norm, lr}. Null without accumulation. */
  int32_t (*accumulate)(void *weights, void *arena, const int32_t *tokens,
                        const int32_t *targets, const int32_t *seed,
                        float *loss);
  int32_t (*apply)(void *weights, void *arena, float out[2]);
  void *(*set_error_handler)(void *handler); /* halide_set_error_handler */
  int (*set_num_threads)(int threads);       /* halide_set_num_threads */
  void *(*set_custom_malloc)(void *fn);      /* halide_set_custom_malloc */
  void *(*set_custom_free)(void *fn);        /* halide_set_custom_free */
  const stlm_device *device; /* null: the entry points run on the host */
  /* A checkpoint compiled into the artifact (stlm-compile --embed-weights
   * W.safetensors): the file's bytes, which stlm_open loads. Null and 0
   * without one. */
  const unsigned char *weights_file;
  int64_t weights_file_size;
  /* Generation of DECODE_BATCH sequences in lockstep (stlm-compile
   * --decode-batch), with caches of their own: like prefill and
   * decode_step with tokens [DECODE_BATCH, CONTEXT] and [DECODE_BATCH]
   * and logits [DECODE_BATCH, CONTEXT, VOCAB] and [DECODE_BATCH, VOCAB],
   * every sequence at *pos. Null without the option. */
  int32_t (*prefill_batch)(void *weights, void *arena, const int32_t *tokens,
                           float *logits);
  int32_t (*decode_batch)(void *weights, void *arena, const int32_t *tokens,
                          const int32_t *pos, float *logits);
} stlm_artifact;

typedef struct stlm_model stlm_model;

typedef struct stlm_step_result {
  float loss;      /* mean cross-entropy of the batch, nats */
  float grad_norm; /* global L2 norm before clipping */
  float lr;        /* learning rate of this step */
  int64_t step;    /* optimizer steps taken, after this one */
} stlm_step_result;

/* The stlm release this runtime belongs to and its commit:
 * "0.5.0 (commit 06ef74c96cb9)". */
const char *stlm_version(void);

/* Opening and closing. An artifact with an embedded checkpoint
 * (stlm-compile --embed-weights) opens with its weights, moments and step
 * loaded from it; others open with every tensor zero (load a checkpoint). */
stlm_status stlm_open(const stlm_artifact *artifact, stlm_model **model);
/* dlopen()s `path` (lib<name>.so) and opens `<symbol>_artifact`; `symbol`
 * may be NULL to derive it from the file name (libchar-tiny.so ->
 * char_tiny). Where it looks: a path with a '/' is used as given (relative
 * to the current directory); a bare file name is looked for in each
 * directory of the environment variable STLM_LIBRARY_PATH (':'-separated),
 * then in the current directory, and when none holds it, wherever dlopen
 * looks (LD_LIBRARY_PATH, the program's run path, the system's
 * directories). */
stlm_status stlm_open_library(const char *path, const char *symbol,
                              stlm_model **model);
void stlm_close(stlm_model *model);
/* Why the last failing call on `model` failed ("" when none did). */
const char *stlm_error_message(const stlm_model *model);

/* The model. */
const char *stlm_model_name(const stlm_model *model);
int64_t stlm_batch(const stlm_model *model);   /* rows of a batch */
int64_t stlm_context(const stlm_model *model); /* tokens (bytes) per row */
/* The sequences stlm_generate_batch decodes at once (stlm-compile
 * --decode-batch N), or 0 when the artifact was compiled without. */
int64_t stlm_decode_batch(const stlm_model *model);
int64_t stlm_vocab(const stlm_model *model);   /* logits per position */
/* A byte-pool model (embedder byte_pool): its batch is [batch, context]
 * bytes that it cuts into chunks itself; it takes no targets (pass NULL)
 * and predicts 258 classes (256 bytes, pad, end) per chunk slot. */
int stlm_is_byte_pool(const stlm_model *model);
/* A byte-pool model with 'given' chunking: an outside rule (a tokenizer,
 * `stlm-run entropy`) says where its chunks start, and the bytes carry it:
 * a byte b that opens a chunk is passed as b + STLM_CHUNK_START (the first
 * byte of a row always opens one). Other models refuse such values. */
#define STLM_CHUNK_START 512
int stlm_takes_chunk_starts(const stlm_model *model);
/* A quantized model (stlm-compile --quantize): its format, "int8, group 32"
 * or "int4, group 32"; NULL for a float model. A quantized model infers
 * only (eval, logits, generation): it loads checkpoints quantized the same
 * way (stlm-run quantize), and the training calls and stlm_save fail with
 * STLM_ERROR_ARGUMENT. */
const char *stlm_quantization(const stlm_model *model);
/* Floats stlm_logits writes: batch · context · vocab for a token model,
 * batch · chunks · chunk_bytes · vocab for a byte-pool one. */
int64_t stlm_logits_size(const stlm_model *model);
/* Micro-batches per training step (gradient accumulation; 1 without). */
int64_t stlm_accumulate(const stlm_model *model);
/* The spec the model was compiled from, as JSON. */
const char *stlm_spec_json(const stlm_model *model);
/* Kernel threads (the artifact's Halide thread pool); 0: all cores. */
stlm_status stlm_set_threads(stlm_model *model, int threads);

/* Weights and checkpoints (safetensors). stlm_load reads every parameter
 * (read-only mmap) and, when present, the AdamW moments (opt.m.*,
 * opt.v.*) and __metadata__.step; it refuses a file of another model and
 * leaves the model unchanged when it does. A quantized model loads its
 * parameters only, from a checkpoint quantized the same way
 * (STLM_ERROR_MISMATCH otherwise: a float one, another scheme or group),
 * and a float model refuses a quantized checkpoint. stlm_save writes
 * parameters, moments and step (plus stlm_set_metadata's entries)
 * atomically. */
stlm_status stlm_load(stlm_model *model, const char *path);
stlm_status stlm_save(const stlm_model *model, const char *path);
/* Distillation (objective `distill`): the model holds its teacher, a token
 * model that stlm-compile compiled into it from the teacher checkpoint's
 * spec, whose weights are frozen states named "teacher.<name>": they are
 * not trained and not saved with the model's checkpoints. Load them from
 * the teacher's checkpoint (its parameters; its optimizer state is
 * ignored) before training or evaluating: until then those calls are
 * STLM_ERROR_ARGUMENT. A checkpoint of another model is
 * STLM_ERROR_MISMATCH; logits and generation need no teacher. */
int stlm_uses_teacher(const stlm_model *model); /* 1 when distilling */
stlm_status stlm_load_teacher(stlm_model *model, const char *path);
stlm_status stlm_set_metadata(stlm_model *model, const char *key,
                              const char *value);
int64_t stlm_step(const stlm_model *model);
stlm_status stlm_set_step(stlm_model *model, int64_t step);

/* Tensors by name: a parameter ("layers.0.wq"), optimizer state
 * ("opt.m.layers.0.wq"), or, after stlm_grad and until the next compute
 * call (evaluation reuses the arena), a gradient ("grad.<param>").
 * `count` must be the tensor's element count. */
/* The name of parameter `index` (declaration order, as in a checkpoint),
 * or NULL past the last: for (i = 0; (n = stlm_param_name(m, i)); ++i). */
const char *stlm_param_name(const stlm_model *model, int64_t index);
/* Element count of a tensor named as above; -1 when there is none. */
int64_t stlm_tensor_size(const stlm_model *model, const char *name);
stlm_status stlm_read(const stlm_model *model, const char *name, float *out,
                      size_t count);
stlm_status stlm_write(stlm_model *model, const char *name,
                       const float *values, size_t count);

/* Compute. tokens and targets are int32 [batch, context] ids in
 * [0, stlm_vocab) (others are STLM_ERROR_ARGUMENT), any alignment; for a
 * byte-pool model tokens are bytes in [0, 256), or 256 where a row's text
 * ends early (the rest of the row is not read), and targets are ignored;
 * for stlm_train_step, [accumulate × batch, context]: the step's
 * micro-batches one after the other (its loss is their mean). */
stlm_status stlm_train_step(stlm_model *model, const int32_t *tokens,
                            const int32_t *targets, stlm_step_result *out);
stlm_status stlm_grad(stlm_model *model, const int32_t *tokens,
                      const int32_t *targets, float *loss);
stlm_status stlm_eval(stlm_model *model, const int32_t *tokens,
                      const int32_t *targets, float *loss);

/* Data-parallel training: N processes (ranks) each run stlm_train_step
 * on their own micro-batches of one global batch; the hook sums, in place
 * and over every rank, the `count` floats at `data` (MPI_Allreduce with
 * MPI_IN_PLACE and MPI_SUM, or an equivalent) and returns 0, or non-zero
 * when it failed. A step then runs stlm_accumulate micro-batches into the
 * model's gradient sums, calls the hook once over one contiguous buffer
 * (the sums and the step's loss sum), scales it by 1 / ranks and applies
 * the same AdamW update on every rank; `loss` is the mean over all ranks'
 * micro-batches. N ranks of batch B equal one process with N times the
 * accumulation on the same windows, to fp32 summation order (exactly, for
 * two ranks without accumulation). Needs an artifact whose step is split into accumulate and
 * apply: `stlm-compile --data-parallel` (or train.accumulate > 1); others
 * are STLM_ERROR_ARGUMENT, as are device artifacts. A null hook turns it
 * off. A failing hook makes the step STLM_ERROR_COLLECTIVE, with no update
 * applied. Every rank must start from the same weights (load the same
 * checkpoint) and call stlm_train_step the same number of times; a step
 * that fails on one rank leaves the others waiting in the hook, so the app
 * must then end the job (MPI_Abort). */
typedef int (*stlm_allreduce_fn)(float *data, size_t count, void *user);
stlm_status stlm_set_allreduce(stlm_model *model, int32_t ranks,
                               stlm_allreduce_fn allreduce, void *user);

/* Masked objectives (masked_next_token) mask the positions a seed picks
 * (the formula of stlm.mask_tokens), so each micro-batch should have its
 * own: the _seeded calls take one seed per micro-batch (`seeds` holds
 * stlm_accumulate of them); the calls above use seed 0 for every one.
 * stlm-run trains with splitmix64(run seed ^ micro-batch index) & 0x7fffffff
 * and evaluates with seed 0. Other models ignore the seeds. */
int stlm_uses_seed(const stlm_model *model); /* 1 with a masked objective */
stlm_status stlm_train_step_seeded(stlm_model *model, const int32_t *tokens,
                                   const int32_t *targets,
                                   const int32_t *seeds,
                                   stlm_step_result *out);
stlm_status stlm_grad_seeded(stlm_model *model, const int32_t *tokens,
                             const int32_t *targets, int32_t seed,
                             float *loss);
stlm_status stlm_eval_seeded(stlm_model *model, const int32_t *tokens,
                             const int32_t *targets, int32_t seed,
                             float *loss);

/* Evaluation with each objective's own loss: out[0] is the loss (the
 * spec's weighted sum), out[1 ... stlm_objectives] the mean loss of each
 * objective in the spec's order, over its own counted targets (so that a
 * validation loss can be pooled over targets, and bits per byte read off
 * the next-byte objective alone). stlm_objectives is 0 for an artifact
 * compiled before this existed (then only out[0] is written). */
int64_t stlm_objectives(const stlm_model *model);
stlm_status stlm_eval_objectives(stlm_model *model, const int32_t *tokens,
                                 const int32_t *targets, int32_t seed,
                                 float *out);

/* Logits of a batch: tokens int32 [batch, context] -> logits float
 * [batch, context, vocab]; for a byte-pool model [batch, chunks,
 * chunk_bytes, vocab], where chunk c predicts the bytes of chunk c + 1
 * (stlm_logits_size floats either way). */
stlm_status stlm_logits(stlm_model *model, const int32_t *tokens,
                        float *logits);

/* Generation with the model's KV cache. */
typedef struct stlm_sampling {
  float temperature; /* <= 0: greedy (the first most likely token) */
  int32_t top_k;     /* keep the k most likely tokens; 0: all */
  float top_p;       /* keep the smallest set with mass >= p; 1: all */
  uint64_t seed;     /* the same seed, prompt and model give the same text */
} stlm_sampling;

/* Greedy decoding: {0, 0, 1, 0}. */
#define STLM_SAMPLING_GREEDY {0.0f, 0, 1.0f, 0}

/* Called with each generated token; return non-zero to stop. */
typedef int (*stlm_token_fn)(int32_t token, void *user);

/* Continues `prompt` (prompt_len >= 1 token ids below stlm_vocab) by up to
 * `max_tokens` tokens, calling `on_token` (may be NULL) with each as soon
 * as it is chosen; `*generated` (may be NULL) is the number produced. The
 * model sees the last stlm_context tokens: the prompt (or its end) is run
 * at once, then one token per step against the cache; when the context is
 * full, the cache is refilled from the last context/2 tokens.
 *
 * A byte-pool model generates a chunk at a time: the prompt's bytes (with
 * STLM_CHUNK_START flags for 'given' chunking) are cut into chunks by the
 * model's rule, and each step samples the next chunk slot by slot from the
 * logits the last chunk's core output gives (the first slot among the 256
 * bytes, each later one among the bytes and the end marker, which ends
 * the chunk); the chunk's bytes go to `on_token` one by one and the chunk
 * is the next step's input. Tokens are bytes: `max_tokens` counts bytes,
 * the context counts chunks. */
stlm_status stlm_generate(stlm_model *model, const int32_t *prompt,
                          size_t prompt_len, size_t max_tokens,
                          const stlm_sampling *sampling,
                          stlm_token_fn on_token, void *user,
                          size_t *generated);

/* Called with token `token` of sequence `sequence` (an index into
 * stlm_generate_batch's prompts); return non-zero to stop that sequence. */
typedef int (*stlm_batch_token_fn)(size_t sequence, int32_t token, void *user);

/* Continues `count` >= 1 prompts (token models; the artifact compiled with
 * --decode-batch, see stlm_decode_batch; else STLM_ERROR_ARGUMENT, as for
 * an empty prompt or an id outside the vocabulary), stlm_decode_batch of
 * them at a time in lockstep: every linear layer multiplies that many rows
 * per step where stlm_generate multiplies one. Sequence i is what
 * stlm_generate gives for prompts[i] (prompt_lens[i] >= 1 tokens) with
 * sampling seed `sampling->seed + i`, to the rounding of the batched sums:
 * it is cut to the same window, and the tokens of a prompt longer than the
 * shortest in its group are fed one step at a time. Each sequence gets up
 * to `max_tokens` tokens; `on_token` (may be NULL) is called with each as
 * it is chosen, the sequences of a step in order; `generated` (may be
 * NULL) receives `count` numbers, the tokens each sequence produced. */
stlm_status stlm_generate_batch(stlm_model *model, size_t count,
                                const int32_t *const *prompts,
                                const size_t *prompt_lens, size_t max_tokens,
                                const stlm_sampling *sampling,
                                stlm_batch_token_fn on_token, void *user,
                                size_t *generated);

#ifdef __cplusplus
}
#endif

#endif /* STLM_STLM_H */
