//! `train`, `eval` and `bench` as a user runs them, on the embedded data and on files the tests
//! write themselves.

use std::process::{Command, Output};

fn flopnet(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flopnet")).args(args).output().expect("the binary runs")
}

fn ok(args: &[&str]) -> String {
    let out = flopnet(args);
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The README's main command: three epochs on the embedded subset reach at least 75%, and the
/// saved model scores the same under `eval`.
#[test]
fn readme_main_command_learns_and_the_model_evaluates() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.safetensors");
    let metrics = dir.path().join("m.jsonl");
    let text = ok(&[
        "train",
        "784-128-10",
        "--epochs",
        "3",
        "--threads",
        "2",
        "--save",
        model.to_str().unwrap(),
        "--metrics",
        metrics.to_str().unwrap(),
    ]);
    let lines: Vec<serde_json::Value> =
        std::fs::read_to_string(&metrics).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 4, "three epochs and a test line:\n{text}");
    for (i, l) in lines[..3].iter().enumerate() {
        assert_eq!(l["epoch"], i + 1);
        for k in ["train_loss", "train_acc", "val_loss", "val_acc", "seconds", "gflops"] {
            assert!(l[k].is_number(), "{k} in {l}");
        }
    }
    let test_acc = lines[3]["test_acc"].as_f64().unwrap();
    assert!(test_acc >= 0.75, "test accuracy {test_acc}\n{text}");

    let eval: serde_json::Value =
        serde_json::from_str(&ok(&["eval", "--model", model.to_str().unwrap(), "--json"])).unwrap();
    assert!((eval["acc"].as_f64().unwrap() - test_acc).abs() < 1e-9, "eval {} vs train {test_acc}", eval["acc"]);
    let matrix = eval["matrix"].as_array().unwrap();
    assert_eq!(matrix.len(), 10);
    let total: u64 = matrix.iter().flat_map(|r| r.as_array().unwrap()).map(|v| v.as_u64().unwrap()).sum();
    assert_eq!(total, 1000, "every embedded test image lands in the confusion matrix");
}

#[test]
fn same_seed_same_threads_same_model_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let run = |name: &str| {
        let p = dir.path().join(name);
        ok(&["train", "784-32-10", "--epochs", "1", "--threads", "2", "--seed", "7", "--save", p.to_str().unwrap()]);
        std::fs::read(p).unwrap()
    };
    let (a, b) = (run("a.safetensors"), run("b.safetensors"));
    assert!(a == b, "two runs with seed 7 and 2 threads wrote different model files");
}

#[test]
fn a_spec_that_does_not_fit_the_data_names_the_size_that_would() {
    let out = flopnet(&["train", "1024-30-10", "--epochs", "1"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("784") && err.contains("1024"), "{err}");
}

#[test]
fn csv_data_trains_and_reports_classes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("xor.csv");
    // Two classes by the sign of x*y: a small non-linear problem.
    let mut text = String::from("label,x,y\n");
    for i in 0..400 {
        let (x, y) = (((i * 37) % 200) as f32 / 100.0 - 1.0, ((i * 91) % 200) as f32 / 100.0 - 1.0);
        text += &format!("{},{x},{y}\n", (x * y > 0.0) as u8);
    }
    std::fs::write(&path, text).unwrap();
    let out = ok(&[
        "train",
        "2-16:tanh-2",
        "--data",
        path.to_str().unwrap(),
        "--epochs",
        "60",
        "--batch",
        "16",
        "--lr",
        "0.01",
        "--val-split",
        "0",
    ]);
    let last = out.lines().rev().find(|l| l.starts_with("epoch")).unwrap();
    let acc: f64 = last.split("acc ").nth(1).unwrap().split('%').next().unwrap().trim().parse().unwrap();
    assert!(acc > 90.0, "{out}");
}

#[test]
fn bench_reports_samples_per_second_and_layers() {
    let v: serde_json::Value = serde_json::from_str(&ok(&[
        "bench",
        "784-30-30-10",
        "--act",
        "sigmoid",
        "--batch",
        "8",
        "--runs",
        "3",
        "--json",
    ]))
    .unwrap();
    assert!(v["samples_per_sec"].as_f64().unwrap() > 0.0);
    assert_eq!(v["layers"].as_array().unwrap().len(), 3);
    assert!(v["gflops"].as_f64().unwrap() > 0.0);
}

/// A convolutional network on the embedded 1x28x28 images: it learns, its model file evaluates
/// to the same accuracy, starts another run (--init), resumes from a checkpoint to the same bytes,
/// and a spec for other images is refused with the start that fits.
#[test]
fn a_cnn_trains_saves_evaluates_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let spec = "1x28x28-conv3x3x8:relu-maxpool2-10";
    let base = ["train", spec, "--threads", "2", "--seed", "3"];
    let with = |extra: &[&str]| -> Vec<String> { base.iter().chain(extra).map(|s| s.to_string()).collect() };
    let run = |extra: &[&str]| {
        let args = with(extra);
        ok(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let (whole, metrics, plot) = (p("whole.safetensors"), p("m.jsonl"), p("curves.svg"));
    let text = run(&["--epochs", "2", "--save", &whole, "--metrics", &metrics, "--plot", &plot]);
    let lines: Vec<serde_json::Value> =
        std::fs::read_to_string(&metrics).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let test_acc = lines.last().unwrap()["test_acc"].as_f64().unwrap();
    assert!(test_acc >= 0.7, "a small CNN reaches 70% in two epochs: {test_acc}\n{text}");
    assert!(std::fs::read_to_string(&plot).unwrap().contains("<svg"));

    let eval: serde_json::Value = serde_json::from_str(&ok(&["eval", "--model", &whole, "--json"])).unwrap();
    assert!((eval["acc"].as_f64().unwrap() - test_acc).abs() < 1e-9, "eval {} vs train {test_acc}", eval["acc"]);
    let (loaded, params) = flopnet::model::load(std::path::Path::new(&whole)).unwrap();
    assert_eq!(loaded.to_string(), "1x28x28-conv3x3x8:relu-maxpool2-10:softmax");
    assert_eq!(params[0].weight.len(), 8 * 9);
    assert!(params[1].weight.is_empty());

    // One more epoch from the saved weights.
    let more = run(&["--epochs", "1", "--init", &whole]);
    assert!(more.contains("epoch   1"), "{more}");

    // One epoch checkpointed, then resumed to two: the same model as the uninterrupted run.
    let (ck, resumed) = (p("ck"), p("resumed.safetensors"));
    run(&["--epochs", "1", "--checkpoint", &ck]);
    let text = run(&["--epochs", "2", "--resume", &ck, "--save", &resumed]);
    assert!(text.contains("resuming from epoch 1 done"), "{text}");
    assert!(std::fs::read(&resumed).unwrap() == std::fs::read(&whole).unwrap(), "resumed ≠ uninterrupted");

    let out = flopnet(&["train", "3x32x32-conv3x3x8:relu-maxpool2-10", "--epochs", "1"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the data holds 1x28x28 images but the network's input is 3x32x32; start the spec with 1x28x28, e.g. 1x28x28-conv3x3x8:relu-maxpool2-10:softmax"),
        "{err}"
    );
}

/// A CNN trains end to end on CIFAR-10 binary batches (3x32x32, found by their file names in a
/// directory) and learns a class that lives in the red plane's brightness, the other planes
/// being noise.
#[test]
fn cnn_learns_from_cifar_channels() {
    let dir = tempfile::tempdir().unwrap();
    let mut state = 7u32;
    let mut noise = move || {
        state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        (state >> 24) as u8
    };
    for (name, n) in [("data_batch_1.bin", 400), ("test_batch.bin", 200)] {
        let mut bytes = Vec::new();
        for i in 0..n {
            let label = (i % 2) as u8;
            bytes.push(label);
            for plane in 0..3 {
                for _ in 0..1024 {
                    let v = noise();
                    bytes.push(if plane == 0 { label * 128 + v / 2 } else { v });
                }
            }
        }
        std::fs::write(dir.path().join(name), bytes).unwrap();
    }
    let data = dir.path().to_str().unwrap();
    let out = ok(&["train", "3x32x32-conv3x3x4s2:relu-avgpool2-10", "--data", data, "--epochs", "3", "--threads", "1"]);
    let acc: f64 = out
        .lines()
        .find_map(|l| l.strip_prefix("test: ").and_then(|r| r.split("accuracy ").nth(1)))
        .and_then(|r| r.split('%').next())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no test accuracy in:\n{out}"));
    assert!(acc >= 90.0, "{acc}% on a pattern in the red plane:\n{out}");
}

/// What train applied to the inputs travels in the model file: eval of the saved model reports
/// exactly train's test loss and accuracy under every normalisation and loss, and an explicit
/// `--normalize` that contradicts the file is refused (exit 2) naming both, by eval and by
/// train --init.
#[test]
fn eval_scores_the_saved_model_exactly_as_train_did() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.safetensors");
    let metrics = dir.path().join("m.jsonl");
    let (m, j) = (model.to_str().unwrap(), metrics.to_str().unwrap());
    for (normalize, loss) in [("standard", "ce"), ("unit", "ce"), ("none", "ce"), ("standard", "mse")] {
        let args = ["train", "784-16-10", "--epochs", "1", "--threads", "2", "--save", m, "--metrics", j];
        ok(&[&args[..], &["--normalize", normalize, "--loss", loss]].concat());
        let text = std::fs::read_to_string(&metrics).unwrap();
        let test: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
        let eval: serde_json::Value = serde_json::from_str(&ok(&["eval", "--model", m, "--json"])).unwrap();
        assert_eq!(eval["acc"], test["test_acc"], "--normalize {normalize} --loss {loss}");
        assert_eq!(eval["loss"], test["test_loss"], "--normalize {normalize} --loss {loss}");
        // Naming the recorded mode again changes nothing.
        let again: serde_json::Value =
            serde_json::from_str(&ok(&["eval", "--model", m, "--json", "--normalize", normalize])).unwrap();
        assert_eq!(again["acc"], test["test_acc"]);
    }
    let out = flopnet(&["eval", "--model", m, "--normalize", "unit"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--normalize unit scales the features unit, but ") && err.contains("give --normalize standard"),
        "{err}"
    );
    // Training on from the file (--init) reads the inputs at the file's scale too.
    let out = flopnet(&["train", "784-16-10", "--epochs", "1", "--threads", "2", "--init", m, "--loss", "mse"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("this run scales the features unit, but ") && err.contains("scaled standard (mean "), "{err}");
    ok(&[
        "train",
        "784-16-10",
        "--epochs",
        "1",
        "--threads",
        "2",
        "--init",
        m,
        "--normalize",
        "standard",
        "--loss",
        "mse",
    ]);
}

/// The run: plain SGD at 1e6 ends every epoch at loss ~78 and 10% right without a NaN.
/// It is stopped in its first epoch, exit 1, with a message that says what to change, and no
/// checkpoint of the ruined weights is written.
#[test]
fn a_run_that_dies_without_nan_is_stopped_and_says_what_to_change() {
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("ck");
    let args = ["train", "784-64-10", "--optimizer", "sgd", "--lr", "1e6", "--epochs", "2", "--threads", "2"];
    let out = flopnet(&[&args[..], &["--checkpoint", ck.to_str().unwrap()]].concat());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("the loss ran away without becoming NaN") && err.contains("(epoch 1, batch"), "{err}");
    assert!(err.contains("try --lr 100000, or sgd's default 0.01"), "{err}");
    assert!(!ck.join("checkpoint.safetensors").exists(), "no checkpoint of a run-away epoch");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("test:"), "no test score of a dead run");
}

/// Every number a user gives is checked before any work, by one rule: finite and above 0. A
/// negative rate would train by gradient ascent, NaN or inf diverge (and once advised "try --lr
/// NaN"), and a NaN or zero roofline predicted `inf h` or `0.0 µs`.
#[test]
fn numbers_are_finite_and_positive_before_any_work() {
    for (args, flag) in [
        (&["train", "784-16-10", "--lr", "-0.1"][..], "--lr"),
        (&["train", "784-16-10", "--lr", "nan"], "--lr"),
        (&["train", "784-16-10", "--lr", "inf"], "--lr"),
        (&["train", "784-16-10", "--lr=-1e-3"], "--lr"),
        (&["train", "784-16-10", "--val-split", "-0.5"], "validation split -0.5 is outside [0, 1)"),
        (&["train", "784-16-10", "--lr", "0"], "--lr"),
        (&["count", "784-16-10", "--gflops", "nan", "--bandwidth", "10"], "--gflops"),
        (&["count", "784-16-10", "--gflops", "100", "--bandwidth", "0"], "--bandwidth"),
        (&["count", "784-16-10", "--gflops", "-1", "--bandwidth", "10"], "--gflops"),
    ] {
        let out = flopnet(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(flag), "{args:?}: {err}");
        assert!(flag.contains("split") || err.contains("give a finite number above 0"), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?} printed before refusing");
    }
}

/// A batch larger than the data set is the data set: the ledger, the memory estimate and the
/// memory guard are those of the real batch (5,400 embedded training examples), said on stderr;
/// `--batch 10000000` is not refused for memory it would never use; `count` does the same with
/// `--examples`.
#[test]
fn a_batch_larger_than_the_data_is_the_data_everywhere() {
    let account = |batch: &str| {
        let out = flopnet(&["train", "784-16-10", "--epochs", "1", "--threads", "2", "--batch", batch]);
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "--batch {batch}: {stderr}");
        let lines: Vec<String> = stdout
            .lines()
            .filter(|l| l.starts_with("cost:") || l.starts_with("memory (ledger)"))
            .map(String::from)
            .collect();
        assert_eq!(lines.len(), 2, "{stdout}");
        (lines, stderr.into_owned())
    };
    let (real, note) = account("5400");
    assert!(!note.contains("--batch"), "{note}");
    for batch in ["100000", "10000000"] {
        let (lines, note) = account(batch);
        assert_eq!(lines, real, "--batch {batch}");
        assert!(note.contains("is more than the 5,400 training examples; the batch is 5,400"), "{note}");
    }
    let count = |batch: &str| ok(&["count", "784-10", "--batch", batch, "--examples", "10", "--json"]);
    assert_eq!(count("100"), count("10"));
}

/// A first run calibrates quickly on its own; its rough figures are not printed as predictions
/// (the README's first command once showed `predicted 0.06 s, -41%` on every epoch), and the
/// line says why and what measures carefully. The same profile marked careful is used.
#[test]
fn a_quick_first_calibration_prints_no_predicted_times() {
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("profile.json");
    let p = profile.to_str().unwrap();
    let args = ["train", "784-16-10", "--epochs", "1", "--threads", "2", "--profile", p];
    let first = ok(&args);
    assert!(first.contains("predicted: withheld, as this machine's profile is a quick first calibration"), "{first}");
    assert!(first.contains("`flopnet calibrate`"), "{first}");
    let epoch = first.lines().find(|l| l.starts_with("epoch")).unwrap();
    assert!(!epoch.contains("predicted"), "{epoch}");
    let text = std::fs::read_to_string(&profile).unwrap();
    assert!(text.contains("\"quick\": true"), "the profile says how it was measured");
    std::fs::write(&profile, text.replace("\"quick\": true", "\"quick\": false")).unwrap();
    let careful = ok(&args);
    assert!(careful.contains("predicted: ") && careful.contains(" per epoch, "), "{careful}");
    let epoch = careful.lines().find(|l| l.starts_with("epoch")).unwrap();
    assert!(epoch.contains("(predicted "), "{epoch}");
}

/// `--augment`, `--weight-decay`, `--optimizer adamw` and `--warmup` from the command line: a run
/// checkpointed after one epoch and resumed to two saves the bytes of the run never stopped; a
/// resume with another λ is refused; augmenting CSV rows and a negative λ are refused before
/// any work.
#[test]
fn augmented_adamw_with_warmup_resumes_and_bad_uses_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let base =
        ["train", "784-32-10", "--threads", "2", "--optimizer", "adamw", "--augment", "crop=2,flip", "--warmup", "1"];
    let run = |extra: &[&str]| {
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        ok(&args)
    };
    let (whole, ck, resumed) = (p("whole.safetensors"), p("ck"), p("resumed.safetensors"));
    run(&["--epochs", "2", "--save", &whole]);
    run(&["--epochs", "1", "--checkpoint", &ck]);
    let text = run(&["--epochs", "2", "--resume", &ck, "--save", &resumed]);
    assert!(text.contains("resuming from epoch 1 done"), "{text}");
    assert!(std::fs::read(&resumed).unwrap() == std::fs::read(&whole).unwrap(), "resumed ≠ uninterrupted");
    let plain = p("plain.safetensors");
    ok(&["train", "784-32-10", "--threads", "2", "--optimizer", "adamw", "--epochs", "2", "--save", &plain]);
    assert!(std::fs::read(&plain).unwrap() != std::fs::read(&whole).unwrap(), "augmentation and warmup change the run");

    let args: Vec<&str> =
        base.iter().copied().chain(["--epochs", "2", "--resume", &ck, "--weight-decay", "0.1"]).collect();
    let out = flopnet(&args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("was saved with --weight-decay 0.01 but this run has 0.1"), "{err}");

    let csv = p("rows.csv");
    std::fs::write(&csv, "label,a,b\n0,1,2\n1,3,4\n0,1,1\n1,4,4\n").unwrap();
    for (args, says) in [
        (
            vec!["train", "2-4-2", "--data", &csv, "--augment", "crop=4,flip"],
            "--augment crop=4,flip crops and flips images, but the data holds flat rows of 2 values",
        ),
        (vec!["train", "784-16-10", "--weight-decay", "-0.1"], "-0.1 is below 0; give a finite number of 0 or more"),
        (vec!["train", "784-16-10", "--augment", "rotate=4"], "`rotate=4` is no augmentation"),
        (vec!["count", "784-16-10", "--weight-decay", "nan"], "NaN is not a number"),
    ] {
        let out = flopnet(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?} printed before refusing");
    }
    let help = ok(&["train", "--help"]);
    for flag in ["--augment <crop=P,flip>", "--weight-decay", "--warmup", "adamw"] {
        assert!(help.contains(flag), "{flag} in\n{help}");
    }
}

/// `count` and `verify` take the weight decay: the JSON says λ, the update row grows by one
/// multiplication and one addition per parameter, and measured == analytic.
#[test]
fn count_and_verify_take_the_weight_decay() {
    let json = |args: &[&str]| -> serde_json::Value { serde_json::from_str(&ok(args)).unwrap() };
    let plain = json(&["count", "784-30-10", "--optimizer", "momentum", "--json"]);
    let decayed = json(&["count", "784-30-10", "--optimizer", "momentum", "--weight-decay", "5e-4", "--json"]);
    assert_eq!(decayed["weight_decay"], 5e-4);
    let n = |v: &serde_json::Value, k: &str| v["per_example"]["update"][k].as_u64().unwrap();
    assert_eq!(n(&decayed, "mul") - n(&plain, "mul"), 23_860);
    assert_eq!(n(&decayed, "add") - n(&plain, "add"), 23_860);
    assert_eq!(json(&["count", "784-30-10", "--optimizer", "adamw", "--json"])["weight_decay"], 0.01);
    for opt in ["sgd", "momentum", "adam", "adamw"] {
        let out = ok(&[
            "verify",
            "1x8x8-conv3x3x4:relu-maxpool2-10",
            "--optimizer",
            opt,
            "--weight-decay",
            "1e-3",
            "--batch",
            "3",
        ]);
        assert!(out.contains("rows match"), "{opt}: {out}");
    }
}
