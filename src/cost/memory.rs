//! The memory a training run of the fast engine holds, in bytes of f32.

use crate::spec::{Optimizer, Spec};
use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Memory {
    /// Weights and biases.
    pub parameters: u128,
    /// One gradient per parameter.
    pub gradients: u128,
    /// Momentum's velocity, or Adam's two moments.
    pub optimizer_state: u128,
    /// Per batch: the input rows and every layer's output, kept for the backward pass.
    pub activations: u128,
    /// Per batch: two buffers for the gradient flowing back, each as wide as the widest layer.
    pub workspace: u128,
    /// Everything above, held at once.
    pub peak: u128,
}

const F32: u128 = 4;

pub fn memory(spec: &Spec, opt: Optimizer, batch: u128) -> Memory {
    let p = spec.params();
    let parameters = F32 * p;
    let gradients = F32 * p;
    let optimizer_state = F32 * p * opt.state_per_param() as u128;
    let widths: u128 = spec.input as u128 + spec.layers.iter().map(|l| l.outputs as u128).sum::<u128>();
    let activations = F32 * batch * widths;
    let widest_output = spec.layers.iter().map(|l| l.outputs as u128).max().unwrap_or(0);
    let workspace = F32 * 2 * batch * widest_output;
    Memory {
        parameters,
        gradients,
        optimizer_state,
        activations,
        workspace,
        peak: parameters + gradients + optimizer_state + activations + workspace,
    }
}
