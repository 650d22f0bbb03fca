#!/usr/bin/env python3
"""Checks that torchvision's models exported to ONNX give flopnet exactly the zoo's ledger.

For resnet18, resnet50, mobilenet_v2, squeezenet1_1 and densenet121 it exports torchvision's
model with the legacy exporter in training mode (batch normalization and dropout stay in the
graph, nothing is folded), keeps the graph only (weights in an external file, deleted), and
compares `flopnet count FILE.onnx --json` with `flopnet count NAME
--json`: the parameters, every total of the ledger, and each layer's counts (as a multiset: the
order of independent branches may differ). Prints one line per model; exit 1 if any differs.

--new-exporter adds the new exporter (`dynamo=True`, `optimize=False`, evaluation mode: batch
normalization stays). flopnet does not read those files yet: they compute a zero bias for every
convolution without one from the weight's shape (Shape, Expand, CastLike), where flopnet reads a
bias only from an initializer. (With `optimize=True`, the default, the bias is gone but batch
normalization is folded into the convolutions, so the ledger is rightly another one.)

Set up once:  python3 -m venv venv && venv/bin/pip install torch onnx onnxscript
              venv/bin/pip install --no-deps torchvision
Run:          venv/bin/python tools/onnx_zoo_check.py [--flopnet target/release/flopnet] [--new-exporter]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import warnings

import torch
import torchvision.models as tvm
from onnx_fixtures import graph_only, legacy

warnings.filterwarnings("ignore")

MODELS = ["resnet18", "resnet50", "mobilenet_v2", "squeezenet1_1", "densenet121"]


def export(name, path, dynamo):
    model = getattr(tvm, name)()
    x = torch.randn(2, 3, 224, 224)
    full = path + ".full.onnx"
    if dynamo:
        model.eval()
        torch.onnx.export(model, (x,), full, dynamo=True, optimize=False, input_names=["input"], external_data=True)
    else:
        legacy(model, x, full)
    graph_only(full, path)


def count(flopnet, arg):
    out = subprocess.run([flopnet, "count", arg, "--json"], capture_output=True, text=True)
    if out.returncode != 0:
        return None, out.stderr.strip()
    return json.loads(out.stdout), out.stderr.strip()


def strip(v):
    """The ledger without names and labels."""
    if isinstance(v, dict):
        return {k: strip(x) for k, x in v.items() if k not in ("spec", "name", "reads", "label")}
    if isinstance(v, list):
        return [strip(x) for x in v]
    return v


def compare(onnx_ledger, zoo_ledger):
    a, b = strip(onnx_ledger), strip(zoo_ledger)
    la, lb = a.pop("layers", []), b.pop("layers", [])
    diffs = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    key = lambda l: json.dumps(l, sort_keys=True)  # noqa: E731
    if sorted(map(key, la)) != sorted(map(key, lb)):
        diffs.append(f"layers ({len(la)} against {len(lb)})")
    return diffs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--flopnet", default="target/release/flopnet")
    ap.add_argument("--new-exporter", action="store_true")
    a = ap.parse_args()
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        for name in MODELS:
            zoo, _ = count(a.flopnet, name)
            for dynamo in [False, True] if a.new_exporter else [False]:
                how = "new exporter (dynamo, eval)" if dynamo else "legacy exporter (training mode)"
                path = os.path.join(tmp, f"{name}{'_dynamo' if dynamo else ''}.onnx")
                try:
                    export(name, path, dynamo)
                except Exception as e:  # noqa: BLE001
                    print(f"{name:14} {how}: export failed: {str(e).splitlines()[0]}")
                    failed = True
                    continue
                got, err = count(a.flopnet, path)
                if got is None:
                    print(f"{name:14} {how}: flopnet refused it: {err}")
                    failed = True
                    continue
                diffs = compare(got, zoo)
                pe = got["per_example"]
                totals = ", ".join(f"{k} {pe[k]['flop']:,}" for k in ("forward", "backward", "update") if k in pe)
                verdict = "same as the zoo" if not diffs else "DIFFERS in " + ", ".join(diffs)
                print(f"{name:14} {how}: params {got['params']:,}, per example {totals}: {verdict}")
                failed |= bool(diffs)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
