//! Training over a data set: epochs of shuffled batches on the fast engine, a validation pass
//! after each, and the counted FLOPs divided by the time it took.
//!
//! The library prints nothing; a [`Watcher`] hears about progress (the CLI draws bars from it).

mod metrics;

pub use metrics::MetricsWriter;

use crate::cost;
use crate::data::{Dataset, shuffled_indices};
use crate::engine::{Engine, Score};
use crate::error::{Error, Result};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::time::Instant;

#[derive(Clone, Copy, Debug)]
pub struct Plan {
    pub epochs: usize,
    pub batch: usize,
    pub seed: u64,
    /// Reshuffle the training examples every epoch (seeded); false keeps file order.
    pub shuffle: bool,
    pub schedule: Schedule,
    /// The time model's seconds for one epoch, reported beside the measured ones.
    pub predicted_epoch_seconds: Option<f64>,
}

/// How the learning rate moves over the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Schedule {
    /// The same rate every epoch.
    Constant,
    /// Epoch e of E uses lr · (1 + cos(π (e-1) / E)) / 2: full rate first, nearly zero last.
    Cosine,
}

impl Schedule {
    /// The rate for `epoch` (from 1) of `epochs`, given the base rate.
    pub fn rate(self, base: f64, epoch: usize, epochs: usize) -> f64 {
        match self {
            Schedule::Constant => base,
            Schedule::Cosine => {
                base * 0.5 * (1.0 + (std::f64::consts::PI * (epoch - 1) as f64 / epochs.max(1) as f64).cos())
            }
        }
    }
}

/// One epoch's results.
#[derive(Clone, Debug, Serialize)]
pub struct EpochReport {
    pub epoch: usize,
    pub train_loss: f64,
    pub train_acc: f64,
    pub val_loss: Option<f64>,
    pub val_acc: Option<f64>,
    pub seconds: f64,
    /// The ledger's FLOPs for this epoch divided by its training time.
    pub gflops: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub predicted_seconds: Option<f64>,
}

/// Loss and accuracy of a whole data set.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Evaluation {
    pub loss: f64,
    pub acc: f64,
    pub examples: usize,
}

/// Hears what training is doing.
pub trait Watcher {
    fn epoch_started(&mut self, _epoch: usize, _batches: usize) {}
    /// After each batch: how many done, and the running mean loss of the epoch.
    fn batch_done(&mut self, _done: usize, _running_loss: f64) {}
    fn epoch_done(&mut self, _report: &EpochReport) -> Result<()> {
        Ok(())
    }
}

/// A watcher that ignores everything.
pub struct Quiet;
impl Watcher for Quiet {}

/// Checks that a data set fits the network: same input width, labels within its outputs.
pub fn check_fit(engine: &Engine, data: &Dataset) -> Result<()> {
    let spec = engine.spec();
    let f = data.feature_len();
    if f != spec.input {
        let [c, h, w] = data.shape;
        let shape = if c == 1 && h == 1 { format!("{w} values") } else { format!("{c}×{h}×{w}") };
        let rest: Vec<String> = spec.layers.iter().map(|l| format!("{}:{}", l.outputs, l.activation)).collect();
        return Err(Error::Shape {
            op: "data",
            detail: format!(
                "the examples have {shape} = {f} features but the network's input is {}; use a spec that starts with {f}, e.g. {f}-{}",
                spec.input,
                rest.join("-")
            ),
        });
    }
    if data.classes > spec.outputs() {
        return Err(Error::Shape {
            op: "data",
            detail: format!(
                "the data has {} classes but the network has {} outputs; make the last layer {} wide",
                data.classes,
                spec.outputs(),
                data.classes
            ),
        });
    }
    Ok(())
}

/// Loss and accuracy over a data set, in batches of the engine's size.
pub fn evaluate(engine: &mut Engine, data: &Dataset) -> Result<Evaluation> {
    let b = engine.settings().max_batch;
    let f = data.feature_len();
    let mut total = Score::default();
    for start in (0..data.len()).step_by(b) {
        let end = (start + b).min(data.len());
        total += engine.evaluate(&data.features[start * f..end * f], &data.labels[start..end])?;
    }
    let n = data.len().max(1) as f64;
    Ok(Evaluation { loss: total.loss_sum / n, acc: total.correct as f64 / n, examples: data.len() })
}

/// Trains for `plan.epochs` epochs on `train`, scoring `val` after each.
pub fn train(
    engine: &mut Engine,
    train: &Dataset,
    val: Option<&Dataset>,
    plan: &Plan,
    watcher: &mut dyn Watcher,
) -> Result<Vec<EpochReport>> {
    check_fit(engine, train)?;
    if let Some(v) = val {
        check_fit(engine, v)?;
    }
    if train.is_empty() {
        return Err(Error::Usage("the training set is empty; nothing to train on".into()));
    }
    let s = *engine.settings();
    let spec = engine.spec().clone();
    let epoch_flop = cost::epoch(&spec, s.loss, s.optimizer, plan.batch, train.len()).total.flop() as f64;
    let f = train.feature_len();
    let mut rng = ChaCha8Rng::seed_from_u64(plan.seed);
    let mut xb = vec![0.0f32; plan.batch * f];
    let mut yb = vec![0u8; plan.batch];
    let mut order: Vec<usize> = (0..train.len()).collect();
    let batches = train.len().div_ceil(plan.batch);
    let mut reports = Vec::with_capacity(plan.epochs);
    let mut step = 0usize;
    let base_lr = s.hyper.lr;
    for epoch in 1..=plan.epochs {
        engine.set_learning_rate(plan.schedule.rate(base_lr, epoch, plan.epochs));
        if plan.shuffle {
            order = shuffled_indices(train.len(), &mut rng);
        }
        watcher.epoch_started(epoch, batches);
        let start = Instant::now();
        let mut score = Score::default();
        for (k, idx) in order.chunks(plan.batch).enumerate() {
            let b = idx.len();
            for (r, &i) in idx.iter().enumerate() {
                xb[r * f..(r + 1) * f].copy_from_slice(train.example(i));
                yb[r] = train.labels[i];
            }
            let s = engine.train_step(&xb[..b * f], &yb[..b])?;
            step += 1;
            if !s.loss_sum.is_finite() {
                return Err(Error::Diverged(format!(
                    "the loss became {} at step {step} (epoch {epoch}, batch {}); the learning rate is probably too high — try one ten times smaller",
                    s.loss_sum,
                    k + 1
                )));
            }
            score += s;
            watcher.batch_done(k + 1, score.loss_sum / ((k * plan.batch + b) as f64));
        }
        let seconds = start.elapsed().as_secs_f64();
        let n = train.len() as f64;
        let val_eval = match val {
            Some(v) if !v.is_empty() => Some(evaluate(engine, v)?),
            _ => None,
        };
        let report = EpochReport {
            epoch,
            train_loss: score.loss_sum / n,
            train_acc: score.correct as f64 / n,
            val_loss: val_eval.map(|e| e.loss),
            val_acc: val_eval.map(|e| e.acc),
            seconds,
            gflops: epoch_flop / seconds / 1e9,
            predicted_seconds: plan.predicted_epoch_seconds,
        };
        watcher.epoch_done(&report)?;
        reports.push(report);
    }
    Ok(reports)
}

/// Per-class accuracy and the confusion matrix (rows: true class, columns: predicted).
#[derive(Clone, Debug, Serialize)]
pub struct Confusion {
    pub loss: f64,
    pub acc: f64,
    pub examples: usize,
    pub class_names: Vec<String>,
    pub per_class_acc: Vec<f64>,
    pub matrix: Vec<Vec<usize>>,
}

/// Scores every example of `data` and tallies predictions against labels.
pub fn confusion(engine: &mut Engine, data: &Dataset) -> Result<Confusion> {
    check_fit(engine, data)?;
    let overall = evaluate(engine, data)?;
    let k = engine.spec().outputs();
    let mut matrix = vec![vec![0usize; k]; k];
    let b = engine.settings().max_batch;
    let f = data.feature_len();
    for start in (0..data.len()).step_by(b) {
        let end = (start + b).min(data.len());
        let out = engine.forward(&data.features[start * f..end * f])?;
        for (row, &y) in out.chunks_exact(k).zip(&data.labels[start..end]) {
            let pred = row.iter().enumerate().fold(0, |best, (j, &v)| if v > row[best] { j } else { best });
            matrix[y as usize][pred] += 1;
        }
    }
    let per_class_acc =
        matrix.iter().enumerate().map(|(c, r)| r[c] as f64 / r.iter().sum::<usize>().max(1) as f64).collect();
    let mut class_names = data.class_names.clone();
    class_names.resize_with(k, String::new);
    for (i, n) in class_names.iter_mut().enumerate() {
        if n.is_empty() {
            *n = i.to_string();
        }
    }
    Ok(Confusion {
        loss: overall.loss,
        acc: overall.acc,
        examples: overall.examples,
        class_names,
        per_class_acc,
        matrix,
    })
}
