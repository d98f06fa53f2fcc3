//! The latency histogram: an HdrHistogram of nanoseconds whose clamping is counted.
//!
//! Every latency brokerbench reports comes from a [`LatencyHistogram`]: values in
//! nanoseconds, lowest discernible value 1 ns, highest trackable value 1 hour, 3
//! significant digits. A value above one hour is recorded as one hour *and counted*
//! ([`LatencyHistogram::clamped`]), so an overflow can never vanish silently.
//!
//! Histograms travel as HdrHistogram V2 *compressed* (DEFLATE) payloads in base64 — the
//! same text form an HdrHistogram interval log (`.hlog`) line carries, so every
//! HdrHistogram implementation (Java, Go, JS, Rust) can decode it.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{
    DeserializeError, Deserializer, Serializer as _, V2DeflateSerializeError, V2DeflateSerializer,
};
use serde::{Deserialize, Serialize};

/// Lowest discernible value, in nanoseconds.
pub const LOWEST_NS: u64 = 1;
/// Highest trackable value, in nanoseconds (one hour). Larger values are clamped to it.
pub const HIGHEST_NS: u64 = 3_600 * 1_000_000_000;
/// Number of significant decimal digits kept for every value.
pub const SIGNIFICANT_DIGITS: u8 = 3;

/// Why a histogram could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HistogramError {
    /// The V2 compressed serializer failed.
    #[error("cannot encode histogram as HdrHistogram V2")]
    Encode(#[source] V2DeflateSerializeError),
    /// The text is not base64.
    #[error("histogram text is not valid base64")]
    Base64(#[source] base64::DecodeError),
    /// The bytes are not an HdrHistogram V2 payload.
    #[error("cannot decode HdrHistogram V2 payload")]
    Decode(#[source] DeserializeError),
    /// The payload decodes but holds values this histogram cannot hold.
    #[error(
        "decoded histogram holds values up to {max_ns} ns, above the supported {HIGHEST_NS} ns"
    )]
    OutOfRange {
        /// Largest value found in the payload, in nanoseconds.
        max_ns: u64,
    },
}

/// A latency histogram in nanoseconds (1 ns .. 1 h, 3 significant digits).
///
/// Recording never fails and never panics; merging two `LatencyHistogram`s never fails
/// because all of them share the same layout.
#[derive(Clone, Debug, PartialEq)]
pub struct LatencyHistogram {
    inner: Histogram<u64>,
    clamped: u64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyHistogram {
    /// An empty histogram.
    pub fn new() -> Self {
        // The bounds are constants checked by the unit test `constant_bounds_are_valid`:
        // this cannot fail at run time.
        let inner = Histogram::new_with_bounds(LOWEST_NS, HIGHEST_NS, SIGNIFICANT_DIGITS)
            .expect("constant HdrHistogram bounds are valid");
        Self { inner, clamped: 0 }
    }

    /// Records one value in nanoseconds. A value above [`HIGHEST_NS`] is recorded as
    /// [`HIGHEST_NS`] and counted in [`clamped`](Self::clamped).
    #[inline]
    pub fn record(&mut self, ns: u64) {
        let ns = if ns > HIGHEST_NS {
            self.clamped += 1;
            HIGHEST_NS
        } else {
            ns
        };
        // In range by construction, so this is an ordinary record that cannot clamp.
        self.inner.saturating_record(ns);
    }

    /// How many recorded values were above [`HIGHEST_NS`] and were clamped to it.
    pub fn clamped(&self) -> u64 {
        self.clamped
    }

    /// Restores a clamped count carried beside an encoded payload.
    pub(crate) fn set_clamped(&mut self, clamped: u64) {
        self.clamped = clamped;
    }

    /// Number of recorded values.
    pub fn count(&self) -> u64 {
        self.inner.len()
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }

    /// Adds every value (and the clamped count) of `other` to this histogram.
    pub fn add(&mut self, other: &LatencyHistogram) {
        // Every LatencyHistogram has the same bounds and every recorded value is
        // <= HIGHEST_NS, so the addition always fits.
        self.inner
            .add(&other.inner)
            .expect("LatencyHistograms share one layout");
        self.clamped += other.clamped;
    }

    /// The value at `quantile` (0.0 ..= 1.0) in nanoseconds, as HdrHistogram reports it
    /// (the highest value equivalent to the bucket). `None` when empty.
    pub fn value_at_quantile_ns(&self, quantile: f64) -> Option<u64> {
        (!self.is_empty()).then(|| self.inner.value_at_quantile(quantile))
    }

    /// The largest recorded value in nanoseconds (highest equivalent). `None` when empty.
    pub fn max_ns(&self) -> Option<u64> {
        (!self.is_empty()).then(|| self.inner.max())
    }

    /// The underlying HdrHistogram, for renderers (interval logs, percentile spectra).
    pub fn as_hdr(&self) -> &Histogram<u64> {
        &self.inner
    }

    /// The figures reported for this histogram.
    pub fn summary(&self) -> Summary {
        Summary::of(self)
    }

    /// Encodes the histogram as base64 of an HdrHistogram V2 compressed payload.
    /// The clamped count is not part of the payload; it travels in [`Summary::clamped`].
    ///
    /// # Errors
    /// [`HistogramError::Encode`] if the serializer fails (it writes to memory, so this
    /// only happens for counts above `i64::MAX`).
    pub fn to_base64(&self) -> Result<String, HistogramError> {
        let mut bytes = Vec::new();
        V2DeflateSerializer::new()
            .serialize(&self.inner, &mut bytes)
            .map_err(HistogramError::Encode)?;
        Ok(BASE64.encode(bytes))
    }

    /// Decodes base64 of an HdrHistogram V2 payload, compressed or not. The values are
    /// re-recorded into the standard layout, so the result merges with any other
    /// `LatencyHistogram`; its clamped count is 0.
    ///
    /// # Errors
    /// [`HistogramError::Base64`], [`HistogramError::Decode`] for malformed input,
    /// [`HistogramError::OutOfRange`] if it holds values above [`HIGHEST_NS`].
    pub fn from_base64(text: &str) -> Result<Self, HistogramError> {
        let bytes = BASE64.decode(text.trim()).map_err(HistogramError::Base64)?;
        let decoded: Histogram<u64> = Deserializer::new()
            .deserialize(&mut bytes.as_slice())
            .map_err(HistogramError::Decode)?;
        let mut out = Self::new();
        if decoded.is_empty() {
            return Ok(out);
        }
        // Our own payloads hold values <= HIGHEST_NS; the top bucket reports its highest
        // equivalent, so compare against the highest value equivalent to HIGHEST_NS.
        let limit = out.inner.highest_equivalent(HIGHEST_NS);
        if decoded.max() > limit {
            return Err(HistogramError::OutOfRange {
                max_ns: decoded.max(),
            });
        }
        out.inner
            .add(&decoded)
            .map_err(|_| HistogramError::OutOfRange {
                max_ns: decoded.max(),
            })?;
        Ok(out)
    }
}

/// The reported figures of one latency histogram, in microseconds with sub-µs
/// precision. Every quantile is `None` (JSON `null`) when `count` is 0: an empty
/// histogram has no latency, and a 0 would read as a perfect one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Number of recorded values.
    pub count: u64,
    /// Smallest value, µs.
    pub min_us: Option<f64>,
    /// Mean, µs (HdrHistogram's bucket-median mean).
    pub mean_us: Option<f64>,
    /// 50th percentile, µs.
    pub p50_us: Option<f64>,
    /// 90th percentile, µs.
    pub p90_us: Option<f64>,
    /// 99th percentile, µs.
    pub p99_us: Option<f64>,
    /// 99.9th percentile, µs.
    pub p999_us: Option<f64>,
    /// Largest value, µs.
    pub max_us: Option<f64>,
    /// Values above one hour that were recorded as one hour.
    pub clamped: u64,
}

/// Nanoseconds to microseconds, keeping the sub-microsecond part.
fn us(ns: u64) -> f64 {
    ns as f64 / 1_000.0
}

impl Summary {
    /// Computes the summary of a histogram.
    pub fn of(histogram: &LatencyHistogram) -> Self {
        let h = &histogram.inner;
        if h.is_empty() {
            return Self {
                clamped: histogram.clamped,
                ..Self::default()
            };
        }
        let q = |quantile: f64| Some(us(h.value_at_quantile(quantile)));
        Self {
            count: h.len(),
            min_us: Some(us(h.min())),
            mean_us: Some(h.mean() / 1_000.0),
            p50_us: q(0.5),
            p90_us: q(0.9),
            p99_us: q(0.99),
            p999_us: q(0.999),
            max_us: Some(us(h.max())),
            clamped: histogram.clamped,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_bounds_are_valid() {
        assert!(
            Histogram::<u64>::new_with_bounds(LOWEST_NS, HIGHEST_NS, SIGNIFICANT_DIGITS).is_ok()
        );
    }

    #[test]
    fn clamps_and_counts_values_above_range() {
        let mut h = LatencyHistogram::new();
        h.record(5_000);
        h.record(HIGHEST_NS);
        h.record(HIGHEST_NS + 1);
        h.record(u64::MAX);
        assert_eq!(h.count(), 4);
        assert_eq!(h.clamped(), 2);
        assert!(h.max_ns().unwrap() >= HIGHEST_NS);
        let s = h.summary();
        assert_eq!(s.count, 4);
        assert_eq!(s.clamped, 2);
        // Clamped values stay at the top of the range, they are not dropped.
        assert!(s.max_us.unwrap() >= HIGHEST_NS as f64 / 1_000.0);
    }

    #[test]
    fn zero_is_recorded() {
        let mut h = LatencyHistogram::new();
        h.record(0);
        assert_eq!(h.count(), 1);
        assert_eq!(h.summary().max_us, Some(0.0));
    }

    #[test]
    fn add_sums_counts_and_clamped() {
        let mut a = LatencyHistogram::new();
        let mut b = LatencyHistogram::new();
        a.record(1_000);
        b.record(2_000);
        b.record(u64::MAX);
        a.add(&b);
        assert_eq!(a.count(), 3);
        assert_eq!(a.clamped(), 1);
    }

    #[test]
    fn empty_summary_has_no_quantiles() {
        let s = LatencyHistogram::new().summary();
        assert_eq!(s.count, 0);
        assert_eq!(s.p99_us, None);
        assert_eq!(s.max_us, None);
    }

    #[test]
    fn summary_keeps_sub_microsecond_precision() {
        let mut h = LatencyHistogram::new();
        h.record(1_234); // exact below 2048 with 3 significant digits
        let s = h.summary();
        assert_eq!(s.p50_us, Some(1.234));
        assert_eq!(s.min_us, Some(1.234));
    }

    #[test]
    fn base64_round_trip() {
        let mut h = LatencyHistogram::new();
        for v in [1, 17, 999, 12_345, 7_000_000, HIGHEST_NS] {
            h.record(v);
        }
        let text = h.to_base64().unwrap();
        let back = LatencyHistogram::from_base64(&text).unwrap();
        assert_eq!(back.as_hdr(), h.as_hdr());
        let empty =
            LatencyHistogram::from_base64(&LatencyHistogram::new().to_base64().unwrap()).unwrap();
        assert!(empty.is_empty());
    }

    #[test]
    fn decode_rejects_garbage() {
        assert!(matches!(
            LatencyHistogram::from_base64("not base64!"),
            Err(HistogramError::Base64(_))
        ));
        assert!(matches!(
            LatencyHistogram::from_base64("AAAAAAAA"),
            Err(HistogramError::Decode(_))
        ));
    }

    #[test]
    fn decode_rejects_values_above_range() {
        let mut wide = Histogram::<u64>::new_with_bounds(1, u64::MAX / 2, 3).unwrap();
        wide.record(HIGHEST_NS * 4).unwrap();
        let mut bytes = Vec::new();
        V2DeflateSerializer::new()
            .serialize(&wide, &mut bytes)
            .unwrap();
        let text = BASE64.encode(bytes);
        assert!(matches!(
            LatencyHistogram::from_base64(&text),
            Err(HistogramError::OutOfRange { .. })
        ));
    }
}
