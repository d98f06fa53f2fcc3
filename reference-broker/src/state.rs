//! Shared broker state: topics, their subscribers, caches, dedup windows and pending acks.
//!
//! Topics are partitioned into [`SHARDS`] shards by the hash of their name, each behind its
//! own short-held lock, so connections working on different topics rarely meet. Every push
//! for a topic is queued while that topic's shard lock is held: that is what keeps each
//! subscriber's view of a topic in index order, and a sender's own push ahead of its
//! `{"success":true}`. Lock order is shard, then a connection's outbound queue; nothing
//! takes a shard lock while holding a queue lock, and no lock is held across an `.await`.

use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use parking_lot::Mutex;
use rustc_hash::{FxBuildHasher, FxHashMap};

use crate::config::Config;
use crate::outbound::{Offer, Outbound};
use crate::reply;
use crate::request::{Delivery, Layout, Send, Subscribe, write_json_str};

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

/// A message as stored in caches and pending sets: rendered once, shared by reference.
#[derive(Debug, Clone)]
struct Message {
    index: u64,
    delivery: Delivery,
    /// The pushed line: `{…,"index":N…}\r\n`.
    line: Bytes,
    layout: Layout,
}

impl Message {
    /// The line for delivery attempt `attempt` (1 = first delivery, pushed as is).
    fn line_for_attempt(&self, attempt: u32) -> Bytes {
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
struct Cached {
    msg: Message,
    attempts: u32,
}

#[derive(Debug, Clone)]
struct Subscriber {
    conn: ConnId,
    out: Arc<Outbound>,
    ack: bool,
}

#[derive(Debug)]
struct PendingAck {
    msg: Message,
    attempt: u32,
}

/// Ids seen on one topic, for the `id` extension. Both collections share one allocation
/// per id.
#[derive(Debug, Default)]
struct DedupWindow {
    seen: FxHashMap<Arc<str>, Instant>,
    order: VecDeque<(Instant, Arc<str>)>,
}

impl DedupWindow {
    /// Records `id` unless it is a duplicate; returns true for a duplicate.
    fn check_and_record(&mut self, id: &str, now: Instant, config: &Config) -> bool {
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
struct Topic {
    name: Arc<str>,
    next_index: u64,
    /// In the order they joined; `"one"` routing by key indexes into this.
    subscribers: Vec<Subscriber>,
    /// Sorted by index.
    cache: VecDeque<Cached>,
    dedup: Option<Box<DedupWindow>>,
    /// Messages pushed to `ack` subscriptions and not yet acknowledged.
    pending: FxHashMap<(ConnId, u64), PendingAck>,
}

impl Topic {
    fn new(name: Arc<str>) -> Self {
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
struct AckDeadline {
    at: Instant,
    topic: Arc<str>,
    conn: ConnId,
    index: u64,
    attempt: u32,
}

/// A message on its way to a `$dlq.<topic>` topic, published once the lock of the shard
/// it came from is released (the dead-letter topic may live in another shard).
#[derive(Debug)]
struct DeadLetter {
    topic: String,
    /// The object up to where `"index"` goes.
    body: Vec<u8>,
    /// What follows the index: the origin of the message and `}\r\n`.
    tail: Vec<u8>,
    topic_range: (u32, u32),
    delivery: Delivery,
}

/// Counters kept per shard, under its lock, so the hot path touches no shared cache line.
#[derive(Debug, Default, Clone, Copy)]
struct Counters {
    accepted: u64,
    pushed: u64,
    cached: u64,
    duplicates: u64,
    redelivered: u64,
    dead_lettered: u64,
}

#[derive(Debug, Default)]
struct Shard {
    topics: FxHashMap<Arc<str>, Topic>,
    deadlines: VecDeque<AckDeadline>,
    counters: Counters,
}

impl Shard {
    /// The shard's topics, and a delivery context over its counters and deadlines.
    fn split<'a>(
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
fn topic_mut<'a>(topics: &'a mut FxHashMap<Arc<str>, Topic>, name: &str) -> &'a mut Topic {
    if !topics.contains_key(name) {
        let name: Arc<str> = name.into();
        topics.insert(name.clone(), Topic::new(name));
    }
    topics
        .get_mut(name)
        .unwrap_or_else(|| unreachable!("inserted just above"))
}

/// The broker's counters, as reported by the `stats` extension.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Connections open now.
    pub connections: u64,
    /// Topics that exist.
    pub topics: u64,
    /// Sends that were given an index.
    pub messages_accepted: u64,
    /// Messages pushed to subscribers, replays and redeliveries included.
    pub pushed: u64,
    /// Messages held in caches now.
    pub cached: u64,
    /// Sends answered as duplicates.
    pub duplicates: u64,
    /// Redeliveries of unacknowledged messages.
    pub redelivered: u64,
    /// Messages moved to a dead-letter topic.
    pub dead_lettered: u64,
    /// Connections closed because they did not read fast enough.
    pub slow_consumer_disconnects: u64,
}

impl Stats {
    /// The `stats` reply line.
    ///
    /// ```text
    /// {"success":true,"stats":{"connections":1,"topics":0,...}}\r\n
    /// ```
    pub fn reply(&self) -> Vec<u8> {
        let fields = [
            ("connections", self.connections),
            ("topics", self.topics),
            ("messages_accepted", self.messages_accepted),
            ("pushed", self.pushed),
            ("cached", self.cached),
            ("duplicates", self.duplicates),
            ("redelivered", self.redelivered),
            ("dead_lettered", self.dead_lettered),
            ("slow_consumer_disconnects", self.slow_consumer_disconnects),
        ];
        let mut out = b"{\"success\":true,\"stats\":{".to_vec();
        for (i, (name, value)) in fields.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.push(b'"');
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b"\":");
            out.extend_from_slice(itoa::Buffer::new().format(*value).as_bytes());
        }
        out.extend_from_slice(b"}}\r\n");
        out
    }
}

/// Everything a delivery needs besides the topic: the shard's counters and deadlines.
struct Ctx<'a> {
    config: &'a Config,
    counters: &'a mut Counters,
    deadlines: &'a mut VecDeque<AckDeadline>,
    slow: &'a AtomicU64,
    dead: &'a mut Vec<DeadLetter>,
    now: Instant,
}

impl Ctx<'_> {
    /// Offers `line` to `out`, counting the push or the slow-consumer disconnect.
    fn offer(&mut self, out: &Outbound, line: Bytes) -> bool {
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

    fn track(&mut self, topic: &mut Topic, conn: ConnId, msg: &Message, attempt: u32) {
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

    fn cache(&mut self, topic: &mut Topic, entry: Cached) {
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
    fn deliver_all(&mut self, topic: &mut Topic, msg: &Message) {
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
    fn deliver_one(
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
    fn distribute(&mut self, topic: &mut Topic, msg: Message, key: Option<&str>, cache: bool) {
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
    fn redeliver(&mut self, topic: &mut Topic, msg: Message, attempt: u32, from: ConnId) {
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

    fn dead_letter(&mut self, topic: &Topic, msg: &Message, attempts: u32) {
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
    fn release_pending(&mut self, topic: &mut Topic, conn: ConnId) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbound::Batch;
    use crate::request::Request;

    fn drain(conn: &Conn) -> Vec<String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let mut lines = Vec::new();
        conn.out.close();
        loop {
            match rt.block_on(conn.out.take(VecDeque::new())) {
                Batch::Items(items) => lines.extend(
                    items
                        .iter()
                        .map(|b| String::from_utf8(b.to_vec()).unwrap().trim_end().to_owned()),
                ),
                Batch::End(_) => return lines,
            }
        }
    }

    fn send(broker: &Broker, conn: &Conn, json: &str) {
        match Request::parse(json.as_bytes()).unwrap() {
            Request::Send(s) => broker.send(conn, &s),
            other => panic!("{other:?}"),
        }
    }

    fn subscribe(broker: &Broker, conn: &Conn, json: &str) {
        match Request::parse(json.as_bytes()).unwrap() {
            Request::Subscribe(s) => broker.subscribe(conn, &s),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn sender_push_comes_before_its_reply() {
        let broker = Broker::new(Config::default());
        let a = broker.connect();
        subscribe(&broker, &a, r#"{"command":"subscribe","topic":"t"}"#);
        send(
            &broker,
            &a,
            r#"{"command":"send","topic":"t","msg":"m","delivery":"all"}"#,
        );
        assert_eq!(
            drain(&a),
            [
                r#"{"success":true}"#,
                r#"{"command":"send","topic":"t","msg":"m","delivery":"all","index":0}"#,
                r#"{"success":true}"#
            ]
        );
    }

    #[test]
    fn one_without_subscribers_is_cached_and_consumed_once() {
        let broker = Broker::new(Config::default());
        let p = broker.connect();
        send(
            &broker,
            &p,
            r#"{"command":"send","topic":"t","msg":"m","delivery":"one"}"#,
        );
        let a = broker.connect();
        let b = broker.connect();
        subscribe(&broker, &a, r#"{"command":"subscribe","topic":"t"}"#);
        subscribe(&broker, &b, r#"{"command":"subscribe","topic":"t"}"#);
        assert_eq!(drain(&a).len(), 2);
        assert_eq!(drain(&b), [r#"{"success":true}"#]);
        assert_eq!(broker.stats().cached, 0);
    }

    #[test]
    fn dead_letter_after_max_attempts() {
        let broker = Broker::new(Config {
            max_attempts: 2,
            ..Config::default()
        });
        let a = broker.connect();
        subscribe(
            &broker,
            &a,
            r#"{"command":"subscribe","topic":"t","ack":true}"#,
        );
        send(
            &broker,
            &a,
            r#"{"command":"send","topic":"t","msg":"m","delivery":"one"}"#,
        );
        assert_eq!(broker.nack(&a, "t", 0), AckResult::Done);
        assert_eq!(broker.nack(&a, "t", 0), AckResult::Done);
        assert_eq!(broker.nack(&a, "t", 0), AckResult::Unknown);
        let d = broker.connect();
        subscribe(&broker, &d, r#"{"command":"subscribe","topic":"$dlq.t"}"#);
        assert_eq!(
            drain(&a)[3..],
            [
                r#"{"command":"send","topic":"t","msg":"m","delivery":"one","index":0,"redelivered":true,"attempt":2}"#,
                r#"{"success":true}"#,
                r#"{"success":true}"#,
            ]
        );
        assert_eq!(
            drain(&d),
            [
                r#"{"success":true}"#,
                r#"{"command":"send","topic":"$dlq.t","msg":"m","delivery":"one","index":0,"original_topic":"t","original_index":0,"attempts":2}"#
            ]
        );
        assert_eq!(broker.stats().dead_lettered, 1);
    }
}
