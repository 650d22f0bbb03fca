//! IDX files of the MNIST family: `*-images-idx3-ubyte` (magic 0x00000803:
//! unsigned bytes, 3 dimensions n, rows, cols) and `*-labels-idx1-ubyte`
//! (magic 0x00000801: unsigned bytes, 1 dimension n), raw or gzipped.

use std::path::{Path, PathBuf};

use super::{DataError, Examples, Loaded, Normalize};

pub(crate) const IMAGES_MAGIC: u32 = 0x0000_0803;
pub(crate) const LABELS_MAGIC: u32 = 0x0000_0801;
const IMAGES_EXAMPLE: &str = "train-images-idx3-ubyte.gz";
const LABELS_EXAMPLE: &str = "train-labels-idx1-ubyte.gz";
/// The MNIST family has 10 classes.
pub(crate) const CLASSES: usize = 10;

/// Checks an IDX header and the file length it implies, before anything is
/// allocated; returns the dimensions and the data after the header.
fn parse<'a, const D: usize>(
    path: &Path,
    bytes: &'a [u8],
    magic: u32,
    what: &'static str,
    example: &'static str,
) -> Result<([usize; D], &'a [u8]), DataError> {
    let dims = sizes::<D>(path, bytes, bytes.len() as u128, magic, what, example)?;
    Ok((dims, bytes.get(4 + 4 * D..).unwrap_or_default()))
}

/// Checks the size of a raw file on disk against its IDX header (`head`: its first 16 bytes or
/// fewer), before the file is read: a file whose header says 3 images is not read for its
/// gigabytes. Content that is not an IDX header passes.
pub(crate) fn check_size_on_disk(path: &Path, head: &[u8], size: u64) -> Result<(), DataError> {
    let word = head.get(..4).map(|w| u32::from_be_bytes([w[0], w[1], w[2], w[3]]));
    match word {
        Some(IMAGES_MAGIC) => sizes::<3>(path, head, size.into(), IMAGES_MAGIC, "images", IMAGES_EXAMPLE).map(drop),
        Some(LABELS_MAGIC) => sizes::<1>(path, head, size.into(), LABELS_MAGIC, "labels", LABELS_EXAMPLE).map(drop),
        _ => Ok(()),
    }
}

/// The dimensions an IDX header (at the start of `bytes`) gives, checked against the
/// length of the whole file, `found` bytes.
fn sizes<const D: usize>(
    path: &Path,
    bytes: &[u8],
    found: u128,
    magic: u32,
    what: &'static str,
    example: &'static str,
) -> Result<[usize; D], DataError> {
    let header_len = 4 + 4 * D;
    let truncated = |what, expected: u128| DataError::Truncated { path: path.to_path_buf(), what, expected, found };
    let word = |i: usize| bytes.get(4 * i..4 * i + 4).map(|w| u32::from_be_bytes([w[0], w[1], w[2], w[3]]));
    let first = word(0).ok_or_else(|| truncated("IDX header", header_len as u128))?;
    if first != magic {
        return Err(DataError::BadMagic { path: path.to_path_buf(), what, example, found: first, expected: magic });
    }
    let mut dims = [0u32; D];
    for (i, dim) in dims.iter_mut().enumerate() {
        *dim = word(i + 1).ok_or_else(|| truncated("IDX header", header_len as u128))?;
    }
    // At most three u32 factors: the product cannot overflow a u128.
    let body: u128 = dims.iter().map(|&d| u128::from(d)).product();
    let expected = header_len as u128 + body;
    let file = if what == "images" { "IDX images file" } else { "IDX labels file" };
    if found < expected {
        return Err(truncated(file, expected));
    }
    if found > expected {
        return Err(DataError::TrailingBytes { path: path.to_path_buf(), what: file, expected, found });
    }
    // u32 always fits a usize on the (32- and 64-bit) targets Rust std supports.
    Ok(dims.map(|d| d as usize))
}

/// Parses a decoded images file and its labels file into examples.
pub(crate) fn examples(
    images_path: &Path,
    images: &[u8],
    labels_path: &Path,
    labels: &[u8],
) -> Result<Examples, DataError> {
    let ([n, rows, cols], pixels) = parse::<3>(images_path, images, IMAGES_MAGIC, "images", IMAGES_EXAMPLE)?;
    let ([nl], labels) = parse::<1>(labels_path, labels, LABELS_MAGIC, "labels", LABELS_EXAMPLE)?;
    if n != nl {
        return Err(DataError::CountMismatch {
            images_path: images_path.to_path_buf(),
            labels_path: labels_path.to_path_buf(),
            images: n,
            labels: nl,
        });
    }
    if n == 0 {
        return Err(DataError::Empty { path: images_path.to_path_buf() });
    }
    if rows == 0 || cols == 0 {
        return Err(DataError::ZeroSizedImages { path: images_path.to_path_buf(), rows, cols });
    }
    check_labels(labels_path, labels, "MNIST-family IDX")?;
    Ok(Examples {
        features: pixels.iter().map(|&p| f32::from(p)).collect(),
        labels: labels.to_vec(),
        shape: [1, rows, cols],
    })
}

/// Errors on the first label that is not below [`CLASSES`].
pub(crate) fn check_labels(path: &Path, labels: &[u8], format: &'static str) -> Result<(), DataError> {
    match labels.iter().position(|&l| usize::from(l) >= CLASSES) {
        None => Ok(()),
        Some(index) => Err(DataError::LabelOutOfRange {
            path: path.to_path_buf(),
            format,
            index,
            label: labels[index],
            classes: CLASSES,
        }),
    }
}

/// Reads and parses an images file and a labels file.
fn load_pair(images_path: &Path, labels_path: &Path) -> Result<Examples, DataError> {
    let images = super::read_file(images_path)?;
    let labels = super::read_file(labels_path)?;
    examples(images_path, &images, labels_path, &labels)
}

/// File names tried for `prefix` ("train" or "t10k") and `kind` ("images" or "labels").
fn names(prefix: &str, kind: &str) -> Vec<String> {
    let idx = if kind == "images" { "idx3" } else { "idx1" };
    let mut v = Vec::new();
    for sep in ['-', '.'] {
        let base = format!("{prefix}-{kind}{sep}{idx}-ubyte");
        v.push(format!("{base}.gz"));
        v.push(base);
    }
    v
}

fn find(dir: &Path, prefix: &str, kind: &str) -> Option<PathBuf> {
    names(prefix, kind).into_iter().map(|n| dir.join(n)).find(|p| p.is_file())
}

/// The names of a training images file (for error messages).
pub(crate) fn train_image_names() -> Vec<String> {
    names("train", "images")
}

/// The names a directory is searched for (for error messages).
pub(crate) fn dir_names() -> Vec<String> {
    ["train", "t10k"].iter().flat_map(|p| [names(p, "images"), names(p, "labels")]).flatten().collect()
}

/// Loads `train-*` (and, if present, `t10k-*`) IDX files from `dir`;
/// `Ok(None)` if there is no training images file.
pub(crate) fn load_dir(dir: &Path, class_names: Vec<String>) -> Result<Option<Loaded>, DataError> {
    let Some(train_images) = find(dir, "train", "images") else {
        return Ok(None);
    };
    let labels_for = |images: &Path, prefix: &str| {
        find(dir, prefix, "labels").ok_or_else(|| DataError::MissingCompanion {
            path: images.to_path_buf(),
            what: "labels",
            looked_for: names(prefix, "labels"),
        })
    };
    let train_labels = labels_for(&train_images, "train")?;
    let train = load_pair(&train_images, &train_labels)?;
    let test = match find(dir, "t10k", "images") {
        Some(test_images) => {
            let test_labels = labels_for(&test_images, "t10k")?;
            let test = load_pair(&test_images, &test_labels)?;
            super::check_same_shape(&train_images, &train, &test_images, &test)?;
            Some(test)
        }
        None => None,
    };
    Ok(Some(Loaded {
        train,
        test,
        classes: CLASSES,
        class_names,
        description: format!("IDX files in {}", dir.display()),
        default_normalize: Normalize::Unit,
    }))
}

/// Paths where the companion of an images (or labels) file may be: the
/// name with images/idx3 swapped for labels/idx1 (or back), gzipped or not.
fn companions(path: &Path, is_images: bool) -> Vec<PathBuf> {
    let base = super::base_name(path);
    let swapped = if is_images {
        base.replacen("images", "labels", 1).replacen("idx3", "idx1", 1)
    } else {
        base.replacen("labels", "images", 1).replacen("idx1", "idx3", 1)
    };
    if swapped == base {
        return Vec::new();
    }
    let dir = path.parent().unwrap_or(Path::new(""));
    vec![dir.join(format!("{swapped}.gz")), dir.join(swapped)]
}

/// Loads a single IDX file (already decoded) together with its companion
/// found beside it by name; there is no test split.
pub(crate) fn load_single(path: &Path, bytes: &[u8], is_images: bool) -> Result<Loaded, DataError> {
    // The file's own problems come before a missing companion.
    if is_images {
        parse::<3>(path, bytes, IMAGES_MAGIC, "images", IMAGES_EXAMPLE)?;
    } else {
        parse::<1>(path, bytes, LABELS_MAGIC, "labels", LABELS_EXAMPLE)?;
    }
    let candidates = companions(path, is_images);
    let Some(other) = candidates.iter().find(|p| p.is_file()) else {
        return Err(DataError::MissingCompanion {
            path: path.to_path_buf(),
            what: if is_images { "labels" } else { "images" },
            looked_for: candidates.iter().map(|p| p.display().to_string()).collect(),
        });
    };
    let other_bytes = super::read_file(other)?;
    let (images_path, train) = if is_images {
        (path, examples(path, bytes, other, &other_bytes)?)
    } else {
        (other.as_path(), examples(other, &other_bytes, path, bytes)?)
    };
    Ok(Loaded {
        train,
        test: None,
        classes: CLASSES,
        class_names: super::idx_class_names(images_path),
        description: format!("IDX file {}", images_path.display()),
        default_normalize: Normalize::Unit,
    })
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{DataSource, LoadOptions, load};
    use super::*;

    fn opts() -> LoadOptions {
        LoadOptions { normalize: Some(Normalize::None), val_split: 0.0, seed: 1 }
    }

    fn load_path(p: &Path) -> Result<super::super::Splits, DataError> {
        load(&DataSource::Path(p.to_path_buf()), &opts())
    }

    /// Writes a train (3 images 2x3) + test (2 images) set; `gzip` picks .gz or raw.
    fn write_set(dir: &TempDir, gzip: bool, sep: char) {
        let name = |p: &str, k: &str| {
            let idx = if k == "images" { "idx3" } else { "idx1" };
            format!("{p}-{k}{sep}{idx}-ubyte{}", if gzip { ".gz" } else { "" })
        };
        let enc = |b: Vec<u8>| if gzip { gz(&b) } else { b };
        write(dir, &name("train", "images"), &enc(idx_images(3, 2, 3, |i| i as u8)));
        write(dir, &name("train", "labels"), &enc(idx_labels(&[3, 1, 9])));
        write(dir, &name("t10k", "images"), &enc(idx_images(2, 2, 3, |i| 100 + i as u8)));
        write(dir, &name("t10k", "labels"), &enc(idx_labels(&[0, 2])));
    }

    #[test]
    fn directory_raw_gz_and_dotted() {
        for (gzip, sep) in [(false, '-'), (true, '-'), (false, '.'), (true, '.')] {
            let dir = tempdir();
            write_set(&dir, gzip, sep);
            let s = load_path(dir.path()).unwrap();
            assert_eq!(s.train.shape, [1, 2, 3]);
            assert_eq!(s.train.labels, vec![3, 1, 9]);
            assert_eq!(s.train.example(1), &[6.0, 7.0, 8.0, 9.0, 10.0, 11.0]);
            assert_eq!(s.train.classes, 10);
            assert_eq!(s.train.class_names[9], "9");
            let test = s.test.unwrap();
            assert_eq!(test.labels, vec![0, 2]);
            assert_eq!(test.example(0)[0], 100.0);
            assert!(s.val.is_none());
            assert!(s.source.contains("IDX files in"), "{}", s.source);
        }
    }

    #[test]
    fn default_normalisation_is_unit() {
        let dir = tempdir();
        write_set(&dir, false, '-');
        let s = load(&DataSource::Path(dir.path().to_path_buf()), &LoadOptions::default()).unwrap();
        assert_eq!(s.test.unwrap().example(0)[0], 100.0 / 255.0);
    }

    #[test]
    fn fashion_names_from_path() {
        let dir = tempdir();
        let sub = dir.path().join("my-fashion-mnist");
        std::fs::create_dir(&sub).unwrap();
        std::fs::write(sub.join("train-images-idx3-ubyte"), idx_images(1, 1, 1, |_| 0)).unwrap();
        std::fs::write(sub.join("train-labels-idx1-ubyte"), idx_labels(&[0])).unwrap();
        let s = load_path(&sub).unwrap();
        assert_eq!(s.train.class_names[0], "T-shirt/top");
        assert!(s.test.is_none());
    }

    #[test]
    fn single_images_or_labels_file_finds_its_companion() {
        let dir = tempdir();
        write_set(&dir, true, '-');
        let s = load_path(&dir.path().join("t10k-images-idx3-ubyte.gz")).unwrap();
        assert_eq!(s.train.labels, vec![0, 2]);
        assert!(s.test.is_none());
        let s = load_path(&dir.path().join("train-labels-idx1-ubyte.gz")).unwrap();
        assert_eq!(s.train.labels, vec![3, 1, 9]);
        assert_eq!(s.train.example(0)[5], 5.0);
    }

    #[test]
    fn missing_companion() {
        let dir = tempdir();
        let p = write(&dir, "train-images-idx3-ubyte", &idx_images(1, 1, 1, |_| 0));
        let e = load_path(&p).unwrap_err();
        assert!(matches!(e, DataError::MissingCompanion { .. }), "{e}");
        assert!(e.to_string().contains("train-labels-idx1-ubyte"), "{e}");
        // A name from which no companion can be derived.
        let p = write(&dir, "pixels", &idx_images(1, 1, 1, |_| 0));
        let e = load_path(&p).unwrap_err();
        assert!(matches!(e, DataError::MissingCompanion { .. }), "{e}");
        // Directory with train images but no labels.
        let e = load_path(dir.path()).unwrap_err();
        assert!(matches!(e, DataError::MissingCompanion { .. }), "{e}");
    }

    #[test]
    fn truncated_body() {
        let dir = tempdir();
        let mut img = idx_images(3, 2, 2, |i| i as u8);
        img.truncate(img.len() - 1);
        let p = write(&dir, "train-images-idx3-ubyte", &img);
        write(&dir, "train-labels-idx1-ubyte", &idx_labels(&[0, 1, 2]));
        let e = load_path(&p).unwrap_err();
        match &e {
            DataError::Truncated { expected, found, .. } => assert_eq!((*expected, *found), (28, 27)),
            _ => panic!("{e}"),
        }
        let msg = e.to_string();
        assert!(msg.contains("expected 28 bytes, found 27"), "{msg}");
        assert!(msg.contains("train-images-idx3-ubyte"), "{msg}");
    }

    #[test]
    fn own_errors_before_missing_companion() {
        let dir = tempdir();
        let p = write(&dir, "train-images-idx3-ubyte", &[0, 0, 8, 3, 0, 0, 0, 9, 0, 0, 0, 2, 0, 0, 0, 2, 1]);
        let e = load_path(&p).unwrap_err();
        assert!(matches!(e, DataError::Truncated { expected: 52, found: 17, .. }), "{e}");
        let p = write(&dir, "train-labels-idx1-ubyte", &[0, 0, 8, 1, 0, 0, 0, 9, 1]);
        let e = load_path(&p).unwrap_err();
        assert!(matches!(e, DataError::Truncated { expected: 17, found: 9, .. }), "{e}");
    }

    #[test]
    fn truncated_header() {
        let dir = tempdir();
        write(&dir, "train-labels-idx1-ubyte", &idx_labels(&[0]));
        let p = write(&dir, "train-images-idx3-ubyte", &[0, 0, 8, 3, 0, 0]);
        let e = load_path(&p).unwrap_err();
        assert!(matches!(e, DataError::Truncated { expected: 16, found: 6, .. }), "{e}");
    }

    #[test]
    fn huge_header_claim_is_truncation_not_allocation() {
        let dir = tempdir();
        let mut img = idx_images(0, 28, 28, |_| 0);
        img[4..8].copy_from_slice(&1_000_000_000u32.to_be_bytes());
        img.resize(100, 0);
        let p = write(&dir, "train-images-idx3-ubyte", &img);
        write(&dir, "train-labels-idx1-ubyte", &idx_labels(&[0]));
        let e = load_path(&p).unwrap_err();
        match e {
            DataError::Truncated { expected, found, .. } => assert_eq!((expected, found), (16 + 784_000_000_000, 100)),
            _ => panic!("{e}"),
        }
        // Maximal dimensions do not overflow.
        let mut img = vec![0, 0, 8, 3];
        img.extend([0xff; 12]);
        let p = write(&dir, "train-images-idx3-ubyte", &img);
        assert!(matches!(load_path(&p), Err(DataError::Truncated { .. })));
    }

    #[test]
    fn trailing_bytes() {
        let dir = tempdir();
        let mut img = idx_images(1, 2, 2, |_| 0);
        img.push(0);
        let p = write(&dir, "train-images-idx3-ubyte", &img);
        write(&dir, "train-labels-idx1-ubyte", &idx_labels(&[0]));
        let e = load_path(&p).unwrap_err();
        assert!(matches!(e, DataError::TrailingBytes { expected: 20, found: 21, .. }), "{e}");
    }

    #[test]
    fn wrong_magic() {
        let dir = tempdir();
        let mut img = idx_images(1, 1, 1, |_| 0);
        img[3] = 0x02;
        let p = write(&dir, "train-images-idx3-ubyte", &img);
        write(&dir, "train-labels-idx1-ubyte", &idx_labels(&[0]));
        let e = load_path(&p).unwrap_err();
        assert!(matches!(e, DataError::BadMagic { found: 0x802, expected: 0x803, .. }), "{e}");
        let msg = e.to_string();
        assert!(msg.contains("0x00000802") && msg.contains("0x00000803"), "{msg}");
        // A labels file with an images magic, found through the directory.
        let dir = tempdir();
        write(&dir, "train-images-idx3-ubyte", &idx_images(1, 1, 1, |_| 0));
        write(&dir, "train-labels-idx1-ubyte", &idx_images(1, 1, 1, |_| 0));
        let e = load_path(dir.path()).unwrap_err();
        assert!(matches!(e, DataError::BadMagic { found: 0x803, expected: 0x801, .. }), "{e}");
        assert!(e.to_string().contains("train-labels-idx1-ubyte"), "{e}");
    }

    #[test]
    fn count_mismatch() {
        let dir = tempdir();
        let p = write(&dir, "train-images-idx3-ubyte", &idx_images(2, 1, 1, |_| 0));
        write(&dir, "train-labels-idx1-ubyte", &idx_labels(&[0, 1, 2]));
        let e = load_path(&p).unwrap_err();
        assert!(matches!(e, DataError::CountMismatch { images: 2, labels: 3, .. }), "{e}");
        let msg = e.to_string();
        assert!(msg.contains("3 labels") && msg.contains("2 images"), "{msg}");
    }

    #[test]
    fn label_out_of_range() {
        let dir = tempdir();
        let p = write(&dir, "train-images-idx3-ubyte", &idx_images(3, 1, 1, |_| 0));
        write(&dir, "train-labels-idx1-ubyte", &idx_labels(&[0, 10, 2]));
        let e = load_path(&p).unwrap_err();
        assert!(matches!(e, DataError::LabelOutOfRange { index: 1, label: 10, classes: 10, .. }), "{e}");
        assert!(e.to_string().contains("0..=9"), "{e}");
    }

    #[test]
    fn empty_and_zero_sized() {
        let dir = tempdir();
        let p = write(&dir, "train-images-idx3-ubyte", &idx_images(0, 28, 28, |_| 0));
        write(&dir, "train-labels-idx1-ubyte", &idx_labels(&[]));
        let e = load_path(&p).unwrap_err();
        assert!(matches!(e, DataError::Empty { .. }), "{e}");
        let p = write(&dir, "train-images-idx3-ubyte", &idx_images(2, 0, 5, |_| 0));
        write(&dir, "train-labels-idx1-ubyte", &idx_labels(&[0, 0]));
        let e = load_path(&p).unwrap_err();
        assert!(matches!(e, DataError::ZeroSizedImages { rows: 0, cols: 5, .. }), "{e}");
    }

    #[test]
    fn test_shape_mismatch() {
        let dir = tempdir();
        write(&dir, "train-images-idx3-ubyte", &idx_images(1, 2, 2, |_| 0));
        write(&dir, "train-labels-idx1-ubyte", &idx_labels(&[0]));
        write(&dir, "t10k-images-idx3-ubyte", &idx_images(1, 3, 3, |_| 0));
        write(&dir, "t10k-labels-idx1-ubyte", &idx_labels(&[0]));
        let e = load_path(dir.path()).unwrap_err();
        assert!(matches!(e, DataError::ShapeMismatch { .. }), "{e}");
        assert!(e.to_string().contains("t10k-images-idx3-ubyte"), "{e}");
    }
}
