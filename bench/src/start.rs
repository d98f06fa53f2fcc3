//! Starting a run's clock at a wall-clock instant shared by several processes
//! (`--start-at`): every shard of a sharded run sets up, then begins its warm-up so that
//! its measured phase starts exactly at that instant.
//!
//! The engine's clock is monotonic (`Instant`); the shared instant is wall-clock time
//! (`SystemTime`, kept in step across machines by NTP or PTP). The instant is turned into
//! an `Instant` once, right after set-up, by reading both clocks together; from then on
//! the run follows the monotonic clock as usual.

use std::time::{Duration, Instant, SystemTime};

use time::OffsetDateTime;

/// Set-up finished too late: the warm-up could not start before the shared instant
/// minus the warm-up, so the measured phase would not begin at the instant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "not ready in time: the measured phase was to start at {start}, so the {warmup:?} warm-up at {warmup_start}, but set-up finished {late_by:?} after that; give a later --start-at (or a shorter warm-up)"
)]
pub struct NotReady {
    /// The requested start of the measured phase, RFC 3339.
    pub start: String,
    /// The requested start of the warm-up, RFC 3339.
    pub warmup_start: String,
    /// The warm-up.
    pub warmup: Duration,
    /// How late set-up finished.
    pub late_by: Duration,
}

/// Where the run clock starts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClockStart {
    /// The epoch: start of the warm-up, on the monotonic clock.
    pub epoch: Instant,
    /// Wall-clock start of the measured phase (epoch + warm-up).
    pub measured_from: OffsetDateTime,
    /// With a start instant: how much time remained between the end of set-up and the
    /// start of the warm-up.
    pub slack: Option<Duration>,
}

/// The clock start of a run whose set-up just finished: `lead` from now without a start
/// instant; with one, `warmup` before it.
///
/// # Errors
/// [`NotReady`] when `start_at - warmup` is less than `lead` away.
pub(crate) fn clock_start(
    start_at: Option<SystemTime>,
    warmup: Duration,
    lead: Duration,
) -> Result<ClockStart, NotReady> {
    let now = Instant::now();
    let wall = SystemTime::now();
    // Every instant passed is at or after `now`.
    let wall_of = |at: Instant| OffsetDateTime::from(wall + at.saturating_duration_since(now));
    let Some(start_at) = start_at else {
        let epoch = now + lead;
        return Ok(ClockStart {
            epoch,
            measured_from: wall_of(epoch + warmup),
            slack: None,
        });
    };
    let warmup_start = start_at.checked_sub(warmup).unwrap_or(start_at);
    let ready_at = wall + lead;
    match warmup_start.duration_since(ready_at) {
        Ok(slack) => {
            let epoch = now + lead + slack;
            Ok(ClockStart {
                epoch,
                measured_from: wall_of(epoch + warmup),
                slack: Some(slack),
            })
        }
        Err(late) => Err(NotReady {
            start: rfc3339(start_at),
            warmup_start: rfc3339(warmup_start),
            warmup,
            late_by: late.duration(),
        }),
    }
}

fn rfc3339(t: SystemTime) -> String {
    OffsetDateTime::from(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| format!("{t:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEAD: Duration = Duration::from_millis(50);

    #[test]
    fn without_an_instant_the_clock_starts_after_the_lead() {
        let before = Instant::now();
        let start = clock_start(None, Duration::from_secs(2), LEAD).unwrap();
        assert!(start.epoch >= before + LEAD);
        assert!(start.slack.is_none());
    }

    #[test]
    fn the_measured_phase_starts_at_the_instant() {
        let at = SystemTime::now() + Duration::from_secs(30);
        let start = clock_start(Some(at), Duration::from_secs(2), LEAD).unwrap();
        let offset = (start.measured_from - OffsetDateTime::from(at)).abs();
        // Reading two clocks one after the other: microseconds apart, far below 10 ms.
        assert!(offset < time::Duration::milliseconds(10), "{offset}");
        let slack = start.slack.unwrap();
        assert!(slack > Duration::from_secs(27) && slack < Duration::from_secs(28));
    }

    #[test]
    fn an_instant_too_close_for_the_warmup_is_refused() {
        let at = SystemTime::now() + Duration::from_secs(1);
        let err = clock_start(Some(at), Duration::from_secs(2), LEAD).unwrap_err();
        assert!(err.late_by >= Duration::from_millis(900), "{err:?}");
        let text = err.to_string();
        assert!(text.starts_with("not ready in time"), "{text}");
        assert!(text.contains("give a later --start-at"), "{text}");
    }
}
