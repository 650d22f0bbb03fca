//! Batch normalization for the engine, PyTorch's `BatchNorm1d/2d` (momentum 0.1, eps 1e-5) as
//! `layers::batchnorm` defines it, on channel-major tensors: x, z, δ [C][B][P], so each
//! channel's n = B·P values are one contiguous run. γ, β, the running mean and variance [C].
//!
//! - training: μ = Σx/n, σ² = Σ(x−μ)²/n (two passes, sums in f64), r = 1/√(σ²+eps),
//!   z = (x−μ)·γr + β; the running mean and variance move 0.1 of the way to μ and n/(n−1)·σ²;
//!   μ and r are kept for the backward pass;
//! - evaluation: z = (x−mean)·γ/√(var+eps) + β;
//! - backward: dβ = Σδ, dγ = Σδ·x̂ (f64 sums), dx = γr·(δ − dβ/n − x̂·dγ/n) with x̂ = (x−μ)·r.
//!
//! Channels split across the team; each channel's sums run on one thread in a fixed order, so
//! results do not depend on the thread count. The per-channel passes are compiled for the SIMD
//! path in use (`simd::dispatch`) without fused multiply-adds, so every path gives the same bits.

// The `_imp` kernels take the dispatch's path type `M` without calling its multiply-add: they
// are compiled per path for its vector width only.
#![allow(clippy::extra_unused_type_parameters)]

use super::conv::split_items;
use super::simd::{Madd, dispatch};
use super::team::Team;
use crate::layers::batchnorm::{EPS, MOMENTUM};

struct Ptr(*mut f32);
// SAFETY: every task writes the channels it was given, which no other task touches.
unsafe impl Sync for Ptr {}

impl Ptr {
    /// Values `at..at + len` of the buffer.
    ///
    /// SAFETY: the caller's task owns that range alone and the buffer holds it.
    #[allow(clippy::mut_from_ref)]
    unsafe fn part(&self, at: usize, len: usize) -> &mut [f32] {
        unsafe { std::slice::from_raw_parts_mut(self.0.add(at), len) }
    }
}

/// Σ v in f64, eight interleaved partial sums added in a fixed tree.
#[inline(always)]
fn sum_imp<M: Madd>(v: &[f32]) -> f64 {
    let mut acc = [0f64; 8];
    let chunks = v.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for k in 0..8 {
            acc[k] += c[k] as f64;
        }
    }
    for (k, &r) in rest.iter().enumerate() {
        acc[k] += r as f64;
    }
    ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]))
}

/// Σ f(a, b) over pairs, in f64, in the same fixed order as [`sum`].
#[inline(always)]
fn sum_pairs(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f64) -> f64 {
    let mut acc = [0f64; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            acc[k] += f(x[k], y[k]);
        }
    }
    for (k, (&x, &y)) in ra.iter().zip(rb).enumerate() {
        acc[k] += f(x, y);
    }
    ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]))
}

/// Σ (v − μ)² in f64.
#[inline(always)]
fn centered_imp<M: Madd>(v: &[f32], mu: f64) -> f64 {
    sum_pairs(v, v, |x, _| {
        let d = x as f64 - mu;
        d * d
    })
}

/// (Σ δ, Σ δ·x̂) in f64, with x̂ = (x − μ)·r.
#[inline(always)]
fn grad_sums_imp<M: Madd>(d: &[f32], x: &[f32], mu: f32, r: f32) -> (f64, f64) {
    (sum_imp::<M>(d), sum_pairs(d, x, |d, v| d as f64 * ((v - mu) * r) as f64))
}

/// out = (x − μ)·s + b.
#[inline(always)]
fn scale_shift_imp<M: Madd>(out: &mut [f32], x: &[f32], mu: f32, s: f32, b: f32) {
    for (o, &v) in out.iter_mut().zip(x) {
        *o = (v - mu) * s + b;
    }
}

/// dx = k·(δ − mb − (x − μ)·r·mg).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn input_grad_imp<M: Madd>(out: &mut [f32], d: &[f32], x: &[f32], k: f32, mb: f32, mg: f32, mu: f32, r: f32) {
    for ((o, &d), &v) in out.iter_mut().zip(d).zip(x) {
        *o = k * (d - mb - (v - mu) * r * mg);
    }
}

dispatch! { fn sum = sum_imp(v: &[f32]) -> f64 }
dispatch! { fn centered = centered_imp(v: &[f32], mu: f64) -> f64 }
dispatch! { fn grad_sums = grad_sums_imp(d: &[f32], x: &[f32], mu: f32, r: f32) -> (f64, f64) }
dispatch! { fn scale_shift = scale_shift_imp(out: &mut [f32], x: &[f32], mu: f32, s: f32, b: f32) }
dispatch! {
    #[allow(clippy::too_many_arguments)]
    fn input_grad = input_grad_imp(out: &mut [f32], d: &[f32], x: &[f32], k: f32, mb: f32, mg: f32, mu: f32, r: f32)
}

/// The parameters and state of one batch-norm layer.
pub struct Norm<'a> {
    pub gamma: &'a [f32],
    pub beta: &'a [f32],
    /// Running mean [C] then running variance [C].
    pub running: &'a mut [f32],
    /// The batch's μ [C] then r [C], kept by training mode for the backward pass.
    pub saved: &'a mut [f32],
}

/// Training mode over x [C][n]: z, the saved μ and r, and the running statistics' update.
pub fn train_forward(nm: Norm, n: usize, x: &[f32], z: &mut [f32], team: &Team) {
    let c = nm.gamma.len();
    let unbiased = if n > 1 { n as f64 / (n - 1) as f64 } else { 1.0 };
    let (zp, rp, sp) = (Ptr(z.as_mut_ptr()), Ptr(nm.running.as_mut_ptr()), Ptr(nm.saved.as_mut_ptr()));
    let (gamma, beta) = (nm.gamma, nm.beta);
    split_items(c, c * n, team, &|chs| {
        let (zp, rp, sp) = (&zp, &rp, &sp);
        for ch in chs {
            let xs = &x[ch * n..(ch + 1) * n];
            let mu = sum(xs) / n as f64;
            let mu32 = mu as f32;
            let var = centered(xs, mu) / n as f64;
            let r = 1.0 / (var + EPS).sqrt();
            let scale = (gamma[ch] as f64 * r) as f32;
            let b = beta[ch];
            // SAFETY: channel ch of z, of the running statistics and of the saved ones is this task's.
            unsafe {
                scale_shift(zp.part(ch * n, n), xs, mu32, scale, b);
                let (mean, var_r) = (rp.part(ch, 1), rp.part(c + ch, 1));
                mean[0] = ((1.0 - MOMENTUM) * mean[0] as f64 + MOMENTUM * mu) as f32;
                var_r[0] = ((1.0 - MOMENTUM) * var_r[0] as f64 + MOMENTUM * unbiased * var) as f32;
                sp.part(ch, 1)[0] = mu32;
                sp.part(c + ch, 1)[0] = r as f32;
            }
        }
    });
}

/// Evaluation mode over x [C][n], with the running statistics `running` (mean [C], var [C]).
pub fn infer(gamma: &[f32], beta: &[f32], running: &[f32], n: usize, x: &[f32], z: &mut [f32], team: &Team) {
    let c = gamma.len();
    let zp = Ptr(z.as_mut_ptr());
    split_items(c, c * n, team, &|chs| {
        let zp = &zp;
        for ch in chs {
            let (mean, var) = (running[ch], running[c + ch]);
            let scale = (gamma[ch] as f64 / (var as f64 + EPS).sqrt()) as f32;
            let b = beta[ch];
            // SAFETY: channel ch of z is this task's.
            scale_shift(unsafe { zp.part(ch * n, n) }, &x[ch * n..(ch + 1) * n], mean, scale, b);
        }
    });
}

/// Backward from δ [C][n] (the activation's derivative applied): dγ, dβ [C] and, when asked,
/// dx [C][n], written. `saved` is what [`train_forward`] kept.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    gamma: &[f32],
    saved: &[f32],
    n: usize,
    x: &[f32],
    delta: &[f32],
    dgamma: &mut [f32],
    dbeta: &mut [f32],
    dx: Option<&mut [f32]>,
    team: &Team,
) {
    let c = gamma.len();
    let (gp, bp) = (Ptr(dgamma.as_mut_ptr()), Ptr(dbeta.as_mut_ptr()));
    let xp = dx.map(|d| Ptr(d.as_mut_ptr()));
    split_items(c, 2 * c * n, team, &|chs| {
        let (gp, bp, xp) = (&gp, &bp, &xp);
        for ch in chs {
            let (mu, r) = (saved[ch], saved[c + ch]);
            let (xs, ds) = (&x[ch * n..(ch + 1) * n], &delta[ch * n..(ch + 1) * n]);
            let (db, dg) = grad_sums(ds, xs, mu, r);
            // SAFETY: channel ch of dγ, dβ and dx is this task's.
            unsafe {
                gp.part(ch, 1)[0] = dg as f32;
                bp.part(ch, 1)[0] = db as f32;
                if let Some(xp) = xp {
                    let k = gamma[ch] * r;
                    let (mb, mg) = ((db / n as f64) as f32, (dg / n as f64) as f32);
                    input_grad(xp.part(ch * n, n), ds, xs, k, mb, mg, mu, r);
                }
            }
        }
    });
}
