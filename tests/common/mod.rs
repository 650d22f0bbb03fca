//! Random convolutional networks for the property tests (each test file that needs them says
//! `mod common;`).

#![allow(dead_code)]

use flopnet::spec::{Activation, Conv, Kind, Layer, Loss, Padding, Pool, Shape, Spec};
use rand::Rng;

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
