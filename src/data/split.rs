//! Validation split, normalisation and seeded shuffling of index order.

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{DataError, Dataset, Examples, Loaded, Normalize, Scaling, Splits};

/// ChaCha stream used for the validation split, so that a trainer seeding
/// its own `ChaCha8Rng` with the same seed gets an unrelated sequence.
const VAL_STREAM: u64 = u64::from_be_bytes(*b"valsplit");

/// Errors unless `value` is in `[0, 1)`.
pub(crate) fn check_val_split(value: f64) -> Result<(), DataError> {
    if (0.0..1.0).contains(&value) { Ok(()) } else { Err(DataError::InvalidValSplit { value }) }
}

/// How many of `n` training-file examples go to validation for fraction
/// `frac`: `round(n * frac)`, but at least 1 and at most `n - 1` when
/// `frac > 0` and `n >= 2`; 0 when `frac` is 0 (or not positive) or `n < 2`.
pub fn validation_count(n: usize, frac: f64) -> usize {
    if frac.is_nan() || frac <= 0.0 || n < 2 {
        return 0;
    }
    // `as` saturates, so any fraction gives a count in 0..=usize::MAX.
    let k = (n as f64 * frac).round() as usize;
    k.clamp(1, n - 1)
}

/// Shuffles `items` in place (Fisher-Yates). The result depends only on
/// the numbers `rng` produces, not on the `rand` version's algorithms.
pub fn shuffle<T, R: RngCore + ?Sized>(items: &mut [T], rng: &mut R) {
    for i in (1..items.len()).rev() {
        // Lemire's multiply-shift: a uniform index in 0..=i (bias < 2^-40).
        let j = ((u128::from(rng.next_u64()) * (i as u128 + 1)) >> 64) as usize;
        items.swap(i, j);
    }
}

/// `0..n` in a random order drawn from `rng`.
pub fn shuffled_indices<R: RngCore + ?Sized>(n: usize, rng: &mut R) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    shuffle(&mut v, rng);
    v
}

/// Moves a seeded random `frac` of the examples out of `train` into the
/// returned validation set. Both keep the file order of their examples.
pub(crate) fn split_validation(train: &mut Examples, frac: f64, seed: u64) -> Option<Examples> {
    let n = train.labels.len();
    let k = validation_count(n, frac);
    if k == 0 {
        return None;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(VAL_STREAM);
    let mut is_val = vec![false; n];
    for i in shuffled_indices(n, &mut rng).into_iter().take(k) {
        is_val[i] = true;
    }
    let f = train.feature_len();
    let mut val = Examples { features: Vec::with_capacity(k * f), labels: Vec::with_capacity(k), shape: train.shape };
    // Compact the training examples in place.
    let mut kept = 0;
    for (i, &v) in is_val.iter().enumerate() {
        let row = i * f..(i + 1) * f;
        if v {
            val.features.extend_from_slice(&train.features[row]);
            val.labels.push(train.labels[i]);
        } else {
            if kept != i {
                train.features.copy_within(row, kept * f);
                train.labels[kept] = train.labels[i];
            }
            kept += 1;
        }
    }
    train.features.truncate(kept * f);
    train.labels.truncate(kept);
    Some(val)
}

/// Global mean and (population) standard deviation of `values`; a standard
/// deviation of 0 (constant data) is reported as 1 so dividing is harmless.
pub(crate) fn mean_std(values: &[f32]) -> (f64, f64) {
    if values.is_empty() {
        return (0.0, 1.0);
    }
    let n = values.len() as f64;
    let mean = values.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
    let var = values.iter().map(|&x| (f64::from(x) - mean).powi(2)).sum::<f64>() / n;
    let std = var.sqrt();
    (mean, if std > 1e-12 { std } else { 1.0 })
}

/// Normalises `train` and `others`; `Standard` uses statistics of `train` only. Returns what it
/// applied.
pub(crate) fn normalize<'a>(
    mode: Normalize,
    train: &mut Examples,
    others: impl IntoIterator<Item = &'a mut Examples>,
) -> Scaling {
    let scaling = match mode {
        Normalize::None => Scaling::None,
        Normalize::Unit => Scaling::Unit,
        Normalize::Standard => {
            let (mean, std) = mean_std(&train.features);
            Scaling::Standard { mean, std }
        }
    };
    scaling.apply(&mut train.features);
    for set in others {
        scaling.apply(&mut set.features);
    }
    scaling
}

/// `1234567` as `"1,234,567"`.
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Splits off validation, normalises and builds the public [`Splits`].
pub(crate) fn finish(loaded: Loaded, opts: &super::LoadOptions) -> Splits {
    let Loaded { mut train, mut test, classes, class_names, description, default_normalize } = loaded;
    let mut val = split_validation(&mut train, opts.val_split, opts.seed);
    let mode = opts.normalize.unwrap_or(default_normalize);
    let scaling = normalize(mode, &mut train, val.iter_mut().chain(test.iter_mut()));

    let mut counts = vec![format!("{} train", thousands(train.labels.len()))];
    if let Some(v) = &val {
        counts.push(format!("{} val", thousands(v.labels.len())));
    }
    if let Some(t) = &test {
        counts.push(format!("{} test", thousands(t.labels.len())));
    }
    let source = format!("{description} ({})", counts.join(" / "));

    let dataset = |e: Examples| Dataset {
        features: e.features,
        labels: e.labels,
        shape: e.shape,
        classes,
        class_names: class_names.clone(),
    };
    train.features = crate::sys::on_huge_pages(train.features);
    Splits { train: dataset(train), val: val.map(dataset), test: test.map(dataset), source, scaling }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` examples of 2 features; example `i` is `[i, 10 i]` with label `i % 10`.
    fn examples(n: usize) -> Examples {
        Examples {
            features: (0..n).flat_map(|i| [i as f32, 10.0 * i as f32]).collect(),
            labels: (0..n).map(|i| (i % 10) as u8).collect(),
            shape: [1, 1, 2],
        }
    }

    #[test]
    fn counts() {
        assert_eq!(validation_count(100, 0.1), 10);
        assert_eq!(validation_count(100, 0.0), 0);
        assert_eq!(validation_count(5, 0.01), 1);
        assert_eq!(validation_count(5, 0.99), 4);
        assert_eq!(validation_count(1, 0.5), 0);
        assert_eq!(validation_count(0, 0.5), 0);
        assert_eq!(validation_count(10, f64::NAN), 0);
        assert_eq!(validation_count(6000, 0.1), 600);
    }

    #[test]
    fn shuffle_is_a_seeded_permutation() {
        let rng = |s| ChaCha8Rng::seed_from_u64(s);
        let a = shuffled_indices(50, &mut rng(3));
        let b = shuffled_indices(50, &mut rng(3));
        let c = shuffled_indices(50, &mut rng(4));
        assert_eq!(a, b);
        assert_ne!(a, c);
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
        assert!(shuffled_indices(0, &mut rng(1)).is_empty());
        assert_eq!(shuffled_indices(1, &mut rng(1)), vec![0]);
    }

    #[test]
    fn validation_split_is_deterministic_and_disjoint() {
        let mut t1 = examples(100);
        let v1 = split_validation(&mut t1, 0.2, 9).unwrap();
        let mut t2 = examples(100);
        let v2 = split_validation(&mut t2, 0.2, 9).unwrap();
        assert_eq!((&t1, &v1), (&t2, &v2));
        assert_eq!((t1.labels.len(), v1.labels.len()), (80, 20));
        // Every example lands in exactly one split, with its own label, in file order.
        let mut ids: Vec<usize> = Vec::new();
        for set in [&t1, &v1] {
            let firsts: Vec<usize> = set.features.chunks(2).map(|r| r[0] as usize).collect();
            assert!(firsts.windows(2).all(|w| w[0] < w[1]));
            for (k, r) in set.features.chunks(2).enumerate() {
                assert_eq!(r[1], 10.0 * r[0]);
                assert_eq!(set.labels[k] as usize, r[0] as usize % 10);
            }
            ids.extend(firsts);
        }
        ids.sort_unstable();
        assert_eq!(ids, (0..100).collect::<Vec<_>>());
        // Another seed picks another set.
        let mut t3 = examples(100);
        let v3 = split_validation(&mut t3, 0.2, 10).unwrap();
        assert_ne!(v1, v3);
        // No split for fraction 0.
        let mut t4 = examples(100);
        assert!(split_validation(&mut t4, 0.0, 9).is_none());
        assert_eq!(t4, examples(100));
    }

    #[test]
    fn unit_and_standard() {
        let mut train = examples(4); // features 0,0,1,10,2,20,3,30
        let mut test = examples(2);
        normalize(Normalize::Unit, &mut train, [&mut test]);
        assert_eq!(train.features[3], 10.0 / 255.0);
        assert_eq!(test.features[3], 10.0 / 255.0);

        let mut train = examples(4);
        let mut test = examples(2);
        let (mean, std) = mean_std(&train.features);
        assert_eq!(mean, 66.0 / 8.0);
        normalize(Normalize::Standard, &mut train, [&mut test]);
        let (m, s) = mean_std(&train.features);
        assert!(m.abs() < 1e-6 && (s - 1.0).abs() < 1e-6, "{m} {s}");
        // The test split uses the train statistics.
        assert_eq!(test.features[3], ((10.0 - mean) / std) as f32);

        let mut none = examples(3);
        normalize(Normalize::None, &mut none, []);
        assert_eq!(none, examples(3));
    }

    #[test]
    fn constant_features_standardise_to_zero() {
        let mut train = Examples { features: vec![5.0; 6], labels: vec![0; 3], shape: [1, 1, 2] };
        normalize(Normalize::Standard, &mut train, []);
        assert!(train.features.iter().all(|&x| x == 0.0));
    }

    #[test]
    fn finish_builds_splits() {
        let loaded = Loaded {
            train: examples(1234),
            test: Some(examples(10)),
            classes: 10,
            class_names: super::super::number_names(10),
            description: "test data".into(),
            default_normalize: Normalize::Unit,
        };
        let opts = super::super::LoadOptions { normalize: None, val_split: 0.1, seed: 5 };
        let s = finish(loaded, &opts);
        assert_eq!(s.source, "test data (1,111 train / 123 val / 10 test)");
        let val = s.val.unwrap();
        assert_eq!((val.len(), val.classes, val.feature_len()), (123, 10, 2));
        assert_eq!(s.test.unwrap().example(1), &[1.0 / 255.0, 10.0 / 255.0]);
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(60000), "60,000");
        assert_eq!(thousands(1234567), "1,234,567");
    }
}
