//! AVX2+FMA and AVX-512 kernels for the products and activations of small dense layers, where a
//! matrix-multiply crate's packing, buffer set-up and dispatch cost as much as the arithmetic.
//!
//! The product kernels are written once over [`Vf`], a vector of 8 (`W8`, AVX2) or 16 (`W16`,
//! AVX-512F) lanes, and compiled once per width; the entry points without a suffix run the
//! 256-bit build, those ending in `_512` the 512-bit one.
//!
//! Two register-blocked product kernels cover all three products of a dense layer without packing:
//! - `nt`: C = A · Bᵀ with rows of A and B contiguous along the summed dimension (the forward
//!   product X · Wᵀ with W stored [out][in]): each element is an 8-lane dot product.
//! - `nn`: C = A · B with rows of B contiguous (dX = delta · W and dW = deltaᵀ · X): rows of C
//!   are accumulated from broadcast elements of A times rows of B.
//!
//! Every element of C has its own accumulator, summed in the same order whatever the block it
//! falls in, so results do not depend on how the caller splits C. Callers must have checked
//! [`super::simd::has_avx2_fma`] (or [`super::simd::has_avx512`] for the `_512` builds). Measurements that justify them: docs/kernels.md, "Engine level".

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

/// One vector of f32 lanes and the operations the kernels need.
pub(crate) trait Vf: Copy {
    /// Lanes per vector.
    const L: usize;
    /// Which lanes a masked load or store touches.
    type Mask: Copy;
    unsafe fn zero() -> Self;
    unsafe fn set(x: f32) -> Self;
    unsafe fn load(p: *const f32) -> Self;
    unsafe fn store(p: *mut f32, v: Self);
    /// The first `r` lanes (r in 0..=L); r ≥ L is all of them.
    unsafe fn mask(r: usize) -> Self::Mask;
    /// Lanes lo..hi (lo ≤ hi ≤ L).
    unsafe fn mask_range(lo: usize, hi: usize) -> Self::Mask;
    /// Lanes outside the mask read as zero and are not touched in memory.
    unsafe fn load_masked(p: *const f32, m: Self::Mask) -> Self;
    unsafe fn store_masked(p: *mut f32, m: Self::Mask, v: Self);
    unsafe fn splat(p: *const f32) -> Self;
    /// a · b + c, fused.
    unsafe fn fma(a: Self, b: Self, c: Self) -> Self;
    /// c - a · b, fused.
    unsafe fn fnma(a: Self, b: Self, c: Self) -> Self;
    unsafe fn add(a: Self, b: Self) -> Self;
    unsafe fn sub(a: Self, b: Self) -> Self;
    unsafe fn mul(a: Self, b: Self) -> Self;
    unsafe fn div(a: Self, b: Self) -> Self;
    unsafe fn min(a: Self, b: Self) -> Self;
    unsafe fn max(a: Self, b: Self) -> Self;
    #[inline(always)]
    unsafe fn max0(a: Self) -> Self {
        unsafe { Self::max(a, Self::zero()) }
    }
    /// Each lane rounded to the nearest integer (ties to even).
    unsafe fn round(a: Self) -> Self;
    /// e · 2^n for integral n in [-126, 128] (as f32 lanes) and e in [0.5, 2).
    unsafe fn scale2(e: Self, n: Self) -> Self;
    /// y where lo ≤ x ≤ hi; 0 where x < lo, +inf where x > hi, x where x is NaN.
    unsafe fn exp_edges(x: Self, y: Self, lo: Self, hi: Self) -> Self;
    /// Sum of the lanes, in a fixed order.
    unsafe fn hsum(v: Self) -> f32;
}

/// 8 lanes: AVX2 and FMA.
#[derive(Clone, Copy)]
pub(crate) struct W8(__m256);

/// 16 lanes: AVX-512F.
#[derive(Clone, Copy)]
pub(crate) struct W16(__m512);

/// The operations of [`Vf`] that are one intrinsic at either width.
macro_rules! one_intrinsic_ops {
    ($w:ident: $setzero:ident $set1:ident $loadu:ident $storeu:ident; $($tn:ident $ti:ident),*; $($bn:ident $bi:ident),*) => {
        #[inline(always)]
        unsafe fn zero() -> Self {
            unsafe { $w($setzero()) }
        }
        #[inline(always)]
        unsafe fn set(x: f32) -> Self {
            unsafe { $w($set1(x)) }
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            unsafe { $w($loadu(p)) }
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: Self) {
            unsafe { $storeu(p, v.0) }
        }
        #[inline(always)]
        unsafe fn splat(p: *const f32) -> Self {
            unsafe { $w($set1(*p)) }
        }
        $(
            #[inline(always)]
            unsafe fn $tn(a: Self, b: Self, c: Self) -> Self {
                unsafe { $w($ti(a.0, b.0, c.0)) }
            }
        )*
        $(
            #[inline(always)]
            unsafe fn $bn(a: Self, b: Self) -> Self {
                unsafe { $w($bi(a.0, b.0)) }
            }
        )*
    };
}

impl Vf for W8 {
    const L: usize = 8;
    type Mask = __m256i;
    one_intrinsic_ops!(W8: _mm256_setzero_ps _mm256_set1_ps _mm256_loadu_ps _mm256_storeu_ps;
        fma _mm256_fmadd_ps, fnma _mm256_fnmadd_ps;
        add _mm256_add_ps, sub _mm256_sub_ps, mul _mm256_mul_ps, div _mm256_div_ps, min _mm256_min_ps, max _mm256_max_ps);
    #[inline(always)]
    unsafe fn mask(r: usize) -> __m256i {
        unsafe { tail_mask(r.min(8)) }
    }
    #[inline(always)]
    unsafe fn mask_range(lo: usize, hi: usize) -> __m256i {
        unsafe { _mm256_andnot_si256(tail_mask(lo), tail_mask(hi)) }
    }
    #[inline(always)]
    unsafe fn load_masked(p: *const f32, m: __m256i) -> Self {
        unsafe { W8(_mm256_maskload_ps(p, m)) }
    }
    #[inline(always)]
    unsafe fn store_masked(p: *mut f32, m: __m256i, v: Self) {
        unsafe { _mm256_maskstore_ps(p, m, v.0) }
    }
    #[inline(always)]
    unsafe fn round(a: Self) -> Self {
        unsafe { W8(_mm256_round_ps(a.0, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)) }
    }
    #[inline(always)]
    unsafe fn scale2(e: Self, n: Self) -> Self {
        // In two steps, so that 2^128 does not overflow the exponent field.
        unsafe {
            let ni = _mm256_cvtps_epi32(n.0);
            let half = _mm256_srai_epi32(ni, 1);
            let pow =
                |k: __m256i| _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(k, _mm256_set1_epi32(127)), 23));
            W8(_mm256_mul_ps(_mm256_mul_ps(e.0, pow(half)), pow(_mm256_sub_epi32(ni, half))))
        }
    }
    #[inline(always)]
    unsafe fn exp_edges(x: Self, y: Self, lo: Self, hi: Self) -> Self {
        unsafe {
            let y = _mm256_andnot_ps(_mm256_cmp_ps(x.0, lo.0, _CMP_LT_OQ), y.0);
            let y = _mm256_blendv_ps(y, _mm256_set1_ps(f32::INFINITY), _mm256_cmp_ps(x.0, hi.0, _CMP_GT_OQ));
            W8(_mm256_blendv_ps(y, x.0, _mm256_cmp_ps(x.0, x.0, _CMP_UNORD_Q)))
        }
    }
    #[inline(always)]
    unsafe fn hsum(v: Self) -> f32 {
        unsafe { hsum(v.0) }
    }
}

impl Vf for W16 {
    const L: usize = 16;
    type Mask = __mmask16;
    one_intrinsic_ops!(W16: _mm512_setzero_ps _mm512_set1_ps _mm512_loadu_ps _mm512_storeu_ps;
        fma _mm512_fmadd_ps, fnma _mm512_fnmadd_ps;
        add _mm512_add_ps, sub _mm512_sub_ps, mul _mm512_mul_ps, div _mm512_div_ps, min _mm512_min_ps, max _mm512_max_ps);
    #[inline(always)]
    unsafe fn mask(r: usize) -> __mmask16 {
        if r >= 16 { 0xffff } else { ((1u32 << r) - 1) as __mmask16 }
    }
    #[inline(always)]
    unsafe fn mask_range(lo: usize, hi: usize) -> __mmask16 {
        (((1u32 << hi) - 1) & !((1u32 << lo) - 1)) as __mmask16
    }
    #[inline(always)]
    unsafe fn load_masked(p: *const f32, m: __mmask16) -> Self {
        unsafe { W16(_mm512_maskz_loadu_ps(m, p)) }
    }
    #[inline(always)]
    unsafe fn store_masked(p: *mut f32, m: __mmask16, v: Self) {
        unsafe { _mm512_mask_storeu_ps(p, m, v.0) }
    }
    #[inline(always)]
    unsafe fn round(a: Self) -> Self {
        unsafe { W16(_mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(a.0)) }
    }
    #[inline(always)]
    unsafe fn scale2(e: Self, n: Self) -> Self {
        unsafe { W16(_mm512_scalef_ps(e.0, n.0)) }
    }
    #[inline(always)]
    unsafe fn exp_edges(x: Self, y: Self, lo: Self, hi: Self) -> Self {
        unsafe {
            let y = _mm512_mask_blend_ps(_mm512_cmp_ps_mask::<_CMP_LT_OQ>(x.0, lo.0), y.0, _mm512_setzero_ps());
            let y = _mm512_mask_blend_ps(_mm512_cmp_ps_mask::<_CMP_GT_OQ>(x.0, hi.0), y, _mm512_set1_ps(f32::INFINITY));
            W16(_mm512_mask_blend_ps(_mm512_cmp_ps_mask::<_CMP_UNORD_Q>(x.0, x.0), y, x.0))
        }
    }
    #[inline(always)]
    unsafe fn hsum(v: Self) -> f32 {
        // Halves added as in the 8-lane sum: a fixed order.
        unsafe {
            let lo = _mm512_castps512_ps256(v.0);
            let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v.0), 1));
            hsum(_mm256_add_ps(lo, hi))
        }
    }
}

/// Defines `$narrow` (compiled for AVX2+FMA) and `$wide` (for AVX-512F), which run `$imp` on 8-
/// and 16-lane vectors, and the entry point `$name`, which calls the one the path in use says.
macro_rules! by_width {
    ($(#[$meta:meta])* pub unsafe fn $name:ident / $narrow:ident / $wide:ident
     ($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? = $imp:ident::<$n:ty $(, $nc:literal)*> | <$w:ty $(, $wc:literal)*>) => {
        /// The 256-bit build of the entry point named like it.
        ///
        /// SAFETY: AVX2 and FMA present; the rest as the entry point.
        #[target_feature(enable = "avx2,fma")]
        #[allow(clippy::too_many_arguments)]
        unsafe fn $narrow($($arg: $ty),*) $(-> $ret)? {
            unsafe { $imp::<$n $(, $nc)*>($($arg),*) }
        }
        /// The 512-bit build of the entry point named like it.
        ///
        /// SAFETY: AVX-512F present; the rest as the entry point.
        #[target_feature(enable = "avx512f,avx2,fma")]
        #[allow(clippy::too_many_arguments)]
        unsafe fn $wide($($arg: $ty),*) $(-> $ret)? {
            unsafe { $imp::<$w $(, $wc)*>($($arg),*) }
        }
        $(#[$meta])*
        #[inline]
        #[allow(clippy::too_many_arguments)]
        pub unsafe fn $name($($arg: $ty),*) $(-> $ret)? {
            // SAFETY: the path in use runs only where the CPU has it; the rest is the caller's.
            unsafe { if super::simd::has_avx512() { $wide($($arg),*) } else { $narrow($($arg),*) } }
        }
    };
}

pub(crate) use by_width;

/// c[i·ldc + j] = Σ_p a[i·lda + p] · b[j·ldb + p] for i < MR, j < NR.
#[inline(always)]
unsafe fn nt_block<V: Vf, const MR: usize, const NR: usize>(
    k: usize,
    a: *const f32,
    lda: usize,
    b: *const f32,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
) {
    unsafe {
        let mut acc = [[V::zero(); NR]; MR];
        let full = k / V::L * V::L;
        let mut p = 0;
        while p < full {
            let mut bv = [V::zero(); NR];
            for (j, v) in bv.iter_mut().enumerate() {
                *v = V::load(b.add(j * ldb + p));
            }
            for (i, row) in acc.iter_mut().enumerate() {
                let av = V::load(a.add(i * lda + p));
                for (acc, &bv) in row.iter_mut().zip(&bv) {
                    *acc = V::fma(av, bv, *acc);
                }
            }
            p += V::L;
        }
        if p < k {
            let mask = V::mask(k - p);
            let mut bv = [V::zero(); NR];
            for (j, v) in bv.iter_mut().enumerate() {
                *v = V::load_masked(b.add(j * ldb + p), mask);
            }
            for (i, row) in acc.iter_mut().enumerate() {
                let av = V::load_masked(a.add(i * lda + p), mask);
                for (acc, &bv) in row.iter_mut().zip(&bv) {
                    *acc = V::fma(av, bv, *acc);
                }
            }
        }
        for (i, row) in acc.iter().enumerate() {
            for (j, &v) in row.iter().enumerate() {
                *c.add(i * ldc + j) = V::hsum(v);
            }
        }
    }
}

/// Rows [0, MR) of C = A · Bᵀ, all n columns.
#[inline(always)]
unsafe fn nt_rows<V: Vf, const MR: usize, const NR: usize>(
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
            nt_block::<V, MR, NR>(k, a, lda, b.add(j * ldb), ldb, c.add(j), ldc);
            j += NR;
        }
        while j + 2 <= n {
            nt_block::<V, MR, 2>(k, a, lda, b.add(j * ldb), ldb, c.add(j), ldc);
            j += 2;
        }
        if j < n {
            nt_block::<V, MR, 1>(k, a, lda, b.add(j * ldb), ldb, c.add(j), ldc);
        }
    }
}

#[inline(always)]
unsafe fn nt_imp<V: Vf>(
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
            nt_rows::<V, 4, 3>(n, k, a.add(i * lda), lda, b, ldb, c.add(i * ldc), ldc);
            i += 4;
        }
        while i < m {
            nt_rows::<V, 1, 8>(n, k, a.add(i * lda), lda, b, ldb, c.add(i * ldc), ldc);
            i += 1;
        }
    }
}

/// c[i·ldc + L·v ..] = Σ_p a[i·ars + p·acs] · b[p·ldb + L·v ..] for i < MR, v < NV; when MASKED,
/// the last vector of each row only covers the lanes in `mask`.
#[inline(always)]
unsafe fn nn_block<V: Vf, const MR: usize, const NV: usize, const MASKED: bool>(
    k: usize,
    a: *const f32,
    ars: usize,
    acs: usize,
    b: *const f32,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
    mask: V::Mask,
) {
    unsafe {
        let mut acc = [[V::zero(); NV]; MR];
        for p in 0..k {
            let brow = b.add(p * ldb);
            let mut bv = [V::zero(); NV];
            for (v, x) in bv.iter_mut().enumerate() {
                *x = if MASKED && v + 1 == NV {
                    V::load_masked(brow.add(V::L * v), mask)
                } else {
                    V::load(brow.add(V::L * v))
                };
            }
            for (i, row) in acc.iter_mut().enumerate() {
                let av = V::splat(a.add(i * ars + p * acs));
                for (acc, &bv) in row.iter_mut().zip(&bv) {
                    *acc = V::fma(av, bv, *acc);
                }
            }
        }
        for (i, row) in acc.iter().enumerate() {
            for (v, &x) in row.iter().enumerate() {
                let dst = c.add(i * ldc + V::L * v);
                if MASKED && v + 1 == NV {
                    V::store_masked(dst, mask, x);
                } else {
                    V::store(dst, x);
                }
            }
        }
    }
}

/// Rows [0, MR) of C = A · B, all n columns, in blocks of two vectors then a masked tail.
#[inline(always)]
unsafe fn nn_rows<V: Vf, const MR: usize>(
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
        let all = V::mask(V::L);
        let mut j = 0;
        while j + 2 * V::L <= n {
            nn_block::<V, MR, 2, false>(k, a, ars, acs, b.add(j), ldb, c.add(j), ldc, all);
            j += 2 * V::L;
        }
        let r = n - j;
        if r > V::L {
            nn_block::<V, MR, 2, true>(k, a, ars, acs, b.add(j), ldb, c.add(j), ldc, V::mask(r - V::L));
        } else if r > 0 {
            nn_block::<V, MR, 1, true>(k, a, ars, acs, b.add(j), ldb, c.add(j), ldc, V::mask(r));
        }
    }
}

#[inline(always)]
unsafe fn nn_imp<V: Vf>(
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
            nn_rows::<V, 6>(n, k, a.add(i * ars), ars, acs, b, ldb, c.add(i * ldc), ldc);
            i += 6;
        }
        while i + 2 <= m {
            nn_rows::<V, 2>(n, k, a.add(i * ars), ars, acs, b, ldb, c.add(i * ldc), ldc);
            i += 2;
        }
        if i < m {
            nn_rows::<V, 1>(n, k, a.add(i * ars), ars, acs, b, ldb, c.add(i * ldc), ldc);
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

/// Row p of a 16-wide panel as NV vectors. (A function, not a closure: a closure in a generic
/// kernel gets none of its caller's target features, so the intrinsics in it are not inlined.)
#[inline(always)]
unsafe fn panel_row<V: Vf, const NV: usize>(b: *const f32, p: usize) -> [V; NV] {
    unsafe {
        let mut bv = [V::zero(); NV];
        for (v, x) in bv.iter_mut().enumerate() {
            *x = V::load(b.add(16 * p + V::L * v));
        }
        bv
    }
}

/// c[i·ldc + j] (= or +=) Σ_p a[i·ars + p·acs] · b[p·16 + j] for i < MR, j < cols ≤ 16: one
/// 16-wide panel of a packed B (NV = 16 / L vectors), A's elements broadcast from where they
/// lie. Each element of C is one lane of one accumulator, summed over p in order.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // MR rows, unrolled: indexing reads clearer than zips
unsafe fn pk_block<V: Vf, const MR: usize, const NV: usize>(
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
        let mut acc = [[V::zero(); NV]; MR];
        let mut rows = [a; MR];
        for (i, r) in rows.iter_mut().enumerate() {
            *r = a.add(i * ars);
        }
        // Addressing by layout: rows contiguous along p (one index for all rows), rows adjacent
        // (one pointer for all rows), or general (one pointer per row).
        if acs == 1 {
            for p in 0..k {
                let bv = panel_row::<V, NV>(b, p);
                for i in 0..MR {
                    let av = V::splat(rows[i].add(p));
                    for v in 0..NV {
                        acc[i][v] = V::fma(av, bv[v], acc[i][v]);
                    }
                }
            }
        } else if ars == 1 {
            let mut ap = a;
            for p in 0..k {
                let bv = panel_row::<V, NV>(b, p);
                for i in 0..MR {
                    let av = V::splat(ap.add(i));
                    for v in 0..NV {
                        acc[i][v] = V::fma(av, bv[v], acc[i][v]);
                    }
                }
                ap = ap.add(acs);
            }
        } else {
            for p in 0..k {
                let bv = panel_row::<V, NV>(b, p);
                for i in 0..MR {
                    let av = V::splat(rows[i]);
                    for v in 0..NV {
                        acc[i][v] = V::fma(av, bv[v], acc[i][v]);
                    }
                    rows[i] = rows[i].add(acs);
                }
            }
        }
        let full = cols == 16;
        let mut masks = [V::mask(0); NV];
        for (v, m) in masks.iter_mut().enumerate() {
            *m = V::mask(cols.saturating_sub(V::L * v));
        }
        for (i, row) in acc.iter().enumerate() {
            let dst = c.add(i * ldc);
            for v in 0..NV {
                let d = dst.add(V::L * v);
                let mut x = row[v];
                if let Epi::Accumulate = epi {
                    x = V::add(if full { V::load(d) } else { V::load_masked(d, masks[v]) }, x);
                }
                if full {
                    V::store(d, x);
                } else {
                    V::store_masked(d, masks[v], x);
                }
            }
        }
    }
}

#[inline(always)]
unsafe fn packed_imp<V: Vf, const NV: usize, const BIG: usize>(
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
            while i + BIG <= m {
                pk_block::<V, BIG, NV>(k, a.add(i * ars), ars, acs, bp, cp.add(i * ldc), ldc, cols, epi);
                i += BIG;
            }
            while i + 6 <= m {
                pk_block::<V, 6, NV>(k, a.add(i * ars), ars, acs, bp, cp.add(i * ldc), ldc, cols, epi);
                i += 6;
            }
            if i + 4 <= m {
                pk_block::<V, 4, NV>(k, a.add(i * ars), ars, acs, bp, cp.add(i * ldc), ldc, cols, epi);
                i += 4;
            }
            if i + 2 <= m {
                pk_block::<V, 2, NV>(k, a.add(i * ars), ars, acs, bp, cp.add(i * ldc), ldc, cols, epi);
                i += 2;
            }
            if i < m {
                pk_block::<V, 1, NV>(k, a.add(i * ars), ars, acs, bp, cp.add(i * ldc), ldc, cols, epi);
            }
        }
    }
}

/// Independent FMA chains for the ceiling measurement: 12 accumulators hide the FMA latency
/// on every core flopnet was measured on (4 cycles, two pipes). Returns their sum (so the work
/// is not optimised away).
#[inline(always)]
unsafe fn fma_chains_imp<V: Vf>(iters: usize) -> f32 {
    let iters = std::hint::black_box(iters);
    unsafe {
        let (a, b) = (V::set(0.999_999), V::set(1e-7));
        let mut acc = [V::zero(); 12];
        for _ in 0..iters {
            for x in acc.iter_mut() {
                *x = V::fma(*x, a, b);
            }
        }
        acc.iter().map(|&v| V::hsum(v)).sum()
    }
}

by_width! {
    /// C[m×n] (row stride ldc) = A[m×k] · Bᵀ, A and B row-major along k (row strides lda, ldb).
    ///
    /// SAFETY: the path in use is `avx2` or `avx512`; the pointers valid for those extents.
    pub unsafe fn nt / nt_256 / nt_512(
        m: usize, n: usize, k: usize, a: *const f32, lda: usize, b: *const f32, ldb: usize, c: *mut f32, ldc: usize,
    ) = nt_imp::<W8> | <W16>
}

by_width! {
    /// C[m×n] (row stride ldc) = A[m×k] · B[k×n]: A's element (i, p) at `a[i·ars + p·acs]`, B
    /// row-major (row stride ldb).
    ///
    /// SAFETY: the path in use is `avx2` or `avx512`; the pointers valid for those extents.
    pub unsafe fn nn / nn_256 / nn_512(
        m: usize, n: usize, k: usize, a: *const f32, ars: usize, acs: usize, b: *const f32, ldb: usize, c: *mut f32,
        ldc: usize,
    ) = nn_imp::<W8> | <W16>
}

by_width! {
    /// C[m×n] (row stride ldc) = A[m×k] · B[k×n] with B packed in 16-wide panels
    /// ([⌈n/16⌉][k][16]: element (p, j) at `b[(j/16)·16k + 16p + j%16]`, lanes past n ignored) and
    /// A's element (i, p) at `a[i·ars + p·acs]`; `epi` says what is done with the sums. Panels in
    /// order, the whole of k in registers: 6 rows of C at a time over each on 8 lanes (two
    /// vectors a panel), 12 on 16 lanes (one vector a panel: twelve FMA chains in flight); tails
    /// of 6, 4, 2, 1.
    ///
    /// SAFETY: the path in use is `avx2` or `avx512`; the pointers valid for those extents (B for
    /// whole panels).
    pub unsafe fn packed / packed_256 / packed_512(
        m: usize, n: usize, k: usize, a: *const f32, ars: usize, acs: usize, b: *const f32, c: *mut f32, ldc: usize,
        epi: Epi,
    ) = packed_imp::<W8, 2, 6> | <W16, 1, 12>
}

by_width! {
    /// `iters` rounds of 12 independent FMAs of the path's vector (192 FLOPs a round on 8 lanes,
    /// 384 on 16), for the ceiling measurement; returns their sum.
    ///
    /// SAFETY: the path in use is `avx2` or `avx512`.
    pub unsafe fn fma_chains / fma_chains_256 / fma_chains_512(iters: usize) -> f32 = fma_chains_imp::<W8> | <W16>
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

/// [`max_pool2_row`] on 16-lane vectors, the last block masked (rows of 13 or 14 outputs, as in
/// the suite's CNNs, take one block): does all `ow` outputs and returns `ow`.
///
/// SAFETY: AVX-512F present; r0 and r1 valid for 2·ow reads, y and arg for ow writes.
#[target_feature(enable = "avx512f,avx2,fma")]
pub unsafe fn max_pool2_row_512(
    r0: *const f32,
    r1: *const f32,
    ow: usize,
    base: u32,
    w: u32,
    y: *mut f32,
    arg: *mut u32,
) -> usize {
    unsafe {
        let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        let odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
        let (one, wv, w1) = (_mm512_set1_epi32(1), _mm512_set1_epi32(w as i32), _mm512_set1_epi32(w as i32 + 1));
        let mut ox = 0;
        while ox < ow {
            let n = (ow - ox).min(16);
            // 2n input values of each row: two loads of up to 16, masked at the end.
            let (m_lo, m_hi) = (W16::mask(2 * n), W16::mask((2 * n).saturating_sub(16)));
            let pairs = |r: *const f32| {
                let lo = _mm512_maskz_loadu_ps(m_lo, r.add(2 * ox));
                let hi = _mm512_maskz_loadu_ps(m_hi, r.add(2 * ox + 16));
                (_mm512_permutex2var_ps(lo, even, hi), _mm512_permutex2var_ps(lo, odd, hi))
            };
            let (a, b) = pairs(r0);
            let (c, d) = pairs(r1);
            let mut best = a;
            let mut off = _mm512_setzero_si512();
            for (v, o) in [(b, one), (c, wv), (d, w1)] {
                let gt = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(v, best);
                best = _mm512_mask_blend_ps(gt, best, v);
                off = _mm512_mask_blend_epi32(gt, off, o);
            }
            let lanes2 = _mm512_add_epi32(even, off);
            let at = _mm512_add_epi32(_mm512_set1_epi32((base + 2 * ox as u32) as i32), lanes2);
            let m = W16::mask(n);
            _mm512_mask_storeu_ps(y.add(ox), m, best);
            _mm512_mask_storeu_epi32(arg.add(ox) as *mut i32, m, at);
            ox += n;
        }
        ow
    }
}

/// e^x per lane, to about 2 ulp over the range where the result is a normal f32; 0 below
/// about -87.3, +inf above about 88.7 (Cephes' expf polynomial, Cody–Waite reduction).
#[inline(always)]
unsafe fn exp<V: Vf>(x: V) -> V {
    unsafe {
        let (hi, lo) = (V::set(88.722_83), V::set(-87.336_55));
        let xc = V::max(V::min(x, hi), lo);
        // n = round(x / ln 2); r = x - n ln 2 in two parts.
        let n = V::round(V::mul(xc, V::set(std::f32::consts::LOG2_E)));
        let r = V::fnma(n, V::set(0.693_359_4), xc);
        let r = V::fnma(n, V::set(-2.121_944_4e-4), r);
        let mut p = V::set(1.987_569_1e-4);
        for c in [1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 1.666_666_5e-1, 0.5] {
            p = V::fma(p, r, V::set(c));
        }
        let e = V::add(V::fma(p, V::mul(r, r), r), V::set(1.0));
        // Below the clamp: 0 (as libm underflows); above: +inf; NaN stays NaN.
        V::exp_edges(x, V::scale2(e, n), lo, hi)
    }
}

/// A function applied lane by lane. (A type, not a closure: a closure in a generic kernel gets
/// none of its caller's target features, and its intrinsics became calls: 10 ns a value.)
trait Lanewise {
    unsafe fn f<V: Vf>(x: V) -> V;
}

struct Exp;
struct Logistic;

impl Lanewise for Exp {
    #[inline(always)]
    unsafe fn f<V: Vf>(x: V) -> V {
        unsafe { exp(x) }
    }
}

impl Lanewise for Logistic {
    #[inline(always)]
    unsafe fn f<V: Vf>(z: V) -> V {
        unsafe {
            let one = V::set(1.0);
            V::div(one, V::add(one, exp(V::sub(V::zero(), z))))
        }
    }
}

/// F over the first `len` values at `p`, in full vectors and one masked tail.
#[inline(always)]
unsafe fn map<V: Vf, F: Lanewise>(p: *mut f32, len: usize) {
    unsafe {
        let mut j = 0;
        while j + V::L <= len {
            V::store(p.add(j), F::f(V::load(p.add(j))));
            j += V::L;
        }
        if j < len {
            let mask = V::mask(len - j);
            V::store_masked(p.add(j), mask, F::f(V::load_masked(p.add(j), mask)));
        }
    }
}

/// The bias added to each row of `bias.len()` values; returns how many values that covered.
#[inline(always)]
fn add_bias(out: &mut [f32], bias: &[f32]) -> usize {
    let m = bias.len();
    for row in out.chunks_exact_mut(m) {
        for (z, &b) in row.iter_mut().zip(bias) {
            *z += b;
        }
    }
    out.len() / m * m
}

#[inline(always)]
unsafe fn sigmoid_imp<V: Vf>(out: &mut [f32], bias: &[f32]) {
    let len = add_bias(out, bias);
    unsafe { map::<V, Logistic>(out.as_mut_ptr(), len) }
}

#[inline(always)]
unsafe fn softmax_imp<V: Vf>(out: &mut [f32], bias: &[f32]) {
    let m = bias.len();
    let len = add_bias(out, bias);
    for row in out.chunks_exact_mut(m) {
        let top = row.iter().fold(f32::NEG_INFINITY, |t, &v| t.max(v));
        row.iter_mut().for_each(|v| *v -= top);
    }
    unsafe { map::<V, Exp>(out.as_mut_ptr(), len) };
    for row in out.chunks_exact_mut(m) {
        let sum: f32 = row.iter().sum();
        let inv = 1.0 / sum;
        row.iter_mut().for_each(|v| *v *= inv);
    }
}

by_width! {
    /// z += bias, then the logistic function, over rows of `bias.len()` values: the bias added row
    /// by row, then the function over the whole buffer in full vectors (one masked tail). Taken
    /// row by row, each row's masked store held up the next row's masked load (0.8 ns a value at
    /// rows of 30, docs/kernels.md, "AVX-512").
    ///
    /// SAFETY: the path in use is `avx2` or `avx512`.
    pub unsafe fn bias_sigmoid / bias_sigmoid_256 / bias_sigmoid_512(out: &mut [f32], bias: &[f32])
        = sigmoid_imp::<W8> | <W16>
}

by_width! {
    /// z += bias, then softmax, over rows of `bias.len()` values: bias, row maximum and shift row
    /// by row, e^x over the whole buffer in full vectors, then each row's sum (in element order)
    /// and scale.
    ///
    /// SAFETY: the path in use is `avx2` or `avx512`.
    pub unsafe fn bias_softmax / bias_softmax_256 / bias_softmax_512(out: &mut [f32], bias: &[f32])
        = softmax_imp::<W8> | <W16>
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(
        m: usize,
        n: usize,
        k: usize,
        a: impl Fn(usize, usize) -> f32,
        b: impl Fn(usize, usize) -> f32,
    ) -> Vec<f32> {
        let mut c = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| a(i, p) as f64 * b(p, j) as f64).sum::<f64>() as f32;
            }
        }
        c
    }

    fn close(what: &str, got: &[f32], want: &[f32]) {
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!((g - w).abs() <= 1e-4 * (1.0 + w.abs()), "{what}[{i}]: {g} vs {w}");
        }
    }

    /// nt, nn and packed at both widths (those this CPU has: the others are named as skipped)
    /// against a naive product, over shapes that hit every block size and tail.
    #[test]
    fn every_width_of_the_products_matches_a_naive_product() {
        type Nt = unsafe fn(usize, usize, usize, *const f32, usize, *const f32, usize, *mut f32, usize);
        type Nn = unsafe fn(usize, usize, usize, *const f32, usize, usize, *const f32, usize, *mut f32, usize);
        type Pk = unsafe fn(usize, usize, usize, *const f32, usize, usize, *const f32, *mut f32, usize, Epi);
        let widths: [(&str, bool, Nt, Nn, Pk); 2] = [
            ("256-bit", crate::engine::simd::Path::Avx2.available(), nt_256, nn_256, packed_256),
            ("512-bit", crate::engine::simd::Path::Avx512.available(), nt_512, nn_512, packed_512),
        ];
        for (name, ok, nt, nn, packed) in widths {
            if !ok {
                eprintln!("skipped: the {name} products (this CPU lacks the features)");
                continue;
            }
            for (m, n, k) in
                [(1, 30, 784), (4, 10, 30), (7, 33, 17), (13, 47, 65), (32, 30, 9), (25, 16, 1), (3, 1, 40)]
            {
                let a: Vec<f32> = (0..m * k).map(|i| ((i * 7 % 13) as f32 - 6.0) / 7.0).collect();
                let b: Vec<f32> = (0..k * n).map(|i| ((i * 5 % 11) as f32 - 5.0) / 5.0).collect();
                let what = format!("{name} {m}x{k}x{n}");
                // nt: B stored [n][k].
                let want = naive(m, n, k, |i, p| a[i * k + p], |p, j| b[j * k + p]);
                let mut c = vec![f32::NAN; m * n];
                unsafe { nt(m, n, k, a.as_ptr(), k, b.as_ptr(), k, c.as_mut_ptr(), n) };
                close(&format!("nt {what}"), &c, &want);
                // nn: A transposed (stride m along p), B [k][n].
                let want = naive(m, n, k, |i, p| a[p * m + i], |p, j| b[p * n + j]);
                let mut c = vec![f32::NAN; m * n];
                unsafe { nn(m, n, k, a.as_ptr(), 1, m, b.as_ptr(), n, c.as_mut_ptr(), n) };
                close(&format!("nn {what}"), &c, &want);
                // packed: B in 16-wide panels, A row-major; stored, then accumulated once more.
                let panels = n.div_ceil(16);
                let mut bp = vec![0f32; panels * 16 * k];
                for p in 0..k {
                    for j in 0..n {
                        bp[(j / 16) * 16 * k + 16 * p + j % 16] = b[p * n + j];
                    }
                }
                let want = naive(m, n, k, |i, p| a[i * k + p], |p, j| b[p * n + j]);
                let mut c = vec![f32::NAN; m * n];
                unsafe { packed(m, n, k, a.as_ptr(), k, 1, bp.as_ptr(), c.as_mut_ptr(), n, Epi::Store) };
                close(&format!("packed {what}"), &c, &want);
                unsafe { packed(m, n, k, a.as_ptr(), k, 1, bp.as_ptr(), c.as_mut_ptr(), n, Epi::Accumulate) };
                let twice: Vec<f32> = want.iter().map(|v| 2.0 * v).collect();
                close(&format!("packed+= {what}"), &c, &twice);
            }
        }
    }

    /// e^x on 8 and 16 lanes (where the CPU has AVX-512F; named as skipped where not) against libm.
    #[test]
    fn exp_on_both_widths_is_close_to_libm() {
        #[target_feature(enable = "avx2,fma")]
        unsafe fn run8(x: &[f32; 16]) -> [f32; 16] {
            let mut out = [0f32; 16];
            unsafe {
                for h in 0..2 {
                    W8::store(out.as_mut_ptr().add(8 * h), exp(W8::load(x.as_ptr().add(8 * h))));
                }
            }
            out
        }
        #[target_feature(enable = "avx512f,avx2,fma")]
        unsafe fn run16(x: &[f32; 16]) -> [f32; 16] {
            let mut out = [0f32; 16];
            unsafe { W16::store(out.as_mut_ptr(), exp(W16::load(x.as_ptr()))) };
            out
        }
        type Run = unsafe fn(&[f32; 16]) -> [f32; 16];
        let widths: [(&str, bool, Run); 2] = [
            ("8 lanes", crate::engine::simd::Path::Avx2.available(), run8),
            ("16 lanes", crate::engine::simd::Path::Avx512.available(), run16),
        ];
        for (name, ok, run) in widths {
            if !ok {
                eprintln!("skipped: e^x on {name} (this CPU lacks the features)");
                continue;
            }
            let mut worst = 0f64;
            let mut x = -87.0f32;
            while x < 88.5 {
                let xs = [x, x + 1e-3, x + 0.37, x - 0.21, x * 0.5, x * 1e-3, -x * 0.01, x + 0.5];
                let mut both = [0f32; 16];
                both[..8].copy_from_slice(&xs);
                both[8..].copy_from_slice(&xs.map(|v| v * 0.75));
                let got = unsafe { run(&both) };
                for (&xi, &g) in both.iter().zip(&got) {
                    let want = (xi as f64).exp();
                    if want > 1.2e-38 && want < 3.4e38 {
                        worst = worst.max(((g as f64) - want).abs() / want);
                    }
                }
                x += 0.0371;
            }
            assert!(worst < 4e-7, "{name}: worst relative error {worst}");
            let mut edges = [1.0f32; 16];
            edges[..8].copy_from_slice(&[-100.0, -87.5, 89.0, 1000.0, 0.0, f32::NEG_INFINITY, -0.0, 1.0]);
            edges[8] = f32::NAN;
            let edge = unsafe { run(&edges) };
            assert_eq!(edge[0], 0.0, "{name}");
            assert_eq!(edge[1], 0.0, "{name}");
            assert!(edge[2].is_infinite() && edge[3].is_infinite(), "{name}");
            assert_eq!(edge[4], 1.0, "{name}");
            assert_eq!(edge[5], 0.0, "{name}");
            assert_eq!(edge[6], 1.0, "{name}");
            assert!((edge[7] - std::f32::consts::E).abs() < 1e-6, "{name}");
            assert!(edge[8].is_nan(), "{name}");
        }
    }
}
