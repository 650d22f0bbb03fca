//! Helpers for the unit tests: build small data files in a temporary directory.

use std::io::Write;
use std::path::PathBuf;

pub use tempfile::TempDir;

pub fn tempdir() -> TempDir {
    tempfile::tempdir().expect("create temp dir")
}

/// Writes `bytes` to `dir/name` and returns the path.
pub fn write(dir: &TempDir, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).expect("write test file");
    path
}

/// Gzips `bytes`.
pub fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).expect("gzip");
    enc.finish().expect("gzip")
}

/// An IDX images file of `n` images of `rows x cols`, pixel `k` of the file = `pixel(k)`.
pub fn idx_images(n: u32, rows: u32, cols: u32, pixel: impl Fn(usize) -> u8) -> Vec<u8> {
    let mut b = Vec::new();
    for v in [0x803, n, rows, cols] {
        b.extend_from_slice(&u32::to_be_bytes(v));
    }
    b.extend((0..(n * rows * cols) as usize).map(pixel));
    b
}

/// An IDX labels file.
pub fn idx_labels(labels: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&u32::to_be_bytes(0x801));
    b.extend_from_slice(&u32::to_be_bytes(labels.len() as u32));
    b.extend_from_slice(labels);
    b
}

/// CIFAR-10 records with the given labels; pixel `k` of record `r` is `(r + k) as u8`.
pub fn cifar_records(labels: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    for (r, &l) in labels.iter().enumerate() {
        b.push(l);
        b.extend((0..3072).map(|k| (r + k) as u8));
    }
    b
}
