//! Inverted dropout at rate p: while training, each value is kept with probability 1 − p and
//! scaled by 1/(1 − p), so that evaluation (which passes values through untouched) needs no
//! rescaling.
//!
//! Shapes: x, z, mask [B][...] (the mask holds 0 or 1/(1−p)). Forward: the scale 1/(1−p) once
//! per step (one division), then z = x·mask (one product per value). Backward: dx = δ·mask
//! (one product per value). Drawing the mask is random number generation, not arithmetic on
//! the network's values, and is not counted.

use crate::ops::Ops;
use crate::reference::Scalar;
use rand::Rng;

pub fn forward_cost(values: u128, b: u128) -> Ops {
    Ops { mul: b * values, div: 1, ..Ops::ZERO }
}

pub fn input_grad_cost(values: u128, b: u128) -> Ops {
    Ops { mul: b * values, ..Ops::ZERO }
}

/// (z, mask): each value kept with probability 1 − p.
pub fn forward<S: Scalar>(x: &[S], p: f64, rng: &mut impl Rng) -> (Vec<S>, Vec<S>) {
    let scale = S::one() / S::constant(1.0 - p);
    let mask: Vec<S> = x.iter().map(|_| if rng.r#gen::<f64>() < p { S::zero() } else { scale }).collect();
    (x.iter().zip(&mask).map(|(&v, &m)| v * m).collect(), mask)
}

pub fn input_grad<S: Scalar>(delta: &[S], mask: &[S]) -> Vec<S> {
    delta.iter().zip(mask).map(|(&d, &m)| d * m).collect()
}
