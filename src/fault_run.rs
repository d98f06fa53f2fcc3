//! The faults of a `brokerbench run`: the fault proxies in front of the broker (one for
//! the publishers, one for the subscribers, only when the run has network faults), the
//! backends connected through them, the injector playing the faults on the run clock, and
//! the figures of each fault window in the record.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use brokerbench_adapters::{Backend, BackendKind, endpoint};
use brokerbench_bench::timeline::{FaultHooks, Timeline};
use brokerbench_faults::{
    FaultKind, FaultSpec, Injected, Injector, Proxies, Proxy, RestartWith, ShellRestarter, through,
};
use brokerbench_results::{FaultFigures, RunRecord};
use brokerbench_scenarios::Scenario;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::connection::Connection;
use crate::embedded::EmbeddedRestarter;

/// A publish without an outcome after this long counts as unknown (the adapters' own
/// publish timeout is 10 s).
const PUBLISH_DEADLINE: Duration = Duration::from_secs(15);

/// The fault flags of `brokerbench run`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct FaultArgs {
    /// Inject a fault during the measured phase (repeatable), with the fields of a
    /// scenario's [[fault]] table: e.g. 'kind=latency,at=3s,duration=4s,delay=50ms',
    /// 'kind=partition,at=2s,duration=2s,targets=subscribers', 'kind=reset,at=5s',
    /// 'kind=restart,at=3s,duration=2s'. Kinds: latency (delay, jitter, direction),
    /// bandwidth (bytes_per_second, direction), reset, partition, down, restart.
    #[arg(long = "fault", value_name = "FIELDS")]
    pub faults: Vec<String>,
    /// The shell command that stops an external broker for `restart` faults, e.g.
    /// 'redis-cli -p 7001 shutdown nosave' (the embedded broker needs none).
    #[arg(long, value_name = "COMMAND", requires = "start_command")]
    pub stop_command: Option<String>,
    /// The shell command that starts it again, e.g.
    /// 'redis-server --port 7001 --save "" --daemonize yes'.
    #[arg(long, value_name = "COMMAND", requires = "stop_command")]
    pub start_command: Option<String>,
}

impl FaultArgs {
    /// The `--fault` flags, read.
    ///
    /// # Errors
    /// The first flag that does not read, quoted, with the key to blame.
    pub fn specs(&self) -> Result<Vec<FaultSpec>, String> {
        self.faults
            .iter()
            .map(|text| FaultSpec::parse_flag(text).map_err(|e| format!("--fault '{text}': {e}")))
            .collect()
    }
}

/// The faults of one run, being played.
pub struct FaultRun {
    injector: Injector,
    measure_start: watch::Receiver<Option<Instant>>,
    /// The backend the engine publishes (and prepares topics) through: through the
    /// publishers' proxy when there is one.
    pub backend: Arc<dyn Backend>,
    /// What the engine needs for a run with faults.
    pub hooks: FaultHooks,
    proxies: Proxies,
}

impl FaultRun {
    /// Sets up the faults of `scenario` over `connection`: proxies and backends through
    /// them when a fault is a network fault, and the way to restart the broker. `None`
    /// for a run without faults (it does not go through any proxy).
    ///
    /// # Errors
    /// When a proxy cannot start or a backend cannot connect through it.
    pub async fn start(
        scenario: &Scenario,
        connection: &Connection,
        args: &FaultArgs,
        interrupt: &CancellationToken,
    ) -> anyhow::Result<Option<FaultRun>> {
        if scenario.faults.is_empty() {
            return Ok(None);
        }
        let kind = connection.kind();
        let mut proxies = Proxies::default();
        let mut backend = connection.backend.clone();
        let mut subscriber_backend = None;
        if scenario.faults.iter().any(|f| f.kind.is_network()) {
            let upstream = endpoint::endpoints(kind, &connection.raw_url)?
                .into_iter()
                .next()
                .with_context(|| format!("the {kind} URL {} names no host", connection.url))?
                .host_port();
            let publishers = Arc::new(proxy(kind, &upstream).await?);
            let subscribers = Arc::new(proxy(kind, &upstream).await?);
            backend = connect(connection, &publishers, "publishers").await?;
            subscriber_backend = Some(connect(connection, &subscribers, "subscribers").await?);
            proxies = Proxies {
                publishers: Some(publishers),
                subscribers: Some(subscribers),
            };
        }
        let restart: RestartWith = match (
            connection.embedded(),
            &args.stop_command,
            &args.start_command,
        ) {
            (Some(broker), _, _) => Ok(Arc::new(EmbeddedRestarter(broker))),
            (None, Some(stop), Some(start)) => Ok(Arc::new(ShellRestarter::new(stop, start))),
            _ => Err(format!(
                "brokerbench cannot restart the external {kind} broker at {} without --stop-command and --start-command (or stop/start in the [[fault]] table)",
                connection.url
            )),
        };
        let (measure_tx, measure_start) = watch::channel(None);
        let injector = Injector::start(
            scenario.faults.clone(),
            proxies.clone(),
            restart,
            measure_start.clone(),
            interrupt.clone(),
        );
        Ok(Some(FaultRun {
            injector,
            measure_start,
            backend,
            hooks: FaultHooks {
                subscriber_backend,
                measure_start: measure_tx,
                publish_deadline: PUBLISH_DEADLINE,
            },
            proxies,
        }))
    }

    /// Ends the faults (healing what is still in force) when the run failed to start.
    pub async fn abandon(self) {
        let _ = self.injector.finish().await;
    }

    /// Ends the faults (healing what is still in force) and puts each one's figures,
    /// computed from `timeline`, in `record`. Skipped faults are said on stderr too.
    pub async fn finish(self, record: &mut RunRecord, timeline: Option<Timeline>) {
        let played = self.injector.finish().await;
        drop(self.proxies);
        let start = *self.measure_start.borrow();
        let mut figures: Vec<FaultFigures> = played.iter().map(|f| figures_of(f, start)).collect();
        for f in &played {
            if let Some(why) = &f.skipped {
                eprintln!("fault {} skipped: {why}", f.spec);
            }
        }
        if played
            .iter()
            .any(|f| f.spec.kind == FaultKind::Restart && f.injected.is_some())
            && record.backend.name == "reference"
        {
            record.notes.push(
                "the embedded broker was restarted: its CPU and memory are sampled until the restart only".into(),
            );
        }
        if let Some(timeline) = timeline {
            record.faults_outside = Some(brokerbench_bench::fault_figures::measure(
                &timeline,
                &mut figures,
            ));
        }
        record.faults = figures;
    }
}

/// A fault proxy in front of `upstream` (Kafka-aware for Kafka).
async fn proxy(kind: BackendKind, upstream: &str) -> anyhow::Result<Proxy> {
    let proxy = if kind == BackendKind::Kafka {
        Proxy::start_kafka(upstream.to_owned()).await
    } else {
        Proxy::start(upstream.to_owned()).await
    };
    proxy.context("cannot start the fault proxy")
}

/// Another backend of `connection`'s broker, connected through `proxy` with the same
/// options.
async fn connect(
    connection: &Connection,
    proxy: &Proxy,
    who: &str,
) -> anyhow::Result<Arc<dyn Backend>> {
    let url = through(&connection.raw_url, proxy.addr());
    let backend =
        brokerbench_adapters::connect(connection.kind(), &url, connection.options.clone())
            .await
            .with_context(|| format!("cannot connect the {who} through their fault proxy"))?;
    Ok(Arc::from(backend))
}

/// The record's entry for one played fault; times from the start of the measured phase.
fn figures_of(f: &Injected, start: Option<Instant>) -> FaultFigures {
    let since = |t: Option<Instant>| {
        t.zip(start)
            .map(|(t, s)| t.saturating_duration_since(s).as_secs_f64())
    };
    let skipped = f.skipped.clone();
    FaultFigures {
        kind: f.spec.kind.to_string(),
        parameters: f.spec.parameters(),
        targets: f.spec.targets.as_str().to_owned(),
        at_s: f.spec.at.as_secs_f64(),
        duration_s: f.spec.duration.as_secs_f64(),
        injected_s: since(f.injected),
        healed_s: since(f.healed),
        skipped,
        connections_cut: f.connections_cut,
        notes: f.notes.clone(),
        ..FaultFigures::default()
    }
}
