//! The embedded reference broker: `brokerbench broker --port 0` started as a child
//! process, so its CPU and memory are measured on their own and a crash of the broker
//! does not take the harness down.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long the child gets to print its address.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A running child broker; killed when dropped.
pub struct EmbeddedBroker {
    child: Child,
    url: String,
    pid: u32,
}

impl EmbeddedBroker {
    /// Starts the broker on a free port of 127.0.0.1 with the extra `flags` (those of
    /// `brokerbench broker`) and waits until it listens.
    ///
    /// # Errors
    ///
    /// When the binary cannot be found or started, or does not report its address in time.
    pub async fn start(flags: &[String]) -> anyhow::Result<EmbeddedBroker> {
        let exe = std::env::current_exe().context("cannot find the brokerbench binary")?;
        let mut child = Command::new(&exe)
            .args(["broker", "--port", "0"])
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
        Ok(EmbeddedBroker {
            child,
            url: format!("tcp://{addr}"),
            pid,
        })
    }

    /// `tcp://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Whether the child has exited (crashed), with its status.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Asks the broker to stop (SIGTERM) and waits for it.
    pub async fn stop(mut self) {
        #[cfg(unix)]
        {
            let _ = Command::new("kill")
                .args(["-TERM", &self.pid.to_string()])
                .status()
                .await;
        }
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}
