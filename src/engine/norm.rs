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
//!
//! Synchronized (`--sync-bn` under mpirun, given a `sync`): the per-channel sums (Σx with
//! the count, then Σ(x−μ)², and backward Σδ, Σδ·x̂ with the count) are summed over the ranks
//! before use, so μ, σ² and dx are those of the whole global batch, as PyTorch's SyncBatchNorm;
//! dγ and dβ stay this rank's shares (the gradient all-reduce adds them). That path takes a pass
//! per sum (the ranks' sums sit between them); without `sync` each channel is one task's pass.

// The `_imp` kernels take the dispatch's path type `M` without calling its multiply-add: they
// are compiled per path for its vector width only.
#![allow(clippy::extra_unused_type_parameters)]

use super::RankSum;
use super::activation;
use super::conv::{PaddedDelta, split_items};
use super::simd::{Madd, dispatch};
use super::team::{Parts, Team};
use crate::layers::batchnorm::{EPS, MOMENTUM};
use crate::spec::Activation;

/// `sync` lent for one call, to be used again after it.
pub fn reborrow<'s>(sync: &'s mut Option<RankSum<'_>>) -> Option<RankSum<'s>> {
    sync.as_mut().map(|f| &mut **f as RankSum<'s>)
}

/// Partial sums a pass keeps, interleaved: four 512-bit vectors of f64. (With eight, one vector,
/// each pass waited on an add's latency per eight values and ran well below the cache's speed.)
const LANES: usize = 32;

/// The partial sums added in a fixed tree (halves, then quarters, …).
#[inline(always)]
fn tree(mut acc: [f64; LANES]) -> f64 {
    let mut half = LANES / 2;
    while half > 0 {
        for k in 0..half {
            acc[k] += acc[k + half];
        }
        half /= 2;
    }
    acc[0]
}

/// Σ f(a, b) over pairs in f64, each of the two sums f gives in its own partial sums, in a fixed
/// order (lane k of every block of LANES values, then the tree).
#[inline(always)]
fn sums_of_pairs(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> (f64, f64)) -> (f64, f64) {
    let (mut s, mut t) = ([0f64; LANES], [0f64; LANES]);
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for k in 0..LANES {
            let (u, v) = f(x[k], y[k]);
            s[k] += u;
            t[k] += v;
        }
    }
    for (k, (&x, &y)) in ra.iter().zip(rb).enumerate() {
        let (u, v) = f(x, y);
        s[k] += u;
        t[k] += v;
    }
    (tree(s), tree(t))
}

/// Σ v in f64. (Through the pair helper with a second sum the compiler drops: a loop of its own
/// over one slice, the same order and bits, made batch norm's forward passes 25% slower on
/// resnet20, `flopnet bench resnet20 --input 3x32x32 --classes 10 --batch 128 --threads 1`,
/// its bn rows: 9.6–10.1 against 7.95–8.0 ms a step.)
#[inline(always)]
fn sum_imp<M: Madd>(v: &[f32]) -> f64 {
    sums_of_pairs(v, v, |x, _| (x as f64, 0.0)).0
}

/// Σ (v − μ)² in f64.
#[inline(always)]
fn centered_imp<M: Madd>(v: &[f32], mu: f64) -> f64 {
    sums_of_pairs(v, v, |x, _| {
        let d = x as f64 - mu;
        (d * d, 0.0)
    })
    .0
}

/// (Σ δ, Σ δ·x̂) in f64, with x̂ = (x − μ)·r, in one pass.
#[inline(always)]
fn grad_sums_imp<M: Madd>(d: &[f32], x: &[f32], mu: f32, r: f32) -> (f64, f64) {
    sums_of_pairs(d, x, |d, v| (d as f64, d as f64 * ((v - mu) * r) as f64))
}

/// z = (x − μ)·s + b, one value of a channel's normalized output.
#[inline(always)]
fn normalized(v: f32, mu: f32, s: f32, b: f32) -> f32 {
    (v - mu) * s + b
}

/// out = act(z [+ o]) with z = [`normalized`] x, in one pass, for the activations a batch norm
/// applies by value in the same pass ([`Clamp`]; others are a pass of their own after): the
/// bits of z stored, the sum's input added and the activation applied in passes apart.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn normalize_imp<M: Madd>(out: &mut [f32], x: &[f32], o: &[f32], mu: f32, s: f32, b: f32, clamp: Clamp) {
    #[inline(always)]
    fn each(out: &mut [f32], x: &[f32], o: &[f32], mu: f32, s: f32, b: f32, f: impl Fn(f32) -> f32) {
        if o.is_empty() {
            out.iter_mut().zip(x).for_each(|(z, &v)| *z = f(normalized(v, mu, s, b)));
        } else {
            out.iter_mut().zip(x).zip(o).for_each(|((z, &v), &w)| *z = f(normalized(v, mu, s, b) + w));
        }
    }
    match clamp {
        Clamp::None => each(out, x, o, mu, s, b, |z| z),
        Clamp::Relu => each(out, x, o, mu, s, b, |z| z.max(0.0)),
        Clamp::Relu6 => each(out, x, o, mu, s, b, activation::relu6),
    }
}

/// The activations [`normalize_imp`] applies itself (as `activation::forward` does).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Clamp {
    None,
    Relu,
    Relu6,
}

impl Clamp {
    /// The bound below which a value passes the activation (above 0): relu's none, relu6's 6;
    /// none without one.
    fn top(self) -> Option<f32> {
        match self {
            Clamp::None => None,
            Clamp::Relu => Some(f32::INFINITY),
            Clamp::Relu6 => Some(6.0),
        }
    }

    fn of(act: Activation) -> Option<Clamp> {
        match act {
            Activation::Identity => Some(Clamp::None),
            Activation::Relu => Some(Clamp::Relu),
            Activation::Relu6 => Some(Clamp::Relu6),
            _ => None,
        }
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

/// δ = 0 where the forward's output did not pass a relu (top = ∞) or relu6 (top = 6): where
/// z = [`normalized`] x (the forward's formula, the same bits) is not in 0 < z < top. The
/// output a is not read: z from x, which the backward streams anyway, saves reading it (a
/// quarter of a bn:relu backward's traffic). (Masking and summing in one pass, a block of
/// values at a time, ran no faster than the two passes.)
#[inline(always)]
fn relu_mask_imp<M: Madd>(d: &mut [f32], x: &[f32], mu: f32, s: f32, b: f32, top: f32) {
    for (g, &v) in d.iter_mut().zip(x) {
        let z = normalized(v, mu, s, b);
        if !(z > 0.0 && z < top) {
            *g = 0.0;
        }
    }
}

dispatch! { fn sum = sum_imp(v: &[f32]) -> f64 }
dispatch! { fn relu_mask = relu_mask_imp(d: &mut [f32], x: &[f32], mu: f32, s: f32, b: f32, top: f32) }
dispatch! { fn centered = centered_imp(v: &[f32], mu: f64) -> f64 }
dispatch! { fn grad_sums = grad_sums_imp(d: &[f32], x: &[f32], mu: f32, r: f32) -> (f64, f64) }
dispatch! {
    #[allow(clippy::too_many_arguments)]
    fn normalize = normalize_imp(out: &mut [f32], x: &[f32], o: &[f32], mu: f32, s: f32, b: f32, clamp: Clamp)
}

dispatch! {
    #[allow(clippy::too_many_arguments)]
    fn input_grad = input_grad_imp(out: &mut [f32], d: &[f32], x: &[f32], k: f32, mb: f32, mg: f32, mu: f32, r: f32)
}

/// [`input_grad_imp`] of one channel written into a convolution's padded δ (`rows`, from the
/// channel's first plane): each example's plane zeroed, then its rows; the same value for
/// each input as the plain pass.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn input_grad_padded_imp<M: Madd>(
    out: &mut [f32],
    d: &[f32],
    x: &[f32],
    k: f32,
    mb: f32,
    mg: f32,
    mu: f32,
    r: f32,
    rows: PaddedDelta,
) {
    let (h, w, wq) = (rows.h, rows.w, rows.wq);
    for ((plane, d), x) in out.chunks_exact_mut(rows.plane).zip(d.chunks_exact(h * w)).zip(x.chunks_exact(h * w)) {
        // Zeros before the first row, each row and the zeros up to the next, zeros after the last.
        plane[..rows.first].fill(0.0);
        for y in 0..h {
            let at = rows.first + y * wq;
            input_grad_imp::<M>(
                &mut plane[at..at + w],
                &d[y * w..(y + 1) * w],
                &x[y * w..(y + 1) * w],
                k,
                mb,
                mg,
                mu,
                r,
            );
            let next = if y + 1 < h { at + wq } else { rows.plane };
            plane[at + w..next].fill(0.0);
        }
    }
}

dispatch! {
    #[allow(clippy::too_many_arguments)]
    fn input_grad_padded = input_grad_padded_imp(
        out: &mut [f32], d: &[f32], x: &[f32], k: f32, mb: f32, mg: f32, mu: f32, r: f32, rows: PaddedDelta
    )
}

/// out = act(normalized x [+ o]) over one channel: in one pass where [`Clamp`] covers `act`,
/// else normalized (and summed) first, the activation after.
#[allow(clippy::too_many_arguments)]
fn normalize_channel(act: Activation, out: &mut [f32], x: &[f32], o: &[f32], mu: f32, s: f32, b: f32) {
    match Clamp::of(act) {
        Some(clamp) => normalize(out, x, o, mu, s, b, clamp),
        None => {
            normalize(out, x, o, mu, s, b, Clamp::None);
            let n = out.len();
            activation::forward(act, out, n);
        }
    }
}

/// The parameters and state of one batch-norm layer.
pub struct Norm<'a> {
    pub gamma: &'a [f32],
    pub beta: &'a [f32],
    /// Running mean [C] then running variance [C].
    pub running: &'a mut [f32],
    /// The batch's μ [C], r [C], scale γr [C] and shift β [C] ([`SAVED`] per channel), kept
    /// by training mode for the backward pass.
    pub saved: &'a mut [f32],
}

/// Values per channel a layer's `saved` holds (μ, r, the scale γr and the shift β).
pub const SAVED: usize = 4;

/// Per channel of x [C][n], `f` of the channel's values, in f64 (channels split across the team).
fn per_channel(c: usize, n: usize, team: &Team, f: &(dyn Fn(usize) -> f64 + Sync)) -> Vec<f64> {
    let mut out = vec![0f64; c];
    let op = Parts::of(&mut out);
    split_items(c, c * n, team, &|chs| {
        let op = &op;
        for ch in chs {
            // SAFETY: channel ch's value is this task's.
            unsafe { op.part(ch, 1)[0] = f(ch) };
        }
    });
    out
}

/// The part of the activation after a batch norm that it applies to each channel while it is
/// still in cache: the value-by-value part (`activation::by_value`; the caller applies a
/// softmax, which needs whole rows).
fn per_channel_act(act: Activation) -> Activation {
    activation::by_value(act).0
}

/// Whether [`train_forward`] and [`infer`] apply all of `act` themselves.
pub fn applies(act: Activation) -> bool {
    activation::by_value(act).1 == Activation::Identity
}

/// Training mode over x [C][n]: z = act(batch norm of x [+ other]), the saved values and the
/// running statistics' update; the statistics summed over the ranks by `sync` when given. (`act`
/// per [`applies`].) With `other` [C][n], a residual sum whose input the norm's output alone is
/// (`graph::fused_norms`) done in the same pass: the norm's own output is never written, and x
/// and the other input are read once, two streams of the tensor less than the two layers
/// apart. (The sum adds in the order the sum layer would: a + b and b + a are the same bits.)
#[allow(clippy::too_many_arguments)]
pub fn train_forward(
    nm: Norm,
    act: Activation,
    n: usize,
    x: &[f32],
    other: Option<&[f32]>,
    z: &mut [f32],
    team: &Team,
    sync: Option<RankSum>,
) {
    let act = per_channel_act(act);
    let c = nm.gamma.len();
    assert!(nm.saved.len() >= SAVED * c, "batch norm keeps {SAVED} values per channel");
    // Per channel: μ, Σ(x−μ)² and the count of values they are over.
    let stats: Option<(Vec<f64>, Vec<f64>, f64)> = sync.map(|s| {
        let mut sums = per_channel(c, n, team, &|ch| sum(&x[ch * n..(ch + 1) * n]));
        sums.push(n as f64);
        s(&mut sums);
        let total = sums[c];
        let mu: Vec<f64> = sums[..c].iter().map(|v| v / total).collect();
        let mut squares = per_channel(c, n, team, &|ch| centered(&x[ch * n..(ch + 1) * n], mu[ch]));
        s(&mut squares);
        (mu, squares, total)
    });
    let total = stats.as_ref().map_or(n as f64, |s| s.2);
    let unbiased = if total > 1.0 { total / (total - 1.0) } else { 1.0 };
    let (zp, rp, sp) = (Parts::of(z), Parts::of(nm.running), Parts::of(nm.saved));
    let (gamma, beta) = (nm.gamma, nm.beta);
    let stats = &stats;
    split_items(c, c * n, team, &|chs| {
        let (zp, rp, sp) = (&zp, &rp, &sp);
        for ch in chs {
            let xs = &x[ch * n..(ch + 1) * n];
            let (mu, var) = match stats {
                Some((mu, squares, total)) => (mu[ch], squares[ch] / total),
                None => {
                    let mu = sum(xs) / n as f64;
                    (mu, centered(xs, mu) / n as f64)
                }
            };
            let mu32 = mu as f32;
            let r = 1.0 / (var + EPS).sqrt();
            let scale = (gamma[ch] as f64 * r) as f32;
            let b = beta[ch];
            // SAFETY: channel ch of z, of the running statistics and of the saved ones is this task's.
            unsafe {
                let zs = zp.part(ch * n, n);
                let os = other.map_or(&[][..], |o| &o[ch * n..(ch + 1) * n]);
                normalize_channel(act, zs, xs, os, mu32, scale, b);
                let (mean, var_r) = (rp.part(ch, 1), rp.part(c + ch, 1));
                mean[0] = ((1.0 - MOMENTUM) * mean[0] as f64 + MOMENTUM * mu) as f32;
                var_r[0] = ((1.0 - MOMENTUM) * var_r[0] as f64 + MOMENTUM * unbiased * var) as f32;
                sp.part(ch, 1)[0] = mu32;
                sp.part(c + ch, 1)[0] = r as f32;
                sp.part(2 * c + ch, 1)[0] = scale;
                sp.part(3 * c + ch, 1)[0] = b;
            }
        }
    });
}

/// Evaluation mode over x [C][n], with the running statistics `running` (mean [C], var [C]),
/// then `other` added where given and `act` (per [`applies`]), as [`train_forward`].
#[allow(clippy::too_many_arguments)]
pub fn infer(
    gamma: &[f32],
    beta: &[f32],
    running: &[f32],
    act: Activation,
    n: usize,
    x: &[f32],
    other: Option<&[f32]>,
    z: &mut [f32],
    team: &Team,
) {
    let c = gamma.len();
    let act = per_channel_act(act);
    let zp = Parts::of(z);
    split_items(c, c * n, team, &|chs| {
        let zp = &zp;
        for ch in chs {
            let (mean, var) = (running[ch], running[c + ch]);
            let scale = (gamma[ch] as f64 / (var as f64 + EPS).sqrt()) as f32;
            let b = beta[ch];
            // SAFETY: channel ch of z is this task's.
            let zs = unsafe { zp.part(ch * n, n) };
            let os = other.map_or(&[][..], |o| &o[ch * n..(ch + 1) * n]);
            normalize_channel(act, zs, &x[ch * n..(ch + 1) * n], os, mean, scale, b);
        }
    });
}

/// Backward from δ [C][n], the gradient at the activation's output: the activation's derivative
/// applied to δ in place (per [`applies`]; a softmax's is the caller's; a relu's and a relu6's
/// from x and the saved scale and shift, [`relu_mask_imp`], others' from the output `a`),
/// then dγ, dβ [C] and, when asked, dx [C][n], written. `saved` is what [`train_forward`] kept.
/// dx from Σδ and Σδ·x̂ summed over the ranks by `sync` when given (dγ and dβ stay this rank's:
/// the gradient all-reduce adds them).
/// With `rows` ([`PaddedDelta`]), dx is written into the padded δ of the convolution before
/// this layer (dx then holds that copy, `rows.len` values, zero tail included), so that the
/// convolution's backward pass need not lay δ out itself; not synchronized.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    gamma: &[f32],
    saved: &[f32],
    n: usize,
    x: &[f32],
    (act, a): (Activation, &[f32]),
    delta: &mut [f32],
    dgamma: &mut [f32],
    dbeta: &mut [f32],
    mut dx: Option<&mut [f32]>,
    rows: Option<PaddedDelta>,
    team: &Team,
    sync: Option<RankSum>,
) {
    let c = gamma.len();
    // A channel's values of dx: its planes when laid out.
    let ch_len = rows.map_or(n, |r| n / (r.h * r.w) * r.plane);
    if let Some(rows) = rows {
        assert!(sync.is_none(), "a synchronized batch norm writes its input gradient as x lies");
        let dx = dx.as_deref_mut().expect("an input gradient to lay out");
        assert!(n.is_multiple_of(rows.h * rows.w) && dx.len() >= rows.len && rows.len >= c * ch_len);
        dx[c * ch_len..rows.len].fill(0.0);
    }
    let act = per_channel_act(act);
    assert!(saved.len() >= SAVED * c, "batch norm keeps {SAVED} values per channel");
    let top = Clamp::of(act).and_then(Clamp::top);
    let dp = Parts::of(delta);
    let (gp, bp) = (Parts::of(dgamma), Parts::of(dbeta));
    // Synchronized, the input gradient waits for the ranks' sums: a second pass.
    let (fused, later) = if sync.is_some() { (None, dx) } else { (dx.map(Parts::of), None) };
    // Synchronized: Σδ [C], Σδ·x̂ [C] and the count, in f64 for the ranks' sum.
    let mut sums = if later.is_some() { vec![0f64; 2 * c + 1] } else { Vec::new() };
    let fp = later.is_some().then(|| Parts::of(&mut sums));
    split_items(c, 2 * c * n, team, &|chs| {
        let (gp, bp, xp, fp, dp) = (&gp, &bp, &fused, &fp, &dp);
        for ch in chs {
            let (mu, r) = (saved[ch], saved[c + ch]);
            // SAFETY: channel ch of δ is this task's.
            let ds = unsafe { dp.part(ch * n, n) };
            let xs = &x[ch * n..(ch + 1) * n];
            match top {
                Some(top) => relu_mask(ds, xs, mu, saved[2 * c + ch], saved[3 * c + ch], top),
                None if act == Activation::Identity => {}
                None => activation::backward(act, &a[ch * n..(ch + 1) * n], ds, n),
            }
            let ds = &*ds;
            let (db, dg) = grad_sums(ds, xs, mu, r);
            // SAFETY: channel ch of dγ, dβ and dx is this task's.
            unsafe {
                gp.part(ch, 1)[0] = dg as f32;
                bp.part(ch, 1)[0] = db as f32;
                if let Some(fp) = fp {
                    fp.part(ch, 1)[0] = db;
                    fp.part(c + ch, 1)[0] = dg;
                }
                if let Some(xp) = xp {
                    let k = gamma[ch] * r;
                    let (mb, mg) = ((db / n as f64) as f32, (dg / n as f64) as f32);
                    match rows {
                        Some(rows) => input_grad_padded(xp.part(ch * ch_len, ch_len), ds, xs, k, mb, mg, mu, r, rows),
                        None => input_grad(xp.part(ch * n, n), ds, xs, k, mb, mg, mu, r),
                    }
                }
            }
        }
    });
    let (Some(dx), Some(s)) = (later, sync) else { return };
    sums[2 * c] = n as f64;
    s(&mut sums);
    let total = sums[2 * c];
    let xp = Parts::of(dx);
    split_items(c, c * n, team, &|chs| {
        let (xp, dp) = (&xp, &dp);
        for ch in chs {
            let (mu, r) = (saved[ch], saved[c + ch]);
            // SAFETY: channel ch of δ is this task's (read only now).
            let (xs, ds) = (&x[ch * n..(ch + 1) * n], unsafe { &*dp.part(ch * n, n) });
            let k = gamma[ch] * r;
            let (mb, mg) = ((sums[ch] / total) as f32, (sums[c + ch] / total) as f32);
            // SAFETY: channel ch of dx is this task's.
            input_grad(unsafe { xp.part(ch * n, n) }, ds, xs, k, mb, mg, mu, r);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// The input gradient written into a convolution's padded δ is the plain one laid out, bit
    /// for bit: every value of the copy written (it starts NaN), zeros around the rows and
    /// after the planes, and dγ, dβ unchanged; behind a relu, on one thread and two.
    #[test]
    fn an_input_gradient_laid_out_is_the_plain_one_in_place() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let (c, batch, h, w) = (3, 4, 5, 7);
        // Rows 8 apart from (1, 1) in planes of 7 rows, and a tail of 20 zeros.
        let rows = PaddedDelta { at: 0, len: c * batch * 56 + 20, plane: 56, wq: 8, first: 9, h, w };
        let n = batch * h * w;
        let x: Vec<f32> = (0..c * n).map(|_| rng.gen_range(-2.0..2.0)).collect();
        let delta: Vec<f32> = (0..c * n).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let gamma: Vec<f32> = (0..c).map(|_| rng.gen_range(0.5..1.5)).collect();
        // μ, r, scale and shift per channel (the relu mask reads the last two).
        let mut saved = vec![0.0; SAVED * c];
        for ch in 0..c {
            let (mu, r) = (rng.gen_range(-0.5..0.5), rng.gen_range(0.5..2.0));
            saved[ch] = mu;
            saved[c + ch] = r;
            saved[2 * c + ch] = gamma[ch] * r;
            saved[3 * c + ch] = rng.gen_range(-0.5..0.5);
        }
        for threads in [1, 2] {
            let team = Team::new(threads, || {}).unwrap();
            let run = |rows: Option<PaddedDelta>| {
                let (mut d, mut dg, mut db) = (delta.clone(), vec![f32::NAN; c], vec![f32::NAN; c]);
                let mut dx = vec![f32::NAN; rows.map_or(c * n, |r| r.len)];
                let act = (Activation::Relu, &[][..]);
                backward(&gamma, &saved, n, &x, act, &mut d, &mut dg, &mut db, Some(&mut dx), rows, &team, None);
                (dx, dg, db)
            };
            let (plain, dg, db) = run(None);
            let (laid, dg2, db2) = run(Some(rows));
            assert!(plain.iter().all(|v| v.is_finite()), "{threads} threads: the plain input gradient");
            assert!(laid == rows.lay(&plain), "{threads} threads: the laid-out input gradient");
            assert!(dg2 == dg && db2 == db, "{threads} threads: dγ and dβ");
        }
    }
}
