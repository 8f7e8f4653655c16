//! An HTTP/2 client's request body read ahead before a target is asked,
//! as the HTTP/1 loop does for its clients (`http1::server`): up to
//! [`READ_AHEAD`] bytes, under the body's guard (pace and size), so a
//! stream trickling its body holds no backend connection and a small body
//! goes upstream whole. gRPC calls are not read ahead: their request is a
//! stream the target answers as it goes.

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body_util::BodyExt;
use hyper::body::Body;

use crate::body::ProxyBody;
use crate::guard::{BodyError, READ_AHEAD, body_error};
use crate::http2::body::Replayed;

/// `body` with what was read of it in front: whole (`Full`) when it ended
/// within the read-ahead, else its first frames then the rest.
pub(super) async fn read_ahead(mut body: ProxyBody) -> Result<ProxyBody, BodyError> {
    let mut data: Vec<Bytes> = Vec::new();
    let mut len = 0;
    let mut trailers: Option<HeaderMap> = None;
    while len < READ_AHEAD {
        let Some(frame) = body.frame().await else {
            return Ok(ProxyBody::full(join(data, len)));
        };
        let frame = frame.map_err(|e| body_error(e.as_ref()).unwrap_or(BodyError::Malformed))?;
        match frame.into_data() {
            Ok(piece) => {
                len += piece.len();
                data.push(piece);
            }
            Err(frame) => {
                // Trailers end a body.
                trailers = frame.into_trailers().ok();
                break;
            }
        }
    }
    if trailers.is_none() && body.is_end_stream() {
        return Ok(ProxyBody::full(join(data, len)));
    }
    Ok(ProxyBody::Replayed(Box::new(Replayed::ahead(
        data, trailers, body,
    ))))
}

/// The pieces as one (a copy only when there are several).
fn join(mut data: Vec<Bytes>, len: usize) -> Bytes {
    if data.len() <= 1 {
        return data.pop().unwrap_or_default();
    }
    let mut all = BytesMut::with_capacity(len);
    for piece in data {
        all.extend_from_slice(&piece);
    }
    all.freeze()
}
