//! The Kafka adapter against the Kafka-compatible broker on this machine
//! (`BROKERBENCH_KAFKA_URL`, default `kafka://127.0.0.1:9092`). Every test skips with a
//! SKIPPED line when the broker is not there, and tears down what it created even when
//! it fails. What the tests check through the broker's own API (topics, groups, commit
//! metadata) they ask with rdkafka's admin and consumer clients directly.

#![cfg(feature = "kafka")]

mod common;

use common::text;

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use brokerbench_adapters::endpoint::endpoints;
use brokerbench_adapters::kafka::{KafkaBackend, group_id};
use brokerbench_adapters::{
    AckMode, Backend, BackendKind, ConnectOptions, Delivery, ErrorKind, Producer, PublishOutcome,
    PublishRequest, RunTopology, StartPosition, Subscription, SubscriptionSpec, TopicSpec, connect,
};
use futures::{FutureExt, StreamExt};
use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

const KIND: BackendKind = BackendKind::Kafka;

/// How long a test waits for something that should happen promptly.
const PATIENCE: Duration = Duration::from_secs(20);
/// How long a test watches for something that should not happen.
const QUIET: Duration = Duration::from_millis(500);

/// Runs `body` against the local broker (or skips), then tears down whatever the backend
/// created, also when `body` panicked.
async fn with_backend<F, Fut>(test: &str, body: F)
where
    F: FnOnce(Arc<dyn Backend>, String) -> Fut,
    Fut: Future<Output = ()>,
{
    let Some(backend) = common::backend(KIND, test).await else {
        return;
    };
    let backend: Arc<dyn Backend> = Arc::from(backend);
    let outcome = std::panic::AssertUnwindSafe(body(backend.clone(), common::run_id(test)))
        .catch_unwind()
        .await;
    let torn_down = backend.teardown().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    torn_down.unwrap();
}

/// `bootstrap.servers` of the broker under test.
fn bootstrap() -> String {
    endpoints(KIND, &common::url(KIND))
        .unwrap()
        .iter()
        .map(|e| e.host_port())
        .collect::<Vec<_>>()
        .join(",")
}

fn admin() -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .create()
        .unwrap()
}

/// The next delivery, failing the test on an error item, an end, or a long wait.
async fn next(sub: &mut Subscription) -> Delivery {
    common::next_within(sub, PATIENCE).await
}

/// The next `n` deliveries.
async fn take(sub: &mut Subscription, n: usize) -> Vec<Delivery> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(next(sub).await);
    }
    out
}

/// Whether nothing arrives for a while.
async fn stays_quiet(sub: &mut Subscription) -> bool {
    common::quiet_for(sub, QUIET).await
}

/// Publishes `requests` pipelined (all in flight at once) and checks every one is Ok.
async fn publish_all(producer: &Producer, requests: impl IntoIterator<Item = PublishRequest>) {
    let outcomes =
        futures::future::join_all(requests.into_iter().map(|r| producer.publish(r))).await;
    for (i, outcome) in outcomes.iter().enumerate() {
        assert_eq!(*outcome, PublishOutcome::Ok, "publish #{i}");
    }
}

/// Publishes `requests` one at a time, each confirmed before the next is sent, so each
/// message is a record batch of its own. For tests that start reading at an offset in
/// the middle of what was published: tansu 0.6 answers a fetch from an offset inside a
/// record batch with the batches that *start* at or after it, skipping the rest of that
/// batch (Apache Kafka returns the batch and the client skips the records before the
/// offset), so such a start would lose messages there for a reason that is not the
/// adapter's.
async fn publish_one_by_one(
    producer: &Producer,
    requests: impl IntoIterator<Item = PublishRequest>,
) {
    for (i, request) in requests.into_iter().enumerate() {
        assert_eq!(
            producer.publish(request).await,
            PublishOutcome::Ok,
            "publish #{i}"
        );
    }
}

fn messages(topic: &str, range: std::ops::Range<usize>) -> Vec<PublishRequest> {
    range
        .map(|i| PublishRequest::new(topic, format!("m{i}")))
        .collect()
}

async fn prepare(backend: &Arc<dyn Backend>, run: &str, topics: Vec<TopicSpec>) {
    let mut topology = RunTopology::new(run);
    for topic in topics {
        topology = topology.topic(topic);
    }
    backend.prepare(&topology).await.unwrap();
}

#[tokio::test]
async fn round_trip_carries_key_and_offset() {
    with_backend("round-trip", |backend, run| async move {
        let version = backend.server_version().expect("a server description");
        assert!(version.starts_with("Kafka protocol, cluster "), "{version}");
        let topic = backend.topic_name(&run, "chat");
        prepare(&backend, &run, vec![TopicSpec::new(&topic)]).await;
        let mut sub = backend
            .subscribe(SubscriptionSpec::new(topic.as_str()))
            .await
            .unwrap();
        let producer = backend.producer().await.unwrap();
        let outcome = producer
            .publish(PublishRequest::new(topic.as_str(), "hello").key("customer-7"))
            .await;
        assert_eq!(outcome, PublishOutcome::Ok);
        let d = next(&mut sub).await;
        assert_eq!(text(&d), "hello");
        assert_eq!(d.key.as_deref(), Some("customer-7"));
        assert_eq!(d.sequence, Some(0));
        assert_eq!(&*d.topic, topic);
        assert!(!d.redelivered);
        // Auto-ack: ack is a no-op, nack needs manual acks.
        assert!(sub.ack(&d).await.is_ok());
        assert_eq!(
            sub.nack(&d).await.unwrap_err().kind(),
            ErrorKind::Unsupported
        );
    })
    .await;
}

#[tokio::test]
async fn fan_out_reaches_three_subscribers_in_order() {
    with_backend("fan-out", |backend, run| async move {
        let topic = backend.topic_name(&run, "news");
        prepare(&backend, &run, vec![TopicSpec::new(&topic)]).await;
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
        publish_all(&producer, messages(&topic, 0..200)).await;
        for sub in &mut subs {
            let got = take(sub, 200).await;
            for (i, d) in got.iter().enumerate() {
                assert_eq!(text(d), format!("m{i}"));
                assert_eq!(d.sequence, Some(i as i64));
            }
            assert!(stays_quiet(sub).await);
        }
    })
    .await;
}

/// Connects a [`KafkaBackend`] itself, for what only it tells (its consumers), runs
/// `body` (or skips) and tears down, also when `body` panicked.
async fn with_kafka<F, Fut>(test: &str, body: F)
where
    F: FnOnce(Arc<KafkaBackend>, String) -> Fut,
    Fut: Future<Output = ()>,
{
    let backend = match KafkaBackend::connect(&common::url(KIND), common::options()).await {
        Ok(backend) => Arc::new(backend),
        Err(err) if common::required(KIND) => panic!(
            "{test}: the {KIND} broker is required (BROKERBENCH_REQUIRE_BACKENDS) but: {err}"
        ),
        Err(err) => return common::skip(KIND, test, &err.to_string()),
    };
    let outcome = std::panic::AssertUnwindSafe(body(backend.clone(), common::run_id(test)))
        .catch_unwind()
        .await;
    let torn_down = backend.teardown().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    torn_down.unwrap();
}

/// Waits until `backend` has `n` open consumers (a reader closes its consumer on a
/// thread of its own, shortly after its last subscription left).
async fn open_consumers_become(backend: &KafkaBackend, n: usize) {
    let deadline = Instant::now() + PATIENCE;
    while backend.open_consumers() != n {
        assert!(
            Instant::now() < deadline,
            "{} open consumers, not {n}",
            backend.open_consumers()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn ten_fan_out_subscribers_share_one_consumer_and_each_gets_everything_in_order() {
    with_kafka("shared-ten", |backend, run| async move {
        let topic = backend.topic_name(&run, "news");
        backend
            .prepare(&RunTopology::new(&run).topic(TopicSpec::new(&topic)))
            .await
            .unwrap();
        let before = backend.consumers_created();
        // Subscribing all at once: the first starts the consumer, the others attach to
        // it while it starts, and every one resolves only once it is assigned.
        let subscribing = (0..10).map(|_| backend.subscribe(SubscriptionSpec::new(topic.as_str())));
        let mut subs: Vec<Subscription> = futures::future::join_all(subscribing)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(
            backend.consumers_created() - before,
            1,
            "one consumer for ten"
        );
        assert_eq!(backend.open_consumers(), 1);
        let producer = backend.producer().await.unwrap();
        publish_all(&producer, messages(&topic, 0..300)).await;
        for sub in &mut subs {
            let got = take(sub, 300).await;
            for (i, d) in got.iter().enumerate() {
                assert_eq!(text(d), format!("m{i}"));
                assert_eq!(d.sequence, Some(i as i64));
            }
        }
        assert!(stays_quiet(&mut subs[0]).await);
        assert!(stays_quiet(&mut subs[9]).await);
        // What cannot share keeps a consumer of its own: a replay, a group member.
        let mut replay = backend
            .subscribe(SubscriptionSpec::new(topic.as_str()).start(StartPosition::Beginning))
            .await
            .unwrap();
        let _member = backend
            .subscribe(SubscriptionSpec::new(topic.as_str()).group("g"))
            .await
            .unwrap();
        assert_eq!(backend.consumers_created() - before, 3);
        assert_eq!(text(&next(&mut replay).await), "m0");
    })
    .await;
}

#[tokio::test]
async fn a_late_subscriber_to_a_running_shared_consumer_gets_only_newer_messages() {
    with_kafka("shared-late", |backend, run| async move {
        let topic = backend.topic_name(&run, "feed");
        let before = backend.consumers_created();
        let mut early = backend
            .subscribe(SubscriptionSpec::new(topic.as_str()))
            .await
            .unwrap();
        let producer = backend.producer().await.unwrap();
        publish_all(&producer, messages(&topic, 0..10)).await;
        // Handed out by the shared consumer before the late one attaches.
        assert_eq!(text(&take(&mut early, 10).await[9]), "m9");
        let mut late = backend
            .subscribe(SubscriptionSpec::new(topic.as_str()))
            .await
            .unwrap();
        assert_eq!(
            backend.consumers_created() - before,
            1,
            "the late one attached"
        );
        publish_all(&producer, messages(&topic, 10..20)).await;
        for sub in [&mut early, &mut late] {
            let texts: Vec<String> = take(sub, 10)
                .await
                .iter()
                .map(|d| text(d).to_owned())
                .collect();
            let want: Vec<String> = (10..20).map(|i| format!("m{i}")).collect();
            assert_eq!(texts, want);
            assert!(stays_quiet(sub).await);
        }
    })
    .await;
}

#[tokio::test]
async fn leaving_one_shared_subscription_leaves_the_others_working_and_the_last_closes_it() {
    with_kafka("shared-leave", |backend, run| async move {
        let topic = backend.topic_name(&run, "room");
        let before = backend.consumers_created();
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
        publish_all(&producer, messages(&topic, 0..5)).await;
        for sub in &mut subs {
            assert_eq!(text(&take(sub, 5).await[4]), "m4");
        }
        let mut kept = subs.pop().unwrap();
        let mut leaving = subs.pop().unwrap();
        drop(subs);
        leaving.unsubscribe().await.unwrap();
        publish_all(&producer, messages(&topic, 5..10)).await;
        let texts: Vec<String> = take(&mut kept, 5)
            .await
            .iter()
            .map(|d| text(d).to_owned())
            .collect();
        assert_eq!(texts, ["m5", "m6", "m7", "m8", "m9"]);
        match tokio::time::timeout(PATIENCE, leaving.next()).await {
            Ok(None) => {}
            other => panic!("expected the end of the unsubscribed stream, got {other:?}"),
        }
        assert_eq!(backend.open_consumers(), 1);
        // The last one to leave closes the consumer; the next subscriber starts another.
        kept.unsubscribe().await.unwrap();
        open_consumers_become(&backend, 0).await;
        let mut again = backend
            .subscribe(SubscriptionSpec::new(topic.as_str()))
            .await
            .unwrap();
        assert_eq!(backend.consumers_created() - before, 2);
        publish_all(&producer, messages(&topic, 10..11)).await;
        assert_eq!(text(&next(&mut again).await), "m10");
        drop(again);
        open_consumers_become(&backend, 0).await;
    })
    .await;
}

/// Reads every subscription until `n` distinct payloads arrived in total; returns what
/// each one got, in order.
async fn gather(subs: &mut [Subscription], n: usize) -> Vec<Vec<Delivery>> {
    let mut got: Vec<Vec<Delivery>> = subs.iter().map(|_| Vec::new()).collect();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut total = 0;
    while total < n {
        let reads = subs
            .iter_mut()
            .enumerate()
            .map(|(i, sub)| sub.next().map(move |item| (i, item)));
        let (i, item) =
            tokio::time::timeout_at(deadline, futures::future::select_all(reads.map(Box::pin)))
                .await
                .unwrap_or_else(|_| panic!("only {total} of {n} delivered"))
                .0;
        match item {
            Some(Ok(d)) => {
                got[i].push(d);
                total += 1;
            }
            other => panic!("subscriber {i}: {other:?}"),
        }
    }
    got
}

#[tokio::test]
async fn a_group_of_three_shares_without_duplicates_and_keeps_key_order() {
    with_backend("group-of-three", |backend, run| async move {
        let topic = backend.topic_name(&run, "jobs");
        prepare(
            &backend,
            &run,
            vec![TopicSpec::new(&topic).group("workers")],
        )
        .await;
        // All three join at once, as a run's consumers do: each returns once the group's
        // rebalances have given it its share.
        let joins = (0..3)
            .map(|_| backend.subscribe(SubscriptionSpec::new(topic.as_str()).group("workers")));
        let mut subs: Vec<Subscription> = futures::future::join_all(joins)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        let producer = backend.producer().await.unwrap();
        const N: usize = 300;
        publish_all(
            &producer,
            (0..N).map(|i| {
                PublishRequest::new(topic.as_str(), format!("k{}:{i}", i % 10))
                    .one()
                    .key(format!("k{}", i % 10))
            }),
        )
        .await;
        let got = gather(&mut subs, N).await;
        let mut seen = BTreeSet::new();
        let mut owner: HashMap<String, usize> = HashMap::new();
        for (member, deliveries) in got.iter().enumerate() {
            let mut last: HashMap<String, usize> = HashMap::new();
            for d in deliveries {
                assert!(seen.insert(text(d).to_owned()), "duplicate {}", text(d));
                let key = d.key.clone().unwrap();
                let (_, i) = text(d).split_once(':').unwrap();
                let i: usize = i.parse().unwrap();
                // One key, one member, in publishing order.
                assert_eq!(*owner.entry(key.clone()).or_insert(member), member, "{key}");
                if let Some(before) = last.insert(key.clone(), i) {
                    assert!(before < i, "{key}: {before} then {i}");
                }
            }
        }
        assert_eq!(seen.len(), N);
        let busy = got.iter().filter(|d| !d.is_empty()).count();
        assert!(busy >= 2, "only {busy} member(s) got messages");
        for sub in &mut subs {
            assert!(stays_quiet(sub).await);
        }
    })
    .await;
}

#[tokio::test]
async fn more_members_than_partitions_are_ready_and_one_gets_everything() {
    with_backend("idle-member", |backend, run| async move {
        let topic = backend.topic_name(&run, "single");
        prepare(
            &backend,
            &run,
            vec![TopicSpec::new(&topic).group("g").partitions(1)],
        )
        .await;
        let mut subs = Vec::new();
        for _ in 0..2 {
            let spec = SubscriptionSpec::new(topic.as_str()).group("g");
            subs.push(backend.subscribe(spec).await.unwrap());
        }
        let producer = backend.producer().await.unwrap();
        publish_all(&producer, messages(&topic, 0..20)).await;
        let got = gather(&mut subs, 20).await;
        let sizes: Vec<usize> = got.iter().map(Vec::len).collect();
        assert!(sizes.contains(&20) && sizes.contains(&0), "{sizes:?}");
        for sub in &mut subs {
            assert!(stays_quiet(sub).await);
        }
    })
    .await;
}

/// Whether the broker returns the metadata committed with an offset (Apache Kafka does),
/// asked with a throwaway group that is deleted afterwards.
async fn broker_keeps_commit_metadata(topic: &str, run: &str) -> bool {
    let topic = topic.to_owned();
    let group = format!("{run}.metadata-probe");
    let probe_group = group.clone();
    let kept = tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap())
            .set("group.id", &probe_group)
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let mut list = TopicPartitionList::new();
        list.add_partition_offset(&topic, 0, Offset::Offset(0))
            .unwrap();
        list.find_partition(&topic, 0)
            .unwrap()
            .set_metadata("probe");
        consumer.commit(&list, CommitMode::Sync).unwrap();
        let committed = consumer
            .committed_offsets(list, Duration::from_secs(10))
            .unwrap();
        let elem = committed.find_partition(&topic, 0).unwrap();
        elem.metadata() == "probe"
    })
    .await
    .unwrap();
    let results = admin()
        .delete_groups(&[&group], &rdkafka::admin::AdminOptions::new())
        .await
        .unwrap();
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    kept
}

/// The offset group `group` has committed on partition 0 of `topic`, if any (asked
/// without joining the group).
async fn committed_offset(topic: &str, group: &str) -> Option<i64> {
    let (topic, group) = (topic.to_owned(), group.to_owned());
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap())
            .set("group.id", &group)
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let mut list = TopicPartitionList::new();
        list.add_partition(&topic, 0);
        let committed = consumer
            .committed_offsets(list, Duration::from_secs(10))
            .unwrap();
        match committed.find_partition(&topic, 0)?.offset() {
            Offset::Offset(offset) => Some(offset),
            _ => None,
        }
    })
    .await
    .unwrap()
}

/// Waits until group `group` has committed `offset` on partition 0 of `topic`: a member
/// that is dropped commits its acks as it leaves, on its reader's thread, after the drop
/// returns; a member that joins before that may start from the older commit.
async fn wait_for_commit(topic: &str, group: &str, offset: i64) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let committed = committed_offset(topic, group).await;
        if committed == Some(offset) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "group {group} on {topic}: committed {committed:?} after {PATIENCE:?}, expected {offset}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn unacked_messages_go_to_the_next_member_when_one_leaves() {
    with_backend("ack-redelivery", |backend, run| async move {
        let topic = backend.topic_name(&run, "tasks");
        prepare(
            &backend,
            &run,
            vec![TopicSpec::new(&topic).group("g").partitions(1)],
        )
        .await;
        let spec = || {
            SubscriptionSpec::new(topic.as_str())
                .group("g")
                .ack(AckMode::Manual)
        };
        let producer = backend.producer().await.unwrap();

        // A acks the first four of ten, then unsubscribes.
        let mut a = backend.subscribe(spec()).await.unwrap();
        publish_one_by_one(&producer, messages(&topic, 0..10)).await;
        let got = take(&mut a, 10).await;
        assert!(got.iter().all(|d| !d.redelivered));
        for d in &got[..4] {
            a.ack(d).await.unwrap();
        }
        a.unsubscribe().await.unwrap();
        assert_eq!(a.rejected_acks(), 0);

        let marked = broker_keeps_commit_metadata(&topic, &run).await;
        eprintln!("broker keeps commit metadata (redeliveries marked): {marked}");

        // B gets the six unacknowledged again, acks three, and is dropped.
        let mut b = backend.subscribe(spec()).await.unwrap();
        let again = take(&mut b, 6).await;
        for (d, i) in again.iter().zip(4..) {
            assert_eq!(text(d), format!("m{i}"));
            assert_eq!(d.sequence, Some(i));
            assert_eq!(d.redelivered, marked, "m{i}");
        }
        publish_one_by_one(&producer, messages(&topic, 10..11)).await;
        let fresh = next(&mut b).await;
        assert_eq!(text(&fresh), "m10");
        assert!(!fresh.redelivered);
        for d in &again[..3] {
            b.ack(d).await.unwrap();
        }
        // A nack is refused: Kafka has no per-message negative acknowledgement.
        let err = b.nack(&again[3]).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unsupported);
        assert!(
            err.to_string()
                .contains("no per-message negative acknowledgement"),
            "{err}"
        );
        drop(b);
        // Dropping B commits its acks (up to m6) as it leaves the group.
        wait_for_commit(&topic, &group_id(&topic, "g"), 7).await;

        // C gets what B left: m7, m8, m9 and m10.
        let mut c = backend.subscribe(spec()).await.unwrap();
        let rest = take(&mut c, 4).await;
        let texts: Vec<&str> = rest.iter().map(text).collect();
        assert_eq!(texts, ["m7", "m8", "m9", "m10"]);
        assert!(rest.iter().all(|d| d.redelivered == marked));
        for d in &rest {
            c.ack(d).await.unwrap();
        }
        assert!(stays_quiet(&mut c).await);
        c.unsubscribe().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn replay_from_the_beginning_and_after_a_sequence() {
    with_backend("replay", |backend, run| async move {
        let topic = backend.topic_name(&run, "history");
        prepare(&backend, &run, vec![TopicSpec::new(&topic)]).await;
        let producer = backend.producer().await.unwrap();
        publish_one_by_one(&producer, messages(&topic, 0..10)).await;
        let mut all = backend
            .subscribe(SubscriptionSpec::new(topic.as_str()).start(StartPosition::Beginning))
            .await
            .unwrap();
        let mut after = backend
            .subscribe(SubscriptionSpec::new(topic.as_str()).start(StartPosition::AfterSequence(4)))
            .await
            .unwrap();
        let got = take(&mut all, 10).await;
        for (i, d) in got.iter().enumerate() {
            assert_eq!(
                (text(d), d.sequence),
                (format!("m{i}").as_str(), Some(i as i64))
            );
        }
        let got = take(&mut after, 5).await;
        for (d, i) in got.iter().zip(5..) {
            assert_eq!((text(d), d.sequence), (format!("m{i}").as_str(), Some(i)));
        }
        // Then live ones.
        publish_all(&producer, messages(&topic, 10..11)).await;
        assert_eq!(text(&next(&mut all).await), "m10");
        assert_eq!(text(&next(&mut after).await), "m10");
        // A group that never committed starts where its members ask, too.
        let mut member = backend
            .subscribe(
                SubscriptionSpec::new(topic.as_str())
                    .group("late")
                    .start(StartPosition::AfterSequence(8)),
            )
            .await
            .unwrap();
        let got = take(&mut member, 2).await;
        let texts: Vec<&str> = got.iter().map(text).collect();
        assert_eq!(texts, ["m9", "m10"]);
        assert!(stays_quiet(&mut member).await);
    })
    .await;
}

#[tokio::test]
async fn latest_sees_only_what_is_published_after_it_is_ready() {
    with_backend("latest", |backend, run| async move {
        let topic = backend.topic_name(&run, "live");
        prepare(&backend, &run, vec![TopicSpec::new(&topic).group("g")]).await;
        let producer = backend.producer().await.unwrap();
        publish_all(&producer, messages(&topic, 0..5)).await;
        let mut fan_out = backend
            .subscribe(SubscriptionSpec::new(topic.as_str()))
            .await
            .unwrap();
        let mut member = backend
            .subscribe(SubscriptionSpec::new(topic.as_str()).group("g"))
            .await
            .unwrap();
        publish_all(&producer, messages(&topic, 5..10)).await;
        // Keyless messages spread over the group topic's partitions: compare as sets.
        for sub in [&mut fan_out, &mut member] {
            let got: BTreeSet<String> = take(sub, 5)
                .await
                .iter()
                .map(|d| text(d).to_owned())
                .collect();
            let want: BTreeSet<String> = (5..10).map(|i| format!("m{i}")).collect();
            assert_eq!(got, want);
            assert!(stays_quiet(sub).await);
        }
    })
    .await;
}

#[tokio::test]
async fn unsubscribe_ends_the_stream() {
    with_backend("unsubscribe", |backend, run| async move {
        let topic = backend.topic_name(&run, "brief");
        let producer = backend.producer().await.unwrap();
        for group in [None, Some("g")] {
            let mut spec = SubscriptionSpec::new(topic.as_str());
            if let Some(group) = group {
                spec = spec.group(group);
            }
            let mut sub = backend.subscribe(spec).await.unwrap();
            publish_all(&producer, messages(&topic, 0..1)).await;
            next(&mut sub).await;
            sub.unsubscribe().await.unwrap();
            publish_all(&producer, messages(&topic, 1..2)).await;
            match tokio::time::timeout(PATIENCE, sub.next()).await {
                Ok(None) => {}
                other => panic!("{group:?}: expected the end of the stream, got {other:?}"),
            }
        }
    })
    .await;
}

#[tokio::test]
async fn a_one_mib_payload_round_trips() {
    with_backend("one-mib", |backend, run| async move {
        let topic = backend.topic_name(&run, "big");
        let mut sub = backend
            .subscribe(SubscriptionSpec::new(topic.as_str()))
            .await
            .unwrap();
        let producer = backend.producer().await.unwrap();
        let payload: Vec<u8> = (0..1 << 20).map(|i| b'a' + (i % 26) as u8).collect();
        let outcome = producer
            .publish(PublishRequest::new(topic.as_str(), payload.clone()))
            .await;
        assert_eq!(outcome, PublishOutcome::Ok);
        let d = next(&mut sub).await;
        assert_eq!(d.payload.len(), payload.len());
        assert!(d.payload == payload);
        // Beyond the producer's limit: refused, never sent.
        let huge = vec![b'x'; 9 << 20];
        match producer
            .publish(PublishRequest::new(topic.as_str(), huge))
            .await
        {
            PublishOutcome::Failed(reason) => {
                assert!(reason.contains(&topic), "{reason}");
                assert!(reason.to_lowercase().contains("too large"), "{reason}");
            }
            other => panic!("a 9 MiB message: {other:?}"),
        }
    })
    .await;
}

#[tokio::test]
async fn five_thousand_pipelined_publishes_are_confirmed_and_delivered_in_order() {
    with_backend("pipelined", |backend, run| async move {
        let topic = backend.topic_name(&run, "stream");
        prepare(&backend, &run, vec![TopicSpec::new(&topic)]).await;
        let mut sub = backend
            .subscribe(SubscriptionSpec::new(topic.as_str()))
            .await
            .unwrap();
        let producer = backend.producer().await.unwrap();
        const N: usize = 5000;
        let started = Instant::now();
        publish_all(&producer, messages(&topic, 0..N)).await;
        let published = started.elapsed();
        let got = take(&mut sub, N).await;
        eprintln!(
            "{N} pipelined publishes confirmed in {published:?}, all delivered after {:?}",
            started.elapsed()
        );
        for (i, d) in got.iter().enumerate() {
            assert_eq!(text(d), format!("m{i}"));
            assert_eq!(d.sequence, Some(i as i64));
        }
    })
    .await;
}

#[tokio::test]
async fn topics_nobody_prepared_are_created_on_first_use() {
    with_backend("on-demand", |backend, run| async move {
        let topic = backend.topic_name(&run, "unplanned");
        let producer = backend.producer().await.unwrap();
        // The producer creates it (one partition); a subscriber that joins later replays.
        publish_all(&producer, messages(&topic, 0..3)).await;
        let mut sub = backend
            .subscribe(SubscriptionSpec::new(topic.as_str()).start(StartPosition::Beginning))
            .await
            .unwrap();
        let texts: Vec<String> = take(&mut sub, 3)
            .await
            .iter()
            .map(|d| text(d).to_owned())
            .collect();
        assert_eq!(texts, ["m0", "m1", "m2"]);
        // A topic name Kafka does not allow is refused with a reason.
        match producer
            .publish(PublishRequest::new("bad topic!", "x"))
            .await
        {
            PublishOutcome::Failed(reason) => {
                assert!(reason.contains("not a valid Kafka topic name"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        let err = backend
            .subscribe(SubscriptionSpec::new("bad topic!"))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
    })
    .await;
}

/// The topics and groups the broker has, through its own admin API.
async fn broker_state() -> (BTreeSet<String>, BTreeSet<String>) {
    tokio::task::spawn_blocking(|| {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap())
            .create()
            .unwrap();
        let metadata = consumer
            .fetch_metadata(None, Duration::from_secs(10))
            .unwrap();
        let topics = metadata
            .topics()
            .iter()
            .map(|t| t.name().to_owned())
            .collect();
        let groups = consumer
            .fetch_group_list(None, Duration::from_secs(10))
            .unwrap()
            .groups()
            .iter()
            .map(|g| g.name().to_owned())
            .collect();
        (topics, groups)
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn teardown_removes_the_topics_and_groups_it_made() {
    let Some(backend) = common::backend(KIND, "teardown").await else {
        return;
    };
    let run = common::run_id("teardown");
    let planned = backend.topic_name(&run, "planned");
    let by_subscribe = backend.topic_name(&run, "subscribed");
    let by_producer = backend.topic_name(&run, "produced");
    let topology = RunTopology::new(&run).topic(TopicSpec::new(&planned).group("g"));
    backend.prepare(&topology).await.unwrap();
    let member = backend
        .subscribe(SubscriptionSpec::new(planned.as_str()).group("g"))
        .await
        .unwrap();
    let fan_out = backend
        .subscribe(SubscriptionSpec::new(by_subscribe.as_str()))
        .await
        .unwrap();
    let other_member = backend
        .subscribe(SubscriptionSpec::new(by_subscribe.as_str()).group("h"))
        .await
        .unwrap();
    let producer = backend.producer().await.unwrap();
    publish_all(&producer, messages(&by_producer, 0..1)).await;
    publish_all(&producer, messages(&planned, 0..1)).await;

    let ours: BTreeSet<String> = [&planned, &by_subscribe, &by_producer]
        .into_iter()
        .cloned()
        .collect();
    let groups: BTreeSet<String> = [group_id(&planned, "g"), group_id(&by_subscribe, "h")]
        .into_iter()
        .collect();
    let (topics, _) = broker_state().await;
    assert!(ours.is_subset(&topics), "{ours:?} not all in {topics:?}");

    // Dropped, not unsubscribed: teardown copes with members still on their way out.
    drop((member, fan_out, other_member, producer));
    backend.teardown().await.unwrap();

    // Topic deletion completes in the background on a real cluster: give it a moment.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (topics, present_groups) = broker_state().await;
        let left: Vec<&String> = ours.intersection(&topics).collect();
        let left_groups: Vec<&String> = groups.intersection(&present_groups).collect();
        if left.is_empty() && left_groups.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still there after teardown: topics {left:?}, groups {left_groups:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Nothing of a fan-out subscriber's private group reaches the broker.
    let (_, present_groups) = broker_state().await;
    assert!(
        !present_groups.iter().any(|g| g.contains("fanout")),
        "{present_groups:?}"
    );
    // A second teardown has nothing left to do.
    backend.teardown().await.unwrap();
}

#[tokio::test]
async fn an_unreachable_url_is_a_connect_error_naming_it() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let url = format!("kafka://{addr}");
    let err = KafkaBackend::connect(&url, common::options())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Connect);
    assert_eq!(
        err.to_string(),
        format!("cannot connect to kafka at {url} (tried {addr}: connection refused)")
    );
    // Two addresses: both named.
    let url = format!("kafka://{addr},{addr}");
    let Err(err) = connect(KIND, &url, common::options()).await else {
        panic!("connected to {url}");
    };
    assert_eq!(err.kind(), ErrorKind::Connect);
    assert_eq!(
        err.to_string(),
        format!(
            "cannot connect to kafka at {url} (tried {addr}: connection refused; tried {addr}: connection refused)"
        )
    );
}

#[tokio::test]
async fn a_peer_that_does_not_answer_kafka_is_a_connect_error() {
    // Accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let url = format!("kafka://{addr}");
    let options = ConnectOptions::new().connect_timeout(Duration::from_secs(1));
    let err = KafkaBackend::connect(&url, options).await.unwrap_err();
    silent.abort();
    assert_eq!(err.kind(), ErrorKind::Connect);
    let text = err.to_string();
    assert!(
        text.starts_with(&format!(
            "cannot connect to kafka at {url} (the TCP connection succeeded, but no Kafka metadata answer within 1s"
        )),
        "{text}"
    );
}

#[tokio::test]
async fn a_malformed_url_is_invalid() {
    for url in [
        "kafka://host:notaport",
        "amqp://host:9092",
        "kafka://a:1/path",
    ] {
        let err = KafkaBackend::connect(url, ConnectOptions::new())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidUrl, "{url}");
        assert!(err.to_string().contains(url), "{err}");
    }
}

#[tokio::test]
async fn unsupported_needs_fail_naming_the_capability() {
    with_backend("unsupported", |backend, run| async move {
        let topic = backend.topic_name(&run, "limited");
        for (spec, name) in [
            (TopicSpec::new(&topic).max_messages(10), "retention limit"),
            (TopicSpec::new(&topic).dead_letter(true), "dead letter"),
        ] {
            let err = backend
                .prepare(&RunTopology::new(&run).topic(spec))
                .await
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Unsupported);
            assert!(err.to_string().contains(name), "{err}");
            assert!(err.to_string().contains(&topic), "{err}");
        }
        let producer = backend.producer().await.unwrap();
        match producer
            .publish(PublishRequest::new(topic.as_str(), "x").id("m-1"))
            .await
        {
            PublishOutcome::Failed(reason) => assert!(reason.contains("dedup"), "{reason}"),
            other => panic!("{other:?}"),
        }
        let (topics, _) = broker_state().await;
        assert!(!topics.contains(&topic), "an unsupported topic was created");
    })
    .await;
}

/// A broker of our own (the tansu binary on a free port, in memory), killed mid-test.
struct DisposableBroker {
    url: String,
    child: tokio::process::Child,
}

impl DisposableBroker {
    async fn start() -> Option<DisposableBroker> {
        let binary = std::env::var_os("BROKERBENCH_TANSU").map_or_else(
            || {
                std::path::PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                    .join(".cargo/bin/tansu")
            },
            std::path::PathBuf::from,
        );
        if !binary.exists() {
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let listener = format!("tcp://127.0.0.1:{port}");
        let child = tokio::process::Command::new(binary)
            .args(["broker", "--listener-url", &listener])
            .args(["--advertised-listener-url", &listener])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .ok()?;
        let url = format!("kafka://127.0.0.1:{port}");
        let deadline = Instant::now() + PATIENCE;
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Some(DisposableBroker { url, child })
    }
}

#[tokio::test]
async fn when_the_broker_dies_publishes_resolve_and_subscriptions_end() {
    let Some(mut broker) = DisposableBroker::start().await else {
        common::skip(
            KIND,
            "broker-dies",
            "no tansu binary to start a broker of its own",
        );
        return;
    };
    let options = ConnectOptions::new()
        .connect_timeout(Duration::from_secs(3))
        .publish_timeout(Duration::from_secs(3))
        .request_timeout(Duration::from_secs(3));
    let backend = KafkaBackend::connect(&broker.url, options).await.unwrap();
    let topic = backend.topic_name("dies", "t");
    let mut sub = backend
        .subscribe(SubscriptionSpec::new(topic.as_str()))
        .await
        .unwrap();
    // Shares the first one's consumer: the error reaches both.
    let mut other = backend
        .subscribe(SubscriptionSpec::new(topic.as_str()))
        .await
        .unwrap();
    assert_eq!(backend.consumers_created(), 1);
    let producer = backend.producer().await.unwrap();
    publish_all(&producer, messages(&topic, 0..1)).await;
    next(&mut sub).await;
    next(&mut other).await;

    broker.child.kill().await.unwrap();
    let outcome = tokio::time::timeout(
        PATIENCE,
        producer.publish(PublishRequest::new(topic.as_str(), "late")),
    )
    .await
    .expect("the publish resolves");
    eprintln!("publish after the broker died: {outcome}");
    assert!(!outcome.is_confirmed(), "{outcome}");
    for sub in [&mut sub, &mut other] {
        let mut error = None;
        loop {
            match tokio::time::timeout(PATIENCE, sub.next()).await {
                Ok(Some(Ok(d))) => panic!("a delivery from a dead broker: {d:?}"),
                Ok(Some(Err(e))) => error = Some(e),
                Ok(None) => break,
                Err(_) => panic!("the subscription neither failed nor ended"),
            }
        }
        let error = error.expect("an error before the end");
        eprintln!("subscription error: {error}");
        assert_eq!(error.kind(), ErrorKind::Closed);
        assert!(error.to_string().contains(&broker.url), "{error}");
    }
    // Its memory died with it: nothing to tear down, and teardown says why it failed.
    let err = backend.teardown().await.unwrap_err();
    eprintln!("teardown without a broker: {err}");
}

/// A measurement, not a check: `cargo test --release -p brokerbench-adapters
/// --no-default-features --features kafka --test kafka -- --ignored --nocapture
/// producer_throughput`. One producer, 200,000 messages of 200 bytes with up to 20,000 in
/// flight, then 1,000 publishes one at a time for the latency of a lone message (publish
/// confirmation, and delivery to a fan-out subscriber).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; run it with --release --ignored --nocapture"]
async fn producer_throughput_with_200_byte_messages() {
    with_backend("throughput", |backend, run| async move {
        let topic = backend.topic_name(&run, "load");
        prepare(&backend, &run, vec![TopicSpec::new(&topic)]).await;
        let producer = backend.producer().await.unwrap();
        let topic: Arc<str> = Arc::from(topic.as_str());
        let payload = bytes::Bytes::from(vec![b'x'; 200]);
        const N: usize = 200_000;
        const WINDOW: usize = 20_000;
        let started = Instant::now();
        let confirmed = futures::stream::iter(
            (0..N).map(|_| producer.publish(PublishRequest::new(topic.clone(), payload.clone()))),
        )
        .buffered(WINDOW)
        .filter(|outcome| std::future::ready(*outcome == PublishOutcome::Ok))
        .count()
        .await;
        let elapsed = started.elapsed();
        assert_eq!(confirmed, N);
        eprintln!(
            "{N} publishes of 200 bytes, {WINDOW} in flight: {elapsed:?}, {:.0} msgs/s",
            N as f64 / elapsed.as_secs_f64()
        );
        // A topic of its own: on tansu 0.6 a `Latest` subscriber can start before the true
        // end of a busy topic (its ListOffsets answers the base offset of a recent record
        // batch plus one), and would read the load above.
        let topic: Arc<str> = Arc::from(backend.topic_name(&run, "lone").as_str());
        let mut sub = backend
            .subscribe(SubscriptionSpec::new(topic.clone()))
            .await
            .unwrap();
        let mut confirmed = Vec::with_capacity(1000);
        let mut delivered = Vec::with_capacity(1000);
        for _ in 0..1000 {
            let started = Instant::now();
            let outcome = producer
                .publish(PublishRequest::new(topic.clone(), payload.clone()))
                .await;
            assert_eq!(outcome, PublishOutcome::Ok);
            confirmed.push(started.elapsed());
            let d = next(&mut sub).await;
            delivered.push(d.received_at - started);
        }
        for (what, mut times) in [("confirmed", confirmed), ("delivered", delivered)] {
            times.sort();
            eprintln!(
                "one at a time, {what}: p50 {:?}, p99 {:?}, max {:?}",
                times[500], times[990], times[999]
            );
        }
    })
    .await;
}
