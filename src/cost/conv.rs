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
/// positions at least one of them reaches. `n_in` input positions, `n_out` outputs, kernel `k`,
/// `pad` zeros before the input. Closed form (sizes may be as large as a spec allows): every
/// pair, less those that hang over the padding on either side.
pub(crate) fn coverage(n_in: usize, n_out: usize, k: usize, stride: usize, pad: usize) -> (u128, u128) {
    let (n_in, n_out, k, s, p) = (n_in as i128, n_out as i128, k as i128, stride as i128, pad as i128);
    // Where the last window ends, in input coordinates; past n_in - 1 is the right overhang.
    let last = (n_out - 1) * s - p + k - 1;
    let inside = n_out * k - overhang(p, k, s, n_out) - overhang(last - (n_in - 1), k, s, n_out);
    // Windows that touch or overlap cover one unbroken stretch; spaced-out ones reach each
    // position at most once.
    let reached = if s <= k { (last.min(n_in - 1) + 1).max(0) } else { inside };
    (inside as u128, reached as u128)
}

/// Σ over the windows o = 0.. of min(k, max(0, p − o·s)): the pairs of `n_out` windows of `k`,
/// moved by `s`, that fall in `p` positions beyond one edge.
fn overhang(p: i128, k: i128, s: i128, n_out: i128) -> i128 {
    if p <= 0 {
        return 0;
    }
    // Windows reaching past the edge at all, and those lying wholly beyond it.
    let touching = n_out.min((p + s - 1) / s);
    let whole = if p >= k { touching.min((p - k) / s + 1) } else { 0 };
    let partial = |o: i128| o * (o - 1) / 2;
    whole * k + (touching - whole) * p - s * (partial(touching) - partial(whole))
}

/// (B·F·H'·W', C/g·kh·kw): the outputs and the window each one reads (g groups).
fn sizes(layer: &Layer, b: u128) -> (u128, u128) {
    let Kind::Conv2d(c) = layer.kind else { panic!("a conv2d layer was expected, got {}", layer.kind.name()) };
    (b * layer.outputs as u128, (layer.input.c / c.groups) as u128 * c.kh as u128 * c.kw as u128)
}

/// z = b + W ⋆ x, a = f(z): each output sums a C/g·kh·kw window of products and one bias
/// (without a bias, one addition fewer).
pub fn forward(layer: &Layer, b: u128) -> Ops {
    let Kind::Conv2d(c) = layer.kind else { panic!("a conv2d layer was expected, got {}", layer.kind.name()) };
    let (outs, window) = sizes(layer, b);
    let add = if c.bias { outs * window } else { outs * (window - 1) };
    let affine = Ops { mul: outs * window, add, mac: outs * window, ..Ops::ZERO };
    affine + activation::forward(layer.activation, b, layer.outputs as u128)
}

/// The backward pass for a batch of `b`; `first`: the layer reads the data, so dX is skipped.
pub fn backward(layer: &Layer, b: u128, first: bool) -> Backward {
    let Kind::Conv2d(c) = layer.kind else { panic!("a conv2d layer was expected, got {}", layer.kind.name()) };
    let (outs, window) = sizes(layer, b);
    let (f, positions) = (c.filters as u128, b * layer.output.h as u128 * layer.output.w as u128);
    let delta = activation::backward(layer.activation, b, layer.outputs as u128, false);
    // Each of the F·C/g·kh·kw weights sums B·H'·W' products.
    let weights = f * window;
    let weight_grad = Ops { mul: outs * window, add: (positions - 1) * weights, mac: outs * window, ..Ops::ZERO };
    let bias_grad = if c.bias { Ops { add: (positions - 1) * f, ..Ops::ZERO } } else { Ops::ZERO };
    let input_grad = if first {
        Ops::ZERO
    } else {
        // Each of the B·H'·W'·C·kh·kw column values sums the F/g products of its group;
        // col2im then adds every value that lands inside the image into its position, storing
        // the first.
        let (ph, pw) = c.pads();
        let (i, o) = (layer.input, layer.output);
        let (vh, rh) = coverage(i.h, o.h, c.kh, c.stride, ph);
        let (vw, rw) = coverage(i.w, o.w, c.kw, c.stride, pw);
        let col2im = b * i.c as u128 * (vh * vw - rh * rw);
        let (columns, per_group) = (positions * i.c as u128 * c.kh as u128 * c.kw as u128, f / c.groups as u128);
        Ops { mul: outs * window, add: columns * (per_group - 1) + col2im, mac: outs * window, ..Ops::ZERO }
    };
    Backward { delta, weight_grad, bias_grad, input_grad, ..Backward::default() }.totalled()
}

#[cfg(test)]
mod tests {
    use super::coverage;

    /// The closed form against counting every pair, over every small geometry.
    #[test]
    fn coverage_matches_counting() {
        for n_in in 1..9 {
            for k in 1..6 {
                for stride in 1..5 {
                    for pad in 0..4 {
                        if n_in + 2 * pad < k {
                            continue;
                        }
                        let n_out = (n_in + 2 * pad - k) / stride + 1;
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
                        let want = (inside, reached.iter().filter(|&&r| r).count() as u128);
                        assert_eq!(coverage(n_in, n_out, k, stride, pad), want, "n {n_in} k {k} s {stride} p {pad}");
                    }
                }
            }
        }
    }
}
