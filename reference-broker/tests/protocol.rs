//! Black-box tests of the reference broker over real TCP sockets, one or more per rule
//! of `PROTOCOL.md` (plus the wire choices of `notes/broker-api.md` where the protocol
//! is silent). Every reply is checked byte for byte, `\r\n` included, and in order
//! where the protocol defines the order.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use common::{
    BAD_JSON, BAD_UTF8, Broker, Client, DUPLICATE, IO_TIMEOUT, MALFORMED, Read, SLOW_CONSUMER,
    SUCCESS, TOO_LONG, json, pushed, redelivered, send_cmd,
};
use tokio::time::{Instant, sleep};

/// A harmless command used to prove a connection is still usable after an error.
const STILL_USABLE: &str = r#"{"command":"unsubscribe","topic":"still-usable"}"#;

/// Sends `line` (plus `\n`), expects `reply`, then proves the connection still works.
async fn expect_reply_then_usable(client: &mut Client, line: &[u8], reply: &str) {
    client.send_bytes(line).await;
    let got = client.recv().await;
    assert_eq!(
        got,
        reply,
        "reply to line {:?}",
        String::from_utf8_lossy(line)
    );
    client.call(STILL_USABLE, SUCCESS).await;
}

/// A send command of exactly `len` bytes (no terminator) on topic `topic`.
fn send_of_len(topic: &str, len: usize) -> String {
    let head = format!(r#"{{"command":"send","topic":"{topic}","msg":""#);
    let tail = r#"","delivery":"all"}"#;
    let pad = len
        .checked_sub(head.len() + tail.len())
        .expect("length leaves room for the command");
    let line = format!("{head}{}{tail}", "x".repeat(pad));
    assert_eq!(line.len(), len);
    line
}

/// Waits until the server has dropped `client` after its `quit` / close and the
/// connection count says so.
async fn wait_connections(observer: &mut Client, want: u64) {
    observer.wait_for_stat("connections", want).await;
}

// ---------------------------------------------------------------------------
// Transport
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lf_and_crlf_line_endings_are_both_accepted() {
    let broker = Broker::start().await;
    let mut c = broker.connect("c").await;
    c.write_raw(b"{\"command\":\"subscribe\",\"topic\":\"t\"}\n")
        .await;
    c.expect(SUCCESS).await;
    c.write_raw(b"{\"command\":\"subscribe\",\"topic\":\"u\"}\r\n")
        .await;
    c.expect(SUCCESS).await;
    // The `\r` is dropped before parsing: it never leaks into the pushed object.
    let send = send_cmd("u", "crlf", "all");
    c.write_raw(format!("{send}\r\n").as_bytes()).await;
    c.expect_lines(&[&pushed(&send, 0), SUCCESS]).await;
    c.expect_no_line().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_lines_are_ignored() {
    let broker = Broker::start().await;
    let mut c = broker.connect("c").await;
    c.write_raw(b"\n").await;
    c.write_raw(b"\r\n").await;
    c.write_raw(b"\n\n\r\n\n").await;
    c.expect_no_line().await;
    c.write_raw(b"\n\r\n{\"command\":\"subscribe\",\"topic\":\"t\"}\n\n\r\n")
        .await;
    c.expect(SUCCESS).await;
    c.expect_no_line().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quit_closes_the_connection_without_a_reply() {
    let broker = Broker::start().await;
    let mut a = broker.connect("a").await;
    a.write_raw(b"quit\n").await;
    a.expect_eof().await;

    let mut b = broker.connect("b").await;
    b.write_raw(b"quit\r\n").await;
    b.expect_eof().await;

    // Lines after `quit` in the same write are not processed.
    let mut c = broker.connect("c").await;
    let send = send_cmd("after-quit", "never", "all");
    c.write_raw(
        format!("{{\"command\":\"subscribe\",\"topic\":\"q\"}}\nquit\n{send}\n").as_bytes(),
    )
    .await;
    c.expect(SUCCESS).await;
    c.expect_eof().await;
    let mut d = broker.connect("d").await;
    d.call(r#"{"command":"subscribe","topic":"after-quit"}"#, SUCCESS)
        .await;
    d.expect_no_line().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quit_must_be_exact() {
    let broker = Broker::start().await;
    let mut c = broker.connect("c").await;
    let cases: &[(&[u8], &str)] = &[
        (b"quit ", BAD_JSON),
        (b" quit", BAD_JSON),
        (b"QUIT", BAD_JSON),
        (b"Quit", BAD_JSON),
        (b"quitquit", BAD_JSON),
        (b"\"quit\"", MALFORMED),
        // "quit\r\r\n": one trailing \r is dropped, leaving "quit\r", which is not `quit`.
        (b"quit\r\r", BAD_JSON),
    ];
    for (line, reply) in cases {
        expect_reply_then_usable(&mut c, line, reply).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_commands_in_one_write_are_answered_in_order() {
    let broker = Broker::start().await;
    let mut c = broker.connect("c").await;
    let s0 = send_cmd("t", "first", "all");
    let s1 = send_cmd("t", "second", "all");
    let batch = format!(
        "{{\"command\":\"subscribe\",\"topic\":\"t\"}}\n{s0}\r\nnot json\n{s1}\n{{\"command\":\"unsubscribe\",\"topic\":\"t\"}}\n{}\n",
        send_cmd("t", "third", "all")
    );
    c.write_raw(batch.as_bytes()).await;
    c.expect_lines(&[
        SUCCESS,
        &pushed(&s0, 0),
        SUCCESS,
        BAD_JSON,
        &pushed(&s1, 1),
        SUCCESS,
        SUCCESS,
        SUCCESS,
    ])
    .await;
    c.expect_no_line().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_split_across_writes_is_reassembled() {
    let broker = Broker::start().await;
    let mut c = broker.connect("c").await;
    c.write_raw(b"{\"comm").await;
    c.expect_no_line().await;
    c.write_raw(b"and\":\"subscribe\",\"to").await;
    sleep(Duration::from_millis(20)).await;
    c.write_raw(b"pic\":\"t\"}\r").await;
    c.expect_no_line().await;
    c.write_raw(b"\n").await;
    c.expect(SUCCESS).await;

    // A multi-byte UTF-8 character split between two writes.
    let send = send_cmd("t", "caf\u{e9}", "all");
    let bytes = send.as_bytes();
    let cut = send.find('\u{e9}').expect("é present") + 1; // between 0xC3 and 0xA9
    c.write_raw(&bytes[..cut]).await;
    sleep(Duration::from_millis(20)).await;
    c.write_raw(&bytes[cut..]).await;
    sleep(Duration::from_millis(20)).await;
    c.write_raw(b"\n").await;
    c.expect_lines(&[&pushed(&send, 0), SUCCESS]).await;

    // Byte by byte.
    for &b in br#"{"command":"unsubscribe","topic":"t"}"# {
        c.write_raw(&[b]).await;
    }
    c.write_raw(b"\n").await;
    c.expect(SUCCESS).await;
    c.expect_no_line().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_server_line_ends_with_crlf() {
    let broker = Broker::start().await;
    let mut c = broker.connect("c").await;
    let exact = |s: &str| format!("{s}\r\n").into_bytes();
    c.send(r#"{"command":"subscribe","topic":"t"}"#).await;
    assert_eq!(c.recv_raw().await, exact(SUCCESS));
    c.send("nope").await;
    assert_eq!(c.recv_raw().await, exact(BAD_JSON));
    c.send("[]").await;
    assert_eq!(c.recv_raw().await, exact(MALFORMED));
    c.send_bytes(b"\xff").await;
    assert_eq!(c.recv_raw().await, exact(BAD_UTF8));
    let send = send_cmd("t", "m", "all");
    c.send(&send).await;
    assert_eq!(c.recv_raw().await, exact(&pushed(&send, 0)));
    assert_eq!(c.recv_raw().await, exact(SUCCESS));
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_is_rejected_and_connection_stays_usable() {
    let broker = Broker::start().await;
    let mut c = broker.connect("c").await;
    let cases: &[&[u8]] = &[
        b"\xff",
        b"\xff\xfe",
        b"{\"command\":\"subscribe\",\"topic\":\"\xc3\"}",
        b"{\"command\":\"subscribe\",\"topic\":\"a\xa9b\"}",
        b"\xc0\xaf",         // overlong encoding of '/'
        b"\xed\xa0\x80",     // UTF-16 surrogate encoded in UTF-8
        b"\xf4\x90\x80\x80", // above U+10FFFF
        b"quit\xff",
        b"\xc3", // truncated multi-byte sequence at end of line
    ];
    for line in cases {
        expect_reply_then_usable(&mut c, line, BAD_UTF8).await;
    }
    // Same with a CRLF terminator.
    c.write_raw(b"\xfe\xff\r\n").await;
    c.expect(BAD_UTF8).await;
    c.call(STILL_USABLE, SUCCESS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_json_is_rejected_and_connection_stays_usable() {
    let broker = Broker::start().await;
    let mut c = broker.connect("c").await;
    let cases = [
        "hello",
        "{",
        "}",
        r#"{"command":"subscribe","topic":"a""#, // truncated object
        r#"{"command":"subscribe","topic":"#,    // truncated value
        r#"{"command":"subscribe","topic":"a"}}"#, // trailing garbage
        r#"{"command":"subscribe","topic":"a"} x"#, // trailing garbage
        r#"{"command":"subscribe","topic":"a"}{"command":"stats"}"#, // two objects
        r#"{"command":"subscribe","topic":"a",}"#, // trailing comma
        r#"{command:"subscribe","topic":"a"}"#,  // unquoted key
        r#"{'command':'subscribe','topic':'a'}"#, // single quotes
        r#"{"command":"subscribe","topic":"a\q"}"#, // bad escape
        "{\"command\":\"subscribe\",\"topic\":\"a\u{1}\"}", // raw control char in string
        r#"{"command":"subscribe","topic":"a","last_seen":NaN}"#,
        "   ",  // whitespace only
        "\t",   // whitespace only
        " \t ", // whitespace only
        "nul",
        "tru",
        "\u{feff}{\"command\":\"subscribe\",\"topic\":\"a\"}", // byte order mark
        "\r\r", // sent as "\r\r\n": one \r is dropped, the other is left
    ];
    for line in cases {
        expect_reply_then_usable(&mut c, line.as_bytes(), BAD_JSON).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_surrounded_by_whitespace_is_still_json() {
    let broker = Broker::start().await;
    let mut c = broker.connect("c").await;
    c.call("  {\"command\":\"subscribe\",\"topic\":\"t\"}  ", SUCCESS)
        .await;
    c.call(
        "\t{ \"command\" : \"unsubscribe\" , \"topic\" : \"t\" }\t",
        SUCCESS,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_that_is_not_a_valid_command_is_malformed() {
    let broker = Broker::start().await;
    let mut c = broker.connect("c").await;
    let cases = [
        // Top level not an object.
        "[]",
        r#"[{"command":"subscribe","topic":"a"}]"#,
        "1",
        "-2.5",
        r#""subscribe""#,
        "null",
        "true",
        // Command missing / unknown / wrong type.
        "{}",
        r#"{"topic":"a"}"#,
        r#"{"command":"publish","topic":"a"}"#,
        r#"{"command":"Subscribe","topic":"a"}"#,
        r#"{"command":"","topic":"a"}"#,
        r#"{"command":1,"topic":"a"}"#,
        r#"{"command":null,"topic":"a"}"#,
        r#"{"command":["subscribe"],"topic":"a"}"#,
        r#"{"command":{"name":"subscribe"},"topic":"a"}"#,
        // subscribe: topic missing / not a string.
        r#"{"command":"subscribe"}"#,
        r#"{"command":"subscribe","topic":1}"#,
        r#"{"command":"subscribe","topic":null}"#,
        r#"{"command":"subscribe","topic":["a"]}"#,
        r#"{"command":"subscribe","topic":{"a":1}}"#,
        r#"{"command":"subscribe","topic":true}"#,
        // subscribe: cache not a boolean.
        r#"{"command":"subscribe","topic":"a","cache":"false"}"#,
        r#"{"command":"subscribe","topic":"a","cache":0}"#,
        r#"{"command":"subscribe","topic":"a","cache":null}"#,
        // subscribe: last_seen not an integer.
        r#"{"command":"subscribe","topic":"a","last_seen":1.5}"#,
        r#"{"command":"subscribe","topic":"a","last_seen":1.0}"#,
        r#"{"command":"subscribe","topic":"a","last_seen":"3"}"#,
        r#"{"command":"subscribe","topic":"a","last_seen":null}"#,
        r#"{"command":"subscribe","topic":"a","last_seen":true}"#,
        r#"{"command":"subscribe","topic":"a","last_seen":[1]}"#,
        r#"{"command":"subscribe","topic":"a","last_seen":1e3}"#,
        // subscribe: keys not allowed.
        r#"{"command":"subscribe","topic":"a","msg":"x"}"#,
        r#"{"command":"subscribe","topic":"a","delivery":"all"}"#,
        r#"{"command":"subscribe","topic":"a","index":0}"#,
        r#"{"command":"subscribe","topic":"a","key":"k"}"#,
        r#"{"command":"subscribe","topic":"a","id":"i"}"#,
        r#"{"command":"subscribe","topic":"a","foo":1}"#,
        // unsubscribe: exactly command and topic.
        r#"{"command":"unsubscribe"}"#,
        r#"{"command":"unsubscribe","topic":7}"#,
        r#"{"command":"unsubscribe","topic":null}"#,
        r#"{"command":"unsubscribe","topic":"a","cache":true}"#,
        r#"{"command":"unsubscribe","topic":"a","last_seen":0}"#,
        r#"{"command":"unsubscribe","topic":"a","msg":"x"}"#,
        r#"{"command":"unsubscribe","topic":"a","ack":true}"#,
        // send: required keys missing.
        r#"{"command":"send","topic":"a","delivery":"all"}"#,
        r#"{"command":"send","topic":"a","msg":"x"}"#,
        r#"{"command":"send","msg":"x","delivery":"all"}"#,
        r#"{"command":"send"}"#,
        // send: wrong types / bad values.
        r#"{"command":"send","topic":1,"msg":"x","delivery":"all"}"#,
        r#"{"command":"send","topic":"a","msg":1,"delivery":"all"}"#,
        r#"{"command":"send","topic":"a","msg":null,"delivery":"all"}"#,
        r#"{"command":"send","topic":"a","msg":{"x":1},"delivery":"all"}"#,
        r#"{"command":"send","topic":"a","msg":["x"],"delivery":"all"}"#,
        r#"{"command":"send","topic":"a","msg":"x","delivery":"some"}"#,
        r#"{"command":"send","topic":"a","msg":"x","delivery":"ALL"}"#,
        r#"{"command":"send","topic":"a","msg":"x","delivery":"One"}"#,
        r#"{"command":"send","topic":"a","msg":"x","delivery":""}"#,
        r#"{"command":"send","topic":"a","msg":"x","delivery":1}"#,
        r#"{"command":"send","topic":"a","msg":"x","delivery":null}"#,
        r#"{"command":"send","topic":"a","msg":"x","delivery":"all","cache":"true"}"#,
        r#"{"command":"send","topic":"a","msg":"x","delivery":"all","cache":1}"#,
        r#"{"command":"send","topic":"a","msg":"x","delivery":"all","cache":null}"#,
        // send: keys not allowed.
        r#"{"command":"send","topic":"a","msg":"x","delivery":"all","last_seen":0}"#,
        r#"{"command":"send","topic":"a","msg":"x","delivery":"all","index":0}"#,
        r#"{"command":"send","topic":"a","msg":"x","delivery":"all","ack":true}"#,
        r#"{"command":"send","topic":"a","msg":"x","delivery":"all","foo":"bar"}"#,
        // Duplicate keys.
        r#"{"command":"subscribe","topic":"a","topic":"a"}"#,
        r#"{"command":"subscribe","topic":"a","topic":"b"}"#,
        r#"{"command":"subscribe","command":"subscribe","topic":"a"}"#,
        r#"{"command":"unsubscribe","topic":"a","topic":"a"}"#,
        r#"{"command":"send","topic":"a","msg":"x","msg":"y","delivery":"all"}"#,
        r#"{"command":"send","topic":"a","msg":"x","delivery":"all","cache":true,"cache":true}"#,
        // Extension keys with wrong types.
        r#"{"command":"send","topic":"a","msg":"x","delivery":"one","key":1}"#,
        r#"{"command":"send","topic":"a","msg":"x","delivery":"one","key":null}"#,
        r#"{"command":"send","topic":"a","msg":"x","delivery":"all","id":1}"#,
        r#"{"command":"send","topic":"a","msg":"x","delivery":"all","id":null}"#,
        r#"{"command":"subscribe","topic":"a","ack":"yes"}"#,
        r#"{"command":"subscribe","topic":"a","ack":null}"#,
        // stats: no other key.
        r#"{"command":"stats","topic":"a"}"#,
        // ack / nack: exactly command, topic, index (an integer).
        r#"{"command":"ack","topic":"a"}"#,
        r#"{"command":"ack","index":0}"#,
        r#"{"command":"ack","topic":"a","index":"0"}"#,
        r#"{"command":"ack","topic":"a","index":0.5}"#,
        r#"{"command":"ack","topic":"a","index":null}"#,
        r#"{"command":"ack","topic":"a","index":0,"msg":"x"}"#,
        r#"{"command":"nack","topic":"a"}"#,
        r#"{"command":"nack","topic":"a","index":0,"cache":false}"#,
    ];
    for line in cases {
        expect_reply_then_usable(&mut c, line.as_bytes(), MALFORMED).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_commands_have_no_effect() {
    let broker = Broker::start_with(|c| c.cache_size = 3).await;
    let mut sub = broker.connect("sub").await;
    let mut pubr = broker.connect("pub").await;
    // A malformed subscribe does not subscribe.
    sub.call(r#"{"command":"subscribe","topic":"t","foo":1}"#, MALFORMED)
        .await;
    // Malformed sends consume no index and are neither delivered nor cached.
    pubr.call(
        r#"{"command":"send","topic":"t","msg":"bad","delivery":"all","foo":1}"#,
        MALFORMED,
    )
    .await;
    pubr.call(
        r#"{"command":"send","topic":"t","msg":"bad","delivery":"every"}"#,
        MALFORMED,
    )
    .await;
    sub.expect_no_line().await;
    let good = send_cmd("t", "good", "all");
    pubr.call(&good, SUCCESS).await;
    sub.call(r#"{"command":"subscribe","topic":"t"}"#, SUCCESS)
        .await;
    sub.expect(&pushed(&good, 0)).await;
    sub.expect_no_line().await;
    // A rejected send does not register its id for dedup.
    pubr.call(
        r#"{"command":"send","topic":"t","msg":"bad","delivery":"all","id":"z","foo":1}"#,
        MALFORMED,
    )
    .await;
    let with_id = r#"{"command":"send","topic":"t","msg":"ok","delivery":"all","id":"z"}"#;
    pubr.call(with_id, SUCCESS).await;
    sub.expect(&pushed(with_id, 1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_seen_accepts_the_whole_i64_range() {
    let broker = Broker::start().await;
    let mut pubr = broker.connect("pub").await;
    let s = send_cmd("t", "x", "all");
    pubr.call(&s, SUCCESS).await;
    let mut c = broker.connect("c").await;
    c.call(
        r#"{"command":"subscribe","topic":"t","last_seen":9223372036854775807}"#,
        SUCCESS,
    )
    .await;
    c.expect_no_line().await;
    c.call(
        r#"{"command":"subscribe","topic":"t","last_seen":-9223372036854775808}"#,
        SUCCESS,
    )
    .await;
    c.expect(&pushed(&s, 0)).await;
    c.expect_no_line().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_size_zero_keeps_nothing() {
    let broker = Broker::start_with(|c| c.cache_size = 0).await;
    let mut pubr = broker.connect("pub").await;
    pubr.call(&send_cmd("t", "a", "all"), SUCCESS).await;
    pubr.call(&send_cmd("t", "o", "one"), SUCCESS).await;
    let mut sub = broker.connect("sub").await;
    sub.call(r#"{"command":"subscribe","topic":"t"}"#, SUCCESS)
        .await;
    sub.expect_no_line().await;
    // Indexes still advance.
    let s = send_cmd("t", "live", "all");
    pubr.call(&s, SUCCESS).await;
    sub.expect(&pushed(&s, 2)).await;
    assert_eq!(sub.stats().await["cached"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishers_get_unique_contiguous_indexes_pushed_in_order() {
    const PUBLISHERS: usize = 4;
    const EACH: usize = 100;
    let broker = Broker::start().await;
    let mut sub = broker.connect("sub").await;
    sub.call(r#"{"command":"subscribe","topic":"t"}"#, SUCCESS)
        .await;
    let mut tasks = Vec::new();
    for p in 0..PUBLISHERS {
        let mut client = broker.connect(&format!("pub{p}")).await;
        tasks.push(tokio::spawn(async move {
            // All in one write: the broker sees them as fast as it can read.
            let mut batch = String::new();
            for i in 0..EACH {
                batch.push_str(&send_cmd("t", &format!("p{p}-{i}"), "all"));
                batch.push('\n');
            }
            client.write_raw(batch.as_bytes()).await;
            for _ in 0..EACH {
                client.expect(SUCCESS).await;
            }
        }));
    }
    for task in tasks {
        task.await.expect("publisher task");
    }
    let pushes = sub.drain().await;
    assert_eq!(pushes.len(), PUBLISHERS * EACH);
    let mut next_per_publisher = [0usize; PUBLISHERS];
    for (expected_index, push) in pushes.iter().enumerate() {
        let v = json(push);
        assert_eq!(
            v["index"].as_u64(),
            Some(expected_index as u64),
            "pushes of one topic arrive in index order without gaps"
        );
        // Each publisher's own messages keep their order.
        let msg = v["msg"].as_str().expect("msg");
        let (p, i) = msg[1..].split_once('-').expect("p<n>-<i>");
        let (p, i): (usize, usize) = (p.parse().expect("p"), i.parse().expect("i"));
        assert_eq!(i, next_per_publisher[p], "publisher {p} reordered");
        next_per_publisher[p] += 1;
        assert_eq!(
            *push,
            pushed(&send_cmd("t", msg, "all"), expected_index as u64)
        );
    }
}

// ---------------------------------------------------------------------------
// Line length limit
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn line_too_long_is_discarded_and_connection_stays_usable() {
    const LIMIT: usize = 1024;
    let broker = Broker::start_with(|c| c.max_line_bytes = LIMIT).await;
    let mut c = broker.connect("c").await;
    c.call(r#"{"command":"subscribe","topic":"big"}"#, SUCCESS)
        .await;

    // Exactly the limit: accepted.
    let at_limit = send_of_len("big", LIMIT);
    call_expecting_push(&mut c, &at_limit, 0).await;

    // Exactly the limit counting a trailing "\r" (LIMIT - 1 bytes + "\r\n"): accepted.
    let under = send_of_len("big", LIMIT - 1);
    c.write_raw(format!("{under}\r\n").as_bytes()).await;
    c.expect_lines(&[&pushed(&under, 1), SUCCESS]).await;

    // One byte over: refused, not delivered, no index used.
    let over = send_of_len("big", LIMIT + 1);
    expect_reply_then_usable(&mut c, over.as_bytes(), TOO_LONG).await;
    // Over only because of the "\r" (LIMIT bytes + "\r\n").
    c.write_raw(format!("{at_limit}\r\n").as_bytes()).await;
    c.expect(TOO_LONG).await;
    c.call(STILL_USABLE, SUCCESS).await;

    // Much longer, arriving in several writes, with invalid UTF-8 and no JSON inside.
    c.write_raw(&[b'a'; 1500]).await;
    c.write_raw(&[0xff; 1500]).await;
    c.write_raw(&[b'{'; 1500]).await;
    c.write_raw(b"\n").await;
    c.expect(TOO_LONG).await;
    c.call(STILL_USABLE, SUCCESS).await;

    // Two long lines then a good one, all in one write: one answer each, in order.
    let mut batch = vec![b'x'; 3000];
    batch.push(b'\n');
    batch.extend_from_slice(&[b'y'; 2000]);
    batch.extend_from_slice(b"\r\n");
    let next = send_cmd("big", "after", "all");
    batch.extend_from_slice(next.as_bytes());
    batch.push(b'\n');
    c.write_raw(&batch).await;
    c.expect_lines(&[TOO_LONG, TOO_LONG, &pushed(&next, 2), SUCCESS])
        .await;
    c.expect_no_line().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_limit_is_one_mebibyte() {
    const MIB: usize = 1 << 20;
    let broker = Broker::start().await;
    let mut c = broker.connect("c").await;
    // 2 MiB line: refused.
    let mut huge = vec![b'a'; 2 * MIB];
    huge.push(b'\n');
    c.write_raw(&huge).await;
    c.expect(TOO_LONG).await;
    c.call(STILL_USABLE, SUCCESS).await;
    // 1 MiB + 1: refused.
    expect_reply_then_usable(&mut c, send_of_len("big", MIB + 1).as_bytes(), TOO_LONG).await;
    // Exactly 1 MiB: accepted and delivered intact.
    c.call(r#"{"command":"subscribe","topic":"big"}"#, SUCCESS)
        .await;
    let at_limit = send_of_len("big", MIB);
    call_expecting_push(&mut c, &at_limit, 0).await;
}

/// Sends `send` while subscribed to its topic: expects the push (index `index`) and
/// then the success reply.
async fn call_expecting_push(client: &mut Client, send: &str, index: u64) {
    client.send(send).await;
    client.expect_lines(&[&pushed(send, index), SUCCESS]).await;
}

// ---------------------------------------------------------------------------
// Core semantics
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_protocol_example_works_byte_for_byte() {
    let broker = Broker::start().await;
    let mut a = broker.connect("A").await;
    let mut b = broker.connect("B").await;
    a.write_raw(b"{\"command\":\"subscribe\",\"topic\":\"room_123\"}\n")
        .await;
    assert_eq!(a.recv_raw().await, b"{\"success\":true}\r\n");
    b.write_raw(
        b"{\"command\":\"send\",\"topic\":\"room_123\",\"msg\":\"Hi\",\"delivery\":\"all\"}\n",
    )
    .await;
    assert_eq!(b.recv_raw().await, b"{\"success\":true}\r\n");
    assert_eq!(
        a.recv_raw().await,
        b"{\"command\":\"send\",\"topic\":\"room_123\",\"msg\":\"Hi\",\"delivery\":\"all\",\"index\":0}\r\n"
    );
    a.expect_no_line().await;
    b.expect_no_line().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indexes_start_at_zero_and_are_independent_per_topic() {
    let broker = Broker::start().await;
    let mut sub = broker.connect("sub").await;
    let mut pubr = broker.connect("pub").await;
    sub.call(r#"{"command":"subscribe","topic":"t1"}"#, SUCCESS)
        .await;
    sub.call(r#"{"command":"subscribe","topic":"t2"}"#, SUCCESS)
        .await;
    let sends = [
        (send_cmd("t1", "a", "all"), 0),
        (send_cmd("t2", "b", "all"), 0),
        (send_cmd("t1", "c", "one"), 1),
        (send_cmd("t1", "d", "all"), 2),
        (send_cmd("t2", "e", "one"), 1),
        (send_cmd("t3", "f", "all"), 0), // nobody subscribed: index used all the same
        (send_cmd("t1", "g", "all"), 3),
    ];
    for (send, _) in &sends {
        pubr.call(send, SUCCESS).await;
    }
    for (send, index) in sends.iter().filter(|(s, _)| !s.contains(r#""t3""#)) {
        sub.expect(&pushed(send, *index)).await;
    }
    sub.expect_no_line().await;
    // t3's message was cached with index 0.
    let mut late = broker.connect("late").await;
    late.call(r#"{"command":"subscribe","topic":"t3"}"#, SUCCESS)
        .await;
    late.expect(&pushed(&sends[5].0, 0)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_object_is_the_send_object_reserialised_with_index_last() {
    let broker = Broker::start().await;
    let mut sub = broker.connect("sub").await;
    let mut pubr = broker.connect("pub").await;
    sub.call(r#"{"command":"subscribe","topic":"t"}"#, SUCCESS)
        .await;

    let cases: &[(&str, &str)] = &[
        // Key order preserved, extension keys kept.
        (
            r#"{"topic":"t","command":"send","msg":"x","delivery":"all","key":"k"}"#,
            r#"{"topic":"t","command":"send","msg":"x","delivery":"all","key":"k","index":0}"#,
        ),
        // Whitespace dropped: compact re-serialisation.
        (
            r#"{ "command" : "send", "topic":"t",	"msg": "hi there" , "delivery":"all" }"#,
            r#"{"command":"send","topic":"t","msg":"hi there","delivery":"all","index":1}"#,
        ),
        // cache:true kept as received.
        (
            r#"{"delivery":"all","msg":"m","cache":true,"topic":"t","command":"send"}"#,
            r#"{"delivery":"all","msg":"m","cache":true,"topic":"t","command":"send","index":2}"#,
        ),
        // Strings re-escaped the serde_json way.
        (
            r#"{"command":"send","topic":"t","msg":"q\"b\\s\/n\nt\tu\u00e9c\u0001","delivery":"all"}"#,
            "{\"command\":\"send\",\"topic\":\"t\",\"msg\":\"q\\\"b\\\\s/n\\nt\\tu\u{e9}c\\u0001\",\"delivery\":\"all\",\"index\":3}",
        ),
        // Raw non-ASCII passes through unchanged.
        (
            "{\"command\":\"send\",\"topic\":\"t\",\"msg\":\"h\u{e9}llo \u{65e5}\u{672c} \u{1f600}\",\"delivery\":\"all\"}",
            "{\"command\":\"send\",\"topic\":\"t\",\"msg\":\"h\u{e9}llo \u{65e5}\u{672c} \u{1f600}\",\"delivery\":\"all\",\"index\":4}",
        ),
        // Escaped non-ASCII (surrogate pair) is re-serialised raw.
        (
            r#"{"command":"send","topic":"t","msg":"\ud83d\ude00","delivery":"one"}"#,
            "{\"command\":\"send\",\"topic\":\"t\",\"msg\":\"\u{1f600}\",\"delivery\":\"one\",\"index\":5}",
        ),
        // id kept too.
        (
            r#"{"command":"send","topic":"t","msg":"","delivery":"all","id":"abc"}"#,
            r#"{"command":"send","topic":"t","msg":"","delivery":"all","id":"abc","index":6}"#,
        ),
    ];
    for (send, push) in cases {
        pubr.call(send, SUCCESS).await;
        sub.expect(push).await;
    }
    sub.expect_no_line().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_all_reaches_every_subscriber_and_the_sender_push_precedes_its_reply() {
    let broker = Broker::start().await;
    let mut a = broker.connect("A").await;
    let mut b = broker.connect("B").await;
    let mut c = broker.connect("C").await;
    let mut outsider = broker.connect("outsider").await;
    for client in [&mut a, &mut b, &mut c] {
        client
            .call(r#"{"command":"subscribe","topic":"t"}"#, SUCCESS)
            .await;
    }
    // The sender is subscribed: its push comes before its success reply.
    let s0 = send_cmd("t", "from-a", "all");
    a.send(&s0).await;
    a.expect_lines(&[&pushed(&s0, 0), SUCCESS]).await;
    b.expect(&pushed(&s0, 0)).await;
    c.expect(&pushed(&s0, 0)).await;
    // A sender that is not subscribed gets only the reply.
    let s1 = send_cmd("t", "from-outsider", "all");
    outsider.call(&s1, SUCCESS).await;
    for client in [&mut a, &mut b, &mut c] {
        client.expect(&pushed(&s1, 1)).await;
        client.expect_no_line().await;
    }
    outsider.expect_no_line().await;
    // A subscriber of another topic gets nothing.
    outsider
        .call(r#"{"command":"subscribe","topic":"other"}"#, SUCCESS)
        .await;
    let s2 = send_cmd("t", "x", "all");
    a.send(&s2).await;
    a.expect_lines(&[&pushed(&s2, 2), SUCCESS]).await;
    b.expect(&pushed(&s2, 2)).await;
    c.expect(&pushed(&s2, 2)).await;
    outsider.expect_no_line().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sender_that_is_the_only_subscriber_gets_its_one_message_before_the_reply() {
    let broker = Broker::start().await;
    let mut a = broker.connect("A").await;
    a.call(r#"{"command":"subscribe","topic":"t"}"#, SUCCESS)
        .await;
    let s = send_cmd("t", "self", "one");
    a.send(&s).await;
    a.expect_lines(&[&pushed(&s, 0), SUCCESS]).await;
    a.expect_no_line().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_one_reaches_exactly_one_random_subscriber() {
    const MESSAGES: u64 = 200;
    let broker = Broker::start().await;
    let mut subs = Vec::new();
    for name in ["S0", "S1", "S2"] {
        let mut s = broker.connect(name).await;
        s.call(r#"{"command":"subscribe","topic":"work"}"#, SUCCESS)
            .await;
        subs.push(s);
    }
    let mut pubr = broker.connect("pub").await;
    for i in 0..MESSAGES {
        pubr.call(&send_cmd("work", &format!("m{i}"), "one"), SUCCESS)
            .await;
    }
    let mut owner: BTreeMap<u64, usize> = BTreeMap::new();
    let mut per_sub = Vec::new();
    for (n, s) in subs.iter_mut().enumerate() {
        let lines = s.drain().await;
        per_sub.push(lines.len());
        let mut last = None;
        for line in lines {
            let v = json(&line);
            let index = v["index"].as_u64().expect("index");
            assert_eq!(
                line,
                pushed(&send_cmd("work", &format!("m{index}"), "one"), index)
            );
            assert!(
                last < Some(index),
                "{}: pushes out of index order",
                s.name()
            );
            last = Some(index);
            assert!(
                owner.insert(index, n).is_none(),
                "message {index} delivered twice"
            );
        }
    }
    assert_eq!(
        owner.len() as u64,
        MESSAGES,
        "every message delivered exactly once"
    );
    assert_eq!(
        owner.keys().copied().collect::<Vec<_>>(),
        (0..MESSAGES).collect::<Vec<_>>()
    );
    let receivers = per_sub.iter().filter(|&&n| n > 0).count();
    assert!(
        receivers > 1,
        "random choice sent everything to one subscriber: {per_sub:?}"
    );
    // Handed-out `one` messages are not cached.
    let mut late = broker.connect("late").await;
    late.call(r#"{"command":"subscribe","topic":"work"}"#, SUCCESS)
        .await;
    late.expect_no_line().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_come_into_being_when_first_named() {
    let broker = Broker::start().await;
    let mut c = broker.connect("c").await;
    assert_eq!(c.stats().await["topics"], 0);
    c.call(r#"{"command":"subscribe","topic":"by-subscribe"}"#, SUCCESS)
        .await;
    assert_eq!(c.stats().await["topics"], 1);
    c.call(
        r#"{"command":"unsubscribe","topic":"by-unsubscribe"}"#,
        SUCCESS,
    )
    .await;
    assert_eq!(c.stats().await["topics"], 2);
    c.call(&send_cmd("by-send", "x", "all"), SUCCESS).await;
    assert_eq!(c.stats().await["topics"], 3);
    // Naming them again creates nothing new.
    c.call(r#"{"command":"subscribe","topic":"by-send"}"#, SUCCESS)
        .await;
    c.expect(&pushed(&send_cmd("by-send", "x", "all"), 0)).await;
    c.call(
        r#"{"command":"unsubscribe","topic":"by-subscribe"}"#,
        SUCCESS,
    )
    .await;
    assert_eq!(c.stats().await["topics"], 3);
    // A new topic's first send gets index 0.
    c.call(r#"{"command":"subscribe","topic":"fresh"}"#, SUCCESS)
        .await;
    let s = send_cmd("fresh", "first", "all");
    call_expecting_push(&mut c, &s, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_keeps_the_last_c_messages_and_replays_them_in_order_after_the_reply() {
    let broker = Broker::start_with(|c| c.cache_size = 3).await;
    let mut pubr = broker.connect("pub").await;
    let sends: Vec<String> = (0..5)
        .map(|i| send_cmd("t", &format!("m{i}"), "all"))
        .collect();
    for s in &sends {
        pubr.call(s, SUCCESS).await;
    }
    let mut sub = broker.connect("sub").await;
    sub.call(r#"{"command":"subscribe","topic":"t"}"#, SUCCESS)
        .await;
    sub.expect_lines(&[
        &pushed(&sends[2], 2),
        &pushed(&sends[3], 3),
        &pushed(&sends[4], 4),
    ])
    .await;
    sub.expect_no_line().await;
    // Still cached ("all" stays): a second subscriber gets the same replay.
    let mut sub2 = broker.connect("sub2").await;
    sub2.call(
        r#"{"command":"subscribe","topic":"t","cache":true}"#,
        SUCCESS,
    )
    .await;
    sub2.expect_lines(&[
        &pushed(&sends[2], 2),
        &pushed(&sends[3], 3),
        &pushed(&sends[4], 4),
    ])
    .await;
    sub2.expect_no_line().await;
    // Live pushes continue from the next index.
    let s5 = send_cmd("t", "m5", "all");
    pubr.call(&s5, SUCCESS).await;
    sub.expect(&pushed(&s5, 5)).await;
    sub2.expect(&pushed(&s5, 5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_seen_filters_the_replay() {
    let broker = Broker::start_with(|c| c.cache_size = 3).await;
    let mut pubr = broker.connect("pub").await;
    let sends: Vec<String> = (0..5)
        .map(|i| send_cmd("t", &format!("m{i}"), "all"))
        .collect();
    for s in &sends {
        pubr.call(s, SUCCESS).await;
    }
    let p = |i: usize| pushed(&sends[i], i as u64);
    let cases: &[(&str, &[usize])] = &[
        (
            r#"{"command":"subscribe","topic":"t","last_seen":2}"#,
            &[3, 4],
        ),
        (r#"{"command":"subscribe","topic":"t","last_seen":3}"#, &[4]),
        (r#"{"command":"subscribe","topic":"t","last_seen":4}"#, &[]),
        (
            r#"{"command":"subscribe","topic":"t","last_seen":100}"#,
            &[],
        ),
        (
            r#"{"command":"subscribe","topic":"t","last_seen":0}"#,
            &[2, 3, 4],
        ),
        (
            r#"{"command":"subscribe","topic":"t","last_seen":-1}"#,
            &[2, 3, 4],
        ),
        (
            r#"{"command":"subscribe","topic":"t","last_seen":-7}"#,
            &[2, 3, 4],
        ),
        (r#"{"command":"subscribe","topic":"t"}"#, &[2, 3, 4]),
        (
            r#"{"last_seen":1,"topic":"t","command":"subscribe","cache":true}"#,
            &[2, 3, 4],
        ),
        (
            r#"{"command":"subscribe","topic":"t","last_seen":2,"cache":false}"#,
            &[],
        ),
    ];
    for (n, (line, want)) in cases.iter().enumerate() {
        let mut sub = broker.connect(&format!("sub{n}")).await;
        sub.call(line, SUCCESS).await;
        for &i in *want {
            sub.expect(&p(i)).await;
        }
        sub.expect_no_line().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_with_cache_false_is_delivered_but_not_cached() {
    let broker = Broker::start_with(|c| c.cache_size = 3).await;
    let mut live = broker.connect("live").await;
    let mut pubr = broker.connect("pub").await;
    live.call(r#"{"command":"subscribe","topic":"t"}"#, SUCCESS)
        .await;
    let s0 = send_cmd("t", "kept", "all");
    let s1 = r#"{"command":"send","topic":"t","msg":"transient","delivery":"all","cache":false}"#;
    let s2 = r#"{"command":"send","topic":"t","msg":"kept too","delivery":"all","cache":true}"#;
    let s3 =
        r#"{"command":"send","topic":"t","msg":"transient one","delivery":"one","cache":false}"#;
    for s in [s0.as_str(), s1, s2] {
        pubr.call(s, SUCCESS).await;
    }
    live.expect_lines(&[&pushed(&s0, 0), &pushed(s1, 1), &pushed(s2, 2)])
        .await;
    // An unhanded `one` with cache:false is dropped, not kept.
    live.call(r#"{"command":"unsubscribe","topic":"t"}"#, SUCCESS)
        .await;
    pubr.call(s3, SUCCESS).await;
    let mut late = broker.connect("late").await;
    late.call(r#"{"command":"subscribe","topic":"t"}"#, SUCCESS)
        .await;
    late.expect_lines(&[&pushed(&s0, 0), &pushed(s2, 2)]).await;
    late.expect_no_line().await;
    live.expect_no_line().await;
    // cache:false on a send does not evict anything either.
    for i in 0..3 {
        pubr.call(
            &format!(
                r#"{{"command":"send","topic":"t","msg":"f{i}","delivery":"all","cache":false}}"#
            ),
            SUCCESS,
        )
        .await;
    }
    late.drain().await;
    let mut later = broker.connect("later").await;
    later
        .call(r#"{"command":"subscribe","topic":"t"}"#, SUCCESS)
        .await;
    later.expect_lines(&[&pushed(&s0, 0), &pushed(s2, 2)]).await;
    later.expect_no_line().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_with_cache_false_skips_the_replay_but_gets_live_pushes() {
    let broker = Broker::start_with(|c| c.cache_size = 3).await;
    let mut pubr = broker.connect("pub").await;
    pubr.call(&send_cmd("t", "old", "all"), SUCCESS).await;
    pubr.call(&send_cmd("t", "old one", "one"), SUCCESS).await;
    let mut sub = broker.connect("sub").await;
    sub.call(
        r#"{"command":"subscribe","topic":"t","cache":false}"#,
        SUCCESS,
    )
    .await;
    sub.expect_no_line().await;
    let s = send_cmd("t", "new", "all");
    pubr.call(&s, SUCCESS).await;
    sub.expect(&pushed(&s, 2)).await;
    // The skipped `one` message was not consumed: a replaying subscriber still gets it.
    let mut other = broker.connect("other").await;
    other
        .call(r#"{"command":"subscribe","topic":"t"}"#, SUCCESS)
        .await;
    other
        .expect_lines(&[
            &pushed(&send_cmd("t", "old", "all"), 0),
            &pushed(&send_cmd("t", "old one", "one"), 1),
            &pushed(&s, 2),
        ])
        .await;
    other.expect_no_line().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unhanded_one_is_cached_and_consumed_by_the_first_replay() {
    let broker = Broker::start_with(|c| c.cache_size = 3).await;
    let mut pubr = broker.connect("pub").await;
    let s0 = send_cmd("t", "all-0", "all");
    let s1 = send_cmd("t", "one-1", "one");
    let s2 = send_cmd("t", "all-2", "all");
    for s in [&s0, &s1, &s2] {
        pubr.call(s, SUCCESS).await;
    }
    let mut first = broker.connect("first").await;
    first
        .call(r#"{"command":"subscribe","topic":"t"}"#, SUCCESS)
        .await;
    first
        .expect_lines(&[&pushed(&s0, 0), &pushed(&s1, 1), &pushed(&s2, 2)])
        .await;
    first.expect_no_line().await;
    // The `one` message is gone; the `all` ones stay.
    let mut second = broker.connect("second").await;
    second
        .call(r#"{"command":"subscribe","topic":"t"}"#, SUCCESS)
        .await;
    second
        .expect_lines(&[&pushed(&s0, 0), &pushed(&s2, 2)])
        .await;
    second.expect_no_line().await;
    // A replay filtered out by last_seen does not consume a `one` message.
    pubr.call(r#"{"command":"unsubscribe","topic":"t"}"#, SUCCESS)
        .await;
    first
        .call(r#"{"command":"unsubscribe","topic":"t"}"#, SUCCESS)
        .await;
    second
        .call(r#"{"command":"unsubscribe","topic":"t"}"#, SUCCESS)
        .await;
    let s3 = send_cmd("t", "one-3", "one");
    pubr.call(&s3, SUCCESS).await;
    let mut skipper = broker.connect("skipper").await;
    skipper
        .call(
            r#"{"command":"subscribe","topic":"t","last_seen":3}"#,
            SUCCESS,
        )
        .await;
    skipper.expect_no_line().await;
    skipper
        .call(r#"{"command":"unsubscribe","topic":"t"}"#, SUCCESS)
        .await;
    let mut third = broker.connect("third").await;
    third
        .call(
            r#"{"command":"subscribe","topic":"t","last_seen":2}"#,
            SUCCESS,
        )
        .await;
    third.expect(&pushed(&s3, 3)).await;
    third.expect_no_line().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_handed_to_a_subscriber_is_never_cached() {
    let broker = Broker::start_with(|c| c.cache_size = 3).await;
    let mut a = broker.connect("A").await;
    let mut pubr = broker.connect("pub").await;
    a.call(r#"{"command":"subscribe","topic":"t"}"#, SUCCESS)
        .await;
    let s0 = send_cmd("t", "handed", "one");
    let s1 = r#"{"command":"send","topic":"t","msg":"handed, cache true","delivery":"one","cache":true}"#;
    pubr.call(&s0, SUCCESS).await;
    pubr.call(s1, SUCCESS).await;
    a.expect_lines(&[&pushed(&s0, 0), &pushed(s1, 1)]).await;
    let mut late = broker.connect("late").await;
    late.call(r#"{"command":"subscribe","topic":"t"}"#, SUCCESS)
        .await;
    late.expect_no_line().await;
    // A re-subscribe of the receiver does not replay them either.
    a.call(r#"{"command":"subscribe","topic":"t"}"#, SUCCESS)
        .await;
    a.expect_no_line().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resubscribing_is_harmless() {
    let broker = Broker::start_with(|c| c.cache_size = 3).await;
    let mut a = broker.connect("A").await;
    let mut pubr = broker.connect("pub").await;
    a.call(r#"{"command":"subscribe","topic":"t"}"#, SUCCESS)
        .await;
    a.call(
        r#"{"command":"subscribe","topic":"t","cache":false}"#,
        SUCCESS,
    )
    .await;
    let s0 = send_cmd("t", "once", "all");
    pubr.call(&s0, SUCCESS).await;
    // Exactly one push despite two subscribes.
    a.expect(&pushed(&s0, 0)).await;
    a.expect_no_line().await;
    // A re-subscribe replays the cache under the usual rules.
    let s1 = send_cmd("t", "twice", "all");
    pubr.call(&s1, SUCCESS).await;
    a.expect(&pushed(&s1, 1)).await;
    a.call(
        r#"{"command":"subscribe","topic":"t","last_seen":0}"#,
        SUCCESS,
    )
    .await;
    a.expect(&pushed(&s1, 1)).await;
    a.expect_no_line().await;
    // One unsubscribe undoes any number of subscribes.
    a.call(r#"{"command":"unsubscribe","topic":"t"}"#, SUCCESS)
        .await;
    pubr.call(&send_cmd("t", "gone", "all"), SUCCESS).await;
    a.expect_no_line().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_stops_pushes_and_always_succeeds() {
    let broker = Broker::start().await;
    let mut a = broker.connect("A").await;
    let mut b = broker.connect("B").await;
    let mut pubr = broker.connect("pub").await;
    a.call(
        r#"{"command":"unsubscribe","topic":"never-named"}"#,
        SUCCESS,
    )
    .await;
    a.call(r#"{"command":"subscribe","topic":"t"}"#, SUCCESS)
        .await;
    b.call(r#"{"command":"subscribe","topic":"t"}"#, SUCCESS)
        .await;
    b.call(r#"{"command":"unsubscribe","topic":"other"}"#, SUCCESS)
        .await;
    let s0 = send_cmd("t", "both", "all");
    pubr.call(&s0, SUCCESS).await;
    a.expect(&pushed(&s0, 0)).await;
    b.expect(&pushed(&s0, 0)).await;
    a.call(r#"{"command":"unsubscribe","topic":"t"}"#, SUCCESS)
        .await;
    a.call(r#"{"command":"unsubscribe","topic":"t"}"#, SUCCESS)
        .await;
    let s1 = send_cmd("t", "only b", "all");
    pubr.call(&s1, SUCCESS).await;
    b.expect(&pushed(&s1, 1)).await;
    // `one` messages go to the remaining subscriber only.
    for i in 0..20 {
        let s = send_cmd("t", &format!("one {i}"), "one");
        pubr.call(&s, SUCCESS).await;
        b.expect(&pushed(&s, 2 + i)).await;
    }
    a.expect_no_line().await;
    b.expect_no_line().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_connection_leaves_all_its_topics() {
    let broker = Broker::start_with(|c| c.cache_size = 3).await;
    let mut observer = broker.connect("observer").await;
    let mut a = broker.connect("A").await;
    let mut b = broker.connect("B").await;
    let mut pubr = broker.connect("pub").await;
    for t in ["t", "u"] {
        a.call(
            &format!(r#"{{"command":"subscribe","topic":"{t}"}}"#),
            SUCCESS,
        )
        .await;
    }
    b.call(r#"{"command":"subscribe","topic":"t"}"#, SUCCESS)
        .await;
    wait_connections(&mut observer, 4).await;
    // A goes away abruptly (no quit).
    drop(a);
    wait_connections(&mut observer, 3).await;
    for i in 0..20 {
        let s = send_cmd("t", &format!("m{i}"), "one");
        pubr.call(&s, SUCCESS).await;
        b.expect(&pushed(&s, i)).await;
    }
    // Nobody is left on "u": a `one` send is cached for the next subscriber.
    let su = send_cmd("u", "for later", "one");
    pubr.call(&su, SUCCESS).await;
    // B leaves with `quit`; then "t" has no subscriber either.
    b.write_raw(b"quit\n").await;
    b.expect_eof().await;
    wait_connections(&mut observer, 2).await;
    let st = send_cmd("t", "for later", "one");
    pubr.call(&st, SUCCESS).await;
    let mut c = broker.connect("C").await;
    c.call(r#"{"command":"subscribe","topic":"u"}"#, SUCCESS)
        .await;
    c.expect(&pushed(&su, 0)).await;
    c.call(r#"{"command":"subscribe","topic":"t"}"#, SUCCESS)
        .await;
    c.expect(&pushed(&st, 20)).await;
    c.expect_no_line().await;
}

// ---------------------------------------------------------------------------
// Extension: key
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_key_goes_to_the_same_subscriber_while_the_set_is_unchanged() {
    const KEYS: usize = 8;
    const ROUNDS: usize = 50;
    let broker = Broker::start().await;
    let mut subs = Vec::new();
    for n in 0..4 {
        let mut s = broker.connect(&format!("S{n}")).await;
        s.call(r#"{"command":"subscribe","topic":"jobs"}"#, SUCCESS)
            .await;
        subs.push(s);
    }
    let mut pubr = broker.connect("pub").await;
    let line = |round: usize, key: usize| {
        format!(
            r#"{{"command":"send","topic":"jobs","msg":"r{round}","delivery":"one","key":"k{key}"}}"#
        )
    };
    for round in 0..ROUNDS {
        for key in 0..KEYS {
            pubr.call(&line(round, key), SUCCESS).await;
        }
    }
    let mut owners: HashMap<String, BTreeSet<usize>> = HashMap::new();
    let mut seen = BTreeSet::new();
    for (n, s) in subs.iter_mut().enumerate() {
        let mut last_per_key: HashMap<String, u64> = HashMap::new();
        for push in s.drain().await {
            let v = json(&push);
            let index = v["index"].as_u64().expect("index");
            let key = v["key"].as_str().expect("key").to_owned();
            let key_n: usize = key[1..].parse().expect("key number");
            let round = index as usize / KEYS;
            assert_eq!(
                push,
                pushed(&line(round, key_n), index),
                "push is the send plus its index"
            );
            if let Some(prev) = last_per_key.insert(key.clone(), index) {
                assert!(prev < index, "per-key order broken on {}", s.name());
            }
            owners.entry(key).or_default().insert(n);
            assert!(seen.insert(index), "message {index} delivered twice");
        }
    }
    assert_eq!(
        seen.len(),
        KEYS * ROUNDS,
        "every keyed message delivered exactly once"
    );
    assert_eq!(owners.len(), KEYS);
    for (key, set) in &owners {
        assert_eq!(
            set.len(),
            1,
            "key {key} went to several subscribers: {set:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_with_delivery_all_still_reaches_everyone() {
    let broker = Broker::start().await;
    let mut a = broker.connect("A").await;
    let mut b = broker.connect("B").await;
    a.call(r#"{"command":"subscribe","topic":"t"}"#, SUCCESS)
        .await;
    b.call(r#"{"command":"subscribe","topic":"t"}"#, SUCCESS)
        .await;
    let s = r#"{"command":"send","topic":"t","msg":"x","delivery":"all","key":"k"}"#;
    a.send(s).await;
    a.expect_lines(&[&pushed(s, 0), SUCCESS]).await;
    b.expect(&pushed(s, 0)).await;
}

// ---------------------------------------------------------------------------
// Extension: id (idempotent publish)
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_id_is_a_duplicate_not_delivered_cached_or_indexed() {
    let broker = Broker::start_with(|c| c.cache_size = 10).await;
    let mut sub = broker.connect("sub").await;
    let mut pubr = broker.connect("pub").await;
    sub.call(r#"{"command":"subscribe","topic":"t"}"#, SUCCESS)
        .await;
    let first = r#"{"command":"send","topic":"t","msg":"x","delivery":"all","id":"m-1"}"#;
    pubr.call(first, SUCCESS).await;
    sub.expect(&pushed(first, 0)).await;
    // Same id, same or different content, any delivery: duplicate.
    pubr.call(first, DUPLICATE).await;
    pubr.call(
        r#"{"command":"send","topic":"t","msg":"other","delivery":"one","id":"m-1"}"#,
        DUPLICATE,
    )
    .await;
    pubr.call(
        r#"{"id":"m-1","command":"send","topic":"t","msg":"x","delivery":"all","cache":false}"#,
        DUPLICATE,
    )
    .await;
    sub.expect_no_line().await;
    // The next message gets the next index: no index was consumed.
    let next = send_cmd("t", "next", "all");
    pubr.call(&next, SUCCESS).await;
    sub.expect(&pushed(&next, 1)).await;
    // Same id on another topic is not a duplicate.
    sub.call(r#"{"command":"subscribe","topic":"u"}"#, SUCCESS)
        .await;
    let other_topic = r#"{"command":"send","topic":"u","msg":"x","delivery":"all","id":"m-1"}"#;
    pubr.call(other_topic, SUCCESS).await;
    sub.expect(&pushed(other_topic, 0)).await;
    // A different id on the same topic is new.
    let other_id = r#"{"command":"send","topic":"t","msg":"x","delivery":"all","id":"m-2"}"#;
    pubr.call(other_id, SUCCESS).await;
    sub.expect(&pushed(other_id, 2)).await;
    // A duplicate from another connection is still a duplicate.
    let mut third = broker.connect("third").await;
    third.call(first, DUPLICATE).await;
    // The duplicates were not cached.
    let mut late = broker.connect("late").await;
    late.call(r#"{"command":"subscribe","topic":"t"}"#, SUCCESS)
        .await;
    late.expect_lines(&[&pushed(first, 0), &pushed(&next, 1), &pushed(other_id, 2)])
        .await;
    late.expect_no_line().await;
    sub.expect_no_line().await;
    assert_eq!(late.stats().await["duplicates"], 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unhanded_one_with_id_is_deduplicated_too() {
    let broker = Broker::start().await;
    let mut pubr = broker.connect("pub").await;
    let s = r#"{"command":"send","topic":"q","msg":"job","delivery":"one","id":"j1"}"#;
    pubr.call(s, SUCCESS).await;
    pubr.call(s, DUPLICATE).await;
    let mut sub = broker.connect("sub").await;
    sub.call(r#"{"command":"subscribe","topic":"q"}"#, SUCCESS)
        .await;
    sub.expect(&pushed(s, 0)).await;
    sub.expect_no_line().await;
    // Consumed by the replay, yet still inside the window: still a duplicate.
    pubr.call(s, DUPLICATE).await;
    sub.expect_no_line().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedup_window_expires() {
    const WINDOW: Duration = Duration::from_millis(200);
    let broker = Broker::start_with(|c| c.dedup_window = WINDOW).await;
    let mut sub = broker.connect("sub").await;
    let mut pubr = broker.connect("pub").await;
    sub.call(r#"{"command":"subscribe","topic":"t"}"#, SUCCESS)
        .await;
    let s = r#"{"command":"send","topic":"t","msg":"x","delivery":"all","id":"once"}"#;
    let started = Instant::now();
    pubr.call(s, SUCCESS).await;
    let reply = pubr.request(s).await;
    // Both sends landed inside the window unless the machine stalled for most of it;
    // only then is the answer not fixed.
    if started.elapsed() < WINDOW / 2 {
        assert_eq!(reply, DUPLICATE, "second send inside the window");
    }
    sub.expect(&pushed(s, 0)).await;
    let mut next = 1;
    if reply == SUCCESS {
        sub.expect(&pushed(s, 1)).await;
        next = 2;
    } else {
        assert_eq!(reply, DUPLICATE);
    }
    sleep(WINDOW * 3).await;
    // Past the window: the same id is new again.
    pubr.call(s, SUCCESS).await;
    sub.expect(&pushed(s, next)).await;
    sub.expect_no_line().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedup_remembers_at_most_max_ids_per_topic() {
    let broker = Broker::start_with(|c| c.dedup_max_ids = 2).await;
    let mut pubr = broker.connect("pub").await;
    let with_id = |id: &str| {
        format!(r#"{{"command":"send","topic":"t","msg":"x","delivery":"all","id":"{id}"}}"#)
    };
    pubr.call(&with_id("a"), SUCCESS).await;
    pubr.call(&with_id("b"), SUCCESS).await;
    pubr.call(&with_id("c"), SUCCESS).await;
    pubr.call(&with_id("c"), DUPLICATE).await;
    // "a" was the oldest of three ids with room for two: forgotten.
    pubr.call(&with_id("a"), SUCCESS).await;
}

// ---------------------------------------------------------------------------
// Extension: ack / nack / redelivery / dead letters
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_ends_pending_and_unknown_indexes_are_malformed() {
    let broker = Broker::start().await;
    let mut a = broker.connect("A").await;
    let mut plain = broker.connect("plain").await;
    let mut pubr = broker.connect("pub").await;
    a.call(r#"{"command":"subscribe","topic":"t","ack":true}"#, SUCCESS)
        .await;
    plain
        .call(
            r#"{"command":"subscribe","topic":"t","ack":false}"#,
            SUCCESS,
        )
        .await;
    let s = send_cmd("t", "x", "all");
    pubr.call(&s, SUCCESS).await;
    a.expect(&pushed(&s, 0)).await;
    plain.expect(&pushed(&s, 0)).await;
    // Not pending for a subscription without ack, nor for a non-subscriber.
    plain
        .call(r#"{"command":"ack","topic":"t","index":0}"#, MALFORMED)
        .await;
    pubr.call(r#"{"command":"ack","topic":"t","index":0}"#, MALFORMED)
        .await;
    // Unknown indexes / topics.
    a.call(r#"{"command":"ack","topic":"t","index":1}"#, MALFORMED)
        .await;
    a.call(r#"{"command":"nack","topic":"t","index":7}"#, MALFORMED)
        .await;
    a.call(r#"{"command":"ack","topic":"t","index":-1}"#, MALFORMED)
        .await;
    a.call(
        r#"{"command":"ack","topic":"elsewhere","index":0}"#,
        MALFORMED,
    )
    .await;
    // The real one.
    a.call(r#"{"command":"ack","topic":"t","index":0}"#, SUCCESS)
        .await;
    // Once acked it is no longer pending.
    a.call(r#"{"command":"ack","topic":"t","index":0}"#, MALFORMED)
        .await;
    a.call(r#"{"command":"nack","topic":"t","index":0}"#, MALFORMED)
        .await;
    a.call(STILL_USABLE, SUCCESS).await;
    a.expect_no_line().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nack_redelivers_all_to_the_same_subscription_with_attempt() {
    let broker = Broker::start().await;
    let mut a = broker.connect("A").await;
    let mut pubr = broker.connect("pub").await;
    a.call(r#"{"command":"subscribe","topic":"t","ack":true}"#, SUCCESS)
        .await;
    let s = send_cmd("t", "x", "all");
    pubr.call(&s, SUCCESS).await;
    a.expect(&pushed(&s, 0)).await;
    a.send(r#"{"command":"nack","topic":"t","index":0}"#).await;
    a.expect_unordered(&[SUCCESS, &redelivered(&s, 0, 2)]).await;
    a.send(r#"{"command":"nack","topic":"t","index":0}"#).await;
    a.expect_unordered(&[SUCCESS, &redelivered(&s, 0, 3)]).await;
    a.call(r#"{"command":"ack","topic":"t","index":0}"#, SUCCESS)
        .await;
    a.expect_no_line().await;
    let stats = a.stats().await;
    assert_eq!(stats["redelivered"], 2, "stats {stats}");
    // Redeliveries count as pushes.
    assert_eq!(stats["pushed"], 3, "stats {stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resubscribing_with_ack_updates_the_ack_mode() {
    let broker = Broker::start().await;
    let mut a = broker.connect("A").await;
    let mut pubr = broker.connect("pub").await;
    a.call(r#"{"command":"subscribe","topic":"t"}"#, SUCCESS)
        .await;
    let s0 = send_cmd("t", "plain", "all");
    pubr.call(&s0, SUCCESS).await;
    a.expect(&pushed(&s0, 0)).await;
    a.call(r#"{"command":"ack","topic":"t","index":0}"#, MALFORMED)
        .await;
    a.call(
        r#"{"command":"subscribe","topic":"t","ack":true,"cache":false}"#,
        SUCCESS,
    )
    .await;
    let s1 = send_cmd("t", "acked", "all");
    pubr.call(&s1, SUCCESS).await;
    a.expect(&pushed(&s1, 1)).await;
    a.call(r#"{"command":"ack","topic":"t","index":1}"#, SUCCESS)
        .await;
    a.call(
        r#"{"command":"subscribe","topic":"t","ack":false,"cache":false}"#,
        SUCCESS,
    )
    .await;
    let s2 = send_cmd("t", "plain again", "all");
    pubr.call(&s2, SUCCESS).await;
    a.expect(&pushed(&s2, 2)).await;
    a.call(r#"{"command":"ack","topic":"t","index":2}"#, MALFORMED)
        .await;
    a.expect_no_line().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_one_moves_to_another_subscriber_on_unsubscribe() {
    let broker = Broker::start().await;
    let mut a = broker.connect("A").await;
    let mut b = broker.connect("B").await;
    let mut pubr = broker.connect("pub").await;
    a.call(r#"{"command":"subscribe","topic":"t","ack":true}"#, SUCCESS)
        .await;
    let s = send_cmd("t", "job", "one");
    pubr.call(&s, SUCCESS).await;
    a.expect(&pushed(&s, 0)).await;
    b.call(r#"{"command":"subscribe","topic":"t"}"#, SUCCESS)
        .await;
    a.call(r#"{"command":"unsubscribe","topic":"t"}"#, SUCCESS)
        .await;
    b.expect(&redelivered(&s, 0, 2)).await;
    // B subscribed without ack: nothing is pending there.
    b.call(r#"{"command":"ack","topic":"t","index":0}"#, MALFORMED)
        .await;
    a.expect_no_line().await;
    b.expect_no_line().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nacked_one_goes_to_another_subscriber() {
    let broker = Broker::start().await;
    let mut a = broker.connect("A").await;
    let mut b = broker.connect("B").await;
    let mut pubr = broker.connect("pub").await;
    a.call(r#"{"command":"subscribe","topic":"t","ack":true}"#, SUCCESS)
        .await;
    let s = send_cmd("t", "job", "one");
    pubr.call(&s, SUCCESS).await;
    a.expect(&pushed(&s, 0)).await;
    // Pending (handed out): B's subscribe replays nothing.
    b.call(r#"{"command":"subscribe","topic":"t","ack":true}"#, SUCCESS)
        .await;
    b.expect_no_line().await;
    a.call(r#"{"command":"nack","topic":"t","index":0}"#, SUCCESS)
        .await;
    b.expect(&redelivered(&s, 0, 2)).await;
    a.expect_no_line().await;
    // Now pending on B, not on A.
    a.call(r#"{"command":"ack","topic":"t","index":0}"#, MALFORMED)
        .await;
    b.send(r#"{"command":"nack","topic":"t","index":0}"#).await;
    b.expect(SUCCESS).await;
    a.expect(&redelivered(&s, 0, 3)).await;
    a.call(r#"{"command":"ack","topic":"t","index":0}"#, SUCCESS)
        .await;
    a.expect_no_line().await;
    b.expect_no_line().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_one_is_redelivered_when_its_subscriber_disconnects() {
    let broker = Broker::start().await;
    let mut a = broker.connect("A").await;
    let mut b = broker.connect("B").await;
    let mut pubr = broker.connect("pub").await;
    a.call(r#"{"command":"subscribe","topic":"t","ack":true}"#, SUCCESS)
        .await;
    let s0 = send_cmd("t", "acked", "one");
    let s1 = send_cmd("t", "pending", "one");
    pubr.call(&s0, SUCCESS).await;
    pubr.call(&s1, SUCCESS).await;
    a.expect_lines(&[&pushed(&s0, 0), &pushed(&s1, 1)]).await;
    a.call(r#"{"command":"ack","topic":"t","index":0}"#, SUCCESS)
        .await;
    b.call(r#"{"command":"subscribe","topic":"t","ack":true}"#, SUCCESS)
        .await;
    drop(a);
    // Only the unacked one comes back.
    b.expect(&redelivered(&s1, 1, 2)).await;
    b.expect_no_line().await;
    b.call(r#"{"command":"ack","topic":"t","index":1}"#, SUCCESS)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_one_returns_to_the_cache_when_its_last_subscriber_leaves() {
    let broker = Broker::start().await;
    let mut a = broker.connect("A").await;
    let mut pubr = broker.connect("pub").await;
    a.call(r#"{"command":"subscribe","topic":"t","ack":true}"#, SUCCESS)
        .await;
    let s = send_cmd("t", "job", "one");
    pubr.call(&s, SUCCESS).await;
    a.expect(&pushed(&s, 0)).await;
    a.call(r#"{"command":"unsubscribe","topic":"t"}"#, SUCCESS)
        .await;
    // No longer pending for A.
    a.call(r#"{"command":"ack","topic":"t","index":0}"#, MALFORMED)
        .await;
    let mut b = broker.connect("B").await;
    b.call(r#"{"command":"subscribe","topic":"t","ack":true}"#, SUCCESS)
        .await;
    b.expect(&redelivered(&s, 0, 2)).await;
    b.call(r#"{"command":"ack","topic":"t","index":0}"#, SUCCESS)
        .await;
    b.expect_no_line().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_all_is_dropped_when_its_subscriber_leaves() {
    let broker = Broker::start().await;
    let mut a = broker.connect("A").await;
    let mut b = broker.connect("B").await;
    let mut pubr = broker.connect("pub").await;
    a.call(r#"{"command":"subscribe","topic":"t","ack":true}"#, SUCCESS)
        .await;
    b.call(r#"{"command":"subscribe","topic":"t","ack":true}"#, SUCCESS)
        .await;
    let s = send_cmd("t", "fan", "all");
    pubr.call(&s, SUCCESS).await;
    a.expect(&pushed(&s, 0)).await;
    b.expect(&pushed(&s, 0)).await;
    a.call(r#"{"command":"unsubscribe","topic":"t"}"#, SUCCESS)
        .await;
    a.call(r#"{"command":"ack","topic":"t","index":0}"#, MALFORMED)
        .await;
    // B's copy is unaffected and is not handed B a second time.
    b.expect_no_line().await;
    b.call(r#"{"command":"ack","topic":"t","index":0}"#, SUCCESS)
        .await;
    a.call(
        r#"{"command":"subscribe","topic":"t","cache":false,"ack":true}"#,
        SUCCESS,
    )
    .await;
    a.expect_no_line().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_timeout_redelivers_one_to_another_subscriber() {
    const ACK_TIMEOUT: Duration = Duration::from_millis(300);
    let broker = Broker::start_with(|c| c.ack_timeout = ACK_TIMEOUT).await;
    let mut a = broker.connect("A").await;
    let mut b = broker.connect("B").await;
    let mut pubr = broker.connect("pub").await;
    a.call(r#"{"command":"subscribe","topic":"t","ack":true}"#, SUCCESS)
        .await;
    let s = send_cmd("t", "slow job", "one");
    let sent = Instant::now();
    pubr.call(&s, SUCCESS).await;
    a.expect(&pushed(&s, 0)).await;
    b.call(r#"{"command":"subscribe","topic":"t","ack":true}"#, SUCCESS)
        .await;
    b.expect(&redelivered(&s, 0, 2)).await;
    assert!(
        sent.elapsed() >= ACK_TIMEOUT - Duration::from_millis(50),
        "redelivered after {:?}, before the ack timeout",
        sent.elapsed()
    );
    let extra = ack_and_drain(&mut b, 0).await;
    // If B was too slow to ack within the timeout, the message may have moved on
    // again; every such extra line is a later redelivery of the same message.
    for line in &extra {
        let v = json(line);
        assert_eq!(v["index"], 0, "{line}");
        assert_eq!(v["redelivered"], true, "{line}");
    }
    if extra.is_empty() {
        a.expect_no_line_for(ACK_TIMEOUT * 2).await;
        b.expect_no_line().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_timeout_redelivers_all_to_the_same_subscription() {
    const ACK_TIMEOUT: Duration = Duration::from_millis(300);
    let broker = Broker::start_with(|c| c.ack_timeout = ACK_TIMEOUT).await;
    let mut a = broker.connect("A").await;
    let mut pubr = broker.connect("pub").await;
    a.call(r#"{"command":"subscribe","topic":"t","ack":true}"#, SUCCESS)
        .await;
    let s = send_cmd("t", "x", "all");
    let sent = Instant::now();
    pubr.call(&s, SUCCESS).await;
    a.expect(&pushed(&s, 0)).await;
    a.expect(&redelivered(&s, 0, 2)).await;
    assert!(sent.elapsed() >= ACK_TIMEOUT - Duration::from_millis(50));
    let extra = ack_and_drain(&mut a, 0).await;
    if extra.is_empty() {
        a.expect_no_line_for(ACK_TIMEOUT * 2).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_messages_are_pending_for_an_ack_subscription() {
    let broker = Broker::start().await;
    let mut pubr = broker.connect("pub").await;
    let all = send_cmd("t", "kept", "all");
    let one = send_cmd("t", "queued", "one");
    pubr.call(&all, SUCCESS).await;
    pubr.call(&one, SUCCESS).await;
    let mut a = broker.connect("A").await;
    a.call(r#"{"command":"subscribe","topic":"t","ack":true}"#, SUCCESS)
        .await;
    a.expect_lines(&[&pushed(&all, 0), &pushed(&one, 1)]).await;
    let mut b = broker.connect("B").await;
    b.call(
        r#"{"command":"subscribe","topic":"t","ack":true,"cache":false}"#,
        SUCCESS,
    )
    .await;
    a.call(r#"{"command":"ack","topic":"t","index":0}"#, SUCCESS)
        .await;
    // The replayed `one` message is pending on A; a nack moves it to B.
    a.call(r#"{"command":"nack","topic":"t","index":1}"#, SUCCESS)
        .await;
    b.expect(&redelivered(&one, 1, 2)).await;
    b.call(r#"{"command":"ack","topic":"t","index":1}"#, SUCCESS)
        .await;
    a.expect_no_line().await;
    b.expect_no_line().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nacked_one_never_returns_to_the_nacker_while_others_exist() {
    const MESSAGES: u64 = 30;
    let broker = Broker::start().await;
    let mut subs = Vec::new();
    for n in 0..3 {
        let mut s = broker.connect(&format!("S{n}")).await;
        s.call(r#"{"command":"subscribe","topic":"t","ack":true}"#, SUCCESS)
            .await;
        subs.push(s);
    }
    let mut pubr = broker.connect("pub").await;
    for i in 0..MESSAGES {
        pubr.call(&send_cmd("t", &format!("m{i}"), "one"), SUCCESS)
            .await;
    }
    // First deliveries.
    let mut first: BTreeMap<u64, usize> = BTreeMap::new();
    for (n, s) in subs.iter_mut().enumerate() {
        for push in s.drain().await {
            let index = json(&push)["index"].as_u64().expect("index");
            assert_eq!(
                push,
                pushed(&send_cmd("t", &format!("m{index}"), "one"), index)
            );
            assert!(first.insert(index, n).is_none(), "{index} delivered twice");
        }
    }
    assert_eq!(first.len() as u64, MESSAGES);
    // Every receiver nacks what it got; redeliveries may interleave with the replies.
    let mut second: BTreeMap<u64, usize> = BTreeMap::new();
    let record = |n: usize, line: &str, second: &mut BTreeMap<u64, usize>| {
        let index = json(line)["index"].as_u64().expect("index");
        assert_eq!(
            line,
            redelivered(&send_cmd("t", &format!("m{index}"), "one"), index, 2)
        );
        assert!(
            second.insert(index, n).is_none(),
            "{index} redelivered twice"
        );
    };
    for (n, s) in subs.iter_mut().enumerate() {
        let mine: Vec<u64> = first
            .iter()
            .filter(|(_, o)| **o == n)
            .map(|(i, _)| *i)
            .collect();
        for index in &mine {
            s.send(&format!(
                r#"{{"command":"nack","topic":"t","index":{index}}}"#
            ))
            .await;
        }
        let mut replies = 0;
        while replies < mine.len() {
            let line = s.recv().await;
            if line == SUCCESS {
                replies += 1;
            } else {
                record(n, &line, &mut second);
            }
        }
    }
    for (n, s) in subs.iter_mut().enumerate() {
        for line in s.drain().await {
            record(n, &line, &mut second);
        }
    }
    assert_eq!(
        second.len() as u64,
        MESSAGES,
        "every nacked message redelivered once"
    );
    for (index, n) in &second {
        assert_ne!(
            first[index], *n,
            "message {index} redelivered to the subscriber that nacked it"
        );
    }
}

/// Acks `index` on topic "t" and reads until the success reply, returning any lines
/// (later redeliveries racing the ack) that came before it.
async fn ack_and_drain(client: &mut Client, index: u64) -> Vec<String> {
    client
        .send(&format!(
            r#"{{"command":"ack","topic":"t","index":{index}}}"#
        ))
        .await;
    let mut extra = Vec::new();
    loop {
        let line = client.recv().await;
        if line == SUCCESS {
            return extra;
        }
        extra.push(line);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_max_attempts_a_message_is_dead_lettered_exactly_once() {
    let broker = Broker::start_with(|c| c.max_attempts = 3).await;
    let mut a = broker.connect("A").await;
    let mut dlq = broker.connect("dlq").await;
    let mut pubr = broker.connect("pub").await;
    a.call(r#"{"command":"subscribe","topic":"t","ack":true}"#, SUCCESS)
        .await;
    dlq.call(r#"{"command":"subscribe","topic":"$dlq.t"}"#, SUCCESS)
        .await;
    // Index 0 is a normal, acked message, so the dead letter's original_index is 1.
    let s0 = send_cmd("t", "fine", "all");
    pubr.call(&s0, SUCCESS).await;
    a.expect(&pushed(&s0, 0)).await;
    a.call(r#"{"command":"ack","topic":"t","index":0}"#, SUCCESS)
        .await;
    // Keys deliberately out of the usual order: "topic" is replaced in place.
    let s1 = r#"{"msg":"poison","topic":"t","delivery":"one","command":"send","key":"k"}"#;
    pubr.call(s1, SUCCESS).await;
    a.expect(&pushed(s1, 1)).await;
    let nack = r#"{"command":"nack","topic":"t","index":1}"#;
    a.send(nack).await;
    a.expect_unordered(&[SUCCESS, &redelivered(s1, 1, 2)]).await;
    a.send(nack).await;
    a.expect_unordered(&[SUCCESS, &redelivered(s1, 1, 3)]).await;
    // Attempt 4 would exceed max_attempts = 3: dead-lettered instead.
    a.call(nack, SUCCESS).await;
    dlq.expect(
        r#"{"msg":"poison","topic":"$dlq.t","delivery":"one","command":"send","key":"k","index":0,"original_topic":"t","original_index":1,"attempts":3}"#,
    )
    .await;
    a.call(r#"{"command":"ack","topic":"t","index":1}"#, MALFORMED)
        .await;
    a.expect_no_line().await;
    dlq.expect_no_line().await;
    // Dead-letter topic's "one" message was handed out: not cached.
    let mut late = broker.connect("late").await;
    late.call(r#"{"command":"subscribe","topic":"$dlq.t"}"#, SUCCESS)
        .await;
    late.expect_no_line().await;
    let stats = late.stats().await;
    assert_eq!(stats["dead_lettered"], 1, "stats {stats}");
    assert_eq!(stats["redelivered"], 2, "stats {stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_timeouts_count_as_attempts_and_dead_letter_into_the_cache() {
    const ACK_TIMEOUT: Duration = Duration::from_millis(300);
    let broker = Broker::start_with(|c| {
        c.ack_timeout = ACK_TIMEOUT;
        c.max_attempts = 3;
    })
    .await;
    let mut a = broker.connect("A").await;
    let mut pubr = broker.connect("pub").await;
    a.call(r#"{"command":"subscribe","topic":"t","ack":true}"#, SUCCESS)
        .await;
    let s = send_cmd("t", "ignored", "all");
    pubr.call(&s, SUCCESS).await;
    // Never acked: three attempts, then silence.
    a.expect_lines(&[
        &pushed(&s, 0),
        &redelivered(&s, 0, 2),
        &redelivered(&s, 0, 3),
    ])
    .await;
    let mut observer = broker.connect("observer").await;
    observer.wait_for_stat("dead_lettered", 1).await;
    a.expect_no_line_for(ACK_TIMEOUT * 2).await;
    // Nobody listened on the dead-letter topic: it was cached there ("all" stays).
    let dead = r#"{"command":"send","topic":"$dlq.t","msg":"ignored","delivery":"all","index":0,"original_topic":"t","original_index":0,"attempts":3}"#;
    for name in ["D1", "D2"] {
        let mut d = broker.connect(name).await;
        d.call(r#"{"command":"subscribe","topic":"$dlq.t"}"#, SUCCESS)
            .await;
        d.expect(dead).await;
        d.expect_no_line().await;
    }
    assert_eq!(observer.stats().await["dead_lettered"], 1);
}

// ---------------------------------------------------------------------------
// Extension: stats
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_reply_shape_and_counters() {
    let broker = Broker::start_with(|c| c.cache_size = 3).await;
    let mut a = broker.connect("A").await;
    a.call(
        r#"{"command":"stats"}"#,
        r#"{"success":true,"stats":{"connections":1,"topics":0,"messages_accepted":0,"pushed":0,"cached":0,"duplicates":0,"redelivered":0,"dead_lettered":0,"slow_consumer_disconnects":0}}"#,
    )
    .await;
    let mut b = broker.connect("B").await;
    a.call(r#"{"command":"subscribe","topic":"s1"}"#, SUCCESS)
        .await;
    let m0 = send_cmd("s1", "a", "all");
    let m1 = send_cmd("s1", "b", "all");
    b.call(&m0, SUCCESS).await;
    b.call(&m1, SUCCESS).await;
    let one = send_cmd("s2", "queued", "one");
    b.call(&one, SUCCESS).await;
    let with_id = r#"{"command":"send","topic":"s1","msg":"c","delivery":"all","id":"x"}"#;
    b.call(with_id, SUCCESS).await;
    b.call(with_id, DUPLICATE).await;
    b.call(r#"{"command":"send","topic":"s1","msg":"bad"}"#, MALFORMED)
        .await;
    a.expect_lines(&[&pushed(&m0, 0), &pushed(&m1, 1), &pushed(with_id, 2)])
        .await;
    // 3 connections, topics s1 s2, 4 accepted, 3 pushed, cache: s1 has 3, s2 has 1.
    let mut c = broker.connect("C").await;
    c.call(
        r#"{"command":"stats"}"#,
        r#"{"success":true,"stats":{"connections":3,"topics":2,"messages_accepted":4,"pushed":3,"cached":4,"duplicates":1,"redelivered":0,"dead_lettered":0,"slow_consumer_disconnects":0}}"#,
    )
    .await;
    // The replay consumes s2's `one` message and pushes 1.
    c.call(r#"{"command":"subscribe","topic":"s2"}"#, SUCCESS)
        .await;
    c.expect(&pushed(&one, 0)).await;
    // Two more on s1 (cap 3 evicts), one to s3 with cache:false and nobody listening.
    b.call(&send_cmd("s1", "d", "all"), SUCCESS).await;
    b.call(
        r#"{"command":"send","topic":"s3","msg":"e","delivery":"all","cache":false}"#,
        SUCCESS,
    )
    .await;
    a.drain().await; // creates topic "barrier"
    drop(b);
    c.wait_for_stat("connections", 2).await;
    c.call(
        r#"{"command":"stats"}"#,
        r#"{"success":true,"stats":{"connections":2,"topics":4,"messages_accepted":6,"pushed":5,"cached":3,"duplicates":1,"redelivered":0,"dead_lettered":0,"slow_consumer_disconnects":0}}"#,
    )
    .await;
}

// ---------------------------------------------------------------------------
// Limits and overload
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_over_the_limit_is_closed_at_once() {
    let broker = Broker::start_with(|c| c.max_connections = 2).await;
    let mut a = broker.connect("A").await;
    let mut b = broker.connect("B").await;
    a.call(r#"{"command":"subscribe","topic":"t"}"#, SUCCESS)
        .await;
    b.call(r#"{"command":"subscribe","topic":"t"}"#, SUCCESS)
        .await;
    let mut c = broker.connect("C").await;
    c.expect_eof().await;
    // The two existing ones keep working.
    let s = send_cmd("t", "still here", "all");
    a.send(&s).await;
    a.expect_lines(&[&pushed(&s, 0), SUCCESS]).await;
    b.expect(&pushed(&s, 0)).await;
    assert_eq!(b.stats().await["connections"], 2);
    // Once one leaves, a new connection is accepted again.
    a.write_raw(b"quit\n").await;
    a.expect_eof().await;
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        let mut d = broker.connect("D").await;
        d.send(STILL_USABLE).await;
        match d.read_within(IO_TIMEOUT).await {
            Read::Line(line) => {
                assert_eq!(line, format!("{SUCCESS}\r\n").into_bytes());
                break;
            }
            Read::Eof(_) => {
                assert!(Instant::now() < deadline, "a freed slot was never reused");
                sleep(Duration::from_millis(20)).await;
            }
            Read::Timeout => panic!("D: neither accepted nor closed"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_does_not_read_is_disconnected_as_slow_consumer() {
    const QUEUE: usize = 64 * 1024;
    const BATCH: usize = 50;
    const MAX_BATCHES: usize = 400; // 20,000 x 8 KiB = 160 MiB: far past any socket buffers
    let broker = Broker::start_with(|c| c.outbound_queue_bytes = QUEUE).await;
    let mut slow = broker.connect("slow").await;
    slow.call(r#"{"command":"subscribe","topic":"flood"}"#, SUCCESS)
        .await;
    let mut pubr = broker.connect("pub").await;
    let payload = "p".repeat(8 * 1024);
    let send = send_cmd("flood", &payload, "all");
    let mut batch = String::new();
    for _ in 0..BATCH {
        batch.push_str(&send);
        batch.push('\n');
    }
    let mut disconnected = false;
    for _ in 0..MAX_BATCHES {
        pubr.write_raw(batch.as_bytes()).await;
        for _ in 0..BATCH {
            pubr.expect(SUCCESS).await;
        }
        if pubr.stats().await["slow_consumer_disconnects"] == 1 {
            disconnected = true;
            break;
        }
    }
    assert!(
        disconnected,
        "a subscriber that never reads was never disconnected"
    );
    // What the slow subscriber does get: whole pushes in index order, maybe the
    // "Slow consumer" line, then EOF.
    let mut next_index = 0;
    let mut saw_goodbye = false;
    loop {
        match slow.read_within(IO_TIMEOUT).await {
            Read::Line(line) => {
                assert!(!saw_goodbye, "lines after the slow-consumer notice");
                let text = String::from_utf8(line).expect("UTF-8");
                let body = text.strip_suffix("\r\n").expect("CRLF");
                if body == SLOW_CONSUMER {
                    saw_goodbye = true;
                    continue;
                }
                let v = json(body);
                let index = v["index"].as_u64().expect("a push");
                assert!(index >= next_index, "pushes out of order");
                assert_eq!(body, pushed(&send, index));
                next_index = index + 1;
            }
            Read::Eof(rest) => {
                // A dropped queue may leave the last push cut short, but only when no
                // notice followed it (the notice must be a whole line of its own).
                let rest = String::from_utf8_lossy(&rest).into_owned();
                let template = pushed(&send, next_index);
                let stem = template.split(r#","index":"#).next().expect("stem");
                let is_cut_push = stem.starts_with(&rest) || rest.starts_with(stem);
                assert!(
                    rest.is_empty() || (!saw_goodbye && is_cut_push),
                    "garbage before EOF: {:?}",
                    rest.chars().take(200).collect::<String>()
                );
                break;
            }
            Read::Timeout => panic!("slow consumer was counted but its connection stays open"),
        }
    }
    // The publisher is unaffected.
    pubr.call(STILL_USABLE, SUCCESS).await;
    pubr.wait_for_stat("connections", 1).await;
    let stats = pubr.stats().await;
    assert_eq!(stats["slow_consumer_disconnects"], 1, "stats {stats}");
}

// ---------------------------------------------------------------------------
// Shutdown
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_future_stops_the_broker_and_closes_connections() {
    let broker = Broker::start_with(|c| c.shutdown_grace = Duration::from_secs(1)).await;
    let addr = broker.addr;
    let mut a = broker.connect("A").await;
    a.call(r#"{"command":"subscribe","topic":"t"}"#, SUCCESS)
        .await;
    broker
        .shutdown(IO_TIMEOUT)
        .await
        .expect("run() returns Ok after shutdown");
    a.expect_eof().await;
    // No longer accepting: connect is refused, or the connection is closed at once.
    match tokio::time::timeout(IO_TIMEOUT, tokio::net::TcpStream::connect(addr)).await {
        Ok(Err(_)) => {}
        Ok(Ok(mut stream)) => {
            let mut buf = [0u8; 64];
            let read = tokio::time::timeout(
                IO_TIMEOUT,
                tokio::io::AsyncReadExt::read(&mut stream, &mut buf),
            )
            .await
            .expect("a connection to a stopped broker stays open");
            assert!(
                matches!(read, Ok(0) | Err(_)),
                "a stopped broker answered: {read:?}"
            );
        }
        Err(_) => panic!("connect to a stopped broker hung"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_exits_zero_on_sigterm_and_sigint() {
    for signal in ["-TERM", "-INT"] {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_reference-broker"))
            .args(["--bind", "127.0.0.1", "--port", "0"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn reference-broker");
        let stderr = child.stderr.take().expect("stderr piped");
        let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stderr));
        let addr = loop {
            let line = tokio::time::timeout(IO_TIMEOUT, lines.next_line())
                .await
                .expect("no 'listening on' line in time")
                .expect("read stderr")
                .expect("stderr closed before 'listening on'");
            // "listening on ADDR", possibly after a program-name prefix.
            if let Some(addr) = line.trim().split("listening on ").nth(1) {
                break addr
                    .parse::<std::net::SocketAddr>()
                    .expect("listening address");
            }
        };
        // Keep draining stderr so the child never blocks on it.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let mut c = Client::connect(addr, "bin").await;
        c.call(r#"{"command":"subscribe","topic":"t"}"#, SUCCESS)
            .await;
        let pid = child.id().expect("child pid").to_string();
        let status = tokio::process::Command::new("kill")
            .args([signal, &pid])
            .status()
            .await
            .expect("run kill");
        assert!(status.success());
        let exit = tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .expect("broker did not exit after the signal")
            .expect("wait");
        assert!(exit.success(), "exit status after {signal}: {exit:?}");
        c.expect_eof().await;
    }
}
