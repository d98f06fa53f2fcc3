//! Unit tests of request parsing and rendering.

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
