//! The cost of the loss: its value and its gradient, for a batch of `b` rows of `m` outputs.

use crate::ops::{FnCounts, Ops};
use crate::spec::Loss;

pub fn cost(loss: Loss, b: u128, m: u128) -> Ops {
    match loss {
        // Value: -ln p_y per row (b ln), summed (b-1 add) and averaged (1 div).
        // Gradient w.r.t. z: (p - onehot) (b*m add) times 1/b (1 div, b*m mul).
        Loss::Ce => {
            Ops { add: b * m + b - 1, mul: b * m, div: 2, fns: FnCounts { ln: b, ..FnCounts::default() }, ..Ops::ZERO }
        }
        // Value: d = a - y (b*m add), d*d (b*m mul), summed (b*m-1 add), averaged (1 div).
        // Gradient: d times 2/(b*m) (1 div, b*m mul).
        Loss::Mse => Ops { add: 2 * b * m - 1, mul: 2 * b * m, div: 2, ..Ops::ZERO },
    }
}
