//! Text reports: what the CLI prints, built from ledgers and results, never computing counts.

mod count;
mod explain;
pub mod format;
mod run;
mod verify;

pub use count::count_text;
pub use explain::explain_text;
pub use run::{account_text, bench_text, confusion_text, epoch_line, prediction_text, seconds};
pub use verify::verify_text;
