//! A network spec: the input size and the dense layers that follow it.
//!
//! Two forms describe the same model. The compact form lists layer sizes, input first:
//! `784-30-30-10`, with optional per-layer activations `784-30:tanh-30-10:softmax`. The TOML form
//! (see [`from_toml`]) spells the same thing out in a file.

mod activation;
mod step;

pub use activation::{Activation, LEAKY_SLOPE};
pub use step::{Loss, Optimizer};

use crate::error::{Error, Result};
use serde::Deserialize;
use std::fmt;

/// One fully connected layer: `outputs` neurons, each reading all `inputs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dense {
    pub inputs: usize,
    pub outputs: usize,
    pub activation: Activation,
}

impl Dense {
    /// N x M weights plus M biases.
    pub fn params(&self) -> u128 {
        (self.inputs as u128 + 1) * self.outputs as u128
    }
}

/// A feedforward network: `input` features, then weight layers in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spec {
    pub input: usize,
    pub layers: Vec<Dense>,
}

/// Activations for layers whose spec does not name one.
#[derive(Clone, Copy, Debug)]
pub struct Defaults {
    pub hidden: Activation,
    pub output: Activation,
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults { hidden: Activation::Relu, output: Activation::Softmax }
    }
}

impl Spec {
    pub fn params(&self) -> u128 {
        self.layers.iter().map(Dense::params).sum()
    }

    pub fn outputs(&self) -> usize {
        self.layers.last().map_or(self.input, |l| l.outputs)
    }

    pub fn output_activation(&self) -> Activation {
        self.layers.last().map_or(Activation::Identity, |l| l.activation)
    }

    /// The widest layer, input included: the size workspaces are cut to.
    pub fn max_width(&self) -> usize {
        self.layers.iter().map(|l| l.outputs).fold(self.input, usize::max)
    }

    /// Checks that `loss` can be computed from this network's output.
    pub fn check_loss(&self, loss: Loss) -> Result<()> {
        if loss == Loss::Ce && self.output_activation() != Activation::Softmax {
            return Err(Error::Usage(format!(
                "--loss ce needs a softmax output layer, but {} ends in {}; use --out softmax or --loss mse",
                self,
                self.output_activation()
            )));
        }
        Ok(())
    }

    fn from_layers(text: &str, input: usize, sizes: &[(usize, Option<Activation>)], d: Defaults) -> Result<Spec> {
        let mut layers = Vec::with_capacity(sizes.len());
        let mut inputs = input;
        for (i, &(outputs, act)) in sizes.iter().enumerate() {
            let last = i + 1 == sizes.len();
            let activation = act.unwrap_or(if last { d.output } else { d.hidden });
            if activation == Activation::Softmax && !last {
                return Err(Error::spec(
                    text,
                    format!("layer {} uses softmax, which is allowed on the output layer only", i + 1),
                ));
            }
            layers.push(Dense { inputs, outputs, activation });
            inputs = outputs;
        }
        Ok(Spec { input, layers })
    }
}

/// The canonical compact form, every activation written out.
impl fmt::Display for Spec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.input)?;
        for l in &self.layers {
            write!(f, "-{}:{}", l.outputs, l.activation)?;
        }
        Ok(())
    }
}

/// Reads a spec given on the command line: a path to a `.toml` file, or the compact form.
pub fn load(arg: &str, defaults: Defaults) -> Result<Spec> {
    let path = std::path::Path::new(arg);
    if arg.ends_with(".toml") || path.is_file() {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        return from_toml(&text, arg, defaults);
    }
    parse(arg, defaults)
}

/// Parses the compact form `784-30:tanh-30-10:softmax`.
pub fn parse(text: &str, defaults: Defaults) -> Result<Spec> {
    let tokens: Vec<&str> = text.trim().split('-').collect();
    if tokens.len() < 2 {
        return Err(Error::spec(
            text,
            "a network needs an input size and at least one layer, joined by '-', e.g. 784-10",
        ));
    }
    let input = parse_size(text, 1, tokens[0], "the input size")?;
    let mut sizes = Vec::with_capacity(tokens.len() - 1);
    for (k, tok) in tokens.iter().enumerate().skip(1) {
        let (size, act) = match tok.split_once(':') {
            Some((s, a)) => (s, Some(a)),
            None => (*tok, None),
        };
        let size = parse_size(text, k + 1, size, "a layer size")?;
        let act = match act {
            None => None,
            Some(a) => Some(a.parse::<Activation>().map_err(|e| Error::spec(text, format!("token {}: {e}", k + 1)))?),
        };
        sizes.push((size, act));
    }
    Spec::from_layers(text, input, &sizes, defaults)
}

fn parse_size(text: &str, position: usize, tok: &str, what: &str) -> Result<usize> {
    if tok.is_empty() {
        return Err(Error::spec(
            text,
            format!("token {position} is empty; expected {what} such as 30 (sizes are joined by a single '-')"),
        ));
    }
    match tok.parse::<usize>() {
        Ok(0) => Err(Error::spec(text, format!("token {position} is 0; {what} must be at least 1"))),
        Ok(n) if n > MAX_WIDTH => Err(Error::spec(
            text,
            format!("token {position} `{tok}` is larger than the widest layer flopnet accepts ({MAX_WIDTH})"),
        )),
        Ok(n) => Ok(n),
        Err(_) if tok.bytes().all(|b| b.is_ascii_digit()) => Err(Error::spec(
            text,
            format!("token {position} `{tok}` is larger than the widest layer flopnet accepts ({MAX_WIDTH})"),
        )),
        Err(_) => Err(Error::spec(
            text,
            format!(
                "token {position} `{tok}` is not {what}; expected a positive integer such as 30, optionally with :activation"
            ),
        )),
    }
}

/// No layer wider than this: 2^32 neurons is far past any memory, and keeps every count finite.
pub const MAX_WIDTH: usize = 1 << 32;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlSpec {
    input: usize,
    layers: Vec<TomlLayer>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlLayer {
    units: usize,
    activation: Option<String>,
}

/// Parses the file form:
///
/// ```toml
/// input = 784
/// [[layers]]
/// units = 30
/// activation = "tanh"
/// [[layers]]
/// units = 10
/// activation = "softmax"
/// ```
pub fn from_toml(text: &str, name: &str, defaults: Defaults) -> Result<Spec> {
    let t: TomlSpec =
        toml::from_str(text).map_err(|e| Error::spec(name, format!("not a valid network file: {}", e.message())))?;
    if t.input == 0 {
        return Err(Error::spec(name, "`input` must be at least 1"));
    }
    if t.layers.is_empty() {
        return Err(Error::spec(name, "no [[layers]]; a network needs at least one layer"));
    }
    let mut sizes = Vec::with_capacity(t.layers.len());
    for (i, l) in t.layers.iter().enumerate() {
        if l.units == 0 || l.units > MAX_WIDTH {
            return Err(Error::spec(
                name,
                format!("layer {} has units = {}; expected 1 to {MAX_WIDTH}", i + 1, l.units),
            ));
        }
        let act = match &l.activation {
            None => None,
            Some(a) => Some(a.parse::<Activation>().map_err(|e| Error::spec(name, format!("layer {}: {e}", i + 1)))?),
        };
        sizes.push((l.units, act));
    }
    Spec::from_layers(name, t.input, &sizes, defaults)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Spec> {
        parse(s, Defaults::default())
    }

    #[test]
    fn compact_form_with_overrides() {
        let s = p("784-30:tanh-30-10:softmax").unwrap();
        assert_eq!(s.input, 784);
        let acts: Vec<_> = s.layers.iter().map(|l| l.activation).collect();
        assert_eq!(acts, [Activation::Tanh, Activation::Relu, Activation::Softmax]);
        assert_eq!(s.layers[1].inputs, 30);
        assert_eq!(s.to_string(), "784-30:tanh-30:relu-10:softmax");
        assert_eq!(p(&s.to_string()).unwrap(), s);
    }

    #[test]
    fn anchors() {
        assert_eq!(p("30-30-30").unwrap().params(), 1860);
        assert_eq!(p("784-800-10").unwrap().params(), 636_010);
        assert_eq!(p("1024-30-30-10").unwrap().params(), 31_990);
    }

    #[test]
    fn malformed_specs_name_the_token() {
        let cases = [
            ("784--10", "token 2 is empty"),
            ("784-x-10", "token 2 `x` is not a layer size"),
            ("784", "at least one layer"),
            ("784-0-10", "token 2 is 0"),
            ("784-30:swish-10", "`swish` is not an activation"),
            ("784-30:softmax-10", "output layer only"),
            ("784-99999999999999999999999", "larger than the widest"),
            ("-784-10", "token 1 is empty"),
            ("784-10:", "`` is not an activation"),
        ];
        for (spec, want) in cases {
            let e = p(spec).unwrap_err().to_string();
            assert!(e.contains(want), "{spec}: got `{e}`, wanted `{want}`");
            assert!(!e.contains('\n'), "one line: {e}");
        }
    }

    #[test]
    fn toml_form_matches_compact() {
        let text = "input = 784\n[[layers]]\nunits = 30\nactivation = \"tanh\"\n[[layers]]\nunits = 10\n";
        let t = from_toml(text, "net.toml", Defaults::default()).unwrap();
        assert_eq!(t, p("784-30:tanh-10").unwrap());
        let bad = from_toml("input = 784\n[[layers]]\nunit = 3\n", "x.toml", Defaults::default());
        assert!(bad.unwrap_err().to_string().contains("not a valid network file"));
    }

    #[test]
    fn ce_needs_softmax() {
        let s = parse("4-3:identity", Defaults::default()).unwrap();
        assert!(s.check_loss(Loss::Ce).is_err());
        assert!(s.check_loss(Loss::Mse).is_ok());
    }
}
