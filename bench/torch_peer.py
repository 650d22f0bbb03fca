#!/usr/bin/env python3
"""PyTorch's CPU training throughput on flopnet's benchmark suite: the peer that bench/compare.py
runs beside `flopnet bench`.

A training step is what a PyTorch user writes: optimizer.zero_grad(), the forward pass, softmax
cross-entropy, loss.backward(), and SGD with lr 0.01 and momentum 0.9, all float32, on random
inputs and labels of the right shape (the data never changes the arithmetic). After warm-up
steps, each timed run takes enough steps for about 0.2 s; samples/s is the median over --runs
runs. `infer` times the forward pass alone under torch.no_grad().

Setup (once): python3 -m venv .venv-peers && .venv-peers/bin/pip install -r bench/requirements.txt
Usage: .venv-peers/bin/python bench/torch_peer.py --threads 2 [--only a,e] [--runs 7] [--json out.json]
"""
import argparse, json, statistics, sys, time

import torch
from torch import nn

# key -> (what it is, batches, builder). The dense nets read flat 784/1024-value rows; the CNNs
# read 1x28x28 images.
def dense(sizes, act):
    layers = []
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i + 2 < len(sizes):
            layers.append(act())
    return nn.Sequential(*layers)


def cnn_e():
    # conv5x5x32 same, pool 2, conv5x5x64 same, pool 2, 1024 relu, 10 (the TensorFlow tutorial CNN)
    return nn.Sequential(
        nn.Conv2d(1, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 7 * 7, 1024), nn.ReLU(), nn.Linear(1024, 10))


def cnn_f():
    # conv3x3x16, pool 2, conv3x3x32, pool 2, 10
    return nn.Sequential(
        nn.Conv2d(1, 16, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 5 * 5, 10))


SUITE = {
    "a": ("784-30-30-10 sigmoid", [1, 32, 128], lambda: dense([784, 30, 30, 10], nn.Sigmoid), (784,), "train"),
    "b": ("1024-30-30-10 sigmoid", [1, 32, 128], lambda: dense([1024, 30, 30, 10], nn.Sigmoid), (1024,), "train"),
    "c": ("784-800-10 relu", [1, 32, 128, 256], lambda: dense([784, 800, 10], nn.ReLU), (784,), "train"),
    "d": ("784-256-128-100-10 relu", [128], lambda: dense([784, 256, 128, 100, 10], nn.ReLU), (784,), "train"),
    "infer": ("784-800-10 relu, forward only", [128], lambda: dense([784, 800, 10], nn.ReLU), (784,), "inference"),
    "e": ("CNN e (TensorFlow tutorial)", [64], cnn_e, (1, 28, 28), "train"),
    "f": ("CNN f (small)", [128], cnn_f, (1, 28, 28), "train"),
}


def rate(model, shape, batch, mode, runs):
    gen = torch.Generator().manual_seed(0)
    x = torch.rand((batch, *shape), generator=gen, dtype=torch.float32)
    y = torch.randint(0, 10, (batch,), generator=gen)
    loss_fn = nn.CrossEntropyLoss()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    if mode == "inference":
        model.eval()

        def step():
            with torch.no_grad():
                model(x)
    else:
        model.train()

        def step():
            opt.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()

    # Warm-up: at least 5 steps and 0.2 s; it also sizes the timed runs.
    start, warm = time.perf_counter(), 0
    while warm < 5 or time.perf_counter() - start < 0.2:
        step()
        warm += 1
    steps = max(3, int(0.2 / ((time.perf_counter() - start) / warm)))
    rates = []
    for _ in range(runs):
        t = time.perf_counter()
        for _ in range(steps):
            step()
        rates.append(steps * batch / (time.perf_counter() - t))
    return statistics.median(rates), steps


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", default=",".join(SUITE), help="cases, comma-separated: " + ", ".join(SUITE))
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--json", help="write the rows here")
    a = ap.parse_args()
    keys = [k for k in a.only.split(",") if k]
    unknown = [k for k in keys if k not in SUITE]
    if unknown:
        sys.exit(f"torch_peer.py: unknown case(s) {', '.join(unknown)}; pick from {', '.join(SUITE)}")
    if a.threads < 1 or a.runs < 1:
        sys.exit("torch_peer.py: --threads and --runs must be at least 1")
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}, {a.threads} thread(s)")
    rows = []
    for key in keys:
        what, batches, build, shape, mode = SUITE[key]
        for batch in batches:
            r, steps = rate(build(), shape, batch, mode, a.runs)
            rows.append(dict(case=key, net=what, mode=mode, batch=batch, samples_per_s=r, steps_per_run=steps,
                             threads=a.threads, torch=torch.__version__))
            print(f"{key:6} {what:32} {mode:9} batch {batch:4}: {r:12,.0f} samples/s", flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
