//! `brokerbench report`: one self-contained HTML page of one or more run records, or of a
//! conformance report.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use brokerbench_results::{ConformanceReport, ReportRun, RunRecord, render_report};

use crate::exit;

/// Flags of `brokerbench report`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Run records (JSON, as `brokerbench run` writes them); several are overlaid, one
    /// colour per run, the first being the baseline of the summary's differences. Or one
    /// conformance report (`brokerbench conform --json`): its matrix as a page.
    #[arg(required = true, value_name = "RECORD.json")]
    records: Vec<PathBuf>,
    /// Where to write the HTML page (`-` for stdout).
    #[arg(long, default_value = "report.html")]
    out: PathBuf,
}

/// Reads a run record for a subcommand.
///
/// # Errors
/// When it cannot be read, naming the path and the cause: `main` prints it as
/// `error: <path>: <cause>` and exits 2. The record error's text already ends with its
/// cause, so it is passed on as text: chained, `{:#}` would print the cause twice.
pub(crate) fn read_record(path: &Path) -> anyhow::Result<RunRecord> {
    RunRecord::read(path).map_err(|err| anyhow::anyhow!("{err}"))
}

/// Reads every record, or says which one cannot be read and why.
///
/// # Errors
/// The first record that cannot be read, as [`read_record`].
pub(crate) fn read_records(paths: &[PathBuf]) -> anyhow::Result<Vec<RunRecord>> {
    paths.iter().map(|p| read_record(p)).collect()
}

/// Writes `contents` to `path`, or to stdout when `path` is `-`; creates the directory.
///
/// # Errors
/// When the directory cannot be created or the file written, naming the path.
pub(crate) fn write_output(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    if path == Path::new("-") {
        let mut stdout = std::io::stdout().lock();
        stdout
            .write_all(contents)
            .and_then(|()| stdout.flush())
            .context("cannot write to stdout")?;
        return Ok(());
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(path, contents).with_context(|| format!("cannot write {}", path.display()))
}

/// Whether the JSON document at `path` is a conformance report (`"kind": "conformance"`);
/// a file that cannot be read or parsed is left to the run-record reader to explain.
fn is_conformance_report(path: &Path) -> bool {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .is_some_and(|json| json["kind"] == "conformance")
}

/// Renders the page of one conformance report.
fn conformance_page(args: &Args) -> anyhow::Result<ExitCode> {
    let [path] = args.records.as_slice() else {
        anyhow::bail!(
            "a conformance report is rendered alone: give one conformance report, or run records only"
        );
    };
    let report = ConformanceReport::read(path).map_err(|err| anyhow::anyhow!("{err}"))?;
    let html = brokerbench_results::conformance::html::render_html(&report);
    write_output(&args.out, html.as_bytes())?;
    if args.out != Path::new("-") {
        eprintln!(
            "conformance page of {} cells written to {}",
            report.cells.len(),
            args.out.display()
        );
    }
    Ok(exit::PASSED)
}

/// Renders the report.
pub fn main(args: &Args) -> anyhow::Result<ExitCode> {
    if args.records.iter().any(|p| is_conformance_report(p)) {
        return conformance_page(args);
    }
    let records = read_records(&args.records)?;
    let sources: Vec<String> = args
        .records
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let runs: Vec<ReportRun<'_>> = records
        .iter()
        .zip(&sources)
        .map(|(record, source)| ReportRun {
            record,
            source: Some(source),
        })
        .collect();
    let html = render_report(&runs).context("cannot render the report")?;
    write_output(&args.out, html.as_bytes())?;
    if args.out != Path::new("-") {
        eprintln!(
            "report of {} run(s) written to {} ({} KiB)",
            records.len(),
            args.out.display(),
            html.len().div_ceil(1024)
        );
    }
    Ok(exit::PASSED)
}
