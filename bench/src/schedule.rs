//! Open-loop schedules: message `i` of a producer is due at a fixed time computed from the
//! rate schedule alone, whatever happened to messages before it.
//!
//! A producer that falls behind sends late; it never pushes the schedule back. That is
//! what makes the corrected latency (measured from the due time) honest about stalls.

use std::time::Duration;

use crate::plan::RateSchedule;

/// Due times of one producer's messages.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// Segments in ns from the start of the warm-up: (start, length, from rate, to rate,
    /// messages before the segment).
    segments: Vec<Segment>,
    end_ns: u64,
    burst: u64,
    phase_ns: u64,
}

#[derive(Debug, Clone, Copy)]
struct Segment {
    start_s: f64,
    len_s: f64,
    from: f64,
    to: f64,
    before: f64,
}

impl Schedule {
    /// The schedule of a producer that warms up for `warmup` at the first rate, then
    /// follows `rate` for `duration`; with bursts of `burst` messages sharing a due time.
    pub fn new(rate: &RateSchedule, warmup: Duration, duration: Duration, burst: u32) -> Self {
        Self::with_phase(rate, warmup, duration, burst, Duration::ZERO)
    }

    /// As [`Schedule::new`], with every due time shifted by `phase` (messages that would
    /// fall after the end are not sent).
    pub fn with_phase(
        rate: &RateSchedule,
        warmup: Duration,
        duration: Duration,
        burst: u32,
        phase: Duration,
    ) -> Self {
        let burst = u64::from(burst.max(1));
        let mut segments = Vec::new();
        let mut before = 0.0;
        let mut start = 0.0;
        let per_burst = |r: f64| r / burst as f64;
        let first = rate.segments.first().map_or(0.0, |s| s.from);
        let warm = warmup.as_secs_f64();
        if warm > 0.0 {
            segments.push(Segment {
                start_s: 0.0,
                len_s: warm,
                from: per_burst(first),
                to: per_burst(first),
                before,
            });
            before += per_burst(first) * warm;
            start = warm;
        }
        let end = warm + duration.as_secs_f64();
        for seg in &rate.segments {
            if start >= end {
                break;
            }
            let len = seg.duration.as_secs_f64().min(end - start);
            let (from, to_full) = (per_burst(seg.from), per_burst(seg.to));
            // Rate reached at the (possibly cut) end of the segment.
            let frac = if seg.duration.as_secs_f64() > 0.0 {
                len / seg.duration.as_secs_f64()
            } else {
                1.0
            };
            let to = from + (to_full - from) * frac;
            segments.push(Segment {
                start_s: start,
                len_s: len,
                from,
                to,
                before,
            });
            before += (from + to) / 2.0 * len;
            start += len;
        }
        if start < end {
            let last = rate.segments.last().map_or(0.0, |s| per_burst(s.to));
            segments.push(Segment {
                start_s: start,
                len_s: end - start,
                from: last,
                to: last,
                before,
            });
        }
        Self {
            segments,
            end_ns: (end * 1e9) as u64,
            burst,
            phase_ns: phase.as_nanos() as u64,
        }
    }

    /// When message `i` is due, in ns from the start of the warm-up; `None` once the
    /// schedule is over.
    pub fn due_ns(&self, i: u64) -> Option<u64> {
        let burst = i / self.burst;
        let n = burst as f64;
        for seg in &self.segments {
            let count = (seg.from + seg.to) / 2.0 * seg.len_s;
            if n < seg.before + count {
                let k = n - seg.before;
                let t = if (seg.to - seg.from).abs() < 1e-12 {
                    k / seg.from
                } else {
                    // Solve from·t + (to−from)/(2·len)·t² = k for t ≥ 0.
                    let a = (seg.to - seg.from) / (2.0 * seg.len_s);
                    let disc = (seg.from * seg.from + 4.0 * a * k).max(0.0);
                    (disc.sqrt() - seg.from) / (2.0 * a)
                };
                let due = ((seg.start_s + t) * 1e9) as u64 + self.phase_ns;
                return (due < self.end_ns).then_some(due);
            }
        }
        None
    }

    /// How many messages are due before `t_ns` (from the start of the warm-up).
    pub fn count_before(&self, t_ns: u64) -> u64 {
        if t_ns <= self.phase_ns {
            return 0;
        }
        let t = (t_ns - self.phase_ns).min(self.end_ns.saturating_sub(self.phase_ns)) as f64 / 1e9;
        let mut bursts = 0.0;
        for seg in &self.segments {
            if t <= seg.start_s {
                break;
            }
            let dt = (t - seg.start_s).min(seg.len_s);
            let rate_at = seg.from + (seg.to - seg.from) * dt / seg.len_s.max(f64::MIN_POSITIVE);
            bursts = seg.before + (seg.from + rate_at) / 2.0 * dt;
        }
        // Bursts whose due time is strictly before t: the k-th burst is due at the time
        // the cumulative count reaches k, so ceil() of the count.
        (bursts.ceil() as u64).saturating_mul(self.burst)
    }

    /// End of the schedule, in ns from the start of the warm-up.
    pub fn end_ns(&self) -> u64 {
        self.end_ns
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::RateSegment;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn constant_rate_is_evenly_spaced_and_ends_on_time() {
        let s = Schedule::new(&RateSchedule::constant(1000.0), Duration::ZERO, 2 * S, 1);
        assert_eq!(s.due_ns(0), Some(0));
        assert_eq!(s.due_ns(1), Some(1_000_000));
        assert_eq!(s.due_ns(1999), Some(1_999_000_000));
        assert_eq!(s.due_ns(2000), None);
        assert_eq!(s.count_before(2_000_000_000), 2000);
        assert_eq!(s.count_before(1_000_000), 1);
        assert_eq!(s.count_before(1_000_001), 2);
    }

    #[test]
    fn warmup_runs_at_the_first_rate() {
        let s = Schedule::new(&RateSchedule::constant(10.0), S, S, 1);
        assert_eq!(s.due_ns(10), Some(1_000_000_000));
        assert_eq!(s.due_ns(19), Some(1_900_000_000));
        assert_eq!(s.due_ns(20), None);
    }

    #[test]
    fn bursts_share_a_due_time() {
        let s = Schedule::new(&RateSchedule::constant(100.0), Duration::ZERO, S, 10);
        assert_eq!(s.due_ns(0), Some(0));
        assert_eq!(s.due_ns(9), Some(0));
        assert_eq!(s.due_ns(10), Some(100_000_000));
        assert_eq!(s.due_ns(99), Some(900_000_000));
        assert_eq!(s.due_ns(100), None);
    }

    #[test]
    fn steps_and_ramps() {
        let rate = RateSchedule {
            segments: vec![
                RateSegment {
                    duration: S,
                    from: 100.0,
                    to: 100.0,
                },
                RateSegment {
                    duration: S,
                    from: 0.0,
                    to: 200.0,
                },
                RateSegment {
                    duration: S,
                    from: 300.0,
                    to: 300.0,
                },
            ],
        };
        let s = Schedule::new(&rate, Duration::ZERO, 3 * S, 1);
        assert_eq!(s.due_ns(99), Some(990_000_000));
        // Ramp 0 → 200/s over 1 s: n(t) = 100 t², so message 100 + 25 is due at 1.5 s.
        assert_eq!(s.due_ns(125), Some(1_500_000_000));
        assert_eq!(s.due_ns(200), Some(2_000_000_000));
        assert_eq!(s.due_ns(200 + 150), Some(2_500_000_000));
        assert_eq!(s.due_ns(500), None);
        assert_eq!(s.count_before(3_000_000_000), 500);
        // Due times never go backwards.
        let dues: Vec<u64> = (0..500).map(|i| s.due_ns(i).unwrap()).collect();
        assert!(dues.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn a_phase_shifts_every_due_time_and_cuts_at_the_end() {
        let s = Schedule::with_phase(
            &RateSchedule::constant(10.0),
            Duration::ZERO,
            S,
            1,
            Duration::from_millis(50),
        );
        assert_eq!(s.due_ns(0), Some(50_000_000));
        assert_eq!(s.due_ns(9), Some(950_000_000));
        assert_eq!(s.due_ns(10), None);
        assert_eq!(s.count_before(50_000_000), 0);
        assert_eq!(s.count_before(50_000_001), 1);
        assert_eq!(s.count_before(2_000_000_000), 10);
    }

    #[test]
    fn zero_rate_sends_nothing() {
        let s = Schedule::new(&RateSchedule::constant(0.0), S, S, 1);
        assert_eq!(s.due_ns(0), None);
    }
}
