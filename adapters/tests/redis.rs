//! The Redis Streams adapter against the local Redis (127.0.0.1:6379, or
//! `BROKERBENCH_REDIS_URL`). Each test uses its own per-run topics and deletes them through
//! the backend's teardown; the checks of what exists on the server use a plain redis
//! client.

#![cfg(feature = "redis")]

mod common;

use common::text;

use std::collections::BTreeSet;
use std::time::Duration;

use brokerbench_adapters::redis_streams::RedisBackend;
use brokerbench_adapters::{
    AckMode, Backend, BackendKind, ConnectOptions, Delivery, ErrorKind, Producer, PublishOutcome,
    PublishRequest, RunTopology, StartPosition, Subscription, SubscriptionSpec, TopicSpec,
};
use futures::StreamExt;
use futures::stream::FuturesOrdered;

const KIND: BackendKind = BackendKind::Redis;
/// How long a test waits for something that should happen promptly.
const PATIENCE: Duration = Duration::from_secs(10);
/// How long a test watches for something that should not happen.
const QUIET: Duration = Duration::from_millis(500);

/// The adapter as its concrete type, or `None` (test skipped) when Redis is not running.
async fn backend(test: &str) -> Option<RedisBackend> {
    common::backend(KIND, test).await?;
    Some(
        RedisBackend::connect(&common::url(KIND), common::options())
            .await
            .expect("connect"),
    )
}

/// Deletes a test's streams if it panics before reaching the backend's teardown (through
/// a blocking connection: `Drop` cannot await). On success the teardown has deleted them.
struct Cleanup(Vec<String>);

impl Cleanup {
    fn of(keys: &[&String]) -> Cleanup {
        Cleanup(keys.iter().map(|k| k.to_string()).collect())
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let client = redis::Client::open(common::url(KIND));
        if let Ok(mut con) = client.and_then(|c| c.get_connection()) {
            let _: redis::RedisResult<i64> = redis::cmd("UNLINK").arg(&self.0).query(&mut con);
        }
    }
}

/// A plain connection for looking at the server's own state.
async fn raw() -> redis::aio::MultiplexedConnection {
    redis::Client::open(common::url(KIND))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

async fn exists(key: &str) -> bool {
    let n: i64 = redis::cmd("EXISTS")
        .arg(key)
        .query_async(&mut raw().await)
        .await
        .unwrap();
    n == 1
}

/// `XINFO GROUPS` names of `key`'s groups (empty if the key does not exist).
async fn groups(key: &str) -> Vec<String> {
    let reply: redis::RedisResult<Vec<redis::Value>> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(key)
        .query_async(&mut raw().await)
        .await;
    let mut names = Vec::new();
    for group in reply.unwrap_or_default() {
        let fields: Vec<redis::Value> = redis::from_redis_value(group).unwrap();
        let mut it = fields.into_iter();
        while let (Some(name), Some(value)) = (it.next(), it.next()) {
            if redis::from_redis_value::<String>(name).unwrap() == "name" {
                names.push(redis::from_redis_value(value).unwrap());
            }
        }
    }
    names
}

/// `XINFO CONSUMERS` names of `group` on `key`.
async fn consumers(key: &str, group: &str) -> Vec<String> {
    let reply: Vec<Vec<redis::Value>> = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg(key)
        .arg(group)
        .query_async(&mut raw().await)
        .await
        .unwrap();
    reply
        .into_iter()
        .filter_map(|fields| {
            let mut it = fields.into_iter();
            while let (Some(name), Some(value)) = (it.next(), it.next()) {
                if redis::from_redis_value::<String>(name).unwrap() == "name" {
                    return Some(redis::from_redis_value(value).unwrap());
                }
            }
            None
        })
        .collect()
}

/// `(entry id, consumer)` of every entry pending in `group` of `key`.
async fn pending(key: &str, group: &str) -> Vec<(String, String)> {
    let reply: Vec<(String, String, i64, i64)> = redis::cmd("XPENDING")
        .arg(key)
        .arg(group)
        .arg("-")
        .arg("+")
        .arg(1000)
        .query_async(&mut raw().await)
        .await
        .unwrap();
    reply
        .into_iter()
        .map(|(id, consumer, _, _)| (id, consumer))
        .collect()
}

/// Kills (`CLIENT KILL ID`) every client connection whose name `matches`, as a network
/// failure would end it; returns how many.
async fn kill_clients(matches: impl Fn(&str) -> bool) -> usize {
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut raw().await)
        .await
        .unwrap();
    let mut killed = 0;
    for line in list.lines() {
        let field = |name: &str| {
            line.split(' ')
                .find_map(|kv| kv.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
        };
        if matches(field("name").unwrap_or_default()) {
            let _: i64 = redis::cmd("CLIENT")
                .arg("KILL")
                .arg("ID")
                .arg(field("id").unwrap())
                .query_async(&mut raw().await)
                .await
                .unwrap();
            killed += 1;
        }
    }
    killed
}

/// The names of the client connections whose name starts with `prefix`, sorted.
async fn client_names(prefix: &str) -> Vec<String> {
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut raw().await)
        .await
        .unwrap();
    let mut names: Vec<String> = list
        .lines()
        .filter_map(|line| line.split(' ').find_map(|kv| kv.strip_prefix("name=")))
        .filter(|name| name.starts_with(prefix))
        .map(str::to_owned)
        .collect();
    names.sort();
    names
}

/// A proxy in front of the local Redis, and a backend connected through it with `ack_wait`.
async fn through_proxy(ack_wait: Duration) -> (common::Proxy, RedisBackend) {
    let url = common::url(KIND);
    let upstream = brokerbench_adapters::endpoint::endpoints(KIND, &url).unwrap()[0].host_port();
    let proxy = common::Proxy::start(upstream).await;
    let backend = RedisBackend::connect(&proxy.url_for(&url), common::options())
        .await
        .expect("connect through the proxy")
        .with_ack_wait(ack_wait);
    (proxy, backend)
}

/// The next delivery, failing the test on an error item, an end, or a long wait.
async fn next(sub: &mut Subscription) -> Delivery {
    common::next_within(sub, PATIENCE).await
}

/// Whether nothing arrives for a while.
async fn stays_quiet(sub: &mut Subscription, quiet: Duration) -> bool {
    common::quiet_for(sub, quiet).await
}

async fn publish(producer: &Producer, topic: &str, payload: impl Into<bytes::Bytes>) {
    let outcome = producer.publish(PublishRequest::new(topic, payload)).await;
    assert_eq!(outcome, PublishOutcome::Ok);
}

#[tokio::test]
async fn round_trip_carries_payload_key_and_sequence() {
    let Some(backend) = backend("round_trip").await else {
        return;
    };
    assert_eq!(backend.kind(), BackendKind::Redis);
    let version = backend.server_version().expect("a version from INFO");
    assert!(
        version.starts_with("redis ") || version.starts_with("valkey "),
        "{version}"
    );
    let topic = backend.topic_name(&common::run_id("round-trip"), "chat");
    let _cleanup = Cleanup::of(&[&topic]);
    let (mut sub, producer) =
        common::subscriber_and_producer(&backend, SubscriptionSpec::new(topic.as_str())).await;
    let outcome = producer
        .publish(PublishRequest::new(topic.as_str(), "hello").key("customer-7"))
        .await;
    assert_eq!(outcome, PublishOutcome::Ok);
    publish(&producer, &topic, "second").await;

    let first = next(&mut sub).await;
    assert_eq!(text(&first), "hello");
    assert_eq!(first.key.as_deref(), Some("customer-7"));
    assert_eq!(&*first.topic, topic);
    assert!(!first.redelivered);
    assert_eq!(first.attempt, Some(1));
    let second = next(&mut sub).await;
    assert_eq!(second.key, None);
    assert!(first.sequence.unwrap() < second.sequence.unwrap());

    // A sequence is the entry id: ms * 2^20 + seq.
    let ids: Vec<(String, redis::Value)> = redis::cmd("XRANGE")
        .arg(&topic)
        .arg("-")
        .arg("+")
        .query_async(&mut raw().await)
        .await
        .unwrap();
    let (ms, seq) = ids[0].0.split_once('-').unwrap();
    let expected = (ms.parse::<i64>().unwrap() << 20) + seq.parse::<i64>().unwrap();
    assert_eq!(first.sequence, Some(expected));

    let stats = backend.broker_stats().await.unwrap().unwrap();
    assert!(stats["connected_clients"].as_i64().unwrap() >= 1, "{stats}");
    assert_eq!(stats["streams"][&topic], 2, "{stats}");
    backend.teardown().await.unwrap();
}

#[tokio::test]
async fn fan_out_delivers_everything_to_each_subscriber_in_order() {
    let Some(backend) = backend("fan_out").await else {
        return;
    };
    let topic = backend.topic_name(&common::run_id("fan-out"), "news");
    let _cleanup = Cleanup::of(&[&topic]);
    let mut subs = Vec::new();
    for _ in 0..3 {
        subs.push(
            backend
                .subscribe(SubscriptionSpec::new(topic.as_str()))
                .await
                .unwrap(),
        );
    }
    let producer = backend.producer().await.unwrap();
    for i in 0..100 {
        publish(&producer, &topic, format!("m{i}")).await;
    }
    for sub in &mut subs {
        for i in 0..100 {
            assert_eq!(text(&next(sub).await), format!("m{i}"));
        }
        assert!(stays_quiet(sub, QUIET).await);
    }
    // One group per subscriber.
    assert_eq!(groups(&topic).await.len(), 3);
    backend.teardown().await.unwrap();
    assert!(!exists(&topic).await);
}

#[tokio::test]
async fn a_group_of_three_shares_messages_without_duplicates() {
    let Some(backend) = backend("competing").await else {
        return;
    };
    let topic = backend.topic_name(&common::run_id("competing"), "work");
    let _cleanup = Cleanup::of(&[&topic]);
    backend
        .prepare(
            &RunTopology::new("competing").topic(TopicSpec::new(topic.as_str()).group("workers")),
        )
        .await
        .unwrap();
    assert_eq!(groups(&topic).await, ["workers"]);
    let mut subs = Vec::new();
    for _ in 0..3 {
        subs.push(
            backend
                .subscribe(SubscriptionSpec::new(topic.as_str()).group("workers"))
                .await
                .unwrap(),
        );
    }
    let producer = backend.producer().await.unwrap();
    let total = 300;
    let mut pending: FuturesOrdered<_> = (0..total)
        .map(|i| producer.publish(PublishRequest::new(topic.as_str(), format!("job-{i}")).one()))
        .collect();
    while let Some(outcome) = pending.next().await {
        assert_eq!(outcome, PublishOutcome::Ok);
    }
    let mut merged = futures::stream::select_all(subs.iter_mut());
    let mut seen = BTreeSet::new();
    while seen.len() < total {
        let item = tokio::time::timeout(PATIENCE, merged.next())
            .await
            .expect("deliveries keep coming")
            .expect("streams open")
            .unwrap();
        assert!(seen.insert(text(&item).to_owned()), "duplicate {item:?}");
    }
    assert!(
        tokio::time::timeout(QUIET, merged.next()).await.is_err(),
        "nothing beyond the {total} messages"
    );
    drop(merged);
    // Three distinct consumers in one group.
    assert_eq!(consumers(&topic, "workers").await.len(), 3);
    backend.teardown().await.unwrap();
}

#[tokio::test]
async fn nack_redelivers_with_the_next_attempt_and_ack_ends_it() {
    let Some(backend) = backend("nack").await else {
        return;
    };
    let backend = backend.with_ack_wait(Duration::from_secs(1));
    let topic = backend.topic_name(&common::run_id("nack"), "jobs");
    let _cleanup = Cleanup::of(&[&topic]);
    let (mut sub, producer) = common::subscriber_and_producer(
        &backend,
        SubscriptionSpec::new(topic.as_str()).ack(AckMode::Manual),
    )
    .await;
    publish(&producer, &topic, "job").await;

    let first = next(&mut sub).await;
    assert!(!first.redelivered);
    assert_eq!(first.attempt, Some(1));
    sub.nack(&first).await.unwrap();
    let again = next(&mut sub).await;
    assert_eq!(text(&again), "job");
    assert_eq!(again.sequence, first.sequence);
    assert!(again.redelivered);
    assert_eq!(again.attempt, Some(2));
    sub.ack(&again).await.unwrap();
    // Acked: not redelivered after the ack wait (1 s) either.
    assert!(stays_quiet(&mut sub, Duration::from_millis(2500)).await);
    assert_eq!(sub.rejected_acks(), 0);
    sub.unsubscribe().await.unwrap();
    backend.teardown().await.unwrap();
}

#[tokio::test]
async fn unacked_messages_come_back_after_the_ack_wait() {
    let Some(backend) = backend("ack_wait").await else {
        return;
    };
    // The default ack wait (5 s), as a run uses it.
    let topic = backend.topic_name(&common::run_id("ack-wait"), "jobs");
    let _cleanup = Cleanup::of(&[&topic]);
    let (mut sub, producer) = common::subscriber_and_producer(
        &backend,
        SubscriptionSpec::new(topic.as_str()).ack(AckMode::Manual),
    )
    .await;
    publish(&producer, &topic, "a").await;
    publish(&producer, &topic, "b").await;
    let a = next(&mut sub).await;
    let b = next(&mut sub).await;
    assert_eq!((text(&a), text(&b)), ("a", "b"));
    sub.ack(&b).await.unwrap();
    // "a" is not acknowledged: it comes back once, marked, with the server's count.
    let again = next(&mut sub).await;
    assert_eq!(text(&again), "a");
    assert!(again.redelivered);
    assert_eq!(again.attempt, Some(2));
    sub.ack(&again).await.unwrap();
    // An ack for something no longer pending is refused by the server, and counted.
    sub.ack(&b).await.unwrap();
    sub.unsubscribe().await.unwrap();
    assert_eq!(sub.rejected_acks(), 1);
    backend.teardown().await.unwrap();
}

#[tokio::test]
async fn a_leaving_member_hands_its_unacked_messages_to_the_group() {
    let Some(backend) = backend("leaving").await else {
        return;
    };
    let topic = backend.topic_name(&common::run_id("leaving"), "jobs");
    let _cleanup = Cleanup::of(&[&topic]);
    let spec = SubscriptionSpec::new(topic.as_str())
        .group("workers")
        .ack(AckMode::Manual);
    let mut first = backend.subscribe(spec.clone()).await.unwrap();
    let producer = backend.producer().await.unwrap();
    publish(&producer, &topic, "job").await;
    let taken = next(&mut first).await;
    assert_eq!(taken.attempt, Some(1));
    // Leaves without acking: the entry must not be lost with its consumer.
    first.unsubscribe().await.unwrap();
    assert!(first.next().await.is_none());

    let mut second = backend.subscribe(spec).await.unwrap();
    let again = next(&mut second).await;
    assert_eq!(text(&again), "job");
    assert!(again.redelivered);
    assert_eq!(again.attempt, Some(2));
    second.ack(&again).await.unwrap();
    // Nothing pending any more, so this member is deleted from the group on leaving.
    second.unsubscribe().await.unwrap();
    let left = consumers(&topic, "workers").await;
    assert_eq!(
        left.len(),
        1,
        "only the member that left with a pending entry: {left:?}"
    );
    backend.teardown().await.unwrap();
}

#[tokio::test]
async fn replay_from_the_beginning_and_after_a_sequence() {
    let Some(backend) = backend("replay").await else {
        return;
    };
    let topic = backend.topic_name(&common::run_id("replay"), "log");
    let _cleanup = Cleanup::of(&[&topic]);
    let producer = backend.producer().await.unwrap();
    for i in 0..5 {
        publish(&producer, &topic, format!("old-{i}")).await;
    }
    let mut latest = backend
        .subscribe(SubscriptionSpec::new(topic.as_str()))
        .await
        .unwrap();
    let mut all = backend
        .subscribe(SubscriptionSpec::new(topic.as_str()).start(StartPosition::Beginning))
        .await
        .unwrap();
    let mut sequences = Vec::new();
    for i in 0..5 {
        let d = next(&mut all).await;
        assert_eq!(text(&d), format!("old-{i}"));
        sequences.push(d.sequence.unwrap());
    }
    let mut after = backend
        .subscribe(
            SubscriptionSpec::new(topic.as_str()).start(StartPosition::AfterSequence(sequences[2])),
        )
        .await
        .unwrap();
    assert_eq!(text(&next(&mut after).await), "old-3");
    assert_eq!(text(&next(&mut after).await), "old-4");
    // Latest saw nothing published before it was ready...
    assert!(stays_quiet(&mut latest, QUIET).await);
    // ... and everyone sees what comes next.
    publish(&producer, &topic, "new").await;
    for sub in [&mut latest, &mut all, &mut after] {
        assert_eq!(text(&next(sub).await), "new");
    }
    backend.teardown().await.unwrap();
}

#[tokio::test]
async fn unsubscribe_stops_deliveries_and_removes_the_consumer() {
    let Some(backend) = backend("unsubscribe").await else {
        return;
    };
    let topic = backend.topic_name(&common::run_id("unsubscribe"), "t");
    let _cleanup = Cleanup::of(&[&topic]);
    let mut fan = backend
        .subscribe(SubscriptionSpec::new(topic.as_str()))
        .await
        .unwrap();
    let mut member = backend
        .subscribe(SubscriptionSpec::new(topic.as_str()).group("g"))
        .await
        .unwrap();
    let producer = backend.producer().await.unwrap();
    publish(&producer, &topic, "before").await;
    assert_eq!(text(&next(&mut fan).await), "before");
    assert_eq!(text(&next(&mut member).await), "before");
    assert_eq!(groups(&topic).await.len(), 2);

    fan.unsubscribe().await.unwrap();
    member.unsubscribe().await.unwrap();
    publish(&producer, &topic, "after").await;
    assert!(fan.next().await.is_none());
    assert!(member.next().await.is_none());
    // The fan-out group is destroyed; the shared group stays, without the member.
    assert_eq!(groups(&topic).await, ["g"]);
    assert!(consumers(&topic, "g").await.is_empty());

    // Dropping a subscription leaves too (in the background).
    let dropped = backend
        .subscribe(SubscriptionSpec::new(topic.as_str()))
        .await
        .unwrap();
    assert_eq!(groups(&topic).await.len(), 2);
    drop(dropped);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while groups(&topic).await.len() != 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "group of the dropped subscription still there"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    backend.teardown().await.unwrap();
}

#[tokio::test]
async fn a_one_mib_binary_payload_round_trips() {
    let Some(backend) = backend("one_mib").await else {
        return;
    };
    let topic = backend.topic_name(&common::run_id("big"), "blob");
    let _cleanup = Cleanup::of(&[&topic]);
    let (mut sub, producer) =
        common::subscriber_and_producer(&backend, SubscriptionSpec::new(topic.as_str())).await;
    let payload: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
    publish(&producer, &topic, payload.clone()).await;
    publish(&producer, &topic, payload.clone()).await;
    for _ in 0..2 {
        assert!(next(&mut sub).await.payload == payload);
    }
    backend.teardown().await.unwrap();
}

#[tokio::test]
async fn five_thousand_pipelined_publishes_arrive_in_order() {
    let Some(backend) = backend("pipelined").await else {
        return;
    };
    let topic = backend.topic_name(&common::run_id("pipelined"), "firehose");
    let _cleanup = Cleanup::of(&[&topic]);
    let (mut sub, producer) =
        common::subscriber_and_producer(&backend, SubscriptionSpec::new(topic.as_str())).await;
    let total = 5000;
    let mut pending: FuturesOrdered<_> = (0..total)
        .map(|i| producer.publish(PublishRequest::new(topic.as_str(), format!("{i:05}"))))
        .collect();
    let mut confirmed = 0;
    while let Some(outcome) = pending.next().await {
        assert_eq!(outcome, PublishOutcome::Ok);
        confirmed += 1;
    }
    assert_eq!(confirmed, total);
    let mut last_sequence = None;
    for i in 0..total {
        let d = next(&mut sub).await;
        assert_eq!(text(&d), format!("{i:05}"));
        assert!(d.sequence > last_sequence);
        last_sequence = d.sequence;
    }
    backend.teardown().await.unwrap();
}

#[tokio::test]
async fn batches_and_single_publishes_keep_their_order() {
    let Some(backend) = backend("batches").await else {
        return;
    };
    let topic = backend.topic_name(&common::run_id("batches"), "batches");
    let _cleanup = Cleanup::of(&[&topic]);
    let (mut sub, producer) =
        common::subscriber_and_producer(&backend, SubscriptionSpec::new(topic.as_str())).await;
    // Batches of 1, 7, 700 and 3000 (larger than one pipeline of single publishes), each
    // followed by a single publish, all in flight together; and an empty batch.
    let mut pending = FuturesOrdered::new();
    let mut next_payload = 0;
    for size in [1, 7, 700, 3000] {
        let batch: Vec<_> = (next_payload..next_payload + size)
            .map(|i| PublishRequest::new(topic.as_str(), format!("{i:05}")))
            .collect();
        next_payload += size;
        pending.push_back(producer.publish_batch(batch));
        let single = producer.publish(PublishRequest::new(
            topic.as_str(),
            format!("{next_payload:05}"),
        ));
        next_payload += 1;
        pending.push_back(Box::pin(async move { vec![single.await] }));
    }
    assert!(producer.publish_batch(Vec::new()).await.is_empty());
    let mut confirmed = 0;
    while let Some(outcomes) = pending.next().await {
        for outcome in outcomes {
            assert_eq!(outcome, PublishOutcome::Ok);
            confirmed += 1;
        }
    }
    assert_eq!(confirmed, next_payload);
    let mut last_sequence = None;
    for i in 0..next_payload {
        let d = next(&mut sub).await;
        assert_eq!(text(&d), format!("{i:05}"));
        assert!(d.sequence > last_sequence);
        last_sequence = d.sequence;
    }
    backend.teardown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_batches_in_flight_at_once_arrive_in_order() {
    let Some(backend) = backend("many_batches").await else {
        return;
    };
    let topic = backend.topic_name(&common::run_id("many_batches"), "batches");
    let _cleanup = Cleanup::of(&[&topic]);
    let (mut sub, producer) =
        common::subscriber_and_producer(&backend, SubscriptionSpec::new(topic.as_str())).await;
    // More batches in flight than go straight onto the connection (32): the rest take
    // the forwarder's queue, behind them.
    let (batches, size) = (100, 50);
    let mut pending: FuturesOrdered<_> = (0..batches)
        .map(|b| {
            producer.publish_batch(
                (0..size)
                    .map(|i| PublishRequest::new(topic.as_str(), format!("{:05}", b * size + i)))
                    .collect(),
            )
        })
        .collect();
    while let Some(outcomes) = pending.next().await {
        assert!(
            outcomes.iter().all(|o| *o == PublishOutcome::Ok),
            "{outcomes:?}"
        );
    }
    for i in 0..batches * size {
        assert_eq!(text(&next(&mut sub).await), format!("{i:05}"));
    }
    backend.teardown().await.unwrap();
}

#[tokio::test]
async fn a_batch_reports_each_refusal_and_a_lost_connection_for_all() {
    let Some(backend) = backend("batch_fail").await else {
        return;
    };
    let run = common::run_id("batch_fail");
    let topic = backend.topic_name(&run, "t");
    let wrong = backend.topic_name(&run, "not-a-stream");
    let _cleanup = Cleanup::of(&[&topic, &wrong]);
    let mut con = raw().await;
    let _: () = redis::cmd("SET")
        .arg(&wrong)
        .arg("x")
        .query_async(&mut con)
        .await
        .unwrap();
    let producer = backend.producer().await.unwrap();
    let outcomes = producer
        .publish_batch(vec![
            PublishRequest::new(topic.as_str(), "a"),
            PublishRequest::new(wrong.as_str(), "b"),
            PublishRequest::new(topic.as_str(), "c"),
        ])
        .await;
    assert_eq!(outcomes[0], PublishOutcome::Ok);
    assert!(
        matches!(&outcomes[1], PublishOutcome::Failed(why) if why.contains("WRONGTYPE")),
        "{:?}",
        outcomes[1]
    );
    assert_eq!(outcomes[2], PublishOutcome::Ok);

    let prefix = backend.client_name_prefix().to_owned();
    let killed =
        kill_clients(|name| name.starts_with(&prefix) && name.contains("-producer-")).await;
    assert_eq!(killed, 1);
    let batch = || vec![PublishRequest::new(topic.as_str(), "x"); 3];
    let outcomes = producer.publish_batch(batch()).await;
    assert_eq!(outcomes.len(), 3);
    assert!(outcomes.iter().all(|o| !o.is_confirmed()), "{outcomes:?}");
    let outcomes = producer.publish_batch(batch()).await;
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, PublishOutcome::Failed(_))),
        "{outcomes:?}"
    );
    let _: () = redis::cmd("UNLINK")
        .arg(&wrong)
        .query_async(&mut con)
        .await
        .unwrap();
    backend.teardown().await.unwrap();
}

#[tokio::test]
async fn retention_keeps_exactly_the_tail() {
    let Some(backend) = backend("retention").await else {
        return;
    };
    let topic = backend.topic_name(&common::run_id("retention"), "ticks");
    let _cleanup = Cleanup::of(&[&topic]);
    backend
        .prepare(
            &RunTopology::new("retention").topic(TopicSpec::new(topic.as_str()).max_messages(10)),
        )
        .await
        .unwrap();
    let producer = backend.producer().await.unwrap();
    for i in 0..25 {
        publish(&producer, &topic, format!("t{i}")).await;
    }
    let len: i64 = redis::cmd("XLEN")
        .arg(&topic)
        .query_async(&mut raw().await)
        .await
        .unwrap();
    assert_eq!(len, 10);
    let mut late = backend
        .subscribe(SubscriptionSpec::new(topic.as_str()).start(StartPosition::Beginning))
        .await
        .unwrap();
    for i in 15..25 {
        assert_eq!(text(&next(&mut late).await), format!("t{i}"));
    }
    assert!(stays_quiet(&mut late, QUIET).await);
    backend.teardown().await.unwrap();
}

#[tokio::test]
async fn teardown_deletes_every_stream_it_created() {
    let Some(backend) = backend("teardown").await else {
        return;
    };
    let run = common::run_id("teardown");
    let prepared = backend.topic_name(&run, "prepared");
    let subscribed = backend.topic_name(&run, "subscribed");
    let published = backend.topic_name(&run, "published");
    let _cleanup = Cleanup::of(&[&prepared, &subscribed, &published]);
    backend
        .prepare(&RunTopology::new(&run).topic(TopicSpec::new(prepared.as_str()).group("g")))
        .await
        .unwrap();
    let _sub = backend
        .subscribe(SubscriptionSpec::new(subscribed.as_str()))
        .await
        .unwrap();
    let producer = backend.producer().await.unwrap();
    publish(&producer, &published, "x").await;
    for key in [&prepared, &subscribed, &published] {
        assert!(exists(key).await, "{key}");
    }
    let mut expected = vec![prepared.clone(), subscribed.clone(), published.clone()];
    expected.sort();
    assert_eq!(backend.streams(), expected);
    backend.teardown().await.unwrap();
    for key in [&prepared, &subscribed, &published] {
        assert!(!exists(key).await, "{key}");
    }
    assert!(backend.streams().is_empty());
}

#[tokio::test]
async fn unreachable_url_is_a_connect_error_naming_it() {
    // A port nobody listens on: bind one, note it, close it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let url = format!("redis://{addr}");
    let options = ConnectOptions::new().connect_timeout(Duration::from_secs(3));
    let err = tokio::time::timeout(PATIENCE, RedisBackend::connect(&url, options))
        .await
        .expect("connect gives up within its timeout")
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Connect);
    assert_eq!(
        err.to_string(),
        format!("cannot connect to redis at {url} (tried {addr}: connection refused)")
    );
}

#[tokio::test]
async fn malformed_urls_are_invalid() {
    for url in [
        "redis://127.0.0.1:notaport",
        "redis://",
        "http://127.0.0.1:6379",
    ] {
        let err = RedisBackend::connect(url, ConnectOptions::new())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidUrl, "{url}: {err}");
        assert!(
            err.to_string()
                .contains("redis://[[user]:password@]host[:port][/db]"),
            "{err}"
        );
    }
}

#[tokio::test]
async fn a_refused_login_is_rejected_without_showing_the_password() {
    if common::backend(KIND, "refused_login").await.is_none() {
        return;
    }
    let url = common::url(KIND).replacen("redis://", "redis://nobody:hunter2@", 1);
    let err = RedisBackend::connect(&url, common::options())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Rejected, "{err}");
    let message = err.to_string();
    assert!(
        message.contains("refused the login for user 'nobody'"),
        "{message}"
    );
    assert!(message.contains("nobody:***@"), "{message}");
    assert!(!message.contains("hunter2"), "{message}");
}

#[tokio::test]
async fn unsupported_requests_name_the_capability() {
    let Some(backend) = backend("unsupported").await else {
        return;
    };
    let topic = backend.topic_name(&common::run_id("unsupported"), "t");
    let _cleanup = Cleanup::of(&[&topic]);
    let err = backend
        .prepare(&RunTopology::new("u").topic(TopicSpec::new(topic.as_str()).dead_letter(true)))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported);
    assert!(err.to_string().contains("dead letter"), "{err}");
    let producer = backend.producer().await.unwrap();
    match producer
        .publish(PublishRequest::new(topic.as_str(), "x").id("m-1"))
        .await
    {
        PublishOutcome::Failed(reason) => assert!(reason.contains("dedup"), "{reason}"),
        other => panic!("expected a failure, got {other:?}"),
    }
    backend.teardown().await.unwrap();
}

#[tokio::test]
async fn a_lost_connection_fails_publishes_and_ends_subscriptions_with_an_error() {
    let Some(backend) = backend("lost").await else {
        return;
    };
    let topic = backend.topic_name(&common::run_id("lost"), "t");
    let _cleanup = Cleanup::of(&[&topic]);
    let (mut sub, producer) =
        common::subscriber_and_producer(&backend, SubscriptionSpec::new(topic.as_str())).await;
    publish(&producer, &topic, "before").await;
    assert_eq!(text(&next(&mut sub).await), "before");

    // Kill this backend's producer and reader connections, as a network failure would.
    let prefix = backend.client_name_prefix().to_owned();
    let killed = kill_clients(|name| {
        name.starts_with(&prefix) && (name.contains("-producer-") || name.ends_with("-reader"))
    })
    .await;
    assert_eq!(killed, 2, "{:?}", client_names(&prefix).await);

    let outcome = producer
        .publish(PublishRequest::new(topic.as_str(), "after"))
        .await;
    assert!(!outcome.is_confirmed(), "{outcome}");
    let outcome = producer
        .publish(PublishRequest::new(topic.as_str(), "later"))
        .await;
    assert!(matches!(outcome, PublishOutcome::Failed(_)), "{outcome}");
    match tokio::time::timeout(PATIENCE, sub.next()).await {
        Ok(Some(Err(e))) => assert_eq!(e.kind(), ErrorKind::Closed, "{e}"),
        other => panic!("expected an error item, got {other:?}"),
    }
    assert!(sub.next().await.is_none());
    backend.teardown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_control_connection_is_dialled_again_and_the_request_sent_again() {
    if common::backend(KIND, "control_lost").await.is_none() {
        return;
    }
    let ack_wait = Duration::from_secs(1);
    let (proxy, backend) = through_proxy(ack_wait).await;
    let prefix = backend.client_name_prefix().to_owned();
    let topic = backend.topic_name(&common::run_id("control-lost"), "jobs");
    let _cleanup = Cleanup::of(&[&topic]);

    // The control connection fails silently: the XGROUP CREATE of prepare is its first
    // news of it, so that request fails as lost and is sent again on a new connection.
    assert_eq!(proxy.sever(), 1, "only the control connection is open");
    backend
        .prepare(&RunTopology::new("control-lost").topic(TopicSpec::new(topic.as_str()).group("g")))
        .await
        .expect("prepare sent again on a new control connection");
    assert_eq!(groups(&topic).await, ["g"]);

    // Again, under subscribe's XGROUP CREATE of a fan-out group.
    assert_eq!(proxy.sever(), 1);
    let (mut sub, producer) = common::subscriber_and_producer(
        &backend,
        SubscriptionSpec::new(topic.as_str()).ack(AckMode::Manual),
    )
    .await;
    assert_eq!(groups(&topic).await.len(), 2);
    publish(&producer, &topic, "one").await;
    let one = next(&mut sub).await;

    // The server drops the control connection (as an idle timeout would). The
    // subscription reads on its own connection and carries on; its acks go out on a new
    // control connection, under the same name.
    let control = format!("{prefix}-control");
    assert_eq!(kill_clients(|name| name == control).await, 1);
    sub.ack(&one).await.unwrap();
    publish(&producer, &topic, "two").await;
    let two = next(&mut sub).await;
    assert_eq!(text(&two), "two");
    sub.ack(&two).await.unwrap();
    // Both acks reached the server: nothing comes back after the ack wait.
    assert!(stays_quiet(&mut sub, ack_wait * 2 + QUIET).await);
    assert_eq!(sub.rejected_acks(), 0);
    assert!(client_names(&prefix).await.contains(&control));

    sub.unsubscribe().await.unwrap();
    assert_eq!(groups(&topic).await, ["g"]);
    backend.teardown().await.unwrap();
    assert!(!exists(&topic).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_every_connection_is_cut_a_new_member_and_producer_take_over() {
    if common::backend(KIND, "cut").await.is_none() {
        return;
    }
    // A short ack wait, so an entry left unacknowledged comes back soon.
    let ack_wait = Duration::from_secs(1);
    let (proxy, backend) = through_proxy(ack_wait).await;
    let topic = backend.topic_name(&common::run_id("cut"), "jobs");
    let _cleanup = Cleanup::of(&[&topic]);
    backend
        .prepare(&RunTopology::new("cut").topic(TopicSpec::new(topic.as_str()).group("workers")))
        .await
        .unwrap();
    let spec = SubscriptionSpec::new(topic.as_str())
        .group("workers")
        .ack(AckMode::Manual);
    let mut old = backend.subscribe(spec.clone()).await.unwrap();
    let old_producer = backend.producer().await.unwrap();
    publish(&old_producer, &topic, "acked").await;
    publish(&old_producer, &topic, "unacked").await;
    let acked = next(&mut old).await;
    let unacked = next(&mut old).await;
    assert_eq!((text(&acked), text(&unacked)), ("acked", "unacked"));
    old.ack(&acked).await.unwrap();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while pending(&topic, "workers").await.len() != 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the ack never arrived"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Redis goes away: every connection is reset, and new ones are turned away.
    proxy.refuse(true);
    assert_eq!(proxy.cut(), 3, "control, producer and reader connections");
    // The old subscription ends with an error; it does not resume by itself.
    match tokio::time::timeout(PATIENCE, old.next()).await {
        Ok(Some(Err(e))) => assert_eq!(e.kind(), ErrorKind::Closed, "{e}"),
        other => panic!("expected an error item, got {other:?}"),
    }
    assert!(old.next().await.is_none());
    let outcome = old_producer
        .publish(PublishRequest::new(topic.as_str(), "lost"))
        .await;
    assert!(!outcome.is_confirmed(), "{outcome}");
    // Control requests fail with the error of dialling again, saying what they were for.
    let err = backend.broker_stats().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Connect, "{err}");
    assert!(
        err.to_string()
            .starts_with("broker stats: INFO: cannot connect to redis at"),
        "{err}"
    );
    match backend.subscribe(spec.clone()).await {
        Ok(_) => panic!("subscribed while redis is away"),
        Err(e) => assert_eq!(e.kind(), ErrorKind::Connect, "{e}"),
    }
    // The old member could not hand its entry to the group on leaving: still its own.
    let (_, holder) = pending(&topic, "workers").await.pop().unwrap();
    assert!(holder.starts_with(backend.client_name_prefix()), "{holder}");

    // Redis is back: the same backend makes a new member of the group and a new producer.
    proxy.refuse(false);
    let mut new = backend
        .subscribe(spec)
        .await
        .expect("subscribe after the cut");
    let producer = backend.producer().await.expect("a producer after the cut");
    publish(&producer, &topic, "after").await;
    // Each acked as it arrives, so none stays unacknowledged for the ack wait.
    let mut got = Vec::new();
    for _ in 0..2 {
        let delivery = next(&mut new).await;
        new.ack(&delivery).await.unwrap();
        got.push(delivery);
    }
    got.sort_by(|a, b| text(a).cmp(text(b)));
    let [after, back] = &got[..] else {
        unreachable!()
    };
    assert_eq!((text(after), text(back)), ("after", "unacked"));
    assert!(!after.redelivered);
    // Claimed (XAUTOCLAIM) from the old member after the ack wait.
    assert!(back.redelivered);
    assert_eq!(back.attempt, Some(2));
    assert_eq!(back.sequence, unacked.sequence);
    assert!(stays_quiet(&mut new, ack_wait * 2 + QUIET).await);
    assert_eq!(new.rejected_acks(), 0);
    assert!(pending(&topic, "workers").await.is_empty());
    let stats = backend.broker_stats().await.unwrap().unwrap();
    assert_eq!(stats["streams"][&topic], 3, "{stats}");
    new.unsubscribe().await.unwrap();
    backend.teardown().await.unwrap();
    assert!(!exists(&topic).await);
}
