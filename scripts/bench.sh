#!/usr/bin/env bash
# Benchmarks (not tests): builds in Release, then times ours against the baselines in
# interleaved rounds (bench/rounds.py): ours, Python on Debian's python3-torch (the
# same LibTorch 1.13, the same thread count) with glibc's allocator, then with tcmalloc
# and with jemalloc preloaded, round after round. Prints one JSON object per line:
# per round the load, then per figure the median over rounds with its range, the
# ratio to the fastest baseline (median of per-round ratios, with its range), the
# achieved GFLOP/s and the roofline (the CPU's GEMM rate at that precision); then bf16
# over our float32, and the LRN and pooling kernels against LibTorch's. A round run
# while other processes used the CPU is flagged; measure on a quiet machine.
#
#   scripts/bench.sh [--threads N] [--rounds R] [--iterations N] [--only WORD] [--quick]
set -euo pipefail
cd "$(dirname "$0")/.."

threads=2
rounds=5
iterations=3
batch=128
only=""
while [ $# -gt 0 ]; do
  case "$1" in
    --threads) threads=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --iterations) iterations=$2; shift 2 ;;
    --only) only=$2; shift 2 ;;
    --quick) rounds=2; iterations=1; batch=32; shift ;;
    *) echo "bench.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

bash scripts/install-deps.sh >&2
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >&2
cmake --build build --target alexnet_bench >&2
source scripts/bench_env.sh

exec /usr/bin/python3 bench/rounds.py --bench build/bin/alexnet_bench --threads "$threads" --rounds "$rounds" \
  --iterations "$iterations" --batch "$batch" --only "$only"
