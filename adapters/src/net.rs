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
    let deadline = Instant::now() + timeout;
    let fail = |detail: String| {
        AdapterError::connect(format!("cannot connect to {broker} at {url} ({detail})"))
    };
    let addrs: Vec<SocketAddr> =
        match tokio::time::timeout_at(deadline, tokio::net::lookup_host(host_port)).await {
            Ok(Ok(addrs)) => addrs.collect(),
            Ok(Err(e)) => {
                return Err(fail(format!(
                    "could not resolve {host_port}: {}",
                    os_error(&e)
                )));
            }
            Err(_) => {
                return Err(fail(format!(
                    "could not resolve {host_port} within {}",
                    fmt_duration(timeout)
                )));
            }
        };
    if addrs.is_empty() {
        return Err(fail(format!("{host_port} resolved to no address")));
    }
    let mut tried = Vec::with_capacity(addrs.len());
    for addr in addrs {
        match tokio::time::timeout_at(deadline, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                // Requests are batched by the writer; Nagle would only add delay.
                stream
                    .set_nodelay(true)
                    .map_err(|e| fail(format!("connected to {addr} but: {}", os_error(&e))))?;
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
    Err(fail(format!("tried {}", tried.join("; "))))
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
