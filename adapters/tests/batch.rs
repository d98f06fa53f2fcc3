//! `Producer::publish_batch` against the local brokers, for the backends that override it
//! (NATS core, JetStream, Kafka): a batch's outcomes are per message and in the order
//! given, a message that cannot be sent fails alone, and (NATS core) a batch sent as the
//! connection is lost resolves unknown, never `Ok`. Each test skips with a SKIPPED line
//! when its broker is down, as the per-backend tests do.

mod common;

use std::time::Duration;

use brokerbench_adapters::{
    BackendKind, Producer, PublishOutcome, PublishRequest, SubscriptionSpec,
};

/// How long a test waits for something that should happen promptly.
const PATIENCE: Duration = Duration::from_secs(10);

/// Messages in a batch: more than the engine's in-flight window, fewer than its largest
/// batch.
const BATCH: usize = 200;

/// The message of a batch that the backend is made to refuse.
const BAD: usize = 57;

/// Publishes one batch of [`BATCH`] messages `m0`, `m1`, ... to a fresh topic on `kind`'s
/// broker, message [`BAD`] replaced by `refused` (a request the backend cannot send), and
/// checks that every other message is confirmed `Ok`, the refused one fails alone, and
/// the subscriber gets the others once each, in order. Skips when the broker is down.
async fn a_batch_has_one_outcome_per_message_in_order(
    kind: BackendKind,
    refused: impl FnOnce(&str) -> PublishRequest,
) {
    let test = "batch_outcomes";
    let Some(backend) = common::backend(kind, test).await else {
        return;
    };
    let topic = backend.topic_name(&common::run_id(test), "batch");
    let (mut sub, producer) =
        common::subscriber_and_producer(&*backend, SubscriptionSpec::new(topic.as_str())).await;
    let mut requests = batch(&topic, BATCH, "m");
    requests[BAD] = refused(&topic);
    let outcomes = tokio::time::timeout(PATIENCE, producer.publish_batch(requests))
        .await
        .expect("the batch resolves within the publish timeout");
    assert_eq!(outcomes.len(), BATCH);
    for (i, outcome) in outcomes.iter().enumerate() {
        if i == BAD {
            assert!(
                matches!(outcome, PublishOutcome::Failed(reason) if reason.starts_with("not sent")),
                "message {i}: {outcome:?}"
            );
        } else {
            assert_eq!(*outcome, PublishOutcome::Ok, "message {i}");
        }
    }
    for i in (0..BATCH).filter(|&i| i != BAD) {
        let delivery = common::next_within(&mut sub, PATIENCE).await;
        assert_eq!(common::text(&delivery), format!("m{i}"));
    }
    assert!(common::quiet_for(&mut sub, Duration::from_millis(300)).await);
    // A second batch on the same producer, and a single publish after it, still confirm.
    assert_eq!(
        producer.publish_batch(batch(&topic, 3, "again")).await,
        vec![PublishOutcome::Ok; 3]
    );
    assert_eq!(
        producer
            .publish(PublishRequest::new(topic.as_str(), "single"))
            .await,
        PublishOutcome::Ok
    );
    backend.teardown().await.unwrap();
}

/// A key with a line feed cannot travel in a NATS header.
#[cfg(any(feature = "nats", feature = "jetstream"))]
fn with_unsendable_key(topic: &str) -> PublishRequest {
    PublishRequest::new(topic, "refused").key("bad\nkey")
}

#[cfg(feature = "nats")]
#[tokio::test]
async fn nats_batch_outcomes_are_per_message_and_in_order() {
    a_batch_has_one_outcome_per_message_in_order(BackendKind::Nats, with_unsendable_key).await;
}

#[cfg(feature = "jetstream")]
#[tokio::test]
async fn jetstream_batch_outcomes_are_per_message_and_in_order() {
    a_batch_has_one_outcome_per_message_in_order(BackendKind::Jetstream, with_unsendable_key).await;
}

#[cfg(feature = "kafka")]
#[tokio::test]
async fn kafka_batch_outcomes_are_per_message_and_in_order() {
    // Larger than the producer's message.max.bytes (8 MiB): refused locally.
    let too_large = |topic: &str| PublishRequest::new(topic, vec![b'x'; 9 << 20]);
    a_batch_has_one_outcome_per_message_in_order(BackendKind::Kafka, too_large).await;
}

/// A batch of `n` messages to `topic`.
fn batch(topic: &str, n: usize, tag: &str) -> Vec<PublishRequest> {
    (0..n)
        .map(|i| PublishRequest::new(topic, format!("{tag}{i}")))
        .collect()
}

/// The producer's connection goes through a proxy that stops relaying it silently, so the
/// batch's messages and its round trip vanish; the client notices when it next writes,
/// and reconnects. Every message of the batch must then be unknown (never `Ok`: the round
/// trip that would confirm them travelled on the lost connection), and a batch after the
/// reconnect is confirmed as usual.
#[cfg(feature = "nats")]
#[tokio::test]
async fn nats_batch_on_a_lost_connection_resolves_unknown() {
    let kind = BackendKind::Nats;
    let test = "batch_lost_connection";
    let Some(direct) = common::backend(kind, test).await else {
        return;
    };
    drop(direct);
    let upstream = common::url(kind);
    let host_port = upstream
        .rsplit('@')
        .next()
        .unwrap()
        .trim_start_matches("nats://")
        .to_owned();
    let proxy = common::Proxy::start(host_port).await;
    let options = common::options().publish_timeout(Duration::from_secs(5));
    let backend = brokerbench_adapters::connect(kind, &proxy.url_for(&upstream), options)
        .await
        .unwrap();
    let topic = backend.topic_name(&common::run_id(test), "t");
    let producer: Producer = backend.producer().await.unwrap();
    assert_eq!(
        producer.publish_batch(batch(&topic, 50, "before")).await,
        vec![PublishOutcome::Ok; 50]
    );
    assert!(proxy.sever() > 0);
    let outcomes = tokio::time::timeout(
        PATIENCE,
        producer.publish_batch(batch(&topic, 50, "during")),
    )
    .await
    .expect("the batch resolves within the publish timeout");
    assert_eq!(outcomes, vec![PublishOutcome::Unknown; 50]);
    // The client reconnects through the proxy; a later batch is confirmed again.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let outcomes = producer.publish_batch(batch(&topic, 50, "after")).await;
        if outcomes == vec![PublishOutcome::Ok; 50] {
            break;
        }
        assert!(
            outcomes.iter().all(|o| *o == PublishOutcome::Unknown),
            "{outcomes:?}"
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "no batch confirmed after the reconnect"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
