#pragma once

// `--nproc-per-node N`: this executable started N times on this machine as the ranks
// of one data-parallel world, with the environment torchrun would give them.

#include <string>
#include <vector>

namespace alexnet::app {

/// Remembers the command line, so that the launcher can start it again.
void set_command_line(int argc, char** argv);

/// `--nproc-per-node N`: when N > 1 and this process is not already a rank, runs the
/// N ranks (launch_local), exits with their status if one failed, and returns true:
/// the caller is done. Otherwise returns false and the caller runs as a rank (or alone).
bool launched_ranks(int nproc);

/// Runs N copies of the command (without --nproc-per-node) as ranks 0..N-1 on
/// 127.0.0.1 and waits. Ctrl-C / SIGTERM is passed to every rank once (they stop
/// together and rank 0 checkpoints); a second one kills them. When one rank fails the
/// others are stopped. Returns the first non-zero exit status, or 0.
int launch_local(int nproc);

}  // namespace alexnet::app
