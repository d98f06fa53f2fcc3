//! The embedded reference broker: `brokerbench broker --port 0` started as a child
//! process, so its CPU and memory are measured on their own and a crash of the broker
//! does not take the harness down. A `restart` fault kills it (SIGKILL) and starts it
//! again on the same port, so its clients can reconnect.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use brokerbench_faults::{RestartStep, Restarter};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::Mutex;

/// How long the child gets to print its address.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A running child broker; killed when dropped.
pub struct EmbeddedBroker {
    child: Mutex<Child>,
    url: String,
    port: u16,
    flags: Vec<String>,
    pid: AtomicU32,
}

impl EmbeddedBroker {
    /// Starts the broker on a free port of 127.0.0.1 with the extra `flags` (those of
    /// `brokerbench broker`) and waits until it listens.
    ///
    /// # Errors
    ///
    /// When the binary cannot be found or started, or does not report its address in time.
    pub async fn start(flags: &[String]) -> anyhow::Result<EmbeddedBroker> {
        let (child, pid, addr) = spawn(flags, 0).await?;
        let port = addr
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
            .with_context(|| format!("the embedded broker reported no port ({addr})"))?;
        Ok(EmbeddedBroker {
            child: Mutex::new(child),
            url: format!("tcp://{addr}"),
            port,
            flags: flags.to_vec(),
            pid: AtomicU32::new(pid),
        })
    }

    /// `tcp://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The child's process id (the current one, after a restart).
    pub fn pid(&self) -> u32 {
        self.pid.load(Ordering::Relaxed)
    }

    /// Whether the child has exited (crashed), with its status.
    pub fn exited(&self) -> Option<std::process::ExitStatus> {
        self.child.try_lock().ok()?.try_wait().ok().flatten()
    }

    /// Kills the broker at once (SIGKILL), as a crash would, and reaps it.
    pub async fn kill(&self) -> anyhow::Result<()> {
        let mut child = self.child.lock().await;
        child
            .kill()
            .await
            .context("cannot kill the embedded broker")
    }

    /// Starts the broker again on its port with its flags (after [`kill`](Self::kill)).
    ///
    /// # Errors
    /// When it cannot be started or does not listen in time.
    pub async fn restart(&self) -> anyhow::Result<()> {
        let mut child = self.child.lock().await;
        let (fresh, pid, _) = spawn(&self.flags, self.port).await?;
        *child = fresh;
        self.pid.store(pid, Ordering::Relaxed);
        Ok(())
    }

    /// Asks the broker to stop (SIGTERM) and waits for it.
    pub async fn stop(&self) {
        let mut child = self.child.lock().await;
        #[cfg(unix)]
        {
            let _ = Command::new("kill")
                .args(["-TERM", &self.pid().to_string()])
                .status()
                .await;
        }
        if tokio::time::timeout(Duration::from_secs(5), child.wait())
            .await
            .is_err()
        {
            let _ = child.kill().await;
        }
    }
}

/// Restarts an [`EmbeddedBroker`] for `restart` faults.
pub struct EmbeddedRestarter(pub Arc<EmbeddedBroker>);

impl Restarter for EmbeddedRestarter {
    fn kill(&self) -> RestartStep<'_> {
        Box::pin(async move { self.0.kill().await.map_err(|e| format!("{e:#}")) })
    }

    fn start(&self) -> RestartStep<'_> {
        Box::pin(async move { self.0.restart().await.map_err(|e| format!("{e:#}")) })
    }
}

/// Starts `brokerbench broker --port <port>` and waits until it says where it listens.
/// Returns the child, its pid and its `host:port`.
async fn spawn(flags: &[String], port: u16) -> anyhow::Result<(Child, u32, String)> {
    let exe = std::env::current_exe().context("cannot find the brokerbench binary")?;
    let mut child = Command::new(&exe)
        .args(["broker", "--port", &port.to_string()])
        .args(flags)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| {
            format!(
                "cannot start the embedded broker ({} broker)",
                exe.display()
            )
        })?;
    let pid = child.id().context("the embedded broker exited at once")?;
    let stderr = child
        .stderr
        .take()
        .context("no stderr from the embedded broker")?;
    let mut lines = BufReader::new(stderr).lines();
    let addr = tokio::time::timeout(START_TIMEOUT, async {
        while let Some(line) = lines.next_line().await? {
            if let Some(addr) = line.split("listening on ").nth(1) {
                return Ok::<_, std::io::Error>(Some(addr.trim().to_string()));
            }
        }
        Ok(None)
    })
    .await;
    let addr = match addr {
        Ok(Ok(Some(addr))) => addr,
        Ok(Ok(None)) => bail!("the embedded broker exited before listening"),
        Ok(Err(err)) => bail!("cannot read the embedded broker's output: {err}"),
        Err(_) => bail!("the embedded broker did not start within {START_TIMEOUT:?}"),
    };
    // Keep draining its stderr so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((child, pid, addr))
}
