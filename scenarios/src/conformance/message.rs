//! What every conformance message carries: which check run sent it, which producer, its
//! sequence number, its key, its length and a hash of the whole payload, so a subscriber
//! can tell each message apart and see whether it arrived intact.
//!
//! Layout (50 bytes of ASCII header, then a body of pseudo-random letters and digits
//! derived from the header fields):
//!
//! ```text
//! C1 RRRRRRRR PPPP SSSSSSSS KKKK LLLLLLLL HHHHHHHHHHHHHHHH body...
//!    run      prod sequence key  length   FNV-1a 64 of everything but the hash
//! ```
//!
//! (without the spaces; every field is fixed-width lowercase hex; key `ffff` = no key).
//! The body is not padding: it differs from message to message, so a broker that mixes up
//! or truncates payloads is caught by the hash, not only one that flips the header.

use std::fmt;

use brokerbench_bench::hex::{get_hex, put_hex};

/// Header bytes: the smallest payload a [`Message`] can be encoded in.
pub const HEADER_LEN: usize = 50;
const MAGIC: &[u8; 2] = b"C1";
const NO_KEY: u64 = 0xffff;
/// Where the hash starts in the header.
const HASH_AT: usize = 34;

/// Who sent a message and which one it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId {
    /// The producer within the check (0-based).
    pub producer: u16,
    /// The producer's sequence number, from 0.
    pub seq: u32,
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "p{}#{}", self.producer, self.seq)
    }
}

/// A decoded conformance message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message {
    /// The check run that sent it (a 32-bit tag).
    pub run: u32,
    /// Producer and sequence.
    pub id: MessageId,
    /// The index of its key in the check's key set, if it has one.
    pub key: Option<u16>,
}

/// Why a payload is not a good message of this run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// Too short, wrong magic, bad hex: not a conformance message at all.
    #[error("not a conformance message")]
    Foreign,
    /// A message whose length or hash does not match: truncated or damaged in transit.
    #[error("corrupted or truncated message")]
    Corrupted,
}

impl Message {
    /// The message as a payload of `size` bytes (at least [`HEADER_LEN`]).
    pub fn encode(&self, size: usize) -> Vec<u8> {
        let size = size.max(HEADER_LEN);
        let mut out = Vec::with_capacity(size);
        out.extend_from_slice(MAGIC);
        put_hex(&mut out, u64::from(self.run), 8);
        put_hex(&mut out, u64::from(self.id.producer), 4);
        put_hex(&mut out, u64::from(self.id.seq), 8);
        put_hex(&mut out, self.key.map_or(NO_KEY, u64::from), 4);
        put_hex(&mut out, size as u64, 8);
        debug_assert_eq!(out.len(), HASH_AT);
        let body = filler(self.seed(), size - HEADER_LEN);
        let hash = fnv1a(&[&out, &body]);
        put_hex(&mut out, hash, 16);
        out.extend_from_slice(&body);
        out
    }

    /// Reads a message back, checking its length and hash.
    ///
    /// # Errors
    /// [`MessageError::Foreign`] for payloads that are not conformance messages,
    /// [`MessageError::Corrupted`] for messages damaged or truncated in transit.
    pub fn decode(payload: &[u8]) -> Result<Message, MessageError> {
        if payload.len() < HEADER_LEN || &payload[..2] != MAGIC {
            return Err(MessageError::Foreign);
        }
        let field = |from: usize, len: usize| get_hex(&payload[from..from + len]);
        let parsed = (|| {
            Some((
                field(2, 8)?,
                field(10, 4)?,
                field(14, 8)?,
                field(22, 4)?,
                field(26, 8)?,
                field(HASH_AT, 16)?,
            ))
        })();
        let Some((run, producer, seq, key, len, hash)) = parsed else {
            return Err(MessageError::Corrupted);
        };
        let computed = fnv1a(&[&payload[..HASH_AT], &payload[HEADER_LEN..]]);
        if len != payload.len() as u64 || hash != computed {
            return Err(MessageError::Corrupted);
        }
        Ok(Message {
            run: run as u32,
            id: MessageId {
                producer: producer as u16,
                seq: seq as u32,
            },
            key: (key != NO_KEY).then_some(key as u16),
        })
    }

    fn seed(&self) -> u64 {
        (u64::from(self.run) << 32)
            ^ (u64::from(self.id.producer) << 48)
            ^ u64::from(self.id.seq)
            ^ 0x5851_f42d_4c95_7f2d
    }
}

/// `len` bytes of arbitrary letters and digits for a payload of any size (below the
/// header size too), the same for the same `seed`: what the large-message check sends.
pub fn filler(seed: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    body(seed, len, &mut out);
    out
}

const ALPHABET: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// Appends `len` pseudo-random letters and digits derived from `seed` (xorshift64*,
/// started from the seed mixed by splitmix64 so that neighbouring seeds give unrelated
/// bodies).
fn body(seed: u64, len: usize, out: &mut Vec<u8>) {
    let mut mixed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    let mut state = (mixed ^ (mixed >> 31)) | 1;
    out.reserve(len);
    let mut left = len;
    while left > 0 {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        let mut word = state.wrapping_mul(0x2545_f491_4f6c_dd1d);
        for _ in 0..left.min(8) {
            out.push(ALPHABET[(word % 62) as usize]);
            word >>= 8;
        }
        left = left.saturating_sub(8);
    }
}

/// FNV-1a 64 of `parts`, one after the other.
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in parts.iter().flat_map(|part| part.iter()) {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(key: Option<u16>) -> Message {
        Message {
            run: 0xfeed_f00d,
            id: MessageId {
                producer: 3,
                seq: 123_456,
            },
            key,
        }
    }

    #[test]
    fn round_trips_at_every_size() {
        for size in [0, 1, HEADER_LEN, 51, 100, 4096, 1 << 20] {
            for key in [None, Some(0), Some(7)] {
                let bytes = sample(key).encode(size);
                assert_eq!(bytes.len(), size.max(HEADER_LEN));
                assert!(bytes.iter().all(u8::is_ascii_alphanumeric));
                assert_eq!(Message::decode(&bytes), Ok(sample(key)));
            }
        }
    }

    #[test]
    fn bodies_differ_between_messages() {
        let a = sample(None).encode(200);
        let mut other = sample(None);
        other.id.seq += 1;
        let b = other.encode(200);
        assert_ne!(a[HEADER_LEN..], b[HEADER_LEN..]);
        assert_eq!(filler(9, 33), filler(9, 33));
        assert_eq!(filler(9, 33).len(), 33);
        assert_ne!(filler(9, 33), filler(10, 33));
    }

    #[test]
    fn any_changed_byte_or_truncation_is_caught() {
        assert_eq!(Message::decode(b"hello"), Err(MessageError::Foreign));
        assert_eq!(Message::decode(&[b'x'; 80]), Err(MessageError::Foreign));
        let good = sample(Some(2)).encode(120);
        for i in 2..good.len() {
            let mut bad = good.clone();
            bad[i] = if bad[i] == b'a' { b'b' } else { b'a' };
            assert_eq!(
                Message::decode(&bad),
                Err(MessageError::Corrupted),
                "byte {i}"
            );
        }
        assert_eq!(Message::decode(&good[..119]), Err(MessageError::Corrupted));
    }
}
