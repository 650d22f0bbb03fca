//! CIFAR-10 binary batches: records of one label byte followed by 3,072
//! pixel bytes (3 channels x 32 x 32, channel-major).

use std::path::{Path, PathBuf};

use super::{CIFAR10_CLASSES, DataError, Examples, Loaded, Normalize};

/// Bytes per record: 1 label + 3 * 32 * 32 pixels.
pub(crate) const RECORD: usize = 1 + PIXELS;
const PIXELS: usize = 3 * 32 * 32;
const CLASSES: usize = 10;
const FORMAT: &str = "CIFAR-10";
/// The directory the CIFAR-10 binary tarball unpacks into.
pub(crate) const TARBALL_DIR: &str = "cifar-10-batches-bin";
const TEST_BATCH: &str = "test_batch.bin";

/// Whether decoded content looks like CIFAR-10 records: a non-zero
/// multiple of 3,073 bytes whose label bytes are all below 10.
pub(crate) fn looks_like(bytes: &[u8]) -> bool {
    !bytes.is_empty()
        && bytes.len().is_multiple_of(RECORD)
        && bytes.chunks_exact(RECORD).all(|r| usize::from(r[0]) < CLASSES)
}

/// Parses decoded records.
pub(crate) fn parse(path: &Path, bytes: &[u8]) -> Result<Examples, DataError> {
    if bytes.is_empty() {
        return Err(DataError::Empty { path: path.to_path_buf() });
    }
    if !bytes.len().is_multiple_of(RECORD) {
        let records = bytes.len() / RECORD + 1;
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            what: "CIFAR-10 batch (3,073-byte records)",
            expected: (records * RECORD) as u128,
            found: bytes.len() as u128,
        });
    }
    let n = bytes.len() / RECORD;
    let mut labels = Vec::with_capacity(n);
    for (index, record) in bytes.chunks_exact(RECORD).enumerate() {
        let label = record[0];
        if usize::from(label) >= CLASSES {
            return Err(DataError::LabelOutOfRange {
                path: path.to_path_buf(),
                format: FORMAT,
                index,
                label,
                classes: CLASSES,
            });
        }
        labels.push(label);
    }
    let mut features = Vec::with_capacity(n * PIXELS);
    for record in bytes.chunks_exact(RECORD) {
        features.extend(record[1..].iter().map(|&p| f32::from(p)));
    }
    Ok(Examples { features, labels, shape: [3, 32, 32] })
}

fn read(path: &Path) -> Result<Examples, DataError> {
    let bytes = super::read_file(path)?;
    parse(path, &bytes)
}

fn loaded(train: Examples, test: Option<Examples>, description: String) -> Loaded {
    Loaded {
        train,
        test,
        classes: CLASSES,
        class_names: CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect(),
        description,
        default_normalize: Normalize::Unit,
    }
}

/// A single batch file (already decoded) as the training set; no test split.
pub(crate) fn load_file(path: &Path, bytes: &[u8]) -> Result<Loaded, DataError> {
    let train = parse(path, bytes)?;
    Ok(loaded(train, None, format!("CIFAR-10 batch {}", path.display())))
}

pub(crate) fn train_names() -> Vec<String> {
    (1..=5).map(|i| format!("data_batch_{i}.bin")).collect()
}

/// The names a directory is searched for (for error messages).
pub(crate) fn dir_names() -> Vec<String> {
    let mut v = train_names();
    v.push(TEST_BATCH.to_string());
    v
}

/// Loads whichever of `data_batch_1.bin`..`data_batch_5.bin` exist (and
/// `test_batch.bin` if present); `Ok(None)` if there is no training batch.
pub(crate) fn load_dir(dir: &Path) -> Result<Option<Loaded>, DataError> {
    let batches: Vec<PathBuf> = train_names().into_iter().map(|n| dir.join(n)).filter(|p| p.is_file()).collect();
    let Some(first) = batches.first() else {
        return Ok(None);
    };
    let mut train = read(first)?;
    for path in &batches[1..] {
        let more = read(path)?;
        train.features.extend_from_slice(&more.features);
        train.labels.extend_from_slice(&more.labels);
    }
    let test_path = dir.join(TEST_BATCH);
    let test = if test_path.is_file() { Some(read(&test_path)?) } else { None };
    Ok(Some(loaded(
        train,
        test,
        format!(
            "CIFAR-10 binary batches in {} ({} training batch{})",
            dir.display(),
            batches.len(),
            if batches.len() == 1 { "" } else { "es" }
        ),
    )))
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{DataSource, LoadOptions, Splits, load};
    use super::*;

    fn load_path(p: &Path) -> Result<Splits, DataError> {
        let opts = LoadOptions { normalize: Some(Normalize::None), val_split: 0.0, seed: 1 };
        load(&DataSource::Path(p.to_path_buf()), &opts)
    }

    #[test]
    fn directory_of_batches() {
        let dir = tempdir();
        write(&dir, "data_batch_1.bin", &cifar_records(&[0, 9]));
        write(&dir, "data_batch_3.bin", &gz(&cifar_records(&[5])));
        write(&dir, "test_batch.bin", &cifar_records(&[4, 4, 4]));
        let s = load_path(dir.path()).unwrap();
        assert_eq!(s.train.labels, vec![0, 9, 5]);
        assert_eq!(s.train.shape, [3, 32, 32]);
        assert_eq!(s.train.features.len(), 3 * 3072);
        assert_eq!(s.train.example(1)[0], 1.0);
        assert_eq!(s.train.example(1)[3071], (3072 % 256) as f32);
        assert_eq!(s.train.class_names[0], "airplane");
        assert_eq!(s.test.unwrap().len(), 3);
        assert!(s.source.contains("2 training batches"), "{}", s.source);
    }

    #[test]
    fn tarball_subdirectory() {
        let dir = tempdir();
        let sub = dir.path().join(TARBALL_DIR);
        std::fs::create_dir(&sub).unwrap();
        std::fs::write(sub.join("data_batch_2.bin"), cifar_records(&[3])).unwrap();
        let s = load_path(dir.path()).unwrap();
        assert_eq!(s.train.labels, vec![3]);
        assert!(s.test.is_none());
    }

    #[test]
    fn single_file_detected_by_content() {
        let dir = tempdir();
        let p = write(&dir, "whatever.dat", &cifar_records(&[2, 7]));
        let s = load_path(&p).unwrap();
        assert_eq!(s.train.labels, vec![2, 7]);
        assert_eq!(s.train.classes, 10);
        assert!(s.test.is_none());
    }

    #[test]
    fn truncated_batch() {
        let dir = tempdir();
        let mut b = cifar_records(&[1, 2]);
        b.truncate(RECORD + 100);
        let p = write(&dir, "data_batch_1.bin", &b);
        let e = load_path(&p).unwrap_err();
        match &e {
            DataError::Truncated { expected, found, .. } => assert_eq!((*expected, *found), (2 * 3073, 3173)),
            _ => panic!("{e}"),
        }
        assert!(e.to_string().contains("data_batch_1.bin"), "{e}");
        // Through the directory as well.
        let e = load_path(dir.path()).unwrap_err();
        assert!(matches!(e, DataError::Truncated { .. }), "{e}");
    }

    #[test]
    fn label_out_of_range() {
        let dir = tempdir();
        let p = write(&dir, "data_batch_1.bin", &cifar_records(&[1, 2, 10]));
        let e = load_path(&p).unwrap_err();
        assert!(matches!(e, DataError::LabelOutOfRange { index: 2, label: 10, .. }), "{e}");
        assert!(e.to_string().contains("CIFAR-10"), "{e}");
    }

    #[test]
    fn empty_batch() {
        let dir = tempdir();
        write(&dir, "data_batch_1.bin", b"");
        let e = load_path(dir.path()).unwrap_err();
        assert!(matches!(e, DataError::Empty { .. }), "{e}");
    }
}
