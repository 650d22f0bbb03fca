#!/usr/bin/env python3
"""flopnet's matrix products against OpenBLAS (through numpy), same shapes, same sitting.

Runs `examples/matmul.rs` (the engine's own `matmul`, as training calls it) and the same products
in numpy — X @ W.T for forward, D.T @ X for the weight gradient, D @ W for the input gradient —
for each thread count, alternating the two, and prints GFLOP/s and the ratio.

Usage (repository root):
    cargo build --release --example matmul
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python3 bench/matmul_vs_openblas.py --python /path/to/venv/bin/python
"""
import argparse, json, os, subprocess, sys

NUMPY = r'''
import json, sys, time, numpy as np
op, b, nin, nout = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rng = np.random.default_rng(0)
x = rng.random((b, nin), dtype=np.float32); w = rng.random((nout, nin), dtype=np.float32) - 0.5
d = rng.random((b, nout), dtype=np.float32) - 0.5
f = {"forward": lambda: x @ w.T, "weight_grad": lambda: d.T @ x, "input_grad": lambda: d @ w}[op]
m, k, n = {"forward": (b, nin, nout), "weight_grad": (nout, b, nin), "input_grad": (b, nout, nin)}[op]
t0 = time.perf_counter(); reps = 0
while reps < 3 or time.perf_counter() - t0 < 0.1:
    f(); reps += 1
per = max(3, reps * 2); rates = []
for _ in range(11):
    t = time.perf_counter()
    for _ in range(per):
        f()
    rates.append(2.0 * m * k * n * per / (time.perf_counter() - t) / 1e9)
rates.sort(); print(rates[len(rates) // 2])
'''


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser()
    ap.add_argument("--python", default=sys.executable, help="a python with numpy")
    ap.add_argument("--example", default=os.path.join(here, "..", "target", "release", "examples", "matmul"))
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    a = ap.parse_args()
    print("| op | batch×in×out | threads | flopnet GFLOP/s | OpenBLAS GFLOP/s | ratio |")
    print("|---|---|---|---|---|---|")
    for t in a.threads:
        ours = [json.loads(l) for l in subprocess.run([a.example, str(t)], check=True, capture_output=True, text=True).stdout.splitlines()]
        env = dict(os.environ, OPENBLAS_NUM_THREADS=str(t), OMP_NUM_THREADS=str(t))
        for r in ours:
            theirs = float(subprocess.run([a.python, "-c", NUMPY, r["op"], str(r["batch"]), str(r["inputs"]), str(r["outputs"])],
                                          check=True, capture_output=True, text=True, env=env).stdout)
            print(f"| {r['op']} | {r['batch']}×{r['inputs']}×{r['outputs']} | {t} | {r['gflops']:.1f} | {theirs:.1f} | {r['gflops'] / theirs:.2f} |", flush=True)


if __name__ == "__main__":
    main()
