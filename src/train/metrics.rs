//! `--metrics FILE`: one JSON object per line, flushed after each so a run can be followed.

use super::{EpochReport, Evaluation};
use crate::error::{Error, Result};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

pub struct MetricsWriter {
    path: PathBuf,
    out: BufWriter<File>,
}

impl MetricsWriter {
    pub fn create(path: &Path) -> Result<MetricsWriter> {
        let f = File::create(path).map_err(|e| Error::io(path, e))?;
        Ok(MetricsWriter { path: path.to_path_buf(), out: BufWriter::new(f) })
    }

    /// Opens `path` to add lines after those already there (a resumed run).
    pub fn append(path: &Path) -> Result<MetricsWriter> {
        let f = std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(|e| Error::io(path, e))?;
        Ok(MetricsWriter { path: path.to_path_buf(), out: BufWriter::new(f) })
    }

    fn line(&mut self, v: &impl serde::Serialize) -> Result<()> {
        let text = serde_json::to_string(v).map_err(|e| Error::Usage(e.to_string()))?;
        writeln!(self.out, "{text}").and_then(|_| self.out.flush()).map_err(|e| Error::io(&self.path, e))
    }

    pub fn epoch(&mut self, r: &EpochReport) -> Result<()> {
        self.line(r)
    }

    /// The final line: the test split's loss and accuracy.
    pub fn test(&mut self, e: &Evaluation) -> Result<()> {
        self.line(&serde_json::json!({ "test_loss": e.loss, "test_acc": e.acc, "test_examples": e.examples }))
    }
}
