//! A request head off the wire: `httparse` finds the lines, this module
//! applies the framing rules a proxy must get exactly right (RFC 9112
//! sections 6 and 7), and builds the `http` parts the rest of the proxy
//! works on. The parts share one allocation with the head's bytes: header
//! values are slices of it, never copies.
//!
//! What is refused here, before anything can reach a backend:
//! - a request or header line `httparse` cannot read (bad method token,
//!   double spaces, SP in the target, obs-fold, whitespace before a colon,
//!   bare CR, control bytes, any version but HTTP/1.0 and HTTP/1.1): 400;
//! - a target that is not visible ASCII, or that `http::Uri` cannot
//!   hold: 400;
//! - more than `max_headers` fields, or a head over `max_header_bytes`:
//!   431; a target over 65,534 bytes: 414 (`validate` applies the
//!   configured, lower, `max_uri_bytes`);
//! - `Content-Length` that is not 1*DIGIT, overflows, or differs between
//!   lines (equal lines are merged): 400;
//! - `Transfer-Encoding` on HTTP/1.0, or whose last coding is not
//!   `chunked`: 400. With `Content-Length` too, the length is dropped, the
//!   body is read chunked and the connection closes after the exchange.
//!
//! `validate` then applies the rules that need the whole head (Host,
//! target forms, the sticky headers' twins, the codings it can carry).

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, Request, StatusCode, Uri, Version};

use crate::validate::Reject;

/// Heads with more fields than this are parsed with a heap scratch array;
/// the usual case stays on the stack.
const STACK_HEADERS: usize = 128;
/// The longest target accepted at all, as hyper does.
const MAX_TARGET: usize = 65_534;

/// How the request body is framed on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    Empty,
    /// Exactly this many bytes (never zero).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// A parsed request head.
#[derive(Debug)]
pub struct Head {
    pub parts: Parts,
    pub framing: Framing,
    /// Whether the connection may serve another request after this one.
    pub keep_alive: bool,
    /// `Expect: 100-continue` on HTTP/1.1: the client waits for a `100`.
    pub expect_continue: bool,
}

/// The result of looking at the bytes read so far.
#[derive(Debug)]
pub enum Parsed {
    /// A whole head; its bytes have been taken off the front of the buffer.
    Head(Box<Head>),
    /// More bytes are needed.
    Partial,
}

/// Where one header's name and value lie in the head.
#[derive(Clone, Copy, Default)]
struct Indices {
    name: (usize, usize),
    value: (usize, usize),
}

const BAD_REQUEST: Reject = Reject {
    status: StatusCode::BAD_REQUEST,
    message: "Bad request",
    close: true,
};
/// The head was whole and framed; only its target is bad, so the
/// connection can go on.
const BAD_TARGET: Reject = Reject {
    status: StatusCode::BAD_REQUEST,
    message: "Invalid request target",
    close: false,
};
const BAD_LENGTH: Reject = Reject {
    status: StatusCode::BAD_REQUEST,
    message: "Invalid Content-Length",
    close: true,
};
const BAD_TE: Reject = Reject {
    status: StatusCode::BAD_REQUEST,
    message: "Invalid Transfer-Encoding",
    close: true,
};
const TE_HTTP10: Reject = Reject {
    status: StatusCode::BAD_REQUEST,
    message: "Transfer-Encoding is not allowed in HTTP/1.0",
    close: true,
};
const TOO_LARGE: Reject = Reject {
    status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
    message: "Request header fields too large",
    close: true,
};
const URI_TOO_LONG: Reject = Reject {
    status: StatusCode::URI_TOO_LONG,
    message: "URI too long",
    close: true,
};

/// Looks for a whole head at the front of `buf`. `max_bytes` bounds the
/// head (431 past it), `max_headers` its fields.
pub fn parse(buf: &mut BytesMut, max_bytes: usize, max_headers: usize) -> Result<Parsed, Reject> {
    let mut indices = [Indices::default(); STACK_HEADERS];
    let mut heap_indices = Vec::new();
    let (len, method, target, version, count) = {
        // The scratch lines borrow `buf` only inside this block; the head
        // is cut off it afterwards.
        let mut stack = [httparse::EMPTY_HEADER; STACK_HEADERS];
        let mut heap;
        let scratch: &mut [httparse::Header<'_>] = if max_headers <= STACK_HEADERS {
            &mut stack[..max_headers]
        } else {
            heap = vec![httparse::EMPTY_HEADER; max_headers];
            &mut heap
        };
        let mut req = httparse::Request::new(scratch);
        let status = match req.parse(buf) {
            Ok(s) => s,
            Err(httparse::Error::TooManyHeaders) => return Err(TOO_LARGE),
            Err(_) => return Err(BAD_REQUEST),
        };
        let httparse::Status::Complete(len) = status else {
            if buf.len() >= max_bytes {
                // Partial and already at the limit: a head that fits
                // would have ended by now.
                return Err(TOO_LARGE);
            }
            return Ok(Parsed::Partial);
        };
        if len > max_bytes {
            return Err(TOO_LARGE);
        }
        let base = buf.as_ptr() as usize;
        let at = |s: &[u8]| {
            let start = s.as_ptr() as usize - base;
            (start, start + s.len())
        };
        let count = req.headers.len();
        let slots: &mut [Indices] = if count <= STACK_HEADERS {
            &mut indices[..count]
        } else {
            heap_indices.resize(count, Indices::default());
            &mut heap_indices
        };
        for (slot, h) in slots.iter_mut().zip(req.headers.iter()) {
            *slot = Indices {
                name: at(h.name.as_bytes()),
                value: at(h.value),
            };
        }
        let method = req.method.map(|m| at(m.as_bytes())).ok_or(BAD_REQUEST)?;
        let target = req.path.map(|p| at(p.as_bytes())).ok_or(BAD_REQUEST)?;
        let version = match req.version {
            Some(0) => Version::HTTP_10,
            Some(1) => Version::HTTP_11,
            _ => return Err(BAD_REQUEST),
        };
        (len, method, target, version, count)
    };
    let head = buf.split_to(len).freeze();
    let slots = if count <= STACK_HEADERS {
        &indices[..count]
    } else {
        &heap_indices[..]
    };
    build(&head, method, target, version, slots).map(|h| Parsed::Head(Box::new(h)))
}

fn build(
    head: &Bytes,
    method: (usize, usize),
    target: (usize, usize),
    version: Version,
    fields: &[Indices],
) -> Result<Head, Reject> {
    let method = Method::from_bytes(&head[method.0..method.1]).map_err(|_| BAD_REQUEST)?;
    if target.1 - target.0 > MAX_TARGET {
        return Err(URI_TOO_LONG);
    }
    // A target is visible ASCII (RFC 9112 section 3.2); `http::Uri` would
    // take raw UTF-8, which other parsers read differently.
    if !head[target.0..target.1]
        .iter()
        .all(|b| b.is_ascii_graphic())
    {
        return Err(BAD_TARGET);
    }
    let uri = Uri::from_maybe_shared(head.slice(target.0..target.1)).map_err(|_| BAD_TARGET)?;

    let mut headers = HeaderMap::with_capacity(fields.len());
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut te_seen = false;
    let mut close = false;
    let mut keep_alive_token = false;
    let mut expect_continue = false;
    for f in fields {
        let name = HeaderName::from_bytes(&head[f.name.0..f.name.1]).map_err(|_| BAD_REQUEST)?;
        let value = HeaderValue::from_maybe_shared(head.slice(f.value.0..f.value.1))
            .map_err(|_| BAD_REQUEST)?;
        if name == header::CONTENT_LENGTH {
            let n = content_length(value.as_bytes()).ok_or(BAD_LENGTH)?;
            match length {
                Some(prev) if prev != n => return Err(BAD_LENGTH),
                // An equal repeat is merged into the one field.
                Some(_) => continue,
                None => length = Some(n),
            }
        } else if name == header::TRANSFER_ENCODING {
            if version == Version::HTTP_10 {
                return Err(TE_HTTP10);
            }
            // Only the last coding of the last line decides; `validate`
            // refuses the lists it cannot carry.
            te_seen = true;
            chunked = last_coding_is_chunked(value.as_bytes());
        } else if name == header::CONNECTION {
            for token in value.as_bytes().split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    keep_alive_token = true;
                }
            }
        } else if name == header::EXPECT
            && version == Version::HTTP_11
            && value.as_bytes().eq_ignore_ascii_case(b"100-continue")
        {
            expect_continue = true;
        }
        headers.append(name, value);
    }
    if te_seen && !chunked {
        return Err(BAD_TE);
    }
    let framing = if chunked {
        Framing::Chunked
    } else {
        match length {
            Some(0) | None => Framing::Empty,
            Some(n) => Framing::Length(n),
        }
    };
    if chunked && length.is_some() {
        // Both framings: the length is dropped (RFC 9112 section 6.3) and
        // the connection is not trusted with another request.
        headers.remove(header::CONTENT_LENGTH);
        close = true;
    }
    let keep_alive = !close
        && match version {
            Version::HTTP_11 => true,
            _ => keep_alive_token,
        };

    let mut req = Request::new(());
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = version;
    *req.headers_mut() = headers;
    let (parts, ()) = req.into_parts();
    Ok(Head {
        parts,
        framing,
        keep_alive,
        expect_continue,
    })
}

/// `1*DIGIT` that fits a u64; nothing else (no sign, no list, no spaces:
/// `httparse` has already trimmed the field's outer whitespace).
fn content_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 19 {
        return None;
    }
    value.iter().try_fold(0u64, |n, &b| {
        b.is_ascii_digit().then(|| n * 10 + u64::from(b - b'0'))
    })
}

/// Whether the last coding in a `Transfer-Encoding` value is `chunked`.
fn last_coding_is_chunked(value: &[u8]) -> bool {
    value
        .rsplit(|&b| b == b',')
        .next()
        .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &[u8]) -> Result<Parsed, Reject> {
        let mut buf = BytesMut::from(raw);
        parse(&mut buf, 32 * 1024, 100)
    }

    fn whole(raw: &[u8]) -> Head {
        match head(raw) {
            Ok(Parsed::Head(h)) => *h,
            other => panic!("{other:?}"),
        }
    }

    fn status(raw: &[u8]) -> u16 {
        match head(raw) {
            Err(r) => r.status.as_u16(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_simple_get_leaves_the_next_request_in_the_buffer() {
        let mut buf = BytesMut::from(&b"GET /a?b HTTP/1.1\r\nHost: x\r\n\r\nGET /next"[..]);
        let Ok(Parsed::Head(h)) = parse(&mut buf, 1024, 10) else {
            panic!("no head")
        };
        assert_eq!(h.parts.method, Method::GET);
        assert_eq!(h.parts.uri, "/a?b");
        assert_eq!(h.parts.headers[header::HOST], "x");
        assert_eq!(h.framing, Framing::Empty);
        assert!(h.keep_alive);
        assert_eq!(&buf[..], b"GET /next");
    }

    #[test]
    fn partial_heads_wait_for_more_until_the_limit() {
        assert!(matches!(
            head(b"GET / HTTP/1.1\r\nHost"),
            Ok(Parsed::Partial)
        ));
        let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\nX: aaaaaaaaaaaaaaaaaaaa"[..]);
        assert_eq!(
            parse(&mut buf, 16, 10).map(|_| ()).unwrap_err().status,
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
    }

    #[test]
    fn framing_rules() {
        let h =
            whole(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n");
        assert_eq!(h.framing, Framing::Length(5));
        assert_eq!(
            h.parts
                .headers
                .get_all(header::CONTENT_LENGTH)
                .iter()
                .count(),
            1
        );
        assert_eq!(
            status(b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"),
            400
        );
        for bad in [
            "+5",
            "-1",
            "0x5",
            "5 5",
            "",
            "5a",
            "5, 5",
            "99999999999999999999",
        ] {
            let raw = format!("POST / HTTP/1.1\r\nContent-Length: {bad}\r\n\r\n");
            assert_eq!(status(raw.as_bytes()), 400, "{bad:?}");
        }
        let h =
            whole(b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(h.framing, Framing::Chunked);
        assert!(!h.keep_alive);
        assert!(h.parts.headers.get(header::CONTENT_LENGTH).is_none());
        assert_eq!(
            whole(b"POST / HTTP/1.1\r\nTransfer-Encoding: Chunked \r\n\r\n").framing,
            Framing::Chunked
        );
        assert_eq!(
            status(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"),
            400
        );
        assert_eq!(
            status(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
            400
        );
        assert_eq!(
            whole(b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n").framing,
            Framing::Empty
        );
    }

    #[test]
    fn keep_alive_follows_version_and_connection() {
        assert!(!whole(b"GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(whole(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
        assert!(!whole(b"GET / HTTP/1.1\r\nConnection: foo, close\r\n\r\n").keep_alive);
        assert!(whole(b"GET / HTTP/1.1\r\nExpect: 100-Continue\r\n\r\n").expect_continue);
        assert!(!whole(b"GET / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n").expect_continue);
    }

    #[test]
    fn malformed_lines_are_400_and_too_many_fields_431() {
        for bad in [
            &b"GET  / HTTP/1.1\r\n\r\n"[..],
            b"GET / HTTP/1.1x\r\n\r\n",
            b"GET / HTTP/2.0\r\n\r\n",
            b"GET /\r\n\r\n",
            b"GET / HTTP/1.1\r\nX : y\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: y\r\n z\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: a\rb\r\n\r\n",
            b"GET /\xc3\xa9 HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(status(bad), 400, "{:?}", String::from_utf8_lossy(bad));
        }
        let many: String = (0..101).map(|i| format!("X-{i}: v\r\n")).collect();
        assert_eq!(
            status(format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes()),
            431
        );
    }
}
