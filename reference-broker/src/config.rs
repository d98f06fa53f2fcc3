//! Server settings, with the defaults of PROTOCOL.md.

use std::time::Duration;

/// Settings of a reference broker. `Config::default()` gives the protocol's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Messages kept per topic for replay on subscribe (C in the protocol); 0 keeps none.
    pub cache_size: usize,
    /// Open connections allowed at once; a connection over it is closed as soon as it is
    /// accepted, so the others are not slowed down.
    pub max_connections: usize,
    /// Longest line accepted, in bytes, not counting `\n`. Longer lines are discarded as
    /// they arrive (never buffered) and answered `Line too long`.
    pub max_line_bytes: usize,
    /// Bytes of output that may wait for one connection. A subscriber that lets more pile
    /// up is a slow consumer: it is told so and disconnected, which bounds memory.
    pub outbound_queue_bytes: usize,
    /// The `ack` extension: how long a pushed message may stay unacknowledged before it is
    /// redelivered.
    pub ack_timeout: Duration,
    /// The `ack` extension: deliveries of one message before it is dead-lettered.
    pub max_attempts: u32,
    /// The `id` extension: how long a message id is remembered per topic.
    pub dedup_window: Duration,
    /// The `id` extension: most ids remembered per topic (the oldest are forgotten first).
    pub dedup_max_ids: usize,
    /// On shutdown, how long connections get to flush their queued output.
    pub shutdown_grace: Duration,
}

/// Default cache capacity per topic.
pub const DEFAULT_CACHE_SIZE: usize = 100;
/// Default maximum line length: 1 MiB.
pub const DEFAULT_MAX_LINE_BYTES: usize = 1024 * 1024;
/// Default connection limit.
pub const DEFAULT_MAX_CONNECTIONS: usize = 100_000;
/// Default output queue per connection: 8 MiB, enough for several seconds of a fast
/// reader's backlog, small enough that thousands of stuck readers cannot exhaust memory.
pub const DEFAULT_OUTBOUND_QUEUE_BYTES: usize = 8 * 1024 * 1024;

impl Default for Config {
    fn default() -> Self {
        Self {
            cache_size: DEFAULT_CACHE_SIZE,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            outbound_queue_bytes: DEFAULT_OUTBOUND_QUEUE_BYTES,
            ack_timeout: Duration::from_secs(30),
            max_attempts: 5,
            dedup_window: Duration::from_secs(120),
            dedup_max_ids: 100_000,
            shutdown_grace: Duration::from_secs(5),
        }
    }
}
