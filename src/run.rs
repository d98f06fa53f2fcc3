//! `brokerbench run`: one scenario, one backend, one run record.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use brokerbench_adapters::BackendKind;
use brokerbench_bench::{Phase, Progress, RunOptions};
use brokerbench_results::default_record_path;
use brokerbench_scenarios::{DEFAULT_SCENARIO, Scenario};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::check::FailOn;
use crate::connection::Connection;
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
