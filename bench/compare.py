#!/usr/bin/env python3
"""Side-by-side training throughput: flopnet against PyTorch on the CPU, in one sitting.

For each case of the suite this runs the peer script (../shared/bench/torch_throughput.py, one
network at a time) and then `flopnet bench` on the same network, batch and thread count, so the
two see the same machine state; it prints samples/s for both and their ratio. With --rounds R
it does that R times per case, alternating the two, and reports each side's median over the
rounds (and every round's ratio): a slow spell of this shared machine then has to last through
several alternations to move the result, for either side.

Usage (from the repository root, after `cargo build --release`):
    python3 bench/compare.py --python /path/to/venv/bin/python [--threads 2] [--only a,c]
The python given must have torch installed (see ../shared/bench/README.md).
"""
import argparse, json, os, subprocess, sys, tempfile

# key -> (flopnet spec args, batches, mode); the peer script's networks, by its keys.
SUITE = [
    ("a", ["784-30-30-10", "--act", "sigmoid"], [1, 32, 128], "train"),
    ("b", ["1024-30-30-10", "--act", "sigmoid"], [1, 32, 128], "train"),
    ("c", ["784-800-10", "--act", "relu"], [1, 32, 128, 256], "train"),
    ("d", ["784-256-128-100-10", "--act", "relu"], [128], "train"),
    ("infer", ["784-800-10", "--act", "relu"], [128], "inference"),
    ("e", ["1x28x28-conv5x5x32p2:relu-maxpool2-conv5x5x64p2:relu-maxpool2-1024:relu-10"], [64], "train"),
    ("f", ["1x28x28-conv3x3x16:relu-maxpool2-conv3x3x32:relu-maxpool2-10"], [128], "train"),
]


def torch_rates(py, script, key, threads, runs):
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = f.name
    subprocess.run([py, script, "--threads", str(threads), "--only", key, "--runs", str(runs), "--json", out],
                   check=True, stdout=subprocess.DEVNULL)
    with open(out) as f:
        rows = json.load(f)
    os.unlink(out)
    return {(r["mode"], r["batch"]): r["samples_per_s"] for r in rows if "samples_per_s" in r}


def flopnet_rate(exe, spec_args, batch, threads, runs, mode):
    cmd = [exe, "bench", *spec_args, "--batch", str(batch), "--threads", str(threads), "--runs", str(runs), "--json"]
    if mode == "inference":
        cmd.append("--forward-only")
    r = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    return r["samples_per_sec"], r["gflops"]


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser()
    ap.add_argument("--python", default=sys.executable, help="a python with torch")
    ap.add_argument("--peer", default=os.path.join(here, "..", "..", "shared", "bench", "torch_throughput.py"))
    ap.add_argument("--flopnet", default=os.path.join(here, "..", "target", "release", "flopnet"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--rounds", type=int, default=1, help="alternations of the two per case")
    ap.add_argument("--only", default=",".join(k for k, *_ in SUITE))
    ap.add_argument("--json", help="also write the rows here")
    a = ap.parse_args()
    only = set(a.only.split(","))
    rows = []
    print(f"| case | batch | mode | PyTorch samples/s | flopnet samples/s | flopnet GFLOP/s | ratio |")
    print(f"|---|---|---|---|---|---|---|")
    median = lambda v: sorted(v)[len(v) // 2] if len(v) % 2 else sum(sorted(v)[len(v) // 2 - 1:len(v) // 2 + 1]) / 2
    for key, spec, batches, mode in SUITE:
        if key not in only:
            continue
        got = {b: [] for b in batches}
        for _ in range(max(1, a.rounds)):
            peer = torch_rates(a.python, a.peer, "c,infer" if key == "infer" else key, a.threads, a.runs)
            for b in batches:
                got[b].append((peer.get((mode, b)), *flopnet_rate(a.flopnet, spec, b, a.threads, a.runs, mode)))
        for b in batches:
            theirs_all = [t for t, _, _ in got[b] if t]
            theirs = median(theirs_all) if theirs_all else None
            ours, gf = median([o for _, o, _ in got[b]]), median([g for _, _, g in got[b]])
            ratio = ours / theirs if theirs else float("nan")
            each = [o / t if t else float("nan") for t, o, _ in got[b]]
            rows.append(dict(case=key, spec=" ".join(spec), batch=b, mode=mode, torch=theirs, flopnet=ours, gflops=gf,
                             ratio=ratio, round_ratios=each))
            rounds = f" (rounds {', '.join(f'{r:.2f}' for r in each)})" if len(each) > 1 else ""
            print(f"| {key} {' '.join(spec)} | {b} | {mode} | {theirs:,.0f} | {ours:,.0f} | {gf:.1f} | {ratio:.2f}x{rounds} |",
                  flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
