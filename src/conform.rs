//! `brokerbench conform`: the conformance suite, checks × backends, against the expected
//! matrix.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;

use anyhow::Context;
use brokerbench_adapters::BackendKind;
use brokerbench_results::conformance::{junit, render};
use brokerbench_results::{BackendColumn, Cell, ConformanceReport, ConformanceVerdict, HostFacts};
use brokerbench_scenarios::conformance::expected::{BUILTIN_ORIGIN, ExpectedMatrix};
use brokerbench_scenarios::conformance::{BrokerConnector, Check, Params, run_check};
use tokio_util::sync::CancellationToken;

use crate::connection::Connection;
use crate::exit;

/// A `--backend` value: one backend, or `all`.
#[derive(Debug, Clone)]
enum BackendChoice {
    All,
    One(BackendKind),
}

impl FromStr for BackendChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim().eq_ignore_ascii_case("all") {
            return Ok(BackendChoice::All);
        }
        match s.parse::<BackendKind>() {
            Ok(BackendKind::Null) => {
                Err("the null backend has no delivery semantics to check".into())
            }
            Ok(kind) => Ok(BackendChoice::One(kind)),
            Err(e) => Err(format!("{e}, or all")),
        }
    }
}

/// Flags of `brokerbench conform`.
#[derive(Debug, clap::Args)]
#[command(after_long_help = checks_help())]
pub struct Args {
    /// Backends to check: reference, nats, jetstream, rabbitmq, redis, kafka, or all
    /// (repeat the flag or separate with commas). `reference` without --url (or
    /// BROKERBENCH_REFERENCE_URL) starts an embedded reference broker.
    #[arg(
        long,
        value_name = "NAME|all",
        value_delimiter = ',',
        default_value = "reference"
    )]
    backend: Vec<BackendChoice>,
    /// Only these checks (repeat the flag or separate with commas; default: all of them,
    /// see --list).
    #[arg(long = "check", value_name = "NAME", value_delimiter = ',')]
    checks: Vec<Check>,
    /// Broker endpoint, with a single --backend (default: BROKERBENCH_<BACKEND>_URL, else
    /// the backend's usual localhost address).
    #[arg(long, conflicts_with = "containers")]
    url: Option<String>,
    /// Start each broker in a Docker container for the suite (needs a Docker engine and
    /// the `containers` feature).
    #[arg(long)]
    containers: bool,
    /// The expected matrix (TOML, one [backend.check] table per cell that is not expected
    /// to pass) [default: the committed scenarios/conformance/expected.toml].
    #[arg(long, value_name = "FILE")]
    expected: Option<PathBuf>,
    /// Exit 1 on any difference from the expected matrix, also a known FAIL that now
    /// passes (CI keeps the committed matrix true this way).
    #[arg(long)]
    strict: bool,
    /// Write the matrix as JSON (per cell: verdict, counts, reason, duration, backend
    /// version), rewritten after every cell so an interrupted suite leaves a valid,
    /// partial document.
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// Write the matrix as JUnit XML: a testsuite per backend, a testcase per check.
    #[arg(long, value_name = "PATH")]
    junit: Option<PathBuf>,
    /// Write the matrix as a markdown table (`-` for stdout).
    #[arg(long, value_name = "PATH")]
    markdown: Option<PathBuf>,
    /// List the checks, what each one proves and what it needs, then exit.
    #[arg(long)]
    list: bool,
    #[command(flatten)]
    params: ParamArgs,
}

/// The checks' parameters. Defaults come from [`Params::default`].
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "Check parameters")]
struct ParamArgs {
    /// Messages per batch (fanout, compete, live-only, unsubscribe).
    #[arg(long, default_value_t = Params::default().messages)]
    messages: u32,
    /// Subscribers (fanout, unsubscribe, slow-consumer).
    #[arg(long, default_value_t = Params::default().subscribers, value_parser = clap::value_parser!(u32).range(2..))]
    subscribers: u32,
    /// Consumers sharing a group (compete, key-order).
    #[arg(long, default_value_t = Params::default().consumers, value_parser = clap::value_parser!(u32).range(1..))]
    consumers: u32,
    /// Distinct keys (key-order).
    #[arg(long, default_value_t = Params::default().keys, value_parser = clap::value_parser!(u32).range(1..))]
    keys: u32,
    /// Messages (key-order, total-order).
    #[arg(long, default_value_t = Params::default().order_messages)]
    order_messages: u32,
    /// Payload size in bytes of the ordinary checks' messages (at least 50).
    #[arg(long, default_value_t = Params::default().size, value_parser = parse_size)]
    size: usize,
    /// Publishes in flight per producer.
    #[arg(long, default_value_t = Params::default().window, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    window: usize,
    /// How long a check waits for what is due.
    #[arg(long, default_value_t = Params::default().timeout.into())]
    timeout: humantime::Duration,
    /// How long a check keeps listening for extra deliveries once everything arrived.
    #[arg(long, default_value_t = Params::default().settle.into())]
    settle: humantime::Duration,
    /// After a confirmed unsubscribe, how long before a delivery to it counts as late.
    #[arg(long, default_value_t = Params::default().grace.into())]
    grace: humantime::Duration,
    /// Messages published before the late subscribers join (late-replay).
    #[arg(long, default_value_t = Params::default().replay_messages, value_parser = clap::value_parser!(u32).range(2..))]
    replay_messages: u32,
    /// How long to wait for a redelivery (ack-redelivery, dead-letter).
    #[arg(long, default_value_t = Params::default().redelivery_timeout.into())]
    redelivery_timeout: humantime::Duration,
    /// How soon a nacked message must come back (nack-requeue).
    #[arg(long, default_value_t = Params::default().nack_within.into())]
    nack_within: humantime::Duration,
    /// Nacks before the final ack (nack-requeue).
    #[arg(long, default_value_t = Params::default().nack_attempts, value_parser = clap::value_parser!(u32).range(1..))]
    nack_attempts: u32,
    /// Deliveries before a message must be dead-lettered (dead-letter); also the embedded
    /// reference broker's --max-attempts. An external reference broker must run with it.
    #[arg(long, default_value_t = Params::default().dead_letter_attempts, value_parser = clap::value_parser!(u32).range(1..))]
    dead_letter_attempts: u32,
    /// Ids published twice each (dedup).
    #[arg(long, default_value_t = Params::default().dedup_ids, value_parser = clap::value_parser!(u32).range(1..))]
    dedup_ids: u32,
    /// Retention limit in messages (retention-trim); also the embedded reference
    /// broker's --cache-size. An external reference broker must run with this cache size.
    #[arg(long, default_value_t = Params::default().retention, value_parser = clap::value_parser!(u64).range(1..))]
    retention: u64,
    /// Messages published beyond the retention limit (retention-trim).
    #[arg(long, default_value_t = Params::default().retention_excess, value_parser = clap::value_parser!(u64).range(1..))]
    retention_excess: u64,
    /// Messages published (slow-consumer).
    #[arg(long, default_value_t = Params::default().slow_messages)]
    slow_messages: u32,
    /// Payload size in bytes (slow-consumer).
    #[arg(long, default_value_t = Params::default().slow_size, value_parser = parse_size)]
    slow_size: usize,
    /// Publish rate, e.g. 1000 or 2k/s (slow-consumer).
    #[arg(long, default_value_t = Params::default().slow_rate, value_parser = brokerbench_scenarios::parse_rate)]
    slow_rate: f64,
    /// How fast the slow subscriber reads while the others keep up (slow-consumer).
    #[arg(long, default_value_t = Params::default().slow_read_rate, value_parser = brokerbench_scenarios::parse_rate)]
    slow_read_rate: f64,
    /// The p99 latency the subscribers keeping up must stay under (slow-consumer).
    #[arg(long, default_value_t = Params::default().slow_max_latency.into())]
    slow_max_latency: humantime::Duration,
    /// Payload sizes tried, separated by commas (large-message) [default: 1,1KiB,64KiB,512KiB,1MiB].
    #[arg(long, value_delimiter = ',', value_parser = reference_broker::cli::parse_bytes)]
    large_sizes: Vec<usize>,
    /// Messages published; the publisher's connections are cut a third of the way, the
    /// subscriber's two thirds of the way (reconnect).
    #[arg(long, default_value_t = Params::default().reconnect_messages, value_parser = clap::value_parser!(u32).range(2..))]
    reconnect_messages: u32,
    /// Publish rate (reconnect).
    #[arg(long, default_value_t = Params::default().reconnect_rate, value_parser = brokerbench_scenarios::parse_rate)]
    reconnect_rate: f64,
    /// How long the subscriber's path stays down after its cut while publishing goes on
    /// (reconnect).
    #[arg(long, default_value_t = Params::default().reconnect_outage.into())]
    reconnect_outage: humantime::Duration,
    /// How long to keep reconnecting and waiting for every confirmed message (reconnect).
    #[arg(long, default_value_t = Params::default().reconnect_timeout.into())]
    reconnect_timeout: humantime::Duration,
}

impl ParamArgs {
    fn params(&self) -> Params {
        let defaults = Params::default();
        Params {
            messages: self.messages,
            subscribers: self.subscribers,
            consumers: self.consumers,
            keys: self.keys,
            order_messages: self.order_messages,
            size: self.size,
            window: self.window,
            timeout: self.timeout.into(),
            settle: self.settle.into(),
            grace: self.grace.into(),
            replay_messages: self.replay_messages,
            redelivery_timeout: self.redelivery_timeout.into(),
            nack_within: self.nack_within.into(),
            nack_attempts: self.nack_attempts,
            dead_letter_attempts: self.dead_letter_attempts,
            dedup_ids: self.dedup_ids,
            retention: self.retention,
            retention_excess: self.retention_excess,
            slow_messages: self.slow_messages,
            slow_size: self.slow_size,
            slow_rate: self.slow_rate,
            slow_read_rate: self.slow_read_rate,
            slow_max_latency: self.slow_max_latency.into(),
            large_sizes: if self.large_sizes.is_empty() {
                defaults.large_sizes
            } else {
                self.large_sizes.clone()
            },
            reconnect_messages: self.reconnect_messages,
            reconnect_rate: self.reconnect_rate,
            reconnect_outage: self.reconnect_outage.into(),
            reconnect_timeout: self.reconnect_timeout.into(),
        }
    }
}

/// A message size: a byte count (`256`, `8KiB`) of at least the envelope's 50 bytes.
fn parse_size(text: &str) -> Result<usize, String> {
    let size = reference_broker::cli::parse_bytes(text)?;
    let min = brokerbench_scenarios::conformance::message::HEADER_LEN;
    if size < min {
        return Err(format!(
            "{size} bytes is too small: every message carries a {min}-byte envelope"
        ));
    }
    Ok(size)
}

/// The list of checks, for `--help` and `--list`.
fn checks_help() -> String {
    let mut text = String::from(
        "Checks (run in this order; a backend lacking what a check needs reports it unsupported):\n",
    );
    for check in Check::ALL {
        text.push_str(&format!(
            "  {:<15} {}\n  {:<15} needs: {}\n",
            check.as_str(),
            check.describe(),
            "",
            check.required_capabilities()
        ));
    }
    text.push_str(
        "\nExit codes: 0 every cell as expected; 1 a cell that should pass did not, or a FAIL \
         nobody expected (with --strict: any difference from the expected matrix); 2 a check \
         could not run (unreachable broker, refused set-up, bad arguments, interrupted).",
    );
    text
}

/// Runs the suite.
pub async fn main(args: Args) -> anyhow::Result<ExitCode> {
    if args.list {
        print!("{}", checks_help());
        println!();
        return Ok(exit::PASSED);
    }
    let params = args.params.params();
    let (expected, expected_origin) = match &args.expected {
        Some(path) => match ExpectedMatrix::load(path) {
            Ok(m) => (m, path.display().to_string()),
            Err(err) => {
                eprintln!("error: {err}");
                return Ok(exit::harness_failure());
            }
        },
        None => (ExpectedMatrix::builtin(), BUILTIN_ORIGIN.to_owned()),
    };
    let kinds = backends(&args.backend);
    if args.url.is_some() && kinds.len() != 1 {
        eprintln!("error: --url names one broker; give a single --backend with it");
        return Ok(exit::harness_failure());
    }
    let checks: Vec<Check> = if args.checks.is_empty() {
        Check::ALL.to_vec()
    } else {
        Check::ALL
            .into_iter()
            .filter(|c| args.checks.contains(c))
            .collect()
    };
    let broker_flags = vec![
        "--cache-size".to_owned(),
        params.retention.to_string(),
        "--max-attempts".to_owned(),
        params.dead_letter_attempts.to_string(),
    ];

    let cancel = CancellationToken::new();
    let ctrl_c = {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("\ninterrupted: finishing the current check and writing what ran...");
                cancel.cancel();
            }
        })
    };

    // Reach every backend first, so the matrix has their versions.
    let mut targets = Vec::new();
    let mut columns = Vec::new();
    for kind in kinds {
        let connection =
            Connection::open_with(kind, args.url.as_deref(), args.containers, &broker_flags).await;
        let column = match &connection {
            Ok(c) => BackendColumn {
                name: kind.to_string(),
                url: Some(c.url.clone()),
                // The embedded broker is this very binary.
                version: c.backend.server_version().or_else(|| {
                    c.is_embedded().then(|| {
                        format!("reference-broker {}, embedded", env!("CARGO_PKG_VERSION"))
                    })
                }),
            },
            Err(_) => BackendColumn {
                name: kind.to_string(),
                url: Some(brokerbench_adapters::endpoint::redact(
                    &kind.resolve_url_with(args.url.as_deref(), |_| {
                        crate::connection::env_url(kind)
                    }),
                )),
                version: None,
            },
        };
        match &connection {
            Ok(c) => eprintln!(
                "{kind}: {} ({})",
                c.url,
                column.version.as_deref().unwrap_or("version unknown")
            ),
            Err(err) => eprintln!("{kind}: cannot be reached: {err:#}"),
        }
        columns.push(column);
        targets.push((kind, connection.map_err(|e| format!("{e:#}"))));
    }
    let mut report = ConformanceReport::new(
        checks.iter().map(|c| c.as_str().to_owned()).collect(),
        columns,
        params.to_json(),
        HostFacts::detect(env!("CARGO_PKG_VERSION")),
    );
    let total = targets.len() * checks.len();
    let mut done = 0;
    'suite: for (kind, target) in &targets {
        for &check in &checks {
            if cancel.is_cancelled() {
                break 'suite;
            }
            done += 1;
            let expectation = expected.expectation(*kind, check);
            let cell = match target {
                Err(reason) => Cell {
                    check: check.as_str().to_owned(),
                    backend: kind.to_string(),
                    verdict: ConformanceVerdict::Error,
                    reason: format!("cannot connect: {reason}"),
                    counts: Default::default(),
                    duration_s: 0.0,
                    backend_version: None,
                    expected: Some(expectation),
                },
                Ok(connection) => {
                    let connector = BrokerConnector::new(*kind, connection.raw_url.clone());
                    let outcome = tokio::select! {
                        outcome = run_check(check, &connector, &params) => outcome,
                        () = cancel.cancelled() => break 'suite,
                    };
                    Cell {
                        check: check.as_str().to_owned(),
                        backend: kind.to_string(),
                        verdict: outcome.verdict,
                        reason: outcome.reason,
                        counts: outcome.counts,
                        duration_s: outcome.duration.as_secs_f64(),
                        backend_version: outcome.backend_version,
                        expected: Some(expectation),
                    }
                }
            };
            eprintln!(
                "[{done:>3}/{total}] {:<10} {:<15} {:<12} {:>6.1}s{}",
                cell.backend,
                cell.check,
                cell.verdict.label(),
                cell.duration_s,
                if cell.is_unexpected() {
                    format!("  (expected {})", cell.expected_verdict().label())
                } else {
                    String::new()
                }
            );
            report.push(cell);
            if let Some(path) = &args.json {
                report
                    .write(path)
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
        }
    }
    ctrl_c.abort();
    for (_, target) in targets {
        if let Ok(connection) = target {
            connection.close().await;
        }
    }
    if !cancel.is_cancelled() {
        report.finish();
    }
    let colour = std::io::stdout().is_terminal()
        && std::env::var_os("NO_COLOR").is_none()
        && std::env::var_os("CI").is_none();
    println!();
    print!("{}", render::render_matrix(&report, colour));
    println!("expected matrix: {expected_origin}");
    if let Some(path) = &args.json {
        report
            .write(path)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Some(path) = &args.junit {
        crate::report::write_output(path, junit::render_junit(&report).as_bytes())?;
    }
    if let Some(path) = &args.markdown {
        crate::report::write_output(path, render::render_markdown(&report).as_bytes())?;
    }
    let gate = report.gate();
    if report.partial {
        eprintln!(
            "the suite was interrupted: {} of {total} cells ran",
            report.cells.len()
        );
        return Ok(exit::harness_failure());
    }
    if !gate.errors.is_empty() {
        return Ok(exit::harness_failure());
    }
    if !gate.regressions.is_empty() || (args.strict && !gate.other_differences.is_empty()) {
        return Ok(exit::alert_fired());
    }
    Ok(exit::PASSED)
}

/// The backends asked for, each once, in the matrix's column order.
fn backends(choices: &[BackendChoice]) -> Vec<BackendKind> {
    BackendKind::ALL
        .into_iter()
        .filter(|kind| *kind != BackendKind::Null)
        .filter(|kind| {
            choices.iter().any(|c| {
                matches!(c, BackendChoice::All) || matches!(c, BackendChoice::One(k) if k == kind)
            })
        })
        .collect()
}
