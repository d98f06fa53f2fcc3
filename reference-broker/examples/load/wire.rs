//! The reference broker's protocol as the driver writes and reads it: request lines,
//! one-reply setup requests, and splitting a read buffer into lines.

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::{Delivery, IO_TIMEOUT, MAX_REPLY_BYTES, Result, SUCCESS};

/// A topic prefix unique to this run, so no earlier run's cache is replayed.
pub(crate) fn topic_prefix() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("load-{}-{nanos}-", std::process::id())
}

pub(crate) fn subscribe_line(topic: &str) -> Vec<u8> {
    format!("{{\"command\":\"subscribe\",\"topic\":\"{topic}\"}}\n").into_bytes()
}

/// A send line with a `msg` of `size` bytes of `x`.
pub(crate) fn padded_send_line(topic: &str, size: usize, delivery: Delivery) -> Vec<u8> {
    format!(
        "{{\"command\":\"send\",\"topic\":\"{topic}\",\"msg\":\"{}\",\"delivery\":\"{}\"}}\n",
        "x".repeat(size),
        delivery.as_str()
    )
    .into_bytes()
}

pub(crate) async fn connect(addr: SocketAddr) -> Result<TcpStream> {
    let stream = timeout(IO_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| format!("connecting to {addr} timed out"))?
        .map_err(|e| format!("connecting to {addr}: {e}"))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Writes one request and reads exactly one reply line (byte by byte, so nothing that
/// follows the reply is consumed). Returns the reply without `\r\n`.
pub(crate) async fn request(stream: &mut TcpStream, line: &[u8]) -> Result<Vec<u8>> {
    timeout(IO_TIMEOUT, stream.write_all(line))
        .await
        .map_err(|_| "write timed out")??;
    let mut reply = Vec::with_capacity(32);
    loop {
        let mut byte = [0u8; 1];
        let n = timeout(IO_TIMEOUT, stream.read(&mut byte))
            .await
            .map_err(|_| "no reply from the broker within 10 s")??;
        if n == 0 {
            return Err("the broker closed the connection".into());
        }
        if byte[0] == b'\n' {
            break;
        }
        reply.push(byte[0]);
        if reply.len() > MAX_REPLY_BYTES {
            return Err("reply line too long".into());
        }
    }
    if reply.last() == Some(&b'\r') {
        reply.pop();
    }
    Ok(reply)
}

pub(crate) async fn subscribe(stream: &mut TcpStream, topic: &str) -> Result<()> {
    let reply = request(stream, &subscribe_line(topic)).await?;
    if reply != SUCCESS {
        return Err(format!("subscribe {topic}: {}", String::from_utf8_lossy(&reply)).into());
    }
    Ok(())
}

/// Broker counters from `{"command":"stats"}` (an extension of the reference broker).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct BrokerStats {
    pub(crate) connections: u64,
    pub(crate) slow_consumer_disconnects: u64,
}

pub(crate) async fn broker_stats(control: &mut TcpStream) -> Result<BrokerStats> {
    let reply = request(control, b"{\"command\":\"stats\"}\n").await?;
    let value: serde_json::Value = serde_json::from_slice(&reply)?;
    let field = |name: &str| value["stats"][name].as_u64();
    match (field("connections"), field("slow_consumer_disconnects")) {
        (Some(connections), Some(slow_consumer_disconnects)) => Ok(BrokerStats {
            connections,
            slow_consumer_disconnects,
        }),
        _ => Err(format!(
            "unexpected stats reply: {}",
            String::from_utf8_lossy(&reply)
        )
        .into()),
    }
}

/// Splits the newly read bytes `buf[filled - n..filled]` into complete lines (without
/// `\n`), calls `each` for every line, keeps the incomplete rest at the front of `buf`
/// and returns the new fill level.
pub(crate) fn split_lines(
    buf: &mut [u8],
    filled: usize,
    n: usize,
    mut each: impl FnMut(&[u8]),
) -> usize {
    let new_from = filled - n;
    let mut start = 0;
    for nl in memchr::memchr_iter(b'\n', &buf[new_from..filled]) {
        let end = new_from + nl;
        each(&buf[start..end]);
        start = end + 1;
    }
    buf.copy_within(start..filled, 0);
    filled - start
}

pub(crate) fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}
