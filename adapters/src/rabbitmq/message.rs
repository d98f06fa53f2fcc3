//! What a brokerbench message looks like on the wire: the key travels as the AMQP routing
//! key (ignored by the fanout exchange, delivered back in `basic.deliver`), or in a header
//! when the routing key cannot hold it; the delivery attempt comes from quorum queues'
//! `x-delivery-count` header.

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, ShortString};

use super::topology::KEY_HEADER;

/// The longest routing key AMQP allows (a short string).
const MAX_ROUTING_KEY_BYTES: usize = 255;

/// The routing key and properties that carry `key`.
///
/// A key that fits a routing key (1 to 255 bytes) is the routing key, which costs
/// nothing extra on the wire; an empty or longer key goes into the
/// `KEY_HEADER` header.
pub(super) fn routing(key: Option<&str>) -> (ShortString, BasicProperties) {
    match key {
        None => (ShortString::from(""), BasicProperties::default()),
        Some(key) if !key.is_empty() && key.len() <= MAX_ROUTING_KEY_BYTES => {
            (ShortString::from(key), BasicProperties::default())
        }
        Some(key) => {
            let mut headers = FieldTable::default();
            headers.insert(KEY_HEADER.into(), AMQPValue::LongString(key.into()));
            (
                ShortString::from(""),
                BasicProperties::default().with_headers(headers),
            )
        }
    }
}

/// The key a message was published with: the key header if present, else a non-empty
/// routing key.
pub(super) fn key(routing_key: &ShortString, properties: &BasicProperties) -> Option<String> {
    if let Some(AMQPValue::LongString(key)) = header(properties, KEY_HEADER) {
        return Some(String::from_utf8_lossy(key.as_bytes()).into_owned());
    }
    let routing_key = routing_key.as_str();
    (!routing_key.is_empty()).then(|| routing_key.to_owned())
}

/// The delivery attempt (1 = first) on a quorum queue, from `x-delivery-count` (the
/// number of earlier unsuccessful deliveries, absent on the first one).
pub(super) fn quorum_attempt(properties: &BasicProperties) -> u32 {
    let earlier = match header(properties, "x-delivery-count") {
        Some(AMQPValue::LongLongInt(n)) => u32::try_from(*n).unwrap_or(u32::MAX - 1),
        Some(AMQPValue::LongInt(n)) => u32::try_from(*n).unwrap_or(u32::MAX - 1),
        Some(AMQPValue::LongUInt(n)) => (*n).min(u32::MAX - 1),
        Some(AMQPValue::ShortInt(n)) => u32::try_from(*n).unwrap_or(0),
        Some(AMQPValue::ShortUInt(n)) => u32::from(*n),
        Some(AMQPValue::ShortShortInt(n)) => u32::try_from(*n).unwrap_or(0),
        Some(AMQPValue::ShortShortUInt(n)) => u32::from(*n),
        _ => 0,
    };
    earlier + 1
}

fn header<'a>(properties: &'a BasicProperties, name: &str) -> Option<&'a AMQPValue> {
    properties.headers().as_ref()?.inner().get(name)
}
