//! Signed stickiness: the `tether_sticky` cookie and, with
//! `sticky.sign_headers`, the signed `x-target-server-last-use` header.
//!
//! Both carry one claim, "this client used member NAME at LAST-USE (epoch
//! ms)", with an HMAC-SHA256 under one of `sticky.keys`:
//!
//! ```text
//! cookie:  tether_sticky=<name>.<last-use ms>.<key id>.<mac>
//! header:  x-target-server: <name>
//!          x-target-server-last-use: <last-use ms>.<key id>.<mac>
//! ```
//!
//! The key id is the first 8 hex digits of the key's SHA-256, so ids need
//! no configuration and a rotated key list still finds the right key. The
//! mac (43 characters of unpadded base64url) covers a length-prefixed name,
//! the time as 8 bytes and the key id, so no two claims share an input. In
//! the cookie the name is percent-encoded where RFC 6265 does not allow a
//! byte (and `%` itself); it is parsed from the right, so names with `.`
//! and `@` (`backend@10.0.0.5:8080`) need no escaping.
//!
//! Here the claim is only checked (mac in constant time, then the window
//! from the signed time); core decides, matching the name against pool
//! members only. Key material never leaves this module: `Debug` shows ids.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use ring::{digest, hmac};
use tether_core::StickyHint;
use tether_daemon::config::ConfigError;

use crate::headers::{X_TARGET_SERVER, X_TARGET_SERVER_LAST_USE};
use crate::stats::StickyResult;

/// Default name of the sticky cookie.
pub const DEFAULT_COOKIE_NAME: &str = "tether_sticky";
/// Shortest key accepted, in bytes (after trimming whitespace at the ends).
pub const MIN_KEY_BYTES: usize = 32;
/// Hex digits of a key id.
const KEY_ID_LEN: usize = 8;
/// Unpadded base64url of a 32-byte tag.
const MAC_LEN: usize = 43;
/// Separates this MAC's inputs from any other use of the same key.
const CONTEXT: &[u8] = b"tether-sticky/1\0";

/// Where stickiness is read from (`sticky.mode`). Responses always carry
/// the headers; cookie modes add `Set-Cookie`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// `x-target-server` + `x-target-server-last-use` (the original design).
    #[default]
    Header,
    /// The signed cookie only; request headers are not read.
    Cookie,
    /// The cookie first, then the headers.
    Both,
}

impl Mode {
    pub fn parse(key: &str, raw: &str) -> Result<Mode, ConfigError> {
        match raw {
            "header" => Ok(Mode::Header),
            "cookie" => Ok(Mode::Cookie),
            "both" => Ok(Mode::Both),
            other => Err(ConfigError::new(
                key,
                format!("{other:?}: expected \"header\", \"cookie\" or \"both\""),
            )),
        }
    }

    pub fn reads_headers(self) -> bool {
        matches!(self, Mode::Header | Mode::Both)
    }

    pub fn uses_cookie(self) -> bool {
        matches!(self, Mode::Cookie | Mode::Both)
    }
}

// === impl Keys ===

struct Key {
    /// First 8 hex digits of the key's SHA-256.
    id: [u8; KEY_ID_LEN],
    /// The key's whole SHA-256, to tell key lists apart on reload.
    fingerprint: [u8; 32],
    key: hmac::Key,
}

/// `sticky.keys`: the first signs, all verify. Cheap to clone.
#[derive(Clone, Default)]
pub struct Keys(Arc<[Key]>);

impl Keys {
    /// Reads each entry: `env:VAR` (the variable's value), `file:/path`
    /// (the file's contents) or the key itself. Whitespace at the ends is
    /// trimmed; what remains must be at least [`MIN_KEY_BYTES`]. Errors name
    /// `sticky.keys[i]` and never contain key material.
    pub fn load(raw: &[String]) -> Result<Keys, ConfigError> {
        let mut keys: Vec<Key> = Vec::with_capacity(raw.len());
        for (i, entry) in raw.iter().enumerate() {
            let name = format!("sticky.keys[{i}]");
            let material = material(&name, entry)?;
            let key = Key::new(&material);
            if let Some(j) = keys.iter().position(|k| k.id == key.id) {
                return Err(ConfigError::new(
                    name,
                    format!("has the same key id as sticky.keys[{j}] (a repeated key?)"),
                ));
            }
            keys.push(key);
        }
        Ok(Keys(keys.into()))
    }

    /// Keys from raw bytes, for tests and tools; no length rule.
    pub fn from_bytes<'a>(keys: impl IntoIterator<Item = &'a [u8]>) -> Keys {
        Keys(keys.into_iter().map(Key::new).collect())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The ids, signing key first.
    pub fn ids(&self) -> Vec<String> {
        self.0
            .iter()
            .map(|k| String::from_utf8_lossy(&k.id).into_owned())
            .collect()
    }

    /// `<ms>.<key id>.<mac>` for `name` at `ms`, under the first key.
    pub fn sign(&self, name: &str, ms: u64) -> Option<String> {
        let key = self.0.first()?;
        let tag = key.mac(name, ms);
        let mut out = format!("{ms}.");
        out.push_str(std::str::from_utf8(&key.id).unwrap_or_default());
        out.push('.');
        b64url(tag.as_ref(), &mut out);
        Some(out)
    }

    /// A whole cookie value: `<name>.<ms>.<key id>.<mac>`.
    pub fn cookie_value(&self, name: &str, ms: u64) -> Option<String> {
        let signed = self.sign(name, ms)?;
        let mut out = encode_name(name).into_owned();
        out.push('.');
        out.push_str(&signed);
        Some(out)
    }

    /// Checks a signed `<ms>.<key id>.<mac>` for `name`: the time it
    /// carries when the mac holds. Expiry is the caller's.
    pub fn verify(&self, name: &str, signed: &str) -> Result<u64, StickyResult> {
        let mut fields = signed.rsplitn(3, '.');
        let (Some(mac), Some(id), Some(ms)) = (fields.next(), fields.next(), fields.next()) else {
            return Err(StickyResult::Invalid);
        };
        let ms = parse_ms(ms).ok_or(StickyResult::Invalid)?;
        let id = <[u8; KEY_ID_LEN]>::try_from(id.as_bytes())
            .ok()
            .filter(|id| id.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
            .ok_or(StickyResult::Invalid)?;
        let tag = b64url_decode_tag(mac).ok_or(StickyResult::Invalid)?;
        if name.is_empty() {
            return Err(StickyResult::Invalid);
        }
        let key = self
            .0
            .iter()
            .find(|k| k.id == id)
            .ok_or(StickyResult::UnknownKey)?;
        hmac::verify(&key.key, &key.message(name, ms), &tag).map_err(|_| StickyResult::Tampered)?;
        Ok(ms)
    }
}

impl Key {
    fn new(material: &[u8]) -> Key {
        let digest = digest::digest(&digest::SHA256, material);
        let mut fingerprint = [0u8; 32];
        fingerprint.copy_from_slice(digest.as_ref());
        let mut id = [0u8; KEY_ID_LEN];
        for (i, b) in fingerprint[..KEY_ID_LEN / 2].iter().enumerate() {
            id[2 * i] = HEX[usize::from(b >> 4)];
            id[2 * i + 1] = HEX[usize::from(b & 0xf)];
        }
        Key {
            id,
            fingerprint,
            key: hmac::Key::new(hmac::HMAC_SHA256, material),
        }
    }

    /// The MAC input: context, name length (u32 BE), name, ms (u64 BE),
    /// key id. Fixed widths around the one variable field: unambiguous.
    fn message(&self, name: &str, ms: u64) -> Vec<u8> {
        let mut m = Vec::with_capacity(CONTEXT.len() + 4 + name.len() + 8 + KEY_ID_LEN);
        m.extend_from_slice(CONTEXT);
        m.extend_from_slice(&u32::try_from(name.len()).unwrap_or(u32::MAX).to_be_bytes());
        m.extend_from_slice(name.as_bytes());
        m.extend_from_slice(&ms.to_be_bytes());
        m.extend_from_slice(&self.id);
        m
    }

    fn mac(&self, name: &str, ms: u64) -> hmac::Tag {
        hmac::sign(&self.key, &self.message(name, ms))
    }
}

impl PartialEq for Keys {
    fn eq(&self, other: &Keys) -> bool {
        self.0.len() == other.0.len()
            && self
                .0
                .iter()
                .zip(other.0.iter())
                .all(|(a, b)| a.fingerprint == b.fingerprint)
    }
}

impl Eq for Keys {}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Keys").field(&self.ids()).finish()
    }
}

/// One `sticky.keys` entry's bytes.
fn material(key: &str, raw: &str) -> Result<Vec<u8>, ConfigError> {
    let bytes = if let Some(var) = raw.strip_prefix("env:") {
        match std::env::var(var) {
            Ok(v) => v.into_bytes(),
            Err(std::env::VarError::NotPresent) => {
                return Err(ConfigError::new(key, format!("${var} is not set")));
            }
            Err(std::env::VarError::NotUnicode(_)) => {
                return Err(ConfigError::new(key, format!("${var} is not UTF-8")));
            }
        }
    } else if let Some(path) = raw.strip_prefix("file:") {
        warn_if_readable_by_all(key, path);
        std::fs::read(path).map_err(|e| ConfigError::new(key, format!("{path}: {e}")))?
    } else {
        raw.as_bytes().to_vec()
    };
    let trimmed = bytes.trim_ascii();
    if trimmed.len() < MIN_KEY_BYTES {
        return Err(ConfigError::new(
            key,
            format!(
                "a key must be at least {MIN_KEY_BYTES} bytes (got {})",
                trimmed.len()
            ),
        ));
    }
    Ok(trimmed.to_vec())
}

#[cfg(unix)]
fn warn_if_readable_by_all(key: &str, path: &str) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o004 != 0
    {
        log::warn!(target: "proxy", "{key}: {path} is readable by every user; chmod o-r it");
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_all(_key: &str, _path: &str) {}

// === reading a request ===

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
    // name . (ms . id . mac): the signed part never contains a dot of the name.
    let mut dots = value.rmatch_indices('.').map(|(i, _)| i);
    let split = dots.nth(2).ok_or(StickyResult::Invalid)?;
    let name = decode_name(&value[..split]).ok_or(StickyResult::Invalid)?;
    let ms = rules.keys.verify(&name, &value[split + 1..])?;
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

fn parse_ms(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

// === encodings ===

const HEX: &[u8; 16] = b"0123456789abcdef";
const B64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// RFC 6265 cookie-octet, minus `%` (the escape).
fn is_cookie_octet(b: u8) -> bool {
    matches!(b, 0x21 | 0x23..=0x24 | 0x26..=0x2B | 0x2D..=0x3A | 0x3C..=0x5B | 0x5D..=0x7E)
}

fn encode_name(name: &str) -> Cow<'_, str> {
    if name.bytes().all(is_cookie_octet) {
        return Cow::Borrowed(name);
    }
    let mut out = String::with_capacity(name.len() + 8);
    for b in name.bytes() {
        if is_cookie_octet(b) {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
    Cow::Owned(out)
}

/// The inverse of `encode_name`, accepting only its output: an escape of a
/// byte that needs none is refused, so one name has one encoding.
fn decode_name(s: &str) -> Option<Cow<'_, str>> {
    if s.is_empty() {
        return None;
    }
    if !s.contains('%') {
        return s.bytes().all(is_cookie_octet).then_some(Cow::Borrowed(s));
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hi = hex_value(*bytes.get(i + 1)?)?;
            let lo = hex_value(*bytes.get(i + 2)?)?;
            let byte = hi << 4 | lo;
            if is_cookie_octet(byte) {
                return None;
            }
            out.push(byte);
            i += 3;
        } else if is_cookie_octet(b) {
            out.push(b);
            i += 1;
        } else {
            return None;
        }
    }
    String::from_utf8(out).ok().map(Cow::Owned)
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

/// Unpadded base64url (RFC 4648 section 5), appended to `out`.
fn b64url(bytes: &[u8], out: &mut String) {
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            let sextet = (n >> (18 - 6 * i)) & 0x3f;
            out.push(char::from(B64URL[sextet as usize]));
        }
    }
}

/// A 32-byte tag from exactly 43 canonical base64url characters.
fn b64url_decode_tag(s: &str) -> Option<[u8; 32]> {
    if s.len() != MAC_LEN {
        return None;
    }
    let mut out = [0u8; 32];
    let mut acc = 0u32;
    let mut bits = 0;
    let mut n = 0;
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        acc = acc << 6 | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            *out.get_mut(n)? = (acc >> bits) as u8;
            n += 1;
            acc &= (1 << bits) - 1;
        }
    }
    // 43 * 6 = 258 bits: 256 of tag and 2 that must be zero.
    (n == 32 && acc == 0).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn base64url_round_trips_and_is_canonical() {
        let tag = [0xfbu8; 32];
        let mut s = String::new();
        b64url(&tag, &mut s);
        assert_eq!(s.len(), MAC_LEN);
        assert!(!s.contains('='));
        assert_eq!(b64url_decode_tag(&s), Some(tag));
        let mut short = String::new();
        b64url(b"\xfb\xff", &mut short);
        assert_eq!(short, "-_8");
        // The last character carries 2 spare bits, which must be zero.
        let mut odd = s.clone();
        odd.pop();
        odd.push('9');
        assert_eq!(b64url_decode_tag(&odd), None);
        assert_eq!(b64url_decode_tag(&s[1..]), None);
    }

    #[test]
    fn a_known_answer_from_an_independent_hmac() {
        // Python: hmac.new(b"k" * 32, b"tether-sticky/1\0" + len(name) as
        // u32 BE + name + ms as u64 BE + key id, sha256), base64url unpadded.
        let k = Keys::from_bytes([&[b'k'; 32][..]]);
        assert_eq!(
            k.cookie_value("backend@10.0.0.5:8080", 1_764_150_000_123)
                .as_deref(),
            Some(
                "backend@10.0.0.5:8080.1764150000123.5e318f8c.\
                 P0j5zMshPPwqKL5SQ1NdLlgctSiBBPYgMqMcJcdhJZU"
            )
        );
    }

    #[test]
    fn key_ids_are_sha256_prefixes() {
        // SHA-256("") = e3b0c442...
        assert_eq!(Keys::from_bytes([&b""[..]]).ids(), ["e3b0c442"]);
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

    #[test]
    fn keys_load_from_literal_env_and_file_and_errors_name_the_entry() {
        let long = "l".repeat(32);
        let dir = std::env::temp_dir().join(format!("tether-sticky-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("key");
        std::fs::write(&file, format!("{}\n", "f".repeat(40))).expect("write");
        let loaded = Keys::load(&[long.clone(), format!("file:{}", file.display())]).expect("keys");
        assert_eq!(loaded, keys(&[long.as_str(), "f".repeat(40).as_str()]));
        let err = Keys::load(&[long.clone(), "short".into()]).expect_err("short");
        assert_eq!(err.key, "sticky.keys[1]");
        assert!(!err.to_string().contains("short\""), "{err}");
        let err = Keys::load(&["env:TETHER_TEST_SURELY_UNSET_KEY".into()]).expect_err("unset");
        assert_eq!(err.key, "sticky.keys[0]");
        let err = Keys::load(&[long.clone(), long.clone()]).expect_err("repeat");
        assert_eq!(err.key, "sticky.keys[1]");
        let err = Keys::load(&["file:/nonexistent/tether/key".into()]).expect_err("missing");
        assert_eq!(err.key, "sticky.keys[0]");
        // Debug shows ids, never material.
        assert!(!format!("{loaded:?}").contains(&long));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
