//! The cost of the optimizer: per parameter, and once per step.

use crate::ops::{FnCounts, Ops};
use crate::spec::{Optimizer, UpdateRule};

/// Updating `p` parameters.
pub fn per_params(rule: impl Into<UpdateRule>, p: u128) -> Ops {
    let rule = rule.into();
    // Coupled weight decay, g ← g + λ·w: 1 mul 1 add, before the optimizer proper.
    let decay = if rule.coupled_decay { Ops { mul: p, add: p, ..Ops::ZERO } } else { Ops::ZERO };
    decay
        + match rule.optimizer {
            // w = w - lr * g
            Optimizer::Sgd => Ops { mul: p, add: p, ..Ops::ZERO },
            // v = mu * v + g; w = w - lr * v
            Optimizer::Momentum => Ops { mul: 2 * p, add: 2 * p, ..Ops::ZERO },
            // m = b1 m + (1-b1) g                 2 mul 1 add
            // v = b2 v + (1-b2) g g               3 mul 1 add
            // d = sqrt(v) / sqrt(c2) + eps        1 sqrt 1 div 1 add
            // w = w - (lr / c1) * m / d           1 mul 1 div 1 add
            Optimizer::Adam => adam(p),
            // w = w * (1 - lr λ)                  1 mul, then Adam's step
            Optimizer::AdamW => adam(p) + Ops { mul: p, ..Ops::ZERO },
        }
}

fn adam(p: u128) -> Ops {
    Ops { mul: 6 * p, add: 4 * p, div: 2 * p, fns: FnCounts { sqrt: p, ..FnCounts::default() }, ..Ops::ZERO }
}

/// Scalars computed once per step, shared by every parameter.
pub fn per_step(rule: impl Into<UpdateRule>) -> Ops {
    // b1^t and b2^t by one multiplication each, c1 = 1 - b1^t and c2 = 1 - b2^t,
    // the step size lr / c1 and sqrt(c2).
    let adam = Ops { mul: 2, add: 2, div: 1, fns: FnCounts { sqrt: 1, ..FnCounts::default() }, ..Ops::ZERO };
    match rule.into().optimizer {
        Optimizer::Sgd | Optimizer::Momentum => Ops::ZERO,
        Optimizer::Adam => adam,
        // and AdamW's factor 1 - lr λ (the rate may change every step).
        Optimizer::AdamW => adam + Ops { mul: 1, add: 1, ..Ops::ZERO },
    }
}
