//! A network spec: the input shape and the layers that follow it.
//!
//! Two forms describe the same model. The compact form lists layers, input first:
//! `784-30-30-10`, with optional per-layer activations `784-30:tanh-30-10:softmax`, and for
//! images an input `CxHxW` followed by convolutions and pooling before the dense layers:
//! `1x28x28-conv5x5x32p2:relu-maxpool2-conv5x5x64p2:relu-maxpool2-1024-10`. The TOML form (see
//! [`from_toml`]) spells the same thing out in a file.

mod activation;
mod layer;
mod step;

pub use activation::{Activation, LEAKY_SLOPE};
pub use layer::{Conv, Kind, Layer, Padding, Pool, Shape};
pub use step::{Loss, Optimizer};

use crate::error::{Error, Result};
use serde::Deserialize;
use std::fmt;

/// A feedforward network: an input of `input_shape` (`input` values per example), then layers
/// in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spec {
    pub input: usize,
    pub input_shape: Shape,
    pub layers: Vec<Layer>,
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

/// One layer as written, before its shapes are known.
#[derive(Clone, Copy, Debug)]
struct Written {
    kind: Kind,
    units: usize,
    activation: Option<Activation>,
}

impl Spec {
    /// A network from layers already shaped (each reading what the one before writes).
    pub fn new(input_shape: Shape, layers: Vec<Layer>) -> Spec {
        Spec { input: input_shape.size(), input_shape, layers }
    }

    /// A dense network of `input` features: `Spec::dense(784, &[(30, relu), (10, softmax)])`.
    pub fn dense(input: usize, sizes: &[(usize, Activation)]) -> Spec {
        let mut n = input;
        let layers = sizes
            .iter()
            .map(|&(m, act)| {
                let l = Layer::dense(n, m, act);
                n = m;
                l
            })
            .collect();
        Spec::new(Shape::flat(input), layers)
    }

    pub fn params(&self) -> u128 {
        self.layers.iter().map(Layer::params).sum()
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

    /// True when any layer is a convolution or pooling.
    pub fn is_convolutional(&self) -> bool {
        self.layers.iter().any(|l| !l.is_dense())
    }

    /// Layers with parameters (dense and conv), in order: model files number them from 0.
    pub fn weight_layers(&self) -> impl Iterator<Item = (usize, &Layer)> {
        self.layers.iter().enumerate().filter(|(_, l)| l.params() > 0)
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

    fn from_written(text: &str, input_shape: Shape, written: &[Written], d: Defaults) -> Result<Spec> {
        let mut layers: Vec<Layer> = Vec::with_capacity(written.len());
        let mut shape = input_shape;
        for (i, w) in written.iter().enumerate() {
            let last = i + 1 == written.len();
            let pooling = matches!(w.kind, Kind::MaxPool(_) | Kind::AvgPool(_));
            let activation = match (pooling, w.activation) {
                (true, Some(a)) => {
                    return Err(Error::spec(
                        text,
                        format!("layer {} is pooling, which takes no activation (found `:{a}`)", i + 1),
                    ));
                }
                (true, None) => Activation::Identity,
                (false, Some(a)) => a,
                (false, None) if last => d.output,
                (false, None) => d.hidden,
            };
            if activation == Activation::Softmax && !last {
                return Err(Error::spec(
                    text,
                    format!("layer {} uses softmax, which is allowed on the output layer only", i + 1),
                ));
            }
            if last && !w.kind.eq(&Kind::Dense) {
                return Err(Error::spec(
                    text,
                    format!(
                        "the last layer is {}; a network ends in a dense layer of class scores, e.g. add -10",
                        w.kind.name()
                    ),
                ));
            }
            if !w.kind.eq(&Kind::Dense) {
                let why = match layers.last() {
                    None if !input_shape.is_image() => Some(format!(
                        "needs an image but the input is {} flat features; write the input as CxHxW, e.g. 1x28x28",
                        input_shape.c
                    )),
                    Some(prev) if prev.is_dense() => {
                        Some("needs an image but follows a dense layer; put convolutions and pooling before the dense layers".to_string())
                    }
                    _ => None,
                };
                if let Some(why) = why {
                    return Err(Error::spec(text, format!("layer {} ({}) {why}", i + 1, w.kind.name())));
                }
            }
            let layer = Layer::after(shape, w.kind, w.units, activation)
                .map_err(|p| Error::spec(text, format!("layer {} ({}): {p}", i + 1, w.kind.name())))?;
            shape = layer.output;
            layers.push(layer);
        }
        Ok(Spec::new(input_shape, layers))
    }
}

/// The canonical compact form, every activation written out.
impl fmt::Display for Spec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.input_shape)?;
        for l in &self.layers {
            write!(f, "-{l}")?;
        }
        Ok(())
    }
}

/// Reads a spec given on the command line: a path to a `.toml` file, or the compact form.
pub fn load(arg: &str, defaults: Defaults) -> Result<Spec> {
    let path = std::path::Path::new(arg);
    if arg.ends_with(".toml") || path.is_file() {
        let hint = "pass a .toml spec file, or a spec such as 784-30-10";
        let text = crate::files::read_text(path, crate::files::TEXT_LIMIT, "a spec file may hold", hint)?;
        return from_toml(&text, arg, defaults);
    }
    parse(arg, defaults)
}

/// Parses the compact form `784-30:tanh-30-10:softmax` or `1x28x28-conv3x3x16:relu-maxpool2-10`.
pub fn parse(text: &str, defaults: Defaults) -> Result<Spec> {
    if let Some(c) = text.trim().chars().find(|c| c.is_control()) {
        return Err(Error::spec(
            text,
            format!("it contains the control character {c:?}; a spec is one line, e.g. 784-30-10"),
        ));
    }
    let tokens: Vec<&str> = text.trim().split('-').collect();
    if tokens.len() < 2 {
        return Err(Error::spec(
            text,
            "a network needs an input size and at least one layer, joined by '-', e.g. 784-10",
        ));
    }
    let input = parse_input(text, tokens[0])?;
    let mut written = Vec::with_capacity(tokens.len() - 1);
    for (k, tok) in tokens.iter().enumerate().skip(1) {
        let (body, act) = match tok.split_once(':') {
            Some((s, a)) => (s, Some(a)),
            None => (*tok, None),
        };
        let (kind, units) = parse_layer(text, k + 1, body)?;
        let activation = match act {
            None => None,
            Some(a) => Some(a.parse::<Activation>().map_err(|e| Error::spec(text, format!("token {}: {e}", k + 1)))?),
        };
        written.push(Written { kind, units, activation });
    }
    Spec::from_written(text, input, &written, defaults)
}

/// `784` (features) or `1x28x28` (channels × height × width).
fn parse_input(text: &str, tok: &str) -> Result<Shape> {
    let parts: Vec<&str> = tok.split('x').collect();
    match parts.as_slice() {
        [n] => Ok(Shape::flat(parse_size(text, 1, n, "the input size")?)),
        [c, h, w] => {
            let d = |t: &str, what| parse_size(text, 1, t, what);
            let shape = Shape::new(d(c, "a channel count")?, d(h, "a height")?, d(w, "a width")?);
            if shape.size() > MAX_WIDTH {
                return Err(Error::spec(text, format!("the input {tok} holds more than {MAX_WIDTH} values")));
            }
            Ok(shape)
        }
        _ => Err(Error::spec(
            text,
            format!("token 1 `{tok}` is not an input; expected a size such as 784 or an image CxHxW such as 1x28x28"),
        )),
    }
}

/// A layer token without its activation: `30`, `conv5x5x32s1p2`, `conv3x3x64psame`, `maxpool2s2`.
fn parse_layer(text: &str, position: usize, tok: &str) -> Result<(Kind, usize)> {
    let bad = |why: String| Error::spec(text, format!("token {position} `{tok}`: {why}"));
    if let Some(rest) = tok.strip_prefix("conv") {
        let (dims, opts) = split_options(rest);
        let d: Vec<&str> = dims.split('x').collect();
        let [kh, kw, f] = d.as_slice() else {
            return Err(bad(
                "a convolution is written convKHxKWxF, e.g. conv5x5x32, then optional sS and pP or psame".into()
            ));
        };
        let num = |t: &str, what| parse_size(text, position, t, what);
        let (kh, kw, filters) = (num(kh, "a kernel height")?, num(kw, "a kernel width")?, num(f, "a filter count")?);
        let mut stride = 1;
        let mut padding = Padding::Fixed(0);
        for (key, value) in opts {
            match key {
                's' => stride = num(value, "a stride")?,
                'p' if value == "same" => padding = Padding::Same,
                'p' => {
                    padding = match value.parse::<usize>() {
                        Ok(p) if p <= MAX_WIDTH => Padding::Fixed(p),
                        Ok(_) => return Err(bad(format!("padding `p{value}` is larger than {MAX_WIDTH}"))),
                        Err(_) => {
                            return Err(bad(format!(
                                "padding `p{value}` is not a number or `same`; write e.g. p2 or psame"
                            )));
                        }
                    }
                }
                _ => return Err(bad(format!("unknown option `{key}{value}`; a convolution takes sS and pP"))),
            }
        }
        return Ok((Kind::Conv2d(Conv { kh, kw, filters, stride, padding }), 0));
    }
    for (name, max) in [("maxpool", true), ("avgpool", false)] {
        if let Some(rest) = tok.strip_prefix(name) {
            let (k, opts) = split_options(rest);
            let k = parse_size(text, position, k, "a window size")?;
            let mut stride = k;
            for (key, value) in opts {
                match key {
                    's' => stride = parse_size(text, position, value, "a stride")?,
                    _ => return Err(bad(format!("unknown option `{key}{value}`; pooling takes only sS"))),
                }
            }
            let p = Pool { k, stride };
            return Ok((if max { Kind::MaxPool(p) } else { Kind::AvgPool(p) }, 0));
        }
    }
    Ok((Kind::Dense, parse_size(text, position, tok, "a layer size")?))
}

/// Splits `5x5x32s2p1` into `5x5x32` and [('s', "2"), ('p', "1")].
fn split_options(s: &str) -> (&str, Vec<(char, &str)>) {
    let first = s.find(|c: char| c.is_ascii_alphabetic() && c != 'x').unwrap_or(s.len());
    let (head, mut rest) = s.split_at(first);
    let mut opts = Vec::new();
    while let Some(key) = rest.chars().next() {
        let body = &rest[key.len_utf8()..];
        // "same" is the one word-valued option; otherwise a value runs to the next letter.
        let end = if body.starts_with("same") {
            4
        } else if body.starts_with(|c: char| c.is_ascii_digit()) {
            body.find(|c: char| !c.is_ascii_digit()).unwrap_or(body.len())
        } else {
            // A word that is not `same`: keep it whole so the error can quote it.
            body.find(|c: char| c.is_ascii_digit()).unwrap_or(body.len())
        };
        opts.push((key, &body[..end]));
        rest = &body[end..];
    }
    (head, opts)
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
#[serde(untagged)]
enum TomlInput {
    Features(usize),
    Image([usize; 3]),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum TomlSize {
    Square(usize),
    Rect([usize; 2]),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum TomlPadding {
    Fixed(usize),
    Named(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlSpec {
    input: TomlInput,
    layers: Vec<TomlLayer>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TomlLayer {
    /// "dense" (the default), "conv2d", "maxpool" or "avgpool".
    kind: Option<String>,
    units: Option<usize>,
    activation: Option<String>,
    kernel: Option<TomlSize>,
    filters: Option<usize>,
    stride: Option<usize>,
    padding: Option<TomlPadding>,
    size: Option<usize>,
}

/// Parses the file form:
///
/// ```toml
/// input = [1, 28, 28]      # or a feature count: input = 784
/// [[layers]]
/// kind = "conv2d"
/// kernel = 5               # or [5, 3]
/// filters = 32
/// padding = "same"         # or a number; stride = 1 by default
/// [[layers]]
/// kind = "maxpool"
/// size = 2                 # stride defaults to the size
/// [[layers]]
/// units = 30               # kind = "dense" is the default
/// activation = "tanh"
/// [[layers]]
/// units = 10
/// activation = "softmax"
/// ```
pub fn from_toml(text: &str, name: &str, defaults: Defaults) -> Result<Spec> {
    let t: TomlSpec =
        toml::from_str(text).map_err(|e| Error::spec(name, format!("not a valid network file: {}", e.message())))?;
    let input = match t.input {
        TomlInput::Features(n) => Shape::flat(n),
        TomlInput::Image([c, h, w]) => Shape::new(c, h, w),
    };
    if input.size() == 0 || input.size() > MAX_WIDTH {
        return Err(Error::spec(name, format!("`input` must hold 1 to {MAX_WIDTH} values")));
    }
    if t.layers.is_empty() {
        return Err(Error::spec(name, "no [[layers]]; a network needs at least one layer"));
    }
    let mut written = Vec::with_capacity(t.layers.len());
    for (i, l) in t.layers.iter().enumerate() {
        let bad = |why: String| Error::spec(name, format!("layer {}: {why}", i + 1));
        let positive = |v: Option<usize>, field: &str, default: Option<usize>| match v.or(default) {
            Some(n) if (1..=MAX_WIDTH).contains(&n) => Ok(n),
            Some(n) => Err(bad(format!("{field} = {n}; expected 1 to {MAX_WIDTH}"))),
            None => Err(bad(format!("`{field}` is missing"))),
        };
        let kind_name = l.kind.as_deref().unwrap_or("dense");
        let only = |allowed: &[&str]| {
            let given = [
                ("units", l.units.is_some()),
                ("kernel", l.kernel.is_some()),
                ("filters", l.filters.is_some()),
                ("stride", l.stride.is_some()),
                ("padding", l.padding.is_some()),
                ("size", l.size.is_some()),
            ];
            match given.iter().find(|(f, set)| *set && !allowed.contains(f)) {
                Some((f, _)) => Err(bad(format!("a {kind_name} layer takes no `{f}`"))),
                None => Ok(()),
            }
        };
        let (kind, units) = match kind_name {
            "dense" => {
                only(&["units"])?;
                (Kind::Dense, positive(l.units, "units", None)?)
            }
            "conv2d" => {
                only(&["kernel", "filters", "stride", "padding"])?;
                let (kh, kw) = match l.kernel {
                    Some(TomlSize::Square(k)) => (k, k),
                    Some(TomlSize::Rect([h, w])) => (h, w),
                    None => return Err(bad("`kernel` is missing (e.g. kernel = 5)".into())),
                };
                let padding = match &l.padding {
                    None => Padding::Fixed(0),
                    Some(TomlPadding::Fixed(p)) if *p <= MAX_WIDTH => Padding::Fixed(*p),
                    Some(TomlPadding::Fixed(p)) => {
                        return Err(bad(format!("padding = {p}; expected 0 to {MAX_WIDTH}")));
                    }
                    Some(TomlPadding::Named(s)) if s == "same" => Padding::Same,
                    Some(TomlPadding::Named(s)) => {
                        return Err(bad(format!("padding = \"{s}\"; expected a number or \"same\"")));
                    }
                };
                let conv = Conv {
                    kh: positive(Some(kh), "kernel", None)?,
                    kw: positive(Some(kw), "kernel", None)?,
                    filters: positive(l.filters, "filters", None)?,
                    stride: positive(l.stride, "stride", Some(1))?,
                    padding,
                };
                (Kind::Conv2d(conv), 0)
            }
            "maxpool" | "avgpool" => {
                only(&["size", "stride"])?;
                let k = positive(l.size, "size", None)?;
                let p = Pool { k, stride: positive(l.stride, "stride", Some(k))? };
                (if kind_name == "maxpool" { Kind::MaxPool(p) } else { Kind::AvgPool(p) }, 0)
            }
            other => {
                return Err(bad(format!("kind = \"{other}\"; expected dense, conv2d, maxpool or avgpool")));
            }
        };
        let activation = match &l.activation {
            None => None,
            Some(a) => Some(a.parse::<Activation>().map_err(|e| bad(e.to_string()))?),
        };
        written.push(Written { kind, units, activation });
    }
    Spec::from_written(name, input, &written, defaults)
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
            ("4-5:t\nh-3", "control character '\\n'"),
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
    fn convolutional_forms_parse_as_written() {
        let tf = p("1x28x28-conv5x5x32p2:relu-maxpool2-conv5x5x64p2:relu-maxpool2-1024-10").unwrap();
        let shapes: Vec<String> = tf.layers.iter().map(|l| l.output.to_string()).collect();
        assert_eq!(shapes, ["32x28x28", "32x14x14", "64x14x14", "64x7x7", "1024", "10"]);
        assert_eq!(tf.layers[4].inputs, 3136);
        assert_eq!(tf.params(), 832 + 51_264 + 3_212_288 + 10_250);
        // 26 -> 13 -> 11 -> 5: pooling drops a row that does not fill a window, as PyTorch does.
        let small = p("1x28x28-conv3x3x16:relu-maxpool2-conv3x3x32:relu-maxpool2-10").unwrap();
        assert_eq!(small.layers[3].output, Shape::new(32, 5, 5));
        let cifar = p("3x32x32-conv3x3x32s1psame:relu-avgpool2-conv3x3x64s2p1:tanh-10").unwrap();
        let shapes: Vec<String> = cifar.layers.iter().map(|l| l.output.to_string()).collect();
        assert_eq!(shapes, ["32x32x32", "32x16x16", "64x8x8", "10"]);
        assert_eq!(cifar.to_string(), "3x32x32-conv3x3x32psame:relu-avgpool2-conv3x3x64s2p1:tanh-10:softmax");
        for s in [&tf, &small, &cifar] {
            assert_eq!(&p(&s.to_string()).unwrap(), s, "round trip of {s}");
        }
        assert_eq!(p("1x8x8-maxpool3s2-4").unwrap().layers[0].output, Shape::new(1, 3, 3));
        // A 4x1x1 map is still an image: convolutions and pooling may follow it.
        assert_eq!(p("1x3x3-conv3x3x4-maxpool1-conv1x1x2-10").unwrap().layers[2].output, Shape::new(2, 1, 1));
    }

    #[test]
    fn impossible_shapes_are_named() {
        let cases = [
            ("1x4x4-conv5x5x8-10", "kernel is larger than its padded input 4x4"),
            ("1x2x2-conv5x5x8p1-10", "padded input 4x4 (2x2 plus padding 1,1)"),
            ("1x28x28-conv4x4x8psame-10", "`psame` needs an odd kernel"),
            ("1x28x28-conv3x3x8s2psame-10", "stride 1"),
            ("784-conv3x3x8-10", "needs an image"),
            ("1x28x28-100-maxpool2-10", "follows a dense layer"),
            ("1x3x3-maxpool4-10", "larger than its 3x3 input"),
            ("1x28x28-maxpool2:relu-10", "takes no activation"),
            ("1x28x28-conv3x3x8", "ends in a dense layer"),
            ("1x28x28-conv3x3-10", "convKHxKWxF"),
            ("1x28x28-conv3x3x8q2-10", "unknown option `q2`"),
            ("1x28x28-conv3x3x8pfull-10", "`pfull` is not a number"),
            ("1x28-10", "not an input"),
            ("0x28x28-10", "token 1 is 0"),
        ];
        for (spec, want) in cases {
            let e = p(spec).unwrap_err().to_string();
            assert!(e.contains(want), "{spec}: got `{e}`, wanted `{want}`");
            assert!(!e.contains('\n'), "one line: {e}");
        }
    }

    #[test]
    fn toml_form_matches_compact_for_cnns() {
        let text = r#"
            input = [3, 32, 32]
            [[layers]]
            kind = "conv2d"
            kernel = 3
            filters = 32
            padding = "same"
            activation = "relu"
            [[layers]]
            kind = "avgpool"
            size = 2
            [[layers]]
            kind = "conv2d"
            kernel = [3, 3]
            filters = 64
            stride = 2
            padding = 1
            activation = "tanh"
            [[layers]]
            units = 10
        "#;
        let t = from_toml(text, "net.toml", Defaults::default()).unwrap();
        assert_eq!(t, p("3x32x32-conv3x3x32s1psame:relu-avgpool2-conv3x3x64s2p1:tanh-10").unwrap());
        let bad = from_toml(
            "input = [1, 8, 8]\n[[layers]]\nkind = \"maxpool\"\nsize = 2\nfilters = 3\n[[layers]]\nunits = 2\n",
            "x.toml",
            Defaults::default(),
        );
        assert!(bad.unwrap_err().to_string().contains("a maxpool layer takes no `filters`"));
    }

    #[test]
    fn ce_needs_softmax() {
        let s = parse("4-3:identity", Defaults::default()).unwrap();
        assert!(s.check_loss(Loss::Ce).is_err());
        assert!(s.check_loss(Loss::Mse).is_ok());
    }
}
