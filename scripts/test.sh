#!/usr/bin/env bash
# The README's test command: installs what is missing, builds (Release) and runs
# the whole suite through CTest. CI runs exactly this (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build build
cd build
# A skip for a missing prerequisite fails here (tests/helpers.h): only the lack of a GPU
# may skip a test in CI.
export ALEXNET_STRICT_SKIPS=1
ctest --output-on-failure --timeout 900 -j "$(nproc)"
