//! The reference engine computes the right numbers: hand-worked tiny networks and central finite
//! differences on random ones.

use flopnet::init::{LayerParams, init};
use flopnet::reference::{Hyper, Network, OptimizerState};
use flopnet::spec::{Activation, Layer, Loss, Optimizer, Shape, Spec};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

mod common;

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * (1.0 + a.abs().max(b.abs()))
}

/// 2 inputs -> 1 sigmoid neuron, MSE against target 1, worked by hand.
#[test]
fn hand_worked_single_sigmoid_neuron() {
    let spec = Spec::dense(2, &[(1, Activation::Sigmoid)]);
    let params = [LayerParams { weight: vec![0.5, -0.25], bias: vec![0.1] }];
    let mut net: Network<f64> = Network::new(&spec, &params);
    let x = [1.0, 2.0];
    // z = 0.1 + 0.5*1 - 0.25*2 = 0.1; a = 1/(1+e^-0.1)
    let a = 1.0 / (1.0 + (-0.1f64).exp());
    let trace = net.forward(&x);
    assert!(close(trace.output()[0], a, 1e-15));
    // target one-hot of label 0 with one output: y = 1. L = (a-1)^2; dL/da = 2(a-1); dz = dL/da * a(1-a)
    let (loss, grads) = net.gradients(&x, &[0], Loss::Mse);
    assert!(close(loss, (a - 1.0).powi(2), 1e-15));
    let dz = 2.0 * (a - 1.0) * a * (1.0 - a);
    assert!(close(grads[0].weight[0], dz * 1.0, 1e-15));
    assert!(close(grads[0].weight[1], dz * 2.0, 1e-15));
    assert!(close(grads[0].bias[0], dz, 1e-15));
    // One SGD step with lr 0.01 moves each weight by -0.01 * gradient.
    let mut opt = OptimizerState::new(Optimizer::Sgd, Hyper::defaults(Optimizer::Sgd), &net.tensor_sizes());
    net.train_step(&mut opt, &x, &[0], Loss::Mse);
    assert!(close(net.weights[0][1], -0.25 - 0.01 * dz * 2.0, 1e-15));
}

/// Softmax cross-entropy on 2 classes with zero weights: p = (1/2, 1/2), L = ln 2, dz = p - y.
#[test]
fn hand_worked_softmax_cross_entropy() {
    let spec = Spec::dense(3, &[(2, Activation::Softmax)]);
    let params = [LayerParams { weight: vec![0.0; 6], bias: vec![0.0; 2] }];
    let net: Network<f64> = Network::new(&spec, &params);
    let x = [1.0, -2.0, 3.0];
    let (loss, grads) = net.gradients(&x, &[1], Loss::Ce);
    assert!(close(loss, 2f64.ln(), 1e-15));
    // dz = (0.5, -0.5); dW_j = dz_j x
    assert_eq!(grads[0].weight, vec![0.5, -1.0, 1.5, -0.5, 1.0, -1.5]);
    assert_eq!(grads[0].bias, vec![0.5, -0.5]);
}

/// Adam's first step moves every parameter with a non-zero gradient by about lr.
#[test]
fn adam_first_step_is_lr_sized() {
    let spec = Spec::dense(3, &[(2, Activation::Softmax)]);
    let params = [LayerParams { weight: vec![0.0; 6], bias: vec![0.0; 2] }];
    let mut net: Network<f64> = Network::new(&spec, &params);
    let mut opt = OptimizerState::new(Optimizer::Adam, Hyper::defaults(Optimizer::Adam), &net.tensor_sizes());
    net.train_step(&mut opt, &[1.0, -2.0, 3.0], &[1], Loss::Ce);
    for w in &net.weights[0] {
        assert!(close(w.abs(), 1e-3, 1e-6), "{w}");
    }
}

fn random_spec(rng: &mut ChaCha8Rng, loss: Loss) -> Spec {
    let depth = rng.gen_range(1..=4);
    let mut inputs = rng.gen_range(1..=8);
    let input = inputs;
    let hidden = [Activation::Identity, Activation::Relu, Activation::LeakyRelu, Activation::Sigmoid, Activation::Tanh];
    let layers = (0..depth)
        .map(|i| {
            let outputs = rng.gen_range(1..=7);
            let activation = if i + 1 < depth {
                hidden[rng.gen_range(0..hidden.len())]
            } else if loss == Loss::Ce {
                Activation::Softmax
            } else {
                [Activation::Identity, Activation::Sigmoid, Activation::Tanh, Activation::Softmax][rng.gen_range(0..4)]
            };
            let l = Layer::dense(inputs, outputs, activation);
            inputs = outputs;
            l
        })
        .collect();
    Spec::new(Shape::flat(input), layers)
}

/// dL/dw from backprop against (L(w+h) - L(w-h)) / 2h for every parameter of random nets:
/// 200 dense ones, then 100 convolutional ones (whose first-layer gradients also check every
/// later layer's dX, pooling included).
#[test]
fn gradients_match_central_differences() {
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    for case in 0..300 {
        let loss = if case % 2 == 0 { Loss::Ce } else { Loss::Mse };
        let spec = if case < 200 { random_spec(&mut rng, loss) } else { common::random_cnn(&mut rng, loss, 7) };
        let batch = rng.gen_range(1..=5);
        let mut params = init(&spec, case);
        for p in params.iter_mut() {
            p.bias.iter_mut().for_each(|b| *b = rng.gen_range(-0.5..0.5));
        }
        let x: Vec<f64> = (0..batch * spec.input).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let labels: Vec<usize> = (0..batch).map(|_| rng.gen_range(0..spec.outputs())).collect();
        let net: Network<f64> = Network::new(&spec, &params);
        let (_, grads) = net.gradients(&x, &labels, loss);
        let h = 1e-6;
        let loss_at = |params: &[LayerParams]| Network::<f64>::new(&spec, params).gradients(&x, &labels, loss).0;
        for l in 0..spec.layers.len() {
            for (is_bias, count) in [(false, params[l].weight.len()), (true, params[l].bias.len())] {
                for k in 0..count {
                    let mut plus = params.clone();
                    let mut minus = params.clone();
                    let (p, m) = if is_bias {
                        (&mut plus[l].bias[k], &mut minus[l].bias[k])
                    } else {
                        (&mut plus[l].weight[k], &mut minus[l].weight[k])
                    };
                    *p += h;
                    *m -= h;
                    let numeric = (loss_at(&plus) - loss_at(&minus)) / (2.0 * h);
                    let analytic = if is_bias { grads[l].bias[k] } else { grads[l].weight[k] };
                    assert!(
                        close(numeric, analytic, 1e-5),
                        "case {case} {spec} layer {l} {} {k}: numeric {numeric} backprop {analytic}",
                        if is_bias { "bias" } else { "weight" }
                    );
                }
            }
        }
    }
}
