//! Command-line settings of the broker, shared by the `reference-broker` binary and
//! `brokerbench broker`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use crate::config::{self, Config};

/// Default TCP port.
pub const DEFAULT_PORT: u16 = 7000;

/// Flags of the reference broker.
///
/// Other servers of this protocol are started as `SERVER PORT CACHE_SIZE`; that positional
/// form is accepted too, so existing test rigs can start this one unchanged.
#[derive(Debug, Clone, clap::Args)]
pub struct BrokerArgs {
    /// Port, positional form (same as --port).
    #[arg(value_name = "PORT", conflicts_with = "port")]
    pub port_positional: Option<u16>,
    /// Cache size, positional form (same as --cache-size).
    #[arg(value_name = "CACHE_SIZE", conflicts_with = "cache_size")]
    pub cache_size_positional: Option<usize>,
    /// Address to listen on.
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    pub bind: IpAddr,
    /// TCP port to listen on (0 picks a free one) [default: 7000].
    #[arg(long)]
    pub port: Option<u16>,
    /// Messages kept per topic for replay on subscribe [default: 100].
    #[arg(long)]
    pub cache_size: Option<usize>,
    /// Open connections allowed; one more is closed as soon as it is accepted.
    #[arg(long, default_value_t = config::DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Longest line accepted (bytes, or with a unit: 64KiB, 1MiB).
    #[arg(long, default_value = "1MiB", value_parser = parse_bytes)]
    pub max_line_bytes: usize,
    /// Output allowed to queue up for one connection before it is dropped as a slow consumer.
    #[arg(long, default_value = "8MiB", value_parser = parse_bytes)]
    pub outbound_queue: usize,
    /// Time an `ack` subscription has to acknowledge a message before it is redelivered.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub ack_timeout: Duration,
    /// Deliveries of one message before it moves to `$dlq.<topic>`.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_attempts: u32,
    /// How long message ids are remembered per topic for deduplication.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    pub dedup_window: Duration,
    /// Most message ids remembered per topic.
    #[arg(long, default_value_t = 100_000)]
    pub dedup_max_ids: usize,
    /// On SIGINT/SIGTERM, how long connections get to flush before the broker exits.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
}

impl BrokerArgs {
    /// The address to bind.
    pub fn addr(&self) -> SocketAddr {
        let port = self.port.or(self.port_positional).unwrap_or(DEFAULT_PORT);
        SocketAddr::new(self.bind, port)
    }

    /// The server settings these flags describe.
    pub fn config(&self) -> Config {
        Config {
            cache_size: self
                .cache_size
                .or(self.cache_size_positional)
                .unwrap_or(config::DEFAULT_CACHE_SIZE),
            max_connections: self.max_connections,
            max_line_bytes: self.max_line_bytes,
            outbound_queue_bytes: self.outbound_queue,
            ack_timeout: self.ack_timeout,
            max_attempts: self.max_attempts,
            dedup_window: self.dedup_window,
            dedup_max_ids: self.dedup_max_ids,
            shutdown_grace: self.shutdown_grace,
        }
    }
}

/// Parses a byte count: `1048576`, `64KiB`, `1MiB`, `2GiB` (K/M/G and KB/MB/GB are read as
/// powers of 1024 too).
///
/// # Errors
///
/// A message naming the value when it is not a number with a known unit.
pub fn parse_bytes(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: usize = number
        .parse()
        .map_err(|_| format!("`{text}` is not a byte count (examples: 65536, 64KiB, 1MiB)"))?;
    let scale: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => {
            return Err(format!(
                "unknown unit `{other}` in `{text}` (use B, KiB, MiB or GiB)"
            ));
        }
    };
    number
        .checked_mul(scale)
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// Raises the soft open-files limit to the hard limit, so thousands of clients can connect.
/// Returns the soft limit now in force.
pub fn raise_open_files_limit() -> Option<u64> {
    rlimit::increase_nofile_limit(u64::MAX).ok()
}

/// Runs the broker in the foreground until SIGINT or SIGTERM; what `reference-broker` and
/// `brokerbench broker` do. Exit code 0 after a clean shutdown, 2 when it cannot start.
pub fn main(args: &BrokerArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("reference-broker: cannot start the runtime: {err}");
            return ExitCode::from(2);
        }
    };
    runtime.block_on(serve(args))
}

async fn serve(args: &BrokerArgs) -> ExitCode {
    raise_open_files_limit();
    let addr = args.addr();
    let listener = match listen(addr) {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("reference-broker: cannot listen on {addr}: {err}");
            return ExitCode::from(2);
        }
    };
    let local = listener.local_addr().unwrap_or(addr);
    eprintln!("reference-broker: listening on {local}");
    match crate::server::run(listener, args.config(), shutdown_signal()).await {
        Ok(()) => {
            eprintln!("reference-broker: stopped");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("reference-broker: {err}");
            ExitCode::from(2)
        }
    }
}

/// Pending connections the kernel may queue before `accept`: thousands of clients
/// connecting at once must not have their SYNs dropped (the usual default is 128).
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds `addr` with address reuse and a [`LISTEN_BACKLOG`]-deep accept queue.
///
/// # Errors
///
/// When the address cannot be bound (in use, not local, no permission).
pub fn listen(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: BrokerArgs,
    }

    fn parse(args: &[&str]) -> Result<BrokerArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("reference-broker").chain(args.iter().copied()))
            .map(|c| c.args)
    }

    #[test]
    fn defaults() {
        let args = parse(&[]).unwrap();
        assert_eq!(args.addr(), "127.0.0.1:7000".parse().unwrap());
        assert_eq!(args.config(), Config::default());
    }

    #[test]
    fn positional_form_of_other_servers() {
        let args = parse(&["7100", "5"]).unwrap();
        assert_eq!(args.addr().port(), 7100);
        assert_eq!(args.config().cache_size, 5);
        assert!(parse(&["7100", "--port", "7200"]).is_err());
    }

    #[test]
    fn flags() {
        let args = parse(&[
            "--bind",
            "0.0.0.0",
            "--port",
            "0",
            "--cache-size",
            "0",
            "--max-line-bytes",
            "64KiB",
            "--outbound-queue",
            "1MiB",
            "--ack-timeout",
            "250ms",
            "--max-attempts",
            "3",
            "--dedup-window",
            "2s",
            "--max-connections",
            "10",
        ])
        .unwrap();
        let config = args.config();
        assert_eq!(args.addr(), "0.0.0.0:0".parse().unwrap());
        assert_eq!(config.cache_size, 0);
        assert_eq!(config.max_line_bytes, 65536);
        assert_eq!(config.outbound_queue_bytes, 1 << 20);
        assert_eq!(config.ack_timeout, Duration::from_millis(250));
        assert_eq!(config.max_attempts, 3);
        assert_eq!(config.dedup_window, Duration::from_secs(2));
        assert_eq!(config.max_connections, 10);
        assert!(parse(&["--max-attempts", "0"]).is_err());
    }

    #[test]
    fn byte_counts() {
        assert_eq!(parse_bytes("1048576"), Ok(1 << 20));
        assert_eq!(parse_bytes("64KiB"), Ok(64 << 10));
        assert_eq!(parse_bytes("2 MiB"), Ok(2 << 20));
        assert!(parse_bytes("12 parsecs").unwrap_err().contains("parsecs"));
        assert!(parse_bytes("lots").is_err());
    }
}
