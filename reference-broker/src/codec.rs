//! Line framing: bytes from the socket in, protocol lines out.
//!
//! Sans-I/O: the decoder works on a [`BytesMut`] that the connection fills, so it can be
//! unit-tested and property-tested without sockets. It never holds more than the line limit
//! of an unfinished line: a line that grows past the limit is dropped as it arrives and
//! reported once, as [`Frame::TooLong`], when its newline finally comes.
//!
//! ```text
//! {"command":"subscribe","topic":"a"}\r\n   -> Frame::Line(b"{\"command\":...}")
//! \n                                         -> Frame::Line(b"")  (the caller ignores it)
//! <2 MiB of bytes>\n                         -> Frame::TooLong
//! ```

use bytes::BytesMut;

/// One unit of input produced by the [`LineDecoder`].
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A complete line, without its `\n` and without one `\r` just before it.
    Line(BytesMut),
    /// A line longer than the limit was discarded, up to and including its newline.
    TooLong,
}

/// Splits a byte stream into lines of at most `max_line_bytes` bytes.
#[derive(Debug)]
pub struct LineDecoder {
    /// Longest line accepted, in bytes, not counting the `\n`.
    max_line_bytes: usize,
    /// True while the bytes of an over-long line are being thrown away.
    discarding: bool,
    /// How much of the buffer is already known to hold no `\n`, so that a line arriving in
    /// many small reads is scanned once, not once per read.
    scanned: usize,
}

impl LineDecoder {
    /// A decoder for lines of at most `max_line_bytes` bytes (excluding the newline).
    pub fn new(max_line_bytes: usize) -> Self {
        Self {
            max_line_bytes,
            discarding: false,
            scanned: 0,
        }
    }

    /// Takes the next frame out of `buf`, or returns `None` when more bytes are needed.
    ///
    /// Bytes of an over-long line are removed from `buf` as soon as they are seen, so the
    /// buffer never grows past the limit (plus one read) whatever the peer sends.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Option<Frame> {
        match memchr::memchr(b'\n', &buf[self.scanned..]) {
            Some(offset) => {
                let newline = self.scanned + offset;
                self.scanned = 0;
                if self.discarding {
                    let _ = buf.split_to(newline + 1);
                    self.discarding = false;
                    return Some(Frame::TooLong);
                }
                if newline > self.max_line_bytes {
                    let _ = buf.split_to(newline + 1);
                    return Some(Frame::TooLong);
                }
                let mut line = buf.split_to(newline + 1);
                line.truncate(newline);
                if line.last() == Some(&b'\r') {
                    line.truncate(newline - 1);
                }
                Some(Frame::Line(line))
            }
            None => {
                if self.discarding {
                    buf.clear();
                    self.scanned = 0;
                } else if buf.len() > self.max_line_bytes {
                    buf.clear();
                    self.scanned = 0;
                    self.discarding = true;
                } else {
                    self.scanned = buf.len();
                }
                None
            }
        }
    }

    /// True when the decoder is in the middle of discarding an over-long line.
    pub fn is_discarding(&self) -> bool {
        self.discarding
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(decoder: &mut LineDecoder, buf: &mut BytesMut) -> Vec<Frame> {
        std::iter::from_fn(|| decoder.decode(buf)).collect()
    }

    fn line(s: &str) -> Frame {
        Frame::Line(BytesMut::from(s))
    }

    #[test]
    fn splits_lines_and_drops_one_carriage_return() {
        let mut d = LineDecoder::new(100);
        let mut buf = BytesMut::from("a\r\nb\n\n\r\r\nc");
        assert_eq!(
            frames(&mut d, &mut buf),
            vec![line("a"), line("b"), line(""), line("\r")]
        );
        assert_eq!(&buf[..], b"c");
    }

    #[test]
    fn line_arriving_in_pieces_is_reassembled() {
        let mut d = LineDecoder::new(100);
        let mut buf = BytesMut::new();
        for piece in ["{\"com", "mand\":", "1}", "\r", "\n"] {
            buf.extend_from_slice(piece.as_bytes());
            if piece != "\n" {
                assert_eq!(d.decode(&mut buf), None);
            }
        }
        assert_eq!(frames(&mut d, &mut buf), vec![line("{\"command\":1}")]);
        let mut buf = BytesMut::from("{\"com");
        assert_eq!(d.decode(&mut buf), None);
        buf.extend_from_slice(b"mand\":1}\r\n");
        assert_eq!(d.decode(&mut buf), Some(line("{\"command\":1}")));
    }

    #[test]
    fn line_of_exactly_the_limit_is_accepted() {
        let mut d = LineDecoder::new(4);
        let mut buf = BytesMut::from("abcd\nabcde\n");
        assert_eq!(frames(&mut d, &mut buf), vec![line("abcd"), Frame::TooLong]);
    }

    #[test]
    fn over_long_line_is_discarded_without_buffering() {
        let mut d = LineDecoder::new(8);
        let mut buf = BytesMut::new();
        for _ in 0..1000 {
            buf.extend_from_slice(b"0123456789");
            assert_eq!(d.decode(&mut buf), None);
            assert!(buf.len() <= 10, "buffer grew to {}", buf.len());
        }
        assert!(d.is_discarding());
        buf.extend_from_slice(b"xyz\nok\n");
        assert_eq!(frames(&mut d, &mut buf), vec![Frame::TooLong, line("ok")]);
        assert!(!d.is_discarding());
    }
}
