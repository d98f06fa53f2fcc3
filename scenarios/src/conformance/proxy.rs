//! A TCP proxy in front of a broker that can cut every connection through it at once, as
//! a network failure would, while it keeps accepting new ones (so clients can reconnect).
//! The `reconnect` check connects its clients through one.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// What went through a proxy.
#[derive(Debug, Default)]
struct Traffic {
    accepted: AtomicU64,
    open: AtomicU64,
    bytes: AtomicU64,
}

/// A running proxy; stops (and drops every connection) when dropped.
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    /// The token of the connections open now; replaced by a fresh one at each cut.
    generation: Arc<Mutex<CancellationToken>>,
    traffic: Arc<Traffic>,
    accept: JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free port of 127.0.0.1 and relays each connection to `upstream`
    /// (`host:port`).
    ///
    /// # Errors
    /// When no local port can be bound.
    pub async fn start(upstream: String) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let generation = Arc::new(Mutex::new(CancellationToken::new()));
        let traffic = Arc::new(Traffic::default());
        let accept = tokio::spawn({
            let generation = generation.clone();
            let traffic = traffic.clone();
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    let _ = client.set_nodelay(true);
                    traffic.accepted.fetch_add(1, Ordering::Relaxed);
                    let cut = generation.lock().clone();
                    let upstream = upstream.clone();
                    let traffic = traffic.clone();
                    tokio::spawn(async move {
                        let Ok(server) = TcpStream::connect(&upstream).await else {
                            return;
                        };
                        let _ = server.set_nodelay(true);
                        traffic.open.fetch_add(1, Ordering::Relaxed);
                        relay(client, server, &cut, &traffic).await;
                        traffic.open.fetch_sub(1, Ordering::Relaxed);
                    });
                }
            }
        });
        Ok(Proxy {
            addr,
            generation,
            traffic,
            accept,
        })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Cuts every connection open now (both sides are reset); new connections are
    /// relayed as before. Returns how many were open.
    pub fn cut(&self) -> u64 {
        let open = self.traffic.open.load(Ordering::Relaxed);
        let old = std::mem::replace(&mut *self.generation.lock(), CancellationToken::new());
        old.cancel();
        open
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.traffic.accepted.load(Ordering::Relaxed)
    }

    /// Bytes relayed so far, both directions.
    pub fn bytes(&self) -> u64 {
        self.traffic.bytes.load(Ordering::Relaxed)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.generation.lock().cancel();
    }
}

/// Copies both ways until either side closes or `cut` fires. Both sockets linger zero, so
/// a cut resets them (as a failed network path does) rather than closing them politely.
async fn relay(client: TcpStream, server: TcpStream, cut: &CancellationToken, traffic: &Traffic) {
    let _ = client.set_zero_linger();
    let _ = server.set_zero_linger();
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    tokio::select! {
        () = cut.cancelled() => {}
        _ = async {
            tokio::join!(
                pump(&mut client_read, &mut server_write, traffic),
                pump(&mut server_read, &mut client_write, traffic)
            )
        } => {}
    }
}

/// Copies `from` to `to` until `from` ends, then shuts `to` down.
async fn pump(
    from: &mut tokio::net::tcp::OwnedReadHalf,
    to: &mut tokio::net::tcp::OwnedWriteHalf,
    traffic: &Traffic,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
        traffic.bytes.fetch_add(n as u64, Ordering::Relaxed);
    }
    let _ = to.shutdown().await;
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
mod tests {
    use super::*;

    #[test]
    fn urls_keep_everything_but_the_address() {
        let proxy: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        assert_eq!(
            through("amqp://guest:guest@10.0.0.5:5672/%2f?heartbeat=5", proxy),
            "amqp://guest:guest@127.0.0.1:40000/%2f?heartbeat=5"
        );
        assert_eq!(
            through("tcp://127.0.0.1:7000", proxy),
            "tcp://127.0.0.1:40000"
        );
        assert_eq!(
            through("kafka://a:9092,b:9092", proxy),
            "kafka://127.0.0.1:40000"
        );
        assert_eq!(
            through("redis://:pw@h/0", proxy),
            "redis://:pw@127.0.0.1:40000/0"
        );
        assert_eq!(through("h:4222", proxy), "127.0.0.1:40000");
    }

    #[tokio::test]
    async fn relays_then_cuts_then_relays_again() {
        // An echo server upstream.
        let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream_addr = upstream.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = upstream.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        let proxy = Proxy::start(upstream_addr.to_string()).await.unwrap();
        let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
        client.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        client.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
        assert!(proxy.bytes() >= 8);
        assert_eq!(proxy.cut(), 1);
        // The old connection is dead: a read ends (reset or EOF).
        let mut rest = Vec::new();
        let read = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            client.read_to_end(&mut rest),
        )
        .await
        .unwrap();
        assert!(read.is_err() || rest.is_empty());
        // A new one works.
        let mut again = TcpStream::connect(proxy.addr()).await.unwrap();
        again.write_all(b"pong").await.unwrap();
        again.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"pong");
        assert_eq!(proxy.accepted(), 2);
    }
}
