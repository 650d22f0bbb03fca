//! Times the engine's matrix product at the suite's large shapes, as the engine calls it:
//! forward z = X·Wᵀ (W stored [out][in]), weight gradient dW = deltaᵀ·X, input gradient dX = delta·W.
//! Prints one JSON object per line: op, m, k, n, threads, median GFLOP/s (2·m·k·n / time).
//!
//!     cargo run --release --example matmul -- [THREADS...]
//!
//! `bench/matmul_vs_openblas.py` runs this beside numpy's OpenBLAS at the same shapes.

use flopnet::engine::gemm::{View, matmul};
use flopnet::engine::team::Team;
use std::time::Instant;

/// (op, batch, inputs, outputs) of the suite's large layers.
const SHAPES: &[(&str, usize, usize, usize)] = &[
    ("forward", 128, 784, 800),
    ("forward", 256, 784, 800),
    ("forward", 32, 784, 800),
    ("forward", 128, 784, 256),
    ("weight_grad", 128, 784, 800),
    ("weight_grad", 256, 784, 800),
    ("weight_grad", 128, 784, 256),
    ("input_grad", 128, 256, 128),
    ("input_grad", 128, 800, 10),
];

fn main() {
    let threads: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let threads = if threads.is_empty() { vec![1, 2] } else { threads };
    for &t in &threads {
        let team = Team::new(t, flopnet::engine::simd::flush_denormals).expect("threads start");
        flopnet::engine::simd::flush_denormals();
        for &(op, b, n_in, n_out) in SHAPES {
            let x: Vec<f32> = (0..b * n_in).map(|i| (i % 17) as f32 / 17.0).collect();
            let w: Vec<f32> = (0..n_out * n_in).map(|i| (i % 13) as f32 / 13.0 - 0.5).collect();
            let d: Vec<f32> = (0..b * n_out).map(|i| (i % 7) as f32 / 7.0 - 0.5).collect();
            let (m, k, n, mut c) = match op {
                "forward" => (b, n_in, n_out, vec![0.0; b * n_out]),
                "weight_grad" => (n_out, b, n_in, vec![0.0; n_out * n_in]),
                _ => (b, n_out, n_in, vec![0.0; b * n_in]),
            };
            let mut call = || match op {
                "forward" => matmul(View::rows(&x, b, n_in), View::transposed(&w, n_out, n_in), &mut c, &team),
                "weight_grad" => matmul(View::transposed(&d, b, n_out), View::rows(&x, b, n_in), &mut c, &team),
                _ => matmul(View::rows(&d, b, n_out), View::rows(&w, n_out, n_in), &mut c, &team),
            };
            let t0 = Instant::now();
            let mut reps = 0;
            while reps < 3 || t0.elapsed().as_secs_f64() < 0.1 {
                call();
                reps += 1;
            }
            let per_run = (reps * 2).max(3);
            let mut rates: Vec<f64> = (0..11)
                .map(|_| {
                    let t = Instant::now();
                    for _ in 0..per_run {
                        call();
                    }
                    2.0 * (m * k * n) as f64 * per_run as f64 / t.elapsed().as_secs_f64() / 1e9
                })
                .collect();
            rates.sort_by(f64::total_cmp);
            println!(
                "{{\"op\":\"{op}\",\"m\":{m},\"k\":{k},\"n\":{n},\"batch\":{b},\"inputs\":{n_in},\"outputs\":{n_out},\"threads\":{t},\"gflops\":{:.2}}}",
                rates[rates.len() / 2]
            );
        }
    }
}
