//! Alert rules: what a `[[alerts]]` table says, validated.
//!
//! ```toml
//! [[alerts]]
//! name = "end-to-end latency"    # optional, defaults to the signal; unique
//! signal = "e2e.p99"             # see SIGNAL_NAMES
//! direction = "upper"            # upper: too high is bad; lower: too low is bad
//! warning = "5ms"                # the more sensitive threshold (early warning)
//! critical = "20ms"              # the SLA
//! for = 3                        # consecutive 1 s intervals that must breach (default 1)
//! min_samples = 100              # intervals with fewer samples are skipped (default 1)
//! labels = { team = "chat" }
//! annotations = { summary = "Chat messages are slow", runbook_url = "https://..." }
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::signal::{SIGNAL_NAMES, Signal};
use crate::units::{format_value, parse_threshold};

/// Which side of a threshold is bad.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Values above the threshold breach (latency, resources, counters).
    Upper,
    /// Values below the threshold breach (availability, throughput).
    Lower,
}

impl Direction {
    /// Whether `value` breaches `threshold`: strictly above (upper) or below (lower).
    pub fn breaches(self, value: f64, threshold: f64) -> bool {
        match self {
            Direction::Upper => value > threshold,
            Direction::Lower => value < threshold,
        }
    }

    /// The comparison sign of a breach: `>` or `<`.
    pub fn sign(self) -> &'static str {
        match self {
            Direction::Upper => ">",
            Direction::Lower => "<",
        }
    }

    /// The sign of a value that does not breach: `<=` or `>=`.
    pub fn ok_sign(self) -> &'static str {
        match self {
            Direction::Upper => "<=",
            Direction::Lower => ">=",
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Upper => "upper",
            Direction::Lower => "lower",
        })
    }
}

/// One validated alert rule.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    /// Name, unique among the rules (defaults to the signal).
    pub name: String,
    /// The figure watched.
    pub signal: Signal,
    /// Which side of the thresholds is bad.
    pub direction: Direction,
    /// The early-warning threshold, in the signal's unit.
    pub warning: Option<f64>,
    /// The SLA threshold, in the signal's unit.
    pub critical: Option<f64>,
    /// Consecutive intervals that must breach before an interval breach fires (>= 1).
    pub for_intervals: u32,
    /// Intervals (and runs) with fewer samples are not judged.
    pub min_samples: u64,
    /// Extra labels, copied to verdicts and exported rules.
    pub labels: BTreeMap<String, String>,
    /// Annotations (`summary`, `description`, `runbook_url`, ...).
    pub annotations: BTreeMap<String, String>,
}

impl Rule {
    /// A threshold in the signal's unit, for people (`20ms`, `99.9%`).
    pub fn format(&self, v: f64) -> String {
        format_value(v, self.signal.unit())
    }

    /// The thresholds present, most severe first.
    pub fn levels(&self) -> Vec<(crate::Severity, f64)> {
        let mut out = Vec::new();
        if let Some(c) = self.critical {
            out.push((crate::Severity::Critical, c));
        }
        if let Some(w) = self.warning {
            out.push((crate::Severity::Warning, w));
        }
        out
    }
}

/// Why a rule is invalid, or a rules file cannot be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuleError {
    /// A rule is invalid.
    #[error("{}alert rule {rule}{}: {message}", location(origin.as_deref(), *line), field.as_ref().map(|f| format!(", field `{f}`")).unwrap_or_default())]
    Invalid {
        /// The file, if the rules came from one.
        origin: Option<PathBuf>,
        /// 1-based line in the file, when known.
        line: Option<usize>,
        /// The rule: `#<index> "<name>"` (index from 1).
        rule: String,
        /// The field at fault, if one.
        field: Option<String>,
        /// What is wrong.
        message: String,
    },
    /// The rules file cannot be read.
    #[error("cannot read the rules file {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The rules file is not valid TOML.
    #[error("{}: not a valid TOML rules file: {message}", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message (with line and column).
        message: String,
    },
    /// The rules file has no `[[alerts]]` table.
    #[error("{}: no [[alerts]] tables found (a rules file holds [[alerts]] tables, as a scenario does)", path.display())]
    Empty {
        /// The file.
        path: PathBuf,
    },
}

fn location(origin: Option<&Path>, line: Option<usize>) -> String {
    match (origin, line) {
        (Some(p), Some(l)) => format!("{}:{l}: ", p.display()),
        (Some(p), None) => format!("{}: ", p.display()),
        (None, Some(l)) => format!("line {l}: "),
        (None, None) => String::new(),
    }
}

const FIELDS: &[&str] = &[
    "name",
    "signal",
    "direction",
    "warning",
    "critical",
    "for",
    "min_samples",
    "labels",
    "annotations",
    "summary",
    "description",
    "runbook_url",
];

/// Where the rules came from, to give errors a file and line.
struct Source<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Source<'_> {
    /// The 1-based line of rule `index`'s `field` (its key), else of the rule's table.
    /// Only an error needs it, so the spans are parsed here, not for every file.
    fn line(&self, index: usize, field: Option<&str>) -> Option<usize> {
        let doc = toml_edit::ImDocument::parse(self.text).ok()?;
        let table = doc.get("alerts")?.as_array_of_tables()?.get(index)?;
        let span: Option<Range<usize>> = field
            .and_then(|f| table.get_key_value(f))
            .and_then(|(k, v)| k.span().or_else(|| v.span()))
            .or_else(|| table.span());
        let offset = span?.start.min(self.text.len());
        Some(self.text[..offset].matches('\n').count() + 1)
    }
}

/// Validates a scenario's (or a file's) `[[alerts]]` tables, in order.
///
/// # Errors
/// [`RuleError::Invalid`] for the first invalid rule, naming it and the field.
pub fn parse_rules(tables: &[toml::Table]) -> Result<Vec<Rule>, RuleError> {
    parse_with(tables, None)
}

/// Reads a rules file: `[[alerts]]` tables as in a scenario (other top-level keys, such
/// as a whole scenario's, are ignored). Errors carry the file and line.
///
/// # Errors
/// [`RuleError::Io`], [`RuleError::Syntax`], [`RuleError::Empty`], or
/// [`RuleError::Invalid`] with the line of the field at fault.
pub fn read_rules_file(path: &Path) -> Result<Vec<Rule>, RuleError> {
    let text = std::fs::read_to_string(path).map_err(|source| RuleError::Io {
        path: path.to_owned(),
        source,
    })?;
    parse_rules_text(&text, path)
}

/// Parses the text of a rules file; `path` names it in errors.
///
/// # Errors
/// As [`read_rules_file`], without the I/O case.
pub fn parse_rules_text(text: &str, path: &Path) -> Result<Vec<Rule>, RuleError> {
    let syntax = |message: String| RuleError::Syntax {
        path: path.to_owned(),
        message,
    };
    let root: toml::Table = toml::from_str(text).map_err(|e| syntax(e.to_string()))?;
    let tables: Vec<toml::Table> = match root.get("alerts") {
        None => Vec::new(),
        Some(toml::Value::Array(items)) => items
            .iter()
            .map(|v| match v {
                toml::Value::Table(t) => Ok(t.clone()),
                _ => Err(syntax(
                    "`alerts` must be an array of tables ([[alerts]])".into(),
                )),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(syntax(
                "`alerts` must be an array of tables ([[alerts]])".into(),
            ));
        }
    };
    if tables.is_empty() {
        return Err(RuleError::Empty {
            path: path.to_owned(),
        });
    }
    parse_with(&tables, Some(&Source { path, text }))
}

/// Validates the rules a run record keeps (`alert_rules`: the scenario's `[[alerts]]`
/// tables as JSON); `null` means no rules.
///
/// # Errors
/// [`RuleError::Invalid`] for the first invalid rule (or for a document that is not a
/// list of tables).
pub fn rules_from_json(alert_rules: &serde_json::Value) -> Result<Vec<Rule>, RuleError> {
    if alert_rules.is_null() {
        return Ok(Vec::new());
    }
    let tables: Vec<toml::Table> =
        serde_json::from_value(alert_rules.clone()).map_err(|e| RuleError::Invalid {
            origin: None,
            line: None,
            rule: "list".into(),
            field: Some("alert_rules".into()),
            message: format!("the record's alert rules are not a list of tables: {e}"),
        })?;
    parse_rules(&tables)
}

fn parse_with(tables: &[toml::Table], source: Option<&Source<'_>>) -> Result<Vec<Rule>, RuleError> {
    let mut rules: Vec<Rule> = Vec::with_capacity(tables.len());
    for (index, table) in tables.iter().enumerate() {
        let rule = parse_one(table).map_err(|(field, message)| {
            let name = table.get("name").and_then(toml::Value::as_str);
            RuleError::Invalid {
                origin: source.map(|s| s.path.to_owned()),
                line: source.and_then(|s| s.line(index, field.as_deref())),
                rule: describe(index, name),
                field,
                message,
            }
        })?;
        if let Some(first) = rules.iter().position(|r| r.name == rule.name) {
            return Err(RuleError::Invalid {
                origin: source.map(|s| s.path.to_owned()),
                line: source.and_then(|s| s.line(index, Some("name"))),
                rule: describe(index, Some(&rule.name)),
                field: Some("name".into()),
                message: format!(
                    "rule #{} already has this name; names must be unique",
                    first + 1
                ),
            });
        }
        rules.push(rule);
    }
    Ok(rules)
}

fn describe(index: usize, name: Option<&str>) -> String {
    match name {
        Some(n) => format!("#{} {n:?}", index + 1),
        None => format!("#{}", index + 1),
    }
}

type FieldError = (Option<String>, String);

fn field_err(field: &str, message: impl Into<String>) -> FieldError {
    (Some(field.to_owned()), message.into())
}

fn string<'a>(table: &'a toml::Table, field: &str) -> Result<Option<&'a str>, FieldError> {
    match table.get(field) {
        None => Ok(None),
        Some(toml::Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(field_err(
            field,
            format!("expected a string, found a {}", other.type_str()),
        )),
    }
}

fn string_map(table: &toml::Table, field: &str) -> Result<BTreeMap<String, String>, FieldError> {
    match table.get(field) {
        None => Ok(BTreeMap::new()),
        Some(toml::Value::Table(t)) => t
            .iter()
            .map(|(k, v)| match v {
                toml::Value::String(s) => Ok((k.clone(), s.clone())),
                other => Err(field_err(
                    field,
                    format!("`{k}` must be a string, found a {}", other.type_str()),
                )),
            })
            .collect(),
        Some(other) => Err(field_err(
            field,
            format!("expected a table of strings, found a {}", other.type_str()),
        )),
    }
}

fn count(table: &toml::Table, field: &str, default: u64, min: u64) -> Result<u64, FieldError> {
    match table.get(field) {
        None => Ok(default),
        Some(toml::Value::Integer(i)) if *i >= min as i64 => Ok(*i as u64),
        Some(toml::Value::Integer(i)) => {
            Err(field_err(field, format!("must be at least {min}, got {i}")))
        }
        Some(other) => Err(field_err(
            field,
            format!("expected an integer, found a {}", other.type_str()),
        )),
    }
}

fn parse_one(table: &toml::Table) -> Result<Rule, FieldError> {
    if let Some(unknown) = table.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(field_err(
            unknown,
            format!("unknown field; a rule has {}", FIELDS.join(", ")),
        ));
    }
    let signal_name = string(table, "signal")?
        .ok_or_else(|| field_err("signal", format!("missing; one of {SIGNAL_NAMES}")))?;
    let signal = Signal::parse(signal_name).ok_or_else(|| {
        field_err(
            "signal",
            format!("unknown signal {signal_name:?}; one of {SIGNAL_NAMES}"),
        )
    })?;
    let direction = match string(table, "direction")? {
        Some("upper") => Direction::Upper,
        Some("lower") => Direction::Lower,
        Some(other) => {
            return Err(field_err(
                "direction",
                format!(
                    "{other:?} is not a direction; write \"upper\" (too high is bad) or \"lower\" (too low is bad)"
                ),
            ));
        }
        None => {
            return Err(field_err(
                "direction",
                "missing; write \"upper\" (too high is bad: latency, resources, counters) or \"lower\" (too low is bad: availability, throughput)",
            ));
        }
    };
    let threshold = |field: &str| -> Result<Option<f64>, FieldError> {
        table
            .get(field)
            .map(|v| parse_threshold(v, signal.unit()).map_err(|m| field_err(field, m)))
            .transpose()
    };
    let warning = threshold("warning")?;
    let critical = threshold("critical")?;
    if warning.is_none() && critical.is_none() {
        return Err((
            None,
            "needs a `warning` or a `critical` threshold (normally both)".into(),
        ));
    }
    if let (Some(w), Some(c)) = (warning, critical) {
        let fine = match direction {
            Direction::Upper => w <= c,
            Direction::Lower => w >= c,
        };
        if !fine {
            let unit = signal.unit();
            return Err(field_err(
                "warning",
                format!(
                    "warning {} must be the more sensitive threshold: for an {direction} bound it must be {} critical {}",
                    format_value(w, unit),
                    direction.ok_sign(),
                    format_value(c, unit)
                ),
            ));
        }
    }
    let for_intervals =
        u32::try_from(count(table, "for", 1, 1)?).map_err(|_| field_err("for", "too large"))?;
    let min_samples = count(table, "min_samples", 1, 0)?;
    let labels = string_map(table, "labels")?;
    for key in labels.keys() {
        let valid = key
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid || key.starts_with("__") {
            return Err(field_err(
                "labels",
                format!(
                    "{key:?} is not a valid label name ([a-zA-Z_][a-zA-Z0-9_]*, not starting with __)"
                ),
            ));
        }
        if matches!(
            key.as_str(),
            "severity" | "alertname" | "scenario" | "backend" | "run_id"
        ) {
            return Err(field_err(
                "labels",
                format!("`{key}` is set by brokerbench; choose another label name"),
            ));
        }
    }
    let mut annotations = string_map(table, "annotations")?;
    for key in ["summary", "description", "runbook_url"] {
        if let Some(v) = string(table, key)? {
            annotations.insert(key.to_owned(), v.to_owned());
        }
    }
    let name = match string(table, "name")? {
        Some(n) if n.trim().is_empty() => return Err(field_err("name", "must not be empty")),
        Some(n) => n.to_owned(),
        None => signal.to_string(),
    };
    Ok(Rule {
        name,
        signal,
        direction,
        warning,
        critical,
        for_intervals,
        min_samples,
        labels,
        annotations,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> toml::Table {
        toml::from_str(text).expect("test TOML")
    }

    #[test]
    fn parses_a_full_rule() {
        let rules = parse_rules(&[table(
            r#"
            name = "latency"
            signal = "e2e.p99"
            direction = "upper"
            warning = "5ms"
            critical = "20ms"
            for = 3
            min_samples = 10
            labels = { team = "chat" }
            annotations = { summary = "slow" }
            runbook_url = "https://example.com/rb"
            "#,
        )])
        .expect("valid");
        let r = &rules[0];
        assert_eq!(r.signal.to_string(), "e2e.p99");
        assert_eq!((r.warning, r.critical), (Some(0.005), Some(0.02)));
        assert_eq!((r.for_intervals, r.min_samples), (3, 10));
        assert_eq!(r.labels["team"], "chat");
        assert_eq!(r.annotations["runbook_url"], "https://example.com/rb");
        assert_eq!(r.annotations["summary"], "slow");
    }

    #[test]
    fn errors_name_rule_and_field() {
        let ok = table(
            r#"signal = "lost"
direction = "upper"
critical = 0"#,
        );
        let bad = table(
            r#"name = "avail"
signal = "availability"
direction = "lower"
warning = 0.99
critical = 0.999"#,
        );
        let e = parse_rules(&[ok.clone(), bad]).unwrap_err().to_string();
        assert!(e.contains("#2 \"avail\""), "{e}");
        assert!(e.contains("field `warning`"), "{e}");
        assert!(e.contains("more sensitive"), "{e}");

        let no_dir = table(
            r#"signal = "e2e.p99"
critical = "1ms""#,
        );
        let e = parse_rules(&[no_dir]).unwrap_err().to_string();
        assert!(e.contains("#1") && e.contains("field `direction`"), "{e}");

        let e = parse_rules(&[ok.clone(), ok]).unwrap_err().to_string();
        assert!(e.contains("unique"), "{e}");
    }

    #[test]
    fn file_errors_have_lines() {
        let text = "# rules\n[[alerts]]\nname = \"a\"\nsignal = \"e2e.p99\"\ndirection = \"upper\"\ncritical = \"20ms\"\n\n[[alerts]]\nname = \"b\"\nsignal = \"e2e.p77\"\ndirection = \"upper\"\n";
        let e = parse_rules_text(text, Path::new("rules.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("rules.toml:10: alert rule #2 \"b\", field `signal`"),
            "{e}"
        );
        let e = parse_rules_text("x = 1\n", Path::new("r.toml")).unwrap_err();
        assert!(matches!(e, RuleError::Empty { .. }));
        let e = parse_rules_text("[[alerts]\n", Path::new("r.toml")).unwrap_err();
        assert!(matches!(e, RuleError::Syntax { .. }));
    }
}
