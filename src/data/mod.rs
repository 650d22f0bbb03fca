//! Data loading: the MNIST family (IDX), CIFAR-10 binary batches, CSV files
//! and the embedded Fashion-MNIST subset.
//!
//! [`load`] turns a [`DataSource`] into [`Splits`]: it finds the files,
//! detects their format from their content (magic numbers, gzip magic,
//! text), checks every size and label before allocating, splits a seeded
//! validation set off the training examples and normalises the features.

pub mod augment;
mod cifar;
mod csv;
mod embedded;
mod error;
mod idx;
mod split;
#[cfg(test)]
mod testutil;

pub use error::DataError;
pub use split::{shuffle, shuffled_indices, validation_count};

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Where the Debian package `dataset-fashion-mnist` installs Fashion-MNIST.
pub const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// Fashion-MNIST class names, by label.
pub const FASHION_MNIST_CLASSES: [&str; 10] =
    ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];

/// CIFAR-10 class names, by label.
pub const CIFAR10_CLASSES: [&str; 10] =
    ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];

/// Largest decompressed size accepted from one gzip file (4 GiB).
pub const MAX_DECOMPRESSED: u64 = 1 << 32;

/// One split of a data set; examples are stored row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// `len() * feature_len()` values, already normalised.
    pub features: Vec<f32>,
    /// One label per example, each `< classes`.
    pub labels: Vec<u8>,
    /// `[channels, height, width]`; CSV data is `[1, 1, columns]`.
    pub shape: [usize; 3],
    /// Number of classes: 10 for the MNIST family and CIFAR-10, max label + 1 for CSV.
    pub classes: usize,
    /// One name per class.
    pub class_names: Vec<String>,
}

impl Dataset {
    /// Number of examples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no examples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Number of features of one example (`shape` multiplied out).
    pub fn feature_len(&self) -> usize {
        self.shape.iter().product()
    }

    /// The features of example `i`. Panics if `i >= len()`.
    pub fn example(&self, i: usize) -> &[f32] {
        let f = self.feature_len();
        &self.features[i * f..(i + 1) * f]
    }

    /// Copies examples `idx` (in that order) into `out` and their labels into `labels`.
    ///
    /// A shuffled batch reads rows scattered over the whole set: each row's first lines miss
    /// every cache, and the hardware prefetcher only starts within a row. So the row two ahead
    /// is asked for before each copy, and its misses overlap the copying.
    pub fn gather(&self, idx: &[usize], out: &mut [f32], labels: &mut [u8]) {
        self.gather_with(idx, out, labels, |_, example, row| row.copy_from_slice(example));
    }

    /// [`Dataset::gather`] with `place(r, example, row)` writing row `r` of `out` from its
    /// example's features (the augmentation's crops and flips).
    pub fn gather_with(
        &self,
        idx: &[usize],
        out: &mut [f32],
        labels: &mut [u8],
        mut place: impl FnMut(usize, &[f32], &mut [f32]),
    ) {
        let f = self.feature_len();
        self.prefetch(&idx[..idx.len().min(PREFETCH_AHEAD)]);
        for (r, &i) in idx.iter().enumerate() {
            if let Some(&next) = idx.get(r + PREFETCH_AHEAD) {
                self.prefetch(&[next]);
            }
            place(r, self.example(i), &mut out[r * f..(r + 1) * f]);
            labels[r] = self.labels[i];
        }
    }

    /// Asks the CPU to bring examples `idx` into cache (a hint: nothing waits for it). The
    /// training loop calls it with the next batch's first rows before a step.
    pub fn prefetch(&self, idx: &[usize]) {
        for &i in idx {
            #[cfg(target_arch = "x86_64")]
            for line in self.example(i).chunks(16) {
                // SAFETY: a prefetch is a hint and cannot fault; the address lies inside the
                // features.
                unsafe { std::arch::x86_64::_mm_prefetch(line.as_ptr().cast::<i8>(), std::arch::x86_64::_MM_HINT_T0) };
            }
            #[cfg(not(target_arch = "x86_64"))]
            let _ = i;
        }
    }
}

/// Rows [`Dataset::gather`] asks for ahead of the one it copies.
pub const PREFETCH_AHEAD: usize = 2;

/// A loaded data set: training examples plus optional validation and test splits.
#[derive(Debug, Clone, PartialEq)]
pub struct Splits {
    pub train: Dataset,
    /// `None` when `val_split` is 0 or leaves no example (`validation_count`).
    pub val: Option<Dataset>,
    /// `None` when the source has no test files.
    pub test: Option<Dataset>,
    /// Human description, e.g. "embedded Fashion-MNIST subset (5,400 train / 600 val / 1,000 test)".
    pub source: String,
    /// What was applied to every split's features: a model trained on them needs the same.
    pub scaling: Scaling,
}

/// A [`Normalize`] mode with the statistics it used: what turns raw features into the ones a
/// model was trained on, kept in the model file so that `eval` sees its inputs the same way.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scaling {
    None,
    Unit,
    /// `(x - mean) / std`, both from the training split.
    Standard {
        mean: f64,
        std: f64,
    },
}

impl Scaling {
    pub fn mode(&self) -> Normalize {
        match self {
            Scaling::None => Normalize::None,
            Scaling::Unit => Normalize::Unit,
            Scaling::Standard { .. } => Normalize::Standard,
        }
    }

    /// Scales raw features in place, exactly as loading with this mode does.
    pub fn apply(&self, features: &mut [f32]) {
        match *self {
            Scaling::None => {}
            Scaling::Unit => features.iter_mut().for_each(|x| *x /= 255.0),
            Scaling::Standard { mean, std } => {
                features.iter_mut().for_each(|x| *x = ((f64::from(*x) - mean) / std) as f32)
            }
        }
    }
}

impl fmt::Display for Scaling {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scaling::Standard { mean, std } => write!(f, "standard (mean {mean:.4}, standard deviation {std:.4})"),
            other => write!(f, "{}", other.mode()),
        }
    }
}

/// How features are scaled after loading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Normalize {
    /// Raw values (pixel bytes become 0.0..=255.0).
    None,
    /// Divide by 255.
    Unit,
    /// Subtract the global mean and divide by the global standard deviation,
    /// both computed over all features of the training split (after the
    /// validation examples are taken out) and applied to every split.
    Standard,
}

impl FromStr for Normalize {
    type Err = String;

    /// Accepts `none`, `unit` and `standard` (any case).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "none" => Ok(Normalize::None),
            "unit" => Ok(Normalize::Unit),
            "standard" => Ok(Normalize::Standard),
            _ => Err(format!("unknown normalisation {s:?}; use none, unit or standard")),
        }
    }
}

impl fmt::Display for Normalize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Normalize::None => "none",
            Normalize::Unit => "unit",
            Normalize::Standard => "standard",
        })
    }
}

/// Options for [`load`].
#[derive(Debug, Clone, PartialEq)]
pub struct LoadOptions {
    /// `None` picks the format's default: `Unit` for IDX and CIFAR, `None` for CSV.
    pub normalize: Option<Normalize>,
    /// Fraction of the training file's examples held out for validation, in `[0, 1)`.
    pub val_split: f64,
    /// Seed of the validation split.
    pub seed: u64,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions { normalize: None, val_split: 0.1, seed: 0 }
    }
}

/// What to load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataSource {
    /// The Fashion-MNIST subset compiled into the binary.
    Embedded,
    /// The full Fashion-MNIST from Debian's `dataset-fashion-mnist` ([`FASHION_MNIST_DIR`]).
    FashionMnist,
    /// A data file or a directory of data files.
    Path(PathBuf),
}

impl DataSource {
    /// `None` is [`DataSource::Embedded`], `"fashion-mnist"` is
    /// [`DataSource::FashionMnist`], anything else is a path (write
    /// `./fashion-mnist` for a directory of that name).
    pub fn parse(arg: Option<&str>) -> DataSource {
        match arg {
            None => DataSource::Embedded,
            Some("fashion-mnist") => DataSource::FashionMnist,
            Some(path) => DataSource::Path(PathBuf::from(path)),
        }
    }
}

impl fmt::Display for DataSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataSource::Embedded => f.write_str("embedded Fashion-MNIST subset"),
            DataSource::FashionMnist => write!(f, "Fashion-MNIST ({FASHION_MNIST_DIR})"),
            DataSource::Path(p) => write!(f, "{}", p.display()),
        }
    }
}

/// Loads a data set.
pub fn load(source: &DataSource, opts: &LoadOptions) -> Result<Splits, DataError> {
    split::check_val_split(opts.val_split)?;
    let loaded = match source {
        DataSource::Embedded => embedded::load()?,
        DataSource::FashionMnist => load_fashion_mnist(Path::new(FASHION_MNIST_DIR))?,
        DataSource::Path(path) => load_path(path)?,
    };
    Ok(split::finish(loaded, opts))
}

/// Loads one data file's content held in memory, as [`load`] loads the file `name` (whose name
/// decides the format only where the content does not). An IDX file needs its companion, looked
/// for beside `name` on disk: see [`load_idx_bytes`] to give both.
pub fn load_bytes(name: &Path, bytes: Vec<u8>, opts: &LoadOptions) -> Result<Splits, DataError> {
    split::check_val_split(opts.val_split)?;
    let bytes = decode(name, bytes)?;
    let loaded = match detect(name, &bytes)? {
        Format::IdxImages => idx::load_single(name, &bytes, true)?,
        Format::IdxLabels => idx::load_single(name, &bytes, false)?,
        Format::Cifar => cifar::load_file(name, &bytes)?,
        Format::Csv => csv::load_file(name, &bytes)?,
    };
    Ok(split::finish(loaded, opts))
}

/// Loads an IDX images file and its labels file held in memory (raw or gzipped).
pub fn load_idx_bytes(images: Vec<u8>, labels: Vec<u8>, opts: &LoadOptions) -> Result<Splits, DataError> {
    split::check_val_split(opts.val_split)?;
    let (ip, lp) = (Path::new("images-idx3-ubyte"), Path::new("labels-idx1-ubyte"));
    let (images, labels) = (decode(ip, images)?, decode(lp, labels)?);
    let train = idx::examples(ip, &images, lp, &labels)?;
    let loaded = Loaded {
        train,
        test: None,
        classes: idx::CLASSES,
        class_names: number_names(idx::CLASSES),
        description: "IDX data".into(),
        default_normalize: Normalize::Unit,
    };
    Ok(split::finish(loaded, opts))
}

/// The examples of one file (or group of files), before splitting and normalising.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Examples {
    pub features: Vec<f32>,
    pub labels: Vec<u8>,
    pub shape: [usize; 3],
}

impl Examples {
    pub fn feature_len(&self) -> usize {
        self.shape.iter().product()
    }
}

/// What a format loader hands to [`split::finish`].
#[derive(Debug)]
pub(crate) struct Loaded {
    pub train: Examples,
    pub test: Option<Examples>,
    pub classes: usize,
    pub class_names: Vec<String>,
    /// e.g. "IDX files in /data/mnist".
    pub description: String,
    pub default_normalize: Normalize,
}

fn load_fashion_mnist(dir: &Path) -> Result<Loaded, DataError> {
    let missing = |detail: String| DataError::FashionMnistMissing { dir: dir.to_path_buf(), detail };
    if !dir.is_dir() {
        return Err(missing("no such directory".into()));
    }
    match idx::load_dir(dir, fashion_names())? {
        Some(mut loaded) => {
            if loaded.test.is_none() {
                return Err(missing("the t10k-* test files are missing".into()));
            }
            loaded.description = format!("Fashion-MNIST from {}", dir.display());
            Ok(loaded)
        }
        None => Err(missing("train-images-idx3-ubyte.gz is missing from the directory".into())),
    }
}

fn load_path(path: &Path) -> Result<Loaded, DataError> {
    let meta = std::fs::metadata(path).map_err(|source| DataError::Io { path: path.to_path_buf(), source })?;
    if meta.is_dir() { load_dir(path) } else { load_file(path) }
}

fn load_dir(dir: &Path) -> Result<Loaded, DataError> {
    if let Some(loaded) = idx::load_dir(dir, idx_class_names(dir))? {
        return Ok(loaded);
    }
    if let Some(loaded) = cifar::load_dir(dir)? {
        return Ok(loaded);
    }
    if let Some(loaded) = csv::load_dir(dir)? {
        return Ok(loaded);
    }
    // The CIFAR-10 tarball unpacks into this subdirectory.
    if let Some(loaded) = cifar::load_dir(&dir.join(cifar::TARBALL_DIR))? {
        return Ok(loaded);
    }
    let mut looked_for = idx::dir_names();
    looked_for.extend(cifar::dir_names());
    looked_for.extend(csv::dir_names());
    // Files of a data set without its training file (labels without images, a test file
    // alone): said as such, and the list is of the training files that are not there.
    let found: Vec<String> = looked_for.iter().filter(|n| dir.join(n).is_file()).cloned().collect();
    if !found.is_empty() {
        let mut training = idx::train_image_names();
        training.extend(cifar::train_names());
        training.extend(csv::train_names());
        return Err(DataError::NoTrainingFile { dir: dir.to_path_buf(), found, looked_for: training });
    }
    Err(DataError::NoDataFiles { dir: dir.to_path_buf(), looked_for })
}

/// A single file's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    IdxImages,
    IdxLabels,
    Cifar,
    Csv,
}

fn load_file(path: &Path) -> Result<Loaded, DataError> {
    let bytes = read_file(path)?;
    match detect(path, &bytes)? {
        Format::IdxImages => idx::load_single(path, &bytes, true),
        Format::IdxLabels => idx::load_single(path, &bytes, false),
        Format::Cifar => cifar::load_file(path, &bytes),
        Format::Csv => csv::load_file(path, &bytes),
    }
}

/// Detects the format of decompressed file content; the file name is only
/// a fallback for content that matches nothing (so that, e.g., a damaged
/// `.idx3-ubyte` file gets an IDX error rather than "unknown format").
fn detect(path: &Path, bytes: &[u8]) -> Result<Format, DataError> {
    if let Some(magic) = bytes.get(..4) {
        match u32::from_be_bytes([magic[0], magic[1], magic[2], magic[3]]) {
            idx::IMAGES_MAGIC => return Ok(Format::IdxImages),
            idx::LABELS_MAGIC => return Ok(Format::IdxLabels),
            _ => {}
        }
    }
    if cifar::looks_like(bytes) {
        return Ok(Format::Cifar);
    }
    if bytes.is_empty() {
        return Err(DataError::Empty { path: path.to_path_buf() });
    }
    if looks_like_text(bytes) {
        return Ok(Format::Csv);
    }
    let name = base_name(path).to_ascii_lowercase();
    if name.contains("idx3") || name.contains("images") {
        Ok(Format::IdxImages)
    } else if name.contains("idx1") || name.contains("labels") {
        Ok(Format::IdxLabels)
    } else if name.ends_with(".bin") {
        Ok(Format::Cifar)
    } else if name.ends_with(".csv") {
        Ok(Format::Csv)
    } else {
        Err(DataError::UnknownFormat { path: path.to_path_buf() })
    }
}

/// Whether the start of the content looks like text: no control bytes
/// other than tab, newline and carriage return.
fn looks_like_text(bytes: &[u8]) -> bool {
    let sample = &bytes[..bytes.len().min(64 * 1024)];
    sample.iter().all(|&b| b >= 0x20 || b == b'\t' || b == b'\n' || b == b'\r')
}

/// The file name without a trailing `.gz`.
fn base_name(path: &Path) -> String {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    match name.strip_suffix(".gz") {
        Some(base) => base.to_string(),
        None => name,
    }
}

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Reads a file, decompressing it if it is gzip (recognised by its magic).
///
/// Nothing is read from a device (`/dev/zero`), and nothing over what the memory available can
/// load: the size of a file is checked before reading it, a pipe is read up to the limit, and a
/// gzip file is decompressed up to it.
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>, DataError> {
    check_header_on_disk(path)?;
    let limit = crate::files::memory_limit(MEMORY_PER_BYTE);
    let bytes = crate::files::read_input(path, limit, LIMIT_WHAT, "point --data at the file").map_err(|e| match e {
        crate::files::InputError::Io(source) => DataError::Io { path: path.to_path_buf(), source },
        source => DataError::Refused { path: path.to_path_buf(), source },
    })?;
    if bytes.starts_with(&GZIP_MAGIC) {
        let limit = limit.min(MAX_DECOMPRESSED);
        return gunzip(path, &bytes, limit).map_err(|e| match e {
            DataError::TooLarge { .. } if limit < MAX_DECOMPRESSED => DataError::Refused {
                path: path.to_path_buf(),
                source: crate::files::InputError::TooBig { size: limit + 1, limit, what: LIMIT_WHAT },
            },
            e => e,
        });
    }
    decode(path, bytes)
}

/// Checks a raw (not gzipped) file's size against the size its format's header gives, from
/// the header alone; what cannot be opened is left to [`read_file`]'s own message.
fn check_header_on_disk(path: &Path) -> Result<(), DataError> {
    let Ok(meta) = std::fs::metadata(path) else { return Ok(()) };
    if !meta.is_file() {
        return Ok(());
    }
    let mut head = Vec::with_capacity(16);
    if let Ok(f) = std::fs::File::open(path) {
        let _ = f.take(16).read_to_end(&mut head);
    }
    idx::check_size_on_disk(path, &head, meta.len())
}

/// Bytes of memory one byte of data takes at most while it loads: the byte itself and the f32
/// feature it becomes.
const MEMORY_PER_BYTE: u64 = 5;

const LIMIT_WHAT: &str = "the memory available can load, at 5 bytes per byte of data";

/// Decompresses `bytes` if they start with the gzip magic; `path` is used
/// for messages and to reject `.gz` names whose content is not gzip.
pub(crate) fn decode(path: &Path, bytes: Vec<u8>) -> Result<Vec<u8>, DataError> {
    if bytes.starts_with(&GZIP_MAGIC) {
        gunzip(path, &bytes, MAX_DECOMPRESSED)
    } else if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("gz")) {
        Err(DataError::NotGzip { path: path.to_path_buf() })
    } else {
        Ok(bytes)
    }
}

/// Decompresses (possibly multi-member) gzip data, refusing output over `limit` bytes.
fn gunzip(path: &Path, bytes: &[u8], limit: u64) -> Result<Vec<u8>, DataError> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(bytes)
        .take(limit.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| DataError::CorruptGzip { path: path.to_path_buf(), detail: e.to_string() })?;
    if out.len() as u64 > limit {
        return Err(DataError::TooLarge { path: path.to_path_buf(), limit });
    }
    Ok(out)
}

/// Errors unless train and test examples have the same shape.
pub(crate) fn check_same_shape(
    train_path: &Path,
    train: &Examples,
    test_path: &Path,
    test: &Examples,
) -> Result<(), DataError> {
    if train.shape == test.shape {
        Ok(())
    } else {
        Err(DataError::ShapeMismatch {
            train_path: train_path.to_path_buf(),
            test_path: test_path.to_path_buf(),
            train_shape: train.shape,
            test_shape: test.shape,
        })
    }
}

pub(crate) fn fashion_names() -> Vec<String> {
    FASHION_MNIST_CLASSES.iter().map(|s| s.to_string()).collect()
}

/// `"0"`, `"1"`, ... for `classes` classes.
pub(crate) fn number_names(classes: usize) -> Vec<String> {
    (0..classes).map(|c| c.to_string()).collect()
}

/// Fashion-MNIST names when the path mentions "fashion", digits otherwise.
pub(crate) fn idx_class_names(path: &Path) -> Vec<String> {
    if path.to_string_lossy().to_ascii_lowercase().contains("fashion") {
        fashion_names()
    } else {
        number_names(idx::CLASSES)
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;

    fn opts(val_split: f64) -> LoadOptions {
        LoadOptions { normalize: None, val_split, seed: 7 }
    }

    #[test]
    fn parse_source() {
        assert_eq!(DataSource::parse(None), DataSource::Embedded);
        assert_eq!(DataSource::parse(Some("fashion-mnist")), DataSource::FashionMnist);
        assert_eq!(DataSource::parse(Some("./fashion-mnist")), DataSource::Path(PathBuf::from("./fashion-mnist")));
    }

    #[test]
    fn normalize_from_str() {
        assert_eq!("Unit".parse::<Normalize>(), Ok(Normalize::Unit));
        assert_eq!("none".parse::<Normalize>(), Ok(Normalize::None));
        assert_eq!("standard".parse::<Normalize>(), Ok(Normalize::Standard));
        assert!("z".parse::<Normalize>().is_err());
        assert_eq!(Normalize::Standard.to_string(), "standard");
    }

    #[test]
    fn dataset_accessors() {
        let d = Dataset {
            features: (0..12).map(|v| v as f32).collect(),
            labels: vec![0, 1, 2],
            shape: [1, 2, 2],
            classes: 3,
            class_names: number_names(3),
        };
        assert_eq!(d.len(), 3);
        assert!(!d.is_empty());
        assert_eq!(d.feature_len(), 4);
        assert_eq!(d.example(1), &[4.0, 5.0, 6.0, 7.0]);
    }

    #[test]
    fn gzip_detected_by_content_not_name() {
        let dir = tempdir();
        // A gzipped CSV with a plain name.
        let p = write(&dir, "data.txt", &gz(b"1,2,3\n0,4,5\n"));
        let s = load(&DataSource::Path(p), &opts(0.0)).unwrap();
        assert_eq!(s.train.labels, vec![1, 0]);
        assert_eq!(s.train.features, vec![2.0, 3.0, 4.0, 5.0]);
    }

    #[test]
    fn gz_name_without_gzip_content() {
        let dir = tempdir();
        let p = write(&dir, "train.csv.gz", b"1,2,3\n");
        let e = load(&DataSource::Path(p), &opts(0.0)).unwrap_err();
        assert!(matches!(e, DataError::NotGzip { .. }), "{e}");
        let msg = e.to_string();
        assert!(msg.contains("train.csv.gz") && msg.contains("rename"), "{msg}");
    }

    #[test]
    fn corrupt_gzip() {
        let dir = tempdir();
        let mut bytes = gz(&idx_images(3, 2, 2, |i| i as u8));
        bytes.truncate(bytes.len() - 6);
        let p = write(&dir, "train-images-idx3-ubyte.gz", &bytes);
        let e = load(&DataSource::Path(p), &opts(0.0)).unwrap_err();
        assert!(matches!(e, DataError::CorruptGzip { .. }), "{e}");
        assert!(e.to_string().contains("train-images-idx3-ubyte.gz"));

        // Garbage after the gzip magic.
        let p = write(&dir, "x.gz", &[0x1f, 0x8b, 0, 1, 2, 3, 4, 5, 6, 7, 8]);
        let e = load(&DataSource::Path(p), &opts(0.0)).unwrap_err();
        assert!(matches!(e, DataError::CorruptGzip { .. }), "{e}");
    }

    #[test]
    fn gzip_size_limit() {
        let e = gunzip(Path::new("big.gz"), &gz(&[0u8; 1000]), 999).unwrap_err();
        assert!(matches!(e, DataError::TooLarge { limit: 999, .. }), "{e}");
        assert_eq!(gunzip(Path::new("ok.gz"), &gz(&[0u8; 1000]), 1000).unwrap().len(), 1000);
    }

    #[test]
    fn missing_path() {
        let dir = tempdir();
        let p = dir.path().join("nope");
        let e = load(&DataSource::Path(p), &opts(0.0)).unwrap_err();
        assert!(matches!(e, DataError::Io { .. }), "{e}");
        assert!(e.to_string().contains("nope"));
    }

    #[test]
    fn empty_file() {
        let dir = tempdir();
        let p = write(&dir, "empty.csv", b"");
        let e = load(&DataSource::Path(p), &opts(0.0)).unwrap_err();
        assert!(matches!(e, DataError::Empty { .. }), "{e}");
        assert!(e.to_string().contains("empty.csv"));
    }

    #[test]
    fn unknown_format() {
        let dir = tempdir();
        let p = write(&dir, "blob.dat", &[0u8, 1, 2, 3, 200, 0, 0]);
        let e = load(&DataSource::Path(p), &opts(0.0)).unwrap_err();
        assert!(matches!(e, DataError::UnknownFormat { .. }), "{e}");
        assert!(e.to_string().contains("blob.dat"));
    }

    #[test]
    fn directory_without_data() {
        let dir = tempdir();
        write(&dir, "notes.txt", b"hello");
        let e = load(&DataSource::Path(dir.path().to_path_buf()), &opts(0.0)).unwrap_err();
        assert!(matches!(e, DataError::NoDataFiles { .. }), "{e}");
        let msg = e.to_string();
        for name in ["train-images-idx3-ubyte.gz", "data_batch_1.bin", "train.csv"] {
            assert!(msg.contains(name), "{msg}");
        }
    }

    #[test]
    fn a_directory_without_its_training_file_says_what_it_holds_and_what_is_missing() {
        for file in ["train-labels-idx1-ubyte", "t10k-images-idx3-ubyte.gz", "test_batch.bin", "test.csv"] {
            let dir = tempdir();
            write(&dir, file, b"1,2\n");
            let e = load(&DataSource::Path(dir.path().to_path_buf()), &opts(0.0)).unwrap_err();
            let msg = e.to_string();
            assert!(matches!(e, DataError::NoTrainingFile { .. }), "{msg}");
            let (holds, looked) = msg.split_once("(looked for").unwrap();
            assert!(holds.contains(&format!("holds {file} but no training file")), "{msg}");
            assert!(!looked.contains(file), "it looked for the file it found: {msg}");
            for name in ["train-images-idx3-ubyte.gz", "data_batch_1.bin", "train.csv"] {
                assert!(looked.contains(name), "{msg}");
            }
        }
    }

    #[test]
    fn an_idx_file_longer_than_its_header_says_is_refused_unread() {
        let dir = tempdir();
        let p = write(&dir, "x-images-idx3-ubyte", &idx_images(3, 2, 2, |i| i as u8));
        write(&dir, "x-labels-idx1-ubyte", &idx_labels(&[0, 1, 2]));
        assert!(load(&DataSource::Path(p.clone()), &opts(0.0)).is_ok());
        // 1 TiB on disk (sparse), a header for 3 images of 2×2: refused from the header.
        std::fs::OpenOptions::new().write(true).open(&p).unwrap().set_len(1 << 40).unwrap();
        let start = std::time::Instant::now();
        let e = load(&DataSource::Path(p), &opts(0.0)).unwrap_err();
        assert!(matches!(e, DataError::TrailingBytes { expected: 28, found, .. } if found == 1 << 40), "{e}");
        assert!(start.elapsed() < std::time::Duration::from_secs(1));
    }

    #[test]
    fn fashion_mnist_missing() {
        let dir = tempdir();
        let e = load_fashion_mnist(&dir.path().join("fashion-mnist")).unwrap_err();
        assert!(matches!(e, DataError::FashionMnistMissing { .. }), "{e}");
        assert!(e.to_string().contains("apt-get install dataset-fashion-mnist"));
        // Directory present but empty.
        let e = load_fashion_mnist(dir.path()).unwrap_err();
        assert!(matches!(e, DataError::FashionMnistMissing { .. }), "{e}");
    }

    #[test]
    fn fashion_mnist_installed() {
        // Only runs where the Debian package is installed (skips otherwise).
        if !Path::new(FASHION_MNIST_DIR).join("t10k-labels-idx1-ubyte.gz").is_file() {
            return;
        }
        let loaded = load_fashion_mnist(Path::new(FASHION_MNIST_DIR)).unwrap();
        assert_eq!(loaded.train.labels.len(), 60_000);
        assert_eq!(loaded.test.as_ref().map(|t| t.labels.len()), Some(10_000));
        assert_eq!(loaded.class_names[0], "T-shirt/top");
    }

    #[test]
    fn invalid_val_split() {
        for v in [-0.1, 1.0, f64::NAN] {
            let e = load(&DataSource::Embedded, &opts(v)).unwrap_err();
            assert!(matches!(e, DataError::InvalidValSplit { .. }), "{e}");
        }
    }

    #[test]
    fn no_panic_on_any_prefix() {
        // Every truncation of every supported format must give Ok or Err, never panic.
        let dir = tempdir();
        let idx = idx_images(3, 2, 2, |i| i as u8);
        let cifar = cifar_records(&[1, 2]);
        let files: Vec<(&str, Vec<u8>)> = vec![
            ("a-images-idx3-ubyte", idx.clone()),
            ("b-images-idx3-ubyte.gz", gz(&idx)),
            ("c.bin", cifar.clone()),
            ("d.csv", b"label,x\n1,2\n3,4\n".to_vec()),
            ("e.dat", gz(&cifar)),
        ];
        write(&dir, "a-labels-idx1-ubyte", &idx_labels(&[0, 1, 2]));
        write(&dir, "b-labels-idx1-ubyte.gz", &gz(&idx_labels(&[0, 1, 2])));
        for (name, bytes) in files {
            let n = bytes.len();
            // Every length near either end or a record boundary, a sample in between.
            let near = |l: usize| l < 40 || n - l < 40 || l % 3073 < 3 || l % 3073 > 3070;
            for len in (0..=n).filter(|&l| near(l) || l % 37 == 0) {
                let p = write(&dir, name, &bytes[..len]);
                let _ = load(&DataSource::Path(p), &opts(0.5));
            }
        }
    }

    #[test]
    fn no_panic_on_noise() {
        use rand::{RngCore, SeedableRng};
        let dir = tempdir();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let base = idx_images(2, 3, 3, |i| i as u8);
        for round in 0..300 {
            let mut bytes = if round % 2 == 0 {
                base.clone()
            } else {
                let mut b = vec![0u8; (rng.next_u32() % 64) as usize];
                rng.fill_bytes(&mut b);
                b
            };
            // Flip a few bytes.
            for _ in 0..3 {
                if !bytes.is_empty() {
                    let i = rng.next_u32() as usize % bytes.len();
                    bytes[i] = rng.next_u32() as u8;
                }
            }
            let p = write(&dir, "x-images-idx3-ubyte", &bytes);
            write(&dir, "x-labels-idx1-ubyte", &idx_labels(&[1, 2]));
            let _ = load(&DataSource::Path(p), &opts(0.3));
        }
    }
}
