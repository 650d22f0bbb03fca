#!/usr/bin/env python3
"""Exports the ONNX files tests/onnx.rs reads, from PyTorch, into tests/fixtures/onnx/.

Small networks are exported whole, with both of PyTorch's exporters: the legacy one
(`dynamo=False`, in training mode so that batch normalization and dropout stay in the graph) and
the new one (`dynamo=True`, in evaluation mode, which folds batch normalization into the
convolutions). torchvision's ResNet-18 and MobileNetV2 are exported whole too, then saved
graph-only: every tensor over 1 KiB goes to an external `.onnx.data` file that is deleted, so
the committed file keeps the graph, the attributes and every weight's shape (a few hundred KB)
and `count` reads it without the weights.

Set up once:  python3 -m venv venv && venv/bin/pip install torch onnx onnxscript
              venv/bin/pip install --no-deps torchvision
Run:          venv/bin/python tools/onnx_fixtures.py [--out tests/fixtures/onnx]
"""

import argparse
import json
import os
import tempfile
import warnings

import onnx
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision.models as tvm

warnings.filterwarnings("ignore")


class SmallCnn(nn.Module):
    """Every image operator flopnet reads: a convolution with bias, batch norm, max pooling with
    padding, a depthwise convolution with ReLU6, a residual sum, a concatenation, global pooling,
    dropout and a linear layer."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
        self.dwbn = nn.BatchNorm2d(8)
        self.branch = nn.Conv2d(8, 4, 1)
        self.avg = nn.AvgPool2d(2)
        self.drop = nn.Dropout(0.25)
        self.fc = nn.Linear(12, 5)

    def forward(self, x):
        x = self.pool(F.relu(self.bn(self.conv(x))))
        x = x + F.relu6(self.dwbn(self.dw(x)))
        x = torch.cat([x, torch.sigmoid(self.branch(x))], 1)
        x = F.adaptive_avg_pool2d(self.avg(x), 1).flatten(1)
        return self.fc(self.drop(x))


class MatMulMlp(nn.Module):
    """Dense layers written as x @ W + b (MatMul and Add), with the other activations."""

    def __init__(self):
        super().__init__()
        self.w1 = nn.Parameter(torch.randn(6, 7) * 0.3)
        self.b1 = nn.Parameter(torch.randn(7) * 0.1)
        self.w2 = nn.Parameter(torch.randn(7, 5) * 0.3)
        self.b2 = nn.Parameter(torch.randn(5) * 0.1)
        self.w3 = nn.Parameter(torch.randn(5, 3) * 0.3)

    def forward(self, x):
        x = F.leaky_relu(x @ self.w1 + self.b1, 0.01)
        x = torch.tanh(x @ self.w2 + self.b2)
        return F.log_softmax(x @ self.w3, dim=1)


class Unsupported(nn.Module):
    """A network with an operator flopnet does not count (hard swish, MobileNetV3's activation)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.fc = nn.Linear(2 * 8 * 8, 3)

    def forward(self, x):
        return self.fc(F.hardswish(self.conv(x)).flatten(1))


def legacy(model, x, path):
    """The legacy exporter in training mode: batch norm and dropout stay, nothing is folded."""
    model.train()
    torch.onnx.export(
        model,
        (x,),
        path,
        dynamo=False,
        training=torch.onnx.TrainingMode.TRAINING,
        do_constant_folding=False,
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
    )


def new(model, x, path):
    """The new exporter (torch.export), evaluation mode, dynamic batch."""
    model.eval()
    batch = torch.export.Dim("batch", min=2)
    torch.onnx.export(
        model,
        (x,),
        path,
        dynamo=True,
        input_names=["input"],
        output_names=["logits"],
        dynamic_shapes=({0: batch},),
        external_data=False,
    )


def graph_only(src, dst):
    """`src` saved again with every tensor over 1 KiB in an external file, which is deleted."""
    m = onnx.load(src)
    data = os.path.basename(dst) + ".data"
    onnx.save_model(m, dst, save_as_external_data=True, all_tensors_to_one_file=True, location=data, size_threshold=1024)
    os.remove(os.path.join(os.path.dirname(dst), data))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/fixtures/onnx")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    torch.manual_seed(0)
    out = lambda name: os.path.join(a.out, name)  # noqa: E731
    legacy(SmallCnn(), torch.randn(2, 3, 16, 16), out("cnn_legacy.onnx"))
    new(SmallCnn(), torch.randn(2, 3, 16, 16), out("cnn_dynamo.onnx"))
    new(MatMulMlp(), torch.randn(2, 6), out("mlp_dynamo.onnx"))
    legacy(Unsupported(), torch.randn(2, 1, 8, 8), out("hardswish.onnx"))
    # PyTorch's own answer for the MatMul network, for the test to compare outputs with.
    mlp = MatMulMlp().eval()
    legacy(mlp, torch.randn(2, 6), out("mlp_matmul.onnx"))
    x = torch.randn(4, 6)
    with torch.no_grad():
        y = mlp(x).exp()
    with open(out("mlp_matmul.json"), "w") as f:
        json.dump({"input": x.flatten().tolist(), "softmax": y.flatten().tolist()}, f)
    with tempfile.TemporaryDirectory() as tmp:
        for name, build in [("resnet18", tvm.resnet18), ("mobilenet_v2", tvm.mobilenet_v2)]:
            full = os.path.join(tmp, name + ".onnx")
            legacy(build(), torch.randn(2, 3, 224, 224), full)
            graph_only(full, out(name + "_graph.onnx"))
    for f in sorted(os.listdir(a.out)):
        print(f"{os.path.getsize(out(f)):>9} {out(f)}")


if __name__ == "__main__":
    main()
