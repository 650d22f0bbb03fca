//! The time model: profiles are checked before they are trusted, and predictions respond to the
//! work the ledger counts.

use flopnet::cost::Config;
use flopnet::predict::{self, Machine, Profile};
use flopnet::spec::{Defaults, Loss, Optimizer, parse};

fn cfg(batch: usize) -> Config {
    Config { loss: Loss::Ce, optimizer: Optimizer::Momentum, batch, examples: 60_000, epochs: 3 }
}

#[test]
fn profiles_round_trip_and_stale_or_corrupt_ones_are_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.json");
    let p = predict::calibrate(1, true).unwrap();
    p.save(&path).unwrap();
    let (back, why) = Profile::load(&path, 1);
    assert_eq!(back.as_ref(), Some(&p), "{why:?}");
    // Another thread count: stale.
    let (none, why) = Profile::load(&path, 2);
    assert!(none.is_none() && why.unwrap().contains("threads"));
    // Another machine: stale.
    let mut other = p.clone();
    other.machine = "some other CPU".into();
    other.save(&path).unwrap();
    assert!(Profile::load(&path, 1).1.unwrap().contains("some other CPU"));
    // Corrupt: rebuilt by load_or_calibrate, with a note saying why.
    std::fs::write(&path, "{ not json").unwrap();
    let (fresh, note) = predict::load_or_calibrate(&path, 1, true).unwrap();
    assert!(note.unwrap().contains("corrupt"));
    assert_eq!(Profile::load(&path, 1).0, Some(fresh));
}

#[test]
fn predictions_grow_with_the_work() {
    let p = predict::calibrate(1, true).unwrap();
    let m = Machine::Measured(&p);
    let small = parse("784-30-10", Defaults::default()).unwrap();
    let big = parse("784-800-800-10", Defaults::default()).unwrap();
    let a = predict::predict(&small, &cfg(128), m, 1);
    let b = predict::predict(&big, &cfg(128), m, 1);
    assert!(b.step_seconds > 5.0 * a.step_seconds, "{} vs {}", b.step_seconds, a.step_seconds);
    assert!((a.run_seconds - 3.0 * a.epoch_seconds).abs() < 1e-12);
    // An epoch is its batches: 468 of 128 and one of 96.
    assert!(a.epoch_seconds > 468.0 * a.step_seconds);
    assert_eq!(a.layers.len(), 2);
}

#[test]
fn device_what_if_is_a_roofline_and_says_so() {
    let spec = parse("784-800-10", Defaults::default()).unwrap();
    let d = predict::devices::find("h200").unwrap();
    let fp32 = predict::predict(&spec, &cfg(256), Machine::device(d, "fp32"), 1);
    let bf16 = predict::predict(&spec, &cfg(256), Machine::device(d, "bf16"), 1);
    assert!(bf16.step_seconds < fp32.step_seconds);
    assert!(fp32.basis.contains("roofline") && fp32.basis.contains("4800 GB/s"));
}
