/* What the train examples share: the text in memory and the windows of a
 * step drawn from it. */
#ifndef STLM_EXAMPLE_TRAIN_COMMON_H
#define STLM_EXAMPLE_TRAIN_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* The whole file in memory; NULL with a message on failure. */
static unsigned char *read_file(const char *path, long *size) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    perror(path);
    return NULL;
  }
  unsigned char *bytes = NULL;
  if (fseek(f, 0, SEEK_END) == 0 && (*size = ftell(f)) > 0 &&
      fseek(f, 0, SEEK_SET) == 0 && (bytes = malloc(*size)) &&
      fread(bytes, 1, *size, f) != (size_t)*size) {
    free(bytes);
    bytes = NULL;
  }
  if (!bytes)
    fprintf(stderr, "%s: cannot read it\n", path);
  fclose(f);
  return bytes;
}

/* `rows` windows of `context` + 1 bytes at places a linear congruential
 * generator (`*state`) picks: the tokens, and the same bytes shifted by
 * one as targets. `size` must be at least context + 2. */
static void draw_windows(const unsigned char *text, long size, long rows,
                         long context, unsigned long *state, int32_t *tokens,
                         int32_t *targets) {
  for (long r = 0; r < rows; ++r) {
    *state = *state * 6364136223846793005UL + 1442695040888963407UL;
    long start = (long)((*state >> 33) % (unsigned long)(size - context - 1));
    for (long t = 0; t < context; ++t) {
      tokens[r * context + t] = text[start + t];
      targets[r * context + t] = text[start + t + 1];
    }
  }
}

#endif /* STLM_EXAMPLE_TRAIN_COMMON_H */
