//! What the NATS core and JetStream adapters share: the URL and its credentials, one
//! async-nats connection with the settings a benchmark needs, the connection's health as
//! async-nats reports it, and a round trip through the server.
//!
//! Either feature can be built alone: the crate declares this module when either is on,
//! and both adapters use it as `client`.
//!
//! Settings, and why:
//! - the initial connect does not retry in the background and is bounded by
//!   [`ConnectOptions::connect_timeout`] as a whole (DNS, TCP, `INFO`, `CONNECT`, `PING`/`PONG`);
//! - API requests (JetStream) wait at most [`ConnectOptions::request_timeout`];
//! - a lost connection is retried [`MAX_RECONNECTS`] times, [`RECONNECT_DELAY_STEP`] apart
//!   and more (about a minute in all), then the client gives up for good, so a client nobody
//!   holds any more never keeps dialling a dead server;
//! - `PING` every [`PING_INTERVAL`] when the server is quiet, so a server that hangs without
//!   closing the socket is noticed within three intervals;
//! - bounded queues: [`CLIENT_CAPACITY`] commands between the handles and the connection
//!   task, [`SUBSCRIPTION_CAPACITY`] messages per subscription.

use std::str::FromStr;
use std::time::Duration;

use async_nats::{Client, ClientError, Event, HeaderMap, HeaderName, ServerAddr};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::backend::ConnectOptions;
use crate::endpoint;
use crate::error::{AdapterError, ErrorKind, fmt_duration};
use crate::kind::BackendKind;
use crate::net;

/// The header that carries [`PublishRequest::key`](crate::PublishRequest::key).
pub(crate) const KEY_HEADER: &str = "Bb-Key";

/// [`KEY_HEADER`] as a header name, made at compile time rather than per message.
const KEY_HEADER_NAME: HeaderName = HeaderName::from_static(KEY_HEADER);

/// Commands (publishes, acks, subscribes, requests) async-nats queues between the client
/// handles and its connection task. A publish waits for room here and nowhere else, so this
/// is what lets thousands of publishes be in flight on one producer; the library's default
/// (2048) made a fast producer wait on the connection task.
const CLIENT_CAPACITY: usize = 16 * 1024;

/// Messages async-nats buffers for one subscription. When a subscription's buffer is full
/// the library drops the next message and reports a slow consumer
/// ([`Event::SlowConsumer`]); the adapters turn that into an error item. The library's
/// default, stated explicitly: at 200 bytes a message it is 13 MB, about half a second
/// of a fast run.
const SUBSCRIPTION_CAPACITY: usize = 64 * 1024;

/// How long the client waits without hearing from the server before it sends a `PING`.
/// Two unanswered pings close the connection, so a server that hangs is noticed after
/// about three intervals. (A server that exits is noticed at once: the socket closes.)
const PING_INTERVAL: Duration = Duration::from_secs(2);

/// Reconnect attempts after a lost connection before the client gives up for good.
const MAX_RECONNECTS: usize = 40;

/// The wait before reconnect attempt `n` is `n` times this, capped at
/// [`MAX_RECONNECT_DELAY`]: 40 attempts take about a minute.
const RECONNECT_DELAY_STEP: Duration = Duration::from_millis(250);

/// The longest wait between two reconnect attempts.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(2);

/// What async-nats has reported about one connection since it was opened. Counters only
/// grow, so a reader compares them with the values it saw before.
#[derive(Debug, Clone, Default)]
pub(crate) struct Health {
    /// Times the connection was lost (each one may be followed by a reconnect).
    pub disconnects: u64,
    /// Messages async-nats dropped because a subscription's buffer was full.
    pub slow_consumers: u64,
    /// `-ERR` lines the server sent without closing the connection.
    pub server_errors: u64,
    /// The text of the last of them (e.g. `Permissions Violation for Subscription to ...`).
    pub last_server_error: Option<String>,
    /// The client stopped reconnecting: the connection is gone for good.
    pub gave_up: bool,
}

impl Health {
    fn record(&mut self, event: Event) -> bool {
        match event {
            Event::Disconnected => self.disconnects += 1,
            Event::SlowConsumer(_) => self.slow_consumers += 1,
            Event::ServerError(error) => {
                self.server_errors += 1;
                self.last_server_error = Some(error.to_string());
            }
            Event::ClientError(ClientError::MaxReconnects) => self.gave_up = true,
            _ => return false,
        }
        true
    }

    /// `: the server said '<last error>'`, or nothing, to end a message with.
    pub fn server_said(&self) -> String {
        match &self.last_server_error {
            Some(text) => format!(" (the server said: {text})"),
            None => String::new(),
        }
    }
}

/// Credentials taken from the URL's user-info part.
#[derive(Clone, PartialEq, Eq)]
enum Credentials {
    None,
    /// `nats://user:password@host`.
    UserPassword {
        user: String,
        password: String,
    },
    /// `nats://token@host`.
    Token(String),
}

/// A parsed NATS URL: `nats://[user:password@|token@]host[:port][,host[:port]...]`
/// (`tls://` for TLS; a bare `host:port` means `nats://`).
#[derive(Clone)]
pub(crate) struct Target {
    kind: BackendKind,
    /// The URL with its password or token replaced by `***`, for every message.
    pub display: String,
    /// `host:port` of each server, for messages.
    host_ports: Vec<String>,
    servers: Vec<ServerAddr>,
    credentials: Credentials,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("url", &self.display)
            .finish_non_exhaustive()
    }
}

impl Target {
    /// Parses `url` for a broker of `kind` (`nats` or `jetstream`).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidUrl`] naming the URL (password redacted) and the expected form.
    pub fn parse(kind: BackendKind, url: &str) -> Result<Target, AdapterError> {
        let display = endpoint::redact(url);
        let invalid = |why: &str| {
            AdapterError::new(
                ErrorKind::InvalidUrl,
                format!(
                    "invalid {kind} URL '{display}': {why} (expected nats://[user:password@]host[:port], or tls://... for TLS)"
                ),
            )
        };
        let (scheme, rest) = match url.trim().split_once("://") {
            Some((scheme, rest)) => (scheme.to_ascii_lowercase(), rest),
            None => ("nats".to_owned(), url.trim()),
        };
        if scheme != "nats" && scheme != "tls" {
            return Err(invalid(&format!("unsupported scheme '{scheme}'")));
        }
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let credentials = match authority.rsplit_once('@') {
            None => Credentials::None,
            Some((user_info, _)) => match user_info.split_once(':') {
                Some((user, password)) => Credentials::UserPassword {
                    user: percent_decode(user)
                        .ok_or_else(|| invalid("bad %-escape in the user"))?,
                    password: percent_decode(password)
                        .ok_or_else(|| invalid("bad %-escape in the password"))?,
                },
                None => Credentials::Token(
                    percent_decode(user_info)
                        .ok_or_else(|| invalid("bad %-escape in the token"))?,
                ),
            },
        };
        let endpoints = endpoint::parse_endpoints(kind, url).map_err(|why| {
            AdapterError::new(
                ErrorKind::InvalidUrl,
                format!(
                    "invalid {kind} URL '{display}': {why} (expected nats://[user:password@]host[:port])"
                ),
            )
        })?;
        let mut servers = Vec::with_capacity(endpoints.len());
        let mut host_ports = Vec::with_capacity(endpoints.len());
        for e in &endpoints {
            let host_port = e.host_port();
            let server = ServerAddr::from_str(&format!("{scheme}://{host_port}"))
                .map_err(|err| invalid(&format!("'{host_port}': {err}")))?;
            servers.push(server);
            host_ports.push(host_port);
        }
        Ok(Target {
            kind,
            display,
            host_ports,
            servers,
            credentials,
        })
    }

    /// Opens a connection, with the settings described in the module docs, and returns once
    /// the server answered the handshake (`CONNECT` + `PING`/`PONG`). `role` names the
    /// connection on the server (`brokerbench nats producer`).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Connect`] naming the URL, the addresses tried and what each answered,
    /// within the connect timeout; [`ErrorKind::Rejected`] when the server refused the
    /// credentials; [`ErrorKind::Unsupported`] for a server without message headers.
    pub async fn connect(
        &self,
        options: &ConnectOptions,
        role: &str,
    ) -> Result<Connection, AdapterError> {
        let (health_tx, health) = watch::channel(Health::default());
        let mut nats = async_nats::ConnectOptions::new()
            .name(format!("brokerbench {} {role}", self.kind))
            .connection_timeout(options.connect_timeout)
            .request_timeout(Some(options.request_timeout))
            .client_capacity(CLIENT_CAPACITY)
            .subscription_capacity(SUBSCRIPTION_CAPACITY)
            .ping_interval(PING_INTERVAL)
            .max_reconnects(MAX_RECONNECTS)
            .reconnect_delay_callback(|attempt| {
                RECONNECT_DELAY_STEP
                    .saturating_mul(u32::try_from(attempt).unwrap_or(u32::MAX))
                    .min(MAX_RECONNECT_DELAY)
            })
            .event_callback(move |event| {
                health_tx.send_if_modified(|health| health.record(event));
                std::future::ready(())
            });
        nats = match &self.credentials {
            Credentials::None => nats,
            Credentials::UserPassword { user, password } => {
                nats.user_and_password(user.clone(), password.clone())
            }
            Credentials::Token(token) => nats.token(token.clone()),
        };
        let deadline = Instant::now() + options.connect_timeout;
        let client = match tokio::time::timeout_at(deadline, nats.connect(self.servers.clone()))
            .await
        {
            Ok(Ok(client)) => client,
            Ok(Err(error)) => return Err(self.connect_failed(&error, deadline).await),
            Err(_) => {
                return Err(AdapterError::connect(format!(
                    "cannot connect to {} at {} (tried {}: no answer to the NATS handshake within {})",
                    self.kind,
                    self.display,
                    self.host_ports.join(", "),
                    fmt_duration(options.connect_timeout)
                )));
            }
        };
        let info = client.server_info();
        if !info.headers {
            return Err(AdapterError::unsupported(format!(
                "nats-server {} at {} does not support message headers, which carry keys and message ids (nats-server 2.2 or later does)",
                info.version, self.display
            )));
        }
        let ping_subject = client.new_inbox();
        Ok(Connection {
            client,
            health,
            ping_subject,
        })
    }

    /// The error for a failed initial connect: a refusal of the credentials as such, and
    /// otherwise what a plain TCP connection to each address answers.
    async fn connect_failed(
        &self,
        error: &async_nats::ConnectError,
        deadline: Instant,
    ) -> AdapterError {
        use async_nats::ConnectErrorKind as K;
        let kind = self.kind;
        let url = &self.display;
        match error.kind() {
            K::AuthorizationViolation | K::Authentication => {
                let who = match &self.credentials {
                    Credentials::None => {
                        return AdapterError::rejected(format!(
                            "{kind} at {url} requires authentication (authorization violation); put user:password@ or a token@ in the URL"
                        ));
                    }
                    Credentials::UserPassword { user, .. } => {
                        format!("the login for user '{user}'")
                    }
                    Credentials::Token(_) => "the token".to_owned(),
                };
                AdapterError::rejected(format!(
                    "{kind} at {url} refused {who} (authorization violation)"
                ))
            }
            K::Tls => AdapterError::connect(format!(
                "cannot connect to {kind} at {url} (TLS failed: {})",
                cause(error)
            )),
            _ => {
                // Say what each address answers to a plain TCP connection: `connection
                // refused`, a name that does not resolve, no answer at all...
                let mut tried = Vec::with_capacity(self.host_ports.len());
                for host_port in &self.host_ports {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        tried.push(format!("{host_port}: {}", cause(error)));
                        continue;
                    }
                    match net::reach(host_port, left).await {
                        // TCP works: the NATS handshake is what failed.
                        Ok(_) => tried.push(format!(
                            "{host_port}: TCP connected but the NATS handshake failed: {}",
                            cause(error)
                        )),
                        Err(why) => tried.push(why.attempts()),
                    }
                }
                AdapterError::connect(format!(
                    "cannot connect to {kind} at {url} (tried {})",
                    tried.join("; ")
                ))
            }
        }
    }
}

/// The innermost readable cause of an async-nats error: the OS error as a phrase when there
/// is one (`connection refused`), else the error's own text.
pub(crate) fn cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current: &(dyn std::error::Error + 'static) = error;
    while let Some(next) = current.source() {
        if let Some(io) = next.downcast_ref::<std::io::Error>() {
            return net::os_error(io);
        }
        current = next;
    }
    error.to_string()
}

/// `%XX` escapes of a URL part decoded; `None` for a malformed escape or invalid UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// One open connection: the async-nats client (a cheap handle), what async-nats reported
/// about it, and a subject nobody listens on, for round trips.
pub(crate) struct Connection {
    pub client: Client,
    pub health: watch::Receiver<Health>,
    ping_subject: String,
}

impl Connection {
    /// `nats-server <version>` as the server announced itself.
    pub fn server_version(&self) -> Option<String> {
        let version = self.client.server_info().version;
        (!version.is_empty()).then(|| format!("nats-server {version}"))
    }

    /// A handle for round trips through the server on this connection.
    pub fn pinger(&self) -> Pinger {
        Pinger {
            client: self.client.clone(),
            subject: self.ping_subject.clone(),
        }
    }
}

/// Round trips through the server on one connection.
#[derive(Clone)]
pub(crate) struct Pinger {
    client: Client,
    subject: String,
}

impl Pinger {
    /// A round trip through the server: a request to a subject nobody subscribes to, which
    /// the server answers with "no responders" once it has processed everything this
    /// connection sent before. That is the proof that earlier publishes, subscribes and
    /// unsubscribes took effect. (`Client::flush` only proves the bytes left this process.)
    pub fn round_trip(
        &self,
        timeout: Duration,
    ) -> impl Future<Output = Result<(), RoundTripError>> + Send + 'static {
        round_trip(self.client.clone(), self.subject.clone(), timeout)
    }
}

/// Why a [`Pinger::round_trip`] did not come back.
#[derive(Debug)]
pub(crate) enum RoundTripError {
    /// No answer within the timeout.
    Timeout,
    /// The client could not send it (its connection task is gone) or something else broke.
    Failed(String),
}

async fn round_trip(
    client: Client,
    subject: String,
    timeout: Duration,
) -> Result<(), RoundTripError> {
    use async_nats::RequestErrorKind as K;
    let request = async_nats::Request::new().timeout(Some(timeout));
    match tokio::time::timeout(timeout, client.send_request(subject, request)).await {
        // Someone answered: a round trip all the same.
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => match error.kind() {
            K::NoResponders => Ok(()),
            K::TimedOut => Err(RoundTripError::Timeout),
            _ => Err(RoundTripError::Failed(cause(&error))),
        },
        Err(_) => Err(RoundTripError::Timeout),
    }
}

/// Headers carrying `key` (as [`KEY_HEADER`]), or `Err` with the reason a header cannot
/// carry it.
pub(crate) fn key_headers(headers: &mut HeaderMap, key: &str) -> Result<(), String> {
    let value = async_nats::HeaderValue::from_str(key).map_err(|_| {
        format!("the key {key:?} cannot travel in a NATS header (it contains CR or LF)")
    })?;
    headers.insert(KEY_HEADER_NAME, value);
    Ok(())
}

/// The key a message carries in [`KEY_HEADER`], if any.
pub(crate) fn key_of(headers: Option<&HeaderMap>) -> Option<String> {
    headers?
        .get(KEY_HEADER_NAME)
        .map(|value| value.as_str().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_with_credentials_and_several_hosts() {
        let t = Target::parse(BackendKind::Nats, "nats://alice:s%40cret@h1,h2:4333").unwrap();
        assert_eq!(t.display, "nats://alice:***@h1,h2:4333");
        assert_eq!(t.host_ports, ["h1:4222", "h2:4333"]);
        assert!(
            t.credentials
                == Credentials::UserPassword {
                    user: "alice".into(),
                    password: "s@cret".into()
                }
        );
        let t = Target::parse(BackendKind::Jetstream, "127.0.0.1:4999").unwrap();
        assert_eq!(t.host_ports, ["127.0.0.1:4999"]);
        assert!(t.credentials == Credentials::None);
        let t = Target::parse(BackendKind::Nats, "nats://tok@h").unwrap();
        assert!(t.credentials == Credentials::Token("tok".into()));
        assert_eq!(t.display, "nats://***@h");
    }

    #[test]
    fn bad_urls_are_invalid_and_say_the_expected_form() {
        for url in [
            "http://h:4222",
            "nats://h:99999",
            "nats://",
            "nats://u:p%zz@h",
        ] {
            let err = Target::parse(BackendKind::Nats, url).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidUrl, "{url}");
            assert!(err.to_string().contains("expected nats://"), "{err}");
        }
        let err = Target::parse(BackendKind::Nats, "http://u:secret@h").unwrap_err();
        assert!(!err.to_string().contains("secret"), "{err}");
    }

    #[test]
    fn percent_escapes_are_decoded() {
        assert_eq!(percent_decode("a%2Fb"), Some("a/b".to_owned()));
        assert_eq!(percent_decode("a%2"), None);
    }

    #[test]
    fn keys_travel_in_a_header() {
        let mut headers = HeaderMap::new();
        key_headers(&mut headers, "customer-7").unwrap();
        assert_eq!(key_of(Some(&headers)).as_deref(), Some("customer-7"));
        assert!(key_headers(&mut HeaderMap::new(), "a\nb").is_err());
        assert_eq!(key_of(None), None);
    }
}
