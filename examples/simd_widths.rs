//! Times the hand-written kernels that the suite's small networks spend their time in, on the
//! kernel path `FLOPNET_SIMD` names (the widest the CPU has by default), one thread. Run it once
//! per path and compare the lines (docs/kernels.md, "AVX-512"):
//!
//!     for p in avx2 avx512; do FLOPNET_SIMD=$p cargo run --release --example simd_widths; done
//!
//! Each figure is the fastest of repeated batches of calls over about 0.2 s (on a shared machine
//! the least-disturbed batch is the best estimate of the code's own speed), in ns per call and
//! GFLOP/s where the kernel does arithmetic.

use flopnet::engine::gemm::{Kernel, View, matmul_with};
use flopnet::engine::kernels;
use flopnet::engine::pool::{self, PoolShape};
use flopnet::engine::simd;
use flopnet::engine::team::Team;
use std::hint::black_box;
use std::time::Instant;

fn best_ns(mut f: impl FnMut()) -> f64 {
    for _ in 0..100 {
        f();
    }
    let start = Instant::now();
    let mut best = f64::INFINITY;
    while start.elapsed().as_secs_f64() < 0.2 {
        let t = Instant::now();
        for _ in 0..20 {
            f();
        }
        best = best.min(t.elapsed().as_secs_f64() / 20.0);
    }
    best * 1e9
}

fn main() {
    let team = Team::new(1, simd::flush_denormals).expect("a thread starts");
    simd::flush_denormals();
    let ceiling = simd::fma_ceiling(&team);
    println!("kernel path {}, FMA ceiling {ceiling:.0} GFLOP/s on one thread", simd::path());
    // The three products of 784-30-30-10's layers, as the engine calls them (W stored [out][in]).
    for (batch, inputs, outputs) in [(1, 784, 30), (32, 784, 30), (128, 784, 30), (32, 30, 30), (32, 30, 10)] {
        let x: Vec<f32> = (0..batch * inputs).map(|i| (i % 17) as f32 / 17.0).collect();
        let w: Vec<f32> = (0..outputs * inputs).map(|i| (i % 13) as f32 / 13.0 - 0.5).collect();
        let d: Vec<f32> = (0..batch * outputs).map(|i| (i % 7) as f32 / 7.0 - 0.5).collect();
        let mut z = vec![0f32; batch * outputs];
        let mut dw = vec![0f32; outputs * inputs];
        let mut dx = vec![0f32; batch * inputs];
        let flops = 2.0 * (batch * inputs * outputs) as f64;
        let k = Kernel::Auto;
        let fwd = best_ns(|| {
            matmul_with(k, View::rows(&x, batch, inputs), View::transposed(&w, outputs, inputs), &mut z, &team)
        });
        let wg = best_ns(|| {
            matmul_with(k, View::transposed(&d, batch, outputs), View::rows(&x, batch, inputs), &mut dw, &team)
        });
        let ig =
            best_ns(|| matmul_with(k, View::rows(&d, batch, outputs), View::rows(&w, outputs, inputs), &mut dx, &team));
        println!(
            "{batch}x{inputs}->{outputs}: forward {fwd:.0} ns ({:.1} GFLOP/s), weight grad {wg:.0} ns ({:.1}), input grad {ig:.0} ns ({:.1})",
            flops / fwd,
            flops / wg,
            flops / ig
        );
    }
    // Bias and activation over a product's output: 784-30-30-10's hidden layers (sigmoid, 30
    // wide) and output (softmax, 10 wide), batch 128.
    for (act, m) in [(flopnet::spec::Activation::Sigmoid, 30), (flopnet::spec::Activation::Softmax, 10)] {
        let bias: Vec<f32> = (0..m).map(|i| i as f32 * 0.01).collect();
        let mut out: Vec<f32> = (0..128 * m).map(|i| ((i % 19) as f32 - 9.0) * 0.1).collect();
        let keep = out.clone();
        let t = best_ns(|| {
            out.copy_from_slice(&keep);
            flopnet::engine::activation::bias_forward(act, &mut out, &bias);
        });
        println!("bias + {act} over 128x{m}: {t:.0} ns ({:.2} ns a value, the copy included)", t / (128 * m) as f64);
    }
    // The elementwise kernels at 784-30-30-10's sizes: its 24K-parameter momentum update, the
    // one-example fused update of its first layer's rows, a dot product over 784 values.
    let n = 784 * 30 + 30 * 30 + 300 + 70;
    let (mut p, mut v, g) = (vec![0.5f32; n], vec![0.0f32; n], vec![1e-3f32; n]);
    let t = best_ns(|| kernels::momentum(&mut p, &mut v, &g, 0.01, 0.9));
    println!("momentum update of {n} parameters: {t:.0} ns ({:.2} ns per 1K)", t / n as f64 * 1e3);
    let x: Vec<f32> = (0..784).map(|i| i as f32 / 784.0).collect();
    let (mut w, mut v) = (vec![0.5f32; 784 * 30], vec![0f32; 784 * 30]);
    let t = best_ns(|| {
        for (w, v) in w.chunks_exact_mut(784).zip(v.chunks_exact_mut(784)) {
            kernels::momentum_outer(w, v, &x, 0.01, 0.01, 0.9);
        }
    });
    println!("fused one-example momentum update of a 784x30 layer: {t:.0} ns");
    let t = best_ns(|| {
        black_box(kernels::dot(black_box(&x), black_box(&w[..784])));
    });
    println!("dot of 784 values: {t:.1} ns ({:.1} GFLOP/s)", 2.0 * 784.0 / t);
    // The 2×2 max pools of CNN f (batch 128): 16x26x26 and 32x11x11, forward (maximum and
    // argmax); GB/s of input read plus output and argmax written.
    for (c, side) in [(16, 26), (32, 11)] {
        let sh = PoolShape { c, h: side, w: side, k: 2, s: 2, oh: side / 2, ow: side / 2 };
        let batch = 128;
        let x: Vec<f32> = (0..batch * c * side * side).map(|i| ((i * 37) % 101) as f32).collect();
        let outs = batch * c * sh.oh * sh.ow;
        let (mut y, mut arg) = (vec![0f32; outs], vec![0u32; outs]);
        let t = best_ns(|| pool::max_forward(&sh, batch, &x, &mut y, &mut arg, &team));
        let bytes = 4.0 * (x.len() + 2 * outs) as f64;
        println!("max pool 2x2 of {c}x{side}x{side}, batch {batch}: {:.1} µs ({:.1} GB/s)", t / 1e3, bytes / t);
    }
}
