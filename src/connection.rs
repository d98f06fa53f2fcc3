//! The broker a command runs against, found or started and connected: the embedded
//! reference broker, a container (`--containers`), or a broker at its URL (`--url`, the
//! backend's environment variable, else its usual local address), with the connect
//! timeout `BROKERBENCH_CONNECT_TIMEOUT` sets. `run` uses one for one run, `capacity`
//! and `conform` for many.

use std::sync::Arc;

use anyhow::Context;
use brokerbench_adapters::{Backend, BackendKind, ConnectOptions, endpoint};
use brokerbench_results::{BackendInfo, HostFacts, RunInfo, RunRecord};
use brokerbench_scenarios::Scenario;

use crate::embedded::EmbeddedBroker;

/// Where a run's broker lives.
enum Target {
    Embedded(Arc<EmbeddedBroker>),
    /// A broker started elsewhere; its pid when it listens on this machine.
    Remote(Option<u32>),
    /// A container started for this run (removed when dropped).
    #[cfg(feature = "containers")]
    Container(brokerbench_adapters::containers::RunningBroker),
}

/// A broker to run against, connected: started in-process (embedded reference broker),
/// in a container, or found at its URL. `run` uses it for one run, `capacity` for many.
pub(crate) struct Connection {
    target: Target,
    kind: BackendKind,
    /// The connected backend.
    pub backend: Arc<dyn Backend>,
    /// The endpoint, credentials redacted.
    pub url: String,
    /// The endpoint as given, credentials included, to connect more clients.
    pub raw_url: String,
    /// The broker's process on this machine, for CPU and memory figures.
    pub broker_pid: Option<u32>,
    /// Notes for the record about the set-up (what could not be sampled).
    pub setup_notes: Vec<String>,
    /// What the backend was connected with; more clients of the run use the same.
    pub options: ConnectOptions,
}

impl Connection {
    /// Starts or finds the broker of `kind` and connects to it: `--containers` starts a
    /// container; `reference` without a URL (flag or environment) starts an embedded
    /// broker; otherwise the URL resolves as the adapter crate says.
    ///
    /// # Errors
    /// When the broker cannot be started or connected to.
    pub(crate) async fn open(
        kind: BackendKind,
        url: Option<&str>,
        containers: bool,
    ) -> anyhow::Result<Self> {
        Self::open_with(kind, url, containers, &[]).await
    }

    /// [`open`](Self::open), starting an embedded reference broker with the extra
    /// `broker_flags` (`--cache-size 100`, ...).
    ///
    /// # Errors
    /// When the broker cannot be started or connected to.
    pub(crate) async fn open_with(
        kind: BackendKind,
        url: Option<&str>,
        containers: bool,
        broker_flags: &[String],
    ) -> anyhow::Result<Self> {
        // Read before any broker is started, so a bad value stops nothing half-way.
        let options = connect_options()?;
        let from_env = env_url(kind);
        let configured = url.is_some() || from_env.is_some();
        let (target, url) = match kind {
            _ if containers => start_container(kind).await?,
            BackendKind::Reference if !configured => {
                let broker = EmbeddedBroker::start(broker_flags).await?;
                let url = broker.url().to_string();
                (Target::Embedded(Arc::new(broker)), url)
            }
            kind => {
                let url = kind.resolve_url_with(url, |_| from_env);
                (Target::Remote(local_broker_pid(kind, &url)), url)
            }
        };
        let backend: Arc<dyn Backend> =
            match brokerbench_adapters::connect(kind, &url, options.clone()).await {
                Ok(b) => Arc::from(b),
                Err(err) => {
                    if let Target::Embedded(broker) = target {
                        broker.stop().await;
                    }
                    return Err(err.into());
                }
            };
        let broker_pid = match &target {
            Target::Embedded(b) => Some(b.pid()),
            Target::Remote(pid) => *pid,
            #[cfg(feature = "containers")]
            Target::Container(_) => None,
        };
        let mut setup_notes = Vec::new();
        match &target {
            Target::Remote(None) => setup_notes.push(format!(
                "broker CPU and memory were not sampled: no process of this machine was found listening on {}",
                endpoint::redact(&url)
            )),
            #[cfg(feature = "containers")]
            Target::Container(broker) => setup_notes.push(format!(
                "the broker ran in a container ({}); its CPU and memory were not sampled",
                broker.image()
            )),
            _ => {}
        }
        Ok(Self {
            target,
            kind,
            backend,
            url: endpoint::redact(&url),
            raw_url: url,
            broker_pid,
            setup_notes,
            options,
        })
    }

    /// The run record of one run of `scenario` over this connection (no verdicts yet);
    /// partial when the engine says so.
    ///
    /// # Errors
    /// When the scenario or its rules cannot be serialised.
    pub(crate) fn record(
        &self,
        run_id: String,
        scenario: &Scenario,
        outcome: brokerbench_bench::RunOutcome,
    ) -> anyhow::Result<RunRecord> {
        let info = RunInfo {
            run_id,
            scenario_name: scenario.name.clone(),
            scenario: scenario
                .to_json()
                .context("cannot serialise the scenario")?,
            alert_rules: serde_json::to_value(&scenario.alerts)
                .context("cannot serialise the alert rules")?,
            backend: BackendInfo {
                name: self.kind.to_string(),
                url: Some(self.url.clone()),
                version: self.backend.server_version(),
            },
            host: HostFacts {
                harness_workers: tokio::runtime::Handle::try_current()
                    .ok()
                    .and_then(|h| u32::try_from(h.metrics().num_workers()).ok()),
                ..HostFacts::detect(env!("CARGO_PKG_VERSION"))
            },
            started_at: outcome.started_at,
            ended_at: outcome.ended_at,
        };
        let mut record = RunRecord::new(info, outcome.figures);
        record.scenario_hash = Some(
            scenario
                .fingerprint()
                .context("cannot fingerprint the scenario")?,
        );
        record.notes = self.setup_notes.clone();
        record.notes.extend(outcome.notes);
        record.figures.correctness.recovered = outcome.recovered;
        record.figures.correctness.replayed = outcome.replayed;
        if let Some(reason) = outcome.partial {
            record.mark_partial(reason);
        }
        Ok(record)
    }

    /// Whether the broker is the embedded reference broker started for these runs.
    pub(crate) fn is_embedded(&self) -> bool {
        matches!(self.target, Target::Embedded(_))
    }

    /// The embedded reference broker started for these runs, to restart it.
    pub(crate) fn embedded(&self) -> Option<Arc<EmbeddedBroker>> {
        match &self.target {
            Target::Embedded(broker) => Some(broker.clone()),
            _ => None,
        }
    }

    /// The backend kind.
    pub(crate) fn kind(&self) -> BackendKind {
        self.kind
    }

    /// Stops what was started for the runs (the embedded broker; a container is removed
    /// when dropped). Returns why the embedded broker died, if it did.
    pub(crate) async fn close(self) -> Option<String> {
        match self.target {
            Target::Embedded(broker) => {
                let died = broker
                    .exited()
                    .map(|status| format!("the embedded broker died during the run ({status})"));
                broker.stop().await;
                died
            }
            _ => None,
        }
    }
}

/// The endpoint `kind`'s environment variable (`BROKERBENCH_<BACKEND>_URL`) names, read
/// once; `None` when it is unset or blank, which [`BackendKind::resolve_url_with`] reads
/// as "use the default URL". Pass it on as that function's environment.
pub(crate) fn env_url(kind: BackendKind) -> Option<String> {
    kind.env_var()
        .and_then(|var| std::env::var(var).ok())
        .filter(|url| !url.trim().is_empty())
}

/// How long a connection to the broker may take (TCP connect plus the protocol's
/// handshake), from [`CONNECT_TIMEOUT_ENV`]; unset or blank, the adapters' default (5 s).
pub(crate) const CONNECT_TIMEOUT_ENV: &str = "BROKERBENCH_CONNECT_TIMEOUT";

/// The options every connection of a run is opened with: the adapters' defaults, with
/// the connect timeout from [`CONNECT_TIMEOUT_ENV`] when it is set (a loaded machine, a
/// broker far away).
///
/// # Errors
/// When the variable is set but is not a duration such as `30s` or `1m`.
pub(crate) fn connect_options() -> anyhow::Result<ConnectOptions> {
    let options = ConnectOptions::new();
    let Some(value) = std::env::var(CONNECT_TIMEOUT_ENV)
        .ok()
        .filter(|v| !v.trim().is_empty())
    else {
        return Ok(options);
    };
    let timeout = humantime::parse_duration(value.trim()).with_context(|| {
        format!("{CONNECT_TIMEOUT_ENV}={value:?} is not a duration (write it like 30s or 1m)")
    })?;
    anyhow::ensure!(
        !timeout.is_zero(),
        "{CONNECT_TIMEOUT_ENV}={value:?}: a connect timeout must be longer than zero"
    );
    Ok(options.connect_timeout(timeout))
}

/// The pid of the process listening on the first loopback endpoint of `url`, so a broker
/// on this machine has its CPU and memory sampled like the embedded one.
fn local_broker_pid(kind: BackendKind, url: &str) -> Option<u32> {
    let endpoints = endpoint::endpoints(kind, url).ok()?;
    let local = endpoints.iter().find(|e| e.is_loopback())?;
    brokerbench_bench::resources::listening_pid(local.port)
}

/// Starts `kind`'s broker in a container.
#[cfg(feature = "containers")]
async fn start_container(kind: BackendKind) -> anyhow::Result<(Target, String)> {
    eprintln!("starting the {kind} broker in a container (pulling the image if needed)...");
    let broker = brokerbench_adapters::containers::start(kind).await?;
    eprintln!(
        "container {} ({}) is ready at {}",
        &broker.id()[..12.min(broker.id().len())],
        broker.image(),
        broker.url()
    );
    let url = broker.url().to_owned();
    Ok((Target::Container(broker), url))
}

/// Without the `containers` feature, `--containers` explains how to get it.
#[cfg(not(feature = "containers"))]
async fn start_container(kind: BackendKind) -> anyhow::Result<(Target, String)> {
    anyhow::bail!(
        "--containers needs a brokerbench built with the `containers` feature (cargo install --path . --features containers) and a Docker engine; without them, start the {kind} broker yourself and pass --url"
    )
}
