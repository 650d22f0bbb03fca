//! Batch normalization, PyTorch's `BatchNorm1d/2d` with momentum 0.1 and eps 1e-5.
//!
//! Shapes: x, z [B][C][P] (P = H·W, 1 after a dense layer), γ, β, running mean and variance
//! [C]. Per channel, over its n = B·P values:
//!
//! - training: μ = Σx/n, d = x − μ, σ² = Σd²/n, r = 1/√(σ²+eps), x̂ = d·r, z = γ·x̂ + β; the
//!   running mean and variance move 0.1 of the way to μ and to the unbiased n/(n−1)·σ²;
//! - evaluation: s = γ/√(var+eps), t = β − mean·s per channel, then z = x·s + t;
//! - backward (training): dβ = Σδ, dγ = Σδ·x̂, dx = (γ·r/n)·(n·δ − dβ − x̂·dγ).
//!
//! Products by constants of the algorithm (1/n, n, 0.9, 0.1·n/(n−1)) count one `mul` each,
//! and a difference counts one `add`, as everywhere in flopnet.

use crate::cost::Backward;
use crate::ops::{FnCounts, Ops};
use crate::reference::Scalar;
use crate::spec::Layer;

pub const MOMENTUM: f64 = 0.1;
pub const EPS: f64 = 1e-5;

/// (C, n = B·P) of a layer over a batch of `b`.
fn sizes(l: &Layer, b: u128) -> (u128, u128) {
    let c = l.input.c as u128;
    (c, b * (l.inputs as u128 / c))
}

/// Training mode's normalization and running statistics (the activation is counted apart).
pub fn forward_cost(l: &Layer, b: u128) -> Ops {
    let (c, n) = sizes(l, b);
    let sqrt = FnCounts { sqrt: c, ..FnCounts::default() };
    Ops { mul: c * (3 * n + 6), add: c * (4 * n + 1), div: c, fns: sqrt, ..Ops::ZERO }
}

/// Evaluation mode: one product and one addition per value, after a per-channel scale (a
/// square root and a division) and shift (a product and a difference).
pub fn inference_cost(l: &Layer, b: u128) -> Ops {
    let (c, n) = sizes(l, b);
    let sqrt = FnCounts { sqrt: c, ..FnCounts::default() };
    Ops { mul: c * (n + 1), add: c * (n + 2), div: c, fns: sqrt, ..Ops::ZERO }
}

/// dγ (weight_grad), dβ (bias_grad) and dx (input_grad, unless the layer reads the data); the
/// activation's delta is added by the caller.
pub fn backward_cost(l: &Layer, b: u128, first: bool) -> Backward {
    let (c, n) = sizes(l, b);
    let weight_grad = Ops { mul: c * n, add: c * (n - 1), ..Ops::ZERO };
    let bias_grad = Ops { add: c * (n - 1), ..Ops::ZERO };
    let input_grad = if first { Ops::ZERO } else { Ops { mul: c * (3 * n + 2), add: c * 2 * n, ..Ops::ZERO } };
    Backward { weight_grad, bias_grad, input_grad, ..Backward::default() }
}

/// What training mode keeps for backward, and the running statistics it computed.
#[derive(Clone, Debug)]
pub struct Saved<S> {
    /// x̂ [B][C][P]
    pub xhat: Vec<S>,
    /// 1/√(σ²+eps) [C]
    pub inv_std: Vec<S>,
    pub running_mean: Vec<S>,
    pub running_var: Vec<S>,
}

/// Training mode: z [B][C][P] from x, γ, β and the running statistics before this step.
pub fn forward<S: Scalar>(l: &Layer, x: &[S], gamma: &[S], beta: &[S], mean: &[S], var: &[S]) -> (Vec<S>, Saved<S>) {
    let c = l.input.c;
    let n = x.len() / c;
    let batch = x.len() / l.inputs;
    let mut z = vec![S::zero(); x.len()];
    let mut xhat = vec![S::zero(); x.len()];
    let (mut inv_std, mut running_mean, mut running_var) = (Vec::new(), Vec::new(), Vec::new());
    let unbiased = if n > 1 { n as f64 / (n - 1) as f64 } else { 1.0 };
    for ch in 0..c {
        let idx = channel(l, batch, ch);
        let sum = idx[1..].iter().fold(x[idx[0]], |s, &i| s + x[i]);
        let mu = sum * S::constant(1.0 / n as f64);
        let d: Vec<S> = idx.iter().map(|&i| x[i] - mu).collect();
        let sq = d[1..].iter().fold(d[0] * d[0], |s, &v| s + v * v);
        let var_b = sq * S::constant(1.0 / n as f64);
        let r = S::one() / (var_b + S::constant(EPS)).sqrt();
        for (&i, &di) in idx.iter().zip(&d) {
            xhat[i] = di * r;
            z[i] = gamma[ch] * xhat[i] + beta[ch];
        }
        inv_std.push(r);
        running_mean.push(S::constant(1.0 - MOMENTUM) * mean[ch] + S::constant(MOMENTUM) * mu);
        running_var.push(S::constant(1.0 - MOMENTUM) * var[ch] + S::constant(MOMENTUM * unbiased) * var_b);
    }
    (z, Saved { xhat, inv_std, running_mean, running_var })
}

/// Evaluation mode: z = x·s + t with s = γ/√(var+eps), t = β − mean·s.
pub fn infer<S: Scalar>(l: &Layer, x: &[S], gamma: &[S], beta: &[S], mean: &[S], var: &[S]) -> Vec<S> {
    let c = l.input.c;
    let p = l.inputs / c;
    let scale: Vec<S> = (0..c).map(|ch| gamma[ch] / (var[ch] + S::constant(EPS)).sqrt()).collect();
    let shift: Vec<S> = (0..c).map(|ch| beta[ch] - mean[ch] * scale[ch]).collect();
    x.iter().enumerate().map(|(i, &v)| v * scale[(i / p) % c] + shift[(i / p) % c]).collect()
}

/// Each channel's positions in a batch laid out [B][C][P].
fn channel(l: &Layer, batch: usize, ch: usize) -> Vec<usize> {
    let (c, p) = (l.input.c, l.inputs / l.input.c);
    (0..batch).flat_map(|e| (0..p).map(move |k| (e * c + ch) * p + k)).collect()
}

/// dγ [C] = Σ δ·x̂ over each channel, from δ [B][C][P].
pub fn gamma_grad<S: Scalar>(l: &Layer, delta: &[S], saved: &Saved<S>) -> Vec<S> {
    let batch = delta.len() / l.inputs;
    (0..l.input.c)
        .map(|ch| {
            let idx = channel(l, batch, ch);
            idx[1..].iter().fold(delta[idx[0]] * saved.xhat[idx[0]], |s, &i| s + delta[i] * saved.xhat[i])
        })
        .collect()
}

/// dβ [C] = Σ δ over each channel.
pub fn beta_grad<S: Scalar>(l: &Layer, delta: &[S]) -> Vec<S> {
    let batch = delta.len() / l.inputs;
    (0..l.input.c)
        .map(|ch| {
            let idx = channel(l, batch, ch);
            idx[1..].iter().fold(delta[idx[0]], |s, &i| s + delta[i])
        })
        .collect()
}

/// dx [B][C][P] = (γ·r/n)·(n·δ − dβ − x̂·dγ), from the parameter gradients just computed.
pub fn input_grad<S: Scalar>(
    l: &Layer,
    delta: &[S],
    gamma: &[S],
    saved: &Saved<S>,
    dgamma: &[S],
    dbeta: &[S],
) -> Vec<S> {
    let c = l.input.c;
    let p = l.inputs / c;
    let n = delta.len() / c;
    let k: Vec<S> = (0..c).map(|ch| gamma[ch] * saved.inv_std[ch] * S::constant(1.0 / n as f64)).collect();
    delta
        .iter()
        .zip(&saved.xhat)
        .enumerate()
        .map(|(i, (&d, &xh))| {
            let ch = (i / p) % c;
            k[ch] * (d * S::constant(n as f64) - dbeta[ch] - xh * dgamma[ch])
        })
        .collect()
}
