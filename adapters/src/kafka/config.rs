//! The adapter's URL form and the librdkafka settings of its three kinds of client
//! (admin, producer, consumer), each with the reason it is set.
//!
//! ```text
//! kafka://host:port[,host:port...]     host:port[,host:port...]     (port defaults to 9092)
//! ```

use std::time::Duration;

use rdkafka::ClientConfig;

use crate::backend::ConnectOptions;
use crate::endpoint::{self, Endpoint};
use crate::error::{AdapterError, ErrorKind};
use crate::kind::BackendKind;

/// The URL form, for error messages.
pub(crate) const URL_FORM: &str = "kafka://host:port[,host:port...] or a bare host:port list";

/// The largest message the producer sends and the topics this adapter creates accept
/// (`message.max.bytes` of the producer, `max.message.bytes` of the topic). Kafka's own
/// default (1 MiB including the batch header) cannot carry a 1 MiB payload, which
/// brokerbench scenarios use.
pub(crate) const MAX_MESSAGE_BYTES: usize = 8 * 1024 * 1024;

/// `linger.ms` of the producer: how long librdkafka waits to fill a batch. Measured on
/// tansu with 200-byte messages (one producer, 20,000 in flight; a loaded 2-core
/// machine): 0 ms gave 120-160k msgs/s and a lone publish confirmed in 0.6-0.9 ms (p50),
/// 1 ms 170-300k msgs/s and 1.8 ms, 5 ms 150-200k msgs/s and 6 ms.
const LINGER_MS: &str = "1";

/// `fetch.wait.max.ms` of consumers: how long the broker may hold a fetch that found
/// nothing. Apache Kafka answers a waiting fetch as soon as data arrives, so this only
/// sets how often an idle consumer asks again. tansu 0.6 waits this long on every fetch,
/// data or not, which adds it to every delivery's latency (measured: 1 ms brings tansu's
/// end-to-end p50 from 13 ms to about 5 ms, at ten times the idle fetch rate).
const FETCH_WAIT_MAX_MS: &str = "10";

/// `heartbeat.interval.ms` of group members: a member learns of a rebalance (another
/// member joining or leaving) with its next heartbeat, so this bounds how long a joining
/// subscriber waits for the others.
const HEARTBEAT_INTERVAL_MS: &str = "500";

/// `session.timeout.ms`: a member that stops heartbeating (a crashed process) loses its
/// partitions after this long. Apache Kafka's lower bound
/// (`group.min.session.timeout.ms`) is 6 s.
const SESSION_TIMEOUT_MS: &str = "10000";

/// `auto.commit.interval.ms` for automatic acks: how often the positions of delivered
/// messages are committed (and always on a rebalance and on unsubscribe).
const AUTO_COMMIT_INTERVAL_MS: &str = "1000";

/// The bootstrap list (`bootstrap.servers`) and the endpoints of a Kafka URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KafkaUrl {
    pub(crate) endpoints: Vec<Endpoint>,
    pub(crate) bootstrap: String,
}

/// Parses `kafka://host:port[,host:port...]` or a bare `host:port` list.
///
/// # Errors
///
/// [`ErrorKind::InvalidUrl`] naming the URL, what is wrong and the expected form.
pub(crate) fn parse_url(url: &str) -> Result<KafkaUrl, AdapterError> {
    let invalid = |why: &str| {
        AdapterError::new(
            ErrorKind::InvalidUrl,
            format!("invalid kafka URL '{url}': {why} (expected {URL_FORM})"),
        )
    };
    let rest = match url.trim().split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("kafka") => rest,
        Some((scheme, _)) => return Err(invalid(&format!("unsupported scheme '{scheme}'"))),
        None => url.trim(),
    };
    if rest.contains('@') {
        return Err(invalid(
            "credentials are not supported (this adapter speaks PLAINTEXT only)",
        ));
    }
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    if !rest[authority_end..].trim_end_matches('/').is_empty() {
        return Err(invalid("a Kafka URL has no path or query"));
    }
    let endpoints =
        endpoint::parse_endpoints(BackendKind::Kafka, url).map_err(|why| invalid(&why))?;
    if let Some(zero) = endpoints.iter().find(|e| e.port == 0) {
        return Err(invalid(&format!("port 0 in '{}'", zero.host_port())));
    }
    let bootstrap = endpoints
        .iter()
        .map(Endpoint::host_port)
        .collect::<Vec<_>>()
        .join(",");
    Ok(KafkaUrl {
        endpoints,
        bootstrap,
    })
}

/// Milliseconds as librdkafka wants them, at least `min` (librdkafka's lower bound for
/// the property) and at most `i32::MAX`.
pub(crate) fn millis(d: Duration, min: u64) -> String {
    d.as_millis()
        .clamp(u128::from(min), i32::MAX as u128)
        .to_string()
}

/// Settings every client shares.
fn base(bootstrap: &str, options: &ConnectOptions) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("client.id", "brokerbench")
        // Topics are created explicitly, with the partition count and size limit this
        // adapter needs; a metadata request must never create one as a side effect
        // (Apache Kafka brokers auto-create by default when a producer asks).
        .set("allow.auto.create.topics", "false")
        // A dead broker is noticed within the connect timeout rather than 30 s.
        .set(
            "socket.connection.setup.timeout.ms",
            millis(options.connect_timeout, 1000),
        )
        // Broker disconnects are reported through errors the adapter handles; the
        // librdkafka log line for each would only be noise.
        .set("log.connection.close", "false");
    config
}

/// The admin client's settings (it also serves metadata requests).
pub(crate) fn admin(bootstrap: &str, options: &ConnectOptions) -> ClientConfig {
    base(bootstrap, options)
}

/// The producer's settings.
pub(crate) fn producer(bootstrap: &str, options: &ConnectOptions) -> ClientConfig {
    let mut config = base(bootstrap, options);
    config
        // Retries never duplicate or reorder a message, and acks=all: a confirmed
        // publish is on every in-sync replica.
        .set("enable.idempotence", "true")
        .set("acks", "all")
        // librdkafka gives up on a message after this long and reports it timed out,
        // which resolves the publish as Unknown: the same deadline as the adapter's own.
        .set("message.timeout.ms", millis(options.publish_timeout, 10))
        .set("linger.ms", LINGER_MS)
        .set("message.max.bytes", MAX_MESSAGE_BYTES.to_string())
        // The key hashes like the Java client's (murmur2), so a key lands on the same
        // partition whichever client published it; keyless messages go to a partition
        // picked at random and kept for a short while (sticky partitioning).
        .set("partitioner", "murmur2_random");
    config
}

/// A consumer's settings. `group` is the Kafka group id (a private one for fan-out
/// subscriptions, which never join it: they assign partitions themselves and only need
/// the id because librdkafka requires one for `assign`).
pub(crate) fn consumer(
    bootstrap: &str,
    options: &ConnectOptions,
    group: &str,
    auto_commit: bool,
) -> ClientConfig {
    let mut config = base(bootstrap, options);
    config
        .set("group.id", group)
        .set(
            "enable.auto.commit",
            if auto_commit { "true" } else { "false" },
        )
        .set("auto.commit.interval.ms", AUTO_COMMIT_INTERVAL_MS)
        // Offsets are stored by the adapter for the messages it handed over, never by
        // librdkafka for messages merely returned by poll (those may be dropped on
        // close and must then go to another member).
        .set("enable.auto.offset.store", "false")
        // Start positions are always set explicitly; this only applies when a stored
        // position no longer exists (retention removed it): then read what is left
        // rather than skip to the end.
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", FETCH_WAIT_MAX_MS)
        .set("fetch.min.bytes", "1")
        .set("heartbeat.interval.ms", HEARTBEAT_INTERVAL_MS)
        .set("session.timeout.ms", SESSION_TIMEOUT_MS)
        .set("enable.partition.eof", "false");
    config
}
