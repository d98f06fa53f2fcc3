//! The acker: a manual-ack subscription's acks and nacks, sent in batches on the control
//! connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ::redis::{Value, cmd};
use parking_lot::Mutex;
use tokio::sync::{Notify, mpsc, oneshot};

use super::Member;
use crate::error::AdapterError;
use crate::redis_streams::entries;
use crate::redis_streams::link::Failure;

/// Most acks sent in one `XACK`.
const ACK_BATCH: usize = 1024;

/// What the acker task sends.
pub(super) enum AckRequest {
    Ack(Arc<str>),
    Nack(Arc<str>),
    /// Answered once everything queued before it was sent and answered.
    Flush(oneshot::Sender<()>),
}

/// The task that sends a manual-ack subscription's acks and nacks, in batches, on the
/// control connection.
pub(super) struct Acker {
    pub(super) member: Arc<Member>,
    pub(super) rx: mpsc::Receiver<AckRequest>,
    pub(super) rejected: Arc<AtomicU64>,
    pub(super) failure: Arc<Mutex<Option<AdapterError>>>,
    pub(super) claim_now: Arc<Notify>,
}

impl Acker {
    pub(super) async fn run(mut self) {
        let mut batch = Vec::with_capacity(ACK_BATCH);
        let mut ids: Vec<Arc<str>> = Vec::new();
        let mut nacking = false;
        while self.rx.recv_many(&mut batch, ACK_BATCH).await > 0 {
            for request in batch.drain(..) {
                let (id, nack) = match request {
                    AckRequest::Ack(id) => (id, false),
                    AckRequest::Nack(id) => (id, true),
                    AckRequest::Flush(done) => {
                        self.send(&mut ids, nacking).await;
                        let _ = done.send(());
                        continue;
                    }
                };
                // Acks and nacks go out in the order they were made.
                if nack != nacking || ids.len() >= ACK_BATCH {
                    self.send(&mut ids, nacking).await;
                }
                nacking = nack;
                ids.push(id);
            }
            self.send(&mut ids, nacking).await;
        }
    }

    /// `XACK <key> <group> <ids>`, or the nack's `XCLAIM ... IDLE ... JUSTID`; counts the
    /// ids the server did not hold as pending (any more) as rejected.
    async fn send(&self, ids: &mut Vec<Arc<str>>, nack: bool) {
        if ids.is_empty() {
            return;
        }
        let m = &self.member;
        let command = if nack {
            m.release(ids.iter().map(|id| &**id))
        } else {
            let mut ack = cmd("XACK");
            ack.arg(&*m.key).arg(&*m.group);
            for id in ids.iter() {
                ack.arg(&**id);
            }
            ack
        };
        let sent = ids.len() as u64;
        // Sent again once if the control connection is lost on the way (see `Control`).
        // Whether the lost sending reached the server is unknown, so the ids the second
        // one finds no longer pending are not counted as rejected: the first may have
        // acknowledged them.
        let mut answer = m.control.raw_once(&command).await;
        let resent = matches!(answer, Err(Failure::Lost(_)));
        if resent {
            answer = m.control.raw_once(&command).await;
        }
        match answer {
            Ok(value) => {
                let done = match (&value, nack) {
                    (Value::Int(n), false) => u64::try_from(*n).unwrap_or(0),
                    (value, true) => entries::count_ids(value) as u64,
                    _ => 0,
                };
                if !resent {
                    self.rejected
                        .fetch_add(sent.saturating_sub(done), Ordering::Relaxed);
                }
                if nack {
                    self.claim_now.notify_one();
                }
            }
            Err(Failure::Server { .. }) => {
                self.rejected.fetch_add(sent, Ordering::Relaxed);
            }
            Err(failure) => {
                let what = if nack { "nack" } else { "ack" };
                let mut slot = self.failure.lock();
                if slot.is_none() {
                    *slot = Some(m.error(what, failure));
                }
            }
        }
        ids.clear();
    }
}
