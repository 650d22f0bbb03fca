//! A network spec: the input shape and the layers that follow it, as a graph.
//!
//! Two forms describe the same model. The compact form lists layers, input first:
//! `784-30-30-10`, with optional per-layer activations `784-30:tanh-30-10:softmax`, and for
//! images an input `CxHxW` followed by convolutions and pooling before the dense layers:
//! `1x28x28-conv5x5x32p2:relu-maxpool2-conv5x5x64p2:relu-maxpool2-1024-10`. The TOML form (see
//! [`from_toml`]) spells the same thing out in a file, and names nodes to build any graph.
//!
//! Blocks fit on the line too (see [`parse`]): `[...]` adds a block's output to its input (a
//! residual block), `(...)` concatenates them along the channels, and `|` separates parallel
//! branches. A CIFAR ResNet's stage change:
//!
//! ```
//! use flopnet::spec::{self, Defaults};
//! let s = "3x32x32-conv3x3x16p1b0-bn:relu\
//!          -[conv3x3x16p1b0-bn:relu-conv3x3x16p1b0-bn]:relu\
//!          -[conv3x3x32s2p1b0-bn:relu-conv3x3x32p1b0-bn|pad]:relu-gap-10";
//! let net = spec::parse(&s.replace(' ', ""), Defaults::default())?;
//! assert_eq!(net.layers.last().unwrap().input.c, 32);
//! // The first block's join adds two inputs; the second pads its shortcut with zero channels.
//! assert_eq!(net.layers.iter().filter(|l| l.kind == spec::Kind::Add(2)).count(), 2);
//! assert!(!net.is_chain());
//! # Ok::<(), flopnet::Error>(())
//! ```

mod activation;
mod graph;
mod layer;
mod step;
mod write;

pub use activation::{Activation, LEAKY_SLOPE};
pub use graph::Source;
pub(crate) use layer::gcd;
pub use layer::{Conv, Kind, Layer, Padding, Pool, Rate, Shape};
pub use step::{Loss, Optimizer};

use crate::error::{Error, Result};
use graph::{Builder, Listed};
use serde::Deserialize;
use std::fmt;

/// A network: an input of `input_shape` (`input` values per example), then layers in an order
/// where each comes after what it reads (`sources`); the last is the output. A chain's layer
/// reads the one before it.
#[derive(Clone, Debug)]
pub struct Spec {
    pub input: usize,
    pub input_shape: Shape,
    pub layers: Vec<Layer>,
    /// What each layer reads.
    pub sources: Vec<Vec<Source>>,
    /// Each layer's name: its position from 1 unless a file or the zoo named it.
    pub names: Vec<String>,
    /// How a graph that is not a chain was given (its line, file or zoo name), for display.
    pub label: Option<String>,
}

/// Two specs are the same network when their layers and connections are (names aside).
impl PartialEq for Spec {
    fn eq(&self, o: &Spec) -> bool {
        self.input_shape == o.input_shape && self.layers == o.layers && self.sources == o.sources
    }
}

impl Eq for Spec {}

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
    /// A chain of layers already shaped (each reading what the one before writes).
    pub fn new(input_shape: Shape, layers: Vec<Layer>) -> Spec {
        let n = layers.len();
        Spec {
            input: input_shape.size(),
            input_shape,
            layers,
            sources: (0..n).map(|i| vec![if i == 0 { Source::Input } else { Source::Node(i - 1) }]).collect(),
            names: (1..=n).map(|i| i.to_string()).collect(),
            label: None,
        }
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

    /// True when each layer reads only the one before it (the first, the input).
    pub fn is_chain(&self) -> bool {
        self.sources
            .iter()
            .enumerate()
            .all(|(i, s)| s.len() == 1 && s[0] == if i == 0 { Source::Input } else { Source::Node(i - 1) })
    }

    /// True when layer `l` reads only the data: nothing needs the gradient of its input.
    pub fn reads_data(&self, l: usize) -> bool {
        self.sources[l].iter().all(|s| *s == Source::Input)
    }

    /// How many times layer `l`'s output is read (each read hands a gradient back).
    pub fn consumers(&self, l: usize) -> usize {
        self.sources.iter().flatten().filter(|s| **s == Source::Node(l)).count()
    }

    /// The shape a source holds per example.
    pub fn shape_of(&self, s: Source) -> Shape {
        match s {
            Source::Input => self.input_shape,
            Source::Node(i) => self.layers[i].output,
        }
    }

    /// The name of what a source is: `input` or the layer's name.
    pub fn source_name(&self, s: Source) -> &str {
        match s {
            Source::Input => "input",
            Source::Node(i) => &self.names[i],
        }
    }

    /// Refuses what the fast engine (train, eval, bench) does not run: softmax after a layer that
    /// does not keep its output as rows (the parser allows it on the output layer only).
    pub fn fast_engine_check(&self) -> Result<()> {
        let why = if let Some(l) = self.layers.iter().find(|l| !l.kind.fast_engine_runs()) {
            Some(format!("{} layers", l.kind.name()))
        } else {
            // Softmax normalizes a row; the engine keeps rows for dense layers and global pooling.
            self.layers
                .iter()
                .find(|l| l.activation == Activation::Softmax && !matches!(l.kind, Kind::Dense | Kind::GlobalAvgPool))
                .map(|l| {
                    format!("softmax after a {} layer (only after dense layers and global pooling)", l.kind.name())
                })
        };
        match why {
            Some(what) => Err(Error::Usage(format!(
                "the fast engine does not run {what} yet ({self}); count, explain and verify take it, train, eval and bench do not"
            ))),
            None => Ok(()),
        }
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
}

/// The canonical compact form of a chain, every activation written out; a graph shows how it
/// was given.
impl fmt::Display for Spec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.label {
            Some(label) if !self.is_chain() => f.write_str(label),
            None if !self.is_chain() => write!(f, "a graph of {} layers on {}", self.layers.len(), self.input_shape),
            _ => {
                write!(f, "{}", self.input_shape)?;
                for l in &self.layers {
                    write!(f, "-{l}")?;
                }
                Ok(())
            }
        }
    }
}

/// Reads a spec given on the command line. The order, so that nothing shadows a spec:
/// 1. a name ending in `.toml`, or holding a `/`, is a file;
/// 2. a model zoo name (`resnet50`, see [`crate::zoo`]) is that model;
/// 3. anything the compact form parses is that network (a file named `784-10` in the working
///    directory does not change what `784-10` means; write `./784-10` for the file);
/// 4. otherwise an existing file is read as TOML, and failing that the compact form's error
///    says what is wrong.
pub fn load(arg: &str, defaults: Defaults) -> Result<Spec> {
    load_with(arg, defaults, crate::zoo::Options::default())
}

/// [`load`], with the input and class count a zoo model is built for.
pub fn load_with(arg: &str, defaults: Defaults, zoo: crate::zoo::Options) -> Result<Spec> {
    let path = std::path::Path::new(arg);
    let read = || -> Result<Spec> {
        let hint = "pass a .toml spec file, or a spec such as 784-30-10";
        let text = crate::files::read_text(path, crate::files::TEXT_LIMIT, "a spec file may hold", hint)?;
        from_toml(&text, arg, defaults)
    };
    if arg.ends_with(".toml") || arg.contains(std::path::MAIN_SEPARATOR) || arg.contains('/') {
        return read();
    }
    if let Some(spec) = crate::zoo::build_with(arg, zoo, defaults)? {
        return Ok(spec);
    }
    if !zoo.is_default() {
        return Err(Error::Usage(format!(
            "--input and --classes choose the shape of a zoo model, and `{arg}` is not one; write the input and the last layer in the spec itself"
        )));
    }
    match parse(arg, defaults) {
        Ok(spec) => Ok(spec),
        Err(e) if path.is_file() => read().map_err(|_| e),
        Err(e) => Err(e),
    }
}

/// Parses the compact form: `784-30:tanh-30-10:softmax`, `1x28x28-conv3x3x16:relu-maxpool2-10`.
///
/// Layer tokens: a size (dense), `convKHxKWxF` with options `sS` (stride), `pP` or `psame`
/// (padding), `gG` (groups; `g` = channels is depthwise) and `b0` (no bias), `maxpoolK`,
/// `avgpoolK` (option `sS`), `bn` (batch normalization), `gap` (global average pooling),
/// `adaptavgHxW` (average pooling to H×W), `dropP` (dropout at rate P, e.g. `drop0.5`) and
/// `zpadCsS` (keep every S-th row and column, pad with zero channels up to C). Any of them may
/// be followed by `:activation` where the kind takes one.
///
/// Blocks: `[A|B|...]` runs the branches on the same input and adds their outputs, `(A|B|...)`
/// concatenates them along the channels; an empty branch is the input itself, and a block of
/// one branch has an empty one beside it: `[A]` is a residual block (output A(x) + x), `(A)` a
/// DenseNet layer (x followed by A(x)). In a sum, the branch `proj` is a 1×1 convolution without
/// bias and a batch normalization, and `pad` a [`Kind::ZeroPad`], each sized to the other
/// branches' output. `]:relu` puts an activation after the join. Blocks nest.
///
/// A convolution or dense layer followed by `bn` takes no activation unless one is written (it
/// goes after the normalization: `conv3x3x16p1b0-bn:relu`); new kinds take none by default.
pub fn parse(text: &str, defaults: Defaults) -> Result<Spec> {
    if let Some(c) = text.trim().chars().find(|c| c.is_control()) {
        return Err(Error::spec(
            text,
            format!("it contains the control character {c:?}; a spec is one line, e.g. 784-30-10"),
        ));
    }
    let tokens = split_top(text, text.trim(), '-')?;
    if tokens.len() < 2 {
        return Err(Error::spec(
            text,
            "a network needs an input size and at least one layer, joined by '-', e.g. 784-10",
        ));
    }
    let input = parse_input(text, tokens[0])?;
    let mut b = Builder::new(text, input);
    let mut at = Source::Input;
    for (k, tok) in tokens.iter().enumerate().skip(1) {
        at = parse_item(&mut b, text, k + 1, tok, at)?;
    }
    let label = text.contains(['[', '(']).then(|| text.trim().to_string());
    b.finish(defaults, label)
}

/// Splits at `sep` outside brackets, checking that brackets pair up.
fn split_top<'t>(text: &str, s: &'t str, sep: char) -> Result<Vec<&'t str>> {
    let mut depth: Vec<char> = Vec::new();
    let mut parts = Vec::new();
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '[' | '(' => depth.push(c),
            ']' | ')' => {
                let open = if c == ']' { '[' } else { '(' };
                if depth.pop() != Some(open) {
                    return Err(Error::spec(text, format!("`{c}` closes no `{open}`; brackets must pair up")));
                }
            }
            c if c == sep && depth.is_empty() => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if let Some(open) = depth.last() {
        return Err(Error::spec(text, format!("a `{open}` is never closed; close each block")));
    }
    parts.push(&s[start..]);
    Ok(parts)
}

/// One item of a chain reading `at`: a layer token or a block. Returns what it outputs.
fn parse_item(b: &mut Builder, text: &str, position: usize, tok: &str, at: Source) -> Result<Source> {
    let Some(open) = tok.chars().next().filter(|c| matches!(c, '[' | '(')) else {
        let (body, act) = match tok.split_once(':') {
            Some((s, a)) => (s, Some(a)),
            None => (tok, None),
        };
        let (kind, units) = parse_layer(text, position, body)?;
        let activation = match act {
            None => None,
            Some(a) => Some(a.parse::<Activation>().map_err(|e| Error::spec(text, format!("token {position}: {e}")))?),
        };
        return b.push(None, kind, units, activation, vec![at]);
    };
    let close = if open == '[' { ']' } else { ')' };
    // The block runs to its matching bracket; what follows may only be an activation.
    let mut depth = 0;
    let end = tok
        .char_indices()
        .find(|&(_, c)| {
            depth += match c {
                '[' | '(' => 1,
                ']' | ')' => -1,
                _ => 0,
            };
            depth == 0
        })
        .map(|(i, _)| i)
        .ok_or_else(|| Error::spec(text, format!("token {position}: a `{open}` is never closed")))?;
    let (inner, rest) = (&tok[1..end], &tok[end + 1..]);
    let activation = match rest {
        "" => None,
        r => match r.strip_prefix(':') {
            Some(a) => Some(a.parse::<Activation>().map_err(|e| Error::spec(text, format!("token {position}: {e}")))?),
            None => {
                return Err(Error::spec(
                    text,
                    format!(
                        "token {position}: `{r}` follows the block's `{close}`; only an activation may, e.g. {close}:relu"
                    ),
                ));
            }
        },
    };
    let mut branches = split_top(text, inner, '|')?;
    if branches.len() == 1 {
        // One branch: the block's input is the other (first, for a concatenation).
        if open == '[' { branches.push("") } else { branches.insert(0, "") }
    }
    let mut outs: Vec<Option<Source>> = Vec::with_capacity(branches.len());
    for br in &branches {
        outs.push(match *br {
            "" => Some(at),
            "proj" | "pad" if open == '[' => None,
            br => {
                let mut cur = at;
                for t in split_top(text, br, '-')? {
                    cur = parse_item(b, text, position, t, cur)?;
                }
                Some(cur)
            }
        });
    }
    let target = outs.iter().flatten().map(|s| b.shape(*s)).find(|s| *s != b.shape(at)).unwrap_or(b.shape(at));
    for (br, out) in branches.iter().zip(outs.iter_mut()) {
        if out.is_none() {
            *out = Some(shortcut(b, text, position, br, at, target)?);
        }
    }
    let reads: Vec<Source> = outs.into_iter().flatten().collect();
    let kind = if open == '[' { Kind::Add(reads.len()) } else { Kind::Concat };
    b.push(None, kind, 0, activation, reads)
}

/// The `proj` or `pad` branch of a sum: from `at` to `target` with a strided 1×1 convolution
/// and batch normalization, or by subsampling and zero channels.
fn shortcut(b: &mut Builder, text: &str, position: usize, which: &str, at: Source, target: Shape) -> Result<Source> {
    let from = b.shape(at);
    let fits = |s: usize, out: usize, n: usize| (n - 1) / s + 1 == out && n.div_ceil(s) == out;
    let stride = (1..=from.h.max(from.w)).find(|&s| fits(s, target.h, from.h) && fits(s, target.w, from.w));
    let Some(stride) = stride else {
        return Err(Error::spec(
            text,
            format!(
                "token {position}: no stride takes the shortcut from {from} to {target}; write the shortcut branch out"
            ),
        ));
    };
    if which == "pad" {
        return b.push(None, Kind::ZeroPad { channels: target.c, stride }, 0, None, vec![at]);
    }
    let conv = Conv { kh: 1, kw: 1, filters: target.c, stride, padding: Padding::Fixed(0), groups: 1, bias: false };
    let c = b.push(None, Kind::Conv2d(conv), 0, Some(Activation::Identity), vec![at])?;
    b.push(None, Kind::BatchNorm, 0, None, vec![c])
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

/// A layer token without its activation: `30`, `conv5x5x32s1p2`, `conv3x3x64psameg64b0`,
/// `maxpool2s2`, `bn`, `gap`, `adaptavg6x6`, `drop0.5`, `zpad32s2`.
fn parse_layer(text: &str, position: usize, tok: &str) -> Result<(Kind, usize)> {
    let bad = |why: String| Error::spec(text, format!("token {position} `{tok}`: {why}"));
    let num = |t: &str, what| parse_size(text, position, t, what);
    match tok {
        "bn" => return Ok((Kind::BatchNorm, 0)),
        "gap" => return Ok((Kind::GlobalAvgPool, 0)),
        _ => {}
    }
    if let Some(rest) = tok.strip_prefix("adaptavg") {
        let (h, w) = rest.split_once('x').unwrap_or((rest, rest));
        return Ok((Kind::AdaptiveAvgPool(num(h, "an output height")?, num(w, "an output width")?), 0));
    }
    if let Some(rest) = tok.strip_prefix("drop") {
        let rate = rest.parse::<f64>().ok().and_then(Rate::new);
        return match rate {
            Some(r) => Ok((Kind::Dropout(r), 0)),
            None => Err(bad("a dropout rate is a number from 0 up to (not including) 1, e.g. drop0.5".into())),
        };
    }
    if let Some(rest) = tok.strip_prefix("zpad") {
        let (c, opts) = split_options(rest);
        let mut stride = 1;
        for (key, value) in opts {
            match key {
                's' => stride = num(value, "a stride")?,
                _ => return Err(bad(format!("unknown option `{key}{value}`; zpadC takes only sS"))),
            }
        }
        return Ok((Kind::ZeroPad { channels: num(c, "a channel count")?, stride }, 0));
    }
    if let Some(rest) = tok.strip_prefix("conv") {
        let (dims, opts) = split_options(rest);
        let d: Vec<&str> = dims.split('x').collect();
        let [kh, kw, f] = d.as_slice() else {
            return Err(bad(
                "a convolution is written convKHxKWxF, e.g. conv5x5x32, then optional sS and pP or psame".into()
            ));
        };
        let (kh, kw, filters) = (num(kh, "a kernel height")?, num(kw, "a kernel width")?, num(f, "a filter count")?);
        let mut conv = Conv::plain(kh, kw, filters, 1, Padding::Fixed(0));
        for (key, value) in opts {
            match key {
                's' => conv.stride = num(value, "a stride")?,
                'g' => conv.groups = num(value, "a group count")?,
                'b' if value == "0" || value == "1" => conv.bias = value == "1",
                'b' => return Err(bad(format!("`b{value}`: write b0 for a convolution without a bias"))),
                'p' if value == "same" => conv.padding = Padding::Same,
                'p' => {
                    conv.padding = match value.parse::<usize>() {
                        Ok(p) if p <= MAX_WIDTH => Padding::Fixed(p),
                        Ok(_) => return Err(bad(format!("padding `p{value}` is larger than {MAX_WIDTH}"))),
                        Err(_) => {
                            return Err(bad(format!(
                                "padding `p{value}` is not a number or `same`; write e.g. p2 or psame"
                            )));
                        }
                    }
                }
                _ => {
                    return Err(bad(format!("unknown option `{key}{value}`; a convolution takes sS, pP, gG and b0")));
                }
            }
        }
        return Ok((Kind::Conv2d(conv), 0));
    }
    for (name, max) in [("maxpool", true), ("avgpool", false)] {
        if let Some(rest) = tok.strip_prefix(name) {
            let (k, opts) = split_options(rest);
            let k = parse_size(text, position, k, "a window size")?;
            let mut p = Pool::new(k, k);
            for (key, value) in opts {
                match key {
                    's' => p.stride = parse_size(text, position, value, "a stride")?,
                    'p' if max => {
                        p.pad = value.parse().map_err(|_| bad(format!("padding `p{value}` is not a number")))?
                    }
                    'c' if max && value.is_empty() => p.ceil = true,
                    _ if max => {
                        return Err(bad(format!(
                            "unknown option `{key}{value}`; max pooling takes sS, pP and c (ceil mode)"
                        )));
                    }
                    _ => return Err(bad(format!("unknown option `{key}{value}`; pooling takes only sS"))),
                }
            }
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
#[serde(deny_unknown_fields)]
struct TomlSpec {
    input: toml::Value,
    layers: Vec<TomlLayer>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TomlLayer {
    /// Names the node for other nodes' `inputs`.
    name: Option<String>,
    /// What it reads, by name (`input` for the network's input); default: the node before it.
    inputs: Option<Vec<String>>,
    /// "dense" (the default), "conv2d", "maxpool", "avgpool", "batchnorm", "add", "concat",
    /// "global_avgpool", "adaptive_avgpool", "dropout" or "zeropad".
    kind: Option<String>,
    units: Option<usize>,
    activation: Option<String>,
    kernel: Option<toml::Value>,
    filters: Option<usize>,
    stride: Option<usize>,
    padding: Option<toml::Value>,
    groups: Option<usize>,
    bias: Option<bool>,
    /// A pooling window (maxpool, avgpool) or an output size (adaptive_avgpool).
    size: Option<toml::Value>,
    rate: Option<f64>,
    channels: Option<usize>,
    /// A max pool's ceil mode (PyTorch's `ceil_mode`).
    ceil: Option<bool>,
}

/// `n` or `[a, b]` (a kernel or an output size), with a message naming the field otherwise.
fn toml_pair(v: &toml::Value, field: &str) -> std::result::Result<(i64, i64), String> {
    match v {
        toml::Value::Integer(n) => Ok((*n, *n)),
        toml::Value::Array(a) => match a.as_slice() {
            [toml::Value::Integer(h), toml::Value::Integer(w)] => Ok((*h, *w)),
            _ => Err(format!("`{field}` = {v}; expected a number or two, e.g. {field} = 3 or [3, 5]")),
        },
        _ => Err(format!("`{field}` = {v}; expected a number or two, e.g. {field} = 3 or [3, 5]")),
    }
}

/// Parses the file form:
///
/// ```toml
/// input = [1, 28, 28]      # or a feature count: input = 784
/// [[layers]]
/// kind = "conv2d"
/// kernel = 5               # or [5, 3]
/// filters = 32
/// padding = "same"         # or a number; stride = 1, groups = 1, bias = true by default
/// [[layers]]
/// kind = "maxpool"
/// size = 2                 # stride defaults to the size; a max pool also takes padding and ceil
/// [[layers]]
/// units = 30               # kind = "dense" is the default
/// activation = "tanh"
/// [[layers]]
/// units = 10
/// activation = "softmax"
/// ```
///
/// A node reads the node listed before it (the first, the input) unless it names its
/// `inputs`; named with `name`, nodes build any acyclic graph, listed in any order. The last
/// node nothing reads is the output. A residual block:
///
/// ```toml
/// input = [16, 8, 8]
/// [[layers]]
/// name = "a"
/// kind = "conv2d"
/// kernel = 3
/// filters = 16
/// padding = 1
/// bias = false
/// [[layers]]
/// kind = "batchnorm"
/// [[layers]]
/// name = "sum"
/// kind = "add"
/// inputs = ["input", "2"]  # unnamed nodes answer to their position
/// activation = "relu"
/// [[layers]]
/// kind = "global_avgpool"
/// [[layers]]
/// units = 10
/// ```
pub fn from_toml(text: &str, name: &str, defaults: Defaults) -> Result<Spec> {
    let t: TomlSpec =
        toml::from_str(text).map_err(|e| Error::spec(name, format!("not a valid network file: {}", e.message())))?;
    let dims = |v: &toml::Value| -> Option<Vec<usize>> {
        match v {
            toml::Value::Integer(n) => Some(vec![usize::try_from(*n).ok()?]),
            toml::Value::Array(a) => a.iter().map(|x| x.as_integer().and_then(|n| usize::try_from(n).ok())).collect(),
            _ => None,
        }
    };
    let input = match dims(&t.input).as_deref() {
        Some([n]) => Shape::flat(*n),
        Some([c, h, w]) => Shape::new(*c, *h, *w),
        _ => {
            return Err(Error::spec(
                name,
                format!(
                    "`input` = {}; expected a feature count (input = 784) or [channels, height, width] (input = [1, 28, 28])",
                    t.input
                ),
            ));
        }
    };
    if input.size() == 0 || input.size() > MAX_WIDTH {
        return Err(Error::spec(name, format!("`input` must hold 1 to {MAX_WIDTH} values")));
    }
    if t.layers.is_empty() {
        return Err(Error::spec(name, "no [[layers]]; a network needs at least one layer"));
    }
    let mut listed = Vec::with_capacity(t.layers.len());
    for (i, l) in t.layers.iter().enumerate() {
        let bad = |why: String| Error::spec(name, format!("layer {}: {why}", i + 1));
        let positive = |v: Option<usize>, field: &str, default: Option<usize>| match v.or(default) {
            Some(n) if (1..=MAX_WIDTH).contains(&n) => Ok(n),
            Some(n) => Err(bad(format!("{field} = {n}; expected 1 to {MAX_WIDTH}"))),
            None => Err(bad(format!("`{field}` is missing"))),
        };
        let pair = |v: &toml::Value, field: &str| -> Result<(usize, usize)> {
            let (h, w) = toml_pair(v, field).map_err(&bad)?;
            let one = |n: i64| usize::try_from(n).ok().filter(|n| (1..=MAX_WIDTH).contains(n));
            match (one(h), one(w)) {
                (Some(h), Some(w)) => Ok((h, w)),
                _ => Err(bad(format!("{field} = {v}; expected 1 to {MAX_WIDTH}"))),
            }
        };
        let kind_name = l.kind.as_deref().unwrap_or("dense");
        let only = |allowed: &[&str]| {
            let given = [
                ("units", l.units.is_some()),
                ("kernel", l.kernel.is_some()),
                ("filters", l.filters.is_some()),
                ("stride", l.stride.is_some()),
                ("padding", l.padding.is_some()),
                ("groups", l.groups.is_some()),
                ("bias", l.bias.is_some()),
                ("size", l.size.is_some()),
                ("rate", l.rate.is_some()),
                ("channels", l.channels.is_some()),
                ("ceil", l.ceil.is_some()),
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
                only(&["kernel", "filters", "stride", "padding", "groups", "bias"])?;
                let (kh, kw) = match &l.kernel {
                    Some(k) => pair(k, "kernel")?,
                    None => return Err(bad("`kernel` is missing (e.g. kernel = 5)".into())),
                };
                let padding = match &l.padding {
                    None => Padding::Fixed(0),
                    Some(toml::Value::Integer(p)) => match usize::try_from(*p) {
                        Ok(p) if p <= MAX_WIDTH => Padding::Fixed(p),
                        _ => return Err(bad(format!("padding = {p}; expected 0 to {MAX_WIDTH}"))),
                    },
                    Some(toml::Value::String(s)) if s == "same" => Padding::Same,
                    Some(other) => return Err(bad(format!("padding = {other}; expected a number or \"same\""))),
                };
                let conv = Conv {
                    kh,
                    kw,
                    filters: positive(l.filters, "filters", None)?,
                    stride: positive(l.stride, "stride", Some(1))?,
                    padding,
                    groups: positive(l.groups, "groups", Some(1))?,
                    bias: l.bias.unwrap_or(true),
                };
                (Kind::Conv2d(conv), 0)
            }
            "maxpool" | "avgpool" => {
                only(if kind_name == "maxpool" {
                    &["size", "stride", "padding", "ceil"]
                } else {
                    &["size", "stride"]
                })?;
                let k = match &l.size {
                    Some(toml::Value::Integer(k)) => positive(usize::try_from(*k).ok(), "size", None)?,
                    Some(other) => return Err(bad(format!("size = {other}; expected one number, e.g. size = 2"))),
                    None => positive(None, "size", None)?,
                };
                let pad = match &l.padding {
                    None => 0,
                    Some(toml::Value::Integer(p)) if (0..=k as i64 / 2).contains(p) => *p as usize,
                    Some(other) => {
                        return Err(bad(format!("padding = {other}; a max pool pads 0 to half its size ({})", k / 2)));
                    }
                };
                let p = Pool { k, stride: positive(l.stride, "stride", Some(k))?, pad, ceil: l.ceil.unwrap_or(false) };
                (if kind_name == "maxpool" { Kind::MaxPool(p) } else { Kind::AvgPool(p) }, 0)
            }
            "adaptive_avgpool" => {
                only(&["size"])?;
                let (h, w) = match &l.size {
                    Some(v) => pair(v, "size")?,
                    None => return Err(bad("`size` is missing (the output size, e.g. size = [6, 6])".into())),
                };
                (Kind::AdaptiveAvgPool(h, w), 0)
            }
            "batchnorm" | "add" | "concat" | "global_avgpool" => {
                only(&[])?;
                let kind = match kind_name {
                    "batchnorm" => Kind::BatchNorm,
                    "add" => Kind::Add(0),
                    "concat" => Kind::Concat,
                    _ => Kind::GlobalAvgPool,
                };
                (kind, 0)
            }
            "dropout" => {
                only(&["rate"])?;
                match l.rate.and_then(Rate::new) {
                    Some(r) => (Kind::Dropout(r), 0),
                    None => {
                        return Err(bad(
                            "`rate` must be a number from 0 up to (not including) 1, e.g. rate = 0.5".into()
                        ));
                    }
                }
            }
            "zeropad" => {
                only(&["channels", "stride"])?;
                (
                    Kind::ZeroPad {
                        channels: positive(l.channels, "channels", None)?,
                        stride: positive(l.stride, "stride", Some(1))?,
                    },
                    0,
                )
            }
            other => {
                return Err(bad(format!(
                    "kind = \"{other}\"; expected dense, conv2d, maxpool, avgpool, batchnorm, add, concat, global_avgpool, adaptive_avgpool, dropout or zeropad"
                )));
            }
        };
        let activation = match &l.activation {
            None => None,
            Some(a) => Some(a.parse::<Activation>().map_err(|e| bad(e.to_string()))?),
        };
        if kind.is_join() && l.inputs.is_none() {
            return Err(bad(format!(
                "an {kind_name} node joins several inputs; list them, e.g. inputs = [\"a\", \"b\"]"
            )));
        }
        listed.push(Listed { name: l.name.clone(), kind, units, activation, inputs: l.inputs.clone() });
    }
    let chain = listed.iter().all(|l| l.name.is_none() && l.inputs.is_none());
    graph::from_listed(name, input, listed, defaults, (!chain).then(|| name.to_string()))
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

    #[test]
    fn the_documented_graph_file_is_a_residual_block() {
        // The second example in from_toml's documentation, as written there.
        let text = "input = [16, 8, 8]\n[[layers]]\nname = \"a\"\nkind = \"conv2d\"\nkernel = 3\nfilters = 16\npadding = 1\nbias = false\n[[layers]]\nkind = \"batchnorm\"\n[[layers]]\nname = \"sum\"\nkind = \"add\"\ninputs = [\"input\", \"2\"]  # unnamed nodes answer to their position\nactivation = \"relu\"\n[[layers]]\nkind = \"global_avgpool\"\n[[layers]]\nunits = 10";
        let t = from_toml(text, "res.toml", Defaults::default()).unwrap();
        let line = p("16x8x8-[conv3x3x16p1b0-bn]:relu-gap-10").unwrap();
        assert_eq!(t.layers, line.layers);
        assert_eq!(t.sources[2], [Source::Input, Source::Node(1)]);
        assert_eq!(t.names[2], "sum");
    }
}
