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

mod render;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};

pub use self::render::{Layout, write_json_str};

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
