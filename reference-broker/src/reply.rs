//! The fixed reply lines, byte for byte as every server of this protocol writes them.

/// `{"success":true}`: the command was carried out.
pub const OK: &[u8] = b"{\"success\":true}\r\n";
/// The `id` extension: this id was already seen on the topic inside the dedup window.
pub const DUPLICATE: &[u8] = b"{\"success\":true,\"duplicate\":true}\r\n";
/// The line is not valid UTF-8.
pub const UTF8: &[u8] = b"{\"success\":false,\"reason\":\"Could not decode input as UTF-8\"}\r\n";
/// The line is UTF-8 but not JSON.
pub const JSON: &[u8] = b"{\"success\":false,\"reason\":\"Could not parse json\"}\r\n";
/// The line is JSON but not a valid command.
pub const MALFORMED: &[u8] = b"{\"success\":false,\"reason\":\"Malformed json message\"}\r\n";
/// The line was longer than the server's limit and was discarded.
pub const LINE_TOO_LONG: &[u8] = b"{\"success\":false,\"reason\":\"Line too long\"}\r\n";
/// The connection fell too far behind reading its messages and is being closed.
pub const SLOW_CONSUMER: &[u8] = b"{\"success\":false,\"reason\":\"Slow consumer\"}\r\n";
