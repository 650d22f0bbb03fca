//! 2-D convolution for the engine: im2col and one matrix product per pass.
//!
//! Shapes (B = batch, N = B·H'·W', CKK = C·kh·kw; every tensor row-major):
//! - input x:   [C][B][H][W]   (channel-major across the batch, as the engine keeps images)
//! - weight w:  [F][C][kh][kw] = [F][CKK]; bias b: [F]
//! - col:       [CKK][N]; row (c, i, j), column (e, oy, ox) holds x[c][e][oy·s+i-ph][ox·s+j-pw]
//!   (zero outside the image)
//! - output z:  [F][B][H'][W'] = [F][N]: z = w · col, then + b[f] and the activation per row
//!
//! Backward, given delta = dL/dz [F][N]:
//! - dW [F][CKK] = delta · colᵀ (summed over N)
//! - db [F]      = row sums of delta
//! - dcol [CKK][N] = wᵀ · delta, then col2im: dx[c][e][y][x] = Σ of the dcol entries that read
//!   x[c][e][y][x] (the input gradient [C][B][H][W]).
//!
//! Work splits over col's rows (im2col), over F rows or N columns (the products, in `gemm`) and
//! over input channels (col2im), never over a summed dimension: results do not depend on the
//! thread count.

use super::gemm::{View, matmul};
use super::team::Team;
use crate::spec::{Activation, Kind, LEAKY_SLOPE, Layer};

/// Elementwise passes (im2col, col2im, bias and activation) of fewer values stay on one thread.
pub const PARALLEL_MIN_VALUES: usize = 1 << 16;

/// A convolution layer's geometry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvShape {
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub f: usize,
    pub kh: usize,
    pub kw: usize,
    pub s: usize,
    pub ph: usize,
    pub pw: usize,
    pub oh: usize,
    pub ow: usize,
}

impl ConvShape {
    /// The geometry of a convolution layer (None for any other kind).
    pub fn of(layer: &Layer) -> Option<ConvShape> {
        let Kind::Conv2d(cv) = layer.kind else { return None };
        let (ph, pw) = cv.pads();
        Some(ConvShape {
            c: layer.input.c,
            h: layer.input.h,
            w: layer.input.w,
            f: cv.filters,
            kh: cv.kh,
            kw: cv.kw,
            s: cv.stride,
            ph,
            pw,
            oh: layer.output.h,
            ow: layer.output.w,
        })
    }

    /// Rows of the im2col matrix: C·kh·kw.
    pub fn ckk(&self) -> usize {
        self.c * self.kh * self.kw
    }

    /// Values of the im2col matrix for a batch.
    pub fn col_len(&self, batch: usize) -> usize {
        self.ckk() * batch * self.oh * self.ow
    }
}

/// A pointer that tasks use for disjoint ranges of one buffer.
struct SendPtr(*mut f32);
// SAFETY: every task writes a range no other task touches.
unsafe impl Sync for SendPtr {}

/// Runs `f(range)` over `0..n` items, in one piece or split across the team when `values`
/// (the work) is large. Each range is processed by exactly one task.
pub(crate) fn split_items(n: usize, values: usize, team: &Team, f: &(dyn Fn(std::ops::Range<usize>) + Sync)) {
    let parts = if values >= PARALLEL_MIN_VALUES { team.size().min(n) } else { 1 };
    if parts <= 1 {
        f(0..n);
        return;
    }
    let per = n.div_ceil(parts);
    team.run(n.div_ceil(per), &|t| f(t * per..((t + 1) * per).min(n)));
}

/// Column range of output positions `ox` whose input column `ox·s + j - pw` lies in `0..w`.
fn valid(sh: &ConvShape, j: usize) -> (usize, usize) {
    // ox·s + j >= pw  and  ox·s + j < w + pw
    let lo = if j >= sh.pw { 0 } else { (sh.pw - j).div_ceil(sh.s) };
    let hi = if sh.w + sh.pw > j { (sh.w + sh.pw - j).div_ceil(sh.s).min(sh.ow) } else { 0 };
    (lo.min(hi), hi)
}

/// col [CKK][B·H'·W'] from x [C][B][H][W].
pub fn im2col(sh: &ConvShape, batch: usize, x: &[f32], col: &mut [f32], team: &Team) {
    let (plane, oplane) = (sh.h * sh.w, sh.oh * sh.ow);
    let n = batch * oplane;
    let col = &mut col[..sh.ckk() * n];
    let base = SendPtr(col.as_mut_ptr());
    split_items(sh.ckk(), col.len(), team, &|rows| {
        let base = &base;
        for r in rows {
            // SAFETY: row r of col belongs to this task alone.
            let row = unsafe { std::slice::from_raw_parts_mut(base.0.add(r * n), n) };
            let (c, i, j) = (r / (sh.kh * sh.kw), r / sh.kw % sh.kh, r % sh.kw);
            let (lo, hi) = valid(sh, j);
            for e in 0..batch {
                let xe = &x[(c * batch + e) * plane..(c * batch + e + 1) * plane];
                for oy in 0..sh.oh {
                    let out = &mut row[e * oplane + oy * sh.ow..e * oplane + (oy + 1) * sh.ow];
                    let iy = oy * sh.s + i;
                    if iy < sh.ph || iy - sh.ph >= sh.h {
                        out.fill(0.0);
                        continue;
                    }
                    let xr = &xe[(iy - sh.ph) * sh.w..(iy - sh.ph + 1) * sh.w];
                    out[..lo].fill(0.0);
                    out[hi..].fill(0.0);
                    if hi == lo {
                    } else if sh.s == 1 {
                        let x0 = lo + j - sh.pw;
                        out[lo..hi].copy_from_slice(&xr[x0..x0 + hi - lo]);
                    } else {
                        for (ox, o) in out[lo..hi].iter_mut().enumerate() {
                            *o = xr[(lo + ox) * sh.s + j - sh.pw];
                        }
                    }
                }
            }
        }
    });
}

/// dx [C][B][H][W] = the sum, for every input position, of the dcol entries that read it.
/// Each channel is one task's; within it rows (i, j) are added in order.
pub fn col2im(sh: &ConvShape, batch: usize, dcol: &[f32], dx: &mut [f32], team: &Team) {
    let (plane, oplane) = (sh.h * sh.w, sh.oh * sh.ow);
    let n = batch * oplane;
    let per_c = batch * plane;
    let dx = &mut dx[..sh.c * per_c];
    let base = SendPtr(dx.as_mut_ptr());
    split_items(sh.c, sh.ckk() * n, team, &|chans| {
        let base = &base;
        for c in chans {
            // SAFETY: channel c of dx belongs to this task alone.
            let dxc = unsafe { std::slice::from_raw_parts_mut(base.0.add(c * per_c), per_c) };
            dxc.fill(0.0);
            for i in 0..sh.kh {
                for j in 0..sh.kw {
                    let r = (c * sh.kh + i) * sh.kw + j;
                    let row = &dcol[r * n..(r + 1) * n];
                    let (lo, hi) = valid(sh, j);
                    for e in 0..batch {
                        for oy in 0..sh.oh {
                            let iy = oy * sh.s + i;
                            if iy < sh.ph || iy - sh.ph >= sh.h {
                                continue;
                            }
                            let src = &row[e * oplane + oy * sh.ow..e * oplane + (oy + 1) * sh.ow];
                            let xr = &mut dxc[e * plane + (iy - sh.ph) * sh.w..e * plane + (iy - sh.ph + 1) * sh.w];
                            if hi == lo {
                            } else if sh.s == 1 {
                                let x0 = lo + j - sh.pw;
                                for (d, &g) in xr[x0..x0 + hi - lo].iter_mut().zip(&src[lo..hi]) {
                                    *d += g;
                                }
                            } else {
                                for ox in lo..hi {
                                    xr[ox * sh.s + j - sh.pw] += src[ox];
                                }
                            }
                        }
                    }
                }
            }
        }
    });
}

/// z[f][·] += b[f], then the activation, in place, over rows of `n` values.
pub fn bias_act_rows(act: Activation, z: &mut [f32], bias: &[f32], n: usize, team: &Team) {
    let rows = bias.len();
    let z = &mut z[..rows * n];
    let base = SendPtr(z.as_mut_ptr());
    let slope = LEAKY_SLOPE as f32;
    split_items(rows, rows * n, team, &|fs| {
        let base = &base;
        for f in fs {
            // SAFETY: row f belongs to this task alone.
            let row = unsafe { std::slice::from_raw_parts_mut(base.0.add(f * n), n) };
            let b = bias[f];
            match act {
                Activation::Identity => row.iter_mut().for_each(|z| *z += b),
                Activation::Relu => row.iter_mut().for_each(|z| *z = (*z + b).max(0.0)),
                Activation::LeakyRelu => row.iter_mut().for_each(|z| {
                    let v = *z + b;
                    *z = if v > 0.0 { v } else { slope * v }
                }),
                Activation::Sigmoid => row.iter_mut().for_each(|z| *z = 1.0 / (1.0 + (-(*z + b)).exp())),
                Activation::Tanh => row.iter_mut().for_each(|z| *z = (*z + b).tanh()),
                // The spec allows softmax on the (dense) output layer only.
                Activation::Softmax => unreachable!("softmax on a convolution"),
            }
        }
    });
}

/// Sum of a row in a fixed order (eight interleaved partial sums, then a fixed tree).
fn row_sum(v: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = v.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for k in 0..8 {
            acc[k] += c[k];
        }
    }
    for (k, &r) in rest.iter().enumerate() {
        acc[k] += r;
    }
    ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]))
}

/// Forward: z [F][B·H'·W'] = act(w · im2col(x) + b). `col` must hold `sh.col_len(batch)` values
/// and is left holding im2col(x), which [`conv_backward`] can reuse.
#[allow(clippy::too_many_arguments)]
pub fn conv_forward(
    sh: &ConvShape,
    batch: usize,
    act: Activation,
    x: &[f32],
    w: &[f32],
    b: &[f32],
    col: &mut [f32],
    z: &mut [f32],
    team: &Team,
) {
    let (ckk, n) = (sh.ckk(), batch * sh.oh * sh.ow);
    im2col(sh, batch, x, col, team);
    let z = &mut z[..sh.f * n];
    matmul(View::rows(w, sh.f, ckk), View::rows(&col[..ckk * n], ckk, n), z, team);
    bias_act_rows(act, z, b, n, team);
}

/// Backward, given delta = dL/dz [F][B·H'·W'] (the activation's derivative already applied):
/// fills dw [F][CKK] and db [F] and, when `dx` is given, the input gradient [C][B][H][W].
/// `col` holds im2col(x) when `have_col`, else it is recomputed; it is overwritten with dcol.
#[allow(clippy::too_many_arguments)]
pub fn conv_backward(
    sh: &ConvShape,
    batch: usize,
    x: &[f32],
    w: &[f32],
    delta: &[f32],
    dw: &mut [f32],
    db: &mut [f32],
    col: &mut [f32],
    have_col: bool,
    dx: Option<&mut [f32]>,
    team: &Team,
) {
    let (ckk, n) = (sh.ckk(), batch * sh.oh * sh.ow);
    if !have_col {
        im2col(sh, batch, x, col, team);
    }
    let delta = &delta[..sh.f * n];
    let col = &mut col[..ckk * n];
    matmul(View::rows(delta, sh.f, n), View::transposed(col, ckk, n), &mut dw[..sh.f * ckk], team);
    for (f, d) in db.iter_mut().enumerate() {
        *d = row_sum(&delta[f * n..(f + 1) * n]);
    }
    if let Some(dx) = dx {
        matmul(View::transposed(w, sh.f, ckk), View::rows(delta, sh.f, n), col, team);
        col2im(sh, batch, col, dx, team);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Conv, Padding, Shape};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Naive loops in f64 over [C][B][H][W] tensors.
    fn naive_forward(sh: &ConvShape, batch: usize, x: &[f32], w: &[f32], b: &[f32]) -> Vec<f64> {
        let mut z = vec![0.0; sh.f * batch * sh.oh * sh.ow];
        for f in 0..sh.f {
            for e in 0..batch {
                for oy in 0..sh.oh {
                    for ox in 0..sh.ow {
                        let mut s = b[f] as f64;
                        for c in 0..sh.c {
                            for i in 0..sh.kh {
                                for j in 0..sh.kw {
                                    let (iy, ix) = (
                                        (oy * sh.s + i) as isize - sh.ph as isize,
                                        (ox * sh.s + j) as isize - sh.pw as isize,
                                    );
                                    if iy < 0 || ix < 0 || iy >= sh.h as isize || ix >= sh.w as isize {
                                        continue;
                                    }
                                    let xv = x[((c * batch + e) * sh.h + iy as usize) * sh.w + ix as usize] as f64;
                                    s += w[((f * sh.c + c) * sh.kh + i) * sh.kw + j] as f64 * xv;
                                }
                            }
                        }
                        z[((f * batch + e) * sh.oh + oy) * sh.ow + ox] = s;
                    }
                }
            }
        }
        z
    }

    /// dW, db, dX by the same loops, given delta [F][B][H'][W'].
    fn naive_backward(sh: &ConvShape, batch: usize, x: &[f32], w: &[f32], d: &[f32]) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let mut dw = vec![0.0; sh.f * sh.ckk()];
        let mut db = vec![0.0; sh.f];
        let mut dx = vec![0.0; sh.c * batch * sh.h * sh.w];
        for f in 0..sh.f {
            for e in 0..batch {
                for oy in 0..sh.oh {
                    for ox in 0..sh.ow {
                        let g = d[((f * batch + e) * sh.oh + oy) * sh.ow + ox] as f64;
                        db[f] += g;
                        for c in 0..sh.c {
                            for i in 0..sh.kh {
                                for j in 0..sh.kw {
                                    let (iy, ix) = (
                                        (oy * sh.s + i) as isize - sh.ph as isize,
                                        (ox * sh.s + j) as isize - sh.pw as isize,
                                    );
                                    if iy < 0 || ix < 0 || iy >= sh.h as isize || ix >= sh.w as isize {
                                        continue;
                                    }
                                    let xi = ((c * batch + e) * sh.h + iy as usize) * sh.w + ix as usize;
                                    let wi = ((f * sh.c + c) * sh.kh + i) * sh.kw + j;
                                    dw[wi] += g * x[xi] as f64;
                                    dx[xi] += g * w[wi] as f64;
                                }
                            }
                        }
                    }
                }
            }
        }
        (dw, db, dx)
    }

    fn close(what: &str, got: &[f32], want: &[f64]) {
        assert_eq!(got.len(), want.len(), "{what}");
        let scale = want.iter().fold(1e-6f64, |m, v| m.max(v.abs()));
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            assert!((g as f64 - w).abs() <= 1e-5 * scale, "{what}[{i}]: {g} vs {w}");
        }
    }

    #[test]
    fn conv_matches_naive_loops() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let teams = [Team::new(1, || {}).unwrap(), Team::new(2, || {}).unwrap()];
        for case in 0..150 {
            let (c, h, w) = (rng.gen_range(1..=4), rng.gen_range(1..=12), rng.gen_range(1..=12));
            let (kh, kw) = (rng.gen_range(1..=5), rng.gen_range(1..=5));
            let stride = rng.gen_range(1..=3);
            let padding = Padding::Fixed(rng.gen_range(0..=2));
            let cv = Conv { kh, kw, filters: rng.gen_range(1..=6), stride, padding };
            let Ok(layer) = Layer::after(Shape::new(c, h, w), Kind::Conv2d(cv), 0, Activation::Identity) else {
                continue;
            };
            let sh = ConvShape::of(&layer).unwrap();
            let batch = rng.gen_range(1..=9);
            let x: Vec<f32> = (0..batch * c * h * w).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let wt: Vec<f32> = (0..sh.f * sh.ckk()).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let b: Vec<f32> = (0..sh.f).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let n = batch * sh.oh * sh.ow;
            let delta: Vec<f32> = (0..sh.f * n).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let want_z = naive_forward(&sh, batch, &x, &wt, &b);
            let (want_dw, want_db, want_dx) = naive_backward(&sh, batch, &x, &wt, &delta);
            let team = &teams[case % 2];
            let mut col = vec![f32::NAN; sh.col_len(batch)];
            let mut z = vec![f32::NAN; sh.f * n];
            conv_forward(&sh, batch, Activation::Identity, &x, &wt, &b, &mut col, &mut z, team);
            close(&format!("case {case} {sh:?} B{batch} z"), &z, &want_z);
            for have_col in [true, false] {
                let (mut dw, mut db, mut dx) =
                    (vec![f32::NAN; wt.len()], vec![f32::NAN; sh.f], vec![f32::NAN; x.len()]);
                if !have_col {
                    col.fill(f32::NAN);
                } else {
                    im2col(&sh, batch, &x, &mut col, team);
                }
                conv_backward(&sh, batch, &x, &wt, &delta, &mut dw, &mut db, &mut col, have_col, Some(&mut dx), team);
                close(&format!("case {case} {sh:?} dw"), &dw, &want_dw);
                close(&format!("case {case} {sh:?} db"), &db, &want_db);
                close(&format!("case {case} {sh:?} dx"), &dx, &want_dx);
            }
        }
    }
}
