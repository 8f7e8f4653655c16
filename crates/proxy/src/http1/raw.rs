//! A backend's response head kept as the bytes it sent, for an HTTP/1
//! client: the fields go back as they came, less the ones a proxy must not
//! pass on, with no `HeaderMap` in between. Building a map of a head only
//! to serialise it again a moment later cost about as many instructions
//! per request as everything else the proxy does with the response.
//!
//! `head::scan_response` checks the head by the same rules as
//! `head::parse_response` and says whether this form can carry it: not for
//! a `101` (the tunnel reads its `Upgrade`), nor when `Connection` names
//! other fields to drop (rare; the map's rules do that). An HTTP/2 client
//! always gets the map (hyper writes it). The fuzz check `upstream_head`
//! holds the two forms to the same fields.

use bytes::Bytes;

use crate::headers::{X_TARGET_SERVER, X_TARGET_SERVER_LAST_USE};

/// A response head's bytes, checked, and what the writer needs to know of
/// its fields without reading them again.
#[derive(Debug)]
pub struct RawHead {
    /// The whole head, status line and empty line included.
    bytes: Bytes,
    flags: RawFlags,
}

/// What the writer needs to know of a raw head's fields: one byte, so an
/// exchange keeps it in room its state already has.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RawFlags(u8);

/// A `Content-Length` field that is passed on.
const LENGTH: u8 = 1;
/// A `Date` field.
const DATE: u8 = 2;
/// `Transfer-Encoding` too: the length fields are dropped (RFC 9112
/// section 6.3), as the map's reading does.
const DROP_LENGTH: u8 = 4;

/// What `head::scan_response` learnt of the fields while checking them.
#[derive(Default)]
pub(crate) struct Seen {
    pub length: bool,
    pub date: bool,
    pub transfer_encoding: bool,
}

impl RawFlags {
    pub(crate) fn new(seen: &Seen) -> RawFlags {
        let mut flags = 0;
        if seen.transfer_encoding {
            flags |= DROP_LENGTH;
        } else if seen.length {
            flags |= LENGTH;
        }
        if seen.date {
            flags |= DATE;
        }
        RawFlags(flags)
    }
}

impl RawHead {
    /// `bytes` is the head `flags` were read from.
    pub fn new(bytes: Bytes, flags: RawFlags) -> RawHead {
        RawHead { bytes, flags }
    }

    /// Whether a `Content-Length` field goes to the client.
    pub fn declares_length(&self) -> bool {
        self.flags.0 & LENGTH != 0
    }

    pub fn has_date(&self) -> bool {
        self.flags.0 & DATE != 0
    }

    /// Appends the fields the client gets, each as `name: value\r\n`:
    /// the backend's, less the hop-by-hop ones (RFC 9110 section 7.6.1),
    /// the sticky headers (the proxy writes its own) and a length that
    /// `Transfer-Encoding` overrides or that repeats.
    pub fn write_fields(&self, out: &mut Vec<u8>) {
        let mut length_written = false;
        for (name, value) in fields(&self.bytes) {
            if is_hop_by_hop(name) || is_sticky(name) {
                continue;
            }
            if name.eq_ignore_ascii_case(b"content-length") {
                // Equal repeats were checked; one is written.
                if self.flags.0 & DROP_LENGTH != 0 || length_written {
                    continue;
                }
                length_written = true;
            }
            out.extend_from_slice(name);
            out.extend_from_slice(b": ");
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// The fields of a head `httparse` accepted: each line after the first is
/// `name ":" OWS value OWS`, ended by CRLF or a bare LF; none folds.
pub fn fields(head: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    let mut lines = head.split(|&b| b == b'\n');
    lines.next();
    lines.filter_map(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let colon = line.iter().position(|&b| b == b':')?;
        let (name, rest) = line.split_at(colon);
        Some((name, rest[1..].trim_ascii()))
    })
}

/// Hop-by-hop whatever `Connection` says (`headers::strip_hop_by_hop`'s
/// list, on bytes).
fn is_hop_by_hop(name: &[u8]) -> bool {
    const NAMES: [&[u8]; 9] = [
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    ];
    // Most fields are none of these: their lengths rule them out first.
    matches!(name.len(), 2 | 7 | 10 | 16 | 17 | 18 | 19)
        && NAMES
            .iter()
            .any(|n| n.len() == name.len() && n.eq_ignore_ascii_case(name))
}

fn is_sticky(name: &[u8]) -> bool {
    name.len() >= X_TARGET_SERVER.as_str().len()
        && (name.eq_ignore_ascii_case(X_TARGET_SERVER.as_str().as_bytes())
            || name.eq_ignore_ascii_case(X_TARGET_SERVER_LAST_USE.as_str().as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(raw: &[u8], seen: Seen) -> String {
        let head = RawHead::new(Bytes::copy_from_slice(raw), RawFlags::new(&seen));
        let mut out = Vec::new();
        head.write_fields(&mut out);
        String::from_utf8(out).expect("ascii")
    }

    #[test]
    fn fields_come_back_as_sent_less_hop_by_hop_and_sticky_ones() {
        let raw = b"HTTP/1.1 200 OK\r\nServer: x\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nContent-Length:5 \r\nX-Target-Server: forged\r\nx-target-server-last-use: 1\nSet-Cookie: a=1\r\nTE: trailers\r\nSet-Cookie: b=2\r\n\r\n";
        assert_eq!(
            written(
                raw,
                Seen {
                    length: true,
                    ..Seen::default()
                }
            ),
            "Server: x\r\nContent-Length: 5\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n"
        );
    }

    #[test]
    fn a_length_is_written_once_and_not_beside_transfer_encoding() {
        let raw = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 5\r\n\r\n";
        let seen = || Seen {
            length: true,
            ..Seen::default()
        };
        assert_eq!(written(raw, seen()), "content-length: 5\r\n");
        let raw =
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\nx: y\r\n\r\n";
        let head = RawHead::new(
            Bytes::copy_from_slice(raw),
            RawFlags::new(&Seen {
                transfer_encoding: true,
                ..seen()
            }),
        );
        assert!(!head.declares_length());
        let mut out = Vec::new();
        head.write_fields(&mut out);
        assert_eq!(out, b"x: y\r\n");
    }

    #[test]
    fn values_keep_inner_spaces_and_colons() {
        let raw = b"HTTP/1.1 200 OK\r\nLocation:  http://a:1/b c \t\r\nEmpty:\r\n\r\n";
        assert_eq!(
            written(raw, Seen::default()),
            "Location: http://a:1/b c\r\nEmpty: \r\n"
        );
    }
}
