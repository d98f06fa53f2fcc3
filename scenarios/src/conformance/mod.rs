//! The conformance suite: which delivery guarantees a broker really keeps.
//!
//! Each [`Check`] publishes enveloped messages ([`message`]: run, producer, sequence, key,
//! length, payload hash) through the [`Backend`] abstraction, reads what comes back, and
//! classifies it in the vocabulary of the design notes: lost, duplicated, reordered,
//! phantom, late, recovered, trimmed ([`Counts`]). The verdict is `pass` when the check's
//! guarantee held, `FAIL` with the counts and a one-line reason when it did not,
//! `unsupported` when the backend has no mechanism for it (its adapter does not declare
//! the capability: never a silent pass), and `error` when the harness could not run it.
//!
//! ```no_run
//! # async fn demo() {
//! use brokerbench_adapters::BackendKind;
//! use brokerbench_scenarios::conformance::{BrokerConnector, Check, Params, run_check};
//!
//! let redis = BrokerConnector::new(BackendKind::Redis, "redis://127.0.0.1:6379");
//! let report = run_check(Check::Fanout, &redis, &Params::default()).await;
//! println!("{}: {} - {}", report.check, report.verdict, report.reason);
//! # }
//! ```
//!
//! Every check connects its own backend, prepares its own per-run topics (`bb.conform-
//! <check>-<tag>.<name>`) and tears them down afterwards, whatever the verdict. The
//! expected verdict of each check on each backend, with the documented reason for every
//! `unsupported` and known `FAIL`, is in [`expected`].

mod check;
mod checks;
pub mod expected;
mod ledger;
pub mod message;
mod params;
/// The fault proxy the `reconnect` check connects through (the `brokerbench-faults` crate).
pub use brokerbench_faults::proxy;
mod reader;
mod tally;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use brokerbench_adapters::{
    AdapterError, Backend, BackendKind, Capability, ConnectOptions, ErrorKind, RunTopology,
    TopicSpec,
};
use brokerbench_results::{ConformanceVerdict as Verdict, Counts};
use futures::future::BoxFuture;

pub use check::Check;
pub use params::Params;

/// How a check reaches the broker under test. [`BrokerConnector`] connects the adapter of
/// a backend kind; tests wrap it to inject faults.
pub trait Connector: Send + Sync {
    /// The backend kind.
    fn kind(&self) -> BackendKind;

    /// The broker's URL.
    fn url(&self) -> &str;

    /// Connects to the broker at `url` (this connector's own, or a proxy in front of it)
    /// with `options`.
    fn connect<'a>(
        &'a self,
        url: &'a str,
        options: ConnectOptions,
    ) -> BoxFuture<'a, Result<Box<dyn Backend>, AdapterError>>;
}

/// Connects a backend kind's adapter at a URL.
#[derive(Debug, Clone)]
pub struct BrokerConnector {
    kind: BackendKind,
    url: String,
}

impl BrokerConnector {
    /// A connector for the broker of `kind` at `url`.
    pub fn new(kind: BackendKind, url: impl Into<String>) -> Self {
        BrokerConnector {
            kind,
            url: url.into(),
        }
    }
}

impl Connector for BrokerConnector {
    fn kind(&self) -> BackendKind {
        self.kind
    }

    fn url(&self) -> &str {
        &self.url
    }

    fn connect<'a>(
        &'a self,
        url: &'a str,
        options: ConnectOptions,
    ) -> BoxFuture<'a, Result<Box<dyn Backend>, AdapterError>> {
        Box::pin(brokerbench_adapters::connect(self.kind, url, options))
    }
}

/// The result of one check on one backend.
#[derive(Debug, Clone)]
pub struct CheckReport {
    /// The check.
    pub check: Check,
    /// Its verdict.
    pub verdict: Verdict,
    /// One line: what held, or what went wrong and how often.
    pub reason: String,
    /// What was published and what came back.
    pub counts: Counts,
    /// How long it took, set-up and clean-up included.
    pub duration: Duration,
    /// The broker's name and version, where it reports one.
    pub backend_version: Option<String>,
}

/// The longest a single check may take before it is abandoned as an error: generous, so
/// that only a hung broker or client reaches it.
fn check_deadline(params: &Params) -> Duration {
    params.timeout * 3
        + params.redelivery_timeout * 2
        + params.reconnect_timeout
        + Duration::from_secs(60)
}

/// Runs `check` against the broker `connector` reaches, with `params`.
///
/// Never panics and never returns an error: a broker that cannot be reached, refuses the
/// set-up or hangs gives a report with [`Verdict::Error`] and the reason.
pub async fn run_check(check: Check, connector: &dyn Connector, params: &Params) -> CheckReport {
    let started = Instant::now();
    let mut report = CheckReport {
        check,
        verdict: Verdict::Error,
        reason: String::new(),
        counts: Counts::default(),
        duration: Duration::ZERO,
        backend_version: None,
    };
    let backend: Arc<dyn Backend> = match connector.connect(connector.url(), options(params)).await
    {
        Ok(backend) => Arc::from(backend),
        Err(err) => {
            report.reason = format!("cannot connect: {err}");
            report.duration = started.elapsed();
            return report;
        }
    };
    report.backend_version = backend.server_version();
    if let Err(reason) = supports(check, backend.as_ref()) {
        report.verdict = Verdict::Unsupported;
        report.reason = reason;
        report.duration = started.elapsed();
        return report;
    }
    let tag = fastrand::u32(..);
    let ctx = Ctx {
        backend: backend.clone(),
        connector,
        params,
        run: tag,
        run_id: format!("conform-{}-{tag:08x}", check.as_str()),
    };
    let outcome = match tokio::time::timeout(check_deadline(params), checks::run(check, &ctx)).await
    {
        Ok(outcome) => outcome,
        Err(_) => Err(Stop::Broken(format!(
            "the check did not finish within {}",
            humantime::format_duration(check_deadline(params))
        ))),
    };
    match outcome {
        Ok(finding) => {
            report.verdict = if finding.failures.is_empty() {
                Verdict::Pass
            } else {
                Verdict::Fail
            };
            report.reason = if finding.failures.is_empty() {
                finding.summary
            } else {
                finding.failures.join("; ")
            };
            report.counts = finding.counts;
        }
        Err(Stop::Unsupported(reason)) => {
            report.verdict = Verdict::Unsupported;
            report.reason = reason;
        }
        Err(Stop::Broken(reason)) => report.reason = reason,
    }
    match tokio::time::timeout(params.timeout, backend.teardown()).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => report
            .reason
            .push_str(&format!(" (clean-up failed: {err})")),
        Err(_) => report.reason.push_str(" (clean-up did not finish in time)"),
    }
    report.duration = started.elapsed();
    report
}

/// The connect options of every check: requests and publishes may take up to the
/// check's timeout.
pub(crate) fn options(params: &Params) -> ConnectOptions {
    ConnectOptions::new()
        .connect_timeout(Duration::from_secs(5))
        .publish_timeout(params.timeout.min(Duration::from_secs(10)))
        .request_timeout(params.timeout.min(Duration::from_secs(10)))
}

/// `Err(reason)` when `backend` lacks what `check` needs.
fn supports(check: Check, backend: &dyn Backend) -> Result<(), String> {
    let caps = backend.capabilities();
    caps.require(
        backend.kind(),
        check.required_capabilities(),
        &format!("the {check} check"),
    )
    .map_err(|e| e.to_string())?;
    if check == Check::RetentionTrim
        && !caps.contains(Capability::Replay)
        && !caps.contains(Capability::Competing)
    {
        return Err(format!(
            "the {} backend has no late reader for retained messages (neither replay nor consumer groups)",
            backend.kind()
        ));
    }
    Ok(())
}

/// What a check body has at hand.
pub(crate) struct Ctx<'a> {
    /// The backend the check connected.
    pub backend: Arc<dyn Backend>,
    /// How to connect again (the reconnect check goes through a proxy).
    pub connector: &'a dyn Connector,
    /// The parameters.
    pub params: &'a Params,
    /// The run tag every message of this check carries.
    pub run: u32,
    /// The run id topic names are made from.
    pub run_id: String,
}

impl Ctx<'_> {
    /// The per-run name of the check's topic `name`.
    pub fn topic(&self, name: &str) -> String {
        self.backend.topic_name(&self.run_id, name)
    }

    /// Creates `topics` on the broker.
    pub async fn prepare(&self, topics: Vec<TopicSpec>) -> Result<(), Stop> {
        let mut topology = RunTopology::new(self.run_id.clone());
        for topic in topics {
            topology = topology.topic(topic);
        }
        self.backend
            .prepare(&topology)
            .await
            .during("creating the check's topics")
    }

    /// A fresh ledger for this run.
    pub fn ledger(&self) -> ledger::Ledger {
        ledger::Ledger::new(self.run)
    }

    /// The instant `timeout` from now: the deadline for what is due.
    pub fn deadline(&self) -> Instant {
        Instant::now() + self.params.timeout
    }
}

/// What a check body concluded.
#[derive(Debug, Default)]
pub(crate) struct Finding {
    /// What went wrong; empty for a pass.
    pub failures: Vec<String>,
    /// One line on what held, for a pass.
    pub summary: String,
    /// The counts.
    pub counts: Counts,
}

impl Finding {
    /// A finding with `counts` and no failure yet.
    pub fn new(counts: Counts) -> Self {
        Finding {
            counts,
            ..Finding::default()
        }
    }

    /// Records a failure.
    pub fn fail(&mut self, what: impl Into<String>) {
        self.failures.push(what.into());
    }

    /// Sets the summary line of a pass.
    pub fn summary(mut self, line: impl Into<String>) -> Self {
        self.summary = line.into();
        self
    }
}

/// Why a check body stopped without a finding.
#[derive(Debug)]
pub(crate) enum Stop {
    /// The backend refused something as unsupported (a capability its adapter lacks).
    Unsupported(String),
    /// The harness could not do its job (set-up refused, broker unreachable, ...).
    Broken(String),
}

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stop::Unsupported(s) | Stop::Broken(s) => f.write_str(s),
        }
    }
}

/// Turns an adapter error into a [`Stop`] saying what the check was doing.
pub(crate) trait During<T> {
    /// `Err(e)` becomes a `Stop` reading `<what>: <e>`.
    fn during(self, what: &str) -> Result<T, Stop>;
}

impl<T> During<T> for Result<T, AdapterError> {
    fn during(self, what: &str) -> Result<T, Stop> {
        self.map_err(|e| {
            let text = format!("{what}: {e}");
            if e.kind() == ErrorKind::Unsupported {
                Stop::Unsupported(text)
            } else {
                Stop::Broken(text)
            }
        })
    }
}
