//! A backend's response head kept as the bytes it sent, for an HTTP/1
//! client: the fields go back as they came, less the ones a proxy must not
//! pass on, with no `HeaderMap` in between. Building a map of a head only
//! to serialise it again a moment later cost about as many instructions
//! per request as everything else the proxy does with the response.
//!
//! `head::scan_response` checks the head by the same rules as
//! `head::parse_response`, finds the lines to leave out ([`plan`]) and
//! moves the others together at the front of the head ([`compact`]), so
//! the writer copies one run of bytes. It says when only the map can carry
//! a head: a `101` (the tunnel reads its `Upgrade`), a `Connection` that
//! names other fields to drop, a line ended by a bare LF (the client gets
//! CRLF), or a head too long or too cut up for the few words an exchange
//! keeps. An HTTP/2 client always gets the map (hyper writes it). The fuzz
//! check `upstream_head` holds the two forms to the same fields.

use bytes::Bytes;

use crate::headers::{X_TARGET_SERVER, X_TARGET_SERVER_LAST_USE};

/// The fields a client gets of a response head, as `name: value\r\n`
/// lines one after the other, and what the writer needs to know of them.
#[derive(Debug)]
pub struct RawHead {
    fields: Bytes,
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

impl RawFlags {
    pub(crate) fn new(length: bool, date: bool) -> RawFlags {
        RawFlags((u8::from(length) * LENGTH) | (u8::from(date) * DATE))
    }
}

impl RawHead {
    /// `fields`: what [`compact`] left at the front of a head whose
    /// reading gave `flags`.
    pub fn new(fields: Bytes, flags: RawFlags) -> RawHead {
        RawHead { fields, flags }
    }

    /// Whether a `Content-Length` field goes to the client.
    pub fn declares_length(&self) -> bool {
        self.flags.0 & LENGTH != 0
    }

    pub fn has_date(&self) -> bool {
        self.flags.0 & DATE != 0
    }

    /// The fields, each line ended by CRLF.
    pub fn fields(&self) -> &[u8] {
        &self.fields
    }
}

/// The most runs of kept lines a head may fall into (the lines left out
/// split them); more, and the map carries it. A backend's usual answer has
/// one or two (`Connection` and `Keep-Alive` out).
const MOST_RUNS: usize = 8;

/// Where the lines a client gets are in a head: runs of whole lines, as
/// offsets, in order.
#[derive(Debug)]
pub(crate) struct Plan {
    runs: [(u32, u32); MOST_RUNS],
    n: usize,
}

/// The lines of `head` to keep, given its fields as `httparse` found them
/// (slices of `head`); `drop_length`: `Transfer-Encoding` overrides the
/// length fields. `None` when only the map can carry the head (a bare LF,
/// too many runs).
pub(crate) fn plan(
    head: &[u8],
    fields: &[httparse::Header<'_>],
    drop_length: bool,
) -> Option<Plan> {
    let base = head.as_ptr() as usize;
    let mut plan = Plan {
        runs: [(0, 0); MOST_RUNS],
        n: 0,
    };
    let mut length_kept = false;
    for field in fields {
        let name = field.name.as_bytes();
        let start = (name.as_ptr() as usize).checked_sub(base)?;
        let name_end = start + name.len();
        // The value is trimmed: its line ends at the next LF. (An empty
        // value's slice may point anywhere: then look from the name.)
        let value_end = (field.value.as_ptr() as usize)
            .checked_sub(base)
            .filter(|&at| at >= name_end && at + field.value.len() <= head.len())
            .map_or(name_end, |at| at + field.value.len());
        let lf = value_end + head.get(value_end..)?.iter().position(|&b| b == b'\n')?;
        if head.get(lf.checked_sub(1)?) != Some(&b'\r') {
            return None;
        }
        let end = lf + 1;
        let is_length = name.eq_ignore_ascii_case(b"content-length");
        let drop =
            is_hop_by_hop(name) || is_sticky(name) || is_length && (drop_length || length_kept);
        length_kept |= is_length && !drop;
        if drop {
            continue;
        }
        let (start, end) = (u32::try_from(start).ok()?, u32::try_from(end).ok()?);
        match plan.n.checked_sub(1).map(|i| &mut plan.runs[i]) {
            Some(last) if last.1 == start => last.1 = end,
            _ => {
                *plan.runs.get_mut(plan.n)? = (start, end);
                plan.n += 1;
            }
        }
    }
    Some(plan)
}

/// Moves the kept lines of `head` to its front, in order; their length.
pub(crate) fn compact(head: &mut [u8], plan: &Plan) -> usize {
    let mut to = 0;
    for &(start, end) in &plan.runs[..plan.n] {
        let (start, end) = (start as usize, end as usize);
        // Never forwards: the status line is before the first field.
        head.copy_within(start..end, to);
        to += end - start;
    }
    to
}

/// The fields of lines such as [`RawHead::fields`]: each is
/// `name ":" OWS value OWS`, ended by CRLF or a bare LF; none folds. For
/// checks: the writer copies the lines as they are.
pub fn fields(lines: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    lines.split(|&b| b == b'\n').filter_map(|line| {
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

    /// What a client gets of `raw` (a whole head).
    fn kept(raw: &[u8], drop_length: bool) -> Option<String> {
        let mut scratch = [httparse::EMPTY_HEADER; 32];
        let mut res = httparse::Response::new(&mut scratch);
        assert!(res.parse(raw).expect("a head").is_complete());
        let plan = plan(raw, res.headers, drop_length)?;
        let mut head = raw.to_vec();
        let n = compact(&mut head, &plan);
        Some(String::from_utf8(head[..n].to_vec()).expect("ascii"))
    }

    #[test]
    fn fields_come_back_as_sent_less_hop_by_hop_and_sticky_ones() {
        let raw = b"HTTP/1.1 200 OK\r\nServer: x\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nContent-Length:5 \r\nX-Target-Server: forged\r\nx-target-server-last-use: 1\r\nSet-Cookie: a=1\r\nTE: trailers\r\nSet-Cookie: b=2\r\n\r\n";
        assert_eq!(
            kept(raw, false).as_deref(),
            Some("Server: x\r\nContent-Length:5 \r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n")
        );
    }

    #[test]
    fn a_length_is_written_once_and_not_beside_transfer_encoding() {
        let raw = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 5\r\n\r\n";
        assert_eq!(kept(raw, false).as_deref(), Some("content-length: 5\r\n"));
        let raw =
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\nx: y\r\n\r\n";
        assert_eq!(kept(raw, true).as_deref(), Some("x: y\r\n"));
    }

    #[test]
    fn bare_lf_lines_and_heads_cut_into_many_runs_keep_the_map() {
        assert_eq!(kept(b"HTTP/1.1 200 OK\r\na: 1\nb: 2\r\n\r\n", false), None);
        // A bare LF ending only the status line or the head is not copied.
        assert_eq!(
            kept(b"HTTP/1.1 200 OK\na: 1\r\n\n", false).as_deref(),
            Some("a: 1\r\n")
        );
        let cut_up: String = (0..MOST_RUNS + 1)
            .map(|i| format!("a{i}: 1\r\nte: x\r\n"))
            .collect();
        let raw = format!("HTTP/1.1 200 OK\r\n{cut_up}\r\n");
        assert_eq!(kept(raw.as_bytes(), false), None);
        let fine: String = (0..MOST_RUNS)
            .map(|i| format!("a{i}: 1\r\nte: x\r\n"))
            .collect();
        let raw = format!("HTTP/1.1 200 OK\r\n{fine}\r\n");
        assert_eq!(
            kept(raw.as_bytes(), false).map(|k| k.matches("a").count()),
            Some(MOST_RUNS)
        );
    }

    #[test]
    fn values_keep_their_spaces_and_colons() {
        let raw = b"HTTP/1.1 200 OK\r\nLocation:  http://a:1/b c \t\r\nEmpty:\r\n\r\n";
        let lines = kept(raw, false).expect("kept");
        assert_eq!(lines, "Location:  http://a:1/b c \t\r\nEmpty:\r\n");
        let read: Vec<_> = fields(lines.as_bytes()).collect();
        assert_eq!(
            read,
            [(&b"Location"[..], &b"http://a:1/b c"[..]), (b"Empty", b"")]
        );
    }
}
