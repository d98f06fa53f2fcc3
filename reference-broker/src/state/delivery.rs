//! Delivery under a shard's lock: pushes, caching, pending acks, redelivery and
//! dead-lettering.

use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use rustc_hash::FxBuildHasher;

use super::ConnId;
use super::topic::{AckDeadline, Cached, Counters, DeadLetter, Message, PendingAck, Topic};
use crate::config::Config;
use crate::outbound::{Offer, Outbound};
use crate::request::{Delivery, write_json_str};

/// Everything a delivery needs besides the topic: the shard's counters and deadlines.
pub(super) struct Ctx<'a> {
    pub(super) config: &'a Config,
    pub(super) counters: &'a mut Counters,
    pub(super) deadlines: &'a mut VecDeque<AckDeadline>,
    pub(super) slow: &'a AtomicU64,
    pub(super) dead: &'a mut Vec<DeadLetter>,
    pub(super) now: Instant,
}

impl Ctx<'_> {
    /// Offers `line` to `out`, counting the push or the slow-consumer disconnect.
    pub(super) fn offer(&mut self, out: &Outbound, line: Bytes) -> bool {
        match out.offer(line) {
            Offer::Queued => {
                self.counters.pushed += 1;
                true
            }
            Offer::Overflowed => {
                self.slow.fetch_add(1, Ordering::Relaxed);
                false
            }
            Offer::Closed => false,
        }
    }

    pub(super) fn track(&mut self, topic: &mut Topic, conn: ConnId, msg: &Message, attempt: u32) {
        topic.pending.insert(
            (conn, msg.index),
            PendingAck {
                msg: msg.clone(),
                attempt,
            },
        );
        self.deadlines.push_back(AckDeadline {
            at: self.now + self.config.ack_timeout,
            topic: topic.name.clone(),
            conn,
            index: msg.index,
            attempt,
        });
    }

    pub(super) fn cache(&mut self, topic: &mut Topic, entry: Cached) {
        if self.config.cache_size == 0 {
            return;
        }
        let position = topic
            .cache
            .iter()
            .rposition(|c| c.msg.index < entry.msg.index)
            .map_or(0, |p| p + 1);
        topic.cache.insert(position, entry);
        self.counters.cached += 1;
        while topic.cache.len() > self.config.cache_size {
            topic.cache.pop_front();
            self.counters.cached -= 1;
        }
    }

    /// Pushes to every subscriber of the topic.
    pub(super) fn deliver_all(&mut self, topic: &mut Topic, msg: &Message) {
        for i in 0..topic.subscribers.len() {
            let sub = &topic.subscribers[i];
            let (conn, ack) = (sub.conn, sub.ack);
            if self.offer(&sub.out, msg.line.clone()) && ack {
                self.track(topic, conn, msg, 1);
            }
        }
    }

    /// Pushes to one subscriber: by key when there is one, at random otherwise, skipping
    /// closing connections and (while another is available) `exclude`. Returns false when
    /// nobody took it.
    pub(super) fn deliver_one(
        &mut self,
        topic: &mut Topic,
        msg: &Message,
        attempt: u32,
        key: Option<&str>,
        exclude: Option<ConnId>,
    ) -> bool {
        let n = topic.subscribers.len();
        if n == 0 {
            return false;
        }
        let start = match key {
            Some(key) => (FxBuildHasher.hash_one(key) % n as u64) as usize,
            None => fastrand::usize(..n),
        };
        let line = msg.line_for_attempt(attempt);
        for pass in 0..2 {
            for step in 0..n {
                let sub = &topic.subscribers[(start + step) % n];
                let excluded = exclude == Some(sub.conn);
                if excluded != (pass == 1) || sub.out.is_closing() {
                    continue;
                }
                let (conn, ack) = (sub.conn, sub.ack);
                if self.offer(&sub.out, line.clone()) {
                    if attempt > 1 {
                        self.counters.redelivered += 1;
                    }
                    if ack {
                        self.track(topic, conn, msg, attempt);
                    }
                    return true;
                }
            }
            if exclude.is_none() {
                break;
            }
        }
        false
    }

    /// Delivers a new message by its mode; a `"one"` message nobody took, and every
    /// `"all"` message, is then cached unless `cache` is false.
    pub(super) fn distribute(
        &mut self,
        topic: &mut Topic,
        msg: Message,
        key: Option<&str>,
        cache: bool,
    ) {
        let taken = match msg.delivery {
            Delivery::All => {
                self.deliver_all(topic, &msg);
                false
            }
            Delivery::One => self.deliver_one(topic, &msg, 1, key, None),
        };
        if !taken && cache {
            self.cache(topic, Cached { msg, attempts: 0 });
        }
    }

    /// Delivers a message again after attempt `attempt` was not acknowledged by `from`,
    /// or dead-letters it when the attempts are used up.
    pub(super) fn redeliver(
        &mut self,
        topic: &mut Topic,
        msg: Message,
        attempt: u32,
        from: ConnId,
    ) {
        let next = attempt + 1;
        if next > self.config.max_attempts {
            self.dead_letter(topic, &msg, attempt);
            return;
        }
        match msg.delivery {
            Delivery::One => {
                if !self.deliver_one(topic, &msg, next, None, Some(from)) {
                    self.cache(
                        topic,
                        Cached {
                            msg,
                            attempts: attempt,
                        },
                    );
                }
            }
            Delivery::All => {
                let Some(sub) = topic.subscribers.iter().find(|s| s.conn == from) else {
                    return;
                };
                let ack = sub.ack;
                if self.offer(&sub.out, msg.line_for_attempt(next)) {
                    self.counters.redelivered += 1;
                    if ack {
                        self.track(topic, from, &msg, next);
                    }
                }
            }
        }
    }

    pub(super) fn dead_letter(&mut self, topic: &Topic, msg: &Message, attempts: u32) {
        self.counters.dead_lettered += 1;
        let dlq = format!("$dlq.{}", topic.name);
        let (topic_start, topic_end) = (msg.layout.topic.0 as usize, msg.layout.topic.1 as usize);
        let mut body = Vec::with_capacity(msg.line.len() + dlq.len());
        body.extend_from_slice(&msg.line[..topic_start]);
        write_json_str(&mut body, &dlq);
        let topic_range = (topic_start as u32, body.len() as u32);
        body.extend_from_slice(&msg.line[topic_end..msg.layout.body_end as usize]);
        let mut tail = b",\"original_topic\":".to_vec();
        write_json_str(&mut tail, &topic.name);
        tail.extend_from_slice(b",\"original_index\":");
        tail.extend_from_slice(itoa::Buffer::new().format(msg.index).as_bytes());
        tail.extend_from_slice(b",\"attempts\":");
        tail.extend_from_slice(itoa::Buffer::new().format(attempts).as_bytes());
        tail.extend_from_slice(b"}\r\n");
        self.dead.push(DeadLetter {
            topic: dlq,
            body,
            tail,
            topic_range,
            delivery: msg.delivery,
        });
    }

    /// Takes back what `conn` had pending on the topic: `"one"` messages go to another
    /// subscriber (or back to the cache), `"all"` copies were that subscriber's alone.
    pub(super) fn release_pending(&mut self, topic: &mut Topic, conn: ConnId) {
        if topic.pending.is_empty() {
            return;
        }
        let mut indexes: Vec<u64> = topic
            .pending
            .keys()
            .filter(|(owner, _)| *owner == conn)
            .map(|(_, index)| *index)
            .collect();
        indexes.sort_unstable();
        for index in indexes {
            if let Some(pending) = topic.pending.remove(&(conn, index)) {
                if pending.msg.delivery == Delivery::One {
                    self.redeliver(topic, pending.msg, pending.attempt, conn);
                }
            }
        }
    }
}
