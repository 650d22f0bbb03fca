//! The time model: profiles are checked before they are trusted, and predictions respond to the
//! work the ledger counts.

use flopnet::cost::Config;
use flopnet::predict::{self, Machine, Profile};
use flopnet::spec::{Defaults, Loss, Optimizer, parse};
use std::sync::{Mutex, OnceLock};

/// One quick calibration, shared by the tests that only read it. Calibrations run one at a time
/// (`CALIBRATING`): several at once on a 2-core machine time each other, and a rate measured
/// while another test held the core made batch 8 of a CNN look half as costly as batch 64.
fn profile() -> &'static Profile {
    static SHARED: OnceLock<Profile> = OnceLock::new();
    SHARED.get_or_init(|| calibrating(|| predict::calibrate(1, true).unwrap()))
}

static CALIBRATING: Mutex<()> = Mutex::new(());

fn calibrating<T>(f: impl FnOnce() -> T) -> T {
    let _alone = CALIBRATING.lock().unwrap_or_else(|e| e.into_inner());
    f()
}

fn cfg(batch: usize) -> Config {
    Config { loss: Loss::Ce, optimizer: Optimizer::Momentum, batch, examples: 60_000, epochs: 3 }
}

#[test]
fn profiles_round_trip_and_stale_or_corrupt_ones_are_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.json");
    let p = profile();
    p.save(&path).unwrap();
    let (back, why) = Profile::load(&path, 1);
    assert_eq!(back.as_ref(), Some(p), "{why:?}");
    // Another thread count: stale.
    let (none, why) = Profile::load(&path, 2);
    assert!(none.is_none() && why.unwrap().contains("threads"));
    // Another machine: stale.
    let mut other = p.clone();
    other.machine = "some other CPU".into();
    other.save(&path).unwrap();
    assert!(Profile::load(&path, 1).1.unwrap().contains("some other CPU"));
    // Corrupt (a profile cut short): rebuilt by load_or_calibrate, with a note saying why.
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, &text[..text.len() / 2]).unwrap();
    let (fresh, note) = calibrating(|| predict::load_or_calibrate(&path, 1, true)).unwrap();
    assert!(note.unwrap().contains("corrupt"));
    assert_eq!(Profile::load(&path, 1).0, Some(fresh));
    // A file that is not a profile at all is never replaced by one.
    std::fs::write(&path, "{ not json").unwrap();
    let e = calibrating(|| predict::load_or_calibrate(&path, 1, true)).unwrap_err();
    assert!(e.to_string().contains("not a flopnet profile"), "{e}");
    assert_eq!(std::fs::read(&path).unwrap(), b"{ not json");
}

#[test]
fn predictions_grow_with_the_work() {
    let m = Machine::Measured(profile());
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

#[test]
fn convolutions_are_matrix_products_and_pooling_a_pass_over_memory() {
    let cnn =
        parse("1x28x28-conv5x5x32p2:relu-maxpool2-conv5x5x64p2:relu-maxpool2-1024-10", Defaults::default()).unwrap();
    // A roofline where only the arithmetic counts: a convolution's time is its product's
    // 2·B·H'·W'·C·kh·kw·F FLOPs (plus the smaller passes), pooling's is a pass over its values.
    let m = Machine::Roofline { matmul_gflops: 1000.0, vector_gflops: 1000.0, bandwidth_gbs: 1e9 };
    let p = predict::predict(&cnn, &cfg(64), m, 1);
    assert_eq!(p.layers.len(), 6);
    let conv1 = p.layers[0].forward_seconds;
    let product = 2.0 * 64.0 * 28.0 * 28.0 * 25.0 * 32.0 / 1e12;
    assert!(conv1 >= product && conv1 < 1.2 * product, "{conv1} vs {product}");
    // The second convolution has 32 input maps: 16 times the first one's work per output value,
    // on a quarter of the positions and twice the filters.
    let conv2 = p.layers[2].forward_seconds;
    assert!(conv2 > 6.0 * conv1, "{conv2} vs {conv1}");
    assert!(p.layers[1].forward_seconds < conv1 / 10.0, "pooling is cheap next to a convolution");
    assert_eq!(p.layers[1].update_seconds, 0.0, "pooling has nothing to update");
    // The first convolution needs no dX; the second does, so its backward is about twice its forward.
    assert!(p.layers[0].backward_seconds < 1.2 * conv1);
    assert!(p.layers[2].backward_seconds > 1.7 * conv2);
    // This machine's profile serves a CNN as well, and more examples per batch cost more.
    let small = predict::predict(&cnn, &cfg(8), Machine::Measured(profile()), 1);
    let big = predict::predict(&cnn, &cfg(64), Machine::Measured(profile()), 1);
    assert!(
        big.step_seconds > 2.0 * small.step_seconds && small.step_seconds.is_finite(),
        "batch 64: {} s, batch 8: {} s",
        big.step_seconds,
        small.step_seconds
    );
}

#[test]
fn image_glue_is_priced_from_its_own_measurements() {
    let cnn = parse("1x28x28-conv3x3x16:relu-maxpool2-conv3x3x32:relu-maxpool2-10", Defaults::default()).unwrap();
    let p = profile();
    assert_eq!(p.pool.len(), 2);
    assert_eq!(p.regroup.len(), 2);
    let with = predict::predict(&cnn, &cfg(128), Machine::Measured(p), 1);
    // The dense layer reads 32 planes of 5×5 and hands its input gradient back as planes: without
    // the measured cost of those copies, only its product and passes remain.
    let mut free_copies = p.clone();
    for r in &mut free_copies.regroup {
        (r.to_rows, r.to_channels) = (0.0, 0.0);
    }
    let without = predict::predict(&cnn, &cfg(128), Machine::Measured(&free_copies), 1);
    let (a, b) = (&with.layers[4], &without.layers[4]);
    assert!(a.forward_seconds > b.forward_seconds && a.backward_seconds > b.backward_seconds);
    let copies = 128.0 * 800.0 * p.regroup[0].to_rows;
    assert!((a.forward_seconds - b.forward_seconds - copies).abs() < 1e-3 * copies);
    // Pooling runs at its measured rate forward; its backward writes the whole input gradient,
    // which a free kernel does not make free.
    let mut free_pool = p.clone();
    for r in &mut free_pool.pool {
        (r.forward, r.backward) = (0.0, 0.0);
    }
    let pooled = predict::predict(&cnn, &cfg(128), Machine::Measured(&free_pool), 1);
    assert_eq!(pooled.layers[1].forward_seconds, 0.0);
    assert!(pooled.layers[1].backward_seconds > 0.0);
    assert!(with.layers[1].backward_seconds >= pooled.layers[1].backward_seconds);
    // The first layer's input (one channel) needs no copy, and nothing flows back below it.
    let flat = parse("3x32x32-conv3x3x8:relu-maxpool2-10", Defaults::default()).unwrap();
    let a = predict::predict(&flat, &cfg(32), Machine::Measured(p), 1);
    let b = predict::predict(&flat, &cfg(32), Machine::Measured(&free_copies), 1);
    assert!(a.layers[0].forward_seconds > b.layers[0].forward_seconds, "a 3-channel input is regrouped");
    assert_eq!(a.layers[0].backward_seconds, b.layers[0].backward_seconds);
}
