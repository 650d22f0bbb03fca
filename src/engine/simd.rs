//! Runtime dispatch for the loops flopnet writes itself.
//!
//! The default x86-64 target has SSE2 only; most machines have AVX2 and FMA, many (AMD Zen 4
//! and 5, Intel Xeon since Skylake-SP) AVX-512. Three paths: `avx512` (512-bit kernels where a
//! wider vector pays, the AVX2 ones elsewhere), `avx2` (256-bit kernels with FMA) and `scalar`
//! (plain Rust, no hand-written vector code). The CPU is asked once which it has; the
//! environment variable `FLOPNET_SIMD=avx512|avx2|scalar` forces a narrower path (for tests and
//! comparisons). The elementwise kernels are written once, generic over [`Madd`], and compiled
//! once per path.

use std::sync::OnceLock;

/// A set of kernels, from the narrowest to the widest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Path {
    /// Plain Rust: the baseline x86-64 (SSE2) build, no FMA.
    Scalar,
    /// 256-bit AVX2 kernels with fused multiply-add.
    Avx2,
    /// 512-bit AVX-512F kernels (and the AVX2 ones where 512 bits do not pay).
    Avx512,
}

impl Path {
    /// Every path, narrowest first.
    pub const ALL: [Path; 3] = [Path::Scalar, Path::Avx2, Path::Avx512];

    /// The name `FLOPNET_SIMD` takes and reports print.
    pub fn name(self) -> &'static str {
        match self {
            Path::Scalar => "scalar",
            Path::Avx2 => "avx2",
            Path::Avx512 => "avx512",
        }
    }

    /// Bits of the widest vector the path's kernels use.
    pub fn bits(self) -> u32 {
        match self {
            Path::Scalar => 128,
            Path::Avx2 => 256,
            Path::Avx512 => 512,
        }
    }

    /// Whether this CPU can run the path.
    pub fn available(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            match self {
                Path::Scalar => true,
                Path::Avx2 => has!("avx2") && has!("fma"),
                Path::Avx512 => has!("avx2") && has!("fma") && has!("avx512f"),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            self == Path::Scalar
        }
    }

    /// The widest path this CPU runs.
    pub fn best() -> Path {
        *Path::ALL.iter().rev().find(|p| p.available()).unwrap_or(&Path::Scalar)
    }

    /// The paths this CPU runs, narrowest first.
    pub fn available_all() -> Vec<Path> {
        Path::ALL.into_iter().filter(|p| p.available()).collect()
    }

    /// The path `FLOPNET_SIMD` names (`value`), or the widest one when it is unset or empty.
    pub fn from_setting(value: Option<&str>) -> Result<Path, String> {
        let Some(v) = value.map(str::trim).filter(|v| !v.is_empty()) else {
            return Ok(Path::best());
        };
        let names = Path::ALL.map(Path::name).join(", ");
        let Some(p) = Path::ALL.into_iter().find(|p| p.name().eq_ignore_ascii_case(v)) else {
            return Err(format!("FLOPNET_SIMD={v} is not a kernel path; use one of {names}, or unset it"));
        };
        if !p.available() {
            let have = Path::available_all().iter().map(|p| p.name()).collect::<Vec<_>>().join(", ");
            return Err(format!(
                "FLOPNET_SIMD={v}: this CPU cannot run the {v} kernels (it runs {have}); pick one of those or unset it"
            ));
        }
        Ok(p)
    }
}

impl std::fmt::Display for Path {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

static PATH: OnceLock<Result<Path, String>> = OnceLock::new();

fn setting() -> &'static Result<Path, String> {
    PATH.get_or_init(|| Path::from_setting(std::env::var("FLOPNET_SIMD").ok().as_deref()))
}

/// The path `FLOPNET_SIMD` asks for (or the widest this CPU runs), or why it cannot be used. The
/// CLI checks this before any work; read once per process.
pub fn checked() -> Result<Path, String> {
    setting().clone()
}

/// The kernel path in use. Panics with [`checked`]'s message when `FLOPNET_SIMD` names a path
/// this CPU cannot run (the CLI has refused such a value before any kernel runs).
#[inline]
pub fn path() -> Path {
    match setting() {
        Ok(p) => *p,
        Err(e) => panic!("{e}"),
    }
}

/// Whether the path in use runs the AVX2+FMA kernels (the `avx2` and `avx512` paths do).
#[inline]
pub fn has_avx2_fma() -> bool {
    path() >= Path::Avx2
}

/// Whether the path in use runs the AVX-512 kernels.
#[inline]
pub fn has_avx512() -> bool {
    path() == Path::Avx512
}

/// How a kernel multiplies and adds: fused where the CPU has FMA, plain otherwise.
pub trait Madd {
    fn madd(a: f32, b: f32, c: f32) -> f32;
}

pub struct Fused;
pub struct Plain;

impl Madd for Fused {
    #[inline(always)]
    fn madd(a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }
}

impl Madd for Plain {
    #[inline(always)]
    fn madd(a: f32, b: f32, c: f32) -> f32 {
        a * b + c
    }
}

/// Defines `fn $name(args) -> ret` (with the visibility given) that runs `$imp::<Fused>` compiled for AVX-512F or for
/// AVX2+FMA as the path in use says, and `$imp::<Plain>` on the scalar path. `$imp` must be
/// `#[inline(always)]`.
macro_rules! dispatch {
    ($(#[$meta:meta])* $vis:vis fn $name:ident = $imp:ident($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)?) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                unsafe fn fast($($arg: $ty),*) $(-> $ret)? {
                    $imp::<$crate::engine::simd::Fused>($($arg),*)
                }
                #[target_feature(enable = "avx512f,avx2,fma")]
                unsafe fn wide($($arg: $ty),*) $(-> $ret)? {
                    $imp::<$crate::engine::simd::Fused>($($arg),*)
                }
                match $crate::engine::simd::path() {
                    // SAFETY: a path is in use only where the CPU has its features.
                    $crate::engine::simd::Path::Avx512 => return unsafe { wide($($arg),*) },
                    $crate::engine::simd::Path::Avx2 => return unsafe { fast($($arg),*) },
                    $crate::engine::simd::Path::Scalar => {}
                }
            }
            $imp::<$crate::engine::simd::Plain>($($arg),*)
        }
    };
}

pub(crate) use dispatch;

/// FLOPs of one round of [`fma_round`] on `path`.
fn round_flops(path: Path) -> f64 {
    match path {
        Path::Scalar => 2.0 * 48.0,
        Path::Avx2 => 2.0 * 12.0 * 8.0,
        Path::Avx512 => 2.0 * 12.0 * 16.0,
    }
}

/// `iters` rounds of the path's widest multiply-adds, as independent chains.
fn fma_round(path: Path, iters: usize) -> f32 {
    match path {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `path` is the path in use (callers pass `path()`), which runs only where the
        // CPU has it; `fma_chains` takes the width it says.
        Path::Avx512 | Path::Avx2 => unsafe { super::avx::fma_chains(iters) },
        #[cfg(target_arch = "x86_64")]
        _ => {
            // The baseline's widest arithmetic: SSE2 multiply then add (no FMA), 4 lanes, 12
            // independent chains (left to the compiler, an array of chains was spilled to the
            // stack and ran at a tenth of this).
            use std::arch::x86_64::*;
            // SAFETY: SSE2 is part of every x86-64 CPU.
            unsafe {
                let (a, b) = (_mm_set1_ps(std::hint::black_box(0.999_999)), _mm_set1_ps(1e-7));
                let mut acc = [_mm_setzero_ps(); 12];
                for _ in 0..std::hint::black_box(iters) {
                    for x in acc.iter_mut() {
                        *x = _mm_add_ps(_mm_mul_ps(*x, a), b);
                    }
                }
                let mut out = [0f32; 4];
                _mm_storeu_ps(out.as_mut_ptr(), acc.iter().fold(_mm_setzero_ps(), |s, &x| _mm_add_ps(s, x)));
                out.iter().sum()
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        _ => {
            let (a, b) = (std::hint::black_box(0.999_999f32), 1e-7f32);
            let mut acc = [0f32; 48];
            for _ in 0..std::hint::black_box(iters) {
                for x in acc.iter_mut() {
                    *x = *x * a + b;
                }
            }
            acc.iter().sum()
        }
    }
}

/// The arithmetic ceiling of the path in use, GFLOP/s over every member of `team` at once: a
/// tight loop of independent multiply-adds of the path's widest vector on each thread, the
/// best of seven timed runs of a few ms. No product can beat it; a kernel's share of it
/// says how much of the arithmetic it uses.
pub fn fma_ceiling(team: &super::team::Team) -> f64 {
    let path = path();
    let iters = 2_000_000;
    let mut best = f64::INFINITY;
    for _ in 0..7 {
        let start = std::time::Instant::now();
        team.run(team.size(), &|_| {
            std::hint::black_box(fma_round(path, iters));
        });
        best = best.min(start.elapsed().as_secs_f64());
    }
    round_flops(path) * iters as f64 * team.size() as f64 / best / 1e9
}

/// Sets flush-to-zero and denormals-are-zero on the current thread: a denormal operand can
/// slow an SSE/AVX operation a hundredfold, and no network needs values below 1e-38.
pub fn flush_denormals() {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: reads and writes this thread's MXCSR register only; FTZ (bit 15) and DAZ (bit 6)
    // change rounding of tiny values, nothing else.
    unsafe {
        let mut csr: u32 = 0;
        std::arch::asm!("stmxcsr [{}]", in(reg) &mut csr, options(nostack));
        csr |= (1 << 15) | (1 << 6);
        std::arch::asm!("ldmxcsr [{}]", in(reg) &csr, options(nostack));
    }
}

/// Whether flush-to-zero is on for the current thread.
pub fn denormals_flushed() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        let mut csr: u32 = 0;
        // SAFETY: reads this thread's MXCSR register into a local.
        unsafe { std::arch::asm!("stmxcsr [{}]", in(reg) &mut csr, options(nostack)) };
        csr & (1 << 15) != 0
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_setting_names_a_path_or_is_refused_with_the_choices() {
        assert_eq!(Path::from_setting(None), Ok(Path::best()));
        assert_eq!(Path::from_setting(Some("  ")), Ok(Path::best()));
        assert_eq!(Path::from_setting(Some("scalar")), Ok(Path::Scalar));
        assert_eq!(Path::from_setting(Some("SCALAR")), Ok(Path::Scalar));
        let e = Path::from_setting(Some("avx1024")).unwrap_err();
        assert!(e.contains("FLOPNET_SIMD=avx1024") && e.contains("scalar, avx2, avx512"), "{e}");
        for p in Path::ALL {
            match Path::from_setting(Some(p.name())) {
                Ok(q) => assert!(p.available() && q == p),
                Err(e) => {
                    assert!(!p.available());
                    assert!(e.contains("cannot run") && e.contains("scalar"), "{e}");
                }
            }
            if !p.available() {
                eprintln!("kernel path {p}: this CPU lacks it (its refusal was checked)");
            }
        }
    }

    #[test]
    fn the_ceiling_is_positive_and_finite() {
        let team = super::super::team::Team::new(1, || {}).unwrap();
        let c = fma_ceiling(&team);
        assert!(c.is_finite() && c > 0.1, "{c}");
    }
}
