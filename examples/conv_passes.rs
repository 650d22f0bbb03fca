//! One convolution's passes on this thread, as the time model's references see them:
//! `cargo run --release --example conv_passes C SIDE K F STRIDE BATCH [GROUPS]` prints the
//! kernel each pass runs (`conv::Tiles::passes`) and the CPU time of the forward, the weight
//! gradient and the input gradient with a dense δ; with `SPARSE=1`, also the backward with δ
//! 5%, 12.5% and 20% nonzero as a relu and a 2×2 max pool leave it, drawn three ways: from a
//! multiplicative hash of the index (profile format 14's references), at random once, and at
//! random turning through four draws (format 15's, `predict::calibrate`). Each time is the
//! fastest call over about 0.2 s of the calling thread's CPU time (docs/prediction.md).

use flopnet::engine::conv::{self, ConvShape, Dx, Tiles};
use flopnet::engine::team::Team;
use flopnet::spec::{Activation, Conv, Kind, Layer, Padding, Shape};
use rand::{Rng, SeedableRng};

#[path = "common/cpu.rs"]
mod cpu;
use cpu::cpu_now;

/// The fastest call of `f(i)`, i counting calls, over at least five calls and 0.2 s.
fn time(mut f: impl FnMut(usize)) -> f64 {
    f(0);
    let (start, mut best, mut calls) = (std::time::Instant::now(), f64::INFINITY, 1);
    while calls < 6 || start.elapsed().as_secs_f64() < 0.2 {
        let t = cpu_now();
        f(calls);
        best = best.min(cpu_now() - t);
        calls += 1;
    }
    best
}

/// δ over `planes` planes of oh×ow: in each 2×2 block one position (from `pick`) holds 0.5,
/// kept where `pick`'s other value falls under 4·share.
fn pooled(
    planes: usize,
    (oh, ow): (usize, usize),
    share: f64,
    mut pick: impl FnMut(usize) -> (f64, usize),
) -> Vec<f32> {
    let mut delta = vec![0.0f32; planes * oh * ow];
    for (p, plane) in delta.chunks_exact_mut(oh * ow).enumerate() {
        for by in 0..oh / 2 {
            for bx in 0..ow / 2 {
                let (u, at) = pick((p * oh + by) * ow + bx);
                if u < 4.0 * share {
                    plane[(2 * by + at / 2) * ow + 2 * bx + at % 2] = 0.5;
                }
            }
        }
    }
    delta
}

fn main() {
    flopnet::engine::simd::flush_denormals();
    let team = Team::new(1, flopnet::engine::simd::flush_denormals).expect("a team of one");
    let a: Vec<usize> =
        std::env::args().skip(1).map(|a| a.parse().expect("numbers: C SIDE K F STRIDE BATCH [GROUPS]")).collect();
    let [c, side, k, f, s, batch] = a[..6] else { panic!("usage: conv_passes C SIDE K F STRIDE BATCH [GROUPS]") };
    let mut cv = Conv::plain(k, k, f, s, Padding::Fixed(k / 2));
    cv.groups = a.get(6).copied().unwrap_or(1);
    let layer = Layer::after(Shape::new(c, side, side), Kind::Conv2d(cv), 0, Activation::Relu).expect("a convolution");
    let sh = ConvShape::of(&layer).expect("a convolution");
    let n = batch * sh.oh * sh.ow;
    let x: Vec<f32> = (0..batch * c * side * side).map(|i| (i % 17) as f32 / 17.0).collect();
    let w: Vec<f32> = (0..f * sh.ckk()).map(|i| (i % 13) as f32 / 13.0 - 0.5).collect();
    let b = vec![0.1f32; f];
    let mut scratch = vec![0.0f32; Tiles::for_shape(&sh).total(&sh, batch, 1)];
    let (mut z, mut dw, mut db, mut dx) =
        (vec![0.0f32; f * n], vec![0.0f32; w.len()], vec![0.0f32; f], vec![0.0f32; x.len()]);
    let gflop = 2.0 * (f * sh.ckk() * n) as f64 / 1e9;
    let mut backward = |deltas: &[Vec<f32>]| {
        // The backward without the input gradient, or with it written.
        let mut pass = |i: usize, write: bool| {
            let to = if write { Dx::Write(&mut dx) } else { Dx::Skip };
            let delta = &deltas[i % deltas.len()];
            conv::conv_backward(&sh, batch, &x, &w, delta, &mut dw, &mut db, &mut scratch, to, &team)
        };
        let dwt = time(|i| pass(i, false));
        let both = time(|i| pass(i, true));
        (dwt, both - dwt)
    };
    let dense: Vec<f32> = (0..f * n).map(|i| (i % 11) as f32 / 11.0 - 0.5).collect();
    let (dwt, dxt) = backward(std::slice::from_ref(&dense));
    let mut scratch = vec![0.0f32; Tiles::for_shape(&sh).total(&sh, batch, 1)];
    let fwd = time(|_| conv::conv_forward(&sh, batch, Activation::Relu, &x, &w, &b, &mut scratch, &mut z, &team));
    let g = sh.group();
    println!(
        "{c}x{side}x{side}, {k}x{k}x{f} stride {s}, {} group(s), batch {batch}: passes {:?}",
        sh.groups,
        Tiles::for_shape(&g).passes(&g)
    );
    let ms = |t: f64| format!("{:.3} ms ({:.0} GFLOP/s)", t * 1e3, gflop / t);
    println!("  dense δ: forward {}, weight gradient {}, input gradient {}", ms(fwd), ms(dwt), ms(dxt));
    if std::env::var("SPARSE").is_ok_and(|v| v == "1") {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(15);
        for share in [0.05, 0.125, 0.2] {
            let planes = (f * batch, (sh.oh, sh.ow));
            let hashed = pooled(planes.0, planes.1, share, |i| {
                let h = i.wrapping_mul(2654435761) >> 7;
                ((h % 1000) as f64 / 1000.0, (h / 1000) % 4)
            });
            let draws: Vec<Vec<f32>> =
                (0..4).map(|_| pooled(planes.0, planes.1, share, |_| (rng.r#gen(), rng.gen_range(0..4)))).collect();
            for (name, deltas) in
                [("hashed", vec![hashed]), ("random, one draw", draws[..1].to_vec()), ("random, four draws", draws)]
            {
                let got = conv::nonzero_share(&deltas[0]);
                let (dwt, dxt) = backward(&deltas);
                println!(
                    "  δ {:.1}% nonzero, {name}: weight gradient {}, input gradient {}",
                    100.0 * got,
                    ms(dwt),
                    ms(dxt)
                );
            }
        }
    }
}
