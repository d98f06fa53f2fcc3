//! The broker's address: parsing and checking an `amqp://` URL, redacting its password
//! for messages, and the reachability probe that also reads the broker's name and version.
//!
//! The probe opens a plain TCP connection with `net::dial` (so an
//! unreachable broker is reported with the addresses tried and the OS error, within the
//! connect timeout), sends the AMQP 0-9-1 protocol header and reads the broker's first
//! frame, `connection.start`, whose server properties name the product and its version.
//! It then closes the socket: the real connection is opened by lapin.
//!
//! ```text
//!  client                                   broker
//!    ── "AMQP" 0 0 9 1 ─────────────────────>
//!    <── frame type 1, channel 0: connection.start {server-properties: product, version}
//!    ── (close) ─────────────────────────────>
//! ```

use std::str::FromStr;
use std::time::Duration;

use lapin::types::{AMQPValue, FieldTable};
use lapin::uri::{AMQPScheme, AMQPUri};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use crate::endpoint;
use crate::error::{AdapterError, ErrorKind, fmt_duration};
use crate::kind::BackendKind;
use crate::net;

/// What the URL should look like, for error messages.
const EXPECTED_FORM: &str = "amqp://user:password@host:port/vhost (vhost '/' is written %2f)";

/// The AMQP 0-9-1 protocol header a client sends first.
const PROTOCOL_HEADER: &[u8; 8] = b"AMQP\x00\x00\x09\x01";

/// Frame type of a method frame, and the octet that ends every frame.
const FRAME_METHOD: u8 = 1;
const FRAME_END: u8 = 0xCE;

/// Largest `connection.start` frame the probe accepts; RabbitMQ's is about 500 bytes.
const MAX_START_FRAME: usize = 64 * 1024;

/// A parsed, checked RabbitMQ URL.
#[derive(Debug, Clone)]
pub(super) struct Target {
    /// What lapin connects to (with the host fixed up, see [`Target::parse`]).
    pub(super) uri: AMQPUri,
    /// The URL as the user wrote it, with the password replaced by `***`: the only form
    /// that appears in messages.
    pub(super) display: String,
    /// `host:port`, for dialling and for messages.
    pub(super) host_port: String,
    /// The `prefetch` query parameter, if the URL has one.
    pub(super) prefetch: Option<u16>,
}

impl Target {
    /// Parses `url` (`amqp://user:password@host:port/vhost[?prefetch=N&heartbeat=S...]`).
    ///
    /// lapin's own parser takes the host from `Url::domain`, which is empty for an IP
    /// address (it would then connect to `localhost`); the host and port are therefore
    /// taken from brokerbench's endpoint parser, which keeps what the user wrote.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidUrl`] naming the URL (password redacted), what is wrong and
    /// the expected form.
    pub(super) fn parse(url: &str) -> Result<Target, AdapterError> {
        let display = endpoint::redact(url);
        let invalid = |why: &str| {
            AdapterError::new(
                ErrorKind::InvalidUrl,
                format!("invalid rabbitmq URL '{display}': {why} (expected {EXPECTED_FORM})"),
            )
        };
        let url = url.trim();
        let scheme = match url.split_once("://") {
            Some((scheme, _)) => scheme.to_ascii_lowercase(),
            None => return Err(invalid("no scheme")),
        };
        if scheme != "amqp" && scheme != "amqps" {
            return Err(invalid(&format!(
                "unsupported scheme '{scheme}' (amqp or amqps)"
            )));
        }
        let endpoints =
            endpoint::parse_endpoints(BackendKind::Rabbitmq, url).map_err(|why| invalid(&why))?;
        let [endpoint] = endpoints.as_slice() else {
            return Err(invalid("more than one host; name a single broker"));
        };
        let mut uri = AMQPUri::from_str(url).map_err(|e| invalid(&e))?;
        uri.authority.host = endpoint.host.clone();
        let host_port = endpoint::Endpoint {
            host: endpoint.host.clone(),
            port: uri.authority.port,
        }
        .host_port();
        let prefetch = query_param(url, "prefetch")
            .map(|value| match value.parse::<u16>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(invalid(&format!(
                    "prefetch '{value}' is not a number from 1 to 65535"
                ))),
            })
            .transpose()?;
        Ok(Target {
            uri,
            display,
            host_port,
            prefetch,
        })
    }

    /// The user name the URL logs in with (`guest` when it names none).
    pub(super) fn user(&self) -> &str {
        &self.uri.authority.userinfo.username
    }

    /// The virtual host the URL names.
    pub(super) fn vhost(&self) -> &str {
        &self.uri.vhost
    }

    /// Whether the URL asks for TLS (`amqps`).
    pub(super) fn is_tls(&self) -> bool {
        self.uri.scheme == AMQPScheme::AMQPS
    }
}

/// The value of query parameter `name` in `url`, if present.
fn query_param<'a>(url: &'a str, name: &str) -> Option<&'a str> {
    let query = url.split_once('?')?.1;
    let query = query.split('#').next().unwrap_or_default();
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// Reaches the broker within `timeout` and returns its name and version
/// (`RabbitMQ 3.12.1`) when it says; `None` over TLS, where the probe stops at TCP.
///
/// # Errors
///
/// [`ErrorKind::Connect`] when no address answers, the peer closes, or it does not
/// answer the protocol header in time; [`ErrorKind::Protocol`] when it answers something
/// other than AMQP 0-9-1's `connection.start`.
pub(super) async fn probe(
    target: &Target,
    timeout: Duration,
) -> Result<Option<String>, AdapterError> {
    let deadline = Instant::now() + timeout;
    let url = &target.display;
    let mut stream = net::dial("rabbitmq", url, &target.host_port, timeout).await?;
    if target.is_tls() {
        return Ok(None);
    }
    let fail = |detail: String| {
        AdapterError::connect(format!(
            "cannot connect to rabbitmq at {url} (connected to {} but {detail})",
            target.host_port
        ))
    };
    let io = async {
        stream.write_all(PROTOCOL_HEADER).await?;
        let mut header = [0u8; 7];
        stream.read_exact(&mut header).await?;
        if &header[..4] == b"AMQP" {
            // The broker answers a protocol header it does not speak with its own.
            let mut rest = [0u8; 1];
            stream.read_exact(&mut rest).await?;
            return Ok(Err(AdapterError::protocol(format!(
                "the server at {url} does not speak AMQP 0-9-1 (it offered protocol {}-{}-{})",
                header[5], header[6], rest[0]
            ))));
        }
        let size = u32::from_be_bytes([header[3], header[4], header[5], header[6]]) as usize;
        if header[0] != FRAME_METHOD || size > MAX_START_FRAME {
            // Show what it said: often another protocol's greeting or error.
            let mut said = header.to_vec();
            let mut more = [0u8; 64];
            if let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_millis(200), stream.read(&mut more)).await
            {
                said.extend_from_slice(&more[..n]);
            }
            return Ok(Err(AdapterError::protocol(format!(
                "the server at {url} ({}) is not an AMQP 0-9-1 broker: it answered '{}'",
                target.host_port,
                printable(&said)
            ))));
        }
        let mut payload = vec![0u8; size + 1];
        stream.read_exact(&mut payload).await?;
        if payload[size] != FRAME_END {
            return Ok(Err(AdapterError::protocol(format!(
                "the server at {url} sent a malformed AMQP frame (no frame-end octet)"
            ))));
        }
        payload.truncate(size);
        Ok::<_, std::io::Error>(Ok(payload))
    };
    let payload = match tokio::time::timeout_at(deadline, io).await {
        Ok(Ok(Ok(payload))) => payload,
        Ok(Ok(Err(error))) => return Err(error),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            return Err(fail(
                "it closed the connection before the AMQP handshake".into(),
            ));
        }
        Ok(Err(e)) => return Err(fail(net::os_error(&e))),
        Err(_) => {
            return Err(fail(format!(
                "it did not start the AMQP handshake within {}",
                fmt_duration(timeout)
            )));
        }
    };
    use lapin::protocol::{AMQPClass, connection::AMQPMethod};
    match lapin::protocol::parse_class(payload.as_slice()) {
        Ok((_, AMQPClass::Connection(AMQPMethod::Start(start)))) => {
            Ok(server_version(&start.server_properties))
        }
        _ => Err(AdapterError::protocol(format!(
            "the server at {url} did not open with AMQP's connection.start"
        ))),
    }
}

/// The first line of `bytes`, with anything unprintable as `?`.
fn printable(bytes: &[u8]) -> String {
    let line = bytes
        .split(|&b| b == b'\r' || b == b'\n')
        .next()
        .unwrap_or_default();
    line.iter()
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                char::from(b)
            } else {
                '?'
            }
        })
        .collect()
}

/// `product version` from a broker's server properties (`RabbitMQ 3.12.1`).
pub(super) fn server_version(properties: &FieldTable) -> Option<String> {
    let text = |key: &str| match properties.inner().get(key) {
        Some(AMQPValue::LongString(s)) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        Some(AMQPValue::ShortString(s)) => Some(s.as_str().to_owned()),
        _ => None,
    };
    match (text("product"), text("version")) {
        (Some(product), Some(version)) => Some(format!("{product} {version}")),
        (Some(product), None) => Some(product),
        (None, Some(version)) => Some(format!("RabbitMQ {version}")),
        (None, None) => None,
    }
}
