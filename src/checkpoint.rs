//! Training checkpoints: everything needed to continue a run bit for bit — the parameters, the
//! optimizer's state and step counter, where in which epoch training stands and what the epoch
//! has scored so far. (The shuffled order of each epoch is derived from the seed and the epoch
//! number, so no random-generator state is kept.)
//!
//! One file, `DIR/checkpoint.safetensors`, replaced atomically (temporary file, fsync, rename), that
//! any safetensors reader opens:
//!
//! ```text
//! tensors   parameters [n], optimizer.first_moment [n or 0], optimizer.second_moment [n or 0]
//!           (F32; the engine's layout: each layer's weights, then its biases);
//!           for a network with batch normalization also batchnorm.running [r] (F32: per
//!           batch-norm layer its running mean, then its running variance) and
//!           batchnorm.batches [k] (I64: the batches each has normalized)
//! metadata  format  "flopnet-checkpoint", version (VERSION)
//!           meta    the run and where it stands, as JSON (Meta)
//!           crc32   CRC-32 of the whole file with these 8 hex digits read as "00000000"
//! ```
//!
//! The CRC covers every byte, header included, so any damage is caught. Checkpoints in the
//! private binary layout of earlier flopnets (`checkpoint.flopnet`, format 1 and 2) are refused
//! with a message saying so: resume them with the flopnet that wrote them.

use crate::data::Dataset;
use crate::engine::{Engine, RunningStats, Score, Settings};
use crate::error::{Error, Result};
use crate::init::LayerParams;
use crate::spec::Spec;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// The checkpoint's file name inside the `--checkpoint` directory.
pub const FILE: &str = "checkpoint.safetensors";
/// The file earlier flopnets wrote, in their private layout; refused with a message.
pub const OLD_FILE: &str = "checkpoint.flopnet";
/// Bumped whenever the layout or the metadata's meaning changes; other versions are refused.
/// (1 and 2 were the private binary layout.)
pub const VERSION: u32 = 3;
/// The metadata `format` of a checkpoint.
pub const FORMAT: &str = "flopnet-checkpoint";
const OLD_MAGIC: &[u8; 12] = b"FLOPNETCKPT\0";
/// The tensor names, in the order of [`Checkpoint`]'s fields.
pub const TENSORS: [&str; 3] = ["parameters", "optimizer.first_moment", "optimizer.second_moment"];
/// Batch normalization's running statistics and batch counts, present when the network has any.
pub const RUNNING: [&str; 2] = ["batchnorm.running", "batchnorm.batches"];
/// The CRC's placeholder while it is computed.
const NO_CRC: &str = "00000000";

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
        schedule: plan.schedule.name().to_string(),
        epochs: plan.epochs,
        init: None,
        normalize: None,
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
    /// The learning-rate schedule (`constant`, `cosine`) and the epochs it spans.
    pub schedule: String,
    pub epochs: usize,
    /// The model file the run started from (`--init`), if any: see [`Init`].
    pub init: Option<Init>,
    /// How the features were scaled (`--normalize`: none, unit, standard); absent in the first
    /// safetensors checkpoints, which are then not compared on it.
    #[serde(default)]
    pub normalize: Option<String>,
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

/// The `--init` file a run started from: its path as given and a CRC-32 of its bytes, so that
/// the same file moved elsewhere still matches and a different one under the same name does not.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Init {
    pub path: String,
    pub crc: u32,
}

impl Init {
    /// Reads `path` for its CRC.
    pub fn of(path: &Path) -> Result<Init> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Ok(Init { path: path.display().to_string(), crc: crc32fast::hash(&bytes) })
    }
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
    /// Batch normalization's running statistics (empty without batch norm).
    pub running: RunningStats,
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

/// The header's `"crc32":"XXXXXXXX"`: where its 8 hex digits start in `bytes`, if the key occurs
/// exactly once in the header.
fn crc_field(bytes: &[u8]) -> Option<usize> {
    let n = usize::try_from(u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?)).ok()?;
    let header = bytes.get(8..8usize.checked_add(n)?)?;
    let key = b"\"crc32\":\"";
    let mut at = header.windows(key.len()).enumerate().filter(|(_, w)| w == key).map(|(i, _)| i);
    let first = at.next()?;
    let digits = 8 + first + key.len();
    (at.next().is_none() && bytes.len() >= digits + 8).then_some(digits)
}

/// CRC-32 of `bytes` with the 8 digits at `at` read as [`NO_CRC`].
fn file_crc(bytes: &[u8], at: usize) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&bytes[..at]);
    h.update(NO_CRC.as_bytes());
    h.update(&bytes[at + 8..]);
    h.finalize()
}

impl Checkpoint {
    /// Takes the engine's parameters and optimizer state.
    pub fn capture(engine: &Engine, mut meta: Meta, at: &Position) -> Checkpoint {
        meta.set_position(at);
        let (first, second, steps) = engine.optimizer_state();
        meta.optimizer_steps = steps;
        Checkpoint {
            meta,
            params: engine.params().to_vec(),
            first: first.to_vec(),
            second: second.to_vec(),
            running: engine.running_stats(),
        }
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

    /// The file's bytes: a safetensors file whose metadata holds [`Meta`] and the CRC-32.
    pub fn to_bytes(&self) -> Vec<u8> {
        use safetensors::{Dtype, tensor::TensorView};
        let data: Vec<Vec<u8>> = [&self.params, &self.first, &self.second]
            .iter()
            .map(|v| v.iter().flat_map(|x| x.to_le_bytes()).collect())
            .collect();
        let mut views: Vec<(&str, TensorView)> = TENSORS
            .iter()
            .zip(&data)
            .filter_map(|(&name, bytes)| Some((name, TensorView::new(Dtype::F32, vec![bytes.len() / 4], bytes).ok()?)))
            .collect();
        let running: Vec<u8> = self.running.values.iter().flat_map(|x| x.to_le_bytes()).collect();
        let batches: Vec<u8> = self.running.batches.iter().flat_map(|&b| (b as i64).to_le_bytes()).collect();
        if !self.running.batches.is_empty() {
            views.extend(TensorView::new(Dtype::F32, vec![running.len() / 4], &running).ok().map(|v| (RUNNING[0], v)));
            views.extend(TensorView::new(Dtype::I64, vec![batches.len() / 8], &batches).ok().map(|v| (RUNNING[1], v)));
        }
        let meta = std::collections::HashMap::from([
            ("format".to_string(), FORMAT.to_string()),
            ("version".to_string(), VERSION.to_string()),
            ("meta".to_string(), serde_json::to_string(&self.meta).unwrap_or_default()),
            ("crc32".to_string(), NO_CRC.to_string()),
        ]);
        let bytes = safetensors::serialize(views, Some(meta)).unwrap_or_default();
        let mut out = crate::model::canonical_header(&bytes).unwrap_or(bytes);
        if let Some(at) = crc_field(&out) {
            let crc = format!("{:08x}", file_crc(&out, at));
            out[at..at + 8].copy_from_slice(crc.as_bytes());
        }
        out
    }

    /// Parses a checkpoint; `path` only names it in messages. The CRC is checked before anything
    /// else is read; safetensors checks every tensor's length against the bytes present.
    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Checkpoint> {
        let bad = |problem: String| Error::Checkpoint { path: path.to_path_buf(), problem };
        if bytes.starts_with(OLD_MAGIC) {
            let version = bytes.get(12..16).map_or(0, |v| u32::from_le_bytes(v.try_into().unwrap_or_default()));
            return Err(bad(format!(
                "written in the private layout of an earlier flopnet (format {version}); this flopnet reads safetensors checkpoints (format {VERSION}): resume it with the flopnet that wrote it, or delete it to start over"
            )));
        }
        let damaged = || {
            bad("checksum mismatch: the file is truncated or damaged; delete it to start over, or restore a copy"
                .into())
        };
        let at = crc_field(bytes).ok_or_else(|| {
            if safetensors::SafeTensors::read_metadata(bytes).is_ok() {
                damaged()
            } else {
                bad("not a flopnet checkpoint (not a safetensors file with a crc32 in its metadata)".into())
            }
        })?;
        let stored = std::str::from_utf8(&bytes[at..at + 8]).ok().and_then(|h| u32::from_str_radix(h, 16).ok());
        if stored != Some(file_crc(bytes, at)) {
            return Err(damaged());
        }
        let (_, header) =
            safetensors::SafeTensors::read_metadata(bytes).map_err(|e| bad(format!("not a safetensors file ({e})")))?;
        let info = header.metadata().clone().unwrap_or_default();
        let field = |key: &str| info.get(key).ok_or_else(|| bad(format!("its metadata has no {key}")));
        if field("format")? != FORMAT {
            return Err(bad(format!("its metadata format is {:?}, not {FORMAT:?}", field("format")?)));
        }
        let version = field("version")?;
        if version != &VERSION.to_string() {
            return Err(bad(format!(
                "format version {}, but this flopnet reads version {VERSION}; resume it with the flopnet that wrote it",
                version.escape_debug()
            )));
        }
        let meta: Meta = serde_json::from_str(field("meta")?).map_err(|e| bad(format!("unreadable meta ({e})")))?;
        let st =
            safetensors::SafeTensors::deserialize(bytes).map_err(|e| bad(format!("not a safetensors file ({e})")))?;
        let tensor = |name: &str| -> Result<Vec<f32>> {
            let t = st.tensor(name).map_err(|_| bad(format!("no tensor {name}")))?;
            if t.dtype() != safetensors::Dtype::F32 || t.shape().len() != 1 {
                return Err(bad(format!("{name} is {:?} {:?}, not a 1-D F32 tensor", t.dtype(), t.shape())));
            }
            Ok(t.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
        };
        let [params, first, second] = [tensor(TENSORS[0])?, tensor(TENSORS[1])?, tensor(TENSORS[2])?];
        let mut running = RunningStats::default();
        let mut expected = TENSORS.len();
        if st.names().contains(&RUNNING[0]) || st.names().contains(&RUNNING[1]) {
            running.values = tensor(RUNNING[0])?;
            let t = st.tensor(RUNNING[1]).map_err(|_| bad(format!("{} without {}", RUNNING[0], RUNNING[1])))?;
            if t.dtype() != safetensors::Dtype::I64 || t.shape().len() != 1 {
                return Err(bad(format!("{} is {:?} {:?}, not a 1-D I64 tensor", RUNNING[1], t.dtype(), t.shape())));
            }
            let counts = t.data().chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap_or_default()));
            running.batches = counts
                .map(|b| u64::try_from(b).map_err(|_| bad(format!("{} holds {b}", RUNNING[1]))))
                .collect::<Result<_>>()?;
            expected += RUNNING.len();
        }
        if st.len() != expected {
            return Err(bad(format!(
                "{} tensors, but a checkpoint holds {} (and {} with batch normalization)",
                st.len(),
                TENSORS.join(", "),
                RUNNING.join(", ")
            )));
        }
        Ok(Checkpoint { meta, params, first, second, running })
    }

    /// The checkpoint file inside `dir`.
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(FILE)
    }

    /// Writes `dir/checkpoint.safetensors` atomically, creating `dir` if needed.
    pub fn save(&self, dir: &Path) -> Result<PathBuf> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let path = Self::path(dir);
        crate::model::write_atomically(&path, &self.to_bytes())?;
        Ok(path)
    }

    pub fn load(dir: &Path) -> Result<Checkpoint> {
        let path = Self::path(dir);
        let old = dir.join(OLD_FILE);
        // An earlier flopnet's checkpoint is read only to say what it is: from_bytes refuses
        // the old layout by name.
        let path = if !path.exists() && old.exists() { old } else { path };
        // The file's bytes and the tensors copied out of them: at most 2 bytes of memory per byte.
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

    /// Errors unless this checkpoint was written by a run with the same network, loss,
    /// optimizer, learning rate, schedule, batch, seed, shuffling, starting weights and training
    /// data (and, under a cosine schedule, the same `--epochs`, which shapes every epoch's
    /// rate); names the first difference with both values. A constant rate may go on for more
    /// epochs than the run first asked for.
    pub fn check_matches(&self, now: &Meta, path: &Path) -> Result<()> {
        let m = &self.meta;
        let lr = |bits: u64| crate::train::show_lr(f64::from_bits(bits));
        let init = |i: &Option<Init>| match i {
            None => "no --init (seeded weights)".to_string(),
            Some(i) => format!("--init {} (CRC-32 {:08x})", i.path, i.crc),
        };
        let same_init = m.init.as_ref().map(|i| i.crc) == now.init.as_ref().map(|i| i.crc);
        let cosine = m.schedule == "cosine" || now.schedule == "cosine";
        let diffs = [
            ("network", m.spec == now.spec, m.spec.clone(), now.spec.clone()),
            ("--loss", m.loss == now.loss, m.loss.clone(), now.loss.clone()),
            ("--optimizer", m.optimizer == now.optimizer, m.optimizer.clone(), now.optimizer.clone()),
            ("--lr", m.lr_bits == now.lr_bits, lr(m.lr_bits), lr(now.lr_bits)),
            ("--schedule", m.schedule == now.schedule, m.schedule.clone(), now.schedule.clone()),
            (
                "--epochs (with a cosine schedule)",
                !cosine || m.epochs == now.epochs,
                m.epochs.to_string(),
                now.epochs.to_string(),
            ),
            ("--batch", m.batch == now.batch, m.batch.to_string(), now.batch.to_string()),
            ("--seed", m.seed == now.seed, m.seed.to_string(), now.seed.to_string()),
            ("shuffling", m.shuffle == now.shuffle, m.shuffle.to_string(), now.shuffle.to_string()),
            ("starting weights", same_init, init(&m.init), init(&now.init)),
            (
                "--normalize",
                m.normalize.is_none() || m.normalize == now.normalize,
                m.normalize.clone().unwrap_or_default(),
                now.normalize.clone().unwrap_or_default(),
            ),
            ("training examples", m.examples == now.examples, m.examples.to_string(), now.examples.to_string()),
            (
                "training data (CRC-32)",
                m.data_crc == now.data_crc,
                format!("{:08x}", m.data_crc),
                format!("{:08x}", now.data_crc),
            ),
        ];
        match diffs.into_iter().find(|(_, same, _, _)| !same) {
            None => Ok(()),
            Some((what, _, saved, given)) => Err(Error::Checkpoint {
                path: path.to_path_buf(),
                problem: format!(
                    "was saved with {what} {saved} but this run has {given}; resume with the command line that started it"
                ),
            }),
        }
    }
}

impl Checkpoint {
    /// A note when `now` uses other `--threads` than the checkpointed run: allowed, but the
    /// products then add in another order, so the result is not bitwise that of a run never
    /// interrupted.
    pub fn threads_note(&self, now: &Meta) -> Option<String> {
        (self.meta.threads != now.threads).then(|| {
            format!(
                "note: the checkpoint was saved with --threads {} and this run has {}; it continues, but not bit for bit as the uninterrupted run would have",
                self.meta.threads, now.threads
            )
        })
    }

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
        engine.set_running_stats(&self.running)?;
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

/// What a resumed run has left to do with `--epochs epochs`: `Ok(None)` when epochs remain,
/// `Ok(Some(note))` when the checkpoint has already finished them all (nothing is trained; the
/// run goes on to its test score and `--save`, and exits 0), an error when it has finished more
/// than `--epochs` asks for.
pub fn finished(c: &Checkpoint, epochs: usize, dir: &Path) -> Result<Option<String>> {
    let done = c.meta.epoch;
    match done.cmp(&epochs) {
        std::cmp::Ordering::Less => Ok(None),
        std::cmp::Ordering::Equal => Ok(Some(format!(
            "the checkpoint in {} has finished all {epochs} epochs: nothing left to train (give a larger --epochs to train on)",
            dir.display()
        ))),
        std::cmp::Ordering::Greater => Err(Error::Usage(format!(
            "the checkpoint in {} has finished {done} epochs, more than --epochs {epochs}; give --epochs {done} or more",
            dir.display()
        ))),
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
                schedule: "constant".into(),
                epochs: 3,
                init: None,
                normalize: None,
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
            running: RunningStats::default(),
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
        // Plain SGD keeps no moments: empty tensors.
        let sgd = Checkpoint { first: vec![], second: vec![], ..sample() };
        assert_eq!(Checkpoint::from_bytes(Path::new("c"), &sgd.to_bytes()).unwrap(), sgd);
        // The same state gives the same bytes, whatever order a hash map walks the metadata in.
        assert!((0..8).all(|_| c.to_bytes() == c.to_bytes()));
    }

    /// Anyone's safetensors reader opens it: named tensors, the run as JSON metadata.
    #[test]
    fn a_checkpoint_is_a_safetensors_file() {
        let c = sample();
        let bytes = c.to_bytes();
        assert_eq!(
            crate::model::tests::tensor_shapes(&bytes),
            [
                ("optimizer.first_moment".to_string(), vec![8]),
                ("optimizer.second_moment".to_string(), vec![8]),
                ("parameters".to_string(), vec![8]),
            ]
        );
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        let info = header.metadata().clone().unwrap();
        assert_eq!(info["format"], FORMAT);
        assert_eq!(info["version"], VERSION.to_string());
        let meta: serde_json::Value = serde_json::from_str(&info["meta"]).unwrap();
        assert_eq!(meta["spec"], "3-2:softmax");
        assert_eq!(info["crc32"].len(), 8);
    }

    /// `bytes` with `from` replaced by `to` in the header, and the CRC made right again.
    fn edited(bytes: &[u8], from: &str, to: &str) -> Vec<u8> {
        assert_eq!(from.len(), to.len(), "an edit of the same length");
        let mut b = bytes.to_vec();
        let i = b.windows(from.len()).position(|w| w == from.as_bytes()).unwrap();
        b[i..i + to.len()].copy_from_slice(to.as_bytes());
        let at = crc_field(&b).unwrap();
        let crc = format!("{:08x}", file_crc(&b, at));
        b[at..at + 8].copy_from_slice(crc.as_bytes());
        b
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
        let e = Checkpoint::from_bytes(p, &edited(&bytes, "\"version\":\"3\"", "\"version\":\"7\"")).unwrap_err();
        assert!(e.to_string().contains("format version 7, but this flopnet reads version 3"), "{e}");
        let e = Checkpoint::from_bytes(p, b"hello").unwrap_err().to_string();
        assert!(e.contains("not a flopnet checkpoint"), "{e}");
        let mut b = bytes.clone();
        let last = b.len() - 1;
        b[last] ^= 1;
        let e = Checkpoint::from_bytes(p, &b).unwrap_err().to_string();
        assert!(e.contains("checksum mismatch"), "{e}");
    }

    #[test]
    fn the_private_layout_of_earlier_flopnets_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let mut old = OLD_MAGIC.to_vec();
        old.extend_from_slice(&2u32.to_le_bytes());
        old.extend_from_slice(&[0; 40]);
        std::fs::write(dir.path().join(OLD_FILE), &old).unwrap();
        let e = Checkpoint::load(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("checkpoint.flopnet: written in the private layout of an earlier flopnet (format 2)"),
            "{e}"
        );
        assert!(e.contains("resume it with the flopnet that wrote it"), "{e}");
        // A new checkpoint beside it is the one read.
        sample().save(dir.path()).unwrap();
        assert_eq!(Checkpoint::load(dir.path()).unwrap(), sample());
    }

    #[test]
    fn mismatch_names_the_difference() {
        let c = sample();
        let mut now = c.meta.clone();
        assert!(c.check_matches(&now, Path::new("c")).is_ok());
        now.batch = 8;
        let e = c.check_matches(&now, Path::new("c")).unwrap_err().to_string();
        assert!(e.contains("--batch 4 but this run has 8"), "{e}");
        let differ = |change: &dyn Fn(&mut Meta)| {
            let mut now = c.meta.clone();
            change(&mut now);
            c.check_matches(&now, Path::new("c")).err().map(|e| e.to_string())
        };
        let e = differ(&|m| m.lr_bits = 0.01f64.to_bits()).unwrap();
        assert!(e.contains("--lr 0.001 but this run has 0.01"), "{e}");
        let e = differ(&|m| m.schedule = "cosine".into()).unwrap();
        assert!(e.contains("--schedule constant but this run has cosine"), "{e}");
        let init = Init { path: "a.safetensors".into(), crc: 7 };
        let e = differ(&|m| m.init = Some(init.clone())).unwrap();
        assert!(
            e.contains("no --init (seeded weights) but this run has --init a.safetensors (CRC-32 00000007)"),
            "{e}"
        );
        // A constant rate may run for more epochs; other threads are noted, not refused.
        assert_eq!(differ(&|m| (m.epochs, m.threads) = (9, 1)), None);
        let mut now = c.meta.clone();
        assert_eq!(c.threads_note(&now), None);
        now.threads = 1;
        assert!(c.threads_note(&now).unwrap().contains("--threads 2 and this run has 1"));
        let mut cosine = c.clone();
        cosine.meta.schedule = "cosine".into();
        let mut now = cosine.meta.clone();
        now.epochs = 9;
        let e = cosine.check_matches(&now, Path::new("c")).unwrap_err().to_string();
        assert!(e.contains("--epochs (with a cosine schedule) 3 but this run has 9"), "{e}");
    }
}
