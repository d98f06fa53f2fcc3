//! A connection spoken directly in RESP (a producer's, a subscription's reading one): one
//! buffer that senders encode their commands into, written to the socket at once by the
//! sender itself when the socket takes it (no task switch), else by a writer task; and a
//! reader task that finds each reply and hands it to the sender it answers.
//!
//! ```text
//!  send (synchronous, under the lock) ──> out: Vec<u8>   +   waiting: [publish 1: 64 replies, publish 2: 1, ...]
//!     │ nobody writing: try_write now          │                        ▲
//!     │ (what the socket does not take:        │                        │ in order
//!     └──> writer task, which owns the writing until `out` is empty)    │
//!                                              ▼                        │
//!                                            socket ──> reader task: resp::frame, reply by reply
//! ```
//!
//! Redis answers the commands of one connection in the order it read them, so the n-th
//! reply belongs to the n-th command written, and commands are written in the order they
//! joined `out`. A publish joins `out` and `waiting` together, under one lock, in the
//! first poll of its future: the order of first polls is the order on the wire.
//!
//! Two kinds of senders. A publish ([`Wire::send`]) wants only "confirmed, or this
//! error": nothing is allocated per command, the entry ids are not kept, and an error
//! reply is the only one that becomes a value ([`Failure::Server`]). A read
//! ([`Wire::request`]) wants its replies whole: each is split off the read buffer as
//! [`Bytes`] without a copy, so the payloads of the entries it brings are slices of it.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use ::redis::Value;
use bytes::{Buf, Bytes, BytesMut};
use parking_lot::Mutex;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{Notify, oneshot};
use tokio_util::sync::CancellationToken;

use crate::net;
use crate::redis_streams::link::Failure;
use crate::redis_streams::resp::{self, Head};

/// What the writer's buffers start with: a batch of 256 XADDs of 100-byte payloads is
/// about 50 KiB.
const WRITE_BUFFER: usize = 64 * 1024;

/// A write buffer grown past this (by large payloads) is given back after its write, so
/// one burst of 1 MiB messages does not keep megabytes per producer.
const KEEP_WRITE_BUFFER: usize = 4 << 20;

/// Room the reader makes before each read (it grows for a larger reply).
const READ_BUFFER: usize = 64 * 1024;

/// The answers to one [`Wire::send`].
#[derive(Debug)]
pub(super) enum Answers {
    /// Every command was answered: the ones listed (by index) were refused, the rest
    /// confirmed.
    Replied(Vec<(usize, Failure)>),
    /// The connection broke before every answer came: the commands may have been
    /// carried out or not.
    Lost,
}

/// The connection, shared by its senders (a producer's publishes, a subscription's
/// reader) and its two tasks.
pub(super) struct Wire {
    state: Mutex<State>,
    /// Wakes the writer when `out` gets its first bytes.
    wake: Notify,
    /// Cancelled when the connection is over: it failed, or its owner ended it.
    over: CancellationToken,
    /// The socket's sending side. Written (`try_write`) only under the lock's `writing`
    /// rule, so writes never interleave.
    socket: OwnedWriteHalf,
}

struct State {
    /// Commands encoded and not yet taken by the writer.
    out: Vec<u8>,
    /// Who waits for replies, in the order of their commands on the wire.
    waiting: VecDeque<Waiter>,
    /// Why nothing more can be sent, once that is so.
    closed: Option<String>,
    /// The writer task owns the writing (it holds bytes taken from `out`, or the socket
    /// would not take more): a send only adds to `out`. When false, `out` is empty and
    /// a send writes its bytes itself.
    writing: bool,
}

/// One send still waiting for (some of) its replies.
struct Waiter {
    /// Commands sent.
    commands: usize,
    /// Replies read so far.
    replied: usize,
    want: Want,
}

/// What a waiter keeps of its replies, and where they go.
enum Want {
    /// The refusals (a publish).
    Refusals {
        refused: Vec<(usize, Failure)>,
        reply: oneshot::Sender<Answers>,
    },
    /// Every reply, whole; `Err` says why the connection broke first.
    Whole {
        replies: Vec<Bytes>,
        reply: oneshot::Sender<Result<Vec<Bytes>, String>>,
    },
}

impl Waiter {
    /// All replies are in: hands them over.
    fn answer(self) {
        match self.want {
            Want::Refusals { refused, reply } => {
                let _ = reply.send(Answers::Replied(refused));
            }
            Want::Whole { replies, reply } => {
                let _ = reply.send(Ok(replies));
            }
        }
    }

    /// The connection broke first.
    fn lose(self, why: &str) {
        match self.want {
            Want::Refusals { reply, .. } => {
                let _ = reply.send(Answers::Lost);
            }
            Want::Whole { reply, .. } => {
                let _ = reply.send(Err(why.to_owned()));
            }
        }
    }
}

impl Wire {
    /// Takes over `stream` (handshake done) and starts the writer and reader tasks.
    pub(super) fn start(stream: TcpStream) -> Arc<Wire> {
        let (read, write) = stream.into_split();
        let wire = Arc::new(Wire {
            state: Mutex::new(State {
                out: Vec::with_capacity(WRITE_BUFFER),
                waiting: VecDeque::new(),
                closed: None,
                writing: false,
            }),
            wake: Notify::new(),
            over: CancellationToken::new(),
            socket: write,
        });
        tokio::spawn(wire.clone().write());
        tokio::spawn(wire.clone().read(read));
        wire
    }

    /// Sends `commands` commands, which `encode` appends to the buffer, and returns where
    /// their answers will come. Synchronous: the commands are in line when this returns.
    ///
    /// # Errors
    ///
    /// Why the connection can no longer carry anything (nothing was sent).
    pub(super) fn send(
        &self,
        commands: usize,
        encode: impl FnOnce(&mut Vec<u8>),
    ) -> Result<oneshot::Receiver<Answers>, String> {
        let (reply, answers) = oneshot::channel();
        let want = Want::Refusals {
            refused: Vec::new(),
            reply,
        };
        self.enqueue(commands, want, encode)?;
        Ok(answers)
    }

    /// Sends `commands` commands, which `encode` appends to the buffer, and returns where
    /// their replies will come, whole (`Err`: why the connection broke before them).
    /// Synchronous, like [`send`](Wire::send).
    ///
    /// # Errors
    ///
    /// Why the connection can no longer carry anything (nothing was sent).
    pub(super) fn request(
        &self,
        commands: usize,
        encode: impl FnOnce(&mut Vec<u8>),
    ) -> Result<oneshot::Receiver<Result<Vec<Bytes>, String>>, String> {
        let (reply, replies) = oneshot::channel();
        let want = Want::Whole {
            replies: Vec::with_capacity(commands),
            reply,
        };
        self.enqueue(commands, want, encode)?;
        Ok(replies)
    }

    /// Sends the commands of `pipe` and waits for their replies as the redis crate's
    /// values, within `timeout` (for the rare requests whose replies the crate's parsing
    /// suits: claims). Error replies stay among the values as `Value::ServerError`.
    ///
    /// # Errors
    ///
    /// [`Failure::Lost`] when the connection is or gets lost, [`Failure::Timeout`].
    pub(super) async fn request_values(
        &self,
        pipe: &::redis::Pipeline,
        timeout: Duration,
    ) -> Result<Vec<Value>, Failure> {
        let replies = self
            .request(pipe.len(), |out| {
                out.extend_from_slice(&pipe.get_packed_pipeline());
            })
            .map_err(Failure::Lost)?;
        let replies = match tokio::time::timeout(timeout, replies).await {
            Ok(Ok(Ok(replies))) => replies,
            Ok(Ok(Err(why))) => return Err(Failure::Lost(why)),
            Ok(Err(_)) => return Err(Failure::Lost("the connection is closed".to_owned())),
            Err(_) => return Err(Failure::Timeout(timeout)),
        };
        replies
            .iter()
            .map(|reply| {
                ::redis::parse_redis_value(reply).map_err(|e| Failure::Lost(e.to_string()))
            })
            .collect()
    }

    /// Adds a waiter and its commands; writes them at once when nobody is writing.
    fn enqueue(
        &self,
        commands: usize,
        want: Want,
        encode: impl FnOnce(&mut Vec<u8>),
    ) -> Result<(), String> {
        let mut state = self.state.lock();
        if let Some(reason) = &state.closed {
            return Err(reason.clone());
        }
        encode(&mut state.out);
        state.waiting.push_back(Waiter {
            commands,
            replied: 0,
            want,
        });
        if state.writing {
            // The writer takes these with what it writes next.
            return Ok(());
        }
        // Nobody writing: write now, from this task; the writer only takes what the
        // socket does not.
        let failed = match self.socket.try_write(&state.out) {
            Ok(n) if n == state.out.len() => {
                state.out.clear();
                None
            }
            Ok(n) => {
                state.out.drain(..n);
                state.writing = true;
                None
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                state.writing = true;
                None
            }
            Err(e) => Some(net::os_error(&e)),
        };
        let wake = state.writing;
        drop(state);
        if let Some(why) = failed {
            // The waiter just added hears it (Lost): its commands may be half-written.
            self.fail(&why);
        } else if wake {
            self.wake.notify_one();
        }
        Ok(())
    }

    /// Ends both tasks, which closes the socket once the last handle is gone (the
    /// producer and its publishes are gone, the subscription is leaving).
    pub(super) fn end(&self) {
        self.over.cancel();
    }

    /// The connection failed: every sender waiting hears it ([`Answers::Lost`], or the
    /// reason), later sends are refused with the reason, and both tasks end.
    fn fail(&self, why: &str) {
        let waiting = {
            let mut state = self.state.lock();
            if state.closed.is_none() {
                // The cause alone: every caller says whose connection it was.
                state.closed = Some(why.to_owned());
            }
            state.out = Vec::new();
            std::mem::take(&mut state.waiting)
        };
        self.over.cancel();
        for waiter in waiting {
            waiter.lose(why);
        }
    }

    /// The writer task: while it owns the writing, writes what gathered in `out` (in one
    /// write when the socket takes it), while the next commands gather in the other
    /// buffer; hands the writing back to the sends once `out` is empty.
    async fn write(self: Arc<Wire>) {
        let mut spare = Vec::with_capacity(WRITE_BUFFER);
        loop {
            let some = {
                let mut state = self.state.lock();
                if state.writing && state.out.is_empty() {
                    state.writing = false;
                }
                if state.writing {
                    std::mem::swap(&mut state.out, &mut spare);
                }
                state.writing
            };
            if !some {
                tokio::select! {
                    () = self.over.cancelled() => return,
                    () = self.wake.notified() => continue,
                }
            }
            let written = tokio::select! {
                () = self.over.cancelled() => return,
                written = self.write_all(&spare) => written,
            };
            if let Err(e) = written {
                return self.fail(&net::os_error(&e));
            }
            spare.clear();
            if spare.capacity() > KEEP_WRITE_BUFFER {
                spare = Vec::with_capacity(WRITE_BUFFER);
            }
        }
    }

    /// Writes all of `bytes`, waiting whenever the socket takes no more.
    async fn write_all(&self, mut bytes: &[u8]) -> std::io::Result<()> {
        while !bytes.is_empty() {
            self.socket.writable().await?;
            match self.socket.try_write(bytes) {
                Ok(n) => bytes = &bytes[n..],
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The reader task: reads replies and hands each to the sender it answers.
    async fn read(self: Arc<Wire>, mut half: OwnedReadHalf) {
        let mut buf = BytesMut::with_capacity(READ_BUFFER);
        let mut done = Vec::new();
        loop {
            buf.reserve(READ_BUFFER / 2);
            let read = tokio::select! {
                biased;
                () = self.over.cancelled() => return,
                read = half.read_buf(&mut buf) => read,
            };
            match read {
                Ok(0) => return self.fail("the server closed the connection"),
                Err(e) => return self.fail(&net::os_error(&e)),
                Ok(_) => {}
            }
            if let Err(why) = self.deliver(&mut buf, &mut done) {
                return self.fail(&why);
            }
            // Woken outside the lock, so a publish woken on another thread does not
            // wait for it.
            for waiter in done.drain(..) {
                waiter.answer();
            }
        }
    }

    /// Takes the complete replies at the start of `buf` off it, each to the command it
    /// answers; moves every waiter fully answered to `done`.
    fn deliver(&self, buf: &mut BytesMut, done: &mut Vec<Waiter>) -> Result<(), String> {
        let mut state = self.state.lock();
        loop {
            let (len, refusal) = match resp::frame(buf).map_err(|e| e.to_string())? {
                None => return Ok(()),
                Some(frame) => (
                    frame.len,
                    match frame.head {
                        Head::Error(line) => Some(refusal(line)),
                        Head::Value => None,
                    },
                ),
            };
            let Some(waiter) = state.waiting.front_mut() else {
                return Err("the server sent a reply to no command".to_owned());
            };
            match &mut waiter.want {
                Want::Refusals { refused, .. } => {
                    if let Some(refusal) = refusal {
                        refused.push((waiter.replied, refusal));
                    }
                    buf.advance(len);
                }
                Want::Whole { replies, .. } => replies.push(buf.split_to(len).freeze()),
            }
            waiter.replied += 1;
            if waiter.replied == waiter.commands {
                done.extend(state.waiting.pop_front());
            }
        }
    }
}

/// An error reply as a [`Failure::Server`]: its code, and the line as `redis-cli` shows it.
pub(super) fn refusal(line: &[u8]) -> Failure {
    Failure::Server {
        code: String::from_utf8_lossy(resp::error_code(line)).into_owned(),
        text: String::from_utf8_lossy(line).into_owned(),
    }
}
