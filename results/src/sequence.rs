//! Per-producer sequence tracking: delivered, duplicated, reordered, lost.
//!
//! Every envelope carries `(producer id, sequence)`; sequences start at 0 and are dense.
//! A consumer feeds each delivery to its [`SequenceTracker`], which answers with a
//! [`Delivery`] classification in a few nanoseconds (one hash lookup, one bit test).
//! At the end of the run, given the set of sequences a producer had confirmed (a
//! [`SequenceSet`] the producer filled) and that this subscriber was eligible for, the
//! tracker tells how many were lost and which ones.
//!
//! Memory is one bit per sequence per producer (a million messages: 122 KiB).

use std::ops::Range;

use rustc_hash::FxHashMap;

/// Default largest sequence number a tracker or set accepts (2^32 − 1): a garbage
/// sequence must not make the bitset allocate without bound. At this limit one
/// producer's set is 512 MiB; pass the real number of scheduled messages to
/// [`SequenceTracker::with_max_sequence`] when it is known.
pub const DEFAULT_MAX_SEQUENCE: u64 = u32::MAX as u64;

/// A sequence number above the accepted maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("sequence {seq} is above the accepted maximum {max}")]
pub struct SequenceOutOfRange {
    /// The rejected sequence.
    pub seq: u64,
    /// The accepted maximum.
    pub max: u64,
}

/// A compact growable set of sequence numbers (a bitset; dense sequences from 0).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SequenceSet {
    words: Vec<u64>,
    len: u64,
}

/// The set with nothing in it, for producers a tracker never heard from.
static EMPTY_SET: SequenceSet = SequenceSet {
    words: Vec::new(),
    len: 0,
};

/// Word index and bit mask of `seq`. Callers bound `seq` by [`DEFAULT_MAX_SEQUENCE`], so
/// the word index (at most 2^26) fits in `usize` on every supported target.
fn split(seq: u64) -> (usize, u64) {
    ((seq / 64) as usize, 1u64 << (seq % 64))
}

/// Iterates the set bits of a word sequence.
fn bits(words: impl Iterator<Item = u64>) -> impl Iterator<Item = u64> {
    words.enumerate().flat_map(|(i, mut word)| {
        std::iter::from_fn(move || {
            if word == 0 {
                return None;
            }
            let bit = u64::from(word.trailing_zeros());
            word &= word - 1;
            Some(i as u64 * 64 + bit)
        })
    })
}

impl SequenceSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// The set holding every sequence of `range`.
    ///
    /// # Errors
    /// [`SequenceOutOfRange`] if the range ends above [`DEFAULT_MAX_SEQUENCE`] + 1.
    pub fn from_range(range: Range<u64>) -> Result<Self, SequenceOutOfRange> {
        let mut set = Self::new();
        if range.is_empty() {
            return Ok(set);
        }
        let last = range.end - 1;
        if last > DEFAULT_MAX_SEQUENCE {
            return Err(SequenceOutOfRange {
                seq: last,
                max: DEFAULT_MAX_SEQUENCE,
            });
        }
        let (last_word, _) = split(last);
        set.words = vec![0; last_word + 1];
        let (first_word, _) = split(range.start);
        for (i, word) in set.words.iter_mut().enumerate().skip(first_word) {
            let lo = (i as u64) * 64;
            let from = range.start.max(lo) - lo;
            let to = range.end.min(lo + 64) - lo; // exclusive, 1..=64
            let upper = if to == 64 { u64::MAX } else { (1u64 << to) - 1 };
            let lower = (1u64 << from) - 1;
            *word = upper & !lower;
        }
        set.len = range.end - range.start;
        Ok(set)
    }

    /// Adds `seq`; true when it was not there before.
    ///
    /// # Errors
    /// [`SequenceOutOfRange`] if `seq` is above [`DEFAULT_MAX_SEQUENCE`].
    pub fn insert(&mut self, seq: u64) -> Result<bool, SequenceOutOfRange> {
        if seq > DEFAULT_MAX_SEQUENCE {
            return Err(SequenceOutOfRange {
                seq,
                max: DEFAULT_MAX_SEQUENCE,
            });
        }
        Ok(self.insert_unchecked_range(seq))
    }

    /// Inserts a sequence already checked against a maximum.
    #[inline]
    fn insert_unchecked_range(&mut self, seq: u64) -> bool {
        let (word, bit) = split(seq);
        if word >= self.words.len() {
            // Grow geometrically so a dense run of inserts costs amortised O(1).
            let target = (word + 1).max(self.words.len() * 2);
            self.words.resize(target, 0);
        }
        let slot = &mut self.words[word];
        let fresh = *slot & bit == 0;
        *slot |= bit;
        self.len += u64::from(fresh);
        fresh
    }

    /// True when `seq` is in the set.
    pub fn contains(&self, seq: u64) -> bool {
        if seq > DEFAULT_MAX_SEQUENCE {
            return false;
        }
        let (word, bit) = split(seq);
        self.words.get(word).is_some_and(|w| w & bit != 0)
    }

    /// Number of sequences in the set.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when the set is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The sequences of the set, ascending.
    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        bits(self.words.iter().copied())
    }

    fn word(&self, i: usize) -> u64 {
        self.words.get(i).copied().unwrap_or(0)
    }

    /// The sequences in `self` and not in `other`, ascending.
    pub fn difference<'a>(&'a self, other: &'a SequenceSet) -> impl Iterator<Item = u64> + 'a {
        bits(
            self.words
                .iter()
                .enumerate()
                .map(|(i, w)| w & !other.word(i)),
        )
    }

    /// How many sequences are in `self` and not in `other`.
    pub fn difference_len(&self, other: &SequenceSet) -> u64 {
        self.words
            .iter()
            .enumerate()
            .map(|(i, w)| u64::from((w & !other.word(i)).count_ones()))
            .sum()
    }

    /// How many sequences are in both sets.
    pub fn intersection_len(&self, other: &SequenceSet) -> u64 {
        self.words
            .iter()
            .zip(&other.words)
            .map(|(a, b)| u64::from((a & b).count_ones()))
            .sum()
    }

    /// Adds every sequence of `other`; returns how many were already here (the overlap,
    /// e.g. a message two competing consumers both received).
    pub fn union_with(&mut self, other: &SequenceSet) -> u64 {
        if other.words.len() > self.words.len() {
            self.words.resize(other.words.len(), 0);
        }
        let mut overlap = 0u64;
        for (a, b) in self.words.iter_mut().zip(&other.words) {
            overlap += u64::from((*a & b).count_ones());
            *a |= b;
        }
        self.len = self.len + other.len - overlap;
        overlap
    }
}

/// How a delivery relates to what this subscriber already received from its producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// First delivery of this sequence, higher than every sequence seen before.
    First,
    /// First delivery of this sequence, but a higher sequence of the same producer was
    /// already delivered.
    Reordered,
    /// This sequence was already delivered to this subscriber.
    Duplicate,
    /// The sequence is above the tracker's maximum: it cannot have been sent (phantom).
    OutOfRange,
}

/// Totals a tracker has classified.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SequenceCounts {
    /// Distinct sequences received (first deliveries, in order or reordered).
    pub delivered: u64,
    /// Deliveries of an already received sequence.
    pub duplicated: u64,
    /// First deliveries below the highest sequence already seen from that producer.
    pub reordered: u64,
    /// Deliveries with a sequence above the tracker's maximum.
    pub out_of_range: u64,
}

#[derive(Debug, Default)]
struct ProducerSequences {
    received: SequenceSet,
    highest: Option<u64>,
}

/// Classifies one subscriber's deliveries per producer and counts the lost ones.
#[derive(Debug)]
pub struct SequenceTracker {
    producers: FxHashMap<u64, ProducerSequences>,
    max_sequence: u64,
    counts: SequenceCounts,
}

impl Default for SequenceTracker {
    fn default() -> Self {
        Self::new()
    }
}

impl SequenceTracker {
    /// A tracker accepting sequences up to [`DEFAULT_MAX_SEQUENCE`].
    pub fn new() -> Self {
        Self::with_max_sequence(DEFAULT_MAX_SEQUENCE)
    }

    /// A tracker accepting sequences up to `max_sequence` (capped at
    /// [`DEFAULT_MAX_SEQUENCE`]); higher ones are classified [`Delivery::OutOfRange`].
    /// Pass the number of messages a producer can send minus one, when known.
    pub fn with_max_sequence(max_sequence: u64) -> Self {
        Self {
            producers: FxHashMap::default(),
            max_sequence: max_sequence.min(DEFAULT_MAX_SEQUENCE),
            counts: SequenceCounts::default(),
        }
    }

    /// Classifies a delivery of `seq` from `producer` and remembers it.
    #[inline]
    pub fn observe(&mut self, producer: u64, seq: u64) -> Delivery {
        if seq > self.max_sequence {
            self.counts.out_of_range += 1;
            return Delivery::OutOfRange;
        }
        let state = self.producers.entry(producer).or_default();
        if !state.received.insert_unchecked_range(seq) {
            self.counts.duplicated += 1;
            return Delivery::Duplicate;
        }
        self.counts.delivered += 1;
        match state.highest {
            Some(highest) if seq < highest => {
                self.counts.reordered += 1;
                Delivery::Reordered
            }
            _ => {
                state.highest = Some(seq);
                Delivery::First
            }
        }
    }

    /// Totals classified so far.
    pub fn counts(&self) -> SequenceCounts {
        self.counts
    }

    /// The producers this tracker has received from.
    pub fn producers(&self) -> impl Iterator<Item = u64> + '_ {
        self.producers.keys().copied()
    }

    /// The distinct sequences received from `producer` (empty if none).
    pub fn received(&self, producer: u64) -> &SequenceSet {
        self.producers
            .get(&producer)
            .map_or(&EMPTY_SET, |p| &p.received)
    }

    /// Number of sequences of `expected` (what `producer` confirmed and this subscriber
    /// was eligible for) that were never received. Duplicates count once.
    pub fn lost(&self, producer: u64, expected: &SequenceSet) -> u64 {
        expected.difference_len(self.received(producer))
    }

    /// The sequences of `expected` that were never received, ascending — to attribute
    /// each loss to the interval of its intended send time.
    pub fn lost_sequences<'a>(
        &'a self,
        producer: u64,
        expected: &'a SequenceSet,
    ) -> impl Iterator<Item = u64> + 'a {
        expected.difference(self.received(producer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_from_range_matches_inserts() {
        for (start, end) in [
            (0, 0),
            (0, 1),
            (0, 64),
            (3, 64),
            (63, 65),
            (5, 200),
            (64, 128),
        ] {
            let a = SequenceSet::from_range(start..end).unwrap();
            let mut b = SequenceSet::new();
            for s in start..end {
                b.insert(s).unwrap();
            }
            assert_eq!(a.len(), end - start);
            assert_eq!(a.iter().collect::<Vec<_>>(), b.iter().collect::<Vec<_>>());
        }
    }

    #[test]
    fn set_rejects_out_of_range() {
        let mut s = SequenceSet::new();
        assert!(s.insert(DEFAULT_MAX_SEQUENCE + 1).is_err());
        assert!(SequenceSet::from_range(0..DEFAULT_MAX_SEQUENCE + 2).is_err());
        assert!(!s.contains(u64::MAX));
    }

    #[test]
    fn union_counts_overlap() {
        let mut a = SequenceSet::from_range(0..10).unwrap();
        let b = SequenceSet::from_range(5..200).unwrap();
        assert_eq!(a.intersection_len(&b), 5);
        assert_eq!(a.union_with(&b), 5);
        assert_eq!(a.len(), 200);
        assert_eq!(a, SequenceSet::from_range(0..200).unwrap());
    }

    #[test]
    fn classifies_in_order_dup_reorder() {
        let mut t = SequenceTracker::new();
        assert_eq!(t.observe(1, 0), Delivery::First);
        assert_eq!(t.observe(1, 2), Delivery::First);
        assert_eq!(t.observe(1, 1), Delivery::Reordered);
        assert_eq!(t.observe(1, 1), Delivery::Duplicate);
        assert_eq!(t.observe(1, 2), Delivery::Duplicate);
        assert_eq!(
            t.observe(2, 0),
            Delivery::First,
            "producers are independent"
        );
        assert_eq!(
            t.counts(),
            SequenceCounts {
                delivered: 4,
                duplicated: 2,
                reordered: 1,
                out_of_range: 0
            }
        );
    }

    #[test]
    fn max_sequence_bounds_memory() {
        let mut t = SequenceTracker::with_max_sequence(99);
        assert_eq!(t.observe(0, 100), Delivery::OutOfRange);
        assert_eq!(t.observe(0, 99), Delivery::First);
        assert_eq!(t.counts().out_of_range, 1);
    }

    #[test]
    fn unknown_producer_lost_everything() {
        let t = SequenceTracker::new();
        let expected = SequenceSet::from_range(0..7).unwrap();
        assert_eq!(t.lost(42, &expected), 7);
        assert_eq!(t.lost_sequences(42, &expected).count(), 7);
    }
}
