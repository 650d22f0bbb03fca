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
        }
    }

    /// How many f32 values of state each parameter carries between steps.
    pub fn state_per_param(self) -> usize {
        match self {
            Optimizer::Sgd => 0,
            Optimizer::Momentum => 1,
            Optimizer::Adam => 2,
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
            _ => Err(format!("`{s}` is not an optimizer; expected sgd, momentum or adam")),
        }
    }
}
