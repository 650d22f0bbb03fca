//! One convolution layer, forward and backward, as plain loops over a batch.
//!
//! Shapes (row-major, one example after another): x [B][C][H][W], w [F][C/g][kh][kw] (PyTorch's
//! `nn.Conv2d` layout, g groups), b [F] (empty without a bias), z, a, g and delta
//! [B][F][H'][W'], where H' = (H + 2·ph − kh)/s + 1. With g groups, filter f reads the C/g
//! channels of group f/(F/g) only.
//!
//! The loops follow the im2col formulation the fast engine uses: every window position is a
//! product, including those that fall on the zero padding (they multiply by zero), so the counts
//! are those of the matrix products an im2col engine performs.

use super::activation;
use super::scalar::Scalar;
use crate::spec::{Conv, Kind, Layer};

/// The convolution's geometry, unpacked once.
struct Geometry {
    c: usize,
    /// Channels per group, and filters per group.
    cg: usize,
    fg: usize,
    h: usize,
    w: usize,
    f: usize,
    oh: usize,
    ow: usize,
    kh: usize,
    kw: usize,
    s: usize,
    ph: usize,
    pw: usize,
}

impl Geometry {
    fn of(layer: &Layer) -> Geometry {
        let Kind::Conv2d(conv @ Conv { kh, kw, filters, stride, groups, .. }) = layer.kind else {
            panic!("a conv2d layer was expected, got {}", layer.kind.name())
        };
        let (ph, pw) = conv.pads();
        let (i, o) = (layer.input, layer.output);
        let (cg, fg) = (i.c / groups, filters / groups);
        Geometry { c: i.c, cg, fg, h: i.h, w: i.w, f: filters, oh: o.h, ow: o.w, kh, kw, s: stride, ph, pw }
    }

    /// The input row and column a window position reads, or None on the padding.
    fn source(&self, oy: usize, ox: usize, i: usize, j: usize) -> Option<(usize, usize)> {
        let y = (oy * self.s + i).checked_sub(self.ph).filter(|&y| y < self.h)?;
        let x = (ox * self.s + j).checked_sub(self.pw).filter(|&x| x < self.w)?;
        Some((y, x))
    }

    /// Where W_f(c,i,j) is, c counted within the filter's group.
    fn weight(&self, f: usize, c: usize, i: usize, j: usize) -> usize {
        ((f * self.cg + c) * self.kh + i) * self.kw + j
    }

    /// The first input channel filter f reads.
    fn first_channel(&self, f: usize) -> usize {
        f / self.fg * self.cg
    }
}

/// z_f(oy,ox) = b_f + sum over c, i, j of W_f(c,i,j) x_c(oy·s+i−ph, ox·s+j−pw), then a = f(z);
/// c runs over the filter's group, and without a bias the sum starts at its first product.
pub fn conv_forward<S: Scalar>(layer: &Layer, x: &[S], w: &[S], b: &[S]) -> (Vec<S>, Vec<S>) {
    let g = Geometry::of(layer);
    let batch = x.len() / layer.inputs;
    let mut z = Vec::with_capacity(batch * layer.outputs);
    for xe in x.chunks_exact(layer.inputs) {
        for f in 0..g.f {
            let c0 = g.first_channel(f);
            for oy in 0..g.oh {
                for ox in 0..g.ow {
                    let mut sum = b.get(f).copied();
                    for c in 0..g.cg {
                        for i in 0..g.kh {
                            for j in 0..g.kw {
                                let v = match g.source(oy, ox, i, j) {
                                    Some((y, xx)) => xe[((c0 + c) * g.h + y) * g.w + xx],
                                    None => S::zero(),
                                };
                                let p = S::mac(w[g.weight(f, c, i, j)], v);
                                sum = Some(sum.map_or(p, |s| s + p));
                            }
                        }
                    }
                    z.push(sum.expect("a window holds a product"));
                }
            }
        }
    }
    let mut a = vec![S::zero(); z.len()];
    for (ze, ae) in z.chunks_exact(layer.outputs).zip(a.chunks_exact_mut(layer.outputs)) {
        activation::forward(layer.activation, ze, ae);
    }
    (z, a)
}

/// dW_f(c,i,j) = sum over examples and output positions of delta_f(oy,ox) · x_c(window):
/// B·H'·W' products, one fewer additions, per weight.
pub fn conv_weight_grad<S: Scalar>(layer: &Layer, x: &[S], delta: &[S]) -> Vec<S> {
    let g = Geometry::of(layer);
    let batch = x.len() / layer.inputs;
    let mut dw = Vec::with_capacity(layer.weight_count());
    for f in 0..g.f {
        let c0 = g.first_channel(f);
        for c in c0..c0 + g.cg {
            for i in 0..g.kh {
                for j in 0..g.kw {
                    let mut sum: Option<S> = None;
                    for e in 0..batch {
                        let (xe, de) = (&x[e * layer.inputs..], &delta[e * layer.outputs..]);
                        for oy in 0..g.oh {
                            for ox in 0..g.ow {
                                let v = match g.source(oy, ox, i, j) {
                                    Some((y, xx)) => xe[(c * g.h + y) * g.w + xx],
                                    None => S::zero(),
                                };
                                let p = S::mac(de[(f * g.oh + oy) * g.ow + ox], v);
                                sum = Some(sum.map_or(p, |s| s + p));
                            }
                        }
                    }
                    dw.push(sum.expect("a conv layer has at least one output position"));
                }
            }
        }
    }
    dw
}

/// db_f = sum over examples and output positions of delta_f(oy,ox).
pub fn conv_bias_grad<S: Scalar>(layer: &Layer, delta: &[S]) -> Vec<S> {
    let g = Geometry::of(layer);
    let plane = g.oh * g.ow;
    (0..g.f)
        .map(|f| {
            let mut terms = delta.chunks_exact(layer.outputs).flat_map(|de| &de[f * plane..(f + 1) * plane]);
            let first = *terms.next().expect("at least one output position");
            terms.fold(first, |s, &d| s + d)
        })
        .collect()
}

/// dX as im2col computes it: for every window position, the column value
/// dcol = sum over the filters of c's group of delta_f(oy,ox) W_f(c,i,j) (F/g products, F/g−1
/// additions, padded positions included), then added into the input position it came from
/// (col2im); a position's first contribution is stored, each later one costs an addition,
/// padded ones are dropped.
pub fn conv_input_grad<S: Scalar>(layer: &Layer, w: &[S], delta: &[S]) -> Vec<S> {
    let g = Geometry::of(layer);
    let batch = delta.len() / layer.outputs;
    let mut dx = vec![S::zero(); batch * layer.inputs];
    let mut touched = vec![false; layer.inputs];
    for (de, dxe) in delta.chunks_exact(layer.outputs).zip(dx.chunks_exact_mut(layer.inputs)) {
        touched.fill(false);
        for oy in 0..g.oh {
            for ox in 0..g.ow {
                for c in 0..g.c {
                    let (f0, cl) = (c / g.cg * g.fg, c % g.cg);
                    for i in 0..g.kh {
                        for j in 0..g.kw {
                            let term = |f: usize| S::mac(de[(f * g.oh + oy) * g.ow + ox], w[g.weight(f, cl, i, j)]);
                            let col = (f0 + 1..f0 + g.fg).fold(term(f0), |s, f| s + term(f));
                            if let Some((y, x)) = g.source(oy, ox, i, j) {
                                let at = (c * g.h + y) * g.w + x;
                                dxe[at] = if touched[at] { dxe[at] + col } else { col };
                                touched[at] = true;
                            }
                        }
                    }
                }
            }
        }
    }
    dx
}
