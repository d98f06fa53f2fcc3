//! `brokerbench backends`: each backend's endpoint, what it guarantees, and whether it
//! answers right now.

use std::process::ExitCode;
use std::time::Duration;

use brokerbench_adapters::{BackendKind, Capabilities, ConnectOptions, endpoint};

/// Flags of `brokerbench backends`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only these backends (default: all but the in-process null backend).
    #[arg(value_name = "BACKEND")]
    only: Vec<BackendKind>,
    /// Do not connect; only print the endpoints.
    #[arg(long)]
    offline: bool,
    /// How long to try each broker.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

/// Prints one block per backend. Exit 0 when every backend asked for answers (or with
/// `--offline`), 2 otherwise.
pub async fn main(args: Args) -> anyhow::Result<ExitCode> {
    let kinds: Vec<BackendKind> = if args.only.is_empty() {
        BackendKind::ALL
            .into_iter()
            .filter(|k| *k != BackendKind::Null)
            .collect()
    } else {
        args.only.clone()
    };
    let mut all_up = true;
    for kind in kinds {
        let from_env = crate::connection::env_url(kind);
        let url = kind.resolve_url_with(None, |_| from_env.clone());
        let source = match (kind.env_var(), &from_env) {
            (Some(var), Some(_)) => format!("from {var}"),
            (Some(var), None) => format!("default; set {var} or pass --url to change it"),
            (None, _) => "no endpoint".to_owned(),
        };
        println!("{kind}");
        println!("  url           {} ({source})", endpoint::redact(&url));
        if !kind.is_implemented() {
            println!("  status        not built (rebuild with --features {kind})");
            all_up = false;
            continue;
        }
        if args.offline {
            continue;
        }
        if kind == BackendKind::Reference && from_env.is_none() {
            println!(
                "  status        embedded: `brokerbench run` starts its own reference broker unless a URL is configured"
            );
            continue;
        }
        let options = ConnectOptions::new()
            .connect_timeout(args.timeout)
            .request_timeout(args.timeout);
        match brokerbench_adapters::connect(kind, &url, options).await {
            Ok(backend) => {
                let version = backend.server_version().unwrap_or_else(|| "?".into());
                println!("  status        up ({version})");
                println!("  guarantees    {}", backend.capabilities());
                let missing = Capabilities::all().missing(backend.capabilities());
                if !missing.is_empty() {
                    println!("  lacks         {missing}");
                }
            }
            Err(err) => {
                all_up = false;
                println!("  status        down: {err}");
            }
        }
    }
    Ok(if all_up {
        crate::exit::PASSED
    } else {
        crate::exit::harness_failure()
    })
}
