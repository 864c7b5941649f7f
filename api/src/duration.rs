//! Durations in Istio's string form: `"1.5s"`, `"250ms"`, `"1m30s"`, `"10s"`.
//!
//! Istio accepts Go's duration syntax (a sequence of decimal numbers, each with a unit among `ns`,
//! `us`, `µs`, `ms`, `s`, `m`, `h`). The text is kept as written so a round trip through the mesh
//! changes nothing; [`Duration::parse`] turns it into a [`std::time::Duration`] and
//! [`crate::validate`] reports the ones that do not parse.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A duration as written in the config (`timeout: 1.5s`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct Duration(String);

/// Why a duration string was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Nothing was written.
    #[error("duration is empty")]
    Empty,
    /// A leading minus sign.
    #[error("duration {0:?} is negative")]
    Negative(String),
    /// A number with no unit after it, such as `"10"`.
    #[error(
        "duration {0:?} has a number without a unit (use ns, us, ms, s, m or h, as in \"10s\")"
    )]
    MissingUnit(String),
    /// A unit that is not one of `ns us µs ms s m h`.
    #[error("duration {input:?} has unknown unit {unit:?} (use ns, us, ms, s, m or h)")]
    UnknownUnit {
        /// The whole input.
        input: String,
        /// The unit that was not understood.
        unit: String,
    },
    /// Characters that are neither digits, a decimal point nor a unit.
    #[error("duration {0:?} is not a number followed by a unit, as in \"1.5s\" or \"250ms\"")]
    Malformed(String),
    /// More than the 64-bit nanosecond counter can hold.
    #[error("duration {0:?} is too large")]
    Overflow(String),
}

impl Duration {
    /// Wraps a duration string without checking it; see [`Duration::parse`].
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    /// Formats a [`std::time::Duration`] the way Istio prints one (`"1.5s"`, `"0.250s"` is
    /// written `"250ms"`).
    pub fn from_std(duration: std::time::Duration) -> Self {
        let nanos = duration.as_nanos();
        let text = if nanos == 0 {
            "0s".to_owned()
        } else if nanos.is_multiple_of(1_000_000_000) {
            format!("{}s", nanos / 1_000_000_000)
        } else if nanos.is_multiple_of(1_000_000) {
            format!("{}ms", nanos / 1_000_000)
        } else if nanos.is_multiple_of(1_000) {
            format!("{}us", nanos / 1_000)
        } else {
            format!("{nanos}ns")
        };
        Self(text)
    }

    /// The text as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Parses the text (Go duration syntax).
    pub fn parse(&self) -> Result<std::time::Duration, DurationError> {
        parse(&self.0)
    }
}

impl std::fmt::Display for Duration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for Duration {
    fn from(text: &str) -> Self {
        Self::new(text)
    }
}

/// Parses Go duration syntax into a [`std::time::Duration`].
pub fn parse(input: &str) -> Result<std::time::Duration, DurationError> {
    if input.is_empty() {
        return Err(DurationError::Empty);
    }
    let body = match input.as_bytes()[0] {
        b'-' => return Err(DurationError::Negative(input.to_owned())),
        b'+' => &input[1..],
        _ => input,
    };
    if body == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    let overflow = || DurationError::Overflow(input.to_owned());
    let mut rest = body;
    let mut total: u128 = 0;
    if rest.is_empty() {
        return Err(DurationError::Malformed(input.to_owned()));
    }
    while !rest.is_empty() {
        let number_len =
            rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let number = &rest[..number_len];
        rest = &rest[number_len..];
        let (whole, fraction) = match number.split_once('.') {
            Some((whole, fraction)) => (whole, fraction),
            None => (number, ""),
        };
        if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
            return Err(DurationError::Malformed(input.to_owned()));
        }
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let scale: u128 = match unit {
            "" => return Err(DurationError::MissingUnit(input.to_owned())),
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            other if other.chars().all(|c| c.is_alphabetic()) => {
                return Err(DurationError::UnknownUnit {
                    input: input.to_owned(),
                    unit: other.to_owned(),
                });
            }
            _ => return Err(DurationError::Malformed(input.to_owned())),
        };
        let whole: u128 =
            if whole.is_empty() { 0 } else { whole.parse().map_err(|_| overflow())? };
        let mut nanos = whole.checked_mul(scale).ok_or_else(overflow)?;
        // Fractions beyond nanosecond precision are dropped, as Go does.
        let mut place = scale;
        for digit in fraction.bytes() {
            place /= 10;
            if place == 0 {
                break;
            }
            nanos += u128::from(digit - b'0') * place;
        }
        total = total.checked_add(nanos).ok_or_else(overflow)?;
    }
    let nanos = u64::try_from(total).map_err(|_| overflow())?;
    Ok(std::time::Duration::from_nanos(nanos))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration as Std;

    #[test]
    fn parses_istio_forms() {
        assert_eq!(parse("1.5s"), Ok(Std::from_millis(1500)));
        assert_eq!(parse("250ms"), Ok(Std::from_millis(250)));
        assert_eq!(parse("0.250s"), Ok(Std::from_millis(250)));
        assert_eq!(parse("1m30s"), Ok(Std::from_secs(90)));
        assert_eq!(parse("3m"), Ok(Std::from_secs(180)));
        assert_eq!(parse("1h"), Ok(Std::from_secs(3600)));
        assert_eq!(parse("10us"), Ok(Std::from_micros(10)));
        assert_eq!(parse("7ns"), Ok(Std::from_nanos(7)));
        assert_eq!(parse(".5s"), Ok(Std::from_millis(500)));
        assert_eq!(parse("0"), Ok(Std::ZERO));
    }

    #[test]
    fn refuses_what_istio_refuses() {
        assert_eq!(parse(""), Err(DurationError::Empty));
        assert_eq!(parse("-1s"), Err(DurationError::Negative("-1s".into())));
        assert_eq!(parse("10"), Err(DurationError::MissingUnit("10".into())));
        assert_eq!(
            parse("5sec"),
            Err(DurationError::UnknownUnit { input: "5sec".into(), unit: "sec".into() })
        );
        assert_eq!(parse("1..5s"), Err(DurationError::Malformed("1..5s".into())));
        assert_eq!(parse("s"), Err(DurationError::Malformed("s".into())));
        assert_eq!(parse("1 s"), Err(DurationError::Malformed("1 s".into())));
        assert!(matches!(parse("99999999999h"), Err(DurationError::Overflow(_))));
    }

    #[test]
    fn formats_like_istio() {
        assert_eq!(Duration::from_std(Std::from_secs(10)).as_str(), "10s");
        assert_eq!(Duration::from_std(Std::from_millis(250)).as_str(), "250ms");
        assert_eq!(Duration::from_std(Std::ZERO).as_str(), "0s");
    }
}
