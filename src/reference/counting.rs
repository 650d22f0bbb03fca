//! A scalar that computes in f64 and counts every operation it performs.
//!
//! Counts go to a per-thread recorder, filed under the phase the engine last entered
//! ([`Scalar::enter`]). [`record`] runs a closure with a fresh recorder and returns what it saw.

// Each operator counts itself with `+= 1` on the tally, which clippy takes for a typo.
#![allow(clippy::suspicious_arithmetic_impl)]

use super::scalar::{Phase, Scalar, Tally};
use crate::ops::Ops;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ops::{Add, Div, Mul, Neg, Sub};

#[derive(Clone, Copy, Debug, PartialEq, PartialOrd)]
pub struct Counted(pub f64);

#[derive(Default)]
struct Recorder {
    phase: Option<Phase>,
    current: Ops,
    done: BTreeMap<Phase, Ops>,
}

impl Recorder {
    fn flush(&mut self) {
        let phase = self.phase.unwrap_or(Phase::Outside);
        let ops = std::mem::take(&mut self.current);
        if !ops.is_zero() {
            *self.done.entry(phase).or_default() += ops;
        }
    }
}

thread_local! {
    static RECORDER: RefCell<Recorder> = RefCell::new(Recorder::default());
}

fn bump(f: impl FnOnce(&mut Ops)) {
    RECORDER.with(|r| f(&mut r.borrow_mut().current));
}

/// Runs `work` and returns its result with the operations it performed, by phase.
pub fn record<T>(work: impl FnOnce() -> T) -> (T, BTreeMap<Phase, Ops>) {
    RECORDER.with(|r| *r.borrow_mut() = Recorder::default());
    let out = work();
    let counts = RECORDER.with(|r| {
        let mut r = r.borrow_mut();
        r.flush();
        std::mem::take(&mut r.done)
    });
    (out, counts)
}

impl Add for Counted {
    type Output = Counted;
    fn add(self, o: Counted) -> Counted {
        bump(|c| c.add += 1);
        Counted(self.0 + o.0)
    }
}

impl Sub for Counted {
    type Output = Counted;
    fn sub(self, o: Counted) -> Counted {
        bump(|c| c.add += 1);
        Counted(self.0 - o.0)
    }
}

impl Mul for Counted {
    type Output = Counted;
    fn mul(self, o: Counted) -> Counted {
        bump(|c| c.mul += 1);
        Counted(self.0 * o.0)
    }
}

impl Div for Counted {
    type Output = Counted;
    fn div(self, o: Counted) -> Counted {
        bump(|c| c.div += 1);
        Counted(self.0 / o.0)
    }
}

/// Negation flips a sign bit: free by the contract.
impl Neg for Counted {
    type Output = Counted;
    fn neg(self) -> Counted {
        Counted(-self.0)
    }
}

impl Scalar for Counted {
    fn constant(x: f64) -> Self {
        Counted(x)
    }
    fn value(self) -> f64 {
        self.0
    }
    fn exp(self) -> Self {
        bump(|c| c.fns.exp += 1);
        Counted(self.0.exp())
    }
    fn ln(self) -> Self {
        bump(|c| c.fns.ln += 1);
        Counted(self.0.ln())
    }
    fn sqrt(self) -> Self {
        bump(|c| c.fns.sqrt += 1);
        Counted(self.0.sqrt())
    }
    fn tanh(self) -> Self {
        bump(|c| c.fns.tanh += 1);
        Counted(self.0.tanh())
    }
    fn max(self, other: Self) -> Self {
        bump(|c| c.cmp += 1);
        if self.0 > other.0 { self } else { other }
    }
    fn is_positive(self) -> bool {
        bump(|c| c.cmp += 1);
        self.0 > 0.0
    }
    fn greater(self, other: Self) -> bool {
        bump(|c| c.cmp += 1);
        self.0 > other.0
    }
    fn tally(t: Tally) {
        bump(|c| match t {
            Tally::Mac => c.mac += 1,
            Tally::Act(n) => c.act += n as u128,
            Tally::ActGrad(n) => c.act_grad += n as u128,
        });
    }
    fn enter(p: Phase) {
        RECORDER.with(|r| {
            let mut r = r.borrow_mut();
            r.flush();
            r.phase = Some(p);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_phase() {
        let (v, counts) = record(|| {
            Counted::enter(Phase::Loss);
            let x = Counted(2.0) * Counted(3.0) + Counted(1.0);
            Counted::enter(Phase::Update(0));
            -(x / Counted(7.0)).exp()
        });
        assert_eq!(v.0, -1.0f64.exp());
        assert_eq!(counts[&Phase::Loss], Ops { mul: 1, add: 1, ..Ops::ZERO });
        let u = counts[&Phase::Update(0)];
        assert_eq!((u.div, u.fns.exp, u.add), (1, 1, 0));
        assert!(!counts.contains_key(&Phase::Outside));
    }
}
