/* train: a few training steps of a compiled model on a text file, then a
 * checkpoint. The model is linked in (its static library); the initial
 * weights come from `stlm-run init SPEC -o init.safetensors`.
 *
 *   train init.safetensors text.txt out.safetensors [steps]
 */
#include STLM_MODEL_HEADER
#include "stlm/stlm.h"
#include "train_common.h"

#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
  if (argc < 4 || argc > 5) {
    fprintf(stderr, "usage: train INIT.safetensors TEXT OUT.safetensors "
                    "[steps]\n");
    return 2;
  }
  int steps = argc == 5 ? atoi(argv[4]) : 20;
  long size = 0;
  unsigned char *text = read_file(argv[2], &size);
  if (!text)
    return 1;

  stlm_model *m = NULL;
  if (stlm_open(&STLM_MODEL_ARTIFACT, &m) != STLM_OK ||
      stlm_load(m, argv[1]) != STLM_OK) {
    fprintf(stderr, "train: %s\n", stlm_error_message(m));
    stlm_close(m);
    return 1;
  }
  /* A step is accumulate x batch windows of context + 1 bytes: tokens and
   * the same bytes shifted by one as targets. */
  long rows = stlm_accumulate(m) * stlm_batch(m), context = stlm_context(m);
  if (size < context + 2) {
    fprintf(stderr, "train: %s is shorter than one window\n", argv[2]);
    return 1;
  }
  int32_t *tokens = malloc(rows * context * sizeof *tokens);
  int32_t *targets = malloc(rows * context * sizeof *targets);
  unsigned long state = 12345;
  for (int s = 0; s < steps; ++s) {
    draw_windows(text, size, rows, context, &state, tokens, targets);
    stlm_step_result out;
    if (stlm_train_step(m, tokens, targets, &out) != STLM_OK) {
      fprintf(stderr, "train: %s\n", stlm_error_message(m));
      return 1;
    }
    printf("step %lld: loss %.4f, lr %.2e\n", (long long)out.step, out.loss,
           out.lr);
  }
  if (stlm_save(m, argv[3]) != STLM_OK) {
    fprintf(stderr, "train: %s\n", stlm_error_message(m));
    return 1;
  }
  printf("saved %s at step %lld\n", argv[3], (long long)stlm_step(m));
  free(tokens);
  free(targets);
  free(text);
  stlm_close(m);
  return 0;
}
