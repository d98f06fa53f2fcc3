//! Finding places in a scenario source: the key path at a byte offset (for errors that come
//! with a span) and the span of a key path (for errors found after parsing).
//!
//! Key paths read like `workload[1].schedule.steps[0]`: table keys joined by dots, array
//! elements by `[index]`.

use std::ops::Range;

use toml_edit::{Array, ArrayOfTables, ImDocument, InlineTable, Item, Table, Value};

/// The deepest key path whose key or value contains byte `offset`; empty for the root.
pub(crate) fn path_at(document: &ImDocument<&str>, offset: usize) -> String {
    let mut segments = Vec::new();
    deepest_at(
        Node::Table(document.as_table()),
        offset,
        false,
        &mut segments,
    );
    render(&segments)
}

/// The deepest table (or inline table) holding byte `offset`; empty for the root. Used for
/// errors about a table as a whole, such as a missing key.
pub(crate) fn table_at(document: &ImDocument<&str>, offset: usize) -> String {
    let mut segments = Vec::new();
    deepest_at(
        Node::Table(document.as_table()),
        offset,
        true,
        &mut segments,
    );
    render(&segments)
}

/// The span of the value at `path`, or of the nearest enclosing value or table that exists
/// (a missing key is reported at its table).
pub(crate) fn span_of(document: &ImDocument<&str>, path: &str) -> Option<Range<usize>> {
    let mut node = Node::Table(document.as_table());
    let mut best = node.span();
    for segment in parse(path) {
        let Some(child) = node.child(&segment) else {
            break;
        };
        best = child.span().or(best);
        node = child;
    }
    best
}

/// Where a syntax error sits, when the document cannot be parsed: the table header above
/// `offset` and the key at the start of its line, read from the raw text. Best effort: it
/// understands the headers and `key = value` lines that scenario files use.
pub(crate) fn path_near(source: &str, offset: usize) -> String {
    let mut offset = offset.min(source.len());
    while !source.is_char_boundary(offset) {
        offset -= 1;
    }
    let line_start = source[..offset].rfind('\n').map_or(0, |i| i + 1);
    let mut arrays: Vec<(String, usize)> = Vec::new();
    let mut table = String::new();
    for line in source[..line_start].lines() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix("[[").and_then(|l| l.split("]]").next()) {
            let name = name.trim().to_owned();
            match arrays.iter_mut().find(|(n, _)| *n == name) {
                Some((_, count)) => *count += 1,
                None => arrays.push((name.clone(), 0)),
            }
            table = indexed(&name, &arrays);
        } else if let Some(name) = line.strip_prefix('[').and_then(|l| l.split(']').next()) {
            table = indexed(name.trim(), &arrays);
        }
    }
    let line = &source[line_start..];
    let key = line.split_once('=').map(|(k, _)| k.trim()).filter(|k| {
        !k.is_empty()
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
    });
    match (table.is_empty(), key) {
        (true, Some(key)) => key.to_owned(),
        (false, Some(key)) => format!("{table}.{key}"),
        (_, None) => table,
    }
}

/// `workload.keys` with `workload` an array of tables seen 2 times → `workload[1].keys`.
fn indexed(name: &str, arrays: &[(String, usize)]) -> String {
    let mut out = String::new();
    let mut prefix = String::new();
    for part in name.split('.') {
        let part = part.trim();
        if !prefix.is_empty() {
            prefix.push('.');
        }
        prefix.push_str(part);
        if !out.is_empty() {
            out.push('.');
        }
        out.push_str(part);
        if let Some((_, count)) = arrays.iter().find(|(n, _)| *n == prefix) {
            out.push_str(&format!("[{count}]"));
        }
    }
    out
}

/// A place in the document, whatever `toml_edit` type holds it.
#[derive(Clone, Copy)]
enum Node<'a> {
    Table(&'a Table),
    Inline(&'a InlineTable),
    Array(&'a Array),
    Tables(&'a ArrayOfTables),
    Scalar(&'a Value),
}

#[derive(Debug, PartialEq)]
enum Segment {
    Key(String),
    Index(usize),
}

impl<'a> Node<'a> {
    fn of_item(item: &'a Item) -> Option<Self> {
        match item {
            Item::None => None,
            Item::Value(value) => Some(Self::of_value(value)),
            Item::Table(table) => Some(Self::Table(table)),
            Item::ArrayOfTables(array) => Some(Self::Tables(array)),
        }
    }

    fn of_value(value: &'a Value) -> Self {
        match value {
            Value::InlineTable(table) => Self::Inline(table),
            Value::Array(array) => Self::Array(array),
            other => Self::Scalar(other),
        }
    }

    fn span(self) -> Option<Range<usize>> {
        match self {
            Self::Table(t) => t.span(),
            Self::Inline(t) => t.span(),
            Self::Array(a) => a.span(),
            Self::Tables(a) => a.span(),
            Self::Scalar(v) => v.span(),
        }
    }

    fn child(self, segment: &Segment) -> Option<Self> {
        match (self, segment) {
            (Self::Table(t), Segment::Key(k)) => t.get(k).and_then(Node::of_item),
            (Self::Inline(t), Segment::Key(k)) => t.get(k).map(Node::of_value),
            (Self::Array(a), Segment::Index(i)) => a.get(*i).map(Node::of_value),
            (Self::Tables(a), Segment::Index(i)) => a.get(*i).map(Node::Table),
            _ => None,
        }
    }

    /// Children with their segment and, for table entries, the span of their key.
    fn children(self) -> Vec<(Segment, Option<Range<usize>>, Node<'a>)> {
        match self {
            Self::Table(t) => t
                .iter()
                .filter_map(|(k, item)| {
                    let key_span = t.key(k).and_then(|key| key.span());
                    Node::of_item(item).map(|n| (Segment::Key(k.to_owned()), key_span, n))
                })
                .collect(),
            Self::Inline(t) => t
                .iter()
                .map(|(k, value)| {
                    let key_span = t.key(k).and_then(|key| key.span());
                    (Segment::Key(k.to_owned()), key_span, Node::of_value(value))
                })
                .collect(),
            Self::Array(a) => a
                .iter()
                .enumerate()
                .map(|(i, v)| (Segment::Index(i), None, Node::of_value(v)))
                .collect(),
            Self::Tables(a) => a
                .iter()
                .enumerate()
                .map(|(i, t)| (Segment::Index(i), None, Node::Table(t)))
                .collect(),
            Self::Scalar(_) => Vec::new(),
        }
    }
}

/// Pushes onto `path` the segments of the deepest node under `node` holding `offset`.
/// Children are searched even when their parent's span does not hold the offset: a
/// sub-table such as `[workload.keys]` lies outside its parent's span.
fn deepest_at(node: Node<'_>, offset: usize, tables_only: bool, path: &mut Vec<Segment>) -> bool {
    for (segment, key_span, child) in node.children() {
        path.push(segment);
        if deepest_at(child, offset, tables_only, path) {
            return true;
        }
        let holds = |span: Option<Range<usize>>| span.is_some_and(|s| s.contains(&offset));
        let found = if tables_only {
            matches!(child, Node::Table(_) | Node::Inline(_)) && holds(child.span())
        } else {
            holds(key_span) || holds(child.span())
        };
        if found {
            return true;
        }
        path.pop();
    }
    false
}

fn render(segments: &[Segment]) -> String {
    let mut out = String::new();
    for segment in segments {
        match segment {
            Segment::Key(key) => {
                if !out.is_empty() {
                    out.push('.');
                }
                let bare = !key.is_empty()
                    && key
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                if bare {
                    out.push_str(key);
                } else {
                    out.push_str(&format!("{key:?}"));
                }
            }
            Segment::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

fn parse(path: &str) -> Vec<Segment> {
    let mut out = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (key, mut rest) = part.split_at(part.find('[').unwrap_or(part.len()));
        if !key.is_empty() {
            out.push(Segment::Key(key.to_owned()));
        }
        while let Some(open) = rest.strip_prefix('[') {
            let Some(close) = open.find(']') else { break };
            if let Ok(i) = open[..close].parse() {
                out.push(Segment::Index(i));
            }
            rest = &open[close + 1..];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOURCE: &str = r#"name = "x"

[[workload]]
name = "a"

[[workload]]
name = "b"
size = { distribution = "uniform", min = 10, max = 20 }
schedule = { steps = [[100, "1s"], [200, "2s"]] }

[workload.keys]
count = 5
"#;

    fn document() -> ImDocument<&'static str> {
        ImDocument::parse(SOURCE).unwrap()
    }

    fn text(span: Option<Range<usize>>) -> &'static str {
        &SOURCE[span.unwrap()]
    }

    #[test]
    fn key_paths_parse_and_render() {
        let segments = parse("workload[1].schedule.steps[0][1]");
        assert_eq!(render(&segments), "workload[1].schedule.steps[0][1]");
        assert_eq!(segments.len(), 6);
    }

    #[test]
    fn a_path_finds_its_value() {
        let doc = document();
        assert_eq!(text(span_of(&doc, "workload[1].size.max")), "20");
        assert_eq!(
            text(span_of(&doc, "workload[1].schedule.steps[1]")),
            "[200, \"2s\"]"
        );
        assert_eq!(text(span_of(&doc, "workload[1].keys.count")), "5");
        assert_eq!(text(span_of(&doc, "name")), "\"x\"");
    }

    #[test]
    fn a_missing_key_is_placed_at_its_table() {
        let doc = document();
        assert!(text(span_of(&doc, "workload[0].rate")).starts_with("[[workload]]\nname = \"a\""));
        assert_eq!(
            text(span_of(&doc, "workload[1].size.exponent")),
            "{ distribution = \"uniform\", min = 10, max = 20 }"
        );
    }

    #[test]
    fn an_offset_finds_its_path() {
        let doc = document();
        let at = |needle: &str| path_at(&doc, SOURCE.find(needle).unwrap());
        assert_eq!(at("20 }"), "workload[1].size.max");
        assert_eq!(at("\"2s\""), "workload[1].schedule.steps[1][1]");
        assert_eq!(at("count"), "workload[1].keys.count");
        assert_eq!(at("name = \"a\""), "workload[0].name");
        assert_eq!(at("name = \"x\""), "name");
        let table = |needle: &str| table_at(&doc, SOURCE.find(needle).unwrap());
        assert_eq!(table("name = \"x\""), "");
        assert_eq!(table("20 }"), "workload[1].size");
        assert_eq!(table("count"), "workload[1].keys");
    }

    #[test]
    fn a_syntax_error_is_placed_under_its_header() {
        let source =
            "name = \"x\"\n[[workload]]\n[[workload]]\nrate = 20k/s\n[workload.keys]\ncount = ?\n";
        assert_eq!(
            path_near(source, source.find("20k").unwrap()),
            "workload[1].rate"
        );
        assert_eq!(
            path_near(source, source.find('?').unwrap()),
            "workload[1].keys.count"
        );
        assert_eq!(path_near(source, 2), "name");
    }
}
