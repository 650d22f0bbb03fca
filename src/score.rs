//! What `eval` checks before it scores a saved model. A model file is fixed: its errors speak
//! of the file and of the data or options that would fit it, never of a spec to change, and the
//! memory it needs is that of scoring (no optimizer state to shrink, no layer to narrow).

use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::init::LayerParams;
use crate::report::format::{bytes, thousands};
use crate::spec::{Loss, Optimizer, Spec};
use std::path::Path;

/// Refuses a loss the model's output cannot be scored with.
pub fn check_loss(model: &Path, spec: &Spec, loss: Loss) -> Result<()> {
    spec.check_loss(loss).map_err(|_| Error::Model {
        path: model.to_path_buf(),
        problem: format!("{spec} does not end in softmax, which --loss ce scores; score it with --loss mse"),
    })
}

/// Refuses weights that hold NaN or an infinity: their scores would mean nothing (a loss
/// clamped to a finite number, every prediction the same class).
pub fn check_finite(model: &Path, params: &[LayerParams]) -> Result<()> {
    let bad = params.iter().enumerate().find_map(|(i, p)| {
        let w = p.weight.iter().find(|v| !v.is_finite()).map(|v| (i, "weights", *v));
        w.or_else(|| p.bias.iter().find(|v| !v.is_finite()).map(|v| (i, "biases", *v)))
    });
    match bad {
        None => Ok(()),
        Some((i, what, v)) => Err(Error::Model {
            path: model.to_path_buf(),
            problem: format!(
                "layer {}'s {what} hold {v}; the run that saved it diverged, so there is nothing to score: retrain it (a smaller --lr)",
                i + 1
            ),
        }),
    }
}

/// Refuses data the model cannot read, in the model's words: the features it takes, the classes
/// it has.
pub fn check_data(model: &Path, spec: &Spec, data: &Dataset) -> Result<()> {
    let [c, h, w] = data.shape;
    let held = if c == 1 && h == 1 { format!("rows of {w} values") } else { format!("{c}x{h}x{w} images") };
    crate::train::check_data(spec, data).map_err(|_| {
        let detail = if data.classes > spec.outputs() {
            format!(
                "the data has {} classes but the model in {} ({spec}) has {} outputs; score it on data with at most {} classes",
                data.classes,
                model.display(),
                spec.outputs(),
                spec.outputs()
            )
        } else {
            format!(
                "the data holds {held} but the model in {} ({spec}) takes {}; score it on data shaped like its training data",
                model.display(),
                spec.input_shape
            )
        };
        Error::Shape { op: "data", detail }
    })
}

/// Refuses scoring at `batch` when the memory `available` cannot hold it; the message gives
/// the batch that fits, or says that the model alone does not.
pub fn check_memory(model: &Path, spec: &Spec, batch: usize, available: Option<u64>) -> Result<()> {
    let Some(avail) = available.map(u128::from) else { return Ok(()) };
    let n = crate::guard::need(spec, Optimizer::Sgd, batch);
    if n.total() <= avail {
        return Ok(());
    }
    let fits = if n.fixed + n.per_example <= avail {
        format!("--batch {} or smaller fits", (avail - n.fixed) / n.per_example.max(1))
    } else {
        "the model alone does not fit; score it on a machine with more memory".to_string()
    };
    Err(Error::Memory(format!(
        "scoring {} ({} parameters) at batch {batch} needs about {} ({} for the model, {} for the batch) but {} is available; {fits}",
        model.display(),
        thousands(spec.params()),
        bytes(n.total()),
        bytes(n.fixed),
        bytes(n.per_example * n.batch),
        bytes(avail)
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Defaults, parse};

    #[test]
    fn the_memory_message_speaks_of_scoring_a_model() {
        let s = parse("784-1000-10", Defaults::default()).unwrap();
        let n = crate::guard::need(&s, Optimizer::Sgd, 1);
        let m = check_memory(Path::new("m.st"), &s, 100, Some((n.fixed + 10 * n.per_example) as u64)).unwrap_err();
        let m = m.to_string();
        assert!(m.contains("scoring m.st") && m.contains("--batch 10 or smaller fits"), "{m}");
        assert!(!m.contains("gradient") && !m.contains("state"), "{m}");
        let m = check_memory(Path::new("m.st"), &s, 1, Some(1000)).unwrap_err().to_string();
        assert!(m.ends_with("the model alone does not fit; score it on a machine with more memory"), "{m}");
        assert!(check_memory(Path::new("m.st"), &s, 100, None).is_ok());
    }
}
