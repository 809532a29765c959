/* An app using a model compiled from the dialect (examples/mlir/
 * char-tiny.mlir, model @char_tiny) through dlopen: loads a checkpoint
 * written for the char-tiny spec (the same tensors), trains two steps,
 * saves. Usage: dialect-app LIB.so W.safetensors OUT.safetensors. */
#include "stlm/stlm.h"

#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
  stlm_model *m = NULL;
  if (argc != 4)
    return 2;
  if (stlm_open_library(argv[1], NULL, &m) != STLM_OK ||
      stlm_load(m, argv[2]) != STLM_OK) {
    fprintf(stderr, "dialect-app: %s\n", stlm_error_message(m));
    stlm_close(m);
    return 1;
  }
  size_t n = (size_t)(stlm_batch(m) * stlm_context(m));
  int32_t *tokens = malloc(n * sizeof *tokens);
  int32_t *targets = malloc(n * sizeof *targets);
  for (size_t i = 0; i < n; ++i) {
    tokens[i] = 'a' + i % 5;
    targets[i] = 'a' + (i + 1) % 5;
  }
  printf("model %s, spec '%s'\n", stlm_model_name(m), stlm_spec_json(m));
  for (int s = 0; s < 2; ++s) {
    stlm_step_result r;
    if (stlm_train_step(m, tokens, targets, &r) != STLM_OK) {
      fprintf(stderr, "dialect-app: %s\n", stlm_error_message(m));
      return 1;
    }
    printf("step %lld loss %.3f\n", (long long)r.step, r.loss);
  }
  if (stlm_save(m, argv[3]) != STLM_OK) {
    fprintf(stderr, "dialect-app: %s\n", stlm_error_message(m));
    return 1;
  }
  free(tokens);
  free(targets);
  stlm_close(m);
  return 0;
}
