//! The fast engine: batched f32, matrix-multiply kernels, both cores.
//!
//! One flat arena holds every parameter (layer by layer: W as [M][N], then b), one the gradients
//! in the same order, one the optimizer's state. Buffers for a batch of up to `max_batch` are
//! cut once in [`Engine::new`]; a step allocates nothing. Work runs on a private thread pool
//! whose threads flush denormals; products split across it only when large enough to pay.
//!
//! Dense layers keep their outputs batch-major ([B][M]); convolution and pooling layers keep
//! theirs channel-major across the batch ([C][B][H][W]), so one im2col matrix for the whole
//! batch feeds one large product per convolution (`conv`). Examples arrive and leave as rows
//! ([B][C][H][W]); the engine transposes at the input (when C > 1) and where a dense layer
//! reads an image layer's output (when C > 1), and transposes the gradient back there.
//!
//! A network that is not a chain of those kinds (residual sums, concatenations, batch norm,
//! dropout, global pooling, relu6, grouped convolutions...) runs on the graph path (`graph`),
//! which keeps a gradient buffer per layer and transposes per edge. Batch norm's running
//! statistics live in an arena of their own ([`Engine::running_stats`]), outside the
//! parameters and gradients that optimizers and the all-reduce see. [`Engine::forward`] and
//! [`Engine::evaluate`] run in evaluation mode (running statistics, no dropout), the training
//! calls in training mode.

pub mod activation;
mod avx;
pub mod conv;
pub(crate) mod gap;
pub mod gemm;
mod graph;
pub mod kernels;
mod loss;
pub(crate) mod norm;
pub(crate) mod padpool;
pub(crate) mod pages;
mod panels;
pub mod pool;
#[cfg(target_arch = "x86_64")]
mod shifted;
#[cfg(target_arch = "x86_64")]
mod shifted_forward;
pub mod simd;
mod sparse;
pub mod team;

pub use loss::{Score, score};

use crate::error::{Error, Result};
use crate::init::LayerParams;
use crate::reference::Hyper;
use crate::spec::{Activation, Kind, Loss, Optimizer, Spec};
use conv::ConvShape;
use gemm::{View, matmul};
use pool::PoolShape;

/// How the engine trains.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    pub loss: Loss,
    pub optimizer: Optimizer,
    pub hyper: Hyper,
    /// The largest batch a step will be given.
    pub max_batch: usize,
    pub threads: usize,
}

/// Optimizer updates of fewer parameters than this stay on one thread. The update is bound by
/// memory traffic; while a network's parameters, gradients and optimizer state fit in one core's
/// L2, splitting only moves the lines the helper touches into the other core's cache (and back,
/// for the next forward pass). 784-30-30-10 (24.6K parameters) stays on one thread.
pub const UPDATE_SPLIT_MIN: usize = 1 << 17;

/// A pointer that tasks use for disjoint ranges of one arena.
struct SendMut(*mut f32);
// SAFETY: every task writes a range no other task touches.
unsafe impl Sync for SendMut {}

/// What a layer computes, with its geometry.
#[derive(Clone, Copy, Debug)]
enum Op {
    Dense,
    Conv(ConvShape),
    MaxPool(PoolShape),
    AvgPool(PoolShape),
}

/// How a layer's input reaches it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Feed {
    /// As the layer below (or the caller) left it.
    Direct,
    /// Rows [B][C][P] transposed to [C][B][P] (an image network's input, C > 1).
    ToChannels { c: usize, p: usize },
    /// [C][B][P] transposed to rows [B][C][P] (a dense layer after an image layer, C > 1).
    ToRows { c: usize, p: usize },
}

/// out [C][B][P] from x [B][C][P].
pub(crate) fn to_channels(x: &[f32], out: &mut [f32], batch: usize, c: usize, p: usize) {
    for e in 0..batch {
        for ch in 0..c {
            out[(ch * batch + e) * p..(ch * batch + e + 1) * p]
                .copy_from_slice(&x[(e * c + ch) * p..(e * c + ch + 1) * p]);
        }
    }
}

/// out [B][C][P] from x [C][B][P].
pub(crate) fn to_rows(x: &[f32], out: &mut [f32], batch: usize, c: usize, p: usize) {
    for e in 0..batch {
        for ch in 0..c {
            out[(e * c + ch) * p..(e * c + ch + 1) * p]
                .copy_from_slice(&x[(ch * batch + e) * p..(ch * batch + e + 1) * p]);
        }
    }
}

/// How each layer's input reaches it: images are channel-major inside the engine, rows outside
/// it and in dense layers; with one channel (or a flat vector of one) the two layouts coincide.
pub(crate) fn feeds(spec: &Spec) -> Vec<Feed> {
    let image = |k: Kind| k != Kind::Dense;
    spec.layers
        .iter()
        .enumerate()
        .map(|(l, layer)| {
            let (below_image, shape) = if l == 0 {
                (false, spec.input_shape)
            } else {
                (image(spec.layers[l - 1].kind), spec.layers[l - 1].output)
            };
            let (c, p) = (shape.c, shape.h * shape.w);
            match (below_image, image(layer.kind)) {
                _ if c == 1 => Feed::Direct,
                (false, true) => Feed::ToChannels { c, p },
                (true, false) => Feed::ToRows { c, p },
                _ => Feed::Direct,
            }
        })
        .collect()
}

/// Per layer: whether the engine keeps its output for the backward pass (all but a batch norm
/// that a residual sum normalizes in its own pass, which never writes it).
pub fn kept_outputs(spec: &Spec) -> Vec<bool> {
    graph::kept_outputs(spec)
}

/// Per layer: for a residual sum, which of its inputs takes its gradient buffer in the backward
/// pass (the others receive a copy or add it): the rule the engine runs, for the time model.
pub fn sum_takers(spec: &Spec) -> Vec<Option<usize>> {
    graph::sum_takers(spec)
}

/// Per layer: whether a convolution's δ arrives laid out by the batch norm after it, so that its
/// backward pass makes no copy of δ (`conv::padded_delta`): the rule the engine runs at this
/// batch, for the time model.
pub fn laid_deltas(spec: &Spec, batch: usize) -> Vec<bool> {
    graph::laid_convs(spec, batch)
}

/// Values of the convolutions' scratch for `threads` team members.
fn col_len(spec: &Spec, batch: usize, threads: usize) -> usize {
    conv::scratch_len(spec.layers.iter().filter_map(ConvShape::of), batch, threads)
}

/// The engine's buffers beyond parameters, layer outputs and the two gradient buffers, in
/// bytes: those that grow with the batch (the transposed inputs and the max-pooling argmax
/// indices) for a batch of `batch`, and the convolutions' scratch (an im2col tile and a weight
/// gradient block or a panel per thread, and the panel product's padded input and packed
/// operands). Both zero for a dense network.
pub fn conv_buffer_bytes(spec: &Spec, batch: usize, threads: usize) -> (u128, u128) {
    if graph::needed(spec) {
        // The graph path's buffers (`graph::buffer_values`) less the two gradient buffers the
        // ledger counts for every network.
        let widest = spec.layers.iter().map(|l| l.outputs).max().unwrap_or(0);
        let values = graph::buffer_values(spec, batch) - 2 * batch * widest;
        return (4 * values as u128, 4 * col_len(spec, batch, threads) as u128);
    }
    let feeds = feeds(spec);
    let flat: usize =
        spec.layers.iter().zip(&feeds).filter(|(_, f)| **f != Feed::Direct).map(|(l, _)| batch * l.inputs).sum();
    let args: usize =
        spec.layers.iter().filter(|l| matches!(l.kind, Kind::MaxPool(_))).map(|l| batch * l.outputs).sum();
    (4 * (flat + args) as u128, 4 * col_len(spec, batch, threads) as u128)
}

/// Where layer `l`'s tensors sit in the arenas.
#[derive(Clone, Copy, Debug)]
struct Slot {
    weight: usize,
    bias: usize,
    end: usize,
}

pub struct Engine {
    spec: Spec,
    settings: Settings,
    slots: Vec<Slot>,
    params: Vec<f32>,
    grads: Vec<f32>,
    /// Momentum's velocity or Adam's first moment.
    first: Vec<f32>,
    /// Adam's second moment.
    second: Vec<f32>,
    /// Steps taken, for Adam's bias correction.
    steps: u64,
    /// Each layer's kind and geometry, and how its input reaches it.
    ops: Vec<Op>,
    feeds: Vec<Feed>,
    /// Each layer's output for the current batch: [max_batch][M] for a dense layer,
    /// [C][max_batch][H][W] for an image layer.
    acts: Vec<Vec<f32>>,
    /// A transposed copy of a layer's input, for the layers whose feed is not direct.
    flat: Vec<Vec<f32>>,
    /// The convolutions' scratch: an im2col tile and a weight-gradient block per team member,
    /// starting on a cache line.
    col: pages::Lines,
    /// Max-pooling layers' argmax indices, one per output value.
    args: Vec<Vec<u32>>,
    /// The gradient flowing back, ping-ponged between two buffers of [max_batch][widest].
    back: [Vec<f32>; 2],
    team: team::Team,
    /// Seconds spent per layer and phase, when switched on (for `bench`).
    timers: Option<Timers>,
    /// The graph path's plan and buffers, for a network the chain path does not run.
    graph: Option<graph::Graph>,
    /// Batch normalization's running statistics, not trained (outside `params` and `grads`):
    /// per batch-norm layer its mean [C] then its variance [C].
    running: Vec<f32>,
    /// Where each layer's running statistics start in `running` (batch-norm layers only).
    running_at: Vec<usize>,
    /// Training batches each batch-norm layer has normalized (PyTorch's `num_batches_tracked`).
    tracked: Vec<u64>,
    /// Seeds dropout's masks, with the step and the layer.
    seed: u64,
}

/// Replaces its values by their sum over the ranks of a data-parallel run (`--sync-bn`).
pub type RankSum<'a> = &'a mut dyn FnMut(&mut [f64]);

/// Batch normalization's running statistics, for model files and checkpoints: `values` holds
/// per batch-norm layer, in layer order, its running mean [C] then its running variance [C];
/// `batches` per batch-norm layer the training batches it has normalized.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunningStats {
    pub values: Vec<f32>,
    pub batches: Vec<u64>,
}

/// One layer's running statistics in f64, (mean, variance) per channel; `None` for a layer that
/// is not a batch normalization.
pub type LayerStats = Option<(Vec<f64>, Vec<f64>)>;

impl RunningStats {
    /// Per layer, a batch normalization's (mean, variance) in f64 and `None` for the other
    /// layers: the form model writers and folding read. An empty set (nothing trained yet) gives
    /// PyTorch's starting values, mean 0 and variance 1; a set too short for `spec` is an error.
    pub fn per_layer(&self, spec: &Spec) -> Result<Vec<LayerStats>> {
        let mut at = 0;
        let mut out = Vec::with_capacity(spec.layers.len());
        for l in &spec.layers {
            if l.kind != Kind::BatchNorm {
                out.push(None);
                continue;
            }
            let c = l.input.c;
            let pair = if self.values.is_empty() {
                (vec![0.0; c], vec![1.0; c])
            } else {
                let v = self.values.get(at..at + 2 * c).ok_or_else(|| {
                    Error::Usage(format!(
                        "the running statistics hold {} values, fewer than this network's batch normalizations need",
                        self.values.len()
                    ))
                })?;
                (v[..c].iter().map(|&x| x as f64).collect(), v[c..].iter().map(|&x| x as f64).collect())
            };
            out.push(Some(pair));
            at += 2 * c;
        }
        Ok(out)
    }

    /// [`RunningStats::per_layer`] the other way: each batch normalization's pair in layer
    /// order (one that is missing or of another size starts at mean 0, variance 1), with no
    /// batches counted.
    pub fn from_per_layer<'a>(
        spec: &Spec,
        per_layer: impl IntoIterator<Item = Option<(&'a [f64], &'a [f64])>>,
    ) -> RunningStats {
        let mut r = RunningStats::default();
        for (l, pair) in spec.layers.iter().zip(per_layer).filter(|(l, _)| l.kind == Kind::BatchNorm) {
            let c = l.input.c;
            match pair {
                Some((mean, var)) if mean.len() == c && var.len() == c => {
                    r.values.extend(mean.iter().chain(var).map(|&v| v as f32));
                }
                _ => r.values.extend((0..2 * c).map(|k| if k < c { 0.0 } else { 1.0 })),
            }
            r.batches.push(0);
        }
        r
    }
}

/// Wall-clock seconds accumulated by phase since the timers were switched on.
#[derive(Clone, Debug, Default)]
pub struct Timers {
    pub forward: Vec<f64>,
    pub backward: Vec<f64>,
    pub loss: f64,
    pub update: f64,
    /// Per layer, the share of its output gradient δ that was nonzero, summed over steps: for
    /// the convolutions whose backward may skip δ's zeros (`conv::Tiles::takes_sparse`), else 0.
    pub delta_nonzero: Vec<f64>,
}

/// Adds the time since `*t` to `slot` and restarts `*t`, when timing is on.
fn lap(t: &mut Option<std::time::Instant>, slot: Option<&mut f64>) {
    if let (Some(start), Some(slot)) = (t.as_mut(), slot) {
        let now = std::time::Instant::now();
        *slot += (now - *start).as_secs_f64();
        *start = now;
    }
}

/// Why a layer the engine does not run cannot reach it: [`Spec::fast_engine_check`] refuses
/// such networks in [`Engine::new`].
pub(crate) const NOT_YET: &str =
    "the fast engine was handed a layer it does not run (Spec::fast_engine_check refuses these)";

impl Engine {
    pub fn new(spec: &Spec, params: &[LayerParams], settings: Settings) -> Result<Engine> {
        spec.fast_engine_check()?;
        spec.check_loss(settings.loss)?;
        if params.len() != spec.layers.len() {
            return Err(Error::Shape {
                op: "engine",
                detail: format!("{} layers of parameters for a {}-layer network", params.len(), spec.layers.len()),
            });
        }
        let mut slots = Vec::with_capacity(spec.layers.len());
        let mut arena = Vec::with_capacity(spec.params() as usize);
        for (l, (layer, p)) in spec.layers.iter().zip(params).enumerate() {
            if p.weight.len() != layer.weight_count() || p.bias.len() != layer.bias_count() {
                return Err(Error::Shape {
                    op: "engine",
                    detail: format!(
                        "layer {l}: weight has {} values and bias {} for a {} → {} layer (want {} and {})",
                        p.weight.len(),
                        p.bias.len(),
                        layer.input,
                        layer.output,
                        layer.weight_count(),
                        layer.bias_count()
                    ),
                });
            }
            let weight = arena.len();
            arena.extend(p.weight.iter().map(|&v| v as f32));
            let bias = arena.len();
            arena.extend(p.bias.iter().map(|&v| v as f32));
            slots.push(Slot { weight, bias, end: arena.len() });
        }
        let n = arena.len();
        let b = settings.max_batch.max(1);
        let graph = graph::needed(spec).then(|| graph::Graph::new(spec, b));
        let chain = graph.is_none();
        let ops: Vec<Op> = spec
            .layers
            .iter()
            .filter(|_| chain)
            .map(|layer| match layer.kind {
                Kind::Dense => Op::Dense,
                Kind::Conv2d(_) => Op::Conv(ConvShape::of(layer).expect("a convolution")),
                Kind::MaxPool(_) => Op::MaxPool(PoolShape::of(layer).expect("a pooling layer")),
                Kind::AvgPool(_) => Op::AvgPool(PoolShape::of(layer).expect("a pooling layer")),
                _ => unreachable!("{NOT_YET}"),
            })
            .collect();
        let feeds = if chain { feeds(spec) } else { Vec::new() };
        let widest = if chain { spec.layers.iter().map(|l| l.outputs).max().unwrap_or(0) } else { 0 };
        let mut running = Vec::new();
        let running_at = spec
            .layers
            .iter()
            .map(|l| {
                let at = running.len();
                if l.kind == Kind::BatchNorm {
                    // PyTorch's start: mean 0, variance 1.
                    running.extend(std::iter::repeat_n(0.0, l.input.c).chain(std::iter::repeat_n(1.0, l.input.c)));
                }
                at
            })
            .collect();
        let state = |on: bool| if on { vec![0.0; n] } else { Vec::new() };
        let team = team::Team::new(settings.threads.max(1), simd::flush_denormals)
            .map_err(|e| Error::Usage(format!("cannot start {} threads: {e}", settings.threads)))?;
        Ok(Engine {
            spec: spec.clone(),
            slots,
            grads: vec![0.0; n],
            first: state(settings.optimizer != Optimizer::Sgd),
            second: state(settings.optimizer.state_per_param() == 2),
            params: arena,
            steps: 0,
            acts: spec
                .layers
                .iter()
                .enumerate()
                .map(
                    |(i, l)| {
                        if graph.as_ref().is_none_or(|g| g.keeps(i)) {
                            pages::zeroed(b * l.outputs)
                        } else {
                            Vec::new()
                        }
                    },
                )
                .collect(),
            flat: spec
                .layers
                .iter()
                .zip(&feeds)
                .filter(|_| chain)
                .map(|(l, f)| if *f == Feed::Direct { Vec::new() } else { pages::zeroed(b * l.inputs) })
                .collect(),
            col: pages::Lines::zeroed(col_len(spec, b, settings.threads.max(1))),
            args: ops
                .iter()
                .zip(&spec.layers)
                .map(|(op, l)| if matches!(op, Op::MaxPool(_)) { vec![0; b * l.outputs] } else { Vec::new() })
                .collect(),
            tracked: vec![0; spec.layers.len()],
            running,
            running_at,
            graph,
            seed: 0,
            ops,
            feeds,
            back: [pages::zeroed(b * widest), pages::zeroed(b * widest)],
            settings: Settings { max_batch: b, ..settings },
            team,
            timers: None,
        })
    }

    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Changes the learning rate from the next step on (for schedules).
    pub fn set_learning_rate(&mut self, lr: f64) {
        self.settings.hyper.lr = lr;
    }

    /// All parameters, layer by layer: W [M][N] then b [M].
    pub fn params(&self) -> &[f32] {
        &self.params
    }

    /// The gradients of the last step, in the order of [`Engine::params`].
    pub fn grads(&self) -> &[f32] {
        &self.grads
    }

    /// Layer `l`'s weights [M][N] and biases [M].
    pub fn layer(&self, l: usize) -> (&[f32], &[f32]) {
        let s = self.slots[l];
        (&self.params[s.weight..s.bias], &self.params[s.bias..s.end])
    }

    /// Layer `l`'s gradients, shaped like [`Engine::layer`].
    pub fn layer_grads(&self, l: usize) -> (&[f32], &[f32]) {
        let s = self.slots[l];
        (&self.grads[s.weight..s.bias], &self.grads[s.bias..s.end])
    }

    /// The parameters as f64 layers, for saving or for the reference engine.
    pub fn export(&self) -> Vec<LayerParams> {
        (0..self.slots.len())
            .map(|l| {
                let (w, b) = self.layer(l);
                LayerParams {
                    weight: w.iter().map(|&v| v as f64).collect(),
                    bias: b.iter().map(|&v| v as f64).collect(),
                }
            })
            .collect()
    }

    /// Starts timing every layer and phase (a few nanoseconds per phase), from zero.
    pub fn start_timers(&mut self) {
        let n = self.spec.layers.len();
        self.timers = Some(Timers {
            forward: vec![0.0; n],
            backward: vec![0.0; n],
            delta_nonzero: vec![0.0; n],
            ..Timers::default()
        });
    }

    pub fn timers(&self) -> Option<&Timers> {
        self.timers.as_ref()
    }

    fn clock(&self) -> Option<std::time::Instant> {
        self.timers.as_ref().map(|_| std::time::Instant::now())
    }

    /// Runs `f` with denormals flushed on this thread (the team's helpers flush their own).
    fn run<T>(&mut self, f: impl FnOnce(&mut Self) -> T) -> T {
        simd::flush_denormals();
        f(self)
    }

    fn check_batch(&self, x: &[f32], labels: Option<&[u8]>) -> Result<usize> {
        let n = self.spec.input;
        if !x.len().is_multiple_of(n) {
            return Err(Error::Shape {
                op: "engine input",
                detail: format!("{} values is not a whole number of {n}-wide rows", x.len()),
            });
        }
        let batch = x.len() / n;
        if batch == 0 || batch > self.settings.max_batch {
            return Err(Error::Shape {
                op: "engine input",
                detail: format!("batch of {batch}; this engine was built for 1 to {}", self.settings.max_batch),
            });
        }
        if let Some(labels) = labels {
            let classes = self.spec.outputs();
            if labels.len() != batch {
                return Err(Error::Shape {
                    op: "engine labels",
                    detail: format!("{} labels for {batch} examples", labels.len()),
                });
            }
            if let Some(&bad) = labels.iter().find(|&&y| y as usize >= classes) {
                return Err(Error::Shape {
                    op: "engine labels",
                    detail: format!("label {bad} but the network has {classes} outputs"),
                });
            }
        }
        Ok(batch)
    }

    /// Forward pass over a batch; returns the outputs [B][outputs].
    /// Batch normalization uses its running statistics and dropout passes values through.
    pub fn forward(&mut self, x: &[f32]) -> Result<&[f32]> {
        let batch = self.check_batch(x, None)?;
        self.run(|e| e.forward_any(x, batch, false));
        Ok(self.output(batch))
    }

    /// Forward and loss without training (evaluation mode, as [`Engine::forward`]): the score
    /// of a batch.
    pub fn evaluate(&mut self, x: &[f32], labels: &[u8]) -> Result<Score> {
        let batch = self.check_batch(x, Some(labels))?;
        let loss = self.settings.loss;
        Ok(self.run(|e| {
            e.forward_any(x, batch, false);
            let m = e.spec.outputs();
            loss::score(loss, e.output(batch), labels, m, None)
        }))
    }

    /// The forward pass on whichever path runs this network.
    fn forward_any(&mut self, x: &[f32], batch: usize, training: bool) {
        if self.graph.is_some() { self.graph_forward(x, batch, training, None) } else { self.forward_inner(x, batch) }
    }

    /// Seeds dropout's masks (with the step and the layer, as the reference engine does).
    pub fn set_seed(&mut self, seed: u64) {
        self.seed = seed;
    }

    /// Batch normalization's running statistics (empty for a network without batch norm).
    pub fn running_stats(&self) -> RunningStats {
        let batches =
            self.spec.layers.iter().zip(&self.tracked).filter(|(l, _)| l.kind == Kind::BatchNorm).map(|(_, &t)| t);
        RunningStats { values: self.running.clone(), batches: batches.collect() }
    }

    /// Layer `l`'s running mean and variance and its batches normalized, for a batch-norm layer.
    pub fn layer_running(&self, l: usize) -> Option<(&[f32], &[f32], u64)> {
        let layer = self.spec.layers.get(l).filter(|x| x.kind == Kind::BatchNorm)?;
        let (at, c) = (self.running_at[l], layer.input.c);
        Some((&self.running[at..at + c], &self.running[at + c..at + 2 * c], self.tracked[l]))
    }

    /// Restores what [`Engine::running_stats`] returned (from a model file or a checkpoint).
    pub fn set_running_stats(&mut self, stats: &RunningStats) -> Result<()> {
        let bns: Vec<usize> =
            (0..self.spec.layers.len()).filter(|&l| self.spec.layers[l].kind == Kind::BatchNorm).collect();
        if stats.values.len() != self.running.len() || stats.batches.len() != bns.len() {
            return Err(Error::Shape {
                op: "running statistics",
                detail: format!(
                    "{} values for {} batch-norm layers given, {} values for {} held by this network",
                    stats.values.len(),
                    stats.batches.len(),
                    self.running.len(),
                    bns.len()
                ),
            });
        }
        self.running.copy_from_slice(&stats.values);
        for (&l, &t) in bns.iter().zip(&stats.batches) {
            self.tracked[l] = t;
        }
        Ok(())
    }

    /// Forward, loss and backward: fills the gradient arena, moves nothing.
    pub fn compute_gradients(&mut self, x: &[f32], labels: &[u8]) -> Result<Score> {
        let batch = self.check_batch(x, Some(labels))?;
        Ok(self.run(|e| e.gradients_inner(x, labels, batch, false, batch, None)))
    }

    /// [`Engine::compute_gradients`] for a share of a batch of `total` examples: the gradient is
    /// of the mean over all `total`, so the shares' gradients add up to the whole batch's.
    pub fn compute_gradients_of(&mut self, x: &[f32], labels: &[u8], total: usize) -> Result<Score> {
        self.compute_gradients_synced(x, labels, total, None)
    }

    /// [`Engine::compute_gradients_of`] with batch norm's statistics summed over the ranks by
    /// `sync` (`--sync-bn`): each batch-norm layer normalizes with the whole global batch's mean
    /// and variance, forward and backward.
    pub fn compute_gradients_synced(
        &mut self,
        x: &[f32],
        labels: &[u8],
        total: usize,
        sync: Option<RankSum>,
    ) -> Result<Score> {
        let batch = self.check_batch(x, Some(labels))?;
        Ok(self.run(|e| e.gradients_inner(x, labels, batch, false, total.max(batch), sync)))
    }

    /// The gradient arena, to be replaced by a sum over processes before [`Engine::apply_update`].
    pub fn grads_mut(&mut self) -> &mut [f32] {
        &mut self.grads
    }

    /// The optimizer's step from the gradient arena as it stands (never fused with a backward).
    pub fn apply_update(&mut self) {
        self.run(|e| {
            let mut t = e.clock();
            e.update(false);
            lap(&mut t, e.timers.as_mut().map(|x| &mut x.update));
        })
    }

    /// One training step: gradients, then the optimizer. Returns the batch's score before the update.
    pub fn train_step(&mut self, x: &[f32], labels: &[u8]) -> Result<Score> {
        let batch = self.check_batch(x, Some(labels))?;
        // The fused path has no weight decay (with decay the step stores its gradients) and runs
        // chains only.
        let fused = batch == 1
            && matches!(self.settings.optimizer, Optimizer::Sgd | Optimizer::Momentum)
            && self.settings.hyper.weight_decay == 0.0
            && self.graph.is_none();
        Ok(self.run(|e| {
            let s = e.gradients_inner(x, labels, batch, fused, batch, None);
            let mut t = e.clock();
            e.update(fused);
            lap(&mut t, e.timers.as_mut().map(|x| &mut x.update));
            s
        }))
    }

    fn forward_inner(&mut self, x: &[f32], batch: usize) {
        let mut t = self.clock();
        let Engine { spec, slots, params, ops, feeds, acts, flat, col, args, team, timers, .. } = self;
        for (l, layer) in spec.layers.iter().enumerate() {
            let s = slots[l];
            let (n, m) = (layer.inputs, layer.outputs);
            let (before, rest) = acts.split_at_mut(l);
            let mut input = if l == 0 { x } else { &before[l - 1][..batch * n] };
            match feeds[l] {
                Feed::Direct => {}
                Feed::ToChannels { c, p } => {
                    to_channels(input, &mut flat[l][..batch * n], batch, c, p);
                    input = &flat[l][..batch * n];
                }
                Feed::ToRows { c, p } => {
                    to_rows(input, &mut flat[l][..batch * n], batch, c, p);
                    input = &flat[l][..batch * n];
                }
            }
            let out = &mut rest[0][..batch * m];
            let (w, b) = (&params[s.weight..s.bias], &params[s.bias..s.end]);
            match ops[l] {
                Op::Dense => {
                    // z = X · Wᵀ, with W stored [M][N].
                    matmul(View::rows(input, batch, n), View::transposed(w, m, n), out, team);
                    activation::bias_forward(layer.activation, out, b);
                }
                Op::Conv(sh) => conv::conv_forward(&sh, batch, layer.activation, input, w, b, col, out, team),
                Op::MaxPool(sh) => pool::max_forward(&sh, batch, input, out, &mut args[l], team),
                Op::AvgPool(sh) => pool::avg_forward(&sh, batch, input, out, team),
            }
            lap(&mut t, timers.as_mut().map(|x| &mut x.forward[l]));
        }
    }

    /// Forward, loss and backward. With `fused` (one example, SGD or momentum), each dense
    /// layer's weights and biases are updated as its gradient is formed, without storing it:
    /// the gradient of one example is an outer product, and forming it, storing it and reading
    /// it back costs more memory traffic than the update itself (`flopnet bench 784-30-30-10
    /// --act sigmoid --batch 1`: ~12.5 µs a step before, ~9 µs after). [`Engine::update`] then
    /// skips those layers.
    fn gradients_inner(
        &mut self,
        x: &[f32],
        labels: &[u8],
        batch: usize,
        fused: bool,
        over: usize,
        sync: Option<RankSum>,
    ) -> Score {
        if self.graph.is_some() {
            return self.graph_gradients(x, labels, batch, over, sync);
        }
        self.forward_inner(x, batch);
        let lossfn = self.settings.loss;
        let last = self.spec.layers.len() - 1;
        let m_out = self.spec.outputs();
        let mut t = self.clock();
        let (lr, mu) = (self.settings.hyper.lr as f32, self.settings.hyper.momentum as f32);
        let momentum = self.settings.optimizer == Optimizer::Momentum;
        let Engine { spec, slots, params, grads, first, ops, feeds, acts, flat, col, args, back, team, timers, .. } =
            self;
        let [g, spare] = back;
        let score =
            loss::score_over(lossfn, &acts[last][..batch * m_out], labels, m_out, Some(&mut g[..batch * m_out]), over);
        lap(&mut t, timers.as_mut().map(|x| &mut x.loss));
        let (mut g, mut spare) = (g, spare);
        // Set when the layer above already applied this layer's activation derivative (a max
        // pool over a relu's outputs).
        let mut applied = false;
        for (l, layer) in spec.layers.iter().enumerate().rev() {
            let s = slots[l];
            let (n, m) = (layer.inputs, layer.outputs);
            let delta = &mut g[..batch * m];
            let from_ce = l == last && lossfn == Loss::Ce && layer.activation == Activation::Softmax;
            if !from_ce && !std::mem::take(&mut applied) {
                activation::backward(layer.activation, &acts[l][..batch * m], delta, m);
            }
            let input = match (feeds[l], l) {
                (Feed::Direct, 0) => x,
                (Feed::Direct, _) => &acts[l - 1][..batch * n],
                _ => &flat[l][..batch * n],
            };
            if fused && matches!(ops[l], Op::Dense) {
                let (w, b) = params[s.weight..s.end].split_at_mut(s.bias - s.weight);
                if l > 0 {
                    // dX = delta · W from the weights before their update.
                    matmul(View::rows(delta, 1, m), View::rows(w, m, n), &mut spare[..n], team);
                }
                let input = &input[..n];
                for (i, &d) in delta.iter().enumerate() {
                    let row = &mut w[i * n..(i + 1) * n];
                    if momentum {
                        kernels::momentum_outer(
                            row,
                            &mut first[s.weight + i * n..s.weight + (i + 1) * n],
                            input,
                            d,
                            lr,
                            mu,
                        );
                    } else {
                        kernels::sgd_outer(row, input, d, lr);
                    }
                }
                if momentum {
                    kernels::momentum(b, &mut first[s.bias..s.end], delta, lr, mu);
                } else {
                    kernels::sgd(b, delta, lr);
                }
                if l > 0 {
                    if let Feed::ToRows { c, p } = feeds[l] {
                        to_channels(&spare[..n], &mut g[..n], 1, c, p);
                    } else {
                        std::mem::swap(&mut g, &mut spare);
                    }
                }
                lap(&mut t, timers.as_mut().map(|x| &mut x.backward[l]));
                continue;
            }
            let w = &params[s.weight..s.bias];
            let (dw, db) = grads[s.weight..s.end].split_at_mut(s.bias - s.weight);
            match ops[l] {
                Op::Dense => {
                    // dW = deltaᵀ · X: [M][N].
                    matmul(View::transposed(delta, batch, m), View::rows(input, batch, n), dw, team);
                    // db = column sums of delta, in example order.
                    db.copy_from_slice(&delta[..m]);
                    for row in delta[m..].chunks_exact(m) {
                        db.iter_mut().zip(row).for_each(|(d, &v)| *d += v);
                    }
                    if l > 0 {
                        // dX = delta · W: [B][N], the next layer down's incoming gradient.
                        matmul(View::rows(delta, batch, m), View::rows(w, m, n), &mut spare[..batch * n], team);
                        if let Feed::ToRows { c, p } = feeds[l] {
                            // Back to the image layer's channel-major layout, in the freed buffer.
                            to_channels(&spare[..batch * n], &mut g[..batch * n], batch, c, p);
                        } else {
                            std::mem::swap(&mut g, &mut spare);
                        }
                    }
                }
                Op::Conv(sh) => {
                    let dx = if l > 0 { Some(&mut spare[..batch * n]) } else { None };
                    if let Some(t) = timers.as_mut()
                        && conv::Tiles::for_shape(&sh).takes_sparse(&sh)
                    {
                        // Only while timing (`bench`): the backward counts them again itself.
                        t.delta_nonzero[l] += conv::nonzero_share(delta) as f64;
                    }
                    conv::conv_backward(&sh, batch, input, w, delta, dw, db, col, dx.into(), team);
                    if l > 0 {
                        std::mem::swap(&mut g, &mut spare);
                    }
                }
                Op::MaxPool(sh) => {
                    if l > 0 {
                        // A relu below: the gradient lands only on each window's argmax, whose
                        // value is this layer's output y, so the relu's test (a > 0) is y > 0 —
                        // applied here to the pooled gradient, 1/k² of the values.
                        // (This layer's own activation must keep the sign of y: identity or relu.)
                        applied = spec.layers[l - 1].activation == Activation::Relu
                            && matches!(layer.activation, Activation::Identity | Activation::Relu)
                            && feeds[l] == Feed::Direct;
                        if applied {
                            activation::backward(Activation::Relu, &acts[l][..batch * m], delta, m);
                        }
                        pool::max_backward(&sh, batch, delta, &args[l], &mut spare[..batch * n], team);
                        std::mem::swap(&mut g, &mut spare);
                    }
                }
                Op::AvgPool(sh) => {
                    if l > 0 {
                        pool::avg_backward(&sh, batch, delta, &mut spare[..batch * n], team);
                        std::mem::swap(&mut g, &mut spare);
                    }
                }
            }
            lap(&mut t, timers.as_mut().map(|x| &mut x.backward[l]));
        }
        score
    }

    /// The optimizer over every parameter, or with `fused` over those of the layers
    /// [`Engine::gradients_inner`] did not already update (all but the dense ones).
    fn update(&mut self, fused: bool) {
        if fused {
            self.steps += 1;
            let (lr, mu) = (self.settings.hyper.lr as f32, self.settings.hyper.momentum as f32);
            for (l, s) in self.slots.iter().enumerate() {
                if matches!(self.ops[l], Op::Dense) {
                    continue;
                }
                let (w, g) = (&mut self.params[s.weight..s.end], &self.grads[s.weight..s.end]);
                match self.settings.optimizer {
                    Optimizer::Momentum => kernels::momentum(w, &mut self.first[s.weight..s.end], g, lr, mu),
                    _ => kernels::sgd(w, g, lr),
                }
            }
            return;
        }
        self.steps += 1;
        let h = self.settings.hyper;
        let (lr, mu) = (h.lr as f32, h.momentum as f32);
        let opt = self.settings.optimizer;
        let (b1, b2, eps) = (h.beta1 as f32, h.beta2 as f32, h.eps as f32);
        let t = self.steps as i32;
        let step_size = (h.lr / (1.0 - h.beta1.powi(t))) as f32;
        let inv_sqrt_c2 = (1.0 / (1.0 - h.beta2.powi(t)).sqrt()) as f32;
        let coupled = h.rule(opt).coupled_decay;
        let wd = h.weight_decay as f32;
        let keep = (opt == Optimizer::AdamW).then_some((1.0 - h.lr * h.weight_decay) as f32);
        let decay = if coupled && opt == Optimizer::Adam { wd } else { 0.0 };
        let adam = kernels::AdamStep { b1, b2, eps, step_size, inv_sqrt_c2, keep, decay };
        let n = self.params.len();
        // Elementwise work: chunks are independent, so splitting changes no result.
        let parts = if n >= UPDATE_SPLIT_MIN { self.team.size() } else { 1 };
        let per = n.div_ceil(parts).div_ceil(16) * 16;
        let (w, v1, v2, g) = (
            SendMut(self.params.as_mut_ptr()),
            SendMut(self.first.as_mut_ptr()),
            SendMut(self.second.as_mut_ptr()),
            &self.grads,
        );
        let task = |t: usize| {
            let r = (t * per).min(n)..((t + 1) * per).min(n);
            let len = r.len();
            let (w, v1, v2, g) = (&w, &v1, &v2, &g);
            // SAFETY: each task owns the range `r` of every arena; the arenas hold n values each
            // (the optimizer-state ones only when that optimizer uses them).
            let w = unsafe { std::slice::from_raw_parts_mut(w.0.add(r.start), len) };
            let g = &g[r.clone()];
            match opt {
                Optimizer::Sgd if coupled => kernels::sgd_decay(w, g, lr, wd),
                Optimizer::Sgd => kernels::sgd(w, g, lr),
                Optimizer::Momentum => {
                    let v = unsafe { std::slice::from_raw_parts_mut(v1.0.add(r.start), len) };
                    if coupled {
                        kernels::momentum_decay(w, v, g, lr, mu, wd)
                    } else {
                        kernels::momentum(w, v, g, lr, mu)
                    }
                }
                Optimizer::Adam | Optimizer::AdamW => {
                    let m = unsafe { std::slice::from_raw_parts_mut(v1.0.add(r.start), len) };
                    let v = unsafe { std::slice::from_raw_parts_mut(v2.0.add(r.start), len) };
                    kernels::adam_step(w, m, v, g, adam)
                }
            }
        };
        self.team.run(n.div_ceil(per).max(1), &task);
    }

    /// The optimizer's state, for checkpoints: momentum's velocity or Adam's first moment, Adam's
    /// second moment (each empty when the optimizer keeps none) and the steps taken.
    pub fn optimizer_state(&self) -> (&[f32], &[f32], u64) {
        (&self.first, &self.second, self.steps)
    }

    /// Restores what [`Engine::optimizer_state`] returned, so training continues bit for bit.
    pub fn set_optimizer_state(&mut self, first: &[f32], second: &[f32], steps: u64) -> Result<()> {
        if first.len() != self.first.len() || second.len() != self.second.len() {
            return Err(Error::Shape {
                op: "optimizer state",
                detail: format!(
                    "{} and {} values given, {} and {} held by this engine's {} optimizer",
                    first.len(),
                    second.len(),
                    self.first.len(),
                    self.second.len(),
                    self.settings.optimizer
                ),
            });
        }
        self.first.copy_from_slice(first);
        self.second.copy_from_slice(second);
        self.steps = steps;
        Ok(())
    }
}
