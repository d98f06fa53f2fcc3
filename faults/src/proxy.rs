//! A TCP proxy in front of a broker that breaks the path the ways a network does: it
//! delays or throttles the bytes ([`Proxy::set_latency`], [`Proxy::set_bandwidth`]),
//! black-holes them ([`Proxy::partition`]), resets every connection through it at once
//! while it keeps accepting new ones ([`Proxy::cut`]), or keeps the path down for a while
//! ([`Proxy::cut_for`]); [`Proxy::heal`] ends every fault. The conformance `reconnect`
//! check and runs with faults connect their clients through one.
//!
//! A plain proxy relays bytes to one upstream address. A Kafka proxy
//! ([`Proxy::start_kafka`]) also reads the Kafka frames going through it and rewrites the
//! broker addresses a Kafka client learns from its bootstrap broker, so that the client's
//! connections to every broker of the cluster go through the proxy too (the `kafka` module).

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::kafka;
use crate::shaping::{self, Conditions, Inlet, Outlet, Shape, Way};
use crate::spec::Direction;

/// Bytes copied at a time.
const CHUNK: usize = 64 * 1024;

/// The largest Kafka response the proxy reads whole to rewrite the brokers it names;
/// Metadata and FindCoordinator responses are far smaller. A larger one is relayed as it
/// is.
const MAX_REWRITTEN_FRAME: usize = 16 * 1024 * 1024;

/// What a proxy's connections carry, so what it must understand of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    /// Any byte stream, relayed as it is.
    Plain,
    /// Kafka frames, with the advertised broker addresses rewritten.
    Kafka,
}

/// What went through a proxy, over all its listeners.
#[derive(Debug, Default)]
pub(crate) struct Traffic {
    accepted: AtomicU64,
    open: AtomicU64,
    bytes: AtomicU64,
}

impl Traffic {
    pub(crate) fn relayed(&self, n: usize) {
        self.bytes.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// The listeners of a proxy: one in plain mode; in Kafka mode, one per upstream broker.
#[derive(Debug, Default)]
struct Listeners {
    /// The local address of the listener relaying to each upstream `host:port`.
    by_upstream: HashMap<String, SocketAddr>,
    /// Their accept loops, stopped when the proxy is dropped.
    accepting: Vec<JoinHandle<()>>,
    /// Set when the proxy is dropped: no listener starts after that.
    closed: bool,
}

/// What the listeners and connections of one proxy share.
#[derive(Debug)]
struct Shared {
    protocol: Protocol,
    /// The token of the connections open now; replaced by a fresh one at each cut.
    generation: Mutex<CancellationToken>,
    /// Until when new connections are reset as soon as they are accepted (an outage).
    refuse_until: Mutex<Option<Instant>>,
    /// Delays, bandwidth limits and partition, read by every connection.
    conditions: watch::Sender<Conditions>,
    traffic: Traffic,
    listeners: Mutex<Listeners>,
}

/// A running proxy; stops (and drops every connection) when dropped.
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Proxy {
    /// Listens on a free port of 127.0.0.1 and relays each connection to `upstream`
    /// (`host:port`).
    ///
    /// # Errors
    /// When no local port can be bound.
    pub async fn start(upstream: String) -> io::Result<Proxy> {
        Proxy::open(upstream, Protocol::Plain).await
    }

    /// Like [`Proxy::start`], for a Kafka bootstrap broker at `upstream`: the brokers that
    /// Metadata and FindCoordinator responses advertise are replaced by proxy listeners
    /// relaying to them (started the first time a broker is named; the one for `upstream`
    /// is the proxy's own address), so a Kafka client connects to every broker through
    /// the proxy and [`Proxy::cut`] reaches all its connections.
    ///
    /// # Errors
    /// When no local port can be bound.
    pub async fn start_kafka(upstream: String) -> io::Result<Proxy> {
        Proxy::open(upstream, Protocol::Kafka).await
    }

    async fn open(upstream: String, protocol: Protocol) -> io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let shared = Arc::new(Shared {
            protocol,
            generation: Mutex::new(CancellationToken::new()),
            refuse_until: Mutex::new(None),
            conditions: watch::Sender::new(Conditions::default()),
            traffic: Traffic::default(),
            listeners: Mutex::default(),
        });
        let addr = shared.listen(&mut shared.listeners.lock(), listener, upstream)?;
        Ok(Proxy { addr, shared })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Cuts every connection open now, through any of the proxy's listeners (both sides
    /// are reset); new connections are relayed as before. Returns how many were open.
    pub fn cut(&self) -> u64 {
        let open = self.shared.traffic.open.load(Ordering::Relaxed);
        let old = std::mem::replace(
            &mut *self.shared.generation.lock(),
            CancellationToken::new(),
        );
        old.cancel();
        open
    }

    /// Cuts every connection open now, like [`cut`](Self::cut), and keeps the path down for
    /// `outage`: a connection accepted before it ends is reset at once, as a client
    /// reconnecting through a failed network would see. Returns how many were open.
    pub fn cut_for(&self, outage: Duration) -> u64 {
        *self.shared.refuse_until.lock() = Some(Instant::now() + outage);
        self.cut()
    }

    /// Holds back every byte going `direction` by `delay`, ± a uniform `jitter` (the
    /// order of a connection's bytes is kept), on open and new connections alike.
    pub fn set_latency(&self, direction: Direction, delay: Duration, jitter: Duration) {
        self.shape(direction, |shape| {
            shape.delay = delay;
            shape.jitter = jitter;
        });
    }

    /// Writes at most `bytes_per_second` going `direction`, per connection; `None` lifts
    /// the limit.
    pub fn set_bandwidth(&self, direction: Direction, bytes_per_second: Option<u64>) {
        self.shape(direction, |shape| shape.bytes_per_second = bytes_per_second);
    }

    /// A black hole: from now no byte flows either way on any connection, and new
    /// connections are accepted but not relayed, until [`heal`](Self::heal). The
    /// connections stay open, so traffic flows again on them afterwards.
    pub fn partition(&self) {
        self.shared.conditions.send_modify(|c| c.partitioned = true);
    }

    /// Ends every fault: no delay, no bandwidth limit, no partition, no outage. Held bytes
    /// flow on; connections already cut stay cut.
    pub fn heal(&self) {
        *self.shared.refuse_until.lock() = None;
        self.shared.conditions.send_replace(Conditions::default());
    }

    /// Connections open now, through all listeners.
    pub fn open_connections(&self) -> u64 {
        self.shared.traffic.open.load(Ordering::Relaxed)
    }

    fn shape(&self, direction: Direction, change: impl Fn(&mut Shape)) {
        self.shared.conditions.send_modify(|c| {
            if direction.to_broker() {
                change(&mut c.to_broker);
            }
            if direction.from_broker() {
                change(&mut c.from_broker);
            }
        });
    }

    /// Connections accepted so far, by all listeners.
    pub fn accepted(&self) -> u64 {
        self.shared.traffic.accepted.load(Ordering::Relaxed)
    }

    /// Bytes relayed so far, both directions, all listeners.
    pub fn bytes(&self) -> u64 {
        self.shared.traffic.bytes.load(Ordering::Relaxed)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let mut listeners = self.shared.listeners.lock();
        listeners.closed = true;
        for accepting in listeners.accepting.drain(..) {
            accepting.abort();
        }
        drop(listeners);
        self.shared.generation.lock().cancel();
    }
}

impl Shared {
    /// Starts relaying what `listener` accepts to `upstream` and records it in
    /// `listeners` (the locked `self.listeners`). Returns its address.
    fn listen(
        self: &Arc<Self>,
        listeners: &mut Listeners,
        listener: TcpListener,
        upstream: String,
    ) -> io::Result<SocketAddr> {
        if listeners.closed {
            return Err(io::Error::other("the proxy is stopped"));
        }
        let addr = listener.local_addr()?;
        listeners.by_upstream.insert(upstream.clone(), addr);
        listeners
            .accepting
            .push(tokio::spawn(accept(listener, upstream, self.clone())));
        Ok(addr)
    }

    /// The address of the listener relaying to the broker `host:port`, started now if
    /// there is none yet; `None` when none can be started (the broker's address then
    /// reaches the client unchanged).
    fn broker(self: &Arc<Self>, host: &str, port: u16) -> Option<SocketAddr> {
        let upstream = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let mut listeners = self.listeners.lock();
        if let Some(addr) = listeners.by_upstream.get(&upstream) {
            return Some(*addr);
        }
        // Binding a loopback port returns at once (it never waits on the network), so it
        // is done here, under the lock, which makes the check-then-start atomic.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").ok()?;
        listener.set_nonblocking(true).ok()?;
        let listener = TcpListener::from_std(listener).ok()?;
        self.listen(&mut listeners, listener, upstream).ok()
    }
}

/// Accepts connections on `listener` and relays each to `upstream`.
async fn accept(listener: TcpListener, upstream: String, shared: Arc<Shared>) {
    while let Ok((client, _)) = listener.accept().await {
        let down = shared
            .refuse_until
            .lock()
            .is_some_and(|until| Instant::now() < until);
        if down {
            let _ = client.set_zero_linger();
            drop(client);
            continue;
        }
        let _ = client.set_nodelay(true);
        shared.traffic.accepted.fetch_add(1, Ordering::Relaxed);
        let cut = shared.generation.lock().clone();
        let upstream = upstream.clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            // Behind a partition a new connection hangs: accepted, never relayed, until it
            // heals (or the connection is cut).
            let mut conditions = shared.conditions.subscribe();
            tokio::select! {
                () = shaping::wait_open(&mut conditions) => {}
                () = cut.cancelled() => return,
            }
            let Ok(server) = TcpStream::connect(&upstream).await else {
                return;
            };
            let _ = server.set_nodelay(true);
            shared.traffic.open.fetch_add(1, Ordering::Relaxed);
            match shared.protocol {
                Protocol::Plain => relay(client, server, &cut, &shared).await,
                Protocol::Kafka => relay_kafka(client, server, &cut, &shared).await,
            }
            shared.traffic.open.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// Copies both ways until both sides closed or `cut` fires, shaped by the proxy's
/// conditions. Both sockets linger zero, so a cut resets them (as a failed network path
/// does) rather than closing them politely.
async fn relay(client: TcpStream, server: TcpStream, cut: &CancellationToken, shared: &Shared) {
    relay_with(
        client,
        server,
        cut,
        shared,
        async |from, to| pump(from, to).await,
        async |from, to| pump(from, to).await,
    )
    .await;
}

/// The two directions of a relayed connection, shaped by the proxy's conditions, each
/// copied by its own function (`upstream` client → broker, `downstream` broker → client)
/// until both sides closed or `cut` fires. Both sockets linger zero, so a cut resets them.
async fn relay_with(
    client: TcpStream,
    server: TcpStream,
    cut: &CancellationToken,
    shared: &Shared,
    upstream: impl AsyncFnOnce(&mut Inlet, &mut Outlet),
    downstream: impl AsyncFnOnce(&mut Inlet, &mut Outlet),
) {
    let _ = client.set_zero_linger();
    let _ = server.set_zero_linger();
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let conditions = || shared.conditions.subscribe();
    let mut from_client = Inlet::new(client_read, conditions());
    let mut from_server = Inlet::new(server_read, conditions());
    let (mut to_server, to_server_writer) =
        shaping::pipe(server_write, Way::ToBroker, conditions(), &shared.traffic);
    let (mut to_client, to_client_writer) =
        shaping::pipe(client_write, Way::FromBroker, conditions(), &shared.traffic);
    tokio::select! {
        () = cut.cancelled() => {}
        _ = async {
            tokio::join!(
                async {
                    upstream(&mut from_client, &mut to_server).await;
                    drop(to_server);
                },
                to_server_writer,
                async {
                    downstream(&mut from_server, &mut to_client).await;
                    drop(to_client);
                },
                to_client_writer,
            )
        } => {}
    }
}

/// Copies `from` to `to` until `from` ends.
async fn pump(from: &mut Inlet, to: &mut Outlet) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
}

/// Like [`relay`], frame by frame, for a Kafka connection: the requests are relayed as
/// they are, but the Metadata and FindCoordinator calls among them are remembered (by
/// correlation id) so that the brokers their responses advertise can be replaced by proxy
/// listeners.
async fn relay_kafka(
    client: TcpStream,
    server: TcpStream,
    cut: &CancellationToken,
    shared: &Arc<Shared>,
) {
    // Only calls whose responses are rewritten are kept, and each gets its response: the
    // map holds the client's Metadata and FindCoordinator requests in flight.
    let calls: Mutex<HashMap<i32, kafka::Call>> = Mutex::default();
    relay_with(
        client,
        server,
        cut,
        shared,
        async |from, to| {
            let _ = requests(from, to, &calls).await;
        },
        async |from, to| {
            let _ = responses(from, to, &calls, shared).await;
        },
    )
    .await;
}

/// Relays the client's requests until it closes, remembering the calls whose responses
/// advertise brokers.
///
/// ```text
/// int32 size | int16 api_key | int16 api_version | int32 correlation_id | rest of request
/// ```
async fn requests(
    from: &mut Inlet,
    to: &mut Outlet,
    calls: &Mutex<HashMap<i32, kafka::Call>>,
) -> io::Result<()> {
    while let Some(size) = frame_size(from).await? {
        let mut head = [0u8; kafka::REQUEST_HEAD];
        let head_len = size.min(kafka::REQUEST_HEAD);
        from.read_exact(&mut head[..head_len]).await?;
        if head_len == kafka::REQUEST_HEAD {
            let (correlation, call) = kafka::Call::of_request(head);
            if call.rewritten() {
                // Recorded before the request goes on, so before its response can come.
                calls.lock().insert(correlation, call);
            }
        }
        let prefix = [&frame_prefix(size)[..], &head[..head_len]].concat();
        forward(&prefix, size - head_len, from, to).await?;
    }
    Ok(())
}

/// Relays the broker's responses until it closes, with the advertised brokers of the
/// remembered calls replaced by proxy listeners.
///
/// ```text
/// int32 size | int32 correlation_id | rest of response
/// ```
async fn responses(
    from: &mut Inlet,
    to: &mut Outlet,
    calls: &Mutex<HashMap<i32, kafka::Call>>,
    shared: &Arc<Shared>,
) -> io::Result<()> {
    while let Some(size) = frame_size(from).await? {
        let mut head = [0u8; kafka::RESPONSE_HEAD];
        let head_len = size.min(kafka::RESPONSE_HEAD);
        from.read_exact(&mut head[..head_len]).await?;
        let call = if head_len == kafka::RESPONSE_HEAD {
            calls.lock().remove(&i32::from_be_bytes(head))
        } else {
            None
        };
        match call {
            Some(call) if size <= MAX_REWRITTEN_FRAME => {
                let mut response = vec![0u8; size];
                response[..head_len].copy_from_slice(&head);
                from.read_exact(&mut response[head_len..]).await?;
                // A response that does not parse goes on unchanged: the client then
                // connects to the brokers directly, which the reconnect check reports.
                let frame =
                    kafka::relocate(call, &response, |host, port| shared.broker(host, port))
                        .unwrap_or_else(|_| [&frame_prefix(size)[..], &response].concat());
                to.write_all(&frame).await?;
            }
            _ => {
                let prefix = [&frame_prefix(size)[..], &head[..head_len]].concat();
                forward(&prefix, size - head_len, from, to).await?;
            }
        }
    }
    Ok(())
}

/// The size prefix of the next frame; `None` when the stream ends between frames.
///
/// # Errors
/// When the stream fails or ends inside the prefix, or the size is negative.
async fn frame_size(from: &mut Inlet) -> io::Result<Option<usize>> {
    let mut prefix = [0u8; 4];
    let first = from.read(&mut prefix).await?;
    if first == 0 {
        return Ok(None);
    }
    from.read_exact(&mut prefix[first..]).await?;
    usize::try_from(i32::from_be_bytes(prefix))
        .map(Some)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "a negative Kafka frame size"))
}

/// The size prefix of a frame of `size` bytes (read from an int32, so it fits one).
fn frame_prefix(size: usize) -> [u8; 4] {
    (size as i32).to_be_bytes()
}

/// Writes `prefix`, then copies exactly `n` bytes from `from` to `to`; the prefix goes out
/// with the first chunk, so a small frame leaves in one write.
async fn forward(prefix: &[u8], n: usize, from: &mut Inlet, to: &mut Outlet) -> io::Result<()> {
    let mut buf = Vec::with_capacity((prefix.len() + n).min(CHUNK));
    buf.extend_from_slice(prefix);
    let mut left = n;
    loop {
        let start = buf.len();
        let take = CHUNK.saturating_sub(start).min(left);
        buf.resize(start + take, 0);
        from.read_exact(&mut buf[start..]).await?;
        left -= take;
        to.write_all(&buf).await?;
        if left == 0 {
            return Ok(());
        }
        buf.clear();
    }
}

/// `url` with its host and port replaced by `proxy`, keeping the scheme, the user-info
/// (credentials), the path and the query: `amqp://guest:guest@10.0.0.5:5672/%2f` →
/// `amqp://guest:guest@127.0.0.1:40000/%2f`. Only the first of several hosts is kept.
pub fn through(url: &str, proxy: SocketAddr) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, url),
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let user_info = authority
        .rsplit_once('@')
        .map(|(user, _)| format!("{user}@"))
        .unwrap_or_default();
    match scheme {
        Some(scheme) => format!("{scheme}://{user_info}{proxy}{tail}"),
        None => format!("{user_info}{proxy}{tail}"),
    }
}

#[cfg(test)]
mod tests;
