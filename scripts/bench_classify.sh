#!/usr/bin/env bash
# The classification benchmark (not a test): wall time and peak memory of
# `alexnet classify` of one JPEG (chelsea, 451x300, from Debian's python3-skimage), as an
# application that classifies one photo sees them: start-up, loading the checkpoint,
# decoding, one forward pass. Rounds interleave `alexnet --help` (LibTorch's start-up:
# the floor) and classify with each checkpoint and precision; each figure is the median
# over rounds with its range, from /usr/bin/time's wall clock and maximum resident set.
# The checkpoints: CHECKPOINT files given, or else the quickstart's
# (runs/quickstart/best.pt, when there) and a paper-preset network at 227 written for
# the benchmark (two classes, one step of training on four images). One JSON object per
# line.
#
#   scripts/bench_classify.sh [--rounds R] [--precision LIST] [--alexnet BINARY] [--baseline BINARY] [CHECKPOINT...]
#
# --precision takes fp32, bf16, auto or none (the flag left out: the default); --alexnet
# times that binary instead of building this one; --baseline adds another build's
# classify (its default precision) to the same rounds, for a before/after comparison.
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=7
precisions="fp32,bf16"
checkpoints=()
alexnet=""
baseline=""
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    --precision) precisions=$2; shift 2 ;;
    --alexnet) alexnet=$2; shift 2 ;;
    --baseline) baseline=$2; shift 2 ;;
    -*) echo "bench_classify.sh: unknown argument $1" >&2; exit 2 ;;
    *) checkpoints+=("$1"); shift ;;
  esac
done

if [ -z "$alexnet" ]; then
  bash scripts/install-deps.sh >&2
  cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >&2
  cmake --build build --target alexnet_cli >&2
  alexnet=build/bin/alexnet
fi

source scripts/bench_env.sh

work=build/bench-classify
mkdir -p "$work"
photo=$work/chelsea.jpg
[ -f "$photo" ] || /usr/bin/python3 -c "
import sys; from PIL import Image
Image.open('/usr/lib/python3/dist-packages/skimage/data/chelsea.png').convert('RGB').save(sys.argv[1], quality=90)" "$photo"

if [ ${#checkpoints[@]} -eq 0 ]; then
  [ -f runs/quickstart/best.pt ] && checkpoints+=(runs/quickstart/best.pt)
  if [ ! -f "$work/paper-227/best.pt" ]; then
    for c in a b; do mkdir -p "$work/two/$c"; cp "$photo" "$work/two/$c/1.jpg"; cp "$photo" "$work/two/$c/2.jpg"; done
    "$alexnet" train --data "$work/two" --out "$work/paper-227" --overwrite --epochs 1 --batch-size 4 \
      --pca-std 0 --workers 0 >&2
  fi
  checkpoints+=("$work/paper-227/best.pt")
fi

exec /usr/bin/python3 - "$alexnet" "$baseline" "$photo" "$rounds" "$precisions" "${checkpoints[@]}" <<'PY'
import json, os, statistics, subprocess, sys, tempfile

alexnet, baseline, photo = sys.argv[1], sys.argv[2], sys.argv[3]
rounds, precisions, checkpoints = int(sys.argv[4]), sys.argv[5].split(","), sys.argv[6:]

def timed(command):
    with tempfile.NamedTemporaryFile("r") as out:
        done = subprocess.run(["/usr/bin/time", "-f", "%e %M", "-o", out.name] + command,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if done.returncode != 0:
            sys.exit(f"bench_classify.sh: {' '.join(command)} failed: {done.stderr.strip()}")
        wall, kib = out.read().split()[-2:]
        return float(wall), int(kib) / 1024

commands = {("help", "-", "-"): [alexnet, "--help"]}
for c in checkpoints:
    for p in precisions:
        flag = [] if p == "none" else ["--precision", p]
        commands[("classify", c, p)] = [alexnet, "classify", "--weights", c] + flag + [photo]
    if baseline:
        commands[("baseline classify", c, "default")] = [baseline, "classify", "--weights", c, photo]
samples = {key: [] for key in commands}
for r in range(rounds):
    load = os.getloadavg()[0]
    keys = list(commands) if r % 2 == 0 else list(commands)[::-1]
    for key in keys:
        samples[key].append(timed(commands[key]))
    print(json.dumps({"round": r + 1, "load": round(load, 2)}), flush=True)

for (what, checkpoint, precision), values in samples.items():
    walls = [w for w, _ in values]
    peaks = [m for _, m in values]
    row = {"figure": what, "checkpoint": checkpoint, "precision": precision, "rounds": rounds,
           "wall_s": round(statistics.median(walls), 3), "wall_range": [min(walls), max(walls)],
           "peak_mib": round(statistics.median(peaks), 1), "peak_range": [round(min(peaks), 1), round(max(peaks), 1)]}
    if checkpoint != "-":
        size = os.path.getsize(checkpoint) / 2**20
        row["checkpoint_mib"] = round(size, 1)
        row["peak_over_checkpoint"] = round(statistics.median(peaks) / size, 2)
    print(json.dumps(row), flush=True)
PY
