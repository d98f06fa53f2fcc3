//! What each fault of a run did: the `faults` list of the run record and its table in the
//! terminal summary. The figures come from the run's own samples (every publish's outcome
//! and every delivery, timed on the run clock), attributed to each fault's window; the
//! load engine computes them.
//!
//! Times are in seconds from the start of the measured phase (`*_s`), spans in
//! milliseconds (`*_ms`).

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// One fault of a run and what it did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FaultFigures {
    /// `latency`, `bandwidth`, `reset`, `partition`, `down` or `restart`.
    pub kind: String,
    /// Its parameters as written (`delay=50ms direction=from-broker`), empty when none.
    pub parameters: String,
    /// `all`, `publishers` or `subscribers`.
    pub targets: String,
    /// When it was due.
    pub at_s: f64,
    /// How long it was to last (0 for a reset).
    pub duration_s: f64,
    /// When it was injected; `null` when it was skipped.
    pub injected_s: Option<f64>,
    /// When it was healed (the restarted broker was started); `null` when it was skipped
    /// or never healed.
    pub healed_s: Option<f64>,
    /// Why it was not injected (a restart without stop/start commands, the run ended).
    pub skipped: Option<String>,
    /// Connections reset by it (reset, down).
    pub connections_cut: u64,
    /// Publishing during and after the fault.
    pub publish: FaultPublish,
    /// Delivery during and after the fault.
    pub delivery: FaultDelivery,
    /// Latency of the messages due in the window, beside the rest of the run.
    pub latency: FaultLatency,
    /// What else a reader should know.
    #[serde(default)]
    pub notes: Vec<String>,
}

/// How one side (publishing or delivery) was unavailable and came back.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Outage {
    /// From the injection to the first failure, or to the moment the first gap between
    /// successes grew above the normal one; `null` when nothing abnormal was seen.
    pub detect_ms: Option<f64>,
    /// The longest stretch around the fault in which messages were due but none was
    /// confirmed (delivered); 0 when no gap grew above the normal one.
    pub unavailable_ms: f64,
    /// From the heal to the first success for a message due after it. When it never came,
    /// `recovered` is false and this is the time from the heal to the end of the drain (a
    /// lower bound); `null` when the fault was never healed.
    pub recover_ms: Option<f64>,
    /// Whether a message due after the heal succeeded before the run ended.
    pub recovered: bool,
    /// The normal gap between successes (outside every fault window) a gap must exceed to
    /// count as unavailability.
    pub normal_gap_ms: f64,
}

impl Outage {
    /// The recovery time alert rules and exports judge, in seconds: `recover_ms`; when the
    /// side never recovered, the longer of that lower bound and the unavailable window.
    pub fn recovery_s(&self) -> f64 {
        let recover = self.recover_ms.unwrap_or(0.0);
        if self.recovered {
            recover / 1e3
        } else {
            recover.max(self.unavailable_ms) / 1e3
        }
    }
}

/// Publishing in a fault's window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FaultPublish {
    /// Detection, unavailability and recovery.
    #[serde(flatten)]
    pub outage: Outage,
    /// Publishes due in the window.
    pub attempts: u64,
    /// Of those, confirmed.
    pub confirmed: u64,
    /// Of those, refused or failed.
    pub failed: u64,
    /// Of those, without an answer in time (unknown outcome).
    pub unknown: u64,
    /// Failed or unknown publishes of the window that were delivered all the same.
    pub unconfirmed_delivered: u64,
}

/// Delivery of the messages sent in a fault's window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FaultDelivery {
    /// Detection, unavailability and recovery.
    #[serde(flatten)]
    pub outage: Outage,
    /// Deliveries due: each message due in the window, once per eligible subscriber.
    pub due: u64,
    /// First deliveries of those.
    pub delivered: u64,
    /// Confirmed messages of the window some eligible subscriber never got.
    pub lost: u64,
    /// Deliveries of a message a subscriber already had.
    pub duplicated: u64,
    /// First deliveries that came after a later message of the same producer.
    pub reordered: u64,
    /// Deliveries after the drain deadline.
    pub late: u64,
    /// Deliveries due that never came, whether the publish was confirmed or not.
    pub missing: u64,
}

/// Latency of the messages due in the window (from their intended send time) and of those
/// due outside every fault window, in ms; `null` without samples.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FaultLatency {
    /// End-to-end p50 in the window.
    pub e2e_p50_ms: Option<f64>,
    /// End-to-end p99 in the window.
    pub e2e_p99_ms: Option<f64>,
    /// End-to-end max in the window.
    pub e2e_max_ms: Option<f64>,
    /// Publish-confirmation p50 in the window.
    pub publish_p50_ms: Option<f64>,
    /// Publish-confirmation p99 in the window.
    pub publish_p99_ms: Option<f64>,
    /// End-to-end p50 outside every fault window.
    pub outside_e2e_p50_ms: Option<f64>,
    /// End-to-end p99 outside every fault window.
    pub outside_e2e_p99_ms: Option<f64>,
    /// Publish-confirmation p50 outside every fault window.
    pub outside_publish_p50_ms: Option<f64>,
}

/// Unavailability outside every fault window: the longest stretches with messages due and
/// no success, in ms (0 when none grew above the normal gap).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OutsideFaults {
    /// Publishing.
    pub publish_unavailable_ms: f64,
    /// Delivery.
    pub delivery_unavailable_ms: f64,
}

/// The fault table of the terminal summary; empty without faults.
pub fn render_faults(faults: &[FaultFigures], outside: Option<&OutsideFaults>) -> String {
    if faults.is_empty() {
        return String::new();
    }
    let mut out = String::from("\nfaults (times from the start of the measured phase)\n");
    let _ = writeln!(
        out,
        "{:<34} {:>7} {:>7} | {:>9} {:>9} {:>9} {:>6} {:>6} | {:>9} {:>9} {:>9} {:>6} {:>5} | {:>9} {:>9}",
        "fault",
        "in",
        "healed",
        "pub det",
        "pub unav",
        "pub rec",
        "fail",
        "unkn",
        "del det",
        "del unav",
        "del rec",
        "lost",
        "dup",
        "e2e p50",
        "rest p50"
    );
    for f in faults {
        let name = format!("{} {}", f.kind, f.parameters).trim().to_owned();
        let name = if f.targets == "all" {
            name
        } else {
            format!("{name} [{}]", f.targets)
        };
        if let Some(why) = &f.skipped {
            let _ = writeln!(out, "{:<34} skipped: {why}", clip(&name, 34));
            continue;
        }
        let _ = writeln!(
            out,
            "{:<34} {:>7} {:>7} | {:>9} {:>9} {:>9} {:>6} {:>6} | {:>9} {:>9} {:>9} {:>6} {:>5} | {:>9} {:>9}",
            clip(&name, 34),
            secs(f.injected_s),
            secs(f.healed_s),
            ms(f.publish.outage.detect_ms),
            ms(Some(f.publish.outage.unavailable_ms)),
            recover(&f.publish.outage),
            f.publish.failed,
            f.publish.unknown,
            ms(f.delivery.outage.detect_ms),
            ms(Some(f.delivery.outage.unavailable_ms)),
            recover(&f.delivery.outage),
            f.delivery.lost,
            f.delivery.duplicated,
            ms(f.latency.e2e_p50_ms),
            ms(f.latency.outside_e2e_p50_ms),
        );
        for note in &f.notes {
            let _ = writeln!(out, "  note: {note}");
        }
    }
    if let Some(o) = outside {
        let _ = writeln!(
            out,
            "outside every fault window: publish unavailable {}, delivery unavailable {}",
            ms(Some(o.publish_unavailable_ms)),
            ms(Some(o.delivery_unavailable_ms))
        );
    }
    out
}

fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        let mut c: String = s.chars().take(n - 1).collect();
        c.push('…');
        c
    }
}

fn secs(s: Option<f64>) -> String {
    s.map_or_else(|| "-".to_owned(), |s| format!("{s:.2}s"))
}

fn ms(v: Option<f64>) -> String {
    match v {
        None => "-".to_owned(),
        Some(v) if v >= 10_000.0 => format!("{:.1}s", v / 1000.0),
        Some(v) if v >= 100.0 => format!("{v:.0}ms"),
        Some(v) => format!("{v:.1}ms"),
    }
}

fn recover(o: &Outage) -> String {
    if o.recovered {
        ms(o.recover_ms)
    } else {
        "NEVER".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_shows_each_fault_and_what_was_skipped() {
        let mut partition = FaultFigures {
            kind: "partition".into(),
            targets: "all".into(),
            injected_s: Some(2.0),
            healed_s: Some(4.0),
            ..FaultFigures::default()
        };
        partition.publish.outage.unavailable_ms = 2013.0;
        partition.publish.outage.recovered = true;
        partition.publish.outage.recover_ms = Some(4.2);
        partition.delivery.outage.recovered = false;
        let restart = FaultFigures {
            kind: "restart".into(),
            targets: "all".into(),
            skipped: Some("no stop/start commands for nats".into()),
            ..FaultFigures::default()
        };
        let text = render_faults(
            &[partition, restart],
            Some(&OutsideFaults {
                publish_unavailable_ms: 0.0,
                delivery_unavailable_ms: 120.0,
            }),
        );
        assert!(text.contains("2013ms"), "{text}");
        assert!(text.contains("4.2ms"), "{text}");
        assert!(text.contains("NEVER"), "{text}");
        assert!(text.contains("restart"), "{text}");
        assert!(
            text.contains("skipped: no stop/start commands for nats"),
            "{text}"
        );
        assert!(text.contains("delivery unavailable 120ms"), "{text}");
        assert_eq!(render_faults(&[], None), "");
    }
}
