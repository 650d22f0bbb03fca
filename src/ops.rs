//! The record every count is kept in: one integer per primitive operation.
//!
//! The categories are fixed by the counting contract (`COUNTING.md` in the docs): `mul`, `add`,
//! `div`, `cmp` and `fn` (split by function) are primitive floating-point operations; `mac`, `act`
//! and `act_grad` are semantic tallies that ride along. Counts are `u128` so that no realistic
//! network, batch size or epoch count can overflow them.

use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};
use std::ops::{Add, AddAssign, Mul};

/// Elementary function evaluations, one counter per function.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FnCounts {
    pub exp: u128,
    pub ln: u128,
    pub sqrt: u128,
    pub tanh: u128,
}

impl FnCounts {
    pub fn total(&self) -> u128 {
        self.exp + self.ln + self.sqrt + self.tanh
    }
}

/// A tally of operations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ops {
    pub mul: u128,
    pub add: u128,
    pub div: u128,
    pub cmp: u128,
    pub fns: FnCounts,
    /// Multiply-accumulate pairs inside matrix products (what thop/fvcore/torchinfo call MACs).
    pub mac: u128,
    /// Activation-function applications, one per neuron per example.
    pub act: u128,
    /// Activation-derivative applications, one per neuron per example in backward.
    pub act_grad: u128,
}

impl Ops {
    pub const ZERO: Ops = Ops {
        mul: 0,
        add: 0,
        div: 0,
        cmp: 0,
        fns: FnCounts { exp: 0, ln: 0, sqrt: 0, tanh: 0 },
        mac: 0,
        act: 0,
        act_grad: 0,
    };

    /// Every floating-point operation counts one: no "two per multiply-add" folding.
    pub fn flop(&self) -> u128 {
        self.mul + self.add + self.div + self.cmp + self.fns.total()
    }

    pub fn is_zero(&self) -> bool {
        *self == Ops::ZERO
    }

    /// The fields by name, in the contract's order, for tables and comparisons.
    pub fn fields(&self) -> [(&'static str, u128); 13] {
        [
            ("mul", self.mul),
            ("add", self.add),
            ("div", self.div),
            ("cmp", self.cmp),
            ("fn", self.fns.total()),
            ("fn.exp", self.fns.exp),
            ("fn.ln", self.fns.ln),
            ("fn.sqrt", self.fns.sqrt),
            ("fn.tanh", self.fns.tanh),
            ("flop", self.flop()),
            ("mac", self.mac),
            ("act", self.act),
            ("act_grad", self.act_grad),
        ]
    }
}

impl Add for Ops {
    type Output = Ops;
    fn add(self, o: Ops) -> Ops {
        Ops {
            mul: self.mul + o.mul,
            add: self.add + o.add,
            div: self.div + o.div,
            cmp: self.cmp + o.cmp,
            fns: FnCounts {
                exp: self.fns.exp + o.fns.exp,
                ln: self.fns.ln + o.fns.ln,
                sqrt: self.fns.sqrt + o.fns.sqrt,
                tanh: self.fns.tanh + o.fns.tanh,
            },
            mac: self.mac + o.mac,
            act: self.act + o.act,
            act_grad: self.act_grad + o.act_grad,
        }
    }
}

impl AddAssign for Ops {
    fn add_assign(&mut self, o: Ops) {
        *self = *self + o;
    }
}

/// Repeating the same work `n` times.
impl Mul<u128> for Ops {
    type Output = Ops;
    fn mul(self, n: u128) -> Ops {
        Ops {
            mul: self.mul * n,
            add: self.add * n,
            div: self.div * n,
            cmp: self.cmp * n,
            fns: FnCounts {
                exp: self.fns.exp * n,
                ln: self.fns.ln * n,
                sqrt: self.fns.sqrt * n,
                tanh: self.fns.tanh * n,
            },
            mac: self.mac * n,
            act: self.act * n,
            act_grad: self.act_grad * n,
        }
    }
}

impl std::iter::Sum for Ops {
    fn sum<I: Iterator<Item = Ops>>(iter: I) -> Ops {
        iter.fold(Ops::ZERO, |a, b| a + b)
    }
}

/// JSON form: the contract's integer fields plus `fn_by` (per function) and the derived `flop`.
impl Serialize for Ops {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(10))?;
        m.serialize_entry("mul", &self.mul)?;
        m.serialize_entry("add", &self.add)?;
        m.serialize_entry("div", &self.div)?;
        m.serialize_entry("cmp", &self.cmp)?;
        m.serialize_entry("fn", &self.fns.total())?;
        m.serialize_entry("fn_by", &self.fns)?;
        m.serialize_entry("flop", &self.flop())?;
        m.serialize_entry("mac", &self.mac)?;
        m.serialize_entry("act", &self.act)?;
        m.serialize_entry("act_grad", &self.act_grad)?;
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flop_sums_primitive_fields_only() {
        let o = Ops {
            mul: 1,
            add: 2,
            div: 3,
            cmp: 4,
            fns: FnCounts { exp: 5, ln: 6, sqrt: 7, tanh: 8 },
            mac: 100,
            act: 100,
            act_grad: 100,
        };
        assert_eq!(o.flop(), 1 + 2 + 3 + 4 + 5 + 6 + 7 + 8);
        assert_eq!((o * 3).flop(), 3 * o.flop());
        assert_eq!((o + o), o * 2);
    }

    #[test]
    fn json_has_contract_keys() {
        let v = serde_json::to_value(Ops { mul: 2, ..Ops::ZERO }).unwrap();
        for k in ["mul", "add", "div", "cmp", "fn", "flop", "mac", "act", "act_grad"] {
            assert!(v.get(k).is_some(), "missing {k}");
        }
        assert_eq!(v["flop"], 2);
    }
}
