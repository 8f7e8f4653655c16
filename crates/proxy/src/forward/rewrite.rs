//! Head edits on the way through, in both directions: what the backend
//! must not see (hop-by-hop fields, `Expect`, the proxy's own cookie) and
//! what it should (forwarding headers, its Host, an upgrade it may take);
//! on the way back, the sticky headers and cookie the client keeps.
//!
//! Plain functions over heads, called between awaits: what they compute
//! and then drop (the client's Host, its Upgrade value) never becomes part
//! of the request's future.

use std::cell::RefCell;

use bytes::BytesMut;
use http::header::{self, HeaderValue};
use http::request::Parts;
use http::uri::PathAndQuery;
use http::{Request, Response, StatusCode, Uri, Version};

use crate::body::ProxyBody;
use crate::config::Settings;
use crate::headers::{self, Peer, X_TARGET_SERVER, X_TARGET_SERVER_LAST_USE};
use crate::sticky as cookie;
use crate::table::Upstream;
use crate::tunnel::ClientUpgrade;

static UPGRADE_VALUE: HeaderValue = HeaderValue::from_static("upgrade");

/// What the request path needs of a rewritten head for its attempts.
pub(super) struct Rewritten {
    /// The origin-form target each attempt is sent with.
    pub path: PathAndQuery,
    /// An upgrade (WebSocket) was asked for: such a request is never sent
    /// twice.
    pub upgrading: bool,
    /// The client's side of the connection, for a tunnel if the backend
    /// agrees to the upgrade.
    pub client_upgrade: Option<ClientUpgrade>,
}

/// Makes the client's head one to send upstream: the proxy's cookie and
/// hop-by-hop fields out, forwarding headers in, HTTP/1.1. The target and
/// Host are set per attempt ([`address`]).
pub(super) fn request(parts: &mut Parts, peer: &Peer, s: &Settings) -> Rewritten {
    if s.sticky.enabled && s.sticky.mode.uses_cookie() {
        // The proxy's cookie is the proxy's business (HAProxy's
        // `indirect`): the backend never sees it.
        cookie::strip_cookie(&mut parts.headers, &s.sticky.cookie_name);
    }

    let path = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let client_host = parts.headers.get(header::HOST).cloned().or_else(|| {
        parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });

    // An upgrade (WebSocket) keeps its Upgrade header; h2c upgrades are
    // refused by treating them as plain requests (RFC 9113 section 3.1).
    let upgrade = (parts.version == Version::HTTP_11)
        .then(|| parts.headers.get(header::UPGRADE).cloned())
        .flatten()
        .filter(|u| !u.as_bytes().eq_ignore_ascii_case(b"h2c"));
    let client_upgrade = if upgrade.is_some() {
        ClientUpgrade::take(&mut parts.extensions)
    } else {
        None
    };

    headers::strip_hop_by_hop(&mut parts.headers);
    // The proxy answers `Expect: 100-continue` itself (the server sends
    // the 100 when the body is first read, i.e. once an upstream is
    // ready).
    parts.headers.remove(header::EXPECT);
    headers::add_forwarding(&mut parts.headers, peer, client_host.clone());
    if s.preserve_host
        && let Some(host) = &client_host
    {
        parts.headers.insert(header::HOST, host.clone());
    }
    let upgrading = upgrade.is_some();
    if let Some(upgrade) = upgrade {
        parts
            .headers
            .insert(header::CONNECTION, UPGRADE_VALUE.clone());
        parts.headers.insert(header::UPGRADE, upgrade);
    }
    parts.version = Version::HTTP_11;
    Rewritten {
        path,
        upgrading,
        client_upgrade,
    }
}

/// Points the request at `upstream`: origin-form target (the
/// connection already goes to the upstream) and its Host.
pub(super) fn address(
    s: &Settings,
    req: &mut Request<ProxyBody>,
    upstream: &Upstream,
    path: &PathAndQuery,
) {
    *req.uri_mut() = Uri::from(path.clone());
    if !s.preserve_host || !req.headers().contains_key(header::HOST) {
        req.headers_mut()
            .insert(header::HOST, upstream.host_header.clone());
    }
}

/// The response going back: hop-by-hop headers out, the sticky headers
/// (and, in cookie modes, the cookie) in.
pub(super) fn response(
    res: Response<ProxyBody>,
    upstream: &Upstream,
    s: &Settings,
    tls: bool,
    now_ms: u64,
) -> Response<ProxyBody> {
    let (mut parts, body) = res.into_parts();
    let switching = parts.status == StatusCode::SWITCHING_PROTOCOLS;
    let upgrade = switching
        .then(|| parts.headers.get(header::UPGRADE).cloned())
        .flatten();
    headers::strip_hop_by_hop(&mut parts.headers);
    if let Some(upgrade) = upgrade {
        parts
            .headers
            .insert(header::CONNECTION, UPGRADE_VALUE.clone());
        parts.headers.insert(header::UPGRADE, upgrade);
    }
    parts
        .headers
        .insert(X_TARGET_SERVER.clone(), upstream.name_header.clone());
    let sticky = &s.sticky;
    let last_use = if sticky.sign_headers {
        cookie::signed_last_use(&sticky.keys, &upstream.name, now_ms)
    } else {
        None
    };
    parts.headers.insert(
        X_TARGET_SERVER_LAST_USE.clone(),
        last_use.unwrap_or_else(|| last_use_header(now_ms)),
    );
    if sticky.enabled
        && sticky.mode.uses_cookie()
        && let Some(set) = cookie::set_cookie(
            &sticky.cookie_name,
            &sticky.keys,
            &upstream.name,
            now_ms,
            tls,
        )
    {
        // Appended: the backend's own cookies stay as they were.
        parts.headers.append(header::SET_COOKIE, set);
    }
    Response::from_parts(parts, body)
}

/// `now_ms` as a header value. At tens of thousands of requests a second
/// many share a millisecond, so each worker thread keeps the last one; a
/// new one is written into a per-thread buffer that values are shared
/// slices of, so making one does not allocate either (`HeaderValue::from`
/// a number allocates twice, which every request paid at rates below one a
/// millisecond per thread: dhat).
fn last_use_header(now_ms: u64) -> HeaderValue {
    /// Room for this many values per buffer.
    const VALUES_PER_BUFFER: usize = 256;
    thread_local! {
        static LAST: RefCell<(u64, HeaderValue, Option<BytesMut>)> =
            const { RefCell::new((0, HeaderValue::from_static("0"), None)) };
    }
    let format = |arena: &mut BytesMut| {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        let mut n = now_ms;
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        if arena.capacity() - arena.len() < digits.len() {
            *arena = BytesMut::with_capacity(digits.len() * VALUES_PER_BUFFER);
        }
        arena.extend_from_slice(&digits[i..]);
        HeaderValue::from_maybe_shared(arena.split().freeze())
            .unwrap_or_else(|_| HeaderValue::from(now_ms))
    };
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        let (ms, value, arena) = &mut *last;
        if *ms != now_ms {
            *value = format(arena.get_or_insert_with(BytesMut::new));
            *ms = now_ms;
        }
        value.clone()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_use_values_are_the_milliseconds() {
        for ms in [0, 7, 1_700_000_000_123, u64::MAX] {
            assert_eq!(
                last_use_header(ms).to_str().ok(),
                Some(ms.to_string().as_str())
            );
        }
        // Many distinct values: the buffer they share is renewed as it fills.
        for ms in 1_000..2_000u64 {
            assert_eq!(last_use_header(ms).as_bytes(), ms.to_string().as_bytes());
        }
    }
}
