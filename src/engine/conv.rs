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
//!
//! With g groups (w [F][C/g][kh][kw], as PyTorch), group k's input channels, filters, weights
//! and outputs are contiguous blocks, so each group runs as a convolution of its own
//! ([`ConvShape::group`]), one after another. A depthwise convolution (g = C, F = m·C) takes
//! its own kernel (`depthwise`: no im2col). Without a bias, `b` and `db` are empty slices.

#[path = "depthwise.rs"]
mod depthwise;

use super::gemm::{Kernel, PARALLEL_MIN_MACS, View, matmul};
use super::team::Team;
use crate::spec::{Activation, Kind, LEAKY_SLOPE, Layer};
use std::ops::Range;

/// Elementwise passes (im2col, col2im, bias and activation) of fewer values stay on one thread.
pub const PARALLEL_MIN_VALUES: usize = 1 << 16;

/// The backward pass visits only δ's nonzero values (`sparse`) when at most this share of δ is
/// nonzero. The crossover on network e's second convolution lies between 20% and 30%
/// (`examples/conv_shapes.rs`, the "δ nonzero" rows); behind a 2×2 max pool and a relu about 12%
/// of δ is nonzero in training.
pub const SPARSE_MAX_DENSITY: f32 = 0.25;

/// The share of nonzero values in δ (what the backward compares with [`SPARSE_MAX_DENSITY`]).
pub fn nonzero_share(delta: &[f32]) -> f32 {
    let nonzero = delta.iter().filter(|&&v| v != 0.0).count();
    nonzero as f32 / delta.len().max(1) as f32
}

/// `nonzero_share(delta) <= SPARSE_MAX_DENSITY`, stopping as soon as too many values are
/// nonzero: behind a batch norm δ is dense, and the whole count cost ~3% of a resnet20 step.
pub fn sparse_enough(delta: &[f32]) -> bool {
    let limit = (SPARSE_MAX_DENSITY as f64 * delta.len().max(1) as f64).floor() as usize;
    let mut nonzero = 0;
    for run in delta.chunks(4096) {
        nonzero += run.iter().filter(|&&v| v != 0.0).count();
        if nonzero > limit {
            return false;
        }
    }
    true
}

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
    /// Channel groups: filter f reads the C/groups channels of group f/(F/groups) only
    /// (groups = C is depthwise, [`crate::engine::depthwise`]).
    pub groups: usize,
    /// Whether the layer adds a bias (without one, `b` and `db` are empty slices).
    pub bias: bool,
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
            groups: cv.groups,
            bias: cv.bias,
        })
    }

    /// The input's height and width with its zero border.
    pub fn padded(&self) -> (usize, usize) {
        (self.h + 2 * self.ph, self.w + 2 * self.pw)
    }

    /// Weights per filter, and rows of one group's im2col matrix: C/groups·kh·kw.
    pub fn ckk(&self) -> usize {
        self.c / self.groups * self.kh * self.kw
    }

    /// Whether each filter reads one channel (groups = C; F = k·C filters, k per channel).
    /// (Up to [`depthwise::MAX_TAPS`] taps per channel; a larger one runs group by group.)
    pub fn depthwise(&self) -> bool {
        self.groups > 1 && self.groups == self.c && self.f / self.c * self.kh * self.kw <= depthwise::MAX_TAPS
    }

    /// One group as a convolution of its own: C/groups channels, F/groups filters, one group.
    /// A group's input channels, filters, weights and outputs are contiguous blocks of the
    /// whole layer's ([C][B][H][W], [F][CKK], [F][B][H'][W']), one after another.
    pub fn group(&self) -> ConvShape {
        ConvShape { c: self.c / self.groups, f: self.f / self.groups, groups: 1, ..*self }
    }

    /// Values of the im2col matrix for a batch.
    pub fn col_len(&self, batch: usize) -> usize {
        self.ckk() * batch * self.oh * self.ow
    }

    /// The convolution whose forward pass is this one's input gradient, when there is one
    /// (stride 1, padding below the kernel size): dx [C][B][H][W] = conv(delta, W') with F input
    /// channels, C filters W'[c][f][i][j] = w[f][c][kh-1-i][kw-1-j] and padding kh-1-ph, kw-1-pw.
    pub fn transposed(&self) -> Option<ConvShape> {
        if self.groups != 1 || self.s != 1 || self.ph >= self.kh || self.pw >= self.kw {
            return None;
        }
        let t = ConvShape {
            c: self.f,
            h: self.oh,
            w: self.ow,
            f: self.c,
            kh: self.kh,
            kw: self.kw,
            s: 1,
            ph: self.kh - 1 - self.ph,
            pw: self.kw - 1 - self.pw,
            oh: self.h,
            ow: self.w,
            groups: 1,
            bias: false,
        };
        (t.h + 2 * t.ph + 1 == t.oh + t.kh && t.w + 2 * t.pw + 1 == t.ow + t.kw).then_some(t)
    }

    /// W' of [`ConvShape::transposed`] from w.
    fn flip_weights(&self, w: &[f32], out: &mut [f32]) {
        let (kk, ckk) = (self.kh * self.kw, self.ckk());
        for c in 0..self.c {
            for f in 0..self.f {
                for i in 0..self.kh {
                    for j in 0..self.kw {
                        out[c * self.f * kk + (f * self.kh + i) * self.kw + j] =
                            w[f * ckk + (c * self.kh + self.kh - 1 - i) * self.kw + self.kw - 1 - j];
                    }
                }
            }
        }
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

/// The rows `rows` of the im2col matrix, for examples `ex` only: `out` [rows][ex·H'·W'].
fn im2col_tile(sh: &ConvShape, batch: usize, x: &[f32], rows: Range<usize>, ex: Range<usize>, out: &mut [f32]) {
    let (plane, oplane) = (sh.h * sh.w, sh.oh * sh.ow);
    let n = ex.len() * oplane;
    for (r, row) in rows.zip(out.chunks_exact_mut(n)) {
        let (c, i, j) = (r / (sh.kh * sh.kw), r / sh.kw % sh.kh, r % sh.kw);
        let (lo, hi) = valid(sh, j);
        for (k, e) in ex.clone().enumerate() {
            let xe = &x[(c * batch + e) * plane..(c * batch + e + 1) * plane];
            for oy in 0..sh.oh {
                let out = &mut row[k * oplane + oy * sh.ow..k * oplane + (oy + 1) * sh.ow];
                let iy = oy * sh.s + i;
                if iy < sh.ph || iy - sh.ph >= sh.h {
                    out.fill(0.0);
                    continue;
                }
                let xr = &xe[(iy - sh.ph) * sh.w..(iy - sh.ph + 1) * sh.w];
                out[..lo].fill(0.0);
                out[hi..].fill(0.0);
                if hi > lo && sh.s == 1 {
                    let x0 = lo + j - sh.pw;
                    out[lo..hi].copy_from_slice(&xr[x0..x0 + hi - lo]);
                } else if hi > lo {
                    for (ox, o) in out[lo..hi].iter_mut().enumerate() {
                        *o = xr[(lo + ox) * sh.s + j - sh.pw];
                    }
                }
            }
        }
    }
}

/// col [CKK][B·H'·W'] from x [C][B][H][W] (the whole matrix; the engine works in tiles).
pub fn im2col(sh: &ConvShape, batch: usize, x: &[f32], col: &mut [f32]) {
    im2col_tile(sh, batch, x, 0..sh.ckk(), 0..batch, &mut col[..sh.col_len(batch)]);
}

/// Columns q0..q0+len of rows [F][n] in 16-wide panels for `avx::packed`: `out`
/// [⌈len/16⌉][F][16]; lanes past len zeroed.
fn row_panels(rows: &[f32], f: usize, n: usize, q0: usize, len: usize, out: &mut [f32]) {
    for (p, panel) in out[..len.div_ceil(16) * 16 * f].chunks_exact_mut(16 * f).enumerate() {
        let (c0, w) = (q0 + 16 * p, (len - 16 * p).min(16));
        for (ff, dst) in panel.chunks_exact_mut(16).enumerate() {
            let src = &rows[ff * n + c0..];
            if w == 16 {
                dst.copy_from_slice(&src[..16]);
            } else {
                dst[..w].copy_from_slice(&src[..w]);
                dst[w..].fill(0.0);
            }
        }
    }
}

/// Columns q0..q0+len of delta [F][n], transposed into 16-wide panels of filters for
/// `avx::packed`: `out` [⌈F/16⌉][len][16], (q, f) at `(f/16)·16·len + 16q + f%16`; lanes past F
/// zeroed.
fn delta_panels(delta: &[f32], f: usize, n: usize, q0: usize, len: usize, out: &mut [f32]) {
    let panels = f.div_ceil(16);
    let out = &mut out[..panels * 16 * len];
    for fb in 0..panels {
        let dst = &mut out[fb * 16 * len..(fb + 1) * 16 * len];
        for fl in 0..16 {
            let ff = fb * 16 + fl;
            if ff >= f {
                dst[fl..].iter_mut().step_by(16).for_each(|d| *d = 0.0);
                continue;
            }
            let src = &delta[ff * n + q0..ff * n + q0 + len];
            for (d, &v) in dst[fl..].iter_mut().step_by(16).zip(src) {
                *d = v;
            }
        }
    }
}

/// Sums a tile of dcol [CKK][ex·H'·W'] into the planes of dx [C][B][H][W] for examples `ex`
/// (rows (c, i, j) in order, so each value's sum has a fixed order): written, or with `add`
/// added to what dx holds (each plane summed apart first, then added: the bits of a sum
/// written elsewhere and added after, without its pass over the whole gradient).
///
/// SAFETY: the planes (c, e) for e in `ex` of `dx` belong to the caller alone.
unsafe fn col2im_tile(sh: &ConvShape, batch: usize, dcol: &[f32], ex: Range<usize>, dx: &SendPtr, add: bool) {
    let (plane, oplane) = (sh.h * sh.w, sh.oh * sh.ow);
    let n = ex.len() * oplane;
    let mut apart = if add { vec![0.0f32; plane] } else { Vec::new() };
    for c in 0..sh.c {
        for (k, e) in ex.clone().enumerate() {
            // SAFETY: plane (c, e) is the caller's.
            let out = unsafe { std::slice::from_raw_parts_mut(dx.0.add((c * batch + e) * plane), plane) };
            let dxe = if add { &mut apart[..] } else { &mut *out };
            dxe.fill(0.0);
            for i in 0..sh.kh {
                for j in 0..sh.kw {
                    let r = (c * sh.kh + i) * sh.kw + j;
                    let src = &dcol[r * n + k * oplane..r * n + (k + 1) * oplane];
                    let (lo, hi) = valid(sh, j);
                    if hi == lo {
                        continue;
                    }
                    for oy in 0..sh.oh {
                        let iy = oy * sh.s + i;
                        if iy < sh.ph || iy - sh.ph >= sh.h {
                            continue;
                        }
                        let src = &src[oy * sh.ow..(oy + 1) * sh.ow];
                        let xr = &mut dxe[(iy - sh.ph) * sh.w..(iy - sh.ph + 1) * sh.w];
                        if sh.s == 1 {
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
            if add {
                super::kernels::axpy(1.0, &apart, out);
            }
        }
    }
}

/// dx [C][B][H][W] from the whole dcol [CKK][B·H'·W'] (for tests and benchmarks).
pub fn col2im(sh: &ConvShape, batch: usize, dcol: &[f32], dx: &mut [f32]) {
    let dx = SendPtr(dx[..sh.c * batch * sh.h * sh.w].as_mut_ptr());
    // SAFETY: this call owns all of dx.
    unsafe { col2im_tile(sh, batch, dcol, 0..batch, &dx, false) }
}

/// The act of one row: z += b, then the activation, in place.
fn bias_act(act: Activation, row: &mut [f32], b: f32) {
    let slope = LEAKY_SLOPE as f32;
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
        Activation::Relu6 => row.iter_mut().for_each(|z| *z = (*z + b).clamp(0.0, 6.0)),
    }
}

/// [`bias_act`] for a layer that may have no bias: without one, only the activation (nothing
/// at all for the identity).
pub(crate) fn finish(act: Activation, row: &mut [f32], b: Option<f32>) {
    match (act, b) {
        (Activation::Identity, None) => {}
        (_, b) => bias_act(act, row, b.unwrap_or(0.0)),
    }
}

/// z[f][·] += b[f], then the activation, in place, over rows of `n` values.
pub fn bias_act_rows(act: Activation, z: &mut [f32], bias: &[f32], n: usize, team: &Team) {
    let rows = bias.len();
    let z = &mut z[..rows * n];
    let base = SendPtr(z.as_mut_ptr());
    split_items(rows, rows * n, team, &|fs| {
        let base = &base;
        for f in fs {
            // SAFETY: row f belongs to this task alone.
            let row = unsafe { std::slice::from_raw_parts_mut(base.0.add(f * n), n) };
            bias_act(act, row, bias[f]);
        }
    });
}

/// The activation alone over `rows` rows of `n` values, in place.
fn act_rows(act: Activation, z: &mut [f32], rows: usize, n: usize, team: &Team) {
    let base = SendPtr(z[..rows * n].as_mut_ptr());
    split_items(rows, rows * n, team, &|fs| {
        let base = &base;
        for f in fs {
            // SAFETY: row f belongs to this task alone.
            bias_act(act, unsafe { std::slice::from_raw_parts_mut(base.0.add(f * n), n) }, 0.0);
        }
    });
}

/// Sum of a row in a fixed order (eight interleaved partial sums, then a fixed tree).
pub(crate) fn row_sum(v: &[f32]) -> f32 {
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

/// C (row stride ldc) = beta·C + A·B on this thread, A m×k and B k×n given by strides.
///
/// SAFETY: the pointers valid for those extents.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm(
    kernel: Kernel,
    (m, k, n): (usize, usize, usize),
    a: *const f32,
    (ars, acs): (usize, usize),
    b: *const f32,
    (brs, bcs): (usize, usize),
    beta: f32,
    c: *mut f32,
    ldc: usize,
) {
    #[cfg(target_arch = "x86_64")]
    if kernel == Kernel::Avx && beta == 0.0 && bcs == 1 && super::simd::has_avx2_fma() {
        // SAFETY: AVX2/FMA checked; same extents.
        return unsafe { super::avx::nn(m, n, k, a, ars, acs, b, brs, c, ldc) };
    }
    #[cfg(target_arch = "x86_64")]
    if kernel == Kernel::Avx && beta == 0.0 && acs == 1 && brs == 1 && super::simd::has_avx2_fma() {
        // SAFETY: as above.
        return unsafe { super::avx::nt(m, n, k, a, ars, b, bcs, c, ldc) };
    }
    // SAFETY: the caller's extents.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a,
            ars as isize,
            acs as isize,
            b,
            brs as isize,
            bcs as isize,
            beta,
            c,
            ldc as isize,
            1,
        )
    }
}

/// How the engine runs its convolutions (for benchmarks; the engine uses [`Tiles::for_shape`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tiles {
    /// Kernel for the forward and dcol products of a tile.
    pub kernel: Kernel,
    /// Kernel for the weight-gradient products of a tile.
    pub dw_kernel: Kernel,
    /// Largest im2col tile, in values (a tile is at least one example).
    pub tile_values: usize,
    /// Whether the backward pass visits only δ's nonzero values when few are (`sparse`, for
    /// C % 8 == 0 with AVX2; the dense kernels above otherwise).
    pub sparse: bool,
    /// Whether convolutions run over shifted rows of the padded input (its phase planes at a
    /// stride) where they were measured faster (`shifted`: the weight gradient; `shifted_forward`: the forward and the
    /// transposed input gradient) instead of `kernel`/`dw_kernel`.
    pub shifted: bool,
}

impl Tiles {
    /// The engine's choice, measured at the suite's shapes (docs/kernels.md, "Convolutions"):
    /// over few im2col rows (≤ 64: the first layer of an image network) the AVX kernels on
    /// tiles of about 128 KiB; above, with AVX2, the panel product (`panels`) for the forward
    /// (any stride but 1×1 strided, `Tiles::panel_forward`) and, as the transposed
    /// convolution, the input gradient (stride 1; other strides take the packed dcol), and the
    /// packed weight gradient (`avx::packed`, im2col rows against delta panels).
    pub fn for_shape(sh: &ConvShape) -> Tiles {
        let small = sh.ckk() <= 64;
        let avx = super::simd::has_avx2_fma();
        let (kernel, dw_kernel) = match (small, avx) {
            (true, _) => (Kernel::Avx, Kernel::Avx),
            (false, true) => (Kernel::Packed, Kernel::Packed),
            (false, false) => (Kernel::Crate, Kernel::Avx),
        };
        Tiles { kernel, dw_kernel, tile_values: 1 << 15, sparse: true, shifted: true }
    }

    /// Whether the backward pass takes the sparse path on this shape and CPU when δ is sparse
    /// enough ([`SPARSE_MAX_DENSITY`]): not where the weight gradient runs over shifted rows,
    /// whose dense passes beat it at every share the engine would take it at (so never where
    /// the input gradient is added, [`Tiles::shares_delta`], which needs those rows). On δ drawn at
    /// random as a relu and a 2×2 max pool leave it (`SPARSE=1 conv_passes C SIDE K F 1 B`, one
    /// thread, CPU time, dense weight + input gradient against sparse at 12.5% nonzero): 16→16
    /// 3×3 over 28×28 (batch 64) 2.4 against 5.9 ms, 8→8 1.3 against 2.6, 32→32 (batch 32)
    /// 4.3 against 6.5, 32→32 over 14×14 2.7 against 2.9, 16→32 over 13×13 (10.7%) 3.0 against
    /// 3.6; where the panel product runs both (64 filters) the sparse path wins: 64→64 3×3 over
    /// 7×7 (9.1%) 2.8 against 1.6, 32→64 5×5 over 14×14 13.7 against 7.8.
    pub fn takes_sparse(&self, sh: &ConvShape) -> bool {
        #[cfg(target_arch = "x86_64")]
        return self.sparse
            && !sh.depthwise()
            && super::sparse::eligible(&sh.group())
            && !self.takes_shifted_dw(&sh.group());
        #[cfg(not(target_arch = "x86_64"))]
        return false;
    }

    /// Examples per tile for this convolution.
    pub fn group(&self, sh: &ConvShape) -> usize {
        (self.tile_values / (sh.ckk() * sh.oh * sh.ow)).max(1)
    }

    /// Examples per tile of the packed weight gradient (its tile holds some im2col rows and the
    /// delta panels, and is summed over, so it may be larger).
    fn dw_group(&self, sh: &ConvShape) -> usize {
        (4 * self.tile_values / ((sh.ckk() + 16 * sh.f.div_ceil(16)) * sh.oh * sh.ow)).max(1)
    }

    /// Whether this is a 1×1 convolution of stride 1 without padding over more than 64
    /// channels, which runs as plain products on x (its own im2col matrix): w · x, δ · xᵀ and
    /// wᵀ · δ (`gemm::matmul`). With fewer channels the tiled AVX kernels were faster
    /// (`examples/conv_groups.rs`: 16→96 at 32×32, batch 32, forward 0.73 against 2.07 ms).
    pub fn pointwise(&self, sh: &ConvShape) -> bool {
        sh.kh == 1 && sh.kw == 1 && sh.s == 1 && sh.ph == 0 && sh.pw == 0 && sh.c > 64
    }

    fn packed(&self) -> bool {
        self.kernel == Kernel::Packed && super::simd::has_avx2_fma()
    }

    /// Whether the input gradient runs as the transposed convolution: only where its im2col is
    /// no larger than the forward's (C ≥ F); elsewhere dcol = Wᵀ · delta and col2im cost less.
    fn transposed_dx(&self, sh: &ConvShape) -> bool {
        self.packed() && (sh.c >= 32 || sh.c >= 16 && sh.c >= sh.f) && sh.transposed().is_some()
    }

    fn packed_dw(&self) -> bool {
        self.dw_kernel == Kernel::Packed && super::simd::has_avx2_fma()
    }

    /// Whether the forward runs as the panel product (`panels`): at stride 1, and at larger
    /// strides but for 1×1 kernels, whose product is too short to pay for the copy of the
    /// input into phase planes (resnet18's 1×1 stride-2 shortcuts: 1.0 against 0.58 ms on
    /// the AVX kernel, docs/kernels.md).
    pub(crate) fn panel_forward(&self, sh: &ConvShape) -> bool {
        self.packed() && (sh.s == 1 || sh.kh * sh.kw > 1)
    }

    /// Whether the weight gradient runs as the panel product (stride 1 only).
    fn panel_dw(&self, sh: &ConvShape) -> bool {
        self.packed_dw() && sh.s == 1 && !self.takes_shifted_dw(sh)
    }

    /// Whether the forward runs over shifted rows (`shifted_forward`), with AVX-512 (its 4×6
    /// register block needs 32 registers): any number of window values (first layers and
    /// few-channel groups too: resnet20's 3→16 stem 0.75 against 1.02 ms on the AVX kernels,
    /// 4-channel groups of 3×3 0.27 against 1.28 ms), windows larger than 1×1 (a 1×1 product gathers
    /// nothing, and at stride 2 the phase copy costs more than it saves: resnet18's 1×1
    /// shortcut 1.37 against 0.62 ms), output rows at least 16 wide (narrower rows waste too
    /// many lanes on the padding columns), at most SHIFTED_MAX_CKK window values.
    /// `conv_shapes 1` (CPU time, one thread, against the panel product): 16→16 at 32×32 3.4
    /// against 4.3–4.5 ms, 32→32 at 16×16 3.0 against 3.4, 64→64 at 56×56 (batch 8) 8.0
    /// against 9.2–11.2, resnet18's 7×7 stride-2 stem 9.8 against 10.5, its 64→128 stride 2
    /// 5.1–5.4 against 5.6–5.9, 128→128 at 28×28 7.8 against 8.7; rows 8 or 11 wide lose
    /// (64→64 at 8×8 3.7 against 3.3; 16→32 at 13×13 1.01 against 0.90).
    pub fn takes_shifted_forward(&self, sh: &ConvShape) -> bool {
        #[cfg(target_arch = "x86_64")]
        return self.shifted
            && sh.kh * sh.kw > 1
            && sh.ow >= 16
            && sh.ckk() <= SHIFTED_MAX_CKK
            && super::simd::has_avx512()
            && super::shifted_forward::eligible(sh);
        #[cfg(not(target_arch = "x86_64"))]
        return false;
    }

    /// Whether the weight gradient runs as sums over shifted rows (`shifted`): fewer than 64
    /// filters, windows larger than 1×1, any stride, any number of window values (first
    /// layers: resnet20's stem 1.0 against 2.8 ms on the AVX kernels, CNN e's 1→32 5×5 0.65
    /// against 1.5, CNN f's 1→16 3×3 0.40 against 1.19). `conv_shapes 1` (CPU
    /// time, one thread): 16→16 at 32×32 4.3 against 9.9 ms on the panel product, 32→32 at
    /// 16×16 3.7 against 5.9, 64→32 5×5 at 14×14 7.9 against 9.6, 16→32 stride 2 at 32×32
    /// 3.6–4.0 against 4.8–4.9 (packed); with 64 filters (64→64 at 8×8, 32→64 5×5, 32→64
    /// stride 2) the panel or packed product ties or wins.
    pub fn takes_shifted_dw(&self, sh: &ConvShape) -> bool {
        #[cfg(target_arch = "x86_64")]
        return self.shifted
            && sh.f < 64
            && sh.kh * sh.kw > 1
            && super::simd::has_avx2_fma()
            && super::shifted::eligible(sh);
        #[cfg(not(target_arch = "x86_64"))]
        return false;
    }

    /// Whether the backward pass can add its input gradient to what dx holds ([`Dx::Add`]):
    /// where it shares one padded δ ([`Tiles::shares_delta`]: the transposed convolution's
    /// stores add) and where it forms dcol and sums it back (col2im adds each plane's sum, as
    /// resnet's stride-2 convolutions do). Not on the sparse path, which writes dx, nor on the
    /// plain products of a 1×1 convolution or the transposed convolution alone.
    pub fn adds_dx(&self, sh: &ConvShape) -> bool {
        self.shares_delta(sh)
            || sh.groups == 1
                && !sh.depthwise()
                && !self.pointwise(sh)
                && !self.transposed_dx(sh)
                && !self.takes_sparse(sh)
    }

    /// Whether the backward pass lays δ out once for both of its products: the weight gradient
    /// and the transposed input gradient both over shifted rows, the first reading its runs of
    /// δ from the second's padded copy (`shifted::padded_delta_at`; resnet20's 16→16 layer
    /// copies 8 MB of δ fewer per step). Such a backward pass can also add its input gradient
    /// to what dx holds ([`Dx::Add`], [`Tiles::adds_dx`]): the transposed convolution's stores
    /// add. (Adding, it does not take the sparse path, which writes dx.)
    pub fn shares_delta(&self, sh: &ConvShape) -> bool {
        #[cfg(target_arch = "x86_64")]
        return self.takes_shifted_dw(sh)
            && self.transposed_dx(sh)
            && sh.transposed().is_some_and(|t| self.takes_shifted_forward(&t))
            && super::shifted::padded_delta_at(sh).is_some();
        #[cfg(not(target_arch = "x86_64"))]
        return false;
    }

    /// The kernel each pass of this convolution (one group of it) runs with a dense δ —
    /// forward, weight gradient, input gradient — by name, as [`conv_forward_with`] and
    /// [`conv_backward_with`] choose: `depthwise`, `pointwise` (plain products on x), `shifted`
    /// (shifted rows), `panel` (the panel product), `packed` (the packed weight gradient),
    /// `tiled` (a kernel on im2col tiles), `packed dcol` / `dcol` (dcol tiles, on the packed
    /// product or not, and col2im), and `transposed shifted` / `transposed panel` (the input
    /// gradient as the transposed convolution, [`ConvShape::transposed`], on that forward).
    /// For the time model, which prices each pass from reference convolutions that ran the
    /// same kernel.
    pub fn passes(&self, sh: &ConvShape) -> [&'static str; 3] {
        if sh.depthwise() {
            return ["depthwise"; 3];
        }
        if self.pointwise(sh) {
            return ["pointwise"; 3];
        }
        #[cfg(target_arch = "x86_64")]
        let (shifted, panel, panel_dw) = (self.takes_shifted_forward(sh), self.panel_forward(sh), self.panel_dw(sh));
        #[cfg(not(target_arch = "x86_64"))]
        let (shifted, panel, panel_dw) = (false, false, false);
        let forward = if shifted {
            "shifted"
        } else if panel {
            "panel"
        } else {
            "tiled"
        };
        let weight_grad = if self.takes_shifted_dw(sh) {
            "shifted"
        } else if panel_dw {
            "panel"
        } else if self.packed_dw() {
            "packed"
        } else {
            "tiled"
        };
        let input_grad = match (self.transposed_dx(sh), sh.transposed()) {
            #[cfg(target_arch = "x86_64")]
            (true, Some(t)) if self.takes_shifted_forward(&t) => "transposed shifted",
            #[cfg(target_arch = "x86_64")]
            (true, Some(_)) => "transposed panel",
            _ if self.packed() => "packed dcol",
            _ => "dcol",
        };
        [forward, weight_grad, input_grad]
    }

    /// Scratch values shared by the tasks, ahead of their slots: the panel product's padded
    /// input and packed weights; for the transposed input gradient, the flipped weights and
    /// the same for the transposed convolution.
    pub fn head(&self, sh: &ConvShape, batch: usize) -> usize {
        #[allow(unused_mut)]
        let mut head = 0;
        #[cfg(target_arch = "x86_64")]
        {
            if self.panel_forward(sh) {
                head = super::panels::head_len(sh, batch);
            }
            if self.panel_dw(sh) {
                head = head.max(super::panels::grad_head_len(sh, batch));
            }
            if self.takes_shifted_dw(sh) {
                head = head.max(super::shifted::head_len(sh, batch));
            }
            if self.takes_shifted_forward(sh) {
                head = head.max(super::shifted_forward::head_len(sh, batch));
            }
            if let (true, Some(t)) = (self.transposed_dx(sh), sh.transposed()) {
                // The flipped weights, then the transposed forward's own head.
                let forward = if self.takes_shifted_forward(&t) {
                    super::shifted_forward::head_len(&t, batch)
                } else {
                    super::panels::head_len(&t, batch)
                };
                head = head.max(sh.f * sh.ckk() + forward);
                if self.shares_delta(sh) {
                    head = head.max(sh.f * sh.ckk() + forward + super::shifted::xp_head_len(sh, batch));
                }
            }
            if self.takes_sparse(sh) {
                head = head.max(super::sparse::head_len(sh, batch));
            }
        }
        let _ = batch;
        // Whole cache lines, so that every task's slot after it starts on one (as the scratch
        // does, `pages::Lines`).
        head.next_multiple_of(16)
    }

    /// Scratch values one task needs for this convolution: the largest of an im2col tile with
    /// room for a tile's weight-gradient product, a B panel of the panel product (forward, or
    /// the transposed input gradient), the packed input gradient's dcol tile and delta panels,
    /// and the packed weight gradient's rows, delta panels and block.
    pub fn scratch(&self, sh: &ConvShape, batch: usize) -> usize {
        let g = self.group(sh).min(batch);
        let mut need = sh.col_len(g) + sh.f * sh.ckk();
        if self.packed() {
            let cols = g * sh.oh * sh.ow;
            need = need.max(sh.col_len(g) + sh.f * cols.div_ceil(16) * 16);
            #[cfg(target_arch = "x86_64")]
            {
                if self.panel_forward(sh) {
                    need = need.max(super::panels::panel_len(sh));
                }
                if let (true, Some(t)) = (self.transposed_dx(sh), sh.transposed()) {
                    need = need.max(super::panels::panel_len(&t));
                }
            }
        }
        #[cfg(target_arch = "x86_64")]
        if self.panel_dw(sh) {
            need = need.max(super::panels::GRAD_SLOT);
        }
        #[cfg(target_arch = "x86_64")]
        if self.takes_sparse(sh) {
            need = need.max(super::sparse::slot_len(sh));
        }
        if self.packed_dw() {
            let tcols = self.dw_group(sh).min(batch) * sh.oh * sh.ow;
            need = need.max((sh.ckk() + 16 * sh.f.div_ceil(16)) * tcols + sh.ckk() * sh.f);
        }
        // Whole cache lines: each task's slot starts on one ([`Tiles::head`]).
        need.next_multiple_of(16)
    }

    /// All the scratch values for `tasks` tasks.
    /// (A grouped convolution runs its groups one after another, each as a convolution of its
    /// own; a depthwise one takes `depthwise`'s scratch.)
    pub fn total(&self, sh: &ConvShape, batch: usize, tasks: usize) -> usize {
        if sh.depthwise() {
            return depthwise::scratch_len(sh, batch, tasks);
        }
        let sh = &sh.group();
        self.head(sh, batch) + tasks * self.scratch(sh, batch)
    }
}

/// Scratch values the engine cuts for `tasks` tasks (the largest convolution's need).
pub fn scratch_len(shapes: impl Iterator<Item = ConvShape>, batch: usize, tasks: usize) -> usize {
    shapes.map(|sh| Tiles::for_shape(&sh).total(&sh, batch, tasks)).max().unwrap_or(0)
}

/// The most window values (C·kh·kw) a shifted-rows forward takes: a block's rows of every
/// channel stay in L2 with its four filters' weights (measured up to 1,152).
pub const SHIFTED_MAX_CKK: usize = 1 << 12;

/// Splits items `0..n` (examples, blocks) into one contiguous range per task, across the team
/// when `macs` pays for it: (tasks, items per task).
pub(crate) fn item_tasks(n: usize, macs: usize, team: &Team) -> (usize, usize) {
    let parts = if macs >= PARALLEL_MIN_MACS { team.size().min(n) } else { 1 };
    let per = n.div_ceil(parts.max(1));
    (n.div_ceil(per.max(1)), per)
}

/// Forward: z [F][B·H'·W'] = act(w · im2col(x) + b), built a tile of whole examples at a time
/// (im2col of the tile, its product, its bias and activation) so the tile stays in cache; tasks
/// take contiguous ranges of examples. `scratch` holds [`Tiles::scratch`] values per team member.
#[allow(clippy::too_many_arguments)]
pub fn conv_forward(
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
    conv_forward_with(Tiles::for_shape(sh), sh, batch, act, x, w, b, scratch, z, team)
}

/// [`conv_forward`] with the tiling and kernels chosen by the caller (for each group; a
/// depthwise convolution takes its own kernel, `depthwise`, whatever the tiles).
#[allow(clippy::too_many_arguments)]
pub fn conv_forward_with(
    tiles: Tiles,
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
    if sh.depthwise() {
        return depthwise::forward(sh, batch, act, x, w, b, scratch, z, team);
    }
    let g = sh.group();
    let (xs, zs, ws) = (g.c * batch * g.h * g.w, g.f * batch * g.oh * g.ow, g.f * g.ckk());
    assert!(x.len() >= sh.groups * xs && z.len() >= sh.groups * zs && w.len() >= sh.groups * ws);
    assert!(!sh.bias || b.len() >= sh.f, "a bias of {} values for {} filters", b.len(), sh.f);
    for k in 0..sh.groups {
        let bk = if sh.bias { &b[k * g.f..(k + 1) * g.f] } else { &[] };
        let zk = &mut z[k * zs..(k + 1) * zs];
        forward_group(tiles, &g, batch, act, &x[k * xs..(k + 1) * xs], &w[k * ws..(k + 1) * ws], bk, scratch, zk, team);
    }
}

/// The forward pass of one group (an ungrouped convolution).
#[allow(clippy::too_many_arguments)]
fn forward_group(
    tiles: Tiles,
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
    let (ckk, oplane) = (sh.ckk(), sh.oh * sh.ow);
    let n = batch * oplane;
    let (g, per_task) = (tiles.group(sh), tiles.scratch(sh, batch));
    let (tasks, per) = item_tasks(batch, sh.f * ckk * n, team);
    if tiles.pointwise(sh) {
        // im2col is x itself: one product, then the bias and activation per row.
        matmul(View::rows(w, sh.f, sh.c), View::rows(x, sh.c, n), z, team);
        if sh.bias {
            bias_act_rows(act, z, &b[..sh.f], n, team);
        } else if act != Activation::Identity {
            act_rows(act, z, sh.f, n, team);
        }
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if tiles.takes_shifted_forward(sh) {
        let head = tiles.head(sh, batch);
        let relu = act == Activation::Relu;
        let bias = sh.bias.then(|| (&b[..sh.f], relu));
        // SAFETY: AVX-512 checked (takes_shifted_forward); head ≥ shifted_forward::head_len.
        unsafe { super::shifted_forward::forward(sh, batch, x, w, bias, &mut scratch[..head], z, team) };
        if !(act == Activation::Identity || sh.bias && relu) {
            act_rows(act, &mut z[..sh.f * n], sh.f, n, team);
        }
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if tiles.panel_forward(sh) {
        let head = tiles.head(sh, batch);
        assert!(scratch.len() >= head + team.size() * per_task);
        assert!(per_task >= super::panels::panel_len(sh));
        let relu = act == Activation::Relu;
        let (shared, slots) = scratch.split_at_mut(head);
        let bias = sh.bias.then(|| (&b[..sh.f], relu));
        // SAFETY: AVX2/FMA checked (Tiles::packed); a slot of per_task ≥ one panel per member.
        unsafe { super::panels::forward(sh, batch, x, w, bias, shared, slots, per_task, z, team) };
        if !(act == Activation::Identity || sh.bias && relu) {
            // The bias, if any, is in; the activation alone (adding 0 changes no value).
            act_rows(act, &mut z[..sh.f * n], sh.f, n, team);
        }
        return;
    }
    assert!(scratch.len() >= tasks * per_task && z.len() >= sh.f * n && w.len() >= sh.f * ckk);
    // Where the packed kernels would take the panel product but this shape does not (1×1
    // strided), the AVX kernel on the im2col tile (faster than the crate's there).
    let forward_kernel = if tiles.packed() { Kernel::Avx } else { tiles.kernel };
    let (zp, sp) = (SendPtr(z.as_mut_ptr()), SendPtr(scratch.as_mut_ptr()));
    team.run(tasks, &|t| {
        let (zp, sp) = (&zp, &sp);
        // SAFETY: scratch slot t is this task's.
        let tile = unsafe { std::slice::from_raw_parts_mut(sp.0.add(t * per_task), per_task) };
        let mut e0 = t * per;
        let end = ((t + 1) * per).min(batch);
        while e0 < end {
            let e1 = (e0 + g).min(end);
            let cols = (e1 - e0) * oplane;
            im2col_tile(sh, batch, x, 0..ckk, e0..e1, tile);
            // SAFETY: columns e0·H'W'..e1·H'W' of every row of z are this task's.
            unsafe {
                let c = zp.0.add(e0 * oplane);
                gemm(forward_kernel, (sh.f, ckk, cols), w.as_ptr(), (ckk, 1), tile.as_ptr(), (cols, 1), 0.0, c, n);
                for f in 0..sh.f {
                    finish(act, std::slice::from_raw_parts_mut(c.add(f * n), cols), b.get(f).copied());
                }
            }
            e0 = e1;
        }
    });
}

/// dW [F][CKK] on the packed kernel: tasks own ranges of im2col rows (columns of dW); each
/// builds its rows of a tile of examples and the tile's delta panels, and adds the tile's
/// product dWᵀ[rows][F] = col[rows][tile] · deltaᵀ into a block, tiles in example order (the
/// tiles do not depend on the thread count), then writes the block into dW.
#[allow(clippy::too_many_arguments)]
fn packed_dw(
    tiles: Tiles,
    sh: &ConvShape,
    batch: usize,
    x: &[f32],
    delta: &[f32],
    dw: &mut [f32],
    slots: *mut f32,
    per_task: usize,
    team: &Team,
) {
    let (ckk, oplane) = (sh.ckk(), sh.oh * sh.ow);
    let n = batch * oplane;
    let fp = 16 * sh.f.div_ceil(16);
    let gd = tiles.dw_group(sh).min(batch);
    let tmax = gd * oplane;
    let parts = if sh.f * ckk * n >= PARALLEL_MIN_MACS { team.size().min(ckk) } else { 1 };
    let per_rows = ckk.div_ceil(parts);
    assert!(per_task >= ckk * tmax + fp * tmax + ckk * sh.f && dw.len() >= sh.f * ckk);
    let (sp, dwp) = (SendPtr(slots), SendPtr(dw.as_mut_ptr()));
    team.run(ckk.div_ceil(per_rows), &|t| {
        let (sp, dwp) = (&sp, &dwp);
        let rows = t * per_rows..((t + 1) * per_rows).min(ckk);
        // SAFETY: slot t is this task's.
        let slot = unsafe { std::slice::from_raw_parts_mut(sp.0.add(t * per_task), per_task) };
        let (colt, rest) = slot.split_at_mut(rows.len() * tmax);
        let (dpan, rest) = rest.split_at_mut(fp * tmax);
        let part = &mut rest[..rows.len() * sh.f];
        let mut e0 = 0;
        while e0 < batch {
            let e1 = (e0 + gd).min(batch);
            let cols = (e1 - e0) * oplane;
            im2col_tile(sh, batch, x, rows.clone(), e0..e1, colt);
            delta_panels(delta, sh.f, n, e0 * oplane, cols, dpan);
            let epi = if e0 == 0 { super::avx::Epi::Store } else { super::avx::Epi::Accumulate };
            // SAFETY: AVX2/FMA checked by the caller (Tiles::packed_dw); the operands are this
            // task's slot.
            #[cfg(target_arch = "x86_64")]
            unsafe {
                super::avx::packed(
                    rows.len(),
                    sh.f,
                    cols,
                    colt.as_ptr(),
                    cols,
                    1,
                    dpan.as_ptr(),
                    part.as_mut_ptr(),
                    sh.f,
                    epi,
                )
            };
            e0 = e1;
        }
        for (r, block) in part.chunks_exact(sh.f).enumerate() {
            for (f, &v) in block.iter().enumerate() {
                // SAFETY: columns `rows` of dW are this task's.
                unsafe { *dwp.0.add(f * ckk + rows.start + r) = v };
            }
        }
    });
}

/// Where a convolution's backward pass puts the input gradient [C][B][H][W].
pub enum Dx<'a> {
    /// Nowhere: the layer reads the data, whose gradient nobody wants.
    Skip,
    /// dx = the gradient.
    Write(&'a mut [f32]),
    /// dx += the gradient (a layer read by several others sums their gradients: this saves the
    /// sum its own pass), where the engine's path can add ([`Tiles::adds_dx`]).
    Add(&'a mut [f32]),
}

impl<'a> From<Option<&'a mut [f32]>> for Dx<'a> {
    fn from(dx: Option<&'a mut [f32]>) -> Dx<'a> {
        dx.map_or(Dx::Skip, Dx::Write)
    }
}

impl<'a> Dx<'a> {
    /// The buffer, if any, and whether the gradient is added to it.
    fn parts(self) -> (Option<&'a mut [f32]>, bool) {
        match self {
            Dx::Skip => (None, false),
            Dx::Write(d) => (Some(d), false),
            Dx::Add(d) => (Some(d), true),
        }
    }
}

/// Backward, given delta = dL/dz [F][B·H'·W'] (the activation's derivative already applied):
/// fills dw [F][CKK] and db [F] and the input gradient as `dx` says.
///
/// dW sums over every example: tasks split its columns (rows of im2col), each rebuilding its
/// rows of the im2col matrix a tile at a time and adding the tile's product, tiles in example
/// order. dcol and col2im split over examples.
#[allow(clippy::too_many_arguments)]
pub fn conv_backward(
    sh: &ConvShape,
    batch: usize,
    x: &[f32],
    w: &[f32],
    delta: &[f32],
    dw: &mut [f32],
    db: &mut [f32],
    scratch: &mut [f32],
    dx: Dx,
    team: &Team,
) {
    conv_backward_with(Tiles::for_shape(sh), sh, batch, x, w, delta, dw, db, scratch, dx, team)
}

/// [`conv_backward`] with the tiling and kernels chosen by the caller (for each group; a
/// depthwise convolution takes its own kernel, `depthwise`, whatever the tiles).
#[allow(clippy::too_many_arguments)]
pub fn conv_backward_with(
    tiles: Tiles,
    sh: &ConvShape,
    batch: usize,
    x: &[f32],
    w: &[f32],
    delta: &[f32],
    dw: &mut [f32],
    db: &mut [f32],
    scratch: &mut [f32],
    dx: Dx,
    team: &Team,
) {
    let (mut dx, add_dx) = dx.parts();
    assert!(!add_dx || sh.groups == 1, "an added input gradient of a grouped convolution");
    assert!(!sh.bias || db.len() >= sh.f, "a bias gradient of {} values for {} filters", db.len(), sh.f);
    // db [F]: each filter's row of δ [F][B·H'·W'] summed, whatever the grouping or kernel.
    if sh.bias {
        let n = batch * sh.oh * sh.ow;
        for (f, d) in db[..sh.f].iter_mut().enumerate() {
            *d = row_sum(&delta[f * n..(f + 1) * n]);
        }
    }
    if sh.depthwise() {
        return depthwise::backward(sh, batch, x, w, delta, dw, scratch, dx, team);
    }
    let g = sh.group();
    let (xs, zs, ws) = (g.c * batch * g.h * g.w, g.f * batch * g.oh * g.ow, g.f * g.ckk());
    assert!(x.len() >= sh.groups * xs && delta.len() >= sh.groups * zs && dw.len() >= sh.groups * ws);
    for k in 0..sh.groups {
        let dxk = dx.as_deref_mut().map(|d| &mut d[k * xs..(k + 1) * xs]);
        backward_group(
            tiles,
            &g,
            batch,
            &x[k * xs..(k + 1) * xs],
            &w[k * ws..(k + 1) * ws],
            &delta[k * zs..(k + 1) * zs],
            &mut dw[k * ws..(k + 1) * ws],
            scratch,
            dxk,
            add_dx,
            team,
        );
    }
}

/// Where a convolution's δ lies when the layer after it writes it already laid out, so that
/// the backward pass skips its own copy: the transposed convolution's padded δ, which the
/// weight gradient reads as well ([`Tiles::shares_delta`]), in the convolution's scratch after
/// the flipped weights. `len` values from `at`: per (filter, example) a plane of `plane` values
/// whose `h` rows of `w` values lie `wq` apart from `first`, zeros around them, and zeros after
/// the last plane. Only for one group without a bias (the bias gradient would read δ as it
/// was).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PaddedDelta {
    pub at: usize,
    pub len: usize,
    pub plane: usize,
    pub wq: usize,
    pub first: usize,
    pub h: usize,
    pub w: usize,
}

#[cfg(test)]
impl PaddedDelta {
    /// δ [F][B][h][w] laid out by hand (for tests): zeros, then each plane's rows in place.
    pub fn lay(&self, delta: &[f32]) -> Vec<f32> {
        let mut out = vec![0.0; self.len];
        for (q, src) in delta.chunks_exact(self.h * self.w).enumerate() {
            for (y, row) in src.chunks_exact(self.w).enumerate() {
                out[q * self.plane + self.first + y * self.wq..][..self.w].copy_from_slice(row);
            }
        }
        out
    }
}

/// Where the shared padded δ lies in the scratch ([`Tiles::shares_delta`]): after the flipped
/// weights, the transposed convolution's head (`t`); the x laid out for the weight gradient
/// follows it.
#[cfg(target_arch = "x86_64")]
fn padded_delta_region(sh: &ConvShape, t: &ConvShape, batch: usize) -> Range<usize> {
    let at = sh.f * sh.ckk();
    at..at + super::shifted_forward::head_len(t, batch)
}

/// [`PaddedDelta`] for this convolution at this batch, where its backward pass lays δ out.
pub fn padded_delta(sh: &ConvShape, batch: usize) -> Option<PaddedDelta> {
    #[cfg(target_arch = "x86_64")]
    if sh.groups == 1 && !sh.bias && Tiles::for_shape(sh).shares_delta(sh) {
        let t = sh.transposed()?;
        let g = super::shifted::Grid::of(&t);
        let region = padded_delta_region(sh, &t, batch);
        return Some(PaddedDelta {
            at: region.start,
            len: region.len(),
            plane: g.plane(),
            wq: g.wq,
            first: t.ph * g.wq + t.pw,
            h: sh.oh,
            w: sh.ow,
        });
    }
    let _ = (sh, batch);
    None
}

/// [`conv_backward`] of a convolution whose δ the next layer wrote into `scratch` as
/// [`padded_delta`] lays it out: the same sums, without the copy.
#[allow(clippy::too_many_arguments)]
pub fn conv_backward_laid(
    sh: &ConvShape,
    batch: usize,
    x: &[f32],
    w: &[f32],
    dw: &mut [f32],
    scratch: &mut [f32],
    dx: Dx,
    team: &Team,
) {
    assert!(padded_delta(sh, batch).is_some(), "{sh:?}: δ cannot arrive laid out");
    let (dx, add_dx) = dx.parts();
    #[cfg(target_arch = "x86_64")]
    shared_delta_backward(Tiles::for_shape(sh), sh, batch, x, w, None, dw, scratch, dx, add_dx, team);
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (x, w, dw, scratch, dx, add_dx, team);
}

/// The weight and input gradients from one padded δ ([`Tiles::shares_delta`]), laid out here
/// from `delta` or, without it, already in the scratch ([`padded_delta`]).
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
fn shared_delta_backward(
    tiles: Tiles,
    sh: &ConvShape,
    batch: usize,
    x: &[f32],
    w: &[f32],
    delta: Option<&[f32]>,
    dw: &mut [f32],
    scratch: &mut [f32],
    dx: Option<&mut [f32]>,
    add_dx: bool,
    team: &Team,
) {
    let t = sh.transposed().expect("a transposed convolution");
    let head = tiles.head(sh, batch);
    assert!(scratch.len() >= head && dx.as_ref().is_none_or(|d| d.len() >= sh.c * batch * sh.h * sh.w));
    // The flipped weights, δ laid out for the transposed convolution, then x laid out.
    let region = padded_delta_region(sh, &t, batch);
    let (wt, rest) = scratch[..head].split_at_mut(region.start);
    let (padded, xp) = rest.split_at_mut(region.len());
    sh.flip_weights(w, wt);
    if let Some(delta) = delta {
        super::shifted::lay_out(&t, batch, delta, &[], padded, &mut [], team);
    }
    // SAFETY: AVX-512 checked (shares_delta: takes_shifted_forward); the head holds the
    // three (Tiles::head), and `padded` is the layout both kernels read.
    unsafe {
        super::shifted::weight_grad_padded(sh, batch, x, padded, xp, dw, team);
        if let Some(dx) = dx {
            super::shifted_forward::forward_laid(&t, batch, padded, wt, None, add_dx, dx, team);
        }
    }
}

/// The backward pass of one group (an ungrouped convolution).
#[allow(clippy::too_many_arguments)]
fn backward_group(
    tiles: Tiles,
    sh: &ConvShape,
    batch: usize,
    x: &[f32],
    w: &[f32],
    delta: &[f32],
    dw: &mut [f32],
    scratch: &mut [f32],
    mut dx: Option<&mut [f32]>,
    add_dx: bool,
    team: &Team,
) {
    let (ckk, oplane) = (sh.ckk(), sh.oh * sh.ow);
    assert!(!add_dx || tiles.adds_dx(sh), "{sh:?}: this input gradient cannot be added");
    let n = batch * oplane;
    let (g, per_task) = (tiles.group(sh), tiles.scratch(sh, batch));
    let macs = sh.f * ckk * n;
    let delta = &delta[..sh.f * n];
    let dw = &mut dw[..sh.f * ckk];
    #[cfg(target_arch = "x86_64")]
    if !add_dx && tiles.takes_sparse(sh) && sparse_enough(delta) {
        let head = tiles.head(sh, batch);
        assert!(scratch.len() >= head + team.size() * per_task);
        let (shared, slots) = scratch.split_at_mut(head);
        // SAFETY: AVX2/FMA and C % 8 == 0 checked (takes_sparse); a slot of per_task ≥ slot_len each.
        unsafe { super::sparse::backward(sh, batch, x, w, delta, dw, dx, shared, slots, per_task, team) };
        return;
    }
    if tiles.pointwise(sh) {
        // dW = δ · xᵀ and dx = wᵀ · δ, x being its own im2col matrix.
        matmul(View::rows(delta, sh.f, n), View::transposed(x, sh.c, n), dw, team);
        if let Some(dx) = dx {
            matmul(View::transposed(w, sh.f, sh.c), View::rows(delta, sh.f, n), dx, team);
        }
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if let (true, Some(dx)) = (tiles.shares_delta(sh), dx.as_deref_mut()) {
        return shared_delta_backward(tiles, sh, batch, x, w, Some(delta), dw, scratch, Some(dx), add_dx, team);
    }
    let sp = SendPtr(scratch.as_mut_ptr());
    #[cfg(target_arch = "x86_64")]
    let panel_dw = tiles.panel_dw(sh);
    #[cfg(not(target_arch = "x86_64"))]
    let panel_dw = false;
    if tiles.takes_shifted_dw(sh) {
        #[cfg(target_arch = "x86_64")]
        {
            let head = tiles.head(sh, batch);
            assert!(scratch.len() >= head);
            // SAFETY: AVX2/FMA checked (takes_shifted_dw); head ≥ shifted::head_len.
            unsafe { super::shifted::weight_grad(sh, batch, x, delta, &mut scratch[..head], dw, team) };
        }
    } else if panel_dw {
        #[cfg(target_arch = "x86_64")]
        {
            let head = tiles.head(sh, batch);
            assert!(scratch.len() >= head + team.size() * per_task);
            let (shared, slots) = scratch.split_at_mut(head);
            // SAFETY: AVX2/FMA checked (Tiles::packed_dw); a slot of per_task ≥ GRAD_SLOT each.
            unsafe { super::panels::weight_grad(sh, batch, x, delta, shared, slots, per_task, dw, team) };
        }
    } else if tiles.packed_dw() {
        let head = tiles.head(sh, batch);
        assert!(scratch.len() >= head + team.size().min(ckk) * per_task);
        packed_dw(tiles, sh, batch, x, delta, dw, scratch[head..].as_mut_ptr(), per_task, team);
    } else {
        // dW [F][CKK]: tasks own column ranges of dW (rows of im2col).
        let parts = if macs >= PARALLEL_MIN_MACS { team.size().min(ckk) } else { 1 };
        let per_rows = ckk.div_ceil(parts);
        assert!(scratch.len() >= parts * per_task);
        let dwp = SendPtr(dw.as_mut_ptr());
        team.run(ckk.div_ceil(per_rows), &|t| {
            let (sp, dwp) = (&sp, &dwp);
            let rows = t * per_rows..((t + 1) * per_rows).min(ckk);
            // SAFETY: scratch slot t is this task's: the tile, then the product's room.
            let slot = unsafe { std::slice::from_raw_parts_mut(sp.0.add(t * per_task), per_task) };
            let (tile, part) = slot.split_at_mut(per_task - sh.f * ckk);
            let part = &mut part[..sh.f * rows.len()];
            let mut e0 = 0;
            while e0 < batch {
                let e1 = (e0 + g).min(batch);
                let cols = (e1 - e0) * oplane;
                im2col_tile(sh, batch, x, rows.clone(), e0..e1, tile);
                let (a, at) = (delta.as_ptr().wrapping_add(e0 * oplane), (n, 1));
                let dims = (sh.f, cols, rows.len());
                if tiles.dw_kernel == Kernel::Crate {
                    let beta = if e0 == 0 { 0.0 } else { 1.0 };
                    // SAFETY: columns `rows` of dW are this task's; dW += delta[:, tile] · tileᵀ.
                    unsafe {
                        gemm(Kernel::Crate, dims, a, at, tile.as_ptr(), (1, cols), beta, dwp.0.add(rows.start), ckk)
                    };
                } else {
                    // The tile's product apart, then added: the AVX kernels do not accumulate.
                    // SAFETY: as above; `part` is this task's.
                    unsafe {
                        gemm(
                            tiles.dw_kernel,
                            dims,
                            a,
                            at,
                            tile.as_ptr(),
                            (1, cols),
                            0.0,
                            part.as_mut_ptr(),
                            rows.len(),
                        );
                        for (f, src) in part.chunks_exact(rows.len()).enumerate() {
                            let dst = std::slice::from_raw_parts_mut(dwp.0.add(f * ckk + rows.start), rows.len());
                            if e0 == 0 {
                                dst.copy_from_slice(src);
                            } else {
                                dst.iter_mut().zip(src).for_each(|(d, &v)| *d += v);
                            }
                        }
                    }
                }
                e0 = e1;
            }
        });
    }
    if let Some(dx) = dx {
        assert!(dx.len() >= sh.c * batch * sh.h * sh.w);
        if let (true, Some(t)) = (tiles.transposed_dx(sh), sh.transposed()) {
            // dx = conv(delta, W'), on the forward's panel product: no dcol, no col2im.
            #[cfg(target_arch = "x86_64")]
            {
                let head = tiles.head(sh, batch);
                assert!(scratch.len() >= head + team.size() * per_task);
                let (shared, slots) = scratch.split_at_mut(head);
                let (wt, shared) = shared.split_at_mut(sh.f * sh.ckk());
                sh.flip_weights(w, wt);
                if tiles.takes_shifted_forward(&t) {
                    // SAFETY: AVX-512 checked (takes_shifted_forward); head sized for it.
                    unsafe { super::shifted_forward::forward(&t, batch, delta, wt, None, shared, dx, team) };
                    return;
                }
                // SAFETY: AVX2/FMA checked (Tiles::packed); slots as in the forward.
                unsafe { super::panels::forward(&t, batch, delta, wt, None, shared, slots, per_task, dx, team) };
                return;
            }
        }
        let dxp = SendPtr(dx.as_mut_ptr());
        let (tasks, per) = item_tasks(batch, macs, team);
        assert!(scratch.len() >= tasks * per_task);
        team.run(tasks, &|t| {
            let (sp, dxp) = (&sp, &dxp);
            // SAFETY: scratch slot t is this task's.
            let tile = unsafe { std::slice::from_raw_parts_mut(sp.0.add(t * per_task), per_task) };
            let mut e0 = t * per;
            let end = ((t + 1) * per).min(batch);
            while e0 < end {
                let e1 = (e0 + g).min(end);
                let cols = (e1 - e0) * oplane;
                // SAFETY: dcol tile [CKK][cols] = wᵀ · delta[:, tile]; then the planes of
                // examples e0..e1, this task's alone.
                unsafe {
                    if tiles.packed() {
                        // delta's tile in 16-wide panels after the dcol tile, then the product.
                        let (dcol, pan) = tile.split_at_mut(ckk * cols);
                        row_panels(delta, sh.f, n, e0 * oplane, cols, pan);
                        #[cfg(target_arch = "x86_64")]
                        super::avx::packed(
                            ckk,
                            cols,
                            sh.f,
                            w.as_ptr(),
                            1,
                            ckk,
                            pan.as_ptr(),
                            dcol.as_mut_ptr(),
                            cols,
                            super::avx::Epi::Store,
                        );
                    } else {
                        gemm(
                            tiles.kernel,
                            (ckk, sh.f, cols),
                            w.as_ptr(),
                            (1, ckk),
                            delta.as_ptr().add(e0 * oplane),
                            (n, 1),
                            0.0,
                            tile.as_mut_ptr(),
                            cols,
                        );
                    }
                    col2im_tile(sh, batch, &tile[..ckk * cols], e0..e1, dxp, add_dx);
                }
                e0 = e1;
            }
        });
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
                        let mut s = if sh.bias { b[f] as f64 } else { 0.0 };
                        let (cg, c0) = (sh.c / sh.groups, f / (sh.f / sh.groups) * (sh.c / sh.groups));
                        for c in c0..c0 + cg {
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
                                    s += w[((f * cg + c - c0) * sh.kh + i) * sh.kw + j] as f64 * xv;
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
                        let (cg, c0) = (sh.c / sh.groups, f / (sh.f / sh.groups) * (sh.c / sh.groups));
                        for c in c0..c0 + cg {
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
                                    let wi = ((f * cg + c - c0) * sh.kh + i) * sh.kw + j;
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

    /// One forward and one backward pass with `tiles` on `team`: (z, dW, db, dX).
    #[allow(clippy::too_many_arguments)]
    fn run_conv(
        tiles: Tiles,
        sh: &ConvShape,
        batch: usize,
        act: Activation,
        (x, wt, b, delta): (&[f32], &[f32], &[f32], &[f32]),
        scratch: &mut [f32],
        team: &Team,
    ) -> (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>) {
        let mut z = vec![f32::NAN; sh.f * batch * sh.oh * sh.ow];
        let nb = if sh.bias { sh.f } else { 0 };
        let (mut dw, mut db, mut dx) = (vec![f32::NAN; wt.len()], vec![f32::NAN; nb], vec![f32::NAN; x.len()]);
        conv_forward_with(tiles, sh, batch, act, x, wt, b, scratch, &mut z, team);
        conv_backward_with(tiles, sh, batch, x, wt, delta, &mut dw, &mut db, scratch, Dx::Write(&mut dx), team);
        (z, dw, db, dx)
    }

    fn close(what: &str, got: &[f32], want: &[f64]) {
        assert_eq!(got.len(), want.len(), "{what}");
        let scale = want.iter().fold(1e-6f64, |m, v| m.max(v.abs()));
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            assert!((g as f64 - w).abs() <= 1e-5 * scale, "{what}[{i}]: {g} vs {w}");
        }
    }

    /// The early-stopping test agrees with the share of nonzero values, on either side of the
    /// limit and at it.
    #[test]
    fn sparse_enough_agrees_with_the_nonzero_share() {
        for len in [1, 7, 4096, 4097, 10_000, 100_003] {
            for nonzero in [0, len / 5, len / 4, len / 4 + 1, len / 3, len] {
                // Nonzero values spread over the whole buffer, the last ones near its end.
                let mut d = vec![0.0f32; len];
                for k in 0..nonzero {
                    d[len - 1 - k * len / nonzero.max(1)] = 1.0;
                }
                assert_eq!(
                    sparse_enough(&d),
                    nonzero_share(&d) <= SPARSE_MAX_DENSITY,
                    "{len} values, {nonzero} nonzero"
                );
            }
        }
    }

    #[test]
    fn large_convs_do_not_depend_on_the_team() {
        // Large enough that every pass splits across two threads (dW by im2col rows, the rest by
        // examples); CKK 200 takes the packed weight gradient.
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let (solo, team) = (Team::new(1, || {}).unwrap(), Team::new(2, || {}).unwrap());
        let cv = Conv::plain(5, 5, 20, 1, Padding::Fixed(2));
        let layer = Layer::after(Shape::new(8, 14, 14), Kind::Conv2d(cv), 0, Activation::Relu).unwrap();
        let sh = ConvShape::of(&layer).unwrap();
        let batch = 21;
        let n = batch * sh.oh * sh.ow;
        let x: Vec<f32> = (0..batch * 8 * 14 * 14).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let wt: Vec<f32> = (0..sh.f * sh.ckk()).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let b: Vec<f32> = (0..sh.f).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let delta: Vec<f32> = (0..sh.f * n).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let kernels = [Kernel::Crate, Kernel::Avx, Kernel::Packed];
        let mut configs: Vec<Tiles> = kernels
            .into_iter()
            .flat_map(|k| {
                kernels.map(|d| Tiles { kernel: k, dw_kernel: d, tile_values: 1 << 15, sparse: false, shifted: false })
            })
            .collect();
        configs.push(Tiles::for_shape(&sh));
        for tiles in configs {
            let run = |t: &Team| {
                let mut scratch = vec![f32::NAN; tiles.total(&sh, batch, 2)];
                run_conv(tiles, &sh, batch, Activation::Relu, (&x, &wt, &b, &delta), &mut scratch, t)
            };
            assert!(run(&solo) == run(&team), "{tiles:?}: results depend on the team");
        }
    }

    /// resnet's 3×3 "same" convolution over few filters lays δ out once for both backward
    /// products (`Tiles::shares_delta`, on AVX-512); its dW and dx match the naive loops, on one
    /// thread and two, with dx's scratch full of NaN before (so a value neither product wrote
    /// would show); added to a gradient already there (`Dx::Add`), the same sum.
    #[test]
    fn one_padded_delta_serves_both_backward_products() {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let cv = Conv::plain(3, 3, 16, 1, Padding::Fixed(1));
        let layer = Layer::after(Shape::new(16, 16, 18), Kind::Conv2d(cv), 0, Activation::Identity).unwrap();
        let sh = ConvShape { bias: false, ..ConvShape::of(&layer).unwrap() };
        let tiles = Tiles::for_shape(&sh);
        #[cfg(target_arch = "x86_64")]
        assert_eq!(tiles.shares_delta(&sh), crate::engine::simd::has_avx512(), "the rule changed: pick another shape");
        // The sparse path writes dx, and the time model prices an added input gradient dense.
        assert!(!tiles.shares_delta(&sh) || !tiles.takes_sparse(&sh), "an added input gradient on the sparse path");
        let batch = 5;
        let n = batch * sh.oh * sh.ow;
        let x: Vec<f32> = (0..batch * sh.c * sh.h * sh.w).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let wt: Vec<f32> = (0..sh.f * sh.ckk()).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let delta: Vec<f32> = (0..sh.f * n).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let (want_dw, _, want_dx) = naive_backward(&sh, batch, &x, &wt, &delta);
        let mut got = Vec::new();
        for threads in [1, 2] {
            let team = Team::new(threads, || {}).unwrap();
            let mut scratch = vec![f32::NAN; tiles.total(&sh, batch, 2)];
            let (_, dw, _, dx) =
                run_conv(tiles, &sh, batch, Activation::Identity, (&x, &wt, &[], &delta), &mut scratch, &team);
            close(&format!("{threads} threads dw"), &dw, &want_dw);
            close(&format!("{threads} threads dx"), &dx, &want_dx);
            // Added to a gradient already there: dx + the same product, the same bits.
            if tiles.shares_delta(&sh) {
                let before: Vec<f32> = (0..dx.len()).map(|_| rng.gen_range(-1.0..1.0)).collect();
                let (mut dw2, mut summed) = (vec![f32::NAN; dw.len()], before.clone());
                conv_backward(
                    &sh,
                    batch,
                    &x,
                    &wt,
                    &delta,
                    &mut dw2,
                    &mut [],
                    &mut scratch,
                    Dx::Add(&mut summed),
                    &team,
                );
                let want: Vec<f32> = before.iter().zip(&dx).map(|(b, d)| b + d).collect();
                assert!(dw2 == dw && summed == want, "{threads} threads: the added input gradient");
                // δ laid out already (by the batch norm after it, `padded_delta`): the same bits,
                // the scratch's other values NaN.
                let rows = padded_delta(&sh, batch).expect("a convolution sharing δ lays it out");
                scratch.fill(f32::NAN);
                scratch[rows.at..rows.at + rows.len].copy_from_slice(&rows.lay(&delta));
                let (mut dw3, mut dx3) = (vec![f32::NAN; dw.len()], vec![f32::NAN; dx.len()]);
                conv_backward_laid(&sh, batch, &x, &wt, &mut dw3, &mut scratch, Dx::Write(&mut dx3), &team);
                assert!(dw3 == dw && dx3 == dx, "{threads} threads: δ laid out before");
            }
            got.push((dw, dx));
        }
        assert!(got[0] == got[1], "results depend on the team");
    }

    /// A stride-2 convolution's input gradient from dcol and col2im, added to a gradient
    /// already there (`Dx::Add`, `Tiles::adds_dx`): the bits of the written gradient added
    /// after, on one thread and two.
    #[test]
    fn col2im_adds_the_bits_of_a_gradient_added_after() {
        let mut rng = ChaCha8Rng::seed_from_u64(12);
        let cv = Conv::plain(3, 3, 32, 2, Padding::Fixed(1));
        let layer = Layer::after(Shape::new(16, 12, 12), Kind::Conv2d(cv), 0, Activation::Identity).unwrap();
        let sh = ConvShape { bias: false, ..ConvShape::of(&layer).unwrap() };
        let tiles = Tiles::for_shape(&sh);
        assert!(tiles.adds_dx(&sh) && !tiles.shares_delta(&sh), "the rule changed: pick another shape");
        let batch = 3;
        let x: Vec<f32> = (0..batch * sh.c * sh.h * sh.w).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let wt: Vec<f32> = (0..sh.f * sh.ckk()).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let delta: Vec<f32> = (0..sh.f * batch * sh.oh * sh.ow).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let before: Vec<f32> = (0..x.len()).map(|_| rng.gen_range(-1.0..1.0)).collect();
        for threads in [1, 2] {
            let team = Team::new(threads, || {}).unwrap();
            let mut scratch = vec![f32::NAN; tiles.total(&sh, batch, 2)];
            let (mut dw, mut written) = (vec![f32::NAN; sh.f * sh.ckk()], vec![f32::NAN; x.len()]);
            let dx = Dx::Write(&mut written);
            conv_backward(&sh, batch, &x, &wt, &delta, &mut dw, &mut [], &mut scratch, dx, &team);
            let (mut dw2, mut summed) = (vec![f32::NAN; dw.len()], before.clone());
            let dx = Dx::Add(&mut summed);
            conv_backward(&sh, batch, &x, &wt, &delta, &mut dw2, &mut [], &mut scratch, dx, &team);
            let mut want = before.clone();
            crate::engine::kernels::axpy(1.0, &written, &mut want);
            assert!(dw2 == dw, "{threads} threads: the weight gradient");
            assert!(summed == want, "{threads} threads: the added input gradient");
        }
    }

    #[test]
    fn panel_products_match_naive_loops_over_several_k_blocks() {
        // K = 33·5·5 = 825 im2col rows (four K-blocks forward), 13 filters (row blocks of 6 and
        // 4 with a padded row), 3·9·9 = 243 positions (a partial last panel, and the weight
        // gradient's position blocks), C ≥ 32 so the input gradient is the transposed
        // convolution (K' = 13·25 = 325, two K-blocks).
        // Then C = 31 (K = 775: an odd number of weight-gradient panels) and batch 2 (162
        // positions: an odd number of forward panels), so the 512-bit tile's pairs end in a
        // lone panel; it is at least F, so its input gradient is transposed too; C = 12 < F
        // takes the packed input gradient. The weight gradient runs on the panel product and on
        // shifted rows.
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        for (c, batch, shifted_dw) in
            [(33, 3, false), (31, 2, false), (33, 2, false), (12, 2, false), (31, 2, true), (12, 3, true)]
        {
            let cv = Conv::plain(5, 5, 13, 1, Padding::Fixed(2));
            let layer = Layer::after(Shape::new(c, 9, 9), Kind::Conv2d(cv), 0, Activation::Relu).unwrap();
            let sh = ConvShape::of(&layer).unwrap();
            let n = batch * sh.oh * sh.ow;
            let x: Vec<f32> = (0..batch * c * 81).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let wt: Vec<f32> = (0..sh.f * sh.ckk()).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let b: Vec<f32> = (0..sh.f).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let delta: Vec<f32> = (0..sh.f * n).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let tiles = Tiles {
                kernel: Kernel::Packed,
                dw_kernel: Kernel::Packed,
                tile_values: 1 << 15,
                sparse: false,
                shifted: shifted_dw,
            };
            assert!(
                !super::super::simd::has_avx2_fma()
                    || (tiles.panel_forward(&sh)
                        && tiles.transposed_dx(&sh) == (c >= 13)
                        && tiles.takes_shifted_dw(&sh) == shifted_dw)
            );
            let want_z = naive_forward(&sh, batch, &x, &wt, &b);
            let (want_dw, want_db, want_dx) = naive_backward(&sh, batch, &x, &wt, &delta);
            for threads in [1, 2] {
                let team = Team::new(threads, || {}).unwrap();
                let mut scratch = vec![f32::NAN; tiles.total(&sh, batch, threads)];
                let data = (&x[..], &wt[..], &b[..], &delta[..]);
                let (z, dw, db, dx) = run_conv(tiles, &sh, batch, Activation::Identity, data, &mut scratch, &team);
                let what = |t: &str| format!("{t} (C {c}, batch {batch}, threads {threads})");
                close(&what("z"), &z, &want_z);
                close(&what("dw"), &dw, &want_dw);
                close(&what("db"), &db, &want_db);
                close(&what("dx"), &dx, &want_dx);
            }
        }
    }

    #[test]
    fn strided_panel_forward_matches_naive_loops() {
        // Strides 2 and 3 on the panel product (the input in phase planes): paddings 0–3,
        // kernels 2–7, odd sizes, K over several K-blocks (C·k·k > 256) or a few rows, outputs
        // that end in a partial panel; against f64 loops, the same bits on one and two threads.
        let mut rng = ChaCha8Rng::seed_from_u64(31);
        let teams = [Team::new(1, || {}).unwrap(), Team::new(2, || {}).unwrap()];
        let cases = [
            // (C, H, W, k, F, stride, padding, batch)
            (33, 15, 13, 3, 13, 2, 1, 3),
            (7, 23, 20, 7, 10, 2, 3, 2),
            (3, 29, 31, 7, 8, 2, 3, 2),
            (30, 11, 14, 3, 7, 3, 0, 2),
            (20, 9, 10, 4, 19, 2, 2, 1),
            (5, 17, 19, 2, 6, 2, 0, 5),
            (70, 14, 14, 3, 24, 2, 1, 2),
        ];
        for (c, h, w, k, f, stride, pad, batch) in cases {
            let cv = Conv::plain(k, k, f, stride, Padding::Fixed(pad));
            let layer = Layer::after(Shape::new(c, h, w), Kind::Conv2d(cv), 0, Activation::Identity).unwrap();
            let sh = ConvShape::of(&layer).unwrap();
            let tiles = Tiles {
                kernel: Kernel::Packed,
                dw_kernel: Kernel::Packed,
                tile_values: 1 << 15,
                sparse: false,
                shifted: false,
            };
            assert!(!super::super::simd::has_avx2_fma() || tiles.panel_forward(&sh), "{sh:?}");
            let x: Vec<f32> = (0..batch * c * h * w).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let wt: Vec<f32> = (0..sh.f * sh.ckk()).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let b: Vec<f32> = (0..sh.f).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let want = naive_forward(&sh, batch, &x, &wt, &b);
            let runs: Vec<Vec<f32>> = teams
                .iter()
                .map(|team| {
                    let mut scratch = vec![f32::NAN; tiles.total(&sh, batch, team.size())];
                    let mut z = vec![f32::NAN; want.len()];
                    let act = Activation::Identity;
                    conv_forward_with(tiles, &sh, batch, act, &x, &wt, &b, &mut scratch, &mut z, team);
                    z
                })
                .collect();
            close(&format!("{sh:?} B{batch} z"), &runs[0], &want);
            assert!(runs[0] == runs[1], "{sh:?} B{batch}: results depend on the team");
        }
    }

    #[test]
    fn sparse_backward_matches_naive_loops() {
        // δ about 15% nonzero (as behind a max pool and a relu), channels a multiple of 8:
        // the backward visits only the nonzero values; strides, paddings and odd kernels, on
        // one and two threads with the same bits.
        let mut rng = ChaCha8Rng::seed_from_u64(17);
        let teams = [Team::new(1, || {}).unwrap(), Team::new(2, || {}).unwrap()];
        let mut cases = 0;
        while cases < 40 {
            let c = 8 * rng.gen_range(1..=5);
            let (h, w) = (rng.gen_range(3..=14), rng.gen_range(3..=14));
            let (kh, kw) = (rng.gen_range(1..=5), rng.gen_range(1..=5));
            let padding = Padding::Fixed(rng.gen_range(0..=2));
            let cv = Conv::plain(kh, kw, rng.gen_range(1..=20), rng.gen_range(1..=2), padding);
            let Ok(layer) = Layer::after(Shape::new(c, h, w), Kind::Conv2d(cv), 0, Activation::Relu) else {
                continue;
            };
            cases += 1;
            let sh = ConvShape::of(&layer).unwrap();
            let batch = rng.gen_range(1..=12);
            let n = batch * sh.oh * sh.ow;
            let x: Vec<f32> = (0..batch * c * h * w).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let wt: Vec<f32> = (0..sh.f * sh.ckk()).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let b: Vec<f32> = (0..sh.f).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let delta: Vec<f32> =
                (0..sh.f * n).map(|_| if rng.gen_bool(0.15) { rng.gen_range(-1.0..1.0) } else { 0.0 }).collect();
            // The engine's choice but for shifted rows, beside which it takes no sparse path.
            let tiles = Tiles { shifted: false, ..Tiles::for_shape(&sh) };
            #[cfg(target_arch = "x86_64")]
            assert!(!super::super::simd::has_avx2_fma() || tiles.takes_sparse(&sh) && sparse_enough(&delta));
            let (want_dw, want_db, want_dx) = naive_backward(&sh, batch, &x, &wt, &delta);
            let what = format!("case {cases} {sh:?} B{batch}");
            let mut runs = teams.iter().map(|team| {
                let mut scratch = vec![f32::NAN; tiles.total(&sh, batch, team.size())];
                run_conv(tiles, &sh, batch, Activation::Relu, (&x, &wt, &b, &delta), &mut scratch, team)
            });
            let (_, dw, db, dx) = runs.next().unwrap();
            close(&format!("{what} dw"), &dw, &want_dw);
            close(&format!("{what} db"), &db, &want_db);
            close(&format!("{what} dx"), &dx, &want_dx);
            let (_, dw2, db2, dx2) = runs.next().unwrap();
            assert!(dw == dw2 && db == db2 && dx == dx2, "{what}: results depend on the team");
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
            let cv = Conv::plain(kh, kw, rng.gen_range(1..=6), stride, padding);
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
            let kernels = [Kernel::Crate, Kernel::Avx, Kernel::Packed];
            let tile_values = [1, 100, 1 << 17][case % 3];
            for (kernel, dw_kernel) in kernels.into_iter().flat_map(|k| kernels.map(|d| (k, d))) {
                let tiles = Tiles { kernel, dw_kernel, tile_values, sparse: false, shifted: false };
                let what = format!("case {case} {sh:?} B{batch} {tiles:?}");
                let mut scratch = vec![f32::NAN; tiles.total(&sh, batch, 2)];
                let data = (&x[..], &wt[..], &b[..], &delta[..]);
                let (z, dw, db, dx) = run_conv(tiles, &sh, batch, Activation::Identity, data, &mut scratch, team);
                close(&format!("{what} z"), &z, &want_z);
                close(&format!("{what} dw"), &dw, &want_dw);
                // The same bits on the other team size.
                let other = &teams[1 - case % 2];
                let (z2, dw2, db2, dx2) = run_conv(tiles, &sh, batch, Activation::Identity, data, &mut scratch, other);
                assert!(z == z2 && dw == dw2 && db == db2 && dx == dx2, "{what}: results depend on the team");
                close(&format!("{what} db"), &db, &want_db);
                close(&format!("{what} dx"), &dx, &want_dx);
            }
            // The whole-matrix helpers: col2im(im2col(x)) counts each input once per tap reading it.
            let mut col = vec![f32::NAN; sh.col_len(batch)];
            let mut dx = vec![f32::NAN; x.len()];
            im2col(&sh, batch, &x, &mut col);
            col2im(&sh, batch, &col, &mut dx);
            let (_, _, taps) = naive_backward(
                &sh,
                batch,
                &vec![0.0; x.len()],
                &vec![1.0; wt.len() / sh.f * sh.f],
                &vec![1.0; sh.f * n],
            );
            let want: Vec<f64> = x.iter().zip(&taps).map(|(&v, &t)| v as f64 * t / sh.f as f64).collect();
            close(&format!("case {case} col2im∘im2col"), &dx, &want);
        }
    }

    #[test]
    fn grouped_depthwise_and_bias_free_convs_match_naive_loops() {
        // Groups 1, 2 and C (depthwise, with 1–3 filters per channel), strides 1–3, paddings
        // 0–2, with and without a bias, every activation the engine fuses: against f64 loops,
        // and the same bits on one and two threads and on a second call (the scratch reused).
        let mut rng = ChaCha8Rng::seed_from_u64(23);
        let teams = [Team::new(1, || {}).unwrap(), Team::new(2, || {}).unwrap()];
        let mut cases = 0;
        let (mut depthwise, mut strided, mut grouped, mut pointwise) = (0, 0, 0, 0);
        while cases < 120 {
            // 72 and 144 channels: 1×1 convolutions over more than 64 (of a group) take the
            // plain products (`Tiles::pointwise`).
            let c = [1, 2, 4, 6, 8, 16, 32, 72, 144][rng.gen_range(0..9)];
            let groups = match rng.gen_range(0..3) {
                0 => 1,
                1 if c % 2 == 0 => 2,
                _ => c,
            };
            let f = groups * rng.gen_range(1..=3) * if groups == c { 1 } else { rng.gen_range(1..=3) };
            let (h, w) = (rng.gen_range(1..=19), rng.gen_range(1..=19));
            let one = c >= 72 && rng.gen_bool(0.6);
            let k = if one { 1 } else { [1, 3, 3, 5][rng.gen_range(0..4)] };
            let stride = if one { 1 } else { [1, 1, 2, 2, 3][rng.gen_range(0..5)] };
            let padding = Padding::Fixed(if one { 0 } else { rng.gen_range(0..=2) });
            let bias = rng.gen_bool(0.5);
            let cv = Conv { kh: k, kw: k, filters: f, stride, padding, groups, bias };
            let act =
                [Activation::Identity, Activation::Relu, Activation::Relu6, Activation::Tanh][rng.gen_range(0..4)];
            let Ok(layer) = Layer::after(Shape::new(c, h, w), Kind::Conv2d(cv), 0, act) else {
                continue;
            };
            cases += 1;
            let sh = ConvShape::of(&layer).unwrap();
            assert_eq!((sh.groups, sh.bias), (groups, bias));
            depthwise += sh.depthwise() as usize;
            pointwise += (!sh.depthwise() && Tiles::for_shape(&sh).pointwise(&sh.group())) as usize;
            grouped += (groups > 1 && !sh.depthwise()) as usize;
            strided += (stride == 2 && sh.ph == 1) as usize;
            let batch = rng.gen_range(1..=6);
            let n = batch * sh.oh * sh.ow;
            let x: Vec<f32> = (0..batch * c * h * w).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let wt: Vec<f32> = (0..sh.f * sh.ckk()).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let b: Vec<f32> = if bias { (0..sh.f).map(|_| rng.gen_range(-1.0..1.0)).collect() } else { vec![] };
            let delta: Vec<f32> = (0..sh.f * n).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let z_lin = naive_forward(&sh, batch, &x, &wt, &b);
            let want_z: Vec<f64> = z_lin
                .iter()
                .map(|&v| match act {
                    Activation::Relu => v.max(0.0),
                    Activation::Relu6 => v.clamp(0.0, 6.0),
                    Activation::Tanh => v.tanh(),
                    _ => v,
                })
                .collect();
            let (want_dw, want_db, want_dx) = naive_backward(&sh, batch, &x, &wt, &delta);
            let tiles = Tiles::for_shape(&sh);
            let what = format!("case {cases} {sh:?} B{batch} {act:?}");
            let mut scratch = vec![f32::NAN; scratch_len([sh].into_iter(), batch, 2)];
            let mut runs = Vec::new();
            for team in teams.iter().chain(&teams) {
                runs.push(run_conv(tiles, &sh, batch, act, (&x, &wt, &b, &delta), &mut scratch, team));
            }
            let (z, dw, db, dx) = &runs[0];
            // The activations squash the outputs, not the pre-activations' rounding error: the
            // tolerance is relative to the largest pre-activation.
            let scale = z_lin.iter().fold(1e-6f64, |m, v| m.max(v.abs()));
            for (i, (&g, &want)) in z.iter().zip(&want_z).enumerate() {
                assert!((g as f64 - want).abs() <= 1e-5 * scale, "{what} z[{i}]: {g} vs {want}");
            }
            assert_eq!(z.len(), want_z.len());
            close(&format!("{what} dw"), dw, &want_dw);
            if bias {
                close(&format!("{what} db"), db, &want_db);
            } else {
                assert!(db.is_empty());
            }
            close(&format!("{what} dx"), dx, &want_dx);
            assert!(runs.iter().all(|r| *r == runs[0]), "{what}: results depend on the team or the call");
        }
        assert!(depthwise >= 20 && grouped >= 10 && strided >= 5, "{depthwise} {grouped} {strided}");
        assert!(pointwise >= 3, "{pointwise} pointwise");
    }
}
