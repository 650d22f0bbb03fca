//! Global and adaptive average pooling for the engine. Global pooling reads x [C][B][P] and
//! writes rows z [B][C] (its output is a vector, which dense layers read as rows); adaptive
//! pooling to oh×ow reads and writes channel-major planes [C][B][oh][ow], its windows those of
//! `layers::globalpool` (PyTorch's `AdaptiveAvgPool2d`). Sums run in window order, then one
//! product by 1/area, as the reference does.

use super::pool::each_plane;
use super::team::Team;

/// z [B][C]: each (c, e) plane's mean.
pub fn global_forward(c: usize, batch: usize, p: usize, x: &[f32], z: &mut [f32]) {
    let inv = (1.0 / p as f64) as f32;
    for ch in 0..c {
        for e in 0..batch {
            let plane = &x[(ch * batch + e) * p..(ch * batch + e + 1) * p];
            z[e * c + ch] = plane.iter().fold(0.0f32, |s, &v| s + v) * inv;
        }
    }
}

/// dx [C][B][P] from g [B][C]: every position of a plane receives g/P.
pub fn global_backward(c: usize, batch: usize, p: usize, g: &[f32], dx: &mut [f32], team: &Team) {
    let inv = (1.0 / p as f64) as f32;
    each_plane(c * batch, c * batch * p, dx, p, team, |q, d| d.fill(g[(q % batch) * c + q / batch] * inv));
}

/// The start and end of each of `out` windows over `n` positions.
fn windows(n: usize, out: usize) -> Vec<(usize, usize)> {
    (0..out).map(|i| (i * n / out, ((i + 1) * n).div_ceil(out))).collect()
}

/// An adaptive pooling's geometry: planes of h×w to oh×ow.
#[derive(Clone, Debug)]
pub struct Adaptive {
    pub h: usize,
    pub w: usize,
    pub oh: usize,
    pub ow: usize,
}

impl Adaptive {
    fn wins(&self) -> Vec<((usize, usize), (usize, usize))> {
        let (rows, cols) = (windows(self.h, self.oh), windows(self.w, self.ow));
        rows.iter().flat_map(|&r| cols.iter().map(move |&c| (r, c))).collect()
    }

    /// z [planes][oh·ow] from x [planes][h·w].
    pub fn forward(&self, planes: usize, x: &[f32], z: &mut [f32], team: &Team) {
        let (plane, oplane, wins) = (self.h * self.w, self.oh * self.ow, self.wins());
        each_plane(planes, planes * plane, z, oplane, team, |q, zo| {
            let xp = &x[q * plane..(q + 1) * plane];
            for (o, &((r0, r1), (c0, c1))) in zo.iter_mut().zip(&wins) {
                let mut s = 0.0f32;
                for y in r0..r1 {
                    for &v in &xp[y * self.w + c0..y * self.w + c1] {
                        s += v;
                    }
                }
                *o = s * (1.0 / ((r1 - r0) * (c1 - c0)) as f64) as f32;
            }
        });
    }

    /// dx [planes][h·w] from g [planes][oh·ow]: each window position receives g/area, added
    /// where windows overlap.
    pub fn backward(&self, planes: usize, g: &[f32], dx: &mut [f32], team: &Team) {
        let (plane, oplane, wins) = (self.h * self.w, self.oh * self.ow, self.wins());
        each_plane(planes, planes * plane, dx, plane, team, |q, d| {
            d.fill(0.0);
            for (&gv, &((r0, r1), (c0, c1))) in g[q * oplane..(q + 1) * oplane].iter().zip(&wins) {
                let share = gv * (1.0 / ((r1 - r0) * (c1 - c0)) as f64) as f32;
                for y in r0..r1 {
                    for t in &mut d[y * self.w + c0..y * self.w + c1] {
                        *t += share;
                    }
                }
            }
        });
    }
}
