//! From lapin's errors to [`AdapterError`]s that say what was being done, where, and
//! what the broker answered.

use std::future::Future;
use std::time::Duration;

use lapin::protocol::{AMQPErrorKind, AMQPHardError, AMQPSoftError};
use tokio::time::Instant;

use super::address::Target;
use crate::error::{AdapterError, ErrorKind};
use crate::net;

/// The kind and a readable text for a lapin error. Broker refusals keep the broker's own
/// words (`NOT_FOUND - no exchange 'x' in vhost '/'`).
pub(super) fn describe(error: &lapin::Error) -> (ErrorKind, String) {
    match error.kind() {
        lapin::ErrorKind::ProtocolError(amqp) => {
            let kind = match amqp.kind() {
                AMQPErrorKind::Soft(
                    AMQPSoftError::ACCESSREFUSED
                    | AMQPSoftError::NOTFOUND
                    | AMQPSoftError::RESOURCELOCKED
                    | AMQPSoftError::PRECONDITIONFAILED
                    | AMQPSoftError::CONTENTTOOLARGE
                    | AMQPSoftError::NOROUTE
                    | AMQPSoftError::NOCONSUMERS,
                ) => ErrorKind::Rejected,
                AMQPErrorKind::Hard(AMQPHardError::NOTALLOWED | AMQPHardError::RESOURCEERROR) => {
                    ErrorKind::Rejected
                }
                AMQPErrorKind::Hard(AMQPHardError::CONNECTIONFORCED) => ErrorKind::Closed,
                AMQPErrorKind::Hard(_) => ErrorKind::Protocol,
            };
            (kind, amqp.get_message().as_str().to_owned())
        }
        lapin::ErrorKind::IOError(io) => (ErrorKind::Closed, net::os_error(io)),
        lapin::ErrorKind::InvalidChannelState(state, _) => (
            ErrorKind::Closed,
            format!("the channel is {}", format!("{state:?}").to_lowercase()),
        ),
        lapin::ErrorKind::InvalidConnectionState(state) => (
            ErrorKind::Closed,
            format!("the connection is {}", format!("{state:?}").to_lowercase()),
        ),
        lapin::ErrorKind::MissingHeartbeatError => (
            ErrorKind::Closed,
            "the broker stopped sending heartbeats".to_owned(),
        ),
        lapin::ErrorKind::ChannelsLimitReached => (
            ErrorKind::Rejected,
            "the connection has no channel left (channel_max reached)".to_owned(),
        ),
        _ => (ErrorKind::Protocol, error.to_string()),
    }
}

/// `what: <lapin error described>`, of the matching kind.
pub(super) fn failed(what: &str, error: &lapin::Error) -> AdapterError {
    let (kind, text) = describe(error);
    AdapterError::new(kind, format!("{what}: {text}"))
}

/// Whether `error` means the request never left this process (the channel or connection
/// was already closed), as opposed to being lost after it was written.
pub(super) fn not_sent(error: &lapin::Error) -> bool {
    matches!(
        error.kind(),
        lapin::ErrorKind::InvalidChannelState(..) | lapin::ErrorKind::InvalidConnectionState(_)
    )
}

/// The error for a connection attempt that lapin refused or could not make.
pub(super) fn connect_failed(target: &Target, error: &lapin::Error) -> AdapterError {
    let url = &target.display;
    if let lapin::ErrorKind::ProtocolError(amqp) = error.kind() {
        let said = amqp.get_message().as_str();
        match amqp.kind() {
            AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED) => {
                return AdapterError::rejected(format!(
                    "rabbitmq at {url} refused the login for user '{}' ({said})",
                    target.user()
                ));
            }
            AMQPErrorKind::Hard(AMQPHardError::NOTALLOWED) => {
                return AdapterError::rejected(format!(
                    "rabbitmq at {url} refused access to virtual host '{}' for user '{}' ({said}); check that the vhost exists and the user has permissions on it",
                    target.vhost(),
                    target.user()
                ));
            }
            _ => {}
        }
    }
    let (kind, text) = describe(error);
    let kind = match kind {
        ErrorKind::Closed => ErrorKind::Connect,
        other => other,
    };
    AdapterError::new(
        kind,
        format!(
            "cannot connect to rabbitmq at {url} (tried {}: {text})",
            target.host_port
        ),
    )
}

/// One deadline shared by the steps of a request (a subscribe's channel, declarations,
/// qos and consume; a teardown's deletions), so the whole request is bounded by one
/// timeout and each failure names its step.
#[derive(Debug, Clone, Copy)]
pub(super) struct Deadline {
    at: Instant,
    budget: Duration,
}

impl Deadline {
    /// A deadline `budget` from now.
    pub(super) fn after(budget: Duration) -> Deadline {
        Deadline {
            at: Instant::now() + budget,
            budget,
        }
    }

    /// The instant it expires.
    pub(super) fn at(&self) -> Instant {
        self.at
    }

    /// Runs one broker request; `what` describes it for the error (called only on error).
    pub(super) async fn run<T>(
        &self,
        what: impl FnOnce() -> String,
        request: impl Future<Output = lapin::Result<T>>,
    ) -> Result<T, AdapterError> {
        match tokio::time::timeout_at(self.at, request).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(failed(&what(), &error)),
            Err(_) => Err(AdapterError::timeout(&what(), self.budget)),
        }
    }
}
