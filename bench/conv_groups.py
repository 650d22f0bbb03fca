#!/usr/bin/env python3
"""PyTorch's time for the layers of examples/conv_groups.rs (the same shapes, no bias, f32, NCHW):
forward, and backward as autograd's weight and input gradients of a given output gradient.
Median and fastest of the calls made in about 0.3 s after one warm-up call.

Usage: /work/venv-peers/bin/python bench/conv_groups.py [--threads 2] [--only TEXT]
"""
import argparse, time
import torch

CASES = [
    ("mbv2 dw 32x32x32 s1", (32, 32, 32), 3, 32, 1, 1, 32, 32),
    ("mbv2 dw 96x32x32 s2", (96, 32, 32), 3, 96, 2, 1, 96, 32),
    ("mbv2 dw 144x16x16 s1", (144, 16, 16), 3, 144, 1, 1, 144, 32),
    ("mbv2 dw 144x16x16 s2", (144, 16, 16), 3, 144, 2, 1, 144, 32),
    ("mbv2 dw 192x8x8 s1", (192, 8, 8), 3, 192, 1, 1, 192, 32),
    ("mbv2 dw 384x4x4 s1", (384, 4, 4), 3, 384, 1, 1, 384, 32),
    ("mbv2 dw 960x2x2 s1", (960, 2, 2), 3, 960, 1, 1, 960, 32),
    ("mbv2 1x1 16->96 32x32", (16, 32, 32), 1, 96, 1, 0, 1, 32),
    ("mbv2 1x1 96->24 16x16", (96, 16, 16), 1, 24, 1, 0, 1, 32),
    ("mbv2 1x1 144->24 16x16", (144, 16, 16), 1, 24, 1, 0, 1, 32),
    ("mbv2 1x1 24->144 16x16", (24, 16, 16), 1, 144, 1, 0, 1, 32),
    ("mbv2 1x1 192->32 8x8", (192, 8, 8), 1, 32, 1, 0, 1, 32),
    ("mbv2 1x1 384->64 4x4", (384, 4, 4), 1, 64, 1, 0, 1, 32),
    ("mbv2 1x1 576->96 4x4", (576, 4, 4), 1, 96, 1, 0, 1, 32),
    ("grouped g2 3x3 64->64 16x16", (64, 16, 16), 3, 64, 1, 1, 2, 32),
    ("r18 3x3 s2 64->128 56x56", (64, 56, 56), 3, 128, 2, 1, 1, 8),
    ("r18 3x3 s2 128->256 28x28", (128, 28, 28), 3, 256, 2, 1, 1, 8),
    ("r18 3x3 s1 64->64 56x56", (64, 56, 56), 3, 64, 1, 1, 1, 8),
]


def timed(f):
    f()
    times, start = [], time.perf_counter()
    while len(times) < 5 or time.perf_counter() - start < 0.3:
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    times.sort()
    return times[len(times) // 2], times[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", default="")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    print("layer | batch | forward ms median (fastest) GFLOP/s GB/s | backward ms median (fastest) GFLOP/s GB/s")
    for name, (c, h, w), k, f, s, p, g, b in CASES:
        if a.only not in name:
            continue
        conv = torch.nn.Conv2d(c, f, k, stride=s, padding=p, groups=g, bias=False)
        x = torch.rand(b, c, h, w, requires_grad=True)
        with torch.no_grad():
            z = conv(x)
        d = torch.rand_like(z) * 1e-3
        macs = f * (c // g) * k * k * z.numel() // f
        with torch.no_grad():
            fm, fb = timed(lambda: conv(x))

        def backward():
            conv.weight.grad, x.grad = None, None
            conv(x).backward(d)

        # autograd's backward includes a forward; time it apart and subtract it.
        bm_all, bb_all = timed(backward)
        bm, bb = bm_all - fm, bb_all - fb
        fwd_bytes = 4 * (x.numel() + conv.weight.numel() + z.numel())
        bwd_bytes = 4 * (2 * x.numel() + 2 * conv.weight.numel() + d.numel())
        print(f"{name} | {b} | {fm*1e3:.3f} ({fb*1e3:.3f}) {2*macs/fm/1e9:.0f} {fwd_bytes/fm/1e9:.1f} | "
              f"{bm*1e3:.3f} ({bb*1e3:.3f}) {4*macs/bm/1e9:.0f} {bwd_bytes/bm/1e9:.1f}")


if __name__ == "__main__":
    main()
