#!/usr/bin/env bash
# Data-parallel scaling (a benchmark, not a test): training images/s of one process
# against N processes on this machine (default 2), one thread each, synthetic data,
# Trainer::step with the gradients averaged over Gloo during the backward pass. Prints
# one JSON line per run and the ratio (N processes / 1; ideal N).
#
#   scripts/bench_scaling.sh [--processes N] [--batch N] [--iterations N] [--arch A]
set -euo pipefail
cd "$(dirname "$0")/.."

processes=2
batch=64
iterations=3
arch=paper
while [ $# -gt 0 ]; do
  case "$1" in
    --processes) processes=$2; shift 2 ;;
    --batch) batch=$2; shift 2 ;;
    --iterations) iterations=$2; shift 2 ;;
    --arch) arch=$2; shift 2 ;;
    *) echo "bench_scaling.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

bash scripts/install-deps.sh >&2
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >&2
cmake --build build --target alexnet_bench >&2
source scripts/bench_env.sh
bench=build/bin/alexnet_bench
args=(train --arch "$arch" --batch "$batch" --iterations "$iterations" --threads 1 --keep-memory 1)

one=$("$bench" "${args[@]}")
echo "$one"
port=$(/usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
pids=()
for ((rank = 0; rank < processes; rank++)); do
  WORLD_SIZE=$processes RANK=$rank MASTER_ADDR=127.0.0.1 MASTER_PORT=$port \
    "$bench" "${args[@]}" > "build/scaling-$rank.json" &
  pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid"; done
many=$(cat build/scaling-0.json)
echo "$many"
/usr/bin/python3 - "$one" "$many" <<'PY'
import json, sys
one, many = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(json.dumps({"figure": "data_parallel_scaling", "arch": one["arch"], "batch_per_process": one["batch"],
                  "processes": many["processes"], "one_images_per_s": one["ours"],
                  "many_images_per_s": many["ours"], "ratio": round(many["ours"] / one["ours"], 2)}))
PY
