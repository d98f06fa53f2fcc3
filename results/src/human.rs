//! Figures in human units, shared by the terminal summary, the report and the comparison
//! table.
//!
//! Every function renders an absent figure as `-`: a missing latency is not a zero one.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A time in UTC to the second, RFC 3339 (`2026-11-22T10:13:15Z`); `?` if it cannot be
/// formatted (a year outside 0..=9999).
pub(crate) fn utc_seconds(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .replace_nanosecond(0)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| "?".to_owned())
}

/// A latency in microseconds with a human unit (`ns`, `µs`, `ms`, `s`), three significant
/// digits where it matters; `-` when absent.
pub(crate) fn latency_us(us: Option<f64>) -> String {
    match us {
        None => "-".to_owned(),
        Some(v) if v < 1.0 => format!("{:.0} ns", v * 1_000.0),
        Some(v) if v < 10.0 => format!("{v:.2} µs"),
        Some(v) if v < 1_000.0 => format!("{v:.1} µs"),
        Some(v) if v < 1_000_000.0 => format!("{:.2} ms", v / 1_000.0),
        Some(v) => format!("{:.2} s", v / 1_000_000.0),
    }
}

/// An axis label for a latency in microseconds: as short as the value allows
/// (`500µs`, `2.5ms`, `1s`).
pub(crate) fn latency_tick_us(us: f64) -> String {
    let (value, unit) = if us >= 1_000_000.0 {
        (us / 1_000_000.0, "s")
    } else if us >= 1_000.0 {
        (us / 1_000.0, "ms")
    } else if us >= 1.0 {
        (us, "µs")
    } else {
        (us * 1_000.0, "ns")
    };
    format!("{}{unit}", trim_number(value))
}

/// A number with at most 3 decimals and no trailing zeros (`2.5`, `10`, `0.125`).
pub(crate) fn trim_number(value: f64) -> String {
    let text = format!("{value:.3}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" {
        "0".to_owned()
    } else {
        text.to_owned()
    }
}

/// A ratio as a percentage with three decimals; `-` when absent.
pub(crate) fn percent(ratio: Option<f64>) -> String {
    ratio.map_or_else(|| "-".to_owned(), |r| format!("{:.3} %", r * 100.0))
}

/// Bytes with a binary unit; `-` when absent.
pub(crate) fn bytes(b: Option<f64>) -> String {
    const KIB: f64 = 1024.0;
    const MIB: f64 = KIB * 1024.0;
    const GIB: f64 = MIB * 1024.0;
    match b {
        None => "-".to_owned(),
        Some(b) if b < MIB => format!("{:.1} KiB", b / KIB),
        Some(b) if b < GIB => format!("{:.1} MiB", b / MIB),
        Some(b) => format!("{:.2} GiB", b / GIB),
    }
}

/// A rate in messages per second with a thousands suffix (`950.0/s`, `12.35k/s`).
pub(crate) fn rate(per_s: Option<f64>) -> String {
    match per_s {
        None => "-".to_owned(),
        Some(r) if r.abs() >= 1_000_000.0 => format!("{:.2}M/s", r / 1_000_000.0),
        Some(r) if r.abs() >= 10_000.0 => format!("{:.2}k/s", r / 1_000.0),
        Some(r) => format!("{r:.1}/s"),
    }
}

/// A count with thin grouping (`1 234 567`); `-` when absent.
pub(crate) fn count(n: Option<f64>) -> String {
    let Some(n) = n else {
        return "-".to_owned();
    };
    if n.fract() != 0.0 || n.abs() >= 1e18 {
        return format!("{n:.1}");
    }
    let digits = format!("{}", n.abs() as u64);
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if n < 0.0 {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

/// CPU as a percentage of one core, one decimal; `-` when absent.
pub(crate) fn cpu(percent: Option<f64>) -> String {
    percent.map_or_else(|| "-".to_owned(), |p| format!("{p:.1} %"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(latency_us(None), "-");
        assert_eq!(latency_us(Some(0.512)), "512 ns");
        assert_eq!(latency_us(Some(1.5)), "1.50 µs");
        assert_eq!(latency_us(Some(123.45)), "123.5 µs");
        assert_eq!(latency_us(Some(1_234.0)), "1.23 ms");
        assert_eq!(latency_us(Some(2_500_000.0)), "2.50 s");
        assert_eq!(latency_tick_us(500.0), "500µs");
        assert_eq!(latency_tick_us(2_500.0), "2.5ms");
        assert_eq!(latency_tick_us(1_000_000.0), "1s");
        assert_eq!(latency_tick_us(0.1), "100ns");
        assert_eq!(percent(Some(0.99998)), "99.998 %");
        assert_eq!(bytes(Some(3.0 * 1024.0 * 1024.0)), "3.0 MiB");
        assert_eq!(rate(Some(12_345.0)), "12.35k/s");
        assert_eq!(rate(Some(950.0)), "950.0/s");
        assert_eq!(count(Some(1_234_567.0)), "1 234 567");
        assert_eq!(count(Some(12.0)), "12");
        assert_eq!(count(Some(0.0)), "0");
        assert_eq!(trim_number(10.0), "10");
        assert_eq!(trim_number(0.125), "0.125");
    }
}
