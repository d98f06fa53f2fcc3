//! Tests of the reference adapter against scripted fake brokers (a `TcpListener` in the
//! test playing the broker's part line by line). The real broker is exercised in
//! `tests/reference.rs`.

use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::task::JoinHandle;

mod publishing;

use super::*;
use crate::{AckMode, PublishOutcome, PublishRequest, StartPosition, SubscriptionSpec};

/// The broker's side of one connection.
struct Peer {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl Peer {
    /// The next client line as JSON, `None` at end of stream.
    async fn line(&mut self) -> Option<Value> {
        let mut text = String::new();
        match self.reader.read_line(&mut text).await.unwrap() {
            0 => None,
            _ => Some(serde_json::from_str(text.trim_end()).unwrap()),
        }
    }

    async fn send(&mut self, line: &str) {
        self.writer
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .unwrap();
    }
}

/// Starts a fake broker that runs `script` on the first connection it accepts.
async fn fake_broker<F, Fut, T>(script: F) -> (String, JoinHandle<T>)
where
    F: FnOnce(Peer) -> Fut + Send + 'static,
    Fut: Future<Output = T> + Send,
    T: Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let (rd, wr) = stream.into_split();
        script(Peer {
            reader: BufReader::new(rd),
            writer: wr,
        })
        .await
    });
    (format!("tcp://{addr}"), task)
}

fn options() -> ConnectOptions {
    ConnectOptions::new()
        .publish_timeout(Duration::from_secs(5))
        .request_timeout(Duration::from_secs(5))
}

async fn open(url: &str, options: &ConnectOptions) -> Connection {
    let host_port = host_port(url).unwrap();
    Connection::open(url, &host_port, options).await.unwrap()
}

/// A connection to `url` subscribed to topic `t`.
async fn subscribed(url: &str) -> (Connection, Subscription) {
    let conn = open(url, &options()).await;
    let sub = conn.subscribe(&SubscriptionSpec::new("t")).await.unwrap();
    (conn, sub)
}

/// Waits (up to 5 s) until `conn` knows it is dead.
async fn until_closed(conn: &Connection) {
    tokio::time::timeout(Duration::from_secs(5), async {
        while !conn.is_closed() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
}

#[test]
fn urls() {
    assert_eq!(host_port("tcp://127.0.0.1:7001").unwrap(), "127.0.0.1:7001");
    assert_eq!(host_port("TCP://broker/").unwrap(), "broker:7000");
    assert_eq!(host_port("localhost:9").unwrap(), "localhost:9");
    assert_eq!(host_port("tcp://[::1]:7002").unwrap(), "[::1]:7002");
    assert_eq!(host_port("tcp://[::1]").unwrap(), "[::1]:7000");
    for (bad, why) in [
        ("nats://h:1", "unsupported scheme 'nats'"),
        ("tcp://", "no host"),
        ("tcp://h:port", "port 'port' is not a number"),
        ("tcp://h:1/x", "only a host and a port"),
        ("tcp://::1", "must be in brackets"),
        ("tcp://[::1:7", "unbalanced brackets"),
    ] {
        let err = host_port(bad).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidUrl, "{bad}");
        assert!(err.to_string().contains(why), "{bad}: {err}");
        assert!(err.to_string().contains(bad), "{bad}: {err}");
    }
}

#[tokio::test]
async fn unreachable_broker_names_url_and_address_quickly() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let url = format!("tcp://{addr}");
    let started = std::time::Instant::now();
    let Err(err) = crate::connect(BackendKind::Reference, &url, ConnectOptions::new()).await else {
        panic!("connected to a closed port");
    };
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(err.kind(), ErrorKind::Connect);
    assert_eq!(
        err.to_string(),
        format!("cannot connect to reference broker at {url} (tried {addr}: connection refused)")
    );
}

#[tokio::test]
async fn pushes_split_across_reads_arrive_whole_and_in_order() {
    const N: i64 = 3000;
    let (url, broker) = fake_broker(|mut peer| async move {
        peer.line().await.unwrap();
        peer.send(r#"{"success":true}"#).await;
        let mut bytes = Vec::new();
        for i in 0..N {
            let msg = if i % 100 == 7 {
                // Escapes take the slow path of the decoder, and an owned payload.
                format!("esc\\\\\\\"{i}\\n")
            } else {
                format!("m{i}-{}", "x".repeat((i % 50) as usize))
            };
            bytes.extend_from_slice(
                format!(
                    "{{\"command\":\"send\",\"topic\":\"t\",\"msg\":\"{msg}\",\"delivery\":\"all\",\"index\":{i}}}\r\n"
                )
                .as_bytes(),
            );
        }
        // Odd-sized writes cut lines (and their \r\n) anywhere.
        for chunk in bytes.chunks(997) {
            peer.writer.write_all(chunk).await.unwrap();
            peer.writer.flush().await.unwrap();
            tokio::task::yield_now().await;
        }
        peer.line().await
    })
    .await;
    let (conn, mut sub) = subscribed(&url).await;
    for i in 0..N {
        let d = sub.next().await.unwrap().unwrap();
        assert_eq!(d.sequence, Some(i));
        if i % 100 == 7 {
            assert_eq!(d.payload, format!("esc\\\"{i}\n"));
        } else {
            assert_eq!(d.payload, format!("m{i}-{}", "x".repeat((i % 50) as usize)));
        }
    }
    drop(sub);
    drop(conn);
    assert_eq!(broker.await.unwrap(), None);
}

#[tokio::test]
async fn pushes_are_told_apart_from_replies() {
    let (url, broker) = fake_broker(|mut peer| async move {
        let sub = peer.line().await.unwrap();
        assert_eq!(sub["command"], "subscribe");
        assert_eq!(sub["cache"], false);
        peer.send(r#"{"success":true}"#).await;
        for i in 0..5 {
            let send = peer.line().await.unwrap();
            // The broker pushes the sender's own `all` message before answering it.
            let mut push = send.clone();
            push["index"] = i.into();
            peer.send(&push.to_string()).await;
            // A push for a topic this connection does not read is ignored.
            peer.send(r#"{"command":"send","topic":"other","msg":"x","delivery":"all","index":0}"#)
                .await;
            peer.send(r#"{"success":true}"#).await;
        }
        peer.line().await
    })
    .await;
    let (conn, mut sub) = subscribed(&url).await;
    for i in 0..5i64 {
        assert_eq!(
            conn.publish(PublishRequest::new("t", format!("m{i}")).key("k"))
                .await,
            PublishOutcome::Ok
        );
        let d = sub.next().await.unwrap().unwrap();
        assert_eq!(d.payload, format!("m{i}"));
        assert_eq!(d.sequence, Some(i));
        assert_eq!(d.key.as_deref(), Some("k"));
        assert_eq!(&*d.topic, "t");
        assert!(!d.redelivered);
    }
    drop(sub);
    drop(conn);
    assert_eq!(broker.await.unwrap(), None, "client closed its side");
}

#[tokio::test]
async fn no_answer_is_unknown_and_a_dead_connection_fails_new_publishes() {
    let (url, broker) = fake_broker(|mut peer| async move {
        // Read the first publish and never answer it; close after the second.
        peer.line().await.unwrap();
        peer.line().await.unwrap();
    })
    .await;
    let conn = open(&url, &options().publish_timeout(Duration::from_millis(200))).await;
    let started = std::time::Instant::now();
    assert_eq!(
        conn.publish(PublishRequest::new("t", "a")).await,
        PublishOutcome::Unknown
    );
    assert!(started.elapsed() >= Duration::from_millis(200));
    // Written, then the broker closes: no confirmation, so unknown as well.
    let second = conn.publish(PublishRequest::new("t", "b")).await;
    assert_eq!(second, PublishOutcome::Unknown);
    broker.await.unwrap();
    // Once the connection is known dead, nothing is sent and the reason says why.
    until_closed(&conn).await;
    let PublishOutcome::Failed(reason) = conn.publish(PublishRequest::new("t", "c")).await else {
        panic!("publish on a closed connection did not fail");
    };
    assert!(
        reason.starts_with("not sent: the reference broker at tcp://127.0.0.1:")
            && reason.ends_with("closed the connection"),
        "{reason}"
    );
}

#[tokio::test]
async fn non_utf8_payload_fails_without_reaching_the_broker() {
    let (url, broker) = fake_broker(|mut peer| async move {
        let line = peer.line().await.unwrap();
        peer.send(r#"{"success":true}"#).await;
        line
    })
    .await;
    let conn = open(&url, &options()).await;
    let bad = PublishRequest::new("t", bytes::Bytes::from_static(b"\xff"));
    assert!(matches!(conn.publish(bad).await, PublishOutcome::Failed(r) if r.contains("UTF-8")));
    assert_eq!(
        conn.publish(PublishRequest::new("t", "good")).await,
        PublishOutcome::Ok
    );
    assert_eq!(broker.await.unwrap()["msg"], "good");
}

#[tokio::test]
async fn slow_consumer_is_an_error_item_not_a_silent_end() {
    let (url, _broker) = fake_broker(|mut peer| async move {
        peer.line().await.unwrap();
        peer.send(r#"{"success":true}"#).await;
        peer.send(r#"{"command":"send","topic":"t","msg":"1","delivery":"all","index":0}"#)
            .await;
        peer.send(r#"{"command":"send","topic":"t","msg":"2","delivery":"all","index":1}"#)
            .await;
        peer.send(r#"{"success":false,"reason":"Slow consumer"}"#)
            .await;
        // The broker closes the connection.
    })
    .await;
    let conn = open(&url, &options()).await;
    let mut sub = conn
        .subscribe(&SubscriptionSpec::new("t").start(StartPosition::Beginning))
        .await
        .unwrap();
    let items: Vec<_> = (&mut sub).collect().await;
    assert_eq!(items.len(), 3, "{items:?}");
    assert_eq!(items[0].as_ref().unwrap().payload, "1");
    assert_eq!(items[1].as_ref().unwrap().payload, "2");
    let err = items[2].as_ref().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SlowConsumer);
    assert!(err.to_string().contains("Slow consumer"), "{err}");
}

#[tokio::test]
async fn broker_closing_ends_the_stream_with_an_error() {
    let (url, _broker) = fake_broker(|mut peer| async move {
        peer.line().await.unwrap();
        peer.send(r#"{"success":true}"#).await;
    })
    .await;
    let (_conn, mut sub) = subscribed(&url).await;
    let err = sub.next().await.unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Closed);
    assert!(err.to_string().ends_with("closed the connection"), "{err}");
    assert!(sub.next().await.is_none());
}

#[tokio::test]
async fn garbage_from_the_broker_is_a_protocol_error() {
    let (url, _broker) = fake_broker(|mut peer| async move {
        peer.line().await.unwrap();
        peer.send(r#"{"success":true}"#).await;
        peer.send("this is not json").await;
        // Keep the connection open until the client gives up on it.
        peer.line().await
    })
    .await;
    let (_conn, mut sub) = subscribed(&url).await;
    let err = sub.next().await.unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Protocol);
    assert!(err.to_string().contains("this is not json"), "{err}");
}

#[tokio::test]
async fn an_answer_to_nothing_is_a_protocol_error() {
    let (url, _broker) = fake_broker(|mut peer| async move {
        peer.line().await.unwrap();
        peer.send(r#"{"success":true}"#).await;
        peer.send(r#"{"success":true}"#).await;
        peer.line().await
    })
    .await;
    let (_conn, mut sub) = subscribed(&url).await;
    let err = sub.next().await.unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Protocol);
    assert!(err.to_string().contains("never sent"), "{err}");
}

#[tokio::test]
async fn rejected_subscribe_and_stats() {
    let (url, broker) = fake_broker(|mut peer| async move {
        assert_eq!(peer.line().await.unwrap()["command"], "subscribe");
        peer.send(r#"{"success":false,"reason":"Malformed json message"}"#)
            .await;
        assert_eq!(peer.line().await.unwrap()["command"], "stats");
        peer.send(r#"{"success":true,"stats":{"connections":1,"slow_consumer_disconnects":0}}"#)
            .await;
        peer.line().await
    })
    .await;
    let conn = open(&url, &options()).await;
    let err = conn
        .subscribe(&SubscriptionSpec::new("t"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Rejected);
    assert_eq!(err.to_string(), "subscribe to t: Malformed json message");
    let stats = conn.stats().await.unwrap();
    assert_eq!(stats["connections"], 1);
    drop(conn);
    assert_eq!(broker.await.unwrap(), None);
}

#[tokio::test]
async fn unanswered_subscribe_times_out() {
    let (url, _broker) = fake_broker(|mut peer| async move {
        peer.line().await.unwrap();
        peer.line().await
    })
    .await;
    let conn = open(&url, &options().request_timeout(Duration::from_millis(200))).await;
    let err = conn
        .subscribe(&SubscriptionSpec::new("t"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert_eq!(
        err.to_string(),
        "subscribe to t: no answer from the broker within 200ms"
    );
}

#[tokio::test]
async fn manual_acks_nacks_and_unsubscribe() {
    let (url, broker) = fake_broker(|mut peer| async move {
        let sub = peer.line().await.unwrap();
        assert_eq!(sub["ack"], true);
        assert_eq!(sub["last_seen"], 4);
        peer.send(r#"{"success":true}"#).await;
        peer.send(r#"{"command":"send","topic":"t","msg":"a","delivery":"one","index":5}"#)
            .await;
        peer.send(r#"{"command":"send","topic":"t","msg":"b","delivery":"one","index":6,"redelivered":true,"attempt":2}"#)
            .await;
        let ack = peer.line().await.unwrap();
        assert_eq!(ack, serde_json::json!({"command":"ack","topic":"t","index":5}));
        peer.send(r#"{"success":true}"#).await;
        let nack = peer.line().await.unwrap();
        assert_eq!(nack, serde_json::json!({"command":"nack","topic":"t","index":6}));
        // Refused: counted, not fatal.
        peer.send(r#"{"success":false,"reason":"Malformed json message"}"#)
            .await;
        let unsub = peer.line().await.unwrap();
        assert_eq!(unsub, serde_json::json!({"command":"unsubscribe","topic":"t"}));
        // A push that was on its way before the unsubscribe took effect.
        peer.send(r#"{"command":"send","topic":"t","msg":"c","delivery":"one","index":7}"#)
            .await;
        peer.send(r#"{"success":true}"#).await;
        peer.line().await
    })
    .await;
    let conn = open(&url, &options()).await;
    let spec = SubscriptionSpec::new("t")
        .start(StartPosition::AfterSequence(4))
        .ack(AckMode::Manual);
    let mut sub = conn.subscribe(&spec).await.unwrap();
    let a = sub.next().await.unwrap().unwrap();
    assert_eq!(
        (a.sequence, a.redelivered, a.attempt),
        (Some(5), false, None)
    );
    let b = sub.next().await.unwrap().unwrap();
    assert_eq!(
        (b.sequence, b.redelivered, b.attempt),
        (Some(6), true, Some(2))
    );
    sub.ack(&a).await.unwrap();
    sub.nack(&b).await.unwrap();
    sub.unsubscribe().await.unwrap();
    assert_eq!(sub.rejected_acks(), 1);
    let rest: Vec<_> = (&mut sub).map(|d| d.unwrap().payload).collect().await;
    assert_eq!(rest, ["c"]);
    drop(sub);
    drop(conn);
    assert_eq!(broker.await.unwrap(), None);
}

#[tokio::test]
async fn dropping_the_last_handle_waits_for_answers_then_closes() {
    let (url, broker) = fake_broker(|mut peer| async move {
        peer.line().await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        peer.send(r#"{"success":true}"#).await;
        peer.line().await
    })
    .await;
    let conn = open(&url, &options()).await;
    let publish = tokio::spawn(conn.publish(PublishRequest::new("t", "last words")));
    // Let the publish reach the writer, then drop the only handle.
    tokio::time::sleep(Duration::from_millis(20)).await;
    drop(conn);
    assert_eq!(publish.await.unwrap(), PublishOutcome::Ok);
    assert_eq!(broker.await.unwrap(), None);
}
