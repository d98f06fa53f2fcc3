//! Publishing against a fake broker: pipelining past the pending FIFO, batches and their
//! writes, answers cut short or never given.

use super::*;

/// Answers every `send` by its message: `fail…` is refused, `dup…` is a duplicate, the
/// rest succeed. Returns how many reads it took to get `n` lines (batching check).
async fn answer_sends(mut peer: Peer, n: usize) -> usize {
    let mut reads = 0;
    let mut pending = Vec::new();
    let mut seen = 0;
    while seen < n {
        let mut chunk = vec![0u8; 1 << 20];
        let got = peer.reader.read(&mut chunk).await.unwrap();
        assert!(got > 0, "client closed early");
        reads += 1;
        pending.extend_from_slice(&chunk[..got]);
        while let Some(pos) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=pos).collect();
            let request: Value = serde_json::from_slice(&line).unwrap();
            assert_eq!(request["command"], "send");
            let msg = request["msg"].as_str().unwrap();
            let reply = if msg.starts_with("fail") {
                r#"{"success":false,"reason":"Malformed json message"}"#
            } else if msg.starts_with("dup") {
                r#"{"success":true,"duplicate":true}"#
            } else {
                r#"{"success":true}"#
            };
            peer.send(reply).await;
            seen += 1;
        }
    }
    reads
}

#[tokio::test(flavor = "current_thread")]
async fn pipelined_publishes_resolve_in_order_past_a_full_pending_fifo() {
    // More unanswered publishes than the reader's FIFO holds: the first MAX_IN_FLIGHT
    // are staged by their callers, the rest queue for the writer task (each behind the
    // one before), which stages them as the answers free room.
    const N: usize = super::connection::MAX_IN_FLIGHT + 1000;
    let (url, broker) = fake_broker(|peer| async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        answer_sends(peer, N).await
    })
    .await;
    let conn = open(&url, &options()).await;
    let mut inflight: FuturesUnordered<_> = (0..N)
        .map(|i| {
            let msg = match i % 10 {
                3 => format!("fail-{i}"),
                7 => format!("dup-{i}"),
                _ => format!("ok-{i}"),
            };
            let publish = conn.publish(PublishRequest::new("t", msg));
            async move { (i, publish.await) }
        })
        .collect();
    let mut done = 0;
    while let Some((i, outcome)) = inflight.next().await {
        let want = match i % 10 {
            3 => PublishOutcome::Failed("Malformed json message".into()),
            7 => PublishOutcome::Duplicate,
            _ => PublishOutcome::Ok,
        };
        assert_eq!(outcome, want, "publish {i}");
        done += 1;
    }
    assert_eq!(done, N);
    broker.await.unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn a_batch_is_one_write_and_resolves_in_order_between_single_publishes() {
    const N: usize = 500;
    // One single publish, a batch of N with a refused, a duplicate and an unencodable
    // request inside, another single publish: N + 1 lines reach the broker.
    let (url, broker) = fake_broker(|peer| answer_sends(peer, N + 1)).await;
    let conn = open(&url, &options()).await;
    let first = conn.publish(PublishRequest::new("t", "ok-first"));
    let requests: Vec<_> = (0..N)
        .map(|i| match i {
            10 => PublishRequest::new("t", format!("fail-{i}")),
            20 => PublishRequest::new("t", format!("dup-{i}")),
            30 => PublishRequest::new("t", bytes::Bytes::from_static(b"\xff")),
            _ => PublishRequest::new("t", format!("ok-{i}")),
        })
        .collect();
    let batch = conn.publish_batch(requests);
    let last = conn.publish(PublishRequest::new("t", "ok-last"));
    let (first, outcomes, last) = tokio::join!(first, batch, last);
    assert_eq!(first, PublishOutcome::Ok);
    assert_eq!(last, PublishOutcome::Ok);
    assert_eq!(outcomes.len(), N);
    for (i, outcome) in outcomes.iter().enumerate() {
        match i {
            10 => assert_eq!(
                *outcome,
                PublishOutcome::Failed("Malformed json message".into())
            ),
            20 => assert_eq!(*outcome, PublishOutcome::Duplicate),
            30 => assert!(
                matches!(outcome, PublishOutcome::Failed(r) if r.contains("UTF-8")),
                "{outcome}"
            ),
            _ => assert_eq!(*outcome, PublishOutcome::Ok, "request {i}"),
        }
    }
    let reads = broker.await.unwrap();
    assert!(reads <= 5, "a batch of {N} took {reads} reads");
    // An empty batch and a batch of nothing but unencodable requests resolve at once.
    assert!(conn.publish_batch(Vec::new()).await.is_empty());
    let bad = PublishRequest::new("t", bytes::Bytes::from_static(b"\xff"));
    let outcomes = conn.publish_batch(vec![bad.clone(), bad]).await;
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, PublishOutcome::Failed(_)))
    );
}

#[tokio::test]
async fn batches_the_socket_cannot_take_at_once_are_finished_by_the_writer_in_order() {
    // 24 batches of 32 messages of 16 KiB (12 MiB) while the broker reads nothing: the
    // callers' own writes fill the socket and leave the rest to the writer task.
    const BATCHES: usize = 24;
    const PER_BATCH: usize = 32;
    let (url, broker) = fake_broker(|mut peer| async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        for n in 0..BATCHES * PER_BATCH {
            let request = peer.line().await.expect("every publish arrives");
            let msg = request["msg"].as_str().unwrap();
            assert_eq!(&msg[..msg.find('.').unwrap()], format!("m{n}"), "line {n}");
            peer.send(r#"{"success":true}"#).await;
        }
    })
    .await;
    let conn = open(&url, &options()).await;
    let padding = "x".repeat(16 * 1024);
    let batches: futures::stream::FuturesOrdered<_> = (0..BATCHES)
        .map(|b| {
            let requests = (0..PER_BATCH)
                .map(|i| PublishRequest::new("t", format!("m{}.{padding}", b * PER_BATCH + i)))
                .collect();
            conn.publish_batch(requests)
        })
        .collect();
    let outcomes: Vec<Vec<PublishOutcome>> = batches.collect().await;
    for (b, batch) in outcomes.iter().enumerate() {
        assert_eq!(batch, &vec![PublishOutcome::Ok; PER_BATCH], "batch {b}");
    }
    broker.await.unwrap();
}

#[tokio::test]
async fn a_batch_cut_short_keeps_the_confirmations_that_arrived() {
    let (url, broker) = fake_broker(|mut peer| async move {
        // Answer two of the three, then close.
        for _ in 0..3 {
            peer.line().await.unwrap();
        }
        peer.send(r#"{"success":true}"#).await;
        peer.send(r#"{"success":true,"duplicate":true}"#).await;
    })
    .await;
    let conn = open(&url, &options()).await;
    let outcomes = conn
        .publish_batch(vec![PublishRequest::new("t", "a"); 3])
        .await;
    assert_eq!(
        outcomes,
        [
            PublishOutcome::Ok,
            PublishOutcome::Duplicate,
            PublishOutcome::Unknown
        ]
    );
    broker.await.unwrap();
    // Once the connection is known dead, a batch is not sent and says why.
    until_closed(&conn).await;
    let outcomes = conn
        .publish_batch(vec![PublishRequest::new("t", "b"); 2])
        .await;
    assert_eq!(outcomes.len(), 2);
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, PublishOutcome::Failed(r) if r.starts_with("not sent: "))),
        "{outcomes:?}"
    );
}

#[tokio::test]
async fn an_unanswered_batch_is_unknown_after_the_publish_timeout() {
    let (url, broker) = fake_broker(|mut peer| async move {
        peer.line().await.unwrap();
        peer.line().await.unwrap();
        peer.send(r#"{"success":true}"#).await;
        // The second is never answered; hold the connection open past the timeout.
        tokio::time::sleep(Duration::from_millis(500)).await;
    })
    .await;
    let conn = open(&url, &options().publish_timeout(Duration::from_millis(200))).await;
    let started = std::time::Instant::now();
    let outcomes = conn
        .publish_batch(vec![PublishRequest::new("t", "a"); 2])
        .await;
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(outcomes, [PublishOutcome::Unknown, PublishOutcome::Unknown]);
    broker.await.unwrap();
}
