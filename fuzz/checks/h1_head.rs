//! Fuzz check: the HTTP/1 request-head parser (`tether_proxy::http1::parse`),
//! where request smuggling would start: the framing it decides is the
//! framing the server reads the body with.
//!
//! Promises checked, on arbitrary bytes:
//! - nothing panics, and parsing the bytes in two reads (split anywhere,
//!   parsing after each read as `http1/server.rs` does) gives the same result
//!   as in one, down to what is left in the buffer;
//! - `Partial` leaves the buffer as it was;
//! - on a head: it is at most the input and at most `max_bytes`, ends in
//!   an empty line, and the buffer keeps exactly the input's tail;
//! - framing, on the parsed headers: a `Content-Length` that survives is
//!   the only one, and the framing is `Length` of it (`Empty` for 0); a
//!   `Transfer-Encoding` that survives ends in `chunked` and the framing
//!   is `Chunked` (and only then); never both; no value holds CR, LF or
//!   NUL;
//! - framing, on the head's own lines (read here without `httparse`): a
//!   `Transfer-Encoding` line anywhere means `Chunked`, HTTP/1.1, last
//!   coding of the last line `chunked`, and with `Content-Length` too the
//!   length is gone and the connection will close; otherwise
//!   `Content-Length` lines all agree and give the framing; with neither,
//!   no body;
//! - a refusal that keeps the connection open (`close: false`) comes after
//!   a whole head that declares no body, so the next bytes are the next
//!   request.
//!
//! Input: a first byte choosing the limits (low 2 bits), two bytes giving
//! the split point (big-endian, modulo the length + 1), then the bytes as
//! they come off the wire.
//!
//! Shared by `fuzz/fuzz_targets/h1_head.rs` and
//! `crates/proxy/tests/fuzz_corpus.rs`.

use bytes::BytesMut;
use http::Version;
use http::header;
use tether_proxy::http1::{Framing, Head, Parsed, parse};
use tether_proxy::validate::Reject;

/// (max_bytes, max_headers): the defaults, the smallest a config allows,
/// tighter than a config allows (to reach the limits with short inputs),
/// and more fields than the parser keeps on the stack.
const LIMITS: [(usize, usize); 4] = [(32 * 1024, 100), (8192, 1), (200, 3), (16 * 1024, 300)];

/// The check the fuzz target and the corpus replay run.
pub fn run(data: &[u8]) {
    let [limits, hi, lo, raw @ ..] = data else {
        return;
    };
    let (max_bytes, max_headers) = LIMITS[usize::from(limits & 3)];
    let split = usize::from(u16::from_be_bytes([*hi, *lo])) % (raw.len() + 1);

    let mut buf = BytesMut::from(raw);
    let once = parse(&mut buf, max_bytes, max_headers);
    let consumed = raw.len() - buf.len();
    assert_eq!(
        &buf[..],
        &raw[consumed..],
        "the buffer is not the input's tail"
    );
    match &once {
        Ok(Parsed::Partial) => assert_eq!(consumed, 0, "Partial took bytes"),
        Ok(Parsed::Head(head)) => check_head(head, &raw[..consumed], max_bytes),
        Err(reject) => check_reject(reject, &raw[..consumed]),
    }

    let mut twice = BytesMut::from(&raw[..split]);
    let mut second = parse(&mut twice, max_bytes, max_headers);
    if matches!(second, Ok(Parsed::Partial)) {
        assert_eq!(&twice[..], &raw[..split], "Partial changed the buffer");
        twice.extend_from_slice(&raw[split..]);
        second = parse(&mut twice, max_bytes, max_headers);
    } else {
        twice.extend_from_slice(&raw[split..]);
    }
    assert_eq!(
        format!("{} rest {:?}", meaning(&second), &twice[..]),
        format!("{} rest {:?}", meaning(&once), &buf[..]),
        "read at {split} of {} then the rest, vs all at once",
        raw.len()
    );
}

/// What a result means to the server, leaving out how it is stored
/// (`Head::storage` holds whatever had been read, which differs by reads).
fn meaning(r: &Result<Parsed, Reject>) -> String {
    match r {
        Ok(Parsed::Partial) => "Partial".into(),
        Ok(Parsed::Head(h)) => format!(
            "{:?} {:?} {:?} {:?} {:?} keep_alive {} expect_continue {}",
            h.parts.method,
            h.parts.uri,
            h.parts.version,
            h.parts.headers,
            h.framing,
            h.keep_alive,
            h.expect_continue
        ),
        Err(reject) => format!("{reject:?}"),
    }
}

fn check_head(head: &Head, bytes: &[u8], max_bytes: usize) {
    assert!(
        !bytes.is_empty() && bytes.len() <= max_bytes,
        "head of {} bytes",
        bytes.len()
    );
    assert!(
        bytes.ends_with(b"\n\n") || bytes.ends_with(b"\n\r\n"),
        "a head that does not end in an empty line"
    );
    let h = &head.parts.headers;
    for (name, value) in h {
        assert!(
            !value
                .as_bytes()
                .iter()
                .any(|b| matches!(b, b'\r' | b'\n' | 0)),
            "{name}: {value:?}"
        );
    }
    assert!(
        head.parts
            .uri
            .to_string()
            .bytes()
            .all(|b| b.is_ascii_graphic()),
        "target {:?}",
        head.parts.uri
    );
    assert!(matches!(
        head.parts.version,
        Version::HTTP_10 | Version::HTTP_11
    ));

    // The parsed headers.
    assert!(
        !(h.contains_key(header::CONTENT_LENGTH) && h.contains_key(header::TRANSFER_ENCODING)),
        "Content-Length and Transfer-Encoding both passed"
    );
    let lengths: Vec<_> = h.get_all(header::CONTENT_LENGTH).iter().collect();
    assert!(
        lengths.len() <= 1,
        "{} Content-Length fields passed",
        lengths.len()
    );
    if let Some(v) = lengths.first() {
        let n = digits(v.as_bytes()).expect("a Content-Length that passed is 1*DIGIT");
        assert_eq!(head.framing, by_length(n), "framing vs Content-Length {n}");
    }
    let codings: Vec<_> = h.get_all(header::TRANSFER_ENCODING).iter().collect();
    if let Some(last) = codings.last() {
        assert!(
            last_is_chunked(last.as_bytes()),
            "Transfer-Encoding {last:?} passed"
        );
        assert_eq!(
            head.parts.version,
            Version::HTTP_11,
            "Transfer-Encoding on HTTP/1.0"
        );
    }
    assert_eq!(
        head.framing == Framing::Chunked,
        !codings.is_empty(),
        "framing {:?} vs Transfer-Encoding {codings:?}",
        head.framing
    );

    // The head's own lines.
    let lines = Lines::read(bytes).expect("a head that parsed has a request line");
    let te = lines.values(b"transfer-encoding");
    let cl = lines.values(b"content-length");
    if let Some(last) = te.last() {
        assert_eq!(
            head.framing,
            Framing::Chunked,
            "Transfer-Encoding: {last:?} not chunked"
        );
        assert!(last_is_chunked(last), "Transfer-Encoding: {last:?} passed");
        assert!(
            lines.version.ends_with(b"HTTP/1.1"),
            "Transfer-Encoding on HTTP/1.0"
        );
        if !cl.is_empty() {
            assert!(
                !h.contains_key(header::CONTENT_LENGTH),
                "the length survived TE"
            );
            assert!(
                !head.keep_alive,
                "Content-Length and Transfer-Encoding kept alive"
            );
        }
    } else if let Some(first) = cl.first() {
        let n = digits(first).expect("a Content-Length that passed is 1*DIGIT");
        for v in &cl {
            assert_eq!(digits(v), Some(n), "Content-Length lines disagree: {cl:?}");
        }
        assert_eq!(
            head.framing,
            by_length(n),
            "framing vs Content-Length lines"
        );
    } else {
        assert_eq!(
            head.framing,
            Framing::Empty,
            "a body with no framing header"
        );
    }
    if head.expect_continue {
        assert_eq!(head.parts.version, Version::HTTP_11);
    }
}

/// A refusal is 4xx, and one that leaves the connection open must leave it
/// at the start of the next request.
fn check_reject(reject: &Reject, bytes: &[u8]) {
    assert!(reject.status.is_client_error(), "{reject:?}");
    if reject.close {
        return;
    }
    assert!(
        bytes.ends_with(b"\n\n") || bytes.ends_with(b"\n\r\n"),
        "{reject:?} kept the connection open inside a head"
    );
    let lines = Lines::read(bytes).expect("a whole head");
    let te = lines.values(b"transfer-encoding");
    let cl = lines.values(b"content-length");
    assert!(
        te.is_empty() && cl.iter().all(|v| digits(v) == Some(0)),
        "{reject:?} kept the connection open after a head declaring a body \
         (Transfer-Encoding {te:?}, Content-Length {cl:?}): the body would be read as the next request"
    );
}

fn by_length(n: u64) -> Framing {
    if n == 0 {
        Framing::Empty
    } else {
        Framing::Length(n)
    }
}

/// `1*DIGIT` as a u64, or `None`.
fn digits(v: &[u8]) -> Option<u64> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

fn last_is_chunked(v: &[u8]) -> bool {
    v.rsplit(|&b| b == b',')
        .next()
        .is_some_and(|c| trim_ows(c).eq_ignore_ascii_case(b"chunked"))
}

/// Without leading and trailing SP and HTAB (OWS, RFC 9110 section 5.6.3).
fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// A head's request line and field lines, read as plainly as possible:
/// lines end at LF (a CR before it dropped), empty lines before the
/// request line are skipped, a field's name runs to the first `:` and its
/// value is the rest without outer SP/HTAB.
struct Lines<'a> {
    version: &'a [u8],
    fields: Vec<(&'a [u8], &'a [u8])>,
}

impl<'a> Lines<'a> {
    fn read(head: &'a [u8]) -> Option<Lines<'a>> {
        let mut lines = head
            .split(|&b| b == b'\n')
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
            .skip_while(|l| l.is_empty());
        let request = lines.next()?;
        let version = request.rsplit(|&b| b == b' ').next()?;
        let fields = lines
            .take_while(|l| !l.is_empty())
            .map(|l| {
                let colon = l.iter().position(|&b| b == b':').unwrap_or(l.len());
                let value = l.get(colon + 1..).unwrap_or_default();
                (&l[..colon], trim_ows(value))
            })
            .collect();
        Some(Lines { version, fields })
    }

    fn values(&self, name: &[u8]) -> Vec<&'a [u8]> {
        self.fields
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|&(_, v)| v)
            .collect()
    }
}
