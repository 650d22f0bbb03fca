//! The cost of one convolution layer: input C×H×W, F filters of kh×kw, stride s, padding
//! (ph, pw), output F×H'×W', over a batch of B examples.
//!
//! The counts are those of the im2col formulation (see `reference/conv.rs`): every window
//! position is a product, padded ones included (a multiplication by zero).

use super::activation;
use super::dense::Backward;
use crate::ops::Ops;
use crate::spec::{Kind, Layer};

/// Per axis: how many (output, kernel offset) pairs land inside the input, and how many input
/// positions at least one of them reaches. `n_in` input positions, `n_out` outputs, kernel `k`.
pub(crate) fn coverage(n_in: usize, n_out: usize, k: usize, stride: usize, pad: usize) -> (u128, u128) {
    let mut inside = 0u128;
    let mut reached = vec![false; n_in];
    for o in 0..n_out {
        for i in 0..k {
            if let Some(y) = (o * stride + i).checked_sub(pad).filter(|&y| y < n_in) {
                inside += 1;
                reached[y] = true;
            }
        }
    }
    (inside, reached.iter().filter(|&&r| r).count() as u128)
}

/// (B·F·H'·W', C·kh·kw): the outputs and the window each one reads.
fn sizes(layer: &Layer, b: u128) -> (u128, u128) {
    let Kind::Conv2d(c) = layer.kind else { panic!("a conv2d layer was expected, got {}", layer.kind.name()) };
    (b * layer.outputs as u128, (layer.input.c * c.kh * c.kw) as u128)
}

/// z = b + W ⋆ x, a = f(z): each output sums a C·kh·kw window of products and one bias.
pub fn forward(layer: &Layer, b: u128) -> Ops {
    let (outs, window) = sizes(layer, b);
    let affine = Ops { mul: outs * window, add: outs * window, mac: outs * window, ..Ops::ZERO };
    affine + activation::forward(layer.activation, b, layer.outputs as u128)
}

/// The backward pass for a batch of `b`; `first`: the layer reads the data, so dX is skipped.
pub fn backward(layer: &Layer, b: u128, first: bool) -> Backward {
    let Kind::Conv2d(c) = layer.kind else { panic!("a conv2d layer was expected, got {}", layer.kind.name()) };
    let (outs, window) = sizes(layer, b);
    let (f, positions) = (c.filters as u128, b * (layer.output.h * layer.output.w) as u128);
    let delta = activation::backward(layer.activation, b, layer.outputs as u128, false);
    // Each of the F·C·kh·kw weights sums B·H'·W' products.
    let weights = f * window;
    let weight_grad = Ops { mul: outs * window, add: (positions - 1) * weights, mac: outs * window, ..Ops::ZERO };
    let bias_grad = Ops { add: (positions - 1) * f, ..Ops::ZERO };
    let input_grad = if first {
        Ops::ZERO
    } else {
        // Each of the B·H'·W'·C·kh·kw column values sums F products; col2im then adds every
        // value that lands inside the image into its position, storing the first.
        let (ph, pw) = c.pads();
        let (i, o) = (layer.input, layer.output);
        let (vh, rh) = coverage(i.h, o.h, c.kh, c.stride, ph);
        let (vw, rw) = coverage(i.w, o.w, c.kw, c.stride, pw);
        let col2im = b * i.c as u128 * (vh * vw - rh * rw);
        Ops { mul: outs * window, add: positions * window * (f - 1) + col2im, mac: outs * window, ..Ops::ZERO }
    };
    Backward { delta, weight_grad, bias_grad, input_grad, total: delta + weight_grad + bias_grad + input_grad }
}
