//! The figures of each fault window, read from a run's [`Timeline`].
//!
//! - **Windows.** A fault acts from its injection to its heal. Counts and latencies are
//!   those of the messages *due* from the injection until both sides recovered (the heal
//!   plus the longer recovery; to the end of the drain when a side never recovered; at
//!   least one second, so a reset, which takes no time, has messages of its own; never
//!   past the next fault's injection).
//! - **Unavailable.** The successes (confirmations; first deliveries) cut the run into
//!   gaps. A gap counts when a message was due in it and it is longer than the normal gap
//!   (four times the 99th percentile of the gaps outside every fault window, at least
//!   20 ms). A fault's unavailable window is its longest counted gap that ends after the
//!   injection and starts before the heal (plus the normal gap); a gap that never ends runs
//!   to the end of the drain. Counted gaps no fault explains are reported on their own.
//! - **Detect.** From the injection to the first failed or unknown publish, or to the
//!   moment the fault's first counted gap grew above the normal gap.
//! - **Recover.** From the heal to the first success for a message due after it; when none
//!   came, `recovered` is false and the time from the heal to the end of the drain stands
//!   as a lower bound.

use std::collections::HashMap;

use brokerbench_results::{FaultFigures, Outage, OutsideFaults};

use crate::timeline::{Arrival, Settle, Timeline};

/// Shortest a window's message range is, ns.
const MIN_WINDOW_NS: u64 = 1_000_000_000;
/// Floor of the normal gap, ns.
const MIN_NORMAL_GAP_NS: u64 = 20_000_000;
/// The normal gap is this many times the 99th percentile of the gaps outside the faults.
const NORMAL_GAP_FACTOR: u64 = 4;

/// A fault's window on the recorder clock, ns.
#[derive(Debug, Clone, Copy)]
struct Window {
    injected: u64,
    /// The heal; the end of the observation when it never came.
    healed: u64,
    healed_at_all: bool,
    /// Until when messages are the fault's: the heal plus the longer recovery of the two
    /// sides (the end of the observation when one never recovered), before the next fault.
    until: u64,
}

impl Window {
    fn messages(&self) -> (u64, u64) {
        (self.injected, self.until.max(self.injected + MIN_WINDOW_NS))
    }

    fn holds(&self, intended: u64) -> bool {
        let (from, to) = self.messages();
        (from..to).contains(&intended)
    }
}

/// Fills the `publish`, `delivery` and `latency` figures of every injected fault of
/// `faults` (their `injected_s` and `healed_s` say where their windows are) and returns
/// the unavailability outside every window.
pub fn measure(timeline: &Timeline, faults: &mut [FaultFigures]) -> OutsideFaults {
    let ns = |s: f64| (s.max(0.0) * 1e9) as u64;
    let mut windows: Vec<Option<Window>> = faults
        .iter()
        .map(|f| {
            f.injected_s.map(|injected| Window {
                injected: ns(injected),
                healed: f.healed_s.map_or(timeline.observed_until_ns, ns),
                healed_at_all: f.healed_s.is_some(),
                until: f.healed_s.map_or(timeline.observed_until_ns, ns),
            })
        })
        .collect();
    let active: Vec<Window> = windows.iter().flatten().copied().collect();

    // Successes and due times of both sides.
    let mut confirmations: Vec<u64> = Vec::new();
    let mut due: Vec<u64> = Vec::new();
    let mut failures: Vec<u64> = Vec::new();
    for p in &timeline.publishes {
        due.push(p.intended_ns);
        match p.outcome {
            Settle::Confirmed => confirmations.push(p.settled_ns),
            Settle::Failed | Settle::Unknown => failures.push(p.settled_ns),
        }
    }
    let mut arrivals: Vec<u64> = timeline
        .deliveries
        .iter()
        .filter(|d| matches!(d.arrival, Arrival::First | Arrival::Reordered))
        .map(|d| d.received_ns)
        .collect();
    confirmations.sort_unstable();
    arrivals.sort_unstable();
    due.sort_unstable();
    failures.sort_unstable();
    let end = timeline.observed_until_ns;
    let publish_gaps = Gaps::new(&confirmations, &due, end, &active);
    let delivery_gaps = Gaps::new(&arrivals, &due, end, &active);

    // Pass 1: detection, unavailability and recovery; they say until when the messages
    // due are the fault's.
    for (fault, window) in faults.iter_mut().zip(windows.iter_mut()) {
        let Some(w) = window.as_mut() else { continue };
        let publish = &mut fault.publish;
        let delivery = &mut fault.delivery;
        let first_failure = failures
            .iter()
            .copied()
            .find(|&t| t >= w.injected && t <= w.healed.max(w.injected) + publish_gaps.normal);
        publish.outage = publish_gaps.outage(&*w, first_failure, |after| {
            timeline
                .publishes
                .iter()
                .filter(|p| p.outcome == Settle::Confirmed && p.intended_ns >= after)
                .map(|p| p.settled_ns)
                .min()
        });
        delivery.outage = delivery_gaps.outage(&*w, None, |after| {
            timeline
                .deliveries
                .iter()
                .filter(|d| {
                    matches!(d.arrival, Arrival::First | Arrival::Reordered)
                        && d.intended_ns >= after
                })
                .map(|d| d.received_ns)
                .min()
        });
        let recovery = [&publish.outage, &delivery.outage]
            .iter()
            .filter_map(|o| o.recover_ms)
            .fold(0.0f64, f64::max);
        w.until = w.healed + (recovery * 1e6) as u64;
    }
    // Each fault's messages end where the next fault starts.
    let starts: Vec<u64> = windows.iter().flatten().map(|w| w.injected).collect();
    for w in windows.iter_mut().flatten() {
        if let Some(next) = starts.iter().copied().filter(|&s| s > w.injected).min() {
            w.until = w.until.min(next);
        }
    }
    let settled: Vec<Window> = windows.iter().flatten().copied().collect();
    let in_any = |intended: u64| settled.iter().any(|w| w.holds(intended));

    // What each message became.
    let mut firsts: HashMap<(u32, u64), u32> = HashMap::new();
    for d in &timeline.deliveries {
        if matches!(d.arrival, Arrival::First | Arrival::Reordered) {
            *firsts.entry((d.producer, d.seq)).or_default() += 1;
        }
    }
    let mut outside_e2e = Vec::new();
    let mut outside_publish = Vec::new();
    for d in &timeline.deliveries {
        if matches!(d.arrival, Arrival::First | Arrival::Reordered) && !in_any(d.intended_ns) {
            outside_e2e.push(d.received_ns.saturating_sub(d.intended_ns));
        }
    }
    for p in &timeline.publishes {
        if p.outcome == Settle::Confirmed && !in_any(p.intended_ns) {
            outside_publish.push(p.settled_ns.saturating_sub(p.intended_ns));
        }
    }
    let outside_e2e = Percentiles::of(outside_e2e);
    let outside_publish = Percentiles::of(outside_publish);

    // Pass 2: the messages due in each window.
    for (fault, window) in faults.iter_mut().zip(&windows) {
        let Some(w) = window else { continue };
        let fanout = |p: u32| u64::from(timeline.fanout.get(p as usize).copied().unwrap_or(0));
        let publish = &mut fault.publish;
        let delivery = &mut fault.delivery;
        let mut e2e = Vec::new();
        let mut acks = Vec::new();
        for p in timeline.publishes.iter().filter(|p| w.holds(p.intended_ns)) {
            publish.attempts += 1;
            let got = u64::from(firsts.get(&(p.producer, p.seq)).copied().unwrap_or(0));
            let want = fanout(p.producer);
            delivery.due += want;
            delivery.missing += want - got.min(want);
            match p.outcome {
                Settle::Confirmed => {
                    publish.confirmed += 1;
                    delivery.lost += want - got.min(want);
                    acks.push(p.settled_ns.saturating_sub(p.intended_ns));
                }
                Settle::Failed => publish.failed += 1,
                Settle::Unknown => publish.unknown += 1,
            }
            if p.outcome != Settle::Confirmed && got > 0 {
                publish.unconfirmed_delivered += 1;
            }
        }
        for d in timeline
            .deliveries
            .iter()
            .filter(|d| w.holds(d.intended_ns))
        {
            match d.arrival {
                Arrival::First => delivery.delivered += 1,
                Arrival::Reordered => {
                    delivery.delivered += 1;
                    delivery.reordered += 1;
                }
                Arrival::Duplicate => delivery.duplicated += 1,
                Arrival::Late => delivery.late += 1,
            }
            if matches!(d.arrival, Arrival::First | Arrival::Reordered) {
                e2e.push(d.received_ns.saturating_sub(d.intended_ns));
            }
        }
        let e2e = Percentiles::of(e2e);
        let acks = Percentiles::of(acks);
        let l = &mut fault.latency;
        l.e2e_p50_ms = e2e.at(0.5);
        l.e2e_p99_ms = e2e.at(0.99);
        l.e2e_max_ms = e2e.at(1.0);
        l.publish_p50_ms = acks.at(0.5);
        l.publish_p99_ms = acks.at(0.99);
        l.outside_e2e_p50_ms = outside_e2e.at(0.5);
        l.outside_e2e_p99_ms = outside_e2e.at(0.99);
        l.outside_publish_p50_ms = outside_publish.at(0.5);
    }
    OutsideFaults {
        publish_unavailable_ms: ms(publish_gaps.unexplained(&active)),
        delivery_unavailable_ms: ms(delivery_gaps.unexplained(&active)),
    }
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// The stretches between successes in which something was due, and the normal gap.
struct Gaps {
    /// (start, end) of every gap with a message due in it, in order.
    counted: Vec<(u64, u64)>,
    normal: u64,
    /// The end of the observation.
    end: u64,
}

impl Gaps {
    fn new(successes: &[u64], due: &[u64], end: u64, windows: &[Window]) -> Gaps {
        let mut counted = Vec::new();
        let mut quiet = Vec::new();
        let mut start = 0u64;
        let bounds = successes
            .iter()
            .copied()
            .chain(std::iter::once(end.max(start)));
        for next in bounds {
            if next <= start {
                start = start.max(next);
                continue;
            }
            // Something was due in [start, next).
            let i = due.partition_point(|&d| d < start);
            if due.get(i).is_some_and(|&d| d < next) {
                counted.push((start, next));
                let touches_fault = windows
                    .iter()
                    .any(|w| start < w.healed.max(w.injected) + MIN_WINDOW_NS && next > w.injected);
                if !touches_fault {
                    quiet.push(next - start);
                }
            }
            start = next;
        }
        quiet.sort_unstable();
        let p99 = quiet
            .get((quiet.len() * 99 / 100).min(quiet.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0);
        Gaps {
            counted,
            normal: (p99 * NORMAL_GAP_FACTOR).max(MIN_NORMAL_GAP_NS),
            end,
        }
    }

    /// The gaps above normal a fault in `w` explains.
    fn of_fault(&self, w: &Window) -> impl Iterator<Item = (u64, u64)> + '_ {
        let until = w.healed.max(w.injected) + self.normal;
        let injected = w.injected;
        self.counted
            .iter()
            .copied()
            .filter(move |&(s, e)| e - s > self.normal && e > injected && s < until)
    }

    fn outage(
        &self,
        w: &Window,
        first_failure: Option<u64>,
        first_success_due_after: impl Fn(u64) -> Option<u64>,
    ) -> Outage {
        let longest = self.of_fault(w).map(|(s, e)| e - s).max().unwrap_or(0);
        let gap_seen = self
            .of_fault(w)
            .next()
            .map(|(s, _)| (s + self.normal).max(w.injected));
        let detect = match (first_failure, gap_seen) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let recovered_at = if w.healed_at_all {
            first_success_due_after(w.healed).map(|t| t.max(w.healed))
        } else {
            None
        };
        Outage {
            detect_ms: detect.map(|t| ms(t.saturating_sub(w.injected))),
            unavailable_ms: ms(longest),
            // Never: the time from the heal to the end of the drain, a lower bound.
            recover_ms: match recovered_at {
                Some(t) => Some(ms(t - w.healed)),
                None if w.healed_at_all => Some(ms(self.end.saturating_sub(w.healed))),
                None => None,
            },
            recovered: recovered_at.is_some(),
            normal_gap_ms: ms(self.normal),
        }
    }

    /// The longest gap above normal that no fault explains.
    fn unexplained(&self, windows: &[Window]) -> u64 {
        self.counted
            .iter()
            .filter(|&&(s, e)| e - s > self.normal)
            .filter(|&&(s, e)| {
                !windows
                    .iter()
                    .any(|w| e > w.injected && s < w.healed.max(w.injected) + self.normal)
            })
            .map(|&(s, e)| e - s)
            .max()
            .unwrap_or(0)
    }
}

/// Nearest-rank percentiles of exact samples, ns in, ms out.
struct Percentiles(Vec<u64>);

impl Percentiles {
    fn of(mut samples: Vec<u64>) -> Self {
        samples.sort_unstable();
        Self(samples)
    }

    fn at(&self, q: f64) -> Option<f64> {
        if self.0.is_empty() {
            return None;
        }
        let rank = ((q * self.0.len() as f64).ceil() as usize).clamp(1, self.0.len());
        Some(ms(self.0[rank - 1]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timeline::{DeliveryEvent, PublishEvent};

    const MS: u64 = 1_000_000;

    /// 100 msgs/s for 10 s, one producer, one subscriber, 2 ms publish and 5 ms e2e; a
    /// black hole from 3 s to 5 s holds everything due in it until 5 s; one message due in
    /// it fails, one is lost.
    fn partitioned() -> Timeline {
        let mut t = Timeline {
            fanout: vec![1],
            measured_ns: 10_000 * MS,
            observed_until_ns: 12_000 * MS,
            ..Timeline::default()
        };
        for seq in 0..1000u64 {
            let due = seq * 10 * MS;
            let held = (3000 * MS..5000 * MS).contains(&due);
            let settled = if held {
                5000 * MS + 2 * MS
            } else {
                due + 2 * MS
            };
            let outcome = if seq == 350 {
                Settle::Unknown
            } else {
                Settle::Confirmed
            };
            t.publishes.push(PublishEvent {
                producer: 0,
                seq,
                intended_ns: due,
                settled_ns: settled,
                outcome,
            });
            if seq == 360 {
                continue; // lost
            }
            let received = if held {
                5000 * MS + 5 * MS
            } else {
                due + 5 * MS
            };
            t.deliveries.push(DeliveryEvent {
                producer: 0,
                seq,
                intended_ns: due,
                received_ns: received,
                arrival: Arrival::First,
            });
        }
        t
    }

    #[test]
    fn a_partition_is_measured_from_the_samples() {
        let t = partitioned();
        let mut faults = vec![FaultFigures {
            kind: "partition".into(),
            injected_s: Some(3.0),
            healed_s: Some(5.0),
            ..FaultFigures::default()
        }];
        let outside = measure(&t, &mut faults);
        let f = &faults[0];
        // Last confirmation before: due 2.99 s, settled 2.992 s; next at 5.002 s.
        let unavailable = f.publish.outage.unavailable_ms;
        assert!((unavailable - 2010.0).abs() < 1.0, "{unavailable}");
        assert!(f.publish.outage.recovered);
        // The first message due after the heal (5.0 s) is confirmed at 5.002 s.
        assert!((f.publish.outage.recover_ms.unwrap() - 2.0).abs() < 0.01);
        let detect = f.publish.outage.detect_ms.unwrap();
        assert!(detect > 0.0 && detect < 100.0, "{detect}");
        // Due from the injection until both sides recovered (5.005 s): 3.00 s ..= 5.00 s.
        assert_eq!(f.publish.attempts, 201);
        assert_eq!(f.publish.unknown, 1);
        assert_eq!(f.publish.unconfirmed_delivered, 1);
        assert_eq!(f.delivery.due, 201);
        assert_eq!(f.delivery.lost, 1);
        assert_eq!(f.delivery.missing, 1);
        assert_eq!(f.delivery.delivered, 200);
        assert!((f.delivery.outage.unavailable_ms - 2010.0).abs() < 1.0);
        // In-window e2e: held messages waited up to 2 s; outside, 5 ms.
        assert!(f.latency.e2e_p50_ms.unwrap() > 900.0);
        assert_eq!(f.latency.outside_e2e_p50_ms, Some(5.0));
        assert_eq!(outside.publish_unavailable_ms, 0.0);
        assert_eq!(outside.delivery_unavailable_ms, 0.0);
    }

    #[test]
    fn a_broker_that_never_returns_is_unavailable_to_the_end() {
        let mut t = partitioned();
        t.publishes.retain(|p| p.intended_ns < 3000 * MS);
        t.deliveries.retain(|d| d.intended_ns < 3000 * MS);
        for seq in 300..1000u64 {
            t.publishes.push(PublishEvent {
                producer: 0,
                seq,
                intended_ns: seq * 10 * MS,
                settled_ns: seq * 10 * MS + 5000 * MS,
                outcome: Settle::Failed,
            });
        }
        let mut faults = vec![FaultFigures {
            kind: "restart".into(),
            injected_s: Some(3.0),
            healed_s: None,
            ..FaultFigures::default()
        }];
        measure(&t, &mut faults);
        let f = &faults[0];
        assert!(!f.publish.outage.recovered);
        assert!(!f.delivery.outage.recovered);
        assert!(f.publish.outage.unavailable_ms > 9000.0);
        // Detected when the gap after the last confirmation outgrew the normal one, long
        // before the first failure (5 s later).
        assert!(f.publish.outage.detect_ms.unwrap() < 100.0);
        assert_eq!(f.publish.failed, 700);
    }

    #[test]
    fn gaps_outside_every_window_are_reported_on_their_own() {
        let mut t = partitioned();
        // Nothing confirmed between 7 s and 8 s, though messages were due.
        for p in &mut t.publishes {
            if (7000 * MS..8000 * MS).contains(&p.intended_ns) {
                p.settled_ns = 8000 * MS;
            }
        }
        let mut faults = vec![FaultFigures {
            kind: "partition".into(),
            injected_s: Some(3.0),
            healed_s: Some(5.0),
            ..FaultFigures::default()
        }];
        let outside = measure(&t, &mut faults);
        assert!(
            (outside.publish_unavailable_ms - 1008.0).abs() < 1.0,
            "{outside:?}"
        );
    }
}
