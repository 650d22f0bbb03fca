//! Max pooling with padding or ceil mode (`maxpool3s2p1`, `maxpool3s2c`), over planes of
//! [C][B][H][W]: a window holds only the positions inside the input (padding never wins), the
//! first maximum in row-major order wins, and its index within the plane is kept for the
//! backward pass, which adds each output's gradient there.

use super::conv::split_items;
use super::pool::each_plane;
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
    pub fn forward(&self, planes: usize, x: &[f32], y: &mut [f32], arg: &mut [u32], team: &Team) {
        let (plane, oplane) = (self.h * self.w, self.oh * self.ow);
        let (yp, ap) = (Parts::of(&mut y[..planes * oplane]), Parts::of(&mut arg[..planes * oplane]));
        split_items(planes, planes * plane, team, &|qs| {
            let (yp, ap) = (&yp, &ap);
            for q in qs {
                let xp = &x[q * plane..(q + 1) * plane];
                // SAFETY: plane q of y and of arg is this task's.
                let (yo, ao) = unsafe { (yp.part(q * oplane, oplane), ap.part(q * oplane, oplane)) };
                for oy in 0..self.oh {
                    let rows = self.span(oy, self.h);
                    for ox in 0..self.ow {
                        let cols = self.span(ox, self.w);
                        let mut best = rows.start * self.w + cols.start;
                        for r in rows.clone() {
                            for c in cols.clone() {
                                if xp[r * self.w + c] > xp[best] {
                                    best = r * self.w + c;
                                }
                            }
                        }
                        yo[oy * self.ow + ox] = xp[best];
                        ao[oy * self.ow + ox] = best as u32;
                    }
                }
            }
        });
    }

    /// dx [planes][h·w]: each output's gradient added at its argmax, zero elsewhere.
    pub fn backward(&self, planes: usize, g: &[f32], arg: &[u32], dx: &mut [f32], team: &Team) {
        let (plane, oplane) = (self.h * self.w, self.oh * self.ow);
        each_plane(planes, planes * plane, dx, plane, team, |q, d| {
            d.fill(0.0);
            for (&gv, &a) in g[q * oplane..(q + 1) * oplane].iter().zip(&arg[q * oplane..(q + 1) * oplane]) {
                d[a as usize] += gv;
            }
        });
    }
}
