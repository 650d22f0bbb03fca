//! `--metrics FILE`: one JSON object per line, flushed after each so a run can be followed.

use super::{EpochReport, Evaluation};
use crate::error::{Error, Result};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

pub struct MetricsWriter {
    path: PathBuf,
    append: bool,
    /// Opened at the first line: a run that stops before it (diverged, refused) leaves no empty
    /// file behind and a file already there as it was.
    out: Option<BufWriter<File>>,
}

impl MetricsWriter {
    /// Writes `path` afresh, from the first line on.
    pub fn create(path: &Path) -> Result<MetricsWriter> {
        Ok(MetricsWriter { path: path.to_path_buf(), append: false, out: None })
    }

    /// Adds lines after those already in `path` (a resumed run).
    pub fn append(path: &Path) -> Result<MetricsWriter> {
        Ok(MetricsWriter { path: path.to_path_buf(), append: true, out: None })
    }

    fn line(&mut self, v: &impl serde::Serialize) -> Result<()> {
        let text = serde_json::to_string(v).map_err(|e| Error::Usage(e.to_string()))?;
        let out = match &mut self.out {
            Some(out) => out,
            None => {
                let mut o = std::fs::OpenOptions::new();
                let f =
                    if self.append { o.create(true).append(true) } else { o.create(true).write(true).truncate(true) }
                        .open(&self.path)
                        .map_err(|e| Error::io(&self.path, e))?;
                self.out.insert(BufWriter::new(f))
            }
        };
        writeln!(out, "{text}").and_then(|_| out.flush()).map_err(|e| Error::io(&self.path, e))
    }

    pub fn epoch(&mut self, r: &EpochReport) -> Result<()> {
        self.line(r)
    }

    /// The final line: the test split's loss and accuracy.
    pub fn test(&mut self, e: &Evaluation) -> Result<()> {
        self.line(&serde_json::json!({ "test_loss": e.loss, "test_acc": e.acc, "test_examples": e.examples }))
    }
}
