//! What a backend's producers and subscriptions share: the admin client, the topics
//! known to exist, and the record of what this backend created (for teardown).

use std::collections::{BTreeSet, HashSet};
use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::metadata::Metadata;
use tokio::time::Instant;

use super::config::{self, MAX_MESSAGE_BYTES};
use super::consumer::FanOuts;
use crate::backend::ConnectOptions;
use crate::error::{AdapterError, ErrorKind, fmt_duration};

/// How often a wait for a new topic's partitions asks for metadata again.
const METADATA_RETRY: Duration = Duration::from_millis(50);

/// How often teardown retries deleting a group that still has members (a subscription
/// dropped just before teardown is still leaving on its own thread).
const GROUP_DELETE_RETRY: Duration = Duration::from_millis(200);

/// The most characters Kafka allows in a topic name.
const MAX_TOPIC_NAME: usize = 249;

/// A value whose `Drop` may block (librdkafka clients join their threads and flush on
/// drop, for up to about a second), dropped on a thread of its own so that no Tokio
/// worker ever blocks.
pub(crate) struct OffThread<T: Send + 'static>(Option<T>);

impl<T: Send + 'static> OffThread<T> {
    pub(crate) fn new(value: T) -> Self {
        OffThread(Some(value))
    }
}

impl<T: Send + 'static> Deref for OffThread<T> {
    type Target = T;

    fn deref(&self) -> &T {
        // Only `drop` takes the value out.
        self.0
            .as_ref()
            .expect("OffThread holds its value until dropped")
    }
}

impl<T: Send + 'static> Drop for OffThread<T> {
    fn drop(&mut self) {
        if let Some(value) = self.0.take() {
            let spawned = std::thread::Builder::new()
                .name("bb-kafka-drop".into())
                .spawn(move || drop(value));
            // No thread to be had: drop here rather than leak.
            if let Err(e) = spawned {
                drop(e);
            }
        }
    }
}

/// The life of one subscription's reader thread, as its backend sees it: teardown asks
/// every reader still running to stop, and waits until their consumers are closed,
/// before it deletes topics. A consumer still fetching a topic that is deleted under it
/// gets an unknown-topic answer; tansu 0.6 puts a "current leader" field with an all-zero
/// topic id into that answer, and librdkafka 2.12 then dereferences a null topic name and
/// crashes the process.
#[derive(Debug)]
pub(crate) struct ReaderLife {
    stop: std::sync::atomic::AtomicBool,
    done: tokio::sync::watch::Sender<bool>,
}

impl ReaderLife {
    /// Whether teardown asked the reader to stop.
    pub(crate) fn should_stop(&self) -> bool {
        self.stop.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Called by the reader once its consumer is closed.
    pub(crate) fn ended(&self) {
        self.done.send_replace(true);
    }
}

/// What this backend knows and created.
#[derive(Debug, Default)]
struct Registry {
    /// Topics known to exist (created here, found existing, or seen in metadata).
    known: HashSet<String>,
    /// Topics this backend created: teardown deletes them.
    created: BTreeSet<String>,
    /// Consumer groups this backend's subscriptions joined or `prepare` declared:
    /// teardown deletes them.
    groups: BTreeSet<String>,
}

/// State shared by a [`KafkaBackend`](super::KafkaBackend), its producers and its
/// subscriptions.
pub(crate) struct Shared {
    /// The URL as given, for messages.
    pub(crate) url: String,
    /// `bootstrap.servers`.
    pub(crate) bootstrap: String,
    pub(crate) options: ConnectOptions,
    admin: OffThread<AdminClient<DefaultClientContext>>,
    /// Held while creating topics, so two tasks creating the same topic agree on who
    /// created it (and so who deletes it).
    creating: tokio::sync::Mutex<()>,
    registry: Mutex<Registry>,
    /// Readers of this backend's subscriptions that may still run.
    readers: Mutex<Vec<Arc<ReaderLife>>>,
    /// The consumers shared by fan-out subscriptions, one per topic.
    pub(crate) fan_outs: Arc<FanOuts>,
    /// Consumers created so far (see [`KafkaBackend::consumers_created`]).
    ///
    /// [`KafkaBackend::consumers_created`]: super::KafkaBackend::consumers_created
    consumers_created: AtomicU64,
}

impl Shared {
    /// Makes the admin client (no I/O yet).
    pub(crate) fn new(
        url: &str,
        bootstrap: String,
        options: ConnectOptions,
    ) -> Result<Shared, AdapterError> {
        let admin: AdminClient<DefaultClientContext> =
            config::admin(&bootstrap, &options).create().map_err(|e| {
                AdapterError::invalid_input(format!(
                    "cannot create a kafka admin client for {url}: {e}"
                ))
            })?;
        Ok(Shared {
            url: url.to_owned(),
            bootstrap,
            options,
            admin: OffThread::new(admin),
            creating: tokio::sync::Mutex::new(()),
            registry: Mutex::new(Registry::default()),
            readers: Mutex::new(Vec::new()),
            fan_outs: Arc::new(FanOuts::default()),
            consumers_created: AtomicU64::new(0),
        })
    }

    fn admin_options(&self, timeout: Duration) -> AdminOptions {
        AdminOptions::new()
            .request_timeout(Some(timeout))
            .operation_timeout(Some(timeout))
    }

    /// The cluster's metadata: every topic (`None`) or one. Runs librdkafka's blocking
    /// call on the blocking pool.
    pub(crate) async fn metadata(
        self: &Arc<Self>,
        topic: Option<String>,
        timeout: Duration,
    ) -> Result<(Metadata, Option<String>), KafkaError> {
        let shared = self.clone();
        let fetch = tokio::task::spawn_blocking(move || {
            let client = shared.admin.inner();
            let metadata = client.fetch_metadata(topic.as_deref(), timeout)?;
            // Answered from the metadata just fetched; brokers older than Kafka 0.10
            // have no cluster id.
            let cluster = client.fetch_cluster_id(Duration::from_millis(1));
            Ok((metadata, cluster))
        });
        match fetch.await {
            Ok(result) => result,
            // The closure does not panic; a cancelled runtime is all this can be.
            Err(_) => Err(KafkaError::MetadataFetch(RDKafkaErrorCode::Fail)),
        }
    }

    /// Counts a consumer created.
    pub(crate) fn consumer_created(&self) {
        self.consumers_created.fetch_add(1, Ordering::Relaxed);
    }

    /// Consumers created so far.
    pub(crate) fn consumers_created(&self) -> u64 {
        self.consumers_created.load(Ordering::Relaxed)
    }

    /// Readers (so consumers) that have not finished closing.
    pub(crate) fn open_consumers(&self) -> usize {
        self.readers
            .lock()
            .iter()
            .filter(|r| !*r.done.borrow())
            .count()
    }

    /// Registers a new subscription reader.
    pub(crate) fn new_reader(&self) -> Arc<ReaderLife> {
        let life = Arc::new(ReaderLife {
            stop: std::sync::atomic::AtomicBool::new(false),
            done: tokio::sync::watch::Sender::new(false),
        });
        let mut readers = self.readers.lock();
        readers.retain(|r| !*r.done.borrow());
        readers.push(life.clone());
        life
    }

    /// Asks every reader still running to stop and waits until they have closed their
    /// consumers, up to `deadline`. Returns how many did not finish in time.
    async fn stop_readers(&self, deadline: Instant) -> usize {
        let readers: Vec<Arc<ReaderLife>> = std::mem::take(&mut *self.readers.lock());
        for reader in &readers {
            reader
                .stop
                .store(true, std::sync::atomic::Ordering::Release);
        }
        let mut late = 0;
        for reader in readers {
            let mut done = reader.done.subscribe();
            if tokio::time::timeout_at(deadline, done.wait_for(|d| *d))
                .await
                .is_err()
            {
                late += 1;
            }
        }
        late
    }

    /// Remembers a consumer group for teardown.
    pub(crate) fn register_group(&self, group: &str) {
        self.registry.lock().groups.insert(group.to_owned());
    }

    /// Creates every topic of `topics` (name, partitions) that does not exist yet, then
    /// waits until the broker's metadata shows their partitions with leaders. Topics
    /// that already exist are used as they are.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Rejected`] naming the topic and the broker's reason,
    /// [`ErrorKind::Timeout`] when the broker did not answer or the partitions did not
    /// appear by `deadline`.
    pub(crate) async fn ensure_topics(
        self: &Arc<Self>,
        topics: &[(String, u32)],
        deadline: Instant,
    ) -> Result<(), AdapterError> {
        for (name, _) in topics {
            check_topic_name(name)?;
        }
        let missing: Vec<&(String, u32)> = {
            let registry = self.registry.lock();
            topics
                .iter()
                .filter(|(name, _)| !registry.known.contains(name))
                .collect()
        };
        if missing.is_empty() {
            return Ok(());
        }
        let Ok(_creating) = tokio::time::timeout_at(deadline, self.creating.lock()).await else {
            return Err(self.timeout_creating(&missing));
        };
        // Another task may have created some meanwhile.
        let missing: Vec<&(String, u32)> = {
            let registry = self.registry.lock();
            missing
                .into_iter()
                .filter(|(name, _)| !registry.known.contains(name))
                .collect()
        };
        if missing.is_empty() {
            return Ok(());
        }
        let timeout = deadline.saturating_duration_since(Instant::now());
        let max_bytes = MAX_MESSAGE_BYTES.to_string();
        let new_topics: Vec<NewTopic<'_>> = missing
            .iter()
            .map(|(name, partitions)| {
                // Replication -1: the broker's default (`default.replication.factor`).
                NewTopic::new(
                    name,
                    i32::try_from(*partitions).unwrap_or(i32::MAX),
                    TopicReplication::Fixed(-1),
                )
                .set("max.message.bytes", &max_bytes)
            })
            .collect();
        let options = self.admin_options(timeout);
        let created = tokio::time::timeout_at(
            deadline + Duration::from_secs(1),
            self.admin.create_topics(&new_topics, &options),
        )
        .await;
        let names = || {
            missing
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let results = match created {
            Ok(Ok(results)) => results,
            Ok(Err(e)) => {
                return Err(admin_error(
                    &format!("creating topic {} on kafka at {}", names(), self.url),
                    &e,
                    timeout,
                ));
            }
            Err(_) => return Err(self.timeout_creating(&missing)),
        };
        let mut failures = Vec::new();
        let mut created = Vec::new();
        {
            let mut registry = self.registry.lock();
            for result in results {
                match result {
                    // Known (usable) once its partitions show, below; deleted by teardown
                    // from now on.
                    Ok(name) => {
                        registry.created.insert(name.clone());
                        created.push(name);
                    }
                    // Someone else's (or an earlier run's): used as it is, not deleted.
                    Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => {
                        registry.known.insert(name);
                    }
                    Err((name, code)) => failures.push(format!("{name}: {code}")),
                }
            }
        }
        if !failures.is_empty() {
            return Err(AdapterError::rejected(format!(
                "kafka at {} refused to create topic {}",
                self.url,
                failures.join("; ")
            )));
        }
        for (name, partitions) in missing.iter().filter(|(n, _)| created.contains(n)) {
            self.wait_for_partitions(name, *partitions, deadline)
                .await?;
            self.registry.lock().known.insert(name.clone());
        }
        Ok(())
    }

    fn timeout_creating(&self, topics: &[&(String, u32)]) -> AdapterError {
        let names: Vec<&str> = topics.iter().map(|(n, _)| n.as_str()).collect();
        AdapterError::timeout(
            &format!(
                "creating topic {} on kafka at {}",
                names.join(", "),
                self.url
            ),
            self.options.request_timeout,
        )
    }

    /// Waits until the metadata shows `topic` with at least `partitions` partitions
    /// (one for a topic found existing), each with a leader.
    async fn wait_for_partitions(
        self: &Arc<Self>,
        topic: &str,
        partitions: u32,
        deadline: Instant,
    ) -> Result<(), AdapterError> {
        let wanted = usize::try_from(partitions).unwrap_or(usize::MAX).max(1);
        let mut last = String::from("no answer");
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(AdapterError::new(
                    ErrorKind::Timeout,
                    format!(
                        "topic {topic} on kafka at {}: its {wanted} partition(s) did not show up in the metadata within {} ({last})",
                        self.url,
                        fmt_duration(self.options.request_timeout)
                    ),
                ));
            }
            match self.metadata(Some(topic.to_owned()), left).await {
                Ok((metadata, _)) => match metadata.topics().iter().find(|t| t.name() == topic) {
                    Some(t) if t.error().is_none() => {
                        let led = t.partitions().iter().filter(|p| p.leader() >= 0).count();
                        if t.partitions().len() >= wanted && led == t.partitions().len() {
                            return Ok(());
                        }
                        last = format!("{led} of {wanted} partition(s) have a leader");
                    }
                    Some(t) => last = format!("{:?}", t.error()),
                    None => last = "not in the metadata".into(),
                },
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(METADATA_RETRY.min(left)).await;
        }
    }

    /// Stops this backend's subscriptions that are still running (they end with an
    /// error saying so), then deletes the groups and topics it created or joined, best
    /// effort. Each step waits up to the request timeout.
    ///
    /// # Errors
    ///
    /// One error naming everything that could not be deleted and why.
    pub(crate) async fn teardown(self: &Arc<Self>) -> Result<(), AdapterError> {
        let timeout = self.options.request_timeout;
        let mut failures = Vec::new();
        let late = self.stop_readers(Instant::now() + timeout).await;
        let (groups, topics): (Vec<String>, Vec<String>) = {
            let registry = self.registry.lock();
            (
                registry.groups.iter().cloned().collect(),
                registry.created.iter().cloned().collect(),
            )
        };
        if !groups.is_empty() {
            match self.delete_groups(&groups, Instant::now() + timeout).await {
                Ok(problems) => failures.extend(problems),
                Err(e) => failures.push(e.to_string()),
            }
        }
        if late > 0 {
            // Deleting a topic a consumer still fetches can crash librdkafka (see
            // `ReaderLife`): leave them.
            if !topics.is_empty() {
                failures.push(format!(
                    "{late} subscription(s) did not close within {}, so topic(s) {} were not deleted",
                    fmt_duration(timeout),
                    topics.join(", ")
                ));
            }
        } else if !topics.is_empty() {
            match self.delete_topics(&topics, Instant::now() + timeout).await {
                Ok(problems) => failures.extend(problems),
                Err(e) => failures.push(e.to_string()),
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(AdapterError::rejected(format!(
                "teardown on kafka at {}: {}",
                self.url,
                failures.join("; ")
            )))
        }
    }

    /// Deletes `groups`, retrying those that still have members until `deadline`.
    /// Returns what could not be deleted.
    async fn delete_groups(
        self: &Arc<Self>,
        groups: &[String],
        deadline: Instant,
    ) -> Result<Vec<String>, AdapterError> {
        let mut left: Vec<String> = groups.to_vec();
        loop {
            let timeout = deadline.saturating_duration_since(Instant::now());
            let names: Vec<&str> = left.iter().map(String::as_str).collect();
            let options = self.admin_options(timeout.max(Duration::from_millis(1)));
            let results = match tokio::time::timeout(
                timeout + Duration::from_secs(1),
                self.admin.delete_groups(&names, &options),
            )
            .await
            {
                Ok(Ok(results)) => results,
                Ok(Err(e)) => {
                    return Err(admin_error(
                        &format!("deleting consumer group {}", left.join(", ")),
                        &e,
                        timeout,
                    ));
                }
                Err(_) => {
                    return Err(AdapterError::timeout(
                        &format!("deleting consumer group {}", left.join(", ")),
                        self.options.request_timeout,
                    ));
                }
            };
            let mut busy = Vec::new();
            let mut failures = Vec::new();
            for result in results {
                match result {
                    Ok(name) | Err((name, RDKafkaErrorCode::GroupIdNotFound)) => {
                        self.registry.lock().groups.remove(&name);
                    }
                    Err((name, RDKafkaErrorCode::NonEmptyGroup)) => busy.push(name),
                    Err((name, code)) => failures.push(format!("consumer group {name}: {code}")),
                }
            }
            if busy.is_empty() || Instant::now() + GROUP_DELETE_RETRY >= deadline {
                failures.extend(
                    busy.iter()
                        .map(|name| format!("consumer group {name} still has members")),
                );
                return Ok(failures);
            }
            tokio::time::sleep(GROUP_DELETE_RETRY).await;
            left = busy;
        }
    }

    /// Deletes `topics`. Returns what could not be deleted.
    async fn delete_topics(
        self: &Arc<Self>,
        topics: &[String],
        deadline: Instant,
    ) -> Result<Vec<String>, AdapterError> {
        let timeout = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        let options = self.admin_options(timeout);
        let results = match tokio::time::timeout(
            timeout + Duration::from_secs(1),
            self.admin.delete_topics(&names, &options),
        )
        .await
        {
            Ok(Ok(results)) => results,
            Ok(Err(e)) => {
                return Err(admin_error(
                    &format!("deleting topic {}", topics.join(", ")),
                    &e,
                    timeout,
                ));
            }
            Err(_) => {
                return Err(AdapterError::timeout(
                    &format!("deleting topic {}", topics.join(", ")),
                    self.options.request_timeout,
                ));
            }
        };
        let mut failures = Vec::new();
        for result in results {
            match result {
                Ok(name) | Err((name, RDKafkaErrorCode::UnknownTopicOrPartition)) => {
                    let mut registry = self.registry.lock();
                    registry.created.remove(&name);
                    registry.known.remove(&name);
                }
                Err((name, code)) => failures.push(format!("topic {name}: {code}")),
            }
        }
        Ok(failures)
    }
}

/// Checks a topic name against Kafka's rules (ASCII letters, digits, `.`, `_`, `-`; at
/// most 249 characters; not `.` or `..`), so a bad name is refused with a clear message
/// rather than by the broker (or by librdkafka's C string conversion).
///
/// # Errors
///
/// [`ErrorKind::InvalidInput`] naming the topic and the rule.
pub(crate) fn check_topic_name(topic: &str) -> Result<(), AdapterError> {
    let why = if topic.is_empty() {
        Some("it is empty")
    } else if topic == "." || topic == ".." {
        Some("'.' and '..' are reserved")
    } else if topic.len() > MAX_TOPIC_NAME {
        Some("it is longer than 249 characters")
    } else if !topic
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        Some("only ASCII letters, digits, '.', '_' and '-' are allowed")
    } else {
        None
    };
    match why {
        None => Ok(()),
        Some(why) => Err(AdapterError::invalid_input(format!(
            "'{topic}' is not a valid Kafka topic name: {why}"
        ))),
    }
}

/// An admin request's failure as an [`AdapterError`] naming `what`.
fn admin_error(what: &str, e: &KafkaError, timeout: Duration) -> AdapterError {
    let code = match e {
        KafkaError::AdminOp(code) => Some(*code),
        other => other.rdkafka_error_code(),
    };
    match code {
        Some(RDKafkaErrorCode::OperationTimedOut | RDKafkaErrorCode::RequestTimedOut) => {
            AdapterError::timeout(what, timeout)
        }
        Some(
            RDKafkaErrorCode::BrokerTransportFailure
            | RDKafkaErrorCode::AllBrokersDown
            | RDKafkaErrorCode::Resolve,
        ) => AdapterError::closed(format!("{what}: {e}")),
        _ => AdapterError::rejected(format!("{what}: {e}")),
    }
}
