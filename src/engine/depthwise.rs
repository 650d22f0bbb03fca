//! Depthwise convolution (groups = C): each filter reads one channel, F = m·C filters, m per
//! channel (filter f reads channel f/m). Weights are [F][1][kh][kw].
//!
//! A depthwise 3×3 does 9 multiply-adds per output: im2col would copy each input 9 times to
//! feed a product of one row per filter, so the passes here read the input directly. The
//! zero-padded input plane of one (channel, example) is laid out as s×s *phase planes*,
//! `P[r][p][Y][X] = xpad[s·Y + r][s·X + p]`, each row `l` values long, so that for every tap
//! (i, j) the outputs of the whole plane, taken on a grid of `l` columns (the columns past W'
//! are computed and dropped), are one run of consecutive values:
//!
//!   z[oy·l + ox] = Σ_(i,j) w[i][j] · P[i%s][j%s][(oy + i/s)·l + ox + j/s]
//!
//! Blocks of [`CH`] outputs stay in registers over all taps. The backward passes use the same
//! grid: dW[f][i][j] is the dot product of δ's plane (on the grid, zero past W') with the same
//! run of P; dx is the gather form of the transposed convolution, computed per phase plane of
//! the padded input and copied out without its border.
//!
//! Work splits over (channel, example) planes (forward, dx) and channels (dW, summed over the
//! examples in order). Every value is one chain of multiply-adds in a fixed order (taps in
//! order, then the multiplier for dx), so results do not depend on the thread count. Buffers
//! are rounded up to whole blocks and their padding stays zero.

use crate::engine::conv::{ConvShape, finish, row_sum};
use crate::engine::simd::{Madd, dispatch};
use crate::engine::team::Team;
use crate::spec::Activation;

/// Outputs per register block (4 AVX-512 or 8 AVX2 vectors: enough independent chains).
const CH: usize = 64;

/// Planes processed on one thread below this many multiply-adds.
const PARALLEL_MIN: usize = 1 << 16;

fn round(n: usize) -> usize {
    n.div_ceil(CH) * CH
}

/// The grid of one depthwise convolution.
#[derive(Clone, Copy, Debug)]
struct Grid {
    s: usize,
    kh: usize,
    kw: usize,
    h: usize,
    w: usize,
    ph: usize,
    pw: usize,
    /// Filters per channel.
    m: usize,
    /// Row length of a phase plane and of the output grid.
    l: usize,
    /// Values of one phase plane (a whole number of blocks, room for every tap's run).
    plane: usize,
    /// Values of the output grid (oh·l rounded up).
    out: usize,
    /// Values of one phase plane of the padded input's gradient (rows ⌈Hp/s⌉).
    gl: usize,
    /// Leading zeros of δ's plane for the input gradient's gather, and its length.
    lead: usize,
    dpad: usize,
}

impl Grid {
    fn of(sh: &ConvShape) -> Grid {
        let s = sh.s;
        let (hp, wp) = (sh.h + 2 * sh.ph, sh.w + 2 * sh.pw);
        let (ri, rj) = ((sh.kh - 1) / s, (sh.kw - 1) / s);
        let l = wp.div_ceil(s).max(sh.ow + rj);
        let hq = hp.div_ceil(s).max(sh.oh + ri);
        let out = round(sh.oh * l);
        let plane = round((hq * l).max(out + ri * l + rj));
        let gl = round(hp.div_ceil(s) * l);
        let lead = ri * l + rj;
        Grid {
            s,
            kh: sh.kh,
            kw: sh.kw,
            h: sh.h,
            w: sh.w,
            ph: sh.ph,
            pw: sh.pw,

            m: sh.f / sh.c,
            l,
            plane,
            out,
            gl,
            lead,
            dpad: round(gl + lead),
        }
    }

    fn taps(&self) -> usize {
        self.kh * self.kw
    }

    /// Where tap (i, j)'s run starts in the phase planes.
    fn offset(&self, i: usize, j: usize) -> usize {
        ((i % self.s) * self.s + j % self.s) * self.plane + (i / self.s) * self.l + j / self.s
    }

    /// Scratch of one task: the largest of the three passes' buffers.
    fn slot(&self) -> usize {
        let phases = self.s * self.s * self.plane;
        let forward = phases + self.out;
        let dx = self.m * self.dpad + self.s * self.s * self.gl;
        let dw = phases + self.m * self.out + self.m * self.taps() * CH;
        forward.max(dx).max(dw)
    }

    /// Writes one input plane [H][W] into the phase planes (their border stays as it is: zero).
    fn phases(&self, x: &[f32], p: &mut [f32]) {
        let s = self.s;
        for y in 0..self.h {
            let (yp, row) = (y + self.ph, &x[y * self.w..(y + 1) * self.w]);
            let base = (yp % s) * s * self.plane + (yp / s) * self.l;
            if s == 1 {
                p[base + self.pw..base + self.pw + self.w].copy_from_slice(row);
                continue;
            }
            for (xx, &v) in row.iter().enumerate() {
                let xp = xx + self.pw;
                p[base + (xp % s) * self.plane + xp / s] = v;
            }
        }
    }
}

/// Scratch values for `tasks` tasks.
pub fn scratch_len(sh: &ConvShape, _batch: usize, tasks: usize) -> usize {
    tasks * Grid::of(sh).slot()
}

/// A pointer that tasks use for disjoint parts of one buffer.
struct Ptr(*mut f32);
// SAFETY: each task writes only its own part.
unsafe impl Sync for Ptr {}

/// Runs `f(task, units)` over `0..n` units split into contiguous ranges, one per task, on the
/// team when the work (`macs`) is large enough.
fn split(n: usize, macs: usize, team: &Team, f: &(dyn Fn(usize, std::ops::Range<usize>) + Sync)) {
    let parts = if macs >= PARALLEL_MIN { team.size().min(n).max(1) } else { 1 };
    let per = n.div_ceil(parts).max(1);
    team.run(n.div_ceil(per), &|t| f(t, t * per..((t + 1) * per).min(n)));
}

/// Output grid `z` [out] = Σ over taps of w[tap] · P's run, block by block.
#[inline(always)]
fn forward_plane_imp<M: Madd>(g: &Grid, p: &[f32], w: &[f32], z: &mut [f32]) {
    for (q0, zb) in (0..g.out).step_by(CH).zip(z.chunks_exact_mut(CH)) {
        let mut acc = [0f32; CH];
        for i in 0..g.kh {
            for j in 0..g.kw {
                let wv = w[i * g.kw + j];
                let o = g.offset(i, j) + q0;
                let src: &[f32; CH] = p[o..o + CH].try_into().unwrap();
                for t in 0..CH {
                    acc[t] = M::madd(wv, src[t], acc[t]);
                }
            }
        }
        zb.copy_from_slice(&acc);
    }
}

dispatch! {
    fn forward_plane = forward_plane_imp(g: &Grid, p: &[f32], w: &[f32], z: &mut [f32])
}

/// dW's partial sums: acc[tap][CH] += δ's grid · P's run for each tap.
#[inline(always)]
fn weight_grad_plane_imp<M: Madd>(g: &Grid, p: &[f32], d: &[f32], acc: &mut [f32]) {
    for (tap, a) in acc.chunks_exact_mut(CH).enumerate() {
        let o = g.offset(tap / g.kw, tap % g.kw);
        let mut r: [f32; CH] = (&*a).try_into().unwrap();
        for (q0, db) in (0..g.out).step_by(CH).zip(d.chunks_exact(CH)) {
            let src: &[f32; CH] = p[o + q0..o + q0 + CH].try_into().unwrap();
            for t in 0..CH {
                r[t] = M::madd(db[t], src[t], r[t]);
            }
        }
        a.copy_from_slice(&r);
    }
}

dispatch! {
    fn weight_grad_plane = weight_grad_plane_imp(g: &Grid, p: &[f32], d: &[f32], acc: &mut [f32])
}

/// The phase planes of the padded input's gradient: gp[r][p][q] = Σ over the multipliers k and
/// the taps (i, j) of phase (r, p) of w[k][i][j] · δ_k's padded grid at q + lead − (i/s)·l − j/s.
#[inline(always)]
fn input_grad_planes_imp<M: Madd>(g: &Grid, dpad: &[f32], w: &[f32], gp: &mut [f32]) {
    let (s, taps) = (g.s, g.taps());
    for (ph, gplane) in gp.chunks_exact_mut(g.gl).enumerate() {
        let (r, pc) = (ph / s, ph % s);
        for (q0, gb) in (0..g.gl).step_by(CH).zip(gplane.chunks_exact_mut(CH)) {
            let mut acc = [0f32; CH];
            for k in 0..g.m {
                let dk = &dpad[k * g.dpad..(k + 1) * g.dpad];
                for i in (r..g.kh).step_by(s) {
                    for j in (pc..g.kw).step_by(s) {
                        let wv = w[k * taps + i * g.kw + j];
                        let o = q0 + g.lead - (i / s) * g.l - j / s;
                        let src: &[f32; CH] = dk[o..o + CH].try_into().unwrap();
                        for t in 0..CH {
                            acc[t] = M::madd(wv, src[t], acc[t]);
                        }
                    }
                }
            }
            gb.copy_from_slice(&acc);
        }
    }
}

dispatch! {
    fn input_grad_planes = input_grad_planes_imp(g: &Grid, dpad: &[f32], w: &[f32], gp: &mut [f32])
}

/// Forward: z [F][B][H'][W'] = act(conv(x, w) + b); `scratch` holds [`scratch_len`] values.
#[allow(clippy::too_many_arguments)]
pub fn forward(
    sh: &ConvShape,
    batch: usize,
    act: Activation,
    x: &[f32],
    w: &[f32],
    b: &[f32],
    scratch: &mut [f32],
    z: &mut [f32],
    team: &Team,
) {
    let g = Grid::of(sh);
    let (plane, oplane, taps, slot) = (sh.h * sh.w, sh.oh * sh.ow, g.taps(), g.slot());
    let units = sh.c * batch;
    assert!(x.len() >= units * plane && w.len() >= sh.f * taps && z.len() >= sh.f * batch * oplane);
    assert!(scratch.len() >= team.size().min(units) * slot);
    let (zp, sp) = (Ptr(z.as_mut_ptr()), Ptr(scratch.as_mut_ptr()));
    split(units, sh.f * batch * g.out * taps, team, &|t, range| {
        let (zp, sp) = (&zp, &sp);
        // SAFETY: slot t is this task's.
        let slot = unsafe { std::slice::from_raw_parts_mut(sp.0.add(t * slot), slot) };
        let (p, rest) = slot.split_at_mut(g.s * g.s * g.plane);
        let grid = &mut rest[..g.out];
        p.fill(0.0);
        for u in range {
            let (c, e) = (u / batch, u % batch);
            g.phases(&x[u * plane..(u + 1) * plane], p);
            for f in c * g.m..(c + 1) * g.m {
                forward_plane(&g, p, &w[f * taps..(f + 1) * taps], grid);
                // SAFETY: plane (f, e) of z belongs to unit (c, e), this task's.
                let zf = unsafe { std::slice::from_raw_parts_mut(zp.0.add((f * batch + e) * oplane), oplane) };
                for (oy, row) in zf.chunks_exact_mut(sh.ow).enumerate() {
                    row.copy_from_slice(&grid[oy * g.l..oy * g.l + sh.ow]);
                    finish(act, row, if sh.bias { Some(b[f]) } else { None });
                }
            }
        }
    });
}

/// Backward, given δ [F][B][H'][W']: dw [F][kh·kw], db [F] (when the layer has a bias) and,
/// when asked, dx [C][B][H][W].
#[allow(clippy::too_many_arguments)]
pub fn backward(
    sh: &ConvShape,
    batch: usize,
    x: &[f32],
    w: &[f32],
    delta: &[f32],
    dw: &mut [f32],
    db: &mut [f32],
    scratch: &mut [f32],
    dx: Option<&mut [f32]>,
    team: &Team,
) {
    let g = Grid::of(sh);
    let (plane, oplane, taps, slot) = (sh.h * sh.w, sh.oh * sh.ow, g.taps(), g.slot());
    let n = batch * oplane;
    assert!(x.len() >= sh.c * batch * plane && w.len() >= sh.f * taps && dw.len() >= sh.f * taps);
    assert!(delta.len() >= sh.f * n && scratch.len() >= team.size().min(sh.c * batch) * slot);
    if sh.bias {
        for (f, d) in db[..sh.f].iter_mut().enumerate() {
            *d = row_sum(&delta[f * n..(f + 1) * n]);
        }
    }
    let macs = sh.f * batch * g.out * taps;
    let (sp, dwp) = (Ptr(scratch.as_mut_ptr()), Ptr(dw.as_mut_ptr()));
    // dW: tasks split the channels; each sums its filters' values over the examples in order.
    split(sh.c, macs, team, &|t, range| {
        let (sp, dwp) = (&sp, &dwp);
        // SAFETY: slot t is this task's.
        let slot = unsafe { std::slice::from_raw_parts_mut(sp.0.add(t * slot), slot) };
        let (p, rest) = slot.split_at_mut(g.s * g.s * g.plane);
        let (dgrid, rest) = rest.split_at_mut(g.m * g.out);
        let acc = &mut rest[..g.m * taps * CH];
        p.fill(0.0);
        dgrid.fill(0.0);
        for c in range {
            acc.fill(0.0);
            for e in 0..batch {
                let u = c * batch + e;
                g.phases(&x[u * plane..(u + 1) * plane], p);
                for k in 0..g.m {
                    let f = c * g.m + k;
                    let dk = &mut dgrid[k * g.out..(k + 1) * g.out];
                    let src = &delta[(f * batch + e) * oplane..(f * batch + e + 1) * oplane];
                    for (oy, row) in src.chunks_exact(sh.ow).enumerate() {
                        dk[oy * g.l..oy * g.l + sh.ow].copy_from_slice(row);
                    }
                    weight_grad_plane(&g, p, dk, &mut acc[k * taps * CH..(k + 1) * taps * CH]);
                }
            }
            for (k, a) in acc.chunks_exact(taps * CH).enumerate() {
                let f = c * g.m + k;
                for (tap, lanes) in a.chunks_exact(CH).enumerate() {
                    // SAFETY: the filters of channel c are this task's.
                    unsafe { *dwp.0.add(f * taps + tap) = tree_sum(lanes) };
                }
            }
        }
    });
    let Some(dx) = dx else { return };
    assert!(dx.len() >= sh.c * batch * plane);
    let dxp = Ptr(dx.as_mut_ptr());
    split(sh.c * batch, macs, team, &|t, range| {
        let (sp, dxp) = (&sp, &dxp);
        // SAFETY: slot t is this task's.
        let slot = unsafe { std::slice::from_raw_parts_mut(sp.0.add(t * slot), slot) };
        let (dpad, rest) = slot.split_at_mut(g.m * g.dpad);
        let gp = &mut rest[..g.s * g.s * g.gl];
        dpad.fill(0.0);
        for u in range {
            let (c, e) = (u / batch, u % batch);
            for k in 0..g.m {
                let f = c * g.m + k;
                let dk = &mut dpad[k * g.dpad..(k + 1) * g.dpad];
                let src = &delta[(f * batch + e) * oplane..(f * batch + e + 1) * oplane];
                for (oy, row) in src.chunks_exact(sh.ow).enumerate() {
                    let at = g.lead + oy * g.l;
                    dk[at..at + sh.ow].copy_from_slice(row);
                }
            }
            input_grad_planes(&g, dpad, &w[c * g.m * taps..(c + 1) * g.m * taps], gp);
            // SAFETY: plane (c, e) of dx is this unit's, this task's.
            let dxe = unsafe { std::slice::from_raw_parts_mut(dxp.0.add(u * plane), plane) };
            let s = g.s;
            for (y, row) in dxe.chunks_exact_mut(sh.w).enumerate() {
                let yp = y + sh.ph;
                let base = (yp % s) * s * g.gl + (yp / s) * g.l;
                if s == 1 {
                    row.copy_from_slice(&gp[base + sh.pw..base + sh.pw + sh.w]);
                    continue;
                }
                for (xx, v) in row.iter_mut().enumerate() {
                    let xp = xx + sh.pw;
                    *v = gp[base + (xp % s) * g.gl + xp / s];
                }
            }
        }
    });
}

/// Sum of [`CH`] partial sums in a fixed tree.
fn tree_sum(v: &[f32]) -> f32 {
    let mut a: [f32; CH] = v.try_into().unwrap();
    let mut w = CH;
    while w > 1 {
        w /= 2;
        for k in 0..w {
            a[k] += a[k + w];
        }
    }
    a[0]
}
