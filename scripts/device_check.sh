#!/usr/bin/env bash
# The GPU check: one prepared run for a machine with CUDA and PyTorch's wheel but none
# of Debian's -dev packages (scripts/device_check.sh, or the `device` tool's command).
# It builds the library, the tests and the benchmark against PyTorch's LibTorch, runs
# the tests that need a GPU or several processes (CI runs the rest), benchmarks
# training against PyTorch's (fp32, and bf16 channels-last; the paper's towers on two
# streams against grouped), runs our ONNX export in ONNX Runtime (CUDA and CPU) against
# our logits and, with two GPUs or more, measures data-parallel scaling.
#
# Stages run in order, each under its own time limit and the whole under a deadline;
# a stage that fails or runs out of time stops only the stages that need it. Every
# log goes to $OUT/device-check/ (or build-device/device-check/ without $OUT), and
# the last line printed is one JSON summary: each stage's status, seconds and reason,
# and the figures.
#
#   with Debian's packages, first: scripts/device_check.sh --prepare  (Catch2's header
#                                   into .device/, which git ignores: carry .device; and,
#                                   once build/ is built, ONNX models with our logits:
#                                   a machine without libonnx-dev cannot export them)
#   on a GPU:                       scripts/device_check.sh [--deadline SECONDS]
#   on a CPU, to rehearse:          scripts/device_check.sh --rehearse  (the same stages
#                                   against Debian's LibTorch, CUDA tests skipping with
#                                   their reason, a tiny benchmark; .ci/run runs it)
#   the tests' selection:           scripts/device_check.sh --selection
set -uo pipefail
cd "$(dirname "$0")/.."
self="$PWD/scripts/device_check.sh"

# The tests the device runs: those that need a GPU or several processes. In Catch2 v2
# a spec made only of exclusions also selects hidden [.] tests (the workers that other
# tests start), so each alternative excludes them explicitly; the apps' tests ([cli])
# are not built there. tests/test_process_group.cpp checks this selection.
readonly selection_cuda='[cuda]~[.]~[cli]'
readonly selection_distributed='[distributed]~[cuda]~[.]~[cli]'

stage_names=(environment configure build cuda_tests distributed_tests onnxruntime benchmark ratios scaling)

case "${1:-}" in
  --selection)
    printf '%s\n' "$selection_cuda" "$selection_distributed"
    exit 0 ;;
  --prepare)
    # The header-only libraries a pip LibTorch with CUDA comes without: Catch2 v2 and nlohmann/json.
    mkdir -p .device/include
    cp -r /usr/include/catch2 /usr/include/nlohmann .device/include/
    echo "prepared .device/include (catch2, nlohmann); carry .device to the machine with the GPU"
    # Networks of three weight values compress to a few MB (the carry limit is 64 MiB).
    if [ -x build/bin/alexnet_bench ]; then
      tmp=$(mktemp -d)
      if build/bin/alexnet_bench onnx-reference --out "$tmp"; then
        XZ_OPT=${XZ_OPT:-"-1 -T0"} tar -cJf .device/onnx-reference.tar.xz -C "$tmp" . && echo "prepared .device/onnx-reference.tar.xz ($(du -h .device/onnx-reference.tar.xz | cut -f1))"
      else
        echo "no ONNX models: build/bin/alexnet_bench was built without ONNX export"
      fi
      rm -rf "$tmp"
    else
      echo "no ONNX models: build build/ first (scripts/test.sh), then --prepare again"
    fi
    exit 0 ;;
esac

# ---- Stages: each runs as `device_check.sh --stage NAME` in its own process, reads
# the settings below from the environment, and ends 0 (pass), 77 (skipped: the reason
# in $logs/NAME.reason) or anything else (failed: the reason in $logs/NAME.reason, or
# the log's last line).
skip() { echo "$1" > "$logs/$stage.reason"; echo "skipped: $1"; exit 77; }
fail() { echo "$1" > "$logs/$stage.reason"; echo "failed: $1"; exit 1; }

stage_environment() {
  "$python" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "gpus", torch.cuda.device_count())' ||
    fail "python3 cannot import torch"
  nvidia-smi -L 2>&1 || echo "nvidia-smi: not here"
  cmake --version | head -1
  "${CXX:-c++}" --version | head -1
  nproc
  if [ "$mode" = device ] && [ "$("$python" -c 'import torch; print(torch.cuda.device_count())')" = 0 ]; then
    echo "warning: PyTorch sees no GPU; the CUDA tests will skip"
  fi
}

stage_configure() {
  local prefix nccl
  prefix=$("$python" -c 'import torch; print(torch.utils.cmake_prefix_path)') || fail "no torch.utils.cmake_prefix_path"
  nccl=$("$python" -c 'import torch
v = torch.cuda.nccl.version() if torch.cuda.is_available() else ""
if isinstance(v, int): v = (v // 10000, v // 100 % 100, v % 100) if v >= 10000 else (v // 1000, v // 100 % 10, v % 100)
print(".".join(str(x) for x in v) if v else "")' 2>/dev/null)
  echo "PyTorch's NCCL: ${nccl:-none}"
  local args=(-S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release "-DCMAKE_PREFIX_PATH=$prefix"
              -DALEXNET_BUILD_APPS=OFF -DALEXNET_BUILD_DATA=OFF -DALEXNET_INSTALL=OFF
              "-DALEXNET_CATCH2_INCLUDE_DIR=$PWD/.device/include" "-DALEXNET_TORCH_NCCL_VERSION=$nccl"
              -DCMAKE_DISABLE_FIND_PACKAGE_nlohmann_json=ON "-DALEXNET_JSON_INCLUDE_DIR=$PWD/.device/include")
  echo "cmake ${args[*]}"
  cmake "${args[@]}" || fail "cmake failed: $(grep -m1 -A2 'CMake Error' "$logs/configure.log" | tr '\n' ' ' | cut -c1-300)"
  grep -h "alexnet: " "$logs/configure.log" | sed 's/^-- //' > "$logs/configure.alexnet"
}

stage_build() {
  cmake --build "$build" -j "$(nproc)" || fail "build failed: $(grep -m1 'error' "$logs/build.log" | cut -c1-300)"
}

# Runs the test binary on one selection with the console reporter (every failure and
# every skip's reason in the log) and summarises its counts.
run_tests() {
  local spec=$1 tests="$build/tests/alexnet_tests"
  [ -x "$tests" ] || fail "no test binary at $tests"
  echo "selection: $spec"
  "$tests" --list-test-names-only "$spec" | sed 's/^/  /'
  # A skip is counted from the log here: the exit code CTest's runs ask for one
  # (ALEXNET_SKIP_CODE, tests/CMakeLists.txt) would read as a failure.
  env -u ALEXNET_SKIP_CODE "$tests" "$spec" --reporter console --durations yes
  local status=$?
  # --durations prints one "seconds s: name" line per test case run; a skip is a warning.
  local ran skipped
  ran=$(grep -c '^[0-9.]* s: ' "$logs/$stage.log")
  skipped=$(grep -c 'skipped: ' "$logs/$stage.log")
  echo "{\"ran\": $ran, \"skipped\": $skipped, \"exit\": $status}" > "$logs/$stage.figures"
  [ "$status" = 0 ] || fail "$(grep -m1 -E '^test cases:' "$logs/$stage.log" || echo "the test binary exited with $status")"
  # On a machine with a GPU a test may skip for want of a second GPU, never for want of one:
  # tests that did not see the GPU have checked nothing.
  if [ "$mode" = device ]; then
    local blind
    blind=$(grep -c -E 'skipped: .*(no CUDA device|reports no CUDA)' "$logs/$stage.log")
    [ "$blind" = 0 ] || fail "$blind tests skipped for want of a CUDA device on a machine that has one"
    [ "$ran" = 0 ] || [ "$skipped" -lt "$ran" ] || fail "every one of the $ran tests skipped"
  fi
}

stage_cuda_tests() { run_tests "$selection_cuda"; }
stage_distributed_tests() { run_tests "$selection_distributed"; }

# Our ONNX export in ONNX Runtime: CUDA (TF32 off) and CPU, logits against ours. The
# models come from --prepare (exported where libonnx-dev is: a pip LibTorch cannot); the rehearsal
# exports them with its own build.
stage_onnxruntime() {
  local dir="$build/onnx-reference"
  rm -rf "$dir" && mkdir -p "$dir"
  if [ "$mode" = rehearsal ]; then
    "$build/bin/alexnet_bench" onnx-reference --out "$dir" || fail "alexnet_bench onnx-reference failed"
  else
    [ -f .device/onnx-reference.tar.xz ] || skip "no .device/onnx-reference.tar.xz (run --prepare after building, carry .device)"
    tar -xJf .device/onnx-reference.tar.xz -C "$dir" || fail "cannot unpack .device/onnx-reference.tar.xz"
  fi
  "$python" -c 'import onnxruntime' 2> /dev/null || skip "onnxruntime is not installed for $python"
  "$python" - "$dir" > "$logs/onnxruntime.figures" <<'PY' || fail "$(tail -n 1 "$logs/onnxruntime.figures")"
import json, os, sys
import numpy as np, onnxruntime as ort
d = sys.argv[1]
figures = {"version": ort.__version__}
ok = True
for net in json.load(open(os.path.join(d, "manifest.json"))):
    x = np.fromfile(os.path.join(d, net["name"] + ".input.f32"), "<f4").reshape(net["input"])
    ref = np.fromfile(os.path.join(d, net["name"] + ".logits.f32"), "<f4").reshape(net["logits"])
    runs = [("cpu", ["CPUExecutionProvider"], 1e-5)]
    if "CUDAExecutionProvider" in ort.get_available_providers():
        runs.insert(0, ("cuda", [("CUDAExecutionProvider", {"use_tf32": 0}), "CPUExecutionProvider"], 1e-4))
    for where, providers, tolerance in runs:
        session = ort.InferenceSession(os.path.join(d, net["name"] + ".onnx"), providers=providers)
        y = session.run(None, {"images": x})[0]
        e = float(np.linalg.norm(y.astype(np.float64) - ref) / np.linalg.norm(ref))
        figures[net["name"] + "_" + where] = float(f"{e:.3g}")
        ok = ok and e < tolerance
print(json.dumps(figures))
if not ok:
    print("logits differ beyond the tolerance: " + json.dumps(figures))
    sys.exit(1)
PY
  cat "$logs/onnxruntime.figures"
}

# Training images/s, ours and PyTorch's, interleaved in rounds (baseline, ours, ...),
# at float32 and at bf16 autocast in channels-last: the same precision, layout and
# TF32 setting (off) on both sides.
stage_benchmark() {
  local results="$logs/benchmark.jsonl" round mode_spec arch execution
  : > "$results"
  local device=cuda batch=256 iterations=10
  if [ "$mode" = rehearsal ]; then device=cpu batch=2 iterations=1; fi
  for ((round = 1; round <= rounds; round++)); do
    for mode_spec in "fp32 0" "bf16 1"; do
      set -- $mode_spec
      local cl=()
      [ "$2" = 1 ] && cl=(--channels-last)
      for arch in paper torchvision; do
        "$python" bench/baseline.py train --arch "$arch" --device "$device" --batch "$batch" \
          --iterations "$iterations" --precision "$1" "${cl[@]}" --tf32 0 |
          sed "s/}\$/, \"round\": $round}/" | tee -a "$results" || fail "bench/baseline.py failed"
        local executions=grouped
        [ "$arch" = paper ] && executions="grouped towers"
        for execution in $executions; do
          "$build/bin/alexnet_bench" train --arch "$arch" --execution "$execution" --device "$device" \
            --batch "$batch" --iterations "$iterations" --precision "$1" --channels-last "$2" --tf32 0 |
            sed "s/}\$/, \"round\": $round}/" | tee -a "$results" || fail "alexnet_bench failed"
        done
      done
    done
  done
}

# The ratios the targets are set on, each the median over the rounds with its range:
# ours / PyTorch's, and the towers on two streams / grouped.
stage_ratios() {
  [ -s "$logs/benchmark.jsonl" ] || fail "no benchmark results"
  "$python" - "$logs/benchmark.jsonl" > "$logs/ratios.figures" <<'PY' || fail "could not compute the ratios"
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.startswith("{")]
def value(r): return r.get("ours", r.get("baseline"))
def pick(precision, arch, key, execution=None):
    return {r["round"]: value(r) for r in rows
            if r["precision"] == precision and r["arch"] == arch and key in r
            and (execution is None or r.get("execution") == execution)}
def ratio(a, b):
    pairs = [a[k] / b[k] for k in a if k in b and b[k]]
    if not pairs: return None
    return {"median": round(statistics.median(pairs), 3), "min": round(min(pairs), 3),
            "max": round(max(pairs), 3), "rounds": len(pairs)}
figures = {}
for precision in ("fp32", "bf16"):
    for arch in ("paper", "torchvision"):
        figures[f"ours_over_pytorch_{arch}_{precision}"] = ratio(pick(precision, arch, "ours", "grouped"),
                                                               pick(precision, arch, "baseline"))
    figures[f"towers_over_grouped_{precision}"] = ratio(pick(precision, "paper", "ours", "towers"),
                                                        pick(precision, "paper", "ours", "grouped"))
print(json.dumps(figures))
PY
  cat "$logs/ratios.figures"
  # The targets (docs/parallel.md, "GPU"): every ratio at least 1.0. A rehearsal's batch of 2 on
  # the CPU says nothing about them.
  [ "$mode" = device ] || return 0
  local below
  below=$("$python" -c 'import json, sys
figures = json.load(open(sys.argv[1]))
print(", ".join(k + " " + str(v["median"]) for k, v in figures.items() if v and v["median"] < 1.0))' "$logs/ratios.figures")
  if [ -n "$below" ]; then
    echo "$below < 1.0, the target" > "$logs/$stage.reason"
    echo "below target: $below"
    exit 3
  fi
}

# Data parallel across the GPUs: one process per GPU (NCCL when built in) against one.
# Rehearsed on the CPU with two processes over Gloo.
stage_scaling() {
  local gpus device=cuda batch=256 iterations=10
  gpus=$("$python" -c 'import torch; print(torch.cuda.device_count())') || fail "python3 cannot import torch"
  local processes=$gpus
  if [ "$mode" = rehearsal ]; then device=cpu batch=2 iterations=1 processes=2; fi
  [ "$processes" -ge 2 ] || skip "needs two GPUs or more ($gpus here)"
  local args=(train --arch paper --device "$device" --batch "$batch" --iterations "$iterations" --tf32 0)
  local one many port=$((29500 + RANDOM % 1000)) pids=() rank
  one=$("$build/bin/alexnet_bench" "${args[@]}") || fail "one process failed"
  for ((rank = 0; rank < processes; rank++)); do
    WORLD_SIZE=$processes RANK=$rank LOCAL_RANK=$rank MASTER_ADDR=127.0.0.1 MASTER_PORT=$port \
      "$build/bin/alexnet_bench" "${args[@]}" > "$logs/scaling-$rank.json" &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid" || fail "a rank of the data-parallel run failed"; done
  many=$(cat "$logs/scaling-0.json")
  echo "$one"
  echo "$many"
  "$python" -c 'import json, sys; a, b = json.loads(sys.argv[1]), json.loads(sys.argv[2]); print(json.dumps({"data_parallel_scaling": {"processes": b["processes"], "backend": b["backend"], "device": b["device"], "ratio": round(b["ours"] / a["ours"], 2), "ideal": b["processes"]}}))' \
    "$one" "$many" | tee "$logs/scaling.figures"
}

if [ "${1:-}" = --stage ]; then
  stage=$2
  "stage_$stage"
  exit $?
fi

# ---- The driver.
mode=device
deadline=480  # the whole run, build included, on 16 cores
while [ $# -gt 0 ]; do
  case "$1" in
    --rehearse) mode=rehearsal; deadline=900; shift ;;  # plumbing, on a slower machine
    --deadline) deadline=$2; shift 2 ;;
    *) echo "device_check: unknown argument $1 (--prepare, --rehearse, --deadline S, --selection)" >&2; exit 2 ;;
  esac
done
python=${PYTHON:-python3}
build=build-device
rounds=2
if [ "$mode" = rehearsal ]; then
  python=${PYTHON:-/usr/bin/python3}  # Debian's, with python3-torch
  build=build-rehearse
  rounds=1  # the plumbing, not the figures: one round keeps CI short
fi
logs=${OUT:+$OUT/device-check}
logs=${logs:-$build/device-check}
rm -rf "$logs"
mkdir -p "$logs"
export mode python build logs rounds
# NCCL says what goes wrong, not what goes right.
export NCCL_DEBUG=${NCCL_DEBUG:-WARN}
exec 3>&1 4>&2
exec > >(tee "$logs/device_check.log") 2>&1
tee_pid=$!

# Per stage: its time limit (seconds) and the stages it needs.
declare -A limit=([environment]=60 [configure]=180 [build]=420 [cuda_tests]=180 [distributed_tests]=150
                  [onnxruntime]=90 [benchmark]=240 [ratios]=30 [scaling]=120)
declare -A needs=([environment]="" [configure]="environment" [build]="configure" [cuda_tests]="build"
                  [distributed_tests]="build" [onnxruntime]="environment" [benchmark]="build" [ratios]="benchmark"
                  [scaling]="build")
# The rehearsal exports its models with its own build.
[ "$mode" = rehearsal ] && needs[onnxruntime]="build"
declare -A status reason took
reserve=5  # seconds kept for the summary
started=$SECONDS

if [ "$mode" = rehearsal ] && { [ ! -f .device/include/catch2/catch.hpp ] || [ ! -f .device/include/nlohmann/json.hpp ]; }; then
  bash "$self" --prepare
fi

echo "device_check: $mode, logs in $logs, deadline ${deadline} s"
for stage in "${stage_names[@]}"; do
  missing=""
  for need in ${needs[$stage]}; do
    [ "${status[$need]}" = pass ] || missing="$need ${status[$need]}"
  done
  left=$((deadline - (SECONDS - started) - reserve))
  if [ -n "$missing" ]; then
    status[$stage]=skipped reason[$stage]="needs $missing" took[$stage]=0
  elif [ "$left" -le 0 ]; then
    status[$stage]=skipped reason[$stage]="no time left before the ${deadline} s deadline" took[$stage]=0
  elif [ "$stage" = configure ] && { [ ! -f .device/include/catch2/catch.hpp ] || [ ! -f .device/include/nlohmann/json.hpp ]; }; then
    status[$stage]=failed reason[$stage]="no .device/include/catch2 or nlohmann (run --prepare here and carry .device)" took[$stage]=0
  else
    cap=${limit[$stage]}
    [ "$cap" -le "$left" ] || cap=$left
    echo "== $stage (limit ${cap} s)"
    rm -f "$logs/$stage.reason"
    t0=$SECONDS
    timeout --kill-after=10 "$cap" bash "$self" --stage "$stage" > "$logs/$stage.log" 2>&1
    code=$?
    took[$stage]=$((SECONDS - t0))
    tail -n 15 "$logs/$stage.log" | sed 's/^/   /'
    case $code in
      0) status[$stage]=pass reason[$stage]="" ;;
      77) status[$stage]=skipped reason[$stage]=$(cat "$logs/$stage.reason") ;;
      3) status[$stage]=below_target reason[$stage]=$(cat "$logs/$stage.reason") ;;
      124 | 137) status[$stage]=failed reason[$stage]="timed out after ${cap} s" ;;
      *) status[$stage]=failed
         reason[$stage]=$(cat "$logs/$stage.reason" 2>/dev/null || tail -n 1 "$logs/$stage.log") ;;
    esac
  fi
  echo "== $stage: ${status[$stage]} in ${took[$stage]} s${reason[$stage]:+ (${reason[$stage]})}"
done

# The summary: one JSON line, the last thing printed.
summary_args=()
for stage in "${stage_names[@]}"; do
  summary_args+=("$stage" "${status[$stage]}" "${took[$stage]}" "${reason[$stage]}")
done
"$python" - "$mode" "$((SECONDS - started))" "$logs" "${summary_args[@]}" <<'PY'
import json, os, sys
mode, seconds, logs, rest = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
stages, figures = {}, {}
for i in range(0, len(rest), 4):
    name, status, took, reason = rest[i:i + 4]
    stages[name] = {"status": status, "seconds": int(took)}
    if reason:
        stages[name]["reason"] = reason
    path = os.path.join(logs, name + ".figures")
    if os.path.exists(path):
        try:
            figures.update(json.loads(open(path).read()) if name in ("ratios", "scaling") else {name: json.loads(open(path).read())})
        except ValueError:
            pass
path = os.path.join(logs, "configure.alexnet")
if os.path.exists(path):
    figures["configure"] = [line.strip() for line in open(path) if line.strip()]
ok = all(s["status"] != "failed" for s in stages.values())
below = any(s["status"] == "below_target" for s in stages.values())
verdict = "fail" if not ok else "below_target" if below else "pass"
print(json.dumps({"device_check": verdict, "mode": mode, "seconds": seconds,
                  "stages": stages, "figures": figures}))
sys.exit({"pass": 0, "below_target": 2}.get(verdict, 1))
PY
code=$?
# Let tee write the last line before the script ends.
exec 1>&3 2>&4
wait "$tee_pid"
exit "$code"
