//! Plays a run's faults on its clock: each one is injected at its `at` (from the start of
//! the measured phase) and healed after its `duration`, through the fault proxies of the
//! publishers and of the subscribers, or by restarting the broker. Whatever ends the run
//! early (the end of the run, Ctrl-C), the fault in force is healed at once and the broker
//! started again, and every fault says what happened to it.

use std::future::Future;
use std::pin::Pin;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::process::Command;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::proxy::Proxy;
use crate::spec::{FaultKind, FaultSpec};

/// Longest a stop or start command may take before it counts as failed.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// What a `restart` fault's future gives: `Err` says why it failed, for the record.
pub type RestartStep<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

/// Kills and starts the broker of a run, for `restart` faults.
pub trait Restarter: Send + Sync {
    /// Kills the broker (SIGKILL for a process brokerbench started) and returns once it
    /// is gone.
    fn kill(&self) -> RestartStep<'_>;
    /// Starts it again, where clients can reconnect (same address), and returns once it
    /// was started.
    fn start(&self) -> RestartStep<'_>;
}

/// A broker stopped and started by shell commands (`sh -c`), for external brokers:
/// e.g. `redis-cli -p 7001 shutdown nosave` and `redis-server --port 7001 --daemonize yes`.
#[derive(Debug, Clone)]
pub struct ShellRestarter {
    stop: String,
    start: String,
}

impl ShellRestarter {
    /// The two commands.
    pub fn new(stop: impl Into<String>, start: impl Into<String>) -> Self {
        Self {
            stop: stop.into(),
            start: start.into(),
        }
    }
}

impl Restarter for ShellRestarter {
    fn kill(&self) -> RestartStep<'_> {
        Box::pin(shell(&self.stop))
    }

    fn start(&self) -> RestartStep<'_> {
        Box::pin(shell(&self.start))
    }
}

/// Runs `command` with `sh -c`; `Err` with its status and the end of its error output
/// unless it exits 0 within [`COMMAND_TIMEOUT`].
async fn shell(command: &str) -> Result<(), String> {
    let child = Command::new("sh")
        .args(["-c", command])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run `{command}`: {e}"))?;
    match tokio::time::timeout(COMMAND_TIMEOUT, child.wait_with_output()).await {
        Err(_) => Err(format!(
            "`{command}` did not finish within {COMMAND_TIMEOUT:?}"
        )),
        Ok(Err(e)) => Err(format!("`{command}` failed: {e}")),
        Ok(Ok(out)) if out.status.success() => Ok(()),
        Ok(Ok(out)) => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let tail: String = stderr
                .trim()
                .chars()
                .rev()
                .take(300)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            Err(format!("`{command}` exited with {}: {tail}", out.status))
        }
    }
}

/// The proxies in front of the broker: the publishers' connections go through one, the
/// subscribers' through the other, so a fault can hit one group only.
#[derive(Debug, Clone, Default)]
pub struct Proxies {
    /// The publishers' proxy.
    pub publishers: Option<Arc<Proxy>>,
    /// The subscribers' proxy.
    pub subscribers: Option<Arc<Proxy>>,
}

impl Proxies {
    fn targeted(&self, spec: &FaultSpec) -> Vec<&Arc<Proxy>> {
        let mut out = Vec::new();
        if spec.targets.publishers() {
            out.extend(self.publishers.as_ref());
        }
        if spec.targets.subscribers() {
            out.extend(self.subscribers.as_ref());
        }
        out
    }

    fn heal(&self) {
        for proxy in self.publishers.iter().chain(&self.subscribers) {
            proxy.heal();
        }
    }
}

/// What happened to one fault of a run.
#[derive(Debug, Clone)]
pub struct Injected {
    /// The fault as given.
    pub spec: FaultSpec,
    /// When it was injected; `None` when it was not (see `skipped`).
    pub injected: Option<Instant>,
    /// When it was healed (the restarted broker started; the same instant as `injected`
    /// for a reset); `None` when it was not injected.
    pub healed: Option<Instant>,
    /// Connections reset by a reset or down fault.
    pub connections_cut: u64,
    /// Why the fault was not injected (no stop/start commands, the run ended first).
    pub skipped: Option<String>,
    /// What else a reader should know (a failed start command, healed early at the end).
    pub notes: Vec<String>,
}

/// How restart faults restart the broker: a [`Restarter`], or why there is none.
pub type RestartWith = Result<Arc<dyn Restarter>, String>;

/// Faults being played on a run's clock.
pub struct Injector {
    task: JoinHandle<Vec<Injected>>,
    done: CancellationToken,
}

impl Injector {
    /// Starts playing `faults` once `measure_start` says when the measured phase starts
    /// (times are from then). `interrupt` (Ctrl-C) heals at once and stops the play.
    /// A restart fault with its own `stop` and `start` commands uses them; others use
    /// `restart` (or are skipped with its reason).
    pub fn start(
        faults: Vec<FaultSpec>,
        proxies: Proxies,
        restart: RestartWith,
        mut measure_start: watch::Receiver<Option<Instant>>,
        interrupt: CancellationToken,
    ) -> Injector {
        let done = CancellationToken::new();
        let stop = done.clone();
        let task = tokio::spawn(async move {
            let stop_or_interrupt = async {
                tokio::select! {
                    () = stop.cancelled() => {}
                    () = interrupt.cancelled() => {}
                }
            };
            let mut order: Vec<FaultSpec> = faults;
            order.sort_by_key(|f| f.at);
            let mut played: Vec<Injected> = order
                .into_iter()
                .map(|spec| Injected {
                    spec,
                    injected: None,
                    healed: None,
                    connections_cut: 0,
                    skipped: None,
                    notes: Vec::new(),
                })
                .collect();
            tokio::pin!(stop_or_interrupt);
            let start = tokio::select! {
                s = measure_start.wait_for(Option::is_some) => s.ok().and_then(|s| *s),
                () = &mut stop_or_interrupt => None,
            };
            let Some(start) = start else {
                for f in &mut played {
                    f.skipped = Some("the run ended before its measured phase started".into());
                }
                return played;
            };
            let mut ended = false;
            for fault in &mut played {
                if ended {
                    fault.skipped = Some("the run ended before the fault was due".into());
                    continue;
                }
                tokio::select! {
                    () = tokio::time::sleep_until((start + fault.spec.at).into()) => {}
                    () = &mut stop_or_interrupt => {
                        ended = true;
                        fault.skipped = Some("the run ended before the fault was due".into());
                        continue;
                    }
                }
                ended = play(fault, &proxies, &restart, start, &mut stop_or_interrupt).await;
            }
            played
        });
        Injector { task, done }
    }

    /// Ends the play: a fault still in force is healed now (a killed broker is started
    /// again), those not yet due are skipped. Returns what happened to every fault, in
    /// the order of their `at`.
    pub async fn finish(self) -> Vec<Injected> {
        self.done.cancel();
        self.task.await.unwrap_or_default()
    }
}

/// Injects `fault`, waits its duration (or until the run ends) and heals it. Returns
/// whether the run ended meanwhile.
async fn play(
    fault: &mut Injected,
    proxies: &Proxies,
    restart: &RestartWith,
    start: Instant,
    ended: &mut Pin<&mut impl Future<Output = ()>>,
) -> bool {
    let spec = fault.spec.clone();
    let heal_at = start + spec.heal_at();
    if spec.kind == FaultKind::Restart {
        let own;
        let restarter: &dyn Restarter = match (&spec.stop, &spec.start, restart) {
            (Some(stop), Some(begin), _) => {
                own = ShellRestarter::new(stop.clone(), begin.clone());
                &own
            }
            (_, _, Ok(r)) => r.as_ref(),
            (_, _, Err(why)) => {
                fault.skipped = Some(why.clone());
                return false;
            }
        };
        fault.injected = Some(Instant::now());
        if let Err(e) = restarter.kill().await {
            fault.notes.push(format!("stopping the broker failed: {e}"));
        }
        let mut run_ended = false;
        tokio::select! {
            () = tokio::time::sleep_until(heal_at.into()) => {}
            () = ended.as_mut() => {
                run_ended = true;
                fault.notes.push("the run ended during the restart: the broker was started at once".into());
            }
        }
        match restarter.start().await {
            Ok(()) => fault.healed = Some(Instant::now()),
            Err(e) => fault.notes.push(format!(
                "starting the broker again failed, so it never came back: {e}"
            )),
        }
        return run_ended;
    }
    let targeted = proxies.targeted(&spec);
    if targeted.is_empty() {
        fault.skipped = Some("no fault proxy in front of the broker for its targets".into());
        return false;
    }
    fault.injected = Some(Instant::now());
    for proxy in &targeted {
        match spec.kind {
            FaultKind::Latency => proxy.set_latency(spec.direction, spec.delay, spec.jitter),
            FaultKind::Bandwidth => proxy.set_bandwidth(spec.direction, spec.bytes_per_second),
            FaultKind::Reset => fault.connections_cut += proxy.cut(),
            FaultKind::Partition => proxy.partition(),
            FaultKind::Down => fault.connections_cut += proxy.cut_for(spec.duration),
            FaultKind::Restart => {}
        }
    }
    if spec.kind == FaultKind::Reset {
        fault.healed = fault.injected;
        return false;
    }
    let run_ended = tokio::select! {
        () = tokio::time::sleep_until(heal_at.into()) => false,
        () = ended.as_mut() => {
            fault.notes.push("healed early: the run ended during the fault".into());
            true
        }
    };
    proxies.heal();
    fault.healed = Some(Instant::now());
    run_ended
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn shell_commands_report_their_failure() {
        assert_eq!(shell("true").await, Ok(()));
        let err = shell("echo nope >&2; exit 3").await.unwrap_err();
        assert!(err.contains("nope") && err.contains('3'), "{err}");
    }

    #[tokio::test]
    async fn faults_play_on_the_clock_and_heal_when_the_run_ends() {
        let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = Arc::new(
            Proxy::start(upstream.local_addr().unwrap().to_string())
                .await
                .unwrap(),
        );
        let proxies = Proxies {
            publishers: Some(proxy.clone()),
            subscribers: None,
        };
        let faults = vec![
            FaultSpec::parse_flag("kind=partition,at=300ms,duration=10s").unwrap(),
            FaultSpec::parse_flag("kind=reset,at=100ms").unwrap(),
            FaultSpec::parse_flag("kind=restart,at=20s,duration=1s").unwrap(),
        ];
        let (tx, rx) = watch::channel(None);
        let injector = Injector::start(
            faults,
            proxies,
            Err("no restarter".into()),
            rx,
            CancellationToken::new(),
        );
        let t0 = Instant::now();
        tx.send_replace(Some(t0));
        tokio::time::sleep(Duration::from_millis(600)).await;
        let played = injector.finish().await;
        assert_eq!(played[0].spec.kind, FaultKind::Reset);
        let reset_at = played[0].injected.unwrap() - t0;
        assert!(reset_at >= Duration::from_millis(100), "{reset_at:?}");
        assert_eq!(played[1].spec.kind, FaultKind::Partition);
        assert!(played[1].healed.is_some());
        assert!(played[1].notes[0].contains("healed early"));
        assert!(played[2].skipped.is_some());
        // Healed: a new connection is relayed at once.
        let client = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
        let accepted = tokio::time::timeout(Duration::from_secs(5), upstream.accept()).await;
        assert!(accepted.is_ok(), "the proxy still holds new connections");
        drop(client);
    }
}
