#!/usr/bin/env bash
# The GPU check, for a machine with CUDA and PyTorch but none of Debian's -dev
# packages: builds the library, its tests and the benchmark against PyTorch's CUDA
# LibTorch, runs every test (the [cuda] ones on the GPU: towers on two streams, AMP
# steps), then one benchmark (fp32, and bf16 channels-last, against PyTorch's).
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

# The GPU tests first, with what they print (skips included), then the rest.
build-device/tests/alexnet_tests "[cuda]" --success --reporter compact | tail -20
build-device/tests/alexnet_tests "~[cuda]" --reporter compact | tail -3

# Training images/s at batch 256 on the GPU, ours and PyTorch's in one run, at float32
# and with bf16 autocast in channels-last (the same precision and layout on both sides).
for mode in "fp32 0" "bf16 1"; do
  set -- $mode
  cl=""; [ "$2" = 1 ] && cl=--channels-last
  for arch in paper torchvision; do
    "$python" bench/baseline.py train --arch "$arch" --device cuda --batch 256 --iterations 10 \
      --precision "$1" $cl
    executions=grouped; [ "$arch" = paper ] && executions="grouped towers"
    for execution in $executions; do
      build-device/bin/alexnet_bench train --arch "$arch" --execution "$execution" --device cuda \
        --batch 256 --iterations 10 --precision "$1" --channels-last "$2"
    done
  done
done
echo "device_check: done in $((SECONDS - start)) s"
