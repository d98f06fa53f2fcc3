//! The codec's tests: the lines it writes, the lines it reads, and the scanner and the
//! usual-line shortcut held to serde's decoding.

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
    let line = br#"{"command":"send","topic":"room","msg":"Hi there","delivery":"all","index":3}"#;
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
