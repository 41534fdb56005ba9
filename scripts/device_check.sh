#!/usr/bin/env bash
# The GPU check, for a machine with CUDA and PyTorch but none of Debian's -dev
# packages: builds the library, its tests and the benchmark against PyTorch's CUDA
# LibTorch, runs every test (the [cuda] ones on the GPU: towers on two streams, AMP
# steps, NCCL with a world of one, towers inside data parallel), then one benchmark
# (fp32, and bf16 channels-last, against PyTorch's, with the ratios) and, with two
# GPUs or more, the data-parallel scaling across them.
#
# Here, before lending the tree to the GPU machine:  scripts/device_check.sh --prepare
#   (copies Catch2's single header into .device/, which git ignores; carry .device)
# There:                                             scripts/device_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--prepare" ]; then
  mkdir -p .device/include
  cp -r /usr/include/catch2 .device/include/
  echo "prepared .device/include/catch2; carry .device to the GPU machine"
  exit 0
fi
[ -f .device/include/catch2/catch.hpp ] || { echo "device_check: run with --prepare first (no .device/include/catch2)" >&2; exit 2; }

python=${PYTHON:-python3}
prefix=$("$python" -c 'import torch; print(torch.utils.cmake_prefix_path)')
"$python" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "gpus", torch.cuda.device_count())'
nvidia-smi -L || true

start=$SECONDS
cmake -S . -B build-device -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$prefix" \
  -DALEXNET_BUILD_APPS=OFF -DALEXNET_BUILD_DATA=OFF -DALEXNET_INSTALL=OFF \
  -DALEXNET_CATCH2_INCLUDE_DIR="$PWD/.device/include" > build-device.log
cmake --build build-device -j "$(nproc)" >> build-device.log || { tail -50 build-device.log; exit 1; }
echo "build: $((SECONDS - start)) s"
grep -h "alexnet: NCCL process group" build-device.log || echo "alexnet: NCCL process group off (LibTorch without CUDA)"

# The GPU tests first, with what they print (skips included), then the rest.
build-device/tests/alexnet_tests "[cuda]" --success --reporter compact | tail -20
build-device/tests/alexnet_tests "~[cuda]" --reporter compact | tail -3

# Training images/s at batch 256 on the GPU, ours and PyTorch's in one run, at float32
# and with bf16 autocast in channels-last (the same precision and layout on both sides).
results=build-device/bench.jsonl
: > "$results"
for mode in "fp32 0" "bf16 1"; do
  set -- $mode
  cl=""; [ "$2" = 1 ] && cl=--channels-last
  for arch in paper torchvision; do
    "$python" bench/baseline.py train --arch "$arch" --device cuda --batch 256 --iterations 10 \
      --precision "$1" $cl | tee -a "$results"
    executions=grouped; [ "$arch" = paper ] && executions="grouped towers"
    for execution in $executions; do
      build-device/bin/alexnet_bench train --arch "$arch" --execution "$execution" --device cuda \
        --batch 256 --iterations 10 --precision "$1" --channels-last "$2" | tee -a "$results"
    done
  done
done
# The ratios the issue sets targets for: ours / PyTorch's (>= 1.0 for torchvision),
# towers on two streams / grouped (>= 1.0).
"$python" - "$results" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.startswith("{")]
for precision, cl in (("fp32", False), ("bf16", True)):
    same = [r for r in rows if r["precision"] == precision and r["channels_last"] == cl]
    def pick(arch, key, execution=None):
        for r in same:
            if r["arch"] == arch and key in r and (execution is None or r.get("execution") == execution):
                return r[key]
    for arch in ("paper", "torchvision"):
        ours, theirs = pick(arch, "ours", "grouped"), pick(arch, "baseline")
        if ours and theirs:
            print(json.dumps({"figure": "ours_over_pytorch", "arch": arch, "precision": precision,
                              "channels_last": cl, "ratio": round(ours / theirs, 3)}))
    towers, grouped = pick("paper", "ours", "towers"), pick("paper", "ours", "grouped")
    if towers and grouped:
        print(json.dumps({"figure": "towers_over_grouped", "precision": precision, "channels_last": cl,
                          "ratio": round(towers / grouped, 3)}))
PY

# Data parallel across the GPUs: one process per GPU (NCCL when built in), against one.
gpus=$("$python" -c 'import torch; print(torch.cuda.device_count())')
if [ "$gpus" -ge 2 ]; then
  args=(train --arch paper --device cuda --batch 256 --iterations 10 --overlap 1)
  one=$(build-device/bin/alexnet_bench "${args[@]}")
  pids=()
  for ((rank = 0; rank < gpus; rank++)); do
    WORLD_SIZE=$gpus RANK=$rank LOCAL_RANK=$rank MASTER_ADDR=127.0.0.1 MASTER_PORT=29533 \
      build-device/bin/alexnet_bench "${args[@]}" > "build-device/scaling-$rank.json" &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid"; done
  many=$(cat build-device/scaling-0.json)
  echo "$one"; echo "$many"
  "$python" -c 'import json, sys; a, b = json.loads(sys.argv[1]), json.loads(sys.argv[2]); print(json.dumps({"figure": "gpu_data_parallel_scaling", "gpus": b["processes"], "backend": b["backend"], "ratio": round(b["ours"] / a["ours"], 2), "ideal": b["processes"]}))' "$one" "$many"
else
  echo "data-parallel scaling across GPUs: skipped, $gpus GPU here"
fi
echo "device_check: done in $((SECONDS - start)) s"
