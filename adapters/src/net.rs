//! Opening TCP connections with one overall deadline and an error that says everything:
//! which broker, which URL, which addresses were tried and what each one answered.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::error::{AdapterError, fmt_duration};

/// Connects to `host_port` (`host:port`, `[v6]:port`), trying each resolved address in
/// turn until one answers, all within `timeout`.
///
/// # Errors
///
/// [`ErrorKind::Connect`](crate::ErrorKind::Connect), e.g. `cannot connect to reference
/// broker at tcp://127.0.0.1:7001 (tried 127.0.0.1:7001: connection refused)`.
pub(crate) async fn dial(
    broker: &str,
    url: &str,
    host_port: &str,
    timeout: Duration,
) -> Result<TcpStream, AdapterError> {
    reach(host_port, timeout)
        .await
        .map_err(|why| unreachable(broker, url, &[why]))
}

/// The connect error for `url` when none of its addresses could be reached:
/// `cannot connect to {broker} at {url} ({why}; {why}...)`.
pub(crate) fn unreachable(broker: &str, url: &str, why: &[Unreachable]) -> AdapterError {
    let details: Vec<String> = why.iter().map(ToString::to_string).collect();
    AdapterError::connect(format!(
        "cannot connect to {broker} at {url} ({})",
        details.join("; ")
    ))
}

/// Why [`reach`] opened no connection to one `host:port`.
#[derive(Debug)]
pub(crate) enum Unreachable {
    /// Each resolved address that was tried, with what it answered: `127.0.0.1:7001:
    /// connection refused`.
    Tried(Vec<String>),
    /// Nothing could be tried, or a connected socket failed: `could not resolve h:1: ...`.
    Other(String),
}

impl Unreachable {
    /// The attempts alone (`a: x; b: y`), without the `tried` that [`Display`] puts first,
    /// for a message that lists several hosts' attempts under one `tried`.
    ///
    /// [`Display`]: std::fmt::Display
    #[cfg_attr(not(any(feature = "nats", feature = "jetstream")), allow(dead_code))]
    pub(crate) fn attempts(&self) -> String {
        match self {
            Unreachable::Tried(tried) => tried.join("; "),
            Unreachable::Other(why) => why.clone(),
        }
    }
}

impl std::fmt::Display for Unreachable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unreachable::Tried(tried) => write!(f, "tried {}", tried.join("; ")),
            Unreachable::Other(why) => f.write_str(why),
        }
    }
}

/// [`dial`] without the message around the reason: connects to `host_port`, trying each
/// resolved address in turn until one answers, all within `timeout`.
pub(crate) async fn reach(host_port: &str, timeout: Duration) -> Result<TcpStream, Unreachable> {
    let deadline = Instant::now() + timeout;
    let addrs: Vec<SocketAddr> =
        match tokio::time::timeout_at(deadline, tokio::net::lookup_host(host_port)).await {
            Ok(Ok(addrs)) => addrs.collect(),
            Ok(Err(e)) => {
                return Err(Unreachable::Other(format!(
                    "could not resolve {host_port}: {}",
                    os_error(&e)
                )));
            }
            Err(_) => {
                return Err(Unreachable::Other(format!(
                    "could not resolve {host_port} within {}",
                    fmt_duration(timeout)
                )));
            }
        };
    if addrs.is_empty() {
        return Err(Unreachable::Other(format!(
            "{host_port} resolved to no address"
        )));
    }
    let mut tried = Vec::with_capacity(addrs.len());
    for addr in addrs {
        match tokio::time::timeout_at(deadline, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                // Requests are batched by the writer; Nagle would only add delay.
                stream.set_nodelay(true).map_err(|e| {
                    Unreachable::Other(format!("connected to {addr} but: {}", os_error(&e)))
                })?;
                return Ok(stream);
            }
            Ok(Err(e)) => tried.push(format!("{addr}: {}", os_error(&e))),
            Err(_) => {
                tried.push(format!(
                    "{addr}: no answer within {}",
                    fmt_duration(timeout)
                ));
                break;
            }
        }
    }
    Err(Unreachable::Tried(tried))
}

/// An OS error as a short lowercase phrase: `connection refused` rather than
/// `Connection refused (os error 111)`.
pub(crate) fn os_error(e: &io::Error) -> String {
    let text = e.to_string();
    let text = match text.rfind(" (os error ") {
        Some(at) if text.ends_with(')') => &text[..at],
        _ => &text[..],
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => format!("{:?}", e.kind()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn os_errors_read_as_phrases() {
        let e = io::Error::from_raw_os_error(111);
        assert_eq!(os_error(&e), "connection refused");
        let e = io::Error::other("Something odd");
        assert_eq!(os_error(&e), "something odd");
    }

    #[tokio::test]
    async fn refused_names_url_address_and_cause() {
        // A port nobody listens on: bind one, note it, close it.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let url = format!("tcp://{addr}");
        let err = dial(
            "reference broker",
            &url,
            &addr.to_string(),
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Connect);
        assert_eq!(
            err.to_string(),
            format!(
                "cannot connect to reference broker at {url} (tried {addr}: connection refused)"
            )
        );
    }

    #[test]
    fn attempts_leave_out_the_word_tried() {
        let tried = Unreachable::Tried(vec!["127.0.0.1:1: connection refused".into()]);
        assert_eq!(tried.to_string(), "tried 127.0.0.1:1: connection refused");
        assert_eq!(tried.attempts(), "127.0.0.1:1: connection refused");
        let other = Unreachable::Other("could not resolve h:1: no such host".into());
        assert_eq!(other.attempts(), other.to_string());
        assert_eq!(
            unreachable("kafka", "kafka://a,b", &[tried, other]).to_string(),
            "cannot connect to kafka at kafka://a,b (tried 127.0.0.1:1: connection refused; could not resolve h:1: no such host)"
        );
    }

    #[tokio::test]
    async fn unresolvable_host_says_so() {
        let started = std::time::Instant::now();
        let err = dial(
            "reference broker",
            "tcp://no-such-host.invalid:7000",
            "no-such-host.invalid:7000",
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Connect);
        assert!(
            err.to_string().starts_with(
                "cannot connect to reference broker at tcp://no-such-host.invalid:7000 (could not resolve no-such-host.invalid:7000"
            ),
            "{err}"
        );
        assert!(started.elapsed() < Duration::from_secs(6));
    }
}
