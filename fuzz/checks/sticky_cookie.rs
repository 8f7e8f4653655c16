//! Fuzz check: the signed sticky cookie and signed headers
//! (`tether_proxy::sticky`). A claim that verifies is exactly one that was
//! signed: its member name and time are those of a signature the proxy
//! made, never something a client composed. Nothing panics.
//!
//! Input, by the low bit of byte 0:
//! - 0, round trip: byte 1 is an age in seconds (mod 30), the rest a member
//!   name. The name signed into a cookie (and, when it can be a header
//!   value, into the signed headers) must read back as itself.
//! - 1, raw headers: the rest is `<cookie>\n<x-target-server>\n<last-use>`
//!   (more lines: more `Cookie` headers), read under every mode. A claim
//!   from a cookie or signed header must be one of [`SIGNED`]; an unsigned
//!   header claim must be what `StickyHint::parse` makes of the headers.
//!   The seeds carry values signed with [`KEYS`] (both keys: rotation).
//!
//! Shared by `fuzz/fuzz_targets/sticky_cookie.rs` and
//! `crates/proxy/tests/fuzz_corpus.rs`.

use std::time::Duration;

use http::header::{self, HeaderMap, HeaderValue};
use tether_core::StickyHint;
use tether_proxy::headers::{X_TARGET_SERVER, X_TARGET_SERVER_LAST_USE};
use tether_proxy::sticky::{self, Keys, Mode, Read, Rules};

/// The clock the seeds are written against (2023-11-14).
pub const NOW: u64 = 1_700_000_000_000;
const WINDOW: Duration = Duration::from_secs(30);
/// The signing key, then an older one that still verifies.
pub const KEYS: [&[u8]; 2] = [&[b'k'; 32], &[b'o'; 32]];
/// Every claim the raw-header seeds were signed with (either key).
pub const SIGNED: [(&str, u64); 4] = [
    ("app-1", NOW - 1000),
    ("backend@10.0.0.5:8080", NOW - 1000),
    ("a.b.c", NOW - 1000),
    ("with space;x,y\"%\u{e9}", NOW - 1000),
];

pub fn run(data: &[u8]) {
    let keys = Keys::from_bytes(KEYS);
    match data {
        [mode, age, name @ ..] if mode & 1 == 0 => round_trip(&keys, *age, name),
        [_, rest @ ..] => raw(&keys, rest),
        [] => {}
    }
}

fn rules(keys: &Keys, mode: Mode, sign_headers: bool) -> Rules<'_> {
    Rules {
        mode,
        cookie_name: sticky::DEFAULT_COOKIE_NAME,
        keys,
        sign_headers,
        window: WINDOW,
    }
}

fn round_trip(keys: &Keys, age: u8, name: &[u8]) {
    let name = String::from_utf8_lossy(name);
    if name.is_empty() {
        return;
    }
    let ms = NOW - u64::from(age % 30) * 1000;
    let want = Some((name.clone().into_owned(), ms));

    let value = keys.cookie_value(&name, ms).expect("a key signs");
    let line = format!("a=1; {}={value}; b=2", sticky::DEFAULT_COOKIE_NAME);
    let cookie = HeaderValue::from_str(&line).expect("a signed cookie is a header value");
    let mut headers = HeaderMap::new();
    headers.insert(header::COOKIE, cookie);
    let got = read(&rules(keys, Mode::Cookie, false), &headers);
    assert_eq!(got, want, "cookie {value:?}");
    let set = sticky::set_cookie(sticky::DEFAULT_COOKIE_NAME, keys, &name, ms, true);
    assert!(set.is_some(), "no Set-Cookie for {name:?}");

    // The headers carry the name as is: only a name that is a header value
    // read as text (visible ASCII: `to_str`) without outer whitespace
    // (trimmed on reading) can round-trip.
    let Ok(target) = HeaderValue::from_str(&name) else {
        return;
    };
    if target.to_str().is_err() || name.trim() != name {
        return;
    }
    let signed = sticky::signed_last_use(keys, &name, ms).expect("a key signs");
    let mut headers = HeaderMap::new();
    headers.insert(&X_TARGET_SERVER, target);
    headers.insert(&X_TARGET_SERVER_LAST_USE, signed);
    let got = read(&rules(keys, Mode::Header, true), &headers);
    assert_eq!(got, want, "signed headers for {name:?}");
}

fn raw(keys: &Keys, rest: &[u8]) {
    let mut lines = rest.split(|&b| b == b'\n');
    let cookie = lines.next();
    let target = lines.next();
    let last_use = lines.next();
    let mut headers = HeaderMap::new();
    for line in cookie.into_iter().chain(lines) {
        if let Ok(v) = HeaderValue::from_bytes(line) {
            headers.append(header::COOKIE, v);
        }
    }
    if let Some(v) = target.and_then(|t| HeaderValue::from_bytes(t).ok()) {
        headers.insert(&X_TARGET_SERVER, v);
    }
    if let Some(v) = last_use.and_then(|t| HeaderValue::from_bytes(t).ok()) {
        headers.insert(&X_TARGET_SERVER_LAST_USE, v);
    }
    let plain = {
        let value = |n| headers.get(n).and_then(|v: &HeaderValue| v.to_str().ok());
        StickyHint::parse(value(&X_TARGET_SERVER), value(&X_TARGET_SERVER_LAST_USE))
            .map(|h| (h.target.to_owned(), h.last_use_ms))
    };
    let signed = |(name, ms): &(String, u64)| SIGNED.contains(&(name.as_str(), *ms));
    for mode in [Mode::Header, Mode::Cookie, Mode::Both] {
        for sign_headers in [false, true] {
            let Some(claim) = read(&rules(keys, mode, sign_headers), &headers) else {
                continue;
            };
            // Unsigned headers are the one carrier a client may write.
            let unsigned_header = mode.reads_headers() && !sign_headers;
            assert!(
                signed(&claim) || unsigned_header && plain.as_ref() == Some(&claim),
                "{mode:?} sign_headers={sign_headers}: forged claim {claim:?}"
            );
            let hint = StickyHint {
                target: &claim.0,
                last_use_ms: claim.1,
            };
            if !unsigned_header || signed(&claim) {
                assert!(hint.is_fresh(NOW, WINDOW), "stale claim {claim:?} accepted");
            }
        }
    }
    let mut stripped = headers.clone();
    sticky::strip_cookie(&mut stripped, sticky::DEFAULT_COOKIE_NAME);
    assert_eq!(
        sticky::find_cookie(&stripped, sticky::DEFAULT_COOKIE_NAME),
        None,
        "the sticky cookie survived strip_cookie"
    );
}

/// The claim `read` makes at `NOW`, as (member name, last use).
fn read(rules: &Rules<'_>, headers: &HeaderMap) -> Option<(String, u64)> {
    match sticky::read(rules, headers, NOW) {
        Read::Claim(claim) => Some((claim.target.into_owned(), claim.last_use_ms)),
        Read::Absent | Read::Rejected(_) => None,
    }
}
