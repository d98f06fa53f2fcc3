//! Leaving: flushing acks, then destroying a fan-out group or deleting a member, after
//! releasing its unacknowledged entries to the rest of the group.

use ::redis::cmd;
use tokio::sync::oneshot;

use super::acker::AckRequest;
use super::reader::Reader;
use crate::error::AdapterError;
use crate::redis_streams::entries;

/// Pending entries released per `XPENDING` / `XCLAIM` pair when a member leaves.
const RELEASE_PAGE: usize = 1000;

impl Reader {
    /// Removes this subscription's consumer from the broker; see the module documentation.
    pub(super) async fn leave(&mut self) -> Result<(), AdapterError> {
        self.wire.end();
        let m = self.member.clone();
        // Acks queued before the unsubscribe still count (and must not meet a group
        // that is already gone).
        if let Some(acks) = self.acks.take() {
            let (done, flushed) = oneshot::channel();
            let flush = async move {
                if acks.send(AckRequest::Flush(done)).await.is_ok() {
                    let _ = flushed.await;
                }
            };
            let _ = tokio::time::timeout(self.request_timeout, flush).await;
        }
        if m.fan_out {
            let mut destroy = cmd("XGROUP");
            destroy.arg("DESTROY").arg(&*m.key).arg(&*m.group);
            return match m.control.raw(&destroy).await {
                Ok(_) => Ok(()),
                Err(failure) if failure.is_gone() => Ok(()),
                Err(failure) => Err(m.error("unsubscribe: XGROUP DESTROY", failure)),
            };
        }
        if self.manual && self.release_pending().await? > 0 {
            // Deleting the consumer would drop its pending entries; they are released to
            // the other members instead, and the empty consumer stays until the stream is
            // deleted.
            return Ok(());
        }
        let mut delete = cmd("XGROUP");
        delete
            .arg("DELCONSUMER")
            .arg(&*m.key)
            .arg(&*m.group)
            .arg(&*m.consumer);
        match m.control.raw(&delete).await {
            Ok(_) => Ok(()),
            Err(failure) if failure.is_gone() => Ok(()),
            Err(failure) => Err(m.error("unsubscribe: XGROUP DELCONSUMER", failure)),
        }
    }

    /// Makes this consumer's pending entries claimable by the other members now. Returns
    /// how many there were.
    async fn release_pending(&self) -> Result<usize, AdapterError> {
        let m = &self.member;
        let mut start = String::from("-");
        let mut released = 0;
        loop {
            let mut pending = cmd("XPENDING");
            pending
                .arg(&*m.key)
                .arg(&*m.group)
                .arg(&start)
                .arg("+")
                .arg(RELEASE_PAGE)
                .arg(&*m.consumer);
            let value = match m.control.raw(&pending).await {
                Ok(value) => value,
                Err(failure) if failure.is_gone() => return Ok(released),
                Err(failure) => return Err(m.error("unsubscribe: XPENDING", failure)),
            };
            let ids =
                entries::parse_pending_ids(&value).map_err(|e| self.garbled("XPENDING", &e))?;
            let Some(last) = ids.last() else {
                break;
            };
            let release = m.release(ids.iter().map(String::as_str));
            match m.control.raw(&release).await {
                Ok(_) => {}
                Err(failure) if failure.is_gone() => return Ok(released),
                Err(failure) => return Err(m.error("unsubscribe: XCLAIM", failure)),
            }
            released += ids.len();
            if ids.len() < RELEASE_PAGE {
                break;
            }
            start = format!("({last}");
        }
        Ok(released)
    }
}
