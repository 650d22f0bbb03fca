//! Joins: the element-wise sum of k inputs of one shape (a residual connection), and the
//! concatenation of inputs along the channels (Inception, SqueezeNet, DenseNet).
//!
//! Shapes: each input x_i [B][C_i][P]; a sum writes z [B][C][P] (all C_i = C), a
//! concatenation z [B][ΣC_i][P], example by example with the inputs' channels in order.
//!
//! Backward through either is free: a sum hands its δ to every input unchanged, a
//! concatenation hands each input its own channels. (Where one tensor feeds several layers,
//! the gradients it receives are summed once, booked to the layer that produced it.)

use crate::ops::Ops;
use crate::reference::Scalar;
use crate::spec::Layer;

/// (k−1) additions per value of the sum.
pub fn add_cost(l: &Layer, k: usize, b: u128) -> Ops {
    Ops { add: (k as u128 - 1) * b * l.outputs as u128, ..Ops::ZERO }
}

/// z = x_1 + ... + x_k
pub fn add<S: Scalar>(inputs: &[&[S]]) -> Vec<S> {
    let (first, rest) = inputs.split_first().expect("a sum has an input");
    let mut z = first.to_vec();
    for x in rest {
        for (z, &v) in z.iter_mut().zip(x.iter()) {
            *z = *z + v;
        }
    }
    z
}

/// The inputs' channels stacked, example by example. `sizes`: each input's values per example.
pub fn concat<S: Scalar>(inputs: &[&[S]], sizes: &[usize]) -> Vec<S> {
    let batch = inputs[0].len() / sizes[0];
    let mut z = Vec::with_capacity(batch * sizes.iter().sum::<usize>());
    for e in 0..batch {
        for (x, &n) in inputs.iter().zip(sizes) {
            z.extend_from_slice(&x[e * n..(e + 1) * n]);
        }
    }
    z
}

/// Each input's share of a concatenation's gradient g [B][ΣC_i][P].
pub fn split<S: Scalar>(g: &[S], sizes: &[usize]) -> Vec<Vec<S>> {
    let total: usize = sizes.iter().sum();
    let batch = g.len() / total;
    let mut parts: Vec<Vec<S>> = sizes.iter().map(|&n| Vec::with_capacity(batch * n)).collect();
    for ge in g.chunks_exact(total) {
        let mut at = 0;
        for (part, &n) in parts.iter_mut().zip(sizes) {
            part.extend_from_slice(&ge[at..at + n]);
            at += n;
        }
    }
    parts
}

/// The sum of the k gradients a tensor read by k layers receives: (k−1) additions per value.
pub fn grad_sum_cost(values: u128, k: usize, b: u128) -> Ops {
    Ops { add: (k.max(1) as u128 - 1) * b * values, ..Ops::ZERO }
}
