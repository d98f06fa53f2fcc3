//! XML text escaping for the JUnit reports (alert verdicts and conformance cells).

/// Escapes `text` for an XML 1.0 attribute value or element content. Control characters
/// XML 1.0 does not allow at all (other than tab, carriage return and newline) become
/// `?`; a newline becomes `&#10;` so it survives in attribute values.
///
/// ```
/// use brokerbench_results::xml::escape;
/// assert_eq!(escape("p99 > 5ms & \"lost\"\n"), "p99 &gt; 5ms &amp; &quot;lost&quot;&#10;");
/// ```
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' => out.push_str("&#10;"),
            c if (c as u32) < 0x20 && c != '\t' && c != '\r' => out.push('?'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn control_characters_are_replaced() {
        assert_eq!(escape("a\u{1}b\tc'"), "a?b\tc&apos;");
    }
}
