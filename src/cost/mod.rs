//! The analytic ledger: what a network costs, computed from its spec alone.
//!
//! Nothing here runs a network; every figure is a closed-form count per the counting contract.
//! The reference engine executes the same arithmetic on a counting scalar, and `verify` checks
//! that the two agree field by field.

mod activation;
mod conv;
mod dense;
mod loss;
pub(crate) mod memory;
mod optim;
mod pool;

pub use dense::Backward;
pub use memory::Memory;

use crate::layers::{batchnorm, dropout, globalpool, join};
use crate::ops::Ops;
use crate::spec::{Activation, Kind, Layer, Loss, Optimizer, Shape, Spec, UpdateRule};
use serde::Serialize;

/// What a training run is: how the step is computed and how often.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    pub loss: Loss,
    pub optimizer: Optimizer,
    pub batch: usize,
    /// Examples in one epoch.
    pub examples: usize,
    pub epochs: usize,
}

/// One layer's costs for one batch.
#[derive(Clone, Debug, Serialize)]
pub struct LayerCost {
    /// Its name in the graph (its position from 1 unless a file or the zoo named it).
    pub name: String,
    /// What it reads: `input` or other layers' names.
    pub reads: Vec<String>,
    /// "dense", "conv2d", "maxpool", "avgpool", "batchnorm", "add", "concat", "global_avgpool",
    /// "adaptive_avgpool", "dropout" or "zeropad".
    pub kind: &'static str,
    /// Values per example in and out (the shapes' sizes).
    pub inputs: usize,
    pub outputs: usize,
    pub input_shape: Shape,
    pub output_shape: Shape,
    pub activation: Activation,
    pub params: u128,
    pub forward: Ops,
    pub backward: Backward,
    pub update: Ops,
    /// The layer itself, for labels (a zoo name or a file does not read back into layers).
    #[serde(skip)]
    pub layer: Layer,
}

/// One training step (forward, loss, backward, update) over a batch of `batch` examples.
#[derive(Clone, Debug, Serialize)]
pub struct Step {
    pub batch: u128,
    pub layers: Vec<LayerCost>,
    pub loss: Ops,
    /// The optimizer's once-per-step scalars (Adam's bias corrections), outside any layer.
    pub optimizer_step: Ops,
}

/// Totals by phase.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Phases {
    pub forward: Ops,
    pub backward: Ops,
    pub loss: Ops,
    pub update: Ops,
    pub total: Ops,
}

impl Phases {
    pub fn new(forward: Ops, backward: Ops, loss: Ops, update: Ops) -> Phases {
        Phases { forward, backward, loss, update, total: forward + backward + loss + update }
    }

    fn times(self, n: u128) -> Phases {
        Phases::new(self.forward * n, self.backward * n, self.loss * n, self.update * n)
    }

    fn plus(self, o: Phases) -> Phases {
        Phases::new(self.forward + o.forward, self.backward + o.backward, self.loss + o.loss, self.update + o.update)
    }
}

impl Step {
    /// `optimizer`: an [`Optimizer`] (no weight decay) or an [`UpdateRule`].
    pub fn new(spec: &Spec, loss: Loss, optimizer: impl Into<UpdateRule>, batch: u128) -> Step {
        let optimizer = optimizer.into();
        let last = spec.layers.len() - 1;
        let layers = spec
            .layers
            .iter()
            .enumerate()
            .map(|(i, l)| LayerCost {
                name: spec.names[i].clone(),
                reads: spec.sources[i].iter().map(|s| spec.source_name(*s).to_string()).collect(),
                kind: l.kind.name(),
                inputs: l.inputs,
                outputs: l.outputs,
                input_shape: l.input,
                output_shape: l.output,
                activation: l.activation,
                params: l.params(),
                forward: layer_forward(l, batch),
                backward: layer_backward(l, batch, spec.reads_data(i), (i == last).then_some(loss), spec.consumers(i)),
                update: optim::per_params(optimizer, l.params()),
                layer: *l,
            })
            .collect();
        Step {
            batch,
            layers,
            loss: loss::cost(loss, batch, spec.outputs() as u128),
            optimizer_step: optim::per_step(optimizer),
        }
    }

    pub fn phases(&self) -> Phases {
        Phases::new(
            self.layers.iter().map(|l| l.forward).sum(),
            self.layers.iter().map(|l| l.backward.total).sum(),
            self.loss,
            self.layers.iter().map(|l| l.update).sum::<Ops>() + self.optimizer_step,
        )
    }
}

/// The activation a kind applies after its arithmetic, when it takes one.
fn activation_forward(l: &Layer, b: u128) -> Ops {
    if l.kind.takes_activation() { activation::forward(l.activation, b, l.outputs as u128) } else { Ops::ZERO }
}

/// One layer's forward pass over a batch of `b` in training.
fn layer_forward(l: &Layer, b: u128) -> Ops {
    let values = l.outputs as u128;
    match l.kind {
        Kind::Dense => dense::forward(l, b),
        Kind::Conv2d(_) => conv::forward(l, b),
        Kind::MaxPool(_) | Kind::AvgPool(_) => pool::forward(l, b),
        Kind::BatchNorm => batchnorm::forward_cost(l, b) + activation_forward(l, b),
        Kind::Add(k) => join::add_cost(l, k, b) + activation_forward(l, b),
        Kind::GlobalAvgPool | Kind::AdaptiveAvgPool(..) => globalpool::forward_cost(l, b) + activation_forward(l, b),
        Kind::Dropout(_) => dropout::forward_cost(values, b),
        Kind::Concat | Kind::ZeroPad { .. } => Ops::ZERO,
    }
}

/// One layer's forward pass at evaluation: batch normalization with its running statistics,
/// dropout passing values through.
fn layer_inference(l: &Layer, b: u128) -> Ops {
    match l.kind {
        Kind::BatchNorm => batchnorm::inference_cost(l, b) + activation_forward(l, b),
        Kind::Dropout(_) => Ops::ZERO,
        _ => layer_forward(l, b),
    }
}

/// One layer's backward pass over a batch of `b`: `first`, it reads only the data (no dX);
/// `output_under`, the loss when it is the output layer; `readers`, how many layers read its
/// output (their gradients are summed first).
fn layer_backward(l: &Layer, b: u128, first: bool, output_under: Option<Loss>, readers: usize) -> Backward {
    let values = l.outputs as u128;
    let from_ce = output_under == Some(Loss::Ce) && l.activation == Activation::Softmax;
    let delta = || activation::backward(l.activation, b, values, from_ce);
    let input_only =
        |input_grad: Ops| Backward { input_grad: if first { Ops::ZERO } else { input_grad }, ..Backward::default() };
    let own = match l.kind {
        Kind::Dense => dense::backward(l, b, first, output_under),
        Kind::Conv2d(_) => conv::backward(l, b, first),
        Kind::MaxPool(_) | Kind::AvgPool(_) => pool::backward(l, b, first),
        Kind::BatchNorm => Backward { delta: delta(), ..batchnorm::backward_cost(l, b, first) },
        Kind::Add(_) => Backward { delta: delta(), ..Backward::default() },
        Kind::GlobalAvgPool | Kind::AdaptiveAvgPool(..) => Backward {
            delta: if l.kind.takes_activation() { delta() } else { Ops::ZERO },
            ..input_only(globalpool::input_grad_cost(l, b))
        },
        Kind::Dropout(_) => input_only(dropout::input_grad_cost(values, b)),
        Kind::Concat | Kind::ZeroPad { .. } => Backward::default(),
    };
    Backward { grad_sum: join::grad_sum_cost(values, readers, b), ..own }.totalled()
}

/// Forward passes only (inference), over a batch of `batch`.
pub fn inference(spec: &Spec, batch: u128) -> Ops {
    spec.layers.iter().map(|l| layer_inference(l, batch)).sum()
}

/// One epoch of `examples` in batches of `batch`: the last, ragged batch at its own size.
pub fn epoch(spec: &Spec, loss: Loss, optimizer: impl Into<UpdateRule>, batch: usize, examples: usize) -> Phases {
    let optimizer = optimizer.into();
    let (b, e) = (batch as u128, examples as u128);
    let full = Step::new(spec, loss, optimizer, b).phases().times(e / b);
    match e % b {
        0 => full,
        rest => full.plus(Step::new(spec, loss, optimizer, rest).phases()),
    }
}

/// The whole account of a training run.
#[derive(Clone, Debug, Serialize)]
pub struct Ledger {
    pub spec: String,
    pub loss: Loss,
    pub optimizer: Optimizer,
    /// The weight decay λ (`--weight-decay`; 0: none).
    pub weight_decay: f64,
    pub batch: usize,
    pub examples: usize,
    pub epochs: usize,
    pub params: u128,
    /// Each layer's costs for one batch of `batch`.
    pub layers: Vec<LayerCost>,
    pub optimizer_step: Ops,
    pub per_example: Phases,
    pub per_batch: Phases,
    pub per_epoch: Phases,
    pub training: Phases,
    pub memory: Memory,
}

impl Ledger {
    /// [`Ledger::new`], or an error when a count would pass what a u128 holds (2^128, about
    /// 3.4·10^38): exact at any size it reports, never a wrapped number.
    pub fn try_new(spec: &Spec, cfg: &Config) -> crate::Result<Ledger> {
        Ledger::try_decayed(spec, cfg, 0.0)
    }

    /// [`Ledger::try_new`] of a run with weight decay `lambda`: with SGD, momentum or Adam and
    /// λ > 0 every step adds λ·w to each gradient (coupled, as PyTorch's `weight_decay`); AdamW
    /// scales the weights by 1 − lr·λ whatever λ is.
    pub fn try_decayed(spec: &Spec, cfg: &Config, lambda: f64) -> crate::Result<Ledger> {
        let rule = UpdateRule::new(cfg.optimizer, lambda);
        // Every field of a step of B examples is at most B times that of a step of one (each
        // term is c·B, c·(B−1) or a constant), and an epoch at most ⌈E/B⌉ steps of B.
        let one = Step::new(spec, cfg.loss, rule, 1).phases().total;
        let bound = one
            .fields()
            .iter()
            .try_fold(0u128, |s, (_, v)| s.checked_add(*v))
            .and_then(|s| s.checked_mul(cfg.batch.max(1) as u128))
            .and_then(|s| s.checked_mul(cfg.examples.div_ceil(cfg.batch.max(1)).max(1) as u128))
            .and_then(|s| s.checked_mul(cfg.epochs.max(1) as u128))
            .and_then(|s| s.checked_mul(2));
        if bound.is_none() {
            return Err(crate::Error::Usage(format!(
                "counting {} epochs of {} examples of {spec} would pass 2^128 (about 3.4e38) operations, more than flopnet counts exactly; use fewer --epochs or --examples",
                cfg.epochs, cfg.examples
            )));
        }
        Ok(Ledger::decayed(spec, cfg, lambda))
    }

    /// The ledger of a run whose counts fit in u128 (see [`Ledger::try_new`]).
    pub fn new(spec: &Spec, cfg: &Config) -> Ledger {
        Ledger::decayed(spec, cfg, 0.0)
    }

    /// [`Ledger::new`] with weight decay `lambda` (see [`Ledger::try_decayed`]).
    pub fn decayed(spec: &Spec, cfg: &Config, lambda: f64) -> Ledger {
        let rule = UpdateRule::new(cfg.optimizer, lambda);
        let step = Step::new(spec, cfg.loss, rule, cfg.batch as u128);
        let per_epoch = epoch(spec, cfg.loss, rule, cfg.batch, cfg.examples);
        Ledger {
            spec: spec.to_string(),
            loss: cfg.loss,
            optimizer: cfg.optimizer,
            weight_decay: lambda,
            batch: cfg.batch,
            examples: cfg.examples,
            epochs: cfg.epochs,
            params: spec.params(),
            per_example: Step::new(spec, cfg.loss, rule, 1).phases(),
            per_batch: step.phases(),
            per_epoch,
            training: per_epoch.times(cfg.epochs as u128),
            memory: memory::memory(spec, cfg.optimizer, cfg.batch as u128),
            optimizer_step: step.optimizer_step,
            layers: step.layers,
        }
    }

    /// Batches in one epoch, the ragged one included.
    pub fn batches_per_epoch(&self) -> usize {
        self.examples.div_ceil(self.batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Defaults, parse};

    fn ledger(s: &str, act: Activation, b: usize) -> Ledger {
        let spec = parse(s, Defaults { hidden: act, output: Activation::Softmax }).unwrap();
        let cfg = Config { loss: Loss::Ce, optimizer: Optimizer::Sgd, batch: b, examples: 100, epochs: 3 };
        Ledger::new(&spec, &cfg)
    }

    #[test]
    fn seed_network_30_30_30() {
        let l = ledger("30-30-30", Activation::Sigmoid, 1);
        assert_eq!(l.params, 1860);
        assert_eq!(l.per_example.forward.mul, 1800);
        assert_eq!(l.per_example.forward.mac, 1800);
        let affine_backward_mul: u128 =
            l.layers.iter().map(|x| x.backward.weight_grad.mul + x.backward.input_grad.mul).sum();
        assert_eq!(affine_backward_mul, 2700);
        assert!(l.layers[0].backward.input_grad.is_zero());
    }

    #[test]
    fn contract_anchors() {
        let l = ledger("784-800-10", Activation::Relu, 1);
        assert_eq!(l.params, 636_010);
        assert_eq!(l.per_example.forward.mac, 635_200);
        let l = ledger("1024-30-30-10", Activation::Sigmoid, 1);
        assert_eq!(l.params, 31_990);
        assert_eq!(l.per_example.forward.mul, 31_920);
    }

    #[test]
    fn ragged_epoch_counts_last_batch_at_its_size() {
        // 100 examples in batches of 32: three of 32 and one of 4.
        let l = ledger("5-4-3", Activation::Tanh, 32);
        let spec = parse("5-4:tanh-3:softmax", Defaults::default()).unwrap();
        let b32 = Step::new(&spec, Loss::Ce, Optimizer::Sgd, 32).phases();
        let b4 = Step::new(&spec, Loss::Ce, Optimizer::Sgd, 4).phases();
        assert_eq!(l.per_epoch.total, b32.total * 3 + b4.total);
        assert_eq!(l.training.total, l.per_epoch.total * 3);
        // Summing gradients over a batch costs (B-1) additions per parameter that one example at a
        // time does not: an epoch is not E times one example.
        assert!(l.per_epoch.backward.add > l.per_example.backward.add * 100);
        assert_eq!(l.batches_per_epoch(), 4);
    }
}
