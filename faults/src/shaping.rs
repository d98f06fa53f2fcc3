//! How bytes cross the proxy while a fault holds: each direction of a connection is a
//! reader ([`Inlet`]) that hands chunks, stamped with the time they were read, to a writer
//! task ([`deliver`]) through a short queue ([`Outlet`]). The writer holds each chunk back
//! by the direction's delay (± jitter, order kept), paces it to the bandwidth limit, and
//! holds everything while the path is partitioned; the reader stops reading while
//! partitioned, so the sender's socket fills up as it would behind a black hole.

use std::io;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, watch};

use crate::proxy::Traffic;

/// Chunks queued between a reader and its writer (each up to 64 KiB).
const QUEUE: usize = 16;

/// How one direction is slowed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Shape {
    /// Every byte is held back this long after it was read.
    pub(crate) delay: Duration,
    /// A uniform ± spread around `delay`.
    pub(crate) jitter: Duration,
    /// At most this many bytes per second are written.
    pub(crate) bytes_per_second: Option<u64>,
}

/// The state of the path, shared by every connection of a proxy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Conditions {
    /// Client to broker.
    pub(crate) to_broker: Shape,
    /// Broker to client.
    pub(crate) from_broker: Shape,
    /// No byte flows either way and new connections wait.
    pub(crate) partitioned: bool,
}

/// Which way a pipe carries bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Way {
    ToBroker,
    FromBroker,
}

impl Conditions {
    fn shape(&self, way: Way) -> Shape {
        match way {
            Way::ToBroker => self.to_broker,
            Way::FromBroker => self.from_broker,
        }
    }
}

/// Waits until the path is not partitioned (at once when it is not).
pub(crate) async fn wait_open(conditions: &mut watch::Receiver<Conditions>) {
    // An error means the proxy is gone: stop waiting, the connection is dropped anyway.
    let _ = conditions.wait_for(|c| !c.partitioned).await;
}

/// A chunk on its way, with the time it was read.
struct Chunk {
    bytes: Vec<u8>,
    read_at: Instant,
}

/// The reading side of one direction: reads nothing while the path is partitioned.
pub(crate) struct Inlet {
    read: OwnedReadHalf,
    conditions: watch::Receiver<Conditions>,
}

impl Inlet {
    pub(crate) fn new(read: OwnedReadHalf, conditions: watch::Receiver<Conditions>) -> Self {
        Self { read, conditions }
    }

    /// Reads what is there (0 at the end of the stream), once the path is open.
    pub(crate) async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        wait_open(&mut self.conditions).await;
        self.read.read(buf).await
    }

    /// Fills `buf`.
    ///
    /// # Errors
    /// When the stream fails or ends first.
    pub(crate) async fn read_exact(&mut self, buf: &mut [u8]) -> io::Result<()> {
        let mut filled = 0;
        while filled < buf.len() {
            let n = self.read(&mut buf[filled..]).await?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            filled += n;
        }
        Ok(())
    }
}

/// The queue to one direction's writer.
pub(crate) struct Outlet {
    tx: mpsc::Sender<Chunk>,
}

impl Outlet {
    /// Queues `bytes` for writing, stamped now.
    ///
    /// # Errors
    /// When the writer has stopped (its socket failed).
    pub(crate) async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        let chunk = Chunk {
            bytes: bytes.to_vec(),
            read_at: Instant::now(),
        };
        self.tx
            .send(chunk)
            .await
            .map_err(|_| io::Error::from(io::ErrorKind::BrokenPipe))
    }
}

/// A pipe for one direction: the queue its reader writes to, and the writer task's future,
/// to be run beside the reader.
pub(crate) fn pipe(
    write: OwnedWriteHalf,
    way: Way,
    conditions: watch::Receiver<Conditions>,
    traffic: &Traffic,
) -> (Outlet, impl Future<Output = ()> + '_) {
    let (tx, rx) = mpsc::channel(QUEUE);
    (Outlet { tx }, deliver(rx, write, way, conditions, traffic))
}

/// Writes what the queue brings, shaped by the conditions, until the queue closes; then
/// shuts the socket's write side down (the end of the stream goes on, like the bytes).
async fn deliver(
    mut rx: mpsc::Receiver<Chunk>,
    mut write: OwnedWriteHalf,
    way: Way,
    mut conditions: watch::Receiver<Conditions>,
    traffic: &Traffic,
) {
    let mut last_release = Instant::now();
    let mut rng = fastrand::Rng::new();
    while let Some(chunk) = rx.recv().await {
        let shape = conditions.borrow().shape(way);
        if !shape.delay.is_zero() || !shape.jitter.is_zero() {
            let spread = shape.jitter.as_nanos() as u64;
            let offset = if spread == 0 {
                0i128
            } else {
                i128::from(rng.u64(0..=2 * spread)) - i128::from(spread)
            };
            let hold = (shape.delay.as_nanos() as i128 + offset).max(0) as u64;
            // Never before an earlier chunk: a TCP stream keeps its order.
            let release = (chunk.read_at + Duration::from_nanos(hold)).max(last_release);
            last_release = release;
            tokio::time::sleep_until(release.into()).await;
        }
        wait_open(&mut conditions).await;
        let ok = match shape.bytes_per_second {
            None => write.write_all(&chunk.bytes).await.is_ok(),
            Some(rate) => paced(&mut write, &chunk.bytes, rate).await.is_ok(),
        };
        if !ok {
            break;
        }
        traffic.relayed(chunk.bytes.len());
    }
    let _ = write.shutdown().await;
}

/// Writes `bytes` at `rate` bytes per second, in slices of a twentieth of a second.
async fn paced(write: &mut OwnedWriteHalf, bytes: &[u8], rate: u64) -> io::Result<()> {
    let slice = usize::try_from((rate / 20).max(1)).unwrap_or(usize::MAX);
    let started = Instant::now();
    let mut sent = 0usize;
    for part in bytes.chunks(slice) {
        write.write_all(part).await?;
        sent += part.len();
        let due = started + Duration::from_secs_f64(sent as f64 / rate as f64);
        tokio::time::sleep_until(due.into()).await;
    }
    Ok(())
}
