//! The one error type of the crate: where a scenario went wrong, in words a user can act on.

use std::fmt;

/// What went wrong while loading or adjusting a scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The scenario file could not be read.
    Read,
    /// The text is not valid TOML.
    Syntax,
    /// Valid TOML that does not fit the scenario format: an unknown key, a missing key or a
    /// value of the wrong type.
    Schema,
    /// Well-formed, but the values do not make a runnable scenario (zero topics, a rate of 0,
    /// `min > max`, a late subscriber with nothing to catch up from, …).
    Invalid,
    /// The name is neither a built-in scenario nor a file.
    UnknownScenario,
    /// A command-line override (`--rate`, `--duration`) cannot be applied.
    Override,
}

/// Where in a scenario source an error was found.
///
/// Lines and columns are 1-based; the column counts characters, not bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// Line number, from 1.
    pub line: usize,
    /// Column number, from 1, in characters.
    pub column: usize,
}

/// An error while loading, validating or overriding a scenario.
///
/// Its text names the origin (a file path or `builtin:<name>`), the line and column, and the
/// key path (`workload[1].rate`), then shows the offending source line:
///
/// ```text
/// my.toml:12:8: workload[1].rate: the rate must be greater than 0 msgs/s (got 0)
///    |
/// 12 | rate = 0
///    |        ^
/// ```
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct ScenarioError(Box<Details>);

/// The fields of a [`ScenarioError`], boxed so that `Result`s stay small.
#[derive(Debug, thiserror::Error)]
#[error("{head}{message}{snippet}")]
struct Details {
    kind: ErrorKind,
    head: Head,
    message: String,
    snippet: Snippet,
    #[source]
    source: Option<std::io::Error>,
}

impl ScenarioError {
    pub(crate) fn new(
        kind: ErrorKind,
        origin: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self(Box::new(Details {
            kind,
            head: Head {
                origin: origin.into(),
                position: None,
                key: None,
            },
            message: message.into(),
            snippet: Snippet(None),
            source: None,
        }))
    }

    /// An error located in `source` at byte `span`, about key path `key`.
    pub(crate) fn located(
        kind: ErrorKind,
        origin: &str,
        source: &str,
        span: Option<std::ops::Range<usize>>,
        key: Option<String>,
        message: impl Into<String>,
    ) -> Self {
        let mut error = Self::new(kind, origin, message);
        error.0.head.key = key.filter(|k| !k.is_empty());
        if let Some(span) = span {
            let (position, line_text) = position_of(source, span.start);
            let remaining = line_text
                .chars()
                .count()
                .saturating_sub(position.column - 1);
            let width = source
                .get(span.clone())
                .map_or(1, |s| s.chars().take_while(|&c| c != '\n').count())
                .clamp(1, remaining.max(1));
            error.0.snippet = Snippet(Some(SourceLine {
                line: position.line,
                column: position.column,
                width,
                text: line_text.to_owned(),
            }));
            error.0.head.position = Some(position);
        }
        error
    }

    pub(crate) fn read(origin: &str, source: std::io::Error) -> Self {
        let mut error = Self::new(
            ErrorKind::Read,
            origin,
            format!("cannot read the scenario file: {source}"),
        );
        error.0.source = Some(source);
        error
    }

    pub(crate) fn with_key(mut self, key: impl Into<String>) -> Self {
        self.0.head.key = Some(key.into());
        self
    }

    /// What kind of error this is.
    pub fn kind(&self) -> ErrorKind {
        self.0.kind
    }

    /// The file path, `builtin:<name>`, or the override (`--rate`) the error is about.
    pub fn origin(&self) -> &str {
        &self.0.head.origin
    }

    /// Line and column in the source, when the error has a place in it.
    pub fn position(&self) -> Option<&Position> {
        self.0.head.position.as_ref()
    }

    /// The key path, such as `workload[1].rate`, when known.
    pub fn key(&self) -> Option<&str> {
        self.0.head.key.as_deref()
    }

    /// The bare message, without origin, position or snippet.
    pub fn message(&self) -> &str {
        &self.0.message
    }
}

/// `origin:line:column: key: ` — the prefix of the error text.
#[derive(Debug)]
struct Head {
    origin: String,
    position: Option<Position>,
    key: Option<String>,
}

impl fmt::Display for Head {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.origin)?;
        if let Some(position) = &self.position {
            write!(f, ":{}:{}", position.line, position.column)?;
        }
        if let Some(key) = &self.key {
            write!(f, ": {key}")?;
        }
        write!(f, ": ")
    }
}

/// The offending source line with a caret under the span, or nothing.
#[derive(Debug)]
struct Snippet(Option<SourceLine>);

#[derive(Debug)]
struct SourceLine {
    line: usize,
    column: usize,
    width: usize,
    text: String,
}

impl fmt::Display for Snippet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(source) = &self.0 else {
            return Ok(());
        };
        let number = source.line.to_string();
        let gutter = " ".repeat(number.len());
        write!(
            f,
            "\n{gutter} |\n{number} | {}\n{gutter} | {}{}",
            source.text,
            " ".repeat(source.column - 1),
            "^".repeat(source.width)
        )
    }
}

/// The 1-based position of byte `offset` in `source`, and the text of its line.
pub(crate) fn position_of(source: &str, offset: usize) -> (Position, &str) {
    let mut offset = offset.min(source.len());
    while !source.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &source[..offset];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line_end = source[offset..]
        .find('\n')
        .map_or(source.len(), |i| offset + i);
    let line = before.matches('\n').count() + 1;
    let column = source[line_start..offset].chars().count() + 1;
    let text = source[line_start..line_end].trim_end_matches('\r');
    (Position { line, column }, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_and_count_characters() {
        let source = "a = 1\nbé = \"x\"\r\nc = 3";
        let (p, text) = position_of(source, 0);
        assert_eq!((p.line, p.column, text), (1, 1, "a = 1"));
        let offset = source.find("= \"x\"").unwrap();
        let (p, text) = position_of(source, offset);
        assert_eq!((p.line, p.column, text), (2, 4, "bé = \"x\""));
        let (p, text) = position_of(source, source.len());
        assert_eq!((p.line, p.column, text), (3, 6, "c = 3"));
    }

    #[test]
    fn the_text_shows_origin_position_key_and_a_caret() {
        let source = "name = \"x\"\nrate = 0\n";
        let start = source.find('0').unwrap();
        let error = ScenarioError::located(
            ErrorKind::Invalid,
            "x.toml",
            source,
            Some(start..start + 1),
            Some("workload[0].rate".into()),
            "too small",
        );
        assert_eq!(
            error.to_string(),
            "x.toml:2:8: workload[0].rate: too small\n  |\n2 | rate = 0\n  |        ^"
        );
        assert_eq!(error.position(), Some(&Position { line: 2, column: 8 }));
    }
}
