use super::*;

#[test]
fn start_positions_map_to_deliver_policies() {
    assert_eq!(deliver_policy(StartPosition::Latest), DeliverPolicy::New);
    assert_eq!(deliver_policy(StartPosition::Beginning), DeliverPolicy::All);
    assert_eq!(
        deliver_policy(StartPosition::AfterSequence(41)),
        DeliverPolicy::ByStartSequence { start_sequence: 42 }
    );
    assert_eq!(
        deliver_policy(StartPosition::AfterSequence(-1)),
        DeliverPolicy::All
    );
    assert_ne!(own_consumer_name(), own_consumer_name());
    assert_eq!(pull_bytes(1024 * 1024), 16 * 1024 * 1024);
    assert_eq!(pull_bytes(64 * 1024 * 1024), 256 * 1024 * 1024);
}
