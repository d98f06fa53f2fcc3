//! One client connection: a reader that parses and applies requests, and a writer that
//! drains the connection's outbound queue in batches.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rustc_hash::FxHashSet;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

use crate::codec::{Frame, LineDecoder};
use crate::outbound::{Batch, Ending, Outbound};
use crate::reply;
use crate::request::Request;
use crate::state::{AckResult, Broker, Conn};

/// First read buffer of a connection: small, because most connections of a large fleet
/// are idle subscribers.
const INITIAL_READ_BYTES: usize = 4 * 1024;
/// Largest single read; a busy publisher's buffer grows to this by doubling.
const MAX_READ_BYTES: usize = 256 * 1024;
/// The writer copies queued messages into one buffer of about this size per syscall.
const WRITE_CHUNK_BYTES: usize = 128 * 1024;
/// How long a slow consumer gets to accept the notice before it is closed.
const SLOW_CONSUMER_NOTICE_TIMEOUT: Duration = Duration::from_secs(1);

/// Serves one accepted connection until it closes or the server shuts down.
pub(crate) async fn serve(
    stream: TcpStream,
    broker: Arc<Broker>,
    shutdown: CancellationToken,
    _permit: OwnedSemaphorePermit,
) {
    // Latency matters more than packet count; the writer batches on its own.
    let _ = stream.set_nodelay(true);
    let (reader, writer) = stream.into_split();
    let conn = broker.connect();
    let stop_reading = CancellationToken::new();
    let write_task = tokio::spawn(write_loop(writer, conn.out.clone(), stop_reading.clone()));
    let topics = read_loop(reader, &broker, &conn, &shutdown, &stop_reading).await;
    broker.disconnect(&conn, topics);
    let _ = write_task.await;
}

async fn read_loop(
    mut reader: OwnedReadHalf,
    broker: &Broker,
    conn: &Conn,
    shutdown: &CancellationToken,
    stop_reading: &CancellationToken,
) -> FxHashSet<Arc<str>> {
    let mut decoder = LineDecoder::new(broker.config().max_line_bytes);
    let mut buf = BytesMut::new();
    let mut read_size = INITIAL_READ_BYTES;
    let mut topics = FxHashSet::default();
    loop {
        if buf.capacity() - buf.len() < read_size / 2 {
            buf.reserve(read_size);
        }
        let spare = buf.capacity() - buf.len();
        let read = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            _ = stop_reading.cancelled() => break,
            read = reader.read_buf(&mut buf) => read,
        };
        match read {
            Ok(0) | Err(_) => break,
            Ok(n) if n == spare => read_size = (read_size * 2).min(MAX_READ_BYTES),
            Ok(_) => {}
        }
        while let Some(frame) = decoder.decode(&mut buf) {
            match frame {
                Frame::TooLong => {
                    conn.out.offer_static(reply::LINE_TOO_LONG);
                }
                Frame::Line(line) if line.is_empty() => {}
                Frame::Line(line) if &line[..] == b"quit" => return topics,
                Frame::Line(line) => handle(&line, broker, conn, &mut topics),
            }
        }
        if conn.out.is_closing() {
            break;
        }
    }
    topics
}

fn handle(line: &[u8], broker: &Broker, conn: &Conn, topics: &mut FxHashSet<Arc<str>>) {
    let request = match Request::parse(line) {
        Ok(request) => request,
        Err(err) => {
            conn.out.offer_static(err.reply());
            return;
        }
    };
    match request {
        Request::Send(send) => broker.send(conn, &send),
        Request::Subscribe(subscribe) => {
            broker.subscribe(conn, &subscribe);
            if !topics.contains(&*subscribe.topic) {
                topics.insert(Arc::from(&*subscribe.topic));
            }
        }
        Request::Unsubscribe { topic } => {
            broker.unsubscribe(conn, &topic);
            topics.remove(&*topic);
        }
        Request::Ack { topic, index } => {
            if broker.ack(conn, &topic, index) == AckResult::Unknown {
                conn.out.offer_static(reply::MALFORMED);
            }
        }
        Request::Nack { topic, index } => {
            if broker.nack(conn, &topic, index) == AckResult::Unknown {
                conn.out.offer_static(reply::MALFORMED);
            }
        }
        Request::Stats => {
            conn.out.offer(Bytes::from(broker.stats().reply()));
        }
    }
}

/// How a write of one batch ended.
enum Written {
    All,
    /// The queue overflowed while writing: stop now. `at_line_start` tells whether the
    /// bytes already written end with a complete line.
    Aborted {
        at_line_start: bool,
    },
    Failed,
}

async fn write_loop(
    mut writer: OwnedWriteHalf,
    out: Arc<Outbound>,
    stop_reading: CancellationToken,
) {
    let mut chunk: Vec<u8> = Vec::new();
    let mut spare = VecDeque::new();
    let mut at_line_start = true;
    loop {
        match out.take(spare).await {
            Batch::Items(mut items) => {
                let mut outcome = Written::All;
                for item in items.drain(..) {
                    if !chunk.is_empty() && chunk.len() + item.len() > WRITE_CHUNK_BYTES {
                        outcome = write_chunk(&mut writer, &chunk, &out).await;
                        chunk.clear();
                        if !matches!(outcome, Written::All) {
                            break;
                        }
                    }
                    chunk.extend_from_slice(&item);
                }
                if matches!(outcome, Written::All) && !chunk.is_empty() {
                    outcome = write_chunk(&mut writer, &chunk, &out).await;
                }
                chunk.clear();
                if chunk.capacity() > 2 * WRITE_CHUNK_BYTES {
                    chunk = Vec::new();
                }
                spare = items;
                match outcome {
                    Written::All => {}
                    Written::Aborted { at_line_start: a } => {
                        at_line_start = a;
                        continue;
                    }
                    Written::Failed => {
                        out.close();
                        break;
                    }
                }
            }
            Batch::End(Ending::Drain) => break,
            Batch::End(Ending::SlowConsumer) => {
                if at_line_start {
                    let notice = writer.write_all(reply::SLOW_CONSUMER);
                    let _ = tokio::time::timeout(SLOW_CONSUMER_NOTICE_TIMEOUT, notice).await;
                }
                break;
            }
        }
    }
    stop_reading.cancel();
    let _ = tokio::time::timeout(SLOW_CONSUMER_NOTICE_TIMEOUT, writer.shutdown()).await;
}

/// Writes `chunk`, giving up early if the connection overflows meanwhile (a peer that
/// stopped reading would otherwise keep this write pending forever).
async fn write_chunk(writer: &mut OwnedWriteHalf, chunk: &[u8], out: &Outbound) -> Written {
    let mut written = 0;
    while written < chunk.len() {
        tokio::select! {
            biased;
            result = writer.write(&chunk[written..]) => match result {
                Ok(0) | Err(_) => return Written::Failed,
                Ok(n) => written += n,
            },
            _ = out.overflowed() => {
                return Written::Aborted { at_line_start: written == 0 || chunk[written - 1] == b'\n' };
            }
        }
    }
    Written::All
}
