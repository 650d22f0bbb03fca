#!/usr/bin/env python3
"""Merge gemm-bench / sgemm_shapes.py CSVs into markdown tables (stdlib only).
Usage: python3 report.py results/*.csv > table.md
Per label (run): GFLOP/s median per method/op/shape, with ratio to OpenBLAS at the same thread
count in parentheses. With >= 2 labels, also the mean over runs and run-to-run movement."""
import csv, sys, statistics
from collections import defaultdict

COLS1 = ['naive', 'mm1', 'mmT1', 'gemm1', 'faer1', 'openblas1']
COLS2 = ['split2', 'mmT2', 'gemm2', 'faer2', 'openblas2']

data = defaultdict(dict)  # label -> {(col, op, M, K, N): gflops}
for path in sys.argv[1:]:
    with open(path) as f:
        for r in csv.DictReader(f):
            meth = r['method']
            col = meth + r['threads'] if meth in ('mmT', 'openblas', 'torch') else meth
            data[r['label']][(col, r['op'], int(r['M']), int(r['K']), int(r['N']))] = float(r['gflops_median'])

labels = sorted(data)
shapes = sorted({k[1:] for d in data.values() for k in d},
                key=lambda s: ({'NN': 0, 'NT': 1, 'TN': 2}[s[0]], s[1] * s[2] * s[3], s))


def table(d, title):
    print(f'\n### {title}\n')
    print('GFLOP/s (median); in parentheses: ratio to OpenBLAS at the same thread count. '
          'op shape = layer M(batch)×K(in)×N(out).\n')
    hdr = ['op', 'M×K×N', 'MNK'] + [c.replace('openblas', 'OB') + ('' if c[-1] in '12' else '') for c in COLS1 + COLS2] + ['split2/mm1', 'best 1T', 'best 2T']
    print('| ' + ' | '.join(hdr) + ' |')
    print('|' + '---|' * len(hdr))
    for s in shapes:
        op, m, k, n = s
        cells = [op, f'{m}×{k}×{n}', f'{m*k*n:.2e}'.replace('e+0', 'e')]
        for cols, ob in ((COLS1, 'openblas1'), (COLS2, 'openblas2')):
            base = d.get((ob,) + s)
            for c in cols:
                v = d.get((c,) + s)
                if v is None:
                    cells.append('–')
                elif c.startswith('openblas') or not base:
                    cells.append(f'{v:.1f}')
                else:
                    cells.append(f'{v:.1f} ({v/base:.2f})')
        a, b = d.get(('split2',) + s), d.get(('mm1',) + s)
        cells.append(f'{a/b:.2f}' if a and b else '–')
        for cols in (COLS1, COLS2):
            vals = {c: d[(c,) + s] for c in cols if (c,) + s in d and not c.startswith('openblas')}
            cells.append(max(vals, key=vals.get) if vals else '–')
        print('| ' + ' | '.join(cells) + ' |')


for lab in labels:
    table(data[lab], f'Run `{lab}`')

if len(labels) >= 2:
    best = {}
    keys = set.intersection(*[set(data[l]) for l in labels])
    for key in keys:
        best[key] = max(data[l][key] for l in labels)  # contention only slows things down
    table(best, 'Best over runs ' + ', '.join(labels) + ' (per cell: max of the run medians)')
    print('\n### 2 threads vs 1 thread (best over runs), sorted by work M·N·K\n')
    print('| op | M×K×N | MNK | split2/mm1 | mmT2/mm1 | gemm2/gemm1 | faer2/faer1 | OB2/OB1 |')
    print('|---|---|---|---|---|---|---|---|')
    for s_ in sorted({k[1:] for k in keys}, key=lambda s_: s_[1] * s_[2] * s_[3]):
        op, m, k, n = s_
        r = []
        for a2, a1 in (('split2', 'mm1'), ('mmT2', 'mm1'), ('gemm2', 'gemm1'), ('faer2', 'faer1'), ('openblas2', 'openblas1')):
            x, y = best.get((a2,) + s_), best.get((a1,) + s_)
            r.append(f'{x/y:.2f}' if x and y else '–')
        print(f'| {op} | {m}×{k}×{n} | {m*k*n:.2e} | ' + ' | '.join(r) + ' |')
    print('\n### Run-to-run movement (|GFLOP/s run_b / run_a − 1|, per method, over all shapes)\n')
    a, b = labels[0], labels[-1]
    print(f'| method | median | p90 | max | worst shape |')
    print('|---|---|---|---|---|')
    for c in COLS1 + COLS2:
        mv = [(abs(data[b][key] / data[a][key] - 1), key) for key in keys if key[0] == c]
        if not mv:
            continue
        mv.sort()
        vals = [x for x, _ in mv]
        w = mv[-1][1]
        print(f'| {c} | {statistics.median(vals)*100:.0f}% | {vals[int(len(vals)*0.9)]*100:.0f}% | '
              f'{vals[-1]*100:.0f}% | {w[1]} {w[2]}×{w[3]}×{w[4]} |')
    print('\n### Ratio to OpenBLAS, run-to-run movement (|ratio_b / ratio_a − 1|)\n')
    print('| method | median | p90 | max |')
    print('|---|---|---|---|')
    for c in COLS1 + COLS2:
        if c.startswith('openblas'):
            continue
        ob = 'openblas' + ('1' if c in COLS1 else '2')
        mv = sorted(abs((data[b][key] / data[b][(ob,) + key[1:]]) / (data[a][key] / data[a][(ob,) + key[1:]]) - 1)
                    for key in keys if key[0] == c and (ob,) + key[1:] in keys)
        if mv:
            print(f'| {c} | {statistics.median(mv)*100:.0f}% | {mv[int(len(mv)*0.9)]*100:.0f}% | {mv[-1]*100:.0f}% |')
