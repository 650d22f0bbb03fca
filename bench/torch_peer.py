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


class PadShortcut(nn.Module):
    """He et al.'s option A: every stride-th row and column, zero maps appended."""

    def __init__(self, extra, stride):
        super().__init__()
        self.extra, self.stride = extra, stride

    def forward(self, x):
        x = x[:, :, ::self.stride, ::self.stride]
        return nn.functional.pad(x, (0, 0, 0, 0, 0, self.extra))


class Basic(nn.Module):
    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(),
            nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out))
        self.short = PadShortcut(c_out - c_in, stride) if stride != 1 else nn.Identity()

    def forward(self, x):
        return torch.relu(self.body(x) + self.short(x))


def cifar_resnet(depth, classes=10):
    # The CIFAR ResNet of depth 6n+2 (flopnet's zoo `resnet20`: 269,722 parameters).
    n, layers, c = (depth - 2) // 6, [nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU()], 16
    for stage in range(3):
        width = 16 << stage
        for b in range(n):
            layers.append(Basic(c, width, 2 if stage > 0 and b == 0 else 1))
            c = width
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, classes))


def torchvision_model(name, **kw):
    import torchvision  # only the zoo cases need it
    return getattr(torchvision.models, name)(**kw)


SUITE = {
    "a": ("784-30-30-10 sigmoid", [1, 32, 128], lambda: dense([784, 30, 30, 10], nn.Sigmoid), (784,), "train"),
    "b": ("1024-30-30-10 sigmoid", [1, 32, 128], lambda: dense([1024, 30, 30, 10], nn.Sigmoid), (1024,), "train"),
    "c": ("784-800-10 relu", [1, 32, 128, 256], lambda: dense([784, 800, 10], nn.ReLU), (784,), "train"),
    "d": ("784-256-128-100-10 relu", [128], lambda: dense([784, 256, 128, 100, 10], nn.ReLU), (784,), "train"),
    "infer": ("784-800-10 relu, forward only", [128], lambda: dense([784, 800, 10], nn.ReLU), (784,), "inference"),
    "e": ("CNN e (TensorFlow tutorial)", [64], cnn_e, (1, 28, 28), "train"),
    "f": ("CNN f (small)", [128], cnn_f, (1, 28, 28), "train"),
    "resnet20": ("resnet20 3x32x32", [128], lambda: cifar_resnet(20), (3, 32, 32), "train"),
    "mobilenet_v2": ("mobilenet_v2 3x64x64, 10 classes", [32],
                     lambda: torchvision_model("mobilenet_v2", num_classes=10), (3, 64, 64), "train"),
    "resnet18": ("resnet18 3x224x224", [8], lambda: torchvision_model("resnet18"), (3, 224, 224), "inference"),
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
            model = build()
            r, steps = rate(model, shape, batch, mode, a.runs)
            params = sum(p.numel() for p in model.parameters())
            rows.append(dict(case=key, net=what, mode=mode, batch=batch, samples_per_s=r, steps_per_run=steps,
                             threads=a.threads, torch=torch.__version__, params=params))
            print(f"{key:6} {what:32} {mode:9} batch {batch:4}: {r:12,.0f} samples/s ({params:,} parameters)", flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
