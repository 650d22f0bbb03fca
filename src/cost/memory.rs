//! The memory a training run of the fast engine holds, in bytes of f32 (and u32 indices).

use crate::spec::{Optimizer, Spec};
use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Memory {
    /// Weights and biases.
    pub parameters: u128,
    /// One gradient per parameter.
    pub gradients: u128,
    /// Momentum's velocity, or Adam's two moments.
    pub optimizer_state: u128,
    /// Per batch: the input rows and every layer's output, kept for the backward pass (but a
    /// batch norm's that a residual sum computes in the same pass, `engine::kept_outputs`).
    pub activations: u128,
    /// Per batch: two buffers for the gradient flowing back, each as wide as the widest layer;
    /// for an image network also the transposed copies of layer inputs (between the engine's
    /// channel-major images and row-major examples, when C > 1) and one u32 argmax index per
    /// max-pooling output.
    pub workspace: u128,
    /// The convolutions' scratch (zero for a dense network): per thread an im2col tile and a
    /// weight-gradient block, or a panel; shared, for the panel product, a zero-padded copy of
    /// the layer's input and its packed weights or deltas (these grow with the batch).
    pub scratch: u128,
    /// Everything above, held at once.
    pub peak: u128,
}

const F32: u128 = 4;

/// Threads the estimate's `scratch` is counted for (the engine cuts one tile or panel per
/// thread; a tile is at most a few hundred KiB, see `engine::conv::Tiles`).
pub const ESTIMATE_THREADS: usize = 2;

pub fn memory(spec: &Spec, opt: Optimizer, batch: u128) -> Memory {
    memory_for_threads(spec, opt, batch, ESTIMATE_THREADS)
}

/// [`memory`] for an engine of `threads` threads.
pub fn memory_for_threads(spec: &Spec, opt: Optimizer, batch: u128, threads: usize) -> Memory {
    let p = spec.params();
    let parameters = F32 * p;
    let gradients = F32 * p;
    let optimizer_state = F32 * p * opt.state_per_param() as u128;
    let kept = crate::engine::kept_outputs(spec);
    let outputs = spec.layers.iter().zip(kept).filter(|(_, k)| *k).map(|(l, _)| l.outputs as u128);
    let widths: u128 = spec.input as u128 + outputs.sum::<u128>();
    let activations = F32 * batch * widths;
    let widest_output = spec.layers.iter().map(|l| l.outputs as u128).max().unwrap_or(0);
    let (conv_workspace, scratch) = crate::engine::conv_buffer_bytes(spec, batch as usize, threads.max(1));
    let workspace = F32 * 2 * batch * widest_output + conv_workspace;
    Memory {
        parameters,
        gradients,
        optimizer_state,
        activations,
        workspace,
        scratch,
        peak: parameters + gradients + optimizer_state + activations + workspace + scratch,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conv_buffers_are_counted_and_dense_figures_are_not_changed() {
        let dense = crate::spec::parse("784-800-10", Default::default()).unwrap();
        let m = memory(&dense, Optimizer::Sgd, 32);
        assert_eq!(m.scratch, 0);
        assert_eq!(m.workspace, 4 * 2 * 32 * 800);
        // 3×8×8 input (transposed, C = 3), conv 3×3×4 → 4×6×6, maxpool2 → 4×3×3 (36 argmax
        // indices), dense 36 → 10 reading a 4-channel image (transposed).
        let cnn = crate::spec::parse("3x8x8-conv3x3x4:relu-maxpool2-10", Default::default()).unwrap();
        let m = memory_for_threads(&cnn, Optimizer::Sgd, 5, 1);
        assert_eq!(m.workspace, 4 * (2 * 5 * 144) + 4 * (5 * 192 + 5 * 36 + 5 * 36));
        // One tile per task: 27 im2col rows × 36 columns per example, as many examples as fit
        // in 32K values (all 5 here), and a 4×27 block. Ahead of the tiles, shared, where the
        // weight gradient runs over shifted rows (AVX2 and up): the padded input (3 channels ×
        // 5 examples of 8×8, no border, then 16 + kw + 8 zeros) and δ with rows 8 wide (6 rows,
        // 48 values, a multiple of 16) for 4 filters × 5 examples. Each rounded up to whole
        // cache lines (16 values), so that every task's tile starts on one.
        let line = |v: usize| v.next_multiple_of(16);
        let tile = line(27 * 36 * 5 + 4 * 27);
        let head = if crate::engine::simd::has_avx2_fma() { line((3 * 5 * 64 + 16 + 3 + 8) + 4 * 5 * 48) } else { 0 };
        assert_eq!(m.scratch, 4 * (head + tile) as u128);
        assert_eq!(memory_for_threads(&cnn, Optimizer::Sgd, 5, 2).scratch, 4 * (head + 2 * tile) as u128);
    }
}
