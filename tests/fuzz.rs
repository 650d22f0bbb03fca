//! Fuzzing every parser of user input: the spec (compact and TOML), the IDX, CIFAR-10 and CSV
//! loaders, safetensors model files and checkpoints.
//!
//! Each target draws inputs from a proptest strategy — valid inputs mutated (bytes flipped, cut,
//! appended, header words overwritten, gzipped or not) and plain noise — and runs the parser on a
//! thread of its own, checking that it
//! - returns (a panic fails the case, and proptest shrinks it to a minimal input),
//! - within [`CASE_LIMIT`] (a hang fails the case),
//! - allocating at most [`ALLOC_FACTOR`] × the input's (decompressed) size + 1 MiB at peak, and
//! - answers an error with a one-line message naming what is wrong.
//!
//! By default each target runs [`DEFAULT_CASES`] cases; `FLOPNET_FUZZ_SECS=60` runs each for
//! 60 seconds instead (as `.ci/run` does). Inputs that once broke a parser are kept as
//! regression tests at the end of this file.

use flopnet::checkpoint::{Checkpoint, Meta};
use flopnet::cost::{Config, Ledger};
use flopnet::data::{self, LoadOptions, Normalize};
use flopnet::spec::{self, Defaults, Loss, Optimizer};
use flopnet::{Error, model};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config as RunConfig, TestCaseError, TestRunner};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// A global allocator that keeps, per thread, the bytes live and their peak.

struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn track(delta: isize) {
    let _ = LIVE.try_with(|live| {
        let v = live.get() + delta;
        live.set(v);
        let _ = PEAK.try_with(|p| p.set(p.get().max(v)));
    });
}

// SAFETY: every call is passed straight to the system allocator; only counters are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            track(l.size() as isize);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(l) };
        if !p.is_null() {
            track(l.size() as isize);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) };
        track(-(l.size() as isize));
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        let q = unsafe { System.realloc(p, l, new) };
        if !q.is_null() {
            track(new as isize - l.size() as isize);
        }
        q
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

// ---------------------------------------------------------------------------------------------
// The harness.

const DEFAULT_CASES: u32 = 600;
/// The longest one input may take (a parser is linear: real cases take microseconds).
const CASE_LIMIT: Duration = Duration::from_secs(10);
const ALLOC_FACTOR: usize = 64;

/// Runs `f` on a fresh thread; fails on a panic, on taking longer than [`CASE_LIMIT`], or on a
/// peak allocation above the bound for an input of `size` bytes. Returns `f`'s answer.
fn guarded<T: Send + 'static>(size: usize, f: impl FnOnce() -> T + Send + 'static) -> Result<T, TestCaseError> {
    guarded_within(CASE_LIMIT, size, f)
}

fn guarded_within<T: Send + 'static>(
    limit: Duration,
    size: usize,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, TestCaseError> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let base = LIVE.with(Cell::get);
        PEAK.with(|p| p.set(base));
        let r = f();
        let peak = (PEAK.with(Cell::get) - base).max(0) as usize;
        let _ = tx.send((r, peak));
    });
    let (r, peak) = match rx.recv_timeout(limit) {
        Ok(v) => v,
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            return Err(TestCaseError::fail(format!("hang: no answer within {limit:?}")));
        }
        Err(_) => return Err(TestCaseError::fail("panicked")),
    };
    let bound = ALLOC_FACTOR * size + (1 << 20);
    if peak > bound {
        return Err(TestCaseError::fail(format!("allocated {peak} bytes at peak for a {size}-byte input")));
    }
    Ok(r)
}

/// An error message must say something, on one line.
fn one_line(msg: &str) -> Result<(), TestCaseError> {
    prop_assert!(!msg.trim().is_empty(), "empty message");
    prop_assert!(!msg.contains('\n'), "message over several lines: {msg}");
    Ok(())
}

/// Runs `test` over `strategy` for the default cases, or for `FLOPNET_FUZZ_SECS` seconds.
fn fuzz<S: Strategy>(name: &str, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S::Value: std::fmt::Debug,
{
    let secs: Option<u64> = std::env::var("FLOPNET_FUZZ_SECS").ok().and_then(|s| s.parse().ok());
    let cases = if secs.is_some() { 2000 } else { DEFAULT_CASES };
    let start = Instant::now();
    let mut rounds = 0u64;
    loop {
        // A runner counts its cases for good, so each round takes a fresh one (freshly seeded).
        let mut runner = TestRunner::new(RunConfig { cases, failure_persistence: None, ..RunConfig::default() });
        if let Err(e) = runner.run(&strategy, &test) {
            panic!("fuzz target {name}: {e}");
        }
        rounds += 1;
        match secs {
            Some(s) if start.elapsed() < Duration::from_secs(s) => {}
            _ => break,
        }
    }
    eprintln!("fuzz target {name}: {} cases in {:.1?}, no failure", rounds * u64::from(cases), start.elapsed());
}

// ---------------------------------------------------------------------------------------------
// Mutations.

#[derive(Clone, Debug)]
enum Edit {
    Flip(usize, u8),
    Truncate(usize),
    Append(Vec<u8>),
    /// Overwrite a big-endian u32 at a 4-byte-aligned offset (IDX header words).
    Word(usize, u32),
    Insert(usize, Vec<u8>),
}

fn edit() -> impl Strategy<Value = Edit> {
    let word = prop_oneof![Just(0u32), Just(1), Just(0x803), Just(0x801), Just(u32::MAX), Just(1 << 31), any::<u32>()];
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Flip(i, b)),
        any::<usize>().prop_map(Edit::Truncate),
        vec(any::<u8>(), 1..16).prop_map(Edit::Append),
        (0usize..4, word).prop_map(|(i, w)| Edit::Word(i, w)),
        (any::<usize>(), vec(any::<u8>(), 1..8)).prop_map(|(i, b)| Edit::Insert(i, b)),
    ]
}

fn apply(mut b: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for e in edits {
        match e {
            Edit::Flip(i, v) if !b.is_empty() => {
                let n = b.len();
                b[i % n] = *v;
            }
            Edit::Truncate(i) => b.truncate(i % (b.len() + 1)),
            Edit::Append(x) => b.extend_from_slice(x),
            Edit::Word(i, w) if b.len() >= 4 * i + 4 => b[4 * i..4 * i + 4].copy_from_slice(&w.to_be_bytes()),
            Edit::Insert(i, x) => {
                let at = i % (b.len() + 1);
                b.splice(at..at, x.iter().copied());
            }
            _ => {}
        }
    }
    b
}

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

/// The size an input stands for: its decompressed length where it is gzip (up to 64 MiB).
fn plain_len(b: &[u8]) -> usize {
    if b.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        let _ = flate2::read::MultiGzDecoder::new(b).take(64 << 20).read_to_end(&mut out);
        out.len().max(b.len())
    } else {
        b.len()
    }
}

/// Valid bytes, mutated by 0-4 edits, gzipped half the time (after or before the edits).
fn mutated(valid: impl Strategy<Value = Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    (valid, vec(edit(), 0..5), 0u8..4).prop_map(|(b, edits, gz)| match gz {
        0 => gzip(&apply(b, &edits)),
        1 => apply(gzip(&b), &edits),
        _ => apply(b, &edits),
    })
}

fn noise() -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..256)
}

fn check_data(r: Result<data::Splits, data::DataError>) -> Result<(), TestCaseError> {
    match r {
        Ok(s) => {
            let f = s.train.feature_len();
            prop_assert!(f > 0 && !s.train.is_empty(), "an empty data set was accepted");
            prop_assert_eq!(s.train.features.len(), s.train.len() * f);
            prop_assert!(s.train.labels.iter().all(|&y| (y as usize) < s.train.classes));
            prop_assert!(s.train.features.iter().all(|v| v.is_finite()));
            Ok(())
        }
        Err(e) => one_line(&e.to_string()),
    }
}

fn opts() -> LoadOptions {
    LoadOptions { normalize: None, val_split: 0.25, seed: 3 }
}

// ---------------------------------------------------------------------------------------------
// Targets.

fn spec_text() -> impl Strategy<Value = String> {
    let size = prop_oneof![
        "[0-9]{1,3}",
        Just("0".to_string()),
        Just("4294967296".to_string()),
        Just("4294967297".to_string()),
        "[0-9]{10,25}",
        Just(String::new()),
        "[ +x.a-z]{1,3}",
        // Images and the layers that read them, well- and ill-formed.
        "[0-9]{1,2}x[0-9]{1,2}x[0-9]{1,2}",
        "conv[0-9]x[0-9]x[0-9]{1,2}",
        "conv[0-9]x[0-9]x[0-9]{1,2}(s[0-9]|p[0-9]|psame|p[a-z]{1,3}){0,2}",
        "(max|avg)pool[0-9](s[0-9])?",
        "conv[0-9x]{0,6}[a-z]{0,2}",
    ];
    let act = prop_oneof![
        Just(String::new()),
        Just(":relu".to_string()),
        Just(":softmax".to_string()),
        Just(":tanh".to_string()),
        Just(":sigmoid".to_string()),
        Just(":identity".to_string()),
        ":[a-z_]{0,8}",
        Just("::".to_string()),
    ];
    let token = (size, act).prop_map(|(s, a)| format!("{s}{a}"));
    prop_oneof![
        4 => vec(token, 0..6).prop_map(|t| t.join("-")),
        1 => "\\PC{0,40}",
        1 => "[-0-9:a-z ]{0,30}",
    ]
}

#[test]
fn fuzz_spec_compact() {
    fuzz("spec (compact)", spec_text(), |text| {
        let size = text.len();
        let r = guarded(size, move || {
            let r = spec::parse(&text, Defaults::default());
            // What `count` does with a spec that parses: the ledger, and its report.
            let counted = r.as_ref().ok().map(|s| {
                let cfg =
                    Config { loss: Loss::Mse, optimizer: Optimizer::Adam, batch: 1024, examples: 60_000, epochs: 3 };
                let ledger = Ledger::new(s, &cfg);
                // And what `explain --diagram` does with it.
                let diagram = flopnet::plot::Diagram::new(s).columns.len();
                flopnet::report::count_text(&ledger).len() + flopnet::report::explain_text(s, &cfg).len() + diagram
            });
            (text, r.map(|s| (s.to_string(), s)).map_err(|e| e.to_string()), counted)
        })?;
        match r {
            (_, Ok((shown, s)), _) => {
                let again = spec::parse(&shown, Defaults::default());
                prop_assert_eq!(again.ok(), Some(s), "the canonical form {} does not parse back", shown);
            }
            (text, Err(m), _) => {
                one_line(&m)?;
                prop_assert!(m.starts_with(&format!("spec `{text}`")), "{m}");
            }
        }
        Ok(())
    });
}

fn toml_text() -> impl Strategy<Value = String> {
    let value = prop_oneof![
        "[0-9]{1,4}",
        Just("0".to_string()),
        Just("-3".to_string()),
        Just("99999999999999999999999".to_string()),
        Just("4294967297".to_string()),
        Just("\"30\"".to_string()),
        Just("1.5".to_string()),
        Just("[]".to_string()),
    ];
    let act = prop_oneof![
        Just(None),
        Just(Some("\"relu\"".to_string())),
        Just(Some("\"softmax\"".to_string())),
        Just(Some("\"swish\"".to_string())),
        Just(Some("3".to_string())),
    ];
    let key = prop_oneof![Just("units"), Just("unit"), Just("activation")];
    let layer = (key, value.clone(), act).prop_map(|(k, v, a)| {
        let mut s = format!("[[layers]]\n{k} = {v}\n");
        if let Some(a) = a {
            s += &format!("activation = {a}\n");
        }
        s
    });
    let file = (prop_oneof![Just("input"), Just("inputs")], value, vec(layer, 0..4))
        .prop_map(|(k, v, layers)| format!("{k} = {v}\n{}", layers.concat()));
    prop_oneof![
        4 => (file, vec(edit(), 0..2)).prop_map(|(f, e)| String::from_utf8_lossy(&apply(f.into_bytes(), &e)).into_owned()),
        1 => "\\PC{0,60}",
    ]
}

#[test]
fn fuzz_spec_toml() {
    fuzz("spec (TOML)", toml_text(), |text| {
        let size = text.len();
        let r =
            guarded(size, move || spec::from_toml(&text, "net.toml", Defaults::default()).map_err(|e| e.to_string()))?;
        if let Err(m) = r {
            one_line(&m)?;
            prop_assert!(m.starts_with("spec `net.toml`"), "{m}");
        }
        Ok(())
    });
}

fn idx_images(n: u32, rows: u32, cols: u32) -> Vec<u8> {
    let mut b: Vec<u8> = [0x803, n, rows, cols].iter().flat_map(|v: &u32| v.to_be_bytes()).collect();
    b.extend((0..n * rows * cols).map(|i| i as u8));
    b
}

fn idx_labels(labels: &[u8]) -> Vec<u8> {
    let mut b: Vec<u8> = [0x801, labels.len() as u32].iter().flat_map(|v: &u32| v.to_be_bytes()).collect();
    b.extend_from_slice(labels);
    b
}

fn idx_pair() -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
    let valid = (0u32..5, 0u32..5, 0u32..5, vec(prop_oneof![0u8..10, 0u8..=255], 0..6))
        .prop_map(|(n, r, c, labels)| (idx_images(n, r, c), idx_labels(&labels)));
    prop_oneof![
        6 => (valid, vec(edit(), 0..4), vec(edit(), 0..3), 0u8..4).prop_map(|((i, l), ei, el, gz)| {
            let (i, l) = (apply(i, &ei), apply(l, &el));
            match gz {
                0 => (gzip(&i), l),
                1 => (i, gzip(&l)),
                _ => (i, l),
            }
        }),
        1 => (noise(), noise()),
    ]
}

#[test]
fn fuzz_idx() {
    fuzz("IDX", idx_pair(), |(images, labels)| {
        let size = plain_len(&images) + plain_len(&labels);
        guarded(size, move || check_data(data::load_idx_bytes(images, labels, &opts())))?
    });
}

fn cifar() -> impl Strategy<Value = Vec<u8>> {
    let record = (prop_oneof![0u8..10, 0u8..=255], any::<u8>()).prop_map(|(label, fill)| {
        let mut r = vec![fill; 3073];
        r[0] = label;
        r
    });
    prop_oneof![4 => mutated(vec(record, 0..3).prop_map(|r| r.concat())), 1 => noise()]
}

#[test]
fn fuzz_cifar() {
    fuzz("CIFAR-10", cifar(), |bytes| {
        let size = plain_len(&bytes);
        guarded(size, move || check_data(data::load_bytes(Path::new("data_batch_1.bin"), bytes, &opts())))?
    });
}

fn csv() -> impl Strategy<Value = Vec<u8>> {
    let cell = prop_oneof![
        4 => (0u32..12).prop_map(|v| v.to_string()),
        2 => (-1e3f32..1e3).prop_map(|v| v.to_string()),
        1 => prop_oneof![
            Just(""), Just("abc"), Just("\"3\""), Just(" 4 "), Just("1e999"), Just("NaN"), Just("inf"), Just("-1"),
            Just("2.5"), Just("300"), Just("\""), Just("0x10"), Just("1,5"), Just("3e38"), Just("-3e38")
        ].prop_map(str::to_string),
    ];
    let row = vec(cell, 0..6).prop_map(|c| c.join(","));
    let text = (vec(row, 0..8), any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(rows, header, crlf, bom)| {
        let mut s = String::new();
        if bom {
            s.push('\u{feff}');
        }
        if header {
            s += "label,a,b\n";
        }
        s += &rows.join(if crlf { "\r\n" } else { "\n" });
        s.into_bytes()
    });
    prop_oneof![4 => mutated(text), 1 => noise()]
}

#[test]
fn fuzz_csv() {
    let names = prop_oneof![Just("train.csv"), Just("train.csv.gz"), Just("blob")];
    fuzz("CSV", (csv(), names, any::<bool>()), |(bytes, name, standard)| {
        let size = plain_len(&bytes);
        let o = LoadOptions { normalize: Some(if standard { Normalize::Standard } else { Normalize::None }), ..opts() };
        guarded(size, move || check_data(data::load_bytes(Path::new(name), bytes, &o)))?
    });
}

/// Valid model files of a few small networks.
fn model_files() -> Vec<Vec<u8>> {
    let dir = tempfile::tempdir().unwrap();
    ["3-2", "4-5:tanh-3:softmax", "2-3:relu-3:sigmoid-1:identity"]
        .iter()
        .map(|s| {
            let spec = spec::parse(s, Defaults::default()).unwrap();
            let path = dir.path().join("m.safetensors");
            model::save(&path, &spec, &flopnet::init::init(&spec, 1)).unwrap();
            std::fs::read(&path).unwrap()
        })
        .collect()
}

/// A safetensors file with a made-up header: names, dtypes, shapes and offsets drawn at random.
fn crafted_safetensors() -> impl Strategy<Value = Vec<u8>> {
    let dim = prop_oneof![0u64..4, Just(u32::MAX as u64), Just(u64::MAX / 2), Just(1 << 40)];
    let name = prop_oneof![
        Just("layers.0.weight"),
        Just("layers.0.bias"),
        Just("layers.1.weight"),
        Just("layers.2.weight"),
        Just("layers.2.bias"),
        Just("0.weight"),
        Just("x")
    ];
    let dtype = prop_oneof![Just("F32"), Just("F64"), Just("I8"), Just("BF16")];
    let tensor = (name, dtype, vec(dim.clone(), 0..3), dim.clone(), dim);
    (vec(tensor, 0..4), vec(any::<u8>(), 0..64), prop_oneof![Just(None), Just(Some("3-2")), Just(Some("2-x"))])
        .prop_map(|(tensors, data, spec)| {
            let mut fields: Vec<String> = tensors
                .iter()
                .map(|(n, d, shape, a, b)| {
                    format!(r#""{n}":{{"dtype":"{d}","shape":{shape:?},"data_offsets":[{a},{b}]}}"#)
                })
                .collect();
            if let Some(s) = spec {
                fields.push(format!(r#""__metadata__":{{"spec":"{s}"}}"#));
            }
            let header = format!("{{{}}}", fields.join(","));
            let mut b = (header.len() as u64).to_le_bytes().to_vec();
            b.extend_from_slice(header.as_bytes());
            b.extend_from_slice(&data);
            b
        })
}

#[test]
fn fuzz_safetensors() {
    let files = model_files();
    let valid = (0..files.len()).prop_map(move |i| files[i].clone());
    let input = prop_oneof![
        4 => (valid, vec(edit(), 1..4)).prop_map(|(b, e)| apply(b, &e)),
        2 => crafted_safetensors(),
        1 => noise(),
    ];
    fuzz("safetensors", input, |bytes| {
        let size = bytes.len();
        let r =
            guarded(size, move || model::from_bytes(Path::new("m.safetensors"), &bytes).map_err(|e| e.to_string()))?;
        match r {
            Ok((spec, params)) => {
                prop_assert_eq!(params.len(), spec.layers.len());
                for (l, p) in spec.layers.iter().zip(&params) {
                    prop_assert_eq!(p.weight.len(), l.inputs * l.outputs);
                    prop_assert_eq!(p.bias.len(), l.outputs);
                }
            }
            Err(m) => {
                one_line(&m)?;
                prop_assert!(m.starts_with("model file m.safetensors: "), "{m}");
            }
        }
        Ok(())
    });
}

fn checkpoint_bytes() -> Vec<u8> {
    let meta = Meta {
        spec: "3-2:softmax".into(),
        loss: "ce".into(),
        optimizer: "adam".into(),
        lr_bits: 0.001f64.to_bits(),
        batch: 4,
        seed: 1,
        shuffle: true,
        schedule: "constant".into(),
        epochs: 2,
        init: None,
        normalize: None,
        threads: 1,
        examples: 9,
        data_crc: 7,
        epoch: 1,
        batch_in_epoch: 1,
        step: 3,
        optimizer_steps: 3,
        loss_sum_bits: 0.5f64.to_bits(),
        correct: 2,
    };
    Checkpoint { meta, params: vec![0.5; 8], first: vec![0.1; 8], second: vec![0.2; 8], running: Default::default() }
        .to_bytes()
}

#[test]
fn fuzz_checkpoint() {
    let valid = checkpoint_bytes();
    let input = prop_oneof![4 => vec(edit(), 1..4).prop_map(move |e| apply(valid.clone(), &e)), 1 => noise()];
    fuzz("checkpoint", input, |bytes| {
        let size = bytes.len();
        let r = guarded(size, move || Checkpoint::from_bytes(Path::new("c"), &bytes).map_err(|e| e.to_string()))?;
        if let Err(m) = r {
            one_line(&m)?;
            prop_assert!(m.starts_with("checkpoint c: "), "{m}");
        }
        Ok(())
    });
}

// ---------------------------------------------------------------------------------------------
// The harness can fail: each check catches what it is for.

#[test]
fn the_harness_catches_panics_hangs_and_hoarding() {
    assert!(guarded(1, || panic!("boom")).is_err());
    let slow = guarded_within(Duration::from_millis(50), 1, || std::thread::sleep(Duration::from_secs(2)));
    assert!(slow.unwrap_err().to_string().contains("hang"));
    assert!(guarded(10, || vec![0u8; 64 << 20].len()).is_err(), "64 MiB for 10 bytes is caught");
    assert!(guarded(1 << 20, || vec![0u8; 1 << 20].len()).is_ok());
    assert!(one_line("a\nb").is_err() && one_line(" ").is_err() && one_line("ok").is_ok());
    let e = Error::Usage("x".into());
    assert_eq!(e.exit_code(), 2);
}

// ---------------------------------------------------------------------------------------------
// Regressions: inputs the fuzzers once broke flopnet with.
