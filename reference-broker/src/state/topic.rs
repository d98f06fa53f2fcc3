//! What the broker holds per topic and per shard: messages, caches, subscribers,
//! pending acks, dedup windows and counters.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use rustc_hash::FxHashMap;

use super::delivery::Ctx;
use super::{Broker, ConnId};
use crate::config::Config;
use crate::outbound::Outbound;
use crate::request::{Delivery, Layout};

/// A message as stored in caches and pending sets: rendered once, shared by reference.
#[derive(Debug, Clone)]
pub(super) struct Message {
    pub(super) index: u64,
    pub(super) delivery: Delivery,
    /// The pushed line: `{…,"index":N…}\r\n`.
    pub(super) line: Bytes,
    pub(super) layout: Layout,
}

impl Message {
    /// The line for delivery attempt `attempt` (1 = first delivery, pushed as is).
    pub(super) fn line_for_attempt(&self, attempt: u32) -> Bytes {
        if attempt <= 1 {
            return self.line.clone();
        }
        let head = &self.line[..self.line.len() - 3];
        let mut out = Vec::with_capacity(self.line.len() + 40);
        out.extend_from_slice(head);
        out.extend_from_slice(b",\"redelivered\":true,\"attempt\":");
        out.extend_from_slice(itoa::Buffer::new().format(attempt).as_bytes());
        out.extend_from_slice(b"}\r\n");
        Bytes::from(out)
    }
}

/// A cached message and how many times it was already delivered (non-zero only for a
/// pending `"one"` message put back because no subscriber was left to take it).
#[derive(Debug, Clone)]
pub(super) struct Cached {
    pub(super) msg: Message,
    pub(super) attempts: u32,
}

#[derive(Debug, Clone)]
pub(super) struct Subscriber {
    pub(super) conn: ConnId,
    pub(super) out: Arc<Outbound>,
    pub(super) ack: bool,
}

#[derive(Debug)]
pub(super) struct PendingAck {
    pub(super) msg: Message,
    pub(super) attempt: u32,
}

/// Ids seen on one topic, for the `id` extension. Both collections share one allocation
/// per id.
#[derive(Debug, Default)]
pub(super) struct DedupWindow {
    pub(super) seen: FxHashMap<Arc<str>, Instant>,
    pub(super) order: VecDeque<(Instant, Arc<str>)>,
}

impl DedupWindow {
    /// Records `id` unless it is a duplicate; returns true for a duplicate.
    pub(super) fn check_and_record(&mut self, id: &str, now: Instant, config: &Config) -> bool {
        while let Some((at, _)) = self.order.front() {
            let expired = now.duration_since(*at) >= config.dedup_window;
            if !expired && self.order.len() < config.dedup_max_ids.max(1) {
                break;
            }
            if let Some((at, old)) = self.order.pop_front() {
                if self.seen.get(&old) == Some(&at) {
                    self.seen.remove(&old);
                }
            }
        }
        if self.seen.contains_key(id) {
            return true;
        }
        let id: Arc<str> = id.into();
        self.seen.insert(id.clone(), now);
        self.order.push_back((now, id));
        false
    }
}

#[derive(Debug)]
pub(super) struct Topic {
    pub(super) name: Arc<str>,
    pub(super) next_index: u64,
    /// In the order they joined; `"one"` routing by key indexes into this.
    pub(super) subscribers: Vec<Subscriber>,
    /// Sorted by index.
    pub(super) cache: VecDeque<Cached>,
    pub(super) dedup: Option<Box<DedupWindow>>,
    /// Messages pushed to `ack` subscriptions and not yet acknowledged.
    pub(super) pending: FxHashMap<(ConnId, u64), PendingAck>,
}

impl Topic {
    pub(super) fn new(name: Arc<str>) -> Self {
        Self {
            name,
            next_index: 0,
            subscribers: Vec::new(),
            cache: VecDeque::new(),
            dedup: None,
            pending: FxHashMap::default(),
        }
    }
}

/// An ack deadline; stale once the pending entry it names was acked or moved on.
#[derive(Debug)]
pub(super) struct AckDeadline {
    pub(super) at: Instant,
    pub(super) topic: Arc<str>,
    pub(super) conn: ConnId,
    pub(super) index: u64,
    pub(super) attempt: u32,
}

/// A message on its way to a `$dlq.<topic>` topic, published once the lock of the shard
/// it came from is released (the dead-letter topic may live in another shard).
#[derive(Debug)]
pub(super) struct DeadLetter {
    pub(super) topic: String,
    /// The object up to where `"index"` goes.
    pub(super) body: Vec<u8>,
    /// What follows the index: the origin of the message and `}\r\n`.
    pub(super) tail: Vec<u8>,
    pub(super) topic_range: (u32, u32),
    pub(super) delivery: Delivery,
}

/// Counters kept per shard, under its lock, so the hot path touches no shared cache line.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Counters {
    pub(super) accepted: u64,
    pub(super) pushed: u64,
    pub(super) cached: u64,
    pub(super) duplicates: u64,
    pub(super) redelivered: u64,
    pub(super) dead_lettered: u64,
}

#[derive(Debug, Default)]
pub(super) struct Shard {
    pub(super) topics: FxHashMap<Arc<str>, Topic>,
    pub(super) deadlines: VecDeque<AckDeadline>,
    pub(super) counters: Counters,
}

impl Shard {
    /// The shard's topics, and a delivery context over its counters and deadlines.
    pub(super) fn split<'a>(
        &'a mut self,
        broker: &'a Broker,
        dead: &'a mut Vec<DeadLetter>,
        now: Instant,
    ) -> (&'a mut FxHashMap<Arc<str>, Topic>, Ctx<'a>) {
        let ctx = Ctx {
            config: &broker.config,
            counters: &mut self.counters,
            deadlines: &mut self.deadlines,
            slow: &broker.slow_consumers,
            dead,
            now,
        };
        (&mut self.topics, ctx)
    }
}

/// The topic called `name`, created if it does not exist yet (without allocating the name
/// when it does).
pub(super) fn topic_mut<'a>(
    topics: &'a mut FxHashMap<Arc<str>, Topic>,
    name: &str,
) -> &'a mut Topic {
    if !topics.contains_key(name) {
        let name: Arc<str> = name.into();
        topics.insert(name.clone(), Topic::new(name));
    }
    topics
        .get_mut(name)
        .unwrap_or_else(|| unreachable!("inserted just above"))
}
