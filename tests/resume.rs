//! Interruption: a real `flopnet train` run killed (SIGKILL) or stopped (SIGTERM) mid-run and
//! resumed from its checkpoint ends with a model file byte for byte the same as the run that was
//! never interrupted; a run that diverges keeps the last good checkpoint.

use flopnet::checkpoint::Checkpoint;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn flopnet(dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_flopnet"));
    c.current_dir(dir).args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    c
}

fn run(dir: &Path, args: &[&str]) -> Output {
    flopnet(dir, args).output().expect("the binary runs")
}

fn ok(out: Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

/// 3,000 examples of 32 features in 10 classes; each label is the index of the largest of the
/// first 10 features, so there is something to learn.
fn write_data(path: &Path) {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f64 / (1u64 << 24) as f64
    };
    let mut text = String::new();
    for _ in 0..3000 {
        let x: Vec<f64> = (0..32).map(|_| next()).collect();
        let label = (0..10).max_by(|&a, &b| x[a].total_cmp(&x[b])).unwrap_or(0);
        text += &label.to_string();
        for v in x {
            text += &format!(",{v:.4}");
        }
        text.push('\n');
    }
    std::fs::write(path, text).unwrap();
}

const EPOCHS: u32 = 4;

fn train_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "train",
        "32-128-128-10",
        "--data",
        "data.csv",
        "--epochs",
        "4",
        "--batch",
        "4",
        "--seed",
        "5",
        "--threads",
        "2",
        "--optimizer",
        "adam",
    ];
    v.extend_from_slice(extra);
    v
}

/// Waits until `file` exists (the first checkpoint), then `extra` longer, then signals the child.
fn interrupt(mut child: Child, file: &Path, extra: Duration, signal: &str) -> Output {
    let start = Instant::now();
    while !file.exists() {
        assert!(start.elapsed() < Duration::from_secs(120), "no checkpoint appeared");
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the run ended ({status}) before its first checkpoint");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(extra);
    if signal == "KILL" {
        child.kill().unwrap();
    } else {
        let pid = child.id().to_string();
        // The shell's own `kill`: no /bin/kill needed.
        let status = Command::new("sh").args(["-c", &format!("kill -s {signal} {pid}")]).status().unwrap();
        assert!(status.success());
    }
    child.wait_with_output().unwrap()
}

#[test]
fn kill_and_resume_is_bitwise_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_data(&dir.join("data.csv"));

    // The run that is never interrupted (checkpointing too, which must change nothing).
    let begun = Instant::now();
    ok(run(dir, &train_args(&["--save", "whole.safetensors", "--checkpoint", "ck-whole"])));
    let epoch = begun.elapsed() / EPOCHS;
    let whole = std::fs::read(dir.join("whole.safetensors")).unwrap();

    // SIGKILL about half an epoch after the first checkpoint: nothing can be saved then, so the
    // run resumes from the end of the last whole epoch.
    let child =
        flopnet(dir, &train_args(&["--save", "killed.safetensors", "--checkpoint", "ck-kill"])).spawn().unwrap();
    let out = interrupt(child, &dir.join("ck-kill/checkpoint.safetensors"), epoch / 2, "KILL");
    assert_eq!(out.status.code(), None, "killed by a signal");
    assert!(!dir.join("killed.safetensors").exists(), "the run was killed before it finished");
    let c = Checkpoint::load(&dir.join("ck-kill")).unwrap();
    assert!(c.meta.epoch >= 1 && c.meta.epoch < EPOCHS as usize && c.meta.batch_in_epoch == 0, "{:?}", c.meta);
    let resumed = ok(run(dir, &train_args(&["--save", "killed.safetensors", "--resume", "ck-kill"])));
    assert!(resumed.contains(&format!("resuming from epoch {} done", c.meta.epoch)), "{resumed}");
    assert!(std::fs::read(dir.join("killed.safetensors")).unwrap() == whole, "killed and resumed ≠ uninterrupted");

    // SIGTERM: the run stops at the next batch boundary, saves where it stands mid-epoch, exits 143.
    let child =
        flopnet(dir, &train_args(&["--save", "termed.safetensors", "--checkpoint", "ck-term"])).spawn().unwrap();
    let out = interrupt(child, &dir.join("ck-term/checkpoint.safetensors"), epoch / 3, "TERM");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(143), "{stderr}");
    assert!(stderr.contains("flopnet: interrupted by SIGTERM: stopped after step"), "{stderr}");
    let c = Checkpoint::load(&dir.join("ck-term")).unwrap();
    assert!(c.meta.batch_in_epoch > 0, "saved mid-epoch: {:?}", c.meta);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("checkpoint: epoch"), "{stdout}");
    ok(run(dir, &train_args(&["--save", "termed.safetensors", "--resume", "ck-term"])));
    assert!(std::fs::read(dir.join("termed.safetensors")).unwrap() == whole, "stopped and resumed ≠ uninterrupted");

    // Resuming a finished run trains nothing more, says so, exits 0 and saves the same model.
    let again = ok(run(dir, &train_args(&["--save", "again.safetensors", "--resume", "ck-whole"])));
    assert!(again.contains("has finished all 4 epochs: nothing left to train"), "{again}");
    assert!(std::fs::read(dir.join("again.safetensors")).unwrap() == whole);
}

/// A small run on data.csv: `train 32-16-10` with `common` then `extra`.
fn small_run(common: &[&'static str], extra: &[&'static str]) -> Vec<&'static str> {
    [&["train", "32-16-10", "--data", "data.csv", "--threads", "1"][..], common, extra].concat()
}

#[test]
fn divergence_keeps_the_last_good_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_data(&dir.join("data.csv"));
    let args = |extra: &[&'static str]| small_run(&["--batch", "16", "--optimizer", "sgd"], extra);
    ok(run(dir, &args(&["--epochs", "1", "--checkpoint", "ck"])));
    // The same run continued with a learning rate that explodes: written into the checkpoint,
    // since a resume refuses a --lr other than the one the run was saved with.
    let mut c = Checkpoint::load(&dir.join("ck")).unwrap();
    c.meta.lr_bits = 1e30f64.to_bits();
    c.save(&dir.join("ck")).unwrap();
    let good = std::fs::read(dir.join("ck/checkpoint.safetensors")).unwrap();
    let out = run(dir, &args(&["--epochs", "3", "--lr", "1e30", "--resume", "ck"]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    for want in
        ["flopnet: training diverged: ", "step ", "(epoch 2, batch ", "layer ", "learning rate 1e30", "--lr 1e29"]
    {
        assert!(stderr.contains(want), "`{want}` missing from: {stderr}");
    }
    assert!(stderr.contains("the last good checkpoint (epoch 1 done, step 169) is kept in ck"), "{stderr}");
    assert!(std::fs::read(dir.join("ck/checkpoint.safetensors")).unwrap() == good, "the good checkpoint is untouched");
}

/// A resume continues the run its checkpoint saved or nothing: a different --lr, --schedule,
/// --init (or, under a cosine schedule, --epochs) is refused with exit 2 naming the flag and both
/// values; a run whose epochs are all done says so and exits 0; one past --epochs is refused.
#[test]
fn resume_refuses_a_different_run_and_says_when_nothing_is_left() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_data(&dir.join("data.csv"));
    let args = |extra: &[&'static str]| small_run(&["--batch", "64"], extra);
    ok(run(dir, &args(&["--epochs", "1", "--checkpoint", "ck", "--save", "m.safetensors"])));
    ok(run(dir, &args(&["--epochs", "2", "--schedule", "cosine", "--checkpoint", "ck-cos"])));
    let saved = std::fs::read(dir.join("ck/checkpoint.safetensors")).unwrap();
    for (extra, want) in [
        (&["--epochs", "2", "--lr", "0.5", "--resume", "ck"][..], "was saved with --lr 0.001 but this run has 0.5"),
        (&["--epochs", "2", "--schedule", "cosine", "--resume", "ck"], "--schedule constant but this run has cosine"),
        (
            &["--epochs", "2", "--init", "m.safetensors", "--resume", "ck"],
            "starting weights no --init (seeded weights) but this run has --init m.safetensors (CRC-32 ",
        ),
        (
            &["--epochs", "2", "--normalize", "standard", "--resume", "ck"],
            "was saved with --normalize none but this run has standard",
        ),
        (
            &["--epochs", "3", "--schedule", "cosine", "--resume", "ck-cos"],
            "--epochs (with a cosine schedule) 2 but this run has 3",
        ),
    ] {
        let out = run(dir, &args(extra));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {stderr}");
        assert!(stderr.contains(want), "{extra:?}: `{want}` missing from {stderr}");
    }
    // A run that started from a model file resumes with that file named again, and only so.
    ok(run(dir, &args(&["--epochs", "1", "--init", "m.safetensors", "--checkpoint", "ck-init"])));
    let out = run(dir, &args(&["--epochs", "2", "--resume", "ck-init"]));
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    let resumed = ok(run(dir, &args(&["--epochs", "2", "--init", "m.safetensors", "--resume", "ck-init"])));
    assert!(resumed.contains("resuming from"), "{resumed}");
    let done = ok(run(dir, &args(&["--epochs", "1", "--resume", "ck", "--metrics", "m.jsonl"])));
    assert!(done.contains("has finished all 1 epochs: nothing left to train (give a larger --epochs"), "{done}");
    assert!(!dir.join("m.jsonl").exists(), "a finished run writes no metrics");
    assert!(std::fs::read(dir.join("ck/checkpoint.safetensors")).unwrap() == saved, "the checkpoint is untouched");
    // A constant rate may train on for more epochs.
    let more = ok(run(dir, &args(&["--epochs", "2", "--resume", "ck"])));
    assert!(more.contains("resuming from epoch 1 done") && more.contains("epoch   2"), "{more}");
    let out = run(dir, &args(&["--epochs", "1", "--resume", "ck"]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("has finished 2 epochs, more than --epochs 1; give --epochs 2 or more"), "{stderr}");
}
