//! The time model: profiles are checked before they are trusted, and predictions respond to the
//! work the ledger counts.

use flopnet::cost::Config;
use flopnet::engine::conv::{ConvShape, Tiles};
use flopnet::predict::{self, DepthwiseRates, Machine, Profile};
use flopnet::spec::{Defaults, Kind, Loss, Optimizer, parse};
use std::sync::{Mutex, OnceLock};

/// One quick calibration, shared by the tests that only read it. Calibrations run one at a time
/// (`CALIBRATING`): several at once on a 2-core machine time each other, and a rate measured
/// while another test held the core made batch 8 of a CNN look half as costly as batch 64.
fn profile() -> &'static Profile {
    static SHARED: OnceLock<Profile> = OnceLock::new();
    SHARED.get_or_init(|| calibrating(|| predict::calibrate(1, true).unwrap()))
}

static CALIBRATING: Mutex<()> = Mutex::new(());

fn calibrating<T>(f: impl FnOnce() -> T) -> T {
    let _alone = CALIBRATING.lock().unwrap_or_else(|e| e.into_inner());
    f()
}

fn cfg(batch: usize) -> Config {
    Config { loss: Loss::Ce, optimizer: Optimizer::Momentum, batch, examples: 60_000, epochs: 3 }
}

#[test]
fn profiles_round_trip_and_stale_or_corrupt_ones_are_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.json");
    let p = profile();
    p.save(&path).unwrap();
    let (back, why) = Profile::load(&path, 1);
    assert_eq!(back.as_ref(), Some(p), "{why:?}");
    // Another thread count: stale.
    let (none, why) = Profile::load(&path, 2);
    assert!(none.is_none() && why.unwrap().contains("threads"));
    // Another machine: stale.
    let mut other = p.clone();
    other.machine = "some other CPU".into();
    other.save(&path).unwrap();
    assert!(Profile::load(&path, 1).1.unwrap().contains("some other CPU"));
    // Corrupt (a profile cut short): rebuilt by load_or_calibrate, with a note saying why.
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, &text[..text.len() / 2]).unwrap();
    let (fresh, note) = calibrating(|| predict::load_or_calibrate(&path, 1, true)).unwrap();
    assert!(note.unwrap().contains("corrupt"));
    assert_eq!(Profile::load(&path, 1).0, Some(fresh));
    // A file that is not a profile at all is never replaced by one.
    std::fs::write(&path, "{ not json").unwrap();
    let e = calibrating(|| predict::load_or_calibrate(&path, 1, true)).unwrap_err();
    assert!(e.to_string().contains("not a flopnet profile"), "{e}");
    assert_eq!(std::fs::read(&path).unwrap(), b"{ not json");
}

#[test]
fn predictions_grow_with_the_work() {
    let m = Machine::Measured(profile());
    let small = parse("784-30-10", Defaults::default()).unwrap();
    let big = parse("784-800-800-10", Defaults::default()).unwrap();
    let a = predict::predict(&small, &cfg(128), m, 1);
    let b = predict::predict(&big, &cfg(128), m, 1);
    assert!(b.step_seconds > 5.0 * a.step_seconds, "{} vs {}", b.step_seconds, a.step_seconds);
    assert!((a.run_seconds - 3.0 * a.epoch_seconds).abs() < 1e-12);
    // An epoch is its batches: 468 of 128 and one of 96.
    assert!(a.epoch_seconds > 468.0 * a.step_seconds);
    assert_eq!(a.layers.len(), 2);
}

#[test]
fn device_what_if_is_a_roofline_and_says_so() {
    let spec = parse("784-800-10", Defaults::default()).unwrap();
    let d = predict::devices::find("h200").unwrap();
    let fp32 = predict::predict(&spec, &cfg(256), Machine::device(d, "fp32"), 1);
    let bf16 = predict::predict(&spec, &cfg(256), Machine::device(d, "bf16"), 1);
    assert!(bf16.step_seconds < fp32.step_seconds);
    assert!(fp32.basis.contains("roofline") && fp32.basis.contains("4800 GB/s"));
}

#[test]
fn convolutions_are_matrix_products_and_pooling_a_pass_over_memory() {
    let cnn =
        parse("1x28x28-conv5x5x32p2:relu-maxpool2-conv5x5x64p2:relu-maxpool2-1024-10", Defaults::default()).unwrap();
    // A roofline where only the arithmetic counts: a convolution's time is its product's
    // 2·B·H'·W'·C·kh·kw·F FLOPs (plus the smaller passes), pooling's is a pass over its values.
    let m = Machine::Roofline { matmul_gflops: 1000.0, vector_gflops: 1000.0, bandwidth_gbs: 1e9 };
    let p = predict::predict(&cnn, &cfg(64), m, 1);
    assert_eq!(p.layers.len(), 6);
    let conv1 = p.layers[0].forward_seconds;
    let product = 2.0 * 64.0 * 28.0 * 28.0 * 25.0 * 32.0 / 1e12;
    assert!(conv1 >= product && conv1 < 1.2 * product, "{conv1} vs {product}");
    // The second convolution has 32 input maps: 16 times the first one's work per output value,
    // on a quarter of the positions and twice the filters.
    let conv2 = p.layers[2].forward_seconds;
    assert!(conv2 > 6.0 * conv1, "{conv2} vs {conv1}");
    assert!(p.layers[1].forward_seconds < conv1 / 10.0, "pooling is cheap next to a convolution");
    assert_eq!(p.layers[1].update_seconds, 0.0, "pooling has nothing to update");
    // The first convolution needs no dX; the second does, so its backward is about twice its forward.
    assert!(p.layers[0].backward_seconds < 1.2 * conv1);
    assert!(p.layers[2].backward_seconds > 1.7 * conv2);
    // This machine's profile serves a CNN as well, and more examples per batch cost more.
    let small = predict::predict(&cnn, &cfg(8), Machine::Measured(profile()), 1);
    let big = predict::predict(&cnn, &cfg(64), Machine::Measured(profile()), 1);
    assert!(
        big.step_seconds > 2.0 * small.step_seconds && small.step_seconds.is_finite(),
        "batch 64: {} s, batch 8: {} s",
        big.step_seconds,
        small.step_seconds
    );
}

#[test]
fn image_glue_is_priced_from_its_own_measurements() {
    let cnn = parse("1x28x28-conv3x3x16:relu-maxpool2-conv3x3x32:relu-maxpool2-10", Defaults::default()).unwrap();
    let p = profile();
    assert_eq!(p.pool.len(), 2);
    assert_eq!(p.regroup.len(), 2);
    let with = predict::predict(&cnn, &cfg(128), Machine::Measured(p), 1);
    // The dense layer reads 32 planes of 5×5 and hands its input gradient back as planes: without
    // the measured cost of those copies, only its product and passes remain.
    let mut free_copies = p.clone();
    for r in &mut free_copies.regroup {
        (r.to_rows, r.to_channels) = (0.0, 0.0);
    }
    let without = predict::predict(&cnn, &cfg(128), Machine::Measured(&free_copies), 1);
    let (a, b) = (&with.layers[4], &without.layers[4]);
    assert!(a.forward_seconds > b.forward_seconds && a.backward_seconds > b.backward_seconds);
    let copies = 128.0 * 800.0 * p.regroup[0].to_rows;
    assert!((a.forward_seconds - b.forward_seconds - copies).abs() < 1e-3 * copies);
    // Pooling runs at its measured rate forward; its backward writes the whole input gradient,
    // which a free kernel does not make free.
    let mut free_pool = p.clone();
    for r in &mut free_pool.pool {
        (r.forward, r.backward) = (0.0, 0.0);
    }
    let pooled = predict::predict(&cnn, &cfg(128), Machine::Measured(&free_pool), 1);
    assert_eq!(pooled.layers[1].forward_seconds, 0.0);
    assert!(pooled.layers[1].backward_seconds > 0.0);
    assert!(with.layers[1].backward_seconds >= pooled.layers[1].backward_seconds);
    // The first layer's input (one channel) needs no copy, and nothing flows back below it.
    let flat = parse("3x32x32-conv3x3x8:relu-maxpool2-10", Defaults::default()).unwrap();
    let a = predict::predict(&flat, &cfg(32), Machine::Measured(p), 1);
    let b = predict::predict(&flat, &cfg(32), Machine::Measured(&free_copies), 1);
    assert!(a.layers[0].forward_seconds > b.layers[0].forward_seconds, "a 3-channel input is regrouped");
    assert_eq!(a.layers[0].backward_seconds, b.layers[0].backward_seconds);
}

/// A network with every kind the fast engine runs on graphs: a convolution without a bias,
/// batch normalization with relu6, a residual block of a grouped and a depthwise convolution,
/// a concatenation, a strided convolution, padded max pooling in ceil mode, the zero-padding
/// shortcut, dropout, adaptive and global average pooling.
const EVERY_KIND: &str = "3x16x16-conv3x3x16p1b0-bn:relu6-[conv3x3x16p1g4-conv3x3x16p1g16:relu]:relu-(conv1x1x8)\
                          -conv3x3x32s2p1-maxpool3s2p1c-zpad48s1-drop0.25-adaptavg2x2-gap-10";

#[test]
fn every_kind_of_graph_node_is_priced() {
    let spec = parse(EVERY_KIND, Defaults::default()).unwrap();
    let h200 = Machine::device(predict::devices::find("h200").unwrap(), "fp32");
    for (what, m) in [("this machine", Machine::Measured(profile())), ("h200", h200)] {
        let p = predict::predict(&spec, &cfg(32), m, 1);
        assert_eq!(p.layers.len(), spec.layers.len());
        for (l, t) in spec.layers.iter().zip(&p.layers) {
            // Every node but the first (which reads the data) hands a gradient back.
            let backward_needed = t.layer > 1;
            assert!(
                t.forward_seconds > 0.0 && (t.backward_seconds > 0.0 || !backward_needed),
                "{what}: layer {} ({l}) is priced at {} s forward, {} s backward",
                t.layer,
                t.forward_seconds,
                t.backward_seconds
            );
            assert!(t.forward_seconds.is_finite() && t.backward_seconds.is_finite());
            assert_eq!(t.update_seconds > 0.0, l.params() > 0, "{what}: layer {} ({l})", t.layer);
        }
    }
}

/// The shared profile with its warm passes set to its cold ones: what the structural tests
/// below read off `passes` is then what the model charges whatever a step's working set.
fn cold_only() -> &'static Profile {
    static COLD: OnceLock<Profile> = OnceLock::new();
    COLD.get_or_init(|| Profile { passes_warm: profile().passes.clone(), ..profile().clone() })
}

/// Seconds per value of `rate` at a size the profile measured (so no interpolation).
fn pass_at(p: &Profile, values: usize, rate: fn(&predict::PassRates) -> f64) -> f64 {
    rate(p.passes.iter().find(|r| r.values == values).expect("a measured size"))
}

#[test]
fn a_residual_join_costs_its_sum_and_the_gradient_it_accumulates() {
    // The same layers, once as a chain and once with the last three in a residual block: the
    // graph adds one node (the sum) and a second reader of the block's input, whose gradient
    // then arrives twice and is added once more. (The block ends in an activation, so the sum
    // is a pass of its own: a norm without one, the sum would normalize, next test.)
    let chain = parse(
        "16x16x16-conv3x3x16p1b0-bn:relu-conv3x3x16p1b0-bn:relu-conv3x3x16p1b0-bn:relu-gap-10",
        Defaults::default(),
    )
    .unwrap();
    let graph = parse(
        "16x16x16-conv3x3x16p1b0-bn:relu-[conv3x3x16p1b0-bn:relu-conv3x3x16p1b0-bn:relu]-gap-10",
        Defaults::default(),
    )
    .unwrap();
    assert_eq!(graph.layers.len(), chain.layers.len() + 1);
    let p = cold_only();
    // 16 examples of 16×16×16 are 65,536 values, a size calibrate measures the passes at.
    let b = 16;
    let n = b * 16 * 16 * 16;
    assert!(p.passes.iter().any(|r| r.values == n));
    let a = predict::predict(&chain, &cfg(b), Machine::Measured(p), 1);
    let g = predict::predict(&graph, &cfg(b), Machine::Measured(p), 1);
    let sum = &g.layers[6];
    let add = pass_at(p, n, |r| r.add);
    let copy = pass_at(p, n, |r| r.copy);
    // Forward: the first input copied and the second added in the graph path's one pass (its
    // measured `sum`, not a copy and an add). Backward: δ handed to both, the first gradient
    // each receives (the sum is the last reader of both, and backward runs in reverse): one
    // takes the sum's own δ buffer, swapped, the other a copy (`engine::graph`'s Add arm).
    let one_pass = pass_at(p, n, |r| r.sum);
    assert!(one_pass > 0.0);
    assert!((sum.forward_seconds - n as f64 * one_pass).abs() <= 1e-9 * sum.forward_seconds);
    assert!((sum.backward_seconds - n as f64 * copy).abs() <= 1e-9 * sum.backward_seconds);
    // The block's input (layer 2) gets its gradient from two readers: one more add.
    let extra = g.layers[1].backward_seconds - a.layers[1].backward_seconds;
    assert!((extra - n as f64 * add).abs() <= 1e-6 * extra, "{extra} vs {}", n as f64 * add);
    // Everything else is the same layer for layer, and the step is the sum of its parts.
    for (x, y) in a.layers.iter().zip(&g.layers).filter(|(x, _)| x.layer != 2) {
        let same = |u: f64, v: f64| (u - v).abs() <= 1e-9 * u.max(v);
        let y = if y.layer >= 7 { &g.layers[y.layer] } else { y };
        assert!(same(x.forward_seconds, y.forward_seconds) && same(x.backward_seconds, y.backward_seconds));
    }
    let parts = |q: &predict::Prediction| {
        q.layers.iter().map(|l| l.forward_seconds + l.backward_seconds + l.update_seconds).sum::<f64>()
            + q.loss_seconds
            + q.overhead_seconds
    };
    let unpriced = |q: &predict::Prediction| q.step_seconds - parts(q);
    assert!((unpriced(&a) - unpriced(&g)).abs() <= 1e-9 * a.step_seconds, "batch copy and scan are the graph's too");
    let joined = sum.forward_seconds + sum.backward_seconds + extra + p.layer_overhead;
    assert!((g.step_seconds - a.step_seconds - joined).abs() <= 1e-6 * g.step_seconds);
}

#[test]
fn batch_norm_and_depthwise_convolutions_are_priced_from_their_own_measurements() {
    let p = cold_only();
    let spec = parse("16x16x16-conv3x3x16p1b0-bn-conv3x3x16p1g16:identity-gap-10", Defaults::default()).unwrap();
    let n = 16 * 16 * 16 * 16;
    let t = predict::predict(&spec, &cfg(16), Machine::Measured(p), 1);
    // Training, at the rates of the engine's batch normalization (statistics and normalizing;
    // backward the two sums and the input gradient).
    let bn = &t.layers[1];
    let fwd = n as f64 * pass_at(p, n, |r| r.norm_forward);
    let bwd = n as f64 * pass_at(p, n, |r| r.norm_backward);
    assert!((bn.forward_seconds - fwd).abs() <= 1e-9 * fwd, "{} vs {fwd}", bn.forward_seconds);
    assert!((bn.backward_seconds - bwd).abs() <= 1e-9 * bwd, "{} vs {bwd}", bn.backward_seconds);
    // The depthwise convolution runs at the depthwise rates, per output value and tap, not at
    // those of a convolution over C·kh·kw values.
    let dw = p.depthwise.iter().find(|r| r.window == 9).expect("3×3 measured");
    let taps = (n * 9) as f64;
    let conv = &t.layers[2];
    assert!((conv.forward_seconds - taps * dw.forward).abs() <= 1e-9 * conv.forward_seconds);
    assert!((conv.backward_seconds - taps * (dw.weight_grad + dw.input_grad)).abs() <= 1e-9 * conv.backward_seconds);
    let mut no_depthwise = p.clone();
    no_depthwise.depthwise.iter_mut().for_each(|r| (r.forward, r.weight_grad, r.input_grad) = (0.0, 0.0, 0.0));
    let free = predict::predict(&spec, &cfg(16), Machine::Measured(&no_depthwise), 1);
    assert_eq!(free.layers[2].forward_seconds, 0.0);
    assert_eq!(free.layers[0].forward_seconds, t.layers[0].forward_seconds, "an ungrouped one does not use them");
}

/// A profile whose depthwise references are made up, each a distinct round number per pass, so
/// that a prediction shows which reference (or which mix) priced a layer.
fn made_up_depthwise(p: &Profile) -> Profile {
    let mut q = p.clone();
    let r = |window, stride, plane, ps: f64| DepthwiseRates {
        window,
        stride,
        plane,
        forward: ps * 1e-12,
        weight_grad: 2.0 * ps * 1e-12,
        input_grad: 3.0 * ps * 1e-12,
    };
    q.depthwise = vec![
        r(9, 1, 256, 100.0),
        r(25, 1, 256, 80.0),
        r(9, 1, 16, 300.0),
        r(9, 1, 4, 500.0),
        r(9, 2, 256, 200.0),
        r(9, 2, 16, 700.0),
    ];
    q
}

#[test]
fn depthwise_convolutions_are_priced_at_their_stride_and_plane() {
    let p = made_up_depthwise(profile());
    let m = Machine::Measured(&p);
    // Seconds per tap of a depthwise layer (the third: behind a stem and its norm), forward and
    // both gradients.
    let per_tap = |input: &str, dw: &str| {
        let spec = parse(&format!("{input}-conv1x1x32b0-bn-{dw}:identity-gap-10"), Defaults::default()).unwrap();
        let l = &spec.layers[2];
        let Kind::Conv2d(c) = l.kind else { panic!("a convolution") };
        let taps = (16 * l.outputs * c.kh * c.kw) as f64;
        let t = &predict::predict(&spec, &cfg(16), m, 1).layers[2];
        (t.forward_seconds / taps * 1e12, t.backward_seconds / taps * 1e12)
    };
    let close = |(f, b): (f64, f64), want: f64| {
        assert!((f - want).abs() < 1e-6 * want && (b - 5.0 * want).abs() < 1e-6 * want, "{f} {b} vs {want}");
    };
    // At the measured shapes: their own rates.
    close(per_tap("32x16x16", "conv3x3x32p1g32b0"), 100.0);
    close(per_tap("32x4x4", "conv3x3x32p1g32b0"), 300.0);
    close(per_tap("32x2x2", "conv3x3x32p1g32b0"), 500.0);
    close(per_tap("32x16x16", "conv3x3x32s2p1g32b0"), 200.0);
    close(per_tap("32x4x4", "conv3x3x32s2p1g32b0"), 700.0);
    // Between planes, between their rates (8×8 lies halfway from 4×4 to 16×16 in log size);
    // beyond them, the nearest.
    close(per_tap("32x8x8", "conv3x3x32p1g32b0"), 200.0);
    close(per_tap("32x32x32", "conv3x3x32p1g32b0"), 100.0);
    close(per_tap("32x8x8", "conv3x3x32s2p1g32b0"), 450.0);
    // A 5×5 kernel scales as the 16×16 references scale (80 against 100), at any plane.
    close(per_tap("32x16x16", "conv5x5x32p2g32b0"), 80.0);
    close(per_tap("32x4x4", "conv5x5x32p2g32b0"), 240.0);
}

#[test]
fn wide_pointwise_convolutions_use_the_pointwise_measurements() {
    let p = profile();
    let mut slow = p.clone();
    slow.conv_pointwise.iter_mut().for_each(|r| {
        (r.forward, r.weight_grad, r.input_grad) = (r.forward / 2.0, r.weight_grad / 2.0, r.input_grad / 2.0)
    });
    // Behind a depthwise stem (so no change of layout joins them): 96 channels → 24 (the
    // engine's plain products on x), then 24 → 96 and a grouped 96 → 96 of 48 channels a group
    // (both on its tiled kernels: the engine's own choice, Tiles::pointwise).
    let spec = parse(
        "96x8x8-conv3x3x96p1g96:identity-conv1x1x24:identity-conv1x1x96:identity-conv1x1x96g2:identity-gap-10",
        Defaults::default(),
    )
    .unwrap();
    let (t, u) = (
        predict::predict(&spec, &cfg(16), Machine::Measured(p), 1),
        predict::predict(&spec, &cfg(16), Machine::Measured(&slow), 1),
    );
    let ratio = |i: usize| {
        (u.layers[i].forward_seconds + u.layers[i].backward_seconds)
            / (t.layers[i].forward_seconds + t.layers[i].backward_seconds)
    };
    assert!((ratio(1) - 2.0).abs() < 1e-9, "{}", ratio(1));
    assert_eq!(ratio(2), 1.0, "24 channels do not run as plain products");
    assert_eq!(ratio(3), 1.0, "nor do 48 a group");
}

#[test]
fn strided_convolutions_use_the_strided_measurements() {
    let p = profile();
    // Behind a one-channel convolution, so that no change of layout joins the product.
    let spec = parse("1x16x16-conv3x3x32p1:identity-conv3x3x64s2p1:identity-gap-10", Defaults::default()).unwrap();
    let t = predict::predict(&spec, &cfg(16), Machine::Measured(p), 1);
    let mut slow = p.clone();
    slow.conv_strided.iter_mut().for_each(|r| r.forward /= 2.0);
    let u = predict::predict(&spec, &cfg(16), Machine::Measured(&slow), 1);
    assert_eq!(u.layers[0].forward_seconds, t.layers[0].forward_seconds, "a stride-1 one does not use them");
    let ratio = u.layers[1].forward_seconds / t.layers[1].forward_seconds;
    assert!((ratio - 2.0).abs() < 1e-9, "{ratio}");
}

#[test]
fn imagenet_on_the_zoo_is_predicted_for_this_machine_and_a_gpu() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_flopnet"))
        .args([
            "count",
            "resnet50",
            "--device",
            "h200:bf16",
            "--batch",
            "256",
            "--examples",
            "1281167",
            "--epochs",
            "90",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("Predicted time:") && text.contains("per run"), "{text}");
    // A residual network with batch normalization, priced without being refused.
    let spec = flopnet::zoo::build("resnet50", Default::default()).unwrap().unwrap();
    let run = |m| predict::predict(&spec, &Config { batch: 256, examples: 1_281_167, epochs: 90, ..cfg(256) }, m, 2);
    let d = predict::devices::find("h200").unwrap();
    let (fp32, bf16) = (run(Machine::device(d, "fp32")), run(Machine::device(d, "bf16")));
    assert!(bf16.run_seconds < fp32.run_seconds);
    let cpu = run(Machine::Measured(profile()));
    assert!(cpu.run_seconds > 100.0 * bf16.run_seconds, "{} vs {}", cpu.run_seconds, bf16.run_seconds);
    assert!((cpu.run_seconds - 90.0 * cpu.epoch_seconds).abs() < 1e-6 * cpu.run_seconds);
}

#[test]
fn a_convolution_is_priced_at_its_window_and_its_filters() {
    // Forming windows costs the same whatever the filters; the products grow with them. With
    // one reference window measured at 8 filters (10 GFLOP/s) and 32 (20 GFLOP/s), the time
    // per output position and window value is 1.6 ns at 8 and 3.2 at 32, so α + β·F with
    // β = 1.6/24 and α = 1.6 − 8β: 16 filters take 2.1333 ns, 15 GFLOP/s.
    let mut p = profile().clone();
    let at = |filters, forward| predict::ConvRates {
        window: 144,
        filters,
        plane: 169,
        forward,
        weight_grad: 1.0,
        input_grad: 1.0,
        ..Default::default()
    };
    p.conv_panel = vec![at(8, 10.0), at(32, 20.0)];
    // The measured first-layer references ran the shifted-rows kernels too, and would answer
    // for this layer's passes: these two alone.
    p.conv_small.clear();
    p.conv_strided.clear();
    let spec = parse("8x16x16-conv3x3x8p1:identity-conv3x3x16p1:identity-gap-10", Defaults::default()).unwrap();
    let t = predict::predict(&spec, &cfg(16), Machine::Measured(&p), 1);
    let gflop = 2.0 * (16 * 16 * 16) as f64 * 72.0 * 16.0 / 1e9;
    let got = t.layers[1].forward_seconds;
    assert!((got - gflop / 15.0).abs() < 1e-9 * got, "{got} vs {}", gflop / 15.0);
}

/// The GFLOP/s at which `p` prices the forward of a k×k convolution of `f` filters over `c`
/// channels of `side`×`side` (padded by k/2), behind a one-channel 1×1 convolution into them
/// (on the small kernels, so that no change of layout joins it), at batch `b`.
fn second_forward_rate(p: &Profile, (c, side, k, f): (usize, usize, usize, usize), b: usize) -> f64 {
    let text = format!("1x{side}x{side}-conv1x1x{c}:identity-conv{k}x{k}x{f}p{}:identity-gap-10", k / 2);
    let spec = parse(&text, Defaults::default()).unwrap();
    let t = predict::predict(&spec, &cfg(b), Machine::Measured(p), 1);
    2.0 * (b * side * side) as f64 * (c * k * k) as f64 * f as f64 / 1e9 / t.layers[1].forward_seconds
}

#[test]
fn a_convolution_is_priced_at_the_planes_its_window_was_measured_at() {
    // One window measured over 8×8 and 16×16 planes at 40 and 20 GFLOP/s and over 32×32 at 10
    // (at both filter counts): a 12×12 layer lies between 8×8 and 16×16, log-linear in the plane
    // and the rate; beyond them, the nearest. A plane of whole 4 KiB pages (32×32, 64×64) is placed
    // among those alone (10), and the others among theirs (a 28×28 one at 16×16's 20, not
    // between 16×16 and 32×32).
    let mut p = profile().clone();
    let at = |filters, plane, forward| predict::ConvRates {
        window: 72,
        filters,
        plane,
        forward,
        weight_grad: forward,
        input_grad: forward,
        ..Default::default()
    };
    p.conv_panel = vec![
        at(8, 64, 40.0),
        at(32, 64, 40.0),
        at(8, 256, 20.0),
        at(32, 256, 20.0),
        at(8, 1024, 10.0),
        at(32, 1024, 10.0),
    ];
    // These references record no shape, so no pass is priced by the kernel the engine ran
    // (which the measured strided and first-layer references would otherwise answer for, the
    // 8×8 layer's panel forward and the others' shifted rows): the family's rates, placed by
    // plane.
    p.conv_strided.clear();
    p.conv_small.clear();
    let rate = |side: usize| second_forward_rate(&p, (8, side, 3, 16), 16);
    let between = 40.0 * 0.5f64.powf((144f64 / 64.0).ln() / 4f64.ln());
    for (side, want) in [(16, 20.0), (8, 40.0), (32, 10.0), (4, 40.0), (64, 10.0), (28, 20.0), (12, between)] {
        let got = rate(side);
        assert!((got - want).abs() < 1e-9 * want, "{side}×{side}: {got} GFLOP/s, not {want}");
    }
}

#[test]
fn evaluation_normalizes_in_one_pass_or_none_when_folded() {
    let p = cold_only();
    let spec = parse("8x16x16-conv3x3x16p1b0-bn:relu-drop0.5-gap-10", Defaults::default()).unwrap();
    let m = Machine::Measured(p);
    let train = predict::predict(&spec, &cfg(64), m, 1);
    let unfolded = predict::inference_seconds(&spec, 64, m, 1, false);
    let folded = predict::inference_seconds(&spec, 64, m, 1, true);
    let n = 64 * 16 * 16 * 16;
    let at = |rate: fn(&predict::PassRates) -> f64| {
        // Log-linear between the measured sizes around n (65,536 and 524,288 values).
        let (a, b) = (&p.passes[0], &p.passes[1]);
        let t = ((n as f64).ln() - (a.values as f64).ln()) / ((b.values as f64).ln() - (a.values as f64).ln());
        n as f64 * (rate(a) * (1.0 - t) + rate(b) * t)
    };
    // Folding removes exactly the evaluation pass of batch normalization.
    assert!((unfolded - folded - at(|r| r.norm_infer)).abs() <= 1e-9 * unfolded, "{unfolded} {folded}");
    // Dropout passes its input on: a copy instead of drawing a mask.
    let forward: f64 = train.layers.iter().map(|l| l.forward_seconds).sum::<f64>() + train.overhead_seconds;
    let expected = forward - train.layers[1].forward_seconds + at(|r| r.norm_infer) + at(|r| r.relu_forward)
        - train.layers[2].forward_seconds
        + at(|r| r.copy);
    assert!((unfolded - expected).abs() <= 1e-9 * unfolded, "{unfolded} vs {expected}");
}

/// A reference convolution of `c` channels of `side`×`side`, k×k kernels, `f` filters, stride
/// `s`, that records its shape, with the given GFLOP/s of each pass.
fn reference(c: usize, side: usize, k: usize, f: usize, s: usize, rates: [f64; 3]) -> predict::ConvRates {
    let out = side.div_ceil(s);
    predict::ConvRates {
        window: c * k * k,
        filters: f,
        plane: out * out,
        forward: rates[0],
        weight_grad: rates[1],
        input_grad: rates[2],
        channels: c,
        side,
        kernel: k,
        stride: s,
        batch: 16,
    }
}

/// The kernels the engine runs for the passes of a k×k convolution of `f` filters over `c`
/// channels of `side`×`side` (padded by k/2, stride 1).
fn kernels_of(c: usize, side: usize, k: usize, f: usize) -> [&'static str; 3] {
    let spec =
        parse(&format!("{c}x{side}x{side}-conv{k}x{k}x{f}p{}:identity-gap-10", k / 2), Defaults::default()).unwrap();
    let sh = ConvShape::of(&spec.layers[0]).unwrap();
    Tiles::for_shape(&sh).passes(&sh)
}

#[test]
fn a_convolution_pass_is_priced_from_the_references_that_ran_its_kernel() {
    // 16 channels of 13×13 into 32 filters: the input gradient runs on dcol tiles (C < F);
    // into 8, as the transposed convolution. Two references of that shape, one at each filter
    // count, with input-gradient rates 100× apart: a layer takes the one that ran its kernel,
    // not a fit through both (which the filter counts alone would give).
    if kernels_of(16, 13, 3, 32)[2] == kernels_of(16, 13, 3, 8)[2] {
        eprintln!("skipped: this CPU runs both input gradients on one kernel");
        return;
    }
    let mut p = profile().clone();
    p.conv_panel =
        vec![reference(16, 13, 3, 8, 1, [50.0, 50.0, 1000.0]), reference(16, 13, 3, 32, 1, [50.0, 50.0, 10.0])];
    p.conv_strided.clear();
    // Behind a one-channel convolution (on the small kernels), so that no change of layout joins it.
    let spec = parse("1x13x13-conv1x1x16:identity-conv3x3x32p1:identity-gap-10", Defaults::default()).unwrap();
    let b = 16;
    let t = predict::predict(&spec, &cfg(b), Machine::Measured(&p), 1);
    let mut without = p.clone();
    without.conv_panel[1].input_grad = 20.0;
    let u = predict::predict(&spec, &cfg(b), Machine::Measured(&without), 1);
    let gflop = 2.0 * (b * 13 * 13) as f64 * 144.0 * 32.0 / 1e9;
    // The input gradient alone moves, by its products at 10 against 20 GFLOP/s.
    let moved = t.layers[1].backward_seconds - u.layers[1].backward_seconds;
    assert!((moved - (gflop / 10.0 - gflop / 20.0)).abs() <= 1e-6 * moved, "{moved} vs {}", gflop / 20.0);
}

#[test]
fn a_transposed_input_gradient_is_priced_as_the_forward_it_runs() {
    // 16 → 16 over 16×16 takes its input gradient as the transposed convolution: a forward of
    // 16 filters over windows of 16·3·3 values. With one reference of that forward (40 GFLOP/s)
    // whose own input gradient ran at 1,000, the layer's input gradient is priced at 40.
    let [_, _, dx] = kernels_of(16, 16, 3, 16);
    let Some(kernel) = dx.strip_prefix("transposed ") else {
        eprintln!("skipped: this CPU does not run the input gradient as the transposed convolution");
        return;
    };
    assert_eq!(kernels_of(16, 16, 3, 16)[0], kernel, "the reference's forward is that kernel");
    let mut p = profile().clone();
    p.conv_panel = vec![reference(16, 16, 3, 16, 1, [40.0, 50.0, 1000.0])];
    p.conv_strided.clear();
    let spec = parse("1x16x16-conv1x1x16:identity-conv3x3x16p1:identity-gap-10", Defaults::default()).unwrap();
    let b = 16;
    let t = predict::predict(&spec, &cfg(b), Machine::Measured(&p), 1);
    let gflop = 2.0 * (b * 16 * 16) as f64 * 144.0 * 16.0 / 1e9;
    // Backward: the weight gradient at 50 and the input gradient at 40 (identity: no derivative).
    let want = gflop / 50.0 + gflop / 40.0;
    let got = t.layers[1].backward_seconds;
    assert!((got - want).abs() <= 1e-6 * want, "{got} vs {want}");
}

#[test]
fn the_sparse_backward_is_priced_at_its_filters() {
    // The sparse backward measured at one window with 8 filters (a = 0.08, b = 0.8 seconds per
    // dense GFLOP) and 32 (0.02, 0.2): per output position and window value F·a is 0.64 at both,
    // so 16 filters cost 0.04 and 0.4 — as a reference measured at 16 would say, not either
    // count's costs.
    let sparse = |filters, a: f64| predict::SparseRates {
        window: 16,
        filters,
        weight_grad: (a, 10.0 * a),
        input_grad: (a, 10.0 * a),
    };
    let mut pair = profile().clone();
    pair.conv_sparse = vec![sparse(8, 0.08), sparse(32, 0.02)];
    let mut one = profile().clone();
    one.conv_sparse = vec![sparse(16, 0.04)];
    // A relu convolution of 16 channels before a 2×2 max pool: δ expected 12.5% nonzero. (1×1:
    // beside a weight gradient over shifted rows, as a 3×3 one would run, the engine takes no
    // sparse path.)
    let spec = parse("1x14x14-conv1x1x16:identity-conv1x1x16:relu-maxpool2-10", Defaults::default()).unwrap();
    let at = |p: &Profile| predict::predict(&spec, &cfg(16), Machine::Measured(p), 1).layers[1].backward_seconds;
    let (got, want) = (at(&pair), at(&one));
    assert!((got - want).abs() <= 1e-9 * want, "{got} vs {want}");
    // And the costs are what they say: moving b moves the backward by b·ρ per dense GFLOP.
    let mut steeper = one.clone();
    steeper.conv_sparse[0].weight_grad.1 += 1.0;
    let gflop = 2.0 * (16 * 14 * 14) as f64 * 16.0 * 16.0 / 1e9;
    let moved = at(&steeper) - want;
    assert!((moved - gflop * 0.125).abs() <= 1e-6 * moved, "{moved} vs {}", gflop * 0.125);
}

#[test]
fn a_kernel_is_priced_from_references_at_its_kind_of_stride() {
    // A stride-1 convolution over 4 channels and a stride-2 reference over the same window that
    // ran the same forward kernel (im2col tiles, where this CPU runs both so): the layer takes
    // the stride-1 reference of another window (30 GFLOP/s), not the stride-2 one (5).
    let kernel = |text: &str| {
        let spec = parse(text, Defaults::default()).unwrap();
        let sh = ConvShape::of(&spec.layers[0]).unwrap();
        Tiles::for_shape(&sh).passes(&sh)[0]
    };
    let (s1, s2, layer) = (
        kernel("2x32x32-conv3x3x4p1:identity-gap-10"),
        kernel("4x32x32-conv3x3x8s2p1:identity-gap-10"),
        kernel("4x32x32-conv3x3x4p1:identity-gap-10"),
    );
    if s1 != layer || s2 != layer {
        eprintln!("skipped: this CPU runs these forwards on different kernels ({s1}, {s2}, {layer})");
        return;
    }
    let mut p = profile().clone();
    p.conv_small = vec![reference(2, 32, 3, 4, 1, [30.0, 30.0, 30.0])];
    p.conv_strided = vec![reference(4, 32, 3, 8, 2, [5.0, 5.0, 5.0])];
    p.conv_panel.clear();
    p.conv_pointwise.clear();
    let spec = parse("1x32x32-conv1x1x4:identity-conv3x3x4p1:identity-gap-10", Defaults::default()).unwrap();
    let t = predict::predict(&spec, &cfg(16), Machine::Measured(&p), 1);
    let gflop = 2.0 * (16 * 32 * 32) as f64 * 36.0 * 4.0 / 1e9;
    let got = t.layers[1].forward_seconds;
    assert!((got - gflop / 30.0).abs() <= 1e-6 * got, "{got} vs {}", gflop / 30.0);
}

#[test]
fn a_plane_skips_windows_measured_only_at_the_other_kind_of_plane() {
    // Windows of 72 and 200 values measured over 28×28 (20 GFLOP/s), and one of 100 over 32×32
    // alone (5): a 28×28 layer of 100 values lies between the two of its own kind of plane (20),
    // not at the 32×32 window's rate; a 32×32 layer of 100 values takes that one.
    let at = |window, plane| predict::ConvRates {
        window,
        filters: 8,
        plane,
        forward: if plane == 1024 { 5.0 } else { 20.0 },
        weight_grad: 20.0,
        input_grad: 20.0,
        ..Default::default()
    };
    let mut p = profile().clone();
    p.conv_panel = vec![at(72, 784), at(100, 1024), at(200, 784)];
    p.conv_small = p.conv_panel.clone();
    p.conv_strided.clear();
    p.conv_pointwise.clear();
    let rate = |side: usize| second_forward_rate(&p, (4, side, 5, 8), 16);
    for (side, want) in [(28, 20.0), (32, 5.0)] {
        let got = rate(side);
        assert!((got - want).abs() <= 1e-6 * want, "{side}×{side}: {got} GFLOP/s, not {want}");
    }
}

#[test]
fn a_residual_sum_hands_its_sparse_gradient_to_the_block() {
    // A relu sum before a 2×2 max pool hands the block's last convolution (identity) the δ it
    // receives, 12.5% nonzero: that convolution is priced on the sparse backward, here made up
    // at 1 second per dense GFLOP for each gradient. The block's first convolution receives
    // the dense input gradient of the last one, and is priced on the dense passes.
    let mut p = profile().clone();
    p.conv_sparse =
        vec![predict::SparseRates { window: 16, filters: 16, weight_grad: (1.0, 0.0), input_grad: (1.0, 0.0) }];
    // 1×1 convolutions: beside a weight gradient over shifted rows the engine takes no sparse
    // path.
    let spec = parse(
        "1x14x14-conv1x1x16:identity-[conv1x1x16:relu-conv1x1x16:identity]:relu-maxpool2-10",
        Defaults::default(),
    )
    .unwrap();
    assert!(matches!(spec.layers[3].kind, Kind::Add(_)), "{spec}");
    let t = predict::predict(&spec, &cfg(16), Machine::Measured(&p), 1);
    let gflop = 2.0 * (16 * 14 * 14) as f64 * 16.0 * 16.0 / 1e9;
    let last = t.layers[2].backward_seconds;
    assert!((last - 2.0 * gflop).abs() <= 1e-6 * last, "{last} vs {}", 2.0 * gflop);
    assert!(t.layers[1].backward_seconds < gflop, "{} priced sparse", t.layers[1].backward_seconds);
}

#[test]
fn a_convolution_is_priced_at_the_batches_its_shape_was_measured_at() {
    // One window and plane measured at batch 16 (40 GFLOP/s) and 128 (10): batch 64 lies
    // between them, log-linear in the batch and the rate; beyond them, the nearest.
    let at = |filters, batch, forward| predict::ConvRates {
        window: 72,
        filters,
        plane: 256,
        forward,
        weight_grad: forward,
        input_grad: forward,
        batch,
        ..Default::default()
    };
    let mut p = profile().clone();
    p.conv_panel = vec![at(8, 16, 40.0), at(32, 16, 40.0), at(8, 128, 10.0), at(32, 128, 10.0)];
    p.conv_small = p.conv_panel.clone();
    p.conv_strided.clear();
    p.conv_pointwise.clear();
    let rate = |b: usize| second_forward_rate(&p, (8, 16, 3, 16), b);
    let between = (40f64.ln() / 3.0 + 10f64.ln() * 2.0 / 3.0).exp();
    for (b, want) in [(16, 40.0), (8, 40.0), (128, 10.0), (256, 10.0), (64, between)] {
        let got = rate(b);
        assert!((got - want).abs() <= 1e-6 * want, "batch {b}: {got} GFLOP/s, not {want}");
    }
}

#[test]
fn a_sum_that_normalizes_its_batch_norm_costs_a_stream_not_a_pass() {
    // A block ending in a norm without an activation, which only the sum reads: the engine
    // normalizes it in the sum's pass (`engine::kept_outputs`), so the sum costs one more input
    // read, less than its own pass; the norm is priced as before.
    let fused =
        parse("16x16x16-conv3x3x16p1b0-bn:relu-[conv3x3x16p1b0-bn:relu-conv3x3x16p1b0-bn]-gap-10", Defaults::default())
            .unwrap();
    assert_eq!(flopnet::engine::kept_outputs(&fused), [true, true, true, true, true, false, true, true, true]);
    let p = cold_only();
    let b = 16;
    let n = b * 16 * 16 * 16;
    let g = predict::predict(&fused, &cfg(b), Machine::Measured(p), 1);
    let (norm, sum) = (&g.layers[5], &g.layers[6]);
    let close = |x: f64, y: f64| (x - y).abs() <= 1e-9 * y;
    assert!(close(norm.forward_seconds, n as f64 * pass_at(p, n, |r| r.norm_forward)));
    assert!(sum.forward_seconds > 0.0 && sum.forward_seconds < n as f64 * pass_at(p, n, |r| r.sum));
}

#[test]
fn a_convolution_whose_norm_lays_out_its_delta_costs_a_copy_less() {
    // The batch norm after a convolution it alone reads writes δ as the convolution's backward
    // pass reads it (`engine::laid_deltas`, on AVX-512): that convolution is priced without its
    // own copy of δ; with a bias (whose gradient reads δ as it is), as before.
    let laid = parse("16x16x16-conv3x3x16p1b0-bn-gap-10", Defaults::default()).unwrap();
    let plain = parse("16x16x16-conv3x3x16p1-bn-gap-10", Defaults::default()).unwrap();
    // 512K values of δ: a size calibrate measures, split across the team.
    let b = 128;
    let n = b * 16 * 16 * 16;
    let on = flopnet::engine::laid_deltas(&laid, b)[0];
    assert!(!flopnet::engine::laid_deltas(&plain, b).contains(&true));
    let p = cold_only();
    let g = predict::predict(&laid, &cfg(b), Machine::Measured(p), 1);
    let h = predict::predict(&plain, &cfg(b), Machine::Measured(p), 1);
    let copy = if on { n as f64 * pass_at(p, n, |r| r.copy) } else { 0.0 };
    let (got, want) = (g.layers[0].backward_seconds, h.layers[0].backward_seconds - copy);
    let plain_bw = h.layers[0].backward_seconds;
    assert!(copy < plain_bw && (got - want).abs() <= 1e-6 * want, "{got} s, not {want} ({plain_bw} less {copy})");
    assert_eq!(g.layers[0].forward_seconds, h.layers[0].forward_seconds);
}

#[test]
fn per_value_passes_are_priced_warm_where_the_step_fits_in_the_last_level_cache() {
    // The share priced warm: all of it up to the cache's size, none from four times it,
    // log-linear between.
    let mib = 1usize << 20;
    assert_eq!(predict::warm_share(10.0 * mib as f64, 32 * mib), 1.0);
    assert_eq!(predict::warm_share(32.0 * mib as f64, 32 * mib), 1.0);
    assert!((predict::warm_share(64.0 * mib as f64, 32 * mib) - 0.5).abs() < 1e-12);
    assert_eq!(predict::warm_share(128.0 * mib as f64, 32 * mib), 0.0);
    assert_eq!(predict::warm_share(1e12, 32 * mib), 0.0);
    assert_eq!(predict::warm_share(1.0, 0), 0.0, "no cache size known: cold");

    // A small residual network: batch norm and the sum at calibrate's warm rates where its
    // step's working set fits in the cache, at the cold ones where the cache is too small.
    // (bn:relu applies its relu in the normalizing pass; the block ends in one, so the sum is
    // a pass of its own.)
    let spec = parse(
        "16x16x16-conv3x3x16p1b0-bn:relu-[conv3x3x16p1b0-bn:relu-conv3x3x16p1b0-bn:relu]-gap-10",
        Defaults::default(),
    )
    .unwrap();
    let b = 16;
    let n = b * 16 * 16 * 16;
    let mut p = profile().clone();
    // Warm and cold far apart, so that a mix-up shows.
    for (w, c) in p.passes_warm.iter_mut().zip(&p.passes) {
        (w.norm_forward, w.norm_backward, w.sum) = (c.norm_forward / 3.0, c.norm_backward / 3.0, c.sum / 3.0);
    }
    let at = |t: &[predict::PassRates], rate: fn(&predict::PassRates) -> f64| {
        n as f64 * rate(t.iter().find(|r| r.values == n).expect("a measured size"))
    };
    let priced = |p: &Profile| predict::predict(&spec, &cfg(b), Machine::Measured(p), 1);
    // A cache of 1 TiB holds any step here; one of 1 KiB none.
    p.last_level_cache = 1 << 40;
    let warm = priced(&p);
    let close = |x: f64, y: f64| (x - y).abs() <= 1e-9 * y;
    assert!(close(warm.layers[1].forward_seconds, at(&p.passes_warm, |r| r.norm_forward)));
    assert!(close(warm.layers[6].forward_seconds, at(&p.passes_warm, |r| r.sum)));
    p.last_level_cache = 1 << 10;
    let cold = priced(&p);
    assert!(close(cold.layers[1].forward_seconds, at(&p.passes, |r| r.norm_forward)));
    assert!(close(cold.layers[6].forward_seconds, at(&p.passes, |r| r.sum)));
    // Convolutions are not per-value passes: the same in all three, but for the copy of δ a
    // convolution leaves to the norm after it (`engine::laid_deltas`), a per-value pass.
    assert_eq!(warm.layers[0].forward_seconds, cold.layers[0].forward_seconds);
    let copy = |passes: &[predict::PassRates]| {
        if flopnet::engine::laid_deltas(&spec, b)[2] { at(passes, |r| r.copy) } else { 0.0 }
    };
    assert!(close(
        warm.layers[2].backward_seconds + copy(&p.passes_warm),
        cold.layers[2].backward_seconds + copy(&p.passes)
    ));
    assert!(warm.step_seconds < cold.step_seconds);
}

#[test]
fn a_pass_too_small_to_split_is_priced_at_one_threads_rate() {
    // The engine splits a convolution's passes across its team from `gemm::PARALLEL_MIN_MACS`
    // multiply-adds on and a per-value pass from `conv::PARALLEL_MIN_VALUES` values on; below
    // them the caller does all the work alone. A two-thread profile's rates are a team's: such
    // a pass takes its work at one thread's share of them, so twice the time per FLOP or value
    // of a pass the team splits; on a one-thread profile, the same time.
    let spec = parse("1x13x13-conv1x1x16:identity-conv3x3x32p1:identity-gap-10", Defaults::default()).unwrap();
    let norm = parse("16x16x16-conv3x3x16p1b0-bn-gap-10", Defaults::default()).unwrap();
    for threads in [1, 2] {
        let mut p = Profile { threads, ..cold_only().clone() };
        // One reference, 16 → 32 over 13×13 at batch 16 (12.5M multiply-adds: split).
        p.conv_panel = vec![reference(16, 13, 3, 32, 1, [50.0, 50.0, 50.0])];
        p.conv_small.clear();
        p.conv_strided.clear();
        p.conv_pointwise.clear();
        let per_gflop = |b: usize| {
            let t = predict::predict(&spec, &cfg(b), Machine::Measured(&p), threads);
            // The second convolution: 32·144 multiply-adds per position, 169 positions an example.
            t.layers[1].forward_seconds / (2.0 * (b * 169) as f64 * 144.0 * 32.0 / 1e9)
        };
        // Batch 1: 0.78M multiply-adds, below the threshold; batch 16: 12.5M.
        let (alone, split) = (per_gflop(1), per_gflop(16));
        assert!((split - 1.0 / 50.0).abs() <= 1e-9, "split across the team at the reference's rate: {split}");
        assert!((alone / split - threads as f64).abs() <= 1e-9, "{threads} threads: {alone} against {split}");
        // Batch norm over 8 and 16 examples of 16×16×16: 32,768 values, one thread; 65,536, the team.
        let per_value = |b: usize| {
            let t = predict::predict(&norm, &cfg(b), Machine::Measured(&p), threads);
            t.layers[1].forward_seconds / (b * 4096) as f64
        };
        let (alone, split) = (per_value(8), per_value(16));
        assert!((split - pass_at(&p, 65_536, |r| r.norm_forward)).abs() <= 1e-9 * split);
        assert!((alone / split - threads as f64).abs() <= 1e-9, "{threads} threads: {alone} against {split}");
    }
}
