//! Unit tests that need no broker: URL parsing, outcome classification, ack bookkeeping,
//! start positions. The behaviour against a broker is tested in `tests/kafka.rs`.

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use super::admin::check_topic_name;
use super::config::parse_url;
use super::consumer::{DELIVERED_MARK, PartitionAcks, parse_delivered, resolve_start};
use super::producer::delivery_outcome;
use super::*;
use crate::error::ErrorKind;
use crate::publish::PublishOutcome;
use crate::subscription::StartPosition;

#[test]
fn urls_become_bootstrap_lists() {
    let ok = |url: &str| parse_url(url).unwrap().bootstrap;
    assert_eq!(ok("kafka://127.0.0.1:9092"), "127.0.0.1:9092");
    assert_eq!(ok("KAFKA://broker"), "broker:9092");
    assert_eq!(ok("kafka://a:1,b:2/"), "a:1,b:2");
    assert_eq!(ok("a:1, [::1]:2"), "a:1,[::1]:2");
    assert_eq!(ok("localhost"), "localhost:9092");
    assert_eq!(parse_url("kafka://a:1,b").unwrap().endpoints.len(), 2);
}

#[test]
fn bad_urls_name_the_url_and_the_expected_form() {
    for (url, why) in [
        ("http://a:1", "unsupported scheme 'http'"),
        ("kafka://user:pw@a:1", "credentials are not supported"),
        ("kafka://a:1/topic", "no path or query"),
        ("kafka://a:1?x=y", "no path or query"),
        ("kafka://", "no host"),
        ("kafka://a:99999", "not a number"),
        ("kafka://a:0", "port 0"),
        ("kafka://a,,b", "empty host"),
    ] {
        let err = parse_url(url).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidUrl, "{url}");
        let text = err.to_string();
        assert!(text.contains(url), "{text}");
        assert!(text.contains(why), "{url}: {text}");
        assert!(text.contains("expected kafka://host:port"), "{text}");
    }
}

#[test]
fn topic_names_follow_kafka_rules() {
    assert!(check_topic_name("bb.run-1.chat_room").is_ok());
    for bad in ["", ".", "..", "a b", "a/b", "ü", &"x".repeat(250)] {
        let err = check_topic_name(bad).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert!(
            err.to_string().contains("not a valid Kafka topic name"),
            "{err}"
        );
    }
}

#[test]
fn group_ids_are_per_topic() {
    assert_eq!(group_id("bb.r.t", "g"), "bb.r.t.g");
    assert_ne!(group_id("bb.r.t1", "g"), group_id("bb.r.t2", "g"));
}

#[test]
fn capabilities_are_what_kafka_guarantees() {
    let caps = KafkaBackend::capabilities();
    for cap in [
        Capability::FanOut,
        Capability::Competing,
        Capability::KeyOrdering,
        Capability::Replay,
        Capability::LiveOnly,
        Capability::AckRedelivery,
    ] {
        assert!(caps.contains(cap), "{cap}");
    }
    for cap in [
        Capability::Nack,
        Capability::DeadLetter,
        Capability::Dedup,
        Capability::RetentionLimit,
    ] {
        assert!(!caps.contains(cap), "{cap}");
    }
}

#[test]
fn delivery_failures_are_failed_or_unknown() {
    let outcome = |code| delivery_outcome("t", &KafkaError::MessageProduction(code));
    // The broker (or librdkafka's own check) said no: the message is not written.
    for code in [
        RDKafkaErrorCode::MessageSizeTooLarge,
        RDKafkaErrorCode::UnknownTopicOrPartition,
        RDKafkaErrorCode::UnknownTopic,
        RDKafkaErrorCode::TopicAuthorizationFailed,
        RDKafkaErrorCode::PurgeQueue,
        RDKafkaErrorCode::InvalidRecord,
    ] {
        match outcome(code) {
            PublishOutcome::Failed(reason) => {
                assert!(reason.contains("topic t"), "{reason}");
                assert!(reason.contains(&code.to_string()), "{reason}");
            }
            other => panic!("{code:?}: {other:?}"),
        }
    }
    // Sent (or maybe sent) and then no answer: it may be written.
    for code in [
        RDKafkaErrorCode::MessageTimedOut,
        RDKafkaErrorCode::PurgeInflight,
        RDKafkaErrorCode::BrokerTransportFailure,
        RDKafkaErrorCode::AllBrokersDown,
        RDKafkaErrorCode::Fatal,
        RDKafkaErrorCode::NotEnoughReplicasAfterAppend,
    ] {
        assert_eq!(outcome(code), PublishOutcome::Unknown, "{code:?}");
    }
}

#[test]
fn start_positions_resolve_within_the_partition() {
    assert_eq!(resolve_start(StartPosition::Latest, 0, 10), 10);
    assert_eq!(resolve_start(StartPosition::Beginning, 3, 10), 3);
    assert_eq!(resolve_start(StartPosition::AfterSequence(4), 0, 10), 5);
    assert_eq!(resolve_start(StartPosition::AfterSequence(-1), 0, 10), 0);
    // Before what is retained: from the first retained; past the end: from the end.
    assert_eq!(resolve_start(StartPosition::AfterSequence(1), 3, 10), 3);
    assert_eq!(resolve_start(StartPosition::AfterSequence(50), 0, 10), 10);
    assert_eq!(
        resolve_start(StartPosition::AfterSequence(i64::MAX), 0, 10),
        10
    );
    // An empty partition reported as -1 by some brokers.
    assert_eq!(resolve_start(StartPosition::Latest, -1, -1), 0);
}

#[test]
fn acks_commit_the_lowest_unacknowledged_offset() {
    let mut acks = PartitionAcks::new(10, None);
    assert_eq!(
        acks.commit_point(false),
        None,
        "nothing changed since the start"
    );
    for offset in 10..15 {
        assert!(!acks.on_delivery(offset));
    }
    // Out of order: 11 and 12 acked, 10 not yet: the commit stays at 10.
    assert!(acks.on_ack(11));
    assert!(acks.on_ack(12));
    let mark = format!("{DELIVERED_MARK}14");
    assert_eq!(acks.commit_point(false), Some((10, mark.clone())));
    assert_eq!(acks.commit_point(false), None);
    assert!(acks.on_ack(10));
    assert_eq!(acks.commit_point(false), Some((13, mark.clone())));
    // Acking twice, or an offset never handed out, is refused.
    assert!(!acks.on_ack(10));
    assert!(!acks.on_ack(99));
    assert!(acks.on_ack(13));
    assert!(acks.on_ack(14));
    assert_eq!(acks.commit_point(false), Some((15, mark.clone())));
    // A final commit is made even when nothing changed.
    assert_eq!(acks.commit_point(false), None);
    assert_eq!(acks.commit_point(true), Some((15, mark)));
}

#[test]
fn redeliveries_are_recognised_from_the_previous_owners_mark() {
    let metadata = format!("{DELIVERED_MARK}7");
    let delivered = parse_delivered(&metadata);
    assert_eq!(delivered, Some(7));
    assert_eq!(parse_delivered(""), None);
    assert_eq!(parse_delivered("someone else's metadata"), None);
    let mut acks = PartitionAcks::new(5, delivered);
    assert!(acks.on_delivery(5));
    assert!(acks.on_delivery(7));
    assert!(!acks.on_delivery(8));
    // The mark it commits covers what the earlier owner handed out too.
    assert_eq!(
        acks.commit_point(false),
        Some((5, format!("{DELIVERED_MARK}8")))
    );
}
