//! C = A · B for the engine: `matrixmultiply` for real matrices, the small kernels for products
//! where one side is a handful of rows, and the output split across threads when the work pays.
//!
//! Threads split C by rows or columns, never the summed dimension, so every element is summed
//! in the same order whatever the thread count: a run is bitwise repeatable.

use super::kernels::{axpy, dot, scale_into};
use super::team::Team;
use std::ops::Range;

/// A read-only strided matrix: element (i, j) is `data[i * rs + j * cs]`.
#[derive(Clone, Copy)]
pub struct View<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<'a> View<'a> {
    /// A row-major matrix.
    pub fn rows(data: &'a [f32], rows: usize, cols: usize) -> Self {
        View { data: &data[..rows * cols], rows, cols, rs: cols, cs: 1 }
    }

    /// The transpose of a row-major `rows x cols` matrix, without moving it.
    pub fn transposed(data: &'a [f32], rows: usize, cols: usize) -> Self {
        View { data: &data[..rows * cols], rows: cols, cols: rows, rs: 1, cs: cols }
    }
}

/// Below this many multiply-adds a product stays on one thread. With the AVX2 kernels a product
/// of 1M multiply-adds takes ~15 µs on one core; below that, the second core's share is eaten by
/// the hand-off and by moving the operands' cache lines between the cores' L2s, and on this
/// shared VM a busy second vCPU makes any split a loss (docs/kernels.md, "Engine level"). So
/// 784-30-30-10 at B ≤ 32 runs on one thread; 784-800-10 at B = 128 (1M–80M per product) splits.
pub const PARALLEL_MIN_MACS: usize = 1 << 20;

/// At most this many rows (or summed terms) take the small-kernel path instead of the crate.
pub const SMALL: usize = 4;

/// Products up to this many multiply-adds run on the hand-written AVX2 kernels (`avx`) when the
/// CPU has them; larger ones on the crate, whose packing pays off there (docs/kernels.md).
pub const AVX_MAX_MACS: usize = 1 << 22;

/// A product C = A · Bᵀ summed over at most this many terms runs in the broadcast form on a
/// copy of B's rows, [`NT_AS_NN_VALUES`] values at a time: 784-30-30-10's 30→30 and 30→10 layers.
pub const NT_AS_NN_MAX_K: usize = 64;
/// Values of B copied on the stack at a time for that form (16 KiB).
pub const NT_AS_NN_VALUES: usize = 4096;

/// Which kernel family runs a product (for benchmarks; the engine uses `Auto`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    Auto,
    /// The crate (and the small portable loops), as on a CPU without AVX2.
    Crate,
    /// The AVX2 kernels whenever the strides allow (needs AVX2+FMA).
    Avx,
    /// Convolutions only: im2col written straight into 16-wide panels for `avx::packed` (needs
    /// AVX2+FMA; the crate otherwise). A plain product treats it as `Auto`.
    Packed,
}

/// c (row-major, a.rows x b.cols) = a · b, split across `team` when the work pays for it.
pub fn matmul(a: View, b: View, c: &mut [f32], team: &Team) {
    matmul_with(Kernel::Auto, a, b, c, team)
}

/// [`matmul`] with the kernel family chosen by the caller.
pub fn matmul_with(kernel: Kernel, a: View, b: View, c: &mut [f32], team: &Team) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    debug_assert_eq!(k, b.rows);
    let c = &mut c[..m * n];
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        c.fill(0.0);
        return;
    }
    #[cfg(target_arch = "x86_64")]
    {
        let avx = match kernel {
            Kernel::Auto | Kernel::Packed => m * k * n <= AVX_MAX_MACS && super::simd::has_avx2_fma(),
            Kernel::Crate => false,
            Kernel::Avx => true,
        };
        if avx && ((a.cs == 1 && b.rs == 1) || b.cs == 1) {
            return split(c, m, n, team, m * k * n, &|rows, cols, c| {
                // SAFETY: AVX2/FMA checked above; the blocks stay inside the views and inside C.
                unsafe { avx_block(a, b, rows, cols, c, n) }
            });
        }
    }
    // Each row of C is a combination of contiguous rows of B: axpy form.
    if b.cs == 1 && (k <= SMALL || m <= SMALL) {
        return for_rows(c, n, team, m * k * n, |i, row| {
            let brow = |p: usize| &b.data[p * b.rs..p * b.rs + n];
            scale_into(a.data[i * a.rs], brow(0), row);
            for p in 1..k {
                axpy(a.data[i * a.rs + p * a.cs], brow(p), row);
            }
        });
    }
    // Each element is a dot product of contiguous vectors: dot form.
    if a.cs == 1 && b.rs == 1 && m <= SMALL {
        return for_rows(c, n, team, m * k * n, |i, row| {
            let ai = &a.data[i * a.rs..i * a.rs + k];
            for (j, cij) in row.iter_mut().enumerate() {
                *cij = dot(ai, &b.data[j * b.cs..j * b.cs + k]);
            }
        });
    }
    split(c, m, n, team, m * k * n, &|rows, cols, c| {
        // SAFETY: the views' extents were checked by their constructors; the block is inside C.
        unsafe { sgemm(a, b, rows, cols, c, n) }
    });
}

/// Calls `f(rows, cols, pointer to C[rows.start][cols.start])` on blocks of C (m x n, row-major)
/// that cover it once: one block, or one per team member when `macs` pays for the hand-off,
/// split by rows or by columns (whichever is longer, columns in whole 16-wide tiles).
fn split(
    c: &mut [f32],
    m: usize,
    n: usize,
    team: &Team,
    macs: usize,
    f: &(dyn Fn(Range<usize>, Range<usize>, *mut f32) + Sync),
) {
    let parts = if macs >= PARALLEL_MIN_MACS { team.size() } else { 1 };
    let base = SendPtr(c.as_mut_ptr());
    if parts == 1 {
        f(0..m, 0..n, base.0);
    } else if m >= n {
        let per = m.div_ceil(parts);
        team.run(m.div_ceil(per), &|t| {
            let rows = t * per..((t + 1) * per).min(m);
            let base = &base;
            // Each task writes only its own rows of C.
            f(rows.clone(), 0..n, base.0.wrapping_add(rows.start * n));
        });
    } else {
        let per = n.div_ceil(parts).div_ceil(16) * 16;
        team.run(n.div_ceil(per), &|t| {
            let cols = t * per..((t + 1) * per).min(n);
            let base = &base;
            // Each task writes only its own columns of C; the ranges are disjoint.
            f(0..m, cols.clone(), base.0.wrapping_add(cols.start));
        });
    }
}

/// Rows `rows`, columns `cols` of a · b into `c` (row stride `ldc`) with the AVX2 kernels.
///
/// SAFETY: AVX2 and FMA present; either a.cs == 1 and b.rs == 1, or b.cs == 1; `c` valid for
/// writes of that block at stride `ldc`.
#[cfg(target_arch = "x86_64")]
unsafe fn avx_block(a: View, b: View, rows: Range<usize>, cols: Range<usize>, c: *mut f32, ldc: usize) {
    let (k, r0, c0) = (a.cols, rows.start, cols.start);
    let (pa, pb) = (a.data.as_ptr().wrapping_add(r0 * a.rs), b.data.as_ptr().wrapping_add(c0 * b.cs));
    // SAFETY: offsets stay inside the views' data, as the caller's ranges stay inside C's shape.
    unsafe {
        if a.cs == 1 && b.rs == 1 && k <= NT_AS_NN_MAX_K {
            // A short sum per element: each of nt's dot products would end in a horizontal sum
            // as long as itself. Copy B's columns, a chunk at a time, into rows [k][chunk] and
            // take the broadcast form instead (docs/kernels.md, "AVX-512"). Taken whatever the
            // number of rows or columns, so that an element's sum runs in one order at every
            // batch size and task split: eval then scores exactly what train did.
            let chunk = NT_AS_NN_VALUES / k;
            // Left uninitialised: the loop writes every value the product reads (k·nc of them).
            let mut bt = std::mem::MaybeUninit::<[f32; NT_AS_NN_VALUES]>::uninit();
            let bp = bt.as_mut_ptr().cast::<f32>();
            for start in cols.clone().step_by(chunk) {
                let part = start..(start + chunk).min(cols.end);
                let nc = part.len();
                for (j, col) in part.enumerate() {
                    for (p, &v) in b.data[col * b.cs..col * b.cs + k].iter().enumerate() {
                        bp.add(p * nc + j).write(v);
                    }
                }
                super::avx::nn(rows.len(), nc, k, pa, a.rs, 1, bp, nc, c.add(start - c0), ldc)
            }
        } else if a.cs == 1 && b.rs == 1 {
            super::avx::nt(rows.len(), cols.len(), k, pa, a.rs, pb, b.cs, c, ldc)
        } else {
            super::avx::nn(rows.len(), cols.len(), k, pa, a.rs, a.cs, pb, b.rs, c, ldc)
        }
    }
}

struct SendPtr(*mut f32);
// SAFETY: the pointer is only used for disjoint writes, one range per task.
unsafe impl Sync for SendPtr {}

/// Rows `rows`, columns `cols` of a · b into `c` (row stride `ldc`), on this thread.
///
/// SAFETY: `c` must be valid for writes of that block at stride `ldc`.
unsafe fn sgemm(a: View, b: View, rows: Range<usize>, cols: Range<usize>, c: *mut f32, ldc: usize) {
    let (k, r0, c0) = (a.cols, rows.start, cols.start);
    let (pa, pb) = (a.data.as_ptr().wrapping_add(r0 * a.rs), b.data.as_ptr().wrapping_add(c0 * b.cs));
    // SAFETY: offsets stay inside the views' data, as the caller's ranges stay inside C's shape.
    unsafe {
        matrixmultiply::sgemm(
            rows.len(),
            k,
            cols.len(),
            1.0,
            pa,
            a.rs as isize,
            a.cs as isize,
            pb,
            b.rs as isize,
            b.cs as isize,
            0.0,
            c,
            ldc as isize,
            1,
        )
    }
}

// matrixmultiply was measured against the gemm crate for the products the small kernels do not
// take, in the engine, same sitting, 2 threads (samples/s, two alternations): 784-800-10 B=128
// 40.7K/36.6K against 37.1K/36.6K, 784-256-128-100-10 B=128 92.9K/95.0K against 87.8K/89.5K.
// matrixmultiply is as fast or faster and allocates less; see docs/kernels.md.

/// Runs `f(i, row_i)` over the rows of `c`, split across the team when `macs` is large.
fn for_rows(c: &mut [f32], n: usize, team: &Team, macs: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    let rows = c.len() / n;
    let parts = if macs >= PARALLEL_MIN_MACS { team.size().min(rows) } else { 1 };
    if parts <= 1 {
        for (i, row) in c.chunks_exact_mut(n).enumerate() {
            f(i, row);
        }
        return;
    }
    let per = rows.div_ceil(parts);
    let base = SendPtr(c.as_mut_ptr());
    team.run(rows.div_ceil(per), &|t| {
        let base = &base;
        for i in t * per..((t + 1) * per).min(rows) {
            // SAFETY: each task touches only its own rows, each row n values inside `c`.
            let row = unsafe { std::slice::from_raw_parts_mut(base.0.add(i * n), n) };
            f(i, row);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: View, b: View) -> Vec<f32> {
        let mut c = vec![0.0; a.rows * b.cols];
        for i in 0..a.rows {
            for j in 0..b.cols {
                c[i * b.cols + j] = (0..a.cols)
                    .map(|p| a.data[i * a.rs + p * a.cs] as f64 * b.data[p * b.rs + j * b.cs] as f64)
                    .sum::<f64>() as f32;
            }
        }
        c
    }

    #[test]
    fn every_path_matches_naive() {
        let team = Team::new(2, || {}).unwrap();
        let solo = Team::new(1, || {}).unwrap();
        let shapes = [
            (1, 784, 30),
            (3, 30, 30),
            (32, 784, 30),
            (30, 2, 784),
            (200, 300, 100),
            (20, 50, 700),
            (5, 1, 9),
            (7, 13, 17),
            (13, 9, 23),
            (32, 30, 30),
            (128, 30, 10),
            (8, 64, 64),
            (300, 64, 60),
        ];
        for (m, k, n) in shapes {
            let a: Vec<f32> = (0..m * k).map(|i| ((i * 7 % 13) as f32 - 6.0) / 7.0).collect();
            let b: Vec<f32> = (0..k * n).map(|i| ((i * 5 % 11) as f32 - 5.0) / 5.0).collect();
            let views = [
                (View::rows(&a, m, k), View::rows(&b, k, n)),
                (View::rows(&a, m, k), View::transposed(&b, n, k)),
                (View::transposed(&a, k, m), View::rows(&b, k, n)),
            ];
            for (va, vb) in views {
                let want = naive(va, vb);
                let kernels: &[Kernel] = if crate::engine::simd::has_avx2_fma() {
                    &[Kernel::Auto, Kernel::Crate, Kernel::Avx]
                } else {
                    &[Kernel::Auto, Kernel::Crate]
                };
                for (threads, team, &kernel) in
                    [(1, &solo), (2, &team)].into_iter().flat_map(|(t, team)| kernels.iter().map(move |k| (t, team, k)))
                {
                    let mut c = vec![f32::NAN; m * n];
                    matmul_with(kernel, va, vb, &mut c, team);
                    for (x, y) in c.iter().zip(&want) {
                        assert!(
                            (x - y).abs() <= 1e-4 * (1.0 + y.abs()),
                            "{m}x{k}x{n} threads {threads} {kernel:?}: {x} vs {y}"
                        );
                    }
                }
            }
        }
    }
}
