//! A whole network on the reference engine: forward through every layer of the graph, the
//! loss, backward through every layer (summing the gradients of a tensor read more than once),
//! and the optimizer, each phase announced to the scalar.

use super::activation;
use super::conv::{conv_bias_grad, conv_forward, conv_input_grad, conv_weight_grad};
use super::dense::{dense_bias_grad, dense_delta, dense_forward, dense_input_grad, dense_weight_grad};
use super::loss::loss;
use super::optim::OptimizerState;
use super::pool::{avgpool_forward, avgpool_input_grad, maxpool_forward, maxpool_input_grad};
use super::scalar::{Phase, Scalar};
use crate::init::LayerParams;
use crate::layers::{batchnorm, dropout, globalpool, join, zeropad};
use crate::spec::{Activation, Kind, Loss, Source, Spec};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

pub struct Network<S> {
    pub spec: Spec,
    /// Per layer, [M][N] (dense), [F][C/g][kh][kw] (conv) or γ [C] (batch norm) row-major;
    /// empty for layers without parameters.
    pub weights: Vec<Vec<S>>,
    /// Per layer, [M], [F] or β [C]; empty for pooling and convolutions without a bias.
    pub biases: Vec<Vec<S>>,
    /// Batch normalization's running mean and variance [C] (empty for other layers).
    pub running: Vec<(Vec<S>, Vec<S>)>,
    /// Dropout's masks depend on this seed, the step number and the layer only, so that a
    /// step's gradients can be recomputed with the same masks.
    pub seed: u64,
    pub steps: u64,
}

/// What the forward pass keeps for backward: each layer's input (for one that reads one), z
/// and a (for layers without an activation, z = a), for max-pooling the index of each window's
/// winner, and what batch normalization and dropout saved.
pub struct Trace<S> {
    pub inputs: Vec<Vec<S>>,
    pub z: Vec<Vec<S>>,
    pub a: Vec<Vec<S>>,
    pub argmax: Vec<Vec<usize>>,
    pub saved: Vec<Saved<S>>,
}

/// A layer's own record of its forward pass.
pub enum Saved<S> {
    None,
    BatchNorm(batchnorm::Saved<S>),
    /// Dropout's mask: 0 or 1/(1−p) per value.
    Mask(Vec<S>),
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
        let running = spec
            .layers
            .iter()
            .map(|l| match l.kind {
                Kind::BatchNorm => (vec![S::zero(); l.input.c], vec![S::one(); l.input.c]),
                _ => (Vec::new(), Vec::new()),
            })
            .collect();
        Network {
            spec: spec.clone(),
            weights: params.iter().map(|p| conv(&p.weight)).collect(),
            biases: params.iter().map(|p| conv(&p.bias)).collect(),
            running,
            seed: 0,
            steps: 0,
        }
    }

    /// The parameter count of each tensor in optimizer order: W0, b0, W1, b1, ...
    pub fn tensor_sizes(&self) -> Vec<usize> {
        self.weights.iter().zip(&self.biases).flat_map(|(w, b)| [w.len(), b.len()]).collect()
    }

    /// x: [B][input] (each row [C][H][W] for images). Runs every layer in order, in training
    /// mode (batch statistics, dropout on).
    pub fn forward(&self, x: &[S]) -> Trace<S> {
        self.run(x, true)
    }

    /// The output at evaluation: batch normalization with its running statistics, no dropout.
    pub fn infer(&self, x: &[S]) -> Vec<S> {
        self.run(x, false).a.pop().unwrap_or_default()
    }

    fn run(&self, x: &[S], training: bool) -> Trace<S> {
        let n = self.spec.layers.len();
        let mut t = Trace { inputs: Vec::new(), z: Vec::new(), a: Vec::new(), argmax: Vec::new(), saved: Vec::new() };
        for (l, layer) in self.spec.layers.iter().enumerate() {
            S::enter(Phase::Forward(l));
            let reads: Vec<&[S]> = self.spec.sources[l]
                .iter()
                .map(|s| match s {
                    Source::Input => x,
                    Source::Node(j) => t.a[*j].as_slice(),
                })
                .collect();
            let input = reads[0];
            let (w, b) = (&self.weights[l], &self.biases[l]);
            let mut argmax = Vec::new();
            let mut saved = Saved::None;
            let activate = |z: Vec<S>| {
                let mut a = vec![S::zero(); z.len()];
                for (ze, ae) in z.chunks_exact(layer.outputs).zip(a.chunks_exact_mut(layer.outputs)) {
                    activation::forward(layer.activation, ze, ae);
                }
                (z, a)
            };
            let same = |z: Vec<S>| (z.clone(), z);
            let (z, a) = match layer.kind {
                Kind::Dense => dense_forward(layer, input, w, b),
                Kind::Conv2d(_) => conv_forward(layer, input, w, b),
                Kind::MaxPool(_) => {
                    let (out, arg) = maxpool_forward(layer, input);
                    argmax = arg;
                    same(out)
                }
                Kind::AvgPool(_) => same(avgpool_forward(layer, input)),
                Kind::BatchNorm => {
                    let (mean, var) = &self.running[l];
                    if training {
                        let (z, s) = batchnorm::forward(layer, input, w, b, mean, var);
                        saved = Saved::BatchNorm(s);
                        activate(z)
                    } else {
                        activate(batchnorm::infer(layer, input, w, b, mean, var))
                    }
                }
                Kind::Add(_) => activate(join::add(&reads)),
                Kind::Concat => {
                    let sizes: Vec<usize> =
                        self.spec.sources[l].iter().map(|s| self.spec.shape_of(*s).size()).collect();
                    same(join::concat(&reads, &sizes))
                }
                Kind::GlobalAvgPool => activate(globalpool::forward(layer, input)),
                Kind::AdaptiveAvgPool(..) => same(globalpool::forward(layer, input)),
                Kind::Dropout(p) if training => {
                    let mut rng =
                        ChaCha8Rng::seed_from_u64(self.seed ^ self.steps.wrapping_mul(0x9E37_79B9) ^ (l as u64) << 48);
                    let (z, mask) = dropout::forward(input, p.value(), &mut rng);
                    saved = Saved::Mask(mask);
                    same(z)
                }
                Kind::Dropout(_) => same(input.to_vec()),
                Kind::ZeroPad { stride, .. } => same(zeropad::forward(layer, input, stride)),
            };
            let input = if layer.kind.is_join() { Vec::new() } else { input.to_vec() };
            t.inputs.push(input);
            t.z.push(z);
            t.a.push(a);
            t.argmax.push(argmax);
            t.saved.push(saved);
        }
        debug_assert_eq!(t.a.len(), n);
        t
    }

    /// The loss on (x, labels) and its gradient for every parameter.
    pub fn gradients(&self, x: &[S], labels: &[usize], lossfn: Loss) -> (S, Vec<Grads<S>>) {
        let (value, grads, _) = self.backprop(x, labels, lossfn);
        (value, grads)
    }

    /// Forward, loss and backward, walking the graph from the output back: a layer's
    /// gradient is the sum of what its readers handed back.
    fn backprop(&self, x: &[S], labels: &[usize], lossfn: Loss) -> (S, Vec<Grads<S>>, Trace<S>) {
        let trace = self.forward(x);
        S::enter(Phase::Loss);
        let (value, g) = loss(lossfn, trace.output(), labels, self.spec.outputs());
        let n = self.spec.layers.len();
        let mut handed: Vec<Vec<Vec<S>>> = vec![Vec::new(); n];
        handed[n - 1].push(g);
        let mut grads: Vec<Grads<S>> = Vec::with_capacity(n);
        for (l, layer) in self.spec.layers.iter().enumerate().rev() {
            S::enter(Phase::GradSum(l));
            let mut parts = std::mem::take(&mut handed[l]).into_iter();
            let first = parts.next().expect("every layer's output is read");
            let g = parts.fold(first, |mut sum, part| {
                for (s, v) in sum.iter_mut().zip(part) {
                    *s = *s + v;
                }
                sum
            });
            let from_ce = l == n - 1 && lossfn == Loss::Ce && layer.activation == Activation::Softmax;
            S::enter(Phase::Delta(l));
            let (x, w) = (&trace.inputs[l], &self.weights[l]);
            let delta = if layer.kind.takes_activation() {
                dense_delta(layer, &trace.z[l], &trace.a[l], &g, from_ce)
            } else {
                g
            };
            let bn = match &trace.saved[l] {
                Saved::BatchNorm(s) => Some(s),
                _ => None,
            };
            S::enter(Phase::WeightGrad(l));
            let (mut weight, mut bias) = (Vec::new(), Vec::new());
            match layer.kind {
                Kind::Dense => weight = dense_weight_grad(layer, x, &delta),
                Kind::Conv2d(c) => {
                    weight = conv_weight_grad(layer, x, &delta);
                    S::enter(Phase::BiasGrad(l));
                    if c.bias {
                        bias = conv_bias_grad(layer, &delta);
                    }
                }
                Kind::BatchNorm => {
                    weight = batchnorm::gamma_grad(layer, &delta, bn.expect("batch norm saved its batch"));
                    S::enter(Phase::BiasGrad(l));
                    bias = batchnorm::beta_grad(layer, &delta);
                }
                _ => {}
            }
            if layer.kind == Kind::Dense {
                S::enter(Phase::BiasGrad(l));
                bias = dense_bias_grad(layer, &delta);
            }
            if !self.spec.reads_data(l) {
                S::enter(Phase::InputGrad(l));
                let sources = &self.spec.sources[l];
                let dx: Vec<Vec<S>> = match layer.kind {
                    Kind::Dense => vec![dense_input_grad(layer, w, &delta)],
                    Kind::Conv2d(_) => vec![conv_input_grad(layer, w, &delta)],
                    Kind::MaxPool(_) => vec![maxpool_input_grad(layer, &trace.argmax[l], &delta)],
                    Kind::AvgPool(_) => vec![avgpool_input_grad(layer, &delta)],
                    Kind::BatchNorm => {
                        let s = bn.expect("batch norm saved its batch");
                        vec![batchnorm::input_grad(layer, &delta, w, s, &weight, &bias)]
                    }
                    Kind::Add(_) => vec![delta.clone(); sources.len()],
                    Kind::Concat => {
                        let sizes: Vec<usize> = sources.iter().map(|s| self.spec.shape_of(*s).size()).collect();
                        join::split(&delta, &sizes)
                    }
                    Kind::GlobalAvgPool | Kind::AdaptiveAvgPool(..) => vec![globalpool::input_grad(layer, &delta)],
                    Kind::Dropout(_) => match &trace.saved[l] {
                        Saved::Mask(m) => vec![dropout::input_grad(&delta, m)],
                        _ => unreachable!("dropout saved its mask"),
                    },
                    Kind::ZeroPad { stride, .. } => vec![zeropad::input_grad(layer, &delta, stride)],
                };
                for (s, d) in sources.iter().zip(dx) {
                    if let Source::Node(j) = s {
                        handed[*j].push(d);
                    }
                }
            }
            grads.push(Grads { weight, bias });
        }
        grads.reverse();
        S::enter(Phase::Outside);
        (value, grads, trace)
    }

    /// One training step: gradients, then the optimizer moves every parameter and batch
    /// normalization keeps its new running statistics. Returns the loss.
    pub fn train_step(&mut self, opt: &mut OptimizerState<S>, x: &[S], labels: &[usize], lossfn: Loss) -> S {
        let (value, grads, trace) = self.backprop(x, labels, lossfn);
        S::enter(Phase::OptimizerStep);
        let scalars = opt.begin_step();
        for (l, g) in grads.iter().enumerate() {
            S::enter(Phase::Update(l));
            opt.update(2 * l, &mut self.weights[l], &g.weight, &scalars);
            opt.update(2 * l + 1, &mut self.biases[l], &g.bias, &scalars);
        }
        S::enter(Phase::Outside);
        for (l, saved) in trace.saved.into_iter().enumerate() {
            if let Saved::BatchNorm(s) = saved {
                self.running[l] = (s.running_mean, s.running_var);
            }
        }
        self.steps += 1;
        value
    }
}
