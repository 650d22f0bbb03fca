//! Batch normalization folded into the layer before it, for inference.
//!
//! At evaluation a batch normalization is an affine map per channel, z = x·s + t with
//! s = γ/√(var+eps) and t = β − mean·s (`layers::batchnorm::infer`). When it reads a
//! convolution or a dense layer that nothing else reads and that has no activation of its own,
//! the two are one layer: filter (or neuron) f's weights times s_f, and the bias
//! (b_f or 0 − mean_f)·s_f + β_f, with the normalization's activation. [`fold`] rewrites a
//! network so; every other batch normalization (after a join, a pooling, an activation, or
//! behind a layer read twice) stays as it is. The folded network computes the same function
//! (`tests::folded_networks_infer_as_the_unfolded_ones`), with one product and one addition
//! less per value of each folded normalization.

use crate::engine::{Engine, RunningStats, Settings};
use crate::error::{Error, Result};
use crate::init::LayerParams;
use crate::layers::batchnorm::EPS;
use crate::spec::{Conv, Kind, Source, Spec};

/// A network with its batch normalizations folded.
#[derive(Clone, Debug)]
pub struct Folded {
    pub spec: Spec,
    /// Per layer of the folded spec.
    pub params: Vec<LayerParams>,
    /// Per layer of the folded spec: the running (mean, variance) of the normalizations that
    /// stayed, empty for the other layers.
    pub running: Vec<(Vec<f64>, Vec<f64>)>,
    /// For each layer of the folded spec, the layer of the original it comes from.
    pub origin: Vec<usize>,
    /// Batch normalizations folded.
    pub folded: usize,
}

/// For each layer, the convolution or dense layer a batch normalization folds into (None for
/// every other layer and for a normalization that does not fold).
pub fn foldable(spec: &Spec) -> Vec<Option<usize>> {
    spec.layers
        .iter()
        .enumerate()
        .map(|(l, layer)| {
            if layer.kind != Kind::BatchNorm {
                return None;
            }
            let [Source::Node(p)] = spec.sources[l][..] else { return None };
            let before = &spec.layers[p];
            let affine = matches!(before.kind, Kind::Dense | Kind::Conv2d(_));
            (affine && before.activation == crate::spec::Activation::Identity && spec.consumers(p) == 1).then_some(p)
        })
        .collect()
}

/// The folded network's structure alone (what `count` prices): each folding normalization
/// removed, the layer before it given a bias and the normalization's activation. Also returns,
/// per layer of the result, the layer of `spec` it comes from.
pub fn fold_spec(spec: &Spec) -> (Spec, Vec<usize>) {
    let into = foldable(spec);
    let mut layers = spec.layers.clone();
    for (l, p) in into.iter().enumerate() {
        if let Some(p) = *p {
            if let Kind::Conv2d(cv) = layers[p].kind {
                layers[p].kind = Kind::Conv2d(Conv { bias: true, ..cv });
            }
            layers[p].activation = spec.layers[l].activation;
        }
    }
    // Where each original layer's output is in the result: a folded normalization's output is
    // that of the layer it folded into.
    let mut index = vec![0; spec.layers.len()];
    let mut origin = Vec::new();
    for l in 0..spec.layers.len() {
        match into[l] {
            Some(p) => index[l] = index[p],
            None => {
                index[l] = origin.len();
                origin.push(l);
            }
        }
    }
    let source = |s: &Source| match *s {
        Source::Input => Source::Input,
        Source::Node(j) => Source::Node(index[j]),
    };
    let folded = Spec {
        input: spec.input,
        input_shape: spec.input_shape,
        layers: origin.iter().map(|&l| layers[l]).collect(),
        sources: origin.iter().map(|&l| spec.sources[l].iter().map(source).collect()).collect(),
        names: origin.iter().map(|&l| spec.names[l].clone()).collect(),
        label: spec.label.clone(),
    };
    (folded, origin)
}

/// Folds every batch normalization that can be ([`foldable`]) into the layer before it, given
/// each layer's parameters (γ and β for a normalization) and running statistics (mean and
/// variance per channel for a normalization, anything for the other layers).
pub fn fold(spec: &Spec, params: &[LayerParams], running: &[(Vec<f64>, Vec<f64>)]) -> Result<Folded> {
    let n = spec.layers.len();
    if params.len() != n || running.len() != n {
        return Err(Error::Usage(format!(
            "folding batch normalization needs parameters and running statistics for each of the {n} layers, got {} and {}",
            params.len(),
            running.len()
        )));
    }
    let into = foldable(spec);
    let mut params = params.to_vec();
    for (l, p) in into.iter().enumerate() {
        let Some(p) = *p else { continue };
        let (gamma, beta) = (&params[l].weight, &params[l].bias);
        let (mean, var) = &running[l];
        let c = spec.layers[l].input.c;
        if gamma.len() != c || beta.len() != c || mean.len() != c || var.len() != c {
            return Err(Error::Usage(format!(
                "layer {} (batch normalization) needs γ, β, mean and variance of {c} values each",
                spec.names[l]
            )));
        }
        let scale: Vec<f64> = (0..c).map(|ch| gamma[ch] / (var[ch] + EPS).sqrt()).collect();
        let shift: Vec<f64> = (0..c).map(|ch| beta[ch] - mean[ch] * scale[ch]).collect();
        let before = &mut params[p];
        let per = before.weight.len() / c;
        for (row, &s) in before.weight.chunks_exact_mut(per).zip(&scale) {
            row.iter_mut().for_each(|w| *w *= s);
        }
        before.bias = if before.bias.is_empty() {
            shift
        } else {
            before.bias.iter().zip(&scale).zip(&shift).map(|((&b, &s), &t)| b * s + t).collect()
        };
    }
    let (folded, origin) = fold_spec(spec);
    Ok(Folded {
        params: origin.iter().map(|&l| params[l].clone()).collect(),
        running: origin
            .iter()
            .map(|&l| if spec.layers[l].kind == Kind::BatchNorm { running[l].clone() } else { Default::default() })
            .collect(),
        folded: spec.layers.len() - origin.len(),
        spec: folded,
        origin,
    })
}

/// Batch normalization's running statistics per layer, in f64, from the engine's form
/// ([mean][variance] per normalization, in layer order; empty pairs for the other layers).
pub fn running_per_layer(spec: &Spec, stats: &RunningStats) -> Result<Vec<(Vec<f64>, Vec<f64>)>> {
    Ok(stats.per_layer(spec)?.into_iter().map(Option::unwrap_or_default).collect())
}

/// The fast engine for evaluation of a network with its batch normalizations folded
/// (`eval`, `bench --forward-only`): the folded network's engine, the statistics of the
/// normalizations that stay restored, and what was folded.
pub fn inference_engine(
    spec: &Spec,
    params: &[LayerParams],
    running: &[(Vec<f64>, Vec<f64>)],
    settings: Settings,
) -> Result<(Engine, Folded)> {
    let folded = fold(spec, params, running)?;
    let mut engine = Engine::new(&folded.spec, &folded.params, settings)?;
    let kept = folded.running.iter().map(|(m, v)| Some((m.as_slice(), v.as_slice())));
    engine.set_running_stats(&RunningStats::from_per_layer(&folded.spec, kept))?;
    Ok((engine, folded))
}

/// A network's inference cost beside that of its folded form (`count` shows both).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct InferenceCost {
    pub batch: usize,
    /// FLOPs of the forward passes of one batch at evaluation, as given.
    pub flops: u128,
    /// The same with the foldable batch normalizations folded.
    pub folded_flops: u128,
    /// Batch normalizations folded, and those that stay.
    pub folded: usize,
    pub kept: usize,
}

/// [`InferenceCost`] for a batch of `batch`, or None when the network has no batch
/// normalization.
pub fn inference_cost(spec: &Spec, batch: usize) -> Option<InferenceCost> {
    let norms = spec.layers.iter().filter(|l| l.kind == Kind::BatchNorm).count();
    if norms == 0 {
        return None;
    }
    let folded = foldable(spec).iter().flatten().count();
    let b = batch as u128;
    Some(InferenceCost {
        batch,
        flops: crate::cost::inference(spec, b).flop(),
        folded_flops: crate::cost::inference(&fold_spec(spec).0, b).flop(),
        folded,
        kept: norms - folded,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::Network;
    use crate::spec::{Defaults, parse};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// A random network text: convolutions (plain, strided, grouped, depthwise, with and
    /// without a bias) followed by a normalization, residual blocks, normalizations that do
    /// not fold (after an activation, a join, a pooling, or behind a layer read twice), and a
    /// dense layer followed by one.
    fn random_spec(rng: &mut ChaCha8Rng) -> String {
        let mut c = 4;
        let mut parts = vec!["4x8x8".to_string()];
        let b0 = |rng: &mut ChaCha8Rng| if rng.gen_bool(0.5) { "b0" } else { "" };
        for _ in 0..rng.gen_range(3..=7) {
            let item = match rng.gen_range(0..8) {
                0 => format!("conv3x3x{c}p1{}-bn:relu", b0(rng)),
                1 => format!("conv3x3x{c}p1{}:relu-bn", b0(rng)),
                2 => format!("[conv3x3x{c}p1b0-bn:relu-conv3x3x{c}p1{}-bn]:relu", b0(rng)),
                3 => "bn:relu".to_string(),
                4 => format!("conv3x3x{c}p1g{c}b0-bn:relu6"),
                5 => {
                    c *= 2;
                    format!("conv3x3x{c}s2p1g2{}-bn", b0(rng))
                }
                6 => format!("conv1x1x{c}{}-[bn|]", b0(rng)),
                _ => "maxpool2s1-bn".to_string(),
            };
            parts.push(item);
        }
        parts.push("gap-12-bn:relu-5".to_string());
        parts.join("-")
    }

    #[test]
    fn folded_networks_infer_as_the_unfolded_ones() {
        let mut rng = ChaCha8Rng::seed_from_u64(29);
        let (mut folds, mut kept) = (0, 0);
        for case in 0..40 {
            let text = random_spec(&mut rng);
            let spec = match parse(&text, Defaults::default()) {
                Ok(s) => s,
                Err(e) => panic!("{text}: {e}"),
            };
            let mut params = Vec::new();
            let mut running = Vec::new();
            for l in &spec.layers {
                let bn = l.kind == Kind::BatchNorm;
                let mut draw = |n: usize, lo: f64, hi: f64| (0..n).map(|_| rng.gen_range(lo..hi)).collect::<Vec<f64>>();
                let (w, b) = if bn {
                    (draw(l.weight_count(), 0.5, 1.5), draw(l.bias_count(), -0.5, 0.5))
                } else {
                    (draw(l.weight_count(), -0.4, 0.4), draw(l.bias_count(), -0.2, 0.2))
                };
                params.push(LayerParams { weight: w, bias: b });
                running.push(if bn {
                    (draw(l.input.c, -1.0, 1.0), draw(l.input.c, 0.2, 2.0))
                } else {
                    Default::default()
                });
            }
            let folded = fold(&spec, &params, &running).unwrap();
            let n_fold = foldable(&spec).iter().flatten().count();
            assert_eq!(folded.spec.layers.len(), spec.layers.len() - n_fold, "{text}");
            let n_bn = |s: &Spec| s.layers.iter().filter(|l| l.kind == Kind::BatchNorm).count();
            folds += n_fold;
            kept += n_bn(&folded.spec);
            let mut net = Network::<f64>::new(&spec, &params);
            net.running = running.clone();
            let mut fnet = Network::<f64>::new(&folded.spec, &folded.params);
            fnet.running = folded.running.clone();
            let batch = 3;
            let x: Vec<f64> = (0..batch * spec.input).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let (want, got) = (net.infer(&x), fnet.infer(&x));
            assert_eq!(want.len(), got.len());
            let scale = want.iter().fold(0f64, |m, v| m.max(v.abs()));
            for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
                assert!((g - w).abs() <= 1e-9 * scale, "case {case} {text}: output {i}: {g} vs {w}");
            }
            // The unfolded network's hidden values differ when a normalization is dropped
            // without folding: the check above is not vacuous.
            if n_fold > 0 {
                let (dropped, _) = fold_spec(&spec);
                let mut raw = Network::<f64>::new(
                    &dropped,
                    &folded.origin.iter().map(|&l| params[l].clone()).collect::<Vec<_>>(),
                );
                raw.running = folded.running.clone();
                let other = raw.infer(&x);
                assert!(other.iter().zip(&want).any(|(a, b)| (a - b).abs() > 1e-6 * scale), "{text}");
            }
        }
        assert!(folds >= 40 && kept >= 20, "{folds} folded, {kept} kept");
    }

    #[test]
    fn folding_saves_each_folded_normalization_one_product_and_one_addition_per_value() {
        // conv (no bias) → bn:relu folds: the conv gains its bias addition (one per output) and
        // the normalization's product, addition and per-channel scale and shift go; the
        // normalization after the join stays.
        let spec = parse("4x6x6-conv3x3x4p1b0-bn:relu-[conv3x3x4p1b0-bn]-bn-5", Defaults::default()).unwrap();
        let c = inference_cost(&spec, 2).unwrap();
        assert_eq!((c.folded, c.kept, c.batch), (2, 1, 2));
        let values = 2 * 4 * 6 * 6;
        // Per folded normalization: −(mul: n + C, add: n + 2C, div: C, sqrt: C) + (add: n).
        let per_norm = (values + 4) + (2 * 4) + 4 + 4;
        assert_eq!(c.flops - c.folded_flops, 2 * per_norm as u128);
        assert_eq!(inference_cost(&parse("4-3", Defaults::default()).unwrap(), 2), None);
    }

    #[test]
    fn the_folded_fast_engine_evaluates_as_the_unfolded_one() {
        // What `eval` runs: the engine of the folded network, its statistics restored from the
        // engine's form, against the unfolded engine with the same statistics.
        let mut rng = ChaCha8Rng::seed_from_u64(31);
        let text = "3x8x8-conv3x3x8s2p1b0-bn:relu-[conv3x3x8p1g8b0-bn:relu6-conv1x1x8b0-bn]:relu-bn-gap-6";
        let spec = parse(text, Defaults::default()).unwrap();
        let params = crate::init::init(&spec, 5);
        let mut values = Vec::new();
        for l in spec.layers.iter().filter(|l| l.kind == Kind::BatchNorm) {
            values.extend((0..l.input.c).map(|_| rng.gen_range(-0.5f32..0.5)));
            values.extend((0..l.input.c).map(|_| rng.gen_range(0.3f32..2.0)));
        }
        let stats = RunningStats { values, batches: vec![7; 4] };
        let settings = Settings {
            loss: crate::spec::Loss::Ce,
            optimizer: crate::spec::Optimizer::Sgd,
            hyper: crate::reference::Hyper::defaults(crate::spec::Optimizer::Sgd),
            max_batch: 5,
            threads: 2,
        };
        let mut plain = Engine::new(&spec, &params, settings).unwrap();
        plain.set_running_stats(&stats).unwrap();
        let running = running_per_layer(&spec, &stats).unwrap();
        let (mut folded, f) = inference_engine(&spec, &params, &running, settings).unwrap();
        assert_eq!((f.folded, f.spec.layers.len()), (3, spec.layers.len() - 3));
        let x: Vec<f32> = (0..5 * spec.input).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let want = plain.forward(&x).unwrap().to_vec();
        let got = folded.forward(&x).unwrap();
        for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
            assert!((g - w).abs() <= 1e-4 * w.abs().max(1e-3), "output {i}: {g} vs {w}");
        }
        assert!(running_per_layer(&spec, &RunningStats { values: vec![0.0; 5], batches: vec![] }).is_err());
    }

    #[test]
    fn parameters_of_the_wrong_size_are_refused() {
        let spec = parse("4x6x6-conv3x3x4p1b0-bn:relu-3", Defaults::default()).unwrap();
        let params: Vec<LayerParams> = spec
            .layers
            .iter()
            .map(|l| LayerParams { weight: vec![0.5; l.weight_count()], bias: vec![0.0; l.bias_count()] })
            .collect();
        let running = vec![Default::default(), (vec![0.0; 3], vec![1.0; 3]), Default::default()];
        let e = fold(&spec, &params, &running).unwrap_err().to_string();
        assert!(e.contains("layer 2") && e.contains("4 values"), "{e}");
        assert!(fold(&spec, &params[..2], &running).is_err());
    }
}
