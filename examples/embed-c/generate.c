/* generate: continue a prompt with a checkpoint, the model linked in.
 *
 *   generate W.safetensors "PROMPT" [bytes]
 */
#include STLM_MODEL_HEADER
#include "generate_common.h"

int main(int argc, char **argv) {
  if (argc < 3 || argc > 4) {
    fprintf(stderr, "usage: generate W.safetensors PROMPT [bytes]\n");
    return 2;
  }
  stlm_model *m = NULL;
  if (stlm_open(&STLM_MODEL_ARTIFACT, &m) != STLM_OK ||
      stlm_load(m, argv[1]) != STLM_OK) {
    fprintf(stderr, "generate: %s\n", stlm_error_message(m));
    stlm_close(m);
    return 1;
  }
  int rc = continue_prompt(m, argv[2], argc == 4 ? atoi(argv[3]) : 200);
  stlm_close(m);
  return rc;
}
