//! Small vector kernels: the products too small for a matrix-multiply crate to pay off, and the
//! elementwise optimizer updates. Each keeps its summation order fixed, so results are bitwise
//! repeatable.

use super::simd::{Madd, dispatch};

// Eight 8-wide accumulators: enough independent chains to hide the FMA latency.
const LANES: usize = 64;

#[inline(always)]
fn dot_imp<M: Madd>(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for k in 0..LANES {
            acc[k] = M::madd(x[k], y[k], acc[k]);
        }
    }
    for (k, (&x, &y)) in ra.iter().zip(rb).enumerate() {
        acc[k] = M::madd(x, y, acc[k]);
    }
    // A fixed tree keeps the sum independent of how the compiler vectorised the loop.
    let mut w = LANES;
    while w > 1 {
        w /= 2;
        for k in 0..w {
            acc[k] += acc[k + w];
        }
    }
    acc[0]
}

#[inline(always)]
fn axpy_imp<M: Madd>(alpha: f32, x: &[f32], y: &mut [f32]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y = M::madd(alpha, x, *y);
    }
}

#[inline(always)]
#[allow(clippy::extra_unused_type_parameters)] // the dispatch macro passes one to every kernel
fn scale_into_imp<M: Madd>(alpha: f32, x: &[f32], y: &mut [f32]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y = alpha * x;
    }
}

// The fused updates round g = d·x on its own, as the product that would have stored it does, so
// a fused step and a stored-gradient step give the same bits.
#[inline(always)]
fn sgd_outer_imp<M: Madd>(w: &mut [f32], x: &[f32], d: f32, lr: f32) {
    for (w, &x) in w.iter_mut().zip(x) {
        *w = M::madd(-lr, d * x, *w);
    }
}

#[inline(always)]
fn momentum_outer_imp<M: Madd>(w: &mut [f32], v: &mut [f32], x: &[f32], d: f32, lr: f32, mu: f32) {
    for ((w, v), &x) in w.iter_mut().zip(v.iter_mut()).zip(x) {
        *v = M::madd(mu, *v, d * x);
        *w = M::madd(-lr, *v, *w);
    }
}

#[inline(always)]
fn sgd_imp<M: Madd>(w: &mut [f32], g: &[f32], lr: f32) {
    for (w, &g) in w.iter_mut().zip(g) {
        *w = M::madd(-lr, g, *w);
    }
}

#[inline(always)]
fn momentum_imp<M: Madd>(w: &mut [f32], v: &mut [f32], g: &[f32], lr: f32, mu: f32) {
    for ((w, v), &g) in w.iter_mut().zip(v.iter_mut()).zip(g) {
        *v = M::madd(mu, *v, g);
        *w = M::madd(-lr, *v, *w);
    }
}

// Coupled weight decay (PyTorch's SGD `weight_decay`): the optimizer sees g + λ·w, formed as one
// multiply-add from the weight before its update.
#[inline(always)]
fn sgd_decay_imp<M: Madd>(w: &mut [f32], g: &[f32], lr: f32, wd: f32) {
    for (w, &g) in w.iter_mut().zip(g) {
        let g = M::madd(wd, *w, g);
        *w = M::madd(-lr, g, *w);
    }
}

#[inline(always)]
fn momentum_decay_imp<M: Madd>(w: &mut [f32], v: &mut [f32], g: &[f32], lr: f32, mu: f32, wd: f32) {
    for ((w, v), &g) in w.iter_mut().zip(v.iter_mut()).zip(g) {
        let g = M::madd(wd, *w, g);
        *v = M::madd(mu, *v, g);
        *w = M::madd(-lr, *v, *w);
    }
}

/// Adam's scalars for one step.
#[derive(Clone, Copy, Debug)]
pub struct AdamStep {
    pub b1: f32,
    pub b2: f32,
    pub eps: f32,
    /// lr / (1 - b1^t).
    pub step_size: f32,
    /// 1 / sqrt(1 - b2^t).
    pub inv_sqrt_c2: f32,
    /// AdamW's decoupled decay: the weights are scaled by 1 − lr·λ before Adam's step (as
    /// `torch.optim.AdamW`); `None` for Adam.
    pub keep: Option<f32>,
    /// Adam's coupled decay λ (`--weight-decay` with adam: g + λ·w enters the moments, as
    /// PyTorch's `Adam(weight_decay=λ)`); 0 for none.
    pub decay: f32,
}

/// Adam's (or AdamW's) per-parameter work.
#[inline(always)]
fn adam_imp<M: Madd>(w: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32], s: AdamStep) {
    // The moments' update and the step's direction m / (sqrt(v / c2) + eps).
    let direction = |m: &mut f32, v: &mut f32, g: f32| {
        *m = M::madd(s.b1, *m, (1.0 - s.b1) * g);
        *v = M::madd(s.b2, *v, (1.0 - s.b2) * g * g);
        *m / (v.sqrt() * s.inv_sqrt_c2 + s.eps)
    };
    let each = w.iter_mut().zip(m.iter_mut()).zip(v.iter_mut()).zip(g);
    match s.keep {
        None if s.decay != 0.0 => each.for_each(|(((w, m), v), &g)| {
            let g = M::madd(s.decay, *w, g);
            *w -= s.step_size * direction(m, v, g)
        }),
        None => each.for_each(|(((w, m), v), &g)| *w -= s.step_size * direction(m, v, g)),
        Some(keep) => each.for_each(|(((w, m), v), &g)| *w = *w * keep - s.step_size * direction(m, v, g)),
    }
}

dispatch! {
    /// Sum of a_i b_i.
    pub fn dot = dot_imp(a: &[f32], b: &[f32]) -> f32
}
dispatch! {
    /// y += alpha x.
    pub fn axpy = axpy_imp(alpha: f32, x: &[f32], y: &mut [f32])
}
dispatch! {
    /// y = alpha x.
    pub fn scale_into = scale_into_imp(alpha: f32, x: &[f32], y: &mut [f32])
}
dispatch! {
    /// w -= lr g.
    pub fn sgd = sgd_imp(w: &mut [f32], g: &[f32], lr: f32)
}
dispatch! {
    /// w -= lr g for the gradient row g = d x of one example (not stored).
    pub fn sgd_outer = sgd_outer_imp(w: &mut [f32], x: &[f32], d: f32, lr: f32)
}
dispatch! {
    /// v = mu v + g; w -= lr v for the gradient row g = d x of one example (not stored).
    pub fn momentum_outer = momentum_outer_imp(w: &mut [f32], v: &mut [f32], x: &[f32], d: f32, lr: f32, mu: f32)
}
dispatch! {
    /// v = mu v + g; w -= lr v.
    pub fn momentum = momentum_imp(w: &mut [f32], v: &mut [f32], g: &[f32], lr: f32, mu: f32)
}
dispatch! {
    /// w -= lr (g + wd w).
    pub fn sgd_decay = sgd_decay_imp(w: &mut [f32], g: &[f32], lr: f32, wd: f32)
}
dispatch! {
    /// v = mu v + (g + wd w); w -= lr v.
    pub fn momentum_decay = momentum_decay_imp(w: &mut [f32], v: &mut [f32], g: &[f32], lr: f32, mu: f32, wd: f32)
}
dispatch! {
    /// One Adam (or AdamW) update of every parameter in `w`.
    pub fn adam_step = adam_imp(w: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32], s: AdamStep)
}

/// One Adam update of every parameter in `w` ([`adam_step`] without decay).
#[allow(clippy::too_many_arguments)]
pub fn adam(
    w: &mut [f32],
    m: &mut [f32],
    v: &mut [f32],
    g: &[f32],
    b1: f32,
    b2: f32,
    eps: f32,
    step_size: f32,
    inv_sqrt_c2: f32,
) {
    adam_step(w, m, v, g, AdamStep { b1, b2, eps, step_size, inv_sqrt_c2, keep: None, decay: 0.0 });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_and_axpy_agree_with_naive_loops() {
        for n in [0, 1, 7, 16, 33, 784] {
            let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
            let naive: f64 = a.iter().zip(&b).map(|(&x, &y)| x as f64 * y as f64).sum();
            assert!((dot(&a, &b) as f64 - naive).abs() < 1e-4 * (1.0 + naive.abs()), "n={n}");
            let mut y = b.clone();
            axpy(2.0, &a, &mut y);
            for i in 0..n {
                assert!((y[i] - (b[i] + 2.0 * a[i])).abs() < 1e-6);
            }
        }
    }
}
