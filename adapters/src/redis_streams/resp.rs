//! The slice of RESP2 (the Redis serialization protocol) the hot paths speak directly,
//! without the redis crate: writing commands as arrays of bulk strings, and finding where
//! each reply ends and whether it is an error. Sans-I/O: bytes in, positions out.
//!
//! ```text
//! command:  *3\r\n $4\r\nXADD\r\n $1\r\nt\r\n $1\r\n*\r\n      (spaces only for reading)
//! replies:  +OK\r\n   -ERR message\r\n   :42\r\n   $15\r\n1700000000000-0\r\n   $-1\r\n
//!           *2\r\n ... \r\n (nested: elements follow)   *-1\r\n
//! ```
//!
//! Why not the redis crate here: its parser builds a `Value` tree (an allocation per
//! string) for every reply, and its `Cmd` an allocation per argument; a publisher only
//! needs "confirmed, or this error", thousands of times per round trip.

use std::fmt;

/// Longest header line (`$<len>`, `*<count>`, `:<int>`) or simple string / error line
/// accepted. Redis keeps its own lines short; a longer one means the stream is not RESP.
const MAX_LINE: usize = 64 * 1024;

/// Deepest nesting of arrays accepted in one reply. Redis replies nest a handful of levels.
const MAX_DEPTH: usize = 64;

/// What a complete reply starts with: enough to tell a confirmation from a refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Head<'a> {
    /// `-<line>`: an error reply, its line without the `-` (`WRONGTYPE Operation ...`).
    Error(&'a [u8]),
    /// Anything else: a simple or bulk string (maybe nil), an integer, an array.
    Value,
}

/// One complete reply at the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Frame<'a> {
    /// Bytes the reply takes, its final `\r\n` included.
    pub(super) len: usize,
    pub(super) head: Head<'a>,
}

/// Bytes that are not RESP2 (or that exceed this parser's limits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Malformed(pub(super) String);

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unreadable reply from the server: {}", self.0)
    }
}

/// The first complete reply in `buf`; `Ok(None)` when `buf` holds only part of it.
///
/// # Errors
///
/// [`Malformed`] when the bytes are not a RESP2 reply (an unknown type byte, a bad
/// length, a missing `\r\n`, a line or a nesting past the limits).
pub(super) fn frame(buf: &[u8]) -> Result<Option<Frame<'_>>, Malformed> {
    let Some((kind, line, mut pos)) = line(buf, 0)? else {
        return Ok(None);
    };
    let head = if kind == b'-' {
        Head::Error(line)
    } else {
        Head::Value
    };
    // Elements still to read at each open array level.
    let mut open: Vec<u64> = Vec::new();
    let mut current = (kind, line);
    loop {
        let (kind, line) = current;
        match kind {
            b'+' | b'-' => {}
            b':' => {
                int(line)?;
            }
            b'$' => match int(line)? {
                -1 => {}
                n if n < 0 => return Err(Malformed(format!("bulk length {n}"))),
                n => {
                    let n =
                        usize::try_from(n).map_err(|_| Malformed(format!("bulk length {n}")))?;
                    let end = pos.checked_add(n).and_then(|e| e.checked_add(2));
                    let Some(end) = end else {
                        return Err(Malformed(format!("bulk length {n}")));
                    };
                    if buf.len() < end {
                        return Ok(None);
                    }
                    if &buf[end - 2..end] != b"\r\n" {
                        return Err(Malformed("a bulk string without its \\r\\n".into()));
                    }
                    pos = end;
                }
            },
            b'*' => match int(line)? {
                -1 | 0 => {}
                n if n < 0 => return Err(Malformed(format!("array length {n}"))),
                n => {
                    if open.len() >= MAX_DEPTH {
                        return Err(Malformed(format!("arrays nested over {MAX_DEPTH} deep")));
                    }
                    open.push(n as u64);
                    match self::line(buf, pos)? {
                        Some((k, l, next)) => {
                            current = (k, l);
                            pos = next;
                            continue;
                        }
                        None => return Ok(None),
                    }
                }
            },
            other => {
                return Err(Malformed(format!(
                    "type byte {:?}",
                    char::from(other).escape_default().to_string()
                )));
            }
        }
        // One element done: close every array it completes.
        while let Some(left) = open.last_mut() {
            *left -= 1;
            if *left > 0 {
                break;
            }
            open.pop();
        }
        if open.is_empty() {
            return Ok(Some(Frame { len: pos, head }));
        }
        match self::line(buf, pos)? {
            Some((k, l, next)) => {
                current = (k, l);
                pos = next;
            }
            None => return Ok(None),
        }
    }
}

/// One line of a reply: its type byte, the rest of it, and where the next line begins.
type Line<'a> = (u8, &'a [u8], usize);

/// The line starting at `at`.
fn line(buf: &[u8], at: usize) -> Result<Option<Line<'_>>, Malformed> {
    let rest = &buf[at.min(buf.len())..];
    let window = &rest[..rest.len().min(MAX_LINE + 2)];
    match memchr::memchr(b'\r', window) {
        Some(cr) if cr + 1 < rest.len() => {
            if rest[cr + 1] != b'\n' {
                return Err(Malformed("a line ending in \\r without \\n".into()));
            }
            if cr == 0 {
                return Err(Malformed("an empty line".into()));
            }
            Ok(Some((rest[0], &rest[1..cr], at + cr + 2)))
        }
        // The \r is the last byte so far: its \n is still coming.
        Some(_) => Ok(None),
        None if window.len() > MAX_LINE => {
            Err(Malformed(format!("a line longer than {MAX_LINE} bytes")))
        }
        None => Ok(None),
    }
}

/// A decimal integer (`-1`, `42`).
fn int(digits: &[u8]) -> Result<i64, Malformed> {
    std::str::from_utf8(digits)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            Malformed(format!(
                "not a number: {:?}",
                String::from_utf8_lossy(&digits[..digits.len().min(32)])
            ))
        })
}

/// Appends the header of a command of `args` arguments: `*<args>\r\n`.
pub(super) fn put_array(out: &mut Vec<u8>, args: usize) {
    out.push(b'*');
    put_decimal(out, args as u64);
    out.extend_from_slice(b"\r\n");
}

/// Appends one argument as a bulk string: `$<len>\r\n<bytes>\r\n`.
pub(super) fn put_bulk(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'$');
    put_decimal(out, bytes.len() as u64);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
}

/// Appends a number as a bulk string, in decimal.
pub(super) fn put_bulk_decimal(out: &mut Vec<u8>, n: u64) {
    let mut digits = itoa::Buffer::new();
    put_bulk(out, digits.format(n).as_bytes());
}

fn put_decimal(out: &mut Vec<u8>, n: u64) {
    let mut digits = itoa::Buffer::new();
    out.extend_from_slice(digits.format(n).as_bytes());
}

/// The code of an error line: its first word (`WRONGTYPE`, `ERR`).
pub(super) fn error_code(line: &[u8]) -> &[u8] {
    line.split(|&b| b == b' ').next().unwrap_or(line)
}

/// Reads the elements of one complete reply in order (see [`frame`]): what a stream
/// reply's walker needs, without building a tree.
pub(super) struct Cursor<'a> {
    buf: &'a [u8],
    at: usize,
}

/// One element read by a [`Cursor`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Item<'a> {
    /// `*<n>` (its elements follow), `None` for a nil array.
    Array(Option<usize>),
    /// A bulk string's range in the buffer (`None`: nil), or a simple string's or an
    /// integer's text.
    Bytes(Option<std::ops::Range<usize>>),
    /// An error reply's line.
    Error(&'a [u8]),
}

impl<'a> Cursor<'a> {
    /// A cursor at the start of `buf`.
    pub(super) fn new(buf: &'a [u8]) -> Cursor<'a> {
        Cursor { buf, at: 0 }
    }

    /// The next element.
    ///
    /// # Errors
    ///
    /// [`Malformed`] when the bytes end or are not RESP2.
    pub(super) fn next(&mut self) -> Result<Item<'a>, Malformed> {
        let cut = || Malformed("the reply ends early".to_owned());
        let (kind, line, next) = line(self.buf, self.at)?.ok_or_else(cut)?;
        self.at = next;
        match kind {
            b'*' => match int(line)? {
                -1 => Ok(Item::Array(None)),
                n => usize::try_from(n)
                    .map(|n| Item::Array(Some(n)))
                    .map_err(|_| Malformed(format!("array length {n}"))),
            },
            b'$' => match int(line)? {
                -1 => Ok(Item::Bytes(None)),
                n => {
                    let n =
                        usize::try_from(n).map_err(|_| Malformed(format!("bulk length {n}")))?;
                    let end = next + n;
                    if self.buf.len() < end + 2 {
                        return Err(cut());
                    }
                    self.at = end + 2;
                    Ok(Item::Bytes(Some(next..end)))
                }
            },
            b'+' | b':' => Ok(Item::Bytes(Some(next - 2 - line.len()..next - 2))),
            b'-' => Ok(Item::Error(line)),
            other => Err(Malformed(format!("type byte {other}"))),
        }
    }
}

#[cfg(test)]
mod tests;
