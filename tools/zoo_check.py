#!/usr/bin/env python3
"""Checks flopnet's model zoo against torchvision itself.

For every zoo model torchvision (or this file, for LeNet-5 and the CIFAR ResNets) defines, it
builds the model with random weights, counts its parameters, and runs one example through
PyTorch's FlopCounterMode: forward FLOPs / 2 are the multiply-accumulates of convolutions and
matrix products, the figure torchvision publishes. It prints them beside `flopnet zoo`'s and
says which differ (exit 1 if any).

With --backward it also counts one backward pass of MobileNetV2 (batch 1, the input not
requiring a gradient, as in training) with FlopCounterMode, beside flopnet's exact count of
the same products, and splits one depthwise convolution's backward into dW and dX:
FlopCounterMode prices a grouped convolution's weight gradient g times too high (see
docs/counting.md).

Set up once:  python3 -m venv venv && venv/bin/pip install torch torchvision pillow
Run:          venv/bin/python tools/zoo_check.py [--flopnet target/release/flopnet] [--backward]
"""

import argparse
import subprocess
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision.models as tvm
from torch.utils.flop_counter import FlopCounterMode


class CifarBlock(nn.Module):
    """He et al. 2016's basic block for CIFAR-10 with the parameter-free shortcut (option A)."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.b1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(cout)
        self.pad = cout - cin
        self.stride = stride

    def forward(self, x):
        y = self.b2(self.c2(F.relu(self.b1(self.c1(x)))))
        s = x[:, :, :: self.stride, :: self.stride]
        if self.pad:
            s = F.pad(s, (0, 0, 0, 0, 0, self.pad))
        return F.relu(y + s)


def cifar_resnet(depth):
    n = (depth - 2) // 6
    layers = [nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU()]
    cin = 16
    for stage in range(3):
        width = 16 << stage
        for b in range(n):
            layers.append(CifarBlock(cin, width, 2 if stage > 0 and b == 0 else 1))
            cin = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10)]
    return nn.Sequential(*layers)


def lenet5():
    return nn.Sequential(
        nn.Conv2d(1, 6, 5), nn.Tanh(), nn.AvgPool2d(2),
        nn.Conv2d(6, 16, 5), nn.Tanh(), nn.AvgPool2d(2),
        nn.Conv2d(16, 120, 5), nn.Tanh(), nn.Flatten(),
        nn.Linear(120, 84), nn.Tanh(), nn.Linear(84, 10),
    )


def model(name):
    if name == "lenet5":
        return lenet5(), (1, 32, 32)
    if name in ("resnet20", "resnet32", "resnet44", "resnet56", "resnet110"):
        return cifar_resnet(int(name[6:])), (3, 32, 32)
    return getattr(tvm, name)(weights=None), (3, 224, 224)


def forward_macs(m, shape):
    m.eval()
    with FlopCounterMode(display=False) as counter:
        m(torch.randn(1, *shape))
    return counter.get_total_flops() // 2


def flopnet_zoo(binary):
    rows = {}
    for line in subprocess.run([binary, "zoo"], check=True, capture_output=True, text=True).stdout.splitlines()[1:]:
        name, _, params, macs, _ = line.split()
        rows[name] = (int(params.replace(",", "")), int(macs.replace(",", "")))
    return rows


def backward_check(binary):
    m, shape = model("mobilenet_v2")
    m.train()
    x = torch.randn(1, *shape)
    out = m(x)
    with FlopCounterMode(display=False) as counter:
        out.sum().backward()
    torch_bwd = counter.get_total_flops()
    text = subprocess.run([binary, "count", "mobilenet_v2"], check=True, capture_output=True, text=True).stdout
    line = next(l for l in text.splitlines() if "and backward (dW and dX" in l)
    ours = int(line.split()[-1].replace(",", ""))
    print(f"mobilenet_v2 backward, one example: FlopCounterMode {torch_bwd:,} FLOPs, "
          f"2 x flopnet's dW and dX MACs {ours:,}: {torch_bwd / ours:.2f}x")
    # One depthwise 3x3 convolution of 32 channels on 16x16: forward 2 x 32 x 16 x 16 x 9 FLOPs,
    # and so are its dW and its dX.
    c = 32
    conv = nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False)
    forward = 2 * c * 16 * 16 * 9
    for with_dx in (False, True):
        x = torch.randn(1, c, 16, 16, requires_grad=with_dx)
        y = conv(x)
        with FlopCounterMode(display=False) as counter:
            y.sum().backward()
        what = "dW and dX" if with_dx else "dW alone"
        print(f"depthwise conv {c}ch 16x16, {what}: FlopCounterMode {counter.get_total_flops():,} FLOPs, "
              f"forward {forward:,}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--flopnet", default="target/release/flopnet")
    ap.add_argument("--backward", action="store_true")
    args = ap.parse_args()
    ours = flopnet_zoo(args.flopnet)
    bad = 0
    print(f"{'model':14} {'params':>12} {'flopnet':>12} {'MACs':>15} {'flopnet':>15}")
    for name, (params, macs) in ours.items():
        m, shape = model(name)
        p = sum(t.numel() for t in m.parameters())
        mc = forward_macs(m, shape)
        ok = (p, mc) == (params, macs)
        bad += not ok
        print(f"{name:14} {p:12,} {params:12,} {mc:15,} {macs:15,} {'ok' if ok else 'DIFFERENT'}")
    if args.backward:
        backward_check(args.flopnet)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
