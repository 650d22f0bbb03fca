//! The activation functions a layer can apply, by name.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    Identity,
    Relu,
    /// max(z, 0.01 z): the slope below zero is [`LEAKY_SLOPE`].
    LeakyRelu,
    Sigmoid,
    Tanh,
    /// Normalises the whole output row; allowed on the output layer only.
    Softmax,
    /// min(max(z, 0), 6), MobileNet's activation (the reference engine only, for now).
    Relu6,
}

/// The slope of leaky ReLU for negative inputs.
pub const LEAKY_SLOPE: f64 = 0.01;

impl Activation {
    /// Those the fast engine runs (and calibrate times); a spec may also name [`Activation::Relu6`].
    pub const ALL: [Activation; 6] = [
        Activation::Identity,
        Activation::Relu,
        Activation::LeakyRelu,
        Activation::Sigmoid,
        Activation::Tanh,
        Activation::Softmax,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Activation::Identity => "identity",
            Activation::Relu => "relu",
            Activation::LeakyRelu => "leaky_relu",
            Activation::Sigmoid => "sigmoid",
            Activation::Tanh => "tanh",
            Activation::Softmax => "softmax",
            Activation::Relu6 => "relu6",
        }
    }
}

impl fmt::Display for Activation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Activation {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let lower = s.to_ascii_lowercase().replace('-', "_");
        Activation::ALL.into_iter().chain([Activation::Relu6]).find(|a| a.name() == lower).ok_or_else(|| {
            format!(
                "`{s}` is not an activation; expected one of identity, relu, leaky_relu, sigmoid, tanh, softmax, relu6"
            )
        })
    }
}
