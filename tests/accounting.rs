//! The ledger against the counting engine, over random architectures: measured == analytic for
//! every field of every row.

use flopnet::spec::{Activation, Layer, Loss, Optimizer, Shape, Spec, UpdateRule};
use flopnet::verify;
use proptest::prelude::*;
use rand::SeedableRng;

mod common;

const HIDDEN: [Activation; 5] =
    [Activation::Identity, Activation::Relu, Activation::LeakyRelu, Activation::Sigmoid, Activation::Tanh];

fn arb_spec() -> impl Strategy<Value = (Spec, Loss)> {
    let widths = prop::collection::vec(1usize..=64, 2..=7);
    let acts = prop::collection::vec(prop::sample::select(&HIDDEN[..]), 6);
    (widths, acts, prop::sample::select(&Activation::ALL[..]), prop::bool::ANY).prop_map(|(w, acts, out, ce)| {
        let n = w.len() - 1;
        let layers = (0..n)
            .map(|i| {
                let activation = if i + 1 < n {
                    acts[i]
                } else if ce {
                    Activation::Softmax
                } else {
                    out
                };
                Layer::dense(w[i], w[i + 1], activation)
            })
            .collect();
        (Spec::new(Shape::flat(w[0]), layers), if ce { Loss::Ce } else { Loss::Mse })
    })
}

/// Every optimizer, with and without weight decay.
fn arb_opt() -> impl Strategy<Value = UpdateRule> {
    let opts = prop::sample::select(vec![Optimizer::Sgd, Optimizer::Momentum, Optimizer::Adam, Optimizer::AdamW]);
    (opts, prop::bool::ANY).prop_map(|(o, decay)| UpdateRule::new(o, if decay { 5e-4 } else { 0.0 }))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn one_step_measured_equals_analytic((spec, loss) in arb_spec(), opt in arb_opt(), batch in 1usize..=17, seed in 0u64..1000) {
        let v = verify::step(&spec, loss, opt, batch, seed);
        let bad: Vec<String> = v.mismatches().map(|r| format!("{}: analytic {:?} measured {:?}", r.name, r.analytic, r.measured)).collect();
        prop_assert!(bad.is_empty(), "{}: {:#?}", v.what, bad);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(100))]

    #[test]
    fn ragged_epoch_measured_equals_analytic((spec, loss) in arb_spec(), opt in arb_opt(), batch in 1usize..=9, examples in 1usize..=30) {
        let v = verify::epoch(&spec, loss, opt, batch, examples, 3);
        prop_assert!(v.all_match(), "{}", flopnet::report::verify_text(&v));
    }
}

/// A random CNN from a seed (the generator covers strides, paddings, overlapping pools).
fn arb_cnn() -> impl Strategy<Value = (Spec, Loss)> {
    (any::<u64>(), prop::bool::ANY).prop_map(|(seed, ce)| {
        let loss = if ce { Loss::Ce } else { Loss::Mse };
        (common::random_cnn(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed), loss, 9), loss)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn cnn_step_measured_equals_analytic((spec, loss) in arb_cnn(), opt in arb_opt(), batch in 1usize..=5, seed in 0u64..1000) {
        let v = verify::step(&spec, loss, opt, batch, seed);
        let bad: Vec<String> = v.mismatches().map(|r| format!("{}: analytic {:?} measured {:?}", r.name, r.analytic, r.measured)).collect();
        prop_assert!(bad.is_empty(), "{}: {:#?}", v.what, bad);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    #[test]
    fn cnn_ragged_epoch_measured_equals_analytic((spec, loss) in arb_cnn(), opt in arb_opt(), batch in 1usize..=4, examples in 1usize..=9) {
        let v = verify::epoch(&spec, loss, opt, batch, examples, 3);
        prop_assert!(v.all_match(), "{}", flopnet::report::verify_text(&v));
    }
}

/// The optimizer rows of 4-3-2 (23 parameters: 12 + 3, then 6 + 2) by hand: weight decay adds
/// one multiplication and one addition per parameter (g + λ·w) to SGD's one and one (w − lr·g),
/// momentum's two and two and Adam's six, four, two divisions and a square root; AdamW adds
/// one multiplication per parameter (w·(1 − lr·λ)) and, once a step, lr·λ and 1 − lr·λ.
#[test]
fn weight_decay_and_adamw_update_rows_by_hand() {
    use flopnet::cost::{Config, Ledger};
    use flopnet::ops::{FnCounts, Ops};
    let spec = flopnet::spec::parse("4-3-2", flopnet::spec::Defaults::default()).unwrap();
    let ledger = |optimizer, lambda| {
        let cfg = Config { loss: Loss::Ce, optimizer, batch: 2, examples: 5, epochs: 2 };
        Ledger::try_decayed(&spec, &cfg, lambda).unwrap()
    };
    let ops = |mul, add, div, sqrt| Ops { mul, add, div, fns: FnCounts { sqrt, ..FnCounts::default() }, ..Ops::ZERO };
    let p = 23;
    for (opt, lambda, per_param, per_step) in [
        (Optimizer::Sgd, 0.0, ops(1, 1, 0, 0), ops(0, 0, 0, 0)),
        (Optimizer::Sgd, 1e-4, ops(2, 2, 0, 0), ops(0, 0, 0, 0)),
        (Optimizer::Momentum, 5e-4, ops(3, 3, 0, 0), ops(0, 0, 0, 0)),
        (Optimizer::Adam, 1e-2, ops(7, 5, 2, 1), ops(2, 2, 1, 1)),
        (Optimizer::AdamW, 1e-2, ops(7, 4, 2, 1), ops(3, 3, 1, 1)),
        // AdamW scales by 1 − lr·0 = 1 all the same, as torch.optim.AdamW does.
        (Optimizer::AdamW, 0.0, ops(7, 4, 2, 1), ops(3, 3, 1, 1)),
    ] {
        let l = ledger(opt, lambda);
        assert_eq!(l.layers[0].update, per_param * 15, "{opt} λ {lambda}");
        assert_eq!(l.layers[1].update, per_param * 8, "{opt} λ {lambda}");
        assert_eq!(l.optimizer_step, per_step, "{opt} λ {lambda}");
        // 5 examples in batches of 2: 3 steps an epoch, 2 epochs.
        assert_eq!(l.per_batch.update, per_param * p + per_step, "{opt} λ {lambda}");
        assert_eq!(l.training.update, (per_param * p + per_step) * 6, "{opt} λ {lambda}");
    }
}

/// The contract's anchor: the TensorFlow-tutorial CNN's first convolution at B = 1 performs
/// 32·28·28·1·5·5 = 627,200 multiply-adds, and backward's products are twice forward's (dW and
/// dX each as many as forward) for the second convolution.
#[test]
fn tutorial_cnn_anchor() {
    use flopnet::cost::{Config, Ledger};
    let spec = flopnet::spec::parse(
        "1x28x28-conv5x5x32p2:relu-maxpool2-conv5x5x64p2:relu-maxpool2-1024-10",
        flopnet::spec::Defaults::default(),
    )
    .unwrap();
    let cfg = Config { loss: Loss::Ce, optimizer: Optimizer::Sgd, batch: 1, examples: 1, epochs: 1 };
    let l = Ledger::new(&spec, &cfg);
    assert_eq!(l.layers[0].kind, "conv2d");
    assert_eq!(l.layers[0].forward.mac, 627_200);
    assert_eq!(l.layers[0].forward.mul, 627_200);
    assert!(l.layers[0].backward.input_grad.is_zero(), "nothing needs the gradient of the image");
    let c2 = &l.layers[2];
    assert_eq!(c2.forward.mac, 64 * 14 * 14 * 32 * 25);
    assert_eq!(c2.backward.weight_grad.mul + c2.backward.input_grad.mul, 2 * c2.forward.mul);
    assert_eq!(l.layers[1].forward.cmp, 32 * 14 * 14 * 3);
    assert_eq!(l.params, 3_274_634);
}
