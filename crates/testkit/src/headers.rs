//! Header lists as tests read them: owned `(name, value)` pairs in wire
//! order, looked up case-insensitively.

use http::HeaderMap;

/// The pairs of `map`, values decoded lossily (tests compare text).
pub fn pairs(map: &HeaderMap) -> Vec<(String, String)> {
    map.iter()
        .map(|(k, v)| {
            let value = String::from_utf8_lossy(v.as_bytes()).into_owned();
            (k.as_str().to_owned(), value)
        })
        .collect()
}

/// The first value of header `name` (case-insensitive).
pub fn find<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}
