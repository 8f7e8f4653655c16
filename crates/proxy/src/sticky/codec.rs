//! The claim codec: the HMAC over one claim and its text forms,
//! `<ms>.<key id>.<mac>` (the signed header) and
//! `<name>.<ms>.<key id>.<mac>` (the cookie value). Pure functions of the
//! keys and the bytes: no headers, no clock.

use std::borrow::Cow;

use ring::hmac;

use super::keys::{KEY_ID_LEN, Key, Keys};
use crate::stats::StickyResult;

/// Unpadded base64url of a 32-byte tag.
const MAC_LEN: usize = 43;
/// Separates this MAC's inputs from any other use of the same key.
const CONTEXT: &[u8] = b"tether-sticky/1\0";

// === impl Keys ===

impl Keys {
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

    /// Opens a whole cookie value, `<name>.<ms>.<key id>.<mac>`: the name
    /// and the time it carries when the mac holds. Expiry is the caller's.
    pub(super) fn open<'a>(&self, value: &'a str) -> Result<(Cow<'a, str>, u64), StickyResult> {
        // name . (ms . id . mac): the signed part never contains a dot of the name.
        let mut dots = value.rmatch_indices('.').map(|(i, _)| i);
        let split = dots.nth(2).ok_or(StickyResult::Invalid)?;
        let name = decode_name(&value[..split]).ok_or(StickyResult::Invalid)?;
        let ms = self.verify(&name, &value[split + 1..])?;
        Ok((name, ms))
    }
}

// === impl Key ===

impl Key {
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

fn parse_ms(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

pub(super) const HEX: &[u8; 16] = b"0123456789abcdef";
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
}
