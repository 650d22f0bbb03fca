//! The table of bad inputs in docs/robustness.md, run: every row's command is run against a
//! directory of broken files, and what flopnet prints and its exit code must be what the row
//! says (`…` in a message stands for text that depends on the machine).

use flopnet::checkpoint::{Checkpoint, Meta};
use flopnet::spec::{self, Defaults};
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const DOC: &str = include_str!("../docs/robustness.md");

fn be(words: &[u32]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_be_bytes()).collect()
}

fn idx_images(magic: u32, n: u32, rows: u32, cols: u32, pixels: usize) -> Vec<u8> {
    let mut b = be(&[magic, n, rows, cols]);
    b.extend((0..pixels).map(|i| i as u8));
    b
}

fn idx_labels(labels: &[u8]) -> Vec<u8> {
    let mut b = be(&[0x801, labels.len() as u32]);
    b.extend_from_slice(labels);
    b
}

/// Every broken (and one good) input the table's commands name.
fn fixture(dir: &Path) {
    let put = |name: &str, bytes: &[u8]| {
        if let Some(p) = Path::new(name).parent() {
            std::fs::create_dir_all(dir.join(p)).unwrap();
        }
        std::fs::write(dir.join(name), bytes).unwrap()
    };
    put("truncated-images-idx3-ubyte", &idx_images(0x803, 3, 28, 28, 100));
    put("truncated-labels-idx1-ubyte", &idx_labels(&[1, 2, 3]));
    put("magic-images-idx3-ubyte", &idx_images(0x802, 3, 4, 4, 48));
    put("magic-labels-idx1-ubyte", &idx_labels(&[1, 2, 3]));
    put("count-images-idx3-ubyte", &idx_images(0x803, 3, 4, 4, 48));
    put("count-labels-idx1-ubyte", &idx_labels(&[1, 2]));
    put("range-images-idx3-ubyte", &idx_images(0x803, 3, 4, 4, 48));
    put("range-labels-idx1-ubyte", &idx_labels(&[1, 12, 3]));
    put("small-images-idx3-ubyte", &idx_images(0x803, 3, 4, 4, 48));
    put("small-labels-idx1-ubyte", &idx_labels(&[1, 2, 3]));
    let mut cifar = vec![3u8];
    cifar.extend((0..3072 + 100).map(|i| (i * 7 % 251) as u8));
    put("short.bin", &cifar);
    put("cell.csv", b"label,x,y\n1,0.5,0.25\n0,x7,0.5\n");
    put("ragged.csv", b"1,0.5,0.25\n0,0.5\n");
    put("empty.csv", b"");
    put("header.csv", b"label,x,y\n");
    put("plain.csv.gz", b"1,0.5,0.25\n");
    put("classes.csv", b"11,0.5,0.25\n1,0.5,0.75\n");
    put("blob.dat", &[0, 1, 2, 3, 200, 0, 0, 9]);
    put("bad.toml", b"input = 784\n[[layers]]\nunit = 30\n");
    put("garbage.safetensors", b"this is not a model");
    put("ck-old/checkpoint.flopnet", b"FLOPNETCKPT\0\x02\0\0\0 and then nothing that adds up");
    put("latin1.toml", b"input = 7\n# caf\xe9\n");
    std::fs::create_dir_all(dir.join("dir.toml")).unwrap();
    // 200 examples, 2 features, 10 classes.
    let good: String =
        (0..200).map(|i| format!("{},{:.3},{:.3}\n", i % 10, (i % 7) as f64 / 7.0, (i % 13) as f64 / 13.0)).collect();
    put("good.csv", good.as_bytes());
    // A convolution's kernel and bias, as PyTorch saves them, without the spec that says the rest.
    let (kernel, bias) = (vec![0u8; 4 * 4 * 9], vec![0u8; 4 * 4]);
    let views = vec![
        (
            "layers.0.weight",
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![4, 1, 3, 3], &kernel).unwrap(),
        ),
        ("layers.0.bias", safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![4], &bias).unwrap()),
    ];
    put("conv-nospec.safetensors", &safetensors::serialize(views, None).unwrap());
    let spec = spec::parse("2-3:relu-10:softmax", Defaults::default()).unwrap();
    flopnet::model::save(&dir.join("m.safetensors"), &spec, &flopnet::init::init(&spec, 1)).unwrap();
    let meta = Meta {
        spec: "2-10:softmax".into(),
        loss: "ce".into(),
        optimizer: "adam".into(),
        lr_bits: 0.001f64.to_bits(),
        batch: 64,
        seed: 1,
        shuffle: true,
        schedule: "constant".into(),
        epochs: 2,
        init: None,
        normalize: None,
        threads: 1,
        examples: 180,
        data_crc: 0,
        epoch: 1,
        batch_in_epoch: 0,
        step: 3,
        optimizer_steps: 3,
        loss_sum_bits: 0,
        correct: 0,
    };
    let c = Checkpoint {
        meta,
        params: vec![0.0; 30],
        first: vec![0.0; 30],
        second: vec![0.0; 30],
        running: Default::default(),
    };
    c.save(&dir.join("ck-other")).unwrap();
    // The same checkpoint with one bit of its last parameter flipped.
    let mut damaged = c.to_bytes();
    *damaged.last_mut().unwrap() ^= 1;
    put("ck-garbage/checkpoint.safetensors", &damaged);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(b"1,2\n").unwrap();
    let mut cut = gz.finish().unwrap();
    cut.truncate(cut.len() - 5);
    put("cut.csv.gz", &cut);
}

/// A row of the table: what is wrong, the command, the message, the exit code.
struct Row {
    what: String,
    args: Vec<String>,
    message: String,
    exit: i32,
}

/// The text inside a markdown code span (single or double backticks).
fn code(cell: &str) -> String {
    let c = cell.trim();
    let c = c.strip_prefix("``").and_then(|c| c.strip_suffix("``")).or_else(|| c.strip_prefix('`')?.strip_suffix('`'));
    c.unwrap_or_else(|| panic!("not a code span: {cell}")).trim().to_string()
}

/// The rows of the table under "## Bad inputs".
fn rows() -> Vec<Row> {
    let section = DOC.split("## Bad inputs").nth(1).expect("a `## Bad inputs` section").split("\n## ").next().unwrap();
    section
        .lines()
        .filter(|l| l.starts_with('|') && !l.starts_with("|-") && !l.starts_with("| Bad input"))
        .map(|l| {
            let cells: Vec<&str> = l.trim().trim_matches('|').split(" | ").collect();
            assert_eq!(cells.len(), 4, "four cells: {l}");
            let command = code(cells[1]);
            let args =
                command.strip_prefix("flopnet ").expect("a flopnet command").split_whitespace().map(String::from);
            Row {
                what: cells[0].trim().to_string(),
                args: args.collect(),
                message: code(cells[2]),
                exit: cells[3].trim().parse().expect("an exit code"),
            }
        })
        .collect()
}

/// Whether `text` matches `pattern`, where `…` stands for any text.
fn matches(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('…').collect();
    let mut rest = text;
    for (i, p) in parts.iter().enumerate() {
        if i == 0 {
            match rest.strip_prefix(p) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if i + 1 == parts.len() {
            return rest.ends_with(p);
        } else {
            match rest.find(p) {
                Some(at) => rest = &rest[at + p.len()..],
                None => return false,
            }
        }
    }
    rest.is_empty()
}

#[test]
fn every_row_of_the_table_is_what_flopnet_answers() {
    let tmp = tempfile::tempdir().unwrap();
    fixture(tmp.path());
    let rows = rows();
    assert!(rows.len() >= 20, "the table has {} rows", rows.len());
    let mut wrong = Vec::new();
    for r in &rows {
        let start = Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_flopnet")).current_dir(tmp.path()).args(&r.args).output().unwrap();
        let took = start.elapsed();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let line = stderr.lines().rev().find(|l| l.starts_with("flopnet: ")).unwrap_or("(no flopnet: line)");
        let code = out.status.code().unwrap_or(-1);
        if !matches(&r.message, line) || code != r.exit {
            wrong.push(format!(
                "{}\n  flopnet {}\n  documented: {} (exit {})\n  answered:   {line} (exit {code})",
                r.what,
                r.args.join(" "),
                r.message,
                r.exit
            ));
        }
        assert!(took < Duration::from_secs(20), "{} took {took:?}", r.what);
    }
    assert!(
        wrong.is_empty(),
        "rows of docs/robustness.md that flopnet does not answer as written:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_table_covers_the_issue() {
    let rows = rows();
    let whats: Vec<String> = rows.iter().map(|r| r.what.to_lowercase()).collect();
    for kind in [
        "truncated",
        "magic number",
        "label count",
        "outside the class range",
        "non-numeric csv cell",
        "unequal length",
        "network's input",
        "empty data set",
        "not gzip",
        "too big",
        "diverges",
    ] {
        assert!(whats.iter().any(|w| w.contains(kind)), "no row for {kind}");
    }
    for code in [1, 2] {
        assert!(rows.iter().any(|r| r.exit == code), "no row exits {code}");
    }
}

#[test]
fn the_pattern_matcher() {
    assert!(matches("a…c", "abc") && matches("abc", "abc") && matches("a…", "axyz") && matches("…z", "xyz"));
    assert!(!matches("abc", "abcd") && !matches("a…c", "abd") && !matches("a…b…c", "acb"));
}

#[test]
fn the_resource_guard_answers_fast_and_count_still_works() {
    let start = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_flopnet"))
        .args(["train", "100000-100000-100000", "--batch", "1024"])
        .output()
        .unwrap();
    let took = start.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("not enough memory") && stderr.contains("does at batch"), "{stderr}");
    assert!(took < Duration::from_secs(1), "the guard took {took:?}");
    for cmd in ["bench", "verify"] {
        let out =
            Command::new(env!("CARGO_BIN_EXE_flopnet")).args([cmd, "100000-100000-100000", "-b", "1024"]).output();
        let out = out.unwrap();
        assert_eq!(out.status.code(), Some(2), "{cmd}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let out = Command::new(env!("CARGO_BIN_EXE_flopnet"))
        .args(["count", "100000-100000-100000", "--batch", "1024", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["params"], 20_000_200_000u64);
}
