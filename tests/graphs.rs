//! Networks that are not chains: random graphs written in the compact form (residual sums with
//! identity, projection and zero-padding shortcuts, concatenations, fan-out to three readers,
//! batch normalization, dropout, grouped and depthwise convolutions, global and adaptive
//! pooling) are counted exactly (measured == analytic), and their gradients, batch
//! normalization's included, match central differences.

use flopnet::init;
use flopnet::reference::{Hyper, Network, OptimizerState};
use flopnet::spec::{self, Activation, Defaults, Kind, Loss, Optimizer, Spec};
use flopnet::verify;
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

mod common;

use common::random_graph;

const SMOOTH: [&str; 3] = ["tanh", "sigmoid", "identity"];
const ANY: [&str; 5] = ["relu", "relu6", "tanh", "leaky_relu", "identity"];

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// The ledger is what the reference engine executes, field by field, on random graphs.
    #[test]
    fn measured_equals_analytic_on_random_graphs(seed in any::<u64>(), batch in 1usize..4, opt in 0usize..3) {
        let net = random_graph(seed, &ANY, Loss::Ce);
        let opt = [Optimizer::Sgd, Optimizer::Momentum, Optimizer::Adam][opt];
        let v = verify::step(&net, Loss::Ce, opt, batch, seed);
        let bad: Vec<String> = v.mismatches().map(|r| r.name.clone()).collect();
        prop_assert!(v.all_match(), "{net}, batch {batch}: {bad:?}");
        let e = verify::epoch(&net, Loss::Mse, opt, 3, 7, seed);
        prop_assert!(e.all_match(), "{net}: an epoch of 7 in batches of 3");
    }
}

/// The loss at the network's current parameters (training mode: batch statistics, and the
/// same dropout masks as the gradient's pass, since the step number has not moved).
fn loss_at(net: &Network<f64>, x: &[f64], labels: &[usize], loss: Loss) -> f64 {
    net.gradients(x, labels, loss).0
}

/// Every parameter's gradient against (L(p + h) − L(p − h)) / 2h.
fn check_gradients(net: &Spec, loss: Loss, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let batch = 3;
    let mut params = init::init(net, seed);
    // Batch norm starts at γ = 1, β = 0; move them so that their gradients are not special.
    for (l, p) in net.layers.iter().zip(params.iter_mut()) {
        if l.kind == Kind::BatchNorm {
            p.weight.iter_mut().for_each(|w| *w = rng.gen_range(0.5..1.5));
            p.bias.iter_mut().for_each(|b| *b = rng.gen_range(-0.5..0.5));
        }
    }
    let mut f: Network<f64> = Network::new(net, &params);
    f.seed = seed;
    let x: Vec<f64> = (0..batch * net.input).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let labels: Vec<usize> = (0..batch).map(|_| rng.gen_range(0..net.outputs())).collect();
    let (_, grads) = f.gradients(&x, &labels, loss);
    let h = 1e-6;
    for (l, grad) in grads.iter().enumerate() {
        for (which, n) in [(0, grad.weight.len()), (1, grad.bias.len())] {
            for k in 0..n {
                let set =
                    |f: &mut Network<f64>, v: f64| if which == 0 { f.weights[l][k] = v } else { f.biases[l][k] = v };
                let p0 = if which == 0 { f.weights[l][k] } else { f.biases[l][k] };
                set(&mut f, p0 + h);
                let up = loss_at(&f, &x, &labels, loss);
                set(&mut f, p0 - h);
                let down = loss_at(&f, &x, &labels, loss);
                set(&mut f, p0);
                let numeric = (up - down) / (2.0 * h);
                let g = if which == 0 { grad.weight[k] } else { grad.bias[k] };
                let tol = 1e-5 + 1e-4 * numeric.abs().max(g.abs());
                assert!(
                    (numeric - g).abs() <= tol,
                    "{net}: layer {} ({}) {} {k}: backprop {g}, central difference {numeric}",
                    l + 1,
                    net.layers[l].kind.name(),
                    ["weight", "bias"][which]
                );
            }
        }
    }
}

#[test]
fn gradients_match_central_differences_on_random_graphs() {
    for seed in 0..24 {
        let loss = if seed % 2 == 0 { Loss::Ce } else { Loss::Mse };
        check_gradients(&random_graph(seed, &SMOOTH, loss), loss, seed);
    }
}

#[test]
fn batch_norm_gradients_match_central_differences() {
    // Over a flat vector (BatchNorm1d) and over maps, reading the data and reading a layer.
    for s in [
        "6-bn:tanh-4:tanh-bn:sigmoid-3",
        "2x4x4-bn:tanh-conv3x3x3p1b0-bn:tanh-gap:identity-3",
        "3x3x3-conv1x1x2-bn-gap-2",
    ] {
        let net = spec::parse(s, Defaults { hidden: Activation::Tanh, output: Activation::Softmax }).unwrap();
        check_gradients(&net, Loss::Ce, 5);
    }
}

/// Batch norm keeps PyTorch's running statistics (momentum 0.1, unbiased variance) and uses
/// them at evaluation; dropout is off at evaluation.
#[test]
fn batch_norm_running_statistics_and_evaluation_mode() {
    let net = spec::parse("2-bn:identity-drop0.5-2:identity", Defaults::default()).unwrap();
    let mut params = init::init(&net, 1);
    params[2].weight = vec![1.0, 0.0, 0.0, 1.0];
    let mut f: Network<f64> = Network::new(&net, &params);
    let mut state =
        OptimizerState::new(Optimizer::Sgd, Hyper { lr: 0.0, ..Hyper::defaults(Optimizer::Sgd) }, &f.tensor_sizes());
    let x = [1.0, 10.0, 3.0, 20.0, 5.0, 60.0];
    f.train_step(&mut state, &x, &[0, 1, 0], Loss::Mse);
    // Channel 0: mean 3, biased variance 8/3, unbiased 4.
    let (mean, var) = &f.running[0];
    assert!((mean[0] - 0.3).abs() < 1e-12 && (var[0] - (0.9 + 0.4)).abs() < 1e-12, "{mean:?} {var:?}");
    let y = f.infer(&[3.0, 30.0]);
    let want0 = (3.0 - 0.3) / (1.3f64 + 1e-5).sqrt();
    assert!((y[0] - want0).abs() < 1e-9, "evaluation uses the running statistics and no dropout: {y:?}");
}

/// A depthwise convolution's backward costs what its forward does, product for product
/// (PyTorch's FlopCounterMode counts it as if it were dense; see docs/counting.md).
#[test]
fn depthwise_backward_products_equal_forward() {
    // 10×10 → 8×8 by the first convolution, then depthwise at 8×8.
    let net = spec::parse("8x10x10-conv3x3x8-conv3x3x8p1g8b0-gap-2", Defaults::default()).unwrap();
    let cfg = flopnet::cost::Config { loss: Loss::Ce, optimizer: Optimizer::Sgd, batch: 4, examples: 4, epochs: 1 };
    let l = &flopnet::cost::Ledger::new(&net, &cfg).layers[1];
    assert_eq!(l.forward.mac, 4 * 8 * 8 * 8 * 9);
    assert_eq!(l.backward.weight_grad.mac, l.forward.mac);
    assert_eq!(l.backward.input_grad.mac, l.forward.mac);
    assert_eq!(l.params, 8 * 9);
}

/// Joins and fan-out: a residual block's input is read twice, and the two gradients are summed
/// once, booked to the layer that produced it; the sum itself is one addition per value.
#[test]
fn residual_join_and_fan_out_are_booked_per_the_contract() {
    let net = spec::parse("4x6x6-conv3x3x4p1-[conv3x3x4p1|]-gap-3", Defaults::default()).unwrap();
    let cfg = flopnet::cost::Config { loss: Loss::Ce, optimizer: Optimizer::Sgd, batch: 5, examples: 5, epochs: 1 };
    let ledger = flopnet::cost::Ledger::new(&net, &cfg);
    let (producer, add) = (&ledger.layers[0], &ledger.layers[2]);
    assert_eq!(add.kind, "add");
    assert_eq!(add.reads, ["2", "1"]);
    assert_eq!(add.forward.add, 5 * 144);
    assert_eq!(producer.backward.grad_sum.add, 5 * 144);
    assert!(add.backward.input_grad.is_zero(), "a sum hands its gradient back unchanged");
    assert!(verify::step(&net, Loss::Ce, Optimizer::Sgd, 5, 1).all_match());
}
