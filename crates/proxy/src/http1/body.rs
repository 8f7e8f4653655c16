//! A request body read off an HTTP/1 client connection.
//!
//! Most requests have no body, or one that arrived with the head; those
//! cost nothing more. A body still on the wire is read by [`pump`] in the
//! connection's task and handed to whoever sends it upstream through a
//! one-slot channel, so a backend that reads slowly slows the client down
//! instead of making the proxy buffer. The channel's last message says
//! the body is complete: a pump that stopped early (the client went away)
//! can never pass for a finished body.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{mpsc, oneshot};

use super::Framing;
use super::chunked::{Decoded, Decoder};
use super::pool;
use crate::guard::{BodyError, BoxError};

/// One step of a streamed body.
#[derive(Debug)]
enum Piece {
    Data(Bytes),
    End,
    Broken(BodyError),
}

/// The body of a request from an HTTP/1 client.
#[derive(Debug)]
pub enum RequestBody {
    Empty,
    /// The whole body came with the head, until it has been sent once.
    Buffered(Option<Bytes>),
    Streamed(Streamed),
}

#[derive(Debug)]
pub struct Streamed {
    rx: mpsc::Receiver<Piece>,
    /// Told on the first poll: the moment to send `100 Continue`.
    wanted: Option<oneshot::Sender<()>>,
    /// Exact length when the client gave one.
    length: Option<u64>,
    done: bool,
}

/// The feeding end of a [`Streamed`] body, for [`pump`].
#[derive(Debug)]
pub struct Feed {
    tx: mpsc::Sender<Piece>,
    framing: Framing,
}

/// A streamed body, its feed, and the signal of its first poll.
pub fn streamed(framing: Framing) -> (RequestBody, Feed, oneshot::Receiver<()>) {
    let (tx, rx) = mpsc::channel(1);
    let (wanted, wanted_rx) = oneshot::channel();
    let length = match framing {
        Framing::Length(n) => Some(n),
        _ => None,
    };
    let body = RequestBody::Streamed(Streamed {
        rx,
        wanted: Some(wanted),
        length,
        done: false,
    });
    (body, Feed { tx, framing }, wanted_rx)
}

/// How a pump ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Pumped {
    /// The whole body was read and handed on; the connection's framing
    /// is intact.
    Complete,
    /// The body was broken or cut short, or nobody wanted the rest: the
    /// connection cannot be trusted with another request.
    Abandoned,
}

/// Reads the body off `reader` (after what `buf` already holds) into the
/// feed. What follows the body stays in `buf`.
pub async fn pump<R>(reader: &mut R, buf: &mut Option<BytesMut>, feed: Feed) -> Pumped
where
    R: AsyncRead + Unpin,
{
    let Feed { tx, framing } = feed;
    let b = buf.get_or_insert_with(pool::take);
    let outcome = match framing {
        Framing::Length(n) => by_length(reader, b, n, &tx).await,
        Framing::Chunked => by_chunks(reader, b, &tx).await,
        // A request head never says `Close` or `Upgrade`.
        Framing::Empty | Framing::Close | Framing::Upgrade => Ok(()),
    };
    match outcome {
        Ok(()) => {
            if tx.send(Piece::End).await.is_err() {
                return Pumped::Abandoned;
            }
            Pumped::Complete
        }
        Err(Some(e)) => {
            let _ = tx.send(Piece::Broken(e)).await;
            Pumped::Abandoned
        }
        Err(None) => Pumped::Abandoned,
    }
}

/// `Err(Some)`: the client broke the body; `Err(None)`: the receiver is
/// gone (nobody will send the rest).
type Step = Result<(), Option<BodyError>>;

async fn by_length<R>(
    reader: &mut R,
    b: &mut BytesMut,
    mut left: u64,
    tx: &mpsc::Sender<Piece>,
) -> Step
where
    R: AsyncRead + Unpin,
{
    while left > 0 {
        if b.is_empty() {
            fill(reader, b).await?;
        }
        let take = usize::try_from(left).map_or(b.len(), |l| l.min(b.len()));
        left -= take as u64;
        let data = b.split_to(take).freeze();
        tx.send(Piece::Data(data)).await.map_err(|_| None)?;
    }
    Ok(())
}

async fn by_chunks<R>(reader: &mut R, b: &mut BytesMut, tx: &mpsc::Sender<Piece>) -> Step
where
    R: AsyncRead + Unpin,
{
    let mut decoder = Decoder::default();
    loop {
        match decoder.decode(b) {
            Ok(Decoded::Data(data)) => tx.send(Piece::Data(data)).await.map_err(|_| None)?,
            Ok(Decoded::Done) => return Ok(()),
            Ok(Decoded::NeedMore) => fill(reader, b).await?,
            Err(_) => return Err(Some(BodyError::Malformed)),
        }
    }
}

/// Reads at least one byte; the end of the stream is a broken body.
async fn fill<R>(reader: &mut R, b: &mut BytesMut) -> Step
where
    R: AsyncRead + Unpin,
{
    pool::room(b);
    match reader.read_buf(b).await {
        Ok(0) | Err(_) => Err(Some(BodyError::Malformed)),
        Ok(_) => Ok(()),
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            RequestBody::Empty => Poll::Ready(None),
            RequestBody::Buffered(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            RequestBody::Streamed(s) => {
                if s.done {
                    return Poll::Ready(None);
                }
                if let Some(wanted) = s.wanted.take() {
                    let _ = wanted.send(());
                }
                match s.rx.poll_recv(cx) {
                    Poll::Ready(Some(Piece::Data(d))) => {
                        if let Some(left) = &mut s.length {
                            *left = left.saturating_sub(d.len() as u64);
                        }
                        Poll::Ready(Some(Ok(Frame::data(d))))
                    }
                    Poll::Ready(Some(Piece::End)) => {
                        s.done = true;
                        Poll::Ready(None)
                    }
                    Poll::Ready(Some(Piece::Broken(e))) => {
                        s.done = true;
                        Poll::Ready(Some(Err(e.into())))
                    }
                    // The pump went away without saying the body ended.
                    Poll::Ready(None) => {
                        s.done = true;
                        Poll::Ready(Some(Err(BodyError::Malformed.into())))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Empty => true,
            RequestBody::Buffered(b) => b.is_none(),
            RequestBody::Streamed(s) => s.done,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Empty => SizeHint::with_exact(0),
            RequestBody::Buffered(b) => {
                SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64))
            }
            RequestBody::Streamed(s) => match s.length {
                Some(n) => SizeHint::with_exact(n),
                None => SizeHint::default(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn collect(body: RequestBody) -> Result<Vec<u8>, String> {
        body.collect()
            .await
            .map(|c| c.to_bytes().to_vec())
            .map_err(|e| e.to_string())
    }

    #[tokio::test]
    async fn a_chunked_body_streams_and_leaves_the_next_request() {
        let (body, feed, _wanted) = streamed(Framing::Chunked);
        let mut wire: &[u8] = b"lo\r\n0\r\n\r\nGET /next";
        let mut buf = Some(BytesMut::from(&b"5\r\nhel"[..]));
        let (pumped, got) = tokio::join!(pump(&mut wire, &mut buf, feed), collect(body));
        assert_eq!(pumped, Pumped::Complete);
        assert_eq!(got.as_deref(), Ok(&b"hello"[..]));
        assert_eq!(&buf.expect("buffer")[..], b"GET /next");
    }

    #[tokio::test]
    async fn a_body_cut_short_is_an_error_not_an_end() {
        let (body, feed, _wanted) = streamed(Framing::Length(10));
        let mut wire: &[u8] = b"abc";
        let mut buf = None;
        let (pumped, got) = tokio::join!(pump(&mut wire, &mut buf, feed), collect(body));
        assert_eq!(pumped, Pumped::Abandoned);
        assert!(got.is_err());
    }

    #[tokio::test]
    async fn a_pump_dropped_midway_fails_the_body() {
        let (body, feed, _wanted) = streamed(Framing::Length(10));
        drop(feed);
        assert!(collect(body).await.is_err());
    }
}
