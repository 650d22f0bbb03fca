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
