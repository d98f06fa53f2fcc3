//! The accept loop, the connection limit, the ack-timeout clock and graceful shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::connection;
use crate::state::Broker;

/// Pause after an accept error such as running out of file descriptors, so the loop does
/// not spin while the condition lasts.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(20);
/// The ack clock never ticks slower than this, so a redelivery is at most this late.
const MAX_ACK_TICK: Duration = Duration::from_millis(100);

/// Runs a broker on `listener` until `shutdown` completes.
///
/// Shutdown stops accepting, stops reading from every connection, lets each one flush its
/// queued output for up to [`Config::shutdown_grace`], then returns.
///
/// ```no_run
/// # async fn demo() -> std::io::Result<()> {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
/// let server = tokio::spawn(reference_broker::run(
///     listener,
///     reference_broker::Config::default(),
///     async move { let _ = stopped.await; },
/// ));
/// // ... talk to it ...
/// let _ = stop.send(());
/// server.await??;
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// None today: accept errors are retried after a short pause. The `Result` leaves room for
/// start-up failures.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let grace = config.shutdown_grace;
    let slots = Arc::new(Semaphore::new(config.max_connections));
    let broker = Arc::new(Broker::new(config));
    let stopping = CancellationToken::new();
    let tracker = TaskTracker::new();
    tracker.spawn(ack_clock(broker.clone(), stopping.clone()));

    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => match slots.clone().try_acquire_owned() {
                    Ok(permit) => {
                        tracker.spawn(connection::serve(stream, broker.clone(), stopping.clone(), permit));
                    }
                    // Over the limit: closed at once, the others are not affected.
                    Err(_) => drop(stream),
                },
                Err(err) if is_per_connection(&err) => {}
                Err(_) => tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await,
            },
        }
    }
    drop(listener);
    stopping.cancel();
    tracker.close();
    let _ = tokio::time::timeout(grace, tracker.wait()).await;
    Ok(())
}

/// Errors that concern one incoming connection only (it was reset before we took it).
fn is_per_connection(err: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        err.kind(),
        ConnectionAborted | ConnectionReset | Interrupted
    )
}

/// Redelivers messages whose ack deadline has passed.
async fn ack_clock(broker: Arc<Broker>, stopping: CancellationToken) {
    let period = (broker.config().ack_timeout / 10).clamp(Duration::from_millis(1), MAX_ACK_TICK);
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = stopping.cancelled() => return,
            _ = ticks.tick() => broker.expire_acks(Instant::now()),
        }
    }
}
