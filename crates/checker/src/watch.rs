//! `HealthService.Watch`, served beside the generated server so that every
//! stream writes the frames of [`Frames`] as they are.
//!
//! tonic's generated server would encode each message into each stream's
//! own buffer (see `tether_proto::frame`). [`WatchRoute`] answers the Watch
//! path itself and hands every other method of the service to the
//! generated server, so List, Get and Report are unchanged. On the wire a
//! Watch stream is what tonic sends: `200`, `content-type:
//! application/grpc`, uncompressed length-prefixed `WatchResponse`
//! messages, then `grpc-status` (and `grpc-message`) as trailers.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use hyper::body::Frame;
use log::{debug, info, warn};
use tokio::sync::{broadcast, mpsc, watch};
use tonic::Status;
use tonic::body::Body;
use tonic::codegen::{BoxFuture, Service};
use tonic::server::NamedService;

use crate::frames::Frames;
use crate::hub::{HubHandle, Subscription};

/// The one path this module answers.
pub const WATCH_PATH: &str = "/tether.health.v1.HealthService/Watch";

/// Messages a stream may have queued for its connection; each is a shared
/// frame, not a copy.
const STREAM_BUFFER: usize = 64;

/// What a Watch stream needs, shared by all of them.
#[derive(Clone, Debug)]
pub(crate) struct Watchers {
    pub(crate) hub: HubHandle,
    pub(crate) stop: watch::Receiver<bool>,
    pub(crate) frames: Arc<Frames>,
}

/// The `tether.health.v1.HealthService` service: Watch here, the rest in
/// `inner` (the generated server).
#[derive(Clone, Debug)]
pub(crate) struct WatchRoute<S> {
    inner: S,
    watchers: Watchers,
}

impl<S> WatchRoute<S> {
    pub(crate) fn new(inner: S, watchers: Watchers) -> Self {
        WatchRoute { inner, watchers }
    }
}

impl<S: NamedService> NamedService for WatchRoute<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<http::Request<Body>> for WatchRoute<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        if req.uri().path() != WATCH_PATH {
            return Box::pin(self.inner.call(req));
        }
        let watchers = self.watchers.clone();
        Box::pin(async move { Ok(open(watchers, req).await) })
    }
}

/// Starts one Watch stream. The request carries a `WatchRequest`, which
/// has no fields, so its body is not read.
async fn open(watchers: Watchers, req: http::Request<Body>) -> http::Response<Body> {
    let peer = crate::service::peer_of(&tonic::Request::from_http(req));
    let sub = match watchers.hub.subscribe().await {
        Ok(sub) => sub,
        Err(closed) => return crate::service::unavailable(closed).into_http(),
    };
    info!(target: "grpc", "watch from {peer} at v{}", sub.snapshot.version);
    let (tx, rx) = mpsc::channel(STREAM_BUFFER);
    tokio::spawn(forward(watchers, sub, tx, peer));
    let mut res = http::Response::new(Body::new(WatchBody { rx, done: false }));
    res.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    res
}

/// A Watch response body: the frames [`forward`] sends, then the stream's
/// gRPC status as trailers (OK when `forward` ends without one).
struct WatchBody {
    rx: mpsc::Receiver<Result<Bytes, Status>>,
    done: bool,
}

impl hyper::body::Body for WatchBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.done {
            return Poll::Ready(None);
        }
        let status = match ready!(self.rx.poll_recv(cx)) {
            Some(Ok(frame)) => return Poll::Ready(Some(Ok(Frame::data(frame)))),
            Some(Err(status)) => status,
            None => Status::ok(""),
        };
        self.done = true;
        Poll::Ready(Some(Ok(Frame::trailers(trailers(&status)))))
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

fn trailers(status: &Status) -> HeaderMap {
    let mut map = HeaderMap::new();
    // It fails only on a message that is no header value, after it has set
    // `grpc-status`; our messages are plain ASCII.
    let _ = status.add_header(&mut map);
    map
}

/// Sends one subscriber its snapshot and then every change, until the
/// client goes away or the server stops. A subscriber that falls too far
/// behind gets a fresh snapshot rather than a gap.
///
/// The snapshot is shared with other subscribers and let go of as soon as
/// its frame is made: a stream holds only frames in flight, which are
/// shared too.
async fn forward(
    watchers: Watchers,
    sub: Subscription,
    tx: mpsc::Sender<Result<Bytes, Status>>,
    peer: String,
) {
    let Watchers {
        hub,
        mut stop,
        frames,
    } = watchers;
    let _counted = hub.count_watcher();
    let (mut snapshot, mut changes) = (Some(sub.snapshot), sub.changes);
    while let Some(first) = snapshot.take() {
        let mut last = first.version;
        let frame = frames.snapshot(&first);
        drop(first);
        if !send(&tx, frame).await {
            break;
        }
        let lagged = loop {
            tokio::select! {
                biased;
                _ = stop.changed() => {
                    let _ = tx.send(Err(Status::unavailable("the checker is shutting down"))).await;
                    return;
                }
                _ = tx.closed() => break false,
                change = changes.recv() => match change {
                    Ok(update) if update.version <= last => continue,
                    Ok(update) => {
                        last = update.version;
                        if !send(&tx, frames.change(&update)).await {
                            break false;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        warn!(target: "grpc", "watch from {peer} fell {n} changes behind; resending a snapshot");
                        break true;
                    }
                    Err(broadcast::error::RecvError::Closed) => break false,
                },
            }
        };
        if !lagged {
            break;
        }
        match hub.subscribe().await {
            Ok(fresh) => (snapshot, changes) = (Some(fresh.snapshot), fresh.changes),
            Err(_) => break,
        }
    }
    debug!(target: "grpc", "watch from {peer} ended");
}

/// Queues one frame; a frame that could not be made ends the stream with
/// its reason. False when the stream is over.
async fn send(
    tx: &mpsc::Sender<Result<Bytes, Status>>,
    frame: Result<Bytes, tether_proto::FrameTooLarge>,
) -> bool {
    match frame {
        Ok(frame) => tx.send(Ok(frame)).await.is_ok(),
        Err(e) => {
            warn!(target: "grpc", "{e}");
            let _ = tx
                .send(Err(Status::resource_exhausted(e.to_string())))
                .await;
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use tether_proto::pb::health_service_server::HealthServiceServer;

    use super::*;

    #[test]
    fn the_watch_path_is_the_generated_services() {
        let name = <HealthServiceServer<crate::service::HealthApi> as NamedService>::NAME;
        assert_eq!(WATCH_PATH, format!("/{name}/Watch"));
    }
}
