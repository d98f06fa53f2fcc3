//! Histograms and the formatting of counts, rates and latencies.

use std::time::Duration;

use hdrhistogram::Histogram;

use crate::{HIST_MAX_NS, Result};

/// `1234567` -> `1,234,567`.
pub(crate) fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub(crate) fn per_second(count: u64, elapsed: Duration) -> u64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 {
        (count as f64 / secs).round() as u64
    } else {
        0
    }
}

pub(crate) fn new_histogram() -> Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, HIST_MAX_NS, 3)?)
}

/// Records `value` (ns), clamping to the histogram's range; returns whether it clamped.
pub(crate) fn record(histogram: &mut Histogram<u64>, value: u64) -> bool {
    histogram.saturating_record(value);
    value > histogram.high()
}

pub(crate) fn us(ns: u64) -> String {
    format!("{:.1}", ns as f64 / 1000.0)
}

pub(crate) fn percentiles(histogram: &Histogram<u64>) -> String {
    if histogram.is_empty() {
        return "no samples".to_string();
    }
    format!(
        "p50 {:>9}  p90 {:>9}  p99 {:>9}  p99.9 {:>9}  max {:>9} µs  (n={})",
        us(histogram.value_at_quantile(0.50)),
        us(histogram.value_at_quantile(0.90)),
        us(histogram.value_at_quantile(0.99)),
        us(histogram.value_at_quantile(0.999)),
        us(histogram.max()),
        group(histogram.len()),
    )
}
