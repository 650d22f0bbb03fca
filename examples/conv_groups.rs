//! Times the engine's grouped, depthwise and 1×1 convolutions and a strided 3×3 at the shapes
//! of mobilenet_v2 (3x64x64, batch 32) and resnet18 (3x224x224, batch 8):
//! `cargo run --release --example conv_groups [threads]`, on the kernel path `FLOPNET_SIMD`
//! names. Per pass: the median and the fastest of the calls made in about 0.3 s, GFLOP/s as
//! 2·multiply-adds over the median and, for the depthwise layers, GB/s as the bytes each pass
//! must read and write once (forward x, w, z; backward x, w, δ, dW, dx) over the median.
//! `bench/conv_groups.py` times the same layers in PyTorch. `CONV_ONLY=<name part>` limits the
//! shapes; `CONV_CPU=1` with one thread times the thread's CPU time.

use flopnet::engine::conv::{self, ConvShape};
use flopnet::engine::team::Team;
use flopnet::spec::{Activation, Conv, Kind, Layer, Padding, Shape};
use std::time::Instant;

#[path = "common/cpu.rs"]
mod cpu;
use cpu::cpu_now;

/// (median, fastest) seconds of single calls over about 0.3 s (at least 5 calls); with
/// CONV_CPU=1 (one thread only) the thread's CPU time, which time spent descheduled by a
/// neighbour's load does not inflate.
fn time(mut f: impl FnMut()) -> (f64, f64) {
    let cpu = std::env::var("CONV_CPU").is_ok_and(|v| v == "1");
    let origin = Instant::now();
    let now = || if cpu { cpu_now() } else { origin.elapsed().as_secs_f64() };
    f();
    let start = Instant::now();
    let mut times = Vec::new();
    while times.len() < 5 || start.elapsed().as_secs_f64() < 0.3 {
        let t = now();
        f();
        times.push(now() - t);
    }
    times.sort_by(f64::total_cmp);
    (times[times.len() / 2], times[0])
}

fn main() {
    let threads: usize = std::env::args().nth(1).map(|s| s.parse().unwrap()).unwrap_or(2);
    let team = Team::new(threads, flopnet::engine::simd::flush_denormals).unwrap();
    flopnet::engine::simd::flush_denormals();
    let only = std::env::var("CONV_ONLY").unwrap_or_default();
    // (name, input C×H×W, kernel, filters, stride, padding, groups, batch)
    type Case = (&'static str, (usize, usize, usize), usize, usize, usize, usize, usize, usize);
    let cases: &[Case] = &[
        ("mbv2 dw 32x32x32 s1", (32, 32, 32), 3, 32, 1, 1, 32, 32),
        ("mbv2 dw 96x32x32 s2", (96, 32, 32), 3, 96, 2, 1, 96, 32),
        ("mbv2 dw 144x16x16 s1", (144, 16, 16), 3, 144, 1, 1, 144, 32),
        ("mbv2 dw 144x16x16 s2", (144, 16, 16), 3, 144, 2, 1, 144, 32),
        ("mbv2 dw 192x8x8 s1", (192, 8, 8), 3, 192, 1, 1, 192, 32),
        ("mbv2 dw 384x4x4 s1", (384, 4, 4), 3, 384, 1, 1, 384, 32),
        ("mbv2 dw 960x2x2 s1", (960, 2, 2), 3, 960, 1, 1, 960, 32),
        ("mbv2 1x1 16->96 32x32", (16, 32, 32), 1, 96, 1, 0, 1, 32),
        ("mbv2 1x1 96->24 16x16", (96, 16, 16), 1, 24, 1, 0, 1, 32),
        ("mbv2 1x1 144->24 16x16", (144, 16, 16), 1, 24, 1, 0, 1, 32),
        ("mbv2 1x1 24->144 16x16", (24, 16, 16), 1, 144, 1, 0, 1, 32),
        ("mbv2 1x1 192->32 8x8", (192, 8, 8), 1, 32, 1, 0, 1, 32),
        ("mbv2 1x1 384->64 4x4", (384, 4, 4), 1, 64, 1, 0, 1, 32),
        ("mbv2 1x1 576->96 4x4", (576, 4, 4), 1, 96, 1, 0, 1, 32),
        ("grouped g2 3x3 64->64 16x16", (64, 16, 16), 3, 64, 1, 1, 2, 32),
        // Few-channel groups (4 and 2 channels of 3×3: 36 and 18 window values).
        ("grouped g4 3x3 16->16 32x32", (16, 32, 32), 3, 16, 1, 1, 4, 32),
        ("grouped g8 3x3 16->16 32x32", (16, 32, 32), 3, 16, 1, 1, 8, 32),
        ("r18 3x3 s2 64->128 56x56", (64, 56, 56), 3, 128, 2, 1, 1, 8),
        ("r18 3x3 s2 128->256 28x28", (128, 28, 28), 3, 256, 2, 1, 1, 8),
        ("r18 3x3 s1 64->64 56x56", (64, 56, 56), 3, 64, 1, 1, 1, 8),
    ];
    let path = flopnet::engine::simd::path();
    println!("threads {threads}, kernel path {path}");
    println!(
        "layer | batch | forward ms median (fastest) GFLOP/s GB/s | backward (dW + dx) ms median (fastest) GFLOP/s GB/s"
    );
    for &(name, (c, h, w), k, f, stride, pad, groups, batch) in cases {
        if !name.contains(only.as_str()) {
            continue;
        }
        let cv = Conv { kh: k, kw: k, filters: f, stride, padding: Padding::Fixed(pad), groups, bias: false };
        let layer = Layer::after(Shape::new(c, h, w), Kind::Conv2d(cv), 0, Activation::Identity).unwrap();
        let sh = ConvShape::of(&layer).unwrap();
        let (ckk, n) = (sh.ckk(), batch * sh.oh * sh.ow);
        let x: Vec<f32> = (0..batch * c * h * w).map(|i| (i % 17) as f32 / 17.0).collect();
        let wt: Vec<f32> = (0..f * ckk).map(|i| (i % 13) as f32 / 13.0 - 0.5).collect();
        let mut z = vec![0.0f32; f * n];
        let mut dw = vec![0.0f32; f * ckk];
        let mut dx = vec![0.0f32; x.len()];
        let mut scratch = vec![0.0f32; conv::scratch_len([sh].into_iter(), batch, threads)];
        let macs = (f * ckk * n) as f64;
        let (fm, fb) =
            time(|| conv::conv_forward(&sh, batch, Activation::Identity, &x, &wt, &[], &mut scratch, &mut z, &team));
        let d: Vec<f32> = z.iter().map(|v| v * 1e-3).collect();
        let (bm, bb) = time(|| {
            conv::conv_backward(
                &sh,
                batch,
                &x,
                &wt,
                &d,
                &mut dw,
                &mut [],
                &mut scratch,
                conv::Dx::Write(&mut dx),
                &team,
            )
        });
        let gb = |values: usize, s: f64| 4.0 * values as f64 / s / 1e9;
        let (fwd_bytes, bwd_bytes) = (x.len() + wt.len() + z.len(), 2 * x.len() + 2 * wt.len() + d.len());
        println!(
            "{name} | {batch} | {:.3} ({:.3}) {:.0} {:.1} | {:.3} ({:.3}) {:.0} {:.1}",
            fm * 1e3,
            fb * 1e3,
            2.0 * macs / fm / 1e9,
            gb(fwd_bytes, fm),
            bm * 1e3,
            bb * 1e3,
            4.0 * macs / bm / 1e9,
            gb(bwd_bytes, bm),
        );
    }
}
