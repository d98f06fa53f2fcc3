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
//!
//! The rooms: [`target`] (the URL), this module (dialling and the handshake),
//! [`failure`] (one request with a timeout, and what can go wrong), [`control`] (the
//! backend's control connection, dialled again when lost).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use ::redis::aio::MultiplexedConnection;
use ::redis::{AsyncConnectionConfig, RedisConnectionInfo, Value};
use tokio::net::TcpStream;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::backend::ConnectOptions;
use crate::error::{AdapterError, fmt_duration};
use crate::net;

use super::resp;

mod control;
mod failure;
mod target;

pub(super) use self::control::Control;
pub(super) use self::failure::{Failure, describe, server_text, text};
pub(super) use self::target::{Target, URL_FORM};

/// Capacity of the redis crate's queue between a connection's handles and its driver task
/// (the crate's default is 50): commands (or pipelines) not yet taken by the driver. The
/// control connection carries the acks, claims and set-up requests of every subscription
/// of the backend at once, and they must not wait for room behind each other.
const PIPELINE_QUEUE: usize = 1024;

/// Bytes the driver gathers before it writes them to the socket (tokio_util's default is
/// 8 KiB). Larger batches mean fewer syscalls at high publish rates; the driver also
/// writes whenever its queue runs empty, so this adds no latency at low rates.
const WRITE_BATCH_BYTES: usize = 64 * 1024;

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
    /// [`ErrorKind::Connect`](crate::ErrorKind::Connect) when the server cannot be reached or does not answer;
    /// [`ErrorKind::Rejected`](crate::ErrorKind::Rejected) when it refuses the login or the database.
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

        let handshake = Handshake::new(target, prefix, role);
        let pipe = &handshake.pipe;
        let replies =
            match tokio::time::timeout_at(deadline, con.send_packed_commands(pipe, 0, pipe.len()))
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
                    return Err(silent(url, &peer, timeout));
                }
            };
        let checked = handshake.check(target, role, &replies);
        let (_, server_info) = match checked {
            Ok(found) => found,
            Err(error) => {
                driver.abort();
                return Err(error);
            }
        };
        Ok(Link {
            con,
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

/// The connect error for a server that did not answer the handshake in time.
fn silent(url: &str, peer: &str, timeout: std::time::Duration) -> AdapterError {
    AdapterError::connect(format!(
        "cannot connect to redis at {url} (connected to {peer}, but it did not answer within {})",
        fmt_duration(timeout)
    ))
}

/// The handshake of one connection: its pipeline, and which answer is which.
struct Handshake {
    pipe: ::redis::Pipeline,
    auth: Option<usize>,
    select: Option<usize>,
    setname: usize,
    /// `INFO server` (control) or `CLIENT ID` (reader).
    extra: Option<usize>,
}

impl Handshake {
    fn new(target: &Target, prefix: &str, role: Role<'_>) -> Handshake {
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
        Handshake {
            pipe,
            auth,
            select,
            setname,
            extra,
        }
    }

    /// Checks the answers; returns the client id (reader) and the server info (control).
    fn check(
        &self,
        target: &Target,
        role: Role<'_>,
        replies: &[Value],
    ) -> Result<(Option<i64>, Option<String>), AdapterError> {
        let url = &target.shown;
        let reply = |index: usize| replies.get(index).unwrap_or(&Value::Nil);
        check_handshake(
            target,
            reply(self.setname),
            self.auth.map(reply),
            self.select.map(reply),
        )?;
        match (role, self.extra) {
            (Role::Control, Some(index)) => Ok((None, text(reply(index)))),
            (Role::Reader(_), Some(index)) => match reply(index) {
                Value::Int(id) => Ok((Some(*id), None)),
                other => Err(AdapterError::protocol(format!(
                    "redis at {url} answered CLIENT ID with {other:?}, not a number"
                ))),
            },
            _ => Ok((None, None)),
        }
    }
}

/// Dials `target` and runs the handshake for `role` on the bare socket, without the redis
/// crate's connection: for a producer or a subscription's reader, which speak RESP on it
/// directly (see `wire`). Same handshake, same errors, same connect timeout as
/// [`Link::open`]. Returns the socket and, for a reader, its client id.
///
/// # Errors
///
/// As [`Link::open`].
pub(super) async fn open_stream(
    target: &Target,
    prefix: &str,
    role: Role<'_>,
    options: &ConnectOptions,
) -> Result<(TcpStream, Option<i64>), AdapterError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let timeout = options.connect_timeout;
    let deadline = Instant::now() + timeout;
    let url = &target.shown;
    let mut stream = net::dial("redis", url, &target.host_port, timeout).await?;
    let peer = stream
        .peer_addr()
        .map_or_else(|_| target.host_port.clone(), |a| a.to_string());
    let handshake = Handshake::new(target, prefix, role);
    let exchange = async {
        stream
            .write_all(&handshake.pipe.get_packed_pipeline())
            .await
            .map_err(|e| net::os_error(&e))?;
        let mut buf = Vec::with_capacity(1024);
        let mut replies = Vec::with_capacity(handshake.pipe.len());
        let mut at = 0;
        while replies.len() < handshake.pipe.len() {
            match resp::frame(&buf[at..]).map_err(|e| e.to_string())? {
                Some(frame) => {
                    let bytes = &buf[at..at + frame.len];
                    replies.push(::redis::parse_redis_value(bytes).map_err(|e| describe(&e))?);
                    at += frame.len;
                }
                None => {
                    if stream
                        .read_buf(&mut buf)
                        .await
                        .map_err(|e| net::os_error(&e))?
                        == 0
                    {
                        return Err("the server closed the connection".to_owned());
                    }
                }
            }
        }
        if at != buf.len() {
            return Err("the server sent more than the handshake's answers".to_owned());
        }
        Ok(replies)
    };
    let replies = match tokio::time::timeout_at(deadline, exchange).await {
        Ok(Ok(replies)) => replies,
        Ok(Err(why)) => {
            return Err(AdapterError::connect(format!(
                "cannot connect to redis at {url} (connected to {peer}, then: {why})"
            )));
        }
        Err(_) => return Err(silent(url, &peer, timeout)),
    };
    let (client_id, _) = handshake.check(target, role, &replies)?;
    Ok((stream, client_id))
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
