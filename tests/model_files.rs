//! Model files written by PyTorch load and compute what PyTorch computed.

use flopnet::engine::{Engine, Settings};
use flopnet::reference::Hyper;
use flopnet::spec::{Loss, Optimizer};
use std::path::Path;

#[test]
fn a_pytorch_safetensors_file_loads_and_predicts_like_pytorch() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let (spec, params) = flopnet::model::load(&dir.join("torch_mlp.safetensors")).unwrap();
    assert_eq!(spec.to_string(), "4-3:tanh-2:softmax");
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("torch_mlp.json")).unwrap()).unwrap();
    let x: Vec<f32> = expected["input"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32))
        .collect();
    let want: Vec<f64> = expected["softmax"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()))
        .collect();
    let settings = Settings {
        loss: Loss::Ce,
        optimizer: Optimizer::Sgd,
        hyper: Hyper::defaults(Optimizer::Sgd),
        max_batch: 2,
        threads: 1,
    };
    let mut engine = Engine::new(&spec, &params, settings).unwrap();
    let got = engine.forward(&x).unwrap();
    for (g, w) in got.iter().zip(&want) {
        assert!((*g as f64 - w).abs() < 1e-6, "flopnet {g} vs PyTorch {w}");
    }
}

#[test]
fn without_a_spec_the_shapes_and_activation_list_describe_the_network() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bare.safetensors");
    let w0 = vec![0u8; 4 * 3 * 4];
    let b0 = vec![0u8; 3 * 4];
    let w1 = vec![0u8; 3 * 2 * 4];
    let b1 = vec![0u8; 2 * 4];
    use safetensors::{Dtype, tensor::TensorView};
    let views = vec![
        ("layers.0.weight", TensorView::new(Dtype::F32, vec![3, 4], &w0).unwrap()),
        ("layers.0.bias", TensorView::new(Dtype::F32, vec![3], &b0).unwrap()),
        ("layers.1.weight", TensorView::new(Dtype::F32, vec![2, 3], &w1).unwrap()),
        ("layers.1.bias", TensorView::new(Dtype::F32, vec![2], &b1).unwrap()),
    ];
    let meta = std::collections::HashMap::from([("activations".to_string(), "sigmoid,softmax".to_string())]);
    std::fs::write(&path, safetensors::serialize(views, Some(meta)).unwrap()).unwrap();
    let (spec, _) = flopnet::model::load(&path).unwrap();
    assert_eq!(spec.to_string(), "4-3:sigmoid-2:softmax");
}

#[test]
fn mismatched_shapes_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.safetensors");
    let w0 = vec![0u8; 4 * 3 * 4];
    let b0 = vec![0u8; 2 * 4];
    use safetensors::{Dtype, tensor::TensorView};
    let views = vec![
        ("layers.0.weight", TensorView::new(Dtype::F32, vec![3, 4], &w0).unwrap()),
        ("layers.0.bias", TensorView::new(Dtype::F32, vec![2], &b0).unwrap()),
    ];
    std::fs::write(&path, safetensors::serialize(views, None).unwrap()).unwrap();
    let err = flopnet::model::load(&path).unwrap_err().to_string();
    assert!(err.contains("layers.0.bias") && err.contains("[3]"), "{err}");
}

/// nn.Conv2d kernels [F, C, kh, kw], max and average pooling, a flatten and nn.Linear, saved by
/// PyTorch: flopnet reads the same numbers into the same network and computes the same outputs.
#[test]
fn a_pytorch_cnn_loads_and_predicts_like_pytorch() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let (spec, params) = flopnet::model::load(&dir.join("torch_cnn.safetensors")).unwrap();
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("torch_cnn.json")).unwrap()).unwrap();
    assert_eq!(spec.to_string(), expected["spec"].as_str().unwrap());
    assert_eq!(params.len(), spec.layers.len(), "one entry per layer, pooling's empty");
    let rows = |key: &str| -> Vec<Vec<f64>> {
        expected[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect())
            .collect()
    };
    let (x, want) = (rows("input"), rows("softmax"));
    let x: Vec<f32> = x.iter().flatten().map(|&v| v as f32).collect();
    let settings = Settings {
        loss: Loss::Ce,
        optimizer: Optimizer::Sgd,
        hyper: Hyper::defaults(Optimizer::Sgd),
        max_batch: want.len(),
        threads: 1,
    };
    let mut engine = Engine::new(&spec, &params, settings).unwrap();
    let got = engine.forward(&x).unwrap();
    assert_eq!(got.len(), want.len() * 5);
    for (g, w) in got.iter().zip(want.iter().flatten()) {
        assert!((*g as f64 - w).abs() < 1e-5, "flopnet {g} vs PyTorch {w}");
    }
    // Saved again by flopnet, the file holds the same tensors under the same names.
    let tmp = tempfile::tempdir().unwrap();
    let again = tmp.path().join("again.safetensors");
    flopnet::model::save(&again, &spec, &params).unwrap();
    assert_eq!(flopnet::model::load(&again).unwrap(), (spec, params));
}

fn as_refs(v: &[(String, Vec<usize>)]) -> Vec<(&str, Vec<usize>)> {
    v.iter().map(|(n, s)| (n.as_str(), s.clone())).collect()
}

/// Writes F32 tensors `(name, shape)` whose values count up by 0.25, with `meta`.
fn write_counting(path: &Path, tensors: &[(&str, Vec<usize>)], meta: Option<(&str, &str)>) {
    use safetensors::{Dtype, tensor::TensorView};
    let mut next = 0.0f32;
    let data: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, s)| {
            let bytes = (0..s.iter().product::<usize>())
                .flat_map(|_| {
                    next += 0.25;
                    next.to_le_bytes()
                })
                .collect();
            (n.to_string(), s.clone(), bytes)
        })
        .collect();
    let views: Vec<_> =
        data.iter().map(|(n, s, b)| (n.clone(), TensorView::new(Dtype::F32, s.clone(), b).unwrap())).collect();
    let meta = meta.map(|(k, v)| std::collections::HashMap::from([(k.to_string(), v.to_string())]));
    std::fs::write(path, safetensors::serialize(views, meta).unwrap()).unwrap();
}

/// PyTorch numbers every module of an nn.Sequential, so Linear, ReLU, Linear, ReLU, Linear saves
/// layers.0, layers.2 and layers.4: all three load, in order, with or without a spec; a bare
/// Sequential's state dict (0.weight, 2.weight) too. A tensor that is no layer's weight or bias
/// is refused by name rather than left out of the network.
#[test]
fn pytorch_sequential_numbering_with_gaps_loads_every_layer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("seq.safetensors");
    let gapped = |prefix: &str| -> Vec<(String, Vec<usize>)> {
        [(0, vec![3, 4]), (2, vec![5, 3]), (4, vec![2, 5])]
            .into_iter()
            .flat_map(|(i, s)| {
                let out = s[0];
                [(format!("{prefix}{i}.weight"), s), (format!("{prefix}{i}.bias"), vec![out])]
            })
            .collect()
    };
    let dense = |prefix: &str| -> Vec<(String, Vec<usize>)> {
        gapped(prefix).into_iter().map(|(n, s)| (n.replace(".2.", ".1.").replace(".4.", ".2."), s)).collect()
    };
    // The same values under consecutive numbers: what the gapped file must read as.
    let plain = dir.path().join("plain.safetensors");
    write_counting(&plain, &as_refs(&dense("layers.")), None);
    let want = flopnet::model::load(&plain).unwrap();
    assert_eq!(want.0.to_string(), "4-3:relu-5:relu-2:softmax");
    for (prefix, meta) in [
        ("layers.", None),
        ("layers.", Some(("spec", "4-3:relu-5:relu-2:softmax"))),
        ("", None),
        ("net.", Some(("activations", "relu,relu,softmax"))),
    ] {
        write_counting(&path, &as_refs(&gapped(prefix)), meta);
        assert_eq!(flopnet::model::load(&path).unwrap(), want, "prefix {prefix:?}, {meta:?}");
    }
    // Anything else in the file is named, not dropped.
    let mut extra = gapped("layers.");
    extra.push(("layers.1.running_mean".into(), vec![3]));
    write_counting(&path, &as_refs(&extra), None);
    let e = flopnet::model::load(&path).unwrap_err().to_string();
    assert!(e.contains("no layer's weight or bias: layers.1.running_mean"), "{e}");
    let mut mixed = gapped("layers.");
    mixed.extend(gapped("head.").into_iter().skip(4));
    write_counting(&path, &as_refs(&mixed), None);
    let e = flopnet::model::load(&path).unwrap_err().to_string();
    assert!(e.contains("different prefixes"), "{e}");
    // A spec or activation list that names fewer layers than the tensors hold.
    write_counting(&path, &as_refs(&gapped("layers.")), Some(("spec", "4-3:relu-5:softmax")));
    let e = flopnet::model::load(&path).unwrap_err().to_string();
    assert!(e.contains("holds 3 weight tensors (layers.0.weight to layers.4.weight)"), "{e}");
    write_counting(&path, &as_refs(&gapped("layers.")), Some(("activations", "relu,softmax")));
    let e = flopnet::model::load(&path).unwrap_err().to_string();
    assert!(e.contains("names 2 activations for the 3 layers"), "{e}");
}
