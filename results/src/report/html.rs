//! Small HTML building blocks: escaping, tables, the page's stylesheet.

use std::fmt::Write as _;

use serde_json::Value;

/// Escapes text for HTML element content and double-quoted attribute values.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A JSON value as a short cell text: strings bare, `null` as `-`, the rest compact JSON.
pub(crate) fn cell_text(value: &Value) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        other => other.to_string(),
    }
}

/// A CSS class for verdict-like words, so OK / WARNING / CRITICAL / pass / FAIL /
/// unsupported stand out; `None` for anything else.
pub(crate) fn verdict_class(text: &str) -> Option<&'static str> {
    match text.to_ascii_lowercase().as_str() {
        "ok" | "pass" | "passed" => Some("ok"),
        "warning" | "warn" => Some("warn"),
        "critical" | "fail" | "failed" | "error" => Some("bad"),
        "unsupported" | "skipped" => Some("muted"),
        _ => None,
    }
}

/// A table of JSON objects: one column per key (in first-seen order), one row per object;
/// verdict words coloured. Non-objects are shown in a single `value` column.
pub(crate) fn objects_table(out: &mut String, rows: &[&Value]) {
    let mut columns: Vec<String> = Vec::new();
    for row in rows {
        match row.as_object() {
            Some(map) => {
                for key in map.keys() {
                    if !columns.contains(key) {
                        columns.push(key.clone());
                    }
                }
            }
            None if !columns.iter().any(|c| c == "value") => columns.push("value".to_owned()),
            None => {}
        }
    }
    out.push_str("<div class=\"scroll\"><table class=\"data\"><thead><tr>");
    for c in &columns {
        let _ = write!(out, "<th>{}</th>", escape(c));
    }
    out.push_str("</tr></thead><tbody>\n");
    for row in rows {
        out.push_str("<tr>");
        for c in &columns {
            let value = match row.as_object() {
                Some(map) => map.get(c).cloned().unwrap_or(Value::Null),
                None if c == "value" => (*row).clone(),
                None => Value::Null,
            };
            let text = cell_text(&value);
            match verdict_class(&text) {
                Some(class) => {
                    let _ = write!(out, "<td class=\"{class}\">{}</td>", escape(&text));
                }
                None => {
                    let _ = write!(out, "<td>{}</td>", escape(&text));
                }
            }
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody></table></div>\n");
}

/// The page's stylesheet: system fonts, readable tables, a two-column grid of charts.
pub(crate) const STYLE: &str = r#"
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { margin: 0; padding: 24px 28px 48px; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif; color: #1d2330; background: #f6f7f9; }
main { max-width: 1340px; margin: 0 auto; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 32px 0 8px; padding-bottom: 4px; border-bottom: 1px solid #d9dde3; }
h3 { font-size: 15px; margin: 18px 0 6px; }
p.lead { margin: 0 0 16px; color: #4a5263; }
p.note { color: #4a5263; margin: 6px 0 10px; max-width: 1000px; }
div.scroll { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; background: #fff; margin: 6px 0 12px; }
th, td { border: 1px solid #dde1e7; padding: 4px 10px; text-align: left; vertical-align: top; }
th { background: #eef0f4; font-weight: 600; }
table.runs td:nth-child(-n+3) { white-space: nowrap; }
table.figures td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.figures td.best { background: #e7f5e9; font-weight: 600; }
span.rel { color: #6b7385; font-weight: normal; font-size: 12px; margin-left: 6px; }
span.swatch { display: inline-block; width: 12px; height: 12px; border-radius: 2px; margin-right: 6px; vertical-align: -1px; }
td.ok { color: #1a7f37; font-weight: 600; }
td.warn { color: #9a6700; font-weight: 600; }
td.bad { color: #cf222e; font-weight: 600; }
td.muted { color: #6b7385; }
.partial { color: #cf222e; font-weight: 600; }
.grid { display: grid; grid-template-columns: repeat(2, minmax(0, 1fr)); gap: 14px; }
figure { margin: 0; background: #fff; border: 1px solid #dde1e7; border-radius: 4px; padding: 6px; }
figure svg { display: block; width: 100%; height: auto; }
figcaption { font-size: 12px; color: #4a5263; padding: 4px 6px 2px; }
pre { background: #fff; border: 1px solid #dde1e7; padding: 10px; overflow-x: auto; font-size: 12px; }
details { margin: 6px 0 12px; }
ul.notes { margin: 4px 0 12px; }
footer { margin-top: 36px; color: #6b7385; font-size: 12px; }
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape("<script>\"a\" & 'b'</script>"),
            "&lt;script&gt;&quot;a&quot; &amp; &#39;b&#39;&lt;/script&gt;"
        );
    }

    #[test]
    fn tables_of_objects_union_their_keys() {
        let a = serde_json::json!({"rule": "p99", "severity": "OK"});
        let b = serde_json::json!({"rule": "avail", "severity": "CRITICAL", "observed": 0.98});
        let mut out = String::new();
        objects_table(&mut out, &[&a, &b]);
        assert!(
            out.contains("<th>rule</th><th>severity</th><th>observed</th>"),
            "{out}"
        );
        assert!(out.contains("<td class=\"ok\">OK</td>"));
        assert!(out.contains("<td class=\"bad\">CRITICAL</td>"));
        assert!(out.contains("<td>-</td>"), "missing key shown as -");
    }
}
