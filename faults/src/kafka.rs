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
mod tests {
    use super::*;

    /// Builds payloads the way a broker encodes them, for one call.
    struct Encoder {
        out: Vec<u8>,
        flexible: bool,
    }

    impl Encoder {
        fn new(call: Call) -> Encoder {
            Encoder {
                out: Vec::new(),
                flexible: call.flexible(),
            }
        }
        fn i16(&mut self, v: i16) -> &mut Self {
            self.out.extend_from_slice(&v.to_be_bytes());
            self
        }
        fn i32(&mut self, v: i32) -> &mut Self {
            self.out.extend_from_slice(&v.to_be_bytes());
            self
        }
        fn raw(&mut self, b: &[u8]) -> &mut Self {
            self.out.extend_from_slice(b);
            self
        }
        fn string(&mut self, s: Option<&str>) -> &mut Self {
            match (s, self.flexible) {
                (Some(s), flexible) => put_string(&mut self.out, s, flexible),
                (None, true) => self.out.push(0),
                (None, false) => self.out.extend_from_slice(&(-1i16).to_be_bytes()),
            }
            self
        }
        fn array(&mut self, n: usize) -> &mut Self {
            if self.flexible {
                put_uvarint(&mut self.out, n as u32 + 1);
            } else {
                self.out.extend_from_slice(&(n as i32).to_be_bytes());
            }
            self
        }
        /// One tagged field with tag 0 and the given bytes.
        fn tagged(&mut self, field: &[u8]) -> &mut Self {
            self.out.push(1);
            self.out.push(0);
            put_uvarint(&mut self.out, field.len() as u32);
            self.out.extend_from_slice(field);
            self
        }
        fn no_tags(&mut self) -> &mut Self {
            self.out.push(0);
            self
        }
        fn payload(&self) -> Vec<u8> {
            self.out.clone()
        }
        fn frame(&self) -> Vec<u8> {
            let mut frame = (self.out.len() as i32).to_be_bytes().to_vec();
            frame.extend_from_slice(&self.out);
            frame
        }
    }

    const CID: i32 = 0x0102_0304;

    fn call(api_key: i16, api_version: i16) -> Call {
        Call {
            api_key,
            api_version,
        }
    }

    /// Every broker `host:port` goes to a listener whose port is the broker's + 1000.
    fn plus_1000(host: &str, port: u16) -> Option<SocketAddr> {
        assert!(!host.is_empty());
        Some(SocketAddr::from(([127, 0, 0, 1], port + 1000)))
    }

    /// A Metadata response of `version` advertising `brokers`, with a topic after them
    /// (so the bytes after the brokers must be kept too).
    fn metadata(version: i16, brokers: &[(&str, i32)]) -> Encoder {
        let call = call(METADATA, version);
        let flexible = call.flexible();
        let mut e = Encoder::new(call);
        e.i32(CID);
        if flexible {
            // A header tagged field a broker may add, to be skipped and kept.
            e.tagged(b"hdr");
        }
        if version >= 3 {
            e.i32(7); // throttle time
        }
        e.array(brokers.len());
        for (node, (host, port)) in brokers.iter().enumerate() {
            e.i32(node as i32 + 1).string(Some(host)).i32(*port);
            if version >= 1 {
                e.string(if node == 0 { Some("rack-a") } else { None });
            }
            if flexible {
                e.tagged(&[9, 9]);
            }
        }
        if version >= 2 {
            e.string(Some("cluster-xyz"));
        }
        if version >= 1 {
            e.i32(1); // controller
        }
        // One topic with one partition.
        e.array(1).i16(0);
        if version >= 10 {
            e.raw(&[0xab; 16]); // topic id
        }
        e.string(Some("stream"));
        if version >= 1 {
            e.raw(&[0]); // is internal
        }
        e.array(1).i16(0).i32(0).i32(1);
        if version >= 7 {
            e.i32(3); // leader epoch
        }
        e.array(1).i32(1).array(1).i32(1);
        if version >= 5 {
            e.array(0);
        }
        if flexible {
            e.no_tags();
        }
        if version >= 8 {
            e.i32(i32::MIN); // topic authorized operations
        }
        if flexible {
            e.no_tags();
        }
        if (8..=10).contains(&version) {
            e.i32(i32::MIN); // cluster authorized operations
        }
        if flexible {
            e.no_tags();
        }
        e
    }

    fn find_coordinator(version: i16, coordinators: &[(&str, i32)]) -> Encoder {
        let call = call(FIND_COORDINATOR, version);
        let mut e = Encoder::new(call);
        e.i32(CID);
        if version >= 3 {
            e.no_tags();
        }
        if version >= 1 {
            e.i32(0); // throttle time
        }
        if version <= 3 {
            let (host, port) = coordinators[0];
            e.i16(0);
            if version >= 1 {
                e.string(None);
            }
            e.i32(1).string(Some(host)).i32(port);
            if version == 3 {
                e.no_tags();
            }
        } else {
            e.array(coordinators.len());
            for (i, (host, port)) in coordinators.iter().enumerate() {
                e.string(Some(&format!("group-{i}")))
                    .i32(i as i32)
                    .string(Some(host))
                    .i32(*port)
                    .i16(if *port < 0 { 15 } else { 0 })
                    .string(if *port < 0 {
                        Some("not available")
                    } else {
                        None
                    })
                    .no_tags();
            }
            e.no_tags();
        }
        e
    }

    #[test]
    fn request_heads_give_the_correlation_id_and_the_call() {
        let head = [0, 3, 0, 12, 0, 0, 1, 2];
        assert_eq!(Call::of_request(head), (258, call(METADATA, 12)));
        assert!(call(METADATA, 12).advertises_brokers());
        assert!(call(FIND_COORDINATOR, 0).advertises_brokers());
        assert!(!call(API_VERSIONS, 3).advertises_brokers());
    }

    #[test]
    fn response_header_versions_follow_flexibility_except_api_versions() {
        assert!(!call(METADATA, 8).tagged_response_header());
        assert!(call(METADATA, 9).tagged_response_header());
        assert!(!call(FIND_COORDINATOR, 2).tagged_response_header());
        assert!(call(FIND_COORDINATOR, 3).tagged_response_header());
        assert!(call(API_VERSIONS, 3).flexible());
        assert!(!call(API_VERSIONS, 3).tagged_response_header());
    }

    #[test]
    fn metadata_v0_to_v13_brokers_are_relocated_and_every_other_byte_kept() {
        let upstream = [("broker-1.example", 9092), ("10.0.0.2", 9093)];
        let local = [("127.0.0.1", 10092), ("127.0.0.1", 10093)];
        for version in 0..=13 {
            let response = metadata(version, &upstream);
            let call = call(METADATA, version);
            let found = advertised(call, &response.payload()).unwrap();
            let found: Vec<(&str, i32)> = found.iter().map(|b| (&*b.host, b.port)).collect();
            assert_eq!(found, upstream, "v{version}");
            let frame = relocate(call, &response.payload(), plus_1000).unwrap();
            assert_eq!(frame, metadata(version, &local).frame(), "v{version}");
        }
    }

    #[test]
    fn metadata_v1_frame_is_resized() {
        let response = metadata(1, &[("kafka-0.kafka.svc.cluster.local", 9092)]).payload();
        let frame = relocate(call(METADATA, 1), &response, plus_1000).unwrap();
        let size = i32::from_be_bytes(frame[..4].try_into().unwrap());
        assert_eq!(size as usize, frame.len() - 4);
        assert_eq!(
            size as usize,
            response.len() - "kafka-0.kafka.svc.cluster.local".len() + 9
        );
    }

    #[test]
    fn metadata_v12_host_longer_than_one_varint_byte_is_replaced() {
        // A 200-byte host has a two-byte compact length; 127.0.0.1 has a one-byte one.
        let long = "h".repeat(200);
        let response = metadata(12, &[(&long, 9092)]);
        let frame = relocate(call(METADATA, 12), &response.payload(), plus_1000).unwrap();
        assert_eq!(frame, metadata(12, &[("127.0.0.1", 10092)]).frame());
        assert_eq!(frame.len(), response.frame().len() - 200 - 2 + 9 + 1);
    }

    #[test]
    fn metadata_v9_with_no_brokers_is_kept_as_is() {
        let response = metadata(9, &[]);
        let frame = relocate(call(METADATA, 9), &response.payload(), plus_1000).unwrap();
        assert_eq!(frame, response.frame());
    }

    #[test]
    fn brokers_without_a_local_listener_keep_their_address() {
        let response = metadata(12, &[("a", 1), ("b", 2)]);
        let only_b = |host: &str, port: u16| (host == "b").then(|| plus_1000(host, port))?;
        let frame = relocate(call(METADATA, 12), &response.payload(), only_b).unwrap();
        assert_eq!(
            frame,
            metadata(12, &[("a", 1), ("127.0.0.1", 1002)]).frame()
        );
    }

    #[test]
    fn find_coordinator_v0_to_v3_coordinator_is_relocated() {
        for version in 0..=3 {
            let response = find_coordinator(version, &[("broker-1.example", 9092)]);
            let call = call(FIND_COORDINATOR, version);
            let frame = relocate(call, &response.payload(), plus_1000).unwrap();
            assert_eq!(
                frame,
                find_coordinator(version, &[("127.0.0.1", 10092)]).frame(),
                "v{version}"
            );
        }
    }

    #[test]
    fn find_coordinator_v4_to_v6_coordinators_are_relocated_but_errors_kept() {
        for version in 4..=6 {
            let upstream = [("broker-1.example", 9092), ("", -1), ("10.0.0.2", 9093)];
            let local = [("127.0.0.1", 10092), ("", -1), ("127.0.0.1", 10093)];
            let call = call(FIND_COORDINATOR, version);
            let response = find_coordinator(version, &upstream);
            let frame = relocate(call, &response.payload(), plus_1000).unwrap();
            assert_eq!(
                frame,
                find_coordinator(version, &local).frame(),
                "v{version}"
            );
        }
    }

    #[test]
    fn find_coordinator_v1_error_answer_is_kept() {
        let response = find_coordinator(1, &[("", -1)]);
        let frame = relocate(call(FIND_COORDINATOR, 1), &response.payload(), plus_1000).unwrap();
        assert_eq!(frame, response.frame());
    }

    #[test]
    fn other_apis_are_kept_byte_for_byte() {
        let payload = [0, 0, 0, 1, 0, 0, 0, 0, 0xff, 0xfe];
        let frame = relocate(call(API_VERSIONS, 3), &payload, plus_1000).unwrap();
        assert_eq!(&frame[..4], &10i32.to_be_bytes());
        assert_eq!(&frame[4..], &payload);
    }

    #[test]
    fn truncated_responses_are_malformed_not_panics() {
        for version in [1, 9, 12] {
            let call = call(METADATA, version);
            let response = metadata(version, &[("broker-1.example", 9092)]).payload();
            // Cut anywhere up to the end of the port: an error every time.
            let port_end = advertised(call, &response).unwrap()[0].span.end;
            for len in 0..port_end {
                assert!(
                    advertised(call, &response[..len]).is_err(),
                    "v{version} cut at {len}"
                );
            }
        }
        let response = find_coordinator(4, &[("b", 1)]).payload();
        assert!(advertised(call(FIND_COORDINATOR, 4), &response[..response.len() - 4]).is_err());
        let overlong_varint = [0, 0, 0, 1, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01];
        assert!(advertised(call(METADATA, 9), &overlong_varint).is_err());
    }
}
