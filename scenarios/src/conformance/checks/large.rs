//! `large-message`: payloads from 1 byte to 1 MiB arrive intact or are refused clearly.

use std::sync::Arc;
use std::time::Duration;

use brokerbench_adapters::{
    PublishOutcome, PublishRequest, Subscription, SubscriptionSpec, TopicSpec,
};
use bytes::Bytes;
use futures::StreamExt;

use super::Outbox;
use crate::conformance::message::filler;
use crate::conformance::{Ctx, During, Finding, Stop};

/// A size for people: `1 B`, `64 KiB`, `1 MiB`.
fn size_text(bytes: usize) -> String {
    match bytes {
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{} KiB", b >> 10),
        b => format!("{b} B"),
    }
}

/// What became of one payload.
enum Fate {
    Intact,
    Refused(String),
    Recovered,
    Truncated(usize),
    Corrupted,
    Lost,
    NoAnswer,
    RefusedButDelivered,
}

/// The next delivery within `patience`, if any.
async fn next(sub: &mut Subscription, patience: Duration) -> Option<Bytes> {
    match tokio::time::timeout(patience, sub.next()).await {
        Ok(Some(Ok(d))) => Some(d.payload),
        _ => None,
    }
}

/// One size after the other: publish one payload of exactly that size (letters and
/// digits, different for each size), then wait for it. It must arrive byte for byte the
/// same, or be refused by the broker with a reason, never arrive cut or changed.
pub(super) async fn large_message(ctx: &Ctx<'_>) -> Result<Finding, Stop> {
    let p = ctx.params;
    let topic: Arc<str> = ctx.topic("large").into();
    ctx.prepare(vec![TopicSpec::new(&*topic).partitions(1)])
        .await?;
    let mut sub = ctx
        .backend
        .subscribe(SubscriptionSpec::new(topic.clone()))
        .await
        .during("subscribing")?;
    let producer = Outbox::open(ctx).await?.producer;
    let mut finding = Finding::new(Default::default());
    let mut outcomes = Vec::new();
    for (i, &size) in p.large_sizes.iter().enumerate() {
        let payload = Bytes::from(filler(u64::from(ctx.run) ^ (i as u64) << 40, size));
        let outcome = producer
            .publish(PublishRequest::new(topic.clone(), payload.clone()))
            .await;
        finding.counts.published += 1;
        let fate = match outcome {
            PublishOutcome::Ok | PublishOutcome::Duplicate => {
                finding.counts.confirmed += 1;
                match next(&mut sub, p.timeout).await {
                    None => Fate::Lost,
                    Some(got) if got == payload => Fate::Intact,
                    Some(got) if got.len() < payload.len() && payload.starts_with(&got) => {
                        Fate::Truncated(got.len())
                    }
                    Some(_) => Fate::Corrupted,
                }
            }
            PublishOutcome::Failed(reason) if !reason.trim().is_empty() => {
                match next(&mut sub, p.settle).await {
                    Some(_) => Fate::RefusedButDelivered,
                    None => Fate::Refused(reason),
                }
            }
            PublishOutcome::Failed(_) | PublishOutcome::Unknown => {
                match next(&mut sub, p.timeout).await {
                    Some(got) if got == payload => Fate::Recovered,
                    Some(_) => Fate::Corrupted,
                    None => Fate::NoAnswer,
                }
            }
        };
        let counts = &mut finding.counts;
        let label = size_text(size);
        match fate {
            Fate::Intact => {
                counts.delivered += 1;
                outcomes.push(format!("{label} intact"));
            }
            Fate::Refused(reason) => {
                *counts.details.entry("refused".into()).or_default() += 1;
                outcomes.push(format!("{label} refused ({reason})"));
            }
            Fate::Recovered => {
                counts.delivered += 1;
                counts.recovered += 1;
                outcomes.push(format!("{label} intact after an unknown publish outcome"));
            }
            Fate::Truncated(got) => {
                counts.delivered += 1;
                counts.phantom += 1;
                finding
                    .failures
                    .push(format!("{label} arrived truncated to {got} bytes"));
            }
            Fate::Corrupted => {
                counts.delivered += 1;
                counts.phantom += 1;
                finding
                    .failures
                    .push(format!("{label} arrived with different bytes"));
            }
            Fate::Lost => {
                counts.lost += 1;
                finding.failures.push(format!(
                    "{label} was confirmed but not delivered within {}",
                    humantime::format_duration(p.timeout)
                ));
            }
            Fate::NoAnswer => {
                finding.failures.push(format!(
                    "{label}: no confirmation, no refusal and no delivery (the broker gave no clear answer)"
                ));
            }
            Fate::RefusedButDelivered => {
                counts.delivered += 1;
                counts.phantom += 1;
                finding
                    .failures
                    .push(format!("{label} was refused, yet delivered"));
            }
        }
    }
    Ok(finding.summary(outcomes.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::size_text;

    #[test]
    fn sizes_read_naturally() {
        assert_eq!(size_text(1), "1 B");
        assert_eq!(size_text(1024), "1 KiB");
        assert_eq!(size_text(512 * 1024), "512 KiB");
        assert_eq!(size_text(1 << 20), "1 MiB");
        assert_eq!(size_text(1000), "1000 B");
    }
}
