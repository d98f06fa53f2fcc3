//! The delivery hand-off: from a reader's batch to the subscriptions it serves, with
//! back-pressure.
//!
//! A reader serves one subscription ([`Outlet::Own`]) or the fan-out subscriptions of a
//! topic that share its consumer ([`Outlet::Shared`]). A batch goes to every
//! subscription attached when it is handed out, in the order it was read, as one
//! [`Batch::Many`] each (a clone per extra subscription: the payloads are shared
//! [`Bytes`](bytes::Bytes), so a clone copies a few pointers and each key).
//!
//! Back-pressure: when a subscription's channel is full, the reader waits for it (with
//! its partitions paused, still polling so that rebalances and heartbeats are served)
//! before it hands out the next batch. So a slow subscription slows the others that
//! share its consumer down to its pace, and none of them loses a message; the others
//! have their current batch already. That is the same choice every subscription made
//! for itself before consumers were shared (a full channel means the broker sees a
//! slow consumer, never a drop), and the engine reads every subscription on a task of
//! its own, so a subscriber is slow only when the machine is.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc as std_mpsc;

use rdkafka::consumer::Consumer;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

use super::BACKPRESSURE_WAIT;
use super::control::Command;
use super::fanout::Hub;
use super::reader::{End, Reader};
use crate::subscription::{Batch, Delivery};

/// Where a reader's deliveries go.
pub(super) enum Outlet {
    /// One subscription, whose consumer is its own.
    Own(mpsc::Sender<Batch>),
    /// The fan-out subscriptions of a topic sharing this consumer.
    Shared(Arc<Hub>),
}

impl Outlet {
    /// The channels a batch goes to now, each with its subscription's id. Empty when
    /// every subscription is gone.
    fn recipients(&self) -> Vec<(u64, mpsc::Sender<Batch>)> {
        match self {
            Outlet::Own(tx) if tx.is_closed() => Vec::new(),
            Outlet::Own(tx) => vec![(0, tx.clone())],
            Outlet::Shared(hub) => hub.recipients(),
        }
    }

    /// Whether every subscription is gone (a shared consumer then takes no new ones).
    fn is_deserted(&self) -> bool {
        match self {
            Outlet::Own(tx) => tx.is_closed(),
            Outlet::Shared(hub) => hub.is_deserted(),
        }
    }

    /// Takes no more subscriptions; returns the channels of those still attached.
    pub(super) fn close(self) -> Vec<mpsc::Sender<Batch>> {
        match self {
            Outlet::Own(tx) => vec![tx],
            Outlet::Shared(hub) => hub.retire(),
        }
    }
}

impl Reader {
    /// Serves the subscriptions' commands: acks, unsubscribes. A subscription that
    /// leaves a shared consumer is also taken out of `waiting` (the recipients of the
    /// batch being handed over). Returns why the reader ends, if it does.
    pub(super) fn serve(
        &mut self,
        mut waiting: Option<&mut Vec<(u64, mpsc::Sender<Batch>)>>,
    ) -> Option<End> {
        loop {
            match self.commands.try_recv() {
                Ok(Command::Ack { partition, offset }) => self.ack(partition, offset),
                Ok(Command::Unsubscribe { id, reply }) => match &self.outlet {
                    Outlet::Own(_) => return Some(End::Unsubscribed(reply)),
                    Outlet::Shared(hub) => {
                        if let Some(waiting) = waiting.as_deref_mut() {
                            waiting.retain(|(other, _)| *other != id);
                        }
                        if hub.detach(id) {
                            // The last one: it is answered once the consumer is closed.
                            return Some(End::Unsubscribed(reply));
                        }
                        // Its channel is dropped: its stream ends after what it holds.
                        let _ = reply.send(Ok(()));
                    }
                },
                Err(std_mpsc::TryRecvError::Empty) => break,
                // The subscription was dropped (a consumer of its own).
                Err(std_mpsc::TryRecvError::Disconnected) => return Some(End::Dropped),
            }
        }
        if matches!(self.outlet, Outlet::Shared(_)) && self.outlet.is_deserted() {
            return Some(End::Dropped);
        }
        None
    }

    /// Hands the batch to every subscription, waiting for room with the partitions
    /// paused (see the module documentation). Messages read meanwhile form the next
    /// batch.
    ///
    /// # Errors
    ///
    /// Why the reader ends, when it does while waiting: every subscription is gone,
    /// the last one unsubscribed, or teardown asked it to stop.
    pub(super) fn hand_over(&mut self) -> Result<(), End> {
        let mut waiting = self.outlet.recipients();
        if waiting.is_empty() {
            return Err(End::Dropped);
        }
        if self.batch.is_empty() {
            return Ok(());
        }
        // Messages arrive: whatever trouble there was is over.
        self.trouble = None;
        let mut deliveries: Vec<Delivery> = std::mem::take(&mut self.batch);
        loop {
            let mut i = 0;
            while i < waiting.len() {
                let done = match waiting[i].1.try_reserve() {
                    Ok(permit) => {
                        let batch = if waiting.len() == 1 {
                            std::mem::take(&mut deliveries)
                        } else {
                            deliveries.clone()
                        };
                        permit.send(Batch::Many(batch));
                        true
                    }
                    Err(TrySendError::Closed(())) => true,
                    Err(TrySendError::Full(())) => false,
                };
                if done {
                    waiting.swap_remove(i);
                } else {
                    i += 1;
                }
            }
            if waiting.is_empty() {
                if self.ctx().paused.swap(false, Ordering::AcqRel)
                    && let Ok(assignment) = self.consumer.assignment()
                {
                    let _ = self.consumer.resume(&assignment);
                }
                return if self.outlet.is_deserted() {
                    Err(End::Dropped)
                } else {
                    Ok(())
                };
            }
            // Nobody reads it, and teardown is waiting.
            if self.life.0.should_stop() {
                return Err(End::Dropped);
            }
            if !self.ctx().paused.swap(true, Ordering::AcqRel)
                && let Ok(assignment) = self.consumer.assignment()
            {
                let _ = self.consumer.pause(&assignment);
            }
            // A shared consumer serves its subscriptions' unsubscribes meanwhile, so that
            // one waiting subscription does not hold up another one's leaving. A consumer
            // of its own does not: its subscription drains the channel while it
            // unsubscribes, so the batch lands there first (a group member with
            // automatic acks has already stored the batch's offsets as consumed).
            if matches!(self.outlet, Outlet::Shared(_))
                && let Some(end) = self.serve(Some(&mut waiting))
            {
                return Err(end);
            }
            // Serve rebalances and heartbeats meanwhile; a message fetched before the
            // pause goes into the next batch.
            let polled = match self.consumer.poll(BACKPRESSURE_WAIT) {
                Some(Ok(message)) => {
                    let delivery = self.delivery(&message);
                    self.batch.push(delivery);
                    None
                }
                Some(Err(e)) => Some(e),
                None => None,
            };
            if let Some(e) = polled {
                self.on_error(e);
            }
        }
    }
}
