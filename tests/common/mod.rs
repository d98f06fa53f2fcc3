//! What the CLI test files share: running the real binary, reading its output, and the
//! `BROKERBENCH_REQUIRE_*` lists that turn a missing broker or tool into a failure.

#![allow(dead_code)] // each test file uses its own subset

use std::path::Path;
use std::process::{Command, Output};

/// The `brokerbench` binary in `dir`, as CI runs it (`CI` set, so progress is plain
/// lines) and with no reference broker URL inherited, so `run` embeds its own broker.
/// Connections get [`CONNECT_TIMEOUT`] unless the environment sets its own: the test
/// suite loads the machine (and the brokers) far more than one run does, and a test
/// must not fail because a handshake was slow. An unreachable broker still fails at once.
pub fn command(dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_brokerbench"));
    command
        .current_dir(dir)
        .env("CI", "true")
        .env_remove("BROKERBENCH_REFERENCE_URL");
    if std::env::var_os("BROKERBENCH_CONNECT_TIMEOUT").is_none() {
        command.env("BROKERBENCH_CONNECT_TIMEOUT", CONNECT_TIMEOUT);
    }
    command
}

/// The connect timeout the tests' runs get (the adapters' default is 5 s).
pub const CONNECT_TIMEOUT: &str = "30s";

/// Runs `brokerbench ARGS` in `dir` to completion.
pub fn brokerbench(args: &[&str], dir: &Path) -> Output {
    command(dir).args(args).output().expect("brokerbench runs")
}

/// Output bytes as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Whether the comma-separated list in environment variable `var` is `all` or names
/// `name` (case-insensitive).
pub fn listed(var: &str, name: &str) -> bool {
    std::env::var(var).is_ok_and(|list| {
        list.split(',')
            .map(str::trim)
            .any(|n| n.eq_ignore_ascii_case("all") || n.eq_ignore_ascii_case(name))
    })
}

/// Whether a missing `tool` must fail the test rather than skip it.
pub fn tool_required(tool: &str) -> bool {
    listed("BROKERBENCH_REQUIRE_TOOLS", tool)
}

/// Whether an unreachable `backend` must fail the test rather than skip it.
pub fn backend_required(backend: &str) -> bool {
    listed("BROKERBENCH_REQUIRE_BACKENDS", backend)
}

/// A reference broker started with `brokerbench broker --port 0 FLAGS...`, killed on drop.
pub struct ReferenceBroker {
    child: std::process::Child,
    /// `tcp://127.0.0.1:PORT`.
    pub url: String,
}

impl ReferenceBroker {
    /// Starts it with the extra `flags` and waits until it says where it listens.
    pub fn start(flags: &[&str]) -> Self {
        use std::io::BufRead as _;
        use std::process::Stdio;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_brokerbench"))
            .args(["broker", "--port", "0"])
            .args(flags)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("broker starts");
        let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let addr = loop {
            let line = lines
                .next()
                .expect("the broker printed its address")
                .unwrap();
            if let Some(addr) = line.split("listening on ").nth(1) {
                break addr.trim().to_owned();
            }
        };
        // Keep reading its stderr so it never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Self {
            child,
            url: format!("tcp://{addr}"),
        }
    }
}

impl Drop for ReferenceBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
