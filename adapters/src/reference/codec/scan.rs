//! A scanner for the lines the broker sends at high rates, without serde.
//!
//! It reads a compact, flat JSON object whose strings have no escapes and whose values
//! are strings, integers, booleans or `null` (for keys the client ignores):
//!
//! ```text
//! {"command":"send","topic":"t","msg":"hi","delivery":"all","index":3}
//! {"success":true}
//! ```
//!
//! It declines (returns `None`) anything else — whitespace, escapes, nesting, floats,
//! numbers out of range, a repeated key, invalid UTF-8 — and the caller then asks
//! `serde_json`, so what it accepts it decodes exactly as serde would and what it
//! refuses serde judges.

use std::borrow::Cow;

use super::{RawLine, Text};

/// The keys of a flat object line, or `None` when the line is not of the simple shape.
pub(super) fn flat_object(line: &[u8]) -> Option<RawLine<'_>> {
    let mut scanner = Scanner { line, at: 0 };
    let mut raw = RawLine::default();
    scanner.expect(b'{')?;
    loop {
        let key = scanner.string()?;
        scanner.expect(b':')?;
        match key {
            "command" => set(&mut raw.command, scanner.text()?)?,
            "topic" => set(&mut raw.topic, scanner.text()?)?,
            "msg" => set(&mut raw.msg, scanner.text()?)?,
            "key" => set(&mut raw.key, scanner.text()?)?,
            "reason" => set(&mut raw.reason, scanner.text()?)?,
            "success" => set(&mut raw.success, scanner.boolean()?)?,
            "duplicate" => set(&mut raw.duplicate, scanner.boolean()?)?,
            "redelivered" => set(&mut raw.redelivered, scanner.boolean()?)?,
            "index" => set(&mut raw.index, scanner.integer()?)?,
            "attempt" => set(&mut raw.attempt, u32::try_from(scanner.integer()?).ok()?)?,
            _ => scanner.skip_scalar()?,
        }
        match scanner.next()? {
            b',' => {}
            b'}' => break,
            _ => return None,
        }
    }
    (scanner.at == line.len()).then_some(raw)
}

/// Sets a field seen for the first time (serde refuses a repeated one: let it say so).
fn set<T>(field: &mut Option<T>, value: T) -> Option<()> {
    if field.is_some() {
        return None;
    }
    *field = Some(value);
    Some(())
}

struct Scanner<'a> {
    line: &'a [u8],
    at: usize,
}

impl<'a> Scanner<'a> {
    fn next(&mut self) -> Option<u8> {
        let b = *self.line.get(self.at)?;
        self.at += 1;
        Some(b)
    }

    fn expect(&mut self, want: u8) -> Option<()> {
        (self.next()? == want).then_some(())
    }

    /// A string without escapes or control characters, borrowed from the line.
    fn string(&mut self) -> Option<&'a str> {
        self.expect(b'"')?;
        let rest = &self.line[self.at..];
        let end = memchr::memchr2(b'"', b'\\', rest)?;
        if rest[end] != b'"' {
            return None;
        }
        let body = &rest[..end];
        if body.iter().any(|&b| b < 0x20) {
            return None;
        }
        let text = std::str::from_utf8(body).ok()?;
        self.at += end + 1;
        Some(text)
    }

    fn text(&mut self) -> Option<Text<'a>> {
        self.string().map(|s| Text(Cow::Borrowed(s)))
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.at.checked_add(word.len())?;
        (self.line.get(self.at..end)? == word).then(|| self.at = end)
    }

    fn boolean(&mut self) -> Option<bool> {
        match self.line.get(self.at)? {
            b't' => self.literal(b"true").map(|()| true),
            b'f' => self.literal(b"false").map(|()| false),
            _ => None,
        }
    }

    /// A JSON integer that fits an `i64`: an optional minus, then `0` or digits without a
    /// leading zero, not followed by a fraction or an exponent.
    fn integer(&mut self) -> Option<i64> {
        let negative = self.line.get(self.at) == Some(&b'-');
        if negative {
            self.at += 1;
        }
        let start = self.at;
        while self.line.get(self.at).is_some_and(u8::is_ascii_digit) {
            self.at += 1;
        }
        let digits = &self.line[start..self.at];
        // 18 digits always fit; longer ones are left to serde.
        if digits.is_empty() || digits.len() > 18 || (digits.len() > 1 && digits[0] == b'0') {
            return None;
        }
        if matches!(self.line.get(self.at), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        let magnitude = digits
            .iter()
            .fold(0i64, |n, &d| n * 10 + i64::from(d - b'0'));
        Some(if negative { -magnitude } else { magnitude })
    }

    /// Skips the value of a key the client ignores: a string, an integer, a boolean or
    /// `null`.
    fn skip_scalar(&mut self) -> Option<()> {
        match self.line.get(self.at)? {
            b'"' => self.string().map(drop),
            b't' | b'f' => self.boolean().map(drop),
            b'n' => self.literal(b"null"),
            _ => self.integer().map(drop),
        }
    }
}
