//! Heads off the wire, for both roles: `httparse` finds the lines, this
//! module applies the framing rules a proxy must get exactly right (RFC
//! 9112 sections 6 and 7), once for requests and responses alike, and
//! builds the `http` parts the rest of the proxy works on. The parts share
//! one allocation with the head's bytes: header values are slices of it,
//! never copies.
//!
//! A request head ([`parse`]) is refused with a [`Reject`]; a response
//! head ([`parse_response`]) with a [`BadHead`] (the exchange answers
//! `502`).
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
//! The refusals shared with `validate` (`BAD_TE`, `TE_HTTP10`,
//! `BAD_LENGTH`, `BAD_TARGET`) are defined there, once. `validate` then
//! applies the rules that need the whole head (Host,
//! target forms, the sticky headers' twins, the codings it can carry).

use std::cell::RefCell;
use std::mem::MaybeUninit;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode, Uri, Version};

use super::raw::{self, Plan, RawFlags};
use super::{Framing, pool};
use crate::headers;
use crate::upstream::BadHead;
use crate::validate::{BAD_LENGTH, BAD_TARGET, BAD_TE, Reject, TE_HTTP10};

/// Heads are parsed with a scratch array on the stack (uninitialised:
/// nothing to clear) when `max_headers` is at most this, on the heap above
/// it. Above the default `max_headers` (100): at 64, every request under
/// the default paid one 3 KiB allocation for it (dhat). 4 KiB of stack in a
/// plain function, never in a future.
const STACK_HEADERS: usize = 128;
/// The longest target accepted at all (hyper's figure, kept).
const MAX_TARGET: usize = 65_534;
/// As many response header fields as hyper's client took.
pub const MAX_RESPONSE_HEADERS: usize = 100;

/// A parsed request head.
#[derive(Debug)]
pub struct Head {
    pub parts: Parts,
    pub framing: Framing,
    /// Whether the connection may serve another request after this one.
    pub keep_alive: bool,
    /// `Expect: 100-continue` on HTTP/1.1: the client waits for a `100`.
    pub expect_continue: bool,
    /// The buffer the parts are slices of; once they are all dropped it
    /// can be reused (see `pool::recycle`).
    pub storage: Bytes,
}

/// Boxes for heads kept per thread: a head is boxed so that an idle
/// connection's future does not hold its room, and the box is one of an
/// HTTP/1 request's allocations unless it is reused (see [`unbox`]).
const BOXES_KEPT: usize = 64;

thread_local! {
    // The boxes are what is kept: their allocations are reused.
    #[allow(clippy::vec_box)]
    static BOXES: RefCell<Vec<Box<Head>>> = const { RefCell::new(Vec::new()) };
}

impl Head {
    /// A head of nothing, left in a box whose head was taken out.
    fn vacant() -> Head {
        let (parts, ()) = Request::new(()).into_parts();
        Head {
            parts,
            framing: Framing::Empty,
            keep_alive: false,
            expect_continue: false,
            storage: Bytes::new(),
        }
    }
}

/// `head` in a box, one from this thread's spares if there is one.
fn boxed(head: Head) -> Box<Head> {
    match BOXES.try_with(|b| b.borrow_mut().pop()).ok().flatten() {
        Some(mut spare) => {
            *spare = head;
            spare
        }
        None => Box::new(head),
    }
}

/// Takes the head out of its box and keeps the box for the next one.
pub fn unbox(mut boxed: Box<Head>) -> Head {
    let head = std::mem::replace(&mut *boxed, Head::vacant());
    let _ = BOXES.try_with(|b| {
        let mut b = b.borrow_mut();
        if b.len() < BOXES_KEPT {
            b.push(boxed);
        }
    });
    head
}

/// The result of looking at the bytes read so far.
#[derive(Debug)]
pub enum Parsed {
    /// A whole head; its bytes have been taken off the front of the buffer.
    Head(Box<Head>),
    /// More bytes are needed.
    Partial,
}

const BAD_REQUEST: Reject = Reject {
    status: StatusCode::BAD_REQUEST,
    message: "Bad request",
    close: true,
};
const HEAD_TOO_LARGE: Reject = Reject {
    status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
    message: "Request header fields too large",
    close: true,
};
/// Past any target a server takes (`validate` applies the configured
/// limit, which is lower, and keeps the connection).
const TARGET_TOO_LONG: Reject = Reject {
    status: StatusCode::URI_TOO_LONG,
    message: "URI too long",
    close: true,
};

/// Looks for a whole head at the front of `buf`. `max_bytes` bounds the
/// head (431 past it), `max_headers` its fields. On a head, `buf` keeps
/// what followed it.
pub fn parse(buf: &mut BytesMut, max_bytes: usize, max_headers: usize) -> Result<Parsed, Reject> {
    // Frozen first, so the parts can be slices of the bytes `httparse`
    // looked at: no copies, and no offsets to keep on the side.
    let whole = std::mem::take(buf).freeze();
    let result = if max_headers <= STACK_HEADERS {
        let mut scratch = [const { MaybeUninit::uninit() }; STACK_HEADERS];
        parse_frozen(&whole, max_bytes, &mut scratch[..max_headers])
    } else {
        let mut scratch = Vec::with_capacity(max_headers);
        scratch.resize_with(max_headers, MaybeUninit::uninit);
        parse_frozen(&whole, max_bytes, &mut scratch)
    };
    match result {
        Ok(Some((len, head))) => {
            if whole.len() > len {
                // Pipelined requests or body bytes: rare enough to copy.
                *buf = BytesMut::from(&whole[len..]);
            }
            Ok(Parsed::Head(boxed(Head {
                storage: whole,
                ..head
            })))
        }
        Ok(None) => {
            *buf = whole
                .try_into_mut()
                .unwrap_or_else(|shared| BytesMut::from(&shared[..]));
            Ok(Parsed::Partial)
        }
        Err((reject, consumed)) => {
            let rest = consumed.map_or(&whole[..], |len| &whole[len..]);
            *buf = BytesMut::from(rest);
            Err(reject)
        }
    }
}

/// A refusal, and the head's length when the head was whole.
type Refused = (Reject, Option<usize>);

/// A head at the front of `whole` and its length; `None` when it is not
/// all there yet. A refusal says how much it consumed when the head was
/// whole (the connection may go on after some refusals).
fn parse_frozen<'b>(
    whole: &'b Bytes,
    max_bytes: usize,
    scratch: &mut [MaybeUninit<httparse::Header<'b>>],
) -> Result<Option<(usize, Head)>, Refused> {
    // Only the first `max_bytes` are looked at, so the answer to a head
    // does not depend on how its bytes were split into reads.
    let view = &whole[..whole.len().min(max_bytes)];
    let mut req = httparse::Request::new(&mut []);
    let status = match req.parse_with_uninit_headers(view, scratch) {
        Ok(s) => s,
        Err(httparse::Error::TooManyHeaders) => return Err((HEAD_TOO_LARGE, None)),
        Err(_) => return Err((BAD_REQUEST, None)),
    };
    let httparse::Status::Complete(len) = status else {
        if view.len() >= max_bytes {
            // Partial and already at the limit: a head that fits would
            // have ended by now.
            return Err((HEAD_TOO_LARGE, None));
        }
        return Ok(None);
    };
    if len > max_bytes {
        return Err((HEAD_TOO_LARGE, None));
    }
    build(whole, &req)
        .map(|head| Some((len, head)))
        .map_err(|r| (r, Some(len)))
}

fn build(whole: &Bytes, req: &httparse::Request<'_, '_>) -> Result<Head, Reject> {
    let method =
        Method::from_bytes(req.method.ok_or(BAD_REQUEST)?.as_bytes()).map_err(|_| BAD_REQUEST)?;
    let version = match req.version {
        Some(0) => Version::HTTP_10,
        Some(1) => Version::HTTP_11,
        _ => return Err(BAD_REQUEST),
    };
    let target = req.path.ok_or(BAD_REQUEST)?.as_bytes();
    if target.len() > MAX_TARGET {
        return Err(TARGET_TOO_LONG);
    }
    // A target is visible ASCII (RFC 9112 section 3.2); `http::Uri` would
    // take raw UTF-8, which other parsers read differently. A bad target is
    // refused only once the framing is known (below): the connection can
    // go on only if no body follows.
    let uri = target
        .iter()
        .all(u8::is_ascii_graphic)
        .then(|| Uri::from_maybe_shared(whole.slice_ref(target)).ok())
        .flatten();

    // Room for the forwarding headers the proxy adds, so they do not make
    // the map grow.
    let mut headers = pool::header_map(req.headers.len() + 6);
    let f = fields(
        req.headers,
        version,
        Role::Request,
        Some((whole, &mut headers)),
    )
    .map_err(|e| match e {
        FieldError::Name | FieldError::Value => BAD_REQUEST,
        FieldError::Length | FieldError::Conflict => BAD_LENGTH,
        FieldError::TeHttp10 => TE_HTTP10,
    })?;
    let Fields {
        length,
        transfer_encoding: te_seen,
        chunked,
        mut close,
        keep_alive: keep_alive_token,
        expect_continue,
        ..
    } = f;
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
    let Some(uri) = uri else {
        return Err(Reject {
            close: framing != Framing::Empty || !keep_alive,
            ..BAD_TARGET
        });
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
        storage: Bytes::new(),
    })
}

/// Whose head is read: the rules differ only where RFC 9112 says so.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Request,
    Response,
}

/// What a head's framing fields said.
#[derive(Default)]
struct Fields {
    length: Option<u64>,
    transfer_encoding: bool,
    /// The last coding of the last `Transfer-Encoding` line is `chunked`.
    chunked: bool,
    /// `Connection: close`.
    close: bool,
    /// `Connection: keep-alive`.
    keep_alive: bool,
    /// `Connection` names other fields (to drop on the way through).
    names_fields: bool,
    /// `Expect: 100-continue` on an HTTP/1.1 request.
    expect_continue: bool,
    /// A `Date` field.
    date: bool,
}

/// Why a head's fields were refused.
enum FieldError {
    Name,
    Value,
    /// A `Content-Length` that is not 1*DIGIT or overflows.
    Length,
    /// Two `Content-Length` lines that differ.
    Conflict,
    /// `Transfer-Encoding` on an HTTP/1.0 request.
    TeHttp10,
}

/// The fields the rules below read, told apart by their raw names.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Known {
    ContentLength,
    TransferEncoding,
    Connection,
    Expect,
    Date,
    Other,
}

fn known(name: &[u8]) -> Known {
    let is = |n: &[u8]| name.eq_ignore_ascii_case(n);
    match name.len() {
        14 if is(b"content-length") => Known::ContentLength,
        17 if is(b"transfer-encoding") => Known::TransferEncoding,
        10 if is(b"connection") => Known::Connection,
        6 if is(b"expect") => Known::Expect,
        4 if is(b"date") => Known::Date,
        _ => Known::Other,
    }
}

/// Reads what a head's fields say about framing and the connection and,
/// given a map, puts them in it (values are slices of the head's bytes,
/// `whole`; an equal repeat of `Content-Length` is merged into the one
/// field). Without a map the fields stay where they are (`raw`):
/// `httparse` has already checked their names and values by the same
/// rules as `http`'s types.
fn fields(
    raw: &[httparse::Header<'_>],
    version: Version,
    role: Role,
    mut headers: Option<(&Bytes, &mut HeaderMap)>,
) -> Result<Fields, FieldError> {
    let mut f = Fields::default();
    for field in raw {
        let value = field.value;
        let kind = known(field.name.as_bytes());
        match kind {
            Known::ContentLength => {
                let n = content_length(value).ok_or(FieldError::Length)?;
                match f.length {
                    Some(prev) if prev != n => return Err(FieldError::Conflict),
                    Some(_) => continue,
                    None => f.length = Some(n),
                }
            }
            Known::TransferEncoding => {
                if role == Role::Request && version == Version::HTTP_10 {
                    return Err(FieldError::TeHttp10);
                }
                // Only the last coding of the last line decides; `validate`
                // refuses the request lists it cannot carry.
                f.transfer_encoding = true;
                f.chunked = last_coding_is_chunked(value);
            }
            Known::Connection => {
                for token in headers::tokens(value) {
                    let close = token.eq_ignore_ascii_case(b"close");
                    let keep_alive = token.eq_ignore_ascii_case(b"keep-alive");
                    f.close |= close;
                    f.keep_alive |= keep_alive;
                    f.names_fields |= !close && !keep_alive && !token.is_empty();
                }
            }
            Known::Expect => {
                f.expect_continue |= role == Role::Request
                    && version == Version::HTTP_11
                    && value.eq_ignore_ascii_case(b"100-continue");
            }
            Known::Date => f.date = true,
            Known::Other => {}
        }
        if let Some((whole, headers)) = headers.as_mut() {
            let name =
                HeaderName::from_bytes(field.name.as_bytes()).map_err(|_| FieldError::Name)?;
            let value = HeaderValue::from_maybe_shared(whole.slice_ref(value))
                .map_err(|_| FieldError::Value)?;
            headers.append(name, value);
        }
    }
    Ok(f)
}

/// A response head, its body's framing, and whether the backend keeps the
/// connection open after it.
pub type ResponseHead = (Response<()>, Framing, bool);

type Scratch<'b> = [MaybeUninit<httparse::Header<'b>>; MAX_RESPONSE_HEADERS];

/// The length of the head at the front of `buf`, once its empty line is
/// in (`\n` alone ends lines too, as `httparse` allows).
pub fn head_end(buf: &[u8]) -> Option<usize> {
    let mut i = buf.iter().position(|&b| b == b'\n')?;
    loop {
        let rest = &buf[i + 1..];
        match rest {
            [b'\n', ..] => return Some(i + 2),
            [b'\r', b'\n', ..] => return Some(i + 3),
            _ => {}
        }
        i += 1 + rest.iter().position(|&b| b == b'\n')?;
    }
}

/// A `1xx` other than `101`: the final response is still to come.
pub fn is_interim(status: StatusCode) -> bool {
    status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS
}

/// Parses one whole response head (`head_end` found its end), answering a
/// `HEAD` request when `head_request`.
pub fn parse_response(head: &Bytes, head_request: bool) -> Result<ResponseHead, BadHead> {
    let mut headers = pool::header_map(16);
    let (status, framing, reusable, f, _) =
        read_response(head, head_request, Some((head, &mut headers)))?;
    if f.transfer_encoding && !matches!(framing, Framing::Empty | Framing::Upgrade) {
        // Transfer-Encoding overrides Content-Length (RFC 9112 section
        // 6.3).
        headers.remove(header::CONTENT_LENGTH);
    }
    let mut res = Response::new(());
    *res.status_mut() = status;
    *res.version_mut() = Version::HTTP_11;
    *res.headers_mut() = headers;
    Ok((res, framing, reusable))
}

/// A response head checked by the rules of [`parse_response`] with its
/// fields left in its bytes.
#[derive(Debug)]
pub enum Scanned {
    /// What an HTTP/1 client can be sent as it is (see `raw`).
    Raw {
        status: StatusCode,
        framing: Framing,
        reusable: bool,
        flags: RawFlags,
        /// The fields the client gets are this many bytes at the front of
        /// the head (see `raw::compact`).
        kept: usize,
    },
    /// A head only the map can carry, and its status: a `101`, or one
    /// whose `Connection` names fields. [`parse_response`] reads it.
    Map(StatusCode),
}

impl Scanned {
    pub fn status(&self) -> StatusCode {
        match self {
            Scanned::Raw { status, .. } | Scanned::Map(status) => *status,
        }
    }
}

/// Checks a whole response head as [`parse_response`] does, without
/// building its map where the head can go back as it is: then the fields
/// a client gets are moved to the front of `head` (its other bytes are
/// left as they fall).
pub fn scan_response(head: &mut [u8], head_request: bool) -> Result<Scanned, BadHead> {
    let (status, framing, reusable, f, plan) = read_response(head, head_request, None)?;
    let plan = match plan {
        Some(plan) if status != StatusCode::SWITCHING_PROTOCOLS && !f.names_fields => plan,
        _ => return Ok(Scanned::Map(status)),
    };
    // Beside a body that is not read by its framing (`HEAD`, `204`,
    // `304`), the fields stay as they are, as in `parse_response`.
    let length_kept = f.length.is_some() && !(f.transfer_encoding && framing != Framing::Empty);
    let kept = raw::compact(head, &plan);
    Ok(Scanned::Raw {
        status,
        framing,
        reusable,
        flags: RawFlags::new(length_kept, f.date),
        kept,
    })
}

/// What [`read_response`] makes of a head: status, framing, reuse, what
/// the fields said, and (without a map) which lines a client gets.
type ReadResponse = (StatusCode, Framing, bool, Fields, Option<Plan>);

/// The rules both readings of a response head apply; the fields go into
/// `headers` when given, else the lines to keep are planned.
fn read_response(
    head: &[u8],
    head_request: bool,
    headers: Option<(&Bytes, &mut HeaderMap)>,
) -> Result<ReadResponse, BadHead> {
    let planned = headers.is_none();
    let mut scratch: Scratch<'_> = [const { MaybeUninit::uninit() }; MAX_RESPONSE_HEADERS];
    let mut parsed = httparse::Response::new(&mut []);
    match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut parsed,
        head,
        &mut scratch,
    ) {
        // Where the head ends must be the same for `head_end` and for
        // httparse, or body bytes could be read as fields and fields as
        // body.
        Ok(httparse::Status::Complete(len)) if len == head.len() => {}
        Ok(httparse::Status::Complete(_)) => return Err(BadHead("head length")),
        Ok(httparse::Status::Partial) => return Err(BadHead("incomplete")),
        Err(e) => return Err(BadHead(httparse_reason(e))),
    }
    let status = parsed
        .code
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or(BadHead("status"))?;
    let http11 = parsed.version == Some(1);
    let version = if http11 {
        Version::HTTP_11
    } else {
        Version::HTTP_10
    };
    let f = fields(parsed.headers, version, Role::Response, headers).map_err(|e| match e {
        FieldError::Name => BadHead("field name"),
        FieldError::Value => BadHead("field value"),
        FieldError::Length => BadHead("content-length"),
        FieldError::Conflict => BadHead("conflicting content-length"),
        FieldError::TeHttp10 => unreachable!("a request rule"),
    })?;
    let bodiless = head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let framing = if status == StatusCode::SWITCHING_PROTOCOLS {
        Framing::Upgrade
    } else if bodiless {
        Framing::Empty
    } else if f.transfer_encoding {
        // Transfer-Encoding overrides Content-Length (RFC 9112 section
        // 6.3); a message carrying both is not trusted with the
        // connection afterwards.
        if f.chunked && http11 {
            Framing::Chunked
        } else {
            Framing::Close
        }
    } else {
        match f.length {
            Some(0) => Framing::Empty,
            Some(n) => Framing::Length(n),
            None => Framing::Close,
        }
    };
    let persistent = if http11 {
        !f.close
    } else {
        f.keep_alive && !f.close
    };
    let reusable = persistent
        && !(f.transfer_encoding && f.length.is_some())
        && !matches!(framing, Framing::Close | Framing::Upgrade);
    let drop_length = f.transfer_encoding && !matches!(framing, Framing::Empty | Framing::Upgrade);
    let plan = planned
        .then(|| raw::plan(head, parsed.headers, drop_length))
        .flatten();
    Ok((status, framing, reusable, f, plan))
}

/// httparse's reason, as fixed text.
fn httparse_reason(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => "invalid header name",
        httparse::Error::HeaderValue => "invalid header value",
        httparse::Error::NewLine => "invalid new line",
        httparse::Error::Status => "invalid response status",
        httparse::Error::Token => "invalid token",
        httparse::Error::TooManyHeaders => "too many headers",
        httparse::Error::Version => "invalid HTTP version",
    }
}

/// `1*DIGIT` that fits a u64; nothing else (no sign, no list, no spaces:
/// `httparse` has already trimmed the field's outer whitespace).
pub(crate) fn content_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 19 {
        return None;
    }
    value.iter().try_fold(0u64, |n, &b| {
        b.is_ascii_digit().then(|| n * 10 + u64::from(b - b'0'))
    })
}

/// Whether the last coding in a `Transfer-Encoding` value is `chunked`.
pub(crate) fn last_coding_is_chunked(value: &[u8]) -> bool {
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

    #[test]
    fn a_heads_box_is_reused_by_the_next_head() {
        let first = match head(b"GET /a HTTP/1.1\r\nhost: a\r\n\r\n") {
            Ok(Parsed::Head(h)) => h,
            other => panic!("{other:?}"),
        };
        let at = &*first as *const Head;
        let taken = unbox(first);
        assert_eq!(taken.parts.uri, "/a");
        let second = match head(b"GET /b HTTP/1.1\r\nhost: b\r\n\r\n") {
            Ok(Parsed::Head(h)) => h,
            other => panic!("{other:?}"),
        };
        assert_eq!(&*second as *const Head, at, "the same box");
        assert_eq!(second.parts.uri, "/b");
        assert_eq!(second.parts.headers["host"], "b");
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
    fn a_bad_target_keeps_the_connection_only_without_a_body() {
        let reject = |raw: &[u8]| match head(raw) {
            Err(r) => r,
            other => panic!("{other:?}"),
        };
        let r = reject(b"GET /\xc3\xa9 HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!((r.status.as_u16(), r.close), (400, false));
        let r = reject(b"POST /\xc3\xa9 HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello");
        assert_eq!((r.status.as_u16(), r.close), (400, true));
        let r = reject(b"POST /\xc3\xa9 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!((r.status.as_u16(), r.close), (400, true));
    }

    #[test]
    fn the_answer_does_not_depend_on_how_reads_fall() {
        // Over the limit, and broken only past it.
        let raw = b"GET / HTTP/1.1\r\nX: aaaaaaaaaaaaaaaaaaaa\x01\r\n\r\n";
        let mut whole = BytesMut::from(&raw[..]);
        let mut part = BytesMut::from(&raw[..20]);
        let one = parse(&mut whole, 20, 10).map(|_| ()).unwrap_err().status;
        let first = parse(&mut part, 20, 10).map(|_| ()).unwrap_err().status;
        assert_eq!(one, first);
        assert_eq!(one, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
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

    fn response(raw: &[u8], head_request: bool) -> (Response<()>, Framing, bool) {
        let head = Bytes::copy_from_slice(raw);
        parse_response(&head, head_request).expect("valid head")
    }

    #[test]
    fn the_head_ends_at_the_first_empty_line() {
        assert_eq!(head_end(b"HTTP/1.1 200 OK\r\n\r\nbody"), Some(19));
        assert_eq!(head_end(b"HTTP/1.1 200 OK\n\nbody"), Some(17));
        assert_eq!(head_end(b"HTTP/1.1 200 OK\r\na: b\r\n"), None);
        assert_eq!(head_end(b"HTTP/1.1 200 OK\r\na: b\r\n\r"), None);
        assert_eq!(head_end(b""), None);
    }

    #[test]
    fn response_framing_follows_rfc_9112() {
        let (_, f, reuse) = response(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", false);
        assert!(matches!(f, Framing::Length(5)) && reuse);
        let (_, f, _) = response(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", true);
        assert!(matches!(f, Framing::Empty));
        let (_, f, reuse) = response(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
            false,
        );
        assert!(matches!(f, Framing::Chunked) && reuse);
        let (res, f, reuse) = response(
            b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n",
            false,
        );
        assert!(matches!(f, Framing::Chunked) && !reuse);
        assert!(!res.headers().contains_key(header::CONTENT_LENGTH));
        let (_, f, reuse) = response(b"HTTP/1.1 200 OK\r\n\r\n", false);
        assert!(matches!(f, Framing::Close) && !reuse);
        let (_, f, reuse) = response(b"HTTP/1.1 204 No Content\r\n\r\n", false);
        assert!(matches!(f, Framing::Empty) && reuse);
        let (_, _, reuse) = response(
            b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
            false,
        );
        assert!(!reuse);
        let (_, _, reuse) = response(b"HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n", false);
        assert!(!reuse);
        let (_, _, reuse) = response(
            b"HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 0\r\n\r\n",
            false,
        );
        assert!(reuse);
        let (_, f, reuse) = response(
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n",
            false,
        );
        assert!(matches!(f, Framing::Upgrade) && !reuse);
    }

    #[test]
    fn bad_lengths_are_refused() {
        for raw in [
            &b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 1,1\r\n\r\n",
        ] {
            assert!(parse_response(&Bytes::copy_from_slice(raw), false).is_err());
        }
        // An equal repeat is one length.
        let (res, f, _) = response(
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 5\r\n\r\n",
            false,
        );
        assert!(matches!(f, Framing::Length(5)));
        assert_eq!(
            res.headers().get_all(header::CONTENT_LENGTH).iter().count(),
            1
        );
    }
}
