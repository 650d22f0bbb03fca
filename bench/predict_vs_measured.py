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

With `--random N --seed S` it measures N networks generated at random instead of the suite:
convolutional chains (some with grouped convolutions), residual networks (with or without batch
normalization, projection or zero-padding shortcuts) and MobileNetV2-style inverted residual
networks (depthwise convolutions, batch normalization, relu6), over random channels, kernels,
strides, depths and batch sizes, on 1x28x28 inputs (the embedded Fashion-MNIST subset) or
3x32x32 ones (a CIFAR-10 file of as many images made from the same subset, `fashion_cifar`,
written to a temporary directory and deleted after; `--noise` writes random images with random
labels instead, as sittings before 2026-12-01 did, on which many networks stop learning). Each is trained for `--epochs` epochs of 5,400 examples; a net is
drawn again while its counted work per epoch lies outside 10–200 GFLOP (so that a sitting takes
minutes, not hours; the draw depends on the seed and the ledger alone, so a seed gives the same
networks whatever the time model says). The nets take turns: residual with batch
normalization, residual without, a chain with, a chain without, inverted residual. `--plain`
draws only chains without batch normalization (what the engine ran before graphs).

The last lines give the median and the worst absolute error over the networks, the CPU, the
seed, the load average before and after the sitting (`/proc/loadavg`) and the cores other
processes kept busy meanwhile (from `/proc/stat`, less the sitting's own CPU time): a sitting
that shared its cores is not conclusive. With more than one thread it also probes, before and
after calibrating and after each training, how much faster that many threads run a fixed
matrix-product workload than one (`speedup`): on this VM the host sometimes places its two
virtual cores on one physical core, which no process here shows, and a two-thread step then
runs up to 2× slower; a sitting whose probes disagree is not conclusive either. `--steady MIN`
calibrates and trains only while the speedup is at least MIN (it waits for it), and runs a
calibration or a training again when the probe after it fell below MIN (at most three runs,
each repeat listed at the end): what the model is judged on is then the machine it was
calibrated on.

Usage (repository root, after `cargo build --release`):
    python3 bench/predict_vs_measured.py [--threads 2] [--rounds 5]
    python3 bench/predict_vs_measured.py --random 16 --seed 1 [--rounds 1] [--steady 1.7]
"""
import argparse, gzip, json, os, random, resource, statistics, subprocess, sys, tempfile, time

SUITE = [
    ("784-30-30-10", "sigmoid", 1), ("784-30-30-10", "sigmoid", 32), ("784-30-30-10", "sigmoid", 128),
    ("784-800-10", "relu", 32), ("784-800-10", "relu", 128), ("784-800-10", "relu", 256),
    ("784-256-128-100-10", "relu", 128),
    # The CNNs of the speed suite (f and e); e's epochs are long, so two (warm-up and one measured).
    # (They name every hidden activation, so `--act` is left out: train refuses it as a no-op.)
    ("1x28x28-conv3x3x16:relu-maxpool2-conv3x3x32:relu-maxpool2-10", None, 128),
    ("1x28x28-conv5x5x32p2:relu-maxpool2-conv5x5x64p2:relu-maxpool2-1024-10", None, 64),
]


KINDS = 5


def random_net(rng, kind):
    """One network in the compact form and its batch: a stem, 1–3 stages of 1–2 blocks each
    (channels doubling up to 32, the first block of a later stage strided), global average
    pooling or a dense head. `kind` (0–4) picks residual blocks or a chain, with or without
    batch normalization (a chain with it may group its convolutions), or MobileNetV2's inverted
    residual blocks (1×1 expansion, depthwise 3×3 or 5×5, 1×1 projection, batch norm and relu6),
    so that a sitting holds all five."""
    image = rng.choice(["1x28x28", "3x32x32"])
    residual, bn = kind in (0, 1), kind in (0, 2, 4)
    c = rng.choice([8, 16])
    k = rng.choice([3, 5])

    def conv(ch, kk, stride=1, act="relu", groups=1):
        s = f"conv{kk}x{kk}x{ch}" + (f"s{stride}" if stride > 1 else "") + f"p{kk // 2}"
        s += f"g{groups}" if groups > 1 else ""
        return f"{s}b0-bn:{act}" if bn else f"{s}:{act}"

    parts = [image, conv(c, k, act="relu6" if kind == 4 else "relu")]
    for stage in range(rng.randint(1, 3)):
        c_in = c
        if stage > 0:
            c = min(2 * c, 32)
        for block in range(rng.randint(1, 2)):
            stride = 2 if stage > 0 and block == 0 else 1
            if kind == 4:
                wide = (c_in if block == 0 else c) * rng.choice([2, 4])
                body = (f"{conv(wide, 1, act='relu6')}-{conv(wide, rng.choice([3, 5]), stride, 'relu6', wide)}-"
                        f"{conv(c, 1, act='identity')}")
                parts.append(f"[{body}]" if stride == 1 and (block > 0 or c == c_in) else body)
            elif residual:
                last = conv(c, 3, act="identity")
                branch = f"{conv(c, 3, stride)}-{last}"
                if stride > 1:
                    branch += "|" + rng.choice(["proj", "pad"])
                parts.append(f"[{branch}]:relu")
            elif stride > 1 and rng.random() < 0.5:
                parts += ["maxpool2", conv(c, rng.choice([3, 5]))]
            else:
                groups = rng.choice([1, 2, 4]) if bn and c_in % 4 == 0 and c % 4 == 0 else 1
                parts.append(conv(c, rng.choice([3, 5]), stride, groups=groups))
            c_in = c
    parts += rng.choice([["gap", "10"], ["maxpool2", "10"], ["maxpool2", "64", "10"]])
    return "-".join(parts), rng.choice([16, 32, 64, 128])


# The counted work of an epoch (5,400 examples, forward, backward and update) a random network
# may have: drawn again outside it, so that a sitting takes minutes, not hours. The draw depends
# on the seed and the counting alone, not on the time model: a seed gives the same networks
# before and after a change to the model.
GFLOP_PER_EPOCH = (10.0, 200.0)


def random_suite(a, profile=None):
    """N networks whose counted work per epoch lies within GFLOP_PER_EPOCH (see above)."""
    rng = random.Random(a.seed)
    suite = []
    while len(suite) < a.random:
        spec, b = random_net(rng, 3 if a.plain else len(suite) % KINDS)
        out = subprocess.run([a.flopnet, "count", spec, "--batch", str(b), "--examples", "5400", "--optimizer",
                              "momentum", "--json"], capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(f"count refused a generated network {spec}: {out.stderr.strip()}")
        gflop = json.loads(out.stdout)["per_epoch"]["total"]["flop"] / 1e9
        if GFLOP_PER_EPOCH[0] <= gflop <= GFLOP_PER_EPOCH[1]:
            suite.append((spec, None, b))
    return suite


def synthetic_cifar(path, n=6000, seed=0):
    """n records of CIFAR-10's binary format (a label byte, then 3×32×32 pixel bytes), random
    (`--noise`). Nothing in such data can be learned: within the first 50 steps many networks
    settle on the classes' prior with every relu of a layer dead, their δ all zero from there
    on, and the engine's backward meets an all-zero δ, which it runs on its sparse path
    (docs/prediction.md, "Dead networks")."""
    rng = random.Random(seed)
    with open(path, "wb") as f:
        for _ in range(n):
            f.write(bytes([rng.randrange(10)]) + rng.randbytes(3072))


def fashion_cifar(path):
    """The embedded Fashion-MNIST subset (data/embedded, 6,000 images) as CIFAR-10's binary
    format: each 28×28 image zero-padded to 32×32 in three channels — the image, its mirror
    image and its negative (a light background, as photographs have) — under its own label.
    Networks learn on it as on Fashion-MNIST, so a step's work is a learning network's."""
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "embedded")
    images = gzip.open(os.path.join(root, "train-images-idx3-ubyte.gz")).read()[16:]
    labels = gzip.open(os.path.join(root, "train-labels-idx1-ubyte.gz")).read()[8:]
    with open(path, "wb") as f:
        for i, label in enumerate(labels):
            rows = [images[i * 784 + r * 28:i * 784 + (r + 1) * 28] for r in range(28)]
            out = bytearray([label])
            for channel in (rows, [r[::-1] for r in rows], [bytes(255 - v for v in r) for r in rows]):
                plane = bytearray(1024)
                for r, row in enumerate(channel):
                    plane[(r + 2) * 32 + 2:(r + 2) * 32 + 30] = row
                out += plane
            f.write(out)


# The probe of the host's speed with more than one thread: a forward pass of a dense network
# at a large batch is matrix products alone, which scale with the cores that run them.
PROBE = ["784-800-10", "--batch", "256", "--runs", "3", "--steps", "20", "--forward-only", "--json"]


def speedup(flopnet, threads):
    """How many times faster `threads` threads run the probe than one thread, now. This VM's
    two virtual cores sometimes run on two physical cores (the probe near 2×) and sometimes
    share one (near 1×: each thread of a two-thread loop of vector arithmetic then runs at
    half its one-thread speed), and the host switches between the two within minutes without
    any process of this machine showing it (`/proc/stat` counts no steal): a two-thread timing
    then moves by up to 2× at a load of nothing. A sitting whose calibration and trainings saw
    different speedups measures the host, not the model."""
    def rate(t):
        out = subprocess.run([flopnet, "bench", *PROBE, "--threads", str(t)], capture_output=True, text=True)
        return json.loads(out.stdout)["samples_per_sec"] if out.returncode == 0 else float("nan")
    return rate(threads) / rate(1)


def busy_seconds():
    """CPU seconds the whole machine has spent busy since boot (/proc/stat: all but idle and iowait)."""
    ticks = list(map(int, open("/proc/stat").readline().split()[1:]))
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def own_seconds():
    """CPU seconds this script and its finished children have used."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser()
    ap.add_argument("--flopnet", default=os.path.join(here, "..", "target", "release", "flopnet"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=4,
                    help="epochs per case; the first is warm-up, the median of the rest is the measurement")
    ap.add_argument("--rounds", type=int, default=5, help="calibrate-and-measure rounds; medians over them")
    ap.add_argument("--random", type=int, default=0, help="measure N random networks instead of the suite")
    ap.add_argument("--seed", type=int, default=1, help="the random networks' seed")
    ap.add_argument("--plain", action="store_true", help="random chains only, without batch normalization")
    ap.add_argument("--noise", action="store_true",
                    help="3x32x32 networks train on random images with random labels (the sittings before 2026-12-01) "
                         "instead of the Fashion-MNIST subset made 3x32x32")
    ap.add_argument("--steady", type=float, default=None, metavar="MIN",
                    help="with more than one thread: calibrate and train only while the probe's speedup is at "
                         "least MIN (waiting for it, up to --wait seconds each time), and calibrate or train again "
                         "(up to 3 times) when the probe after it fell below MIN")
    ap.add_argument("--wait", type=float, default=600, help="seconds --steady waits for the speedup each time")
    a = ap.parse_args()
    if a.steady is not None and a.threads < 2:
        raise SystemExit("--steady needs --threads 2 or more (it compares their speed with one thread's)")
    retries = []
    load_before = open("/proc/loadavg").read().split()[:3]
    # The neighbours' CPU time over the sitting: the machine's busy time less this sitting's own
    # (a load average counts waiting tasks, and on a VM whose other tenants share the cores it
    # says little: this is what the sitting shared its cores with).
    busy_before, own_before, began_at = busy_seconds(), own_seconds(), time.monotonic()
    rounds = []
    scratch = tempfile.mkdtemp()
    cifar = os.path.join(scratch, "synthetic.cifar")
    suite = SUITE
    for r in range(max(1, a.rounds)):
        profile = os.path.join(tempfile.mkdtemp(), "profile.json")
        probe = (lambda: speedup(a.flopnet, a.threads)) if a.threads > 1 else (lambda: float("nan"))

        def steady(what, run):
            """`run()` between two probes; with --steady, only once the probe reaches MIN, and again
            while the probe after it falls below (at most three runs): (first probe, result, last
            probe)."""
            for attempt in range(3):
                first, waited = probe(), time.monotonic()
                while a.steady is not None and not first >= a.steady:
                    if time.monotonic() - waited > a.wait:
                        raise SystemExit(f"the {a.threads}-thread speedup stayed below {a.steady} for {a.wait:.0f} s "
                                         f"(last {first:.2f}) before {what}: the host runs this VM's cores on "
                                         "fewer physical cores now; try later or lower --steady")
                    time.sleep(5)
                    first = probe()
                result = run()
                last = probe()
                if a.steady is None or last >= a.steady or attempt == 2:
                    if attempt:
                        retries.append(f"{what}: {attempt + 1} runs")
                    return first, result, last

        before_calibrate, out, after_calibrate = steady("calibrate", lambda: subprocess.run(
            [a.flopnet, "calibrate", "--threads", str(a.threads), "--profile", profile],
            check=True, capture_output=True, text=True).stdout)
        calibrated = (before_calibrate, after_calibrate)
        if r == 0:
            print(out)
            if a.threads > 1:
                print(f"{a.threads}-thread speedup of the probe ({' '.join(PROBE[:3])}, forward) before and after "
                      f"calibrating: {calibrated[0]:.2f}, {calibrated[1]:.2f}")
            if a.random:
                suite = random_suite(a, profile)
                (synthetic_cifar if a.noise else fashion_cifar)(cifar)
        rows_of_round = []
        for spec, act, b in suite:
            with tempfile.NamedTemporaryFile(suffix=".jsonl", delete=False) as f:
                metrics = f.name
            epochs = 2 if "conv5x5" in spec and not a.random else a.epochs
            if not a.random:
                data = ["--data", "fashion-mnist"]
            else:
                data = ["--data", cifar] if spec.startswith("3x") else []
            acts = ["--act", act] if act else []

            def train():
                before, began = resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic()
                done = subprocess.run([a.flopnet, "train", spec, *acts, *data, "--epochs", str(epochs),
                                       "--batch", str(b), "--optimizer", "momentum", "--threads", str(a.threads),
                                       "--profile", profile, "--metrics", metrics], capture_output=True, text=True)
                if done.returncode != 0:
                    raise SystemExit(f"train {spec} failed: {done.stderr.strip()}")
                # How much of its threads' time the run got: CPU seconds over wall seconds × threads
                # (a sign of the neighbours' load; a helper waiting parked counts as idle).
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
                return min(1.0, cpu / ((time.monotonic() - began) * a.threads))

            _, share, after_training = steady(f"train {spec} (batch {b})", train)
            rows = [json.loads(l) for l in open(metrics) if '"epoch"' in l]
            os.unlink(metrics)
            # This machine is shared: one epoch can run 25% slower than the next. The median of
            # the epochs after the first is the machine's speed rather than one moment's neighbours.
            rows_of_round.append((statistics.median(x["seconds"] for x in rows[1:] or rows),
                                  rows[-1]["predicted_seconds"], share, after_training))
            m, p, _, sp = rows_of_round[-1]
            print(f"  round {r + 1}: {spec} batch {b}: predicted {p:.2f} s, measured {m:.2f} s ({100 * (m / p - 1):+.0f}%),"
                  f" CPU share {100 * share:.0f}%, speedup after {sp:.2f}", file=sys.stderr, flush=True)
        rounds.append(rows_of_round)
    if os.path.exists(cifar):
        os.unlink(cifar)
    errors = []
    print("| network | batch | predicted s/epoch | measured s/epoch | error | CPU share | speedup after |")
    print("|---|---|---|---|---|---|---|")
    for i, (spec, act, b) in enumerate(suite):
        got = [rnd[i] for rnd in rounds]
        measured = statistics.median(m for m, _, _, _ in got)
        predicted = statistics.median(p for _, p, _, _ in got)
        share = statistics.median(s for _, _, s, _ in got)
        err = measured / predicted - 1
        errors.append(abs(err))
        each = f" (rounds {', '.join(f'{100 * (m / p - 1):+.0f}%' for m, p, _, _ in got)})" if len(got) > 1 else ""
        after = ", ".join(f"{sp:.2f}" for _, _, _, sp in got)
        print(f"| {spec} {act or ''} | {b} | {predicted:.2f} | {measured:.2f} | {100 * err:+.0f}%{each} "
              f"| {100 * share:.0f}% | {after} |", flush=True)
    worst = max(range(len(errors)), key=errors.__getitem__)
    print(f"\nmedian absolute error {100 * statistics.median(errors):.0f}%, worst {100 * max(errors):.0f}% "
          f"(network {worst + 1} of {len(errors)}: {suite[worst][0]}, batch {suite[worst][2]})")
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    print(f"CPU: {cpu}, {a.threads} threads" + (f"; random networks, seed {a.seed}" if a.random else ""))
    load_after = open("/proc/loadavg").read().split()[:3]
    print(f"load average (1, 5, 15 min) before {' '.join(load_before)}, after {' '.join(load_after)}")
    others = max(0.0, (busy_seconds() - busy_before) - (own_seconds() - own_before)) / (time.monotonic() - began_at)
    print(f"other processes used {others:.2f} of the {os.cpu_count()} cores on average during the sitting "
          f"(a quiet sitting: under 0.1)")
    if a.threads > 1:
        after = [sp for rnd in rounds for _, _, _, sp in rnd]
        print(f"{a.threads}-thread speedup of the probe: {calibrated[0]:.2f} and {calibrated[1]:.2f} around the "
              f"(last) calibration, {min(after):.2f}–{max(after):.2f} after the trainings (a sitting whose "
              f"speedups differ measured the host's placement of its cores as much as the model)")
    if a.steady is not None:
        print(f"--steady {a.steady}: " + ("; ".join(retries) if retries else "every run on the first try"))

if __name__ == "__main__":
    main()
