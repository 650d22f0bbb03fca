//! Max pooling with padding or ceil mode (`maxpool3s2p1`, `maxpool3s2c`), over planes of
//! [C][B][H][W]: a window holds only the positions inside the input (padding never wins), the
//! first maximum in row-major order wins, and its index within the plane is kept for the
//! backward pass, which adds each output's gradient there.

use super::conv::split_items;
use super::simd::{Madd, dispatch};
use super::team::{Parts, Team};
use crate::spec::{Kind, Layer};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PadPool {
    pub h: usize,
    pub w: usize,
    pub k: usize,
    pub s: usize,
    pub pad: usize,
    pub oh: usize,
    pub ow: usize,
}

impl PadPool {
    pub fn of(layer: &Layer) -> Option<PadPool> {
        let Kind::MaxPool(p) = layer.kind else { return None };
        Some(PadPool {
            h: layer.input.h,
            w: layer.input.w,
            k: p.k,
            s: p.stride,
            pad: p.pad,
            oh: layer.output.h,
            ow: layer.output.w,
        })
    }

    /// The input rows (or columns) of output position `o` along an axis of `n`.
    fn span(&self, o: usize, n: usize) -> std::ops::Range<usize> {
        let start = o * self.s;
        start.saturating_sub(self.pad)..(start + self.k).saturating_sub(self.pad).min(n)
    }

    /// y [planes][oh·ow] and each output's argmax within its plane.
    ///
    /// Separable: each input row's maximum over every output column's window (value and
    /// column), then each output row's over its window's rows. Both scans replace only on a
    /// strictly greater value, rows and columns in order, so the first maximum in row-major
    /// order wins, as in one scan of the window; the loops have no branch on the data and run
    /// over contiguous values (a strided row is first split into its s phases), so they
    /// vectorise (`plane_fast`, compiled per kernel path).
    pub fn forward(&self, planes: usize, x: &[f32], y: &mut [f32], arg: &mut [u32], team: &Team) {
        let (plane, oplane) = (self.h * self.w, self.oh * self.ow);
        let (yp, ap) = (Parts::of(&mut y[..planes * oplane]), Parts::of(&mut arg[..planes * oplane]));
        split_items(planes, planes * plane, team, &|qs| {
            let (yp, ap) = (&yp, &ap);
            let mut rows = Rows {
                v: vec![0.0; self.h * self.ow],
                i: vec![0; self.h * self.ow],
                phases: vec![0.0; if self.s > 1 { self.s * self.w.div_ceil(self.s) } else { 0 }],
            };
            for q in qs {
                // SAFETY: plane q of y and of arg is this task's.
                let (yo, ao) = unsafe { (yp.part(q * oplane, oplane), ap.part(q * oplane, oplane)) };
                plane_fast(self, &x[q * plane..(q + 1) * plane], yo, ao, &mut rows);
            }
        });
    }

    /// The output columns whose windows lie wholly inside a row.
    fn inner(&self) -> std::ops::Range<usize> {
        let lo = self.pad.div_ceil(self.s).min(self.ow);
        let hi = if self.w + self.pad >= self.k { (self.w + self.pad - self.k) / self.s + 1 } else { 0 };
        lo..hi.clamp(lo, self.ow)
    }

    /// dx [planes][h·w]: each output's gradient added at its argmax, zero elsewhere.
    pub fn backward(&self, planes: usize, g: &[f32], arg: &[u32], dx: &mut [f32], team: &Team) {
        super::pool::scatter_max(planes, self.h * self.w, self.oh * self.ow, g, arg, dx, team)
    }
}

/// A task's buffers for [`PadPool::forward`]: each input row's window maxima `v` and their
/// indices `i` within the plane [h][ow], and a strided row split into its phases.
struct Rows {
    v: Vec<f32>,
    i: Vec<u32>,
    phases: Vec<f32>,
}

#[inline(always)]
#[allow(clippy::extra_unused_type_parameters)] // the type picks the compiled copy (`dispatch!`)
fn plane_imp<M: Madd>(pp: &PadPool, xp: &[f32], yo: &mut [f32], ao: &mut [u32], rows: &mut Rows) {
    let (w, ow, s) = (pp.w, pp.ow, pp.s);
    let inner = pp.inner();
    let wq = w.div_ceil(s);
    for (r, (v, i)) in rows.v.chunks_exact_mut(ow).zip(rows.i.chunks_exact_mut(ow)).enumerate() {
        let (xr, base) = (&xp[r * w..(r + 1) * w], r * w);
        for ox in (0..inner.start).chain(inner.end..ow) {
            let cols = pp.span(ox, w);
            let mut best = cols.start;
            for c in cols {
                if xr[c] > xr[best] {
                    best = c;
                }
            }
            v[ox] = xr[best];
            i[ox] = (base + best) as u32;
        }
        if inner.is_empty() {
            continue;
        }
        if s > 1 {
            for (t, chunk) in xr.chunks(s).enumerate() {
                for (p, &value) in chunk.iter().enumerate() {
                    rows.phases[p * wq + t] = value;
                }
            }
        }
        // Tap j of output column ox reads column ox·s − pad + j: phase (first + j) % s, at
        // (first + j) / s + (ox − inner.start) within it.
        let first = inner.start * s - pp.pad;
        let (v, i) = (&mut v[inner.clone()], &mut i[inner.clone()]);
        for j in 0..pp.k {
            let (p, at) = ((first + j) % s, (first + j) / s);
            let src = if s > 1 { &rows.phases[p * wq + at..(p + 1) * wq] } else { &xr[at..] };
            let c0 = (base + first + j) as u32;
            let each = v.iter_mut().zip(i.iter_mut()).zip(src).enumerate();
            if j == 0 {
                each.for_each(|(o, ((v, i), &x))| {
                    *v = x;
                    *i = c0 + (o * s) as u32;
                });
            } else {
                each.for_each(|(o, ((v, i), &x))| {
                    let more = x > *v;
                    *v = if more { x } else { *v };
                    *i = if more { c0 + (o * s) as u32 } else { *i };
                });
            }
        }
    }
    for (oy, (yr, ar)) in yo.chunks_exact_mut(ow).zip(ao.chunks_exact_mut(ow)).enumerate() {
        let span = pp.span(oy, pp.h);
        let r0 = span.start * ow;
        yr.copy_from_slice(&rows.v[r0..r0 + ow]);
        ar.copy_from_slice(&rows.i[r0..r0 + ow]);
        for r in span.skip(1) {
            let (v, i) = (&rows.v[r * ow..(r + 1) * ow], &rows.i[r * ow..(r + 1) * ow]);
            for (((y, a), &v), &i) in yr.iter_mut().zip(ar.iter_mut()).zip(v).zip(i) {
                let more = v > *y;
                *y = if more { v } else { *y };
                *a = if more { i } else { *a };
            }
        }
    }
}

dispatch! {
    fn plane_fast = plane_imp(pp: &PadPool, xp: &[f32], yo: &mut [f32], ao: &mut [u32], rows: &mut Rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// One scan of each window in row-major order (the definition).
    fn plain(pp: &PadPool, planes: usize, x: &[f32]) -> (Vec<f32>, Vec<u32>) {
        let (plane, oplane) = (pp.h * pp.w, pp.oh * pp.ow);
        let (mut y, mut arg) = (vec![0.0; planes * oplane], vec![0; planes * oplane]);
        for q in 0..planes {
            let xp = &x[q * plane..(q + 1) * plane];
            for oy in 0..pp.oh {
                for ox in 0..pp.ow {
                    let (rows, cols) = (pp.span(oy, pp.h), pp.span(ox, pp.w));
                    let mut best = rows.start * pp.w + cols.start;
                    for r in rows {
                        for c in cols.clone() {
                            if xp[r * pp.w + c] > xp[best] {
                                best = r * pp.w + c;
                            }
                        }
                    }
                    y[q * oplane + oy * pp.ow + ox] = xp[best];
                    arg[q * oplane + oy * pp.ow + ox] = best as u32;
                }
            }
        }
        (y, arg)
    }

    #[test]
    fn separable_scan_matches_one_scan_of_each_window() {
        // Kernels 1–4, strides 1–3, paddings up to k/2, ceil mode, odd sizes; values from a few
        // levels so that ties are common (behind a relu most values are 0): the same maxima and
        // the same argmax (the first in row-major order), on one and two threads.
        let mut rng = ChaCha8Rng::seed_from_u64(29);
        let teams = [Team::new(1, || {}).unwrap(), Team::new(2, || {}).unwrap()];
        let mut cases = 0;
        while cases < 200 {
            let (k, s) = (rng.gen_range(1..=4), rng.gen_range(1..=3));
            let pad = rng.gen_range(0..=k / 2);
            let ceil = rng.gen_bool(0.3);
            let (h, w) = (rng.gen_range(1..=23), rng.gen_range(1..=23));
            let pool = crate::spec::Pool { k, stride: s, pad, ceil };
            let input = crate::spec::Shape::new(3, h, w);
            let Ok(layer) = Layer::after(input, Kind::MaxPool(pool), 0, crate::spec::Activation::Identity) else {
                continue;
            };
            cases += 1;
            let pp = PadPool::of(&layer).unwrap();
            let planes = 3 * rng.gen_range(1..=5);
            let levels = rng.gen_range(2..=40);
            let x: Vec<f32> = (0..planes * h * w).map(|_| rng.gen_range(0..levels) as f32 - 1.0).collect();
            let (want_y, want_arg) = plain(&pp, planes, &x);
            for team in &teams {
                let (mut y, mut arg) = (vec![f32::NAN; want_y.len()], vec![u32::MAX; want_y.len()]);
                pp.forward(planes, &x, &mut y, &mut arg, team);
                assert!(y == want_y && arg == want_arg, "{pp:?} planes {planes} threads {}", team.size());
            }
        }
    }
}
