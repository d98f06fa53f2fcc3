//! Start positions: where a partition starts reading for a [`StartPosition`].

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};

use super::METADATA_RETRY;
use super::context::SubContext;
use crate::error::AdapterError;
use crate::subscription::StartPosition;

/// Fan-out: assigns every partition of the topic to `consumer`, at the start its
/// context asks for, resolved to explicit offsets (see the module documentation of
/// `consumer` for why), then signals that it is ready.
///
/// # Errors
///
/// [`ErrorKind::Closed`](crate::ErrorKind::Closed) when the topic's partitions or
/// their watermarks cannot be read within the request timeout, or the assignment fails.
pub(super) fn assign_all(consumer: &BaseConsumer<SubContext>) -> Result<(), AdapterError> {
    let ctx = consumer.context().clone();
    let topic: &str = &ctx.topic;
    let fail = |doing: &str, e: &dyn std::fmt::Display| {
        AdapterError::closed(format!("{}: {doing}: {e}", ctx.what))
    };
    let deadline = Instant::now() + ctx.timeout;
    let left = || deadline.saturating_duration_since(Instant::now());
    // The topic exists (it was ensured); a broker that has not caught up with its
    // creation yet shows it without partitions for a moment.
    let partitions: Vec<i32> = loop {
        let metadata = consumer
            .fetch_metadata(Some(topic), left())
            .map_err(|e| fail("reading the topic's partitions", &e))?;
        let partitions: Vec<i32> = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic && t.error().is_none())
            .map(|t| t.partitions().iter().map(|p| p.id()).collect())
            .unwrap_or_default();
        if !partitions.is_empty() {
            break partitions;
        }
        if left() < METADATA_RETRY {
            return Err(AdapterError::closed(format!(
                "{}: the topic has no partitions in the broker's metadata",
                ctx.what
            )));
        }
        std::thread::sleep(METADATA_RETRY);
    };
    let mut assignment = TopicPartitionList::with_capacity(partitions.len());
    for partition in partitions {
        let offset = match ctx.start {
            // Resolved by librdkafka to the first retained offset, which a publish
            // cannot move.
            StartPosition::Beginning => Offset::Beginning,
            start => Offset::Offset(
                start_offset(consumer, topic, partition, start, left()).map_err(|e| {
                    fail(&format!("finding where partition {partition} starts"), &e)
                })?,
            ),
        };
        assignment
            .add_partition_offset(topic, partition, offset)
            .map_err(|e| fail("building the assignment", &e))?;
    }
    consumer
        .assign(&assignment)
        .map_err(|e| fail("assigning the partitions", &e))?;
    ctx.signal_ready(Ok(()));
    Ok(())
}

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
