//! Durations written as text (`"2s"`, `"500ms"`, `"1m 30s"`) and rates written as numbers or
//! text (`2000`, `"20k/s"`).

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serializer};

/// Parses a duration the way scenario files write it: a number with a unit, `"2s"`,
/// `"500ms"`, `"1m 30s"` (humantime syntax).
///
/// # Errors
/// A message saying what was expected, when `text` is not such a duration.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    if !trimmed.is_empty() && trimmed.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(format!(
            "invalid duration \"{text}\": a unit is required, for example \"{trimmed}s\" or \"{trimmed}ms\""
        ));
    }
    humantime::parse_duration(trimmed).map_err(|e| {
        format!("invalid duration \"{text}\" ({e}): expected a duration like \"2s\", \"500ms\" or \"1m 30s\"")
    })
}

/// Formats a duration the way [`parse_duration`] reads it back (`"2s"`, `"1s 500ms"`).
pub fn format_duration(duration: Duration) -> String {
    if duration.is_zero() {
        "0s".to_owned()
    } else {
        humantime::format_duration(duration).to_string()
    }
}

/// Parses a rate in messages per second: `"2000"`, `"2000/s"`, `"20k/s"`, `"1.5M/s"`.
///
/// # Errors
/// A message saying what was expected, when `text` is not such a rate.
pub fn parse_rate(text: &str) -> Result<f64, String> {
    let invalid = || {
        format!(
            "invalid rate \"{text}\": expected msgs/s as a number or a string like \"500/s\", \"20k/s\" or \"1.5M/s\""
        )
    };
    let body = text.trim();
    let body = body.strip_suffix("/s").unwrap_or(body).trim_end();
    let (number, scale) = if let Some(n) = body.strip_suffix(['k', 'K']) {
        (n, 1e3)
    } else if let Some(n) = body.strip_suffix('M') {
        (n, 1e6)
    } else {
        (body, 1.0)
    };
    let number = number.trim();
    if number.is_empty() || !number.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(invalid());
    }
    number
        .parse::<f64>()
        .map(|n| n * scale)
        .map_err(|_| invalid())
}

/// Serde glue: a [`Duration`] field stored as text.
pub(crate) mod duration_text {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(
        duration: &Duration,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format_duration(*duration))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Duration, D::Error> {
        DurationText::deserialize(deserializer).map(|d| d.0)
    }
}

/// A duration read from text; integers are refused with a hint to add a unit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct DurationText(pub(crate) Duration);

impl<'de> Deserialize<'de> for DurationText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DurationVisitor;

        impl Visitor<'_> for DurationVisitor {
            type Value = DurationText;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration string like \"2s\" or \"500ms\"")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<DurationText, E> {
                parse_duration(v).map(DurationText).map_err(E::custom)
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<DurationText, E> {
                Err(E::custom(format!(
                    "a duration needs a unit: write \"{v}s\" for seconds or \"{v}ms\" for milliseconds"
                )))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<DurationText, E> {
                Err(E::custom(format!(
                    "a duration needs a unit: write \"{v}s\" for seconds or \"{v}ms\" for milliseconds"
                )))
            }

            fn visit_f64<E: de::Error>(self, v: f64) -> Result<DurationText, E> {
                Err(E::custom(format!(
                    "a duration needs a unit: write \"{v}s\" for seconds or \"{v}ms\" for milliseconds"
                )))
            }
        }

        deserializer.deserialize_any(DurationVisitor)
    }
}

/// A rate read from a number or from text such as `"20k/s"`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct RateValue(pub(crate) f64);

impl<'de> Deserialize<'de> for RateValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RateVisitor;

        impl Visitor<'_> for RateVisitor {
            type Value = RateValue;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("msgs/s as a number or a string like \"20k/s\"")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<RateValue, E> {
                parse_rate(v).map(RateValue).map_err(E::custom)
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RateValue, E> {
                #[allow(clippy::cast_precision_loss)] // rates far below 2^53 msgs/s
                Ok(RateValue(v as f64))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RateValue, E> {
                #[allow(clippy::cast_precision_loss)] // rates far below 2^53 msgs/s
                Ok(RateValue(v as f64))
            }

            fn visit_f64<E: de::Error>(self, v: f64) -> Result<RateValue, E> {
                Ok(RateValue(v))
            }
        }

        deserializer.deserialize_any(RateVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_and_write_back() {
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m 30s"), Ok(Duration::from_secs(90)));
        for d in [
            Duration::ZERO,
            Duration::from_millis(1500),
            Duration::from_secs(3600),
        ] {
            assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
        assert!(
            parse_duration("5")
                .unwrap_err()
                .contains("a unit is required")
        );
        assert!(
            parse_duration("2 sex")
                .unwrap_err()
                .contains("expected a duration like")
        );
    }

    #[test]
    fn rates_accept_numbers_and_suffixes() {
        assert_eq!(parse_rate("2000"), Ok(2000.0));
        assert_eq!(parse_rate("500/s"), Ok(500.0));
        assert_eq!(parse_rate("20k/s"), Ok(20_000.0));
        assert_eq!(parse_rate("1.5M/s"), Ok(1_500_000.0));
        assert_eq!(parse_rate("2.5k"), Ok(2500.0));
        for bad in ["", "k/s", "fast", "-5/s", "20x/s", "1e3"] {
            assert!(
                parse_rate(bad).unwrap_err().contains("invalid rate"),
                "{bad}"
            );
        }
    }
}
