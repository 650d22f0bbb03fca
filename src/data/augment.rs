//! Data augmentation for images (`--augment`): a random crop of the image padded on every side,
//! and a random horizontal flip, as torchvision's `RandomCrop(size, padding=p)` followed by
//! `RandomHorizontalFlip()`.
//!
//! Applied to each batch as it is gathered, in place: the data set itself never changes and no
//! second copy of it is made. Every example's draws are a function of the run's seed, the epoch
//! and the example's position in that epoch's order (its own words of a ChaCha stream), so a run
//! is repeatable bit for bit and a resumed one draws what the uninterrupted run would have,
//! without any generator state in the checkpoint. The work is copies and no arithmetic: the
//! ledger counts none of it.

use super::Dataset;
use crate::error::{Error, Result};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::fmt;
use std::str::FromStr;

/// What `--augment` asks for.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Augment {
    /// Pad every side by this many pixels, then crop back to the image's size at a random
    /// offset (0: no crop).
    pub crop: usize,
    /// Mirror left to right with probability 1/2.
    pub flip: bool,
    /// The value of a padded pixel: a raw 0 (black) as the features' scaling maps it, as
    /// torchvision pads before `Normalize`. Set by [`Augment::with_fill`]; 0 when parsed.
    pub fill: f32,
}

/// The ChaCha stream of epoch e's draws is `STREAM | e`; the shuffle uses stream e.
const STREAM: u64 = 1 << 63;
/// 32-bit words each example's draws take: the crop's row and column offsets, the flip.
const WORDS: u128 = 3;

/// One example's draws: the shift of the crop (rows, columns, each in -crop..=crop) and the flip.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Draw {
    pub dy: isize,
    pub dx: isize,
    pub flip: bool,
}

impl Augment {
    /// The same augmentation padding with `fill`.
    pub fn with_fill(self, fill: f32) -> Augment {
        Augment { fill, ..self }
    }

    /// The same augmentation padding with black as `scaling` maps it: the raw value 0 (0 for
    /// `--normalize unit` or `none`, −mean/std for `standard`).
    pub fn padded_as(self, scaling: &super::Scaling) -> Augment {
        let mut zero = [0.0];
        scaling.apply(&mut zero);
        self.with_fill(zero[0])
    }

    /// Errors unless data of `shape` ([C, H, W]) are images: flat rows (CSV, `[1, 1, N]`) have
    /// no rows or columns to crop or mirror.
    pub fn check(&self, shape: [usize; 3]) -> Result<()> {
        let [c, h, w] = shape;
        if c == 1 && h == 1 {
            return Err(Error::Usage(format!(
                "--augment {self} crops and flips images, but the data holds flat rows of {w} values with no image shape; drop --augment, or train on image data (IDX, CIFAR-10)"
            )));
        }
        Ok(())
    }

    /// The draws of the example at `position` of epoch `epoch`'s order (from 0 and 1).
    pub fn draw(&self, seed: u64, epoch: usize, position: usize) -> Draw {
        self.next(&mut self.stream(seed, epoch, position))
    }

    /// The next example's draws from `rng`: always `WORDS` words, so that any position can be
    /// found again by its word offset. An offset in 0..=2·crop is ⌊u·(2·crop+1) / 2³²⌋ of a word
    /// u (no rejection, whose word count would vary; the bias is below 10⁻⁸ for any crop a
    /// person asks for).
    fn next(&self, rng: &mut ChaCha8Rng) -> Draw {
        let span = 2 * self.crop as u64 + 1;
        let mut offset = || ((u64::from(rng.next_u32()) * span) >> 32) as isize - self.crop as isize;
        let (dy, dx) = (offset(), offset());
        Draw { dy, dx, flip: rng.next_u32() >> 31 == 1 && self.flip }
    }

    /// [`Dataset::gather`] with the crops and flips: examples `idx`, at positions `first`,
    /// `first + 1`, … of epoch `epoch`'s order, placed straight from the data set into `out`.
    #[allow(clippy::too_many_arguments)]
    pub fn gather(
        &self,
        data: &Dataset,
        idx: &[usize],
        out: &mut [f32],
        labels: &mut [u8],
        seed: u64,
        epoch: usize,
        first: usize,
    ) {
        let mut rng = self.stream(seed, epoch, first);
        let shape = data.shape;
        data.gather_with(idx, out, labels, |_, example, row| self.place(example, row, shape, self.next(&mut rng)));
    }

    /// The generator of epoch `epoch`'s draws, at the words of the example at `position`.
    fn stream(&self, seed: u64, epoch: usize, position: usize) -> ChaCha8Rng {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(STREAM | epoch as u64);
        rng.set_word_pos(position as u128 * WORDS);
        rng
    }

    /// Augments `rows` in place: the examples at positions `first`, `first + 1`, … of epoch
    /// `epoch`'s order, each of `shape` [C, H, W].
    pub fn apply(&self, seed: u64, epoch: usize, first: usize, shape: [usize; 3], rows: &mut [f32]) {
        let f: usize = shape.iter().product();
        let mut rng = self.stream(seed, epoch, first);
        let mut source = vec![0f32; f];
        for row in rows.chunks_exact_mut(f.max(1)) {
            source.copy_from_slice(row);
            self.place(&source, row, shape, self.next(&mut rng));
        }
    }

    /// out(y, x) = in(y + dy, x' + dx), x' = W−1−x when flipped, else x; `fill` outside.
    fn place(&self, input: &[f32], out: &mut [f32], [c, h, w]: [usize; 3], d: Draw) {
        if d == (Draw { dy: 0, dx: 0, flip: false }) {
            out.copy_from_slice(input);
            return;
        }
        let (hi, wi) = (h as isize, w as isize);
        for ch in 0..c {
            let (src, dst) = (&input[ch * h * w..(ch + 1) * h * w], &mut out[ch * h * w..(ch + 1) * h * w]);
            for (y, line) in dst.chunks_exact_mut(w).enumerate() {
                let sy = y as isize + d.dy;
                if !(0..hi).contains(&sy) {
                    line.fill(self.fill);
                    continue;
                }
                let from = &src[sy as usize * w..(sy as usize + 1) * w];
                // Columns x whose source x + dx lies inside: lo..hi of the unflipped line.
                let lo = (-d.dx).clamp(0, wi) as usize;
                let hi_x = (wi - d.dx).clamp(0, wi) as usize;
                line[..lo].fill(self.fill);
                line[hi_x..].fill(self.fill);
                if lo < hi_x {
                    let s = (lo as isize + d.dx) as usize;
                    line[lo..hi_x].copy_from_slice(&from[s..s + (hi_x - lo)]);
                }
                if d.flip {
                    line.reverse();
                }
            }
        }
    }
}

impl fmt::Display for Augment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if self.crop > 0 {
            parts.push(format!("crop={}", self.crop));
        }
        if self.flip {
            parts.push("flip".to_string());
        }
        f.write_str(&parts.join(","))
    }
}

impl FromStr for Augment {
    type Err = String;
    /// `crop=P`, `flip` or both, comma-separated: `crop=4,flip`.
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let usage = "expected crop=P (pad P pixels, crop back at random), flip (mirror half the images) or both, e.g. crop=4,flip";
        let mut a = Augment { crop: 0, flip: false, fill: 0.0 };
        for part in s.split(',').map(str::trim) {
            match part.split_once('=') {
                None if part.eq_ignore_ascii_case("flip") => a.flip = true,
                Some((k, v)) if k.trim().eq_ignore_ascii_case("crop") => {
                    a.crop = match v.trim().parse::<usize>() {
                        Ok(p) if (1..=1024).contains(&p) => p,
                        _ => {
                            return Err(format!(
                                "`{part}`: the crop's padding is a whole number from 1 to 1024; {usage}"
                            ));
                        }
                    }
                }
                _ => return Err(format!("`{part}` is no augmentation; {usage}")),
            }
        }
        Ok(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aug(text: &str) -> Augment {
        text.parse().unwrap()
    }

    #[test]
    fn the_syntax_reads_and_prints_back() {
        assert_eq!(aug("crop=4,flip"), Augment { crop: 4, flip: true, fill: 0.0 });
        assert_eq!(aug("flip"), Augment { crop: 0, flip: true, fill: 0.0 });
        assert_eq!(aug("crop=2").to_string(), "crop=2");
        assert_eq!(aug(" FLIP , crop=3 ").to_string(), "crop=3,flip");
        for bad in ["", "crop", "crop=0", "crop=-1", "rotate=4", "flip,jitter"] {
            let e = bad.parse::<Augment>().unwrap_err();
            assert!(e.contains("e.g. crop=4,flip"), "{bad}: {e}");
        }
    }

    #[test]
    fn padding_is_black_after_the_features_scaling() {
        use crate::data::Scaling;
        assert_eq!(aug("crop=4").padded_as(&Scaling::Unit).fill, 0.0);
        assert_eq!(aug("crop=4").padded_as(&Scaling::Standard { mean: 0.25, std: 0.5 }).fill, -0.5);
    }

    #[test]
    fn flat_rows_are_refused_images_are_not() {
        let e = aug("flip").check([1, 1, 784]).unwrap_err().to_string();
        assert!(e.contains("flat rows of 784 values"), "{e}");
        assert!(aug("flip").check([1, 28, 28]).is_ok());
        assert!(aug("crop=4").check([3, 32, 32]).is_ok());
    }

    /// The crop and flip by their definition, one pixel at a time.
    fn naive(a: &Augment, x: &[f32], [c, h, w]: [usize; 3], d: Draw) -> Vec<f32> {
        let mut out = vec![0.0; x.len()];
        for ch in 0..c {
            for y in 0..h {
                for xo in 0..w {
                    let xs = if d.flip { w - 1 - xo } else { xo };
                    let (sy, sx) = (y as isize + d.dy, xs as isize + d.dx);
                    let inside = (0..h as isize).contains(&sy) && (0..w as isize).contains(&sx);
                    out[(ch * h + y) * w + xo] =
                        if inside { x[(ch * h + sy as usize) * w + sx as usize] } else { a.fill };
                }
            }
        }
        out
    }

    #[test]
    fn every_example_is_cropped_and_flipped_as_drawn() {
        let shape = [3, 5, 7];
        let f = 105;
        let a = aug("crop=3,flip").with_fill(-0.5);
        let data: Vec<f32> = (0..f * 40).map(|i| i as f32).collect();
        let mut rows = data.clone();
        a.apply(9, 2, 17, shape, &mut rows);
        let mut seen = std::collections::HashSet::new();
        for (e, (got, x)) in rows.chunks(f).zip(data.chunks(f)).enumerate() {
            let d = a.draw(9, 2, 17 + e);
            seen.insert((d.dy, d.dx, d.flip));
            assert!(d.dy.abs() <= 3 && d.dx.abs() <= 3);
            assert_eq!(got, &naive(&a, x, shape, d)[..], "example {e}, {d:?}");
        }
        // The draws vary: 40 examples see many shifts and both flips.
        assert!(seen.len() > 20, "{seen:?}");
        assert!(seen.iter().any(|s| s.2) && seen.iter().any(|s| !s.2));
    }

    #[test]
    fn draws_depend_on_seed_epoch_and_position_only() {
        let a = aug("crop=4,flip");
        let (shape, f) = ([1, 6, 6], 36);
        let data: Vec<f32> = (0..f * 12).map(|i| (i % 37) as f32).collect();
        // One batch of 12, or batches of 5, 5 and 2 from their positions: the same images.
        let mut whole = data.clone();
        a.apply(3, 4, 0, shape, &mut whole);
        let mut parts = data.clone();
        for (k, chunk) in parts.chunks_mut(5 * f).enumerate() {
            a.apply(3, 4, 5 * k, shape, chunk);
        }
        assert_eq!(whole, parts);
        let mut again = data.clone();
        a.apply(3, 4, 0, shape, &mut again);
        assert_eq!(whole, again);
        for (seed, epoch) in [(4, 4), (3, 5)] {
            let mut other = data.clone();
            a.apply(seed, epoch, 0, shape, &mut other);
            assert_ne!(whole, other, "seed {seed}, epoch {epoch}");
        }
    }

    #[test]
    fn gathering_augmented_is_gathering_then_augmenting() {
        let shape = [2, 6, 5];
        let n = 50;
        let features = (0..n * 60).map(|i| (i % 61) as f32).collect();
        let d = Dataset { features, labels: vec![1; n], shape, classes: 2, class_names: vec![] };
        let idx: Vec<usize> = (0..20).map(|i| (i * 7) % n).collect();
        let a = aug("crop=2,flip").with_fill(-1.0);
        let (mut x, mut y) = (vec![0.0; 20 * 60], vec![0; 20]);
        a.gather(&d, &idx, &mut x, &mut y, 5, 3, 40);
        let (mut want, mut wy) = (vec![0.0; 20 * 60], vec![0; 20]);
        d.gather(&idx, &mut want, &mut wy);
        a.apply(5, 3, 40, shape, &mut want);
        assert_eq!(x, want);
        assert_eq!(y, wy);
    }

    #[test]
    fn flip_alone_only_mirrors_and_crop_alone_never_does() {
        let (shape, f) = ([1, 4, 4], 16);
        let data: Vec<f32> = (0..f * 30).map(|i| i as f32).collect();
        let mut rows = data.clone();
        let flip = aug("flip");
        flip.apply(1, 1, 0, shape, &mut rows);
        let mut mirrored = 0;
        for (got, x) in rows.chunks(f).zip(data.chunks(f)) {
            let m: Vec<f32> = x.chunks(4).flat_map(|r| r.iter().rev().copied()).collect();
            assert!(got == x || got == &m[..]);
            mirrored += usize::from(got != x);
        }
        assert!((5..=25).contains(&mirrored), "{mirrored} of 30 mirrored");
        let crop = aug("crop=1");
        let mut rows = data.clone();
        crop.apply(1, 1, 0, shape, &mut rows);
        for (e, (got, x)) in rows.chunks(f).zip(data.chunks(f)).enumerate() {
            let d = crop.draw(1, 1, e);
            assert!(!d.flip);
            assert_eq!(got, &naive(&crop, x, shape, d)[..]);
        }
    }
}
