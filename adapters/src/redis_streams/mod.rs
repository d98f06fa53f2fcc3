//! The Redis Streams adapter, through the `redis` crate's multiplexed async connection
//! for set-up, acks and stats; producers and subscriptions' reading connections speak RESP
//! themselves (`wire`: no `Cmd`s, no `Value` trees on the hot paths).
//!
//! A topic is a stream key (the per-run name `bb.<run>.<name>` as is).
//!
//! **Publishing** is `XADD <topic> [MAXLEN = n] * payload <bytes> [key <key>]`; its reply,
//! the entry id, is the confirmation. Publishes pipeline on the producer's own
//! connection, which the adapter speaks in RESP itself (no redis crate there): each
//! publish encodes its command into the connection's buffer, in order, when first polled,
//! and whatever has gathered goes out in one write.
//! [`Producer::publish_batch`](crate::Producer::publish_batch) is one pipeline of its own
//! (one write, one round trip), never split, with one reply and one timer. With
//! [`TopicSpec::max_messages`](crate::TopicSpec::max_messages) the stream is trimmed
//! exactly (`MAXLEN =`, not `~`), so a late reader sees exactly the retained tail.
//!
//! **Subscribing** goes through consumer groups: fan-out (`group == None`) creates a group
//! of its own, competing subscribers share the group they name (created by
//! [`prepare`](crate::Backend::prepare) at `$`, or by the first member). `XGROUP CREATE`
//! places the group on the server atomically, at `$` for `Latest`, `0` for `Beginning`,
//! the sequence's entry id for `AfterSequence`; every entry appended after its `OK` goes
//! to the group, so the subscription is ready when the group exists. A member that joins
//! an existing group starts where the group stands. Each subscription reads
//! (`XREADGROUP ... BLOCK`) on a dedicated connection, since a blocked read holds up
//! everything behind it on its connection.
//!
//! **Acks.** `AckMode::Auto` reads with `NOACK` (nothing enters the pending list: at most
//! once, and the cheapest). `AckMode::Manual` keeps entries pending until the `XACK` the
//! subscription sends (batched) for [`Subscription::ack`](crate::Subscription::ack).
//! Entries left unacknowledged for the ack wait ([`DEFAULT_ACK_WAIT`], 5 s) are claimed
//! (`XAUTOCLAIM`) by a member of the group and delivered again with `redelivered = true`
//! and `attempt` = the server's delivery count (1 on the first delivery). A nack makes the
//! entry claimable at once (`XCLAIM ... IDLE <ack wait> JUSTID`) and the nacking
//! subscription claims immediately, so it comes back at once as the next attempt, to
//! whichever member claims it first. A member that unsubscribes with unacknowledged
//! entries hands them to the rest of the group the same way instead of deleting them.
//!
//! **Leaving.** [`unsubscribe`](crate::Subscription::unsubscribe) interrupts the blocked
//! read (`CLIENT UNBLOCK`), delivers what it still brought, and returns when the fan-out
//! group is destroyed (`XGROUP DESTROY`) or the member deleted (`XGROUP DELCONSUMER`).
//! Dropping a subscription does the same in the background. [`teardown`](Backend::teardown)
//! deletes (`UNLINK`) every stream key the backend, its producers and subscriptions used,
//! and with them their groups.
//!
//! **Sequence numbers.** An entry id is `<ms>-<seq>` (server clock, counter within the
//! millisecond), assigned by the server atomically with the append.
//! [`Delivery::sequence`](crate::Delivery::sequence) is `ms * 2^20 + seq`, which keeps
//! the order of ids, so [`StartPosition::AfterSequence(n)`](crate::StartPosition) reads
//! exactly the entries after id `<n / 2^20>-<n mod 2^20>`. It is `None` for an id outside
//! that range (`seq` ≥ 2^20 within one millisecond, or a clock past the year 2248).
//!
//! **Connections.** One control connection per backend (set-up, acks, claims, stats), one
//! per producer, one per subscription; named in `CLIENT LIST` as `<prefix>-control`,
//! `<prefix>-producer-<n>` and `<prefix>-<n>-reader`, with the prefix
//! [`RedisBackend::client_name_prefix`] (`bb-<pid>-<nonce>`).
//!
//! **Lost connections.** The control connection reconnects; producers and subscriptions
//! do not.
//!
//! - When a request on the control connection finds it gone (an I/O error, a reset, a
//!   close; not an error reply, and not a timeout), the next request dials a new one with
//!   the same handshake (`AUTH`, `SELECT`, `CLIENT SETNAME`), and the failing request is
//!   sent once more on it: every command sent there has the same effect when it arrives
//!   twice (`XGROUP CREATE` answers `BUSYGROUP`, `XACK` and `XCLAIM ... JUSTID` set the
//!   same state again; an `XACK` resent this way does not count what it finds acknowledged
//!   already as rejected). So [`prepare`](Backend::prepare),
//!   [`subscribe`](Backend::subscribe), [`teardown`](Backend::teardown), acks, nacks and
//!   stats work again as soon as the server can be reached; until then they fail with the
//!   dial's error (`Connect`), and an ack or nack that could not be sent is reported once,
//!   by the next one.
//! - A producer's lost connection makes its publishes resolve `Unknown` (possibly written)
//!   or `Failed` (known not sent); a subscription whose reading connection is lost ends
//!   with an error item (`Closed`). Neither resumes on a new connection: a subscription
//!   doing so silently would miss or repeat entries without its caller knowing.
//!   [`producer`](Backend::producer) and [`subscribe`](Backend::subscribe) dial new
//!   connections of their own, so coming back is making a new producer and subscribing
//!   again. A manual-ack member that lost its connection releases its unacknowledged
//!   entries to its group on the way out (through the control connection), or, if the
//!   server cannot be reached then, they stay pending until a member claims them after
//!   the ack wait: subscribing again to the same group gets them back either way.
//!
//! What Redis Streams does not do, and this adapter therefore does not claim
//! ([`RedisBackend::capabilities`]):
//!
//! - **Key ordering.** A consumer group hands the next entries to whichever member reads
//!   next; there is no key affinity, and a topic is one stream with one order. A key is
//!   carried as the entry's `key` field and returned in `Delivery::key`, nothing more.
//! - **Dead letters.** Redis has no dead-letter destination; the delivery count
//!   (`XPENDING`) is exposed as `attempt`, but moving entries elsewhere would be the
//!   adapter's invention, not the broker's guarantee.
//! - **Dedup.** `XADD` has no idempotency key in Redis 7 (entry ids are assigned by the
//!   server with `*`; an explicit id only rejects ids not greater than the last one,
//!   which is no dedup window).

mod entries;
mod link;
mod publisher;
mod resp;
mod subscriber;
mod topics;
mod wire;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ::redis::{Value, cmd};
use futures::future::BoxFuture;

use self::link::{Control, Link, Role, Target};
use self::publisher::RedisPublisher;
use self::topics::Topics;
use crate::backend::{Backend, ConnectOptions, RunTopology};
use crate::capability::{Capabilities, Capability};
use crate::error::AdapterError;
use crate::kind::BackendKind;
use crate::publish::Producer;
use crate::subscription::{Subscription, SubscriptionSpec};

/// How long a manually acknowledged entry may stay unacknowledged before another claim
/// round (of any member of its group) takes it and delivers it again.
pub const DEFAULT_ACK_WAIT: Duration = Duration::from_secs(5);

/// What Redis Streams guarantees through this adapter.
const CAPABILITIES: [Capability; 7] = [
    Capability::FanOut,
    Capability::Competing,
    Capability::Replay,
    Capability::LiveOnly,
    Capability::AckRedelivery,
    Capability::Nack,
    Capability::RetentionLimit,
];

/// A connected Redis server, used through Streams.
///
/// ```no_run
/// # async fn demo() -> Result<(), brokerbench_adapters::AdapterError> {
/// use brokerbench_adapters::redis_streams::RedisBackend;
/// use brokerbench_adapters::{Backend, ConnectOptions, PublishRequest, SubscriptionSpec};
/// use futures::StreamExt;
///
/// let redis = RedisBackend::connect("redis://127.0.0.1:6379", ConnectOptions::new()).await?;
/// println!("{:?}", redis.server_version()); // Some("redis 7.0.15")
/// let topic = redis.topic_name("run-1", "orders");
/// let mut sub = redis.subscribe(SubscriptionSpec::new(topic.as_str())).await?;
/// let producer = redis.producer().await?;
/// assert!(producer.publish(PublishRequest::new(topic.as_str(), "hi")).await.is_confirmed());
/// let delivery = sub.next().await.expect("open")?;
/// assert_eq!(delivery.payload, "hi");
/// redis.teardown().await?; // deletes the stream (and its groups)
/// # Ok(()) }
/// ```
pub struct RedisBackend {
    url: String,
    target: Target,
    options: ConnectOptions,
    control: Control,
    server_version: Option<String>,
    topics: Arc<Topics>,
    /// `bb-<pid>-<nonce>`: starts every consumer, group and connection name it makes.
    prefix: String,
    /// Numbers producers and subscriptions.
    next: AtomicU64,
    ack_wait: Duration,
}

impl RedisBackend {
    /// Connects to the Redis server at `url` (`redis://[[user]:password@]host[:port][/db]`,
    /// `valkey://...`, or a bare `host:port`): dials it, logs in, selects the database and
    /// reads its version (`INFO server`), all within the connect timeout.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidUrl`](crate::ErrorKind::InvalidUrl) for a malformed URL;
    /// [`ErrorKind::Connect`](crate::ErrorKind::Connect) when no address answers, e.g.
    /// `cannot connect to redis at redis://127.0.0.1:6390 (tried 127.0.0.1:6390: connection
    /// refused)`; [`ErrorKind::Rejected`](crate::ErrorKind::Rejected) when the server
    /// refuses the login (`WRONGPASS`), needs one (`NOAUTH`), or refuses the database;
    /// [`ErrorKind::Unsupported`](crate::ErrorKind::Unsupported) for TLS and Unix-socket
    /// URLs.
    pub async fn connect(url: &str, options: ConnectOptions) -> Result<Self, AdapterError> {
        static INSTANCES: AtomicU64 = AtomicU64::new(0);
        let target = Target::parse(url)?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let prefix = format!(
            "bb-{}-{:x}{}",
            std::process::id(),
            nanos & 0xfff_fff,
            INSTANCES.fetch_add(1, Ordering::Relaxed)
        );
        let link = Link::open(&target, &prefix, Role::Control, &options).await?;
        let server_version = link.server_info.as_deref().and_then(version_from_info);
        let control = Control::new(link, &target, &prefix, &options);
        Ok(RedisBackend {
            url: url.to_owned(),
            target,
            options,
            control,
            server_version,
            topics: Arc::new(Topics::default()),
            prefix,
            next: AtomicU64::new(1),
            ack_wait: DEFAULT_ACK_WAIT,
        })
    }

    /// Sets how long a manually acknowledged entry may stay unacknowledged before it is
    /// delivered again ([`DEFAULT_ACK_WAIT`] = 5 s). Applies to subscriptions made after.
    #[must_use]
    pub fn with_ack_wait(mut self, ack_wait: Duration) -> Self {
        self.ack_wait = ack_wait.max(Duration::from_millis(1));
        self
    }

    /// The ack wait in force; see [`with_ack_wait`](Self::with_ack_wait).
    pub fn ack_wait(&self) -> Duration {
        self.ack_wait
    }

    /// What Redis Streams guarantees through this adapter: fan-out, competing consumers,
    /// replay, live-only subscriptions, ack and redelivery, nack and retention limits.
    /// Not key ordering, dead letters or dedup (see the [module documentation](self)).
    pub fn capabilities() -> Capabilities {
        Capabilities::of(&CAPABILITIES)
    }

    /// `bb-<pid>-<nonce>`: the start of every consumer, fan-out group and connection name
    /// (`CLIENT SETNAME`) this backend makes, to find them in `CLIENT LIST` or
    /// `XINFO GROUPS`.
    pub fn client_name_prefix(&self) -> &str {
        &self.prefix
    }

    /// The stream keys this backend has created or used so far (what
    /// [`teardown`](Backend::teardown) deletes), sorted.
    pub fn streams(&self) -> Vec<String> {
        self.topics.names().iter().map(|k| k.to_string()).collect()
    }

    fn next_number(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    /// Creates the streams' shared consumer groups (at `$`: on a new, empty stream that
    /// is every entry to come) and records the retention limits.
    async fn prepare_topology(&self, topology: &RunTopology) -> Result<(), AdapterError> {
        for topic in &topology.topics {
            Self::capabilities().require(
                BackendKind::Redis,
                topic.required_capabilities(),
                &format!("topic {}", topic.name),
            )?;
        }
        for topic in &topology.topics {
            self.topics.declare(&topic.name, topic.max_messages);
            for group in &topic.groups {
                let mut create = cmd("XGROUP");
                create
                    .arg("CREATE")
                    .arg(&topic.name)
                    .arg(group)
                    .arg("$")
                    .arg("MKSTREAM");
                match self.control.raw(&create).await {
                    Ok(_) => {}
                    Err(failure) if failure.is_code("BUSYGROUP") => {}
                    Err(failure) => {
                        return Err(failure.into_error(
                            &format!(
                                "prepare: creating consumer group '{group}' on {}",
                                topic.name
                            ),
                            &self.control.url,
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Deletes every stream key recorded (`UNLINK`: the memory is freed in the
    /// background), which removes their consumer groups too.
    async fn delete_streams(&self) -> Result<(), AdapterError> {
        let names = self.topics.names();
        if names.is_empty() {
            return Ok(());
        }
        let mut unlink = cmd("UNLINK");
        for name in &names {
            unlink.arg(&**name);
        }
        let listed: Vec<&str> = names.iter().map(|n| &**n).collect();
        self.control
            .call(
                &format!("teardown: deleting {}", listed.join(", ")),
                &unlink,
            )
            .await?;
        self.topics.forget(&names);
        Ok(())
    }

    /// A few `INFO` fields, and the length of every stream this backend used.
    async fn stats(&self) -> Result<serde_json::Value, AdapterError> {
        const FIELDS: [&str; 13] = [
            "redis_version",
            "uptime_in_seconds",
            "connected_clients",
            "blocked_clients",
            "used_memory",
            "used_memory_peak",
            "total_connections_received",
            "total_commands_processed",
            "instantaneous_ops_per_sec",
            "total_net_input_bytes",
            "total_net_output_bytes",
            "used_cpu_sys",
            "used_cpu_user",
        ];
        let info = self
            .control
            .call("broker stats: INFO", &cmd("INFO"))
            .await?;
        let info = link::text(&info).unwrap_or_default();
        let mut stats = serde_json::Map::new();
        for (name, value) in info_fields(&info) {
            if FIELDS.contains(&name) {
                stats.insert(name.to_owned(), json_number_or_text(value));
            }
        }
        let names = self.topics.names();
        if !names.is_empty() {
            let mut lengths = ::redis::pipe();
            for name in &names {
                lengths.cmd("XLEN").arg(&**name);
            }
            let values = self
                .control
                .raw_pipe(&lengths)
                .await
                .map_err(|f| f.into_error("broker stats: XLEN", &self.control.url))?;
            let streams: serde_json::Map<_, _> = names
                .iter()
                .zip(values)
                .filter_map(|(name, value)| match value {
                    Value::Int(n) => Some((name.to_string(), n.into())),
                    _ => None,
                })
                .collect();
            stats.insert("streams".to_owned(), streams.into());
        }
        Ok(stats.into())
    }
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend")
            .field("url", &self.target.shown)
            .field("server_version", &self.server_version)
            .field("prefix", &self.prefix)
            .field("ack_wait", &self.ack_wait)
            .finish_non_exhaustive()
    }
}

impl Backend for RedisBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Redis
    }

    fn url(&self) -> &str {
        &self.url
    }

    fn capabilities(&self) -> Capabilities {
        RedisBackend::capabilities()
    }

    fn prepare<'a>(&'a self, topology: &'a RunTopology) -> BoxFuture<'a, Result<(), AdapterError>> {
        Box::pin(self.prepare_topology(topology))
    }

    fn teardown(&self) -> BoxFuture<'_, Result<(), AdapterError>> {
        Box::pin(self.delete_streams())
    }

    fn producer(&self) -> BoxFuture<'_, Result<Producer, AdapterError>> {
        Box::pin(async move {
            let (stream, _) = link::open_stream(
                &self.target,
                &self.prefix,
                Role::Producer(self.next_number()),
                &self.options,
            )
            .await?;
            let publisher = RedisPublisher::start(
                stream,
                self.topics.clone(),
                self.options.publish_timeout,
                self.target.shown.clone(),
            );
            Ok(Producer::new(
                Arc::new(publisher),
                BackendKind::Redis,
                RedisBackend::capabilities(),
            ))
        })
    }

    fn subscribe(
        &self,
        spec: SubscriptionSpec,
    ) -> BoxFuture<'_, Result<Subscription, AdapterError>> {
        Box::pin(async move {
            RedisBackend::capabilities().require(
                BackendKind::Redis,
                spec.required_capabilities(),
                &format!("the subscription to {}", spec.topic),
            )?;
            subscriber::subscribe(self, spec).await
        })
    }

    fn server_version(&self) -> Option<String> {
        self.server_version.clone()
    }

    fn broker_stats(&self) -> BoxFuture<'_, Result<Option<serde_json::Value>, AdapterError>> {
        Box::pin(async move { self.stats().await.map(Some) })
    }
}

/// `name:value` lines of an `INFO` reply (sections and blank lines skipped).
fn info_fields(info: &str) -> impl Iterator<Item = (&str, &str)> {
    info.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.trim_end().split_once(':'))
}

/// `redis 7.0.15` (or `valkey 8.0.1`) from `INFO server`.
fn version_from_info(info: &str) -> Option<String> {
    let field = |wanted: &str| {
        info_fields(info)
            .find(|(name, _)| *name == wanted)
            .map(|(_, value)| value)
    };
    match field("server_name") {
        Some(name) if name != "redis" => {
            let version = field(&format!("{name}_version")).or_else(|| field("redis_version"))?;
            Some(format!("{name} {version}"))
        }
        _ => field("redis_version").map(|version| format!("redis {version}")),
    }
}

fn json_number_or_text(value: &str) -> serde_json::Value {
    if let Ok(n) = value.parse::<i64>() {
        n.into()
    } else if let Some(x) = value.parse::<f64>().ok().filter(|x| x.is_finite()) {
        x.into()
    } else {
        value.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_come_from_info() {
        let info = "# Server\r\nredis_version:7.0.15\r\nredis_mode:standalone\r\n";
        assert_eq!(version_from_info(info).as_deref(), Some("redis 7.0.15"));
        let info =
            "# Server\r\nredis_version:7.2.4\r\nserver_name:valkey\r\nvalkey_version:8.0.1\r\n";
        assert_eq!(version_from_info(info).as_deref(), Some("valkey 8.0.1"));
        assert_eq!(version_from_info("# Server\r\n"), None);
    }

    #[test]
    fn info_values_become_json() {
        assert_eq!(json_number_or_text("42"), serde_json::json!(42));
        assert_eq!(json_number_or_text("1.5"), serde_json::json!(1.5));
        assert_eq!(json_number_or_text("7.0.15"), serde_json::json!("7.0.15"));
    }

    #[test]
    fn capabilities_are_what_streams_guarantee() {
        let caps = RedisBackend::capabilities();
        for cap in [
            Capability::KeyOrdering,
            Capability::DeadLetter,
            Capability::Dedup,
        ] {
            assert!(!caps.contains(cap), "{cap}");
        }
        assert!(caps.contains(Capability::AckRedelivery));
        assert!(caps.contains(Capability::RetentionLimit));
    }
}
