//! The consumer's context: readiness, and the rebalance callback of a group member
//! (positions, start commits, commits on revoke).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::watch;

use super::acks::{AckBook, PartitionAcks, parse_delivered};
use super::start::start_offset;
use crate::error::AdapterError;
use crate::subscription::StartPosition;

/// Whether a consumer is ready: `None` while it starts, then `Ok`, or why it cannot be.
pub(super) type Readiness = Option<Result<(), AdapterError>>;

/// The consumer's context: readiness, rebalances, manual-ack bookkeeping.
pub(super) struct SubContext {
    pub(super) topic: Arc<str>,
    /// "subscription to T [in group G (kafka group K)] on kafka at URL", for messages.
    pub(super) what: String,
    /// Whether this consumer is a member of a shared group (competing consumers).
    pub(super) member: bool,
    /// Whether acks are manual.
    pub(super) manual: bool,
    pub(super) start: StartPosition,
    /// The request timeout.
    pub(super) timeout: Duration,
    /// Set once the consumer reads from fixed positions, or to why it cannot; every
    /// subscription waiting for this consumer watches it.
    pub(super) ready: watch::Sender<Readiness>,
    pub(super) acks: Mutex<AckBook>,
    /// Whether the reader paused its partitions (back-pressure); a rebalance keeps
    /// newly assigned partitions paused too.
    pub(super) paused: AtomicBool,
}

impl SubContext {
    pub(super) fn tracks_acks(&self) -> bool {
        self.member && self.manual
    }

    /// Sets the readiness, unless it is set already.
    pub(super) fn signal_ready(&self, result: Result<(), AdapterError>) {
        self.ready.send_if_modified(|ready| {
            if ready.is_some() {
                return false;
            }
            *ready = Some(result);
            true
        });
    }

    pub(super) fn is_ready_pending(&self) -> bool {
        self.ready.borrow().is_none()
    }

    /// Takes over `offered` partitions at fixed positions: the committed offset, or the
    /// resolved start (committed at once). If the positions cannot be found, it still
    /// takes the partitions, from their committed offsets (librdkafka looks them up;
    /// `auto.offset.reset=earliest` where there are none), so the group does not stall
    /// on this member; the error then says why this member may not be ready.
    fn on_assign(
        &self,
        consumer: &BaseConsumer<Self>,
        offered: &TopicPartitionList,
    ) -> Result<(), AdapterError> {
        let fail = |doing: &str, e: &dyn std::fmt::Display| {
            AdapterError::closed(format!("{}: {doing}: {e}", self.what))
        };
        let (assignment, fresh) = match self.positions(consumer, offered) {
            Ok(positions) => positions,
            Err(error) => {
                let _ = consumer.assign(offered);
                return Err(error);
            }
        };
        if let Err(e) = consumer.assign(&assignment) {
            let _ = consumer.assign(offered);
            return Err(fail("taking the assigned partitions", &e));
        }
        if self.paused.load(Ordering::Acquire) {
            let _ = consumer.pause(&assignment);
        }
        if fresh.count() > 0 {
            consumer
                .commit(&fresh, CommitMode::Sync)
                .map_err(|e| fail("committing the start offsets", &e))?;
        }
        Ok(())
    }

    /// The positions of `offered` partitions (committed or resolved), and those of them
    /// that were resolved (to commit); sets up the ack bookkeeping.
    fn positions(
        &self,
        consumer: &BaseConsumer<Self>,
        offered: &TopicPartitionList,
    ) -> Result<(TopicPartitionList, TopicPartitionList), AdapterError> {
        let fail = |doing: &str, e: &dyn std::fmt::Display| {
            AdapterError::closed(format!("{}: {doing}: {e}", self.what))
        };
        let topic: &str = &self.topic;
        let committed = if offered.count() == 0 {
            TopicPartitionList::new()
        } else {
            consumer
                .committed_offsets(offered.clone(), self.timeout)
                .map_err(|e| fail("reading the group's committed offsets", &e))?
        };
        let mut assignment = TopicPartitionList::with_capacity(committed.count());
        let mut fresh = TopicPartitionList::new();
        let mut owned = Vec::with_capacity(committed.count());
        for elem in committed.elements() {
            let partition = elem.partition();
            let (start, delivered_before) = match elem.offset() {
                Offset::Offset(offset) if offset >= 0 => (offset, parse_delivered(elem.metadata())),
                _ => {
                    let start = start_offset(consumer, topic, partition, self.start, self.timeout)
                        .map_err(|e| {
                            fail(&format!("finding where partition {partition} starts"), &e)
                        })?;
                    fresh
                        .add_partition_offset(topic, partition, Offset::Offset(start))
                        .map_err(|e| fail("building the start offsets", &e))?;
                    (start, None)
                }
            };
            assignment
                .add_partition_offset(topic, partition, Offset::Offset(start))
                .map_err(|e| fail("building the assignment", &e))?;
            owned.push((partition, PartitionAcks::new(start, delivered_before)));
        }
        if self.tracks_acks() {
            let mut book = self.acks.lock();
            book.partitions.clear();
            book.partitions.extend(owned);
        }
        Ok((assignment, fresh))
    }

    /// Gives up `revoked` partitions: commits what was consumed (automatic acks) or what
    /// was acknowledged (manual acks, with the highest offset handed out as metadata).
    fn on_revoke(&self, consumer: &BaseConsumer<Self>, revoked: &TopicPartitionList) {
        if self.tracks_acks() {
            let partitions: Vec<i32> = revoked.elements().iter().map(|e| e.partition()).collect();
            let mut commits = TopicPartitionList::new();
            {
                let mut book = self.acks.lock();
                book.commits(&self.topic, Some(&partitions), true, &mut commits);
                for partition in &partitions {
                    book.partitions.remove(partition);
                }
            }
            if commits.count() > 0 {
                // Best effort: what is not committed is delivered again, not lost.
                let _ = consumer.commit(&commits, CommitMode::Sync);
            }
        } else if self.member {
            // Stored offsets of messages handed over; `NoOffset` when there are none.
            let _ = consumer.commit_consumer_state(CommitMode::Sync);
        }
    }
}

impl ClientContext for SubContext {}

impl ConsumerContext for SubContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        partitions: &mut TopicPartitionList,
    ) {
        match RDKafkaErrorCode::from(err) {
            RDKafkaErrorCode::AssignPartitions => {
                let result = self.on_assign(consumer, partitions);
                self.signal_ready(result);
            }
            RDKafkaErrorCode::RevokePartitions => {
                self.on_revoke(consumer, partitions);
                let _ = consumer.unassign();
            }
            _ => {
                let _ = consumer.unassign();
            }
        }
    }
}
