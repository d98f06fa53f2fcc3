//! Property tests of the sans-I/O layers: framing and request parsing never panic on
//! arbitrary input, and a rendered push is a faithful copy of the send it came from.

use bytes::BytesMut;
use proptest::prelude::*;
use reference_broker::codec::{Frame, LineDecoder};
use reference_broker::request::{Delivery, ParseError, Request};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// However the bytes are cut into reads, the decoder yields the same frames, and it
    /// never holds more than the limit plus one read.
    #[test]
    fn framing_is_independent_of_read_boundaries(
        data in proptest::collection::vec(prop_oneof![Just(b'\n'), Just(b'\r'), any::<u8>()], 0..4096),
        cuts in proptest::collection::vec(1usize..300, 1..20),
        limit in 1usize..200,
    ) {
        let mut whole = LineDecoder::new(limit);
        let mut buf = BytesMut::from(&data[..]);
        let expected: Vec<Frame> = std::iter::from_fn(|| whole.decode(&mut buf)).collect();

        let mut pieces = LineDecoder::new(limit);
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        let mut rest = &data[..];
        let mut i = 0;
        while !rest.is_empty() {
            let n = cuts[i % cuts.len()].min(rest.len());
            buf.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            i += 1;
            while let Some(frame) = pieces.decode(&mut buf) {
                got.push(frame);
            }
            prop_assert!(buf.len() <= limit + 300, "buffered {} bytes", buf.len());
        }
        prop_assert_eq!(got, expected);
    }

    /// Arbitrary bytes never panic the parser and always map to a request or one of the
    /// three error classes.
    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = Request::parse(&data);
    }

    /// Arbitrary strings: UTF-8 is never reported as a UTF-8 error.
    #[test]
    fn arbitrary_text_is_never_a_utf8_error(text in ".{0,512}") {
        prop_assert_ne!(Request::parse(text.as_bytes()).err(), Some(ParseError::Utf8));
    }

    /// Send → render → parse as JSON gives back every field plus the index, in order.
    #[test]
    fn rendered_push_round_trips(
        topic in "\\PC{0,40}",
        msg in "\\PC{0,200}",
        one in any::<bool>(),
        key in proptest::option::of("[a-z0-9]{1,8}"),
        index in any::<u64>(),
    ) {
        let mut object = serde_json::Map::new();
        object.insert("command".into(), "send".into());
        object.insert("topic".into(), topic.clone().into());
        object.insert("msg".into(), msg.clone().into());
        object.insert("delivery".into(), if one { "one" } else { "all" }.into());
        if let Some(key) = &key {
            object.insert("key".into(), key.clone().into());
        }
        let line = serde_json::to_string(&object).unwrap();
        let Ok(Request::Send(send)) = Request::parse(line.as_bytes()) else {
            return Err(TestCaseError::fail(format!("not a send: {line}")));
        };
        prop_assert_eq!(send.delivery, if one { Delivery::One } else { Delivery::All });
        let (bytes, _) = send.render(index);
        prop_assert!(bytes.ends_with(b"\r\n"));
        let pushed: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        prop_assert_eq!(&pushed["topic"], &serde_json::Value::from(topic));
        prop_assert_eq!(&pushed["msg"], &serde_json::Value::from(msg));
        prop_assert_eq!(&pushed["index"], &serde_json::Value::from(index));
        // Compact and in the received order: the push is the send line plus the index.
        let expected = format!("{},\"index\":{}}}\r\n", &line[..line.len() - 1], index);
        prop_assert_eq!(String::from_utf8(bytes).unwrap(), expected);
    }
}
