//! Options written as a query string after a checkpoint path
//! (`model_final.pth?matching_heuristics=True`), as detectron2 accepts them.

use crate::error::{Error, Result};

/// Options parsed from the query string of a checkpoint path.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueryOptions {
    /// `matching_heuristics=True`: rename the checkpoint's keys by suffix matching before
    /// loading, even for a plain PyTorch file.
    pub matching_heuristics: bool,
}

impl QueryOptions {
    /// Parses `query` (the text after `?`). `original` is the whole path, for messages.
    ///
    /// Only `matching_heuristics` is known; its value is `True` or `False` (any case, or
    /// `1` / `0`). Any other key is an error, as in detectron2, and so is any other value
    /// (where detectron2 would silently read it as `False`).
    pub fn parse(query: &str, original: &str) -> Result<Self> {
        let mut options = QueryOptions::default();
        let mut remaining = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let key = percent_decode(key);
            let value = percent_decode(value);
            if key == "matching_heuristics" {
                options.matching_heuristics = parse_bool(&value).ok_or_else(|| {
                    Error::invalid_path(
                        original,
                        format!("matching_heuristics must be True or False, not '{value}'"),
                    )
                })?;
            } else {
                remaining.push(format!("{key}={value}"));
            }
        }
        if remaining.is_empty() {
            Ok(options)
        } else {
            Err(Error::invalid_path(
                original,
                format!(
                    "Unsupported query remaining: {} (the only query option is \
                     matching_heuristics=True)",
                    remaining.join("&")
                ),
            ))
        }
    }
}

/// Splits `path` at its first `?` into the path and the query string (without `?`). A
/// fragment (`#...`) after the query is dropped.
pub(crate) fn split_query(path: &str) -> (&str, Option<&str>) {
    match path.split_once('?') {
        Some((bare, query)) => {
            let query = query.split_once('#').map_or(query, |(q, _)| q);
            (bare, Some(query))
        }
        None => (path, None),
    }
}

fn parse_bool(value: &str) -> Option<bool> {
    if value.eq_ignore_ascii_case("true") || value == "1" {
        Some(true)
    } else if value.eq_ignore_ascii_case("false") || value == "0" {
        Some(false)
    } else {
        None
    }
}

/// Decodes `+` and `%XX` as a form-encoded query does; a malformed escape is kept literally.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let escaped = match (b, bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) => hex(h).zip(hex(l)).map(|(h, l)| h << 4 | l),
            _ => None,
        };
        match (b, escaped) {
            (_, Some(decoded)) => {
                out.push(decoded);
                i += 3;
            }
            (b'+', None) => {
                out.push(b' ');
                i += 1;
            }
            (other, None) => {
                out.push(other);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(digit: u8) -> Option<u8> {
    char::from(digit)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding_keeps_malformed_escapes() {
        assert_eq!(percent_decode("a%3Ab+c"), "a:b c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }

    #[test]
    fn split_query_drops_fragment() {
        assert_eq!(split_query("a.pth?x=1#f"), ("a.pth", Some("x=1")));
        assert_eq!(split_query("a.pth"), ("a.pth", None));
    }
}
