//! A convolution's backward (weight and input gradient, dx written) timed as calibrate times its
//! references — the fastest of four runs of back-to-back calls, per call — with its buffers
//! starting at chosen byte offsets past a 64-byte cache line:
//! `cargo run --release --example scratch_offset C SIDE K F BATCH THREADS SCRATCH [X DELTA DX]`
//! (offsets in bytes, multiples of 4; docs/prediction.md, "The scratch's alignment").

use flopnet::engine::conv::{self, ConvShape, Dx, Tiles};
use flopnet::engine::team::Team;
use flopnet::spec::{Activation, Conv, Kind, Layer, Padding, Shape};
use std::time::Instant;

/// `len` values `f(i)` starting `bytes` past a cache line, and the allocation that holds them.
fn placed(len: usize, bytes: usize, f: impl Fn(usize) -> f32) -> (Vec<f32>, usize) {
    let mut v = vec![0.0f32; len + 16 + bytes / 4];
    let at = v.as_ptr().align_offset(64) + bytes / 4;
    v[at..at + len].iter_mut().enumerate().for_each(|(i, x)| *x = f(i));
    (v, at)
}

/// Seconds per call of `f`: the fastest of four runs of calls lasting 20 ms or more.
fn time(mut f: impl FnMut()) -> f64 {
    f();
    let (t, mut calls) = (Instant::now(), 0usize);
    while t.elapsed().as_secs_f64() < 0.01 {
        f();
        calls += 1;
    }
    (0..4)
        .map(|_| {
            let t = Instant::now();
            (0..calls).for_each(|_| f());
            t.elapsed().as_secs_f64() / calls as f64
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    flopnet::engine::simd::flush_denormals();
    let a: Vec<usize> = std::env::args().skip(1).map(|a| a.parse().expect("numbers")).collect();
    let [c, side, k, f, batch, threads, s_off] = a[..7] else {
        panic!("usage: scratch_offset C SIDE K F BATCH THREADS SCRATCH [X DELTA DX]")
    };
    let off = |i: usize| a.get(7 + i).copied().unwrap_or(0);
    let team = Team::new(threads, flopnet::engine::simd::flush_denormals).expect("a team");
    let cv = Conv::plain(k, k, f, 1, Padding::Fixed(k / 2));
    let layer = Layer::after(Shape::new(c, side, side), Kind::Conv2d(cv), 0, Activation::Relu).expect("a layer");
    let sh = ConvShape::of(&layer).expect("a convolution");
    let n = batch * sh.oh * sh.ow;
    let xl = batch * c * side * side;
    let (x, xa) = placed(xl, off(0), |i| (i % 17) as f32 / 17.0);
    let (delta, da) = placed(f * n, off(1), |i| (i % 11) as f32 / 11.0 - 0.5);
    let (mut dx, dxa) = placed(xl, off(2), |_| 0.0);
    let sl = Tiles::for_shape(&sh).total(&sh, batch, threads);
    let (mut scratch, sa) = placed(sl, s_off, |_| 0.0);
    let w: Vec<f32> = (0..f * sh.ckk()).map(|i| (i % 13) as f32 / 13.0 - 0.5).collect();
    let (mut dw, mut db) = (vec![0.0f32; w.len()], vec![0.0f32; f]);
    let (x, delta) = (&x[xa..xa + xl], &delta[da..da + f * n]);
    let backward = time(|| {
        let (s, d) = (&mut scratch[sa..sa + sl], &mut dx[dxa..dxa + xl]);
        conv::conv_backward(&sh, batch, x, &w, delta, &mut dw, &mut db, s, Dx::Write(d), &team)
    });
    println!(
        "{c}x{side}x{side}, {k}x{k}x{f}, batch {batch}, {threads} thread(s), offsets past a line: scratch {s_off}, x {}, δ {}, dx {} bytes: backward {:.1} µs (passes {:?})",
        off(0),
        off(1),
        off(2),
        backward * 1e6,
        Tiles::for_shape(&sh).passes(&sh)
    );
}
