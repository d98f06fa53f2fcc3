//! `brokerbench scenarios`: the built-in scenario library.

use std::process::ExitCode;

use anyhow::Context;

/// Flags of `brokerbench scenarios`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print this built-in scenario's TOML (a starting point for your own file).
    name: Option<String>,
    /// Print only the built-ins' names, one per line (for scripts).
    #[arg(long, conflicts_with = "name")]
    names: bool,
}

/// Lists the built-ins, or prints one.
pub fn main(args: &Args) -> anyhow::Result<ExitCode> {
    if let Some(name) = &args.name {
        let Some(source) = brokerbench_scenarios::builtin::source(name) else {
            let known: Vec<&str> = brokerbench_scenarios::builtin::names().collect();
            eprintln!(
                "error: no built-in scenario `{name}`; built-ins: {}",
                known.join(", ")
            );
            return Ok(crate::exit::harness_failure());
        };
        print!("{source}");
        return Ok(ExitCode::SUCCESS);
    }
    if args.names {
        for name in brokerbench_scenarios::builtin::names() {
            println!("{name}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let list = brokerbench_scenarios::builtin::list().context("a built-in scenario is broken")?;
    let width = list.iter().map(|s| s.name.len()).max().unwrap_or(0);
    for s in &list {
        let default = if s.name == brokerbench_scenarios::DEFAULT_SCENARIO {
            " (default)"
        } else {
            ""
        };
        println!(
            "{:width$}  {:>4.0}s  {:>7.0} msgs/s  {}{default}",
            s.name,
            s.total_time.as_secs_f64(),
            s.peak_rate,
            s.description,
        );
    }
    Ok(ExitCode::SUCCESS)
}
