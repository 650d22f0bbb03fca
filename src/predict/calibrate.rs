//! `flopnet calibrate`: measures this machine through the engine's own kernels.

use super::profile::{
    ConvRates, DepthwiseRates, GemmPoint, PassRates, PoolRates, Profile, RegroupRates, SparseRates, StreamPoint,
    VERSION, machine_id,
};
use crate::engine::gemm::{View, matmul};
use crate::engine::pages::{Lines, filled, zeroed};
use crate::engine::team::Team;
use crate::engine::{Engine, Settings, kernels, simd};
use crate::error::Result;
use crate::init;
use crate::reference::Hyper;
use crate::spec::{Activation, Loss, Optimizer, Spec};
use std::time::Instant;

/// Seconds of one call of `f`: the fastest of `runs` runs that each last at least `min_s`. On a
/// shared machine a neighbour only ever slows a run down, so the fastest is the nearest to the
/// machine's own speed (with the median of five, a reference convolution's rate moved by 2×
/// between two calibrations at a load average of 5 on 2 cores).
fn time(min_s: f64, runs: usize, mut f: impl FnMut()) -> f64 {
    // One set: each call finds what the call before it left in cache.
    time_cold(min_s, runs, 1, |_| f())
}

/// The grid: batch-like m, and inner/outer sizes for k and n.
pub const GRID_M: [usize; 5] = [1, 8, 32, 128, 512];
pub const GRID_KN: [usize; 5] = [1, 16, 128, 512, 1024];

/// The three product layouts a layer uses.
const OPS: [&str; 3] = ["forward", "weight_grad", "input_grad"];

/// Seconds of one product of layout `op` at (m, k, n), timed over at least `min_s`.
fn time_product(team: &Team, op: &str, (m, k, n): (usize, usize, usize), min_s: f64) -> f64 {
    let a = vec![0.5f32; m * k];
    let b = vec![0.25f32; k * n];
    let mut c = vec![0.0f32; m * n];
    time(min_s, 1, || match op {
        // X [m][k] · Wᵀ where W is [n][k].
        "forward" => matmul(View::rows(&a, m, k), View::transposed(&b, n, k), &mut c, team),
        // deltaᵀ where delta is [k][m], times X [k][n].
        "weight_grad" => matmul(View::transposed(&a, k, m), View::rows(&b, k, n), &mut c, team),
        _ => matmul(View::rows(&a, m, k), View::rows(&b, k, n), &mut c, team),
    })
}

/// The grid for each layout in [`OPS`]. Each point is the median of three timings taken in
/// three passes over all points in a shuffled order (one pass with `quick`): on a shared
/// machine a slow spell of a second or two then moves one of a point's three timings, scattered
/// over the grid, rather than every timing of a run of neighbouring points.
fn gemm_grids(team: &Team, quick: bool) -> [Vec<GemmPoint>; 3] {
    let mut points = Vec::new();
    for op in 0..OPS.len() {
        for &m in &GRID_M {
            for &k in &GRID_KN {
                for &n in &GRID_KN {
                    points.push((op, (m, k, n)));
                }
            }
        }
    }
    shuffle(&mut points);
    let passes = if quick { 1 } else { 3 };
    let mut times = vec![Vec::with_capacity(passes); points.len()];
    for _ in 0..passes {
        for (t, &(op, shape)) in times.iter_mut().zip(&points) {
            t.push(time_product(team, OPS[op], shape, if quick { 0.002 } else { 0.004 }));
        }
    }
    let mut grids = [Vec::new(), Vec::new(), Vec::new()];
    for (mut t, &(op, (m, k, n))) in times.into_iter().zip(&points) {
        t.sort_by(f64::total_cmp);
        let s = t[t.len() / 2];
        grids[op].push(GemmPoint { m, k, n, gflops: 2.0 * (m * k * n) as f64 / s / 1e9 });
    }
    // In grid order (m, then k, then n), as the model reads them.
    for g in &mut grids {
        g.sort_by_key(|p| (p.m, p.k, p.n));
    }
    grids
}

/// Working sets from L1 to main memory.
const STREAM_ITEMS: [usize; 5] = [4 << 10, 32 << 10, 256 << 10, 2 << 20, 16 << 20];

/// Values between the starts of [`Pass::seconds`]' arrays (1,088 bytes).
const STAGGER: usize = 272;

/// The passes over memory the model prices by working set: `y += a·x` and the optimizers'
/// updates, stored or fused (one example's update formed row by row from its gradient).
#[derive(Clone, Copy)]
enum Pass {
    Axpy,
    Sgd,
    Momentum,
    Adam,
    SgdFused,
    MomentumFused,
}

impl Pass {
    const ALL: [Pass; 6] = [Pass::Axpy, Pass::Sgd, Pass::Momentum, Pass::Adam, Pass::SgdFused, Pass::MomentumFused];

    /// The working set of a pass over n items is n times this, as the model looks it up: the
    /// arrays a stored update walks (weights, gradient, state), the bytes a fused one moves.
    fn bytes_per_item(self) -> usize {
        match self {
            Pass::Axpy | Pass::Sgd | Pass::SgdFused => 8,
            Pass::Momentum => 12,
            Pass::Adam | Pass::MomentumFused => 16,
        }
    }

    /// Seconds of one pass over `n` items on `bufs` (four arrays of at least n values, rounded up
    /// to whole rows of 784; their contents are whatever earlier passes left, small and finite).
    fn seconds(self, n: usize, bufs: &mut [Vec<f32>; 4], min_s: f64) -> f64 {
        // Each array starts at its own offset within a page, as separately allocated small
        // arrays do: at one offset every store would alias the next loads (4K aliasing) and
        // slow the pass, which the engine's small arrays do not see.
        let [a, b, c, d] = bufs;
        let (a, b, c, d) = (&mut a[..], &mut b[STAGGER..], &mut c[2 * STAGGER..], &mut d[3 * STAGGER..]);
        let (g, w, v, m) = (&a[..n], &mut b[..n], &mut c[..n], &mut d[..n]);
        match self {
            Pass::Axpy => time(min_s, 1, || kernels::axpy(1e-3, g, w)),
            Pass::Sgd => time(min_s, 1, || kernels::sgd(w, g, 1e-3)),
            Pass::Momentum => time(min_s, 1, || kernels::momentum(w, v, g, 1e-3, 0.9)),
            Pass::Adam => time(min_s, 1, || kernels::adam(w, m, v, g, 0.9, 0.999, 1e-8, 1e-3, 1.0)),
            Pass::SgdFused | Pass::MomentumFused => {
                // Rows of 784 inputs, as for a 28×28 image; the time is scaled back to n items.
                let rows = n.div_ceil(784);
                let (w, v) = (&mut b[..rows * 784], &mut c[..rows * 784]);
                let x = &a[..784];
                let momentum = matches!(self, Pass::MomentumFused);
                let s = time(min_s, 1, || {
                    for i in 0..rows {
                        let r = i * 784..(i + 1) * 784;
                        if momentum {
                            kernels::momentum_outer(&mut w[r.clone()], &mut v[r], x, 1e-3, 1e-3, 0.9);
                        } else {
                            kernels::sgd_outer(&mut w[r], x, 1e-3, 1e-3);
                        }
                    }
                });
                s * n as f64 / (rows * 784) as f64
            }
        }
    }
}

/// Every [`Pass`] at every working set, in the order of [`Pass::ALL`]. Like the product grid,
/// each point is the median of three timings from three passes over all points in a fixed
/// shuffled order (one with `quick`), so a slow spell moves one timing of a few points rather
/// than every timing of one table. The 16M-item sets (over the 32 MiB L3 with momentum or Adam)
/// are left out with `quick`.
fn stream_tables(quick: bool, min_s: f64) -> [Vec<StreamPoint>; 6] {
    let items: Vec<usize> = STREAM_ITEMS.iter().copied().filter(|&n| !quick || n <= 2 << 20).collect();
    // Whole rows of 784 for the fused passes.
    let largest = items.iter().copied().max().unwrap_or(0).div_ceil(784) * 784;
    let len = largest + 3 * STAGGER;
    let mut bufs = [filled(len, |_| 1e-3), zeroed(len), zeroed(len), zeroed(len)];
    let mut points: Vec<(usize, usize)> =
        (0..Pass::ALL.len()).flat_map(|p| items.iter().map(move |&n| (p, n))).collect();
    shuffle(&mut points);
    let passes = if quick { 1 } else { 3 };
    let mut times = vec![Vec::with_capacity(passes); points.len()];
    for _ in 0..passes {
        for (t, &(p, n)) in times.iter_mut().zip(&points) {
            t.push(Pass::ALL[p].seconds(n, &mut bufs, min_s));
        }
    }
    let mut tables: [Vec<StreamPoint>; 6] = Default::default();
    for (mut t, &(p, n)) in times.into_iter().zip(&points) {
        t.sort_by(f64::total_cmp);
        let bytes = (n * Pass::ALL[p].bytes_per_item()) as f64;
        tables[p].push(StreamPoint { bytes, seconds_per_item: t[t.len() / 2] / n as f64 });
    }
    for t in &mut tables {
        t.sort_by(|a, b| a.bytes.total_cmp(&b.bytes));
    }
    tables
}

/// A fixed shuffle (Fisher–Yates on a xorshift), so every calibration visits the same order.
fn shuffle<T>(v: &mut [T]) {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for i in (1..v.len()).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        v.swap(i, (state % (i as u64 + 1)) as usize);
    }
}

fn layer_engine(act: Activation, threads: usize) -> Result<Engine> {
    let spec = Spec::dense(1, &[(4096, act)]);
    let loss = if act == Activation::Softmax { Loss::Ce } else { Loss::Mse };
    let settings =
        Settings { loss, optimizer: Optimizer::Sgd, hyper: Hyper::defaults(Optimizer::Sgd), max_batch: 16, threads };
    Engine::new(&spec, &init::init(&spec, 1), settings)
}

/// (forward, backward) seconds of one step's layer on a 16 × 4096 output with activation `act`.
fn layer_times(act: Activation, threads: usize) -> Result<(f64, f64)> {
    let mut e = layer_engine(act, threads)?;
    let x = vec![0.5f32; 16];
    let y = vec![0u8; 16];
    for _ in 0..5 {
        e.train_step(&x, &y)?;
    }
    e.start_timers();
    let steps = 60;
    for _ in 0..steps {
        e.train_step(&x, &y)?;
    }
    let t = e.timers().cloned().unwrap_or_default();
    Ok((t.forward[0] / steps as f64, t.backward[0] / steps as f64))
}

/// A reference convolution for calibrate: a `c`×`side`×`side` input, k×k kernels padded by
/// k/2 at stride `s`, `f` filters, relu, at a batch; its input, weights and the engine's scratch
/// (on a cache line, as the engine's: `pages::Lines`).
struct RefConv {
    sh: crate::engine::conv::ConvShape,
    /// Output positions of the batch.
    n: usize,
    x: Vec<f32>,
    w: Vec<f32>,
    scratch: Lines,
}

/// The geometry of a reference convolution: `c` channels of `side`×`side`, `f` k×k kernels
/// padded by k/2 at stride `s` (None for a shape that is not one).
pub(super) fn reference_shape(
    c: usize,
    side: usize,
    k: usize,
    f: usize,
    s: usize,
) -> Option<crate::engine::conv::ConvShape> {
    use crate::spec::{Conv, Kind, Layer, Padding, Shape};
    let cv = Conv::plain(k, k, f, s, Padding::Fixed(k / 2));
    let layer = Layer::after(Shape::new(c, side, side), Kind::Conv2d(cv), 0, Activation::Relu).ok()?;
    crate::engine::conv::ConvShape::of(&layer)
}

impl RefConv {
    fn new((c, side, k, f): (usize, usize, usize, usize), s: usize, batch: usize, team: &Team) -> Result<RefConv> {
        use crate::engine::conv::Tiles;
        let sh = reference_shape(c, side, k, f, s).ok_or_else(|| {
            crate::Error::Usage(format!("no reference convolution {c}x{side}x{side}, {k}x{k}x{f}, stride {s}"))
        })?;
        Ok(RefConv {
            sh,
            n: batch * sh.oh * sh.ow,
            x: filled(batch * c * side * side, |i| (i % 17) as f32 / 17.0),
            w: (0..f * sh.ckk()).map(|i| (i % 13) as f32 / 13.0 - 0.5).collect(),
            scratch: Lines::zeroed(Tiles::for_shape(&sh).total(&sh, batch, team.size())),
        })
    }
}

/// The engine's convolution rates on a [`RefConv`] of `shape` = (c, side, k, f) at stride `s`.
/// The input gradient's time is the backward with it less the backward without it, no less
/// than its products at `ceiling` GFLOP/s (two noisy timings can differ by almost nothing).
fn conv_rates(
    shape: (usize, usize, usize, usize),
    s: usize,
    batch: usize,
    team: &Team,
    min_s: f64,
    ceiling: f64,
) -> Result<ConvRates> {
    use crate::engine::conv::{Dx, conv_backward, conv_forward};
    let RefConv { sh, n, x, w, mut scratch } = RefConv::new(shape, s, batch, team)?;
    let f = sh.f;
    let b = vec![0.1f32; f];
    let delta = filled(f * n, |i| (i % 11) as f32 / 11.0 - 0.5);
    let (mut z, mut dw, mut db, mut dx) = (zeroed(f * n), vec![0.0f32; w.len()], vec![0.0f32; f], zeroed(x.len()));
    // Few shapes, so each is timed longer than a grid point: the model leans on them alone
    // (runs of 2·min_s since profile format 15, 3·min_s before: the fastest of four, and room
    // for the few-channel references).
    let (min_s, runs) = (2.0 * min_s, 4);
    let fwd = time(min_s, runs, || conv_forward(&sh, batch, Activation::Relu, &x, &w, &b, &mut scratch, &mut z, team));
    let dwt =
        time(min_s, runs, || conv_backward(&sh, batch, &x, &w, &delta, &mut dw, &mut db, &mut scratch, Dx::Skip, team));
    let both = time(min_s, runs, || {
        conv_backward(&sh, batch, &x, &w, &delta, &mut dw, &mut db, &mut scratch, Dx::Write(&mut dx), team)
    });
    let flop = 2.0 * (f * sh.ckk() * n) as f64 / 1e9;
    Ok(ConvRates {
        window: sh.ckk(),
        filters: f,
        plane: sh.oh * sh.ow,
        forward: flop / fwd,
        weight_grad: flop / dwt,
        input_grad: flop / (both - dwt).max(flop / ceiling),
        channels: shape.0,
        side: shape.1,
        kernel: shape.2,
        stride: s,
        batch,
    })
}

/// δ as a relu and a 2×2 max pool of stride 2 leave it, `share` of it nonzero: in each 2×2 block
/// of each output plane (`oh`×`ow`, `planes` of them) one position, drawn at random, holds a
/// value, kept with probability 4·share (a block whose maximum a relu zeroed passes nothing).
fn pooled_delta(planes: usize, (oh, ow): (usize, usize), share: f64, rng: &mut impl rand::Rng) -> Vec<f32> {
    let mut delta = vec![0.0f32; planes * oh * ow];
    for plane in delta.chunks_exact_mut(oh * ow) {
        for by in 0..oh / 2 {
            for bx in 0..ow / 2 {
                let (u, at): (f64, usize) = (rng.r#gen(), rng.gen_range(0..4));
                if u < 4.0 * share {
                    plane[(2 * by + at / 2) * ow + 2 * bx + at % 2] = 0.5;
                }
            }
        }
    }
    delta
}

/// The engine's sparse backward on the shapes of [`conv_rates`], timed with δ about 5% and 20%
/// nonzero as a relu and a 2×2 max pool leave it ([`pooled_delta`], the share as counted); None
/// where the engine would not take it. Each timing turns through [`SPARSE_DRAWS`] draws of δ:
/// the kernel branches on every value of δ, and on one δ repeated call after call (or one
/// drawn by a multiplicative hash, as before profile format 15) the branch predictor learns
/// the pattern, which training, with a new δ every step, never lets it (16→16 3×3 over 28×28
/// at batch 64, one thread, δ 20% nonzero: 3.1 ms for dW on random draws, 1.8 on the hash's,
/// `SPARSE=1 cargo run --release --example conv_passes 16 28 3 16 1 64`;
/// in `bench` the layer's backward took 8.1 ms against the 2.7 priced from the hash's).
fn sparse_rates(
    shape: (usize, usize, usize, usize),
    batch: usize,
    team: &Team,
    min_s: f64,
) -> Result<Option<SparseRates>> {
    use crate::engine::conv::{Dx, SPARSE_MAX_DENSITY, Tiles, conv_backward, nonzero_share};
    use rand::SeedableRng;
    let RefConv { sh, n, x, w, mut scratch } = RefConv::new(shape, 1, batch, team)?;
    if !Tiles::for_shape(&sh).takes_sparse(&sh) {
        return Ok(None);
    }
    let f = sh.f;
    let (mut dw, mut db, mut dx) = (vec![0.0f32; w.len()], vec![0.0f32; f], zeroed(x.len()));
    let gflop = 2.0 * (f * sh.ckk() * n) as f64 / 1e9;
    let (min_s, runs) = (3.0 * min_s, 3);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(15);
    let mut shares = [0.0; 2];
    let mut per_gflop = [(0.0, 0.0); 2];
    for (i, share) in [0.05, 0.2].into_iter().enumerate() {
        let deltas: Vec<Vec<f32>> =
            (0..SPARSE_DRAWS).map(|_| pooled_delta(f * batch, (sh.oh, sh.ow), share, &mut rng)).collect();
        shares[i] = deltas.iter().map(|d| nonzero_share(d) as f64).sum::<f64>() / SPARSE_DRAWS as f64;
        assert!(shares[i] <= SPARSE_MAX_DENSITY as f64);
        let dwt = time_cold(min_s, runs, SPARSE_DRAWS, |d| {
            conv_backward(&sh, batch, &x, &w, &deltas[d], &mut dw, &mut db, &mut scratch, Dx::Skip, team)
        });
        let both = time_cold(min_s, runs, SPARSE_DRAWS, |d| {
            conv_backward(&sh, batch, &x, &w, &deltas[d], &mut dw, &mut db, &mut scratch, Dx::Write(&mut dx), team)
        });
        per_gflop[i] = (dwt / gflop, (both - dwt).max(dwt * 0.05) / gflop);
    }
    let fit = |lo: f64, hi: f64| {
        let b = ((hi - lo) / (shares[1] - shares[0]).max(1e-3)).max(0.0);
        ((lo - b * shares[0]).max(0.0), b)
    };
    Ok(Some(SparseRates {
        window: sh.ckk(),
        filters: f,
        weight_grad: fit(per_gflop[0].0, per_gflop[1].0),
        input_grad: fit(per_gflop[0].1, per_gflop[1].1),
    }))
}

/// The draws of δ each sparse timing turns through ([`sparse_rates`]).
const SPARSE_DRAWS: usize = 4;

/// The engine's 2×2 max pooling on `c` planes of `side`×`side` per example, at a batch.
fn pool_rates((c, side): (usize, usize), batch: usize, team: &Team, min_s: f64) -> Result<PoolRates> {
    use crate::engine::pool::{PoolShape, max_backward, max_forward};
    use crate::spec::{Kind, Layer, Pool, Shape};
    let layer = Layer::after(Shape::new(c, side, side), Kind::MaxPool(Pool::new(2, 2)), 0, Activation::Identity)
        .map_err(crate::Error::Usage)?;
    let Some(sh) = PoolShape::of(&layer) else { unreachable!("a pooling layer") };
    let (inputs, outputs) = (batch * layer.inputs, batch * layer.outputs);
    let x: Vec<f32> = (0..inputs).map(|i| (i.wrapping_mul(2654435761) % 1000) as f32 / 1000.0).collect();
    let g = vec![0.5f32; outputs];
    let (mut y, mut arg, mut dx) = (vec![0.0f32; outputs], vec![0u32; outputs], vec![0.0f32; inputs]);
    let (min_s, runs) = (4.0 * min_s, 5);
    let forward = time(min_s, runs, || max_forward(&sh, batch, &x, &mut y, &mut arg, team));
    let backward = time(min_s, runs, || max_backward(&sh, batch, &g, &arg, &mut dx, team));
    Ok(PoolRates { plane: side * side, forward: forward / inputs as f64, backward: backward / inputs as f64 })
}

/// The engine's layout changes for `c` channels of `chunk` values per example, at a batch.
fn regroup_rates((c, chunk): (usize, usize), batch: usize, min_s: f64) -> RegroupRates {
    use crate::engine::{to_channels, to_rows};
    let n = batch * c * chunk;
    let x: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let mut out = vec![0.0f32; n];
    let (min_s, runs) = (4.0 * min_s, 5);
    let rows = time(min_s, runs, || to_rows(&x, &mut out, batch, c, chunk));
    let channels = time(min_s, runs, || to_channels(&x, &mut out, batch, c, chunk));
    RegroupRates { chunk, to_rows: rows / n as f64, to_channels: channels / n as f64 }
}

/// The data caches' sizes in bytes by level (1, 2, 3), as Linux reports them for the first core
/// (read once: calibrate asks for them per pass table).
fn caches() -> &'static [(u32, usize)] {
    static CACHES: std::sync::OnceLock<Vec<(u32, usize)>> = std::sync::OnceLock::new();
    CACHES.get_or_init(read_caches)
}

fn read_caches() -> Vec<(u32, usize)> {
    let read = |i: usize, what: &str| {
        std::fs::read_to_string(format!("/sys/devices/system/cpu/cpu0/cache/index{i}/{what}")).ok()
    };
    let bytes = |t: String| {
        let t = t.trim();
        let (num, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
        let scale = match unit {
            "K" => 1 << 10,
            "M" => 1 << 20,
            "G" => 1 << 30,
            _ => 1,
        };
        num.parse::<usize>().ok().map(|n| n * scale)
    };
    (0..8)
        .filter(|&i| read(i, "type").is_some_and(|t| t.trim() != "Instruction"))
        .filter_map(|i| Some((read(i, "level")?.trim().parse().ok()?, bytes(read(i, "size")?)?)))
        .collect()
}

/// The last-level cache's size in bytes, as Linux reports it (32 MiB if it does not).
fn last_level_cache() -> usize {
    caches().iter().map(|&(_, b)| b).max().unwrap_or(32 << 20)
}

/// The second-level cache's size in bytes, one core's (1/32 of the last level's if Linux does
/// not say).
fn level_two_cache() -> usize {
    caches().iter().find(|&&(l, _)| l == 2).map_or(last_level_cache() / 32, |&(_, b)| b)
}

/// Seconds of one call of `f(i)` on data out of cache: `f` works on set `i` of `sets` sets of
/// arrays that together outgrow the last-level cache several times, and is called on each set
/// in turn, so that every call finds its set as the calls on the others left it — evicted, as
/// a training step finds a layer's values, written or read a layer or more before. The fastest
/// of `runs` runs of whole turns lasting at least `min_s`, per call.
fn time_cold(min_s: f64, runs: usize, sets: usize, mut f: impl FnMut(usize)) -> f64 {
    let mut turn = || (0..sets).for_each(&mut f);
    turn();
    let t = Instant::now();
    let mut turns = 1usize;
    turn();
    while t.elapsed().as_secs_f64() < min_s / 2.0 {
        turn();
        turns += 1;
    }
    (0..runs)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..turns {
                turn();
            }
            t.elapsed().as_secs_f64() / (turns * sets) as f64
        })
        .fold(f64::INFINITY, f64::min)
}

/// The graph path's work of [`PassRates`] over 64 channels of `values`/64 each, through the
/// engine's own functions where it has them (batch normalization, activations, global
/// pooling) and as the graph path writes its sums and copies (one thread, in place). Each is
/// timed cache-cold ([`time_cold`], since profile format 14): in training these passes find
/// their operands out of cache — batch normalization's backward reads x and its output from
/// the forward, long evicted — and timed hot, on arrays the previous call left in cache, they
/// ran 1.25× (forward) and 1.4–1.8× (backward) faster than in a network (one thread, `python3
/// bench/predict_layers.py --random 12 --seed 1 --threads 1`; cold against hot per value,
/// `norm::train_forward` and `norm::backward` over 16 channels of 16K values: 0.42 against 0.30
/// ns and 0.63 against 0.33). With `cold` false (since profile format 16) the sets together
/// outgrow the second-level caches but fit in the last level: each call finds its arrays in
/// the last-level cache, as a small network's step does, whose whole working set stays there
/// (docs/prediction.md, "Warm passes"; timed on one set, call after call, the arrays stayed in
/// L2 and the passes ran up to 6× faster than cold, too fast for a step).
fn pass_rates(values: usize, team: &Team, min_s: f64, cold: bool) -> PassRates {
    use crate::engine::{activation, gap, norm};
    let c = 64;
    let n = values / c;
    struct Set {
        x: Vec<f32>,
        d: Vec<f32>,
        y: Vec<f32>,
    }
    // Three arrays a set; cold, together at least four times the last-level cache; warm,
    // four times every core's second-level cache (and within the last level: 8 MiB here).
    let sets = if cold {
        (4 * last_level_cache()).div_ceil(3 * 4 * c * n).max(2)
    } else {
        (4 * level_two_cache() * crate::sys::cores()).div_ceil(3 * 4 * c * n).max(1)
    };
    let mut all: Vec<Set> = (0..sets)
        .map(|_| Set {
            x: filled(c * n, |i| (i % 29) as f32 / 29.0 - 0.5),
            d: filled(c * n, |i| (i % 31) as f32 / 31.0 - 0.5),
            y: zeroed(c * n),
        })
        .collect();
    let (gamma, beta) = (vec![1.0f32; c], vec![0.0f32; c]);
    let (mut running, mut saved) = (vec![0.0f32; 2 * c], vec![0.0f32; norm::SAVED * c]);
    let (mut dg, mut db) = (vec![0.0f32; c], vec![0.0f32; c]);
    let (min_s, runs) = (2.0 * min_s, 3);
    let per = |s: f64| s / (c * n) as f64;
    let norm_forward = time_cold(min_s, runs, sets, |i| {
        let Set { x, y, .. } = &mut all[i];
        let nm = norm::Norm { gamma: &gamma, beta: &beta, running: &mut running, saved: &mut saved };
        norm::train_forward(nm, Activation::Identity, n, x, None, y, team, None);
    });
    let norm_backward = time_cold(min_s, runs, sets, |i| {
        let Set { x, d, y } = &mut all[i];
        norm::backward(&gamma, &saved, n, x, (Activation::Identity, x), d, &mut dg, &mut db, Some(y), None, team, None)
    });
    let norm_grads = time_cold(min_s, runs, sets, |i| {
        let Set { x, d, .. } = &mut all[i];
        norm::backward(&gamma, &saved, n, x, (Activation::Identity, x), d, &mut dg, &mut db, None, None, team, None)
    });
    let norm_infer = time_cold(min_s, runs, sets, |i| {
        let Set { x, y, .. } = &mut all[i];
        norm::infer(&gamma, &beta, &running, Activation::Identity, n, x, None, y, team)
    });
    let relu_forward = time_cold(min_s, runs, sets, |i| {
        let Set { x, y, .. } = &mut all[i];
        y.copy_from_slice(x);
        activation::forward(Activation::Relu, y, n);
    }) - time_cold(min_s, runs, sets, |i| {
        let Set { x, y, .. } = &mut all[i];
        y.copy_from_slice(x)
    });
    let relu_backward = time_cold(min_s, runs, sets, |i| {
        let Set { x, y, .. } = &mut all[i];
        activation::backward(Activation::Relu, x, y, n)
    });
    // The sums and copies the graph path runs across the team (`graph::elementwise`: runs of
    // 16K values, contiguous shares of them per task): a gradient added or handed on, and a
    // sum node's forward — its first input copied, the second added, relu applied, a run at a
    // time while the run is in cache.
    let len = c * n;
    let runs_of = |f: &(dyn Fn(std::ops::Range<usize>) + Sync)| {
        const RUN: usize = 1 << 14;
        crate::engine::conv::split_items(len.div_ceil(RUN), len, team, &|rs| f(rs.start * RUN..(rs.end * RUN).min(len)))
    };
    let add = time_cold(min_s, runs, sets, |i| {
        let Set { d, y, .. } = &mut all[i];
        let out = crate::engine::team::Parts::of(y);
        // SAFETY: split_items hands each range to one task.
        runs_of(&|r| kernels::axpy(1.0, &d[r.clone()], unsafe { out.part(r.start, r.len()) }));
    });
    let copy = time_cold(min_s, runs, sets, |i| {
        let Set { x, y, .. } = &mut all[i];
        let out = crate::engine::team::Parts::of(y);
        // SAFETY: as above.
        runs_of(&|r| unsafe { out.part(r.start, r.len()) }.copy_from_slice(&x[r]));
    });
    let sum = time_cold(min_s, runs, sets, |i| {
        let Set { x, d, y } = &mut all[i];
        let out = crate::engine::team::Parts::of(y);
        runs_of(&|r| {
            // SAFETY: as above.
            let o = unsafe { out.part(r.start, r.len()) };
            o.copy_from_slice(&x[r.clone()]);
            kernels::axpy(1.0, &d[r], o);
            activation::forward(Activation::Relu, o, n);
        });
    });
    // Planes of 8×8: the last stage of a CIFAR ResNet.
    let (p, planes) = (64, c * n / 64);
    let mut means = vec![0.0f32; planes];
    let mean_forward = time_cold(min_s, runs, sets, |i| gap::global_forward(c, planes / c, p, &all[i].x, &mut means));
    let mean_backward = time_cold(min_s, runs, sets, |i| {
        let Set { d, y, .. } = &mut all[i];
        gap::global_backward(c, planes / c, p, &d[..planes], y, team)
    });
    let wide = time_cold(min_s, runs, sets, |i| gap::global_forward(c, planes / c / 16, 16 * p, &all[i].x, &mut means));
    std::hint::black_box((&all[0].y, &means, &dg, &db));
    PassRates {
        values: c * n,
        norm_forward: per(norm_forward),
        norm_backward: per(norm_backward),
        norm_grads: per(norm_grads),
        norm_infer: per(norm_infer),
        relu_forward: per(relu_forward).max(0.0),
        relu_backward: per(relu_backward),
        add: per(add),
        copy: per(copy),
        sum: per(sum),
        mean_forward: per(mean_forward),
        mean_backward: per(mean_backward),
        mean_forward_wide: per(wide),
    }
}

/// The engine's padded max pooling (3×3, stride 2, padding 1) over 32 planes of 16×16 per
/// example at batch 32, per input value.
fn padded_pool_rates(team: &Team, min_s: f64) -> Result<PoolRates> {
    use crate::engine::padpool::PadPool;
    use crate::spec::{Kind, Layer, Pool, Shape};
    let pool = Pool { k: 3, stride: 2, pad: 1, ceil: false };
    let layer = Layer::after(Shape::new(32, 16, 16), Kind::MaxPool(pool), 0, Activation::Identity)
        .map_err(crate::Error::Usage)?;
    let Some(pp) = PadPool::of(&layer) else { unreachable!("a pooling layer") };
    let planes = 32 * 32;
    let (inputs, outputs) = (32 * layer.inputs, 32 * layer.outputs);
    let x: Vec<f32> = (0..inputs).map(|i| (i.wrapping_mul(2654435761) % 1000) as f32 / 1000.0).collect();
    let g = vec![0.5f32; outputs];
    let (mut y, mut arg, mut dx) = (vec![0.0f32; outputs], vec![0u32; outputs], vec![0.0f32; inputs]);
    let (min_s, runs) = (2.0 * min_s, 3);
    let forward = time(min_s, runs, || pp.forward(planes, &x, &mut y, &mut arg, team));
    let backward = time(min_s, runs, || pp.backward(planes, &g, &arg, &mut dx, team));
    Ok(PoolRates { plane: 256, forward: forward / inputs as f64, backward: backward / inputs as f64 })
}

/// Dropout's forward over `values` values, as the engine draws its mask (ChaCha8, one f64 per
/// value, `engine::graph`): the mask and the product. Seconds per value.
fn dropout_rate(values: usize, min_s: f64) -> f64 {
    use rand::{Rng, SeedableRng};
    let x: Vec<f32> = (0..values).map(|i| (i % 7) as f32).collect();
    let (mut z, mut mask) = (vec![0.0f32; values], vec![0.0f32; values]);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let s = time(2.0 * min_s, 3, || {
        for ((m, o), &v) in mask.iter_mut().zip(z.iter_mut()).zip(&x) {
            *m = if rng.r#gen::<f64>() < 0.5 { 0.0 } else { 2.0 };
            *o = v * *m;
        }
    });
    s / values as f64
}

/// The engine's depthwise k×k convolution (padding k/2) at stride `s` over `c` channels of
/// `side`×`side` at a batch: seconds per output value and tap of each pass.
fn depthwise_rates(
    (c, side, k, s): (usize, usize, usize, usize),
    batch: usize,
    team: &Team,
    min_s: f64,
) -> Result<DepthwiseRates> {
    use crate::engine::conv::{ConvShape, Dx, Tiles, conv_backward, conv_forward};
    use crate::spec::{Conv, Kind, Layer, Padding, Shape};
    let cv = Conv { groups: c, bias: false, ..Conv::plain(k, k, c, s, Padding::Fixed(k / 2)) };
    let layer = Layer::after(Shape::new(c, side, side), Kind::Conv2d(cv), 0, Activation::Identity)
        .map_err(crate::Error::Usage)?;
    let Some(sh) = ConvShape::of(&layer) else { unreachable!("a convolution layer") };
    let n = batch * layer.outputs;
    let x = filled(batch * layer.inputs, |i| (i % 23) as f32 / 23.0);
    let w: Vec<f32> = (0..c * k * k).map(|i| (i % 5) as f32 / 5.0 - 0.4).collect();
    let delta = filled(n, |i| (i % 19) as f32 / 19.0 - 0.5);
    let (mut z, mut dw, mut dx) = (zeroed(n), vec![0.0f32; w.len()], zeroed(x.len()));
    let mut scratch = Lines::zeroed(Tiles::for_shape(&sh).total(&sh, batch, team.size()));
    let (min_s, runs) = (2.0 * min_s, 3);
    let forward =
        time(min_s, runs, || conv_forward(&sh, batch, Activation::Identity, &x, &w, &[], &mut scratch, &mut z, team));
    let weight_grad =
        time(min_s, runs, || conv_backward(&sh, batch, &x, &w, &delta, &mut dw, &mut [], &mut scratch, Dx::Skip, team));
    let both = time(min_s, runs, || {
        conv_backward(&sh, batch, &x, &w, &delta, &mut dw, &mut [], &mut scratch, Dx::Write(&mut dx), team)
    });
    let taps = (n * k * k) as f64;
    Ok(DepthwiseRates {
        window: k * k,
        stride: s,
        plane: side * side,
        forward: forward / taps,
        weight_grad: weight_grad / taps,
        input_grad: (both - weight_grad).max(weight_grad * 0.05) / taps,
    })
}

/// Measures everything the time model needs (calibrate prints how long it took: profile format
/// 16 took 16.9–17.1 s on the quiet 2-core machine, two threads, where 15 took 15.9–16.2 s in the
/// same sittings; 15 took 17.1–17.2 s on the quiet 2-core machine earlier, 14 took 17.6 s; format 12 took 18.7–20.8 s on a 2-core machine shared at a load average of 5–8, with 13.5–15.4 s of CPU
/// time, and 7.1 s with `quick`; format 11 took 24–28 s at a load average of 11–14).
pub fn calibrate(threads: usize, quick: bool) -> Result<Profile> {
    simd::flush_denormals();
    let team = Team::new(threads.max(1), simd::flush_denormals).map_err(|e| crate::Error::Usage(e.to_string()))?;
    let fma_ceiling = simd::fma_ceiling(&team);
    let [forward, weight_grad, input_grad] = gemm_grids(&team, quick);
    let min_s = if quick { 0.003 } else { 0.01 };
    let [stream, sgd, momentum, adam, sgd_fused, momentum_fused] = stream_tables(quick, min_s);
    let (f0, b0) = layer_times(Activation::Identity, threads)?;
    let mut activation_forward = Vec::new();
    let mut activation_backward = Vec::new();
    for act in Activation::ALL {
        // Identity is the baseline itself: measured again, it would differ by noise alone.
        let (f, b) = if act == Activation::Identity { (f0, b0) } else { layer_times(act, threads)? };
        let per = 16.0 * 4096.0;
        activation_forward.push((act.name().to_string(), ((f - f0) / per).max(0.0)));
        activation_backward.push((act.name().to_string(), ((b - b0) / per).max(0.0)));
    }
    // A 1-1 network: what a step costs when there is no arithmetic to speak of.
    let tiny = Spec::dense(1, &[(1, Activation::Identity)]);
    let settings = Settings {
        loss: Loss::Mse,
        optimizer: Optimizer::Sgd,
        hyper: Hyper::defaults(Optimizer::Sgd),
        max_batch: 1,
        threads,
    };
    let mut e = Engine::new(&tiny, &init::init(&tiny, 1), settings)?;
    let step_overhead = time(min_s, 5, || {
        let _ = e.train_step(&[0.5], &[0]);
    });
    // Each shape at its filter count and at a quarter of it (α + β·F, `model::rate_at`).
    let pair = |(c, side, k, f): (usize, usize, usize, usize), s: usize, batch: usize| -> Result<[ConvRates; 2]> {
        Ok([
            conv_rates((c, side, k, f / 4), s, batch, &team, min_s, fma_ceiling)?,
            conv_rates((c, side, k, f), s, batch, &team, min_s, fma_ceiling)?,
        ])
    };
    // 8x16x16 with 3×3 kernels: few channels, where forming panels weighs most.
    // 8x32x32: the same window over CIFAR's planes, whose backward ran 3× slower per position
    // than at 16×16 (`bench/predict_layers.py`, 8 channels at batch 64: its arrays outgrow L2).
    // 16x32x32: ResNet-20's first stage, where the engine takes its shifted-rows kernels
    // (at 13×13 it does not: rows narrower than 16), so the 144-value window has two planes.
    // 8x32x32 with 5×5 kernels (since profile format 14): the input gradient of few channels
    // runs on dcol tiles and col2im at any filter count (`conv::Tiles::passes`), a cost per
    // window value that a 16-channel reference, whose input gradient at 8 filters is the
    // transposed convolution instead, does not show (8→8 5×5 at 32×32 took 2.8× its
    // backward as placed from 3×3 and 16-channel references, one thread); over 28×28 too, as
    // planes of whole 4 KiB pages run slower (`model::whole_pages`: priced from 32×32 alone,
    // 8-channel 5×5 networks over 28×28 ran 34–46% under their prediction).
    // 4x32x32 with 5×5 kernels at 4 and 16 filters (since profile format 15): the groups of a
    // grouped convolution over 16 channels in 4, whose input gradient on packed dcol tiles
    // costs the same per window value at 4 filters as at 16 (1.17 and 1.26 ms at batch 16, one
    // thread, `examples/conv_passes.rs`), 11 GFLOP/s at 4: priced between the 3×3 and
    // 8-channel references, a grouped 16→16 5×5 over 32×32 ran 2.7× its predicted backward
    // (`flopnet bench
    // 16x32x32-conv1x1x16p0:relu-conv5x5x16p2g4:identity-...`, see docs/prediction.md).
    // 8x32x32 and 16x32x32 with 3×3 kernels at batch 128 too (since profile format 18): a
    // batch's planes outgrow the caches, and 16 → 16 over 32×32 took its backward 1.37× (one
    // thread) and 1.19× (two) as long per example at batch 128 as at 16; priced from batch 16
    // alone, seed 7's `3x32x32-conv5x5x16p2b0-bn:relu-[conv3x3x16p1b0-bn:relu-...` at batch
    // 128 ran its 3×3 layers' backward 1.36× their price (docs/prediction.md).
    // 8x28x28 with 3×3 kernels (since format 18): planes not of whole pages were priced from
    // 16×16 alone, and 8 → 8 over 28×28 at batch 16 ran its forward at 0.63–0.71 and its
    // backward at 0.81–0.84 of that price (two threads; the step 12% under on one).
    // 2x32x32 with 3×3 kernels at 2 and 8 filters (since format 18): the 2-channel groups of a
    // grouped convolution over 8 channels in 4, which run shifted rows forward and unpacked
    // dcol tiles for the input gradient at a window of 18, below every shifted reference's and
    // over whole pages, where the dcol references are over 28×28: seed 6's
    // `3x32x32-conv3x3x8p1b0-bn:relu-conv3x3x8p1g4b0-bn:relu-...` at batch 64 ran that layer's
    // forward 2.5× and its backward 1.7× their price (one thread).
    let conv_panel = [
        pair((8, 16, 3, 32), 1, 16)?,
        pair((8, 28, 3, 32), 1, 16)?,
        pair((2, 32, 3, 8), 1, 16)?,
        pair((8, 32, 3, 32), 1, 16)?,
        pair((8, 32, 3, 32), 1, 128)?,
        pair((16, 32, 3, 32), 1, 128)?,
        pair((8, 28, 5, 32), 1, 16)?,
        pair((8, 32, 5, 32), 1, 16)?,
        pair((16, 13, 3, 32), 1, 16)?,
        pair((16, 32, 3, 32), 1, 16)?,
        pair((32, 14, 5, 64), 1, 8)?,
        pair((4, 32, 5, 16), 1, 16)?,
    ]
    .concat();
    // 32x28x28 with 1×1 kernels: a mid-network window on the small kernels (an inverted
    // residual block's expansion from few channels), whose backward ran 3–6× its prediction from
    // the 1-channel first-layer shapes alone.
    // Each at batch 16 and 128 (since profile format 15): these passes run on im2col tiles, per
    // window value as much as per product, and slow down as the batch's values outgrow the
    // caches — 32→64 1×1 over 28×28, one thread, input gradient 150 GFLOP/s at batch 16 and 64
    // at 128 — where the panel kernels hardly do (8x16x16 3×3: 114 and 93): mobilenet-style
    // 1×1 layers over 16–64 channels at batch 128 ran 1.6–2.6× their backward priced at 16.
    let conv_small = [16, 128]
        .into_iter()
        .map(|batch| {
            Ok([pair((1, 28, 3, 16), 1, batch)?, pair((1, 28, 5, 32), 1, batch)?, pair((32, 28, 1, 64), 1, batch)?]
                .concat())
        })
        .collect::<Result<Vec<_>>>()?
        .concat();
    // 4x32x32 with 3×3 kernels at stride 2 (since profile format 15): few channels at a stride
    // run on im2col tiles, as the 1-channel small references do (`conv::Tiles::passes`:
    // tiled, tiled, dcol), at 22–25 GFLOP/s; priced from the strided panel references, grouped
    // 16→32 3×3 at stride 2 (4-channel groups) ran 2.9× its forward and 2.6× its backward.
    let conv_strided =
        [pair((16, 16, 3, 32), 2, 32)?, pair((64, 16, 3, 64), 2, 16)?, pair((4, 32, 3, 8), 2, 16)?].concat();
    // Depthwise: the kernel's cost per tap grows as planes shrink (it computes over the padded
    // plane) and at stride 2 (the input's phase planes): mobilenet_v2's run from 32×32 to 2×2.
    let depthwise = [
        (32, 16, 3, 1, 32),
        (32, 16, 5, 1, 32),
        (192, 4, 3, 1, 32),
        (384, 2, 3, 1, 32),
        (64, 16, 3, 2, 32),
        (192, 4, 3, 2, 32),
    ]
    .into_iter()
    .map(|(c, side, k, s, batch)| depthwise_rates((c, side, k, s), batch, &team, min_s))
    .collect::<Result<Vec<_>>>()?;
    // 1×1 convolutions over more than 64 channels: the engine's plain products on x, long rows.
    let conv_pointwise = [pair((96, 16, 1, 96), 1, 32)?, pair((384, 4, 1, 256), 1, 32)?].concat();
    let pool_padded = padded_pool_rates(&team, min_s)?;
    let sizes = [64 << 10, 512 << 10, 4 << 20];
    let passes: Vec<PassRates> = sizes.iter().map(|&n| pass_rates(n, &team, min_s, true)).collect();
    // Warm at the two smaller sizes; at 4M values a set's three arrays (48 MiB) outgrow the
    // last-level cache anyway, and the cold timing stands for both.
    let passes_warm: Vec<PassRates> = sizes
        .iter()
        .zip(&passes)
        .map(|(&n, cold)| if 12 * n > last_level_cache() { *cold } else { pass_rates(n, &team, min_s, false) })
        .collect();
    let dropout = dropout_rate(256 << 10, min_s);
    // The sparse backward at each panel window, at a quarter of the filters and all of them
    // (since profile format 15): its cost per dense GFLOP grows as filters shrink, since the
    // input gradient's per-position work (scanning δ's filters, loading and storing a window's
    // sums) is shared among fewer of them.
    let conv_sparse = [(8, 16, 3, 32), (16, 13, 3, 32), (32, 14, 5, 64)]
        .into_iter()
        .zip([16, 16, 8])
        .flat_map(|((c, side, k, f), batch)| [(c, side, k, f / 4, batch), (c, side, k, f, batch)])
        .map(|(c, side, k, f, batch)| sparse_rates((c, side, k, f), batch, &team, min_s))
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .flatten()
        .collect();
    // The pools and layout changes of the suite's CNNs, at its batch of 128: f pools 16x26x26
    // and 32x11x11 and hands 32 planes of 5×5 to its dense layer; a CIFAR input arrives as 3
    // planes of 32×32. Repeated calls keep a pool's buffers (2–6 MiB) in cache, which training
    // does not; the model adds that for the backward (`model::Model::pool`).
    let pool = vec![pool_rates((32, 11), 128, &team, min_s)?, pool_rates((16, 26), 128, &team, min_s)?];
    let regroup = vec![regroup_rates((32, 25), 128, min_s), regroup_rates((3, 1024), 128, min_s)];
    // A 6-layer 1-wide network's step, for the fixed cost per layer that the products and
    // passes above leave out (call and dispatch costs: the bulk of a one-example step).
    let deep = Spec::dense(1, &[(1, Activation::Identity); 6]);
    let mut e = Engine::new(&deep, &init::init(&deep, 1), settings)?;
    let deep_step = time(min_s, 5, || {
        let _ = e.train_step(&[0.5], &[0]);
    });
    let mut profile = Profile {
        version: VERSION,
        machine: machine_id(),
        threads,
        created: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        forward,
        weight_grad,
        input_grad,
        stream,
        sgd,
        momentum,
        adam,
        activation_forward,
        activation_backward,
        step_overhead,
        conv_panel,
        conv_small,
        conv_sparse,
        sgd_fused,
        momentum_fused,
        layer_overhead: 0.0,
        pool,
        regroup,
        conv_strided,
        depthwise,
        conv_pointwise,
        passes,
        passes_warm,
        last_level_cache: last_level_cache(),
        pool_padded,
        dropout,
        quick,
        simd: simd::path().name().to_string(),
        fma_ceiling,
    };
    // What the model does not explain of the five extra layers, per layer.
    let modelled = |spec: &Spec| super::model::step_seconds(spec, Loss::Mse, Optimizer::Sgd, 1, &profile, threads);
    let unexplained = (deep_step - step_overhead) - (modelled(&deep) - modelled(&tiny));
    profile.layer_overhead = (unexplained / 5.0).max(0.0);
    Ok(profile)
}
