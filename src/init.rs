//! Initial weights, shared by both engines so that they start from the same numbers.
//!
//! He (normal, std sqrt(2/N)) before ReLU-like activations, Xavier/Glorot (uniform,
//! limit sqrt(6/(N+M))) before the others; biases start at zero. Values are drawn in f64 and
//! rounded to f32, so the f32 engine and the f64 reference hold identical starting weights.

use crate::spec::{Activation, Kind, Layer, Spec};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

/// One layer's parameters: weights [M][N] (or [F][C][kh][kw]) row-major, then biases [M] (or
/// [F]); both empty for pooling.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerParams {
    pub weight: Vec<f64>,
    pub bias: Vec<f64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    He,
    Xavier,
}

pub fn scheme(act: Activation) -> Scheme {
    match act {
        Activation::Relu | Activation::LeakyRelu => Scheme::He,
        _ => Scheme::Xavier,
    }
}

/// Weights drawn from the layer's fans (N and M for dense, C·kh·kw and F·kh·kw for a
/// convolution); pooling layers hold nothing and draw nothing.
fn layer(l: &Layer, rng: &mut ChaCha8Rng) -> LayerParams {
    if l.kind == Kind::BatchNorm {
        // PyTorch's start: scale 1, shift 0.
        return LayerParams { weight: vec![1.0; l.weight_count()], bias: vec![0.0; l.bias_count()] };
    }
    let (n, m) = l.fans();
    let count = l.weight_count();
    let round = |v: f64| v as f32 as f64;
    let weight = match scheme(l.activation) {
        Scheme::He => {
            let normal = Normal::new(0.0, (2.0 / n as f64).sqrt()).expect("a positive std");
            (0..count).map(|_| round(normal.sample(rng))).collect()
        }
        Scheme::Xavier => {
            let limit = (6.0 / (n + m) as f64).sqrt();
            (0..count).map(|_| round(rng.gen_range(-limit..limit))).collect()
        }
    };
    LayerParams { weight, bias: vec![0.0; l.bias_count()] }
}

/// Every layer's starting parameters; the same seed always gives the same values.
pub fn init(spec: &Spec, seed: u64) -> Vec<LayerParams> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    spec.layers.iter().map(|l| layer(l, &mut rng)).collect()
}
