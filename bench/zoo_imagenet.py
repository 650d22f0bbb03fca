#!/usr/bin/env python3
"""How long ImageNet training would take: every ImageNet model of the zoo, predicted for this
machine (its calibrated profile) and for a GPU's published peaks (a roofline, `--device`).

For each model it runs
    flopnet count MODEL --predict --batch 256 --examples 1281167 --epochs 90 --optimizer momentum --json
once with this machine's profile (`--profile`, or the one in the cache, calibrated quickly if
missing) and once with `--device DEVICE` instead of the profile, and prints a Markdown table.
1,281,167 is ImageNet-1k's training set; 90 epochs at batch 256 with momentum is the
torchvision ResNet recipe.

Usage (repository root, after `cargo build --release` and `flopnet calibrate`):
    python3 bench/zoo_imagenet.py [--threads 2] [--device h200:bf16] [--profile FILE]
"""
import argparse, json, os, subprocess

MODELS = ["alexnet", "vgg11", "vgg16", "vgg16_bn", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
          "squeezenet1_1", "densenet121", "mobilenet_v2"]


def hours(s):
    return f"{s / 86400:.1f} d" if s >= 86400 * 3 else f"{s / 3600:.1f} h" if s >= 3600 else f"{s / 60:.1f} min"


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser()
    ap.add_argument("--flopnet", default=os.path.join(here, "..", "target", "release", "flopnet"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="h200:bf16")
    ap.add_argument("--profile", help="this machine's profile [default: the cached one]")
    a = ap.parse_args()
    common = ["--batch", "256", "--examples", "1281167", "--epochs", "90", "--optimizer", "momentum", "--json"]

    def predicted(model, how):
        out = subprocess.run([a.flopnet, "count", model, *common, *how], capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(f"count {model} failed: {out.stderr.strip()}")
        return json.loads(out.stdout)["predicted"]

    here_how = ["--predict", "--threads", str(a.threads)] + (["--profile", a.profile] if a.profile else [])
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    print(f"| model | step (256), this CPU | epoch, this CPU | 90 epochs, this CPU | epoch, {a.device} | 90 epochs, {a.device} |")
    print("|---|---|---|---|---|---|")
    for m in MODELS:
        mine, gpu = predicted(m, here_how), predicted(m, ["--device", a.device])
        print(f"| {m} | {mine['step_seconds']:.1f} s | {hours(mine['epoch_seconds'])} | {hours(mine['run_seconds'])} "
              f"| {hours(gpu['epoch_seconds'])} | {hours(gpu['run_seconds'])} |", flush=True)
    print(f"\nThis CPU: {cpu}, {a.threads} threads (its calibrated profile); {a.device}: a roofline at published peaks.")


if __name__ == "__main__":
    main()
