//! The envelope every published payload carries: who sent it, which one it is, and when it
//! was meant to go and did go, padded to the requested size with ASCII so it fits every
//! protocol (JSON strings, AMQP bodies, Kafka values, Redis fields, NATS payloads).
//!
//! Layout (64 bytes of header, then padding):
//!
//! ```text
//! B1 RRRRRRRR PPPPPP SSSSSSSSSS IIIIIIIIIIII TTTTTTTTTTTT LLLLLL CCCCCCCC ........
//!    run id   producer sequence  intended ns  sent ns      length checksum padding
//! ```
//!
//! (written without the spaces; every field is fixed-width lowercase hex). Times are ns
//! from the run's own monotonic epoch: producers and consumers share one process and one
//! clock. The checksum (a 64-bit multiply-rotate mix of the 56 bytes before it, folded to
//! 32 bits) and the padding (all `.`) let a consumer tell a corrupted or truncated payload
//! from a good one.

use crate::hex::{get_hex, put_hex};

/// Header bytes; also the smallest payload an envelope fits in.
pub const HEADER_LEN: usize = 64;
const MAGIC: &[u8; 2] = b"B1";
const PAD: u8 = b'.';

/// Largest values each field can hold.
const MAX_PRODUCER: u32 = 0xff_ffff;
const MAX_SEQ: u64 = 0xff_ffff_ffff;
const MAX_TIME: u64 = 0xffff_ffff_ffff;
const MAX_LEN: usize = 0xff_ffff;

/// The decoded header of a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Envelope {
    /// The run that sent it (a 32-bit run tag).
    pub run: u32,
    /// The producer within the run.
    pub producer: u32,
    /// The producer's sequence number, from 0.
    pub seq: u64,
    /// When the schedule said to send it (ns from the run epoch).
    pub intended_ns: u64,
    /// When it was actually handed to the client (ns from the run epoch).
    pub sent_ns: u64,
}

/// Why a payload is not a valid envelope of this run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// Too short, wrong magic, bad hex: not ours.
    #[error("not an envelope")]
    Foreign,
    /// An envelope whose checksum, length or padding does not match: damaged in transit.
    #[error("corrupted envelope")]
    Corrupted,
}

impl Envelope {
    /// Writes the envelope padded to `size` bytes (at least [`HEADER_LEN`]) into `out`.
    pub fn encode_into(&self, size: usize, out: &mut Vec<u8>) {
        let size = size.clamp(HEADER_LEN, MAX_LEN);
        let start = out.len();
        out.reserve(size);
        out.extend_from_slice(MAGIC);
        put_hex(out, u64::from(self.run), 8);
        put_hex(out, u64::from(self.producer.min(MAX_PRODUCER)), 6);
        put_hex(out, self.seq.min(MAX_SEQ), 10);
        put_hex(out, self.intended_ns.min(MAX_TIME), 12);
        put_hex(out, self.sent_ns.min(MAX_TIME), 12);
        put_hex(out, size as u64, 6);
        let check = checksum(&out[start..start + 56]);
        put_hex(out, u64::from(check), 8);
        out.resize(start + size, PAD);
    }

    /// The envelope as a payload of `size` bytes.
    pub fn encode(&self, size: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(size.max(HEADER_LEN));
        self.encode_into(size, &mut out);
        out
    }

    /// Reads an envelope back.
    ///
    /// # Errors
    ///
    /// [`EnvelopeError::Foreign`] for payloads that are not envelopes at all,
    /// [`EnvelopeError::Corrupted`] for envelopes damaged in transit.
    pub fn decode(payload: &[u8]) -> Result<Envelope, EnvelopeError> {
        if payload.len() < HEADER_LEN || &payload[..2] != MAGIC {
            return Err(EnvelopeError::Foreign);
        }
        let field = |from: usize, len: usize| get_hex(&payload[from..from + len]);
        let parsed = (|| {
            Some((
                field(2, 8)?,
                field(10, 6)?,
                field(16, 10)?,
                field(26, 12)?,
                field(38, 12)?,
                field(50, 6)?,
                field(56, 8)?,
            ))
        })();
        let Some((run, producer, seq, intended_ns, sent_ns, len, check)) = parsed else {
            return Err(EnvelopeError::Corrupted);
        };
        if check != u64::from(checksum(&payload[..56]))
            || len != payload.len() as u64
            // Without an early exit, so the compiler checks many bytes at a time.
            || payload[HEADER_LEN..].iter().fold(0u8, |odd, &b| odd | (b ^ PAD)) != 0
        {
            return Err(EnvelopeError::Corrupted);
        }
        Ok(Envelope {
            run: run as u32,
            producer: producer as u32,
            seq,
            intended_ns,
            sent_ns,
        })
    }
}

/// A 32-bit checksum of the 56 header bytes, a word at a time.
fn checksum(bytes: &[u8]) -> u32 {
    let mut hash: u64 = 0x9e37_79b9_7f4a_7c15;
    for chunk in bytes.chunks(8) {
        let mut word = [0u8; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        hash = (hash ^ u64::from_le_bytes(word))
            .wrapping_mul(0xff51_afd7_ed55_8ccd)
            .rotate_left(29);
    }
    (hash ^ (hash >> 32)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Envelope {
        Envelope {
            run: 0xdead_beef,
            producer: 42,
            seq: 1_000_000,
            intended_ns: 12_345_678_901,
            sent_ns: 12_345_679_999,
        }
    }

    #[test]
    fn round_trips_at_every_size() {
        for size in [0, 1, 64, 65, 100, 1000, 1 << 20] {
            let bytes = sample().encode(size);
            assert_eq!(bytes.len(), size.max(HEADER_LEN));
            assert!(bytes.iter().all(|b| b.is_ascii_graphic()));
            assert_eq!(Envelope::decode(&bytes), Ok(sample()));
        }
    }

    #[test]
    fn foreign_and_corrupted_payloads_are_told_apart() {
        assert_eq!(Envelope::decode(b"hello"), Err(EnvelopeError::Foreign));
        assert_eq!(Envelope::decode(&[b'x'; 100]), Err(EnvelopeError::Foreign));
        let good = sample().encode(100);
        for i in 2..100 {
            let mut bad = good.clone();
            bad[i] = if bad[i] == b'0' { b'1' } else { b'0' };
            assert_eq!(
                Envelope::decode(&bad),
                Err(EnvelopeError::Corrupted),
                "byte {i}"
            );
        }
        assert_eq!(Envelope::decode(&good[..99]), Err(EnvelopeError::Corrupted));
    }
}
