//! Sans-I/O codec for the reference broker's JSON-lines protocol, client side.
//!
//! Requests are written straight into the connection's write buffer (no intermediate
//! `String`); server lines are decoded into borrowed structs, so a push whose `msg` has
//! no escapes is not copied here at all (the caller slices its read buffer). The lines
//! the broker sends at high rates (compact, flat objects, strings without escapes) are
//! read by a small scanner ([`scan`]) without serde; anything else goes through
//! `serde_json`, which decides the same way.
//!
//! ```text
//! client: {"command":"send","topic":"t","msg":"hi","delivery":"all"}
//! server: {"command":"send","topic":"t","msg":"hi","delivery":"all","index":0}   (push)
//! server: {"success":true}                                                      (reply)
//! server: {"success":false,"reason":"Slow consumer"}                            (then closes)
//! ```

mod scan;
mod usual;

use std::borrow::Cow;

use serde::Deserialize;

use crate::publish::PublishRequest;
use crate::subscription::{AckMode, StartPosition};

/// The reason the broker gives when it disconnects a subscriber that did not keep up.
/// It is not the answer to any request, so it must not be matched to one.
pub(crate) const SLOW_CONSUMER_REASON: &str = "Slow consumer";

/// A request the codec refuses to encode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum EncodeError {
    /// The protocol carries text; this payload is not UTF-8.
    #[error(
        "payload is not valid UTF-8 (at byte {0}); the reference protocol carries text messages"
    )]
    PayloadNotUtf8(usize),
}

/// A server line the codec cannot make sense of.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DecodeError {
    /// Not a JSON object of the expected shape.
    #[error("not a JSON reply or push ({0})")]
    Json(String),
    /// An object that is neither a push (`"command":"send"`) nor a reply (`"success"`).
    #[error("neither a reply nor a pushed message")]
    Unrecognised,
    /// A push without one of its required fields.
    #[error("pushed message without \"{0}\"")]
    MissingField(&'static str),
}

/// Appends `{"command":"send",...}\n` for `request`.
pub(crate) fn encode_send(out: &mut Vec<u8>, request: &PublishRequest) -> Result<(), EncodeError> {
    let msg = std::str::from_utf8(&request.payload)
        .map_err(|e| EncodeError::PayloadNotUtf8(e.valid_up_to()))?;
    out.extend_from_slice(br#"{"command":"send","topic":"#);
    write_json_str(out, &request.topic);
    out.extend_from_slice(br#","msg":"#);
    write_json_str(out, msg);
    out.extend_from_slice(br#","delivery":""#);
    out.extend_from_slice(request.delivery.as_str().as_bytes());
    out.push(b'"');
    if let Some(key) = &request.key {
        out.extend_from_slice(br#","key":"#);
        write_json_str(out, key);
    }
    if let Some(id) = &request.id {
        out.extend_from_slice(br#","id":"#);
        write_json_str(out, id);
    }
    if !request.cache {
        out.extend_from_slice(br#","cache":false"#);
    }
    out.extend_from_slice(b"}\n");
    Ok(())
}

/// Appends `{"command":"subscribe",...}\n`.
///
/// Start positions map to the core protocol: `Latest` is `"cache":false` (no cached
/// messages), `Beginning` is the default `last_seen` of −1, `AfterSequence(n)` is
/// `"last_seen":n`. Manual acks add the `ack` extension.
pub(crate) fn encode_subscribe(out: &mut Vec<u8>, topic: &str, start: StartPosition, ack: AckMode) {
    out.extend_from_slice(br#"{"command":"subscribe","topic":"#);
    write_json_str(out, topic);
    match start {
        StartPosition::Latest => out.extend_from_slice(br#","cache":false"#),
        StartPosition::Beginning => {}
        StartPosition::AfterSequence(n) => {
            out.extend_from_slice(br#","last_seen":"#);
            out.extend_from_slice(n.to_string().as_bytes());
        }
    }
    if ack == AckMode::Manual {
        out.extend_from_slice(br#","ack":true"#);
    }
    out.extend_from_slice(b"}\n");
}

/// Appends `{"command":"unsubscribe","topic":...}\n`.
pub(crate) fn encode_unsubscribe(out: &mut Vec<u8>, topic: &str) {
    out.extend_from_slice(br#"{"command":"unsubscribe","topic":"#);
    write_json_str(out, topic);
    out.extend_from_slice(b"}\n");
}

/// Appends `{"command":"ack"|"nack","topic":...,"index":N}\n`.
pub(crate) fn encode_ack(out: &mut Vec<u8>, topic: &str, index: i64, nack: bool) {
    out.extend_from_slice(if nack {
        br#"{"command":"nack","topic":"#
    } else {
        br#"{"command":"ack","topic":"#
    });
    write_json_str(out, topic);
    out.extend_from_slice(br#","index":"#);
    out.extend_from_slice(index.to_string().as_bytes());
    out.extend_from_slice(b"}\n");
}

/// Appends `{"command":"stats"}\n`.
pub(crate) fn encode_stats(out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"command\":\"stats\"}\n");
}

/// How each byte is written inside a JSON string: 0 = as is, `u` = `\u00XX`, anything
/// else = a backslash followed by that byte.
const ESCAPE: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = b'u';
        b += 1;
    }
    table[b'\n' as usize] = b'n';
    table[b'\r' as usize] = b'r';
    table[b'\t' as usize] = b't';
    table[0x08] = b'b';
    table[0x0c] = b'f';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table
};

/// Appends `s` as a quoted JSON string.
pub(crate) fn write_json_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape = ESCAPE[b as usize];
        if escape == 0 {
            continue;
        }
        out.extend_from_slice(&bytes[start..i]);
        if escape == b'u' {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        } else {
            out.push(b'\\');
            out.push(escape);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// A JSON string that stays borrowed from the line unless it contains escapes.
/// (`Option<Cow<str>>` alone would always allocate: serde only borrows a `Cow` that is
/// the field's whole type, hence the newtype.)
#[derive(Debug, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
struct Text<'a>(#[serde(borrow)] Cow<'a, str>);

/// Every key the client cares about, from either kind of server line. Unknown keys
/// (`delivery`, `cache`, `id`, `stats`...) are skipped.
#[derive(Debug, Default, PartialEq, Eq, Deserialize)]
struct RawLine<'a> {
    #[serde(borrow, default)]
    command: Option<Text<'a>>,
    #[serde(default)]
    success: Option<bool>,
    #[serde(borrow, default)]
    reason: Option<Text<'a>>,
    #[serde(default)]
    duplicate: Option<bool>,
    #[serde(borrow, default)]
    topic: Option<Text<'a>>,
    #[serde(borrow, default)]
    msg: Option<Text<'a>>,
    #[serde(borrow, default)]
    key: Option<Text<'a>>,
    #[serde(default)]
    index: Option<i64>,
    #[serde(default)]
    redelivered: Option<bool>,
    #[serde(default)]
    attempt: Option<u32>,
}

/// A message the broker pushed to this connection.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Push<'a> {
    pub(crate) topic: Cow<'a, str>,
    pub(crate) msg: Cow<'a, str>,
    pub(crate) key: Option<Cow<'a, str>>,
    pub(crate) index: Option<i64>,
    pub(crate) redelivered: bool,
    pub(crate) attempt: Option<u32>,
}

/// The broker's answer to the oldest unanswered request.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Reply<'a> {
    pub(crate) success: bool,
    pub(crate) reason: Option<Cow<'a, str>>,
    pub(crate) duplicate: bool,
}

impl Reply<'_> {
    /// Whether this is the broker's slow-consumer notice rather than an answer.
    pub(crate) fn is_slow_consumer(&self) -> bool {
        !self.success && self.reason.as_deref() == Some(SLOW_CONSUMER_REASON)
    }

    /// The reason, or a stand-in when the broker gave none.
    pub(crate) fn reason_text(&self) -> &str {
        self.reason.as_deref().unwrap_or("refused without a reason")
    }
}

/// One line from the broker.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ServerLine<'a> {
    /// A pushed message (`"command":"send"`).
    Push(Push<'a>),
    /// A reply (`"success"`).
    Reply(Reply<'a>),
}

/// Decodes one line (without its `\r\n`).
pub(crate) fn decode_line(line: &[u8]) -> Result<ServerLine<'_>, DecodeError> {
    if let Some(push) = usual::push(line) {
        return Ok(ServerLine::Push(push));
    }
    if let Some(reply) = usual::success(line) {
        return Ok(ServerLine::Reply(reply));
    }
    let raw = match scan::flat_object(line) {
        Some(raw) => raw,
        None => serde_json::from_slice(line).map_err(|e| DecodeError::Json(e.to_string()))?,
    };
    interpret(raw)
}

/// [`decode_line`] without the shortcut for the usual lines: the general scanner, then
/// `serde_json`. The tests hold the shortcut to what this says.
#[cfg(test)]
fn decode_line_generally(line: &[u8]) -> Result<ServerLine<'_>, DecodeError> {
    let raw = match scan::flat_object(line) {
        Some(raw) => raw,
        None => serde_json::from_slice(line).map_err(|e| DecodeError::Json(e.to_string()))?,
    };
    interpret(raw)
}

/// A push or a reply, from the keys of a decoded line.
fn interpret(raw: RawLine<'_>) -> Result<ServerLine<'_>, DecodeError> {
    if let Some(command) = raw.command {
        if command.0 != "send" {
            return Err(DecodeError::Unrecognised);
        }
        return Ok(ServerLine::Push(Push {
            topic: raw.topic.ok_or(DecodeError::MissingField("topic"))?.0,
            msg: raw.msg.ok_or(DecodeError::MissingField("msg"))?.0,
            key: raw.key.map(|k| k.0),
            index: raw.index,
            redelivered: raw.redelivered.unwrap_or(false),
            attempt: raw.attempt,
        }));
    }
    match raw.success {
        Some(success) => Ok(ServerLine::Reply(Reply {
            success,
            reason: raw.reason.map(|r| r.0),
            duplicate: raw.duplicate.unwrap_or(false),
        })),
        None => Err(DecodeError::Unrecognised),
    }
}

/// The `stats` object of a stats reply line.
pub(crate) fn decode_stats(line: &[u8]) -> Result<serde_json::Value, DecodeError> {
    let mut value: serde_json::Value =
        serde_json::from_slice(line).map_err(|e| DecodeError::Json(e.to_string()))?;
    value
        .get_mut("stats")
        .map(serde_json::Value::take)
        .ok_or(DecodeError::MissingField("stats"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PublishRequest;
    use proptest::prelude::*;

    fn text(out: Vec<u8>) -> String {
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn send_lines() {
        let mut out = Vec::new();
        encode_send(&mut out, &PublishRequest::new("room_123", "Hi")).unwrap();
        assert_eq!(
            text(out),
            "{\"command\":\"send\",\"topic\":\"room_123\",\"msg\":\"Hi\",\"delivery\":\"all\"}\n"
        );
        let mut out = Vec::new();
        let req = PublishRequest::new("t", "a\"b\\c\nd\u{1}é")
            .one()
            .key("k")
            .id("i-1")
            .cache(false);
        encode_send(&mut out, &req).unwrap();
        assert_eq!(
            text(out),
            "{\"command\":\"send\",\"topic\":\"t\",\"msg\":\"a\\\"b\\\\c\\nd\\u0001é\",\"delivery\":\"one\",\"key\":\"k\",\"id\":\"i-1\",\"cache\":false}\n"
        );
    }

    #[test]
    fn non_utf8_payload_is_refused() {
        let mut out = Vec::new();
        let req = PublishRequest::new("t", bytes::Bytes::from_static(b"ok\xffno"));
        assert_eq!(
            encode_send(&mut out, &req),
            Err(EncodeError::PayloadNotUtf8(2))
        );
    }

    #[test]
    fn subscribe_lines() {
        let cases = [
            (
                StartPosition::Latest,
                AckMode::Auto,
                r#"{"command":"subscribe","topic":"t","cache":false}"#,
            ),
            (
                StartPosition::Beginning,
                AckMode::Auto,
                r#"{"command":"subscribe","topic":"t"}"#,
            ),
            (
                StartPosition::AfterSequence(41),
                AckMode::Manual,
                r#"{"command":"subscribe","topic":"t","last_seen":41,"ack":true}"#,
            ),
        ];
        for (start, ack, want) in cases {
            let mut out = Vec::new();
            encode_subscribe(&mut out, "t", start, ack);
            assert_eq!(text(out), format!("{want}\n"));
        }
    }

    #[test]
    fn other_request_lines() {
        let mut out = Vec::new();
        encode_unsubscribe(&mut out, "t");
        encode_ack(&mut out, "t", 7, false);
        encode_ack(&mut out, "t", 8, true);
        encode_stats(&mut out);
        assert_eq!(
            text(out),
            concat!(
                "{\"command\":\"unsubscribe\",\"topic\":\"t\"}\n",
                "{\"command\":\"ack\",\"topic\":\"t\",\"index\":7}\n",
                "{\"command\":\"nack\",\"topic\":\"t\",\"index\":8}\n",
                "{\"command\":\"stats\"}\n",
            )
        );
    }

    #[test]
    fn push_borrows_unescaped_strings() {
        let line =
            br#"{"command":"send","topic":"room","msg":"Hi there","delivery":"all","index":3}"#;
        let ServerLine::Push(push) = decode_line(line).unwrap() else {
            panic!("not a push");
        };
        assert!(matches!(push.msg, Cow::Borrowed("Hi there")));
        assert!(matches!(push.topic, Cow::Borrowed("room")));
        assert_eq!(push.index, Some(3));
        assert!(!push.redelivered);
        assert_eq!(push.attempt, None);
        assert_eq!(push.key, None);
    }

    #[test]
    fn push_with_escapes_key_and_redelivery() {
        let line = br#"{"delivery":"one","msg":"a\"b\u00e9","key":"k1","topic":"t","command":"send","index":9,"redelivered":true,"attempt":2,"cache":true}"#;
        let ServerLine::Push(push) = decode_line(line).unwrap() else {
            panic!("not a push");
        };
        assert_eq!(push.msg, "a\"bé");
        assert!(matches!(push.msg, Cow::Owned(_)));
        assert_eq!(push.key.as_deref(), Some("k1"));
        assert_eq!(push.index, Some(9));
        assert!(push.redelivered);
        assert_eq!(push.attempt, Some(2));
    }

    #[test]
    fn replies() {
        assert_eq!(
            decode_line(br#"{"success":true}"#).unwrap(),
            ServerLine::Reply(Reply {
                success: true,
                reason: None,
                duplicate: false
            })
        );
        assert_eq!(
            decode_line(br#"{"success":true,"duplicate":true}"#).unwrap(),
            ServerLine::Reply(Reply {
                success: true,
                reason: None,
                duplicate: true
            })
        );
        let ServerLine::Reply(reply) =
            decode_line(br#"{"success":false,"reason":"Malformed json message"}"#).unwrap()
        else {
            panic!("not a reply");
        };
        assert!(!reply.is_slow_consumer());
        assert_eq!(reply.reason_text(), "Malformed json message");
        let ServerLine::Reply(reply) =
            decode_line(br#"{"success":false,"reason":"Slow consumer"}"#).unwrap()
        else {
            panic!("not a reply");
        };
        assert!(reply.is_slow_consumer());
    }

    #[test]
    fn stats_reply() {
        let line = br#"{"success":true,"stats":{"connections":2,"topics":{"t":1}}}"#;
        assert!(matches!(decode_line(line), Ok(ServerLine::Reply(_))));
        let stats = decode_stats(line).unwrap();
        assert_eq!(stats["connections"], 2);
        assert_eq!(
            decode_stats(br#"{"success":true}"#),
            Err(DecodeError::MissingField("stats"))
        );
    }

    #[test]
    fn garbage_is_a_decode_error() {
        assert!(matches!(decode_line(b"hello"), Err(DecodeError::Json(_))));
        assert!(matches!(decode_line(b"[1,2]"), Err(DecodeError::Json(_))));
        assert_eq!(decode_line(b"{}"), Err(DecodeError::Unrecognised));
        assert_eq!(
            decode_line(br#"{"command":"subscribe","topic":"t"}"#),
            Err(DecodeError::Unrecognised)
        );
        assert_eq!(
            decode_line(br#"{"command":"send","topic":"t"}"#),
            Err(DecodeError::MissingField("msg"))
        );
    }

    #[test]
    fn scanner_agrees_with_serde_or_declines() {
        let lines: &[&[u8]] = &[
            br#"{"command":"send","topic":"room","msg":"Hi","delivery":"all","index":3}"#,
            br#"{"success":true}"#,
            br#"{"success":false,"reason":"Slow consumer"}"#,
            br#"{"success":true,"duplicate":true}"#,
            br#"{"command":"send","topic":"t","msg":"m","delivery":"one","key":"k","cache":false,"id":"i","index":0,"redelivered":true,"attempt":3}"#,
            br#"{"index":-7,"msg":"","topic":"","command":"send"}"#,
            br#"{"success":true,"stats":{"connections":2}}"#,
            br#"{"command":"send","topic":"t","msg":"a\"b","index":1}"#,
            br#"{"success":true,"success":false}"#,
            br#"{"success":null}"#,
            br#"{"index":01,"command":"send","topic":"t","msg":"m"}"#,
            br#"{"index":1.5,"command":"send","topic":"t","msg":"m"}"#,
            br#"{"index":99999999999999999999,"command":"send","topic":"t","msg":"m"}"#,
            br#"{"attempt":-1,"command":"send","topic":"t","msg":"m"}"#,
            br#"{ "success":true}"#,
            br#"{"success":true} "#,
            br#"{"success":true}x"#,
            br#"{"success":true,}"#,
            br#"{}"#,
            b"{\"msg\":\"a\tb\",\"success\":true}",
            b"{\"msg\":\"\xff\",\"success\":true}",
            br#"{"command":"send","topic":"t","msg":"m","x":[1],"index":1}"#,
            br#"{"command":"send","topic":"t","msg":"m","x":null,"y":12,"index":1}"#,
        ];
        for line in lines {
            // The shortcut for the usual lines says what the general path says, or nothing.
            if let Some(push) = usual::push(line) {
                assert_eq!(
                    Ok(ServerLine::Push(push)),
                    decode_line_generally(line),
                    "{}",
                    String::from_utf8_lossy(line)
                );
            }
            let serde: Result<RawLine<'_>, _> = serde_json::from_slice(line);
            if let Some(fast) = scan::flat_object(line) {
                assert_eq!(
                    Some(&fast),
                    serde.as_ref().ok(),
                    "{}",
                    String::from_utf8_lossy(line)
                );
            }
        }
        // The common shapes do take the fast path.
        assert!(scan::flat_object(lines[0]).is_some());
        assert!(scan::flat_object(lines[1]).is_some());
        assert!(scan::flat_object(lines[4]).is_some());
    }

    proptest! {
        #[test]
        fn scanner_agrees_with_serde_on_pushes(
            topic in ".{0,20}",
            msg in any::<String>(),
            index in any::<i64>(),
        ) {
            let mut line = Vec::new();
            encode_send(&mut line, &PublishRequest::new(topic.as_str(), msg)).unwrap();
            line.truncate(line.len() - 2);
            line.extend_from_slice(format!(",\"index\":{index}}}").as_bytes());
            let serde: RawLine<'_> = serde_json::from_slice(&line).unwrap();
            if let Some(fast) = scan::flat_object(&line) {
                prop_assert_eq!(fast, serde);
            }
        }

        #[test]
        fn the_usual_push_agrees_with_serde(
            topic in ".{0,20}",
            msg in any::<String>(),
            one in any::<bool>(),
            cache in proptest::option::of(any::<bool>()),
            // Up to 18 digits; longer ones go the long way (see `usual`'s tests).
            index in 0i64..1_000_000_000_000_000_000,
        ) {
            let mut req = PublishRequest::new(topic.as_str(), msg);
            if one {
                req = req.one();
            }
            let mut line = Vec::new();
            encode_send(&mut line, &req).unwrap();
            // The broker's push: the send's keys, its cache flag as sent, then "index".
            line.truncate(line.len() - 2);
            if let Some(cache) = cache {
                line.extend_from_slice(format!(",\"cache\":{cache}").as_bytes());
            }
            line.extend_from_slice(format!(",\"index\":{index}}}").as_bytes());
            let general = decode_line_generally(&line).unwrap();
            match usual::push(&line) {
                Some(push) => prop_assert_eq!(ServerLine::Push(push), general),
                // Only a string with an escape goes the long way.
                None => prop_assert!(line.contains(&b'\\')),
            }
        }

        #[test]
        fn escaped_strings_round_trip_through_serde(s in any::<String>()) {
            let mut out = Vec::new();
            write_json_str(&mut out, &s);
            let back: String = serde_json::from_slice(&out).unwrap();
            prop_assert_eq!(back, s);
            prop_assert!(!out.contains(&b'\n'), "a JSON line must stay one line");
        }

        #[test]
        fn send_then_push_round_trip(
            topic in ".{0,20}",
            msg in any::<String>(),
            key in proptest::option::of(".{0,10}"),
            index in 0i64..i64::MAX,
        ) {
            let mut req = PublishRequest::new(topic.as_str(), msg.clone());
            if let Some(key) = &key {
                req = req.one().key(key.clone());
            }
            let mut line = Vec::new();
            encode_send(&mut line, &req).unwrap();
            // What the broker pushes: the send object as received plus "index".
            line.truncate(line.len() - 2);
            line.extend_from_slice(format!(",\"index\":{index}}}").as_bytes());
            let ServerLine::Push(push) = decode_line(&line).unwrap() else {
                panic!("not a push");
            };
            prop_assert_eq!(push.topic, topic);
            prop_assert_eq!(push.msg, msg);
            prop_assert_eq!(push.key.map(Cow::into_owned), key);
            prop_assert_eq!(push.index, Some(index));
        }
    }
}
