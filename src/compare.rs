//! `brokerbench compare`: the key figures of several runs side by side.

use std::path::PathBuf;
use std::process::ExitCode;

use brokerbench_results::{Comparison, RunRecord, same_scenario};

use crate::exit;
use crate::report::read_records;

/// Flags of `brokerbench compare`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Two or more run records; the first is the baseline of the differences.
    #[arg(required = true, num_args = 2.., value_name = "RECORD.json")]
    records: Vec<PathBuf>,
    /// Print a markdown table instead of the terminal table.
    #[arg(long)]
    markdown: bool,
    /// Compare runs of different scenarios anyway.
    #[arg(long)]
    force: bool,
}

/// Prints the comparison; refuses runs of different scenarios unless `--force`.
pub fn main(args: &Args) -> anyhow::Result<ExitCode> {
    let records = read_records(&args.records)?;
    let refs: Vec<&RunRecord> = records.iter().collect();
    if let Err(mismatch) = same_scenario(&refs) {
        let first = args.records[mismatch.first].display();
        let other = args.records[mismatch.other].display();
        if !args.force {
            eprintln!(
                "error: cannot compare runs of different scenarios: {first} ran `{}`, {other} ran `{}` (pass --force to compare them anyway)",
                mismatch.first_scenario, mismatch.other_scenario
            );
            return Ok(exit::harness_failure());
        }
        eprintln!(
            "warning: comparing runs of different scenarios (--force): {first} ran `{}`, {other} ran `{}`",
            mismatch.first_scenario, mismatch.other_scenario
        );
    }
    let comparison = Comparison::new(&refs);
    if args.markdown {
        print!("{}", comparison.render_markdown());
    } else {
        print!("{}", comparison.render_text());
    }
    Ok(exit::PASSED)
}
