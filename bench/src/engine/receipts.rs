//! Receipts: a replying subscriber answers each measured first delivery by publishing
//! to the sender's inbox, as a messaging app's delivery receipts do.

use std::sync::atomic::Ordering;
use std::time::Instant;

use brokerbench_adapters::{Producer, PublishRequest};
use brokerbench_results::Recorder;
use bytes::Bytes;
use futures::StreamExt;

use super::outbox::{Outbox, Pending};
use super::shared::Shared;
use crate::envelope::Envelope;
use crate::plan::ReplyPlan;

/// Receipt publishing state of a replying subscriber.
pub(super) struct Replier {
    pub(super) plan: ReplyPlan,
    producer: Producer,
    seq: u64,
    pub(super) outbox: Outbox,
}

impl Replier {
    /// A receipt sender with producer id `id`, publishing through `producer`.
    pub(super) fn new(plan: ReplyPlan, id: u32, producer: Producer) -> Self {
        Self {
            plan,
            producer,
            seq: 0,
            outbox: Outbox::new(id, None),
        }
    }

    /// Publishes one receipt to the inbox of producer `to`, for a message received at
    /// `received_at`; waits first while too many receipts are in flight.
    pub(super) async fn send(
        &mut self,
        shared: &Shared,
        to: u32,
        received_at: Instant,
        recorder: &mut Recorder,
    ) {
        let Some(Some(inbox)) = shared.inboxes.get(to as usize) else {
            return;
        };
        let clock = shared.clock();
        while self.outbox.messages >= shared.max_in_flight {
            if let Some(done) = self.outbox.in_flight.next().await {
                self.outbox.settle(shared, &clock, recorder, done);
            }
        }
        let id = self.outbox.result.id;
        let intended_ns = clock.since_epoch(received_at);
        let sent = Instant::now();
        let envelope = Envelope {
            run: shared.run_tag,
            producer: id,
            seq: self.seq,
            intended_ns,
            sent_ns: clock.since_epoch(sent),
        };
        let request =
            PublishRequest::new(inbox.clone(), Bytes::from(envelope.encode(self.plan.size)));
        let seq = self.seq;
        self.seq += 1;
        shared.producers[id as usize]
            .next_seq
            .store(self.seq, Ordering::Release);
        let publish = Pending::One(self.producer.publish(request));
        self.outbox.push(seq, intended_ns, 1, sent, publish);
    }
}
