//! Every activation and its derivative, side by side, on one row of a batch.

use super::scalar::{Scalar, Tally};
use crate::spec::{Activation, LEAKY_SLOPE};

/// a = f(z) for one example's row of neurons.
pub fn forward<S: Scalar>(f: Activation, z: &[S], a: &mut [S]) {
    S::tally(Tally::Act(z.len()));
    match f {
        Activation::Identity => a.copy_from_slice(z),
        Activation::Relu => {
            for (a, &z) in a.iter_mut().zip(z) {
                *a = z.max(S::zero());
            }
        }
        Activation::Relu6 => {
            for (a, &z) in a.iter_mut().zip(z) {
                // min(v, 6) = −max(−v, −6): negation is free.
                *a = -((-z.max(S::zero())).max(S::constant(-6.0)));
            }
        }
        Activation::LeakyRelu => {
            for (a, &z) in a.iter_mut().zip(z) {
                let leak = S::constant(LEAKY_SLOPE) * z;
                *a = if z.is_positive() { z } else { leak };
            }
        }
        Activation::Sigmoid => {
            for (a, &z) in a.iter_mut().zip(z) {
                *a = S::one() / (S::one() + (-z).exp());
            }
        }
        Activation::Tanh => {
            for (a, &z) in a.iter_mut().zip(z) {
                *a = z.tanh();
            }
        }
        Activation::Softmax => {
            // Shifting by the row's max keeps exp from overflowing; it changes nothing else.
            let top = z[1..].iter().fold(z[0], |m, &v| m.max(v));
            for (a, &z) in a.iter_mut().zip(z) {
                *a = (z - top).exp();
            }
            let sum = a[1..].iter().fold(a[0], |s, &v| s + v);
            for a in a.iter_mut() {
                *a = *a / sum;
            }
        }
    }
}

/// delta = g (*) f'(z) for one row, from the pre-activation z, the output a and dL/da = g.
///
/// `from_ce`: the output softmax under cross-entropy, where the loss already handed back
/// dL/dz; delta is g.
pub fn backward<S: Scalar>(f: Activation, z: &[S], a: &[S], g: &[S], delta: &mut [S], from_ce: bool) {
    S::tally(Tally::ActGrad(z.len()));
    match f {
        Activation::Identity => delta.copy_from_slice(g),
        Activation::Softmax if from_ce => delta.copy_from_slice(g),
        Activation::Relu => {
            for ((d, &z), &g) in delta.iter_mut().zip(z).zip(g) {
                *d = if z.is_positive() { g } else { S::zero() };
            }
        }
        Activation::Relu6 => {
            for ((d, &a), &g) in delta.iter_mut().zip(a).zip(g) {
                // Both comparisons are made, whatever the first one says.
                let (above, below) = (a.is_positive(), S::constant(6.0).greater(a));
                *d = if above & below { g } else { S::zero() };
            }
        }
        Activation::LeakyRelu => {
            for ((d, &z), &g) in delta.iter_mut().zip(z).zip(g) {
                let leak = S::constant(LEAKY_SLOPE) * g;
                *d = if z.is_positive() { g } else { leak };
            }
        }
        // sigmoid'(z) = a (1 - a)
        Activation::Sigmoid => {
            for ((d, &a), &g) in delta.iter_mut().zip(a).zip(g) {
                *d = g * a * (S::one() - a);
            }
        }
        // tanh'(z) = 1 - a^2
        Activation::Tanh => {
            for ((d, &a), &g) in delta.iter_mut().zip(a).zip(g) {
                *d = g * (S::one() - a * a);
            }
        }
        // The softmax Jacobian: delta_j = a_j (g_j - sum_k g_k a_k).
        Activation::Softmax => {
            let s = (1..a.len()).fold(g[0] * a[0], |s, k| s + g[k] * a[k]);
            for ((d, &a), &g) in delta.iter_mut().zip(a).zip(g) {
                *d = a * (g - s);
            }
        }
    }
}
