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
///
/// The line is checked once, as a whole, for what no simple line holds (a control
/// character, a backslash, invalid UTF-8); the keys and values are then slices of it,
/// found with one search for the closing quote each.
pub(super) fn flat_object(line: &[u8]) -> Option<RawLine<'_>> {
    // A compact line has no control character, inside a string or out: one vectorisable
    // pass (no early exit) over the bytes rather than one per string.
    let controls = line.iter().fold(false, |seen, &b| seen | (b < 0x20));
    if controls || memchr::memchr(b'\\', line).is_some() {
        return None;
    }
    let text = std::str::from_utf8(line).ok()?;
    let mut scanner = Scanner { text, at: 0 };
    let mut raw = RawLine::default();
    scanner.expect(b'{')?;
    loop {
        let key = scanner.string()?;
        scanner.expect(b':')?;
        match key.as_bytes() {
            b"command" => set(&mut raw.command, scanner.text()?)?,
            b"topic" => set(&mut raw.topic, scanner.text()?)?,
            b"msg" => set(&mut raw.msg, scanner.text()?)?,
            b"key" => set(&mut raw.key, scanner.text()?)?,
            b"reason" => set(&mut raw.reason, scanner.text()?)?,
            b"success" => set(&mut raw.success, scanner.boolean()?)?,
            b"duplicate" => set(&mut raw.duplicate, scanner.boolean()?)?,
            b"redelivered" => set(&mut raw.redelivered, scanner.boolean()?)?,
            b"index" => set(&mut raw.index, scanner.integer()?)?,
            b"attempt" => set(&mut raw.attempt, u32::try_from(scanner.integer()?).ok()?)?,
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
    /// The whole line, known to be UTF-8 without control characters or backslashes.
    text: &'a str,
    at: usize,
}

impl<'a> Scanner<'a> {
    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    fn next(&mut self) -> Option<u8> {
        let b = *self.bytes().get(self.at)?;
        self.at += 1;
        Some(b)
    }

    fn expect(&mut self, want: u8) -> Option<()> {
        (self.next()? == want).then_some(())
    }

    /// A string, borrowed from the line (which holds no escape or control character).
    fn string(&mut self) -> Option<&'a str> {
        self.expect(b'"')?;
        let start = self.at;
        let end = start + memchr::memchr(b'"', &self.bytes()[start..])?;
        self.at = end + 1;
        // Both ends are ASCII quotes, so both are character boundaries.
        self.text.get(start..end)
    }

    fn text(&mut self) -> Option<Text<'a>> {
        self.string().map(|s| Text(Cow::Borrowed(s)))
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.at.checked_add(word.len())?;
        (self.bytes().get(self.at..end)? == word).then(|| self.at = end)
    }

    fn boolean(&mut self) -> Option<bool> {
        match self.bytes().get(self.at)? {
            b't' => self.literal(b"true").map(|()| true),
            b'f' => self.literal(b"false").map(|()| false),
            _ => None,
        }
    }

    /// A JSON integer that fits an `i64`: an optional minus, then `0` or digits without a
    /// leading zero, not followed by a fraction or an exponent.
    fn integer(&mut self) -> Option<i64> {
        let negative = self.bytes().get(self.at) == Some(&b'-');
        if negative {
            self.at += 1;
        }
        let start = self.at;
        while self.bytes().get(self.at).is_some_and(u8::is_ascii_digit) {
            self.at += 1;
        }
        let digits = &self.bytes()[start..self.at];
        // 18 digits always fit; longer ones are left to serde.
        if digits.is_empty() || digits.len() > 18 || (digits.len() > 1 && digits[0] == b'0') {
            return None;
        }
        if matches!(self.bytes().get(self.at), Some(b'.' | b'e' | b'E')) {
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
        match self.bytes().get(self.at)? {
            b'"' => self.string().map(drop),
            b't' | b'f' => self.boolean().map(drop),
            b'n' => self.literal(b"null"),
            _ => self.integer().map(drop),
        }
    }
}
