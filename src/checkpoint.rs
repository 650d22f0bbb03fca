//! Training checkpoints: everything needed to continue a run bit for bit — the parameters, the
//! optimizer's state and step counter, where in which epoch training stands and what the epoch
//! has scored so far. (The shuffled order of each epoch is derived from the seed and the epoch
//! number, so no random-generator state is kept.)
//!
//! One file, `DIR/checkpoint.flopnet`, replaced atomically (temporary file, fsync, rename):
//!
//! ```text
//! "FLOPNETCKPT\0"   12 bytes of magic
//! u32 LE            format version (VERSION)
//! u64 LE, bytes     length of the JSON header, the header (Meta)
//! 3 × (u64 LE, f32 LE…)  parameters, first optimizer moment, second moment (counts, values)
//! u32 LE            CRC-32 of every byte before it
//! ```

use crate::data::Dataset;
use crate::engine::{Engine, Score, Settings};
use crate::error::{Error, Result};
use crate::init::LayerParams;
use crate::spec::Spec;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// The checkpoint's file name inside the `--checkpoint` directory.
pub const FILE: &str = "checkpoint.flopnet";
/// Bumped whenever the layout or the header's meaning changes; older files are refused.
pub const VERSION: u32 = 1;
const MAGIC: &[u8; 12] = b"FLOPNETCKPT\0";

/// The header of a checkpoint of this run, at its start.
pub fn meta(spec: &Spec, settings: &Settings, plan: &crate::train::Plan, train: &Dataset) -> Meta {
    Meta {
        spec: spec.to_string(),
        loss: settings.loss.to_string(),
        optimizer: settings.optimizer.to_string(),
        lr_bits: settings.hyper.lr.to_bits(),
        batch: plan.batch,
        seed: plan.seed,
        shuffle: plan.shuffle,
        threads: settings.threads,
        examples: train.len(),
        data_crc: data_crc(&train.features, &train.labels),
        epoch: 0,
        batch_in_epoch: 0,
        step: 0,
        optimizer_steps: 0,
        loss_sum_bits: 0,
        correct: 0,
    }
}

/// What the run was and where it stands.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    /// The compact spec with every activation written out.
    pub spec: String,
    pub loss: String,
    pub optimizer: String,
    /// The learning rate, as f64 bits (JSON numbers need not round-trip exactly).
    pub lr_bits: u64,
    pub batch: usize,
    pub seed: u64,
    pub shuffle: bool,
    pub threads: usize,
    /// Training examples, and a CRC-32 of their features and labels.
    pub examples: usize,
    pub data_crc: u32,
    /// Epochs finished.
    pub epoch: usize,
    /// Batches finished of the next epoch (0 at an epoch's end).
    pub batch_in_epoch: usize,
    /// Training steps taken in all.
    pub step: u64,
    /// The optimizer's own step counter (Adam's bias correction).
    pub optimizer_steps: u64,
    /// The unfinished epoch's summed loss (f64 bits) and correct predictions so far.
    pub loss_sum_bits: u64,
    pub correct: usize,
}

/// Where a run stands: what [`crate::train`] resumes from.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Position {
    /// Epochs finished.
    pub epoch: usize,
    /// Batches finished of the next epoch.
    pub batch: usize,
    /// Steps taken in all.
    pub step: u64,
    /// The unfinished epoch's score so far.
    pub score: Score,
}

impl Meta {
    pub fn position(&self) -> Position {
        Position {
            epoch: self.epoch,
            batch: self.batch_in_epoch,
            step: self.step,
            score: Score { loss_sum: f64::from_bits(self.loss_sum_bits), correct: self.correct },
        }
    }

    pub fn set_position(&mut self, p: &Position) {
        self.epoch = p.epoch;
        self.batch_in_epoch = p.batch;
        self.step = p.step;
        self.loss_sum_bits = p.score.loss_sum.to_bits();
        self.correct = p.score.correct;
    }

    pub fn lr(&self) -> f64 {
        f64::from_bits(self.lr_bits)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    pub meta: Meta,
    pub params: Vec<f32>,
    pub first: Vec<f32>,
    pub second: Vec<f32>,
}

/// CRC-32 of a data set's features and labels, to tell a resumed run it was given other data.
pub fn data_crc(features: &[f32], labels: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    for chunk in features.chunks(1 << 14) {
        let bytes: Vec<u8> = chunk.iter().flat_map(|v| v.to_le_bytes()).collect();
        h.update(&bytes);
    }
    h.update(labels);
    h.finalize()
}

fn put_floats(out: &mut Vec<u8>, v: &[f32]) {
    out.extend_from_slice(&(v.len() as u64).to_le_bytes());
    out.reserve(4 * v.len());
    for x in v {
        out.extend_from_slice(&x.to_le_bytes());
    }
}

/// Reads a checkpoint's body front to back; `None` when it runs out.
struct Cursor<'a> {
    rest: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: u64) -> Option<&'a [u8]> {
        if n > self.rest.len() as u64 {
            return None;
        }
        let (head, tail) = self.rest.split_at(n as usize);
        self.rest = tail;
        Some(head)
    }

    fn u64(&mut self) -> Option<u64> {
        self.take(8).map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()))
    }

    fn floats(&mut self) -> Option<Vec<f32>> {
        let n = self.u64()?;
        let data = self.take(n.checked_mul(4)?)?;
        Some(data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
    }
}

impl Checkpoint {
    /// Takes the engine's parameters and optimizer state.
    pub fn capture(engine: &Engine, mut meta: Meta, at: &Position) -> Checkpoint {
        meta.set_position(at);
        let (first, second, steps) = engine.optimizer_state();
        meta.optimizer_steps = steps;
        Checkpoint { meta, params: engine.params().to_vec(), first: first.to_vec(), second: second.to_vec() }
    }

    /// The parameters as layers, for [`Engine::new`] (f32 → f64 → f32 is exact).
    pub fn layers(&self, spec: &Spec) -> Result<Vec<LayerParams>> {
        if self.params.len() as u128 != spec.params() {
            return Err(Error::Shape {
                op: "checkpoint",
                detail: format!("{} parameters stored for {spec}, which has {}", self.params.len(), spec.params()),
            });
        }
        let mut at = 0;
        let mut take = |n: usize| {
            let v: Vec<f64> = self.params[at..at + n].iter().map(|&x| f64::from(x)).collect();
            at += n;
            v
        };
        Ok(spec
            .layers
            .iter()
            .map(|l| {
                let weight = take(l.weight_count());
                LayerParams { weight, bias: take(l.bias_count()) }
            })
            .collect())
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let header = serde_json::to_vec(&self.meta).unwrap_or_default();
        let mut out =
            Vec::with_capacity(64 + header.len() + 4 * (self.params.len() + self.first.len() + self.second.len()));
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&(header.len() as u64).to_le_bytes());
        out.extend_from_slice(&header);
        for v in [&self.params, &self.first, &self.second] {
            put_floats(&mut out, v);
        }
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Parses a checkpoint; `path` only names it in messages. Every length is checked against
    /// the bytes present before anything is allocated.
    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Checkpoint> {
        let bad = |problem: String| Error::Checkpoint { path: path.to_path_buf(), problem };
        if bytes.len() < MAGIC.len() + 4 || &bytes[..MAGIC.len()] != MAGIC {
            return Err(bad("not a flopnet checkpoint (no FLOPNETCKPT magic at its start)".into()));
        }
        let version = u32::from_le_bytes(bytes[12..16].try_into().unwrap_or_default());
        if version != VERSION {
            return Err(bad(format!(
                "format version {version}, but this flopnet reads version {VERSION}; resume it with the flopnet that wrote it"
            )));
        }
        let Some((body, crc)) = bytes.split_last_chunk::<4>() else {
            return Err(bad("truncated".into()));
        };
        if body.len() < 16 || crc32fast::hash(body) != u32::from_le_bytes(*crc) {
            return Err(bad(
                "checksum mismatch: the file is truncated or damaged; delete it to start over, or restore a copy"
                    .into(),
            ));
        }
        let mut cur = Cursor { rest: &body[16..] };
        let header_len = cur.u64().ok_or_else(|| bad("truncated header".into()))?;
        let header = cur.take(header_len).ok_or_else(|| bad("the header runs past the end of the file".into()))?;
        let meta: Meta = serde_json::from_slice(header).map_err(|e| bad(format!("unreadable header ({e})")))?;
        let mut floats = |what: &str| cur.floats().ok_or_else(|| bad(format!("{what} run past the end of the file")));
        let params = floats("the parameters")?;
        let first = floats("the optimizer's first moments")?;
        let second = floats("the optimizer's second moments")?;
        if !cur.rest.is_empty() {
            return Err(bad(format!("{} bytes after the last tensor", cur.rest.len())));
        }
        Ok(Checkpoint { meta, params, first, second })
    }

    /// The checkpoint file inside `dir`.
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(FILE)
    }

    /// Writes `dir/checkpoint.flopnet` atomically, creating `dir` if needed.
    pub fn save(&self, dir: &Path) -> Result<PathBuf> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let path = Self::path(dir);
        crate::model::write_atomically(&path, &self.to_bytes())?;
        Ok(path)
    }

    pub fn load(dir: &Path) -> Result<Checkpoint> {
        let path = Self::path(dir);
        // Parameters and two moments in f64 become the engine's f32 beside the file: at most 2
        // bytes of memory per byte.
        let what = "the memory available can load, at 2 bytes per byte of a checkpoint";
        let read = crate::files::read_input(&path, crate::files::memory_limit(2), what, "");
        let bytes = read.map_err(|e| Error::Checkpoint {
            path: path.clone(),
            problem: match e {
                crate::files::InputError::Io(e) => {
                    format!("cannot read it ({e}); --resume takes the directory a --checkpoint run saved into")
                }
                e => e.to_string(),
            },
        })?;
        Self::from_bytes(&path, &bytes)
    }

    /// Errors unless this checkpoint was written by a run with the same network, optimizer,
    /// batch, seed, shuffling and training data; names the first difference.
    pub fn check_matches(&self, now: &Meta, path: &Path) -> Result<()> {
        let m = &self.meta;
        let diffs = [
            ("network", m.spec.clone(), now.spec.clone()),
            ("loss", m.loss.clone(), now.loss.clone()),
            ("--optimizer", m.optimizer.clone(), now.optimizer.clone()),
            ("--batch", m.batch.to_string(), now.batch.to_string()),
            ("--seed", m.seed.to_string(), now.seed.to_string()),
            ("shuffling", m.shuffle.to_string(), now.shuffle.to_string()),
            ("training examples", m.examples.to_string(), now.examples.to_string()),
            ("training data (CRC-32)", format!("{:08x}", m.data_crc), format!("{:08x}", now.data_crc)),
        ];
        match diffs.into_iter().find(|(_, a, b)| a != b) {
            None => Ok(()),
            Some((what, saved, given)) => Err(Error::Checkpoint {
                path: path.to_path_buf(),
                problem: format!(
                    "was saved with {what} {saved} but this run has {given}; resume with the command line that started it"
                ),
            }),
        }
    }
}

impl Checkpoint {
    /// Loads the checkpoint in `dir` for the run described by `now` (see [`meta`]): errors if it
    /// was saved by a different run, and returns it with its parameters as layers for
    /// [`Engine::new`]; then [`Checkpoint::restore`] the engine built from them.
    pub fn resume(dir: &Path, now: &Meta, spec: &Spec) -> Result<(Checkpoint, Vec<LayerParams>)> {
        let c = Checkpoint::load(dir)?;
        c.check_matches(now, &Self::path(dir))?;
        let layers = c.layers(spec)?;
        Ok((c, layers))
    }

    /// Puts the optimizer state back into an engine built from [`Checkpoint::layers`]; returns
    /// where training continues.
    pub fn restore(&self, engine: &mut Engine) -> Result<Position> {
        engine.set_optimizer_state(&self.first, &self.second, self.meta.optimizer_steps)?;
        Ok(self.meta.position())
    }
}

/// Saves checkpoints of a run into a directory, and hears SIGINT and SIGTERM so that training
/// stops at the next batch boundary with a checkpoint saved. A second signal ends the process at
/// once (exit 130 or 143).
pub struct Saver {
    dir: PathBuf,
    meta: Meta,
    signal: Arc<AtomicUsize>,
    /// The last position saved: the last good checkpoint.
    pub saved: Option<Position>,
}

impl Saver {
    /// `resumed`: the position of the checkpoint this run started from, the last good one so far.
    pub fn new(dir: &Path, meta: Meta, resumed: Option<Position>) -> Result<Saver> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let signal = Arc::new(AtomicUsize::new(0));
        for sig in [SIGINT, SIGTERM] {
            let again = Arc::new(AtomicBool::new(false));
            let hook = |e: std::io::Error| Error::Usage(format!("cannot install a handler for signal {sig}: {e}"));
            // The order matters: the shutdown hook sees the flag that the second hook sets.
            signal_hook::flag::register_conditional_shutdown(sig, 128 + sig, Arc::clone(&again)).map_err(hook)?;
            signal_hook::flag::register(sig, again).map_err(hook)?;
            signal_hook::flag::register_usize(sig, Arc::clone(&signal), sig as usize).map_err(hook)?;
        }
        Ok(Saver { dir: dir.to_path_buf(), meta, signal, saved: resumed })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The signal received, if any.
    pub fn interrupted(&self) -> Option<i32> {
        match self.signal.load(Ordering::Relaxed) {
            0 => None,
            s => Some(s as i32),
        }
    }

    /// Saves the engine's state at `at`; returns the file written.
    pub fn save(&mut self, engine: &Engine, at: &Position) -> Result<PathBuf> {
        let path = Checkpoint::capture(engine, self.meta.clone(), at).save(&self.dir)?;
        self.saved = Some(*at);
        Ok(path)
    }

    /// Adds to a divergence error where the last good checkpoint is kept.
    pub fn annotate(&self, e: Error) -> Error {
        match (e, self.saved) {
            (Error::Diverged(m), Some(p)) => Error::Diverged(format!(
                "{m}; the last good checkpoint ({}) is kept in {}",
                describe(&p),
                self.dir.display()
            )),
            (Error::Diverged(m), None) => {
                Error::Diverged(format!("{m}; no checkpoint was saved before it ({} is unchanged)", self.dir.display()))
            }
            (e, _) => e,
        }
    }
}

/// "epoch 3 done" or "epoch 3, batch 120".
pub fn describe(p: &Position) -> String {
    if p.batch == 0 {
        format!("epoch {} done, step {}", p.epoch, p.step)
    } else {
        format!("epoch {}, batch {}, step {}", p.epoch + 1, p.batch, p.step)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Checkpoint {
        Checkpoint {
            meta: Meta {
                spec: "3-2:softmax".into(),
                loss: "ce".into(),
                optimizer: "adam".into(),
                lr_bits: 0.001f64.to_bits(),
                batch: 4,
                seed: 9,
                shuffle: true,
                threads: 2,
                examples: 10,
                data_crc: 0xdead_beef,
                epoch: 1,
                batch_in_epoch: 2,
                step: 5,
                optimizer_steps: 5,
                loss_sum_bits: 1.25f64.to_bits(),
                correct: 3,
            },
            params: (0..8).map(|i| i as f32 * 0.5).collect(),
            first: vec![0.1; 8],
            second: vec![f32::MIN_POSITIVE; 8],
        }
    }

    #[test]
    fn round_trip() {
        let c = sample();
        let dir = tempfile::tempdir().unwrap();
        let path = c.save(dir.path()).unwrap();
        assert_eq!(path, dir.path().join(FILE));
        assert_eq!(Checkpoint::load(dir.path()).unwrap(), c);
        // No temporary file is left beside it.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn every_damage_is_an_error() {
        let bytes = sample().to_bytes();
        let p = Path::new("c");
        for len in 0..bytes.len() {
            let e = Checkpoint::from_bytes(p, &bytes[..len]).unwrap_err().to_string();
            assert!(e.starts_with("checkpoint c: "), "{e}");
        }
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x10;
            assert!(Checkpoint::from_bytes(p, &b).is_err(), "flipped byte {i} went unnoticed");
        }
        let mut b = bytes.clone();
        b[12] = 7;
        let e = Checkpoint::from_bytes(p, &b).unwrap_err().to_string();
        assert!(e.contains("format version 7"), "{e}");
        let e = Checkpoint::from_bytes(p, b"hello").unwrap_err().to_string();
        assert!(e.contains("not a flopnet checkpoint"), "{e}");
    }

    #[test]
    fn mismatch_names_the_difference() {
        let c = sample();
        let mut now = c.meta.clone();
        assert!(c.check_matches(&now, Path::new("c")).is_ok());
        now.batch = 8;
        let e = c.check_matches(&now, Path::new("c")).unwrap_err().to_string();
        assert!(e.contains("--batch 4 but this run has 8"), "{e}");
    }
}
