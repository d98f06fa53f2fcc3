//! Publishing: one `XADD` per message, pipelined on the producer's own connection, which
//! the adapter speaks in RESP itself (`super::wire`).
//!
//! ```text
//! XADD <topic> [MAXLEN = <max_messages>] * payload <bytes> [key <key>]
//!   -> "1700000000000-0"        the entry id: the broker's confirmation
//! ```
//!
//! ```text
//!  publish / publish_batch futures ──(first poll: encode into the connection's buffer, synchronously)
//!        ▲                                         │
//!        │                           writer task: everything gathered, one write
//!        │                                         ▼
//!        └──(one answer per publish or batch)── reader task: replies, in order
//! ```
//!
//! A [`publish_batch`](crate::Producer::publish_batch) is one reply channel and one timer for
//! all its messages, and its commands are encoded together into the connection's write
//! buffer at the first poll of its future; a single [`publish`](crate::Producer::publish) is the
//! same with one command. The writer takes whatever has gathered (any number of batches)
//! and writes it at once, while the next commands gather in its other buffer. Joining the
//! buffer is synchronous, so the order of first polls is the order on the wire.
//!
//! Why not the redis crate's `MultiplexedConnection`, as the control and reading
//! connections use: per command it builds a `Cmd` (an allocation per argument), a queue
//! entry and, per reply, a `Value` tree (an allocation per string), which was most of a
//! producer's CPU at a few hundred thousand publishes per second. A publisher needs only
//! "confirmed, or this error". The handshake is the same as elsewhere
//! ([`link::open_stream`](super::link::open_stream)).
//!
//! Outcomes: the entry id is `Ok`; an error reply (`WRONGTYPE`, `OOM`, ...) is `Failed`;
//! no reply within the publish timeout is `Unknown`, and so is a connection that breaks
//! while the command may already have been written. Once the connection is known to be
//! gone, later publishes fail at once without being sent (`Failed`): the producer does
//! not reconnect.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::entries::{FIELD_KEY, FIELD_PAYLOAD};
use super::link::Failure;
use super::resp::{put_array, put_bulk, put_bulk_decimal};
use super::topics::Topics;
use super::wire::{Answers, Wire};
use crate::publish::{BatchPublisher, PublishOutcome, PublishRequest};

/// A producer: its connection, and what its publishes share.
pub(super) struct RedisPublisher {
    shared: Arc<Shared>,
}

struct Shared {
    wire: Arc<Wire>,
    topics: Arc<Topics>,
    timeout: Duration,
    url: Arc<str>,
}

impl Drop for Shared {
    /// The producer and every publish of it are gone: close the connection.
    fn drop(&mut self) {
        self.wire.end();
    }
}

impl Shared {
    /// A publish to `topic` refused by the server.
    fn refused(&self, topic: &str, failure: Failure) -> PublishOutcome {
        match failure {
            Failure::Server { text, .. } => PublishOutcome::Failed(format!(
                "redis at {} refused the XADD to {topic}: {text}",
                self.url
            )),
            // Not made by the wire: only error replies are refusals.
            _ => PublishOutcome::Unknown,
        }
    }

    /// Sends `requests` in one go and waits for their answers, at most the publish
    /// timeout.
    async fn publish(&self, requests: &[PublishRequest]) -> Vec<PublishOutcome> {
        let every = |outcome: PublishOutcome| vec![outcome; requests.len()];
        let deadline = Instant::now() + self.timeout;
        let sent = self.wire.send(requests.len(), |out| {
            // Batches usually go to one topic: its limit is looked up once.
            let mut limit: Option<(&Arc<str>, Option<u64>)> = None;
            for request in requests {
                let max_len = match limit {
                    Some((topic, max_len)) if Arc::ptr_eq(topic, &request.topic) => max_len,
                    _ => {
                        let max_len = self.topics.touch(&request.topic);
                        limit = Some((&request.topic, max_len));
                        max_len
                    }
                };
                xadd(out, request, max_len);
            }
        });
        let answers = match sent {
            Ok(answers) => answers,
            Err(reason) => {
                return every(PublishOutcome::Failed(format!(
                    "not sent: the connection to redis at {} failed: {reason}",
                    self.url
                )));
            }
        };
        match tokio::time::timeout_at(deadline, answers).await {
            Ok(Ok(Answers::Replied(refused))) => {
                let mut outcomes = every(PublishOutcome::Ok);
                for (index, failure) in refused {
                    outcomes[index] = self.refused(&requests[index].topic, failure);
                }
                outcomes
            }
            // Written, perhaps, and then the connection broke; or no answer in time.
            Ok(Ok(Answers::Lost) | Err(_)) | Err(_) => every(PublishOutcome::Unknown),
        }
    }
}

impl RedisPublisher {
    /// A producer publishing on `stream`, a connection whose handshake is done; starts
    /// its writer and reader tasks.
    pub(super) fn start(
        stream: TcpStream,
        topics: Arc<Topics>,
        timeout: Duration,
        url: Arc<str>,
    ) -> RedisPublisher {
        let shared = Arc::new(Shared {
            wire: Wire::start(stream),
            topics,
            timeout,
            url,
        });
        RedisPublisher { shared }
    }
}

impl BatchPublisher for RedisPublisher {
    /// One pipeline for the whole batch: the commands join the connection's buffer
    /// together and go out in one write, with one timer and one reply channel for all.
    fn publish_all(
        &self,
        requests: Vec<PublishRequest>,
    ) -> BoxFuture<'static, Vec<PublishOutcome>> {
        let shared = self.shared.clone();
        Box::pin(async move {
            if requests.is_empty() {
                return Vec::new();
            }
            shared.publish(&requests).await
        })
    }
}

/// Appends `XADD <topic> [MAXLEN = n] * payload <bytes> [key <key>]` to `out`.
///
/// Trimming is exact (`=`), not approximate (`~`): with `~` Redis only drops whole radix
/// tree nodes (100 entries each by default), so a stream may hold noticeably more than
/// the limit, and a late reader would see more than "the retained tail". Exact trimming
/// costs a little more per append once the stream is full; the limit is only set when a
/// scenario asks for one.
fn xadd(out: &mut Vec<u8>, request: &PublishRequest, max_len: Option<u64>) {
    let args =
        5 + if max_len.is_some() { 3 } else { 0 } + if request.key.is_some() { 2 } else { 0 };
    put_array(out, args);
    put_bulk(out, b"XADD");
    put_bulk(out, request.topic.as_bytes());
    if let Some(max) = max_len {
        put_bulk(out, b"MAXLEN");
        put_bulk(out, b"=");
        put_bulk_decimal(out, max);
    }
    put_bulk(out, b"*");
    put_bulk(out, FIELD_PAYLOAD.as_bytes());
    put_bulk(out, &request.payload);
    if let Some(key) = &request.key {
        put_bulk(out, FIELD_KEY.as_bytes());
        put_bulk(out, key.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bytes the redis crate writes for the same arguments.
    fn packed(args: &[&[u8]]) -> Vec<u8> {
        let mut cmd = ::redis::Cmd::new();
        for arg in args {
            cmd.arg(*arg);
        }
        cmd.get_packed_command()
    }

    fn encoded(request: &PublishRequest, max_len: Option<u64>) -> Vec<u8> {
        let mut out = Vec::new();
        xadd(&mut out, request, max_len);
        out
    }

    #[test]
    fn xadd_carries_payload_key_and_exact_trim() {
        let req = PublishRequest::new("bb.r.t", "hi").key("k1");
        assert_eq!(
            encoded(&req, Some(10)),
            packed(&[
                b"XADD", b"bb.r.t", b"MAXLEN", b"=", b"10", b"*", b"payload", b"hi", b"key", b"k1"
            ])
        );
        let req = PublishRequest::new("bb.r.t", &b"\x00\xff\r\n"[..]);
        assert_eq!(
            encoded(&req, None),
            packed(&[b"XADD", b"bb.r.t", b"*", b"payload", b"\x00\xff\r\n"])
        );
    }

    #[test]
    fn commands_of_a_batch_follow_each_other() {
        let a = PublishRequest::new("t", "a");
        let b = PublishRequest::new("t", "b").key("k");
        let mut out = Vec::new();
        xadd(&mut out, &a, None);
        xadd(&mut out, &b, Some(3));
        let mut both = encoded(&a, None);
        both.extend(encoded(&b, Some(3)));
        assert_eq!(out, both);
    }
}
