//! The cost of a pooling layer, k×k windows at stride s, over a batch of B examples. Pooling
//! has no parameters and no activation: its backward pass is dX alone.

use super::conv::coverage;
use super::dense::Backward;
use crate::ops::Ops;
use crate::spec::{Kind, Layer};

/// Max: k²−1 comparisons per output (with padding or ceil mode, one fewer than the window's
/// positions inside the input). Average: k²−1 additions and one product (by 1/k²).
pub fn forward(layer: &Layer, b: u128) -> Ops {
    let outs = b * layer.outputs as u128;
    match layer.kind {
        Kind::MaxPool(p) => {
            let (i, o) = (layer.input, layer.output);
            let (vh, _) = coverage(i.h, o.h, p.k, p.stride, p.pad);
            let (vw, _) = coverage(i.w, o.w, p.k, p.stride, p.pad);
            Ops { cmp: b * i.c as u128 * vh * vw - outs, ..Ops::ZERO }
        }
        Kind::AvgPool(p) => Ops { add: outs * (p.k as u128 * p.k as u128 - 1), mul: outs, ..Ops::ZERO },
        other => panic!("a pooling layer was expected, got {}", other.name()),
    }
}

/// dX, unless the layer reads the data (`first`).
pub fn backward(layer: &Layer, b: u128, first: bool) -> Backward {
    let outs = b * layer.outputs as u128;
    let input_grad = match layer.kind {
        _ if first => Ops::ZERO,
        // Routed to each window's winner: stored when windows do not overlap, added into a
        // zeroed dX (one addition per output) when they do.
        Kind::MaxPool(p) if p.stride >= p.k => Ops::ZERO,
        Kind::MaxPool(_) => Ops { add: outs, ..Ops::ZERO },
        // One product per output (g/k²), then each share after an input's first is added.
        Kind::AvgPool(p) => {
            let (i, o) = (layer.input, layer.output);
            let (vh, rh) = coverage(i.h, o.h, p.k, p.stride, 0);
            let (vw, rw) = coverage(i.w, o.w, p.k, p.stride, 0);
            Ops { mul: outs, add: b * i.c as u128 * (vh * vw - rh * rw), ..Ops::ZERO }
        }
        other => panic!("a pooling layer was expected, got {}", other.name()),
    };
    Backward { input_grad, ..Backward::default() }.totalled()
}
