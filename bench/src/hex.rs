//! Fixed-width lowercase hex, the encoding of the ASCII envelopes (the load engine's and
//! the conformance checks'): safe in every protocol, cheap to write and to read back.

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Appends `value` as `width` lowercase hex digits (the low `width` nibbles).
pub fn put_hex(out: &mut Vec<u8>, value: u64, width: usize) {
    let mut digits = [0u8; 16];
    for (i, d) in digits[..width].iter_mut().enumerate() {
        *d = HEX[((value >> (4 * (width - 1 - i))) & 0xf) as usize];
    }
    out.extend_from_slice(&digits[..width]);
}

/// The value of lowercase hex `digits` (at most 16); anything else is `None`.
pub fn get_hex(digits: &[u8]) -> Option<u64> {
    let mut value = 0u64;
    let mut bad = 0u8;
    for &d in digits {
        // '0'..='9' → 0..=9, 'a'..='f' → 10..=15; anything else sets `bad`.
        let digit = d.wrapping_sub(b'0');
        let letter = d.wrapping_sub(b'a');
        let (v, ok) = if digit < 10 {
            (digit, true)
        } else {
            (letter.wrapping_add(10), letter < 6)
        };
        bad |= u8::from(!ok);
        value = (value << 4) | u64::from(v & 0xf);
    }
    (bad == 0).then_some(value)
}
