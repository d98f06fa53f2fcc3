//! The idle mode: many connections, each subscribed to a topic of its own; the broker's
//! RSS growth per connection.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use tokio::net::TcpStream;

use crate::figures::group;
use crate::host::{fmt_rss, rss_kib};
use crate::target::Target;
use crate::wire::{broker_stats, connect, subscribe, topic_prefix};
use crate::{Args, CONNECT_CONCURRENCY, FD_RESERVE, Result};

pub(crate) async fn idle(args: &Args, target: &Target, fd_limit: u64) -> Result<bool> {
    let fds_per_connection = if target.embedded { 2 } else { 1 };
    let allowed = fd_limit.saturating_sub(FD_RESERVE) / fds_per_connection;
    let count = args.connections.min(allowed);
    if count < args.connections {
        println!(
            "note: the open-files limit ({fd_limit}) allows {count} connections, not {}",
            args.connections
        );
    }
    let rss_before = target.rss_pid.and_then(rss_kib);
    let prefix = topic_prefix();
    let started = Instant::now();
    let addr = target.addr;
    let opened: Vec<Result<TcpStream>> = futures::stream::iter(0..count)
        .map(|i| {
            let topic = format!("{prefix}{i}");
            async move {
                let mut stream = connect(addr).await?;
                subscribe(&mut stream, &topic).await?;
                Ok(stream)
            }
        })
        .buffer_unordered(CONNECT_CONCURRENCY)
        .collect()
        .await;
    let setup = started.elapsed();
    let mut connections = Vec::with_capacity(opened.len());
    let mut errors: HashMap<String, u64> = HashMap::new();
    for result in opened {
        match result {
            Ok(stream) => connections.push(stream),
            Err(e) => *errors.entry(e.to_string()).or_default() += 1,
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_after = target.rss_pid.and_then(rss_kib);
    let stats = match connect(addr).await {
        Ok(mut control) => broker_stats(&mut control).await.ok(),
        Err(_) => None,
    };
    let open = connections.len() as u64;

    println!("== load idle ==");
    println!("broker            {}", target.label);
    println!(
        "connections       {} open and subscribed (each to its own topic) in {:.2} s; {} failed",
        group(open),
        setup.as_secs_f64(),
        group(errors.values().sum())
    );
    if let Some(stats) = stats {
        println!(
            "broker stats      connections {} (includes this stats connection)",
            group(stats.connections)
        );
    }
    println!(
        "broker RSS        before {}  after {}",
        fmt_rss(rss_before),
        fmt_rss(rss_after)
    );
    if let (Some(before), Some(after)) = (rss_before, rss_after) {
        let grown = after.saturating_sub(before);
        println!(
            "per connection    {:.2} KiB  (growth {:.1} MiB over {} connections; total RSS {:.1} MiB)",
            if open > 0 {
                grown as f64 / open as f64
            } else {
                0.0
            },
            grown as f64 / 1024.0,
            group(open),
            after as f64 / 1024.0
        );
    }
    for (e, n) in &errors {
        println!("error             {n} x {e}");
    }
    drop(connections);
    Ok(errors.is_empty())
}
