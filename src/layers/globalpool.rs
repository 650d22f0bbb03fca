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
use std::ops::Range;

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

/// (B·C planes, Σ over one plane's windows of their area, outputs per plane).
fn areas(l: &Layer, b: u128) -> (u128, u128, u128) {
    let (oh, ow) = target(l);
    (b * l.input.c as u128, lengths(l.input.h, oh) * lengths(l.input.w, ow), (oh * ow) as u128)
}

/// Σ over the `out` windows on `n` positions of their length, in closed form: n + out −
/// gcd(n, out) (Σ⌊i·n/out⌋ and Σ⌈(i+1)·n/out⌉ differ by that), so that no size allocates.
fn lengths(n: usize, out: usize) -> u128 {
    (n + out - crate::spec::gcd(n, out)) as u128
}

pub fn forward_cost(l: &Layer, b: u128) -> Ops {
    let (planes, area, outs) = areas(l, b);
    Ops { add: planes * (area - outs), mul: planes * outs, ..Ops::ZERO }
}

pub fn input_grad_cost(l: &Layer, b: u128) -> Ops {
    let (planes, area, outs) = areas(l, b);
    Ops { mul: planes * outs, add: planes * (area - (l.input.h * l.input.w) as u128), ..Ops::ZERO }
}

/// Each output's window in one plane (its rows and columns), in output order.
fn plane_windows(l: &Layer) -> Vec<(Range<usize>, Range<usize>)> {
    let (oh, ow) = target(l);
    let (rows, cols) = (windows(l.input.h, oh), windows(l.input.w, ow));
    rows.iter().flat_map(|&(r0, r1)| cols.iter().map(move |&(c0, c1)| (r0..r1, c0..c1))).collect()
}

/// 1 / the window's area, a constant of the layer.
fn inverse_area<S: Scalar>(rows: &Range<usize>, cols: &Range<usize>) -> S {
    S::constant(1.0 / (rows.len() * cols.len()) as f64)
}

pub fn forward<S: Scalar>(l: &Layer, x: &[S]) -> Vec<S> {
    let Shape { h, w, .. } = l.input;
    let wins = plane_windows(l);
    let mut z = Vec::with_capacity(x.len() / (h * w) * wins.len());
    for plane in x.chunks_exact(h * w) {
        for (rows, cols) in &wins {
            let mut cells = rows.clone().flat_map(|y| cols.clone().map(move |xx| plane[y * w + xx]));
            let first = cells.next().expect("a window holds a position");
            z.push(cells.fold(first, |s, v| s + v) * inverse_area(rows, cols));
        }
    }
    z
}

/// dx [B][C][H][W] from g [B][C][oh][ow].
pub fn input_grad<S: Scalar>(l: &Layer, g: &[S]) -> Vec<S> {
    let Shape { h, w, .. } = l.input;
    let wins = plane_windows(l);
    let mut dx = Vec::with_capacity(g.len() / wins.len() * h * w);
    for gp in g.chunks_exact(wins.len()) {
        let mut plane: Vec<Option<S>> = vec![None; h * w];
        for ((rows, cols), &gv) in wins.iter().zip(gp) {
            let share = gv * inverse_area(rows, cols);
            for y in rows.clone() {
                for xx in cols.clone() {
                    let cell = &mut plane[y * w + xx];
                    *cell = Some(cell.map_or(share, |s| s + share));
                }
            }
        }
        dx.extend(plane.into_iter().map(|v| v.expect("adaptive windows cover the input")));
    }
    dx
}

#[cfg(test)]
mod tests {
    #[test]
    fn window_lengths_in_closed_form() {
        let sizes = (1..40).flat_map(|n| (1..40).map(move |out| (n, out)));
        for (n, out) in sizes {
            let counted: usize = super::windows(n, out).iter().map(|(a, b)| b - a).sum();
            assert_eq!(super::lengths(n, out), counted as u128, "n {n} out {out}");
        }
    }
}
