//! The files a user names on the command line. An input is read only when it is a file (or a
//! pipe) and its size fits a limit, checked before reading; an output is checked before any
//! work starts, never replaces a file the command reads, and a trained model that cannot be
//! written where asked is written somewhere else rather than lost.

use crate::error::{Error, Result};
use std::io::Read;
use std::path::{Path, PathBuf};

/// Why an input file was not read.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("cannot read it ({0}); check that the path exists and is readable")]
    Io(std::io::Error),
    #[error("is a directory, not a file{}", if .0.is_empty() { String::new() } else { format!("; {}", .0) })]
    Directory(&'static str),
    #[error("is a {0}, not a file; pass a file (a pipe works too)")]
    Special(&'static str),
    #[error("holds {} or more, more than {} (the most {what}); pass the right file", bytes(*size), bytes(*limit))]
    TooBig { size: u64, limit: u64, what: &'static str },
}

fn bytes(n: u64) -> String {
    crate::report::format::bytes(u128::from(n))
}

/// What kind of thing `meta` describes, when it is neither a file nor a directory nor a pipe.
fn special(meta: &std::fs::Metadata) -> Option<&'static str> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        let t = meta.file_type();
        if t.is_char_device() {
            return Some("character device");
        }
        if t.is_block_device() {
            return Some("block device");
        }
        if t.is_socket() {
            return Some("socket");
        }
        None
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        None
    }
}

/// Reads the input file `path`, refusing a directory (`dir_hint` says what to pass instead), a
/// device such as `/dev/zero`, and anything over `limit` bytes: a file's size is checked before
/// it is read, a pipe is read at most `limit` + 1 bytes. `what` names the limit in the message
/// ("a model file may hold").
pub fn read_input(
    path: &Path,
    limit: u64,
    what: &'static str,
    dir_hint: &'static str,
) -> std::result::Result<Vec<u8>, InputError> {
    let meta = std::fs::metadata(path).map_err(InputError::Io)?;
    if meta.is_dir() {
        return Err(InputError::Directory(dir_hint));
    }
    if let Some(kind) = special(&meta) {
        return Err(InputError::Special(kind));
    }
    if meta.is_file() && meta.len() > limit {
        return Err(InputError::TooBig { size: meta.len(), limit, what });
    }
    let f = std::fs::File::open(path).map_err(InputError::Io)?;
    let mut out = Vec::with_capacity(if meta.is_file() { meta.len() as usize } else { 0 });
    f.take(limit.saturating_add(1)).read_to_end(&mut out).map_err(InputError::Io)?;
    if out.len() as u64 > limit {
        return Err(InputError::TooBig { size: out.len() as u64, limit, what });
    }
    Ok(out)
}

/// [`read_input`] for a text file: the problem with it as an [`Error::Input`] (exit 2), the
/// content as UTF-8.
pub fn read_text(path: &Path, limit: u64, what: &'static str, dir_hint: &'static str) -> Result<String> {
    let bytes = read_input(path, limit, what, dir_hint).map_err(|e| Error::input(path, e.to_string()))?;
    String::from_utf8(bytes).map_err(|e| {
        Error::input(
            path,
            format!("is not UTF-8 text (invalid byte at offset {}); pass a text file", e.utf8_error().valid_up_to()),
        )
    })
}

/// The most bytes an input may hold when loading it takes `factor` bytes of memory per byte:
/// the memory available now over `factor` (no limit where that is unknown).
pub fn memory_limit(factor: u64) -> u64 {
    crate::sys::available_bytes().map_or(u64::MAX, |a| a / factor.max(1))
}

/// The most a text input of flopnet's own (a spec, a profile, a metrics file) may hold: 64 MiB.
pub const TEXT_LIMIT: u64 = 64 << 20;

/// Checks, before any work starts, that `path` can be written by the option `flag`: its
/// directory exists, it is not a directory, and a file can be created there (or the existing
/// one opened for writing; nothing is changed). `inputs` are the files this command reads:
/// none of them may be the output.
pub fn check_output(flag: &str, path: &Path, inputs: &[&Path]) -> Result<()> {
    let usage = |problem: String| Error::Usage(format!("{flag} {}: {problem}", path.display()));
    if path.is_dir() {
        return Err(usage("is a directory; give a file name".into()));
    }
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !dir.is_dir() {
        return Err(usage(format!("the directory {} does not exist; create it first", dir.display())));
    }
    if let Some(input) = inputs.iter().find(|i| same_file(i, path)) {
        return Err(usage(format!("is the file this command reads ({}); write to another file", input.display())));
    }
    if path.exists() {
        std::fs::OpenOptions::new().write(true).open(path).map(drop)
    } else {
        let probe = dir.join(format!(".flopnet-probe-{}", std::process::id()));
        std::fs::OpenOptions::new().write(true).create_new(true).open(&probe).map(|_| {
            let _ = std::fs::remove_file(&probe);
        })
    }
    .map_err(|e| usage(format!("cannot write there ({e}); choose a writable place")))
}

/// Refuses a `flag` that takes a directory (created if missing) but names a file.
pub fn check_dir_output(flag: &str, dir: &Path) -> Result<()> {
    if dir.exists() && !dir.is_dir() {
        return Err(Error::Usage(format!("{flag} {}: is a file; {flag} takes a directory", dir.display())));
    }
    Ok(())
}

/// [`check_output`] for each `(flag, path)` given, against the inputs given; and no two
/// outputs may be the same file: the second would replace the first.
pub fn check_outputs(outputs: &[(&str, Option<&Path>)], inputs: &[Option<&Path>]) -> Result<()> {
    let inputs: Vec<&Path> = inputs.iter().copied().flatten().collect();
    let given: Vec<(&str, &Path)> = outputs.iter().filter_map(|(f, p)| Some((*f, (*p)?))).collect();
    for (i, (flag, path)) in given.iter().enumerate() {
        check_output(flag, path, &inputs)?;
        if let Some((other, _)) = given[..i].iter().find(|(_, p)| same_place(p, path)) {
            return Err(Error::Usage(format!(
                "{other} and {flag} both name {}; give each its own file",
                path.display()
            )));
        }
    }
    Ok(())
}

/// Refuses an output that names `kept`, the file that `owner` (an option such as `--resume ck`)
/// keeps: writing there would replace it. Run after [`check_outputs`].
pub fn check_apart(outputs: &[(&str, Option<&Path>)], owner: &str, kept: &Path) -> Result<()> {
    match outputs.iter().find_map(|(f, p)| Some((*f, (*p)?)).filter(|(_, p)| same_place(p, kept))) {
        Some((flag, path)) => Err(Error::Usage(format!(
            "{flag} {}: is the file {owner} keeps ({}); write to another file",
            path.display(),
            kept.display()
        ))),
        None => Ok(()),
    }
}

/// Whether two output paths name the same place (existing or not): the same file name in the
/// same directory.
fn same_place(a: &Path, b: &Path) -> bool {
    let dir = |p: &Path| {
        let d = p.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        std::fs::canonicalize(d).ok()
    };
    a.file_name() == b.file_name() && dir(a).is_some() && dir(a) == dir(b)
}

/// Whether `a` and `b` name the same existing file.
fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Writes with `write` to `path`; if that fails, writes to a file of the same name in the
/// working directory, then in the temporary directory, and answers the first failure with
/// where the content went (exit 1: the write failed, but nothing was lost).
pub fn write_or_rescue(path: &Path, write: impl Fn(&Path) -> Result<()>) -> Result<()> {
    let first = match write(path) {
        Ok(()) => return Ok(()),
        Err(e) => e,
    };
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "model".into());
    let name = format!("flopnet-rescued-{}-{name}", std::process::id());
    let places: Vec<PathBuf> = [std::env::current_dir().ok(), Some(std::env::temp_dir())]
        .into_iter()
        .flatten()
        .map(|d| d.join(&name))
        .collect();
    for p in places {
        if write(&p).is_ok() {
            return Err(Error::Rescued { wanted: path.to_path_buf(), saved: p, problem: first.to_string() });
        }
    }
    Err(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_directories_and_big_files_are_refused_before_reading() {
        let dir = tempfile::tempdir().unwrap();
        let e = read_input(dir.path(), 10, "x", "pass a file").unwrap_err();
        assert!(matches!(e, InputError::Directory(_)), "{e}");
        let e = read_input(Path::new("/dev/zero"), 1 << 40, "x", "").unwrap_err();
        assert_eq!(e.to_string(), "is a character device, not a file; pass a file (a pipe works too)");
        let big = dir.path().join("big");
        std::fs::File::create(&big).unwrap().set_len(1 << 40).unwrap();
        let e = read_input(&big, 1 << 30, "a thing may hold", "").unwrap_err();
        assert!(matches!(e, InputError::TooBig { size, .. } if size == 1 << 40), "{e}");
        std::fs::write(&big, b"12345").unwrap();
        assert_eq!(read_input(&big, 5, "x", "").unwrap(), b"12345");
        assert!(matches!(read_input(&big, 4, "x", "").unwrap_err(), InputError::TooBig { .. }));
    }

    #[test]
    fn outputs_are_checked_without_touching_anything() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("data.csv");
        std::fs::write(&input, b"1,2\n").unwrap();
        let m = check_output("--save", &dir.path().join("no/such/m.safetensors"), &[]).unwrap_err().to_string();
        assert!(m.contains("does not exist; create it first"), "{m}");
        let m = check_output("--save", dir.path(), &[]).unwrap_err().to_string();
        assert!(m.contains("is a directory"), "{m}");
        let m = check_output("--save", &input, &[input.as_path()]).unwrap_err().to_string();
        assert!(m.contains("is the file this command reads"), "{m}");
        check_output("--save", &input, &[]).unwrap();
        check_output("--save", &dir.path().join("new.safetensors"), &[]).unwrap();
        assert_eq!(std::fs::read(&input).unwrap(), b"1,2\n");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "the probe is removed");
    }

    #[test]
    fn two_outputs_never_name_one_file() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("m.safetensors");
        let b = dir.path().join(".").join("m.safetensors");
        let m = check_outputs(&[("--save", Some(&a)), ("--metrics", Some(&b))], &[]).unwrap_err().to_string();
        assert!(m.starts_with("--save and --metrics both name"), "{m}");
        let c = dir.path().join("m.jsonl");
        check_outputs(&[("--save", Some(&a)), ("--metrics", Some(&c)), ("--plot", None)], &[]).unwrap();
    }

    proptest::proptest! {
        /// However a path is spelled (`./`, `sub/..`), two outputs are refused exactly when they
        /// are one file.
        #[test]
        fn outputs_are_refused_exactly_when_they_are_one_file(
            a in (0usize..3, 0usize..2), b in (0usize..3, 0usize..2)
        ) {
            let dir = tempfile::tempdir().unwrap();
            std::fs::create_dir(dir.path().join("sub")).unwrap();
            let spell = |(way, name): (usize, usize)| {
                let file = ["m.safetensors", "m.jsonl"][name];
                match way {
                    0 => dir.path().join(file),
                    1 => dir.path().join(".").join(file),
                    _ => dir.path().join("sub").join("..").join(file),
                }
            };
            let (pa, pb) = (spell(a), spell(b));
            let r = check_outputs(&[("--save", Some(&pa)), ("--metrics", Some(&pb))], &[]);
            proptest::prop_assert_eq!(r.is_err(), a.1 == b.1, "{:?} {:?}", pa, pb);
        }
    }

    /// An endless pipe is read up to the limit, not until memory runs out.
    #[cfg(unix)]
    #[test]
    fn an_endless_pipe_stops_at_the_limit() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("endless.toml");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path; mkfifo only creates the node.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let writer = {
            let fifo = fifo.clone();
            std::thread::spawn(move || {
                let mut f = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
                // Ends when the reader closes its end (a broken pipe).
                while f.write_all(&[b'#'; 1 << 16]).is_ok() {}
            })
        };
        let e = read_input(&fifo, 1 << 20, "a test may read", "").unwrap_err();
        assert!(matches!(e, InputError::TooBig { limit, .. } if limit == 1 << 20), "{e}");
        writer.join().unwrap();
    }

    #[test]
    fn a_failed_write_is_rescued_elsewhere() {
        let dir = tempfile::tempdir().unwrap();
        let wanted = dir.path().join("gone/m.safetensors");
        let e = write_or_rescue(&wanted, |p| std::fs::write(p, b"model").map_err(|e| Error::io(p, e))).unwrap_err();
        let Error::Rescued { saved, .. } = &e else { panic!("{e}") };
        assert_eq!(std::fs::read(saved).unwrap(), b"model");
        std::fs::remove_file(saved).unwrap();
        assert!(e.to_string().contains("was saved to"), "{e}");
        assert_eq!(e.exit_code(), 1);
    }
}
