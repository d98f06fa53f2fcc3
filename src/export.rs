//! `brokerbench export`: a stored run record in another tool's format.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use brokerbench_results::{MetricsFormat, RunRecord, render_metrics, write_interval_log};

use crate::exit;
use crate::report::{read_record, write_output};

/// The formats `export` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// OpenMetrics 1.0 text: histograms, summaries, gauges and counters named
    /// `brokerbench_*` (see results/README.md).
    Openmetrics,
    /// The same metrics in Prometheus text format 0.0.4 (what `promtool check metrics`
    /// lints).
    Prometheus,
    /// HdrHistogram interval log of the per-interval histograms (`.hlog`).
    Hlog,
}

/// Flags of `brokerbench export`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The run record to export.
    #[arg(value_name = "RECORD.json")]
    record: PathBuf,
    /// Output format.
    #[arg(long, value_enum)]
    format: Format,
    /// Where to write it (`-` for stdout).
    #[arg(long, default_value = "-")]
    out: PathBuf,
}

/// The record in `format`, as bytes.
///
/// # Errors
/// When the record's histograms do not decode.
pub(crate) fn render(record: &RunRecord, format: Format) -> anyhow::Result<Vec<u8>> {
    Ok(match format {
        Format::Openmetrics => render_metrics(record, MetricsFormat::OpenMetrics)?.into_bytes(),
        Format::Prometheus => render_metrics(record, MetricsFormat::Prometheus)?.into_bytes(),
        Format::Hlog => {
            let mut out = Vec::new();
            write_interval_log(record, &mut out)?;
            out
        }
    })
}

/// Exports the record.
pub fn main(args: &Args) -> anyhow::Result<ExitCode> {
    let record = read_record(&args.record)?;
    let bytes = render(&record, args.format)
        .with_context(|| format!("cannot export {}", args.record.display()))?;
    write_output(&args.out, &bytes)?;
    Ok(exit::PASSED)
}
