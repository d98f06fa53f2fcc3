use proptest::prelude::*;

use super::*;
use crate::redis_streams::link::server_text;

/// A RESP2 reply, for generating test input.
#[derive(Debug, Clone)]
enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

fn encode(reply: &Reply, out: &mut Vec<u8>) {
    match reply {
        Reply::Simple(s) => out.extend_from_slice(format!("+{s}\r\n").as_bytes()),
        Reply::Error(s) => out.extend_from_slice(format!("-{s}\r\n").as_bytes()),
        Reply::Int(n) => out.extend_from_slice(format!(":{n}\r\n").as_bytes()),
        Reply::Bulk(None) => out.extend_from_slice(b"$-1\r\n"),
        Reply::Bulk(Some(bytes)) => put_bulk(out, bytes),
        Reply::Array(None) => out.extend_from_slice(b"*-1\r\n"),
        Reply::Array(Some(items)) => {
            put_array(out, items.len());
            for item in items {
                encode(item, out);
            }
        }
    }
}

fn replies() -> impl Strategy<Value = Reply> {
    let leaf = prop_oneof![
        "[a-zA-Z0-9 ]{0,20}".prop_map(Reply::Simple),
        "[A-Z]{1,10}( [a-z0-9]{1,8}){0,3}".prop_map(Reply::Error),
        any::<i64>().prop_map(Reply::Int),
        // Bytes of every value, \r and \n included: a bulk string is skipped by length.
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)).prop_map(Reply::Bulk),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        proptest::option::of(proptest::collection::vec(inner, 0..6)).prop_map(Reply::Array)
    })
}

fn bytes(reply: &Reply) -> Vec<u8> {
    let mut out = Vec::new();
    encode(reply, &mut out);
    out
}

proptest! {
    /// A whole reply is found whole, whatever follows it; any strict prefix is
    /// incomplete, never an error; and the redis crate reads the same bytes as one
    /// reply, an error exactly when this parser says so, with the same text.
    #[test]
    fn frames_agree_with_the_redis_crate(reply in replies(), next in replies()) {
        let one = bytes(&reply);
        let found = frame(&one).unwrap().expect("a whole reply");
        prop_assert_eq!(found.len, one.len());
        for cut in 0..one.len() {
            prop_assert_eq!(frame(&one[..cut]), Ok(None), "prefix of {} bytes", cut);
        }
        let mut two = one.clone();
        encode(&next, &mut two);
        prop_assert_eq!(frame(&two).unwrap().map(|f| f.len), Some(one.len()));

        let theirs = ::redis::parse_redis_value(&one).expect("the redis crate reads it");
        match (found.head, theirs) {
            (Head::Error(line), ::redis::Value::ServerError(e)) => {
                prop_assert_eq!(String::from_utf8_lossy(line), server_text(&e));
                prop_assert_eq!(error_code(line), e.code().as_bytes());
            }
            (Head::Value, ::redis::Value::ServerError(e)) => {
                prop_assert!(false, "missed the error {:?}", e);
            }
            (Head::Error(line), other) => {
                prop_assert!(false, "{:?} is not an error: {:?}", String::from_utf8_lossy(line), other);
            }
            (Head::Value, _) => {}
        }
    }
}

#[test]
fn an_entry_id_and_an_error() {
    let buf = b"$15\r\n1700000000000-0\r\n-WRONGTYPE Operation against a key\r\n";
    let first = frame(buf).unwrap().unwrap();
    assert_eq!((first.len, first.head), (22, Head::Value));
    let second = frame(&buf[first.len..]).unwrap().unwrap();
    assert_eq!(
        second.head,
        Head::Error(&b"WRONGTYPE Operation against a key"[..])
    );
    assert_eq!(
        error_code(b"WRONGTYPE Operation against a key"),
        b"WRONGTYPE"
    );
    assert_eq!(error_code(b"ERR"), b"ERR");
}

#[test]
fn nil_and_empty_replies() {
    for (buf, len) in [
        (&b"$-1\r\n"[..], 5),
        (b"*-1\r\n", 5),
        (b"*0\r\n", 4),
        (b"$0\r\n\r\n", 6),
        (b"+\r\n", 3),
        (b"*2\r\n*-1\r\n$-1\r\n:1\r\n", 14),
    ] {
        assert_eq!(frame(buf).unwrap().map(|f| f.len), Some(len), "{buf:?}");
    }
}

#[test]
fn nested_arrays_end_where_their_last_element_ends() {
    // XREADGROUP's shape: [[stream, [[id, [field, value]]]]]
    let buf =
        b"*1\r\n*2\r\n$1\r\nt\r\n*1\r\n*2\r\n$3\r\n1-0\r\n*2\r\n$7\r\npayload\r\n$2\r\nhi\r\n";
    let mut with_more = buf.to_vec();
    with_more.extend_from_slice(b"+OK\r\n");
    assert_eq!(frame(&with_more).unwrap().unwrap().len, buf.len());
    for cut in 0..buf.len() {
        assert_eq!(frame(&buf[..cut]), Ok(None), "{cut}");
    }
}

#[test]
fn a_lone_carriage_return_waits_for_its_line_feed() {
    assert_eq!(frame(b"+OK\r"), Ok(None));
    assert_eq!(frame(b"$2\r\nab\r"), Ok(None));
    assert_eq!(frame(b""), Ok(None));
}

#[test]
fn bytes_that_are_not_resp_are_malformed() {
    for buf in [
        &b"?what\r\n"[..],
        b"+OK\rX",
        b"$2\r\nabcd\r\n",
        b"$-2\r\n",
        b"$x\r\n",
        b"*-5\r\n",
        b":12a\r\n",
        b"\r\n",
    ] {
        assert!(frame(buf).is_err(), "{buf:?}");
    }
    let long = vec![b'+'; MAX_LINE + 10];
    assert!(frame(&long).is_err());
    let deep = "*1\r\n".repeat(MAX_DEPTH + 1);
    assert!(frame(deep.as_bytes()).is_err());
}

#[test]
fn commands_are_arrays_of_bulk_strings() {
    let mut out = Vec::new();
    put_array(&mut out, 3);
    put_bulk(&mut out, b"XADD");
    put_bulk(&mut out, b"");
    put_bulk_decimal(&mut out, 1024);
    assert_eq!(out, b"*3\r\n$4\r\nXADD\r\n$0\r\n\r\n$4\r\n1024\r\n");
}
