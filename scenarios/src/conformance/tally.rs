//! Classifying deliveries against what was published, in the conformance vocabulary.

use std::collections::{BTreeMap, HashSet};

use brokerbench_results::Counts;

use super::ledger::{Fate, Ledger};
use super::message::MessageId;
use super::reader::Received;

/// Which order first deliveries must keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Order {
    /// None (order is not what the check is about).
    Ignore,
    /// Each producer's sequence order.
    Publish,
    /// The order the broker confirmed the publishes in.
    Confirm,
    /// Each key's publish order (one producer per key).
    PerKey,
}

/// What one subscriber (or the union of a group) got, against what it was due.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    /// The counts (published and confirmed are left for the check to fill in).
    pub counts: Counts,
    /// Confirmed messages that were due and never came, in id order.
    pub missing: Vec<MessageId>,
    /// The ids received, first deliveries only, in arrival order.
    pub firsts: Vec<MessageId>,
}

impl Tally {
    /// Whether a due message was lost, or something came twice or came that was not due.
    pub fn lost_or_extra(&self) -> bool {
        let c = &self.counts;
        c.lost + c.duplicated + c.phantom > 0
    }

    /// The anomalies, then the first missing ids when some are missing: `lost 2,
    /// phantom 1 (missing p0#3, p0#9)`.
    pub fn describe(&self) -> String {
        let mut text = self.counts.anomaly_summary();
        if !self.missing.is_empty() {
            text.push_str(&format!(" (missing {})", sample(&self.missing)));
        }
        text
    }
}

/// Classifies `received` against `ledger`: a delivery is **phantom** when it is not a good
/// message of this run, was never published, was refused by the broker, or was not due to
/// this subscriber (`due` says which are); **duplicated** when its id came before;
/// **reordered** when a first delivery comes after one that `order` puts later (for
/// [`Order::PerKey`], by the key its envelope carries);
/// **recovered** when its publish had an unknown outcome. **Lost** are the confirmed,
/// due messages that never came.
pub(crate) fn tally<'a>(
    ledger: &Ledger,
    received: impl IntoIterator<Item = &'a Received>,
    due: impl Fn(&MessageId) -> bool,
    order: Order,
) -> Tally {
    let mut tally = Tally::default();
    let mut seen: HashSet<MessageId> = HashSet::new();
    // The highest ordinal seen so far per order group.
    let mut highest: BTreeMap<u32, u64> = BTreeMap::new();
    for r in received {
        tally.counts.delivered += 1;
        let Some(id) = r.id(ledger.run()) else {
            tally.counts.phantom += 1;
            continue;
        };
        let Some(sent) = ledger.get(&id) else {
            tally.counts.phantom += 1;
            continue;
        };
        if !due(&id) || matches!(sent.fate, Fate::Failed(_)) {
            tally.counts.phantom += 1;
            continue;
        }
        if !seen.insert(id) {
            tally.counts.duplicated += 1;
            continue;
        }
        tally.firsts.push(id);
        if sent.fate == Fate::Unknown {
            tally.counts.recovered += 1;
        }
        let position = match order {
            Order::Ignore => None,
            Order::Publish => Some((u32::from(id.producer), u64::from(id.seq))),
            Order::Confirm => match sent.fate {
                Fate::Confirmed { rank, .. } => Some((0, rank)),
                _ => None,
            },
            // The key as its envelope carries it (checked by the hash).
            Order::PerKey => {
                let key = r.message.as_ref().ok().and_then(|m| m.key);
                Some((key.map_or(u32::MAX, u32::from), u64::from(id.seq)))
            }
        };
        if let Some((group, ordinal)) = position {
            let top = highest.entry(group).or_insert(ordinal);
            if ordinal < *top {
                tally.counts.reordered += 1;
            } else {
                *top = ordinal;
            }
        }
    }
    tally.missing = ledger
        .iter()
        .filter(|(id, sent)| {
            due(id) && matches!(sent.fate, Fate::Confirmed { .. }) && !seen.contains(id)
        })
        .map(|(id, _)| *id)
        .collect();
    tally.counts.lost = tally.missing.len() as u64;
    tally
}

/// A short list of ids for a reason line: `p0#3, p0#9, ... (12 in all)`.
pub(crate) fn sample(ids: &[MessageId]) -> String {
    const SHOWN: usize = 4;
    let shown: Vec<String> = ids.iter().take(SHOWN).map(ToString::to_string).collect();
    if ids.len() > SHOWN {
        format!("{}, ... ({} in all)", shown.join(", "), ids.len())
    } else {
        shown.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use brokerbench_adapters::PublishOutcome;

    use super::*;
    use crate::conformance::message::{Message, MessageError};

    fn delivery(ledger: &Ledger, id: MessageId) -> Received {
        Received {
            message: Ok(Message {
                run: ledger.run(),
                id,
                key: None,
            }),
            redelivered: false,
            attempt: None,
            sequence: None,
            at: Instant::now(),
        }
    }

    #[test]
    fn every_anomaly_is_counted_once() {
        let mut ledger = Ledger::new(1);
        let ids: Vec<MessageId> = (0..6).map(|_| ledger.message(0, None, 60).0).collect();
        for id in &ids {
            ledger.sent(*id);
        }
        // Confirmed in the order 0, 2, 1, 3; 4 unknown; 5 refused.
        for i in [0, 2, 1, 3] {
            ledger.outcome(ids[i], &PublishOutcome::Ok);
        }
        ledger.outcome(ids[4], &PublishOutcome::Unknown);
        ledger.outcome(ids[5], &PublishOutcome::Failed("no".into()));
        let mut got: Vec<Received> = [0, 1, 2, 0, 4, 5]
            .iter()
            .map(|&i| delivery(&ledger, ids[i]))
            .collect();
        got.push(Received {
            message: Err(MessageError::Corrupted),
            ..delivery(&ledger, ids[0])
        });
        let by_publish = tally(&ledger, &got, |_| true, Order::Publish);
        let c = &by_publish.counts;
        assert_eq!(c.delivered, 7);
        assert_eq!(c.duplicated, 1);
        assert_eq!(c.phantom, 2, "the corrupted one and the refused one");
        assert_eq!(c.recovered, 1);
        assert_eq!(c.reordered, 0, "publish order 0, 1, 2, 4 holds");
        assert_eq!(by_publish.missing, vec![ids[3]]);
        assert_eq!(c.lost, 1);
        // Confirm order was 0, 2, 1: delivering 1 before 2 breaks it once.
        let by_confirm = tally(&ledger, &got, |_| true, Order::Confirm);
        assert_eq!(by_confirm.counts.reordered, 1);
        // Not due to this subscriber: phantom, and then not lost either.
        let partial = tally(&ledger, &got, |id| id.seq != 1, Order::Ignore);
        assert_eq!(partial.counts.phantom, 3);
        assert_eq!(sample(&ids), "p0#0, p0#1, p0#2, p0#3, ... (6 in all)");
    }
}
