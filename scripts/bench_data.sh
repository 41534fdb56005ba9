#!/usr/bin/env bash
# The data benchmark (not a test): images per second per worker through our JPEG path
# (decode at reduced scale, resize, crop, flip, PCA noise), our packed path, and
# torchvision's transforms with PIL and a PyTorch DataLoader, measured in the same
# run on the same JPEGs: 500x375 (and 375x500) photographs at quality 90, made from
# the real photographs in Debian's python3-skimage. One JSON object per line.
#
#   scripts/bench_data.sh [--images N] [--batches N]
set -euo pipefail
cd "$(dirname "$0")/.."

images=400
batches=20
while [ $# -gt 0 ]; do
  case "$1" in
    --images) images=$2; shift 2 ;;
    --batches) batches=$2; shift 2 ;;
    *) echo "bench_data.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

bash scripts/install-deps.sh >&2
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >&2
cmake --build build --target alexnet_data_bench alexnet_cli >&2
source scripts/bench_env.sh

python=/usr/bin/python3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$python" bench/make_photos.py "$work/jpeg" "$images"
build/bin/alexnet stats --data "$work/jpeg" --out "$work/stats.pt" --workers 2 >&2
build/bin/alexnet prepare --data "$work/jpeg" --out "$work/packed" --workers 2 >&2

for workers in 1 2; do
  base=$("$python" bench/data_baseline.py "$work/jpeg" "$workers" "$batches")
  jpeg=$(build/bin/alexnet_data_bench "$work/jpeg" "$work/stats.pt" "$workers" "$batches")
  packed=$(build/bin/alexnet_data_bench "$work/packed" "$work/stats.pt" "$workers" "$((batches * 5))")
  "$python" - "$base" "$jpeg" "$packed" <<'PY'
import json, sys
base, jpeg, packed = (json.loads(a) for a in sys.argv[1:])
w = jpeg["workers"]
print(json.dumps({"figure": "data_images_per_s_per_worker", "workers": w,
                  "torchvision_pil": round(base["baseline"] / w, 1),
                  "ours_jpeg": round(jpeg["ours"] / w, 1), "ours_packed": round(packed["ours"] / w, 1),
                  "jpeg_vs_torchvision": round(jpeg["ours"] / base["baseline"], 2),
                  "packed_vs_jpeg": round(packed["ours"] / jpeg["ours"], 2),
                  "ours_jpeg_total": jpeg["ours"], "ours_packed_total": packed["ours"],
                  "torchvision_total": base["baseline"]}))
PY
done

# What checking each packed record's checksum costs: every record read once (a record
# is checked the first time a process reads it), with and without the check,
# interleaved in rounds, one worker.
once=$(( images / 32 - 1 ))
rows=()
for round in 1 2 3 4 5; do
  for verify in 1 0; do
    rows+=("$(build/bin/alexnet_data_bench "$work/packed" "$work/stats.pt" 1 "$once" "$verify")")
  done
done
"$python" - "${rows[@]}" <<'PY'
import json, statistics, sys
rows = [json.loads(a) for a in sys.argv[1:]]
ratios = [rows[i]["ours"] / rows[i + 1]["ours"] for i in range(0, len(rows), 2)]
print(json.dumps({"figure": "packed_checksum_cost", "records_read_once": True, "workers": 1,
                  "with_check_over_without": {"median": round(statistics.median(ratios), 3),
                                              "min": round(min(ratios), 3), "max": round(max(ratios), 3),
                                              "rounds": len(ratios)},
                  "images_per_s_with": [r["ours"] for r in rows[0::2]],
                  "images_per_s_without": [r["ours"] for r in rows[1::2]]}))
PY
