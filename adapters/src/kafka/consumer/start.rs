//! Start positions: where a partition starts reading for a [`StartPosition`].

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;

use super::context::SubContext;
use crate::subscription::StartPosition;

/// Where a partition starts when nothing is committed for it, from its watermarks
/// (ListOffsets; see the module documentation of `kafka` for what tansu 0.6 answers).
pub(super) fn start_offset(
    consumer: &BaseConsumer<SubContext>,
    topic: &str,
    partition: i32,
    start: StartPosition,
    timeout: Duration,
) -> Result<i64, KafkaError> {
    let (low, high) = consumer.fetch_watermarks(topic, partition, timeout)?;
    Ok(resolve_start(start, low, high))
}

/// The start offset for `start` in a partition holding offsets `low..high`: the end
/// for [`StartPosition::Latest`], the first retained offset for
/// [`StartPosition::Beginning`], `n + 1` kept inside `low..=high` for
/// [`StartPosition::AfterSequence`].
pub(crate) fn resolve_start(start: StartPosition, low: i64, high: i64) -> i64 {
    let low = low.max(0);
    let high = high.max(low);
    match start {
        StartPosition::Latest => high,
        StartPosition::Beginning => low,
        StartPosition::AfterSequence(n) => n.saturating_add(1).clamp(low, high),
    }
}
