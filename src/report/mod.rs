//! Text reports: what the CLI prints, built from ledgers and results, never computing counts.

mod count;
mod explain;
pub mod format;
mod verify;

pub use count::count_text;
pub use explain::explain_text;
pub use verify::verify_text;
