//! A body of any length made on the fly: the same 64 KiB chunk handed out
//! again and again (a reference-counted `Bytes`, so nothing is copied and
//! nothing is buffered), for streaming tests of large uploads and downloads.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

/// Size of each data frame.
pub const CHUNK: usize = 64 * 1024;

/// `len` bytes of a repeating pattern, in frames of at most [`CHUNK`]
/// bytes, with an exact size hint (so HTTP/1.1 sends a `content-length`).
#[derive(Clone, Debug)]
pub struct Generated {
    remaining: u64,
    chunk: Bytes,
}

impl Generated {
    pub fn new(len: u64) -> Generated {
        let chunk: Vec<u8> = (0..CHUNK).map(|i| (i % 251) as u8).collect();
        Generated {
            remaining: len,
            chunk: Bytes::from(chunk),
        }
    }

    /// Bytes not handed out yet.
    pub fn remaining(&self) -> u64 {
        self.remaining
    }
}

impl Body for Generated {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if this.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = usize::try_from(this.remaining).map_or(CHUNK, |r| r.min(CHUNK));
        this.remaining -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(this.chunk.slice(..n)))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn hands_out_exactly_len_bytes() {
        for len in [0, 1, CHUNK as u64, CHUNK as u64 * 3 + 17] {
            let mut body = Generated::new(len);
            assert_eq!(body.size_hint().exact(), Some(len));
            let mut got = 0u64;
            while let Some(frame) = body.frame().await {
                let data = frame.expect("infallible").into_data().expect("data");
                assert!(data.len() <= CHUNK);
                got += data.len() as u64;
            }
            assert_eq!(got, len);
            assert!(body.is_end_stream());
        }
    }
}
