#!/usr/bin/env python3
"""Regenerate flopnet's embedded Fashion-MNIST subset.

Selection rule (deterministic, class-balanced): walk each source file in
file order and keep the first PER_CLASS examples of every class (0..9);
the kept examples stay in their original file order.

    train: first 600 of each class from train-*-ubyte.gz -> 6,000 images
    test:  first 100 of each class from t10k-*-ubyte.gz  -> 1,000 images

Usage:
    python3 data/embedded/make_subset.py [SOURCE_DIR] [OUTPUT_DIR]

SOURCE_DIR defaults to /usr/share/datasets/fashion-mnist (Debian package
dataset-fashion-mnist); OUTPUT_DIR defaults to this script's directory.
Output is gzip with mtime 0 and no file name, so reruns are byte-identical.
Only the Python standard library is used.
"""

import gzip
import os
import struct
import sys

SPLITS = (("train", 600), ("t10k", 100))
CLASSES = 10


def read_idx(path, magic):
    with gzip.open(path, "rb") as f:
        data = f.read()
    (found,) = struct.unpack(">I", data[:4])
    if found != magic:
        sys.exit(f"{path}: magic 0x{found:08x}, expected 0x{magic:08x}")
    ndims = magic & 0xFF
    dims = struct.unpack(">" + "I" * ndims, data[4 : 4 + 4 * ndims])
    return dims, data[4 + 4 * ndims :]


def write_gz(path, payload):
    with open(path, "wb") as raw:
        # filename="" and mtime=0 keep the output reproducible.
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as f:
            f.write(payload)


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else "/usr/share/datasets/fashion-mnist"
    out = sys.argv[2] if len(sys.argv) > 2 else os.path.dirname(os.path.abspath(__file__))
    for prefix, per_class in SPLITS:
        (n, rows, cols), pixels = read_idx(os.path.join(src, f"{prefix}-images-idx3-ubyte.gz"), 0x803)
        (nl,), labels = read_idx(os.path.join(src, f"{prefix}-labels-idx1-ubyte.gz"), 0x801)
        if n != nl:
            sys.exit(f"{prefix}: {n} images but {nl} labels")
        size = rows * cols
        counts = [0] * CLASSES
        keep = []
        for i, label in enumerate(labels[:n]):
            if counts[label] < per_class:
                counts[label] += 1
                keep.append(i)
        if counts != [per_class] * CLASSES:
            sys.exit(f"{prefix}: not enough examples per class: {counts}")
        k = len(keep)
        images = bytearray(struct.pack(">IIII", 0x803, k, rows, cols))
        for i in keep:
            images += pixels[i * size : (i + 1) * size]
        lab = bytearray(struct.pack(">II", 0x801, k))
        lab += bytes(labels[i] for i in keep)
        write_gz(os.path.join(out, f"{prefix}-images-idx3-ubyte.gz"), bytes(images))
        write_gz(os.path.join(out, f"{prefix}-labels-idx1-ubyte.gz"), bytes(lab))
        print(f"{prefix}: kept {k} of {n} ({per_class} per class), last source index {keep[-1]}")


if __name__ == "__main__":
    main()
