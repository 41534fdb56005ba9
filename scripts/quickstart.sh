#!/usr/bin/env bash
# The README's main job, end to end on a fresh Debian machine: install what is
# missing, build, import Fashion-MNIST (Debian's dataset-fashion-mnist), train the
# paper's architecture, evaluate on the 10,000 test images, classify a test image,
# export fc7 features and their nearest neighbours, draw conv1's kernels and the curves.
# The run lands in runs/quickstart/ (or --run DIR); the last line states the test top-1.
#
#   scripts/quickstart.sh [--epochs N] [--precision auto|fp32|bf16] [--ten-crop] [--run DIR] [--keep]
#
# --ten-crop tests on the average of ten crops' outputs (Section 4.1) instead of the
# centre crop; `--epochs 12 --ten-crop` is the longer recipe in docs/training.md.
set -euo pipefail
cd "$(dirname "$0")/.."

epochs=4
overwrite=--overwrite
run=runs/quickstart
ten_crop=""
precision=auto  # bf16 where the CPU multiplies in bf16 (faster, the same accuracy), else fp32
while [ $# -gt 0 ]; do
  case "$1" in
    --epochs) epochs=$2; shift 2 ;;
    --precision) precision=$2; shift 2 ;;
    --keep) overwrite=""; shift ;;
    --run) run=$2; shift 2 ;;
    --ten-crop) ten_crop=--ten-crop; shift ;;
    *) echo "quickstart.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

bash scripts/install-deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build build --target alexnet_cli
alexnet=build/bin/alexnet
data=data/fashion-mnist

step=$((epochs - (epochs / 4 > 1 ? epochs / 4 : 1)))
[ "$step" -ge 1 ] || step=1

if [ ! -f "$data/test/meta.txt" ] || [ ! -f "$data/train/meta.txt" ] || [ ! -f "$data/examples/test-00000.png" ]; then
  "$alexnet" import fashion-mnist --out "$data" --examples 10
fi

# Fashion-MNIST's 28x28 images, enlarged to 76 and cropped to 67: the smallest input
# the architecture admits, so two CPU cores train it in minutes. Caffe's
# initialisation: the paper's biases of 1 leave the loss flat for the first thousands
# of images. The paper's learning rate, divided by 10 for the last quarter of the
# epochs (the last one of 4).
"$alexnet" train --data "$data/train" --val "$data/test" --out "$run" $overwrite \
  --arch paper --init caffe --input-size 67 --resize 76 --pca-std 0 \
  --epochs "$epochs" --lr 0.01 --lr-policy step --step-epochs "$step" --batch-size 128 --workers 2 \
  --precision "$precision"

# In float32, as the run validated each epoch: the figure is the last epoch's (bf16
# inference, the default elsewhere, moves it by hundredths of a point).
"$alexnet" evaluate --weights "$run/best.pt" --data "$data/test" $ten_crop --precision fp32 --json > "$run/test.json"

# One test image, as a PNG file, classified as a user would.
"$alexnet" classify --weights "$run/best.pt" --top 3 "$data/examples/test-00000.png"

# fc7 features of the test set (Section 6.1) for retrieval, the nearest neighbours of the
# first test image (Figure 4), conv1's kernels (Figure 3) and the training curves.
"$alexnet" features --weights "$run/best.pt" --data "$data/test" --layer fc7 --out "$run/features-test-fc7.npy"
"$alexnet" neighbours --features "$run/features-test-fc7.npy" --query 0 --k 7 --grid "$run/neighbours-0.png"
"$alexnet" kernels --weights "$run/best.pt" --out "$run/conv1.png"
"$alexnet" plot "$run" --out "$run/curves.png"

/usr/bin/python3 - "$run/test.json" "$ten_crop" <<'PY'
import json, sys
result = json.load(open(sys.argv[1]))
crops = " (ten crops)" if sys.argv[2] else ""
for c in result["per_class"]:
    print(f"  {c['label']:<24} {100 * c['top1']:6.2f}% of {c['images']}")
print(f"top-5 {100 * result['top5']:.2f}%, loss {result['loss']:.4f}")
print(f"quickstart: test top-1 {100 * result['top1']:.2f}%{crops} on {result['images']} Fashion-MNIST test images")
PY
