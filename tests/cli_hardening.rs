//! Issue 18, as a demanding user met it: nothing the user has is lost or overwritten, bad input
//! is refused before work starts with exit 2, and every numeric option follows one rule.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn flopnet_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flopnet")).current_dir(dir).args(args).output().expect("the binary runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The `flopnet: ` line of a refused command, and its exit code.
fn refused(dir: &Path, args: &[&str]) -> (String, i32) {
    let out = flopnet_in(dir, args);
    let err = stderr(&out);
    let line = err.lines().rev().find(|l| l.starts_with("flopnet: ")).unwrap_or("(no flopnet: line)").to_string();
    (line, out.status.code().unwrap_or(-1))
}

/// 200 examples of 2 features and 10 classes.
fn good_csv(dir: &Path) -> String {
    let text: String =
        (0..200).map(|i| format!("{},{:.3},{:.3}\n", i % 10, (i % 7) as f64 / 7.0, (i % 13) as f64 / 13.0)).collect();
    std::fs::write(dir.join("good.csv"), text).unwrap();
    "good.csv".into()
}

/// A model file of `spec` with seeded weights, as train saves one.
fn model_file(path: &Path, spec: &str) {
    let s = flopnet::spec::parse(spec, flopnet::spec::Defaults::default()).unwrap();
    flopnet::model::save(path, &s, &flopnet::init::init(&s, 1)).unwrap();
}

// ---- 1: --profile never overwrites a file that is not a flopnet profile -----------------------

/// A --profile in a directory that does not exist is refused before measuring, like every other
/// output, and no directory is made (only flopnet's own cache directory is created).
#[test]
fn a_profile_in_a_missing_directory_is_refused_and_nothing_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for args in [
        &["calibrate", "--profile", "no/such/p.json"][..],
        &["count", "784-10", "--predict", "--profile", "no/such/p.json"],
    ] {
        let out = flopnet_in(d, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("the directory no/such does not exist; create it first"), "{}", stderr(&out));
        assert!(!d.join("no").exists(), "{args:?} created a directory");
    }
}

#[test]
fn profile_never_replaces_a_file_that_is_not_a_profile() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let model = b"\x08\0\0\0\0\0\0\0{}      pretend this is a trained model".to_vec();
    std::fs::write(d.join("model.safetensors"), &model).unwrap();
    std::fs::write(d.join("m.jsonl"), b"{\"epoch\":1}\n").unwrap();
    good_csv(d);
    let cases: [&[&str]; 4] = [
        &["count", "784-10", "--predict", "--profile", "model.safetensors"],
        &["calibrate", "--quick", "--profile", "m.jsonl"],
        &["bench", "2-10", "--steps", "1", "--runs", "1", "--profile", "good.csv"],
        &["train", "2-10", "--data", "good.csv", "--epochs", "1", "--profile", "good.csv"],
    ];
    for args in cases {
        let start = Instant::now();
        let (line, code) = refused(d, args);
        assert_eq!(code, 2, "{args:?}: {line}");
        assert!(line.contains("not a flopnet profile") && line.contains("give a new file name"), "{args:?}: {line}");
        assert!(start.elapsed() < Duration::from_secs(5), "{args:?} measured before refusing");
    }
    assert_eq!(std::fs::read(d.join("model.safetensors")).unwrap(), model);
    assert_eq!(std::fs::read(d.join("m.jsonl")).unwrap(), b"{\"epoch\":1}\n");
    assert_eq!(std::fs::read_to_string(d.join("good.csv")).unwrap().lines().count(), 200);
}

// ---- 2: every output path is checked before work starts --------------------------------------

#[test]
fn a_save_path_that_cannot_be_written_is_refused_before_training() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = good_csv(d);
    for (flag, path) in [("--save", "no-such-dir/m.safetensors"), ("--save", "."), ("--metrics", "no/m.jsonl")] {
        let out = flopnet_in(d, &["train", "2-10", "--data", &data, "--epochs", "1", "--threads", "1", flag, path]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{flag} {path}: {err}");
        assert!(err.contains(&format!("flopnet: {flag} {path}: ")), "{err}");
        assert!(!String::from_utf8_lossy(&out.stdout).contains("epoch"), "{flag} {path}: trained before refusing");
    }
    // An output that is the command's own input is refused too: the data would be lost.
    let (line, code) = refused(d, &["train", "2-10", "--data", &data, "--save", &data]);
    assert_eq!(code, 2, "{line}");
    assert!(line.contains("is the file this command reads"), "{line}");
    assert_eq!(std::fs::read_to_string(d.join(&data)).unwrap().lines().count(), 200);
    for args in [
        &["count", "784-10", "--plot", "nowhere/bars.svg"][..],
        &["explain", "784-10", "--diagram", "nowhere/d.png"],
        &["report", "784-10", "--output", "nowhere/r.html"],
    ] {
        let (line, code) = refused(d, args);
        assert_eq!(code, 2, "{args:?}: {line}");
        assert!(line.contains("nowhere does not exist; create it first"), "{args:?}: {line}");
    }
}

// ---- 18: a run that diverges leaves no empty metrics file, and an old one as it was ----------

#[test]
fn a_diverged_run_leaves_no_empty_metrics_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = good_csv(d);
    std::fs::write(d.join("old.jsonl"), b"{\"epoch\":1}\n").unwrap();
    for m in ["new.jsonl", "old.jsonl"] {
        let args = ["train", "2-16-10", "--data", &data, "--optimizer", "sgd", "--lr", "1e30", "--threads", "1"];
        let out = flopnet_in(d, &[&args[..], &["--metrics", m]].concat());
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert!(stderr(&out).contains("training diverged"), "{}", stderr(&out));
    }
    assert!(!d.join("new.jsonl").exists(), "an empty metrics file was left behind");
    assert_eq!(std::fs::read(d.join("old.jsonl")).unwrap(), b"{\"epoch\":1}\n");
}

// ---- 3: nothing endless or huge is read ------------------------------------------------------

#[test]
fn devices_and_files_too_big_for_memory_are_refused_before_reading() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A sparse file of 1 TiB: more than any machine here can load, and nothing to read.
    std::fs::File::create(d.join("huge.csv")).unwrap().set_len(1 << 40).unwrap();
    std::fs::File::create(d.join("huge.safetensors")).unwrap().set_len(1 << 40).unwrap();
    std::fs::create_dir(d.join("ck")).unwrap();
    std::fs::File::create(d.join("ck/checkpoint.flopnet")).unwrap().set_len(1 << 40).unwrap();
    good_csv(d);
    let cases: [(&[&str], &str); 6] = [
        (&["train", "2-10", "--data", "good.csv", "--resume", "ck"], "checkpoint ck/checkpoint.flopnet: holds 1.0 TiB"),
        (&["train", "784-10", "--data", "/dev/zero"], "/dev/zero: is a character device, not a file"),
        (&["eval", "--model", "/dev/zero"], "model file /dev/zero: is a character device, not a file"),
        (&["eval", "--model", "huge.safetensors"], "model file huge.safetensors: holds 1.0 TiB or more, more than"),
        (&["train", "784-10", "--data", "huge.csv"], "huge.csv: holds 1.0 TiB or more, more than"),
        (&["count", "/dev/zero.toml"], "/dev/zero.toml: cannot read it"),
    ];
    for (args, says) in cases {
        let start = Instant::now();
        let (line, code) = refused(d, args);
        assert_eq!(code, 2, "{args:?}: {line}");
        assert!(line.starts_with(&format!("flopnet: {says}")), "{args:?}: {line}");
        assert!(start.elapsed() < Duration::from_secs(2), "{args:?} read before refusing");
    }
}

// ---- 4: --threads 0 refused everywhere; more than the cores is cut to the cores, with a warning

#[test]
fn threads_zero_is_refused_and_too_many_are_cut_to_the_cores() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = good_csv(d);
    // A model eval would score, so that only --threads 0 is wrong with the command.
    model_file(&d.join("m.safetensors"), "784-10");
    for args in [
        &["count", "784-10", "--predict", "--threads", "0"][..],
        &["train", "2-10", "--data", &data, "--threads", "0"],
        &["eval", "--model", "m.safetensors", "--threads", "0"],
        &["bench", "2-10", "--threads", "0"],
        &["calibrate", "--threads", "0"],
    ] {
        let out = flopnet_in(d, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("'--threads <THREADS>': must be a whole number of at least 1"),
            "{}",
            stderr(&out)
        );
    }
    let cache = d.join("cache");
    let out = Command::new(env!("CARGO_BIN_EXE_flopnet"))
        .current_dir(d)
        .env("XDG_CACHE_HOME", &cache)
        .args(["count", "784-10", "--predict", "--threads", "1000"])
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    let cores = std::thread::available_parallelism().unwrap().get();
    assert!(err.contains(&format!("--threads 1000 is more than this machine's {cores} cores; using {cores}")), "{err}");
    let profiles: Vec<String> = std::fs::read_dir(cache.join("flopnet"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(profiles, [format!("profile-{}-{cores}.json", flopnet::engine::simd::path().name())]);
}

// ---- 15: no flag accepted and ignored; one rule for every count ------------------------------

#[test]
fn flags_that_would_be_ignored_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for args in [
        &["explain", "784-10", "--json"][..],
        &["explain", "784-10", "--predict"],
        &["bench", "784-10", "--forward-only", "--optimizer", "adam"],
        &["bench", "784-10", "--forward-only", "--profile", "p.json"],
        &["count", "784-10", "--device", "h200", "--gflops", "1", "--bandwidth", "1"],
        &["count", "784-10", "--device", "h200", "--profile", "p.json"],
        &["count", "784-10", "--scale", "log"],
        &["train", "784-10", "--checkpoint", "a", "--resume", "b"],
    ] {
        let out = flopnet_in(d, args);
        assert_eq!(out.status.code(), Some(2), "{args:?} was accepted: {}", stderr(&out));
        assert!(
            stderr(&out).contains("cannot be used with")
                || stderr(&out).contains("unexpected argument")
                || stderr(&out).contains("required arguments were not provided"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    for args in [&["count", "784-10", "--threads", "2"][..], &["count", "784-10", "--profile", "p.json"]] {
        let (line, code) = refused(d, args);
        assert_eq!(code, 2, "{args:?}: {line}");
        assert!(line.ends_with("sets up the time model; add --predict (or --device) to use it"), "{line}");
    }
    for (args, says) in [
        (&["count", "784-10", "--act", "tanh"][..], "--act tanh changes nothing"),
        (&["count", "784-30:tanh-10", "--act", "sigmoid"], "--act sigmoid changes nothing"),
        (&["count", "784-10:softmax", "--out", "softmax"], "--out softmax changes nothing"),
        (&["verify", "4-3:identity", "--loss", "mse", "--out", "tanh"], "--out tanh changes nothing"),
    ] {
        let (line, code) = refused(d, args);
        assert_eq!(code, 2, "{args:?}: {line}");
        assert!(line.starts_with(&format!("flopnet: {says}")), "{line}");
    }
    std::fs::write(d.join("afile"), b"x").unwrap();
    let (line, code) = refused(d, &["train", "784-10", "--checkpoint", "afile"]);
    assert_eq!((line.as_str(), code), ("flopnet: --checkpoint afile: is a file; --checkpoint takes a directory", 2));
    assert!(!d.join("p.json").exists());
    // What the refusals leave: the same flags where they do something.
    for args in [
        &["bench", "4-3", "--forward-only", "--steps", "1", "--runs", "1"][..],
        &["count", "4-3", "--device", "h200"],
        &["count", "4-5-3", "--act", "tanh", "--out", "softmax"],
    ] {
        let out = flopnet_in(d, args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    }
}

#[test]
fn every_count_option_is_at_least_one_in_every_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Commands that are right but for the 0: a model eval can score, a spec the data fits.
    model_file(&d.join("m.safetensors"), "784-10");
    for args in [
        &["eval", "--model", "m.safetensors", "--batch", "0"][..],
        &["verify", "4-3", "--examples", "0"],
        &["bench", "4-3", "--runs", "0"],
        &["bench", "4-3", "--steps", "0"],
        &["train", "784-10", "--epochs", "0"],
        &["count", "4-3", "--epochs", "0"],
        &["report", "4-3", "--epochs", "0", "--output", "r.html"],
        &["count", "4-3", "--batch", "0"],
        &["count", "4-3", "--examples=-1"],
    ] {
        let out = flopnet_in(d, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("must be a whole number of at least 1"), "{args:?}: {}", stderr(&out));
    }
}

// ---- 16: eval speaks of the model it scores; NaN weights are not scored ----------------------

#[test]
fn eval_errors_speak_of_the_model_and_nan_weights_are_refused() {
    use flopnet::spec::{self, Defaults};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = good_csv(d);
    let save = |name: &str, text: &str, nan: bool| {
        let s = spec::parse(text, Defaults::default()).unwrap();
        let mut p = flopnet::init::init(&s, 1);
        if nan {
            p[0].weight[3] = f64::NAN;
        }
        flopnet::model::save(&d.join(name), &s, &p).unwrap();
    };
    save("mse.safetensors", "2-4:tanh", false);
    save("wide.safetensors", "3-10:softmax", false);
    save("few.safetensors", "2-5:softmax", false);
    save("nan.safetensors", "2-8:relu-10:softmax", true);
    for (model, says) in [
        (
            "mse.safetensors",
            "model file mse.safetensors: 2-4:tanh does not end in softmax, which --loss ce scores; score it with --loss mse",
        ),
        (
            "wide.safetensors",
            "data: the data holds rows of 2 values but the model in wide.safetensors (3-10:softmax) takes 3; score it on data shaped like its training data",
        ),
        (
            "few.safetensors",
            "data: the data has 10 classes but the model in few.safetensors (2-5:softmax) has 5 outputs; score it on data with at most 5 classes",
        ),
        ("nan.safetensors", "model file nan.safetensors: layer 1's weights hold NaN; the run that saved it diverged"),
    ] {
        let (line, code) = refused(d, &["eval", "--model", model, "--data", &data]);
        assert_eq!(code, 2, "{line}");
        assert!(line.starts_with(&format!("flopnet: {says}")), "{line}");
        assert!(!line.contains("spec") && !line.contains("gradient") && !line.contains("--out"), "{line}");
    }
}

/// `count --predict` gives its fixed cost per step one figure, in the table and in the words
/// under it; `train`'s cost line says what its step is.
#[test]
fn the_fixed_cost_is_one_figure_and_the_step_says_its_batch() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_flopnet"))
        .env("XDG_CACHE_HOME", dir.path())
        .args(["count", "784-10", "--predict", "--threads", "1"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", stderr(&out));
    let row = text.lines().find(|l| l.trim_start().starts_with("fixed ")).expect("a fixed row");
    let figure = row.trim_start().strip_prefix("fixed").unwrap().trim();
    assert!(text.contains(&format!("a fixed cost per step of {figure} (")), "{figure}:\n{text}");
    let out = Command::new(env!("CARGO_BIN_EXE_flopnet"))
        .env("XDG_CACHE_HOME", dir.path())
        .args(["train", "784-10", "--epochs", "1", "--batch", "32", "--threads", "1"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    // 784-10 with adam at batch 32 (the ledger's per-batch total), and its share per example.
    assert!(text.contains("FLOPs per step of 32 (an example's share "), "{text}");
    assert!(!text.contains("per example step"), "{text}");
}

// ---- 17: every flag of every subcommand's help has a description and at most one default ----

#[test]
fn every_flag_in_every_help_has_a_description_and_one_default() {
    let dir = tempfile::tempdir().unwrap();
    // clap indents a flag 2 spaces (`  -b, --batch`) or 6 (`      --act`); wrapped text more.
    let option = |l: &str| {
        let short = l.strip_prefix("  ").is_some_and(|t| t.starts_with('-') && t.chars().nth(2) == Some(','));
        short || l.strip_prefix("      ").is_some_and(|t| t.starts_with("--"))
    };
    for cmd in ["count", "explain", "verify", "train", "eval", "bench", "calibrate", "report"] {
        for help in ["-h", "--help"] {
            let out = flopnet_in(dir.path(), &[cmd, help]);
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let lines: Vec<&str> = text.lines().collect();
            let starts: Vec<usize> = (0..lines.len()).filter(|&i| option(lines[i])).collect();
            assert!(starts.len() >= 2, "{cmd} {help}:\n{text}");
            for (k, &i) in starts.iter().enumerate() {
                let end = starts.get(k + 1).copied().unwrap_or(lines.len());
                let entry = lines[i..end].join("\n");
                // The signature is the flag and its <VALUE>; what follows must say something.
                let first = lines[i].trim_start();
                let signature_end = first.find("  ").unwrap_or(first.len());
                let words = format!("{}\n{}", &first[signature_end..], lines[i + 1..end].join("\n"));
                let words = words.split("[default:").next().unwrap_or("");
                assert!(words.chars().any(char::is_alphabetic), "{cmd} {help}: no description:\n{entry}");
                assert!(entry.matches("[default:").count() <= 1, "{cmd} {help}: two defaults:\n{entry}");
            }
        }
    }
}

/// The rule found by reading the help, so a count option added later is held to it too: every
/// option whose value is a count (batch, epochs, examples, runs, steps, threads), in every
/// subcommand, refuses 0 with the same words.
#[test]
fn the_help_lists_no_count_option_that_takes_zero() {
    let dir = tempfile::tempdir().unwrap();
    let counts = ["<BATCH>", "<EPOCHS>", "<EXAMPLES>", "<RUNS>", "<STEPS>", "<THREADS>"];
    let mut checked = 0;
    for cmd in ["count", "explain", "verify", "train", "eval", "bench", "calibrate", "report"] {
        let help = String::from_utf8_lossy(&flopnet_in(dir.path(), &[cmd, "-h"]).stdout).into_owned();
        let base: Vec<&str> = match cmd {
            "eval" => vec!["eval", "--model", "m.safetensors"],
            "calibrate" => vec!["calibrate"],
            "report" => vec!["report", "4-3", "--output", "r.html"],
            c => vec![c, "4-3"],
        };
        for line in help.lines() {
            let Some(flag) = line.split_whitespace().find(|w| w.starts_with("--")) else { continue };
            if !counts.iter().any(|c| line.contains(c)) {
                continue;
            }
            let out = flopnet_in(dir.path(), &[&base[..], &[flag, "0"]].concat());
            assert_eq!(out.status.code(), Some(2), "{cmd} {flag} 0: {}", stderr(&out));
            assert!(stderr(&out).contains("must be a whole number of at least 1"), "{cmd} {flag} 0: {}", stderr(&out));
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} count options found in the help");
}

/// A model given to `--init` is read and checked before the data is loaded or anything printed;
/// `eval` with a batch larger than the data scores it in one batch of the data's size.
#[test]
fn init_is_checked_first_and_eval_batches_fit_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = good_csv(d);
    model_file(&d.join("m.safetensors"), "2-3:relu-10:softmax");
    for init in ["/dev/zero", "m.safetensors"] {
        let out = flopnet_in(d, &["train", "2-10", "--data", &data, "--init", init]);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(
            out.stdout.is_empty(),
            "printed before refusing --init {init}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let out = flopnet_in(d, &["eval", "--model", "m.safetensors", "--data", &data, "--batch", "100000000000000"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("over 200 examples"));
}

/// Every reader of a file the user names, against every kind of path that is not a readable
/// file of a sane size: each answers at once, with one line, as bad input (exit 2).
#[test]
fn every_reader_refuses_every_bad_path_at_once() {
    use flopnet::data::{DataSource, LoadOptions};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("a-dir.toml")).unwrap();
    std::fs::File::create(d.join("huge.toml")).unwrap().set_len(1 << 40).unwrap();
    let paths = [d.join("a-dir.toml"), "/dev/zero".into(), d.join("huge.toml"), d.join("missing.toml")];
    type Reader = fn(&Path) -> Result<(), flopnet::Error>;
    let readers: [(&str, Reader); 5] = [
        ("data", |p| {
            let o = LoadOptions { normalize: None, val_split: 0.0, seed: 1 };
            flopnet::data::load(&DataSource::Path(p.to_path_buf()), &o).map(drop).map_err(Into::into)
        }),
        ("model", |p| flopnet::model::load(p).map(drop)),
        ("spec", |p| flopnet::spec::load(p.to_str().unwrap(), flopnet::spec::Defaults::default()).map(drop)),
        ("metrics", |p| flopnet::plot::Metrics::read(p).map(drop)),
        ("checkpoint", |p| flopnet::checkpoint::Checkpoint::load(p.parent().unwrap()).map(drop)),
    ];
    for (name, read) in readers {
        for path in &paths {
            // A checkpoint is looked for in a directory: give it the path as its file.
            let path = if name == "checkpoint" {
                let ck = d.join(format!("ck-{}", path.file_name().unwrap().to_string_lossy()));
                std::fs::create_dir_all(&ck).unwrap();
                let f = ck.join("checkpoint.safetensors");
                if path.exists() && !f.exists() {
                    std::os::unix::fs::symlink(path, &f).unwrap();
                }
                f
            } else {
                path.clone()
            };
            let start = Instant::now();
            let e = read(&path).expect_err(&format!("{name} read {}", path.display()));
            assert!(start.elapsed() < Duration::from_secs(1), "{name} {}: {:?}", path.display(), start.elapsed());
            let m = e.to_string();
            assert!(!m.contains('\n') && m.contains(&*path.to_string_lossy()), "{name}: {m}");
            assert_eq!(e.exit_code(), 2, "{name} {}: {m}", path.display());
        }
    }
}

/// The checkpoint a run keeps (`--checkpoint DIR`, or `--resume DIR`) is never replaced by the
/// run's other outputs: `--save DIR/checkpoint.safetensors` once wrote a model over the
/// checkpoint being resumed, and the next resume found it "damaged". A checkpoint given where
/// a model file goes is named for what it is.
#[test]
fn a_checkpoint_is_never_replaced_by_another_output_nor_read_as_a_model() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = good_csv(d);
    let base = ["train", "2-10", "--data", &data, "--threads", "1", "--profile", "p.json"];
    let out = flopnet_in(d, &[&base[..], &["--epochs", "1", "--checkpoint", "ck"]].concat());
    assert!(out.status.success(), "{}", stderr(&out));
    let saved = std::fs::read(d.join("ck/checkpoint.safetensors")).unwrap();
    std::fs::create_dir(d.join("new")).unwrap();
    for (extra, says) in [
        (
            &["--epochs", "2", "--resume", "ck", "--save", "ck/checkpoint.safetensors"][..],
            "--save ck/checkpoint.safetensors: is the file --resume ck keeps (ck/checkpoint.safetensors)",
        ),
        (
            &["--epochs", "2", "--resume", "ck", "--metrics", "ck/../ck/checkpoint.safetensors"],
            "--metrics ck/../ck/checkpoint.safetensors: is the file --resume ck keeps",
        ),
        (
            &["--epochs", "1", "--checkpoint", "new", "--save", "new/checkpoint.safetensors"],
            "--save new/checkpoint.safetensors: is the file --checkpoint new keeps",
        ),
    ] {
        let (line, code) = refused(d, &[&base[..], extra].concat());
        assert_eq!(code, 2, "{extra:?}: {line}");
        assert!(line.starts_with(&format!("flopnet: {says}")), "{extra:?}: {line}");
    }
    assert_eq!(std::fs::read(d.join("ck/checkpoint.safetensors")).unwrap(), saved, "the checkpoint was replaced");
    assert!(!d.join("new/checkpoint.safetensors").exists());
    for args in [
        &["eval", "--model", "ck/checkpoint.safetensors", "--data", &data][..],
        &[&base[..], &["--init", "ck/checkpoint.safetensors"]].concat(),
    ] {
        let (line, code) = refused(d, args);
        assert_eq!(code, 2, "{args:?}: {line}");
        assert!(
            line.ends_with("ck/checkpoint.safetensors: is a training checkpoint, not a model file; finish its run with `flopnet train ... --resume DIR --save FILE` to get one"),
            "{args:?}: {line}"
        );
    }
}

/// `eval` scores in batches of 256 unless told otherwise; on fewer examples that is all of them,
/// and nothing is said about a `--batch` the user never gave. One they gave is noted.
#[test]
fn eval_notes_only_a_batch_the_user_gave() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = good_csv(d);
    model_file(&d.join("m.safetensors"), "2-10");
    let out = flopnet_in(d, &["eval", "--model", "m.safetensors", "--data", &data]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("--batch"), "{}", stderr(&out));
    let out = flopnet_in(d, &["eval", "--model", "m.safetensors", "--data", &data, "--batch", "500"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("--batch 500 is more than the 200 examples to score; the batch is 200"));
}

/// `--epochs` has no upper limit: a run asked for 10^11 epochs trains (it once aborted at
/// start, allocating a report for every epoch up front) until it is stopped, and a SIGTERM
/// checkpoints it as any run.
#[test]
fn a_huge_epoch_count_trains_until_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = good_csv(d);
    let args = ["train", "2-10", "--data", &data, "--threads", "1", "--profile", "p.json", "--checkpoint", "ck"];
    let mut child = Command::new(env!("CARGO_BIN_EXE_flopnet"))
        .current_dir(d)
        .args([&args[..], &["--epochs", "100000000000"]].concat())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !d.join("ck/checkpoint.safetensors").exists() {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            panic!("the run ended ({status}) before its first epoch: {}", stderr(&out));
        }
        assert!(start.elapsed() < Duration::from_secs(60), "no epoch finished");
        std::thread::sleep(Duration::from_millis(10));
    }
    let status = Command::new("sh").args(["-c", &format!("kill -s TERM {}", child.id())]).status().unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(143), "{}", stderr(&out));
}

/// `train --plot` in a format flopnet does not draw is refused before anything is printed or
/// measured, as `count --plot` is (it was found only after the data, the cost lines and a
/// calibration).
#[test]
fn train_refuses_a_plot_format_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = good_csv(d);
    let out = Command::new(env!("CARGO_BIN_EXE_flopnet"))
        .current_dir(d)
        .env("XDG_CACHE_HOME", d.join("cache"))
        .args(["train", "2-10", "--data", &data, "--epochs", "1", "--threads", "1", "--plot", "chart.jpg"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("chart.jpg") && stderr(&out).contains(".svg or .png"), "{}", stderr(&out));
    assert!(out.stdout.is_empty(), "printed before refusing: {}", String::from_utf8_lossy(&out.stdout));
    assert!(!d.join("cache").exists(), "measured before refusing");
}

/// A checkpoint that cannot be resumed is refused before train measures anything: with no
/// profile cached, the old order calibrated first (3–4 s, and a profile written) and only then
/// read the checkpoint.
#[test]
fn a_bad_checkpoint_is_refused_before_calibrating() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("cache")).unwrap();
    std::fs::create_dir(d.join("ck")).unwrap();
    std::fs::File::create(d.join("ck/checkpoint.safetensors")).unwrap().set_len(1 << 40).unwrap();
    good_csv(d);
    let out = Command::new(env!("CARGO_BIN_EXE_flopnet"))
        .current_dir(d)
        .env("XDG_CACHE_HOME", d.join("cache"))
        .args(["train", "2-10", "--data", "good.csv", "--resume", "ck"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("holds 1.0 TiB"), "{}", stderr(&out));
    let cached: Vec<_> = walk(&d.join("cache"));
    assert!(cached.is_empty(), "train calibrated before reading the checkpoint: {cached:?}");
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.path().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}
