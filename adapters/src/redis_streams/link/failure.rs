//! One request with a timeout, and why a request got no usable answer.

use std::time::Duration;

use ::redis::aio::MultiplexedConnection;
use ::redis::{Cmd, Pipeline, RedisError, ServerError, Value};

use crate::error::AdapterError;
use crate::net;

/// Why a request got no usable answer.
#[derive(Debug, Clone)]
pub(in crate::redis_streams) enum Failure {
    /// The server answered with an error.
    Server {
        /// The error code (`ERR`, `NOGROUP`, `BUSYGROUP`, `WRONGTYPE`, ...).
        code: String,
        /// Code and message, as `redis-cli` shows them.
        text: String,
    },
    /// The connection failed or closed before the answer.
    Lost(String),
    /// No answer within this long.
    Timeout(Duration),
    /// The request was not sent: the control connection was lost, and dialling a new one
    /// failed with this error.
    Unreachable(AdapterError),
}

impl Failure {
    fn from_redis(e: &RedisError) -> Failure {
        match e.kind() {
            ::redis::ErrorKind::Server(_) | ::redis::ErrorKind::Extension => Failure::Server {
                code: e.code().unwrap_or("ERR").to_owned(),
                text: describe(e),
            },
            _ => Failure::Lost(describe(e)),
        }
    }

    /// An error reply.
    pub(in crate::redis_streams) fn from_server(e: &ServerError) -> Failure {
        Failure::Server {
            code: e.code().to_owned(),
            text: server_text(e),
        }
    }

    /// Whether the server answered with error `code`.
    pub(in crate::redis_streams) fn is_code(&self, wanted: &str) -> bool {
        matches!(self, Failure::Server { code, .. } if code == wanted)
    }

    /// Whether the server said the key or group does not exist (so there is nothing
    /// left to remove).
    pub(in crate::redis_streams) fn is_gone(&self) -> bool {
        match self {
            Failure::Server { code, text } => {
                code == "NOGROUP" || text.contains("requires the key to exist")
            }
            _ => false,
        }
    }

    /// An error saying `what` failed against the server at `url`.
    pub(in crate::redis_streams) fn into_error(self, what: &str, url: &str) -> AdapterError {
        match self {
            Failure::Server { text, .. } => {
                AdapterError::rejected(format!("{what}: redis at {url} answered {text}"))
            }
            Failure::Lost(text) => AdapterError::closed(format!(
                "{what}: the connection to redis at {url} failed: {text}"
            )),
            Failure::Timeout(after) => {
                AdapterError::timeout(&format!("{what} (redis at {url})"), after)
            }
            Failure::Unreachable(error) => {
                AdapterError::new(error.kind(), format!("{what}: {}", error.message()))
            }
        }
    }
}

/// Sends one command on `con` and waits for its answer within `timeout`. An error reply
/// becomes [`Failure::Server`].
pub(in crate::redis_streams) async fn request(
    con: &mut MultiplexedConnection,
    cmd: &Cmd,
    timeout: Duration,
) -> Result<Value, Failure> {
    match tokio::time::timeout(timeout, con.send_packed_command(cmd)).await {
        Ok(Ok(Value::ServerError(e))) => Err(Failure::from_server(&e)),
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(Failure::from_redis(&e)),
        Err(_) => Err(Failure::Timeout(timeout)),
    }
}

/// Sends a pipeline on `con` and waits for every answer within `timeout`. Error replies
/// stay in the returned values as `Value::ServerError`.
pub(in crate::redis_streams) async fn request_pipe(
    con: &mut MultiplexedConnection,
    pipe: &Pipeline,
    timeout: Duration,
) -> Result<Vec<Value>, Failure> {
    match tokio::time::timeout(timeout, con.send_packed_commands(pipe, 0, pipe.len())).await {
        Ok(Ok(values)) => Ok(values),
        Ok(Err(e)) => Err(Failure::from_redis(&e)),
        Err(_) => Err(Failure::Timeout(timeout)),
    }
}

/// A server error as `redis-cli` shows it: `WRONGPASS invalid username-password pair`.
pub(in crate::redis_streams) fn server_text(e: &ServerError) -> String {
    match e.details() {
        Some(details) => format!("{} {details}", e.code()),
        None => e.code().to_owned(),
    }
}

/// A crate error as a short phrase: the server's code and message, or the I/O error as
/// the other adapters word it (`connection reset by peer`).
pub(in crate::redis_streams) fn describe(e: &RedisError) -> String {
    if let Some(io) = std::error::Error::source(e).and_then(|s| s.downcast_ref::<std::io::Error>())
    {
        return net::os_error(io);
    }
    match (e.kind(), e.code(), e.detail()) {
        (::redis::ErrorKind::Server(_) | ::redis::ErrorKind::Extension, Some(code), Some(d)) => {
            format!("{code} {d}")
        }
        _ => e.to_string(),
    }
}

/// A bulk or simple string reply as text.
pub(in crate::redis_streams) fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        Value::Okay => Some("OK".to_owned()),
        _ => None,
    }
}
