//! Load driver for the reference broker: repeatable runs of its performance targets on
//! one machine.
//!
//! ```text
//! cargo run --release -p reference-broker -- --port 7000 &
//! cargo run --release -p reference-broker --example load -- throughput --subscribers 10
//! cargo run --release -p reference-broker --example load -- throughput --publishers 4 \
//!     --subscribers 4 --topics 4 --delivery one
//! cargo run --release -p reference-broker --example load -- latency --rate 20000
//! cargo run --release -p reference-broker --example load -- idle --connections 10000 \
//!     --broker-pid "$(pgrep -n reference-broke)"
//! cargo run --release -p reference-broker --example load -- stalled --broker-pid ...
//! cargo run --release -p reference-broker --example load -- echo-integrity --messages 1000000
//! ```
//!
//! Modes:
//! - `throughput`: closed loop, each publisher keeps `--inflight` sends outstanding
//!   (lines batched into one `write_all`, released by `{"success":true}` replies);
//!   subscribers count pushed lines with memchr. Publisher `i` sends to topic
//!   `i % topics`, subscriber `j` listens on topic `j % topics`.
//! - `latency`: open loop; message `i` of a publisher is due at `start + i/rate` and
//!   carries its intended and actual send times (ns since the run's monotonic epoch);
//!   end-to-end latency is measured from the *intended* time (HdrHistogram, ns, 3
//!   significant digits), with the uncorrected figure and the send delay beside it.
//!   Each publisher is a thread with a blocking socket that sleeps until just before the
//!   next message is due and spins the last few µs (a runtime timer ticks only every
//!   millisecond; a plain sleep wakes tens of µs late in a VM); one receiver thread waits
//!   in `poll(2)` on every subscriber and every publisher's replies.
//! - `idle`: opens `--connections` connections, each subscribed to its own topic, and
//!   reports the broker's RSS growth per connection.
//! - `stalled`: like `throughput`, plus one subscriber on topic 0 that never reads; prints
//!   the broker's RSS and the others' delivery rate every second.
//! - `echo-integrity`: one connection subscribes to a topic and publishes to it
//!   (pipelined); every push must come back once, in order, byte-exact, and every send
//!   must be answered `{"success":true}`.
//!
//! `--size` is the length in bytes of the `msg` string as written on the wire.
//! `--embedded` starts a broker in this process (on its own runtime) on 127.0.0.1:0; the
//! figures to report come from a separate broker process.
//!
//! Exit code: 0 on success, 1 when a run saw failures (lost, mangled, failed sends,
//! disconnected subscribers), 2 when the driver could not run.
//!
//! The rooms: `main.rs` (flags, constants, dispatch), `target.rs` (the broker under load,
//! embedded or not), `wire.rs` (protocol lines, setup requests, line framing), `host.rs`
//! (RSS, file-descriptor limit, timer slack), `figures.rs` (histograms and number
//! formatting), one file per mode: `throughput.rs` (also `stalled`), `latency.rs`,
//! `idle.rs`, `echo.rs`.

mod echo;
mod figures;
mod host;
mod idle;
mod latency;
mod target;
mod throughput;
mod wire;

use std::error::Error;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::echo::echo_integrity;
use crate::host::raise_nofile_limit;
use crate::idle::idle;
use crate::latency::latency;
use crate::target::Target;
use crate::throughput::throughput;

type BoxError = Box<dyn Error + Send + Sync>;
type Result<T, E = BoxError> = std::result::Result<T, E>;

/// Longest any single network operation may take before the run is declared broken.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Read timeout of loops that also watch a stop flag.
const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// Read buffer of a subscriber: large, so one syscall returns many pushes.
const READ_BUF_BYTES: usize = 256 * 1024;
/// Read buffer of a publisher's reply reader (replies are 18 bytes each).
const ACK_BUF_BYTES: usize = 64 * 1024;
/// Connections being opened at the same time: below the broker's listen backlog (mio
/// listens with 128), so no SYN is dropped and retried a second later.
const CONNECT_CONCURRENCY: usize = 64;
/// How long subscribers may take to receive the last messages after publishers stop.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Most messages a paced publisher writes in one syscall when it has fallen behind.
const MAX_PACED_BATCH: u64 = 4096;
/// A paced publisher wakes this much before its learnt sleep lateness says it must, then
/// spins to the due time.
const SPIN_MARGIN_NS: u64 = 3_000;
/// Cap of the learnt sleep lateness, so one preempted sleep cannot make the pacer spin for
/// long.
const MAX_SLEEP_LATENESS_NS: u64 = 100_000;
/// Highest latency the histograms track (larger values are clamped and counted).
const HIST_MAX_NS: u64 = 60_000_000_000;
/// File descriptors kept free for everything that is not a measured connection.
const FD_RESERVE: u64 = 128;
/// Longest reply line the setup helpers accept.
const MAX_REPLY_BYTES: usize = 64 * 1024;
/// The success reply, without its `\r\n`.
const SUCCESS: &[u8] = b"{\"success\":true}";
/// The slow-consumer reason, searched for in a disconnected subscriber's last bytes.
const SLOW_CONSUMER: &[u8] = b"Slow consumer";
/// Bytes kept from the end of each read to look for the slow-consumer line at EOF.
const TAIL_BYTES: usize = 128;

#[derive(Parser, Debug, Clone)]
#[command(about = "Load driver for the reference broker (throughput, latency, memory, overload)")]
struct Args {
    /// What to run.
    #[arg(value_enum)]
    mode: Mode,
    /// Broker address (ignored with --embedded).
    #[arg(long, default_value = "127.0.0.1:7000")]
    addr: String,
    /// Start a broker in this process on 127.0.0.1:0 instead of using --addr.
    #[arg(long)]
    embedded: bool,
    /// Pid of the broker process, to read its RSS (idle, stalled).
    #[arg(long)]
    broker_pid: Option<u32>,
    /// Publisher connections.
    #[arg(long, default_value_t = 1)]
    publishers: usize,
    /// Subscriber connections (subscriber j listens on topic j % topics).
    #[arg(long, default_value_t = 1)]
    subscribers: usize,
    /// Topics (publisher i sends to topic i % topics).
    #[arg(long, default_value_t = 1)]
    topics: usize,
    /// Delivery mode of every send.
    #[arg(long, value_enum, default_value_t = Delivery::All)]
    delivery: Delivery,
    /// Length of the `msg` string in bytes.
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Sends outstanding per publisher (throughput, stalled, echo-integrity).
    #[arg(long, default_value_t = 64)]
    inflight: u64,
    /// Measured duration.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    duration: Duration,
    /// Warm-up before measuring.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
    warmup: Duration,
    /// Offered rate of the latency mode, messages per second over all publishers.
    #[arg(long, default_value_t = 20_000)]
    rate: u64,
    /// Connections of the idle mode.
    #[arg(long, default_value_t = 10_000)]
    connections: u64,
    /// Messages of the echo-integrity mode.
    #[arg(long, default_value_t = 1_000_000)]
    messages: u64,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Throughput,
    Latency,
    Idle,
    Stalled,
    EchoIntegrity,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum Delivery {
    All,
    One,
}

impl Delivery {
    fn as_str(self) -> &'static str {
        match self {
            Delivery::All => "all",
            Delivery::One => "one",
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("load")
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("load: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("load: {e}");
            ExitCode::from(2)
        }
    }
}

/// Runs one mode; `Ok(false)` when the run completed but saw failures.
async fn run(args: Args) -> Result<bool> {
    let fd_limit = raise_nofile_limit();
    let target = Target::new(&args).await?;
    let passed = match args.mode {
        Mode::Throughput => throughput(&args, &target, false).await?,
        Mode::Stalled => throughput(&args, &target, true).await?,
        Mode::Latency => {
            let (args, addr, label) = (args.clone(), target.addr, target.label.clone());
            tokio::task::spawn_blocking(move || latency(&args, addr, &label)).await??
        }
        Mode::Idle => idle(&args, &target, fd_limit).await?,
        Mode::EchoIntegrity => echo_integrity(&args, &target).await?,
    };
    target.stop();
    Ok(passed)
}
