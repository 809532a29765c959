/* generate-dlopen: the same, the model loaded at run time from its shared
 * library (this program links only the runtime, libstlm.so). A bare file
 * name is looked for in $STLM_LIBRARY_PATH, then the current directory,
 * then where dlopen looks (stlm.h, stlm_open_library).
 *
 *   generate-dlopen lib<name>.so W.safetensors "PROMPT" [bytes]
 */
#include "generate_common.h"

int main(int argc, char **argv) {
  if (argc < 4 || argc > 5) {
    fprintf(stderr,
            "usage: generate-dlopen LIB.so W.safetensors PROMPT [bytes]\n");
    return 2;
  }
  stlm_model *m = NULL;
  if (stlm_open_library(argv[1], NULL, &m) != STLM_OK ||
      stlm_load(m, argv[2]) != STLM_OK) {
    fprintf(stderr, "generate-dlopen: %s\n", stlm_error_message(m));
    stlm_close(m);
    return 1;
  }
  printf("runtime %s, model %s\n", stlm_version(), stlm_model_name(m));
  int rc = continue_prompt(m, argv[3], argc == 5 ? atoi(argv[4]) : 200);
  stlm_close(m);
  return rc;
}
