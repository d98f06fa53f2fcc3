//! Connections to Redis: the URL, opening one `MultiplexedConnection` over a TCP stream
//! dialled by [`crate::net::dial`], the handshake, one request with a timeout, and the
//! backend's control connection, which is dialled again when it is lost ([`Control`]).
//!
//! The redis crate's own connect path is not used, so that an unreachable server is
//! reported like every other backend does (`cannot connect to redis at ... (tried ...)`),
//! and so that the handshake is ours: `AUTH` and `SELECT` are sent as ordinary commands,
//! which lets a refused login quote the server's own words (`WRONGPASS ...`) instead of
//! the crate's generic "Password authentication failed".
//!
//! ```text
//! AUTH [user] password   (when the URL has a password)
//! SELECT db              (when the URL names a database other than 0)
//! CLIENT SETNAME <name>  (bb-<pid>-<nonce>-<role>, so CLIENT LIST shows who is who)
//! INFO server            (control connection: the server's version)
//! CLIENT ID              (reading connections: the id CLIENT UNBLOCK needs)
//! ```
//!
//! All of it goes out as one pipeline: one round trip, within the connect timeout.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ::redis::aio::MultiplexedConnection;
use ::redis::{
    AsyncConnectionConfig, Cmd, ConnectionAddr, IntoConnectionInfo, Pipeline, RedisConnectionInfo,
    RedisError, ServerError, Value,
};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::backend::ConnectOptions;
use crate::endpoint::{self, Endpoint};
use crate::error::{AdapterError, ErrorKind, fmt_duration};
use crate::net;

/// Capacity of the redis crate's queue between a connection's handles and its driver task
/// (the crate's default is 50): commands (or pipelines) not yet taken by the driver. A
/// producer keeps at most 32 pipelines there (see `publisher`); the control connection
/// carries the acks, claims and set-up requests of every subscription of the backend at
/// once, and they must not wait for room behind each other.
const PIPELINE_QUEUE: usize = 1024;

/// Bytes the driver gathers before it writes them to the socket (tokio_util's default is
/// 8 KiB). Larger batches mean fewer syscalls at high publish rates; the driver also
/// writes whenever its queue runs empty, so this adds no latency at low rates.
const WRITE_BATCH_BYTES: usize = 64 * 1024;

/// The URL form this adapter accepts, for error messages.
pub(super) const URL_FORM: &str = "redis://[[user]:password@]host[:port][/db]";

/// Where a Redis server is and how to log in, parsed from a URL.
#[derive(Clone)]
pub(super) struct Target {
    /// The URL with any password replaced by `***`: what messages show.
    pub(super) shown: Arc<str>,
    /// `host:port` to dial (brackets around an IPv6 host).
    pub(super) host_port: String,
    username: Option<String>,
    password: Option<String>,
    db: i64,
}

impl std::fmt::Debug for Target {
    /// Shows the redacted URL only: the password never reaches logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("url", &self.shown)
            .field("host_port", &self.host_port)
            .field("db", &self.db)
            .finish_non_exhaustive()
    }
}

impl Target {
    /// Parses `redis://[[user]:password@]host[:port][/db]` (also `valkey://`, or a bare
    /// `host:port`).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidUrl`] for a malformed URL or another scheme;
    /// [`ErrorKind::Unsupported`] for TLS (`rediss://`) and Unix sockets, which this build
    /// does not speak.
    pub(super) fn parse(url: &str) -> Result<Target, AdapterError> {
        let shown = endpoint::redact(url);
        let invalid = |why: &str| {
            AdapterError::new(
                ErrorKind::InvalidUrl,
                format!("invalid redis URL '{shown}': {why} (expected {URL_FORM})"),
            )
        };
        let full = if url.contains("://") {
            url.trim().to_owned()
        } else {
            format!("redis://{}", url.trim())
        };
        let scheme = full
            .split_once("://")
            .map(|(scheme, _)| scheme.to_ascii_lowercase())
            .unwrap_or_default();
        match scheme.as_str() {
            "redis" | "valkey" => {}
            "rediss" | "valkeys" => {
                return Err(AdapterError::unsupported(format!(
                    "cannot connect to redis at {shown}: TLS ({scheme}://) is not supported by this build (use {URL_FORM})"
                )));
            }
            "unix" | "redis+unix" | "valkey+unix" => {
                return Err(AdapterError::unsupported(format!(
                    "cannot connect to redis at {shown}: Unix sockets are not supported by this adapter (use {URL_FORM})"
                )));
            }
            other => return Err(invalid(&format!("unsupported scheme '{other}'"))),
        }
        let info = full.as_str().into_connection_info().map_err(|e| {
            invalid(
                e.detail()
                    .map_or_else(|| e.to_string(), |detail| format!("{e}: {detail}"))
                    .as_str(),
            )
        })?;
        let host_port = match info.addr() {
            ConnectionAddr::Tcp(host, port) => Endpoint {
                host: host.clone(),
                port: *port,
            }
            .host_port(),
            other => return Err(invalid(&format!("not a TCP address: {other}"))),
        };
        let settings = info.redis_settings();
        Ok(Target {
            shown: shown.into(),
            host_port,
            username: settings.username().map(str::to_owned),
            password: settings.password().map(str::to_owned),
            db: settings.db(),
        })
    }

    /// The user the login is for, as messages name it.
    fn user(&self) -> &str {
        self.username.as_deref().unwrap_or("default")
    }
}

/// What a connection is for: its name in `CLIENT LIST` and what the handshake asks.
#[derive(Clone, Copy)]
pub(super) enum Role<'a> {
    /// The backend's shared connection (set-up, acks, claims, stats): also reads the
    /// server's version.
    Control,
    /// A producer's connection.
    Producer(u64),
    /// A subscription's dedicated reading connection: also reads its client id.
    Reader(&'a str),
}

/// An open connection.
pub(super) struct Link {
    /// The handle; clones share the connection.
    pub(super) con: MultiplexedConnection,
    /// `CLIENT ID` (reading connections).
    pub(super) client_id: Option<i64>,
    /// The `INFO server` text (control connection).
    pub(super) server_info: Option<String>,
    /// Cleared when the driver task ends: the connection is gone.
    pub(super) alive: Arc<AtomicBool>,
    driver: AbortHandle,
}

impl Link {
    /// Dials, starts the driver task and runs the handshake, all within the connect
    /// timeout.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Connect`] when the server cannot be reached or does not answer;
    /// [`ErrorKind::Rejected`] when it refuses the login or the database.
    pub(super) async fn open(
        target: &Target,
        prefix: &str,
        role: Role<'_>,
        options: &ConnectOptions,
    ) -> Result<Link, AdapterError> {
        let timeout = options.connect_timeout;
        let deadline = Instant::now() + timeout;
        let url = &target.shown;
        let stream = net::dial("redis", url, &target.host_port, timeout).await?;
        let peer = stream
            .peer_addr()
            .map_or_else(|_| target.host_port.clone(), |a| a.to_string());
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(None)
            // Our own timeouts apply (publish / request timeout, and a blocking read's
            // BLOCK plus the request timeout); the crate's 500 ms default would cut
            // blocking reads short.
            .set_response_timeout(None)
            .set_pipeline_buffer_size(PIPELINE_QUEUE)
            .set_write_backpressure_boundary(WRITE_BATCH_BYTES);
        // Nothing for the crate to send: no password, database 0, no library name. The
        // handshake below is ours.
        let info = RedisConnectionInfo::default().set_skip_set_lib_name();
        let (mut con, driver) = MultiplexedConnection::new_with_config(&info, stream, config)
            .await
            .map_err(|e| {
                AdapterError::connect(format!(
                    "cannot connect to redis at {url} (connected to {peer}, then: {})",
                    describe(&e)
                ))
            })?;
        let alive = Arc::new(AtomicBool::new(true));
        let driver = {
            let alive = alive.clone();
            tokio::spawn(async move {
                driver.await;
                alive.store(false, Ordering::Release);
            })
            .abort_handle()
        };

        let mut pipe = ::redis::pipe();
        let auth = target.password.as_ref().map(|password| {
            pipe.cmd("AUTH");
            if let Some(user) = &target.username {
                pipe.arg(user.as_str());
            }
            pipe.arg(password.as_str());
            pipe.len() - 1
        });
        let select = (target.db != 0).then(|| {
            pipe.cmd("SELECT").arg(target.db);
            pipe.len() - 1
        });
        let name = match role {
            Role::Control => format!("{prefix}-control"),
            Role::Producer(n) => format!("{prefix}-producer-{n}"),
            Role::Reader(consumer) => format!("{consumer}-reader"),
        };
        pipe.cmd("CLIENT").arg("SETNAME").arg(name.as_str());
        let setname = pipe.len() - 1;
        let extra = match role {
            Role::Control => {
                pipe.cmd("INFO").arg("server");
                Some(pipe.len() - 1)
            }
            Role::Reader(_) => {
                pipe.cmd("CLIENT").arg("ID");
                Some(pipe.len() - 1)
            }
            Role::Producer(_) => None,
        };

        let replies = match tokio::time::timeout_at(
            deadline,
            con.send_packed_commands(&pipe, 0, pipe.len()),
        )
        .await
        {
            Ok(Ok(replies)) => replies,
            Ok(Err(e)) => {
                driver.abort();
                return Err(AdapterError::connect(format!(
                    "cannot connect to redis at {url} (connected to {peer}, then: {})",
                    describe(&e)
                )));
            }
            Err(_) => {
                driver.abort();
                return Err(AdapterError::connect(format!(
                    "cannot connect to redis at {url} (connected to {peer}, but it did not answer within {})",
                    fmt_duration(timeout)
                )));
            }
        };
        let reply = |index: usize| replies.get(index).unwrap_or(&Value::Nil);
        let checked = check_handshake(target, reply(setname), auth.map(reply), select.map(reply))
            .and_then(|()| match (role, extra) {
                (Role::Control, Some(index)) => Ok((None, text(reply(index)))),
                (Role::Reader(_), Some(index)) => match reply(index) {
                    Value::Int(id) => Ok((Some(*id), None)),
                    other => Err(AdapterError::protocol(format!(
                        "redis at {url} answered CLIENT ID with {other:?}, not a number"
                    ))),
                },
                _ => Ok((None, None)),
            });
        let (client_id, server_info) = match checked {
            Ok(found) => found,
            Err(error) => {
                driver.abort();
                return Err(error);
            }
        };
        Ok(Link {
            con,
            client_id,
            server_info,
            alive,
            driver,
        })
    }

    /// Ends the driver task, which closes the socket, even if requests are in flight.
    pub(super) fn close(&self) {
        self.driver.abort();
    }
}

/// Checks the answers to the handshake's `CLIENT SETNAME`, `AUTH` and `SELECT`.
fn check_handshake(
    target: &Target,
    setname: &Value,
    auth: Option<&Value>,
    select: Option<&Value>,
) -> Result<(), AdapterError> {
    let url = &target.shown;
    if let Some(Value::ServerError(e)) = auth {
        return Err(AdapterError::rejected(format!(
            "redis at {url} refused the login for user '{}': {}",
            target.user(),
            server_text(e)
        )));
    }
    if let Value::ServerError(e) = setname
        && e.code() == "NOAUTH"
    {
        return Err(AdapterError::rejected(format!(
            "redis at {url} requires a password ({}); give it in the URL: {URL_FORM}",
            server_text(e)
        )));
    }
    if let Some(Value::ServerError(e)) = select {
        return Err(AdapterError::rejected(format!(
            "redis at {url} refused database {}: {}",
            target.db,
            server_text(e)
        )));
    }
    Ok(())
}

/// The backend's shared control connection (set-up, acks, claims, `CLIENT UNBLOCK`,
/// stats), dialled again when it is lost.
///
/// When a request finds the connection gone ([`Failure::Lost`]: an I/O error, a reset, a
/// close; not an error reply, and not a timeout, after which the connection still answers
/// in order), or its driver task has ended, the connection is marked lost and the next
/// request dials a new one, with the same handshake as the first (`AUTH`, `SELECT`,
/// `CLIENT SETNAME <prefix>-control`). One dial at a time: requests that queued up behind
/// a dial share its outcome, so an unreachable server costs one connect timeout, not one
/// per waiting request.
///
/// Whether the failing request itself is sent again is the caller's choice:
/// [`raw`](Self::raw) and [`raw_pipe`](Self::raw_pipe) send it once more on the new
/// connection, which is right for every command this adapter sends here: each has the
/// same effect when it reaches the server twice (`XGROUP CREATE` answers `BUSYGROUP`,
/// which the callers take as "exists"; `XGROUP DESTROY` and `DELCONSUMER` find nothing
/// left to remove; `XCLAIM ... JUSTID` and `UNLINK` set the same state again; `INFO`,
/// `XLEN`, `XPENDING` and `CLIENT UNBLOCK` only read or interrupt). Only the answer of the
/// second sending can differ from the first's, so the two callers that read more into an
/// answer use [`raw_once`](Self::raw_once) and resend themselves: the acker (an `XACK`
/// resent after a loss answers 0 for what the lost one acknowledged already) and a
/// fan-out subscribe (its own group, created by the lost `XGROUP CREATE`, answers
/// `BUSYGROUP`). `XADD` is never sent here: publishes go through producers.
#[derive(Clone)]
pub(super) struct Control {
    /// The URL with the password hidden, for messages.
    pub(super) url: Arc<str>,
    state: Arc<ControlState>,
}

/// What every handle of one control connection shares.
struct ControlState {
    target: Target,
    prefix: String,
    options: ConnectOptions,
    slot: parking_lot::Mutex<Slot>,
    /// Held while dialling, so that one dial runs at a time.
    dialling: tokio::sync::Mutex<()>,
}

/// The control connection in use now.
struct Slot {
    link: Link,
    /// Numbers the connections (the first is 0), so that a request marks only the
    /// connection it used as lost, never a newer one.
    generation: u64,
    /// A request on `link` found it lost.
    lost: bool,
    /// Dials made since the first connection: requests waiting for a dial compare it to
    /// see whether one happened while they waited.
    dials: u64,
    /// Why the last dial failed; cleared by the next one that succeeds.
    dial_error: Option<AdapterError>,
}

impl Slot {
    /// The connection and its generation while it is usable; else the dial count.
    fn usable(&self) -> Result<(MultiplexedConnection, u64), u64> {
        if self.lost || !self.link.alive.load(Ordering::Acquire) {
            Err(self.dials)
        } else {
            Ok((self.link.con.clone(), self.generation))
        }
    }
}

impl Control {
    /// The control connection of a backend, starting with `link` (opened with
    /// [`Role::Control`]); later ones are dialled to `target` with `options`.
    pub(super) fn new(
        link: Link,
        target: &Target,
        prefix: &str,
        options: &ConnectOptions,
    ) -> Control {
        Control {
            url: target.shown.clone(),
            state: Arc::new(ControlState {
                target: target.clone(),
                prefix: prefix.to_owned(),
                options: options.clone(),
                slot: parking_lot::Mutex::new(Slot {
                    link,
                    generation: 0,
                    lost: false,
                    dials: 0,
                    dial_error: None,
                }),
                dialling: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// The request timeout.
    fn timeout(&self) -> Duration {
        self.state.options.request_timeout
    }

    /// The connection to send on, with its generation: the current one while it is
    /// usable, else a new one (within the connect timeout).
    async fn connection(&self) -> Result<(MultiplexedConnection, u64), Failure> {
        let state = &self.state;
        let dials_seen = match state.slot.lock().usable() {
            Ok(found) => return Ok(found),
            Err(dials) => dials,
        };
        let _turn = state.dialling.lock().await;
        {
            let slot = state.slot.lock();
            if let Ok(found) = slot.usable() {
                return Ok(found);
            }
            // A dial ran while this request waited, and failed: that is the answer.
            if slot.dials != dials_seen
                && let Some(error) = &slot.dial_error
            {
                return Err(Failure::Unreachable(error.clone()));
            }
        }
        let opened = Link::open(&state.target, &state.prefix, Role::Control, &state.options).await;
        let mut slot = state.slot.lock();
        slot.dials += 1;
        match opened {
            Ok(link) => {
                std::mem::replace(&mut slot.link, link).close();
                slot.generation += 1;
                slot.lost = false;
                slot.dial_error = None;
                Ok((slot.link.con.clone(), slot.generation))
            }
            Err(error) => {
                slot.dial_error = Some(error.clone());
                Err(Failure::Unreachable(error))
            }
        }
    }

    /// Notes that connection `generation` is gone, if `failure` says so.
    fn note<T>(&self, generation: u64, result: &Result<T, Failure>) {
        if let Err(Failure::Lost(_)) = result {
            let mut slot = self.state.slot.lock();
            if slot.generation == generation {
                slot.lost = true;
            }
        }
    }

    /// Sends `cmd` and waits for its answer, within the request timeout, without sending
    /// it again: after [`Failure::Lost`] it is unknown whether the server got it, and the
    /// next request goes out on a new connection.
    pub(super) async fn raw_once(&self, cmd: &Cmd) -> Result<Value, Failure> {
        let (mut con, generation) = self.connection().await?;
        let result = request(&mut con, cmd, self.timeout()).await;
        self.note(generation, &result);
        result
    }

    /// Sends `cmd` and waits for its answer, within the request timeout; when the
    /// connection turns out to be lost, sends it once more on a new one. Only for commands
    /// that may reach the server twice (see [`Control`]).
    pub(super) async fn raw(&self, cmd: &Cmd) -> Result<Value, Failure> {
        match self.raw_once(cmd).await {
            Err(Failure::Lost(_)) => self.raw_once(cmd).await,
            other => other,
        }
    }

    /// Sends `pipe` and waits for every answer, within the request timeout; resent once
    /// on a new connection like [`raw`](Self::raw).
    pub(super) async fn raw_pipe(&self, pipe: &Pipeline) -> Result<Vec<Value>, Failure> {
        match self.raw_pipe_once(pipe).await {
            Err(Failure::Lost(_)) => self.raw_pipe_once(pipe).await,
            other => other,
        }
    }

    /// [`raw_once`](Self::raw_once) for a pipeline.
    async fn raw_pipe_once(&self, pipe: &Pipeline) -> Result<Vec<Value>, Failure> {
        let (mut con, generation) = self.connection().await?;
        let result = request_pipe(&mut con, pipe, self.timeout()).await;
        self.note(generation, &result);
        result
    }

    /// [`raw`](Self::raw), with failures turned into errors that start with `what`.
    pub(super) async fn call(&self, what: &str, cmd: &Cmd) -> Result<Value, AdapterError> {
        self.raw(cmd)
            .await
            .map_err(|failure| failure.into_error(what, &self.url))
    }
}

/// Why a request got no usable answer.
#[derive(Debug, Clone)]
pub(super) enum Failure {
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
    pub(super) fn from_server(e: &ServerError) -> Failure {
        Failure::Server {
            code: e.code().to_owned(),
            text: server_text(e),
        }
    }

    /// Whether the server answered with error `code`.
    pub(super) fn is_code(&self, wanted: &str) -> bool {
        matches!(self, Failure::Server { code, .. } if code == wanted)
    }

    /// Whether the server said the key or group does not exist (so there is nothing
    /// left to remove).
    pub(super) fn is_gone(&self) -> bool {
        match self {
            Failure::Server { code, text } => {
                code == "NOGROUP" || text.contains("requires the key to exist")
            }
            _ => false,
        }
    }

    /// An error saying `what` failed against the server at `url`.
    pub(super) fn into_error(self, what: &str, url: &str) -> AdapterError {
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
pub(super) async fn request(
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
pub(super) async fn request_pipe(
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
pub(super) fn server_text(e: &ServerError) -> String {
    match e.details() {
        Some(details) => format!("{} {details}", e.code()),
        None => e.code().to_owned(),
    }
}

/// A crate error as a short phrase: the server's code and message, or the I/O error as
/// the other adapters word it (`connection reset by peer`).
pub(super) fn describe(e: &RedisError) -> String {
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
pub(super) fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        Value::Okay => Some("OK".to_owned()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoint::redact;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("redis://user:secret@h:6379/2"),
            "redis://user:***@h:6379/2"
        );
        assert_eq!(redact("redis://:secret@h"), "redis://:***@h");
        assert_eq!(redact("redis://h:6379"), "redis://h:6379");
        assert_eq!(redact("redis://user@h"), "redis://user@h");
        assert_eq!(redact("u:p@h:1"), "u:***@h:1");
    }

    #[test]
    fn urls_parse_into_targets() {
        let t = Target::parse("redis://127.0.0.1:6380/3").unwrap();
        assert_eq!(t.host_port, "127.0.0.1:6380");
        assert_eq!(t.db, 3);
        assert_eq!(t.user(), "default");
        let t = Target::parse("redis://bob:pw@[::1]").unwrap();
        assert_eq!(t.host_port, "[::1]:6379");
        assert_eq!(t.user(), "bob");
        assert_eq!(t.password.as_deref(), Some("pw"));
        assert_eq!(&*t.shown, "redis://bob:***@[::1]");
        let t = Target::parse("localhost:7000").unwrap();
        assert_eq!(t.host_port, "localhost:7000");
    }

    #[test]
    fn bad_urls_say_what_is_expected() {
        for url in [
            "redis://",
            "redis://h:notaport",
            "redis://h/notadb",
            "http://h",
        ] {
            let err = Target::parse(url).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidUrl, "{url}: {err}");
            assert!(err.to_string().contains(URL_FORM), "{err}");
        }
        let err = Target::parse("redis://u:secret@h:x").unwrap_err();
        assert!(!err.to_string().contains("secret"), "{err}");
        let err = Target::parse("rediss://h").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unsupported);
    }
}
