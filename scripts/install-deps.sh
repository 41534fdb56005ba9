#!/usr/bin/env bash
# Installs the Debian packages this project needs, and only those that are missing.
# Idempotent; works as root or through sudo; prints what it installs.
set -euo pipefail

packages=(
  # Build
  cmake ninja-build g++ pkg-config
  # The library and apps (see docs/layout.md, "Dependencies and tests")
  libtorch-dev libgloo-dev libopenblas0-openmp
  libopencv-dev libcli11-dev libspdlog-dev catch2
  # JSON (metrics, evaluations, statistics, run configurations): header-only, private
  nlohmann-json3-dev
  # ONNX export and Caffe import: the ONNX and protobuf libraries Debian's LibTorch links,
  # and protoc for the classes of Caffe's messages (src/interop/caffe.proto)
  libonnx-dev libprotobuf-dev protobuf-compiler
  # zlib reads Fashion-MNIST's gzip'd IDX files; the data set is the main job's default
  zlib1g-dev dataset-fashion-mnist
  # ICU's normaliser: class names compared in Unicode NFC (folders copied from a Mac are NFD)
  libicu-dev
  # References for parity tests and baselines in benchmarks: the same LibTorch 1.13
  python3-torch python3-torchvision python3-numpy
  # The allocators PyTorch's CPU performance guide recommends, preloaded into the
  # Python baselines of scripts/bench.sh (the fastest is the one ratios are against)
  libtcmalloc-minimal4 libjemalloc2
  # ONNX's checker validates every exported file; OpenCV's DNN (Python) runs them in docs/deployment.md
  python3-onnx python3-opencv
  # Real photographs (and a palette PNG) for the data tests and benchmark
  python3-skimage
  # GNU time: peak memory of a command, in the tests of bounded memory
  time
  # clang with libFuzzer and the sanitizers' runtimes: scripts/fuzz.sh, scripts/sanitize.sh
  clang libclang-rt-14-dev
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi

sudo=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install-deps: not root and no sudo; install: ${missing[*]}" >&2; exit 1; }
  sudo=(sudo)
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
