//! `brokerbench alerts`: alert rules outside a run — export them for production
//! monitoring, and recommend thresholds from a history of runs.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use brokerbench_alerts::recommend::parse_sla;
use brokerbench_alerts::{
    RecommendOptions, export_prometheus, parse_rules, read_history, read_rules_file, recommend,
    render_text, render_toml,
};
use brokerbench_scenarios::Scenario;

use crate::exit;

/// Flags of `brokerbench alerts`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Export alert rules as Prometheus alerting rules, with promtool unit tests.
    Export(ExportArgs),
    /// Propose warning and critical thresholds per signal from past run records of one
    /// scenario on one backend, with the method, the numbers and the false alarms.
    Recommend(RecommendArgs),
}

/// The formats `alerts recommend` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum RecommendFormat {
    /// For people: per signal, the history, each threshold with its basis.
    Text,
    /// [[alerts]] tables that `brokerbench check --rules` and `alerts export --rules` read.
    Toml,
}

/// Flags of `brokerbench alerts recommend`.
#[derive(Debug, clap::Args)]
struct RecommendArgs {
    /// Directory of run records (searched recursively for *.json).
    #[arg(long, value_name = "DIR", default_value = "results")]
    history: PathBuf,
    /// The scenario name the records must have.
    #[arg(long, value_name = "NAME")]
    scenario: String,
    /// The backend the records must have (reference, nats, jetstream, ...).
    #[arg(long, value_name = "NAME")]
    backend: String,
    /// An SLA that caps the critical level, e.g. e2e.p99=20ms or availability=99.9%
    /// (repeatable).
    #[arg(long = "sla-critical", value_name = "SIGNAL=VALUE")]
    sla_critical: Vec<String>,
    /// Refuse with fewer usable (complete) runs than this.
    #[arg(long, default_value_t = 5)]
    min_runs: usize,
    /// Relative headroom above (below) the history, e.g. 0.2 for 20 %.
    #[arg(long, default_value_t = 0.2)]
    headroom: f64,
    /// `for` of the proposed rules: consecutive 1 s intervals that must breach.
    #[arg(long = "for", default_value_t = 3)]
    for_intervals: u32,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    format: RecommendFormat,
}

/// The formats `alerts export` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    /// Prometheus alerting-rule YAML over the `brokerbench_*` metrics of
    /// `brokerbench export --format prometheus`, plus a `promtool test rules` file.
    Prometheus,
}

/// Flags of `brokerbench alerts export`.
#[derive(Debug, clap::Args)]
struct ExportArgs {
    /// Output format.
    #[arg(long, value_enum, default_value = "prometheus")]
    format: Format,
    /// A TOML file of [[alerts]] tables (a rules file or a scenario file).
    #[arg(long, value_name = "FILE", conflicts_with = "scenario")]
    rules: Option<PathBuf>,
    /// The rules of a scenario (a built-in name or a TOML path); the expressions then
    /// select that scenario's series.
    #[arg(long, value_name = "NAME", required_unless_present = "rules")]
    scenario: Option<String>,
    /// Directory for `<name>.rules.yml` and `<name>.rules.test.yml`; without it the
    /// rules are printed on stdout and no test file is written.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

/// Runs the command.
pub fn main(args: &Args) -> anyhow::Result<ExitCode> {
    match &args.command {
        Command::Export(args) => export(args),
        Command::Recommend(args) => recommend_thresholds(args),
    }
}

fn recommend_thresholds(args: &RecommendArgs) -> anyhow::Result<ExitCode> {
    let fail = |err: &dyn std::fmt::Display| {
        eprintln!("error: {err}");
        Ok(exit::harness_failure())
    };
    if !(0.0..1.0).contains(&args.headroom) {
        return fail(&format!(
            "--headroom {} must lie in 0..1 (0.2 is 20 %)",
            args.headroom
        ));
    }
    let mut options = RecommendOptions {
        min_runs: args.min_runs,
        headroom: args.headroom,
        for_intervals: args.for_intervals.max(1),
        ..RecommendOptions::default()
    };
    for entry in &args.sla_critical {
        match parse_sla(entry) {
            Ok((signal, value)) => {
                options.sla.insert(signal, value);
            }
            Err(err) => return fail(&err),
        }
    }
    let history = match read_history(&args.history, &args.scenario, &args.backend) {
        Ok(h) => h,
        Err(err) => return fail(&err),
    };
    // The output lists the skipped files; a refusal lists them here.
    let skipped = history.skipped.clone();
    let recommendation = match recommend(history, options) {
        Ok(r) => r,
        Err(err) => {
            for s in &skipped {
                eprintln!("skipped {}: {}", s.path.display(), s.reason);
            }
            return fail(&err);
        }
    };
    match args.format {
        RecommendFormat::Text => print!("{}", render_text(&recommendation)),
        RecommendFormat::Toml => print!("{}", render_toml(&recommendation)),
    }
    Ok(exit::PASSED)
}

fn export(args: &ExportArgs) -> anyhow::Result<ExitCode> {
    let loaded = match (&args.rules, &args.scenario) {
        (Some(path), _) => read_rules_file(path)
            .map(|r| (r, None))
            .map_err(|e| e.to_string()),
        (None, Some(name)) => Scenario::load(name)
            .map_err(|e| e.to_string())
            .and_then(|s| {
                parse_rules(&s.alerts)
                    .map(|r| (r, Some(s.name.clone())))
                    .map_err(|e| format!("scenario {}: {e}", s.name))
            }),
        (None, None) => Err("give --rules FILE or --scenario NAME".to_owned()),
    };
    let (rules, scenario) = match loaded {
        Ok(x) => x,
        Err(err) => {
            eprintln!("error: {err}");
            return Ok(exit::harness_failure());
        }
    };
    if rules.is_empty() {
        eprintln!("error: no alert rules to export");
        return Ok(exit::harness_failure());
    }
    let stem = match (&scenario, &args.rules) {
        (Some(name), _) => format!("brokerbench-{name}"),
        (None, Some(path)) => path
            .file_stem()
            .map_or("brokerbench".into(), |s| s.to_string_lossy().into_owned()),
        (None, None) => "brokerbench".into(),
    };
    let rules_file = format!("{stem}.rules.yml");
    let Format::Prometheus = args.format;
    let export = export_prometheus(&rules, scenario.as_deref(), &rules_file);
    match &args.out {
        None => print!("{}", export.rules_yaml),
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            let tests_file = dir.join(format!("{stem}.rules.test.yml"));
            let rules_path = dir.join(&rules_file);
            std::fs::write(&rules_path, &export.rules_yaml)
                .with_context(|| format!("cannot write {}", rules_path.display()))?;
            std::fs::write(&tests_file, &export.tests_yaml)
                .with_context(|| format!("cannot write {}", tests_file.display()))?;
            println!(
                "wrote {} ({} rules) and {}\ncheck them with: promtool check rules {} && promtool test rules {}",
                rules_path.display(),
                rules.iter().map(|r| r.levels().len()).sum::<usize>(),
                tests_file.display(),
                rules_path.display(),
                tests_file.display()
            );
        }
    }
    Ok(exit::PASSED)
}
