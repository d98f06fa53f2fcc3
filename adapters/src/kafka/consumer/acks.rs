//! Manual-ack bookkeeping of a group member: which offsets it handed out and which were
//! acknowledged, and what to commit (with the highest offset handed out as metadata, so
//! the partition's next owner can mark redeliveries).

use std::collections::{BTreeMap, HashMap};

use rdkafka::{Offset, TopicPartitionList};

/// The prefix of the metadata a manual-ack member commits with its offsets: the highest
/// offset it handed out, so the partition's next owner can mark redeliveries.
pub(crate) const DELIVERED_MARK: &str = "brokerbench:delivered=";

/// Reads the highest delivered offset from commit metadata written by [`AckBook`].
pub(crate) fn parse_delivered(metadata: &str) -> Option<i64> {
    metadata.strip_prefix(DELIVERED_MARK)?.parse().ok()
}

/// Manual-ack bookkeeping of one partition this member owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PartitionAcks {
    /// The offset to commit: everything before it is acknowledged (or was before this
    /// member got the partition).
    pub(super) next_commit: i64,
    /// Offsets handed out at or after `next_commit`, and whether each was acknowledged.
    pub(super) outstanding: BTreeMap<i64, bool>,
    /// The highest offset handed out, by this member or (from the commit metadata) an
    /// earlier owner.
    pub(super) delivered_high: Option<i64>,
    /// Offsets below this were handed out by an earlier owner: seeing them again is a
    /// redelivery.
    pub(super) redelivered_below: i64,
    /// What was committed last (offset, delivered high), so unchanged state is not
    /// committed again.
    pub(super) committed: Option<(i64, Option<i64>)>,
}

impl PartitionAcks {
    /// A partition starting at `start`, whose earlier owners handed out offsets up to
    /// `delivered_before` (from the commit metadata, where the broker keeps it).
    pub(crate) fn new(start: i64, delivered_before: Option<i64>) -> Self {
        PartitionAcks {
            next_commit: start,
            outstanding: BTreeMap::new(),
            delivered_high: delivered_before,
            redelivered_below: delivered_before.map_or(i64::MIN, |d| d.saturating_add(1)),
            committed: Some((start, delivered_before)),
        }
    }

    /// Records that `offset` is being handed out; returns whether it is a redelivery.
    pub(crate) fn on_delivery(&mut self, offset: i64) -> bool {
        if offset >= self.next_commit {
            self.outstanding.insert(offset, false);
        }
        self.delivered_high = Some(self.delivered_high.map_or(offset, |d| d.max(offset)));
        offset < self.redelivered_below
    }

    /// Records an ack; returns `false` for an offset that is not outstanding here.
    pub(crate) fn on_ack(&mut self, offset: i64) -> bool {
        match self.outstanding.get_mut(&offset) {
            Some(acked) if !*acked => *acked = true,
            _ => return false,
        }
        while let Some((&first, &true)) = self.outstanding.first_key_value() {
            self.outstanding.remove(&first);
            self.next_commit = first + 1;
        }
        true
    }

    /// The commit to make (offset and metadata): if anything changed since the last
    /// one, or in any case when `always` (a final commit, which must not rely on an
    /// earlier asynchronous one having succeeded).
    pub(crate) fn commit_point(&mut self, always: bool) -> Option<(i64, String)> {
        let now = (self.next_commit, self.delivered_high);
        if self.committed == Some(now) && !always {
            return None;
        }
        self.committed = Some(now);
        let metadata = self
            .delivered_high
            .map(|d| format!("{DELIVERED_MARK}{d}"))
            .unwrap_or_default();
        Some((self.next_commit, metadata))
    }
}

/// Manual-ack bookkeeping of every partition a member owns.
#[derive(Debug, Default)]
pub(super) struct AckBook {
    pub(super) partitions: HashMap<i32, PartitionAcks>,
}

impl AckBook {
    /// Adds the commit points of `partitions` (all owned ones for `None`) to `list`;
    /// see [`PartitionAcks::commit_point`] for `always`.
    pub(super) fn commits(
        &mut self,
        topic: &str,
        partitions: Option<&[i32]>,
        always: bool,
        list: &mut TopicPartitionList,
    ) {
        for (&partition, acks) in &mut self.partitions {
            if partitions.is_some_and(|only| !only.contains(&partition)) {
                continue;
            }
            if let Some((offset, metadata)) = acks.commit_point(always)
                && list
                    .add_partition_offset(topic, partition, Offset::Offset(offset))
                    .is_ok()
                && let Some(mut elem) = list.find_partition(topic, partition)
            {
                elem.set_metadata(metadata);
            }
        }
    }
}
