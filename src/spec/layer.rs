//! What one layer is (dense, convolution, pooling, and the node kinds of real architectures in
//! [`crate::layers`]) and the shapes it reads and writes.
//!
//! Every layer maps a `C×H×W` volume to another; a vector of N features is the volume `N×1×1`,
//! so a dense layer after a convolution simply reads the flattened map (channel by channel, row
//! by row, as PyTorch's `flatten` does) and the flatten itself costs nothing.

use super::Activation;
use std::fmt;

/// A volume of `c` channels of `h × w`; a plain vector of N features is `N×1×1`. JSON writes it
/// as `[c, h, w]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Shape {
    pub c: usize,
    pub h: usize,
    pub w: usize,
}

impl Shape {
    pub const fn new(c: usize, h: usize, w: usize) -> Shape {
        Shape { c, h, w }
    }

    pub const fn flat(n: usize) -> Shape {
        Shape { c: n, h: 1, w: 1 }
    }

    /// Values per example.
    /// Values per example (saturating: the parser refuses anything past `MAX_WIDTH`).
    pub const fn size(&self) -> usize {
        self.c.saturating_mul(self.h).saturating_mul(self.w)
    }

    /// True for an image (anything but `N×1×1`).
    pub const fn is_image(&self) -> bool {
        self.h != 1 || self.w != 1
    }
}

impl serde::Serialize for Shape {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        [self.c, self.h, self.w].serialize(s)
    }
}

/// `784` or `1x28x28`, as a spec writes its input (sizes at least 1).
impl std::str::FromStr for Shape {
    type Err = String;
    fn from_str(s: &str) -> Result<Shape, String> {
        let n: Option<Vec<usize>> = s.split('x').map(|t| t.parse().ok().filter(|&n| n > 0)).collect();
        match n.as_deref() {
            Some([n]) => Ok(Shape::flat(*n)),
            Some([c, h, w]) => Ok(Shape::new(*c, *h, *w)),
            _ => Err(format!("`{s}` is not a shape; write CxHxW, e.g. 3x224x224")),
        }
    }
}

/// `784` for a vector, `1x28x28` for an image.
impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_image() { write!(f, "{}x{}x{}", self.c, self.h, self.w) } else { write!(f, "{}", self.c) }
    }
}

/// Zero padding around each side of a convolution's input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Padding {
    /// The same number of zero rows and columns on every side.
    Fixed(usize),
    /// `(k-1)/2` on each side, which keeps the size at stride 1 (odd kernels only).
    Same,
}

/// A 2-D convolution: `filters` kernels of `kh × kw × C/groups`. With `groups = g` the
/// channels split into g groups and filter f reads only group f·g/F (g = C = F is depthwise).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv {
    pub kh: usize,
    pub kw: usize,
    pub filters: usize,
    pub stride: usize,
    pub padding: Padding,
    pub groups: usize,
    /// False for a convolution without a bias (the usual one before batch normalization).
    pub bias: bool,
}

impl Conv {
    /// An ungrouped convolution with a bias, the kind every chain spec writes.
    pub const fn plain(kh: usize, kw: usize, filters: usize, stride: usize, padding: Padding) -> Conv {
        Conv { kh, kw, filters, stride, padding, groups: 1, bias: true }
    }

    /// Zero rows above and below, zero columns left and right.
    pub fn pads(&self) -> (usize, usize) {
        match self.padding {
            Padding::Fixed(p) => (p, p),
            Padding::Same => ((self.kh - 1) / 2, (self.kw - 1) / 2),
        }
    }
}

/// A pooling window of `k × k`, moved `stride` at a time. Max pooling may also pad (padded
/// positions never win) and round its output size up (`ceil`, PyTorch's `ceil_mode`: a last
/// window may hang over the edge, as long as it starts inside the input or its left padding).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool {
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
    pub ceil: bool,
}

impl Pool {
    /// Windows inside the input, the last that does not fit dropped.
    pub const fn new(k: usize, stride: usize) -> Pool {
        Pool { k, stride, pad: 0, ceil: false }
    }

    /// Outputs along an axis of `n` positions.
    pub fn outputs(&self, n: usize) -> usize {
        let span = n + 2 * self.pad - self.k;
        let mut out = if self.ceil { span.div_ceil(self.stride) + 1 } else { span / self.stride + 1 };
        // As PyTorch: the last window must start inside the input or its left padding.
        if self.ceil && (out - 1) * self.stride >= n + self.pad {
            out -= 1;
        }
        out
    }
}

/// A dropout rate p in [0, 1), kept as the bits of its f64 so that kinds stay `Eq`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Rate(u64);

impl Rate {
    /// `p` in [0, 1), or None.
    pub fn new(p: f64) -> Option<Rate> {
        (0.0..1.0).contains(&p).then_some(Rate(p.to_bits()))
    }

    pub fn value(self) -> f64 {
        f64::from_bits(self.0)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Dense,
    Conv2d(Conv),
    MaxPool(Pool),
    AvgPool(Pool),
    /// Batch normalization over each channel (BatchNorm1d on a flat vector).
    BatchNorm,
    /// The element-wise sum of this many inputs of one shape (a residual join).
    Add(usize),
    /// Its inputs stacked along the channels, in order (same height and width).
    Concat,
    /// The mean of each channel's map: C×H×W → C.
    GlobalAvgPool,
    /// Average pooling to a fixed `h × w`, windows placed as PyTorch's `AdaptiveAvgPool2d`.
    AdaptiveAvgPool(usize, usize),
    /// Inverted dropout at rate p while training; nothing at evaluation.
    Dropout(Rate),
    /// He et al.'s parameter-free shortcut (option A): every `stride`-th row and column, and
    /// zero channels appended up to `channels`.
    ZeroPad {
        channels: usize,
        stride: usize,
    },
}

impl Kind {
    /// The name used in JSON and reports.
    pub fn name(&self) -> &'static str {
        match self {
            Kind::Dense => "dense",
            Kind::Conv2d(_) => "conv2d",
            Kind::MaxPool(_) => "maxpool",
            Kind::AvgPool(_) => "avgpool",
            Kind::BatchNorm => "batchnorm",
            Kind::Add(_) => "add",
            Kind::Concat => "concat",
            Kind::GlobalAvgPool => "global_avgpool",
            Kind::AdaptiveAvgPool(..) => "adaptive_avgpool",
            Kind::Dropout(_) => "dropout",
            Kind::ZeroPad { .. } => "zeropad",
        }
    }

    /// Whether the kind applies an activation after its arithmetic (pooling, dropout, joins by
    /// concatenation and the zero-padding shortcut take none).
    pub fn takes_activation(&self) -> bool {
        matches!(self, Kind::Dense | Kind::Conv2d(_) | Kind::BatchNorm | Kind::Add(_) | Kind::GlobalAvgPool)
    }

    /// Whether it reads an image (C×H×W maps) rather than a vector of features.
    pub fn needs_image(&self) -> bool {
        matches!(
            self,
            Kind::Conv2d(_)
                | Kind::MaxPool(_)
                | Kind::AvgPool(_)
                | Kind::GlobalAvgPool
                | Kind::AdaptiveAvgPool(..)
                | Kind::ZeroPad { .. }
        )
    }

    /// Whether the kind reads several inputs.
    pub fn is_join(&self) -> bool {
        matches!(self, Kind::Add(_) | Kind::Concat)
    }

    /// Whether the fast engine runs it today (the others are counted, explained and verified on
    /// the reference engine only).
    pub fn fast_engine_runs(&self) -> bool {
        true
    }

    /// Whether it is a kind the first networks were made of (dense layers, ungrouped
    /// convolutions with a bias, pooling without padding or ceil mode) rather than one added for
    /// real architectures.
    pub fn is_classic(&self) -> bool {
        match self {
            Kind::Dense => true,
            Kind::MaxPool(p) | Kind::AvgPool(p) => p.pad == 0 && !p.ceil,
            Kind::Conv2d(c) => c.groups == 1 && c.bias,
            _ => false,
        }
    }
}

/// One layer. `inputs` and `outputs` are the values per example it reads and writes
/// (`input.size()` and `output.size()`), kept as fields because every count starts from them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layer {
    pub kind: Kind,
    pub input: Shape,
    pub output: Shape,
    pub inputs: usize,
    pub outputs: usize,
    pub activation: Activation,
}

/// Why a layer cannot follow the shape before it.
pub type ShapeProblem = String;

impl Layer {
    /// A fully connected layer of `outputs` neurons reading `inputs` features.
    pub fn dense(inputs: usize, outputs: usize, activation: Activation) -> Layer {
        Layer {
            kind: Kind::Dense,
            input: Shape::flat(inputs),
            output: Shape::flat(outputs),
            inputs,
            outputs,
            activation,
        }
    }

    /// The layer of `kind` that reads `input`, with its output shape inferred. (Whether an
    /// image layer may follow a dense one is the spec's rule, not the shape's.)
    pub fn after(input: Shape, kind: Kind, units: usize, activation: Activation) -> Result<Layer, ShapeProblem> {
        let output = match kind {
            Kind::Dense => Shape::flat(units),
            Kind::Conv2d(c) => {
                if c.padding == Padding::Same && (c.stride != 1 || c.kh % 2 == 0 || c.kw % 2 == 0) {
                    return Err(format!(
                        "`psame` needs an odd kernel and stride 1 ({}x{} at stride {} cannot keep the size with whole padding); give the padding as a number, e.g. p{}",
                        c.kh,
                        c.kw,
                        c.stride,
                        c.kh / 2
                    ));
                }
                let (ph, pw) = c.pads();
                let (hp, wp) = (input.h + 2 * ph, input.w + 2 * pw);
                if c.kh > hp || c.kw > wp {
                    return Err(format!(
                        "the {}x{} kernel is larger than its padded input {hp}x{wp} ({}x{} plus padding {ph},{pw}); use a smaller kernel or more padding",
                        c.kh, c.kw, input.h, input.w
                    ));
                }
                if c.groups == 0 || !input.c.is_multiple_of(c.groups) || !c.filters.is_multiple_of(c.groups) {
                    return Err(format!(
                        "{} groups do not divide its {} input channels and {} filters; use a common divisor, e.g. g{}",
                        c.groups,
                        input.c,
                        c.filters,
                        gcd(input.c, c.filters)
                    ));
                }
                Shape::new(c.filters, (hp - c.kh) / c.stride + 1, (wp - c.kw) / c.stride + 1)
            }
            Kind::MaxPool(p) | Kind::AvgPool(p) => {
                if p.k > input.h + 2 * p.pad || p.k > input.w + 2 * p.pad {
                    return Err(format!(
                        "the {0}x{0} pooling window is larger than its {1}x{2} input; use a smaller window or drop this pooling layer",
                        p.k, input.h, input.w
                    ));
                }
                if p.pad > p.k / 2 {
                    return Err(format!(
                        "padding {} is more than half its {}x{} window; pad at most {}",
                        p.pad,
                        p.k,
                        p.k,
                        p.k / 2
                    ));
                }
                if matches!(kind, Kind::AvgPool(_)) && (p.pad > 0 || p.ceil) {
                    return Err("average pooling takes no padding or ceil mode here; max pooling does".to_string());
                }
                Shape::new(input.c, p.outputs(input.h), p.outputs(input.w))
            }
            Kind::BatchNorm | Kind::Dropout(_) => input,
            Kind::GlobalAvgPool => Shape::flat(input.c),
            Kind::AdaptiveAvgPool(h, w) => Shape::new(input.c, h, w),
            Kind::ZeroPad { channels, stride } => {
                if channels < input.c {
                    return Err(format!(
                        "it pads {} channels to {channels}; the zero-padding shortcut only adds channels",
                        input.c
                    ));
                }
                Shape::new(channels, input.h.div_ceil(stride), input.w.div_ceil(stride))
            }
            Kind::Add(_) | Kind::Concat => return Layer::join(kind, &[input], activation),
        };
        if output.size() > super::MAX_WIDTH {
            return Err(format!(
                "its output {}x{}x{} holds more than {} values; use fewer filters or a larger stride",
                output.c,
                output.h,
                output.w,
                super::MAX_WIDTH
            ));
        }
        Ok(Layer { kind, input, output, inputs: input.size(), outputs: output.size(), activation })
    }

    /// A join of several inputs (`Add` or `Concat`): every input's shape must agree, but for
    /// the channels of a concatenation, which add up.
    pub fn join(kind: Kind, inputs: &[Shape], activation: Activation) -> Result<Layer, ShapeProblem> {
        let first = *inputs.first().ok_or("a join needs at least one input")?;
        let output = match kind {
            Kind::Add(_) => {
                if let Some(other) = inputs.iter().find(|s| **s != first) {
                    return Err(format!(
                        "it adds {first} and {other}; the inputs of an addition must have one shape (give the shortcut a projection or a zero-padding shortcut)"
                    ));
                }
                first
            }
            Kind::Concat => {
                if let Some(other) = inputs.iter().find(|s| (s.h, s.w) != (first.h, first.w)) {
                    return Err(format!(
                        "it concatenates {first} and {other}; concatenated maps must have the same height and width"
                    ));
                }
                Shape::new(inputs.iter().map(|s| s.c).sum(), first.h, first.w)
            }
            other => return Err(format!("{} is not a join", other.name())),
        };
        if output.size() > super::MAX_WIDTH {
            return Err(format!("its output {output} holds more than {} values", super::MAX_WIDTH));
        }
        let kind = if let Kind::Add(_) = kind { Kind::Add(inputs.len()) } else { kind };
        Ok(Layer { kind, input: first, output, inputs: first.size(), outputs: output.size(), activation })
    }

    pub fn is_dense(&self) -> bool {
        self.kind == Kind::Dense
    }

    /// Values in the weight tensor: N×M for dense, F×C×kh×kw for a convolution, none for pooling.
    /// (Saturating, for specs too large to build; [`Layer::params`] is exact.)
    pub fn weight_count(&self) -> usize {
        usize::try_from(self.weights()).unwrap_or(usize::MAX)
    }

    fn weights(&self) -> u128 {
        match self.kind {
            Kind::Dense => self.inputs as u128 * self.outputs as u128,
            Kind::Conv2d(c) => c.filters as u128 * (self.input.c / c.groups) as u128 * c.kh as u128 * c.kw as u128,
            // The scale γ, one per channel.
            Kind::BatchNorm => self.input.c as u128,
            _ => 0,
        }
    }

    /// One bias per neuron or per filter (none for a convolution without one); batch
    /// normalization's shift β, one per channel.
    pub fn bias_count(&self) -> usize {
        match self.kind {
            Kind::Dense => self.outputs,
            Kind::Conv2d(c) if c.bias => c.filters,
            Kind::BatchNorm => self.input.c,
            _ => 0,
        }
    }

    pub fn params(&self) -> u128 {
        self.weights() + self.bias_count() as u128
    }

    /// Inputs and outputs each weight connects (for He/Xavier initialisation, as PyTorch
    /// computes them): N and M for dense, C·kh·kw and F·kh·kw for a convolution.
    pub fn fans(&self) -> (usize, usize) {
        match self.kind {
            Kind::Conv2d(c) => (self.input.c / c.groups * c.kh * c.kw, c.filters * c.kh * c.kw),
            _ => (self.inputs, self.outputs),
        }
    }

    /// The weight tensor's shape as PyTorch lays it out: [M, N] or [F, C, kh, kw].
    pub fn weight_shape(&self) -> Vec<usize> {
        match self.kind {
            Kind::Conv2d(c) => vec![c.filters, self.input.c / c.groups, c.kh, c.kw],
            Kind::BatchNorm => vec![self.input.c],
            _ => vec![self.outputs, self.inputs],
        }
    }
}

/// The layer in the compact form, without its input: `30:relu`, `conv5x5x32p2:relu`, `maxpool2`.
impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            Kind::Dense => write!(f, "{}:{}", self.outputs, self.activation),
            Kind::Conv2d(c) => {
                write!(f, "conv{}x{}x{}", c.kh, c.kw, c.filters)?;
                if c.stride != 1 {
                    write!(f, "s{}", c.stride)?;
                }
                match c.padding {
                    Padding::Fixed(0) => {}
                    Padding::Fixed(p) => write!(f, "p{p}")?,
                    Padding::Same => write!(f, "psame")?,
                }
                if c.groups != 1 {
                    write!(f, "g{}", c.groups)?;
                }
                if !c.bias {
                    write!(f, "b0")?;
                }
                write!(f, ":{}", self.activation)
            }
            Kind::MaxPool(p) | Kind::AvgPool(p) => {
                write!(f, "{}{}", self.kind.name(), p.k)?;
                if p.stride != p.k {
                    write!(f, "s{}", p.stride)?;
                }
                if p.pad != 0 {
                    write!(f, "p{}", p.pad)?;
                }
                if p.ceil {
                    write!(f, "c")?;
                }
                Ok(())
            }
            Kind::BatchNorm => write!(f, "bn:{}", self.activation),
            Kind::Add(_) => write!(f, "add:{}", self.activation),
            Kind::Concat => write!(f, "concat"),
            Kind::GlobalAvgPool => write!(f, "gap:{}", self.activation),
            Kind::AdaptiveAvgPool(h, w) => write!(f, "adaptavg{h}x{w}"),
            Kind::Dropout(p) => write!(f, "drop{}", p.value()),
            Kind::ZeroPad { channels, stride } => write!(f, "zpad{channels}s{stride}"),
        }
    }
}

/// The greatest common divisor.
pub(crate) fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}
