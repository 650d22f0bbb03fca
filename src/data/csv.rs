//! CSV files: one example per line, the integer class label first, then the
//! features, separated by commas. A first row with any non-numeric cell is
//! a header and is skipped. Blank lines are ignored; cells may be padded
//! with spaces or wrapped in double quotes.

use std::path::Path;

use super::{DataError, Examples, Loaded, Normalize};

const TRAIN: &str = "train.csv";
const TEST: &str = "test.csv";

/// Parses (decoded) CSV content.
pub(crate) fn parse(path: &Path, bytes: &[u8]) -> Result<Examples, DataError> {
    let text = String::from_utf8_lossy(bytes);
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let mut columns: Option<(usize, usize)> = None; // (count, line it came from)
    let mut features = Vec::new();
    let mut labels = Vec::new();
    for (i, line) in text.split('\n').enumerate() {
        let line_no = i + 1;
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() {
            continue;
        }
        let cells: Vec<&str> = line.split(',').map(clean).collect();
        let (expected, first_line) = match columns {
            Some(c) => c,
            None => {
                if cells.len() < 2 {
                    return Err(DataError::CsvTooFewColumns {
                        path: path.to_path_buf(),
                        line: line_no,
                        found: cells.len(),
                    });
                }
                columns = Some((cells.len(), line_no));
                if cells.iter().any(|c| number(c).is_none()) {
                    continue; // header row
                }
                (cells.len(), line_no)
            }
        };
        if cells.len() != expected {
            return Err(DataError::CsvRaggedRow {
                path: path.to_path_buf(),
                line: line_no,
                expected,
                found: cells.len(),
                first_line,
            });
        }
        let not_numeric = |column: usize, text: &str| DataError::CsvNotNumeric {
            path: path.to_path_buf(),
            line: line_no,
            column,
            text: text.to_string(),
        };
        let label = number(cells[0]).ok_or_else(|| not_numeric(1, cells[0]))?;
        if label.fract() != 0.0 || !(0.0..=255.0).contains(&label) {
            return Err(DataError::CsvBadLabel { path: path.to_path_buf(), line: line_no, text: cells[0].to_string() });
        }
        labels.push(label as u8);
        for (j, cell) in cells.iter().enumerate().skip(1) {
            let v = cell.parse::<f32>().ok().filter(|v| v.is_finite()).ok_or_else(|| not_numeric(j + 1, cell))?;
            features.push(v);
        }
    }
    match columns {
        Some((count, _)) if !labels.is_empty() => Ok(Examples { features, labels, shape: [1, 1, count - 1] }),
        _ => Err(DataError::Empty { path: path.to_path_buf() }),
    }
}

/// Trims spaces and one pair of surrounding double quotes.
fn clean(cell: &str) -> &str {
    let cell = cell.trim();
    cell.strip_prefix('"').and_then(|c| c.strip_suffix('"')).map(str::trim).unwrap_or(cell)
}

/// A finite number, or `None`.
fn number(cell: &str) -> Option<f64> {
    cell.parse::<f64>().ok().filter(|v| v.is_finite())
}

fn loaded(train: Examples, test: Option<Examples>, description: String) -> Loaded {
    let max = train.labels.iter().chain(test.iter().flat_map(|t| t.labels.iter())).max().copied().unwrap_or(0);
    let classes = usize::from(max) + 1;
    Loaded {
        train,
        test,
        classes,
        class_names: super::number_names(classes),
        description,
        default_normalize: Normalize::None,
    }
}

/// A single CSV file (already decoded) as the training set; no test split.
pub(crate) fn load_file(path: &Path, bytes: &[u8]) -> Result<Loaded, DataError> {
    let train = parse(path, bytes)?;
    Ok(loaded(train, None, format!("CSV file {}", path.display())))
}

/// The names a directory is searched for (for error messages).
pub(crate) fn dir_names() -> Vec<String> {
    vec![TRAIN.to_string(), TEST.to_string()]
}

/// Loads `train.csv` (and `test.csv` if present); `Ok(None)` without `train.csv`.
pub(crate) fn load_dir(dir: &Path) -> Result<Option<Loaded>, DataError> {
    let train_path = dir.join(TRAIN);
    if !train_path.is_file() {
        return Ok(None);
    }
    let train = parse(&train_path, &super::read_file(&train_path)?)?;
    let test_path = dir.join(TEST);
    let test = if test_path.is_file() {
        let test = parse(&test_path, &super::read_file(&test_path)?)?;
        super::check_same_shape(&train_path, &train, &test_path, &test)?;
        Some(test)
    } else {
        None
    };
    Ok(Some(loaded(train, test, format!("CSV files in {}", dir.display()))))
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{DataSource, LoadOptions, Splits, load};
    use super::*;

    fn load_path(p: &Path) -> Result<Splits, DataError> {
        let opts = LoadOptions { normalize: None, val_split: 0.0, seed: 1 };
        load(&DataSource::Path(p.to_path_buf()), &opts)
    }

    fn parse_str(s: &str) -> Result<Examples, DataError> {
        parse(Path::new("t.csv"), s.as_bytes())
    }

    #[test]
    fn with_and_without_header() {
        let plain = parse_str("1,0.5,2\n0,-1,3e2\n").unwrap();
        assert_eq!(plain.labels, vec![1, 0]);
        assert_eq!(plain.features, vec![0.5, 2.0, -1.0, 300.0]);
        assert_eq!(plain.shape, [1, 1, 2]);
        let header = parse_str("\u{feff}label,a,b\r\n1,0.5,2\r\n\r\n0, -1 ,\"3e2\"\r\n").unwrap();
        assert_eq!(header, plain);
    }

    #[test]
    fn file_defaults_and_classes() {
        let dir = tempdir();
        let p = write(&dir, "data.csv", b"y,x\n4,255\n2,0\n");
        let s = load(&DataSource::Path(p), &LoadOptions { val_split: 0.0, ..LoadOptions::default() }).unwrap();
        // Default normalisation for CSV is None.
        assert_eq!(s.train.features, vec![255.0, 0.0]);
        assert_eq!(s.train.classes, 5);
        assert_eq!(s.train.class_names, vec!["0", "1", "2", "3", "4"]);
        assert!(s.test.is_none());
    }

    #[test]
    fn directory_with_train_and_test() {
        let dir = tempdir();
        write(&dir, "train.csv", b"1,1,1\n0,2,2\n");
        write(&dir, "test.csv", b"a,b,c\n3,9,9\n");
        let s = load_path(dir.path()).unwrap();
        assert_eq!(s.train.classes, 4);
        assert_eq!(s.test.as_ref().map(|t| t.labels.clone()), Some(vec![3]));
        assert_eq!(s.test.map(|t| t.classes), Some(4));
    }

    #[test]
    fn directory_shape_mismatch() {
        let dir = tempdir();
        write(&dir, "train.csv", b"1,1,1\n");
        write(&dir, "test.csv", b"1,1\n");
        let e = load_path(dir.path()).unwrap_err();
        assert!(matches!(e, DataError::ShapeMismatch { .. }), "{e}");
    }

    #[test]
    fn non_numeric_cell() {
        let e = parse_str("l,a,b\n1,2,3\n0,4,x5\n").unwrap_err();
        assert!(matches!(&e, DataError::CsvNotNumeric { line: 3, column: 3, text, .. } if text == "x5"), "{e}");
        let msg = e.to_string();
        assert!(msg.contains("t.csv: line 3, column 3: \"x5\""), "{msg}");
        // Non-finite values are rejected too, and a non-numeric label.
        let e = parse_str("1,2\n0,NaN\n").unwrap_err();
        assert!(matches!(e, DataError::CsvNotNumeric { line: 2, column: 2, .. }), "{e}");
        let e = parse_str("1,2\ncat,3\n").unwrap_err();
        assert!(matches!(e, DataError::CsvNotNumeric { line: 2, column: 1, .. }), "{e}");
    }

    #[test]
    fn bad_label() {
        for bad in ["1.5", "-1", "256"] {
            let e = parse_str(&format!("1,2\n{bad},3\n")).unwrap_err();
            assert!(matches!(e, DataError::CsvBadLabel { line: 2, .. }), "{bad}: {e}");
        }
    }

    #[test]
    fn ragged_rows() {
        let e = parse_str("1,2,3\n\n0,4\n").unwrap_err();
        assert!(matches!(e, DataError::CsvRaggedRow { line: 3, expected: 3, found: 2, first_line: 1, .. }), "{e}");
        assert!(e.to_string().contains("line 3 has 2 columns, expected 3"), "{e}");
    }

    #[test]
    fn too_few_columns() {
        let e = parse_str("1\n2\n").unwrap_err();
        assert!(matches!(e, DataError::CsvTooFewColumns { line: 1, found: 1, .. }), "{e}");
    }

    #[test]
    fn empty() {
        for s in ["", "\n\n", "label,a,b\n"] {
            let e = parse_str(s).unwrap_err();
            assert!(matches!(e, DataError::Empty { .. }), "{s:?}: {e}");
        }
        let dir = tempdir();
        let p = write(&dir, "h.csv", b"label,pixel\n");
        let e = load_path(&p).unwrap_err();
        assert!(matches!(e, DataError::Empty { .. }), "{e}");
        assert!(e.to_string().contains("h.csv"), "{e}");
    }

    #[test]
    fn binary_named_csv_reports_a_cell() {
        let dir = tempdir();
        let p = write(&dir, "bad.csv", b"1,2\n3,\x00\x01\n");
        let e = load_path(&p).unwrap_err();
        assert!(matches!(e, DataError::CsvNotNumeric { line: 2, column: 2, .. }), "{e}");
    }
}
