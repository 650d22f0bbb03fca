//! A machine profile: what `calibrate` measured, saved as JSON in the user's cache directory.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Bumped whenever the fields or what they mean change; an older file is rebuilt, not trusted.
pub const VERSION: u32 = 18;

/// Matrix-product throughput at one shape: C[m×n] = A[m×k]·B[k×n].
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct GemmPoint {
    pub m: usize,
    pub k: usize,
    pub n: usize,
    pub gflops: f64,
}

/// Seconds per element (or per parameter) of a streaming pass, at a working-set size.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StreamPoint {
    pub bytes: f64,
    pub seconds_per_item: f64,
}

/// The engine's convolution throughput at one reference shape of `window` = C·kh·kw values,
/// GFLOP/s of each product (2 · B·H'·W' · C·kh·kw · F): the forward, the weight gradient (with
/// the bias gradient) and the input gradient.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ConvRates {
    pub window: usize,
    pub filters: usize,
    /// Output positions per example (H'·W') of the reference shape: where a window was measured
    /// at more than one plane, the model places a layer between them by its own.
    #[serde(default)]
    pub plane: usize,
    pub forward: f64,
    pub weight_grad: f64,
    pub input_grad: f64,
    /// The reference's input channels, side (its planes are square), kernel (k×k, padded by
    /// k/2) and stride (profile format 14; 0 where not recorded): the model asks the engine
    /// which kernel each pass of it ran (`conv::Tiles::passes`) and prices a layer's pass from
    /// the references that ran the same one.
    #[serde(default)]
    pub channels: usize,
    #[serde(default)]
    pub side: usize,
    #[serde(default)]
    pub kernel: usize,
    #[serde(default)]
    pub stride: usize,
    /// The batch it was timed at (profile format 15; 0 where not recorded): where a shape was
    /// measured at several, the model places a layer between them by its own batch.
    #[serde(default)]
    pub batch: usize,
}

/// The engine's sparse backward (`engine::sparse`) at one reference shape of `window` values:
/// each gradient's seconds per dense GFLOP (2 · B·H'·W' · C·kh·kw · F) as `(a, b)` in a + b·ρ,
/// ρ the share of nonzero δ (fitted through two shares): a is the part every value of δ costs
/// (reordering, scanning), b the part only the nonzero ones do. Measured at two filter counts
/// per window (since profile format 15), as the dense references are.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct SparseRates {
    pub window: usize,
    #[serde(default)]
    pub filters: usize,
    pub weight_grad: (f64, f64),
    pub input_grad: (f64, f64),
}

/// The engine's 2×2 max pooling (stride 2) over planes of `plane` = H·W values: seconds per
/// input value, forward (maximum and argmax) and backward (gradient routed to the argmax).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct PoolRates {
    pub plane: usize,
    pub forward: f64,
    pub backward: f64,
}

/// The engine's change of layout between an image layer's channel-major values and a dense
/// layer's rows, copied `chunk` = H·W values at a time: seconds per value, each way.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct RegroupRates {
    pub chunk: usize,
    pub to_rows: f64,
    pub to_channels: f64,
}

/// The graph path's per-value work over channel-major values ([C][B·P], 64 channels), at one
/// size of `values` per array, seconds per value, each through the engine's own code:
/// batch normalization in training (`engine::norm`: forward, backward with and without the
/// input gradient) and at evaluation (one pass with the running statistics); relu applied in place and its derivative applied to a gradient in place
/// (the separate activation passes of batch-norm, sum and pooling nodes); `add` (y += x: a
/// sum's further input, a gradient added over fan-out) and `copy` (concat, a gradient handed
/// on), split across the team as the graph path runs them (format 13 timed them on one
/// thread); `sum`, a sum node's forward in one pass; global average pooling
/// over planes of 8×8 (`engine::gap`), per input value, forward and backward, and forward over
/// planes of 32×32.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct PassRates {
    pub values: usize,
    pub norm_forward: f64,
    pub norm_backward: f64,
    pub norm_grads: f64,
    pub norm_infer: f64,
    pub relu_forward: f64,
    pub relu_backward: f64,
    pub add: f64,
    pub copy: f64,
    /// A sum node's forward (profile format 14): the first input copied, the second added and
    /// relu applied, run by run across the team, as the graph path's one pass does it.
    #[serde(default)]
    pub sum: f64,
    pub mean_forward: f64,
    pub mean_backward: f64,
    /// Global average pooling's forward over planes of 32×32 (one sum after another on one
    /// thread: longer planes overlap less), per input value.
    pub mean_forward_wide: f64,
}

/// A depthwise convolution (one k×k filter per channel) at one reference shape: seconds per
/// output value and window value (B·C·H'·W' · kh·kw) of the forward, the weight gradient and
/// the input gradient, at a `stride` over input planes of `plane` = H·W values (the engine's
/// kernel works on the padded plane, so small planes and strides cost more per tap).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct DepthwiseRates {
    pub window: usize,
    pub stride: usize,
    pub plane: usize,
    pub forward: f64,
    pub weight_grad: f64,
    pub input_grad: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Profile {
    pub version: u32,
    /// Which machine and build measured it: a profile from elsewhere is stale.
    pub machine: String,
    pub threads: usize,
    /// Unix seconds when measured.
    pub created: u64,
    /// Per product layout (forward X·Wᵀ, weight gradient deltaᵀ·X, input gradient delta·W), the
    /// grid measured with `threads` threads.
    pub forward: Vec<GemmPoint>,
    pub weight_grad: Vec<GemmPoint>,
    pub input_grad: Vec<GemmPoint>,
    /// A read-modify-write pass (y += a·x) by working set: memory bandwidth at each cache level.
    pub stream: Vec<StreamPoint>,
    /// Optimizer updates, seconds per parameter by working set.
    pub sgd: Vec<StreamPoint>,
    pub momentum: Vec<StreamPoint>,
    pub adam: Vec<StreamPoint>,
    /// Extra seconds per value for each activation, forward and backward, over identity.
    pub activation_forward: Vec<(String, f64)>,
    pub activation_backward: Vec<(String, f64)>,
    /// Fixed seconds per training step (a 1-1 network's step).
    pub step_overhead: f64,
    /// Convolutions: stride-1 layers over many window values (the engine's panel product or
    /// shifted rows; 8x16x16, 8x32x32, 16x13x13 and 16x32x32 with 3×3 kernels, 8x28x28 and
    /// 8x32x32 (format 14) and 32x14x14 with 5×5), and over few
    /// (1x28x28 with 3×3 and 5×5, 32x28x28 with 1×1),
    /// each list by window size and, at each window, two filter counts (a quarter of the
    /// other, so the time of forming windows and of the products can be told apart).
    pub conv_panel: Vec<ConvRates>,
    pub conv_small: Vec<ConvRates>,
    /// The sparse backward at the panel shapes (8x16x16, 16x13x13 and 32x14x14; empty where the
    /// CPU has no sparse path).
    pub conv_sparse: Vec<SparseRates>,
    /// The one-example fused updates (SGD, momentum) of a dense layer, seconds per parameter by
    /// working set.
    pub sgd_fused: Vec<StreamPoint>,
    pub momentum_fused: Vec<StreamPoint>,
    /// Fixed seconds per layer and step that the rest of the model leaves out: a 6-layer 1-wide
    /// network's measured step, less the 1-layer one's, less what the model predicts for the
    /// difference, over the five layers (never below 0).
    pub layer_overhead: f64,
    /// Pooling at two plane sizes (26×26 and 11×11), and the layout changes at two chunk sizes
    /// (5×5 and 32×32), each list by size.
    pub pool: Vec<PoolRates>,
    pub regroup: Vec<RegroupRates>,
    /// Strided convolutions over more than 64 window values (im2col tiles and the packed
    /// product; 16x16x16 and 64x16x16 with 3×3 kernels at stride 2), by window size.
    pub conv_strided: Vec<ConvRates>,
    /// Depthwise convolutions (the engine's kernel): 3×3 and 5×5 over 32x16x16 at stride 1,
    /// 3×3 over 192x4x4 and 384x2x2 at stride 1, and 3×3 over 64x16x16 and 192x4x4 at
    /// stride 2, all at batch 32.
    pub depthwise: Vec<DepthwiseRates>,
    /// 1×1 convolutions the engine runs as plain products on x (`Tiles::pointwise`), through
    /// its convolution passes: 96x16x16 with 24 and 96 filters and 384x4x4 with 64 and 256, at
    /// batch 32, by window size (C).
    pub conv_pointwise: Vec<ConvRates>,
    /// The graph path's per-value work at three sizes (256 KiB, 2 MiB and 16 MiB an array), by
    /// size, each call on arrays out of cache (the calls on other arrays have evicted them).
    pub passes: Vec<PassRates>,
    /// The same work on arrays the previous call left in cache (profile format 16): what a step
    /// whose whole working set fits in the last-level cache finds.
    #[serde(default)]
    pub passes_warm: Vec<PassRates>,
    /// The last-level cache's size in bytes, as Linux reported it to calibrate (format 16).
    #[serde(default)]
    pub last_level_cache: usize,
    /// Max pooling with padding (3×3, stride 2, padding 1, over 32 planes of 16×16 at batch 32:
    /// `engine::padpool`), per input value.
    pub pool_padded: PoolRates,
    /// Dropout's mask (drawn as the engine draws it, ChaCha8, one f64 a value) and product,
    /// seconds per value, forward; its backward is a product with the mask (`passes`' add).
    pub dropout: f64,
    /// Measured by `calibrate --quick` (what a first run does on its own): one pass of each
    /// table, rough enough that `train` does not print predictions from it.
    #[serde(default)]
    pub quick: bool,
    /// The kernel path measured (`engine::simd::Path`: avx512, avx2, scalar) and its arithmetic
    /// ceiling with `threads` threads, GFLOP/s (`engine::simd::fma_ceiling`).
    pub simd: String,
    pub fma_ceiling: f64,
}

/// What identifies this machine and build: CPU model, core count, flopnet version, kernel path
/// (each path is calibrated on its own: `FLOPNET_SIMD=avx2` times other kernels).
pub fn machine_id() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let path = crate::engine::simd::path();
    format!("{cpu} / {} cores / flopnet {} / {path} kernels", crate::sys::cores(), env!("CARGO_PKG_VERSION"))
}

/// `$XDG_CACHE_HOME/flopnet/profile-PATH-T.json` (or the platform's cache directory), PATH the
/// kernel path in use.
pub fn default_path(threads: usize) -> PathBuf {
    let path = crate::engine::simd::path();
    dirs::cache_dir().unwrap_or_else(std::env::temp_dir).join("flopnet").join(format!("profile-{path}-{threads}.json"))
}

/// Refuses a `path` that holds something other than a flopnet profile (of any version): a
/// profile is written over only when it is one, so a model, data or metrics file given to
/// `--profile` by mistake is never lost. A path with nothing there passes.
pub fn check_replaceable(path: &Path) -> Result<()> {
    let own_cache = default_path(1).parent().map(Path::to_path_buf);
    let cached = path.parent().is_some_and(|d| Some(d) == own_cache.as_deref());
    if std::fs::symlink_metadata(path).is_err() {
        // flopnet makes its own cache directory; a directory the user names must exist, as for
        // every other output (a typo would otherwise create a tree of directories).
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        if !cached && !dir.is_dir() {
            return Err(Error::Usage(format!(
                "--profile {}: the directory {} does not exist; create it first",
                path.display(),
                dir.display()
            )));
        }
        return Ok(());
    }
    let refuse = |what: &str| {
        Err(Error::input(
            path,
            format!(
                "{what}; it is not a flopnet profile, and flopnet writes the profile it measures there, so it refuses; give a new file name to --profile, or delete the file"
            ),
        ))
    };
    if path.is_dir() {
        return refuse("is a directory");
    }
    let bytes = match crate::files::read_input(path, crate::files::TEXT_LIMIT, "a profile may hold", "") {
        Ok(b) => b,
        Err(e) => return refuse(&e.to_string()),
    };
    let is_profile = serde_json::from_slice::<serde_json::Value>(&bytes).is_ok_and(|v| {
        v.get("version").is_some_and(|v| v.is_u64())
            && v.get("machine").is_some_and(|m| m.is_string())
            && v.get("threads").is_some_and(|t| t.is_u64())
    });
    // A damaged profile (cut short) still starts as one: the fields come in this order.
    let damaged = bytes.starts_with(b"{") && {
        let text = String::from_utf8_lossy(&bytes);
        matches!((text.find("\"version\":"), text.find("\"machine\":")), (Some(v), Some(m)) if v < m)
    };
    // Flopnet's own cache directory holds nothing else.
    if is_profile || damaged || cached { Ok(()) } else { refuse("holds something else") }
}

impl Profile {
    /// The best matrix-product rate measured at any shape and layout, GFLOP/s.
    pub fn peak_gflops(&self) -> f64 {
        self.forward.iter().chain(&self.weight_grad).chain(&self.input_grad).map(|g| g.gflops).fold(0.0, f64::max)
    }

    /// Reads a profile; `Ok(None)` when it is missing, stale (other machine, version or thread
    /// count) or corrupt — the caller then calibrates again. The reason is returned beside it.
    pub fn load(path: &Path, threads: usize) -> (Option<Profile>, Option<String>) {
        if !path.exists() {
            return (None, None);
        }
        let text = match crate::files::read_text(path, crate::files::TEXT_LIMIT, "a profile may hold", "") {
            Ok(t) => t,
            Err(e) => return (None, Some(format!("{e}; measuring again"))),
        };
        let p: Profile = match serde_json::from_str(&text) {
            Ok(p) => p,
            Err(e) => return (None, Some(format!("{} is corrupt ({e}); measuring again", path.display()))),
        };
        let stale = if p.version != VERSION {
            Some(format!("format {} (now {VERSION})", p.version))
        } else if p.machine != machine_id() {
            Some(format!("measured on {}", p.machine))
        } else if p.threads != threads {
            Some(format!("measured with {} threads", p.threads))
        } else if p.forward.is_empty()
            || p.stream.is_empty()
            || p.adam.is_empty()
            || p.conv_panel.is_empty()
            || p.conv_small.is_empty()
            || p.momentum_fused.is_empty()
            || p.pool.is_empty()
            || p.regroup.is_empty()
            || p.conv_strided.is_empty()
            || p.depthwise.is_empty()
            || p.conv_pointwise.is_empty()
            || p.passes.is_empty()
            || p.passes_warm.len() != p.passes.len()
            || p.last_level_cache == 0
            || !p.dropout.is_finite()
            || !p.step_overhead.is_finite()
            || !p.layer_overhead.is_finite()
        {
            Some("incomplete".to_string())
        } else {
            None
        };
        match stale {
            Some(why) => (None, Some(format!("{} is stale ({why}); measuring again", path.display()))),
            None => (Some(p), None),
        }
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        check_replaceable(path)?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let text = serde_json::to_vec_pretty(self).map_err(|e| Error::Usage(e.to_string()))?;
        crate::model::write_atomically(path, &text)
    }
}
