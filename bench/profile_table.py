"""Self time per operator in a chrome trace written by `alexnet_bench --profile FILE`
(LibTorch's legacy profiler): the operators that take the time of one step.

  profile_table.py TRACE.json [--top N]
"""
import argparse
import collections
import json


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("trace")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    with open(args.trace) as f:
        events = [e for e in json.load(f) if e.get("ph") == "X"]
    # Self time: an event's duration less that of the events nested directly in it,
    # per thread (events on a thread nest by their intervals).
    by_thread = collections.defaultdict(list)
    for e in events:
        by_thread[e.get("tid")].append(e)
    total = collections.Counter()
    calls = collections.Counter()
    for evs in by_thread.values():
        evs.sort(key=lambda e: (e["ts"], -e["dur"]))
        stack = []
        for e in evs:
            while stack and stack[-1]["ts"] + stack[-1]["dur"] <= e["ts"]:
                stack.pop()
            if stack:
                total[stack[-1]["name"]] -= e["dur"]
            total[e["name"]] += e["dur"]
            calls[e["name"]] += 1
            stack.append(e)
    whole = sum(total.values())
    print(f"{'operator':<48} {'self ms':>9} {'%':>6} {'calls':>6}")
    for name, us in total.most_common(args.top):
        print(f"{name[:48]:<48} {us / 1e3:9.1f} {100 * us / whole:6.1f} {calls[name]:6d}")
    print(f"{'total':<48} {whole / 1e3:9.1f}")


if __name__ == "__main__":
    main()
