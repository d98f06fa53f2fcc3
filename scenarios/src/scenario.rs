//! Loading a scenario, overriding it from the command line, and the arithmetic a run needs
//! (offered rate over time, expected message counts).

use std::path::Path;
use std::time::Duration;

use toml_edit::ImDocument;

use crate::error::{ErrorKind, ScenarioError};
use crate::file::ScenarioFile;
use crate::model::Scenario;
use crate::validate::{self, Violation};
use crate::{builtin, locate};

impl Scenario {
    /// Parses and validates a scenario from TOML text. `origin` names the source in errors:
    /// a file path or `builtin:<name>`.
    ///
    /// # Errors
    /// [`ErrorKind::Syntax`] for invalid TOML, [`ErrorKind::Schema`] for an unknown key, a
    /// missing key or a wrong type, [`ErrorKind::Invalid`] for values that do not make a
    /// runnable scenario. Each names `origin`, line, column and key path.
    pub fn from_toml_str(source: &str, origin: &str) -> Result<Scenario, ScenarioError> {
        let document = ImDocument::parse(source).map_err(|e| {
            let span = e.span();
            let key = span.as_ref().map(|s| locate::path_near(source, s.start));
            ScenarioError::located(
                ErrorKind::Syntax,
                origin,
                source,
                span,
                key,
                first_line(e.message()),
            )
        })?;
        let file: ScenarioFile = toml::from_str(source).map_err(|e| {
            let span = e.span();
            let key = span.as_ref().map(|s| match missing_field(e.message()) {
                // Reported at the table that lacks it: name the table and the key.
                Some(field) => match locate::table_at(&document, s.start) {
                    table if table.is_empty() => field.to_owned(),
                    table => format!("{table}.{field}"),
                },
                None => locate::path_at(&document, s.start),
            });
            ScenarioError::located(
                ErrorKind::Schema,
                origin,
                source,
                span,
                key,
                e.message().trim_end(),
            )
        })?;
        let located = |v: Violation| {
            let span = locate::span_of(&document, &v.path);
            ScenarioError::located(
                ErrorKind::Invalid,
                origin,
                source,
                span,
                Some(v.path),
                v.message,
            )
        };
        let scenario = file.into_scenario().map_err(located)?;
        validate::check(&scenario).map_err(located)?;
        Ok(scenario)
    }

    /// Reads, parses and validates a scenario file.
    ///
    /// # Errors
    /// [`ErrorKind::Read`] when the file cannot be read, otherwise as
    /// [`Scenario::from_toml_str`], with the path as origin.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Scenario, ScenarioError> {
        let path = path.as_ref();
        let origin = path.display().to_string();
        let source = std::fs::read_to_string(path).map_err(|e| ScenarioError::read(&origin, e))?;
        Self::from_toml_str(&source, &origin)
    }

    /// Loads what a user names on the command line: a built-in scenario name, else a path to
    /// a TOML file.
    ///
    /// # Errors
    /// [`ErrorKind::UnknownScenario`] (listing the built-ins) when `name` is neither, or any
    /// error of [`Scenario::from_file`].
    pub fn load(name: &str) -> Result<Scenario, ScenarioError> {
        if builtin::source(name).is_some() {
            return builtin::get(name);
        }
        let path = Path::new(name);
        if path.exists() || name.ends_with(".toml") || name.contains(['/', '\\']) {
            return Self::from_file(path);
        }
        Err(builtin::unknown(name))
    }

    /// Checks the rules of a runnable scenario on a value built or changed in code (a file
    /// is checked when loaded). Errors name the key path, but no line.
    ///
    /// # Errors
    /// [`ErrorKind::Invalid`] with the first broken rule.
    pub fn validate(&self) -> Result<(), ScenarioError> {
        validate::check(self).map_err(|v| {
            ScenarioError::new(
                ErrorKind::Invalid,
                format!("scenario {}", self.name),
                v.message,
            )
            .with_key(v.path)
        })
    }

    /// Scales every workload's pace by the same factor so that the peak total offered rate
    /// (publishes per second, all workloads together, receipts not counted) equals `rate`.
    /// Constant rates, steps and ramps are multiplied; bursts keep their size and come more
    /// or less often. Relative proportions between workloads and the shape of schedules are
    /// kept: `--rate 10k` on a 1k→4k ramp gives a 2.5k→10k ramp.
    ///
    /// # Errors
    /// [`ErrorKind::Override`] when `rate` is not a finite number greater than 0, or when the
    /// scaled scenario is not runnable.
    pub fn with_rate(mut self, rate: f64) -> Result<Scenario, ScenarioError> {
        if !(rate.is_finite() && rate > 0.0) {
            return Err(override_error(
                "--rate",
                format!("the rate must be greater than 0 msgs/s (got {rate})"),
            ));
        }
        let peak = self.peak_offered_rate();
        if peak <= 0.0 {
            return Err(override_error(
                "--rate",
                "the scenario offers no load to scale",
            ));
        }
        let factor = rate / peak;
        for (i, workload) in self.workloads.iter_mut().enumerate() {
            workload.schedule = workload.schedule.scaled(factor).ok_or_else(|| {
                override_error(
                    "--rate",
                    format!("cannot scale workload `{}` by {factor}", workload.name),
                )
                .with_key(format!("workload[{i}]"))
            })?;
        }
        self.recheck("--rate")
    }

    /// Replaces the measured duration. Warm-up and drain stay; a step schedule or ramp that
    /// outlasts the new duration is cut short, and one that ends earlier holds its last rate.
    ///
    /// # Errors
    /// [`ErrorKind::Override`] when `duration` is 0 or makes the scenario unrunnable (late
    /// subscribers that would join after the end).
    pub fn with_duration(mut self, duration: Duration) -> Result<Scenario, ScenarioError> {
        self.duration = duration;
        self.recheck("--duration")
    }

    /// Adds faults given on the command line (`--fault`) after the file's own.
    ///
    /// # Errors
    /// [`ErrorKind::Override`] when a fault starts after the measured phase or overlaps
    /// another.
    pub fn with_faults(
        mut self,
        faults: impl IntoIterator<Item = brokerbench_faults::FaultSpec>,
    ) -> Result<Scenario, ScenarioError> {
        self.faults.extend(faults);
        self.recheck("--fault")
    }

    fn recheck(self, flag: &str) -> Result<Scenario, ScenarioError> {
        match validate::check(&self) {
            Ok(()) => Ok(self),
            Err(v) => Err(override_error(flag, v.message).with_key(v.path)),
        }
    }

    /// Warm-up + measured phase + drain: the wall time of a run, set-up aside.
    pub fn total_time(&self) -> Duration {
        self.warmup + self.duration + self.drain
    }

    /// The offered publish rate of all workloads together at `t` from the start of the run
    /// (the start of warm-up), msgs/s. During warm-up each workload sends at its initial
    /// pace; after the measured phase (the drain) nothing is sent.
    pub fn offered_rate_at(&self, t: Duration) -> f64 {
        if t < self.warmup {
            self.workloads
                .iter()
                .map(|w| w.schedule.warmup().rate_at(t))
                .sum()
        } else if t < self.warmup + self.duration {
            let t = t - self.warmup;
            self.workloads.iter().map(|w| w.schedule.rate_at(t)).sum()
        } else {
            0.0
        }
    }

    /// The highest total offered rate over the warm-up and the measured phase, msgs/s.
    pub fn peak_offered_rate(&self) -> f64 {
        let mut points: Vec<Duration> = self
            .workloads
            .iter()
            .flat_map(|w| w.schedule.breakpoints(self.duration))
            .collect();
        points.sort_unstable();
        points.dedup();
        points
            .into_iter()
            .map(|t| {
                self.workloads
                    .iter()
                    .map(|w| w.schedule.rate_at(t))
                    .sum::<f64>()
            })
            .fold(0.0, f64::max)
    }

    /// Messages published during warm-up, all workloads together (receipts not counted).
    pub fn expected_warmup_messages(&self) -> u64 {
        self.workloads
            .iter()
            .map(|w| w.schedule.warmup().expected_messages(self.warmup))
            .sum()
    }

    /// Messages published during the measured phase, all workloads together (receipts not
    /// counted).
    pub fn expected_measured_messages(&self) -> u64 {
        self.workloads
            .iter()
            .map(|w| w.schedule.expected_messages(self.duration))
            .sum()
    }

    /// Messages published in the whole run: warm-up plus measured phase.
    pub fn expected_messages(&self) -> u64 {
        self.expected_warmup_messages() + self.expected_measured_messages()
    }

    /// The resolved scenario as JSON, for the run record. Durations are text (`"2s"`), the
    /// pace of each workload is `schedule` with a `kind`.
    ///
    /// # Errors
    /// Only if an alert table holds a value JSON cannot represent.
    pub fn to_json(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::to_value(self)
    }
}

fn override_error(flag: &str, message: impl Into<String>) -> ScenarioError {
    ScenarioError::new(ErrorKind::Override, flag, message)
}

/// The key named by serde's "missing field `x`" message.
fn missing_field(message: &str) -> Option<&str> {
    message.strip_prefix("missing field `")?.split('`').next()
}

/// toml_edit's syntax messages can run over several lines; the first is the point.
fn first_line(message: &str) -> String {
    let mut lines = message.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or("invalid TOML").to_owned();
    match lines.next() {
        Some(second) => format!("{first} ({second})"),
        None => first,
    }
}
