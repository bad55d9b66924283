//! `value_parser`s for clap: numbers with the range a setting needs, checked when the flags
//! are parsed (so `--epochs 0` is refused before anything runs, with the flag named by clap),
//! and the registry's providers as `--provider`'s possible values.

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use xlt_backends::ProviderKind;

/// `--provider`: one of the registry's names ([`ProviderKind::ALL`]), each listed in `--help`
/// with its one-line description.
pub fn provider() -> impl TypedValueParser<Value = ProviderKind> {
    PossibleValuesParser::new(
        ProviderKind::ALL.map(|k| PossibleValue::new(k.name()).help(k.help())),
    )
    .map(|s| s.parse::<ProviderKind>().expect("a listed name"))
}

/// A whole number of at least 1 (`--concurrency`, `--epochs`: 0 would hang or do nothing).
///
/// # Errors
/// The number's parse error, or "must be at least 1".
pub fn at_least_one<T>(s: &str) -> Result<T, String>
where
    T: std::str::FromStr + PartialOrd + From<u8>,
    T::Err: std::fmt::Display,
{
    let n: T = s.trim().parse().map_err(|e| format!("{e}"))?;
    if n < T::from(1) {
        Err("must be at least 1".to_owned())
    } else {
        Ok(n)
    }
}

fn number(s: &str, ok: impl Fn(f64) -> bool, why: &str) -> Result<f64, String> {
    let x: f64 = s.trim().parse().map_err(|e| format!("{e}"))?;
    if ok(x) { Ok(x) } else { Err(why.to_owned()) }
}

/// A finite number above 0 (learning rates).
///
/// # Errors
/// The number's parse error, or what the range is.
pub fn positive_number(s: &str) -> Result<f64, String> {
    let why = "must be a finite number above 0";
    number(s, |x| x.is_finite() && x > 0.0, why)
}

/// Seconds, 0 or more (`--poll-interval`).
///
/// # Errors
/// The number's parse error, or what the range is.
pub fn seconds(s: &str) -> Result<f64, String> {
    let why = "must be a finite number of seconds, 0 or more";
    number(s, |x| x.is_finite() && x >= 0.0, why)
}

/// A warm-up fraction of the optimizer steps, in [0, 1).
///
/// # Errors
/// The number's parse error, or what the range is.
pub fn warmup_ratio(s: &str) -> Result<f64, String> {
    number(s, |x| (0.0..1.0).contains(&x), "must be in [0, 1)")
}

/// A split fraction, strictly between 0 and 1.
///
/// # Errors
/// The number's parse error, or what the range is.
pub fn fraction(s: &str) -> Result<f64, String> {
    let why = "must be strictly between 0 and 1 (both sides of the split need questions)";
    number(s, |x| x > 0.0 && x < 1.0, why)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_hold_at_their_edges() {
        assert_eq!(at_least_one::<u32>(" 1 "), Ok(1));
        assert_eq!(
            at_least_one::<u32>("0"),
            Err("must be at least 1".to_owned())
        );
        assert!(at_least_one::<u32>("-1").is_err());
        assert_eq!(positive_number("2e-4"), Ok(2e-4));
        assert!(positive_number("0").is_err() && positive_number("inf").is_err());
        assert_eq!(seconds("0"), Ok(0.0));
        assert!(seconds("-0.5").is_err() && seconds("NaN").is_err());
        assert_eq!(warmup_ratio("0"), Ok(0.0));
        assert!(warmup_ratio("1").is_err());
        assert_eq!(fraction("0.7"), Ok(0.7));
        assert!(fraction("0").is_err() && fraction("1").is_err());
    }

    #[test]
    fn every_provider_is_a_possible_value() {
        let cmd = clap::Command::new("t").arg(
            clap::Arg::new("provider")
                .long("provider")
                .value_parser(provider()),
        );
        for kind in ProviderKind::ALL {
            let m = cmd
                .clone()
                .try_get_matches_from(["t", "--provider", kind.name()])
                .unwrap_or_else(|e| panic!("{}: {e}", kind.name()));
            assert_eq!(m.get_one::<ProviderKind>("provider"), Some(&kind));
        }
        assert!(
            cmd.try_get_matches_from(["t", "--provider", "nonesuch"])
                .is_err()
        );
    }
}
