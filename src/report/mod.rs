//! Text reports: what the CLI prints, built from ledgers and results, never computing counts.

mod count;
mod explain;
pub mod format;
mod run;
mod verify;

pub use count::{CountExtras, count_json, count_text, inference_text};
pub use explain::explain_text;
pub use run::{
    PROGRESS_TEMPLATE, account_text, bench_text, confusion_text, epoch_line, prediction_text, progress_rate, seconds,
};
pub use verify::verify_text;

use crate::cost::Ledger;
use crate::spec::{Defaults, Kind, Layer};

/// What each of a ledger's layers is, with its shapes, for labels: the ledger keeps its spec in
/// the canonical compact form, every activation written out, which reads back as it was.
pub fn ledger_layers(l: &Ledger) -> Vec<Layer> {
    match crate::spec::parse(&l.spec, Defaults::default()) {
        Ok(s) if s.layers.len() == l.layers.len() => s.layers,
        _ => l
            .layers
            .iter()
            .map(|c| Layer {
                input: c.input_shape,
                output: c.output_shape,
                ..Layer::dense(c.inputs, c.outputs, c.activation)
            })
            .collect(),
    }
}

/// A layer's kind as written in a spec, without its activation: `dense`, `conv5x5x32p2`,
/// `maxpool2`.
pub fn kind_label(l: &Layer) -> String {
    match l.kind {
        Kind::Dense => "dense".to_string(),
        _ => {
            let s = l.to_string();
            s.split(':').next().unwrap_or(&s).to_string()
        }
    }
}

/// The activation column: empty for pooling, which applies none.
pub fn activation_label(l: &Layer) -> String {
    match l.kind {
        k if !k.takes_activation() => String::new(),
        _ => l.activation.to_string(),
    }
}

/// `784 → 30`, `1x28x28 → 32x28x28`.
pub fn shapes_label(l: &Layer) -> String {
    format!("{} → {}", l.input, l.output)
}
