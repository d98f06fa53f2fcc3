//! Shared helpers for the backend integration tests: connect to a local broker, or skip
//! the test loudly when it is not running (unless `BROKERBENCH_REQUIRE_BACKENDS` says it
//! must be there, as in CI).

#![allow(dead_code)]

use std::io::Write;
use std::time::Duration;

use brokerbench_adapters::{Backend, BackendKind, ConnectOptions, connect};

/// Whether `BROKERBENCH_REQUIRE_BACKENDS` (`all`, or a comma-separated list of backend
/// names) requires `kind`: then a broker that cannot be reached fails the test.
pub fn required(kind: BackendKind) -> bool {
    std::env::var("BROKERBENCH_REQUIRE_BACKENDS").is_ok_and(|list| {
        list.split(',').map(str::trim).any(|name| {
            name.eq_ignore_ascii_case("all") || name.eq_ignore_ascii_case(kind.as_str())
        })
    })
}

/// Options with a short connect timeout, so a missing broker is noticed quickly.
pub fn options() -> ConnectOptions {
    ConnectOptions::new()
        .connect_timeout(Duration::from_secs(3))
        .publish_timeout(Duration::from_secs(10))
        .request_timeout(Duration::from_secs(10))
}

/// The URL for `kind`: its environment variable, else its default.
pub fn url(kind: BackendKind) -> String {
    kind.resolve_url(None)
}

/// Connects to the local broker of `kind`, or returns `None` after writing a SKIPPED line
/// straight to the test process's stderr (not captured by the test harness, so it shows
/// in a plain `cargo test`). Panics instead when [`required`] says the broker must be
/// there.
pub async fn backend(kind: BackendKind, test: &str) -> Option<Box<dyn Backend>> {
    let url = url(kind);
    match connect(kind, &url, options()).await {
        Ok(backend) => Some(backend),
        Err(err) if required(kind) => panic!(
            "{test}: the {kind} broker is required (BROKERBENCH_REQUIRE_BACKENDS) but: {err}"
        ),
        Err(err) => {
            skip(kind, test, &err.to_string());
            None
        }
    }
}

/// Writes the SKIPPED line for `test` on `kind`.
pub fn skip(kind: BackendKind, test: &str, why: &str) {
    let line = format!(
        "SKIPPED {kind} test {test}: {why} (start the brokers with `scripts/services up`, or set BROKERBENCH_REQUIRE_BACKENDS=all to make this a failure)\n"
    );
    let _ = std::io::stderr().write_all(line.as_bytes());
}

/// A run id unique to this test process and call, for per-run topic names.
pub fn run_id(test: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "t{}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        test.replace(|c: char| !c.is_ascii_alphanumeric(), "-")
    )
}

/// The next delivery within `patience`, failing the test on an error item, the end of the
/// stream, or a long wait.
pub async fn next_within(
    sub: &mut brokerbench_adapters::Subscription,
    patience: Duration,
) -> brokerbench_adapters::Delivery {
    use futures::StreamExt;
    match tokio::time::timeout(patience, sub.next()).await {
        Ok(Some(Ok(delivery))) => delivery,
        Ok(Some(Err(e))) => panic!("error item on {}: {e}", sub.topic()),
        Ok(None) => panic!("stream of {} ended", sub.topic()),
        Err(_) => panic!("nothing delivered on {} within {patience:?}", sub.topic()),
    }
}

/// Whether nothing arrives on `sub` for `quiet`; anything that does is printed.
pub async fn quiet_for(sub: &mut brokerbench_adapters::Subscription, quiet: Duration) -> bool {
    use futures::StreamExt;
    match tokio::time::timeout(quiet, sub.next()).await {
        Err(_) => true,
        Ok(Some(Ok(d))) => {
            eprintln!("unexpected delivery: {d:?}");
            false
        }
        Ok(other) => {
            eprintln!("unexpected stream item: {other:?}");
            false
        }
    }
}

/// The error `connect` returns for `kind` at `url` (a backend is not `Debug`, so no
/// `unwrap_err`).
pub async fn connect_err(
    kind: BackendKind,
    url: &str,
    options: ConnectOptions,
) -> brokerbench_adapters::AdapterError {
    match connect(kind, url, options).await {
        Ok(_) => panic!("connecting to {url} succeeded"),
        Err(err) => err,
    }
}

/// A delivery's payload as text.
pub fn text(d: &brokerbench_adapters::Delivery) -> &str {
    std::str::from_utf8(&d.payload).expect("payload is UTF-8")
}
