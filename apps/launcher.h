#pragma once

// `--nproc-per-node N`: this executable started N times on this machine as the ranks
// of one data-parallel world, with the environment torchrun would give them.

#include <alexnet/network/distributed.h>

#include <atomic>
#include <memory>
#include <string>
#include <vector>

namespace alexnet::app {

/// Thrown by a command to end the program with `code` (after saying why): main returns
/// it. No command exits the process itself.
struct ExitStatus {
  int code;
};

/// Remembers the command line, so that the launcher can start it again.
void set_command_line(int argc, char** argv);

/// `--nproc-per-node N`: when N > 1 and this process is not already a rank, runs the
/// N ranks (launch_local), throws ExitStatus with their status if one failed, and
/// returns true: the caller is done. Otherwise returns false and the caller runs as a rank (or alone).
bool launched_ranks(int nproc);

/// Runs N copies of the command (without --nproc-per-node) as ranks 0..N-1 on
/// 127.0.0.1 and waits. Ctrl-C / SIGTERM is passed to every rank once (they stop
/// together and rank 0 checkpoints); later ones are not passed on (SIGKILL
/// ends them). When one rank fails the
/// others are stopped. Returns the first non-zero exit status, or 0.
int launch_local(int nproc);

/// Set by the first Ctrl-C or SIGTERM once stop_on_signals was called: a trainer
/// finishes its step and checkpoints.
const std::atomic<bool>& stop_flag();
/// From now on the first SIGINT or SIGTERM sets stop_flag() (saying so on stderr when
/// `announce`: under data parallelism rank 0 speaks for all); a second only says that the
/// checkpoint is being written.
void stop_on_signals(bool announce);

/// This process's place in a data-parallel world (torchrun's, Slurm's or
/// --nproc-per-node's environment). Ranks other than 0 report warnings and errors
/// only, marked with their rank: one voice.
DistributedOptions world_from_environment();

/// Joins the world, or nullptr for a world of one. `devices`, when given, become this
/// replica's (rank_devices: shifted by LOCAL_RANK), and its first GPU is the rank's GPU
/// (so that the "auto" backend is NCCL when this build has it).
std::unique_ptr<ProcessGroup> join_world(DistributedOptions options, double timeout_seconds,
                                         const std::string& backend, std::vector<c10::Device>* devices = nullptr);

}  // namespace alexnet::app
