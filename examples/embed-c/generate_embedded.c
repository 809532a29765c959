/* generate-embedded: the checkpoint is inside the program (stlm_add_model
 * ... EMBED_WEIGHTS, i.e. stlm-compile --embed-weights): stlm_open alone
 * gives the trained model, and this binary is all an app ships.
 *
 *   generate-embedded "PROMPT" [bytes]
 */
#include STLM_MODEL_HEADER
#include "generate_common.h"

int main(int argc, char **argv) {
  if (argc < 2 || argc > 3) {
    fprintf(stderr, "usage: generate-embedded PROMPT [bytes]\n");
    return 2;
  }
  stlm_model *m = NULL;
  if (stlm_open(&STLM_MODEL_ARTIFACT, &m) != STLM_OK) {
    fprintf(stderr, "generate-embedded: %s\n", stlm_error_message(m));
    stlm_close(m);
    return 1;
  }
  printf("embedded checkpoint at step %lld\n", (long long)stlm_step(m));
  int rc = continue_prompt(m, argv[1], argc == 3 ? atoi(argv[2]) : 200);
  stlm_close(m);
  return rc;
}
