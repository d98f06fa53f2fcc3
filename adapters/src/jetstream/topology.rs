//! The streams and consumers a JetStream backend creates: their names, their settings,
//! and their removal at teardown.
//!
//! - One stream per topic, storing exactly the subject named like the topic, in **memory**
//!   (fast, and a benchmark's data needs no disk; a server restart loses it), with the
//!   topic's retention limit as `max_msgs` (oldest messages discarded first) and a
//!   [`DEDUP_WINDOW`] for `Nats-Msg-Id`.
//! - One durable pull consumer per (topic, group), shared by every member of the group.
//! - One consumer per fan-out subscription, made by the subscription (see `subscriber`) and
//!   registered here so a teardown removes it if the subscription did not.
//!
//! A server restarted without the streams' storage has lost them and their consumers:
//! whoever meets "stream not found" calls [`Topology::stream_lost`], and the next
//! publish or subscription to the topic creates them again.
//!
//! Names: a stream is `<topic with '.' and other characters a stream name cannot hold
//! replaced by '_'>-<hash of the topic>`, so two topics never share a stream; a group's
//! consumer is `g-<cleaned group>-<hash of the group>`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::context::{CreateStreamErrorKind, GetStreamErrorKind};
use async_nats::jetstream::stream::{
    self, ConsumerError, ConsumerErrorKind, DiscardPolicy, RetentionPolicy, StorageType,
};
use async_nats::jetstream::{self, Context};
use parking_lot::Mutex;
use tokio::sync::OnceCell;

use crate::error::{AdapterError, ErrorKind};

/// How long the server remembers a `Nats-Msg-Id`: a second publish with the same id within
/// it is acknowledged as a duplicate and not stored again.
pub(super) const DEDUP_WINDOW: Duration = Duration::from_secs(120);

/// How long an unacknowledged message waits before the server delivers it again (manual
/// acks, and the group consumers whose members ack for themselves).
pub(super) const ACK_WAIT: Duration = Duration::from_secs(5);

/// Unacknowledged messages a consumer with acks may have out before the server pauses
/// it. Generous, so acking in batches or a little late does not throttle a run.
pub(super) const MAX_ACK_PENDING: i64 = 20_000;

/// A stream this backend uses.
#[derive(Debug)]
pub(super) struct StreamEntry {
    /// The stream's name on the server.
    pub name: String,
    /// Whether this backend created it (and so deletes it at teardown).
    created: bool,
}

/// A group's shared consumer.
#[derive(Debug)]
struct GroupEntry {
    stream: String,
    name: String,
    created: bool,
}

/// Things set up on the server at most once per key, however many callers ask at the same
/// time: the first caller creates, the others wait for its result (a failure is retried by
/// the next caller).
type SetUpOnce<K, V> = Mutex<HashMap<K, Arc<OnceCell<V>>>>;

/// Everything this backend has created or uses on the server.
pub(super) struct Topology {
    /// The backend's own connection, for the JetStream API.
    js: Context,
    /// The server's URL with its password redacted, for messages.
    url: String,
    timeout: Duration,
    /// Topic → its stream, set up at most once.
    streams: SetUpOnce<String, Arc<StreamEntry>>,
    /// (topic, group) → the group's shared consumer, set up at most once.
    groups: SetUpOnce<(String, String), GroupEntry>,
    /// (stream, consumer) of the fan-out subscriptions' consumers not yet deleted.
    subscribers: Mutex<HashSet<(String, String)>>,
    /// Topics whose stream this backend created: one found on the server after it was
    /// lost and created again (perhaps by another producer of this backend) is still
    /// this backend's to delete.
    ours: Mutex<HashSet<String>>,
    /// How many times a stream was found lost (see [`Topology::stream_lost`]).
    losses: AtomicU64,
}

impl Topology {
    pub(super) fn new(js: Context, url: String, timeout: Duration) -> Self {
        Topology {
            js,
            url,
            timeout,
            streams: Mutex::new(HashMap::new()),
            groups: Mutex::new(HashMap::new()),
            subscribers: Mutex::new(HashSet::new()),
            ours: Mutex::new(HashSet::new()),
            losses: AtomicU64::new(0),
        }
    }

    /// Forgets the stream of `topic` and its groups' consumers after the server said the
    /// stream does not exist (a restart lost it: streams are kept in memory), so that the
    /// next caller creates them again.
    pub(super) fn stream_lost(&self, topic: &str) {
        if self.streams.lock().remove(topic).is_some() {
            self.groups.lock().retain(|(t, _), _| t != topic);
            self.losses.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// How many times a stream was found lost: a caller keeping its own note of the
    /// streams it has set up drops it when this changes.
    pub(super) fn losses(&self) -> u64 {
        self.losses.load(Ordering::Relaxed)
    }

    /// The URL of the server (password redacted).
    pub(super) fn url(&self) -> &str {
        &self.url
    }

    /// The stream of `topic`, found or created. `max_messages`, when given, is applied to
    /// a stream this backend created without it earlier (a topic first used before
    /// `prepare`).
    ///
    /// # Errors
    ///
    /// The server's refusal ([`ErrorKind::Rejected`]: subjects overlapping another stream,
    /// no resources, ...), or a timeout.
    pub(super) async fn stream(
        &self,
        topic: &str,
        max_messages: Option<u64>,
    ) -> Result<Arc<StreamEntry>, AdapterError> {
        let cell = self
            .streams
            .lock()
            .entry(topic.to_owned())
            .or_default()
            .clone();
        let mut opened_here = false;
        let entry = cell
            .get_or_try_init(|| {
                opened_here = true;
                self.open_stream(topic, max_messages)
            })
            .await?
            .clone();
        if !opened_here && entry.created && max_messages.is_some() {
            let what = format!(
                "set the retention limit of stream {} (topic {topic})",
                entry.name
            );
            self.js
                .update_stream(stream_config(topic, &entry.name, max_messages))
                .await
                .map_err(|e| {
                    self.refused(&what, &e, e.kind() == CreateStreamErrorKind::TimedOut)
                })?;
        }
        Ok(entry)
    }

    async fn open_stream(
        &self,
        topic: &str,
        max_messages: Option<u64>,
    ) -> Result<Arc<StreamEntry>, AdapterError> {
        let name = stream_name(topic);
        let what = format!("create stream {name} for topic {topic}");
        match self.js.get_stream(&name).await {
            Ok(existing) => {
                let subjects = &existing.cached_info().config.subjects;
                if !subjects.iter().any(|s| s == topic) {
                    return Err(AdapterError::invalid_input(format!(
                        "{what}: a stream of that name exists at jetstream {} but stores {subjects:?}, not {topic}",
                        self.url
                    )));
                }
                // Someone else's (or an earlier run's) stream: used, never deleted; unless
                // this backend made it before it was lost.
                let created = self.ours.lock().contains(topic);
                return Ok(Arc::new(StreamEntry { name, created }));
            }
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(self.refused(&what, &e, is_request_failure(&e))),
        }
        match self
            .js
            .create_stream(stream_config(topic, &name, max_messages))
            .await
        {
            Ok(_) => {
                self.ours.lock().insert(topic.to_owned());
                Ok(Arc::new(StreamEntry {
                    name,
                    created: true,
                }))
            }
            // Created meanwhile by someone else.
            Err(e) if jetstream_code(&e) == Some(ErrorCode::STREAM_NAME_EXIST) => {
                let created = self.ours.lock().contains(topic);
                Ok(Arc::new(StreamEntry { name, created }))
            }
            Err(e) => Err(self.refused(&what, &e, e.kind() == CreateStreamErrorKind::TimedOut)),
        }
    }

    /// The name of `group`'s shared consumer on `stream` (of `topic`), found or created
    /// with `start` as its deliver policy.
    ///
    /// # Errors
    ///
    /// The server's refusal, or a timeout.
    pub(super) async fn group(
        &self,
        topic: &str,
        stream: &StreamEntry,
        group: &str,
        start: DeliverPolicy,
    ) -> Result<String, AdapterError> {
        let cell = self
            .groups
            .lock()
            .entry((topic.to_owned(), group.to_owned()))
            .or_default()
            .clone();
        let entry = cell
            .get_or_try_init(|| self.open_group(topic, &stream.name, group, start))
            .await?;
        Ok(entry.name.clone())
    }

    async fn open_group(
        &self,
        topic: &str,
        stream: &str,
        group: &str,
        start: DeliverPolicy,
    ) -> Result<GroupEntry, AdapterError> {
        let name = group_consumer_name(group);
        let what = format!("create consumer {name} for group {group} on stream {stream}");
        let entry = |created| GroupEntry {
            stream: stream.to_owned(),
            name: name.clone(),
            created,
        };
        match self
            .js
            .get_consumer_from_stream::<pull::Config, _, _>(&name, stream)
            .await
        {
            Ok(_) => return Ok(entry(false)),
            Err(e) if consumer_not_found(&e) => {}
            Err(e) => {
                return Err(self.refused(&what, &e, e.kind() == ConsumerErrorKind::TimedOut));
            }
        }
        let config = pull::Config {
            durable_name: Some(name.clone()),
            description: Some(format!("brokerbench group {group} of topic {topic}")),
            deliver_policy: start,
            ack_policy: AckPolicy::Explicit,
            ack_wait: ACK_WAIT,
            max_deliver: -1,
            max_ack_pending: MAX_ACK_PENDING,
            ..Default::default()
        };
        match self.js.create_consumer_on_stream(config, stream).await {
            Ok(_) => Ok(entry(true)),
            Err(e)
                if matches!(
                    consumer_code(&e),
                    Some(ErrorCode::CONSUMER_NAME_EXIST | ErrorCode::CONSUMER_ALREADY_EXISTS)
                ) =>
            {
                Ok(entry(false))
            }
            Err(e) => {
                if consumer_code(&e) == Some(ErrorCode::STREAM_NOT_FOUND) {
                    self.stream_lost(topic);
                }
                Err(self.refused(&what, &e, e.kind() == ConsumerErrorKind::TimedOut))
            }
        }
    }

    /// Notes a fan-out subscription's consumer, so a teardown deletes it if the
    /// subscription does not.
    pub(super) fn add_subscriber(&self, stream: &str, consumer: &str) {
        self.subscribers
            .lock()
            .insert((stream.to_owned(), consumer.to_owned()));
    }

    /// Forgets a fan-out subscription's consumer that was deleted.
    pub(super) fn remove_subscriber(&self, stream: &str, consumer: &str) {
        self.subscribers
            .lock()
            .remove(&(stream.to_owned(), consumer.to_owned()));
    }

    /// Deletes every stream this backend created (with their consumers) and every consumer
    /// it created on streams it did not create; best effort, all of them tried.
    ///
    /// # Errors
    ///
    /// One error naming each deletion that failed and why.
    pub(super) async fn teardown(&self) -> Result<(), AdapterError> {
        let streams: Vec<Arc<StreamEntry>> = self
            .streams
            .lock()
            .drain()
            .filter_map(|(_, cell)| cell.get().cloned())
            .collect();
        let ours: HashSet<&str> = streams
            .iter()
            .filter(|s| s.created)
            .map(|s| s.name.as_str())
            .collect();
        let mut consumers: Vec<(String, String)> = self.subscribers.lock().drain().collect();
        consumers.extend(self.groups.lock().drain().filter_map(|(_, cell)| {
            cell.get()
                .filter(|g| g.created)
                .map(|g| (g.stream.clone(), g.name.clone()))
        }));
        let mut failures = Vec::new();
        for (stream, consumer) in consumers {
            if ours.contains(stream.as_str()) {
                continue; // deleted with its stream
            }
            if let Err(e) = self.delete_consumer(&stream, &consumer).await {
                failures.push(e);
            }
        }
        for stream in streams.iter().filter(|s| s.created) {
            let what = format!("delete stream {}", stream.name);
            match self.js.delete_stream(&stream.name).await {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => failures.push(self.refused(&what, &e, is_request_failure(&e))),
            }
        }
        match failures.first() {
            None => Ok(()),
            Some(first) => Err(AdapterError::new(
                first.kind(),
                format!(
                    "teardown at jetstream {}: {}",
                    self.url,
                    failures
                        .iter()
                        .map(AdapterError::message)
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
            )),
        }
    }

    /// Deletes a consumer through the backend's connection; one already gone is fine.
    async fn delete_consumer(&self, stream: &str, consumer: &str) -> Result<(), AdapterError> {
        delete_consumer(&self.js, &self.url, self.timeout, stream, consumer).await
    }

    /// `what: <the server's answer>`, as a rejection (the server answered) or a timeout or
    /// closed connection (it did not).
    fn refused(
        &self,
        what: &str,
        error: &(dyn std::error::Error + 'static),
        no_answer: bool,
    ) -> AdapterError {
        api_error(what, &self.url, self.timeout, error, no_answer)
    }
}

/// Deletes `consumer` of `stream` through `js` and waits for the server's confirmation; a
/// consumer (or stream) already gone counts as deleted.
///
/// # Errors
///
/// The server's refusal, or no answer within `timeout`.
pub(super) async fn delete_consumer(
    js: &Context,
    url: &str,
    timeout: Duration,
    stream: &str,
    consumer: &str,
) -> Result<(), AdapterError> {
    match js.delete_consumer_from_stream(consumer, stream).await {
        Ok(_) => Ok(()),
        Err(e) if consumer_not_found(&e) => Ok(()),
        Err(e) => Err(api_error(
            &format!("delete consumer {consumer} of stream {stream}"),
            url,
            timeout,
            &e,
            e.kind() == ConsumerErrorKind::TimedOut,
        )),
    }
}

/// The error for a JetStream API call that failed.
pub(super) fn api_error(
    what: &str,
    url: &str,
    timeout: Duration,
    error: &(dyn std::error::Error + 'static),
    no_answer: bool,
) -> AdapterError {
    if no_answer {
        return AdapterError::new(
            ErrorKind::Timeout,
            format!(
                "{what}: no answer from jetstream at {url} within {}",
                crate::error::fmt_duration(timeout)
            ),
        );
    }
    AdapterError::rejected(format!(
        "{what}: jetstream at {url} answered: {}",
        super::client::cause(error)
    ))
}

/// The configuration of `topic`'s stream `name`.
fn stream_config(topic: &str, name: &str, max_messages: Option<u64>) -> stream::Config {
    stream::Config {
        name: name.to_owned(),
        description: Some(format!("brokerbench topic {topic}")),
        subjects: vec![topic.to_owned()],
        storage: StorageType::Memory,
        retention: RetentionPolicy::Limits,
        discard: DiscardPolicy::Old,
        max_messages: max_messages.map_or(-1, |max| i64::try_from(max).unwrap_or(i64::MAX)),
        max_bytes: -1,
        duplicate_window: DEDUP_WINDOW,
        num_replicas: 1,
        ..Default::default()
    }
}

fn is_not_found(error: &jetstream::context::GetStreamError) -> bool {
    matches!(error.kind(), GetStreamErrorKind::JetStream(e) if e.error_code() == ErrorCode::STREAM_NOT_FOUND)
}

fn is_request_failure(error: &jetstream::context::GetStreamError) -> bool {
    error.kind() == GetStreamErrorKind::Request
}

fn jetstream_code(error: &jetstream::context::CreateStreamError) -> Option<ErrorCode> {
    match error.kind() {
        CreateStreamErrorKind::JetStream(e) => Some(e.error_code()),
        _ => None,
    }
}

fn consumer_code(error: &ConsumerError) -> Option<ErrorCode> {
    match error.kind() {
        ConsumerErrorKind::JetStream(e) => Some(e.error_code()),
        _ => None,
    }
}

/// Whether the server said the consumer (or its stream) does not exist.
pub(super) fn consumer_not_found(error: &ConsumerError) -> bool {
    matches!(
        consumer_code(error),
        Some(ErrorCode::CONSUMER_NOT_FOUND | ErrorCode::STREAM_NOT_FOUND)
    )
}

/// Characters of `text` a stream or consumer name cannot hold replaced by `_`, at most
/// `max` characters.
fn clean(text: &str, max: usize) -> String {
    text.chars()
        .take(max)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// FNV-1a, 32 bits: a short, stable hash that keeps cleaned names apart.
fn fnv32(text: &str) -> u32 {
    text.bytes().fold(0x811c_9dc5, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    })
}

/// The stream of `topic`: `bb_run_chat-1a2b3c4d` for `bb.run.chat`.
pub(super) fn stream_name(topic: &str) -> String {
    format!("{}-{:08x}", clean(topic, 200), fnv32(topic))
}

/// The shared consumer of `group`: `g-workers-1a2b3c4d`.
fn group_consumer_name(group: &str) -> String {
    format!("g-{}-{:08x}", clean(group, 200), fnv32(group))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_valid_and_distinct() {
        let a = stream_name("bb.r1.chat");
        assert!(a.starts_with("bb_r1_chat-"), "{a}");
        assert!(!a.contains(['.', '*', '>', ' ']));
        // Cleaning alone would make these equal.
        assert_ne!(stream_name("bb.a_b.c"), stream_name("bb.a.b_c"));
        assert_ne!(group_consumer_name("w.1"), group_consumer_name("w_1"));
        assert!(group_consumer_name("my workers").starts_with("g-my_workers-"));
        assert_eq!(fnv32(""), 0x811c_9dc5);
    }

    #[test]
    fn stream_settings() {
        let config = stream_config("bb.r.t", "n", Some(10));
        assert_eq!(config.subjects, ["bb.r.t"]);
        assert_eq!(config.max_messages, 10);
        assert_eq!(config.storage, StorageType::Memory);
        assert_eq!(config.duplicate_window, DEDUP_WINDOW);
        assert_eq!(stream_config("t", "n", None).max_messages, -1);
    }
}
