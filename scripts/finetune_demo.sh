#!/usr/bin/env bash
# Fine-tuning, shown on Fashion-MNIST in minutes on a CPU: a network trained on five
# classes (T-shirt/top, Trouser, Pullover, Dress, Coat) is fine-tuned on the other five
# (Sandal, Shirt, Sneaker, Bag, Ankle boot) from 100 images of each, against the same
# schedule from scratch and against the frozen feature extractor (conv1..conv5), each
# evaluated on all 5,000 test images of those five classes. Prints a Markdown table and
# writes it to RUN/table.md.
#
#   scripts/finetune_demo.sh [--run DIR] [--per-class N] [--epochs N] [--pretrain-epochs N]
#                            [--precision auto|fp32|bf16]
#
# The pretrained network is kept in RUN/pretrained and reused by a rerun with the same
# RUN (delete it to train it again); the fine-tuning runs are made anew every time.
set -euo pipefail
cd "$(dirname "$0")/.."

run=runs/finetune-demo
per_class=100
epochs=15
pretrain_epochs=2
precision=auto
while [ $# -gt 0 ]; do
  case "$1" in
    --run) run=$2; shift 2 ;;
    --per-class) per_class=$2; shift 2 ;;
    --epochs) epochs=$2; shift 2 ;;
    --pretrain-epochs) pretrain_epochs=$2; shift 2 ;;
    --precision) precision=$2; shift 2 ;;
    *) echo "finetune_demo.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

if [ ! -x build/bin/alexnet ]; then
  bash scripts/install-deps.sh
  cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
  cmake --build build --target alexnet_cli
fi
alexnet=build/bin/alexnet
data=$run/data
mkdir -p "$run"

# The five classes of each half as image folders (PNG files of Debian's
# dataset-fashion-mnist): A's whole training set and test set, B's first N training
# images of each class and its whole test set.
if [ ! -f "$data/done-$per_class" ]; then
  rm -rf "$data"
  folders=scripts/fashion_mnist_folders.py
  /usr/bin/python3 $folders "$data/A-train" train --classes 0-4
  /usr/bin/python3 $folders "$data/A-test" test --classes 0-4
  /usr/bin/python3 $folders "$data/B-train" train --classes 5-9 --per-class "$per_class"
  /usr/bin/python3 $folders "$data/B-test" test --classes 5-9
  touch "$data/done-$per_class"
fi

# The paper's network as the quickstart trains it (28x28 enlarged to 76, crops of 67,
# Caffe's initialisation), on A.
if [ ! -f "$run/pretrained/best.pt" ]; then
  "$alexnet" train --data "$data/A-train" --val "$data/A-test" --out "$run/pretrained" --overwrite \
    --arch paper --init caffe --input-size 67 --resize 76 --pca-std 0 --epochs "$pretrain_epochs" \
    --lr 0.01 --lr-policy fixed --batch-size 128 --workers 2 --precision "$precision"
fi

# The same schedule for the three (Caffe's fine-tuning recipe: a base rate ten times
# below training's, fc8 at ten times it), on B's few images, no validation while
# training; and from scratch at training's own rate too, so that the scratch run is
# not judged by a rate chosen for fine-tuning.
common=(--data "$data/B-train" --input-size 67 --resize 76 --pca-std 0 --epochs "$epochs"
        --lr-policy fixed --batch-size 50 --workers 2 --precision "$precision" --overwrite)
declare -A flags=(
  [scratch]="--arch paper --init caffe --lr 0.001 --lr-mult fc8=10"
  [scratch-0.01]="--arch paper --init caffe --lr 0.01"
  [finetune]="--weights $run/pretrained/best.pt --lr 0.001 --lr-mult fc8=10"
  [frozen]="--weights $run/pretrained/best.pt --lr 0.001 --freeze conv1..conv5 --lr-mult fc8=10"
)
declare -A seconds top1 loss
for mode in scratch scratch-0.01 finetune frozen; do
  start=$SECONDS
  # shellcheck disable=SC2086
  "$alexnet" train "${common[@]}" ${flags[$mode]} --out "$run/$mode"
  seconds[$mode]=$((SECONDS - start))
  "$alexnet" evaluate --weights "$run/$mode/best.pt" --data "$data/B-test" --json > "$run/$mode/test.json"
  read -r "top1[$mode]" "loss[$mode]" < <(/usr/bin/python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(f\"{100*r['top1']:.2f} {r['loss']:.3f}\")" "$run/$mode/test.json")
done

{
  echo "| start | trains | rate | test top-1 | test loss | training time |"
  echo "|---|---|---|---|---|---|"
  echo "| from scratch | every layer | 0.001, fc8 x10 | ${top1[scratch]}% | ${loss[scratch]} | ${seconds[scratch]} s |"
  echo "| from scratch | every layer | 0.01 | ${top1[scratch-0.01]}% | ${loss[scratch-0.01]} | ${seconds[scratch-0.01]} s |"
  echo "| fine-tuned from A's network | every layer | 0.001, fc8 x10 | ${top1[finetune]}% | ${loss[finetune]} | ${seconds[finetune]} s |"
  echo "| fine-tuned, conv1..conv5 frozen | fc6..fc8 | 0.001, fc8 x10 | ${top1[frozen]}% | ${loss[frozen]} | ${seconds[frozen]} s |"
} | tee "$run/table.md"
pretrained=$(/usr/bin/python3 -c "import json,sys; print(f\"{100*json.loads(open(sys.argv[1]).readlines()[-1])['val_top1']:.2f}\")" "$run/pretrained/metrics.jsonl")
echo "finetune_demo: A's network ${pretrained}% top-1 on A's test images; $((per_class * 5)) training images of B, $epochs epochs each; table in $run/table.md"
