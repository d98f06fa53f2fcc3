//! The throughput and stalled modes: closed loop, each publisher keeps `--inflight`
//! sends outstanding; subscribers count pushed lines.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use memchr::memmem;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::Notify;
use tokio::time::timeout;

use crate::figures::{group, per_second};
use crate::host::{fmt_rss, rss_kib};
use crate::target::Target;
use crate::wire::{
    broker_stats, connect, padded_send_line, split_lines, strip_cr, subscribe, topic_prefix,
};
use crate::{
    ACK_BUF_BYTES, Args, DRAIN_TIMEOUT, Delivery, IO_TIMEOUT, POLL_INTERVAL, READ_BUF_BYTES,
    Result, SLOW_CONSUMER, SUCCESS, TAIL_BYTES,
};

/// What a push-counting subscriber saw.
#[derive(Default)]
struct SubscriberState {
    /// Lines received (all pushes: the subscribe reply was read during setup).
    lines: AtomicU64,
    /// The broker closed the connection.
    closed: AtomicBool,
    /// The last bytes before the close contained "Slow consumer".
    slow_consumer: AtomicBool,
}

/// Counts pushed lines until `stop` is set or the broker closes the connection.
async fn count_pushes(
    mut reader: OwnedReadHalf,
    state: Arc<SubscriberState>,
    stop: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; READ_BUF_BYTES];
    let mut tail: Vec<u8> = Vec::with_capacity(2 * TAIL_BYTES);
    while !stop.load(Ordering::Acquire) {
        match timeout(POLL_INTERVAL, reader.read(&mut buf)).await {
            Err(_) => {}
            Ok(Ok(0)) | Ok(Err(_)) => {
                let slow = memmem::find(&tail, SLOW_CONSUMER).is_some();
                state.slow_consumer.store(slow, Ordering::Release);
                state.closed.store(true, Ordering::Release);
                return;
            }
            Ok(Ok(n)) => {
                let chunk = &buf[..n];
                let lines = memchr::memchr_iter(b'\n', chunk).count() as u64;
                state.lines.fetch_add(lines, Ordering::Relaxed);
                tail.extend_from_slice(&chunk[n.saturating_sub(TAIL_BYTES)..]);
                if tail.len() > TAIL_BYTES {
                    tail.drain(..tail.len() - TAIL_BYTES);
                }
            }
        }
    }
}

/// Shared between a publisher's writer and its reply reader.
#[derive(Default)]
pub(crate) struct PublisherState {
    /// Replies received (each releases one in-flight slot).
    pub(crate) replies: AtomicU64,
    /// Replies other than `{"success":true}`.
    pub(crate) failed: AtomicU64,
    /// Signalled by the reader after each batch of replies.
    pub(crate) progress: Notify,
    /// Set when the writer is done, so the reader stops waiting.
    pub(crate) done: AtomicBool,
}

/// Reads a publisher's replies, counting successes and failures.
async fn read_replies(mut reader: OwnedReadHalf, state: Arc<PublisherState>) -> Result<()> {
    let mut buf = vec![0u8; ACK_BUF_BYTES];
    let mut filled = 0;
    loop {
        if filled == buf.len() {
            return Err("a reply line longer than 64 KiB".into());
        }
        let n = match timeout(POLL_INTERVAL, reader.read(&mut buf[filled..])).await {
            Err(_) if state.done.load(Ordering::Acquire) => return Ok(()),
            Err(_) => continue,
            Ok(Ok(0)) => return Ok(()),
            Ok(Ok(n)) => n,
            Ok(Err(e)) => return Err(e.into()),
        };
        filled += n;
        let (mut replies, mut failed) = (0u64, 0u64);
        filled = split_lines(&mut buf, filled, n, |line| {
            replies += 1;
            if strip_cr(line) != SUCCESS {
                failed += 1;
            }
        });
        if failed > 0 {
            state.failed.fetch_add(failed, Ordering::Relaxed);
        }
        state.replies.fetch_add(replies, Ordering::Release);
        state.progress.notify_one();
    }
}

/// Keeps `inflight` copies of `line` outstanding until `stop`, then waits for the last
/// replies. Returns the number of sends written.
async fn publish(
    stream: TcpStream,
    line: Vec<u8>,
    inflight: u64,
    state: Arc<PublisherState>,
    stop: Arc<AtomicBool>,
) -> Result<u64> {
    let (reader, mut writer) = stream.into_split();
    let reply_reader = tokio::spawn(read_replies(reader, Arc::clone(&state)));
    let outcome = publish_loop(&mut writer, &line, inflight, &state, &stop).await;
    state.done.store(true, Ordering::Release);
    let _ = timeout(IO_TIMEOUT, writer.shutdown()).await;
    match timeout(IO_TIMEOUT, reply_reader).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => return Err(format!("publisher reply reader: {e}").into()),
        Ok(Err(e)) => return Err(format!("publisher reply reader: {e}").into()),
        Err(_) => return Err("publisher reply reader did not stop".into()),
    }
    outcome
}

async fn publish_loop(
    writer: &mut OwnedWriteHalf,
    line: &[u8],
    inflight: u64,
    state: &PublisherState,
    stop: &AtomicBool,
) -> Result<u64> {
    let mut sent = 0u64;
    let mut buf = Vec::with_capacity(line.len() * inflight as usize);
    while !stop.load(Ordering::Relaxed) {
        let outstanding = sent - state.replies.load(Ordering::Acquire);
        let free = inflight.saturating_sub(outstanding);
        if free == 0 {
            if timeout(IO_TIMEOUT, state.progress.notified())
                .await
                .is_err()
            {
                return Err("no reply from the broker for 10 s".into());
            }
            continue;
        }
        buf.clear();
        for _ in 0..free {
            buf.extend_from_slice(line);
        }
        timeout(IO_TIMEOUT, writer.write_all(&buf))
            .await
            .map_err(|_| "write timed out")??;
        sent += free;
    }
    let deadline = tokio::time::Instant::now() + IO_TIMEOUT;
    while state.replies.load(Ordering::Acquire) < sent {
        if tokio::time::timeout_at(deadline, state.progress.notified())
            .await
            .is_err()
        {
            return Err("the last sends were not answered within 10 s".into());
        }
    }
    Ok(sent)
}

/// The stalled subscriber: it never reads until the run is over.
struct Stalled {
    stream: TcpStream,
}

/// What the stalled subscriber found when it finally read its socket.
struct StalledOutcome {
    bytes: u64,
    closed: bool,
    slow_consumer: bool,
}

impl Stalled {
    async fn drain(mut self) -> StalledOutcome {
        let mut buf = vec![0u8; READ_BUF_BYTES];
        let mut window: Vec<u8> = Vec::with_capacity(2 * TAIL_BYTES);
        let mut outcome = StalledOutcome {
            bytes: 0,
            closed: false,
            slow_consumer: false,
        };
        loop {
            match timeout(Duration::from_secs(2), self.stream.read(&mut buf)).await {
                Err(_) => return outcome,
                Ok(Ok(0)) | Ok(Err(_)) => {
                    outcome.closed = true;
                    return outcome;
                }
                Ok(Ok(n)) => {
                    outcome.bytes += n as u64;
                    let chunk = &buf[..n];
                    window.extend_from_slice(&chunk[..n.min(TAIL_BYTES)]);
                    if memmem::find(&window, SLOW_CONSUMER).is_some()
                        || memmem::find(chunk, SLOW_CONSUMER).is_some()
                    {
                        outcome.slow_consumer = true;
                    }
                    window.clear();
                    window.extend_from_slice(&chunk[n.saturating_sub(TAIL_BYTES)..]);
                }
            }
        }
    }
}

pub(crate) async fn throughput(args: &Args, target: &Target, stalled_mode: bool) -> Result<bool> {
    if args.publishers == 0 || args.topics == 0 || args.inflight == 0 {
        return Err("--publishers, --topics and --inflight must be at least 1".into());
    }
    let prefix = topic_prefix();
    let topics: Vec<String> = (0..args.topics).map(|t| format!("{prefix}{t}")).collect();

    // Subscribers first, so every message sent has its subscribers.
    let stop_subscribers = Arc::new(AtomicBool::new(false));
    let mut subscribers = Vec::with_capacity(args.subscribers);
    let mut subscribers_on_topic = vec![0u64; args.topics];
    for j in 0..args.subscribers {
        let mut stream = connect(target.addr).await?;
        subscribe(&mut stream, &topics[j % args.topics]).await?;
        subscribers_on_topic[j % args.topics] += 1;
        let (reader, writer) = stream.into_split();
        let state = Arc::new(SubscriberState::default());
        let task = tokio::spawn(count_pushes(
            reader,
            Arc::clone(&state),
            Arc::clone(&stop_subscribers),
        ));
        subscribers.push((state, task, writer));
    }
    let stalled = if stalled_mode {
        let mut stream = connect(target.addr).await?;
        subscribe(&mut stream, &topics[0]).await?;
        Some(Stalled { stream })
    } else {
        None
    };
    let mut control = if stalled_mode {
        Some(connect(target.addr).await?)
    } else {
        None
    };
    let stats_before = match control.as_mut() {
        Some(control) => broker_stats(control).await.ok(),
        None => None,
    };
    let rss_start = target.rss_pid.and_then(rss_kib);

    let stop_publishers = Arc::new(AtomicBool::new(false));
    let mut publishers = Vec::with_capacity(args.publishers);
    for i in 0..args.publishers {
        let stream = connect(target.addr).await?;
        let state = Arc::new(PublisherState::default());
        let line = padded_send_line(&topics[i % args.topics], args.size, args.delivery);
        let task = tokio::spawn(publish(
            stream,
            line,
            args.inflight,
            Arc::clone(&state),
            Arc::clone(&stop_publishers),
        ));
        publishers.push((i % args.topics, state, task));
    }
    let delivered = |subscribers: &[(Arc<SubscriberState>, _, _)]| -> u64 {
        subscribers
            .iter()
            .map(|(s, _, _)| s.lines.load(Ordering::Relaxed))
            .sum()
    };
    let replies = |publishers: &[(usize, Arc<PublisherState>, _)]| -> u64 {
        publishers
            .iter()
            .map(|(_, p, _)| p.replies.load(Ordering::Relaxed))
            .sum()
    };

    tokio::time::sleep(args.warmup).await;
    let t0 = Instant::now();
    let (delivered0, replies0) = (delivered(&subscribers), replies(&publishers));
    let mut rates = Vec::new();
    let mut max_rss: Option<u64> = None;
    let (mut prev_t, mut prev_d) = (t0, delivered0);
    let end = t0 + args.duration;
    if stalled_mode {
        println!("per second (broker RSS, delivery rate of the other subscribers, broker stats):");
    }
    loop {
        let next = (prev_t + Duration::from_secs(1)).min(end);
        tokio::time::sleep_until(next.into()).await;
        let (now, d) = (Instant::now(), delivered(&subscribers));
        let rate = per_second(d - prev_d, now - prev_t);
        if now - prev_t >= Duration::from_millis(500) {
            rates.push(rate);
        }
        if stalled_mode {
            let rss = target.rss_pid.and_then(rss_kib);
            max_rss = max_rss.max(rss);
            let stats = match control.as_mut() {
                Some(control) => match broker_stats(control).await {
                    Ok(s) => format!(
                        "connections {}  slow_consumer_disconnects {}",
                        s.connections, s.slow_consumer_disconnects
                    ),
                    Err(e) => format!("stats unavailable: {e}"),
                },
                None => String::new(),
            };
            println!(
                "  t={:>5.1}s  RSS {:>12}  others {:>10} deliveries/s  {stats}",
                (now - t0).as_secs_f64(),
                fmt_rss(rss),
                group(rate)
            );
        }
        (prev_t, prev_d) = (now, d);
        if now >= end {
            break;
        }
    }
    let t1 = Instant::now();
    let (delivered1, replies1) = (delivered(&subscribers), replies(&publishers));
    let elapsed = t1 - t0;

    // Stop publishing, wait for the last replies and deliveries.
    stop_publishers.store(true, Ordering::Release);
    let mut sent_total = 0u64;
    let mut errors = Vec::new();
    let mut expected = 0u64;
    let mut failed_sends = 0u64;
    for (topic, state, task) in publishers {
        match timeout(IO_TIMEOUT * 2, task).await {
            Ok(Ok(Ok(sent))) => sent_total += sent,
            Ok(Ok(Err(e))) => errors.push(format!("publisher: {e}")),
            Ok(Err(e)) => errors.push(format!("publisher task: {e}")),
            Err(_) => errors.push("publisher did not stop".to_string()),
        }
        let ok = state.replies.load(Ordering::Acquire) - state.failed.load(Ordering::Acquire);
        failed_sends += state.failed.load(Ordering::Acquire);
        expected += match args.delivery {
            Delivery::All => ok * subscribers_on_topic[topic],
            Delivery::One if subscribers_on_topic[topic] > 0 => ok,
            Delivery::One => 0,
        };
    }
    let drain_deadline = Instant::now() + DRAIN_TIMEOUT;
    while delivered(&subscribers) < expected && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop_subscribers.store(true, Ordering::Release);
    let delivered_total = delivered(&subscribers);
    let mut closed = 0;
    let mut slow = 0;
    for (state, task, writer) in subscribers {
        let _ = timeout(IO_TIMEOUT, task).await;
        drop(writer);
        if state.closed.load(Ordering::Acquire) {
            closed += 1;
        }
        if state.slow_consumer.load(Ordering::Acquire) {
            slow += 1;
        }
    }
    let stats_after = match control.as_mut() {
        Some(control) => broker_stats(control).await.ok(),
        None => None,
    };
    let stalled_outcome = match stalled {
        Some(stalled) => Some(stalled.drain().await),
        None => None,
    };

    // Report.
    let measured_deliveries = delivered1 - delivered0;
    let measured_replies = replies1 - replies0;
    let line_len = padded_send_line(&topics[0], args.size, args.delivery).len();
    println!(
        "== load {} ==",
        if stalled_mode {
            "stalled"
        } else {
            "throughput"
        }
    );
    println!("broker            {}", target.label);
    println!(
        "workload          {} publisher(s), {} subscriber(s){}, {} topic(s), delivery {}, msg {} B (send line {} B), {} in flight per publisher",
        args.publishers,
        args.subscribers,
        if stalled_mode {
            " + 1 stalled on topic 0"
        } else {
            ""
        },
        args.topics,
        args.delivery.as_str(),
        args.size,
        line_len,
        args.inflight
    );
    println!(
        "warm-up/measured  {:?} / {:.2} s",
        args.warmup,
        elapsed.as_secs_f64()
    );
    println!(
        "published         {} msgs  {} msgs/s",
        group(measured_replies),
        group(per_second(measured_replies, elapsed))
    );
    println!(
        "delivered         {} msgs  {} deliveries/s  ({:.1} MB/s of push lines)",
        group(measured_deliveries),
        group(per_second(measured_deliveries, elapsed)),
        per_second(measured_deliveries, elapsed) as f64 * (line_len + 12) as f64 / 1e6
    );
    if let (Some(min), Some(max)) = (rates.iter().min(), rates.iter().max()) {
        println!(
            "per second        min {} max {} deliveries/s",
            group(*min),
            group(*max)
        );
    }
    let undelivered = expected.saturating_sub(delivered_total);
    println!(
        "end of run        {} sends answered, {} failed replies, {} deliveries expected, {} received ({} missing after {:?} drain)",
        group(sent_total),
        group(failed_sends),
        group(expected),
        group(delivered_total),
        group(undelivered),
        DRAIN_TIMEOUT
    );
    println!(
        "subscribers       {closed} disconnected by the broker ({slow} with \"Slow consumer\")"
    );
    let mut passed = errors.is_empty() && failed_sends == 0 && closed == 0;
    if !stalled_mode {
        passed &= undelivered == 0;
    }
    if let Some(outcome) = stalled_outcome {
        println!(
            "stalled one       {}; \"Slow consumer\" {}; {} bytes readable afterwards",
            if outcome.closed {
                "disconnected"
            } else {
                "still connected"
            },
            if outcome.slow_consumer {
                "received"
            } else {
                "not received"
            },
            group(outcome.bytes)
        );
        if let (Some(before), Some(after)) = (stats_before, stats_after) {
            println!(
                "broker stats      slow_consumer_disconnects {} -> {}",
                before.slow_consumer_disconnects, after.slow_consumer_disconnects
            );
        }
        println!(
            "broker RSS        {} before publishing, max {} while measuring",
            fmt_rss(rss_start),
            fmt_rss(max_rss)
        );
        passed &= outcome.closed;
    }
    for e in &errors {
        println!("error             {e}");
    }
    Ok(passed)
}
