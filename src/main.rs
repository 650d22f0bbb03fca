//! The `flopnet` command line: parses arguments, calls the library, prints.

use clap::{Args, Parser, Subcommand};
use flopnet::bench::{self, BenchConfig};
use flopnet::checkpoint::{self, Checkpoint, Position, Saver};
use flopnet::cost::{Config, Ledger};
use flopnet::data::{self, DataSource, LoadOptions, Normalize};
use flopnet::engine::{Engine, Settings};
use flopnet::options::at_least_one;
use flopnet::reference::Hyper;
use flopnet::spec::{self, Activation, Defaults, Loss, Optimizer, Spec};
use flopnet::train::{self, EpochReport, MetricsWriter, Plan, Watcher};
use flopnet::{Error, Result, files, guard, init, model, numbers, plot, predict, report, score, sys, verify};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "flopnet", version, about = "Count, verify and train feedforward networks on the CPU")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Count every operation of a training step, per layer, example, batch, epoch and run.
    Count(CountArgs),
    /// Derive the counts in words, layer by layer.
    Explain(ExplainArgs),
    /// Run the reference engine on a counting scalar and check the ledger against it.
    Verify(VerifyArgs),
    /// Train a network with the fast engine (default data: the embedded Fashion-MNIST subset).
    Train(TrainArgs),
    /// Score a saved model: loss, accuracy, per-class accuracy and the confusion matrix.
    Eval(EvalArgs),
    /// Measure training (or inference) throughput on synthetic data.
    Bench(BenchArgs),
    /// Measure this machine for the time model (matrix products, memory, activations), ~10 s.
    Calibrate(CalibrateArgs),
    /// Write one self-contained HTML page: counts, explanation, charts, diagram, training curves.
    Report(ReportArgs),
    /// List the model zoo (usable wherever a spec is) with parameters and forward MACs.
    Zoo,
    /// Write a model file (.safetensors) as ONNX.
    Export(ExportArgs),
}

#[derive(Args)]
struct ExportArgs {
    /// The model file to convert.
    model: PathBuf,
    /// The ONNX file to write.
    #[arg(short, long)]
    output: PathBuf,
}

#[derive(Args)]
struct CalibrateArgs {
    /// Threads to measure with [default: every core].
    #[arg(long, value_parser = at_least_one::<usize>)]
    threads: Option<usize>,
    /// Where to save the profile [default: the user's cache directory].
    #[arg(long)]
    profile: Option<PathBuf>,
    /// A coarser, faster measurement (~3 s).
    #[arg(long)]
    quick: bool,
    /// Under `mpirun -n P` (P ≥ 2): measure the all-reduce's latency and bandwidth between the
    /// ranks instead, for `count --predict --ranks --link-gbps --link-latency-us`.
    #[arg(long)]
    mpi: bool,
}

/// Options of the time model.
#[derive(Args)]
struct PredictArgs {
    /// Also predict the time per step, epoch and run.
    #[arg(long)]
    predict: bool,
    /// The machine profile to use [default: this machine's, measured if missing or stale].
    #[arg(long, conflicts_with_all = ["gflops", "bandwidth"])]
    profile: Option<PathBuf>,
    /// Threads the run would use [default: every core].
    #[arg(long, value_parser = at_least_one::<usize>)]
    threads: Option<usize>,
    /// What-if: a named device's published peaks (h100, h200, a100, epyc-9654, xeon-8480), with
    /// an optional :fp32, :tf32 or :bf16 for the matrix products (e.g. h200:bf16).
    #[arg(long, conflicts_with_all = ["gflops", "bandwidth", "profile"])]
    device: Option<String>,
    /// What-if: a peak GFLOP/s (with --bandwidth).
    #[arg(long, requires = "bandwidth", value_parser = numbers::parse_positive, allow_negative_numbers = true)]
    gflops: Option<f64>,
    /// What-if: memory bandwidth in GB/s (with --gflops).
    #[arg(long, requires = "gflops", value_parser = numbers::parse_positive, allow_negative_numbers = true)]
    bandwidth: Option<f64>,
}

impl PredictArgs {
    fn wanted(&self) -> bool {
        self.predict || self.device.is_some() || self.gflops.is_some()
    }

    /// Refuses the options of the time model given without asking for a prediction.
    fn check(&self) -> Result<()> {
        let given = [("--threads", self.threads.is_some()), ("--profile", self.profile.is_some())];
        match given.iter().find(|(_, g)| *g) {
            Some((flag, _)) if !self.wanted() => {
                Err(Error::Usage(format!("{flag} sets up the time model; add --predict (or --device) to use it")))
            }
            _ => Ok(()),
        }
    }

    /// The predictions for `spec` under each of `cfgs`, from one machine model (the profile is
    /// read, or measured, once); what they rest on goes to stderr.
    fn predict_each(&self, spec: &Spec, cfgs: &[Config]) -> Result<Vec<predict::Prediction>> {
        let threads = threads(self.threads);
        let each = |m: predict::Machine| cfgs.iter().map(|c| predict::predict(spec, c, m, threads)).collect();
        if let Some(d) = &self.device {
            let (name, precision) = d.split_once(':').unwrap_or((d.as_str(), "fp32"));
            let dev = predict::devices::find(name).ok_or_else(|| {
                Error::Usage(format!("unknown device `{name}`; known: {}", predict::devices::names()))
            })?;
            if !["fp32", "tf32", "bf16"].contains(&precision) {
                return Err(Error::Usage(format!("unknown precision `{precision}`; use fp32, tf32 or bf16")));
            }
            let m = predict::Machine::device(dev, precision);
            eprintln!("flopnet: what-if for {} at {precision}", dev.description);
            return Ok(each(m));
        }
        if let (Some(g), Some(b)) = (self.gflops, self.bandwidth) {
            return Ok(each(predict::Machine::Roofline { matmul_gflops: g, vector_gflops: g, bandwidth_gbs: b }));
        }
        let profile = measured_profile(self.profile.clone(), threads)?;
        Ok(each(predict::Machine::Measured(&profile)))
    }
}

/// The threads `--threads` asks for (every core without it); the warning, when it asks for more
/// than the cores, goes to stderr.
fn threads(requested: Option<usize>) -> usize {
    let (n, warning) = sys::threads(requested);
    if let Some(w) = warning {
        eprintln!("flopnet: {w}");
    }
    n
}

/// This machine's profile for `threads` (from `path` or the cache), measured quickly when it is
/// missing or stale; says so on stderr when it had to measure.
fn measured_profile(path: Option<PathBuf>, threads: usize) -> Result<predict::Profile> {
    let path = path.unwrap_or_else(|| predict::default_path(threads));
    let (profile, note) = predict::load_or_calibrate(&path, threads, true)?;
    if let Some(note) = note {
        eprintln!("flopnet: {note}");
    } else if profile.quick {
        eprintln!(
            "flopnet: the predictions rest on a quick calibration ({}); `flopnet calibrate` measures more carefully",
            path.display()
        );
    }
    Ok(profile)
}

/// The model alone: its layers and what its output is scored with.
#[derive(Args)]
struct ModelArgs {
    /// The network: layer sizes input first (784-30-30-10, 784-30:tanh-10:softmax), blocks
    /// ([...] residual, (...) concatenated), a .toml file, a zoo model (flopnet zoo lists them)
    /// or an .onnx file.
    spec: String,
    /// A zoo model's or an ONNX file's input, CxHxW [default: the model's own, e.g. 3x224x224].
    #[arg(long)]
    input: Option<flopnet::spec::Shape>,
    /// A zoo model's class count [default: the model's own, e.g. 1000].
    #[arg(long, value_parser = at_least_one::<usize>)]
    classes: Option<usize>,
    /// Activation of hidden layers that do not name one [default: relu].
    #[arg(long)]
    act: Option<Activation>,
    /// Activation of the output layer when the spec does not name one [default: softmax with
    /// --loss ce, identity with --loss mse].
    #[arg(long)]
    out: Option<Activation>,
    /// The loss: ce (softmax cross-entropy) or mse.
    #[arg(long, default_value = "ce")]
    loss: Loss,
    /// An ONNX file with operators flopnet does not count: count the rest, list what was skipped.
    #[arg(long)]
    partial: bool,
}

impl ModelArgs {
    /// The network; what reading an ONNX file noticed goes to stderr.
    fn spec(&self) -> Result<Spec> {
        let (spec, notes) = self.spec_noted()?;
        for n in notes {
            eprintln!("flopnet: note: {n}");
        }
        Ok(spec)
    }

    fn spec_noted(&self) -> Result<(Spec, Vec<String>)> {
        let output = self.out.unwrap_or(match self.loss {
            Loss::Ce => Activation::Softmax,
            Loss::Mse => Activation::Identity,
        });
        let hidden = self.act.unwrap_or(Activation::Relu);
        let zoo = flopnet::zoo::Options { input: self.input, classes: self.classes };
        let (spec, notes) = flopnet::onnx::load_arg(&self.spec, Defaults { hidden, output }, zoo, self.partial)?;
        flopnet::options::check_defaults_used(&self.spec, &spec, Defaults { hidden, output }, self.act, self.out)?;
        spec.check_loss(self.loss)?;
        Ok((spec, notes))
    }
}

/// Where the data comes from and how it is prepared.
#[derive(Args)]
struct DataArgs {
    /// `fashion-mnist` (Debian's package), a directory or a file (IDX, CIFAR-10 binary, CSV);
    /// absent: the embedded Fashion-MNIST subset.
    #[arg(long)]
    data: Option<String>,
    /// Feature scaling: none, unit (/255) or standard [default: unit for images, none for CSV].
    #[arg(long)]
    normalize: Option<Normalize>,
}

#[derive(Args)]
struct TrainArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    data: DataArgs,
    /// Epochs to train (passes over the training examples).
    #[arg(long, default_value_t = 5, value_parser = at_least_one::<usize>)]
    epochs: usize,
    /// Examples per batch (one optimizer step each).
    #[arg(long, short, default_value_t = 32, value_parser = at_least_one::<u64>)]
    batch: u64,
    /// The optimizer: sgd, momentum, adam or adamw.
    #[arg(long, default_value = "adam")]
    optimizer: Optimizer,
    /// Learning rate, finite and above 0 [default: 0.001 for adam and adamw, 0.01 otherwise].
    #[arg(long, value_parser = numbers::parse_positive, allow_negative_numbers = true)]
    lr: Option<f64>,
    /// Weight decay λ on every parameter, biases included (as PyTorch): g += λ·w for sgd,
    /// momentum and adam; w *= 1 − lr·λ for adamw [default: 0, 0.01 for adamw].
    #[arg(long, value_parser = numbers::parse_non_negative, allow_negative_numbers = true)]
    weight_decay: Option<f64>,
    /// Epochs of linear learning-rate warmup: the rate climbs step by step from lr/S to lr over
    /// their S steps, then the --schedule runs on.
    #[arg(long, default_value_t = 0)]
    warmup: usize,
    /// Augment image batches: crop=P (pad P pixels of black on every side, crop back at a random
    /// offset), flip (mirror half of them left to right), or crop=P,flip; seeded by --seed.
    #[arg(long, value_name = "crop=P,flip")]
    augment: Option<flopnet::data::augment::Augment>,
    /// Seeds the weights, the validation split and the shuffling.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Threads to train with [default: every core; more are cut to the cores].
    #[arg(long, value_parser = at_least_one::<usize>)]
    threads: Option<usize>,
    /// Fraction of the training examples held out for validation.
    #[arg(long, default_value_t = 0.1, allow_negative_numbers = true)]
    val_split: f64,
    /// Keep the file's order instead of reshuffling every epoch.
    #[arg(long)]
    no_shuffle: bool,
    /// Learning-rate schedule over the epochs: constant or cosine (decays to nearly zero).
    #[arg(long, value_enum, default_value = "constant")]
    schedule: train::Schedule,
    /// Start from the weights in this model file (with --resume: the file the run started from,
    /// checked against the checkpoint).
    #[arg(long)]
    init: Option<PathBuf>,
    /// Save the trained model here (safetensors).
    #[arg(long)]
    save: Option<PathBuf>,
    /// Write one JSON line per epoch, and a final test line, here.
    #[arg(long)]
    metrics: Option<PathBuf>,
    /// The machine profile for the predicted times [default: this machine's].
    #[arg(long)]
    profile: Option<PathBuf>,
    /// Draw loss, accuracy and GFLOP/s against epoch here (.svg or .png), redrawn after every epoch.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Save a checkpoint into this directory after every epoch and on Ctrl-C or SIGTERM.
    #[arg(long, value_name = "DIR", conflicts_with = "resume")]
    checkpoint: Option<PathBuf>,
    /// Continue the run checkpointed in DIR (same command line otherwise); keeps checkpointing there.
    #[arg(long, value_name = "DIR")]
    resume: Option<PathBuf>,
    /// Under mpirun: seconds a rank waits for the others at a step's collectives, beyond twice
    /// its own longest work between two, before it ends the job naming the ranks that did not come.
    #[arg(long, value_name = "SECONDS", default_value_t = flopnet::dist::watchdog::DEFAULT_TIMEOUT_S, value_parser = numbers::parse_positive, allow_negative_numbers = true)]
    rank_timeout: f64,
    /// Under mpirun: batch norm normalizes with the statistics of the whole global batch, summed
    /// over the ranks forward and backward (as PyTorch's SyncBatchNorm), not each rank's share.
    #[arg(long)]
    sync_bn: bool,
}

#[derive(Args)]
struct EvalArgs {
    /// The model file (safetensors) to score.
    #[arg(long)]
    model: PathBuf,
    #[command(flatten)]
    data: DataArgs,
    /// The loss to report: ce or mse [default: the one the model file records, else ce].
    #[arg(long)]
    loss: Option<Loss>,
    /// Examples scored at once (the result does not depend on it) [default: 256, or all the
    /// examples when fewer].
    #[arg(long, value_parser = at_least_one::<usize>)]
    batch: Option<usize>,
    /// Threads to score with [default: every core; more are cut to the cores].
    #[arg(long, value_parser = at_least_one::<usize>)]
    threads: Option<usize>,
    /// Print JSON (loss, accuracy, per-class accuracy, confusion matrix) instead of tables.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct BenchArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Examples per step.
    #[arg(long, short, default_value_t = 128, value_parser = at_least_one::<u64>)]
    batch: u64,
    /// Steps per timed run [default: enough for about 0.2 s].
    #[arg(long, value_parser = at_least_one::<usize>)]
    steps: Option<usize>,
    /// Timed runs; the median is reported.
    #[arg(long, default_value_t = 7, value_parser = at_least_one::<usize>)]
    runs: usize,
    /// Threads to measure with [default: every core; more are cut to the cores].
    #[arg(long, value_parser = at_least_one::<usize>)]
    threads: Option<usize>,
    /// Time inference (forward passes) instead of training steps (no optimizer, no prediction).
    #[arg(long, conflicts_with_all = ["optimizer", "profile"])]
    forward_only: bool,
    /// The optimizer of the training step: sgd, momentum (as the PyTorch peer script) or adam.
    #[arg(long, default_value = "momentum")]
    optimizer: Optimizer,
    /// The machine profile for predicted times [default: this machine's, measured if missing].
    #[arg(long)]
    profile: Option<PathBuf>,
    /// Print one line of JSON instead of the table.
    #[arg(long)]
    json: bool,
}

/// The network and how one step is computed.
#[derive(Args)]
struct NetArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The optimizer: sgd, momentum, adam or adamw.
    #[arg(long, default_value = "sgd")]
    optimizer: Optimizer,
    /// Weight decay λ (only whether it is above 0 changes sgd's, momentum's and adam's counts)
    /// [default: 0, 0.01 for adamw].
    #[arg(long, value_parser = numbers::parse_non_negative, allow_negative_numbers = true)]
    weight_decay: Option<f64>,
    /// Examples per batch.
    #[arg(long, short, default_value_t = 1, value_parser = at_least_one::<u64>)]
    batch: u64,
}

impl NetArgs {
    /// `--weight-decay`, or the optimizer's default.
    fn weight_decay(&self) -> f64 {
        self.weight_decay.unwrap_or(Hyper::defaults(self.optimizer).weight_decay)
    }
}

/// The network, the step, and how many of them a run takes.
#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    net: NetArgs,
    /// Examples in one epoch (60,000: an MNIST-sized training set).
    #[arg(long, short, default_value_t = 60_000, value_parser = at_least_one::<u64>)]
    examples: u64,
    /// Epochs in the run.
    #[arg(long, default_value_t = 1, value_parser = at_least_one::<u64>)]
    epochs: u64,
    /// Ranks training together (`mpirun -n P`): adds what their all-reduce of the gradients sends.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    ranks: u64,
    /// With --ranks: batch norm's statistics summed over the ranks too (train --sync-bn).
    #[arg(long)]
    sync_bn: bool,
}

impl RunArgs {
    /// The all-reduce traffic of `--ranks`, when more than one.
    fn communication(&self, spec: &Spec, cfg: &Config) -> Option<flopnet::dist::traffic::Communication> {
        use flopnet::spec::{Kind, Source};
        let n = u64::try_from(spec.params()).unwrap_or(u64::MAX);
        // Each batch-norm layer: its channels and whether it hands a gradient down.
        let norms: Vec<(u64, bool)> = (0..spec.layers.len())
            .filter(|&l| self.sync_bn && matches!(spec.layers[l].kind, Kind::BatchNorm))
            .map(|l| (spec.layers[l].input.c as u64, matches!(spec.sources[l][..], [Source::Node(_)])))
            .collect();
        let sums = flopnet::dist::traffic::sync_bn_sums(&norms);
        (self.ranks > 1).then(|| {
            flopnet::dist::traffic::with_statistics(n, &sums, self.ranks as usize, cfg.batch, cfg.examples, cfg.epochs)
        })
    }

    fn config(&self) -> Config {
        Config {
            loss: self.net.model.loss,
            optimizer: self.net.optimizer,
            batch: batch_for(self.net.batch as usize, self.examples as usize, "examples of --examples"),
            examples: self.examples as usize,
            epochs: self.epochs as usize,
        }
    }
}

/// `explain` draws what `count` draws, and prints words instead of tables.
#[derive(Args)]
struct ExplainArgs {
    #[command(flatten)]
    run: RunArgs,
    #[command(flatten)]
    pictures: PictureArgs,
}

#[derive(Args)]
struct CountArgs {
    #[command(flatten)]
    run: RunArgs,
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    time: PredictArgs,
    /// With --predict and --ranks: the link between ranks, in Gbit/s.
    #[arg(long, value_parser = numbers::parse_positive, allow_negative_numbers = true)]
    link_gbps: Option<f64>,
    /// With --predict and --ranks: one message's latency on that link, in µs.
    #[arg(long, value_parser = numbers::parse_positive, allow_negative_numbers = true)]
    link_latency_us: Option<f64>,
    #[command(flatten)]
    pictures: PictureArgs,
}

/// Pictures `count` and `explain` can draw besides their text.
#[derive(Args)]
struct PictureArgs {
    /// Draw per-layer stacked bars of forward, backward (δ, dW, db, dX) and update FLOPs here (.svg or .png).
    #[arg(long)]
    plot: Option<PathBuf>,
    /// The y axis of --plot: linear or log.
    #[arg(long, default_value = "linear", requires = "plot")]
    scale: plot::Scale,
    /// Draw the network as columns of neurons and their connections here (.svg or .png).
    #[arg(long)]
    diagram: Option<PathBuf>,
}

impl PictureArgs {
    /// Refuses a picture path that cannot be written, before any work.
    fn check(&self, spec_arg: &str) -> Result<()> {
        let paths = [&self.plot, &self.diagram];
        paths.iter().copied().flatten().try_for_each(|p| plot::Format::from_path(p).map(drop))?;
        let outputs = [("--plot", self.plot.as_deref()), ("--diagram", self.diagram.as_deref())];
        files::check_outputs(&outputs, &[Some(Path::new(spec_arg))])
    }

    fn draw(&self, spec: &Spec, ledger: &Ledger) -> Result<()> {
        if let Some(p) = &self.plot {
            plot::save(&plot::CostChart::new(ledger, self.scale), p)?;
            eprintln!("wrote {}", p.display());
        }
        if let Some(p) = &self.diagram {
            plot::save(&plot::Diagram::new(spec), p)?;
            eprintln!("wrote {}", p.display());
        }
        Ok(())
    }
}

#[derive(Args)]
struct ReportArgs {
    #[command(flatten)]
    run: RunArgs,
    /// A `train --metrics` file: adds the training curves.
    #[arg(long)]
    metrics: Option<PathBuf>,
    /// The page to write (.html).
    #[arg(long, short)]
    output: PathBuf,
}

#[derive(Args)]
struct VerifyArgs {
    #[command(flatten)]
    net: NetArgs,
    /// Also run a whole epoch of this many examples and check the per-epoch totals.
    #[arg(long, value_parser = at_least_one::<u64>)]
    examples: Option<u64>,
    /// Seed for the random weights and data (counts never depend on them).
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

fn run(cli: Cli) -> Result<ExitCode> {
    flopnet::engine::simd::checked().map_err(Error::Usage)?;
    match cli.command {
        Command::Count(a) => {
            let spec = a.run.net.model.spec()?;
            a.pictures.check(&a.run.net.model.spec)?;
            a.time.check()?;
            let cfg = a.run.config();
            let ledger = Ledger::try_decayed(&spec, &cfg, a.run.net.weight_decay())?;
            let communication = a.run.communication(&spec, &cfg);
            if communication.is_some() && a.time.wanted() && (a.link_gbps.is_none() || a.link_latency_us.is_none()) {
                return Err(Error::Usage(
                    "count --predict --ranks P needs the link between the ranks: --link-gbps G --link-latency-us L (e.g. 100 and 2 for 100 Gbit/s InfiniBand)".into(),
                ));
            }
            // Each rank's step is that of its share of the batch, then the all-reduce.
            let local = communication.as_ref().filter(|_| a.time.wanted()).map(|c| {
                let share = |n: usize| n.div_ceil(c.ranks);
                Config { batch: share(cfg.batch), examples: share(cfg.examples), ..cfg }
            });
            let mut predictions = if a.time.wanted() {
                a.time.predict_each(&spec, &[Some(cfg), local].into_iter().flatten().collect::<Vec<_>>())?
            } else {
                Vec::new()
            };
            let scaled = match (&communication, predictions.get(1), a.link_gbps, a.link_latency_us) {
                (Some(c), Some(share), Some(g), Some(l)) => {
                    Some(flopnet::dist::traffic::predict(c, share.step_seconds, g, l))
                }
                _ => None,
            };
            predictions.truncate(1);
            let predicted = predictions.pop();
            a.pictures.draw(&spec, &ledger)?;
            if a.json {
                let extra = report::CountExtras {
                    predicted: predicted.as_ref(),
                    communication,
                    scaled: scaled.as_ref(),
                    inference: flopnet::fold::inference_cost(&spec, cfg.batch),
                };
                println!("{}", report::count_json(&ledger, &extra)?);
            } else {
                print!("{}", report::count_text(&ledger));
                if let Some(c) = flopnet::fold::inference_cost(&spec, cfg.batch) {
                    print!("\n{}", report::inference_text(&c));
                }
                if let Some(c) = communication {
                    print!("\n{}", flopnet::dist::traffic::text(&c));
                }
                if let Some(p) = &scaled {
                    print!("\n{}", flopnet::dist::traffic::prediction_text(p));
                }
                if let Some(p) = &predicted {
                    print!("\n{}", report::prediction_text(p, cfg.batch));
                }
            }
        }
        Command::Explain(a) => {
            let (spec, notes) = a.run.net.model.spec_noted()?;
            for n in notes {
                println!("note: {n}");
            }
            a.pictures.check(&a.run.net.model.spec)?;
            let cfg = a.run.config();
            let decay = a.run.net.weight_decay();
            a.pictures.draw(&spec, &Ledger::try_decayed(&spec, &cfg, decay)?)?;
            print!("{}", report::explain_decayed(&spec, &cfg, decay));
            if let Some(c) = a.run.communication(&spec, &cfg) {
                print!("\n{}", flopnet::dist::traffic::explain(&c));
            }
        }
        Command::Report(a) => {
            let spec = a.run.net.model.spec()?;
            let inputs = [a.metrics.as_deref(), Some(Path::new(&a.run.net.model.spec))];
            files::check_outputs(&[("--output", Some(&a.output))], &inputs)?;
            let cfg = a.run.config();
            let metrics = a.metrics.as_deref().map(plot::Metrics::read).transpose()?;
            plot::save_html(&a.output, &plot::report_html(&spec, &cfg, a.run.net.weight_decay(), metrics.as_ref())?)?;
            println!("wrote {}", a.output.display());
        }
        Command::Verify(a) => {
            let spec = a.net.model.spec()?;
            let (loss, opt) = (a.net.model.loss, spec::UpdateRule::new(a.net.optimizer, a.net.weight_decay()));
            let batch = match a.examples {
                Some(e) => batch_for(a.net.batch as usize, e as usize, "examples of --examples"),
                None => a.net.batch as usize,
            };
            guard::check_available(&spec, opt.optimizer, batch)?;
            let mut checks = vec![verify::step(&spec, loss, opt, batch, a.seed)];
            if let Some(e) = a.examples {
                checks.push(verify::epoch(&spec, loss, opt, batch, e as usize, a.seed));
            }
            for v in &checks {
                print!("{}", report::verify_text(v));
            }
            if !checks.iter().all(|v| v.all_match()) {
                return Ok(ExitCode::from(1));
            }
        }
        Command::Train(a) => train_command(a)?,
        Command::Calibrate(a) if a.mpi => {
            let mut comm = flopnet::dist::connect()?;
            let link = flopnet::dist::measure_link(&mut *comm)?;
            println!("{}", link.text());
        }
        Command::Calibrate(a) => {
            let threads = threads(a.threads);
            let path = a.profile.unwrap_or_else(|| predict::default_path(threads));
            predict::check_replaceable(&path)?;
            let t = std::time::Instant::now();
            let p = predict::calibrate(threads, a.quick)?;
            p.save(&path)?;
            let best = p.peak_gflops();
            let bw: Vec<String> = p
                .stream
                .iter()
                .map(|s| {
                    format!("{} {:.0} GB/s", report::format::bytes(s.bytes as u128), 12.0 / s.seconds_per_item / 1e9)
                })
                .collect();
            println!("calibrated {} with {threads} thread(s) in {:.1} s", p.machine, t.elapsed().as_secs_f64());
            println!("  kernels: {} (FMA ceiling {:.0} GFLOP/s)", p.simd, p.fma_ceiling);
            println!("  matrix products: up to {best:.1} GFLOP/s over {} shapes", p.forward.len() * 3);
            println!("  memory (y += a·x, by working set): {}", bw.join(", "));
            println!(
                "  fixed cost of a step: {}, and {} per layer",
                report::seconds(p.step_overhead),
                report::seconds(p.layer_overhead)
            );
            println!("saved {}", path.display());
        }
        // Under mpirun every rank does the same; rank 0 alone prints (connect silences the rest).
        Command::Eval(a) => {
            let _ranks = flopnet::dist::connect()?;
            eval_command(a)?
        }
        Command::Zoo => print!("{}", flopnet::zoo::table()?),
        Command::Export(a) => {
            flopnet::onnx::export(&a.model, &a.output)?;
            println!("wrote {}", a.output.display());
        }
        Command::Bench(a) => {
            let _ranks = flopnet::dist::connect()?;
            let spec = a.model.spec()?;
            spec.fast_engine_check()?;
            guard::check_available(&spec, a.optimizer, a.batch as usize)?;
            let cfg = BenchConfig {
                batch: a.batch as usize,
                steps: a.steps.unwrap_or(0),
                runs: a.runs,
                threads: threads(a.threads),
                forward_only: a.forward_only,
                loss: a.model.loss,
                optimizer: a.optimizer,
            };
            // The time model for the same step (training steps only), before the measurement:
            // a --profile that cannot be used is refused before any work.
            let predicted = if a.forward_only {
                None
            } else {
                let profile = measured_profile(a.profile.clone(), cfg.threads)?;
                let step = Config {
                    loss: cfg.loss,
                    optimizer: cfg.optimizer,
                    batch: cfg.batch,
                    examples: cfg.batch,
                    epochs: 1,
                };
                let peak = profile.peak_gflops();
                Some((predict::predict(&spec, &step, predict::Machine::Measured(&profile), cfg.threads), peak))
            };
            let r = bench::run(&spec, &cfg)?;
            if a.json {
                let mut v = serde_json::to_value(&r).map_err(|e| Error::Usage(e.to_string()))?;
                if let Some((p, peak)) = &predicted {
                    v["predicted"] = serde_json::to_value(p).map_err(|e| Error::Usage(e.to_string()))?;
                    v["peak_gflops"] = (*peak).into();
                }
                println!("{}", serde_json::to_string(&v).map_err(|e| Error::Usage(e.to_string()))?);
            } else {
                print!("{}", report::bench_text(&r, predicted.as_ref().map(|(p, k)| (p, *k))));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Progress bars on stderr while an epoch runs, one line on stdout when it ends.
struct Console {
    bar: Option<ProgressBar>,
    batch: usize,
    examples: usize,
    metrics: Option<MetricsWriter>,
    plot: Option<plot::TrainingPlot>,
    saver: Option<Saver>,
    /// Under MPI, on the ranks that keep no checkpoint: the signals they received.
    stop: Option<flopnet::dist::Signals>,
}

impl Watcher for Console {
    fn epoch_started(&mut self, epoch: usize, _batches: usize) {
        let bar = ProgressBar::new(self.examples as u64);
        let style = ProgressStyle::with_template(report::PROGRESS_TEMPLATE).map(|s| {
            s.progress_chars("=> ").with_key("rate", |p: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = w.write_str(&report::progress_rate(p.per_sec()));
            })
        });
        if let Ok(style) = style {
            bar.set_style(style);
        }
        bar.set_prefix(epoch.to_string());
        self.bar = Some(bar);
    }

    fn batch_done(&mut self, done: usize, running_loss: f64) {
        if let Some(bar) = &self.bar {
            bar.set_position((done * self.batch).min(self.examples) as u64);
            if done.is_multiple_of(16) {
                bar.set_message(format!("{running_loss:.4}"));
            }
        }
    }

    fn epoch_done(&mut self, r: &EpochReport) -> Result<()> {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        println!("{}", report::epoch_line(r));
        if let Some(p) = &mut self.plot {
            p.epoch(r)?;
        }
        match &mut self.metrics {
            Some(m) => m.epoch(r),
            None => Ok(()),
        }
    }

    fn interrupted(&mut self) -> Option<i32> {
        self.saver.as_ref().and_then(Saver::interrupted).or_else(|| self.stop.as_ref().and_then(|s| s.received()))
    }

    fn checkpoint(&mut self, engine: &Engine, at: &Position) -> Result<()> {
        if let Some(s) = &mut self.saver {
            let path = s.save(engine, at)?;
            if at.batch > 0 {
                if let Some(b) = self.bar.take() {
                    b.abandon();
                }
                println!("checkpoint: {} saved to {}", checkpoint::describe(at), path.display());
            }
        }
        Ok(())
    }
}

fn load_data(d: &DataArgs, val_split: f64, seed: u64) -> Result<data::Splits> {
    let source = DataSource::parse(d.data.as_deref());
    Ok(data::load(&source, &LoadOptions { normalize: d.normalize, val_split, seed })?)
}

/// [`train::effective_batch`], its note on stderr.
fn batch_for(batch: usize, examples: usize, what: &str) -> usize {
    let (batch, note) = train::effective_batch(batch, examples, what);
    if let Some(note) = note {
        eprintln!("flopnet: {note}");
    }
    batch
}

/// `train`, on one process or as one rank of `mpirun -n P`: there an error on any rank ends
/// the job on every rank (never a rank left waiting for the others), naming the rank.
fn train_command(a: TrainArgs) -> Result<()> {
    let mut comm = flopnet::dist::connect()?;
    comm.set_rank_timeout(std::time::Duration::try_from_secs_f64(a.rank_timeout).unwrap_or(std::time::Duration::MAX));
    let result = train_ranks(a, &mut *comm);
    if let Err(e) = &result
        && comm.size() > 1
    {
        if flopnet::dist::shared_error(e) {
            // Every rank stopped at the same step: rank 0 says why (before MPI ends: mpirun
            // ends the job once a rank exits with an error), the others end quietly.
            if comm.rank() == 0 {
                eprintln!("flopnet: {e}");
            }
            drop(comm);
            std::process::exit(e.exit_code());
        } else {
            eprintln!("flopnet: rank {} of {}: {e}", comm.rank(), comm.size());
            comm.abort(e.exit_code());
        }
    }
    result
}

fn train_ranks(a: TrainArgs, comm: &mut dyn flopnet::dist::Comm) -> Result<()> {
    let lead = comm.rank() == 0;
    let spec = a.model.spec()?;
    spec.fast_engine_check()?;
    let inputs = [a.data.data.as_deref().map(Path::new), a.init.as_deref(), Some(Path::new(&a.model.spec))];
    let outputs = [("--save", a.save.as_deref()), ("--metrics", a.metrics.as_deref()), ("--plot", a.plot.as_deref())];
    files::check_outputs(&outputs, &inputs)?;
    a.plot.as_deref().map(plot::Format::from_path).transpose()?;
    if let Some(dir) = &a.checkpoint {
        files::check_dir_output("--checkpoint", dir)?;
    }
    // The checkpoint a run writes or resumes from is never replaced by another output.
    let kept = [("--checkpoint", &a.checkpoint), ("--resume", &a.resume)];
    for (flag, dir) in kept.iter().filter_map(|(f, d)| Some((f, d.as_ref()?))) {
        files::check_apart(&outputs, &format!("{flag} {}", dir.display()), &Checkpoint::path(dir))?;
    }
    // The --init model is read and checked before the data: one that cannot be used stops
    // nothing begun. Its scaling is compared once the data's is known.
    let init_model = match a.init.as_deref() {
        Some(path) => {
            let (file_spec, params, recorded, running) = model::load_trained(path)?;
            if file_spec != spec {
                return Err(Error::Model {
                    path: path.to_path_buf(),
                    problem: format!("holds {file_spec}, not {spec}; give the spec the file was trained with"),
                });
            }
            Some((path, params, recorded, running))
        }
        None => None,
    };
    let splits = load_data(&a.data, a.val_split, a.seed)?;
    let batch = batch_for(a.batch as usize, splits.train.len(), "training examples");
    guard::check_available(&spec, a.optimizer, batch)?;
    // A network that cannot read this data is refused before anything is built or printed.
    train::check_data(&spec, &splits.train)?;
    let augment = a.augment.map(|g| g.padded_as(&splits.scaling));
    if let Some(g) = &augment {
        g.check(splits.train.shape)?;
    }
    println!("data: {}", splits.source);
    let mut hyper = Hyper::defaults(a.optimizer);
    if let Some(lr) = a.lr {
        hyper.lr = lr;
    }
    hyper.weight_decay = a.weight_decay.unwrap_or(hyper.weight_decay);
    let threads = threads(a.threads);
    let settings = Settings { loss: a.model.loss, optimizer: a.optimizer, hyper, max_batch: batch, threads };
    let cfg =
        Config { loss: a.model.loss, optimizer: a.optimizer, batch, examples: splits.train.len(), epochs: a.epochs };
    let ledger = Ledger::decayed(&spec, &cfg, hyper.weight_decay);
    print!("{}", report::account_text(&ledger));
    let mut plan = Plan {
        epochs: a.epochs,
        batch,
        seed: a.seed,
        shuffle: !a.no_shuffle,
        schedule: a.schedule,
        warmup: a.warmup,
        augment,
        predicted_epoch_seconds: None,
        sync_bn: a.sync_bn,
    };
    let mut meta = checkpoint::meta(&spec, &settings, &plan, &splits.train);
    meta.init = a.init.as_deref().map(checkpoint::Init::of).transpose()?;
    meta.normalize = Some(splits.scaling.mode().to_string());
    let resumed = a.resume.as_deref().map(|dir| Checkpoint::resume(dir, &meta, &spec)).transpose()?;
    if let Some(note) = resumed.as_ref().and_then(|(c, _)| c.threads_note(&meta)) {
        eprintln!("flopnet: {note}");
    }
    // After the checkpoint is read, so that a bad one is refused before any measuring. Under MPI
    // rank 0 alone predicts (and calibrates, when it must): the others print nothing.
    if lead {
        let profile = measured_profile(a.profile.clone(), threads)?;
        let prediction = predict::predict(&spec, &cfg, predict::Machine::Measured(&profile), threads);
        println!("kernels: {} (FMA ceiling {:.0} GFLOP/s on {threads} thread(s))", profile.simd, profile.fma_ceiling);
        match predict::withheld(&profile) {
            Some(why) => println!("{why}"),
            None => {
                println!(
                    "predicted: {} per epoch, {} for the run ({} per step)",
                    report::seconds(prediction.epoch_seconds),
                    report::seconds(prediction.run_seconds),
                    report::seconds(prediction.step_seconds)
                );
                plan.predicted_epoch_seconds = Some(prediction.epoch_seconds);
            }
        }
    }
    let finished = match (&resumed, &a.resume) {
        (Some((c, _)), Some(dir)) => checkpoint::finished(c, a.epochs, dir)?,
        _ => None,
    };
    let (params, running) = match (&resumed, init_model) {
        (Some((_, params)), _) => (params.clone(), None),
        (None, Some((path, params, recorded, running))) => {
            model::same_scaling(path, &recorded, splits.scaling.mode(), "this run")?;
            (params, Some(running))
        }
        (None, None) => (init::init(&spec, a.seed), None),
    };
    // Memory is measured from here: what the process holds now (code, data set) is the baseline
    // the ledger's estimate for the engine sits on.
    let baseline = sys::reset_peak_rss().then(sys::rss_bytes).flatten();
    let mut engine = Engine::new(&spec, &params, settings)?;
    if let Some(running) = &running {
        engine.set_running_stats(running)?;
    }
    train::check_fit(&engine, &splits.train)?;
    let start = match &resumed {
        Some((c, _)) => c.restore(&mut engine)?,
        None => Position::default(),
    };
    if resumed.is_some() {
        println!("resuming from {}", checkpoint::describe(&start));
    }
    if comm.size() > 1 {
        let mut parts = flopnet::dist::fingerprint(&meta, &start, engine.params());
        parts.push(("--sync-bn", a.sync_bn as u32));
        flopnet::dist::agree(comm, &parts)?;
        if a.sync_bn {
            flopnet::dist::check_sync_bn(batch, splits.train.len(), comm.size())?;
        }
        println!("training on {} MPI ranks, {threads} thread(s) each", comm.size());
    }
    if let Some(note) = &finished {
        println!("{note}");
    }
    let open = if resumed.is_some() { MetricsWriter::append } else { MetricsWriter::create };
    // A finished run adds nothing to its metrics file.
    let metrics = a.metrics.as_deref().filter(|_| finished.is_none() && lead).map(open).transpose()?;
    let plot = a
        .plot
        .as_deref()
        .filter(|_| lead)
        .map(|p| plot::TrainingPlot::create(p, format!("flopnet train {spec}")))
        .transpose()?;
    let saver = a
        .checkpoint
        .as_deref()
        .or(a.resume.as_deref())
        .filter(|_| lead)
        .map(|dir| Saver::new(dir, meta, resumed.as_ref().map(|_| start)))
        .transpose()?;
    let keeps = a.checkpoint.is_some() || a.resume.is_some();
    let stop = (!lead && keeps).then(flopnet::dist::Signals::register).transpose()?;
    let mut console = Console { bar: None, batch, examples: splits.train.len(), metrics, plot, saver, stop };
    let trained = train::train_on(&mut engine, &splits.train, splits.val.as_ref(), &plan, &start, &mut console, comm);
    if let Err(e) = trained {
        return Err(match &console.saver {
            Some(s) => s.annotate(e),
            None => e,
        });
    }
    if let Some(test) = &splits.test {
        let e = train::evaluate(&mut engine, test)?;
        println!("test: loss {:.4}, accuracy {:.2}% over {} examples", e.loss, 100.0 * e.acc, e.examples);
        if let Some(m) = &mut console.metrics {
            m.test(&e)?;
        }
    }
    if let Some(path) = a.save.as_ref().filter(|_| lead) {
        let recorded = model::Recorded { scaling: Some(splits.scaling), loss: Some(a.model.loss) };
        let (params, running) = (engine.export(), engine.running_stats());
        files::write_or_rescue(path, |p| model::save_trained(p, &spec, &params, &running, &recorded))?;
        println!("saved {}", path.display());
    }
    if let (Some(peak), Some(base)) = (sys::peak_rss_bytes(), baseline) {
        let expected = base + ledger.memory.peak as u64;
        let b = |n: u64| report::format::bytes(n as u128);
        println!(
            "memory: peak resident {} while training, against {} expected (resident before training {} + ledger {}): {:+.0}%",
            b(peak),
            b(expected),
            b(base),
            report::format::bytes(ledger.memory.peak),
            100.0 * (peak as f64 / expected as f64 - 1.0)
        );
    }
    Ok(())
}

fn eval_command(a: EvalArgs) -> Result<()> {
    let (spec, params, recorded, running) = model::load_trained(&a.model)?;
    let loss = a.loss.or(recorded.loss).unwrap_or(Loss::Ce);
    score::check_loss(&a.model, &spec, loss)?;
    score::check_finite(&a.model, &params)?;
    // The features as the model was trained on them: raw, then its recorded scaling.
    let scaling = model::eval_scaling(&a.model, &recorded, a.data.normalize)?;
    let normalize = if scaling.is_some() { Some(Normalize::None) } else { a.data.normalize };
    let mut splits = load_data(&DataArgs { data: a.data.data.clone(), normalize }, 0.0, 1)?;
    let data = splits.test.as_mut().unwrap_or(&mut splits.train);
    if let Some(s) = scaling {
        s.apply(&mut data.features);
    }
    let data = &*data;
    score::check_data(&a.model, &spec, data)?;
    // A batch larger than the data scores it in one batch of its size.
    let batch = match a.batch {
        Some(b) => batch_for(b, data.len(), "examples to score"),
        None => train::effective_batch(256, data.len(), "").0,
    };
    score::check_memory(&a.model, &spec, batch, sys::available_bytes())?;
    let threads = threads(a.threads);
    let settings =
        Settings { loss, optimizer: Optimizer::Sgd, hyper: Hyper::defaults(Optimizer::Sgd), max_batch: batch, threads };
    // Batch normalization folded into the convolution before it (the same function, less work).
    let stats = flopnet::fold::running_per_layer(&spec, &running)?;
    let (mut engine, _) = flopnet::fold::inference_engine(&spec, &params, &stats, settings)?;
    let c = train::confusion(&mut engine, data)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&c).map_err(|e| Error::Usage(e.to_string()))?);
    } else {
        println!("model {} ({spec}) on {}", a.model.display(), splits.source);
        print!("{}", report::confusion_text(&c));
    }
    Ok(())
}

fn main() -> ExitCode {
    // Like other command-line tools, stop quietly when the reader of our output goes away
    // (`flopnet count ... | head`) instead of panicking on the failed write.
    #[cfg(unix)]
    // SAFETY: restores the default disposition of one signal before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("flopnet: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}
