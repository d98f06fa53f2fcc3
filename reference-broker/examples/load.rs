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
#![allow(unsafe_code)] // getrlimit/setrlimit/prctl through libc, each call commented.

use std::collections::HashMap;
use std::error::Error;
use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Parser, ValueEnum};
use futures::StreamExt as _;
use hdrhistogram::Histogram;
use memchr::memmem;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{Notify, oneshot};
use tokio::time::timeout;

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

// ---------------------------------------------------------------------------------------
// Target broker
// ---------------------------------------------------------------------------------------

/// The broker under load: an address, where to read its RSS, and (embedded) its stopper.
struct Target {
    addr: SocketAddr,
    rss_pid: Option<u32>,
    label: String,
    embedded: bool,
    shutdown: Option<oneshot::Sender<()>>,
}

impl Target {
    async fn new(args: &Args) -> Result<Target> {
        if args.embedded {
            let (addr, shutdown) = start_embedded()?;
            return Ok(Target {
                addr,
                rss_pid: Some(std::process::id()),
                label: format!("embedded broker on {addr} (RSS includes the driver)"),
                embedded: true,
                shutdown: Some(shutdown),
            });
        }
        let addr = timeout(IO_TIMEOUT, tokio::net::lookup_host(args.addr.as_str()))
            .await
            .map_err(|_| format!("resolving {} timed out", args.addr))??
            .next()
            .ok_or_else(|| format!("{} resolves to no address", args.addr))?;
        let label = match args.broker_pid {
            Some(pid) => format!("broker process {pid} at {addr}"),
            None => format!("broker at {addr}"),
        };
        Ok(Target {
            addr,
            rss_pid: args.broker_pid,
            label,
            embedded: false,
            shutdown: None,
        })
    }

    fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

/// Starts the reference broker on its own runtime and thread, on 127.0.0.1:0.
fn start_embedded() -> Result<(SocketAddr, oneshot::Sender<()>)> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let (tx, rx) = oneshot::channel::<()>();
    std::thread::Builder::new()
        .name("embedded-broker".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("broker")
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    eprintln!("embedded broker: cannot start its runtime: {e}");
                    return;
                }
            };
            runtime.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(listener) => listener,
                    Err(e) => {
                        eprintln!("embedded broker: {e}");
                        return;
                    }
                };
                let config = reference_broker::Config::default();
                if let Err(e) = reference_broker::run(listener, config, async move {
                    let _ = rx.await;
                })
                .await
                {
                    eprintln!("embedded broker stopped with an error: {e}");
                }
            });
        })?;
    Ok((addr, tx))
}

// ---------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------

/// A topic prefix unique to this run, so no earlier run's cache is replayed.
fn topic_prefix() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("load-{}-{nanos}-", std::process::id())
}

fn subscribe_line(topic: &str) -> Vec<u8> {
    format!("{{\"command\":\"subscribe\",\"topic\":\"{topic}\"}}\n").into_bytes()
}

/// A send line with a `msg` of `size` bytes of `x`.
fn padded_send_line(topic: &str, size: usize, delivery: Delivery) -> Vec<u8> {
    format!(
        "{{\"command\":\"send\",\"topic\":\"{topic}\",\"msg\":\"{}\",\"delivery\":\"{}\"}}\n",
        "x".repeat(size),
        delivery.as_str()
    )
    .into_bytes()
}

async fn connect(addr: SocketAddr) -> Result<TcpStream> {
    let stream = timeout(IO_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| format!("connecting to {addr} timed out"))?
        .map_err(|e| format!("connecting to {addr}: {e}"))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Writes one request and reads exactly one reply line (byte by byte, so nothing that
/// follows the reply is consumed). Returns the reply without `\r\n`.
async fn request(stream: &mut TcpStream, line: &[u8]) -> Result<Vec<u8>> {
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

async fn subscribe(stream: &mut TcpStream, topic: &str) -> Result<()> {
    let reply = request(stream, &subscribe_line(topic)).await?;
    if reply != SUCCESS {
        return Err(format!("subscribe {topic}: {}", String::from_utf8_lossy(&reply)).into());
    }
    Ok(())
}

/// Broker counters from `{"command":"stats"}` (an extension of the reference broker).
#[derive(Debug, Clone, Copy, Default)]
struct BrokerStats {
    connections: u64,
    slow_consumer_disconnects: u64,
}

async fn broker_stats(control: &mut TcpStream) -> Result<BrokerStats> {
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

/// Resident set size of a process in KiB, from `/proc/<pid>/status`.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
}

fn fmt_rss(kib: Option<u64>) -> String {
    match kib {
        Some(kib) => format!("{:.1} MiB", kib as f64 / 1024.0),
        None => "n/a (pass --broker-pid or --embedded)".to_string(),
    }
}

/// Raises the open-files soft limit to the hard limit; returns the soft limit in force.
fn raise_nofile_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes into the struct we pass, which lives on our stack.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return 1024;
    }
    let wanted = if limit.rlim_max == libc::RLIM_INFINITY {
        1 << 20
    } else {
        limit.rlim_max
    };
    if limit.rlim_cur < wanted {
        let raised = libc::rlimit {
            rlim_cur: wanted,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads the struct we pass; raising the soft limit up to the hard
        // limit needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return wanted;
        }
    }
    limit.rlim_cur
}

/// Asks for 1 ns timer slack on the calling thread so that `thread::sleep` wakes close to
/// the requested time (the default slack is 50 µs).
fn fine_timer_slack() {
    // SAFETY: PR_SET_TIMERSLACK takes one unsigned long and only affects this thread.
    let _ = unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };
}

/// Waits for due times with `thread::sleep` woken early by the lateness it has learnt
/// (an average of how late past sleeps woke: tens of µs in a VM), then spins to the exact
/// time, so the send delay measures the broker's backpressure rather than timer wake-ups.
struct Pacer {
    lateness_ns: u64,
}

impl Pacer {
    fn new() -> Pacer {
        fine_timer_slack();
        Pacer { lateness_ns: 0 }
    }

    fn wait_until(&mut self, schedule: &Schedule, due: u64) {
        let now = schedule.now_ns();
        let ahead = self.lateness_ns + SPIN_MARGIN_NS;
        if due > now + ahead {
            let target = due - ahead;
            std::thread::sleep(Duration::from_nanos(target - now));
            let late = schedule
                .now_ns()
                .saturating_sub(target)
                .min(MAX_SLEEP_LATENESS_NS);
            self.lateness_ns = (self.lateness_ns * 7 + late) / 8;
        } else {
            // Too close to sleep: forget a little, so that a few very late wake-ups cannot
            // keep the pacer spinning from then on.
            self.lateness_ns -= self.lateness_ns / 16;
        }
        while schedule.now_ns() < due {
            std::hint::spin_loop();
        }
    }
}

/// `1234567` -> `1,234,567`.
fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn per_second(count: u64, elapsed: Duration) -> u64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 {
        (count as f64 / secs).round() as u64
    } else {
        0
    }
}

fn new_histogram() -> Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, HIST_MAX_NS, 3)?)
}

/// Records `value` (ns), clamping to the histogram's range; returns whether it clamped.
fn record(histogram: &mut Histogram<u64>, value: u64) -> bool {
    histogram.saturating_record(value);
    value > histogram.high()
}

fn us(ns: u64) -> String {
    format!("{:.1}", ns as f64 / 1000.0)
}

fn percentiles(histogram: &Histogram<u64>) -> String {
    if histogram.is_empty() {
        return "no samples".to_string();
    }
    format!(
        "p50 {:>9}  p90 {:>9}  p99 {:>9}  p99.9 {:>9}  max {:>9} µs  (n={})",
        us(histogram.value_at_quantile(0.50)),
        us(histogram.value_at_quantile(0.90)),
        us(histogram.value_at_quantile(0.99)),
        us(histogram.value_at_quantile(0.999)),
        us(histogram.max()),
        group(histogram.len()),
    )
}

/// Splits the newly read bytes `buf[filled - n..filled]` into complete lines (without
/// `\n`), calls `each` for every line, keeps the incomplete rest at the front of `buf`
/// and returns the new fill level.
fn split_lines(buf: &mut [u8], filled: usize, n: usize, mut each: impl FnMut(&[u8])) -> usize {
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

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

// ---------------------------------------------------------------------------------------
// Throughput and stalled modes
// ---------------------------------------------------------------------------------------

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
struct PublisherState {
    /// Replies received (each releases one in-flight slot).
    replies: AtomicU64,
    /// Replies other than `{"success":true}`.
    failed: AtomicU64,
    /// Signalled by the reader after each batch of replies.
    progress: Notify,
    /// Set when the writer is done, so the reader stops waiting.
    done: AtomicBool,
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

async fn throughput(args: &Args, target: &Target, stalled_mode: bool) -> Result<bool> {
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

// ---------------------------------------------------------------------------------------
// Latency mode (open loop: paced publisher threads, one poll(2) receiver thread)
// ---------------------------------------------------------------------------------------

/// When each message of one publisher is due: `start + offset + i * interval`, in ns
/// since `base`.
#[derive(Clone, Copy)]
struct Schedule {
    base: Instant,
    start_ns: u64,
    offset_ns: f64,
    interval_ns: f64,
}

impl Schedule {
    fn now_ns(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }

    fn intended(&self, i: u64) -> u64 {
        self.start_ns + (self.offset_ns + i as f64 * self.interval_ns) as u64
    }
}

/// The measured window, in ns since the run's base instant: `[from, to)`.
#[derive(Clone, Copy)]
struct Window {
    from: u64,
    to: u64,
}

impl Window {
    fn contains(&self, ns: u64) -> bool {
        (self.from..self.to).contains(&ns)
    }
}

fn std_connect(addr: SocketAddr) -> Result<std::net::TcpStream> {
    let stream = std::net::TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(stream)
}

fn std_subscribe(stream: &mut std::net::TcpStream, topic: &str) -> Result<()> {
    stream.write_all(&subscribe_line(topic))?;
    let mut reply = Vec::new();
    let mut byte = [0u8; 1];
    while reply.last() != Some(&b'\n') {
        if stream.read(&mut byte)? == 0 {
            return Err("the broker closed the connection".into());
        }
        reply.push(byte[0]);
        if reply.len() > MAX_REPLY_BYTES {
            return Err("reply line too long".into());
        }
    }
    if strip_cr(&reply[..reply.len() - 1]) != SUCCESS {
        return Err(format!("subscribe {topic}: {}", String::from_utf8_lossy(&reply)).into());
    }
    Ok(())
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

struct PacedOutcome {
    sent: u64,
    send_delay: Histogram<u64>,
}

/// Sends `count` messages on `schedule`; each `msg` is `<intended ns>:<actual ns>:` padded
/// to `size` bytes.
fn paced_publisher(
    mut stream: std::net::TcpStream,
    schedule: Schedule,
    window: Window,
    count: u64,
    topic: &str,
    args: &Args,
) -> Result<PacedOutcome> {
    let mut pacer = Pacer::new();
    let mut send_delay = new_histogram()?;
    let pad = args.size.saturating_sub(42);
    let mut buf = Vec::new();
    let mut i = 0;
    while i < count {
        let due = schedule.intended(i);
        pacer.wait_until(&schedule, due);
        let now = schedule.now_ns();
        buf.clear();
        let mut batch = 0;
        while i < count && batch < MAX_PACED_BATCH {
            let intended = schedule.intended(i);
            if intended > now {
                break;
            }
            write!(
                buf,
                "{{\"command\":\"send\",\"topic\":\"{topic}\",\"msg\":\"{intended:020}:{now:020}:"
            )?;
            buf.resize(buf.len() + pad, b'x');
            writeln!(buf, "\",\"delivery\":\"{}\"}}", args.delivery.as_str())?;
            if window.contains(intended) {
                record(&mut send_delay, now - intended);
            }
            i += 1;
            batch += 1;
        }
        stream.write_all(&buf)?;
    }
    Ok(PacedOutcome {
        sent: i,
        send_delay,
    })
}

/// One socket the receiver thread reads.
struct Inbound {
    stream: std::net::TcpStream,
    source: Source,
    buf: Vec<u8>,
    filled: usize,
}

#[derive(Clone, Copy)]
enum Source {
    /// Subscriber `j`: pushes whose `msg` starts with the two timestamps.
    Pushes(usize),
    /// Publisher `p`: reply k answers message k, due at `schedules[p].intended(k)`, so
    /// publish-ack latency needs no shared state.
    Replies(usize),
}

/// What the receiver thread measured.
struct Received {
    end_to_end: Histogram<u64>,
    uncorrected: Histogram<u64>,
    ack_latency: Histogram<u64>,
    clamped: u64,
    unparsable: u64,
    failed_replies: u64,
}

/// Reads every subscriber and every publisher's replies on one thread, waiting in
/// `poll(2)`: a push and its publisher's reply that arrive together cost one wake-up, and
/// the driver keeps to P + 1 threads however many sockets there are.
fn receiver(
    mut sockets: Vec<Inbound>,
    schedules: &[Schedule],
    window: Window,
    received: &[AtomicU64],
    answered: &[AtomicU64],
    stop: &AtomicBool,
) -> Result<Received> {
    use std::os::fd::AsRawFd as _;
    let finder = memmem::Finder::new(b"\"msg\":\"");
    let mut out = Received {
        end_to_end: new_histogram()?,
        uncorrected: new_histogram()?,
        ack_latency: new_histogram()?,
        clamped: 0,
        unparsable: 0,
        failed_replies: 0,
    };
    let mut replies_seen = vec![0u64; answered.len()];
    let mut fds: Vec<libc::pollfd> = sockets
        .iter()
        .map(|s| libc::pollfd {
            fd: s.stream.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    while !stop.load(Ordering::Acquire) {
        // SAFETY: `fds` is an exclusively borrowed array of `fds.len()` initialised pollfd
        // structs whose descriptors stay open (owned by `sockets`) during the call.
        let ready = unsafe {
            libc::poll(
                fds.as_mut_ptr(),
                fds.len() as libc::nfds_t,
                POLL_INTERVAL.as_millis() as libc::c_int,
            )
        };
        if ready < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e.into());
        }
        for (fd, socket) in fds.iter_mut().zip(&mut sockets) {
            if fd.revents == 0 {
                continue;
            }
            fd.revents = 0;
            if socket.filled == socket.buf.len() {
                return Err("a line longer than the read buffer".into());
            }
            // Readable (or hung up): this read returns at once.
            let n = match socket.stream.read(&mut socket.buf[socket.filled..]) {
                Ok(0) => return Err("the broker closed a connection".into()),
                Ok(n) => n,
                Err(e) if is_timeout(&e) => continue,
                Err(e) => return Err(e.into()),
            };
            let now = schedules[0].now_ns();
            socket.filled += n;
            match socket.source {
                Source::Pushes(j) => {
                    let mut lines = 0;
                    socket.filled = split_lines(&mut socket.buf, socket.filled, n, |line| {
                        lines += 1;
                        let stamps = finder.find(line).and_then(|at| {
                            let msg = line.get(at + 7..at + 7 + 41)?;
                            Some((parse_stamp(&msg[..20])?, parse_stamp(&msg[21..41])?))
                        });
                        let Some((intended, actual)) = stamps else {
                            out.unparsable += 1;
                            return;
                        };
                        if window.contains(intended) {
                            let latency = now.saturating_sub(intended);
                            out.clamped += u64::from(record(&mut out.end_to_end, latency));
                            record(&mut out.uncorrected, now.saturating_sub(actual));
                        }
                    });
                    received[j].fetch_add(lines, Ordering::Release);
                }
                Source::Replies(p) => {
                    let seen = &mut replies_seen[p];
                    let before = *seen;
                    socket.filled = split_lines(&mut socket.buf, socket.filled, n, |line| {
                        if strip_cr(line) != SUCCESS {
                            out.failed_replies += 1;
                        }
                        let intended = schedules[p].intended(*seen);
                        if window.contains(intended) {
                            record(&mut out.ack_latency, now.saturating_sub(intended));
                        }
                        *seen += 1;
                    });
                    answered[p].fetch_add(*seen - before, Ordering::Release);
                }
            }
        }
    }
    Ok(out)
}

/// Parses exactly 20 ASCII digits.
fn parse_stamp(digits: &[u8]) -> Option<u64> {
    if digits.len() != 20 {
        return None;
    }
    digits.iter().try_fold(0u64, |acc, &d| {
        d.is_ascii_digit().then_some(())?;
        acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

fn latency(args: &Args, addr: SocketAddr, label: &str) -> Result<bool> {
    if args.publishers == 0 || args.topics == 0 || args.subscribers == 0 || args.rate == 0 {
        return Err("--publishers, --subscribers, --topics and --rate must be at least 1".into());
    }
    let prefix = topic_prefix();
    let topics: Vec<String> = (0..args.topics).map(|t| format!("{prefix}{t}")).collect();
    let mut sockets = Vec::new();
    for j in 0..args.subscribers {
        let mut stream = std_connect(addr)?;
        std_subscribe(&mut stream, &topics[j % args.topics])?;
        sockets.push(Inbound {
            stream,
            source: Source::Pushes(j),
            buf: vec![0u8; READ_BUF_BYTES],
            filled: 0,
        });
    }
    let mut publishers = Vec::new();
    for p in 0..args.publishers {
        let stream = std_connect(addr)?;
        sockets.push(Inbound {
            stream: stream.try_clone()?,
            source: Source::Replies(p),
            buf: vec![0u8; ACK_BUF_BYTES],
            filled: 0,
        });
        publishers.push(stream);
    }

    let base = Instant::now();
    let start_ns = 200_000_000; // time for every thread to start before the first message
    let warmup_ns = args.warmup.as_nanos() as u64;
    let duration_ns = args.duration.as_nanos() as u64;
    let window = Window {
        from: start_ns + warmup_ns,
        to: start_ns + warmup_ns + duration_ns,
    };
    let rate = args.rate as f64;
    let interval_ns = 1e9 * args.publishers as f64 / rate;
    let per_publisher = ((warmup_ns + duration_ns) as f64 / interval_ns).floor() as u64;
    // Publisher p is shifted by p/rate, so together they send evenly spaced messages.
    let schedules: Vec<Schedule> = (0..args.publishers)
        .map(|p| Schedule {
            base,
            start_ns,
            offset_ns: 1e9 * p as f64 / rate,
            interval_ns,
        })
        .collect();
    let stop = AtomicBool::new(false);
    let received: Vec<AtomicU64> = (0..args.subscribers).map(|_| AtomicU64::new(0)).collect();
    let answered: Vec<AtomicU64> = (0..args.publishers).map(|_| AtomicU64::new(0)).collect();

    let (paced, measured) = std::thread::scope(|scope| -> Result<_> {
        let (schedules, received, answered, stop) = (&schedules, &received, &answered, &stop);
        let receiver =
            scope.spawn(move || receiver(sockets, schedules, window, received, answered, stop));
        let publisher_threads: Vec<_> = publishers
            .into_iter()
            .enumerate()
            .map(|(p, stream)| {
                let topic = topics[p % args.topics].as_str();
                scope.spawn(move || {
                    paced_publisher(stream, schedules[p], window, per_publisher, topic, args)
                })
            })
            .collect();
        let mut paced = Vec::new();
        for thread in publisher_threads {
            match thread.join() {
                Ok(outcome) => paced.push(outcome),
                Err(_) => paced.push(Err("a publisher thread panicked".into())),
            }
        }
        // Deliveries expected per topic, from what was actually sent.
        let mut expected_on_topic = vec![0u64; args.topics];
        let mut subscribers_on_topic = vec![0u64; args.topics];
        for j in 0..args.subscribers {
            subscribers_on_topic[j % args.topics] += 1;
        }
        for (p, outcome) in paced.iter().enumerate() {
            let sent = outcome.as_ref().map(|o| o.sent).unwrap_or(0);
            let subs = subscribers_on_topic[p % args.topics];
            expected_on_topic[p % args.topics] += match args.delivery {
                Delivery::All => sent * subs,
                Delivery::One if subs > 0 => sent,
                Delivery::One => 0,
            };
        }
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        loop {
            let mut got_on_topic = vec![0u64; args.topics];
            for (j, r) in received.iter().enumerate() {
                got_on_topic[j % args.topics] += r.load(Ordering::Acquire);
            }
            let delivered = got_on_topic
                .iter()
                .zip(&expected_on_topic)
                .all(|(got, expected)| got >= expected);
            let all_answered = paced
                .iter()
                .zip(answered.iter())
                .all(|(o, a)| a.load(Ordering::Acquire) >= o.as_ref().map(|o| o.sent).unwrap_or(0));
            if (delivered && all_answered) || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        stop.store(true, Ordering::Release);
        let measured = receiver
            .join()
            .map_err(|_| "the receiver thread panicked")??;
        let paced = paced.into_iter().collect::<Result<Vec<_>>>()?;
        Ok((paced, (measured, expected_on_topic.iter().sum::<u64>())))
    })?;
    let (measured, expected) = measured;

    let mut send_delay = new_histogram()?;
    for o in &paced {
        send_delay.add(&o.send_delay)?;
    }
    let sent: u64 = paced.iter().map(|o| o.sent).sum();
    let replies: u64 = answered.iter().map(|a| a.load(Ordering::Acquire)).sum();
    let received_total: u64 = received.iter().map(|r| r.load(Ordering::Acquire)).sum();
    let lost = expected.saturating_sub(received_total);

    println!("== load latency ==");
    println!("broker            {label}");
    println!(
        "workload          open loop {} msgs/s over {} publisher(s), {} subscriber(s), {} topic(s), delivery {}, msg {} B",
        group(args.rate),
        args.publishers,
        args.subscribers,
        args.topics,
        args.delivery.as_str(),
        args.size.max(42)
    );
    println!(
        "warm-up/measured  {:?} / {:?} (by intended send time)",
        args.warmup, args.duration
    );
    println!(
        "messages          {} sent, {} answered ({} failed), {} deliveries expected, {} received, {} lost, {} unparsable",
        group(sent),
        group(replies),
        group(measured.failed_replies),
        group(expected),
        group(received_total),
        group(lost),
        group(measured.unparsable)
    );
    println!("end-to-end        {}", percentiles(&measured.end_to_end));
    println!("  uncorrected     {}", percentiles(&measured.uncorrected));
    println!("  send delay      {}", percentiles(&send_delay));
    println!("publish ack       {}", percentiles(&measured.ack_latency));
    if measured.clamped > 0 {
        println!(
            "clamped           {} end-to-end samples above {} s",
            measured.clamped,
            HIST_MAX_NS / 1_000_000_000
        );
    }
    Ok(lost == 0 && measured.failed_replies == 0 && measured.unparsable == 0 && replies == sent)
}

// ---------------------------------------------------------------------------------------
// Idle connections
// ---------------------------------------------------------------------------------------

async fn idle(args: &Args, target: &Target, fd_limit: u64) -> Result<bool> {
    let fds_per_connection = if target.embedded { 2 } else { 1 };
    let allowed = fd_limit.saturating_sub(FD_RESERVE) / fds_per_connection;
    let count = args.connections.min(allowed);
    if count < args.connections {
        println!(
            "note: the open-files limit ({fd_limit}) allows {count} connections, not {}",
            args.connections
        );
    }
    let rss_before = target.rss_pid.and_then(rss_kib);
    let prefix = topic_prefix();
    let started = Instant::now();
    let addr = target.addr;
    let opened: Vec<Result<TcpStream>> = futures::stream::iter(0..count)
        .map(|i| {
            let topic = format!("{prefix}{i}");
            async move {
                let mut stream = connect(addr).await?;
                subscribe(&mut stream, &topic).await?;
                Ok(stream)
            }
        })
        .buffer_unordered(CONNECT_CONCURRENCY)
        .collect()
        .await;
    let setup = started.elapsed();
    let mut connections = Vec::with_capacity(opened.len());
    let mut errors: HashMap<String, u64> = HashMap::new();
    for result in opened {
        match result {
            Ok(stream) => connections.push(stream),
            Err(e) => *errors.entry(e.to_string()).or_default() += 1,
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_after = target.rss_pid.and_then(rss_kib);
    let stats = match connect(addr).await {
        Ok(mut control) => broker_stats(&mut control).await.ok(),
        Err(_) => None,
    };
    let open = connections.len() as u64;

    println!("== load idle ==");
    println!("broker            {}", target.label);
    println!(
        "connections       {} open and subscribed (each to its own topic) in {:.2} s; {} failed",
        group(open),
        setup.as_secs_f64(),
        group(errors.values().sum())
    );
    if let Some(stats) = stats {
        println!(
            "broker stats      connections {} (includes this stats connection)",
            group(stats.connections)
        );
    }
    println!(
        "broker RSS        before {}  after {}",
        fmt_rss(rss_before),
        fmt_rss(rss_after)
    );
    if let (Some(before), Some(after)) = (rss_before, rss_after) {
        let grown = after.saturating_sub(before);
        println!(
            "per connection    {:.2} KiB  (growth {:.1} MiB over {} connections; total RSS {:.1} MiB)",
            if open > 0 {
                grown as f64 / open as f64
            } else {
                0.0
            },
            grown as f64 / 1024.0,
            group(open),
            after as f64 / 1024.0
        );
    }
    for (e, n) in &errors {
        println!("error             {n} x {e}");
    }
    drop(connections);
    Ok(errors.is_empty())
}

// ---------------------------------------------------------------------------------------
// Echo integrity
// ---------------------------------------------------------------------------------------

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

async fn echo_integrity(args: &Args, target: &Target) -> Result<bool> {
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
