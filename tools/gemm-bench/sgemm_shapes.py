#!/usr/bin/env python3
"""numpy/OpenBLAS (or torch) at gemm-bench's exact shapes and ops (NN, NT, TN).

Timing (`bench` below): calls are grouped into batches of at least --batch-ms, after warm-up;
the figure is the median over --reps batches, with the 10th and 90th percentiles beside it.
Layouts match gemm-bench (and sgemm.py --backward), all row-major, layer (M,K,N)=(batch,in,out):
  NN  Y[M,N]  = X[M,K]  @ W[K,N]
  NT  dX[M,K] = dY[M,N] @ W[K,N].T
  TN  dW[K,N] = X[M,K].T @ dY[M,N]
Usage:
  env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE .venv-peers/bin/python sgemm_shapes.py \
      --lib numpy --threads 1 2 --label run1 --csv numpy.csv
"""
import argparse, statistics, sys, time


def bench(fn, flops, batch_ms, reps):
    """(median seconds per call, median GFLOP/s, calls per batch, p10 and p90 GFLOP/s)."""
    for _ in range(3):
        fn()
    inner, t = 1, 0.0
    while True:  # calls per batch: double until a batch lasts batch_ms
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        t = time.perf_counter() - start
        if t * 1e3 >= batch_ms or inner >= 1 << 20:
            break
        inner *= 2
    per_call = []
    for _ in range(reps):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        per_call.append((time.perf_counter() - start) / inner)
    rates = sorted(flops / s / 1e9 for s in per_call)
    q = lambda f: rates[min(len(rates) - 1, int(f * len(rates)))]
    med = statistics.median(per_call)
    return med, flops / med / 1e9, inner, q(0.1), q(0.9)

LAYERS = [(1, 30, 30), (32, 30, 30), (1, 784, 30), (32, 784, 30), (128, 784, 30), (32, 1024, 30),
          (128, 128, 100), (128, 800, 10), (128, 256, 128), (1, 784, 800), (128, 784, 256),
          (32, 784, 800), (128, 784, 800), (256, 784, 800)]
SQUARES = [1024, 2048]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--lib', choices=['numpy', 'torch'], default='numpy')
    ap.add_argument('--threads', type=int, nargs='+', default=[1, 2])
    ap.add_argument('--ops', default='NN,NT,TN')
    ap.add_argument('--reps', type=int, default=11)
    ap.add_argument('--batch-ms', type=float, default=20.0)
    ap.add_argument('--label', default='run')
    ap.add_argument('--csv', default=None)
    a = ap.parse_args()
    import numpy as np
    rng = np.random.default_rng(0)
    if a.lib == 'numpy':
        from threadpoolctl import threadpool_limits, threadpool_info
        print('numpy', np.__version__, [(i.get('internal_api'), i.get('version'), i.get('architecture'))
                                        for i in threadpool_info()], file=sys.stderr)
    else:
        import torch
        print('torch', torch.__version__, file=sys.stderr)
    jobs = []
    for op in a.ops.split(','):
        if op == 'NN':
            jobs += [(op, s, s, s) for s in SQUARES]
        jobs += [(op, m, k, n) for (m, k, n) in LAYERS]
    rows = ['label,method,threads,op,M,K,N,us_per_call,gflops_median,gflops_p10,gflops_p90,inner']
    print(rows[0], flush=True)
    for nt in a.threads:
        for (op, m, k, n) in jobs:
            flops = 2.0 * m * n * k
            if op == 'NN':
                A = rng.standard_normal((m, k), dtype=np.float32)
                B = rng.standard_normal((k, n), dtype=np.float32)
                C = np.empty((m, n), dtype=np.float32)
            elif op == 'NT':
                A = rng.standard_normal((m, n), dtype=np.float32)
                B = rng.standard_normal((k, n), dtype=np.float32).T
                C = np.empty((m, k), dtype=np.float32)
            else:
                A = rng.standard_normal((m, k), dtype=np.float32).T
                B = rng.standard_normal((m, n), dtype=np.float32)
                C = np.empty((k, n), dtype=np.float32)
            if a.lib == 'numpy':
                with threadpool_limits(limits=nt, user_api='blas'):
                    fn = lambda: np.matmul(A, B, out=C)
                    med, gf, inner, gf_lo, gf_hi = bench(fn, flops, a.batch_ms, a.reps)
            else:
                torch.set_num_threads(nt)
                tA, tB, tC = torch.from_numpy(A), torch.from_numpy(B), torch.from_numpy(C)
                with torch.inference_mode():
                    fn = lambda: torch.mm(tA, tB, out=tC)
                    med, gf, inner, gf_lo, gf_hi = bench(fn, flops, a.batch_ms, a.reps)
            row = '%s,%s,%d,%s,%d,%d,%d,%.3f,%.3f,%.3f,%.3f,%d' % (
                a.label, 'openblas' if a.lib == 'numpy' else 'torch', nt, op, m, k, n,
                med * 1e6, gf, gf_lo, gf_hi, inner)
            rows.append(row)
            print(row, flush=True)
    if a.csv:
        with open(a.csv, 'w') as f:
            f.write('\n'.join(rows) + '\n')


if __name__ == '__main__':
    main()
