#!/usr/bin/env python3
"""The time model against the clock: predicted and measured seconds per epoch over the suite.

Calibrates first (so the profile is from this sitting), then trains one epoch of full
Fashion-MNIST (54,000 training examples) for each case with `--metrics`, whose rows carry both
`seconds` and `predicted_seconds`; the measurement is the median epoch after the first. Needs `apt-get install dataset-fashion-mnist`.

It does all of that R times (--rounds, 5 by default, ~14 minutes here; calibrating again each
round) and reports, per case, the median prediction and the median measurement over the
rounds, and every round's error: on this shared machine a slow spell of a minute can move
every epoch of one case, or a calibration, and the rounds put minutes between a case's
measurements.

Usage (repository root, after `cargo build --release`):
    python3 bench/predict_vs_measured.py [--threads 2] [--rounds 5]
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
    ap.add_argument("--rounds", type=int, default=5, help="calibrate-and-measure rounds; medians over them")
    a = ap.parse_args()
    rounds = []
    for r in range(max(1, a.rounds)):
        profile = os.path.join(tempfile.mkdtemp(), "profile.json")
        out = subprocess.run([a.flopnet, "calibrate", "--threads", str(a.threads), "--profile", profile],
                             check=True, capture_output=True, text=True).stdout
        if r == 0:
            print(out)
        rows_of_round = []
        for spec, act, b in SUITE:
            with tempfile.NamedTemporaryFile(suffix=".jsonl", delete=False) as f:
                metrics = f.name
            epochs = 2 if "conv5x5" in spec else a.epochs
            subprocess.run([a.flopnet, "train", spec, "--act", act, "--data", "fashion-mnist", "--epochs", str(epochs),
                            "--batch", str(b), "--optimizer", "momentum", "--threads", str(a.threads), "--profile",
                            profile, "--metrics", metrics], check=True, capture_output=True)
            rows = [json.loads(l) for l in open(metrics) if '"epoch"' in l]
            os.unlink(metrics)
            # This machine is shared: one epoch can run 25% slower than the next. The median of
            # the epochs after the first is the machine's speed rather than one moment's neighbours.
            rows_of_round.append((statistics.median(x["seconds"] for x in rows[1:] or rows),
                                  rows[-1]["predicted_seconds"]))
        rounds.append(rows_of_round)
    errors = []
    print("| network | batch | predicted s/epoch | measured s/epoch | error |")
    print("|---|---|---|---|---|")
    for i, (spec, act, b) in enumerate(SUITE):
        got = [rnd[i] for rnd in rounds]
        measured = statistics.median(m for m, _ in got)
        predicted = statistics.median(p for _, p in got)
        err = measured / predicted - 1
        errors.append(abs(err))
        each = f" (rounds {', '.join(f'{100 * (m / p - 1):+.0f}%' for m, p in got)})" if len(got) > 1 else ""
        print(f"| {spec} {act} | {b} | {predicted:.2f} | {measured:.2f} | {100 * err:+.0f}%{each} |", flush=True)
    print(f"\nmedian absolute error {100 * statistics.median(errors):.0f}%, worst {100 * max(errors):.0f}%")

if __name__ == "__main__":
    main()
