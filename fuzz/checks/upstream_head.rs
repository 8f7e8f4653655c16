//! Fuzz check: how the proxy's HTTP/1.1 client reads a backend's response
//! head (`tether_proxy::http1::client::read_head`, the rules an exchange
//! applies as bytes arrive).
//!
//! Promises checked:
//! - nothing panics;
//! - the answer does not depend on how the bytes arrived: every prefix
//!   shorter than the head is "not all there yet", and the prefix that
//!   ends the head gives the same answer as the whole input;
//! - where the head ends is where httparse says it ends (no byte can be
//!   read as a field by one and as body by the other);
//! - an interim `1xx` is never the final answer; `101` is, and only it
//!   switches protocols;
//! - the body's framing follows RFC 9112 section 6.3: nothing after a
//!   `HEAD`, `204` or `304`; `Transfer-Encoding` wins over and removes
//!   `Content-Length`, and a connection that carried both is not reused;
//!   a length is the one the head declared;
//! - a connection is only ever reused after a body whose end is known
//!   from its framing, and never after `Connection: close`;
//! - the reading an HTTP/1 client's exchange makes, which leaves the
//!   fields in the head's bytes (`scan_head`), accepts and refuses the
//!   same heads with the same status, framing and reuse, and the fields it
//!   passes back are the map's less the hop-by-hop and sticky ones.
//!
//! Input: a first byte whose low bit says whether the request was `HEAD`,
//! then the bytes the backend sent.
//!
//! Shared by `fuzz/fuzz_targets/upstream_head.rs` and
//! `crates/proxy/tests/fuzz_corpus.rs`.

use std::collections::BTreeMap;

use http::{HeaderMap, StatusCode, header};
use tether_proxy::http1::Scanned;
use tether_proxy::http1::client::{read_head, scan_head};
use tether_proxy::http1::{Framing, raw};

pub fn run(data: &[u8]) {
    let Some((&first, wire)) = data.split_first() else {
        return;
    };
    let head_request = first & 1 == 1;
    let whole = read_head(wire, head_request);
    same_by_both_readings(wire, head_request, whole.as_ref());
    let Some(answer) = whole else {
        // Not all there: no prefix can be either.
        for cut in 0..wire.len() {
            assert!(
                read_head(&wire[..cut], head_request).is_none(),
                "prefix {cut} answered"
            );
        }
        return;
    };
    let end = match &answer {
        Ok(view) => view.len,
        Err(_) => wire.len(),
    };
    if let Ok(view) = &answer {
        for cut in 0..view.len {
            assert!(
                read_head(&wire[..cut], head_request).is_none(),
                "a head of {} bytes answered at {cut}",
                view.len
            );
        }
        let again = read_head(&wire[..view.len], head_request)
            .expect("the head's own bytes are a whole head")
            .expect("and the same answer");
        assert_eq!(again.response.status(), view.response.status());
        assert_eq!(again.body, view.body);
        assert_eq!(again.reusable, view.reusable);
        check_view(wire, head_request, view);
    }
    assert!(end <= wire.len());
}

fn check_view(wire: &[u8], head_request: bool, view: &tether_proxy::http1::client::HeadView) {
    let status = view.response.status();
    let headers = view.response.headers();
    assert!(
        !status.is_informational() || status == StatusCode::SWITCHING_PROTOCOLS,
        "interim {status} returned as final"
    );
    assert_eq!(
        view.body == Framing::Upgrade,
        status == StatusCode::SWITCHING_PROTOCOLS
    );
    if status != StatusCode::SWITCHING_PROTOCOLS
        && (head_request || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED)
    {
        assert_eq!(
            view.body,
            Framing::Empty,
            "{status} after HEAD={head_request}"
        );
    }
    let te = headers.contains_key(header::TRANSFER_ENCODING);
    if te && !matches!(view.body, Framing::Empty | Framing::Upgrade) {
        assert!(
            !headers.contains_key(header::CONTENT_LENGTH),
            "Content-Length kept beside Transfer-Encoding"
        );
    }
    if let Framing::Length(n) = view.body {
        let declared: Vec<_> = headers.get_all(header::CONTENT_LENGTH).iter().collect();
        assert_eq!(declared.len(), 1, "one length field");
        assert_eq!(
            declared[0]
                .to_str()
                .ok()
                .and_then(|v| v.parse::<u64>().ok()),
            Some(n)
        );
    }
    if view.reusable {
        assert!(
            matches!(
                view.body,
                Framing::Empty | Framing::Length(_) | Framing::Chunked
            ),
            "reused after a {:?} body",
            view.body
        );
        let close = headers.get_all(header::CONNECTION).iter().any(|v| {
            v.as_bytes()
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
        });
        assert!(!close, "reused after Connection: close");
    }
    // httparse agrees on where this head ends.
    let mut start = 0;
    let mut last = None;
    while start < view.len {
        let mut fields = [httparse::EMPTY_HEADER; 128];
        let mut res = httparse::Response::new(&mut fields);
        match res.parse(&wire[start..]) {
            Ok(httparse::Status::Complete(n)) => {
                last = Some(start);
                start += n;
            }
            other => panic!("httparse: {other:?} at {start} of a {}-byte head", view.len),
        }
    }
    assert_eq!(start, view.len, "httparse ends the head elsewhere");
    assert!(last.is_some());
}

/// The raw reading agrees with the map's (see the module's promises).
fn same_by_both_readings(
    wire: &[u8],
    head_request: bool,
    map: Option<&Result<tether_proxy::http1::client::HeadView, tether_proxy::upstream::BadHead>>,
) {
    let scanned = scan_head(wire, head_request);
    let (map, scanned) = match (map, scanned) {
        (None, None) => return,
        (Some(Err(_)), Some(Err(_))) => return,
        (Some(Ok(map)), Some(Ok(scanned))) => (map, scanned),
        (map, scanned) => panic!("the readings disagree: {map:?} and {scanned:?}"),
    };
    let (_, len, scanned, scanned_head) = scanned;
    assert_eq!(len, map.len, "the readings end the head apart");
    assert_eq!(scanned.status(), map.response.status());
    let Scanned::Raw {
        framing,
        reusable,
        flags,
        kept,
        ..
    } = scanned
    else {
        // Only a `101`, a `Connection` that names fields, a bare LF line
        // end or a head cut into many runs keeps the map.
        let named = map
            .response
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .any(|v| {
                v.as_bytes()
                    .split(|&b| b == b',')
                    .map(<[u8]>::trim_ascii)
                    .any(|t| {
                        !t.is_empty()
                            && !t.eq_ignore_ascii_case(b"close")
                            && !t.eq_ignore_ascii_case(b"keep-alive")
                    })
            });
        let bare_lf = wire[..len]
            .windows(2)
            .any(|w| w[1] == b'\n' && w[0] != b'\r');
        assert!(
            map.response.status() == StatusCode::SWITCHING_PROTOCOLS
                || named
                || bare_lf
                || map.response.headers().len() > 8,
            "kept in the map for no reason"
        );
        return;
    };
    assert_eq!(framing, map.body);
    assert_eq!(reusable, map.reusable);
    let head = raw::RawHead::new(bytes::Bytes::copy_from_slice(&scanned_head[..kept]), flags);
    let headers = map.response.headers();
    assert_eq!(head.has_date(), headers.contains_key(header::DATE));
    assert_eq!(
        head.declares_length(),
        headers.contains_key(header::CONTENT_LENGTH)
    );
    let written = head.fields();
    assert!(
        written.is_empty() || written.ends_with(b"\r\n"),
        "lines end in CRLF"
    );
    assert!(
        !written.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r'),
        "no bare LF"
    );
    let mut from_raw: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
    for (name, value) in raw::fields(written) {
        let name = String::from_utf8(name.to_ascii_lowercase()).expect("a token");
        from_raw.entry(name).or_default().push(value.to_vec());
    }
    assert_eq!(
        from_raw,
        passed_on(headers),
        "{:?}",
        String::from_utf8_lossy(written)
    );
}

/// The map's fields a client gets: hop-by-hop and sticky ones out.
fn passed_on(headers: &HeaderMap) -> BTreeMap<String, Vec<Vec<u8>>> {
    const DROPPED: [&str; 11] = [
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "x-target-server",
        "x-target-server-last-use",
    ];
    let mut out: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
    for (name, value) in headers {
        if !DROPPED.contains(&name.as_str()) {
            out.entry(name.as_str().to_owned())
                .or_default()
                .push(value.as_bytes().to_vec());
        }
    }
    out
}
