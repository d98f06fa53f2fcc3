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
    decode_line_generally(line)
}

/// [`decode_line`] without the shortcut for the usual lines: the general scanner, then
/// `serde_json`. The tests hold the shortcut to what this says.
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
mod tests;
