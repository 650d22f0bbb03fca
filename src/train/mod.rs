//! Training over a data set: epochs of shuffled batches on the fast engine, a validation pass
//! after each, and the counted FLOPs divided by the time it took.
//!
//! The library prints nothing; a [`Watcher`] hears about progress (the CLI draws bars from it).

mod metrics;

pub use metrics::MetricsWriter;

use crate::checkpoint::Position;
use crate::cost;
use crate::data::{Dataset, shuffled_indices};
use crate::engine::{Engine, Score};
use crate::error::{Error, Result};
use crate::spec::{Shape, Spec};
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
    /// The name `--schedule` takes.
    pub fn name(self) -> &'static str {
        match self {
            Schedule::Constant => "constant",
            Schedule::Cosine => "cosine",
        }
    }

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

impl Evaluation {
    /// The mean loss and accuracy of `total`, the summed scores of `examples` examples.
    fn of(total: Score, examples: usize) -> Evaluation {
        let n = examples.max(1) as f64;
        Evaluation { loss: total.loss_sum / n, acc: total.correct as f64 / n, examples }
    }
}

/// Hears what training is doing.
pub trait Watcher {
    fn epoch_started(&mut self, _epoch: usize, _batches: usize) {}
    /// After each batch: how many done, and the running mean loss of the epoch.
    fn batch_done(&mut self, _done: usize, _running_loss: f64) {}
    fn epoch_done(&mut self, _report: &EpochReport) -> Result<()> {
        Ok(())
    }
    /// Polled after every batch: `Some(signal)` stops training there, after a checkpoint.
    fn interrupted(&mut self) -> Option<i32> {
        None
    }
    /// A state worth saving: at each epoch's end and when interrupted, always after every weight
    /// was checked finite.
    fn checkpoint(&mut self, _engine: &Engine, _at: &Position) -> Result<()> {
        Ok(())
    }
}

/// A watcher that ignores everything.
pub struct Quiet;
impl Watcher for Quiet {}

/// Checks that a data set fits the network: same input width, labels within its outputs.
pub fn check_fit(engine: &Engine, data: &Dataset) -> Result<()> {
    check_data(engine.spec(), data)
}

/// Checks, before anything is built, that `data` is what `spec` reads: a dense net reads the
/// examples flattened (784 for 28×28 images), a net with an image input reads the images as they
/// are (1x28x28, 3x32x32), or rows of a CSV file whose width is C·H·W; and the labels must fit
/// its outputs. The error names the spec start that would fit.
pub fn check_data(spec: &Spec, data: &Dataset) -> Result<()> {
    let [c, h, w] = data.shape;
    let f = data.feature_len();
    let rows = c == 1 && h == 1;
    let held = Shape::new(c, h, w);
    let want = spec.input_shape;
    let image_net = want.is_image() || spec.is_convolutional();
    let fits = if image_net && !rows { want == held } else { want.size() == f };
    if !fits {
        let rest: Vec<String> = spec.layers.iter().map(|l| l.to_string()).collect();
        let rest = rest.join("-");
        // The same layers after the input the data holds, if they still make a network there.
        let example = |start: &str| {
            let text = format!("{start}-{rest}");
            crate::spec::parse(&text, crate::spec::Defaults::default()).map(|_| text).ok()
        };
        let detail = if !image_net {
            let shape = if rows { format!("{w} values") } else { format!("{c}×{h}×{w}") };
            format!(
                "the examples have {shape} = {f} features but the network's input is {}; use a spec that starts with {f}, e.g. {f}-{rest}",
                spec.input
            )
        } else if rows {
            let square = |n: usize| (1..=n).find(|s| s * s >= n).filter(|s| s * s == n);
            let guess = match (square(f), f.is_multiple_of(3)) {
                (Some(s), _) => format!(", e.g. 1x{s}x{s}"),
                (None, true) if square(f / 3).is_some() => {
                    let s = square(f / 3).unwrap_or(1);
                    format!(", e.g. 3x{s}x{s}")
                }
                _ => String::new(),
            };
            format!(
                "the data holds rows of {f} values but the network's input {want} holds {}; start the spec with an image CxHxW of {f} values{guess}, or with {f} for a dense network",
                want.size()
            )
        } else {
            let start = held.to_string();
            format!(
                "the data holds {start} images but the network's input is {want}; start the spec with {start}{}",
                example(&start).map_or(String::new(), |e| format!(", e.g. {e}"))
            )
        };
        return Err(Error::Shape { op: "data", detail });
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

/// The batch a run really takes from `examples` examples when asked for `batch`: the whole set
/// when it holds fewer, with a note saying so. Every figure (the ledger, the memory estimate and
/// guard, the engine's buffers, the checkpoint) is then of that batch, not of the one asked for.
pub fn effective_batch(batch: usize, examples: usize, what: &str) -> (usize, Option<String>) {
    if batch <= examples || examples == 0 {
        return (batch, None);
    }
    let n = |x: usize| crate::report::format::thousands(x as u128);
    let note = format!("--batch {} is more than the {} {what}; the batch is {}", n(batch), n(examples), n(examples));
    (examples, Some(note))
}

/// Loss and accuracy over a data set, in batches of the engine's size.
pub fn evaluate(engine: &mut Engine, data: &Dataset) -> Result<Evaluation> {
    let mut total = Score::default();
    each_output(engine, data, |_, _, s| total += s)?;
    Ok(Evaluation::of(total, data.len()))
}

/// Runs `data` forward in batches of the engine's size and hands each example's outputs, label
/// and score to `each`, in order. The scores are of one example each, so a sum of them is the
/// same whatever the batch size: `eval` (batch 256) adds up exactly the loss `train` reported.
fn each_output(engine: &mut Engine, data: &Dataset, mut each: impl FnMut(&[f32], u8, Score)) -> Result<()> {
    let b = engine.settings().max_batch;
    let loss = engine.settings().loss;
    let f = data.feature_len();
    let k = engine.spec().outputs();
    for start in (0..data.len()).step_by(b) {
        let end = (start + b).min(data.len());
        let out = engine.forward(&data.features[start * f..end * f])?;
        for (row, y) in out.chunks_exact(k).zip(&data.labels[start..end]) {
            each(row, *y, crate::engine::score(loss, row, std::slice::from_ref(y), k, None));
        }
    }
    Ok(())
}

/// Trains for `plan.epochs` epochs on `train`, scoring `val` after each.
pub fn train(
    engine: &mut Engine,
    train: &Dataset,
    val: Option<&Dataset>,
    plan: &Plan,
    watcher: &mut dyn Watcher,
) -> Result<Vec<EpochReport>> {
    train_from(engine, train, val, plan, &Position::default(), watcher)
}

/// The order of the training examples in epoch `epoch` (from 1): a permutation drawn from its own
/// ChaCha stream of `seed`, so any epoch's order can be made again without replaying the others.
pub fn epoch_order(n: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(epoch as u64);
    shuffled_indices(n, &mut rng)
}

/// Whether every value is finite; written so that it vectorises.
fn all_finite(v: &[f32]) -> bool {
    const EXP: u32 = 0x7f80_0000;
    v.chunks(64).all(|c| c.iter().fold(0u32, |bad, x| bad | u32::from(x.to_bits() & EXP == EXP)) == 0)
}

/// The first layer whose gradients or weights hold a NaN or an infinity, in words.
fn non_finite(engine: &Engine) -> Option<String> {
    let spec = engine.spec();
    let kind = |v: &[f32]| if v.iter().any(|x| x.is_nan()) { "NaN" } else { "an infinity" };
    for (l, layer) in spec.layers.iter().enumerate() {
        let (gw, gb) = engine.layer_grads(l);
        let (w, b) = engine.layer(l);
        let what = if layer.is_dense() { String::new() } else { format!("{layer}, ") };
        let name = format!("layer {} of {} ({what}{} → {})", l + 1, spec.layers.len(), layer.input, layer.output);
        for (what, a, c) in [("gradients", gw, gb), ("weights", w, b)] {
            if !(all_finite(a) && all_finite(c)) {
                let k = if all_finite(a) { kind(c) } else { kind(a) };
                return Some(format!("{name}: its {what} hold {k}"));
            }
        }
    }
    None
}

/// Steps between two scans of the weights for NaN and infinity (a NaN or infinite gradient makes
/// the weights it updates NaN or infinite, so they tell for both). A scan reads each weight
/// once, about what one example's share of a step costs; small batches scan less often, to keep
/// it near 1% of the time. Every epoch's end, and every checkpoint, is scanned regardless.
pub fn scan_interval(batch: usize) -> usize {
    128usize.div_ceil(batch.max(1))
}

/// Watches for a run that has blown up without a NaN: the loss far above the first batch's at
/// chance accuracy, as a learning rate of 1e6 leaves plain SGD (loss ~78, 10% right, for ever).
/// The scores of the steps since the last look are pooled; a look happens once they cover
/// [`RUNAWAY_WINDOW`] examples (or the training set, if smaller) and at every epoch's end and
/// checkpoint, so no checkpoint is written of a run this has seen blow up.
struct Runaway {
    /// The first batch's mean loss per example.
    start: Option<f64>,
    loss: f64,
    correct: usize,
    examples: usize,
    /// The first step in the pool.
    from: u64,
}

/// Examples pooled before the loss and accuracy are looked at.
pub const RUNAWAY_WINDOW: usize = 1024;
/// How many times the first batch's loss counts as far above it.
pub const RUNAWAY_FACTOR: f64 = 10.0;

impl Runaway {
    fn new() -> Runaway {
        Runaway { start: None, loss: 0.0, correct: 0, examples: 0, from: 0 }
    }

    fn add(&mut self, s: Score, examples: usize, step: u64) {
        self.start.get_or_insert(s.loss_sum / examples as f64);
        if self.examples == 0 {
            self.from = step;
        }
        self.loss += s.loss_sum;
        self.correct += s.correct;
        self.examples += examples;
    }

    /// Looks at the pool (when `full` only once it is big enough) and empties it: `Some(what)`
    /// when the loss ran away, at an accuracy no better than 1.5 × chance over `classes`.
    fn check(&mut self, classes: usize, step: u64, full: usize, force: bool) -> Option<String> {
        if self.examples == 0 || (!force && self.examples < full) {
            return None;
        }
        let (mean, acc) = (self.loss / self.examples as f64, self.correct as f64 / self.examples as f64);
        let (n, from) = (self.examples, self.from);
        (self.loss, self.correct, self.examples) = (0.0, 0, 0);
        let start = self.start?;
        let chance = 1.0 / classes.max(1) as f64;
        (mean > RUNAWAY_FACTOR * start && acc <= 1.5 * chance).then(|| {
            let steps = if from == step { format!("step {step}") } else { format!("steps {from} to {step}") };
            format!(
                "the loss ran away without becoming NaN: {mean:.4} per example over the {n} examples of {steps}, against {start:.4} on the first batch, with {:.1}% right (chance is {:.1}%)",
                100.0 * acc,
                100.0 * chance
            )
        })
    }
}

/// A learning rate as a person writes it: 0.001, 1e30.
pub fn show_lr(x: f64) -> String {
    if x == 0.0 || (1e-4..1e6).contains(&x.abs()) { format!("{x}") } else { format!("{x:e}") }
}

fn diverged(engine: &Engine, what: String) -> Error {
    let lr = engine.settings().hyper.lr;
    // A tenth of it, by moving the decimal exponent: 1e30 → 1e29, 0.001 → 0.0001.
    let text = format!("{lr:e}");
    let tenth = text
        .split_once('e')
        .and_then(|(m, e)| format!("{m}e{}", e.parse::<i32>().ok()? - 1).parse::<f64>().ok())
        .unwrap_or(lr / 10.0);
    let default = crate::reference::Hyper::defaults(engine.settings().optimizer).lr;
    let or_default = if tenth > default {
        format!(", or {}'s default {}", engine.settings().optimizer, show_lr(default))
    } else {
        String::new()
    };
    Error::Diverged(format!(
        "{what}; likely cause: the learning rate {} is too high for this network and data (try --lr {}{or_default}), or the features are unscaled (try --normalize standard)",
        show_lr(lr),
        show_lr(tenth)
    ))
}

/// [`train`] from a position saved in a checkpoint: epochs finished, batches of the next, the
/// steps taken and the unfinished epoch's score. Given the engine restored from the same
/// checkpoint, the run continues exactly as if it had never stopped.
pub fn train_from(
    engine: &mut Engine,
    train: &Dataset,
    val: Option<&Dataset>,
    plan: &Plan,
    start: &Position,
    watcher: &mut dyn Watcher,
) -> Result<Vec<EpochReport>> {
    train_on(engine, train, val, plan, start, watcher, &mut crate::dist::Single)
}

/// [`train_from`] as one of the ranks of `comm`: each global batch of `plan.batch` examples is
/// split over the ranks ([`crate::dist::step`]); every rank takes the same steps and ends with
/// the same weights. With one rank it is [`train_from`].
pub fn train_on(
    engine: &mut Engine,
    train: &Dataset,
    val: Option<&Dataset>,
    plan: &Plan,
    start: &Position,
    watcher: &mut dyn Watcher,
    comm: &mut dyn crate::dist::Comm,
) -> Result<Vec<EpochReport>> {
    check_fit(engine, train)?;
    if let Some(v) = val {
        check_fit(engine, v)?;
    }
    // Dropout's masks follow the run's seed (and the step and the layer).
    engine.set_seed(plan.seed);
    if train.is_empty() {
        return Err(Error::Usage("the training set is empty; nothing to train on".into()));
    }
    let s = *engine.settings();
    crate::numbers::positive("the learning rate", s.hyper.lr)?;
    let spec = engine.spec().clone();
    // The FLOPs of the examples an epoch runs: all of them, or those after a resumed position.
    let flop = |examples: usize| cost::epoch(&spec, s.loss, s.optimizer, plan.batch, examples).total.flop() as f64;
    let epoch_flop = flop(train.len());
    let f = train.feature_len();
    let mut xb = vec![0.0f32; plan.batch * f];
    let mut yb = vec![0u8; plan.batch];
    let mut shares = crate::dist::Shares::new(if comm.size() > 1 { plan.batch } else { 0 }, f);
    let batches = train.len().div_ceil(plan.batch);
    let scan_every = scan_interval(plan.batch) as u64;
    // Grown as epochs finish: --epochs has no upper limit, and a report each up front for a
    // long run (1e11 epochs) asked for terabytes before the first step.
    let mut reports = Vec::new();
    let mut pos = *start;
    let base_lr = s.hyper.lr;
    let mut last_scan = pos.step;
    let mut runaway = Runaway::new();
    let window = RUNAWAY_WINDOW.min(train.len());
    let classes = spec.outputs();
    while pos.epoch < plan.epochs {
        let epoch = pos.epoch + 1;
        engine.set_learning_rate(plan.schedule.rate(base_lr, epoch, plan.epochs));
        let order: Vec<usize> =
            if plan.shuffle { epoch_order(train.len(), plan.seed, epoch) } else { (0..train.len()).collect() };
        watcher.epoch_started(epoch, batches);
        // A resumed epoch times only its batches after `pos.batch`: its FLOPs and predicted time
        // are theirs, not the whole epoch's.
        let skipped = pos.batch.min(batches);
        let (run_flop, run_share) = match skipped {
            0 => (epoch_flop, 1.0),
            _ => (flop(train.len() - skipped * plan.batch), (batches - skipped) as f64 / batches as f64),
        };
        let begun = Instant::now();
        for (k, idx) in order.chunks(plan.batch).enumerate().skip(pos.batch) {
            let b = idx.len();
            let (s, stop) = if comm.size() > 1 {
                crate::dist::step(engine, comm, train, idx, &mut shares, watcher.interrupted())?
            } else {
                train.gather(idx, &mut xb[..b * f], &mut yb[..b]);
                // The next batch's first rows load while this step runs.
                let next = ((k + 1) * plan.batch).min(order.len());
                train.prefetch(&order[next..(next + crate::data::PREFETCH_AHEAD).min(order.len())]);
                (engine.train_step(&xb[..b * f], &yb[..b])?, None)
            };
            pos.step += 1;
            // Only an error needs it: built then, not on every step.
            let step = pos.step;
            let at = || format!("step {step} (epoch {epoch}, batch {} of {batches})", k + 1);
            if !s.loss_sum.is_finite() {
                let layer = non_finite(engine).map(|l| format!("; {l}")).unwrap_or_default();
                return Err(diverged(engine, format!("the loss became {} at {}{layer}", s.loss_sum, at())));
            }
            if pos.step - last_scan >= scan_every || k + 1 == batches {
                if !all_finite(engine.params())
                    && let Some(l) = non_finite(engine)
                {
                    let every = if scan_every > 1 {
                        format!("; the weights are checked every {scan_every} steps at this batch size")
                    } else {
                        String::new()
                    };
                    return Err(diverged(engine, format!("{l} at {}{every}", at())));
                }
                last_scan = pos.step;
            }
            runaway.add(s, b, pos.step);
            if let Some(what) = runaway.check(classes, pos.step, window, k + 1 == batches) {
                return Err(diverged(engine, format!("{what}, at {}", at())));
            }
            pos.score += s;
            pos.batch = k + 1;
            watcher.batch_done(k + 1, pos.score.loss_sum / ((k * plan.batch + b) as f64));
            if let Some(signal) = if comm.size() > 1 { stop } else { watcher.interrupted() } {
                if let Some(l) = non_finite(engine) {
                    return Err(diverged(engine, format!("{l} at {}", at())));
                }
                if let Some(what) = runaway.check(classes, pos.step, window, true) {
                    return Err(diverged(engine, format!("{what}, at {}", at())));
                }
                watcher.checkpoint(engine, &pos)?;
                return Err(Error::Interrupted { signal, detail: format!("stopped after {}", at()) });
            }
        }
        let seconds = begun.elapsed().as_secs_f64();
        let n = train.len() as f64;
        let val_eval = match val {
            Some(v) if !v.is_empty() => Some(evaluate(engine, v)?),
            _ => None,
        };
        let report = EpochReport {
            epoch,
            train_loss: pos.score.loss_sum / n,
            train_acc: pos.score.correct as f64 / n,
            val_loss: val_eval.map(|e| e.loss),
            val_acc: val_eval.map(|e| e.acc),
            seconds,
            gflops: run_flop / seconds / 1e9,
            predicted_seconds: plan.predicted_epoch_seconds.map(|p| p * run_share),
        };
        pos = Position { epoch, batch: 0, step: pos.step, score: Score::default() };
        watcher.epoch_done(&report)?;
        watcher.checkpoint(engine, &pos)?;
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
    let k = engine.spec().outputs();
    let mut matrix = vec![vec![0usize; k]; k];
    let mut total = Score::default();
    each_output(engine, data, |row, y, s| {
        let pred = row.iter().enumerate().fold(0, |best, (j, &v)| if v > row[best] { j } else { best });
        matrix[y as usize][pred] += 1;
        total += s;
    })?;
    let overall = Evaluation::of(total, data.len());
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::{Checkpoint, Position};
    use crate::engine::Settings;
    use crate::reference::Hyper;
    use crate::spec::{Defaults, Loss, Optimizer, parse};

    #[test]
    fn all_finite_sees_every_position() {
        for n in [1, 63, 64, 65, 200] {
            let mut v = vec![1.0f32; n];
            assert!(all_finite(&v));
            for i in 0..n {
                for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                    v[i] = bad;
                    assert!(!all_finite(&v), "{bad} at {i} of {n}");
                }
                v[i] = f32::MAX;
            }
            assert!(all_finite(&v));
        }
    }

    #[test]
    fn each_epoch_has_its_own_order_made_again_from_the_seed() {
        assert_eq!(epoch_order(100, 7, 3), epoch_order(100, 7, 3));
        assert_ne!(epoch_order(100, 7, 3), epoch_order(100, 7, 4));
        assert_ne!(epoch_order(100, 7, 3), epoch_order(100, 8, 3));
        let mut o = epoch_order(100, 7, 3);
        o.sort_unstable();
        assert_eq!(o, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn learning_rates_read_as_written() {
        assert_eq!(show_lr(0.001), "0.001");
        assert_eq!(show_lr(1e30), "1e30");
        assert_eq!(show_lr(2e-7), "2e-7");
    }

    fn data(n: usize) -> Dataset {
        let features = (0..n * 4).map(|i| ((i * 37 % 101) as f32) / 101.0).collect();
        let labels = (0..n).map(|i| (i * 7 % 3) as u8).collect();
        Dataset { features, labels, shape: [1, 1, 4], classes: 3, class_names: vec![] }
    }

    fn engine(opt: Optimizer, lr: f64) -> Engine {
        engine_of("4-8:tanh-3", opt, lr)
    }

    fn engine_of(spec: &str, opt: Optimizer, lr: f64) -> Engine {
        let spec = parse(spec, Defaults::default()).unwrap();
        let mut hyper = Hyper::defaults(opt);
        hyper.lr = lr;
        let settings = Settings { loss: Loss::Ce, optimizer: opt, hyper, max_batch: 5, threads: 1 };
        Engine::new(&spec, &crate::init::init(&spec, 3), settings).unwrap()
    }

    /// Saves a checkpoint at `stop` and says stop there.
    struct StopAt {
        stop: Position,
        saved: Option<Checkpoint>,
    }

    impl Watcher for StopAt {
        fn interrupted(&mut self) -> Option<i32> {
            None
        }
        fn batch_done(&mut self, _done: usize, _loss: f64) {}
        fn checkpoint(&mut self, engine: &Engine, at: &Position) -> Result<()> {
            if at.step == self.stop.step {
                let meta = crate::checkpoint::meta(engine.spec(), engine.settings(), &plan(), &data(23));
                self.saved = Some(Checkpoint::capture(engine, meta, at));
            }
            Ok(())
        }
    }

    fn plan() -> Plan {
        Plan {
            epochs: 3,
            batch: 5,
            seed: 11,
            shuffle: true,
            schedule: Schedule::Constant,
            predicted_epoch_seconds: None,
        }
    }

    #[test]
    fn resuming_from_any_epoch_gives_the_same_weights() {
        let d = data(23);
        for opt in [Optimizer::Sgd, Optimizer::Momentum, Optimizer::Adam] {
            let mut whole = engine(opt, 0.05);
            train(&mut whole, &d, None, &plan(), &mut Quiet).unwrap();
            for stop in [5, 10] {
                let mut first = engine(opt, 0.05);
                let mut w = StopAt { stop: Position { step: stop, ..Position::default() }, saved: None };
                train(&mut first, &d, None, &Plan { epochs: stop as usize / 5, ..plan() }, &mut w).unwrap();
                let c = w.saved.expect("a checkpoint at the epoch's end");
                let mut resumed = engine(opt, 0.05);
                let layers = c.layers(resumed.spec()).unwrap();
                let spec = resumed.spec().clone();
                resumed = Engine::new(&spec, &layers, *resumed.settings()).unwrap();
                let at = c.restore(&mut resumed).unwrap();
                train_from(&mut resumed, &d, None, &plan(), &at, &mut Quiet).unwrap();
                assert!(resumed.params() == whole.params(), "{opt} resumed after step {stop}");
            }
        }
    }

    #[test]
    fn divergence_names_the_step_the_layer_and_the_learning_rate() {
        let d = data(23);
        let e = train(&mut engine_of("4-8-8-3", Optimizer::Sgd, 1e35), &d, None, &plan(), &mut Quiet).unwrap_err();
        let m = e.to_string();
        assert!(matches!(e, Error::Diverged(_)), "{m}");
        assert!(m.contains("at step ") && m.contains("(epoch 1, batch "), "{m}");
        assert!(m.contains("layer ") && m.contains("hold"), "{m}");
        assert!(m.contains("the learning rate 1e35 is too high") && m.contains("try --lr 1e34"), "{m}");
        assert_eq!(e.exit_code(), 1);
    }

    /// Records the steps at which checkpoints were asked for.
    #[derive(Default)]
    struct Saves(Vec<u64>);

    impl Watcher for Saves {
        fn checkpoint(&mut self, _engine: &Engine, at: &Position) -> Result<()> {
            self.0.push(at.step);
            Ok(())
        }
    }

    /// Keeps the epoch reports.
    #[derive(Default)]
    struct Reports(Vec<EpochReport>);

    impl Watcher for Reports {
        fn epoch_done(&mut self, r: &EpochReport) -> Result<()> {
            self.0.push(r.clone());
            Ok(())
        }
    }

    #[test]
    fn a_resumed_epoch_reports_the_flops_and_prediction_of_the_part_it_ran() {
        let d = data(23); // batches of 5: 5, 5, 5, 5, 3
        let p = Plan { epochs: 1, predicted_epoch_seconds: Some(1.0), ..plan() };
        let mut e = engine(Optimizer::Adam, 0.01);
        let mut w = Reports::default();
        // Two batches of epoch 1 done: 13 examples remain, in batches 5, 5, 3.
        let at = Position { epoch: 0, batch: 2, step: 2, score: Score::default() };
        train_from(&mut e, &d, None, &p, &at, &mut w).unwrap();
        let r = &w.0[0];
        let ran = cost::epoch(e.spec(), Loss::Ce, Optimizer::Adam, 5, 13).total.flop() as f64;
        let whole = cost::epoch(e.spec(), Loss::Ce, Optimizer::Adam, 5, 23).total.flop() as f64;
        let counted = r.gflops * r.seconds * 1e9;
        assert!((counted / ran - 1.0).abs() < 1e-9, "{counted} FLOPs reported, {ran} run, {whole} in the epoch");
        assert_eq!(r.predicted_seconds, Some(3.0 / 5.0), "three of five steps");
    }

    #[test]
    fn a_loss_that_runs_away_without_nan_stops_the_run_before_its_checkpoint() {
        let d = data(23);
        // A healthy first epoch, checkpointed at its end (step 5).
        let mut e = engine(Optimizer::Sgd, 0.05);
        let mut saves = Saves::default();
        let first = train(&mut e, &d, None, &Plan { epochs: 1, ..plan() }, &mut saves).unwrap();
        assert_eq!(saves.0, [5]);
        // Then a rate that saturates every unit: the loss stays finite, far above the start.
        e.set_learning_rate(1e6);
        let at = Position { epoch: 1, batch: 0, step: 5, score: Score::default() };
        let err = train_from(&mut e, &d, None, &plan(), &at, &mut saves).unwrap_err();
        let m = err.to_string();
        assert!(matches!(err, Error::Diverged(_)), "{m}");
        assert!(m.contains("the loss ran away without becoming NaN") && m.contains("(chance is 33.3%)"), "{m}");
        assert!(m.contains("(epoch 2, batch ") && m.contains("try --lr 100000, or sgd's default 0.01"), "{m}");
        assert_eq!(saves.0, [5], "no checkpoint of the run-away epoch");
        assert!(first[0].train_loss.is_finite());
    }

    #[test]
    fn a_learning_rate_that_is_not_a_positive_number_is_refused_before_a_step() {
        let d = data(23);
        for lr in [f64::NAN, f64::INFINITY, 0.0, -0.1] {
            let mut e = engine(Optimizer::Sgd, lr);
            let before = e.params().to_vec();
            let err = train(&mut e, &d, None, &plan(), &mut Quiet).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{lr}: {err}");
            assert!(err.to_string().starts_with("the learning rate: "), "{err}");
            assert!(e.params() == &before[..], "{lr}: a step was taken");
        }
    }

    /// Loss and accuracy of a data set are the same to the bit whatever batch the engine scores
    /// it in, so `eval` (batch 256) reports exactly what `train` (its own batch) did: the
    /// sum of per-example losses must not depend on how they were grouped.
    #[test]
    fn evaluation_does_not_depend_on_the_batch_size() {
        let d = data(23);
        for spec in ["4-8:tanh-3", "4-16:relu-8:sigmoid-3"] {
            let score = |max_batch: usize| {
                let mut e = engine_of(spec, Optimizer::Adam, 0.01);
                let settings = Settings { max_batch, ..*e.settings() };
                let spec = e.spec().clone();
                e = Engine::new(&spec, &crate::init::init(&spec, 3), settings).unwrap();
                let r = evaluate(&mut e, &d).unwrap();
                (r.loss.to_bits(), r.acc.to_bits())
            };
            let one = score(1);
            for b in 2..=30 {
                assert_eq!(score(b), one, "{spec} scored in batches of {b}");
            }
        }
    }

    #[test]
    fn the_runaway_watch_needs_both_a_high_loss_and_chance_accuracy() {
        let score = |loss: f64, correct| Score { loss_sum: loss, correct };
        let mut r = Runaway::new();
        r.add(score(10.0, 1), 10, 1); // 1.0 per example at first
        assert_eq!(r.check(10, 1, 20, false), None, "waits for a full window");
        r.add(score(200.0, 1), 10, 2);
        assert!(r.check(10, 2, 20, false).is_some(), "10.5 a example at 10% right");
        r.add(score(200.0, 6), 20, 3);
        assert_eq!(r.check(10, 3, 20, false), None, "30% right is learning, however high the loss");
        r.add(score(190.0, 0), 20, 4);
        assert_eq!(r.check(10, 4, 20, false), None, "9.5 a example is under ten times the start");
    }

    #[test]
    fn the_data_decides_the_input_and_a_mismatch_names_the_spec() {
        let p = |s: &str| crate::spec::parse(s, crate::spec::Defaults::default()).unwrap();
        let images = |shape: [usize; 3]| Dataset {
            features: vec![0.0; 2 * shape.iter().product::<usize>()],
            labels: vec![0, 1],
            shape,
            classes: 10,
            class_names: vec![],
        };
        let mnist = images([1, 28, 28]);
        let cifar = images([3, 32, 32]);
        let csv = images([1, 1, 784]);
        let cnn = "1x28x28-conv5x5x32p2:relu-maxpool2-10:softmax";
        assert!(check_data(&p(cnn), &mnist).is_ok());
        assert!(check_data(&p(cnn), &csv).is_ok(), "a CSV row of C·H·W values is an image");
        assert!(check_data(&p("784-30-10"), &mnist).is_ok(), "a dense net reads images flattened");
        assert!(check_data(&p("3072-10"), &cifar).is_ok());
        assert!(check_data(&p("3x32x32-conv3x3x8:relu-10"), &cifar).is_ok());
        let e = check_data(&p(cnn), &cifar).unwrap_err().to_string();
        assert!(
            e.contains("the data holds 3x32x32 images but the network's input is 1x28x28; start the spec with 3x32x32, e.g. 3x32x32-conv5x5x32p2:relu-maxpool2-10:softmax"),
            "{e}"
        );
        // Transposed channels are a different image.
        let e = check_data(&p("28x28x1-conv1x1x4:relu-10"), &mnist).unwrap_err().to_string();
        assert!(e.contains("start the spec with 1x28x28"), "{e}");
        // A kernel that no longer fits the data's image: the start alone.
        let e = check_data(&p("1x64x64-conv33x33x4:relu-10"), &mnist).unwrap_err().to_string();
        assert!(e.ends_with("start the spec with 1x28x28"), "{e}");
        let e = check_data(&p("3x32x32-conv3x3x8:relu-10"), &csv).unwrap_err().to_string();
        assert!(e.contains("rows of 784 values") && e.contains("e.g. 1x28x28"), "{e}");
        let e = check_data(&p("784-30-10"), &cifar).unwrap_err().to_string();
        assert!(e.contains("use a spec that starts with 3072, e.g. 3072-30:relu-10:softmax"), "{e}");
        let e = check_data(&p("1x28x28-conv3x3x2:relu-5"), &mnist).unwrap_err().to_string();
        assert!(e.contains("10 classes but the network has 5 outputs"), "{e}");
    }
}
