//! The f32 activation passes: bias and activation fused into one sweep over a product's output,
//! and the derivative applied in place to the incoming gradient.
//!
//! Derivatives are taken from the output a (not z), so the forward pass keeps one buffer per
//! layer: relu and leaky relu test a > 0 (the same as z > 0), sigmoid uses a(1 - a), tanh 1 - a².

use crate::spec::{Activation, LEAKY_SLOPE};

/// z += b, then a = f(z), in place, for each row of `m` values.
pub fn bias_forward(f: Activation, out: &mut [f32], bias: &[f32]) {
    let m = bias.len();
    #[cfg(target_arch = "x86_64")]
    if matches!(f, Activation::Sigmoid | Activation::Softmax) && super::simd::has_avx2_fma() {
        // SAFETY: the path in use (AVX2+FMA, or AVX-512F for the `_512` kernels) runs only where
        // the CPU has it.
        return unsafe {
            if f == Activation::Sigmoid {
                super::avx::bias_sigmoid(out, bias)
            } else {
                super::avx::bias_softmax(out, bias)
            }
        };
    }
    let slope = LEAKY_SLOPE as f32;
    for row in out.chunks_exact_mut(m) {
        for (z, &b) in row.iter_mut().zip(bias) {
            *z += b;
        }
        match f {
            Activation::Identity => {}
            Activation::Relu => row.iter_mut().for_each(|z| *z = z.max(0.0)),
            Activation::LeakyRelu => row.iter_mut().for_each(|z| *z = if *z > 0.0 { *z } else { slope * *z }),
            Activation::Sigmoid => row.iter_mut().for_each(|z| *z = 1.0 / (1.0 + (-*z).exp())),
            Activation::Tanh => row.iter_mut().for_each(|z| *z = z.tanh()),
            Activation::Softmax => softmax(row),
            Activation::Relu6 => row.iter_mut().for_each(|z| *z = relu6(*z)),
        }
    }
}

/// `f` split in two: the part that applies value by value (to any run of values, so a caller
/// may split it across a team or fuse it into its own pass) and the part that needs whole rows
/// (a softmax); the one absent is Identity.
pub fn by_value(f: Activation) -> (Activation, Activation) {
    if f == Activation::Softmax { (Activation::Identity, f) } else { (f, Activation::Identity) }
}

/// min(max(z, 0), 6), as the reference and the convolutions compute it.
#[inline]
pub fn relu6(z: f32) -> f32 {
    z.clamp(0.0, 6.0)
}

/// a = f(z) in place, for rows of `m` values (no bias).
pub fn forward(f: Activation, out: &mut [f32], m: usize) {
    let slope = LEAKY_SLOPE as f32;
    match f {
        Activation::Identity => {}
        Activation::Relu => out.iter_mut().for_each(|z| *z = z.max(0.0)),
        Activation::Relu6 => out.iter_mut().for_each(|z| *z = relu6(*z)),
        Activation::LeakyRelu => out.iter_mut().for_each(|z| *z = if *z > 0.0 { *z } else { slope * *z }),
        Activation::Sigmoid => out.iter_mut().for_each(|z| *z = 1.0 / (1.0 + (-*z).exp())),
        Activation::Tanh => out.iter_mut().for_each(|z| *z = z.tanh()),
        Activation::Softmax => out.chunks_exact_mut(m).for_each(softmax),
    }
}

fn softmax(row: &mut [f32]) {
    let top = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let mut sum = 0.0;
    for v in row.iter_mut() {
        *v = (*v - top).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    row.iter_mut().for_each(|v| *v *= inv);
}

/// g = g (*) f'(z), in place, given the layer's output a. Not called for a softmax output under
/// cross-entropy (the loss already gave dL/dz).
pub fn backward(f: Activation, a: &[f32], g: &mut [f32], m: usize) {
    let slope = LEAKY_SLOPE as f32;
    match f {
        Activation::Identity => {}
        Activation::Relu => g.iter_mut().zip(a).for_each(|(g, &a)| *g = if a > 0.0 { *g } else { 0.0 }),
        Activation::LeakyRelu => g.iter_mut().zip(a).for_each(|(g, &a)| *g = if a > 0.0 { *g } else { slope * *g }),
        Activation::Sigmoid => g.iter_mut().zip(a).for_each(|(g, &a)| *g *= a * (1.0 - a)),
        Activation::Tanh => g.iter_mut().zip(a).for_each(|(g, &a)| *g *= 1.0 - a * a),
        Activation::Softmax => {
            for (g, a) in g.chunks_exact_mut(m).zip(a.chunks_exact(m)) {
                let s: f32 = g.iter().zip(a).map(|(g, a)| g * a).sum();
                g.iter_mut().zip(a).for_each(|(g, &a)| *g = a * (*g - s));
            }
        }
        // 0 < a < 6: the slope is 1 strictly between the bends.
        Activation::Relu6 => g.iter_mut().zip(a).for_each(|(g, &a)| *g = if a > 0.0 && a < 6.0 { *g } else { 0.0 }),
    }
}
