//! `brokerbench merge`: one record from the records of several load generators, or from
//! the shards of one sharded run (checked to be exactly one whole run).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use brokerbench_results::{MergeError, merge, render_summary};

use crate::exit;
use crate::report::read_records;

/// Flags of `brokerbench merge`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Run records of the same scenario and backend, made at the same time by several
    /// load generators. Shard records (`run --shard`) merge only as a complete set:
    /// every shard 0..N once, one run id, one scenario hash, one --start-at; anything
    /// else is refused naming the files.
    #[arg(required = true, value_name = "RECORD.json")]
    records: Vec<PathBuf>,
    /// Where to write the merged record.
    #[arg(long, value_name = "MERGED.json")]
    out: PathBuf,
}

/// Merges the records and prints the merged run's summary.
pub fn main(args: &Args) -> anyhow::Result<ExitCode> {
    let records = read_records(&args.records)?;
    let merged = match merge(&records) {
        Ok(m) => m,
        Err(MergeError::DifferentScenarios(m)) => {
            eprintln!(
                "error: cannot merge runs of different scenarios: {} ran `{}`, {} ran `{}`",
                args.records[m.first].display(),
                m.first_scenario,
                args.records[m.other].display(),
                m.other_scenario
            );
            return Ok(exit::harness_failure());
        }
        Err(MergeError::DifferentBackends {
            first,
            first_backend,
            other,
            other_backend,
            ..
        }) => {
            eprintln!(
                "error: cannot merge runs of different backends: {} measured `{first_backend}`, {} measured `{other_backend}`",
                args.records[first].display(),
                args.records[other].display(),
            );
            return Ok(exit::harness_failure());
        }
        Err(MergeError::Shards(err)) => {
            let names: Vec<String> = args
                .records
                .iter()
                .map(|p| p.display().to_string())
                .collect();
            eprintln!("error: cannot merge: {}", err.describe(&names));
            return Ok(exit::harness_failure());
        }
        Err(err) => return Err(err).context("cannot merge the run records"),
    };
    merged
        .write(&args.out)
        .with_context(|| format!("cannot write the merged record to {}", args.out.display()))?;
    print!("{}", render_summary(&merged, Some(&args.out)));
    Ok(exit::PASSED)
}
