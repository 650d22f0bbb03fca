#!/usr/bin/env python3
"""Side-by-side training throughput: flopnet against PyTorch on the CPU, in one sitting.

For each case of the suite this runs the peer script (bench/torch_peer.py, one network at a
time), then `flopnet bench` on the same network, batch and thread count on the kernel path the CPU
picks, then again with FLOPNET_SIMD=avx2 (where the default path is wider: the 256-bit kernels
beside the 512-bit ones), so all of them see the same machine state; it prints samples/s for each
and the ratios. With --rounds R it does that R times per case, alternating them, and reports each
side's median over the rounds (and every round's ratio against PyTorch): a slow spell of this
shared machine then has to last through several alternations to move the result, for any side.

Usage (from the repository root, after `cargo build --release`):
    python3 bench/compare.py --python .venv-peers/bin/python [--threads 2] [--only a,c] [--rounds 3]
The python given must have torch installed: python3 -m venv .venv-peers &&
.venv-peers/bin/pip install -r bench/requirements.txt
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
    ("resnet20", ["resnet20"], [128], "train"),
    ("mobilenet_v2", ["mobilenet_v2", "--input", "3x64x64", "--classes", "10"], [32], "train"),
    ("resnet18", ["resnet18"], [8], "inference"),
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


def flopnet_rate(exe, spec_args, batch, threads, runs, mode, simd=None):
    """(samples/s, GFLOP/s, kernel path, FMA ceiling) of `flopnet bench`; `simd` forces a path."""
    cmd = [exe, "bench", *spec_args, "--batch", str(batch), "--threads", str(threads), "--runs", str(runs), "--json"]
    if mode == "inference":
        cmd.append("--forward-only")
    env = dict(os.environ)
    env.pop("FLOPNET_SIMD", None)
    if simd:
        env["FLOPNET_SIMD"] = simd
    r = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout)
    return r["samples_per_sec"], r["gflops"], r.get("simd", "?"), r.get("fma_ceiling_gflops", float("nan"))


def default_path(exe):
    """The kernel path flopnet picks on this CPU (from a one-step bench)."""
    return flopnet_rate(exe, ["4-2"], 1, 1, 1, "train")[2]


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser()
    ap.add_argument("--python", default=sys.executable, help="a python with torch")
    ap.add_argument("--peer", default=os.path.join(here, "torch_peer.py"))
    ap.add_argument("--flopnet", default=os.path.join(here, "..", "target", "release", "flopnet"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--rounds", type=int, default=1, help="alternations of the two per case")
    ap.add_argument("--only", default=",".join(k for k, *_ in SUITE))
    ap.add_argument("--json", help="also write the rows here")
    ap.add_argument("--no-avx2", action="store_true", help="skip the FLOPNET_SIMD=avx2 column")
    a = ap.parse_args()
    only = set(a.only.split(","))
    rows = []
    path = default_path(a.flopnet)
    side = path != "avx2" and path != "scalar" and not a.no_avx2
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    print(f"CPU {cpu}; {a.threads} thread(s); flopnet kernels {path}" + (", beside FLOPNET_SIMD=avx2" if side else ""))
    print()
    head = f"| case | batch | mode | PyTorch samples/s | flopnet ({path}) samples/s | GFLOP/s | ratio |"
    rule = "|---|---|---|---|---|---|---|"
    if side:
        head += " flopnet (avx2) samples/s | ratio | {path} / avx2 |".format(path=path)
        rule += "---|---|---|"
    print(head)
    print(rule)
    median = lambda v: sorted(v)[len(v) // 2] if len(v) % 2 else sum(sorted(v)[len(v) // 2 - 1:len(v) // 2 + 1]) / 2
    ceilings = {}
    for key, spec, batches, mode in SUITE:
        if key not in only:
            continue
        got = {b: [] for b in batches}
        for _ in range(max(1, a.rounds)):
            peer = torch_rates(a.python, a.peer, key, a.threads, a.runs)
            for b in batches:
                ours, gf, p, ceil = flopnet_rate(a.flopnet, spec, b, a.threads, a.runs, mode)
                ceilings.setdefault(p, []).append(ceil)
                narrow = None
                if side:
                    narrow, _, p2, ceil2 = flopnet_rate(a.flopnet, spec, b, a.threads, a.runs, mode, "avx2")
                    ceilings.setdefault(p2, []).append(ceil2)
                got[b].append((peer.get((mode, b)), ours, gf, narrow))
        for b in batches:
            theirs_all = [t for t, _, _, _ in got[b] if t]
            theirs = median(theirs_all) if theirs_all else None
            ours, gf = median([o for _, o, _, _ in got[b]]), median([g for _, _, g, _ in got[b]])
            ratio = ours / theirs if theirs else float("nan")
            each = [o / t if t else float("nan") for t, o, _, _ in got[b]]
            row = dict(case=key, spec=" ".join(spec), batch=b, mode=mode, torch=theirs, flopnet=ours, gflops=gf,
                       ratio=ratio, round_ratios=each, simd=path)
            rounds = f" (rounds {', '.join(f'{r:.2f}' for r in each)})" if len(each) > 1 else ""
            line = f"| {key} {' '.join(spec)} | {b} | {mode} | {theirs or float('nan'):,.0f} | {ours:,.0f} | {gf:.1f} | {ratio:.2f}x{rounds} |"
            if side:
                narrow = median([n for _, _, _, n in got[b]])
                row.update(flopnet_avx2=narrow, ratio_avx2=narrow / theirs if theirs else float("nan"),
                           wide_over_avx2=ours / narrow, round_wide_over_avx2=[o / n for _, o, _, n in got[b]])
                line += f" {narrow:,.0f} | {row['ratio_avx2']:.2f}x | {ours / narrow:.2f} |"
            rows.append(row)
            print(line, flush=True)
    print()
    for p, c in ceilings.items():
        print(f"FMA ceiling of the {p} kernels, {a.threads} thread(s): {median(c):.0f} GFLOP/s (median of {len(c)} measurements)")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
