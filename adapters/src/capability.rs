//! What a backend can do: [`Capability`] and the set [`Capabilities`].
//!
//! A scenario that needs something a broker cannot do must fail before the run with a
//! message naming what is missing, never measure nonsense. [`Capabilities::require`]
//! produces that message.

use std::fmt;

use crate::error::AdapterError;
use crate::kind::BackendKind;

/// One delivery semantic a backend may or may not provide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Capability {
    /// Every subscriber of a topic gets every message (`delivery = all`).
    FanOut,
    /// Each message goes to exactly one of the subscribers sharing it (a consumer group,
    /// a queue group, `delivery = one`).
    Competing,
    /// Under competing consumers, messages with the same key go to the same consumer,
    /// so they stay in order.
    KeyOrdering,
    /// A subscriber that joins late can read retained messages: from the beginning, or
    /// after a given sequence.
    Replay,
    /// A subscriber can ask to see only messages published after it joined.
    LiveOnly,
    /// Manual acknowledgement; an unacknowledged message is delivered again (after a
    /// timeout, or when its consumer leaves), marked as redelivered.
    AckRedelivery,
    /// A consumer can reject a message and ask for it to be delivered again now.
    Nack,
    /// A message that keeps failing goes to a dead-letter destination.
    DeadLetter,
    /// Publishing the same message id twice inside a window delivers it once.
    Dedup,
    /// The broker drops old retained messages beyond a limit (count or age), which the
    /// conformance suite reports as "trimmed", not "lost".
    RetentionLimit,
}

impl Capability {
    /// Every capability, in declaration order.
    pub const ALL: [Capability; 10] = [
        Capability::FanOut,
        Capability::Competing,
        Capability::KeyOrdering,
        Capability::Replay,
        Capability::LiveOnly,
        Capability::AckRedelivery,
        Capability::Nack,
        Capability::DeadLetter,
        Capability::Dedup,
        Capability::RetentionLimit,
    ];

    /// The name used in messages and reports (`fan-out`, `competing consumers`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Capability::FanOut => "fan-out",
            Capability::Competing => "competing consumers",
            Capability::KeyOrdering => "key ordering",
            Capability::Replay => "replay",
            Capability::LiveOnly => "live-only subscriptions",
            Capability::AckRedelivery => "ack and redelivery",
            Capability::Nack => "nack",
            Capability::DeadLetter => "dead letter",
            Capability::Dedup => "dedup",
            Capability::RetentionLimit => "retention limit",
        }
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of [`Capability`] values.
///
/// `Display` lists the names separated by `, ` (or `none`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Capabilities(u16);

impl Capabilities {
    /// The empty set.
    pub const NONE: Capabilities = Capabilities(0);

    /// The set of every capability.
    pub fn all() -> Self {
        Self::from_iter(Capability::ALL)
    }

    /// The set holding exactly `caps`.
    pub fn of(caps: &[Capability]) -> Self {
        caps.iter().copied().collect()
    }

    /// This set plus `cap`.
    #[must_use]
    pub fn with(self, cap: Capability) -> Self {
        Capabilities(self.0 | cap.bit())
    }

    /// Adds `cap` in place.
    pub fn insert(&mut self, cap: Capability) {
        self.0 |= cap.bit();
    }

    /// Whether `cap` is in the set.
    pub fn contains(self, cap: Capability) -> bool {
        self.0 & cap.bit() != 0
    }

    /// Whether every capability of `other` is in this set.
    pub fn contains_all(self, other: Capabilities) -> bool {
        self.0 & other.0 == other.0
    }

    /// The capabilities of `needed` that this set lacks.
    pub fn missing(self, needed: Capabilities) -> Capabilities {
        Capabilities(needed.0 & !self.0)
    }

    /// The union of two sets.
    #[must_use]
    pub fn union(self, other: Capabilities) -> Capabilities {
        Capabilities(self.0 | other.0)
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The capabilities in the set, in declaration order.
    pub fn iter(self) -> impl Iterator<Item = Capability> {
        Capability::ALL
            .into_iter()
            .filter(move |c| self.contains(*c))
    }

    /// `Ok` when the set has everything in `needed`; otherwise an
    /// [`ErrorKind::Unsupported`](crate::ErrorKind::Unsupported) error naming the backend,
    /// what is missing and what `purpose` needed it, e.g. `the nats backend does not
    /// support replay, ack and redelivery (needed by subscription to orders)`.
    ///
    /// # Errors
    ///
    /// The error described above when a capability is missing.
    pub fn require(
        self,
        backend: BackendKind,
        needed: Capabilities,
        purpose: &str,
    ) -> Result<(), AdapterError> {
        let missing = self.missing(needed);
        if missing.is_empty() {
            Ok(())
        } else {
            Err(AdapterError::unsupported(format!(
                "the {backend} backend does not support {missing} (needed by {purpose})"
            )))
        }
    }
}

impl FromIterator<Capability> for Capabilities {
    fn from_iter<I: IntoIterator<Item = Capability>>(iter: I) -> Self {
        let mut set = Capabilities::NONE;
        for cap in iter {
            set.insert(cap);
        }
        set
    }
}

impl From<Capability> for Capabilities {
    fn from(cap: Capability) -> Self {
        Capabilities(cap.bit())
    }
}

impl fmt::Display for Capabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("none");
        }
        for (i, cap) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(cap.name())?;
        }
        Ok(())
    }
}

impl fmt::Debug for Capabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn set_operations() {
        let set = Capabilities::of(&[Capability::FanOut, Capability::Competing]);
        assert!(set.contains(Capability::FanOut));
        assert!(!set.contains(Capability::Replay));
        assert!(Capabilities::all().contains_all(set));
        assert!(!set.contains_all(Capabilities::all()));
        assert_eq!(
            set.missing(Capabilities::of(&[Capability::FanOut, Capability::Dedup])),
            Capabilities::from(Capability::Dedup)
        );
        assert_eq!(Capabilities::all().iter().count(), Capability::ALL.len());
        assert!(Capabilities::NONE.is_empty());
        assert_eq!(
            Capabilities::NONE
                .with(Capability::Nack)
                .union(Capability::Dedup.into()),
            Capabilities::of(&[Capability::Dedup, Capability::Nack])
        );
    }

    #[test]
    fn display_lists_names_in_order() {
        let set = Capabilities::of(&[Capability::Dedup, Capability::FanOut]);
        assert_eq!(set.to_string(), "fan-out, dedup");
        assert_eq!(Capabilities::NONE.to_string(), "none");
        assert_eq!(format!("{set:?}"), "{FanOut, Dedup}");
    }

    #[test]
    fn require_names_backend_missing_and_purpose() {
        let nats = Capabilities::of(&[Capability::FanOut, Capability::Competing]);
        let needed = Capabilities::of(&[
            Capability::FanOut,
            Capability::Replay,
            Capability::AckRedelivery,
        ]);
        assert!(
            nats.require(BackendKind::Nats, Capability::FanOut.into(), "x")
                .is_ok()
        );
        let err = nats
            .require(BackendKind::Nats, needed, "subscription to orders")
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unsupported);
        assert_eq!(
            err.to_string(),
            "the nats backend does not support replay, ack and redelivery (needed by subscription to orders)"
        );
    }
}
