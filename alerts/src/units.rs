//! Threshold values with units, in each signal's base unit: seconds for latencies, a ratio
//! in `0..=1` for availabilities, messages per second for throughput, cores for CPU,
//! bytes for memory, a count for correctness counters.

use crate::signal::Unit;

/// Parses a threshold written for a signal of unit `unit`: a TOML string with a unit
/// (`"5ms"`, `"250us"`, `"99.9%"`, `"20k/s"`, `"512MiB"`, `"150%"`) or a plain number.
///
/// # Errors
/// A sentence saying what was expected, for the caller to put beside the rule and field.
pub(crate) fn parse_threshold(value: &toml::Value, unit: Unit) -> Result<f64, String> {
    let v = match value {
        toml::Value::Integer(i) => parse_plain(*i as f64, unit)?,
        toml::Value::Float(f) => parse_plain(*f, unit)?,
        toml::Value::String(s) => parse_text(s.trim(), unit)?,
        other => {
            return Err(format!(
                "expected {}, found a {}",
                unit.expected(),
                other.type_str()
            ));
        }
    };
    if !v.is_finite() || v < 0.0 {
        return Err(format!("must be a finite, non-negative value, got {v}"));
    }
    if unit == Unit::Ratio && v > 1.0 {
        return Err(format!(
            "a ratio must lie in 0..=1 (or 0%..=100%), got {}",
            format_value(v, Unit::Ratio)
        ));
    }
    Ok(v)
}

fn parse_plain(v: f64, unit: Unit) -> Result<f64, String> {
    match unit {
        // A bare number is ambiguous for a latency (ms? s?): ask for the unit.
        Unit::Seconds => Err(format!(
            "a latency threshold needs a unit, e.g. \"{v}ms\" or \"{v}us\""
        )),
        _ => Ok(v),
    }
}

/// Splits `"12.5ms"` into `(12.5, "ms")`.
fn split_number(text: &str) -> Option<(f64, &str)> {
    let end = text
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_digit() || *c == '.' || *c == '_'))
        .map_or(text.len(), |(i, _)| i);
    let number: String = text[..end].chars().filter(|c| *c != '_').collect();
    let n = number.parse::<f64>().ok()?;
    Some((n, text[end..].trim()))
}

fn parse_text(text: &str, unit: Unit) -> Result<f64, String> {
    let bad = || format!("cannot read {text:?}: expected {}", unit.expected());
    let (n, suffix) = split_number(text).ok_or_else(bad)?;
    // Divide for sub-units (99.9 / 100 is exactly the double nearest 0.999; 99.9 * 0.01
    // is not), multiply for larger ones.
    let (mul, div) = match unit {
        Unit::Seconds => match suffix {
            "ns" => (1.0, 1e9),
            "us" | "µs" => (1.0, 1e6),
            "ms" => (1.0, 1e3),
            "s" => (1.0, 1.0),
            "m" | "min" => (60.0, 1.0),
            "h" => (3600.0, 1.0),
            _ => return Err(bad()),
        },
        Unit::Ratio | Unit::Cores => match suffix {
            "%" => (1.0, 100.0),
            "" => (1.0, 1.0),
            _ => return Err(bad()),
        },
        Unit::Rate => {
            let per_second = suffix
                .strip_suffix("/s")
                .or_else(|| suffix.strip_suffix("msg/s"))
                .unwrap_or(suffix)
                .trim();
            match per_second {
                "" => (1.0, 1.0),
                "k" | "K" => (1e3, 1.0),
                "M" => (1e6, 1.0),
                _ => return Err(bad()),
            }
        }
        Unit::Bytes => match suffix {
            "" | "B" => (1.0, 1.0),
            "KiB" => (1024.0, 1.0),
            "MiB" => (1024.0 * 1024.0, 1.0),
            "GiB" => (1024.0 * 1024.0 * 1024.0, 1.0),
            "kB" | "KB" => (1e3, 1.0),
            "MB" => (1e6, 1.0),
            "GB" => (1e9, 1.0),
            _ => return Err(bad()),
        },
        Unit::Count => match suffix {
            "" => (1.0, 1.0),
            _ => return Err(bad()),
        },
    };
    Ok(n * mul / div)
}

/// A value in its base unit, for people: `12.3ms`, `99.95%`, `20k/s`, `512MiB`, `1.5 cores`.
pub fn format_value(v: f64, unit: Unit) -> String {
    match unit {
        Unit::Seconds => {
            let (n, suffix) = if v >= 1.0 {
                (v, "s")
            } else if v >= 1e-3 {
                (v * 1e3, "ms")
            } else if v >= 1e-6 {
                (v * 1e6, "us")
            } else {
                (v * 1e9, "ns")
            };
            // Three significant digits or so: 934.9us, 64.75ms, 2.32ms.
            format!("{}{suffix}", trim(n, if n >= 100.0 { 1 } else { 2 }))
        }
        Unit::Ratio => format!("{}%", trim(v * 100.0, 4)),
        Unit::Cores => format!("{}%", trim(v * 100.0, 1)),
        Unit::Rate => {
            if v >= 1e6 {
                format!("{}M/s", trim(v / 1e6, 3))
            } else if v >= 1e3 {
                format!("{}k/s", trim(v / 1e3, 2))
            } else {
                format!("{}/s", trim(v, 1))
            }
        }
        Unit::Bytes => {
            let mib = 1024.0 * 1024.0;
            if v >= 1024.0 * mib {
                format!("{}GiB", trim(v / (1024.0 * mib), 2))
            } else if v >= mib {
                format!("{}MiB", trim(v / mib, 1))
            } else if v >= 1024.0 {
                format!("{}KiB", trim(v / 1024.0, 1))
            } else {
                format!("{}B", trim(v, 0))
            }
        }
        Unit::Count => trim(v, 0),
    }
}

/// `n` with at most `decimals` decimals and no trailing zeros.
fn trim(n: f64, decimals: usize) -> String {
    let s = format!("{n:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str, unit: Unit) -> Result<f64, String> {
        parse_threshold(&toml::Value::String(s.into()), unit)
    }

    #[test]
    fn parses_units() {
        assert_eq!(text("5ms", Unit::Seconds), Ok(0.005));
        assert_eq!(text("250us", Unit::Seconds), Ok(0.000_25));
        assert_eq!(text("1.5s", Unit::Seconds), Ok(1.5));
        assert_eq!(
            text("99.9%", Unit::Ratio).map(|v| (v * 1e6).round()),
            Ok(999_000.0)
        );
        assert_eq!(
            parse_threshold(&toml::Value::Float(0.999), Unit::Ratio),
            Ok(0.999)
        );
        assert_eq!(text("20k/s", Unit::Rate), Ok(20_000.0));
        assert_eq!(text("1500/s", Unit::Rate), Ok(1_500.0));
        assert_eq!(text("512MiB", Unit::Bytes), Ok(512.0 * 1024.0 * 1024.0));
        assert_eq!(text("150%", Unit::Cores), Ok(1.5));
        assert_eq!(
            parse_threshold(&toml::Value::Integer(0), Unit::Count),
            Ok(0.0)
        );
    }

    #[test]
    fn refuses_wrong_units() {
        let e = parse_threshold(&toml::Value::Integer(5), Unit::Seconds).unwrap_err();
        assert!(e.contains("needs a unit"), "{e}");
        assert!(text("5 parsecs", Unit::Seconds).is_err());
        assert!(text("5ms", Unit::Ratio).is_err());
        assert!(text("120%", Unit::Ratio).unwrap_err().contains("0..=1"));
        assert!(parse_threshold(&toml::Value::Boolean(true), Unit::Count).is_err());
        assert!(text("-3", Unit::Count).is_err());
    }

    #[test]
    fn formats_values() {
        assert_eq!(format_value(0.0123, Unit::Seconds), "12.3ms");
        assert_eq!(format_value(0.000_25, Unit::Seconds), "250us");
        assert_eq!(format_value(0.9995, Unit::Ratio), "99.95%");
        assert_eq!(format_value(20_000.0, Unit::Rate), "20k/s");
        assert_eq!(format_value(512.0 * 1024.0 * 1024.0, Unit::Bytes), "512MiB");
        assert_eq!(format_value(3.0, Unit::Count), "3");
    }
}
