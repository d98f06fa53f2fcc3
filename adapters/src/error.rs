//! The one error type of the crate: [`AdapterError`], with an [`ErrorKind`] to match on.

use std::fmt;
use std::time::Duration;

/// What went wrong, in a form a caller can match on.
///
/// The message of the [`AdapterError`] carrying it says the rest (which URL, which
/// address, which topic, what the broker answered).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The broker could not be reached: name resolution failed or every address refused
    /// or did not answer within the connect timeout.
    Connect,
    /// A request was sent but the broker did not confirm it within the request timeout.
    Timeout,
    /// The broker sent something this client cannot understand.
    Protocol,
    /// The broker understood the request and refused it (the reason is in the message).
    Rejected,
    /// The backend cannot do what was asked (a missing capability, or an adapter that is
    /// not built yet).
    Unsupported,
    /// The connection is closed (by the broker, by the network, or by this client).
    Closed,
    /// The broker disconnected this subscriber because it did not read fast enough.
    SlowConsumer,
    /// A URL that does not name a broker endpoint of the expected form.
    InvalidUrl,
    /// An argument the caller passed is not valid (an unknown backend name, a topic
    /// subscribed twice on one connection, ...).
    InvalidInput,
}

impl ErrorKind {
    /// A short lowercase name, the same as the `Display` text.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Connect => "connect",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Protocol => "protocol",
            ErrorKind::Rejected => "rejected",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Closed => "closed",
            ErrorKind::SlowConsumer => "slow consumer",
            ErrorKind::InvalidUrl => "invalid url",
            ErrorKind::InvalidInput => "invalid input",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error from a backend adapter.
///
/// The message is complete on its own (it already contains the underlying OS or broker
/// error text), so it has no separate `source()`: printing it with `{:#}` through
/// `anyhow` does not repeat anything. It is `Clone` because one connection failure is
/// reported to every subscription and request that shared the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct AdapterError {
    kind: ErrorKind,
    message: String,
}

impl AdapterError {
    /// An error of `kind` with a complete, human-readable `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        AdapterError {
            kind,
            message: message.into(),
        }
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message, without the kind.
    pub fn message(&self) -> &str {
        &self.message
    }

    pub(crate) fn connect(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Connect, message)
    }

    pub(crate) fn timeout(what: &str, after: Duration) -> Self {
        Self::new(
            ErrorKind::Timeout,
            format!(
                "{what}: no answer from the broker within {}",
                fmt_duration(after)
            ),
        )
    }

    pub(crate) fn protocol(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Protocol, message)
    }

    pub(crate) fn rejected(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Rejected, message)
    }

    pub(crate) fn unsupported(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unsupported, message)
    }

    pub(crate) fn closed(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Closed, message)
    }

    pub(crate) fn invalid_input(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidInput, message)
    }
}

/// Formats a duration the way people write timeouts: `5s`, `250ms`, `1.5s`.
pub(crate) fn fmt_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms >= 1000 && ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else if ms >= 1000 {
        format!("{:.1}s", d.as_secs_f64())
    } else if ms > 0 {
        format!("{ms}ms")
    } else {
        format!("{}µs", d.as_micros())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_the_message() {
        let e = AdapterError::rejected("subscribe to t: Malformed json message");
        assert_eq!(e.to_string(), "subscribe to t: Malformed json message");
        assert_eq!(e.kind(), ErrorKind::Rejected);
        assert_eq!(e.kind().to_string(), "rejected");
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(fmt_duration(Duration::from_secs(5)), "5s");
        assert_eq!(fmt_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(fmt_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(fmt_duration(Duration::from_micros(20)), "20µs");
    }

    #[test]
    fn timeout_message_names_what_and_how_long() {
        let e = AdapterError::timeout("subscribe to orders", Duration::from_secs(10));
        assert_eq!(e.kind(), ErrorKind::Timeout);
        assert_eq!(
            e.to_string(),
            "subscribe to orders: no answer from the broker within 10s"
        );
    }
}
