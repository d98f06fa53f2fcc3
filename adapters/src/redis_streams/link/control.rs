//! The backend's control connection, dialled again when it is lost.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ::redis::aio::MultiplexedConnection;
use ::redis::{Cmd, Pipeline, Value};

use super::failure::{Failure, request, request_pipe};
use super::target::Target;
use super::{Link, Role};
use crate::backend::ConnectOptions;
use crate::error::AdapterError;

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
pub(in crate::redis_streams) struct Control {
    /// The URL with the password hidden, for messages.
    pub(in crate::redis_streams) url: Arc<str>,
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
    pub(in crate::redis_streams) fn new(
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
    pub(in crate::redis_streams) async fn raw_once(&self, cmd: &Cmd) -> Result<Value, Failure> {
        let (mut con, generation) = self.connection().await?;
        let result = request(&mut con, cmd, self.timeout()).await;
        self.note(generation, &result);
        result
    }

    /// Sends `cmd` and waits for its answer, within the request timeout; when the
    /// connection turns out to be lost, sends it once more on a new one. Only for commands
    /// that may reach the server twice (see [`Control`]).
    pub(in crate::redis_streams) async fn raw(&self, cmd: &Cmd) -> Result<Value, Failure> {
        match self.raw_once(cmd).await {
            Err(Failure::Lost(_)) => self.raw_once(cmd).await,
            other => other,
        }
    }

    /// Sends `pipe` and waits for every answer, within the request timeout; resent once
    /// on a new connection like [`raw`](Self::raw).
    pub(in crate::redis_streams) async fn raw_pipe(
        &self,
        pipe: &Pipeline,
    ) -> Result<Vec<Value>, Failure> {
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
    pub(in crate::redis_streams) async fn call(
        &self,
        what: &str,
        cmd: &Cmd,
    ) -> Result<Value, AdapterError> {
        self.raw(cmd)
            .await
            .map_err(|failure| failure.into_error(what, &self.url))
    }
}
