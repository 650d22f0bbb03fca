//! The fast f32 engine against the f64 reference engine: outputs, loss, every gradient and the
//! parameters after a few optimizer steps, on random networks.

use flopnet::engine::{Engine, Settings};
use flopnet::init::init;
use flopnet::reference::{Hyper, Network, OptimizerState};
use flopnet::spec::{Activation, Layer, Loss, Optimizer, Shape, Spec};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

mod common;

use common::{HIDDEN, assert_close};

fn random_case(rng: &mut ChaCha8Rng) -> (Spec, Loss, Optimizer, usize) {
    let loss = if rng.gen_bool(0.6) { Loss::Ce } else { Loss::Mse };
    let depth = rng.gen_range(1..=4);
    let mut inputs = rng.gen_range(1..=80);
    let input = inputs;
    let layers = (0..depth)
        .map(|i| {
            let outputs = rng.gen_range(1..=70);
            let activation = match (i + 1 == depth, loss) {
                (true, Loss::Ce) => Activation::Softmax,
                (true, Loss::Mse) => Activation::ALL[rng.gen_range(0..6)],
                _ => HIDDEN[rng.gen_range(0..5)],
            };
            let l = Layer::dense(inputs, outputs, activation);
            inputs = outputs;
            l
        })
        .collect();
    let opt = [Optimizer::Sgd, Optimizer::Momentum, Optimizer::Adam][rng.gen_range(0..3)];
    (Spec::new(Shape::flat(input), layers), loss, opt, rng.gen_range(1..=40))
}

/// Outputs, loss, every gradient, and the parameters after three optimizer steps: the fast
/// engine against the f64 reference on one network and one random batch.
fn compare_engines(spec: &Spec, loss: Loss, opt: Optimizer, batch: usize, case: u64, rng: &mut ChaCha8Rng) {
    let params = init(spec, case);
    let x: Vec<f32> = (0..batch * spec.input).map(|_| rng.gen_range(0.0..1.0)).collect();
    let labels: Vec<u8> = (0..batch).map(|_| rng.gen_range(0..spec.outputs()) as u8).collect();
    let threads = 1 + case as usize % 2;
    let hyper = Hyper::defaults(opt);
    let settings = Settings { loss, optimizer: opt, hyper, max_batch: batch, threads };
    let mut fast = Engine::new(spec, &params, settings).unwrap();
    let mut slow: Network<f64> = Network::new(spec, &params);
    let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    let y64: Vec<usize> = labels.iter().map(|&y| y as usize).collect();
    let ctx = format!("case {case}: {spec} loss {loss} opt {opt} batch {batch} threads {threads}");

    let want_out = slow.forward(&x64).output().to_vec();
    assert_close(&format!("{ctx} output"), fast.forward(&x).unwrap(), &want_out, 1e-4);

    let score = fast.compute_gradients(&x, &labels).unwrap();
    let (want_loss, want_grads) = slow.gradients(&x64, &y64, loss);
    let got_loss = score.loss_sum / batch as f64;
    assert!((got_loss - want_loss).abs() <= 1e-4 * (1.0 + want_loss.abs()), "{ctx}: loss {got_loss} vs {want_loss}");
    for (l, g) in want_grads.iter().enumerate() {
        let (dw, db) = fast.layer_grads(l);
        assert_close(&format!("{ctx} layer {l} dW"), dw, &g.weight, 1e-4);
        assert_close(&format!("{ctx} layer {l} db"), db, &g.bias, 1e-4);
    }

    // Three optimizer steps on both engines land on the same parameters.
    let mut state = OptimizerState::new(opt, hyper, &slow.tensor_sizes());
    for _ in 0..3 {
        fast.train_step(&x, &labels).unwrap();
        slow.train_step(&mut state, &x64, &y64, loss);
    }
    for l in 0..spec.layers.len() {
        let (w, b) = fast.layer(l);
        assert_close(&format!("{ctx} layer {l} W after 3 steps"), w, &slow.weights[l], 1e-4);
        assert_close(&format!("{ctx} layer {l} b after 3 steps"), b, &slow.biases[l], 1e-3);
    }
}

#[test]
fn engine_matches_reference_on_random_networks() {
    let mut rng = ChaCha8Rng::seed_from_u64(2024);
    for case in 0..120 {
        let (spec, loss, opt, batch) = random_case(&mut rng);
        compare_engines(&spec, loss, opt, batch, case, &mut rng);
    }
}

/// Two runs of five Adam steps from the same seed, on 1 and then 2 threads, end on the same bits.
fn assert_bitwise_repeatable(spec_text: &str, batch: usize, seed: u64) {
    let spec = flopnet::spec::parse(spec_text, Default::default()).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let x: Vec<f32> = (0..batch * spec.input).map(|_| rng.gen_range(0.0..1.0)).collect();
    let labels: Vec<u8> = (0..batch).map(|_| rng.gen_range(0..10)).collect();
    for threads in [1, 2] {
        let run = || {
            let settings = Settings {
                loss: Loss::Ce,
                optimizer: Optimizer::Adam,
                hyper: Hyper::defaults(Optimizer::Adam),
                max_batch: batch,
                threads,
            };
            let mut e = Engine::new(&spec, &init(&spec, 9), settings).unwrap();
            for _ in 0..5 {
                e.train_step(&x, &labels).unwrap();
            }
            e.params().to_vec()
        };
        let (a, b) = (run(), run());
        assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()), "{spec_text}: threads {threads}");
    }
}

#[test]
fn same_seed_and_threads_give_bitwise_identical_runs() {
    assert_bitwise_repeatable("784-300-100-10", 64, 5);
}

/// At one example, SGD and momentum update each dense layer as its gradient is formed (the
/// gradient is never stored); the parameters must still match the reference, with convolutions
/// (updated after the backward pass) in the same network.
#[test]
fn one_example_steps_update_as_the_reference_does() {
    let mut rng = ChaCha8Rng::seed_from_u64(2026);
    for case in 0..80 {
        let opt = [Optimizer::Sgd, Optimizer::Momentum][case as usize % 2];
        let spec = if case % 4 < 2 { random_case(&mut rng).0 } else { common::random_cnn(&mut rng, Loss::Ce, 10) };
        let loss = if spec.layers.last().unwrap().activation == Activation::Softmax { Loss::Ce } else { Loss::Mse };
        compare_engines(&spec, loss, opt, 1, 1000 + case, &mut rng);
    }
}

#[test]
fn bad_batches_are_errors_not_panics() {
    let spec = flopnet::spec::parse("4-3", Default::default()).unwrap();
    let settings = Settings {
        loss: Loss::Ce,
        optimizer: Optimizer::Sgd,
        hyper: Hyper::defaults(Optimizer::Sgd),
        max_batch: 2,
        threads: 1,
    };
    let mut e = Engine::new(&spec, &init(&spec, 1), settings).unwrap();
    assert!(e.train_step(&[0.0; 5], &[0]).is_err(), "ragged row");
    assert!(e.train_step(&[0.0; 12], &[0, 0, 0]).is_err(), "over max_batch");
    assert!(e.train_step(&[0.0; 4], &[3]).is_err(), "label out of range");
    assert!(e.train_step(&[0.0; 8], &[0]).is_err(), "label count");
}

/// A convolution whose kernel covers the whole image is a dense layer with the same weights
/// ([F][C][H][W] = [F][C·H·W]), and 1×1 pooling is the identity: such a network must train as
/// its dense twin does. This exercises the engine's layouts (the channel-major transposes at the
/// input and at the dense boundary, both ways) apart from the kernels' own tests.
#[test]
fn whole_image_convolutions_train_as_their_dense_twins() {
    use flopnet::spec::{Conv, Kind, Padding, Pool};
    let mut rng = ChaCha8Rng::seed_from_u64(77);
    for case in 0..40 {
        let (c, h, w) = (rng.gen_range(1..=4), rng.gen_range(1..=6), rng.gen_range(1..=6));
        let f = rng.gen_range(1..=7);
        let m = rng.gen_range(2..=9);
        let act = HIDDEN[rng.gen_range(0..5)];
        let input = Shape::new(c, h, w);
        let pool = Pool::new(1, 1);
        let pool_kind = if case % 2 == 0 { Kind::MaxPool(pool) } else { Kind::AvgPool(pool) };
        let cv = Conv::plain(h, w, f, 1, Padding::Fixed(0));
        let mut layers = Vec::new();
        if h > 1 || w > 1 {
            layers.push(Layer::after(input, pool_kind, 0, Activation::Identity).unwrap());
        }
        layers.push(Layer::after(input, Kind::Conv2d(cv), 0, act).unwrap());
        layers.push(Layer::dense(f, m, Activation::Softmax));
        let cnn = Spec::new(input, layers);
        let dense = Spec::new(
            Shape::flat(c * h * w),
            vec![Layer::dense(c * h * w, f, act), Layer::dense(f, m, Activation::Softmax)],
        );
        let params = init(&cnn, case);
        let skip = params.len() - 2;
        let batch = rng.gen_range(1..=9);
        let opt = [Optimizer::Sgd, Optimizer::Momentum, Optimizer::Adam][case as usize % 3];
        let threads = 1 + case as usize % 2;
        let settings =
            Settings { loss: Loss::Ce, optimizer: opt, hyper: Hyper::defaults(opt), max_batch: batch, threads };
        let mut a = Engine::new(&cnn, &params, settings).unwrap();
        let mut b = Engine::new(&dense, &params[skip..], settings).unwrap();
        let x: Vec<f32> = (0..batch * c * h * w).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let labels: Vec<u8> = (0..batch).map(|_| rng.gen_range(0..m) as u8).collect();
        let ctx = format!("case {case}: {cnn} batch {batch} threads {threads}");
        let want: Vec<f64> = b.forward(&x).unwrap().iter().map(|&v| v as f64).collect();
        assert_close(&format!("{ctx} output"), a.forward(&x).unwrap(), &want, 1e-5);
        for _ in 0..3 {
            // (At one example a step updates dense layers without storing their gradients, so
            // the gradients are compared as computed on their own, before each step.)
            a.compute_gradients(&x, &labels).unwrap();
            b.compute_gradients(&x, &labels).unwrap();
            for l in 0..2 {
                let ((dw, db), (gw, gb)) = (a.layer_grads(skip + l), b.layer_grads(l));
                let to64 = |v: &[f32]| v.iter().map(|&v| v as f64).collect::<Vec<_>>();
                assert_close(&format!("{ctx} layer {l} dW"), dw, &to64(gw), 1e-5);
                assert_close(&format!("{ctx} layer {l} db"), db, &to64(gb), 1e-5);
            }
            a.train_step(&x, &labels).unwrap();
            b.train_step(&x, &labels).unwrap();
        }
        let to64 = |v: &[f32]| v.iter().map(|&v| v as f64).collect::<Vec<_>>();
        assert_close(&format!("{ctx} params"), a.params(), &to64(b.params()), 1e-5);
    }
}

#[test]
fn a_cnn_trains_bitwise_identically_for_the_same_seed_and_threads() {
    assert_bitwise_repeatable("3x12x12-conv3x3x8p1:relu-maxpool2-conv3x3x16s2:tanh-avgpool2-20:relu-10", 48, 6);
}

/// 150 random CNNs (images up to 3×12×12; every kernel shape, stride, padding and overlapping
/// pool the spec allows; 1 or 2 threads).
#[test]
fn engine_matches_reference_on_random_cnns() {
    let mut rng = ChaCha8Rng::seed_from_u64(2025);
    for case in 0..150 {
        let loss = if rng.gen_bool(0.7) { Loss::Ce } else { Loss::Mse };
        let spec = common::random_cnn(&mut rng, loss, 12);
        let opt = [Optimizer::Sgd, Optimizer::Momentum, Optimizer::Adam][rng.gen_range(0..3)];
        let batch = rng.gen_range(1..=9);
        compare_engines(&spec, loss, opt, batch, case, &mut rng);
    }
}

/// Convolutions over a multiple of 8 channels, with a relu and a 2×2 max pool after them: at
/// most a quarter of their δ is nonzero, so on an AVX2 machine their backward takes the sparse
/// path (`engine::sparse`), which must agree with the reference like the dense one.
#[test]
fn engine_matches_reference_where_the_backward_is_sparse() {
    let specs = [
        "1x12x12-conv3x3x8p1:relu-maxpool2-conv3x3x16p1:relu-maxpool2-10",
        "2x11x11-conv2x2x8:relu-maxpool2-conv5x5x12s2p2:relu-maxpool2-7:sigmoid-10",
        "1x10x10-conv3x3x16psame:relu-maxpool2-conv1x1x8:relu-maxpool2-conv2x2x4p1:relu-10",
    ];
    let mut rng = ChaCha8Rng::seed_from_u64(31);
    for (case, text) in specs.iter().enumerate() {
        let spec = flopnet::spec::parse(text, Default::default()).unwrap();
        for (i, opt) in [Optimizer::Sgd, Optimizer::Momentum, Optimizer::Adam].into_iter().enumerate() {
            let batch = [1, 5, 16][i];
            compare_engines(&spec, Loss::Ce, opt, batch, (3 * case + i) as u64, &mut rng);
        }
    }
    assert_bitwise_repeatable(specs[0], 40, 8);
}

/// Networks whose convolutions take the panel products at both vector widths: a transposed
/// input gradient (C = 32), an odd number of weight-gradient panels (K = 108) and of forward
/// panels (batch 2: 162 positions), filters that are not a multiple of the 6-row block.
#[test]
fn engine_matches_reference_on_the_panel_products() {
    let specs =
        ["1x9x9-conv3x3x12p1:relu-conv3x3x32p1:relu-conv3x3x9:relu-10", "1x9x9-conv3x3x32p1:tanh-conv3x3x13p1:relu-10"];
    let mut rng = ChaCha8Rng::seed_from_u64(57);
    for (case, text) in specs.iter().enumerate() {
        let spec = flopnet::spec::parse(text, Default::default()).unwrap();
        for (i, opt) in [Optimizer::Momentum, Optimizer::Adam].into_iter().enumerate() {
            let batch = [2, 3][i];
            compare_engines(&spec, Loss::Ce, opt, batch, (2 * case + i) as u64, &mut rng);
        }
    }
}

/// The tests above run on the kernel path this process uses (`FLOPNET_SIMD`, or the widest the
/// CPU has); this runs them again in child processes, once for every other path this CPU has,
/// and names the paths it skipped (`cargo test -- --nocapture` shows them).
#[test]
fn every_kernel_path_this_cpu_has_matches_the_reference() {
    use flopnet::engine::simd::{Path, path};
    if std::env::var_os("FLOPNET_SIMD_CHILD").is_some() {
        return;
    }
    let exe = std::env::current_exe().unwrap();
    for p in Path::ALL {
        if p == path() {
            eprintln!("kernel path {p}: tested in this process");
            continue;
        }
        if !p.available() {
            eprintln!("kernel path {p}: skipped, this CPU lacks its features");
            continue;
        }
        let out = std::process::Command::new(&exe)
            .env("FLOPNET_SIMD", p.name())
            .env("FLOPNET_SIMD_CHILD", "1")
            .args(["--test-threads", "2", "--skip", "every_kernel_path"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "kernel path {p} fails:\n{text}");
        assert!(text.contains("test result: ok"), "kernel path {p}: no tests ran:\n{text}");
        eprintln!("kernel path {p}: passed in a child process");
    }
}
