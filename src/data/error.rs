//! The one error type of the data loader.
//!
//! Every message is a single line that names the file (or directory), says
//! what is wrong with it and says how to fix it.

use std::path::PathBuf;

/// Why a data set could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// The file or directory could not be read at all.
    #[error("{}: cannot read: {source}; check that the path exists and is readable", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A path that is not a data file (a device such as /dev/zero), or a file too big to load
    /// into the memory available.
    #[error("{}: {source}", .path.display())]
    Refused {
        path: PathBuf,
        #[source]
        source: crate::files::InputError,
    },

    /// The file is shorter than its header (or record size) says it must be.
    #[error(
        "{}: truncated {what}: expected {expected} bytes, found {found}; the file is incomplete, download or extract it again",
        .path.display()
    )]
    Truncated { path: PathBuf, what: &'static str, expected: u128, found: u128 },

    /// The file is longer than its header says it should be.
    #[error(
        "{}: {what} is {found} bytes long but its header describes {expected}; the file is corrupt or files were concatenated, download it again",
        .path.display()
    )]
    TrailingBytes { path: PathBuf, what: &'static str, expected: u128, found: u128 },

    /// An IDX file starts with the wrong magic number.
    #[error(
        "{}: wrong magic number 0x{found:08x}, expected 0x{expected:08x} for an IDX {what} file; pass an IDX {what} file such as {example}",
        .path.display()
    )]
    BadMagic { path: PathBuf, what: &'static str, example: &'static str, found: u32, expected: u32 },

    /// An IDX header describes images with no pixels.
    #[error("{}: IDX header describes images of {rows}x{cols} pixels; the header is corrupt, download the file again", .path.display())]
    ZeroSizedImages { path: PathBuf, rows: usize, cols: usize },

    /// The labels file and the images file hold different numbers of examples.
    #[error(
        "{}: holds {labels} labels but {} holds {images} images; use the labels file that belongs to these images",
        .labels_path.display(), .images_path.display()
    )]
    CountMismatch { images_path: PathBuf, labels_path: PathBuf, images: usize, labels: usize },

    /// A label byte is not a valid class.
    #[error(
        "{}: label {label} of example {index} (counting from 0) is outside the class range 0..={}; this is not a {format} file with {classes} classes, use one or fix the label",
        .path.display(), .classes - 1
    )]
    LabelOutOfRange { path: PathBuf, format: &'static str, index: usize, label: u8, classes: usize },

    /// A CSV cell could not be read as a finite number.
    #[error(
        "{}: line {line}, column {column}: {text:?} is not a finite number; every cell except those of a header row must be numeric (label first, then features)",
        .path.display()
    )]
    CsvNotNumeric { path: PathBuf, line: usize, column: usize, text: String },

    /// A CSV label is numeric but not a class number.
    #[error(
        "{}: line {line}, column 1: label {text:?} is not a whole class number in 0..=255; put the integer class label in the first column",
        .path.display()
    )]
    CsvBadLabel { path: PathBuf, line: usize, text: String },

    /// CSV rows of different lengths.
    #[error(
        "{}: line {line} has {found} columns, expected {expected} like line {first_line}; make every row the same length",
        .path.display()
    )]
    CsvRaggedRow { path: PathBuf, line: usize, expected: usize, found: usize, first_line: usize },

    /// CSV text the reader cannot split into fields.
    #[error("{}: line {line}: {detail}; check the quoting of that line", .path.display())]
    CsvSyntax { path: PathBuf, line: usize, detail: String },

    /// A CSV row without any feature column.
    #[error(
        "{}: line {line} has only {found} column; each row needs a label followed by at least one feature, separated by commas",
        .path.display()
    )]
    CsvTooFewColumns { path: PathBuf, line: usize, found: usize },

    /// The file holds no examples at all.
    #[error("{}: contains no examples; pass a file with at least one example", .path.display())]
    Empty { path: PathBuf },

    /// A file named `.gz` that is not gzip data.
    #[error(
        "{}: named .gz but is not gzip data (it does not start with 1f 8b); rename it without .gz or compress it with gzip",
        .path.display()
    )]
    NotGzip { path: PathBuf },

    /// Gzip data that cannot be decompressed.
    #[error("{}: corrupt gzip data ({detail}); download the file again or recompress it with gzip", .path.display())]
    CorruptGzip { path: PathBuf, detail: String },

    /// Gzip data that expands past the loader's limit.
    #[error(
        "{}: decompresses to more than {limit} bytes, more than any supported data set; pass the right file or a smaller one",
        .path.display()
    )]
    TooLarge { path: PathBuf, limit: u64 },

    /// The content matches none of the supported formats.
    #[error(
        "{}: unrecognised data format (not IDX, CIFAR-10 binary or CSV text); pass MNIST-style IDX files, CIFAR-10 .bin batches or a CSV file with the label first",
        .path.display()
    )]
    UnknownFormat { path: PathBuf },

    /// A directory without any of the file names the loader knows.
    #[error(
        "{}: no data set found (looked for {}); point at a directory holding one of these, or at a single data file",
        .dir.display(), .looked_for.join(", ")
    )]
    NoDataFiles { dir: PathBuf, looked_for: Vec<String> },

    /// A directory with files of a data set but not its training file.
    #[error(
        "{}: holds {} but no training file to go with it (looked for {}); add the training file beside it, or point at a single data file",
        .dir.display(), .found.join(", "), .looked_for.join(", ")
    )]
    NoTrainingFile { dir: PathBuf, found: Vec<String>, looked_for: Vec<String> },

    /// An images file without its labels file (or the other way round).
    #[error(
        "{}: cannot find its {what} file (looked for {}); put the matching {what} file next to it",
        .path.display(),
        if .looked_for.is_empty() { "a name with images/labels or idx3/idx1 in it".to_string() } else { .looked_for.join(", ") }
    )]
    MissingCompanion { path: PathBuf, what: &'static str, looked_for: Vec<String> },

    /// Train and test files whose examples differ in shape.
    #[error(
        "{}: examples have shape {test_shape:?} but {} has {train_shape:?}; train and test files must come from the same data set",
        .test_path.display(), .train_path.display()
    )]
    ShapeMismatch { train_path: PathBuf, test_path: PathBuf, train_shape: [usize; 3], test_shape: [usize; 3] },

    /// Fashion-MNIST was requested but the Debian package is not installed.
    #[error(
        "{}: Fashion-MNIST is not installed ({detail}); run `apt-get install dataset-fashion-mnist`, or give no data source to use the embedded subset",
        .dir.display()
    )]
    FashionMnistMissing { dir: PathBuf, detail: String },

    /// A validation fraction outside `[0, 1)`.
    #[error("validation split {value} is outside [0, 1); use a fraction such as 0.1, or 0 for no validation set")]
    InvalidValSplit { value: f64 },
}
