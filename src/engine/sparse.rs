//! A convolution's backward pass over only the nonzero values of its output gradient.
//!
//! Behind a 2×2 max pool at most one output in four receives a gradient, and a relu zeroes
//! more of them, so most of δ = dL/dz is exactly zero (11.7–12.4% of it was nonzero in the second
//! convolution of the suite's network e over 500 steps on Fashion-MNIST, `examples/delta_share.rs`). The dense products
//! multiply every one of those zeros; here each nonzero δ[f][e][oy][ox] is visited once per
//! gradient:
//! - dW[f] += δ · window(e, oy, ox)                    (the input window it was computed from)
//! - window(e, oy, ox) of dx += Σ_f δ[f] · w[f]        (the position's nonzero filters)
//!
//! Shapes (B = batch, Hp×Wp the zero-padded input, every tensor row-major):
//! - xt: [B][Hp][Wp][C], the input channels-last with its zero border: one row of a window is
//!   kw·C consecutive values, so a window is kh runs of whole 8-lane vectors (C % 8 == 0)
//! - wt: [F][kh][kw][C], the weights in the window's order (for dx)
//! - dW is summed as [F][kh][kw][C] in a task's slot and written back as [F][C][kh][kw]
//! - dx is summed per example in a padded channels-last plane, then written as [C][B][H][W]
//!
//! A run of up to 12 vectors of the sum stays in registers while the nonzero values stream
//! past, each adding one run of the input (or of the weights): one load per FMA, which is why
//! this only pays where few values are nonzero (docs/kernels.md, "Sparse backward").
//!
//! dW splits over filters and dx over examples. Every value is one chain of FMAs in a fixed
//! order (dW: examples, then positions; dx: positions, then filters), so results do not depend
//! on the thread count. A zero δ would add δ·x = 0, so skipping it changes no finite sum.

#![cfg(target_arch = "x86_64")]

use super::avx::{Vf, W8, W16};
use super::conv::{ConvShape, split_items};
use super::gemm::PARALLEL_MIN_MACS;
use super::team::Team;

/// Whether this convolution can take the sparse backward on this CPU.
pub fn eligible(sh: &ConvShape) -> bool {
    sh.c.is_multiple_of(8) && super::simd::has_avx2_fma()
}

/// Values of one example's padded channels-last plane.
fn plane_len(sh: &ConvShape) -> usize {
    let (hp, wp) = sh.padded();
    hp * wp * sh.c
}

/// The shared scratch: xt, then wt.
pub fn head_len(sh: &ConvShape, batch: usize) -> usize {
    batch * plane_len(sh) + sh.f * sh.ckk()
}

/// Scratch values a task needs: the dW sums of its filters (all of them, on one thread) and a
/// list of positions; or a dx plane and a list of filters.
pub fn slot_len(sh: &ConvShape) -> usize {
    (sh.f * sh.ckk() + 2 * sh.oh * sh.ow).max(plane_len(sh) + 2 * sh.f)
}

/// A pointer that tasks use for disjoint parts of one buffer.
struct Ptr(*mut f32);
// SAFETY: each task writes only its own part (its examples' planes, its filters, its slot).
unsafe impl Sync for Ptr {}

/// Fills dw [F][C][kh][kw] and, when given, dx [C][B][H][W] from x [C][B][H][W], w
/// [F][C][kh][kw] and δ [F][B·H'·W']; `head` holds [`head_len`] values, `slots` a slot of
/// `per_task` ≥ [`slot_len`] values per team member.
///
/// SAFETY: AVX2 and FMA present, C % 8 == 0 ([`eligible`]).
#[allow(clippy::too_many_arguments)]
pub unsafe fn backward(
    sh: &ConvShape,
    batch: usize,
    x: &[f32],
    w: &[f32],
    delta: &[f32],
    dw: &mut [f32],
    dx: Option<&mut [f32]>,
    head: &mut [f32],
    slots: &mut [f32],
    per_task: usize,
    team: &Team,
) {
    assert!(sh.c.is_multiple_of(8) && per_task >= slot_len(sh));
    let (ckk, n) = (sh.ckk(), batch * sh.oh * sh.ow);
    assert!(x.len() >= sh.c * batch * sh.h * sh.w && w.len() >= sh.f * ckk && delta.len() >= sh.f * n);
    let (xt, rest) = head.split_at_mut(batch * plane_len(sh));
    channels_last(sh, batch, x, xt, team);
    let mut tasks = Tasks { team, slots, per_task, parallel: sh.f * ckk * n >= PARALLEL_MIN_MACS };
    // SAFETY: the caller's promises.
    unsafe { weight_grad(sh, batch, xt, delta, dw, &mut tasks) };
    if let Some(dx) = dx {
        let wt = &mut rest[..sh.f * ckk];
        weights_last(sh, w, wt);
        // SAFETY: as above.
        unsafe { input_grad(sh, batch, wt, delta, dx, &mut tasks) };
    }
}

/// The team and the scratch slots (one of `per_task` values per member) a pass splits over;
/// `parallel`: whether the pass is large enough to split at all.
struct Tasks<'a> {
    team: &'a Team,
    slots: &'a mut [f32],
    per_task: usize,
    parallel: bool,
}

impl Tasks<'_> {
    /// Runs `f(range, slot)` over `0..items` in contiguous ranges, one per task, each task with
    /// its own slot.
    fn run(&mut self, items: usize, f: &(dyn Fn(std::ops::Range<usize>, &mut [f32]) + Sync)) {
        let parts = if self.parallel { self.team.size().min(items) } else { 1 };
        let per = items.div_ceil(parts.max(1)).max(1);
        let tasks = items.div_ceil(per);
        let per_task = self.per_task;
        assert!(self.slots.len() >= tasks * per_task);
        let sp = Ptr(self.slots.as_mut_ptr());
        self.team.run(tasks, &|t| {
            let sp = &sp;
            // SAFETY: slot t lies inside `slots` (asserted above) and is this task's alone.
            let slot = unsafe { std::slice::from_raw_parts_mut(sp.0.add(t * per_task), per_task) };
            f(t * per..((t + 1) * per).min(items), slot);
        });
    }
}

/// x [C][B][H][W] into xt [B][Hp][Wp][C], examples split across the team.
fn channels_last(sh: &ConvShape, batch: usize, x: &[f32], xt: &mut [f32], team: &Team) {
    let (plane, wp, c) = (plane_len(sh), sh.padded().1, sh.c);
    let base = Ptr(xt.as_mut_ptr());
    split_items(batch, batch * plane, team, &|range| {
        let base = &base;
        for e in range {
            // SAFETY: example e's plane is this task's alone.
            let dst = unsafe { std::slice::from_raw_parts_mut(base.0.add(e * plane), plane) };
            dst.fill(0.0);
            for ch in 0..c {
                let src = &x[(ch * batch + e) * sh.h * sh.w..][..sh.h * sh.w];
                for (y, row) in src.chunks_exact(sh.w).enumerate() {
                    let at = ((y + sh.ph) * wp + sh.pw) * c + ch;
                    for (i, &v) in row.iter().enumerate() {
                        dst[at + i * c] = v;
                    }
                }
            }
        }
    });
}

/// w [F][C][kh][kw] into wt [F][kh][kw][C].
fn weights_last(sh: &ConvShape, w: &[f32], wt: &mut [f32]) {
    let kk = sh.kh * sh.kw;
    for (f, out) in wt.chunks_exact_mut(sh.ckk()).enumerate() {
        for (t, taps) in out.chunks_exact_mut(sh.c).enumerate() {
            for (ch, v) in taps.iter_mut().enumerate() {
                *v = w[(f * sh.c + ch) * kk + t];
            }
        }
    }
}

/// Scratch values reused as a list of offsets (same size and alignment).
fn as_offsets(values: &mut [f32]) -> &mut [u32] {
    // SAFETY: u32 and f32 have one size and alignment, and every bit pattern is a valid u32.
    unsafe { std::slice::from_raw_parts_mut(values.as_mut_ptr().cast::<u32>(), values.len()) }
}

/// Offset in a padded channels-last plane of the window of output position q.
fn window_at(sh: &ConvShape, q: usize) -> usize {
    let (oy, ox) = (q / sh.ow, q % sh.ow);
    (oy * sh.s * sh.padded().1 + ox * sh.s) * sh.c
}

/// dW, filters split into contiguous ranges.
///
/// SAFETY: AVX2/FMA; slots of at least [`slot_len`] values.
unsafe fn weight_grad(sh: &ConvShape, batch: usize, xt: &[f32], delta: &[f32], dw: &mut [f32], tasks: &mut Tasks) {
    let (ckk, oplane, plane, wp) = (sh.ckk(), sh.oh * sh.ow, plane_len(sh), sh.padded().1);
    let n = batch * oplane;
    assert!(dw.len() >= sh.f * ckk && tasks.per_task >= slot_len(sh));
    let dwp = Ptr(dw.as_mut_ptr());
    tasks.run(sh.f, &|filters, slot| {
        let dwp = &dwp;
        let (sums, list) = slot.split_at_mut(filters.len() * ckk);
        let (offs, vals) = list[..2 * oplane].split_at_mut(oplane);
        let offs = as_offsets(offs);
        sums.fill(0.0);
        for e in 0..batch {
            let xe = &xt[e * plane..(e + 1) * plane];
            for f in filters.clone() {
                let d = &delta[f * n + e * oplane..][..oplane];
                let mut len = 0;
                for (q, &v) in d.iter().enumerate() {
                    if v != 0.0 {
                        offs[len] = window_at(sh, q) as u32;
                        vals[len] = v;
                        len += 1;
                    }
                }
                if len == 0 {
                    continue;
                }
                let sum = &mut sums[(f - filters.start) * ckk..][..ckk];
                for (i, row) in sum.chunks_exact_mut(sh.kw * sh.c).enumerate() {
                    // SAFETY: every offset plus a window row lies inside the plane.
                    unsafe { add_runs(row, xe[i * wp * sh.c..].as_ptr(), &offs[..len], &vals[..len]) };
                }
            }
        }
        let kk = sh.kh * sh.kw;
        for (fi, sum) in sums.chunks_exact(ckk).enumerate() {
            for (tap, values) in sum.chunks_exact(sh.c).enumerate() {
                for (ch, &v) in values.iter().enumerate() {
                    // SAFETY: the rows of these filters are this task's.
                    unsafe { *dwp.0.add(((filters.start + fi) * sh.c + ch) * kk + tap) = v };
                }
            }
        }
    });
}

/// dx, examples split into contiguous ranges.
///
/// SAFETY: AVX2/FMA; slots of at least [`slot_len`] values.
unsafe fn input_grad(sh: &ConvShape, batch: usize, wt: &[f32], delta: &[f32], dx: &mut [f32], tasks: &mut Tasks) {
    let (ckk, oplane, plane, wp) = (sh.ckk(), sh.oh * sh.ow, plane_len(sh), sh.padded().1);
    let n = batch * oplane;
    assert!(dx.len() >= sh.c * batch * sh.h * sh.w && tasks.per_task >= slot_len(sh));
    let dxp = Ptr(dx.as_mut_ptr());
    tasks.run(batch, &|examples, slot| {
        let dxp = &dxp;
        let (sums, list) = slot.split_at_mut(plane);
        let (offs, vals) = list[..2 * sh.f].split_at_mut(sh.f);
        let offs = as_offsets(offs);
        for e in examples {
            sums.fill(0.0);
            for q in 0..oplane {
                let mut len = 0;
                for f in 0..sh.f {
                    let v = delta[f * n + e * oplane + q];
                    if v != 0.0 {
                        offs[len] = (f * ckk) as u32;
                        vals[len] = v;
                        len += 1;
                    }
                }
                if len == 0 {
                    continue;
                }
                let at = window_at(sh, q);
                for i in 0..sh.kh {
                    let row = &mut sums[at + i * wp * sh.c..][..sh.kw * sh.c];
                    // SAFETY: every filter's offset plus a window row lies inside wt.
                    unsafe { add_runs(row, wt[i * sh.kw * sh.c..].as_ptr(), &offs[..len], &vals[..len]) };
                }
            }
            for ch in 0..sh.c {
                for y in 0..sh.h {
                    for xx in 0..sh.w {
                        let v = sums[((y + sh.ph) * wp + xx + sh.pw) * sh.c + ch];
                        // SAFETY: example e's planes of dx are this task's.
                        unsafe { *dxp.0.add(((ch * batch + e) * sh.h + y) * sh.w + xx) = v };
                    }
                }
            }
        }
    });
}

/// sum[..] += Σ_k vals[k] · base[offs[k]..][..sum.len()], in runs of up to 12 vectors held in
/// registers across the list (sum.len() a multiple of 8): 16-lane vectors on the avx512 path
/// (the last one masked when sum.len() is an odd multiple of 8), 8-lane ones otherwise. Each
/// value is summed over the list in order, so both widths give the same bits.
///
/// SAFETY: AVX2/FMA; base + offset + sum.len() in bounds for every offset.
unsafe fn add_runs(sum: &mut [f32], base: *const f32, offs: &[u32], vals: &[f32]) {
    debug_assert!(sum.len().is_multiple_of(8));
    // SAFETY: the caller's promises; the path in use runs only where the CPU has it.
    unsafe {
        if super::simd::has_avx512() {
            add_runs_512(sum, base, offs, vals)
        } else {
            add_runs_256(sum, base, offs, vals)
        }
    }
}

/// SAFETY: as [`add_runs`].
#[target_feature(enable = "avx2,fma")]
unsafe fn add_runs_256(sum: &mut [f32], base: *const f32, offs: &[u32], vals: &[f32]) {
    unsafe { add_runs_imp::<W8>(sum, base, offs, vals) }
}

/// SAFETY: as [`add_runs`], and AVX-512F present.
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn add_runs_512(sum: &mut [f32], base: *const f32, offs: &[u32], vals: &[f32]) {
    unsafe { add_runs_imp::<W16>(sum, base, offs, vals) }
}

#[inline(always)]
unsafe fn add_runs_imp<V: Vf>(sum: &mut [f32], base: *const f32, offs: &[u32], vals: &[f32]) {
    let full = sum.len() / V::L * V::L;
    let mut at = 0;
    // SAFETY: the caller's bounds, shifted by `at` on both sides.
    unsafe {
        let all = V::mask(V::L);
        while at < full {
            let (acc, b) = (sum[at..].as_mut_ptr(), base.add(at));
            at += V::L
                * match (full - at) / V::L {
                    12.. => run::<V, 12, false>(acc, b, offs, vals, all),
                    11 => run::<V, 11, false>(acc, b, offs, vals, all),
                    10 => run::<V, 10, false>(acc, b, offs, vals, all),
                    9 => run::<V, 9, false>(acc, b, offs, vals, all),
                    8 => run::<V, 8, false>(acc, b, offs, vals, all),
                    7 => run::<V, 7, false>(acc, b, offs, vals, all),
                    6 => run::<V, 6, false>(acc, b, offs, vals, all),
                    5 => run::<V, 5, false>(acc, b, offs, vals, all),
                    4 => run::<V, 4, false>(acc, b, offs, vals, all),
                    3 => run::<V, 3, false>(acc, b, offs, vals, all),
                    2 => run::<V, 2, false>(acc, b, offs, vals, all),
                    _ => run::<V, 1, false>(acc, b, offs, vals, all),
                };
        }
        if at < sum.len() {
            let mask = V::mask(sum.len() - at);
            run::<V, 1, true>(sum[at..].as_mut_ptr(), base.add(at), offs, vals, mask);
        }
    }
}

/// One run of N vectors (the last one covering the lanes of `mask` when MASKED): returns N.
///
/// SAFETY: as [`add_runs`], for the run's values.
#[inline(always)]
unsafe fn run<V: Vf, const N: usize, const MASKED: bool>(
    acc: *mut f32,
    base: *const f32,
    offs: &[u32],
    vals: &[f32],
    mask: V::Mask,
) -> usize {
    let last = |v: usize| MASKED && v + 1 == N;
    // SAFETY: the caller's bounds.
    unsafe {
        let mut r = [V::zero(); N];
        for (v, reg) in r.iter_mut().enumerate() {
            let p = acc.add(V::L * v);
            *reg = if last(v) { V::load_masked(p, mask) } else { V::load(p) };
        }
        for (&o, &d) in offs.iter().zip(vals) {
            let p = base.add(o as usize);
            let g = V::splat(&d);
            for (v, reg) in r.iter_mut().enumerate() {
                let x = if last(v) { V::load_masked(p.add(V::L * v), mask) } else { V::load(p.add(V::L * v)) };
                *reg = V::fma(g, x, *reg);
            }
        }
        for (v, reg) in r.iter().enumerate() {
            let p = acc.add(V::L * v);
            if last(v) {
                V::store_masked(p, mask, *reg);
            } else {
                V::store(p, *reg);
            }
        }
    }
    N
}
