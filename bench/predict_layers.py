#!/usr/bin/env python3
"""The time model against the clock, layer by layer: which kinds and shapes it misprices.

Runs `flopnet bench --json` R times per network (--repeat) and takes, per layer, the fastest of
the R timed passes (on a shared machine a neighbour only ever slows a layer down, so the fastest
pass is the nearest to the machine's own speed), and prints it beside the layer's predicted
forward and backward time from the same profile. The last table sums the layers by kind (a
depthwise, 1×1, strided or plain convolution, batch norm, ...) over every network given: the
kinds the model prices low or high show as a ratio far from 1.

The networks are given as specs (`--spec`, repeatable, with `--batch`) or drawn at random as
`predict_vs_measured.py --random N --seed S` draws them (the same nets for the same seed and
profile).

Usage (repository root, after `cargo build --release`):
    python3 bench/predict_layers.py --spec mobilenet_v2 --input 3x64x64 --classes 10 --batch 32
    python3 bench/predict_layers.py --random 12 --seed 1 [--repeat 5] [--profile FILE] [--steady 1.85]
"""
import argparse, json, os, re, statistics, subprocess, sys, tempfile
from collections import defaultdict

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)
import predict_vs_measured as pvm  # noqa: E402


def kind_of(shape):
    """A layer's kind for the summary, from bench's shape column (`conv3x3x32s2p1g32b0:relu 3x…`)."""
    name = shape.split(" ")[0]
    if "→" in shape and name[0].isdigit():
        return "dense"
    m = re.match(r"conv(\d+)x(\d+)x(\d+)(s\d+)?(p\d+)?(g\d+)?", name)
    if not m:
        return re.match(r"[a-z]+", name).group(0) if re.match(r"[a-z]+", name) else name
    kh, kw, _, s, _, g = m.groups()
    cin = int(shape.split(" ")[1].split("x")[0])
    groups = int(g[1:]) if g else 1
    kind = "conv depthwise" if groups > 1 and groups == cin else ("conv grouped" if groups > 1 else "conv")
    kind += f" {kh}x{kw}"
    if s:
        kind += " strided"
    return kind


def bench(a, spec, batch, profile):
    cmd = [a.flopnet, "bench", spec, "--batch", str(batch), "--threads", str(a.threads), "--runs", "3",
           "--profile", profile, "--json"]
    if a.input:
        cmd += ["--input", a.input]
    if a.classes:
        cmd += ["--classes", str(a.classes)]
    runs, tries = [], 0
    while len(runs) < a.repeat:
        tries += 1
        if a.steady is not None and tries > 4 * a.repeat:
            raise SystemExit(f"bench {spec}: the {a.threads}-thread speedup stayed below {a.steady} in {tries - 1} tries")
        # With --steady, a run counts only between two probes of the host's two-thread speed
        # (predict_vs_measured.speedup) at MIN or more.
        if a.steady is not None and not pvm.speedup(a.flopnet, a.threads) >= a.steady:
            continue
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(f"bench {spec} failed: {out.stderr.strip()}")
        if a.steady is not None and not pvm.speedup(a.flopnet, a.threads) >= a.steady:
            continue
        runs.append(json.loads(out.stdout))
    return runs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--flopnet", default=os.path.join(here, "..", "target", "release", "flopnet"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--spec", action="append", default=[], help="a network (repeatable)")
    ap.add_argument("--batch", type=int, default=32, help="the batch of every --spec")
    ap.add_argument("--input", help="a zoo model's input, CxHxW")
    ap.add_argument("--classes", type=int, help="a zoo model's class count")
    ap.add_argument("--random", type=int, default=0, help="N random networks as predict_vs_measured.py draws them")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--plain", action="store_true")
    ap.add_argument("--repeat", type=int, default=5, help="bench runs per network; per layer the fastest counts")
    ap.add_argument("--profile", help="the profile to predict from [default: calibrate one now]")
    ap.add_argument("--layers", action="store_true", help="print every layer, not only the summary by kind")
    ap.add_argument("--steady", type=float, metavar="MIN",
                    help="with more than one thread: keep only runs between two probes of the two-thread speedup at MIN "
                         "or more (as predict_vs_measured.py --steady; up to 4×--repeat tries)")
    ap.add_argument("--compare", nargs=2, metavar=("FLOPNET", "PROFILE"),
                    help="another build and its profile: its predicted step beside this one's, on the same measurements")
    a = ap.parse_args()
    profile = a.profile
    if not profile:
        profile = os.path.join(tempfile.mkdtemp(), "profile.json")
        print(subprocess.run([a.flopnet, "calibrate", "--threads", str(a.threads), "--profile", profile],
                             check=True, capture_output=True, text=True).stdout.splitlines()[0])
    nets = [(s, a.batch) for s in a.spec]
    if a.random:
        a.profile = profile
        nets += [(s, b) for s, _, b in pvm.random_suite(a, profile)]
    by_kind = defaultdict(lambda: [0.0, 0.0, 0.0, 0.0, 0])
    other = " other predicted ms/step | other error |" if a.compare else ""
    print(f"| network | batch | predicted ms/step | measured ms/step (fastest run) | error |{other}")
    print("|---|---|---|---|---|" + ("---|---|" if a.compare else ""))
    errors, other_errors = [], []
    detail = []
    for spec, batch in nets:
        runs = bench(a, spec, batch, profile)
        pred = runs[0]["predicted"]
        rows = []
        for i, layer in enumerate(runs[0]["layers"]):
            mf = min(r["layers"][i]["forward_seconds"] for r in runs)
            mb = min(r["layers"][i]["backward_seconds"] for r in runs)
            pf, pb = pred["layers"][i]["forward_seconds"], pred["layers"][i]["backward_seconds"]
            rows.append((layer["shape"], pf, mf, pb, mb))
            k = by_kind[kind_of(layer["shape"])]
            k[0] += pf
            k[1] += mf
            k[2] += pb
            k[3] += mb
            k[4] += 1
        upd_m = min(r["update_seconds"] for r in runs)
        upd_p = sum(l["update_seconds"] for l in pred["layers"])
        by_kind["update"][0] += upd_p
        by_kind["update"][1] += upd_m
        by_kind["update"][4] += 1
        step_m = min(r["step_seconds"] for r in runs)
        step_p = pred["step_seconds"]
        errors.append(step_m / step_p - 1)
        line = f"| {spec} | {batch} | {1e3 * step_p:.2f} | {1e3 * step_m:.2f} | {100 * errors[-1]:+.0f}% |"
        if a.compare:
            out = subprocess.run([a.compare[0], "count", spec, "--batch", str(batch), "--optimizer", "momentum",
                                  "--threads", str(a.threads), "--profile", a.compare[1], "--predict", "--json"]
                                 + (["--input", a.input] if a.input else [])
                                 + (["--classes", str(a.classes)] if a.classes else []),
                                 check=True, capture_output=True, text=True)
            step_o = json.loads(out.stdout)["predicted"]["step_seconds"]
            other_errors.append(step_m / step_o - 1)
            line += f" {1e3 * step_o:.2f} | {100 * other_errors[-1]:+.0f}% |"
        print(line, flush=True)
        detail.append((spec, batch, rows))
    med = lambda v: statistics.median(abs(e) for e in v)
    print(f"\nstep error: median {100 * med(errors):.0f}%, worst {100 * max(abs(e) for e in errors):.0f}%"
          + (f"; other: median {100 * med(other_errors):.0f}%, worst {100 * max(abs(e) for e in other_errors):.0f}%"
             if a.compare else ""))
    print("load average (1, 5, 15 min) after: " + " ".join(open("/proc/loadavg").read().split()[:3]))
    if a.layers:
        for spec, batch, rows in detail:
            print(f"\n{spec} (batch {batch}): µs predicted / measured (fastest of {a.repeat})")
            for shape, pf, mf, pb, mb in rows:
                print(f"  {shape:60s} fwd {1e6 * pf:9.1f} / {1e6 * mf:9.1f} ({mf / max(pf, 1e-12):4.2f})"
                      f"  bwd {1e6 * pb:9.1f} / {1e6 * mb:9.1f} ({mb / max(pb, 1e-12):4.2f})")
    print("\n| kind | layers | predicted fwd ms | measured fwd ms | ratio | predicted bwd ms | measured bwd ms | ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for kind, (pf, mf, pb, mb, n) in sorted(by_kind.items(), key=lambda kv: -(kv[1][1] + kv[1][3])):
        ratio = lambda m, p: f"{m / p:.2f}" if p > 0 else "-"
        print(f"| {kind} | {n} | {1e3 * pf:.2f} | {1e3 * mf:.2f} | {ratio(mf, pf)} | {1e3 * pb:.2f} | {1e3 * mb:.2f} "
              f"| {ratio(mb, pb)} |")


if __name__ == "__main__":
    main()
