//! The fast engine on graph networks (residual sums, concatenations, fan-out, batch
//! normalization, dropout, global and adaptive pooling, zero-padding shortcuts, padded max
//! pooling, relu6, convolutions without a bias) against the f64 reference engine: outputs in
//! evaluation and training mode, the loss, every parameter's gradient, the parameters and batch
//! norm's running statistics after optimizer steps; and training repeats bit for bit.

use flopnet::engine::{Engine, Settings};
use flopnet::init::{LayerParams, init};
use flopnet::reference::{Hyper, Network, OptimizerState};
use flopnet::spec::{self, Activation, Defaults, Kind, Loss, Optimizer, Spec};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

mod common;

use common::{assert_close, random_graph};

const ACTS: [&str; 5] = ["relu", "relu6", "tanh", "leaky_relu", "identity"];
const OPTIMIZERS: [Optimizer; 3] = [Optimizer::Sgd, Optimizer::Momentum, Optimizer::Adam];

/// A small CIFAR-style residual network: batch norm, identity and zero-padding shortcuts.
const RESNET: &str = "3x8x8-conv3x3x8p1b0-bn:relu-[conv3x3x8p1b0-bn:relu-conv3x3x8p1b0-bn]:relu\
                      -[conv3x3x16s2p1b0-bn:relu-conv3x3x16p1b0-bn|pad]:relu-gap-10";
/// An inverted-residual network as MobileNetV2 builds it (depthwise convolution, relu6,
/// projection without an activation, dropout before the classifier).
const MOBILENET: &str = "3x8x8-conv3x3x8s2p1b0-bn:relu6-[conv1x1x16b0-bn:relu6-conv3x3x16p1g16b0-bn:relu6-conv1x1x8b0-bn]\
                         -conv1x1x32b0-bn:relu6-gap:identity-drop0.2-10";
/// A torchvision-style stem (padded max pooling), a projection shortcut and a concatenation.
const STEM: &str = "3x12x12-conv3x3x8s2p1b0-bn:relu-maxpool3s2p1-[conv3x3x8p1g2b0-bn:relu|conv1x1x8b0-bn]:relu\
                    -(conv1x1x4:relu|conv3x3x4p1:relu)-adaptavg2x2-bn:tanh-12:relu-drop0.3-5";

fn settings(loss: Loss, opt: Optimizer, batch: usize, threads: usize) -> Settings {
    Settings { loss, optimizer: opt, hyper: Hyper::defaults(opt), max_batch: batch, threads }
}

/// The network's starting parameters, batch norm's γ and β moved off 1 and 0 so that their
/// gradients are not special.
fn params_for(spec: &Spec, seed: u64) -> Vec<LayerParams> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xb17);
    let mut params = init(spec, seed);
    for (l, p) in spec.layers.iter().zip(params.iter_mut()) {
        if l.kind == Kind::BatchNorm {
            p.weight.iter_mut().for_each(|w| *w = rng.gen_range(0.5f32..1.5) as f64);
            p.bias.iter_mut().for_each(|b| *b = rng.gen_range(-0.5f32..0.5) as f64);
        }
    }
    params
}

/// |got − want| ≤ 1e-4 · max(max|want|, floor) over the tensor.
fn close_to(what: &str, got: &[f32], want: &[f64], floor: f64) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let scale = want.iter().fold(floor, |m, v| m.max(v.abs())).max(1e-30);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!((g as f64 - w).abs() <= 1e-4 * scale, "{what}[{i}]: engine {g} reference {w} (scale {scale})");
    }
}

fn data(spec: &Spec, batch: usize, rng: &mut ChaCha8Rng) -> (Vec<f32>, Vec<u8>, Vec<f64>, Vec<usize>) {
    let x: Vec<f32> = (0..batch * spec.input).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let labels: Vec<u8> = (0..batch).map(|_| rng.gen_range(0..spec.outputs()) as u8).collect();
    let x64 = x.iter().map(|&v| v as f64).collect();
    let y64 = labels.iter().map(|&y| y as usize).collect();
    (x, labels, x64, y64)
}

/// Evaluation and training outputs, the loss, every gradient; then three optimizer steps on both
/// engines: parameters, running statistics and the evaluation output after them.
fn compare(spec: &Spec, loss: Loss, opt: Optimizer, batch: usize, threads: usize, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let params = params_for(spec, seed);
    let (x, labels, x64, y64) = data(spec, batch, &mut rng);
    let ctx = format!("seed {seed}: {spec} loss {loss} opt {opt} batch {batch} threads {threads}");
    let mut fast = Engine::new(spec, &params, settings(loss, opt, batch, threads)).unwrap();
    let mut slow: Network<f64> = Network::new(spec, &params);

    assert_close(&format!("{ctx} evaluation output"), fast.forward(&x).unwrap(), &slow.infer(&x64), 1e-4);
    let score = fast.compute_gradients(&x, &labels).unwrap();
    let (want_loss, want_grads) = slow.gradients(&x64, &y64, loss);
    let got_loss = score.loss_sum / batch as f64;
    assert!((got_loss - want_loss).abs() <= 1e-4 * (1.0 + want_loss.abs()), "{ctx}: loss {got_loss} vs {want_loss}");
    // Batch norm's backward subtracts a channel's mean gradient from each value's: a layer before
    // one holds gradients that cancel to (nearly) zero in exact arithmetic, which f32 rounds at
    // the scale of the terms that cancelled. A tensor is compared relative to its own largest
    // value, or to 1% of the network's largest gradient when its own is smaller.
    let largest = want_grads.iter().flat_map(|g| g.weight.iter().chain(&g.bias)).fold(0.0f64, |m, v| m.max(v.abs()));
    for (l, g) in want_grads.iter().enumerate() {
        let (dw, db) = fast.layer_grads(l);
        close_to(&format!("{ctx} layer {l} dW"), dw, &g.weight, 0.01 * largest);
        close_to(&format!("{ctx} layer {l} db"), db, &g.bias, 0.01 * largest);
    }

    let mut fast = Engine::new(spec, &params, settings(loss, opt, batch, threads)).unwrap();
    let mut state = OptimizerState::new(opt, Hyper::defaults(opt), &slow.tensor_sizes());
    for step in 0..3 {
        let s = fast.train_step(&x, &labels).unwrap();
        let want = slow.train_step(&mut state, &x64, &y64, loss);
        let got = s.loss_sum / batch as f64;
        assert!((got - want).abs() <= 1e-4 * (1.0 + want.abs()), "{ctx} step {step}: loss {got} vs {want}");
    }
    for l in 0..spec.layers.len() {
        let (w, b) = fast.layer(l);
        // A parameter whose gradient cancels to zero stays where it started, give or take f32's
        // rounding of that zero: 1e-3 is the floor of the scale here.
        close_to(&format!("{ctx} layer {l} W after 3 steps"), w, &slow.weights[l], 1e-3);
        close_to(&format!("{ctx} layer {l} b after 3 steps"), b, &slow.biases[l], 1e-3);
        if let Some((mean, var, batches)) = fast.layer_running(l) {
            let (want_mean, want_var) = &slow.running[l];
            assert_close(&format!("{ctx} layer {l} running mean"), mean, want_mean, 1e-4);
            assert_close(&format!("{ctx} layer {l} running var"), var, want_var, 1e-4);
            assert_eq!(batches, 3, "{ctx} layer {l}: batches tracked");
        }
    }
    assert_close(&format!("{ctx} evaluation output after 3 steps"), fast.forward(&x).unwrap(), &slow.infer(&x64), 1e-4);
}

#[test]
fn random_graphs_match_the_reference() {
    for seed in 0..48u64 {
        let loss = if seed % 3 == 0 { Loss::Mse } else { Loss::Ce };
        let spec = random_graph(seed, &ACTS, loss);
        // Adam turns a gradient that is zero but for rounding into a full step, whose sign the
        // two engines' rounding decides: it is compared on the named networks below.
        let opt = OPTIMIZERS[seed as usize % 2];
        compare(&spec, loss, opt, 2 + seed as usize % 4, 1 + seed as usize % 2, seed);
    }
}

#[test]
fn residual_and_inverted_residual_networks_match_the_reference() {
    for (i, text) in [RESNET, MOBILENET, STEM].iter().enumerate() {
        let spec = spec::parse(text, Defaults::default()).unwrap();
        assert!(!spec.is_chain());
        for (k, opt) in OPTIMIZERS.into_iter().enumerate() {
            // The inverted residual's projection (batch norm, no activation) reaches the next
            // batch norm through a sum and a convolution only: its β's gradient is zero in exact
            // arithmetic, and Adam makes a full step of either sign from its rounding.
            if *text == MOBILENET && opt == Optimizer::Adam {
                continue;
            }
            let seed = (10 * i + k) as u64;
            compare(&spec, Loss::Ce, opt, 3 + k, 1 + k % 2, seed);
        }
    }
}

/// A sum that reads one layer twice or three times (its δ reaches that layer as 2δ or 3δ): the
/// backward hands a sum's δ buffer over to one source instead of copying it, never to a twin.
#[test]
fn sums_that_read_a_layer_twice_match_the_reference() {
    for (seed, text) in
        ["2x4x4-conv3x3x2p1:tanh-[|]:relu-gap-3", "2x4x4-conv3x3x2p1:tanh-[|conv1x1x2:tanh||]-gap-3"].iter().enumerate()
    {
        let spec = spec::parse(text, Defaults::default()).unwrap();
        compare(&spec, Loss::Ce, Optimizer::Sgd, 3, 1 + seed % 2, 200 + seed as u64);
    }
}

/// resnet20's first stage at its real width (16 channels, rows 16 wide): on AVX-512 its
/// convolutions take the shifted-rows kernels, δ laid out once for both backward products (by
/// the batch norm after each convolution, as it writes its input gradient), and
/// the block's first convolution adds its input gradient to the one the sum gave the block's
/// input; the whole step matches the reference.
#[test]
fn a_full_width_residual_stage_matches_the_reference() {
    let text = "16x16x16-conv3x3x16p1b0-bn:relu-[conv3x3x16p1b0-bn:relu-conv3x3x16p1b0-bn]:relu\
                -[conv3x3x16p1b0-bn:relu-conv3x3x16p1b0-bn]:relu-gap-4";
    let spec = spec::parse(text, Defaults::default()).unwrap();
    compare(&spec, Loss::Ce, Optimizer::Momentum, 2, 2, 300);
}

/// The chain kinds added for real architectures, one after another (no graph).
#[test]
fn chains_of_the_new_kinds_match_the_reference() {
    for (seed, text) in [
        "6-bn:relu6-8:relu6-drop0.5-bn:tanh-3",
        "2x6x6-conv3x3x4p1b0:relu6-maxpool3s2c-zpad6s1-bn:relu-gap-4",
        "1x7x7-conv2x2x3s2:relu-adaptavg3x2-5",
    ]
    .iter()
    .enumerate()
    {
        let spec = spec::parse(text, Defaults::default()).unwrap();
        compare(&spec, Loss::Ce, OPTIMIZERS[seed % 3], 4, 2, 100 + seed as u64);
    }
}

/// Six momentum steps and an evaluation, twice each on one and on two threads: every
/// parameter, running statistic and output is the same bits.
#[test]
fn graph_training_repeats_bit_for_bit() {
    for text in [RESNET, STEM] {
        let spec = spec::parse(text, Defaults::default()).unwrap();
        let batch = 6;
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let (x, labels, _, _) = data(&spec, batch, &mut rng);
        for threads in [1, 2] {
            let run = || {
                let mut e =
                    Engine::new(&spec, &params_for(&spec, 8), settings(Loss::Ce, Optimizer::Momentum, batch, threads))
                        .unwrap();
                e.set_seed(99);
                for _ in 0..6 {
                    e.train_step(&x, &labels).unwrap();
                }
                let out = e.forward(&x).unwrap().to_vec();
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<u32>>();
                (bits(e.params()), bits(&e.running_stats().values), bits(&out))
            };
            assert!(run() == run(), "{text}: threads {threads}");
        }
    }
}

/// Dropout's masks follow the seed: another seed trains to other parameters, the same one to
/// the same; at evaluation dropout passes values through.
#[test]
fn dropout_masks_follow_the_seed() {
    let spec = spec::parse("10-16:relu-drop0.5-4", Defaults::default()).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let (x, labels, x64, _) = data(&spec, 8, &mut rng);
    let run = |seed: u64| {
        let mut e = Engine::new(&spec, &init(&spec, 1), settings(Loss::Ce, Optimizer::Sgd, 8, 1)).unwrap();
        e.set_seed(seed);
        e.train_step(&x, &labels).unwrap();
        e.params().to_vec()
    };
    assert_eq!(run(5), run(5));
    assert_ne!(run(5), run(6));
    let mut e = Engine::new(&spec, &init(&spec, 1), settings(Loss::Ce, Optimizer::Sgd, 8, 1)).unwrap();
    let slow: Network<f64> = Network::new(&spec, &init(&spec, 1));
    assert_close("evaluation without dropout", e.forward(&x).unwrap(), &slow.infer(&x64), 1e-5);
    assert_eq!(Activation::Softmax, spec.output_activation());
}

fn flopnet(dir: &std::path::Path, args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_flopnet")).current_dir(dir).args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{args:?}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

/// `train --save` keeps batch norm's running statistics under PyTorch's names and `eval` of the
/// file scores the test set as training did; a run stopped after an epoch and resumed from its
/// checkpoint ends on the same model file, byte for byte.
#[test]
fn running_statistics_survive_model_files_and_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let net = "1x28x28-conv3x3x4s2p1b0-bn:relu-[conv3x3x4p1b0-bn:relu-drop0.25-conv3x3x4p1b0-bn]:relu-gap-10";
    let common = ["train", net, "--batch", "200", "--seed", "3", "--threads", "2", "--optimizer", "momentum"];
    let args = |extra: &[&'static str]| -> Vec<&str> { common.iter().chain(extra).copied().collect() };
    let whole = flopnet(dir.path(), &args(&["--epochs", "2", "--save", "a.safetensors"]));
    flopnet(dir.path(), &args(&["--epochs", "1", "--checkpoint", "ck"]));
    flopnet(dir.path(), &args(&["--epochs", "2", "--resume", "ck", "--save", "b.safetensors"]));
    let (a, b) = (
        std::fs::read(dir.path().join("a.safetensors")).unwrap(),
        std::fs::read(dir.path().join("b.safetensors")).unwrap(),
    );
    assert!(a == b, "the resumed run ends on another model");

    let test = whole.lines().find(|l| l.starts_with("test: ")).expect("a test line");
    let eval = flopnet(dir.path(), &["eval", "--model", "a.safetensors"]);
    // "test: loss 0.8559, accuracy 70.50% over 1000 examples" and "loss 0.8559, accuracy 70.50% over 1,000 examples"
    let figures = |s: &str| {
        s.split_whitespace().filter(|w| w.ends_with(',') || w.ends_with('%')).map(String::from).collect::<Vec<_>>()
    };
    let score = eval.lines().find(|l| l.starts_with("loss ")).expect("a score line");
    assert_eq!(figures(test)[..2], figures(score)[..2], "{test} / {score}");

    let (spec, _, _, running) = flopnet::model::load_trained(&dir.path().join("a.safetensors")).unwrap();
    assert_eq!(spec, spec::parse(net, Defaults::default()).unwrap());
    // 5,400 training examples in batches of 200, two epochs: 54 batches through each batch norm.
    assert_eq!(running.batches, vec![54; 3]);
    assert!(running.values.iter().any(|&v| v != 0.0 && v != 1.0), "the statistics moved");
    let names: Vec<String> =
        safetensors::SafeTensors::deserialize(&a).unwrap().names().iter().map(|s| s.to_string()).collect();
    for name in [
        "layers.1.running_mean",
        "layers.1.running_var",
        "layers.1.num_batches_tracked",
        "layers.1.weight",
        "layers.1.bias",
    ] {
        assert!(names.iter().any(|n| n == name), "{name} missing from {names:?}");
    }
    assert!(!names.iter().any(|n| n == "layers.0.bias"), "a convolution without a bias stores none");
}
