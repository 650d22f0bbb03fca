//! What one training step does besides the layers: the loss and the optimizer.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Loss {
    /// Cross-entropy over a softmax output, averaged over the batch.
    Ce,
    /// Mean squared error against one-hot targets, averaged over every output of the batch.
    Mse,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Optimizer {
    /// w -= lr * g
    Sgd,
    /// v = mu * v + g; w -= lr * v (the heavy-ball form PyTorch uses)
    Momentum,
    /// Adam with bias correction, as in Kingma & Ba.
    Adam,
    /// Adam with decoupled weight decay (Loshchilov & Hutter), as `torch.optim.AdamW`: each
    /// step first scales every parameter by 1 − lr·λ, then takes Adam's step.
    #[serde(rename = "adamw")]
    AdamW,
}

/// What the ledger needs to know of the update: the optimizer, and whether a coupled weight
/// decay (L2, g ← g + λ·w before the optimizer, as PyTorch's `weight_decay` of SGD and Adam)
/// runs, which it does when λ > 0. AdamW's decoupled decay is part of AdamW and always runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct UpdateRule {
    pub optimizer: Optimizer,
    pub coupled_decay: bool,
}

impl UpdateRule {
    /// The rule of `optimizer` with weight decay `lambda` (0 for none).
    pub fn new(optimizer: Optimizer, lambda: f64) -> UpdateRule {
        UpdateRule { optimizer, coupled_decay: lambda > 0.0 && optimizer != Optimizer::AdamW }
    }
}

impl From<Optimizer> for UpdateRule {
    /// The optimizer without coupled weight decay.
    fn from(optimizer: Optimizer) -> UpdateRule {
        UpdateRule { optimizer, coupled_decay: false }
    }
}

impl fmt::Display for UpdateRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.optimizer.name())?;
        if self.coupled_decay { f.write_str(" with weight decay") } else { Ok(()) }
    }
}

impl Loss {
    pub fn name(self) -> &'static str {
        match self {
            Loss::Ce => "ce",
            Loss::Mse => "mse",
        }
    }
}

impl Optimizer {
    pub fn name(self) -> &'static str {
        match self {
            Optimizer::Sgd => "sgd",
            Optimizer::Momentum => "momentum",
            Optimizer::Adam => "adam",
            Optimizer::AdamW => "adamw",
        }
    }

    /// How many f32 values of state each parameter carries between steps.
    pub fn state_per_param(self) -> usize {
        match self {
            Optimizer::Sgd => 0,
            Optimizer::Momentum => 1,
            Optimizer::Adam | Optimizer::AdamW => 2,
        }
    }
}

impl fmt::Display for Loss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for Optimizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Loss {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "ce" | "cross_entropy" | "cross-entropy" => Ok(Loss::Ce),
            "mse" => Ok(Loss::Mse),
            _ => Err(format!("`{s}` is not a loss; expected ce or mse")),
        }
    }
}

impl FromStr for Optimizer {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "sgd" => Ok(Optimizer::Sgd),
            "momentum" => Ok(Optimizer::Momentum),
            "adam" => Ok(Optimizer::Adam),
            "adamw" => Ok(Optimizer::AdamW),
            _ => Err(format!("`{s}` is not an optimizer; expected sgd, momentum, adam or adamw")),
        }
    }
}
