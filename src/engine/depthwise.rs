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

use crate::engine::conv::{ConvShape, finish};
use crate::engine::simd::{Madd, dispatch};
use crate::engine::team::{Parts, Team};
use crate::spec::Activation;

/// Outputs per register block (4 AVX-512 or 8 AVX2 vectors: enough independent chains).
const CH: usize = 64;

/// The most taps (kh·kw, times the filters per channel for the input gradient) this kernel
/// takes; a larger depthwise convolution runs as one small convolution per group.
pub const MAX_TAPS: usize = 64;

/// Planes processed on one thread below this many multiply-adds.
const PARALLEL_MIN: usize = 1 << 16;

fn round(n: usize) -> usize {
    n.div_ceil(CH) * CH
}

/// The grid of one depthwise convolution over a stack of `g` examples.
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
    /// Examples stacked in one grid (the last stack of a batch may hold fewer).
    g: usize,
    /// Rows of one example in a phase plane (its padded height, rounded up to a multiple of s,
    /// over s), and the row length of a phase plane and of the output grid.
    r: usize,
    l: usize,
    /// Values of one phase plane (a whole number of blocks, room for every tap's run).
    plane: usize,
    /// Values of the output grid (g·r·l rounded up) and of one phase plane of the input's
    /// gradient (the same).
    out: usize,
    /// Leading zeros of δ's grid for the input gradient's gather, and its length.
    lead: usize,
    dpad: usize,
}

/// Values of the output grid a stack of examples aims at (the grid and its phase planes then
/// stay in L1).
const STACK_VALUES: usize = 2048;

impl Grid {
    fn of(sh: &ConvShape, batch: usize) -> Grid {
        let s = sh.s;
        let (hp, wp) = (sh.h + 2 * sh.ph, sh.w + 2 * sh.pw);
        let (ri, rj) = ((sh.kh - 1) / s, (sh.kw - 1) / s);
        // r − oh ≥ ri and l − ow ≥ rj: a tap's run never reaches the next example or row.
        let (r, l) = (hp.div_ceil(s), wp.div_ceil(s));
        let g = (STACK_VALUES / (r * l)).clamp(1, batch.max(1));
        let out = round(g * r * l);
        let plane = round(out + ri * l + rj);
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
            g,
            r,
            l,
            plane,
            out,
            lead,
            dpad: round(out + lead),
        }
    }

    fn taps(&self) -> usize {
        self.kh * self.kw
    }

    /// Where tap (i, j)'s run starts in the phase planes.
    fn offset(&self, i: usize, j: usize) -> usize {
        ((i % self.s) * self.s + j % self.s) * self.plane + (i / self.s) * self.l + j / self.s
    }

    /// Stacks of examples in a batch.
    fn stacks(&self, batch: usize) -> usize {
        batch.div_ceil(self.g)
    }

    /// Scratch of one task: the largest of the three passes' buffers.
    fn slot(&self) -> usize {
        let phases = self.s * self.s * self.plane;
        let forward = phases + self.out;
        let dx = self.m * self.dpad + self.s * self.s * self.out;
        let dw = phases + self.m * self.out + self.m * self.taps() * CH;
        forward.max(dx).max(dw)
    }

    /// Writes the planes [H][W] of a stack of examples (consecutive in x) into the phase
    /// planes; their border stays as it is (zero).
    fn phases(&self, x: &[f32], p: &mut [f32]) {
        phases_fast(self, x, p)
    }

    /// The inverse: the planes [H][W] of a stack of examples from the phase planes of the
    /// padded input's gradient (`gp`, planes of `out` values), its border dropped.
    fn unphase(&self, gp: &[f32], dx: &mut [f32]) {
        unphase_fast(self, gp, dx)
    }
}

/// Padded column s·X + pc for X ≥ x0 reads input column s·X + pc − pw, from `first`: (x0,
/// first, values), or None when no input column lands in this phase.
#[inline(always)]
fn columns(s: usize, pw: usize, w: usize, pc: usize) -> Option<(usize, usize, usize)> {
    let x0 = pw.saturating_sub(pc).div_ceil(s);
    let first = s * x0 + pc - pw;
    (first < w).then(|| (x0, first, (w - first).div_ceil(s)))
}

// The copies compiled for the path's vectors too (the stride-2 columns are a shuffle there).
#[inline(always)]
#[allow(clippy::extra_unused_type_parameters)] // the dispatch macro passes one to every kernel
fn phases_imp<M: Madd>(g: &Grid, x: &[f32], p: &mut [f32]) {
    match g.s {
        1 => phases_copy::<1>(g, x, p),
        2 => phases_2(g, x, p),
        _ => phases_any(g, x, p),
    }
}

/// [`Grid::phases`] at stride 2: each input row's column pairs split into the two column
/// phases in one pass (a de-interleave the compiler vectorises).
#[inline(always)]
fn phases_2(g: &Grid, x: &[f32], p: &mut [f32]) {
    let plane = g.h * g.w;
    // Input column 2t goes to phase pw%2, column (2t + pw)/2; column 2t+1 to the other phase,
    // column (2t + 1 + pw)/2.
    let (pa, pb) = (g.pw % 2, (g.pw + 1) % 2);
    let (xa, xb) = (g.pw / 2, g.pw.div_ceil(2));
    let (na, nb) = (g.w.div_ceil(2), g.w / 2);
    for (k, xe) in x.chunks_exact(plane).enumerate() {
        for (y, row) in xe.chunks_exact(g.w).enumerate() {
            let yp = y + g.ph;
            let at = (k * g.r + yp / 2) * g.l;
            let (ba, bb) = (((yp % 2) * 2 + pa) * g.plane + at + xa, ((yp % 2) * 2 + pb) * g.plane + at + xb);
            // The two phases are different planes: two disjoint slices.
            let (da, db) = if ba < bb {
                let (lo, hi) = p.split_at_mut(bb);
                (&mut lo[ba..ba + na], &mut hi[..nb])
            } else {
                let (lo, hi) = p.split_at_mut(ba);
                (&mut hi[..na], &mut lo[bb..bb + nb])
            };
            for ((a, b), pair) in da.iter_mut().zip(db.iter_mut()).zip(row.chunks_exact(2)) {
                *a = pair[0];
                *b = pair[1];
            }
            if na > nb {
                da[na - 1] = row[g.w - 1];
            }
        }
    }
}

dispatch! {
    fn phases_fast = phases_imp(g: &Grid, x: &[f32], p: &mut [f32])
}

#[inline(always)]
#[allow(clippy::extra_unused_type_parameters)] // as above
fn unphase_imp<M: Madd>(g: &Grid, gp: &[f32], dx: &mut [f32]) {
    match g.s {
        1 => unphase_copy::<1>(g, gp, dx),
        2 => unphase_copy::<2>(g, gp, dx),
        _ => unphase_any(g, gp, dx),
    }
}

dispatch! {
    fn unphase_fast = unphase_imp(g: &Grid, gp: &[f32], dx: &mut [f32])
}

/// [`Grid::phases`] for a stride known at compile time (so the column loops vectorise).
#[inline(always)]
fn phases_copy<const S: usize>(g: &Grid, x: &[f32], p: &mut [f32]) {
    let plane = g.h * g.w;
    for (k, xe) in x.chunks_exact(plane).enumerate() {
        for (y, row) in xe.chunks_exact(g.w).enumerate() {
            let yp = y + g.ph;
            let at = (k * g.r + yp / S) * g.l;
            for pc in 0..S {
                let Some((x0, first, n)) = columns(S, g.pw, g.w, pc) else { continue };
                let base = ((yp % S) * S + pc) * g.plane + at + x0;
                let dst = &mut p[base..base + n];
                let src = &row[first..first + S * (n - 1) + 1];
                for (xx, d) in dst.iter_mut().enumerate() {
                    *d = src[S * xx];
                }
            }
        }
    }
}

/// [`Grid::unphase`] for a stride known at compile time.
#[inline(always)]
fn unphase_copy<const S: usize>(g: &Grid, gp: &[f32], dx: &mut [f32]) {
    let plane = g.h * g.w;
    for (k, dxe) in dx.chunks_exact_mut(plane).enumerate() {
        for (y, row) in dxe.chunks_exact_mut(g.w).enumerate() {
            let yp = y + g.ph;
            let at = (k * g.r + yp / S) * g.l;
            for pc in 0..S {
                let Some((x0, first, n)) = columns(S, g.pw, g.w, pc) else { continue };
                let base = ((yp % S) * S + pc) * g.out + at + x0;
                let src = &gp[base..base + n];
                let dst = &mut row[first..first + S * (n - 1) + 1];
                for (xx, &v) in src.iter().enumerate() {
                    dst[S * xx] = v;
                }
            }
        }
    }
}

/// [`Grid::phases`] for any stride.
fn phases_any(g: &Grid, x: &[f32], p: &mut [f32]) {
    let (s, plane) = (g.s, g.h * g.w);
    for (k, xe) in x.chunks_exact(plane).enumerate() {
        for (y, row) in xe.chunks_exact(g.w).enumerate() {
            let yp = y + g.ph;
            let at = (k * g.r + yp / s) * g.l;
            for pc in 0..s {
                let Some((x0, first, n)) = columns(s, g.pw, g.w, pc) else { continue };
                let base = ((yp % s) * s + pc) * g.plane + at + x0;
                for (d, &v) in p[base..base + n].iter_mut().zip(row[first..].iter().step_by(s)) {
                    *d = v;
                }
            }
        }
    }
}

/// [`Grid::unphase`] for any stride.
fn unphase_any(g: &Grid, gp: &[f32], dx: &mut [f32]) {
    let (s, plane) = (g.s, g.h * g.w);
    for (k, dxe) in dx.chunks_exact_mut(plane).enumerate() {
        for (y, row) in dxe.chunks_exact_mut(g.w).enumerate() {
            let yp = y + g.ph;
            let at = (k * g.r + yp / s) * g.l;
            for pc in 0..s {
                let Some((x0, first, n)) = columns(s, g.pw, g.w, pc) else { continue };
                let base = ((yp % s) * s + pc) * g.out + at + x0;
                for (d, &v) in row[first..].iter_mut().step_by(s).zip(&gp[base..base + n]) {
                    *d = v;
                }
            }
        }
    }
}

/// Scratch values for `tasks` tasks.
pub fn scratch_len(sh: &ConvShape, batch: usize, tasks: usize) -> usize {
    tasks * Grid::of(sh, batch).slot()
}

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
    let taps = g.taps();
    let mut offs = [0usize; MAX_TAPS];
    for (tap, o) in offs[..taps].iter_mut().enumerate() {
        *o = g.offset(tap / g.kw, tap % g.kw);
    }
    let p = &p[..g.s * g.s * g.plane];
    for (q0, zb) in (0..g.out).step_by(CH).zip(z.chunks_exact_mut(CH)) {
        let mut acc = [0f32; CH];
        for (&wv, &o) in w[..taps].iter().zip(&offs[..taps]) {
            let src: &[f32; CH] = p[o + q0..o + q0 + CH].try_into().unwrap();
            for t in 0..CH {
                acc[t] = M::madd(wv, src[t], acc[t]);
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
    for (ph, gplane) in gp.chunks_exact_mut(g.out).enumerate() {
        let (r, pc) = (ph / s, ph % s);
        // This phase's taps of every multiplier, in order: (weight, where its run starts).
        let (mut wv, mut offs, mut used) = ([0f32; MAX_TAPS], [0usize; MAX_TAPS], 0);
        for k in 0..g.m {
            for i in (r..g.kh).step_by(s) {
                for j in (pc..g.kw).step_by(s) {
                    wv[used] = w[k * taps + i * g.kw + j];
                    offs[used] = k * g.dpad + g.lead - (i / s) * g.l - j / s;
                    used += 1;
                }
            }
        }
        let dpad = &dpad[..g.m * g.dpad];
        for (q0, gb) in (0..g.out).step_by(CH).zip(gplane.chunks_exact_mut(CH)) {
            let mut acc = [0f32; CH];
            for (&wv, &o) in wv[..used].iter().zip(&offs[..used]) {
                let src: &[f32; CH] = dpad[o + q0..o + q0 + CH].try_into().unwrap();
                for t in 0..CH {
                    acc[t] = M::madd(wv, src[t], acc[t]);
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
    let g = Grid::of(sh, batch);
    let (plane, oplane, taps, slot) = (sh.h * sh.w, sh.oh * sh.ow, g.taps(), g.slot());
    let units = sh.c * g.stacks(batch);
    assert!(x.len() >= sh.c * batch * plane && w.len() >= sh.f * taps && z.len() >= sh.f * batch * oplane);
    assert!(scratch.len() >= team.size().min(units) * slot);
    let (zp, sp) = (Parts::of(z), Parts::of(scratch));
    split(units, sh.f * batch * g.r * g.l * taps, team, &|t, range| {
        let (zp, sp) = (&zp, &sp);
        // SAFETY: slot t is this task's.
        let slot = unsafe { sp.part(t * slot, slot) };
        let (p, rest) = slot.split_at_mut(g.s * g.s * g.plane);
        let grid = &mut rest[..g.out];
        p.fill(0.0);
        for u in range {
            let (c, e0) = (u / g.stacks(batch), u % g.stacks(batch) * g.g);
            let e1 = (e0 + g.g).min(batch);
            g.phases(&x[(c * batch + e0) * plane..(c * batch + e1) * plane], p);
            for f in c * g.m..(c + 1) * g.m {
                forward_plane(&g, p, &w[f * taps..(f + 1) * taps], grid);
                let bias = if sh.bias { Some(b[f]) } else { None };
                // SAFETY: planes (f, e0..e1) of z belong to unit (c, stack), this task's.
                let zf = unsafe { zp.part((f * batch + e0) * oplane, (e1 - e0) * oplane) };
                for (k, ze) in zf.chunks_exact_mut(oplane).enumerate() {
                    for (oy, row) in ze.chunks_exact_mut(sh.ow).enumerate() {
                        let at = (k * g.r + oy) * g.l;
                        row.copy_from_slice(&grid[at..at + sh.ow]);
                        finish(act, row, bias);
                    }
                }
            }
        }
    });
}

/// Backward, given δ [F][B][H'][W']: dw [F][kh·kw] and, when asked, dx [C][B][H][W] (the bias
/// gradient is the caller's, `conv::conv_backward_with`, as for every convolution).
#[allow(clippy::too_many_arguments)]
pub fn backward(
    sh: &ConvShape,
    batch: usize,
    x: &[f32],
    w: &[f32],
    delta: &[f32],
    dw: &mut [f32],
    scratch: &mut [f32],
    dx: Option<&mut [f32]>,
    team: &Team,
) {
    let g = Grid::of(sh, batch);
    let (plane, oplane, taps, slot) = (sh.h * sh.w, sh.oh * sh.ow, g.taps(), g.slot());
    let (n, stacks) = (batch * oplane, g.stacks(batch));
    assert!(x.len() >= sh.c * batch * plane && w.len() >= sh.f * taps && dw.len() >= sh.f * taps);
    assert!(delta.len() >= sh.f * n && scratch.len() >= team.size().min(sh.c * stacks) * slot);
    let macs = sh.f * batch * g.r * g.l * taps;
    // δ's planes of filter f, examples e0..e1, onto a grid (rows of l values, `lead` zeros
    // first); the grid's other values are left as they are.
    let to_grid = |f: usize, e0: usize, e1: usize, lead: usize, grid: &mut [f32]| {
        let src = &delta[(f * batch + e0) * oplane..(f * batch + e1) * oplane];
        for (k, de) in src.chunks_exact(oplane).enumerate() {
            for (oy, row) in de.chunks_exact(sh.ow).enumerate() {
                let at = lead + (k * g.r + oy) * g.l;
                grid[at..at + sh.ow].copy_from_slice(row);
            }
        }
    };
    let (sp, dwp) = (Parts::of(scratch), Parts::of(dw));
    // dW: tasks split the channels; each sums its filters' values over the stacks in order.
    split(sh.c, macs, team, &|t, range| {
        let (sp, dwp) = (&sp, &dwp);
        // SAFETY: slot t is this task's.
        let slot = unsafe { sp.part(t * slot, slot) };
        let (p, rest) = slot.split_at_mut(g.s * g.s * g.plane);
        let (dgrid, rest) = rest.split_at_mut(g.m * g.out);
        let acc = &mut rest[..g.m * taps * CH];
        for c in range {
            p.fill(0.0);
            dgrid.fill(0.0);
            acc.fill(0.0);
            for e0 in (0..batch).step_by(g.g) {
                let e1 = (e0 + g.g).min(batch);
                if e1 - e0 < g.g {
                    // A short last stack: the grid of the examples it lacks must add nothing.
                    p.fill(0.0);
                    dgrid.fill(0.0);
                }
                g.phases(&x[(c * batch + e0) * plane..(c * batch + e1) * plane], p);
                for k in 0..g.m {
                    let dk = &mut dgrid[k * g.out..(k + 1) * g.out];
                    to_grid(c * g.m + k, e0, e1, 0, dk);
                    weight_grad_plane(&g, p, dk, &mut acc[k * taps * CH..(k + 1) * taps * CH]);
                }
            }
            for (k, a) in acc.chunks_exact(taps * CH).enumerate() {
                let f = c * g.m + k;
                for (tap, lanes) in a.chunks_exact(CH).enumerate() {
                    // SAFETY: the filters of channel c are this task's.
                    unsafe { dwp.part(f * taps + tap, 1)[0] = tree_sum(lanes) };
                }
            }
        }
    });
    let Some(dx) = dx else { return };
    assert!(dx.len() >= sh.c * batch * plane);
    let dxp = Parts::of(dx);
    split(sh.c * stacks, macs, team, &|t, range| {
        let (sp, dxp) = (&sp, &dxp);
        // SAFETY: slot t is this task's.
        let slot = unsafe { sp.part(t * slot, slot) };
        let (dpad, rest) = slot.split_at_mut(g.m * g.dpad);
        let gp = &mut rest[..g.s * g.s * g.out];
        dpad.fill(0.0);
        for u in range {
            let (c, e0) = (u / stacks, u % stacks * g.g);
            let e1 = (e0 + g.g).min(batch);
            for k in 0..g.m {
                to_grid(c * g.m + k, e0, e1, g.lead, &mut dpad[k * g.dpad..(k + 1) * g.dpad]);
            }
            input_grad_planes(&g, dpad, &w[c * g.m * taps..(c + 1) * g.m * taps], gp);
            // SAFETY: planes (c, e0..e1) of dx are this unit's, this task's.
            let dxe = unsafe { dxp.part((c * batch + e0) * plane, (e1 - e0) * plane) };
            g.unphase(gp, dxe);
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
