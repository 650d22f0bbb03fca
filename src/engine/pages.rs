//! The engine's large buffers on huge pages.
//!
//! A training step streams hundreds of MB (resnet20 at batch 128: every layer's output and
//! gradient, the convolutions' padded copies), and the shifted-rows kernels read sixteen or more
//! channel planes at once, half a MB apart: on 4 KB pages nearly every vector stream crosses into
//! a page the TLB does not hold. Linux backs memory with 2 MB pages where a program asks
//! (`madvise(MADV_HUGEPAGE)`, the default policy of many distributions, this machine's included:
//! `/sys/kernel/mm/transparent_hugepage/enabled` reads `[madvise]`).
//!
//! Measured: `flopnet bench resnet20 --input 3x32x32 --classes 10 --batch 128 --runs 3 --steps 6
//! --threads 2`, with and without the advice, alternating (2026-11-30, AMD EPYC Zen 5, quiet):
//! 2.5–4.7% faster in each of four pairs (a throwaway build switching the advice); builds of
//! the commit before this module and of this one, faster in four pairs of five (docs/kernels.md,
//! "Two threads: a layer's scaling, ...").

/// Asks the kernel to back the 2 MB-aligned part of `v` with huge pages. Advice only: where
/// the system has no transparent huge pages (or another OS), nothing changes. Call it before
/// the buffer is first written, so its pages are made huge as they are first touched.
pub fn advise_huge(v: &mut [f32]) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let start = v.as_mut_ptr() as usize;
        let (from, to) = (start.next_multiple_of(HUGE), (start + std::mem::size_of_val(v)) / HUGE * HUGE);
        if to > from {
            // SAFETY: the range lies inside `v`, which this call borrows; MADV_HUGEPAGE changes
            // how its pages are backed, never their contents.
            unsafe { libc::madvise(from as *mut libc::c_void, to - from, libc::MADV_HUGEPAGE) };
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = v;
}

/// `len` zeros on huge pages where the system gives them: how the engine allocates its large
/// buffers (layer outputs and gradients, scratch, transposed copies), so that a new buffer gets
/// the advice where it is made. (`vec!` asks the allocator for zeroed memory, which a large
/// buffer gets as untouched pages: the advice comes before any page is backed.)
pub fn zeroed(len: usize) -> Vec<f32> {
    let mut v = vec![0.0f32; len];
    advise_huge(&mut v);
    v
}

/// `len` values `f(0)`, `f(1)`, … on huge pages where the system gives them ([`advise_huge`]
/// before the first write): for buffers that stand in for the engine's, as calibrate's
/// reference passes do, so that they are timed on the pages the engine's own run on.
pub fn filled(len: usize, f: impl Fn(usize) -> f32) -> Vec<f32> {
    let mut v = zeroed(len);
    v.iter_mut().enumerate().for_each(|(i, x)| *x = f(i));
    v
}

/// Values of a cache line: the alignment of [`Lines`].
const LINE_VALUES: usize = 16;

/// `len` zeros starting on a 64-byte cache line (and on huge pages, as [`zeroed`]): the
/// convolutions' scratch. The allocator aligns a `Vec<f32>` to 16 bytes only, and where the
/// scratch's start fell inside a line depended on what the process had allocated before (a
/// fresh mapping starts 16 bytes into a page; `flopnet train`, after loading its data, got the
/// heap at 0x160 within a page): the packed input gradient's 16-wide stores into its dcol tile
/// then each straddled two lines: 8 → 8 3×3 over 8x32x32 at batch 16, one thread, took its
/// backward in 0.99 ms at such a start and 0.74 at a line's (docs/prediction.md, "The
/// scratch's alignment"). Calibrate's references ran at whichever start their own heap gave.
pub struct Lines {
    buf: Vec<f32>,
    at: usize,
    len: usize,
}

impl Lines {
    pub fn zeroed(len: usize) -> Lines {
        let buf = zeroed(len + LINE_VALUES - 1);
        let at = buf.as_ptr().align_offset(4 * LINE_VALUES);
        assert!(at < LINE_VALUES, "an f32 buffer is 4-byte aligned");
        Lines { buf, at, len }
    }
}

impl std::ops::Deref for Lines {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.buf[self.at..self.at + self.len]
    }
}

impl std::ops::DerefMut for Lines {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut self.buf[self.at..self.at + self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_start_on_a_cache_line_whatever_the_allocator_gives() {
        // Allocations of assorted sizes in between, so that the heap hands out starts at
        // assorted offsets within a line.
        let mut keep = Vec::new();
        for len in [1, 5, 16, 100, 1000, 4097, 40_000, 300_000] {
            keep.push(vec![0u8; len % 97 + 1]);
            let l = Lines::zeroed(len);
            assert_eq!(l.as_ptr() as usize % 64, 0, "{len} values");
            assert_eq!(l.len(), len);
            assert!(l.iter().all(|&v| v == 0.0));
        }
    }
}
