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
//!   from its framing, and never after `Connection: close`.
//!
//! Input: a first byte whose low bit says whether the request was `HEAD`,
//! then the bytes the backend sent.
//!
//! Shared by `fuzz/fuzz_targets/upstream_head.rs` and
//! `crates/proxy/tests/fuzz_corpus.rs`.

use http::{StatusCode, header};
use tether_proxy::http1::Framing;
use tether_proxy::http1::client::read_head;

pub fn run(data: &[u8]) {
    let Some((&first, wire)) = data.split_first() else {
        return;
    };
    let head_request = first & 1 == 1;
    let whole = read_head(wire, head_request);
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
