//! The cost of one dense layer, N inputs to M outputs, over a batch of B examples.

use super::activation;
use crate::ops::Ops;
use crate::spec::{Activation, Layer, Loss};
use serde::Serialize;

/// The backward pass of one layer, split as the engines compute it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Backward {
    /// delta = g (*) f'(z)
    pub delta: Ops,
    /// dW = sum over the batch of delta x^T
    pub weight_grad: Ops,
    /// db = sum over the batch of delta
    pub bias_grad: Ops,
    /// dX = delta W, skipped for the first layer (no one needs the gradient of the data)
    pub input_grad: Ops,
    /// The sum of the gradients handed back by the layer's readers when more than one reads
    /// its output (a fan-out), before anything else in its backward pass.
    pub grad_sum: Ops,
    pub total: Ops,
}

impl Backward {
    /// The same record with `total` set to the sum of its parts.
    pub fn totalled(self) -> Backward {
        Backward { total: self.delta + self.weight_grad + self.bias_grad + self.input_grad + self.grad_sum, ..self }
    }
}

/// z = W x + b, a = f(z) for a batch of `b`.
pub fn forward(layer: &Layer, b: u128) -> Ops {
    let (n, m) = (layer.inputs as u128, layer.outputs as u128);
    // Each output sums N products and one bias: N+1 terms, N additions.
    let affine = Ops { mul: b * n * m, add: b * n * m, mac: b * n * m, ..Ops::ZERO };
    affine + activation::forward(layer.activation, b, m)
}

/// The backward pass for a batch of `b`. `first`: the layer reads the data, so dX is skipped.
/// `output_under`: the loss, when this is the output layer.
pub fn backward(layer: &Layer, b: u128, first: bool, output_under: Option<Loss>) -> Backward {
    let (n, m) = (layer.inputs as u128, layer.outputs as u128);
    let from_ce = output_under == Some(Loss::Ce) && layer.activation == Activation::Softmax;
    let delta = activation::backward(layer.activation, b, m, from_ce);
    // Each of the N*M weights sums B products: B-1 additions.
    let weight_grad = Ops { mul: b * n * m, add: (b - 1) * n * m, mac: b * n * m, ..Ops::ZERO };
    let bias_grad = Ops { add: (b - 1) * m, ..Ops::ZERO };
    // Each of the B*N input gradients sums M products: M-1 additions.
    let input_grad =
        if first { Ops::ZERO } else { Ops { mul: b * n * m, add: b * n * (m - 1), mac: b * n * m, ..Ops::ZERO } };
    Backward { delta, weight_grad, bias_grad, input_grad, ..Backward::default() }.totalled()
}
