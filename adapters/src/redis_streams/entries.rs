//! Stream entries: the fields this adapter writes, the sequence number derived from an
//! entry id, and parsing of the stream replies (`XREADGROUP`, `XAUTOCLAIM`, `XPENDING`,
//! `XCLAIM ... JUSTID`) straight from `redis::Value`, without the crate's per-entry
//! `HashMap`s.
//!
//! # Sequence numbers
//!
//! Redis names each entry `<ms>-<seq>`: the server's clock in milliseconds when the entry
//! was added (never going backwards within a stream) and a counter within that
//! millisecond. Only the server can assign it, atomically with the append, so the
//! adapter's [`Delivery::sequence`](crate::Delivery::sequence) is computed from it:
//!
//! ```text
//! sequence = ms * 2^20 + seq        (1700000000000-5  ->  1782579200000000005)
//! ```
//!
//! The mapping keeps the order of ids, so "entries with sequence > n" is exactly "entries
//! with id > `<n / 2^20>-<n mod 2^20>`", which is what
//! [`StartPosition::AfterSequence`](crate::StartPosition::AfterSequence) reads. It fits
//! an `i64` for every `ms` below 2^43 (the year 2248) and every `seq` below 2^20; an entry
//! outside that range (over a million entries within one millisecond, which Redis cannot
//! append that fast, or ids chosen by someone else) gets no sequence (`None`) rather than
//! a wrong one.

use std::sync::Arc;

use ::redis::Value;
use bytes::Bytes;

/// The field holding the message body (binary-safe).
pub(super) const FIELD_PAYLOAD: &str = "payload";
/// The field holding the message key, present only when the publisher set one.
pub(super) const FIELD_KEY: &str = "key";

/// Bits of the sequence number that hold the within-millisecond counter.
const SEQ_BITS: u32 = 20;
const SEQ_LIMIT: u64 = 1 << SEQ_BITS;
const MS_LIMIT: u64 = 1 << (63 - SEQ_BITS);

/// The sequence number of entry `id` (`<ms>-<seq>`), if it is in range; see the module
/// documentation.
pub(super) fn sequence_of(id: &str) -> Option<i64> {
    let (ms, seq) = id.split_once('-')?;
    let ms: u64 = ms.parse().ok()?;
    let seq: u64 = seq.parse().ok()?;
    if ms >= MS_LIMIT || seq >= SEQ_LIMIT {
        return None;
    }
    i64::try_from((ms << SEQ_BITS) | seq).ok()
}

/// The entry id whose successors are exactly the entries with a sequence greater than
/// `sequence` (`0-0`, the start of every stream, for a negative one).
pub(super) fn id_of(sequence: i64) -> String {
    match u64::try_from(sequence) {
        Ok(n) => format!("{}-{}", n >> SEQ_BITS, n & (SEQ_LIMIT - 1)),
        Err(_) => "0-0".to_owned(),
    }
}

/// One stream entry as this adapter wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Entry {
    /// The entry id, shared with the ack token.
    pub(super) id: Arc<str>,
    /// The `payload` field (empty if the entry has none: someone else wrote it).
    pub(super) payload: Bytes,
    /// The `key` field.
    pub(super) key: Option<String>,
}

/// The entries of an `XREADGROUP` reply for one stream: nil when the read timed out, else
/// `[[stream, [[id, [field, value, ...]], ...]]]` (a map `{stream: [...]}` in RESP3).
/// The reader uses [`parse_read_reply`] on the bytes; this one, on the redis crate's
/// values, is kept as the reference its tests compare with.
#[cfg(test)]
pub(super) fn parse_read(value: Value) -> Result<Vec<Entry>, String> {
    let streams = match value {
        Value::Nil => return Ok(Vec::new()),
        Value::Array(streams) => streams
            .into_iter()
            .map(|stream| match stream {
                Value::Array(pair) if pair.len() == 2 => {
                    Ok(pair.into_iter().nth(1).unwrap_or(Value::Nil))
                }
                other => Err(format!("expected [stream, entries], got {other:?}")),
            })
            .collect::<Result<Vec<_>, _>>()?,
        Value::Map(streams) => streams.into_iter().map(|(_, entries)| entries).collect(),
        other => return Err(format!("expected an array of streams, got {other:?}")),
    };
    let mut out = Vec::new();
    for entries in streams {
        out.extend(parse_entries(entries)?);
    }
    Ok(out)
}

/// The entries of an `XREADGROUP` reply (the shape `parse_read` describes), straight
/// from the reply's bytes (RESP2, as the reading connection speaks it): the payloads are
/// slices of `reply`, not copies.
pub(super) fn parse_read_reply(reply: &Bytes) -> Result<Vec<Entry>, String> {
    use super::resp::{Cursor, Item};

    let mut cursor = Cursor::new(reply);
    let mut next = || cursor.next().map_err(|e| e.to_string());
    let streams = match next()? {
        Item::Array(None) => return Ok(Vec::new()),
        Item::Array(Some(n)) => n,
        other => return Err(format!("expected an array of streams, got {other:?}")),
    };
    let mut out = Vec::new();
    for _ in 0..streams {
        if next()? != Item::Array(Some(2)) {
            return Err("expected [stream, entries]".to_owned());
        }
        // The stream's name.
        if !matches!(next()?, Item::Bytes(_)) {
            return Err("expected a stream name".to_owned());
        }
        let entries = match next()? {
            Item::Array(None) => continue,
            Item::Array(Some(n)) => n,
            other => return Err(format!("expected an array of entries, got {other:?}")),
        };
        out.reserve(entries);
        for _ in 0..entries {
            if next()? != Item::Array(Some(2)) {
                return Err("expected [id, fields]".to_owned());
            }
            let id: Arc<str> = match next()? {
                Item::Bytes(Some(range)) => String::from_utf8_lossy(&reply[range]).into(),
                _ => return Err("an entry without an id".to_owned()),
            };
            let fields = match next()? {
                // Deleted since it was added.
                Item::Array(None) => continue,
                Item::Array(Some(n)) => n,
                other => return Err(format!("entry {id}: expected fields, got {other:?}")),
            };
            let mut payload = Bytes::new();
            let mut key = None;
            for _ in 0..fields / 2 {
                let (name, value) = (next()?, next()?);
                let (Item::Bytes(Some(name)), Item::Bytes(value)) = (name, value) else {
                    return Err(format!("entry {id}: expected field names and values"));
                };
                let name = &reply[name];
                if name == FIELD_PAYLOAD.as_bytes() {
                    payload = value.map(|v| reply.slice(v)).unwrap_or_default();
                } else if name == FIELD_KEY.as_bytes() {
                    key = value.map(|v| String::from_utf8_lossy(&reply[v]).into_owned());
                }
            }
            if fields % 2 == 1 {
                // A field name without a value: not written by this adapter.
                next()?;
            }
            out.push(Entry { id, payload, key });
        }
    }
    Ok(out)
}

/// What one `XAUTOCLAIM` call returned.
#[derive(Debug, Default)]
pub(super) struct AutoClaim {
    /// Where the next call continues; `0-0` when the scan of the pending list is complete.
    pub(super) cursor: String,
    /// The entries now owned by the claiming consumer.
    pub(super) entries: Vec<Entry>,
}

/// `XAUTOCLAIM` reply: `[cursor, [[id, fields], ...], [deleted ids]]` (the third element
/// since Redis 7; entries trimmed away come back there, or with nil fields before 7, and
/// are left out: they no longer exist).
pub(super) fn parse_autoclaim(value: Value) -> Result<AutoClaim, String> {
    let Value::Array(parts) = value else {
        return Err(format!("expected [cursor, entries, ...], got {value:?}"));
    };
    let mut parts = parts.into_iter();
    let cursor = parts
        .next()
        .as_ref()
        .and_then(text)
        .ok_or("no cursor in the reply")?;
    let entries = parse_entries(parts.next().unwrap_or(Value::Array(Vec::new())))?;
    Ok(AutoClaim { cursor, entries })
}

/// The delivery count of the one entry an `XPENDING key group id id 1` asked about
/// (`[[id, consumer, idle-ms, count]]`), or `None` if it is not pending.
pub(super) fn parse_delivery_count(value: &Value) -> Option<u64> {
    let Value::Array(rows) = value else {
        return None;
    };
    let Some(Value::Array(row)) = rows.first() else {
        return None;
    };
    match row.get(3) {
        Some(Value::Int(n)) => u64::try_from(*n).ok(),
        Some(other) => text(other)?.parse().ok(),
        None => None,
    }
}

/// The ids in an extended `XPENDING` reply (`[[id, consumer, idle-ms, count], ...]`).
pub(super) fn parse_pending_ids(value: &Value) -> Result<Vec<String>, String> {
    let Value::Array(rows) = value else {
        return Err(format!(
            "expected an array of pending entries, got {value:?}"
        ));
    };
    rows.iter()
        .map(|row| match row {
            Value::Array(fields) => fields
                .first()
                .and_then(text)
                .ok_or_else(|| format!("no id in pending entry {row:?}")),
            other => Err(format!("expected a pending entry, got {other:?}")),
        })
        .collect()
}

/// How many ids an `XCLAIM ... JUSTID` reply lists.
pub(super) fn count_ids(value: &Value) -> usize {
    match value {
        Value::Array(ids) => ids.len(),
        _ => 0,
    }
}

/// `[[id, [field, value, ...]], ...]`, skipping entries whose fields are nil (deleted).
fn parse_entries(value: Value) -> Result<Vec<Entry>, String> {
    let entries = match value {
        Value::Array(entries) => entries,
        Value::Nil => return Ok(Vec::new()),
        other => return Err(format!("expected an array of entries, got {other:?}")),
    };
    let mut out = Vec::with_capacity(entries.len());
    for entry in entries {
        let Value::Array(pair) = entry else {
            return Err(format!("expected [id, fields], got {entry:?}"));
        };
        let mut pair = pair.into_iter();
        let id = pair
            .next()
            .and_then(shared_text)
            .ok_or("an entry without an id")?;
        let fields = match pair.next() {
            Some(Value::Array(fields)) => fields,
            Some(Value::Map(map)) => map.into_iter().flat_map(|(k, v)| [k, v]).collect(),
            Some(Value::Nil) | None => continue,
            Some(other) => return Err(format!("entry {id}: expected fields, got {other:?}")),
        };
        let mut payload = Bytes::new();
        let mut key = None;
        let mut fields = fields.into_iter();
        while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
            match bytes_of(name).as_deref() {
                Some(name) if name == FIELD_PAYLOAD.as_bytes() => {
                    payload = bytes_of(value).map(Bytes::from).unwrap_or_default();
                }
                Some(name) if name == FIELD_KEY.as_bytes() => {
                    key = bytes_of(value).map(|k| match String::from_utf8(k) {
                        Ok(key) => key,
                        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
                    });
                }
                _ => {}
            }
        }
        out.push(Entry { id, payload, key });
    }
    Ok(out)
}

fn bytes_of(value: Value) -> Option<Vec<u8>> {
    match value {
        Value::BulkString(bytes) => Some(bytes),
        Value::SimpleString(s) => Some(s.into_bytes()),
        Value::VerbatimString { text, .. } => Some(text.into_bytes()),
        Value::Int(n) => Some(n.to_string().into_bytes()),
        _ => None,
    }
}

/// A bulk or simple string reply as shared text, copied once (an entry id: it becomes
/// the ack token).
fn shared_text(value: Value) -> Option<Arc<str>> {
    match value {
        Value::BulkString(bytes) => match std::str::from_utf8(&bytes) {
            Ok(text) => Some(Arc::from(text)),
            Err(_) => Some(Arc::from(String::from_utf8_lossy(&bytes).as_ref())),
        },
        Value::SimpleString(text) => Some(Arc::from(text)),
        other => text(&other).map(Arc::from),
    }
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::Int(n) => Some(n.to_string()),
        other => super::link::text(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn entry(id: &str, fields: &[&str]) -> Value {
        Value::Array(vec![
            bulk(id),
            Value::Array(fields.iter().map(|f| bulk(f)).collect()),
        ])
    }

    #[test]
    fn sequences_follow_id_order_and_round_trip() {
        assert_eq!(sequence_of("0-0"), Some(0));
        assert_eq!(sequence_of("0-1"), Some(1));
        assert_eq!(sequence_of("1-0"), Some(1 << 20));
        let a = sequence_of("1700000000000-5").unwrap();
        let b = sequence_of("1700000000000-6").unwrap();
        let c = sequence_of("1700000000001-0").unwrap();
        assert!(a < b && b < c);
        assert_eq!(a, 1_700_000_000_000 * (1 << 20) + 5);
        assert_eq!(id_of(a), "1700000000000-5");
        assert_eq!(id_of(-1), "0-0");
        assert_eq!(id_of(0), "0-0");
        // Out of range: no sequence rather than a wrong one.
        assert_eq!(sequence_of("1-1048576"), None);
        assert_eq!(sequence_of(&format!("{}-0", 1u64 << 43)), None);
        assert_eq!(sequence_of("nonsense"), None);
        assert_eq!(sequence_of("1-x"), None);
    }

    #[test]
    fn read_replies_parse() {
        assert_eq!(parse_read(Value::Nil).unwrap(), vec![]);
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("bb.r.t"),
            Value::Array(vec![
                entry("1-0", &["payload", "hello", "key", "k1"]),
                entry("1-1", &["payload", "bye"]),
                entry("1-2", &["other", "x"]),
            ]),
        ])]);
        let entries = parse_read(reply).unwrap();
        assert_eq!(entries.len(), 3);
        assert_eq!(&*entries[0].id, "1-0");
        assert_eq!(entries[0].payload, "hello");
        assert_eq!(entries[0].key.as_deref(), Some("k1"));
        assert_eq!(entries[1].key, None);
        assert_eq!(entries[2].payload, "");
        assert!(parse_read(bulk("x")).is_err());
    }

    /// The byte walker reads what the value parser reads, from the same bytes.
    #[test]
    fn read_replies_parse_from_bytes_alike() {
        let replies: [&[u8]; 4] = [
            b"*-1\r\n",
            b"*1\r\n*2\r\n$1\r\nt\r\n*3\r\n*2\r\n$3\r\n1-0\r\n*4\r\n$7\r\npayload\r\n$5\r\nhello\r\n$3\r\nkey\r\n$2\r\nk1\r\n*2\r\n$3\r\n1-1\r\n*-1\r\n*2\r\n$3\r\n1-2\r\n*2\r\n$5\r\nother\r\n$1\r\nx\r\n",
            b"*1\r\n*2\r\n$1\r\nt\r\n*1\r\n*2\r\n$3\r\n5-0\r\n*2\r\n$7\r\npayload\r\n$4\r\n\x00\xff\r\n\r\n",
            b"*1\r\n*2\r\n$1\r\nt\r\n*0\r\n",
        ];
        for reply in replies {
            let theirs = parse_read(::redis::parse_redis_value(reply).unwrap()).unwrap();
            let ours = parse_read_reply(&Bytes::from_static(reply)).unwrap();
            assert_eq!(ours, theirs, "{:?}", String::from_utf8_lossy(reply));
        }
        assert_eq!(
            parse_read_reply(&Bytes::from_static(b"*1\r\n*2\r\n$1\r\nt\r\n*1\r\n")).map_err(|_| ()),
            Err(())
        );
        assert!(parse_read_reply(&Bytes::from_static(b"$1\r\nx\r\n")).is_err());
    }

    #[test]
    fn binary_payloads_survive() {
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("t"),
            Value::Array(vec![Value::Array(vec![
                bulk("5-0"),
                Value::Array(vec![
                    bulk("payload"),
                    Value::BulkString(vec![0, 255, 13, 10]),
                ]),
            ])]),
        ])]);
        assert_eq!(
            parse_read(reply).unwrap()[0].payload,
            &[0u8, 255, 13, 10][..]
        );
    }

    #[test]
    fn autoclaim_skips_deleted_entries() {
        let reply = Value::Array(vec![
            bulk("0-0"),
            Value::Array(vec![
                entry("3-0", &["payload", "a"]),
                Value::Array(vec![bulk("3-1"), Value::Nil]),
            ]),
            Value::Array(vec![bulk("2-0")]),
        ]);
        let claim = parse_autoclaim(reply).unwrap();
        assert_eq!(claim.cursor, "0-0");
        assert_eq!(claim.entries.len(), 1);
        assert_eq!(&*claim.entries[0].id, "3-0");
    }

    #[test]
    fn pending_replies_parse() {
        let row = Value::Array(vec![
            bulk("7-0"),
            bulk("c1"),
            Value::Int(5012),
            Value::Int(3),
        ]);
        let reply = Value::Array(vec![row]);
        assert_eq!(parse_delivery_count(&reply), Some(3));
        assert_eq!(parse_delivery_count(&Value::Array(vec![])), None);
        assert_eq!(parse_pending_ids(&reply).unwrap(), vec!["7-0".to_owned()]);
        assert_eq!(count_ids(&Value::Array(vec![bulk("1-0"), bulk("2-0")])), 2);
    }
}
