//! `dedup`: the same message id published twice inside the window is stored and
//! delivered once.

use std::sync::Arc;

use brokerbench_adapters::{
    Capability, PublishOutcome, PublishRequest, StartPosition, SubscriptionSpec, TopicSpec,
};
use futures::StreamExt;
use futures::stream::FuturesOrdered;

use super::{Outbox, all_have, readers, settle, volume};
use crate::conformance::ledger::Ledger;
use crate::conformance::message::MessageId;
use crate::conformance::reader::{Acking, Reader, finish_all};
use crate::conformance::tally::{Order, sample, tally};
use crate::conformance::{Ctx, During, Finding, Stop};

/// Every id is published twice, back to back (both copies in flight together), to a topic
/// with a live subscriber; the subscriber must get each once. Where the backend can
/// replay, a late subscriber from the beginning must also find each stored once.
pub(super) async fn dedup(ctx: &Ctx<'_>) -> Result<Finding, Stop> {
    let p = ctx.params;
    let topic: Arc<str> = ctx.topic("dedup").into();
    ctx.prepare(vec![TopicSpec::new(&*topic).partitions(1)])
        .await?;
    let live = readers(ctx, &SubscriptionSpec::new(topic.clone()), 1, Acking::Never).await?;
    let Outbox {
        producer,
        mut ledger,
    } = Outbox::open(ctx).await?;
    let mut in_flight = FuturesOrdered::new();
    let mut copies = Copies::default();
    for i in 0..p.dedup_ids {
        let (id, payload) = ledger.message(0, None, p.size);
        let dedup_id = format!("{:08x}-{i}", ctx.run);
        ledger.sent(id);
        for copy in 0..2 {
            let request = PublishRequest::new(topic.clone(), payload.clone()).id(dedup_id.clone());
            let publish = producer.publish(request);
            in_flight.push_back(async move { (id, copy, publish.await) });
        }
        while in_flight.len() >= p.window.max(2) {
            if let Some(done) = in_flight.next().await {
                copies.record(&mut ledger, done);
            }
        }
    }
    while let Some(done) = in_flight.next().await {
        copies.record(&mut ledger, done);
    }
    let Copies {
        second_duplicate,
        second_ok,
        refused,
    } = copies;
    let want = ledger.confirmed() as usize;
    all_have(&live, want, ctx.deadline()).await;
    settle(ctx).await;
    let live_log = finish_all(live).await.remove(0);
    let live_tally = tally(&ledger, &live_log.received, |_| true, Order::Ignore);

    let mut counts = live_tally.counts.clone();
    let mut stored = None;
    if ctx.backend.capabilities().contains(Capability::Replay) {
        let sub = ctx
            .backend
            .subscribe(SubscriptionSpec::new(topic.clone()).start(StartPosition::Beginning))
            .await
            .during("subscribing from the beginning")?;
        let late = Reader::spawn(sub, ctx.run, Acking::Never);
        all_have(std::slice::from_ref(&late), want, ctx.deadline()).await;
        settle(ctx).await;
        let log = late.finish().await;
        let t = tally(&ledger, &log.received, |_| true, Order::Ignore);
        counts.add(&t.counts);
        stored = Some(t);
    }
    volume(&mut counts, &ledger);
    counts.published = u64::from(p.dedup_ids) * 2;
    counts.detail("ids", u64::from(p.dedup_ids));
    counts.detail("second_copies_answered_duplicate", second_duplicate);
    counts.detail("second_copies_answered_ok", second_ok);
    let mut finding = Finding::new(counts);
    if live_tally.counts.duplicated > 0 {
        finding.fail(format!(
            "{} ids were delivered twice to the live subscriber",
            live_tally.counts.duplicated
        ));
    }
    if live_tally.counts.lost > 0 {
        finding.fail(format!(
            "{} ids never reached the live subscriber ({})",
            live_tally.counts.lost,
            sample(&live_tally.missing)
        ));
    }
    if let Some(t) = &stored {
        if t.counts.duplicated > 0 || t.counts.lost > 0 {
            finding.fail(format!(
                "read back from the beginning: {} (stored twice or not at all)",
                t.counts.anomaly_summary()
            ));
        }
    }
    if live_tally.counts.phantom > 0 {
        finding.fail(format!(
            "{} deliveries were never published or corrupted",
            live_tally.counts.phantom
        ));
    }
    if let Some(reason) = refused.first() {
        finding.fail(format!(
            "{} publishes were refused: {reason}",
            refused.len()
        ));
    }
    let stored_text = if stored.is_some() {
        ", and stored once"
    } else {
        ""
    };
    Ok(finding.summary(format!(
        "{} ids published twice each ({second_duplicate} second copies answered as duplicates): each delivered once{stored_text}",
        p.dedup_ids
    )))
}

/// What the broker answered to the copies.
#[derive(Default)]
struct Copies {
    /// Second copies answered as duplicates.
    second_duplicate: u64,
    /// Second copies answered as new messages.
    second_ok: u64,
    /// Reasons of refused publishes.
    refused: Vec<String>,
}

impl Copies {
    /// Records one copy's outcome; the first confirmation of an id is its fate in the
    /// ledger.
    fn record(
        &mut self,
        ledger: &mut Ledger,
        (id, copy, outcome): (MessageId, u8, PublishOutcome),
    ) {
        match &outcome {
            PublishOutcome::Duplicate if copy == 1 => self.second_duplicate += 1,
            PublishOutcome::Ok if copy == 1 => self.second_ok += 1,
            PublishOutcome::Failed(reason) => self.refused.push(reason.clone()),
            _ => {}
        }
        if !ledger.is_confirmed(&id) {
            ledger.outcome(id, &outcome);
        }
    }
}
