//! The cost of the optimizer: per parameter, and once per step.

use crate::ops::{FnCounts, Ops};
use crate::spec::Optimizer;

/// Updating `p` parameters.
pub fn per_params(opt: Optimizer, p: u128) -> Ops {
    match opt {
        // w = w - lr * g
        Optimizer::Sgd => Ops { mul: p, add: p, ..Ops::ZERO },
        // v = mu * v + g; w = w - lr * v
        Optimizer::Momentum => Ops { mul: 2 * p, add: 2 * p, ..Ops::ZERO },
        // m = b1 m + (1-b1) g                 2 mul 1 add
        // v = b2 v + (1-b2) g g               3 mul 1 add
        // d = sqrt(v) / sqrt(c2) + eps        1 sqrt 1 div 1 add
        // w = w - (lr / c1) * m / d           1 mul 1 div 1 add
        Optimizer::Adam => {
            Ops { mul: 6 * p, add: 4 * p, div: 2 * p, fns: FnCounts { sqrt: p, ..FnCounts::default() }, ..Ops::ZERO }
        }
    }
}

/// Scalars computed once per step, shared by every parameter.
pub fn per_step(opt: Optimizer) -> Ops {
    match opt {
        Optimizer::Sgd | Optimizer::Momentum => Ops::ZERO,
        // b1^t and b2^t by one multiplication each, c1 = 1 - b1^t and c2 = 1 - b2^t,
        // the step size lr / c1 and sqrt(c2).
        Optimizer::Adam => {
            Ops { mul: 2, add: 2, div: 1, fns: FnCounts { sqrt: 1, ..FnCounts::default() }, ..Ops::ZERO }
        }
    }
}
