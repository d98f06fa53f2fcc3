//! The two lines the broker sends most, recognised by their exact shape before any
//! scanning: a pushed message without key, id or redelivery, in the order the broker
//! writes its keys, and the plain success reply.
//!
//! ```text
//! {"command":"send","topic":"T","msg":"M","delivery":"all","index":N}
//! {"command":"send","topic":"T","msg":"M","delivery":"one","cache":false,"index":N}
//! {"success":true}
//! ```
//!
//! The general scanner ([`super::scan`]) finds every key by searching, checks the whole
//! line in three passes and builds a struct of every key the client knows; at fan-out
//! rates that was a fifth of a subscriber's CPU. Here the fixed parts are compared as
//! they are, the two strings are each found with one search and checked in one pass,
//! and the push is built directly. A line of any other shape, or a string holding an
//! escape or a control character, gets `None`, and the caller goes on to the general
//! scanner (then `serde_json`), so what this accepts decodes exactly as they would.

use std::borrow::Cow;

use super::{Push, Reply};

/// Everything before the topic's text.
const PUSH_HEAD: &[u8] = br#"{"command":"send","topic":""#;
/// Between the topic's text and the message's.
const TOPIC_TO_MSG: &[u8] = br#"","msg":""#;
/// After the message's text, one per delivery mode.
const DELIVERY: [&[u8]; 2] = [br#"","delivery":"all""#, br#"","delivery":"one""#];
/// The `cache` flag the broker repeats from the send, when the send had one.
const CACHE: [&[u8]; 2] = [br#","cache":false"#, br#","cache":true"#];
/// Before the index's digits.
const INDEX: &[u8] = br#","index":"#;

/// The plain success reply, the answer to nearly every request.
pub(super) fn success(line: &[u8]) -> Option<Reply<'_>> {
    (line == br#"{"success":true}"#).then_some(Reply {
        success: true,
        reason: None,
        duplicate: false,
    })
}

/// A push of the usual shape (see the module's doc), or `None`.
pub(super) fn push(line: &[u8]) -> Option<Push<'_>> {
    let rest = line.strip_prefix(PUSH_HEAD)?;
    let (topic, rest) = plain_string(rest)?;
    let rest = rest.strip_prefix(TOPIC_TO_MSG)?;
    let (msg, rest) = plain_string(rest)?;
    let rest = DELIVERY.iter().find_map(|d| rest.strip_prefix(*d))?;
    let rest = CACHE
        .iter()
        .find_map(|c| rest.strip_prefix(*c))
        .unwrap_or(rest);
    let digits = rest.strip_prefix(INDEX)?.strip_suffix(b"}")?;
    Some(Push {
        topic: Cow::Borrowed(topic),
        msg: Cow::Borrowed(msg),
        key: None,
        index: Some(index(digits)?),
        redelivered: false,
        attempt: None,
    })
}

/// The text of a string up to its closing quote, and what follows from that quote on.
/// `None` when the text holds a backslash (an escape: serde would not read it as these
/// bytes) or a control character (serde refuses it), or is not UTF-8.
fn plain_string(bytes: &[u8]) -> Option<(&str, &[u8])> {
    let end = memchr::memchr(b'"', bytes)?;
    let (text, rest) = bytes.split_at(end);
    // One pass without an early exit, so it vectorises.
    let odd = text
        .iter()
        .fold(false, |odd, &b| odd | (b < 0x20) | (b == b'\\'));
    if odd {
        return None;
    }
    Some((std::str::from_utf8(text).ok()?, rest))
}

/// A non-negative JSON integer of at most 18 digits, without a leading zero (longer
/// ones, and anything else, are left to the general scanner).
fn index(digits: &[u8]) -> Option<i64> {
    let plain = !digits.is_empty()
        && digits.len() <= 18
        && (digits.len() == 1 || digits[0] != b'0')
        && digits.iter().all(u8::is_ascii_digit);
    plain.then(|| {
        digits
            .iter()
            .fold(0i64, |n, &d| n * 10 + i64::from(d - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_usual_push_is_read_whole() {
        let line =
            br#"{"command":"send","topic":"room","msg":"Hi there","delivery":"all","index":3}"#;
        let push = push(line).unwrap();
        assert_eq!(push.topic, "room");
        assert_eq!(push.msg, "Hi there");
        assert_eq!(push.index, Some(3));
        let line =
            br#"{"command":"send","topic":"t","msg":"m","delivery":"one","cache":false,"index":0}"#;
        assert_eq!(push_index(line), Some(0));
        let line = br#"{"command":"send","topic":"t","msg":"m","delivery":"all","cache":true,"index":123456789012345678}"#;
        assert_eq!(push_index(line), Some(123_456_789_012_345_678));
    }

    fn push_index(line: &[u8]) -> Option<i64> {
        push(line).and_then(|p| p.index)
    }

    #[test]
    fn other_shapes_are_left_to_the_scanner() {
        let lines: &[&[u8]] = &[
            // A key, an id, a redelivery, another key order: not the usual shape.
            br#"{"command":"send","topic":"t","msg":"m","delivery":"one","key":"k","index":1}"#,
            br#"{"command":"send","topic":"t","msg":"m","delivery":"all","id":"i","index":1}"#,
            br#"{"command":"send","topic":"t","msg":"m","delivery":"all","index":1,"redelivered":true}"#,
            br#"{"topic":"t","command":"send","msg":"m","delivery":"all","index":1}"#,
            // Escapes and control characters in either string.
            br#"{"command":"send","topic":"t","msg":"a\"b","delivery":"all","index":1}"#,
            br#"{"command":"send","topic":"t\\u0041","msg":"m","delivery":"all","index":1}"#,
            b"{\"command\":\"send\",\"topic\":\"t\",\"msg\":\"a\tb\",\"delivery\":\"all\",\"index\":1}",
            b"{\"command\":\"send\",\"topic\":\"t\",\"msg\":\"\xff\",\"delivery\":\"all\",\"index\":1}",
            // Indexes serde reads otherwise, or refuses.
            br#"{"command":"send","topic":"t","msg":"m","delivery":"all","index":01}"#,
            br#"{"command":"send","topic":"t","msg":"m","delivery":"all","index":1.5}"#,
            br#"{"command":"send","topic":"t","msg":"m","delivery":"all","index":-1}"#,
            br#"{"command":"send","topic":"t","msg":"m","delivery":"all","index":}"#,
            br#"{"command":"send","topic":"t","msg":"m","delivery":"all","index":1234567890123456789}"#,
            // Whitespace, or something after the object.
            br#"{"command":"send","topic":"t","msg":"m","delivery":"all","index":1} "#,
            br#"{"command":"send","topic":"t","msg":"m","delivery":"all", "index":1}"#,
            br#"{"command":"send","topic":"t","msg":"m","delivery":"some","index":1}"#,
        ];
        for line in lines {
            assert_eq!(push(line), None, "{}", String::from_utf8_lossy(line));
        }
        assert_eq!(success(br#"{"success":true,"duplicate":true}"#), None);
        assert_eq!(success(br#"{"success":false,"reason":"x"}"#), None);
        assert!(success(br#"{"success":true}"#).is_some());
    }
}
