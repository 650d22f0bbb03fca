#!/usr/bin/env python3
"""The time model against the clock: predicted and measured seconds per epoch over the suite.

Calibrates first (so the profile is from this sitting), then trains one epoch of full
Fashion-MNIST (54,000 training examples) for each case with `--metrics`, whose rows carry both
`seconds` and `predicted_seconds`; the measurement is the median epoch after the first. Needs `apt-get install dataset-fashion-mnist`.

Usage (repository root, after `cargo build --release`):  python3 bench/predict_vs_measured.py [--threads 2]
"""
import argparse, json, os, statistics, subprocess, tempfile

SUITE = [
    ("784-30-30-10", "sigmoid", 1), ("784-30-30-10", "sigmoid", 32), ("784-30-30-10", "sigmoid", 128),
    ("784-800-10", "relu", 32), ("784-800-10", "relu", 128), ("784-800-10", "relu", 256),
    ("784-256-128-100-10", "relu", 128),
    # The CNNs of the speed suite (f and e); e's epochs are long, so two (warm-up and one measured).
    ("1x28x28-conv3x3x16:relu-maxpool2-conv3x3x32:relu-maxpool2-10", "relu", 128),
    ("1x28x28-conv5x5x32p2:relu-maxpool2-conv5x5x64p2:relu-maxpool2-1024-10", "relu", 64),
]


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser()
    ap.add_argument("--flopnet", default=os.path.join(here, "..", "target", "release", "flopnet"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=4,
                    help="epochs per case; the first is warm-up, the median of the rest is the measurement")
    a = ap.parse_args()
    profile = os.path.join(tempfile.mkdtemp(), "profile.json")
    print(subprocess.run([a.flopnet, "calibrate", "--threads", str(a.threads), "--profile", profile],
                         check=True, capture_output=True, text=True).stdout)
    errors = []
    print("| network | batch | predicted s/epoch | measured s/epoch | error |")
    print("|---|---|---|---|---|")
    for spec, act, b in SUITE:
        with tempfile.NamedTemporaryFile(suffix=".jsonl", delete=False) as f:
            metrics = f.name
        epochs = 2 if "conv5x5" in spec else a.epochs
        subprocess.run([a.flopnet, "train", spec, "--act", act, "--data", "fashion-mnist", "--epochs", str(epochs),
                        "--batch", str(b), "--optimizer", "momentum", "--threads", str(a.threads), "--profile", profile,
                        "--metrics", metrics], check=True, capture_output=True)
        rows = [json.loads(l) for l in open(metrics) if '"epoch"' in l]
        os.unlink(metrics)
        # This machine is shared: one epoch can run 25% slower than the next. The median of the
        # epochs after the first is the machine's speed rather than one moment's neighbours.
        measured = statistics.median(r["seconds"] for r in rows[1:] or rows)
        predicted = rows[-1]["predicted_seconds"]
        err = measured / predicted - 1
        errors.append(abs(err))
        print(f"| {spec} {act} | {b} | {predicted:.2f} | {measured:.2f} | {100 * err:+.0f}% |", flush=True)
    print(f"\nmedian absolute error {100 * statistics.median(errors):.0f}%, worst {100 * max(errors):.0f}%")


if __name__ == "__main__":
    main()
