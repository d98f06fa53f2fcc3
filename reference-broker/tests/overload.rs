//! Overload tests of the reference broker over real TCP: garbage input, over-long lines,
//! slow consumers, many connections, the connection limit and SIGTERM on the binary.
//!
//! Every read has a timeout; nothing depends on how fast the machine is. The tests run one
//! at a time (see [`SERIAL`]) because one of them measures this process's memory and
//! another needs most of the file descriptors.
#![allow(unsafe_code)] // setrlimit/getrlimit and kill through libc, each call commented.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use futures::StreamExt as _;
use reference_broker::Config;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// Longest any single network operation may take (generous: debug builds on a busy box).
const IO_TIMEOUT: Duration = Duration::from_secs(20);
/// Connections opened at the same time by the many-connections test: below the listen
/// backlog (mio listens with 128), so no SYN is dropped and retried a second later.
const CONNECT_CONCURRENCY: usize = 64;
/// File descriptors kept free for everything but the many-connections test's sockets.
const FD_RESERVE: u64 = 200;

const SUCCESS: &str = r#"{"success":true}"#;
const NOT_UTF8: &str = r#"{"success":false,"reason":"Could not decode input as UTF-8"}"#;
const NOT_JSON: &str = r#"{"success":false,"reason":"Could not parse json"}"#;
const MALFORMED: &str = r#"{"success":false,"reason":"Malformed json message"}"#;
const LINE_TOO_LONG: &str = r#"{"success":false,"reason":"Line too long"}"#;
const SLOW_CONSUMER: &str = r#"{"success":false,"reason":"Slow consumer"}"#;

/// Tests of this file run one at a time: the line-limit test reads this process's RSS and
/// the many-connections test uses nearly every file descriptor allowed.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

// ---------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------

/// A broker running in this process on 127.0.0.1:0.
struct Broker {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    server: JoinHandle<std::io::Result<()>>,
}

async fn start(config: Config) -> Broker {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(reference_broker::run(listener, config, async move {
        let _ = stopped.await;
    }));
    Broker { addr, stop, server }
}

impl Broker {
    /// Shuts the broker down and checks that it stopped cleanly (no panic, no error).
    async fn stop(self) {
        let _ = self.stop.send(());
        let result = timeout(IO_TIMEOUT, self.server)
            .await
            .expect("broker did not stop");
        result
            .expect("broker task panicked")
            .expect("broker returned an error");
    }
}

/// A line-oriented test client.
struct Client {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Client {
        let stream = timeout(IO_TIMEOUT, TcpStream::connect(addr))
            .await
            .expect("connect timed out")
            .expect("connect failed");
        Client::from_stream(stream)
    }

    fn from_stream(stream: TcpStream) -> Client {
        stream.set_nodelay(true).unwrap();
        let (reader, writer) = stream.into_split();
        Client {
            reader: BufReader::with_capacity(2048, reader),
            writer,
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        timeout(IO_TIMEOUT, self.writer.write_all(bytes))
            .await
            .expect("write timed out")
            .expect("write failed");
    }

    /// Next line from the broker, without its `\r\n` (which it must have).
    async fn line(&mut self) -> String {
        let mut line = Vec::new();
        let n = timeout(IO_TIMEOUT, self.reader.read_until(b'\n', &mut line))
            .await
            .expect("no line from the broker in time")
            .expect("read failed");
        assert!(n > 0, "the broker closed the connection");
        assert!(
            line.ends_with(b"\r\n"),
            "line without \\r\\n: {:?}",
            String::from_utf8_lossy(&line)
        );
        line.truncate(line.len() - 2);
        String::from_utf8(line).expect("the broker wrote invalid UTF-8")
    }

    async fn request(&mut self, line: &str) -> String {
        self.send(format!("{line}\n").as_bytes()).await;
        self.line().await
    }

    async fn subscribe(&mut self, topic: &str) {
        let reply = self
            .request(&format!(r#"{{"command":"subscribe","topic":"{topic}"}}"#))
            .await;
        assert_eq!(reply, SUCCESS, "subscribe {topic}");
    }

    async fn stats(&mut self) -> serde_json::Value {
        let reply = self.request(r#"{"command":"stats"}"#).await;
        let value: serde_json::Value = serde_json::from_str(&reply).expect("stats reply is JSON");
        assert_eq!(value["success"], true, "{reply}");
        value["stats"].clone()
    }

    /// Reads until the broker closes the connection (EOF or reset); returns what came.
    async fn read_to_close(&mut self) -> Vec<u8> {
        let mut all = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match timeout(IO_TIMEOUT, self.reader.read(&mut buf)).await {
                Err(_) => panic!(
                    "the broker did not close the connection ({} bytes read)",
                    all.len()
                ),
                Ok(Ok(0)) | Ok(Err(_)) => return all,
                Ok(Ok(n)) => all.extend_from_slice(&buf[..n]),
            }
        }
    }
}

fn send_line(topic: &str, msg: &str) -> String {
    format!(r#"{{"command":"send","topic":"{topic}","msg":"{msg}","delivery":"all"}}"#) + "\n"
}

/// `msg` of a pushed line, parsed with serde_json (tests only).
fn pushed(line: &str) -> serde_json::Value {
    let value: serde_json::Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(value["command"], "send", "not a push: {line}");
    value
}

/// Raises the open-files soft limit to the hard limit and returns the soft limit.
fn raise_nofile_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    assert_eq!(
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
        0
    );
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

/// This process's resident set size in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

// ---------------------------------------------------------------------------------------
// Garbage input
// ---------------------------------------------------------------------------------------

/// What the broker must answer to one line.
#[derive(Debug)]
enum Expect {
    /// Nothing: the line is empty once a trailing `\r` is removed.
    Nothing,
    /// Exactly this reply.
    Reply(&'static str),
    /// One reply of the `{"success":...}` family; the protocol leaves the choice open
    /// (lone surrogates, huge numbers, a byte-order mark).
    AnyReply,
}

/// The reply the protocol prescribes for a line that is not a valid command object.
fn oracle(line: &[u8]) -> Expect {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.is_empty() {
        return Expect::Nothing;
    }
    let Ok(text) = std::str::from_utf8(line) else {
        return Expect::Reply(NOT_UTF8);
    };
    match serde_json::from_str::<serde_json::Value>(text) {
        Err(_) => Expect::Reply(NOT_JSON),
        Ok(value) if !value.is_object() => Expect::Reply(MALFORMED),
        Ok(_) => Expect::AnyReply,
    }
}

/// A length up to 64 KiB, mostly short.
fn garbage_len(rng: &mut fastrand::Rng) -> usize {
    match rng.u8(0..4) {
        0 => rng.usize(0..16),
        1 => rng.usize(0..256),
        2 => rng.usize(0..4096),
        _ => rng.usize(0..=64 * 1024),
    }
}

fn random_bytes(rng: &mut fastrand::Rng) -> Vec<u8> {
    (0..garbage_len(rng))
        .map(|_| rng.u8(..))
        .map(|b| if b == b'\n' { b' ' } else { b })
        .collect()
}

fn random_text(rng: &mut fastrand::Rng) -> Vec<u8> {
    let len = garbage_len(rng);
    let mut text = String::with_capacity(len);
    while text.len() < len {
        let c = match rng.u8(0..4) {
            0 => rng.char(' '..='~'),
            1 => rng.char('\u{0}'..='\u{1f}'),
            2 => rng.char('\u{80}'..='\u{ffff}'),
            _ => rng.char('\u{10000}'..='\u{10ffff}'),
        };
        if c != '\n' {
            text.push(c);
        }
    }
    text.into_bytes()
}

/// Pieces of JSON glued at random: mostly near-misses of real commands.
fn token_soup(rng: &mut fastrand::Rng) -> Vec<u8> {
    const TOKENS: &[&str] = &[
        "{",
        "}",
        "[",
        "]",
        ":",
        ",",
        "\"command\"",
        "\"subscribe\"",
        "\"unsubscribe\"",
        "\"send\"",
        "\"topic\"",
        "\"msg\"",
        "\"delivery\"",
        "\"all\"",
        "\"one\"",
        "\"last_seen\"",
        "\"cache\"",
        "\"ack\"",
        "\"index\"",
        "\"stats\"",
        "true",
        "false",
        "null",
        "-1",
        "0",
        "1.5",
        "12345678901234567890",
        "\"\\u00e9\"",
        " ",
        "\t",
        "\r",
        "\"",
        "\\",
        "\"x\"",
        "\"quit\"",
    ];
    let len = garbage_len(rng);
    let mut soup = String::new();
    while soup.len() < len {
        soup.push_str(TOKENS[rng.usize(..TOKENS.len())]);
    }
    soup.into_bytes()
}

/// Writes `line` + `\n` in 1 to 3 pieces, so lines also arrive split across reads.
async fn send_in_pieces(client: &mut Client, rng: &mut fastrand::Rng, line: &[u8]) {
    let mut rest = line;
    for _ in 0..rng.usize(0..3) {
        let cut = rng.usize(0..=rest.len());
        client.send(&rest[..cut]).await;
        tokio::task::yield_now().await;
        rest = &rest[cut..];
    }
    let mut last = rest.to_vec();
    last.push(b'\n');
    client.send(&last).await;
}

/// Checks the answer to a garbage line, then that the connection still works: a subscribe
/// must be answered by the very next line.
async fn check_answer(client: &mut Client, line: &[u8], expect: &Expect, what: &str) {
    let shown = String::from_utf8_lossy(&line[..line.len().min(80)]).into_owned();
    match expect {
        Expect::Nothing => {}
        Expect::Reply(reply) => {
            let got = client.line().await;
            assert_eq!(
                &got,
                reply,
                "{what}: {} bytes starting {shown:?}",
                line.len()
            );
        }
        Expect::AnyReply => {
            let got = client.line().await;
            assert!(
                got.starts_with(r#"{"success":"#),
                "{what}: {shown:?} -> {got}"
            );
        }
    }
    let probe = client
        .request(r#"{"command":"subscribe","topic":"probe"}"#)
        .await;
    assert_eq!(
        probe, SUCCESS,
        "{what}: after {shown:?} the connection answered the probe with {probe}"
    );
}

fn seed() -> u64 {
    let seed = std::env::var("OVERLOAD_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("garbage seed {seed} (set OVERLOAD_SEED={seed} to repeat)");
    seed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_garbage_lines_get_one_error_and_leave_the_connection_usable() {
    let _serial = SERIAL.lock().await;
    let broker = start(Config::default()).await;
    let mut client = Client::connect(broker.addr).await;
    let mut rng = fastrand::Rng::with_seed(seed());
    let mut cases = 0;
    while cases < 300 {
        let line = match cases % 3 {
            0 => random_bytes(&mut rng),
            1 => random_text(&mut rng),
            _ => token_soup(&mut rng),
        };
        let expect = oracle(&line);
        // `quit` would (rightly) close the connection; JSON objects could be valid commands.
        if line.strip_suffix(b"\r").unwrap_or(&line) == b"quit"
            || matches!(expect, Expect::AnyReply)
        {
            continue;
        }
        send_in_pieces(&mut client, &mut rng, &line).await;
        check_answer(&mut client, &line, &expect, &format!("case {cases}")).await;
        cases += 1;
    }

    // Hand-picked lines where parsers often crash, recurse or disagree.
    let nested_arrays = "[".repeat(60_000);
    let nested_objects = r#"{"a":"#.repeat(10_000);
    let unterminated = format!("\"{}", "a".repeat(60_000));
    let fixed: Vec<(Vec<u8>, Expect)> = vec![
        (nested_arrays.into_bytes(), Expect::Reply(NOT_JSON)),
        (nested_objects.into_bytes(), Expect::Reply(NOT_JSON)),
        (unterminated.into_bytes(), Expect::Reply(NOT_JSON)),
        (b"\xC0\xAF".to_vec(), Expect::Reply(NOT_UTF8)),
        (b"\xED\xA0\x80".to_vec(), Expect::Reply(NOT_UTF8)),
        (
            b"{\"command\":\"subscribe\",\"topic\":\"\xFF\"}".to_vec(),
            Expect::Reply(NOT_UTF8),
        ),
        (b"\0".to_vec(), Expect::Reply(NOT_JSON)),
        (b" ".to_vec(), Expect::Reply(NOT_JSON)),
        (b"\r\r".to_vec(), Expect::Reply(NOT_JSON)),
        (b"\r".to_vec(), Expect::Nothing),
        (b"quit ".to_vec(), Expect::Reply(NOT_JSON)),
        (b"QUIT".to_vec(), Expect::Reply(NOT_JSON)),
        (b"\"quit\"".to_vec(), Expect::Reply(MALFORMED)),
        (b"{}".to_vec(), Expect::Reply(MALFORMED)),
        (b"[]".to_vec(), Expect::Reply(MALFORMED)),
        (b"42".to_vec(), Expect::Reply(MALFORMED)),
        (br#"{"command":null}"#.to_vec(), Expect::Reply(MALFORMED)),
        (
            br#"{"command":"publish","topic":"t"}"#.to_vec(),
            Expect::Reply(MALFORMED),
        ),
        (
            br#"{"command":"subscribe","topic":"t","topic":"u"}"#.to_vec(),
            Expect::Reply(MALFORMED),
        ),
        (
            br#"{"command":"subscribe","topic":"t","last_seen":1.0}"#.to_vec(),
            Expect::Reply(MALFORMED),
        ),
        (
            br#"{"command":"subscribe","topic":7}"#.to_vec(),
            Expect::Reply(MALFORMED),
        ),
        (
            br#"{"command":"send","topic":"t","msg":"x","delivery":"some"}"#.to_vec(),
            Expect::Reply(MALFORMED),
        ),
        (
            br#"{"command":"send","topic":"t","msg":"x","delivery":"all","index":5}"#.to_vec(),
            Expect::Reply(MALFORMED),
        ),
        (
            br#"{"command":"send","topic":"t","msg":"\ud800","delivery":"all"}"#.to_vec(),
            Expect::AnyReply,
        ),
        (
            br#"{"command":"subscribe","topic":"t","last_seen":1e999}"#.to_vec(),
            Expect::AnyReply,
        ),
        (
            br#"{"command":"subscribe","topic":"t","last_seen":99999999999999999999999}"#.to_vec(),
            Expect::AnyReply,
        ),
        (
            b"\xEF\xBB\xBF{\"command\":\"stats\"}".to_vec(),
            Expect::AnyReply,
        ),
    ];
    for (i, (line, expect)) in fixed.iter().enumerate() {
        send_in_pieces(&mut client, &mut rng, line).await;
        check_answer(&mut client, line, expect, &format!("fixed case {i}")).await;
    }

    // The broker still takes new connections.
    let mut fresh = Client::connect(broker.addr).await;
    fresh.subscribe("fresh").await;
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_in_many_writes_without_newline_gets_exactly_one_error() {
    let _serial = SERIAL.lock().await;
    let broker = start(Config::default()).await;
    let mut client = Client::connect(broker.addr).await;
    let mut rng = fastrand::Rng::with_seed(seed());
    for case in 0..60 {
        let mut line = Vec::new();
        for _ in 0..rng.usize(2..=8) {
            let mut piece = if rng.bool() {
                random_bytes(&mut rng)
            } else {
                random_text(&mut rng)
            };
            piece.truncate(8 * 1024);
            line.extend_from_slice(&piece);
            client.send(&piece).await;
            // Let the broker read this piece on its own before the next one.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let expect = oracle(&line);
        if line.strip_suffix(b"\r").unwrap_or(&line) == b"quit"
            || matches!(expect, Expect::AnyReply)
        {
            // Practically impossible with random pieces, but a valid command would not be
            // answered with an error: finish the line and skip the case.
            client.send(b"\n").await;
            let _ = client.line().await;
            let probe = client
                .request(r#"{"command":"subscribe","topic":"probe"}"#)
                .await;
            assert_eq!(probe, SUCCESS);
            continue;
        }
        client.send(b"\n").await;
        check_answer(&mut client, &line, &expect, &format!("chunked case {case}")).await;
    }

    // A valid command whose multi-byte characters are split across writes at every byte.
    let valid = r#"{"command":"subscribe","topic":"é€😀"}"#.as_bytes();
    for cut in 1..valid.len() {
        client.send(&valid[..cut]).await;
        tokio::time::sleep(Duration::from_millis(1)).await;
        client.send(&valid[cut..]).await;
        client.send(b"\n").await;
        assert_eq!(client.line().await, SUCCESS, "split at byte {cut}");
    }
    broker.stop().await;
}

// ---------------------------------------------------------------------------------------
// Line limit
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_64_mib_line_is_refused_without_being_buffered() {
    let _serial = SERIAL.lock().await;
    let config = Config::default();
    let limit = config.max_line_bytes;
    assert_eq!(
        limit,
        1024 * 1024,
        "this test assumes the default 1 MiB line limit"
    );
    let broker = start(config).await;
    let mut client = Client::connect(broker.addr).await;
    client.subscribe("before").await;

    // At the limit a line is still read (and here is not JSON); one byte over, it is not.
    let mut at_limit = vec![b'a'; limit];
    at_limit.push(b'\n');
    client.send(&at_limit).await;
    assert_eq!(
        client.line().await,
        NOT_JSON,
        "a line of exactly max_line_bytes"
    );
    let mut over_limit = vec![b'a'; limit + 1];
    over_limit.push(b'\n');
    client.send(&over_limit).await;
    assert_eq!(
        client.line().await,
        LINE_TOO_LONG,
        "a line of max_line_bytes + 1"
    );
    drop((at_limit, over_limit));

    let rss_before = rss_kib();
    let chunk = vec![b'x'; 1024 * 1024];
    for _ in 0..64 {
        client.send(&chunk).await;
    }
    client.send(b"\n").await;
    assert_eq!(client.line().await, LINE_TOO_LONG);
    let rss_after = rss_kib();
    let grown = rss_after.saturating_sub(rss_before);
    eprintln!("RSS {rss_before} KiB -> {rss_after} KiB after a 64 MiB line");
    assert!(
        grown <= 16 * 1024,
        "RSS grew by {grown} KiB while a 64 MiB line went through"
    );

    // The connection is still usable, and the next line is read from its first byte.
    client.subscribe("after").await;
    let mut publisher = Client::connect(broker.addr).await;
    assert_eq!(
        publisher
            .request(send_line("after", "still here").trim_end())
            .await,
        SUCCESS
    );
    let push = pushed(&client.line().await);
    assert_eq!(push["msg"], "still here");
    broker.stop().await;
}

// ---------------------------------------------------------------------------------------
// Slow consumer
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_never_reads_is_cut_off_and_the_others_get_everything() {
    let _serial = SERIAL.lock().await;
    const QUEUE: usize = 256 * 1024;
    /// Sends per round: the healthy subscriber reads each round before the next one, so
    /// its own queue never holds more than this many pushes (64 KiB, under QUEUE).
    const ROUND: usize = 16;
    /// Give up if this much was sent and the stalled subscriber is still connected.
    const MAX_BYTES: usize = 256 * 1024 * 1024;
    let broker = start(Config {
        outbound_queue_bytes: QUEUE,
        ..Config::default()
    })
    .await;

    // A subscriber with a tiny receive window that never reads.
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = timeout(IO_TIMEOUT, socket.connect(broker.addr))
        .await
        .unwrap()
        .unwrap();
    let mut stalled = Client::from_stream(stream);
    stalled.subscribe("busy").await;

    let mut healthy = Client::connect(broker.addr).await;
    healthy.subscribe("busy").await;
    let mut publisher = Client::connect(broker.addr).await;
    let mut control = Client::connect(broker.addr).await;
    assert_eq!(control.stats().await["slow_consumer_disconnects"], 0);

    let padding = "p".repeat(4000);
    let mut sent = 0usize;
    let mut sent_bytes = 0usize;
    let mut rounds_after_cut = None;
    loop {
        let mut batch = String::new();
        for seq in sent..sent + ROUND {
            batch.push_str(&send_line("busy", &format!("{seq}:{padding}")));
        }
        publisher.send(batch.as_bytes()).await;
        sent_bytes += batch.len();
        for _ in 0..ROUND {
            assert_eq!(publisher.line().await, SUCCESS);
        }
        for seq in sent..sent + ROUND {
            let push = pushed(&healthy.line().await);
            let msg = push["msg"].as_str().unwrap();
            assert_eq!(
                msg.split(':').next(),
                Some(seq.to_string().as_str()),
                "healthy subscriber out of order"
            );
            assert_eq!(push["index"], seq as u64);
        }
        sent += ROUND;
        match rounds_after_cut {
            // Keep publishing a little after the cut: the others must not notice it.
            Some(0) => break,
            Some(n) => rounds_after_cut = Some(n - 1),
            None => {
                if control.stats().await["slow_consumer_disconnects"] == 1 {
                    eprintln!(
                        "stalled subscriber cut off after {sent} messages ({sent_bytes} bytes)"
                    );
                    rounds_after_cut = Some(20);
                }
                assert!(
                    sent_bytes < MAX_BYTES,
                    "the stalled subscriber was never disconnected"
                );
            }
        }
    }
    let stats = control.stats().await;
    assert_eq!(stats["slow_consumer_disconnects"], 1, "{stats}");
    assert_eq!(stats["messages_accepted"], sent as u64, "{stats}");

    // The stalled connection is closed: whatever is left in the socket, then EOF.
    let rest = stalled.read_to_close().await;
    let notice = String::from_utf8_lossy(&rest).contains(SLOW_CONSUMER);
    eprintln!(
        "stalled subscriber: {} bytes left before close, Slow consumer notice: {notice}",
        rest.len()
    );
    // Not asserted: the broker may stop in the middle of a push it was writing when the
    // queue overflowed (the notice is only sent at a line boundary).
    eprintln!(
        "stalled subscriber's last bytes end a line: {}",
        rest.is_empty() || rest.ends_with(b"\r\n")
    );
    broker.stop().await;
}

// ---------------------------------------------------------------------------------------
// Many connections
// ---------------------------------------------------------------------------------------

/// `count` connections, each subscribed to its own topic (its number), each sending 10
/// messages to random other connections: every message must arrive exactly once, at the
/// right connection.
async fn many_connections(count: usize) {
    const PER_CONNECTION: usize = 10;
    let limit = raise_nofile_limit();
    let allowed = (limit.saturating_sub(FD_RESERVE) / 2) as usize; // client + broker side
    let count = if count > allowed {
        eprintln!("open-files limit {limit}: using {allowed} connections instead of {count}");
        allowed
    } else {
        count
    };
    assert!(
        count >= 2,
        "the open-files limit ({limit}) is too low for this test"
    );
    let broker = start(Config::default()).await;
    let addr = broker.addr;
    let started = std::time::Instant::now();

    let clients: Vec<Client> = futures::stream::iter(0..count)
        .map(|i| async move {
            let mut client = Client::connect(addr).await;
            client.subscribe(&i.to_string()).await;
            client
        })
        .buffered(CONNECT_CONCURRENCY)
        .collect()
        .await;
    eprintln!("{count} connections subscribed in {:?}", started.elapsed());

    let mut rng = fastrand::Rng::with_seed(fastrand::u64(..));
    let destinations: Vec<Vec<usize>> = (0..count)
        .map(|i| {
            (0..PER_CONNECTION)
                .map(|_| {
                    let j = rng.usize(..count - 1);
                    if j >= i { j + 1 } else { j }
                })
                .collect()
        })
        .collect();

    // Everyone sends, then reads until its own sends are all answered.
    let tasks: Vec<JoinHandle<(Client, Vec<String>)>> = clients
        .into_iter()
        .enumerate()
        .map(|(i, mut client)| {
            let lines: String = destinations[i]
                .iter()
                .enumerate()
                .map(|(seq, j)| send_line(&j.to_string(), &format!("{i}:{seq}")))
                .collect();
            tokio::spawn(async move {
                client.send(lines.as_bytes()).await;
                let mut pushes = Vec::new();
                let mut answered = 0;
                while answered < PER_CONNECTION {
                    let line = client.line().await;
                    if line == SUCCESS {
                        answered += 1;
                    } else {
                        pushes.push(line);
                    }
                }
                (client, pushes)
            })
        })
        .collect();
    let mut clients = Vec::with_capacity(count);
    let mut received = Vec::with_capacity(count);
    for task in tasks {
        let (client, pushes) = task.await.unwrap();
        clients.push(client);
        received.push(pushes);
    }

    eprintln!(
        "{} sends answered after {:?}",
        count * PER_CONNECTION,
        started.elapsed()
    );
    // Every send has been answered, so every push is queued: a request answered after
    // them flushes out the rest (and any duplicate).
    let tasks: Vec<JoinHandle<Vec<String>>> = clients
        .into_iter()
        .map(|mut client| {
            tokio::spawn(async move {
                client
                    .send(b"{\"command\":\"unsubscribe\",\"topic\":\"none\"}\n")
                    .await;
                let mut pushes = Vec::new();
                loop {
                    let line = client.line().await;
                    if line == SUCCESS {
                        return pushes;
                    }
                    pushes.push(line);
                }
            })
        })
        .collect();
    for (j, task) in tasks.into_iter().enumerate() {
        received[j].extend(task.await.unwrap());
    }

    eprintln!("flushed after {:?}", started.elapsed());
    let mut seen = HashSet::new();
    for (j, pushes) in received.iter().enumerate() {
        for line in pushes {
            let push = pushed(line);
            assert_eq!(
                push["topic"],
                j.to_string(),
                "a push for another topic reached connection {j}: {line}"
            );
            let msg = push["msg"].as_str().unwrap();
            let (sender, seq) = msg.split_once(':').unwrap();
            let (sender, seq): (usize, usize) = (sender.parse().unwrap(), seq.parse().unwrap());
            assert_eq!(
                destinations[sender][seq], j,
                "message {msg} reached the wrong connection {j}"
            );
            assert!(seen.insert((sender, seq)), "message {msg} arrived twice");
        }
    }
    assert_eq!(seen.len(), count * PER_CONNECTION, "messages lost");
    broker.stop().await;
}

/// 10,000 connections (fewer if the open-files hard limit cannot hold 2 × 10,000 + a
/// reserve: the count used is printed). About 3 s in a debug build.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_connections_each_get_exactly_their_messages() {
    let _serial = SERIAL.lock().await;
    many_connections(10_000).await;
}

// ---------------------------------------------------------------------------------------
// Connection limit
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_limit_are_closed_and_the_others_keep_working() {
    let _serial = SERIAL.lock().await;
    let broker = start(Config {
        max_connections: 3,
        ..Config::default()
    })
    .await;
    let mut first = Vec::new();
    for i in 0..3 {
        let mut client = Client::connect(broker.addr).await;
        client.subscribe(&format!("t{i}")).await;
        first.push(client);
    }
    for _ in 0..3 {
        let mut extra = Client::connect(broker.addr).await;
        let rest = extra.read_to_close().await;
        assert!(
            rest.is_empty(),
            "a connection over the limit got {:?}",
            String::from_utf8_lossy(&rest)
        );
    }
    // The first three still work, including delivery between them.
    assert_eq!(
        first[0].request(send_line("t1", "hello").trim_end()).await,
        SUCCESS
    );
    assert_eq!(pushed(&first[1].line().await)["msg"], "hello");
    first[2].subscribe("t2-again").await;
    assert_eq!(first[2].stats().await["connections"], 3);

    // A freed slot is taken again (once the broker has seen the close).
    drop(first.pop());
    let replacement = async {
        loop {
            let mut client = Client::connect(broker.addr).await;
            // A refused connection may already be reset: a failed write is a retry too.
            let subscribe = b"{\"command\":\"subscribe\",\"topic\":\"again\"}\n";
            if client.writer.write_all(subscribe).await.is_err() {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            let mut line = Vec::new();
            if let Ok(n) = client.reader.read_until(b'\n', &mut line).await {
                if n > 0 {
                    return (client, line);
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let (_client, line) = timeout(IO_TIMEOUT, replacement)
        .await
        .expect("the freed slot was never reused");
    assert_eq!(line, b"{\"success\":true}\r\n");
    broker.stop().await;
}

// ---------------------------------------------------------------------------------------
// SIGTERM on the real binary
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_flushes_exits_zero_and_stops_listening() {
    let _serial = SERIAL.lock().await;
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_reference-broker"))
        .args(["--port", &port.to_string()])
        // A short grace, and a queue large enough that the stuck reader below is not cut
        // off as a slow consumer before the signal.
        .args(["--shutdown-grace", "2s", "--outbound-queue", "256MiB"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let listening = async {
        while let Some(line) = stderr.next_line().await.unwrap() {
            if line.contains("listening") {
                return line;
            }
        }
        panic!("the broker exited before listening");
    };
    let line = timeout(IO_TIMEOUT, listening)
        .await
        .expect("no 'listening' line on stderr");
    assert!(line.contains(&port.to_string()), "{line}");
    // Keep draining stderr so the broker never blocks on it.
    let stderr_task = tokio::spawn(async move {
        let mut rest = Vec::new();
        while let Ok(Some(line)) = stderr.next_line().await {
            rest.push(line);
        }
        rest
    });

    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut subscriber = Client::connect(addr).await;
    subscriber.subscribe("bye").await;
    let mut publisher = Client::connect(addr).await;

    // A subscriber that never reads, with ~16 MB waiting for it: the broker cannot flush
    // it and must give up when the grace period ends instead of waiting forever.
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = timeout(IO_TIMEOUT, socket.connect(addr))
        .await
        .unwrap()
        .unwrap();
    let mut stuck = Client::from_stream(stream);
    stuck.subscribe("stuck").await;
    let padding = "s".repeat(8000);
    for round in 0..20 {
        let batch: String = (0..100)
            .map(|i| send_line("stuck", &format!("{round}.{i}:{padding}")))
            .collect();
        publisher.send(batch.as_bytes()).await;
        for _ in 0..100 {
            assert_eq!(publisher.line().await, SUCCESS);
        }
    }

    const MESSAGES: usize = 1000;
    let batch: String = (0..MESSAGES)
        .map(|i| send_line("bye", &i.to_string()))
        .collect();
    publisher.send(batch.as_bytes()).await;
    for _ in 0..MESSAGES {
        assert_eq!(publisher.line().await, SUCCESS);
    }

    // Every push is queued (all sends answered): SIGTERM now, read afterwards.
    let pid = child.id().expect("the broker is running") as libc::pid_t;
    // SAFETY: kill(2) with a pid we spawned and still own (not yet reaped).
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let signalled = std::time::Instant::now();
    let status = timeout(IO_TIMEOUT, child.wait())
        .await
        .expect("no exit after SIGTERM (2 s grace) with a reader that never reads")
        .unwrap();
    eprintln!("broker exited {:?} after SIGTERM", signalled.elapsed());
    assert!(status.success(), "exit status {status}");
    drop(stuck);

    let rest = subscriber.read_to_close().await;
    let text = String::from_utf8(rest).unwrap();
    let pushes: Vec<&str> = text.split_terminator("\r\n").collect();
    assert_eq!(pushes.len(), MESSAGES, "pushes flushed before the exit");
    for (i, line) in pushes.iter().enumerate() {
        assert_eq!(pushed(line)["msg"], i.to_string());
    }

    let refused = timeout(IO_TIMEOUT, TcpStream::connect(addr))
        .await
        .expect("connect hung");
    assert!(
        refused.is_err(),
        "the port still accepts connections after exit"
    );
    let stderr_rest = timeout(IO_TIMEOUT, stderr_task).await.unwrap().unwrap();
    eprintln!("broker stderr after SIGTERM: {stderr_rest:?}");
}
