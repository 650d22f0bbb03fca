//! The time model: the ledger's work, the bytes each phase moves, and a machine's rates.

use super::devices::Device;
use super::profile::{GemmPoint, Profile, StreamPoint};
use crate::cost::Config;
use crate::spec::{Activation, Conv, Kind, Layer, Loss, Optimizer, Spec};
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

fn act_cost(table: &[(String, f64)], act: Activation) -> f64 {
    table.iter().find(|(n, _)| n == act.name()).map_or(0.0, |(_, s)| *s)
}

use crate::engine::UPDATE_SPLIT_MIN;

struct Model<'a> {
    machine: Machine<'a>,
    threads: usize,
}

impl Model<'_> {
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

    fn activation(&self, act: Activation, items: usize, backward: bool) -> f64 {
        match self.machine {
            Machine::Measured(p) => {
                items as f64 * act_cost(if backward { &p.activation_backward } else { &p.activation_forward }, act)
            }
            Machine::Roofline { .. } => 0.0,
        }
    }

    fn update(&self, opt: Optimizer, params: usize) -> f64 {
        let (bytes_per, flop_per) = match opt {
            Optimizer::Sgd => (12.0, 2.0),
            Optimizer::Momentum => (20.0, 4.0),
            Optimizer::Adam => (28.0, 13.0),
        };
        match self.machine {
            Machine::Measured(p) => {
                let table = match opt {
                    Optimizer::Sgd => &p.sgd,
                    Optimizer::Momentum => &p.momentum,
                    Optimizer::Adam => &p.adam,
                };
                let split = if params >= UPDATE_SPLIT_MIN { self.threads as f64 } else { 1.0 };
                params as f64 * per_item(table, params as f64 * bytes_per) / split
            }
            Machine::Roofline { .. } => self.stream(params, bytes_per, flop_per),
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

    /// A convolution as a matrix product of [B·H'·W' × C·kh·kw] input windows with the
    /// [C·kh·kw × F] kernels; backward dW is the product of the deltas with the same windows and
    /// dX the deltas times the kernels, scattered back over the windows. How the windows are
    /// formed follows the engine: for stride 1 over more than 64 window values (the panel
    /// product) a padded copy of the input and 16-column panels built in cache, the input
    /// gradient as the transposed convolution from 32 input channels; otherwise im2col through
    /// memory and col2im back.
    ///
    /// On a measured machine the products run at the rates calibrate measured through the
    /// engine's own convolutions at a reference shape of the same kind (panel or not), windows
    /// and scatter included.
    fn conv(&self, l: &Layer, c: &Conv, b: usize, first: bool) -> (f64, f64) {
        // Saturating: a spec too large to train still gets a (huge) time, not an overflow.
        let rows = b.saturating_mul(l.output.h).saturating_mul(l.output.w);
        let k = l.input.c.saturating_mul(c.kh).saturating_mul(c.kw);
        let f = c.filters;
        let outputs = b.saturating_mul(l.outputs);
        let panel = c.stride == 1 && k > 64;
        if let Machine::Measured(p) = self.machine {
            let r = if panel { p.conv_panel } else { p.conv_small };
            let gflop = 2.0 * rows as f64 * k as f64 * f as f64 / 1e9;
            let forward = gflop / r.forward.max(1e-3) + self.activation(l.activation, outputs, false);
            let input_grad = if first { 0.0 } else { gflop / r.input_grad.max(1e-3) };
            let backward = self.activation(l.activation, outputs, true) + gflop / r.weight_grad.max(1e-3) + input_grad;
            return (forward, backward);
        }
        let windows = if panel {
            let (ph, pw) = c.pads();
            let padded =
                b.saturating_mul(l.input.c).saturating_mul(l.input.h + 2 * ph).saturating_mul(l.input.w + 2 * pw);
            self.stream(padded, 8.0, 0.0) + self.stream_in(rows.saturating_mul(k), 8.0, 0.0, 64.0 * k as f64)
        } else {
            self.stream(rows.saturating_mul(k), 8.0, 0.0)
        };
        let forward = windows
            + self.gemm(|p| &p.forward, rows, k, f)
            + self.stream(outputs, 8.0, 1.0)
            + self.activation(l.activation, outputs, false);
        let delta = self.activation(l.activation, outputs, true);
        let input_grad = if first {
            0.0
        } else if panel && l.input.c >= 32 {
            // The transposed convolution: as many products, windows of F·kh·kw delta values.
            let t_rows = b.saturating_mul(l.input.h).saturating_mul(l.input.w);
            let t_k = f.saturating_mul(c.kh).saturating_mul(c.kw);
            self.stream_in(t_rows.saturating_mul(t_k), 8.0, 0.0, 64.0 * t_k as f64)
                + self.gemm(|p| &p.forward, t_rows, t_k, l.input.c)
        } else {
            self.gemm(|p| &p.input_grad, rows, f, k) + self.stream(rows.saturating_mul(k), 12.0, 1.0)
        };
        let backward =
            delta + windows + self.gemm(|p| &p.weight_grad, f, rows, k) + self.stream(outputs, 4.0, 1.0) + input_grad;
        (forward, backward)
    }

    /// Pooling streams through memory: each input read once and each output written forward;
    /// backward writes the input's gradient and routes each output's gradient into it.
    fn pool(&self, l: &Layer, b: usize, first: bool) -> (f64, f64) {
        let (inputs, outputs) = (b.saturating_mul(l.inputs), b.saturating_mul(l.outputs));
        let forward = self.stream(inputs, 4.0, 1.0) + self.stream(outputs, 4.0, 0.0);
        let backward = if first { 0.0 } else { self.stream(inputs, 4.0, 0.0) + self.stream(outputs, 8.0, 1.0) };
        (forward, backward)
    }

    /// One training step over `b` examples: per layer, the loss, and the fixed cost.
    fn step(&self, spec: &Spec, loss: Loss, opt: Optimizer, b: usize) -> (Vec<LayerTime>, f64, f64) {
        let last = spec.layers.len() - 1;
        // At one example the engine updates dense layers as their gradients are formed: the
        // update moves the weights and the optimizer state but no gradient (16 bytes a
        // parameter instead of 20 with momentum, 8 instead of 12 with SGD).
        let fused = b == 1 && matches!(opt, Optimizer::Sgd | Optimizer::Momentum);
        let layers = spec
            .layers
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let from_ce = i == last && loss == Loss::Ce && l.activation == Activation::Softmax;
                let (forward, backward) = match l.kind {
                    Kind::Dense => self.dense(l, b, i == 0, from_ce, fused),
                    Kind::Conv2d(c) => self.conv(l, &c, b, i == 0),
                    Kind::MaxPool(_) | Kind::AvgPool(_) => self.pool(l, b, i == 0),
                };
                let mut update = if l.params() == 0 { 0.0 } else { self.update(opt, l.params() as usize) };
                if fused && l.kind == Kind::Dense {
                    update *= if opt == Optimizer::Sgd { 8.0 / 12.0 } else { 16.0 / 20.0 };
                }
                LayerTime { layer: i + 1, forward_seconds: forward, backward_seconds: backward, update_seconds: update }
            })
            .collect();
        let loss_s = self.stream(b * spec.outputs(), 12.0, 3.0);
        (layers, loss_s, self.overhead())
    }
}

/// Predicted seconds per step (a full batch), per epoch (its ragged last batch at its own size,
/// plus copying each batch's examples) and per run.
pub fn predict(spec: &Spec, cfg: &Config, machine: Machine, threads: usize) -> Prediction {
    let model = Model { machine, threads };
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
            "model estimate from this machine's profile ({} threads): matrix products at the throughput calibrate measured at nearby shapes, passes over memory at the measured bandwidth for their working set, plus a fixed {:.1} µs per step",
            p.threads,
            p.step_overhead * 1e6
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
