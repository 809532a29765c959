//===- MpiCollective.h - the ranks of an mpirun job -------------*- C++ -*-===//
//
// `mpirun -np N stlm-run train ...` makes N ranks; MPI (Debian's OpenMPI)
// connects them. This is the one place stlm calls MPI: the Collective of
// MPI_COMM_WORLD. stlm-run starts MPI only when a launcher says the job
// has more than one rank, so a plain run neither needs nor pays for it.
// Built without MPI (CMake found none), startMpi() says so.
//
//===----------------------------------------------------------------------===//

#ifndef STLM_TRAIN_MPICOLLECTIVE_H
#define STLM_TRAIN_MPICOLLECTIVE_H

#include "train/Collective.h"

#include <memory>
#include <string>

namespace stlm {

/// The number of ranks the launcher that started this process gave its
/// job (OpenMPI's OMPI_COMM_WORLD_SIZE, or PMI_SIZE of MPICH's and Intel
/// MPI's Hydra); 1 when no launcher started it. -1 with `error` set when
/// the variable is not a positive number.
int launchedRanks(std::string &error);

/// Whether this build can start MPI.
bool haveMpi();

/// Initialises MPI and returns MPI_COMM_WORLD as a Collective (MPI is
/// finalised when it is destroyed); null with `error` set.
std::unique_ptr<Collective> startMpi(std::string &error);

} // namespace stlm

#endif // STLM_TRAIN_MPICOLLECTIVE_H
