//! What a fault is: its kind, when it starts (from the start of the measured phase), how
//! long it lasts, its parameters and whom it hits. Read from `key = value` fields, the
//! same for a scenario's `[[fault]]` table and for `--fault 'kind=latency,at=3s,...'`.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// Bytes are held back by `delay` (± `jitter`) in one or both directions.
    Latency,
    /// Bytes flow at no more than `bytes_per_second` in one or both directions.
    Bandwidth,
    /// Every connection is reset (RST) at `at`; new connections are accepted.
    Reset,
    /// For `duration` no byte flows either way and new connections hang; then traffic
    /// flows again on the same connections.
    Partition,
    /// For `duration` connections are reset and new ones refused.
    Down,
    /// The broker process is killed (SIGKILL) at `at` and started again after `duration`.
    Restart,
}

impl FaultKind {
    /// Every kind, in the order of the documentation.
    pub const ALL: [FaultKind; 6] = [
        FaultKind::Latency,
        FaultKind::Bandwidth,
        FaultKind::Reset,
        FaultKind::Partition,
        FaultKind::Down,
        FaultKind::Restart,
    ];

    /// The name in scenario files and flags.
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::Latency => "latency",
            FaultKind::Bandwidth => "bandwidth",
            FaultKind::Reset => "reset",
            FaultKind::Partition => "partition",
            FaultKind::Down => "down",
            FaultKind::Restart => "restart",
        }
    }

    /// Whether the fault goes through the fault proxy (every kind but `restart`).
    pub fn is_network(self) -> bool {
        self != FaultKind::Restart
    }

    /// Whether the kind lasts (`duration` required) rather than happening at one instant.
    pub fn lasts(self) -> bool {
        self != FaultKind::Reset
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which way the bytes a latency or bandwidth fault slows go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    /// From the clients to the broker (publishes, acks, subscribe requests).
    ToBroker,
    /// From the broker to the clients (confirmations, deliveries).
    FromBroker,
    /// Both ways.
    #[default]
    Both,
}

impl Direction {
    /// The name in scenario files and flags.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::ToBroker => "to-broker",
            Direction::FromBroker => "from-broker",
            Direction::Both => "both",
        }
    }

    /// Whether bytes going to the broker are affected.
    pub fn to_broker(self) -> bool {
        self != Direction::FromBroker
    }

    /// Whether bytes coming from the broker are affected.
    pub fn from_broker(self) -> bool {
        self != Direction::ToBroker
    }
}

/// Whose connections a network fault hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Targets {
    /// Publishers and subscribers.
    #[default]
    All,
    /// The publishers' connections only.
    Publishers,
    /// The subscribers' connections only.
    Subscribers,
}

impl Targets {
    /// The name in scenario files and flags.
    pub fn as_str(self) -> &'static str {
        match self {
            Targets::All => "all",
            Targets::Publishers => "publishers",
            Targets::Subscribers => "subscribers",
        }
    }

    /// Whether the publishers are hit.
    pub fn publishers(self) -> bool {
        self != Targets::Subscribers
    }

    /// Whether the subscribers are hit.
    pub fn subscribers(self) -> bool {
        self != Targets::Publishers
    }
}

/// One fault of a run.
///
/// ```
/// use std::time::Duration;
/// use brokerbench_faults::{FaultKind, FaultSpec};
///
/// let fault = FaultSpec::parse_flag("kind=latency,at=3s,duration=4s,delay=50ms").unwrap();
/// assert_eq!(fault.kind, FaultKind::Latency);
/// assert_eq!(fault.heal_at(), Duration::from_secs(7));
/// assert_eq!(fault.to_string(), "latency at=3s duration=4s delay=50ms");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    try_from = "BTreeMap<String, String>",
    into = "BTreeMap<String, String>"
)]
pub struct FaultSpec {
    /// What breaks.
    pub kind: FaultKind,
    /// When, from the start of the measured phase.
    pub at: Duration,
    /// How long (zero for `reset`, which happens at one instant).
    pub duration: Duration,
    /// `latency`: how long bytes are held back.
    pub delay: Duration,
    /// `latency`: a uniform ± spread around `delay` (order is kept).
    pub jitter: Duration,
    /// `latency`, `bandwidth`: which way.
    pub direction: Direction,
    /// `bandwidth`: the limit.
    pub bytes_per_second: Option<u64>,
    /// Whose connections (network faults).
    pub targets: Targets,
    /// `restart` of an external broker: the shell command that stops it.
    pub stop: Option<String>,
    /// `restart` of an external broker: the shell command that starts it again.
    pub start: Option<String>,
}

/// A fault that cannot be read: which key (when one is to blame) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultError {
    /// The key at fault; `None` for a rule about several keys.
    pub key: Option<String>,
    /// What is wrong, for a person.
    pub message: String,
}

impl FaultError {
    fn at(key: &str, message: impl Into<String>) -> Self {
        Self {
            key: Some(key.to_owned()),
            message: message.into(),
        }
    }
}

impl fmt::Display for FaultError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key {
            Some(key) => write!(f, "`{key}`: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for FaultError {}

/// The keys a fault may have.
pub const KEYS: [&str; 10] = [
    "kind",
    "at",
    "duration",
    "delay",
    "jitter",
    "direction",
    "bytes_per_second",
    "targets",
    "stop",
    "start",
];

impl FaultSpec {
    /// Reads a fault from its fields (`key`, value as text), checking each key and the
    /// rules between them.
    ///
    /// # Errors
    /// A [`FaultError`] naming the key: unknown, repeated, missing, of the wrong form, or
    /// not allowed for the kind.
    pub fn from_fields<I, K, V>(fields: I) -> Result<FaultSpec, FaultError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let mut map = BTreeMap::new();
        for (key, value) in fields {
            let key = key.into();
            if !KEYS.contains(&key.as_str()) {
                return Err(FaultError::at(
                    &key,
                    format!("unknown key; a fault has {}", KEYS.join(", ")),
                ));
            }
            if map.insert(key.clone(), value.into()).is_some() {
                return Err(FaultError::at(&key, "given twice"));
            }
        }
        Self::from_map(map)
    }

    /// Reads the `--fault` flag's form: `key=value` pairs separated by commas
    /// (`kind=partition,at=2s,duration=2s,targets=subscribers`).
    ///
    /// # Errors
    /// As [`from_fields`](Self::from_fields), and for a pair without `=`.
    pub fn parse_flag(text: &str) -> Result<FaultSpec, FaultError> {
        let mut fields = Vec::new();
        for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((key, value)) = pair.split_once('=') else {
                return Err(FaultError {
                    key: None,
                    message: format!(
                        "`{pair}` is not key=value (e.g. kind=latency,at=3s,duration=4s,delay=50ms)"
                    ),
                });
            };
            fields.push((key.trim().to_owned(), value.trim().to_owned()));
        }
        Self::from_fields(fields)
    }

    fn from_map(mut map: BTreeMap<String, String>) -> Result<FaultSpec, FaultError> {
        let kind_text = map.remove("kind").ok_or_else(|| {
            FaultError::at(
                "kind",
                "missing; one of latency, bandwidth, reset, partition, down, restart",
            )
        })?;
        let kind = FaultKind::ALL
            .into_iter()
            .find(|k| k.as_str() == kind_text)
            .ok_or_else(|| {
                FaultError::at(
                    "kind",
                    format!("`{kind_text}` is not a fault kind; one of latency, bandwidth, reset, partition, down, restart"),
                )
            })?;
        let at = duration_of(&mut map, "at")?.ok_or_else(|| {
            FaultError::at(
                "at",
                "missing; when the fault starts, from the start of the measured phase (e.g. 3s)",
            )
        })?;
        let length = duration_of(&mut map, "duration")?;
        let duration = match (kind.lasts(), length) {
            (true, Some(d)) if !d.is_zero() => d,
            (true, _) => {
                return Err(FaultError::at(
                    "duration",
                    format!("a {kind} fault needs a duration above zero (e.g. duration = \"2s\")"),
                ));
            }
            (false, None) => Duration::ZERO,
            (false, Some(_)) => {
                return Err(FaultError::at(
                    "duration",
                    "a reset happens at one instant; it takes no duration",
                ));
            }
        };
        let only_for = |map: &BTreeMap<String, String>, key: &str, kinds: &[FaultKind]| {
            if map.contains_key(key) && !kinds.contains(&kind) {
                let names: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
                return Err(FaultError::at(
                    key,
                    format!(
                        "not a parameter of a {kind} fault (only of {})",
                        names.join(", ")
                    ),
                ));
            }
            Ok(())
        };
        only_for(&map, "delay", &[FaultKind::Latency])?;
        only_for(&map, "jitter", &[FaultKind::Latency])?;
        only_for(
            &map,
            "direction",
            &[FaultKind::Latency, FaultKind::Bandwidth],
        )?;
        only_for(&map, "bytes_per_second", &[FaultKind::Bandwidth])?;
        only_for(&map, "stop", &[FaultKind::Restart])?;
        only_for(&map, "start", &[FaultKind::Restart])?;
        if kind == FaultKind::Restart && map.contains_key("targets") {
            return Err(FaultError::at(
                "targets",
                "a restart stops the broker for every client; targets is for network faults",
            ));
        }
        let delay = duration_of(&mut map, "delay")?.unwrap_or_default();
        if kind == FaultKind::Latency && delay.is_zero() {
            return Err(FaultError::at(
                "delay",
                "a latency fault needs a delay above zero (e.g. delay = \"50ms\")",
            ));
        }
        let jitter = duration_of(&mut map, "jitter")?.unwrap_or_default();
        let direction = match map.remove("direction").as_deref() {
            None | Some("both") => Direction::Both,
            Some("to-broker") => Direction::ToBroker,
            Some("from-broker") => Direction::FromBroker,
            Some(other) => {
                return Err(FaultError::at(
                    "direction",
                    format!("`{other}` is not a direction; one of to-broker, from-broker, both"),
                ));
            }
        };
        let bytes_per_second = match map.remove("bytes_per_second") {
            None if kind == FaultKind::Bandwidth => {
                return Err(FaultError::at(
                    "bytes_per_second",
                    "missing; a bandwidth fault needs its limit (e.g. bytes_per_second = 100000)",
                ));
            }
            None => None,
            Some(text) => match text.replace('_', "").parse::<u64>() {
                Ok(n) if n > 0 => Some(n),
                _ => {
                    return Err(FaultError::at(
                        "bytes_per_second",
                        format!("`{text}` is not a whole number of bytes per second above zero"),
                    ));
                }
            },
        };
        let targets = match map.remove("targets").as_deref() {
            None | Some("all") => Targets::All,
            Some("publishers") => Targets::Publishers,
            Some("subscribers") => Targets::Subscribers,
            Some(other) => {
                return Err(FaultError::at(
                    "targets",
                    format!("`{other}` is not a target group; one of all, publishers, subscribers"),
                ));
            }
        };
        let mut command = |key: &str| match map.remove(key) {
            Some(c) if c.trim().is_empty() => Err(FaultError::at(key, "an empty command")),
            other => Ok(other),
        };
        let stop = command("stop")?;
        let start = command("start")?;
        if stop.is_some() != start.is_some() {
            return Err(FaultError::at(
                if stop.is_some() { "start" } else { "stop" },
                "a restart of an external broker needs both a stop and a start command",
            ));
        }
        Ok(FaultSpec {
            kind,
            at,
            duration,
            delay,
            jitter,
            direction,
            bytes_per_second,
            targets,
            stop,
            start,
        })
    }

    /// When the fault ends, from the start of the measured phase (`at` for a reset).
    pub fn heal_at(&self) -> Duration {
        self.at + self.duration
    }

    /// The fields as they are written, defaults left out, in a stable order.
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        let text = |d: Duration| humantime::format_duration(d).to_string();
        let mut fields = vec![("kind", self.kind.to_string()), ("at", text(self.at))];
        if self.kind.lasts() {
            fields.push(("duration", text(self.duration)));
        }
        if self.kind == FaultKind::Latency {
            fields.push(("delay", text(self.delay)));
            if !self.jitter.is_zero() {
                fields.push(("jitter", text(self.jitter)));
            }
        }
        if let Some(bps) = self.bytes_per_second {
            fields.push(("bytes_per_second", bps.to_string()));
        }
        if self.direction != Direction::Both {
            fields.push(("direction", self.direction.as_str().to_owned()));
        }
        if self.targets != Targets::All {
            fields.push(("targets", self.targets.as_str().to_owned()));
        }
        if let Some(stop) = &self.stop {
            fields.push(("stop", stop.clone()));
        }
        if let Some(start) = &self.start {
            fields.push(("start", start.clone()));
        }
        fields
    }

    /// The parameters only (no kind, at, duration, commands), as `key=value` words.
    pub fn parameters(&self) -> String {
        self.fields()
            .into_iter()
            .filter(|(k, _)| !matches!(*k, "kind" | "at" | "duration" | "stop" | "start"))
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Checks a run's faults together: each starts inside the measured phase of `measured`,
/// and no two overlap (each fault's figures are attributed to its own window). Returns the
/// index of the fault at fault with the error.
///
/// # Errors
/// The first fault that starts after the measured phase or overlaps the one before it.
pub fn check_all(faults: &[FaultSpec], measured: Duration) -> Result<(), (usize, FaultError)> {
    for (i, fault) in faults.iter().enumerate() {
        if fault.at >= measured {
            return Err((
                i,
                FaultError::at(
                    "at",
                    format!(
                        "{} is not inside the measured phase ({})",
                        humantime::format_duration(fault.at),
                        humantime::format_duration(measured)
                    ),
                ),
            ));
        }
    }
    let mut order: Vec<usize> = (0..faults.len()).collect();
    order.sort_by_key(|&i| faults[i].at);
    for pair in order.windows(2) {
        let (before, after) = (&faults[pair[0]], &faults[pair[1]]);
        if after.at < before.heal_at() || (after.at == before.at) {
            return Err((
                pair[1],
                FaultError::at(
                    "at",
                    format!(
                        "overlaps the {} fault at {} (until {}); faults take turns so that each one's figures are its own",
                        before.kind,
                        humantime::format_duration(before.at),
                        humantime::format_duration(before.heal_at())
                    ),
                ),
            ));
        }
    }
    Ok(())
}

fn duration_of(
    map: &mut BTreeMap<String, String>,
    key: &str,
) -> Result<Option<Duration>, FaultError> {
    match map.remove(key) {
        None => Ok(None),
        Some(text) => humantime::parse_duration(text.trim())
            .map(Some)
            .map_err(|e| {
                FaultError::at(
                    key,
                    format!("`{text}` is not a duration like 2s or 50ms ({e})"),
                )
            }),
    }
}

impl fmt::Display for FaultSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (key, value) in self.fields() {
            if key == "kind" {
                f.write_str(&value)?;
            } else {
                write!(f, " {key}={value}")?;
            }
        }
        Ok(())
    }
}

impl TryFrom<BTreeMap<String, String>> for FaultSpec {
    type Error = FaultError;

    fn try_from(map: BTreeMap<String, String>) -> Result<Self, FaultError> {
        FaultSpec::from_fields(map)
    }
}

impl From<FaultSpec> for BTreeMap<String, String> {
    fn from(spec: FaultSpec) -> Self {
        spec.fields()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect()
    }
}

#[cfg(test)]
mod tests;
