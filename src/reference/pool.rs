//! Max- and average-pooling, forward and backward, as plain loops over a batch.
//!
//! Shapes: x and dX [B][C][H][W], out and g [B][C][H'][W'] with H' = (H − k)/s + 1 (a window
//! that would run past the edge is dropped, as PyTorch does). Max pooling may pad and round up
//! ([`Pool`]): its windows then hold only the positions inside the input.

use super::scalar::Scalar;
use crate::spec::{Kind, Layer, Pool};

fn pool_of(layer: &Layer) -> Pool {
    match layer.kind {
        Kind::MaxPool(p) | Kind::AvgPool(p) => p,
        other => panic!("a pooling layer was expected, got {}", other.name()),
    }
}

/// Calls `visit(o, window)` for every output position `o` of one example, with the input
/// positions of its window in row-major order.
fn windows(layer: &Layer, mut visit: impl FnMut(usize, &[usize])) {
    let p = pool_of(layer);
    let (i, o) = (layer.input, layer.output);
    let mut window = Vec::with_capacity(p.k * p.k);
    for c in 0..o.c {
        for oy in 0..o.h {
            for ox in 0..o.w {
                window.clear();
                for dy in 0..p.k {
                    for dx in 0..p.k {
                        let y = (oy * p.stride + dy).checked_sub(p.pad).filter(|&y| y < i.h);
                        let x = (ox * p.stride + dx).checked_sub(p.pad).filter(|&x| x < i.w);
                        if let (Some(y), Some(x)) = (y, x) {
                            window.push((c * i.h + y) * i.w + x);
                        }
                    }
                }
                visit((c * o.h + oy) * o.w + ox, &window);
            }
        }
    }
}

/// Max-pooling: each output is its window's largest value (k²−1 comparisons); the index of the
/// first largest is kept for backward.
pub fn maxpool_forward<S: Scalar>(layer: &Layer, x: &[S]) -> (Vec<S>, Vec<usize>) {
    let batch = x.len() / layer.inputs;
    let mut out = vec![S::zero(); batch * layer.outputs];
    let mut arg = vec![0; batch * layer.outputs];
    for (e, xe) in x.chunks_exact(layer.inputs).enumerate() {
        windows(layer, |o, window| {
            let mut best = window[0];
            for &at in &window[1..] {
                if xe[at].greater(xe[best]) {
                    best = at;
                }
            }
            out[e * layer.outputs + o] = xe[best];
            arg[e * layer.outputs + o] = best;
        });
    }
    (out, arg)
}

/// Average-pooling: each output is its window's sum (k²−1 additions) times 1/k² (one product).
pub fn avgpool_forward<S: Scalar>(layer: &Layer, x: &[S]) -> Vec<S> {
    let p = pool_of(layer);
    let inv = S::constant(1.0 / (p.k * p.k) as f64);
    let batch = x.len() / layer.inputs;
    let mut out = vec![S::zero(); batch * layer.outputs];
    for (e, xe) in x.chunks_exact(layer.inputs).enumerate() {
        windows(layer, |o, window| {
            let sum = window[1..].iter().fold(xe[window[0]], |s, &at| s + xe[at]);
            out[e * layer.outputs + o] = sum * inv;
        });
    }
    out
}

/// Max-pooling's dX: each output's gradient goes to the input that won its window. Windows that
/// do not overlap (stride ≥ k) give each input at most one gradient, which is stored; when they
/// overlap, which inputs collect several depends on the data, so dX starts at zero and every
/// output's gradient is added: one addition per output.
pub fn maxpool_input_grad<S: Scalar>(layer: &Layer, arg: &[usize], g: &[S]) -> Vec<S> {
    let p = pool_of(layer);
    let batch = g.len() / layer.outputs;
    let mut dx = vec![S::zero(); batch * layer.inputs];
    for (e, (ge, ae)) in g.chunks_exact(layer.outputs).zip(arg.chunks_exact(layer.outputs)).enumerate() {
        let dxe = &mut dx[e * layer.inputs..(e + 1) * layer.inputs];
        for (&gv, &at) in ge.iter().zip(ae) {
            dxe[at] = if p.stride >= p.k { gv } else { dxe[at] + gv };
        }
    }
    dx
}

/// Average-pooling's dX: each output's gradient times 1/k² (one product) is spread over its
/// window; an input's first share is stored, each later one (overlapping windows) is added.
pub fn avgpool_input_grad<S: Scalar>(layer: &Layer, g: &[S]) -> Vec<S> {
    let p = pool_of(layer);
    let inv = S::constant(1.0 / (p.k * p.k) as f64);
    let batch = g.len() / layer.outputs;
    let mut dx = vec![S::zero(); batch * layer.inputs];
    let mut touched = vec![false; layer.inputs];
    for (ge, dxe) in g.chunks_exact(layer.outputs).zip(dx.chunks_exact_mut(layer.inputs)) {
        touched.fill(false);
        windows(layer, |o, window| {
            let share = ge[o] * inv;
            for &at in window {
                dxe[at] = if touched[at] { dxe[at] + share } else { share };
                touched[at] = true;
            }
        });
    }
    dx
}
