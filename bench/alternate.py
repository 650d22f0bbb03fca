#!/usr/bin/env python3
"""Two flopnet builds side by side: `flopnet bench` of each, alternating, and the medians.

On a shared machine a build's speed moves with its neighbours and with how the host places
the cores, so two builds are compared in the same minutes, one after the other, several times
(docs/kernels.md quotes its figures this way). Build the commits to compare first, e.g.

    git worktree add /tmp/old COMMIT && (cd /tmp/old && cargo build --release)
    python3 bench/alternate.py /tmp/old/target/release/flopnet target/release/flopnet --pairs 5

prints each run's samples/s, the medians, and with --layers the median forward and backward
time of every layer that moved by more than --min-us between the builds, and the totals.
"""

import argparse
import re
import statistics
import subprocess
from collections import defaultdict


def bench(flopnet, args):
    out = subprocess.run([flopnet, "bench", *args], capture_output=True, text=True, check=True).stdout
    rate = int(re.search(r"momentum: ([0-9,]+) samples/s", out).group(1).replace(",", ""))
    layers = {}
    for line in out.splitlines():
        cols = line.split()
        # layer  shape  ...  forward µs  GFLOP/s  backward µs  ...
        if len(cols) > 8 and cols[0].isdigit():
            layers[int(cols[0])] = (cols[1], float(cols[5]), float(cols[7]))
    return rate, layers


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--layers", action="store_true", help="per-layer medians too")
    ap.add_argument("--min-us", type=float, default=60.0)
    ap.add_argument(
        "--bench",
        default="resnet20 --input 3x32x32 --classes 10 --batch 128 --runs 3 --steps 6 --threads 2",
        help="arguments after `flopnet bench`",
    )
    a = ap.parse_args()
    args = a.bench.split()
    rates = defaultdict(list)
    rows = {"old": defaultdict(lambda: ([], [])), "new": defaultdict(lambda: ([], []))}
    names = {}
    for i in range(a.pairs):
        for which, path in (("old", a.old), ("new", a.new)):
            rate, layers = bench(path, args)
            rates[which].append(rate)
            for l, (name, f, b) in layers.items():
                names[l] = name
                rows[which][l][0].append(f)
                rows[which][l][1].append(b)
            print(f"pair {i + 1} {which}: {rate:,} samples/s", flush=True)
    old, new = statistics.median(rates["old"]), statistics.median(rates["new"])
    faster = sum(n > o for o, n in zip(rates["old"], rates["new"]))
    print(f"medians: old {old:,.0f}, new {new:,.0f} samples/s ({100 * (new / old - 1):+.1f}%), "
          f"new faster in {faster} of {a.pairs} pairs")
    if a.layers:
        med = {w: {l: (statistics.median(f), statistics.median(b)) for l, (f, b) in r.items()} for w, r in rows.items()}
        for l in sorted(med["old"]):
            (of, ob), (nf, nb) = med["old"][l], med["new"].get(l, (0.0, 0.0))
            if abs(nf - of) > a.min_us or abs(nb - ob) > a.min_us:
                print(f"{l:3d} {names[l]:40s} forward {of:8.0f} -> {nf:8.0f} µs   backward {ob:8.0f} -> {nb:8.0f} µs")
        total = {w: sum(f + b for f, b in m.values()) for w, m in med.items()}
        print(f"layers' total: old {total['old']:,.0f} µs, new {total['new']:,.0f} µs")


if __name__ == "__main__":
    main()
