//! After the run: what was due, what was lost, duplicated across competing consumers,
//! recovered or replayed.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use brokerbench_adapters::DeliveryMode;
use brokerbench_results::recorder::interval_of;
use brokerbench_results::{Collector, SequenceSet};

use super::shared::{ConsumerResult, ProducerResult, Shared};
use crate::plan::{Join, Plan};

/// Deliveries each message of a producer is due, by producer id: its topic's start-time
/// subscribers (fan-out) or one (competing consumers); 0 for receipt senders.
pub(super) fn fanout(plan: &Plan, shared: &Shared) -> Vec<u32> {
    let mut out = vec![0u32; shared.producers.len()];
    for (ti, topic) in plan.topics.iter().enumerate() {
        let at_start = topic
            .subscribers
            .iter()
            .filter(|s| matches!(s.join, Join::AtStart | Join::Returning { .. }))
            .count() as u32;
        let due = match topic.delivery {
            DeliveryMode::All => at_start,
            DeliveryMode::One => u32::from(at_start > 0),
        };
        for &id in &shared.topic_producers[ti] {
            out[id as usize] = due;
        }
    }
    out
}

/// Deliveries the drain waits for, per topic (start-time subscribers only; late ones
/// are not waited for).
pub(super) fn expected_deliveries(plan: &Plan, shared: &Shared) -> Vec<u64> {
    let mut expected = vec![0u64; shared.live.delivered_per_topic.len()];
    for (ti, topic) in plan.topics.iter().enumerate() {
        let confirmed: u64 = shared.topic_producers[ti]
            .iter()
            .map(|&id| {
                shared.producers[id as usize]
                    .confirmed
                    .load(Ordering::Relaxed)
            })
            .sum();
        let at_start = topic
            .subscribers
            .iter()
            .filter(|s| matches!(s.join, Join::AtStart | Join::Returning { .. }))
            .count() as u64;
        expected[ti] = match topic.delivery {
            DeliveryMode::All => confirmed * at_start,
            DeliveryMode::One => confirmed * u64::from(at_start > 0),
        };
    }
    expected
}

/// Computes lost and cross-subscriber duplicates, feeds them to the collector, and
/// returns (recovered, replayed).
pub(super) fn account(
    plan: &Plan,
    shared: &Shared,
    producers: &[ProducerResult],
    consumers: &[ConsumerResult],
    inbox_topics: &[Arc<str>],
    collector: &mut Collector,
    notes: &mut Vec<String>,
) -> (u64, u64) {
    let mut sent_by_id: Vec<Option<&ProducerResult>> = vec![None; shared.producers.len()];
    for p in producers {
        sent_by_id[p.id as usize] = Some(p);
    }
    let mut subs_by_topic: Vec<Vec<&ConsumerResult>> =
        vec![Vec::new(); plan.topics.len() + inbox_topics.len()];
    for c in consumers.iter().filter(|c| c.joined) {
        subs_by_topic[c.topic].push(c);
    }
    let warmup_ns = plan.warmup.as_nanos() as u64;
    let interval_for = |id: u32, seq: u64| -> u64 {
        shared.producers[id as usize]
            .schedule
            .as_ref()
            .and_then(|s| s.due_ns(seq))
            .map_or_else(
                || interval_of(plan.duration.as_nanos() as u64).saturating_sub(1),
                |due| interval_of(due.saturating_sub(warmup_ns)),
            )
    };
    let mut recovered = 0u64;
    let mut replayed = 0u64;
    for (ti, topic) in plan.topics.iter().enumerate() {
        let subs = &subs_by_topic[ti];
        if subs.is_empty() {
            continue;
        }
        replayed += subs.iter().map(|s| s.replayed).sum::<u64>();
        for &pid in &shared.topic_producers[ti] {
            let Some(sent) = sent_by_id[pid as usize] else {
                continue;
            };
            match topic.delivery {
                DeliveryMode::All => {
                    for sub in subs {
                        let first = sub.first_eligible.get(pid as usize).copied().unwrap_or(0);
                        let received = sub.tracker.received(u64::from(pid));
                        for seq in sent.confirmed.iter().filter(|s| *s >= first) {
                            if !received.contains(seq) {
                                collector.record_lost(interval_for(pid, seq), 1);
                            }
                        }
                        // Due all the same: delivery availability counts them.
                        for seq in sent.unconfirmed.iter().filter(|s| *s >= first) {
                            if !received.contains(seq) {
                                collector.record_undelivered(interval_for(pid, seq), 1);
                            }
                        }
                        recovered += sent.unconfirmed.intersection_len(received);
                    }
                }
                DeliveryMode::One => {
                    let mut union = SequenceSet::new();
                    let mut total = 0u64;
                    for sub in subs {
                        let received = sub.tracker.received(u64::from(pid));
                        total += received.len();
                        union.union_with(received);
                    }
                    for seq in sent.confirmed.difference(&union) {
                        collector.record_lost(interval_for(pid, seq), 1);
                    }
                    for seq in sent.unconfirmed.difference(&union) {
                        collector.record_undelivered(interval_for(pid, seq), 1);
                    }
                    recovered += sent.unconfirmed.intersection_len(&union);
                    let cross_duplicates = total - union.len();
                    if cross_duplicates > 0 {
                        notes.push(format!(
                            "{cross_duplicates} message(s) of producer {pid} reached more than one competing consumer"
                        ));
                    }
                }
            }
        }
    }
    // Receipts: every confirmed receipt should reach exactly one inbox.
    if !inbox_topics.is_empty() {
        let inbox_subs: Vec<&ConsumerResult> = subs_by_topic[plan.topics.len()..]
            .iter()
            .flatten()
            .copied()
            .collect();
        for sent in producers
            .iter()
            .filter(|p| shared.producers[p.id as usize].topic.is_none())
        {
            let mut union = SequenceSet::new();
            for sub in &inbox_subs {
                union.union_with(sub.tracker.received(u64::from(sent.id)));
            }
            let lost = sent.confirmed.difference_len(&union);
            if lost > 0 {
                collector.record_lost(
                    interval_of(plan.duration.as_nanos() as u64).saturating_sub(1),
                    lost,
                );
            }
            recovered += sent.unconfirmed.intersection_len(&union);
        }
    }
    (recovered, replayed)
}
