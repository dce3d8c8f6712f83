//! The text arguments of protocol-0 opcodes (`INT`, `LONG`, `FLOAT`, `STRING`, `UNICODE`,
//! `GET`/`PUT`), as Python 2 and protocol-0 pickles write them.

use num_bigint::BigInt;

use crate::value::Value;

/// Most decimal digits of an int argument, as Python's own limit on int-from-text
/// conversions (`sys.int_max_str_digits`): the conversion costs quadratic time in the
/// number of digits, so a megabyte of digits would take seconds.
pub(super) const MAX_INT_DIGITS: usize = 4300;

/// An int from decimal text ([`MAX_INT_DIGITS`] digits at most): `Int` when it fits in 64 bits, else `BigInt`. A trailing `L`
/// (Python 2 longs) is accepted.
pub(super) fn parse_int(text: &[u8]) -> Option<Value> {
    let text = std::str::from_utf8(text).ok()?.trim();
    let text = text.strip_suffix('L').unwrap_or(text);
    if text.is_empty() {
        return None;
    }
    if let Ok(i) = text.parse::<i64>() {
        return Some(Value::Int(i));
    }
    let digits = text.strip_prefix('+').unwrap_or(text);
    if digits.trim_start_matches('-').len() > MAX_INT_DIGITS {
        return None;
    }
    let big: BigInt = digits.parse().ok()?;
    Some(int_value(big))
}

/// `Int` when `big` fits in 64 bits, else `BigInt`.
pub(super) fn int_value(big: BigInt) -> Value {
    match i64::try_from(&big) {
        Ok(i) => Value::Int(i),
        Err(_) => Value::BigInt(big),
    }
}

/// The `INT` opcode argument: Python 2 writes `00`/`01` for False/True.
pub(super) fn parse_int_opcode(text: &[u8]) -> Option<Value> {
    match text {
        b"00" => Some(Value::Bool(false)),
        b"01" => Some(Value::Bool(true)),
        _ => parse_int(text),
    }
}

/// A float from Python's `repr` text (`1.5`, `nan`, `inf`, `-inf`, `1e-08`).
pub(super) fn parse_float(text: &[u8]) -> Option<f64> {
    let text = std::str::from_utf8(text).ok()?.trim();
    text.parse::<f64>().ok()
}

/// A non-negative memo index from decimal text.
pub(super) fn parse_index(text: &[u8]) -> Option<u64> {
    std::str::from_utf8(text).ok()?.trim().parse::<u64>().ok()
}

/// The bytes of a `STRING` argument: a quoted Python 2 `repr` with backslash escapes.
pub(super) fn unquote_string(text: &[u8]) -> Option<Vec<u8>> {
    let quote = *text.first()?;
    if !(quote == b'\'' || quote == b'"') || text.len() < 2 || text.last() != Some(&quote) {
        return None;
    }
    let body = &text[1..text.len() - 1];
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        let c = body[i];
        i += 1;
        if c != b'\\' {
            out.push(c);
            continue;
        }
        let e = *body.get(i)?;
        i += 1;
        match e {
            b'\n' => {}
            b'\\' => out.push(b'\\'),
            b'\'' => out.push(b'\''),
            b'"' => out.push(b'"'),
            b'a' => out.push(7),
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(11),
            b'x' => {
                let hex = body.get(i..i + 2)?;
                let v = u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
                out.push(v);
                i += 2;
            }
            b'0'..=b'7' => {
                let mut v: u32 = u32::from(e - b'0');
                for _ in 0..2 {
                    match body.get(i) {
                        Some(d @ b'0'..=b'7') => {
                            v = v * 8 + u32::from(d - b'0');
                            i += 1;
                        }
                        _ => break,
                    }
                }
                out.push((v & 0xFF) as u8);
            }
            other => {
                out.push(b'\\');
                out.push(other);
            }
        }
    }
    Some(out)
}

/// The text of a `UNICODE` argument: raw-unicode-escape (bytes are latin1 code points except
/// `\uXXXX` and `\UXXXXXXXX`).
pub(super) fn raw_unicode_escape(text: &[u8]) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        let c = text[i];
        if c == b'\\' && matches!(text.get(i + 1), Some(b'u') | Some(b'U')) {
            let n = if text[i + 1] == b'u' { 4 } else { 8 };
            let hex = text.get(i + 2..i + 2 + n)?;
            let code = u32::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
            out.push(char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER));
            i += 2 + n;
        } else {
            out.push(char::from(c));
            i += 1;
        }
    }
    Some(out)
}

/// `bytes` as text, invalid UTF-8 replaced by U+FFFD. Validates with the standard fast
/// check first: `String::from_utf8_lossy` walks byte by byte even over valid text.
pub(crate) fn utf8_lossy(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) => text.to_owned(),
        Err(_) => String::from_utf8_lossy(bytes).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int_text_covers_bools_longs_and_big_values() {
        assert!(matches!(parse_int_opcode(b"01"), Some(Value::Bool(true))));
        assert!(matches!(parse_int_opcode(b"-5"), Some(Value::Int(-5))));
        assert!(matches!(parse_int(b"123L"), Some(Value::Int(123))));
        assert!(matches!(
            parse_int(b"1180591620717411303424"),
            Some(Value::BigInt(_))
        ));
        assert!(parse_int(b"12x").is_none());
    }

    #[test]
    fn quoted_strings_unescape_like_python2() {
        assert_eq!(
            unquote_string(br"'a\x00\n\'b\101'").unwrap(),
            b"a\x00\n'bA".to_vec()
        );
        assert!(unquote_string(b"'abc").is_none());
        assert_eq!(raw_unicode_escape(br"caf\u00e9").unwrap(), "café");
    }

    #[test]
    fn utf8_lossy_keeps_valid_text_and_replaces_invalid_bytes() {
        assert_eq!(utf8_lossy("μ.weight".as_bytes()), "μ.weight");
        assert_eq!(utf8_lossy(b"a\xffb"), "a\u{fffd}b");
    }
}
