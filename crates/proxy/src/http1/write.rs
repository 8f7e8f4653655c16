//! A response onto an HTTP/1 client connection: the head serialised in one
//! buffer, the body framed by length, by chunks, or by closing, and the
//! first piece of body written with the head in one call when it is
//! already there.

use std::cell::RefCell;
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use hyper::body::Body;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::chunked::{CRLF, LAST_CHUNK, SizeLine};
use super::raw::RawHead;
use super::{Framing, pool};
use crate::body::ProxyBody;

/// What the request said that shapes the response.
#[derive(Clone, Copy, Debug)]
pub struct Asked {
    pub head: bool,
    pub http10: bool,
    /// Whether the connection may stay open after this response, as far as
    /// the request and the proxy's state go.
    pub keep_alive: bool,
}

/// How a response went out.
#[derive(Debug, PartialEq, Eq)]
pub enum Written {
    /// Whole, and the connection can take another request.
    KeepAlive,
    /// Whole, but the connection must close now.
    Close,
}

thread_local! {
    /// The buffer response heads are serialised in, one per thread.
    static HEAD: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

static CHUNKED: HeaderValue = HeaderValue::from_static("chunked");
static CLOSE: HeaderValue = HeaderValue::from_static("close");
static KEEP_ALIVE: HeaderValue = HeaderValue::from_static("keep-alive");

/// Writes `res`. A write that makes no progress for `send` (the send
/// timeout) fails with `TimedOut`, so a client that stops reading cannot
/// hold the connection, or the backend connection behind it, forever. An
/// error means the connection is unusable (the client left or stalled, or
/// the upstream body broke mid-way: [`is_upstream_error`]): close it
/// without further ado.
pub async fn response<W>(
    w: &mut W,
    res: Response<ProxyBody>,
    asked: Asked,
    send: Duration,
) -> io::Result<Written>
where
    W: AsyncWrite + Unpin,
{
    let (head, framing, close, mut body) = serialise(res, asked);
    let mut out = Out {
        w,
        send,
        head: Some(head),
    };
    match framing {
        // Never `Upgrade`: the writer decides framing by the rules below.
        Framing::Empty | Framing::Upgrade => {
            out.flush_head().await?;
            // An upstream body that is complete goes back to the pool when
            // dropped; nothing is read from it.
        }
        Framing::Length(mut left) => {
            while left > 0 {
                let Some(data) = next_data(&mut body).await? else {
                    return Err(short());
                };
                let n = (data.len() as u64).min(left);
                left -= n;
                out.write(&[&data[..n as usize]]).await?;
            }
            out.flush_head().await?;
            // Notice the end, so the upstream connection is reused.
            if !body.is_end_stream() {
                let _ = next_data(&mut body).await;
            }
        }
        Framing::Chunked => {
            while let Some(data) = next_data(&mut body).await? {
                let size = SizeLine::new(data.len());
                out.write(&[size.as_bytes(), &data, CRLF]).await?;
            }
            out.write(&[LAST_CHUNK]).await?;
        }
        Framing::Close => {
            while let Some(data) = next_data(&mut body).await? {
                out.write(&[&data]).await?;
            }
            out.flush_head().await?;
        }
    }
    out.w.flush().await?;
    Ok(if close {
        Written::Close
    } else {
        Written::KeepAlive
    })
}

/// The response's head as bytes, its body's framing, whether the
/// connection closes after it, and its body. A plain function: the head's
/// parts are borrowed here, and in `response` they would keep their room
/// in every request's future while the body is written.
fn serialise(res: Response<ProxyBody>, asked: Asked) -> (Vec<u8>, Framing, bool, ProxyBody) {
    let (mut parts, mut body) = res.into_parts();
    // A backend's fields that go back as they came (see `raw`); the map
    // then holds only the proxy's own.
    let raw = match &mut body {
        ProxyBody::Upstream { body, .. } => body.take_raw(),
        _ => None,
    };
    let framing = framing(&mut parts.headers, parts.status, &body, asked, raw.as_ref());
    let close = !asked.keep_alive
        || framing == Framing::Close
        || parts
            .headers
            .get(header::CONNECTION)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
    if close {
        parts.headers.insert(header::CONNECTION, CLOSE.clone());
    } else if asked.http10 {
        parts.headers.insert(header::CONNECTION, KEEP_ALIVE.clone());
    }
    if !raw.as_ref().is_some_and(RawHead::has_date) && !parts.headers.contains_key(header::DATE) {
        parts.headers.insert(header::DATE, date());
    }
    let mut head = HEAD.take();
    head.clear();
    head.extend_from_slice(b"HTTP/1.1 ");
    head.extend_from_slice(parts.status.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(parts.status.canonical_reason().unwrap_or("").as_bytes());
    head.extend_from_slice(b"\r\n");
    if let Some(raw) = &raw {
        head.extend_from_slice(raw.fields());
    }
    for (name, value) in &parts.headers {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    // The fields are in `head`; the map can serve the next head.
    pool::give_map(std::mem::take(&mut parts.headers));
    (head, framing, close, body)
}

/// Decides the body's framing and makes the length headers say it: no
/// body after a HEAD, 1xx, 204 or 304; a length when known; otherwise
/// chunks, or for an HTTP/1.0 client the end of the connection.
fn framing(
    headers: &mut http::HeaderMap,
    status: StatusCode,
    body: &ProxyBody,
    asked: Asked,
    raw: Option<&RawHead>,
) -> Framing {
    let bodiless = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    if bodiless {
        return Framing::Empty;
    }
    let declared = match raw {
        // The length the head declared is the body's framing (checked
        // when the head was read), so the body says it.
        Some(raw) if raw.declares_length() => body.size_hint().exact(),
        _ => headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok()),
    };
    let length = declared.or_else(|| body.size_hint().exact());
    if let Some(n) = length
        && declared.is_none()
    {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    }
    if asked.head {
        return Framing::Empty;
    }
    match length {
        Some(0) => Framing::Empty,
        Some(n) => Framing::Length(n),
        None if asked.http10 => Framing::Close,
        None => {
            headers.insert(header::TRANSFER_ENCODING, CHUNKED.clone());
            Framing::Chunked
        }
    }
}

/// The next piece of data, skipping trailers; `None` at the end.
async fn next_data(body: &mut ProxyBody) -> io::Result<Option<Bytes>> {
    loop {
        let frame = poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await;
        match frame {
            None => return Ok(None),
            Some(Err(e)) => return Err(io::Error::other(UpstreamError(e))),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data()
                    && !data.is_empty()
                {
                    return Ok(Some(data));
                }
            }
        }
    }
}

fn short() -> io::Error {
    io::Error::other(UpstreamError(
        "response body shorter than its length".into(),
    ))
}

/// The answer's body broke: the backend's doing, not the client's.
#[derive(Debug)]
struct UpstreamError(crate::guard::BoxError);

impl std::fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "answer's body broke: {}", self.0)
    }
}

impl std::error::Error for UpstreamError {}

/// Whether a failed [`response`] was the answer's body failing rather
/// than the client.
pub fn is_upstream_error(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<UpstreamError>())
}

/// The write side, with the head held back until the first body bytes can
/// go with it.
struct Out<'a, W> {
    w: &'a mut W,
    send: Duration,
    head: Option<Vec<u8>>,
}

impl<W: AsyncWrite + Unpin> Out<'_, W> {
    async fn flush_head(&mut self) -> io::Result<()> {
        self.write(&[]).await
    }

    /// Writes the held-back head (if any) and `parts` (at most three), all
    /// of it.
    async fn write(&mut self, parts: &[&[u8]]) -> io::Result<()> {
        let head = self.head.take();
        let written = self.write_all(head.as_deref(), parts).await;
        if let Some(mut head) = head
            && head.capacity() <= 16 * 1024
        {
            // Kept for the next response this thread writes.
            head.clear();
            HEAD.set(head);
        }
        written
    }

    async fn write_all(&mut self, head: Option<&[u8]>, parts: &[&[u8]]) -> io::Result<()> {
        let mut storage = [IoSlice::new(&[]); 4];
        let mut len = 0;
        for part in head.into_iter().chain(parts.iter().copied()) {
            if !part.is_empty() && len < storage.len() {
                storage[len] = IoSlice::new(part);
                len += 1;
            }
        }
        let mut slices = &mut storage[..len];
        while !slices.is_empty() {
            let n = match tokio::time::timeout(self.send, self.w.write_vectored(slices)).await {
                Ok(r) => r?,
                Err(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "client took no bytes within the send timeout",
                    ));
                }
            };
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            IoSlice::advance_slices(&mut slices, n);
        }
        Ok(())
    }
}

/// The `Date` header for now, formatted once a second per thread.
fn date() -> HeaderValue {
    thread_local! {
        static LAST: RefCell<(u64, HeaderValue)> =
            const { RefCell::new((0, HeaderValue::from_static(""))) };
    }
    let now = SystemTime::now();
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        if last.0 != secs {
            let text = httpdate::fmt_http_date(now);
            *last = (
                secs,
                HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("")),
            );
        }
        last.1.clone()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn written(res: Response<ProxyBody>, asked: Asked) -> (String, Written) {
        let mut out = Vec::new();
        let w = response(&mut out, res, asked, Duration::from_secs(5))
            .await
            .expect("written");
        (String::from_utf8(out).expect("utf-8"), w)
    }

    const KEEP: Asked = Asked {
        head: false,
        http10: false,
        keep_alive: true,
    };

    #[tokio::test]
    async fn a_full_body_gets_its_length() {
        let (text, w) = written(Response::new(ProxyBody::full("hello")), KEEP).await;
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.contains("\r\ncontent-length: 5\r\n"), "{text}");
        assert!(text.contains("\r\ndate: "), "{text}");
        assert!(text.ends_with("\r\n\r\nhello"), "{text}");
        assert_eq!(w, Written::KeepAlive);
    }

    #[tokio::test]
    async fn head_and_bodiless_statuses_carry_no_body() {
        let asked = Asked { head: true, ..KEEP };
        let (text, _) = written(Response::new(ProxyBody::full("hello")), asked).await;
        assert!(
            text.contains("content-length: 5\r\n") && text.ends_with("\r\n\r\n"),
            "{text}"
        );
        let mut res = Response::new(ProxyBody::empty());
        *res.status_mut() = StatusCode::NO_CONTENT;
        let (text, _) = written(res, KEEP).await;
        assert!(
            !text.contains("content-length") && !text.contains("transfer-encoding"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn connection_close_is_said_and_kept() {
        let asked = Asked {
            keep_alive: false,
            ..KEEP
        };
        let (text, w) = written(Response::new(ProxyBody::empty()), asked).await;
        assert!(text.contains("connection: close\r\n"), "{text}");
        assert_eq!(w, Written::Close);
        let asked = Asked {
            http10: true,
            ..KEEP
        };
        let (text, w) = written(Response::new(ProxyBody::empty()), asked).await;
        assert!(text.contains("connection: keep-alive\r\n"), "{text}");
        assert_eq!(w, Written::KeepAlive);
    }
}
