#!/usr/bin/env bash
# The paper's claims on Fashion-MNIST, on a CPU (docs/paper.md, "The paper's claims, measured"):
# the paper's network and each of its seven alternatives (alexnet ablate), trained on
# the same N images of each class (default 1,000: 10,000 images) for E epochs (default
# 10, batches of 64) with 3 seeds,
# validated on 200 test images of each class (2,000), at the quickstart's input size
# (28x28 enlarged to 76, crops of 67). Writes RUN/ablation.md, ablation-results.json,
# figure1.png and differences.png. Stopped, it continues when run again.
#
#   scripts/ablation_study.sh [--run DIR] [--per-class N] [--epochs E] [--batch-size B]
#                             [--seeds 1,2,3] [--variants all|paper,tanh,...]
#                             [--precision auto|fp32|bf16]
set -euo pipefail
cd "$(dirname "$0")/.."

run=runs/ablation
per_class=1000
epochs=10
batch=64
seeds=1,2,3
precision=auto
variants=all
init=pytorch
while [ $# -gt 0 ]; do
  case "$1" in
    --run) run=$2; shift 2 ;;
    --per-class) per_class=$2; shift 2 ;;
    --epochs) epochs=$2; shift 2 ;;
    --seeds) seeds=$2; shift 2 ;;
    --batch-size) batch=$2; shift 2 ;;
    --variants) variants=$2; shift 2 ;;
    --init) init=$2; shift 2 ;;
    --precision) precision=$2; shift 2 ;;
    *) echo "ablation_study.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

if [ ! -x build/bin/alexnet ]; then
  bash scripts/install-deps.sh
  cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
  cmake --build build --target alexnet_cli
fi
data=$run-data-$per_class
# The first N training images and the first 200 test images of each class, as PNG
# files of Debian's dataset-fashion-mnist.
if [ ! -f "$data/done" ]; then
  rm -rf "$data"
  /usr/bin/python3 scripts/fashion_mnist_folders.py "$data/train" train --per-class "$per_class"
  /usr/bin/python3 scripts/fashion_mnist_folders.py "$data/val" test --per-class 200
  touch "$data/done"
fi

# One recipe for every variant: PyTorch's fan-in initialisation (with the paper's and
# Caffe's N(0, 0.01) weights the eight-layer tanh network stays at chance for its first
# epochs, see docs/paper.md), rate 0.01 divided by 10 for the last fifth of the epochs.
step=$((epochs - (epochs / 5 > 1 ? epochs / 5 : 1)))
build/bin/alexnet ablate --out "$run" --data "$data/train" --val "$data/val" --seeds "$seeds" \
  --arch paper --init "$init" --input-size 67 --resize 76 --epochs "$epochs" --batch-size "$batch" --variants "$variants" \
  --lr 0.01 --lr-policy step --step-epochs "$step" --workers 2 --precision "$precision"
