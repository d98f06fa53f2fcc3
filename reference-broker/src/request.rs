//! Typed requests: one protocol line in, a [`Request`] or the exact error reason out.
//!
//! Parsing borrows from the line wherever the JSON has no escapes, so the hot path
//! (`send`) allocates nothing until the pushed message is rendered once for all
//! subscribers.
//!
//! ```text
//! {"command":"subscribe","topic":"room_1","last_seen":4}      -> Request::Subscribe
//! {"command":"send","topic":"room_1","msg":"hi","delivery":"one","key":"k"} -> Request::Send
//! {"command":"ack","topic":"room_1","index":7}                -> Request::Ack
//! [1,2]                                                       -> Err(ParseError::Malformed)
//! ```

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};

/// Why a line is not a request. Each kind has one exact reply, shared with every other
/// server of this protocol (see [`ParseError::reply`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The line is not valid UTF-8.
    #[error("Could not decode input as UTF-8")]
    Utf8,
    /// The line is UTF-8 but not JSON.
    #[error("Could not parse json")]
    Json,
    /// The line is JSON but not a valid command.
    #[error("Malformed json message")]
    Malformed,
}

impl ParseError {
    /// The reply line for this error, `\r\n` included.
    pub fn reply(self) -> &'static [u8] {
        match self {
            ParseError::Utf8 => crate::reply::UTF8,
            ParseError::Json => crate::reply::JSON,
            ParseError::Malformed => crate::reply::MALFORMED,
        }
    }
}

/// How a `send` is distributed among the topic's subscribers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Pushed to every current subscriber.
    All,
    /// Pushed to exactly one current subscriber.
    One,
}

impl Delivery {
    fn as_str(self) -> &'static str {
        match self {
            Delivery::All => "all",
            Delivery::One => "one",
        }
    }
}

/// A key of a request object. The order in which they appear in a `send` is kept, because
/// the pushed message repeats the send object as received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Field {
    Command,
    Topic,
    Msg,
    Delivery,
    Cache,
    Key,
    Id,
    LastSeen,
    Ack,
    Index,
}

/// Number of distinct [`Field`]s; also the most keys a valid object can have.
const FIELD_COUNT: usize = 10;

impl Field {
    fn from_name(name: &str) -> Option<Field> {
        Some(match name {
            "command" => Field::Command,
            "topic" => Field::Topic,
            "msg" => Field::Msg,
            "delivery" => Field::Delivery,
            "cache" => Field::Cache,
            "key" => Field::Key,
            "id" => Field::Id,
            "last_seen" => Field::LastSeen,
            "ack" => Field::Ack,
            "index" => Field::Index,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Field::Command => "command",
            Field::Topic => "topic",
            Field::Msg => "msg",
            Field::Delivery => "delivery",
            Field::Cache => "cache",
            Field::Key => "key",
            Field::Id => "id",
            Field::LastSeen => "last_seen",
            Field::Ack => "ack",
            Field::Index => "index",
        }
    }

    const fn bit(self) -> u16 {
        1 << (self as u8)
    }

    /// The bits of `fields`, for the per-command sets of allowed keys.
    const fn mask(fields: &[Field]) -> u16 {
        let mut mask = 0;
        let mut i = 0;
        while i < fields.len() {
            mask |= fields[i].bit();
            i += 1;
        }
        mask
    }
}

/// Keys each command allows, computed once at compile time.
const SUBSCRIBE_KEYS: u16 = Field::mask(&[
    Field::Command,
    Field::Topic,
    Field::LastSeen,
    Field::Cache,
    Field::Ack,
]);
const UNSUBSCRIBE_KEYS: u16 = Field::mask(&[Field::Command, Field::Topic]);
const SEND_KEYS: u16 = Field::mask(&[
    Field::Command,
    Field::Topic,
    Field::Msg,
    Field::Delivery,
    Field::Cache,
    Field::Key,
    Field::Id,
]);
const ACK_KEYS: u16 = Field::mask(&[Field::Command, Field::Topic, Field::Index]);
const STATS_KEYS: u16 = Field::mask(&[Field::Command]);

/// A `subscribe` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe<'a> {
    /// The topic to join.
    pub topic: Cow<'a, str>,
    /// Replay only cached messages with a greater index; −1 (all of the cache) by default.
    pub last_seen: i64,
    /// `false` skips the replay of the cache.
    pub cache: bool,
    /// The `ack` extension: at-least-once delivery for this subscription.
    pub ack: bool,
}

/// A `send` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Send<'a> {
    /// The destination topic.
    pub topic: Cow<'a, str>,
    /// The payload.
    pub msg: Cow<'a, str>,
    /// Fan-out or competing consumers.
    pub delivery: Delivery,
    /// `Some(false)` keeps the message out of the cache.
    pub cache: Option<bool>,
    /// The `key` extension: with `"one"`, equal keys go to the same subscriber.
    pub key: Option<Cow<'a, str>>,
    /// The `id` extension: idempotent publish.
    pub id: Option<Cow<'a, str>>,
    /// Keys in the order received, for rendering the pushed message.
    order: FieldOrder,
}

/// A parsed protocol request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request<'a> {
    /// Join a topic (and replay its cache).
    Subscribe(Subscribe<'a>),
    /// Leave a topic.
    Unsubscribe {
        /// The topic to leave.
        topic: Cow<'a, str>,
    },
    /// Publish a message.
    Send(Send<'a>),
    /// Acknowledge a pending message (extension).
    Ack {
        /// The topic the message came from.
        topic: Cow<'a, str>,
        /// The message's index in that topic.
        index: i64,
    },
    /// Ask for redelivery of a pending message now (extension).
    Nack {
        /// The topic the message came from.
        topic: Cow<'a, str>,
        /// The message's index in that topic.
        index: i64,
    },
    /// Ask for the broker's counters (extension).
    Stats,
}

impl<'a> Request<'a> {
    /// Parses one line (without its line ending).
    ///
    /// # Errors
    ///
    /// [`ParseError::Utf8`] when the bytes are not UTF-8, [`ParseError::Json`] when the
    /// text is not JSON and [`ParseError::Malformed`] when the JSON is not a valid command.
    pub fn parse(line: &'a [u8]) -> Result<Request<'a>, ParseError> {
        let text = std::str::from_utf8(line).map_err(|_| ParseError::Utf8)?;
        let raw = match parse_object(text) {
            Ok(raw) => raw,
            Err(err) if err.is_data() => {
                // The visitor stops at the first bad key or value; only a check of the
                // whole line tells "not JSON" from "JSON, but not a command".
                return Err(if serde_json::from_str::<IgnoredAny>(text).is_ok() {
                    ParseError::Malformed
                } else {
                    ParseError::Json
                });
            }
            Err(_) => return Err(ParseError::Json),
        };
        raw.into_request()
    }
}

fn parse_object(text: &str) -> Result<RawObject<'_>, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(text);
    let raw = RawObjectSeed.deserialize(&mut de)?;
    de.end()?;
    Ok(raw)
}

/// The keys of a `send` in the order they arrived.
#[derive(Clone, Copy, PartialEq, Eq)]
struct FieldOrder {
    fields: [Field; FIELD_COUNT],
    len: u8,
}

impl fmt::Debug for FieldOrder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.iter().map(Field::name))
            .finish()
    }
}

impl FieldOrder {
    fn iter(&self) -> impl Iterator<Item = Field> + '_ {
        self.fields[..usize::from(self.len)].iter().copied()
    }
}

/// Every key a request may have, each at most once, before the per-command rules apply.
struct RawObject<'a> {
    command: Option<Cow<'a, str>>,
    topic: Option<Cow<'a, str>>,
    msg: Option<Cow<'a, str>>,
    delivery: Option<Cow<'a, str>>,
    cache: Option<bool>,
    key: Option<Cow<'a, str>>,
    id: Option<Cow<'a, str>>,
    last_seen: Option<i64>,
    ack: Option<bool>,
    index: Option<i64>,
    present: u16,
    order: FieldOrder,
}

impl<'a> RawObject<'a> {
    fn has_only(&self, allowed: u16) -> bool {
        self.present & !allowed == 0
    }

    fn into_request(self) -> Result<Request<'a>, ParseError> {
        let command = self.command.as_deref().ok_or(ParseError::Malformed)?;
        let request = match command {
            "subscribe" if self.has_only(SUBSCRIBE_KEYS) => Request::Subscribe(Subscribe {
                topic: self.topic.ok_or(ParseError::Malformed)?,
                last_seen: self.last_seen.unwrap_or(-1),
                cache: self.cache.unwrap_or(true),
                ack: self.ack.unwrap_or(false),
            }),
            "unsubscribe" if self.has_only(UNSUBSCRIBE_KEYS) => Request::Unsubscribe {
                topic: self.topic.ok_or(ParseError::Malformed)?,
            },
            "send" if self.has_only(SEND_KEYS) => {
                let delivery = match self.delivery.as_deref() {
                    Some("all") => self::Delivery::All,
                    Some("one") => self::Delivery::One,
                    _ => return Err(ParseError::Malformed),
                };
                Request::Send(Send {
                    topic: self.topic.ok_or(ParseError::Malformed)?,
                    msg: self.msg.ok_or(ParseError::Malformed)?,
                    delivery,
                    cache: self.cache,
                    key: self.key,
                    id: self.id,
                    order: self.order,
                })
            }
            "ack" | "nack" if self.has_only(ACK_KEYS) => {
                let topic = self.topic.ok_or(ParseError::Malformed)?;
                let index = self.index.ok_or(ParseError::Malformed)?;
                if command == "ack" {
                    Request::Ack { topic, index }
                } else {
                    Request::Nack { topic, index }
                }
            }
            "stats" if self.has_only(STATS_KEYS) => Request::Stats,
            _ => return Err(ParseError::Malformed),
        };
        Ok(request)
    }
}

struct RawObjectSeed;

impl<'de> DeserializeSeed<'de> for RawObjectSeed {
    type Value = RawObject<'de>;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        de.deserialize_any(RawObjectVisitor)
    }
}

struct RawObjectVisitor;

impl<'de> Visitor<'de> for RawObjectVisitor {
    type Value = RawObject<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a command object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut raw = RawObject {
            command: None,
            topic: None,
            msg: None,
            delivery: None,
            cache: None,
            key: None,
            id: None,
            last_seen: None,
            ack: None,
            index: None,
            present: 0,
            order: FieldOrder {
                fields: [Field::Command; FIELD_COUNT],
                len: 0,
            },
        };
        while let Some(KeyName(field)) = map.next_key()? {
            let field = field.ok_or_else(|| de::Error::custom("key not allowed"))?;
            if raw.present & field.bit() != 0 {
                return Err(de::Error::custom("duplicate key"));
            }
            raw.present |= field.bit();
            raw.order.fields[usize::from(raw.order.len)] = field;
            raw.order.len += 1;
            match field {
                Field::Command => raw.command = Some(map.next_value::<Text<'de>>()?.0),
                Field::Topic => raw.topic = Some(map.next_value::<Text<'de>>()?.0),
                Field::Msg => raw.msg = Some(map.next_value::<Text<'de>>()?.0),
                Field::Delivery => raw.delivery = Some(map.next_value::<Text<'de>>()?.0),
                Field::Key => raw.key = Some(map.next_value::<Text<'de>>()?.0),
                Field::Id => raw.id = Some(map.next_value::<Text<'de>>()?.0),
                Field::Cache => raw.cache = Some(map.next_value()?),
                Field::Ack => raw.ack = Some(map.next_value()?),
                Field::LastSeen => raw.last_seen = Some(map.next_value()?),
                Field::Index => raw.index = Some(map.next_value()?),
            }
        }
        Ok(raw)
    }
}

/// A key name resolved to a [`Field`]; `None` for a key no command allows.
struct KeyName(Option<Field>);

impl<'de> serde::Deserialize<'de> for KeyName {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = KeyName;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<KeyName, E> {
                Ok(KeyName(Field::from_name(v)))
            }
        }
        de.deserialize_str(KeyVisitor)
    }
}

/// A JSON string value, borrowed from the line when it has no escapes.
struct Text<'a>(Cow<'a, str>);

impl<'de> serde::Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
        }
        de.deserialize_str(TextVisitor)
    }
}

/// Where the parts of a rendered `send` sit inside its line, so redeliveries and
/// dead-letters can be derived from the bytes without parsing them again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Byte range of the quoted topic value.
    pub topic: (u32, u32),
    /// Length of the object body before `,"index":`.
    pub body_end: u32,
}

impl Send<'_> {
    /// Renders the message pushed to subscribers: the send object as received (compact,
    /// keys in their original order) plus `"index"`, followed by `\r\n`.
    ///
    /// ```text
    /// {"command":"send","topic":"t","msg":"hi","delivery":"all","index":3}\r\n
    /// ```
    pub fn render(&self, index: u64) -> (Vec<u8>, Layout) {
        let mut out = Vec::with_capacity(self.msg.len() + self.topic.len() + 96);
        let topic = self.render_body(&mut out);
        let body_end = out.len() as u32;
        out.extend_from_slice(b",\"index\":");
        out.extend_from_slice(itoa::Buffer::new().format(index).as_bytes());
        out.extend_from_slice(b"}\r\n");
        (out, Layout { topic, body_end })
    }

    /// Writes `{` and the keys of the send object into `out`, without the closing brace.
    /// Returns the byte range of the topic value.
    fn render_body(&self, out: &mut Vec<u8>) -> (u32, u32) {
        let mut topic_range = (0, 0);
        out.push(b'{');
        for (i, field) in self.order.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.push(b'"');
            out.extend_from_slice(field.name().as_bytes());
            out.extend_from_slice(b"\":");
            match field {
                Field::Command => out.extend_from_slice(b"\"send\""),
                Field::Topic => {
                    let start = out.len() as u32;
                    write_json_str(out, &self.topic);
                    topic_range = (start, out.len() as u32);
                }
                Field::Msg => write_json_str(out, &self.msg),
                Field::Delivery => {
                    out.push(b'"');
                    out.extend_from_slice(self.delivery.as_str().as_bytes());
                    out.push(b'"');
                }
                Field::Cache => out.extend_from_slice(match self.cache {
                    Some(false) => b"false",
                    _ => b"true",
                }),
                Field::Key => write_json_str(out, self.key.as_deref().unwrap_or_default()),
                Field::Id => write_json_str(out, self.id.as_deref().unwrap_or_default()),
                // Not allowed in a send; the parser rejects them before a Send exists.
                Field::LastSeen | Field::Ack | Field::Index => {}
            }
        }
        topic_range
    }
}

/// Appends `s` as a JSON string literal, escaped the way serde_json escapes.
pub fn write_json_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => {
                out.extend_from_slice(&bytes[start..i]);
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xf)]);
                start = i + 1;
                continue;
            }
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(escape);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Request<'_>, ParseError> {
        Request::parse(s.as_bytes())
    }

    fn rendered(s: &str, index: u64) -> String {
        match parse(s).unwrap() {
            Request::Send(send) => String::from_utf8(send.render(index).0).unwrap(),
            other => panic!("not a send: {other:?}"),
        }
    }

    #[test]
    fn error_classes() {
        assert_eq!(Request::parse(b"\xff\xfe"), Err(ParseError::Utf8));
        for bad in [
            "",
            "   ",
            "{",
            "{\"command\":\"stats\"} x",
            "nope",
            "{\"foo\":1,",
        ] {
            assert_eq!(parse(bad), Err(ParseError::Json), "{bad:?}");
        }
        for malformed in [
            "[]",
            "1",
            "\"send\"",
            "null",
            "{}",
            "{\"command\":\"publish\",\"topic\":\"a\"}",
            "{\"command\":1,\"topic\":\"a\"}",
            "{\"command\":\"subscribe\"}",
            "{\"command\":\"subscribe\",\"topic\":5}",
            "{\"command\":\"subscribe\",\"topic\":null}",
            "{\"command\":\"subscribe\",\"topic\":\"a\",\"msg\":\"x\"}",
            "{\"command\":\"subscribe\",\"topic\":\"a\",\"last_seen\":1.5}",
            "{\"command\":\"subscribe\",\"topic\":\"a\",\"last_seen\":\"3\"}",
            "{\"command\":\"subscribe\",\"topic\":\"a\",\"topic\":\"b\"}",
            "{\"command\":\"subscribe\",\"topic\":\"a\",\"foo\":1}",
            "{\"command\":\"unsubscribe\",\"topic\":\"a\",\"cache\":true}",
            "{\"command\":\"send\",\"topic\":\"a\",\"msg\":\"x\"}",
            "{\"command\":\"send\",\"topic\":\"a\",\"msg\":\"x\",\"delivery\":\"some\"}",
            "{\"command\":\"send\",\"topic\":\"a\",\"msg\":1,\"delivery\":\"all\"}",
            "{\"command\":\"send\",\"topic\":\"a\",\"msg\":\"x\",\"delivery\":\"all\",\"cache\":1}",
            "{\"command\":\"send\",\"topic\":\"a\",\"msg\":\"x\",\"delivery\":\"all\",\"last_seen\":1}",
            "{\"command\":\"ack\",\"topic\":\"a\"}",
            "{\"command\":\"stats\",\"topic\":\"a\"}",
        ] {
            assert_eq!(parse(malformed), Err(ParseError::Malformed), "{malformed}");
        }
    }

    #[test]
    fn data_error_on_invalid_json_tail_is_a_json_error() {
        // The unknown key would be malformed, but the line is not JSON at all.
        assert_eq!(parse("{\"foo\":1, garbage"), Err(ParseError::Json));
        assert_eq!(
            parse("{\"command\":\"subscribe\",\"topic\":5 oops}"),
            Err(ParseError::Json)
        );
    }

    #[test]
    fn subscribe_defaults_and_options() {
        assert_eq!(
            parse("{\"command\":\"subscribe\",\"topic\":\"a\"}"),
            Ok(Request::Subscribe(Subscribe {
                topic: "a".into(),
                last_seen: -1,
                cache: true,
                ack: false
            }))
        );
        assert_eq!(
            parse(
                "{\"topic\":\"a\",\"cache\":false,\"command\":\"subscribe\",\"last_seen\":-7,\"ack\":true}"
            ),
            Ok(Request::Subscribe(Subscribe {
                topic: "a".into(),
                last_seen: -7,
                cache: false,
                ack: true
            }))
        );
    }

    #[test]
    fn send_renders_compactly_in_received_order() {
        assert_eq!(
            rendered(
                "{\"command\":\"send\",\"topic\":\"room_123\",\"msg\":\"Hi\",\"delivery\":\"all\"}",
                0
            ),
            "{\"command\":\"send\",\"topic\":\"room_123\",\"msg\":\"Hi\",\"delivery\":\"all\",\"index\":0}\r\n"
        );
        assert_eq!(
            rendered(
                " { \"topic\" : \"t\", \"command\":\"send\", \"cache\":false, \"msg\":\"a\\u0062\\\"\\n\\u0001é\", \"delivery\":\"one\", \"key\":\"k\" } ",
                42
            ),
            "{\"topic\":\"t\",\"command\":\"send\",\"cache\":false,\"msg\":\"ab\\\"\\n\\u0001é\",\"delivery\":\"one\",\"key\":\"k\",\"index\":42}\r\n"
        );
    }

    #[test]
    fn rendered_topic_range_points_at_the_topic() {
        let line = "{\"command\":\"send\",\"topic\":\"abc\",\"msg\":\"m\",\"delivery\":\"one\"}";
        let Ok(Request::Send(send)) = parse(line) else {
            panic!()
        };
        let (bytes, layout) = send.render(9);
        assert_eq!(
            &bytes[layout.topic.0 as usize..layout.topic.1 as usize],
            b"\"abc\""
        );
        assert_eq!(&bytes[layout.body_end as usize..], b",\"index\":9}\r\n");
    }

    #[test]
    fn escaping_matches_serde_json() {
        let samples = [
            "plain",
            "q\"b\\s",
            "\u{0}\u{1f}\u{7f}",
            "tab\tcr\rnl\n\u{8}\u{c}",
            "ünï ✓",
        ];
        for s in samples {
            let mut out = Vec::new();
            write_json_str(&mut out, s);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                serde_json::to_string(s).unwrap()
            );
        }
    }
}
