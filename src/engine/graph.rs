//! Graph networks on the engine: any layer may read any earlier one (`Spec::sources`), and the
//! kinds of real architectures run (batch normalization, residual sums, concatenations, global
//! and adaptive average pooling, dropout, the zero-padding shortcut, padded max pooling, relu6).
//! A chain of the kinds the engine ran before keeps its own path (`Engine::forward_inner`).
//!
//! Layers run in the spec's order, which puts each after what it reads. Every layer's output
//! stays in a layout: rows [B][M] for dense layers and global pooling (vectors), channel-major
//! [C][B][P] for the image kinds, a sum's or a dropout's that of its first input. Where an
//! input's layout is not the one its reader wants (and C > 1), the edge keeps a transposed
//! copy. Concatenating channel-major images is one block copy per input.
//!
//! Backward walks the layers in reverse. Each layer owns a gradient buffer in its layout; the
//! first reader to hand a gradient back writes it, later readers (a residual's shortcut, any
//! fan-out) add theirs, always in reverse layer order, so a step's results are the same bits
//! every time for a given thread count.

use super::activation;
use super::conv::{self, ConvShape};
use super::gap::{self, Adaptive};
use super::gemm::{View, matmul};
use super::kernels;
use super::loss;
use super::norm;
use super::padpool::PadPool;
use super::pages;
use super::pool::{self, PoolShape};
use super::team::{Parts, Team};
use super::{Engine, Score, lap, to_channels, to_rows};
use crate::spec::{Activation, Kind, Loss, Source, Spec};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Where a layer keeps its output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Layout {
    /// [B][C][P], example after example.
    Rows,
    /// [C][B][P], channel after channel.
    Channels,
}

/// What a layer computes on the graph path, with its geometry.
#[derive(Clone, Debug)]
enum Node {
    Dense,
    Conv(ConvShape),
    MaxPool(PoolShape),
    AvgPool(PoolShape),
    PadMax(PadPool),
    BatchNorm,
    Add,
    Concat,
    Global,
    Adaptive(Adaptive),
    Dropout(f64),
    ZeroPad(usize),
}

/// A transposition on an edge: from the source's layout to the reader's (and back for the
/// gradient), of an image of `c` channels of `p` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Turn {
    ToChannels { c: usize, p: usize },
    ToRows { c: usize, p: usize },
}

impl Turn {
    fn forward(self, x: &[f32], out: &mut [f32], batch: usize) {
        match self {
            Turn::ToChannels { c, p } => to_channels(x, out, batch, c, p),
            Turn::ToRows { c, p } => to_rows(x, out, batch, c, p),
        }
    }

    /// The gradient back to the source's layout.
    fn backward(self, g: &[f32], out: &mut [f32], batch: usize) {
        match self {
            Turn::ToChannels { c, p } => to_rows(g, out, batch, c, p),
            Turn::ToRows { c, p } => to_channels(g, out, batch, c, p),
        }
    }
}

/// The graph path's plan and buffers, cut once for `max_batch` examples.
pub(crate) struct Graph {
    nodes: Vec<Node>,
    layouts: Vec<Layout>,
    /// Per layer, per input: the transposition on that edge, if any.
    turns: Vec<Vec<Option<Turn>>>,
    /// Per layer, per input: the transposed copy of that input (empty when none).
    moved: Vec<Vec<Vec<f32>>>,
    /// dL/d(output) per layer, in its layout.
    grads: Vec<Vec<f32>>,
    written: Vec<bool>,
    /// Two buffers of [max_batch][widest output] for gradients on their way to a source.
    tmp: [Vec<f32>; 2],
    /// The output as rows, when the last layer keeps channels (C > 1).
    out_rows: Vec<f32>,
    /// Max pooling's argmax per output.
    args: Vec<Vec<u32>>,
    /// Dropout's mask per value: 0 or 1/(1−p).
    masks: Vec<Vec<f32>>,
    /// Batch norm's saved values ([`norm::SAVED`] per channel) of the last training batch.
    saved: Vec<Vec<f32>>,
    /// Per layer: for a residual sum, the batch norm whose output pass it does in its own
    /// ([`fused_norms`]).
    sum_of_norm: Vec<Option<usize>>,
    /// Per layer: whether it keeps its output ([`kept_outputs`]; not a batch norm whose output
    /// pass a later sum does).
    kept: Vec<bool>,
    /// Per layer: for a sum, the input that takes its δ buffer ([`sum_takers`]).
    takers: Vec<Option<usize>>,
    /// Per layer: for a batch norm right after a convolution it alone reads, that convolution
    /// and where its padded δ goes ([`laid_deltas`]).
    lays: Vec<Option<(usize, conv::PaddedDelta)>>,
}

impl Graph {
    /// Where the batch norm right after convolution `l` writes its δ, laid out
    /// ([`laid_deltas`]; never when synchronized, where the norm's input gradient waits for the
    /// ranks): asked by the norm's backward pass, then by the convolution's.
    fn laid(&self, l: usize, synced: bool) -> Option<conv::PaddedDelta> {
        match self.lays.get(l + 1) {
            Some(Some((j, rows))) if *j == l && !synced => Some(*rows),
            _ => None,
        }
    }
}

/// Per layer: whether it is a convolution whose δ the batch norm after it lays out
/// ([`laid_deltas`]).
pub(crate) fn laid_convs(spec: &Spec, batch: usize) -> Vec<bool> {
    let mut laid = vec![false; spec.layers.len()];
    for (j, _) in laid_deltas(spec, &turns(spec, &layouts(spec)), batch).into_iter().flatten() {
        laid[j] = true;
    }
    laid
}

/// Per layer: the convolution whose δ a batch norm writes straight into that convolution's
/// padded copy ([`conv::padded_delta`]), so that the convolution's backward pass skips its own
/// pass over δ: where the norm reads only the convolution right before it (no other layer
/// runs between the two backward passes, so the scratch still holds the copy), over an edge
/// that does not transpose, and nothing else reads the convolution, whose activation is the
/// identity (no derivative to apply to δ in place).
fn laid_deltas(spec: &Spec, turns: &[Vec<Option<Turn>>], batch: usize) -> Vec<Option<(usize, conv::PaddedDelta)>> {
    (0..spec.layers.len())
        .map(|l| {
            let j = match spec.sources[l][..] {
                [Source::Node(j)] if j + 1 == l && turns[l][0].is_none() => j,
                _ => return None,
            };
            let (norm, layer) = (&spec.layers[l], &spec.layers[j]);
            if norm.kind != Kind::BatchNorm || layer.activation != Activation::Identity || spec.consumers(j) != 1 {
                return None;
            }
            let Kind::Conv2d(_) = layer.kind else { return None };
            conv::padded_delta(&ConvShape::of(layer)?, batch).map(|rows| (j, rows))
        })
        .collect()
}

/// Per layer: for a sum, which input (by position in its sources) takes the sum's δ buffer
/// in the backward pass, swapped instead of copied: the first whose source has no gradient yet
/// when the sum's turn comes (the sum is its last reader: backward runs in reverse order), over
/// an edge that does not transpose, of the sum's size, and read once by the sum. Every other
/// input receives a copy or adds δ. Fixed by the graph alone, so the time model asks the same
/// rule (`engine::sum_takers`).
pub(crate) fn sum_takers(spec: &Spec) -> Vec<Option<usize>> {
    takers(spec, &turns(spec, &layouts(spec)))
}

fn takers(spec: &Spec, turns: &[Vec<Option<Turn>>]) -> Vec<Option<usize>> {
    let mut last_reader = vec![0usize; spec.layers.len()];
    for (i, srcs) in spec.sources.iter().enumerate() {
        for s in srcs {
            if let Source::Node(j) = *s {
                last_reader[j] = last_reader[j].max(i);
            }
        }
    }
    spec.layers
        .iter()
        .enumerate()
        .map(|(i, layer)| {
            if !matches!(layer.kind, Kind::Add(_)) {
                return None;
            }
            let srcs = &spec.sources[i];
            srcs.iter().enumerate().position(|(k, s)| match *s {
                Source::Node(j) => {
                    turns[i][k].is_none()
                        && last_reader[j] == i
                        && spec.layers[j].outputs == layer.outputs
                        && srcs.iter().filter(|t| **t == *s).count() == 1
                }
                Source::Input => false,
            })
        })
        .collect()
}

/// Per layer: whether the engine keeps its output (all but the norms [`fused_norms`] gives).
pub(crate) fn kept_outputs(spec: &Spec) -> Vec<bool> {
    if needed(spec) {
        kept(spec.layers.len(), &fused_norms(spec, &turns(spec, &layouts(spec))))
    } else {
        vec![true; spec.layers.len()]
    }
}

fn kept(layers: usize, sum_of_norm: &[Option<usize>]) -> Vec<bool> {
    let mut kept = vec![true; layers];
    for b in sum_of_norm.iter().flatten() {
        kept[*b] = false;
    }
    kept
}

/// Per layer: for a sum of two inputs, one of them a batch norm without an activation that
/// nothing else reads, that norm (the sum normalizes it in the same pass,
/// `norm::train_forward`'s `other`: a residual block's last norm and its shortcut's sum, the norm's
/// output neither written nor read). Not for the last layer, a sum whose activation needs whole
/// rows, or an edge that transposes. The norm's backward reads no output without an activation,
/// and the sum's reads its own: nothing misses the norm's.
fn fused_norms(spec: &Spec, turns: &[Vec<Option<Turn>>]) -> Vec<Option<usize>> {
    let last = spec.layers.len() - 1;
    spec.layers
        .iter()
        .enumerate()
        .map(|(r, layer)| {
            let srcs = &spec.sources[r];
            let fits = matches!(layer.kind, Kind::Add(_))
                && srcs.len() == 2
                && r != last
                && norm::applies(layer.activation)
                && turns[r].iter().all(Option::is_none);
            if !fits {
                return None;
            }
            srcs.iter().find_map(|s| match *s {
                Source::Node(b)
                    if spec.layers[b].kind == Kind::BatchNorm
                        && spec.layers[b].activation == Activation::Identity
                        && spec.consumers(b) == 1 =>
                {
                    Some(b)
                }
                _ => None,
            })
        })
        .collect()
}

/// Where a layer's inputs are read from: an edge's transposed copy where it has one, else the
/// data or the source's output (none for a norm its sum normalizes, [`kept_outputs`]).
struct Inputs<'a> {
    spec: &'a Spec,
    turns: &'a [Vec<Option<Turn>>],
    moved: &'a [Vec<Vec<f32>>],
    kept: &'a [bool],
    x: &'a [f32],
    batch: usize,
}

impl<'a> Inputs<'a> {
    /// Layer `l`'s input `k`, the layers' outputs being `acts`.
    fn of(&self, acts: &'a [Vec<f32>], l: usize, k: usize) -> &'a [f32] {
        let src = self.spec.sources[l][k];
        let n = self.batch * self.spec.shape_of(src).size();
        if self.turns[l][k].is_some() {
            return &self.moved[l][k][..n];
        }
        match src {
            Source::Input => &self.x[..n],
            Source::Node(j) if !self.kept[j] => &[],
            Source::Node(j) => &acts[j][..n],
        }
    }
}

/// Whether `spec` needs the graph path: it is not a chain, or it holds a kind or activation the
/// chain path does not run.
pub(crate) fn needed(spec: &Spec) -> bool {
    !spec.is_chain() || spec.layers.iter().any(|l| !l.kind.is_classic() || l.activation == Activation::Relu6)
}

/// Each layer's output layout.
pub(crate) fn layouts(spec: &Spec) -> Vec<Layout> {
    let mut out: Vec<Layout> = Vec::with_capacity(spec.layers.len());
    for (l, layer) in spec.layers.iter().enumerate() {
        let first = match spec.sources[l][0] {
            Source::Input => Layout::Rows,
            Source::Node(j) => out[j],
        };
        out.push(match layer.kind {
            Kind::Dense | Kind::GlobalAvgPool => Layout::Rows,
            Kind::Add(_) | Kind::Dropout(_) => first,
            _ => Layout::Channels,
        });
    }
    out
}

/// The layout a layer reads its inputs in.
fn wants(kind: Kind, own: Layout) -> Layout {
    match kind {
        Kind::Dense => Layout::Rows,
        Kind::Add(_) | Kind::Dropout(_) => own,
        _ => Layout::Channels,
    }
}

/// Per layer, per input, the transposition on that edge.
fn turns(spec: &Spec, layouts: &[Layout]) -> Vec<Vec<Option<Turn>>> {
    spec.layers
        .iter()
        .enumerate()
        .map(|(l, layer)| {
            let want = wants(layer.kind, layouts[l]);
            spec.sources[l]
                .iter()
                .map(|s| {
                    let (have, shape) = match *s {
                        Source::Input => (Layout::Rows, spec.input_shape),
                        Source::Node(j) => (layouts[j], spec.layers[j].output),
                    };
                    let (c, p) = (shape.c, shape.h * shape.w);
                    match (have, want) {
                        _ if c == 1 => None,
                        (Layout::Rows, Layout::Channels) => Some(Turn::ToChannels { c, p }),
                        (Layout::Channels, Layout::Rows) => Some(Turn::ToRows { c, p }),
                        _ => None,
                    }
                })
                .collect()
        })
        .collect()
}

/// Values (f32 or u32) the graph path holds beyond the parameters, the layer outputs and the
/// convolutions' scratch, for a batch of `batch`: the gradient per layer, the transposed
/// inputs, two gradients in flight, the output as rows, max pooling's argmax indices, dropout's
/// masks, and batch norm's saved and running statistics.
pub(crate) fn buffer_values(spec: &Spec, batch: usize) -> usize {
    let layouts = layouts(spec);
    let turns = turns(spec, &layouts);
    let mut n = 0;
    for (l, layer) in spec.layers.iter().enumerate() {
        n += batch * layer.outputs;
        for (s, t) in spec.sources[l].iter().zip(&turns[l]) {
            if t.is_some() {
                n += batch * spec.shape_of(*s).size();
            }
        }
        n += match layer.kind {
            Kind::MaxPool(_) | Kind::Dropout(_) => batch * layer.outputs,
            // Saved for the backward pass, then the running mean and variance.
            Kind::BatchNorm => (norm::SAVED + 2) * layer.input.c,
            _ => 0,
        };
    }
    let widest = spec.layers.iter().map(|l| l.outputs).max().unwrap_or(0);
    n += 2 * batch * widest;
    if last_turn(spec, &layouts).is_some() {
        n += batch * spec.outputs();
    }
    n
}

/// The transposition from the last layer's output to rows, if it keeps channels.
fn last_turn(spec: &Spec, layouts: &[Layout]) -> Option<Turn> {
    let last = spec.layers.last()?;
    let (c, p) = (last.output.c, last.output.h * last.output.w);
    (layouts[layouts.len() - 1] == Layout::Channels && c > 1).then_some(Turn::ToRows { c, p })
}

impl Graph {
    /// Whether layer `l` keeps its output ([`kept_outputs`]).
    pub(crate) fn keeps(&self, l: usize) -> bool {
        self.kept[l]
    }

    pub(crate) fn new(spec: &Spec, batch: usize) -> Graph {
        let layouts = layouts(spec);
        let turns = turns(spec, &layouts);
        let sum_of_norm = fused_norms(spec, &turns);
        let (kept, takers) = (kept(spec.layers.len(), &sum_of_norm), takers(spec, &turns));
        let lays = laid_deltas(spec, &turns, batch);
        let nodes = spec
            .layers
            .iter()
            .map(|layer| match layer.kind {
                Kind::Dense => Node::Dense,
                Kind::Conv2d(_) => Node::Conv(ConvShape::of(layer).expect("a convolution")),
                Kind::MaxPool(p) if p.pad > 0 || p.ceil => Node::PadMax(PadPool::of(layer).expect("a max pool")),
                Kind::MaxPool(_) => Node::MaxPool(PoolShape::of(layer).expect("a pooling layer")),
                Kind::AvgPool(_) => Node::AvgPool(PoolShape::of(layer).expect("a pooling layer")),
                Kind::BatchNorm => Node::BatchNorm,
                Kind::Add(_) => Node::Add,
                Kind::Concat => Node::Concat,
                Kind::GlobalAvgPool => Node::Global,
                Kind::AdaptiveAvgPool(oh, ow) => {
                    Node::Adaptive(Adaptive { h: layer.input.h, w: layer.input.w, oh, ow })
                }
                Kind::Dropout(p) => Node::Dropout(p.value()),
                Kind::ZeroPad { stride, .. } => Node::ZeroPad(stride),
            })
            .collect();
        let moved = spec
            .sources
            .iter()
            .zip(&turns)
            .map(|(srcs, ts)| {
                srcs.iter()
                    .zip(ts)
                    .map(
                        |(s, t)| if t.is_some() { pages::zeroed(batch * spec.shape_of(*s).size()) } else { Vec::new() },
                    )
                    .collect()
            })
            .collect();
        let per_output = |on: &dyn Fn(&Kind) -> bool| -> Vec<Vec<f32>> {
            spec.layers
                .iter()
                .map(|l| if on(&l.kind) { pages::zeroed(batch * l.outputs) } else { Vec::new() })
                .collect()
        };
        let widest = spec.layers.iter().map(|l| l.outputs).max().unwrap_or(0);
        let out_rows = if last_turn(spec, &layouts).is_some() { vec![0.0; batch * spec.outputs()] } else { Vec::new() };
        Graph {
            nodes,
            turns,
            moved,
            grads: per_output(&|_| true),
            written: vec![false; spec.layers.len()],
            tmp: [pages::zeroed(batch * widest), pages::zeroed(batch * widest)],
            out_rows,
            args: spec
                .layers
                .iter()
                .map(|l| if matches!(l.kind, Kind::MaxPool(_)) { vec![0; batch * l.outputs] } else { Vec::new() })
                .collect(),
            masks: per_output(&|k| matches!(k, Kind::Dropout(_))),
            saved: spec
                .layers
                .iter()
                .map(|l| if l.kind == Kind::BatchNorm { vec![0.0; norm::SAVED * l.input.c] } else { Vec::new() })
                .collect(),
            layouts,
            sum_of_norm,
            kept,
            takers,
            lays,
        }
    }
}

/// Values an elementwise pass hands a task at a time.
const RUN: usize = 1 << 14;

/// `f(out[r], r)` over consecutive runs `r` of `out`, split across the team when there are many
/// values (each run's values are computed alone, so the split changes no result).
fn elementwise(out: &mut [f32], team: &Team, f: &(dyn Fn(&mut [f32], std::ops::Range<usize>) + Sync)) {
    let len = out.len();
    let op = Parts::of(out);
    conv::split_items(len.div_ceil(RUN), len, team, &|runs| {
        let r = runs.start * RUN..(runs.end * RUN).min(len);
        // SAFETY: these runs of `out` are this task's alone.
        f(unsafe { op.part(r.start, r.len()) }, r);
    });
}

/// The activation `act` over `out` in place (rows of `m` values), split across the team unless
/// it needs whole rows (softmax).
fn activate(act: Activation, out: &mut [f32], m: usize, team: &Team) {
    let (each, rows) = activation::by_value(act);
    if each != Activation::Identity {
        elementwise(out, team, &|o, _| activation::forward(each, o, m));
    }
    activation::forward(rows, out, m);
}

/// Hands a gradient `g` for source `j` over the edge `turn`: written into `grads[j]` when it is
/// the first it receives, else added (through `tmp` when the edge transposes).
#[allow(clippy::too_many_arguments)]
fn give(
    grads: &mut [Vec<f32>],
    written: &mut [bool],
    tmp: &mut [f32],
    j: usize,
    turn: Option<Turn>,
    g: &[f32],
    batch: usize,
    team: &Team,
) {
    let len = g.len();
    let dst = &mut grads[j][..len];
    match (turn, written[j]) {
        (None, false) => elementwise(dst, team, &|d, r| d.copy_from_slice(&g[r])),
        (None, true) => elementwise(dst, team, &|d, r| kernels::axpy(1.0, &g[r], d)),
        (Some(t), false) => t.backward(g, dst, batch),
        (Some(t), true) => {
            let tmp = &mut tmp[..len];
            t.backward(g, tmp, batch);
            kernels::axpy(1.0, tmp, dst);
        }
    }
    written[j] = true;
}

/// The buffer a layer writes source `j`'s gradient into: `grads[j]` itself when it is the first
/// gradient `j` receives and the edge does not transpose, else `tmp` (then [`give`] it).
fn direct(written: &[bool], turn: Option<Turn>, j: usize) -> bool {
    turn.is_none() && !written[j]
}

/// Draws dropout's mask for layer `l` as the reference does (the same seed, step and layer give
/// the same mask): one uniform f64 per value in example order, dropped when below p; stored in
/// the layer's layout.
#[allow(clippy::too_many_arguments)]
fn draw_mask(
    mask: &mut [f32],
    p: f64,
    seed: u64,
    step: u64,
    l: usize,
    batch: usize,
    layout: Layout,
    c: usize,
    q: usize,
) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ step.wrapping_mul(0x9E37_79B9) ^ (l as u64) << 48);
    let scale = (1.0 / (1.0 - p)) as f32;
    for e in 0..batch {
        for ch in 0..c {
            for k in 0..q {
                let at = match layout {
                    Layout::Rows => (e * c + ch) * q + k,
                    Layout::Channels => (ch * batch + e) * q + k,
                };
                mask[at] = if rng.r#gen::<f64>() < p { 0.0 } else { scale };
            }
        }
    }
}

/// z [C'][B][oh][ow] from x [C][B][H][W]: every `s`-th row and column, zero channels after C.
/// Planes split across the team (each is written whole by one task).
fn zeropad_forward(spec: &Spec, l: usize, s: usize, batch: usize, x: &[f32], z: &mut [f32], team: &Team) {
    let (i, o) = (spec.layers[l].input, spec.layers[l].output);
    let (plane, oplane) = (i.h * i.w, o.h * o.w);
    let zp = Parts::of(&mut z[..o.c * batch * oplane]);
    conv::split_items(o.c * batch, o.c * batch * oplane, team, &|planes| {
        for p in planes {
            // SAFETY: plane p of z is this task's.
            let zo = unsafe { zp.part(p * oplane, oplane) };
            if p >= i.c * batch {
                zo.fill(0.0);
                continue;
            }
            let xp = &x[p * plane..(p + 1) * plane];
            for (y, row) in zo.chunks_exact_mut(o.w).enumerate() {
                let xr = &xp[y * s * i.w..];
                row.iter_mut().enumerate().for_each(|(xx, v)| *v = xr[xx * s]);
            }
        }
    });
}

/// dx [C][B][H][W] from g [C'][B][oh][ow]: the kept positions' gradients, zero elsewhere.
/// Planes split across the team (each is written whole by one task).
fn zeropad_backward(spec: &Spec, l: usize, s: usize, batch: usize, g: &[f32], dx: &mut [f32], team: &Team) {
    let (i, o) = (spec.layers[l].input, spec.layers[l].output);
    let (plane, oplane) = (i.h * i.w, o.h * o.w);
    let dp = Parts::of(&mut dx[..i.c * batch * plane]);
    conv::split_items(i.c * batch, i.c * batch * plane, team, &|planes| {
        for p in planes {
            // SAFETY: plane p of dx is this task's.
            let d = unsafe { dp.part(p * plane, plane) };
            d.fill(0.0);
            let gp = &g[p * oplane..(p + 1) * oplane];
            for (y, row) in gp.chunks_exact(o.w).enumerate() {
                let dr = &mut d[y * s * i.w..];
                row.iter().enumerate().for_each(|(xx, &v)| dr[xx * s] = v);
            }
        }
    });
}

impl Engine {
    /// The network's output [B][outputs] after a forward pass.
    pub(crate) fn output(&self, batch: usize) -> &[f32] {
        let m = self.spec.outputs();
        match &self.graph {
            Some(g) if !g.out_rows.is_empty() => &g.out_rows[..batch * m],
            _ => &self.acts[self.acts.len() - 1][..batch * m],
        }
    }

    /// Forward over the graph, in training mode (batch statistics, dropout, the running
    /// statistics updated) or evaluation mode.
    /// `sync` (training only): batch norm's statistics summed over the ranks (`--sync-bn`).
    pub(crate) fn graph_forward(&mut self, x: &[f32], batch: usize, training: bool, mut sync: Option<super::RankSum>) {
        let mut t = self.clock();
        let step = self.steps;
        let Engine { spec, slots, params, acts, col, team, timers, graph, running, running_at, tracked, seed, .. } =
            self;
        let g = graph.as_mut().expect("the graph path");
        for (l, layer) in spec.layers.iter().enumerate() {
            let s = slots[l];
            let m = layer.outputs;
            let (before, rest) = acts.split_at_mut(l);
            // Each input, transposed where the edge says so.
            for (k, src) in spec.sources[l].iter().enumerate() {
                if let Some(turn) = g.turns[l][k] {
                    let n = spec.shape_of(*src).size();
                    let from = match src {
                        Source::Input => x,
                        Source::Node(j) => &before[*j][..batch * n],
                    };
                    turn.forward(&from[..batch * n], &mut g.moved[l][k][..batch * n], batch);
                }
            }
            let reads = Inputs { spec, turns: &g.turns, moved: &g.moved, kept: &g.kept, x, batch };
            let inputs: Vec<&[f32]> = (0..spec.sources[l].len()).map(|k| reads.of(before, l, k)).collect();
            if !g.kept[l] {
                // Its sum normalizes it (fused_norms).
                lap(&mut t, timers.as_mut().map(|x| &mut x.forward[l]));
                continue;
            }
            let input = inputs[0];
            let n = layer.inputs;
            let out = &mut rest[0][..batch * m];
            let (w, b) = (&params[s.weight..s.bias], &params[s.bias..s.end]);
            let act = layer.activation;
            match &g.nodes[l] {
                Node::Dense => {
                    matmul(View::rows(input, batch, n), View::transposed(w, m, n), out, team);
                    activation::bias_forward(act, out, b);
                }
                Node::Conv(sh) => conv::conv_forward(sh, batch, act, input, w, b, col, out, team),
                Node::MaxPool(sh) => pool::max_forward(sh, batch, input, out, &mut g.args[l], team),
                Node::AvgPool(sh) => pool::avg_forward(sh, batch, input, out, team),
                Node::PadMax(pp) => pp.forward(layer.input.c * batch, input, out, &mut g.args[l], team),
                Node::BatchNorm => {
                    let c = layer.input.c;
                    let q = batch * (n / c);
                    let at = running_at[l];
                    let stats = &mut running[at..at + 2 * c];
                    if training {
                        let nm = norm::Norm { gamma: w, beta: b, running: stats, saved: &mut g.saved[l] };
                        norm::train_forward(nm, act, q, input, None, out, team, norm::reborrow(&mut sync));
                        tracked[l] += 1;
                    } else {
                        norm::infer(w, b, stats, act, q, input, None, out, team);
                    }
                    if !norm::applies(act) {
                        activation::forward(act, out, m);
                    }
                }
                Node::Add if g.sum_of_norm[l].is_some() => {
                    let b = g.sum_of_norm[l].expect("the sum's norm");
                    let k = spec.sources[l].iter().position(|s| *s == Source::Node(b)).expect("the norm's edge");
                    let (other, xb) = (inputs[1 - k], reads.of(before, b, 0));
                    let norm_layer = &spec.layers[b];
                    let (c, nb) = (norm_layer.input.c, norm_layer.inputs);
                    let sb = slots[b];
                    let (gamma, beta) = (&params[sb.weight..sb.bias], &params[sb.bias..sb.end]);
                    let q = batch * (nb / c);
                    let at = running_at[b];
                    let stats = &mut running[at..at + 2 * c];
                    if training {
                        let nm = norm::Norm { gamma, beta, running: stats, saved: &mut g.saved[b] };
                        norm::train_forward(nm, act, q, xb, Some(other), out, team, norm::reborrow(&mut sync));
                        tracked[b] += 1;
                    } else {
                        norm::infer(gamma, beta, stats, act, q, xb, Some(other), out, team);
                    }
                }
                Node::Add => {
                    // The sum and its activation in one pass, a run at a time (a softmax, which
                    // needs whole rows, after).
                    let (run_act, after) = activation::by_value(act);
                    elementwise(out, team, &|o, r| {
                        o.copy_from_slice(&inputs[0][r.clone()]);
                        for other in &inputs[1..] {
                            kernels::axpy(1.0, &other[r.clone()], o);
                        }
                        activation::forward(run_act, o, m);
                    });
                    activation::forward(after, out, m);
                }
                Node::Concat => {
                    let mut at = 0;
                    for part in &inputs {
                        out[at..at + part.len()].copy_from_slice(part);
                        at += part.len();
                    }
                }
                Node::Global => {
                    let c = layer.input.c;
                    gap::global_forward(c, batch, n / c, input, out);
                    activate(act, out, m, team);
                }
                Node::Adaptive(ad) => {
                    ad.forward(layer.input.c * batch, input, out, team);
                    activate(act, out, m, team);
                }
                Node::Dropout(p) if training => {
                    let (c, q) = (layer.input.c, layer.input.h * layer.input.w);
                    let mask = &mut g.masks[l][..batch * m];
                    draw_mask(mask, *p, *seed, step, l, batch, g.layouts[l], c, q);
                    out.iter_mut().zip(input).zip(mask.iter()).for_each(|((o, &v), &k)| *o = v * k);
                }
                Node::Dropout(_) => out.copy_from_slice(input),
                Node::ZeroPad(stride) => zeropad_forward(spec, l, *stride, batch, input, out, team),
            }
            lap(&mut t, timers.as_mut().map(|x| &mut x.forward[l]));
        }
        if let Some(turn) = last_turn(spec, &g.layouts) {
            let m = spec.outputs();
            turn.forward(&acts[acts.len() - 1][..batch * m], &mut g.out_rows[..batch * m], batch);
        }
    }

    /// Forward (training mode), loss and backward over the graph: fills the gradient arena.
    pub(crate) fn graph_gradients(
        &mut self,
        x: &[f32],
        labels: &[u8],
        batch: usize,
        over: usize,
        mut sync: Option<super::RankSum>,
    ) -> Score {
        self.graph_forward(x, batch, true, norm::reborrow(&mut sync));
        let lossfn = self.settings.loss;
        let last = self.spec.layers.len() - 1;
        let m_out = self.spec.outputs();
        let mut t = self.clock();
        let Engine { spec, slots, params, grads: arena, acts, col, team, timers, graph, .. } = self;
        let g = graph.as_mut().expect("the graph path");
        g.written.fill(false);
        let out_turn = last_turn(spec, &g.layouts);
        let score = match out_turn {
            None => loss::score_over(
                lossfn,
                &acts[last][..batch * m_out],
                labels,
                m_out,
                Some(&mut g.grads[last][..batch * m_out]),
                over,
            ),
            Some(turn) => {
                let s = loss::score_over(
                    lossfn,
                    &g.out_rows[..batch * m_out],
                    labels,
                    m_out,
                    Some(&mut g.tmp[0][..batch * m_out]),
                    over,
                );
                turn.forward(&g.tmp[0][..batch * m_out], &mut g.grads[last][..batch * m_out], batch);
                s
            }
        };
        g.written[last] = true;
        lap(&mut t, timers.as_mut().map(|x| &mut x.loss));
        for (l, layer) in spec.layers.iter().enumerate().rev() {
            let s = slots[l];
            let (n, m) = (layer.inputs, layer.outputs);
            // This convolution's δ, laid out by the norm after it; this norm's source's, laid out here.
            let synced = sync.is_some();
            let (arrives_laid, lays_source) = (g.laid(l, synced), l.checked_sub(1).and_then(|j| g.laid(j, synced)));
            let (lower, upper) = g.grads.split_at_mut(l);
            let own_len = upper[0].len();
            let delta = &mut upper[0][..batch * m];
            if !g.written[l] {
                // Nothing reads this layer's output: its gradient is zero.
                delta.fill(0.0);
            }
            let from_ce = l == last && lossfn == Loss::Ce && layer.activation == Activation::Softmax;
            // A batch norm applies its activation's derivative channel by channel (norm::applies).
            let in_norm = matches!(g.nodes[l], Node::BatchNorm) && norm::applies(layer.activation);
            if !from_ce && !in_norm && layer.kind.takes_activation() {
                let ((each, rows), a) = (activation::by_value(layer.activation), &acts[l][..batch * m]);
                activation::backward(rows, a, delta, m);
                if each != Activation::Identity {
                    elementwise(delta, team, &|d, r| activation::backward(each, &a[r], d, m));
                }
            }
            let sources = &spec.sources[l];
            // (No backward pass reads a sum's inputs, which may be a norm that keeps no output.)
            let input = Inputs { spec, turns: &g.turns, moved: &g.moved, kept: &g.kept, x, batch }.of(acts, l, 0);
            let w = &params[s.weight..s.bias];
            let (dw, db) = arena[s.weight..s.end].split_at_mut(s.bias - s.weight);
            // The single source's index and edge, when it is a layer (not the data).
            let target = match sources[0] {
                Source::Node(j) if sources.len() == 1 => Some((j, g.turns[l][0])),
                _ => None,
            };
            let [tmp0, tmp1] = &mut g.tmp;
            // A convolution adds its input gradient to the one its source has where its backward
            // pass can (`Tiles::adds_dx`).
            let adds = match (&g.nodes[l], target) {
                (Node::Conv(sh), Some((j, None))) => g.written[j] && conv::Tiles::for_shape(sh).adds_dx(sh),
                _ => false,
            };
            // The buffer the single source's gradient goes to, [B][N].
            let dx: Option<&mut [f32]> = match target {
                Some((j, turn)) if adds || direct(&g.written, turn, j) => Some(&mut lower[j][..batch * n]),
                Some(_) => Some(&mut tmp0[..batch * n]),
                None => None,
            };
            match &g.nodes[l] {
                Node::Dense => {
                    matmul(View::transposed(delta, batch, m), View::rows(input, batch, n), dw, team);
                    db.copy_from_slice(&delta[..m]);
                    for row in delta[m..].chunks_exact(m) {
                        db.iter_mut().zip(row).for_each(|(d, &v)| *d += v);
                    }
                    if let Some(dx) = dx {
                        matmul(View::rows(delta, batch, m), View::rows(w, m, n), dx, team);
                    }
                }
                Node::Conv(sh) => {
                    let dx = if adds { conv::Dx::Add(dx.expect("a source's gradient")) } else { dx.into() };
                    if arrives_laid.is_some() {
                        conv::conv_backward_laid(sh, batch, input, w, dw, col, dx, team)
                    } else {
                        conv::conv_backward(sh, batch, input, w, delta, dw, db, col, dx, team)
                    }
                }
                Node::MaxPool(sh) => {
                    if let Some(dx) = dx {
                        pool::max_backward(sh, batch, delta, &g.args[l], dx, team);
                    }
                }
                Node::AvgPool(sh) => {
                    if let Some(dx) = dx {
                        pool::avg_backward(sh, batch, delta, dx, team);
                    }
                }
                Node::PadMax(pp) => {
                    if let Some(dx) = dx {
                        pp.backward(layer.input.c * batch, delta, &g.args[l], dx, team);
                    }
                }
                Node::BatchNorm => {
                    let q = batch * (n / layer.input.c);
                    let act = if from_ce { Activation::Identity } else { layer.activation };
                    // Without an activation (a norm a sum normalizes keeps no output) none is read.
                    let a = acts[l].get(..batch * m).unwrap_or(&[]);
                    // δ of the convolution before, laid out in its scratch (laid_deltas).
                    let dx = match lays_source {
                        Some(rows) => Some(&mut col[rows.at..rows.at + rows.len]),
                        None => dx,
                    };
                    norm::backward(
                        w,
                        &g.saved[l],
                        q,
                        input,
                        (act, a),
                        delta,
                        dw,
                        db,
                        dx,
                        lays_source,
                        team,
                        norm::reborrow(&mut sync),
                    );
                }
                Node::Global => {
                    if let Some(dx) = dx {
                        let c = layer.input.c;
                        gap::global_backward(c, batch, n / c, delta, dx, team);
                    }
                }
                Node::Adaptive(ad) => {
                    if let Some(dx) = dx {
                        ad.backward(layer.input.c * batch, delta, dx, team);
                    }
                }
                Node::Dropout(_) => {
                    if let Some(dx) = dx {
                        dx.iter_mut().zip(delta.iter()).zip(&g.masks[l]).for_each(|((d, &v), &k)| *d = v * k);
                    }
                }
                Node::ZeroPad(stride) => {
                    if let Some(dx) = dx {
                        zeropad_backward(spec, l, *stride, batch, delta, dx, team);
                    }
                }
                Node::Add => {
                    // Every source receives δ itself; one takes the buffer (sum_takers):
                    // swapped, not copied (this layer's δ is not read again).
                    let takes = g.takers[l];
                    if let Some(Source::Node(j)) = takes.map(|k| sources[k]) {
                        assert!(
                            direct(&g.written, None, j) && lower[j].len() == own_len,
                            "layer {l}: the sum's δ buffer would replace a gradient source {j} already has"
                        );
                    }
                    for (k, src) in sources.iter().enumerate() {
                        if let (Source::Node(j), false) = (*src, takes == Some(k)) {
                            give(lower, &mut g.written, tmp1, j, g.turns[l][k], delta, batch, team);
                        }
                    }
                    if let Some(Source::Node(j)) = takes.map(|k| sources[k]) {
                        std::mem::swap(&mut lower[j], &mut upper[0]);
                        g.written[j] = true;
                    }
                }
                Node::Concat => {
                    let mut at = 0;
                    for (k, src) in sources.iter().enumerate() {
                        let len = batch * spec.shape_of(*src).size();
                        if let Source::Node(j) = *src {
                            give(lower, &mut g.written, tmp1, j, g.turns[l][k], &delta[at..at + len], batch, team);
                        }
                        at += len;
                    }
                }
            }
            // A single source's gradient computed aside reaches it now.
            if let (Some((j, turn)), false) = (target, matches!(g.nodes[l], Node::Add | Node::Concat)) {
                if direct(&g.written, turn, j) {
                    g.written[j] = true;
                } else if !adds {
                    give(lower, &mut g.written, tmp1, j, turn, &tmp0[..batch * n], batch, team);
                }
            }
            lap(&mut t, timers.as_mut().map(|x| &mut x.backward[l]));
        }
        score
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Defaults, parse};

    /// A batch norm lays out the δ of the convolution right before it where it alone reads a
    /// convolution without bias or activation; not after one with a bias, one with a relu, or
    /// one two layers read. (On AVX-512 only: elsewhere no convolution shares one padded δ.)
    #[test]
    fn a_norm_lays_out_the_delta_of_the_convolution_it_alone_reads() {
        let text = "16x16x16-conv3x3x16p1b0-bn:relu-conv3x3x16p1-bn:relu-conv3x3x16p1b0:relu-bn\
                    -[conv3x3x16p1b0-bn|]:relu-conv3x3x16p1b0-[bn|bn]-gap-4";
        let spec = parse(text, Defaults::default()).unwrap();
        let lays: Vec<Option<usize>> =
            laid_deltas(&spec, &turns(&spec, &layouts(&spec)), 8).iter().map(|l| l.map(|(j, _)| j)).collect();
        let on = crate::engine::simd::has_avx512();
        let mut want = vec![None; spec.layers.len()];
        if on {
            // The first norm (layer 1) and the sum branch's (layer 7); none of the sum [bn|bn].
            want[1] = Some(0);
            want[7] = Some(6);
        }
        assert_eq!(lays, want, "{text}");
    }
}
