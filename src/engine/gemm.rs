//! C = A · B for the engine: `matrixmultiply` for real matrices, the small kernels for products
//! where one side is a handful of rows, and the output split across threads when the work pays.
//!
//! Threads split C by rows or columns, never the summed dimension, so every element is summed
//! in the same order whatever the thread count: a run is bitwise repeatable.

use super::kernels::{axpy, dot};
use rayon::prelude::*;
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

/// Below this many multiply-adds a product stays on one thread: waking another costs more.
pub const PARALLEL_MIN_MACS: usize = 1 << 17;

/// At most this many rows (or summed terms) take the small-kernel path instead of the crate.
pub const SMALL: usize = 4;

/// c (row-major, a.rows x b.cols) = a · b. `threads` > 1 allows splitting when it pays; the
/// caller must be inside the engine's thread pool for the split to use it.
pub fn matmul(a: View, b: View, c: &mut [f32], threads: usize) {
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
    // Each row of C is a combination of contiguous rows of B: axpy form.
    if b.cs == 1 && (k <= SMALL || m <= SMALL) {
        return for_rows(c, n, threads, m * k * n, |i, row| {
            row.fill(0.0);
            for p in 0..k {
                axpy(a.data[i * a.rs + p * a.cs], &b.data[p * b.rs..p * b.rs + n], row);
            }
        });
    }
    // Each element is a dot product of contiguous vectors: dot form.
    if a.cs == 1 && b.rs == 1 && m <= SMALL {
        return for_rows(c, n, threads, m * k * n, |i, row| {
            let ai = &a.data[i * a.rs..i * a.rs + k];
            for (j, cij) in row.iter_mut().enumerate() {
                *cij = dot(ai, &b.data[j * b.cs..j * b.cs + k]);
            }
        });
    }
    let parts = if m * k * n >= PARALLEL_MIN_MACS { threads.max(1) } else { 1 };
    if parts == 1 {
        // SAFETY: the views' extents were checked by their constructors and `c` holds m*n.
        unsafe { sgemm(a, b, 0..m, 0..n, c.as_mut_ptr(), n) };
    } else if m >= n {
        let per = m.div_ceil(parts);
        c.par_chunks_mut(per * n).enumerate().for_each(|(t, chunk)| {
            let r0 = t * per;
            let rows = chunk.len() / n;
            // SAFETY: each task writes only its own rows of C.
            unsafe { sgemm(a, b, r0..r0 + rows, 0..n, chunk.as_mut_ptr(), n) };
        });
    } else {
        // Split by columns, rounded to whole 16-wide kernel tiles.
        let per = n.div_ceil(parts).div_ceil(16) * 16;
        let base = SendPtr(c.as_mut_ptr());
        (0..n.div_ceil(per)).into_par_iter().for_each(|t| {
            let c0 = t * per;
            let cols = per.min(n - c0);
            let base = &base;
            // SAFETY: each task writes only columns c0..c0+cols of C; the ranges are disjoint.
            unsafe { sgemm(a, b, 0..m, c0..c0 + cols, base.0.add(c0), n) };
        });
    }
}

struct SendPtr(*mut f32);
// SAFETY: the pointer is only used for disjoint writes, one range per task.
unsafe impl Sync for SendPtr {}

/// Rows `rows`, columns `cols` of a · b into `c` (row stride `ldc`).
///
/// SAFETY: `c` must be valid for writes of that block at stride `ldc`.
unsafe fn sgemm(a: View, b: View, rows: Range<usize>, cols: Range<usize>, c: *mut f32, ldc: usize) {
    let (k, r0, c0) = (a.cols, rows.start, cols.start);
    // SAFETY: offsets stay inside the views' data, as the caller's ranges stay inside C's shape.
    unsafe {
        matrixmultiply::sgemm(
            rows.len(),
            k,
            cols.len(),
            1.0,
            a.data.as_ptr().add(r0 * a.rs),
            a.rs as isize,
            a.cs as isize,
            b.data.as_ptr().add(c0 * b.cs),
            b.rs as isize,
            b.cs as isize,
            0.0,
            c,
            ldc as isize,
            1,
        )
    }
}

/// Runs `f(i, row_i)` over the rows of `c`, split across threads when `macs` is large.
fn for_rows(c: &mut [f32], n: usize, threads: usize, macs: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    if threads > 1 && macs >= PARALLEL_MIN_MACS && c.len() / n > 1 {
        let per = (c.len() / n).div_ceil(threads);
        c.par_chunks_mut(per * n).enumerate().for_each(|(t, chunk)| {
            for (r, row) in chunk.chunks_exact_mut(n).enumerate() {
                f(t * per + r, row);
            }
        });
    } else {
        for (i, row) in c.chunks_exact_mut(n).enumerate() {
            f(i, row);
        }
    }
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
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        let shapes =
            [(1, 784, 30), (3, 30, 30), (32, 784, 30), (30, 2, 784), (200, 300, 100), (20, 50, 700), (5, 1, 9)];
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
                for threads in [1, 2] {
                    let mut c = vec![f32::NAN; m * n];
                    pool.install(|| matmul(va, vb, &mut c, threads));
                    for (x, y) in c.iter().zip(&want) {
                        assert!((x - y).abs() <= 1e-4 * (1.0 + y.abs()), "{m}x{k}x{n} threads {threads}: {x} vs {y}");
                    }
                }
            }
        }
    }
}
