//! The weight gradient of a convolution as sums over shifted rows, without im2col.
//!
//! Shapes (B = batch, s the stride, Hp/Wp the padded input's height and width, H'/W' the
//! output's, Hq = ⌈Hp/s⌉, Wq = ⌈Wp/s⌉, but W + pw at stride 1, [`Grid::of`]):
//! - xp: [C][B][s·s][Hq][Wq] then a zero tail: the input inside its zero border, split into its
//!   s×s phases (phase (a, b) holds the padded input's rows a, a+s, … and columns b, b+s, …;
//!   at stride 1 the one phase is the padded input, its rows sharing their side borders)
//! - dp: [F][B][L] with L = H'·Wq rounded up to a vector: δ with its rows Wq wide, zero past W'
//!   and past H'·Wq
//! - dw: [F][C][kh][kw]
//!
//! dw[f][c][i][j] = Σ_e Σ_q dp[f][e][q] · xp[c][e][phase (i mod s, j mod s)][q + (i/s)·Wq + j/s]:
//! output (y, x) reads padded input (s·y + i, s·x + j), which is position (y + i/s, x + j/s) of
//! that phase, so flattening an example's output plane with rows Wq wide turns every window tap
//! (c, i, j) into one offset into xp, and each product is a plain dot product of two contiguous
//! runs, a vector at a time. The zero columns of dp take the reads that cross into the next row
//! out of the sum.
//!
//! Why: with few filters (resnet20's 16- and 32-channel layers) the panel product rebuilds a
//! gathered B slice for every six filters it multiplies, and that build costs more than the
//! FMAs. Here a register block holds FB filters × T taps (T offsets), and every vector loaded is
//! used FB or T times: FB + T loads per FB·T FMAs.
//!
//! Sums: each block keeps one vector accumulator per (filter, tap) over a chunk of examples,
//! then adds its lanes (fixed order) into its part's sums; the batch is cut into [`PARTS`]
//! parts, chunks go in example order within a part and depend on the shape alone, the parts'
//! sums are added in order at the end, and tasks split (part, block) items: results do not
//! depend on the thread count.

#![cfg(target_arch = "x86_64")]

use super::avx::{Vf, W8, W16};
use super::conv::{ConvShape, item_tasks, split_items};
use super::team::{Parts, Team};

/// Filters per register block.
const FB: usize = 4;
/// Taps per register block. Six spilled accumulators to the stack: the compiler issues a step's
/// six loads of xp before its FMAs (24 accumulators + 4 δ + 6 loads > 32 registers), and the
/// sums took 4.3–4.7 ms on resnet20's 16- and 32-channel layers against 3.1–3.7 ms with five
/// (`CONV_CPU=1 CONV_ENGINE=1 CONV_ONLY=r16 conv_shapes 1`, timing `sums_over` alone).
const T: usize = 5;
/// Parts of the batch whose sums are kept apart and added at the end. With two, a team of two
/// splits the batch, each member streaming half of xp and dp through its own cache, where
/// splitting the blocks had each member stream all of them (and the two together twice what
/// one thread reads): the backward passes of resnet20's 16→16 layers ran 1.6 times as fast on two
/// threads as on one, their forwards 1.9 times (docs/kernels.md, "Two threads: a layer's
/// scaling, ..."). Fixed, not the team's size, so the sums do not depend on the thread count.
const PARTS: usize = 2;
/// Bytes of dp and xp a chunk of examples may take (they stay in a core's L2 while every block
/// of the task passes over them).
const CHUNK_BYTES: usize = 384 << 10;

/// The geometry of xp: a phase's height and width (Hq, Wq), and the stride.
#[derive(Clone, Copy)]
pub(super) struct Grid {
    pub s: usize,
    pub hq: usize,
    pub wq: usize,
}

impl Grid {
    /// At stride 1 the rows are W + pw wide, not W + 2·pw: a row's right border is the next
    /// row's left border (both zeros, and a window that reads past the row's end reads the next
    /// row's first pw values), so fewer lanes go to the padding columns (resnet20's 32×32
    /// planes: 1056 positions an example against 1088, 11 blocks of the forward against 12).
    /// Not where pw ≥ kw: the output rows (W + 2·pw − kw + 1) would not fit.
    pub fn of(sh: &ConvShape) -> Grid {
        let (hp, wp) = sh.padded();
        if sh.s == 1 && sh.pw < sh.kw {
            return Grid { s: 1, hq: hp, wq: sh.w + sh.pw };
        }
        Grid { s: sh.s, hq: hp.div_ceil(sh.s), wq: wp.div_ceil(sh.s) }
    }

    /// Values of one (channel, example) plane of xp: its s·s phases.
    pub fn plane(&self) -> usize {
        self.s * self.s * self.hq * self.wq
    }

    /// Where window tap r = (c, i, j) reads xp, from an example's first position in channel 0.
    pub fn offset(&self, sh: &ConvShape, batch: usize, r: usize) -> usize {
        let (c, i, j) = (r / (sh.kh * sh.kw), r / sh.kw % sh.kh, r % sh.kw);
        let phase = (i % self.s) * self.s + j % self.s;
        c * batch * self.plane() + phase * self.hq * self.wq + (i / self.s) * self.wq + j / self.s
    }

    /// Values of xp for a batch with a tail of `tail` zeros.
    pub fn xp_len(&self, sh: &ConvShape, batch: usize, tail: usize) -> usize {
        sh.c * batch * self.plane() + tail
    }
}

/// Values of an example's flattened output plane in dp (a multiple of 16, whatever the width
/// in use, so the layout does not depend on the CPU).
fn plane_len(sh: &ConvShape) -> usize {
    (sh.oh * Grid::of(sh).wq).div_ceil(16) * 16
}

/// Zero values after xp's last plane: a vector's overrun past the last position plus the
/// largest in-row tap offset.
fn tail(sh: &ConvShape) -> usize {
    16 + sh.kw + Grid::of(sh).wq
}

/// Shared scratch of [`weight_grad`]: xp, then dp.
pub fn head_len(sh: &ConvShape, batch: usize) -> usize {
    xp_head_len(sh, batch) + sh.f * batch * plane_len(sh)
}

/// Shared scratch of [`weight_grad_padded`]: xp alone.
pub fn xp_head_len(sh: &ConvShape, batch: usize) -> usize {
    Grid::of(sh).xp_len(sh, batch, tail(sh))
}

/// Where dp's runs lie: filter f's run for example e (`plane_len` values) starts at
/// `data[(f·B + e)·plane + at]`.
struct Deltas<'a> {
    data: &'a [f32],
    plane: usize,
    at: usize,
}

/// Where δ starts in a plane of its padded copy for the input gradient (the transposed
/// convolution's xp, `shifted_forward`), when the weight gradient can read its dp straight from
/// that copy: stride 1, the copy's rows as wide as x's padded rows (so the run of a δ row and
/// the zero border after it is one dp row), and every dp run inside its plane (the zeros it
/// reads past H'·Wq are the copy's bottom border). resnet's 3×3 "same" convolutions qualify;
/// the one padded δ then serves both products, a copy of δ fewer per backward pass.
pub fn padded_delta_at(sh: &ConvShape) -> Option<usize> {
    let t = sh.transposed()?;
    let (g, gt) = (Grid::of(sh), Grid::of(&t));
    let at = t.ph * gt.wq + t.pw;
    (eligible(sh) && sh.s == 1 && gt.wq == g.wq && at + plane_len(sh) <= gt.plane()).then_some(at)
}

/// Whether the kernel takes this shape: one group (the caller passes one), the output the
/// size the stride and padding give.
pub fn eligible(sh: &ConvShape) -> bool {
    let (hp, wp) = sh.padded();
    sh.s >= 1 && hp >= sh.kh && wp >= sh.kw && sh.oh == (hp - sh.kh) / sh.s + 1 && sh.ow == (wp - sh.kw) / sh.s + 1
}

/// x [C][B][H][W] into xp (zeros after its planes to its end), and delta [F][B][H'][W'] into
/// dp unless dp is empty (see the module comment).
pub(super) fn lay_out(
    sh: &ConvShape,
    batch: usize,
    x: &[f32],
    delta: &[f32],
    xp: &mut [f32],
    dp: &mut [f32],
    team: &Team,
) {
    let g = Grid::of(sh);
    let (xplane, dplane) = (g.plane(), plane_len(sh));
    let (xs, ds) = (sh.c * batch, if dp.is_empty() { 0 } else { sh.f * batch });
    xp[xs * xplane..].fill(0.0);
    let (xparts, dparts) = (Parts::of(xp), Parts::of(dp));
    split_items(xs + ds, xs * xplane + ds * dplane, team, &|range| {
        for q in range {
            if q < xs {
                // SAFETY: plane q of xp is this task's alone.
                let dst = unsafe { xparts.part(q * xplane, xplane) };
                lay_plane(sh, g, &x[q * sh.h * sh.w..(q + 1) * sh.h * sh.w], dst);
            } else {
                let q = q - xs;
                // SAFETY: plane q of dp is this task's alone.
                let dst = unsafe { dparts.part(q * dplane, dplane) };
                place(&delta[q * sh.oh * sh.ow..(q + 1) * sh.oh * sh.ow], sh.ow, dst, g.wq, (0, 0));
            }
        }
    });
}

/// One (channel, example) plane x [H][W] into its padded copy [s·s][Hq][Wq] (`g.plane()`
/// values; the padded plane itself at stride 1), zeros outside x.
pub(super) fn lay_plane(sh: &ConvShape, g: Grid, src: &[f32], dst: &mut [f32]) {
    if g.s == 1 {
        place(src, sh.w, dst, g.wq, (sh.ph, sh.pw));
    } else {
        phases(sh, g, src, dst);
    }
}

/// A plane x [H][W] into its s·s phases [s·s][Hq][Wq] of the padded plane (zeros outside x).
/// Each phase row takes every s-th value of one input row between its zero borders, found once
/// per phase; stride 2 as pairs, which the compiler turns into vector shuffles (a test per value
/// cost resnet20's 16→32 stride-2 forward 3.0–3.8 ms against 2.5–2.95, `conv_shapes`, "r32 s2").
fn phases(sh: &ConvShape, g: Grid, src: &[f32], dst: &mut [f32]) {
    let (s, hq, wq) = (g.s, g.hq, g.wq);
    let dst = &mut dst[..s * s * hq * wq];
    dst.fill(0.0);
    for (p, plane) in dst.chunks_exact_mut(hq * wq).enumerate() {
        let (a, b) = (p / s, p % s);
        // Phase columns xq whose input column b + s·xq − pw lies in 0..W: lo..hi.
        let lo = sh.pw.saturating_sub(b).div_ceil(s);
        let hi = (sh.w + sh.pw).saturating_sub(b).div_ceil(s).min(wq);
        if lo >= hi {
            continue;
        }
        let x0 = b + s * lo - sh.pw;
        for (yq, row) in plane.chunks_exact_mut(wq).enumerate() {
            let y = (a + s * yq).wrapping_sub(sh.ph);
            if y >= sh.h {
                continue;
            }
            let (out, from) = (&mut row[lo..hi], &src[y * sh.w + x0..(y + 1) * sh.w]);
            if s == 2 {
                // from holds 2·len − 1 values or more: pairs, then the last value alone.
                let len = out.len();
                for (v, pair) in out.iter_mut().zip(from.chunks_exact(2)) {
                    *v = pair[0];
                }
                if from.len() < 2 * len {
                    out[len - 1] = from[2 * (len - 1)];
                }
            } else {
                for (k, v) in out.iter_mut().enumerate() {
                    *v = from[s * k];
                }
            }
        }
    }
}

/// The rows of `src` (`w` values each) into `dst` (rows `wp` wide) from row `top`, column
/// `left`; the rest of `dst` zero. With vector loads and stores: copying or filling a row's few
/// values through the library costs a call per row, which took a few percent of a resnet20 step.
fn place(src: &[f32], w: usize, dst: &mut [f32], wp: usize, (top, left): (usize, usize)) {
    let rows = src.len() / w;
    assert!(left + w <= wp && (top + rows) * wp <= dst.len() && rows * w == src.len());
    // SAFETY: the path's features are present; the bounds were checked above.
    unsafe {
        match super::simd::path() {
            super::simd::Path::Avx512 => place_512(src, w, dst, wp, top, left),
            super::simd::Path::Avx2 => place_256(src, w, dst, wp, top, left),
            super::simd::Path::Scalar => {
                dst.fill(0.0);
                for (y, row) in src.chunks_exact(w).enumerate() {
                    dst[(top + y) * wp + left..][..w].copy_from_slice(row);
                }
            }
        }
    }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn place_256(src: &[f32], w: usize, dst: &mut [f32], wp: usize, top: usize, left: usize) {
    unsafe { place_imp::<W8>(src, w, dst, wp, top, left) }
}

#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn place_512(src: &[f32], w: usize, dst: &mut [f32], wp: usize, top: usize, left: usize) {
    unsafe { place_imp::<W16>(src, w, dst, wp, top, left) }
}

/// [`place`] on vectors of V. The runs (zeros, a row, zeros, …) cover dst in order with whole
/// vectors: a run's last vector may spill into the next runs, which then write over it; only
/// vectors that would pass the end of dst (or read past src's) are masked. (Masked stores on
/// every row were slower here than the library calls they replaced.)
///
/// SAFETY: as [`place`]'s assertion.
#[inline(always)]
unsafe fn place_imp<V: Vf>(src: &[f32], w: usize, dst: &mut [f32], wp: usize, top: usize, left: usize) {
    let rows = src.len() / w;
    let (end, send) = (dst.len(), src.len());
    let d = dst.as_mut_ptr();
    let s = src.as_ptr();
    // SAFETY: full vectors are written only below `end` and read only below `send`; the rest
    // is masked (masked lanes touch no memory).
    unsafe {
        let put = |at: usize, v: V| {
            if at + V::L <= end { V::store(d.add(at), v) } else { V::store_masked(d.add(at), V::mask(end - at), v) }
        };
        let zeros = |from: usize, to: usize| {
            let mut k = from;
            while k < to {
                put(k, V::zero());
                k += V::L;
            }
        };
        let mut at = 0;
        for y in 0..rows {
            let start = (top + y) * wp + left;
            zeros(at, start);
            let mut k = 0;
            while k < w {
                let from = y * w + k;
                let v = if from + V::L <= send {
                    V::load(s.add(from))
                } else {
                    V::load_masked(s.add(from), V::mask(send - from))
                };
                put(start + k, v);
                k += V::L;
            }
            at = start + w;
        }
        zeros(at, end);
    }
}

/// dw [F][C·kh·kw] = δ · colᵀ for a convolution of one group at any stride; `head` holds
/// [`head_len`] values.
///
/// SAFETY: AVX2 and FMA present.
pub unsafe fn weight_grad(
    sh: &ConvShape,
    batch: usize,
    x: &[f32],
    delta: &[f32],
    head: &mut [f32],
    dw: &mut [f32],
    team: &Team,
) {
    assert!(eligible(sh), "{sh:?} has no shifted rows");
    let (ckk, n) = (sh.ckk(), batch * sh.oh * sh.ow);
    assert!(dw.len() >= sh.f * ckk && delta.len() >= sh.f * n && x.len() >= sh.c * batch * sh.h * sh.w);
    let (xp, rest) = head.split_at_mut(xp_head_len(sh, batch));
    let dp = &mut rest[..sh.f * batch * plane_len(sh)];
    lay_out(sh, batch, x, delta, xp, dp, team);
    // SAFETY: the caller's promise; dp as laid out.
    unsafe { sums_over(sh, batch, xp, Deltas { data: dp, plane: plane_len(sh), at: 0 }, dw, team) }
}

/// [`weight_grad`] reading δ from `padded`, its copy laid out for the input gradient
/// (`shifted::lay_out` of `sh.transposed()`, as `shifted_forward` reads it), which
/// [`padded_delta_at`] must accept; `head` holds [`xp_head_len`] values. The sums are
/// [`weight_grad`]'s, bit for bit (the same products in the same order).
///
/// SAFETY: AVX2 and FMA present.
pub unsafe fn weight_grad_padded(
    sh: &ConvShape,
    batch: usize,
    x: &[f32],
    padded: &[f32],
    head: &mut [f32],
    dw: &mut [f32],
    team: &Team,
) {
    let at = padded_delta_at(sh).unwrap_or_else(|| panic!("{sh:?} cannot read δ from its padded copy"));
    let plane = Grid::of(&sh.transposed().expect("a transposed convolution")).plane();
    assert!(dw.len() >= sh.f * sh.ckk() && x.len() >= sh.c * batch * sh.h * sh.w);
    assert!(padded.len() >= sh.f * batch * plane, "δ's padded copy holds {} values", padded.len());
    let xp = &mut head[..xp_head_len(sh, batch)];
    lay_out(sh, batch, x, &[], xp, &mut [], team);
    // SAFETY: the caller's promise; padded_delta_at keeps every run in its plane.
    unsafe { sums_over(sh, batch, xp, Deltas { data: padded, plane, at }, dw, team) }
}

/// dw from xp and dp, laid out. (Chunks follow dp's own layout, `plane_len`, whichever copy
/// is read: they depend on the shape alone.)
///
/// SAFETY: AVX2 and FMA present; xp laid out for `sh` with its tail, and `plane_len` values
/// readable at every run of dp.
unsafe fn sums_over(sh: &ConvShape, batch: usize, xp: &[f32], dp: Deltas, dw: &mut [f32], team: &Team) {
    let (ckk, n) = (sh.ckk(), batch * sh.oh * sh.ow);
    let g = Grid::of(sh);
    let offsets: Vec<usize> = (0..ckk).map(|r| g.offset(sh, batch, r)).collect();
    let blocks = sh.f.div_ceil(FB) * ckk.div_ceil(T);
    // Work items: (part of the batch, block), part major.
    let (tasks, per) = item_tasks(PARTS * blocks, sh.f * ckk * n, team);
    let per_example = 4 * (sh.f * plane_len(sh) + sh.c * g.plane());
    let chunk = (CHUNK_BYTES / per_example).clamp(1, batch);
    // Each part's sums (zeroed: every chunk adds), added in part order below.
    let mut partial = vec![0f32; PARTS * sh.f * ckk];
    let (dp, out) = (&dp, Parts::of(&mut partial));
    let wide = wide();
    team.run(tasks, &|t| {
        let run = Run { sh, batch, xp, dp, offsets: &offsets, chunk, out: &out };
        // SAFETY: the caller's promise (AVX2/FMA; AVX-512 where `wide`); items t·per.. are this
        // task's, and so are their entries of the parts' sums.
        unsafe {
            if wide {
                task_512(&run, t * per..((t + 1) * per).min(PARTS * blocks))
            } else {
                task_256(&run, t * per..((t + 1) * per).min(PARTS * blocks))
            }
        }
    });
    let (first, rest) = partial.split_at(sh.f * ckk);
    dw[..sh.f * ckk].copy_from_slice(first);
    for part in rest.chunks_exact(sh.f * ckk) {
        dw.iter_mut().zip(part).for_each(|(d, &v)| *d += v);
    }
}

std::thread_local! {
    /// Tests set the vector width here (both widths run on an AVX-512 machine); None: the path
    /// in use.
    pub(super) static WIDE: std::cell::Cell<Option<bool>> = const { std::cell::Cell::new(None) };
}

/// Whether the 512-bit build runs (the path in use, unless a test chose).
pub(super) fn wide() -> bool {
    WIDE.with(|w| w.get()).unwrap_or_else(super::simd::has_avx512)
}

/// What every task reads.
struct Run<'a> {
    sh: &'a ConvShape,
    batch: usize,
    xp: &'a [f32],
    dp: &'a Deltas<'a>,
    offsets: &'a [usize],
    /// Examples a chunk holds.
    chunk: usize,
    out: &'a Parts<f32>,
}

#[target_feature(enable = "avx2,fma")]
unsafe fn task_256(run: &Run, items: std::ops::Range<usize>) {
    unsafe { task::<W8>(run, items) }
}

#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn task_512(run: &Run, items: std::ops::Range<usize>) {
    unsafe { task::<W16>(run, items) }
}

/// A task's items (part of the batch major, then filter block, then tap block), chunk by chunk
/// of each part's examples.
#[inline(always)]
unsafe fn task<V: Vf>(run: &Run, items: std::ops::Range<usize>) {
    let sh = run.sh;
    let ckk = sh.ckk();
    let tap_blocks = ckk.div_ceil(T);
    let blocks = sh.f.div_ceil(FB) * tap_blocks;
    for part in items.start / blocks..items.end.div_ceil(blocks) {
        let mine = items.start.max(part * blocks) - part * blocks..items.end.min((part + 1) * blocks) - part * blocks;
        let (lo, hi) = (run.batch * part / PARTS, run.batch * (part + 1) / PARTS);
        let mut e0 = lo;
        while e0 < hi {
            let e1 = (e0 + run.chunk).min(hi);
            for b in mine.clone() {
                let (f0, r0) = (b / tap_blocks * FB, b % tap_blocks * T);
                let (fs, rs) = ((sh.f - f0).min(FB), (ckk - r0).min(T));
                // Taps past ckk repeat the last one; their sums are dropped.
                let offs: [usize; T] = std::array::from_fn(|k| run.offsets[r0 + k.min(rs - 1)]);
                let at = Sums { base: part * sh.f * ckk, f0, r0, rs };
                // SAFETY: the caller's promise; the rows read lie in xp and dp (module comment),
                // and entries (f0.., r0..r0 + rs) of the part's sums are this task's.
                unsafe {
                    match fs {
                        4 => block::<V, 4>(run, &offs, e0..e1, at),
                        3 => block::<V, 3>(run, &offs, e0..e1, at),
                        2 => block::<V, 2>(run, &offs, e0..e1, at),
                        _ => block::<V, 1>(run, &offs, e0..e1, at),
                    }
                }
            }
            e0 = e1;
        }
    }
}

/// The accumulators after one run of `len` positions (a multiple of the lane count).
///
/// SAFETY: `len` values from each of `de` and from `xe` + every offset are readable.
#[inline(always)]
unsafe fn run_sums<V: Vf, const F: usize>(
    mut acc: [[V; T]; F],
    de: [*const f32; F],
    xe: *const f32,
    offs: &[usize; T],
    len: usize,
) -> [[V; T]; F] {
    let mut q = 0;
    while q < len {
        // SAFETY: the caller's promise.
        unsafe {
            let mut d = [V::zero(); F];
            for k in 0..F {
                d[k] = V::load(de[k].add(q));
            }
            for t in 0..T {
                let xv = V::load(xe.add(offs[t] + q));
                for k in 0..F {
                    acc[k][t] = V::fma(d[k], xv, acc[k][t]);
                }
            }
        }
        q += V::L;
    }
    acc
}

/// Where a block's sums go: filters f0.., taps r0..r0 + rs of its part's sums (from `base`,
/// zeroed by `sums_over`), added chunk after chunk.
#[derive(Clone, Copy)]
struct Sums {
    base: usize,
    f0: usize,
    r0: usize,
    rs: usize,
}

/// One block of F filters × T taps over examples `ex`: a vector accumulator per (filter, tap),
/// its lanes added into dw.
///
/// SAFETY: as [`task`]; dw's entries of the block are the caller's.
#[inline(always)]
unsafe fn block<V: Vf, const F: usize>(run: &Run, offs: &[usize; T], ex: std::ops::Range<usize>, at: Sums) {
    let sh = run.sh;
    let xplane = Grid::of(sh).plane();
    let plane = plane_len(sh);
    let mut acc = [[unsafe { V::zero() }; T]; F];
    for e in ex {
        // SAFETY: example e's plane of channel 0 in xp and of filters f0.. in dp, which the
        // taps' reads do not leave (module comment).
        unsafe {
            let xe = run.xp.as_ptr().add(e * xplane);
            let dp = run.dp;
            let de: [*const f32; F] =
                std::array::from_fn(|k| dp.data.as_ptr().add(((at.f0 + k) * run.batch + e) * dp.plane + dp.at));
            acc = run_sums::<V, F>(acc, de, xe, offs, plane);
        }
    }
    let ckk = sh.ckk();
    for (k, row) in acc.iter().enumerate() {
        // SAFETY: the caller's promise.
        let dst = unsafe { run.out.part(at.base + (at.f0 + k) * ckk + at.r0, at.rs) };
        for (d, &v) in dst.iter_mut().zip(row) {
            let s = unsafe { V::hsum(v) };
            *d += s;
        }
    }
}

/// What the tests of both shifted-rows kernels share.
#[cfg(test)]
pub(super) mod testing {
    use super::{ConvShape, Team, WIDE};
    use crate::engine::conv::Tiles;
    use crate::engine::gemm::Kernel;

    /// Shapes with rows narrower than a vector, odd widths and paddings, 1×1 to 7×7 windows,
    /// filter counts that leave partial blocks, strides 1 to 3, and one whose examples span
    /// several chunks, and a batch of one; with a batch, and a bias on every other one.
    pub fn shapes() -> Vec<(ConvShape, usize)> {
        // (c, h, w, f, kh, kw, ph, pw, batch, stride)
        let list = [
            (3, 9, 7, 5, 3, 3, 1, 1, 3, 1),
            (16, 12, 12, 16, 3, 3, 1, 1, 5, 1),
            (2, 11, 13, 7, 5, 3, 2, 0, 2, 1),
            (5, 6, 6, 3, 1, 1, 0, 0, 4, 1),
            (4, 20, 17, 9, 7, 7, 3, 3, 2, 1),
            (6, 33, 35, 2, 3, 3, 1, 1, 2, 1),
            (16, 16, 16, 32, 3, 3, 1, 1, 3, 2),
            (3, 40, 37, 5, 7, 7, 3, 3, 2, 2),
            (5, 12, 13, 6, 1, 1, 0, 0, 2, 2),
            (2, 14, 15, 5, 5, 5, 2, 1, 2, 3),
            // A border as wide as the window (pw ≥ kw: rows keep both their borders).
            (3, 7, 6, 4, 3, 2, 1, 2, 2, 1),
            // Examples over several of the weight gradient's chunks (CHUNK_BYTES).
            (16, 32, 32, 16, 3, 3, 1, 1, 5, 1),
            // One example: the weight gradient's first part of the batch (PARTS) is empty.
            (8, 10, 10, 8, 3, 3, 1, 1, 1, 1),
        ];
        list.iter()
            .enumerate()
            .map(|(k, &(c, h, w, f, kh, kw, ph, pw, batch, s))| {
                let (oh, ow) = ((h + 2 * ph - kh) / s + 1, (w + 2 * pw - kw) / s + 1);
                (ConvShape { c, h, w, f, kh, kw, s, ph, pw, oh, ow, groups: 1, bias: k % 2 == 0 }, batch)
            })
            .collect()
    }

    /// The im2col product on the AVX kernels, without shifted rows or the sparse path: what
    /// both kernels are checked against.
    pub fn plain() -> Tiles {
        Tiles { kernel: Kernel::Avx, dw_kernel: Kernel::Avx, tile_values: 1 << 15, sparse: false, shifted: false }
    }

    /// `len` values in [offset, offset + 1) from a multiplicative pattern.
    pub fn values(len: usize, mul: usize, modulus: usize, offset: f32) -> Vec<f32> {
        (0..len).map(|i| ((i * mul) % modulus) as f32 / modulus as f32 + offset).collect()
    }

    /// `run` on 1 and 2 threads at each vector width this CPU has, checked against `want` to
    /// 1e-4 relative and bitwise equal across thread counts at one width.
    pub fn check(what: &str, want: &[f32], mut run: impl FnMut(&Team) -> Vec<f32>) {
        for wide in [false, true] {
            if wide && !crate::engine::simd::has_avx512() {
                continue;
            }
            WIDE.with(|w| w.set(Some(wide)));
            let got: Vec<Vec<f32>> = [1, 2].iter().map(|&t| run(&Team::new(t, || {}).unwrap())).collect();
            WIDE.with(|w| w.set(None));
            for (k, (g, w)) in got[0].iter().zip(want).enumerate() {
                assert!((g - w).abs() <= 1e-4 * (1.0 + w.abs()), "{what} wide {wide}: [{k}] {g} against {w}");
            }
            assert_eq!(got[0], got[1], "{what} wide {wide}: the thread count changed the result");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{check, plain, shapes, values};
    use super::*;
    use crate::engine::conv::{Dx, conv_backward_with};

    /// dW on shifted rows equals the plain im2col product (the AVX dot kernel) on
    /// `testing::shapes`.
    #[test]
    fn equals_the_im2col_product() {
        if !crate::engine::simd::has_avx2_fma() {
            return;
        }
        let team = Team::new(2, || {}).unwrap();
        for (sh, batch) in shapes() {
            let sh = ConvShape { bias: false, ..sh };
            let x = values(sh.c * batch * sh.h * sh.w, 7919, 23, -0.4);
            let delta = values(sh.f * batch * sh.oh * sh.ow, 104729, 19, -0.5);
            let w0 = vec![0.0f32; sh.f * sh.ckk()];
            let plain = plain();
            let mut scratch = vec![0.0f32; plain.total(&sh, batch, 2)];
            let mut want = vec![0.0f32; sh.f * sh.ckk()];
            conv_backward_with(plain, &sh, batch, &x, &w0, &delta, &mut want, &mut [], &mut scratch, Dx::Skip, &team);
            check(&format!("{sh:?} dw"), &want, |team| {
                let mut head = vec![f32::NAN; head_len(&sh, batch)];
                let mut got = vec![f32::NAN; sh.f * sh.ckk()];
                unsafe { weight_grad(&sh, batch, &x, &delta, &mut head, &mut got, team) };
                got
            });
        }
    }

    /// Reading δ from its padded copy for the input gradient gives weight_grad's bits, on every
    /// stride-1 shape of `testing::shapes` that `padded_delta_at` accepts (some it must refuse:
    /// there a run would reach the next example's δ).
    #[test]
    fn the_padded_delta_gives_the_same_sums() {
        if !crate::engine::simd::has_avx2_fma() {
            return;
        }
        let team = Team::new(2, || {}).unwrap();
        let (mut taken, mut refused) = (0, 0);
        for (sh, batch) in shapes() {
            let Some(t) = sh.transposed() else { continue };
            if padded_delta_at(&sh).is_none() {
                refused += 1;
                continue;
            }
            taken += 1;
            let x = values(sh.c * batch * sh.h * sh.w, 7919, 23, -0.4);
            let delta = values(sh.f * batch * sh.oh * sh.ow, 104729, 19, -0.5);
            let mut want = vec![f32::NAN; sh.f * sh.ckk()];
            let mut head = vec![f32::NAN; head_len(&sh, batch)];
            unsafe { weight_grad(&sh, batch, &x, &delta, &mut head, &mut want, &team) };
            let mut padded = vec![f32::NAN; crate::engine::shifted_forward::head_len(&t, batch)];
            lay_out(&t, batch, &delta, &[], &mut padded, &mut [], &team);
            let mut got = vec![f32::NAN; sh.f * sh.ckk()];
            let mut xp = vec![f32::NAN; xp_head_len(&sh, batch)];
            unsafe { weight_grad_padded(&sh, batch, &x, &padded, &mut xp, &mut got, &team) };
            assert_eq!(got, want, "{sh:?}");
        }
        assert!(taken >= 2 && refused >= 1, "{taken} shapes taken, {refused} refused");
    }
}
