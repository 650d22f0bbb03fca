//! Max and average pooling for the engine, over planes of [C][B][H][W] (each (c, e) plane of
//! H×W is independent, so planes split across the team).
//!
//! Max: the first maximum in row-major window order wins (a later value replaces only when
//! strictly greater); its index within the plane is kept for the backward pass, which routes the
//! gradient there (adding when windows overlap). Average: the window's sum times 1/k²; backward
//! spreads g/k² to every window position.

use super::conv::split_items;
use super::team::{Parts, Team};
use crate::spec::{Kind, Layer};

/// A pooling layer's geometry; `planes` = C·B is set per batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolShape {
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub k: usize,
    pub s: usize,
    pub oh: usize,
    pub ow: usize,
}

impl PoolShape {
    pub fn of(layer: &Layer) -> Option<PoolShape> {
        let (Kind::MaxPool(p) | Kind::AvgPool(p)) = layer.kind else { return None };
        Some(PoolShape {
            c: layer.input.c,
            h: layer.input.h,
            w: layer.input.w,
            k: p.k,
            s: p.stride,
            oh: layer.output.h,
            ow: layer.output.w,
        })
    }
}

/// Runs `f(p, plane p of out)` for each of the `n` planes (of `len` values), split over the team
/// by planes; `work` is the values read, which decides whether splitting pays.
pub(crate) fn each_plane<F: Fn(usize, &mut [f32]) + Sync>(
    n: usize,
    work: usize,
    out: &mut [f32],
    len: usize,
    team: &Team,
    f: F,
) {
    let op = Parts::of(&mut out[..n * len]);
    split_items(n, work, team, &|ps| {
        let op = &op;
        for p in ps {
            // SAFETY: plane p of `out` belongs to this task alone.
            f(p, unsafe { op.part(p * len, len) });
        }
    });
}

/// Max pooling: y [C][B][H'][W'] and the argmax `arg` (index within the H×W plane) per output.
pub fn max_forward(sh: &PoolShape, batch: usize, x: &[f32], y: &mut [f32], arg: &mut [u32], team: &Team) {
    let (plane, oplane, n) = (sh.h * sh.w, sh.oh * sh.ow, sh.c * batch);
    let (yp, ap) = (Parts::of(&mut y[..n * oplane]), Parts::of(&mut arg[..n * oplane]));
    split_items(n, n * plane, team, &|ps| {
        let (yp, ap) = (&yp, &ap);
        for p in ps {
            let xp = &x[p * plane..(p + 1) * plane];
            // SAFETY: plane p of y and arg belongs to this task alone.
            let (yo, ao) = unsafe { (yp.part(p * oplane, oplane), ap.part(p * oplane, oplane)) };
            if sh.k == 2 && sh.s == 2 {
                for oy in 0..sh.oh {
                    let (r0, r1) = (&xp[2 * oy * sh.w..], &xp[(2 * oy + 1) * sh.w..]);
                    let (yr, ar) = (&mut yo[oy * sh.ow..(oy + 1) * sh.ow], &mut ao[oy * sh.ow..(oy + 1) * sh.ow]);
                    assert!(r0.len() >= 2 * sh.ow && r1.len() >= 2 * sh.ow);
                    let mut done = 0;
                    #[cfg(target_arch = "x86_64")]
                    if super::simd::has_avx2_fma() {
                        let row = if super::simd::has_avx512() {
                            super::avx::max_pool2_row_512
                        } else {
                            super::avx::max_pool2_row
                        };
                        // SAFETY: the path in use (AVX2, or AVX-512F for the 16-lane row) runs
                        // only where the CPU has it; 2·ow values of each row, ow of each output.
                        done = unsafe {
                            row(
                                r0.as_ptr(),
                                r1.as_ptr(),
                                sh.ow,
                                (2 * oy * sh.w) as u32,
                                sh.w as u32,
                                yr.as_mut_ptr(),
                                ar.as_mut_ptr(),
                            )
                        };
                    }
                    for ox in done..sh.ow {
                        let x0 = 2 * ox;
                        let mut best = r0[x0];
                        let mut at = 2 * oy * sh.w + x0;
                        for (v, idx) in [(r0[x0 + 1], at + 1), (r1[x0], at + sh.w), (r1[x0 + 1], at + sh.w + 1)] {
                            if v > best {
                                best = v;
                                at = idx;
                            }
                        }
                        yr[ox] = best;
                        ar[ox] = at as u32;
                    }
                }
                continue;
            }
            for oy in 0..sh.oh {
                for ox in 0..sh.ow {
                    let (y0, x0) = (oy * sh.s, ox * sh.s);
                    let mut at = y0 * sh.w + x0;
                    let mut best = xp[at];
                    for i in 0..sh.k {
                        for j in 0..sh.k {
                            let idx = (y0 + i) * sh.w + x0 + j;
                            if xp[idx] > best {
                                best = xp[idx];
                                at = idx;
                            }
                        }
                    }
                    yo[oy * sh.ow + ox] = best;
                    ao[oy * sh.ow + ox] = at as u32;
                }
            }
        }
    });
}

/// dx [C][B][H][W]: each output's gradient added at its argmax, zero elsewhere.
pub fn max_backward(sh: &PoolShape, batch: usize, g: &[f32], arg: &[u32], dx: &mut [f32], team: &Team) {
    scatter_max(sh.c * batch, sh.h * sh.w, sh.oh * sh.ow, g, arg, dx, team)
}

/// Any max pooling's backward over `n` planes: dx [n][plane] zero but at each output's argmax
/// (an index within its plane), where the output's gradient g [n][oplane] is added.
pub fn scatter_max(n: usize, plane: usize, oplane: usize, g: &[f32], arg: &[u32], dx: &mut [f32], team: &Team) {
    each_plane(n, n * plane, dx, plane, team, |p, d| {
        d.fill(0.0);
        for (&gv, &a) in g[p * oplane..(p + 1) * oplane].iter().zip(&arg[p * oplane..(p + 1) * oplane]) {
            d[a as usize] += gv;
        }
    });
}

/// Average pooling: y = (window sum, row-major) · 1/k².
pub fn avg_forward(sh: &PoolShape, batch: usize, x: &[f32], y: &mut [f32], team: &Team) {
    let (plane, oplane, n) = (sh.h * sh.w, sh.oh * sh.ow, sh.c * batch);
    let inv = (1.0 / (sh.k * sh.k) as f64) as f32;
    each_plane(n, n * plane, y, oplane, team, |p, yo| {
        let xp = &x[p * plane..(p + 1) * plane];
        for oy in 0..sh.oh {
            for ox in 0..sh.ow {
                let (y0, x0) = (oy * sh.s, ox * sh.s);
                let mut sum = 0.0f32;
                for i in 0..sh.k {
                    for &v in &xp[(y0 + i) * sh.w + x0..(y0 + i) * sh.w + x0 + sh.k] {
                        sum += v;
                    }
                }
                yo[oy * sh.ow + ox] = sum * inv;
            }
        }
    });
}

/// dx: every window position receives g · 1/k², added over overlapping windows.
pub fn avg_backward(sh: &PoolShape, batch: usize, g: &[f32], dx: &mut [f32], team: &Team) {
    let (plane, oplane, n) = (sh.h * sh.w, sh.oh * sh.ow, sh.c * batch);
    let inv = (1.0 / (sh.k * sh.k) as f64) as f32;
    each_plane(n, n * plane, dx, plane, team, |p, d| {
        d.fill(0.0);
        let gp = &g[p * oplane..(p + 1) * oplane];
        for oy in 0..sh.oh {
            for ox in 0..sh.ow {
                let v = gp[oy * sh.ow + ox] * inv;
                let (y0, x0) = (oy * sh.s, ox * sh.s);
                for i in 0..sh.k {
                    for t in &mut d[(y0 + i) * sh.w + x0..(y0 + i) * sh.w + x0 + sh.k] {
                        *t += v;
                    }
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Activation, Pool, Shape};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn pools_match_naive_loops() {
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let teams = [Team::new(1, || {}).unwrap(), Team::new(2, || {}).unwrap()];
        for case in 0..200 {
            let (c, h, w) = (rng.gen_range(1..=5), rng.gen_range(1..=12), rng.gen_range(1..=12));
            let p = Pool::new(rng.gen_range(1..=4), rng.gen_range(1..=3));
            let Ok(layer) = Layer::after(Shape::new(c, h, w), Kind::MaxPool(p), 0, Activation::Identity) else {
                continue;
            };
            let sh = PoolShape::of(&layer).unwrap();
            let batch = rng.gen_range(1..=9);
            // Few distinct values, so ties are common.
            let x: Vec<f32> = (0..batch * c * h * w).map(|_| rng.gen_range(0..4) as f32).collect();
            let g: Vec<f32> = (0..c * batch * sh.oh * sh.ow).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let team = &teams[case % 2];
            let (plane, oplane) = (h * w, sh.oh * sh.ow);
            let mut want_max = vec![0.0; g.len()];
            let mut want_avg = vec![0.0; g.len()];
            let mut want_dmax = vec![0.0f64; x.len()];
            let mut want_davg = vec![0.0f64; x.len()];
            let inv = 1.0 / (p.k * p.k) as f64;
            for q in 0..c * batch {
                for oy in 0..sh.oh {
                    for ox in 0..sh.ow {
                        let o = q * oplane + oy * sh.ow + ox;
                        let mut best = (f32::NEG_INFINITY, 0);
                        let mut sum = 0.0f64;
                        for i in 0..p.k {
                            for j in 0..p.k {
                                let idx = q * plane + (oy * p.stride + i) * w + ox * p.stride + j;
                                if x[idx] > best.0 {
                                    best = (x[idx], idx);
                                }
                                sum += x[idx] as f64;
                                want_davg[idx] += g[o] as f64 * inv;
                            }
                        }
                        want_max[o] = best.0;
                        want_avg[o] = sum * inv;
                        want_dmax[best.1] += g[o] as f64;
                    }
                }
            }
            let (mut y, mut arg, mut dx) = (vec![f32::NAN; g.len()], vec![0u32; g.len()], vec![f32::NAN; x.len()]);
            max_forward(&sh, batch, &x, &mut y, &mut arg, team);
            assert_eq!(y, want_max, "case {case} {sh:?} max");
            max_backward(&sh, batch, &g, &arg, &mut dx, team);
            for (a, b) in dx.iter().zip(&want_dmax) {
                assert!((*a as f64 - b).abs() < 1e-5, "case {case} {sh:?} dmax {a} vs {b}");
            }
            avg_forward(&sh, batch, &x, &mut y, team);
            for (a, b) in y.iter().zip(&want_avg) {
                assert!((*a as f64 - b).abs() < 1e-5, "case {case} {sh:?} avg {a} vs {b}");
            }
            avg_backward(&sh, batch, &g, &mut dx, team);
            for (a, b) in dx.iter().zip(&want_davg) {
                assert!((*a as f64 - b).abs() < 1e-5, "case {case} {sh:?} davg {a} vs {b}");
            }
        }
    }
}
