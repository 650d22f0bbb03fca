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
