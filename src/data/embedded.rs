//! The Fashion-MNIST subset compiled into the binary: 6,000 training images
//! (the first 600 of each class in file order) and 1,000 test images (the
//! first 100 of each class), as gzipped IDX files. See
//! `data/embedded/README.md` for how they were made and
//! `data/embedded/LICENSE` for the licence (MIT, Copyright 2017 Zalando SE).

use std::path::Path;

use super::{DataError, Loaded, Normalize, idx};

const TRAIN_IMAGES: &[u8] = include_bytes!("../../data/embedded/train-images-idx3-ubyte.gz");
const TRAIN_LABELS: &[u8] = include_bytes!("../../data/embedded/train-labels-idx1-ubyte.gz");
const TEST_IMAGES: &[u8] = include_bytes!("../../data/embedded/t10k-images-idx3-ubyte.gz");
const TEST_LABELS: &[u8] = include_bytes!("../../data/embedded/t10k-labels-idx1-ubyte.gz");

/// Pseudo-directory used in error messages about the embedded files.
const DIR: &str = "<embedded>";

fn examples(images_name: &str, images: &[u8], labels_name: &str, labels: &[u8]) -> Result<super::Examples, DataError> {
    let images_path = Path::new(DIR).join(images_name);
    let labels_path = Path::new(DIR).join(labels_name);
    let images = super::decode(&images_path, images.to_vec())?;
    let labels = super::decode(&labels_path, labels.to_vec())?;
    idx::examples(&images_path, &images, &labels_path, &labels)
}

/// Decodes the embedded subset.
pub(crate) fn load() -> Result<Loaded, DataError> {
    let train = examples("train-images-idx3-ubyte.gz", TRAIN_IMAGES, "train-labels-idx1-ubyte.gz", TRAIN_LABELS)?;
    let test = examples("t10k-images-idx3-ubyte.gz", TEST_IMAGES, "t10k-labels-idx1-ubyte.gz", TEST_LABELS)?;
    Ok(Loaded {
        train,
        test: Some(test),
        classes: idx::CLASSES,
        class_names: super::fashion_names(),
        description: "embedded Fashion-MNIST subset".to_string(),
        default_normalize: Normalize::Unit,
    })
}

#[cfg(test)]
mod tests {
    use super::super::{DataSource, LoadOptions, load};

    #[test]
    fn embedded_subset_is_balanced() {
        let s = load(&DataSource::Embedded, &LoadOptions::default()).unwrap();
        assert_eq!(s.source, "embedded Fashion-MNIST subset (5,400 train / 600 val / 1,000 test)");
        assert_eq!(s.train.shape, [1, 28, 28]);
        assert_eq!(s.train.classes, 10);
        assert_eq!(s.train.class_names[9], "Ankle boot");
        let test = s.test.as_ref().unwrap();
        let val = s.val.as_ref().unwrap();
        let mut train_counts = [0usize; 10];
        for &l in s.train.labels.iter().chain(&val.labels) {
            train_counts[usize::from(l)] += 1;
        }
        assert_eq!(train_counts, [600; 10]);
        let mut test_counts = [0usize; 10];
        for &l in &test.labels {
            test_counts[usize::from(l)] += 1;
        }
        assert_eq!(test_counts, [100; 10]);
        // Unit normalisation by default.
        assert!(s.train.features.iter().all(|&x| (0.0..=1.0).contains(&x)));
        assert!(s.train.features.contains(&1.0));
    }
}
