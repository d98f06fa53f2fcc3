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
