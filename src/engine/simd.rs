//! Runtime dispatch for the few loops flopnet writes itself.
//!
//! The default x86-64 target has SSE2 only; most machines have AVX2 and FMA. Each kernel is
//! written once, generic over [`Madd`], and compiled twice: with `avx2,fma` enabled (fused
//! multiply-add) and for the baseline. The CPU is asked once which to run.

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

/// Whether this CPU runs the AVX2+FMA builds (checked once, then cached by std).
#[inline]
pub fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Defines `pub fn $name(args) -> ret` that runs `$imp::<Fused>` compiled for AVX2+FMA when the
/// CPU has them, and `$imp::<Plain>` otherwise. `$imp` must be `#[inline(always)]`.
macro_rules! dispatch {
    ($(#[$meta:meta])* pub fn $name:ident = $imp:ident($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)?) => {
        $(#[$meta])*
        pub fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                unsafe fn fast($($arg: $ty),*) $(-> $ret)? {
                    $imp::<$crate::engine::simd::Fused>($($arg),*)
                }
                if $crate::engine::simd::has_avx2_fma() {
                    // SAFETY: the CPU was just checked for both features.
                    return unsafe { fast($($arg),*) };
                }
            }
            $imp::<$crate::engine::simd::Plain>($($arg),*)
        }
    };
}

pub(crate) use dispatch;

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
