//! `reconnect`: the client's connections are cut mid-stream.
//!
//! The check connects two more backends to the broker, each through its own [`Proxy`]:
//! one publishes a steady stream, the other subscribes to it. A third of the way in, the
//! publisher's connections are reset; two thirds of the way in, the subscriber's are, and
//! its path stays down for `reconnect_outage` while the publisher keeps publishing, so
//! that messages are confirmed while the subscriber is away (a broker that keeps nothing
//! for an absent subscriber loses those, every time, not by luck of timing). The client
//! side then does what an application does: a publish that was not confirmed is published
//! again (through a new producer when the old one is broken), and a subscription that
//! fails is opened again, in the most durable way the backend offers:
//!
//! - with consumer groups and acks: the same group, manual acks, so what was in flight
//!   comes back (at least once);
//! - else with replay: after the last sequence seen;
//! - else: live, and whatever was published in between is lost to it.
//!
//! Every confirmed message must reach the subscriber; duplicates (retried publishes,
//! redeliveries) are counted, not failed.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use brokerbench_adapters::{
    AckMode, Backend, BackendKind, Capability, DeliveryMode, Producer, PublishOutcome,
    PublishRequest, StartPosition, Subscription, SubscriptionSpec, TopicSpec, endpoint,
};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use super::{batch, volume};
use crate::conformance::message::MessageId;
use crate::conformance::proxy::{self, Proxy};
use crate::conformance::reader::{Log, wait_until};
use crate::conformance::tally::{Order, sample, tally};
use crate::conformance::{Ctx, During, Finding, Stop, options};

/// How the subscriber comes back after losing its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Comeback {
    /// Rejoin the consumer group (manual acks: unacked messages are redelivered).
    Group,
    /// Resubscribe after the last sequence seen.
    Replay,
    /// Resubscribe for new messages only.
    Live,
}

impl Comeback {
    fn describe(self) -> &'static str {
        match self {
            Comeback::Group => "rejoining its consumer group with manual acks",
            Comeback::Replay => "resubscribing after the last sequence it saw",
            Comeback::Live => "resubscribing live (the backend keeps nothing for it)",
        }
    }
}

/// What the subscriber side saw.
#[derive(Debug, Default)]
struct SubscriberLog {
    deliveries: Log,
    last_sequence: Option<i64>,
    resubscribes: u64,
    errors: Vec<String>,
    first_after_cut: Option<Instant>,
}

/// A backend connected to the broker through a proxy of its own.
struct Path {
    proxy: Proxy,
    backend: Arc<dyn Backend>,
}

impl Path {
    /// Starts a proxy in front of the broker (a Kafka-aware one for Kafka, whose clients
    /// otherwise connect to the brokers the cluster advertises, past a plain proxy) and
    /// connects a backend through it.
    async fn open(ctx: &Ctx<'_>, who: &str) -> Result<Path, Stop> {
        let kind = ctx.connector.kind();
        let url = ctx.connector.url();
        let upstream = endpoint::endpoints(kind, url)
            .during("reading the broker URL")?
            .into_iter()
            .next()
            .ok_or_else(|| {
                Stop::Broken(format!(
                    "the {kind} URL {} names no host",
                    endpoint::redact(url)
                ))
            })?;
        let proxy = if kind == BackendKind::Kafka {
            Proxy::start_kafka(upstream.host_port()).await
        } else {
            Proxy::start(upstream.host_port()).await
        }
        .map_err(|e| Stop::Broken(format!("cannot start the {who}'s proxy: {e}")))?;
        let backend: Arc<dyn Backend> = Arc::from(
            ctx.connector
                .connect(&proxy::through(url, proxy.addr()), options(ctx.params))
                .await
                .during(&format!("connecting the {who} through its proxy"))?,
        );
        Ok(Path { proxy, backend })
    }

    /// `Err` unless `bytes` went through the proxy for `messages` of `size` bytes: the
    /// client's traffic must go through it, or the cut proves nothing.
    fn carried(
        &self,
        who: &str,
        bytes: u64,
        open: u64,
        messages: usize,
        size: usize,
    ) -> Result<(), Stop> {
        if open == 0 || bytes < (messages * size / 2) as u64 {
            return Err(Stop::Broken(format!(
                "the {who}'s client did not go through its proxy ({bytes} bytes relayed for {messages} messages of {size} bytes, {open} connections open), so its connection could not be cut"
            )));
        }
        Ok(())
    }
}

pub(super) async fn reconnect(ctx: &Ctx<'_>) -> Result<Finding, Stop> {
    let p = ctx.params;
    let caps = ctx.backend.capabilities();
    let comeback =
        if caps.contains(Capability::Competing) && caps.contains(Capability::AckRedelivery) {
            Comeback::Group
        } else if caps.contains(Capability::Replay) {
            Comeback::Replay
        } else {
            Comeback::Live
        };
    let topic: Arc<str> = ctx.topic("stream").into();
    let group = "durable";
    let mut spec = TopicSpec::new(&*topic).partitions(1);
    if comeback == Comeback::Group {
        spec = spec.group(group);
    }
    ctx.prepare(vec![spec]).await?;
    let publishing = Path::open(ctx, "publisher").await?;
    let subscribing = Path::open(ctx, "subscriber").await?;

    let first_spec = match comeback {
        Comeback::Group => SubscriptionSpec::new(topic.clone())
            .group(group)
            .ack(AckMode::Manual),
        _ => SubscriptionSpec::new(topic.clone()),
    };
    let subscription = subscribing
        .backend
        .subscribe(first_spec)
        .await
        .during("subscribing through the proxy")?;
    let log = Arc::new(Mutex::new(SubscriberLog::default()));
    let cut_at: Arc<Mutex<Option<Instant>>> = Arc::default();
    let stop = CancellationToken::new();
    // Whatever way the check ends, the subscribing task ends with it.
    let _stop_subscriber = stop.clone().drop_guard();
    let subscriber = tokio::spawn(subscribe_loop(
        subscribing.backend.clone(),
        subscription,
        SubscribeLoop {
            topic: topic.clone(),
            group,
            comeback,
            replay: caps.contains(Capability::Replay),
            run: ctx.run,
            log: log.clone(),
            cut_at: cut_at.clone(),
            stop: stop.clone(),
        },
    ));

    let mut ledger = ctx.ledger();
    let mode = if comeback == Comeback::Group {
        DeliveryMode::One
    } else {
        DeliveryMode::All
    };
    let messages = batch(
        &mut ledger,
        &topic,
        p.reconnect_messages,
        p.size,
        mode,
        |_| None,
    );
    let publisher_cut_at_message = messages.len() / 3;
    let subscriber_cut_at_message = messages.len() * 2 / 3;
    let deadline = Instant::now() + p.reconnect_timeout;
    let mut publisher = Publisher::new(publishing.backend.clone(), deadline).await?;
    let interval = Duration::from_secs_f64(1.0 / p.reconnect_rate.max(0.001));
    let started = tokio::time::Instant::now();
    let mut publisher_cut: Option<(u64, u64, Instant)> = None;
    let mut subscriber_cut: Option<(u64, u64, Instant)> = None;
    let mut publisher_back: Option<Instant> = None;
    let mut confirmed_while_away = 0u64;
    let mut next = 0usize;
    let mut retry: VecDeque<usize> = VecDeque::new();
    let mut in_flight = FuturesUnordered::new();
    loop {
        if next == publisher_cut_at_message && publisher_cut.is_none() {
            let relayed = publishing.proxy.bytes();
            publisher_cut = Some((publishing.proxy.cut(), relayed, Instant::now()));
        }
        if next == subscriber_cut_at_message && subscriber_cut.is_none() {
            let relayed = subscribing.proxy.bytes();
            let open = subscribing.proxy.cut_for(p.reconnect_outage);
            let now = Instant::now();
            *cut_at.lock() = Some(now);
            subscriber_cut = Some((open, relayed, now));
        }
        let due = started + interval.mul_f64(next as f64);
        let publish_next = next < messages.len();
        if !publish_next && retry.is_empty() && in_flight.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            break;
        }
        tokio::select! {
            () = tokio::time::sleep_until(due), if publish_next => {
                let (id, request) = &messages[next];
                ledger.sent(*id);
                in_flight.push(publisher.publish(next, request.clone()));
                next += 1;
            }
            Some((index, generation, outcome)) = in_flight.next(), if !in_flight.is_empty() => {
                let id = messages[index].0;
                ledger.outcome(id, &outcome);
                let now = Instant::now();
                if outcome.is_confirmed() {
                    if let Some((_, _, at)) = publisher_cut {
                        publisher_back.get_or_insert(now.max(at));
                    }
                    if let Some((_, _, at)) = subscriber_cut {
                        if now < at + p.reconnect_outage {
                            confirmed_while_away += 1;
                        }
                    }
                } else {
                    publisher.failed(generation).await;
                    retry.push_back(index);
                }
            }
            () = tokio::time::sleep(Duration::from_millis(5)), if !retry.is_empty() => {}
        }
        while publisher.ready() {
            let Some(index) = retry.pop_front() else {
                break;
            };
            publisher.retries += 1;
            in_flight.push(publisher.publish(index, messages[index].1.clone()));
        }
    }
    let (Some(publisher_cut), Some(subscriber_cut)) = (publisher_cut, subscriber_cut) else {
        stop.cancel();
        let _ = subscriber.await;
        return Err(Stop::Broken(
            "the publishing stopped before the cuts".into(),
        ));
    };
    let carried = publishing
        .carried(
            "publisher",
            publisher_cut.1,
            publisher_cut.0,
            publisher_cut_at_message,
            p.size,
        )
        .and_then(|()| {
            subscribing.carried(
                "subscriber",
                subscriber_cut.1,
                subscriber_cut.0,
                subscriber_cut_at_message,
                p.size,
            )
        });
    if let Err(stop_now) = carried {
        stop.cancel();
        let _ = subscriber.await;
        return Err(stop_now);
    }
    if confirmed_while_away == 0 {
        stop.cancel();
        let _ = subscriber.await;
        return Err(Stop::Broken(format!(
            "no publish was confirmed during the subscriber's {} outage, so the outage proved nothing (raise --reconnect-rate or --reconnect-outage)",
            humantime::format_duration(p.reconnect_outage)
        )));
    }
    let confirmed: Vec<MessageId> = ledger
        .iter()
        .filter(|(id, _)| ledger.is_confirmed(id))
        .map(|(id, _)| *id)
        .collect();
    wait_until(deadline, || {
        let log = log.lock();
        confirmed
            .iter()
            .all(|id| log.deliveries.distinct.contains(id))
    })
    .await;
    tokio::time::sleep(p.settle).await;
    stop.cancel();
    let _ = subscriber.await;

    let log = std::mem::take(&mut *log.lock());
    let t = tally(&ledger, &log.deliveries.received, |_| true, Order::Ignore);
    let mut counts = t.counts;
    volume(&mut counts, &ledger);
    counts.published = messages.len() as u64;
    counts.detail("connections_cut", publisher_cut.0 + subscriber_cut.0);
    counts.detail("confirmed_while_subscriber_away", confirmed_while_away);
    counts.detail("resubscribes", log.resubscribes);
    counts.detail("new_producers", publisher.generation);
    counts.detail("publish_retries", publisher.retries);
    let publisher_back_after = publisher_back.map(|t| t.saturating_duration_since(publisher_cut.2));
    if let Some(back) = publisher_back_after {
        counts.detail("publisher_back_after_ms", back.as_millis() as u64);
    }
    let subscriber_back_after = log
        .first_after_cut
        .map(|t| t.saturating_duration_since(subscriber_cut.2));
    if let Some(back) = subscriber_back_after {
        counts.detail("subscriber_back_after_ms", back.as_millis() as u64);
    }
    let mut finding = Finding::new(counts);
    let unconfirmed = messages.len() as u64 - ledger.confirmed();
    if unconfirmed > 0 {
        finding.fail(format!(
            "{unconfirmed} messages were never confirmed, even after retries for {}",
            humantime::format_duration(p.reconnect_timeout)
        ));
    }
    let c = finding.counts.clone();
    if c.lost > 0 {
        let what = format!(
            "{} confirmed messages never reached the subscriber ({}), {}; {confirmed_while_away} were confirmed while it was cut off",
            c.lost,
            sample(&t.missing),
            comeback.describe()
        );
        finding.fail(what);
    }
    if c.phantom > 0 {
        let what = format!("{} deliveries were never published or corrupted", c.phantom);
        finding.fail(what);
    }
    if subscriber_back_after.is_none() {
        let mut what = "nothing was delivered after the subscriber's cut".to_owned();
        if let Some(error) = log.errors.last() {
            what.push_str(&format!(" (last error: {error})"));
        }
        finding.fail(what);
    }
    let duplicates = finding.counts.duplicated;
    Ok(finding.summary(format!(
        "publisher cut at message {publisher_cut_at_message}, back in {} ms ({} new producers, {} publishes retried); subscriber cut at {subscriber_cut_at_message} and kept away {} ms while {confirmed_while_away} were confirmed, back in {} ms by {}; all {} confirmed delivered, {duplicates} duplicates",
        publisher_back_after.map_or(0, |d| d.as_millis()),
        publisher.generation,
        publisher.retries,
        p.reconnect_outage.as_millis(),
        subscriber_back_after.map_or(0, |d| d.as_millis()),
        comeback.describe(),
        ledger.confirmed()
    )))
}

/// The publishing side: a producer, replaced when its publishes stop being confirmed.
struct Publisher {
    backend: Arc<dyn Backend>,
    producer: Option<Producer>,
    /// How many producers were made after the first.
    generation: u64,
    retries: u64,
    deadline: Instant,
}

impl Publisher {
    async fn new(backend: Arc<dyn Backend>, deadline: Instant) -> Result<Publisher, Stop> {
        let producer = backend
            .producer()
            .await
            .during("creating a producer through the proxy")?;
        Ok(Publisher {
            backend,
            producer: Some(producer),
            generation: 0,
            retries: 0,
            deadline,
        })
    }

    fn ready(&self) -> bool {
        self.producer.is_some()
    }

    /// Publishes message `index`; resolves to it, the producer generation that sent it
    /// and the outcome.
    fn publish(
        &self,
        index: usize,
        request: PublishRequest,
    ) -> impl std::future::Future<Output = (usize, u64, PublishOutcome)> + use<> {
        let generation = self.generation;
        let publish = self.producer.as_ref().map(|p| p.publish(request));
        async move {
            match publish {
                Some(publish) => (index, generation, publish.await),
                None => (
                    index,
                    generation,
                    PublishOutcome::Failed("no producer".into()),
                ),
            }
        }
    }

    /// A publish of producer `generation` was not confirmed: replace that producer (once),
    /// retrying until a new one is made or the deadline passes.
    async fn failed(&mut self, generation: u64) {
        if generation != self.generation {
            return;
        }
        self.producer = None;
        let mut pause = Duration::from_millis(50);
        while Instant::now() < self.deadline {
            if let Ok(Ok(producer)) =
                tokio::time::timeout(Duration::from_secs(5), self.backend.producer()).await
            {
                self.producer = Some(producer);
                self.generation += 1;
                return;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    }
}

/// What the subscribing task needs.
struct SubscribeLoop {
    topic: Arc<str>,
    group: &'static str,
    comeback: Comeback,
    /// Whether the backend replays: a group member then comes back from the beginning,
    /// which is where the reference broker keeps `one` messages nobody took.
    replay: bool,
    run: u32,
    log: Arc<Mutex<SubscriberLog>>,
    cut_at: Arc<Mutex<Option<Instant>>>,
    stop: CancellationToken,
}

/// Reads the subscription (acking with a group), and opens it again after it fails.
async fn subscribe_loop(backend: Arc<dyn Backend>, first: Subscription, s: SubscribeLoop) {
    let mut current = Some(first);
    loop {
        let Some(sub) = current.as_mut() else {
            // Come back, with a pause that grows, until it works or the check is over.
            let mut pause = Duration::from_millis(50);
            loop {
                let spec = resubscribe_spec(&s);
                let attempt = tokio::select! {
                    () = s.stop.cancelled() => return,
                    attempt = backend.subscribe(spec) => attempt,
                };
                match attempt {
                    Ok(sub) => {
                        s.log.lock().resubscribes += 1;
                        current = Some(sub);
                        break;
                    }
                    Err(e) => {
                        s.log.lock().errors.push(format!("resubscribing: {e}"));
                        tokio::select! {
                            () = s.stop.cancelled() => return,
                            () = tokio::time::sleep(pause) => {}
                        }
                        pause = (pause * 2).min(Duration::from_secs(1));
                    }
                }
            }
            continue;
        };
        let item = tokio::select! {
            () = s.stop.cancelled() => return,
            item = sub.next() => item,
        };
        match item {
            Some(Ok(delivery)) => {
                if s.comeback == Comeback::Group {
                    let _ = sub.ack(&delivery).await;
                }
                let cut = *s.cut_at.lock();
                let mut log = s.log.lock();
                log.deliveries.record(&delivery, s.run);
                if cut.is_some_and(|c| delivery.received_at > c) && log.first_after_cut.is_none() {
                    log.first_after_cut = Some(delivery.received_at);
                }
                if let Some(sequence) = delivery.sequence {
                    log.last_sequence =
                        Some(log.last_sequence.map_or(sequence, |l| l.max(sequence)));
                }
            }
            Some(Err(e)) => {
                s.log.lock().errors.push(e.to_string());
                current = None;
            }
            None => {
                s.log
                    .lock()
                    .errors
                    .push("the subscription ended".to_owned());
                current = None;
            }
        }
    }
}

/// The spec to come back with.
fn resubscribe_spec(s: &SubscribeLoop) -> SubscriptionSpec {
    let spec = SubscriptionSpec::new(s.topic.clone());
    match s.comeback {
        Comeback::Group if s.replay => spec
            .group(s.group)
            .ack(AckMode::Manual)
            .start(StartPosition::Beginning),
        Comeback::Group => spec.group(s.group).ack(AckMode::Manual),
        Comeback::Replay => match s.log.lock().last_sequence {
            Some(sequence) => spec.start(StartPosition::AfterSequence(sequence)),
            None => spec.start(StartPosition::Beginning),
        },
        Comeback::Live => spec,
    }
}
