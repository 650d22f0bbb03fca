//! flopnet trains small feedforward networks fast on the CPU and accounts exactly for every
//! arithmetic operation they perform.
//!
//! Data flows one way through the modules:
//!
//! - [`spec`]: a network described as `784-30-30-10`, or with convolutions and pooling as
//!   `1x28x28-conv3x3x16:relu-maxpool2-10`, residual and concatenated blocks on the same line, a
//!   TOML file of named nodes, or a [`zoo`] name (`resnet50`): a directed acyclic graph;
//! - [`layers`]: the kinds of real architectures (batch norm, joins, global pooling, dropout);
//! - [`cost`]: its analytic ledger, per layer and phase, per example, batch, epoch and run;
//! - [`reference`]: a plain-loop engine written once over a [`reference::Scalar`], run on `f64` to
//!   compute and on a counting scalar to measure;
//! - [`engine`]: the fast batched f32 engine (matrix-product kernels, both cores), for chains and
//!   graphs alike;
//! - [`data`] and [`train`]: loaders and the training loop;
//! - [`verify`]: measured == analytic, field by field;
//! - [`report`]: the text the CLI prints;
//! - [`plot`]: the pictures (charts, a diagram, an HTML report).
//!
//! ```
//! use flopnet::cost::{Config, Ledger};
//! use flopnet::spec::{self, Activation, Defaults, Loss, Optimizer};
//!
//! // The seed question's network: 30 inputs, two layers of 30.
//! let net = spec::parse("30-30-30", Defaults { hidden: Activation::Sigmoid, output: Activation::Softmax })?;
//! let cfg = Config { loss: Loss::Ce, optimizer: Optimizer::Sgd, batch: 1, examples: 1, epochs: 1 };
//! let ledger = Ledger::new(&net, &cfg);
//! assert_eq!(ledger.params, 1860);
//! assert_eq!(ledger.per_example.forward.mul, 1800);
//!
//! // ...and the proof: run it on the counting scalar.
//! let v = flopnet::verify::step(&net, Loss::Ce, Optimizer::Sgd, 1, 7);
//! assert!(v.all_match());
//!
//! // A convolution: 32 maps of 28×28, each output reading a 1×5×5 window.
//! let cnn = spec::parse("1x28x28-conv5x5x32p2:relu-maxpool2-10", Defaults::default())?;
//! assert_eq!(Ledger::new(&cnn, &cfg).layers[0].forward.mac, 32 * 28 * 28 * 25);
//! assert!(flopnet::verify::step(&cnn, Loss::Ce, Optimizer::Sgd, 2, 7).all_match());
//! # Ok::<(), flopnet::Error>(())
//! ```

pub mod bench;
pub mod checkpoint;
pub mod cost;
pub mod data;
pub mod dist;
pub mod engine;
pub mod error;
pub mod files;
pub mod fold;
pub mod guard;
pub mod init;
pub mod layers;
pub mod model;
pub mod numbers;
pub mod ops;
pub mod options;
pub mod plot;
pub mod predict;
pub mod reference;
pub mod report;
pub mod score;
pub mod spec;
pub mod sys;
pub mod train;
pub mod verify;
pub mod zoo;

pub use error::{Error, Result};

/// The README's Rust examples run as doc tests, so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
