//! What a check published: every message's id, key, send time and fate (confirmed, with
//! its place in the confirm order; refused; or unknown), so deliveries can be classified.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use brokerbench_adapters::{Producer, PublishOutcome, PublishRequest};
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;

use super::message::{Message, MessageId};

/// How a publish ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Fate {
    /// Sent, no answer yet.
    InFlight,
    /// Confirmed by the broker; `rank` is its place in the order confirmations arrived
    /// (0 first), `duplicate` when the broker recognised its id as already seen.
    Confirmed { rank: u64, duplicate: bool },
    /// Refused, or never sent; the reason.
    Failed(String),
    /// No confirmation within the publish timeout: it may or may not have been accepted.
    Unknown,
}

/// One published message. (Its key travels in its envelope.)
#[derive(Debug, Clone)]
pub(crate) struct Sent {
    /// When it was handed to the client.
    pub sent_at: Instant,
    /// How it ended.
    pub fate: Fate,
}

/// Every message a check published, by id.
#[derive(Debug)]
pub(crate) struct Ledger {
    run: u32,
    sent: BTreeMap<MessageId, Sent>,
    next_seq: BTreeMap<u16, u32>,
    next_rank: u64,
}

impl Ledger {
    /// An empty ledger for the check run tagged `run`.
    pub fn new(run: u32) -> Self {
        Ledger {
            run,
            sent: BTreeMap::new(),
            next_seq: BTreeMap::new(),
            next_rank: 0,
        }
    }

    /// The run tag every message of this check carries.
    pub fn run(&self) -> u32 {
        self.run
    }

    /// The next message of `producer` (its next sequence number), with `key`, encoded as
    /// a payload of `size` bytes. Not recorded until it is published.
    pub fn message(&mut self, producer: u16, key: Option<u16>, size: usize) -> (MessageId, Bytes) {
        let seq = self.next_seq.entry(producer).or_insert(0);
        let id = MessageId {
            producer,
            seq: *seq,
        };
        *seq += 1;
        let message = Message {
            run: self.run,
            id,
            key,
        };
        (id, Bytes::from(message.encode(size)))
    }

    /// Records that `id` was handed to the client now.
    pub fn sent(&mut self, id: MessageId) {
        self.sent.insert(
            id,
            Sent {
                sent_at: Instant::now(),
                fate: Fate::InFlight,
            },
        );
    }

    /// Records how the publish of `id` ended; confirmations get the next rank.
    pub fn outcome(&mut self, id: MessageId, outcome: &PublishOutcome) {
        let fate = match outcome {
            PublishOutcome::Ok | PublishOutcome::Duplicate => {
                let rank = self.next_rank;
                self.next_rank += 1;
                Fate::Confirmed {
                    rank,
                    duplicate: *outcome == PublishOutcome::Duplicate,
                }
            }
            PublishOutcome::Failed(reason) => Fate::Failed(reason.clone()),
            PublishOutcome::Unknown => Fate::Unknown,
        };
        if let Some(sent) = self.sent.get_mut(&id) {
            sent.fate = fate;
        }
    }

    /// The record of `id`, if it was published.
    pub fn get(&self, id: &MessageId) -> Option<&Sent> {
        self.sent.get(id)
    }

    /// Every published message, in id order.
    pub fn iter(&self) -> impl Iterator<Item = (&MessageId, &Sent)> {
        self.sent.iter()
    }

    /// Whether `id` was confirmed.
    pub fn is_confirmed(&self, id: &MessageId) -> bool {
        matches!(
            self.sent.get(id).map(|s| &s.fate),
            Some(Fate::Confirmed { .. })
        )
    }

    /// Publishes attempted.
    pub fn published(&self) -> u64 {
        self.sent.len() as u64
    }

    /// Publishes confirmed.
    pub fn confirmed(&self) -> u64 {
        self.sent
            .values()
            .filter(|s| matches!(s.fate, Fate::Confirmed { .. }))
            .count() as u64
    }

    /// The reasons of refused publishes, counted, most frequent first (for a reason line).
    pub fn failures(&self) -> Vec<(String, usize)> {
        let mut by_reason: BTreeMap<&str, usize> = BTreeMap::new();
        for sent in self.sent.values() {
            if let Fate::Failed(reason) = &sent.fate {
                *by_reason.entry(reason).or_default() += 1;
            }
        }
        let mut list: Vec<(String, usize)> = by_reason
            .into_iter()
            .map(|(r, n)| (r.to_owned(), n))
            .collect();
        list.sort_by_key(|entry| std::cmp::Reverse(entry.1));
        list
    }

    /// Publishes `batch` through `producer` in order, up to `window` in flight, and
    /// records each one's fate (confirmations ranked in the order they arrive).
    pub async fn publish(
        &mut self,
        producer: &Producer,
        batch: Vec<(MessageId, PublishRequest)>,
        window: usize,
    ) {
        self.publish_as(producer, batch, Pace::Window(window.max(1)))
            .await;
    }

    /// Publishes `batch` open loop: message `i` is handed to the client at `start + i /
    /// rate` whatever the broker does, with any number in flight; returns when every
    /// publish has resolved.
    pub async fn publish_paced(
        &mut self,
        producer: &Producer,
        batch: Vec<(MessageId, PublishRequest)>,
        rate: f64,
    ) {
        let interval = Duration::from_secs_f64(1.0 / rate.max(0.001));
        self.publish_as(producer, batch, Pace::Every(interval))
            .await;
    }

    /// Publishes `batch` in order at `pace`, recording every fate. Outcomes are taken
    /// unconstrained by tokio's cooperative budget: a confirmation that is ready must be
    /// seen now, or the confirm order would be the scheduler's.
    async fn publish_as(
        &mut self,
        producer: &Producer,
        batch: Vec<(MessageId, PublishRequest)>,
        pace: Pace,
    ) {
        let start = tokio::time::Instant::now();
        let mut in_flight = FuturesUnordered::new();
        for (i, (id, request)) in batch.into_iter().enumerate() {
            match pace {
                Pace::Window(window) => {
                    while in_flight.len() >= window {
                        if let Some((done, outcome)) =
                            tokio::task::unconstrained(in_flight.next()).await
                        {
                            self.outcome(done, &outcome);
                        }
                    }
                }
                Pace::Every(interval) => {
                    let due = start + interval.mul_f64(i as f64);
                    loop {
                        tokio::select! {
                            () = tokio::time::sleep_until(due) => break,
                            Some((done, outcome)) = in_flight.next(), if !in_flight.is_empty() => {
                                self.outcome(done, &outcome);
                            }
                        }
                    }
                }
            }
            self.sent(id);
            let publish = producer.publish(request);
            in_flight.push(async move { (id, publish.await) });
        }
        while let Some((done, outcome)) = tokio::task::unconstrained(in_flight.next()).await {
            self.outcome(done, &outcome);
        }
    }
}

/// How fast [`Ledger::publish_as`] publishes.
#[derive(Debug, Clone, Copy)]
enum Pace {
    /// As fast as the broker confirms, this many in flight at most.
    Window(usize),
    /// One message every interval (open loop), any number in flight.
    Every(Duration),
}

/// The key text of key index `index`, as checks publish it.
pub(crate) fn key_name(index: u16) -> Arc<str> {
    Arc::from(format!("k{index}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_follow_confirmations_and_fates_are_kept() {
        let mut ledger = Ledger::new(7);
        let (a, payload) = ledger.message(0, Some(2), 100);
        assert_eq!(Message::decode(&payload).unwrap().key, Some(2));
        let (b, _) = ledger.message(0, None, 100);
        let (c, _) = ledger.message(1, None, 100);
        assert_eq!((a.seq, b.seq, c.seq, c.producer), (0, 1, 0, 1));
        for id in [a, b, c] {
            ledger.sent(id);
        }
        ledger.outcome(b, &PublishOutcome::Ok);
        ledger.outcome(a, &PublishOutcome::Duplicate);
        ledger.outcome(c, &PublishOutcome::Failed("too large".into()));
        assert_eq!(
            ledger.get(&b).unwrap().fate,
            Fate::Confirmed {
                rank: 0,
                duplicate: false
            }
        );
        assert_eq!(
            ledger.get(&a).unwrap().fate,
            Fate::Confirmed {
                rank: 1,
                duplicate: true
            }
        );
        assert_eq!((ledger.published(), ledger.confirmed()), (3, 2));
        assert_eq!(ledger.failures(), vec![("too large".to_owned(), 1)]);
    }
}
