//! ONNX in and out: files exported from PyTorch (tests/fixtures/onnx, made by
//! tools/onnx_fixtures.py) read as the networks they are, counted as the zoo counts the same
//! models, refused clearly when they hold what flopnet does not count or are broken, and
//! flopnet's own trained models written as ONNX that ONNX Runtime runs to the same outputs.

use flopnet::cost::{Config, Ledger};
use flopnet::engine::{Engine, Settings};
use flopnet::onnx::{self, Options};
use flopnet::reference::Hyper;
use flopnet::spec::{self, Activation, Defaults, Kind, Loss, Optimizer};
use prost::Message;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use tract_onnx::pb;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/onnx").join(name)
}

fn flopnet(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flopnet")).args(args).output().expect("the binary runs")
}

fn text(o: &Output) -> (String, String) {
    (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

/// A ledger as JSON without names: its layers as a sorted multiset (independent branches may
/// come in another order).
fn ledger_json(l: &Ledger) -> (serde_json::Value, Vec<String>) {
    let mut v = serde_json::to_value(l).unwrap();
    let o = v.as_object_mut().unwrap();
    o.remove("spec");
    let mut layers: Vec<String> = o
        .remove("layers")
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let mut l = l.clone();
            l.as_object_mut().unwrap().remove("name");
            l.as_object_mut().unwrap().remove("reads");
            l.to_string()
        })
        .collect();
    layers.sort();
    (v, layers)
}

#[test]
fn torchvision_resnet18_and_mobilenet_v2_count_exactly_as_the_zoo() {
    // Graph-only exports (legacy exporter, training mode): the weights' shapes without values.
    for (file, zoo, params) in
        [("resnet18_graph.onnx", "resnet18", 11_689_512u128), ("mobilenet_v2_graph.onnx", "mobilenet_v2", 3_504_872)]
    {
        let m = onnx::read(&fixture(file), &Options::default(), Defaults::default()).unwrap();
        let z = flopnet::zoo::build(zoo, Default::default()).unwrap().unwrap();
        assert_eq!(m.spec.params(), params, "{file}");
        assert!(m.notes.is_empty(), "{file}: {:?}", m.notes);
        assert!(!m.has_weights);
        for opt in [Optimizer::Sgd, Optimizer::Adam] {
            let cfg = Config { loss: Loss::Ce, optimizer: opt, batch: 32, examples: 1000, epochs: 2 };
            assert_eq!(
                ledger_json(&Ledger::new(&m.spec, &cfg)),
                ledger_json(&Ledger::new(&z, &cfg)),
                "{file} against the zoo's {zoo}"
            );
        }
    }
}

#[test]
fn graph_only_files_count_but_do_not_load_as_models() {
    let path = fixture("resnet18_graph.onnx");
    let out = flopnet(&["count", path.to_str().unwrap()]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("11,689,512"), "{stdout}");
    let out = flopnet(&["eval", "--model", path.to_str().unwrap()]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("resnet18_graph.onnx.data") && stderr.lines().count() == 1, "{stderr}");
}

#[test]
fn a_small_cnn_reads_every_image_operator_with_its_weights_and_statistics() {
    let m = onnx::read_model(&fixture("cnn_legacy.onnx")).unwrap();
    let kinds: Vec<&str> = m.spec.layers.iter().map(|l| l.kind.name()).collect();
    assert_eq!(
        kinds,
        [
            "conv2d",
            "batchnorm",
            "maxpool",
            "conv2d",
            "batchnorm",
            "add",
            "conv2d",
            "concat",
            "avgpool",
            "global_avgpool",
            "dropout",
            "dense"
        ]
    );
    let acts: Vec<Activation> = m.spec.layers.iter().map(|l| l.activation).collect();
    use Activation::*;
    assert_eq!(
        acts,
        [Identity, Relu, Identity, Identity, Relu6, Identity, Sigmoid, Identity, Identity, Identity, Identity, Softmax]
    );
    let Kind::Conv2d(dw) = m.spec.layers[3].kind else { panic!() };
    assert_eq!((dw.groups, dw.bias), (8, false));
    assert_eq!(m.spec.layers[2].kind, Kind::MaxPool(spec::Pool { k: 3, stride: 2, pad: 1, ceil: false }));
    // PyTorch's parameter count: 224 + 16 + 72 + 16 + 36 + 65.
    assert_eq!(m.spec.params(), 429);
    assert!(m.notes.is_empty(), "{:?}", m.notes);
    // Weights and running statistics as the file holds them: a fresh BatchNorm2d's scale 1, and
    // the statistics the training-mode export's trace moved from 0 and 1.
    assert_eq!(m.params[1].weight, vec![1.0; 8]);
    let (mean, var) = m.stats[1].clone().unwrap();
    assert!(mean.len() == 8 && mean.iter().any(|&x| x != 0.0), "{mean:?}");
    assert!(var.len() == 8 && var.iter().all(|&x| x > 0.0 && x != 1.0), "{var:?}");
    assert!(m.stats[0].is_none() && m.params[0].weight.len() == 216 && m.params[0].weight.iter().any(|&w| w != 0.0));
}

#[test]
fn the_new_exporter_folded_batch_norm_and_explain_says_so() {
    let m = onnx::read(&fixture("cnn_dynamo.onnx"), &Options::default(), Defaults::default()).unwrap();
    assert!(m.spec.layers.iter().all(|l| l.kind != Kind::BatchNorm));
    assert!(m.notes[0].contains("batch normalization was folded"), "{:?}", m.notes);
    // Its ReduceMean is the global pooling, its Reshape the flattening.
    assert_eq!(m.spec.layers.iter().filter(|l| l.kind == Kind::GlobalAvgPool).count(), 1);
    let out = flopnet(&["explain", fixture("cnn_dynamo.onnx").to_str().unwrap()]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.starts_with("note: batch normalization was folded into the convolutions"), "{stdout}");
    // The legacy export of the same network in training mode keeps it, and says nothing.
    let out = flopnet(&["explain", fixture("cnn_legacy.onnx").to_str().unwrap()]);
    assert!(!text(&out).0.contains("folded"));
}

#[test]
fn matmul_and_add_are_a_dense_layer_with_pytorchs_outputs() {
    for file in ["mlp_matmul.onnx", "mlp_dynamo.onnx"] {
        let m = onnx::read_model(&fixture(file)).unwrap();
        assert_eq!(m.spec, spec::parse("6-7:leaky_relu-5:tanh-3:softmax", Defaults::default()).unwrap(), "{file}");
        assert!(m.notes.iter().any(|n| n.contains("LogSoftmax")), "{:?}", m.notes);
        // The last MatMul has no Add: a zero bias.
        assert_eq!(m.params[2].bias, vec![0.0; 3]);
    }
    // The legacy file's network gives PyTorch's outputs (exp of its log-softmax).
    let m = onnx::read_model(&fixture("mlp_matmul.onnx")).unwrap();
    let want: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("mlp_matmul.json")).unwrap()).unwrap();
    let x: Vec<f32> = want["input"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
    let y: Vec<f64> = want["softmax"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    let settings = Settings {
        loss: Loss::Ce,
        optimizer: Optimizer::Sgd,
        hyper: Hyper::defaults(Optimizer::Sgd),
        max_batch: 4,
        threads: 1,
    };
    let mut e = Engine::new(&m.spec, &m.params, settings).unwrap();
    let got = e.forward(&x).unwrap();
    assert_eq!(got.len(), y.len());
    for (g, w) in got.iter().zip(&y) {
        assert!((*g as f64 - w).abs() < 1e-5, "{got:?} against PyTorch's {y:?}");
    }
}

#[test]
fn an_unsupported_operator_is_refused_and_partial_counts_the_rest() {
    let path = fixture("hardswish.onnx");
    let p = path.to_str().unwrap();
    let out = flopnet(&["count", p]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("HardSwish") && stderr.contains("--partial") && stderr.contains("Conv, Gemm"), "{stderr}");
    let out = flopnet(&["count", p, "--partial", "--json"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("1 node not counted") && stderr.contains("HardSwish"), "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    // The convolution (2·9 + 2) and the dense layer (128·3 + 3).
    assert_eq!(v["params"], 20 + 387);
    // --partial is for ONNX files only.
    let out = flopnet(&["count", "784-10", "--partial"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn written_files_read_back_as_the_same_network_and_weights() {
    let dir = tempfile::tempdir().unwrap();
    for s in ["784-30:tanh-10", "1x12x12-conv3x3x4p1:leaky_relu-maxpool2-conv3x3x6s2:sigmoid-avgpool2-7:identity"] {
        let net = spec::parse(s, Defaults::default()).unwrap();
        let params = flopnet::init::init(&net, 3);
        let path = dir.path().join("m.onnx");
        onnx::save(&path, &net, &params, &[], &Default::default()).unwrap();
        let m = onnx::read_model(&path).unwrap();
        assert_eq!(m.spec, net, "{s}");
        assert_eq!(m.params, params, "{s}: the f32-rounded initial weights come back exactly");
        let bytes = std::fs::read(&path).unwrap();
        let proto = pb::ModelProto::decode(bytes.as_slice()).unwrap();
        assert_eq!(proto.opset_import[0].version, onnx::OPSET);
        let input = &proto.graph.as_ref().unwrap().input[0];
        let Some(pb::type_proto::Value::TensorType(t)) = input.r#type.as_ref().unwrap().value.as_ref() else {
            panic!()
        };
        assert_eq!(
            t.shape.as_ref().unwrap().dim[0].value,
            Some(pb::tensor_shape_proto::dimension::Value::DimParam("batch".into())),
            "the batch dimension is dynamic"
        );
    }
    // A zoo chain and `export` from a safetensors file.
    let net = flopnet::zoo::build("lenet5", Default::default()).unwrap().unwrap();
    let st = dir.path().join("lenet.safetensors");
    flopnet::model::save(&st, &net, &flopnet::init::init(&net, 5)).unwrap();
    let out = dir.path().join("lenet.onnx");
    let o = flopnet(&["export", st.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o).1);
    let m = onnx::read_model(&out).unwrap();
    assert_eq!(m.spec, net);
    assert_eq!(m.params, flopnet::model::load(&st).unwrap().1);
    // `export` of a network with batch norm carries its running statistics over (it once read
    // the file without them and the writer refused).
    let net = spec::parse("1x8x8-conv3x3x4b0:identity-bn:relu-gap:identity-3", Defaults::default()).unwrap();
    let running =
        flopnet::engine::RunningStats { values: vec![0.5, -0.25, 0.125, 2.0, 1.5, 0.75, 3.0, 0.5], batches: vec![7] };
    let st = dir.path().join("bn.safetensors");
    flopnet::model::save_trained(&st, &net, &flopnet::init::init(&net, 5), &running, &Default::default()).unwrap();
    let out = dir.path().join("bn.onnx");
    let o = flopnet(&["export", st.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o).1);
    let m = onnx::read_model(&out).unwrap();
    assert_eq!(m.stats[1], Some((vec![0.5, -0.25, 0.125, 2.0], vec![1.5, 0.75, 3.0, 0.5])));
}

/// A model with one Relu reading the input, and `edit` applied.
fn model(edit: impl FnOnce(&mut pb::GraphProto)) -> Vec<u8> {
    let bytes = std::fs::read(fixture("mlp_matmul.onnx")).unwrap();
    let mut m = pb::ModelProto::decode(bytes.as_slice()).unwrap();
    edit(m.graph.as_mut().unwrap());
    m.encode_to_vec()
}

fn refused(bytes: &[u8], says: &[&str]) {
    for weights in [false, true] {
        let e = onnx::from_bytes(Path::new("bad.onnx"), bytes, &Options::default(), weights).unwrap_err().to_string();
        assert!(e.starts_with("model file bad.onnx: ") && !e.contains('\n'), "{e}");
        for s in says {
            assert!(e.contains(s), "expected `{s}` in: {e}");
        }
    }
}

#[test]
fn broken_and_hostile_files_are_refused_with_a_reason() {
    refused(b"not a model at all", &["not an ONNX model"]);
    let good = std::fs::read(fixture("cnn_legacy.onnx")).unwrap();
    refused(&good[..good.len() / 2], &["not an ONNX model"]);
    // A cycle: the first MatMul reads the last node's output.
    refused(
        &model(|g| {
            let last = g.node.last().unwrap().output[0].clone();
            g.node[0].input[0] = last;
        }),
        &["cycle"],
    );
    // A missing initializer.
    refused(
        &model(|g| {
            g.initializer.remove(0);
        }),
        &["which no node computes and no initializer holds"],
    );
    // Huge declared shapes: a weight of 2^40 × 2^40, an input of 2^40 channels.
    refused(
        &model(|g| {
            g.initializer[0].dims = vec![1 << 40, 1 << 40];
        }),
        &["values flopnet reads"],
    );
    refused(
        &model(|g| {
            let Some(pb::type_proto::Value::TensorType(t)) = g.input[0].r#type.as_mut().unwrap().value.as_mut() else {
                panic!()
            };
            t.shape.as_mut().unwrap().dim[1].value = Some(pb::tensor_shape_proto::dimension::Value::DimValue(1 << 40));
        }),
        &["more than"],
    );
    // Found by the fuzzer: dimensions whose product overflows before a 0 ends it, and an
    // operator name holding a line break.
    refused(
        &model(|g| {
            g.initializer[0].dims = vec![1 << 40, 1 << 40, 0];
        }),
        &["values flopnet reads"],
    );
    refused(
        &model(|g| {
            g.node[1].op_type = "Add\nMore".into();
        }),
        &["Add\\nMore"],
    );
    // A tensor whose data is shorter than its shape (read only when weights are wanted).
    let short = model(|g| {
        g.initializer[0].raw_data.truncate(8);
    });
    let e = onnx::from_bytes(Path::new("bad.onnx"), &short, &Options::default(), true).unwrap_err().to_string();
    assert!(e.contains("holds 2"), "{e}");
    // External data outside the model's directory.
    let outside = model(|g| {
        let t = &mut g.initializer[0];
        t.raw_data.clear();
        t.data_location = Some(1);
        t.external_data = vec![pb::StringStringEntryProto { key: "location".into(), value: "../../etc/passwd".into() }];
    });
    let e = onnx::from_bytes(Path::new("bad.onnx"), &outside, &Options::default(), true).unwrap_err().to_string();
    assert!(e.contains("outside the model's directory"), "{e}");
    // A dynamic input needs --input.
    let dynamic = model(|g| {
        let Some(pb::type_proto::Value::TensorType(t)) = g.input[0].r#type.as_mut().unwrap().value.as_mut() else {
            panic!()
        };
        t.shape.as_mut().unwrap().dim[1].value = Some(pb::tensor_shape_proto::dimension::Value::DimParam("f".into()));
    });
    refused(&dynamic, &["--input"]);
    let opts = Options { input: Some("6".parse().unwrap()), partial: false };
    assert_eq!(onnx::from_bytes(Path::new("d.onnx"), &dynamic, &opts, false).unwrap().spec.input, 6);
}

/// The Python that runs ONNX Runtime: $FLOPNET_PYTHON, or python3 with onnxruntime and numpy.
fn onnxruntime_python() -> Option<String> {
    let python = std::env::var("FLOPNET_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&python).args(["-c", "import onnxruntime, numpy"]).output().is_ok_and(|o| o.status.success());
    ok.then_some(python)
}

#[test]
fn onnx_runtime_runs_a_trained_model_to_flopnets_outputs_and_accuracy() {
    let Some(python) = onnxruntime_python() else {
        let why = "python3 with onnxruntime and numpy not found (set FLOPNET_PYTHON)";
        assert!(std::env::var("FLOPNET_REQUIRE_ONNXRUNTIME").is_err(), "FLOPNET_REQUIRE_ONNXRUNTIME is set but {why}");
        eprintln!("skipped: {why}");
        return;
    };
    // A chain of the zoo, and a residual network with batch normalization (its running
    // statistics must reach the file for ONNX Runtime's evaluation mode to agree).
    round_trip(&python, "lenet5");
    round_trip(
        &python,
        "1x32x32-conv3x3x8p1b0:identity-bn:relu-[conv3x3x8s2p1b0:identity-bn:relu-conv3x3x8p1b0:identity-bn:identity|proj]:relu-gap:identity-10",
    );
}

fn round_trip(python: &str, spec: &str) {
    let dir = tempfile::tempdir().unwrap();
    let d = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    // Ten classes of 32×32 images: a bright square at a place of the class's own, with noise.
    let write = |name: &str, n: usize, seed: u64| {
        let mut rng = seed;
        let mut next = || {
            rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (rng >> 33) as f64 / (1u64 << 31) as f64
        };
        let mut s = String::new();
        for i in 0..n {
            let c = i % 10;
            let (r0, c0) = (2 + (c / 5) * 14, 2 + (c % 5) * 5);
            s += &c.to_string();
            for p in 0..1024 {
                let (r, col) = (p / 32, p % 32);
                let on = (r0..r0 + 12).contains(&r) && (c0..c0 + 5).contains(&col);
                s += &format!(",{:.3}", if on { 0.8 } else { 0.0 } + 0.3 * next());
            }
            s += "\n";
        }
        std::fs::write(d(name), s).unwrap();
    };
    write("train.csv", 400, 1);
    write("test.csv", 100, 2);
    let run = |args: &[&str]| {
        let o = flopnet(args);
        assert!(o.status.success(), "{args:?}: {}", text(&o).1);
        text(&o).0
    };
    run(&["train", spec, "--data", &d("train.csv"), "--epochs", "1", "--batch", "16", "--save", &d("m.onnx")]);
    let eval: serde_json::Value =
        serde_json::from_str(&run(&["eval", "--model", &d("m.onnx"), "--data", &d("test.csv"), "--json"])).unwrap();
    // flopnet's outputs on the test set, from the file it wrote.
    let (spec, params, recorded, running) = flopnet::model::load_trained(Path::new(&d("m.onnx"))).unwrap();
    let data = flopnet::data::load(
        &flopnet::data::DataSource::Path(d("test.csv").into()),
        &flopnet::data::LoadOptions { normalize: None, val_split: 0.0, seed: 0 },
    )
    .unwrap();
    let mut test = data.train;
    if let Some(s) = recorded.scaling {
        s.apply(&mut test.features);
    }
    let n = test.len();
    let settings = Settings {
        loss: Loss::Ce,
        optimizer: Optimizer::Sgd,
        hyper: Hyper::defaults(Optimizer::Sgd),
        max_batch: n,
        threads: 1,
    };
    // Training moved batch norm's statistics from PyTorch's starting values, and the file has them.
    assert!(running.values.iter().all(|&v| v != 0.0 && v != 1.0), "{spec}: {:?}", running.values);
    let mut e = Engine::new(&spec, &params, settings).unwrap();
    e.set_running_stats(&running).unwrap();
    let ours = e.forward(&test.features).unwrap().to_vec();
    std::fs::write(d("x.f32"), test.features.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/onnx_run.py");
    let o =
        Command::new(python).args([script.to_str().unwrap(), &d("m.onnx"), &d("x.f32"), &d("y.f32")]).output().unwrap();
    assert!(o.status.success(), "{}", text(&o).1);
    eprintln!("{}", text(&o).0.trim());
    let theirs: Vec<f32> =
        std::fs::read(d("y.f32")).unwrap().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    assert_eq!(theirs.len(), ours.len());
    let argmax = |r: &[f32]| r.iter().enumerate().fold(0, |b, (j, &v)| if v > r[b] { j } else { b });
    let mut correct = 0;
    for (i, (a, b)) in ours.chunks(10).zip(theirs.chunks(10)).enumerate() {
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() <= 1e-5, "{spec}, example {i}: flopnet {a:?}, onnxruntime {b:?}");
        }
        assert_eq!(argmax(a), argmax(b), "example {i}");
        correct += usize::from(argmax(b) == test.labels[i] as usize);
    }
    let acc = correct as f64 / n as f64;
    assert_eq!(acc, eval["acc"].as_f64().unwrap(), "onnxruntime's accuracy against flopnet eval's");
    eprintln!("{spec}: onnxruntime and flopnet agree on {n} test examples, accuracy {:.2}%", 100.0 * acc);
}

/// A metadata value the file wrote is echoed in the refusal on one line (the fuzz target found a
/// newline inside `output_activation` breaking the message in two).
#[test]
fn metadata_with_control_characters_is_refused_on_one_line() {
    let bytes = std::fs::read(fixture("mlp_matmul.onnx")).unwrap();
    let mut m = pb::ModelProto::decode(bytes.as_slice()).unwrap();
    m.metadata_props.retain(|e| e.key != "output_activation");
    m.metadata_props.push(pb::StringStringEntryProto { key: "output_activation".into(), value: "s\noftmax".into() });
    refused(&m.encode_to_vec(), &["output_activation", "s\\noftmax"]);
}
