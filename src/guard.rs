//! The resource guard: before a network is built, the ledger's memory estimate is set against the
//! memory the machine has free, and a network that cannot fit is refused with the estimate and
//! what would fit, instead of dying in the middle of an allocation.

use crate::cost::memory;
use crate::error::{Error, Result};
use crate::report::format::{bytes, thousands};
use crate::spec::{Optimizer, Shape, Spec};

/// What a run of the fast engine needs, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Need {
    /// Independent of the batch: parameters, gradients, optimizer state, and the f64 copy of the
    /// weights that initialisation (or a model file) hands the engine.
    pub fixed: u128,
    /// Per example of a batch: the activations kept for the backward pass and the workspace.
    pub per_example: u128,
    pub batch: u128,
}

impl Need {
    pub fn total(&self) -> u128 {
        self.fixed + self.per_example * self.batch
    }
}

/// Bytes per parameter outside the ledger: the f64 weights the engine is built from.
const F64_PARAMS: u128 = 8;

/// The memory a training (or benchmark, or evaluation) run of `spec` needs at batch `batch`.
pub fn need(spec: &Spec, opt: Optimizer, batch: usize) -> Need {
    let one = memory::memory(spec, opt, 1);
    Need {
        // The convolutions' scratch is per thread, not per example.
        fixed: one.parameters + one.gradients + one.optimizer_state + one.scratch + F64_PARAMS * spec.params(),
        per_example: one.activations + one.workspace,
        batch: batch as u128,
    }
}

/// Refuses a run whose estimate exceeds `available` bytes; the message gives the estimate, its
/// parts and what would fit: a smaller batch, or hidden layers narrowed until they fit.
pub fn check(spec: &Spec, opt: Optimizer, batch: usize, available: u64) -> Result<()> {
    let n = need(spec, opt, batch);
    let avail = u128::from(available);
    if n.total() <= avail {
        return Ok(());
    }
    let head = format!(
        "{spec} at batch {batch} needs about {} ({} for {} parameters with their gradients and {opt} state, {} for the batch's activations) but {} is available",
        bytes(n.total()),
        bytes(n.fixed),
        thousands(spec.params()),
        bytes(n.per_example * n.batch),
        bytes(avail)
    );
    let fits = if n.fixed + n.per_example <= avail {
        let b = (avail - n.fixed) / n.per_example.max(1);
        format!("--batch {b} or smaller fits")
    } else {
        match narrowed(spec, opt, avail, batch).or_else(|| narrowed(spec, opt, avail, 1)) {
            Some((smaller, b)) => format!(
                "the parameters alone do not fit; {smaller} ({} parameters) does at batch {b}",
                thousands(smaller.params())
            ),
            None if spec.is_convolutional() => format!(
                "even with its dense hidden layers 1 wide it needs {} at batch 1; use fewer filters, a smaller image or more pooling",
                bytes(need(&with_hidden(spec, 1), opt, 1).total())
            ),
            None => format!(
                "even its input and output layers need {} at batch 1; use fewer inputs or outputs",
                bytes(need(&with_hidden(spec, 1), opt, 1).total())
            ),
        }
    };
    Err(Error::Memory(format!("{head}; {fits}")))
}

/// The dense hidden layers whose width can be changed: every dense layer but the last, each
/// followed by another dense layer (convolutions and pooling keep their shapes).
fn hidden(spec: &Spec) -> Vec<usize> {
    (0..spec.layers.len().saturating_sub(1))
        .filter(|&i| spec.layers[i].is_dense() && spec.layers[i + 1].is_dense())
        .collect()
}

/// `spec` with every dense hidden width set to `width`.
fn with_hidden(spec: &Spec, width: usize) -> Spec {
    let mut s = spec.clone();
    for i in hidden(spec) {
        let (out, next) = (&mut s.layers[i], Shape::flat(width));
        out.outputs = width;
        out.output = next;
        let after = &mut s.layers[i + 1];
        after.inputs = width;
        after.input = next;
    }
    s
}

/// The spec with every dense hidden layer narrowed to the widest common width (at most the
/// current widest) that fits at `batch`, with that batch; `None` if there are no dense hidden
/// layers or width 1 does not fit.
fn narrowed(spec: &Spec, opt: Optimizer, avail: u128, batch: usize) -> Option<(Spec, usize)> {
    let hidden = hidden(spec);
    if hidden.is_empty() {
        return None;
    }
    let fits = |w: usize| need(&with_hidden(spec, w), opt, batch).total() <= avail;
    if !fits(1) {
        return None;
    }
    let widest = hidden.iter().map(|&i| spec.layers[i].outputs).max().unwrap_or(1);
    let (mut lo, mut hi) = (1usize, widest);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if fits(mid) { lo = mid } else { hi = mid - 1 }
    }
    Some((with_hidden(spec, lo), batch))
}

/// [`check`] against the memory this machine has free now; passes where that is unknown.
pub fn check_available(spec: &Spec, opt: Optimizer, batch: usize) -> Result<()> {
    match crate::sys::available_bytes() {
        Some(avail) => check(spec, opt, batch, avail),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Defaults, parse};

    const GIB: u64 = 1 << 30;

    #[test]
    fn the_issue_example_is_refused_with_what_fits() {
        let s = parse("100000-100000-100000", Defaults::default()).unwrap();
        let e = check(&s, Optimizer::Adam, 1024, 16 * GIB).unwrap_err();
        let m = e.to_string();
        assert!(m.starts_with("not enough memory: 100000-100000:relu-100000:softmax at batch 1024 needs about"), "{m}");
        assert!(m.contains("16.0 GiB is available") || m.contains("is available"), "{m}");
        // The narrowed network really fits, and one unit wider would not.
        let w: usize = m.split("100000-").nth(2).unwrap().split(':').next().unwrap().parse().unwrap();
        assert!(m.ends_with("does at batch 1024"), "{m}");
        assert!(need(&with_hidden(&s, w), Optimizer::Adam, 1024).total() <= u128::from(16 * GIB), "{m}");
        assert!(need(&with_hidden(&s, w + 1), Optimizer::Adam, 1024).total() > u128::from(16 * GIB), "{m}");
        assert!(e.exit_code() == 2);
    }

    #[test]
    fn a_batch_too_big_gets_the_batch_that_fits() {
        let s = parse("784-1000-10", Defaults::default()).unwrap();
        let n = need(&s, Optimizer::Sgd, 1);
        let avail = (n.fixed + 100 * n.per_example + 7) as u64;
        assert!(check(&s, Optimizer::Sgd, 100, avail).is_ok());
        let m = check(&s, Optimizer::Sgd, 101, avail).unwrap_err().to_string();
        assert!(m.contains("--batch 100 or smaller fits"), "{m}");
    }

    #[test]
    fn no_hidden_layer_to_narrow() {
        let s = parse("100000-100000", Defaults::default()).unwrap();
        let m = check(&s, Optimizer::Sgd, 1, GIB).unwrap_err().to_string();
        assert!(m.contains("use fewer inputs or outputs"), "{m}");
    }

    #[test]
    fn estimate_matches_the_ledger_plus_the_f64_weights() {
        let s = parse("784-128-64-10", Defaults::default()).unwrap();
        let n = need(&s, Optimizer::Adam, 32);
        assert_eq!(n.total(), memory::memory(&s, Optimizer::Adam, 32).peak + 8 * s.params());
    }

    #[test]
    fn a_cnn_narrows_only_its_dense_hidden_layers() {
        let s = parse("1x28x28-conv5x5x32p2:relu-maxpool2-100000-10", Defaults::default()).unwrap();
        let n = need(&s, Optimizer::Sgd, 1);
        let m = check(&s, Optimizer::Sgd, 1, (n.total() / 2) as u64).unwrap_err().to_string();
        assert!(m.contains("1x28x28-conv5x5x32p2:relu-maxpool2-"), "{m}");
        let w: usize = m.rsplit("maxpool2-").next().unwrap().split(':').next().unwrap().parse().unwrap();
        assert!(w < 100_000 && w > 1, "{m}");
        let narrowed = with_hidden(&s, w);
        assert_eq!(narrowed.layers[2].input, s.layers[2].input, "the conv part keeps its shapes");
        assert_eq!(narrowed.layers[3].inputs, w);
        // Nothing dense to narrow: the message says what to shrink instead.
        let c = parse("3x256x256-conv3x3x512p1:relu-10", Defaults::default()).unwrap();
        let m = check(&c, Optimizer::Sgd, 1, 1 << 20).unwrap_err().to_string();
        assert!(m.contains("fewer filters"), "{m}");
    }
}
