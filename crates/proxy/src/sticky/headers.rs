//! Stickiness on the wire: reading a request's claim from its cookie or
//! `x-target-server*` headers, taking the proxy's cookie out before the
//! request goes upstream, and the `Set-Cookie` and signed header a
//! response carries.

use std::borrow::Cow;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use tether_core::StickyHint;

use super::{Keys, Mode};
use crate::headers::{X_TARGET_SERVER, X_TARGET_SERVER_LAST_USE};
use crate::stats::StickyResult;

/// A claim a request carried that passed its checks (for a signed one:
/// mac and window), to be matched against the pool by core.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim<'a> {
    pub target: Cow<'a, str>,
    pub last_use_ms: u64,
}

impl Claim<'_> {
    pub fn hint(&self) -> StickyHint<'_> {
        StickyHint {
            target: &self.target,
            last_use_ms: self.last_use_ms,
        }
    }
}

/// What a request's sticky carriers amount to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Read<'a> {
    /// Nothing sticky in the request.
    Absent,
    /// A claim for core to decide on.
    Claim(Claim<'a>),
    /// Something was there and is not to be trusted: invalid, tampered,
    /// unknown key or expired.
    Rejected(StickyResult),
}

/// The rules `read` applies: the parts of `[sticky]` a request needs.
#[derive(Clone, Copy, Debug)]
pub struct Rules<'a> {
    pub mode: Mode,
    pub cookie_name: &'a str,
    pub keys: &'a Keys,
    pub sign_headers: bool,
    pub window: Duration,
}

/// Reads the request's claim: the cookie first (cookie modes), then the
/// headers (header modes). The first carrier that yields a claim wins; else
/// the first one's reason is reported.
pub fn read<'a>(rules: &Rules<'_>, headers: &'a HeaderMap, now_ms: u64) -> Read<'a> {
    let mut found = Read::Absent;
    if rules.mode.uses_cookie()
        && let Some(value) = find_cookie(headers, rules.cookie_name)
    {
        match verify_cookie(rules, value, now_ms) {
            Ok(claim) => return Read::Claim(claim),
            Err(why) => found = Read::Rejected(why),
        }
    }
    if rules.mode.reads_headers() {
        let target = header_str(headers, &X_TARGET_SERVER);
        let last_use = header_str(headers, &X_TARGET_SERVER_LAST_USE);
        if target.is_some() || last_use.is_some() {
            let claim = if rules.sign_headers {
                verify_headers(rules, target, last_use, now_ms)
            } else {
                StickyHint::parse(target, last_use)
                    .map(|h| Claim {
                        target: Cow::Borrowed(h.target),
                        last_use_ms: h.last_use_ms,
                    })
                    .ok_or(StickyResult::Invalid)
            };
            match claim {
                Ok(claim) => return Read::Claim(claim),
                Err(why) if found == Read::Absent => found = Read::Rejected(why),
                Err(_) => {}
            }
        }
    }
    found
}

fn verify_cookie<'a>(
    rules: &Rules<'_>,
    value: &'a str,
    now_ms: u64,
) -> Result<Claim<'a>, StickyResult> {
    let (name, ms) = rules.keys.open(value)?;
    fresh(
        rules,
        Claim {
            target: name,
            last_use_ms: ms,
        },
        now_ms,
    )
}

fn verify_headers<'a>(
    rules: &Rules<'_>,
    target: Option<&'a str>,
    last_use: Option<&str>,
    now_ms: u64,
) -> Result<Claim<'a>, StickyResult> {
    let (Some(target), Some(last_use)) = (target, last_use) else {
        return Err(StickyResult::Invalid);
    };
    let target = target.trim();
    let ms = rules.keys.verify(target, last_use.trim())?;
    fresh(
        rules,
        Claim {
            target: Cow::Borrowed(target),
            last_use_ms: ms,
        },
        now_ms,
    )
}

/// A signed time outside the window is the proxy's own verdict, so it is
/// reported as expired rather than left for core to ignore.
fn fresh<'a>(rules: &Rules<'_>, claim: Claim<'a>, now_ms: u64) -> Result<Claim<'a>, StickyResult> {
    if claim.hint().is_fresh(now_ms, rules.window) {
        Ok(claim)
    } else {
        Err(StickyResult::Expired)
    }
}

/// The value of the first cookie called `name`, from every `Cookie` header.
pub fn find_cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    cookie_pairs(headers).find_map(|(n, v)| {
        if n == name.as_bytes() {
            std::str::from_utf8(v).ok()
        } else {
            None
        }
    })
}

/// Every `name=value` pair of every `Cookie` line, as bytes: a line with
/// bytes outside ASCII (browsers send UTF-8 in application cookies) still
/// has its pairs read, not skipped.
fn cookie_pairs(headers: &HeaderMap) -> impl Iterator<Item = (&[u8], &[u8])> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b';'))
        .filter_map(|pair| {
            let eq = pair.iter().position(|&b| b == b'=')?;
            Some((pair[..eq].trim_ascii(), pair[eq + 1..].trim_ascii()))
        })
}

/// Removes the cookie `name` from the request, keeping every other cookie
/// (joined into one `Cookie` header, as HTTP/1.1 upstream wants). The
/// cookie is the proxy's: the backend has no use for it.
pub fn strip_cookie(headers: &mut HeaderMap, name: &str) {
    if find_cookie(headers, name).is_none() {
        return;
    }
    // Bytes, not text: an application cookie with bytes outside ASCII must
    // reach the backend as it came, not be dropped with the proxy's own.
    let mut rest: Vec<u8> = Vec::new();
    for value in headers.get_all(header::COOKIE) {
        for pair in value.as_bytes().split(|&b| b == b';') {
            let pair = pair.trim_ascii();
            if pair.is_empty() {
                continue;
            }
            let pair_name = pair.split(|&b| b == b'=').next().unwrap_or(pair);
            if pair.contains(&b'=') && pair_name.trim_ascii() == name.as_bytes() {
                continue;
            }
            if !rest.is_empty() {
                rest.extend_from_slice(b"; ");
            }
            rest.extend_from_slice(pair);
        }
    }
    headers.remove(header::COOKIE);
    if !rest.is_empty()
        && let Ok(v) = HeaderValue::from_bytes(&rest)
    {
        headers.insert(header::COOKIE, v);
    }
}

// === writing a response ===

/// The `Set-Cookie` for `name` at `now_ms`; `None` without keys.
pub fn set_cookie(
    cookie_name: &str,
    keys: &Keys,
    name: &str,
    now_ms: u64,
    tls: bool,
) -> Option<HeaderValue> {
    let value = keys.cookie_value(name, now_ms)?;
    let secure = if tls { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{cookie_name}={value}; Path=/; HttpOnly; SameSite=Lax{secure}"
    ))
    .ok()
}

/// The signed `x-target-server-last-use` for `name` at `now_ms`.
pub fn signed_last_use(keys: &Keys, name: &str, now_ms: u64) -> Option<HeaderValue> {
    HeaderValue::from_str(&keys.sign(name, now_ms)?).ok()
}

/// Whether `name` can be a cookie name (an RFC 9110 token).
pub fn is_cookie_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn header_str<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sticky::DEFAULT_COOKIE_NAME;

    const NOW: u64 = 1_700_000_000_000;
    const W: Duration = Duration::from_secs(30);

    fn keys(list: &[&str]) -> Keys {
        Keys::from_bytes(list.iter().map(|k| k.as_bytes()))
    }

    fn rules<'a>(mode: Mode, keys: &'a Keys, sign_headers: bool) -> Rules<'a> {
        Rules {
            mode,
            cookie_name: DEFAULT_COOKIE_NAME,
            keys,
            sign_headers,
            window: W,
        }
    }

    fn cookie(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("a=1; tether_sticky={value}; b=2")).expect("value"),
        );
        h
    }

    fn claim(target: &str, ms: u64) -> Read<'_> {
        Read::Claim(Claim {
            target: Cow::Borrowed(target),
            last_use_ms: ms,
        })
    }

    #[test]
    fn a_cookie_round_trips_names_with_dots_at_signs_and_odd_bytes() {
        let k = keys(&["k".repeat(32).as_str()]);
        let r = rules(Mode::Cookie, &k, false);
        for name in [
            "app-1",
            "backend@10.0.0.5:8080",
            "a.b.c",
            "with space;x,y\"%é",
        ] {
            let value = k.cookie_value(name, NOW).expect("signed");
            assert_eq!(value.matches('.').count() - name.matches('.').count(), 3);
            let h = cookie(&value);
            assert_eq!(read(&r, &h, NOW), claim(name, NOW), "{value}");
        }
    }

    #[test]
    fn each_kind_of_bad_cookie_has_its_reason() {
        let k = keys(&["k".repeat(32).as_str()]);
        let r = rules(Mode::Cookie, &k, false);
        let good = k.cookie_value("app-1", NOW).expect("signed");
        let check = |value: &str, want: StickyResult| {
            assert_eq!(
                read(&r, &cookie(value), NOW),
                Read::Rejected(want),
                "{value}"
            );
        };
        check(&good.replacen("app-1", "app-2", 1), StickyResult::Tampered);
        check(
            &good.replacen(&NOW.to_string(), &(NOW + 1).to_string(), 1),
            StickyResult::Tampered,
        );
        let other = keys(&["o".repeat(32).as_str()]);
        check(
            &other.cookie_value("app-1", NOW).expect("signed"),
            StickyResult::UnknownKey,
        );
        check(
            &k.cookie_value("app-1", NOW - 31_000).expect("signed"),
            StickyResult::Expired,
        );
        check(
            &k.cookie_value("app-1", NOW + 6_000).expect("signed"),
            StickyResult::Expired,
        );
        for junk in [
            "",
            "app-1",
            "app-1.1.2",
            "a.b.c.d",
            ".1.e3b0c442.x",
            "%41.1.2.3",
        ] {
            check(junk, StickyResult::Invalid);
        }
        assert_eq!(read(&r, &HeaderMap::new(), NOW), Read::Absent);
    }

    #[test]
    fn rotation_old_keys_verify_the_first_signs() {
        let old = keys(&["o".repeat(32).as_str()]);
        let both = keys(&["n".repeat(32).as_str(), "o".repeat(32).as_str()]);
        let r = rules(Mode::Cookie, &both, false);
        let value = old.cookie_value("app-1", NOW).expect("signed");
        assert_eq!(read(&r, &cookie(&value), NOW), claim("app-1", NOW));
        let fresh = both.cookie_value("app-1", NOW).expect("signed");
        assert!(fresh.contains(&both.ids()[0]), "{fresh}");
    }

    #[test]
    fn signed_headers_refuse_plain_and_forged_values() {
        let k = keys(&["k".repeat(32).as_str()]);
        let r = rules(Mode::Header, &k, true);
        let headers = |target: &str, last_use: &str| {
            let mut h = HeaderMap::new();
            h.insert(&X_TARGET_SERVER, HeaderValue::from_str(target).expect("v"));
            h.insert(
                &X_TARGET_SERVER_LAST_USE,
                HeaderValue::from_str(last_use).expect("v"),
            );
            h
        };
        let signed = k.sign("app-1", NOW).expect("signed");
        assert_eq!(
            read(&r, &headers("app-1", &signed), NOW),
            claim("app-1", NOW)
        );
        assert_eq!(
            read(&r, &headers("app-2", &signed), NOW),
            Read::Rejected(StickyResult::Tampered)
        );
        assert_eq!(
            read(&r, &headers("app-1", &NOW.to_string()), NOW),
            Read::Rejected(StickyResult::Invalid)
        );
        // Unsigned mode takes the plain form as before.
        let plain = rules(Mode::Header, &k, false);
        assert_eq!(
            read(&plain, &headers("app-1", &NOW.to_string()), NOW),
            claim("app-1", NOW)
        );
    }

    #[test]
    fn both_mode_prefers_a_good_cookie_and_falls_back_to_headers() {
        let k = keys(&["k".repeat(32).as_str()]);
        let r = rules(Mode::Both, &k, false);
        let mut h = cookie(&k.cookie_value("app-1", NOW).expect("signed"));
        h.insert(&X_TARGET_SERVER, HeaderValue::from_static("app-2"));
        h.insert(&X_TARGET_SERVER_LAST_USE, HeaderValue::from(NOW));
        assert_eq!(read(&r, &h, NOW), claim("app-1", NOW));
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("tether_sticky=junk"),
        );
        assert_eq!(read(&r, &h, NOW), claim("app-2", NOW));
        // Cookie mode does not read the headers at all.
        let only = rules(Mode::Cookie, &k, false);
        assert_eq!(read(&only, &h, NOW), Read::Rejected(StickyResult::Invalid));
    }

    #[test]
    fn strip_cookie_keeps_the_others() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; tether_sticky=x"),
        );
        h.append(header::COOKIE, HeaderValue::from_static("b=2"));
        strip_cookie(&mut h, DEFAULT_COOKIE_NAME);
        assert_eq!(h.get_all(header::COOKIE).iter().count(), 1);
        assert_eq!(h[header::COOKIE], "a=1; b=2");
        let mut only = HeaderMap::new();
        only.insert(header::COOKIE, HeaderValue::from_static("tether_sticky=x"));
        strip_cookie(&mut only, DEFAULT_COOKIE_NAME);
        assert!(only.get(header::COOKIE).is_none());
        // Bytes outside ASCII in an application cookie pass unchanged.
        let mut utf8 = HeaderMap::new();
        utf8.insert(
            header::COOKIE,
            HeaderValue::from_bytes("name=Zo\u{eb}; tether_sticky=x".as_bytes()).expect("value"),
        );
        strip_cookie(&mut utf8, DEFAULT_COOKIE_NAME);
        assert_eq!(utf8[header::COOKIE].as_bytes(), "name=Zo\u{eb}".as_bytes());
        let mut none = HeaderMap::new();
        none.append(header::COOKIE, HeaderValue::from_static("a=1"));
        none.append(header::COOKIE, HeaderValue::from_static("b=2"));
        strip_cookie(&mut none, DEFAULT_COOKIE_NAME);
        assert_eq!(none.get_all(header::COOKIE).iter().count(), 2, "untouched");
    }

    #[test]
    fn set_cookie_attributes() {
        let k = keys(&["k".repeat(32).as_str()]);
        let plain = set_cookie("tether_sticky", &k, "app-1", NOW, false).expect("cookie");
        let plain = plain.to_str().expect("ascii");
        assert!(
            plain.starts_with("tether_sticky=app-1.1700000000000."),
            "{plain}"
        );
        assert!(
            plain.ends_with("; Path=/; HttpOnly; SameSite=Lax"),
            "{plain}"
        );
        let tls = set_cookie("tether_sticky", &k, "app-1", NOW, true).expect("cookie");
        assert!(tls.to_str().expect("ascii").ends_with("; Secure"));
        assert!(set_cookie("tether_sticky", &Keys::default(), "a", NOW, false).is_none());
    }
}
