//! Shared pieces of the reference broker's black-box tests: a broker launcher on
//! `127.0.0.1:0` and a line-oriented test client over a real TCP socket.
//!
//! Every read and write has a timeout, so a broker bug fails a test instead of hanging CI.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::Duration;

use reference_broker::Config;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, timeout};

/// Longest wait for anything the broker must do (a line, EOF, a write, a connect):
/// generous so a loaded 2-core CI machine passes, finite so a bug fails instead of hanging.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a "no more lines" check listens before concluding nothing was sent.
pub const QUIET: Duration = Duration::from_millis(150);
/// Pause between polls when waiting for the broker's state to change (stats counters).
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// `{"success":true}`.
pub const SUCCESS: &str = r#"{"success":true}"#;
/// Reply to a repeated `id` inside the dedup window.
pub const DUPLICATE: &str = r#"{"success":true,"duplicate":true}"#;
/// Reply to a line that is not valid UTF-8.
pub const BAD_UTF8: &str = r#"{"success":false,"reason":"Could not decode input as UTF-8"}"#;
/// Reply to a UTF-8 line that is not JSON.
pub const BAD_JSON: &str = r#"{"success":false,"reason":"Could not parse json"}"#;
/// Reply to JSON that is not a valid command.
pub const MALFORMED: &str = r#"{"success":false,"reason":"Malformed json message"}"#;
/// Reply to a line longer than the server's limit.
pub const TOO_LONG: &str = r#"{"success":false,"reason":"Line too long"}"#;
/// Last words to a subscriber disconnected for not reading fast enough.
pub const SLOW_CONSUMER: &str = r#"{"success":false,"reason":"Slow consumer"}"#;

/// Topic the barrier command names (an `unsubscribe` of it is a no-op answered with success).
const BARRIER: &str = r#"{"command":"unsubscribe","topic":"barrier"}"#;

/// A reference broker running inside the test's runtime, on an ephemeral local port.
pub struct Broker {
    /// Where the broker listens.
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl Broker {
    /// Starts a broker with the default configuration.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts a broker whose default configuration `configure` adjusts.
    pub async fn start_with(configure: impl FnOnce(&mut Config)) -> Self {
        let mut config = Config::default();
        configure(&mut config);
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local_addr");
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(reference_broker::run(listener, config, async move {
            let _ = rx.await;
        }));
        Broker {
            addr,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// Opens a new client connection; `name` labels its assertion messages.
    pub async fn connect(&self, name: &str) -> Client {
        Client::connect(self.addr, name).await
    }

    /// Fires the shutdown future and waits (bounded by `limit`) for `run` to return.
    pub async fn shutdown(mut self, limit: Duration) -> std::io::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let task = self.task.take().expect("broker task present");
        timeout(limit, task)
            .await
            .expect("broker run() did not return after shutdown")
            .expect("broker task panicked")
    }
}

/// What one bounded read produced.
#[derive(Debug)]
pub enum Read {
    /// A whole line, terminator included.
    Line(Vec<u8>),
    /// The peer closed (or reset) the connection; holds any unterminated trailing bytes.
    Eof(Vec<u8>),
    /// Nothing complete arrived in time (partial bytes are kept for the next read).
    Timeout,
}

/// A test client: one TCP connection, line-oriented reads with timeouts.
pub struct Client {
    name: String,
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    /// Bytes of a line not yet terminated; `read_until` is cancel-safe and appends here.
    partial: Vec<u8>,
}

impl Client {
    /// Connects to `addr`; `name` labels assertion messages.
    pub async fn connect(addr: SocketAddr, name: &str) -> Self {
        let stream = timeout(IO_TIMEOUT, TcpStream::connect(addr))
            .await
            .unwrap_or_else(|_| panic!("{name}: connect timed out"))
            .unwrap_or_else(|e| panic!("{name}: connect failed: {e}"));
        stream.set_nodelay(true).expect("set_nodelay");
        let (read, write) = stream.into_split();
        Client {
            name: name.to_owned(),
            reader: BufReader::new(read),
            writer: write,
            partial: Vec::new(),
        }
    }

    /// The label given at connect time.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Writes `bytes` exactly as given (no terminator added), in one write call.
    pub async fn write_raw(&mut self, bytes: &[u8]) {
        let name = &self.name;
        let writer = &mut self.writer;
        timeout(IO_TIMEOUT, async {
            writer.write_all(bytes).await?;
            writer.flush().await
        })
        .await
        .unwrap_or_else(|_| panic!("{name}: write timed out"))
        .unwrap_or_else(|e| panic!("{name}: write failed: {e}"));
    }

    /// Writes `line` followed by `\n`.
    pub async fn send(&mut self, line: &str) {
        self.send_bytes(line.as_bytes()).await;
    }

    /// Writes `bytes` followed by `\n`, in one write call.
    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        let mut framed = Vec::with_capacity(bytes.len() + 1);
        framed.extend_from_slice(bytes);
        framed.push(b'\n');
        self.write_raw(&framed).await;
    }

    /// Reads one line (or EOF) within `limit`.
    pub async fn read_within(&mut self, limit: Duration) -> Read {
        match timeout(limit, self.reader.read_until(b'\n', &mut self.partial)).await {
            Err(_) => Read::Timeout,
            Ok(Ok(_)) if self.partial.ends_with(b"\n") => {
                Read::Line(std::mem::take(&mut self.partial))
            }
            Ok(Ok(_)) => Read::Eof(std::mem::take(&mut self.partial)),
            Ok(Err(e))
                if matches!(
                    e.kind(),
                    ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
                ) =>
            {
                Read::Eof(std::mem::take(&mut self.partial))
            }
            Ok(Err(e)) => panic!("{}: read failed: {e}", self.name),
        }
    }

    /// Reads one line, terminator included; panics on timeout or EOF.
    pub async fn recv_raw(&mut self) -> Vec<u8> {
        match self.read_within(IO_TIMEOUT).await {
            Read::Line(line) => line,
            Read::Eof(rest) => panic!(
                "{}: connection closed while waiting for a line (unterminated bytes: {:?})",
                self.name,
                String::from_utf8_lossy(&rest)
            ),
            Read::Timeout => panic!(
                "{}: no line within {IO_TIMEOUT:?} (partial bytes: {:?})",
                self.name,
                String::from_utf8_lossy(&self.partial)
            ),
        }
    }

    /// Reads one line, checks it is UTF-8 ending in `\r\n` (and holds no other line
    /// break), and returns it without the `\r\n`.
    pub async fn recv(&mut self) -> String {
        let raw = self.recv_raw().await;
        let text = String::from_utf8(raw)
            .unwrap_or_else(|e| panic!("{}: server line is not UTF-8: {e}", self.name));
        let body = text.strip_suffix("\r\n").unwrap_or_else(|| {
            panic!(
                "{}: server line does not end with \\r\\n: {text:?}",
                self.name
            )
        });
        assert!(
            !body.contains(['\r', '\n']),
            "{}: server line holds a stray line break: {text:?}",
            self.name
        );
        body.to_owned()
    }

    /// Reads one line and asserts it is exactly `expected` + `\r\n`.
    pub async fn expect(&mut self, expected: &str) {
        let raw = self.recv_raw().await;
        assert_eq!(
            String::from_utf8_lossy(&raw),
            format!("{expected}\r\n"),
            "{}: unexpected server line",
            self.name
        );
    }

    /// Reads `expected.len()` lines and asserts them, in order.
    pub async fn expect_lines(&mut self, expected: &[&str]) {
        for line in expected {
            self.expect(line).await;
        }
    }

    /// Reads `expected.len()` lines and asserts they are `expected` in some order (for
    /// lines whose relative order the protocol leaves open).
    pub async fn expect_unordered(&mut self, expected: &[&str]) {
        let mut got = Vec::with_capacity(expected.len());
        for _ in expected {
            got.push(self.recv().await);
        }
        let mut want: Vec<String> = expected.iter().map(|s| (*s).to_owned()).collect();
        got.sort();
        want.sort();
        assert_eq!(got, want, "{}: unexpected set of server lines", self.name);
    }

    /// Sends `line` and returns the next line read.
    pub async fn request(&mut self, line: &str) -> String {
        self.send(line).await;
        self.recv().await
    }

    /// Sends `line` and asserts the next line is exactly `expected`.
    pub async fn call(&mut self, line: &str, expected: &str) {
        self.send(line).await;
        self.expect(expected).await;
    }

    /// Asserts that nothing arrives (and the connection stays open) for [`QUIET`].
    pub async fn expect_no_line(&mut self) {
        self.expect_no_line_for(QUIET).await;
    }

    /// Asserts that nothing arrives (and the connection stays open) for `quiet`.
    pub async fn expect_no_line_for(&mut self, quiet: Duration) {
        match self.read_within(quiet).await {
            Read::Timeout => assert!(
                self.partial.is_empty(),
                "{}: expected silence, got partial bytes {:?}",
                self.name,
                String::from_utf8_lossy(&self.partial)
            ),
            Read::Line(line) => panic!(
                "{}: expected no line, got {:?}",
                self.name,
                String::from_utf8_lossy(&line)
            ),
            Read::Eof(rest) => panic!(
                "{}: expected no line, but the connection closed (trailing bytes {:?})",
                self.name,
                String::from_utf8_lossy(&rest)
            ),
        }
    }

    /// Asserts the server closes the connection within [`IO_TIMEOUT`] without sending
    /// anything more.
    pub async fn expect_eof(&mut self) {
        match self.read_within(IO_TIMEOUT).await {
            Read::Eof(rest) => assert!(
                rest.is_empty(),
                "{}: unterminated bytes before EOF: {:?}",
                self.name,
                String::from_utf8_lossy(&rest)
            ),
            Read::Line(line) => panic!(
                "{}: expected EOF, got line {:?}",
                self.name,
                String::from_utf8_lossy(&line)
            ),
            Read::Timeout => panic!(
                "{}: expected EOF within {IO_TIMEOUT:?}, connection still open",
                self.name
            ),
        }
    }

    /// Barrier: sends a no-op command and returns every line that arrived before its
    /// `{"success":true}`. Lines the server produced for this connection before it
    /// handled the barrier come out first, so this collects all pushes already made.
    pub async fn drain(&mut self) -> Vec<String> {
        self.send(BARRIER).await;
        let mut lines = Vec::new();
        loop {
            let line = self.recv().await;
            if line == SUCCESS {
                return lines;
            }
            lines.push(line);
        }
    }

    /// Sends `{"command":"stats"}` and returns the `stats` object after checking the
    /// reply's outer shape.
    pub async fn stats(&mut self) -> Value {
        let line = self.request(r#"{"command":"stats"}"#).await;
        let reply: Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("stats reply {line:?}: {e}"));
        assert_eq!(reply["success"], Value::Bool(true), "stats reply {line:?}");
        reply["stats"].clone()
    }

    /// Polls stats until `counter` equals `want`; panics after [`IO_TIMEOUT`].
    pub async fn wait_for_stat(&mut self, counter: &str, want: u64) {
        let deadline = Instant::now() + IO_TIMEOUT;
        loop {
            let stats = self.stats().await;
            if stats[counter].as_u64() == Some(want) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{}: stats {counter} never reached {want}; last stats {stats}",
                self.name
            );
            sleep(POLL_INTERVAL).await;
        }
    }
}

/// A compact send command, the way the tests write them.
pub fn send_cmd(topic: &str, msg: &str, delivery: &str) -> String {
    format!(r#"{{"command":"send","topic":"{topic}","msg":"{msg}","delivery":"{delivery}"}}"#)
}

/// The push a subscriber must receive for the compact send object `send` given index
/// `index`: the object as received with `"index"` appended last.
pub fn pushed(send: &str, index: u64) -> String {
    let body = send.strip_suffix('}').expect("a JSON object");
    format!(r#"{body},"index":{index}}}"#)
}

/// The redelivery push of `send` at `index`, delivery attempt `attempt` (>= 2).
pub fn redelivered(send: &str, index: u64, attempt: u32) -> String {
    let first = pushed(send, index);
    let body = first.strip_suffix('}').expect("a JSON object");
    format!(r#"{body},"redelivered":true,"attempt":{attempt}}}"#)
}

/// Parses a server line as JSON.
pub fn json(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("server line {line:?} is not JSON: {e}"))
}
