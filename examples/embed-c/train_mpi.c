/* train-mpi: data-parallel training from C. Every rank (an MPI process)
 * opens the same model, compiled with `stlm-compile --data-parallel`,
 * loads the same initial weights, and trains on its own windows of the
 * text; stlm_set_allreduce hands the runtime MPI_Allreduce, which sums the
 * gradient sums and loss over the ranks once per step, so every rank
 * applies the same update. Rank 0 prints and saves.
 *
 *   mpirun -np 2 train-mpi init.safetensors text.txt out.safetensors [steps]
 */
#include STLM_MODEL_HEADER
#include "stlm/stlm.h"
#include "train_common.h"

#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>

/* The hook: an in-place sum over every rank of the communicator. */
static int allreduce(float *data, size_t count, void *user) {
  MPI_Comm comm = *(MPI_Comm *)user;
  /* MPI counts are ints; a real model's buffer fits one call. */
  for (size_t done = 0; done < count;) {
    size_t left = count - done;
    int n = left > 0x7fffffff ? 0x7fffffff : (int)left;
    if (MPI_Allreduce(MPI_IN_PLACE, data + done, n, MPI_FLOAT, MPI_SUM,
                      comm) != MPI_SUCCESS)
      return 1;
    done += (size_t)n;
  }
  return 0;
}

/* Ends every rank after a message. */
static void fail(int rank, const char *what) {
  fprintf(stderr, "train-mpi: rank %d: %s\n", rank, what);
  MPI_Abort(MPI_COMM_WORLD, 1);
}

int main(int argc, char **argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, ranks = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &ranks);
  if (argc < 4 || argc > 5) {
    if (rank == 0)
      fprintf(stderr, "usage: mpirun -np N train-mpi INIT.safetensors TEXT "
                      "OUT.safetensors [steps]\n");
    MPI_Finalize();
    return 2;
  }
  int steps = argc == 5 ? atoi(argv[4]) : 20;
  long size = 0;
  unsigned char *text = read_file(argv[2], &size);
  if (!text)
    fail(rank, "cannot read the text");

  stlm_model *m = NULL;
  MPI_Comm comm = MPI_COMM_WORLD;
  if (stlm_open(&STLM_MODEL_ARTIFACT, &m) != STLM_OK ||
      stlm_load(m, argv[1]) != STLM_OK ||
      stlm_set_allreduce(m, ranks, allreduce, &comm) != STLM_OK)
    fail(rank, stlm_error_message(m));
  long rows = stlm_accumulate(m) * stlm_batch(m), context = stlm_context(m);
  if (size < context + 2)
    fail(rank, "the text is shorter than one window");
  int32_t *tokens = malloc(rows * context * sizeof *tokens);
  int32_t *targets = malloc(rows * context * sizeof *targets);
  /* Each rank its own stream of windows. */
  unsigned long state = 12345 + 7919UL * (unsigned long)rank;
  for (int s = 0; s < steps; ++s) {
    draw_windows(text, size, rows, context, &state, tokens, targets);
    stlm_step_result out;
    if (stlm_train_step(m, tokens, targets, &out) != STLM_OK)
      fail(rank, stlm_error_message(m));
    if (rank == 0)
      printf("step %lld: loss %.4f over %d ranks, lr %.2e\n",
             (long long)out.step, out.loss, ranks, out.lr);
  }
  if (rank == 0) {
    if (stlm_save(m, argv[3]) != STLM_OK)
      fail(rank, stlm_error_message(m));
    printf("saved %s at step %lld\n", argv[3], (long long)stlm_step(m));
  }
  free(tokens);
  free(targets);
  free(text);
  stlm_close(m);
  MPI_Finalize();
  return 0;
}
