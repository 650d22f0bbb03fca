//! CSV files: one example per line, the integer class label first, then the
//! features, separated by commas. The `csv` crate reads the records (quoted
//! fields, commas inside quotes, line numbers); this module decides what they
//! mean. A first row is a header only when it names columns: its first cell is
//! not a number and some cell is a name (text that is not a number). Any other
//! first row is data, checked like every other. Blank lines are ignored; cells
//! may be padded with spaces or wrapped in double quotes.

use std::path::Path;

use super::{DataError, Examples, Loaded, Normalize};

const TRAIN: &str = "train.csv";
const TEST: &str = "test.csv";

/// Parses (decoded) CSV content.
pub(crate) fn parse(path: &Path, bytes: &[u8]) -> Result<Examples, DataError> {
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    // Cells are trimmed by `clean`, one at a time, not by the reader (which rebuilds each record).
    let mut reader = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(bytes);
    let mut columns: Option<(usize, usize)> = None; // (count, line it came from)
    let mut features = Vec::new();
    let mut labels = Vec::new();
    let mut record = csv::ByteRecord::new();
    // The reader's own line numbers skip the blank lines it skips, so lines are counted here
    // from each record's byte offset: (offset, its line) of the last record.
    let mut at = (0usize, 1usize);
    loop {
        match reader.read_byte_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                let line = e.position().map_or(at.1, |p| p.line() as usize);
                return Err(DataError::CsvSyntax { path: path.to_path_buf(), line, detail: e.to_string() });
            }
        }
        let mut start = record.position().map_or(at.0, |p| p.byte() as usize).clamp(at.0, bytes.len());
        start += bytes[start..].iter().take_while(|&&b| b == b'\n' || b == b'\r').count();
        at = (start, at.1 + bytes[at.0..start].iter().filter(|&&b| b == b'\n').count());
        let line_no = at.1;
        let n = record.len();
        let first = clean(&record[0]);
        if n == 1 && first.as_ref().is_ok_and(|c| c.is_empty()) {
            continue; // a blank line
        }
        let (expected, first_line) = match columns {
            Some(c) => c,
            None => {
                if n < 2 {
                    return Err(DataError::CsvTooFewColumns { path: path.to_path_buf(), line: line_no, found: n });
                }
                columns = Some((n, line_no));
                if is_header(&record.iter().map(clean).collect::<Vec<_>>()) {
                    continue;
                }
                (n, line_no)
            }
        };
        if n != expected {
            return Err(DataError::CsvRaggedRow {
                path: path.to_path_buf(),
                line: line_no,
                expected,
                found: n,
                first_line,
            });
        }
        let not_numeric = |column: usize, cell: &Result<&str, String>| DataError::CsvNotNumeric {
            path: path.to_path_buf(),
            line: line_no,
            column,
            text: match cell {
                Ok(t) => t.to_string(),
                Err(t) => t.clone(),
            },
        };
        let label = first.as_ref().ok().and_then(|c| number(c)).ok_or_else(|| not_numeric(1, &first))?;
        if label.fract() != 0.0 || !(0.0..=255.0).contains(&label) {
            let text = first.clone().unwrap_or_default().to_string();
            return Err(DataError::CsvBadLabel { path: path.to_path_buf(), line: line_no, text });
        }
        labels.push(label as u8);
        for (j, raw) in record.iter().enumerate().skip(1) {
            let cell = clean(raw);
            let v = cell.as_ref().ok().and_then(|c| c.parse::<f32>().ok()).filter(|v| v.is_finite());
            features.push(v.ok_or_else(|| not_numeric(j + 1, &cell))?);
        }
    }
    match columns {
        Some((count, _)) if !labels.is_empty() => Ok(Examples { features, labels, shape: [1, 1, count - 1] }),
        _ => Err(DataError::Empty { path: path.to_path_buf() }),
    }
}

/// Whether a first row names columns: its first cell is not a number (NaN and infinity count
/// as numbers: on any line they are bad values, not names) and some cell is a name. A cell
/// that is empty or not UTF-8 names nothing.
fn is_header(cells: &[Result<&str, String>]) -> bool {
    let name = |c: &Result<&str, String>| c.as_ref().is_ok_and(|c| !c.is_empty() && c.parse::<f64>().is_err());
    name(&cells[0]) || (cells[0].as_ref().is_ok_and(|c| c.is_empty()) && cells.iter().any(name))
}

/// A cell's text, trimmed, with one pair of surrounding double quotes the reader left (a quote
/// after spaces) taken off; the lossy text of a cell that is not UTF-8 as the error.
fn clean(cell: &[u8]) -> Result<&str, String> {
    let cell = std::str::from_utf8(cell).map_err(|_| String::from_utf8_lossy(cell).into_owned())?.trim();
    Ok(cell.strip_prefix('"').and_then(|c| c.strip_suffix('"')).map(str::trim).unwrap_or(cell))
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

/// The name of a training file (for error messages).
pub(crate) fn train_names() -> Vec<String> {
    vec![TRAIN.to_string()]
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
    fn a_first_row_of_numbers_is_data_and_its_bad_cells_are_refused_as_on_any_line() {
        for (cell, text) in [("nan", "nan"), ("inf", "inf"), ("-Infinity", "-Infinity"), ("", ""), ("x", "x")] {
            for line in [1, 2] {
                let good = "1,2,3\n".repeat(line - 1);
                let e = parse_str(&format!("{good}1,{cell},3\n0,4,5\n")).unwrap_err();
                assert!(
                    matches!(&e, DataError::CsvNotNumeric { line: l, column: 2, text: t, .. } if *l == line && t == text),
                    "{cell:?} on line {line}: {e}"
                );
            }
        }
        // A cell that is not UTF-8, on line 1 as on line 2.
        for good in ["", "1,2,3\n"] {
            let mut bytes = good.as_bytes().to_vec();
            bytes.extend_from_slice(b"1,\xff\xfe,3\n");
            let e = parse(Path::new("t.csv"), &bytes).unwrap_err();
            assert!(matches!(e, DataError::CsvNotNumeric { column: 2, .. }), "{e}");
        }
        // A label that is a number makes the row data, whatever else it holds.
        let e = parse_str("7,x,y\n1,2,3\n").unwrap_err();
        assert!(matches!(e, DataError::CsvNotNumeric { line: 1, column: 2, .. }), "{e}");
        // Headers: names, with an empty first name (as pandas writes an index column).
        assert_eq!(parse_str(",a,b\n0,1,2\n").unwrap().labels, vec![0]);
        assert_eq!(parse_str("label,x,nan\n0,1,2\n").unwrap().labels, vec![0]);
        let e = parse_str(",1,2\n0,1,2\n").unwrap_err();
        assert!(matches!(e, DataError::CsvNotNumeric { line: 1, column: 1, .. }), "{e}");
    }

    #[test]
    fn quoted_fields_hold_commas_and_line_breaks() {
        let e = parse_str("label,\"width, mm\",\"height\nin mm\"\n1,2,3\n0,4,5\n").unwrap();
        assert_eq!(e.shape, [1, 1, 2]);
        assert_eq!(e.features, vec![2.0, 3.0, 4.0, 5.0]);
        // Line numbers count the lines a quoted field spans.
        let e = parse_str("label,\"a\nb\",c\n1,2,3\n0,4\n").unwrap_err();
        assert!(matches!(e, DataError::CsvRaggedRow { line: 4, expected: 3, found: 2, first_line: 1, .. }), "{e}");
        let e = parse_str("1,\"2,5\",3\n").unwrap_err();
        assert!(matches!(&e, DataError::CsvNotNumeric { line: 1, column: 2, text, .. } if text == "2,5"), "{e}");
    }

    proptest::proptest! {
        /// A row that is not a header is judged the same on line 1 as on line 2: both parses
        /// succeed, or both fail with the same kind of error.
        #[test]
        fn line_one_is_judged_as_line_two(cells in proptest::collection::vec(
            proptest::prop_oneof![
                "[0-9]{1,3}", "-?[0-9]\\.[0-9]", "(nan|NaN|inf|-inf|Infinity)", "", "[a-z]{1,4}", " [0-9] ",
                "\"[0-9]\"", "1e999",
            ],
            2..5,
        )) {
            let row = cells.join(",");
            let good = vec!["1"; cells.len()].join(",");
            let first = parse_str(&format!("{row}\n{good}\n"));
            let second = parse_str(&format!("{good}\n{row}\n"));
            let cleaned: Vec<Result<&str, String>> = cells.iter().map(|c| clean(c.as_bytes())).collect();
            if !is_header(&cleaned) {
                let kind = |r: &Result<Examples, DataError>| r.as_ref().map(drop).map_err(std::mem::discriminant);
                proptest::prop_assert_eq!(kind(&first), kind(&second), "{:?} / {:?}", first, second);
            } else {
                proptest::prop_assert!(first.is_ok_and(|e| e.labels == vec![1]), "a header is skipped");
            }
        }

        /// Whatever a header names (commas, quotes, line breaks), a file the `csv` crate writes
        /// reads back to its numbers.
        #[test]
        fn quoted_headers_round_trip(names in proptest::collection::vec("[a-z ,\"\n]{1,6}", 3),
                                     rows in proptest::collection::vec((0u8..10, -1e3f32..1e3, -1e3f32..1e3), 1..5)) {
            let mut w = csv::Writer::from_writer(Vec::new());
            w.write_record(std::iter::once("label").chain(names[1..].iter().map(String::as_str))).unwrap();
            for (l, a, b) in &rows {
                w.write_record([l.to_string(), a.to_string(), b.to_string()]).unwrap();
            }
            let e = parse(Path::new("t.csv"), &w.into_inner().unwrap()).unwrap();
            proptest::prop_assert_eq!(e.labels, rows.iter().map(|r| r.0).collect::<Vec<_>>());
            proptest::prop_assert_eq!(e.features, rows.iter().flat_map(|r| [r.1, r.2]).collect::<Vec<_>>());
        }
    }

    #[test]
    fn binary_named_csv_reports_a_cell() {
        let dir = tempdir();
        let p = write(&dir, "bad.csv", b"1,2\n3,\x00\x01\n");
        let e = load_path(&p).unwrap_err();
        assert!(matches!(e, DataError::CsvNotNumeric { line: 2, column: 2, .. }), "{e}");
    }
}
