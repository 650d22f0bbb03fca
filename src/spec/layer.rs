//! What one layer is (dense, convolution, pooling) and the shapes it reads and writes.
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

/// A 2-D convolution: `filters` kernels of `kh × kw × C`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv {
    pub kh: usize,
    pub kw: usize,
    pub filters: usize,
    pub stride: usize,
    pub padding: Padding,
}

impl Conv {
    /// Zero rows above and below, zero columns left and right.
    pub fn pads(&self) -> (usize, usize) {
        match self.padding {
            Padding::Fixed(p) => (p, p),
            Padding::Same => ((self.kh - 1) / 2, (self.kw - 1) / 2),
        }
    }
}

/// A pooling window of `k × k`, moved `stride` at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool {
    pub k: usize,
    pub stride: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Dense,
    Conv2d(Conv),
    MaxPool(Pool),
    AvgPool(Pool),
}

impl Kind {
    /// The name used in JSON and reports.
    pub fn name(&self) -> &'static str {
        match self {
            Kind::Dense => "dense",
            Kind::Conv2d(_) => "conv2d",
            Kind::MaxPool(_) => "maxpool",
            Kind::AvgPool(_) => "avgpool",
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
                Shape::new(c.filters, (hp - c.kh) / c.stride + 1, (wp - c.kw) / c.stride + 1)
            }
            Kind::MaxPool(p) | Kind::AvgPool(p) => {
                if p.k > input.h || p.k > input.w {
                    return Err(format!(
                        "the {0}x{0} pooling window is larger than its {1}x{2} input; use a smaller window or drop this pooling layer",
                        p.k, input.h, input.w
                    ));
                }
                Shape::new(input.c, (input.h - p.k) / p.stride + 1, (input.w - p.k) / p.stride + 1)
            }
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
            Kind::Conv2d(c) => c.filters as u128 * self.input.c as u128 * c.kh as u128 * c.kw as u128,
            Kind::MaxPool(_) | Kind::AvgPool(_) => 0,
        }
    }

    /// One bias per neuron or per filter.
    pub fn bias_count(&self) -> usize {
        match self.kind {
            Kind::Dense => self.outputs,
            Kind::Conv2d(c) => c.filters,
            Kind::MaxPool(_) | Kind::AvgPool(_) => 0,
        }
    }

    pub fn params(&self) -> u128 {
        self.weights() + self.bias_count() as u128
    }

    /// Inputs and outputs each weight connects (for He/Xavier initialisation, as PyTorch
    /// computes them): N and M for dense, C·kh·kw and F·kh·kw for a convolution.
    pub fn fans(&self) -> (usize, usize) {
        match self.kind {
            Kind::Conv2d(c) => (self.input.c * c.kh * c.kw, c.filters * c.kh * c.kw),
            _ => (self.inputs, self.outputs),
        }
    }

    /// The weight tensor's shape as PyTorch lays it out: [M, N] or [F, C, kh, kw].
    pub fn weight_shape(&self) -> Vec<usize> {
        match self.kind {
            Kind::Conv2d(c) => vec![c.filters, self.input.c, c.kh, c.kw],
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
                write!(f, ":{}", self.activation)
            }
            Kind::MaxPool(p) | Kind::AvgPool(p) => {
                write!(f, "{}{}", self.kind.name(), p.k)?;
                if p.stride != p.k {
                    write!(f, "s{}", p.stride)?;
                }
                Ok(())
            }
        }
    }
}
