//! What each activation costs, forward and backward, for a batch of `b` rows of `m` neurons.
//!
//! These are the formulas the reference engine's activation table (`reference/activation.rs`)
//! executes; `verify` proves the two agree.

use crate::ops::{FnCounts, Ops};
use crate::spec::Activation;

/// a = f(z) for b x m values. `act` counts the b*m applications.
pub fn forward(f: Activation, b: u128, m: u128) -> Ops {
    let n = b * m;
    let prim = match f {
        Activation::Identity => Ops::ZERO,
        // max(z, 0): one comparison.
        Activation::Relu => Ops { cmp: n, ..Ops::ZERO },
        // min(max(z, 0), 6): two.
        Activation::Relu6 => Ops { cmp: 2 * n, ..Ops::ZERO },
        // 0.01 z is formed, then selected by the sign of z.
        Activation::LeakyRelu => Ops { mul: n, cmp: n, ..Ops::ZERO },
        // 1 / (1 + exp(-z)); the negation is free.
        Activation::Sigmoid => Ops { add: n, div: n, fns: FnCounts { exp: n, ..FnCounts::default() }, ..Ops::ZERO },
        Activation::Tanh => Ops { fns: FnCounts { tanh: n, ..FnCounts::default() }, ..Ops::ZERO },
        // Per row: the max (m-1 comparisons), z - max (m), exp (m), their sum (m-1), m divisions.
        Activation::Softmax => Ops {
            cmp: b * (m - 1),
            add: b * (2 * m - 1),
            div: n,
            fns: FnCounts { exp: n, ..FnCounts::default() },
            ..Ops::ZERO
        },
    };
    Ops { act: n, ..prim }
}

/// delta = g (*) f'(z) for b x m values, given the incoming gradient g.
///
/// `from_ce`: the output softmax under cross-entropy, whose loss row already produced dL/dz,
/// so delta is g itself and costs nothing.
pub fn backward(f: Activation, b: u128, m: u128, from_ce: bool) -> Ops {
    let n = b * m;
    let prim = match f {
        Activation::Identity => Ops::ZERO,
        // g where z > 0, else 0: one comparison-and-select.
        Activation::Relu => Ops { cmp: n, ..Ops::ZERO },
        // g where 0 < a < 6, else 0: two comparisons.
        Activation::Relu6 => Ops { cmp: 2 * n, ..Ops::ZERO },
        // g where z > 0, else 0.01 g.
        Activation::LeakyRelu => Ops { mul: n, cmp: n, ..Ops::ZERO },
        // g * a * (1 - a).
        Activation::Sigmoid => Ops { mul: 2 * n, add: n, ..Ops::ZERO },
        // g * (1 - a * a).
        Activation::Tanh => Ops { mul: 2 * n, add: n, ..Ops::ZERO },
        Activation::Softmax if from_ce => Ops::ZERO,
        // Per row: s = sum_k g_k a_k (m mul, m-1 add); delta_j = a_j (g_j - s) (m add, m mul).
        Activation::Softmax => Ops { mul: 2 * n, add: b * (2 * m - 1), ..Ops::ZERO },
    };
    Ops { act_grad: n, ..prim }
}
