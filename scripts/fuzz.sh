#!/usr/bin/env bash
# Fuzzing every reader of untrusted bytes with libFuzzer under AddressSanitizer and
# UndefinedBehaviorSanitizer (clang): PyTorch state dicts (zip and legacy pickles),
# checkpoints, packed sets (meta.txt, classes.txt, shards), IDX files, list and
# class-name files, and the image decode-and-resize path. The library is built
# instrumented into build-fuzz/.
#
#   scripts/fuzz.sh --replay                 every corpus input once (CI runs this)
#   scripts/fuzz.sh --run SECONDS [TARGET]   fuzz each target (or one), then merge what
#                                            it found into fuzz/corpus/TARGET, minimised
#   scripts/fuzz.sh --seeds                  write the seed corpora again
#
# A crash leaves its input as build-fuzz/crash-*; add it to fuzz/corpus/TARGET (so the
# replay keeps it fixed) when the fix is in.
set -euo pipefail
cd "$(dirname "$0")/.."

targets=(state_dict checkpoint packed idx lists image caffe)
mode=${1:---replay}

bash scripts/install-deps.sh >&2
flags="-O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined,fuzzer-no-link -fno-sanitize-recover=undefined"
cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=None -DCMAKE_CXX_COMPILER=clang++ \
  "-DCMAKE_CXX_FLAGS=$flags" "-DCMAKE_EXE_LINKER_FLAGS=-fsanitize=address,undefined" \
  -DALEXNET_FUZZ=ON -DALEXNET_BUILD_APPS=OFF -DALEXNET_BUILD_TESTS=OFF -DALEXNET_BUILD_BENCHMARKS=OFF \
  -DALEXNET_INSTALL=OFF > build-fuzz.log 2>&1 || { tail -30 build-fuzz.log; exit 1; }
cmake --build build-fuzz >> build-fuzz.log 2>&1 || { grep -m5 -A5 "error" build-fuzz.log; exit 1; }
# LibTorch is not instrumented: its own leaks at exit and its containers are not ours.
export ASAN_OPTIONS=detect_leaks=0:detect_container_overflow=0:allocator_may_return_null=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

case "$mode" in
  --seeds)
    build-fuzz/fuzz/make_seeds /usr/lib/python3/dist-packages/skimage/data/astronaut.png fuzz/corpus
    /usr/bin/python3 - <<'PY'
import collections, torch
state = collections.OrderedDict([("features.0.weight", torch.arange(6.).view(2, 3)),
                                 ("classifier.1.bias", torch.zeros(2, dtype=torch.float64))])
torch.save(state, "fuzz/corpus/state_dict/small-legacy.pth", _use_new_zipfile_serialization=False)
torch.save({"state_dict": state, "epoch": 3}, "fuzz/corpus/state_dict/wrapped-zip.pth")
PY
    ;;
  --replay)
    for t in "${targets[@]}"; do
      echo "== fuzz_$t: $(ls fuzz/corpus/$t | wc -l) inputs"
      build-fuzz/fuzz/fuzz_$t -runs=0 -rss_limit_mb=3072 fuzz/corpus/$t 2>&1 | tail -2
    done
    ;;
  --run)
    seconds=${2:?--run SECONDS [TARGET]}
    [ $# -ge 3 ] && targets=("$3")
    for t in "${targets[@]}"; do
      found=build-fuzz/found/$t
      mkdir -p "$found"
      echo "== fuzz_$t for $seconds s"
      (cd build-fuzz && fuzz/fuzz_$t -max_total_time="$seconds" -rss_limit_mb=3072 -timeout=120 -print_final_stats=1 \
        "../$found" "../fuzz/corpus/$t" 2>&1 | grep -E "^#[0-9]+.*(DONE|INITED)|stat::|ERROR|SUMMARY" | tail -12)
      # The corpus keeps a minimal set with the same coverage.
      mkdir -p build-fuzz/merged/$t
      build-fuzz/fuzz/fuzz_$t -merge=1 -rss_limit_mb=3072 build-fuzz/merged/$t "fuzz/corpus/$t" "$found" > /dev/null 2>&1
      rm -rf "fuzz/corpus/$t" && mv build-fuzz/merged/$t "fuzz/corpus/$t"
    done
    ;;
  *) echo "fuzz.sh: --replay, --run SECONDS [TARGET] or --seeds" >&2; exit 2 ;;
esac
