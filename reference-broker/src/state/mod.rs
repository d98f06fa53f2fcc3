//! Shared broker state: topics, their subscribers, caches, dedup windows and pending acks.
//!
//! Topics are partitioned into [`SHARDS`] shards by the hash of their name, each behind its
//! own short-held lock, so connections working on different topics rarely meet. Every push
//! for a topic is queued while that topic's shard lock is held: that is what keeps each
//! subscriber's view of a topic in index order, and a sender's own push ahead of its
//! `{"success":true}`. Lock order is shard, then a connection's outbound queue; nothing
//! takes a shard lock while holding a queue lock, and no lock is held across an `.await`.

mod delivery;
mod stats;
#[cfg(test)]
mod tests;
mod topic;

use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use parking_lot::Mutex;
use rustc_hash::FxBuildHasher;

pub use self::stats::Stats;

use self::delivery::Ctx;
use self::topic::{DeadLetter, Message, Shard, Subscriber, Topic, topic_mut};
use crate::config::Config;
use crate::outbound::Outbound;
use crate::reply;
use crate::request::{Delivery, Layout, Send, Subscribe};

/// Number of independently locked partitions of the topic space.
pub const SHARDS: usize = 64;

/// Identifies a connection for as long as the broker runs.
pub type ConnId = u64;

/// A connection as the topic state sees it: who it is and where its output goes.
#[derive(Debug, Clone)]
pub struct Conn {
    /// Unique id of the connection.
    pub id: ConnId,
    /// Its outbound queue.
    pub out: Arc<Outbound>,
}

/// What [`Broker::ack`] and [`Broker::nack`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckResult {
    /// The message was pending for this connection; done.
    Done,
    /// No such pending message: the request is malformed.
    Unknown,
}

/// The broker's shared state. One per server; cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Broker {
    config: Config,
    shards: Box<[Mutex<Shard>]>,
    connections: AtomicU64,
    next_conn: AtomicU64,
    slow_consumers: AtomicU64,
}

impl Broker {
    /// Empty state with the given settings.
    pub fn new(config: Config) -> Self {
        Self {
            config,
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            connections: AtomicU64::new(0),
            next_conn: AtomicU64::new(1),
            slow_consumers: AtomicU64::new(0),
        }
    }

    /// The settings this broker runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Registers a new connection and returns its handle.
    pub fn connect(&self) -> Conn {
        self.connections.fetch_add(1, Ordering::Relaxed);
        Conn {
            id: self.next_conn.fetch_add(1, Ordering::Relaxed),
            out: Arc::new(Outbound::new(self.config.outbound_queue_bytes)),
        }
    }

    fn shard_of(&self, topic: &str) -> &Mutex<Shard> {
        &self.shards[(FxBuildHasher.hash_one(topic) >> 32) as usize % SHARDS]
    }

    /// Runs `f` on a topic (created if new) with a delivery context, then publishes any
    /// dead letters it produced once the shard lock is released.
    fn with_topic<R>(&self, name: &str, f: impl FnOnce(&mut Topic, &mut Ctx<'_>) -> R) -> R {
        let mut dead = Vec::new();
        let result = {
            // Read the clock before taking the lock, not while holding it.
            let now = Instant::now();
            let mut guard = self.shard_of(name).lock();
            let (topics, mut ctx) = guard.split(self, &mut dead, now);
            f(topic_mut(topics, name), &mut ctx)
        };
        self.publish_dead_letters(dead);
        result
    }

    fn publish_dead_letters(&self, mut queue: Vec<DeadLetter>) {
        while let Some(letter) = queue.pop() {
            let mut more = Vec::new();
            {
                let now = Instant::now();
                let mut guard = self.shard_of(&letter.topic).lock();
                let (topics, mut ctx) = guard.split(self, &mut more, now);
                let topic = topic_mut(topics, &letter.topic);
                let index = topic.next_index;
                topic.next_index += 1;
                let mut line = letter.body;
                let body_end = line.len() as u32;
                line.extend_from_slice(b",\"index\":");
                line.extend_from_slice(itoa::Buffer::new().format(index).as_bytes());
                line.extend_from_slice(&letter.tail);
                let msg = Message {
                    index,
                    delivery: letter.delivery,
                    line: Bytes::from(line),
                    layout: Layout {
                        topic: letter.topic_range,
                        body_end,
                    },
                };
                ctx.distribute(topic, msg, None, true);
            }
            queue.append(&mut more);
        }
    }

    /// `send`: index, push, cache, then the reply to the sender.
    pub fn send(&self, conn: &Conn, send: &Send<'_>) {
        self.with_topic(&send.topic, |topic, ctx| {
            if let Some(id) = send.id.as_deref() {
                let window = topic.dedup.get_or_insert_with(Default::default);
                if window.check_and_record(id, ctx.now, ctx.config) {
                    ctx.counters.duplicates += 1;
                    conn.out.offer_static(reply::DUPLICATE);
                    return;
                }
            }
            let index = topic.next_index;
            topic.next_index += 1;
            ctx.counters.accepted += 1;
            let (line, layout) = send.render(index);
            let msg = Message {
                index,
                delivery: send.delivery,
                line: Bytes::from(line),
                layout,
            };
            ctx.distribute(topic, msg, send.key.as_deref(), send.cache != Some(false));
            conn.out.offer_static(reply::OK);
        });
    }

    /// `subscribe`: join, reply, then replay the cache after `last_seen`.
    pub fn subscribe(&self, conn: &Conn, request: &Subscribe<'_>) {
        self.with_topic(&request.topic, |topic, ctx| {
            match topic.subscribers.iter_mut().find(|s| s.conn == conn.id) {
                Some(existing) => existing.ack = request.ack,
                None => topic.subscribers.push(Subscriber {
                    conn: conn.id,
                    out: conn.out.clone(),
                    ack: request.ack,
                }),
            }
            conn.out.offer_static(reply::OK);
            if !request.cache || topic.cache.is_empty() {
                return;
            }
            // Taken out (not copied) so `track` can borrow the topic; filtered in place.
            let mut cache = std::mem::take(&mut topic.cache);
            let mut open = true;
            cache.retain(|entry| {
                let wanted = i128::from(entry.msg.index) > i128::from(request.last_seen);
                if !open || !wanted {
                    return true;
                }
                let attempt = entry.attempts + 1;
                open = ctx.offer(&conn.out, entry.msg.line_for_attempt(attempt));
                if !open {
                    return true;
                }
                if attempt > 1 {
                    ctx.counters.redelivered += 1;
                }
                if request.ack {
                    ctx.track(topic, conn.id, &entry.msg, attempt);
                }
                match entry.msg.delivery {
                    Delivery::All => true,
                    Delivery::One => {
                        ctx.counters.cached -= 1;
                        false
                    }
                }
            });
            topic.cache = cache;
        });
    }

    /// `unsubscribe`: leave the topic (harmless when not subscribed), then reply.
    pub fn unsubscribe(&self, conn: &Conn, topic: &str) {
        self.leave(conn.id, topic);
        conn.out.offer_static(reply::OK);
    }

    /// Removes `conn` from a topic and hands its unacknowledged messages on.
    pub fn leave(&self, conn: ConnId, topic: &str) {
        self.with_topic(topic, |topic, ctx| {
            topic.subscribers.retain(|s| s.conn != conn);
            ctx.release_pending(topic, conn);
        });
    }

    /// A connection closed: it leaves every topic it had joined.
    pub fn disconnect(&self, conn: &Conn, topics: impl IntoIterator<Item = Arc<str>>) {
        for topic in topics {
            self.leave(conn.id, &topic);
        }
        conn.out.close();
        self.connections.fetch_sub(1, Ordering::Relaxed);
    }

    /// `ack`: the message is done with.
    pub fn ack(&self, conn: &Conn, topic: &str, index: i64) -> AckResult {
        let Ok(index) = u64::try_from(index) else {
            return AckResult::Unknown;
        };
        self.with_topic(topic, |topic, _| {
            match topic.pending.remove(&(conn.id, index)) {
                Some(_) => {
                    conn.out.offer_static(reply::OK);
                    AckResult::Done
                }
                None => AckResult::Unknown,
            }
        })
    }

    /// `nack`: redeliver the message now.
    pub fn nack(&self, conn: &Conn, topic: &str, index: i64) -> AckResult {
        let Ok(index) = u64::try_from(index) else {
            return AckResult::Unknown;
        };
        self.with_topic(topic, |topic, ctx| {
            match topic.pending.remove(&(conn.id, index)) {
                Some(pending) => {
                    ctx.redeliver(topic, pending.msg, pending.attempt, conn.id);
                    conn.out.offer_static(reply::OK);
                    AckResult::Done
                }
                None => AckResult::Unknown,
            }
        })
    }

    /// Redelivers every pending message whose ack deadline passed by `now`.
    pub fn expire_acks(&self, now: Instant) {
        for shard in self.shards.iter() {
            let mut dead = Vec::new();
            {
                let mut guard = shard.lock();
                let (topics, mut ctx) = guard.split(self, &mut dead, now);
                let mut expired = Vec::new();
                while ctx.deadlines.front().is_some_and(|d| d.at <= now) {
                    expired.extend(ctx.deadlines.pop_front());
                }
                for deadline in expired {
                    let Some(topic) = topics.get_mut(&deadline.topic) else {
                        continue;
                    };
                    let key = (deadline.conn, deadline.index);
                    if topic
                        .pending
                        .get(&key)
                        .is_some_and(|p| p.attempt == deadline.attempt)
                    {
                        if let Some(pending) = topic.pending.remove(&key) {
                            ctx.redeliver(topic, pending.msg, pending.attempt, deadline.conn);
                        }
                    }
                }
            }
            self.publish_dead_letters(dead);
        }
    }

    /// The counters of the `stats` extension.
    pub fn stats(&self) -> Stats {
        let mut stats = Stats {
            connections: self.connections.load(Ordering::Relaxed),
            slow_consumer_disconnects: self.slow_consumers.load(Ordering::Relaxed),
            ..Stats::default()
        };
        for shard in self.shards.iter() {
            let shard = shard.lock();
            let c = shard.counters;
            stats.topics += shard.topics.len() as u64;
            stats.messages_accepted += c.accepted;
            stats.pushed += c.pushed;
            stats.cached += c.cached;
            stats.duplicates += c.duplicates;
            stats.redelivered += c.redelivered;
            stats.dead_lettered += c.dead_lettered;
        }
        stats
    }
}
