//! Optimizers: how a parameter moves given its gradient.

use super::scalar::Scalar;
use crate::spec::Optimizer;

/// Hyperparameters shared by both engines.
#[derive(Clone, Copy, Debug)]
pub struct Hyper {
    pub lr: f64,
    /// Momentum's mu.
    pub momentum: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Weight decay λ, applied to every parameter (biases and batch-norm scales included, as
    /// PyTorch does by default): coupled (g ← g + λ·w) for SGD, momentum and Adam, where 0
    /// means none; decoupled (w ← w·(1 − lr·λ)) for AdamW.
    pub weight_decay: f64,
}

impl Hyper {
    /// The usual defaults, PyTorch's: lr 0.01 for SGD and momentum (mu 0.9), 0.001 for Adam and
    /// AdamW; weight decay 0, or 0.01 for AdamW.
    pub fn defaults(opt: Optimizer) -> Hyper {
        let adam = matches!(opt, Optimizer::Adam | Optimizer::AdamW);
        Hyper {
            lr: if adam { 1e-3 } else { 1e-2 },
            momentum: 0.9,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: if opt == Optimizer::AdamW { 0.01 } else { 0.0 },
        }
    }

    /// The update rule these settings give `opt`, as the ledger counts it.
    pub fn rule(&self, opt: Optimizer) -> crate::spec::UpdateRule {
        crate::spec::UpdateRule::new(opt, self.weight_decay)
    }
}

/// The optimizer's memory: per parameter slot, and Adam's running powers of beta.
pub struct OptimizerState<S> {
    pub kind: Optimizer,
    pub hyper: Hyper,
    /// Velocity (momentum) or first moment (Adam), one per parameter.
    pub first: Vec<Vec<S>>,
    /// Adam's second moment.
    pub second: Vec<Vec<S>>,
    beta1_t: S,
    beta2_t: S,
}

/// Scalars computed once per step before any parameter moves.
pub struct StepScalars<S> {
    step_size: S,
    sqrt_c2: S,
    /// AdamW's factor 1 − lr·λ.
    keep: S,
}

impl<S: Scalar> OptimizerState<S> {
    /// `sizes`: the parameter count of each tensor the optimizer will update.
    pub fn new(kind: Optimizer, hyper: Hyper, sizes: &[usize]) -> Self {
        let slots = |on: bool| sizes.iter().map(|&n| vec![S::zero(); if on { n } else { 0 }]).collect();
        OptimizerState {
            kind,
            hyper,
            first: slots(kind != Optimizer::Sgd),
            second: slots(kind.state_per_param() == 2),
            beta1_t: S::one(),
            beta2_t: S::one(),
        }
    }

    /// Advances the step counter: Adam's bias corrections c1 = 1 - b1^t, c2 = 1 - b2^t, and
    /// AdamW's factor 1 - lr·λ. Other optimizers need no such scalars (these are free constants
    /// for them).
    pub fn begin_step(&mut self) -> StepScalars<S> {
        if !matches!(self.kind, Optimizer::Adam | Optimizer::AdamW) {
            return StepScalars { step_size: S::constant(self.hyper.lr), sqrt_c2: S::one(), keep: S::one() };
        }
        self.beta1_t = self.beta1_t * S::constant(self.hyper.beta1);
        self.beta2_t = self.beta2_t * S::constant(self.hyper.beta2);
        let c1 = S::one() - self.beta1_t;
        let c2 = S::one() - self.beta2_t;
        let keep = if self.kind == Optimizer::AdamW {
            S::one() - S::constant(self.hyper.lr) * S::constant(self.hyper.weight_decay)
        } else {
            S::one()
        };
        StepScalars { step_size: S::constant(self.hyper.lr) / c1, sqrt_c2: c2.sqrt(), keep }
    }

    /// Moves tensor `slot`'s parameters `w` by their gradients `g`.
    pub fn update(&mut self, slot: usize, w: &mut [S], g: &[S], sc: &StepScalars<S>) {
        let h = self.hyper;
        let lr = S::constant(h.lr);
        // Coupled weight decay: the optimizer sees g + λ·w.
        let decayed: Vec<S>;
        let g = if h.rule(self.kind).coupled_decay {
            let lambda = S::constant(h.weight_decay);
            decayed = g.iter().zip(w.iter()).map(|(&g, &w)| g + lambda * w).collect();
            &decayed[..]
        } else {
            g
        };
        match self.kind {
            Optimizer::Sgd => {
                for (w, &g) in w.iter_mut().zip(g) {
                    *w = *w - lr * g;
                }
            }
            Optimizer::Momentum => {
                let mu = S::constant(h.momentum);
                for ((w, &g), v) in w.iter_mut().zip(g).zip(&mut self.first[slot]) {
                    *v = mu * *v + g;
                    *w = *w - lr * *v;
                }
            }
            Optimizer::Adam | Optimizer::AdamW => {
                if self.kind == Optimizer::AdamW {
                    w.iter_mut().for_each(|w| *w = *w * sc.keep);
                }
                let (b1, b2) = (S::constant(h.beta1), S::constant(h.beta2));
                let (k1, k2) = (S::constant(1.0 - h.beta1), S::constant(1.0 - h.beta2));
                let eps = S::constant(h.eps);
                let moments = self.first[slot].iter_mut().zip(self.second[slot].iter_mut());
                for ((w, &g), (m, v)) in w.iter_mut().zip(g).zip(moments) {
                    *m = b1 * *m + k1 * g;
                    *v = b2 * *v + k2 * g * g;
                    let denom = v.sqrt() / sc.sqrt_c2 + eps;
                    *w = *w - sc.step_size * (*m / denom);
                }
            }
        }
    }
}
