//! Proof that the ledger tells the truth: run the reference engine on the counting scalar and
//! compare what it executed with what the ledger predicts, row by row and field by field.

use crate::cost::{self, Phases, Step};
use crate::init;
use crate::ops::Ops;
use crate::reference::{Counted, Hyper, Network, OptimizerState, Phase, counting};
use crate::spec::{Loss, Spec, UpdateRule};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;

/// One ledger row: the analytic count beside the measured one.
#[derive(Clone, Debug)]
pub struct Row {
    pub name: String,
    pub analytic: Ops,
    pub measured: Ops,
}

impl Row {
    pub fn matches(&self) -> bool {
        self.analytic == self.measured
    }
}

#[derive(Clone, Debug)]
pub struct Verification {
    /// What was run, in words.
    pub what: String,
    pub rows: Vec<Row>,
}

impl Verification {
    pub fn all_match(&self) -> bool {
        self.rows.iter().all(Row::matches)
    }

    pub fn mismatches(&self) -> impl Iterator<Item = &Row> {
        self.rows.iter().filter(|r| !r.matches())
    }
}

/// Random inputs in [0, 1) and random labels: counts do not depend on the values.
fn random_batch(spec: &Spec, batch: usize, rng: &mut ChaCha8Rng) -> (Vec<Counted>, Vec<usize>) {
    let x = (0..batch * spec.input).map(|_| Counted(rng.r#gen::<f64>())).collect();
    let labels = (0..batch).map(|_| rng.gen_range(0..spec.outputs())).collect();
    (x, labels)
}

fn phases(measured: &BTreeMap<Phase, Ops>) -> Phases {
    let mut by = [Ops::ZERO; 4];
    for (phase, ops) in measured {
        let k = match phase {
            Phase::Forward(_) => 0,
            Phase::GradSum(_) | Phase::Delta(_) | Phase::WeightGrad(_) | Phase::BiasGrad(_) | Phase::InputGrad(_) => 1,
            Phase::Loss => 2,
            Phase::OptimizerStep | Phase::Update(_) => 3,
            Phase::Outside => continue,
        };
        by[k] += *ops;
    }
    Phases::new(by[0], by[1], by[2], by[3])
}

fn phase_rows(prefix: &str, analytic: &Phases, measured: &Phases) -> Vec<Row> {
    let pairs = [
        ("forward", analytic.forward, measured.forward),
        ("backward", analytic.backward, measured.backward),
        ("loss", analytic.loss, measured.loss),
        ("update", analytic.update, measured.update),
        ("total", analytic.total, measured.total),
    ];
    pairs.into_iter().map(|(n, a, m)| Row { name: format!("{prefix}{n}"), analytic: a, measured: m }).collect()
}

/// Runs `batches` training steps of the given sizes on the counting scalar.
/// With a coupled weight decay λ is 5e-4 (the counts do not depend on its value).
fn run_counted(spec: &Spec, loss: Loss, rule: UpdateRule, batches: &[usize], seed: u64) -> BTreeMap<Phase, Ops> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut net: Network<Counted> = Network::new(spec, &init::init(spec, seed));
    let mut hyper = Hyper::defaults(rule.optimizer);
    if rule.coupled_decay {
        hyper.weight_decay = 5e-4;
    }
    let mut state = OptimizerState::new(rule.optimizer, hyper, &net.tensor_sizes());
    let data: Vec<_> = batches.iter().map(|&b| random_batch(spec, b, &mut rng)).collect();
    let ((), measured) = counting::record(|| {
        for (x, labels) in &data {
            net.train_step(&mut state, x, labels, loss);
        }
    });
    measured
}

/// One training step of `batch` examples: every layer's rows, the loss, the optimizer, totals.
/// `opt`: an [`crate::spec::Optimizer`] or an [`UpdateRule`] (with weight decay).
pub fn step(spec: &Spec, loss: Loss, opt: impl Into<UpdateRule>, batch: usize, seed: u64) -> Verification {
    let opt = opt.into();
    let analytic = Step::new(spec, loss, opt, batch as u128);
    let measured = run_counted(spec, loss, opt, &[batch], seed);
    let got = |p: Phase| measured.get(&p).copied().unwrap_or_default();
    let mut rows = Vec::new();
    for (l, c) in analytic.layers.iter().enumerate() {
        let n = l + 1;
        let mut row = |name: &str, a: Ops, p: Phase| {
            rows.push(Row { name: format!("layer {n} {name}"), analytic: a, measured: got(p) })
        };
        row("forward", c.forward, Phase::Forward(l));
        row("grad_sum", c.backward.grad_sum, Phase::GradSum(l));
        row("delta", c.backward.delta, Phase::Delta(l));
        row("weight_grad", c.backward.weight_grad, Phase::WeightGrad(l));
        row("bias_grad", c.backward.bias_grad, Phase::BiasGrad(l));
        row("input_grad", c.backward.input_grad, Phase::InputGrad(l));
        row("update", c.update, Phase::Update(l));
    }
    rows.push(Row { name: "loss".into(), analytic: analytic.loss, measured: got(Phase::Loss) });
    rows.push(Row {
        name: "optimizer step".into(),
        analytic: analytic.optimizer_step,
        measured: got(Phase::OptimizerStep),
    });
    rows.push(Row { name: "outside any phase".into(), analytic: Ops::ZERO, measured: got(Phase::Outside) });
    rows.extend(phase_rows("step ", &analytic.phases(), &phases(&measured)));
    Verification { what: format!("one training step of {spec}, batch {batch}, loss {loss}, optimizer {opt}"), rows }
}

/// A whole epoch of `examples` in batches of `batch` (the last one ragged), phase by phase.
pub fn epoch(
    spec: &Spec,
    loss: Loss,
    opt: impl Into<UpdateRule>,
    batch: usize,
    examples: usize,
    seed: u64,
) -> Verification {
    let opt = opt.into();
    let mut sizes = vec![batch; examples / batch];
    if !examples.is_multiple_of(batch) {
        sizes.push(examples % batch);
    }
    let measured = run_counted(spec, loss, opt, &sizes, seed);
    let analytic = cost::epoch(spec, loss, opt, batch, examples);
    Verification {
        what: format!("one epoch of {examples} examples of {spec}, batch {batch}, loss {loss}, optimizer {opt}"),
        rows: phase_rows("epoch ", &analytic, &phases(&measured)),
    }
}
