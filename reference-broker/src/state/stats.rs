//! The broker's counters as the `stats` extension reports them.

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
