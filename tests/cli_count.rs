//! The `count`, `explain` and `verify` commands as a user runs them.

use serde_json::Value;
use std::process::{Command, Output};

fn flopnet(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flopnet")).args(args).output().expect("the binary runs")
}

fn json(args: &[&str]) -> Value {
    let out = flopnet(args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("valid JSON")
}

#[test]
fn must_show_anchors() {
    let v = json(&["count", "30-30-30", "--json"]);
    assert_eq!(v["params"], 1860);
    assert_eq!(v["per_example"]["forward"]["mul"], 1800);
    let v = json(&["count", "784-800-10", "--json"]);
    assert_eq!(v["params"], 636_010);
    assert_eq!(v["per_example"]["forward"]["mac"], 635_200);
    let v = json(&["count", "1024-30-30-10", "--json"]);
    assert_eq!(v["params"], 31_990);
}

#[test]
fn json_has_the_stable_keys() {
    let v = json(&["count", "784-30-30-10", "--batch", "32", "--json"]);
    for k in ["params", "layers", "per_example", "per_batch", "per_epoch", "training", "memory"] {
        assert!(v.get(k).is_some(), "top-level key {k}");
    }
    let layer = &v["layers"][0];
    assert_eq!(layer["kind"], "dense");
    for k in ["inputs", "outputs", "activation", "params", "forward", "backward", "update"] {
        assert!(layer.get(k).is_some(), "layer key {k}");
    }
    for k in ["delta", "weight_grad", "bias_grad", "input_grad", "total"] {
        assert!(layer["backward"].get(k).is_some(), "backward key {k}");
    }
    assert_eq!(layer["backward"]["input_grad"]["flop"], 0, "the first layer computes no input gradient");
    for k in ["mul", "add", "div", "cmp", "fn", "flop", "mac", "act", "act_grad"] {
        assert!(layer["forward"][k].is_u64(), "record key {k}");
    }
    for scope in ["per_example", "per_batch", "per_epoch", "training"] {
        for k in ["forward", "backward", "loss", "update", "total"] {
            assert!(v[scope][k]["flop"].is_u64(), "{scope}.{k}");
        }
    }
    // Each layer record counts one batch of --batch examples.
    assert_eq!(layer["forward"]["mac"], 32 * 784 * 30);
}

#[test]
fn malformed_specs_are_one_line_and_exit_2() {
    for spec in ["784--10", "784-x-10", "784", "784-0-10", "784-30:swish-10"] {
        let out = flopnet(&["count", spec]);
        assert_eq!(out.status.code(), Some(2), "{spec}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim_end().lines().count(), 1, "{spec}: {err}");
        assert!(err.contains(spec), "{spec}: names the spec: {err}");
    }
}

#[test]
fn toml_file_counts_like_compact_form() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("net.toml");
    std::fs::write(&path, "input = 784\n[[layers]]\nunits = 30\nactivation = \"tanh\"\n[[layers]]\nunits = 10\n")
        .unwrap();
    let a = json(&["count", path.to_str().unwrap(), "--json"]);
    let b = json(&["count", "784-30:tanh-10", "--json"]);
    assert_eq!(a["per_epoch"], b["per_epoch"]);
}

#[test]
fn verify_passes_on_readme_examples() {
    let cases: &[&[&str]] = &[
        &["verify", "30-30-30", "--act", "sigmoid"],
        &["verify", "1024-30-30-10", "--act", "sigmoid", "--batch", "4"],
        &["verify", "784-30:tanh-30-10:softmax", "--optimizer", "adam", "--batch", "3", "--examples", "7"],
        &["verify", "20-16-8", "--act", "leaky_relu", "--loss", "mse", "--optimizer", "momentum", "--batch", "5"],
    ];
    for args in cases {
        let out = flopnet(args);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{args:?}\n{text}");
        assert!(text.contains("rows match"), "{text}");
    }
}

#[test]
fn explain_speaks_the_seed_terms() {
    let out = flopnet(&["explain", "30-30-30", "--act", "sigmoid"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("30 × 30 = 900 multiplications"), "{text}");
    assert!(text.contains("30 sums over 31 terms = 900 additions"), "{text}");
    assert!(text.contains("2,700 of them in dW and dX"), "{text}");
}

const LENET: &str = "1x28x28-conv5x5x32p2:relu-maxpool2-conv5x5x64p2:relu-maxpool2-1024-10";

#[test]
fn a_cnn_counts_with_kinds_and_shapes() {
    let v = json(&["count", LENET, "--batch", "1", "--json"]);
    let layers = v["layers"].as_array().unwrap();
    let kinds: Vec<&str> = layers.iter().map(|l| l["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["conv2d", "maxpool", "conv2d", "maxpool", "dense", "dense"]);
    let shapes: Vec<(Value, Value)> =
        layers.iter().map(|l| (l["input_shape"].clone(), l["output_shape"].clone())).collect();
    let s = |v: [u64; 3]| serde_json::json!(v);
    assert_eq!(shapes[0], (s([1, 28, 28]), s([32, 28, 28])));
    assert_eq!(shapes[1], (s([32, 28, 28]), s([32, 14, 14])));
    assert_eq!(shapes[3], (s([64, 14, 14]), s([64, 7, 7])));
    assert_eq!(shapes[4], (s([64, 7, 7]), s([1024, 1, 1])));
    assert_eq!(v["params"], 832 + 51_264 + 3_212_288 + 10_250);
    assert_eq!(layers[0]["params"], 832);
    assert_eq!(layers[1]["params"], 0);
    // F·H'·W'·C·kh·kw = 32·28·28·1·5·5: each of the 25,088 outputs reads a 1×5×5 window.
    assert_eq!(layers[0]["forward"]["mac"], 627_200);
    assert_eq!(layers[2]["forward"]["mac"], 64 * 14 * 14 * 32 * 25);
    // The table names each layer's kind and shapes.
    let out = flopnet(&["count", LENET]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for want in ["conv5x5x32p2", "1x28x28 → 32x28x28", "maxpool2", "32x28x28 → 32x14x14", "64x7x7 → 1024"] {
        assert!(text.contains(want), "missing {want}: {text}");
    }
}

#[test]
fn a_cnn_predicts_its_time() {
    let v = json(&["count", LENET, "--batch", "32", "--device", "h200", "--json"]);
    let p = &v["predicted"];
    assert_eq!(p["layers"].as_array().unwrap().len(), 6);
    assert!(p["step_seconds"].as_f64().unwrap() > 0.0);
}

#[test]
fn malformed_cnn_specs_are_one_line_and_exit_2() {
    let cases = [
        ("1x28x28-conv5x5-10", "convKHxKWxF"),
        ("1x28x28-conv5x5x32q1-10", "unknown option"),
        ("1x28x28-maxpool2:relu-10", "takes no activation"),
        ("1x4x4-conv5x5x8-10", "larger than its padded input"),
        ("784-conv3x3x8-10", "needs an image"),
        ("1x28x28-conv3x3x8", "ends in a dense layer"),
        ("1x28-10", "not an input"),
    ];
    for (spec, want) in cases {
        let out = flopnet(&["count", spec]);
        assert_eq!(out.status.code(), Some(2), "{spec}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim_end().lines().count(), 1, "{spec}: {err}");
        assert!(err.contains(spec) && err.contains(want), "{spec}: {err}");
    }
}

#[test]
fn explain_speaks_of_kernels_and_feature_maps() {
    let out = flopnet(&["explain", LENET]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for want in [
        "32 filters, each a 1×5×5 kernel",
        "32 feature maps of 28×28",
        "F·H'·W'·C·kh·kw = 32·28·28·1·5·5 = 627,200 multiplications",
        "32 × 1 × 5 × 5 = 800 weights + 32 biases = 832 parameters",
        "784 × 25,088 =\n    19,668,992 multiplications",
        "k²−1 = 3 comparisons each",
        "reading the 64x7x7 maps flattened",
    ] {
        assert!(text.contains(want), "missing {want:?}:\n{text}");
    }
    let avg = String::from_utf8_lossy(&flopnet(&["explain", "1x8x8-avgpool2-10"]).stdout).to_string();
    assert!(avg.contains("one\n    multiplication by 1/4 each"), "{avg}");
}

/// `count --ranks P`: the ring all-reduce's bytes and additions per rank, in the JSON and the text.
#[test]
fn count_with_ranks_adds_the_all_reduce_of_the_gradients() {
    let out = flopnet(&["count", "784-800-10", "--batch", "128", "--ranks", "4", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let c = &v["communication"];
    let n = 636_010.0; // 784·800 + 800 + 800·10 + 10
    assert_eq!(c["per_step"]["bytes_sent_per_rank"], 2.0 * 3.0 / 4.0 * 4.0 * n);
    assert_eq!(c["per_step"]["additions_per_rank"], 3.0 / 4.0 * n);
    assert_eq!(c["steps_per_epoch"], 469); // 60,000 examples in batches of 128
    assert_eq!(c["per_epoch"]["bytes_sent_total"], 469 * 2 * 3 * 4 * 636_010u64);
    let plain = flopnet(&["count", "784-800-10", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&plain.stdout).unwrap();
    assert!(v.get("communication").is_none(), "one rank sends nothing");
    let text = String::from_utf8_lossy(&flopnet(&["count", "784-800-10", "--ranks", "2"]).stdout).into_owned();
    assert!(text.contains("ring all-reduce of 636,010 gradients over 2 ranks"), "{text}");
}

/// `count --predict --ranks P` adds the ring's latency and bytes over the given link to each
/// rank's compute, and needs that link.
#[test]
fn count_predicts_a_step_on_several_ranks_from_the_link() {
    let args = ["count", "784-800-10", "--batch", "128", "--ranks", "8", "--predict", "--gflops", "100"];
    let out =
        flopnet(&[&args[..], &["--bandwidth", "50", "--link-gbps", "10", "--link-latency-us", "5", "--json"]].concat());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let p = &v["predicted_ranks"];
    // 14 messages of 5 µs, and 2·7/8·4·636,010 bytes at 10 Gbit/s.
    let comm = 14.0 * 5e-6 + 2.0 * 7.0 / 8.0 * 4.0 * 636_010.0 * 8.0 / 10e9;
    assert!((p["communication_seconds"].as_f64().unwrap() - comm).abs() < 1e-12, "{p}");
    let step = p["step_seconds"].as_f64().unwrap();
    assert!((step - p["compute_seconds"].as_f64().unwrap() - comm).abs() < 1e-12);
    let missing = flopnet(&[&args[..], &["--bandwidth", "50"]].concat());
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("--link-gbps G --link-latency-us L"));
}

/// A zoo model's table names each layer's kind (the ledger keeps its layers; a zoo name does not
/// read back into them, and every row once said "dense").
#[test]
fn zoo_tables_name_each_kind() {
    let out = flopnet(&["count", "resnet20"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let kinds: Vec<&str> = text.lines().filter_map(|l| l.split_whitespace().nth(1)).collect();
    for want in ["conv3x3x16p1b0", "conv3x3x32s2p1b0", "bn", "add", "zpad32s2", "gap"] {
        assert!(kinds.iter().any(|k| k.starts_with(want)), "no {want} row in:\n{text}");
    }
    assert!(!kinds.contains(&"dense") || kinds.iter().filter(|k| **k == "dense").count() == 1, "{text}");
}
