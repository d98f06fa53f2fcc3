//! Unit tests of the shared state.

use std::collections::VecDeque;

use super::*;
use crate::outbound::Batch;
use crate::request::Request;

fn drain(conn: &Conn) -> Vec<String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut lines = Vec::new();
    conn.out.close();
    loop {
        match rt.block_on(conn.out.take(VecDeque::new())) {
            Batch::Items(items) => lines.extend(
                items
                    .iter()
                    .map(|b| String::from_utf8(b.to_vec()).unwrap().trim_end().to_owned()),
            ),
            Batch::End(_) => return lines,
        }
    }
}

fn send(broker: &Broker, conn: &Conn, json: &str) {
    match Request::parse(json.as_bytes()).unwrap() {
        Request::Send(s) => broker.send(conn, &s),
        other => panic!("{other:?}"),
    }
}

fn subscribe(broker: &Broker, conn: &Conn, json: &str) {
    match Request::parse(json.as_bytes()).unwrap() {
        Request::Subscribe(s) => broker.subscribe(conn, &s),
        other => panic!("{other:?}"),
    }
}

#[test]
fn sender_push_comes_before_its_reply() {
    let broker = Broker::new(Config::default());
    let a = broker.connect();
    subscribe(&broker, &a, r#"{"command":"subscribe","topic":"t"}"#);
    send(
        &broker,
        &a,
        r#"{"command":"send","topic":"t","msg":"m","delivery":"all"}"#,
    );
    assert_eq!(
        drain(&a),
        [
            r#"{"success":true}"#,
            r#"{"command":"send","topic":"t","msg":"m","delivery":"all","index":0}"#,
            r#"{"success":true}"#
        ]
    );
}

#[test]
fn one_without_subscribers_is_cached_and_consumed_once() {
    let broker = Broker::new(Config::default());
    let p = broker.connect();
    send(
        &broker,
        &p,
        r#"{"command":"send","topic":"t","msg":"m","delivery":"one"}"#,
    );
    let a = broker.connect();
    let b = broker.connect();
    subscribe(&broker, &a, r#"{"command":"subscribe","topic":"t"}"#);
    subscribe(&broker, &b, r#"{"command":"subscribe","topic":"t"}"#);
    assert_eq!(drain(&a).len(), 2);
    assert_eq!(drain(&b), [r#"{"success":true}"#]);
    assert_eq!(broker.stats().cached, 0);
}

#[test]
fn dead_letter_after_max_attempts() {
    let broker = Broker::new(Config {
        max_attempts: 2,
        ..Config::default()
    });
    let a = broker.connect();
    subscribe(
        &broker,
        &a,
        r#"{"command":"subscribe","topic":"t","ack":true}"#,
    );
    send(
        &broker,
        &a,
        r#"{"command":"send","topic":"t","msg":"m","delivery":"one"}"#,
    );
    assert_eq!(broker.nack(&a, "t", 0), AckResult::Done);
    assert_eq!(broker.nack(&a, "t", 0), AckResult::Done);
    assert_eq!(broker.nack(&a, "t", 0), AckResult::Unknown);
    let d = broker.connect();
    subscribe(&broker, &d, r#"{"command":"subscribe","topic":"$dlq.t"}"#);
    assert_eq!(
        drain(&a)[3..],
        [
            r#"{"command":"send","topic":"t","msg":"m","delivery":"one","index":0,"redelivered":true,"attempt":2}"#,
            r#"{"success":true}"#,
            r#"{"success":true}"#,
        ]
    );
    assert_eq!(
        drain(&d),
        [
            r#"{"success":true}"#,
            r#"{"command":"send","topic":"$dlq.t","msg":"m","delivery":"one","index":0,"original_topic":"t","original_index":0,"attempts":2}"#
        ]
    );
    assert_eq!(broker.stats().dead_lettered, 1);
}
