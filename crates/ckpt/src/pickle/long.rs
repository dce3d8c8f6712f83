//! Python ints as the `LONG1`/`LONG4` opcodes hold them: little-endian two's complement, in
//! as few bytes as hold the number (pickle's `encode_long`/`decode_long`).

use num_bigint::BigInt;

use crate::pickle::text;
use crate::value::Value;

/// The int a `LONG1`/`LONG4` argument holds: `Int` when it fits in 64 bits, else `BigInt`.
pub(super) fn decode(bytes: &[u8]) -> Value {
    match decode_small(bytes) {
        Some(i) => Value::Int(i),
        None => text::int_value(BigInt::from_signed_bytes_le(bytes)),
    }
}

/// The int of an argument of at most 8 bytes (`None` for a longer one); no bytes is 0.
pub(super) fn decode_small(bytes: &[u8]) -> Option<i64> {
    if bytes.len() > 8 {
        return None;
    }
    // Sign-extend from the top bit of the last byte.
    let fill = if bytes.last().is_some_and(|&b| b & 0x80 != 0) {
        0xFF
    } else {
        0
    };
    let mut raw = [fill; 8];
    raw[..bytes.len()].copy_from_slice(bytes);
    Some(i64::from_le_bytes(raw))
}

/// The shortest encoding of the number whose little-endian two's complement is `bytes`.
pub(super) fn shortest(bytes: &[u8]) -> &[u8] {
    let mut len = bytes.len();
    while len > 1 {
        let last = bytes[len - 1];
        let sign_of_next = bytes[len - 2] & 0x80;
        if (last == 0x00 && sign_of_next == 0) || (last == 0xFF && sign_of_next != 0) {
            len -= 1;
        } else {
            break;
        }
    }
    &bytes[..len]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_round_trip_at_the_sign_boundaries() {
        for i in [
            0i64,
            1,
            -1,
            127,
            128,
            -128,
            -129,
            255,
            256,
            i64::MAX,
            i64::MIN,
        ] {
            let le = i.to_le_bytes();
            let short = shortest(&le);
            assert_eq!(decode_small(short), Some(i), "{i}");
            assert!(matches!(decode(short), Value::Int(v) if v == i), "{i}");
        }
        assert_eq!(shortest(&128i64.to_le_bytes()), &[0x80, 0x00]);
        assert_eq!(shortest(&(-128i64).to_le_bytes()), &[0x80]);
        assert_eq!(decode_small(&[]), Some(0));
        assert!(matches!(
            decode(&[0, 0, 0, 0, 0, 0, 0, 0, 1]),
            Value::BigInt(_)
        ));
    }
}
