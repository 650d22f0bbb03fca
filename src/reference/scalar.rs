//! The number type the reference engine is written over.
//!
//! Every arithmetic operation the engine performs goes through this trait, so a scalar that
//! counts (see [`super::counting`]) measures exactly what the code executes. `f64` computes.

use std::fmt::Debug;
use std::ops::{Add, Div, Mul, Neg, Sub};

/// Where in a training step the engine is, so that counts can be attributed to ledger rows.
/// Layers are numbered from 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Phase {
    /// Anything not inside a step (setup, conversions). A step should leave this at zero.
    Outside,
    Forward(usize),
    Loss,
    /// Summing the gradients handed back by a layer's readers (fan-out).
    GradSum(usize),
    Delta(usize),
    WeightGrad(usize),
    BiasGrad(usize),
    InputGrad(usize),
    OptimizerStep,
    Update(usize),
}

/// Semantic events that are not arithmetic but are reported beside it.
#[derive(Clone, Copy, Debug)]
pub enum Tally {
    /// One product inside a matrix product.
    Mac,
    /// `n` activation-function applications.
    Act(usize),
    /// `n` activation-derivative applications.
    ActGrad(usize),
}

pub trait Scalar:
    Copy + Debug + Add<Output = Self> + Sub<Output = Self> + Mul<Output = Self> + Div<Output = Self> + Neg<Output = Self>
{
    /// A constant of the algorithm (a learning rate, 1, 0.01): making one costs nothing.
    fn constant(x: f64) -> Self;
    fn value(self) -> f64;

    fn exp(self) -> Self;
    fn ln(self) -> Self;
    fn sqrt(self) -> Self;
    fn tanh(self) -> Self;
    /// The larger of two values: one comparison.
    fn max(self, other: Self) -> Self;
    /// Whether the value is above zero: one comparison.
    fn is_positive(self) -> bool;
    /// Whether `self > other`: one comparison (max-pooling keeps the index of the winner).
    fn greater(self, other: Self) -> bool;

    /// A product that is part of a matrix product: one multiplication, tallied as a MAC.
    fn mac(a: Self, b: Self) -> Self {
        Self::tally(Tally::Mac);
        a * b
    }

    fn zero() -> Self {
        Self::constant(0.0)
    }

    fn one() -> Self {
        Self::constant(1.0)
    }

    /// Records a semantic event; computing scalars ignore it.
    fn tally(_t: Tally) {}

    /// Marks the start of a phase; computing scalars ignore it.
    fn enter(_p: Phase) {}
}

impl Scalar for f64 {
    fn constant(x: f64) -> Self {
        x
    }
    fn value(self) -> f64 {
        self
    }
    fn exp(self) -> Self {
        f64::exp(self)
    }
    fn ln(self) -> Self {
        f64::ln(self)
    }
    fn sqrt(self) -> Self {
        f64::sqrt(self)
    }
    fn tanh(self) -> Self {
        f64::tanh(self)
    }
    fn max(self, other: Self) -> Self {
        if self > other { self } else { other }
    }
    fn is_positive(self) -> bool {
        self > 0.0
    }
    fn greater(self, other: Self) -> bool {
        self > other
    }
}
