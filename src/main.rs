//! `brokerbench`: benchmark and conformance harness for message brokers.
//!
//! The binary is thin: it parses arguments, calls the workspace crates and maps outcomes
//! to exit codes (0 passed, 1 an alert or check failed, 2 the harness could not do its job).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod broker;

/// Benchmark and conformance harness for message brokers.
#[derive(Debug, Parser)]
#[command(name = "brokerbench", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the reference broker in the foreground (same flags as `reference-broker`).
    Broker(broker::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Broker(args) => broker::main(&args),
    }
}
