//! `brokerbench check`: evaluate a stored run record's alert rules (or a rules file)
//! again; and the exit-code gate `run` shares with it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use brokerbench_alerts::{
    Notifier, NotifyFormat, Severity, Verdict, evaluate, read_rules_file, render_junit,
    render_verdicts, rules_from_json, worst,
};
use brokerbench_results::RunRecord;

use crate::exit;

/// The severity at which a verdict fails the command (`--fail-on`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum FailOn {
    /// Exit 1 when a rule reaches warning or critical.
    Warning,
    /// Exit 1 when a rule reaches critical.
    #[default]
    Critical,
    /// Report the verdicts but never fail on them (benchmarking, not gating).
    Never,
}

impl FailOn {
    /// The lowest failing severity; `None` for `never`.
    pub fn severity(self) -> Option<Severity> {
        match self {
            FailOn::Warning => Some(Severity::Warning),
            FailOn::Critical => Some(Severity::Critical),
            FailOn::Never => None,
        }
    }
}

/// The environment variable holding the bearer token for `--notify` (never stored).
pub const NOTIFY_TOKEN_ENV: &str = "BROKERBENCH_NOTIFY_BEARER_TOKEN";

/// The payload shapes of `--notify`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum NotifyShape {
    /// Alertmanager API v2: POST <URL>/api/v2/alerts with a JSON array of alerts.
    #[default]
    Alertmanager,
    /// Any webhook: POST <URL> with Alertmanager's webhook payload (version "4").
    Webhook,
}

/// `--notify` flags, shared by `run` and `check`.
#[derive(Debug, clap::Args)]
pub struct NotifyArgs {
    /// Post the firing alerts (warning and critical) to this Alertmanager base URL
    /// (http:// or https://), or to this webhook with --notify-format webhook. A bearer
    /// token is read from BROKERBENCH_NOTIFY_BEARER_TOKEN. A failed notification is
    /// printed and does not change the exit code.
    #[arg(long, value_name = "URL")]
    notify: Option<String>,
    /// The payload shape of --notify.
    #[arg(long, value_enum, default_value_t = NotifyShape::Alertmanager, requires = "notify")]
    notify_format: NotifyShape,
    /// Also trust the CA certificates in this PEM file for an https:// --notify URL
    /// (a receiver with a self-signed or private-CA certificate); the system's roots are
    /// always trusted.
    #[arg(long, value_name = "FILE", requires = "notify")]
    notify_ca: Option<PathBuf>,
    /// The bound on the whole notification exchange (connect, TLS, request, answer).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration, requires = "notify")]
    notify_timeout: Duration,
}

/// Posts the firing verdicts if `--notify` was given and prints what happened on stderr.
/// Bounded by `--notify-timeout`; a failure is printed, never returned, so the exit code
/// stays the evaluation's.
pub async fn notify(record: &RunRecord, verdicts: &[Verdict], args: &NotifyArgs) {
    let Some(url) = &args.notify else {
        return;
    };
    let format = match args.notify_format {
        NotifyShape::Alertmanager => NotifyFormat::Alertmanager,
        NotifyShape::Webhook => NotifyFormat::Webhook,
    };
    let notifier = match Notifier::new(url, format) {
        Ok(n) => n
            .bearer_token(std::env::var(NOTIFY_TOKEN_ENV).ok())
            .ca_file(args.notify_ca.clone())
            .timeout(args.notify_timeout),
        Err(err) => {
            eprintln!("notify: error: {err}");
            return;
        }
    };
    match notifier.send(record, verdicts).await {
        Ok(None) => eprintln!("notify: no alert fires; nothing sent to {}", notifier.url()),
        Ok(Some(sent)) => eprintln!(
            "notify: posted {} firing alert{} to {} (HTTP {})",
            sent.alerts,
            if sent.alerts == 1 { "" } else { "s" },
            sent.url,
            sent.status
        ),
        Err(err) => eprintln!("notify: error: {err} (the exit code is unchanged)"),
    }
}

/// [`notify`] from a command that has no async runtime of its own.
fn notify_blocking(record: &RunRecord, verdicts: &[Verdict], args: &NotifyArgs) {
    if args.notify.is_none() {
        return;
    }
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(notify(record, verdicts, args)),
        Err(err) => eprintln!("notify: error: cannot start the HTTP client's runtime: {err}"),
    }
}

/// Flags of `brokerbench check`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The run record to evaluate.
    #[arg(value_name = "RECORD.json")]
    record: PathBuf,
    /// Evaluate the [[alerts]] tables of this TOML file instead of the rules stored in
    /// the record (a rules file, or a scenario file).
    #[arg(long, value_name = "FILE")]
    rules: Option<PathBuf>,
    /// Exit 1 when a rule reaches this severity.
    #[arg(long, value_enum, default_value_t = FailOn::Critical)]
    fail_on: FailOn,
    /// Also write the verdicts as JUnit XML (one testcase per rule).
    #[arg(long, value_name = "PATH")]
    junit: Option<PathBuf>,
    /// Print the verdicts as JSON (the record's `verdicts` shape) instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    notify: NotifyArgs,
}

/// Evaluates the record.
pub fn main(args: &Args) -> anyhow::Result<ExitCode> {
    let record = crate::report::read_record(&args.record)?;
    let rules = match &args.rules {
        Some(path) => read_rules_file(path),
        None => rules_from_json(&record.alert_rules),
    };
    let rules = match rules {
        Ok(rules) => rules,
        Err(err) => {
            eprintln!("error: {err}");
            return Ok(exit::harness_failure());
        }
    };
    if rules.is_empty() {
        eprintln!(
            "note: {} has no alert rules; pass --rules FILE to evaluate it against some",
            args.record.display()
        );
    }
    let verdicts = evaluate(&record, &rules);
    if args.json {
        let json: Vec<_> = verdicts.iter().map(Verdict::to_json).collect();
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        println!(
            "{} on {} (run {}, {})",
            record.scenario_name,
            record.backend.name,
            record.run_id,
            args.record.display()
        );
        print!("{}", render_verdicts(&verdicts));
    }
    notify_blocking(&record, &verdicts, &args.notify);
    finish(&record, &verdicts, args.fail_on, args.junit.as_deref())
}

/// Writes the JUnit file if asked and maps the verdicts to an exit code: 1 when one is at
/// or above `fail_on`, else 0.
///
/// # Errors
/// When the JUnit file cannot be written.
pub fn finish(
    record: &RunRecord,
    verdicts: &[Verdict],
    fail_on: FailOn,
    junit: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    if let Some(path) = junit {
        let suite = format!(
            "{} on {} (run {})",
            record.scenario_name, record.backend.name, record.run_id
        );
        let xml = render_junit(&suite, verdicts, fail_on.severity());
        crate::report::write_output(path, xml.as_bytes())
            .with_context(|| format!("cannot write the JUnit report {}", path.display()))?;
    }
    let worst = worst(verdicts);
    if let Some(failing) = fail_on.severity() {
        if worst >= failing {
            eprintln!("alerts: {worst} (fails at --fail-on {failing})");
            return Ok(exit::alert_fired());
        }
    }
    Ok(exit::PASSED)
}
