//! `reference-broker`: run the brokerbench reference broker in the foreground.

use std::process::ExitCode;

use clap::Parser;

/// In-memory broker for brokerbench's JSON-lines pub/sub protocol.
///
/// Also started as `reference-broker PORT CACHE_SIZE`, like other servers of the protocol.
#[derive(Debug, Parser)]
#[command(name = "reference-broker", version)]
struct Cli {
    #[command(flatten)]
    broker: reference_broker::cli::BrokerArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    reference_broker::cli::main(&cli.broker)
}
