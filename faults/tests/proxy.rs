//! The fault proxy against a local echo server: each fault kind does to the bytes what it
//! says, on open connections and new ones, and healing restores the path. Time bounds are
//! wide (a loaded 2-core machine), and every wait is bounded.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use brokerbench_faults::{Direction, Proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const BOUND: Duration = Duration::from_secs(10);

/// An echo server on a free port.
async fn echo() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// Sends `n` bytes and waits for their echo; returns how long it took.
async fn round_trip(s: &mut TcpStream, n: usize) -> std::io::Result<Duration> {
    let began = Instant::now();
    s.write_all(&vec![7u8; n]).await?;
    let mut back = vec![0u8; n];
    tokio::time::timeout(BOUND, s.read_exact(&mut back))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    Ok(began.elapsed())
}

async fn connected(proxy: &Proxy) -> TcpStream {
    TcpStream::connect(proxy.addr()).await.unwrap()
}

#[tokio::test]
async fn latency_holds_back_each_direction_by_its_delay() {
    let proxy = Proxy::start(echo().await.to_string()).await.unwrap();
    let mut s = connected(&proxy).await;
    let base = round_trip(&mut s, 10).await.unwrap();
    proxy.set_latency(
        Direction::FromBroker,
        Duration::from_millis(100),
        Duration::ZERO,
    );
    let slow = round_trip(&mut s, 10).await.unwrap();
    assert!(slow >= Duration::from_millis(100), "{slow:?}");
    proxy.set_latency(Direction::Both, Duration::from_millis(100), Duration::ZERO);
    let slower = round_trip(&mut s, 10).await.unwrap();
    assert!(slower >= Duration::from_millis(200), "{slower:?}");
    // A new connection is slowed too.
    let mut fresh = connected(&proxy).await;
    assert!(round_trip(&mut fresh, 10).await.unwrap() >= Duration::from_millis(200));
    proxy.heal();
    let healed = round_trip(&mut s, 10).await.unwrap();
    assert!(healed < Duration::from_millis(100) + base * 4, "{healed:?}");
}

#[tokio::test]
async fn jitter_keeps_the_order_of_the_bytes() {
    let proxy = Proxy::start(echo().await.to_string()).await.unwrap();
    let mut s = connected(&proxy).await;
    proxy.set_latency(
        Direction::Both,
        Duration::from_millis(5),
        Duration::from_millis(5),
    );
    let sent: Vec<u8> = (0..200u8).collect();
    for chunk in sent.chunks(7) {
        s.write_all(chunk).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let mut back = vec![0u8; sent.len()];
    tokio::time::timeout(BOUND, s.read_exact(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back, sent);
}

#[tokio::test]
async fn bandwidth_limits_the_bytes_per_second() {
    let proxy = Proxy::start(echo().await.to_string()).await.unwrap();
    let mut s = connected(&proxy).await;
    proxy.set_bandwidth(Direction::ToBroker, Some(20_000));
    // 10 kB at 20 kB/s: at least ~0.5 s.
    let took = round_trip(&mut s, 10_000).await.unwrap();
    assert!(took >= Duration::from_millis(400), "{took:?}");
    proxy.set_bandwidth(Direction::Both, None);
    let took = round_trip(&mut s, 10_000).await.unwrap();
    assert!(took < Duration::from_millis(400), "{took:?}");
}

#[tokio::test]
async fn a_partition_is_a_black_hole_then_the_same_connection_flows_again() {
    let proxy = Proxy::start(echo().await.to_string()).await.unwrap();
    let mut s = connected(&proxy).await;
    round_trip(&mut s, 10).await.unwrap();
    proxy.partition();
    s.write_all(b"held").await.unwrap();
    let mut buf = [0u8; 4];
    let nothing = tokio::time::timeout(Duration::from_millis(500), s.read_exact(&mut buf)).await;
    assert!(nothing.is_err(), "bytes crossed a partition");
    // A new connection hangs: accepted, but nothing comes back.
    let mut fresh = connected(&proxy).await;
    fresh.write_all(b"new!").await.unwrap();
    let mut fresh_buf = [0u8; 4];
    let nothing =
        tokio::time::timeout(Duration::from_millis(300), fresh.read_exact(&mut fresh_buf)).await;
    assert!(nothing.is_err(), "a new connection crossed a partition");
    proxy.heal();
    tokio::time::timeout(BOUND, s.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"held");
    tokio::time::timeout(BOUND, fresh.read_exact(&mut fresh_buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&fresh_buf, b"new!");
    assert_eq!(proxy.open_connections(), 2);
}

#[tokio::test]
async fn down_cuts_and_refuses_until_healed() {
    let proxy = Proxy::start(echo().await.to_string()).await.unwrap();
    let mut s = connected(&proxy).await;
    round_trip(&mut s, 10).await.unwrap();
    assert_eq!(proxy.cut_for(Duration::from_secs(30)), 1);
    assert!(
        round_trip(&mut s, 10).await.is_err(),
        "the old connection survived"
    );
    let mut refused = connected(&proxy).await;
    assert!(
        round_trip(&mut refused, 10).await.is_err(),
        "a new connection got through"
    );
    proxy.heal();
    let mut again = connected(&proxy).await;
    round_trip(&mut again, 10).await.unwrap();
}

#[tokio::test]
async fn a_reset_cuts_open_connections_and_accepts_new_ones() {
    let proxy = Proxy::start(echo().await.to_string()).await.unwrap();
    let mut s = connected(&proxy).await;
    round_trip(&mut s, 10).await.unwrap();
    assert_eq!(proxy.cut(), 1);
    assert!(round_trip(&mut s, 10).await.is_err());
    let mut again = connected(&proxy).await;
    round_trip(&mut again, 10).await.unwrap();
}
