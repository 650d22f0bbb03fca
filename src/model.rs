//! Model files: safetensors with PyTorch's `nn.Linear` and `nn.Conv2d` names and layouts.
//!
//! Tensors `layers.{i}.weight` ([out, in] for a dense layer, [F, C, kh, kw] for a convolution)
//! and `layers.{i}.bias` ([out] or [F]), `i` counting the layers with parameters from 0 (pooling
//! holds none and takes no number; on reading, numbers may have gaps, as `nn.Sequential` numbers
//! its activations too, and every tensor must be a layer's weight or bias); metadata `spec` holds the compact spec with every activation
//! written out, so `784-128:relu-10:softmax` is all a file written elsewhere (e.g. by PyTorch's
//! `safetensors.torch.save_file(..., metadata={"spec": ...})`) needs to load. Every tensor is
//! checked against its layer's shape. Without `spec` a dense network's shapes give the sizes and
//! `activations` (comma-separated), or relu/softmax, the rest; a convolutional file needs `spec`.
//!
//! A batch-norm layer's γ and β are its `weight` and `bias`, beside PyTorch's buffers
//! `layers.{i}.running_mean`, `layers.{i}.running_var` ([C], F32) and
//! `layers.{i}.num_batches_tracked` (an I64 scalar); a file without them starts batch norm at
//! mean 0, variance 1. A convolution without a bias has no `bias` tensor (files that store an
//! empty one still read). A network that is not a chain stores `spec` as a TOML network file
//! (see [`crate::spec::from_toml`]), every node named, and its display name as `label`.
//!
//! A file `train` writes also records what was done to the inputs (`normalize`: none, unit or
//! standard, with `normalize_mean` and `normalize_std` for standard, written so they read back
//! bit for bit) and the loss it was trained with (`loss`), so that `eval` scores the test set
//! exactly as `train` did. A file without them (PyTorch's) is read as before.

use crate::data::{Normalize, Scaling};
use crate::engine::RunningStats;
use crate::error::{Error, Result};
use crate::init::LayerParams;
use crate::spec::{self, Activation, Defaults, Kind, Layer, Loss, Shape, Spec};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

/// The format written into every file's metadata, for readers to check.
pub const FORMAT: &str = "flopnet-dense-1";
/// The same for a network with convolutions or pooling.
pub const FORMAT_CONV: &str = "flopnet-conv-1";

fn bad(path: &Path, problem: impl Into<String>) -> Error {
    Error::Model { path: path.to_path_buf(), problem: problem.into() }
}

fn le_bytes(v: &[f64]) -> Vec<u8> {
    v.iter().flat_map(|&x| (x as f32).to_le_bytes()).collect()
}

/// Writes `bytes` to `path` so that a crash leaves either the old file or the new one: a
/// temporary file beside it, flushed to disk, then renamed over it.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // The rename itself must reach the disk too.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

/// What a model file records besides the network and its tensors; `None` where it does not say.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Recorded {
    /// The scaling of the features the network was trained on.
    pub scaling: Option<Scaling>,
    /// The loss it was trained with.
    pub loss: Option<Loss>,
}

impl Recorded {
    pub(crate) fn write(&self, meta: &mut HashMap<String, String>) {
        if let Some(s) = self.scaling {
            meta.insert("normalize".into(), s.mode().to_string());
            if let Scaling::Standard { mean, std } = s {
                // Rust prints the shortest decimal that reads back as the same f64.
                meta.insert("normalize_mean".into(), mean.to_string());
                meta.insert("normalize_std".into(), std.to_string());
            }
        }
        if let Some(l) = self.loss {
            meta.insert("loss".into(), l.to_string());
        }
    }

    pub(crate) fn read(path: &Path, meta: &HashMap<String, String>) -> Result<Recorded> {
        let number = |key: &str| -> Result<f64> {
            let text = meta
                .get(key)
                .ok_or_else(|| bad(path, format!("metadata normalize is standard but {key} is missing")))?;
            text.trim()
                .parse::<f64>()
                .ok()
                .filter(|x| x.is_finite())
                .ok_or_else(|| bad(path, format!("metadata {key} is {text:?}, not a finite number")))
        };
        let scaling = match meta.get("normalize") {
            None => None,
            Some(text) => {
                Some(match text.parse::<Normalize>().map_err(|e| bad(path, format!("metadata normalize: {e}")))? {
                    Normalize::None => Scaling::None,
                    Normalize::Unit => Scaling::Unit,
                    Normalize::Standard => {
                        let (mean, std) = (number("normalize_mean")?, number("normalize_std")?);
                        if std <= 0.0 {
                            return Err(bad(
                                path,
                                format!("metadata normalize_std is {std}; a standard deviation is above 0"),
                            ));
                        }
                        Scaling::Standard { mean, std }
                    }
                })
            }
        };
        let loss = meta
            .get("loss")
            .map(|l| l.parse::<Loss>().map_err(|_| bad(path, format!("metadata loss is {l:?}; expected ce or mse"))))
            .transpose()?;
        Ok(Recorded { scaling, loss })
    }
}

/// The scaling `eval` applies to raw features for a model that records `recorded`, given the
/// `--normalize` asked for: the recorded one (with its training statistics), which an explicit
/// different mode may not override; `None` when the file does not say (the data's default or
/// `asked` applies).
pub fn eval_scaling(path: &Path, recorded: &Recorded, asked: Option<Normalize>) -> Result<Option<Scaling>> {
    if let Some(mode) = asked {
        same_scaling(path, recorded, mode, &format!("--normalize {mode}"))?;
    }
    Ok(recorded.scaling)
}

/// Errors when the file records a scaling of another mode than `mode`, which `what` (e.g.
/// `--normalize unit`, `this run`) applies: the network would read its inputs at another scale
/// than it was trained on.
pub fn same_scaling(path: &Path, recorded: &Recorded, mode: Normalize, what: &str) -> Result<()> {
    match recorded.scaling {
        Some(s) if s.mode() != mode => Err(Error::Usage(format!(
            "{what} scales the features {mode}, but {} was trained on features scaled {s}; give --normalize {}",
            path.display(),
            s.mode()
        ))),
        _ => Ok(()),
    }
}

/// Saves a network's parameters: `layers.{i}.weight` in [`Layer::weight_shape`] ([out, in] or
/// [F, C, kh, kw]) and `layers.{i}.bias`, `i` counting the layers that hold parameters.
pub fn save(path: &Path, spec: &Spec, params: &[LayerParams]) -> Result<()> {
    save_recorded(path, spec, params, &Recorded::default())
}

/// [`save`], with what training applied to the inputs and the loss in the metadata.
/// A path ending in `.onnx` is written as ONNX (see [`crate::onnx::save`]).
pub fn save_recorded(path: &Path, spec: &Spec, params: &[LayerParams], recorded: &Recorded) -> Result<()> {
    save_trained(path, spec, params, &RunningStats::default(), recorded)
}

/// [`save_recorded`] with batch normalization's running statistics (`Engine::running_stats`;
/// empty: PyTorch's starting values). A path ending in `.onnx` is written as ONNX.
pub fn save_trained(
    path: &Path,
    spec: &Spec,
    params: &[LayerParams],
    running: &RunningStats,
    recorded: &Recorded,
) -> Result<()> {
    if crate::onnx::is_onnx(path) {
        return crate::onnx::save(path, spec, params, &running.per_layer(spec)?, recorded);
    }
    if params.len() != spec.layers.len() {
        return Err(bad(
            path,
            format!("{} layers of parameters for {spec}, which has {}", params.len(), spec.layers.len()),
        ));
    }
    let norms = spec.layers.iter().filter(|l| l.kind == Kind::BatchNorm);
    let wanted: usize = norms.clone().map(|l| 2 * l.input.c).sum();
    let given = !running.batches.is_empty() || !running.values.is_empty();
    if given && (running.values.len() != wanted || running.batches.len() != norms.count()) {
        return Err(bad(path, format!("{} running statistics for {spec}, which keeps {wanted}", running.values.len())));
    }
    let f32_bytes = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
    let mut data: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    let (mut at_stat, mut norm) = (0, 0);
    for (i, (at, l)) in spec.weight_layers().enumerate() {
        let p = &params[at];
        data.push((format!("layers.{i}.weight"), Dtype::F32, l.weight_shape(), le_bytes(&p.weight)));
        if l.bias_count() > 0 {
            data.push((format!("layers.{i}.bias"), Dtype::F32, vec![l.bias_count()], le_bytes(&p.bias)));
        }
        if l.kind == Kind::BatchNorm {
            let c = l.input.c;
            let (mean, var, batches) = if given {
                let v = &running.values[at_stat..at_stat + 2 * c];
                (f32_bytes(&v[..c]), f32_bytes(&v[c..]), running.batches[norm])
            } else {
                (f32_bytes(&vec![0.0; c]), f32_bytes(&vec![1.0; c]), 0)
            };
            (at_stat, norm) = (at_stat + 2 * c, norm + 1);
            data.push((format!("layers.{i}.running_mean"), Dtype::F32, vec![c], mean));
            data.push((format!("layers.{i}.running_var"), Dtype::F32, vec![c], var));
            let tracked = (batches as i64).to_le_bytes().to_vec();
            data.push((format!("layers.{i}.num_batches_tracked"), Dtype::I64, vec![], tracked));
        }
    }
    let views = data
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            Ok((name.clone(), TensorView::new(*dtype, shape.clone(), bytes).map_err(|e| bad(path, e.to_string()))?))
        })
        .collect::<Result<Vec<_>>>()?;
    let acts: Vec<&str> = spec.layers.iter().map(|l| l.activation.name()).collect();
    let text = if spec.is_chain() { spec.to_string() } else { spec.to_toml() };
    let mut meta = HashMap::from([
        ("format".to_string(), if spec.is_convolutional() { FORMAT_CONV } else { FORMAT }.to_string()),
        ("spec".to_string(), text),
        ("activations".to_string(), acts.join(",")),
    ]);
    if !spec.is_chain() {
        meta.insert("label".to_string(), spec.to_string());
    }
    recorded.write(&mut meta);
    let bytes = safetensors::serialize(views, Some(meta)).map_err(|e| bad(path, e.to_string()))?;
    write_atomically(path, &canonical_header(&bytes).ok_or_else(|| bad(path, "serialised an unreadable header"))?)
}

/// The same file with its JSON header's keys in sorted order. The metadata arrives as a
/// `HashMap`, whose order changes from process to process; a model file must not, so that two
/// identical runs write identical bytes.
pub(crate) fn canonical_header(bytes: &[u8]) -> Option<Vec<u8>> {
    fn sorted(v: serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::Object(m) => {
                let mut entries: Vec<_> = m.into_iter().collect();
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                serde_json::Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
            }
            other => other,
        }
    }
    let n = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?) as usize;
    let header: serde_json::Value = serde_json::from_slice(bytes.get(8..8 + n)?).ok()?;
    let mut text = serde_json::to_vec(&sorted(header)).ok()?;
    // The format pads the header with spaces so the data starts 8-byte aligned.
    text.resize(text.len().div_ceil(8) * 8, b' ');
    let mut out = Vec::with_capacity(8 + text.len() + bytes.len() - 8 - n);
    out.extend_from_slice(&(text.len() as u64).to_le_bytes());
    out.extend_from_slice(&text);
    out.extend_from_slice(&bytes[8 + n..]);
    Some(out)
}

fn floats(path: &Path, name: &str, t: &TensorView) -> Result<Vec<f64>> {
    let d = t.data();
    match t.dtype() {
        Dtype::F32 => Ok(d.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64).collect()),
        Dtype::F64 => Ok(d.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8]))).collect()),
        other => {
            Err(bad(path, format!("tensor {name} is {other:?}; flopnet reads F32 or F64 (convert with .float())")))
        }
    }
}

/// Loads a network and its parameters.
pub fn load(path: &Path) -> Result<(Spec, Vec<LayerParams>)> {
    load_recorded(path).map(|(spec, params, _)| (spec, params))
}

/// [`load`], with what the file records of the inputs and the loss. A path ending in `.onnx`
/// is read as ONNX (see [`crate::onnx::read_model`]).
pub fn load_recorded(path: &Path) -> Result<(Spec, Vec<LayerParams>, Recorded)> {
    load_trained(path).map(|(spec, params, recorded, _)| (spec, params, recorded))
}

/// [`load_recorded`] with batch normalization's running statistics (for
/// `Engine::set_running_stats`). A path ending in `.onnx` is read as ONNX.
pub fn load_trained(path: &Path) -> Result<(Spec, Vec<LayerParams>, Recorded, RunningStats)> {
    if crate::onnx::is_onnx(path) {
        let m = crate::onnx::read_model(path)?;
        let pairs = m.stats.iter().map(|s| s.as_ref().map(|(m, v)| (m.as_slice(), v.as_slice())));
        let running = RunningStats::from_per_layer(&m.spec, pairs);
        return Ok((m.spec, m.params, m.recorded, running));
    }
    // A model's f32 values become f64 beside the file's bytes: 3 bytes of memory per byte.
    let what = "the memory available can load, at 3 bytes per byte of a model";
    let bytes = crate::files::read_input(path, crate::files::memory_limit(3), what, "pass the .safetensors file")
        .map_err(|e| bad(path, e.to_string()))?;
    read(path, &bytes)
}

/// Loads a model file's content held in memory; `path` only names it in messages.
pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<(Spec, Vec<LayerParams>)> {
    read(path, bytes).map(|(spec, params, _, _)| (spec, params))
}

fn read(path: &Path, bytes: &[u8]) -> Result<(Spec, Vec<LayerParams>, Recorded, RunningStats)> {
    let (_, meta) =
        SafeTensors::read_metadata(bytes).map_err(|e| bad(path, format!("not a safetensors file ({e})")))?;
    let st = SafeTensors::deserialize(bytes).map_err(|e| bad(path, format!("not a safetensors file ({e})")))?;
    let info = meta.metadata().clone().unwrap_or_default();
    if info.get("format").is_some_and(|f| f == crate::checkpoint::FORMAT) {
        return Err(bad(
            path,
            "is a training checkpoint, not a model file; finish its run with `flopnet train ... --resume DIR --save FILE` to get one",
        ));
    }
    let recorded = Recorded::read(path, &info)?;
    let names = layer_names(path, &st)?;
    match info.get("spec") {
        Some(text) => {
            let mut spec = if text.contains("[[layers]]") {
                spec::from_toml(text, "metadata spec", Defaults::default())
            } else {
                spec::parse(text, Defaults::default())
            }
            .map_err(|e| bad(path, format!("metadata spec: {e}")))?;
            if let Some(label) = info.get("label").filter(|_| !spec.is_chain()) {
                spec.label = Some(label.clone());
            }
            let params = with_spec(path, &st, &spec, &names)?;
            let running = running_stats(path, &st, &spec, &names)?;
            Ok((spec, params, recorded, running))
        }
        None => {
            if let Some(extra) = names.iter().find_map(|n| n.stats.first()) {
                return Err(bad(
                    path,
                    format!("holds {extra}, a batch norm's buffer, but no metadata spec to place it"),
                ));
            }
            without_spec(path, &st, &info, &names)
                .map(|(spec, params)| (spec, params, recorded, RunningStats::default()))
        }
    }
}

/// Batch normalization's buffers, per batch-norm layer; PyTorch's starting values where a file
/// has none.
fn running_stats(path: &Path, st: &SafeTensors, spec: &Spec, names: &[Names]) -> Result<RunningStats> {
    let mut out = RunningStats::default();
    for ((at, l), n) in spec.weight_layers().zip(names) {
        if l.kind != Kind::BatchNorm {
            if let Some(extra) = n.stats.first() {
                return Err(bad(
                    path,
                    format!("holds {extra}, but layer {} ({l}) of the metadata spec is no batch norm", at + 1),
                ));
            }
            continue;
        }
        let c = l.input.c;
        let find = |what: &str| n.stats.iter().find(|s| s.ends_with(what)).map(|s| (s, st.tensor(s)));
        let mut vector = |what: &str, start: f32| -> Result<()> {
            match find(what) {
                None => out.values.extend(std::iter::repeat_n(start, c)),
                Some((name, t)) => {
                    let t = t.map_err(|e| bad(path, format!("{name}: {e}")))?;
                    if t.shape() != [c] {
                        return Err(bad(
                            path,
                            format!("{name} has shape {:?} but the layer has {c} channels", t.shape()),
                        ));
                    }
                    out.values.extend(floats(path, name, &t)?.into_iter().map(|v| v as f32));
                }
            }
            Ok(())
        };
        vector("running_mean", 0.0)?;
        vector("running_var", 1.0)?;
        let batches = match find("num_batches_tracked") {
            None => 0,
            Some((name, t)) => {
                let t = t.map_err(|e| bad(path, format!("{name}: {e}")))?;
                let d = t.data();
                match (t.dtype(), d.len()) {
                    (Dtype::I64, 8) => u64::try_from(i64::from_le_bytes(d.try_into().unwrap_or_default())).ok(),
                    _ => None,
                }
                .ok_or_else(|| {
                    bad(path, format!("{name} is {:?} {:?}; expected one I64 count of 0 or more", t.dtype(), t.shape()))
                })?
            }
        };
        out.batches.push(batches);
    }
    Ok(out)
}

/// One numbered layer's tensors: its weight, its bias (none for a convolution without one) and
/// batch norm's buffers (`running_mean`, `running_var`, `num_batches_tracked`).
struct Names {
    weight: String,
    bias: Option<String>,
    stats: Vec<String>,
}

/// The buffers batch norm keeps beside its weight and bias, as PyTorch names them.
const BUFFERS: [&str; 3] = ["running_mean", "running_var", "num_batches_tracked"];

/// The weight and bias tensors' names, in the order of their layer numbers. Numbers may have
/// gaps: PyTorch numbers every module of an `nn.Sequential`, so Linear, ReLU, Linear saves
/// `layers.0` and `layers.2`. The names share one prefix (`layers.`, or none for a bare
/// `nn.Sequential`'s state dict), and every tensor in the file must be read: one that is not
/// a layer's weight, bias or batch-norm buffer is an error, never silently left out of the
/// network.
fn layer_names(path: &Path, st: &SafeTensors) -> Result<Vec<Names>> {
    const EXPECTED: &str = "flopnet reads layers.{i}.weight ([out, in], or [F, C, kh, kw] for a convolution) and layers.{i}.bias (and a batch norm's running_mean, running_var and num_batches_tracked), i counting up (gaps allowed, as nn.Sequential numbers its activations)";
    // "layers.12.weight" -> ("layers.", 12, 0); 1 for a bias, 2 for a buffer
    let split = |name: &str| -> Option<(String, u64, usize)> {
        let (stem, kind) = name.rsplit_once('.')?;
        let role = match kind {
            "weight" => 0,
            "bias" => 1,
            k if BUFFERS.contains(&k) => 2,
            _ => return None,
        };
        let digits = stem.len() - stem.bytes().rev().take_while(u8::is_ascii_digit).count();
        let (prefix, number) = stem.split_at(digits);
        if !(prefix.is_empty() || prefix.ends_with('.')) || (number.len() > 1 && number.starts_with('0')) {
            return None;
        }
        Some((prefix.to_string(), number.parse().ok()?, role))
    };
    let mut names: Vec<&str> = st.names();
    names.sort();
    type Found = (Option<String>, Option<String>, Vec<String>);
    let (mut layers, mut unread) = (std::collections::BTreeMap::<u64, Found>::new(), Vec::new());
    let mut prefixes = std::collections::BTreeSet::new();
    for name in &names {
        match split(name) {
            Some((prefix, i, role)) => {
                prefixes.insert(prefix);
                let entry = layers.entry(i).or_default();
                match role {
                    0 => entry.0 = Some(name.to_string()),
                    1 => entry.1 = Some(name.to_string()),
                    _ => entry.2.push(name.to_string()),
                }
            }
            None => unread.push(*name),
        }
    }
    // Buffers of a number that holds no weight or bias belong to no layer.
    layers.retain(|_, (w, b, stats)| {
        let alone = w.is_none() && b.is_none();
        if alone {
            unread.extend(stats.iter().map(|n| names.iter().find(|m| **m == n.as_str()).copied().unwrap_or_default()));
        }
        !alone
    });
    unread.sort();
    if !unread.is_empty() {
        let shown: Vec<String> = unread.iter().take(5).map(|n| n.escape_debug().to_string()).collect();
        let more = if unread.len() > 5 { format!(" and {} more", unread.len() - 5) } else { String::new() };
        return Err(bad(
            path,
            format!("holds tensors that are no layer's weight or bias: {}{more}; {EXPECTED}", shown.join(", ")),
        ));
    }
    if prefixes.len() > 1 {
        let p: Vec<String> = prefixes.iter().map(|p| format!("{p:?}")).collect();
        return Err(bad(
            path,
            format!("its tensor names start with different prefixes ({}); {EXPECTED}", p.join(", ")),
        ));
    }
    if layers.is_empty() {
        return Err(bad(path, format!("holds no tensor named layers.0.weight; {EXPECTED}")));
    }
    layers
        .into_values()
        .map(|(weight, bias, stats)| match (weight, bias) {
            (Some(weight), bias) => Ok(Names { weight, bias, stats }),
            (None, b) => {
                let b = b.or(stats.first().cloned()).unwrap_or_default();
                let (stem, _) = b.rsplit_once('.').unwrap_or_default();
                Err(bad(path, format!("{b} has no {stem}.weight beside it")))
            }
        })
        .collect()
}

/// The bias tensor `n` names, or the message for one missing.
fn bias_name<'a>(path: &Path, n: &'a Names) -> Result<&'a str> {
    n.bias.as_deref().ok_or_else(|| {
        let b = format!("{}bias", n.weight.trim_end_matches("weight"));
        bad(path, format!("{} has no {b} beside it", n.weight))
    })
}

/// Reads the tensors the metadata spec calls for, each checked against its layer's shape; one
/// [`LayerParams`] per layer, empty for pooling.
fn with_spec(path: &Path, st: &SafeTensors, spec: &Spec, names: &[Names]) -> Result<Vec<LayerParams>> {
    let wanted = spec.weight_layers().count();
    let tensors = names.len();
    if wanted != tensors {
        return Err(bad(
            path,
            format!(
                "holds {tensors} weight tensor{} ({} to {}) but its metadata spec {spec} has {wanted} layer{} with parameters",
                if tensors == 1 { "" } else { "s" },
                names[0].weight,
                names[tensors - 1].weight,
                if wanted == 1 { "" } else { "s" }
            ),
        ));
    }
    let mut params = vec![LayerParams { weight: Vec::new(), bias: Vec::new() }; spec.layers.len()];
    for ((at, l), n) in spec.weight_layers().zip(names) {
        let wn = &n.weight;
        let w = st.tensor(wn).map_err(|e| bad(path, format!("{wn}: {e}")))?;
        if n.bias.is_none() && l.bias_count() == 0 {
            if w.shape() != l.weight_shape().as_slice() {
                return Err(bad(
                    path,
                    format!("{wn} has shape {:?} but layer {} ({l}) wants {:?}", w.shape(), at + 1, l.weight_shape()),
                ));
            }
            params[at] = LayerParams { weight: floats(path, wn, &w)?, bias: Vec::new() };
            continue;
        }
        let bn = bias_name(path, n)?;
        let b = st.tensor(bn).map_err(|e| bad(path, format!("{bn}: {e}")))?;
        let layout = if l.is_dense() { "[out, in]" } else { "[F, C, kh, kw], as nn.Conv2d" };
        let what = format!("layer {} ({}) of the metadata spec {spec}", at + 1, l);
        if w.shape() != l.weight_shape().as_slice() {
            return Err(bad(
                path,
                format!("{wn} has shape {:?} but {what} wants {:?} {layout}", w.shape(), l.weight_shape()),
            ));
        }
        if b.shape() != [l.bias_count()] {
            return Err(bad(path, format!("{bn} has shape {:?} but {what} wants [{}]", b.shape(), l.bias_count())));
        }
        params[at] = LayerParams { weight: floats(path, wn, &w)?, bias: floats(path, bn, &b)? };
    }
    Ok(params)
}

/// A dense network read from the tensors' shapes alone, with `activations` (comma-separated) or
/// relu and softmax. A convolution's shapes cannot be recovered this way (stride, padding, the
/// image size and the pooling are not in the tensors), so a 4-D weight asks for the spec.
fn without_spec(
    path: &Path,
    st: &SafeTensors,
    info: &HashMap<String, String>,
    names: &[Names],
) -> Result<(Spec, Vec<LayerParams>)> {
    let layers = names.len();
    let mut sizes: Vec<(usize, usize)> = Vec::with_capacity(layers);
    let mut params = Vec::with_capacity(layers);
    for (i, n) in names.iter().enumerate() {
        let (wn, bn) = (&n.weight, bias_name(path, n)?);
        let w = st.tensor(wn).map_err(|e| bad(path, format!("{wn}: {e}")))?;
        let b = st.tensor(bn).map_err(|e| bad(path, format!("{bn}: {e}")))?;
        let (out, inp) = match *w.shape() {
            [o, n] => (o, n),
            [_, _, _, _] => {
                return Err(bad(
                    path,
                    format!(
                        "{wn} has shape {:?}, a convolution kernel, and the file has no `spec` in its metadata; a convolutional network's strides, padding, pooling and image size are not in its tensors, so save it with metadata {{\"spec\": \"1x28x28-conv5x5x32p2:relu-maxpool2-...\"}} (the compact spec, every layer written out)",
                        w.shape()
                    ),
                ));
            }
            ref s => return Err(bad(path, format!("{wn} has shape {s:?}; expected [out, in] or [F, C, kh, kw]"))),
        };
        if b.shape() != [out] {
            return Err(bad(path, format!("{bn} has shape {:?}; expected [{out}] to match {wn}", b.shape())));
        }
        if let Some(&(_, prev_out)) = sizes.last()
            && prev_out != inp
        {
            return Err(bad(
                path,
                format!("{wn} reads {inp} inputs but {} before it has {prev_out} outputs", names[i - 1].weight),
            ));
        }
        sizes.push((inp, out));
        params.push(LayerParams { weight: floats(path, wn, &w)?, bias: floats(path, bn, &b)? });
    }
    let acts: Vec<Option<Activation>> = match info.get("activations") {
        Some(a) => {
            a.split(',').map(|s| s.trim().parse().map(Some).map_err(|e: String| bad(path, e))).collect::<Result<_>>()?
        }
        None => vec![None; layers],
    };
    if acts.len() != layers {
        return Err(bad(
            path,
            format!(
                "metadata activations names {} activation{} for the {layers} layer{} its tensors hold ({} to {})",
                acts.len(),
                if acts.len() == 1 { "" } else { "s" },
                if layers == 1 { "" } else { "s" },
                names[0].weight,
                names[layers - 1].weight
            ),
        ));
    }
    let d = Defaults::default();
    let layers = sizes
        .iter()
        .enumerate()
        .map(|(i, &(inputs, outputs))| {
            let fallback = if i + 1 == sizes.len() { d.output } else { d.hidden };
            Layer::dense(inputs, outputs, acts.get(i).copied().flatten().unwrap_or(fallback))
        })
        .collect();
    Ok((Spec::new(Shape::flat(sizes[0].0), layers), params))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The tensors of a safetensors file, by name, with their shapes.
    pub(crate) fn tensor_shapes(bytes: &[u8]) -> Vec<(String, Vec<usize>)> {
        let st = SafeTensors::deserialize(bytes).unwrap();
        let mut names: Vec<(String, Vec<usize>)> =
            st.tensors().into_iter().map(|(n, t)| (n, t.shape().to_vec())).collect();
        names.sort();
        names
    }

    /// A temporary directory, a file path in it, a small network and its initial parameters.
    fn small() -> (tempfile::TempDir, std::path::PathBuf, Spec, Vec<LayerParams>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        let spec = spec::parse("5-4:tanh-3:softmax", Defaults::default()).unwrap();
        let params = crate::init::init(&spec, 3);
        (dir, path, spec, params)
    }

    #[test]
    fn round_trip_and_shape_checks() {
        let (_dir, path, spec, params) = small();
        save(&path, &spec, &params).unwrap();
        let (s2, p2) = load(&path).unwrap();
        assert_eq!(s2, spec);
        assert_eq!(p2, params, "f32-rounded initial weights survive exactly");
        // The same model gives the same bytes, whatever order a hash map walks its metadata in.
        let bytes = std::fs::read(&path).unwrap();
        for _ in 0..8 {
            save(&path, &spec, &params).unwrap();
            assert!(std::fs::read(&path).unwrap() == bytes, "a model file's bytes differ between saves");
        }
        std::fs::write(&path, b"garbage").unwrap();
        assert!(load(&path).unwrap_err().to_string().contains("not a safetensors file"));
    }

    #[test]
    fn the_inputs_scaling_and_the_loss_read_back_bit_for_bit() {
        let (dir, path, spec, params) = small();
        for scaling in [
            Scaling::Standard { mean: 0.1 + 0.2, std: 1.0 / 3.0 },
            Scaling::Standard { mean: -7.25e-300, std: 5e300 },
            Scaling::Unit,
            Scaling::None,
        ] {
            let r = Recorded { scaling: Some(scaling), loss: Some(Loss::Mse) };
            save_recorded(&path, &spec, &params, &r).unwrap();
            assert_eq!(load_recorded(&path).unwrap(), (spec.clone(), params.clone(), r));
        }
        save(&path, &spec, &params).unwrap();
        assert_eq!(load_recorded(&path).unwrap().2, Recorded::default(), "a file that does not say");
        // Statistics that cannot be applied are refused, naming the key.
        for (key, value, says) in [
            ("normalize_std", "0", "above 0"),
            ("normalize_std", "NaN", "not a finite number"),
            ("normalize_mean", "inf", "not a finite number"),
            ("normalize", "z", "unknown normalisation"),
        ] {
            let mut meta = HashMap::from([
                ("spec".to_string(), spec.to_string()),
                ("normalize".to_string(), "standard".to_string()),
                ("normalize_mean".to_string(), "1".to_string()),
                ("normalize_std".to_string(), "2".to_string()),
            ]);
            meta.insert(key.to_string(), value.to_string());
            let bytes = std::fs::read(&path).unwrap();
            let st = SafeTensors::deserialize(&bytes).unwrap();
            let views: Vec<(String, TensorView)> = st.tensors();
            std::fs::write(dir.path().join("bad"), safetensors::serialize(views, Some(meta)).unwrap()).unwrap();
            let e = load(&dir.path().join("bad")).unwrap_err().to_string();
            assert!(e.contains(key) && e.contains(says), "{e}");
        }
    }

    #[test]
    fn a_cnn_round_trips_with_pytorch_shapes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cnn.safetensors");
        let spec =
            spec::parse("1x8x8-conv3x3x4p1:relu-maxpool2-conv3x3x6:tanh-avgpool2-5", Defaults::default()).unwrap();
        let params = crate::init::init(&spec, 7);
        save(&path, &spec, &params).unwrap();
        assert_eq!(
            tensor_shapes(&std::fs::read(&path).unwrap()),
            [
                ("layers.0.bias".to_string(), vec![4]),
                ("layers.0.weight".to_string(), vec![4, 1, 3, 3]),
                ("layers.1.bias".to_string(), vec![6]),
                ("layers.1.weight".to_string(), vec![6, 4, 3, 3]),
                ("layers.2.bias".to_string(), vec![5]),
                ("layers.2.weight".to_string(), vec![5, 6]),
            ]
        );
        let (s2, p2) = load(&path).unwrap();
        assert_eq!(s2, spec);
        assert_eq!(p2, params, "one LayerParams per layer, empty for pooling");
        assert!(p2[1].weight.is_empty() && p2[3].bias.is_empty());
    }

    fn write(path: &Path, tensors: &[(&str, Vec<usize>)], spec: Option<&str>) {
        let data: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
            .iter()
            .map(|(n, s)| (n.to_string(), s.clone(), vec![0u8; 4 * s.iter().product::<usize>()]))
            .collect();
        let views: Vec<_> =
            data.iter().map(|(n, s, b)| (n.clone(), TensorView::new(Dtype::F32, s.clone(), b).unwrap())).collect();
        let meta = spec.map(|s| HashMap::from([("spec".to_string(), s.to_string())]));
        std::fs::write(path, safetensors::serialize(views, meta).unwrap()).unwrap();
    }

    #[test]
    fn cnn_files_name_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.safetensors");
        let spec = "1x8x8-conv3x3x4:relu-maxpool2-5:softmax";
        let good = [
            ("layers.0.weight", vec![4, 1, 3, 3]),
            ("layers.0.bias", vec![4]),
            ("layers.1.weight", vec![5, 36]),
            ("layers.1.bias", vec![5]),
        ];
        write(&path, &good, Some(spec));
        assert_eq!(load(&path).unwrap().0.to_string(), spec);
        // No spec: the kernel's shape says convolution, and the message names the fix.
        write(&path, &good, None);
        let e = load(&path).unwrap_err().to_string();
        assert!(e.contains("layers.0.weight has shape [4, 1, 3, 3]") && e.contains("\"spec\""), "{e}");
        // A kernel of the wrong size.
        let mut wrong = good.clone();
        wrong[0].1 = vec![4, 1, 5, 5];
        write(&path, &wrong, Some(spec));
        let e = load(&path).unwrap_err().to_string();
        assert!(e.contains("layers.0.weight has shape [4, 1, 5, 5]") && e.contains("wants [4, 1, 3, 3]"), "{e}");
        // The dense layer after the pooling reads 4x3x3 = 36 values.
        let mut wrong = good.clone();
        wrong[2].1 = vec![5, 64];
        write(&path, &wrong, Some(spec));
        let e = load(&path).unwrap_err().to_string();
        assert!(e.contains("layers.1.weight has shape [5, 64]") && e.contains("wants [5, 36]"), "{e}");
        let mut wrong = good.clone();
        wrong[1].1 = vec![3];
        write(&path, &wrong, Some(spec));
        let e = load(&path).unwrap_err().to_string();
        assert!(e.contains("layers.0.bias has shape [3]") && e.contains("wants [4]"), "{e}");
        // A tensor too few for the spec.
        write(&path, &good[..2], Some(spec));
        let e = load(&path).unwrap_err().to_string();
        assert!(e.contains("holds 1 weight tensor") && e.contains("has 2 layers with parameters"), "{e}");
    }
}
