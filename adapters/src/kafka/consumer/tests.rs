//! The shared consumer's bookkeeping without a broker: attaching, leaving, closing.
//! Its behaviour with a broker is tested in `tests/kafka.rs`.

use std::sync::Arc;
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use tokio::sync::watch;

use super::FanOuts;
use super::control::Command;
use super::fanout::Hub;
use crate::subscription::SubscriptionSpec;

const TIMEOUT: Duration = Duration::from_secs(1);

fn hub(registry: &Arc<FanOuts>) -> (Arc<Hub>, std_mpsc::Receiver<Command>) {
    let (commands, commands_rx) = std_mpsc::channel();
    let (_ready, ready_rx) = watch::channel(None);
    let hub = Hub::new("t".into(), commands, ready_rx, registry);
    registry.0.lock().insert("t".into(), hub.clone());
    (hub, commands_rx)
}

#[test]
fn subscriptions_attach_and_leave_without_disturbing_the_others() {
    let registry = Arc::new(FanOuts::default());
    let (hub, _commands) = hub(&registry);
    let spec = SubscriptionSpec::new("t");
    let subs: Vec<_> = (0..3)
        .map(|_| hub.attach(&spec, TIMEOUT).expect("open"))
        .collect();
    assert_eq!(hub.recipients().len(), 3);
    // Dropping one: its channel is closed, so it is forgotten.
    let mut subs = subs.into_iter();
    drop(subs.next());
    let ids: Vec<u64> = hub.recipients().iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, [1, 2]);
    assert!(!hub.is_deserted());
    // Unsubscribing one that is not the last.
    assert!(!hub.detach(1));
    assert_eq!(hub.recipients().len(), 1);
    // The last one to leave closes the hub: nobody attaches any more.
    assert!(hub.detach(2));
    assert!(hub.is_deserted());
    assert!(hub.attach(&spec, TIMEOUT).is_none());
    drop(subs);
    // Retiring takes it out of the registry.
    assert!(hub.retire().is_empty());
    assert!(registry.0.lock().is_empty());
}

#[test]
fn a_hub_whose_subscriptions_were_all_dropped_closes() {
    let registry = Arc::new(FanOuts::default());
    let (hub, _commands) = hub(&registry);
    let spec = SubscriptionSpec::new("t");
    let sub = hub.attach(&spec, TIMEOUT).expect("open");
    assert!(!hub.is_deserted());
    drop(sub);
    assert!(hub.is_deserted());
    assert!(hub.recipients().is_empty());
    assert!(hub.attach(&spec, TIMEOUT).is_none());
}

#[test]
fn retiring_hands_back_the_attached_channels_and_keeps_a_newer_hub_listed() {
    let registry = Arc::new(FanOuts::default());
    let (old, _commands) = hub(&registry);
    let spec = SubscriptionSpec::new("t");
    let _sub = old.attach(&spec, TIMEOUT).expect("open");
    // A newer hub for the same topic replaced it in the registry.
    let (newer, _newer_commands) = hub(&registry);
    assert_eq!(old.retire().len(), 1, "the attached channel, for the error");
    assert!(old.attach(&spec, TIMEOUT).is_none());
    let listed = registry.0.lock().get("t").cloned().expect("still listed");
    assert!(Arc::ptr_eq(&listed, &newer));
}
