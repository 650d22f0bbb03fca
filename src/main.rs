//! The `flopnet` command line: parses arguments, calls the library, prints.

use clap::{Args, Parser, Subcommand};
use flopnet::cost::{Config, Ledger};
use flopnet::spec::{self, Activation, Defaults, Loss, Optimizer, Spec};
use flopnet::{Error, Result, report, verify};
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
    Explain(CountArgs),
    /// Run the reference engine on a counting scalar and check the ledger against it.
    Verify(VerifyArgs),
}

/// The network and how one step is computed.
#[derive(Args)]
struct NetArgs {
    /// The network: layer sizes input first (784-30-30-10, 784-30:tanh-10:softmax) or a .toml file.
    spec: String,
    /// Activation of hidden layers that do not name one.
    #[arg(long, default_value = "relu")]
    act: Activation,
    /// Activation of the output layer when the spec does not name one [default: softmax with
    /// --loss ce, identity with --loss mse].
    #[arg(long)]
    out: Option<Activation>,
    /// The loss: ce (softmax cross-entropy) or mse.
    #[arg(long, default_value = "ce")]
    loss: Loss,
    /// The optimizer: sgd, momentum or adam.
    #[arg(long, default_value = "sgd")]
    optimizer: Optimizer,
    /// Examples per batch.
    #[arg(long, short, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    batch: u64,
}

impl NetArgs {
    fn spec(&self) -> Result<Spec> {
        let output = self.out.unwrap_or(match self.loss {
            Loss::Ce => Activation::Softmax,
            Loss::Mse => Activation::Identity,
        });
        let spec = spec::load(&self.spec, Defaults { hidden: self.act, output })?;
        spec.check_loss(self.loss)?;
        Ok(spec)
    }
}

#[derive(Args)]
struct CountArgs {
    #[command(flatten)]
    net: NetArgs,
    /// Examples in one epoch (60,000: an MNIST-sized training set).
    #[arg(long, short, default_value_t = 60_000, value_parser = clap::value_parser!(u64).range(1..))]
    examples: u64,
    /// Epochs in the run.
    #[arg(long, default_value_t = 1)]
    epochs: u64,
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct VerifyArgs {
    #[command(flatten)]
    net: NetArgs,
    /// Also run a whole epoch of this many examples and check the per-epoch totals.
    #[arg(long)]
    examples: Option<u64>,
    /// Seed for the random weights and data (counts never depend on them).
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

fn config(a: &CountArgs) -> Config {
    Config {
        loss: a.net.loss,
        optimizer: a.net.optimizer,
        batch: a.net.batch as usize,
        examples: a.examples as usize,
        epochs: a.epochs as usize,
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Count(a) => {
            let spec = a.net.spec()?;
            let ledger = Ledger::new(&spec, &config(&a));
            if a.json {
                let text = serde_json::to_string_pretty(&ledger).map_err(|e| Error::Usage(e.to_string()))?;
                println!("{text}");
            } else {
                print!("{}", report::count_text(&ledger));
            }
        }
        Command::Explain(a) => {
            let spec = a.net.spec()?;
            print!("{}", report::explain_text(&spec, &config(&a)));
        }
        Command::Verify(a) => {
            let spec = a.net.spec()?;
            let (loss, opt, batch) = (a.net.loss, a.net.optimizer, a.net.batch as usize);
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
    }
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("flopnet: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}
