//! Redelivery after the ack wait: `XAUTOCLAIM` of entries idle that long, and `XPENDING`
//! for their delivery count.

use ::redis::cmd;

use super::reader::Reader;
use crate::error::AdapterError;
use crate::redis_streams::entries;
use crate::subscription::Batch;
use tokio::time::Instant;

/// Entries one `XAUTOCLAIM` call may claim.
const CLAIM_COUNT: usize = 256;

/// `XAUTOCLAIM` calls per claim round at most; the rest waits for the next round.
const MAX_CLAIM_CALLS: usize = 16;

impl Reader {
    /// One claim round: moves entries idle for the ack wait to this consumer and delivers
    /// them as redeliveries. `Ok(false)`: the subscription is gone.
    pub(super) async fn claim(&mut self) -> Result<bool, AdapterError> {
        self.next_claim = Instant::now() + self.claim_interval;
        let m = self.member.clone();
        let mut cursor = String::from("0-0");
        for _ in 0..MAX_CLAIM_CALLS {
            let mut autoclaim = cmd("XAUTOCLAIM");
            autoclaim
                .arg(&*m.key)
                .arg(&*m.group)
                .arg(&*m.consumer)
                .arg(m.ack_wait_ms())
                .arg(&cursor)
                .arg("COUNT")
                .arg(CLAIM_COUNT);
            let value = self
                .request(autoclaim)
                .await
                .map_err(|failure| self.read_error(failure))?;
            let received_at = std::time::Instant::now();
            let claimed =
                entries::parse_autoclaim(value).map_err(|e| self.garbled("XAUTOCLAIM", &e))?;
            if !claimed.entries.is_empty() {
                // The delivery count, which XAUTOCLAIM just incremented.
                let mut pending = ::redis::pipe();
                for entry in &claimed.entries {
                    pending
                        .cmd("XPENDING")
                        .arg(&*m.key)
                        .arg(&*m.group)
                        .arg(&*entry.id)
                        .arg(&*entry.id)
                        .arg(1);
                }
                let counts = self
                    .wire
                    .request_values(&pending, self.request_timeout)
                    .await
                    .map_err(|failure| m.error("XPENDING", failure))?;
                let batch = claimed
                    .entries
                    .into_iter()
                    .zip(counts.iter().map(Some).chain(std::iter::repeat(None)))
                    .map(|(entry, count)| {
                        let attempt = count
                            .and_then(entries::parse_delivery_count)
                            .map(|n| u32::try_from(n).unwrap_or(u32::MAX));
                        self.delivery(entry, received_at, true, attempt)
                    })
                    .collect();
                if !self.send(Batch::Many(batch)).await {
                    return Ok(false);
                }
            }
            if claimed.cursor == "0-0" {
                break;
            }
            cursor = claimed.cursor;
        }
        Ok(true)
    }
}
