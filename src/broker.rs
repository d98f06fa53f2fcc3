//! `brokerbench broker`: the reference broker, reachable from the main binary so the
//! harness can start it as a child process.

use std::process::ExitCode;

/// Flags of `brokerbench broker`: exactly those of `reference-broker`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    broker: reference_broker::cli::BrokerArgs,
}

/// Runs the broker until SIGINT/SIGTERM.
pub fn main(args: &Args) -> ExitCode {
    reference_broker::cli::main(&args.broker)
}
