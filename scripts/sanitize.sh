#!/usr/bin/env bash
# The library, the tool and the whole test suite built with AddressSanitizer and
# UndefinedBehaviorSanitizer (clang) into build-sanitize/, and run. Slower than the
# normal suite (about 3x); not part of CI, which replays the fuzz corpora under the
# same sanitizers (scripts/fuzz.sh --replay).
#
#   scripts/sanitize.sh [CTEST ARGS...]     e.g. -R "LRN"
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh >&2
flags="-O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined"
cmake -S . -B build-sanitize -G Ninja -DCMAKE_BUILD_TYPE=None -DCMAKE_CXX_COMPILER=clang++ \
  "-DCMAKE_CXX_FLAGS=$flags" "-DCMAKE_EXE_LINKER_FLAGS=-fsanitize=address,undefined" -DALEXNET_INSTALL=OFF
cmake --build build-sanitize
# LibTorch is not instrumented: its own allocations at exit, and its containers, are not ours.
export ASAN_OPTIONS=detect_leaks=0:detect_container_overflow=0:abort_on_error=0
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
cd build-sanitize
ctest --output-on-failure --timeout 2700 -j "$(nproc)" "$@"
