//! He et al.'s parameter-free shortcut (option A of "Deep Residual Learning", CIFAR-10):
//! keep every s-th row and column, then append zero channels up to C'.
//!
//! Shapes: x [B][C][H][W], z [B][C'][⌈H/s⌉][⌈W/s⌉]. Forward and backward move data and do
//! no arithmetic; the gradient of x is the matching slice of δ, zeros between the kept
//! positions.

use crate::reference::Scalar;
use crate::spec::Layer;

pub fn forward<S: Scalar>(l: &Layer, x: &[S], stride: usize) -> Vec<S> {
    let (i, o) = (l.input, l.output);
    let mut z = Vec::with_capacity(x.len() / l.inputs * l.outputs);
    for xe in x.chunks_exact(l.inputs) {
        for c in 0..o.c {
            for y in 0..o.h {
                for xx in 0..o.w {
                    z.push(if c < i.c { xe[(c * i.h + y * stride) * i.w + xx * stride] } else { S::zero() });
                }
            }
        }
    }
    z
}

pub fn input_grad<S: Scalar>(l: &Layer, g: &[S], stride: usize) -> Vec<S> {
    let (i, o) = (l.input, l.output);
    let mut dx = vec![S::zero(); g.len() / l.outputs * l.inputs];
    for (ge, dxe) in g.chunks_exact(l.outputs).zip(dx.chunks_exact_mut(l.inputs)) {
        for c in 0..i.c {
            for y in 0..o.h {
                for xx in 0..o.w {
                    dxe[(c * i.h + y * stride) * i.w + xx * stride] = ge[(c * o.h + y) * o.w + xx];
                }
            }
        }
    }
    dx
}
