//! The echo-integrity mode: one connection publishes to a topic it subscribes to; every
//! push must come back once, in order and byte-exact.

use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::OwnedReadHalf;
use tokio::time::timeout;

use crate::figures::{group, per_second};
use crate::target::Target;
use crate::throughput::PublisherState;
use crate::wire::{connect, split_lines, subscribe, topic_prefix};
use crate::{Args, IO_TIMEOUT, READ_BUF_BYTES, Result, SUCCESS};

/// Fragments of `msg` content, each already in the form serde_json writes it, so the
/// pushed copy must match byte for byte.
const FRAGMENTS: [&str; 12] = [
    "a", "Z", "0", " ", "~", "\\\"", "\\\\", "\\n", "\\t", "\\u001f", "é", "€",
];

/// `msg` of message `seq`: its 10-digit sequence number, `-`, then fragments chosen from
/// `seq`, `size` bytes in all (at least 11).
fn echo_msg(seq: u64, size: usize, out: &mut Vec<u8>) {
    let start = out.len();
    let _ = write!(out, "{seq:010}-");
    let mut state = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while out.len() - start < size {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let fragment = FRAGMENTS[(state % FRAGMENTS.len() as u64) as usize].as_bytes();
        if out.len() - start + fragment.len() <= size {
            out.extend_from_slice(fragment);
        } else {
            out.push(b'a');
        }
    }
}

fn echo_send_line(topic: &str, seq: u64, size: usize, out: &mut Vec<u8>) {
    let _ = write!(
        out,
        "{{\"command\":\"send\",\"topic\":\"{topic}\",\"msg\":\""
    );
    echo_msg(seq, size, out);
    out.extend_from_slice(b"\",\"delivery\":\"all\"}\n");
}

/// The push the broker must produce for message `seq` (fresh topic: index == seq),
/// without `\r\n`.
fn echo_push_line(topic: &str, seq: u64, size: usize, out: &mut Vec<u8>) {
    let _ = write!(
        out,
        "{{\"command\":\"send\",\"topic\":\"{topic}\",\"msg\":\""
    );
    echo_msg(seq, size, out);
    let _ = write!(out, "\",\"delivery\":\"all\",\"index\":{seq}}}");
}

#[derive(Debug, Default)]
struct EchoReport {
    pushes: u64,
    distinct: u64,
    duplicated: u64,
    out_of_order: u64,
    mangled: u64,
    successes: u64,
    failed_replies: u64,
    reply_before_push: u64,
    missing_crlf: u64,
}

/// Checks every line coming back on the echo connection.
async fn echo_reader(
    mut reader: OwnedReadHalf,
    topic: String,
    messages: u64,
    size: usize,
    state: Arc<PublisherState>,
) -> Result<EchoReport> {
    let mut report = EchoReport::default();
    let mut seen = vec![0u64; messages.div_ceil(64) as usize];
    let mut next = 0u64;
    let push_prefix =
        format!("{{\"command\":\"send\",\"topic\":\"{topic}\",\"msg\":\"").into_bytes();
    let mut expected = Vec::with_capacity(push_prefix.len() + size + 64);
    let mut buf = vec![0u8; READ_BUF_BYTES];
    let mut filled = 0;
    while report.successes + report.failed_replies < messages || report.distinct < messages {
        if filled == buf.len() {
            return Err("a line longer than the read buffer".into());
        }
        let n = match timeout(IO_TIMEOUT, reader.read(&mut buf[filled..])).await {
            Err(_) => break, // nothing for 10 s: report what is missing
            Ok(Ok(0)) => break,
            Ok(Ok(n)) => n,
            Ok(Err(e)) => return Err(e.into()),
        };
        filled += n;
        let mut replies = 0;
        filled = split_lines(&mut buf, filled, n, |line| {
            let Some(line) = line.strip_suffix(b"\r") else {
                report.missing_crlf += 1;
                return;
            };
            if line == SUCCESS {
                report.successes += 1;
                replies += 1;
                if report.successes > report.pushes {
                    report.reply_before_push += 1;
                }
                return;
            }
            let seq = line
                .strip_prefix(push_prefix.as_slice())
                .and_then(|rest| rest.get(..10))
                .and_then(|digits| std::str::from_utf8(digits).ok()?.parse::<u64>().ok())
                .filter(|&seq| seq < messages);
            let Some(seq) = seq else {
                if line.starts_with(b"{\"success\":") {
                    report.failed_replies += 1;
                    replies += 1;
                } else {
                    report.mangled += 1;
                }
                return;
            };
            report.pushes += 1;
            expected.clear();
            echo_push_line(&topic, seq, size, &mut expected);
            if line != expected.as_slice() {
                report.mangled += 1;
            }
            let (word, bit) = ((seq / 64) as usize, 1u64 << (seq % 64));
            if seen[word] & bit != 0 {
                report.duplicated += 1;
                return;
            }
            seen[word] |= bit;
            report.distinct += 1;
            if seq != next {
                report.out_of_order += 1;
            }
            next = seq + 1;
        });
        if replies > 0 {
            state.replies.fetch_add(replies, Ordering::Release);
            state.progress.notify_one();
        }
    }
    state.done.store(true, Ordering::Release);
    Ok(report)
}

pub(crate) async fn echo_integrity(args: &Args, target: &Target) -> Result<bool> {
    if args.inflight == 0 || args.messages == 0 {
        return Err("--inflight and --messages must be at least 1".into());
    }
    let size = args.size.max(11);
    let topic = format!("{}echo", topic_prefix());
    let mut stream = connect(target.addr).await?;
    subscribe(&mut stream, &topic).await?;
    let (reader, mut writer) = stream.into_split();
    let state = Arc::new(PublisherState::default());
    let started = Instant::now();
    let checker = tokio::spawn(echo_reader(
        reader,
        topic.clone(),
        args.messages,
        size,
        Arc::clone(&state),
    ));
    let mut sent = 0u64;
    let mut buf = Vec::new();
    let mut write_error = None;
    while sent < args.messages && !state.done.load(Ordering::Acquire) {
        let outstanding = sent - state.replies.load(Ordering::Acquire);
        let free = args
            .inflight
            .saturating_sub(outstanding)
            .min(args.messages - sent);
        if free == 0 {
            if timeout(IO_TIMEOUT, state.progress.notified())
                .await
                .is_err()
            {
                write_error = Some("no reply for 10 s".to_string());
                break;
            }
            continue;
        }
        buf.clear();
        for seq in sent..sent + free {
            echo_send_line(&topic, seq, size, &mut buf);
        }
        match timeout(IO_TIMEOUT, writer.write_all(&buf)).await {
            Ok(Ok(())) => sent += free,
            Ok(Err(e)) => {
                write_error = Some(e.to_string());
                break;
            }
            Err(_) => {
                write_error = Some("write timed out".to_string());
                break;
            }
        }
    }
    let report = timeout(IO_TIMEOUT * 2, checker)
        .await
        .map_err(|_| "the echo checker did not finish")???;
    let elapsed = started.elapsed();
    let _ = timeout(IO_TIMEOUT, writer.shutdown()).await;
    let lost = args.messages - report.distinct;
    let unanswered = sent - (report.successes + report.failed_replies).min(sent);

    println!("== load echo-integrity ==");
    println!("broker            {}", target.label);
    println!(
        "workload          1 connection subscribed to its own topic, {} sends pipelined ({} in flight), msg {} B with escapes and non-ASCII",
        group(args.messages),
        args.inflight,
        size
    );
    println!(
        "elapsed           {:.2} s  ({} round trips/s)",
        elapsed.as_secs_f64(),
        group(per_second(report.successes, elapsed))
    );
    println!(
        "sends             {} written, {} answered success, {} failed replies, {} unanswered",
        group(sent),
        group(report.successes),
        group(report.failed_replies),
        group(unanswered)
    );
    println!(
        "pushes            {} received, {} distinct",
        group(report.pushes),
        group(report.distinct)
    );
    println!(
        "lost {}  mangled {}  duplicated {}  out of order {}  reply before its push {}  lines without \\r\\n {}",
        lost,
        report.mangled,
        report.duplicated,
        report.out_of_order,
        report.reply_before_push,
        report.missing_crlf
    );
    if let Some(e) = &write_error {
        println!("error             {e}");
    }
    Ok(write_error.is_none()
        && lost == 0
        && unanswered == 0
        && report.mangled == 0
        && report.duplicated == 0
        && report.out_of_order == 0
        && report.failed_replies == 0
        && report.reply_before_push == 0
        && report.missing_crlf == 0)
}
