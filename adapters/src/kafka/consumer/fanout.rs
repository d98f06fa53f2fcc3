//! One consumer per topic for the fan-out subscriptions that can share it.
//!
//! A fan-out subscription that starts at the latest position
//! ([`StartPosition::Latest`](crate::StartPosition::Latest)) with automatic acks owns
//! nothing on the broker: no group, no offsets, no acks. Every such subscription of one
//! topic in one backend (so, in the engine, one process) therefore attaches to
//! one librdkafka consumer, a [`Hub`], which reads the topic once and hands each batch
//! to every attached subscription (see `handoff`). One consumer per subscription would
//! cost a reader thread, librdkafka's own threads, a connection and a fetch of every
//! message per subscriber: with ten subscribers a topic was read ten times over.
//!
//! ```text
//!  subscribe() ──registry lock──> attach to the topic's hub ──────────> await its "ready"
//!                                  │ (none, or closing: create one, attach, spawn its
//!                                  │  reader; it assigns every partition at the ends)
//!                                  v
//!  Subscription <──Batch::Many── hub's reader ── one consumer
//! ```
//!
//! Positions. The hub's consumer is assigned at the partition ends before its first
//! subscription is handed out, exactly like a consumer of its own. A subscription that
//! attaches later gets every batch the reader hands out after it attached (attaching
//! and handing out take the hub's lock), and no batch handed out before. A message
//! published after `subscribe` returned is read after the attach, so it reaches the
//! new subscription; a message published shortly before may reach it too, when the
//! consumer had not handed it out yet (as with a consumer of its own that started at
//! a partition end tansu placed before it, see the `kafka` module documentation).
//!
//! Leaving. Unsubscribing (or dropping) one subscription takes its channel out of the
//! hub and does not disturb the others. When the last one leaves, the hub closes (under
//! its lock, so no subscription can attach to it any more; the next one gets a new
//! hub) and its reader closes the consumer. An error that ends the consumer (the broker
//! gone, teardown) reaches every attached subscription.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};

use super::context::Readiness;
use super::control::{Command, KafkaSubscription};
use super::handoff::Outlet;
use super::{new_consumer, private_group_id, spawn_reader, wait_ready};
use crate::error::AdapterError;
use crate::kafka::admin::Shared;
use crate::subscription::{Batch, Subscription, SubscriptionSpec};

/// The shared consumers of one backend, by topic.
#[derive(Default)]
pub(crate) struct FanOuts(pub(super) Mutex<HashMap<Arc<str>, Arc<Hub>>>);

/// One shared consumer's subscriptions.
pub(super) struct Hub {
    topic: Arc<str>,
    state: Mutex<Attached>,
    /// To the reader: unsubscribes. Each subscription's handle holds a clone.
    commands: std_mpsc::Sender<Command>,
    /// The consumer's readiness.
    ready: watch::Receiver<Readiness>,
    /// The registry this hub is listed in, left when the hub closes.
    registry: Weak<FanOuts>,
}

/// The subscriptions attached to a hub.
#[derive(Default)]
struct Attached {
    channels: Vec<(u64, mpsc::Sender<Batch>)>,
    next_id: u64,
    /// No subscription attaches any more: the reader is ending.
    closing: bool,
}

impl Attached {
    /// Forgets subscriptions that were dropped; closes once none is left.
    fn prune(&mut self) {
        self.channels.retain(|(_, tx)| !tx.is_closed());
        if self.channels.is_empty() {
            self.closing = true;
        }
    }
}

impl Hub {
    /// A hub for `topic` without subscriptions, whose reader takes `commands`, listed
    /// in `registry` by the caller.
    pub(super) fn new(
        topic: Arc<str>,
        commands: std_mpsc::Sender<Command>,
        ready: watch::Receiver<Readiness>,
        registry: &Arc<FanOuts>,
    ) -> Arc<Hub> {
        Arc::new(Hub {
            topic,
            state: Mutex::new(Attached::default()),
            commands,
            ready,
            registry: Arc::downgrade(registry),
        })
    }

    /// Attaches a new subscription per `spec`; `None` if the hub is closing.
    pub(super) fn attach(
        &self,
        spec: &SubscriptionSpec,
        timeout: Duration,
    ) -> Option<Subscription> {
        let mut state = self.state.lock();
        if state.closing {
            return None;
        }
        let id = state.next_id;
        state.next_id += 1;
        let control = KafkaSubscription {
            topic: self.topic.clone(),
            id,
            commands: self.commands.clone(),
            rejected: Arc::new(AtomicU64::new(0)),
            tracks_acks: false,
            timeout,
        };
        let (tx, subscription) = Subscription::channel(spec, Box::new(control));
        state.channels.push((id, tx));
        Some(subscription)
    }

    /// Takes subscription `id` out; returns whether it was the last one (the hub is
    /// then closing).
    pub(super) fn detach(&self, id: u64) -> bool {
        let mut state = self.state.lock();
        state.channels.retain(|(other, _)| *other != id);
        state.prune();
        state.closing
    }

    /// The channels of the attached subscriptions (see [`Outlet`]).
    pub(super) fn recipients(&self) -> Vec<(u64, mpsc::Sender<Batch>)> {
        let mut state = self.state.lock();
        state.prune();
        state.channels.clone()
    }

    /// Whether every subscription left (the hub is then closing).
    pub(super) fn is_deserted(&self) -> bool {
        let mut state = self.state.lock();
        state.prune();
        state.closing
    }

    /// Closes the hub: no subscription attaches any more, and the registry forgets it.
    /// Returns the channels still attached.
    pub(super) fn retire(self: &Arc<Self>) -> Vec<mpsc::Sender<Batch>> {
        let channels = {
            let mut state = self.state.lock();
            state.closing = true;
            std::mem::take(&mut state.channels)
        };
        if let Some(registry) = self.registry.upgrade() {
            let mut hubs = registry.0.lock();
            if hubs
                .get(&self.topic)
                .is_some_and(|hub| Arc::ptr_eq(hub, self))
            {
                hubs.remove(&self.topic);
            }
        }
        channels.into_iter().map(|(_, tx)| tx).collect()
    }
}

/// Subscribes per `spec` (a fan-out subscription from the latest position with
/// automatic acks) through the topic's shared consumer, starting one if there is none,
/// and returns once that consumer is ready.
///
/// # Errors
///
/// As for a consumer of its own: it cannot be created, or it does not become ready
/// within the request timeout (naming why).
pub(super) async fn subscribe(
    shared: &Arc<Shared>,
    spec: &SubscriptionSpec,
    what: String,
) -> Result<Subscription, AdapterError> {
    let timeout = shared.options.request_timeout;
    let (subscription, ready) = {
        let mut hubs = shared.fan_outs.0.lock();
        let attached = hubs
            .get(&spec.topic)
            .and_then(|hub| Some((hub.attach(spec, timeout)?, hub.ready.clone())));
        match attached {
            Some(attached) => attached,
            None => {
                let (consumer, ready) = new_consumer(shared, spec, &private_group_id(), &what)?;
                let (commands, commands_rx) = std_mpsc::channel();
                let hub = Hub::new(
                    spec.topic.clone(),
                    commands,
                    ready.clone(),
                    &shared.fan_outs,
                );
                let subscription = hub
                    .attach(spec, timeout)
                    .expect("a new hub takes subscriptions");
                // Spawned after the attach, so the reader finds its first subscription.
                spawn_reader(
                    shared,
                    consumer,
                    Outlet::Shared(hub.clone()),
                    commands_rx,
                    Arc::new(AtomicU64::new(0)),
                    &what,
                )?;
                // Replaces a closing hub, if there was one.
                hubs.insert(spec.topic.clone(), hub);
                (subscription, ready)
            }
        }
    };
    wait_ready(ready, &what, timeout).await?;
    Ok(subscription)
}
