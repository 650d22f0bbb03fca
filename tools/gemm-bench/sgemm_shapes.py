#!/usr/bin/env python3
"""numpy/OpenBLAS (or torch) at gemm-bench's exact shapes and ops (NN, NT, TN).

Companion to /work/shared/bench/sgemm.py, whose fixed shape list lacks several flopnet shapes
(1x784x30, 32/128x784x30, 128x128x100, 1x784x800, ...). Reuses that script's bench() so the
timing method is identical (batches >= --batch-ms, median of --reps batches, after warm-up).
Layouts match gemm-bench (and sgemm.py --backward), all row-major, layer (M,K,N)=(batch,in,out):
  NN  Y[M,N]  = X[M,K]  @ W[K,N]
  NT  dX[M,K] = dY[M,N] @ W[K,N].T
  TN  dW[K,N] = X[M,K].T @ dY[M,N]
Usage:
  env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE /work/peers/bin/python sgemm_shapes.py \
      --lib numpy --threads 1 2 --label run1 --csv numpy.csv
"""
import argparse, os, sys

sys.path.insert(0, os.environ.get('SGEMM_BENCH_DIR', '/work/shared/bench'))
from sgemm import bench  # noqa: E402

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
