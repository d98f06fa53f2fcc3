//! Shared helpers for the backend integration tests: connect to a local broker, or skip
//! the test loudly when it is not running (unless `BROKERBENCH_REQUIRE_BACKENDS` says it
//! must be there, as in CI); and a [`Proxy`] that fails connections on demand.

#![allow(dead_code)]

use std::io::Write;
use std::time::Duration;

use brokerbench_adapters::{Backend, BackendKind, ConnectOptions, connect};

/// Whether `BROKERBENCH_REQUIRE_BACKENDS` (`all`, or a comma-separated list of backend
/// names) requires `kind`: then a broker that cannot be reached fails the test.
pub fn required(kind: BackendKind) -> bool {
    std::env::var("BROKERBENCH_REQUIRE_BACKENDS").is_ok_and(|list| {
        list.split(',').map(str::trim).any(|name| {
            name.eq_ignore_ascii_case("all") || name.eq_ignore_ascii_case(kind.as_str())
        })
    })
}

/// Options with a short connect timeout, so a missing broker is noticed quickly.
pub fn options() -> ConnectOptions {
    ConnectOptions::new()
        .connect_timeout(Duration::from_secs(3))
        .publish_timeout(Duration::from_secs(10))
        .request_timeout(Duration::from_secs(10))
}

/// The URL for `kind`: its environment variable, else its default.
pub fn url(kind: BackendKind) -> String {
    kind.resolve_url(None)
}

/// Connects to the local broker of `kind`, or returns `None` after writing a SKIPPED line
/// straight to the test process's stderr (not captured by the test harness, so it shows
/// in a plain `cargo test`). Panics instead when [`required`] says the broker must be
/// there.
pub async fn backend(kind: BackendKind, test: &str) -> Option<Box<dyn Backend>> {
    let url = url(kind);
    match connect(kind, &url, options()).await {
        Ok(backend) => Some(backend),
        Err(err) if required(kind) => panic!(
            "{test}: the {kind} broker is required (BROKERBENCH_REQUIRE_BACKENDS) but: {err}"
        ),
        Err(err) => {
            skip(kind, test, &err.to_string());
            None
        }
    }
}

/// Writes the SKIPPED line for `test` on `kind`.
pub fn skip(kind: BackendKind, test: &str, why: &str) {
    let line = format!(
        "SKIPPED {kind} test {test}: {why} (start the brokers with `scripts/services up`, or set BROKERBENCH_REQUIRE_BACKENDS=all to make this a failure)\n"
    );
    let _ = std::io::stderr().write_all(line.as_bytes());
}

/// A run id unique to this test process and call, for per-run topic names.
pub fn run_id(test: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "t{}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        test.replace(|c: char| !c.is_ascii_alphanumeric(), "-")
    )
}

/// The next delivery within `patience`, failing the test on an error item, the end of the
/// stream, or a long wait.
pub async fn next_within(
    sub: &mut brokerbench_adapters::Subscription,
    patience: Duration,
) -> brokerbench_adapters::Delivery {
    use futures::StreamExt;
    match tokio::time::timeout(patience, sub.next()).await {
        Ok(Some(Ok(delivery))) => delivery,
        Ok(Some(Err(e))) => panic!("error item on {}: {e}", sub.topic()),
        Ok(None) => panic!("stream of {} ended", sub.topic()),
        Err(_) => panic!("nothing delivered on {} within {patience:?}", sub.topic()),
    }
}

/// Whether nothing arrives on `sub` for `quiet`; anything that does is printed.
pub async fn quiet_for(sub: &mut brokerbench_adapters::Subscription, quiet: Duration) -> bool {
    use futures::StreamExt;
    match tokio::time::timeout(quiet, sub.next()).await {
        Err(_) => true,
        Ok(Some(Ok(d))) => {
            eprintln!("unexpected delivery: {d:?}");
            false
        }
        Ok(other) => {
            eprintln!("unexpected stream item: {other:?}");
            false
        }
    }
}

/// The error `connect` returns for `kind` at `url` (a backend is not `Debug`, so no
/// `unwrap_err`).
pub async fn connect_err(
    kind: BackendKind,
    url: &str,
    options: ConnectOptions,
) -> brokerbench_adapters::AdapterError {
    match connect(kind, url, options).await {
        Ok(_) => panic!("connecting to {url} succeeded"),
        Err(err) => err,
    }
}

/// A delivery's payload as text.
pub fn text(d: &brokerbench_adapters::Delivery) -> &str {
    std::str::from_utf8(&d.payload).expect("payload is UTF-8")
}

/// A ready subscription for `spec` on `backend`, then a producer: the start of most
/// round-trip tests.
pub async fn subscriber_and_producer(
    backend: &(impl Backend + ?Sized),
    spec: brokerbench_adapters::SubscriptionSpec,
) -> (
    brokerbench_adapters::Subscription,
    brokerbench_adapters::Producer,
) {
    let topic = spec.topic.clone();
    let sub = match backend.subscribe(spec).await {
        Ok(sub) => sub,
        Err(e) => panic!("subscribe to {topic}: {e}"),
    };
    let producer = match backend.producer().await {
        Ok(producer) => producer,
        Err(e) => panic!("a producer for {topic}: {e}"),
    };
    (sub, producer)
}

/// Publishes `n` messages of `size` bytes to `topic` with up to `window` in flight, each
/// of which must be confirmed `Ok`, while a task reads `sub` until it has all `n` (each
/// within `patience`). Returns how long the publishes took to be confirmed and how long
/// until everything was delivered, for a printed throughput figure.
pub async fn publish_at_rate(
    producer: &brokerbench_adapters::Producer,
    mut sub: brokerbench_adapters::Subscription,
    topic: &str,
    (n, window, size): (usize, usize, usize),
    patience: Duration,
) -> (Duration, Duration) {
    use brokerbench_adapters::{PublishOutcome, PublishRequest};
    use futures::StreamExt;
    use futures::stream::FuturesOrdered;
    let payload = bytes::Bytes::from(vec![b'p'; size]);
    let topic: std::sync::Arc<str> = topic.into();
    let reader = tokio::spawn(async move {
        let mut got = 0;
        while got < n {
            match tokio::time::timeout(patience, sub.next()).await {
                Ok(Some(Ok(_))) => got += 1,
                other => panic!("after {got}: {other:?}"),
            }
        }
        got
    });
    let started = std::time::Instant::now();
    let mut in_flight = FuturesOrdered::new();
    let mut confirmed = 0;
    for _ in 0..n {
        if in_flight.len() >= window {
            assert!(in_flight.next().await.unwrap() == PublishOutcome::Ok);
            confirmed += 1;
        }
        in_flight.push_back(producer.publish(PublishRequest::new(topic.clone(), payload.clone())));
    }
    while let Some(outcome) = in_flight.next().await {
        assert!(outcome == PublishOutcome::Ok);
        confirmed += 1;
    }
    let published = started.elapsed();
    assert_eq!(confirmed, n);
    assert_eq!(reader.await.unwrap(), n);
    (published, started.elapsed())
}

/// A TCP proxy in front of a broker that fails the connections through it the ways a
/// network does: [`cut`](Self::cut) resets them all at once, [`sever`](Self::sever) stops
/// them silently (the client learns it on its next write), and [`refuse`](Self::refuse)
/// turns new ones away, as a broker that is down does. Stops (and drops every connection)
/// when dropped.
pub struct Proxy {
    addr: std::net::SocketAddr,
    /// The connections relayed so far and not cut.
    relayed: std::sync::Arc<std::sync::Mutex<Vec<Relayed>>>,
    /// While set, new connections are reset as soon as they are accepted.
    refusing: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Cancelled when the proxy is dropped.
    closed: tokio_util::sync::CancellationToken,
    accept: tokio::task::JoinHandle<()>,
}

/// One relayed connection: how to end it.
struct Relayed {
    /// Resets both sides; also cancelled by the relay itself when the connection ends.
    cut: tokio_util::sync::CancellationToken,
    /// Stops relaying; both sides are reset when the client sends something next.
    sever: tokio_util::sync::CancellationToken,
}

impl Proxy {
    /// Listens on a free port of 127.0.0.1 and relays each connection to `upstream`
    /// (`host:port`).
    pub async fn start(upstream: String) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let relayed = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let refusing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let closed = tokio_util::sync::CancellationToken::new();
        let accept = tokio::spawn({
            let (relayed, refusing, closed) = (relayed.clone(), refusing.clone(), closed.clone());
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    // Linger zero: dropping a socket resets it, as a failed path does.
                    let _ = client.set_zero_linger();
                    if refusing.load(std::sync::atomic::Ordering::Acquire) {
                        drop(client);
                        continue;
                    }
                    let ends = Relayed {
                        cut: closed.child_token(),
                        sever: tokio_util::sync::CancellationToken::new(),
                    };
                    let (cut, sever) = (ends.cut.clone(), ends.sever.clone());
                    relayed.lock().unwrap().push(ends);
                    let upstream = upstream.clone();
                    tokio::spawn(async move {
                        if let Ok(server) = tokio::net::TcpStream::connect(&upstream).await {
                            let _ = server.set_zero_linger();
                            relay(client, server, &cut, &sever).await;
                        }
                        cut.cancel();
                    });
                }
            }
        });
        Proxy {
            addr,
            relayed,
            refusing,
            closed,
            accept,
        }
    }

    /// The address clients connect to.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// `url` (`scheme://[user-info@]host:port[/rest]`, or a bare `host:port`) with its host
    /// and port replaced by the proxy's, keeping the scheme, user-info and the rest.
    pub fn url_for(&self, url: &str) -> String {
        let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
        let (authority, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let user = authority
            .rsplit_once('@')
            .map(|(user, _)| format!("{user}@"))
            .unwrap_or_default();
        let scheme = if scheme.is_empty() {
            String::new()
        } else {
            format!("{scheme}://")
        };
        format!("{scheme}{user}{}{tail}", self.addr)
    }

    /// Resets every connection open now, both sides; returns how many there were. New
    /// connections are relayed as before, unless [`refuse`](Self::refuse) says otherwise.
    pub fn cut(&self) -> usize {
        let mut relayed = self.relayed.lock().unwrap();
        let open = relayed.iter().filter(|r| !r.cut.is_cancelled()).count();
        for r in relayed.drain(..) {
            r.cut.cancel();
        }
        open
    }

    /// Stops relaying every connection open now, without telling either side (as a
    /// network path that fails silently); each is reset when its client next sends
    /// something. Returns how many there were. New connections are relayed as before.
    pub fn sever(&self) -> usize {
        let relayed = self.relayed.lock().unwrap();
        let open: Vec<_> = relayed
            .iter()
            .filter(|r| !r.cut.is_cancelled() && !r.sever.is_cancelled())
            .collect();
        for r in &open {
            r.sever.cancel();
        }
        open.len()
    }

    /// While `refusing`, new connections are accepted and reset at once, so nobody gets
    /// through to the broker.
    pub fn refuse(&self, refusing: bool) {
        self.refusing
            .store(refusing, std::sync::atomic::Ordering::Release);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.closed.cancel();
    }
}

/// Copies both ways until either side closes or `cut` fires; after `sever`, waits for the
/// client's next bytes (or `cut`) instead. Returning drops (resets) both sockets.
async fn relay(
    mut client: tokio::net::TcpStream,
    mut server: tokio::net::TcpStream,
    cut: &tokio_util::sync::CancellationToken,
    sever: &tokio_util::sync::CancellationToken,
) {
    use tokio::io::AsyncReadExt;
    let severed = tokio::select! {
        () = cut.cancelled() => false,
        () = sever.cancelled() => true,
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => false,
    };
    if severed {
        let mut byte = [0u8; 1];
        tokio::select! {
            () = cut.cancelled() => {}
            _ = client.read(&mut byte) => {}
        }
    }
}
