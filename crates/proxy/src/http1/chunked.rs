//! The chunked transfer coding (RFC 9112 section 7.1), both ways: bodies
//! read off either role's connection are decoded incrementally from its
//! read buffer, and bodies written with no known length are framed with
//! [`SizeLine`] and [`LAST_CHUNK`].
//!
//! Decoding is strict where
//! laxness lets two parsers disagree about where a body ends: sizes are
//! hex digits that fit a u64, every line ends in CRLF (a bare LF or CR is
//! an error), data is followed by CRLF and nothing else. Extensions are
//! skipped and trailers are read and dropped, each bounded.

use bytes::{Buf, Bytes, BytesMut};

/// Extensions on one size line, and the whole trailer section, beyond
/// these are refused.
const MAX_EXTENSION: u32 = 4096;
const MAX_TRAILERS: u32 = 16 * 1024;

/// The end of a chunked body: the last chunk and an empty trailer section.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";
/// What follows a chunk's data.
pub const CRLF: &[u8] = b"\r\n";

/// The size line of a chunk: hex digits and CRLF, on the stack.
#[derive(Clone, Copy, Debug)]
pub struct SizeLine {
    bytes: [u8; 18],
    start: u8,
}

impl SizeLine {
    pub fn new(len: usize) -> SizeLine {
        let mut bytes = [0u8; 18];
        bytes[16..].copy_from_slice(CRLF);
        let mut i = 16;
        let mut n = len as u64;
        loop {
            i -= 1;
            bytes[i] = b"0123456789abcdef"[(n & 0xf) as usize];
            n >>= 4;
            if n == 0 {
                break;
            }
        }
        SizeLine {
            bytes,
            start: i as u8,
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[usize::from(self.start)..]
    }
}

/// What the decoder got out of the buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// Body bytes (a slice of the read buffer, not a copy).
    Data(Bytes),
    /// The buffer is used up; read more.
    NeedMore,
    /// The last chunk and the trailers are through.
    Done,
}

/// The framing is broken.
#[derive(Debug, PartialEq, Eq)]
pub struct Invalid;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Reading hex digits; `digits` so far.
    Size {
        value: u64,
        digits: u8,
    },
    /// Whitespace after the size, before `;` or CR.
    SizeSpace {
        value: u64,
    },
    /// Inside an extension, until CR; `len` bytes so far.
    Extension {
        value: u64,
        len: u32,
    },
    /// CR seen after a size line; LF must follow.
    SizeLf {
        value: u64,
    },
    Data {
        left: u64,
    },
    DataCr,
    DataLf,
    /// At the start of a trailer line, or the final empty line; `seen`:
    /// trailer bytes so far (the section is bounded as a whole).
    TrailerStart {
        seen: u32,
    },
    /// Inside a trailer line.
    Trailer {
        seen: u32,
    },
    TrailerLf {
        seen: u32,
        empty: bool,
    },
    Done,
}

#[derive(Debug)]
pub struct Decoder {
    state: State,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder {
            state: State::Size {
                value: 0,
                digits: 0,
            },
        }
    }
}

impl Decoder {
    /// Consumes framing from the front of `buf` and returns the next piece
    /// of body, or what it needs.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, Invalid> {
        // Framing bytes are stepped over in place and dropped from the
        // buffer once, at the end or before a data slice is cut.
        let mut used = 0;
        let result = loop {
            match self.state {
                State::Data { left } => {
                    buf.advance(used);
                    used = 0;
                    if buf.is_empty() {
                        break Ok(Decoded::NeedMore);
                    }
                    let take = usize::try_from(left).map_or(buf.len(), |l| l.min(buf.len()));
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        State::DataCr
                    } else {
                        State::Data { left }
                    };
                    return Ok(Decoded::Data(buf.split_to(take).freeze()));
                }
                State::Done => break Ok(Decoded::Done),
                _ => {}
            }
            let Some(&b) = buf.get(used) else {
                break Ok(Decoded::NeedMore);
            };
            used += 1;
            match self.step(b) {
                Ok(next) => self.state = next,
                Err(e) => break Err(e),
            }
        };
        buf.advance(used);
        result
    }

    /// One framing byte.
    fn step(&self, b: u8) -> Result<State, Invalid> {
        Ok(match self.state {
            State::Size { value, digits } => {
                if let Some(d) = hex(b) {
                    // Leading zeros are allowed (RFC 9112 section 7.1);
                    // a size that no longer fits a u64 is not.
                    if value >> 60 != 0 {
                        return Err(Invalid);
                    }
                    State::Size {
                        value: (value << 4) | u64::from(d),
                        digits: digits.saturating_add(1),
                    }
                } else if digits == 0 {
                    return Err(Invalid);
                } else {
                    match b {
                        b' ' | b'\t' => State::SizeSpace { value },
                        b';' => State::Extension { value, len: 0 },
                        b'\r' => State::SizeLf { value },
                        _ => return Err(Invalid),
                    }
                }
            }
            State::SizeSpace { value } => match b {
                b' ' | b'\t' => State::SizeSpace { value },
                b';' => State::Extension { value, len: 0 },
                b'\r' => State::SizeLf { value },
                _ => return Err(Invalid),
            },
            State::Extension { value, len } => match b {
                b'\r' => State::SizeLf { value },
                // A bare LF or a control byte would let parsers disagree.
                b'\n' | 0..=8 | 11..=31 | 127 => return Err(Invalid),
                _ if len >= MAX_EXTENSION => return Err(Invalid),
                _ => State::Extension {
                    value,
                    len: len + 1,
                },
            },
            State::SizeLf { value } => match b {
                b'\n' if value == 0 => State::TrailerStart { seen: 0 },
                b'\n' => State::Data { left: value },
                _ => return Err(Invalid),
            },
            State::DataCr => match b {
                b'\r' => State::DataLf,
                _ => return Err(Invalid),
            },
            State::DataLf => match b {
                b'\n' => State::Size {
                    value: 0,
                    digits: 0,
                },
                _ => return Err(Invalid),
            },
            State::TrailerStart { seen } => match b {
                b'\r' => State::TrailerLf { seen, empty: true },
                _ => trailer_byte(seen, b)?,
            },
            State::Trailer { seen } => match b {
                b'\r' => State::TrailerLf { seen, empty: false },
                _ => trailer_byte(seen, b)?,
            },
            State::TrailerLf { seen, empty } => match (b, empty) {
                (b'\n', true) => State::Done,
                (b'\n', false) => State::TrailerStart { seen },
                _ => return Err(Invalid),
            },
            State::Data { .. } | State::Done => unreachable!("handled in decode"),
        })
    }
}

/// One byte of a trailer line, `seen` before it.
fn trailer_byte(seen: u32, b: u8) -> Result<State, Invalid> {
    let seen = seen + 1;
    if seen > MAX_TRAILERS || b == b'\n' || b == 0 {
        return Err(Invalid);
    }
    Ok(State::Trailer { seen })
}

/// What the first bytes of a chunked body, read before anything goes
/// upstream, hold.
#[derive(Debug, PartialEq, Eq)]
pub enum Scan {
    /// The whole body: its data (joined) and how many bytes of the input
    /// its framing took.
    Whole { data: Bytes, framed: usize },
    /// Good so far; the rest is still to come.
    Partial,
    /// The framing is broken: refused before anything goes upstream.
    Broken,
}

/// Decodes a copy of `first` (the buffer itself stays as it is: a body
/// that turns out not to be whole streams from it as usual).
pub fn scan(first: &[u8]) -> Scan {
    let mut copy = BytesMut::from(first);
    let mut decoder = Decoder::default();
    let mut data = BytesMut::new();
    loop {
        match decoder.decode(&mut copy) {
            Ok(Decoded::Data(d)) => data.extend_from_slice(&d),
            Ok(Decoded::NeedMore) => return Scan::Partial,
            Ok(Decoded::Done) => {
                return Scan::Whole {
                    data: data.freeze(),
                    framed: first.len() - copy.len(),
                };
            }
            Err(Invalid) => return Scan::Broken,
        }
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The body, fed `step` bytes at a time.
    fn decode(raw: &[u8], step: usize) -> Result<Vec<u8>, Invalid> {
        let mut d = Decoder::default();
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        let mut fed = 0;
        loop {
            match d.decode(&mut buf)? {
                Decoded::Data(b) => body.extend_from_slice(&b),
                Decoded::Done => return Ok(body),
                Decoded::NeedMore => {
                    if fed == raw.len() {
                        return Err(Invalid);
                    }
                    let end = (fed + step).min(raw.len());
                    buf.extend_from_slice(&raw[fed..end]);
                    fed = end;
                }
            }
        }
    }

    #[test]
    fn valid_bodies_decode_whatever_the_read_sizes() {
        let cases: [(&[u8], &[u8]); 6] = [
            (b"5\r\nhello\r\n0\r\n\r\n", b"hello"),
            (b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", b"hello world"),
            (b"A;name=value\r\n0123456789\r\n0\r\n\r\n", b"0123456789"),
            (b"5 \t\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\n", b"hello"),
            (b"0\r\n\r\n", b""),
            (b"000000000000000005\r\nhello\r\n0\r\n\r\n", b"hello"),
        ];
        for (raw, body) in cases {
            for step in [1, 2, 7, raw.len()] {
                assert_eq!(decode(raw, step).as_deref(), Ok(body), "{raw:?} by {step}");
            }
        }
    }

    #[test]
    fn broken_framing_is_refused() {
        for raw in [
            &b"5\nhello\r\n0\r\n\r\n"[..],
            b"5\r\nhelloX\r\n0\r\n\r\n",
            b"5\r\nhello\n0\r\n\r\n",
            b"x\r\nhello\r\n0\r\n\r\n",
            b"\r\nhello\r\n0\r\n\r\n",
            b"-5\r\nhello\r\n0\r\n\r\n",
            b"0x5\r\nhello\r\n0\r\n\r\n",
            b"10000000000000000\r\n",
            b"00000000000000000f0000000000000000\r\n",
            b"5\r\nhello\r\n0\r\n\n",
            b"5;a\nb\r\nhello\r\n0\r\n\r\n",
            b"5\r\nhello\r\n0\r\nX: y\n\r\n",
        ] {
            assert_eq!(
                decode(raw, 3),
                Err(Invalid),
                "{:?}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[test]
    fn a_scan_tells_a_whole_body_from_a_partial_or_broken_one() {
        assert_eq!(scan(b"3\r\nhello\r\n0\r\n\r\n"), Scan::Broken);
        assert_eq!(scan(b"5\r\nhel"), Scan::Partial);
        assert_eq!(scan(b""), Scan::Partial);
        let body = b"5\r\nhello\r\n1;ext=1\r\n!\r\n0\r\nx-t: 1\r\n\r\n";
        let mut input = body.to_vec();
        input.extend_from_slice(b"GET / HTTP/1.1\r\n");
        assert_eq!(
            scan(&input),
            Scan::Whole {
                data: Bytes::from_static(b"hello!"),
                framed: body.len()
            },
            "the next request is not part of it"
        );
    }

    #[test]
    fn size_lines_are_lowercase_hex() {
        for (len, line) in [
            (0, &b"0\r\n"[..]),
            (5, b"5\r\n"),
            (255, b"ff\r\n"),
            (4096, b"1000\r\n"),
            (usize::MAX, b"ffffffffffffffff\r\n"),
        ] {
            assert_eq!(SizeLine::new(len).as_bytes(), line, "{len}");
            assert_eq!(
                SizeLine::new(len).as_bytes(),
                format!("{len:x}\r\n").as_bytes()
            );
        }
    }

    #[test]
    fn what_follows_the_body_stays_in_the_buffer() {
        let mut d = Decoder::default();
        let mut buf = BytesMut::from(&b"3\r\nabc\r\n0\r\n\r\nGET / HTTP/1.1\r\n"[..]);
        assert_eq!(
            d.decode(&mut buf),
            Ok(Decoded::Data(Bytes::from_static(b"abc")))
        );
        assert_eq!(d.decode(&mut buf), Ok(Decoded::Done));
        assert_eq!(&buf[..], b"GET / HTTP/1.1\r\n");
    }
}
