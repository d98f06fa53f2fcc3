//! `brokerbench run` with faults, as a user runs it: the binary, a broker, a record on
//! disk. The fidelity claims of the issue (a 50 ms from-broker latency raises the
//! in-window e2e p50 by 50 ms ± 10 %; a 2 s partition gives a publish unavailable window
//! of 2 s ± 0.5 s), a restart of the embedded reference broker survived, a reset survived
//! on every real backend, and a Redis restarted mid-run (a private redis-server on a port
//! of its own) survived with its stream and group recreated.
//!
//! A broker that is not running skips its test with a SKIPPED line, unless
//! `BROKERBENCH_REQUIRE_BACKENDS` requires it; so does a missing redis-server unless
//! `BROKERBENCH_REQUIRE_TOOLS` requires it. The tolerances are the issue's; every run is
//! short and every wait bounded.

use std::io::Write;
use std::path::Path;
use std::process::Output;

mod common;

use common::{backend_required, brokerbench, text, tool_required};

const REAL_BACKENDS: [&str; 5] = ["nats", "jetstream", "rabbitmq", "redis", "kafka"];

/// A light workload: 10 conversations, 1 producer and 1 subscriber each, 200 msgs/s in
/// all, 1 s warm-up, `duration` measured, 3 s drain.
fn scenario(dir: &Path, duration: &str) -> String {
    let path = dir.join("light.toml");
    std::fs::write(
        &path,
        format!(
            r#"name = "light"
warmup = "1s"
duration = "{duration}"
drain = "3s"

[[workload]]
name = "dm"
topics = 10
producers_per_topic = 1
subscribers_per_topic = 1
delivery = "all"
size = 200
rate = 200

[[alerts]]
name = "publishing recovers"
signal = "fault.publish.recovery"
direction = "upper"
warning = "5s"
critical = "30s"
"#
        ),
    )
    .unwrap();
    path.to_str().unwrap().to_owned()
}

/// Runs `brokerbench run SCENARIO --out DIR/NAME.json ARGS...`; returns the output and
/// the record (`None` when none was written).
fn run(
    dir: &Path,
    name: &str,
    scenario: &str,
    args: &[&str],
) -> (Output, Option<serde_json::Value>) {
    let out = dir.join(format!("{name}.json"));
    let mut all = vec!["run", scenario, "--out", out.to_str().unwrap()];
    all.extend_from_slice(args);
    let output = brokerbench(&all, dir);
    let record = std::fs::read_to_string(&out)
        .ok()
        .map(|s| serde_json::from_str(&s).expect("the record is JSON"));
    (output, record)
}

fn ms(v: &serde_json::Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// Asserts the run completed as a measured run (not partial, a record) and returns its
/// record.
fn completed(
    name: &str,
    (output, record): (Output, Option<serde_json::Value>),
) -> serde_json::Value {
    let stderr = text(&output.stderr);
    let stdout = text(&output.stdout);
    let record = record.unwrap_or_else(|| panic!("{name}: no record\n{stderr}\n{stdout}"));
    assert_eq!(record["partial"], false, "{name}: {stderr}\n{stdout}");
    assert!(
        output.status.code().is_some_and(|c| c == 0 || c == 1),
        "{name}: exit {:?}\n{stderr}\n{stdout}",
        output.status
    );
    eprintln!("{name}:\n{stdout}");
    record
}

#[test]
fn a_from_broker_latency_raises_the_in_window_e2e_p50_by_its_delay() {
    let dir = tempfile::tempdir().unwrap();
    let s = scenario(dir.path(), "6s");
    let record = completed(
        "latency",
        run(
            dir.path(),
            "latency",
            &s,
            &[
                "--fault",
                "kind=latency,at=2s,duration=3s,delay=50ms,direction=from-broker",
            ],
        ),
    );
    let f = &record["faults"][0];
    assert_eq!(f["kind"], "latency");
    let inside = ms(&f["latency"]["e2e_p50_ms"]);
    let outside = ms(&f["latency"]["outside_e2e_p50_ms"]);
    let raised = inside - outside;
    assert!(
        (45.0..=55.0).contains(&raised),
        "in-window e2e p50 {inside} ms, outside {outside} ms: raised by {raised} ms, not 50 ms ± 10 %"
    );
    assert_eq!(f["delivery"]["lost"], 0);
}

#[test]
fn a_two_second_partition_makes_publishing_unavailable_for_two_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let s = scenario(dir.path(), "6s");
    let record = completed(
        "partition",
        run(
            dir.path(),
            "partition",
            &s,
            &["--fault", "kind=partition,at=2s,duration=2s"],
        ),
    );
    let f = &record["faults"][0];
    let unavailable = ms(&f["publish"]["unavailable_ms"]);
    assert!(
        (1500.0..=2500.0).contains(&unavailable),
        "publish unavailable {unavailable} ms, not 2 s ± 0.5 s: {f}"
    );
    assert_eq!(f["publish"]["recovered"], true, "{f}");
    assert_eq!(f["delivery"]["recovered"], true, "{f}");
    // The coordinated-omission correction ran through the partition: messages due in it
    // waited for the heal, from their intended time.
    assert!(ms(&f["latency"]["e2e_max_ms"]) > 1000.0, "{f}");
    assert!(record["faults_outside"].is_object());

    // The fault signals through `check`, JUnit and the Prometheus export.
    std::fs::write(
        dir.path().join("fault-rules.toml"),
        "[[alerts]]\nname = \"partition\"\nsignal = \"fault.publish.unavailable\"\ndirection = \"upper\"\nwarning = \"500ms\"\ncritical = \"1s\"\n\n[[alerts]]\nname = \"loss\"\nsignal = \"fault.lost\"\ndirection = \"upper\"\nwarning = 0\ncritical = 100\n",
    )
    .unwrap();
    let check = brokerbench(
        &[
            "check",
            "partition.json",
            "--rules",
            "fault-rules.toml",
            "--junit",
            "faults.xml",
        ],
        dir.path(),
    );
    let stdout = text(&check.stdout);
    assert_eq!(
        check.status.code(),
        Some(1),
        "{stdout}{}",
        text(&check.stderr)
    );
    assert!(
        stdout.contains("CRITICAL  partition: fault.publish.unavailable"),
        "{stdout}"
    );
    assert!(stdout.contains("OK        loss: fault.lost 0"), "{stdout}");
    let junit = std::fs::read_to_string(dir.path().join("faults.xml")).unwrap();
    assert!(junit.contains("failures=\"1\""), "{junit}");
    let metrics = brokerbench(
        &["export", "partition.json", "--format", "prometheus"],
        dir.path(),
    );
    let metrics = text(&metrics.stdout);
    assert!(
        metrics.contains("brokerbench_fault_unavailable_seconds{")
            && metrics.contains("operation=\"publish\"")
            && metrics.contains("brokerbench_fault_anomalies_total{"),
        "{metrics}"
    );
    let report = brokerbench(
        &["report", "partition.json", "--out", "report.html"],
        dir.path(),
    );
    assert!(report.status.success(), "{}", text(&report.stderr));
    let html = std::fs::read_to_string(dir.path().join("report.html")).unwrap();
    assert!(
        html.contains("<section id=\"faults\">") && html.contains("partition"),
        "no fault table"
    );
}

#[test]
fn the_embedded_broker_restarted_mid_run_is_survived() {
    let dir = tempfile::tempdir().unwrap();
    let s = scenario(dir.path(), "6s");
    let record = completed(
        "restart",
        run(
            dir.path(),
            "restart",
            &s,
            &[
                "--fault",
                "kind=restart,at=2s,duration=1s",
                "--fail-on",
                "never",
            ],
        ),
    );
    let f = &record["faults"][0];
    assert_eq!(f["kind"], "restart");
    assert!(f["skipped"].is_null(), "{f}");
    assert!(f["healed_s"].as_f64().is_some(), "{f}");
    assert_eq!(f["publish"]["recovered"], true, "{f}");
    assert_eq!(f["delivery"]["recovered"], true, "{f}");
    // An in-memory broker loses what it held: measured, not hidden.
    assert!(f["delivery"]["lost"].as_u64().is_some(), "{f}");
    assert!(ms(&f["publish"]["unavailable_ms"]) > 0.0, "{f}");
    // The deliveries due while the broker was down count against delivery availability.
    assert!(
        record["correctness"]["undelivered"].as_u64().unwrap_or(0) > 0,
        "{record:#}"
    );
    assert!(record["availability"]["delivery"].as_f64().unwrap() < 1.0);
}

#[test]
fn a_run_without_faults_has_no_fault_figures_and_bad_flags_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = scenario(dir.path(), "1s");
    let record = completed("plain", run(dir.path(), "plain", &s, &[]));
    assert!(record.get("faults").is_none());
    let (output, record) = run(
        dir.path(),
        "bad",
        &s,
        &["--fault", "kind=latency,at=0s,duration=1s"],
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(record.is_none());
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("--fault") && stderr.contains("`delay`"),
        "{stderr}"
    );
    let (output, _) = run(dir.path(), "late", &s, &["--fault", "kind=reset,at=5s"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("measured phase"));
}

/// Every real backend survives a reset of all its connections: the run ends on time, is
/// not partial, and recovery and loss are measured. A restart without stop/start commands
/// is skipped, and said so.
#[test]
fn a_reset_is_survived_on_every_real_backend() {
    let dir = tempfile::tempdir().unwrap();
    let s = scenario(dir.path(), "5s");
    for backend in REAL_BACKENDS {
        let (output, record) = run(
            dir.path(),
            backend,
            &s,
            &[
                "--backend",
                backend,
                "--fail-on",
                "never",
                "--fault",
                "kind=reset,at=1s",
                "--fault",
                "kind=restart,at=3s,duration=1s",
            ],
        );
        let stderr = text(&output.stderr);
        if record.is_none() && stderr.contains("cannot connect") && !backend_required(backend) {
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {backend} reset test: {} (start the brokers with `scripts/services up`)",
                stderr
                    .lines()
                    .find(|l| l.starts_with("error:"))
                    .unwrap_or("unreachable")
            );
            continue;
        }
        let record = completed(backend, (output, record));
        let reset = &record["faults"][0];
        assert_eq!(reset["kind"], "reset", "{backend}");
        assert!(reset["injected_s"].as_f64().is_some(), "{backend}: {reset}");
        assert_eq!(reset["publish"]["recovered"], true, "{backend}: {reset}");
        assert!(reset["delivery"]["lost"].as_u64().is_some(), "{backend}");
        let restart = &record["faults"][1];
        assert!(
            restart["skipped"]
                .as_str()
                .is_some_and(|s| s.contains("--stop-command")),
            "{backend}: {restart}"
        );
        assert!(stderr.contains("skipped"), "{backend}: {stderr}");
    }
}

/// A broker server of the test's own on a free port, started and stopped with the shell
/// commands a restart fault is given; stopped on drop whatever happens in the test.
struct PrivateServer {
    dir: tempfile::TempDir,
    port: u16,
    start: String,
    stop: String,
}

impl PrivateServer {
    /// Starts it with `start(dir, port)`, stops it with `stop(dir, port)` and waits until
    /// `ready(dir)` holds and the port accepts connections.
    fn start(
        name: &str,
        start: impl Fn(&Path, u16) -> String,
        stop: impl Fn(&Path, u16) -> String,
        ready: impl Fn(&Path) -> bool,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let server = Self {
            start: start(dir.path(), port),
            stop: stop(dir.path(), port),
            dir,
            port,
        };
        let started = std::process::Command::new("sh")
            .args(["-c", &server.start])
            .status()
            .unwrap();
        assert!(started.success());
        let up = (0..50).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(100));
            ready(server.dir.path())
                && std::net::TcpStream::connect(("127.0.0.1", server.port)).is_ok()
        });
        assert!(up, "the private {name} did not start");
        server
    }

    /// A 6 s run of `backend` at `url` with a 1 s restart of this server at 2 s, through
    /// its stop and start commands: the restart fault's figures.
    fn restarted_mid_run(&self, what: &str, backend: &str, url: &str) -> serde_json::Value {
        let s = scenario(self.dir.path(), "6s");
        let record = completed(
            what,
            run(
                self.dir.path(),
                backend,
                &s,
                &[
                    "--backend",
                    backend,
                    "--url",
                    url,
                    "--fail-on",
                    "never",
                    "--fault",
                    "kind=restart,at=2s,duration=1s",
                    "--stop-command",
                    &self.stop,
                    "--start-command",
                    &self.start,
                ],
            ),
        );
        let f = record["faults"][0].clone();
        assert!(f["skipped"].is_null(), "{f}");
        assert_eq!(f["publish"]["recovered"], true, "{f}");
        assert_eq!(f["delivery"]["recovered"], true, "{f}");
        eprintln!(
            "{what}: delivery availability {}, fault {f}",
            record["availability"]["delivery"].as_f64().unwrap_or(1.0)
        );
        f
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        let _ = std::process::Command::new("sh")
            .args(["-c", &self.stop])
            .status();
    }
}

/// The first of `bins` that runs; `None` (the test skipped, or failing where `tool` is
/// required) when none does.
fn installed<'a>(tool: &str, bins: &[&'a str], package: &str) -> Option<&'a str> {
    let found = bins.iter().copied().find(|b| {
        std::process::Command::new(b)
            .arg("--version")
            .output()
            .is_ok()
    });
    if found.is_none() {
        assert!(
            !tool_required(tool),
            "{tool} is required (BROKERBENCH_REQUIRE_TOOLS) but not installed (Debian: apt-get install -y {package})"
        );
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED private {tool} restart: {tool} is not installed"
        );
    }
    found
}

/// The issue's Redis case: a Redis without persistence shut down and started again 1 s
/// later mid-run. Its stream and groups are gone; the run re-subscribes, recreates them,
/// counts what was lost, and ends on time with a record (it used to end as partial, exit
/// 2). A private redis-server on a free port: the shared one is never touched.
#[test]
fn a_private_redis_restarted_mid_run_is_survived() {
    if installed("redis-server", &["redis-server"], "redis-server").is_none() {
        return;
    }
    let server = PrivateServer::start(
        "redis-server",
        |dir, port| {
            format!(
                "redis-server --port {port} --bind 127.0.0.1 --save '' --appendonly no --daemonize yes --pidfile {} --dir {}",
                dir.join("redis.pid").display(),
                dir.display()
            )
        },
        |_, port| format!("redis-cli -p {port} shutdown nosave"),
        |_| true,
    );
    let url = format!("redis://127.0.0.1:{}", server.port);
    server.restarted_mid_run("redis restart", "redis", &url);
}

/// JetStream on a private nats-server killed (SIGKILL) and started again 1 s later
/// mid-run: its streams, kept in memory, are gone; publishing creates them again, the
/// subscriptions are made again, and both recover within the run (they used to stay
/// unavailable to its end). The shared server on 4222 is never touched.
#[test]
fn a_private_jetstream_server_killed_and_restarted_mid_run_is_survived() {
    let Some(bin) = installed(
        "nats-server",
        &["nats-server", "/usr/sbin/nats-server"],
        "nats-server",
    ) else {
        return;
    };
    let server = PrivateServer::start(
        "nats-server",
        |dir, port| {
            format!(
                "{bin} -a 127.0.0.1 -p {port} -js -sd {} -P {} >/dev/null 2>&1 &",
                dir.join("store").display(),
                dir.join("nats.pid").display()
            )
        },
        |dir, _| format!("kill -9 $(cat {})", dir.join("nats.pid").display()),
        |dir| dir.join("nats.pid").exists(),
    );
    let url = format!("nats://127.0.0.1:{}", server.port);
    server.restarted_mid_run("jetstream restart", "jetstream", &url);
}

/// `targets = "subscribers"`: a partition of the subscribers' connections only leaves
/// publishing available (every publish confirmed, no gap longer than a second) and makes
/// delivery unavailable for about its length.
#[test]
fn a_subscribers_only_partition_leaves_publishing_available() {
    let dir = tempfile::tempdir().unwrap();
    let s = scenario(dir.path(), "5s");
    let record = completed(
        "subscribers partition",
        run(
            dir.path(),
            "subscribers",
            &s,
            &[
                "--fault",
                "kind=partition,at=1s,duration=2s,targets=subscribers",
            ],
        ),
    );
    let f = &record["faults"][0];
    assert_eq!(f["targets"], "subscribers", "{f}");
    assert!(f["connections_cut"].is_u64(), "{f}");
    let publish = &f["publish"];
    assert_eq!(publish["failed"], 0, "{f}");
    assert_eq!(publish["unknown"], 0, "{f}");
    assert!(ms(&publish["unavailable_ms"]) < 1000.0, "{f}");
    let delivery = ms(&f["delivery"]["unavailable_ms"]);
    assert!(
        (1500.0..=3000.0).contains(&delivery),
        "delivery unavailable {delivery} ms during a 2 s subscribers-only partition: {f}"
    );
    assert_eq!(f["delivery"]["recovered"], true, "{f}");
}
