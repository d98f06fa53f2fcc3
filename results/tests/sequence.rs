//! Injected drops, duplicates and reorders are counted exactly.

use brokerbench_results::{Delivery, SequenceSet, SequenceTracker};
use proptest::prelude::*;

#[test]
fn known_pattern() {
    // Producer 7 sends 0..10. Network drops 3 and 8, duplicates 5, swaps 1 and 2,
    // and delivers 9 before 6.
    let arrivals = [0, 2, 1, 4, 5, 5, 9, 6, 7];
    let mut t = SequenceTracker::new();
    let got: Vec<Delivery> = arrivals.iter().map(|&s| t.observe(7, s)).collect();
    use Delivery::*;
    assert_eq!(
        got,
        [
            First, First, Reordered, First, First, Duplicate, First, Reordered, Reordered
        ]
    );
    let c = t.counts();
    assert_eq!((c.delivered, c.duplicated, c.reordered), (8, 1, 3));
    let confirmed = SequenceSet::from_range(0..10).unwrap();
    assert_eq!(t.lost(7, &confirmed), 2);
    assert_eq!(t.lost_sequences(7, &confirmed).collect::<Vec<_>>(), [3, 8]);
    // Only sequences the producer confirmed are expected: if 8 failed to publish, it is
    // not lost.
    let mut confirmed_without_8 = SequenceSet::new();
    for s in (0..10).filter(|&s| s != 8) {
        confirmed_without_8.insert(s).unwrap();
    }
    assert_eq!(t.lost(7, &confirmed_without_8), 1);
}

#[test]
fn millions_of_messages_are_cheap() {
    let mut t = SequenceTracker::new();
    let n = 3_000_000u64;
    for s in 0..n {
        if s % 1_000 != 0 {
            assert_eq!(t.observe(1, s), Delivery::First);
        }
    }
    let expected = SequenceSet::from_range(0..n).unwrap();
    assert_eq!(t.lost(1, &expected), n / 1_000);
    assert_eq!(t.received(1).len(), n - n / 1_000);
}

#[test]
fn competing_consumers_union() {
    let mut a = SequenceTracker::new();
    let mut b = SequenceTracker::new();
    for s in 0..100 {
        if s % 2 == 0 {
            a.observe(1, s);
        } else {
            b.observe(1, s);
        }
    }
    b.observe(1, 10); // redelivered to the other consumer
    let mut union = a.received(1).clone();
    let overlap = union.union_with(b.received(1));
    assert_eq!(overlap, 1);
    assert_eq!(union.len(), 100);
    let expected = SequenceSet::from_range(0..101).unwrap();
    assert_eq!(expected.difference_len(&union), 1);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Sends 0..n from several producers, drops a random subset, duplicates a random
    /// subset, shuffles locally; the tracker's counts match a straightforward model.
    #[test]
    fn injected_faults_counted_exactly(
        n in 1u64..3_000,
        producers in 1u64..4,
        drop_mask in prop::collection::vec(any::<bool>(), 3_000),
        dup_mask in prop::collection::vec(0u8..8, 3_000),
        seed in any::<u64>(),
    ) {
        let mut arrivals = Vec::new();
        for p in 0..producers {
            for s in 0..n {
                let i = ((s + p * 7) % 3_000) as usize;
                if drop_mask[i] && s % 3 == 0 { continue; }
                arrivals.push((p, s));
                if dup_mask[i] == 0 { arrivals.push((p, s)); }
            }
        }
        let mut rng = fastrand::Rng::with_seed(seed);
        // Local reordering: swap some neighbours.
        for i in 1..arrivals.len() {
            if rng.u8(..) < 40 { arrivals.swap(i - 1, i); }
        }
        // Model.
        let mut seen = std::collections::HashSet::new();
        let mut highest = std::collections::HashMap::new();
        let (mut first, mut dup, mut reordered) = (0u64, 0u64, 0u64);
        let mut t = SequenceTracker::new();
        for &(p, s) in &arrivals {
            let expected = if !seen.insert((p, s)) {
                dup += 1;
                Delivery::Duplicate
            } else {
                first += 1;
                let h = highest.entry(p).or_insert(None::<u64>);
                match *h {
                    Some(max) if s < max => { reordered += 1; Delivery::Reordered }
                    _ => { *h = Some(s); Delivery::First }
                }
            };
            prop_assert_eq!(t.observe(p, s), expected);
        }
        let c = t.counts();
        prop_assert_eq!((c.delivered, c.duplicated, c.reordered), (first, dup, reordered));
        let expected = SequenceSet::from_range(0..n).unwrap();
        for p in 0..producers {
            let received = seen.iter().filter(|(q, _)| *q == p).count() as u64;
            prop_assert_eq!(t.lost(p, &expected), n - received);
            let lost: Vec<u64> = t.lost_sequences(p, &expected).collect();
            let model: Vec<u64> = (0..n).filter(|s| !seen.contains(&(p, *s))).collect();
            prop_assert_eq!(lost, model);
        }
    }
}
