//! AVX2+FMA kernels for the products and activations of small dense layers, where a
//! matrix-multiply crate's packing, buffer set-up and dispatch cost as much as the arithmetic.
//!
//! Two register-blocked product kernels cover all three products of a dense layer without packing:
//! - `nt`: C = A · Bᵀ with rows of A and B contiguous along the summed dimension (the forward
//!   product X · Wᵀ with W stored [out][in]): each element is an 8-lane dot product.
//! - `nn`: C = A · B with rows of B contiguous (dX = delta · W and dW = deltaᵀ · X): rows of C
//!   are accumulated from broadcast elements of A times rows of B.
//!
//! Every element of C has its own accumulator, summed in the same order whatever the block it
//! falls in, so results do not depend on how the caller splits C. Callers must have checked
//! [`super::simd::has_avx2_fma`]. Measurements that justify them: docs/kernels.md, "Engine level".

#![cfg(target_arch = "x86_64")]
#![allow(clippy::too_many_arguments)]

use std::arch::x86_64::*;

/// The first `r` lanes (r in 0..=8) set.
#[inline(always)]
unsafe fn tail_mask(r: usize) -> __m256i {
    unsafe { _mm256_cmpgt_epi32(_mm256_set1_epi32(r as i32), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)) }
}

/// Sum of the 8 lanes, in a fixed order.
#[inline(always)]
unsafe fn hsum(v: __m256) -> f32 {
    unsafe {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }
}

/// c[i·ldc + j] = Σ_p a[i·lda + p] · b[j·ldb + p] for i < MR, j < NR.
#[inline(always)]
unsafe fn nt_block<const MR: usize, const NR: usize>(
    k: usize,
    a: *const f32,
    lda: usize,
    b: *const f32,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
) {
    unsafe {
        let mut acc = [[_mm256_setzero_ps(); NR]; MR];
        let full = k / 8 * 8;
        let mut p = 0;
        while p < full {
            let mut bv = [_mm256_setzero_ps(); NR];
            for (j, v) in bv.iter_mut().enumerate() {
                *v = _mm256_loadu_ps(b.add(j * ldb + p));
            }
            for (i, row) in acc.iter_mut().enumerate() {
                let av = _mm256_loadu_ps(a.add(i * lda + p));
                for (acc, &bv) in row.iter_mut().zip(&bv) {
                    *acc = _mm256_fmadd_ps(av, bv, *acc);
                }
            }
            p += 8;
        }
        if p < k {
            let mask = tail_mask(k - p);
            let mut bv = [_mm256_setzero_ps(); NR];
            for (j, v) in bv.iter_mut().enumerate() {
                *v = _mm256_maskload_ps(b.add(j * ldb + p), mask);
            }
            for (i, row) in acc.iter_mut().enumerate() {
                let av = _mm256_maskload_ps(a.add(i * lda + p), mask);
                for (acc, &bv) in row.iter_mut().zip(&bv) {
                    *acc = _mm256_fmadd_ps(av, bv, *acc);
                }
            }
        }
        for (i, row) in acc.iter().enumerate() {
            for (j, &v) in row.iter().enumerate() {
                *c.add(i * ldc + j) = hsum(v);
            }
        }
    }
}

/// Rows [0, MR) of C = A · Bᵀ, all n columns.
#[inline(always)]
unsafe fn nt_rows<const MR: usize, const NR: usize>(
    n: usize,
    k: usize,
    a: *const f32,
    lda: usize,
    b: *const f32,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
) {
    unsafe {
        let mut j = 0;
        while j + NR <= n {
            nt_block::<MR, NR>(k, a, lda, b.add(j * ldb), ldb, c.add(j), ldc);
            j += NR;
        }
        while j + 2 <= n {
            nt_block::<MR, 2>(k, a, lda, b.add(j * ldb), ldb, c.add(j), ldc);
            j += 2;
        }
        if j < n {
            nt_block::<MR, 1>(k, a, lda, b.add(j * ldb), ldb, c.add(j), ldc);
        }
    }
}

/// C[m×n] (row stride ldc) = A[m×k] · Bᵀ, A and B row-major along k (row strides lda, ldb).
///
/// SAFETY: AVX2 and FMA present; the pointers valid for those extents.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn nt(
    m: usize,
    n: usize,
    k: usize,
    a: *const f32,
    lda: usize,
    b: *const f32,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
) {
    unsafe {
        let mut i = 0;
        while i + 4 <= m {
            nt_rows::<4, 3>(n, k, a.add(i * lda), lda, b, ldb, c.add(i * ldc), ldc);
            i += 4;
        }
        while i < m {
            nt_rows::<1, 8>(n, k, a.add(i * lda), lda, b, ldb, c.add(i * ldc), ldc);
            i += 1;
        }
    }
}

/// c[i·ldc + 8v ..] = Σ_p a[i·ars + p·acs] · b[p·ldb + 8v ..] for i < MR, v < NV; when MASKED, the
/// last vector of each row only covers the lanes in `mask`.
#[inline(always)]
unsafe fn nn_block<const MR: usize, const NV: usize, const MASKED: bool>(
    k: usize,
    a: *const f32,
    ars: usize,
    acs: usize,
    b: *const f32,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
    mask: __m256i,
) {
    unsafe {
        let mut acc = [[_mm256_setzero_ps(); NV]; MR];
        for p in 0..k {
            let brow = b.add(p * ldb);
            let mut bv = [_mm256_setzero_ps(); NV];
            for (v, x) in bv.iter_mut().enumerate() {
                *x = if MASKED && v + 1 == NV {
                    _mm256_maskload_ps(brow.add(8 * v), mask)
                } else {
                    _mm256_loadu_ps(brow.add(8 * v))
                };
            }
            for (i, row) in acc.iter_mut().enumerate() {
                let av = _mm256_broadcast_ss(&*a.add(i * ars + p * acs));
                for (acc, &bv) in row.iter_mut().zip(&bv) {
                    *acc = _mm256_fmadd_ps(av, bv, *acc);
                }
            }
        }
        for (i, row) in acc.iter().enumerate() {
            for (v, &x) in row.iter().enumerate() {
                let dst = c.add(i * ldc + 8 * v);
                if MASKED && v + 1 == NV {
                    _mm256_maskstore_ps(dst, mask, x);
                } else {
                    _mm256_storeu_ps(dst, x);
                }
            }
        }
    }
}

/// Rows [0, MR) of C = A · B, all n columns, in 16-wide blocks then a masked tail.
#[inline(always)]
unsafe fn nn_rows<const MR: usize>(
    n: usize,
    k: usize,
    a: *const f32,
    ars: usize,
    acs: usize,
    b: *const f32,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
) {
    unsafe {
        let all = _mm256_set1_epi32(-1);
        let mut j = 0;
        while j + 16 <= n {
            nn_block::<MR, 2, false>(k, a, ars, acs, b.add(j), ldb, c.add(j), ldc, all);
            j += 16;
        }
        let r = n - j;
        if r > 8 {
            nn_block::<MR, 2, true>(k, a, ars, acs, b.add(j), ldb, c.add(j), ldc, tail_mask(r - 8));
        } else if r > 0 {
            nn_block::<MR, 1, true>(k, a, ars, acs, b.add(j), ldb, c.add(j), ldc, tail_mask(r));
        }
    }
}

/// C[m×n] (row stride ldc) = A[m×k] · B[k×n]: A's element (i, p) at `a[i·ars + p·acs]`, B
/// row-major (row stride ldb).
///
/// SAFETY: AVX2 and FMA present; the pointers valid for those extents.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn nn(
    m: usize,
    n: usize,
    k: usize,
    a: *const f32,
    ars: usize,
    acs: usize,
    b: *const f32,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
) {
    unsafe {
        let mut i = 0;
        while i + 6 <= m {
            nn_rows::<6>(n, k, a.add(i * ars), ars, acs, b, ldb, c.add(i * ldc), ldc);
            i += 6;
        }
        while i + 2 <= m {
            nn_rows::<2>(n, k, a.add(i * ars), ars, acs, b, ldb, c.add(i * ldc), ldc);
            i += 2;
        }
        if i < m {
            nn_rows::<1>(n, k, a.add(i * ars), ars, acs, b, ldb, c.add(i * ldc), ldc);
        }
    }
}

/// What a packed block does with its sums.
#[derive(Clone, Copy)]
pub enum Epi {
    /// C = sums.
    Store,
    /// C += sums (C read first).
    Accumulate,
}

/// c[i·ldc + j] (= or +=) Σ_p a[i·ars + p·acs] · b[p·16 + j] for i < MR, j < cols ≤ 16: one
/// 16-wide panel of a packed B, A's elements broadcast from where they lie. Each element of C is
/// one lane of one accumulator, summed over p in order.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // MR rows, unrolled: indexing reads clearer than zips
unsafe fn pk_block<const MR: usize>(
    k: usize,
    a: *const f32,
    ars: usize,
    acs: usize,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    cols: usize,
    epi: Epi,
) {
    unsafe {
        let mut acc = [[_mm256_setzero_ps(); 2]; MR];
        let mut rows = [a; MR];
        for (i, r) in rows.iter_mut().enumerate() {
            *r = a.add(i * ars);
        }
        // Addressing by layout: rows contiguous along p (one index for all rows), rows adjacent
        // (one pointer for all rows), or general (one pointer per row).
        if acs == 1 {
            for p in 0..k {
                let (b0, b1) = (_mm256_loadu_ps(b.add(16 * p)), _mm256_loadu_ps(b.add(16 * p + 8)));
                for i in 0..MR {
                    let av = _mm256_broadcast_ss(&*rows[i].add(p));
                    acc[i][0] = _mm256_fmadd_ps(av, b0, acc[i][0]);
                    acc[i][1] = _mm256_fmadd_ps(av, b1, acc[i][1]);
                }
            }
        } else if ars == 1 {
            let mut ap = a;
            for p in 0..k {
                let (b0, b1) = (_mm256_loadu_ps(b.add(16 * p)), _mm256_loadu_ps(b.add(16 * p + 8)));
                for i in 0..MR {
                    let av = _mm256_broadcast_ss(&*ap.add(i));
                    acc[i][0] = _mm256_fmadd_ps(av, b0, acc[i][0]);
                    acc[i][1] = _mm256_fmadd_ps(av, b1, acc[i][1]);
                }
                ap = ap.add(acs);
            }
        } else {
            for p in 0..k {
                let (b0, b1) = (_mm256_loadu_ps(b.add(16 * p)), _mm256_loadu_ps(b.add(16 * p + 8)));
                for i in 0..MR {
                    let av = _mm256_broadcast_ss(&*rows[i]);
                    acc[i][0] = _mm256_fmadd_ps(av, b0, acc[i][0]);
                    acc[i][1] = _mm256_fmadd_ps(av, b1, acc[i][1]);
                    rows[i] = rows[i].add(acs);
                }
            }
        }
        let full = cols == 16;
        let (m0, m1) = (tail_mask(cols.min(8)), tail_mask(cols.saturating_sub(8)));
        for (i, row) in acc.iter().enumerate() {
            let dst = c.add(i * ldc);
            let (mut v0, mut v1) = (row[0], row[1]);
            match epi {
                Epi::Store => {}
                Epi::Accumulate => {
                    if full {
                        v0 = _mm256_add_ps(_mm256_loadu_ps(dst), v0);
                        v1 = _mm256_add_ps(_mm256_loadu_ps(dst.add(8)), v1);
                    } else {
                        v0 = _mm256_add_ps(_mm256_maskload_ps(dst, m0), v0);
                        v1 = _mm256_add_ps(_mm256_maskload_ps(dst.add(8), m1), v1);
                    }
                }
            }
            if full {
                _mm256_storeu_ps(dst, v0);
                _mm256_storeu_ps(dst.add(8), v1);
            } else {
                _mm256_maskstore_ps(dst, m0, v0);
                _mm256_maskstore_ps(dst.add(8), m1, v1);
            }
        }
    }
}

/// C[m×n] (row stride ldc) = A[m×k] · B[k×n] with B packed in 16-wide panels
/// ([⌈n/16⌉][k][16]: element (p, j) at `b[(j/16)·16k + 16p + j%16]`, lanes past n ignored) and
/// A's element (i, p) at `a[i·ars + p·acs]`; `epi` says what is done with the sums. Panels in
/// order, 6 rows of C at a time over each (tails of 4, 2, 1), the whole of k in registers.
///
/// SAFETY: AVX2 and FMA present; the pointers valid for those extents (B for whole panels).
#[target_feature(enable = "avx2,fma")]
pub unsafe fn packed(
    m: usize,
    n: usize,
    k: usize,
    a: *const f32,
    ars: usize,
    acs: usize,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    epi: Epi,
) {
    unsafe {
        for panel in 0..n.div_ceil(16) {
            let cols = (n - panel * 16).min(16);
            let (bp, cp) = (b.add(panel * 16 * k), c.add(panel * 16));
            let mut i = 0;
            while i + 6 <= m {
                pk_block::<6>(k, a.add(i * ars), ars, acs, bp, cp.add(i * ldc), ldc, cols, epi);
                i += 6;
            }
            if i + 4 <= m {
                pk_block::<4>(k, a.add(i * ars), ars, acs, bp, cp.add(i * ldc), ldc, cols, epi);
                i += 4;
            }
            if i + 2 <= m {
                pk_block::<2>(k, a.add(i * ars), ars, acs, bp, cp.add(i * ldc), ldc, cols, epi);
                i += 2;
            }
            if i < m {
                pk_block::<1>(k, a.add(i * ars), ars, acs, bp, cp.add(i * ldc), ldc, cols, epi);
            }
        }
    }
}

/// The first `ow / 8 · 8` outputs of one row of a 2×2, stride-2 max pool (the caller does the
/// rest): y[ox] = the first maximum of r0[2ox], r0[2ox+1], r1[2ox], r1[2ox+1] (a later value
/// wins only when strictly greater), arg[ox] its index in the plane (`base` + 2ox, + 1, + w,
/// + w + 1). Returns the outputs done. (Masked tails measured slower than scalar ones here.)
///
/// SAFETY: AVX2 present; r0 and r1 valid for 2·ow reads, y and arg for ow writes.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn max_pool2_row(
    r0: *const f32,
    r1: *const f32,
    ow: usize,
    base: u32,
    w: u32,
    y: *mut f32,
    arg: *mut u32,
) -> usize {
    unsafe {
        let lanes2 = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14);
        let (one, wv, w1) = (_mm256_set1_epi32(1), _mm256_set1_epi32(w as i32), _mm256_set1_epi32(w as i32 + 1));
        let mut ox = 0;
        while ox + 8 <= ow {
            let pairs = |r: *const f32| {
                let (lo, hi) = (_mm256_loadu_ps(r.add(2 * ox)), _mm256_loadu_ps(r.add(2 * ox + 8)));
                let even = _mm256_shuffle_ps(lo, hi, 0b10_00_10_00);
                let odd = _mm256_shuffle_ps(lo, hi, 0b11_01_11_01);
                let fix = |v: __m256| _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(v), 0b11_01_10_00));
                (fix(even), fix(odd))
            };
            let (a, b) = pairs(r0);
            let (c, d) = pairs(r1);
            let mut best = a;
            let mut off = _mm256_setzero_si256();
            for (v, o) in [(b, one), (c, wv), (d, w1)] {
                let gt = _mm256_cmp_ps(v, best, _CMP_GT_OQ);
                best = _mm256_blendv_ps(best, v, gt);
                off = _mm256_blendv_epi8(off, o, _mm256_castps_si256(gt));
            }
            let at = _mm256_add_epi32(_mm256_set1_epi32((base + 2 * ox as u32) as i32), _mm256_add_epi32(lanes2, off));
            _mm256_storeu_ps(y.add(ox), best);
            _mm256_storeu_si256(arg.add(ox) as *mut __m256i, at);
            ox += 8;
        }
        ox
    }
}

/// e^x per lane, to about 2 ulp over the range where the result is a normal f32; 0 below
/// about -87.3, +inf above about 88.7 (Cephes' expf polynomial, Cody–Waite reduction).
#[inline(always)]
unsafe fn exp8(x: __m256) -> __m256 {
    unsafe {
        let hi = _mm256_set1_ps(88.722_83);
        let lo = _mm256_set1_ps(-87.336_55);
        let xc = _mm256_max_ps(_mm256_min_ps(x, hi), lo);
        // n = round(x / ln 2); r = x - n ln 2 in two parts.
        let n = _mm256_round_ps(
            _mm256_mul_ps(xc, _mm256_set1_ps(std::f32::consts::LOG2_E)),
            _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC,
        );
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_359_4), xc);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.121_944_4e-4), r);
        let mut p = _mm256_set1_ps(1.987_569_1e-4);
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.398_199_9e-3));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.333_452e-3));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.166_579_6e-2));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.666_666_5e-1));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5));
        let r2 = _mm256_mul_ps(r, r);
        let e = _mm256_add_ps(_mm256_fmadd_ps(p, r2, r), _mm256_set1_ps(1.0));
        // Scale by 2^n: n in [-126, 128]; split in two steps so 2^128 does not overflow the exponent.
        let ni = _mm256_cvtps_epi32(n);
        let half = _mm256_srai_epi32(ni, 1);
        let pow = |k: __m256i| _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(k, _mm256_set1_epi32(127)), 23));
        let y = _mm256_mul_ps(_mm256_mul_ps(e, pow(half)), pow(_mm256_sub_epi32(ni, half)));
        // Below the clamp: 0 (as libm underflows); above: +inf; NaN stays NaN.
        let y = _mm256_andnot_ps(_mm256_cmp_ps(x, lo, _CMP_LT_OQ), y);
        let y = _mm256_blendv_ps(y, _mm256_set1_ps(f32::INFINITY), _mm256_cmp_ps(x, hi, _CMP_GT_OQ));
        _mm256_blendv_ps(y, x, _mm256_cmp_ps(x, x, _CMP_UNORD_Q))
    }
}

/// z += bias, then the logistic function, over rows of `bias.len()` values.
///
/// SAFETY: AVX2 and FMA present.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn bias_sigmoid(out: &mut [f32], bias: &[f32]) {
    let m = bias.len();
    unsafe {
        let one = _mm256_set1_ps(1.0);
        let f = |z: __m256| _mm256_div_ps(one, _mm256_add_ps(one, exp8(_mm256_sub_ps(_mm256_setzero_ps(), z))));
        for row in out.chunks_exact_mut(m) {
            let (pr, pb) = (row.as_mut_ptr(), bias.as_ptr());
            let mut j = 0;
            while j + 8 <= m {
                let z = _mm256_add_ps(_mm256_loadu_ps(pr.add(j)), _mm256_loadu_ps(pb.add(j)));
                _mm256_storeu_ps(pr.add(j), f(z));
                j += 8;
            }
            if j < m {
                let mask = tail_mask(m - j);
                let z = _mm256_add_ps(_mm256_maskload_ps(pr.add(j), mask), _mm256_maskload_ps(pb.add(j), mask));
                _mm256_maskstore_ps(pr.add(j), mask, f(z));
            }
        }
    }
}

/// z += bias, then softmax, over rows of `bias.len()` values.
///
/// SAFETY: AVX2 and FMA present.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn bias_softmax(out: &mut [f32], bias: &[f32]) {
    let m = bias.len();
    for row in out.chunks_exact_mut(m) {
        for (z, &b) in row.iter_mut().zip(bias) {
            *z += b;
        }
        let top = row.iter().fold(f32::NEG_INFINITY, |t, &v| t.max(v));
        let mut sum = 0.0f32;
        unsafe {
            let (pr, t) = (row.as_mut_ptr(), _mm256_set1_ps(top));
            let mut j = 0;
            while j < m {
                let mask = tail_mask((m - j).min(8));
                let e = exp8(_mm256_sub_ps(_mm256_maskload_ps(pr.add(j), mask), t));
                _mm256_maskstore_ps(pr.add(j), mask, e);
                j += 8;
            }
        }
        // The sum in element order, as the scalar pass.
        for &v in row.iter() {
            sum += v;
        }
        let inv = 1.0 / sum;
        row.iter_mut().for_each(|v| *v *= inv);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp8_is_close_to_libm() {
        if !crate::engine::simd::has_avx2_fma() {
            return;
        }
        #[target_feature(enable = "avx2,fma")]
        unsafe fn run(x: &[f32; 8]) -> [f32; 8] {
            let mut out = [0f32; 8];
            unsafe { _mm256_storeu_ps(out.as_mut_ptr(), exp8(_mm256_loadu_ps(x.as_ptr()))) };
            out
        }
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x < 88.5 {
            let xs = [x, x + 1e-3, x + 0.37, x - 0.21, x * 0.5, x * 1e-3, -x * 0.01, x + 0.5];
            let got = unsafe { run(&xs) };
            for (&xi, &g) in xs.iter().zip(&got) {
                let want = (xi as f64).exp();
                if want > 1.2e-38 && want < 3.4e38 {
                    worst = worst.max(((g as f64) - want).abs() / want);
                }
            }
            x += 0.0371;
        }
        assert!(worst < 4e-7, "worst relative error {worst}");
        let edge = unsafe { run(&[-100.0, -87.5, 89.0, 1000.0, 0.0, f32::NEG_INFINITY, -0.0, 1.0]) };
        assert_eq!(edge[0], 0.0);
        assert_eq!(edge[1], 0.0);
        assert!(edge[2].is_infinite() && edge[3].is_infinite());
        assert_eq!(edge[4], 1.0);
        assert_eq!(edge[5], 0.0);
        assert_eq!(edge[6], 1.0);
        assert!((edge[7] - std::f32::consts::E).abs() < 1e-6);
        assert!(unsafe { run(&[f32::NAN; 8]) }.iter().all(|v| v.is_nan()));
    }
}
