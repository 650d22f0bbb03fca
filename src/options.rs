//! Rules every subcommand applies to its options alike: a count is at least 1, and an option
//! the network leaves nothing to do for is refused rather than ignored.

use crate::error::{Error, Result};
use crate::spec::{self, Activation, Defaults, Spec};

/// A count given on the command line (threads, batch, epochs, examples, runs, steps): a whole
/// number of at least 1, the one rule every subcommand applies (clap calls it, so a refusal
/// exits 2 before anything runs).
pub fn at_least_one<T: std::str::FromStr + From<u8> + PartialOrd>(s: &str) -> std::result::Result<T, String> {
    match s.trim().parse::<T>() {
        Ok(n) if n >= T::from(1) => Ok(n),
        _ => Err("must be a whole number of at least 1".into()),
    }
}

/// Refuses `--act` or `--out` where `spec` (loaded from `arg` with `used`) would be the same
/// network without it: loaded again with another value for the option, nothing changes.
pub fn check_defaults_used(
    arg: &str,
    spec: &Spec,
    used: Defaults,
    act: Option<Activation>,
    out: Option<Activation>,
) -> Result<()> {
    let other = |a: Activation| if a == Activation::Identity { Activation::Sigmoid } else { Activation::Identity };
    let unused = |flag: &str, a: Activation, what: &str| {
        Err(Error::Usage(format!("--{flag} {a} changes nothing: {what} in {arg}; leave --{flag} out")))
    };
    if let Some(a) = act
        && spec::load(arg, Defaults { hidden: other(a), ..used })? == *spec
    {
        return unused("act", a, "every hidden layer names its activation, or there is none,");
    }
    if let Some(a) = out
        && spec::load(arg, Defaults { output: other(a), ..used })? == *spec
    {
        return unused("out", a, "the output layer names its activation");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ACTS: [Activation; 4] = [Activation::Relu, Activation::Tanh, Activation::Sigmoid, Activation::Identity];

    proptest! {
        /// `--act` is accepted exactly when some hidden layer names no activation, `--out`
        /// exactly when the output layer names none.
        #[test]
        fn an_option_is_refused_exactly_when_it_changes_nothing(
            hidden in proptest::collection::vec((1usize..6, proptest::option::of(0usize..4)), 0..4),
            output in proptest::option::of(0usize..4),
            act in 0usize..4,
            out in 0usize..4,
        ) {
            let mut arg = "3".to_string();
            for (w, a) in &hidden {
                arg += &format!("-{w}{}", a.map_or(String::new(), |a| format!(":{}", ACTS[a])));
            }
            arg += &format!("-2{}", output.map_or(String::new(), |a| format!(":{}", ACTS[a])));
            let used = Defaults { hidden: ACTS[act], output: ACTS[out] };
            let spec = spec::load(&arg, used).unwrap();
            let act_used = hidden.iter().any(|(_, a)| a.is_none());
            let act_ok = check_defaults_used(&arg, &spec, used, Some(ACTS[act]), None).is_ok();
            prop_assert_eq!(act_ok, act_used, "--act on {}", arg);
            let out_ok = check_defaults_used(&arg, &spec, used, None, Some(ACTS[out])).is_ok();
            prop_assert_eq!(out_ok, output.is_none(), "--out on {}", arg);
        }
    }

    #[test]
    fn counts_are_at_least_one() {
        assert_eq!(at_least_one::<u64>("1"), Ok(1));
        assert_eq!(at_least_one::<usize>(" 7 "), Ok(7));
        for bad in ["0", "-1", "1.5", "", "x"] {
            assert!(at_least_one::<u64>(bad).is_err(), "{bad}");
        }
    }
}
