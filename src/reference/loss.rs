//! Losses: the value over a batch and its gradient.
//!
//! `a` holds the network's outputs, [B][M]; `labels` the class of each example.

use super::scalar::Scalar;
use crate::spec::Loss;

/// Returns (loss, gradient). For cross-entropy the gradient is dL/dz of the softmax output
/// (the fused form every framework uses); for MSE it is dL/da.
pub fn loss<S: Scalar>(loss: Loss, a: &[S], labels: &[usize], m: usize) -> (S, Vec<S>) {
    match loss {
        Loss::Ce => cross_entropy(a, labels, m),
        Loss::Mse => mean_squared_error(a, labels, m),
    }
}

fn onehot<S: Scalar>(label: usize, j: usize) -> S {
    S::constant(if label == j { 1.0 } else { 0.0 })
}

/// L = -(1/B) sum_e ln p_{e,y_e};  dL/dz_ej = (p_ej - [j = y_e]) / B.
fn cross_entropy<S: Scalar>(p: &[S], labels: &[usize], m: usize) -> (S, Vec<S>) {
    let batch = labels.len();
    let logs: Vec<S> = labels.iter().enumerate().map(|(e, &y)| p[e * m + y].ln()).collect();
    let sum = logs[1..].iter().fold(logs[0], |s, &v| s + v);
    let value = -(sum / S::constant(batch as f64));
    let inv_b = S::one() / S::constant(batch as f64);
    let grad = p.iter().enumerate().map(|(k, &pk)| (pk - onehot(labels[k / m], k % m)) * inv_b).collect();
    (value, grad)
}

/// L = (1/(B M)) sum (a - y)^2 over one-hot targets y;  dL/da = 2 (a - y) / (B M).
fn mean_squared_error<S: Scalar>(a: &[S], labels: &[usize], m: usize) -> (S, Vec<S>) {
    let count = S::constant(a.len() as f64);
    let diff: Vec<S> = a.iter().enumerate().map(|(k, &ak)| ak - onehot(labels[k / m], k % m)).collect();
    let sum = diff[1..].iter().fold(diff[0] * diff[0], |s, &d| s + d * d);
    let value = sum / count;
    let scale = S::constant(2.0) / count;
    (value, diff.iter().map(|&d| d * scale).collect())
}
