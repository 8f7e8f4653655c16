//! The one HTTP/1 parser HTTP probes need: an answer's head (status line
//! and the headers that frame the body: `Content-Length`,
//! `Transfer-Encoding`, `Connection`), and a chunked body's framing, to
//! skip it to its end. The body's bytes themselves are never kept.
//!
//! httparse does the head's syntax; what the head means for the body
//! follows RFC 9112 section 6.3. The proxy has its own codec, but the
//! checker must not depend on the proxy, and a probe needs this much only.

/// A head longer than this is refused (hyper's client, used before, took
/// about 400 KiB; no health endpoint answers with a head near this).
pub(super) const MAX_HEAD: usize = 64 * 1024;
/// Headers a head may have (hyper's default was 100 as well).
const MAX_HEADERS: usize = 100;

/// What an answer's head says.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Head {
    /// Bytes the head took, blank line included.
    pub(super) len: usize,
    pub(super) status: u16,
    /// A 1xx answer other than 101: another head follows.
    pub(super) interim: bool,
    /// The connection may carry another exchange after this one.
    pub(super) keep_alive: bool,
    pub(super) body: Body,
}

/// How the body after a head is framed.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Body {
    None,
    Length(u64),
    Chunked,
    /// Everything until the target closes the connection.
    UntilClose,
}

/// Parses the head at the start of `buf`: `None` while it is incomplete.
pub(super) fn parse(buf: &[u8]) -> Result<Option<Head>, String> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut res = httparse::Response::new(&mut headers);
    let len = match res.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("invalid head: {e}")),
    };
    let status = res.code.unwrap_or(0);
    let http11 = res.version == Some(1);
    let mut length: Option<u64> = None;
    let mut chunked = None;
    let mut close = !http11;
    for h in res.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let v = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or_else(|| "invalid content-length".to_owned())?;
            if length.is_some_and(|l| l != v) {
                return Err("conflicting content-length".to_owned());
            }
            length = Some(v);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            // Only the last coding says whether the body is chunked.
            let last = h.value.rsplit(|&b| b == b',').next().unwrap_or(b"");
            chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if h.name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") && !http11 {
                    close = false;
                }
            }
        }
    }
    let interim = (100..200).contains(&status) && status != 101;
    let body = if (100..200).contains(&status) || status == 204 || status == 304 {
        Body::None
    } else {
        match (chunked, length) {
            (Some(true), _) => Body::Chunked,
            // Another coding last: the body ends with the connection.
            (Some(false), _) => Body::UntilClose,
            (None, Some(n)) => Body::Length(n),
            (None, None) => Body::UntilClose,
        }
    };
    let keep_alive = !close && status != 101 && body != Body::UntilClose;
    Ok(Some(Head {
        len,
        status,
        interim,
        keep_alive,
        body,
    }))
}

/// What feeding a chunked body's bytes did.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Fed {
    /// All of them were taken; the body goes on.
    More(usize),
    /// The body (last chunk and trailers) ended.
    Done,
}

/// Where a chunked body's reading is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum State {
    /// In a chunk's size (hex digits).
    #[default]
    Size,
    /// After the size: an extension, up to the line's end.
    Extension,
    SizeLf,
    /// In a chunk's data.
    Data,
    DataCr,
    DataLf,
    /// At the start of a trailer line (an empty one ends the body).
    TrailerStart,
    Trailer,
    EndLf,
}

/// A chunked body's framing, fed as it arrives.
#[derive(Debug, Default)]
pub(super) struct Chunked {
    state: State,
    /// The current chunk's size, then what is left of its data.
    size: u64,
    /// The current size has a digit.
    digits: bool,
}

impl Chunked {
    pub(super) fn feed(&mut self, buf: &[u8]) -> Result<Fed, &'static str> {
        let mut i = 0;
        while i < buf.len() {
            let b = buf[i];
            match self.state {
                State::Size => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        let digit = u64::from(hex(b));
                        self.size = self
                            .size
                            .checked_mul(16)
                            .and_then(|s| s.checked_add(digit))
                            .ok_or("chunk size too large")?;
                        self.digits = true;
                    }
                    b';' | b' ' | b'\t' if self.digits => self.state = State::Extension,
                    b'\r' if self.digits => self.state = State::SizeLf,
                    _ => return Err("invalid chunk size"),
                },
                State::Extension => {
                    if b == b'\r' {
                        self.state = State::SizeLf;
                    }
                }
                State::SizeLf => {
                    if b != b'\n' {
                        return Err("invalid chunk size line");
                    }
                    self.digits = false;
                    self.state = if self.size == 0 {
                        State::TrailerStart
                    } else {
                        State::Data
                    };
                }
                State::Data => {
                    let left = buf.len() - i;
                    let take = usize::try_from(self.size).map_or(left, |s| s.min(left));
                    i += take;
                    self.size -= take as u64;
                    if self.size == 0 {
                        self.state = State::DataCr;
                    }
                    continue;
                }
                State::DataCr => {
                    if b != b'\r' {
                        return Err("chunk longer than its size");
                    }
                    self.state = State::DataLf;
                }
                State::DataLf => {
                    if b != b'\n' {
                        return Err("chunk longer than its size");
                    }
                    self.state = State::Size;
                }
                State::TrailerStart => {
                    self.state = if b == b'\r' {
                        State::EndLf
                    } else {
                        State::Trailer
                    };
                }
                State::Trailer => {
                    if b == b'\n' {
                        self.state = State::TrailerStart;
                    }
                }
                State::EndLf => {
                    if b != b'\n' {
                        return Err("invalid end of chunked body");
                    }
                    return Ok(Fed::Done);
                }
            }
            i += 1;
        }
        Ok(Fed::More(i))
    }
}

fn hex(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        _ => b - b'A' + 10,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str) -> Head {
        parse(raw.as_bytes()).expect("valid").expect("complete")
    }

    #[test]
    fn heads_frame_their_bodies() {
        let h = head("HTTP/1.1 200 OK\r\ncontent-length: 12\r\n\r\nhello");
        assert_eq!((h.status, h.len, h.keep_alive), (200, 39, true));
        assert_eq!(h.body, Body::Length(12));
        let h = head("HTTP/1.1 503 x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
        assert_eq!((h.status, h.body, h.keep_alive), (503, Body::Chunked, true));
        let h = head("HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!((h.body, h.keep_alive), (Body::UntilClose, false));
        let h = head("HTTP/1.1 200 OK\r\nConnection: close\r\ncontent-length: 0\r\n\r\n");
        assert!(!h.keep_alive);
        let h = head("HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n");
        assert!(!h.keep_alive);
        let h = head("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\ncontent-length: 0\r\n\r\n");
        assert!(h.keep_alive);
        let h = head("HTTP/1.1 204 No Content\r\n\r\n");
        assert_eq!((h.body, h.keep_alive), (Body::None, true));
        let h = head("HTTP/1.1 100 Continue\r\n\r\n");
        assert!(h.interim);
        assert_eq!(parse(b"HTTP/1.1 200 OK\r\ncontent-le"), Ok(None));
        assert!(parse(b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n").is_err());
        assert!(
            parse(b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n").is_err()
        );
        assert!(parse(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
    }

    #[test]
    fn chunked_bodies_end_after_their_last_chunk_and_trailers() {
        let body = b"5;ext=1\r\nhello\r\n10\r\n0123456789abcdef\r\n0\r\nx-t: 1\r\n\r\n";
        // Whole, and one byte at a time.
        assert_eq!(Chunked::default().feed(body), Ok(Fed::Done));
        let mut c = Chunked::default();
        let (last, rest) = body.split_last().expect("bytes");
        for b in rest {
            assert_eq!(c.feed(std::slice::from_ref(b)), Ok(Fed::More(1)));
        }
        assert_eq!(c.feed(&[*last]), Ok(Fed::Done));
        assert_eq!(Chunked::default().feed(b"0\r\n\r\n"), Ok(Fed::Done));
        assert!(Chunked::default().feed(b"x\r\n").is_err());
        assert!(Chunked::default().feed(b"2\r\nabc\r\n").is_err());
        assert!(Chunked::default().feed(b"fffffffffffffffff\r\n").is_err());
    }
}
