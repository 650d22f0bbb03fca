//! Predicting how long training takes before it runs: a machine profile measured by
//! `calibrate`, and a model that turns the ledger's work into seconds.

mod calibrate;
pub mod devices;
mod model;
mod profile;

pub use calibrate::calibrate;
pub use model::{LayerTime, Machine, Prediction, inference_seconds, predict, warm_share};
pub use profile::{
    ConvRates, DepthwiseRates, PassRates, Profile, SparseRates, check_replaceable, default_path, machine_id,
};

use crate::error::Result;
use std::path::Path;

/// Why `train` prints no predicted times from `profile`, if it does not: a quick calibration (the
/// one a first run makes on its own, in 3–7 s) times each product and pass once, in a
/// process that has just started, and can be far off for a small network (the README's first
/// command once printed `predicted 0.06 s, -41%` on every epoch). A figure that rough is not
/// shown; `flopnet calibrate` measures each three times and takes the median.
pub fn withheld(profile: &Profile) -> Option<String> {
    profile.quick.then(|| {
        "predicted: withheld, as this machine's profile is a quick first calibration, too rough to trust; `flopnet calibrate` (a quarter of a minute, once) measures carefully, and runs after it print predictions".to_string()
    })
}

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
