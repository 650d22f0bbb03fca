//! The forward product of a convolution over shifted rows of the padded input, without im2col
//! or gathered panels (the forward counterpart of `shifted`; a stride > 1 reads the input's
//! phase planes, `shifted::Grid`).
//!
//! Shapes (B = batch, Hp/Wp the padded input's height and width, H'/W' the output's):
//! - xp: [C][B][Hp][Wp] then a zero tail (`shifted::lay_out`; at stride s, s·s phase planes of
//!   ⌈Hp/s⌉ × ⌈Wp/s⌉, and Wp below reads ⌈Wp/s⌉)
//! - w:  [F][C·kh·kw]; z: [F][B][H'][W']
//!
//! Flattening an example's output plane with rows Wp wide (q = y·Wp + x) makes each window tap
//! (c, i, j) one offset into xp: z[f][e][q] = Σ_tap w[f][tap] · xp[e's plane + offset(tap) + q].
//! A register block holds 4 filters × 6 vectors of consecutive positions; per tap it loads six
//! vectors of xp (one unaligned load each, from L1: a block's rows of every channel are a few KB)
//! and broadcasts four weights. Positions with x ≥ W' (the plane's padding columns) are computed
//! and dropped: the stores are masked to the row segments each vector covers.
//!
//! Why: at few channels the panel product spends as long gathering its B panels as multiplying
//! them (`panels::build_panel`, a third of `panels`' time on resnet20's 16-channel layers).
//!
//! Each output is one FMA chain over the taps in order; tasks split whole (example, position
//! block) units: results do not depend on the thread count.

#![cfg(target_arch = "x86_64")]

use super::avx::{Vf, W8, W16};
use super::conv::{ConvShape, item_tasks};
use super::shifted::{Grid, lay_out};
use super::team::{Parts, Team};

/// Filters per register block.
const FB: usize = 4;
/// Vectors of 16 positions per register block (counted in 16-lane vectors whatever the width,
/// so blocks do not depend on the CPU).
const QB: usize = 6;
/// Positions a block covers.
const POS: usize = 16 * QB;

/// Values of the padded input with its tail (a block's overrun past a plane plus the largest
/// tap offset within a row).
fn xp_len(sh: &ConvShape, batch: usize) -> usize {
    let g = Grid::of(sh);
    g.xp_len(sh, batch, POS + sh.kw + g.wq)
}

/// Shared scratch of [`forward`].
pub fn head_len(sh: &ConvShape, batch: usize) -> usize {
    xp_len(sh, batch)
}

/// Whether the kernel takes this shape: one group, the output the size the stride and padding
/// give.
pub fn eligible(sh: &ConvShape) -> bool {
    super::shifted::eligible(sh) && sh.groups == 1
}

/// A run of lanes of one 16-position vector that lands in one output row: lanes `lo..hi` go to
/// z's plane at `at - lo` (so lane l lands at `at - lo + l`).
#[derive(Clone, Copy)]
struct Segment {
    vector: u32,
    lo: u8,
    hi: u8,
    at: u32,
}

/// The row segments of an example's plane, vector by vector (positions past H'·Wp dropped).
fn segments(sh: &ConvShape) -> Vec<Segment> {
    let wp = Grid::of(sh).wq;
    let vectors = (sh.oh * wp).div_ceil(16);
    let mut out = Vec::new();
    for v in 0..vectors {
        let mut l = 0;
        while l < 16 {
            let q = 16 * v + l;
            let (y, x) = (q / wp, q % wp);
            if y >= sh.oh {
                break;
            }
            let run = (wp - x).min(16 - l);
            if x < sh.ow {
                let keep = (sh.ow - x).min(run);
                out.push(Segment { vector: v as u32, lo: l as u8, hi: (l + keep) as u8, at: (y * sh.ow + x) as u32 });
            }
            l += run;
        }
    }
    out
}

/// z [F][B][H'][W'] = w · col(x), then + bias and relu per `bias` (other activations are the
/// caller's), for a convolution of one group at any stride; `head` holds [`head_len`] values.
///
/// SAFETY: AVX2 and FMA present.
#[allow(clippy::too_many_arguments)]
pub unsafe fn forward(
    sh: &ConvShape,
    batch: usize,
    x: &[f32],
    w: &[f32],
    bias: Option<(&[f32], bool)>,
    head: &mut [f32],
    z: &mut [f32],
    team: &Team,
) {
    assert!(eligible(sh), "{sh:?} has no shifted rows");
    assert!(x.len() >= sh.c * batch * sh.h * sh.w);
    let xp = &mut head[..xp_len(sh, batch)];
    lay_out(sh, batch, x, &[], xp, &mut [], team);
    // SAFETY: the caller's promise; xp laid out just now.
    unsafe { forward_laid(sh, batch, xp, w, bias, false, z, team) }
}

/// [`forward`] on an input already laid out: `xp` holds [`head_len`] values, the first of them
/// `shifted::lay_out`'s copy of the input (the backward pass lays δ out once for both of its
/// products, `shifted::weight_grad_padded`). With `add`, z += the result (after the bias) instead
/// of z = it: an input gradient added to the one a layer already has, without a pass of its own.
///
/// SAFETY: AVX2 and FMA present.
#[allow(clippy::too_many_arguments)]
pub unsafe fn forward_laid(
    sh: &ConvShape,
    batch: usize,
    xp: &[f32],
    w: &[f32],
    bias: Option<(&[f32], bool)>,
    add: bool,
    z: &mut [f32],
    team: &Team,
) {
    assert!(eligible(sh), "{sh:?} has no shifted rows");
    let (ckk, oplane) = (sh.ckk(), sh.oh * sh.ow);
    assert!(z.len() >= sh.f * batch * oplane && w.len() >= sh.f * ckk && xp.len() >= xp_len(sh, batch));
    let g = Grid::of(sh);
    let wp = g.wq;
    let offsets: Vec<usize> = (0..ckk).map(|r| g.offset(sh, batch, r)).collect();
    let segs = segments(sh);
    // Segments by block: block k's are segs[starts[k]..starts[k + 1]].
    let blocks = (sh.oh * wp).div_ceil(POS);
    let mut starts = vec![0usize; blocks + 1];
    for s in &segs {
        starts[s.vector as usize / QB + 1] += 1;
    }
    for k in 0..blocks {
        starts[k + 1] += starts[k];
    }
    let units = batch * blocks;
    let (tasks, per) = item_tasks(units, sh.f * ckk * batch * oplane, team);
    let run = Run {
        sh,
        batch,
        xp,
        w,
        bias,
        add,
        offsets: &offsets,
        segs: &segs,
        starts: &starts,
        blocks,
        out: &Parts::of(z),
    };
    let wide = super::shifted::wide();
    team.run(tasks, &|t| {
        // SAFETY: the caller's promise (AVX2/FMA; AVX-512 where `wide`); the outputs of units
        // t·per.. are this task's.
        unsafe {
            if wide {
                task_512(&run, t * per..((t + 1) * per).min(units))
            } else {
                task_256(&run, t * per..((t + 1) * per).min(units))
            }
        }
    });
}

/// What every task reads.
struct Run<'a> {
    sh: &'a ConvShape,
    batch: usize,
    xp: &'a [f32],
    w: &'a [f32],
    bias: Option<(&'a [f32], bool)>,
    /// z += the sums instead of z = them.
    add: bool,
    offsets: &'a [usize],
    segs: &'a [Segment],
    starts: &'a [usize],
    /// Position blocks per example.
    blocks: usize,
    out: &'a Parts<f32>,
}

#[target_feature(enable = "avx2,fma")]
unsafe fn task_256(run: &Run, units: std::ops::Range<usize>) {
    unsafe { task::<W8, { POS / 8 }>(run, units) }
}

#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn task_512(run: &Run, units: std::ops::Range<usize>) {
    unsafe { task::<W16, { POS / 16 }>(run, units) }
}

/// A task's units (example, position block), every filter block of each; NV = POS / V::L.
#[inline(always)]
unsafe fn task<V: Vf, const NV: usize>(run: &Run, units: std::ops::Range<usize>) {
    let sh = run.sh;
    let xplane = Grid::of(sh).plane();
    let (ckk, oplane) = (sh.ckk(), sh.oh * sh.ow);
    let n = run.batch * oplane;
    // The block's sums, stored here once they are done: the stores index them by segment, so
    // they live in memory; filled by `sums` alone (an array zeroed per block, as `sums`
    // returned it, compiled to a library memset per block, 1–2% of a resnet20 step).
    let mut acc = [[unsafe { V::zero() }; NV]; FB];
    for u in units {
        let (e, k) = (u / run.blocks, u % run.blocks);
        // SAFETY: example e's first position of block k in channel 0 of xp.
        let xe = unsafe { run.xp.as_ptr().add(e * xplane + k * POS) };
        let segs = &run.segs[run.starts[k]..run.starts[k + 1]];
        // The positions of each filter's plane the block's segments cover.
        let span = match (segs.first(), segs.last()) {
            (Some(first), Some(last)) => first.at as usize..last.at as usize + (last.hi - last.lo) as usize,
            _ => 0..0,
        };
        for f0 in (0..sh.f).step_by(FB) {
            // Filters past F repeat the last one; their sums are dropped.
            let rows: [*const f32; FB] = std::array::from_fn(|r| run.w[(f0 + r).min(sh.f - 1) * ckk..].as_ptr());
            if run.add {
                // The sums are added to z: ask for z's lines now, so the loads in `store` find
                // them in cache instead of waiting on memory after the block's FMAs.
                let (lo, hi) = (span.start, span.end);
                if hi > lo {
                    for f in f0..(f0 + FB).min(sh.f) {
                        // SAFETY: positions lo..hi of filter f's plane of example e lie in z.
                        let zf = unsafe { run.out.part(f * n + e * oplane + lo, hi - lo).as_ptr() };
                        for line in (0..hi - lo).step_by(16) {
                            // SAFETY: a prefetch reads nothing; the address is inside z.
                            unsafe { prefetch(zf.add(line)) };
                        }
                    }
                }
            }
            // SAFETY: the caller's promise; the reads stay in xp (its tail) and in w's rows.
            unsafe { sums::<V, NV>(rows, xe, run.offsets, &mut acc) };
            for (r, sums) in acc.iter().enumerate().take(sh.f - f0) {
                let f = f0 + r;
                let (b, relu) = match run.bias {
                    Some((b, relu)) => (b[f], relu),
                    None => (0.0, false),
                };
                // SAFETY: filter f's plane of example e: every segment of block k lands in it,
                // and only this unit writes them.
                unsafe {
                    let zf = run.out.part(f * n + e * oplane, oplane).as_mut_ptr();
                    store::<V>(sums, segs, k, zf, b, relu, run.add);
                }
            }
        }
    }
}

/// Asks for the cache line at `p` (a hint: no fault, no value).
#[inline(always)]
unsafe fn prefetch(p: *const f32) {
    // SAFETY: a prefetch has no architectural effect.
    unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p as *const i8) }
}

/// One block's sums into `out`: [filter][vector of the block], each an FMA chain over the taps
/// in order.
///
/// SAFETY: every tap's offset plus POS values from `xe`, and ckk values from each row, readable.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // a register block reads best as indices
unsafe fn sums<V: Vf, const NV: usize>(
    rows: [*const f32; FB],
    xe: *const f32,
    offsets: &[usize],
    out: &mut [[V; NV]; FB],
) {
    let mut acc = [[unsafe { V::zero() }; NV]; FB];
    for (t, &off) in offsets.iter().enumerate() {
        // SAFETY: the caller's promise.
        unsafe {
            let mut wv = [V::zero(); FB];
            for r in 0..FB {
                wv[r] = V::splat(rows[r].add(t));
            }
            let xt = xe.add(off);
            for v in 0..NV {
                let xv = V::load(xt.add(v * V::L));
                for r in 0..FB {
                    acc[r][v] = V::fma(wv[r], xv, acc[r][v]);
                }
            }
        }
    }
    *out = acc;
}

/// Stores a filter's block of sums into its plane `zf`, segment by segment, after the bias and
/// relu; with `add`, added to what the plane holds.
///
/// SAFETY: every segment of block `k` lies in the plane.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn store<V: Vf>(acc: &[V], segs: &[Segment], k: usize, zf: *mut f32, b: f32, relu: bool, add: bool) {
    let per16 = 16 / V::L;
    for s in segs {
        let local = s.vector as usize - k * QB;
        // The 16-lane vector `local` is `per16` vectors of this width.
        for part in 0..per16 {
            let (base, v) = (part * V::L, local * per16 + part);
            let (lo, hi) = ((s.lo as usize).max(base), (s.hi as usize).min(base + V::L));
            if lo >= hi {
                continue;
            }
            // SAFETY: lanes lo..hi land at zf + at + (lane - s.lo), inside the plane; masked
            // lanes touch no memory.
            unsafe {
                let mut val = V::add(acc[v], V::set(b));
                if relu {
                    val = V::max0(val);
                }
                let lanes = V::mask_range(lo - base, hi - base);
                let dst = zf.add(s.at as usize).wrapping_offset(base as isize - s.lo as isize);
                if add {
                    val = V::add(V::load_masked(dst, lanes), val);
                }
                V::store_masked(dst, lanes, val);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::shifted::testing::{check, plain, shapes, values};
    use super::*;
    use crate::engine::conv::conv_forward_with;
    use crate::spec::Activation;

    /// The forward on shifted rows equals the im2col product (the AVX kernels) on
    /// `shifted::testing::shapes` (rows narrower than a vector make segments over three rows),
    /// with and without a bias and relu.
    #[test]
    fn equals_the_im2col_product() {
        if !crate::engine::simd::has_avx2_fma() {
            return;
        }
        let plain = plain();
        let team = Team::new(2, || {}).unwrap();
        for (sh, batch) in shapes() {
            let x = values(sh.c * batch * sh.h * sh.w, 7919, 23, -0.4);
            let wt = values(sh.f * sh.ckk(), 104729, 19, -0.5);
            let b: Vec<f32> = if sh.bias { (0..sh.f).map(|i| i as f32 * 0.1 - 0.3).collect() } else { Vec::new() };
            let n = batch * sh.oh * sh.ow;
            // The kernel applies relu only with a bias (the caller does it otherwise).
            let acts: &[Activation] =
                if sh.bias { &[Activation::Identity, Activation::Relu] } else { &[Activation::Identity] };
            for &act in acts {
                let mut scratch = vec![0.0f32; plain.total(&sh, batch, 2)];
                let mut want = vec![0.0f32; sh.f * n];
                conv_forward_with(plain, &sh, batch, act, &x, &wt, &b, &mut scratch, &mut want, &team);
                let bias = sh.bias.then_some((&b[..], act == Activation::Relu));
                check(&format!("{sh:?} {act:?} z"), &want, |team| {
                    let mut head = vec![f32::NAN; head_len(&sh, batch)];
                    let mut got = vec![f32::NAN; sh.f * n];
                    unsafe { forward(&sh, batch, &x, &wt, bias, &mut head, &mut got, team) };
                    got
                });
            }
        }
    }
}
