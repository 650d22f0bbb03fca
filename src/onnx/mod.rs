//! ONNX in and out: a network built elsewhere (PyTorch, Keras, JAX) read from its `.onnx`
//! file wherever a spec is accepted, and flopnet's own models written as ONNX files that other
//! runtimes execute.
//!
//! Reading ([`read`], [`read_model`]) decodes the protobuf model with the `tract-onnx` crate's
//! types and converts the nodes on the data's path into a [`Spec`] (see [`SUPPORTED`] for the
//! operators), shaped and counted by flopnet itself; the file's own shapes and cost estimates
//! are not used. The weights come from the file's initializers (or the external `.onnx.data`
//! beside it) when they are wanted, batch normalization's running statistics with them.
//! Writing ([`save`]) encodes a network and its parameters as a standard ONNX file: opset
//! [`OPSET`], the batch dimension dynamic, names `layers.{i}.weight` as the safetensors files.
//!
//! ```
//! # fn main() -> flopnet::Result<()> {
//! use flopnet::spec::{self, Defaults};
//! let dir = tempfile::tempdir().unwrap();
//! let path = dir.path().join("cnn.onnx");
//! let net = spec::parse("1x8x8-conv3x3x4p1:relu-maxpool2-10", Defaults::default())?;
//! flopnet::onnx::save(&path, &net, &flopnet::init::init(&net, 1), &[], &Default::default())?;
//! let back = flopnet::onnx::read(&path, &flopnet::onnx::Options::default(), Defaults::default())?;
//! assert_eq!(back.spec, net);
//! # Ok(()) }
//! ```

mod ops;
mod reader;
mod writer;

pub use ops::SUPPORTED;
pub use writer::{OPSET, save};

use crate::error::{Error, Result};
use crate::init::LayerParams;
use crate::model::Recorded;
use crate::spec::{Defaults, Shape, Spec};
use std::path::Path;

/// Batch normalization's running statistics of one layer: (mean, variance) per channel.
pub type Stats = crate::engine::LayerStats;

/// A network read from an ONNX file.
#[derive(Clone, Debug)]
pub struct Imported {
    pub spec: Spec,
    /// One per layer (empty where a layer holds none, or when the weights were not read).
    pub params: Vec<LayerParams>,
    /// One per layer: a batch normalization's running statistics, None elsewhere.
    pub stats: Vec<Stats>,
    /// What the reader noticed and the user should know (batch norm folded by the exporter,
    /// an epsilon flopnet does not use, a log-softmax counted as a softmax).
    pub notes: Vec<String>,
    /// With `--partial`: the nodes not counted, each with why.
    pub skipped: Vec<String>,
    /// What a file flopnet wrote records of its inputs' scaling and its loss.
    pub recorded: Recorded,
    /// Whether `params` holds the file's weights.
    pub has_weights: bool,
}

/// How to read a file.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// The input shape per example, for a file whose input is dynamic (`--input`).
    pub input: Option<Shape>,
    /// Count what can be counted, skipping unsupported nodes (`--partial`).
    pub partial: bool,
}

/// An error about the file at `path`. Whatever the file put into `problem` (a metadata value, a
/// name) keeps the message on one line: control characters are written as escapes.
pub(crate) fn bad(path: &Path, problem: impl Into<String>) -> Error {
    let problem: String = problem
        .into()
        .chars()
        .flat_map(|c| if c.is_control() { c.escape_default().collect::<Vec<_>>() } else { vec![c] })
        .collect();
    Error::Model { path: path.to_path_buf(), problem }
}

/// Whether a spec argument or a model path names an ONNX file.
pub fn is_onnx(arg: impl AsRef<Path>) -> bool {
    arg.as_ref().extension().is_some_and(|e| e.eq_ignore_ascii_case("onnx"))
}

/// The network of an ONNX file (its weights not read).
pub fn read(path: &Path, opts: &Options, defaults: Defaults) -> Result<Imported> {
    let file = reader::open(path)?;
    finish(&file, opts, defaults, false)
}

/// The network of an ONNX file with its weights, and what a file flopnet wrote records.
pub fn read_model(path: &Path) -> Result<Imported> {
    let file = reader::open(path)?;
    finish(&file, &Options::default(), Defaults::default(), true)
}

/// [`read`] (or with `weights`, [`read_model`]) of a file's bytes held in memory; `path` names it.
pub fn from_bytes(path: &Path, bytes: &[u8], opts: &Options, weights: bool) -> Result<Imported> {
    let file = reader::decode(path, bytes)?;
    finish(&file, opts, Defaults::default(), weights)
}

fn finish(file: &reader::File, opts: &Options, defaults: Defaults, weights: bool) -> Result<Imported> {
    let mut m = ops::convert(file, opts.input, opts.partial, defaults, weights)?;
    m.recorded = writer::recorded(file)?;
    if let Some(how) = folded(file) {
        m.notes.insert(
            0,
            format!(
                "batch normalization was folded into the convolutions by the exporter ({how}); this counts the file as it is, without it (export with do_constant_folding=False, or in training mode, to keep it)"
            ),
        );
    }
    Ok(m)
}

/// How the exporter shows that it folded batch normalization into convolutions: the legacy
/// exporter names the folded biases `onnx::Conv_*`; the new one leaves the normalization's
/// output name (`getitem`, `*batch_norm*`) on the convolution that replaced it.
fn folded(file: &reader::File) -> Option<&'static str> {
    let g = file.proto.graph.as_ref()?;
    let convs = || g.node.iter().filter(|n| n.op_type == "Conv");
    if convs().any(|n| n.input.get(2).is_some_and(|b| b.starts_with("onnx::Conv_"))) {
        return Some("its convolutions' biases are named onnx::Conv_*");
    }
    if convs().any(|n| n.output.iter().any(|o| o.starts_with("getitem") || o.contains("batch_norm"))) {
        return Some("its convolutions write the normalization's outputs");
    }
    None
}

/// The spec a command-line argument names: an ONNX file (with `input` and `partial`) or, for
/// anything else, [`crate::spec::load_with`]. Returns the notes and skipped nodes to show.
pub fn load_arg(arg: &str, defaults: Defaults, zoo: crate::zoo::Options, partial: bool) -> Result<(Spec, Vec<String>)> {
    if !is_onnx(arg) {
        if partial {
            return Err(Error::Usage(format!(
                "--partial applies to an ONNX file; `{arg}` is not one (a path ending in .onnx)"
            )));
        }
        return crate::spec::load_with(arg, defaults, zoo).map(|s| (s, Vec::new()));
    }
    if zoo.classes.is_some() {
        return Err(Error::Usage(
            "--classes chooses a zoo model's class count; an ONNX file's output layer is its own".into(),
        ));
    }
    let m = read(Path::new(arg), &Options { input: zoo.input, partial }, defaults)?;
    let mut lines = m.notes;
    if !m.skipped.is_empty() {
        lines.push(format!(
            "--partial: {} node{} not counted: {}",
            m.skipped.len(),
            if m.skipped.len() == 1 { "" } else { "s" },
            m.skipped.join("; ")
        ));
    }
    Ok((m.spec, lines))
}

/// `flopnet export MODEL -o FILE.onnx`: a safetensors model file written as ONNX.
pub fn export(model: &Path, out: &Path) -> Result<()> {
    if !is_onnx(out) {
        return Err(Error::Usage(format!("-o {} is not an .onnx path; name the file FILE.onnx", out.display())));
    }
    crate::files::check_output("-o", out, &[model])?;
    let (spec, params, recorded, running) = crate::model::load_trained(model)?;
    crate::model::save_trained(out, &spec, &params, &running, &recorded)
}
