//! The convolution product without an im2col matrix: z [M][N] = A [M][K] · col [K][N], where
//! col's rows are read straight from a zero-padded copy of the input (the forward at any
//! stride; the weight gradient at stride 1).
//!
//! Shapes (B = batch, N = B·H'·W', K = C·kh·kw, Hp/Wp the padded height and width):
//! - xp: [GUARD][C][B][Hp][Wp][GUARD], the input with its zero border (the guards let a 16-lane
//!   load start up to 15 values before the first value or end 15 after the last); with a
//!   stride s > 1 each padded plane as its s·s phase planes (`shifted::Grid`, [`pad`]), where a tap's inputs at
//!   consecutive output columns are consecutive values
//! - A packed: blocks of 6 (or 4) rows, each [K][rows]: one block's column p is contiguous
//! - a B panel: 16 output positions × K rows, [K][16]: row (c, i, j), lane l holds
//!   xp[c][e][oy·s+i][ox·s+j] for position (e, oy, ox) = 16·panel + l
//!
//! Why this shape of loop: with im2col, the column matrix is written once and then read from
//! far caches; here each task builds one panel (K·64 bytes, in L2) and multiplies it, in
//! K-blocks that stay in L1, by every row block of A, as a BLIS-style 6×16 register tile. Within
//! a panel row, the 16 positions are a few runs of consecutive input values (one per output
//! row they touch), so a row is a few unaligned loads blended together.
//!
//! Each output value is one FMA chain over p = 0..K in order, whatever the panel split: results
//! do not depend on the thread count.

#![cfg(target_arch = "x86_64")]

use super::avx::{Vf, W8, W16};
use super::conv::{ConvShape, split_items};
use super::gemm::PARALLEL_MIN_MACS;
use super::shifted::{Grid, lay_plane};
use super::team::{Parts, Team};
use std::arch::x86_64::*;

/// Zero values before and after the padded input.
const GUARD: usize = 16;
/// Rows of K a kernel call sums before its tile goes back to memory (the B slice, 16·KC
/// values, stays in L1).
const KC: usize = 256;

/// Values of the padded input copy for a batch: per channel and example, s·s phase planes.
pub fn pad_len(sh: &ConvShape, batch: usize) -> usize {
    2 * GUARD + sh.c * batch * Grid::of(sh).plane()
}

/// Row blocks of an M-row A: (first row, rows in the block: 6 or 4), covering M with at most
/// one padded row from M = 6 on (a single block of 4 below that).
fn row_blocks(m: usize) -> impl Iterator<Item = (usize, usize)> {
    let (sixes, rest) = (m / 6, m % 6);
    let (sixes, fours, extra_six) = match rest {
        0 => (sixes, 0, 0),
        1 | 2 if sixes > 0 => (sixes - 1, 2, 0),
        1..=4 => (sixes, 1, 0),
        _ => (sixes, 0, 1),
    };
    let sizes = std::iter::repeat_n(6, sixes + extra_six).chain(std::iter::repeat_n(4, fours));
    sizes.scan(0, |row, mr| {
        let at = *row;
        *row += mr;
        Some((at, mr))
    })
}

/// Values of A packed: every block's rows, padded rows included.
pub fn packed_a_len(m: usize, k: usize) -> usize {
    row_blocks(m).map(|(_, mr)| mr * k).sum()
}

/// Scratch values a task needs: two B panels (the 512-bit tile reads a pair).
pub fn panel_len(sh: &ConvShape) -> usize {
    2 * 16 * sh.ckk()
}

/// A [m][k] (row-major) into its row blocks, [k][mr] each; padded rows zero.
fn pack_a(a: &[f32], m: usize, k: usize, out: &mut [f32]) {
    for (r0, mr) in row_blocks(m) {
        pack_block(a, m, k, r0, &mut out[r0 * k..(r0 + mr) * k]);
    }
}

/// [`pack_a`] with the blocks split across the team (a copy: no sum to split).
fn pack_a_on(a: &[f32], m: usize, k: usize, out: &mut [f32], team: &Team) {
    let blocks: Vec<(usize, usize)> = row_blocks(m).collect();
    let len = packed_a_len(m, k);
    let base = Ptr(out[..len].as_mut_ptr());
    split_items(blocks.len(), len, team, &|range| {
        let base = &base;
        for &(r0, mr) in &blocks[range] {
            // SAFETY: block (r0, mr) is values r0·k..(r0 + mr)·k of out, this task's alone.
            pack_block(a, m, k, r0, unsafe { std::slice::from_raw_parts_mut(base.0.add(r0 * k), mr * k) });
        }
    });
}

/// The row block of A from row r0 ([k][mr], mr = block.len() / k; rows past m zero). Block
/// (r0, mr) of [`row_blocks`] starts at r0·k in the packed A.
fn pack_block(a: &[f32], m: usize, k: usize, r0: usize, block: &mut [f32]) {
    let mr = block.len() / k;
    for (p, col) in block.chunks_exact_mut(mr).enumerate() {
        for (i, v) in col.iter_mut().enumerate() {
            *v = if r0 + i < m { a[(r0 + i) * k + p] } else { 0.0 };
        }
    }
}

/// x [C][B][H][W] into xp (see the module comment), planes split across the team. With a
/// stride s > 1, each padded plane is stored as its s·s phase planes, [s][s][⌈Hp/s⌉][⌈Wp/s⌉]:
/// phase (a, b) holds the padded rows a, a + s, … and columns b, b + s, … (zero past the end),
/// so that a tap's inputs at consecutive output columns are consecutive values.
fn pad(sh: &ConvShape, batch: usize, x: &[f32], xp: &mut [f32], team: &Team) {
    let g = Grid::of(sh);
    let planes = sh.c * batch;
    let (head, rest) = xp[..pad_len(sh, batch)].split_at_mut(GUARD);
    let (body, tail) = rest.split_at_mut(planes * g.plane());
    head.fill(0.0);
    tail.fill(0.0);
    let base = Parts::of(body);
    split_items(planes, planes * g.plane(), team, &|range| {
        for q in range {
            // SAFETY: plane q is this task's alone.
            let dst = unsafe { base.part(q * g.plane(), g.plane()) };
            lay_plane(sh, g, &x[q * sh.h * sh.w..(q + 1) * sh.h * sh.w], dst);
        }
    });
}

/// The shared scratch of [`forward`]: the padded input and the packed A.
pub fn head_len(sh: &ConvShape, batch: usize) -> usize {
    pad_len(sh, batch) + packed_a_len(sh.f, sh.ckk())
}

/// z [F][N] (row stride N) = w · col(x), then + bias and relu per `bias`, for a convolution
/// of any stride (the input in phase planes, [`pad`]); `head` holds [`head_len`] values, `slots` a slot of `per_task` ≥ [`panel_len`]
/// values per team member. Panels split across the team in contiguous ranges.
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
    slots: &mut [f32],
    per_task: usize,
    z: &mut [f32],
    team: &Team,
) {
    let (ckk, oplane) = (sh.ckk(), sh.oh * sh.ow);
    let n = batch * oplane;
    let (xp, rest) = head.split_at_mut(pad_len(sh, batch));
    let ap = &mut rest[..packed_a_len(sh.f, ckk)];
    assert!(z.len() >= sh.f * n && w.len() >= sh.f * ckk && x.len() >= sh.c * batch * sh.h * sh.w);
    pad(sh, batch, x, xp, team);
    pack_a_on(w, sh.f, ckk, ap, team);
    let panels = n.div_ceil(16);
    assert!(per_task >= panel_len(sh));
    let (xp, ap) = (&*xp, &*ap);
    let taps = panel_taps(sh, batch);
    let taps = &taps[..];
    // Tasks split whole groups of panels (two a group on 16 lanes).
    let group = if super::simd::has_avx512() { group_of::<W16>() } else { group_of::<W8>() };
    let units = panels.div_ceil(group);
    split_panels(units, sh.f * ckk * n, team, (slots, per_task, panel_len(sh)), z.as_mut_ptr(), &|range, panel, z| {
        // SAFETY: the path in use is avx2 or avx512 (the caller's promise); the slot and the
        // columns of these panels are this task's.
        unsafe { task(sh, taps, xp, ap, bias, group * range.start..(group * range.end).min(panels), panel, z, n) }
    });
}

/// A pointer that tasks use for disjoint parts of one buffer.
struct Ptr(*mut f32);
// SAFETY: each task writes only its own part (its planes, its panels' outputs, its slot).
unsafe impl Sync for Ptr {}

/// One task's work: its range of panels, its slot, the output.
type PanelTask<'a> = dyn Fn(std::ops::Range<usize>, &mut [f32], *mut f32) + Sync + 'a;

/// Runs `f(range, slot, out)` for contiguous ranges of `0..panels`, one per task (across the
/// team when `macs` pays for it), each task with its own `slot_len` values of `slots`, `per_task`
/// apart. `f` must write only the part of `out` that its range owns.
fn split_panels(
    panels: usize,
    macs: usize,
    team: &Team,
    (slots, per_task, slot_len): (&mut [f32], usize, usize),
    out: *mut f32,
    f: &PanelTask,
) {
    let parts = if macs >= PARALLEL_MIN_MACS { team.size().min(panels) } else { 1 };
    let per = panels.div_ceil(parts.max(1));
    assert!(slot_len <= per_task && slots.len() >= panels.div_ceil(per) * per_task);
    let (op, sp) = (Ptr(out), Ptr(slots.as_mut_ptr()));
    team.run(panels.div_ceil(per), &|t| {
        let (op, sp) = (&op, &sp);
        // SAFETY: slot t lies inside `slots` (asserted above) and is this task's alone.
        let slot = unsafe { std::slice::from_raw_parts_mut(sp.0.add(t * per_task), slot_len) };
        f(t * per..((t + 1) * per).min(panels), slot, op.0);
    });
}

/// Panels a group holds: one on 8 lanes (two vectors a panel), two on 16 (one vector each, so a
/// 6-row block keeps 12 accumulators). A group's panels lie one after the other in the slot.
fn group_of<V: Vf>() -> usize {
    2 * V::L / 16
}

/// One task's panels, a group at a time: build its panels, then multiply them by every row
/// block of A, K-block by K-block; a last group may hold fewer panels.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn task_imp<V: Vf>(
    sh: &ConvShape,
    taps: &[isize],
    xp: &[f32],
    ap: &[f32],
    bias: Option<(&[f32], bool)>,
    panels: std::ops::Range<usize>,
    slot: &mut [f32],
    z: *mut f32,
    n: usize,
) {
    let ckk = sh.ckk();
    let kblocks = ckk.div_ceil(KC);
    let kc = ckk.div_ceil(kblocks);
    let mut pn = panels.start;
    while pn < panels.end {
        let count = group_of::<V>().min(panels.end - pn);
        let q0 = 16 * pn;
        let cols = (n - q0).min(16 * count);
        for (i, panel) in slot.chunks_exact_mut(16 * ckk).take(count).enumerate() {
            // SAFETY: the caller's xp and slot, sized for this convolution and batch; 16 lanes
            // run on the avx512 path only (AVX-512F present).
            unsafe {
                if V::L == 16 {
                    build_panel_512(sh, taps, xp, q0 + 16 * i, n, panel)
                } else {
                    build_panel(sh, taps, xp, q0 + 16 * i, n, panel)
                }
            };
        }
        for k0 in (0..ckk).step_by(kc) {
            let k1 = (k0 + kc).min(ckk);
            let fin = if k1 == ckk { bias.map(|(b, relu)| (b.as_ptr(), relu)) } else { None };
            let b = slot[16 * k0..].as_ptr();
            for (r0, mr) in row_blocks(sh.f) {
                let a = ap[r0 * ckk + mr * k0..].as_ptr();
                let fin = fin.map(|(b, relu)| (b.wrapping_add(r0), relu));
                // SAFETY: rows r0.., columns q0..q0+cols of z are this task's.
                unsafe {
                    let c = z.add(r0 * n + q0);
                    let rows = (mr, sh.f - r0);
                    tiles::<V>(k1 - k0, a, b, 16 * ckk, count, c, n, rows, cols, k0 > 0, fin);
                }
            }
        }
        pn += count;
    }
}

/// The tile for a group of `count` panels (B streams `panel` apart from `b`, 16 values a row):
/// on 8 lanes two vectors of one panel, on 16 one vector of each; `rows` = (the block's rows,
/// the rows of C left).
///
/// SAFETY: as [`tile`].
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn tiles<V: Vf>(
    kc: usize,
    a: *const f32,
    b: *const f32,
    panel: usize,
    count: usize,
    c: *mut f32,
    ldc: usize,
    (mr, left): (usize, usize),
    cols: usize,
    load: bool,
    fin: Option<(*const f32, bool)>,
) {
    let rows = mr.min(left);
    let second = if V::L == 8 { b.wrapping_add(8) } else { b.wrapping_add(panel) };
    unsafe {
        match (mr, V::L == 8 || count == 2) {
            (6, true) => tile::<V, 6, 2>(kc, a, [b, second], c, ldc, rows, cols, load, fin),
            (_, true) => tile::<V, 4, 2>(kc, a, [b, second], c, ldc, rows, cols, load, fin),
            (6, false) => tile::<V, 6, 1>(kc, a, [b], c, ldc, rows, cols, load, fin),
            (_, false) => tile::<V, 4, 1>(kc, a, [b], c, ldc, rows, cols, load, fin),
        }
    }
}

super::avx::by_width! {
    /// One task's panels (a range of whole groups, but for the last).
    ///
    /// SAFETY: the path in use is `avx2` or `avx512`; a slot of [`panel_len`] values.
    pub unsafe fn task / task_256 / task_512(
        sh: &ConvShape, taps: &[isize], xp: &[f32], ap: &[f32], bias: Option<(&[f32], bool)>,
        panels: std::ops::Range<usize>, slot: &mut [f32], z: *mut f32, n: usize,
    ) = task_imp::<W8> | <W16>
}

/// The runs of a forward panel: positions q0..q0+16 (up to n) as offsets in xp. Position
/// (e, oy, ox) and tap (c, i, j) read padded row oy·s + i, column ox·s + j: phase
/// (i % s, j % s), at row oy + i / s and column ox + j / s of it ([`panel_taps`]).
#[inline(always)]
fn panel_runs(sh: &ConvShape, q0: usize, n: usize) -> Runs {
    let Grid { s, hq, wq } = Grid::of(sh);
    let (oplane, plane) = (sh.oh * sh.ow, s * s * hq * wq);
    Runs::new((q0..(q0 + 16).min(n)).map(|q| {
        let (e, rem) = (q / oplane, q % oplane);
        GUARD + e * plane + (rem / sh.ow) * wq + rem % sh.ow
    }))
}

/// The offset in xp of every row (c, i, j) of a forward panel, in order, from a position's.
/// (Worked out once per call: computed per panel, its divisions by the stride took a tenth of
/// the panel's build.)
fn panel_taps(sh: &ConvShape, batch: usize) -> Vec<isize> {
    let Grid { s, hq, wq } = Grid::of(sh);
    let cs = batch * s * s * hq * wq;
    let mut taps = Vec::with_capacity(sh.ckk());
    for c in 0..sh.c {
        for i in 0..sh.kh {
            for j in 0..sh.kw {
                taps.push((c * cs + ((i % s * s + j % s) * hq + i / s) * wq + j / s) as isize);
            }
        }
    }
    taps
}

/// One B panel: positions q0..q0+16 (lanes past n hold whatever the loads brought) of every row
/// (c, i, j) (`taps`, [`panel_taps`]), from xp.
///
/// SAFETY: AVX2 present; xp is [`pad_len`] values for this batch, panel 16·K.
#[target_feature(enable = "avx2,fma")]
unsafe fn build_panel(sh: &ConvShape, taps: &[isize], xp: &[f32], q0: usize, n: usize, panel: &mut [f32]) {
    let runs = panel_runs(sh, q0, n);
    assert!(panel.len() >= 16 * taps.len());
    let mut out = panel.as_mut_ptr();
    for &tap in taps {
        // SAFETY: see `Runs::lanes`; the panel has 16·K values.
        unsafe {
            let (v0, v1) = runs.lanes(xp, tap);
            _mm256_storeu_ps(out, v0);
            _mm256_storeu_ps(out.add(8), v1);
            out = out.add(16);
        }
    }
}

/// [`build_panel`] on 16 lanes: a run after the first is one masked load into the row's vector
/// (where the 8-lane build loads two halves and blends each); one store a row.
///
/// SAFETY: AVX-512F present; as [`build_panel`].
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn build_panel_512(sh: &ConvShape, taps: &[isize], xp: &[f32], q0: usize, n: usize, panel: &mut [f32]) {
    let runs = panel_runs(sh, q0, n);
    assert!(panel.len() >= 16 * taps.len());
    let mut out = panel.as_mut_ptr();
    let x = xp.as_ptr();
    for &tap in taps {
        // SAFETY: as `Runs::lanes`: the first run's load stays within GUARD of the padded
        // body; the later runs' loads touch only their own lanes' values (masked).
        unsafe {
            let mut v = _mm512_loadu_ps(x.offset(runs.starts[0] + tap));
            for r in 1..runs.count {
                v = _mm512_mask_loadu_ps(v, runs.bits[r], x.offset(runs.starts[r] + tap));
            }
            _mm512_storeu_ps(out, v);
            out = out.add(16);
        }
    }
}

/// The 16 lanes of a panel row as runs of consecutive addresses: lane l of run r reads
/// `start[r] + l` plus the row's offset, for the lanes of the run's mask. Lanes past the last
/// address belong to the first run (whatever it reads there is never stored).
struct Runs {
    starts: [isize; 16],
    masks: [[__m256; 2]; 16],
    /// The masks as lane bits (bit l for lane l), for 16-lane masked loads.
    bits: [u16; 16],
    count: usize,
}

impl Runs {
    /// The runs of up to 16 lane addresses (at least one).
    #[inline(always)]
    fn new(addresses: impl Iterator<Item = usize>) -> Runs {
        let mut runs = Runs { starts: [0; 16], masks: [lane_masks(0, 0); 16], bits: [0; 16], count: 0 };
        let (mut prev, mut first, mut lanes) = (0usize, 0usize, 0usize);
        let bits = |first: usize, end: usize| ((1u32 << end) - (1u32 << first)) as u16;
        for (l, at) in addresses.enumerate() {
            if l == 0 || at != prev + 1 {
                if l > 0 {
                    runs.masks[runs.count - 1] = lane_masks(first, l);
                    runs.bits[runs.count - 1] = bits(first, l);
                }
                runs.starts[runs.count] = at as isize - l as isize;
                runs.count += 1;
                first = l;
            }
            prev = at;
            lanes = l + 1;
        }
        runs.masks[runs.count - 1] = lane_masks(first, lanes);
        runs.bits[runs.count - 1] = bits(first, lanes);
        runs
    }

    /// The 16 lanes at offset `off` from every run's start in `xp`.
    ///
    /// SAFETY: AVX2 present; each load reads start[r] + off + 0..16 where start[r] + off + l is
    /// inside xp's padded body for some lane l of the run: within GUARD of it, so inside xp.
    #[inline(always)]
    unsafe fn lanes(&self, xp: &[f32], off: isize) -> (__m256, __m256) {
        unsafe {
            let p = xp.as_ptr().offset(self.starts[0] + off);
            let (mut v0, mut v1) = (_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8)));
            for r in 1..self.count {
                let p = xp.as_ptr().offset(self.starts[r] + off);
                v0 = _mm256_blendv_ps(v0, _mm256_loadu_ps(p), self.masks[r][0]);
                v1 = _mm256_blendv_ps(v1, _mm256_loadu_ps(p.add(8)), self.masks[r][1]);
            }
            (v0, v1)
        }
    }
}

/// The shared scratch of [`weight_grad`]: the padded input and the packed delta.
pub fn grad_head_len(sh: &ConvShape, batch: usize) -> usize {
    pad_len(sh, batch) + packed_a_len(sh.f, batch * sh.oh * sh.ow)
}

/// Scratch values a task of [`weight_grad`] needs: two B slices (the 512-bit tile reads a pair).
pub const GRAD_SLOT: usize = 2 * 16 * QC;

/// Positions a weight-gradient kernel call sums before its tile goes back to memory.
const QC: usize = 256;

/// dw [F][K] = delta [F][N] · colᵀ, col read from the padded input as in [`forward`]: C is
/// dW itself (6 filters × 16 im2col rows a tile), A the packed delta, and a B slice holds 16
/// im2col rows at QC consecutive positions, [QC][16]. Tasks split dW's columns; each sums over
/// the positions in order, so results do not depend on the thread count. `head` holds
/// [`grad_head_len`] values, `slots` [`GRAD_SLOT`] per team member.
///
/// SAFETY: AVX2 and FMA present.
#[allow(clippy::too_many_arguments)]
pub unsafe fn weight_grad(
    sh: &ConvShape,
    batch: usize,
    x: &[f32],
    delta: &[f32],
    head: &mut [f32],
    slots: &mut [f32],
    per_task: usize,
    dw: &mut [f32],
    team: &Team,
) {
    assert!(sh.s == 1, "the panel product is for stride 1");
    let (ckk, n) = (sh.ckk(), batch * sh.oh * sh.ow);
    let (xp, rest) = head.split_at_mut(pad_len(sh, batch));
    let dp = &mut rest[..packed_a_len(sh.f, n)];
    assert!(dw.len() >= sh.f * ckk && delta.len() >= sh.f * n);
    pad(sh, batch, x, xp, team);
    pack_a(delta, sh.f, n, dp);
    let panels = ckk.div_ceil(16);
    let (xp, dp) = (&*xp, &*dp);
    // Tasks split whole groups of panels (two a group on 16 lanes).
    let group = if super::simd::has_avx512() { group_of::<W16>() } else { group_of::<W8>() };
    let units = panels.div_ceil(group);
    split_panels(units, sh.f * ckk * n, team, (slots, per_task, GRAD_SLOT), dw.as_mut_ptr(), &|range, slice, dw| {
        // SAFETY: the path in use is avx2 or avx512 (the caller's promise); the slot and dW's
        // columns of these panels are this task's.
        unsafe { grad_task(sh, batch, xp, dp, group * range.start..(group * range.end).min(panels), slice, dw) }
    });
}

/// The runs of a weight-gradient panel: its im2col rows r0..r0+cols as offsets in xp.
fn grad_runs(sh: &ConvShape, batch: usize, r0: usize, cols: usize) -> Runs {
    let Grid { hq: hp, wq: wp, .. } = Grid::of(sh);
    let cs = batch * hp * wp;
    Runs::new((r0..r0 + cols).map(|r| {
        let (c, i, j) = (r / (sh.kh * sh.kw), r / sh.kw % sh.kh, r % sh.kw);
        c * cs + i * wp + j
    }))
}

/// A B slice of a weight-gradient panel: row q - q0 holds the panel's im2col rows (`runs`) at
/// position q, for q in q0..q1.
///
/// SAFETY: AVX2 present; xp is [`pad_len`] values for this batch, out 16·(q1 - q0).
#[target_feature(enable = "avx2,fma")]
unsafe fn build_slice(sh: &ConvShape, xp: &[f32], runs: &Runs, q0: usize, q1: usize, out: &mut [f32]) {
    let Grid { hq: hp, wq: wp, .. } = Grid::of(sh);
    let (mut e, rem) = (q0 / (sh.oh * sh.ow), q0 % (sh.oh * sh.ow));
    let (mut oy, mut ox) = (rem / sh.ow, rem % sh.ow);
    assert!(out.len() >= 16 * (q1 - q0));
    let mut out = out.as_mut_ptr();
    for _ in q0..q1 {
        // SAFETY: see `Runs::lanes`; out has 16 values per position.
        unsafe {
            let (v0, v1) = runs.lanes(xp, (GUARD + e * hp * wp + oy * wp + ox) as isize);
            _mm256_storeu_ps(out, v0);
            _mm256_storeu_ps(out.add(8), v1);
            out = out.add(16);
        }
        ox += 1;
        if ox == sh.ow {
            ox = 0;
            oy += 1;
            if oy == sh.oh {
                oy = 0;
                e += 1;
            }
        }
    }
}

/// One task's columns of dW, a group of panels of 16 im2col rows at a time (one on 8 lanes, two
/// on 16: 32 columns of dW a tile): position block by block, the group's B slices (one after
/// the other in the slot) and their product with every row block of the packed delta.
#[inline(always)]
unsafe fn grad_task_imp<V: Vf>(
    sh: &ConvShape,
    batch: usize,
    xp: &[f32],
    dp: &[f32],
    panels: std::ops::Range<usize>,
    slot: &mut [f32],
    dw: *mut f32,
) {
    let (ckk, n) = (sh.ckk(), batch * sh.oh * sh.ow);
    let mut pn = panels.start;
    while pn < panels.end {
        let count = group_of::<V>().min(panels.end - pn);
        let r0 = 16 * pn;
        let cols = (ckk - r0).min(16 * count);
        let runs: [Option<Runs>; 2] =
            std::array::from_fn(|i| (i < count).then(|| grad_runs(sh, batch, r0 + 16 * i, (cols - 16 * i).min(16))));
        let mut q0 = 0;
        while q0 < n {
            let q1 = (q0 + QC).min(n);
            for (runs, out) in runs.iter().flatten().zip(slot.chunks_exact_mut(16 * QC)) {
                // SAFETY: the slot holds GRAD_SLOT = 2·16·QC values.
                unsafe { build_slice(sh, xp, runs, q0, q1, out) };
            }
            for (f0, mr) in row_blocks(sh.f) {
                let a = dp[f0 * n + mr * q0..].as_ptr();
                // SAFETY: rows f0.., columns r0..r0+cols of dW are this task's.
                unsafe {
                    let c = dw.add(f0 * ckk + r0);
                    tiles::<V>(q1 - q0, a, slot.as_ptr(), 16 * QC, count, c, ckk, (mr, sh.f - f0), cols, q0 > 0, None);
                }
            }
            q0 = q1;
        }
        pn += count;
    }
}

super::avx::by_width! {
    /// One task's columns of dW (a range of whole groups of panels, but for the last).
    ///
    /// SAFETY: the path in use is `avx2` or `avx512`; a slot of [`GRAD_SLOT`] values.
    pub unsafe fn grad_task / grad_task_256 / grad_task_512(
        sh: &ConvShape, batch: usize, xp: &[f32], dp: &[f32], panels: std::ops::Range<usize>, slot: &mut [f32],
        dw: *mut f32,
    ) = grad_task_imp::<W8> | <W16>
}

/// Sign-bit masks of lanes first..end of 16, as two 8-lane halves.
#[inline(always)]
fn lane_masks(first: usize, end: usize) -> [__m256; 2] {
    let bits = |h: usize| -> __m256 {
        let mut m = [0i32; 8];
        for (k, v) in m.iter_mut().enumerate() {
            let l = 8 * h + k;
            *v = if l >= first && l < end { -1 } else { 0 };
        }
        // SAFETY: 8 i32 values, reinterpreted as 8 lanes.
        unsafe { _mm256_castsi256_ps(_mm256_loadu_si256(m.as_ptr().cast())) }
    };
    [bits(0), bits(1)]
}

/// C[rows×cols] (row stride ldc) = (C +) Σ_p A[p][·] ⊗ B[p][·] over kc values of p, A packed
/// [kc][MR] and B as NV vectors of L lanes per p (vector v at `bs[v] + 16p`, C's columns
/// L·v..L·v + L); with `fin`, then + bias[row] and max(·, 0) when its flag is set.
///
/// SAFETY: the vector width's features present; A for kc·MR values, each B stream for 16·kc,
/// C for rows × cols at ldc.
#[inline(always)]
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
unsafe fn tile<V: Vf, const MR: usize, const NV: usize>(
    kc: usize,
    a: *const f32,
    bs: [*const f32; NV],
    c: *mut f32,
    ldc: usize,
    rows: usize,
    cols: usize,
    load: bool,
    fin: Option<(*const f32, bool)>,
) {
    unsafe {
        let full = cols == NV * V::L;
        let mut masks = [V::mask(0); NV];
        for (v, m) in masks.iter_mut().enumerate() {
            *m = V::mask(cols.saturating_sub(V::L * v));
        }
        let mut acc = [[V::zero(); NV]; MR];
        if load {
            for i in 0..rows {
                let src = c.add(i * ldc);
                for v in 0..NV {
                    let s = src.add(V::L * v);
                    acc[i][v] = if full { V::load(s) } else { V::load_masked(s, masks[v]) };
                }
            }
        }
        for p in 0..kc {
            let mut bv = [V::zero(); NV];
            for v in 0..NV {
                bv[v] = V::load(bs[v].add(16 * p));
            }
            for i in 0..MR {
                let av = V::splat(a.add(MR * p + i));
                for v in 0..NV {
                    acc[i][v] = V::fma(av, bv[v], acc[i][v]);
                }
            }
        }
        for i in 0..rows {
            let dst = c.add(i * ldc);
            for v in 0..NV {
                let mut x = acc[i][v];
                if let Some((bias, relu)) = fin {
                    x = V::add(x, V::splat(bias.add(i)));
                    if relu {
                        x = V::max0(x);
                    }
                }
                let d = dst.add(V::L * v);
                if full {
                    V::store(d, x);
                } else {
                    V::store_masked(d, masks[v], x);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_blocks_cover_every_row_once_with_at_most_one_padded_row() {
        for m in 1..200 {
            let blocks: Vec<_> = row_blocks(m).collect();
            let covered: usize = blocks.iter().map(|b| b.1).sum();
            assert!(covered >= m && covered <= m + 3, "m {m}: {blocks:?}");
            if m >= 6 {
                assert!(covered <= m + 1, "m {m}: {blocks:?}");
            }
            for w in blocks.windows(2) {
                assert_eq!(w[0].0 + w[0].1, w[1].0);
            }
            assert_eq!(blocks[0].0, 0);
        }
    }
}
