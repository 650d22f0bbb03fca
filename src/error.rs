//! One error type for the whole crate. Every variant says what was wrong and, where there is one,
//! the fix; the CLI prints it as one line and exits with [`Error::exit_code`].

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A network spec that does not parse or describes an impossible network.
    #[error("spec `{spec}`: {problem}")]
    Spec { spec: String, problem: String },

    /// Options that do not fit together (e.g. `--loss ce` without a softmax output).
    #[error("{0}")]
    Usage(String),

    /// A data file that is missing, malformed or does not fit the network.
    #[error(transparent)]
    Data(#[from] crate::data::DataError),

    /// Two things that must agree in size do not.
    #[error("{op}: {detail}")]
    Shape { op: &'static str, detail: String },

    /// A model file that cannot be read, or does not describe a network flopnet can run.
    #[error("model file {}: {problem}", path.display())]
    Model { path: PathBuf, problem: String },

    /// An input file the user named that cannot be read as one: missing, a directory or a
    /// device, too big, not text.
    #[error("{}: {problem}", path.display())]
    Input { path: PathBuf, problem: String },

    /// A result that could not be written where asked and was written elsewhere instead.
    #[error("could not write {} ({problem}); it was saved to {} instead, move it where you want it", wanted.display(), saved.display())]
    Rescued { wanted: PathBuf, saved: PathBuf, problem: String },

    /// Writing a file (or reading one midway) failed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A picture could not be drawn or encoded.
    #[error("{0}")]
    Plot(String),

    /// Training produced a NaN or an infinity.
    #[error("training diverged: {0}")]
    Diverged(String),

    /// The run would need more memory than the machine has free; nothing was allocated.
    #[error("not enough memory: {0}")]
    Memory(String),

    /// A checkpoint that cannot be read, or does not belong to this run.
    #[error("checkpoint {}: {problem}", path.display())]
    Checkpoint { path: PathBuf, problem: String },

    /// SIGINT or SIGTERM stopped training (at a batch boundary, after saving a checkpoint).
    #[error("interrupted by {}: {detail}", signal_name(*signal))]
    Interrupted { signal: i32, detail: String },
}

/// `SIGINT`, `SIGTERM` or `signal N`.
fn signal_name(signal: i32) -> String {
    match signal {
        2 => "SIGINT".into(),
        15 => "SIGTERM".into(),
        n => format!("signal {n}"),
    }
}

impl Error {
    /// A spec error; control characters in the spec are shown escaped (`\n`), so the message
    /// stays on one line.
    pub fn spec(spec: &str, problem: impl Into<String>) -> Error {
        let spec =
            spec.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect();
        Error::Spec { spec, problem: problem.into() }
    }

    pub fn input(path: impl Into<PathBuf>, problem: impl Into<String>) -> Error {
        Error::Input { path: path.into(), problem: problem.into() }
    }

    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io { path: path.into(), source }
    }

    /// 2 for input the user must fix (a spec, a data, model, checkpoint or metrics file that is
    /// missing or wrong, options, an output path that cannot be written, a network too big for
    /// the memory), 1 for a run that failed on its own (divergence, a write that failed midway),
    /// 128 + the signal for a run stopped by SIGINT (130) or SIGTERM (143), as a
    /// shell reports it.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Diverged(_) | Error::Io { .. } | Error::Rescued { .. } | Error::Plot(_) => 1,
            Error::Interrupted { signal, .. } => 128 + signal,
            _ => 2,
        }
    }
}
