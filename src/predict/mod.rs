//! Predicting how long training takes before it runs: a machine profile measured by
//! `calibrate`, and a model that turns the ledger's work into seconds.

mod calibrate;
pub mod devices;
mod model;
mod profile;

pub use calibrate::calibrate;
pub use model::{LayerTime, Machine, Prediction, predict};
pub use profile::{Profile, check_replaceable, default_path, machine_id};

use crate::error::Result;
use std::path::Path;

/// The profile at `path` if it is fresh, else a new one measured now (and saved there). The
/// second value says what happened, for the user.
pub fn load_or_calibrate(path: &Path, threads: usize, quick: bool) -> Result<(Profile, Option<String>)> {
    let (found, why) = Profile::load(path, threads);
    if let Some(p) = found {
        return Ok((p, None));
    }
    // Refused before measuring: a file that is not a profile is never replaced.
    profile::check_replaceable(path)?;
    let t = std::time::Instant::now();
    let p = calibrate(threads, quick)?;
    p.save(path)?;
    let note = format!(
        "{}calibrated this machine in {:.1} s (saved to {}; `flopnet calibrate` measures more carefully)",
        why.map(|w| format!("{w}; ")).unwrap_or_default(),
        t.elapsed().as_secs_f64(),
        path.display()
    );
    Ok((p, Some(note)))
}
