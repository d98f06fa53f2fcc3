//! Rendering an accepted `send` as the line pushed to subscribers.

use super::{Field, Send};

/// Where the parts of a rendered `send` sit inside its line, so redeliveries and
/// dead-letters can be derived from the bytes without parsing them again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Byte range of the quoted topic value.
    pub topic: (u32, u32),
    /// Length of the object body before `,"index":`.
    pub body_end: u32,
}

impl Send<'_> {
    /// Renders the message pushed to subscribers: the send object as received (compact,
    /// keys in their original order) plus `"index"`, followed by `\r\n`.
    ///
    /// ```text
    /// {"command":"send","topic":"t","msg":"hi","delivery":"all","index":3}\r\n
    /// ```
    pub fn render(&self, index: u64) -> (Vec<u8>, Layout) {
        let mut out = Vec::with_capacity(self.msg.len() + self.topic.len() + 96);
        let topic = self.render_body(&mut out);
        let body_end = out.len() as u32;
        out.extend_from_slice(b",\"index\":");
        out.extend_from_slice(itoa::Buffer::new().format(index).as_bytes());
        out.extend_from_slice(b"}\r\n");
        (out, Layout { topic, body_end })
    }

    /// Writes `{` and the keys of the send object into `out`, without the closing brace.
    /// Returns the byte range of the topic value.
    fn render_body(&self, out: &mut Vec<u8>) -> (u32, u32) {
        let mut topic_range = (0, 0);
        out.push(b'{');
        for (i, field) in self.order.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.push(b'"');
            out.extend_from_slice(field.name().as_bytes());
            out.extend_from_slice(b"\":");
            match field {
                Field::Command => out.extend_from_slice(b"\"send\""),
                Field::Topic => {
                    let start = out.len() as u32;
                    write_json_str(out, &self.topic);
                    topic_range = (start, out.len() as u32);
                }
                Field::Msg => write_json_str(out, &self.msg),
                Field::Delivery => {
                    out.push(b'"');
                    out.extend_from_slice(self.delivery.as_str().as_bytes());
                    out.push(b'"');
                }
                Field::Cache => out.extend_from_slice(match self.cache {
                    Some(false) => b"false",
                    _ => b"true",
                }),
                Field::Key => write_json_str(out, self.key.as_deref().unwrap_or_default()),
                Field::Id => write_json_str(out, self.id.as_deref().unwrap_or_default()),
                // Not allowed in a send; the parser rejects them before a Send exists.
                Field::LastSeen | Field::Ack | Field::Index => {}
            }
        }
        topic_range
    }
}

/// Appends `s` as a JSON string literal, escaped the way serde_json escapes.
pub fn write_json_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => {
                out.extend_from_slice(&bytes[start..i]);
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xf)]);
                start = i + 1;
                continue;
            }
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(escape);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}
