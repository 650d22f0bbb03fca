//! Random convolutional networks for the property tests (each test file that needs them says
//! `mod common;`).

#![allow(dead_code)]

use flopnet::spec::{Activation, Conv, Kind, Layer, Loss, Padding, Pool, Shape, Spec};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub const HIDDEN: [Activation; 5] =
    [Activation::Identity, Activation::Relu, Activation::LeakyRelu, Activation::Sigmoid, Activation::Tanh];

/// A small random CNN: an image of up to 3 × max_side × max_side, one to three convolution or pooling layers
/// (every stride, padding and kernel shape the spec allows, overlapping pools included), then
/// one or two dense layers. `max_side` bounds the image's height and width.
pub fn random_cnn(rng: &mut impl Rng, loss: Loss, max_side: usize) -> Spec {
    let input = Shape::new(rng.gen_range(1..=3), rng.gen_range(1..=max_side), rng.gen_range(1..=max_side));
    let mut layers = Vec::new();
    let mut shape = input;
    let spatial = rng.gen_range(1..=3);
    while layers.len() < spatial {
        let kind = match rng.gen_range(0..4) {
            0 | 1 => {
                let (kh, kw) = (rng.gen_range(1..=4), rng.gen_range(1..=4));
                let stride = rng.gen_range(1..=3);
                let padding = if stride == 1 && kh % 2 == 1 && kw % 2 == 1 && rng.gen_bool(0.3) {
                    Padding::Same
                } else {
                    Padding::Fixed(rng.gen_range(0..=2))
                };
                Kind::Conv2d(Conv::plain(kh, kw, rng.gen_range(1..=4), stride, padding))
            }
            2 => Kind::MaxPool(Pool::new(rng.gen_range(1..=3), rng.gen_range(1..=3))),
            _ => Kind::AvgPool(Pool::new(rng.gen_range(1..=3), rng.gen_range(1..=3))),
        };
        let act = if matches!(kind, Kind::Conv2d(_)) { HIDDEN[rng.gen_range(0..5)] } else { Activation::Identity };
        if let Ok(l) = Layer::after(shape, kind, 0, act) {
            shape = l.output;
            layers.push(l);
        }
    }
    let dense = rng.gen_range(1..=2);
    for i in 0..dense {
        let last = i + 1 == dense;
        let outputs = rng.gen_range(1..=6);
        let act = match (last, loss) {
            (true, Loss::Ce) => Activation::Softmax,
            (true, Loss::Mse) => [Activation::Identity, Activation::Sigmoid, Activation::Tanh][rng.gen_range(0..3)],
            _ => HIDDEN[rng.gen_range(0..5)],
        };
        let l = Layer::after(shape, Kind::Dense, outputs, act).expect("a dense layer fits any shape");
        shape = l.output;
        layers.push(l);
    }
    Spec::new(input, layers)
}

/// One random block of a graph on `c` channels of a `side`×`side` map; returns its text and the
/// channels and side after it.
fn block(rng: &mut ChaCha8Rng, c: usize, side: usize, acts: &[&str]) -> (String, usize, usize) {
    let act = |rng: &mut ChaCha8Rng| acts[rng.gen_range(0..acts.len())];
    match rng.gen_range(0..8) {
        // A residual block on the same shape, identity shortcut.
        0 => {
            let g = if c.is_multiple_of(2) && rng.gen_bool(0.5) { format!("g{}", c / 2) } else { String::new() };
            (format!("[conv3x3x{c}p1{g}b0-bn:{}-conv1x1x{c}]:{}", act(rng), act(rng)), c, side)
        }
        // A stage change: stride 2, twice the channels, a projection or zero-padding shortcut.
        1 if side >= 2 => {
            let short = if rng.gen_bool(0.5) { "proj" } else { "pad" };
            (format!("[conv3x3x{}s2p1b0-bn:{}|{short}]:{}", 2 * c, act(rng), act(rng)), 2 * c, side.div_ceil(2))
        }
        // Three branches summed: the block's input is read three times (fan-out).
        2 => (format!("[conv1x1x{c}:{}|bn:{}|]", act(rng), act(rng)), c, side),
        // A concatenation of two branches, or of the input and one branch (DenseNet).
        3 => {
            if rng.gen_bool(0.5) {
                (format!("(conv1x1x2:{}|conv3x3x1p1:{})", act(rng), act(rng)), 3, side)
            } else {
                (format!("(bn:{}-conv3x3x2p1b0)", act(rng)), c + 2, side)
            }
        }
        // A depthwise convolution and batch normalization.
        4 => (format!("conv3x3x{c}p1g{c}b0-bn:{}", act(rng)), c, side),
        5 => ("drop0.3".to_string(), c, side),
        6 if side >= 3 => {
            let p = Pool { k: 3, stride: 2, pad: 1, ceil: true };
            ("maxpool3s2p1c".to_string(), c, p.outputs(side))
        }
        _ => {
            let out = rng.gen_range(1..=side);
            (format!("adaptavg{out}x{out}"), c, out)
        }
    }
}

/// A random graph as a compact spec, ending in global pooling or a dense layer.
pub fn random_graph(seed: u64, acts: &[&str], loss: Loss) -> Spec {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (mut c, mut side) = (rng.gen_range(1..=3), rng.gen_range(2..=6));
    let mut text = format!("{c}x{side}x{side}");
    for _ in 0..rng.gen_range(1..=4) {
        let (b, c2, s2) = block(&mut rng, c, side, acts);
        text += &format!("-{b}");
        (c, side) = (c2, s2);
    }
    let out = if loss == Loss::Ce { "softmax" } else { "identity" };
    text += &if rng.gen_bool(0.5) {
        format!("-gap:{}-{}:{out}", acts[0], rng.gen_range(2..=4))
    } else {
        format!("-conv1x1x3:{}-gap:{out}", acts[0])
    };
    flopnet::spec::parse(&text, flopnet::spec::Defaults { hidden: Activation::Tanh, output: Activation::Identity })
        .unwrap_or_else(|e| panic!("{text}: {e}"))
}

/// |got - want| <= tol * max|want| over the tensor: relative to the tensor's scale.
pub fn assert_close(what: &str, got: &[f32], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-30);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!((g as f64 - w).abs() <= tol * scale, "{what}[{i}]: engine {g} reference {w} (scale {scale})");
    }
}
