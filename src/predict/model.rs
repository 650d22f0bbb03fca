//! The time model: the ledger's work, the bytes each phase moves, and a machine's rates.

use super::devices::Device;
use super::profile::{
    ConvRates, DepthwiseRates, GemmPoint, PassRates, Profile, RegroupRates, SparseRates, StreamPoint,
};
use crate::cost::Config;
use crate::spec::{Activation, Conv, Kind, Layer, Loss, Optimizer, Source, Spec};
use serde::Serialize;

/// Where the rates come from.
#[derive(Clone, Copy, Debug)]
pub enum Machine<'a> {
    /// This machine, as `calibrate` measured it.
    Measured(&'a Profile),
    /// A roofline at given peaks: GFLOP/s for matrix products, GFLOP/s for other arithmetic, GB/s.
    Roofline { matmul_gflops: f64, vector_gflops: f64, bandwidth_gbs: f64 },
}

impl Machine<'_> {
    /// The roofline for a named device; `precision` picks the matrix-product peak.
    pub fn device(d: &Device, precision: &str) -> Machine<'static> {
        let matmul = match precision {
            "tf32" => d.tf32_gflops.unwrap_or(d.fp32_gflops),
            "bf16" => d.bf16_gflops.unwrap_or(d.fp32_gflops),
            _ => d.fp32_gflops,
        };
        Machine::Roofline { matmul_gflops: matmul, vector_gflops: d.fp32_gflops, bandwidth_gbs: d.bandwidth_gbs }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct LayerTime {
    pub layer: usize,
    pub forward_seconds: f64,
    pub backward_seconds: f64,
    pub update_seconds: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Prediction {
    pub step_seconds: f64,
    pub epoch_seconds: f64,
    pub run_seconds: f64,
    /// For one full batch.
    pub layers: Vec<LayerTime>,
    pub loss_seconds: f64,
    pub overhead_seconds: f64,
    /// What the numbers assume, in words.
    pub basis: String,
}

/// Position of `x` between grid values, in log space: (lower index, upper index, weight of upper).
fn bracket(grid: &[usize], x: usize) -> (usize, usize, f64) {
    let lx = (x.max(1) as f64).ln();
    if x <= grid[0] {
        return (0, 0, 0.0);
    }
    for i in 1..grid.len() {
        if x <= grid[i] {
            let (a, b) = ((grid[i - 1] as f64).ln(), (grid[i] as f64).ln());
            return (i - 1, i, (lx - a) / (b - a));
        }
    }
    (grid.len() - 1, grid.len() - 1, 0.0)
}

/// GFLOP/s at (m, k, n): trilinear in log space over the measured grid, clamped at its edges.
fn gemm_rate(points: &[GemmPoint], m: usize, k: usize, n: usize) -> f64 {
    use super::calibrate::{GRID_KN, GRID_M};
    let at = |i: usize, j: usize, l: usize| {
        points
            .iter()
            .find(|p| p.m == GRID_M[i] && p.k == GRID_KN[j] && p.n == GRID_KN[l])
            .map_or(1.0, |p| p.gflops.max(1e-3).ln())
    };
    let (i0, i1, ti) = bracket(&GRID_M, m);
    let (j0, j1, tj) = bracket(&GRID_KN, k);
    let (l0, l1, tl) = bracket(&GRID_KN, n);
    let mut v = 0.0;
    for (i, wi) in [(i0, 1.0 - ti), (i1, ti)] {
        for (j, wj) in [(j0, 1.0 - tj), (j1, tj)] {
            for (l, wl) in [(l0, 1.0 - tl), (l1, tl)] {
                v += wi * wj * wl * at(i, j, l);
            }
        }
    }
    v.exp()
}

/// Where window size `k` falls among reference shapes ordered by window size: the pair around
/// it and k's place between them in log window size (0 at the first, 1 at the second), or the
/// nearest one alone outside them. None without any reference.
fn bracket_window<T: Copy>(refs: &[T], window: impl Fn(&T) -> usize, k: usize) -> Option<(T, T, f64)> {
    let (first, last) = (*refs.first()?, *refs.last()?);
    if k <= window(&first) {
        return Some((first, first, 0.0));
    }
    for w in refs.windows(2) {
        if k <= window(&w[1]) {
            let (a, b) = ((window(&w[0]) as f64).ln(), (window(&w[1]) as f64).ln());
            return Some((w[0], w[1], ((k as f64).ln() - a) / (b - a)));
        }
    }
    Some((last, last, 0.0))
}

/// A pass's GFLOP/s at `f` filters from reference shapes of one window: each pass's time per
/// output position and window value is taken as α + β·F — forming the windows (or panels)
/// costs the same whatever the filters, the products grow with them — fitted through the two
/// filter counts measured; one shape alone gives its own rate.
fn rate_at(same_window: &[ConvRates], f: usize, pass: fn(&ConvRates) -> f64) -> f64 {
    let (Some(lo), Some(hi)) = (same_window.first(), same_window.last()) else { return 1.0 };
    if hi.filters <= lo.filters {
        return pass(lo);
    }
    // Nanoseconds per output position and window value, all filters together.
    let u = |r: &ConvRates| 2.0 * r.filters as f64 / pass(r).max(1e-3);
    let beta = ((u(hi) - u(lo)) / (hi.filters - lo.filters) as f64).max(0.0);
    let alpha = (u(lo) - beta * lo.filters as f64).max(0.0);
    2.0 * f as f64 / (alpha + beta * f as f64).max(1e-9)
}

/// Whether a plane of `values` f32 values fills whole 4 KiB pages (32×32 and its multiples).
/// Such planes put a channel's values and the next channel's at the same place in the cache's
/// sets, and the engine's dcol and col2im passes slow down on them: the 8-channel 3×3
/// backward took 3.2–3.5× as long per position over 32×32 planes as over 16×16 (batch 64), and
/// over 28×28 planes ran at 16×16's rate, 2.7× under the prediction placed between the two by
/// plane size (conv3x3x8p1b0 over 8x28x28 at batch 64, one thread: 1.56 ms measured, 4.28
/// predicted; `flopnet bench 1x28x28-conv5x5x8p2b0-bn:relu-conv5x5x8p2b0-bn:relu-conv3x3x8p1b0-bn:relu-maxpool2-10
/// --batch 64 --threads 1`). So a plane is placed among the reference planes of its own kind.
fn whole_pages(values: usize) -> bool {
    values > 0 && values.is_multiple_of(1024)
}

/// The convolution rates at window size `k`, `f` filters, `plane` output positions per
/// example and batch `batch`: at each reference window, plane and batch as [`rate_at`] places
/// them, then, where a window and plane were measured at several batches, log-linear in the
/// batch between the pair around `batch` (the nearest outside them; since profile format 15),
/// then, where a window was measured at several planes, log-linear in the plane between the pair around `plane` (the
/// nearest outside them), then log-linear in the window between the pair around `k` (the
/// nearest outside them).
fn conv_rates(refs: &[ConvRates], k: usize, f: usize, plane: usize, batch: usize) -> ConvRates {
    let mut windows: Vec<usize> = refs.iter().map(|r| r.window).collect();
    windows.sort_unstable();
    windows.dedup();
    let mix_rates = |a: &ConvRates, b: &ConvRates, t: f64| {
        let mix = |x: f64, y: f64| (x.max(1e-3).ln() * (1.0 - t) + y.max(1e-3).ln() * t).exp();
        (mix(a.forward, b.forward), mix(a.weight_grad, b.weight_grad), mix(a.input_grad, b.input_grad))
    };
    // Planes of whole 4 KiB pages (32×32 values and their multiples) alias in the cache: a plane
    // is placed among its own kind where the window was measured at one, and where some windows
    // were, among those windows alone (since profile format 15: the 4-channel 5×5 reference
    // exists over 32×32 only, whose input gradient ran 3–5× slower per value than over 28×28).
    let own_kind = |w: usize| refs.iter().any(|r| r.window == w && whole_pages(r.plane) == whole_pages(plane));
    let any_own = windows.iter().any(|&w| own_kind(w));
    windows.retain(|&w| !any_own || own_kind(w));
    let at_f: Vec<ConvRates> = windows
        .iter()
        .filter_map(|&w| {
            let mut planes: Vec<usize> = refs.iter().filter(|r| r.window == w).map(|r| r.plane).collect();
            planes.sort_unstable();
            planes.dedup();
            if planes.iter().any(|&pl| whole_pages(pl) == whole_pages(plane)) {
                planes.retain(|&pl| whole_pages(pl) == whole_pages(plane));
            }
            let by_plane: Vec<ConvRates> = planes
                .iter()
                .filter_map(|&pl| {
                    let mut batches: Vec<usize> =
                        refs.iter().filter(|r| r.window == w && r.plane == pl).map(|r| r.batch).collect();
                    batches.sort_unstable();
                    batches.dedup();
                    let by_batch: Vec<ConvRates> = batches
                        .iter()
                        .map(|&bt| {
                            let mut same: Vec<ConvRates> = refs
                                .iter()
                                .filter(|r| r.window == w && r.plane == pl && r.batch == bt)
                                .copied()
                                .collect();
                            same.sort_by_key(|r| r.filters);
                            ConvRates {
                                window: w,
                                filters: f,
                                plane: pl,
                                batch: bt,
                                forward: rate_at(&same, f, |r| r.forward),
                                weight_grad: rate_at(&same, f, |r| r.weight_grad),
                                input_grad: rate_at(&same, f, |r| r.input_grad),
                                ..ConvRates::default()
                            }
                        })
                        .collect();
                    let (a, b, t) = bracket_window(&by_batch, |r| r.batch.max(1), batch.max(1))?;
                    let (forward, weight_grad, input_grad) = mix_rates(&a, &b, t);
                    Some(ConvRates {
                        window: w,
                        filters: f,
                        plane: pl,
                        forward,
                        weight_grad,
                        input_grad,
                        ..ConvRates::default()
                    })
                })
                .collect();
            let (a, b, t) = bracket_window(&by_plane, |r| r.plane, plane)?;
            let (forward, weight_grad, input_grad) = mix_rates(&a, &b, t);
            Some(ConvRates { window: w, filters: f, plane, forward, weight_grad, input_grad, ..ConvRates::default() })
        })
        .collect();
    let Some((a, b, t)) = bracket_window(&at_f, |r| r.window, k) else {
        return ConvRates {
            window: k,
            filters: f,
            plane,
            forward: 1.0,
            weight_grad: 1.0,
            input_grad: 1.0,
            ..ConvRates::default()
        };
    };
    let (forward, weight_grad, input_grad) = mix_rates(&a, &b, t);
    ConvRates { window: k, filters: f, plane, forward, weight_grad, input_grad, ..ConvRates::default() }
}

/// Which kernel the engine runs for each pass of a reference convolution (`conv::Tiles::passes`,
/// asked of the engine, not restated); None for one that does not record its shape.
fn reference_passes(r: &ConvRates) -> Option<[&'static str; 3]> {
    if r.channels == 0 {
        return None;
    }
    let sh = super::calibrate::reference_shape(r.channels, r.side, r.kernel, r.filters, r.stride)?;
    Some(crate::engine::conv::Tiles::for_shape(&sh).passes(&sh))
}

/// The threads the engine splits a pass of `work` across, of a team of `threads`: every one
/// from `min` up, else the caller's alone (the engine's own thresholds, `gemm::PARALLEL_MIN_MACS`
/// multiply-adds for a convolution's passes, `conv::PARALLEL_MIN_VALUES` values for the
/// per-value passes: below them a hand-off to the team costs more than it saves).
fn team_share(work: usize, min: usize, threads: usize) -> f64 {
    if work >= min { threads.max(1) as f64 } else { 1.0 }
}

/// A convolution's multiply-adds per pass (per group: F/g filters, a window of C/g·kh·kw, B·H'·W'
/// output positions), as the engine compares them with `gemm::PARALLEL_MIN_MACS`.
fn conv_macs(sh: &crate::engine::conv::ConvShape, batch: usize) -> usize {
    sh.f.saturating_mul(sh.ckk()).saturating_mul(batch).saturating_mul(sh.oh * sh.ow)
}

/// A reference's rates per thread it ran on: the references a team of `threads` timed at sizes
/// the engine splits ran on all of them, the smallest (a 1-channel 3×3 convolution into 4
/// filters at batch 16, 4-channel groups at stride 2 into 2) on one, and at two threads the
/// former ran 1.6–2.1× and the latter 1.0–1.2× their one-thread rates (profiles of 21:47–22:33
/// UTC against one of 23:21, 2026-11-30). Mixed as they were, a layer split across the team was
/// priced from rates partly of one thread and a layer that runs on one (a 1×1 projection over
/// 16×16 at batch 16: 0.5M multiply-adds) at a whole team's rate.
fn per_thread(r: &ConvRates, threads: usize) -> ConvRates {
    let shape = (r.channels > 0)
        .then(|| super::calibrate::reference_shape(r.channels, r.side, r.kernel, r.filters, r.stride.max(1)))
        .flatten();
    let parts = match shape {
        Some(sh) => team_share(conv_macs(&sh, r.batch.max(1)), crate::engine::gemm::PARALLEL_MIN_MACS, threads),
        None => threads.max(1) as f64,
    };
    ConvRates { forward: r.forward / parts, weight_grad: r.weight_grad / parts, input_grad: r.input_grad / parts, ..*r }
}

/// A convolution's rates, each pass from the references whose same pass ran the same kernel
/// (`passes`, the layer's; [`reference_passes`] gives the references'), placed by
/// [`conv_rates`] at the layer's window, filters and output plane (`at`). An input gradient
/// that runs as the transposed convolution (`transposed shifted`, `transposed panel`) is that
/// kernel's forward over the transposed shape — F·kh·kw window values, C filters, the input's
/// plane (`input`: C, H·W and kh·kw) — and priced at the forward rates of the references that
/// ran it. A pass no reference ran takes the rates of the layer's `family` instead. Where
/// references at the layer's kind of `stride` (1, or more) ran a kernel, those alone count;
/// `batch` is the layer's, for references measured at several. The rates are per thread
/// ([`per_thread`]): the caller multiplies them by the threads the layer's passes run on.
fn kernel_rates(
    p: &Profile,
    family: &[ConvRates],
    passes: [&str; 3],
    (k, f, plane): (usize, usize, usize),
    (c, in_plane, window): (usize, usize, usize),
    (stride, batch): (usize, usize),
) -> ConvRates {
    let all = [&p.conv_panel, &p.conv_small, &p.conv_strided, &p.conv_pointwise];
    let family: Vec<ConvRates> = family.iter().map(|r| per_thread(r, p.threads)).collect();
    // Where references of the layer's kind of stride (1, or more) ran the kernel, those alone:
    // the same kernel over a strided window reads its input otherwise (since profile format 15,
    // the few-channel im2col tiles were measured at stride 2 as well as 1).
    let ran = |pass: usize, name: &str| -> Vec<ConvRates> {
        let all: Vec<ConvRates> = all
            .iter()
            .flat_map(|refs| refs.iter())
            .filter(|r| reference_passes(r).is_some_and(|ks| ks[pass] == name))
            .map(|r| per_thread(r, p.threads))
            .collect();
        let same = |r: &ConvRates| (r.stride.max(1) > 1) == (stride > 1);
        if all.iter().any(same) { all.into_iter().filter(same).collect() } else { all }
    };
    let fallback = conv_rates(&family, k, f, plane, batch);
    let placed = |refs: Vec<ConvRates>, at: (usize, usize, usize), rate: fn(&ConvRates) -> f64, or: f64| {
        if refs.is_empty() { or } else { rate(&conv_rates(&refs, at.0, at.1, at.2, batch)) }
    };
    let input_grad = match passes[2].strip_prefix("transposed ") {
        Some(kernel) => placed(ran(0, kernel), (f * window, c, in_plane), |r| r.forward, fallback.input_grad),
        None => placed(ran(2, passes[2]), (k, f, plane), |r| r.input_grad, fallback.input_grad),
    };
    ConvRates {
        forward: placed(ran(0, passes[0]), (k, f, plane), |r| r.forward, fallback.forward),
        weight_grad: placed(ran(1, passes[1]), (k, f, plane), |r| r.weight_grad, fallback.weight_grad),
        input_grad,
        ..fallback
    }
}

/// The depthwise rates at window size `k` (kh·kw), stride `stride` and input planes of `plane`
/// values. The references of the nearest stride at or below it (3×3 ones, or whatever window
/// they were measured at) placed by plane, log-linear in its size between the pair around it
/// (the nearest one outside them); then scaled by window as the references that share the first
/// one's stride and plane (3×3 and 5×5 over 16×16 at stride 1) scale, linear in the costs
/// between the pair around `k`.
fn depthwise_rates(refs: &[DepthwiseRates], k: usize, stride: usize, plane: usize) -> DepthwiseRates {
    let zero = DepthwiseRates { window: k, stride, plane, forward: 0.0, weight_grad: 0.0, input_grad: 0.0 };
    let Some(first) = refs.first() else { return zero };
    let mut by_window: Vec<DepthwiseRates> =
        refs.iter().filter(|r| (r.stride, r.plane) == (first.stride, first.plane)).copied().collect();
    by_window.sort_by_key(|r| r.window);
    let at_window = |k: usize| {
        bracket_window(&by_window, |r| r.window, k).map(|(a, b, t)| {
            let mix = |x: f64, y: f64| x * (1.0 - t) + y * t;
            [mix(a.forward, b.forward), mix(a.weight_grad, b.weight_grad), mix(a.input_grad, b.input_grad)]
        })
    };
    let s = refs.iter().map(|r| r.stride).filter(|&s| s <= stride.max(1)).max().unwrap_or(first.stride);
    let mut by_plane: Vec<DepthwiseRates> =
        refs.iter().filter(|r| r.stride == s && r.window == first.window).copied().collect();
    by_plane.sort_by_key(|r| r.plane);
    let Some((a, b, t)) = bracket_window(&by_plane, |r| r.plane, plane) else { return zero };
    let mix = |x: f64, y: f64| x * (1.0 - t) + y * t;
    let base = [mix(a.forward, b.forward), mix(a.weight_grad, b.weight_grad), mix(a.input_grad, b.input_grad)];
    let scale = match (at_window(k), at_window(first.window)) {
        (Some(at_k), Some(at_first)) => [0, 1, 2].map(|i| if at_first[i] > 0.0 { at_k[i] / at_first[i] } else { 1.0 }),
        _ => [1.0; 3],
    };
    DepthwiseRates {
        forward: base[0] * scale[0],
        weight_grad: base[1] * scale[1],
        input_grad: base[2] * scale[2],
        ..zero
    }
}

/// The graph path's per-value work (the fields of [`PassRates`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PassKind {
    NormForward,
    NormBackward,
    NormGrads,
    NormInfer,
    ReluForward,
    ReluBackward,
    Add,
    Copy,
    Sum,
    MeanForward,
    MeanBackward,
}

impl PassKind {
    fn rate(self, r: &PassRates) -> f64 {
        match self {
            PassKind::NormForward => r.norm_forward,
            PassKind::NormBackward => r.norm_backward,
            PassKind::NormGrads => r.norm_grads,
            PassKind::NormInfer => r.norm_infer,
            PassKind::ReluForward => r.relu_forward,
            PassKind::ReluBackward => r.relu_backward,
            PassKind::Add => r.add,
            PassKind::Copy => r.copy,
            PassKind::Sum => r.sum,
            PassKind::MeanForward => r.mean_forward,
            PassKind::MeanBackward => r.mean_backward,
        }
    }

    /// Bytes moved and arithmetic done per value, for the roofline: batch normalization's
    /// forward reads x twice (two sums) and writes z once; its backward reads δ twice and x
    /// twice and writes dx; the rest one pass each.
    fn traffic(self) -> (f64, f64) {
        match self {
            PassKind::NormForward => (16.0, 6.0),
            PassKind::NormBackward => (20.0, 9.0),
            PassKind::NormGrads => (12.0, 5.0),
            PassKind::ReluForward | PassKind::Copy => (8.0, 0.0),
            PassKind::NormInfer => (8.0, 2.0),
            PassKind::ReluBackward | PassKind::Add | PassKind::Sum => (12.0, 1.0),
            PassKind::MeanForward => (4.0, 1.0),
            PassKind::MeanBackward => (4.0, 0.0),
        }
    }
}

/// The sparse backward's costs at window size `k` and `f` filters: at each reference window,
/// each cost's time per output position and window value taken as α + β·F through the two
/// filter counts measured (as [`rate_at`] does for the dense passes; one count alone gives its
/// own costs), then placed by window as [`conv_rates`] places rates (linear in the costs);
/// None without any.
fn sparse_rates(refs: &[SparseRates], k: usize, f: usize) -> Option<SparseRates> {
    let mut windows: Vec<usize> = refs.iter().map(|r| r.window).collect();
    windows.sort_unstable();
    windows.dedup();
    let at_f: Vec<SparseRates> = windows
        .iter()
        .map(|&w| {
            let mut same: Vec<SparseRates> = refs.iter().filter(|r| r.window == w).copied().collect();
            same.sort_by_key(|r| r.filters);
            let (lo, hi) = (same[0], same[same.len() - 1]);
            // Seconds per dense GFLOP at f from the two counts: per position and window value
            // the time is F·x (up to a constant), linear in F.
            let place = |x_lo: f64, x_hi: f64| {
                if hi.filters <= lo.filters || f == 0 {
                    return x_hi;
                }
                let (u_lo, u_hi) = (lo.filters as f64 * x_lo, hi.filters as f64 * x_hi);
                let beta = ((u_hi - u_lo) / (hi.filters - lo.filters) as f64).max(0.0);
                let alpha = (u_lo - beta * lo.filters as f64).max(0.0);
                (alpha + beta * f as f64) / f as f64
            };
            let both = |a: (f64, f64), b: (f64, f64)| (place(a.0, b.0), place(a.1, b.1));
            SparseRates {
                window: w,
                filters: f,
                weight_grad: both(lo.weight_grad, hi.weight_grad),
                input_grad: both(lo.input_grad, hi.input_grad),
            }
        })
        .collect();
    let (a, b, t) = bracket_window(&at_f, |r| r.window, k)?;
    let mix = |x: (f64, f64), y: (f64, f64)| (x.0 * (1.0 - t) + y.0 * t, x.1 * (1.0 - t) + y.1 * t);
    Some(SparseRates {
        window: k,
        filters: f,
        weight_grad: mix(a.weight_grad, b.weight_grad),
        input_grad: mix(a.input_grad, b.input_grad),
    })
}

/// Seconds per value at size `size` from references ordered by size: log-linear in the size
/// between the pair around it, the nearest one outside them; 0 without any.
fn per_value<T: Copy>(refs: &[T], size: impl Fn(&T) -> usize, rate: impl Fn(&T) -> f64, at: usize) -> f64 {
    bracket_window(refs, &size, at).map_or(0.0, |(a, b, t)| rate(&a) * (1.0 - t) + rate(&b) * t)
}

/// The share of each node's δ the model expects to be nonzero in training (the gradient at its
/// output, its own activation's derivative applied), following the gradient back from the
/// loss: a relu zeroes about half of it; a k×k max pool of stride k hands its input one value
/// in k² of its own; a residual sum hands each input its own δ (since profile format 15: a
/// block's last convolution, identity into a relu sum before a 2×2 pool, takes the sparse
/// backward as the engine finds δ sparse, and ran 2.9× the dense backward it was priced at:
/// `3x32x32-conv5x5x16p2:relu-[conv3x3x16p1:relu-conv3x3x16p1:identity]:relu-maxpool2-64-10`
/// at batch 16, one thread, 2.74 ms against 0.95); anything else hands on a dense gradient, and
/// gradients from several readers add up. The second convolution of network e has 11.7–12.4%
/// nonzero on Fashion-MNIST (`examples/delta_share.rs`); this gives 12.5%.
fn expected_density(spec: &Spec, readers: &[Vec<usize>]) -> Vec<f64> {
    let mut own = vec![1.0; spec.layers.len()];
    for i in (0..spec.layers.len()).rev() {
        let handed = |r: usize| match spec.layers[r].kind {
            Kind::MaxPool(p) if p.stride == p.k => own[r] / (p.k * p.k) as f64,
            Kind::Add(_) => own[r],
            _ => 1.0,
        };
        let arriving =
            if readers[i].is_empty() { 1.0 } else { readers[i].iter().map(|&r| handed(r)).sum::<f64>().min(1.0) };
        own[i] = if spec.layers[i].activation == Activation::Relu { 0.5 } else { 1.0 } * arriving;
    }
    own
}

/// Seconds per item at a working set of `bytes`: log-linear between measured sizes.
fn per_item(points: &[StreamPoint], bytes: f64) -> f64 {
    let Some(first) = points.first() else { return 0.0 };
    if bytes <= first.bytes {
        return first.seconds_per_item;
    }
    for w in points.windows(2) {
        if bytes <= w[1].bytes {
            let t = (bytes.ln() - w[0].bytes.ln()) / (w[1].bytes.ln() - w[0].bytes.ln());
            return w[0].seconds_per_item * (1.0 - t) + w[1].seconds_per_item * t;
        }
    }
    points.last().map_or(0.0, |p| p.seconds_per_item)
}

/// The measured extra cost per value of `act`; relu6, which calibrate does not time (the
/// engine's dense layers do not run it), at relu's: one more comparison in the same pass.
fn act_cost(table: &[(String, f64)], act: Activation) -> f64 {
    let act = if act == Activation::Relu6 { Activation::Relu } else { act };
    table.iter().find(|(n, _)| n == act.name()).map_or(0.0, |(_, s)| *s)
}

use crate::engine::{Feed, UPDATE_SPLIT_MIN};

#[derive(Clone, Copy)]
struct Model<'a> {
    machine: Machine<'a>,
    threads: usize,
    /// How much of the per-value passes' work finds its operands in cache ([`warm_share`]),
    /// from 0 (the cold rates) to 1 (the warm ones); set per step by [`Model::at_step`].
    warm: f64,
}

/// The share of a step's per-value passes (batch normalization, sums, copies, relu passes) to
/// price at calibrate's warm rates rather than its cold ones, from the step's working set
/// (`footprint` bytes, the ledger's peak) and the last-level cache (`cache` bytes): all of it
/// where the working set fits in the cache, none where it outgrows it four times over (as
/// calibrate's cold sets of arrays do), log-linear between. Calibrate's cold rates alone
/// priced batch normalization 1.6–2.3× and the residual sums up to 4× what they took in small
/// networks whose whole step stays in L2 and L3 (docs/prediction.md, "Warm passes").
pub fn warm_share(footprint: f64, cache: usize) -> f64 {
    if cache == 0 || !footprint.is_finite() {
        return 0.0;
    }
    let over = (footprint / cache as f64).max(1.0);
    (1.0 - over.ln() / 4f64.ln()).clamp(0.0, 1.0)
}

impl<'a> Model<'a> {
    fn new(machine: Machine<'a>, threads: usize) -> Model<'a> {
        Model { machine, threads, warm: 0.0 }
    }

    /// This model for a step of `spec` at batch `b`, and the step's working set in bytes (the
    /// ledger's peak with this many threads), which places the per-value passes between
    /// calibrate's warm and cold rates ([`warm_share`]).
    fn at_step(&self, spec: &Spec, opt: Optimizer, b: usize) -> (Model<'a>, f64) {
        let footprint = crate::cost::memory::memory_for_threads(spec, opt, b as u128, self.threads).peak as f64;
        let warm = match self.machine {
            Machine::Measured(p) if !p.passes_warm.is_empty() => warm_share(footprint, p.last_level_cache),
            _ => 0.0,
        };
        (Model { warm, ..*self }, footprint)
    }

    fn gemm(&self, which: fn(&Profile) -> &Vec<GemmPoint>, m: usize, k: usize, n: usize) -> f64 {
        let flop = 2.0 * (m * k * n) as f64;
        let bytes = 4.0 * (m * k + k * n + m * n) as f64;
        match self.machine {
            Machine::Measured(p) => flop / (gemm_rate(which(p), m, k, n) * 1e9),
            Machine::Roofline { matmul_gflops, bandwidth_gbs, .. } => {
                (flop / (matmul_gflops * 1e9)).max(bytes / (bandwidth_gbs * 1e9))
            }
        }
    }

    /// A pass over `items` values, touching `bytes_per` bytes each, doing `flop_per` arithmetic.
    fn stream(&self, items: usize, bytes_per: f64, flop_per: f64) -> f64 {
        self.stream_in(items, bytes_per, flop_per, items as f64 * bytes_per)
    }

    /// The same, for values picked out of a working set of `working_set` bytes (which decides the
    /// cache level they come from).
    fn stream_in(&self, items: usize, bytes_per: f64, flop_per: f64, working_set: f64) -> f64 {
        match self.machine {
            Machine::Measured(p) => items as f64 * per_item(&p.stream, working_set),
            Machine::Roofline { vector_gflops, bandwidth_gbs, .. } => {
                (items as f64 * flop_per / (vector_gflops * 1e9)).max(items as f64 * bytes_per / (bandwidth_gbs * 1e9))
            }
        }
    }

    /// A roofline pass of `flop` arithmetic over `items` values of `bytes_per` bytes each.
    fn stream_flops(&self, flop: f64, items: usize, bytes_per: f64) -> f64 {
        match self.machine {
            Machine::Measured(_) => self.stream(items, bytes_per, flop / items.max(1) as f64),
            Machine::Roofline { vector_gflops, bandwidth_gbs, .. } => {
                (flop / (vector_gflops * 1e9)).max(items as f64 * bytes_per / (bandwidth_gbs * 1e9))
            }
        }
    }

    /// One of the graph networks' per-value passes over `values` values (a batch's worth):
    /// at the rate calibrate measured for it at the nearest sizes (log-linear between them).
    ///
    /// Calibrate times them at 64K values and up, which the engine splits across the team; a
    /// pass over fewer runs on one thread (`conv::PARALLEL_MIN_VALUES`), so takes the team's
    /// time per value once per thread.
    fn pass(&self, kind: PassKind, values: usize) -> f64 {
        match self.machine {
            Machine::Measured(_) => values as f64 * self.per_pass_value(|r| kind.rate(r), values),
            Machine::Roofline { .. } => {
                let (bytes, flop) = kind.traffic();
                self.stream(values, bytes, flop)
            }
        }
    }

    /// Seconds per value of one of the `passes` rates over `values` values: between the cold
    /// and the warm tables as this step's working set places it ([`Model::at_step`]); a team's
    /// time per value once per thread below the size the engine splits at.
    fn per_pass_value(&self, rate: impl Fn(&PassRates) -> f64 + Copy, values: usize) -> f64 {
        let Machine::Measured(p) = self.machine else { return 0.0 };
        let alone = p.threads.max(1) as f64 / team_share(values, crate::engine::conv::PARALLEL_MIN_VALUES, p.threads);
        let cold = per_value(&p.passes, |r| r.values, rate, values);
        if self.warm <= 0.0 || p.passes_warm.is_empty() {
            return cold * alone;
        }
        (cold + self.warm * (per_value(&p.passes_warm, |r| r.values, rate, values) - cold)) * alone
    }

    fn activation(&self, act: Activation, items: usize, backward: bool) -> f64 {
        match self.machine {
            Machine::Measured(p) => {
                items as f64 * act_cost(if backward { &p.activation_backward } else { &p.activation_forward }, act)
            }
            Machine::Roofline { .. } => 0.0,
        }
    }

    /// The optimizer over `params` values. `arrays` is the bytes a parameter occupies across
    /// the arrays the pass walks (weights, gradient, state), which is how calibrate labels a
    /// table's working sets; `traffic` adds the bytes written back, for the roofline.
    fn update(&self, opt: Optimizer, params: usize) -> f64 {
        let (arrays, traffic, flop_per) = match opt {
            Optimizer::Sgd => (8.0, 12.0, 2.0),
            Optimizer::Momentum => (12.0, 20.0, 4.0),
            // AdamW: Adam's pass with one more multiplication (timed as Adam's).
            Optimizer::Adam => (16.0, 28.0, 13.0),
            Optimizer::AdamW => (16.0, 28.0, 14.0),
        };
        match self.machine {
            Machine::Measured(p) => {
                let table = match opt {
                    Optimizer::Sgd => &p.sgd,
                    Optimizer::Momentum => &p.momentum,
                    Optimizer::Adam | Optimizer::AdamW => &p.adam,
                };
                let split = if params >= UPDATE_SPLIT_MIN { self.threads as f64 } else { 1.0 };
                params as f64 * per_item(table, params as f64 * arrays) / split
            }
            Machine::Roofline { .. } => self.stream(params, traffic, flop_per),
        }
    }

    /// A dense layer's one-example update formed from its gradient row by row, never stored:
    /// the weights and the optimizer state move, 8 bytes a parameter with SGD, 16 with momentum.
    fn fused_update(&self, opt: Optimizer, params: usize) -> f64 {
        let bytes_per = if opt == Optimizer::Sgd { 8.0 } else { 16.0 };
        match self.machine {
            Machine::Measured(p) => {
                let table = if opt == Optimizer::Sgd { &p.sgd_fused } else { &p.momentum_fused };
                params as f64 * per_item(table, params as f64 * bytes_per)
            }
            Machine::Roofline { .. } => self.stream(params, bytes_per, 3.0),
        }
    }

    fn overhead(&self) -> f64 {
        match self.machine {
            Machine::Measured(p) => p.step_overhead,
            Machine::Roofline { .. } => 0.0,
        }
    }

    /// A dense layer's forward and backward seconds: X·Wᵀ, then dW = deltaᵀ·X and dX = delta·W
    /// (with `fused`, dW is not formed: the update applies it, see [`Model::update`]).
    fn dense(&self, l: &Layer, b: usize, first: bool, from_ce: bool, fused: bool) -> (f64, f64) {
        let (n, m) = (l.inputs, l.outputs);
        let forward = self.gemm(|p| &p.forward, b, n, m)
            + self.stream(b * m, 8.0, 1.0)
            + self.activation(l.activation, b * m, false);
        let delta = if from_ce { 0.0 } else { self.activation(l.activation, b * m, true) };
        let input_grad = if first { 0.0 } else { self.gemm(|p| &p.input_grad, b, m, n) };
        let weight_grad = if fused { 0.0 } else { self.gemm(|p| &p.weight_grad, m, b, n) };
        let backward = delta + weight_grad + self.stream(b * m, 4.0, 1.0) + input_grad;
        (forward, backward)
    }

    /// A convolution: three products of M = B·H'·W' rows (output positions) by K = C·kh·kw (a
    /// window) by N = F, 2·M·K·N FLOPs each — the forward, the weight gradient and (unless it is
    /// the first layer) the input gradient. With g groups each group is such a convolution of
    /// C/g channels and F/g filters (K = C/g·kh·kw), g of them. On a measured machine each
    /// runs at the rate calibrate measured for that pass through the engine's own convolutions
    /// at reference shapes of the same kind — the small kernels for windows of at most 64
    /// values, else the panel product at stride 1 and the packed product over im2col tiles at
    /// other strides — windows, bias, relu and scatter included. A depthwise convolution (one
    /// group per channel) runs its own kernel, priced per output value and window value at the
    /// rates measured at the nearest stride and plane size. A 1×1 convolution that the engine
    /// runs as plain products on x (over more than 64 channels) is priced at the rates
    /// measured through that path. Which path a layer takes is the engine's answer
    /// (`ConvShape::depthwise`, `Tiles::for_shape` and its methods), not a rule restated here.
    /// Under a roofline, as im2col: the window values copied into columns, the
    /// products, col2im's scatter back (a depthwise one as a pass at the vector peak).
    ///
    /// Where δ is expected sparse enough for the engine's sparse backward (`rho`, the node's
    /// [`expected_density`], at most `SPARSE_MAX_DENSITY`, ungrouped, a shape the engine takes
    /// it on, `Tiles::takes_sparse` — never one whose input gradient it adds, `Tiles::adds_dx` —,
    /// a profile that measured it), the two gradients cost, per dense GFLOP, a + b·ρ as calibrate
    /// fitted them.
    fn conv(&self, l: &Layer, c: &Conv, b: usize, first: bool, rho: f64) -> (f64, f64) {
        // Saturating: a spec too large to train still gets a (huge) time, not an overflow.
        let rows = b.saturating_mul(l.output.h).saturating_mul(l.output.w);
        let window = c.kh * c.kw;
        let k = (l.input.c / c.groups.max(1)).saturating_mul(window);
        let f = c.filters;
        let outputs = b.saturating_mul(l.outputs);
        let delta = self.activation(l.activation, outputs, true);
        let act = self.activation(l.activation, outputs, false);
        // The engine's own choices for this layer: its depthwise kernel, and the plain products
        // of a 1×1 convolution over many channels (per group).
        let sh = crate::engine::conv::ConvShape::of(l);
        let depthwise = sh.is_some_and(|sh| sh.depthwise());
        let tiles = sh.map(|sh| (sh.group(), crate::engine::conv::Tiles::for_shape(&sh.group())));
        let pointwise = tiles.is_some_and(|(g, t)| t.pointwise(&g));
        // The small kernels (few window values) and the panel product at stride 1, else the
        // strided references (calibrate measures those through the engine, so they price
        // whichever kernel it runs at a stride: packed im2col, phase panels or shifted rows).
        let small = tiles.is_some_and(|(_, t)| t.kernel == crate::engine::gemm::Kernel::Avx);
        let panel = tiles.is_some_and(|(g, t)| g.s == 1 && t.panel_forward(&g));
        if let Machine::Measured(p) = self.machine {
            if depthwise {
                let r = depthwise_rates(&p.depthwise, window, c.stride, l.input.h * l.input.w);
                let taps = outputs as f64 * window as f64;
                let input_grad = if first { 0.0 } else { taps * r.input_grad };
                return (taps * r.forward + act, delta + taps * r.weight_grad + input_grad);
            }
            let family = if pointwise {
                // A 1×1 convolution over many channels runs as plain products on x, the input
                // its own im2col matrix (`Tiles::pointwise`): w · x, δ · xᵀ and wᵀ · δ, at the
                // rates calibrate measured through the engine's convolution at such shapes.
                &p.conv_pointwise
            } else if small {
                &p.conv_small
            } else if panel {
                &p.conv_panel
            } else {
                &p.conv_strided
            };
            // Per group: F/g filters over C/g channels.
            let (fg, plane) = (f / c.groups.max(1), l.output.h * l.output.w);
            let per = match tiles {
                Some((g, t)) => {
                    kernel_rates(p, family, t.passes(&g), (k, fg, plane), (g.c, g.h * g.w, window), (g.s, b))
                }
                None => {
                    let family: Vec<ConvRates> = family.iter().map(|r| per_thread(r, p.threads)).collect();
                    conv_rates(&family, k, fg, plane, b)
                }
            };
            // The threads this layer's passes run on (per group: the engine runs the groups one
            // after another, each split across the team or not by its own size).
            let parts = match tiles {
                Some((g, _)) => team_share(conv_macs(&g, b), crate::engine::gemm::PARALLEL_MIN_MACS, self.threads),
                None => self.threads.max(1) as f64,
            };
            let r = ConvRates {
                forward: per.forward * parts,
                weight_grad: per.weight_grad * parts,
                input_grad: per.input_grad * parts,
                ..per
            };
            let gflop = 2.0 * rows as f64 * k as f64 * f as f64 / 1e9;
            let forward = gflop / r.forward.max(1e-3) + act;
            let sparse = (c.groups == 1
                && tiles.is_some_and(|(g, t)| t.takes_sparse(&g))
                && rho <= crate::engine::conv::SPARSE_MAX_DENSITY as f64)
                .then(|| sparse_rates(&p.conv_sparse, k, fg))
                .flatten();
            let (weight_grad, input_grad) = match sparse {
                Some(s) => {
                    // Its references are split across the team (the smallest, 8 channels into 8
                    // filters over 16×16 at batch 16, 2.4M multiply-adds).
                    let serial = self.threads.max(1) as f64 / parts;
                    let (w, i) = (s.weight_grad.0 + s.weight_grad.1 * rho, s.input_grad.0 + s.input_grad.1 * rho);
                    (gflop * w * serial, gflop * i * serial)
                }
                None => (gflop / r.weight_grad.max(1e-3), gflop / r.input_grad.max(1e-3)),
            };
            return (forward, delta + weight_grad + if first { 0.0 } else { input_grad });
        }
        if depthwise {
            // Each output value: kh·kw multiply-adds over values read once and written once.
            let taps = outputs.saturating_mul(window);
            let pass = |n: usize| self.stream_flops(2.0 * taps as f64, n, 8.0);
            let input_grad = if first { 0.0 } else { pass(b.saturating_mul(l.inputs)) };
            return (pass(outputs) + act, delta + pass(outputs) + input_grad);
        }
        let im2col = self.stream(rows.saturating_mul(k), 8.0, 0.0);
        let forward = im2col + self.gemm(|p| &p.forward, rows, k, f) + self.stream(outputs, 8.0, 1.0) + act;
        let input_grad = if first {
            0.0
        } else {
            self.gemm(|p| &p.input_grad, rows, f, k) + self.stream(rows.saturating_mul(k), 12.0, 1.0)
        };
        let backward = delta + self.gemm(|p| &p.weight_grad, f, rows, k) + self.stream(outputs, 4.0, 1.0) + input_grad;
        (forward, backward)
    }

    /// Pooling: on a measured machine at the rates calibrate measured for the engine's max pool
    /// at the nearest plane sizes, per input value (average pooling is priced the same). Its
    /// backward writes the whole input
    /// gradient, which the step last touched a layer's worth of work ago: in training it runs
    /// no faster than a pass over memory at the bandwidth of the step's whole footprint
    /// (`footprint` bytes), which calibrate's repeated calls on cache-hot buffers do not see.
    /// Under a roofline it streams through memory: each input read once and each output
    /// written forward; backward writes the input's gradient and routes each output's gradient
    /// into it.
    fn pool(&self, l: &Layer, b: usize, first: bool, footprint: f64) -> (f64, f64) {
        let (inputs, outputs) = (b.saturating_mul(l.inputs), b.saturating_mul(l.outputs));
        if let Machine::Measured(p) = self.machine {
            let plane = l.input.h * l.input.w;
            let forward = inputs as f64 * per_value(&p.pool, |r| r.plane, |r| r.forward, plane);
            let hot = inputs as f64 * per_value(&p.pool, |r| r.plane, |r| r.backward, plane);
            let backward = if first { 0.0 } else { hot.max(self.stream_in(inputs, 8.0, 1.0, footprint)) };
            return (forward, backward);
        }
        let forward = self.stream(inputs, 4.0, 1.0) + self.stream(outputs, 4.0, 0.0);
        let backward = if first { 0.0 } else { self.stream(inputs, 4.0, 0.0) + self.stream(outputs, 8.0, 1.0) };
        (forward, backward)
    }

    /// The graph path's activation of a node that applies it in a pass of its own (batch
    /// normalization, sums, pooling to a vector; a convolution's relu6) over `n` values, forward
    /// or backward: relu, relu6 and leaky relu at the measured in-place relu passes, others at
    /// the activation table's cost.
    fn own_activation(&self, act: Activation, n: usize, backward: bool) -> f64 {
        match act {
            Activation::Identity => 0.0,
            Activation::Relu | Activation::Relu6 | Activation::LeakyRelu => {
                self.pass(if backward { PassKind::ReluBackward } else { PassKind::ReluForward }, n)
            }
            other => self.activation(other, n, backward),
        }
    }

    /// Batch normalization in training over its n = B·C·H·W values, through `engine::norm`:
    /// forward the mean and the variance (two sums per channel) and the normalizing pass;
    /// backward the two sums (Σδ, Σδ·x̂) and the pass forming the input gradient (the sums alone
    /// when it reads the data). Its activation is a pass of its own backward, and forward but for
    /// a relu or relu6, which the normalizing pass applies (`engine::norm::normalize`).
    fn batch_norm(&self, l: &Layer, b: usize, first: bool) -> (f64, f64) {
        let n = b.saturating_mul(l.outputs);
        let in_pass = matches!(l.activation, Activation::Relu | Activation::Relu6);
        let act = if in_pass { 0.0 } else { self.own_activation(l.activation, n, false) };
        let forward = self.pass(PassKind::NormForward, n) + act;
        let grads = self.pass(if first { PassKind::NormGrads } else { PassKind::NormBackward }, n);
        (forward, self.own_activation(l.activation, n, true) + grads)
    }

    /// The copies of δ a join hands to the inputs it reaches first (`handed`: their values per
    /// example; the inputs it reaches later add it, in their fan-out).
    fn hand_on(&self, b: usize, handed: &[usize]) -> f64 {
        handed.iter().map(|&n| self.pass(PassKind::Copy, b.saturating_mul(n))).sum()
    }

    /// An elementwise sum of `inputs` inputs: the first copied and the second added in one
    /// pass with a relu-like activation (the graph path's, run by run while each run is in
    /// cache: calibrate's `sum`), each further input added; other activations a pass of their
    /// own. Backward δ is handed on ([`Model::hand_on`]). With `normalizes` (a batch norm it
    /// alone reads, whose pass forms the sum: `engine::kept_outputs`), the sum costs that pass
    /// one more stream read, the other input.
    fn add(&self, l: &Layer, b: usize, inputs: usize, handed: &[usize], normalizes: bool) -> (f64, f64) {
        let n = b.saturating_mul(l.outputs);
        let fused =
            matches!(l.activation, Activation::Identity | Activation::Relu | Activation::Relu6 | Activation::LeakyRelu);
        let forward = if normalizes {
            self.stream(n, 4.0, 1.0)
        } else {
            self.pass(PassKind::Sum, n)
                + inputs.saturating_sub(2) as f64 * self.pass(PassKind::Add, n)
                + if fused { 0.0 } else { self.own_activation(l.activation, n, false) }
        };
        let backward = self.own_activation(l.activation, n, true) + self.hand_on(b, handed);
        (forward, backward)
    }

    /// Concatenation: each input copied into its channels; backward, δ's shares handed on
    /// ([`Model::hand_on`]).
    fn concat(&self, spec: &Spec, i: usize, b: usize, handed: &[usize]) -> (f64, f64) {
        let copies =
            spec.sources[i].iter().map(|s| self.pass(PassKind::Copy, b.saturating_mul(spec.shape_of(*s).size())));
        (copies.sum(), self.hand_on(b, handed))
    }

    /// Global and adaptive average pooling (`engine::gap`): a sum over every input value;
    /// backward writes each input's share of δ.
    fn average(&self, l: &Layer, b: usize, first: bool) -> (f64, f64) {
        let (n, m) = (b.saturating_mul(l.inputs), b.saturating_mul(l.outputs));
        let plane = l.input.h * l.input.w;
        let sums = match self.machine {
            // Between the measured planes of 64 and 1,024 values, log-linear in the plane.
            Machine::Measured(_) => {
                let t = ((plane.max(1) as f64).ln() - 64f64.ln()) / (1024f64.ln() - 64f64.ln());
                let wide = self.per_pass_value(|r| r.mean_forward_wide, n);
                let t = t.clamp(0.0, 1.0);
                self.pass(PassKind::MeanForward, n) * (1.0 - t) + n as f64 * wide * t
            }
            Machine::Roofline { .. } => self.pass(PassKind::MeanForward, n),
        };
        let forward = sums + self.own_activation(l.activation, m, false);
        let spread = if first { 0.0 } else { self.pass(PassKind::MeanBackward, n) };
        (forward, self.own_activation(l.activation, m, true) + spread)
    }

    /// Dropout in training: a mask drawn per value and applied; backward, δ times the mask.
    fn dropout(&self, l: &Layer, b: usize, first: bool) -> (f64, f64) {
        let n = b.saturating_mul(l.outputs);
        let forward = match self.machine {
            Machine::Measured(p) => n as f64 * p.dropout,
            Machine::Roofline { .. } => self.stream(n, 12.0, 1.0),
        };
        (forward, if first { 0.0 } else { self.pass(PassKind::Add, n) })
    }

    /// The zero-padding shortcut: every output value written (the input's picked rows and
    /// columns, zeros beyond); backward, the input gradient cleared and gathered from δ.
    fn zero_pad(&self, l: &Layer, b: usize, first: bool) -> (f64, f64) {
        let backward = if first { 0.0 } else { self.pass(PassKind::Copy, b.saturating_mul(l.inputs)) };
        (self.pass(PassKind::Copy, b.saturating_mul(l.outputs)), backward)
    }

    /// Max pooling with padding or ceil mode (`engine::padpool`), at the measured rate per
    /// input value; backward no faster than a pass over memory at the step's footprint, as
    /// for the other pools.
    fn padded_pool(&self, l: &Layer, b: usize, first: bool, footprint: f64) -> (f64, f64) {
        let inputs = b.saturating_mul(l.inputs);
        if let Machine::Measured(p) = self.machine {
            let hot = inputs as f64 * p.pool_padded.backward;
            let backward = if first { 0.0 } else { hot.max(self.stream_in(inputs, 8.0, 1.0, footprint)) };
            return (inputs as f64 * p.pool_padded.forward, backward);
        }
        self.pool(l, b, first, footprint)
    }

    /// An input changing layout on its way into a node (and its gradient on the way back,
    /// with `back`), as the engine's [`Feed`] says: `c` planes of `chunk` values per example
    /// copied one plane at a time. Under a roofline, a read and a write of each value.
    fn regroup(&self, feed: Feed, b: usize, back: bool) -> (f64, f64) {
        // Seconds to copy `values` in chunks of `chunk`, towards rows or towards channels.
        let copy = |c: usize, chunk: usize, to_rows: bool| {
            let values = b.saturating_mul(c).saturating_mul(chunk);
            match self.machine {
                Machine::Measured(p) => {
                    let rate = |r: &RegroupRates| if to_rows { r.to_rows } else { r.to_channels };
                    values as f64 * per_value(&p.regroup, |r| r.chunk, rate, chunk)
                }
                Machine::Roofline { .. } => self.stream(values, 8.0, 0.0),
            }
        };
        match feed {
            Feed::Direct => (0.0, 0.0),
            Feed::ToChannels { c, p } => (copy(c, p, false), if back { copy(c, p, true) } else { 0.0 }),
            Feed::ToRows { c, p } => (copy(c, p, true), if back { copy(c, p, false) } else { 0.0 }),
        }
    }

    /// One training step over `b` examples: per node, the loss, and the fixed cost. A node read
    /// by k later nodes receives k gradients: the k − 1 after the first are added in (a pass
    /// each, in its backward).
    fn step(&self, spec: &Spec, loss: Loss, opt: Optimizer, b: usize) -> (Vec<LayerTime>, f64, f64) {
        let (model, footprint) = self.at_step(spec, opt, b);
        let this = &model;
        let last = spec.layers.len() - 1;
        // At one example the engine updates dense layers as their gradients are formed.
        let fused = b == 1 && matches!(opt, Optimizer::Sgd | Optimizer::Momentum);
        let edges = edges(spec);
        let mut readers = vec![Vec::new(); spec.layers.len()];
        for (i, reads) in spec.sources.iter().enumerate() {
            for s in reads {
                if let Source::Node(j) = s {
                    readers[*j].push(i);
                }
            }
        }
        let density = expected_density(spec, &readers);
        let (takers, kept) = (crate::engine::sum_takers(spec), crate::engine::kept_outputs(spec));
        let laid = crate::engine::laid_deltas(spec, b);
        let layers = spec
            .layers
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let first = spec.reads_data(i);
                let from_ce = i == last && loss == Loss::Ce && l.activation == Activation::Softmax;
                let sources = &spec.sources[i];
                // Values per example a join hands on as the first gradient its inputs receive
                // (backward runs in reverse order: a node's last reader writes first).
                let mut handed: Vec<(usize, usize)> = sources
                    .iter()
                    .enumerate()
                    .filter_map(|(k, s)| match s {
                        Source::Node(j) if readers[*j].last() == Some(&i) => Some((k, spec.layers[*j].outputs)),
                        _ => None,
                    })
                    .collect();
                // A sum gives its own δ buffer to one of them instead of a copy, by the engine's
                // rule (`engine::sum_takers`). (Priced as a copy each, the sums' backward ran at
                // 0.35–0.6 of its prediction in the random networks.)
                if let Some(k) = takers[i] {
                    handed.retain(|&(kk, _)| kk != k);
                }
                let handed: Vec<usize> = handed.into_iter().map(|(_, n)| n).collect();
                let (forward, backward) = match l.kind {
                    Kind::Dense => this.dense(l, b, first, from_ce, fused),
                    Kind::Conv2d(c) => {
                        let (forward, backward) = this.conv(l, &c, b, first, density[i]);
                        // The copy of δ the convolution's rates include, which the batch norm
                        // after it makes as it writes δ (`engine::laid_deltas`).
                        let copy = if laid[i] { this.pass(PassKind::Copy, b.saturating_mul(l.outputs)) } else { 0.0 };
                        (forward, (backward - copy).max(0.0))
                    }
                    Kind::MaxPool(p) if p.pad > 0 || p.ceil => this.padded_pool(l, b, first, footprint),
                    Kind::MaxPool(_) | Kind::AvgPool(_) => this.pool(l, b, first, footprint),
                    Kind::BatchNorm => this.batch_norm(l, b, first),
                    Kind::Add(_) => {
                        let normalizes = sources.iter().any(|s| matches!(*s, Source::Node(j) if !kept[j]));
                        this.add(l, b, sources.len(), &handed, normalizes)
                    }
                    Kind::Concat => this.concat(spec, i, b, &handed),
                    Kind::GlobalAvgPool | Kind::AdaptiveAvgPool(..) => this.average(l, b, first),
                    Kind::Dropout(_) => this.dropout(l, b, first),
                    Kind::ZeroPad { .. } => this.zero_pad(l, b, first),
                };
                let (into, back) = sources.iter().zip(&edges[i]).fold((0.0, 0.0), |(f, bw), (s, e)| {
                    let (tf, tb) = this.regroup(*e, b, matches!(s, Source::Node(_)));
                    (f + tf, bw + tb)
                });
                let fan_out =
                    readers[i].len().saturating_sub(1) as f64 * this.pass(PassKind::Add, b.saturating_mul(l.outputs));
                let (forward, backward) = (forward + into, backward + back + fan_out);
                let update = match (l.params(), fused && l.kind == Kind::Dense) {
                    (0, _) => 0.0,
                    (n, true) => this.fused_update(opt, n as usize),
                    (n, false) => this.update(opt, n as usize),
                };
                LayerTime { layer: i + 1, forward_seconds: forward, backward_seconds: backward, update_seconds: update }
            })
            .collect();
        let loss_s = this.stream(b * spec.outputs(), 12.0, 3.0);
        let per_layer = match this.machine {
            Machine::Measured(p) => p.layer_overhead,
            Machine::Roofline { .. } => 0.0,
        };
        (layers, loss_s, this.overhead() + per_layer * spec.layers.len() as f64)
    }
}

/// How each input of each node reaches it, as the engine lays values out: images
/// channel-major ([C][B][P]), examples, dense layers and global pooling's vectors as rows
/// ([B][C][P]), a sum or a dropout as its first input; an input in the other layout than its
/// reader wants (and of more than one channel) is transposed on the way in, and its gradient
/// on the way back. (On a chain of dense, convolution and pooling layers these are the chain
/// path's feeds.)
fn edges(spec: &Spec) -> Vec<Vec<Feed>> {
    let keeps_first = |k: Kind| matches!(k, Kind::Add(_) | Kind::Dropout(_));
    let mut rows: Vec<bool> = Vec::with_capacity(spec.layers.len());
    let is_rows = |rows: &[bool], s: Source| match s {
        Source::Input => true,
        Source::Node(j) => rows[j],
    };
    for (l, layer) in spec.layers.iter().enumerate() {
        let r = match layer.kind {
            Kind::Dense | Kind::GlobalAvgPool => true,
            k if keeps_first(k) => is_rows(&rows, spec.sources[l][0]),
            _ => false,
        };
        rows.push(r);
    }
    spec.layers
        .iter()
        .enumerate()
        .map(|(l, layer)| {
            let wants_rows = match layer.kind {
                Kind::Dense => true,
                k if keeps_first(k) => rows[l],
                _ => false,
            };
            spec.sources[l]
                .iter()
                .map(|&s| {
                    let shape = spec.shape_of(s);
                    let (c, p) = (shape.c, shape.h * shape.w);
                    match (is_rows(&rows, s), wants_rows) {
                        _ if c == 1 => Feed::Direct,
                        (true, false) => Feed::ToChannels { c, p },
                        (false, true) => Feed::ToRows { c, p },
                        _ => Feed::Direct,
                    }
                })
                .collect()
        })
        .collect()
}

/// One training step's modelled seconds at batch `b` on a measured machine: layers, loss and
/// fixed costs, without the batch's copy (for calibrate's own residual).
pub(crate) fn step_seconds(spec: &Spec, loss: Loss, opt: Optimizer, b: usize, p: &Profile, threads: usize) -> f64 {
    let model = Model::new(Machine::Measured(p), threads);
    let (layers, loss_s, overhead) = model.step(spec, loss, opt, b);
    layers.iter().map(|l| l.forward_seconds + l.backward_seconds + l.update_seconds).sum::<f64>() + loss_s + overhead
}

/// Predicted seconds of one forward pass at evaluation over a batch of `b` (`eval`, `bench
/// --forward-only`): every node's forward as in training, but batch normalization is one pass
/// with its running statistics — or nothing where `fold` folds it into the convolution it
/// follows (a convolution read by that normalization alone) — and dropout passes its input on
/// (a copy).
pub fn inference_seconds(spec: &Spec, b: usize, machine: Machine, threads: usize, fold: bool) -> f64 {
    let model = Model::new(machine, threads).at_step(spec, Optimizer::Sgd, b).0;
    let (layers, _, overhead) = model.step(spec, Loss::Mse, Optimizer::Sgd, b);
    // The folding rule is fold.rs's alone (a conv or dense layer without an activation, read by
    // the norm only).
    let foldable = if fold { crate::fold::foldable(spec) } else { vec![None; spec.layers.len()] };
    let folded = |i: usize| foldable[i].is_some();
    let forward: f64 = spec
        .layers
        .iter()
        .zip(&layers)
        .enumerate()
        .map(|(i, (l, t))| {
            let n = b.saturating_mul(l.outputs);
            match l.kind {
                Kind::BatchNorm => {
                    let own = model.own_activation(l.activation, n, false);
                    // The training forward less its normalization: the layout changes on the way in.
                    let edges = t.forward_seconds - model.pass(PassKind::NormForward, n) - own;
                    let norm = if folded(i) { 0.0 } else { model.pass(PassKind::NormInfer, n) };
                    edges.max(0.0) + norm + own
                }
                Kind::Dropout(_) => model.pass(PassKind::Copy, n),
                _ => t.forward_seconds,
            }
        })
        .sum();
    forward + overhead
}

/// Predicted seconds per step (a full batch), per epoch (its ragged last batch at its own size,
/// plus copying each batch's examples) and per run.
pub fn predict(spec: &Spec, cfg: &Config, machine: Machine, threads: usize) -> Prediction {
    let model = Model::new(machine, threads);
    let step_of = |b: usize| {
        let (layers, loss, overhead) = model.step(spec, cfg.loss, cfg.optimizer, b);
        let sum: f64 = layers.iter().map(|l| l.forward_seconds + l.backward_seconds + l.update_seconds).sum();
        // The batch's examples are copied out of the whole training set, in shuffled order: they
        // come from wherever a set of that size lives (main memory for 60,000 images).
        let gather = model.stream_in(b * spec.input, 8.0, 0.0, (cfg.examples * spec.input * 4) as f64);
        // Training reads every weight for NaN and infinity every scan_interval steps.
        let scan = model.stream(spec.params() as usize, 4.0, 1.0) / crate::train::scan_interval(b) as f64;
        (layers, loss, overhead, sum + loss + overhead + gather + scan)
    };
    let (layers, loss_seconds, overhead_seconds, step) = step_of(cfg.batch);
    let full = cfg.examples / cfg.batch;
    let rest = cfg.examples % cfg.batch;
    let epoch = full as f64 * step + if rest > 0 { step_of(rest).3 } else { 0.0 };
    let basis = match machine {
        Machine::Measured(p) => format!(
            "model estimate from this machine's profile ({} threads): matrix products at the throughput calibrate measured at nearby shapes, passes over memory at the measured bandwidth for their working set, plus a fixed cost per step of {} ({}, and {} for each layer)",
            p.threads,
            crate::report::seconds(overhead_seconds),
            crate::report::seconds(p.step_overhead),
            crate::report::seconds(p.layer_overhead)
        ),
        Machine::Roofline { matmul_gflops, vector_gflops, bandwidth_gbs } => format!(
            "roofline estimate: each phase takes the longer of its arithmetic at {matmul_gflops:.0} GFLOP/s (matrix products) or {vector_gflops:.0} GFLOP/s (the rest) and its memory traffic at {bandwidth_gbs:.0} GB/s; no launch, transfer or framework overhead, so a lower bound that small networks will not approach"
        ),
    };
    Prediction {
        step_seconds: step,
        epoch_seconds: epoch,
        run_seconds: epoch * cfg.epochs as f64,
        layers,
        loss_seconds,
        overhead_seconds,
        basis,
    }
}
