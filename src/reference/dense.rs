//! One dense layer, forward and backward, as plain loops over a batch.
//!
//! Shapes (row-major): x [B][N] inputs, w [M][N] (row j holds neuron j's weights, PyTorch's
//! `nn.Linear` layout), b [M], z and a [B][M], g and delta [B][M].

use super::activation;
use super::scalar::Scalar;
use crate::spec::Layer;

/// z_j = b_j + sum_i W_ji x_i, then a_j = f(z_j), for every example. Returns (z, a).
pub fn dense_forward<S: Scalar>(layer: &Layer, x: &[S], w: &[S], b: &[S]) -> (Vec<S>, Vec<S>) {
    let (n, m) = (layer.inputs, layer.outputs);
    let batch = x.len() / n;
    let mut z = Vec::with_capacity(batch * m);
    for xe in x.chunks_exact(n) {
        for j in 0..m {
            let wj = &w[j * n..(j + 1) * n];
            let zj = (0..n).fold(b[j], |sum, i| sum + S::mac(wj[i], xe[i]));
            z.push(zj);
        }
    }
    let mut a = vec![S::zero(); batch * m];
    for (ze, ae) in z.chunks_exact(m).zip(a.chunks_exact_mut(m)) {
        activation::forward(layer.activation, ze, ae);
    }
    (z, a)
}

/// delta = g (*) f'(z), row by row.
pub fn dense_delta<S: Scalar>(layer: &Layer, z: &[S], a: &[S], g: &[S], from_ce: bool) -> Vec<S> {
    let m = layer.outputs;
    let mut delta = vec![S::zero(); g.len()];
    for (((ze, ae), ge), de) in
        z.chunks_exact(m).zip(a.chunks_exact(m)).zip(g.chunks_exact(m)).zip(delta.chunks_exact_mut(m))
    {
        activation::backward(layer.activation, ze, ae, ge, de, from_ce);
    }
    delta
}

/// dW_ji = sum over examples e of delta_ej x_ei: B products, B-1 additions per weight.
pub fn dense_weight_grad<S: Scalar>(layer: &Layer, x: &[S], delta: &[S]) -> Vec<S> {
    let (n, m) = (layer.inputs, layer.outputs);
    let batch = x.len() / n;
    let mut dw = Vec::with_capacity(m * n);
    for j in 0..m {
        for i in 0..n {
            let first = S::mac(delta[j], x[i]);
            dw.push((1..batch).fold(first, |s, e| s + S::mac(delta[e * m + j], x[e * n + i])));
        }
    }
    dw
}

/// db_j = sum over examples e of delta_ej.
pub fn dense_bias_grad<S: Scalar>(layer: &Layer, delta: &[S]) -> Vec<S> {
    let m = layer.outputs;
    let batch = delta.len() / m;
    (0..m).map(|j| (1..batch).fold(delta[j], |s, e| s + delta[e * m + j])).collect()
}

/// dx_ei = sum over neurons j of delta_ej W_ji: M products, M-1 additions per input.
pub fn dense_input_grad<S: Scalar>(layer: &Layer, w: &[S], delta: &[S]) -> Vec<S> {
    let (n, m) = (layer.inputs, layer.outputs);
    let mut dx = Vec::with_capacity(delta.len() / m * n);
    for de in delta.chunks_exact(m) {
        for i in 0..n {
            let first = S::mac(de[0], w[i]);
            dx.push((1..m).fold(first, |s, j| s + S::mac(de[j], w[j * n + i])));
        }
    }
    dx
}
