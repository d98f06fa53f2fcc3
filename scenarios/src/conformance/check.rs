//! The catalogue of checks: names, what each one proves, and what a backend needs to run it.

use std::fmt;
use std::str::FromStr;

use brokerbench_adapters::{Capabilities, Capability};

/// One conformance check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Check {
    /// N subscribers, M messages to `all`: every subscriber gets every confirmed message.
    Fanout,
    /// K consumers share `one`: each confirmed message reaches exactly one of them.
    Compete,
    /// K consumers, several keys: per key, first deliveries in publish order.
    KeyOrder,
    /// One producer, one consumer: delivery order is confirm order.
    TotalOrder,
    /// Publish M, then subscribe from the beginning and after a sequence: the retained
    /// messages, in order, none missing.
    LateReplay,
    /// Subscribe for new messages only: nothing published before, everything after.
    LiveOnly,
    /// After the unsubscribe is confirmed plus a grace period: no more deliveries to it,
    /// the others unaffected.
    Unsubscribe,
    /// A consumer takes messages and disconnects without acking: another consumer gets
    /// them, marked redelivered where the broker says so.
    AckRedelivery,
    /// An explicit nack: redelivered promptly, the attempt count growing where exposed.
    NackRequeue,
    /// A message always nacked lands once in the dead-letter destination, intact.
    DeadLetter,
    /// The same id published twice inside the window: stored and delivered once.
    Dedup,
    /// One subscriber reads far slower than the publish rate: no silent loss, the others
    /// keep their rate and latency.
    SlowConsumer,
    /// Publish past the retention limit, then a late reader: exactly the retained tail;
    /// the rest is trimmed, not lost.
    RetentionTrim,
    /// Payloads from 1 byte to 1 MiB: delivered intact or refused with a clear broker
    /// error, never truncated or corrupted.
    LargeMessage,
    /// The client connection is cut mid-stream: the client reconnects, confirmed messages
    /// are not lost, duplicates are counted.
    Reconnect,
}

impl Check {
    /// Every check, in the order the matrix lists them.
    pub const ALL: [Check; 15] = [
        Check::Fanout,
        Check::Compete,
        Check::KeyOrder,
        Check::TotalOrder,
        Check::LateReplay,
        Check::LiveOnly,
        Check::Unsubscribe,
        Check::AckRedelivery,
        Check::NackRequeue,
        Check::DeadLetter,
        Check::Dedup,
        Check::SlowConsumer,
        Check::RetentionTrim,
        Check::LargeMessage,
        Check::Reconnect,
    ];

    /// The name on the command line and in reports (`key-order`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Check::Fanout => "fanout",
            Check::Compete => "compete",
            Check::KeyOrder => "key-order",
            Check::TotalOrder => "total-order",
            Check::LateReplay => "late-replay",
            Check::LiveOnly => "live-only",
            Check::Unsubscribe => "unsubscribe",
            Check::AckRedelivery => "ack-redelivery",
            Check::NackRequeue => "nack-requeue",
            Check::DeadLetter => "dead-letter",
            Check::Dedup => "dedup",
            Check::SlowConsumer => "slow-consumer",
            Check::RetentionTrim => "retention-trim",
            Check::LargeMessage => "large-message",
            Check::Reconnect => "reconnect",
        }
    }

    /// One line: what the check does and its pass criterion.
    pub fn describe(self) -> &'static str {
        match self {
            Check::Fanout => {
                "N subscribers, M messages to `all`: every subscriber gets every confirmed message, none twice, nothing foreign"
            }
            Check::Compete => {
                "K consumers in one group, M messages to `one`: each confirmed message reaches exactly one consumer"
            }
            Check::KeyOrder => {
                "K consumers in one group, several keys: per key, first deliveries in publish order"
            }
            Check::TotalOrder => {
                "one producer, one consumer, pipelined publishes: delivery order = confirm order"
            }
            Check::LateReplay => {
                "publish M, then subscribe from the beginning and after a sequence: the retained messages in order, none missing, then live ones"
            }
            Check::LiveOnly => {
                "subscribe for new messages only: nothing published before, everything after"
            }
            Check::Unsubscribe => {
                "after the unsubscribe is confirmed plus a grace period: no more deliveries to it, the others get everything"
            }
            Check::AckRedelivery => {
                "a consumer takes messages and disconnects without acking: another consumer gets them, marked redelivered where the broker says so"
            }
            Check::NackRequeue => {
                "explicit nacks: the message comes back promptly each time, its attempt count growing where exposed"
            }
            Check::DeadLetter => {
                "a message always nacked lands once in the dead-letter destination, payload intact, and stops coming back"
            }
            Check::Dedup => "every id published twice inside the window: stored and delivered once",
            Check::SlowConsumer => {
                "one subscriber reads far slower than the publish rate: every loss signalled by the broker, the others keep up"
            }
            Check::RetentionTrim => {
                "publish past the retention limit, then a late reader: exactly the retained tail, the rest trimmed"
            }
            Check::LargeMessage => {
                "payloads from 1 byte to 1 MiB: delivered intact or refused with a clear error, never truncated or corrupted"
            }
            Check::Reconnect => {
                "the client connections are cut mid-stream: the client reconnects, no confirmed message is lost, duplicates counted"
            }
        }
    }

    /// What a backend must offer to run the check at all. `retention-trim` also needs a
    /// late reader (replay, or a consumer group whose queue retains), which the check
    /// itself verifies.
    pub fn required_capabilities(self) -> Capabilities {
        use Capability::*;
        Capabilities::of(match self {
            Check::Fanout
            | Check::TotalOrder
            | Check::SlowConsumer
            | Check::LargeMessage
            | Check::Reconnect => &[FanOut],
            Check::Compete => &[Competing],
            Check::KeyOrder => &[Competing, KeyOrdering],
            Check::LateReplay => &[FanOut, Replay],
            Check::LiveOnly | Check::Unsubscribe => &[FanOut, LiveOnly],
            Check::AckRedelivery => &[Competing, AckRedelivery],
            Check::NackRequeue => &[Competing, AckRedelivery, Nack],
            Check::DeadLetter => &[Competing, AckRedelivery, Nack, DeadLetter],
            Check::Dedup => &[FanOut, Dedup],
            Check::RetentionTrim => &[RetentionLimit],
        })
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Check {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim();
        Check::ALL
            .into_iter()
            .find(|c| c.as_str().eq_ignore_ascii_case(wanted))
            .ok_or_else(|| {
                let names: Vec<&str> = Check::ALL.iter().map(|c| c.as_str()).collect();
                format!(
                    "unknown check '{wanted}' (expected one of: {})",
                    names.join(", ")
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_unique() {
        let mut seen = std::collections::BTreeSet::new();
        for check in Check::ALL {
            assert_eq!(check.as_str().parse::<Check>().unwrap(), check);
            assert!(seen.insert(check.as_str()));
            assert!(!check.describe().is_empty());
            assert!(!check.required_capabilities().is_empty());
        }
        let err = "jepsen".parse::<Check>().unwrap_err();
        assert!(err.starts_with("unknown check 'jepsen' (expected one of: fanout, compete"));
    }
}
