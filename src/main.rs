//! `brokerbench`: benchmark and conformance harness for message brokers.
//!
//! The binary is thin: it parses arguments, calls the workspace crates and maps outcomes
//! to exit codes.

// Doc comments here are clap help texts: they use <PLACEHOLDERS> and [[alerts]], which
// rustdoc would read as HTML and as links.
#![allow(rustdoc::invalid_html_tags, rustdoc::broken_intra_doc_links)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod alerts;
mod backends;
mod broker;
mod capacity;
mod check;
mod compare;
mod conform;
mod connection;
mod embedded;
mod export;
mod fault_run;
mod merge;
mod report;
mod run;
mod scenarios;
mod shard;
mod workers;

/// Exit codes, as DESIGN.md defines them.
mod exit {
    use std::process::ExitCode;
    /// Everything passed.
    pub const PASSED: ExitCode = ExitCode::SUCCESS;
    /// An alert rule reached the failing severity (`--fail-on`), or a conformance
    /// check failed.
    pub fn alert_fired() -> ExitCode {
        ExitCode::from(1)
    }
    /// The harness could not do its job: bad scenario, unreachable broker, interrupted
    /// run, internal error.
    pub fn harness_failure() -> ExitCode {
        ExitCode::from(2)
    }
    /// `run --start-at`: set-up was not done in time to start the warm-up before the
    /// start instant; nothing was measured.
    pub fn not_ready() -> ExitCode {
        ExitCode::from(3)
    }
}

/// Benchmark and conformance harness for message brokers.
///
/// Exit codes: 0 everything passed; 1 an alert at the failing severity fired or a
/// conformance check failed; 2 the harness could not do its job (bad scenario,
/// unreachable broker, interrupted run, internal error); 3 `run --start-at`: not set up
/// in time for the start instant, nothing measured.
#[derive(Debug, Parser)]
#[command(name = "brokerbench", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a scenario against a broker and write a run record.
    Run(run::Args),
    /// List the built-in scenarios, or print one.
    Scenarios(scenarios::Args),
    /// Show each backend's endpoint, its guarantees, and whether it answers.
    Backends(backends::Args),
    /// Run the reference broker in the foreground (same flags as `reference-broker`).
    Broker(broker::Args),
    /// Write one self-contained HTML report (plots, summary, facts) of run records.
    Report(report::Args),
    /// Compare the key figures of run records side by side.
    Compare(compare::Args),
    /// Merge the records of several load generators' concurrent runs, or the shards of
    /// one sharded run (all of them, checked), into one record.
    Merge(merge::Args),
    /// Export a run record as OpenMetrics / Prometheus text or an HdrHistogram interval log.
    Export(export::Args),
    /// Evaluate a stored run record's alert rules (or a rules file) again; exit 1 when
    /// one reaches --fail-on.
    Check(check::Args),
    /// Alert rules: export them as Prometheus alerting rules (with promtool tests), or
    /// recommend thresholds from a history of runs.
    Alerts(alerts::Args),
    /// Step the offered rate up with real runs until the SLA breaks; report the break
    /// point, the curve and call-volume thresholds.
    Capacity(capacity::Args),
    /// Check which delivery guarantees each broker really keeps: a matrix of checks ×
    /// backends (pass, FAIL, unsupported), compared with the expected matrix.
    Conform(Box<conform::Args>),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Broker(args) => broker::main(&args),
        Command::Scenarios(args) => report(scenarios::main(&args)),
        Command::Run(args) => block_on(args.worker_threads(), run::main(args)),
        Command::Backends(args) => block_on(workers::available_cores(), backends::main(args)),
        Command::Report(args) => report(report::main(&args)),
        Command::Compare(args) => report(compare::main(&args)),
        Command::Merge(args) => report(merge::main(&args)),
        Command::Export(args) => report(export::main(&args)),
        Command::Check(args) => report(check::main(&args)),
        Command::Alerts(args) => report(alerts::main(&args)),
        Command::Capacity(args) => block_on(args.worker_threads(), capacity::main(args)),
        Command::Conform(args) => block_on(workers::available_cores(), conform::main(*args)),
    }
}

/// Runs an async subcommand on a multi-threaded tokio runtime with `workers` worker
/// threads.
fn block_on(
    workers: usize,
    command: impl std::future::Future<Output = anyhow::Result<ExitCode>>,
) -> ExitCode {
    match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
    {
        Ok(runtime) => report(runtime.block_on(command)),
        Err(err) => report(Err(err.into())),
    }
}

/// Prints an error with its whole cause chain and maps it to exit code 2.
fn report(result: anyhow::Result<ExitCode>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            exit::harness_failure()
        }
    }
}
