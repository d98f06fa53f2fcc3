//! Unit tests of the parts that need no broker: URLs, names, queue arguments, the key's
//! wire form, error wording.

use lapin::protocol::{AMQPError, AMQPHardError, AMQPSoftError};
use lapin::types::{AMQPValue, FieldTable, ShortString};

use super::address::{Target, server_version};
use super::errors::{connect_failed, describe};
use super::message;
use super::topology::{self, KEY_HEADER, MAX_DELIVERY_ATTEMPTS, QueuePlan, QueueType, TopicConfig};
use crate::endpoint::redact;
use crate::error::ErrorKind;

#[test]
fn urls_keep_ip_hosts_ports_vhosts_and_hide_passwords() {
    let t = Target::parse("amqp://guest:guest@127.0.0.1:5672/%2f").unwrap();
    // lapin's parser alone would have replaced the IP address by "localhost".
    assert_eq!(t.uri.authority.host, "127.0.0.1");
    assert_eq!(t.uri.authority.port, 5672);
    assert_eq!(t.host_port, "127.0.0.1:5672");
    assert_eq!(t.vhost(), "/");
    assert_eq!(t.user(), "guest");
    assert_eq!(t.display, "amqp://guest:***@127.0.0.1:5672/%2f");
    assert_eq!(t.prefetch, None);
    assert!(!t.is_tls());

    let t = Target::parse("amqp://bob:s3cret@[::1]/orders?prefetch=50&heartbeat=10").unwrap();
    assert_eq!(t.uri.authority.host, "::1");
    assert_eq!(t.host_port, "[::1]:5672");
    assert_eq!(t.vhost(), "orders");
    assert_eq!(t.prefetch, Some(50));
    assert_eq!(t.uri.query.heartbeat, Some(10));
    assert_eq!(
        t.display,
        "amqp://bob:***@[::1]/orders?prefetch=50&heartbeat=10"
    );

    let t = Target::parse("amqps://broker.example:5671/%2f").unwrap();
    assert!(t.is_tls());
    assert_eq!(t.host_port, "broker.example:5671");
}

#[test]
fn bad_urls_say_what_is_wrong_without_the_password() {
    for (url, why) in [
        ("http://h/%2f", "unsupported scheme 'http'"),
        ("h:5672", "no scheme"),
        ("amqp://u:pw@h:99999/%2f", "port '99999'"),
        ("amqp://a,b/%2f", "more than one host"),
        ("amqp://u:pw@h/%2f?prefetch=lots", "prefetch 'lots'"),
        ("amqp://", "no host"),
    ] {
        let err = Target::parse(url).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidUrl, "{url}");
        let text = err.to_string();
        assert!(text.contains(why), "{url}: {text}");
        assert!(text.starts_with("invalid rabbitmq URL '"), "{text}");
        assert!(!text.contains(":pw@"), "{text}");
    }
}

#[test]
fn redaction_touches_only_the_password() {
    assert_eq!(redact("amqp://u:p@h:1/v?x=1"), "amqp://u:***@h:1/v?x=1");
    assert_eq!(redact("amqp://u@h/v"), "amqp://u@h/v");
    assert_eq!(redact("amqp://h/v"), "amqp://h/v");
    assert_eq!(redact("amqp://u:p:q@h"), "amqp://u:***@h");
    assert_eq!(redact("not a url"), "not a url");
    // An '@' in the path is not user info.
    assert_eq!(redact("amqp://h/a@b"), "amqp://h/a@b");
}

#[test]
fn names_of_topics_groups_and_dead_letters() {
    assert_eq!(topology::group_queue("bb.r.t", "g"), "bb.r.t.group.g");
    let dlq = topology::dead_letter_topic("bb.r.t");
    assert_eq!(dlq, "bb.r.t.dead-letter");
    assert!(topology::is_dead_letter_topic(&dlq));
    assert!(!topology::is_dead_letter_topic("bb.r.t"));
    assert!(!topology::is_dead_letter_topic(".dead-letter"));
    assert!(topology::check_name("topic", "bb.r.t").is_ok());
    for bad in ["", "amq.direct", &"x".repeat(256)] {
        let err = topology::check_name("topic", bad).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
    }
}

fn arg<'a>(plan: &'a QueuePlan, key: &str) -> Option<&'a AMQPValue> {
    plan.arguments.inner().get(key)
}

#[test]
fn classic_queues_by_default() {
    let group = QueuePlan::group("t", "g", TopicConfig::default());
    assert_eq!(group.name, "t.group.g");
    assert_eq!(group.queue_type, QueueType::Classic);
    assert!(!group.options.exclusive && !group.options.auto_delete);
    assert!(group.arguments.inner().is_empty());
    assert_eq!(group.exchange, "t");

    let fanout = QueuePlan::fanout("t", TopicConfig::default());
    assert_eq!(fanout.name, "", "server-named");
    assert!(fanout.options.exclusive && fanout.options.auto_delete);
    assert!(!fanout.delete_with_subscription);
    assert!(fanout.arguments.inner().is_empty());
}

#[test]
fn dead_letter_topics_get_quorum_queues_with_a_delivery_limit() {
    let config = TopicConfig {
        dead_letter: true,
        max_messages: Some(10),
    };
    let group = QueuePlan::group("t", "g", config);
    assert_eq!(group.queue_type, QueueType::Quorum);
    assert!(group.options.durable);
    assert_eq!(
        arg(&group, "x-queue-type"),
        Some(&AMQPValue::LongString("quorum".into()))
    );
    assert_eq!(
        arg(&group, "x-dead-letter-exchange"),
        Some(&AMQPValue::LongString("t.dead-letter".into()))
    );
    assert_eq!(
        arg(&group, "x-delivery-limit"),
        Some(&AMQPValue::LongLongInt(i64::from(
            MAX_DELIVERY_ATTEMPTS - 1
        )))
    );
    assert_eq!(
        arg(&group, "x-max-length"),
        Some(&AMQPValue::LongLongInt(10))
    );
    assert_eq!(
        arg(&group, "x-overflow"),
        Some(&AMQPValue::LongString("drop-head".into()))
    );

    let a = QueuePlan::fanout("t", config);
    let b = QueuePlan::fanout("t", config);
    assert!(a.name.starts_with("t.fanout."), "{}", a.name);
    assert_ne!(a.name, b.name);
    assert!(!a.options.exclusive && !a.options.auto_delete && a.options.durable);
    assert!(a.delete_with_subscription);
    assert!(arg(&a, "x-expires").is_some());

    let dead = QueuePlan::dead_letters("t.dead-letter");
    assert_eq!(dead.name, "t.dead-letter");
    assert_eq!(dead.exchange, "t.dead-letter");
    assert_eq!(dead.queue_type, QueueType::Classic);
}

#[test]
fn keys_travel_as_routing_key_or_header() {
    let (rk, props) = message::routing(None);
    assert_eq!(rk.as_str(), "");
    assert_eq!(message::key(&rk, &props), None);

    let (rk, props) = message::routing(Some("customer-7"));
    assert_eq!(rk.as_str(), "customer-7");
    assert!(props.headers().is_none(), "no header needed");
    assert_eq!(message::key(&rk, &props).as_deref(), Some("customer-7"));

    for key in ["", &"k".repeat(256)] {
        let (rk, props) = message::routing(Some(key));
        assert_eq!(rk.as_str(), "");
        assert!(
            props
                .headers()
                .as_ref()
                .unwrap()
                .inner()
                .contains_key(KEY_HEADER)
        );
        assert_eq!(message::key(&rk, &props).as_deref(), Some(key));
    }
}

#[test]
fn quorum_attempts_come_from_the_delivery_count() {
    let (_, props) = message::routing(None);
    assert_eq!(message::quorum_attempt(&props), 1);
    let mut headers = FieldTable::default();
    headers.insert("x-delivery-count".into(), AMQPValue::LongLongInt(3));
    let props = props.with_headers(headers);
    assert_eq!(message::quorum_attempt(&props), 4);
}

#[test]
fn server_version_from_server_properties() {
    let mut props = FieldTable::default();
    props.insert("product".into(), AMQPValue::LongString("RabbitMQ".into()));
    props.insert("version".into(), AMQPValue::LongString("3.12.1".into()));
    assert_eq!(server_version(&props).as_deref(), Some("RabbitMQ 3.12.1"));
    assert_eq!(server_version(&FieldTable::default()), None);
}

fn protocol_error(error: AMQPError) -> lapin::Error {
    lapin::ErrorKind::ProtocolError(error).into()
}

#[test]
fn broker_refusals_keep_the_brokers_words() {
    let e = protocol_error(AMQPError::new(
        AMQPSoftError::NOTFOUND.into(),
        ShortString::from("NOT_FOUND - no exchange 'x' in vhost '/'"),
    ));
    assert_eq!(
        describe(&e),
        (
            ErrorKind::Rejected,
            "NOT_FOUND - no exchange 'x' in vhost '/'".to_owned()
        )
    );
    let e: lapin::Error = std::io::Error::from(std::io::ErrorKind::ConnectionReset).into();
    assert_eq!(describe(&e).0, ErrorKind::Closed);
}

#[test]
fn login_and_vhost_refusals_name_the_user_and_vhost() {
    let target = Target::parse("amqp://bad:pw@127.0.0.1:5672/%2f").unwrap();
    let e = protocol_error(AMQPError::new(
        AMQPSoftError::ACCESSREFUSED.into(),
        ShortString::from(
            "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN",
        ),
    ));
    let err = connect_failed(&target, &e);
    assert_eq!(err.kind(), ErrorKind::Rejected);
    assert!(
        err.to_string().starts_with(
            "rabbitmq at amqp://bad:***@127.0.0.1:5672/%2f refused the login for user 'bad' (ACCESS_REFUSED"
        ),
        "{err}"
    );

    let target = Target::parse("amqp://u:pw@127.0.0.1/nope").unwrap();
    let e = protocol_error(AMQPError::new(
        AMQPHardError::NOTALLOWED.into(),
        ShortString::from("NOT_ALLOWED - vhost nope not found"),
    ));
    let err = connect_failed(&target, &e);
    assert_eq!(err.kind(), ErrorKind::Rejected);
    assert!(
        err.to_string().contains("virtual host 'nope' for user 'u'"),
        "{err}"
    );

    let e: lapin::Error = std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into();
    let err = connect_failed(&target, &e);
    assert_eq!(err.kind(), ErrorKind::Connect);
    assert!(err.to_string().contains("tried 127.0.0.1:5672"), "{err}");
}
