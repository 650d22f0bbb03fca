#!/usr/bin/env python3
"""Runs an ONNX file in ONNX Runtime on raw f32 inputs and writes its raw f32 outputs.

tests/onnx.rs uses it to check that a model flopnet trained and wrote as ONNX gives, in another
runtime, the outputs flopnet's engine gives: it writes the test set's features (already scaled
as the model was trained) as little-endian f32, N examples of the model's input each, and
compares what this writes back.

Set up once:  python3 -m venv venv && venv/bin/pip install onnxruntime numpy
Run:          venv/bin/python tools/onnx_run.py MODEL.onnx FEATURES.f32 OUTPUTS.f32
"""

import sys

import numpy as np
import onnxruntime as ort


def main():
    model, features, outputs = sys.argv[1:4]
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    inp = session.get_inputs()[0]
    shape = [d for d in inp.shape[1:]]
    per = int(np.prod(shape))
    x = np.fromfile(features, dtype="<f4")
    x = x.reshape([len(x) // per] + shape)
    (y,) = session.run(None, {inp.name: x})
    y.astype("<f4").tofile(outputs)
    print(f"onnxruntime {ort.__version__}: {x.shape[0]} examples through {model}, outputs {list(y.shape)}")


if __name__ == "__main__":
    main()
