//! Times the products and passes of the engine's convolutions at the benchmark suite's shapes:
//! `cargo run --release --example conv_shapes [threads]` (docs/kernels.md, "Convolutions"), on
//! the kernel path `FLOPNET_SIMD` names (the widest the CPU has by default), beside that path's
//! FMA ceiling. `CONV_ONLY="e conv2"` times one shape; `CONV_ENGINE=1` the engine's own choice of
//! kernels alone (no older tilings, no sparse δ); `CONV_COLD=1` writes 64 MB between calls, so
//! each starts from memory as inside a training step (whose tensors outgrow the cache).

use flopnet::engine::conv::{self, ConvShape, Tiles};
use flopnet::engine::gemm::{Kernel, View, matmul_with};
use flopnet::engine::team::Team;
use flopnet::spec::{Activation, Conv, Kind, Layer, Padding, Shape};
use std::time::Instant;

#[path = "common/cpu.rs"]
mod cpu;
use cpu::cpu_now;

/// The fastest of single calls over about 0.3 s: on this shared VM the least-disturbed call is
/// the best estimate of the code's own speed (medians move with the neighbours' load). With
/// CONV_CPU=1 (one thread only) the calling thread's CPU time instead of the wall clock, which
/// time spent descheduled does not inflate.
fn time(mut f: impl FnMut()) -> f64 {
    let cpu = std::env::var("CONV_CPU").is_ok_and(|v| v == "1");
    let now =
        || if cpu { cpu_now() } else { Instant::now().duration_since(*START.get_or_init(Instant::now)).as_secs_f64() };
    f();
    let start = Instant::now();
    let mut best = f64::INFINITY;
    let mut calls = 0;
    let cold = std::env::var("CONV_COLD").is_ok_and(|v| v == "1");
    let mut flush = if cold { vec![1f32; 16 << 20] } else { Vec::new() };
    while calls < 5 || start.elapsed().as_secs_f64() < 0.3 {
        // CONV_COLD=1: 64 MB written between calls, twice the last-level cache, so each call
        // starts from memory as it does inside a training step.
        flush.iter_mut().for_each(|v| *v += 1.0);
        std::hint::black_box(&flush);
        let t = now();
        f();
        best = best.min(now() - t);
        calls += 1;
    }
    best
}

static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

/// A direct convolution (stride 1), the alternative to im2col: for each filter, example and
/// output row, a sum over (c, i, j) of the weight times a shifted input row (an axpy the
/// compiler vectorises), filters split across the team.
fn direct_forward(sh: &ConvShape, batch: usize, x: &[f32], w: &[f32], b: &[f32], z: &mut [f32], team: &Team) {
    struct P(*mut f32);
    unsafe impl Sync for P {}
    let (plane, oplane, ckk) = (sh.h * sh.w, sh.oh * sh.ow, sh.ckk());
    let zp = P(z.as_mut_ptr());
    let per = sh.f.div_ceil(team.size());
    team.run(sh.f.div_ceil(per), &|t| {
        let zp = &zp;
        for f in t * per..((t + 1) * per).min(sh.f) {
            // SAFETY: filter f's rows are this task's.
            let zf = unsafe { std::slice::from_raw_parts_mut(zp.0.add(f * batch * oplane), batch * oplane) };
            for e in 0..batch {
                for oy in 0..sh.oh {
                    let out = &mut zf[e * oplane + oy * sh.ow..e * oplane + (oy + 1) * sh.ow];
                    out.fill(b[f]);
                    for c in 0..sh.c {
                        let xe = &x[(c * batch + e) * plane..(c * batch + e + 1) * plane];
                        for i in 0..sh.kh {
                            let iy = oy + i;
                            if iy < sh.ph || iy - sh.ph >= sh.h {
                                continue;
                            }
                            let xr = &xe[(iy - sh.ph) * sh.w..(iy - sh.ph + 1) * sh.w];
                            for j in 0..sh.kw {
                                let wv = w[f * ckk + (c * sh.kh + i) * sh.kw + j];
                                let lo = sh.pw.saturating_sub(j);
                                let hi = (sh.w + sh.pw - j).min(sh.ow);
                                for (o, &v) in out[lo..hi].iter_mut().zip(&xr[lo + j - sh.pw..]) {
                                    *o += wv * v;
                                }
                            }
                        }
                    }
                }
            }
        }
    });
}

fn main() {
    let threads: usize = std::env::args().nth(1).map(|s| s.parse().unwrap()).unwrap_or(2);
    // `all`: also the untiled products, the direct loop and every older tiling.
    let all = std::env::args().nth(2).is_some_and(|a| a == "all");
    let team = Team::new(threads, flopnet::engine::simd::flush_denormals).unwrap();
    flopnet::engine::simd::flush_denormals();
    // (name, input, conv, batch)
    let cases = [
        ("e conv1", Shape::new(1, 28, 28), (5, 32, 2), 64),
        ("e conv2", Shape::new(32, 14, 14), (5, 64, 2), 64),
        ("e conv2 transposed", Shape::new(64, 14, 14), (5, 32, 2), 64),
        ("f conv1", Shape::new(1, 28, 28), (3, 16, 0), 128),
        ("f conv2", Shape::new(16, 13, 13), (3, 32, 0), 128),
        // resnet20's first layer and its three stride-1 3x3 convolutions at batch 128.
        ("r3 stem", Shape::new(3, 32, 32), (3, 16, 1), 128),
        ("r16", Shape::new(16, 32, 32), (3, 16, 1), 128),
        ("r32", Shape::new(32, 16, 16), (3, 32, 1), 128),
        ("r64", Shape::new(64, 8, 8), (3, 64, 1), 128),
    ];
    // resnet18's convolutions at 3x224x224, batch 8 (inference): (kernel, filters, padding,
    // stride).
    let resnet18 = [
        ("rn18 stem", Shape::new(3, 224, 224), (7, 64, 3, 2)),
        ("rn18 l1", Shape::new(64, 56, 56), (3, 64, 1, 1)),
        ("rn18 l2 s2", Shape::new(64, 56, 56), (3, 128, 1, 2)),
        ("rn18 l2 down", Shape::new(64, 56, 56), (1, 128, 0, 2)),
        ("rn18 l2", Shape::new(128, 28, 28), (3, 128, 1, 1)),
        ("rn18 l3 s2", Shape::new(128, 28, 28), (3, 256, 1, 2)),
        ("rn18 l3 down", Shape::new(128, 28, 28), (1, 256, 0, 2)),
        ("rn18 l3", Shape::new(256, 14, 14), (3, 256, 1, 1)),
        ("rn18 l4 s2", Shape::new(256, 14, 14), (3, 512, 1, 2)),
        ("rn18 l4 down", Shape::new(256, 14, 14), (1, 512, 0, 2)),
        ("rn18 l4", Shape::new(512, 7, 7), (3, 512, 1, 1)),
    ];
    // resnet20's two stride-2 3x3 convolutions at batch 128: (kernel, filters, padding, stride).
    let resnet20_strided =
        [("r32 s2", Shape::new(16, 32, 32), (3, 32, 1, 2)), ("r64 s2", Shape::new(32, 16, 16), (3, 64, 1, 2))];
    let cases = cases
        .into_iter()
        .map(|(name, input, (k, f, p), batch)| (name, input, (k, f, p, 1), batch))
        .chain(resnet20_strided.into_iter().map(|(name, input, conv)| (name, input, conv, 128)))
        .chain(resnet18.into_iter().map(|(name, input, conv)| (name, input, conv, 8)));
    // CONV_FORWARD=1: the forward passes only.
    let forward_only = std::env::var("CONV_FORWARD").is_ok_and(|v| v == "1");
    let engine_only = std::env::var("CONV_ENGINE").is_ok_and(|v| v == "1");
    let ceiling = flopnet::engine::simd::fma_ceiling(&team);
    let path = flopnet::engine::simd::path();
    println!(
        "threads {threads}, kernel path {path}, FMA ceiling {ceiling:.0} GFLOP/s (a tight {}-bit FMA loop)",
        path.bits()
    );
    // CONV_ONLY=<name part> limits the shapes (for profiling one of them).
    let only = std::env::var("CONV_ONLY").unwrap_or_default();
    for (name, input, (k, f, p, stride), batch) in cases {
        if !name.contains(only.as_str()) {
            continue;
        }
        let cv = Conv::plain(k, k, f, stride, Padding::Fixed(p));
        let layer = Layer::after(input, Kind::Conv2d(cv), 0, Activation::Relu).unwrap();
        let sh = ConvShape::of(&layer).unwrap();
        let (ckk, n) = (sh.ckk(), batch * sh.oh * sh.ow);
        let x: Vec<f32> = (0..batch * input.size()).map(|i| (i % 17) as f32 / 17.0).collect();
        let w: Vec<f32> = (0..f * ckk).map(|i| (i % 13) as f32 / 13.0 - 0.5).collect();
        let b = vec![0.1f32; f];
        let mut col = vec![0.0f32; ckk * n];
        let mut z = vec![0.0f32; f * n];
        let mut dw = vec![0.0f32; f * ckk];
        let mut db = vec![0.0f32; f];
        let mut dx = vec![0.0f32; x.len()];
        let gf = |macs: usize, s: f64| 2.0 * macs as f64 / s / 1e9;
        let macs = f * ckk * n;
        println!("{name}: F={f} CKK={ckk} N={n}");
        if all {
            let t_im2col = time(|| conv::im2col(&sh, batch, &x, &mut col));
            println!("  whole-matrix im2col {:.2} ms (1 thread)", t_im2col * 1e3);
            for kern in [Kernel::Crate, Kernel::Avx] {
                let t_f = time(|| matmul_with(kern, View::rows(&w, f, ckk), View::rows(&col, ckk, n), &mut z, &team));
                let d = z.clone();
                let t_w =
                    time(|| matmul_with(kern, View::rows(&d, f, n), View::transposed(&col, ckk, n), &mut dw, &team));
                let t_x =
                    time(|| matmul_with(kern, View::transposed(&w, f, ckk), View::rows(&d, f, n), &mut col, &team));
                println!(
                    "  untiled {kern:?}: fwd {:.2} ms ({:.0} GF/s)  dW {:.2} ms ({:.0})  dcol {:.2} ms ({:.0})",
                    t_f * 1e3,
                    gf(macs, t_f),
                    t_w * 1e3,
                    gf(macs, t_w),
                    t_x * 1e3,
                    gf(macs, t_x)
                );
            }
            let _ = &mut db;
            let t_direct = time(|| direct_forward(&sh, batch, &x, &w, &b, &mut z, &team));
            println!("  direct forward {:.2} ms ({:.0} GF/s)", t_direct * 1e3, gf(macs, t_direct));
        }
        let d = z.clone();
        let configs = vec![
            (Kernel::Crate, Kernel::Avx, 1 << 15), // the engine before the packed kernel (CKK > 64)
            (Kernel::Avx, Kernel::Avx, 1 << 15),   // the engine before the packed kernel (CKK ≤ 64)
            (Kernel::Packed, Kernel::Packed, 1 << 15),
            (Kernel::Packed, Kernel::Packed, 1 << 16),
            (Kernel::Packed, Kernel::Packed, 1 << 17),
        ];
        let mut configs: Vec<_> = configs.into_iter().map(|(k, d, t)| (k, d, t, false)).collect();
        // CONV_ENGINE=1: the engine's choice alone (for profiling its kernels).
        if engine_only {
            configs.clear();
        }
        // The engine's choice: the weight gradient on shifted rows where the stride is 1.
        configs.push((Kernel::Packed, Kernel::Packed, 1 << 15, true));
        if all {
            for kernel in [Kernel::Crate, Kernel::Avx] {
                for dw_kernel in [Kernel::Crate, Kernel::Avx] {
                    for tile_values in [1 << 15, 1 << 17, 1 << 19] {
                        configs.push((kernel, dw_kernel, tile_values, false));
                    }
                }
            }
        }
        {
            for (kernel, dw_kernel, tile_values, shifted) in configs {
                {
                    let tiles = Tiles { kernel, dw_kernel, tile_values, sparse: false, shifted };
                    let mut scratch = vec![0.0f32; tiles.total(&sh, batch, threads)];
                    let t_fwd = time(|| {
                        conv::conv_forward_with(
                            tiles,
                            &sh,
                            batch,
                            Activation::Relu,
                            &x,
                            &w,
                            &b,
                            &mut scratch,
                            &mut z,
                            &team,
                        )
                    });
                    if forward_only {
                        println!(
                            "  tiled fwd {kernel:?} tile {tile_values}: forward {:.3} ms ({:.0} GF/s, {:.0}% of the ceiling)",
                            t_fwd * 1e3,
                            gf(macs, t_fwd),
                            100.0 * gf(macs, t_fwd) / ceiling
                        );
                        continue;
                    }
                    let t_bw = time(|| {
                        conv::conv_backward_with(
                            tiles,
                            &sh,
                            batch,
                            &x,
                            &w,
                            &d,
                            &mut dw,
                            &mut db,
                            &mut scratch,
                            conv::Dx::Skip,
                            &team,
                        )
                    });
                    let t_bwd = time(|| {
                        conv::conv_backward_with(
                            tiles,
                            &sh,
                            batch,
                            &x,
                            &w,
                            &d,
                            &mut dw,
                            &mut db,
                            &mut scratch,
                            conv::Dx::Write(&mut dx),
                            &team,
                        )
                    });
                    println!(
                        "  tiled fwd {kernel:?} dW {}{dw_kernel:?} tile {tile_values} (g={}): forward {:.2} ms ({:.0} GF/s, {:.0}% of the ceiling), dW+db {:.2} ms ({:.0}), dX {:.2} ms ({:.0})",
                        if tiles.shifted { "shifted rows where taken, else " } else { "" },
                        tiles.group(&sh),
                        t_fwd * 1e3,
                        gf(macs, t_fwd),
                        100.0 * gf(macs, t_fwd) / ceiling,
                        t_bw * 1e3,
                        gf(macs, t_bw),
                        (t_bwd - t_bw) * 1e3,
                        gf(macs, t_bwd - t_bw)
                    );
                }
            }
        }
        // The backward with δ mostly zero (as behind a max pool and a relu): the engine's
        // kernels with and without the sparse path, at a few shares of nonzero values.
        for density in [0.05, 0.1, 0.2, 0.3].into_iter().filter(|_| !forward_only && !engine_only) {
            let d: Vec<f32> = (0..f * n)
                .map(|i| if (i.wrapping_mul(2654435761) >> 7) % 1000 < (density * 1000.0) as usize { 0.5 } else { 0.0 })
                .collect();
            let mut row = format!("  δ {:>2.0}% nonzero:", density * 100.0);
            for sparse in [false, true] {
                let tiles = Tiles { sparse, ..Tiles::for_shape(&sh) };
                let mut scratch = vec![0.0f32; tiles.total(&sh, batch, threads)];
                let mut backward = |dx: conv::Dx| {
                    conv::conv_backward_with(tiles, &sh, batch, &x, &w, &d, &mut dw, &mut db, &mut scratch, dx, &team)
                };
                let t_bw = time(|| backward(conv::Dx::Skip));
                let t_bwd = time(|| backward(conv::Dx::Write(&mut dx)));
                let what = if sparse { "sparse" } else { "dense" };
                row += &format!("  {what} dW+db {:.2} ms, dX {:.2} ms;", t_bw * 1e3, (t_bwd - t_bw) * 1e3);
            }
            println!("{row}");
        }
    }
}
