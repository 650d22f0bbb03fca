//! A whole network on the reference engine: forward through every layer, the loss, backward
//! through every layer, and the optimizer, each phase announced to the scalar.

use super::conv::{conv_bias_grad, conv_forward, conv_input_grad, conv_weight_grad};
use super::dense::{dense_bias_grad, dense_delta, dense_forward, dense_input_grad, dense_weight_grad};
use super::loss::loss;
use super::optim::OptimizerState;
use super::pool::{avgpool_forward, avgpool_input_grad, maxpool_forward, maxpool_input_grad};
use super::scalar::{Phase, Scalar};
use crate::init::LayerParams;
use crate::spec::{Activation, Kind, Loss, Spec};

pub struct Network<S> {
    pub spec: Spec,
    /// Per layer, [M][N] (dense) or [F][C][kh][kw] (conv) row-major; empty for pooling.
    pub weights: Vec<Vec<S>>,
    /// Per layer, [M] or [F]; empty for pooling.
    pub biases: Vec<Vec<S>>,
}

/// What the forward pass keeps for backward: each layer's input, z and a (for pooling, z = a
/// = the pooled values), and for max-pooling the index of each window's winner.
pub struct Trace<S> {
    pub inputs: Vec<Vec<S>>,
    pub z: Vec<Vec<S>>,
    pub a: Vec<Vec<S>>,
    pub argmax: Vec<Vec<usize>>,
}

impl<S> Trace<S> {
    /// The network's output, [B][outputs].
    pub fn output(&self) -> &[S] {
        self.a.last().map_or(&[], |a| a.as_slice())
    }
}

/// The gradient of the loss for one layer's parameters.
pub struct Grads<S> {
    pub weight: Vec<S>,
    pub bias: Vec<S>,
}

impl<S: Scalar> Network<S> {
    pub fn new(spec: &Spec, params: &[LayerParams]) -> Self {
        let conv = |v: &[f64]| v.iter().map(|&x| S::constant(x)).collect();
        Network {
            spec: spec.clone(),
            weights: params.iter().map(|p| conv(&p.weight)).collect(),
            biases: params.iter().map(|p| conv(&p.bias)).collect(),
        }
    }

    /// The parameter count of each tensor in optimizer order: W0, b0, W1, b1, ...
    pub fn tensor_sizes(&self) -> Vec<usize> {
        self.weights.iter().zip(&self.biases).flat_map(|(w, b)| [w.len(), b.len()]).collect()
    }

    /// x: [B][input] (each row [C][H][W] for images). Runs every layer in order.
    pub fn forward(&self, x: &[S]) -> Trace<S> {
        let mut t = Trace { inputs: Vec::new(), z: Vec::new(), a: Vec::new(), argmax: Vec::new() };
        let mut input = x.to_vec();
        for (l, layer) in self.spec.layers.iter().enumerate() {
            S::enter(Phase::Forward(l));
            let (w, b) = (&self.weights[l], &self.biases[l]);
            let mut argmax = Vec::new();
            let (z, a) = match layer.kind {
                Kind::Dense => dense_forward(layer, &input, w, b),
                Kind::Conv2d(_) => conv_forward(layer, &input, w, b),
                Kind::MaxPool(_) => {
                    let (out, arg) = maxpool_forward(layer, &input);
                    argmax = arg;
                    (out.clone(), out)
                }
                Kind::AvgPool(_) => {
                    let out = avgpool_forward(layer, &input);
                    (out.clone(), out)
                }
            };
            t.inputs.push(std::mem::replace(&mut input, a.clone()));
            t.z.push(z);
            t.a.push(a);
            t.argmax.push(argmax);
        }
        t
    }

    /// The loss on (x, labels) and its gradient for every parameter.
    pub fn gradients(&self, x: &[S], labels: &[usize], lossfn: Loss) -> (S, Vec<Grads<S>>) {
        let trace = self.forward(x);
        S::enter(Phase::Loss);
        let (value, mut g) = loss(lossfn, trace.output(), labels, self.spec.outputs());
        let last = self.spec.layers.len() - 1;
        let mut grads = Vec::with_capacity(self.spec.layers.len());
        for (l, layer) in self.spec.layers.iter().enumerate().rev() {
            let from_ce = l == last && lossfn == Loss::Ce && layer.activation == Activation::Softmax;
            S::enter(Phase::Delta(l));
            let (x, w) = (&trace.inputs[l], &self.weights[l]);
            let pooling = matches!(layer.kind, Kind::MaxPool(_) | Kind::AvgPool(_));
            // Pooling applies no activation: its delta is the incoming gradient itself.
            let delta = if pooling { g } else { dense_delta(layer, &trace.z[l], &trace.a[l], &g, from_ce) };
            S::enter(Phase::WeightGrad(l));
            let weight = match layer.kind {
                Kind::Dense => dense_weight_grad(layer, x, &delta),
                Kind::Conv2d(_) => conv_weight_grad(layer, x, &delta),
                Kind::MaxPool(_) | Kind::AvgPool(_) => Vec::new(),
            };
            S::enter(Phase::BiasGrad(l));
            let bias = match layer.kind {
                Kind::Dense => dense_bias_grad(layer, &delta),
                Kind::Conv2d(_) => conv_bias_grad(layer, &delta),
                Kind::MaxPool(_) | Kind::AvgPool(_) => Vec::new(),
            };
            g = Vec::new();
            if l > 0 {
                S::enter(Phase::InputGrad(l));
                g = match layer.kind {
                    Kind::Dense => dense_input_grad(layer, w, &delta),
                    Kind::Conv2d(_) => conv_input_grad(layer, w, &delta),
                    Kind::MaxPool(_) => maxpool_input_grad(layer, &trace.argmax[l], &delta),
                    Kind::AvgPool(_) => avgpool_input_grad(layer, &delta),
                };
            }
            grads.push(Grads { weight, bias });
        }
        grads.reverse();
        S::enter(Phase::Outside);
        (value, grads)
    }

    /// One training step: gradients, then the optimizer moves every parameter. Returns the loss.
    pub fn train_step(&mut self, opt: &mut OptimizerState<S>, x: &[S], labels: &[usize], lossfn: Loss) -> S {
        let (value, grads) = self.gradients(x, labels, lossfn);
        S::enter(Phase::OptimizerStep);
        let scalars = opt.begin_step();
        for (l, g) in grads.iter().enumerate() {
            S::enter(Phase::Update(l));
            opt.update(2 * l, &mut self.weights[l], &g.weight, &scalars);
            opt.update(2 * l + 1, &mut self.biases[l], &g.bias, &scalars);
        }
        S::enter(Phase::Outside);
        value
    }
}
