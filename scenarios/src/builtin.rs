//! The built-in scenario library, embedded in the binary (`scenarios/builtin/*.toml`).
//!
//! Each file starts with a comment block saying what real-world messaging pattern it models
//! and what each key means. Every built-in runs in about 10 s on a 2-core machine.

use std::time::Duration;

use crate::error::{ErrorKind, ScenarioError};
use crate::model::Scenario;

/// Name and TOML text of every built-in, in the order `brokerbench scenarios` lists them.
const BUILTINS: [(&str, &str); 7] = [
    ("chat-1to1", include_str!("../builtin/chat-1to1.toml")),
    ("group-chat", include_str!("../builtin/group-chat.toml")),
    (
        "typing-indicators",
        include_str!("../builtin/typing-indicators.toml"),
    ),
    ("receipts", include_str!("../builtin/receipts.toml")),
    ("work-queue", include_str!("../builtin/work-queue.toml")),
    (
        "offline-catchup",
        include_str!("../builtin/offline-catchup.toml"),
    ),
    (
        "chat-under-faults",
        include_str!("../builtin/chat-under-faults.toml"),
    ),
];

/// The names of the built-in scenarios.
pub fn names() -> impl ExactSizeIterator<Item = &'static str> + Clone {
    BUILTINS.iter().map(|(name, _)| *name)
}

/// The TOML text of a built-in scenario, comments included (for `--show` or as a template).
pub fn source(name: &str) -> Option<&'static str> {
    BUILTINS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, source)| *source)
}

/// A built-in scenario, parsed and validated; errors name `builtin:<name>`.
///
/// # Errors
/// [`ErrorKind::UnknownScenario`] (listing the built-ins) for a name that is not one.
pub fn get(name: &str) -> Result<Scenario, ScenarioError> {
    let source = source(name).ok_or_else(|| unknown(name))?;
    Scenario::from_toml_str(source, &format!("builtin:{name}"))
}

/// One line of `brokerbench scenarios`.
#[derive(Debug, Clone, PartialEq)]
pub struct BuiltinSummary {
    /// The name to pass to `brokerbench run`.
    pub name: &'static str,
    /// The scenario's one-line description.
    pub description: String,
    /// Warm-up + measured phase + drain.
    pub total_time: Duration,
    /// The highest total offered publish rate, msgs/s.
    pub peak_rate: f64,
}

/// Every built-in with its one-line description, in listing order.
///
/// # Errors
/// The error of a built-in that fails to load (a bug the crate's tests catch).
pub fn list() -> Result<Vec<BuiltinSummary>, ScenarioError> {
    names()
        .map(|name| {
            let scenario = get(name)?;
            Ok(BuiltinSummary {
                name,
                total_time: scenario.total_time(),
                peak_rate: scenario.peak_offered_rate(),
                description: scenario.description,
            })
        })
        .collect()
}

pub(crate) fn unknown(name: &str) -> ScenarioError {
    let known: Vec<&str> = names().collect();
    ScenarioError::new(
        ErrorKind::UnknownScenario,
        name,
        format!(
            "no built-in scenario or file by that name; built-ins: {}",
            known.join(", ")
        ),
    )
}
