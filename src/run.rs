//! `brokerbench run`: one scenario, one backend, one run record.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use brokerbench_adapters::{Backend, BackendKind, ConnectOptions, endpoint};
use brokerbench_bench::{Phase, Progress, RunOptions};
use brokerbench_results::{BackendInfo, HostFacts, RunInfo, RunRecord, default_record_path};
use brokerbench_scenarios::{DEFAULT_SCENARIO, Scenario};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::check::FailOn;
use crate::embedded::EmbeddedBroker;
use crate::exit;
use crate::workers;

/// Flags of `brokerbench run`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A built-in scenario name (see `brokerbench scenarios`) or a path to a TOML file.
    #[arg(default_value = DEFAULT_SCENARIO)]
    scenario: String,
    /// Broker to run against. Without --url (or its environment variable), `reference`
    /// starts an embedded reference broker as a child process.
    #[arg(long, default_value = "reference")]
    backend: BackendKind,
    /// Broker endpoint, e.g. tcp://127.0.0.1:7000 (default: the backend's
    /// BROKERBENCH_<BACKEND>_URL, else its usual localhost address).
    #[arg(long, conflicts_with = "containers")]
    url: Option<String>,
    /// Start the broker in a Docker container (the project's official image) for this
    /// run and remove it afterwards. Needs a Docker engine and a build with the
    /// `containers` feature.
    #[arg(long)]
    containers: bool,
    /// Runtime worker threads of the harness [default: one per core].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    workers: Option<u16>,
    /// Total offered rate in msgs/s (e.g. 5000 or 20k/s); scales every workload.
    #[arg(long, value_parser = brokerbench_scenarios::parse_rate)]
    rate: Option<f64>,
    /// Length of the measured phase (e.g. 30s, 2m).
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Where to write the run record [default: results/<UTC time>-<scenario>-<backend>.json].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print the run record as JSON on stdout instead of the summary table.
    #[arg(long)]
    json: bool,
    /// Also write the per-interval histograms as an HdrHistogram interval log
    /// (e.g. run.hlog; readable by HistogramLogProcessor and HdrHistogram's plotters).
    #[arg(long, value_name = "PATH")]
    hlog: Option<PathBuf>,
    /// Exit 1 when one of the scenario's alert rules reaches this severity.
    #[arg(long, value_enum, default_value_t = FailOn::Critical)]
    fail_on: FailOn,
    /// Also write the alert verdicts as JUnit XML (one testcase per rule).
    #[arg(long, value_name = "PATH")]
    junit: Option<PathBuf>,
    #[command(flatten)]
    notify: crate::check::NotifyArgs,
    #[command(flatten)]
    shard: crate::shard::ShardArgs,
    #[command(flatten)]
    faults: crate::fault_run::FaultArgs,
}

/// Where a run's broker lives.
enum Target {
    Embedded(Arc<EmbeddedBroker>),
    /// A broker started elsewhere; its pid when it listens on this machine.
    Remote(Option<u32>),
    /// A container started for this run (removed when dropped).
    #[cfg(feature = "containers")]
    Container(brokerbench_adapters::containers::RunningBroker),
}

/// Runs the command.
pub async fn main(args: Args) -> anyhow::Result<ExitCode> {
    let mut scenario = match Scenario::load(&args.scenario) {
        Ok(s) => s,
        Err(err) => {
            eprintln!("error: {err}");
            return Ok(exit::harness_failure());
        }
    };
    if let Some(rate) = args.rate {
        scenario = scenario.with_rate(rate)?;
    }
    if let Some(duration) = args.duration {
        scenario = scenario.with_duration(duration)?;
    }
    let extra_faults = match args.faults.specs() {
        Ok(faults) => faults,
        Err(err) => {
            eprintln!("error: {err}");
            return Ok(exit::harness_failure());
        }
    };
    if !extra_faults.is_empty() {
        scenario = match scenario.with_faults(extra_faults) {
            Ok(s) => s,
            Err(err) => {
                eprintln!("error: {err}");
                return Ok(exit::harness_failure());
            }
        };
    }
    // Refuse invalid alert rules before measuring anything.
    let rules = match brokerbench_alerts::parse_rules(&scenario.alerts) {
        Ok(rules) => rules,
        Err(err) => {
            eprintln!("error: scenario {}: {err}", scenario.name);
            return Ok(exit::harness_failure());
        }
    };

    // Shard identity, run id and plan before connecting: a scenario that cannot be split
    // is refused at once.
    let coordination = match args.shard.resolve(&scenario) {
        Ok(c) => c,
        Err(err) => {
            eprintln!("error: {err}");
            return Ok(exit::harness_failure());
        }
    };
    let plan = match coordination.plan(&scenario) {
        Ok(plan) => plan,
        Err(err) => {
            eprintln!("error: {err}");
            return Ok(exit::harness_failure());
        }
    };

    let connection =
        match Connection::open(args.backend, args.url.as_deref(), args.containers).await {
            Ok(c) => c,
            Err(err) => {
                eprintln!("error: {err:#}");
                return Ok(exit::harness_failure());
            }
        };
    let url = connection.url.clone();

    let run_id = coordination.run_id.clone();
    let quiet = args.json || !std::io::stderr().is_terminal() || std::env::var_os("CI").is_some();
    let cancel = CancellationToken::new();
    let fault_run = match crate::fault_run::FaultRun::start(
        &scenario,
        &connection,
        &args.faults,
        &cancel,
    )
    .await
    {
        Ok(f) => f,
        Err(err) => {
            eprintln!("error: {err:#}");
            connection.close().await;
            return Ok(exit::harness_failure());
        }
    };
    let (progress_tx, progress_rx) = watch::channel(Progress::default());
    let display = tokio::spawn(show_progress(progress_rx, quiet, scenario.name.clone()));
    let ctrl_c = {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("\ninterrupted: finishing the run record...");
                cancel.cancel();
            }
        })
    };
    eprintln!(
        "running {} on {} ({}) for {:?} measured (+{:?} warm-up, {:?} drain)",
        scenario.name, args.backend, url, scenario.duration, scenario.warmup, scenario.drain
    );
    if let Some(line) = coordination.describe(&plan, &scenario) {
        eprintln!("{line}");
    }
    let outcome = brokerbench_bench::run(
        &plan,
        fault_run
            .as_ref()
            .map_or_else(|| connection.backend.clone(), |f| f.backend.clone()),
        RunOptions {
            broker_pid: connection.broker_pid,
            cancel: cancel.clone(),
            progress: Some(progress_tx),
            start_at: coordination.start_instant(),
            faults: fault_run.as_ref().map(|f| f.hooks.clone()),
        },
    )
    .await;
    ctrl_c.abort();
    let _ = display.await;
    let mut outcome = match outcome {
        Ok(outcome) => outcome,
        Err(brokerbench_bench::EngineError::NotReady(err)) => {
            eprintln!("error: {err}");
            if let Some(faults) = fault_run {
                faults.abandon().await;
            }
            connection.close().await;
            return Ok(exit::not_ready());
        }
        Err(err) => {
            eprintln!("error: {err}");
            if let Some(faults) = fault_run {
                faults.abandon().await;
            }
            connection.close().await;
            return Ok(exit::harness_failure());
        }
    };
    let timing = crate::shard::Timing::of(&outcome);
    let timeline = outcome.timeline.take();
    let mut record = connection.record(run_id, &scenario, outcome)?;
    coordination.annotate(&mut record, &plan, &scenario, &timing);
    if let Some(faults) = fault_run {
        faults.finish(&mut record, timeline).await;
    }
    if let Some(died) = connection.close().await {
        if !record.partial {
            record.mark_partial(died);
        }
    }
    let partial = record.partial_reason.clone().filter(|_| record.partial);
    let verdicts = brokerbench_alerts::evaluate(&record, &rules);
    record.verdicts = verdicts
        .iter()
        .map(brokerbench_alerts::Verdict::to_json)
        .collect();
    let path = args.out.clone().unwrap_or_else(|| {
        default_record_path(
            std::path::Path::new("results"),
            record.started_at,
            &record.scenario_name,
            &record.backend.name,
        )
    });
    // `write` creates the directory.
    record
        .write(&path)
        .with_context(|| format!("cannot write the run record to {}", path.display()))?;
    if let Some(hlog) = &args.hlog {
        let log = crate::export::render(&record, crate::export::Format::Hlog)?;
        crate::report::write_output(hlog, &log)?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&record)?);
    } else {
        print!(
            "{}",
            brokerbench_results::render_summary(&record, Some(&path))
        );
        print!("{}", brokerbench_alerts::render_verdicts(&verdicts));
    }
    // The HTTP post blocks (bounded by its timeouts): keep it off the runtime's workers.
    crate::check::notify(&record, &verdicts, &args.notify).await;
    let gate = crate::check::finish(&record, &verdicts, args.fail_on, args.junit.as_deref())?;
    if let Some(reason) = partial {
        eprintln!("the run is incomplete: {reason}");
        return Ok(exit::harness_failure());
    }
    Ok(gate)
}

impl Args {
    /// The harness's runtime worker threads (see [`crate::workers`]).
    pub fn worker_threads(&self) -> usize {
        workers::count(self.workers)
    }
}

/// A broker to run against, connected: started in-process (embedded reference broker),
/// in a container, or found at its URL. `run` uses it for one run, `capacity` for many.
pub(crate) struct Connection {
    target: Target,
    kind: BackendKind,
    /// The connected backend.
    pub backend: Arc<dyn Backend>,
    /// The endpoint, credentials redacted.
    pub url: String,
    /// The endpoint as given, credentials included, to connect more clients.
    pub raw_url: String,
    /// The broker's process on this machine, for CPU and memory figures.
    pub broker_pid: Option<u32>,
    /// Notes for the record about the set-up (what could not be sampled).
    pub setup_notes: Vec<String>,
}

impl Connection {
    /// Starts or finds the broker of `kind` and connects to it: `--containers` starts a
    /// container; `reference` without a URL (flag or environment) starts an embedded
    /// broker; otherwise the URL resolves as the adapter crate says.
    ///
    /// # Errors
    /// When the broker cannot be started or connected to.
    pub(crate) async fn open(
        kind: BackendKind,
        url: Option<&str>,
        containers: bool,
    ) -> anyhow::Result<Self> {
        Self::open_with(kind, url, containers, &[]).await
    }

    /// [`open`](Self::open), starting an embedded reference broker with the extra
    /// `broker_flags` (`--cache-size 100`, ...).
    ///
    /// # Errors
    /// When the broker cannot be started or connected to.
    pub(crate) async fn open_with(
        kind: BackendKind,
        url: Option<&str>,
        containers: bool,
        broker_flags: &[String],
    ) -> anyhow::Result<Self> {
        let from_env = env_url(kind);
        let configured = url.is_some() || from_env.is_some();
        let (target, url) = match kind {
            _ if containers => start_container(kind).await?,
            BackendKind::Reference if !configured => {
                let broker = EmbeddedBroker::start(broker_flags).await?;
                let url = broker.url().to_string();
                (Target::Embedded(Arc::new(broker)), url)
            }
            kind => {
                let url = kind.resolve_url_with(url, |_| from_env);
                (Target::Remote(local_broker_pid(kind, &url)), url)
            }
        };
        let connected = match connect_options() {
            Ok(options) => brokerbench_adapters::connect(kind, &url, options)
                .await
                .map_err(anyhow::Error::from),
            Err(err) => Err(err),
        };
        let backend: Arc<dyn Backend> = match connected {
            Ok(b) => Arc::from(b),
            Err(err) => {
                if let Target::Embedded(broker) = target {
                    broker.stop().await;
                }
                return Err(err);
            }
        };
        let broker_pid = match &target {
            Target::Embedded(b) => Some(b.pid()),
            Target::Remote(pid) => *pid,
            #[cfg(feature = "containers")]
            Target::Container(_) => None,
        };
        let mut setup_notes = Vec::new();
        match &target {
            Target::Remote(None) => setup_notes.push(format!(
                "broker CPU and memory were not sampled: no process of this machine was found listening on {}",
                endpoint::redact(&url)
            )),
            #[cfg(feature = "containers")]
            Target::Container(broker) => setup_notes.push(format!(
                "the broker ran in a container ({}); its CPU and memory were not sampled",
                broker.image()
            )),
            _ => {}
        }
        Ok(Self {
            target,
            kind,
            backend,
            url: endpoint::redact(&url),
            raw_url: url,
            broker_pid,
            setup_notes,
        })
    }

    /// The run record of one run of `scenario` over this connection (no verdicts yet);
    /// partial when the engine says so.
    ///
    /// # Errors
    /// When the scenario or its rules cannot be serialised.
    pub(crate) fn record(
        &self,
        run_id: String,
        scenario: &Scenario,
        outcome: brokerbench_bench::RunOutcome,
    ) -> anyhow::Result<RunRecord> {
        let info = RunInfo {
            run_id,
            scenario_name: scenario.name.clone(),
            scenario: scenario
                .to_json()
                .context("cannot serialise the scenario")?,
            alert_rules: serde_json::to_value(&scenario.alerts)
                .context("cannot serialise the alert rules")?,
            backend: BackendInfo {
                name: self.kind.to_string(),
                url: Some(self.url.clone()),
                version: self.backend.server_version(),
            },
            host: HostFacts {
                harness_workers: tokio::runtime::Handle::try_current()
                    .ok()
                    .and_then(|h| u32::try_from(h.metrics().num_workers()).ok()),
                ..HostFacts::detect(env!("CARGO_PKG_VERSION"))
            },
            started_at: outcome.started_at,
            ended_at: outcome.ended_at,
        };
        let mut record = RunRecord::new(info, outcome.figures);
        record.scenario_hash = Some(
            scenario
                .fingerprint()
                .context("cannot fingerprint the scenario")?,
        );
        record.notes = self.setup_notes.clone();
        record.notes.extend(outcome.notes);
        record.figures.correctness.recovered = outcome.recovered;
        record.figures.correctness.replayed = outcome.replayed;
        if let Some(reason) = outcome.partial {
            record.mark_partial(reason);
        }
        Ok(record)
    }

    /// Whether the broker is the embedded reference broker started for these runs.
    pub(crate) fn is_embedded(&self) -> bool {
        matches!(self.target, Target::Embedded(_))
    }

    /// The embedded reference broker started for these runs, to restart it.
    pub(crate) fn embedded(&self) -> Option<Arc<EmbeddedBroker>> {
        match &self.target {
            Target::Embedded(broker) => Some(broker.clone()),
            _ => None,
        }
    }

    /// The backend kind.
    pub(crate) fn kind(&self) -> BackendKind {
        self.kind
    }

    /// Stops what was started for the runs (the embedded broker; a container is removed
    /// when dropped). Returns why the embedded broker died, if it did.
    pub(crate) async fn close(self) -> Option<String> {
        match self.target {
            Target::Embedded(broker) => {
                let died = broker
                    .exited()
                    .map(|status| format!("the embedded broker died during the run ({status})"));
                broker.stop().await;
                died
            }
            _ => None,
        }
    }
}

/// The endpoint `kind`'s environment variable (`BROKERBENCH_<BACKEND>_URL`) names, read
/// once; `None` when it is unset or blank, which [`BackendKind::resolve_url_with`] reads
/// as "use the default URL". Pass it on as that function's environment.
pub(crate) fn env_url(kind: BackendKind) -> Option<String> {
    kind.env_var()
        .and_then(|var| std::env::var(var).ok())
        .filter(|url| !url.trim().is_empty())
}

/// How long a connection to the broker may take (TCP connect plus the protocol's
/// handshake), from [`CONNECT_TIMEOUT_ENV`]; unset or blank, the adapters' default (5 s).
pub(crate) const CONNECT_TIMEOUT_ENV: &str = "BROKERBENCH_CONNECT_TIMEOUT";

/// The options every connection of a run is opened with: the adapters' defaults, with
/// the connect timeout from [`CONNECT_TIMEOUT_ENV`] when it is set (a loaded machine, a
/// broker far away).
///
/// # Errors
/// When the variable is set but is not a duration such as `30s` or `1m`.
pub(crate) fn connect_options() -> anyhow::Result<ConnectOptions> {
    let options = ConnectOptions::new();
    let Some(value) = std::env::var(CONNECT_TIMEOUT_ENV)
        .ok()
        .filter(|v| !v.trim().is_empty())
    else {
        return Ok(options);
    };
    let timeout = humantime::parse_duration(value.trim()).with_context(|| {
        format!("{CONNECT_TIMEOUT_ENV}={value:?} is not a duration (write it like 30s or 1m)")
    })?;
    anyhow::ensure!(
        !timeout.is_zero(),
        "{CONNECT_TIMEOUT_ENV}={value:?}: a connect timeout must be longer than zero"
    );
    Ok(options.connect_timeout(timeout))
}

/// The pid of the process listening on the first loopback endpoint of `url`, so a broker
/// on this machine has its CPU and memory sampled like the embedded one.
fn local_broker_pid(kind: BackendKind, url: &str) -> Option<u32> {
    let endpoints = endpoint::endpoints(kind, url).ok()?;
    let local = endpoints.iter().find(|e| e.is_loopback())?;
    brokerbench_bench::resources::listening_pid(local.port)
}

/// Starts `kind`'s broker in a container.
#[cfg(feature = "containers")]
async fn start_container(kind: BackendKind) -> anyhow::Result<(Target, String)> {
    eprintln!("starting the {kind} broker in a container (pulling the image if needed)...");
    let broker = brokerbench_adapters::containers::start(kind).await?;
    eprintln!(
        "container {} ({}) is ready at {}",
        &broker.id()[..12.min(broker.id().len())],
        broker.image(),
        broker.url()
    );
    let url = broker.url().to_owned();
    Ok((Target::Container(broker), url))
}

/// Without the `containers` feature, `--containers` explains how to get it.
#[cfg(not(feature = "containers"))]
async fn start_container(kind: BackendKind) -> anyhow::Result<(Target, String)> {
    anyhow::bail!(
        "--containers needs a brokerbench built with the `containers` feature (cargo install --path . --features containers) and a Docker engine; without them, start the {kind} broker yourself and pass --url"
    )
}

/// `<UTC yyyymmddThhmmss>-<4 random hex>`: unique, sortable, safe in every broker's names.
pub(crate) fn run_id() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!(
        "{:04}{:02}{:02}t{:02}{:02}{:02}-{:04x}",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second(),
        fastrand::u16(..)
    )
}

/// A progress bar on a terminal; a plain line every few seconds otherwise.
async fn show_progress(mut rx: watch::Receiver<Progress>, quiet: bool, scenario: String) {
    let bar = (!quiet).then(|| {
        let bar = indicatif::ProgressBar::new(1000);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{prefix:.bold} [{bar:30}] {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_prefix(scenario.clone());
        bar
    });
    let mut last_line = std::time::Instant::now();
    while rx.changed().await.is_ok() {
        let p = rx.borrow_and_update().clone();
        let line = format!(
            "{:>5.1}s/{:.0}s {:<7} offered {:>8.0}/s  published {:>8.0}/s  p99 {}  errors {}",
            p.elapsed.as_secs_f64(),
            p.total.as_secs_f64(),
            phase_name(p.phase),
            p.offered_rate,
            p.publish_rate,
            p.p99_us.map_or("-".to_string(), format_us),
            p.errors
        );
        match &bar {
            Some(bar) => {
                let done = if p.total.is_zero() {
                    0
                } else {
                    (p.elapsed.as_secs_f64() / p.total.as_secs_f64() * 1000.0) as u64
                };
                bar.set_position(done.min(1000));
                bar.set_message(line);
            }
            None => {
                if last_line.elapsed() >= Duration::from_secs(2) && p.phase != Phase::Setup {
                    eprintln!("{line}");
                    last_line = std::time::Instant::now();
                }
            }
        }
        if p.phase == Phase::Done {
            break;
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
}

fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Setup => "setup",
        Phase::Warmup => "warm-up",
        Phase::Measure => "measure",
        Phase::Drain => "drain",
        Phase::Done => "done",
    }
}

fn format_us(us: f64) -> String {
    if us >= 1000.0 {
        format!("{:.2}ms", us / 1000.0)
    } else {
        format!("{us:.0}µs")
    }
}
