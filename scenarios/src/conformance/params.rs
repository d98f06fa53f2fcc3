//! The checks' parameters: counts, sizes, rates, timeouts and grace periods, with defaults
//! that finish the whole suite in a few minutes on a 2-core machine.

use std::time::Duration;

use serde::Serialize;

/// Every knob of the checks. [`Params::default`] is what `brokerbench conform` uses
/// unless a flag says otherwise; each flag's help repeats the default.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Params {
    /// Messages per batch in fanout, compete, live-only and unsubscribe.
    pub messages: u32,
    /// Subscribers in fanout, unsubscribe and slow-consumer (the slow one included).
    pub subscribers: u32,
    /// Consumers sharing a group in compete and key-order.
    pub consumers: u32,
    /// Distinct keys in key-order.
    pub keys: u32,
    /// Messages in key-order and total-order.
    pub order_messages: u32,
    /// Payload size of the ordinary checks' messages, bytes.
    pub size: usize,
    /// Publishes in flight at once per producer.
    pub window: usize,
    /// How long a check waits for deliveries that are due.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Once everything due has arrived, how long a check keeps listening for extra
    /// (duplicate, late, foreign) deliveries.
    #[serde(with = "humantime_serde")]
    pub settle: Duration,
    /// After an unsubscribe is confirmed, how long before deliveries to it count as late.
    #[serde(with = "humantime_serde")]
    pub grace: Duration,
    /// Messages published before the late subscribers join in late-replay (must fit the
    /// retention of the broker).
    pub replay_messages: u32,
    /// How long ack-redelivery and dead-letter wait for a broker to redeliver (covers ack
    /// timeouts such as JetStream's and Redis's 5 s, or a Kafka rebalance).
    #[serde(with = "humantime_serde")]
    pub redelivery_timeout: Duration,
    /// How soon a nacked message must come back in nack-requeue to count as prompt.
    #[serde(with = "humantime_serde")]
    pub nack_within: Duration,
    /// Nacks before the message is finally acked in nack-requeue.
    pub nack_attempts: u32,
    /// Deliveries of an always-nacked message before the broker must dead-letter it, in
    /// dead-letter: the reference broker's `--max-attempts` (the embedded one is started
    /// with it), the RabbitMQ adapter's delivery limit (5).
    pub dead_letter_attempts: u32,
    /// Ids published twice each in dedup.
    pub dedup_ids: u32,
    /// The retention limit, in messages, that retention-trim configures (the reference
    /// broker's cache size; an external reference broker must run with this
    /// `--cache-size`).
    pub retention: u64,
    /// Messages retention-trim publishes beyond the limit.
    pub retention_excess: u64,
    /// Messages published in slow-consumer.
    pub slow_messages: u32,
    /// Payload size in slow-consumer, bytes.
    pub slow_size: usize,
    /// Publish rate in slow-consumer, messages per second.
    pub slow_rate: f64,
    /// How fast the slow subscriber reads while the others keep up, messages per second.
    pub slow_read_rate: f64,
    /// The p99 delivery latency the other subscribers must stay under in slow-consumer.
    #[serde(with = "humantime_serde")]
    pub slow_max_latency: Duration,
    /// Payload sizes tried in large-message, bytes.
    pub large_sizes: Vec<usize>,
    /// Messages published in reconnect (the publisher's connections are cut a third of
    /// the way, the subscriber's two thirds of the way).
    pub reconnect_messages: u32,
    /// Publish rate in reconnect, messages per second.
    pub reconnect_rate: f64,
    /// How long the subscriber's path stays down after its cut in reconnect, while the
    /// publisher goes on. What is published meanwhile must fit what the broker keeps for
    /// an absent consumer (the reference broker's cache: 100 messages).
    #[serde(with = "humantime_serde")]
    pub reconnect_outage: Duration,
    /// How long reconnect keeps trying to reconnect and to get every confirmed message.
    #[serde(with = "humantime_serde")]
    pub reconnect_timeout: Duration,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            messages: 200,
            subscribers: 3,
            consumers: 3,
            keys: 8,
            order_messages: 1000,
            size: 256,
            window: 64,
            timeout: Duration::from_secs(20),
            settle: Duration::from_millis(300),
            grace: Duration::from_millis(500),
            replay_messages: 50,
            redelivery_timeout: Duration::from_secs(30),
            nack_within: Duration::from_secs(2),
            nack_attempts: 3,
            dead_letter_attempts: 5,
            dedup_ids: 50,
            retention: 100,
            retention_excess: 50,
            slow_messages: 2000,
            slow_size: 8 * 1024,
            slow_rate: 1000.0,
            slow_read_rate: 20.0,
            slow_max_latency: Duration::from_secs(1),
            large_sizes: vec![1, 1024, 64 * 1024, 512 * 1024, 1024 * 1024],
            reconnect_messages: 600,
            reconnect_rate: 200.0,
            reconnect_outage: Duration::from_millis(300),
            reconnect_timeout: Duration::from_secs(30),
        }
    }
}

impl Params {
    /// The parameters as JSON, for the report.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

/// Durations as humantime text (`20s`, `300ms`) in the report.
mod humantime_serde {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialises_durations_as_text() {
        let json = Params::default().to_json();
        assert_eq!(json["timeout"], "20s");
        assert_eq!(json["settle"], "300ms");
        assert_eq!(json["messages"], 200);
        assert_eq!(json["large_sizes"][4], 1_048_576);
    }
}
