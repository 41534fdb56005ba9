"""Interleaved benchmark rounds for scripts/bench.sh: ours and each baseline run one
after another (A, B, C, A, B, C, ...) so that a change in the machine's load touches
both (fp32 baselines, ours fp32, ours bf16, bf16 baselines, reversed every other
round, so that bf16 over fp32 also compares adjacent runs); each figure is the median
over rounds, each ratio the median of the per-round ratios with its range. Prints one JSON object per line, then a table.

Baselines: Python on Debian's python3-torch (the same LibTorch) with glibc's allocator
and with tcmalloc and jemalloc preloaded, jemalloc with the MALLOC_CONF of PyTorch's
CPU performance guide (which recommends either), and also channels-last with tcmalloc (as
the guide runs CNNs, and as ours runs on a CPU); a ratio is against the fastest of them in that round. Roofline: the CPU's
GEMM rate at the same precision and thread count (alexnet_bench gemm), beside each
network's achieved GFLOP/s (multiply-adds per image from alexnet::summarize, x 3 for
training: forward, and the two products of the backward pass).

  rounds.py --bench build/bin/alexnet_bench [--threads N] [--rounds R] [--iterations N]
            [--batch N] [--only WORD]
"""
import argparse
import glob
import json
import os
import resource
import statistics
import subprocess
import sys
import time

PYTHON = "/usr/bin/python3"  # Debian's, where python3-torch is installed
HERE = os.path.dirname(os.path.abspath(__file__))

# (mode, arch, precision): the networks timed.
NETWORKS = [
    ("train", "paper", "fp32"),
    ("train", "paper", "bf16"),
    ("train", "torchvision", "fp32"),
    ("infer", "paper", "fp32"),
    ("infer", "paper", "bf16"),
    ("infer", "torchvision", "fp32"),
]


def allocators():
    """The preloadable allocators this machine has (Debian: libtcmalloc-minimal4, libjemalloc2)."""
    found = {"glibc": None}
    for name, pattern in [("tcmalloc", "libtcmalloc_minimal.so.4"), ("jemalloc", "libjemalloc.so.2")]:
        paths = sorted(glob.glob(f"/usr/lib/*/{pattern}") + glob.glob(f"/usr/lib/{pattern}"))
        if paths:
            found[name] = paths[0]
    return found


def run_json(command, env=None):
    out = subprocess.run(command, check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


class LoadMonitor:
    """CPU time other processes took during a round, in cores, and the 1-minute load
    average at its end. The load average counts our own `threads` threads too, so it
    is the figure of others only beyond them."""

    def __init__(self):
        self.start()

    @staticmethod
    def busy():
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        idle = fields[3] + fields[4]  # idle, iowait
        return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def children():
        r = resource.getrusage(resource.RUSAGE_CHILDREN)
        return r.ru_utime + r.ru_stime

    def start(self):
        self.t0, self.busy0, self.children0 = time.monotonic(), self.busy(), self.children()

    def others(self):
        wall = time.monotonic() - self.t0
        other = (self.busy() - self.busy0) - (self.children() - self.children0)
        return max(0.0, other / wall), os.getloadavg()[0]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bench", required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--only", default="",
                        help="only the networks whose mode_arch_precision holds this word, or lrn, or pool")
    args = parser.parse_args()
    common = ["--threads", str(args.threads), "--iterations", str(args.iterations)]
    allocs = allocators()
    missing = {"tcmalloc", "jemalloc"} - set(allocs)
    if missing:
        print(f"rounds.py: no {', '.join(sorted(missing))} here (scripts/install-deps.sh installs them)",
              file=sys.stderr)

    networks = [n for n in NETWORKS if args.only in "_".join(n)]
    samples = {}  # key -> list per round
    def add(key, value):
        samples.setdefault(key, []).append(value)

    warnings = []
    monitor = LoadMonitor()
    for r in range(1, args.rounds + 1):
        monitor.start()
        for precision in ("fp32", "bf16"):
            g = run_json([args.bench, "gemm", "--precision", precision, "--threads", str(args.threads),
                          "--iterations", "3"])
            add(("gemm", precision), g["gflop_per_s"])
        # Per network: its fp32 baselines, ours in fp32, ours in bf16, its bf16 baselines
        # (reversed every other round): ours stays next to its baselines, and bf16 over
        # fp32 compares runs seconds apart, not minutes with the baselines between.
        def baselines(mode, arch, precision):
            key = (mode, arch, precision)
            variants = list(allocs.items())
            if "tcmalloc" in allocs:
                # PyTorch's guide also runs CNNs channels-last on CPUs.
                variants.append(("tcmalloc_channels_last", allocs["tcmalloc"]))
            for name, path in variants:
                env = dict(os.environ)
                if path:
                    env["LD_PRELOAD"] = path
                if name == "jemalloc":  # PyTorch's CPU performance guide's settings for it
                    env["MALLOC_CONF"] = ("oversize_threshold:1,background_thread:true,metadata_thp:auto,"
                                          "dirty_decay_ms:9000000000,muzzy_decay_ms:9000000000")
                layout = ["--channels-last"] if name.endswith("channels_last") else []
                base = run_json([PYTHON, os.path.join(HERE, "baseline.py"), mode, "--arch", arch, "--precision",
                                 precision, "--batch", str(args.batch)] + layout + common, env=env)
                add(key + (name,), base["baseline"])

        groups = {}
        for mode, arch, precision in networks:
            groups.setdefault((mode, arch), []).append(precision)
        for (mode, arch), precisions in groups.items():
            order = precisions if r % 2 else precisions[::-1]
            if len(order) > 1:
                baselines(mode, arch, order[0])
            for precision in order:
                ours = run_json([args.bench, mode, "--arch", arch, "--precision", precision, "--batch",
                                 str(args.batch)] + common)
                add((mode, arch, precision, "ours"), ours["ours"])
                add((mode, arch, precision, "mult_adds"), ours["mult_adds"])
            for precision in (order[1:] if len(order) > 1 else order):
                baselines(mode, arch, precision)
        if args.only in ("", "lrn", "pool"):
            for kernel in ("lrn", "pool"):
                if args.only not in ("", kernel):
                    continue
                for precision in ("fp32", "bf16"):
                    # In the layout a training step gives the kernel: channels-last on a CPU.
                    layout = ["--channels-last", "1"]
                    k = run_json([args.bench, kernel, "--precision", precision, "--batch", str(args.batch)] + layout
                                 + common)
                    add((kernel, precision, "ours"), k["ours"])
                    add((kernel, precision, "libtorch"), k["libtorch"])
        other, load = monitor.others()
        note = {"round": r, "other_processes_cores": round(other, 2), "load_average_1min": round(load, 2)}
        if other > 0.25 or load > args.threads + 1:
            note["warning"] = (f"the machine was busy: other processes used {other:.2f} cores, load average "
                               f"{load:.2f} with our {args.threads} threads; these figures are unreliable")
            warnings.append(note["warning"])
            print(f"rounds.py: round {r}: {note['warning']}", file=sys.stderr)
        print(json.dumps(note), flush=True)

    def spread(values):
        return {"median": round(statistics.median(values), 3), "min": round(min(values), 3),
                "max": round(max(values), 3)}

    rows = []
    gemm = {p: statistics.median(samples[("gemm", p)]) for p in ("fp32", "bf16") if ("gemm", p) in samples}
    for mode, arch, precision in networks:
        key = (mode, arch, precision)
        ours = samples[key + ("ours",)]
        bases = {name: samples[key + (name,)] for name in list(allocs) + ["tcmalloc_channels_last"]
                 if key + (name,) in samples}
        # Per round: ours against the fastest baseline of that round.
        best_per_round = [max(bases[name][i] for name in bases) for i in range(len(ours))]
        ratios = [o / b for o, b in zip(ours, best_per_round)]
        best_name = max(bases, key=lambda n: statistics.median(bases[n]))
        macs = samples[key + ("mult_adds",)][0]
        flops_per_image = 2 * macs * (3 if mode == "train" else 1)
        out = {"figure": f"{mode}_images_per_s", "arch": arch, "precision": precision, "batch": args.batch,
               "threads": args.threads, "rounds": len(ours), "ours": spread(ours),
               "baselines": {n: spread(v) for n, v in bases.items()}, "best_baseline": best_name,
               "ratio": spread(ratios),
               "gflop_per_s": round(statistics.median(ours) * flops_per_image / 1e9, 1)}
        if precision in gemm:
            out["roofline_gflop_per_s"] = round(gemm[precision], 1)
            out["of_roofline"] = round(out["gflop_per_s"] / gemm[precision], 2)
        print(json.dumps(out), flush=True)
        rows.append(out)
    # bf16 against our own float32, round by round.
    for mode in ("train", "infer"):
        a, b = samples.get((mode, "paper", "bf16", "ours")), samples.get((mode, "paper", "fp32", "ours"))
        if a and b:
            print(json.dumps({"figure": f"{mode}_bf16_over_fp32", "arch": "paper",
                              "ratio": spread([x / y for x, y in zip(a, b)])}), flush=True)
    for kernel, precision in (("lrn", "fp32"), ("lrn", "bf16"), ("pool", "fp32"), ("pool", "bf16")):
        if (kernel, precision, "ours") in samples:
            ours, ref = samples[(kernel, precision, "ours")], samples[(kernel, precision, "libtorch")]
            print(json.dumps({"figure": f"{kernel}_forward_backward_ms", "precision": precision,
                              "channels_last": True,
                              "ours": spread(ours), "libtorch": spread(ref),
                              "speedup": spread([r / o for o, r in zip(ours, ref)])}), flush=True)
    for p, v in gemm.items():
        print(json.dumps({"figure": "gemm_gflop_per_s", "precision": p, "rate": spread(samples[("gemm", p)])}))
    if warnings:
        print(f"rounds.py: {len(warnings)} of {args.rounds} rounds ran on a busy machine", file=sys.stderr)


if __name__ == "__main__":
    main()
