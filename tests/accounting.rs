//! The ledger against the counting engine, over random architectures: measured == analytic for
//! every field of every row.

use flopnet::spec::{Activation, Layer, Loss, Optimizer, Shape, Spec};
use flopnet::verify;
use proptest::prelude::*;

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

fn arb_opt() -> impl Strategy<Value = Optimizer> {
    prop::sample::select(vec![Optimizer::Sgd, Optimizer::Momentum, Optimizer::Adam])
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
