//! Reading back a `--metrics` file: one JSON object per epoch, then perhaps a test line.

use crate::error::{Error, Result};
use crate::train::EpochReport;
use serde::Deserialize;
use std::path::Path;

/// One epoch, as `train --metrics` writes it. Unknown fields are ignored; `predicted_seconds`
/// is read when a run wrote it.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct EpochRow {
    pub epoch: usize,
    pub train_loss: f64,
    pub train_acc: f64,
    #[serde(default)]
    pub val_loss: Option<f64>,
    #[serde(default)]
    pub val_acc: Option<f64>,
    pub seconds: f64,
    pub gflops: f64,
    /// The time the cost model predicted for the epoch, where one was recorded.
    #[serde(default)]
    pub predicted_seconds: Option<f64>,
}

impl From<&EpochReport> for EpochRow {
    fn from(r: &EpochReport) -> EpochRow {
        EpochRow {
            epoch: r.epoch,
            train_loss: r.train_loss,
            train_acc: r.train_acc,
            val_loss: r.val_loss,
            val_acc: r.val_acc,
            seconds: r.seconds,
            gflops: r.gflops,
            predicted_seconds: r.predicted_seconds,
        }
    }
}

/// The final line of a metrics file: the test split's score.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq)]
pub struct TestRow {
    pub test_loss: f64,
    pub test_acc: f64,
    pub test_examples: usize,
}

/// A whole metrics file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Metrics {
    pub epochs: Vec<EpochRow>,
    pub test: Option<TestRow>,
}

impl Metrics {
    pub fn read(path: &Path) -> Result<Metrics> {
        let hint = "pass the file `flopnet train --metrics FILE` wrote";
        let text = crate::files::read_text(path, crate::files::TEXT_LIMIT, "a metrics file may hold", hint)?;
        Metrics::parse(&text).map_err(|problem| Error::Usage(format!("metrics file {}: {problem}", path.display())))
    }

    /// Parses metrics lines; the error names the offending line.
    pub fn parse(text: &str) -> std::result::Result<Metrics, String> {
        let mut m = Metrics::default();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let v: serde_json::Value =
                serde_json::from_str(line).map_err(|e| format!("line {}: not JSON ({e})", i + 1))?;
            if v.get("test_loss").is_some() {
                m.test = Some(serde_json::from_value(v).map_err(|e| format!("line {}: {e}", i + 1))?);
            } else {
                m.epochs
                    .push(serde_json::from_value(v).map_err(|e| format!("line {}: not an epoch row ({e})", i + 1))?);
            }
        }
        if m.epochs.is_empty() {
            return Err("no epoch rows; expected the JSON lines `flopnet train --metrics FILE` writes".into());
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_train_lines_and_test_line() {
        let text = r#"{"epoch":1,"train_loss":0.9,"train_acc":0.7,"val_loss":0.8,"val_acc":0.72,"seconds":0.5,"gflops":3.0}
{"epoch":2,"train_loss":0.6,"train_acc":0.8,"val_loss":null,"val_acc":null,"seconds":0.4,"gflops":3.5,"predicted_seconds":0.45}
{"test_loss":0.7,"test_acc":0.75,"test_examples":1000}
"#;
        let m = Metrics::parse(text).unwrap();
        assert_eq!(m.epochs.len(), 2);
        assert_eq!(m.epochs[0].val_acc, Some(0.72));
        assert_eq!(m.epochs[1].val_loss, None);
        assert_eq!(m.epochs[1].predicted_seconds, Some(0.45));
        assert_eq!(m.test.unwrap().test_examples, 1000);
    }

    #[test]
    fn bad_lines_are_named() {
        assert!(Metrics::parse("{\"epoch\":1}\n").unwrap_err().contains("line 1"));
        assert!(Metrics::parse("\nnope\n").unwrap_err().contains("line 2"));
        assert!(Metrics::parse("").unwrap_err().contains("no epoch rows"));
    }
}
