//! Global average pooling (C×H×W → C) and PyTorch's adaptive average pooling to a fixed
//! oh×ow, whose windows for output row i span input rows ⌊i·H/oh⌋ to ⌈(i+1)·H/oh⌉ (and
//! likewise for columns): they cover every input position and may overlap.
//!
//! Shapes: x [B][C][H][W], z [B][C][oh][ow] (oh = ow = 1 for global pooling).
//! Forward: each output sums its window (area − 1 additions) and takes one product by 1/area.
//! Backward: one product per output (g/area), then each input position adds the shares after
//! its first (none when the windows tile the input).

use crate::ops::Ops;
use crate::reference::Scalar;
use crate::spec::{Kind, Layer, Shape};

/// The start and end of each of `out` windows over `n` positions.
fn windows(n: usize, out: usize) -> Vec<(usize, usize)> {
    (0..out).map(|i| (i * n / out, ((i + 1) * n).div_ceil(out))).collect()
}

/// Output height and width of a global or adaptive average pooling layer.
fn target(l: &Layer) -> (usize, usize) {
    match l.kind {
        Kind::AdaptiveAvgPool(h, w) => (h, w),
        Kind::GlobalAvgPool => (1, 1),
        other => panic!("an average pooling to a fixed size was expected, got {}", other.name()),
    }
}

/// (Σ over windows of their area, outputs), per example and channel.
fn areas(input: Shape, oh: usize, ow: usize) -> (u128, u128) {
    let sum = |n, out| windows(n, out).iter().map(|(a, b)| (b - a) as u128).sum::<u128>();
    (sum(input.h, oh) * sum(input.w, ow), (oh * ow) as u128)
}

pub fn forward_cost(l: &Layer, b: u128) -> Ops {
    let (oh, ow) = target(l);
    let (area, outs) = areas(l.input, oh, ow);
    let planes = b * l.input.c as u128;
    Ops { add: planes * (area - outs), mul: planes * outs, ..Ops::ZERO }
}

pub fn input_grad_cost(l: &Layer, b: u128) -> Ops {
    let (oh, ow) = target(l);
    let (area, outs) = areas(l.input, oh, ow);
    let planes = b * l.input.c as u128;
    Ops { mul: planes * outs, add: planes * (area - (l.input.h * l.input.w) as u128), ..Ops::ZERO }
}

pub fn forward<S: Scalar>(l: &Layer, x: &[S]) -> Vec<S> {
    let (oh, ow) = target(l);
    let Shape { h, w, .. } = l.input;
    let (rows, cols) = (windows(h, oh), windows(w, ow));
    let mut z = Vec::with_capacity(x.len() / (h * w) * oh * ow);
    for plane in x.chunks_exact(h * w) {
        for &(r0, r1) in &rows {
            for &(c0, c1) in &cols {
                let mut cells = (r0..r1).flat_map(|y| (c0..c1).map(move |xx| plane[y * w + xx]));
                let first = cells.next().expect("a window holds a position");
                let sum = cells.fold(first, |s, v| s + v);
                z.push(sum * S::constant(1.0 / ((r1 - r0) * (c1 - c0)) as f64));
            }
        }
    }
    z
}

/// dx [B][C][H][W] from g [B][C][oh][ow].
pub fn input_grad<S: Scalar>(l: &Layer, g: &[S]) -> Vec<S> {
    let (oh, ow) = target(l);
    let Shape { h, w, .. } = l.input;
    let (rows, cols) = (windows(h, oh), windows(w, ow));
    let mut dx = Vec::with_capacity(g.len() / (oh * ow) * h * w);
    for gp in g.chunks_exact(oh * ow) {
        let mut plane: Vec<Option<S>> = vec![None; h * w];
        for (i, &(r0, r1)) in rows.iter().enumerate() {
            for (j, &(c0, c1)) in cols.iter().enumerate() {
                let share = gp[i * ow + j] * S::constant(1.0 / ((r1 - r0) * (c1 - c0)) as f64);
                for y in r0..r1 {
                    for xx in c0..c1 {
                        let cell = &mut plane[y * w + xx];
                        *cell = Some(cell.map_or(share, |s| s + share));
                    }
                }
            }
        }
        dx.extend(plane.into_iter().map(|v| v.expect("adaptive windows cover the input")));
    }
    dx
}
