//! The broker under load: a process at an address, or one embedded in this process.

use std::net::SocketAddr;

use tokio::sync::oneshot;
use tokio::time::timeout;

use crate::{Args, IO_TIMEOUT, Result};

/// The broker under load: an address, where to read its RSS, and (embedded) its stopper.
pub(crate) struct Target {
    pub(crate) addr: SocketAddr,
    pub(crate) rss_pid: Option<u32>,
    pub(crate) label: String,
    pub(crate) embedded: bool,
    pub(crate) shutdown: Option<oneshot::Sender<()>>,
}

impl Target {
    pub(crate) async fn new(args: &Args) -> Result<Target> {
        if args.embedded {
            let (addr, shutdown) = start_embedded()?;
            return Ok(Target {
                addr,
                rss_pid: Some(std::process::id()),
                label: format!("embedded broker on {addr} (RSS includes the driver)"),
                embedded: true,
                shutdown: Some(shutdown),
            });
        }
        let addr = timeout(IO_TIMEOUT, tokio::net::lookup_host(args.addr.as_str()))
            .await
            .map_err(|_| format!("resolving {} timed out", args.addr))??
            .next()
            .ok_or_else(|| format!("{} resolves to no address", args.addr))?;
        let label = match args.broker_pid {
            Some(pid) => format!("broker process {pid} at {addr}"),
            None => format!("broker at {addr}"),
        };
        Ok(Target {
            addr,
            rss_pid: args.broker_pid,
            label,
            embedded: false,
            shutdown: None,
        })
    }

    pub(crate) fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

/// Starts the reference broker on its own runtime and thread, on 127.0.0.1:0.
pub(crate) fn start_embedded() -> Result<(SocketAddr, oneshot::Sender<()>)> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let (tx, rx) = oneshot::channel::<()>();
    std::thread::Builder::new()
        .name("embedded-broker".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("broker")
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    eprintln!("embedded broker: cannot start its runtime: {e}");
                    return;
                }
            };
            runtime.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(listener) => listener,
                    Err(e) => {
                        eprintln!("embedded broker: {e}");
                        return;
                    }
                };
                let config = reference_broker::Config::default();
                if let Err(e) = reference_broker::run(listener, config, async move {
                    let _ = rx.await;
                })
                .await
                {
                    eprintln!("embedded broker stopped with an error: {e}");
                }
            });
        })?;
    Ok((addr, tx))
}
