//! Numbers a user gives (`--lr`, `--gflops`, `--bandwidth`), checked before any work starts: one
//! rule, one message, whether clap parses the flag or a library caller passes the value.

use crate::error::{Error, Result};

/// Why `x` is no positive finite number, or `None` when it is one.
fn not_positive(x: f64) -> Option<String> {
    outside(x, false)
}

/// Why `x` is not finite and above 0 (or, with `zero_ok`, 0 or more); `None` when it is.
fn outside(x: f64, zero_ok: bool) -> Option<String> {
    let want = if zero_ok { "a finite number of 0 or more" } else { "a finite number above 0" };
    if x.is_finite() && (x > 0.0 || (zero_ok && x == 0.0)) {
        None
    } else if x.is_nan() {
        Some(format!("NaN is not a number; give {want}"))
    } else if x.is_infinite() {
        Some(format!("{x} is not finite; give {want}"))
    } else {
        Some(format!("{x} is {} 0; give {want}", if zero_ok { "below" } else { "not above" }))
    }
}

/// `x` if it is finite and above 0, else a usage error (exit 2) naming `what` (e.g. `--lr`).
pub fn positive(what: &str, x: f64) -> Result<f64> {
    match not_positive(x) {
        None => Ok(x),
        Some(why) => Err(Error::Usage(format!("{what}: {why}"))),
    }
}

/// The same rule as a clap value parser: `#[arg(value_parser = flopnet::numbers::parse_positive)]`.
pub fn parse_positive(text: &str) -> std::result::Result<f64, String> {
    let x: f64 = text.trim().parse().map_err(|_| format!("`{text}` is not a number; give a finite number above 0"))?;
    not_positive(x).map_or(Ok(x), Err)
}

/// `x` if it is finite and 0 or more (`--weight-decay`), else a usage error (exit 2) naming `what`.
pub fn non_negative(what: &str, x: f64) -> Result<f64> {
    match outside(x, true) {
        None => Ok(x),
        Some(why) => Err(Error::Usage(format!("{what}: {why}"))),
    }
}

/// The same rule as a clap value parser.
pub fn parse_non_negative(text: &str) -> std::result::Result<f64, String> {
    let x: f64 =
        text.trim().parse().map_err(|_| format!("`{text}` is not a number; give a finite number of 0 or more"))?;
    outside(x, true).map_or(Ok(x), Err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_rule_and_its_words() {
        assert_eq!(parse_positive("0.001"), Ok(0.001));
        assert_eq!(parse_positive("1e6"), Ok(1e6));
        for (text, says) in [
            ("nan", "NaN is not a number"),
            ("inf", "inf is not finite"),
            ("-inf", "-inf is not finite"),
            ("0", "0 is not above 0"),
            ("-0.1", "-0.1 is not above 0"),
            ("1e400", "inf is not finite"),
            ("fast", "`fast` is not a number"),
        ] {
            let e = parse_positive(text).unwrap_err();
            assert!(e.starts_with(says), "{text}: {e}");
        }
        assert_eq!(
            positive("--lr", -1.0).unwrap_err().to_string(),
            "--lr: -1 is not above 0; give a finite number above 0"
        );
        assert_eq!(positive("--lr", -1.0).unwrap_err().exit_code(), 2);
    }

    proptest! {
        /// Any f64, written as Rust writes it: accepted exactly when finite and above 0, and
        /// then read back as the same number.
        #[test]
        fn accepted_exactly_when_finite_and_positive(bits in any::<u64>()) {
            let x = f64::from_bits(bits);
            let parsed = parse_positive(&x.to_string());
            prop_assert_eq!(parsed.is_ok(), x.is_finite() && x > 0.0);
            prop_assert_eq!(positive("x", x).is_ok(), parsed.is_ok());
            if let Ok(y) = parsed {
                prop_assert_eq!(y.to_bits(), x.to_bits());
            }
        }
    }
}
