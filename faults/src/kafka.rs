//! As much of the Kafka wire protocol as the proxy needs to keep every connection of a
//! Kafka client going through it.
//!
//! A Kafka client connects to its bootstrap address only to learn the cluster: a Metadata
//! response lists every broker at the address the broker *advertises*, a FindCoordinator
//! response names the broker that coordinates a group, and the client then connects to
//! those addresses directly — past a proxy that only relays bytes. So the proxy reads the
//! frame boundaries, remembers which API each request called (by correlation id), and in
//! those two responses replaces every advertised `host:port` by the address of a proxy
//! listener that relays to it. Every other byte goes through as it came.
//!
//! Sans-I/O: this module sees byte slices, never sockets, so it is tested without a
//! broker.
//!
//! ```text
//! frame:    int32 size | payload (size bytes)
//! request:  int16 api_key | int16 api_version | int32 correlation_id | ...
//! response: int32 correlation_id | tagged fields (response header v1 only) | body
//! ```
//!
//! The field layouts follow the protocol's message definitions (`MetadataResponse.json`,
//! `FindCoordinatorResponse.json` in apache/kafka).

use std::net::SocketAddr;
use std::ops::Range;

mod versions;

/// API key of Metadata: the brokers of the cluster.
pub(crate) const METADATA: i16 = 3;
/// API key of FindCoordinator: the broker coordinating a group or a transaction.
pub(crate) const FIND_COORDINATOR: i16 = 10;
/// API key of ApiVersions, whose response header never has tagged fields (a client must
/// read it before it knows which versions the broker speaks).
pub(crate) const API_VERSIONS: i16 = 18;

/// Bytes at the start of a request the proxy reads: api key, api version, correlation id.
pub(crate) const REQUEST_HEAD: usize = 8;

/// Bytes at the start of a response the proxy reads: the correlation id.
pub(crate) const RESPONSE_HEAD: usize = 4;

/// What a request called, remembered by correlation id until its response comes back:
/// the layout of a response depends on both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Call {
    /// Which API (`METADATA`, `FIND_COORDINATOR`, ...).
    pub(crate) api_key: i16,
    /// Which version of it the client chose.
    pub(crate) api_version: i16,
}

impl Call {
    /// The correlation id and the call of a request, from its first `REQUEST_HEAD` bytes.
    pub(crate) fn of_request(head: [u8; REQUEST_HEAD]) -> (i32, Call) {
        let call = Call {
            api_key: i16::from_be_bytes([head[0], head[1]]),
            api_version: i16::from_be_bytes([head[2], head[3]]),
        };
        (
            i32::from_be_bytes([head[4], head[5], head[6], head[7]]),
            call,
        )
    }

    /// Whether the response advertises broker addresses the client will connect to.
    pub(crate) fn advertises_brokers(self) -> bool {
        matches!(self.api_key, METADATA | FIND_COORDINATOR)
    }

    /// Whether the proxy rewrites the response: those advertising brokers, and
    /// ApiVersions (see `versions`).
    pub(crate) fn rewritten(self) -> bool {
        self.advertises_brokers() || self.api_key == API_VERSIONS
    }

    /// Whether this version of the API is flexible (compact strings and arrays, tagged
    /// fields). Only known for the APIs this module names; false for the others, which
    /// the proxy never parses.
    fn flexible(self) -> bool {
        match self.api_key {
            METADATA => self.api_version >= 9,
            FIND_COORDINATOR => self.api_version >= 3,
            API_VERSIONS => self.api_version >= 3,
            _ => false,
        }
    }

    /// Whether the response header is v1 (correlation id, then tagged fields) rather than
    /// v0 (correlation id only): v1 exactly for flexible versions, except ApiVersions.
    fn tagged_response_header(self) -> bool {
        self.api_key != API_VERSIONS && self.flexible()
    }
}

/// A response that does not parse as the version its request asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed Kafka response (api {api_key} v{api_version}): {why}")]
pub(crate) struct Malformed {
    api_key: i16,
    api_version: i16,
    why: &'static str,
}

/// A broker address a response advertises, and where it sits in the payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Advertised {
    /// The host, as the broker wrote it.
    pub(crate) host: String,
    /// The port, as the broker wrote it (an error answer has -1).
    pub(crate) port: i32,
    /// The host (its length prefix included) and the port right after it: in both
    /// responses the port follows the host, so one splice replaces both.
    span: Range<usize>,
}

impl Advertised {
    /// Whether this names a broker to connect to (error answers have an empty host and
    /// port -1, and stay as they are).
    fn port(&self) -> Option<u16> {
        if self.host.is_empty() {
            return None;
        }
        u16::try_from(self.port).ok().filter(|p| *p != 0)
    }
}

/// The broker addresses advertised by `response` (a response payload, without its size
/// prefix) to `call`, in the order they appear. APIs other than Metadata and
/// FindCoordinator advertise none.
///
/// # Errors
/// When the payload is cut short or a length is impossible.
pub(crate) fn advertised(call: Call, response: &[u8]) -> Result<Vec<Advertised>, Malformed> {
    let mut wire = Wire {
        bytes: response,
        at: 0,
        call,
    };
    match call.api_key {
        METADATA => metadata_brokers(&mut wire),
        FIND_COORDINATOR => coordinators(&mut wire),
        _ => Ok(Vec::new()),
    }
}

/// `response` (a response payload to `call`, without its size prefix) as a whole frame
/// (size prefix included), with every advertised broker address for which `local` gives
/// an address replaced by that address. Every other byte is kept. An ApiVersions
/// response has its newest Produce and Fetch versions lowered instead (see `versions`).
///
/// # Errors
/// When the payload is cut short or a length is impossible (see [`advertised`]).
pub(crate) fn relocate(
    call: Call,
    response: &[u8],
    mut local: impl FnMut(&str, u16) -> Option<SocketAddr>,
) -> Result<Vec<u8>, Malformed> {
    if call.api_key == API_VERSIONS {
        return versions::capped(call, response);
    }
    let flexible = call.flexible();
    let mut frame = Vec::with_capacity(4 + response.len());
    frame.extend_from_slice(&[0; 4]);
    let mut copied = 0;
    for broker in advertised(call, response)? {
        let Some(port) = broker.port() else {
            continue;
        };
        let Some(addr) = local(&broker.host, port) else {
            continue;
        };
        frame.extend_from_slice(&response[copied..broker.span.start]);
        put_string(&mut frame, &addr.ip().to_string(), flexible);
        frame.extend_from_slice(&i32::from(addr.port()).to_be_bytes());
        copied = broker.span.end;
    }
    frame.extend_from_slice(&response[copied..]);
    let size = i32::try_from(frame.len() - 4).map_err(|_| Malformed {
        api_key: call.api_key,
        api_version: call.api_version,
        why: "the rewritten frame is larger than a frame can be",
    })?;
    frame[..4].copy_from_slice(&size.to_be_bytes());
    Ok(frame)
}

/// Metadata (every version): the `brokers` array, the first thing after the header and
/// the throttle time. What follows it (cluster id, controller, topics) is not read.
///
/// ```text
/// header | throttle_time_ms int32 (v3+) | brokers [ node_id int32 | host string |
///   port int32 | rack nullable string (v1+) | tagged fields (v9+) ] | ...
/// ```
fn metadata_brokers(wire: &mut Wire<'_>) -> Result<Vec<Advertised>, Malformed> {
    let version = wire.call.api_version;
    let flexible = wire.call.flexible();
    wire.response_header()?;
    if version >= 3 {
        wire.i32()?;
    }
    let count = wire.array_len()?;
    let mut brokers = Vec::new();
    for _ in 0..count {
        wire.i32()?;
        brokers.push(wire.host_port()?);
        if version >= 1 {
            wire.skip_string()?;
        }
        if flexible {
            wire.skip_tagged_fields()?;
        }
    }
    Ok(brokers)
}

/// FindCoordinator: one coordinator up to v3, an array of them from v4.
///
/// ```text
/// v0:   header | error_code int16 | node_id int32 | host string | port int32
/// v1-3: header | throttle_time_ms int32 | error_code int16 |
///       error_message nullable string | node_id int32 | host string | port int32 |
///       tagged fields (v3)
/// v4+:  header | throttle_time_ms int32 | coordinators [ key string | node_id int32 |
///       host string | port int32 | error_code int16 | error_message nullable string |
///       tagged fields ] | tagged fields
/// ```
fn coordinators(wire: &mut Wire<'_>) -> Result<Vec<Advertised>, Malformed> {
    let version = wire.call.api_version;
    wire.response_header()?;
    if version >= 1 {
        wire.i32()?;
    }
    if version <= 3 {
        wire.i16()?;
        if version >= 1 {
            wire.skip_string()?;
        }
        wire.i32()?;
        return Ok(vec![wire.host_port()?]);
    }
    let count = wire.array_len()?;
    let mut coordinators = Vec::new();
    for _ in 0..count {
        wire.skip_string()?;
        wire.i32()?;
        coordinators.push(wire.host_port()?);
        wire.i16()?;
        wire.skip_string()?;
        wire.skip_tagged_fields()?;
    }
    Ok(coordinators)
}

/// A reading position in a response payload, with the call that says how to read it.
struct Wire<'a> {
    bytes: &'a [u8],
    at: usize,
    call: Call,
}

impl<'a> Wire<'a> {
    fn malformed(&self, why: &'static str) -> Malformed {
        Malformed {
            api_key: self.call.api_key,
            api_version: self.call.api_version,
            why,
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        let end = self
            .at
            .checked_add(n)
            .filter(|end| *end <= self.bytes.len())
            .ok_or_else(|| self.malformed("cut short"))?;
        let taken = &self.bytes[self.at..end];
        self.at = end;
        Ok(taken)
    }

    fn i16(&mut self) -> Result<i16, Malformed> {
        let b = self.take(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    fn i32(&mut self) -> Result<i32, Malformed> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// An unsigned varint (7 bits a byte, low first, at most 5 bytes for 32 bits).
    fn uvarint(&mut self) -> Result<u32, Malformed> {
        let mut value = 0u32;
        for shift in (0..35).step_by(7) {
            let byte = self.take(1)?[0];
            value |= u32::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(self.malformed("a varint longer than 5 bytes"))
    }

    /// The length of a (nullable) string: int16 with -1 for null, or in flexible versions
    /// an unsigned varint of length + 1 with 0 for null. `None` for null.
    fn string_len(&mut self) -> Result<Option<usize>, Malformed> {
        if self.call.flexible() {
            let n = self.uvarint()?;
            Ok(n.checked_sub(1).map(|n| n as usize))
        } else {
            match self.i16()? {
                -1 => Ok(None),
                n => usize::try_from(n)
                    .map(Some)
                    .map_err(|_| self.malformed("a negative string length")),
            }
        }
    }

    fn skip_string(&mut self) -> Result<(), Malformed> {
        if let Some(n) = self.string_len()? {
            self.take(n)?;
        }
        Ok(())
    }

    /// The number of elements of an array: int32 with -1 for null, or in flexible
    /// versions an unsigned varint of count + 1 with 0 for null. A null array has none.
    fn array_len(&mut self) -> Result<usize, Malformed> {
        if self.call.flexible() {
            Ok(self.uvarint()?.saturating_sub(1) as usize)
        } else {
            match self.i32()? {
                -1 => Ok(0),
                n => usize::try_from(n).map_err(|_| self.malformed("a negative array length")),
            }
        }
    }

    /// Tagged fields: a count, then for each a tag, a size and that many bytes.
    fn skip_tagged_fields(&mut self) -> Result<(), Malformed> {
        for _ in 0..self.uvarint()? {
            self.uvarint()?;
            let size = self.uvarint()?;
            self.take(size as usize)?;
        }
        Ok(())
    }

    /// The correlation id, then the header's tagged fields when it is header v1.
    fn response_header(&mut self) -> Result<(), Malformed> {
        self.i32()?;
        if self.call.tagged_response_header() {
            self.skip_tagged_fields()?;
        }
        Ok(())
    }

    /// A non-null host string and the int32 port after it.
    fn host_port(&mut self) -> Result<Advertised, Malformed> {
        let start = self.at;
        let len = self
            .string_len()?
            .ok_or_else(|| self.malformed("a null host"))?;
        let host = std::str::from_utf8(self.take(len)?)
            .map_err(|_| self.malformed("a host that is not UTF-8"))?
            .to_owned();
        let port = self.i32()?;
        Ok(Advertised {
            host,
            port,
            span: start..self.at,
        })
    }
}

/// Appends `s` as a (non-null) string of the flexible or the classic encoding.
fn put_string(out: &mut Vec<u8>, s: &str, flexible: bool) {
    if flexible {
        put_uvarint(out, s.len() as u32 + 1);
    } else {
        // A host is an IP address here: far below i16::MAX bytes.
        out.extend_from_slice(&(s.len() as i16).to_be_bytes());
    }
    out.extend_from_slice(s.as_bytes());
}

fn put_uvarint(out: &mut Vec<u8>, mut value: u32) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

#[cfg(test)]
mod tests;
