#!/usr/bin/env bash
# Benchmarks (not tests): builds in Release and prints one JSON object per line with
# our figure, the baseline's figure measured in the same run and their ratio.
# Baselines: the same network in Python on Debian's python3-torch (the same LibTorch
# 1.13, the same thread count) and, for the LRN, LibTorch's LocalResponseNorm.
#
#   scripts/bench.sh [--threads N] [--iterations N] [--quick]
set -euo pipefail
cd "$(dirname "$0")/.."

threads=2
iterations=3
batch=128
while [ $# -gt 0 ]; do
  case "$1" in
    --threads) threads=$2; shift 2 ;;
    --iterations) iterations=$2; shift 2 ;;
    --quick) iterations=1; batch=32; shift ;;
    *) echo "bench.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

bash scripts/install-deps.sh >&2
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >&2
cmake --build build --target alexnet_bench >&2

python=/usr/bin/python3  # Debian's, where python3-torch is installed
common=(--threads "$threads" --iterations "$iterations" --batch "$batch")

# ratio OURS_JSON BASELINE_JSON [ours-key] [baseline-key] [higher-is-better]
merge() {
  "$python" - "$1" "$2" <<'PY'
import json, sys
ours, base = json.loads(sys.argv[1]), json.loads(sys.argv[2])
out = dict(ours)
out["baseline"] = base["baseline"]
out["ratio"] = round(ours["ours"] / base["baseline"], 2)
print(json.dumps(out))
PY
}

for mode in train infer; do
  for arch in paper torchvision; do
    base=$("$python" bench/baseline.py "$mode" --arch "$arch" "${common[@]}")
    executions=(grouped)
    [ "$arch" = paper ] && executions=(grouped towers)
    for execution in "${executions[@]}"; do
      for keep in 1 0; do
        ours=$(build/bin/alexnet_bench "$mode" --arch "$arch" --execution "$execution" \
               --keep-memory "$keep" "${common[@]}")
        merge "$ours" "$base"
      done
    done
  done
done
for keep in 1 0; do
  build/bin/alexnet_bench lrn --keep-memory "$keep" --threads "$threads" --iterations "$iterations" --batch "$batch"
done
